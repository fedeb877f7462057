//! The Partner Center fake shared by `tests/backend.rs` and `tests/faults.rs`:
//! the token endpoint (client credentials, v2.0 scope), `validateresellers`, and
//! subscriptions with ETags (GET, PATCH with If-Match). It checks every request the
//! way Partner Center would (bearer token, MS-RequestId and MS-CorrelationId GUIDs,
//! Accept, the whole resource back with only `partnerId` changed) and records the
//! problems, every request and every change it applied. It can answer scripted
//! replies, a status to every subscription request while down, 500s to the next
//! verifications, and delay PATCHes so that a SIGKILL lands while one is in flight.
//!
//! Each test binary uses part of it.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::support::world::corpus;

pub const SECRET: &str = "s3cr3t-client-value";
pub const CLIENT_ID: &str = "mpnd-test-client";
/// The refresh token an operator would put in `user_refresh_token_file`.
pub const FIRST_REFRESH_TOKEN: &str = "rt-1";

/// One request as a fake saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

impl Seen {
    pub fn request_id(&self) -> &str {
        self.headers.get("ms-requestid").map_or("", String::as_str)
    }

    /// The `partnerId` the request's body set, if any.
    pub fn partner_id(&self) -> Option<&str> {
        self.body["partnerId"].as_str()
    }
}

/// A scripted answer for the next request whose method and path match.
pub struct Scripted {
    pub method: &'static str,
    pub path_contains: String,
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<u64>,
    pub delay: Duration,
    /// Before answering, change the resource's ETag (someone else edited it).
    pub bump_etag: bool,
}

impl Scripted {
    pub fn new(method: &'static str, path_contains: &str, status: u16, body: Value) -> Scripted {
        Scripted {
            method,
            path_contains: path_contains.into(),
            status,
            body,
            retry_after: None,
            delay: Duration::ZERO,
            bump_etag: false,
        }
    }
}

#[derive(Default)]
pub struct PcState {
    pub tokens: Vec<String>,
    /// (customer, subscription) → resource.
    subs: HashMap<(String, String), Value>,
    etag_seq: u64,
    /// ID → (valid, errorCode, errorDescription); unlisted IDs are valid.
    ids: HashMap<String, (bool, Option<Value>, Option<String>)>,
    pub script: VecDeque<Scripted>,
    /// Answer this status to every subscription request while set.
    pub down: Option<(u16, String)>,
    /// Answer 500 to this many more validateresellers requests.
    pub verify_failures: usize,
    /// Every PATCH delayed this long before it is applied (a slow Partner Center).
    pub patch_delay: Duration,
    pub requests: Vec<Seen>,
    /// PATCHes that changed a resource: (subscription, partnerId, MS-RequestId).
    pub applied: Vec<(String, String, String)>,
    pub problems: Vec<String>,
    /// Errors answered while down or failing verifications, for the report.
    pub errors_served: usize,
    /// The one refresh token the token endpoint accepts now. Each use rotates it
    /// and retires the old one (stricter than Entra, so a client that keeps using
    /// a spent token is caught).
    pub refresh_token: String,
    pub refresh_grants: usize,
    /// Access tokens from the refresh-token grant (app+user), and their lifetime.
    pub user_tokens: Vec<String>,
    pub user_expires_in: u64,
    /// Our indirect resellers as the relationship list holds them: (mpnId, state).
    pub relationships: Vec<(String, String)>,
    /// Continuation tokens handed out with `links.next`, in order.
    pub continuations: Vec<String>,
}

/// Items per page of the relationship list, small so tests cross pages.
const RELATIONSHIP_PAGE: usize = 2;

#[derive(Clone)]
pub struct PcFake {
    pub url: String,
    pub state: Arc<Mutex<PcState>>,
}

fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Serves `app` on 127.0.0.1:0 on a runtime of its own, so sync tests (driving the
/// binary) and async tests use the fakes alike. Lives until the test process ends.
pub fn serve(app: axum::Router) -> String {
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
    format!("http://{}", rx.recv().unwrap())
}

impl PcFake {
    pub fn start() -> PcFake {
        let state = Arc::new(Mutex::new(PcState {
            refresh_token: FIRST_REFRESH_TOKEN.into(),
            user_expires_in: 3600,
            ..PcState::default()
        }));
        let s = state.clone();
        let app = axum::Router::new().fallback(move |m: Method, u: Uri, h: HeaderMap, b: Bytes| {
            let s = s.clone();
            async move { handle(s, m, u, h, b).await }
        });
        PcFake {
            url: serve(app),
            state,
        }
    }

    /// Seeds the subscriptions from the corpus, as Microsoft would hold them.
    pub fn seed_corpus(&self) {
        let csv = std::fs::read_to_string(corpus().join("reseller/subscriptions.csv")).unwrap();
        for line in csv.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            self.add_sub(f[1], f[2], f[3], f[4]);
        }
    }

    pub fn add_sub(&self, customer: &str, sub: &str, offer: &str, partner: &str) {
        let mut st = self.state.lock().unwrap();
        st.etag_seq += 1;
        let etag = format!("W/\"etag-{}\"", st.etag_seq);
        st.subs.insert(
            (customer.into(), sub.into()),
            json!({
                "id": sub, "offerId": "CFQ7TTC0LDPB:0001", "offerName": offer, "quantity": 5,
                "unitType": "Licenses", "status": "active", "partnerId": partner,
                "autoRenewEnabled": true, "billingCycle": "monthly",
                "attributes": {"etag": etag, "objectType": "Subscription"}
            }),
        );
    }

    pub fn invalid(&self, id: &str, code: Value, description: &str) {
        self.state
            .lock()
            .unwrap()
            .ids
            .insert(id.into(), (false, Some(code), Some(description.into())));
    }

    pub fn script(&self, s: Scripted) {
        self.state.lock().unwrap().script.push_back(s);
    }

    pub fn requests(&self, method: &str, path_contains: &str) -> Vec<Seen> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.method == method && r.path.contains(path_contains))
            .cloned()
            .collect()
    }

    pub fn applied(&self) -> Vec<(String, String, String)> {
        self.state.lock().unwrap().applied.clone()
    }

    pub fn partner_of(&self, sub: &str) -> String {
        let st = self.state.lock().unwrap();
        st.subs
            .iter()
            .find(|((_, s), _)| s == sub)
            .map(|(_, v)| v["partnerId"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    }

    /// Every request was well-formed (headers, token, ETags, bodies).
    pub fn assert_clean(&self) {
        let st = self.state.lock().unwrap();
        assert!(
            st.problems.is_empty(),
            "fake saw bad requests: {:#?}",
            st.problems
        );
    }

    pub fn lock(&self) -> MutexGuard<'_, PcState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `[backend]` section for this fake; writes the client secret file.
    pub fn backend_section(&self, dir: &Path, extra: &str) -> String {
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

/// A request's headers by lower-case name, as the fakes check them.
pub fn header_map(headers: &HeaderMap) -> HashMap<String, String> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_lowercase(),
                v.to_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Records a request the real API would refuse, and refuses it.
fn refuse(st: &mut PcState, problem: String, status: StatusCode, body: Value) -> Response {
    st.problems.push(problem);
    (status, axum::Json(body)).into_response()
}

pub fn error_body(code: Value, description: &str) -> Value {
    json!({"code": code, "description": description, "data": [], "source": "PartnerFD"})
}

async fn handle(
    state: Arc<Mutex<PcState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let h = header_map(&headers);
    let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);

    // The token endpoint (v2.0: scope).
    if path.ends_with("/oauth2/v2.0/token") {
        let form: HashMap<String, String> = url_form(&body);
        let mut st = state.lock().unwrap();
        let client_ok = method == Method::POST
            && form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
            && form.get("client_secret").map(String::as_str) == Some(SECRET)
            && form.get("scope").map(String::as_str)
                == Some("https://api.partnercenter.microsoft.com/.default");
        if form.get("grant_type").map(String::as_str) == Some("refresh_token") {
            if !client_ok || form.get("refresh_token") != Some(&st.refresh_token) {
                let problem = format!(
                    "bad refresh-token grant (refresh token {:?}, current {:?})",
                    form.get("refresh_token"),
                    st.refresh_token
                );
                return refuse(
                    &mut st,
                    problem,
                    StatusCode::BAD_REQUEST,
                    json!({"error": "invalid_grant"}),
                );
            }
            st.refresh_grants += 1;
            st.refresh_token = format!("rt-{}", st.refresh_grants + 1);
            let token = format!("utok-{}", st.refresh_grants);
            st.user_tokens.push(token.clone());
            return axum::Json(json!({
                "token_type": "Bearer", "expires_in": st.user_expires_in,
                "access_token": token, "refresh_token": st.refresh_token,
            }))
            .into_response();
        }
        let ok =
            client_ok && form.get("grant_type").map(String::as_str) == Some("client_credentials");
        if !ok {
            return refuse(
                &mut st,
                format!("bad token request: {form:?}"),
                StatusCode::UNAUTHORIZED,
                json!({"error": "invalid_client"}),
            );
        }
        let token = format!("tok-{}", st.tokens.len() + 1);
        st.tokens.push(token.clone());
        return axum::Json(
            json!({"token_type": "Bearer", "expires_in": 3600, "access_token": token}),
        )
        .into_response();
    }

    let (scripted, delay) = {
        let mut st = state.lock().unwrap();
        st.requests.push(Seen {
            at: Instant::now(),
            method: method.to_string(),
            path: path.clone(),
            headers: h.clone(),
            body: body_json.clone(),
        });
        // Partner Center's headers on every call.
        let auth_ok = h
            .get("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| st.tokens.iter().chain(&st.user_tokens).any(|x| x == t));
        if !auth_ok {
            st.problems
                .push(format!("{method} {path}: no valid bearer token"));
            return StatusCode::UNAUTHORIZED.into_response();
        }
        if !h.get("ms-requestid").is_some_and(|v| is_guid(v)) {
            st.problems.push(format!(
                "{method} {path}: MS-RequestId missing or not a GUID"
            ));
        }
        if !h.get("ms-correlationid").is_some_and(|v| is_guid(v)) {
            st.problems.push(format!(
                "{method} {path}: MS-CorrelationId missing or not a GUID"
            ));
        }
        if h.get("accept").map(String::as_str) != Some("application/json") {
            st.problems
                .push(format!("{method} {path}: Accept is not application/json"));
        }
        let pos = st
            .script
            .iter()
            .position(|s| s.method == method.as_str() && path.contains(&s.path_contains));
        let scripted = pos.and_then(|i| st.script.remove(i));
        let delay = if method == Method::PATCH {
            st.patch_delay
        } else {
            Duration::ZERO
        };
        (scripted, delay)
    };
    if let Some(s) = scripted {
        tokio::time::sleep(s.delay).await;
        let mut st = state.lock().unwrap();
        if s.bump_etag {
            st.etag_seq += 1;
            let seq = st.etag_seq;
            for ((_, sub), v) in st.subs.iter_mut() {
                if path.contains(sub.as_str()) {
                    v["attributes"]["etag"] = json!(format!("W/\"etag-{seq}\""));
                }
            }
        }
        if s.status != 0 {
            let mut r =
                (StatusCode::from_u16(s.status).unwrap(), axum::Json(s.body)).into_response();
            if let Some(ra) = s.retry_after {
                r.headers_mut()
                    .insert("Retry-After", ra.to_string().parse().unwrap());
            }
            return r;
        }
        // status 0: only the side effect (bump, delay); answer normally.
    }

    if path == "/v1/relationships" && method == Method::GET {
        let mut st = state.lock().unwrap();
        return relationships(&mut st, uri.query().unwrap_or(""), &h);
    }

    if path == "/v1/partners/validateresellers" && method == Method::POST {
        let mut st = state.lock().unwrap();
        if st.verify_failures > 0 {
            st.verify_failures -= 1;
            st.errors_served += 1;
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
        }
        let ids = body_json["partnerIds"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let results: Vec<Value> = ids
            .iter()
            .map(|id| {
                let id = id.as_str().unwrap_or("");
                match st.ids.get(id) {
                    Some((valid, code, desc)) => {
                        json!({"partnerId": id, "isValidPartnerIdOnRecord": valid,
                               "errorCode": code, "errorDescription": desc})
                    }
                    None => json!({"partnerId": id, "isValidPartnerIdOnRecord": true}),
                }
            })
            .collect();
        return axum::Json(json!({"validationResults": results})).into_response();
    }

    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let ["v1", "customers", customer, "subscriptions", sub] = parts.as_slice() {
        let key = (customer.to_string(), sub.to_string());
        {
            let mut st = state.lock().unwrap();
            if let Some((status, text)) = st.down.clone() {
                st.errors_served += 1;
                return (StatusCode::from_u16(status).unwrap(), text).into_response();
            }
        }
        if method == Method::GET {
            let st = state.lock().unwrap();
            return match st.subs.get(&key) {
                Some(v) => axum::Json(v.clone()).into_response(),
                None => (
                    StatusCode::NOT_FOUND,
                    axum::Json(error_body(json!(800002), "Subscription not found")),
                )
                    .into_response(),
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
            let etag = current["attributes"]["etag"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if h.get("if-match") != Some(&etag) {
                return (
                    StatusCode::PRECONDITION_FAILED,
                    axum::Json(error_body(
                        json!(2055),
                        "The resource has been modified; ETag stale",
                    )),
                )
                    .into_response();
            }
            if h.get("content-type").map(String::as_str) != Some("application/json") {
                st.problems
                    .push(format!("PATCH {path}: Content-Type not JSON"));
            }
            // The whole resource comes back with only partnerId changed.
            let mut expect = current.clone();
            expect["partnerId"] = body_json["partnerId"].clone();
            if body_json != expect || !body_json["partnerId"].is_string() {
                return refuse(
                    &mut st,
                    format!(
                        "PATCH {path}: body is not the resource with partnerId set: {body_json}"
                    ),
                    StatusCode::BAD_REQUEST,
                    error_body(json!(400), "bad body"),
                );
            }
            st.etag_seq += 1;
            let mut next = body_json.clone();
            next["attributes"]["etag"] = json!(format!("W/\"etag-{}\"", st.etag_seq));
            st.subs.insert(key, next.clone());
            let rid = h.get("ms-requestid").cloned().unwrap_or_default();
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

fn url_form(body: &[u8]) -> HashMap<String, String> {
    fn decode(s: &str) -> String {
        let s = s.replace('+', " ");
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// `GET /v1/relationships`: app+user only; pages of [`RELATIONSHIP_PAGE`] items, each
/// next page asked for with `seekOperation=Next` and the `MS-ContinuationToken`
/// header that `links.next` named, as Partner Center pages its collections.
fn relationships(st: &mut PcState, query: &str, h: &HashMap<String, String>) -> Response {
    let token = h
        .get("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or("");
    if !st.user_tokens.iter().any(|t| t == token) {
        return refuse(
            st,
            "GET /v1/relationships without an app+user token".into(),
            StatusCode::FORBIDDEN,
            error_body(json!(600008), "app+user credentials required"),
        );
    }
    if !query
        .split('&')
        .any(|p| p == "relationship_type=IsIndirectCloudSolutionProviderOf")
    {
        st.problems.push(format!(
            "GET /v1/relationships?{query}: wrong relationship_type"
        ));
    }
    let page = if query.split('&').any(|p| p == "seekOperation=Next") {
        let given = h.get("ms-continuationtoken").cloned().unwrap_or_default();
        match st.continuations.iter().position(|c| *c == given) {
            Some(i) => i + 1,
            None => {
                return refuse(
                    st,
                    format!("GET /v1/relationships next page with continuation token {given:?}"),
                    StatusCode::BAD_REQUEST,
                    error_body(json!(400), "invalid continuation token"),
                );
            }
        }
    } else {
        0
    };
    let items: Vec<Value> = st
        .relationships
        .iter()
        .skip(page * RELATIONSHIP_PAGE)
        .take(RELATIONSHIP_PAGE)
        .enumerate()
        .map(|(i, (mpn, state))| {
            json!({
                "id": format!("00000000-0000-0000-0000-{:012}", page * RELATIONSHIP_PAGE + i),
                "name": format!("Reseller {mpn}"), "mpnId": mpn, "location": "DE",
                "state": state, "relationshipType": "IsIndirectCloudSolutionProviderOf",
                "attributes": {"objectType": "PartnerRelationship"}
            })
        })
        .collect();
    let mut reply = json!({
        "totalCount": st.relationships.len(), "items": items,
        "attributes": {"objectType": "Collection"}
    });
    if (page + 1) * RELATIONSHIP_PAGE < st.relationships.len() {
        // One token per page, handed out once however often the page is read.
        if st.continuations.len() <= page {
            let next = format!("ct-{}", page + 1);
            st.continuations.push(next);
        }
        reply["links"] = json!({"next": {
            "uri": "/v1/relationships?relationship_type=IsIndirectCloudSolutionProviderOf&seekOperation=Next",
            "method": "GET",
            "headers": [{"key": "MS-ContinuationToken", "value": st.continuations[page]}]
        }});
    }
    axum::Json(reply).into_response()
}
