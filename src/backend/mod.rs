//! Backends: what actually changes the reseller's ID, outside mpnd. `manual` (an
//! operator does it and says so), `partner-center` (Microsoft's API: verify a new
//! ID, then set `partnerId` on every subscription), `http` (the distributor's own
//! platform, through configured request templates; also told about gate changes).
//!
//! Every call is one of three outcomes (`JobOutcome`): done; retry (network
//! errors, timeouts, 429 with its Retry-After, 5xx: the same request is retried a
//! few times here, then the job is rescheduled by the worker); or failed (a 4xx
//! the service means: kept verbatim with Microsoft's code, for the operator). A
//! write carries a key derived from the job alone (`MS-RequestId`,
//! `Idempotency-Key`), so the retry of a request that did reach the service is
//! recognised as a repeat. Verification never rejects on doubt: a failed check is
//! `Unavailable` and the mail waits. Tokens and secrets never appear in a log or
//! an error.

mod http;
mod partner_center;
mod token;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::config::{BackendConfig, BackendKind};
use crate::store::{GateEvent, JobRow};
use crate::triage::MpnId;

pub use crate::oauth::TokenSource;

/// In-call tries of one request before the job goes back to the worker's queue.
const TRIES: u32 = 3;
/// A Retry-After up to this long is waited for in the call; a longer one hands
/// the job back to the queue with that delay instead of holding a slot.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(60);
/// After a verification could not be made, no new one is tried for a while:
/// the mailbox loop asks again for every waiting mail, Microsoft should not be
/// asked again each time.
const VERIFY_PAUSE: Duration = Duration::from_secs(30);

/// What Microsoft says about a new ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verification {
    /// Not checked: this backend does not verify (or `verify = false`).
    Skipped,
    /// Confirmed; `evidence` goes into the case's reasons.
    Valid { evidence: String },
    /// Microsoft does not confirm it: the case is rejected with plain words.
    Invalid {
        code: Option<String>,
        description: String,
        evidence: String,
    },
    /// No answer now (network, 5xx, 429, our credentials): try again later.
    Unavailable(String),
}

/// What came of running one job (or delivering one gate change).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// Done; the note says what was done (or that nothing needed doing).
    Done(String),
    /// May pass: run it again, not before `after` when the service said so.
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// The service refused for a reason that will not pass by itself.
    Failed(String),
}

enum Kind {
    Manual,
    PartnerCenter(Box<partner_center::PartnerCenter>),
    Http(http::Platform),
}

/// One configured backend, shared by the worker and the mailbox pipeline.
pub struct Backend {
    kind: Kind,
    verify: bool,
    client: Client,
    /// Set after a verification failed: until then, verification answers
    /// `Unavailable` without calling out.
    verify_paused: std::sync::Mutex<Option<(Instant, String)>>,
}

impl Backend {
    pub fn new(cfg: &BackendConfig) -> Result<Backend> {
        let client = Client::new(cfg.timeout, cfg.rate_per_minute)?;
        let kind = match cfg.kind {
            BackendKind::Manual => Kind::Manual,
            BackendKind::PartnerCenter => {
                Kind::PartnerCenter(Box::new(partner_center::PartnerCenter::new(
                    cfg.partner_center
                        .as_ref()
                        .context("backend.kind = \"partner-center\" without its settings")?,
                )))
            }
            BackendKind::Http => Kind::Http(http::Platform::new(
                cfg.http
                    .as_ref()
                    .context("backend.kind = \"http\" without its settings")?,
            )),
        };
        Ok(Backend {
            kind,
            verify: cfg.verify,
            client,
            verify_paused: std::sync::Mutex::new(None),
        })
    }

    /// Whether a worker is needed: everything but `manual`.
    pub fn is_automatic(&self) -> bool {
        !matches!(self.kind, Kind::Manual)
    }

    /// Whether `verify` can say anything but `Skipped`.
    pub fn verifies(&self) -> bool {
        self.verify && matches!(self.kind, Kind::PartnerCenter(_))
    }

    /// Whether gate changes are delivered anywhere.
    pub fn delivers_gate_events(&self) -> bool {
        matches!(&self.kind, Kind::Http(p) if p.has_gate_request())
    }

    /// Asks Microsoft whether `id` is an authorised indirect reseller (and, where
    /// configured, one linked to us).
    pub async fn verify(&self, id: &MpnId) -> Verification {
        let Kind::PartnerCenter(pc) = &self.kind else {
            return Verification::Skipped;
        };
        if !self.verify {
            return Verification::Skipped;
        }
        if let Some((until, why)) = self.verify_paused.lock().expect("lock").clone() {
            if Instant::now() < until {
                return Verification::Unavailable(format!("paused after: {why}"));
            }
        }
        let v = pc.verify(&self.client, id).await;
        if let Verification::Unavailable(why) = &v {
            tracing::warn!(mpn_id = %id, "verification unavailable: {why}");
            *self.verify_paused.lock().expect("lock") =
                Some((Instant::now() + VERIFY_PAUSE, why.clone()));
        } else {
            *self.verify_paused.lock().expect("lock") = None;
        }
        v
    }

    /// Makes the change one job stands for.
    pub async fn run(&self, job: &JobRow) -> JobOutcome {
        match &self.kind {
            Kind::Manual => JobOutcome::Retry {
                error: "the manual backend runs no jobs".into(),
                after: None,
            },
            Kind::PartnerCenter(pc) => pc.run(&self.client, job).await,
            Kind::Http(p) => p.run(&self.client, job).await,
        }
    }

    /// Tells the distributor's platform that a reseller's orders are now blocked or
    /// allowed.
    pub async fn notify_gate(&self, e: &GateEvent) -> JobOutcome {
        match &self.kind {
            Kind::Http(p) => p.notify_gate(&self.client, e).await,
            _ => JobOutcome::Done("no gate hook configured".into()),
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP plumbing shared by the backends.

/// A reqwest client plus the rate limit every call of this backend shares.
pub(crate) struct Client {
    http: reqwest::Client,
    limiter: RateLimiter,
}

/// What one request came to, after the in-call retries.
pub(crate) enum Answer {
    Ok {
        status: u16,
        body: Vec<u8>,
    },
    /// Network error, timeout, 408, 429, 5xx: may pass.
    Transient {
        error: String,
        after: Option<Duration>,
    },
    /// Any other status: the service means it.
    Refused {
        status: u16,
        body: Vec<u8>,
    },
}

impl Client {
    fn new(timeout: Duration, per_minute: u32) -> Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("mpnd/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Client {
            http,
            limiter: RateLimiter::new(per_minute),
        })
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends the request `build` makes, up to `TRIES` times while the failure may
    /// pass, each try after a token from the rate limit. A 429's Retry-After pauses
    /// every call of this backend, not just this one: the limit is per tenant.
    pub(crate) async fn send(&self, build: impl Fn() -> reqwest::RequestBuilder) -> Answer {
        let mut last = Answer::Transient {
            error: "not tried".into(),
            after: None,
        };
        for i in 0..TRIES {
            if i > 0 {
                let wait = match &last {
                    Answer::Transient { after: Some(a), .. } => *a,
                    _ => Duration::from_millis(250 << i),
                };
                if wait > MAX_INLINE_WAIT {
                    return last;
                }
                tokio::time::sleep(wait).await;
            }
            self.limiter.acquire().await;
            last = match build().send().await {
                Err(e) => Answer::Transient {
                    error: describe_reqwest(&e),
                    after: None,
                },
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let after = retry_after(resp.headers());
                    let body = match resp.bytes().await {
                        Ok(b) => b.to_vec(),
                        Err(e) => {
                            last = Answer::Transient {
                                error: format!(
                                    "HTTP {status}, body not read: {}",
                                    describe_reqwest(&e)
                                ),
                                after: None,
                            };
                            continue;
                        }
                    };
                    match status {
                        200..=299 => return Answer::Ok { status, body },
                        429 => {
                            let after = after.unwrap_or(Duration::from_secs(1));
                            self.limiter.pause(after).await;
                            Answer::Transient {
                                error: format!(
                                    "HTTP 429 (throttled), Retry-After {}s",
                                    after.as_secs()
                                ),
                                after: Some(after),
                            }
                        }
                        408 | 500..=599 => Answer::Transient {
                            error: format!("HTTP {status}: {}", snippet(&body)),
                            after,
                        },
                        _ => return Answer::Refused { status, body },
                    }
                }
            };
        }
        last
    }
}

/// A reqwest error in words, without the URL's query (never a secret there, but
/// kept short) and without any header.
fn describe_reqwest(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_decode() || e.is_body() {
        "bad response body"
    } else {
        "request failed"
    };
    let mut source = String::new();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = cur {
        source = s.to_string();
        cur = s.source();
    }
    if source.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {source}")
    }
}

/// Retry-After in seconds (Partner Center sends seconds; an HTTP date is rare
/// and treated as absent, which falls back to our own backoff).
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    h.get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(3600)))
}

/// The start of a response body for an error message, on one line.
pub(crate) fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 400 {
        format!("{}…", s.chars().take(400).collect::<String>())
    } else {
        s
    }
}

/// A token bucket: `per_minute` calls a minute on average, bursts up to the same
/// number, and a pause when the service said 429.
pub struct RateLimiter {
    inner: tokio::sync::Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    capacity: f64,
    per_sec: f64,
    last: Instant,
    paused_until: Option<Instant>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> RateLimiter {
        let capacity = per_minute.max(1) as f64;
        RateLimiter {
            inner: tokio::sync::Mutex::new(Bucket {
                tokens: capacity,
                capacity,
                per_sec: capacity / 60.0,
                last: Instant::now(),
                paused_until: None,
            }),
        }
    }

    /// Waits for one call's token.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut b = self.inner.lock().await;
                let now = Instant::now();
                let elapsed = now.duration_since(b.last).as_secs_f64();
                b.tokens = (b.tokens + elapsed * b.per_sec).min(b.capacity);
                b.last = now;
                match b.paused_until {
                    Some(until) if until > now => until - now,
                    _ if b.tokens >= 1.0 => {
                        b.tokens -= 1.0;
                        return;
                    }
                    _ => Duration::from_secs_f64((1.0 - b.tokens) / b.per_sec),
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// No call for `d` (the service's Retry-After).
    pub async fn pause(&self, d: Duration) {
        let mut b = self.inner.lock().await;
        let until = Instant::now() + d;
        if b.paused_until.is_none_or(|p| p < until) {
            b.paused_until = Some(until);
        }
    }
}

/// A GUID derived from `parts` alone: the same operation of the same job gets the
/// same request ID on every try, after a restart too, so the service can tell a
/// repeat from a new request. (SHA-256 truncated, marked as an RFC 9562 version 8
/// "custom" UUID: no dependency for one format.)
pub fn request_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The placeholders request templates may use.
pub const PLACEHOLDERS: &[&str] = &[
    "account",
    "mpn_id",
    "old_mpn_id",
    "subscription_id",
    "customer_id",
    "allowed",
    "state",
    "event_id",
];

/// The `{{name}}` placeholders in a template, in order.
pub fn placeholders(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push(after[..end].trim().to_string());
        rest = &after[end + 2..];
    }
    out
}

/// Replaces every `{{name}}` with `value(name)`.
pub fn fill_placeholders(template: &str, value: &dyn Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push_str(&rest[..start]);
        out.push_str(&value(after[..end].trim()));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// A path segment, percent-encoded (IDs are digits and GUIDs, but an account
/// name is the distributor's and may contain anything).
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_is_a_stable_guid() {
        let a = request_id(&["mpnd-1-sub-x", "patch", "etag1"]);
        assert_eq!(a, request_id(&["mpnd-1-sub-x", "patch", "etag1"]));
        assert_ne!(a, request_id(&["mpnd-1-sub-x", "patch", "etag2"]));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn templates_fill_and_list_placeholders() {
        let t = "/accounts/{{account}}/x?{{ mpn_id }}";
        assert_eq!(placeholders(t), vec!["account", "mpn_id"]);
        let filled = fill_placeholders(t, &|n| n.to_uppercase());
        assert_eq!(filled, "/accounts/ACCOUNT/x?MPN_ID");
        assert_eq!(segment("R 1/2"), "R%201%2F2");
    }

    #[tokio::test]
    async fn limiter_waits_when_empty() {
        let l = RateLimiter::new(60);
        let start = Instant::now();
        for _ in 0..60 {
            l.acquire().await;
        }
        assert!(
            start.elapsed() < Duration::from_millis(200),
            "a burst is free"
        );
        l.acquire().await;
        assert!(
            start.elapsed() >= Duration::from_millis(900),
            "the 61st call waits for a token"
        );
    }
}
