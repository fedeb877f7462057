//! OAuth2 access tokens for Partner Center: the app-only client-credentials grant,
//! or an app+user refresh-token grant (for the calls Microsoft allows only with a
//! user behind them, such as the relationship list).
//!
//! A token is cached and renewed shortly before it expires (or when the API says
//! 401), by one caller at a time. A failed token request is the caller's transient
//! error (the job is retried, a verification waits); the error carries the token
//! endpoint's `error`/`error_description` but never the secret or a token. The
//! token endpoint is Entra ID's v1 (`resource=`) or v2.0 (`scope=`); config decides.
//! Self-contained on purpose: `src/oauth.rs` (IMAP/SMTP) is being written in
//! parallel, the two can be unified later.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

use crate::config::{PartnerCenterConfig, Secret};

/// Renew when less than this is left (or half the lifetime, if that is less).
const MARGIN: Duration = Duration::from_secs(300);

pub struct TokenSource {
    token_url: String,
    client_id: String,
    client_secret: Secret,
    /// ("scope", ...) or ("resource", ...).
    audience: (&'static str, String),
    /// `Some` for the app+user grant; Entra may rotate it with every use, so the
    /// newest is kept (in memory: the file is the operator's).
    refresh_token: Option<tokio::sync::Mutex<Secret>>,
    cached: tokio::sync::Mutex<Option<(Secret, Instant)>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    /// Seconds; the v1 endpoint sends it as a string.
    expires_in: Option<serde_json::Value>,
    refresh_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

impl TokenSource {
    /// The app-only source.
    pub fn app(cfg: &PartnerCenterConfig) -> TokenSource {
        TokenSource::build(cfg, None)
    }

    /// The app+user source, when a refresh token is configured.
    pub fn user(cfg: &PartnerCenterConfig) -> Option<TokenSource> {
        cfg.user_refresh_token
            .clone()
            .map(|t| TokenSource::build(cfg, Some(t)))
    }

    fn build(cfg: &PartnerCenterConfig, refresh: Option<Secret>) -> TokenSource {
        let audience = match (&cfg.scope, &cfg.resource) {
            (Some(s), _) => ("scope", s.clone()),
            (None, Some(r)) => ("resource", r.clone()),
            (None, None) => (
                "scope",
                "https://api.partnercenter.microsoft.com/.default".into(),
            ),
        };
        TokenSource {
            token_url: cfg.token_url.clone(),
            client_id: cfg.client_id.clone(),
            client_secret: cfg.client_secret.clone(),
            audience,
            refresh_token: refresh.map(tokio::sync::Mutex::new),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// A valid access token, from the cache or freshly requested.
    pub async fn get(&self, http: &reqwest::Client) -> Result<Secret> {
        let mut cached = self.cached.lock().await;
        if let Some((token, renew_at)) = cached.as_ref() {
            if Instant::now() < *renew_at {
                return Ok(token.clone());
            }
        }
        let (token, lifetime) = self.request(http).await?;
        let margin = MARGIN.min(lifetime / 2);
        *cached = Some((token.clone(), Instant::now() + lifetime - margin));
        Ok(token)
    }

    /// Forgets the cached token (the API refused it).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn request(&self, http: &reqwest::Client) -> Result<(Secret, Duration)> {
        let mut form: Vec<(&str, String)> = vec![
            ("client_id", self.client_id.clone()),
            ("client_secret", self.client_secret.expose().to_string()),
            (self.audience.0, self.audience.1.clone()),
        ];
        let mut refresh_guard = match &self.refresh_token {
            Some(m) => Some(m.lock().await),
            None => None,
        };
        match &refresh_guard {
            Some(rt) => {
                form.push(("grant_type", "refresh_token".into()));
                form.push(("refresh_token", rt.expose().to_string()));
            }
            None => form.push(("grant_type", "client_credentials".into())),
        }
        let resp = http
            .post(&self.token_url)
            .header("Accept", "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| anyhow!("token request failed: {}", super::describe_reqwest(&e)))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| anyhow!("token response not read: {}", super::describe_reqwest(&e)))?;
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
            anyhow!("token endpoint answered HTTP {status} without a JSON token answer")
        })?;
        if !status.is_success() {
            bail!(
                "token endpoint refused (HTTP {status}): {} {}",
                answer.error.as_deref().unwrap_or("-"),
                answer
                    .error_description
                    .as_deref()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("")
            );
        }
        let token = answer
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| anyhow!("token endpoint answered without an access_token"))?;
        let secs = match &answer.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .unwrap_or(300)
        .max(1);
        if let (Some(rt), Some(new)) = (refresh_guard.as_mut(), answer.refresh_token) {
            **rt = Secret::new(new);
        }
        Ok((Secret::new(token), Duration::from_secs(secs)))
    }
}
