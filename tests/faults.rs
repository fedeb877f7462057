//! The fault suite (issue 7): the real `mpnd` binary against real Dovecot, a real
//! SMTP listener and a Partner Center fake on 127.0.0.1, broken on purpose.
//!
//! 1. SIGKILL at 20 random moments during a 1,000-mail IMAP backlog, with the
//!    manual backend and with Partner Center: every mail processed once, every
//!    job applied once, no confirmation lost.
//! 2. Outages: Dovecot killed mid-backlog; the SMTP listener down for a minute;
//!    Partner Center answering 500s; the store unable to write. Nothing lost, a
//!    clear error in the log, recovery without an operator.
//! 3. Hostile mail: 50 MB, 1,000 parts, 100-deep nesting, broken encodings, 100k
//!    headers, NUL bytes. Bounded memory and time, review with a reason, and the
//!    daemon goes on with the next mail.
//! 4. Security: spoofs and look-alikes never applied nor answered; the gate says
//!    nothing without the token; secrets never in logs, `config check`, `status`.
//!
//! Every wait has a time limit; every server and daemon is stopped on Drop. The
//! figures (kills, duplicates, RSS, durations) are printed with `--nocapture`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod support;
use support::world::{corpus, corpus_mail, Setup, World};
use support::{dovecot, Dovecot, DovecotOptions, SmtpOptions, SmtpSink};

#[path = "support/pc_fake.rs"]
mod pc_fake;
use pc_fake::PcFake;

// The world is `support::world::World`.

/// The mailer's sends in flight at once (`src/mailer.rs`): a kill can catch each
/// of them between the server's acceptance and the store's "sent" mark.
const PARALLEL_SENDS: usize = 8;

/// (account, first contact address, number of subscriptions) of every reseller.
fn resellers() -> Vec<(String, String, usize)> {
    let csv = std::fs::read_to_string(corpus().join("reseller/resellers.csv")).unwrap();
    let subs = std::fs::read_to_string(corpus().join("reseller/subscriptions.csv")).unwrap();
    csv.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let n = subs
                .lines()
                .filter(|s| s.starts_with(&format!("{},", f[0])))
                .count();
            (
                f[0].to_string(),
                f[2].split(';').next().unwrap().to_string(),
                n,
            )
        })
        .collect()
}

/// Subscriptions of `account` from the corpus.
fn subscriptions_of(account: &str) -> Vec<String> {
    let subs = std::fs::read_to_string(corpus().join("reseller/subscriptions.csv")).unwrap();
    subs.lines()
        .filter(|s| s.starts_with(&format!("{account},")))
        .map(|s| s.split(',').nth(2).unwrap().to_string())
        .collect()
}

fn imap_section(dv: &Dovecot) -> String {
    format!(
        "kind = \"imap\"\nhost = \"{}\"\nport = {}\ntls = \"none\"\nusername = \"{}\"\n\
         password = \"{}\"\ncommand_timeout_secs = 10",
        dv.host(),
        dv.port(),
        dovecot::USER,
        dovecot::PASSWORD
    )
}

fn smtp_section(smtp: &SmtpSink) -> String {
    format!(
        "kind = \"smtp\"\nhost = \"{}\"\nport = {}\ntls = \"none\"\nretry_initial_secs = 1\n\
         max_per_recipient_per_day = 100000",
        smtp.host(),
        smtp.port()
    )
}

// ---------------------------------------------------------------------------
// Mails.

const OUR_AR: &str =
    "Authentication-Results: mx.nordwind-dist.example; dkim=pass; spf=pass; dmarc=pass\r\n";

/// A plain mail with Message-ID `<{tag}-{n}@faults.example>`.
fn mail(tag: &str, n: usize, from: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "Return-Path: <x@faults.example>\r\n{extra}From: {from}\r\nTo: cloud@nordwind-dist.example\r\n\
         Subject: MPN {tag} {n}\r\nMessage-ID: <{tag}-{n}@faults.example>\r\n\
         Date: Tue, 18 Nov 2025 11:02:08 +0100\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

fn id_body(id: u32) -> String {
    format!("Guten Tag,\r\n\r\nunsere neue MPN-ID lautet {id}.\r\n\r\nGruss\r\n")
}

/// One mail of a backlog: its bytes, what it should become, and for an ID mail
/// the reseller and the new ID.
type Mail = (Vec<u8>, Kind, Option<(String, u32)>);

/// What a mail of the backlog should become.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Apply,
    Review,
    Ignore,
}

fn message_id_of(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    text.lines()
        .take_while(|l| !l.trim().is_empty())
        .find(|l| l.len() > 11 && l[..11].eq_ignore_ascii_case("message-id:"))
        .map(|l| l[11..].trim().to_string())
}

/// Every Message-ID of the three target folders and the inbox, with its folder.
fn folders(dv: &Dovecot) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for f in ["INBOX", "Processed", "Review", "Ignored"] {
        for raw in dv.list(f) {
            out.push((
                message_id_of(&raw).unwrap_or_else(|| "<none>".into()),
                f.to_string(),
            ));
        }
    }
    out
}

/// A small xorshift: random moments, reproducible from the printed seed.
struct Rng(u64);
impl Rng {
    fn seeded() -> Rng {
        let seed = std::env::var("FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("random seed {seed} (set FAULTS_SEED to repeat)");
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The SMTP sink's messages by Message-ID: (count, RCPT TO of the first).
fn sink_by_id(smtp: &SmtpSink) -> HashMap<String, (usize, Vec<String>)> {
    let mut m: HashMap<String, (usize, Vec<String>)> = HashMap::new();
    for r in smtp.messages() {
        let id = message_id_of(&r.data).expect("a confirmation without Message-ID");
        let e = m.entry(id).or_insert((0, r.rcpt_to.clone()));
        e.0 += 1;
    }
    m
}

/// Every outbox row was sent (none pending, failed or suppressed), every sent one
/// reached the sink, to the recipient of its row. Returns the duplicates: the
/// confirmations the sink got more than once (an acceptance that raced a kill).
fn assert_no_confirmation_lost(w: &World, smtp: &SmtpSink) -> usize {
    let rows = w.rows("SELECT message_id, recipient, state FROM outbox ORDER BY id");
    let sink = sink_by_id(smtp);
    let mut dupes = 0;
    for r in &rows {
        assert_eq!(r[2], "sent", "outbox row {r:?} not sent");
        let id = format!("<{}>", r[0]);
        let (n, rcpt) = sink
            .get(&id)
            .unwrap_or_else(|| panic!("confirmation {id} marked sent but never reached the sink"));
        assert_eq!(rcpt, &vec![r[1].clone()], "{id} went to the wrong address");
        dupes += n - 1;
    }
    assert_eq!(
        sink.len(),
        rows.len(),
        "the sink got confirmations the outbox does not know"
    );
    dupes
}

// ---------------------------------------------------------------------------
// 1. SIGKILL during a 1,000-mail backlog.

/// The backlog: mostly ID mails from registered contacts, some from strangers
/// (review) and some auto-replies (ignored). With `one_per_reseller`, each
/// reseller sends exactly one ID and the rest are review and ignored mails.
fn backlog(n: usize, one_per_reseller: bool) -> Vec<Mail> {
    let rs = resellers();
    let mut out = Vec::with_capacity(n);
    let every = n / rs.len();
    for i in 0..n {
        let id = 7_100_000 + i as u32;
        let apply = if one_per_reseller {
            (i % every == every / 2 && i / every < rs.len()).then(|| &rs[i / every])
        } else {
            (i % 10 < 7).then(|| &rs[i % rs.len()])
        };
        let (raw, kind, target) = if let Some((account, contact, _)) = apply {
            (
                mail("storm", i, &format!("<{contact}>"), OUR_AR, &id_body(id)),
                Kind::Apply,
                Some((account.clone(), id)),
            )
        } else if i % 10 == 9 {
            (
                mail(
                    "storm",
                    i,
                    "<m.huber@alpenblick-computer.example>",
                    "Auto-Submitted: auto-replied\r\n",
                    &format!("Ich bin nicht im Buero. Unsere MPN-ID lautet {id}."),
                ),
                Kind::Ignore,
                None,
            )
        } else {
            (
                mail(
                    "storm",
                    i,
                    &format!("<someone{i}@unknown-reseller.example>"),
                    "",
                    &id_body(id),
                ),
                Kind::Review,
                None,
            )
        };
        out.push((raw, kind, target));
    }
    out
}

/// Every mail processed exactly once: one message row and one case per
/// Message-ID, and exactly one copy, in the folder its case says; the inbox empty.
fn assert_exactly_once(w: &World, dv: &Dovecot, mails: &[Mail]) {
    assert_exactly_once_allowing(w, dv, mails, false)
}

/// With `server_crashed`, a mail may stand twice in its destination folder: a
/// server killed in the middle of a MOVE (copy, then expunge) keeps both the copy
/// and the original, and the original is moved again after the restart. That is
/// the server's doing and harmless (one case, one folder); it is counted.
fn assert_exactly_once_allowing(w: &World, dv: &Dovecot, mails: &[Mail], server_crashed: bool) {
    let n = mails.len();
    let keys = w.rows(
        "SELECT m.message_key, m.destination, (SELECT COUNT(*) FROM cases c WHERE c.message_id = m.id)
         FROM messages m",
    );
    assert_eq!(keys.len(), n, "one message row per mail");
    let mut seen = HashSet::new();
    for k in &keys {
        assert!(seen.insert(k[0].clone()), "{} recorded twice", k[0]);
        assert_eq!(k[2], "1", "{} has {} cases", k[0], k[2]);
    }
    assert_eq!(w.count("SELECT COUNT(*) FROM cases"), n as i64);
    let placed = folders(dv);
    assert!(placed.iter().all(|(_, f)| f != "INBOX"), "inbox not empty");
    let mut by_id: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, f) in &placed {
        by_id.entry(id).or_default().push(f);
    }
    let dest: HashMap<String, String> = keys
        .iter()
        .map(|k| (k[0].trim_start_matches("mid:").to_string(), k[1].clone()))
        .collect();
    for (i, (raw, kind, _)) in mails.iter().enumerate() {
        let id = message_id_of(raw).unwrap();
        let mut got = by_id.get(id.as_str()).cloned().unwrap_or_default();
        let want = match kind {
            Kind::Apply => "Processed",
            Kind::Review => "Review",
            Kind::Ignore => "Ignored",
        };
        if server_crashed && got.len() == 2 && got.iter().all(|f| *f == want) {
            eprintln!("mail {i} {id}: twice in {want} (the server was killed mid-MOVE)");
            got.truncate(1);
        }
        assert_eq!(got, vec![want], "mail {i} {id}: folders {got:?}");
        let key = id.trim_start_matches('<').trim_end_matches('>');
        assert_eq!(
            dest.get(key).map(String::as_str),
            Some(want.to_lowercase().as_str()),
            "mail {i}: case destination"
        );
    }
    if !server_crashed {
        assert_eq!(placed.len(), n, "no mail in two folders");
    }
}

/// Delivers the backlog, kills the daemon `kills` times at random moments while it
/// works, lets it finish, and checks exactly-once processing. Returns the world
/// and the backlog for the backend's own checks.
fn kill_storm(
    n: usize,
    kills: usize,
    backend: impl FnOnce(&Path) -> String,
    one_per_reseller: bool,
    dv: &Dovecot,
    smtp: &SmtpSink,
    settled: impl Fn(&World) -> bool,
) -> (World, Vec<Mail>) {
    let started = Instant::now();
    let mut w = World::new(|dir| Setup {
        mailbox: imap_section(dv),
        smtp: smtp_section(smtp),
        backend: backend(dir),
        ..Default::default()
    });
    w.import_registry();
    let mails = backlog(n, one_per_reseller);
    dv.deliver_many(mails.iter().map(|(raw, _, _)| raw.clone()));
    assert_eq!(dv.count("INBOX"), n);

    // 20 random moments spread over the backlog: each kill waits until the store
    // holds a random number of committed mails, plus a random few ms, so it falls
    // anywhere: mid-fetch, mid-commit, between commit and move, mid-send, mid-PATCH.
    let mut rng = Rng::seeded();
    let mut targets: Vec<i64> = (0..kills)
        .map(|_| rng.below(n as u64 * 95 / 100) as i64)
        .collect();
    targets.sort_unstable();
    let mut during_backlog = 0;
    for target in targets {
        w.start();
        let deadline = Instant::now() + Duration::from_secs(30);
        while w.count("SELECT COUNT(*) FROM messages") < target && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.below(40)));
        w.kill();
        if dv.count("INBOX") > 0 {
            during_backlog += 1;
        }
    }
    let left = dv.count("INBOX");
    w.start();
    w.wait("the inbox drained", Duration::from_secs(150), || {
        dv.count("INBOX") == 0
    });
    w.wait("every case settled", Duration::from_secs(120), || {
        settled(&w)
    });
    w.wait_outbox_drained(Duration::from_secs(60));
    w.stop();
    eprintln!(
        "kill storm: {n} mails, {kills} SIGKILLs ({during_backlog} with mail still in the inbox, \
         {left} left for the last run), done in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    assert_exactly_once(&w, dv, &mails);

    // No job twice: per case one account job and one per subscription.
    let jobs = w.rows(
        "SELECT c.account, COUNT(*), COUNT(DISTINCT j.idempotency_key),
                SUM(j.kind = 'account'), SUM(j.kind = 'subscription')
         FROM jobs j JOIN cases c ON c.id = j.case_id GROUP BY j.case_id",
    );
    let subs: HashMap<String, usize> = resellers().into_iter().map(|(a, _, n)| (a, n)).collect();
    for j in &jobs {
        assert_eq!(j[1], j[2], "duplicate job keys: {j:?}");
        assert_eq!(j[3], "1", "one account job per case: {j:?}");
        assert_eq!(
            j[4],
            subs[&j[0]].to_string(),
            "one job per subscription: {j:?}"
        );
    }
    let applies = mails.iter().filter(|m| m.1 == Kind::Apply).count();
    assert_eq!(jobs.len(), applies, "jobs for every applied mail, no other");
    // One "received" per applied mail, never two of a kind for one case.
    let per_case = w.rows(
        "SELECT case_id, kind, COUNT(*) FROM outbox GROUP BY case_id, kind HAVING COUNT(*) > 1",
    );
    assert!(
        per_case.is_empty(),
        "confirmations queued twice: {per_case:?}"
    );
    assert_eq!(
        w.count("SELECT COUNT(*) FROM outbox WHERE kind = 'received'"),
        applies as i64
    );
    let dupes = assert_no_confirmation_lost(&w, smtp);
    eprintln!(
        "kill storm: {} confirmations sent, {dupes} duplicate(s) at the SMTP sink (an acceptance raced a kill)",
        smtp.messages().len() - dupes
    );
    assert!(
        dupes <= kills * PARALLEL_SENDS,
        "at most one duplicate per confirmation in flight at a kill, got {dupes}"
    );
    (w, mails)
}

#[test]
fn sigkill_20_times_during_a_1000_mail_backlog_manual_backend() {
    let dv = Dovecot::start(DovecotOptions::default());
    let smtp = SmtpSink::start();
    let (w, _) = kill_storm(1000, 20, |_| String::new(), false, &dv, &smtp, |_| true);
    // The manual backend runs nothing: every job of the newest case per reseller
    // waits for the operator, older cases were superseded.
    assert_eq!(
        w.count("SELECT COUNT(*) FROM jobs WHERE state NOT IN ('pending', 'cancelled')"),
        0
    );
}

#[test]
fn sigkill_20_times_during_a_1000_mail_backlog_partner_center() {
    let dv = Dovecot::start(DovecotOptions::default());
    let smtp = SmtpSink::start();
    let pc = PcFake::start();
    pc.seed_corpus();
    // Slow PATCHes, so that kills land while one is in flight.
    pc.lock().patch_delay = Duration::from_millis(150);
    let (w, mails) = kill_storm(
        1000,
        20,
        |dir| pc.backend_section(dir, "max_attempts = 50\n"),
        true,
        &dv,
        &smtp,
        |w| {
            w.count("SELECT COUNT(*) FROM cases WHERE state IN ('updating')") == 0
                && w.count("SELECT COUNT(*) FROM outbox WHERE kind = 'applied'")
                    == w.count("SELECT COUNT(*) FROM cases WHERE decision = 'apply'")
        },
    );
    let st = pc.lock();
    assert!(st.problems.is_empty(), "{:#?}", st.problems);
    let mut retried = 0;
    for (_, _, target) in &mails {
        let Some((account, id)) = target else {
            continue;
        };
        for sub in subscriptions_of(account) {
            let changes: Vec<_> = st.applied.iter().filter(|a| a.0 == sub).collect();
            assert_eq!(changes.len(), 1, "{sub} changed once: {changes:?}");
            assert_eq!(changes[0].1, id.to_string(), "{sub} got the new ID");
            let patches: Vec<_> = st
                .requests
                .iter()
                .filter(|r| r.method == "PATCH" && r.path.ends_with(&sub))
                .collect();
            // More than one PATCH only as a repeat of the same request.
            assert!(
                patches
                    .iter()
                    .all(|p| p.request_id() == patches[0].request_id()
                        && p.partner_id() == Some(id.to_string().as_str())),
                "{sub}: {patches:?}"
            );
            retried += patches.len() - 1;
        }
    }
    drop(st);
    for (_, _, target) in &mails {
        let Some((account, id)) = target else {
            continue;
        };
        for sub in subscriptions_of(account) {
            assert_eq!(pc.partner_of(&sub), id.to_string());
        }
        let r = w.rows(&format!(
            "SELECT state, mpn_id FROM resellers WHERE account = '{account}'"
        ));
        assert_eq!(r[0], vec!["active".to_string(), id.to_string()]);
    }
    assert_eq!(
        w.count("SELECT COUNT(*) FROM jobs WHERE state <> 'done'"),
        0,
        "every job done"
    );
    eprintln!("partner center: {retried} PATCH(es) repeated after a kill (same MS-RequestId)");
}

// ---------------------------------------------------------------------------
// 2. Outages.

#[test]
fn dovecot_crash_smtp_down_a_minute_and_backend_500s_heal_without_an_operator() {
    let mut dv = Dovecot::start(DovecotOptions::default());
    let mut smtp = SmtpSink::start();
    let pc = PcFake::start();
    pc.seed_corpus();
    {
        let mut st = pc.lock();
        // Partner Center: 500 to every subscription call, and to the first
        // verification (3 tries: the mail with that ID must wait in the inbox).
        st.down = Some((500, "internal error".into()));
        st.verify_failures = 3;
    }
    let mut w = World::new(|dir| Setup {
        mailbox: imap_section(&dv),
        smtp: smtp_section(&smtp),
        backend: pc.backend_section(dir, "max_attempts = 50\n"),
        ..Default::default()
    });
    w.import_registry();
    let mails = backlog(300, true);
    dv.deliver_many(mails.iter().map(|(raw, _, _)| raw.clone()));
    smtp.stop();
    let t0 = Instant::now();
    w.start();

    // Dovecot crashes (SIGKILL of every Dovecot process) a third into the backlog
    // and is back 3 s later.
    w.wait("a third of the backlog", Duration::from_secs(60), || {
        w.count("SELECT COUNT(*) FROM messages") >= 100
    });
    dv.kill();
    let crashed_at = t0.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    dv.restart();

    // While Microsoft cannot be asked (the first verification failed, the next
    // ones are paused for 30 s), the ID mails wait in the inbox, and the others
    // are not held up behind them.
    let others = mails.iter().filter(|m| m.1 != Kind::Apply).count() as i64;
    // Generous: the reconnect backs off (1, 2, 4 s ...) and CI's two cores may be
    // busy; what counts is that they finish without an operator, not how fast.
    w.wait(
        "every mail that needs no verification",
        Duration::from_secs(60),
        || w.count("SELECT COUNT(*) FROM cases WHERE decision IN ('review', 'ignore')") == others,
    );
    // Committed mails are moved right after their batch's commit; give the moves
    // of the last batch a moment (until the 29 s mark) before counting the inbox.
    let id_mails = mails.len() - others as usize;
    while dv.count("INBOX") != id_mails && t0.elapsed() < Duration::from_secs(28) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let waiting = dv.count("INBOX");
    eprintln!(
        "outages: Dovecot killed at {:.1} s; the {others} other mails done at {:.1} s while \
         {waiting} ID mails wait for verification",
        crashed_at.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    // Within the 30 s pause after the failed verification every ID mail must
    // still be waiting; on a machine so slow that the pause ran out first, the
    // ID mails may have been verified meanwhile, which is right too.
    if t0.elapsed() < Duration::from_secs(29) {
        assert_eq!(
            waiting, id_mails,
            "ID mails wait while verification is unavailable"
        );
    }

    // A new mail after the pause wakes the loop, which tries the waiting ones
    // again; their jobs meet Partner Center's 500s until 50 s, SMTP is back at 60 s.
    std::thread::sleep(Duration::from_secs(32).saturating_sub(t0.elapsed()));
    let late = mail(
        "storm",
        300,
        "<late@unknown-reseller.example>",
        "",
        &id_body(7_199_999),
    );
    dv.append(&late);
    let mut mails = mails;
    mails.push((late, Kind::Review, None));
    std::thread::sleep(Duration::from_secs(50).saturating_sub(t0.elapsed()));
    pc.lock().down = None;
    let inbox_left = dv.count("INBOX");
    std::thread::sleep(Duration::from_secs(60).saturating_sub(t0.elapsed()));
    let pending_at_smtp_restart = w.count("SELECT COUNT(*) FROM outbox WHERE state = 'pending'");
    smtp.restart();
    let smtp_back = Instant::now();
    let smtp_back_at = t0.elapsed();
    w.wait("the inbox drained", Duration::from_secs(60), || {
        dv.count("INBOX") == 0
    });
    w.wait("every update done", Duration::from_secs(90), || {
        w.count("SELECT COUNT(*) FROM jobs WHERE state <> 'done'") == 0
            && w.count("SELECT COUNT(*) FROM cases WHERE state = 'updating'") == 0
    });
    w.wait_outbox_drained(Duration::from_secs(150));
    let healed = smtp_back.elapsed();
    w.stop();
    eprintln!(
        "outages: {inbox_left} mails in the inbox at 50 s, {} Partner Center 500s served, \
         {pending_at_smtp_restart} confirmations waiting when SMTP came back after {:.0} s, \
         all sent {:.1} s later",
        pc.lock().errors_served,
        smtp_back_at.as_secs_f64(),
        healed.as_secs_f64()
    );

    assert_exactly_once_allowing(&w, &dv, &mails, true);
    let dupes = assert_no_confirmation_lost(&w, &smtp);
    assert_eq!(dupes, 0, "no kill of mpnd here: no confirmation twice");
    let applies = mails.iter().filter(|m| m.1 == Kind::Apply).count() as i64;
    assert_eq!(
        w.count("SELECT COUNT(*) FROM outbox WHERE kind = 'applied'"),
        applies
    );
    assert!(pending_at_smtp_restart > 0, "confirmations waited for SMTP");
    for (_, _, target) in &mails {
        let Some((account, id)) = target else {
            continue;
        };
        for sub in subscriptions_of(account) {
            assert_eq!(pc.partner_of(&sub), id.to_string(), "{sub}");
        }
    }
    let st = pc.lock();
    assert!(st.problems.is_empty(), "{:#?}", st.problems);
    for (sub, _, _) in &st.applied {
        assert_eq!(
            st.applied.iter().filter(|a| &a.0 == sub).count(),
            1,
            "{sub} changed once"
        );
    }
    drop(st);
    // Each outage left a clear trace in the log.
    let log = w.log();
    for needle in [
        "mailbox connection lost",
        "verification unavailable",
        "job will be retried",
        "500",
        "confirmation not sent, will retry",
    ] {
        assert!(log.contains(needle), "no {needle:?} in the log:\n{log}");
    }
}

/// Sets the daemon's RLIMIT_FSIZE soft limit (the hard one stays): with 0, every
/// write to a file fails (EFBIG, SIGXFSZ ignored), as on a full disk.
fn limit_file_size(pid: u32, soft: Option<u64>) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on valid pointers.
    unsafe {
        assert_eq!(
            libc::prlimit(pid as i32, libc::RLIMIT_FSIZE, std::ptr::null(), &mut old),
            0
        );
        let new = libc::rlimit {
            rlim_cur: soft.unwrap_or(old.rlim_max),
            rlim_max: old.rlim_max,
        };
        assert_eq!(
            libc::prlimit(pid as i32, libc::RLIMIT_FSIZE, &new, std::ptr::null_mut()),
            0,
            "prlimit: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[test]
fn a_store_that_cannot_be_written_keeps_mail_in_the_inbox_and_heals() {
    let smtp = SmtpSink::start();
    let mut w = World::new(|_| Setup {
        smtp: smtp_section(&smtp),
        ..Default::default()
    });
    w.import_registry();
    w.start();
    let rs = resellers();
    w.deliver(
        "1700000000.M0P0.ok",
        &mail(
            "disk",
            0,
            &format!("<{}>", rs[0].1),
            OUR_AR,
            &id_body(7_300_000),
        ),
    );
    w.wait("the first mail", Duration::from_secs(20), || {
        w.maildir_count("Processed") == 1
    });
    smtp.wait_for(1, Duration::from_secs(20));

    // The disk is full: no write to any file of the state dir succeeds.
    limit_file_size(w.pid(), Some(0));
    let full_at = Instant::now();
    let n = 12;
    for (i, (_, contact, _)) in rs.iter().enumerate().take(n + 1).skip(1) {
        let raw = if i % 3 == 0 {
            mail(
                "disk",
                i,
                "<nobody@unknown.example>",
                "",
                &id_body(7_300_000 + i as u32),
            )
        } else {
            mail(
                "disk",
                i,
                &format!("<{}>", contact),
                OUR_AR,
                &id_body(7_300_000 + i as u32),
            )
        };
        w.deliver(&format!("17000000{i:02}.M{i}P0.full"), &raw);
    }
    w.wait(
        "an error about the store in the log",
        Duration::from_secs(20),
        || w.log().contains("cannot commit case: disk I/O error"),
    );
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        w.maildir_count(""),
        n,
        "nothing leaves the inbox while the store cannot be written"
    );
    assert_eq!(w.count("SELECT COUNT(*) FROM cases"), 1);
    let (code, health) = w.http("/healthz", None).unwrap();
    eprintln!(
        "store unwritable for {:.1} s: /healthz {code}",
        full_at.elapsed().as_secs_f64()
    );
    assert_eq!(
        code, 503,
        "a store that cannot be written is unhealthy: {health}"
    );

    // Space again: the daemon goes on by itself, without a restart.
    limit_file_size(w.pid(), None);
    let freed = Instant::now();
    w.wait(
        "the inbox drained after the store healed",
        Duration::from_secs(90),
        || w.maildir_count("") == 0,
    );
    w.wait_outbox_drained(Duration::from_secs(30));
    assert_eq!(w.http("/healthz", None).unwrap().0, 200, "healthy again");
    eprintln!(
        "store writable again: {n} waiting mails committed and moved {:.1} s later",
        freed.elapsed().as_secs_f64()
    );
    let peak = w.peak_rss_mib();
    w.stop();
    assert_eq!(w.count("SELECT COUNT(*) FROM cases"), n as i64 + 1);
    assert_eq!(
        w.count("SELECT COUNT(DISTINCT message_key) FROM messages"),
        n as i64 + 1
    );
    assert_eq!(
        w.maildir_count("Processed") + w.maildir_count("Review"),
        n + 1
    );
    assert_eq!(w.maildir_count("Review"), n / 3);
    assert_eq!(assert_no_confirmation_lost(&w, &smtp), 0);
    assert_eq!(smtp.messages().len(), 1 + n - n / 3);
    let _ = peak;
}

// ---------------------------------------------------------------------------
// 3. Hostile mail.

fn headers(from: &str, n: usize, ctype: &str) -> String {
    format!(
        "From: {from}\r\nTo: cloud@nordwind-dist.example\r\n{OUR_AR}Subject: hostile {n}\r\n\
         Message-ID: <hostile-{n}@faults.example>\r\nDate: Tue, 18 Nov 2025 11:02:08 +0100\r\n\
         MIME-Version: 1.0\r\nContent-Type: {ctype}\r\n"
    )
}

/// (what, raw) of every hostile mail, all from a registered contact.
fn hostile_mails(from: &str) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();

    // 50 MB, with an ID that must never be read.
    let mut big = headers(from, 0, "text/plain; charset=utf-8").into_bytes();
    big.extend_from_slice(b"\r\nunsere neue MPN-ID lautet 7400000.\r\n");
    let line = [b'x'; 998];
    while big.len() < 50_000_000 {
        big.extend_from_slice(&line);
        big.extend_from_slice(b"\r\n");
    }
    out.push(("50 MB", big));

    // 1,000 parts.
    let mut m = headers(from, 1, "multipart/mixed; boundary=\"b\"") + "\r\n";
    for i in 0..1000 {
        m.push_str(&format!(
            "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nTeil {i}: nichts Neues.\r\n"
        ));
    }
    m.push_str("--b--\r\n");
    out.push(("1,000 parts", m.into_bytes()));

    // 100 multiparts deep.
    let mut m = headers(from, 2, "multipart/mixed; boundary=\"d0\"") + "\r\n";
    for d in 1..100 {
        m.push_str(&format!(
            "--d{}\r\nContent-Type: multipart/mixed; boundary=\"d{d}\"\r\n\r\n",
            d - 1
        ));
    }
    m.push_str("--d99\r\nContent-Type: text/plain\r\n\r\nganz unten\r\n");
    for d in (0..100).rev() {
        m.push_str(&format!("--d{d}--\r\n"));
    }
    out.push(("100 deep", m.into_bytes()));

    // Broken encodings: bad base64, bad quoted-printable, unknown charsets, raw
    // 8-bit and invalid UTF-8 in headers, a broken encoded word.
    let mut m = format!(
        "From: {from}\r\nTo: cloud@nordwind-dist.example\r\n{OUR_AR}\
         Subject: =?utf-8?B?!!!kaputt?= =?x-unknown?Q?=ZZ=?=\r\n\
         Message-ID: <hostile-3@faults.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"e\"\r\n\r\n"
    )
    .into_bytes();
    m.extend_from_slice(b"X-Bad: \xff\xfe\xc3\x28 ung\xfcltig\r\n");
    m.extend_from_slice(
        b"--e\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n\
          Content-Transfer-Encoding: base64\r\n\r\n!!!@@@###$$$ not base64 at all ====\r\n\
          --e\r\nContent-Type: text/plain; charset=utf-7\r\n\
          Content-Transfer-Encoding: quoted-printable\r\n\r\n=ZZ=X=\r\n=C3=\r\n+AGEAYgBj-\r\n\
          --e\r\nContent-Type: text/html; charset=utf-16\r\nContent-Transfer-Encoding: base64\r\n\r\n\
          //5pAG4AdgBhAGwAaQBk2AA=\r\n--e\r\nContent-Type: text/plain; charset=\"utf-8\r\n\r\n\
          \xc3\x28\xa0\xa1 \xe2\x82 half a character\r\n",
    );
    out.push(("broken encodings", m));

    // 100,000 headers.
    let mut m = headers(from, 4, "text/plain; charset=utf-8");
    for i in 0..100_000 {
        m.push_str(&format!("X-Flood-{i}: {i}\r\n"));
    }
    m.push_str("\r\nviele Kopfzeilen\r\n");
    out.push(("100k headers", m.into_bytes()));

    // NUL bytes in headers and body.
    let mut m = headers(from, 5, "text/plain; charset=utf-8").into_bytes();
    m.extend_from_slice(b"X-Nul: a\0b\r\n\r\nHallo\0\0\0 Welt\0\r\n");
    m.extend(std::iter::repeat_n(0u8, 100_000));
    m.extend_from_slice(b"\r\nEnde\r\n");
    out.push(("NUL bytes", m));
    out
}

#[test]
fn hostile_mail_is_bounded_goes_to_review_and_the_daemon_goes_on() {
    let dv = Dovecot::start(DovecotOptions::default());
    let smtp = SmtpSink::start();
    let mut w = World::new(|_| Setup {
        mailbox: imap_section(&dv),
        smtp: smtp_section(&smtp),
        ..Default::default()
    });
    w.import_registry();
    let rs = resellers();
    let from = format!("<{}>", rs[1].1);
    let hostile = hostile_mails(&from);
    w.start();
    let baseline = w.peak_rss_mib();
    let t = Instant::now();
    dv.deliver_many(hostile.iter().map(|(_, raw)| raw));
    // A normal mail after them.
    dv.deliver_many([mail(
        "normal",
        0,
        &format!("<{}>", rs[2].1),
        OUR_AR,
        &id_body(7_400_001),
    )]);
    w.wait(
        "every hostile mail settled",
        Duration::from_secs(120),
        || w.count("SELECT COUNT(*) FROM cases") == hostile.len() as i64 + 1,
    );
    let elapsed = t.elapsed();
    let peak = w.peak_rss_mib();
    w.wait("the inbox drained", Duration::from_secs(20), || {
        dv.count("INBOX") == 0
    });
    eprintln!(
        "hostile mail: {} mails ({:.1} MB) settled in {:.1} s; daemon VmHWM {peak:.0} MiB \
         (idle {baseline:.0} MiB)",
        hostile.len() + 1,
        hostile.iter().map(|(_, r)| r.len()).sum::<usize>() as f64 / 1e6,
        elapsed.as_secs_f64()
    );
    assert!(peak < 500.0, "peak RSS {peak:.0} MiB");
    // Below the size of the 50 MB mail: it was never downloaded into memory.
    assert!(
        peak < 48.0,
        "peak RSS {peak:.0} MiB: was the 50 MB mail read?"
    );
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");

    for (n, (what, _)) in hostile.iter().enumerate() {
        // The 50 MB mail is not downloaded: no Message-ID, it is known by its UID.
        let key = match n {
            0 => "m.message_key LIKE 'pos:imap:%'".to_string(),
            n => format!("m.message_key = 'mid:hostile-{n}@faults.example'"),
        };
        let rows = w.rows(&format!(
            "SELECT c.decision, c.reasons, m.raw IS NULL FROM cases c JOIN messages m ON m.id = c.message_id
             WHERE {key}"
        ));
        assert_eq!(rows.len(), 1, "{what}: one case");
        let (decision, reasons) = (&rows[0][0], &rows[0][1]);
        eprintln!("  {what}: {decision}, {reasons}");
        assert_eq!(decision, "review", "{what}: {reasons}");
        assert!(reasons.len() > 4, "{what}: a reason for the reviewer");
        if n == 0 {
            assert!(reasons.contains("over max_message_size"), "{reasons}");
            assert_eq!(rows[0][2], "1", "the 50 MB mail is not kept");
        }
    }
    let normal = w.rows(
        "SELECT c.decision, c.state FROM cases c JOIN messages m ON m.id = c.message_id
         WHERE m.message_key = 'mid:normal-0@faults.example'",
    );
    assert_eq!(
        normal,
        vec![vec!["apply".to_string(), "updating".to_string()]]
    );
    assert_eq!(dv.count("Review"), hostile.len());
    assert_eq!(dv.count("Processed"), 1);
    smtp.wait_for(1, Duration::from_secs(20));
    w.stop();
}

// ---------------------------------------------------------------------------
// 4. Security.

const SMTP_USER: &str = "cloud@nordwind-dist.example";
const SMTP_PASSWORD: &str = "smtp-relay-pw-94d1e0";

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every form a secret could leak in: plain, base64, and inside AUTH PLAIN blobs.
fn leak_forms(secrets: &[(&str, String)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (what, s) in secrets {
        out.push((what.to_string(), s.clone()));
        out.push((format!("{what} (base64)"), base64(s.as_bytes())));
    }
    out.push((
        "IMAP AUTH PLAIN".into(),
        base64(format!("\0{}\0{}", dovecot::USER, dovecot::PASSWORD).as_bytes()),
    ));
    out.push((
        "SMTP AUTH PLAIN".into(),
        base64(format!("\0{SMTP_USER}\0{SMTP_PASSWORD}").as_bytes()),
    ));
    out
}

fn assert_no_secret(place: &str, text: &str, forms: &[(String, String)]) {
    for (what, s) in forms {
        assert!(!text.contains(s.as_str()), "{what} leaked into {place}");
    }
}

#[test]
fn spoofs_are_never_applied_nor_answered_the_gate_tells_strangers_nothing_secrets_stay_secret() {
    let dv = Dovecot::start(DovecotOptions::default());
    let smtp = SmtpSink::start_with(SmtpOptions {
        auth: Some((SMTP_USER.into(), SMTP_PASSWORD.into())),
    });
    let pc = PcFake::start();
    pc.seed_corpus();
    let mut w = World::new(|dir| {
        std::fs::write(dir.join("smtp.password"), format!("{SMTP_PASSWORD}\n")).unwrap();
        Setup {
            mailbox: imap_section(&dv),
            smtp: format!(
                "{}\nauth = \"password\"\nusername = \"{SMTP_USER}\"\npassword_file = \"{}\"",
                smtp_section(&smtp),
                dir.join("smtp.password").display()
            ),
            backend: pc.backend_section(dir, ""),
            ..Default::default()
        }
    });
    w.import_registry();
    w.start_with(&[("MPND_LOG", "debug")]);
    let token = w.token();

    // Bergmann IT (R-20031) is the reseller everybody pretends to be.
    let contact = "k.bergmann@bergmann-it.example";
    let fail_ar = "Authentication-Results: mx.nordwind-dist.example; dkim=none; \
                   spf=fail smtp.mailfrom=bergmann-it.example; dmarc=fail header.from=bergmann-it.example\r\n\
                   Authentication-Results: mail.bergmann-it.example; dmarc=pass\r\n";
    let spoofs: Vec<(&str, Vec<u8>)> = vec![
        (
            "corpus 28: DMARC fail at our MX",
            corpus_mail("28_de_dmarc_fail_spoof.eml"),
        ),
        (
            "DMARC fail with a forged pass below",
            mail(
                "spoof",
                1,
                &format!("<{contact}>"),
                fail_ar,
                &id_body(7_500_001),
            ),
        ),
        (
            "look-alike bergmann-lt",
            mail(
                "spoof",
                2,
                "<k.bergmann@bergmann-lt.example>",
                OUR_AR,
                &id_body(7_500_002),
            ),
        ),
        (
            "look-alike subdomain",
            mail(
                "spoof",
                3,
                "<k.bergmann@bergmann-it.example.evil.example>",
                OUR_AR,
                &id_body(7_500_003),
            ),
        ),
        // Cyrillic і (U+0456) for the Latin i, raw UTF-8 as an SMTPUTF8 MTA delivers it.
        (
            "unicode confusable",
            mail(
                "spoof",
                4,
                "<k.bergmann@bergmann-\u{456}t.example>",
                OUR_AR,
                &id_body(7_500_004),
            ),
        ),
        (
            "confusable as punycode",
            mail(
                "spoof",
                5,
                "<k.bergmann@xn--bergmann-t-7ij.example>",
                OUR_AR,
                &id_body(7_500_005),
            ),
        ),
        (
            "encoded confusable display name",
            mail(
                "spoof",
                6,
                "=?utf-8?B?a0BiZXJnbWFubi3RlnQuZXhhbXBsZQ==?= <attacker@evil.example>",
                OUR_AR,
                &id_body(7_500_006),
            ),
        ),
        (
            "display-name trick",
            mail(
                "spoof",
                7,
                &format!("\"{contact}\" <attacker@evil.example>"),
                OUR_AR,
                &id_body(7_500_007),
            ),
        ),
        (
            "display-name trick, unquoted address first",
            mail(
                "spoof",
                8,
                &format!("{contact} <attacker@evil.example>"),
                OUR_AR,
                &id_body(7_500_008),
            ),
        ),
        (
            "Reply-To a stranger with DMARC fail",
            mail(
                "spoof",
                9,
                &format!("<{contact}>"),
                &format!("Reply-To: <attacker@evil.example>\r\n{fail_ar}"),
                &id_body(7_500_009),
            ),
        ),
        (
            "Sender header of ours",
            mail(
                "spoof",
                10,
                "<attacker@evil.example>",
                &format!("Sender: <{contact}>\r\n{OUR_AR}"),
                &id_body(7_500_010),
            ),
        ),
    ];
    for (_, raw) in &spoofs {
        dv.append(raw);
    }
    // The real reseller, with a Reply-To pointing at a stranger: its From passes
    // DMARC at our MX, so it may be applied, but nothing is ever sent to the
    // Reply-To.
    dv.append(&mail(
        "genuine",
        0,
        &format!("<{contact}>"),
        &format!("Reply-To: <attacker@evil.example>\r\n{OUR_AR}"),
        &id_body(7_500_100),
    ));
    w.wait("every mail settled", Duration::from_secs(60), || {
        dv.count("INBOX") == 0
    });
    w.wait("the update done", Duration::from_secs(60), || {
        w.count("SELECT COUNT(*) FROM cases WHERE state = 'done'") == 1
    });
    w.wait_outbox_drained(Duration::from_secs(30));
    smtp.wait_for(2, Duration::from_secs(20));

    let cases = w.rows(
        "SELECT m.message_key, c.decision, c.state, c.reasons FROM cases c
         JOIN messages m ON m.id = c.message_id ORDER BY c.id",
    );
    assert_eq!(cases.len(), spoofs.len() + 1);
    for ((what, _), case) in spoofs.iter().zip(&cases) {
        eprintln!("  {what}: {} ({})", case[1], case[3]);
        assert_eq!(case[1], "review", "{what} must never be applied: {case:?}");
    }
    let genuine = cases.last().unwrap();
    assert_eq!(genuine[2], "done", "{genuine:?}");
    // Nothing to anyone but the registered contact: not in the outbox, not on the wire.
    let recipients = w.rows("SELECT DISTINCT recipient FROM outbox");
    assert_eq!(recipients, vec![vec![contact.to_string()]]);
    for m in smtp.messages() {
        assert_eq!(m.rcpt_to, vec![contact.to_string()], "RCPT TO");
        assert_eq!(m.auth_user.as_deref(), Some(SMTP_USER));
        let text = m.text();
        let to = text
            .lines()
            .find(|l| l.starts_with("To:"))
            .unwrap_or_default();
        assert!(
            to.contains(contact) && !text.contains("evil.example"),
            "{text}"
        );
    }
    assert!(
        pc.lock()
            .requests
            .iter()
            .all(|r| r.partner_id() != Some("7500001")),
        "no spoofed ID reached Partner Center"
    );

    // The gate: without the right token, 401 and not a word about any reseller.
    let account = "R-20031";
    let path = format!("/v1/resellers/{account}/order-gate");
    let (code, body) = w.http(&path, Some(&format!("Bearer {token}"))).unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("7500100"), "{body}");
    let wrong = [
        None,
        Some("Bearer".to_string()),
        Some("Bearer ".to_string()),
        Some("Bearer wrong".to_string()),
        Some(format!("Bearer {}", &token[..token.len() - 1])),
        Some(format!("Bearer {token}x")),
        Some(format!("Bearer {}", token.to_uppercase())),
        Some(format!("Basic {}", base64(format!("x:{token}").as_bytes()))),
        Some(format!("Token {token}")),
    ];
    for auth in &wrong {
        for p in [
            path.clone(),
            "/v1/resellers/R-99999/order-gate".to_string(),
            format!("{path}?access_token={token}"),
        ] {
            let (code, resp) = w.http(&p, auth.as_deref()).unwrap();
            assert_eq!(code, 401, "{auth:?} {p}: {resp}");
            let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
            for secret in [
                account, "R-99999", "7500100", "4417206", "Bergmann", "allowed", "mpn_id", "state",
                "unknown",
            ] {
                assert!(!body.contains(secret), "{auth:?} {p}: {secret} in {body}");
            }
        }
    }
    // Health and metrics are open, so they must name no reseller either.
    for p in ["/healthz", "/metrics"] {
        let (_, resp) = w.http(p, None).unwrap();
        for secret in [
            account,
            "7500100",
            "bergmann",
            "evil.example",
            token.as_str(),
        ] {
            assert!(!resp.contains(secret), "{p}: {secret} in {resp}");
        }
    }

    // Secrets: not in the debug log, not in `config check`, not in `status`.
    let forms = leak_forms(&[
        ("IMAP password", dovecot::PASSWORD.to_string()),
        ("SMTP password", SMTP_PASSWORD.to_string()),
        ("gate token", token.clone()),
        ("OAuth client secret", pc_fake::SECRET.to_string()),
    ]);
    let mut outputs = Vec::new();
    for args in [&["config", "check"][..], &["status"], &["status", "--json"]] {
        let out = w.mpnd(args);
        assert!(out.status.success(), "mpnd {args:?}");
        outputs.push((
            format!("mpnd {}", args.join(" ")),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    // A config with a mistake elsewhere: the error names the line, not the secrets.
    let text = std::fs::read_to_string(&w.config).unwrap();
    let bad = w.dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        text.replace("tls = \"none\"\nretry", "tls = \"sometimes\"\nretry"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mpnd"))
        .args(["--config", bad.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    outputs.push((
        "mpnd config check (bad)".into(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ));
    w.stop();
    let log = w.log();
    assert!(log.contains("DEBUG"), "the log is at debug level");
    outputs.push(("the daemon's debug log".into(), log.clone()));
    for (place, text) in &outputs {
        assert_no_secret(place, text, &forms);
    }
    eprintln!(
        "security: {} spoofs in review, {} confirmations only to {contact}, {} bad gate requests 401, \
         {} secret forms absent from {} KiB of debug log, config check, status",
        spoofs.len(),
        smtp.messages().len(),
        wrong.len() * 3,
        forms.len(),
        log.len() / 1024
    );
}
