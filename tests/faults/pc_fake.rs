//! A Partner Center fake for the fault suite, trimmed from `tests/backend.rs`:
//! the token endpoint, `validateresellers`, and subscriptions with ETags (GET,
//! PATCH with If-Match). It records every request and every change it applied,
//! can answer 500 for a while (subscriptions, verification), and can delay PATCHes
//! so that a SIGKILL of the daemon lands while one is in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

pub const SECRET: &str = "pc-client-secret-7f3a9c";
pub const CLIENT_ID: &str = "mpnd-fault-client";

#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub request_id: String,
    pub partner_id: Option<String>,
}

#[derive(Default)]
pub struct PcState {
    tokens: Vec<String>,
    /// (customer, subscription) → resource.
    subs: HashMap<(String, String), Value>,
    etag_seq: u64,
    /// Answer 500 to every subscription request while set.
    pub subs_down: bool,
    /// Answer 500 to this many more validateresellers requests.
    pub verify_failures: usize,
    /// Every PATCH waits this long before it is applied.
    pub patch_delay: Duration,
    pub requests: Vec<Seen>,
    /// PATCHes that changed a resource: (subscription, partnerId, MS-RequestId).
    pub applied: Vec<(String, String, String)>,
    pub problems: Vec<String>,
    /// 500s answered, for the report.
    pub errors_served: usize,
}

#[derive(Clone)]
pub struct PcFake {
    pub url: String,
    pub state: Arc<Mutex<PcState>>,
}

impl PcFake {
    pub fn start() -> PcFake {
        let state = Arc::new(Mutex::new(PcState::default()));
        let s = state.clone();
        let app = axum::Router::new().fallback(move |m: Method, u: Uri, h: HeaderMap, b: Bytes| {
            let s = s.clone();
            async move { handle(s, m, u, h, b).await }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        PcFake {
            url: format!("http://{}", rx.recv().unwrap()),
            state,
        }
    }

    /// The subscriptions of the corpus, as Microsoft holds them.
    pub fn seed(&self, csv: &str) {
        let mut st = self.state.lock().unwrap();
        for line in csv.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            st.etag_seq += 1;
            let etag = format!("W/\"etag-{}\"", st.etag_seq);
            st.subs.insert(
                (f[1].into(), f[2].into()),
                json!({
                    "id": f[2], "offerName": f[3], "quantity": 5, "status": "active",
                    "partnerId": f[4], "attributes": {"etag": etag, "objectType": "Subscription"}
                }),
            );
        }
    }

    pub fn partner_of(&self, sub: &str) -> String {
        let st = self.state.lock().unwrap();
        st.subs
            .iter()
            .find(|((_, s), _)| s == sub)
            .map(|(_, v)| v["partnerId"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, PcState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `[backend]` section for this fake; writes the client secret file.
    pub fn backend_section(&self, dir: &std::path::Path, extra: &str) -> String {
        let secret = dir.join("pc.secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        format!(
            "[backend]\nkind = \"partner-center\"\nbase_url = \"{url}\"\n\
             token_url = \"{url}/tenant-1/oauth2/v2.0/token\"\nclient_id = \"{CLIENT_ID}\"\n\
             client_secret_file = \"{}\"\n{extra}",
            secret.display(),
            url = self.url
        )
    }
}

async fn handle(
    state: Arc<Mutex<PcState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if path.ends_with("/oauth2/v2.0/token") {
        let text = String::from_utf8_lossy(&body).to_string();
        let mut st = state.lock().unwrap();
        if !text.contains(&format!("client_secret={SECRET}")) {
            st.problems.push("token request without the secret".into());
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let token = format!("tok-{}", st.tokens.len() + 1);
        st.tokens.push(token.clone());
        return axum::Json(
            json!({"token_type": "Bearer", "expires_in": 3600, "access_token": token}),
        )
        .into_response();
    }
    let delay = {
        let mut st = state.lock().unwrap();
        let bearer = h("authorization");
        if !st
            .tokens
            .iter()
            .any(|t| bearer.strip_prefix("Bearer ") == Some(t))
        {
            st.problems.push(format!("{method} {path}: no valid token"));
            return StatusCode::UNAUTHORIZED.into_response();
        }
        st.requests.push(Seen {
            method: method.to_string(),
            path: path.clone(),
            request_id: h("ms-requestid"),
            partner_id: body_json["partnerId"].as_str().map(str::to_string),
        });
        st.patch_delay
    };
    if path == "/v1/partners/validateresellers" {
        let mut st = state.lock().unwrap();
        if st.verify_failures > 0 {
            st.verify_failures -= 1;
            st.errors_served += 1;
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
        }
        let results: Vec<Value> = body_json["partnerIds"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|id| json!({"partnerId": id, "isValidPartnerIdOnRecord": true}))
            .collect();
        return axum::Json(json!({"validationResults": results})).into_response();
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let ["v1", "customers", customer, "subscriptions", sub] = parts.as_slice() {
        let key = (customer.to_string(), sub.to_string());
        {
            let mut st = state.lock().unwrap();
            if st.subs_down {
                st.errors_served += 1;
                return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
            }
        }
        if method == Method::GET {
            let st = state.lock().unwrap();
            return match st.subs.get(&key) {
                Some(v) => axum::Json(v.clone()).into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            };
        }
        if method == Method::PATCH {
            // A client that goes away meanwhile (SIGKILL) drops this future: the
            // change is then never applied, as when a request dies in transit.
            tokio::time::sleep(delay).await;
            let mut st = state.lock().unwrap();
            let Some(current) = st.subs.get(&key).cloned() else {
                return StatusCode::NOT_FOUND.into_response();
            };
            if h("if-match") != current["attributes"]["etag"].as_str().unwrap_or("") {
                return (
                    StatusCode::PRECONDITION_FAILED,
                    axum::Json(json!({"code": 2055})),
                )
                    .into_response();
            }
            st.etag_seq += 1;
            let mut next = body_json.clone();
            next["attributes"]["etag"] = json!(format!("W/\"etag-{}\"", st.etag_seq));
            st.subs.insert(key, next.clone());
            let rid = h("ms-requestid");
            st.applied.push((
                sub.to_string(),
                next["partnerId"].as_str().unwrap_or("").to_string(),
                rid,
            ));
            return axum::Json(next).into_response();
        }
    }
    state
        .lock()
        .unwrap()
        .problems
        .push(format!("unexpected {method} {path}"));
    StatusCode::NOT_FOUND.into_response()
}
