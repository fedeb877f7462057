//! A real SMTP listener for tests, on 127.0.0.1: greeting, EHLO/HELO, optional
//! AUTH PLAIN/LOGIN, MAIL FROM, RCPT TO, DATA (with dot-unstuffing), RSET, NOOP,
//! QUIT. Each accepted message is recorded with its envelope and raw bytes.
//!
//! It runs on its own thread and runtime. [`SmtpSink::stop`] closes the listener
//! and every open connection (an outage); [`SmtpSink::restart`] listens on the
//! same port again with the recorded messages kept. [`SmtpSink::fail_next`] makes
//! the next N transactions end with a chosen 4xx/5xx reply after DATA, where a
//! real server defers or rejects a message. No TLS: clients talk plaintext to
//! loopback.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

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
    /// The reverse-path without brackets (empty for a bounce).
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The message as sent, dot-unstuffed, without the final `.` line.
    pub data: Vec<u8>,
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
    opts: SmtpOptions,
    state: Shared,
    server: Option<ServerThread>,
}

impl SmtpSink {
    /// Listen on a free port, without AUTH.
    pub fn start() -> SmtpSink {
        SmtpSink::start_with(SmtpOptions::default())
    }

    pub fn start_with(opts: SmtpOptions) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the smtp test listener");
        let addr = listener.local_addr().expect("local_addr");
        let mut sink = SmtpSink {
            addr,
            opts,
            state: Arc::default(),
            server: None,
        };
        sink.serve(listener);
        sink
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
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
        let opts = self.opts.clone();
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
                            let opts = opts.clone();
                            tokio::spawn(async move {
                                // A client error ends only its own connection.
                                let _ = session(stream, state, opts).await;
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

async fn session(stream: TcpStream, state: Shared, opts: SmtpOptions) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    write
        .write_all(b"220 mpnd-test-smtp ESMTP ready\r\n")
        .await?;

    let mut phase = Phase::Greeted;
    let mut helo = String::new();
    let mut auth_user: Option<String> = None;
    let mut mail_from = String::new();
    let mut rcpt_to: Vec<String> = Vec::new();

    loop {
        let Some(line) = read_line(&mut reader).await? else {
            return Ok(());
        };
        let Ok(line) = String::from_utf8(line) else {
            write
                .write_all(b"500 5.5.2 command is not UTF-8\r\n")
                .await?;
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
                if opts.auth.is_some() {
                    r.push_str("250-AUTH PLAIN LOGIN\r\n");
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
            "AUTH" => match (&opts.auth, &phase) {
                (None, _) => "502 5.5.1 AUTH not offered".into(),
                (Some(_), Phase::Greeted) => "503 5.5.1 EHLO first".into(),
                (Some(_), _) if auth_user.is_some() => "503 5.5.1 already authenticated".into(),
                (Some((user, pass)), _) => {
                    match authenticate(&arg, &mut reader, &mut write).await? {
                        Some((u, p)) if &u == user && &p == pass => {
                            auth_user = Some(u);
                            "235 2.7.0 authentication successful".into()
                        }
                        Some(_) => "535 5.7.8 authentication credentials invalid".into(),
                        None => "501 5.5.2 cannot decode the AUTH response".into(),
                    }
                }
            },
            "MAIL" => {
                if phase == Phase::Greeted {
                    "503 5.5.1 EHLO first".into()
                } else if phase != Phase::Ready {
                    "503 5.5.1 a transaction is already open".into()
                } else if opts.auth.is_some() && auth_user.is_none() {
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
                    write
                        .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                        .await?;
                    let data = read_data(&mut reader).await?;
                    phase = Phase::Ready;
                    let envelope_from = std::mem::take(&mut mail_from);
                    let envelope_to = std::mem::take(&mut rcpt_to);
                    match data {
                        None => "552 5.3.4 message too big".into(),
                        Some(data) => {
                            let mut s = lock(&state);
                            if let Some(failure) = s.failures.pop_front() {
                                failure
                            } else {
                                s.messages.push(Received {
                                    helo: helo.clone(),
                                    auth_user: auth_user.clone(),
                                    mail_from: envelope_from,
                                    rcpt_to: envelope_to,
                                    data,
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
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            "STARTTLS" => "454 4.7.0 TLS not available".into(),
            _ => "500 5.5.2 command not recognised".into(),
        };
        // One write per reply: a reply split over two writes meets Nagle and the
        // client's delayed ACK on loopback, ~40 ms per command.
        write.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
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
    w.write_all(format!("334 {prompt}\r\n").as_bytes()).await?;
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
