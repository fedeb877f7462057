//! Configuration: one TOML file, or the embedded default when there is none.
//!
//! The file is read into `Raw*` structs that mirror it exactly (`deny_unknown_fields`,
//! so a typo is an error, not a silently ignored key), then checked into [`Config`]:
//! typed durations, paths made absolute against the state directory, secrets loaded.
//! Every problem names the file, the line where the toml parser knows it, the key,
//! and what was expected. All problems are collected and reported together, so an
//! operator fixes a file in one round. Secrets are never part of an error message or
//! a `Debug` print.
//!
//! There is deliberately no `Default for Config`: the embedded default is a named
//! constructor, [`Config::embedded`], so every caller says which one it means.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::triage::Policy;

/// A secret read from a file, the environment, a systemd credential or inline.
/// `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    Implicit,
    Starttls,
    None,
}

#[derive(Clone, Debug)]
pub struct OAuth2 {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scope: String,
}

#[derive(Clone, Debug)]
pub enum Auth {
    Password(Secret),
    XOAuth2(OAuth2),
}

#[derive(Clone, Debug)]
pub struct ImapConfig {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub username: String,
    pub auth: Auth,
    pub inbox: String,
    pub processed: String,
    pub review: String,
    pub ignored: String,
    pub ca_file: Option<PathBuf>,
    pub command_timeout: Duration,
    pub idle_timeout: Duration,
    pub batch_size: usize,
}

#[derive(Clone, Debug)]
pub enum MailboxConfig {
    Maildir { path: PathBuf },
    Imap(Box<ImapConfig>),
}

#[derive(Clone, Debug)]
pub struct SmtpServer {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub auth: Option<(String, Auth)>,
    pub ca_file: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub enum Transport {
    Smtp(SmtpServer),
    File { dir: PathBuf },
}

#[derive(Clone, Debug)]
pub struct SmtpConfig {
    pub transport: Transport,
    /// The From of every confirmation, e.g. "Distri Cloud <cloud@distri.example>".
    pub from: String,
    /// At most this many confirmations per recipient in 24 hours; more are suppressed.
    pub max_per_recipient_per_day: u32,
    /// First wait after a transient send failure; doubles per attempt up to an hour.
    pub retry_initial: Duration,
    /// Confirmations in flight at once (one SMTP connection each).
    pub max_connections: usize,
    /// At most this many sends started a minute, spaced evenly; 0: no limit.
    pub max_per_minute: u32,
}

#[derive(Clone, Debug)]
pub struct GateConfig {
    pub listen: SocketAddr,
    pub token_file: PathBuf,
    /// The token the mail server's push (`/v1/mailbox/push`) must show; unset:
    /// the gate's token.
    pub push_token_file: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Manual,
    Http,
    PartnerCenter,
}

#[derive(Clone, Debug)]
pub struct BackendConfig {
    pub kind: BackendKind,
    pub base_url: Option<String>,
    /// Check a new ID with Partner Center before anything changes (partner-center only).
    pub verify: bool,
    /// Tries (claims) before a job is dead and waits for the operator.
    pub max_attempts: u32,
    /// Jobs run at the same time.
    pub concurrency: usize,
    /// Calls per minute to the backend, all jobs together (Partner Center allows
    /// 500 subscription requests per minute per partner tenant).
    pub rate_per_minute: u32,
    /// How long one HTTP request may take before it counts as failed (and is retried).
    pub timeout: Duration,
    /// Set for kind = "partner-center".
    pub partner_center: Option<PartnerCenterConfig>,
    /// Set for kind = "http".
    pub http: Option<HttpBackendConfig>,
}

/// Partner Center: where it is and how mpnd gets its tokens.
#[derive(Clone, Debug)]
pub struct PartnerCenterConfig {
    pub base_url: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// How the token request names Partner Center: `scope=` (v2.0 endpoint) or
    /// `resource=` (v1 endpoint); exactly one is set.
    pub scope: Option<String>,
    pub resource: Option<String>,
    /// App+user refresh token (MFA-backed): with it the relationship list is checked
    /// too, when `check_relationship` is on.
    pub user_refresh_token: Option<Secret>,
    /// Where the newest refresh token Microsoft rotated to is kept across restarts
    /// (`<state_dir>/partner-center.refresh-token`, mode 0600).
    pub refresh_token_store: PathBuf,
    pub check_relationship: bool,
}

/// One request to the distributor's platform; `{{name}}` placeholders are filled
/// per job (JSON-escaped in the body, percent-encoded in the path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestTemplate {
    pub method: String,
    pub path: String,
    pub body: Option<String>,
}

/// The distributor's own platform (kind = "http").
#[derive(Clone, Debug)]
pub struct HttpBackendConfig {
    pub base_url: String,
    pub token: Secret,
    pub account_request: RequestTemplate,
    pub subscription_request: RequestTemplate,
    /// Sent when a reseller's orders become blocked or allowed again; none when unset.
    pub gate_request: Option<RequestTemplate>,
}

/// The checked configuration the daemon and every subcommand run on.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where this configuration came from, for messages.
    pub source: String,
    pub state_dir: PathBuf,
    pub mailbox: MailboxConfig,
    /// Larger mails are not triaged: they go to review with a reason.
    pub max_message_size: u64,
    pub smtp: SmtpConfig,
    pub gate: GateConfig,
    pub policy: Policy,
    pub backend: BackendConfig,
    /// Directory whose `*.txt` files override the embedded reply templates.
    pub templates_dir: Option<PathBuf>,
}

impl Config {
    /// The embedded default: everything under `state_dir`, nothing leaves the machine.
    pub fn embedded(state_dir: &Path) -> Config {
        let from = "mpnd <cloud@localhost>".to_string();
        Config {
            source: format!("embedded default (state dir {})", state_dir.display()),
            state_dir: state_dir.to_path_buf(),
            mailbox: MailboxConfig::Maildir {
                path: state_dir.join("mail"),
            },
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            smtp: SmtpConfig {
                transport: Transport::File {
                    dir: state_dir.join("outbox"),
                },
                from,
                max_per_recipient_per_day: 10,
                retry_initial: Duration::from_secs(30),
                max_connections: DEFAULT_SMTP_CONNECTIONS,
                max_per_minute: 0,
            },
            gate: GateConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 8470)),
                token_file: state_dir.join("gate.token"),
                push_token_file: None,
            },
            policy: Policy {
                own_addresses: vec!["cloud@localhost".into()],
                trusted_authserv_ids: Vec::new(),
            },
            backend: BackendConfig {
                kind: BackendKind::Manual,
                base_url: None,
                verify: false,
                max_attempts: 8,
                concurrency: 4,
                rate_per_minute: 500,
                timeout: Duration::from_secs(30),
                partner_center: None,
                http: None,
            },
            templates_dir: None,
        }
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, &path.display().to_string(), base)
    }

    /// Parses and checks config text; `name` is used in messages, relative paths
    /// in the file are taken relative to `base`.
    pub fn parse(text: &str, name: &str, base: &Path) -> Result<Config> {
        let raw: RawConfig = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let place = e
                    .span()
                    .map(|s| {
                        let (line, col) = line_col(text, s.start);
                        format!("{name}:{line}:{col}")
                    })
                    .unwrap_or_else(|| name.to_string());
                bail!("{place}: {}", e.message().trim_end());
            }
        };
        let mut check = Checker {
            name: name.to_string(),
            text: text.to_string(),
            base: base.to_path_buf(),
            problems: Vec::new(),
        };
        let config = check.config(raw);
        if !check.problems.is_empty() {
            bail!("{}", check.problems.join("\n"));
        }
        Ok(config.expect("checker returns a config when it finds no problem"))
    }

    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join("mpnd.sqlite3")
    }

    /// The address part of `smtp.from`.
    pub fn from_address(&self) -> String {
        address_of(&self.smtp.from)
    }
}

/// Confirmations sent at once unless `smtp.max_connections` says otherwise.
pub const DEFAULT_SMTP_CONNECTIONS: usize = 8;
const DEFAULT_MAX_MESSAGE_SIZE: u64 = 25 * 1024 * 1024;

/// "Name <a@b>" → "a@b"; "a@b" → "a@b".
pub fn address_of(mailbox: &str) -> String {
    match (mailbox.rfind('<'), mailbox.rfind('>')) {
        (Some(a), Some(b)) if a < b => mailbox[a + 1..b].trim().to_string(),
        _ => mailbox.trim().to_string(),
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

// ---------------------------------------------------------------------------
// The file as written.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<String>,
    max_message_size: Option<u64>,
    templates_dir: Option<String>,
    mailbox: Option<RawMailbox>,
    smtp: Option<RawSmtp>,
    gate: Option<RawGate>,
    policy: Option<RawPolicy>,
    backend: Option<RawBackend>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOAuth2 {
    token_url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_secret_file: Option<String>,
    scope: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMailbox {
    kind: Option<String>,
    path: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    tls: Option<String>,
    username: Option<String>,
    auth: Option<String>,
    password: Option<String>,
    password_file: Option<String>,
    inbox: Option<String>,
    processed: Option<String>,
    review: Option<String>,
    ignored: Option<String>,
    ca_file: Option<String>,
    command_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    batch_size: Option<usize>,
    oauth2: Option<RawOAuth2>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    kind: Option<String>,
    dir: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    tls: Option<String>,
    from: Option<String>,
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<String>,
    ca_file: Option<String>,
    max_per_recipient_per_day: Option<u32>,
    retry_initial_secs: Option<u64>,
    max_connections: Option<u64>,
    max_per_minute: Option<u32>,
    oauth2: Option<RawOAuth2>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGate {
    listen: Option<String>,
    token_file: Option<String>,
    push_token_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    own_addresses: Option<Vec<String>>,
    trusted_authserv_ids: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    kind: Option<String>,
    base_url: Option<String>,
    token_url: Option<String>,
    client_id: Option<String>,
    client_secret_file: Option<String>,
    scope: Option<String>,
    resource: Option<String>,
    user_refresh_token_file: Option<String>,
    check_relationship: Option<bool>,
    token_file: Option<String>,
    verify: Option<bool>,
    max_attempts: Option<u32>,
    concurrency: Option<usize>,
    rate_per_minute: Option<u32>,
    timeout_secs: Option<u64>,
    account_request: Option<RawRequest>,
    subscription_request: Option<RawRequest>,
    gate_request: Option<RawRequest>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    method: Option<String>,
    path: Option<String>,
    body: Option<String>,
}

// ---------------------------------------------------------------------------
// Checking.

struct Checker {
    name: String,
    text: String,
    base: PathBuf,
    problems: Vec<String>,
}

impl Checker {
    /// Records a problem with `key`, pointing at the line that sets it when found.
    fn problem(&mut self, key: &str, msg: impl std::fmt::Display) {
        let place = match self.line_of(key) {
            Some(line) => format!("{}:{line}", self.name),
            None => self.name.clone(),
        };
        self.problems.push(format!("{place}: {key}: {msg}"));
    }

    /// The line where `section.key` is set, found by scanning the text: the toml
    /// crate keeps no spans after deserializing, and a line number is what an
    /// operator needs.
    fn line_of(&self, dotted: &str) -> Option<usize> {
        let (section, key) = match dotted.rsplit_once('.') {
            Some((s, k)) => (s, k),
            None => ("", dotted),
        };
        let mut current = String::new();
        for (i, line) in self.text.lines().enumerate() {
            let t = line.trim();
            if t.starts_with('[') {
                current = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
                if key.is_empty() && current == section {
                    return Some(i + 1);
                }
                continue;
            }
            if current == section {
                if let Some((k, _)) = t.split_once('=') {
                    if k.trim() == key {
                        return Some(i + 1);
                    }
                }
            }
        }
        None
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        }
    }

    fn tls(&mut self, key: &str, value: Option<&str>, default: Tls) -> Tls {
        match value {
            None => default,
            Some("implicit") => Tls::Implicit,
            Some("starttls") => Tls::Starttls,
            Some("none") => Tls::None,
            Some(other) => {
                self.problem(
                    key,
                    format!("expected \"implicit\", \"starttls\" or \"none\", got {other:?}"),
                );
                default
            }
        }
    }

    fn required(&mut self, key: &str, value: Option<String>) -> String {
        match value {
            Some(v) if !v.trim().is_empty() => v,
            _ => {
                self.problem(key, "is required here");
                String::new()
            }
        }
    }

    /// A secret given inline, in a file, or (when neither is set) as a systemd
    /// credential named after the key.
    fn secret(
        &mut self,
        key: &str,
        inline: Option<String>,
        file: Option<String>,
    ) -> Option<Secret> {
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.problem(key, format!("set either {key} or {key}_file, not both"));
                None
            }
            (Some(v), None) => Some(Secret(v)),
            (None, Some(f)) => {
                let path = match f.strip_prefix("credential:") {
                    // systemd's LoadCredential= puts secrets in a private directory
                    // whose path is only known at start.
                    Some(name) => match std::env::var_os("CREDENTIALS_DIRECTORY") {
                        Some(dir) => PathBuf::from(dir).join(name),
                        None => {
                            self.problem(
                                &format!("{key}_file"),
                                format!("{f:?} names a systemd credential, but $CREDENTIALS_DIRECTORY is not set (LoadCredential= in the unit)"),
                            );
                            return None;
                        }
                    },
                    None => self.path(&f),
                };
                match read_secret_file(&path) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        self.problem(&format!("{key}_file"), format!("{e:#}"));
                        None
                    }
                }
            }
            (None, None) => None,
        }
    }

    fn loopback_only(&mut self, key: &str, host: &str, tls: Tls) {
        if tls == Tls::None && !is_loopback_host(host) {
            self.problem(
                key,
                format!("tls = \"none\" is allowed only to a loopback host, not {host:?}"),
            );
        }
    }

    fn oauth2(&mut self, key: &str, raw: Option<RawOAuth2>, default_scope: &str) -> OAuth2 {
        let raw = raw.unwrap_or_default();
        let token_url = self.required(&format!("{key}.token_url"), raw.token_url);
        let client_id = self.required(&format!("{key}.client_id"), raw.client_id);
        let secret = self.secret(
            &format!("{key}.client_secret"),
            raw.client_secret,
            raw.client_secret_file,
        );
        if secret.is_none() {
            self.problem(
                &format!("{key}.client_secret_file"),
                "is required for auth = \"xoauth2\"",
            );
        }
        OAuth2 {
            token_url,
            client_id,
            client_secret: secret.unwrap_or(Secret(String::new())),
            scope: raw.scope.unwrap_or_else(|| default_scope.to_string()),
        }
    }

    fn config(&mut self, raw: RawConfig) -> Option<Config> {
        let state_dir = self.path(raw.state_dir.as_deref().unwrap_or("./var"));
        let mut config = Config::embedded(&state_dir);
        config.source = self.name.clone();
        if let Some(size) = raw.max_message_size {
            if size < 64 * 1024 {
                self.problem("max_message_size", "expected at least 65536 bytes");
            }
            config.max_message_size = size;
        }
        config.templates_dir = raw.templates_dir.map(|d| self.path(&d));

        if let Some(m) = raw.mailbox {
            config.mailbox = self.mailbox(m, &state_dir);
        }
        if let Some(s) = raw.smtp {
            config.smtp = self.smtp(s, &state_dir);
        }
        if let Some(g) = raw.gate {
            if let Some(listen) = g.listen {
                match listen.parse::<SocketAddr>() {
                    Ok(a) => config.gate.listen = a,
                    Err(_) => self.problem(
                        "gate.listen",
                        format!("expected an address and port such as \"127.0.0.1:8470\", got {listen:?}"),
                    ),
                }
            }
            if let Some(t) = g.token_file {
                config.gate.token_file = self.path(&t);
            }
            if let Some(t) = g.push_token_file {
                config.gate.push_token_file = Some(self.path(&t));
            }
        }
        let from_addr = address_of(&config.smtp.from).to_lowercase();
        config.policy.own_addresses = vec![from_addr];
        if let Some(p) = raw.policy {
            if let Some(own) = p.own_addresses {
                for a in &own {
                    if !a.contains('@') {
                        self.problem(
                            "policy.own_addresses",
                            format!("expected full addresses, got {a:?}"),
                        );
                    }
                }
                let mut own: Vec<String> = own.iter().map(|a| a.trim().to_lowercase()).collect();
                let from = address_of(&config.smtp.from).to_lowercase();
                if !own.contains(&from) {
                    own.push(from);
                }
                config.policy.own_addresses = own;
            }
            if let Some(ids) = p.trusted_authserv_ids {
                config.policy.trusted_authserv_ids =
                    ids.iter().map(|a| a.trim().to_lowercase()).collect();
            }
        }
        if let Some(b) = raw.backend {
            config.backend = self.backend(b, &state_dir);
        }
        Some(config)
    }

    fn mailbox(&mut self, m: RawMailbox, state_dir: &Path) -> MailboxConfig {
        match m.kind.as_deref().unwrap_or("maildir") {
            "maildir" => MailboxConfig::Maildir {
                path: m
                    .path
                    .map(|p| self.path(&p))
                    .unwrap_or_else(|| state_dir.join("mail")),
            },
            "imap" => {
                let host = self.required("mailbox.host", m.host);
                let tls = self.tls("mailbox.tls", m.tls.as_deref(), Tls::Implicit);
                self.loopback_only("mailbox.tls", &host, tls);
                let port = m.port.unwrap_or(match tls {
                    Tls::Implicit => 993,
                    _ => 143,
                });
                let username = self.required("mailbox.username", m.username);
                let auth = match m.auth.as_deref().unwrap_or("password") {
                    "password" => {
                        let s = self.secret("mailbox.password", m.password, m.password_file);
                        if s.is_none() {
                            self.problem(
                                "mailbox.password_file",
                                "is required for auth = \"password\" (or set mailbox.password)",
                            );
                        }
                        Auth::Password(s.unwrap_or(Secret(String::new())))
                    }
                    "xoauth2" => Auth::XOAuth2(self.oauth2(
                        "mailbox.oauth2",
                        m.oauth2,
                        "https://outlook.office365.com/.default",
                    )),
                    other => {
                        self.problem(
                            "mailbox.auth",
                            format!("expected \"password\" or \"xoauth2\", got {other:?}"),
                        );
                        Auth::Password(Secret(String::new()))
                    }
                };
                let idle = m.idle_timeout_secs.unwrap_or(540);
                if idle == 0 || idle > 600 {
                    self.problem(
                        "mailbox.idle_timeout_secs",
                        "expected 1 to 600 seconds (servers drop IDLE after 30 minutes; we re-issue well before)",
                    );
                }
                let batch = m.batch_size.unwrap_or(50);
                if batch == 0 {
                    self.problem("mailbox.batch_size", "expected at least 1");
                }
                MailboxConfig::Imap(Box::new(ImapConfig {
                    host,
                    port,
                    tls,
                    username,
                    auth,
                    inbox: m.inbox.unwrap_or_else(|| "INBOX".into()),
                    processed: m.processed.unwrap_or_else(|| "Processed".into()),
                    review: m.review.unwrap_or_else(|| "Review".into()),
                    ignored: m.ignored.unwrap_or_else(|| "Ignored".into()),
                    ca_file: m.ca_file.map(|p| self.path(&p)),
                    command_timeout: Duration::from_secs(m.command_timeout_secs.unwrap_or(60)),
                    idle_timeout: Duration::from_secs(idle),
                    batch_size: batch.max(1),
                }))
            }
            other => {
                self.problem(
                    "mailbox.kind",
                    format!("expected \"imap\" or \"maildir\", got {other:?}"),
                );
                MailboxConfig::Maildir {
                    path: state_dir.join("mail"),
                }
            }
        }
    }

    fn smtp(&mut self, s: RawSmtp, state_dir: &Path) -> SmtpConfig {
        let from = s.from.unwrap_or_else(|| "mpnd <cloud@localhost>".into());
        if !address_of(&from).contains('@') {
            self.problem(
                "smtp.from",
                format!("expected an address such as \"Distri Cloud <cloud@distri.example>\", got {from:?}"),
            );
        }
        let transport = match s.kind.as_deref().unwrap_or("file") {
            "file" => Transport::File {
                dir: s
                    .dir
                    .map(|d| self.path(&d))
                    .unwrap_or_else(|| state_dir.join("outbox")),
            },
            "smtp" => {
                let host = self.required("smtp.host", s.host);
                let tls = self.tls("smtp.tls", s.tls.as_deref(), Tls::Starttls);
                self.loopback_only("smtp.tls", &host, tls);
                let port = s.port.unwrap_or(match tls {
                    Tls::Implicit => 465,
                    Tls::Starttls => 587,
                    Tls::None => 25,
                });
                let auth = match s.auth.as_deref() {
                    None | Some("none") => None,
                    Some("password") => {
                        let user = self.required("smtp.username", s.username);
                        let secret = self.secret("smtp.password", s.password, s.password_file);
                        if secret.is_none() {
                            self.problem(
                                "smtp.password_file",
                                "is required for auth = \"password\"",
                            );
                        }
                        Some((
                            user,
                            Auth::Password(secret.unwrap_or(Secret(String::new()))),
                        ))
                    }
                    Some("xoauth2") => {
                        let user = self.required("smtp.username", s.username);
                        Some((
                            user,
                            Auth::XOAuth2(self.oauth2(
                                "smtp.oauth2",
                                s.oauth2,
                                "https://outlook.office365.com/.default",
                            )),
                        ))
                    }
                    Some(other) => {
                        self.problem(
                            "smtp.auth",
                            format!(
                                "expected \"none\", \"password\" or \"xoauth2\", got {other:?}"
                            ),
                        );
                        None
                    }
                };
                Transport::Smtp(SmtpServer {
                    host,
                    port,
                    tls,
                    auth,
                    ca_file: s.ca_file.map(|p| self.path(&p)),
                })
            }
            other => {
                self.problem(
                    "smtp.kind",
                    format!("expected \"smtp\" or \"file\", got {other:?}"),
                );
                Transport::File {
                    dir: state_dir.join("outbox"),
                }
            }
        };
        let retry = s.retry_initial_secs.unwrap_or(30);
        if retry == 0 || retry > 3600 {
            self.problem("smtp.retry_initial_secs", "expected 1 to 3600 seconds");
        }
        let connections = s.max_connections.unwrap_or(DEFAULT_SMTP_CONNECTIONS as u64);
        if !(1..=64).contains(&connections) {
            self.problem("smtp.max_connections", "expected 1 to 64 connections");
        }
        SmtpConfig {
            transport,
            from,
            max_per_recipient_per_day: s.max_per_recipient_per_day.unwrap_or(10),
            retry_initial: Duration::from_secs(retry.clamp(1, 3600)),
            max_connections: connections.clamp(1, 64) as usize,
            max_per_minute: s.max_per_minute.unwrap_or(0),
        }
    }

    fn backend(&mut self, b: RawBackend, state_dir: &Path) -> BackendConfig {
        let kind = match b.kind.as_deref().unwrap_or("manual") {
            "manual" => BackendKind::Manual,
            "http" => BackendKind::Http,
            "partner-center" => BackendKind::PartnerCenter,
            other => {
                self.problem(
                    "backend.kind",
                    format!("expected \"manual\", \"http\" or \"partner-center\", got {other:?}"),
                );
                BackendKind::Manual
            }
        };
        let concurrency = b.concurrency.unwrap_or(4);
        if concurrency == 0 || concurrency > 64 {
            self.problem("backend.concurrency", "expected 1 to 64 jobs at a time");
        }
        let rate = b.rate_per_minute.unwrap_or(500);
        if rate == 0 {
            self.problem(
                "backend.rate_per_minute",
                "expected at least 1 call per minute",
            );
        }
        let timeout = b.timeout_secs.unwrap_or(30);
        if timeout == 0 || timeout > 600 {
            self.problem("backend.timeout_secs", "expected 1 to 600 seconds");
        }
        let mut config = BackendConfig {
            kind: kind.clone(),
            base_url: b.base_url.clone(),
            verify: kind == BackendKind::PartnerCenter && b.verify.unwrap_or(true),
            max_attempts: b.max_attempts.unwrap_or(8).max(1),
            concurrency: concurrency.clamp(1, 64),
            rate_per_minute: rate.max(1),
            timeout: Duration::from_secs(timeout.clamp(1, 600)),
            partner_center: None,
            http: None,
        };
        // Keys of the other automatic kind are an error, not silently ignored: a
        // config that sets them expects them to do something.
        let pc_keys = [
            ("token_url", b.token_url.is_some()),
            ("client_id", b.client_id.is_some()),
            ("client_secret_file", b.client_secret_file.is_some()),
            ("scope", b.scope.is_some()),
            ("resource", b.resource.is_some()),
            (
                "user_refresh_token_file",
                b.user_refresh_token_file.is_some(),
            ),
            ("check_relationship", b.check_relationship.is_some()),
            ("verify", b.verify.is_some()),
        ];
        let http_keys = [
            ("token_file", b.token_file.is_some()),
            ("account_request", b.account_request.is_some()),
            ("subscription_request", b.subscription_request.is_some()),
            ("gate_request", b.gate_request.is_some()),
        ];
        // Manual ignores the other keys on purpose: switching an automatic backend
        // off must be a one-line change.
        let stray: Vec<&str> = match kind {
            BackendKind::Manual => Vec::new(),
            BackendKind::PartnerCenter => http_keys
                .iter()
                .filter(|(_, s)| *s)
                .map(|(k, _)| *k)
                .collect(),
            BackendKind::Http => pc_keys
                .iter()
                .filter(|(_, s)| *s)
                .map(|(k, _)| *k)
                .collect(),
        };
        for key in stray {
            self.problem(
                &format!("backend.{key}"),
                format!(
                    "does not apply to backend.kind = {:?}",
                    b.kind.as_deref().unwrap_or("manual")
                ),
            );
        }
        match kind {
            BackendKind::Manual => {}
            BackendKind::PartnerCenter => {
                let base_url = self.url(
                    "backend.base_url",
                    Some(
                        b.base_url
                            .unwrap_or_else(|| "https://api.partnercenter.microsoft.com".into()),
                    ),
                );
                let token_url = self.url("backend.token_url", b.token_url);
                let client_id = self.required("backend.client_id", b.client_id);
                let secret = self.secret("backend.client_secret", None, b.client_secret_file);
                if secret.is_none() {
                    self.problem(
                        "backend.client_secret_file",
                        "is required for kind = \"partner-center\"",
                    );
                }
                let (scope, resource) = match (b.scope, b.resource) {
                    (Some(_), Some(_)) => {
                        self.problem(
                            "backend.resource",
                            "set either scope (v2.0 token endpoint) or resource (v1), not both",
                        );
                        (None, None)
                    }
                    (Some(s), None) => (Some(s), None),
                    (None, Some(r)) => (None, Some(r)),
                    // The token endpoint's version decides which field it understands.
                    (None, None) if token_url.contains("/v2.0/") => (
                        Some("https://api.partnercenter.microsoft.com/.default".to_string()),
                        None,
                    ),
                    (None, None) => (
                        None,
                        Some("https://api.partnercenter.microsoft.com".to_string()),
                    ),
                };
                let user_refresh_token = b
                    .user_refresh_token_file
                    .and_then(|f| self.secret("backend.user_refresh_token", None, Some(f)));
                let check_relationship = b.check_relationship.unwrap_or(false);
                if check_relationship && user_refresh_token.is_none() {
                    self.problem(
                        "backend.check_relationship",
                        "needs app+user credentials: set backend.user_refresh_token_file",
                    );
                }
                config.partner_center = Some(PartnerCenterConfig {
                    base_url,
                    token_url,
                    client_id,
                    client_secret: secret.unwrap_or(Secret(String::new())),
                    scope,
                    resource,
                    user_refresh_token,
                    refresh_token_store: state_dir.join("partner-center.refresh-token"),
                    check_relationship,
                });
            }
            BackendKind::Http => {
                let base_url = self.url("backend.base_url", b.base_url);
                let token = self.secret("backend.token", None, b.token_file);
                if token.is_none() {
                    self.problem("backend.token_file", "is required for kind = \"http\"");
                }
                let account_request = self.request("backend.account_request", b.account_request);
                let subscription_request =
                    self.request("backend.subscription_request", b.subscription_request);
                let gate_request = b
                    .gate_request
                    .map(|r| self.request("backend.gate_request", Some(r)));
                config.http = Some(HttpBackendConfig {
                    base_url,
                    token: token.unwrap_or(Secret(String::new())),
                    account_request,
                    subscription_request,
                    gate_request,
                });
            }
        }
        config
    }

    /// An http(s) URL without a trailing slash; plain http only to a loopback host
    /// (tests), since bearer tokens travel with every request.
    fn url(&mut self, key: &str, value: Option<String>) -> String {
        let v = self.required(key, value);
        if v.is_empty() {
            return v;
        }
        let v = v.trim_end_matches('/').to_string();
        let host = v
            .strip_prefix("https://")
            .or_else(|| v.strip_prefix("http://"))
            .map(|rest| {
                let authority = rest.split('/').next().unwrap_or("");
                match authority.rsplit_once(':') {
                    Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
                    _ => authority.to_string(),
                }
            });
        match host {
            None => self.problem(key, format!("expected an http(s) URL, got {v:?}")),
            Some(h) if h.is_empty() => self.problem(key, format!("expected a host in {v:?}")),
            Some(h) if v.starts_with("http://") && !is_loopback_host(&h) => self.problem(
                key,
                format!("plain http is allowed only to a loopback host, not {h:?}; use https"),
            ),
            _ => {}
        }
        v
    }

    fn request(&mut self, key: &str, raw: Option<RawRequest>) -> RequestTemplate {
        let Some(raw) = raw else {
            self.problem(
                key,
                "is required for kind = \"http\": { method = \"PUT\", path = \"/...\", body = '{...}' }",
            );
            return RequestTemplate {
                method: "PUT".into(),
                path: "/".into(),
                body: None,
            };
        };
        let method = raw
            .method
            .unwrap_or_else(|| "PUT".into())
            .to_ascii_uppercase();
        if !["POST", "PUT", "PATCH"].contains(&method.as_str()) {
            self.problem(
                &format!("{key}.method"),
                format!("expected \"POST\", \"PUT\" or \"PATCH\", got {method:?}"),
            );
        }
        let path = raw.path.unwrap_or_default();
        if !path.starts_with('/') {
            self.problem(
                &format!("{key}.path"),
                format!("expected a path starting with \"/\", got {path:?}"),
            );
        }
        for name in crate::backend::placeholders(&path).into_iter().chain(
            raw.body
                .as_deref()
                .map(crate::backend::placeholders)
                .unwrap_or_default(),
        ) {
            if !crate::backend::PLACEHOLDERS.contains(&name.as_str()) {
                self.problem(
                    key,
                    format!(
                        "unknown placeholder {{{{{name}}}}}; known: {}",
                        crate::backend::PLACEHOLDERS.join(", ")
                    ),
                );
            }
        }
        if let Some(body) = &raw.body {
            // Checked with every placeholder filled, so a template that could never
            // produce JSON is found at start, not on the first job.
            let filled = crate::backend::fill_placeholders(body, &|_| "0".to_string());
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&filled) {
                self.problem(
                    &format!("{key}.body"),
                    format!("expected a JSON template (placeholders as {{{{name}}}}): {e}"),
                );
            }
        }
        RequestTemplate {
            method,
            path,
            body: raw.body,
        }
    }
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// Reads a secret file, refusing one that others may read: a leaked password file
/// is worse than a daemon that will not start.
pub fn read_secret_file(path: &Path) -> Result<Secret> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Secret(text.trim_end_matches(['\n', '\r']).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let text = include_str!("../config.example.toml");
        let dir = tempfile::tempdir().unwrap();
        // The example refers to secret files; parse it with them present.
        let text = text.replace("/etc/mpnd/", &format!("{}/", dir.path().display()));
        for f in ["imap.password", "gate.token", "smtp.password"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        let c = Config::parse(&text, "config.example.toml", dir.path()).unwrap();
        assert!(matches!(c.mailbox, MailboxConfig::Imap(_)));
        assert_eq!(c.smtp.max_per_minute, 30, "Exchange Online's pace");
        assert_eq!(
            c.gate.push_token_file,
            Some(dir.path().join("push.token")),
            "the push has a token of its own"
        );
        assert!(c
            .policy
            .own_addresses
            .iter()
            .any(|a| a.starts_with("cloud@")));
    }

    #[test]
    fn unknown_key_names_line() {
        let err = Config::parse(
            "[mailbox]\nkind = \"imap\"\nhots = \"x\"\n",
            "c.toml",
            Path::new("/"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("c.toml:3:"), "{err}");
        assert!(err.contains("hots"), "{err}");
    }

    #[test]
    fn bad_values_name_key_and_expectation() {
        let text = "[mailbox]\nkind = \"imap\"\nhost = \"imap.example\"\ntls = \"none\"\nusername = \"u\"\npassword = \"p\"\n[gate]\nlisten = \"nope\"\n";
        let err = Config::parse(text, "c.toml", Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "c.toml:4: mailbox.tls: tls = \"none\" is allowed only to a loopback host"
            ),
            "{err}"
        );
        assert!(
            err.contains("c.toml:8: gate.listen: expected an address"),
            "{err}"
        );
        assert!(!err.contains("\"p\""), "secret leaked: {err}");
    }

    #[test]
    fn backends_parse_and_name_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pc.secret"), "hunter2\n").unwrap();
        let pc = "[backend]\nkind = \"partner-center\"\ntoken_url = \"https://login.example/t/oauth2/token\"\n\
                  client_id = \"c\"\nclient_secret_file = \"pc.secret\"\n";
        let c = Config::parse(pc, "c.toml", dir.path()).unwrap();
        let p = c.backend.partner_center.as_ref().unwrap();
        assert!(c.backend.verify, "verify defaults to true");
        assert_eq!(p.base_url, "https://api.partnercenter.microsoft.com");
        assert_eq!(
            p.resource.as_deref(),
            Some("https://api.partnercenter.microsoft.com"),
            "v1 endpoint"
        );
        assert!(!format!("{c:?}").contains("hunter2"), "secret in Debug");

        let bad = "[backend]\nkind = \"partner-center\"\nbase_url = \"http://pc.example\"\n\
                   token_url = \"https://login.example/t/oauth2/v2.0/token\"\nclient_id = \"c\"\n\
                   client_secret_file = \"pc.secret\"\ntoken_file = \"x\"\ncheck_relationship = true\n";
        let err = Config::parse(bad, "c.toml", dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "c.toml:3: backend.base_url: plain http is allowed only to a loopback host"
            ),
            "{err}"
        );
        assert!(
            err.contains("c.toml:7: backend.token_file: does not apply"),
            "{err}"
        );
        assert!(
            err.contains("backend.check_relationship: needs app+user credentials"),
            "{err}"
        );
        assert!(!err.contains("hunter2"));

        let http = "[backend]\nkind = \"http\"\nbase_url = \"http://127.0.0.1:9\"\ntoken_file = \"pc.secret\"\n\
                    account_request = { path = \"/a/{{account}}\", body = '{\"id\": \"{{mpn_id}}\"}' }\n\
                    subscription_request = { method = \"GET\", path = \"/s/{{nope}}\", body = '{oops' }\n";
        let err = Config::parse(http, "c.toml", dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("backend.subscription_request.method: expected \"POST\""),
            "{err}"
        );
        assert!(err.contains("unknown placeholder {{nope}}"), "{err}");
        assert!(
            err.contains("backend.subscription_request.body: expected a JSON template"),
            "{err}"
        );
        assert!(!err.contains("account_request"), "{err}");
    }

    #[test]
    fn smtp_limits_default_and_are_checked() {
        let c = Config::parse("[smtp]\nkind = \"file\"\n", "c.toml", Path::new("/")).unwrap();
        assert_eq!(c.smtp.max_connections, DEFAULT_SMTP_CONNECTIONS);
        assert_eq!(c.smtp.max_per_minute, 0, "no pace unless asked");
        let c = Config::parse(
            "[smtp]\nkind = \"file\"\nmax_connections = 3\nmax_per_minute = 30\n",
            "c.toml",
            Path::new("/"),
        )
        .unwrap();
        assert_eq!((c.smtp.max_connections, c.smtp.max_per_minute), (3, 30));
        let err = Config::parse(
            "[smtp]\nkind = \"file\"\nmax_connections = 0\n",
            "c.toml",
            Path::new("/"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("c.toml:3: smtp.max_connections: expected 1 to 64 connections"),
            "{err}"
        );
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
