//! Partner Center: verify a new ID (`validateresellers`, optionally the indirect
//! reseller relationship list) and put it on every subscription of the reseller.
//!
//! A subscription job reads the subscription, returns at once when `partnerId`
//! already is the new ID (a repeat after a crash changes nothing), else PATCHes
//! the whole resource with the new `partnerId` and `If-Match: <etag>`, then reads
//! it back and requires the new ID. A stale ETag (code 2055 or HTTP 412) is read
//! again and tried once more. The account job changes nothing at Microsoft: the
//! reseller of record lives on the subscriptions; mpnd's own record is the
//! account, written when the case completes. Documented refusals (800098, 800091,
//! 20002, ...) fail the job with Microsoft's code and words kept verbatim.

use serde_json::Value;

use super::{request_id, segment, snippet, Answer, Client, JobOutcome, TokenSource, Verification};
use crate::config::PartnerCenterConfig;
use crate::store::JobRow;
use crate::triage::MpnId;

pub(super) struct PartnerCenter {
    base: String,
    app: TokenSource,
    user: Option<TokenSource>,
    check_relationship: bool,
}

/// Microsoft's error body: `{"code", "description", "data", "source"}`; `code` is a
/// number or a string depending on the endpoint.
fn error_of(body: &[u8]) -> (Option<String>, String) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code = match &v["code"] {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let description = v["description"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| snippet(body));
    (code, description)
}

/// What a documented Partner Center code means, for the operator.
fn meaning(code: &str) -> Option<&'static str> {
    Some(match code {
        "800098" => "Microsoft refuses to change the partner on record of this subscription",
        "800091" => "the subscription is suspended: it must be active to change its partner",
        "20002" => "we have no commerce relationship with this customer",
        "800015" => "Microsoft does not know this partner ID",
        "800016" => "the partner ID is not a valid indirect reseller",
        "800039" => "the reseller's program status is not active",
        "900123" => "the reseller has not accepted the Microsoft Partner Agreement",
        "2055" => "the subscription changed meanwhile (ETag stale)",
        _ => return None,
    })
}

fn refused(what: &str, status: u16, body: &[u8]) -> String {
    let (code, description) = error_of(body);
    match code {
        Some(c) => format!(
            "{what}: Partner Center error {c} (HTTP {status}): {} — Microsoft: {description:?}",
            meaning(&c).unwrap_or("undocumented code")
        ),
        None => format!("{what}: HTTP {status} — Microsoft: {description:?}"),
    }
}

/// One Partner Center request: `user` chooses the app+user token (when configured)
/// over the app-only one.
struct Req<'a> {
    user: bool,
    method: reqwest::Method,
    url: &'a str,
    request_id: &'a str,
    correlation_id: &'a str,
    etag: Option<&'a str>,
    /// `MS-ContinuationToken` for the next page of a collection.
    continuation: Option<&'a str>,
    body: Option<&'a Value>,
}

impl<'a> Req<'a> {
    fn new(
        method: reqwest::Method,
        url: &'a str,
        request_id: &'a str,
        correlation_id: &'a str,
    ) -> Req<'a> {
        Req {
            user: false,
            method,
            url,
            request_id,
            correlation_id,
            etag: None,
            continuation: None,
            body: None,
        }
    }
}

enum Step {
    Ok(Value),
    EtagStale(String),
    Stop(JobOutcome),
}

impl PartnerCenter {
    pub(super) fn new(cfg: &PartnerCenterConfig) -> PartnerCenter {
        PartnerCenter {
            base: cfg.base_url.clone(),
            app: super::token::app(cfg),
            user: super::token::user(cfg),
            check_relationship: cfg.check_relationship,
        }
    }

    /// One call with Partner Center's headers.
    async fn call(&self, client: &Client, r: Req<'_>) -> Answer {
        let Req {
            user,
            method,
            url,
            request_id,
            correlation_id,
            etag,
            continuation,
            body,
        } = r;
        let source = match (user, &self.user) {
            (true, Some(u)) => u,
            _ => &self.app,
        };
        let token = match source.token().await {
            Ok(t) => t,
            Err(e) => {
                return Answer::Transient {
                    error: format!("{e:#}"),
                    after: None,
                }
            }
        };
        let answer = client
            .send(|| {
                let mut b = client
                    .http()
                    .request(method.clone(), url)
                    .bearer_auth(&token)
                    .header("Accept", "application/json")
                    .header("MS-RequestId", request_id)
                    .header("MS-CorrelationId", correlation_id);
                if let Some(etag) = etag {
                    b = b.header("If-Match", etag);
                }
                if let Some(token) = continuation {
                    b = b.header("MS-ContinuationToken", token);
                }
                if let Some(body) = body {
                    b = b.json(body);
                }
                b
            })
            .await;
        if let Answer::Refused { status: 401, .. } = &answer {
            // An expired or revoked token: get a new one on the next try.
            source.invalidate();
            return Answer::Transient {
                error: "HTTP 401: Partner Center refused our token".into(),
                after: None,
            };
        }
        answer
    }

    pub(super) async fn verify(&self, client: &Client, id: &MpnId) -> Verification {
        let url = format!("{}/v1/partners/validateresellers", self.base);
        let body = serde_json::json!({ "partnerIds": [id.as_str()] });
        // A check has no side effect: a fresh request ID each time.
        let rid = request_id(&["verify", id.as_str(), &crate::store::now().to_string()]);
        let answer = self
            .call(
                client,
                Req {
                    body: Some(&body),
                    ..Req::new(reqwest::Method::POST, &url, &rid, &rid)
                },
            )
            .await;
        let body = match answer {
            Answer::Ok { body, .. } => body,
            Answer::Transient { error, .. } => {
                return Verification::Unavailable(format!("validateresellers: {error}"))
            }
            // Our request or our credentials are wrong (403, 400): that says nothing
            // about the reseller, so it must not reject one.
            Answer::Refused { status, body } => {
                return Verification::Unavailable(refused("validateresellers", status, &body))
            }
        };
        let v: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => {
                return Verification::Unavailable(format!(
                    "validateresellers answered without JSON: {}",
                    snippet(&body)
                ))
            }
        };
        let Some(result) = v["validationResults"].as_array().and_then(|a| {
            a.iter()
                .find(|r| value_str(&r["partnerId"]).as_deref() == Some(id.as_str()))
        }) else {
            return Verification::Unavailable(format!(
                "validateresellers did not answer for {id}: {}",
                snippet(&body)
            ));
        };
        let code = match &result["errorCode"] {
            Value::Number(n) => Some(n.to_string()),
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        let description = result["errorDescription"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if result["isValidPartnerIdOnRecord"].as_bool() != Some(true) {
            let evidence = format!(
                "Partner Center: {id} is not valid on record{}{}",
                code.as_deref()
                    .map(|c| format!(", error {c}"))
                    .unwrap_or_default(),
                if description.is_empty() {
                    String::new()
                } else {
                    format!(": {description:?}")
                }
            );
            return Verification::Invalid {
                code,
                description: if description.is_empty() {
                    "not valid on record".into()
                } else {
                    description
                },
                evidence,
            };
        }
        let mut evidence = format!("Partner Center: {id} is valid on record (validateresellers)");
        if self.check_relationship && self.user.is_some() {
            match self.relationship(client, id).await {
                Ok(Some(state)) if state.eq_ignore_ascii_case("active") => {
                    evidence.push_str("; indirect reseller relationship active");
                }
                Ok(found) => {
                    let description = match found {
                        Some(state) => {
                            format!("indirect reseller relationship is {state}, not Active")
                        }
                        None => "not in our indirect reseller relationships".to_string(),
                    };
                    return Verification::Invalid {
                        code: Some("relationship".into()),
                        evidence: format!("{evidence}; but {description}"),
                        description,
                    };
                }
                Err(e) => return Verification::Unavailable(e),
            }
        }
        Verification::Valid { evidence }
    }

    /// The state of our indirect-reseller relationship with `id`, following pages:
    /// each next page is asked for at `links.next.uri` with the headers `links.next`
    /// names (Partner Center's `MS-ContinuationToken`).
    async fn relationship(&self, client: &Client, id: &MpnId) -> Result<Option<String>, String> {
        let mut url = format!(
            "{}/v1/relationships?relationship_type=IsIndirectCloudSolutionProviderOf",
            self.base
        );
        let mut continuation: Option<String> = None;
        for page in 0..50 {
            let rid = request_id(&[
                "relationships",
                id.as_str(),
                &page.to_string(),
                &crate::store::now().to_string(),
            ]);
            let body = match self
                .call(
                    client,
                    Req {
                        user: true,
                        continuation: continuation.as_deref(),
                        ..Req::new(reqwest::Method::GET, &url, &rid, &rid)
                    },
                )
                .await
            {
                Answer::Ok { body, .. } => body,
                Answer::Transient { error, .. } => return Err(format!("relationships: {error}")),
                Answer::Refused { status, body } => {
                    return Err(refused("relationships", status, &body))
                }
            };
            let v: Value = serde_json::from_slice(&body)
                .map_err(|_| format!("relationships answered without JSON: {}", snippet(&body)))?;
            if let Some(item) = v["items"].as_array().and_then(|items| {
                items
                    .iter()
                    .find(|i| value_str(&i["mpnId"]).as_deref() == Some(id.as_str()))
            }) {
                return Ok(Some(
                    item["state"].as_str().unwrap_or("unknown").to_string(),
                ));
            }
            let next = &v["links"]["next"];
            continuation = next["headers"].as_array().and_then(|headers| {
                headers
                    .iter()
                    .find(|h| {
                        h["key"]
                            .as_str()
                            .is_some_and(|k| k.eq_ignore_ascii_case("MS-ContinuationToken"))
                    })
                    .and_then(|h| h["value"].as_str())
                    .map(str::to_string)
            });
            match next["uri"].as_str() {
                Some(next) if !next.is_empty() => {
                    url = if next.starts_with("http") {
                        next.to_string()
                    } else {
                        format!("{}/{}", self.base, next.trim_start_matches('/'))
                    };
                }
                _ => return Ok(None),
            }
        }
        Err("relationships: more than 50 pages".into())
    }

    pub(super) async fn run(&self, client: &Client, job: &JobRow) -> JobOutcome {
        match job.kind.as_str() {
            "account" => JobOutcome::Done(format!(
                "account {}: nothing to change at Microsoft (the subscriptions carry the \
                 reseller of record); mpnd records ID {} when the case completes",
                job.account, job.mpn_id
            )),
            "subscription" => self.subscription(client, job).await,
            other => JobOutcome::Failed(format!("unknown job kind {other:?}")),
        }
    }

    async fn subscription(&self, client: &Client, job: &JobRow) -> JobOutcome {
        let (Some(customer), Some(sub)) = (&job.customer_id, &job.subscription_id) else {
            return JobOutcome::Failed(
                "subscription job without customer or subscription ID".into(),
            );
        };
        let url = format!(
            "{}/v1/customers/{}/subscriptions/{}",
            self.base,
            segment(customer),
            segment(sub)
        );
        let key = job.idempotency_key.as_str();
        let correlation = request_id(&["case", &job.case_id.to_string()]);
        let attempt = job.attempts.to_string();
        for round in 0..2 {
            let rid = request_id(&[key, "get", &attempt, &round.to_string()]);
            let current = match self.read_for_job(client, &url, &rid, &correlation).await {
                Ok(v) => v,
                Err(outcome) => return outcome,
            };
            let before = value_str(&current["partnerId"]).unwrap_or_default();
            if before == job.mpn_id {
                return JobOutcome::Done(format!(
                    "subscription {sub}: partnerId already {}; nothing changed",
                    job.mpn_id
                ));
            }
            let etag = current["attributes"]["etag"].as_str().map(str::to_string);
            let mut body = current.clone();
            body["partnerId"] = Value::String(job.mpn_id.clone());
            // The write's request ID depends on what it writes over, not on the
            // attempt: a retry of the same PATCH is recognisably the same request.
            let rid = request_id(&[key, "patch", etag.as_deref().unwrap_or("")]);
            let answer = self
                .call(
                    client,
                    Req {
                        etag: etag.as_deref(),
                        body: Some(&body),
                        ..Req::new(reqwest::Method::PATCH, &url, &rid, &correlation)
                    },
                )
                .await;
            match answer {
                Answer::Ok { .. } => {}
                Answer::Transient { error, after } => {
                    return JobOutcome::Retry {
                        error: format!("PATCH subscription {sub}: {error}"),
                        after,
                    }
                }
                Answer::Refused { status, body } => {
                    let (code, _) = error_of(&body);
                    if status == 412 || code.as_deref() == Some("2055") {
                        if round == 0 {
                            tracing::info!(subscription = %sub, "ETag stale; reading it again");
                            continue;
                        }
                        return JobOutcome::Retry {
                            error: refused(&format!("PATCH subscription {sub}"), status, &body),
                            after: None,
                        };
                    }
                    return JobOutcome::Failed(refused(
                        &format!("PATCH subscription {sub}"),
                        status,
                        &body,
                    ));
                }
            }
            let rid = request_id(&[key, "readback", &attempt, &round.to_string()]);
            let after = match self.read_for_job(client, &url, &rid, &correlation).await {
                Ok(v) => v,
                Err(outcome) => return outcome,
            };
            let now = value_str(&after["partnerId"]).unwrap_or_default();
            if now != job.mpn_id {
                return JobOutcome::Failed(format!(
                    "subscription {sub}: Partner Center accepted the PATCH but still shows partnerId {now:?}, not {}",
                    job.mpn_id
                ));
            }
            return JobOutcome::Done(format!(
                "subscription {sub}: partnerId {before:?} → {} (etag {} → {})",
                job.mpn_id,
                etag.as_deref().unwrap_or("-"),
                after["attributes"]["etag"].as_str().unwrap_or("-")
            ));
        }
        JobOutcome::Retry {
            error: format!("subscription {sub}: ETag stale twice"),
            after: None,
        }
    }

    /// A GET of the subscription for a job: the resource, or the job's outcome
    /// when it could not be read (a stale ETag here is simply a retry).
    async fn read_for_job(
        &self,
        client: &Client,
        url: &str,
        rid: &str,
        correlation: &str,
    ) -> Result<Value, JobOutcome> {
        match self.read(client, url, rid, correlation).await {
            Step::Ok(v) => Ok(v),
            Step::EtagStale(error) => Err(JobOutcome::Retry { error, after: None }),
            Step::Stop(o) => Err(o),
        }
    }

    async fn read(&self, client: &Client, url: &str, rid: &str, correlation: &str) -> Step {
        match self
            .call(
                client,
                Req::new(reqwest::Method::GET, url, rid, correlation),
            )
            .await
        {
            Answer::Ok { body, .. } => match serde_json::from_slice::<Value>(&body) {
                Ok(v) if v.is_object() => Step::Ok(v),
                _ => Step::Stop(JobOutcome::Retry {
                    error: format!("GET subscription: not a JSON object: {}", snippet(&body)),
                    after: None,
                }),
            },
            Answer::Transient { error, after } => Step::Stop(JobOutcome::Retry {
                error: format!("GET subscription: {error}"),
                after,
            }),
            Answer::Refused { status, body } => {
                if status == 412 {
                    return Step::EtagStale(refused("GET subscription", status, &body));
                }
                Step::Stop(JobOutcome::Failed(refused(
                    "GET subscription",
                    status,
                    &body,
                )))
            }
        }
    }
}

/// A JSON string or number as text (IDs come as either).
fn value_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
