//! WAL checkpoints on a thread of their own, for the daemon.
//!
//! In WAL mode a commit appends pages to the `-wal` file; a checkpoint copies them
//! back into the database file. By default the commit that takes the WAL past
//! 1,000 pages does that copy itself, with its fsyncs, before it returns. In a
//! backlog that commit is the mailbox loop's, and the next batch waits for it. The
//! daemon's writing connections therefore leave checkpoints to [`Checkpointer`]:
//! their WAL hook (called after each commit, its lock released, with the WAL's size)
//! wakes it at the same 1,000 pages, and it checkpoints on its own connection and
//! thread. SQLite runs a checkpoint beside readers and writers, so nobody waits for
//! it; and an idle daemon's few small commits (status reports) wake nothing.
//!
//! Nothing of durability changes: a commit is durable once it is in the WAL (with
//! `synchronous = FULL`, fsynced there), checkpointed or not.

use std::ffi::{c_char, c_int, c_void};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::{ffi, Connection};

use super::Store;

/// The WAL's size, in pages, that calls for a checkpoint: SQLite's own default.
const WAL_PAGES: c_int = 1000;

/// Tries after an incomplete checkpoint (a reader still used older pages) before
/// waiting for the next call, and the pause before each.
const RETRIES: u32 = 5;
const RETRY_AFTER: Duration = Duration::from_millis(20);

#[derive(Default)]
pub(super) struct Wake {
    dirty: bool,
    stop: bool,
}

pub(super) type Signal = Arc<(Mutex<Wake>, Condvar)>;

fn wake(signal: &(Mutex<Wake>, Condvar)) {
    let (lock, cv) = signal;
    lock.lock().unwrap_or_else(|e| e.into_inner()).dirty = true;
    cv.notify_one();
}

/// The checkpoint thread; stopping it (on drop) runs a last, full checkpoint.
pub struct Checkpointer {
    signal: Signal,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// For the store at `path`, which [`Store::open`] has created.
    pub fn start(path: &Path) -> Result<Checkpointer> {
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open store {} for checkpoints", path.display()))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // Reads the mode the file is in (WAL, set by Store::open); a connection
        // that never read the file checkpoints nothing.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .with_context(|| format!("cannot open store {} for checkpoints", path.display()))?;
        anyhow::ensure!(
            mode.eq_ignore_ascii_case("wal"),
            "store {} is not in WAL mode ({mode})",
            path.display()
        );
        // Checkpoints copy pages file to file; this connection needs no page cache.
        conn.pragma_update(None, "cache_size", -64)?;
        let signal: Signal = Arc::default();
        let thread = std::thread::Builder::new()
            .name("mpnd-checkpoint".into())
            .spawn({
                let signal = signal.clone();
                move || run(conn, signal)
            })
            .context("cannot start the checkpoint thread")?;
        Ok(Checkpointer {
            signal,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (lock, cv) = &*self.signal;
        lock.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        cv.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// SQLite's WAL hook: after a commit, with the WAL's size in pages. It replaces the
/// automatic checkpoint (`sqlite3_wal_autocheckpoint` is this hook too).
unsafe extern "C" fn on_commit(
    arg: *mut c_void,
    _db: *mut ffi::sqlite3,
    _name: *const c_char,
    pages: c_int,
) -> c_int {
    if pages >= WAL_PAGES {
        // SAFETY: `arg` is the `Signal` kept in the `Store` whose connection calls
        // this; the store drops its connection before it (field order).
        let signal = unsafe { &*(arg as *const (Mutex<Wake>, Condvar)) };
        // Nothing here panics (a poisoned lock is used as is); an unwind must not
        // cross into SQLite all the same.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| wake(signal)));
    }
    ffi::SQLITE_OK
}

impl Store {
    /// Leaves this connection's checkpoints to `ck`: its commits no longer copy the
    /// WAL into the database file, they wake `ck` to do it.
    pub fn hand_checkpoints_to(&mut self, ck: &Checkpointer) {
        let signal = ck.signal.clone();
        let arg = Arc::as_ptr(&signal) as *mut c_void;
        // SAFETY: the handle is this open connection's; `arg` stays valid while
        // the hook can be called, since `self.wal_hook` keeps it until the
        // connection is closed or the hook replaced (here, before the old one is
        // dropped).
        unsafe {
            ffi::sqlite3_wal_hook(self.conn.handle(), Some(on_commit), arg);
        }
        self.wal_hook = Some(signal);
    }
}

fn run(conn: Connection, signal: Signal) {
    let (lock, cv) = &*signal;
    let mut failing = false;
    // Checkpoints in a row that left pages behind (a reader still used them).
    let mut incomplete = 0;
    loop {
        let stop = {
            let mut w = lock.lock().unwrap_or_else(|e| e.into_inner());
            if incomplete == 0 || incomplete > RETRIES {
                while !w.dirty && !w.stop {
                    w = cv.wait(w).unwrap_or_else(|e| e.into_inner());
                }
            }
            w.dirty = false;
            w.stop
        };
        if stop {
            // A tidy WAL for whoever opens the store next (or backs it up); not
            // worth holding up a shutdown for long.
            let _ = conn.busy_timeout(Duration::from_secs(1));
            if let Err(e) = checkpoint(&conn, "TRUNCATE") {
                tracing::debug!("last checkpoint: {e:#}");
            }
            return;
        }
        if incomplete > 0 {
            std::thread::sleep(RETRY_AFTER);
        }
        match checkpoint(&conn, "PASSIVE") {
            Ok(complete) => {
                if failing {
                    tracing::info!("store checkpoints work again");
                    failing = false;
                }
                incomplete = if complete { 0 } else { incomplete + 1 };
            }
            Err(e) => {
                // Commits go on into the WAL; a full disk or a read-only store is
                // reported by the writers (`/healthz`), this only says why the WAL
                // is not shrinking. Once per failure, not once per commit.
                if !failing {
                    tracing::warn!(
                        "store checkpoint failed (the WAL grows until one works): {e:#}"
                    );
                    failing = true;
                }
                incomplete = 0;
            }
        }
    }
}

/// Returns whether every page of the WAL is now in the database file.
fn checkpoint(conn: &Connection, mode: &str) -> Result<bool> {
    let (busy, log, done): (i64, i64, i64) = conn
        .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .with_context(|| format!("PRAGMA wal_checkpoint({mode})"))?;
    if log < 0 {
        anyhow::bail!("the store is not in WAL mode");
    }
    Ok(busy == 0 && done >= log)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len(path: &Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    /// Pages reach the database file only by a checkpoint: with the connection's
    /// own checkpoints off, only the thread can have put them there.
    #[test]
    fn the_thread_checkpoints_a_grown_wal_and_leaves_it_empty_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mpnd.sqlite3");
        let wal = dir.path().join("mpnd.sqlite3-wal");
        let mut store = Store::open(&path).unwrap();
        let ck = Checkpointer::start(&path).unwrap();
        store.hand_checkpoints_to(&ck);

        // An idle daemon's small commits (status reports) wake nothing.
        let before = len(&path);
        for i in 0..20 {
            store
                .set_status("mailbox", &format!("idle {i}"), i)
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(len(&path), before, "small commits were checkpointed");

        // A backlog's worth is.
        let value = "x".repeat(64 * 1024);
        for i in 0..96 {
            store.set_status(&format!("k{i}"), &value, 0).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while len(&path) < before + 4 * 1024 * 1024 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            len(&path) >= before + 4 * 1024 * 1024,
            "the database file did not receive the pages committed ({} bytes)",
            len(&path)
        );
        assert!(len(&wal) > 0, "the WAL was truncated while in use");
        drop(ck);
        assert_eq!(len(&wal), 0, "the last checkpoint leaves an empty WAL");
        // Nothing lost on the way.
        assert_eq!(store.status().unwrap().len(), 97);
    }
}
