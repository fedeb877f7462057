//! One daemon under test: a temp state dir, a config pointing everything into it,
//! the real `mpnd` binary started and stopped as systemd would (SIGTERM) or as a
//! crash would (SIGKILL), the operator CLI against the same store, the gate over
//! real HTTP, and the store opened beside the daemon for assertions.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The shared corpus, beside the repository (CI clones it there too).
pub fn corpus() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    assert!(
        p.join("reseller/labels.json").exists(),
        "the shared corpus is missing at {}: it must sit beside the repository",
        p.display()
    );
    p
}

pub fn corpus_mail(name: &str) -> Vec<u8> {
    std::fs::read(corpus().join("reseller").join(name)).unwrap()
}

pub struct World {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub port: u16,
    daemon: Option<Child>,
    copier: Option<std::thread::JoinHandle<()>>,
}

/// The sections of a config; `top` holds top-level keys.
#[derive(Default)]
pub struct Setup<'a> {
    pub top: &'a str,
    pub mailbox: String,
    pub smtp: String,
    pub backend: String,
}

impl World {
    pub fn new(setup: impl FnOnce(&Path) -> Setup<'static>) -> World {
        let dir = tempfile::Builder::new()
            .prefix("mpnd-test-")
            .tempdir()
            .unwrap();
        let port = super::free_port();
        let s = setup(dir.path());
        let config = dir.path().join("mpnd.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"{state}\"\n{top}\n\
                 [mailbox]\n{mailbox}\n\
                 [smtp]\n{smtp}\nfrom = \"Nordwind Cloud <cloud@nordwind-dist.example>\"\n\
                 [gate]\nlisten = \"127.0.0.1:{port}\"\n\
                 [policy]\nown_addresses = [\"cloud@nordwind-dist.example\"]\n\
                 trusted_authserv_ids = [\"mx.nordwind-dist.example\"]\n{backend}",
                state = dir.path().join("var").display(),
                top = s.top,
                mailbox = s.mailbox,
                smtp = s.smtp,
                backend = s.backend,
            ),
        )
        .unwrap();
        World {
            dir,
            config,
            port,
            daemon: None,
            copier: None,
        }
    }

    pub fn var(&self) -> PathBuf {
        self.dir.path().join("var")
    }

    pub fn mpnd(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mpnd"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("USER", "tester")
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.mpnd(args);
        assert!(
            out.status.success(),
            "mpnd {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn import_registry(&self) {
        self.import_registry_from(&corpus().join("reseller"));
    }

    /// Imports `resellers.csv` and `subscriptions.csv` of a folder.
    pub fn import_registry_from(&self, c: &Path) {
        self.ok(&[
            "reseller",
            "import",
            c.join("resellers.csv").to_str().unwrap(),
        ]);
        self.ok(&[
            "subscription",
            "import",
            c.join("subscriptions.csv").to_str().unwrap(),
        ]);
    }

    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Starts the daemon; its stderr goes through a pipe into `daemon.log` (a pipe,
    /// so a file-size limit on the daemon never cuts its log). SIGXFSZ is ignored
    /// (inherited across exec), so a write over RLIMIT_FSIZE fails with EFBIG as a
    /// write on a full disk fails, instead of killing the process.
    pub fn start_with(&mut self, env: &[(&str, &str)]) {
        assert!(self.daemon.is_none(), "daemon already running");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mpnd"));
        cmd.envs(env.iter().copied())
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        if let Some(c) = self.copier.take() {
            let _ = c.join();
        }
        self.copier = Some(std::thread::spawn(move || {
            let _ = std::io::copy(&mut stderr, &mut log);
        }));
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.http("/healthz", None).is_some() {
                return;
            }
            if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                self.daemon = None;
                panic!("daemon exited with {status}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("daemon did not come up; log:\n{}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.daemon.as_ref().expect("daemon running").id()
    }

    /// SIGKILL, as a crash or the OOM killer would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = c.try_wait().unwrap() {
                    assert!(status.success(), "daemon exited with {status}");
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("daemon ignored SIGTERM; log:\n{}", self.log());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if let Some(c) = self.copier.take() {
            let _ = c.join();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// The peak resident set of the running daemon (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kb / 1024.0
    }

    /// A GET on the gate: (status, body), or None when nothing listens.
    pub fn http(&self, path: &str, auth: Option<&str>) -> Option<(u16, String)> {
        self.request("GET", path, auth, "")
    }

    /// Any request on the gate's port (`auth`: the whole Authorization value).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: &str,
    ) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .ok()?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).ok()?;
        let status = resp.split(' ').nth(1)?.parse().ok()?;
        Some((status, resp))
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.var().join("gate.token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// The store, opened beside the daemon (WAL: readers never block it).
    pub fn db(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(self.var().join("mpnd.sqlite3")).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.db().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    pub fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let db = self.db();
        let mut stmt = db.prepare(sql).unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| {
            (0..n)
                .map(|i| {
                    r.get::<_, Option<String>>(i)
                        .or_else(|_| r.get::<_, i64>(i).map(|v| Some(v.to_string())))
                        .map(|v| v.unwrap_or_default())
                })
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap()
    }

    /// Waits until the outbox has nothing pending.
    pub fn wait_outbox_drained(&self, limit: Duration) {
        self.wait("the outbox drained", limit, || {
            self.count("SELECT COUNT(*) FROM outbox WHERE state = 'pending'") == 0
        });
    }

    /// Like `wait_until`, but a timeout shows the store's counts and the log's end.
    pub fn wait(&self, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            if start.elapsed() > limit {
                let log = self.log();
                let problems: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                    .take(40)
                    .collect();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = problems
                    .into_iter()
                    .chain(["..."])
                    .chain(tail.into_iter().rev())
                    .collect();
                panic!(
                    "timed out after {limit:?} waiting for {what}; counts {:?}\nlog tail:\n{}",
                    self.rows("SELECT 'outbox', state, COUNT(*), MAX(attempts), MAX(last_error) FROM outbox GROUP BY state
                               UNION ALL SELECT 'jobs', state, COUNT(*), MAX(attempts), MAX(last_error) FROM jobs GROUP BY state
                               UNION ALL SELECT 'cases', state, COUNT(*), 0, '' FROM cases GROUP BY state"),
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.kill();
    }
}

impl World {
    /// `mpnd ARGS --json` parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid() as i32, sig) }, 0);
    }

    /// A GET on the gate with a bearer token: (status, body).
    pub fn get(&self, path: &str, token: Option<&str>) -> Option<(u16, String)> {
        let auth = token.map(|t| format!("Bearer {t}"));
        let (status, resp) = self.http(path, auth.as_deref())?;
        Some((
            status,
            resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string(),
        ))
    }

    /// Delivers into the Maildir inbox the way an MDA does (tmp, then rename).
    pub fn deliver(&self, name: &str, raw: &[u8]) {
        let md = self.var().join("mail");
        std::fs::create_dir_all(md.join("tmp")).unwrap();
        std::fs::create_dir_all(md.join("new")).unwrap();
        std::fs::write(md.join("tmp").join(name), raw).unwrap();
        std::fs::rename(md.join("tmp").join(name), md.join("new").join(name)).unwrap();
    }

    /// Mails in a Maildir folder ("" for the inbox).
    pub fn maildir_count(&self, folder: &str) -> usize {
        let base = if folder.is_empty() {
            self.var().join("mail")
        } else {
            self.var().join("mail").join(format!(".{folder}"))
        };
        ["new", "cur"]
            .iter()
            .map(|s| {
                std::fs::read_dir(base.join(s))
                    .map(|d| d.count())
                    .unwrap_or(0)
            })
            .sum()
    }

    pub fn wait_inbox_empty(&self, secs: u64) {
        self.wait(
            "the Maildir inbox drained",
            Duration::from_secs(secs),
            || self.maildir_count("") == 0,
        );
    }

    /// The `.eml` files the file transport wrote, sorted.
    pub fn outbox_files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.var().join("outbox"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                    .map(|e| std::fs::read_to_string(e.path()).unwrap())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Waits for at least `n` outbox files and returns them.
    pub fn wait_outbox_files(&self, n: usize) -> Vec<String> {
        self.wait(
            &format!("{n} outbox files"),
            Duration::from_secs(15),
            || self.outbox_files().len() >= n,
        );
        self.outbox_files()
    }

    pub fn import_corpus_registry(&self) {
        self.import_registry();
    }
}
