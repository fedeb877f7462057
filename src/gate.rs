//! The order gate over HTTP: may this reseller order now?
//!
//! `GET /v1/resellers/{account}/order-gate` answers from the store (bearer token
//! required; a missing or wrong token is a 401 that says nothing else), `/healthz`
//! says whether the daemon's loops are alive, `/metrics` gives Prometheus text.
//! The ordering platform calls this on every order, so it reads only and never
//! waits for the mailbox or the backend.
//!
//! `PUT` or `POST /v1/mailbox/push` (the token of `gate.push_token_file`, else the
//! gate's, as a bearer token or as the password of Basic auth) is the mail server
//! saying new mail has arrived: it wakes the mailbox loop at once instead of after
//! IMAP IDLE's notice (Dovecot waits 500 ms before it tells an idling client). Dovecot's `push_notification`
//! plugin sends exactly this with its `ox` driver on every LMTP delivery.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::{now, Store};

/// What the daemon's loops report, for `/healthz` and `/metrics`.
#[derive(Default)]
pub struct Health {
    /// Unix time the mailbox loop last showed it is alive (for the watchdog).
    pub heartbeat: AtomicI64,
    /// The last commit of a mail failed (disk full, read-only store).
    pub store_write_failing: AtomicBool,
    pub last_report: AtomicI64,
    /// Mails waiting in the inbox at the last look, and handled since start.
    pub backlog: AtomicU64,
    pub processed: AtomicU64,
    /// Unix time of the last successful look at the mailbox.
    pub last_fetch: AtomicI64,
    pub mailbox_errors: AtomicU64,
    pub reconnects: AtomicU64,
    pub gate_allowed: AtomicU64,
    pub gate_blocked: AtomicU64,
    pub gate_unknown: AtomicU64,
    pub gate_unauthorized: AtomicU64,
    /// Push requests: woke the mailbox loop, named another folder, bad token.
    pub push_woke: AtomicU64,
    pub push_ignored: AtomicU64,
    pub push_unauthorized: AtomicU64,
}

/// The largest push body read; a bigger one is refused with 413.
const PUSH_BODY_LIMIT: usize = 64 * 1024;

/// What the push endpoint wakes, for which folder, and the token it wants.
#[derive(Clone)]
pub struct Push {
    /// `gate.push_token_file`'s token, or the gate's own.
    pub token: Arc<String>,
    pub wake: Arc<Notify>,
    /// The watched IMAP folder: a push that names another folder wakes nothing.
    /// `None` (a Maildir): every push wakes.
    pub folder: Option<String>,
}

/// Read connections for the gate, so requests on both cores need not queue on
/// one connection's lock (SQLite in WAL mode serves readers in parallel).
pub struct ReadPool {
    conns: Vec<Mutex<Store>>,
    next: AtomicUsize,
}

impl ReadPool {
    pub fn open(path: &std::path::Path, size: usize) -> Result<ReadPool> {
        let conns = (0..size.max(1))
            .map(|_| Store::open(path).map(Mutex::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(ReadPool {
            conns,
            next: AtomicUsize::new(0),
        })
    }

    /// [`Store::release_memory`] on every connection, each once it is free (a
    /// blocking wait: for a blocking thread, not the runtime's).
    pub fn release_memory(&self) {
        for c in &self.conns {
            c.lock().unwrap_or_else(|p| p.into_inner()).release_memory();
        }
    }

    /// A free connection if there is one, else the next in turn.
    fn lock(&self) -> std::sync::LockResult<std::sync::MutexGuard<'_, Store>> {
        for c in &self.conns {
            if let Ok(guard) = c.try_lock() {
                return Ok(guard);
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].lock()
    }
}

#[derive(Clone)]
struct AppState {
    store: Arc<ReadPool>,
    token: Arc<String>,
    health: Arc<Health>,
    push: Push,
}

/// Reads the gate token, creating a random one (mode 0600) on first start.
pub fn load_or_create_token(path: &Path) -> Result<String> {
    if let Ok(t) = std::fs::read_to_string(path) {
        let t = t.trim().to_string();
        anyhow::ensure!(!t.is_empty(), "gate token file {} is empty", path.display());
        return Ok(t);
    }
    let mut bytes = [0u8; 32];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for a gate token")?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create gate token file {}", path.display()))?;
    writeln!(f, "{token}")?;
    Ok(token)
}

/// Compares without an early exit, so timing does not tell how much of a guess
/// was right.
fn token_matches(given: &[u8], want: &[u8]) -> bool {
    if given.len() != want.len() {
        return false;
    }
    given
        .iter()
        .zip(want)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| token_matches(t.trim().as_bytes(), token.as_bytes()))
        .unwrap_or(false)
}

/// A bearer token, or Basic auth whose password is the token (any user name):
/// mail servers' push drivers can put credentials only into the URL.
fn push_authorized(headers: &HeaderMap, token: &str) -> bool {
    use base64::Engine as _;
    if authorized(headers, token) {
        return true;
    }
    let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic.trim()) else {
        return false;
    };
    match decoded.iter().position(|&b| b == b':') {
        Some(i) => token_matches(&decoded[i + 1..], token.as_bytes()),
        None => false,
    }
}

/// IMAP folder names compare exactly, but for INBOX, which is case-insensitive.
fn same_folder(a: &str, b: &str) -> bool {
    a == b || (a.eq_ignore_ascii_case("INBOX") && b.eq_ignore_ascii_case("INBOX"))
}

/// The mail server reports new mail. The body is optional; when it is JSON with a
/// `folder` (as Dovecot's `ox` driver sends) that is not the watched folder, it
/// wakes nothing. Wakes coalesce: a flood of pushes costs at most one extra look
/// at the inbox, never a queue.
async fn push(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if !push_authorized(&headers, &st.push.token) {
        st.health.push_unauthorized.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"mpnd\"")],
        )
            .into_response();
    }
    let folder = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("folder")?.as_str().map(str::to_owned));
    if let (Some(watched), Some(named)) = (&st.push.folder, &folder) {
        if !same_folder(watched, named) {
            st.health.push_ignored.fetch_add(1, Ordering::Relaxed);
            return StatusCode::ACCEPTED.into_response();
        }
    }
    st.push.wake.notify_one();
    st.health.push_woke.fetch_add(1, Ordering::Relaxed);
    StatusCode::NO_CONTENT.into_response()
}

async fn order_gate(
    State(st): State<AppState>,
    UrlPath(account): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers, &st.token) {
        st.health.gate_unauthorized.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(serde_json::json!({"error": "unauthorized"})),
        )
            .into_response();
    }
    let answer = st
        .store
        .lock()
        .map_err(|_| ())
        .and_then(|s| s.gate(&account).map_err(|_| ()));
    match answer {
        Ok(Some(a)) => {
            let c = if a.allowed {
                &st.health.gate_allowed
            } else {
                &st.health.gate_blocked
            };
            c.fetch_add(1, Ordering::Relaxed);
            Json(a).into_response()
        }
        Ok(None) => {
            st.health.gate_unknown.fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::NOT_FOUND,
                Json(serde_json::json!({"error": "unknown account", "account": account})),
            )
                .into_response()
        }
        Err(()) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": "store unavailable"})),
        )
            .into_response(),
    }
}

async fn healthz(State(st): State<AppState>) -> Response {
    let store_ok = st.store.lock().map(|s| s.status().is_ok()).unwrap_or(false)
        && !st.health.store_write_failing.load(Ordering::Relaxed);
    let last = st.health.last_fetch.load(Ordering::Relaxed);
    let age = if last > 0 { now() - last } else { -1 };
    // The mailbox loop looks at least every few minutes even when idle (IDLE is
    // re-issued); a much older fetch means it is stuck or disconnected.
    let mailbox_ok = last > 0 && age < 15 * 60;
    let body = serde_json::json!({
        "status": if store_ok && mailbox_ok { "ok" } else { "degraded" },
        "store": store_ok,
        "mailbox": mailbox_ok,
        "last_fetch_age_seconds": age,
    });
    let code = if store_ok && mailbox_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn metrics(State(st): State<AppState>) -> Response {
    let mut out = String::new();
    let counts = st
        .store
        .lock()
        .ok()
        .and_then(|s| s.counts().ok())
        .unwrap_or_default();
    out.push_str("# HELP mpnd_items Cases, jobs, outbox mails and resellers by state.\n# TYPE mpnd_items gauge\n");
    for (table, state, n) in &counts {
        if table != "triage" {
            out.push_str(&format!(
                "mpnd_items{{kind=\"{table}\",state=\"{state}\"}} {n}\n"
            ));
        }
    }
    out.push_str("# HELP mpnd_mails_total Mails triaged, by outcome and decision.\n# TYPE mpnd_mails_total counter\n");
    for (table, od, n) in &counts {
        if table == "triage" {
            let (o, d) = od.split_once('/').unwrap_or((od, ""));
            out.push_str(&format!(
                "mpnd_mails_total{{outcome=\"{o}\",decision=\"{d}\"}} {n}\n"
            ));
        }
    }
    let h = &st.health;
    out.push_str("# TYPE mpnd_last_fetch_timestamp_seconds gauge\n");
    out.push_str(&format!(
        "mpnd_last_fetch_timestamp_seconds {}\n",
        h.last_fetch.load(Ordering::Relaxed)
    ));
    out.push_str("# TYPE mpnd_mailbox_backlog gauge\n");
    out.push_str(&format!(
        "mpnd_mailbox_backlog {}\n",
        h.backlog.load(Ordering::Relaxed)
    ));
    out.push_str("# TYPE mpnd_mailbox_errors_total counter\n");
    out.push_str(&format!(
        "mpnd_mailbox_errors_total {}\n",
        h.mailbox_errors.load(Ordering::Relaxed)
    ));
    out.push_str("# TYPE mpnd_mailbox_reconnects_total counter\n");
    out.push_str(&format!(
        "mpnd_mailbox_reconnects_total {}\n",
        h.reconnects.load(Ordering::Relaxed)
    ));
    answers(
        &mut out,
        "mpnd_gate_requests_total",
        &[
            ("allowed", &h.gate_allowed),
            ("blocked", &h.gate_blocked),
            ("unknown", &h.gate_unknown),
            ("unauthorized", &h.gate_unauthorized),
        ],
    );
    answers(
        &mut out,
        "mpnd_push_requests_total",
        &[
            ("woke", &h.push_woke),
            ("ignored", &h.push_ignored),
            ("unauthorized", &h.push_unauthorized),
        ],
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// A counter family labelled by `answer`, in Prometheus text.
fn answers(out: &mut String, name: &str, counters: &[(&str, &AtomicU64)]) {
    out.push_str(&format!("# TYPE {name} counter\n"));
    for (answer, c) in counters {
        out.push_str(&format!(
            "{name}{{answer=\"{answer}\"}} {}\n",
            c.load(Ordering::Relaxed)
        ));
    }
}

/// Binds the gate's listener; separate from `serve` so the daemon knows the port is
/// taken before it reports ready.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (gate.listen)"))
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<ReadPool>,
    token: String,
    health: Arc<Health>,
    push_to: Push,
    shutdown: CancellationToken,
) -> Result<()> {
    let state = AppState {
        store,
        token: Arc::new(token),
        health,
        push: push_to,
    };
    let app = Router::new()
        .route("/v1/resellers/{account}/order-gate", get(order_gate))
        .route(
            "/v1/mailbox/push",
            // A push is a few hundred bytes; nobody gets to make us read megabytes.
            put(push)
                .post(push)
                .layer(DefaultBodyLimit::max(PUSH_BODY_LIMIT)),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("gate server failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn push_takes_bearer_or_basic_with_the_token_as_password() {
        // "mpnd:s3cret" and "mpnd:wrong", "s3cret" (no colon) in base64.
        assert!(push_authorized(&auth("Bearer s3cret"), "s3cret"));
        assert!(push_authorized(&auth("Basic bXBuZDpzM2NyZXQ="), "s3cret"));
        assert!(!push_authorized(&auth("Basic bXBuZDp3cm9uZw=="), "s3cret"));
        assert!(!push_authorized(&auth("Basic czNjcmV0"), "s3cret"));
        assert!(!push_authorized(&auth("Basic !!!"), "s3cret"));
        assert!(!push_authorized(&HeaderMap::new(), "s3cret"));
        // The order gate itself stays bearer-only.
        assert!(!authorized(&auth("Basic bXBuZDpzM2NyZXQ="), "s3cret"));
    }

    #[test]
    fn inbox_is_case_insensitive_other_folders_are_not() {
        assert!(same_folder("INBOX", "inbox"));
        assert!(same_folder("Reseller/MPN", "Reseller/MPN"));
        assert!(!same_folder("Reseller/MPN", "reseller/mpn"));
        assert!(!same_folder("INBOX", "Review"));
    }

    #[test]
    fn token_compare() {
        assert!(token_matches(b"abc", b"abc"));
        assert!(!token_matches(b"abd", b"abc"));
        assert!(!token_matches(b"ab", b"abc"));
    }
}
