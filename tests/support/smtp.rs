//! A real SMTP listener for tests, on 127.0.0.1: greeting, EHLO/HELO, optional
//! AUTH PLAIN/LOGIN, MAIL FROM, RCPT TO, DATA (with dot-unstuffing), RSET, NOOP,
//! QUIT. Each accepted message is recorded with its envelope and raw bytes.
//!
//! With [`SmtpSink::start_secure`] it also speaks TLS (rustls, a throwaway CA and a
//! leaf for localhost/127.0.0.1, see [`SmtpSink::ca_file`]): implicit TLS, or
//! STARTTLS, in which case MAIL and AUTH are refused before TLS as Exchange and
//! Gmail do. It can offer AUTH XOAUTH2 and check each bearer token with an
//! [`OAuthServer`](super::OAuthServer)'s introspection endpoint; a refused token is
//! answered like Exchange/Gmail: a `334` challenge carrying a base64 JSON status,
//! and after the client's empty line `535 5.7.3 Authentication unsuccessful`.
//!
//! It runs on its own thread and runtime. [`SmtpSink::stop`] closes the listener
//! and every open connection (an outage); [`SmtpSink::restart`] listens on the
//! same port again with the recorded messages kept. [`SmtpSink::fail_next`] makes
//! the next N transactions end with a chosen 4xx/5xx reply after DATA, where a
//! real server defers or rejects a message. Without TLS clients talk plaintext to
//! loopback.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::{rebind, ServerThread};

/// The largest message accepted (also advertised as SIZE).
const MAX_SIZE: usize = 32 * 1024 * 1024;
/// The longest command line accepted (RFC 5321 says 512; be lenient).
const MAX_LINE: usize = 4096;
/// A client silent this long is dropped, so a stuck test can't hold a task forever.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// One accepted message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The EHLO/HELO name the client gave.
    pub helo: String,
    /// The user that authenticated, if any.
    pub auth_user: Option<String>,
    /// Whether the transaction ran inside TLS (implicit or after STARTTLS).
    pub tls: bool,
    /// The reverse-path without brackets (empty for a bounce).
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The message as sent, dot-unstuffed, without the final `.` line.
    pub data: Vec<u8>,
    /// When the final `.` was accepted.
    pub at: std::time::Instant,
}

impl Received {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

#[derive(Clone, Debug, Default)]
pub struct SmtpOptions {
    /// Require AUTH PLAIN or LOGIN with this user and password before MAIL.
    pub auth: Option<(String, String)>,
}

/// How the listener uses TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SinkTls {
    /// Plaintext only; STARTTLS is answered 454.
    #[default]
    None,
    /// TLS from the first byte (SMTPS, port 465 style).
    Implicit,
    /// Plaintext greeting, STARTTLS offered and required before AUTH and MAIL.
    Starttls,
}

/// TLS and XOAUTH2 for [`SmtpSink::start_secure`] (kept apart from [`SmtpOptions`]
/// so its existing struct literals stay valid).
#[derive(Clone, Debug, Default)]
pub struct SmtpSecurity {
    pub tls: SinkTls,
    /// Offer AUTH XOAUTH2 and accept a bearer token only when this RFC 7662
    /// introspection URL (an `OAuthServer`'s) calls it active for the same user.
    pub xoauth2_introspection: Option<String>,
}

/// Everything a session needs to know.
#[derive(Clone)]
struct Settings {
    opts: SmtpOptions,
    security: SmtpSecurity,
    acceptor: Option<TlsAcceptor>,
}

#[derive(Default)]
struct SinkState {
    messages: Vec<Received>,
    /// Replies for the next transactions, used up one per DATA.
    failures: VecDeque<String>,
    connections: u64,
}

type Shared = Arc<Mutex<SinkState>>;

pub struct SmtpSink {
    pub addr: SocketAddr,
    settings: Settings,
    /// The throwaway CA and leaf certificate, when TLS is on.
    tls_dir: Option<tempfile::TempDir>,
    state: Shared,
    server: Option<ServerThread>,
}

impl SmtpSink {
    /// Listen on a free port, without AUTH.
    pub fn start() -> SmtpSink {
        SmtpSink::start_with(SmtpOptions::default())
    }

    pub fn start_with(opts: SmtpOptions) -> SmtpSink {
        SmtpSink::start_secure(opts, SmtpSecurity::default())
    }

    /// Listen with TLS and/or XOAUTH2 as `security` says.
    pub fn start_secure(opts: SmtpOptions, security: SmtpSecurity) -> SmtpSink {
        let (tls_dir, acceptor) = if security.tls == SinkTls::None {
            (None, None)
        } else {
            let dir = tempfile::Builder::new()
                .prefix("mpnd-smtp-tls-")
                .tempdir()
                .expect("creating a temp dir for the smtp certificates");
            super::dovecot::make_certs(dir.path());
            let acceptor = tls_acceptor(dir.path());
            (Some(dir), Some(acceptor))
        };
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the smtp test listener");
        let addr = listener.local_addr().expect("local_addr");
        let mut sink = SmtpSink {
            addr,
            settings: Settings {
                opts,
                security,
                acceptor,
            },
            tls_dir,
            state: Arc::default(),
            server: None,
        };
        sink.serve(listener);
        sink
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The name the certificate is for; use it as the client's host with TLS.
    pub fn tls_host(&self) -> &'static str {
        "localhost"
    }

    /// The throwaway CA that signed the listener's certificate (for `ca_file`).
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls_dir.as_ref().map(|d| d.path().join("ca.crt"))
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Everything accepted so far, in order.
    pub fn messages(&self) -> Vec<Received> {
        self.lock().messages.clone()
    }

    /// Wait (polling) until at least `n` messages were accepted; panics after `limit`.
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            if start.elapsed() > limit {
                panic!("smtp sink: {} of {n} messages after {limit:?}", got.len());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> u64 {
        self.lock().connections
    }

    /// Answer the next `n` transactions with `reply` (e.g. `451 4.3.0 try again
    /// later`, `550 5.1.1 no such user`) at the end of DATA, and don't record them.
    pub fn fail_next(&self, n: usize, reply: &str) {
        let code = reply.get(..3).and_then(|c| c.parse::<u16>().ok());
        assert!(
            matches!(code, Some(400..=599)),
            "fail_next needs a 4xx or 5xx reply, got {reply:?}"
        );
        let mut s = self.lock();
        for _ in 0..n {
            s.failures.push_back(reply.to_string());
        }
    }

    /// Close the listener and every open connection. Recorded messages stay.
    pub fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.stop();
        }
    }

    /// Listen on the same port again.
    pub fn restart(&mut self) {
        self.stop();
        let listener = rebind(self.addr);
        self.serve(listener);
    }

    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    fn serve(&mut self, listener: TcpListener) {
        let state = self.state.clone();
        let settings = self.settings.clone();
        self.server = Some(ServerThread::spawn(
            "smtp-sink",
            listener,
            move |listener, mut stop| async move {
                loop {
                    tokio::select! {
                        _ = &mut stop => return,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            lock(&state).connections += 1;
                            let state = state.clone();
                            let settings = settings.clone();
                            tokio::spawn(async move {
                                // A client error ends only its own connection.
                                let _ = session(stream, state, settings).await;
                            });
                        }
                    }
                }
            },
        ));
    }

    fn lock(&self) -> MutexGuard<'_, SinkState> {
        lock(&self.state)
    }
}

fn lock(state: &Shared) -> MutexGuard<'_, SinkState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a connection is in the SMTP dialogue.
#[derive(PartialEq, Eq)]
enum Phase {
    /// Before EHLO/HELO.
    Greeted,
    /// After EHLO/HELO, no transaction open.
    Ready,
    /// MAIL accepted, waiting for RCPT.
    Mail,
    /// At least one RCPT accepted.
    Rcpt,
}

/// The leaf certificate and key `make_certs` wrote, as a rustls acceptor.
fn tls_acceptor(dir: &std::path::Path) -> TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(dir.join("server.crt"))
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .expect("reading the test server certificate");
    let key =
        PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("reading the test server key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("rustls protocol versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("building the test server's TLS config");
    TlsAcceptor::from(Arc::new(config))
}

async fn session(tcp: TcpStream, state: Shared, settings: Settings) -> std::io::Result<()> {
    let _ = tcp.set_nodelay(true);
    let handshake = |acceptor: &TlsAcceptor, tcp: TcpStream| {
        let accept = acceptor.accept(tcp);
        async move {
            tokio::time::timeout(IDLE_LIMIT, accept)
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake"))?
        }
    };
    match (&settings.acceptor, settings.security.tls) {
        (Some(acceptor), SinkTls::Implicit) => {
            let tls = handshake(acceptor, tcp).await?;
            dialogue(tls, &state, &settings, true).await?;
        }
        _ => {
            if let Some(tcp) = dialogue(tcp, &state, &settings, false).await? {
                let acceptor = settings
                    .acceptor
                    .as_ref()
                    .expect("STARTTLS needs a certificate");
                let tls = handshake(acceptor, tcp).await?;
                // RFC 3207: after the handshake the client starts over with EHLO.
                dialogue(tls, &state, &settings, true).await?;
            }
        }
    }
    Ok(())
}

/// The SMTP dialogue on one stream; `Some(stream)` when the client asked for
/// STARTTLS and is to be handed to the TLS handshake. `tls` says whether `stream`
/// is already encrypted; the greeting is sent only on a fresh connection.
async fn dialogue<S>(
    stream: S,
    state: &Shared,
    settings: &Settings,
    tls: bool,
) -> std::io::Result<Option<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let opts = &settings.opts;
    let security = &settings.security;
    let (read, mut write) = tokio::io::split(stream);
    let mut reader = BufReader::new(read);
    let after_starttls = tls && security.tls == SinkTls::Starttls;
    if !after_starttls {
        send(&mut write, "220 mpnd-test-smtp ESMTP ready").await?;
    }
    // With STARTTLS offered, nothing but EHLO/STARTTLS/QUIT before TLS.
    let tls_missing = security.tls == SinkTls::Starttls && !tls;
    let auth_offered = opts.auth.is_some() || security.xoauth2_introspection.is_some();

    let mut phase = Phase::Greeted;
    let mut helo = String::new();
    let mut auth_user: Option<String> = None;
    let mut mail_from = String::new();
    let mut rcpt_to: Vec<String> = Vec::new();

    loop {
        let Some(line) = read_line(&mut reader).await? else {
            return Ok(None);
        };
        let Ok(line) = String::from_utf8(line) else {
            send(&mut write, "500 5.5.2 command is not UTF-8").await?;
            continue;
        };
        let (verb, arg) = match line.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_string()),
            None => (line.to_ascii_uppercase(), String::new()),
        };
        let reply: String = match verb.as_str() {
            "EHLO" | "HELO" if arg.is_empty() => "501 5.5.4 a domain is required".into(),
            "EHLO" => {
                helo = arg;
                phase = Phase::Ready;
                mail_from.clear();
                rcpt_to.clear();
                let mut r = String::from("250-mpnd-test-smtp\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n");
                r.push_str(&format!("250-SIZE {MAX_SIZE}\r\n"));
                if tls_missing {
                    r.push_str("250-STARTTLS\r\n");
                } else if auth_offered {
                    let mut mechs = Vec::new();
                    if opts.auth.is_some() {
                        mechs.extend(["PLAIN", "LOGIN"]);
                    }
                    if security.xoauth2_introspection.is_some() {
                        mechs.push("XOAUTH2");
                    }
                    r.push_str(&format!("250-AUTH {}\r\n", mechs.join(" ")));
                }
                r.push_str("250 ENHANCEDSTATUSCODES");
                r
            }
            "HELO" => {
                helo = arg;
                phase = Phase::Ready;
                mail_from.clear();
                rcpt_to.clear();
                "250 mpnd-test-smtp".into()
            }
            "STARTTLS" if tls => "503 5.5.1 TLS already active".into(),
            "STARTTLS" if security.tls != SinkTls::Starttls => "454 4.7.0 TLS not available".into(),
            "STARTTLS" if phase == Phase::Greeted => "503 5.5.1 EHLO first".into(),
            "STARTTLS" => {
                send(&mut write, "220 2.0.0 ready to start TLS").await?;
                if !reader.buffer().is_empty() {
                    // Plaintext pipelined after STARTTLS (a command-injection
                    // attempt): drop the connection as real servers do.
                    return Ok(None);
                }
                return Ok(Some(reader.into_inner().unsplit(write)));
            }
            "AUTH" if !auth_offered => "502 5.5.1 AUTH not offered".into(),
            "AUTH" if phase == Phase::Greeted => "503 5.5.1 EHLO first".into(),
            "AUTH" if tls_missing => "530 5.7.0 Must issue a STARTTLS command first".into(),
            "AUTH" if auth_user.is_some() => "503 5.5.1 already authenticated".into(),
            "AUTH" if is_xoauth2(&arg) => match &security.xoauth2_introspection {
                None => "504 5.5.4 mechanism not supported".into(),
                Some(url) => match xoauth2(&arg, url, &mut reader, &mut write).await? {
                    Ok(user) => {
                        auth_user = Some(user);
                        "235 2.7.0 Authentication successful".into()
                    }
                    Err(reply) => reply,
                },
            },
            "AUTH" => match &opts.auth {
                None => "504 5.5.4 mechanism not supported".into(),
                Some((user, pass)) => match authenticate(&arg, &mut reader, &mut write).await? {
                    Some((u, p)) if &u == user && &p == pass => {
                        auth_user = Some(u);
                        "235 2.7.0 authentication successful".into()
                    }
                    Some(_) => "535 5.7.8 authentication credentials invalid".into(),
                    None => "501 5.5.2 cannot decode the AUTH response".into(),
                },
            },
            "MAIL" => {
                if phase == Phase::Greeted {
                    "503 5.5.1 EHLO first".into()
                } else if tls_missing {
                    "530 5.7.0 Must issue a STARTTLS command first".into()
                } else if phase != Phase::Ready {
                    "503 5.5.1 a transaction is already open".into()
                } else if auth_offered && auth_user.is_none() {
                    "530 5.7.0 authentication required".into()
                } else {
                    match path(&arg, "FROM:") {
                        Some(from) => {
                            mail_from = from;
                            phase = Phase::Mail;
                            "250 2.1.0 ok".into()
                        }
                        None => "501 5.5.4 syntax: MAIL FROM:<address>".into(),
                    }
                }
            }
            "RCPT" => {
                if phase != Phase::Mail && phase != Phase::Rcpt {
                    "503 5.5.1 MAIL first".into()
                } else {
                    match path(&arg, "TO:") {
                        Some(to) if !to.is_empty() => {
                            rcpt_to.push(to);
                            phase = Phase::Rcpt;
                            "250 2.1.5 ok".into()
                        }
                        _ => "501 5.5.4 syntax: RCPT TO:<address>".into(),
                    }
                }
            }
            "DATA" => {
                if phase != Phase::Rcpt {
                    "503 5.5.1 RCPT first".into()
                } else {
                    send(&mut write, "354 end data with <CR><LF>.<CR><LF>").await?;
                    let data = read_data(&mut reader).await?;
                    phase = Phase::Ready;
                    let envelope_from = std::mem::take(&mut mail_from);
                    let envelope_to = std::mem::take(&mut rcpt_to);
                    match data {
                        None => "552 5.3.4 message too big".into(),
                        Some(data) => {
                            let mut s = lock(state);
                            if let Some(failure) = s.failures.pop_front() {
                                failure
                            } else {
                                s.messages.push(Received {
                                    helo: helo.clone(),
                                    auth_user: auth_user.clone(),
                                    tls,
                                    mail_from: envelope_from,
                                    rcpt_to: envelope_to,
                                    data,
                                    at: std::time::Instant::now(),
                                });
                                format!("250 2.0.0 ok: queued as {}", s.messages.len())
                            }
                        }
                    }
                }
            }
            "RSET" => {
                if phase != Phase::Greeted {
                    phase = Phase::Ready;
                }
                mail_from.clear();
                rcpt_to.clear();
                "250 2.0.0 ok".into()
            }
            "NOOP" => "250 2.0.0 ok".into(),
            "VRFY" => "252 2.5.0 cannot verify, but will accept".into(),
            "QUIT" => {
                send(&mut write, "221 2.0.0 bye").await?;
                return Ok(None);
            }
            _ => "500 5.5.2 command not recognised".into(),
        };
        send(&mut write, &reply).await?;
    }
}

/// One reply line (or a multi-line reply joined with CRLF), in one write: a reply
/// split over two writes meets Nagle and the client's delayed ACK on loopback,
/// ~40 ms per command. Flushed, so a TLS record goes out now.
async fn send<W: AsyncWrite + Unpin>(w: &mut W, reply: &str) -> std::io::Result<()> {
    w.write_all(format!("{reply}\r\n").as_bytes()).await?;
    w.flush().await
}

fn is_xoauth2(arg: &str) -> bool {
    arg.split(' ')
        .next()
        .is_some_and(|m| m.eq_ignore_ascii_case("XOAUTH2"))
}

/// AUTH XOAUTH2 (`user=U^Aauth=Bearer T^A^A`): `Ok(user)` when the introspection
/// endpoint calls the token active for that user; otherwise the final reply, after
/// the failure dialogue Exchange Online and Gmail use (a `334` with a base64 JSON
/// status, the client's empty line, then 535).
async fn xoauth2<R, W>(
    arg: &str,
    introspection: &str,
    r: &mut R,
    w: &mut W,
) -> std::io::Result<Result<String, String>>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let blob = match arg.split_once(' ') {
        Some((_, initial)) => b64_decode(initial.trim()),
        None => ask(r, w, "").await?,
    };
    let parsed = blob.and_then(|b| {
        let text = String::from_utf8(b).ok()?;
        let mut user = None;
        let mut token = None;
        for field in text.split('\x01') {
            if let Some(u) = field.strip_prefix("user=") {
                user = Some(u.to_string());
            } else if let Some(t) = field.strip_prefix("auth=Bearer ") {
                token = Some(t.to_string());
            }
        }
        Some((user?, token?))
    });
    let Some((user, token)) = parsed else {
        return Ok(Err("501 5.5.2 cannot decode the XOAUTH2 response".into()));
    };
    let owner = match introspect(introspection, &token).await {
        Ok(owner) => owner,
        Err(e) => {
            return Ok(Err(format!(
                "454 4.7.0 temporary authentication failure: {e}"
            )))
        }
    };
    if owner.as_deref() == Some(user.as_str()) {
        return Ok(Ok(user));
    }
    let status =
        br#"{"status":"401","schemes":"bearer","scope":"https://outlook.office365.com/.default"}"#;
    send(w, &format!("334 {}", b64_encode(status))).await?;
    // The client answers the challenge with an empty line (or `*` to cancel).
    read_line(r).await?;
    Ok(Err("535 5.7.3 Authentication unsuccessful".into()))
}

/// The user an RFC 7662 endpoint says `token` belongs to, `None` when inactive.
async fn introspect(url: &str, token: &str) -> Result<Option<String>, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let reply: serde_json::Value = client
        .post(url)
        .form(&[("token", token)])
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    Ok((reply["active"] == true)
        .then(|| reply["username"].as_str().map(str::to_string))
        .flatten())
}

/// One line without its CRLF (or bare LF); `None` at EOF or after IDLE_LIMIT.
/// Over-long lines are cut: the command is then answered as unrecognised.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    let n = match tokio::time::timeout(IDLE_LIMIT, r.read_until(b'\n', &mut buf)).await {
        Ok(n) => n?,
        Err(_) => return Ok(None),
    };
    if n == 0 {
        return Ok(None);
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    buf.truncate(MAX_LINE);
    Ok(Some(buf))
}

/// The DATA lines up to the lone `.`, dot-unstuffed (RFC 5321 §4.5.2), CRLF kept.
/// `None` when the message was larger than MAX_SIZE (it is read to the end anyway,
/// so the dialogue stays in step).
async fn read_data<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut data = Vec::new();
    let mut too_big = false;
    loop {
        let mut line = Vec::new();
        let n = tokio::time::timeout(IDLE_LIMIT, r.read_until(b'\n', &mut line))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "client silent in DATA")
            })??;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "EOF in DATA",
            ));
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok((!too_big).then_some(data));
        }
        let content = if line.starts_with(b"..") {
            &line[1..]
        } else {
            &line[..]
        };
        if data.len() + content.len() > MAX_SIZE {
            too_big = true;
        } else {
            data.extend_from_slice(content);
        }
    }
}

/// The address in `FROM:<a@b> SIZE=..` / `TO:<a@b>`.
fn path(arg: &str, prefix: &str) -> Option<String> {
    let rest = arg
        .get(..prefix.len())
        .filter(|p| p.eq_ignore_ascii_case(prefix))?;
    let rest = arg[rest.len()..].trim_start();
    let inner = rest.strip_prefix('<')?;
    let end = inner.find('>')?;
    Some(inner[..end].to_string())
}

/// Run AUTH PLAIN or LOGIN; `Some((user, password))` when the client's answers decode.
async fn authenticate<R, W>(
    arg: &str,
    r: &mut R,
    w: &mut W,
) -> std::io::Result<Option<(String, String)>>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let (mech, initial) = match arg.split_once(' ') {
        Some((m, i)) => (m.to_ascii_uppercase(), Some(i.trim().to_string())),
        None => (arg.to_ascii_uppercase(), None),
    };
    match mech.as_str() {
        "PLAIN" => {
            let blob = match initial {
                Some(i) => b64_decode(&i),
                None => ask(r, w, "").await?,
            };
            let Some(blob) = blob else { return Ok(None) };
            // authzid NUL authcid NUL password
            let parts: Vec<&[u8]> = blob.split(|&b| b == 0).collect();
            if parts.len() != 3 {
                return Ok(None);
            }
            Ok(Some((
                String::from_utf8_lossy(parts[1]).into_owned(),
                String::from_utf8_lossy(parts[2]).into_owned(),
            )))
        }
        "LOGIN" => {
            let user = match initial {
                Some(i) => b64_decode(&i),
                None => ask(r, w, "VXNlcm5hbWU6").await?,
            };
            let Some(user) = user else { return Ok(None) };
            let Some(pass) = ask(r, w, "UGFzc3dvcmQ6").await? else {
                return Ok(None);
            };
            Ok(Some((
                String::from_utf8_lossy(&user).into_owned(),
                String::from_utf8_lossy(&pass).into_owned(),
            )))
        }
        _ => Ok(None),
    }
}

/// Send a 334 challenge and decode the base64 answer.
async fn ask<R, W>(r: &mut R, w: &mut W, prompt: &str) -> std::io::Result<Option<Vec<u8>>>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    send(w, &format!("334 {prompt}")).await?;
    Ok(read_line(r)
        .await?
        .and_then(|l| b64_decode(&String::from_utf8_lossy(&l))))
}

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn b64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
