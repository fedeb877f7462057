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

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, Verification};
use crate::config::{Config, MailboxConfig};
use crate::gate::{self, Health};
use crate::mailbox::maildir::{Entry, Maildir};
use crate::mailbox::Destination;
use crate::mailer;
use crate::reply::Templates;
use crate::store::{now, Committed, Ctx, Incoming, Store};
use crate::triage::{self, Decision, Outcome, Registry, RejectReason, Triage};
use crate::worker;

const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
const MAILDIR_POLL: Duration = Duration::from_millis(250);

/// Runs until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    let templates = Templates::load(config.templates_dir.as_deref())?;
    let store = Store::open(&config.db_path())?;
    let gate_store = Store::open(&config.db_path())?;
    let token = gate::load_or_create_token(&config.gate.token_file)?;
    let listener = gate::bind(config.gate.listen).await?;
    let health = Arc::new(Health::default());
    let store = Arc::new(Mutex::new(store));
    let (nudge_tx, nudge_rx) = mpsc::channel(1);
    let (jobs_tx, jobs_rx) = mpsc::channel(1);
    let backend = Arc::new(Backend::new(&config.backend)?);

    tracing::info!(
        config = %config.source,
        state_dir = %config.state_dir.display(),
        gate = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        "mpnd started"
    );

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(mailer::run(
        store.clone(),
        config.smtp.clone(),
        nudge_rx,
        shutdown.clone(),
    ));
    if backend.is_automatic() {
        let w = worker::Worker {
            store: store.clone(),
            backend: backend.clone(),
            config: config.clone(),
            templates: templates.clone(),
            mailer: nudge_tx.clone(),
            again: jobs_tx.clone(),
        };
        tasks.spawn(worker::run(w, jobs_rx, shutdown.clone()));
    }
    {
        let (h, s) = (health.clone(), shutdown.clone());
        let gs = Arc::new(Mutex::new(gate_store));
        tasks.spawn(async move {
            if let Err(e) = gate::serve(listener, gs, token, h, s).await {
                tracing::error!("{e:#}");
            }
        });
    }
    match &config.mailbox {
        MailboxConfig::Maildir { path } => {
            let maildir = Maildir::open(path)?;
            let pipeline = Pipeline {
                store: store.clone(),
                config: config.clone(),
                templates,
                nudge: nudge_tx,
                jobs: jobs_tx,
                backend: backend.clone(),
                health: health.clone(),
                mailbox: format!("maildir:{}", path.display()),
            };
            tasks.spawn(maildir_loop(maildir, pipeline, shutdown.clone()));
        }
        MailboxConfig::Imap(_) => {
            anyhow::bail!(
                "mailbox.kind = \"imap\" is not available in this version; use \"maildir\""
            )
        }
    }

    shutdown.cancelled().await;
    tracing::info!("stopping");
    let joined = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if joined.is_err() {
        tracing::warn!("tasks did not stop within {SHUTDOWN_GRACE:?}; abandoning them");
        tasks.abort_all();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Cancels `token` on SIGTERM, SIGINT (ctrl-c).
pub fn stop_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot listen for SIGTERM: {e}");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        token.cancel();
    });
}

/// What processing one mail needs, shared by every mailbox kind.
pub struct Pipeline {
    pub store: Arc<Mutex<Store>>,
    pub config: Config,
    pub templates: Templates,
    pub nudge: mpsc::Sender<()>,
    /// Wakes the job worker when a case with jobs was committed.
    pub jobs: mpsc::Sender<()>,
    /// Verifies a new ID before the case is committed (partner-center).
    pub backend: Arc<Backend>,
    pub health: Arc<Health>,
    pub mailbox: String,
}

impl Pipeline {
    /// Triage, verify and commit one mail; returns where it must go, or `None`
    /// when the mail must stay in the inbox for now (its ID could not be verified:
    /// try again later). A mail seen before (same Message-ID or position) is not
    /// processed again.
    pub async fn process(
        &self,
        registry: &Registry,
        position: &str,
        uidvalidity: u32,
        size: u64,
        raw: Option<&[u8]>,
    ) -> Result<Option<Committed>> {
        let mut t = match raw {
            Some(raw) => triage_guarded(raw, registry, &self.config.policy),
            None => oversize(size, self.config.max_message_size),
        };
        let key = match (&t.headers.message_id, raw) {
            (Some(id), _) => format!("mid:{id}"),
            (None, Some(raw)) => format!("sha256:{:x}", Sha256::digest(raw)),
            (None, None) => format!("pos:{}:{uidvalidity}:{position}", self.mailbox),
        };
        let incoming = Incoming {
            key,
            mailbox: self.mailbox.clone(),
            uidvalidity,
            position: position.to_string(),
            size,
            raw,
        };
        let ctx = Ctx {
            now: now(),
            from: &self.config.smtp.from,
            templates: &self.templates,
            max_per_recipient_per_day: self.config.smtp.max_per_recipient_per_day,
            actor: "mpnd",
        };
        if t.decision == Decision::Apply && self.backend.verifies() {
            let seen = self
                .store
                .lock()
                .expect("store lock poisoned")
                .seen(&incoming)?;
            if let Some(seen) = seen {
                return Ok(Some(seen));
            }
            if let Some(id) = t.mpn_id.clone() {
                if !self.verify(&mut t, &id).await {
                    return Ok(None);
                }
            }
        }
        let ctx = Ctx { now: now(), ..ctx };
        let committed = self
            .store
            .lock()
            .expect("store lock poisoned")
            .commit(&incoming, &t, &ctx)?;
        if committed.duplicate {
            tracing::info!(
                position,
                case = committed.case_id,
                "already committed; moving it again"
            );
        } else {
            tracing::info!(
                case = committed.case_id,
                reseller = t.reseller.as_deref().unwrap_or("-"),
                outcome = t.outcome.as_str(),
                decision = t.decision.as_str(),
                mpn_id = t.mpn_id.as_ref().map(|i| i.as_str()).unwrap_or("-"),
                reasons = %t.reasons.join("; "),
                "mail triaged"
            );
            let _ = self.nudge.try_send(());
            let _ = self.jobs.try_send(());
        }
        Ok(Some(committed))
    }

    /// Adds Microsoft's answer to the triage: evidence when valid, a rejection
    /// when not. Returns false when there is no answer now (the mail waits).
    async fn verify(&self, t: &mut Triage, id: &triage::MpnId) -> bool {
        match self.backend.verify(id).await {
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

    pub fn registry(&self) -> Result<Registry> {
        self.store.lock().expect("store lock poisoned").registry()
    }
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

async fn maildir_loop(maildir: Maildir, p: Pipeline, shutdown: CancellationToken) {
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        match maildir_pass(&maildir, &p, &shutdown).await {
            Ok(()) => {
                failures = 0;
                p.health.last_fetch.store(now(), Ordering::Relaxed);
            }
            Err(e) => {
                failures += 1;
                p.health.mailbox_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!("mailbox: {e:#}");
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
        }
    }
}

async fn maildir_pass(maildir: &Maildir, p: &Pipeline, shutdown: &CancellationToken) -> Result<()> {
    let entries = maildir.scan()?;
    if entries.is_empty() {
        return Ok(());
    }
    let mut registry = p.registry()?;
    for entry in entries {
        if shutdown.is_cancelled() {
            break;
        }
        let Some(committed) = process_file(p, &registry, &entry).await? else {
            // Not decided yet (verification unavailable): it stays in the inbox.
            continue;
        };
        maildir.settle(&entry, committed.destination)?;
        if committed.destination == Destination::Processed && !committed.duplicate {
            // An applied ID is taken from now on: the next mail must see that.
            registry = p.registry()?;
        }
    }
    Ok(())
}

async fn process_file(
    p: &Pipeline,
    registry: &Registry,
    entry: &Entry,
) -> Result<Option<Committed>> {
    if entry.size > p.config.max_message_size {
        return p.process(registry, &entry.name, 0, entry.size, None).await;
    }
    let raw = read_file(&entry.path)?;
    p.process(registry, &entry.name, 0, raw.len() as u64, Some(&raw))
        .await
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}
