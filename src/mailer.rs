//! The mailer: sends the outbox until it is empty, up to `smtp.max_connections` at
//! once and, with `smtp.max_per_minute`, no faster than that.
//!
//! Rows are rendered when queued (see `reply`), so this task only moves bytes: over
//! SMTP (lettre's protocol, TLS by rustls, password or XOAUTH2 auth; plain and
//! STARTTLS on pooled sockets of our own with `TCP_NODELAY`) or into `.eml` files
//! (lettre's file transport, the embedded default). A transient failure (network, 4xx) is retried
//! with exponential backoff; a permanent one (5xx) parks the row as `failed` with
//! the server's answer for the operator. After `MAX_ATTEMPTS` a row is failed too.
//! The loop wakes on a nudge when something is queued, and polls every few seconds
//! as a fallback (the operator CLI queues mail from another process).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, Certificate, Tls as SmtpTls, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::PoolConfig;
use lettre::{Address, AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{address_of, Auth, SmtpConfig, SmtpServer, Tls, Transport};
use crate::oauth::TokenSource;
use crate::store::{now, OutboxOutcome, OutboxRow, Store};
use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt as _};

const MAX_ATTEMPTS: i64 = 20;
/// Rows claimed from the store at a time when sends are not paced. The next claim
/// is made as soon as these are under way, so the connections never wait for the
/// slowest send of a group.
const CLAIM: usize = 64;
const POLL: Duration = Duration::from_secs(2);

pub enum Sender {
    File(AsyncFileTransport<Tokio1Executor>),
    Smtp(Box<Smtp>),
}

/// An SMTP relay. With XOAUTH2 the transport carries the access token as its
/// password, so it is rebuilt whenever the token source hands out a new token.
pub struct Smtp {
    server: SmtpServer,
    /// lettre's pool (implicit TLS) keeps at most this many connections.
    max_connections: usize,
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
    max_connections: usize,
    credentials: Option<(Credentials, Vec<Mechanism>)>,
) -> Result<AsyncSmtpTransport<Tokio1Executor>> {
    let tls_params = || tls_parameters(s);
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.host.clone())
        .port(s.port)
        .timeout(Some(Duration::from_secs(60)))
        .pool_config(PoolConfig::new().max_size(max_connections as u32));
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
                    None => (
                        Some((
                            String::new(),
                            build_transport(s, cfg.max_connections, None)?,
                        )),
                        None,
                    ),
                    Some((user, Auth::Password(p))) => {
                        let creds = Credentials::new(user.clone(), p.expose().to_string());
                        (
                            Some((
                                String::new(),
                                build_transport(
                                    s,
                                    cfg.max_connections,
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
                    max_connections: cfg.max_connections,
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
                    build_transport(
                        &self.server,
                        self.max_connections,
                        Some((creds, vec![Mechanism::Xoauth2])),
                    )?,
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

/// Spaces the starts of sends evenly, at most `per_minute` a minute (0: no
/// limit). Exchange Online, for one, takes 30 messages a minute from a mailbox and
/// refuses the rest for a while; a backlog's confirmations then wait here, not in
/// retries.
pub struct Pace {
    interval: Option<Duration>,
    next: Option<Instant>,
}

impl Pace {
    pub fn new(per_minute: u32) -> Pace {
        Pace {
            interval: (per_minute > 0).then(|| Duration::from_secs(60) / per_minute),
            next: None,
        }
    }

    fn limited(&self) -> bool {
        self.interval.is_some()
    }

    /// How long from `now` until the next send may start.
    fn wait(&self, now: Instant) -> Duration {
        self.next
            .map_or(Duration::ZERO, |n| n.saturating_duration_since(now))
    }

    /// A send starts at `now`.
    fn book(&mut self, now: Instant) {
        if let Some(interval) = self.interval {
            self.next = Some(self.next.map_or(now, |n| n.max(now)) + interval);
        }
    }
}

async fn send_row(sender: &Sender, from: &Address, row: OutboxRow) -> (OutboxRow, Sent) {
    let result = match row.recipient.parse::<Address>() {
        Ok(to) => match Envelope::new(Some(from.clone()), vec![to]) {
            Ok(env) => sender.send(&env, &row.raw).await,
            Err(e) => Sent::Failed(format!("bad envelope: {e}")),
        },
        Err(e) => Sent::Failed(format!("bad recipient {:?}: {e}", row.recipient)),
    };
    (row, result)
}

/// Sends whatever is due; returns how many were sent. Once `shutdown` is
/// cancelled it starts no more sends, and returns when those under way are
/// recorded.
///
/// Several go at once, one per connection: one SMTP transaction waits on round
/// trips (and on the server's delayed ACK of the final "."), not on this machine,
/// so sending one by one capped the outbox at ~20 mails/s (bench/run.sh). A
/// connection that is done takes the next row at once; rows are claimed (their
/// attempt counted) as they are needed: `CLAIM` at a time, or one at a time when
/// paced, just before it goes.
pub async fn drain(
    store: &Arc<Mutex<Store>>,
    sender: &Sender,
    cfg: &SmtpConfig,
    pace: &mut Pace,
    shutdown: &CancellationToken,
) -> Result<usize> {
    let from = address_of(&cfg.from);
    let from: Address = from
        .parse()
        .with_context(|| format!("smtp.from address {from:?} is invalid"))?;
    let claim = if pace.limited() { 1 } else { CLAIM };
    let mut claimed: VecDeque<OutboxRow> = VecDeque::new();
    // Rows under way: still pending in the store until recorded, so never claimed
    // twice.
    let mut busy: Vec<i64> = Vec::new();
    let mut in_flight = FuturesUnordered::new();
    let mut claiming = true;
    let mut claim_failed = None;
    let mut sent = 0;
    loop {
        // Start sends while a connection is free and the pace allows one.
        let mut pace_at = None;
        while claiming && in_flight.len() < cfg.max_connections && !shutdown.is_cancelled() {
            let wait = pace.wait(Instant::now());
            if !wait.is_zero() {
                pace_at = Some(Instant::now() + wait);
                break;
            }
            if claimed.is_empty() {
                let rows =
                    store
                        .lock()
                        .expect("store lock poisoned")
                        .claim_outbox(now(), claim, &busy);
                match rows {
                    Ok(rows) if rows.is_empty() => claiming = false,
                    Ok(rows) => claimed.extend(rows),
                    Err(e) => {
                        claim_failed = Some(e);
                        claiming = false;
                    }
                }
            }
            let Some(row) = claimed.pop_front() else {
                break;
            };
            pace.book(Instant::now());
            busy.push(row.id);
            in_flight.push(send_row(sender, &from, row));
        }
        if in_flight.is_empty() {
            match pace_at {
                Some(at) if claiming => {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                    continue;
                }
                _ => break,
            }
        }
        // A send finishing, or the pace allowing the next one.
        let first = match pace_at {
            Some(at) => tokio::select! {
                r = in_flight.next() => r,
                _ = tokio::time::sleep_until(at) => None,
            },
            None => in_flight.next().await,
        };
        // Each outcome is recorded as soon as it is known, together with those
        // known at the same moment: a crash can then catch at most the sends in
        // flight between the server's acceptance and the mark.
        let mut done: Vec<(OutboxRow, Sent)> = first.into_iter().collect();
        while let Some(Some(r)) = in_flight.next().now_or_never() {
            done.push(r);
        }
        if done.is_empty() {
            continue;
        }
        let mut outcomes = Vec::with_capacity(done.len());
        for (row, result) in done {
            busy.retain(|&id| id != row.id);
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
    match claim_failed {
        Some(e) => Err(e),
        None => Ok(sent),
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
    let mut pace = Pace::new(cfg.max_per_minute);
    loop {
        if let Err(e) = drain(&store, &sender, &cfg, &mut pace, &shutdown).await {
            tracing::error!("mailer: {e:#}");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = nudge.recv() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_spaces_starts_evenly_and_never_waits_unlimited() {
        let t0 = Instant::now();
        let mut p = Pace::new(30);
        assert_eq!(p.wait(t0), Duration::ZERO, "the first send goes at once");
        p.book(t0);
        assert_eq!(p.wait(t0), Duration::from_secs(2));
        assert_eq!(
            p.wait(t0 + Duration::from_millis(500)),
            Duration::from_millis(1500)
        );
        // Late is late: the next slot is counted from the actual start.
        p.book(t0 + Duration::from_secs(10));
        assert_eq!(p.wait(t0 + Duration::from_secs(10)), Duration::from_secs(2));
        assert_eq!(p.wait(t0 + Duration::from_secs(13)), Duration::ZERO);

        let mut free = Pace::new(0);
        for _ in 0..100 {
            free.book(t0);
        }
        assert_eq!(free.wait(t0), Duration::ZERO);
        assert!(!free.limited() && p.limited());
    }
}
