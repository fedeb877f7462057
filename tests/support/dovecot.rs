//! A private Dovecot IMAP server for one test: its own config, data, sockets and
//! log in a temp dir, listening on free ports of 127.0.0.1 only.
//!
//! It runs `dovecot -F -c <dir>/dovecot.conf` as a child process; mail belongs to
//! Debian's `mail` user (Dovecot refuses uid 0). Options switch on TLS (a throwaway
//! CA and a leaf for localhost/127.0.0.1 made with the openssl CLI), take IDLE,
//! MOVE or UIDPLUS out of the capabilities, or enable XOAUTH2 against a local
//! [`OAuthServer`]. Helpers deliver mail (`doveadm save`, or straight into
//! Maildir/new for bulk), read folders and flags, stop and restart the server on
//! the same port and data, and give the inbox a new UIDVALIDITY. It is stopped by
//! the pid in `base_dir/master.pid` (never by process name) on Drop. A missing
//! `dovecot` or `openssl` binary is a test failure with a hint, not a skip.

use std::fs;
use std::io::Write as _;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mpnd::mailbox::imap::{ImapAuth, ImapSettings, TlsMode};
use mpnd::oauth::TokenSource;

use super::{free_port, OAuthServer};

/// The mailbox owner, as on the production mailbox.
pub const USER: &str = "cloud@distri.example";
pub const PASSWORD: &str = "test-imap-password";

/// Dovecot 2.3's own post-login capabilities; options remove entries from it.
const CAPABILITIES: &[&str] = &[
    "IMAP4rev1",
    "SASL-IR",
    "LOGIN-REFERRALS",
    "ID",
    "ENABLE",
    "IDLE",
    "SORT",
    "SORT=DISPLAY",
    "THREAD=REFERENCES",
    "THREAD=REFS",
    "THREAD=ORDEREDSUBJECT",
    "MULTIAPPEND",
    "URL-PARTIAL",
    "CATENATE",
    "UNSELECT",
    "CHILDREN",
    "NAMESPACE",
    "UIDPLUS",
    "LIST-EXTENDED",
    "I18NLEVEL=1",
    "CONDSTORE",
    "QRESYNC",
    "ESEARCH",
    "ESORT",
    "SEARCHRES",
    "WITHIN",
    "CONTEXT=SEARCH",
    "LIST-STATUS",
    "BINARY",
    "MOVE",
    "SNIPPET=FUZZY",
    "PREVIEW=FUZZY",
    "PREVIEW",
    "STATUS=SIZE",
    "SAVEDATE",
    "LITERAL+",
    "NOTIFY",
    "SPECIAL-USE",
];

/// How the test server behaves.
#[derive(Clone, Copy, Debug)]
pub struct DovecotOptions {
    /// Implicit TLS on `port()` and STARTTLS on `starttls_port()`; else plaintext.
    pub tls: bool,
    /// Offer IDLE (else clients must poll).
    pub idle: bool,
    /// Offer MOVE (else clients must COPY + STORE + EXPUNGE).
    pub move_: bool,
    /// Offer UIDPLUS (UID EXPUNGE).
    pub uidplus: bool,
    /// Accept XOAUTH2 logins checked against a local [`OAuthServer`].
    pub xoauth2: bool,
}

impl Default for DovecotOptions {
    fn default() -> Self {
        DovecotOptions {
            tls: false,
            idle: true,
            move_: true,
            uidplus: true,
            xoauth2: false,
        }
    }
}

pub struct Dovecot {
    dir: tempfile::TempDir,
    conf: PathBuf,
    opts: DovecotOptions,
    port: u16,
    starttls_port: Option<u16>,
    child: Option<Child>,
    oauth: Option<OAuthServer>,
    uid: u32,
    gid: u32,
    dovecot: PathBuf,
    doveadm: PathBuf,
    /// LMTP delivery with push notifications, once [`Dovecot::enable_push`] ran.
    push: Option<Push>,
}

/// Dovecot's `push_notification` plugin (`ox` driver): every LMTP delivery into
/// the inbox PUTs JSON to `url`.
#[derive(Clone)]
struct Push {
    url: String,
    lmtp_port: u16,
}

impl Dovecot {
    /// Start a fresh server; panics with Dovecot's log if it doesn't come up.
    pub fn start(opts: DovecotOptions) -> Dovecot {
        let dovecot = find_binary("dovecot");
        let doveadm = find_binary("doveadm");
        let (uid, gid) = mail_user();
        let dir = tempfile::Builder::new()
            .prefix("mpnd-dovecot-")
            .tempdir()
            .expect("creating a temp dir for dovecot");
        // Dovecot's unprivileged processes must reach their sockets and the mail.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        let root = dir.path().to_path_buf();

        let home = root.join("home");
        for sub in ["", "Maildir", "Maildir/cur", "Maildir/new", "Maildir/tmp"] {
            let p = home.join(sub);
            fs::create_dir_all(&p).expect("creating the test maildir");
            std::os::unix::fs::chown(&p, Some(uid), Some(gid)).expect("chown the test maildir");
        }
        fs::write(
            root.join("users"),
            format!(
                "{USER}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{}::\n",
                home.display()
            ),
        )
        .expect("writing the passwd-file");

        if opts.tls {
            make_certs(&root.join("tls"));
        }
        let oauth = opts.xoauth2.then(|| OAuthServer::start(USER));
        let conf = root.join("dovecot.conf");
        if let Some(o) = &oauth {
            fs::write(
                root.join("oauth2.conf.ext"),
                format!(
                    "introspection_mode = post\n\
                     introspection_url = {}\n\
                     username_attribute = username\n\
                     active_attribute = active\n\
                     active_value = true\n\
                     force_introspection = yes\n",
                    o.introspection_url()
                ),
            )
            .expect("writing oauth2.conf.ext");
        }

        let mut d = Dovecot {
            dir,
            conf,
            opts,
            port: 0,
            starttls_port: None,
            child: None,
            oauth,
            uid,
            gid,
            dovecot,
            doveadm,
            push: None,
        };
        // A free port can be taken by someone else before Dovecot binds it; then
        // Dovecot exits at once and we try other ports.
        for attempt in 1..=5 {
            d.port = free_port();
            d.starttls_port = opts.tls.then(free_port);
            let text = config(
                &root,
                &opts,
                d.port,
                d.starttls_port,
                d.oauth.as_ref(),
                None,
            );
            fs::write(&d.conf, text).expect("writing dovecot.conf");
            match d.try_launch() {
                Ok(()) => return d,
                Err(e) if attempt < 5 && e.contains("Address already in use") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// The host to connect to: `localhost` with TLS (the certificate's name), else 127.0.0.1.
    pub fn host(&self) -> &'static str {
        if self.opts.tls {
            "localhost"
        } else {
            "127.0.0.1"
        }
    }

    /// Plaintext IMAP, or implicit TLS when started with `tls`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The STARTTLS port when started with `tls`.
    pub fn starttls_port(&self) -> Option<u16> {
        self.starttls_port
    }

    /// The throwaway CA that signed the server certificate (for `ca_file`).
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.opts.tls.then(|| self.dir.path().join("tls/ca.crt"))
    }

    pub fn oauth(&self) -> Option<&OAuthServer> {
        self.oauth.as_ref()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Settings for [`mpnd::mailbox::imap::ImapMailbox::connect`] against this
    /// server: implicit TLS with the test CA, or plaintext on loopback; XOAUTH2
    /// with a fresh TokenSource when enabled, else the password. Short timeouts.
    pub fn imap_settings(&self) -> ImapSettings {
        let auth = match &self.oauth {
            Some(o) => {
                let (url, id, secret, scope) = o.client();
                ImapAuth::XOAuth2(Arc::new(TokenSource::new(url, id, secret, scope)))
            }
            None => ImapAuth::Password(PASSWORD.into()),
        };
        ImapSettings {
            host: self.host().into(),
            port: self.port,
            tls: if self.opts.tls {
                TlsMode::Implicit
            } else {
                TlsMode::None
            },
            username: USER.into(),
            auth,
            inbox: "INBOX".into(),
            processed: "Processed".into(),
            review: "Review".into(),
            ignored: "Ignored".into(),
            ca_file: self.ca_file(),
            command_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_message_size: 10 * 1024 * 1024,
            batch_size: 100,
            batch_bytes: mpnd::mailbox::imap::BATCH_BYTES,
        }
    }

    /// Deliver one mail into the inbox (doveadm save: it has its UID on return).
    pub fn append(&self, raw: &[u8]) {
        self.append_to("INBOX", raw);
    }

    /// Deliver one mail into `folder` (which must exist).
    pub fn append_to(&self, folder: &str, raw: &[u8]) {
        self.doveadm_in(&["save", "-u", USER, "-m", folder], raw);
    }

    /// Drop many mails straight into the inbox's Maildir/new (tmp + rename, as an
    /// MDA does): fast, and works while the server is stopped. Dovecot assigns UIDs
    /// when it next looks. Returns how many were written.
    pub fn deliver_many<I, M>(&self, mails: I) -> usize
    where
        I: IntoIterator<Item = M>,
        M: AsRef<[u8]>,
    {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let maildir = self.maildir("INBOX");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut n = 0;
        for raw in mails {
            let seq = SEQ.fetch_add(1, Ordering::Relaxed);
            // Names sort in delivery order, as Maildir names from a real MDA do.
            let name = format!(
                "{}.M{:06}P{}Q{seq:08}.mpnd-test",
                now.as_secs(),
                now.subsec_micros(),
                std::process::id()
            );
            let tmp = maildir.join("tmp").join(&name);
            let mut f = fs::File::create(&tmp).expect("creating a mail in Maildir/tmp");
            f.write_all(raw.as_ref()).expect("writing a mail");
            drop(f);
            std::os::unix::fs::chown(&tmp, Some(self.uid), Some(self.gid)).expect("chown mail");
            fs::rename(&tmp, maildir.join("new").join(&name))
                .expect("moving a mail to Maildir/new");
            n += 1;
        }
        n
    }

    /// The messages in `folder` ("INBOX", "Processed", ...) in delivery order, with
    /// CRLF line ends as IMAP serves them (Dovecot stores LF). Includes messages
    /// flagged \Deleted but not yet expunged. A folder never used is empty.
    pub fn list(&self, folder: &str) -> Vec<Vec<u8>> {
        let maildir = self.maildir(folder);
        let mut files: Vec<PathBuf> = Vec::new();
        for sub in ["cur", "new"] {
            let Ok(entries) = fs::read_dir(maildir.join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                files.push(e.path());
            }
        }
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        files
            .iter()
            .filter_map(|p| fs::read(p).ok())
            .map(|raw| to_crlf(&raw))
            .collect()
    }

    /// `(uid, flags)` of every message in `folder`, by UID.
    pub fn flags(&self, folder: &str) -> Vec<(u32, Vec<String>)> {
        let out = self.doveadm(&["fetch", "-u", USER, "uid flags", "mailbox", folder, "all"]);
        let mut result = Vec::new();
        let mut uid = None;
        for line in out.lines() {
            if let Some(v) = line.strip_prefix("uid: ") {
                uid = v.trim().parse::<u32>().ok();
            } else if let Some(v) = line.strip_prefix("flags:") {
                if let Some(u) = uid.take() {
                    result.push((u, v.split_whitespace().map(str::to_string).collect()));
                }
            }
        }
        result.sort();
        result
    }

    /// Add IMAP flags (e.g. `\Deleted`, `\Flagged`) to one message, as a person's
    /// mail client would.
    pub fn add_flags(&self, folder: &str, uid: u32, flags: &str) {
        self.doveadm(&[
            "flags",
            "add",
            "-u",
            USER,
            flags,
            "mailbox",
            folder,
            "uid",
            &uid.to_string(),
        ]);
    }

    /// How many messages `folder` holds.
    pub fn count(&self, folder: &str) -> usize {
        self.status(folder, "messages") as usize
    }

    pub fn uidvalidity(&self, folder: &str) -> u32 {
        self.status(folder, "uidvalidity")
    }

    /// Dovecot's log so far (for diagnosing a failed test).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// Stop the server: SIGTERM to every Dovecot process, so each IMAP client gets
    /// `* BYE Server shutting down.` at once and its connection ends (SIGTERM to
    /// the master alone leaves imap processes serving for ~10 s more). Whatever is
    /// still running after 300 ms is killed. Data and ports stay for [`Self::restart`].
    pub fn stop(&mut self) {
        let Some(pid) = self.master_pid() else { return };
        // The master leads its own process group (spawned with process_group(0)).
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{pid}")])
            .status();
        if !self.reap(Duration::from_millis(300)) {
            self.kill();
        }
    }

    /// Crash the server: SIGKILL to the master and every process in its group
    /// (imap, imap-login, auth, ...). Clients see their connections end without BYE.
    pub fn kill(&mut self) {
        let Some(pid) = self.master_pid() else { return };
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .status();
        self.reap(Duration::from_secs(10));
        // A killed Dovecot leaves its Maildir dotlocks behind; a restarted one
        // waits for them to go stale (two minutes) before a SELECT answers. That is
        // Dovecot's recovery, not the client's, so the harness clears them as an
        // administrator restarting a crashed server would.
        remove_named(&self.dir.path().join("home"), "dovecot-uidlist.lock");
    }

    /// The master's pid from `base_dir/master.pid` (with -F it is our child's).
    fn master_pid(&self) -> Option<u32> {
        let child = self.child.as_ref()?;
        Some(
            fs::read_to_string(self.dir.path().join("run/master.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .unwrap_or_else(|| child.id()),
        )
    }

    /// Wait for the master to exit; true if it did within `limit`.
    fn reap(&mut self, limit: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => {
                    self.child = None;
                    return true;
                }
                Ok(None) if start.elapsed() < limit => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => return false,
            }
        }
    }

    /// Turn on LMTP delivery (on a port of 127.0.0.1) and Dovecot's push
    /// notifications to `url` for the test user, as a site would for mpnd's push
    /// endpoint; restarts the server.
    pub fn enable_push(&mut self, url: &str) {
        self.stop();
        let push = Push {
            url: url.to_string(),
            lmtp_port: free_port(),
        };
        let text = config(
            self.dir.path(),
            &self.opts,
            self.port,
            self.starttls_port,
            self.oauth.as_ref(),
            Some(&push),
        );
        fs::write(&self.conf, text).expect("writing dovecot.conf");
        self.push = Some(push);
        self.launch();
        // The `ox` driver notifies only users who asked for it, in METADATA.
        self.doveadm(&[
            "mailbox",
            "metadata",
            "set",
            "-u",
            USER,
            "-s",
            "",
            "/private/vendor/vendor.dovecot/http-notify",
            &format!("user={USER}"),
        ]);
    }

    /// Deliver one mail over LMTP, as an MTA hands mail to Dovecot (and so with a
    /// push notification); needs [`Dovecot::enable_push`].
    pub fn deliver_lmtp(&self, raw: &[u8]) {
        let port = self
            .push
            .as_ref()
            .expect("deliver_lmtp needs enable_push")
            .lmtp_port;
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connecting to LMTP");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = std::io::BufReader::new(s.try_clone().unwrap());
        // Reads one (possibly multi-line) reply and checks its code.
        let mut expect = |code: &str| {
            let mut line = String::new();
            loop {
                line.clear();
                std::io::BufRead::read_line(&mut r, &mut line).expect("reading LMTP");
                assert!(line.starts_with(code), "LMTP: wanted {code}, got {line:?}");
                if line.as_bytes().get(3) != Some(&b'-') {
                    return;
                }
            }
        };
        expect("220");
        let mut say = |text: &[u8]| s.write_all(text).expect("writing LMTP");
        say(b"LHLO test.example\r\n");
        expect("250");
        say(b"MAIL FROM:<mta@test.example>\r\n");
        expect("250");
        say(format!("RCPT TO:<{USER}>\r\n").as_bytes());
        expect("250");
        say(b"DATA\r\n");
        expect("354");
        let mut body = Vec::new();
        for line in to_crlf(raw).split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b".") {
                body.push(b'.');
            }
            body.extend_from_slice(line);
        }
        if !body.ends_with(b"\r\n") {
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b".\r\n");
        say(&body);
        expect("250");
        say(b"QUIT\r\n");
        expect("221");
    }

    /// Start again on the same ports with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Give the inbox a new UIDVALIDITY, keeping its messages (they get new UIDs),
    /// as when a server's index is rebuilt or a mailbox is restored from backup.
    /// Restarts the server.
    pub fn recreate_inbox(&mut self) {
        let old = self.uidvalidity("INBOX");
        for _ in 0..5 {
            self.stop();
            let maildir = self.maildir("INBOX");
            for e in fs::read_dir(&maildir)
                .expect("reading the inbox maildir")
                .flatten()
            {
                let name = e.file_name().to_string_lossy().into_owned();
                // The UID list and indexes go; `dovecot-uidvalidity` stays, so the
                // next UIDVALIDITY Dovecot picks is higher than any it handed out.
                if name == "dovecot-uidlist"
                    || name.starts_with("dovecot.index")
                    || name.starts_with("dovecot.list.index")
                {
                    fs::remove_file(e.path()).expect("removing a dovecot index file");
                }
            }
            self.launch();
            if self.uidvalidity("INBOX") != old {
                return;
            }
            // Same second as before: UIDVALIDITY is time-based, try again.
            std::thread::sleep(Duration::from_millis(1100));
        }
        panic!("the inbox kept UIDVALIDITY {old} after being recreated");
    }

    fn launch(&mut self) {
        if let Err(e) = self.try_launch() {
            panic!("{e}");
        }
    }

    /// Start the master and wait until it answers on its ports with its own
    /// greeting (so a stranger that grabbed the port is never mistaken for it).
    fn try_launch(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "dovecot is already running");
        let root = self.dir.path().to_path_buf();
        let _ = fs::remove_file(root.join("run/master.pid"));
        let stderr = fs::File::create(root.join("stderr.log")).expect("creating stderr.log");
        let child = Command::new(&self.dovecot)
            // Its own process group, so stop() and kill() reach every child.
            .process_group(0)
            .arg("-F")
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.dovecot.display()));
        self.child = Some(child);
        let greeting = greeting(self.port);
        // The implicit-TLS port can't be read without a handshake; the plaintext
        // one (STARTTLS when TLS is on) proves the instance is ours.
        let (plain, other) = match self.starttls_port {
            Some(st) => (st, Some(self.port)),
            None => (self.port, None),
        };
        let start = Instant::now();
        loop {
            let ours = read_greeting(plain).is_some_and(|g| g.contains(&greeting));
            let other_up = other.is_none_or(|p| TcpStream::connect(("127.0.0.1", p)).is_ok());
            if ours && other_up {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || start.elapsed() > Duration::from_secs(15) {
                if let Some(mut c) = self.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                let err = fs::read_to_string(root.join("stderr.log")).unwrap_or_default();
                return Err(format!(
                    "dovecot did not come up on 127.0.0.1:{plain} (exit: {exited:?}).\nstderr:\n{err}\nlog:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn maildir(&self, folder: &str) -> PathBuf {
        let base = self.dir.path().join("home/Maildir");
        if folder.eq_ignore_ascii_case("INBOX") {
            base
        } else {
            // Maildir++: a folder is a dot-directory, hierarchy separated by dots.
            base.join(format!(".{}", folder.replace('/', ".")))
        }
    }

    fn status(&self, folder: &str, field: &str) -> u32 {
        let out = self.doveadm(&["mailbox", "status", "-u", USER, field, folder]);
        let key = format!("{field}=");
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(&key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("doveadm mailbox status gave no {field}: {out:?}"))
    }

    fn doveadm(&self, args: &[&str]) -> String {
        self.doveadm_in(args, b"")
    }

    fn doveadm_in(&self, args: &[&str], stdin: &[u8]) -> String {
        let mut child = Command::new(&self.doveadm)
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running doveadm: {e}"));
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin).expect("writing to doveadm");
        }
        let out = child.wait_with_output().expect("waiting for doveadm");
        if !out.status.success() {
            panic!(
                "doveadm {args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // Nobody is watching any more: no need to be graceful.
        self.kill();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn config(
    root: &Path,
    opts: &DovecotOptions,
    port: u16,
    starttls_port: Option<u16>,
    oauth: Option<&OAuthServer>,
    push: Option<&Push>,
) -> String {
    let root = root.display();
    let (protocols, push) = match push {
        None => ("imap", String::new()),
        Some(p) => (
            "imap lmtp",
            format!(
                "mail_attribute_dict = file:%h/dovecot-attributes\n\
protocol lmtp {{\n  mail_plugins = $mail_plugins notify push_notification\n}}\n\
plugin {{\n  push_notification_driver = ox:url={url} user_from_metadata\n}}\n\
service lmtp {{\n  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n}}\n",
                url = p.url,
                port = p.lmtp_port
            ),
        ),
    };
    let caps: Vec<&str> = CAPABILITIES
        .iter()
        .copied()
        .filter(|c| opts.idle || *c != "IDLE")
        .filter(|c| opts.move_ || *c != "MOVE")
        .filter(|c| opts.uidplus || *c != "UIDPLUS")
        .collect();
    let (ssl, listeners) = match starttls_port {
        Some(st) => {
            let dh = if Path::new("/usr/share/dovecot/dh.pem").exists() {
                "ssl_dh = </usr/share/dovecot/dh.pem\n"
            } else {
                ""
            };
            (
                format!(
                    "ssl = yes\nssl_cert = <{root}/tls/server.crt\nssl_key = <{root}/tls/server.key\n{dh}"
                ),
                format!(
                    "  inet_listener imap {{\n    address = 127.0.0.1\n    port = {st}\n  }}\n\
                     \x20 inet_listener imaps {{\n    address = 127.0.0.1\n    port = {port}\n    ssl = yes\n  }}\n"
                ),
            )
        }
        None => (
            "ssl = no\n".to_string(),
            format!(
                "  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n\
                 \x20 inet_listener imaps {{\n    port = 0\n  }}\n"
            ),
        ),
    };
    let (mechs, oauth_passdb) = match oauth {
        Some(_) => (
            "plain login xoauth2 oauthbearer",
            format!(
                "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {root}/oauth2.conf.ext\n}}\n"
            ),
        ),
        None => ("plain login", String::new()),
    };
    format!(
        "# Written by the mpnd test harness; a private instance, never the system's.\n\
instance_name = mpnd-test-{port}\n\
base_dir = {root}/run\n\
state_dir = {root}/state\n\
log_path = {root}/dovecot.log\n\
protocols = {protocols}\n\
listen = 127.0.0.1\n\
{ssl}\
disable_plaintext_auth = no\n\
auth_mechanisms = {mechs}\n\
auth_failure_delay = 0\n\
auth_verbose = yes\n\
login_greeting = {greeting}\n\
first_valid_uid = 1\n\
mail_location = maildir:~/Maildir\n\
mail_fsync = never\n\
mailbox_idle_check_interval = 1 secs\n\
imap_capability = {caps}\n\
default_process_limit = 200\n\
default_client_limit = 2000\n\
# No login delays after failed logins: tests fail logins on purpose.\n\
service anvil {{\n  unix_listener anvil-auth-penalty {{\n    mode = 0\n  }}\n}}\n\
protocol imap {{\n  mail_max_userip_connections = 1000\n}}\n\
passdb {{\n  driver = passwd-file\n  args = {root}/users\n  mechanisms = plain login\n}}\n\
{oauth_passdb}\
userdb {{\n  driver = passwd-file\n  args = {root}/users\n}}\n\
namespace inbox {{\n  inbox = yes\n  separator = /\n\
  mailbox Processed {{\n    auto = subscribe\n  }}\n\
  mailbox Review {{\n    auto = subscribe\n  }}\n\
  mailbox Ignored {{\n    auto = subscribe\n  }}\n}}\n\
service imap-login {{\n{listeners}}}\n\
{push}",
        caps = caps.join(" "),
        greeting = greeting(port),
    )
}

/// The greeting that identifies the instance listening on `port`.
fn greeting(port: u16) -> String {
    format!("mpnd-test-dovecot-{port}-{}", std::process::id())
}

/// The first line a server on 127.0.0.1:`port` sends, if it sends one within 1 s.
fn read_greeting(port: u16) -> Option<String> {
    use std::io::BufRead as _;
    let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).ok()?;
    Some(line)
}

/// A throwaway CA and a leaf certificate for localhost and 127.0.0.1 signed by it.
/// (rustls rejects a self-signed CA certificate used as the server's own.)
pub(crate) fn make_certs(dir: &Path) {
    fs::create_dir_all(dir).expect("creating the tls dir");
    let openssl = find_binary("openssl");
    let run = |args: &[&str]| {
        let out = Command::new(&openssl)
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("running openssl: {e}"));
        if !out.status.success() {
            panic!(
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    fs::write(
        dir.join("leaf.ext"),
        "subjectAltName = DNS:localhost, IP:127.0.0.1\n\
         basicConstraints = critical, CA:FALSE\n\
         keyUsage = critical, digitalSignature, keyEncipherment\n\
         extendedKeyUsage = serverAuth\n",
    )
    .expect("writing leaf.ext");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=mpnd test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
    // Dovecot reads the key as root; keep it private anyway.
    fs::set_permissions(dir.join("server.key"), fs::Permissions::from_mode(0o600))
        .expect("chmod key");
}

/// `name` from PATH or the sbin directories (Dovecot lives in /usr/sbin).
fn find_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin"].map(PathBuf::from));
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{name}` not found: run scripts/test-deps.sh (installs dovecot-imapd and openssl)");
}

/// uid and gid of Debian's `mail` user, which owns the test mail.
fn mail_user() -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").expect("reading /etc/passwd");
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == "mail" {
            if let (Ok(u), Ok(g)) = (f[2].parse(), f[3].parse()) {
                return (u, g);
            }
        }
    }
    panic!("no `mail` user in /etc/passwd; the test Dovecot needs an unprivileged owner for mail");
}

/// LF line ends to CRLF, leaving existing CRLF alone.
fn to_crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 40);
    let mut prev = 0u8;
    for &b in raw {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// Removes every file called `name` below `dir`.
fn remove_named(dir: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            remove_named(&path, name);
        } else if e.file_name() == name {
            let _ = fs::remove_file(&path);
        }
    }
}
