//! The triage pipeline: parse → classify → segment → extract → choose → decide.
//!
//! Each stage is a module of its own with its policy documented there; this file only
//! wires them together. The function is pure (no I/O, no clock) and total: a mail
//! that cannot be parsed becomes a `review`, never a panic.

use super::choose::{choose, Choice};
use super::classify::{automated, recall};
use super::decide::{decide, sender_accounts};
use super::extract::{asks_which, find, html_names_instead, location_pending, mail_is_about_ids};
use super::parse::{parse, Origin, Parsed};
use super::segment::{edited_reply_subject, segment, subject_source, Own, Source};
use super::{Decision, Headers, Outcome, Policy, Registry, Triage};

/// Triage one raw message (RFC 5322 bytes) against the registry and policy.
pub fn triage(raw: &[u8], registry: &Registry, policy: &Policy) -> Triage {
    let Some(parsed) = parse(raw) else {
        return Triage {
            outcome: Outcome::None,
            mpn_id: None,
            decision: Decision::Review,
            reasons: vec!["the mail could not be parsed".to_string()],
            candidates: Vec::new(),
            headers: Headers::default(),
            reseller: None,
            reject: None,
        };
    };
    if let Some(reason) = automated(&parsed, policy) {
        return ignored(parsed, reason, registry);
    }

    if let Some(reason) = recall(&parsed) {
        let decided = decide(
            Outcome::None,
            None,
            &[],
            Some(&reason),
            &parsed,
            registry,
            policy,
        );
        return Triage {
            outcome: Outcome::None,
            mpn_id: None,
            decision: decided.decision,
            reasons: decided.reasons,
            candidates: Vec::new(),
            headers: parsed.headers,
            reseller: decided.reseller,
            reject: None,
        };
    }

    let own = Own::new(&policy.own_addresses);
    let subject = parsed.headers.subject.as_str();
    let subject_src = subject_source(subject);
    let blocks: Vec<_> = parsed
        .texts
        .iter()
        .map(|t| segment(t, subject_src != Source::Quoted, &own))
        .collect();
    let about_ids = mail_is_about_ids(subject, &blocks);
    let pending = location_pending(subject, &blocks);
    let which = asks_which(subject, &blocks);
    // A reply's subject is ours unless the author wrote into it.
    let edited = match subject_src {
        Source::Quoted => edited_reply_subject(subject, &blocks),
        _ => None,
    };
    let (subject, subject_src) = match &edited {
        Some(s) => (s.as_str(), Source::Subject),
        None => (subject, subject_src),
    };
    let mut choice = choose(
        find(subject, subject_src, &blocks),
        about_ids,
        pending,
        which,
    );
    check_html_alternative(&mut choice, &parsed);
    check_named_owner(&mut choice, &parsed, registry, &own);
    check_reservations(&mut choice, &blocks);

    let decided = decide(
        choice.outcome,
        choice.id.as_ref(),
        &choice.review,
        choice.explanation.as_deref(),
        &parsed,
        registry,
        policy,
    );
    Triage {
        outcome: choice.outcome,
        mpn_id: choice.id,
        decision: decided.decision,
        reasons: decided.reasons,
        candidates: choice.candidates,
        headers: parsed.headers,
        reseller: decided.reseller,
        reject: decided.reject,
    }
}

/// A mail's plain text and its HTML alternative must name the same ID: template
/// tools keep the two versions apart, and a reader of the HTML may see a different
/// number ("6303918" in the text, "6303981" in the HTML). Checked only when the
/// chosen ID stands in the plain text of the mail itself (not only in its subject
/// or an attached mail); then the mail is ambiguous.
fn check_html_alternative(choice: &mut Choice, parsed: &Parsed) {
    let (Some(id), Some(html)) = (&choice.id, &parsed.html_alternative) else {
        return;
    };
    let id = id.as_str();
    let in_text = parsed
        .texts
        .iter()
        .any(|t| t.origin == Origin::Main && !t.html && t.text.contains(id));
    if !in_text {
        return;
    }
    let Some(instead) = html_names_instead(html, id) else {
        return;
    };
    let instead = instead.join(", ");
    let why = format!("the text says {id}, its HTML version shows {instead} instead");
    for c in &mut choice.candidates {
        if c.id == id && c.verdict.starts_with("chosen") {
            c.verdict = format!("lost: {why}");
        }
    }
    choice.outcome = Outcome::Ambiguous;
    choice.id = None;
    choice.review.clear();
    choice.explanation = Some(format!(
        "the plain text and the HTML version disagree: {why}"
    ));
}

/// A registered contact may write for another company ("die neue Partner-ID der
/// Förde IT GmbH", "Redwood Lane's new location ID", after an acquisition or as its
/// service provider): an ID named as another company's is not the sender's to
/// apply, whoever sends it. Compared by the name's distinctive words against the
/// sender's reseller (its company name, domains and contact addresses) and our own
/// domains; a name of nothing but common words ("IT Service GmbH") decides nothing.
fn check_named_owner(choice: &mut Choice, parsed: &Parsed, registry: &Registry, own: &Own) {
    if choice.id.is_none() || choice.owners.is_empty() {
        return;
    }
    let Some(from) = parsed.headers.from.as_deref() else {
        return;
    };
    let [sender] = sender_accounts(from, registry)[..] else {
        return; // unknown or several resellers: reviewed anyway
    };
    let mut known = sender.company.to_lowercase();
    for d in sender
        .domains
        .iter()
        .chain(&sender.contact_emails)
        .chain(&own.domains)
    {
        known.push(' ');
        known.push_str(&d.to_lowercase());
    }
    let Some(owner) = choice
        .owners
        .iter()
        .find(|o| names_another_company(o, &known))
    else {
        return;
    };
    choice.review.push(format!(
        "the mail gives the ID as {owner}'s, the sender writes for {} ({})",
        sender.company, sender.account
    ));
}

/// The author's own lines that hold us back ("Bitte noch nichts umstellen", "bin mir
/// aber nicht sicher", "Ist das die richtige?", see `cues::holds_back`) make a
/// chosen ID a review; a line that names another number speaks of that one ("Die
/// 6347068 ist unser globales Konto, die bitte nicht eintragen").
fn check_reservations(choice: &mut Choice, blocks: &[super::segment::Block]) {
    let Some(id) = choice.id.as_ref().map(|m| m.as_str().to_string()) else {
        return;
    };
    let line = blocks
        .iter()
        .flat_map(|b| &b.lines)
        .filter(|l| matches!(l.source, Source::Body | Source::Signature))
        .find(|l| {
            super::cues::holds_back(&l.text)
                && super::extract::line_numbers(&l.text)
                    .iter()
                    .all(|n| *n == id)
        });
    if let Some(l) = line {
        let text: String = l.text.trim().chars().take(120).collect();
        choice
            .review
            .push(format!("the author holds back: \"{text}\""));
    }
}

/// Whether `owner` has a distinctive word that `known` (lower case) lacks in all.
fn names_another_company(owner: &str, known: &str) -> bool {
    const COMMON: &[&str] = &[
        "gmbh",
        "mbh",
        "kgaa",
        "ohg",
        "gbr",
        "llc",
        "ltd",
        "limited",
        "inc",
        "corp",
        "plc",
        "llp",
        "sas",
        "sarl",
        "srl",
        "aps",
        "pty",
        "und",
        "and",
        "the",
        "der",
        "die",
        "das",
        "von",
        "for",
        "edv",
        "service",
        "services",
        "solutions",
        "systems",
        "system",
        "systemhaus",
        "computer",
        "computers",
        "tech",
        "technology",
        "technologies",
        "technik",
        "digital",
        "cloud",
        "partner",
        "partners",
        "group",
        "gruppe",
        "data",
        "datentechnik",
        "consulting",
        "informatik",
        "software",
        "network",
        "networks",
        "netzwerk",
        "netzwerke",
        "office",
        "büro",
        "buero",
        "media",
        "handel",
        "firma",
        "company",
    ];
    let lower = owner.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3 && !COMMON.contains(w))
        .collect();
    !words.is_empty() && words.iter().all(|w| !known.contains(w))
}

fn ignored(parsed: Parsed, reason: String, registry: &Registry) -> Triage {
    // The account is still useful to an operator looking at an ignored auto-reply.
    let reseller = parsed.headers.from.as_deref().and_then(|f| {
        match sender_accounts(f, registry).as_slice() {
            [one] => Some(one.account.clone()),
            _ => None,
        }
    });
    Triage {
        outcome: Outcome::Ignored,
        mpn_id: None,
        decision: Decision::Ignore,
        reasons: vec![reason],
        candidates: Vec::new(),
        headers: parsed.headers,
        reseller,
        reject: None,
    }
}
