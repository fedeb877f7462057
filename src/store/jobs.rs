//! The job queue as the worker sees it: claim, retry, dead; and the gate-change
//! deliveries (`gate_events`, filled by a trigger, see `migrations/002_backend.sql`).
//!
//! A claim marks a job `running` and counts its attempt in the same transaction,
//! before anything is tried, so a job that crashes the daemon still uses up its
//! attempts. A job found `running` when the worker starts was interrupted by a
//! crash or a stop: it is put back to `pending` and runs again (at least once; the
//! backends make a repeat harmless). Every outcome is written only while the job is
//! still `running`: a job cancelled meanwhile (a newer ID superseded its case)
//! stays cancelled. Success goes through `job_done` (in `cases.rs`), which also
//! completes the case when it was the last job.

use anyhow::Result;
use rusqlite::{params, Transaction};
use serde::Serialize;

use anyhow::{anyhow, bail};

use super::cases::{job_row, queue_mail, JobRow, JOB_COLUMNS};
use super::registry::reseller_for_mail;
use super::{audit, Cached, Ctx, Store};
use crate::reply::{self, Kind};
use crate::triage::{MpnId, RejectReason};

/// One gate change to deliver: the reseller's state right after the change.
#[derive(Clone, Debug, Serialize)]
pub struct GateEvent {
    pub id: i64,
    pub account: String,
    pub state: String,
    pub allowed: bool,
    pub mpn_id: Option<String>,
    pub pending_mpn_id: Option<String>,
    pub attempts: i64,
    pub created_at: i64,
}

impl Store {
    /// Puts jobs and gate deliveries left `running` by a crash or a stop back in
    /// the queue; their attempt stays counted. Returns how many jobs.
    pub fn requeue_running(&mut self, now: i64) -> Result<usize> {
        let tx = self.write()?;
        let n = tx.exec(
            "UPDATE jobs SET state = 'pending', next_attempt_at = 0, updated_at = ?1 WHERE state = 'running'",
            [now],
        )?;
        tx.exec(
            "UPDATE gate_events SET delivery = 'pending', next_attempt_at = 0, updated_at = ?1
             WHERE delivery = 'running'",
            [now],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Up to `limit` due jobs, oldest first, each marked running with its attempt
    /// counted.
    pub fn claim_jobs(&mut self, now: i64, limit: usize) -> Result<Vec<JobRow>> {
        let tx = self.write()?;
        let ids: Vec<i64> = {
            let mut stmt = tx.prepare_cached(
                "SELECT id FROM jobs WHERE state = 'pending' AND next_attempt_at <= ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![now, limit as i64], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()?;
            rows
        };
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            tx.exec(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, updated_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            jobs.push(tx.one(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                [id],
                job_row,
            )?);
        }
        tx.commit()?;
        Ok(jobs)
    }

    /// A try failed for a reason that may pass (network, throttling, 5xx): the job
    /// waits until `next_at` and runs again.
    pub fn job_retry(&mut self, id: i64, error: &str, next_at: i64, ctx: &Ctx<'_>) -> Result<()> {
        let tx = self.write()?;
        let n = tx.exec(
            "UPDATE jobs SET state = 'pending', last_error = ?2, next_attempt_at = ?3, updated_at = ?4
             WHERE id = ?1 AND state = 'running'",
            params![id, error, next_at, ctx.now],
        )?;
        if n > 0 {
            audit_job(
                &tx,
                ctx,
                id,
                "job.retry",
                &format!("next try at {}: {error}", super::fmt_time(next_at)),
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records what a backend did for a job (the audit's evidence), before the
    /// outcome itself is written.
    pub fn job_note(&mut self, id: i64, note: &str, ctx: &Ctx<'_>) -> Result<()> {
        let tx = self.write()?;
        audit_job(&tx, ctx, id, "job.result", note)?;
        tx.commit()?;
        Ok(())
    }

    /// The job used up its attempts: it stays dead (the reseller blocked) with its
    /// last error until an operator revives it (`mpnd queue retry CASE`).
    pub fn job_dead(&mut self, id: i64, error: &str, ctx: &Ctx<'_>) -> Result<()> {
        let tx = self.write()?;
        let n = tx.exec(
            "UPDATE jobs SET state = 'dead', last_error = ?2, updated_at = ?3 WHERE id = ?1 AND state = 'running'",
            params![id, error, ctx.now],
        )?;
        if n > 0 {
            audit_job(&tx, ctx, id, "job.dead", error)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The earliest time a pending job or gate delivery is due, if any.
    pub fn next_job_due(&self) -> Result<Option<i64>> {
        Ok(self.conn.one(
            "SELECT MIN(t) FROM (SELECT MIN(next_attempt_at) AS t FROM jobs WHERE state = 'pending'
             UNION ALL SELECT MIN(next_attempt_at) FROM gate_events WHERE delivery = 'pending')",
            [],
            |r| r.get(0),
        )?)
    }

    /// An operator approved a case, but Microsoft does not confirm the ID: the case
    /// is rejected and the reseller told why, exactly as for a mail whose ID failed
    /// verification (the operator can still override with `--no-verify`).
    pub fn reject_unverified(
        &mut self,
        case_id: i64,
        account: &str,
        id: &MpnId,
        reason: &RejectReason,
        evidence: &str,
        ctx: &Ctx<'_>,
    ) -> Result<()> {
        let tx = self.write()?;
        let state: String = tx
            .one("SELECT state FROM cases WHERE id = ?1", [case_id], |r| {
                r.get(0)
            })
            .map_err(|_| anyhow!("no case {case_id}"))?;
        if state != "review" && state != "rejected" {
            bail!("case {case_id} is {state}: only a case in review (or rejected) can be approved");
        }
        let locale = reseller_for_mail(&tx, account)?.locale;
        tx.exec(
            "UPDATE cases SET state = 'rejected', decision = 'reject', account = ?2, mpn_id = ?3,
             decided_by = ?4, updated_at = ?5, reasons = json_insert(reasons, '$[#]', ?6) WHERE id = ?1",
            params![case_id, account, id.as_str(), ctx.actor, ctx.now, evidence],
        )?;
        audit(
            &tx,
            ctx,
            "case.reject",
            Some(case_id),
            Some(account),
            None,
            evidence,
        )?;
        queue_mail(
            &tx,
            case_id,
            account,
            Kind::Rejected,
            &reply::reject_text(reason, &locale),
            ctx,
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Adds a line to a case's reasons (its evidence), e.g. what Microsoft said.
    pub fn note_case(&mut self, case_id: i64, note: &str, ctx: &Ctx<'_>) -> Result<()> {
        let tx = self.write()?;
        tx.exec(
            "UPDATE cases SET reasons = json_insert(reasons, '$[#]', ?2), updated_at = ?3 WHERE id = ?1",
            params![case_id, note, ctx.now],
        )?;
        audit(&tx, ctx, "case.note", Some(case_id), None, None, note)?;
        tx.commit()?;
        Ok(())
    }

    /// Due gate changes, at most one per reseller: the newest. Older undelivered
    /// ones of the same reseller are superseded, so the platform never receives an
    /// older state after a newer one. A reseller whose delivery is running or
    /// waiting for a retry gets nothing new until that one is settled.
    pub fn claim_gate_events(&mut self, now: i64, limit: usize) -> Result<Vec<GateEvent>> {
        let tx = self.write()?;
        tx.exec(
            "UPDATE gate_events SET delivery = 'superseded', updated_at = ?1
             WHERE delivery = 'pending' AND EXISTS (SELECT 1 FROM gate_events n
               WHERE n.account = gate_events.account AND n.id > gate_events.id)",
            [now],
        )?;
        let events = {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {GATE_EVENT_COLUMNS} FROM gate_events e WHERE delivery = 'pending' AND next_attempt_at <= ?1
                 AND NOT EXISTS (SELECT 1 FROM gate_events o WHERE o.account = e.account AND o.id < e.id
                                 AND o.delivery IN ('pending', 'running'))
                 ORDER BY id LIMIT ?2"
            ))?;
            let rows = stmt
                .query_map(params![now, limit as i64], gate_event_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            // The attempt is counted below, before the delivery.
            rows.into_iter()
                .map(|e| GateEvent {
                    attempts: e.attempts + 1,
                    ..e
                })
                .collect::<Vec<_>>()
        };
        for e in &events {
            tx.exec(
                "UPDATE gate_events SET delivery = 'running', attempts = attempts + 1, updated_at = ?2 WHERE id = ?1",
                params![e.id, now],
            )?;
        }
        tx.commit()?;
        Ok(events)
    }

    pub fn gate_event_done(&mut self, id: i64, ctx: &Ctx<'_>) -> Result<()> {
        let tx = self.write()?;
        let account: String =
            tx.one("SELECT account FROM gate_events WHERE id = ?1", [id], |r| {
                r.get(0)
            })?;
        tx.exec(
            "UPDATE gate_events SET delivery = 'done', last_error = '', updated_at = ?2 WHERE id = ?1",
            params![id, ctx.now],
        )?;
        audit(
            &tx,
            ctx,
            "gate.notify",
            None,
            Some(&account),
            None,
            &format!("gate change {id} delivered"),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A gate change could not be delivered. It is never given up: the platform
    /// must learn the latest state, so it waits and is tried again (or a newer
    /// change of the same reseller supersedes it).
    pub fn gate_event_retry(&mut self, id: i64, error: &str, next_at: i64, now: i64) -> Result<()> {
        self.conn.exec(
            "UPDATE gate_events SET delivery = 'pending', last_error = ?2, next_attempt_at = ?3, updated_at = ?4
             WHERE id = ?1",
            params![id, error, next_at, now],
        )?;
        Ok(())
    }

    /// Every gate change recorded, oldest first (for tests and `mpnd status`).
    pub fn gate_events(&self) -> Result<Vec<(GateEvent, String, String)>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {GATE_EVENT_COLUMNS}, delivery, last_error FROM gate_events ORDER BY id"
        ))?;
        let rows = stmt
            .query_map([], |r| Ok((gate_event_row(r)?, r.get(8)?, r.get(9)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

const GATE_EVENT_COLUMNS: &str =
    "id, account, state, allowed, mpn_id, pending_mpn_id, attempts, created_at";

fn gate_event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GateEvent> {
    Ok(GateEvent {
        id: r.get(0)?,
        account: r.get(1)?,
        state: r.get(2)?,
        allowed: r.get(3)?,
        mpn_id: r.get(4)?,
        pending_mpn_id: r.get(5)?,
        attempts: r.get(6)?,
        created_at: r.get(7)?,
    })
}

/// An audit event about one job, with its case and reseller looked up.
fn audit_job(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    id: i64,
    action: &str,
    detail: &str,
) -> Result<()> {
    let (case_id, account): (i64, String) = tx.one(
        "SELECT case_id, account FROM jobs WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    audit(
        tx,
        ctx,
        action,
        Some(case_id),
        Some(&account),
        Some(id),
        detail,
    )
}
