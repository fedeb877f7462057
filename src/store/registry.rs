//! The reseller registry: resellers, their IDs old and new, their subscriptions,
//! and the order gate that follows from a reseller's state.
//!
//! Imports are all-or-nothing: every row is checked first, and one bad row (with
//! its line number in the report) leaves the registry unchanged. A re-import updates
//! names, contacts and locale but never a reseller's state or an ID mpnd applied:
//! those change only through the flow.

use std::collections::HashSet;

use anyhow::{bail, Context, Result};
use rusqlite::{params, OptionalExtension, Transaction};
use serde::Serialize;

use super::{audit, Cached, Ctx, Store};
use crate::triage::{MpnId, Registry, RegistryEntry};

#[derive(Clone, Debug, Serialize)]
pub struct Reseller {
    pub account: String,
    pub company: String,
    pub contact_emails: Vec<String>,
    pub domains: Vec<String>,
    /// The ID on record.
    pub mpn_id: Option<String>,
    /// True when mpnd applied `mpn_id`; false for an imported (old) one.
    pub mpn_id_applied: bool,
    pub pending_mpn_id: Option<String>,
    pub revoked_ids: Vec<String>,
    pub locale: String,
    pub state: String,
    pub updated_at: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Subscription {
    pub subscription_id: String,
    pub account: String,
    pub customer_id: String,
    pub offer: String,
    pub partner_id: String,
}

/// The order gate's answer, as the HTTP API and `mpnd gate` give it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GateAnswer {
    pub account: String,
    pub allowed: bool,
    pub state: String,
    pub reason: String,
    pub mpn_id: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ImportReport {
    pub added: usize,
    pub updated: usize,
    pub unchanged: usize,
}

/// Splits CSV text into records of fields, honouring double quotes (RFC 4180), and
/// keeps each record's line number for error messages.
pub fn parse_csv(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut records = Vec::new();
    let mut field = String::new();
    let mut fields = Vec::new();
    let mut in_quotes = false;
    let mut line = 1;
    let mut record_line = 1;
    let mut chars = text.trim_start_matches('\u{feff}').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if in_quotes && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => fields.push(std::mem::take(&mut field)),
            '\r' if !in_quotes => {}
            '\n' if !in_quotes => {
                fields.push(std::mem::take(&mut field));
                if !(fields.len() == 1 && fields[0].trim().is_empty()) {
                    records.push((record_line, std::mem::take(&mut fields)));
                }
                fields.clear();
                line += 1;
                record_line = line;
            }
            c => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c);
            }
        }
    }
    if !field.is_empty() || !fields.is_empty() {
        fields.push(field);
        records.push((record_line, fields));
    }
    records
}

fn split_list(s: &str) -> Vec<String> {
    s.split(';')
        .map(|x| x.trim().to_lowercase())
        .filter(|x| !x.is_empty())
        .collect()
}

/// Checks a header row and returns each wanted column's index (None if optional
/// and absent).
fn columns(header: &[String], required: &[&str], optional: &[&str]) -> Result<Vec<Option<usize>>> {
    let find = |name: &str| {
        header
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for name in required {
        match find(name) {
            Some(i) => out.push(Some(i)),
            None => missing.push(*name),
        }
    }
    if !missing.is_empty() {
        bail!(
            "line 1: missing column(s) {}; expected header {}",
            missing.join(", "),
            required.join(",")
        );
    }
    for name in optional {
        out.push(find(name));
    }
    Ok(out)
}

struct ResellerRow {
    account: String,
    company: String,
    contacts: Vec<String>,
    domains: Vec<String>,
    old_id: Option<String>,
    locale: String,
    state: Option<String>,
}

/// Reads and checks a reseller CSV; every bad row is reported with its line.
fn parse_resellers(text: &str) -> Result<Vec<ResellerRow>> {
    let records = parse_csv(text);
    let Some((_, header)) = records.first() else {
        bail!("the file is empty; expected a header line");
    };
    let cols = columns(
        header,
        &[
            "account",
            "company",
            "contact_emails",
            "domains",
            "old_mpn_id",
            "locale",
        ],
        &["state"],
    )?;
    let get = |f: &[String], i: usize| -> String {
        cols[i]
            .and_then(|c| f.get(c))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut seen_accounts = HashSet::new();
    let mut owner_of: std::collections::HashMap<String, String> = Default::default();
    for (line, f) in records.iter().skip(1) {
        let mut bad = |msg: String| errors.push(format!("line {line}: {msg}"));
        let account = get(f, 0);
        if account.is_empty() {
            bad("account is empty".into());
            continue;
        }
        if !seen_accounts.insert(account.clone()) {
            bad(format!("account {account} appears twice"));
        }
        let company = get(f, 1);
        if company.is_empty() {
            bad(format!("company of {account} is empty"));
        }
        let contacts = split_list(&get(f, 2));
        for c in &contacts {
            if !c.contains('@') {
                bad(format!("contact_emails: {c:?} is not an address"));
            }
        }
        let domains = split_list(&get(f, 3));
        for d in &domains {
            if d.contains('@') || !d.contains('.') {
                bad(format!("domains: {d:?} is not a domain"));
            }
        }
        for key in contacts.iter().chain(domains.iter()) {
            if let Some(other) = owner_of.insert(key.clone(), account.clone()) {
                if other != account {
                    bad(format!("{key} belongs to both {other} and {account}"));
                }
            }
        }
        let old = get(f, 4);
        let old_id = if old.is_empty() {
            None
        } else {
            match MpnId::parse(&old) {
                Ok(id) => Some(id.to_string()),
                Err(e) => {
                    bad(format!("old_mpn_id: {e}"));
                    None
                }
            }
        };
        let locale = get(f, 5).to_lowercase();
        let locale = if locale.is_empty() {
            "de".into()
        } else {
            locale
        };
        if locale != "de" && locale != "en" {
            bad(format!("locale: expected de or en, got {locale:?}"));
        }
        let state = Some(get(f, 6)).filter(|s| !s.is_empty());
        if let Some(s) = &state {
            if s != "active" && s != "awaiting_id" {
                bad(format!("state: expected active or awaiting_id, got {s:?}"));
            }
        }
        rows.push(ResellerRow {
            account,
            company,
            contacts,
            domains,
            old_id,
            locale,
            state,
        });
    }
    if !errors.is_empty() {
        bail!("nothing imported:\n{}", errors.join("\n"));
    }
    Ok(rows)
}

/// A registry for offline triage (`mpnd extract --resellers FILE.csv`): the file's
/// `old_mpn_id`s are old IDs, as for a fresh import.
pub fn registry_from_csv(text: &str) -> Result<Registry> {
    Ok(Registry {
        resellers: parse_resellers(text)?
            .into_iter()
            .map(|r| RegistryEntry {
                account: r.account,
                company: r.company,
                contact_emails: r.contacts,
                domains: r.domains,
                old_ids: r.old_id.into_iter().collect(),
                current_id: None,
                updating: false,
                locale: r.locale,
            })
            .collect(),
    })
}

impl Store {
    /// Imports `account,company,contact_emails,domains,old_mpn_id,locale` (an
    /// optional `state` column sets the state of new resellers; without it a new
    /// reseller waits for its new ID, since the file lists revoked IDs).
    pub fn import_resellers(&mut self, text: &str, ctx: &Ctx<'_>) -> Result<ImportReport> {
        let rows = parse_resellers(text)?;
        let in_file: HashSet<String> = rows.iter().map(|r| r.account.clone()).collect();
        let tx = self.write()?;
        // Addresses and domains must stay unique across resellers already stored too.
        for row in &rows {
            for key in row.contacts.iter().chain(row.domains.iter()) {
                let clash: Option<String> = tx
                    .one(
                        "SELECT account FROM resellers WHERE account <> ?1 AND
                         (';' || contact_emails || ';' LIKE '%;' || ?2 || ';%'
                          OR ';' || domains || ';' LIKE '%;' || ?2 || ';%')",
                        params![row.account, key],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(other) = clash {
                    // Fine when this file re-imports the other reseller without the
                    // key (keys are unique within the file): the key moves.
                    if !in_file.contains(&other) {
                        bail!(
                            "nothing imported: {key} of {} already belongs to reseller {other}",
                            row.account
                        );
                    }
                }
            }
        }
        let mut report = ImportReport::default();
        for row in rows {
            let existing: Option<(String, String, String, Option<String>, String, bool)> = tx
                .one(
                    "SELECT company, contact_emails, domains, mpn_id, locale, mpn_id_applied
                     FROM resellers WHERE account = ?1",
                    [&row.account],
                    |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                        ))
                    },
                )
                .optional()?;
            let contacts = row.contacts.join(";");
            let domains = row.domains.join(";");
            match existing {
                None => {
                    let state = row.state.as_deref().unwrap_or("awaiting_id");
                    tx.exec(
                        "INSERT INTO resellers (account, company, contact_emails, domains, mpn_id,
                         mpn_id_applied, locale, state, updated_at) VALUES (?1,?2,?3,?4,?5,0,?6,?7,?8)",
                        params![row.account, row.company, contacts, domains, row.old_id, row.locale, state, ctx.now],
                    )?;
                    if let Some(id) = &row.old_id {
                        let status = if state == "active" {
                            "current"
                        } else {
                            "revoked"
                        };
                        tx.exec(
                            "INSERT OR IGNORE INTO reseller_ids (account, mpn_id, status, since) VALUES (?1,?2,?3,?4)",
                            params![row.account, id, status, ctx.now],
                        )?;
                    }
                    audit(
                        &tx,
                        ctx,
                        "reseller.import",
                        None,
                        Some(&row.account),
                        None,
                        &format!("added, state {state}"),
                    )?;
                    report.added += 1;
                }
                Some((company, c, d, mpn_id, locale, applied)) => {
                    // An ID that mpnd applied is newer than any file: keep it.
                    let id_changes = !applied && row.old_id.is_some() && row.old_id != mpn_id;
                    if company == row.company
                        && c == contacts
                        && d == domains
                        && locale == row.locale
                        && !id_changes
                    {
                        report.unchanged += 1;
                        continue;
                    }
                    tx.exec(
                        "UPDATE resellers SET company = ?2, contact_emails = ?3, domains = ?4, locale = ?5,
                         updated_at = ?6 WHERE account = ?1",
                        params![row.account, row.company, contacts, domains, row.locale, ctx.now],
                    )?;
                    if id_changes {
                        tx.exec(
                            "UPDATE resellers SET mpn_id = ?2 WHERE account = ?1",
                            params![row.account, row.old_id],
                        )?;
                        tx.exec(
                            "INSERT OR IGNORE INTO reseller_ids (account, mpn_id, status, since) VALUES (?1,?2,'revoked',?3)",
                            params![row.account, row.old_id, ctx.now],
                        )?;
                    }
                    audit(
                        &tx,
                        ctx,
                        "reseller.import",
                        None,
                        Some(&row.account),
                        None,
                        "updated",
                    )?;
                    report.updated += 1;
                }
            }
        }
        tx.commit()?;
        Ok(report)
    }

    /// Imports `account,customer_id,subscription_id,offer,partner_id`; all rows or none.
    pub fn import_subscriptions(&mut self, text: &str, ctx: &Ctx<'_>) -> Result<ImportReport> {
        let records = parse_csv(text);
        let Some((_, header)) = records.first() else {
            bail!("the file is empty; expected a header line");
        };
        let cols = columns(
            header,
            &["account", "customer_id", "subscription_id"],
            &["offer", "partner_id"],
        )?;
        let get = |f: &[String], i: usize| -> String {
            cols[i]
                .and_then(|c| f.get(c))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let accounts: HashSet<String> = self.resellers()?.into_iter().map(|r| r.account).collect();
        let mut errors = Vec::new();
        let mut rows = Vec::new();
        let mut seen = HashSet::new();
        for (line, f) in records.iter().skip(1) {
            let (account, customer, sub) = (get(f, 0), get(f, 1), get(f, 2));
            if !accounts.contains(&account) {
                errors.push(format!(
                    "line {line}: unknown reseller account {account:?} (import resellers first)"
                ));
            }
            if customer.is_empty() || sub.is_empty() {
                errors.push(format!(
                    "line {line}: customer_id and subscription_id are required"
                ));
            }
            if !seen.insert(sub.clone()) {
                errors.push(format!("line {line}: subscription {sub} appears twice"));
            }
            rows.push((account, customer, sub, get(f, 3), get(f, 4)));
        }
        if !errors.is_empty() {
            bail!("nothing imported:\n{}", errors.join("\n"));
        }
        let tx = self.write()?;
        let mut report = ImportReport::default();
        for (account, customer, sub, offer, partner) in rows {
            let existing: Option<(String, String, String, String)> = tx
                .one(
                    "SELECT account, customer_id, offer, partner_id FROM subscriptions WHERE subscription_id = ?1",
                    [&sub],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            match existing {
                Some(e)
                    if e == (
                        account.clone(),
                        customer.clone(),
                        offer.clone(),
                        partner.clone(),
                    ) =>
                {
                    report.unchanged += 1
                }
                Some(_) => {
                    tx.exec(
                        "UPDATE subscriptions SET account=?2, customer_id=?3, offer=?4, partner_id=?5, updated_at=?6
                         WHERE subscription_id=?1",
                        params![sub, account, customer, offer, partner, ctx.now],
                    )?;
                    report.updated += 1;
                }
                None => {
                    tx.exec(
                        "INSERT INTO subscriptions (subscription_id, account, customer_id, offer, partner_id, updated_at)
                         VALUES (?1,?2,?3,?4,?5,?6)",
                        params![sub, account, customer, offer, partner, ctx.now],
                    )?;
                    report.added += 1;
                }
            }
        }
        audit(
            &tx,
            ctx,
            "subscription.import",
            None,
            None,
            None,
            &format!("{} added, {} updated", report.added, report.updated),
        )?;
        tx.commit()?;
        Ok(report)
    }

    pub fn resellers(&self) -> Result<Vec<Reseller>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT account, company, contact_emails, domains, mpn_id, mpn_id_applied, pending_mpn_id,
                    locale, state, updated_at FROM resellers ORDER BY account",
        )?;
        let mut out = stmt
            .query_map([], |r| {
                Ok(Reseller {
                    account: r.get(0)?,
                    company: r.get(1)?,
                    contact_emails: split_list(&r.get::<_, String>(2)?),
                    domains: split_list(&r.get::<_, String>(3)?),
                    mpn_id: r.get(4)?,
                    mpn_id_applied: r.get(5)?,
                    pending_mpn_id: r.get(6)?,
                    revoked_ids: Vec::new(),
                    locale: r.get(7)?,
                    state: r.get(8)?,
                    updated_at: r.get(9)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT account, mpn_id FROM reseller_ids WHERE status = 'revoked' ORDER BY since, mpn_id")?;
        let revoked = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (account, id) in revoked {
            if let Some(r) = out.iter_mut().find(|r| r.account == account) {
                r.revoked_ids.push(id);
            }
        }
        Ok(out)
    }

    pub fn reseller(&self, account: &str) -> Result<Option<Reseller>> {
        Ok(self.resellers()?.into_iter().find(|r| r.account == account))
    }

    pub fn subscriptions(&self, account: Option<&str>) -> Result<Vec<Subscription>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT subscription_id, account, customer_id, offer, partner_id FROM subscriptions
             WHERE ?1 IS NULL OR account = ?1 ORDER BY account, customer_id, subscription_id",
        )?;
        let rows = stmt
            .query_map([account], |r| {
                Ok(Subscription {
                    subscription_id: r.get(0)?,
                    account: r.get(1)?,
                    customer_id: r.get(2)?,
                    offer: r.get(3)?,
                    partner_id: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The registry as triage needs it.
    pub fn registry(&self) -> Result<Registry> {
        let resellers = self.resellers()?;
        Ok(Registry {
            resellers: resellers
                .into_iter()
                .map(|r| {
                    let mut old_ids = r.revoked_ids.clone();
                    let updating = r.pending_mpn_id.is_some();
                    let mut current_id = r.pending_mpn_id.clone();
                    if let Some(id) = &r.mpn_id {
                        if r.mpn_id_applied && current_id.is_none() {
                            current_id = Some(id.clone());
                        } else if !old_ids.contains(id) {
                            // An imported ID, or an applied one about to be replaced.
                            old_ids.push(id.clone());
                        }
                    }
                    RegistryEntry {
                        account: r.account,
                        company: r.company,
                        contact_emails: r.contact_emails,
                        domains: r.domains,
                        old_ids,
                        current_id,
                        updating,
                        locale: r.locale,
                    }
                })
                .collect(),
        })
    }

    /// Marks a reseller's current ID as revoked: its orders are blocked until a new
    /// ID is applied. An update in flight is cancelled.
    pub fn revoke(&mut self, account: &str, ctx: &Ctx<'_>) -> Result<()> {
        let tx = self.write()?;
        let id: Option<Option<String>> = tx
            .one(
                "SELECT mpn_id FROM resellers WHERE account = ?1",
                [account],
                |r| r.get(0),
            )
            .optional()?;
        let Some(id) = id else {
            bail!("no reseller with account {account:?}");
        };
        if let Some(id) = &id {
            tx.exec(
                "INSERT INTO reseller_ids (account, mpn_id, status, since) VALUES (?1, ?2, 'revoked', ?3)
                 ON CONFLICT(account, mpn_id) DO UPDATE SET status = 'revoked', since = excluded.since",
                params![account, id, ctx.now],
            )?;
        }
        super::cases::cancel_updates(&tx, account, ctx, "reseller revoked")?;
        tx.exec(
            "UPDATE resellers SET state = 'awaiting_id', mpn_id_applied = 0, pending_mpn_id = NULL,
             updated_at = ?2 WHERE account = ?1",
            params![account, ctx.now],
        )?;
        audit(
            &tx,
            ctx,
            "reseller.revoke",
            None,
            Some(account),
            None,
            &format!("revoked {}", id.as_deref().unwrap_or("(no ID)")),
        )?;
        tx.commit().context("cannot commit revocation")?;
        Ok(())
    }

    /// Whether a reseller may order now; `None` for an unknown account.
    pub fn gate(&self, account: &str) -> Result<Option<GateAnswer>> {
        let row: Option<(String, Option<String>, bool, Option<String>)> = self
            .conn
            // Cached: the ordering platform asks on every order.
            .prepare_cached(
                "SELECT state, mpn_id, mpn_id_applied, pending_mpn_id FROM resellers WHERE account = ?1",
            )?
            .query_row(
                [account],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((state, mpn_id, _applied, pending)) = row else {
            return Ok(None);
        };
        let (allowed, reason) = match state.as_str() {
            "active" => (true, "active".to_string()),
            "awaiting_id" => (false, "waiting for the reseller's new MPN ID".to_string()),
            _ => {
                let (done, total): (i64, i64) = self
                    .conn
                    .prepare_cached(
                        "SELECT COALESCE(SUM(j.state = 'done'), 0), COUNT(*) FROM jobs j JOIN cases c ON c.id = j.case_id
                         WHERE c.account = ?1 AND c.state = 'updating' AND j.state <> 'cancelled'",
                    )?
                    .query_row([account], |r| Ok((r.get(0)?, r.get(1)?)))?;
                (
                    false,
                    format!(
                        "new MPN ID {} is being applied: {done} of {total} updates done",
                        pending.as_deref().unwrap_or("?")
                    ),
                )
            }
        };
        Ok(Some(GateAnswer {
            account: account.to_string(),
            allowed,
            state,
            reason,
            mpn_id: mpn_id.filter(|_| allowed),
        }))
    }
}

/// What a confirmation needs of its reseller, in one read.
pub(super) struct MailReseller {
    pub company: String,
    pub locale: String,
    pub contacts: Vec<String>,
    /// Registered mail domains, `;`-separated as stored.
    pub domains: String,
}

/// Loads what a confirmation needs about a reseller inside a transaction.
pub(super) fn reseller_for_mail(tx: &Transaction<'_>, account: &str) -> Result<MailReseller> {
    tx.one(
        "SELECT company, locale, contact_emails, domains FROM resellers WHERE account = ?1",
        [account],
        |r| {
            Ok(MailReseller {
                company: r.get(0)?,
                locale: r.get(1)?,
                contacts: split_list(&r.get::<_, String>(2)?),
                domains: r.get(3)?,
            })
        },
    )
    .with_context(|| format!("no reseller with account {account:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_lines() {
        let r = parse_csv("a,b\n\"x,1\",\"say \"\"hi\"\"\"\n\n3,4\r\n");
        assert_eq!(r.len(), 3);
        assert_eq!(r[1], (2, vec!["x,1".to_string(), "say \"hi\"".to_string()]));
        assert_eq!(r[2].0, 4);
    }
}
