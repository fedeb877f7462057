//! The mailer: sends the outbox, one confirmation at a time, until it is empty.
//!
//! Rows are rendered when queued (see `reply`), so this task only moves bytes: over
//! SMTP (lettre, pooled, TLS by rustls; password or XOAUTH2 auth) or into `.eml` files (lettre's file
//! transport, the embedded default). A transient failure (network, 4xx) is retried
//! with exponential backoff; a permanent one (5xx) parks the row as `failed` with
//! the server's answer for the operator. After `MAX_ATTEMPTS` a row is failed too.
//! The loop wakes on a nudge when something is queued, and polls every few seconds
//! as a fallback (the operator CLI queues mail from another process).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls as SmtpTls, TlsParameters};
use lettre::{Address, AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{address_of, Auth, SmtpConfig, SmtpServer, Tls, Transport};
use crate::oauth::TokenSource;
use crate::store::{now, Store};
use futures::StreamExt as _;

const MAX_ATTEMPTS: i64 = 20;
/// Confirmations in flight at once (lettre's pool opens up to this many
/// connections; servers such as Exchange Online allow a few per client).
const PARALLEL_SENDS: usize = 8;
const POLL: Duration = Duration::from_secs(2);

pub enum Sender {
    File(AsyncFileTransport<Tokio1Executor>),
    Smtp(Box<Smtp>),
}

/// An SMTP relay. With XOAUTH2 the transport carries the access token as its
/// password, so it is rebuilt whenever the token source hands out a new token.
pub struct Smtp {
    server: SmtpServer,
    oauth: Option<(String, Arc<TokenSource>)>,
    current: tokio::sync::Mutex<Option<(String, AsyncSmtpTransport<Tokio1Executor>)>>,
}

/// What came of one try.
enum Sent {
    Ok,
    Retry(String),
    Failed(String),
}

fn build_transport(
    s: &SmtpServer,
    credentials: Option<(Credentials, Vec<Mechanism>)>,
) -> Result<AsyncSmtpTransport<Tokio1Executor>> {
    let tls_params = || -> Result<TlsParameters> {
        let mut b = TlsParameters::builder(s.host.clone());
        if let Some(ca) = &s.ca_file {
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read smtp.ca_file {}", ca.display()))?;
            b = b.add_root_certificate(
                Certificate::from_pem(&pem).context("smtp.ca_file is not a PEM certificate")?,
            );
        }
        b.build_rustls().context("cannot set up TLS for SMTP")
    };
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.host.clone())
        .port(s.port)
        .timeout(Some(Duration::from_secs(60)));
    b = match s.tls {
        Tls::Implicit => b.tls(SmtpTls::Wrapper(tls_params()?)),
        Tls::Starttls => b.tls(SmtpTls::Required(tls_params()?)),
        Tls::None => b.tls(SmtpTls::None),
    };
    if let Some((creds, mechanism)) = credentials {
        // Exchange Online offers LOGIN and XOAUTH2 but not PLAIN: offer both for passwords.
        b = b.credentials(creds).authentication(mechanism);
    }
    Ok(b.build())
}

impl Sender {
    pub fn new(cfg: &SmtpConfig) -> Result<Sender> {
        match &cfg.transport {
            Transport::File { dir } => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create outbox directory {}", dir.display()))?;
                Ok(Sender::File(AsyncFileTransport::new(dir)))
            }
            Transport::Smtp(s) => {
                let (current, oauth) = match &s.auth {
                    None => (Some((String::new(), build_transport(s, None)?)), None),
                    Some((user, Auth::Password(p))) => {
                        let creds = Credentials::new(user.clone(), p.expose().to_string());
                        (
                            Some((
                                String::new(),
                                build_transport(
                                    s,
                                    Some((creds, vec![Mechanism::Plain, Mechanism::Login])),
                                )?,
                            )),
                            None,
                        )
                    }
                    Some((user, Auth::XOAuth2(o))) => (
                        None,
                        Some((
                            user.clone(),
                            Arc::new(TokenSource::new(
                                o.token_url.clone(),
                                o.client_id.clone(),
                                o.client_secret.expose().to_string(),
                                o.scope.clone(),
                            )),
                        )),
                    ),
                };
                Ok(Sender::Smtp(Box::new(Smtp {
                    server: s.clone(),
                    oauth,
                    current: tokio::sync::Mutex::new(current),
                })))
            }
        }
    }

    async fn send(&self, envelope: &Envelope, raw: &[u8]) -> Sent {
        match self {
            Sender::File(t) => match t.send_raw(envelope, raw).await {
                Ok(_) => Sent::Ok,
                Err(e) => Sent::Retry(format!("cannot write outbox file: {e}")),
            },
            Sender::Smtp(smtp) => {
                let transport = match smtp.transport().await {
                    Ok(t) => t,
                    Err(e) => return Sent::Retry(format!("{e:#}")),
                };
                match transport.send_raw(envelope, raw).await {
                    Ok(_) => Sent::Ok,
                    // An expired or revoked token looks permanent (535) but is not:
                    // forget it and retry with a new one. Any other 5xx (a refused
                    // recipient, say) is permanent with XOAUTH2 as with a password.
                    Err(e) if smtp.oauth.is_some() && token_refused(&e) => {
                        if let Some((_, tokens)) = &smtp.oauth {
                            tokens.invalidate();
                        }
                        Sent::Retry(format!("the server refused the access token: {e}"))
                    }
                    Err(e) if e.is_permanent() => Sent::Failed(format!("{e}")),
                    Err(e) => Sent::Retry(format!("{e}")),
                }
            }
        }
    }
}

/// Whether an XOAUTH2 send failed because the server refused the token: 530, 534
/// or 535 (Gmail, Exchange Online), or the error challenge they send first. Those
/// servers answer a bad token with `334 <base64 JSON status>` and expect an empty
/// line before their 535; lettre's XOAUTH2 doesn't expect a challenge and gives up
/// with a client error, so the 535 is never seen.
fn token_refused(e: &lettre::transport::smtp::Error) -> bool {
    let code = e.status().map(|c| c.to_string());
    matches!(code.as_deref(), Some("530" | "534" | "535")) || e.is_client()
}

impl Smtp {
    /// The transport to use now; with XOAUTH2, rebuilt when the token changed.
    async fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>> {
        let mut current = self.current.lock().await;
        if let Some((user, tokens)) = &self.oauth {
            let token = tokens
                .token()
                .await
                .context("cannot get an SMTP access token")?;
            if current.as_ref().map(|(t, _)| t != &token).unwrap_or(true) {
                let creds = Credentials::new(user.clone(), token.clone());
                *current = Some((
                    token,
                    build_transport(&self.server, Some((creds, vec![Mechanism::Xoauth2])))?,
                ));
            }
        }
        current
            .as_ref()
            .map(|(_, t)| t.clone())
            .ok_or_else(|| anyhow::anyhow!("no SMTP transport"))
    }
}

/// Backoff after `attempts` tries: `initial` doubling, capped at an hour.
fn backoff(initial: Duration, attempts: i64) -> i64 {
    (initial.as_secs() as i64)
        .saturating_mul(1 << attempts.clamp(0, 12))
        .min(3600)
}

/// Sends whatever is due; returns how many were sent.
pub async fn drain(store: &Arc<Mutex<Store>>, sender: &Sender, cfg: &SmtpConfig) -> Result<usize> {
    let from = address_of(&cfg.from);
    let from: Address = from
        .parse()
        .with_context(|| format!("smtp.from address {from:?} is invalid"))?;
    let mut sent = 0;
    loop {
        let rows = {
            let mut s = store.lock().expect("store lock poisoned");
            s.claim_outbox(now(), 20)?
        };
        if rows.is_empty() {
            return Ok(sent);
        }
        // Several at once over the transport's connection pool: one SMTP
        // transaction waits on round trips (and on the server's delayed ACK of
        // the final "."), not on this machine, so sending one by one capped the
        // outbox at ~20 mails/s (bench/run.sh).
        let from = &from;
        let mut results = futures::stream::iter(rows)
            .map(|row| async move {
                let result = match row.recipient.parse::<Address>() {
                    Ok(to) => match Envelope::new(Some(from.clone()), vec![to]) {
                        Ok(env) => sender.send(&env, &row.raw).await,
                        Err(e) => Sent::Failed(format!("bad envelope: {e}")),
                    },
                    Err(e) => Sent::Failed(format!("bad recipient {:?}: {e}", row.recipient)),
                };
                (row, result)
            })
            .buffer_unordered(PARALLEL_SENDS);
        // Each outcome is recorded the moment it is known: a crash can then catch
        // at most the sends in flight between the server's acceptance and the mark.
        while let Some((row, result)) = results.next().await {
            let mut s = store.lock().expect("store lock poisoned");
            match result {
                Sent::Ok => {
                    s.outbox_sent(row.id, now())?;
                    sent += 1;
                    tracing::info!(outbox = row.id, case = row.case_id, kind = %row.kind, to = %row.recipient, "confirmation sent");
                }
                Sent::Retry(e) if row.attempts + 1 < MAX_ATTEMPTS => {
                    tracing::warn!(outbox = row.id, error = %e, "confirmation not sent, will retry");
                    s.outbox_retry(row.id, &e, now() + backoff(cfg.retry_initial, row.attempts))?;
                }
                Sent::Retry(e) | Sent::Failed(e) => {
                    tracing::error!(outbox = row.id, error = %e, "confirmation failed; parked for the operator");
                    s.outbox_failed(row.id, &e)?;
                }
            }
        }
    }
}

/// The mailer task: drains the outbox on every nudge and every few seconds.
pub async fn run(
    store: Arc<Mutex<Store>>,
    cfg: SmtpConfig,
    mut nudge: mpsc::Receiver<()>,
    shutdown: CancellationToken,
) {
    let sender = match Sender::new(&cfg) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("mailer cannot start: {e:#}");
            return;
        }
    };
    loop {
        if let Err(e) = drain(&store, &sender, &cfg).await {
            tracing::error!("mailer: {e:#}");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = nudge.recv() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}
