//! The outbox: confirmations waiting to be sent, and what happened to each.
//!
//! A row is claimed by counting the attempt before the try (so a crash mid-send is
//! still counted), then marked sent, rescheduled with backoff, or failed for the
//! operator with the server's answer.

use anyhow::Result;
use rusqlite::params;
use serde::Serialize;

use super::Store;

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
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE ?1 IS NULL OR case_id = ?1 ORDER BY id"
        ))?;
        let rows = stmt
            .query_map([case_id], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Pending confirmations due now, oldest first; each one's attempt is counted
    /// here, before it is tried.
    pub fn claim_outbox(&mut self, now: i64, limit: usize) -> Result<Vec<OutboxRow>> {
        let tx = self.write()?;
        let rows = {
            let mut stmt = tx.prepare(&format!(
                "SELECT {COLUMNS} FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?1
                 ORDER BY id LIMIT ?2"
            ))?;
            let rows = stmt
                .query_map(params![now, limit as i64], row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows
        };
        for r in &rows {
            tx.execute(
                "UPDATE outbox SET attempts = attempts + 1 WHERE id = ?1",
                [r.id],
            )?;
        }
        tx.commit()?;
        Ok(rows)
    }

    pub fn outbox_sent(&mut self, id: i64, now: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE outbox SET state = 'sent', sent_at = ?2, last_error = '' WHERE id = ?1",
            params![id, now],
        )?;
        Ok(())
    }

    pub fn outbox_retry(&mut self, id: i64, error: &str, next_at: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE outbox SET last_error = ?2, next_attempt_at = ?3 WHERE id = ?1",
            params![id, error, next_at],
        )?;
        Ok(())
    }

    pub fn outbox_failed(&mut self, id: i64, error: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE outbox SET state = 'failed', last_error = ?2 WHERE id = ?1",
            params![id, error],
        )?;
        Ok(())
    }

    /// Puts failed confirmations back in the queue (`mpnd queue retry`).
    pub fn outbox_revive(&mut self, case_id: i64) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE outbox SET state = 'pending', next_attempt_at = 0 WHERE case_id = ?1 AND state = 'failed'",
            [case_id],
        )?)
    }

    /// Seconds until the next pending confirmation is due, if any.
    pub fn next_outbox_due(&self) -> Result<Option<i64>> {
        Ok(self.conn.query_row(
            "SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?)
    }
}
