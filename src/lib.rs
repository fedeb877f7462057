//! mpnd takes resellers' new MPN/PLA IDs from the distributor's `cloud@` mailbox
//! and applies them.
//!
//! Modules, in the order a mail passes through them:
//! - `config`: the TOML file or the embedded default, checked before anything starts.
//! - `mailbox`: where mail comes from (Maildir, IMAP) and where it goes once decided.
//! - `oauth`: OAuth2 client-credentials tokens (IMAP/SMTP XOAUTH2).
//! - `triage`: parse → classify → extract → decide; pure, no I/O, no clock.
//! - `store`: SQLite; messages, cases, jobs, outbox, resellers, audit. The only writer.
//! - `backend`: what makes the updates (manual, http, partner-center) and verifies
//!   a new ID with Microsoft before a case is applied.
//! - `worker`: runs due jobs against the backend; retry, dead, gate-change hooks.
//! - `reply`: the confirmations' text and headers (rendered when queued).
//! - `mailer`: sends the outbox over SMTP or into `.eml` files.
//! - `gate`: the order gate over HTTP, `/healthz`, `/metrics`.
//! - `daemon`: the tasks, their order and their shutdown.
//!
//! Invariants:
//! - triage does no I/O and never panics; what it cannot decide goes to review.
//! - only `store` writes state, one transaction per batch of mails or operator action.
//! - a mail leaves the inbox only after its case is committed.
//! - a reseller may order only in state `active`; never on a partial update.
//! - a doubtful verification never rejects: the mail waits in the inbox.
//! - every backend write carries a key derived from its job, so a repeat is harmless.
//! - no confirmation is sent for an ignored mail, nor to an unregistered sender.

pub mod backend;
pub mod config;
pub mod daemon;
pub mod gate;
pub mod mailbox;
pub mod mailer;
pub mod notify;
pub mod oauth;
pub mod reply;
pub mod store;
pub mod triage;
pub mod worker;
