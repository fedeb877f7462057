//! A local OAuth2 authorization server for tests: a client-credentials token
//! endpoint (`POST /token`) and RFC 7662 token introspection (`POST /introspect`)
//! for Dovecot's `oauth2` passdb, so XOAUTH2 logins are checked for real.
//!
//! Tokens are `tok-1`, `tok-2`, ... (one per token request), each valid until
//! [`OAuthServer::revoke_all`]. Counters let tests see caching and refreshes.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::ServerThread;

pub const CLIENT_ID: &str = "mpnd-test-client";
pub const CLIENT_SECRET: &str = "test-client-secret-do-not-log";
pub const SCOPE: &str = "https://outlook.office365.com/.default";

/// What the endpoint knows and has seen.
#[derive(Debug)]
pub struct OAuthState {
    /// The user introspection reports as the token's owner.
    pub username: String,
    /// `expires_in` of the next token handed out, in seconds.
    pub expires_in: u64,
    /// Tokens that introspection calls active.
    pub valid: HashSet<String>,
    pub issued: u64,
    pub token_requests: u64,
    pub introspections: u64,
    /// The scope of the last token request.
    pub last_scope: Option<String>,
}

type Shared = Arc<Mutex<OAuthState>>;

pub struct OAuthServer {
    pub addr: SocketAddr,
    state: Shared,
    _server: ServerThread,
}

impl OAuthServer {
    /// Start on a free port; tokens are issued for `username`.
    pub fn start(username: &str) -> OAuthServer {
        let state = Arc::new(Mutex::new(OAuthState {
            username: username.to_string(),
            expires_in: 3600,
            valid: HashSet::new(),
            issued: 0,
            token_requests: 0,
            introspections: 0,
            last_scope: None,
        }));
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the oauth test endpoint");
        let addr = listener.local_addr().expect("local_addr");
        let app = Router::new()
            .route("/token", post(token))
            .route("/introspect", post(introspect))
            .with_state(state.clone());
        let server =
            ServerThread::spawn("oauth-test", listener, move |listener, stop| async move {
                // No graceful shutdown: Dovecot keeps its HTTP connections open, and a
                // stop should cut them like an outage anyway.
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stop => {}
                }
            });
        OAuthServer {
            addr,
            state,
            _server: server,
        }
    }

    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    pub fn introspection_url(&self) -> String {
        format!("http://{}/introspect", self.addr)
    }

    /// A TokenSource-ready set of arguments: (token_url, client_id, secret, scope).
    pub fn client(&self) -> (String, String, String, String) {
        (
            self.token_url(),
            CLIENT_ID.into(),
            CLIENT_SECRET.into(),
            SCOPE.into(),
        )
    }

    pub fn state(&self) -> MutexGuard<'_, OAuthState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn token_requests(&self) -> u64 {
        self.state().token_requests
    }

    pub fn introspections(&self) -> u64 {
        self.state().introspections
    }

    pub fn set_expires_in(&self, secs: u64) {
        self.state().expires_in = secs;
    }

    /// Make every token issued so far invalid (introspection answers inactive).
    pub fn revoke_all(&self) {
        self.state().valid.clear();
    }
}

fn form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn get<'a>(f: &'a [(String, String)], key: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

async fn token(State(state): State<Shared>, body: String) -> (StatusCode, Json<Value>) {
    let f = form(&body);
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    s.token_requests += 1;
    if get(&f, "grant_type") != Some("client_credentials") {
        return (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"error": "unsupported_grant_type", "error_description": "only client_credentials"}),
            ),
        );
    }
    if get(&f, "client_id") != Some(CLIENT_ID) || get(&f, "client_secret") != Some(CLIENT_SECRET) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(
                json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}),
            ),
        );
    }
    s.last_scope = get(&f, "scope").map(str::to_string);
    s.issued += 1;
    let token = format!("tok-{}", s.issued);
    s.valid.insert(token.clone());
    (
        StatusCode::OK,
        Json(json!({"token_type": "Bearer", "expires_in": s.expires_in, "access_token": token})),
    )
}

async fn introspect(State(state): State<Shared>, body: String) -> (StatusCode, Json<Value>) {
    let f = form(&body);
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    s.introspections += 1;
    match get(&f, "token") {
        Some(t) if s.valid.contains(t) => (
            StatusCode::OK,
            Json(json!({"active": true, "username": s.username, "scope": SCOPE})),
        ),
        _ => (StatusCode::OK, Json(json!({"active": false}))),
    }
}
