//! The daemon: one task per concern, started in order and stopped together.
//!
//! Tasks: the mailbox loop (fetch → triage → [verify] → commit → settle, in that
//! order, so a mail leaves the inbox only after its case is on disk), the mailer
//! (outbox → SMTP or files), the job worker (automatic backends only), and the
//! gate API. A mail whose new ID cannot be verified now (Partner Center down,
//! throttled) is not committed at all: it stays in the inbox and is tried again
//! on a later pass, so an outage neither rejects a reseller nor needs an operator. Start-up errors (bad config, store, port) end
//! the process; errors inside a loop are logged with their context, the loop backs
//! off and goes on. SIGTERM or ctrl-c cancels one token; every task is then joined
//! within `SHUTDOWN_GRACE`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, Verification};
use crate::config::{Auth, Config, ImapConfig, MailboxConfig, Tls};
use crate::gate::{self, Health};
use crate::mailbox::imap::{self, Cursor, ImapAuth, ImapMailbox, ImapSettings, TlsMode};
use crate::mailbox::maildir::Maildir;
use crate::mailbox::Destination;
use crate::mailer;
use crate::notify::{self, Notifier};
use crate::oauth::TokenSource;
use crate::reply::Templates;
use crate::store::{fmt_time, now, Checkpointer, Committed, Ctx, Incoming, Store};
use crate::triage::{self, Decision, Outcome, Registry, RejectReason, Triage};
use crate::worker;

const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
const MAILDIR_POLL: Duration = Duration::from_millis(250);
/// A mailbox loop whose heartbeat is older than this is taken for wedged.
const HEARTBEAT_MAX_AGE: i64 = 120;
const REPORT_EVERY: i64 = 10;

/// What may change on SIGHUP without a restart: policy, templates, limits and
/// the backend's settings. The mailbox, SMTP transport, gate and the backend's
/// kind keep running as they started.
pub struct Live {
    pub config: Config,
    pub templates: Templates,
    pub backend: Arc<Backend>,
}

impl Live {
    /// The context for a store write by `actor`, now.
    pub fn ctx<'a>(&'a self, actor: &'a str) -> Ctx<'a> {
        Ctx {
            now: now(),
            from: &self.config.smtp.from,
            templates: &self.templates,
            max_per_recipient_per_day: self.config.smtp.max_per_recipient_per_day,
            actor,
        }
    }
}

pub type Shared = Arc<RwLock<Arc<Live>>>;

/// Runs until `shutdown` is cancelled. `config_path` is re-read on SIGHUP.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: CancellationToken,
) -> Result<()> {
    warm_up_triage();
    let notifier = Arc::new(Notifier::from_env());
    let templates = Templates::load(config.templates_dir.as_deref())?;
    let mut store = Store::open(&config.db_path())?;
    let checkpointer = Checkpointer::start(&config.db_path())?;
    store.hand_checkpoints_to(&checkpointer);
    let gate_store = Arc::new(gate::ReadPool::open(&config.db_path(), 4)?);
    let token = gate::load_or_create_token(&config.gate.token_file)?;
    let push_token = match &config.gate.push_token_file {
        Some(path) => gate::load_or_create_token(path)?,
        None => token.clone(),
    };
    let listener = gate::bind(config.gate.listen).await?;
    let health = Arc::new(Health::default());
    health.heartbeat.store(now(), Ordering::Relaxed);
    let wake = Arc::new(Notify::new());
    let store = Arc::new(Mutex::new(store));
    let (nudge_tx, nudge_rx) = mpsc::channel(1);
    let (jobs_tx, jobs_rx) = mpsc::channel(1);
    let backend = Arc::new(Backend::new(&config.backend)?);
    let live: Shared = Arc::new(RwLock::new(Arc::new(Live {
        config: config.clone(),
        templates,
        backend: backend.clone(),
    })));
    let gate_addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();

    // Listening for SIGHUP before READY: a reload sent right after the start must
    // not meet SIGHUP's default action, which ends the process.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());

    // Ready: the store is open and migrated, the gate's port is bound (it accepts
    // connections from here on). Said before any task can report a STATUS.
    tracing::info!(config = %config.source, state_dir = %config.state_dir.display(), gate = %gate_addr, "mpnd started");
    notifier.ready(&format!("running; gate on {gate_addr}"));

    let mut tasks = tokio::task::JoinSet::new();
    let mut mailer_store = Store::open_relaxed(&config.db_path())?;
    mailer_store.hand_checkpoints_to(&checkpointer);
    let mailer_store = Arc::new(Mutex::new(mailer_store));
    tasks.spawn(mailer::run(
        mailer_store.clone(),
        config.smtp.clone(),
        nudge_rx,
        shutdown.clone(),
    ));
    if backend.is_automatic() {
        let w = worker::Worker {
            store: store.clone(),
            live: live.clone(),
            mailer: nudge_tx.clone(),
            again: jobs_tx.clone(),
        };
        tasks.spawn(worker::run(w, jobs_rx, shutdown.clone()));
    }
    {
        let push = gate::Push {
            token: Arc::new(push_token),
            wake: wake.clone(),
            folder: match &config.mailbox {
                MailboxConfig::Imap(imap) => Some(imap.inbox.clone()),
                MailboxConfig::Maildir { .. } => None,
            },
        };
        let (h, s) = (health.clone(), shutdown.clone());
        let gs = gate_store.clone();
        tasks.spawn(async move {
            if let Err(e) = gate::serve(listener, gs, token, h, push, s).await {
                tracing::error!("{e:#}");
            }
        });
    }
    let pipeline = Pipeline {
        store: store.clone(),
        live: live.clone(),
        nudge: nudge_tx,
        jobs: jobs_tx,
        health: health.clone(),
        notifier: notifier.clone(),
        mailbox: String::new(),
        wake: wake.clone(),
    };
    match &config.mailbox {
        MailboxConfig::Maildir { path } => {
            let maildir = Maildir::open(path)?;
            let pipeline = Pipeline {
                mailbox: format!("maildir:{}", path.display()),
                ..pipeline
            };
            tasks.spawn(maildir_loop(
                Arc::new(maildir),
                Arc::new(pipeline),
                shutdown.clone(),
            ));
        }
        MailboxConfig::Imap(imap) => {
            let settings = imap_settings(imap, config.max_message_size);
            let pipeline = Pipeline {
                mailbox: format!("imap:{}@{}/{}", imap.username, imap.host, imap.inbox),
                ..pipeline
            };
            tasks.spawn(imap_loop(settings, Arc::new(pipeline), shutdown.clone()));
        }
    }
    let release_sqlite_memory = {
        let stores = [store.clone(), mailer_store.clone()];
        let gate_store = gate_store.clone();
        Arc::new(move || {
            for s in &stores {
                s.lock().unwrap_or_else(|p| p.into_inner()).release_memory();
            }
            gate_store.release_memory();
        })
    };
    tasks.spawn(trim_when_quiet(
        health.clone(),
        release_sqlite_memory,
        shutdown.clone(),
    ));
    if let Some(interval) = notify::watchdog_interval() {
        tasks.spawn(watchdog(
            interval,
            health.clone(),
            notifier.clone(),
            shutdown.clone(),
        ));
    }
    match hangup {
        Ok(hup) => {
            tasks.spawn(reload_on_hangup(
                hup,
                config_path,
                live.clone(),
                notifier.clone(),
                shutdown.clone(),
            ));
        }
        Err(e) => tracing::error!("cannot listen for SIGHUP: {e}"),
    }

    shutdown.cancelled().await;
    tracing::info!("stopping");
    notifier.stopping();
    let joined = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if joined.is_err() {
        tracing::warn!("tasks did not stop within {SHUTDOWN_GRACE:?}; abandoning them");
        tasks.abort_all();
    }
    drop(tasks);
    // The last checkpoint, once nobody writes any more.
    drop(checkpointer);
    tracing::info!("stopped");
    Ok(())
}

/// Pings systemd's watchdog while the mailbox loop shows signs of life. A loop
/// that is wedged (a hung command, a lock never released) stops its heartbeat, the
/// pings stop, and systemd restarts the service.
async fn watchdog(
    interval: Duration,
    health: Arc<Health>,
    notifier: Arc<Notifier>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval / 3);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let age = now() - health.heartbeat.load(Ordering::Relaxed);
        if age <= HEARTBEAT_MAX_AGE {
            notifier.watchdog();
        } else {
            tracing::error!("mailbox loop silent for {age} s: not pinging the watchdog");
        }
    }
}

/// Hands memory back to the system once the daemon goes quiet after work. glibc
/// keeps what a backlog or a burst of gate requests freed in its arenas: the idle
/// daemon stayed at 41 MB after the latency and gate benchmarks (12 MB fresh).
/// A trim when a tick sees no activity after one that did; never while idle.
/// `release` first hands SQLite's page caches back, so the trim can return them.
/// Both run on a blocking thread: they wait for a connection a task may be using
/// (a `try_lock` skipped a busy one, and the daemon then idled with its cache),
/// and the trim itself walks the whole heap.
async fn trim_when_quiet(
    health: Arc<Health>,
    release: Arc<dyn Fn() + Send + Sync>,
    shutdown: CancellationToken,
) {
    let activity = |h: &Health| {
        [
            &h.processed,
            &h.gate_allowed,
            &h.gate_blocked,
            &h.gate_unknown,
            &h.gate_unauthorized,
            &h.push_woke,
            &h.push_ignored,
            &h.push_unauthorized,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .fold(0u64, u64::wrapping_add)
    };
    let mut tick = tokio::time::interval(TRIM_TICK);
    let mut last = activity(&health);
    let mut busy = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let seen = activity(&health);
        if seen != last {
            (last, busy) = (seen, true);
        } else if std::mem::take(&mut busy) {
            let release = release.clone();
            let _ = tokio::task::spawn_blocking(move || {
                release();
                trim_malloc();
            })
            .await;
        }
    }
}

/// Caps glibc's malloc arenas at one per core (at least two), before the daemon
/// starts its threads. By default every thread that meets a busy arena gets one
/// of its own, up to eight per core, and each keeps the memory it freed: after a
/// 1,000-mail backlog the daemon peaked at 45 MB and idled at 34.5 MB; with two
/// arenas 35 and 32 MB, in the same time (`bench/run.py`, `MALLOC_ARENA_MAX=2`).
/// `MALLOC_ARENA_MAX` in the environment still decides when it is set.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = cores.clamp(2, 64) as libc::c_int;
        // SAFETY: mallopt only sets a parameter of the allocator, under its lock.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// Hand what the allocator holds free back to the system.
fn trim_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes a byte count and only walks the allocator's own
    // free lists, under its own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

const TRIM_TICK: Duration = Duration::from_secs(5);

/// SIGHUP: read the config file again and use its policy, templates and limits.
/// A bad file changes nothing: the error is logged and the old config stays.
/// `hup` is listened to from before READY, and also without a config file (the
/// embedded default): SIGHUP's default action would end the daemon.
async fn reload_on_hangup(
    mut hup: tokio::signal::unix::Signal,
    path: Option<PathBuf>,
    live: Shared,
    notifier: Arc<Notifier>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup.recv() => {}
        }
        let Some(path) = &path else {
            tracing::info!("SIGHUP: running on the embedded default, no file to reload");
            continue;
        };
        notifier.reloading();
        let current = live.read().expect("config lock poisoned").clone();
        match reload(path, &current) {
            Ok((next, changes)) => {
                if changes.is_empty() {
                    tracing::info!(config = %path.display(), "configuration reloaded: nothing changed");
                } else {
                    tracing::info!(config = %path.display(), changes = %changes.join("; "), "configuration reloaded");
                }
                *live.write().expect("config lock poisoned") = Arc::new(next);
            }
            Err(e) => {
                tracing::error!(
                    "configuration not reloaded, still running on the previous one: {e:#}"
                );
            }
        }
        notifier.send("READY=1\nSTATUS=running");
    }
}

/// Loads the new config and says what changed; parts that need a restart (mailbox,
/// gate, state dir) are reported and keep their running values.
pub fn reload(path: &Path, old: &Live) -> Result<(Live, Vec<String>)> {
    let old_backend = &old.backend;
    let old = &old.config;
    let mut new = Config::load(path)?;
    let templates = Templates::load(new.templates_dir.as_deref())?;
    let mut changes = Vec::new();
    if format!("{:?}", new.policy) != format!("{:?}", old.policy) {
        changes.push("policy".to_string());
    }
    if new.templates_dir != old.templates_dir {
        changes.push("templates".to_string());
    }
    if new.max_message_size != old.max_message_size {
        changes.push("max_message_size".to_string());
    }
    if new.smtp.max_per_recipient_per_day != old.smtp.max_per_recipient_per_day
        || new.smtp.from != old.smtp.from
    {
        changes.push("smtp.from/limits".to_string());
    }
    // The backend's settings (URLs, credentials, verify, limits) apply to the next
    // job and the next verification; a different kind needs a restart, since the
    // worker runs only for automatic backends.
    let backend = if format!("{:?}", new.backend) == format!("{:?}", old.backend) {
        old_backend.clone()
    } else if new.backend.kind == old.backend.kind {
        changes.push("backend".to_string());
        Arc::new(Backend::new(&new.backend)?)
    } else {
        changes.push("backend.kind changed but needs a restart: keeping the running one".into());
        new.backend = old.backend.clone();
        old_backend.clone()
    };
    for (what, differs) in [
        (
            "mailbox",
            format!("{:?}", new.mailbox) != format!("{:?}", old.mailbox),
        ),
        (
            "smtp transport",
            format!("{:?}", new.smtp.transport) != format!("{:?}", old.smtp.transport),
        ),
        (
            "smtp.retry_initial_secs/max_connections/max_per_minute",
            (
                new.smtp.retry_initial,
                new.smtp.max_connections,
                new.smtp.max_per_minute,
            ) != (
                old.smtp.retry_initial,
                old.smtp.max_connections,
                old.smtp.max_per_minute,
            ),
        ),
        (
            "gate",
            format!("{:?}", new.gate) != format!("{:?}", old.gate),
        ),
        ("state_dir", new.state_dir != old.state_dir),
    ] {
        if differs {
            changes.push(format!(
                "{what} changed but needs a restart: keeping the running one"
            ));
        }
    }
    new.mailbox = old.mailbox.clone();
    new.smtp.transport = old.smtp.transport.clone();
    new.smtp.retry_initial = old.smtp.retry_initial;
    new.smtp.max_connections = old.smtp.max_connections;
    new.smtp.max_per_minute = old.smtp.max_per_minute;
    new.gate = old.gate.clone();
    new.state_dir = old.state_dir.clone();
    Ok((
        Live {
            config: new,
            templates,
            backend,
        },
        changes,
    ))
}

/// Cancels `token` on SIGTERM, SIGINT (ctrl-c). The handlers are in place when
/// this returns (a task installing them later left a signal sent right after the
/// start to the default action).
pub fn stop_on_signals(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (term, int) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    let (mut term, mut int) = match (term, int) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("cannot listen for SIGTERM/SIGINT: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        token.cancel();
    });
}

/// One mail to process: where it sits and its bytes (`None` when too large to fetch).
pub struct Item<'a> {
    pub position: String,
    pub uidvalidity: u32,
    pub size: u64,
    pub raw: Option<&'a [u8]>,
}

/// What the registry looks like once `t` (an apply) is committed: its ID is the
/// reseller's current one (being applied), and the ID it replaces is old (as `Store::registry`
/// would say after the commit).
fn note_apply(registry: &mut Registry, t: &Triage, touched: &mut HashSet<String>) {
    let (Some(account), Some(id)) = (&t.reseller, &t.mpn_id) else {
        return;
    };
    if let Some(r) = registry
        .resellers
        .iter_mut()
        .find(|r| &r.account == account)
    {
        touched.insert(id.to_string());
        r.updating = true;
        if let Some(previous) = r.current_id.replace(id.to_string()) {
            if previous != id.as_str() && !r.old_ids.contains(&previous) {
                touched.insert(previous.clone());
                r.old_ids.push(previous);
            }
        }
    }
}

/// Runs the calling thread at nice 10 (Linux sets it per thread). Triage threads
/// work ahead of the batch that is committing; on a busy machine the commit, the
/// moves and the gate are what someone waits for, so they get the CPU first.
fn lower_priority() {
    // SAFETY: setpriority only reads its integer arguments; `who` 0 is this thread.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
}

/// Triages a batch on every core against the registry as it was when the batch
/// began. Triage is pure and was half of a backlog's CPU on one core; the caller
/// repeats the few mails whose result an earlier apply of the same batch could
/// change (see [`Pipeline::process_batch`]).
fn triage_all(
    items: &[Item<'_>],
    registry: &Registry,
    config: &Config,
    heartbeat: &std::sync::atomic::AtomicI64,
) -> Vec<Triage> {
    let one = |item: &Item<'_>| match item.raw {
        Some(raw) if item.size <= config.max_message_size => {
            triage_guarded(raw, registry, &config.policy)
        }
        _ => oversize(item.size, config.max_message_size),
    };
    // Always on the pool, a single mail too: each thread that runs the regexes
    // keeps caches of its own (tens of MB over the blocking pool's threads).
    match triage_pool() {
        Some(pool) if !items.is_empty() => pool.install(|| {
            items
                .par_iter()
                .map(|item| {
                    heartbeat.store(now(), Ordering::Relaxed);
                    one(item)
                })
                .collect()
        }),
        _ => items.iter().map(one).collect(),
    }
}

/// One mail triaged again on the triage threads (see [`triage_all`]).
fn retriage(raw: &[u8], registry: &Registry, policy: &triage::Policy) -> Triage {
    match triage_pool() {
        Some(pool) => {
            tokio::task::block_in_place(|| pool.install(|| triage_guarded(raw, registry, policy)))
        }
        None => triage_guarded(raw, registry, policy),
    }
}

/// The triage threads: one per core, kept for the life of the process. Threads
/// made anew for every batch left each regex with caches for every thread id it
/// had seen (73 MB resident after a backlog instead of 44).
/// Without threads (the OS refused them) triage runs on the caller's thread.
fn triage_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
            .thread_name(|i| format!("mpnd-triage-{i}"))
            .start_handler(|_| lower_priority())
            .build()
            .inspect_err(|e| tracing::warn!("no triage threads, triaging on one: {e}"))
            .ok()
    })
    .as_ref()
}

/// A batch triaged ahead of its turn (on the triage threads, while the batch before
/// it commits), against the config and registry of that moment.
pub struct Speculation {
    live: Arc<Live>,
    registry: Registry,
    triages: Vec<Triage>,
}

/// The IDs whose standing differs between two registries, or `None` when anything
/// else differs (a reseller, contact or domain added or removed): then every mail
/// must be triaged again.
fn changed_ids(before: &Registry, now: &Registry) -> Option<HashSet<String>> {
    if before.resellers.len() != now.resellers.len() {
        return None;
    }
    let mut ids = HashSet::new();
    for (a, b) in before.resellers.iter().zip(&now.resellers) {
        if a.account != b.account
            || a.company != b.company
            || a.contact_emails != b.contact_emails
            || a.domains != b.domains
            || a.locale != b.locale
        {
            return None;
        }
        if a.current_id != b.current_id || a.updating != b.updating {
            ids.extend(a.current_id.iter().chain(&b.current_id).cloned());
        }
        if a.old_ids != b.old_ids {
            let (x, y): (HashSet<&String>, HashSet<&String>) =
                (a.old_ids.iter().collect(), b.old_ids.iter().collect());
            ids.extend(x.symmetric_difference(&y).map(|s| (*s).clone()));
        }
    }
    Some(ids)
}

/// What processing one mail needs, shared by every mailbox kind.
pub struct Pipeline {
    pub store: Arc<Mutex<Store>>,
    pub live: Shared,
    pub nudge: mpsc::Sender<()>,
    /// Wakes the job worker when a case with jobs was committed.
    pub jobs: mpsc::Sender<()>,
    pub health: Arc<Health>,
    pub notifier: Arc<Notifier>,
    pub mailbox: String,
    /// Notified by the gate's push endpoint: the mail server says new mail is in
    /// the inbox, so the loop looks now instead of waiting for IDLE or a poll.
    pub wake: Arc<Notify>,
}

impl Pipeline {
    /// Triage, verify and commit a batch of mails in one store transaction;
    /// returns, per mail, where it must go, or `None` when it must stay in the
    /// inbox for now (its ID could not be verified: try again later). A mail seen
    /// before (same Message-ID or position) is not processed again.
    ///
    /// Mails are triaged in order against a registry that learns each apply of
    /// the batch (the ID becomes taken, the reseller's previous one old), exactly
    /// as if each had been committed before the next was triaged.
    ///
    /// `ahead` is the same batch triaged earlier by [`Pipeline::speculate`]; it is
    /// used where the registry and config it saw still hold.
    pub async fn process_batch(
        &self,
        items: &[Item<'_>],
        ahead: Option<Speculation>,
    ) -> Result<Vec<Option<Committed>>> {
        let live = self.live.read().expect("config lock poisoned").clone();
        let config = &live.config;
        let mut registry = self.registry()?;
        // IDs whose standing changed since the triage was made: by commits after
        // the speculation's registry was read, and by each apply earlier in this
        // batch (the new ID is taken now, the reseller's previous one old). Triage
        // reads the registry only to judge the chosen ID, so a mail is triaged
        // again, in order, exactly when its ID is one of these.
        let reuse = ahead.and_then(|a| {
            let same = Arc::ptr_eq(&a.live, &live) && a.triages.len() == items.len();
            let ids = changed_ids(&a.registry, &registry).filter(|_| same)?;
            Some((a.triages, ids))
        });
        let reused = reuse.is_some();
        let mut again = 0usize;
        let (speculative, mut touched) = match reuse {
            Some(r) => r,
            None => (
                tokio::task::block_in_place(|| {
                    triage_all(items, &registry, config, &self.health.heartbeat)
                }),
                HashSet::new(),
            ),
        };
        let mut prepared: Vec<Option<(Incoming<'_>, Triage)>> = Vec::with_capacity(items.len());
        for (item, mut t) in items.iter().zip(speculative) {
            self.health.heartbeat.store(now(), Ordering::Relaxed);
            if let (Some(raw), Some(id)) = (item.raw, &t.mpn_id) {
                if touched.contains(id.as_str()) && item.size <= config.max_message_size {
                    t = retriage(raw, &registry, &config.policy);
                    again += 1;
                }
            }
            let key = match (&t.headers.message_id, item.raw) {
                (Some(id), _) => format!("mid:{id}"),
                (None, Some(raw)) => format!("sha256:{:x}", Sha256::digest(raw)),
                (None, None) => format!(
                    "pos:{}:{}:{}",
                    self.mailbox, item.uidvalidity, item.position
                ),
            };
            let incoming = Incoming {
                key,
                mailbox: self.mailbox.clone(),
                uidvalidity: item.uidvalidity,
                position: item.position.clone(),
                size: item.size,
                raw: item.raw,
            };
            if t.decision == Decision::Apply && live.backend.verifies() {
                let seen = self
                    .store
                    .lock()
                    .expect("store lock poisoned")
                    .seen(&incoming)?;
                if seen.is_none() {
                    if let Some(id) = t.mpn_id.clone() {
                        if !self.verify(&mut t, &id).await {
                            prepared.push(None);
                            continue;
                        }
                    }
                }
            }
            if t.decision == Decision::Apply {
                note_apply(&mut registry, &t, &mut touched);
            }
            prepared.push(Some((incoming, t)));
        }
        let ctx = live.ctx("mpnd");
        let batch: Vec<(&Incoming<'_>, &Triage)> =
            prepared.iter().flatten().map(|(m, t)| (m, t)).collect();
        let started = std::time::Instant::now();
        // SQLite with fsync: blocking work, moved off the async worker so the gate
        // keeps answering during a large backlog.
        let committed = tokio::task::block_in_place(|| {
            self.store
                .lock()
                .expect("store lock poisoned")
                .commit_many(&batch, &ctx)
        });
        tracing::debug!(
            mails = items.len(),
            ahead = reused,
            again,
            commit_ms = started.elapsed().as_millis() as u64,
            "batch triaged and committed"
        );
        // /healthz reports a store that cannot be written (disk full, read-only),
        // which a read alone would not notice.
        self.health
            .store_write_failing
            .store(committed.is_err(), Ordering::Relaxed);
        let mut committed = committed?.into_iter();
        let mut out = Vec::with_capacity(items.len());
        let mut fresh = false;
        for (item, p) in items.iter().zip(&prepared) {
            let Some((_, t)) = p else {
                out.push(None);
                continue;
            };
            let Some(c) = committed.next() else {
                anyhow::bail!("the store answered fewer results than mails in the batch");
            };
            if c.duplicate {
                tracing::info!(position = %item.position, case = c.case_id, "already committed; moving it again");
            } else {
                fresh = true;
                tracing::info!(
                    case = c.case_id,
                    reseller = t.reseller.as_deref().unwrap_or("-"),
                    outcome = t.outcome.as_str(),
                    decision = t.decision.as_str(),
                    mpn_id = t.mpn_id.as_ref().map(|i| i.as_str()).unwrap_or("-"),
                    reasons = %t.reasons.join("; "),
                    "mail triaged"
                );
            }
            out.push(Some(c));
        }
        if fresh {
            let _ = self.nudge.try_send(());
            let _ = self.jobs.try_send(());
        }
        Ok(out)
    }

    /// Adds Microsoft's answer to the triage: evidence when valid, a rejection
    /// when not. Returns false when there is no answer now (the mail waits).
    async fn verify(&self, t: &mut Triage, id: &triage::MpnId) -> bool {
        let backend = self
            .live
            .read()
            .expect("config lock poisoned")
            .backend
            .clone();
        match backend.verify(id).await {
            Verification::Skipped => true,
            Verification::Valid { evidence } => {
                t.reasons.push(evidence);
                true
            }
            Verification::Invalid {
                code,
                description,
                evidence,
            } => {
                t.reasons.push(evidence);
                t.decision = Decision::Reject;
                t.reject = Some(RejectReason::NotAuthorisedAtMicrosoft { code, description });
                true
            }
            Verification::Unavailable(why) => {
                tracing::debug!(mpn_id = %id, "verification unavailable, mail waits: {why}");
                let _ = self.store.lock().expect("store lock poisoned").set_status(
                    "verification",
                    &format!("unavailable: {why}"),
                    now(),
                );
                false
            }
        }
    }

    /// Tells `mpnd status` (through the store) and systemd (STATUS=) how the mailbox
    /// loop is doing; at most every `REPORT_EVERY` seconds unless there is an error.
    pub fn report(&self, state: &str, error: Option<&str>) {
        let t = now();
        let last = self.health.last_report.load(Ordering::Relaxed);
        if error.is_none() && t - last < REPORT_EVERY {
            return;
        }
        self.health.last_report.store(t, Ordering::Relaxed);
        let backlog = self.health.backlog.load(Ordering::Relaxed);
        let value = serde_json::json!({
            "state": state,
            "last_fetch": fmt_time(self.health.last_fetch.load(Ordering::Relaxed)),
            "backlog": backlog,
            "processed_since_start": self.health.processed.load(Ordering::Relaxed),
            "errors": self.health.mailbox_errors.load(Ordering::Relaxed),
            "last_error": error.unwrap_or(""),
        });
        if let Ok(mut s) = self.store.lock() {
            if let Err(e) = s.set_status("mailbox", &value.to_string(), t) {
                tracing::debug!("cannot record status: {e:#}");
            }
        }
        self.notifier.status(&format!(
            "{state}; {} mails since start, backlog {backlog}{}",
            self.health.processed.load(Ordering::Relaxed),
            error.map(|e| format!("; error: {e}")).unwrap_or_default()
        ));
    }

    /// Triages a batch now, on every core, for [`Pipeline::process_batch`] to use
    /// later. Blocking: call it on the blocking pool.
    pub fn speculate(&self, items: &[Item<'_>]) -> Result<Speculation> {
        let live = self.live.read().expect("config lock poisoned").clone();
        let registry = self.registry()?;
        let triages = triage_all(items, &registry, &live.config, &self.health.heartbeat);
        Ok(Speculation {
            live,
            registry,
            triages,
        })
    }

    pub fn registry(&self) -> Result<Registry> {
        self.store.lock().expect("store lock poisoned").registry()
    }
}

/// Triage the warm-up samples on a triage thread (at low priority, without
/// waiting), so the regexes are compiled while the store opens and the mailbox
/// connects, not while the first batch waits (it took 66 ms instead of ~15).
/// One thread, then a trim: the daemon idles in no more memory than after its
/// first mail.
fn warm_up_triage() {
    let Some(pool) = triage_pool() else { return };
    pool.spawn(|| {
        let (registry, policy) = (triage::warm::registry(), triage::warm::policy());
        for raw in triage::warm::SAMPLES {
            let _ = triage_guarded(raw.as_bytes(), &registry, &policy);
        }
        trim_malloc();
    });
}

/// Triage must never take the daemon down: a panic (a bug, by contract there is
/// none) becomes a case for review instead.
fn triage_guarded(raw: &[u8], registry: &Registry, policy: &triage::Policy) -> Triage {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        triage::triage(raw, registry, policy)
    })) {
        Ok(t) => t,
        Err(_) => {
            let mut t = oversize(0, 0);
            t.reasons = vec!["triage failed on this mail (a bug): please review it by hand".into()];
            t
        }
    }
}

fn oversize(size: u64, max: u64) -> Triage {
    Triage {
        outcome: Outcome::None,
        mpn_id: None,
        decision: Decision::Review,
        reasons: vec![format!(
            "mail is {size} bytes, over max_message_size ({max}): not read"
        )],
        candidates: Vec::new(),
        headers: Default::default(),
        reseller: None,
        reject: None,
    }
}

async fn maildir_loop(maildir: Arc<Maildir>, p: Arc<Pipeline>, shutdown: CancellationToken) {
    let mut failures = 0u32;
    let started = now();
    while !shutdown.is_cancelled() {
        match maildir_pass(&maildir, &p, &shutdown).await {
            Ok(()) => {
                failures = 0;
                p.health.last_fetch.store(now(), Ordering::Relaxed);
                p.health.heartbeat.store(now(), Ordering::Relaxed);
                p.report(
                    &format!(
                        "maildir {}: watching since {}",
                        maildir.root().display(),
                        fmt_time(started)
                    ),
                    None,
                );
            }
            Err(e) => {
                failures += 1;
                p.health.mailbox_errors.fetch_add(1, Ordering::Relaxed);
                p.health.heartbeat.store(now(), Ordering::Relaxed);
                tracing::error!("mailbox: {e:#}");
                p.report(
                    &format!("maildir {}: failing", maildir.root().display()),
                    Some(&format!("{e:#}")),
                );
            }
        }
        let wait = if failures == 0 {
            MAILDIR_POLL
        } else {
            Duration::from_secs((1u64 << failures.min(6)).min(60))
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = p.wake.notified(), if failures == 0 => {}
        }
    }
}

/// Mails read and committed together (one transaction, one fsync).
const MAILDIR_BATCH: usize = 50;

async fn maildir_pass(maildir: &Maildir, p: &Pipeline, shutdown: &CancellationToken) -> Result<()> {
    let entries = maildir.scan()?;
    p.health
        .backlog
        .store(entries.len() as u64, Ordering::Relaxed);
    let max = p
        .live
        .read()
        .expect("config lock poisoned")
        .config
        .max_message_size;
    for chunk in entries.chunks(MAILDIR_BATCH) {
        if shutdown.is_cancelled() {
            break;
        }
        // An oversize mail is not read at all; its case says so.
        let raws = chunk
            .iter()
            .map(|e| {
                if e.size > max {
                    Ok(None)
                } else {
                    read_file(&e.path).map(Some)
                }
            })
            .collect::<Result<Vec<Option<Vec<u8>>>>>()?;
        let items: Vec<Item<'_>> = chunk
            .iter()
            .zip(&raws)
            .map(|(e, raw)| Item {
                position: e.name.clone(),
                uidvalidity: 0,
                size: raw.as_ref().map_or(e.size, |r| r.len() as u64),
                raw: raw.as_deref(),
            })
            .collect();
        let results = p.process_batch(&items, None).await?;
        for (entry, committed) in chunk.iter().zip(results) {
            // None: not decided yet (verification unavailable), it stays in the inbox.
            if let Some(committed) = committed {
                maildir.settle(entry, committed.destination)?;
                p.health.processed.fetch_add(1, Ordering::Relaxed);
                p.health.backlog.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The IMAP settings the client needs, from the checked config.
fn imap_settings(c: &ImapConfig, max_message_size: u64) -> ImapSettings {
    ImapSettings {
        host: c.host.clone(),
        port: c.port,
        tls: match c.tls {
            Tls::Implicit => TlsMode::Implicit,
            Tls::Starttls => TlsMode::Starttls,
            Tls::None => TlsMode::None,
        },
        username: c.username.clone(),
        auth: match &c.auth {
            Auth::Password(p) => ImapAuth::Password(p.expose().to_string()),
            Auth::XOAuth2(o) => ImapAuth::XOAuth2(Arc::new(TokenSource::new(
                o.token_url.clone(),
                o.client_id.clone(),
                o.client_secret.expose().to_string(),
                o.scope.clone(),
            ))),
        },
        inbox: c.inbox.clone(),
        processed: c.processed.clone(),
        review: c.review.clone(),
        ignored: c.ignored.clone(),
        ca_file: c.ca_file.clone(),
        command_timeout: c.command_timeout,
        idle_timeout: c.idle_timeout,
        max_message_size,
        batch_size: c.batch_size,
        batch_bytes: imap::BATCH_BYTES,
    }
}

/// Waits at most this long in IDLE (or between polls) before looking again; with
/// the 10 s allowed for DONE, a silently dead connection is noticed within a
/// minute even when the network drops it without a word, and the watchdog
/// heartbeat keeps beating.
const IMAP_WAKE: Duration = Duration::from_secs(45);

/// The IMAP mailbox loop: connect, catch up by UID, settle each mail after its
/// commit, IDLE, and on any connection error reconnect with backoff. A fresh
/// connection starts with a full rescan of the inbox, so a mail committed just
/// before a crash (but not yet moved) is found again and only moved.
async fn imap_loop(settings: ImapSettings, p: Arc<Pipeline>, shutdown: CancellationToken) {
    let folder = format!(
        "imap:{}@{}/{}",
        settings.username, settings.host, settings.inbox
    );
    let mut attempt = 0u32;
    let mut first = true;
    while !shutdown.is_cancelled() {
        p.health.heartbeat.store(now(), Ordering::Relaxed);
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = ImapMailbox::connect(&settings) => c,
        };
        let mut mb = match connected {
            Ok(mb) => mb,
            Err(e) => {
                p.health.mailbox_errors.fetch_add(1, Ordering::Relaxed);
                let wait = imap::backoff(attempt);
                attempt = attempt.saturating_add(1);
                tracing::error!("mailbox: {e:#}; retrying in {wait:?}");
                p.report(
                    &format!("imap {}: disconnected", settings.host),
                    Some(&format!("{e:#}")),
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
        };
        if !first {
            p.health.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        attempt = 0;
        let since = fmt_time(now());
        tracing::info!(server = %settings.host, idle = mb.has_idle(), r#move = mb.has_move(), "mailbox connected");
        let mut full_scan = true;
        let result: Result<()> = async {
            loop {
                imap_drain(&mut mb, &p, &folder, full_scan, &shutdown).await?;
                full_scan = false;
                p.health.last_fetch.store(now(), Ordering::Relaxed);
                p.health.heartbeat.store(now(), Ordering::Relaxed);
                p.report(
                    &format!("imap {}: connected since {since}", settings.host),
                    None,
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    w = mb.wait(IMAP_WAKE, &p.wake) => w?,
                }
                tracing::debug!("mailbox woke");
            }
        }
        .await;
        match result {
            Ok(()) => {
                mb.logout().await;
                return;
            }
            Err(e) => {
                p.health.mailbox_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("mailbox connection lost: {e:#}");
                p.report(
                    &format!("imap {}: reconnecting", settings.host),
                    Some(&format!("{e:#}")),
                );
                let wait = imap::backoff(0);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// A fetched batch whose triage was started ahead of its turn (see [`Speculation`]).
struct Ahead {
    next: Cursor,
    batch: Arc<Vec<imap::Fetched>>,
    triage: tokio::task::JoinHandle<Result<Speculation>>,
}

/// What the pipeline needs of each fetched mail.
fn items_of(batch: &[imap::Fetched], uidvalidity: u32) -> Vec<Item<'_>> {
    batch
        .iter()
        .map(|f| Item {
            position: f.uid.to_string(),
            uidvalidity,
            size: f.size,
            raw: f.raw.as_deref(),
        })
        .collect()
}

/// Fetches everything new (or everything, on a full scan) and handles it, batch by
/// batch; the cursor is saved once a batch's moves are done, below any mail still
/// in the inbox (see [`settle`]). A mail left undecided (its ID could not be
/// verified yet) holds the saved cursor at its UID, so it is tried again after the
/// next wait, but not the fetching: the mails behind it are handled now.
async fn imap_drain(
    mb: &mut ImapMailbox,
    p: &Arc<Pipeline>,
    folder: &str,
    full_scan: bool,
    shutdown: &CancellationToken,
) -> Result<()> {
    let mut cursor = if full_scan {
        None
    } else {
        p.store
            .lock()
            .expect("store lock poisoned")
            .cursor(folder)?
            .map(|(uidvalidity, next_uid)| Cursor {
                uidvalidity,
                next_uid,
            })
    };
    // (UIDVALIDITY, the lowest UID left in the inbox undecided).
    let mut held: Option<(u32, u32)> = None;
    // Three batches are in the air: the next one fetched and being triaged, this
    // one committing, the last one leaving the inbox. The two cores and the server
    // then share the work instead of taking turns.
    let mut ahead: Option<Ahead> = None;
    let mut unsettled: Option<Unsettled> = None;
    loop {
        let (next, batch, speculation) = match ahead.take() {
            Some(a) => (a.next, a.batch, a.triage.await.ok().and_then(|r| r.ok())),
            None => {
                let (next, batch) = mb.fetch(cursor.as_ref()).await?;
                (next, Arc::new(batch), None)
            }
        };
        let lowest_held = held
            .filter(|(validity, _)| *validity == next.uidvalidity)
            .map(|(_, uid)| uid);
        let save = lowest_held.map_or(next.next_uid, |h| h.min(next.next_uid));
        if batch.is_empty() || shutdown.is_cancelled() {
            if let Some(u) = unsettled.take() {
                settle(mb, p, folder, u, Flush::All).await?;
            }
            if batch.is_empty() {
                p.store.lock().expect("store lock poisoned").set_cursor(
                    folder,
                    next.uidvalidity,
                    save,
                )?;
            }
            return Ok(());
        }
        p.health
            .backlog
            .store(batch.len() as u64, Ordering::Relaxed);
        let mut lowest_held = lowest_held;
        let items = items_of(&batch, next.uidvalidity);
        // Same cursor the next turn would use: UIDs above this batch, which its
        // moves do not touch.
        let started = std::time::Instant::now();
        let (after, more) = mb.fetch(Some(&next)).await?;
        let fetched = started.elapsed();
        let more = Arc::new(more);
        ahead = Some(Ahead {
            next: after,
            batch: more.clone(),
            triage: tokio::task::spawn_blocking({
                let p = p.clone();
                move || p.speculate(&items_of(&more, after.uidvalidity))
            }),
        });
        // The last batch leaves the inbox while this one is committed.
        let started = std::time::Instant::now();
        let last = unsettled.take();
        let (settled, results) = tokio::join!(
            async {
                match last {
                    Some(u) => settle(mb, p, folder, u, Flush::Full).await,
                    None => Ok(None),
                }
            },
            p.process_batch(&items, speculation)
        );
        let mut moves = settled?.map(|u| u.moves).unwrap_or_default();
        let results = results?;
        tracing::debug!(
            mails = batch.len(),
            fetch_next_ms = fetched.as_millis() as u64,
            process_ms = started.elapsed().as_millis() as u64,
            "batch processed"
        );
        // Committed: moved together, one UID set per folder (one round trip each),
        // with the mails of earlier batches still held for that folder.
        for (f, committed) in batch.iter().zip(results) {
            let Some(committed) = committed else {
                lowest_held = lowest_held.or(Some(f.uid));
                continue;
            };
            match moves.iter_mut().find(|(d, _)| *d == committed.destination) {
                Some((_, uids)) => uids.push(f.uid),
                None => moves.push((committed.destination, vec![f.uid])),
            }
        }
        unsettled = Some(Unsettled {
            moves,
            uidvalidity: next.uidvalidity,
            save: lowest_held.map_or(next.next_uid, |h| h.min(next.next_uid)),
        });
        held = lowest_held.map(|uid| (next.uidvalidity, uid));
        cursor = Some(next);
    }
}

/// Committed mails still in the inbox, by folder, and the cursor to save once none
/// is left there.
struct Unsettled {
    moves: Vec<(Destination, Vec<u32>)>,
    uidvalidity: u32,
    save: u32,
}

/// Which of [`Unsettled`]'s folders [`settle`] moves now.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Flush {
    /// Every one: the pass over the inbox ends (nothing left, or shutting down).
    All,
    /// Those holding at least a batch's worth of mails; the others wait for more.
    Full,
}

/// Moves committed mails out of the inbox; returns what it held back.
///
/// Each `UID MOVE` costs the server a fixed part besides its mails: a Maildir
/// Dovecot rereads the inbox's directory after every expunge, 10,000 names at a
/// large backlog. Three folders per batch made three of those, so the server took
/// three times as long as one fetch-and-move per batch (`bench/run.py`). A folder's
/// mails are therefore held until it has a batch's worth or the pass ends. A held
/// mail is committed, so nothing is lost by holding it: after a crash the first
/// pass of the new connection scans the whole inbox, recognises it and moves it;
/// and the cursor saved here stays below it all the same.
async fn settle(
    mb: &mut ImapMailbox,
    p: &Pipeline,
    folder: &str,
    u: Unsettled,
    flush: Flush,
) -> Result<Option<Unsettled>> {
    let started = std::time::Instant::now();
    let full = mb.batch_size();
    let mut kept = Vec::new();
    let mut moved = 0;
    for (dest, uids) in u.moves {
        if flush == Flush::Full && uids.len() < full {
            kept.push((dest, uids));
            continue;
        }
        mb.settle_many(&uids, dest).await?;
        moved += uids.len();
        p.health
            .processed
            .fetch_add(uids.len() as u64, Ordering::Relaxed);
        p.health.heartbeat.store(now(), Ordering::Relaxed);
    }
    let held = kept.iter().map(|(_, uids)| uids.len()).sum::<usize>();
    // Where a backlog's time goes, for whoever tunes batch_size or the server.
    tracing::debug!(
        moved,
        held,
        move_ms = started.elapsed().as_millis() as u64,
        "batch settled"
    );
    let lowest_kept = kept.iter().flat_map(|(_, uids)| uids).min().copied();
    p.store.lock().expect("store lock poisoned").set_cursor(
        folder,
        u.uidvalidity,
        lowest_kept.map_or(u.save, |l| l.min(u.save)),
    )?;
    Ok((!kept.is_empty()).then_some(Unsettled { moves: kept, ..u }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triage::RegistryEntry;

    fn entry(account: &str, current: Option<&str>, old: &[&str]) -> RegistryEntry {
        RegistryEntry {
            account: account.into(),
            company: format!("{account} GmbH"),
            contact_emails: vec![format!("a@{account}.example")],
            domains: vec![format!("{account}.example")],
            old_ids: old.iter().map(|s| s.to_string()).collect(),
            current_id: current.map(str::to_string),
            updating: false,
            locale: "de".into(),
        }
    }

    #[test]
    fn changed_ids_names_ids_whose_standing_moved_and_gives_up_on_anything_else() {
        let before = Registry {
            resellers: vec![
                entry("a", None, &["1111111"]),
                entry("b", Some("2222222"), &[]),
            ],
        };
        assert_eq!(changed_ids(&before, &before), Some(HashSet::new()));

        // a got a new ID; b's current became old and a newer one current.
        let after = Registry {
            resellers: vec![
                entry("a", Some("3333333"), &["1111111"]),
                entry("b", Some("4444444"), &["2222222"]),
            ],
        };
        let ids = changed_ids(&before, &after).unwrap();
        let mut ids: Vec<_> = ids.into_iter().collect();
        ids.sort();
        assert_eq!(ids, ["2222222", "3333333", "4444444"]);

        // A new contact, a new reseller: the speculation is thrown away.
        let mut contact = before.clone();
        contact.resellers[0]
            .contact_emails
            .push("new@a.example".into());
        assert_eq!(changed_ids(&before, &contact), None);
        let mut more = before.clone();
        more.resellers.push(entry("c", None, &[]));
        assert_eq!(changed_ids(&before, &more), None);
    }
}
