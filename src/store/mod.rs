//! The store: everything mpnd knows, in one SQLite file, and the only code that
//! writes it.
//!
//! Every state change is one transaction (a fetched batch of mails shares one): a
//! mail's message row, case, jobs, confirmations, reseller state and audit event
//! are written together or not at all, so a crash at any point leaves either the
//! old state or the new one. The
//! daemon and the operator CLI open the same file concurrently (WAL mode, a busy
//! timeout); each write transaction starts `IMMEDIATE` so the two never deadlock
//! upgrading a read lock.
//!
//! Migrations are append-only SQL files under `migrations/`, applied in order in one
//! transaction each, tracked by `PRAGMA user_version`.

mod cases;
mod checkpoint;
mod jobs;
mod outbox;
mod registry;

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rusqlite::{
    params, Connection, OptionalExtension, Params, Row, Transaction, TransactionBehavior,
};
use serde::Serialize;

pub use cases::{CaseDetail, CaseRow, Committed, Incoming, JobRow};
pub use checkpoint::Checkpointer;
pub use jobs::GateEvent;
pub use outbox::{OutboxOutcome, OutboxRow};
pub use registry::{registry_from_csv, GateAnswer, ImportReport, Reseller, Subscription};

use crate::reply::Templates;

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/001_initial.sql"),
    include_str!("../../migrations/002_backend.sql"),
    include_str!("../../migrations/003_indexes.sql"),
    include_str!("../../migrations/004_backlog.sql"),
];

/// What a write needs besides its arguments: the time, and how to render the
/// confirmations it may queue.
pub struct Ctx<'a> {
    pub now: i64,
    /// `smtp.from`: the From of confirmations and the domain of their Message-IDs.
    pub from: &'a str,
    pub templates: &'a Templates,
    pub max_per_recipient_per_day: u32,
    /// Who does this: "mpnd" or "operator:<name>", for the audit log.
    pub actor: &'a str,
}

pub struct Store {
    conn: Connection,
    /// What the WAL hook of [`Store::hand_checkpoints_to`] wakes; dropped after
    /// `conn` (fields drop in order), so never while the hook can run.
    wal_hook: Option<checkpoint::Signal>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AuditEvent {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub case_id: Option<i64>,
    pub account: Option<String>,
    pub job_id: Option<i64>,
    pub detail: String,
}

impl Store {
    /// Opens (creating if needed) the store and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        Store::open_with(path, "FULL")
    }

    /// A connection for bookkeeping that decides nothing about the inbox (the
    /// mailer's "sent" marks): its commits skip the fsync (`synchronous =
    /// NORMAL`; the next FULL commit of any connection makes them durable). A power
    /// cut can forget such a mark, and the mail is sent again with the same
    /// Message-ID; it can never lose a case.
    pub fn open_relaxed(path: &Path) -> Result<Store> {
        Store::open_with(path, "NORMAL")
    }

    /// Hands SQLite's page cache of this connection back to the allocator (`PRAGMA
    /// shrink_memory`), for the daemon's trim when it goes quiet: after a backlog
    /// each connection holds up to 2 MB of pages it will not read again soon.
    pub fn release_memory(&self) {
        if let Err(e) = self.conn.execute_batch("PRAGMA shrink_memory") {
            tracing::debug!("PRAGMA shrink_memory: {e}");
        }
    }

    fn open_with(path: &Path, synchronous: &str) -> Result<Store> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create state directory {}", dir.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open store {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.set_prepared_statement_cache_capacity(128);
        // FULL: a commit is on disk before the mail is moved out of the inbox.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON;"
        ))
        .with_context(|| format!("cannot configure store {}", path.display()))?;
        let mut store = Store {
            conn,
            wal_hook: None,
        };
        store
            .migrate()
            .with_context(|| format!("cannot migrate store {}", path.display()))?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<()> {
        let version: i64 = self.conn.one("PRAGMA user_version", [], |r| r.get(0))?;
        if version as usize > MIGRATIONS.len() {
            bail!(
                "the store has schema version {version}, newer than this mpnd knows ({}): \
                 run the newer mpnd or restore a backup",
                MIGRATIONS.len()
            );
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Exclusive)?;
            tx.execute_batch(sql)
                .with_context(|| format!("migration {}", i + 1))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    fn write(&mut self) -> Result<Transaction<'_>> {
        Ok(self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?)
    }

    pub fn audit_events(
        &self,
        case_id: Option<i64>,
        account: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, at, actor, action, case_id, account, job_id, detail FROM audit
             WHERE (?1 IS NULL OR case_id = ?1) AND (?2 IS NULL OR account = ?2)
             ORDER BY id DESC LIMIT ?3",
        )?;
        let rows = stmt
            .query_map(params![case_id, account, limit as i64], |r| {
                Ok(AuditEvent {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    case_id: r.get(4)?,
                    account: r.get(5)?,
                    job_id: r.get(6)?,
                    detail: r.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows.into_iter().rev().collect())
    }

    /// Records something the daemon wants `mpnd status` to show.
    pub fn set_status(&mut self, key: &str, value: &str, now: i64) -> Result<()> {
        self.conn.exec(
            "INSERT INTO status (key, value, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            params![key, value, now],
        )?;
        Ok(())
    }

    pub fn status(&self) -> Result<Vec<(String, String, i64)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key, value, updated_at FROM status ORDER BY key")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Counts for `mpnd status` and `/metrics`: (table, state, count).
    pub fn counts(&self) -> Result<Vec<(String, String, i64)>> {
        let mut out = Vec::new();
        for (table, col) in [
            ("cases", "state"),
            ("jobs", "state"),
            ("outbox", "state"),
            ("resellers", "state"),
            ("gate_events", "delivery"),
        ] {
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT {col}, COUNT(*) FROM {table} GROUP BY {col} ORDER BY {col}"
            ))?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (state, n) = row?;
                out.push((table.to_string(), state, n));
            }
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT outcome || '/' || decision, COUNT(*) FROM cases GROUP BY outcome, decision",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (state, n) = row?;
            out.push(("triage".to_string(), state, n));
        }
        Ok(out)
    }

    /// The IMAP cursor of a folder, if one was stored.
    pub fn cursor(&self, folder: &str) -> Result<Option<(u32, u32)>> {
        Ok(self
            .conn
            .one(
                "SELECT uidvalidity, next_uid FROM mailbox_cursor WHERE folder = ?1",
                [folder],
                |r| Ok((r.get::<_, i64>(0)? as u32, r.get::<_, i64>(1)? as u32)),
            )
            .optional()?)
    }

    /// Every stored IMAP cursor: (folder, uidvalidity, next UID).
    pub fn cursors(&self) -> Result<Vec<(String, u32, u32)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT folder, uidvalidity, next_uid FROM mailbox_cursor ORDER BY folder",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, i64>(1)? as u32,
                    r.get::<_, i64>(2)? as u32,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub fn set_cursor(&mut self, folder: &str, uidvalidity: u32, next_uid: u32) -> Result<()> {
        self.conn.exec(
            "INSERT INTO mailbox_cursor (folder, uidvalidity, next_uid) VALUES (?1, ?2, ?3)
             ON CONFLICT(folder) DO UPDATE SET uidvalidity = excluded.uidvalidity,
                                               next_uid = excluded.next_uid",
            params![folder, uidvalidity as i64, next_uid as i64],
        )?;
        Ok(())
    }
}

/// Statements through the connection's statement cache. The daemon runs the same
/// few dozen statements for every mail; preparing each anew was a tenth of its CPU
/// in a backlog (`bench/run.sh --attach 'perf record …'`).
pub(crate) trait Cached {
    fn exec<P: Params>(&self, sql: &str, p: P) -> rusqlite::Result<usize>;
    fn one<T, P: Params, F: FnOnce(&Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        p: P,
        f: F,
    ) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec<P: Params>(&self, sql: &str, p: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(p)
    }

    fn one<T, P: Params, F: FnOnce(&Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        p: P,
        f: F,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(p, f)
    }
}

fn audit(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    action: &str,
    case_id: Option<i64>,
    account: Option<&str>,
    job_id: Option<i64>,
    detail: &str,
) -> Result<()> {
    tx.exec(
        "INSERT INTO audit (at, actor, action, case_id, account, job_id, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![ctx.now, ctx.actor, action, case_id, account, job_id, detail],
    )?;
    Ok(())
}

/// Seconds since the epoch; the only clock the store's callers use.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// "2026-11-23 23:40:00Z" for tables and mails.
pub fn fmt_time(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm): no date crate for one format.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(fmt_time(1_763_460_128), "2025-11-18 10:02:08Z");
        assert_eq!(fmt_time(951_782_400), "2000-02-29 00:00:00Z");
    }
}
