//! Decide: what the daemon does with a mail, given its outcome, the registry and
//! the policy.
//!
//! Policy (the corpus rules, in this order): `ignore` for ignored mail; `review` when
//! the outcome is none/ambiguous, when the From address is not a registered contact
//! of exactly one reseller (its address in `contact_emails`, or its domain exactly one
//! of the reseller's `domains`; display names and Reply-To never make a contact),
//! when an `Authentication-Results` header of a trusted authserv-id says
//! `dmarc=fail` (RFC 8601: every instance is read, other authserv-ids are ignored),
//! or when extraction flagged the ID as doubtful; `reject` when the ID is the sender's
//! own old ID or any other reseller's old or current ID; `review` when it already is
//! the sender's current ID (applied, not one still being applied); `apply` otherwise.

use super::parse::Parsed;
use super::{Decision, MpnId, Outcome, Policy, Registry, RegistryEntry, RejectReason};

pub(crate) struct Decided {
    pub decision: Decision,
    pub reasons: Vec<String>,
    pub reseller: Option<String>,
    pub reject: Option<RejectReason>,
}

/// The resellers the From address is a registered contact of.
pub(crate) fn sender_accounts<'r>(from: &str, registry: &'r Registry) -> Vec<&'r RegistryEntry> {
    let from = from.trim().to_lowercase();
    let domain = from.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    registry
        .resellers
        .iter()
        .filter(|r| {
            r.contact_emails
                .iter()
                .any(|c| c.trim().eq_ignore_ascii_case(&from))
                || (!domain.is_empty()
                    && r.domains
                        .iter()
                        .any(|d| d.trim().eq_ignore_ascii_case(domain)))
        })
        .collect()
}

/// Strips RFC 5322 comments: "dmarc=fail (p=none) header.from=x" → "dmarc=fail  header.from=x".
fn strip_comments(value: &str) -> String {
    let mut depth = 0usize;
    let mut out = String::with_capacity(value.len());
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' => escaped = true,
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// The authserv-ids to believe: the configured ones; with none configured, the
/// topmost header's, which our own receiving server added last. Only a DMARC
/// *fail* is acted on, and only towards review, so a forged topmost header can at
/// worst hold a mail for a person, never let one through.
fn trusted_ids(values: &[&str], policy: &Policy) -> Vec<String> {
    if !policy.trusted_authserv_ids.is_empty() {
        return policy.trusted_authserv_ids.clone();
    }
    values
        .first()
        .map(|v| strip_comments(v))
        .and_then(|v| {
            let first = v
                .split(';')
                .next()?
                .split_whitespace()
                .next()?
                .trim_matches('"')
                .to_string();
            (!first.contains('=')).then_some(first)
        })
        .into_iter()
        .collect()
}

/// The authserv-ids among `trusted` whose Authentication-Results say dmarc=fail.
pub(crate) fn dmarc_failures(values: &[&str], trusted: &[String]) -> Vec<String> {
    let mut failed = Vec::new();
    for value in values {
        let clean = strip_comments(value);
        let mut fields = clean.split(';');
        let Some(first) = fields.next() else {
            continue;
        };
        // The authserv-id, optionally followed by a version; a first field that is
        // already "method=result" means the header has no authserv-id at all.
        let Some(authserv) = first.split_whitespace().next() else {
            continue;
        };
        if authserv.contains('=') {
            continue;
        }
        let authserv = authserv.trim_matches('"');
        if !trusted
            .iter()
            .any(|t| t.trim().eq_ignore_ascii_case(authserv))
        {
            continue;
        }
        let fail = fields.any(|f| {
            let f = f.trim().to_ascii_lowercase();
            f.strip_prefix("dmarc")
                .map(|r| r.trim_start())
                .and_then(|r| r.strip_prefix('='))
                .and_then(|r| r.split_whitespace().next())
                .is_some_and(|result| result == "fail")
        });
        if fail
            && !failed
                .iter()
                .any(|f: &String| f.eq_ignore_ascii_case(authserv))
        {
            failed.push(authserv.to_string());
        }
    }
    failed
}

pub(crate) fn decide(
    outcome: Outcome,
    id: Option<&MpnId>,
    extraction_review: &[String],
    explanation: Option<&str>,
    parsed: &Parsed,
    registry: &Registry,
    policy: &Policy,
) -> Decided {
    let mut review: Vec<String> = Vec::new();
    match outcome {
        Outcome::None | Outcome::Ambiguous => {
            review.push(explanation.unwrap_or("no new ID found").to_string());
        }
        Outcome::Id | Outcome::Ignored => {}
    }

    let from = parsed.headers.from.as_deref();
    let accounts = from
        .map(|f| sender_accounts(f, registry))
        .unwrap_or_default();
    let reseller = match accounts.as_slice() {
        [one] => Some(one.account.clone()),
        _ => None,
    };
    match (from, accounts.as_slice()) {
        (None, _) => review.push("the mail has no From address".to_string()),
        (Some(f), []) => review.push(format!("sender {f} is not a registered contact")),
        (Some(_), [_]) => {}
        (Some(f), many) => {
            let list = many
                .iter()
                .map(|r| r.account.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            review.push(format!(
                "sender {f} is a contact of several resellers: {list}"
            ));
        }
    }

    let ar: Vec<&str> = parsed.field_values("authentication-results").collect();
    for host in dmarc_failures(&ar, &trusted_ids(&ar, policy)) {
        review.push(format!("DMARC fail at {host}"));
    }
    review.extend(extraction_review.iter().cloned());

    let taken = id.and_then(|id| taken_by(id, reseller.as_deref(), registry));
    if !review.is_empty() {
        // Facts that decide nothing on their own but help the person reviewing.
        if let Some(note) = reply_to_note(parsed, from, registry) {
            review.push(note);
        }
        if let Some((reason, _)) = taken {
            review.push(reason);
        }
        return Decided {
            decision: Decision::Review,
            reasons: review,
            reseller,
            reject: None,
        };
    }

    match (taken, id, reseller.as_deref()) {
        (Some((reason, Some(reject))), _, _) => Decided {
            decision: Decision::Reject,
            reasons: vec![reason],
            reseller,
            reject: Some(reject),
        },
        (Some((reason, None)), _, _) => Decided {
            decision: Decision::Review,
            reasons: vec![reason],
            reseller,
            reject: None,
        },
        (None, Some(id), Some(account)) => Decided {
            decision: Decision::Apply,
            reasons: vec![format!("new ID {id} for reseller {account}")],
            reseller,
            reject: None,
        },
        // Unreachable with a clean outcome `id` and exactly one reseller, but a
        // missing piece must never turn into apply.
        _ => Decided {
            decision: Decision::Review,
            reasons: vec!["incomplete result".to_string()],
            reseller,
            reject: None,
        },
    }
}

/// "Reply-To x is not a registered contact" when replies would leave the reseller.
fn reply_to_note(parsed: &Parsed, from: Option<&str>, registry: &Registry) -> Option<String> {
    let reply_to = parsed.headers.reply_to.as_deref()?;
    let differs = from.is_none_or(|f| !f.eq_ignore_ascii_case(reply_to));
    (differs && sender_accounts(reply_to, registry).is_empty())
        .then(|| format!("Reply-To {reply_to} is not a registered contact"))
}

/// Whether the ID is taken: the reason for the operator, and the reject reason when
/// it must be refused (`None` for "already the sender's current ID", a review).
fn taken_by(
    id: &MpnId,
    sender: Option<&str>,
    registry: &Registry,
) -> Option<(String, Option<RejectReason>)> {
    let id = id.as_str();
    if let Some(own) = sender.and_then(|s| registry.resellers.iter().find(|r| r.account == s)) {
        if own.old_ids.iter().any(|o| o == id) {
            return Some((
                format!("{id} is an old ID of reseller {} (the sender)", own.account),
                Some(RejectReason::OwnOldId {
                    account: own.account.clone(),
                }),
            ));
        }
    }
    for r in &registry.resellers {
        if Some(r.account.as_str()) == sender {
            continue;
        }
        let what = if r.old_ids.iter().any(|o| o == id) {
            "an old ID"
        } else if r.current_id.as_deref() == Some(id) {
            "the current ID"
        } else {
            continue;
        };
        return Some((
            format!("{id} is {what} of reseller {}", r.account),
            Some(RejectReason::OtherResellersId {
                account: r.account.clone(),
            }),
        ));
    }
    // The ID being applied, sent again: the mail joins that update.
    let own = sender.and_then(|s| registry.resellers.iter().find(|r| r.account == s))?;
    (own.current_id.as_deref() == Some(id) && !own.updating).then(|| {
        (
            format!("{id} is already the current ID of {}", own.account),
            None,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_configured_ids_the_topmost_header_is_believed() {
        let policy = Policy::default();
        let ar = [
            "mx.ours.example; dkim=none; spf=fail smtp.mailfrom=a.example; dmarc=fail header.from=a.example",
            "mail.a.example; dmarc=pass header.from=a.example",
        ];
        assert_eq!(
            dmarc_failures(&ar, &trusted_ids(&ar, &policy)),
            vec!["mx.ours.example"]
        );
        let forged_below = ["mx.ours.example; dmarc=pass", "evil.example; dmarc=fail"];
        assert!(dmarc_failures(&forged_below, &trusted_ids(&forged_below, &policy)).is_empty());
    }

    #[test]
    fn dmarc_only_from_trusted_authserv_ids() {
        let trusted = vec!["mx.nordwind-dist.example".to_string()];
        let values = [
            "mx.nordwind-dist.example; dkim=none; spf=fail (x) smtp.mailfrom=a@b; dmarc=fail reason=\"x\" header.from=b",
            "mail.bergmann-it.example; dmarc=pass header.from=b",
        ];
        assert_eq!(
            dmarc_failures(&values, &trusted),
            ["mx.nordwind-dist.example"]
        );
        let forged = [
            "mail.other.example; dmarc=fail",
            "dkim=none header.d=none;dmarc=fail action=none",
        ];
        assert!(dmarc_failures(&forged, &trusted).is_empty());
        let pass = ["mx.nordwind-dist.example 1; dmarc=pass (p=reject; dmarc=fail) header.from=x"];
        assert!(dmarc_failures(&pass, &trusted).is_empty());
        let upper = ["MX.Nordwind-Dist.Example; DMARC = FAIL"];
        assert_eq!(dmarc_failures(&upper, &trusted).len(), 1);
    }

    #[test]
    fn contacts_by_address_or_exact_domain() {
        let registry = Registry {
            resellers: vec![RegistryEntry {
                account: "R-1".into(),
                contact_emails: vec!["a@x.example".into()],
                domains: vec!["y.example".into()],
                ..Default::default()
            }],
        };
        assert_eq!(sender_accounts("A@X.example", &registry).len(), 1);
        assert_eq!(sender_accounts("b@y.example", &registry).len(), 1);
        assert!(sender_accounts("b@sub.y.example", &registry).is_empty());
        assert!(sender_accounts("b@x.example", &registry).is_empty());
    }
}
