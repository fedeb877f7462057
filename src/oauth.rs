//! OAuth2 access tokens: for the mailbox and SMTP logins (XOAUTH2) and for Partner
//! Center (app-only, or app+user through a refresh token).
//!
//! [`TokenSource`] owns one client registration and the token it last obtained. It
//! asks the token endpoint with a form POST (`grant_type=client_credentials`, or
//! `refresh_token` for an app+user source; the audience as `scope=` for Entra's
//! v2.0 endpoint or `resource=` for v1), keeps
//! the token, and asks again a little before it expires (5 minutes, or a tenth of
//! the token's lifetime when that is shorter), or after [`TokenSource::invalidate`]
//! when a server rejected it. Nothing is retried here: a failed request is an error
//! for this call, and the caller's reconnect loop (with its backoff) tries again.
//! The client secret and the tokens never appear in `Debug` output, logs or errors.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Refresh this long before the token expires, unless the token lives so short that
/// a tenth of its lifetime is less (test endpoints and some proxies hand out
/// minute-long tokens).
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// How long one request to the token endpoint may take before it is an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Cap on the error text copied from a token endpoint's reply into our error, so a
/// misbehaving endpoint can't flood the log.
const MAX_ERROR_TEXT: usize = 300;

/// A cached OAuth2 client-credentials token for one client registration.
pub struct TokenSource {
    /// Where tokens are requested; tests point it at a local endpoint.
    token_url: String,
    client_id: String,
    /// Never printed: `Debug` is written by hand to leave it out.
    client_secret: String,
    /// ("scope", "https://outlook.office365.com/.default") for IMAP and SMTP on
    /// Exchange Online; ("resource", …) for Entra's v1 endpoint.
    audience: (&'static str, String),
    /// `Some` for the refresh-token grant (app+user). Entra may rotate it with every
    /// use, so the newest is kept: here, and in `refresh_store` when there is one
    /// (the configured file is the operator's and may be read-only).
    refresh_token: Option<Mutex<String>>,
    refresh_store: Option<RefreshTokenStore>,
    http: reqwest::Client,
    /// The last token and when to stop using it. A std mutex: it is held only to
    /// read or replace the value, never across an await.
    cached: Mutex<Option<Cached>>,
    /// Serialises refreshes, so many connections asking at once cause one request.
    refresh: tokio::sync::Mutex<()>,
}

struct Cached {
    token: String,
    /// The instant after which the token is not handed out any more.
    refresh_at: Instant,
}

/// The token endpoint's successful reply (RFC 6749 §5.1).
#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    /// A rotated refresh token (refresh-token grant only).
    refresh_token: Option<String>,
    /// Seconds. Azure AD v1 endpoints send it as a string, v2 as a number.
    expires_in: Option<NumberOrString>,
}

/// The token endpoint's error reply (RFC 6749 §5.2); only these fields are shown.
#[derive(Deserialize)]
struct ErrorReply {
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrString {
    Number(u64),
    String(String),
}

impl NumberOrString {
    fn seconds(&self) -> Option<u64> {
        match self {
            NumberOrString::Number(n) => Some(*n),
            NumberOrString::String(s) => s.trim().parse().ok(),
        }
    }
}

impl TokenSource {
    /// A token source for one client registration. Makes no request yet.
    pub fn new(token_url: String, client_id: String, client_secret: String, scope: String) -> Self {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .build()
            // Building a client with these options only fails if the TLS backend can't
            // initialise, which is a broken installation, not a run-time condition.
            .unwrap_or_else(|_| reqwest::Client::new());
        TokenSource {
            token_url,
            client_id,
            client_secret,
            audience: ("scope", scope),
            refresh_token: None,
            refresh_store: None,
            http,
            cached: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// Names the audience with `resource=` (Entra's v1 endpoint) instead of `scope=`.
    pub fn with_resource(mut self, resource: String) -> Self {
        self.audience = ("resource", resource);
        self
    }

    /// Uses the refresh-token grant (app+user) instead of client credentials.
    pub fn with_refresh_token(mut self, refresh_token: String) -> Self {
        self.refresh_token = Some(Mutex::new(refresh_token));
        self
    }

    /// Keeps rotated refresh tokens in `store` and starts from the one kept there,
    /// when it descends from the configured token (see [`RefreshTokenStore`]).
    pub fn with_refresh_token_store(mut self, store: RefreshTokenStore) -> Self {
        if let Some(m) = &self.refresh_token {
            if let Some(kept) = store.load() {
                *m.lock().unwrap_or_else(|p| p.into_inner()) = kept;
            }
        }
        self.refresh_store = Some(store);
        self
    }

    /// A valid access token: the cached one while it is fresh, else a new one.
    pub async fn token(&self) -> anyhow::Result<String> {
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let _refreshing = self.refresh.lock().await;
        // Another caller may have refreshed while we waited for the lock.
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let asked = Instant::now();
        let (token, lifetime) = self.request().await?;
        let margin = REFRESH_MARGIN.min(lifetime / 10);
        let refresh_at = asked + lifetime.saturating_sub(margin);
        *self.lock() = Some(Cached {
            token: token.clone(),
            refresh_at,
        });
        tracing::debug!(
            lifetime_s = lifetime.as_secs(),
            "obtained oauth2 access token"
        );
        Ok(token)
    }

    /// Forget the cached token, e.g. after a server rejected it or ended a session
    /// with "access token expired"; the next [`TokenSource::token`] asks anew.
    pub fn invalidate(&self) {
        *self.lock() = None;
    }

    fn fresh(&self) -> Option<String> {
        let cached = self.lock();
        cached
            .as_ref()
            .filter(|c| Instant::now() < c.refresh_at)
            .map(|c| c.token.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        // A panic while holding this lock can't leave the Option half-written.
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn request(&self) -> anyhow::Result<(String, Duration)> {
        let refresh = self
            .refresh_token
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()).clone());
        let mut form = vec![
            ("client_id", self.client_id.clone()),
            ("client_secret", self.client_secret.clone()),
            (self.audience.0, self.audience.1.clone()),
        ];
        match refresh {
            Some(rt) => {
                form.push(("grant_type", "refresh_token".into()));
                form.push(("refresh_token", rt));
            }
            None => form.push(("grant_type", "client_credentials".into())),
        }
        // reqwest's errors name the URL but never the form body, so the secret
        // can't leak through them.
        let reply = self
            .http
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .with_context(|| format!("requesting an oauth2 token from {}", self.token_url))?;
        let status = reply.status();
        let body = reply
            .bytes()
            .await
            .with_context(|| format!("reading the oauth2 token reply from {}", self.token_url))?;
        if !status.is_success() {
            return Err(anyhow!(
                "oauth2 token endpoint {} answered {}{}",
                self.token_url,
                status,
                describe_error(&body)
            ));
        }
        let reply: TokenReply = serde_json::from_slice(&body).map_err(|e| {
            // serde's message names the field and position, not the content.
            anyhow!(
                "oauth2 token endpoint {} sent an unreadable reply: {e}",
                self.token_url
            )
        })?;
        if reply.access_token.is_empty() {
            return Err(anyhow!(
                "oauth2 token endpoint {} sent an empty access_token",
                self.token_url
            ));
        }
        if let (Some(m), Some(new)) = (&self.refresh_token, reply.refresh_token) {
            if let Some(store) = &self.refresh_store {
                if let Err(e) = store.save(&new) {
                    tracing::warn!(
                        path = %store.path.display(),
                        "cannot keep the rotated refresh token ({e}); after a restart the \
                         configured one is used again"
                    );
                }
            }
            *m.lock().unwrap_or_else(|p| p.into_inner()) = new;
        }
        // Without expires_in (it is only RECOMMENDED) assume the usual hour.
        let secs = reply
            .expires_in
            .as_ref()
            .and_then(NumberOrString::seconds)
            .unwrap_or(3600);
        Ok((reply.access_token, Duration::from_secs(secs)))
    }
}

/// A file that keeps the newest refresh token across restarts, beside the SHA-256
/// of the configured token it descends from. A restart starts from the kept token
/// while the configured one is unchanged (a refresh token ages out unless used; the
/// one an operator configured months ago may no longer be accepted); once the
/// operator configures a new token (a new consent), that one wins. Written whole
/// through a temporary file and a rename, mode 0600. Holds a secret: never logged.
pub struct RefreshTokenStore {
    path: PathBuf,
    /// `sha256:<hex>` of the configured token.
    origin: String,
}

const STORE_HEADER: &str = "mpnd refresh token v1";

impl RefreshTokenStore {
    /// The store at `path` for the refresh token configured as `configured`.
    pub fn new(path: PathBuf, configured: &str) -> Self {
        RefreshTokenStore {
            path,
            origin: format!("sha256:{:x}", Sha256::digest(configured.as_bytes())),
        }
    }

    /// The kept token, when it descends from the configured one.
    fn load(&self) -> Option<String> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "cannot read the kept refresh token ({e}); using the configured one");
                return None;
            }
        };
        let mut lines = text.lines();
        let (Some(STORE_HEADER), Some(origin), Some(token)) =
            (lines.next(), lines.next(), lines.next())
        else {
            tracing::warn!(path = %self.path.display(), "the kept refresh token file is not in mpnd's format; using the configured token");
            return None;
        };
        if origin.strip_prefix("origin ") != Some(self.origin.as_str()) {
            tracing::info!(path = %self.path.display(), "the configured refresh token changed since the kept one: using the configured one");
            return None;
        }
        (!token.is_empty()).then(|| token.to_string())
    }

    fn save(&self, token: &str) -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        writeln!(f, "{STORE_HEADER}\norigin {}\n{token}", self.origin)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        // The rename itself is durable only once the directory is: without this a
        // crash right after a rotation could bring back the token it replaced.
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)?.sync_all()
    }
}

/// The `error` and `error_description` of an OAuth2 error reply, for the error text.
fn describe_error(body: &[u8]) -> String {
    let Ok(e) = serde_json::from_slice::<ErrorReply>(body) else {
        return String::new();
    };
    let mut s = String::new();
    if let Some(code) = e.error {
        s.push_str(": ");
        s.push_str(&code);
    }
    if let Some(d) = e.error_description {
        s.push_str(": ");
        s.push_str(&d);
    }
    if s.len() > MAX_ERROR_TEXT {
        let mut end = MAX_ERROR_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self.lock().as_ref().map(|c| c.refresh_at > Instant::now());
        f.debug_struct("TokenSource")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("audience", &self.audience)
            .field("token_cached", &cached.unwrap_or(false))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_secret_and_token() {
        let ts = TokenSource::new(
            "http://127.0.0.1:1/token".into(),
            "client".into(),
            "s3cr3t-value".into(),
            "scope".into(),
        );
        *ts.lock() = Some(Cached {
            token: "tok-value".into(),
            refresh_at: Instant::now() + Duration::from_secs(60),
        });
        let d = format!("{ts:?}");
        assert!(!d.contains("s3cr3t-value"), "{d}");
        assert!(!d.contains("tok-value"), "{d}");
        assert!(
            d.contains("<redacted>") && d.contains("token_cached: true"),
            "{d}"
        );
    }

    #[test]
    fn error_reply_is_summarised() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret.","trace_id":"x"}"#;
        assert_eq!(
            describe_error(body),
            ": invalid_client: AADSTS7000215: Invalid client secret."
        );
        assert_eq!(describe_error(b"<html>oops</html>"), "");
    }

    #[test]
    fn expires_in_as_number_or_string() {
        let a: TokenReply =
            serde_json::from_str(r#"{"access_token":"a","expires_in":3599}"#).unwrap();
        let b: TokenReply =
            serde_json::from_str(r#"{"access_token":"b","expires_in":"3599"}"#).unwrap();
        assert_eq!(a.expires_in.and_then(|e| e.seconds()), Some(3599));
        assert_eq!(b.expires_in.and_then(|e| e.seconds()), Some(3599));
    }
}
