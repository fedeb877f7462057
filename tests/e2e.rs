//! End to end on the embedded default's parts: the real `mpnd` binary, a Maildir
//! on disk, SQLite on disk, `.eml` outbox files, the gate over real HTTP on
//! loopback, and the operator CLI against the running daemon's store.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::smtp::{SinkTls, SmtpSecurity};
use support::world::{corpus, corpus_mail, Setup, World};
use support::{dovecot, wait_until, Dovecot, DovecotOptions, SmtpOptions, SmtpSink};

/// The embedded default's parts: Maildir, SQLite, `.eml` outbox.
fn maildir_world() -> World {
    World::new(|_| Setup::default())
}

fn world_with(mailbox: &str, smtp: &str) -> World {
    let (mailbox, smtp) = (mailbox.to_string(), smtp.to_string());
    World::new(move |_| Setup {
        mailbox,
        smtp,
        ..Setup::default()
    })
}

fn decoded(mail: &str) -> String {
    let m = mail_parser::MessageParser::default()
        .parse(mail.as_bytes())
        .unwrap();
    m.body_text(0).unwrap().to_string()
}

fn header<'a>(mail: &'a str, name: &str) -> Option<&'a str> {
    mail.lines()
        .take_while(|l| !l.is_empty())
        .find(|l| {
            l.len() > name.len()
                && l[..name.len()].eq_ignore_ascii_case(name)
                && l.as_bytes()[name.len()] == b':'
        })
        .map(|l| l[name.len() + 1..].trim())
}

fn case_by_subject<'a>(cases: &'a [Value], needle: &str) -> &'a Value {
    cases
        .iter()
        .find(|c| c["subject"].as_str().unwrap_or("").contains(needle))
        .unwrap_or_else(|| panic!("no case with subject containing {needle:?}: {cases:#?}"))
}

#[test]
fn mail_to_gate_end_to_end() {
    let mut w = maildir_world();
    w.import_registry();
    w.start();

    // Before any mail: imported resellers wait for their new ID.
    let token = w.token();
    let (code, body) = w
        .get("/v1/resellers/R-20031/order-gate", Some(&token))
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let gate: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(gate["allowed"], false);
    assert_eq!(gate["state"], "awaiting_id");
    assert_eq!(
        w.get("/v1/resellers/R-20031/order-gate", None).unwrap().0,
        401
    );
    assert_eq!(
        w.get("/v1/resellers/R-20031/order-gate", Some("wrong"))
            .unwrap()
            .0,
        401
    );
    assert_eq!(
        w.get("/v1/resellers/R-99999/order-gate", Some(&token))
            .unwrap()
            .0,
        404
    );

    for (i, f) in [
        "01_de_outlook_plain_statement.eml",
        "06_en_gmail_reply_quoting_old_id.eml",
        "17_de_thunderbird_question_no_id.eml",
        "22_de_exchange_out_of_office.eml",
        "29_de_exchange_id_is_own_old_id.eml",
    ]
    .iter()
    .enumerate()
    {
        w.deliver(&format!("17000000{i:02}.M1P1.test"), &corpus_mail(f));
    }
    w.wait_inbox_empty(10);
    assert_eq!(
        w.maildir_count("Processed"),
        3,
        "01, 06 applied, 29 rejected"
    );
    assert_eq!(w.maildir_count("Review"), 1, "17 has no ID");
    assert_eq!(w.maildir_count("Ignored"), 1, "22 is an auto-reply");

    let cases = w.json(&["queue", "list", "--state", "all", "--json"]);
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), 5);
    let c01 = case_by_subject(cases, "Neue MPN-ID");
    assert_eq!(c01["state"], "updating");
    assert_eq!(c01["mpn_id"], "6284913");
    let account = c01["account"].as_str().unwrap().to_string();
    let case01 = c01["id"].as_i64().unwrap().to_string();

    // Orders are blocked while updating, over HTTP and the CLI.
    let (_, body) = w
        .get(&format!("/v1/resellers/{account}/order-gate"), Some(&token))
        .unwrap();
    let gate: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(gate["allowed"], false);
    assert_eq!(gate["state"], "updating");
    assert_eq!(w.mpnd(&["gate", &account]).status.code(), Some(4));

    // One account job plus one job per subscription of that reseller.
    let subs = w.json(&["subscription", "list", "--account", &account, "--json"]);
    let jobs = w.json(&["job", "list", "--case", &case01, "--json"]);
    assert_eq!(
        jobs.as_array().unwrap().len(),
        1 + subs.as_array().unwrap().len()
    );

    // "received" for 01 (German) and 06 (English), "rejected" for 29; nothing for
    // the auto-reply and the question.
    let mails = w.wait_outbox_files(3);
    assert_eq!(mails.len(), 3, "{mails:#?}");
    let received_de = mails
        .iter()
        .find(|m| m.contains("6284913"))
        .expect("received mail for 01");
    assert_eq!(header(received_de, "Auto-Submitted"), Some("auto-replied"));
    assert_eq!(header(received_de, "X-Auto-Response-Suppress"), Some("All"));
    assert!(header(received_de, "In-Reply-To").is_some_and(|v| v.contains('@')));
    assert!(header(received_de, "Subject").unwrap().starts_with("Re:"));
    assert!(
        decoded(received_de).contains("Bestellungen"),
        "German text expected"
    );
    let english = mails
        .iter()
        .find(|m| m.contains("7388016"))
        .expect("received mail for 06");
    assert!(
        decoded(english).contains("cannot accept orders"),
        "English text expected"
    );
    let rejected = mails
        .iter()
        .find(|m| header(m, "X-Mpnd-Kind") == Some("rejected"))
        .expect("rejection for 29");
    assert!(decoded(rejected).contains("bisherige MPN-ID"));

    // The operator completes the manual jobs; the gate opens, "applied" goes out.
    w.ok(&["job", "done", "--case", &case01]);
    let (_, body) = w
        .get(&format!("/v1/resellers/{account}/order-gate"), Some(&token))
        .unwrap();
    let gate: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(gate["allowed"], true, "{body}");
    assert_eq!(gate["mpn_id"], "6284913");
    assert_eq!(w.mpnd(&["gate", &account]).status.code(), Some(0));
    let mails = w.wait_outbox_files(4);
    let applied = mails
        .iter()
        .find(|m| header(m, "X-Mpnd-Kind") == Some("applied"))
        .expect("applied mail");
    assert!(decoded(applied).contains(&format!("{} Abonnement", subs.as_array().unwrap().len())));
    let reseller = w.json(&["reseller", "show", &account, "--json"]);
    assert_eq!(reseller["reseller"]["mpn_id"], "6284913");
    assert!(reseller["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["partner_id"] == "6284913"));

    // The review case can be approved by an operator with an ID they name.
    let c17 = cases
        .iter()
        .find(|c| c["state"] == "review")
        .expect("17 is in review");
    let id17 = c17["id"].as_i64().unwrap().to_string();
    let show = w.json(&["queue", "show", &id17, "--json"]);
    assert_eq!(show["state"], "review");
    let out = w.mpnd(&["queue", "approve", &id17, "--id", "4417206"]);
    assert!(!out.status.success(), "an old ID must never be approved");

    // The audit log names the operator.
    let audit = w.ok(&["audit", "--case", &case01]);
    assert!(
        audit.contains("operator:tester") && audit.contains("update.done"),
        "{audit}"
    );

    // Metrics and health answer.
    let (code, metrics) = w.get("/metrics", None).unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("mpnd_mails_total{outcome=\"id\",decision=\"apply\"} 2"),
        "{metrics}"
    );

    w.stop();
}

#[test]
fn redelivered_mail_is_only_moved() {
    let mut w = maildir_world();
    w.import_registry();
    w.start();
    let raw = corpus_mail("02_en_thunderbird_plain_statement.eml");
    w.deliver("1700000001.M1P1.test", &raw);
    w.wait_inbox_empty(10);
    w.deliver("1700000002.M1P1.test", &raw);
    w.wait_inbox_empty(10);
    let cases = w.json(&["queue", "list", "--state", "all", "--json"]);
    assert_eq!(cases.as_array().unwrap().len(), 1, "{cases:#}");
    assert_eq!(w.maildir_count("Processed"), 2);
    w.stop();
}

/// A reseller mail of our own making, unique per `n`.
fn synthetic(n: usize, from: &str, id: u32) -> Vec<u8> {
    format!(
        "Return-Path: <{from}>\r\nFrom: <{from}>\r\nTo: cloud@nordwind-dist.example\r\n\
         Subject: Neue MPN-ID\r\nMessage-ID: <crash-{n}@test.example>\r\n\
         Date: Tue, 18 Nov 2025 11:02:08 +0100\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Guten Tag,\r\n\r\nunsere neue MPN-ID lautet {id}.\r\n\r\nGruss\r\n"
    )
    .into_bytes()
}

#[test]
fn sigkill_mid_batch_loses_and_doubles_nothing() {
    let mut w = maildir_world();
    w.import_registry();
    let contacts = [
        "k.bergmann@bergmann-it.example",
        "m.huber@alpenblick-computer.example",
        "j.meyer@weser-datentechnik.example",
        "info@kessler-partner.example",
    ];
    let n = 300;
    for i in 0..n {
        let raw = synthetic(i, contacts[i % contacts.len()], 7_100_000 + i as u32);
        w.deliver(&format!("17000{i:05}.M{i}P1.test"), &raw);
    }
    // Kill the daemon at several points while it drains the backlog.
    let mut kills = 0;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    while w.maildir_count("") > 0 && kills < 8 {
        w.start();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(20 + rng % 150));
        w.kill();
        kills += 1;
    }
    w.start();
    w.wait_inbox_empty(60);
    // Let the mailer finish what was queued before the last stop.
    let deadline = Instant::now() + Duration::from_secs(30);
    while outbox_count(&w, "pending") > 0 {
        assert!(Instant::now() < deadline, "outbox not drained");
        std::thread::sleep(Duration::from_millis(100));
    }
    w.stop();

    let out = w.mpnd(&["queue", "list", "--state", "all", "--json"]);
    let cases: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), n, "one case per mail after {kills} kills");
    assert_eq!(
        w.maildir_count("Processed") + w.maildir_count("Review") + w.maildir_count("Ignored"),
        n,
        "every mail settled exactly once"
    );
    // No job twice: per case, at most one account job and one job per subscription.
    let jobs = w.json(&["job", "list", "--json"]);
    let mut keys: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["idempotency_key"].as_str().unwrap())
        .collect();
    let total = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), total);
    // Every queued confirmation was written exactly once (Message-IDs unique).
    let mails = w.outbox_files();
    let mut ids: Vec<String> = mails
        .iter()
        .filter_map(|m| header(m, "Message-ID").map(str::to_string))
        .collect();
    let written = ids.len();
    ids.sort();
    ids.dedup();
    let dupes = written - ids.len();
    let sent = outbox_count(&w, "sent");
    assert!(sent > 0, "confirmations were sent");
    assert_eq!(
        sent,
        ids.len(),
        "every sent confirmation is in the outbox dir, none lost"
    );
    eprintln!("{kills} kills, {n} mails, {written} outbox files, {dupes} duplicate sends (a kill between write and commit)");
}

fn outbox_count(w: &World, state: &str) -> usize {
    let status = w.json(&["status", "--json"]);
    status["counts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "outbox" && c["state"] == state)
        .map(|c| c["count"].as_i64().unwrap() as usize)
        .sum()
}

#[test]
fn systemd_notify_ready_status_watchdog_stopping() {
    let mut w = maildir_world();
    let sock_path = w.dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    w.start_with(&[
        ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "600000"),
    ]);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let n = sock
            .recv(&mut buf)
            .expect("no notification from the daemon");
        got.push(String::from_utf8_lossy(&buf[..n]).to_string());
        let watchdogs = got.iter().filter(|m| m.contains("WATCHDOG=1")).count();
        if watchdogs >= 3 && got.iter().any(|m| m.contains("STATUS=maildir")) {
            break;
        }
    }
    assert!(got[0].starts_with("READY=1"), "READY first: {got:?}");
    assert!(
        got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3,
        "{got:?}"
    );
    assert!(got.iter().any(|m| m.contains("STATUS=maildir")), "{got:?}");
    w.stop();
    let mut stopping = false;
    while let Ok(n) = sock.recv(&mut buf) {
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "STOPPING=1 on SIGTERM");
}

/// `mpnd run` with no config at all (the embedded default, as the README's first
/// command runs it): ready, a SIGHUP right after the start neither kills it nor
/// reloads anything, SIGTERM stops it cleanly. (The handlers were installed by
/// tasks after READY, so a signal sent right then met the default action.)
#[test]
fn embedded_default_survives_sighup_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("daemon.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mpnd"))
        .env_remove("MPND_CONFIG")
        .current_dir(dir.path())
        .args(["run"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_until("mpnd started", Duration::from_secs(20), || {
        log().contains("mpnd started")
    });
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    wait_until("the SIGHUP logged", Duration::from_secs(10), || {
        log().contains("no file to reload")
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP ended it: {}",
        log()
    );
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{}", log());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}: {}", log());
    assert!(dir.path().join("var").is_dir(), "state under ./var");
}

#[test]
fn sighup_reloads_good_config_and_keeps_running_on_bad() {
    let mut w = maildir_world();
    w.start();
    let original = std::fs::read_to_string(&w.config).unwrap();
    // A smaller size limit must take effect without a restart; the mailer's pace
    // waits for one, and says so.
    let paced = original.replacen("[smtp]\n", "[smtp]\nmax_per_minute = 30\n", 1);
    assert_ne!(paced, original);
    std::fs::write(&w.config, format!("max_message_size = 65536\n{paced}")).unwrap();
    w.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !w.log().contains("configuration reloaded") {
        assert!(Instant::now() < deadline, "no reload; log:\n{}", w.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(w.log().contains("max_message_size"), "{}", w.log());
    assert!(
        w.log().contains(
            "smtp.retry_initial_secs/max_connections/max_per_minute changed but needs a restart"
        ),
        "{}",
        w.log()
    );
    let mut big =
        b"From: a@b.example\r\nSubject: big\r\nMessage-ID: <big@b.example>\r\n\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 100_000));
    w.deliver("1700000001.M1P1.big", &big);
    w.wait_inbox_empty(10);
    let cases = w.json(&["queue", "list", "--json"]);
    let reasons = cases[0]["reasons"].to_string();
    assert!(
        reasons.contains("over max_message_size (65536)"),
        "{reasons}"
    );

    // A broken file: the daemon says why and keeps running on the previous config.
    std::fs::write(
        &w.config,
        format!("{original}\n[backend]\nkind = \"carrier-pigeon\"\n"),
    )
    .unwrap();
    w.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !w.log().contains("configuration not reloaded") {
        assert!(Instant::now() < deadline, "no error; log:\n{}", w.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(w.log().contains("backend.kind: expected"), "{}", w.log());
    assert_eq!(w.get("/healthz", None).unwrap().0, 200);
    w.stop();
}

#[test]
fn sigterm_mid_batch_finishes_cleanly_and_loses_nothing() {
    let mut w = maildir_world();
    w.import_registry();
    let n = 200;
    for i in 0..n {
        let raw = synthetic(i, "k.bergmann@bergmann-it.example", 7_200_000 + i as u32);
        w.deliver(&format!("17000{i:05}.M{i}P1.term"), &raw);
    }
    w.start();
    std::thread::sleep(Duration::from_millis(150));
    let t = Instant::now();
    w.stop();
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "stop took {:?}",
        t.elapsed()
    );
    let left = w.maildir_count("");
    w.start();
    w.wait_inbox_empty(60);
    w.stop();
    let cases = w.json(&["queue", "list", "--state", "all", "--json"]);
    assert_eq!(
        cases.as_array().unwrap().len(),
        n,
        "{left} were left for the second run"
    );
    assert_eq!(
        w.maildir_count("Processed") + w.maildir_count("Review") + w.maildir_count("Ignored"),
        n
    );
}

#[test]
fn config_check_reports_every_problem_with_line() {
    let w = maildir_world();
    let bad = w.dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[mailbox]\nkind = \"imap\"\nhost = \"imap.example\"\ntls = \"none\"\nusername = \"u\"\npassword = \"s3cret-pw\"\n[smtp]\nkind = \"carrier-pigeon\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mpnd"))
        .args(["--config", bad.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:4: mailbox.tls"), "{err}");
    assert!(err.contains("bad.toml:8: smtp.kind: expected"), "{err}");
    assert!(!err.contains("s3cret-pw"), "secret in output: {err}");
    // The daemon refuses to start on the same problems, with the same words.
    let out = Command::new(env!("CARGO_BIN_EXE_mpnd"))
        .args(["--config", bad.to_str().unwrap(), "run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml:8: smtp.kind: expected"));
    let ok = w.mpnd(&["config", "check"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

fn imap_world(dv: &Dovecot, smtp: &SmtpSink) -> World {
    imap_world_with(dv, smtp, "")
}

/// `extra`: more lines for the `[mailbox]` section.
fn imap_world_with(dv: &Dovecot, smtp: &SmtpSink, extra: &str) -> World {
    world_with(
        &format!(
            "kind = \"imap\"\nhost = \"{}\"\nport = {}\ntls = \"none\"\nusername = \"{}\"\npassword = \"{}\"\n{extra}",
            dv.host(),
            dv.port(),
            dovecot::USER,
            dovecot::PASSWORD
        ),
        &format!(
            "kind = \"smtp\"\nhost = \"{}\"\nport = {}\ntls = \"none\"\nretry_initial_secs = 1",
            smtp.host(),
            smtp.port()
        ),
    )
}

fn case_count(w: &World) -> usize {
    w.json(&["queue", "list", "--state", "all", "--json"])
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn imap_and_smtp_end_to_end_with_outages() {
    let mut dv = Dovecot::start(DovecotOptions::default());
    let mut smtp = SmtpSink::start();
    let mut w = imap_world(&dv, &smtp);
    w.import_registry();
    // A backlog present at start.
    dv.append(&corpus_mail("01_de_outlook_plain_statement.eml"));
    dv.append(&corpus_mail("22_de_exchange_out_of_office.eml"));
    dv.append(&corpus_mail("17_de_thunderbird_question_no_id.eml"));
    w.start();
    let limit = Duration::from_secs(20);
    wait_until("backlog settled", limit, || dv.count("INBOX") == 0);
    assert_eq!(
        (
            dv.count("Processed"),
            dv.count("Review"),
            dv.count("Ignored")
        ),
        (1, 1, 1)
    );
    let sent = smtp.wait_for(1, limit);
    assert_eq!(
        sent[0].rcpt_to,
        vec!["j.meyer@weser-datentechnik.example".to_string()]
    );
    assert!(sent[0].text().contains("Auto-Submitted: auto-replied"));

    // A mail appended while the daemon idles is picked up.
    dv.append(&corpus_mail("02_en_thunderbird_plain_statement.eml"));
    wait_until("idle pickup", limit, || dv.count("Processed") == 2);

    // Dovecot restarted under the daemon: it reconnects, nothing lost or doubled.
    dv.restart();
    dv.append(&corpus_mail("06_en_gmail_reply_quoting_old_id.eml"));
    wait_until("pickup after restart", Duration::from_secs(40), || {
        dv.count("Processed") == 3
    });
    assert_eq!(case_count(&w), 5);

    // The SMTP listener down: confirmations wait and arrive once it is back.
    smtp.wait_for(3, limit);
    smtp.stop();
    dv.append(&corpus_mail("07_de_applemail_signature_old_id.eml"));
    wait_until("settled while smtp down", limit, || {
        dv.count("Processed") == 4
    });
    std::thread::sleep(Duration::from_secs(2));
    smtp.restart();
    let sent = smtp.wait_for(4, Duration::from_secs(40));
    let mut ids: Vec<String> = sent
        .iter()
        .filter_map(|m| header(&m.text(), "Message-ID").map(str::to_string))
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "no confirmation sent twice");
    assert_eq!(n, 4);
    // Nothing is left pending, nothing was lost.
    wait_until("outbox drained", limit, || outbox_count(&w, "pending") == 0);
    assert_eq!(outbox_count(&w, "sent"), 4);
    w.stop();
}

/// The counter `mpnd_push_requests_total{answer="..."}` from `/metrics`.
fn push_count(w: &World, answer: &str) -> u64 {
    let (_, text) = w.http("/metrics", None).expect("metrics");
    let key = format!("mpnd_push_requests_total{{answer=\"{answer}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

#[test]
fn a_dovecot_push_wakes_the_daemon_at_once_and_a_bad_token_wakes_nothing() {
    // A server without IDLE, polled every 45 s at most: a pickup within 20 s can
    // only come from the push.
    let mut dv = Dovecot::start(DovecotOptions {
        idle: false,
        ..Default::default()
    });
    let smtp = SmtpSink::start();
    let mut w = imap_world_with(&dv, &smtp, "idle_timeout_secs = 600");
    w.import_registry();
    // The push has a token of its own (gate.push_token_file), written before the
    // daemon starts so Dovecot's push URL can carry it (as Basic auth's password:
    // the `ox` driver sends only that).
    let token = "push-test-token";
    let push_file = w.dir.path().join("push.token");
    std::fs::write(&push_file, format!("{token}\n")).unwrap();
    let text = std::fs::read_to_string(&w.config).unwrap().replace(
        "[gate]\n",
        &format!("[gate]\npush_token_file = \"{}\"\n", push_file.display()),
    );
    std::fs::write(&w.config, text).unwrap();
    dv.enable_push(&format!(
        "http://dovecot:{token}@127.0.0.1:{}/v1/mailbox/push",
        w.port
    ));
    w.start();
    wait_until("first pass done", Duration::from_secs(20), || {
        w.log().contains("mailbox connected") && w.http("/healthz", None).is_some()
    });
    std::thread::sleep(Duration::from_millis(500));

    dv.deliver_lmtp(&corpus_mail("02_en_thunderbird_plain_statement.eml"));
    wait_until("pickup woken by the push", Duration::from_secs(20), || {
        dv.count("Processed") == 1
    });
    assert_eq!(push_count(&w, "woke"), 1);
    let sent = smtp.wait_for(1, Duration::from_secs(20));
    assert_eq!(sent.len(), 1);
    assert!(
        !dv.log().contains("push-notification-ox: Error"),
        "{}",
        dv.log()
    );

    // A push for another folder, or without the token, wakes nothing.
    let other = r#"{"event":"messageNew","folder":"Archive","imap-uid":9}"#;
    let bearer = format!("Bearer {token}");
    let (status, _) = w
        .request("PUT", "/v1/mailbox/push", Some(&bearer), other)
        .unwrap();
    assert_eq!(status, 202);
    // The gate's token is not the push's, nor the push's the gate's.
    let gate_bearer = format!("Bearer {}", w.token());
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic ZG92ZWNvdDp3cm9uZw=="),
        Some(gate_bearer.as_str()),
    ] {
        let (status, body) = w.request("POST", "/v1/mailbox/push", auth, "").unwrap();
        assert_eq!(status, 401, "{auth:?}");
        assert!(!body.contains(token));
    }
    let (status, _) = w
        .get("/v1/resellers/R-20031/order-gate", Some(token))
        .unwrap();
    assert_eq!(status, 401, "the push token opens no gate");
    assert_eq!(
        (
            push_count(&w, "woke"),
            push_count(&w, "ignored"),
            push_count(&w, "unauthorized")
        ),
        (1, 1, 4)
    );
    // A body past 64 KiB is not read, and wakes nothing.
    let (status, _) = w
        .request(
            "POST",
            "/v1/mailbox/push",
            Some(&bearer),
            &"x".repeat(100_000),
        )
        .unwrap();
    assert_eq!(status, 413);
    // A bare POST with the token (a script, curl) wakes it too.
    let (status, _) = w
        .request("POST", "/v1/mailbox/push", Some(&bearer), "")
        .unwrap();
    assert_eq!(status, 204);
    assert_eq!(push_count(&w, "woke"), 2);
    assert!(!w.log().contains(token), "the token is never logged");
    w.stop();
}

#[test]
fn imap_uidvalidity_change_skips_nothing_and_doubles_nothing() {
    let mut dv = Dovecot::start(DovecotOptions::default());
    let smtp = SmtpSink::start();
    let mut w = imap_world(&dv, &smtp);
    w.import_registry();
    w.start();
    dv.append(&corpus_mail("01_de_outlook_plain_statement.eml"));
    let limit = Duration::from_secs(20);
    wait_until("first mail", limit, || dv.count("Processed") == 1);
    w.stop();
    // The inbox is recreated (new UIDVALIDITY), with an old mail back in it and a
    // new one whose UID is lower than the stored cursor.
    dv.recreate_inbox();
    dv.append(&corpus_mail("01_de_outlook_plain_statement.eml"));
    dv.append(&corpus_mail("02_en_thunderbird_plain_statement.eml"));
    w.start();
    wait_until("rescan", limit, || dv.count("INBOX") == 0);
    assert_eq!(dv.count("Processed"), 3);
    assert_eq!(
        case_count(&w),
        2,
        "the old mail is recognised, the new one processed"
    );
    w.stop();
}

/// The daemon triages the next IMAP batch while the one before it commits. A
/// mail whose ID an earlier apply made taken (or its sender's current one) must
/// still be judged against the registry after that apply, whether the apply was in
/// the batch before (committed after the triage was made) or earlier in its own.
#[test]
fn a_batch_triaged_ahead_is_judged_against_the_applies_before_it() {
    let dv = Dovecot::start(DovecotOptions::default());
    let smtp = SmtpSink::start();
    let mut w = imap_world_with(&dv, &smtp, "batch_size = 2");
    w.import_registry();
    let mails = [
        // Batch 1.
        ("k.bergmann@bergmann-it.example", 7_400_001),
        ("m.huber@alpenblick-computer.example", 7_400_002),
        // Batch 2, triaged before batch 1 is committed.
        ("info@kessler-partner.example", 7_400_001),
        ("k.bergmann@bergmann-it.example", 7_400_001),
        // Batch 3: the second depends on the first of its own batch.
        ("k.bergmann@bergmann-it.example", 7_400_003),
        ("j.meyer@weser-datentechnik.example", 7_400_003),
    ];
    for (n, (from, id)) in mails.iter().enumerate() {
        dv.append(&synthetic(900 + n, from, *id));
    }
    w.start_with(&[("MPND_LOG", "mpnd=debug")]);
    wait_until("backlog settled", Duration::from_secs(20), || {
        dv.count("INBOX") == 0
    });
    let cases = w.json(&["queue", "list", "--state", "all", "--json"]);
    let decisions: Vec<(String, String, String)> = cases
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["account"].as_str().unwrap_or("-").to_string(),
                c["mpn_id"].as_str().unwrap_or("-").to_string(),
                c["decision"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    let want = [
        ("R-20031", "7400001", "apply"),
        ("R-20047", "7400002", "apply"),
        ("R-20063", "7400001", "reject"),
        // The ID being applied, sent again: joins that update.
        ("R-20031", "7400001", "apply"),
        ("R-20031", "7400003", "apply"),
        ("R-20058", "7400003", "reject"),
    ];
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(a, i, d)| (a.to_string(), i.to_string(), d.to_string()))
        .collect();
    assert_eq!(decisions, want, "{cases:#}");
    assert!(
        w.log().contains("ahead=true"),
        "a batch was triaged ahead of its turn"
    );
    w.stop();
}

/// A folder's mails leave the inbox a batch's worth at a time (one `UID MOVE` each,
/// which the server pays for) or when the pass over the inbox ends. A kill while a
/// mail is held so loses nothing and repeats nothing.
#[test]
fn a_mail_held_for_its_folder_survives_a_kill_and_leaves_once() {
    let dv = Dovecot::start(DovecotOptions::default());
    let smtp = SmtpSink::start();
    let mut w = imap_world_with(&dv, &smtp, "batch_size = 3");
    w.import_registry();
    // The first mail goes to Review (nobody registered sent it), the rest apply.
    dv.append(&synthetic(1000, "someone@unregistered.example", 7_500_000));
    let contacts = [
        "k.bergmann@bergmann-it.example",
        "m.huber@alpenblick-computer.example",
        "j.meyer@weser-datentechnik.example",
        "info@kessler-partner.example",
    ];
    let n = 60;
    for i in 0..n {
        dv.append(&synthetic(1001 + i, contacts[i % 4], 7_500_001 + i as u32));
    }
    w.start();
    wait_until("the first applies moved", Duration::from_secs(20), || {
        dv.count("Processed") > 0
    });
    w.kill();
    let held = |folder: &str| {
        dv.list(folder)
            .iter()
            .filter(|m| String::from_utf8_lossy(m).contains("<crash-1000@"))
            .count()
    };
    assert_eq!(
        held("INBOX"),
        1,
        "the Review mail waits for more of its kind"
    );
    assert!(dv.count("INBOX") > 1, "killed before the pass ended");

    w.start();
    wait_until(
        "inbox empty after the restart",
        Duration::from_secs(30),
        || dv.count("INBOX") == 0,
    );
    assert_eq!(held("Review"), 1);
    assert_eq!(dv.count("Review"), 1);
    assert_eq!(dv.count("Processed"), n);
    assert_eq!(w.count("SELECT COUNT(*) FROM cases"), n as i64 + 1);
    assert_eq!(
        w.count("SELECT COUNT(*) FROM cases WHERE decision = 'review'"),
        1
    );
    w.stop();
}

#[test]
fn reseller_import_is_all_or_nothing_and_names_bad_lines() {
    let w = maildir_world();
    w.import_registry();
    let before = w.json(&["reseller", "list", "--json"]);
    let bad = w.dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "account,company,contact_emails,domains,old_mpn_id,locale\n\
         R-20031,Bergmann IT-Systemhaus GmbH (renamed),k.bergmann@bergmann-it.example,bergmann-it.example,4417206,de\n\
         R-30001,New GmbH,not-an-address,new.example,12ab,fr\n",
    )
    .unwrap();
    let out = w.mpnd(&["reseller", "import", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3: contact_emails"), "{err}");
    assert!(err.contains("line 3: old_mpn_id"), "{err}");
    assert!(err.contains("line 3: locale"), "{err}");
    assert_eq!(
        w.json(&["reseller", "list", "--json"]),
        before,
        "nothing changed"
    );

    // A good re-import updates in place and says so.
    let good = w.dir.path().join("good.csv");
    std::fs::write(
        &good,
        "account,company,contact_emails,domains,old_mpn_id,locale\n\
         R-20031,Bergmann IT (renamed),k.bergmann@bergmann-it.example,bergmann-it.example,4417206,en\n",
    )
    .unwrap();
    let out = w.ok(&["reseller", "import", good.to_str().unwrap()]);
    assert!(out.contains("1 updated"), "{out}");
    let r = w.json(&["reseller", "show", "R-20031", "--json"]);
    assert_eq!(r["reseller"]["company"], "Bergmann IT (renamed)");
    assert_eq!(r["reseller"]["locale"], "en");
    assert_eq!(r["reseller"]["state"], "awaiting_id", "state kept");
}

#[test]
fn operator_reject_with_notice_approve_and_retriage() {
    let mut w = maildir_world();
    w.import_registry();
    w.start();
    // 17 asks a question: review. The operator rejects it and tells the reseller.
    w.deliver(
        "1700000001.M1P1.t",
        &corpus_mail("17_de_thunderbird_question_no_id.eml"),
    );
    // 26 gives an ID from an unregistered domain: review, retried after the
    // registry learns the domain.
    w.deliver(
        "1700000002.M1P1.t",
        &corpus_mail("26_de_gmail_unregistered_new_domain.eml"),
    );
    w.wait_inbox_empty(10);
    let cases = w.json(&["queue", "list", "--json"]);
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), 2);
    let (c17, c26) = if cases[0]["mpn_id"].is_null() {
        (&cases[0], &cases[1])
    } else {
        (&cases[1], &cases[0])
    };
    let id17 = c17["id"].as_i64().unwrap().to_string();
    let account17 = c17["account"]
        .as_str()
        .expect("17 is from a registered contact")
        .to_string();
    w.ok(&[
        "queue",
        "reject",
        &id17,
        "--reason",
        "Bitte senden Sie uns die neue ID als Text.",
        "--notify",
    ]);
    let mails = w.wait_outbox_files(1);
    assert!(decoded(&mails[0]).contains("Bitte senden Sie uns die neue ID als Text."));
    assert!(
        w.mpnd(&["queue", "approve", &id17, "--id", "7000001"])
            .status
            .success(),
        "a rejected case may still be approved"
    );
    let gate = w.json(&["reseller", "show", &account17, "--json"]);
    assert_eq!(gate["reseller"]["state"], "updating");

    // Teach the registry 26's domain, then `queue retry` triages it again.
    let id26 = c26["id"].as_i64().unwrap().to_string();
    let show = w.json(&["queue", "show", &id26, "--json"]);
    let sender = show["sender"].as_str().unwrap().to_string();
    let domain = sender.split('@').nth(1).unwrap().to_string();
    let csv = std::fs::read_to_string(corpus().join("reseller/resellers.csv")).unwrap();
    let target = csv
        .lines()
        .find(|l| l.starts_with("R-20250"))
        .expect("an uninvolved reseller");
    let mut fields: Vec<String> = target.split(',').map(str::to_string).collect();
    fields[3] = if fields[3].is_empty() {
        domain.clone()
    } else {
        format!("{};{domain}", fields[3])
    };
    let updated = csv.replace(target, &fields.join(","));
    let path = w.dir.path().join("resellers.csv");
    std::fs::write(&path, updated).unwrap();
    w.ok(&["reseller", "import", path.to_str().unwrap()]);
    let out = w.ok(&["queue", "retry", &id26]);
    assert!(out.contains("apply"), "{out}");
    let show = w.json(&["queue", "show", &id26, "--json"]);
    assert_eq!(show["state"], "updating");
    assert_eq!(show["account"], "R-20250");
    w.stop();
}

#[test]
fn confirmations_per_recipient_are_capped_per_day() {
    let mut w = maildir_world();
    w.import_registry();
    w.start();
    for i in 0..13 {
        let raw = synthetic(i, "info@kessler-partner.example", 7_300_000 + i as u32);
        w.deliver(&format!("17000{i:05}.M{i}P1.cap"), &raw);
    }
    w.wait_inbox_empty(20);
    let deadline = Instant::now() + Duration::from_secs(15);
    while outbox_count(&w, "pending") > 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(outbox_count(&w, "sent"), 10, "the default cap is 10 a day");
    assert_eq!(outbox_count(&w, "suppressed"), 3);
    w.stop();
}

/// A running daemon with `limits` in its [smtp] section, after `n` applies from one
/// reseller's contact (each one confirmation) have left the inbox.
fn kessler_applies(smtp: &SmtpSink, limits: &str, n: usize, tag: &str) -> World {
    let mut w = world_with(
        "",
        &format!(
            "kind = \"smtp\"\nhost = \"{}\"\nport = {}\ntls = \"none\"\n\
             max_per_recipient_per_day = 100\n{limits}",
            smtp.host(),
            smtp.port()
        ),
    );
    w.import_registry();
    w.start();
    for i in 0..n {
        let raw = synthetic(i, "info@kessler-partner.example", 7_400_000 + i as u32);
        w.deliver(&format!("17100{i:05}.M{i}P1.{tag}"), &raw);
    }
    w.wait_inbox_empty(20);
    w
}

#[test]
fn smtp_uses_no_more_connections_than_configured() {
    let smtp = SmtpSink::start();
    let mut w = kessler_applies(&smtp, "max_connections = 2", 16, "conn");
    smtp.wait_for(16, Duration::from_secs(20));
    assert!(
        smtp.connections() <= 2,
        "{} connections for max_connections = 2",
        smtp.connections()
    );
    w.stop();
}

#[test]
fn smtp_sends_are_spaced_by_max_per_minute() {
    let smtp = SmtpSink::start();
    // One every 100 ms.
    let mut w = kessler_applies(&smtp, "max_per_minute = 600", 6, "pace");
    let got = smtp.wait_for(6, Duration::from_secs(20));
    let first = got.iter().map(|m| m.at).min().unwrap();
    let last = got.iter().map(|m| m.at).max().unwrap();
    // Five gaps of 100 ms between six starts; the first send's own time may
    // shorten the span between acceptances a little.
    assert!(
        last - first >= Duration::from_millis(400),
        "6 confirmations within {:?} at 600 a minute",
        last - first
    );
    w.stop();
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let unit =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/mpnd.service"))
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Point ExecStart at the binary just built, so verify can check it exists.
    let unit = unit.replace("/usr/local/bin/mpnd", env!("CARGO_BIN_EXE_mpnd"));
    let path = dir.path().join("mpnd.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze is installed by scripts/test-deps.sh");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.lines().any(|l| l.contains("mpnd.service")),
        "systemd-analyze verify complains: {err}"
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for mpnd.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    assert!(level <= 2.0, "exposure {level}: {text}");
}

#[test]
fn man_page_and_completions_come_from_the_cli() {
    let w = maildir_world();
    let man = w.ok(&["man"]);
    assert!(man.contains(".TH mpnd 1"), "{man}");
    assert!(man.contains("queue"), "subcommands listed");
    let bash = w.ok(&["completions", "bash"]);
    assert!(
        bash.contains("_mpnd") && bash.contains("approve"),
        "bash completion"
    );
}

#[test]
fn an_older_mail_arriving_late_does_not_replace_a_newer_id() {
    let mut w = maildir_world();
    w.import_registry();
    w.start();
    // 14 corrects the typo in 13; here the correction arrives first.
    w.deliver(
        "1700000001.M1P1.t",
        &corpus_mail("14_de_outlook_correction.eml"),
    );
    w.wait_inbox_empty(10);
    w.deliver(
        "1700000002.M1P1.t",
        &corpus_mail("13_de_outlook_id_with_typo.eml"),
    );
    w.wait_inbox_empty(10);
    let cases = w.json(&["queue", "list", "--state", "all", "--json"]);
    let cases = cases.as_array().unwrap();
    let correction = cases.iter().find(|c| c["mpn_id"] == "6514820").unwrap();
    assert_eq!(correction["state"], "updating", "{cases:#?}");
    let typo = cases.iter().find(|c| c["mpn_id"] == "6514802").unwrap();
    assert_eq!(typo["state"], "review", "{cases:#?}");
    assert!(
        typo["reasons"].to_string().contains("older mail"),
        "{typo:#}"
    );
    w.stop();
}

#[test]
fn imap_over_tls_with_xoauth2_through_the_daemon() {
    let dv = Dovecot::start(DovecotOptions {
        tls: true,
        xoauth2: true,
        ..DovecotOptions::default()
    });
    let smtp = SmtpSink::start();
    let oauth = dv.oauth().expect("xoauth2 server");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client.secret");
    std::fs::write(&secret, format!("{}\n", support::oauth::CLIENT_SECRET)).unwrap();
    let mut w = world_with(
        &format!(
            "kind = \"imap\"\nhost = \"{}\"\nport = {}\ntls = \"implicit\"\nca_file = \"{}\"\n\
             username = \"{}\"\nauth = \"xoauth2\"\n\
             [mailbox.oauth2]\ntoken_url = \"{}\"\nclient_id = \"{}\"\nclient_secret_file = \"{}\"",
            dv.host(),
            dv.port(),
            dv.ca_file().unwrap().display(),
            dovecot::USER,
            oauth.token_url(),
            support::oauth::CLIENT_ID,
            secret.display()
        ),
        &format!(
            "kind = \"smtp\"\nhost = \"{}\"\nport = {}\ntls = \"none\"",
            smtp.host(),
            smtp.port()
        ),
    );
    w.import_registry();
    w.start_with(&[("MPND_LOG", "debug")]);
    dv.append(&corpus_mail("01_de_outlook_plain_statement.eml"));
    wait_until("mail settled over TLS", Duration::from_secs(20), || {
        dv.count("Processed") == 1
    });
    assert!(oauth.token_requests() >= 1);
    smtp.wait_for(1, Duration::from_secs(20));
    w.stop();
    let log = w.log();
    assert!(
        !log.contains(support::oauth::CLIENT_SECRET),
        "client secret in the log"
    );
}

#[test]
fn smtp_refusals_are_retried_or_parked_with_the_servers_answer() {
    let dv = Dovecot::start(DovecotOptions::default());
    let smtp = SmtpSink::start();
    let mut w = imap_world(&dv, &smtp);
    w.import_registry();
    w.start();
    // A temporary refusal is retried; a permanent one is parked for the operator.
    smtp.fail_next(1, "451 4.3.0 try again later");
    dv.append(&corpus_mail("01_de_outlook_plain_statement.eml"));
    let sent = smtp.wait_for(1, Duration::from_secs(30));
    assert_eq!(sent.len(), 1);
    smtp.fail_next(1, "550 5.1.1 mailbox unknown");
    dv.append(&corpus_mail("02_en_thunderbird_plain_statement.eml"));
    wait_until("parked", Duration::from_secs(30), || {
        outbox_count(&w, "failed") == 1
    });
    let cases = w.json(&["queue", "list", "--state", "all", "--json"]);
    let c02 = cases
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["mpn_id"] == "7039452")
        .unwrap();
    let show = w.ok(&["queue", "show", &c02["id"].to_string()]);
    assert!(show.contains("[failed]") && show.contains("550"), "{show}");
    // The operator revives it once the address is fixed.
    w.ok(&["queue", "retry", &c02["id"].to_string()]);
    smtp.wait_for(2, Duration::from_secs(30));
    w.stop();
}

// SMTP with TLS and AUTH, against the test listener: a Maildir world whose
// confirmations go to `smtp` at `localhost` (the name on its certificate).

const CONFIRM_MAIL: &str = "01_de_outlook_plain_statement.eml";
const CONFIRM_TO: &str = "j.meyer@weser-datentechnik.example";

/// The `[smtp]` keys for `smtp` with `tls`, trusting its CA when `trust`.
fn smtp_tls_section(smtp: &SmtpSink, tls: &str, trust: bool) -> String {
    let ca = match smtp.ca_file() {
        Some(ca) if trust => format!("ca_file = \"{}\"\n", ca.display()),
        _ => String::new(),
    };
    format!(
        "kind = \"smtp\"\nhost = \"{}\"\nport = {}\ntls = \"{tls}\"\n{ca}retry_initial_secs = 1",
        smtp.tls_host(),
        smtp.port()
    )
}

fn tls_sink(tls: SinkTls, auth: Option<(&str, &str)>, xoauth2: Option<String>) -> SmtpSink {
    SmtpSink::start_secure(
        SmtpOptions {
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
        },
        SmtpSecurity {
            tls,
            xoauth2_introspection: xoauth2,
        },
    )
}

/// The outbox rows as (state, attempts, last_error).
fn outbox_rows(w: &World) -> Vec<Vec<String>> {
    w.rows("SELECT state, attempts, last_error FROM outbox ORDER BY id")
}

#[test]
fn smtp_confirmations_go_over_implicit_tls_and_starttls_to_a_trusted_certificate_only() {
    for (mode, tls) in [
        (SinkTls::Implicit, "implicit"),
        (SinkTls::Starttls, "starttls"),
    ] {
        let smtp = tls_sink(mode, None, None);
        // Without the test CA the certificate is not trusted: nothing is sent.
        let mut w = world_with("", &smtp_tls_section(&smtp, tls, false));
        w.import_registry();
        w.start();
        w.deliver("01.eml", &corpus_mail(CONFIRM_MAIL));
        // The attempt is counted when claimed, its error recorded when it failed.
        w.wait("a failed TLS attempt", Duration::from_secs(20), || {
            w.count("SELECT COUNT(*) FROM outbox WHERE attempts > 0 AND last_error != ''") == 1
        });
        let rows = outbox_rows(&w);
        assert_eq!(rows[0][0], "pending", "{tls}: {rows:?}");
        assert!(rows[0][2].contains("certificate"), "{tls}: {rows:?}");
        assert!(
            smtp.messages().is_empty(),
            "{tls}: sent to an untrusted server"
        );
        w.stop();

        let mut w = world_with("", &smtp_tls_section(&smtp, tls, true));
        w.import_registry();
        w.start();
        w.deliver("01.eml", &corpus_mail(CONFIRM_MAIL));
        let sent = smtp.wait_for(1, Duration::from_secs(30));
        assert!(sent[0].tls, "{tls}: the session was not encrypted");
        assert_eq!(sent[0].rcpt_to, vec![CONFIRM_TO.to_string()], "{tls}");
        w.wait_outbox_drained(Duration::from_secs(10));
        w.stop();
    }
}

#[test]
fn smtp_password_auth_over_starttls_and_a_wrong_password_is_parked_and_never_logged() {
    const USER: &str = "mailer@nordwind-dist.example";
    const GOOD: &str = "good-smtp-pw-4711";
    const BAD: &str = "wrong-smtp-pw-0815";
    let smtp = tls_sink(SinkTls::Starttls, Some((USER, GOOD)), None);
    let mut w = World::new(|dir| {
        std::fs::write(dir.join("smtp.password"), format!("{BAD}\n")).unwrap();
        Setup {
            smtp: format!(
                "{}\nauth = \"password\"\nusername = \"{USER}\"\npassword_file = \"{}\"",
                smtp_tls_section(&smtp, "starttls", true),
                dir.join("smtp.password").display()
            ),
            ..Setup::default()
        }
    });
    w.import_registry();
    w.start_with(&[("MPND_LOG", "debug")]);
    w.deliver("01.eml", &corpus_mail(CONFIRM_MAIL));
    // 535 is permanent: parked for the operator with the server's answer.
    w.wait(
        "the refused confirmation parked",
        Duration::from_secs(20),
        || outbox_count(&w, "failed") == 1,
    );
    let rows = outbox_rows(&w);
    assert!(rows[0][2].contains("535"), "{rows:?}");
    assert!(smtp.messages().is_empty());
    w.stop();

    // The operator fixes the password and retries the case.
    std::fs::write(w.dir.path().join("smtp.password"), format!("{GOOD}\n")).unwrap();
    w.start_with(&[("MPND_LOG", "debug")]);
    let cases = w.json(&["queue", "list", "--state", "all", "--json"]);
    let id = cases[0]["id"].to_string();
    w.ok(&["queue", "retry", &id]);
    let sent = smtp.wait_for(1, Duration::from_secs(30));
    assert_eq!(sent[0].auth_user.as_deref(), Some(USER));
    assert!(sent[0].tls);
    w.stop();
    let log = w.log();
    assert!(log.contains("535"), "the refusal is logged");
    for secret in [GOOD, BAD] {
        assert!(!log.contains(secret), "a password in the log");
    }
}

#[test]
fn smtp_xoauth2_delivers_and_a_revoked_token_is_replaced_on_retry() {
    const USER: &str = "mailer@nordwind-dist.example";
    let oauth = support::OAuthServer::start(USER);
    let mut smtp = tls_sink(SinkTls::Starttls, None, Some(oauth.introspection_url()));
    let mut w = World::new(|dir| {
        let secret = dir.join("client.secret");
        std::fs::write(&secret, format!("{}\n", support::oauth::CLIENT_SECRET)).unwrap();
        Setup {
            smtp: format!(
                "{}\nauth = \"xoauth2\"\nusername = \"{USER}\"\n\
                 oauth2 = {{ token_url = \"{}\", client_id = \"{}\", client_secret_file = \"{}\" }}",
                smtp_tls_section(&smtp, "starttls", true),
                oauth.token_url(),
                support::oauth::CLIENT_ID,
                secret.display()
            ),
            ..Setup::default()
        }
    });
    w.import_registry();
    w.start_with(&[("MPND_LOG", "debug")]);
    w.deliver("01.eml", &corpus_mail(CONFIRM_MAIL));
    let sent = smtp.wait_for(1, Duration::from_secs(30));
    assert_eq!(sent[0].auth_user.as_deref(), Some(USER));
    assert!(sent[0].tls);
    assert_eq!(oauth.token_requests(), 1);

    // The token is revoked and the server drops the session: the next login gets
    // 535; the daemon fetches a new token and delivers on retry.
    oauth.revoke_all();
    smtp.restart();
    w.deliver(
        "02.eml",
        &corpus_mail("02_en_thunderbird_plain_statement.eml"),
    );
    w.wait("delivery with a new token", Duration::from_secs(30), || {
        smtp.messages().len() == 2
    });
    let sent = smtp.messages();
    assert_eq!(sent[1].auth_user.as_deref(), Some(USER));
    assert_eq!(oauth.token_requests(), 2);
    let rows = outbox_rows(&w);
    assert!(
        rows[1][1].parse::<i64>().unwrap() >= 2,
        "not retried: {rows:?}"
    );

    // A refused recipient is no token problem: parked at once, no new token.
    smtp.fail_next(1, "550 5.1.1 mailbox unknown");
    w.deliver(
        "06.eml",
        &corpus_mail("06_en_gmail_reply_quoting_old_id.eml"),
    );
    w.wait(
        "the refused recipient parked",
        Duration::from_secs(20),
        || outbox_count(&w, "failed") == 1,
    );
    let rows = outbox_rows(&w);
    assert!(rows[2][2].contains("550"), "{rows:?}");
    assert_eq!(oauth.token_requests(), 2);
    w.stop();
    let log = w.log();
    assert!(
        log.contains("refused the access token"),
        "the refusal is logged"
    );
    assert!(
        !log.contains(support::oauth::CLIENT_SECRET),
        "client secret in the log"
    );
    assert!(!log.contains("tok-"), "an access token in the log");
}

#[test]
fn config_check_refuses_plaintext_smtp_to_a_remote_host() {
    let w = maildir_world();
    let bad = w.dir.path().join("plain.toml");
    std::fs::write(
        &bad,
        "[smtp]\nkind = \"smtp\"\nhost = \"smtp.example\"\ntls = \"none\"\nfrom = \"a@b.example\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mpnd"))
        .args(["--config", bad.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("plain.toml:4: smtp.tls: tls = \"none\" is allowed only to a loopback host"),
        "{err}"
    );
}

/// Every labelled mail we have (the corpus and each fixture round), replayed in
/// order through the running daemon against the registry it was written for: the
/// store must agree with the stateless `mpnd extract` on every mail except where
/// the mails before it rightly change the answer, keep one update per reseller,
/// confirm only to the reseller's registered addresses, finish every update the
/// operator completes, and take a second delivery of the whole set as duplicates.
#[test]
fn every_labelled_mail_replayed_in_order_keeps_the_store_consistent() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut own: Vec<std::path::PathBuf> = Vec::new();
    let mut shared = vec![corpus().join("reseller")];
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    for d in dirs {
        if d.join("resellers.csv").exists() {
            own.push(d);
        } else {
            shared.push(d);
        }
    }
    assert!(shared.len() >= 9 && own.len() >= 7, "{shared:?} {own:?}");
    let mut total = 0;
    total += replay(&corpus().join("reseller"), &shared);
    for d in &own {
        total += replay(d, std::slice::from_ref(d));
    }
    assert!(total > 700, "{total} mails replayed");
}

/// One world: the registry of `registry`, every `.eml` of `folders` delivered in
/// file-name order. Returns the number of mails.
fn replay(registry: &Path, folders: &[std::path::PathBuf]) -> usize {
    let mut w = maildir_world();
    w.import_registry_from(registry);
    let mut files = Vec::new();
    for f in folders {
        let mut v: Vec<_> = std::fs::read_dir(f)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        v.sort();
        files.extend(v);
    }
    // What each mail gets on its own, against the same store's registry.
    let mut args = vec!["extract", "--json"];
    args.extend(files.iter().map(|p| p.to_str().unwrap()));
    let alone: Vec<Value> = w
        .ok(&args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(alone.len(), files.len());

    w.start();
    let name = |i: usize| format!("1700000000.M{i:04}P1.replay");
    for (i, f) in files.iter().enumerate() {
        w.deliver(&name(i), &std::fs::read(f).unwrap());
    }
    w.wait_inbox_empty(60);

    // Each delivered position has its case (a Message-ID seen before only moves).
    let rows = w.rows(
        "SELECT m.position, c.id, c.decision, c.state, c.account, COALESCE(c.mpn_id, ''), c.reasons
         FROM messages m JOIN cases c ON c.message_id = m.id",
    );
    let by_pos: std::collections::HashMap<&str, &Vec<String>> =
        rows.iter().map(|r| (r[0].as_str(), r)).collect();
    let mut keys = std::collections::HashSet::new();
    let mut differ = Vec::new();
    let mut held = 0;
    for (i, (f, a)) in files.iter().zip(&alone).enumerate() {
        let key = a["message_id"].as_str().map(str::to_string);
        let Some(row) = by_pos.get(name(i).as_str()) else {
            assert!(
                key.as_ref().is_some_and(|k| keys.contains(k)),
                "{} has no case and is no duplicate",
                f.display()
            );
            continue;
        };
        if let Some(k) = key {
            keys.insert(k);
        }
        let want = a["decision"].as_str().unwrap();
        let (decision, state, reasons) = (&row[2], &row[3], &row[6]);
        let expected_state = match want {
            "apply" => "updating",
            "review" => "review",
            "reject" => "rejected",
            _ => "ignored",
        };
        // What the mails before may change: a newer case supersedes an update,
        // an update in flight or done turns an older mail or a repeat into a review.
        let stateful = want == "apply"
            && (state == "superseded"
                || (decision == "review"
                    && (reasons.contains("an older mail does not replace")
                        || reasons.contains("already the current ID"))));
        held += usize::from(stateful && decision == "review");
        if state != expected_state && !stateful {
            differ.push(format!(
                "{}: alone {want}, replayed {decision}/{state} {reasons}",
                f.display()
            ));
        }
        if a["mpn_id"].as_str().unwrap_or("") != row[5] {
            differ.push(format!(
                "{}: alone ID {}, replayed {}",
                f.display(),
                a["mpn_id"],
                row[5]
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    println!(
        "{}: {} mails, {} cases, {held} applies held by an earlier one, states {:?}",
        registry.display(),
        files.len(),
        rows.len(),
        w.rows("SELECT state, COUNT(*) FROM cases GROUP BY state")
    );
    let routed =
        w.maildir_count("Processed") + w.maildir_count("Review") + w.maildir_count("Ignored");
    assert_eq!(
        routed,
        files.len(),
        "every mail left the inbox for a folder"
    );

    // One update in flight per reseller, the one its pending ID names.
    let updating = w.rows(
        "SELECT account, COUNT(*), MAX(mpn_id) FROM cases WHERE state = 'updating' GROUP BY account",
    );
    for r in &updating {
        assert_eq!(r[1], "1", "{} has several updates in flight", r[0]);
        let pending = w.rows(&format!(
            "SELECT state, pending_mpn_id FROM resellers WHERE account = '{}'",
            r[0]
        ));
        assert_eq!(pending[0], vec!["updating".to_string(), r[2].clone()]);
    }

    // A "received" for every update started, a "rejected" for every reject,
    // nothing else, and only ever to the reseller's registered addresses.
    let mail_per_case = w.rows(
        "SELECT c.id, c.state, COALESCE(GROUP_CONCAT(o.kind), '') FROM cases c
         LEFT JOIN outbox o ON o.case_id = c.id GROUP BY c.id",
    );
    for r in &mail_per_case {
        let want = match r[1].as_str() {
            "updating" | "superseded" => "received",
            "rejected" => "rejected",
            _ => "",
        };
        assert_eq!(r[2], want, "case {} ({})", r[0], r[1]);
    }
    let recipients = w.rows(
        "SELECT o.recipient, r.contact_emails, r.domains FROM outbox o JOIN resellers r ON r.account = o.account",
    );
    assert_eq!(
        recipients.len(),
        w.count("SELECT COUNT(*) FROM outbox") as usize,
        "every confirmation belongs to a reseller"
    );
    for r in &recipients {
        let to = r[0].to_lowercase();
        let domain = to.rsplit('@').next().unwrap_or("");
        assert!(
            r[1].split(';').any(|c| c == to) || r[2].split(';').any(|d| d == domain),
            "confirmation to {to}, not registered ({} / {})",
            r[1],
            r[2]
        );
    }

    // The operator completes every update: the reseller carries the new ID on
    // its account and every subscription, orders open, "applied" is queued.
    for r in &updating {
        let case = w.rows(&format!(
            "SELECT id FROM cases WHERE account = '{}' AND state = 'updating'",
            r[0]
        ));
        w.ok(&["job", "done", "--case", &case[0][0]]);
        let show = w.json(&["reseller", "show", &r[0], "--json"]);
        assert_eq!(show["reseller"]["state"], "active", "{show:#}");
        assert_eq!(show["reseller"]["mpn_id"], r[2].as_str(), "{show:#}");
        assert!(
            show["subscriptions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["partner_id"] == r[2].as_str()),
            "{show:#}"
        );
        assert_eq!(w.mpnd(&["gate", &r[0]]).status.code(), Some(0));
    }
    assert_eq!(
        w.count("SELECT COUNT(*) FROM outbox WHERE kind = 'applied'") as usize,
        updating.len()
    );

    // The whole set again, as a server that redelivers would: only moved.
    let (cases, mails) = (
        w.count("SELECT COUNT(*) FROM cases"),
        w.count("SELECT COUNT(*) FROM outbox"),
    );
    for (i, f) in files.iter().enumerate() {
        w.deliver(&name(files.len() + i), &std::fs::read(f).unwrap());
    }
    w.wait_inbox_empty(60);
    assert_eq!(w.count("SELECT COUNT(*) FROM cases"), cases);
    assert_eq!(w.count("SELECT COUNT(*) FROM outbox"), mails);
    w.stop();
    files.len()
}

/// A reseller that sends the ID being applied again (a reminder, a colleague)
/// joins the update in flight: one set of jobs, no review, a second "received";
/// once the ID is in place, the same ID once more is for a person to look at.
#[test]
fn the_id_being_applied_sent_again_joins_the_update() {
    let mut w = maildir_world();
    w.import_registry();
    w.start();
    let first = corpus_mail("01_de_outlook_plain_statement.eml");
    let again = |date: &str, key: &str| {
        String::from_utf8(first.clone())
            .unwrap()
            .replace("Tue, 11 Nov 2025 09:14:22 +0100", date)
            .replace("c70101dc490c$d3e73ed4$691fa678$", key)
            .into_bytes()
    };
    w.deliver("1700000001.M1P1.t", &first);
    w.wait_inbox_empty(10);
    let cases = w.json(&["queue", "list", "--state", "all", "--json"]);
    let case1 = cases[0]["id"].as_i64().unwrap().to_string();
    let account = cases[0]["account"].as_str().unwrap().to_string();
    let jobs = w.count("SELECT COUNT(*) FROM jobs");
    assert!(jobs >= 2, "an account job and subscription jobs");
    // One subscription job done by the operator before the repeat arrives.
    let done_first = w.rows(&format!(
        "SELECT id FROM jobs WHERE case_id = {case1} AND kind = 'subscription' ORDER BY id LIMIT 1"
    ))[0][0]
        .clone();
    w.ok(&["job", "done", &done_first]);

    // The same ID again, written later and, for good measure, an earlier copy.
    w.deliver(
        "1700000002.M1P1.t",
        &again("Wed, 12 Nov 2025 10:00:00 +0100", "repeat-1"),
    );
    w.deliver(
        "1700000003.M1P1.t",
        &again("Mon, 10 Nov 2025 08:00:00 +0100", "repeat-0"),
    );
    w.wait_inbox_empty(10);
    let cases = w.json(&["queue", "list", "--state", "all", "--json"]);
    let states: Vec<(String, String)> = cases
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].to_string(),
                c["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        states.iter().filter(|(_, s)| s == "updating").count(),
        1,
        "{cases:#}"
    );
    assert_eq!(
        states.iter().filter(|(_, s)| s == "superseded").count(),
        2,
        "{cases:#}"
    );
    let last = &states.iter().find(|(_, s)| s == "updating").unwrap().0;
    assert_eq!(
        w.count("SELECT COUNT(*) FROM jobs"),
        jobs,
        "no job queued twice"
    );
    assert_eq!(
        w.count("SELECT COUNT(*) FROM jobs WHERE state = 'cancelled'"),
        0
    );
    assert_eq!(
        w.count(&format!(
            "SELECT COUNT(*) FROM jobs WHERE case_id = {last} AND state = 'pending'"
        )),
        jobs - 1,
        "the open jobs carry on under the newest case"
    );
    assert_eq!(
        w.count("SELECT COUNT(*) FROM outbox WHERE kind = 'received'"),
        3,
        "every mail is answered"
    );
    assert_eq!(
        w.rows("SELECT case_id FROM audit WHERE action = 'case.superseded' ORDER BY id"),
        vec![
            vec![case1.clone()],
            vec![(case1.parse::<i64>().unwrap() + 1).to_string()]
        ],
        "each earlier case superseded once, the newest never"
    );
    w.ok(&["job", "done", "--case", last]);
    let show = w.json(&["reseller", "show", &account, "--json"]);
    assert_eq!(show["reseller"]["state"], "active", "{show:#}");
    assert_eq!(show["reseller"]["mpn_id"], "6284913");
    assert_eq!(
        w.count("SELECT COUNT(*) FROM outbox WHERE kind = 'applied'"),
        1
    );

    // Applied now: the same ID once more is a question for a person.
    w.deliver(
        "1700000004.M1P1.t",
        &again("Thu, 13 Nov 2025 10:00:00 +0100", "repeat-2"),
    );
    w.wait_inbox_empty(10);
    let review = w.json(&["queue", "list", "--json"]);
    assert_eq!(review.as_array().unwrap().len(), 1, "{review:#}");
    assert!(
        review[0]["reasons"]
            .to_string()
            .contains("already the current ID"),
        "{review:#}"
    );
    w.stop();
}
