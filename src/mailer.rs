//! The mailer: sends the outbox until it is empty, up to `PARALLEL_SENDS` at once.
//!
//! Rows are rendered when queued (see `reply`), so this task only moves bytes: over
//! SMTP (lettre's protocol, TLS by rustls, password or XOAUTH2 auth; plain and
//! STARTTLS on pooled sockets of our own with `TCP_NODELAY`) or into `.eml` files
//! (lettre's file transport, the embedded default). A transient failure (network, 4xx) is retried
//! with exponential backoff; a permanent one (5xx) parks the row as `failed` with
//! the server's answer for the operator. After `MAX_ATTEMPTS` a row is failed too.
//! The loop wakes on a nudge when something is queued, and polls every few seconds
//! as a fallback (the operator CLI queues mail from another process).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, Certificate, Tls as SmtpTls, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{address_of, Auth, SmtpConfig, SmtpServer, Tls, Transport};
use crate::oauth::TokenSource;
use crate::store::{now, OutboxOutcome, Store};
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
    /// Idle connections of our own (plain and STARTTLS), by the secret they
    /// logged in with: see `Smtp::send_nodelay`.
    idle: tokio::sync::Mutex<Vec<(String, AsyncSmtpConnection)>>,
}

/// How long one SMTP exchange on a connection of our own may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(60);

/// What came of one try.
enum Sent {
    Ok,
    Retry(String),
    Failed(String),
}

fn tls_parameters(s: &SmtpServer) -> Result<TlsParameters> {
    let mut b = TlsParameters::builder(s.host.clone());
    if let Some(ca) = &s.ca_file {
        let pem = std::fs::read(ca)
            .with_context(|| format!("cannot read smtp.ca_file {}", ca.display()))?;
        b = b.add_root_certificate(
            Certificate::from_pem(&pem).context("smtp.ca_file is not a PEM certificate")?,
        );
    }
    b.build_rustls().context("cannot set up TLS for SMTP")
}

fn build_transport(
    s: &SmtpServer,
    credentials: Option<(Credentials, Vec<Mechanism>)>,
) -> Result<AsyncSmtpTransport<Tokio1Executor>> {
    let tls_params = || tls_parameters(s);
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
                    idle: tokio::sync::Mutex::new(Vec::new()),
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
            Sender::Smtp(smtp) if smtp.server.tls != Tls::Implicit => {
                smtp.send_nodelay(envelope, raw).await
            }
            Sender::Smtp(smtp) => {
                let transport = match smtp.transport().await {
                    Ok(t) => t,
                    Err(e) => return Sent::Retry(format!("{e:#}")),
                };
                match transport.send_raw(envelope, raw).await {
                    Ok(_) => Sent::Ok,
                    Err(e) => smtp.classify(e),
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
    /// Sends over a connection of our own with `TCP_NODELAY` (plain or STARTTLS).
    ///
    /// lettre writes a message and its final "." in two writes on a socket it
    /// opens without `TCP_NODELAY`, so the "." waited for the server's delayed ACK:
    /// about 40 ms per confirmation, whatever the server (bench/run.sh). lettre
    /// cannot be given that option, but it can run its SMTP protocol over a socket
    /// we open. Implicit TLS still goes through lettre's transport, since lettre
    /// sends EHLO on a socket it is given before TLS could start.
    async fn send_nodelay(&self, envelope: &Envelope, raw: &[u8]) -> Sent {
        let creds = match (&self.server.auth, &self.oauth) {
            (_, Some((user, tokens))) => match tokens.token().await {
                Ok(token) => Some((
                    Credentials::new(user.clone(), token),
                    vec![Mechanism::Xoauth2],
                )),
                Err(e) => return Sent::Retry(format!("cannot get an SMTP access token: {e:#}")),
            },
            (Some((user, Auth::Password(p))), None) => Some((
                Credentials::new(user.clone(), p.expose().to_string()),
                vec![Mechanism::Plain, Mechanism::Login],
            )),
            _ => None,
        };
        // Connections are reused only with the secret they logged in with.
        let key = creds
            .as_ref()
            .map(|(c, _)| format!("{c:?}"))
            .unwrap_or_default();
        let reused = {
            let mut idle = self.idle.lock().await;
            idle.iter()
                .position(|(k, _)| *k == key)
                .map(|i| idle.swap_remove(i).1)
        };
        let was_reused = reused.is_some();
        let mut conn = match reused {
            Some(c) => c,
            None => match self.connect(creds.clone()).await {
                Ok(c) => c,
                Err(sent) => return sent,
            },
        };
        let mut result = tokio::time::timeout(SMTP_TIMEOUT, conn.send(envelope, raw)).await;
        // A pooled connection the server has meanwhile closed: once more, fresh.
        let failed_transiently = match &result {
            Ok(Ok(_)) => false,
            Ok(Err(e)) => !e.is_permanent(),
            Err(_) => true,
        };
        if was_reused && failed_transiently {
            conn.abort().await;
            conn = match self.connect(creds).await {
                Ok(c) => c,
                Err(sent) => return sent,
            };
            result = tokio::time::timeout(SMTP_TIMEOUT, conn.send(envelope, raw)).await;
        }
        match result {
            Ok(Ok(_)) => {
                self.idle.lock().await.push((key, conn));
                Sent::Ok
            }
            Ok(Err(e)) => {
                conn.abort().await;
                self.classify(e)
            }
            Err(_) => {
                conn.abort().await;
                Sent::Retry(format!(
                    "no answer from {} within {SMTP_TIMEOUT:?}",
                    self.server.host
                ))
            }
        }
    }

    /// A new, logged-in connection with `TCP_NODELAY`; `Err` is what to record.
    async fn connect(
        &self,
        creds: Option<(Credentials, Vec<Mechanism>)>,
    ) -> Result<AsyncSmtpConnection, Sent> {
        let host = &self.server.host;
        let tcp = match tokio::time::timeout(
            SMTP_TIMEOUT,
            tokio::net::TcpStream::connect((host.as_str(), self.server.port)),
        )
        .await
        {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                return Err(Sent::Retry(format!(
                    "cannot connect to {host}:{}: {e}",
                    self.server.port
                )))
            }
            Err(_) => {
                return Err(Sent::Retry(format!(
                    "no connection to {host}:{} within {SMTP_TIMEOUT:?}",
                    self.server.port
                )))
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            return Err(Sent::Retry(format!("cannot set TCP_NODELAY: {e}")));
        }
        let hello = ClientId::default();
        let params = match self.server.tls {
            Tls::Starttls => match tls_parameters(&self.server) {
                Ok(p) => Some(p),
                Err(e) => return Err(Sent::Retry(format!("{e:#}"))),
            },
            _ => None,
        };
        let setup = async {
            let mut conn =
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &hello).await?;
            if let Some(params) = params {
                conn.starttls(params, &hello).await?;
            }
            if let Some((c, mechanisms)) = &creds {
                conn.auth(mechanisms, c).await?;
            }
            Ok::<_, lettre::transport::smtp::Error>(conn)
        };
        match tokio::time::timeout(SMTP_TIMEOUT, setup).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(self.classify(e)),
            Err(_) => Err(Sent::Retry(format!(
                "{host}: no answer within {SMTP_TIMEOUT:?}"
            ))),
        }
    }

    /// Sorts a refusal into retry or failed. An expired or revoked token looks
    /// permanent (535) but is not: it is forgotten and the mail retried with a new
    /// one. Any other 5xx (a refused recipient, say) is permanent with XOAUTH2 as
    /// with a password.
    fn classify(&self, e: lettre::transport::smtp::Error) -> Sent {
        match &self.oauth {
            Some((_, tokens)) if token_refused(&e) => {
                tokens.invalidate();
                Sent::Retry(format!("the server refused the access token: {e}"))
            }
            _ if e.is_permanent() => Sent::Failed(format!("{e}")),
            _ => Sent::Retry(format!("{e}")),
        }
    }

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
        let results = futures::stream::iter(rows)
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
        // Each outcome is recorded as soon as it is known, together with those
        // that are known at the same moment (`ready_chunks` waits for none): a
        // crash can then catch at most the sends in flight between the server's
        // acceptance and the mark.
        let mut results = results.ready_chunks(PARALLEL_SENDS);
        while let Some(done) = results.next().await {
            let mut outcomes = Vec::with_capacity(done.len());
            for (row, result) in done {
                let outcome = match result {
                    Sent::Ok => {
                        sent += 1;
                        tracing::info!(outbox = row.id, case = row.case_id, kind = %row.kind, to = %row.recipient, "confirmation sent");
                        OutboxOutcome::Sent { at: now() }
                    }
                    Sent::Retry(e) if row.attempts + 1 < MAX_ATTEMPTS => {
                        tracing::warn!(outbox = row.id, error = %e, "confirmation not sent, will retry");
                        OutboxOutcome::Retry {
                            at: now() + backoff(cfg.retry_initial, row.attempts),
                            error: e,
                        }
                    }
                    Sent::Retry(e) | Sent::Failed(e) => {
                        tracing::error!(outbox = row.id, error = %e, "confirmation failed; parked for the operator");
                        OutboxOutcome::Failed { error: e }
                    }
                };
                outcomes.push((row.id, outcome));
            }
            store
                .lock()
                .expect("store lock poisoned")
                .outbox_record(&outcomes)?;
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
