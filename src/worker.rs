//! The job worker: runs due jobs against the backend and records what came of
//! each, and delivers gate changes to the distributor's platform.
//!
//! One task, started by the daemon for every backend but `manual`. It wakes on a
//! bounded(1) nudge when the mailbox commits a case, when a running job ends, or
//! when the next retry is due, and polls slowly as a fallback (the operator CLI
//! revives jobs from another process). At most `backend.concurrency` jobs run at
//! once; the backend's token bucket limits the calls per minute. A job's attempt
//! is counted when it is claimed (see `store/jobs.rs`); a retryable failure waits
//! (exponential backoff, at least the service's Retry-After) and after
//! `backend.max_attempts` the job is dead until an operator revives it. A
//! refusal fails the job at once. Success goes through `job_done`, which opens the
//! gate only when the case's last job is done. On shutdown, running jobs get a
//! moment to finish; any still running are abandoned and claimed again at the
//! next start (the backends make a repeat harmless). A store error is logged and
//! the loop goes on after a pause.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backend::JobOutcome;
use crate::daemon::{Live, Shared};
use crate::store::{now, GateEvent, JobRow, Store};

const POLL: Duration = Duration::from_secs(2);
const DRAIN: Duration = Duration::from_secs(5);
/// Backoff of a retried job: 1 s, 2 s, 4 s ... up to this.
const MAX_BACKOFF_SECS: i64 = 600;
/// Gate deliveries are never given up; they are tried at least this often.
const MAX_GATE_BACKOFF_SECS: i64 = 3600;

/// What the worker and every job task need.
pub struct Worker {
    pub store: Arc<Mutex<Store>>,
    /// Config, templates and backend; replaced as a whole on SIGHUP. A job takes
    /// one snapshot when it starts and keeps it to the end.
    pub live: Shared,
    /// Wakes the mailer when a completed case queued its "applied" mail.
    pub mailer: mpsc::Sender<()>,
    /// Wakes this loop when a job ends (a slot is free, a retry is scheduled):
    /// the sending side of the nudge channel `run` listens on.
    pub again: mpsc::Sender<()>,
}

impl Worker {
    fn live(&self) -> Arc<Live> {
        self.live.read().expect("config lock poisoned").clone()
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().expect("store lock poisoned")
    }
}

/// Runs until `shutdown` is cancelled.
pub async fn run(worker: Worker, mut nudge: mpsc::Receiver<()>, shutdown: CancellationToken) {
    let shared = Arc::new(worker);
    match shared.store().requeue_running(now()) {
        Ok(0) => {}
        Ok(n) => tracing::info!("{n} job(s) interrupted by the last stop run again"),
        Err(e) => tracing::error!("worker: cannot requeue interrupted jobs: {e:#}"),
    }
    let mut running: JoinSet<()> = JoinSet::new();
    loop {
        let concurrency = shared.live().config.backend.concurrency;
        let wait = match claim(&shared, &mut running, concurrency) {
            Ok(wait) => wait,
            Err(e) => {
                tracing::error!("worker: {e:#}");
                POLL
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = nudge.recv() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if !running.is_empty() {
        tracing::info!(
            "worker: waiting up to {DRAIN:?} for {} running job(s)",
            running.len()
        );
        let _ = tokio::time::timeout(DRAIN, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        // Dropping the set aborts what is left; those jobs stay `running` and are
        // claimed again at the next start.
    }
}

/// Starts what is due, up to the free slots; returns how long to sleep at most.
fn claim(shared: &Arc<Worker>, running: &mut JoinSet<()>, concurrency: usize) -> Result<Duration> {
    // Gate changes first: the platform hears "blocked" before any update starts,
    // and a slot is never held up by a long job queue.
    let free = concurrency.saturating_sub(running.len());
    if free > 0 && shared.live().backend.delivers_gate_events() {
        let events = shared.store().claim_gate_events(now(), free)?;
        for e in events {
            let s = shared.clone();
            running.spawn(async move { deliver(s, e).await });
        }
    }
    let free = concurrency.saturating_sub(running.len());
    if free > 0 {
        let jobs = shared.store().claim_jobs(now(), free)?;
        for job in jobs {
            let s = shared.clone();
            running.spawn(async move { run_job(s, job).await });
        }
    }
    let next = shared.store().next_job_due()?;
    Ok(match next {
        Some(at) => Duration::from_secs((at - now()).clamp(0, POLL.as_secs() as i64) as u64)
            .max(Duration::from_millis(200)),
        None => POLL,
    })
}

fn backoff(attempts: i64, cap: i64) -> i64 {
    (1i64 << (attempts - 1).clamp(0, 20)).min(cap)
}

async fn run_job(s: Arc<Worker>, job: JobRow) {
    tracing::info!(
        job = job.id,
        case = job.case_id,
        kind = %job.kind,
        target = job.subscription_id.as_deref().unwrap_or(&job.account),
        attempt = job.attempts,
        "job started"
    );
    let live = s.live();
    let outcome = live.backend.run(&job).await;
    if let Err(e) = settle(&s, &live, &job, outcome) {
        // The outcome is lost, the job stays running: it runs again at the next
        // start, which the backends make harmless.
        tracing::error!(job = job.id, "cannot record the outcome: {e:#}");
    }
    let _ = s.again.try_send(());
}

fn settle(s: &Worker, live: &Live, job: &JobRow, outcome: JobOutcome) -> Result<()> {
    let ctx = live.ctx("mpnd");
    let mut store = s.store();
    match outcome {
        JobOutcome::Done(note) => {
            tracing::info!(job = job.id, "job done: {note}");
            store.job_note(job.id, &note, &ctx)?;
            match store.job_done(job.id, &ctx) {
                Ok(()) => {
                    let _ = s.mailer.try_send(());
                }
                // Cancelled meanwhile (a newer ID superseded the case): the newer
                // case's own jobs put its ID in place.
                Err(e) => tracing::info!(job = job.id, "done, but not recorded: {e:#}"),
            }
        }
        JobOutcome::Retry { error, after } => {
            let max = live.config.backend.max_attempts as i64;
            if job.attempts >= max {
                let error = format!("{error} (gave up after {} attempts)", job.attempts);
                tracing::warn!(job = job.id, "job dead: {error}");
                store.job_dead(job.id, &error, &ctx)?;
            } else {
                let wait = backoff(job.attempts, MAX_BACKOFF_SECS)
                    .max(after.map(|a| a.as_secs() as i64 + 1).unwrap_or(0));
                tracing::info!(job = job.id, "job will be retried in {wait}s: {error}");
                store.job_retry(job.id, &error, ctx.now + wait, &ctx)?;
            }
        }
        JobOutcome::Failed(error) => {
            tracing::warn!(job = job.id, "job failed: {error}");
            store.job_fail(job.id, &error, &ctx)?;
        }
    }
    Ok(())
}

async fn deliver(s: Arc<Worker>, e: GateEvent) {
    let live = s.live();
    let outcome = live.backend.notify_gate(&e).await;
    let result = {
        let ctx = live.ctx("mpnd");
        let mut store = s.store();
        match outcome {
            JobOutcome::Done(note) => {
                tracing::info!(account = %e.account, allowed = e.allowed, "gate change delivered: {note}");
                store.gate_event_done(e.id, &ctx)
            }
            JobOutcome::Retry { error, after } => {
                let wait = backoff(e.attempts, MAX_GATE_BACKOFF_SECS)
                    .max(after.map(|a| a.as_secs() as i64 + 1).unwrap_or(0));
                tracing::warn!(account = %e.account, "gate change not delivered, again in {wait}s: {error}");
                store.gate_event_retry(e.id, &error, ctx.now + wait, ctx.now)
            }
            // The platform refused: still retried (slowly), since it must learn the
            // state eventually; the error stays visible to the operator.
            JobOutcome::Failed(error) => {
                let wait = backoff(e.attempts + 4, MAX_GATE_BACKOFF_SECS);
                tracing::error!(account = %e.account, "gate change refused, again in {wait}s: {error}");
                store.gate_event_retry(e.id, &error, ctx.now + wait, ctx.now)
            }
        }
    };
    if let Err(err) = result {
        tracing::error!(event = e.id, "cannot record the gate delivery: {err:#}");
    }
    let _ = s.again.try_send(());
}
