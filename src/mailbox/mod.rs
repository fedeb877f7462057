//! Mailboxes: where inbound mail comes from and where it goes once decided.
//!
//! Two kinds: a local Maildir (the embedded default, fed by any MDA) and IMAP
//! (Microsoft 365, Dovecot). Both hand over raw messages with a stable position and
//! move a message to Processed, Review or Ignored only after its case is committed;
//! the daemon's mailbox loop owns that order.

pub mod imap;
pub mod maildir;

/// Where a mail goes once its case is committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    Processed,
    Review,
    Ignored,
}
