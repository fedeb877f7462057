//! The automatic backends against local fakes on 127.0.0.1: a Partner Center fake
//! (token endpoint, validateresellers, subscriptions with ETags) that checks every
//! request it gets and can be scripted to throttle, fail, stall or refuse; and a
//! fake of the distributor's platform for the `http` backend. First the backend
//! library on its own, then the real `mpnd` binary end to end (triage is still a
//! placeholder on this branch, so cases are applied with `mpnd queue approve`).

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{json, Value};

use mpnd::backend::{Backend, JobOutcome, Verification};
use mpnd::config::Config;
use mpnd::store::JobRow;
use mpnd::triage::MpnId;

mod support;
use support::world::{Setup, World};

#[path = "support/pc_fake.rs"]
mod pc_fake;
use pc_fake::{error_body, header_map, serve, PcFake, Scripted, Seen, FIRST_REFRESH_TOKEN};

const PLATFORM_TOKEN: &str = "platform-token-42";

/// The distributor's platform: records every request, checks the bearer token
/// and that an Idempotency-Key is present; answers 500 to the first request of
/// every path listed in `fail_once`.
/// (requests, problems, paths whose next request fails once).
type PlatformState = (Vec<Seen>, Vec<String>, Vec<String>);

#[derive(Clone)]
struct PlatformFake {
    url: String,
    state: Arc<Mutex<PlatformState>>,
}

impl PlatformFake {
    fn start(fail_once: Vec<String>) -> PlatformFake {
        let state = Arc::new(Mutex::new((Vec::new(), Vec::new(), fail_once)));
        let s = state.clone();
        let app = axum::Router::new().fallback(move |m: Method, u: Uri, h: HeaderMap, b: Bytes| {
            let s = s.clone();
            async move {
                let headers = header_map(&h);
                let mut st = s.lock().unwrap();
                let path = u.path().to_string();
                if headers.get("authorization").map(String::as_str)
                    != Some(&format!("Bearer {PLATFORM_TOKEN}"))
                {
                    st.1.push(format!("{m} {path}: bad token"));
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                if headers.get("idempotency-key").is_none_or(|k| k.is_empty()) {
                    st.1.push(format!("{m} {path}: no Idempotency-Key"));
                }
                let body: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
                if body.is_null() {
                    st.1.push(format!("{m} {path}: body is not JSON"));
                }
                st.0.push(Seen {
                    at: Instant::now(),
                    method: m.to_string(),
                    path: path.clone(),
                    headers,
                    body,
                });
                if let Some(i) = st.2.iter().position(|p| *p == path) {
                    st.2.remove(i);
                    return (StatusCode::INTERNAL_SERVER_ERROR, "try again").into_response();
                }
                (StatusCode::OK, axum::Json(json!({"ok": true}))).into_response()
            }
        });
        PlatformFake {
            url: serve(app),
            state,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().0.clone()
    }
}

// ---------------------------------------------------------------------------
// The backend on its own.

fn pc_backend(fake: &PcFake, dir: &Path, extra: &str) -> Backend {
    let text = fake.backend_section(dir, extra);
    let config = Config::parse(&text, "test.toml", dir).unwrap();
    Backend::new(&config.backend).unwrap()
}

fn sub_job(id: i64, customer: &str, sub: &str, new_id: &str) -> JobRow {
    JobRow {
        id,
        case_id: 7,
        account: "R-20031".into(),
        kind: "subscription".into(),
        subscription_id: Some(sub.into()),
        customer_id: Some(customer.into()),
        mpn_id: new_id.into(),
        old_mpn_id: Some("4417206".into()),
        state: "running".into(),
        attempts: 1,
        last_error: String::new(),
        idempotency_key: format!("mpnd-7-sub-{sub}"),
    }
}

fn id(s: &str) -> MpnId {
    MpnId::parse(s).unwrap()
}

#[tokio::test]
async fn verify_valid_invalid_and_per_id_error() {
    let fake = PcFake::start();
    fake.invalid(
        "7000001",
        json!("800016"),
        "Partner is not a valid indirect reseller",
    );
    fake.invalid("7000002", json!(900400), "Invalid partner id");
    let dir = tempfile::tempdir().unwrap();
    let b = pc_backend(&fake, dir.path(), "");
    assert!(b.verifies(), "verify defaults to true for partner-center");

    let v = b.verify(&id("6284913")).await;
    assert!(
        matches!(&v, Verification::Valid { evidence } if evidence.contains("valid on record")),
        "{v:?}"
    );
    match b.verify(&id("7000001")).await {
        Verification::Invalid {
            code, description, ..
        } => {
            assert_eq!(code.as_deref(), Some("800016"));
            assert_eq!(description, "Partner is not a valid indirect reseller");
        }
        other => panic!("expected invalid, got {other:?}"),
    }
    match b.verify(&id("7000002")).await {
        Verification::Invalid { code, evidence, .. } => {
            assert_eq!(code.as_deref(), Some("900400"));
            assert!(evidence.contains("Invalid partner id"), "{evidence}");
        }
        other => panic!("expected invalid, got {other:?}"),
    }
    let posts = fake.requests("POST", "/v1/partners/validateresellers");
    assert_eq!(posts.len(), 3);
    assert_eq!(posts[0].body, json!({"partnerIds": ["6284913"]}));
    assert_eq!(
        fake.state.lock().unwrap().tokens.len(),
        1,
        "the token is cached"
    );

    // A 503 is no answer, never a rejection; until the pause is over Microsoft is
    // not asked again.
    for _ in 0..3 {
        fake.script(Scripted::new("POST", "validateresellers", 503, json!({})));
    }
    let v = b.verify(&id("6284913")).await;
    assert!(
        matches!(&v, Verification::Unavailable(why) if why.contains("503")),
        "{v:?}"
    );
    let v = b.verify(&id("6284913")).await;
    assert!(matches!(v, Verification::Unavailable(_)));
    assert_eq!(
        fake.requests("POST", "validateresellers").len(),
        6,
        "3 tries, then paused"
    );
    fake.assert_clean();
}

/// The relationship check (app+user): the list is read with a token from the
/// refresh-token grant, page after page with the continuation token each
/// `links.next` names, and the refresh token Microsoft rotates is the one used next.
#[tokio::test]
async fn relationship_check_pages_with_continuation_tokens_and_rotates_the_refresh_token() {
    let fake = PcFake::start();
    {
        let mut st = fake.lock();
        st.user_expires_in = 1; // so the second check needs a new user token
        st.relationships = [
            ("1000001", "Active"),
            ("1000002", "Active"),
            ("1000003", "Pending"),
            ("1000004", "Active"),
            ("6284913", "Active"),
        ]
        .iter()
        .map(|(m, s)| (m.to_string(), s.to_string()))
        .collect();
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = dir.path().join("pc.refresh");
    std::fs::write(&rt, format!("{FIRST_REFRESH_TOKEN}\n")).unwrap();
    let config = format!(
        "user_refresh_token_file = \"{}\"\ncheck_relationship = true\n",
        rt.display()
    );
    let b = pc_backend(&fake, dir.path(), &config);

    // On the third page.
    let v = b.verify(&id("6284913")).await;
    assert!(
        matches!(&v, Verification::Valid { evidence } if evidence.contains("relationship active")),
        "{v:?}"
    );
    let pages = fake.requests("GET", "/v1/relationships");
    assert_eq!(pages.len(), 3, "three pages read");
    assert_eq!(
        pages
            .iter()
            .map(|p| p.headers.get("ms-continuationtoken").cloned())
            .collect::<Vec<_>>(),
        [None, Some("ct-1".to_string()), Some("ct-2".to_string())]
    );

    // The user token has expired: the next check refreshes with the rotated token.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    match b.verify(&id("1000003")).await {
        Verification::Invalid {
            code, description, ..
        } => {
            assert_eq!(code.as_deref(), Some("relationship"));
            assert!(description.contains("Pending"), "{description}");
        }
        other => panic!("expected invalid, got {other:?}"),
    }
    match b.verify(&id("7777777")).await {
        Verification::Invalid { description, .. } => {
            assert!(description.contains("not in our"), "{description}")
        }
        other => panic!("expected invalid, got {other:?}"),
    }
    assert_eq!(fake.lock().refresh_grants, 2, "one refresh per user token");
    fake.assert_clean();

    // A restart: the configured token was spent long ago (the fake refuses it);
    // the one Microsoft rotated to last was kept in the state dir, mode 0600.
    let kept = dir.path().join("var/partner-center.refresh-token");
    let text = std::fs::read_to_string(&kept).unwrap();
    assert!(text.ends_with("\nrt-3\n"), "{text}");
    assert!(
        !text.contains(FIRST_REFRESH_TOKEN),
        "only a hash of the configured one"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777,
        0o600
    );
    drop(b);
    let b = pc_backend(&fake, dir.path(), &config);
    let v = b.verify(&id("1000001")).await;
    assert!(matches!(v, Verification::Valid { .. }), "{v:?}");
    assert_eq!(fake.lock().refresh_grants, 3);
    fake.assert_clean();

    // The operator consents again and configures the new token: it wins over the
    // kept one, which descends from the old configuration.
    drop(b);
    fake.lock().refresh_token = "rt-fresh-consent".into();
    std::fs::write(&rt, "rt-fresh-consent\n").unwrap();
    let b = pc_backend(&fake, dir.path(), &config);
    let v = b.verify(&id("1000002")).await;
    assert!(matches!(v, Verification::Valid { .. }), "{v:?}");
    assert_eq!(fake.lock().refresh_grants, 4);
    fake.assert_clean();
}

#[tokio::test]
async fn patch_sets_partner_id_once_and_a_repeat_changes_nothing() {
    let fake = PcFake::start();
    fake.add_sub("cust-1", "sub-1", "Microsoft 365 E3", "4417206");
    let dir = tempfile::tempdir().unwrap();
    let b = pc_backend(&fake, dir.path(), "");
    let job = sub_job(1, "cust-1", "sub-1", "6284913");

    let out = b.run(&job).await;
    assert!(
        matches!(&out, JobOutcome::Done(n) if n.contains("6284913")),
        "{out:?}"
    );
    let patches = fake.requests("PATCH", "/subscriptions/sub-1");
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].headers["if-match"], "W/\"etag-1\"");
    assert_eq!(patches[0].body["partnerId"], "6284913");
    assert_eq!(
        patches[0].body["offerName"], "Microsoft 365 E3",
        "the rest is intact"
    );
    assert_eq!(
        fake.requests("GET", "/subscriptions/sub-1").len(),
        2,
        "read, then read back"
    );
    assert_eq!(fake.partner_of("sub-1"), "6284913");

    // After a crash the job runs again: it reads, sees the ID, writes nothing.
    let out = b.run(&JobRow { attempts: 2, ..job }).await;
    assert!(
        matches!(&out, JobOutcome::Done(n) if n.contains("nothing changed")),
        "{out:?}"
    );
    assert_eq!(fake.requests("PATCH", "").len(), 1);
    fake.assert_clean();
}

#[tokio::test]
async fn throttling_is_honoured_with_the_same_request_id() {
    let fake = PcFake::start();
    fake.add_sub("cust-1", "sub-1", "Microsoft 365 E3", "4417206");
    let mut s = Scripted::new(
        "PATCH",
        "sub-1",
        429,
        error_body(json!(429), "Too many requests"),
    );
    s.retry_after = Some(2);
    fake.script(s);
    let dir = tempfile::tempdir().unwrap();
    let b = pc_backend(&fake, dir.path(), "");
    let out = b.run(&sub_job(1, "cust-1", "sub-1", "6284913")).await;
    assert!(matches!(out, JobOutcome::Done(_)), "{out:?}");
    let patches = fake.requests("PATCH", "sub-1");
    assert_eq!(patches.len(), 2);
    assert!(
        patches[1].at.duration_since(patches[0].at) >= Duration::from_secs(2),
        "Retry-After honoured"
    );
    assert_eq!(
        patches[0].headers["ms-requestid"], patches[1].headers["ms-requestid"],
        "a retry of the same write carries the same MS-RequestId"
    );
    fake.assert_clean();
}

#[tokio::test]
async fn stale_etag_is_read_again_and_retried_once() {
    let fake = PcFake::start();
    fake.add_sub("cust-1", "sub-1", "Microsoft 365 E3", "4417206");
    // Someone edits the subscription between our GET and our PATCH.
    let mut s = Scripted::new("PATCH", "sub-1", 0, json!(null));
    s.bump_etag = true;
    fake.script(s);
    let dir = tempfile::tempdir().unwrap();
    let b = pc_backend(&fake, dir.path(), "");
    let out = b.run(&sub_job(1, "cust-1", "sub-1", "6284913")).await;
    assert!(matches!(out, JobOutcome::Done(_)), "{out:?}");
    let patches = fake.requests("PATCH", "sub-1");
    assert_eq!(
        patches.len(),
        2,
        "412/2055, then once more with the fresh ETag"
    );
    assert_ne!(
        patches[0].headers["if-match"],
        patches[1].headers["if-match"]
    );
    assert_eq!(fake.applied().len(), 1);
    fake.assert_clean();
}

#[tokio::test]
async fn documented_refusal_fails_the_job_with_its_code() {
    let fake = PcFake::start();
    fake.add_sub("cust-1", "sub-1", "Microsoft 365 E3", "4417206");
    fake.script(Scripted::new(
        "PATCH",
        "sub-1",
        400,
        error_body(json!(800098), "Cannot update the partner on record."),
    ));
    let dir = tempfile::tempdir().unwrap();
    let b = pc_backend(&fake, dir.path(), "");
    match b.run(&sub_job(1, "cust-1", "sub-1", "6284913")).await {
        JobOutcome::Failed(e) => {
            assert!(e.contains("800098"), "{e}");
            assert!(
                e.contains("Cannot update the partner on record."),
                "kept verbatim: {e}"
            );
        }
        other => panic!("expected a failed job, got {other:?}"),
    }
    assert_eq!(
        fake.requests("PATCH", "").len(),
        1,
        "a refusal is not retried"
    );
    assert_eq!(fake.partner_of("sub-1"), "4417206");
    fake.assert_clean();
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_retried() {
    let fake = PcFake::start();
    fake.add_sub("cust-1", "sub-1", "Microsoft 365 E3", "4417206");
    let mut s = Scripted::new("GET", "sub-1", 0, json!(null));
    s.delay = Duration::from_secs(3);
    fake.script(s);
    let dir = tempfile::tempdir().unwrap();
    let b = pc_backend(&fake, dir.path(), "timeout_secs = 1\n");
    let out = b.run(&sub_job(1, "cust-1", "sub-1", "6284913")).await;
    assert!(matches!(out, JobOutcome::Done(_)), "{out:?}");
    assert_eq!(fake.partner_of("sub-1"), "6284913");
    // A subscription that stays down is handed back for a later attempt.
    fake.state.lock().unwrap().down = Some((503, "maintenance".into()));
    let out = b.run(&sub_job(2, "cust-1", "sub-1", "7388016")).await;
    assert!(
        matches!(&out, JobOutcome::Retry { error, .. } if error.contains("503")),
        "{out:?}"
    );
    fake.assert_clean();
}

// ---------------------------------------------------------------------------
// The real binary.

/// A daemon with the embedded default's parts plus `backend` (a whole `[backend]`
/// section written for the test's state dir).
fn backend_world(backend: impl FnOnce(&Path) -> String) -> World {
    World::new(move |dir| Setup {
        backend: backend(dir),
        ..Setup::default()
    })
}

/// What the backend tests do with a running daemon.
trait BackendWorld {
    fn mail_case(&self, n: usize, from: &str) -> String;
    fn mail_case_with(&self, n: usize, from: &str, body: &str) -> String;
    fn gate(&self, account: &str) -> bool;
    fn case(&self, case: &str) -> Value;
    fn wait_case(&self, case: &str, state: &str, secs: u64) -> Value;
    fn outbox_kinds(&self, secs: u64, want: &str) -> Vec<String>;
}

impl BackendWorld for World {
    /// A mail without an ID (so it waits in review for the operator's approval).
    fn mail_case(&self, n: usize, from: &str) -> String {
        self.mail_case_with(
            n,
            from,
            "wir haben uns neu registriert; die neue ID reichen wir nach.",
        )
    }

    fn mail_case_with(&self, n: usize, from: &str, body: &str) -> String {
        let raw = format!(
            "From: <{from}>\r\nTo: cloud@nordwind-dist.example\r\nSubject: Neue MPN-ID\r\n\
             Message-ID: <backend-{n}@test.example>\r\nDate: Tue, 18 Nov 2025 11:02:08 +0100\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
        );
        self.deliver(&format!("17000000{n:02}.M1P1.test"), raw.as_bytes());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let cases = self.json(&["queue", "list", "--state", "all", "--json"]);
            if let Some(c) = cases.as_array().unwrap().get(n) {
                return c["id"].as_i64().unwrap().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "mail not committed; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn gate(&self, account: &str) -> bool {
        self.mpnd(&["gate", account]).status.code() == Some(0)
    }

    fn case(&self, case: &str) -> Value {
        self.json(&["queue", "show", case, "--json"])
    }

    fn wait_case(&self, case: &str, state: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let c = self.case(case);
            if c["state"] == state {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "case {case} not {state}: {c:#}\nlog:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn outbox_kinds(&self, secs: u64, want: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let mails: Vec<String> = std::fs::read_dir(self.var().join("outbox"))
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                        .collect()
                })
                .unwrap_or_default();
            if mails
                .iter()
                .any(|m| m.contains(&format!("X-Mpnd-Kind: {want}")))
            {
                return mails;
            }
            assert!(
                Instant::now() < deadline,
                "no {want} mail; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

const R1: &str = "R-20031";
const R1_CONTACT: &str = "k.bergmann@bergmann-it.example";

fn subs_of(w: &World, account: &str) -> Vec<String> {
    w.json(&["subscription", "list", "--account", account, "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subscription_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn partner_center_applies_every_subscription_once_across_a_sigkill() {
    let fake = PcFake::start();
    fake.seed_corpus();
    // Slow PATCHes, so the kill lands while one is in flight.
    fake.state.lock().unwrap().patch_delay = Duration::from_millis(1500);
    let mut w = backend_world(|dir| fake.backend_section(dir, "concurrency = 1\n"));
    w.import_registry();
    w.start();
    let case = w.mail_case(0, R1_CONTACT);
    w.ok(&[
        "queue",
        "approve",
        &case,
        "--id",
        "6284913",
        "--account",
        R1,
    ]);
    assert!(!w.gate(R1), "orders blocked while updating");
    let reasons = w.case(&case)["reasons"].to_string();
    assert!(
        reasons.contains("valid on record"),
        "verification is evidence: {reasons}"
    );

    // Kill as soon as the first PATCH has reached Partner Center.
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.requests("PATCH", "").is_empty() {
        assert!(Instant::now() < deadline, "no PATCH; log:\n{}", w.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    w.kill();
    assert!(!w.gate(R1), "the gate never opens on a partial update");
    w.start();
    w.wait_case(&case, "done", 40);
    assert!(w.gate(R1));
    assert!(
        w.log().contains("interrupted by the last stop run again"),
        "the job killed mid-PATCH was claimed again; log:\n{}",
        w.log()
    );

    let subs = subs_of(&w, R1);
    assert!(
        subs.len() >= 2,
        "the corpus reseller has several subscriptions"
    );
    let applied = fake.applied();
    for sub in &subs {
        let mine: Vec<_> = applied.iter().filter(|(s, _, _)| s == sub).collect();
        assert_eq!(mine.len(), 1, "{sub} changed exactly once: {applied:?}");
        assert_eq!(mine[0].1, "6284913");
        assert_eq!(fake.partner_of(sub), "6284913");
        // Every PATCH of this subscription, before and after the kill, was the
        // same request to Partner Center.
        let ids: Vec<String> = fake
            .requests("PATCH", sub)
            .iter()
            .map(|r| r.headers["ms-requestid"].clone())
            .collect();
        assert!(ids.windows(2).all(|p| p[0] == p[1]), "{ids:?}");
    }
    assert_eq!(applied.len(), subs.len(), "no other subscription touched");
    let mails = w.outbox_kinds(15, "applied");
    assert!(mails.iter().any(|m| m.contains("X-Mpnd-Kind: received")));
    let reseller = w.json(&["reseller", "show", R1, "--json"]);
    assert_eq!(reseller["reseller"]["mpn_id"], "6284913");
    fake.assert_clean();
}

#[test]
fn an_id_microsoft_does_not_confirm_is_rejected_without_any_patch() {
    let fake = PcFake::start();
    fake.seed_corpus();
    fake.invalid(
        "6284913",
        json!("800016"),
        "Partner is not a valid indirect reseller",
    );
    let mut w = backend_world(|dir| fake.backend_section(dir, ""));
    w.import_registry();
    w.start();
    let case = w.mail_case(0, R1_CONTACT);
    let out = w.mpnd(&[
        "queue",
        "approve",
        &case,
        "--id",
        "6284913",
        "--account",
        R1,
    ]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = w.case(&case);
    assert_eq!(c["state"], "rejected");
    assert!(c["reasons"].to_string().contains("800016"), "{c:#}");
    assert!(c["jobs"].as_array().unwrap().is_empty(), "no job queued");
    let mails = w.outbox_kinds(15, "rejected");
    let rejected = mails
        .iter()
        .find(|m| m.contains("X-Mpnd-Kind: rejected"))
        .unwrap();
    let parsed = mail_parser::MessageParser::default()
        .parse(rejected.as_bytes())
        .unwrap();
    assert!(
        parsed
            .body_text(0)
            .unwrap()
            .contains("Partnerschaftsanfrage"),
        "plain German words for the reseller"
    );
    assert!(
        fake.requests("PATCH", "").is_empty(),
        "nothing changed at Microsoft"
    );
    assert!(!w.gate(R1), "orders stay blocked");
    fake.assert_clean();
}

#[test]
fn a_mail_with_a_valid_id_is_verified_and_applied_without_an_operator() {
    let fake = PcFake::start();
    fake.seed_corpus();
    let mut w = backend_world(|dir| fake.backend_section(dir, ""));
    w.import_registry();
    w.start();
    let case = w.mail_case_with(0, R1_CONTACT, "unsere neue MPN-ID lautet 6284913.");
    let c = w.wait_case(&case, "done", 30);
    assert!(c["reasons"].to_string().contains("6284913"), "{c:#}");
    assert_eq!(
        fake.requests("POST", "/v1/partners/validateresellers")
            .len(),
        1,
        "verified once, before the commit"
    );
    assert!(
        !fake.requests("PATCH", "").is_empty(),
        "subscriptions changed"
    );
    assert!(w.gate(R1), "orders open once every job is done");
    fake.assert_clean();
}

#[test]
fn a_mail_with_an_id_microsoft_refuses_is_rejected_by_the_daemon() {
    let fake = PcFake::start();
    fake.seed_corpus();
    fake.invalid(
        "6284913",
        json!("800016"),
        "Partner is not a valid indirect reseller",
    );
    let mut w = backend_world(|dir| fake.backend_section(dir, ""));
    w.import_registry();
    w.start();
    let case = w.mail_case_with(0, R1_CONTACT, "unsere neue MPN-ID lautet 6284913.");
    let c = w.wait_case(&case, "rejected", 30);
    assert!(c["reasons"].to_string().contains("800016"), "{c:#}");
    assert!(
        fake.requests("PATCH", "").is_empty(),
        "nothing changed at Microsoft"
    );
    assert!(!w.gate(R1), "orders stay blocked");
    w.outbox_kinds(15, "rejected");
}

#[test]
fn server_errors_recover_alone_and_a_dead_job_is_revived() {
    let fake = PcFake::start();
    fake.seed_corpus();
    fake.state.lock().unwrap().down = Some((503, "maintenance".into()));
    let mut w = backend_world(|dir| fake.backend_section(dir, "max_attempts = 2\n"));
    w.import_registry();
    w.start();
    let case = w.mail_case(0, R1_CONTACT);
    w.ok(&[
        "queue",
        "approve",
        &case,
        "--id",
        "6284913",
        "--account",
        R1,
    ]);

    // Partner Center stays down: after two attempts each job is dead, shown with
    // its last error, and the reseller stays blocked.
    let deadline = Instant::now() + Duration::from_secs(40);
    let subs = subs_of(&w, R1).len();
    loop {
        let dead = w.json(&["job", "list", "--case", &case, "--state", "dead", "--json"]);
        let dead = dead.as_array().unwrap();
        if dead.len() == subs {
            assert!(dead
                .iter()
                .all(|j| j["last_error"].as_str().unwrap().contains("503")));
            assert!(dead.iter().all(|j| j["attempts"] == 2));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "jobs not dead; log:\n{}",
            w.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!w.gate(R1));

    // Recovery: a few more 500s, then healthy. The operator revives the case once;
    // the rest happens without anybody.
    {
        let mut st = fake.state.lock().unwrap();
        st.down = None;
        for _ in 0..4 {
            st.script
                .push_back(Scripted::new("GET", "/subscriptions/", 500, json!({})));
        }
    }
    let out = w.ok(&["queue", "retry", &case]);
    assert!(out.contains(&format!("{subs} job(s)")), "{out}");
    w.wait_case(&case, "done", 40);
    assert!(w.gate(R1));
    assert_eq!(fake.applied().len(), subs);
    fake.assert_clean();
}

#[test]
fn http_backend_updates_the_platform_and_reports_gate_changes() {
    let platform = PlatformFake::start(vec!["/accounts/R-20031/mpn-id".into()]);
    let url = platform.url.clone();
    let mut w = backend_world(|dir| {
        std::fs::write(dir.join("platform.token"), PLATFORM_TOKEN).unwrap();
        format!(
            "[backend]\nkind = \"http\"\nbase_url = \"{url}\"\ntoken_file = \"{}\"\n\
             account_request = {{ method = \"PUT\", path = \"/accounts/{{{{account}}}}/mpn-id\", \
               body = '{{\"mpn_id\": \"{{{{mpn_id}}}}\", \"old\": \"{{{{old_mpn_id}}}}\"}}' }}\n\
             subscription_request = {{ method = \"PATCH\", path = \"/customers/{{{{customer_id}}}}/subscriptions/{{{{subscription_id}}}}\", \
               body = '{{\"partner_id\": \"{{{{mpn_id}}}}\"}}' }}\n\
             gate_request = {{ method = \"POST\", path = \"/resellers/{{{{account}}}}/gate\", \
               body = '{{\"allowed\": {{{{allowed}}}}, \"state\": \"{{{{state}}}}\", \"event\": {{{{event_id}}}}}}' }}\n",
            dir.join("platform.token").display()
        )
    });
    w.import_registry();
    w.start();
    let case = w.mail_case(0, R1_CONTACT);
    w.ok(&[
        "queue",
        "approve",
        &case,
        "--id",
        "6284913",
        "--account",
        R1,
    ]);
    w.wait_case(&case, "done", 30);
    assert!(w.gate(R1));

    let deadline = Instant::now() + Duration::from_secs(15);
    let gate_calls = loop {
        let calls: Vec<Seen> = platform
            .seen()
            .into_iter()
            .filter(|s| s.path.ends_with("/gate"))
            .collect();
        if calls.iter().any(|c| c.body["allowed"] == true) {
            break calls;
        }
        assert!(
            Instant::now() < deadline,
            "no 'allowed' hook; log:\n{}",
            w.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        gate_calls.first().unwrap().body["allowed"],
        false,
        "blocked first: {gate_calls:?}"
    );
    assert_eq!(gate_calls.first().unwrap().body["state"], "updating");
    assert_eq!(gate_calls.last().unwrap().body["allowed"], true);

    let seen = platform.seen();
    let account: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.path == "/accounts/R-20031/mpn-id")
        .collect();
    assert_eq!(account.len(), 2, "a 500, then the retry");
    assert_eq!(
        account[0].headers["idempotency-key"],
        account[1].headers["idempotency-key"]
    );
    assert_eq!(
        account[1].body,
        json!({"mpn_id": "6284913", "old": "4417206"})
    );
    let subs = subs_of(&w, R1);
    for sub in &subs {
        let calls: Vec<&Seen> = seen
            .iter()
            .filter(|s| s.path.ends_with(&format!("/subscriptions/{sub}")))
            .collect();
        assert_eq!(calls.len(), 1, "{sub}");
        assert_eq!(calls[0].method, "PATCH");
        assert_eq!(calls[0].body, json!({"partner_id": "6284913"}));
        assert_eq!(
            calls[0].headers["idempotency-key"],
            format!("mpnd-{case}-sub-{sub}")
        );
    }
    let problems = platform.state.lock().unwrap().1.clone();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn sighup_applies_new_backend_settings_to_the_next_mail() {
    let fake = PcFake::start();
    fake.seed_corpus();
    let mut w = backend_world(|dir| fake.backend_section(dir, ""));
    w.import_registry();
    w.start();
    let first = w.mail_case_with(0, R1_CONTACT, "unsere neue MPN-ID lautet 6284913.");
    w.wait_case(&first, "done", 30);
    assert_eq!(fake.requests("POST", "validateresellers").len(), 1);

    // Verification switched off by a reload: the next mail is applied unasked.
    let text = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(&w.config, format!("{text}verify = false\n")).unwrap();
    let pid = w.pid();
    assert!(Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !w.log().contains("configuration reloaded") {
        assert!(Instant::now() < deadline, "no reload; log:\n{}", w.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(w.log().contains("changes=backend"), "{}", w.log());
    let second = w.mail_case_with(
        1,
        "m.huber@alpenblick-computer.example",
        "unsere neue MPN-ID lautet 6120777.",
    );
    w.wait_case(&second, "done", 30);
    assert_eq!(
        fake.requests("POST", "validateresellers").len(),
        1,
        "not asked again"
    );
}
