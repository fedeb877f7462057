//! Test harness shared by every integration-test binary: real servers on
//! 127.0.0.1 that tests start, break and restart.
//!
//! - [`Dovecot`]: a private Dovecot IMAP server (plain, TLS, no IDLE, no MOVE,
//!   XOAUTH2) with helpers to deliver mail and look into folders.
//! - [`SmtpSink`]: an SMTP listener that records what it accepts, can fail the next
//!   transactions on purpose, and can be stopped and restarted on the same port.
//! - [`OAuthServer`]: an OAuth2 token endpoint plus the token introspection that
//!   Dovecot's XOAUTH2 login asks.
//!
//! Use it from a test binary (`tests/daemon.rs`, say) like this:
//!
//! ```text
//! mod support;
//! use support::{dovecot, mail, Dovecot, DovecotOptions, SmtpSink};
//!
//! #[tokio::test]
//! async fn applies_a_new_id() {
//!     let dv = Dovecot::start(DovecotOptions::default()); // or { tls: true, .. }
//!     dv.append(&mail("Neue PLA", "Unsere neue PLA: 1234567"));
//!     let smtp = SmtpSink::start();
//!     // [mailbox] host = dv.host(), port = dv.port(), tls = "none",
//!     //   username = dovecot::USER, password = dovecot::PASSWORD
//!     //   (with tls: true: tls = "implicit", ca_file = dv.ca_file())
//!     // [smtp] host = smtp.host(), port = smtp.port(), tls = "none"
//!     // ... run the daemon until it is done ...
//!     support::wait_until("mail settled", Duration::from_secs(10), || dv.count("Processed") == 1);
//!     let sent = smtp.wait_for(1, Duration::from_secs(10));
//! }
//! ```
//!
//! Every
//! server runs on its own thread (or process), so tests may block on the harness
//! from any runtime. Every wait has a timeout and panics with what it saw; every
//! server is stopped on Drop. Dovecot and openssl must be installed
//! (`scripts/test-deps.sh`): a missing binary is a failure, never a skip.

// Each test binary uses a different part of the harness.
#![allow(dead_code, unused_imports)]

pub mod dovecot;
pub mod oauth;
pub mod smtp;
pub mod world;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use dovecot::{Dovecot, DovecotOptions};
pub use oauth::OAuthServer;
pub use smtp::{Received, SmtpOptions, SmtpSink};

/// A port on 127.0.0.1 that was free a moment ago (the OS picked it).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 to find a free port");
    l.local_addr()
        .expect("local_addr of a bound listener")
        .port()
}

/// Poll `cond` every 20 ms until it is true; panic naming `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A small RFC 5322 mail with a unique Message-ID, CRLF line ends (as on the wire).
pub fn mail(subject: &str, body: &str) -> Vec<u8> {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let id = format!("<test-{}-{n}@reseller.example>", std::process::id());
    format!(
        "From: Reseller <partner@reseller.example>\r\n\
         To: cloud@distri.example\r\n\
         Subject: {subject}\r\n\
         Message-ID: {id}\r\n\
         Date: Mon, 3 Nov 2025 10:00:00 +0100\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         {body}\r\n"
    )
    .into_bytes()
}

/// A server loop on its own thread with its own tokio runtime, so it keeps
/// answering while a test blocks its own thread or runtime. Stopping drops the
/// runtime, which closes every connection the server had open (an outage).
pub struct ServerThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    /// Run `serve(listener, stop)` on a new thread; `listener` is already bound, so
    /// the port is known and taken before this returns.
    pub fn spawn<F, Fut>(name: &str, listener: TcpListener, serve: F) -> ServerThread
    where
        F: FnOnce(tokio::net::TcpListener, tokio::sync::oneshot::Receiver<()>) -> Fut
            + Send
            + 'static,
        Fut: Future<Output = ()>,
    {
        listener
            .set_nonblocking(true)
            .expect("set_nonblocking on a test listener");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building a test server runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("registering a test listener with tokio");
                    serve(listener, rx).await;
                });
                // Dropping the runtime here cancels every connection task.
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("spawning a test server thread");
        ServerThread {
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// Stop serving and wait (at most 5 s) for the thread to end.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let start = Instant::now();
            while !t.is_finished() {
                if start.elapsed() > Duration::from_secs(5) {
                    panic!("test server thread did not stop within 5 s");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = t.join();
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Don't turn a test failure into an abort by panicking again.
            if let Some(tx) = self.stop.take() {
                let _ = tx.send(());
            }
            return;
        }
        self.stop();
    }
}

/// Bind `addr` again after a stop. The port was ours a moment ago; retry briefly
/// in case the OS hasn't released it yet.
pub fn rebind(addr: SocketAddr) -> TcpListener {
    let start = Instant::now();
    loop {
        match TcpListener::bind(addr) {
            Ok(l) => return l,
            Err(e) if start.elapsed() < Duration::from_secs(5) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("rebinding {addr}: {e}"),
        }
    }
}
