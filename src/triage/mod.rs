//! Triage: what one inbound mail means, decided without any I/O.
//!
//! `triage(raw, registry, policy)` parses the message, recognises automated mail,
//! finds the candidate MPN/PLA IDs with their evidence, and decides what the daemon
//! will do with it. It reads no clock, no file and no network, so every decision can
//! be reproduced offline (`mpnd extract`) and tested from fixtures. Nothing here may
//! panic on any input: a mail that cannot be understood becomes a `review`.

use serde::Serialize;

mod choose;
mod classify;
mod cues;
mod decide;
mod engine;
mod extract;
mod html;
mod parse;
mod segment;
pub mod warm;

pub use engine::triage;

/// A PartnerID (MPN ID) as we store and apply it: ASCII digits only.
///
/// Built only through [`MpnId::parse`], so holding one proves the shape was checked.
/// Microsoft publishes no format rule; every known ID has 6 to 8 digits, so that is
/// the plausible range (Partner Center verification decides the rest).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct MpnId(String);

impl MpnId {
    pub const MIN_DIGITS: usize = 6;
    pub const MAX_DIGITS: usize = 8;

    /// Accepts what a person might type: digits with spaces, dashes, dots or slashes
    /// between them ("6 173 402", "6173-402").
    pub fn parse(text: &str) -> Result<MpnId, String> {
        let trimmed = text.trim();
        let mut digits = String::with_capacity(trimmed.len());
        for c in trimmed.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '/' | '\u{a0}' => {}
                _ => {
                    return Err(format!(
                        "{trimmed:?} is not an MPN ID: only digits are allowed"
                    ))
                }
            }
        }
        if digits.len() < Self::MIN_DIGITS || digits.len() > Self::MAX_DIGITS {
            return Err(format!(
                "{trimmed:?} is not an MPN ID: expected {} to {} digits, got {}",
                Self::MIN_DIGITS,
                Self::MAX_DIGITS,
                digits.len()
            ));
        }
        Ok(MpnId(digits))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for MpnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the mail itself says, before the registry is consulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Exactly one new ID is communicated.
    Id,
    /// A person wrote, but gave no new ID.
    None,
    /// Several candidates, and the text does not settle which one is new.
    Ambiguous,
    /// Automated mail (auto-reply, bounce, list) or our own mail: never answered.
    Ignored,
}

/// What the daemon will do with the mail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Apply,
    Review,
    Reject,
    Ignore,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Id => "id",
            Outcome::None => "none",
            Outcome::Ambiguous => "ambiguous",
            Outcome::Ignored => "ignored",
        }
    }
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Apply => "apply",
            Decision::Review => "review",
            Decision::Reject => "reject",
            Decision::Ignore => "ignore",
        }
    }
}

/// Why an ID is refused; the variant chooses the wording of the reply to the reseller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RejectReason {
    /// The sender's own old (revoked) ID, which Microsoft never allows again.
    OwnOldId { account: String },
    /// An ID that belongs, now or before, to another reseller.
    OtherResellersId { account: String },
    /// Microsoft does not confirm the ID as an authorised indirect reseller of ours
    /// (Partner Center verification; decided by the backend, not by triage).
    /// `code` is Microsoft's error code when it gave one ("800016", ...), or
    /// "relationship" when the ID is missing from our indirect-reseller list;
    /// `description` is Microsoft's own text, kept verbatim for the operator.
    NotAuthorisedAtMicrosoft {
        code: Option<String>,
        description: String,
    },
}

/// One number that could be the new ID, with what the extractor saw.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Candidate {
    /// The ID as digits, separators removed.
    pub id: String,
    /// Higher is more likely the new location ID; only the order and sign matter.
    pub score: i32,
    /// The line the number came from, trimmed (shown to the operator).
    pub evidence: String,
    /// The keyword that made it a candidate ("MPN-ID", "Standort-ID", ...), if any.
    pub keyword: Option<String>,
    /// Where in the mail: "subject", "body", "quoted", "forwarded", "signature", ...
    pub source: String,
    /// Why it won or lost, in a few words ("labelled new", "old ID", "PGA", ...).
    pub verdict: String,
}

/// The header facts the rest of the daemon needs (store keys, reply threading).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Headers {
    /// Without angle brackets; `None` when the mail has none.
    pub message_id: Option<String>,
    /// The From address, lower-cased.
    pub from: Option<String>,
    pub from_name: Option<String>,
    pub reply_to: Option<String>,
    pub subject: String,
    /// Without angle brackets, oldest first.
    pub references: Vec<String>,
    pub in_reply_to: Option<String>,
    /// The Date header as unix seconds, when it parses: orders a reseller's mails
    /// when they arrive out of order.
    pub date: Option<i64>,
}

/// Everything decided about one message.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Triage {
    pub outcome: Outcome,
    pub mpn_id: Option<MpnId>,
    pub decision: Decision,
    /// Short and specific, for the operator ("DMARC fail at mx.example", ...).
    pub reasons: Vec<String>,
    pub candidates: Vec<Candidate>,
    pub headers: Headers,
    /// The reseller account the sender is a registered contact of, if exactly one.
    pub reseller: Option<String>,
    /// Set when `decision` is `Reject`.
    pub reject: Option<RejectReason>,
}

/// The policy part of the configuration that triage needs.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Our own mailbox addresses (full addresses, compared case-insensitively).
    pub own_addresses: Vec<String>,
    /// Only `Authentication-Results` headers with one of these authserv-ids count.
    pub trusted_authserv_ids: Vec<String>,
}

/// The registry as triage sees it: who may send, and which IDs are taken.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    pub resellers: Vec<RegistryEntry>,
}

#[derive(Clone, Debug, Default)]
pub struct RegistryEntry {
    pub account: String,
    pub company: String,
    /// Registered sender addresses, lower-cased.
    pub contact_emails: Vec<String>,
    /// Registered sender domains, lower-cased; exact match only.
    pub domains: Vec<String>,
    /// IDs this reseller may never send as new: the one on record when imported
    /// (revoked for resellers who must re-register) and every earlier one.
    pub old_ids: Vec<String>,
    /// An ID that mpnd applied (or is applying) for this reseller: not old, but
    /// still taken as far as other resellers are concerned.
    pub current_id: Option<String>,
    /// `current_id` is still being applied (an update in flight): the reseller
    /// repeating it joins that update rather than asking a person.
    pub updating: bool,
    /// "de" or "en": the language of replies.
    pub locale: String,
}
