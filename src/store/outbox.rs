//! The outbox: confirmations waiting to be sent, and what happened to each.
//!
//! A row is claimed by counting the attempt before the try (so a crash mid-send is
//! still counted), then marked sent, rescheduled with backoff, or failed for the
//! operator with the server's answer.

use anyhow::Result;
use rusqlite::params;
use serde::Serialize;

use super::{Cached, Store};

/// What became of one attempt to send a confirmation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboxOutcome {
    /// Accepted by the server at this time.
    Sent { at: i64 },
    /// Refused for now; tried again at this time.
    Retry { error: String, at: i64 },
    /// Refused for good, or out of attempts: parked for the operator.
    Failed { error: String },
}

#[derive(Clone, Debug, Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub case_id: Option<i64>,
    pub account: Option<String>,
    pub kind: String,
    pub recipient: String,
    pub message_id: String,
    #[serde(skip)]
    pub raw: Vec<u8>,
    pub state: String,
    pub attempts: i64,
    pub last_error: String,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

const COLUMNS: &str =
    "id, case_id, account, kind, recipient, message_id, raw, state, attempts, last_error, created_at, sent_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        id: r.get(0)?,
        case_id: r.get(1)?,
        account: r.get(2)?,
        kind: r.get(3)?,
        recipient: r.get(4)?,
        message_id: r.get(5)?,
        raw: r.get(6)?,
        state: r.get(7)?,
        attempts: r.get(8)?,
        last_error: r.get(9)?,
        created_at: r.get(10)?,
        sent_at: r.get(11)?,
    })
}

impl Store {
    pub fn outbox(&self, case_id: Option<i64>) -> Result<Vec<OutboxRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE ?1 IS NULL OR case_id = ?1 ORDER BY id"
        ))?;
        let rows = stmt
            .query_map([case_id], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Pending confirmations due now, oldest first, except those in `busy` (being
    /// sent: they stay pending until their outcome is recorded); each one's attempt
    /// is counted here, before it is tried.
    pub fn claim_outbox(&mut self, now: i64, limit: usize, busy: &[i64]) -> Result<Vec<OutboxRow>> {
        let busy = serde_json::to_string(busy)?;
        let tx = self.write()?;
        let rows = {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?1
                 AND id NOT IN (SELECT value FROM json_each(?3))
                 ORDER BY id LIMIT ?2"
            ))?;
            let rows = stmt
                .query_map(params![now, limit as i64, busy], row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows
        };
        for r in &rows {
            tx.exec(
                "UPDATE outbox SET attempts = attempts + 1 WHERE id = ?1",
                [r.id],
            )?;
        }
        tx.commit()?;
        Ok(rows)
    }

    /// Records what became of confirmations, several in one transaction: one
    /// commit per sent mail held the store (and its fsync) once per mail, and the
    /// batch commits of incoming mail queued behind it (bench/run.sh).
    pub fn outbox_record(&mut self, outcomes: &[(i64, OutboxOutcome)]) -> Result<()> {
        let tx = self.write()?;
        for (id, outcome) in outcomes {
            match outcome {
                OutboxOutcome::Sent { at } => tx.exec(
                    "UPDATE outbox SET state = 'sent', sent_at = ?2, last_error = '' WHERE id = ?1",
                    params![id, at],
                ),
                OutboxOutcome::Retry { error, at } => tx.exec(
                    "UPDATE outbox SET last_error = ?2, next_attempt_at = ?3 WHERE id = ?1",
                    params![id, error, at],
                ),
                OutboxOutcome::Failed { error } => tx.exec(
                    "UPDATE outbox SET state = 'failed', last_error = ?2 WHERE id = ?1",
                    params![id, error],
                ),
            }?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Puts failed confirmations back in the queue (`mpnd queue retry`).
    pub fn outbox_revive(&mut self, case_id: i64) -> Result<usize> {
        Ok(self.conn.exec(
            "UPDATE outbox SET state = 'pending', next_attempt_at = 0 WHERE case_id = ?1 AND state = 'failed'",
            [case_id],
        )?)
    }

    /// Seconds until the next pending confirmation is due, if any.
    pub fn next_outbox_due(&self) -> Result<Option<i64>> {
        Ok(self.conn.one(
            "SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?)
    }
}
