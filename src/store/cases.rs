//! Cases and jobs: what was decided about each mail, and the updates that follow.
//!
//! `commit` turns one triaged mail into its message row, case, jobs, confirmation
//! and reseller state in a single transaction, and recognises a mail it has seen
//! before (by Message-ID or mailbox position) so that a redelivered or re-fetched
//! mail is only moved again, never processed twice. An operator's approval goes
//! through the same `start_update` path as an automatic apply.
//!
//! Reseller life cycle: `awaiting_id`/`active` → (ID accepted) `updating` → (every
//! job done) `active` with the new ID. A newer accepted ID for a reseller that is
//! still updating supersedes the older case: its unfinished jobs are cancelled and
//! the newest ID is applied everywhere, since the reseller's latest word wins (e.g.
//! a correction of a typo).

use anyhow::{anyhow, bail, Context, Result};
use rusqlite::{params, OptionalExtension, Transaction};
use serde::Serialize;

use super::registry::{reseller_for_mail, MailReseller};
use super::{audit, Cached, Ctx, Store};
use crate::mailbox::Destination;
use crate::reply::{self, Kind};
use crate::triage::{Decision, MpnId, Triage};

/// One inbound mail as the mailbox layer hands it over.
pub struct Incoming<'a> {
    /// Message-ID, or a hash of the bytes when the mail has none.
    pub key: String,
    /// "maildir:<dir>" or "imap:<folder>".
    pub mailbox: String,
    pub uidvalidity: u32,
    /// IMAP UID or Maildir unique name.
    pub position: String,
    pub size: u64,
    /// `None` when the mail was too large to fetch or keep.
    pub raw: Option<&'a [u8]>,
}

#[derive(Debug, PartialEq)]
pub struct Committed {
    pub case_id: i64,
    pub destination: Destination,
    /// The mail was already committed earlier; nothing new was written.
    pub duplicate: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct CaseRow {
    pub id: i64,
    pub created_at: i64,
    pub sender: String,
    pub subject: String,
    pub account: Option<String>,
    pub outcome: String,
    pub decision: String,
    pub mpn_id: Option<String>,
    pub state: String,
    pub reasons: Vec<String>,
    pub decided_by: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct JobRow {
    pub id: i64,
    pub case_id: i64,
    pub account: String,
    pub kind: String,
    pub subscription_id: Option<String>,
    pub customer_id: Option<String>,
    pub mpn_id: String,
    pub old_mpn_id: Option<String>,
    pub state: String,
    pub attempts: i64,
    pub last_error: String,
    pub idempotency_key: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct CaseDetail {
    #[serde(flatten)]
    pub case: CaseRow,
    /// The whole triage result as committed (candidates with their evidence).
    pub triage: serde_json::Value,
    pub jobs: Vec<JobRow>,
    pub outbox: Vec<super::OutboxRow>,
    pub message_key: Option<String>,
}

pub fn destination_of(decision: Decision) -> Destination {
    match decision {
        Decision::Apply | Decision::Reject => Destination::Processed,
        Decision::Review => Destination::Review,
        Decision::Ignore => Destination::Ignored,
    }
}

fn dest_str(d: Destination) -> &'static str {
    match d {
        Destination::Processed => "processed",
        Destination::Review => "review",
        Destination::Ignored => "ignored",
    }
}

fn dest_parse(s: &str) -> Destination {
    match s {
        "processed" => Destination::Processed,
        "ignored" => Destination::Ignored,
        _ => Destination::Review,
    }
}

const CASE_COLUMNS: &str =
    "id, created_at, sender, subject, account, outcome, decision, mpn_id, state, reasons, decided_by";

fn case_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CaseRow> {
    let reasons: String = r.get(9)?;
    Ok(CaseRow {
        id: r.get(0)?,
        created_at: r.get(1)?,
        sender: r.get(2)?,
        subject: r.get(3)?,
        account: r.get(4)?,
        outcome: r.get(5)?,
        decision: r.get(6)?,
        mpn_id: r.get(7)?,
        state: r.get(8)?,
        reasons: serde_json::from_str(&reasons).unwrap_or_default(),
        decided_by: r.get(10)?,
    })
}

pub(super) const JOB_COLUMNS: &str =
    "id, case_id, account, kind, subscription_id, customer_id, mpn_id, old_mpn_id, \
     state, attempts, last_error, idempotency_key";

pub(super) fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        id: r.get(0)?,
        case_id: r.get(1)?,
        account: r.get(2)?,
        kind: r.get(3)?,
        subscription_id: r.get(4)?,
        customer_id: r.get(5)?,
        mpn_id: r.get(6)?,
        old_mpn_id: r.get(7)?,
        state: r.get(8)?,
        attempts: r.get(9)?,
        last_error: r.get(10)?,
        idempotency_key: r.get(11)?,
    })
}

impl Store {
    /// Where an already committed mail went, found by its key or its position.
    pub fn seen(&self, m: &Incoming<'_>) -> Result<Option<Committed>> {
        seen_in(&self.conn, m)
    }

    /// Records one triaged mail and everything that follows from it, atomically.
    pub fn commit(&mut self, m: &Incoming<'_>, t: &Triage, ctx: &Ctx<'_>) -> Result<Committed> {
        let mut done = self.commit_many(&[(m, t)], ctx)?;
        Ok(done.remove(0))
    }

    /// Records a batch of triaged mails in ONE transaction: all of them or none,
    /// with one fsync for the batch instead of one per mail. A mail seen before
    /// (also earlier in the same batch) is only reported, not recorded again.
    pub fn commit_many(
        &mut self,
        items: &[(&Incoming<'_>, &Triage)],
        ctx: &Ctx<'_>,
    ) -> Result<Vec<Committed>> {
        let tx = self.write()?;
        let mut out = Vec::with_capacity(items.len());
        for (m, t) in items {
            out.push(match seen_in(&tx, m)? {
                Some(seen) => seen,
                None => commit_in(&tx, m, t, ctx)?,
            });
        }
        tx.commit().context("cannot commit case")?;
        Ok(out)
    }

    pub fn cases(&self, state: Option<&str>, account: Option<&str>) -> Result<Vec<CaseRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {CASE_COLUMNS} FROM cases WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR account = ?2)
             ORDER BY id"
        ))?;
        let rows = stmt
            .query_map(params![state, account], case_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub fn case(&self, id: i64) -> Result<Option<CaseDetail>> {
        let row = self
            .conn
            .one(
                &format!("SELECT {CASE_COLUMNS} FROM cases WHERE id = ?1"),
                [id],
                case_row,
            )
            .optional()?;
        let Some(case) = row else { return Ok(None) };
        let (triage, key): (String, Option<String>) = self.conn.one(
            "SELECT c.triage, m.message_key FROM cases c LEFT JOIN messages m ON m.id = c.message_id WHERE c.id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(Some(CaseDetail {
            case,
            triage: serde_json::from_str(&triage).unwrap_or(serde_json::Value::Null),
            jobs: self.jobs(Some(id), None)?,
            outbox: self.outbox(Some(id))?,
            message_key: key,
        }))
    }

    /// The raw mail behind a case, when it was kept.
    pub fn case_raw(&self, id: i64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .one(
                "SELECT m.raw FROM cases c JOIN messages m ON m.id = c.message_id WHERE c.id = ?1",
                [id],
                |r| r.get::<_, Option<Vec<u8>>>(0),
            )
            .optional()?
            .flatten())
    }

    pub fn jobs(&self, case_id: Option<i64>, state: Option<&str>) -> Result<Vec<JobRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE (?1 IS NULL OR case_id = ?1) AND (?2 IS NULL OR state = ?2)
             ORDER BY id"
        ))?;
        let rows = stmt
            .query_map(params![case_id, state], job_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// An operator accepts a case: with the ID and account triage found, or with
    /// ones the operator names. The same checks as for an automatic apply hold: the
    /// ID may not be anyone's old ID nor another reseller's.
    pub fn approve(
        &mut self,
        case_id: i64,
        id: Option<&MpnId>,
        account: Option<&str>,
        ctx: &Ctx<'_>,
    ) -> Result<()> {
        let detail = self
            .case(case_id)?
            .ok_or_else(|| anyhow!("no case {case_id}"))?;
        let c = &detail.case;
        if c.state != "review" && c.state != "rejected" {
            bail!(
                "case {case_id} is {}: only a case in review (or rejected) can be approved",
                c.state
            );
        }
        let id = match (id, &c.mpn_id) {
            (Some(id), _) => id.clone(),
            (None, Some(found)) => MpnId::parse(found).map_err(|e| anyhow!(e))?,
            (None, None) => bail!("case {case_id} has no ID: name it with --id"),
        };
        let account = match (account, &c.account) {
            (Some(a), _) => a.to_string(),
            (None, Some(a)) => a.clone(),
            (None, None) => bail!("case {case_id} has no reseller: name it with --account"),
        };
        let registry = self.registry()?;
        if !registry.resellers.iter().any(|r| r.account == account) {
            bail!("no reseller with account {account:?}");
        }
        for r in &registry.resellers {
            if r.old_ids.iter().any(|o| o == id.as_str()) {
                bail!(
                    "{id} is an old ID of reseller {}: it can never be applied again",
                    r.account
                );
            }
            if r.account != account && r.current_id.as_deref() == Some(id.as_str()) {
                bail!("{id} is the ID of reseller {}", r.account);
            }
            if r.account == account && r.current_id.as_deref() == Some(id.as_str()) && !r.updating {
                bail!("{id} is already the current ID of {account}");
            }
        }
        let tx = self.write()?;
        tx.exec(
            "UPDATE cases SET decision = 'apply', mpn_id = ?2, account = ?3, decided_by = ?4, updated_at = ?5
             WHERE id = ?1",
            params![case_id, id.as_str(), account, ctx.actor, ctx.now],
        )?;
        audit(
            &tx,
            ctx,
            "case.approve",
            Some(case_id),
            Some(&account),
            None,
            &format!("ID {id}"),
        )?;
        start_update(&tx, case_id, &account, &id, ctx)?;
        tx.commit()?;
        Ok(())
    }

    /// An operator rejects a case, optionally telling the reseller why.
    pub fn reject_case(
        &mut self,
        case_id: i64,
        reason: &str,
        notify: bool,
        ctx: &Ctx<'_>,
    ) -> Result<()> {
        let detail = self
            .case(case_id)?
            .ok_or_else(|| anyhow!("no case {case_id}"))?;
        if detail.case.state != "review" {
            bail!(
                "case {case_id} is {}: only a case in review can be rejected",
                detail.case.state
            );
        }
        let tx = self.write()?;
        tx.exec(
            "UPDATE cases SET state = 'rejected', decision = 'reject', decided_by = ?2, updated_at = ?3,
             reasons = json_insert(reasons, '$[#]', ?4) WHERE id = ?1",
            params![case_id, ctx.actor, ctx.now, format!("rejected by operator: {reason}")],
        )?;
        audit(
            &tx,
            ctx,
            "case.reject",
            Some(case_id),
            detail.case.account.as_deref(),
            None,
            reason,
        )?;
        if notify {
            let account = detail
                .case
                .account
                .as_deref()
                .ok_or_else(|| anyhow!("case {case_id} has no reseller to notify"))?;
            queue_mail(&tx, case_id, account, Kind::Rejected, reason, ctx)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Revives the failed or dead jobs of a case, so the worker (or the operator)
    /// tries them again. Returns how many.
    pub fn retry_jobs(&mut self, case_id: i64, ctx: &Ctx<'_>) -> Result<usize> {
        let tx = self.write()?;
        let n = tx.exec(
            "UPDATE jobs SET state = 'pending', next_attempt_at = 0, attempts = 0, updated_at = ?2
             WHERE case_id = ?1 AND state IN ('failed', 'dead')",
            params![case_id, ctx.now],
        )?;
        audit(
            &tx,
            ctx,
            "case.retry",
            Some(case_id),
            None,
            None,
            &format!("{n} job(s) revived"),
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Replaces a case in review with a fresh triage of the same mail (after the
    /// registry changed, say), following the new decision as a new mail would.
    pub fn retriage(&mut self, case_id: i64, t: &Triage, ctx: &Ctx<'_>) -> Result<()> {
        let detail = self
            .case(case_id)?
            .ok_or_else(|| anyhow!("no case {case_id}"))?;
        if detail.case.state != "review" {
            bail!(
                "case {case_id} is {}: only a case in review is triaged again",
                detail.case.state
            );
        }
        let tx = self.write()?;
        let state = match t.decision {
            Decision::Apply => "updating",
            Decision::Review => "review",
            Decision::Reject => "rejected",
            Decision::Ignore => "ignored",
        };
        tx.exec(
            "UPDATE cases SET outcome = ?2, decision = ?3, mpn_id = ?4, account = ?5, state = ?6, reasons = ?7,
             triage = ?8, updated_at = ?9, mail_date = ?10 WHERE id = ?1",
            params![
                case_id,
                t.outcome.as_str(),
                t.decision.as_str(),
                t.mpn_id.as_ref().map(|i| i.to_string()),
                t.reseller,
                state,
                serde_json::to_string(&t.reasons)?,
                serde_json::to_string(t)?,
                ctx.now,
                t.headers.date
            ],
        )?;
        audit(
            &tx,
            ctx,
            "case.retriage",
            Some(case_id),
            t.reseller.as_deref(),
            None,
            &format!("now {}", t.decision.as_str()),
        )?;
        follow_decision(&tx, case_id, t, ctx)?;
        tx.commit()?;
        Ok(())
    }

    /// A job is done (by the operator for the manual backend, or by a worker).
    /// When it was the case's last, the reseller gets its new ID and may order.
    pub fn job_done(&mut self, job_id: i64, ctx: &Ctx<'_>) -> Result<()> {
        let tx = self.write()?;
        let job = tx
            .one(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                [job_id],
                job_row,
            )
            .optional()?
            .ok_or_else(|| anyhow!("no job {job_id}"))?;
        match job.state.as_str() {
            "done" => bail!("job {job_id} is already done"),
            "cancelled" => bail!("job {job_id} was cancelled (a newer ID superseded its case)"),
            _ => {}
        }
        tx.exec(
            "UPDATE jobs SET state = 'done', updated_at = ?2 WHERE id = ?1",
            params![job_id, ctx.now],
        )?;
        if let Some(sub) = &job.subscription_id {
            tx.exec(
                "UPDATE subscriptions SET partner_id = ?2, updated_at = ?3 WHERE subscription_id = ?1",
                params![sub, job.mpn_id, ctx.now],
            )?;
        }
        audit(
            &tx,
            ctx,
            "job.done",
            Some(job.case_id),
            Some(&job.account),
            Some(job_id),
            &describe_job(&job),
        )?;
        complete_if_done(&tx, job.case_id, ctx)?;
        tx.commit()?;
        Ok(())
    }

    /// A job failed; it stays failed (the reseller blocked) until retried.
    pub fn job_fail(&mut self, job_id: i64, error: &str, ctx: &Ctx<'_>) -> Result<()> {
        let tx = self.write()?;
        let (case_id, account, state): (i64, String, String) = tx
            .one(
                "SELECT case_id, account, state FROM jobs WHERE id = ?1",
                [job_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?
            .ok_or_else(|| anyhow!("no job {job_id}"))?;
        if state == "done" || state == "cancelled" {
            bail!("job {job_id} is {state}");
        }
        tx.exec(
            "UPDATE jobs SET state = 'failed', last_error = ?2, updated_at = ?3 WHERE id = ?1",
            params![job_id, error, ctx.now],
        )?;
        audit(
            &tx,
            ctx,
            "job.fail",
            Some(case_id),
            Some(&account),
            Some(job_id),
            error,
        )?;
        tx.commit()?;
        Ok(())
    }
}

fn describe_job(job: &JobRow) -> String {
    match &job.subscription_id {
        Some(s) => format!("subscription {s}: partner ID {}", job.mpn_id),
        None => format!("account {}: MPN ID {}", job.account, job.mpn_id),
    }
}

/// Where an already committed mail went, found by its key or its position.
fn seen_in(conn: &rusqlite::Connection, m: &Incoming<'_>) -> Result<Option<Committed>> {
    let row: Option<(String, Option<i64>)> = conn
        .prepare_cached(
            "SELECT m.destination, (SELECT c.id FROM cases c WHERE c.message_id = m.id ORDER BY c.id LIMIT 1)
             FROM messages m
             WHERE m.message_key = ?1 OR (m.mailbox = ?2 AND m.uidvalidity = ?3 AND m.position = ?4)
             ORDER BY m.id LIMIT 1",
        )?
        .query_row(
            params![m.key, m.mailbox, m.uidvalidity as i64, m.position],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.map(|(d, case)| Committed {
        case_id: case.unwrap_or(0),
        destination: dest_parse(&d),
        duplicate: true,
    }))
}

/// One mail's message row, case and follow-up, inside the caller's transaction.
fn commit_in(
    tx: &Transaction<'_>,
    m: &Incoming<'_>,
    t: &Triage,
    ctx: &Ctx<'_>,
) -> Result<Committed> {
    let held: Triage;
    let why_hold = match (t.decision, &t.reseller, &t.mpn_id) {
        (Decision::Apply, Some(account), Some(id)) => newer_case(tx, account, id, t.headers.date)?,
        // Triage promises an account and an ID with every apply; if it ever
        // does not, hold the mail for a person rather than guess.
        (Decision::Apply, _, _) => Some("incomplete result: no reseller or no ID".into()),
        _ => None,
    };
    let t = match why_hold {
        Some(why) => {
            let mut h = t.clone();
            h.decision = Decision::Review;
            h.reasons.push(why);
            held = h;
            &held
        }
        None => t,
    };
    let destination = destination_of(t.decision);
    tx.exec(
            "INSERT INTO messages (message_key, mailbox, uidvalidity, position, size, raw, received_at, destination)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![m.key, m.mailbox, m.uidvalidity as i64, m.position, m.size as i64, m.raw, ctx.now, dest_str(destination)],
        )
        .context("cannot record message")?;
    let message_id = tx.last_insert_rowid();
    let state = match t.decision {
        Decision::Apply => "updating",
        Decision::Review => "review",
        Decision::Reject => "rejected",
        Decision::Ignore => "ignored",
    };
    let triage_json = serde_json::to_string(t)?;
    tx.exec(
            "INSERT INTO cases (message_id, created_at, updated_at, sender, subject, account, outcome, decision,
             mpn_id, state, reasons, triage, decided_by, mail_date)
             VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'mpnd', ?12)",
            params![
                message_id,
                ctx.now,
                t.headers.from.clone().unwrap_or_default(),
                t.headers.subject,
                t.reseller,
                t.outcome.as_str(),
                t.decision.as_str(),
                t.mpn_id.as_ref().map(|i| i.to_string()),
                state,
                serde_json::to_string(&t.reasons)?,
                triage_json,
                t.headers.date,
            ],
        )?;
    let case_id = tx.last_insert_rowid();
    audit(
        tx,
        ctx,
        &format!("case.{}", t.decision.as_str()),
        Some(case_id),
        t.reseller.as_deref(),
        None,
        &format!(
            "outcome {}, ID {}, {}",
            t.outcome.as_str(),
            t.mpn_id.as_ref().map(|i| i.as_str()).unwrap_or("-"),
            t.reasons.join("; ")
        ),
    )?;
    follow_decision(tx, case_id, t, ctx)?;
    Ok(Committed {
        case_id,
        destination,
        duplicate: false,
    })
}

/// What a decision sets going: the update for an apply, the reply for a reject.
fn follow_decision(tx: &Transaction<'_>, case_id: i64, t: &Triage, ctx: &Ctx<'_>) -> Result<()> {
    match (t.decision, &t.reseller, &t.mpn_id, &t.reject) {
        (Decision::Apply, Some(account), Some(id), _) => {
            start_update(tx, case_id, account, id, ctx)
        }
        (Decision::Reject, Some(account), _, Some(reason)) => {
            let locale = reseller_for_mail(tx, account)?.locale;
            let text = reply::reject_text(reason, &locale);
            queue_mail(tx, case_id, account, Kind::Rejected, &text, ctx)
        }
        _ => Ok(()),
    }
}

/// When the reseller's current or pending ID came from a mail written after this
/// one, and is another ID, says so: mails can arrive out of order, and an older
/// mail must not replace a newer ID (a correction, say) without a person looking.
fn newer_case(
    tx: &Transaction<'_>,
    account: &str,
    id: &MpnId,
    date: Option<i64>,
) -> Result<Option<String>> {
    let Some(date) = date else { return Ok(None) };
    // MAX(id) rather than ORDER BY id DESC LIMIT 1: with the ORDER BY, SQLite
    // walked all of the reseller's cases newest first (reading each row's Date
    // past its triage JSON) whenever none matched: quadratic over a backlog.
    let newer: Option<(i64, Option<String>)> = tx
        .one(
            "SELECT id, mpn_id FROM cases WHERE id = (SELECT MAX(id) FROM cases
             WHERE account = ?1 AND state IN ('updating', 'done') AND mail_date > ?2)",
            params![account, date],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(newer
        .filter(|(_, newer)| newer.as_deref() != Some(id.as_str()))
        .map(|(case, newer)| {
            format!(
                "written before case {case}, which gave the newer ID {}: an older mail does not replace it",
                newer.as_deref().unwrap_or("-")
            )
        }))
}

/// Queues the account job and one job per subscription, blocks the reseller's
/// orders, and queues the "received" confirmation. A newer ID supersedes the
/// update in flight (its open jobs are cancelled); the ID already being applied,
/// sent again (a reminder, a colleague), joins it instead: the open jobs carry on
/// under this case, nothing is queued twice, and the repeat is confirmed like any
/// apply.
fn start_update(
    tx: &Transaction<'_>,
    case_id: i64,
    account: &str,
    id: &MpnId,
    ctx: &Ctx<'_>,
) -> Result<()> {
    let (old, pending): (Option<String>, Option<String>) = tx
        .one(
            "SELECT mpn_id, CASE WHEN state = 'updating' THEN pending_mpn_id END
             FROM resellers WHERE account = ?1",
            [account],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .with_context(|| format!("no reseller with account {account:?}"))?;
    let joins = pending.as_deref() == Some(id.as_str());
    let (action, detail) = if joins {
        let moved = supersede_updates(
            tx,
            account,
            Some(case_id),
            true,
            &format!("case {case_id} sent ID {id} again: the update carries on there"),
            ctx,
        )?;
        (
            "update.join",
            format!(
                "ID {id} is already being applied: {moved} open job(s) carry on under this case"
            ),
        )
    } else {
        supersede_updates(
            tx,
            account,
            Some(case_id),
            false,
            &format!("superseded by case {case_id} (ID {id})"),
            ctx,
        )?;
        let subs = queue_jobs(tx, case_id, account, id, old.as_deref(), ctx)?;
        (
            "update.start",
            format!("ID {id}: 1 account job, {subs} subscription job(s); orders blocked"),
        )
    };
    tx.exec(
        "UPDATE cases SET state = 'updating', updated_at = ?2 WHERE id = ?1",
        params![case_id, ctx.now],
    )?;
    audit(tx, ctx, action, Some(case_id), Some(account), None, &detail)?;
    queue_mail(tx, case_id, account, Kind::Received, "", ctx)?;
    if joins {
        // No job was left open (an update whose last job just finished): finish it.
        complete_if_done(tx, case_id, ctx)?;
    }
    Ok(())
}

/// The account job and one job per subscription for a new ID, and the reseller
/// marked as updating to it. Returns the number of subscription jobs.
fn queue_jobs(
    tx: &Transaction<'_>,
    case_id: i64,
    account: &str,
    id: &MpnId,
    old: Option<&str>,
    ctx: &Ctx<'_>,
) -> Result<usize> {
    let subs: Vec<(String, String)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT subscription_id, customer_id FROM subscriptions WHERE account = ?1 ORDER BY subscription_id",
        )?;
        let rows = stmt
            .query_map([account], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows
    };
    tx.exec(
        "INSERT INTO jobs (case_id, account, kind, mpn_id, old_mpn_id, idempotency_key, created_at, updated_at)
         VALUES (?1, ?2, 'account', ?3, ?4, ?5, ?6, ?6)",
        params![case_id, account, id.as_str(), old, format!("mpnd-{case_id}-account-{account}"), ctx.now],
    )?;
    for (sub, customer) in &subs {
        tx.exec(
            "INSERT INTO jobs (case_id, account, kind, subscription_id, customer_id, mpn_id, old_mpn_id,
             idempotency_key, created_at, updated_at) VALUES (?1, ?2, 'subscription', ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
            params![case_id, account, sub, customer, id.as_str(), old, format!("mpnd-{case_id}-sub-{sub}"), ctx.now],
        )?;
    }
    tx.exec(
        "UPDATE resellers SET state = 'updating', pending_mpn_id = ?2, updated_at = ?3 WHERE account = ?1",
        params![account, id.as_str(), ctx.now],
    )?;
    Ok(subs.len())
}

/// Cancels the unfinished jobs of every case of `account` still updating.
pub(super) fn cancel_updates(
    tx: &Transaction<'_>,
    account: &str,
    ctx: &Ctx<'_>,
    why: &str,
) -> Result<()> {
    supersede_updates(tx, account, None, false, why, ctx).map(drop)
}

/// Supersedes every case of `account` still updating other than `newer`: their
/// unfinished jobs are cancelled or, with `take_jobs`, handed to `newer` (which
/// carries the same ID on). Returns how many jobs were cancelled or handed over.
fn supersede_updates(
    tx: &Transaction<'_>,
    account: &str,
    newer: Option<i64>,
    take_jobs: bool,
    why: &str,
    ctx: &Ctx<'_>,
) -> Result<usize> {
    let cases: Vec<i64> = {
        let mut stmt = tx.prepare_cached(
            "SELECT id FROM cases WHERE account = ?1 AND state = 'updating' AND id IS NOT ?2",
        )?;
        let rows = stmt
            .query_map(params![account, newer], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<i64>>>()?;
        rows
    };
    let mut jobs = 0;
    for case_id in cases {
        jobs += match (take_jobs, newer) {
            (true, Some(newer)) => tx.exec(
                "UPDATE jobs SET case_id = ?3, updated_at = ?2 WHERE case_id = ?1 AND state NOT IN ('done', 'cancelled')",
                params![case_id, ctx.now, newer],
            )?,
            _ => tx.exec(
                "UPDATE jobs SET state = 'cancelled', updated_at = ?2 WHERE case_id = ?1 AND state NOT IN ('done', 'cancelled')",
                params![case_id, ctx.now],
            )?,
        };
        tx.exec(
            "UPDATE cases SET state = 'superseded', updated_at = ?2 WHERE id = ?1",
            params![case_id, ctx.now],
        )?;
        audit(
            tx,
            ctx,
            "case.superseded",
            Some(case_id),
            Some(account),
            None,
            why,
        )?;
    }
    Ok(jobs)
}

/// When every job of an updating case is done: the new ID becomes the reseller's,
/// the old one is revoked for good, orders open, and the "applied" mail is queued.
fn complete_if_done(tx: &Transaction<'_>, case_id: i64, ctx: &Ctx<'_>) -> Result<()> {
    let (state, account, id): (String, Option<String>, Option<String>) = tx.one(
        "SELECT state, account, mpn_id FROM cases WHERE id = ?1",
        [case_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let open: i64 = tx.one(
        "SELECT COUNT(*) FROM jobs WHERE case_id = ?1 AND state NOT IN ('done', 'cancelled')",
        [case_id],
        |r| r.get(0),
    )?;
    let (Some(account), Some(id)) = (account, id) else {
        return Ok(());
    };
    if state != "updating" || open > 0 {
        return Ok(());
    }
    let old: Option<String> = tx.one(
        "SELECT mpn_id FROM resellers WHERE account = ?1",
        [&account],
        |r| r.get(0),
    )?;
    if let Some(old) = old.filter(|o| *o != id) {
        tx.exec(
            "INSERT INTO reseller_ids (account, mpn_id, status, since) VALUES (?1, ?2, 'revoked', ?3)
             ON CONFLICT(account, mpn_id) DO UPDATE SET status = 'revoked', since = excluded.since",
            params![account, old, ctx.now],
        )?;
    }
    tx.exec(
        "INSERT INTO reseller_ids (account, mpn_id, status, since) VALUES (?1, ?2, 'current', ?3)
         ON CONFLICT(account, mpn_id) DO UPDATE SET status = 'current', since = excluded.since",
        params![account, id, ctx.now],
    )?;
    tx.exec(
        "UPDATE resellers SET state = 'active', mpn_id = ?2, mpn_id_applied = 1, pending_mpn_id = NULL,
         updated_at = ?3 WHERE account = ?1",
        params![account, id, ctx.now],
    )?;
    tx.exec(
        "UPDATE cases SET state = 'done', updated_at = ?2 WHERE id = ?1",
        params![case_id, ctx.now],
    )?;
    audit(
        tx,
        ctx,
        "update.done",
        Some(case_id),
        Some(&account),
        None,
        &format!("ID {id} in place; orders allowed"),
    )?;
    queue_mail(tx, case_id, &account, Kind::Applied, "", ctx)?;
    Ok(())
}

/// Renders and queues a confirmation for a case. It goes to the case's sender when
/// that is a registered contact of the reseller, else to the reseller's first
/// registered contact: never to a stranger. Over the daily cap per recipient it is
/// recorded as suppressed, so an operator sees it was not sent.
pub(super) fn queue_mail(
    tx: &Transaction<'_>,
    case_id: i64,
    account: &str,
    kind: Kind,
    reason: &str,
    ctx: &Ctx<'_>,
) -> Result<()> {
    let MailReseller {
        company,
        locale,
        contacts,
        domains,
    } = reseller_for_mail(tx, account)?;
    // Only the headers of the stored triage: parsing all of it (every candidate's
    // evidence) for three fields was a measurable share of a backlog's CPU.
    let (sender, mpn_id, subject, original_id, references): (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ) = tx.one(
        "SELECT sender, mpn_id, json_extract(triage, '$.headers.subject'),
         json_extract(triage, '$.headers.message_id'), json_extract(triage, '$.headers.references')
         FROM cases WHERE id = ?1",
        [case_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
    )?;
    let sender_domain = sender
        .rsplit_once('@')
        .map(|(_, d)| d.to_string())
        .unwrap_or_default();
    let registered = contacts.contains(&sender)
        || (!sender_domain.is_empty()
            && domains
                .split(';')
                .any(|d| d.eq_ignore_ascii_case(&sender_domain)));
    let recipient = if registered {
        sender.clone()
    } else if let Some(first) = contacts.first() {
        first.clone()
    } else {
        audit(
            tx,
            ctx,
            "mail.skip",
            Some(case_id),
            Some(account),
            None,
            &format!("no registered contact for the {} mail", kind.as_str()),
        )?;
        return Ok(());
    };
    // The thread is the reseller's mail only when it goes back to its sender.
    let (orig_subject, orig_id, refs) = if recipient == sender {
        (
            subject.unwrap_or_default(),
            original_id,
            references
                .and_then(|r| serde_json::from_str::<Vec<String>>(&r).ok())
                .unwrap_or_default(),
        )
    } else {
        (String::new(), None, Vec::new())
    };
    let subscriptions: i64 = tx.one(
        "SELECT COUNT(*) FROM jobs WHERE case_id = ?1 AND kind = 'subscription' AND state <> 'cancelled'",
        [case_id],
        |r| r.get(0),
    )?;
    let n: i64 = tx.one(
        "SELECT COUNT(*) FROM outbox WHERE case_id = ?1",
        [case_id],
        |r| r.get(0),
    )?;
    let domain = crate::config::address_of(ctx.from)
        .rsplit_once('@')
        .map(|(_, d)| d.to_string())
        .unwrap_or_else(|| "localhost".into());
    let message_id = format!("mpnd.{case_id}.{}.{}@{domain}", kind.as_str(), n + 1);
    let raw = reply::render(
        ctx.templates,
        &reply::Reply {
            kind,
            locale: &locale,
            from: ctx.from,
            to: &recipient,
            account,
            company: &company,
            mpn_id: mpn_id.as_deref().unwrap_or("-"),
            subscriptions: subscriptions as usize,
            reason,
            original_subject: &orig_subject,
            original_message_id: orig_id.as_deref(),
            original_references: &refs,
            message_id: &message_id,
            date_unix: ctx.now,
        },
    )?;
    let sent_today: i64 = tx.one(
        "SELECT COUNT(*) FROM outbox WHERE recipient = ?1 AND created_at > ?2 AND state <> 'suppressed'",
        params![recipient, ctx.now - 86_400],
        |r| r.get(0),
    )?;
    let state = if sent_today >= ctx.max_per_recipient_per_day as i64 {
        "suppressed"
    } else {
        "pending"
    };
    tx.exec(
        "INSERT INTO outbox (case_id, account, kind, recipient, message_id, raw, state, created_at, last_error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            case_id,
            account,
            kind.as_str(),
            recipient,
            message_id,
            raw,
            state,
            ctx.now,
            if state == "suppressed" { "daily limit per recipient reached" } else { "" }
        ],
    )?;
    audit(
        tx,
        ctx,
        "mail.queue",
        Some(case_id),
        Some(account),
        None,
        &format!("{} to {recipient} ({state})", kind.as_str()),
    )?;
    Ok(())
}
