//! The mailbox area against real servers on 127.0.0.1: the IMAP client against a
//! private Dovecot (plain, TLS, without IDLE/MOVE/UIDPLUS, XOAUTH2, restarted,
//! with a new UIDVALIDITY), the OAuth2 token source against a local endpoint, and
//! the SMTP sink the other test binaries rely on.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mpnd::mailbox::imap::{Cursor, Fetched, ImapAuth, ImapMailbox, TlsMode};
use mpnd::mailbox::Destination;
use mpnd::oauth::TokenSource;
use support::{mail, Dovecot, DovecotOptions, OAuthServer, SmtpOptions, SmtpSink};
use tokio::sync::Notify;

/// Fetch batches until an empty one; returns the last cursor and everything seen.
async fn drain(mb: &mut ImapMailbox, cursor: Option<Cursor>) -> (Cursor, Vec<Fetched>) {
    let mut cursor = cursor;
    let mut all = Vec::new();
    loop {
        let (next, batch) = mb.fetch(cursor.as_ref()).await.expect("fetch");
        if let Some(c) = cursor {
            if c.uidvalidity == next.uidvalidity {
                assert!(
                    next.next_uid >= c.next_uid,
                    "cursor went back: {c:?} -> {next:?}"
                );
            }
        }
        cursor = Some(next);
        if batch.is_empty() {
            return (next, all);
        }
        all.extend(batch);
    }
}

fn raws(fetched: &[Fetched]) -> Vec<Vec<u8>> {
    fetched
        .iter()
        .map(|f| f.raw.clone().expect("raw"))
        .collect()
}

#[tokio::test]
async fn fetches_a_backlog_in_batches_over_plaintext() {
    let dv = Dovecot::start(DovecotOptions::default());
    let mails: Vec<Vec<u8>> = (0..5)
        .map(|i| mail(&format!("backlog {i}"), "PLA 1234567"))
        .collect();
    for m in &mails {
        dv.append(m);
    }
    let mut s = dv.imap_settings();
    s.batch_size = 2;
    let mut mb = ImapMailbox::connect(&s).await.expect("connect");
    assert!(mb.has_idle() && mb.has_move());

    let (c1, b1) = mb.fetch(None).await.unwrap();
    assert_eq!(b1.iter().map(|f| f.uid).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(c1.next_uid, 3);
    let (c2, b2) = mb.fetch(Some(&c1)).await.unwrap();
    assert_eq!(b2.iter().map(|f| f.uid).collect::<Vec<_>>(), [3, 4]);
    let (c3, b3) = mb.fetch(Some(&c2)).await.unwrap();
    assert_eq!(b3.iter().map(|f| f.uid).collect::<Vec<_>>(), [5]);
    let (c4, b4) = mb.fetch(Some(&c3)).await.unwrap();
    assert!(b4.is_empty());
    assert_eq!(c4, c3);

    let all: Vec<Fetched> = [b1, b2, b3].concat();
    assert_eq!(raws(&all), mails, "bytes as appended");
    for f in &all {
        assert_eq!(f.size, f.raw.as_ref().unwrap().len() as u64);
    }

    // `UID 100:*` matches the highest UID (5) on the server; it must not come back.
    let ahead = Cursor {
        uidvalidity: c4.uidvalidity,
        next_uid: 100,
    };
    let (c5, b5) = mb.fetch(Some(&ahead)).await.unwrap();
    assert!(b5.is_empty(), "{b5:?}");
    assert_eq!(c5, ahead, "cursor never moves back within a UIDVALIDITY");
    mb.logout().await;
}

/// One SEARCH serves a backlog's batches; what changes meanwhile still counts: a
/// mail flagged \Deleted after the search is left out, mail arriving meanwhile is
/// found once the list is used up, and a cursor that does not continue the last
/// batch (a held mail, a rescan) searches anew.
#[tokio::test]
async fn batches_from_one_search_still_see_deletions_new_mail_and_rescans() {
    let dv = Dovecot::start(DovecotOptions::default());
    for i in 0..5 {
        dv.append(&mail(&format!("listed {i}"), "PLA 1234567"));
    }
    let mut s = dv.imap_settings();
    s.batch_size = 2;
    let mut mb = ImapMailbox::connect(&s).await.expect("connect");
    let uids = |b: &[Fetched]| b.iter().map(|f| f.uid).collect::<Vec<_>>();

    let (c1, b1) = mb.fetch(None).await.unwrap();
    assert_eq!(uids(&b1), [1, 2]);
    dv.add_flags("INBOX", 4, "\\Deleted");
    dv.append(&mail("arrived meanwhile", "PLA 7654321"));
    let (c2, b2) = mb.fetch(Some(&c1)).await.unwrap();
    assert_eq!(uids(&b2), [3], "4 was deleted after the search");
    assert_eq!(c2.next_uid, 5, "the cursor passes the deleted mail");
    let (c3, b3) = mb.fetch(Some(&c2)).await.unwrap();
    assert_eq!(uids(&b3), [5]);
    let (c4, b4) = mb.fetch(Some(&c3)).await.unwrap();
    assert_eq!(uids(&b4), [6], "the new mail, found by a new search");
    let (_, b5) = mb.fetch(Some(&c4)).await.unwrap();
    assert!(b5.is_empty());

    // Back to UID 2, as the daemon does for a mail it had to hold.
    let held = Cursor {
        uidvalidity: c1.uidvalidity,
        next_uid: 2,
    };
    let (_, again) = mb.fetch(Some(&held)).await.unwrap();
    assert_eq!(uids(&again), [2, 3]);
    let (_, rescan) = mb.fetch(None).await.unwrap();
    assert_eq!(uids(&rescan), [1, 2]);
    mb.logout().await;
}

/// A batch holds at most `batch_bytes` of mail (at least one mail, however large),
/// lowest UIDs first; what does not fit comes in the next batch, and an oversize
/// mail, never downloaded, costs nothing.
#[tokio::test]
async fn a_batch_stays_within_its_byte_budget() {
    let dv = Dovecot::start(DovecotOptions::default());
    let line = "x".repeat(999) + "\r\n";
    for kb in [40, 40, 40, 150, 10, 2000] {
        dv.append(&mail(&format!("{kb} KB"), &line.repeat(kb)));
    }
    let mut s = dv.imap_settings();
    s.batch_size = 10;
    s.batch_bytes = 100_000;
    s.max_message_size = 1 << 20;
    let mut mb = ImapMailbox::connect(&s).await.expect("connect");
    let uids = |b: &[Fetched]| b.iter().map(|f| f.uid).collect::<Vec<_>>();
    let (c1, b1) = mb.fetch(None).await.unwrap();
    assert_eq!(uids(&b1), [1, 2], "a third 40 KB mail would pass 100 KB");
    assert_eq!(c1.next_uid, 3);
    let (c2, b2) = mb.fetch(Some(&c1)).await.unwrap();
    assert_eq!(uids(&b2), [3]);
    let (c3, b3) = mb.fetch(Some(&c2)).await.unwrap();
    assert_eq!(uids(&b3), [4], "alone over the budget, still fetched");
    assert!(b3[0].raw.is_some());
    let (c4, b4) = mb.fetch(Some(&c3)).await.unwrap();
    assert_eq!(uids(&b4), [5, 6]);
    assert!(b4[1].raw.is_none(), "oversize: listed, not downloaded");
    let (_, b5) = mb.fetch(Some(&c4)).await.unwrap();
    assert!(b5.is_empty());
    mb.logout().await;
}

#[tokio::test]
async fn fetches_over_implicit_tls_and_starttls_with_the_test_ca() {
    let dv = Dovecot::start(DovecotOptions {
        tls: true,
        ..Default::default()
    });
    let m = mail("over tls", "Partner ID 7654321");
    dv.append(&m);

    let s = dv.imap_settings();
    assert_eq!(s.tls, TlsMode::Implicit);
    let mut mb = ImapMailbox::connect(&s)
        .await
        .expect("implicit tls connect");
    let (_, got) = drain(&mut mb, None).await;
    assert_eq!(raws(&got), std::slice::from_ref(&m));
    mb.logout().await;

    let mut st = dv.imap_settings();
    st.tls = TlsMode::Starttls;
    st.port = dv.starttls_port().unwrap();
    let mut mb = ImapMailbox::connect(&st).await.expect("starttls connect");
    let (_, got) = drain(&mut mb, None).await;
    assert_eq!(raws(&got), [m]);
    mb.logout().await;

    // Without the test CA the certificate is not trusted: no silent fallback.
    let mut untrusted = dv.imap_settings();
    untrusted.ca_file = None;
    let err = format!("{:#}", ImapMailbox::connect(&untrusted).await.unwrap_err());
    assert!(
        err.contains("tls handshake") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn plaintext_is_refused_to_a_remote_host() {
    let dv = Dovecot::start(DovecotOptions::default());
    let mut s = dv.imap_settings();
    s.host = "outlook.office365.com".into();
    let err = format!("{:#}", ImapMailbox::connect(&s).await.unwrap_err());
    assert!(err.contains("only allowed to a loopback address"), "{err}");
}

#[tokio::test]
async fn wrong_password_is_a_clear_error_without_the_password() {
    let dv = Dovecot::start(DovecotOptions::default());
    let mut s = dv.imap_settings();
    s.auth = ImapAuth::Password("not-the-password-xyz".into());
    let err = format!("{:#}", ImapMailbox::connect(&s).await.unwrap_err());
    assert!(err.contains("imap login as cloud@distri.example"), "{err}");
    assert!(
        err.contains("AUTHENTICATIONFAILED") || err.contains("Authentication failed"),
        "{err}"
    );
    assert!(!err.contains("not-the-password-xyz"), "{err}");
}

#[tokio::test]
async fn fetching_does_not_set_seen() {
    let dv = Dovecot::start(DovecotOptions::default());
    dv.append(&mail("unread", "x"));
    let mut mb = ImapMailbox::connect(&dv.imap_settings()).await.unwrap();
    let (_, got) = drain(&mut mb, None).await;
    assert_eq!(got.len(), 1);
    mb.logout().await;
    let flags = dv.flags("INBOX");
    assert_eq!(flags.len(), 1);
    assert!(!flags[0].1.iter().any(|f| f == "\\Seen"), "{flags:?}");
}

#[tokio::test]
async fn settle_with_move_puts_each_mail_in_its_folder() {
    let dv = Dovecot::start(DovecotOptions::default());
    let (a, b, c) = (mail("a", "1"), mail("b", "2"), mail("c", "3"));
    for m in [&a, &b, &c] {
        dv.append(m);
    }
    let mut mb = ImapMailbox::connect(&dv.imap_settings()).await.unwrap();
    assert!(mb.has_move());
    let (_, got) = drain(&mut mb, None).await;
    assert_eq!(got.len(), 3);
    mb.settle(1, Destination::Processed).await.unwrap();
    mb.settle(2, Destination::Review).await.unwrap();
    mb.settle(3, Destination::Ignored).await.unwrap();
    // Settling a UID that is already gone is a no-op, not an error.
    mb.settle(3, Destination::Ignored).await.unwrap();
    mb.logout().await;

    assert_eq!(dv.count("INBOX"), 0);
    assert_eq!(dv.list("Processed"), [a]);
    assert_eq!(dv.list("Review"), [b]);
    assert_eq!(dv.list("Ignored"), [c]);
}

#[tokio::test]
async fn settle_without_move_expunges_only_its_own_uid() {
    let dv = Dovecot::start(DovecotOptions {
        move_: false,
        ..Default::default()
    });
    let (ours, theirs) = (mail("ours", "1"), mail("someone flagged me", "2"));
    dv.append(&ours);
    dv.append(&theirs);
    // A person marked the neighbour deleted but has not expunged it.
    dv.add_flags("INBOX", 2, "\\Deleted");

    let mut mb = ImapMailbox::connect(&dv.imap_settings()).await.unwrap();
    assert!(!mb.has_move());
    let (_, got) = drain(&mut mb, None).await;
    assert_eq!(
        got.iter().map(|f| f.uid).collect::<Vec<_>>(),
        [1],
        "\\Deleted mails are skipped"
    );
    mb.settle(1, Destination::Processed).await.unwrap();
    mb.logout().await;

    assert_eq!(dv.list("Processed"), [ours]);
    let inbox = dv.flags("INBOX");
    assert_eq!(inbox.len(), 1, "only our uid was expunged: {inbox:?}");
    assert_eq!(inbox[0].0, 2);
    assert!(inbox[0].1.iter().any(|f| f == "\\Deleted"));
    assert_eq!(dv.list("INBOX"), [theirs]);
}

#[tokio::test]
async fn settle_many_moves_a_uid_set_and_spares_a_flagged_neighbour() {
    for move_ in [true, false] {
        let dv = Dovecot::start(DovecotOptions {
            move_,
            ..Default::default()
        });
        let (a, b, c) = (
            mail("a", "1"),
            mail("flagged by a person", "2"),
            mail("c", "3"),
        );
        dv.append(&a);
        dv.append(&b);
        dv.append(&c);
        dv.add_flags("INBOX", 2, "\\Deleted");
        let mut mb = ImapMailbox::connect(&dv.imap_settings()).await.unwrap();
        mb.settle_many(&[1, 3], Destination::Processed)
            .await
            .unwrap();
        mb.settle_many(&[], Destination::Review).await.unwrap();
        mb.logout().await;
        assert_eq!(dv.list("Processed").len(), 2, "move: {move_}");
        assert!(dv.list("Processed").contains(&a) && dv.list("Processed").contains(&c));
        assert_eq!(
            dv.list("INBOX"),
            vec![b.clone()],
            "the neighbour stays (move: {move_})"
        );
    }
}

#[tokio::test]
async fn settle_without_uidplus_copies_and_leaves_the_expunge() {
    let dv = Dovecot::start(DovecotOptions {
        move_: false,
        uidplus: false,
        ..Default::default()
    });
    let (ours, theirs) = (mail("ours", "1"), mail("theirs", "2"));
    dv.append(&ours);
    dv.append(&theirs);
    dv.add_flags("INBOX", 2, "\\Deleted");

    let mut mb = ImapMailbox::connect(&dv.imap_settings()).await.unwrap();
    mb.settle(1, Destination::Review).await.unwrap();
    // Both are \Deleted now and not expunged; neither is fetched again.
    let (_, got) = drain(&mut mb, None).await;
    assert!(got.is_empty(), "{got:?}");
    mb.logout().await;

    assert_eq!(dv.list("Review"), [ours]);
    let inbox = dv.flags("INBOX");
    assert_eq!(
        inbox.iter().map(|(u, _)| *u).collect::<Vec<_>>(),
        [1, 2],
        "nothing expunged"
    );
    assert!(
        inbox
            .iter()
            .all(|(_, f)| f.iter().any(|f| f == "\\Deleted")),
        "{inbox:?}"
    );
}

#[tokio::test]
async fn idle_wakes_within_a_second_of_new_mail() {
    let dv = Dovecot::start(DovecotOptions::default());
    let mut mb = ImapMailbox::connect(&dv.imap_settings()).await.unwrap();
    assert!(mb.has_idle());
    let (cursor, got) = drain(&mut mb, None).await;
    assert!(got.is_empty());

    // Nothing arrives: wait ends at `max`, the connection stays usable.
    let t = Instant::now();
    mb.wait(Duration::from_millis(700), &Notify::new())
        .await
        .expect("quiet wait");
    let quiet = t.elapsed();
    assert!(
        quiet >= Duration::from_millis(650) && quiet < Duration::from_secs(3),
        "{quiet:?}"
    );

    let waiter = tokio::spawn(async move {
        let r = mb.wait(Duration::from_secs(30), &Notify::new()).await;
        (mb, r, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = mail("while idling", "PLA 1111111");
    let sent = Instant::now();
    dv.append(&m);
    let (mut mb, r, woke) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("wait() did not return within 10 s of a delivery")
        .unwrap();
    r.expect("wait");
    let latency = woke.duration_since(sent);
    assert!(
        latency < Duration::from_millis(1500),
        "IDLE woke after {latency:?}"
    );

    let (_, got) = drain(&mut mb, Some(cursor)).await;
    assert_eq!(raws(&got), [m]);
    mb.logout().await;
}

#[tokio::test]
async fn a_wake_ends_idle_or_polling_and_the_next_search_sees_new_mail() {
    for idle in [true, false] {
        let dv = Dovecot::start(DovecotOptions {
            idle,
            ..Default::default()
        });
        let mut mb = ImapMailbox::connect(&dv.imap_settings()).await.unwrap();
        let (cursor, _) = drain(&mut mb, None).await;
        let wake = Arc::new(Notify::new());

        // A wake that came while the caller was busy ends the next wait at once.
        wake.notify_one();
        tokio::time::timeout(
            Duration::from_secs(5),
            mb.wait(Duration::from_secs(30), &wake),
        )
        .await
        .expect("a stored wake ends the wait")
        .expect("wait");

        // A wake during the wait ends it (as a push does right after a delivery,
        // before IDLE's own notice), and the next search sees the new mail.
        let m = mail("after a wake", "PLA 1111111");
        dv.append(&m);
        let w = wake.clone();
        let waker = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            w.notify_one();
        });
        tokio::time::timeout(
            Duration::from_secs(10),
            mb.wait(Duration::from_secs(30), &wake),
        )
        .await
        .unwrap_or_else(|_| panic!("a wake did not end the wait (idle: {idle})"))
        .expect("wait");
        waker.await.unwrap();
        let (_, got) = drain(&mut mb, Some(cursor)).await;
        assert_eq!(raws(&got), [m], "idle: {idle}");
        mb.logout().await;
    }
}

#[tokio::test]
async fn without_idle_wait_polls() {
    let dv = Dovecot::start(DovecotOptions {
        idle: false,
        ..Default::default()
    });
    let mut mb = ImapMailbox::connect(&dv.imap_settings()).await.unwrap();
    assert!(!mb.has_idle());
    let (cursor, _) = drain(&mut mb, None).await;
    let m = mail("polled", "x");
    dv.append(&m);
    let t = Instant::now();
    mb.wait(Duration::from_millis(400), &Notify::new())
        .await
        .expect("poll");
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "slept the poll interval"
    );
    let (_, got) = drain(&mut mb, Some(cursor)).await;
    assert_eq!(raws(&got), [m]);
    mb.logout().await;
}

#[tokio::test]
async fn restart_mid_wait_errors_and_a_new_connection_resumes_exactly_once() {
    let mut dv = Dovecot::start(DovecotOptions::default());
    let before: Vec<Vec<u8>> = (0..3).map(|i| mail(&format!("before {i}"), "x")).collect();
    for m in &before {
        dv.append(m);
    }
    let mut mb = ImapMailbox::connect(&dv.imap_settings()).await.unwrap();
    let (cursor, got) = drain(&mut mb, None).await;
    assert_eq!(raws(&got), before);
    let uidvalidity = cursor.uidvalidity;

    let waiter = tokio::spawn(async move {
        let r = mb.wait(Duration::from_secs(60), &Notify::new()).await;
        (mb, r)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    dv.stop();
    let (mut mb, r) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("wait() must notice the server going away")
        .unwrap();
    let err = format!("{:#}", r.unwrap_err());
    assert!(err.contains("lost while idling"), "{err}");
    // The dead connection refuses further work instead of hanging.
    let again = format!("{:#}", mb.fetch(Some(&cursor)).await.unwrap_err());
    assert!(again.contains("unusable"), "{again}");

    // Mail that arrives during the outage.
    let during: Vec<Vec<u8>> = (0..2).map(|i| mail(&format!("during {i}"), "x")).collect();
    dv.deliver_many(&during);
    dv.restart();

    let mut mb = ImapMailbox::connect(&dv.imap_settings())
        .await
        .expect("reconnect");
    let (cursor2, got) = drain(&mut mb, Some(cursor)).await;
    assert_eq!(cursor2.uidvalidity, uidvalidity);
    let mut got = raws(&got);
    let mut expected = during.clone();
    got.sort();
    expected.sort();
    assert_eq!(
        got, expected,
        "exactly the mails delivered during the outage"
    );
    mb.logout().await;
}

#[tokio::test]
async fn a_new_uidvalidity_means_a_full_rescan() {
    let mut dv = Dovecot::start(DovecotOptions::default());
    let mails: Vec<Vec<u8>> = (0..2).map(|i| mail(&format!("m{i}"), "x")).collect();
    for m in &mails {
        dv.append(m);
    }
    let mut mb = ImapMailbox::connect(&dv.imap_settings()).await.unwrap();
    let (cursor, got) = drain(&mut mb, None).await;
    assert_eq!(got.len(), 2);
    mb.logout().await;

    dv.recreate_inbox();
    let mut mb = ImapMailbox::connect(&dv.imap_settings()).await.unwrap();
    let (cursor2, got) = drain(&mut mb, Some(cursor)).await;
    assert_ne!(cursor2.uidvalidity, cursor.uidvalidity);
    let mut got = raws(&got);
    got.sort();
    let mut expected = mails;
    expected.sort();
    assert_eq!(got, expected, "every message again");
    mb.logout().await;
}

#[tokio::test]
async fn an_oversize_mail_is_listed_but_not_downloaded() {
    let dv = Dovecot::start(DovecotOptions::default());
    let small = mail("small", "x");
    let big = mail("big", &"y".repeat(5000));
    dv.append(&small);
    dv.append(&big);
    let mut s = dv.imap_settings();
    s.max_message_size = 1000;
    let mut mb = ImapMailbox::connect(&s).await.unwrap();
    let (_, got) = drain(&mut mb, None).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].raw.as_deref(), Some(&small[..]));
    assert_eq!(got[1].raw, None);
    assert_eq!(got[1].size, big.len() as u64);
    mb.logout().await;
}

#[tokio::test]
async fn xoauth2_login_with_a_token_from_the_token_endpoint() {
    let dv = Dovecot::start(DovecotOptions {
        xoauth2: true,
        ..Default::default()
    });
    dv.append(&mail("via oauth", "x"));
    let s = dv.imap_settings();
    assert!(matches!(s.auth, ImapAuth::XOAuth2(_)));
    let mut mb = ImapMailbox::connect(&s).await.expect("xoauth2 connect");
    let (_, got) = drain(&mut mb, None).await;
    assert_eq!(got.len(), 1);
    mb.logout().await;
    let oauth = dv.oauth().unwrap();
    assert_eq!(oauth.token_requests(), 1);
    assert!(oauth.introspections() >= 1, "dovecot checked the token");
    assert_eq!(
        oauth.state().last_scope.as_deref(),
        Some(support::oauth::SCOPE)
    );
}

#[tokio::test]
async fn xoauth2_with_a_rejected_token_fails_clearly_and_refreshes_next_time() {
    let dv = Dovecot::start(DovecotOptions {
        xoauth2: true,
        ..Default::default()
    });
    let oauth = dv.oauth().unwrap();
    let mut s = dv.imap_settings();
    let (url, id, secret, scope) = oauth.client();
    let tokens = Arc::new(TokenSource::new(url, id, secret, scope));
    s.auth = ImapAuth::XOAuth2(tokens.clone());

    let stale = tokens.token().await.unwrap();
    oauth.revoke_all();
    let err = format!("{:#}", ImapMailbox::connect(&s).await.unwrap_err());
    assert!(
        err.contains("xoauth2 login as cloud@distri.example"),
        "{err}"
    );
    assert!(
        err.contains("rejected") && err.contains("status"),
        "server's JSON status: {err}"
    );
    assert!(!err.contains(&stale), "token in error: {err}");
    assert!(!err.contains(support::oauth::CLIENT_SECRET), "{err}");

    // The rejected token was forgotten: the next connect asks for a new one.
    let mut mb = ImapMailbox::connect(&s)
        .await
        .expect("connect with a fresh token");
    assert_eq!(oauth.token_requests(), 2);
    mb.fetch(None).await.unwrap();
    mb.logout().await;
}

#[tokio::test]
async fn token_source_caches_refreshes_and_hides_secrets() {
    let oauth = OAuthServer::start("cloud@distri.example");
    let (url, id, secret, scope) = oauth.client();
    let ts = TokenSource::new(url.clone(), id.clone(), secret.clone(), scope.clone());

    let t1 = ts.token().await.unwrap();
    assert_eq!(ts.token().await.unwrap(), t1, "cached");
    assert_eq!(oauth.token_requests(), 1);

    ts.invalidate();
    let t2 = ts.token().await.unwrap();
    assert_ne!(t2, t1);
    assert_eq!(oauth.token_requests(), 2);

    // A one-second token is refreshed a tenth of its life early.
    oauth.set_expires_in(1);
    ts.invalidate();
    let t3 = ts.token().await.unwrap();
    assert_eq!(ts.token().await.unwrap(), t3);
    tokio::time::sleep(Duration::from_millis(950)).await;
    let t4 = ts.token().await.unwrap();
    assert_ne!(t4, t3, "refreshed before expiry");
    assert_eq!(oauth.token_requests(), 4);

    // Concurrent callers share one refresh.
    oauth.set_expires_in(3600);
    ts.invalidate();
    let (a, b, c) = tokio::join!(ts.token(), ts.token(), ts.token());
    assert!(a.is_ok() && a.as_ref().ok() == b.as_ref().ok() && b.as_ref().ok() == c.as_ref().ok());
    assert_eq!(oauth.token_requests(), 5);

    let debug = format!("{ts:?}");
    assert!(!debug.contains(&secret) && !debug.contains(&t4), "{debug}");

    let bad = TokenSource::new(url, id, "wrong-secret-123".into(), scope);
    let err = format!("{:#}", bad.token().await.unwrap_err());
    assert!(
        err.contains("401") && err.contains("invalid_client"),
        "{err}"
    );
    assert!(!err.contains("wrong-secret-123"), "{err}");
}

/// Exchange ends sessions with `* BYE ... AccessTokenExpired`; Dovecot can't be
/// made to say that, so a scripted server on loopback does, mid-IDLE.
#[tokio::test]
async fn access_token_expired_bye_is_reported_as_such() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        w.write_all(b"* OK The Microsoft Exchange IMAP4 service is ready.\r\n")
            .await
            .unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).await.unwrap() == 0 {
                return;
            }
            let (tag, cmd) = line.trim_end().split_once(' ').unwrap();
            let verb = cmd.split(' ').next().unwrap().to_ascii_uppercase();
            let reply = match verb.as_str() {
                "LOGIN" => format!("{tag} OK LOGIN completed.\r\n"),
                "CAPABILITY" => format!("* CAPABILITY IMAP4 IMAP4rev1 IDLE MOVE UIDPLUS\r\n{tag} OK CAPABILITY completed.\r\n"),
                "LIST" => {
                    let name = cmd.rsplit(' ').next().unwrap();
                    format!("* LIST (\\HasNoChildren) \"/\" {name}\r\n{tag} OK LIST completed.\r\n")
                }
                "SELECT" => format!(
                    "* 0 EXISTS\r\n* OK [UIDVALIDITY 14] UIDVALIDITY value\r\n* OK [UIDNEXT 1] next\r\n{tag} OK [READ-WRITE] SELECT completed.\r\n"
                ),
                "IDLE" => {
                    w.write_all(b"+ IDLE accepted, awaiting DONE command.\r\n").await.unwrap();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    w.write_all(b"* BYE Session invalidated - AccessTokenExpired\r\n").await.unwrap();
                    return;
                }
                _ => format!("{tag} BAD unexpected\r\n"),
            };
            w.write_all(reply.as_bytes()).await.unwrap();
        }
    });
    let dv_like = mpnd::mailbox::imap::ImapSettings {
        host: "127.0.0.1".into(),
        port,
        tls: TlsMode::None,
        username: "cloud@distri.example".into(),
        auth: ImapAuth::Password("pw".into()),
        inbox: "INBOX".into(),
        processed: "Processed".into(),
        review: "Review".into(),
        ignored: "Ignored".into(),
        ca_file: None,
        command_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
        max_message_size: 1 << 20,
        batch_size: 10,
        batch_bytes: mpnd::mailbox::imap::BATCH_BYTES,
    };
    let mut mb = ImapMailbox::connect(&dv_like)
        .await
        .expect("connect to the scripted server");
    let err = format!(
        "{:#}",
        mb.wait(Duration::from_secs(10), &Notify::new())
            .await
            .unwrap_err()
    );
    assert!(err.contains("access token expired"), "{err}");
    server.await.unwrap();
}

#[tokio::test]
async fn smtp_sink_records_fails_on_request_and_survives_a_restart() {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let mut sink = SmtpSink::start();
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(sink.host())
        .port(sink.port())
        .build();
    let message = |subject: &str| {
        Message::builder()
            .from("Distri Cloud <cloud@distri.example>".parse().unwrap())
            .to("partner@reseller.example".parse().unwrap())
            .subject(subject)
            // A line starting with a dot is dot-stuffed on the wire.
            .body(String::from("Hello\r\n.hidden dot line\r\nBye\r\n"))
            .unwrap()
    };

    transport.send(message("first")).await.expect("send");
    let got = sink.wait_for(1, Duration::from_secs(5));
    assert_eq!(got[0].mail_from, "cloud@distri.example");
    assert_eq!(got[0].rcpt_to, ["partner@reseller.example"]);
    let text = got[0].text();
    assert!(
        text.contains("Subject: first") && text.contains("\r\n.hidden dot line\r\n"),
        "{text}"
    );

    sink.fail_next(1, "451 4.3.0 try again later");
    let err = transport.send(message("deferred")).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    sink.fail_next(1, "550 5.1.1 no such user");
    let err = transport.send(message("rejected")).await.unwrap_err();
    assert!(err.is_permanent(), "{err}");

    sink.stop();
    assert!(transport.send(message("during outage")).await.is_err());
    sink.restart();
    transport
        .send(message("after restart"))
        .await
        .expect("send after restart");
    let got = sink.wait_for(2, Duration::from_secs(5));
    assert_eq!(got.len(), 2, "failed transactions are not recorded");
    assert!(got[1].text().contains("Subject: after restart"));
}

#[tokio::test]
async fn smtp_sink_auth_plain_and_login() {
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let sink = SmtpSink::start_with(SmtpOptions {
        auth: Some(("mailer".into(), "s3cret".into())),
    });
    let message = || {
        Message::builder()
            .from("cloud@distri.example".parse().unwrap())
            .to("partner@reseller.example".parse().unwrap())
            .subject("auth")
            .body(String::from("x"))
            .unwrap()
    };
    for mech in [Mechanism::Plain, Mechanism::Login] {
        let t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(sink.host())
            .port(sink.port())
            .credentials(Credentials::new("mailer".into(), "s3cret".into()))
            .authentication(vec![mech])
            .build();
        t.send(message())
            .await
            .unwrap_or_else(|e| panic!("{mech:?}: {e}"));
    }
    let bad = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(sink.host())
        .port(sink.port())
        .credentials(Credentials::new("mailer".into(), "wrong".into()))
        .build();
    assert!(bad.send(message()).await.is_err());
    let none = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(sink.host())
        .port(sink.port())
        .build();
    assert!(
        none.send(message()).await.is_err(),
        "MAIL without AUTH is refused"
    );
    let got = sink.messages();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|m| m.auth_user.as_deref() == Some("mailer")));
}

#[tokio::test]
async fn a_large_backlog_is_fetched_exactly_once_in_uid_order() {
    let dv = Dovecot::start(DovecotOptions::default());
    let mails: Vec<Vec<u8>> = (0..2000)
        .map(|i| mail(&format!("bulk {i}"), "PLA 5555555"))
        .collect();
    assert_eq!(dv.deliver_many(&mails), 2000);
    let mut s = dv.imap_settings();
    s.batch_size = 300;
    let mut mb = ImapMailbox::connect(&s).await.unwrap();
    let (cursor, got) = drain(&mut mb, None).await;
    let uids: Vec<u32> = got.iter().map(|f| f.uid).collect();
    assert_eq!(
        uids,
        (1..=2000).collect::<Vec<u32>>(),
        "every UID once, ascending"
    );
    assert_eq!(cursor.next_uid, 2001);
    let mut got = raws(&got);
    got.sort();
    let mut expected = mails;
    expected.sort();
    assert_eq!(got, expected);
    mb.logout().await;
}

#[tokio::test]
async fn missing_folders_are_created_with_non_ascii_names() {
    let dv = Dovecot::start(DovecotOptions::default());
    let m = mail("to review", "x");
    dv.append(&m);
    let mut s = dv.imap_settings();
    s.processed = "Archiv/MPN erledigt".into();
    s.review = "Prüfung".into();
    let mut mb = ImapMailbox::connect(&s)
        .await
        .expect("connect creates the folders");
    mb.settle(1, Destination::Review).await.unwrap();
    mb.logout().await;
    // A second connect finds them and does not fail on CREATE.
    ImapMailbox::connect(&s)
        .await
        .expect("reconnect")
        .logout()
        .await;
    assert_eq!(dv.count("Prüfung"), 1);
    assert_eq!(dv.count("Archiv/MPN erledigt"), 0);
    assert_eq!(dv.count("INBOX"), 0);
}

#[tokio::test]
async fn a_silent_server_times_out_instead_of_hanging() {
    // Accepts TCP and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let dv = Dovecot::start(DovecotOptions::default());
    let mut s = dv.imap_settings();
    s.port = port;
    s.command_timeout = Duration::from_millis(500);
    let t = Instant::now();
    let err = format!("{:#}", ImapMailbox::connect(&s).await.unwrap_err());
    assert!(err.contains("no greeting within"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[tokio::test]
async fn a_crashed_server_fails_the_next_command_promptly() {
    let mut dv = Dovecot::start(DovecotOptions::default());
    dv.append(&mail("x", "y"));
    let mut mb = ImapMailbox::connect(&dv.imap_settings()).await.unwrap();
    dv.kill();
    let t = Instant::now();
    let err = format!("{:#}", mb.fetch(None).await.unwrap_err());
    assert!(err.contains("lost while searching the inbox"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let err = format!(
        "{:#}",
        mb.settle(1, Destination::Processed).await.unwrap_err()
    );
    assert!(err.contains("unusable"), "{err}");
}
