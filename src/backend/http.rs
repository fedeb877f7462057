//! The distributor's own platform: one configured request per job kind (account,
//! subscription) and one for gate changes, each a method, a path and a JSON body
//! with `{{placeholders}}`.
//!
//! Every request carries `Authorization: Bearer <token_file>` and an
//! `Idempotency-Key`: the job's key, or `mpnd-gate-<event>` for a gate change, so
//! the platform can recognise a repeat after a crash or a retry. Success is any
//! 2xx; 408, 429 (Retry-After honoured) and 5xx are retried; any other status
//! fails the job with the platform's answer kept (shortened) for the operator.

use super::{fill_placeholders, segment, snippet, Answer, Client, JobOutcome};
use crate::config::{HttpBackendConfig, RequestTemplate};
use crate::store::{GateEvent, JobRow};

pub(super) struct Platform {
    cfg: Box<HttpBackendConfig>,
}

impl Platform {
    pub(super) fn new(cfg: &HttpBackendConfig) -> Platform {
        Platform {
            cfg: Box::new(cfg.clone()),
        }
    }

    pub(super) fn has_gate_request(&self) -> bool {
        self.cfg.gate_request.is_some()
    }

    pub(super) async fn run(&self, client: &Client, job: &JobRow) -> JobOutcome {
        let template = match job.kind.as_str() {
            "account" => &self.cfg.account_request,
            "subscription" => &self.cfg.subscription_request,
            other => return JobOutcome::Failed(format!("unknown job kind {other:?}")),
        };
        let value = |name: &str| -> String {
            match name {
                "account" => job.account.clone(),
                "mpn_id" => job.mpn_id.clone(),
                "old_mpn_id" => job.old_mpn_id.clone().unwrap_or_default(),
                "subscription_id" => job.subscription_id.clone().unwrap_or_default(),
                "customer_id" => job.customer_id.clone().unwrap_or_default(),
                _ => String::new(),
            }
        };
        let what = match &job.subscription_id {
            Some(s) => format!("subscription {s}"),
            None => format!("account {}", job.account),
        };
        self.send(client, template, &value, &job.idempotency_key, &what)
            .await
    }

    pub(super) async fn notify_gate(&self, client: &Client, e: &GateEvent) -> JobOutcome {
        let Some(template) = &self.cfg.gate_request else {
            return JobOutcome::Done("no gate hook configured".into());
        };
        let value = |name: &str| -> String {
            match name {
                "account" => e.account.clone(),
                "allowed" => e.allowed.to_string(),
                "state" => e.state.clone(),
                "mpn_id" => if e.allowed {
                    e.mpn_id.clone()
                } else {
                    e.pending_mpn_id.clone().or_else(|| e.mpn_id.clone())
                }
                .unwrap_or_default(),
                "event_id" => e.id.to_string(),
                _ => String::new(),
            }
        };
        self.send(
            client,
            template,
            &value,
            &format!("mpnd-gate-{}", e.id),
            &format!("gate of {}", e.account),
        )
        .await
    }

    async fn send(
        &self,
        client: &Client,
        t: &RequestTemplate,
        value: &(dyn Fn(&str) -> String + Sync),
        key: &str,
        what: &str,
    ) -> JobOutcome {
        let path = fill_placeholders(&t.path, &|n| segment(&value(n)));
        // Values go into JSON strings escaped, so an account name with a quote
        // cannot change the document's shape.
        let body = t.body.as_ref().map(|b| {
            fill_placeholders(b, &|n| {
                let quoted = serde_json::to_string(&value(n)).unwrap_or_default();
                quoted[1..quoted.len().saturating_sub(1).max(1)].to_string()
            })
        });
        let url = format!("{}{path}", self.cfg.base_url);
        let method =
            reqwest::Method::from_bytes(t.method.as_bytes()).unwrap_or(reqwest::Method::PUT);
        let answer = client
            .send(|| {
                let mut b = client
                    .http()
                    .request(method.clone(), &url)
                    .bearer_auth(self.cfg.token.expose())
                    .header("Accept", "application/json")
                    .header("Idempotency-Key", key);
                if let Some(body) = &body {
                    b = b
                        .header("Content-Type", "application/json")
                        .body(body.clone());
                }
                b
            })
            .await;
        match answer {
            Answer::Ok { status, .. } => {
                JobOutcome::Done(format!("{what}: platform answered HTTP {status}"))
            }
            Answer::Transient { error, after } => JobOutcome::Retry {
                error: format!("{what}: {error}"),
                after,
            },
            Answer::Refused { status, body } => JobOutcome::Failed(format!(
                "{what}: platform refused with HTTP {status}: {}",
                snippet(&body)
            )),
        }
    }
}
