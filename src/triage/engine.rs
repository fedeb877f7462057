//! The triage pipeline: parse → classify → segment → extract → choose → decide.
//!
//! Each stage is a module of its own with its policy documented there; this file only
//! wires them together. The function is pure (no I/O, no clock) and total: a mail
//! that cannot be parsed becomes a `review`, never a panic.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;

use super::choose::{choose, lost_as_old, Choice};
use super::classify::{automated, recall};
use super::cues::regex;
use super::decide::{decide, sender_accounts};
use super::extract::{
    asks_which, find, html_names_instead, location_pending, mail_is_about_ids, numbers_in,
};
use super::parse::{html_as_text, parse, Origin, Parsed, TextPart};
use super::segment::{
    edited_reply_subject, forwarded_authors, segment, subject_source, Own, Source,
};
use super::{Decision, Headers, MpnId, Outcome, Policy, Registry, Triage};

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
    let mut choice = read(&parsed.texts, &parsed, registry, &own);
    match html_shows_more(&parsed) {
        // The HTML version shows numbers the plain text lacks (a template tool's
        // stale text part): read it too; a reader sees the HTML.
        Some(html) => {
            let seen = read(&html, &parsed, registry, &own);
            choice = reconcile(choice, seen, &parsed);
        }
        None => check_html_alternative(&mut choice, &parsed),
    }

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

/// Segments `texts` and chooses the ID they state, with the checks that read the
/// rest of the mail (a named holder, the author's reservations).
fn read(texts: &[TextPart], parsed: &Parsed, registry: &Registry, own: &Own) -> Choice {
    let subject = parsed.headers.subject.as_str();
    let subject_src = subject_source(subject);
    let blocks: Vec<_> = texts
        .iter()
        .map(|t| segment(t, subject_src != Source::Quoted, own))
        .collect();
    let about_ids = mail_is_about_ids(subject, &blocks);
    let pending = location_pending(subject, &blocks);
    // A reply's or forward's subject asks our question or another's, not the author's.
    let which = asks_which(
        if subject_src == Source::Subject {
            subject
        } else {
            ""
        },
        &blocks,
    );
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
    check_named_owner(&mut choice, parsed, registry, own);
    check_reservations(&mut choice, &blocks);
    check_forwarded_holder(&mut choice, texts, &blocks, parsed, own);
    choice
}

/// A forwarded mail speaks for its own author: "unsere neue Partner-ID ist 6134870"
/// forwarded from another company (a partner's mail passed on "zur Info") is that
/// company's ID, not the sender's. Only Microsoft's mails and the sender's own
/// organisation's speak for the sender; an ID the forwarded author calls "ours"
/// is reviewed otherwise.
fn check_forwarded_holder(
    choice: &mut Choice,
    texts: &[TextPart],
    blocks: &[super::segment::Block],
    parsed: &Parsed,
    own: &Own,
) {
    let Some(chosen) = choice
        .candidates
        .iter()
        .find(|c| c.verdict.starts_with("chosen") && c.source.starts_with("forwarded"))
    else {
        return;
    };
    if !super::cues::speaks_for_itself(&chosen.evidence) {
        return;
    }
    let domain_of = |a: &str| a.rsplit_once('@').map(|(_, d)| d.to_lowercase());
    let sender = parsed.headers.from.as_deref().and_then(domain_of);
    let mut authors: Vec<String> = texts
        .iter()
        .filter_map(|t| match &t.origin {
            Origin::Attached { from: Some(f) } => Some(f.clone()),
            _ => None,
        })
        .collect();
    authors.extend(blocks.iter().flat_map(forwarded_authors));
    let stranger = authors.into_iter().find(|a| {
        let d = domain_of(a);
        !a.contains("microsoft") && d != sender && !own.is_own(a)
    });
    if let Some(stranger) = stranger {
        choice.review.push(format!(
            "the ID is given in a mail forwarded from {stranger}, whose author calls it its own"
        ));
    }
}

/// The mail's texts with the HTML alternative in place of the plain text, when the
/// HTML shows an ID-shaped number that the plain text does not.
fn html_shows_more(parsed: &Parsed) -> Option<Vec<TextPart>> {
    let html = parsed.html_alternative.as_deref()?;
    let plain = || parsed.texts.iter().filter(|t| t.origin == Origin::Main);
    // Most alternatives are the same text twice: converting every HTML version cost
    // 13 % of triage. Only a run of 6-8 digits in the HTML's text (outside its tags)
    // that the plain text lacks can make a difference.
    if digit_runs_outside_tags(html).all(|run| plain().any(|t| t.text.contains(run))) {
        return None;
    }
    let shown = html_as_text(html);
    let in_plain: HashSet<String> = plain().flat_map(|t| numbers_in(&t.text)).collect();
    if numbers_in(&shown).iter().all(|n| in_plain.contains(n)) {
        return None;
    }
    let mut texts = vec![TextPart {
        text: shown,
        origin: Origin::Main,
        html: true,
    }];
    texts.extend(
        parsed
            .texts
            .iter()
            .filter(|t| t.origin != Origin::Main)
            .cloned(),
    );
    Some(texts)
}

/// Six digits or more in a row.
static DIGIT_RUN: LazyLock<Regex> = LazyLock::new(|| regex(r"[0-9]{6,}"));

/// Runs of 6 to 8 digits in an HTML document's text, outside its tags (not
/// "#333333" in a style, nor a link's tracking number).
fn digit_runs_outside_tags(html: &str) -> impl Iterator<Item = &str> {
    DIGIT_RUN.find_iter(html).filter_map(move |m| {
        let before = &html.as_bytes()[..m.start()];
        let in_tag = before
            .iter()
            .rev()
            .find(|&&b| b == b'<' || b == b'>')
            .is_some_and(|&b| b == b'<');
        // Longer runs are no ID (an IBAN's, a tracking link's).
        (!in_tag && m.len() <= 8).then_some(m.as_str())
    })
}

/// The plain text's reading against the HTML version's. The same ID: the plain one
/// stands. An ID the plain text never shows, where the HTML calls the plain text's
/// ID old: the HTML's stands (the plain part is a stale copy, and a reader sees the
/// HTML). Any other difference: neither.
fn reconcile(plain: Choice, html: Choice, parsed: &Parsed) -> Choice {
    if plain.id == html.id {
        return plain;
    }
    let in_plain = |id: &MpnId| {
        parsed
            .texts
            .iter()
            .any(|t| t.origin == Origin::Main && t.text.contains(id.as_str()))
    };
    // The plain text's ID is the one the HTML calls old ("Replaces 5483019
    // (revoked)"), or the plain text names none.
    let superseded = plain.id.as_ref().is_none_or(|p| {
        html.candidates
            .iter()
            .any(|c| c.id == p.as_str() && lost_as_old(c))
    });
    match &html.id {
        Some(id) if !in_plain(id) && superseded => html,
        _ => {
            let why = format!(
                "the plain text says {}, its HTML version {}",
                plain.id.as_ref().map_or("no ID", |i| i.as_str()),
                html.id
                    .as_ref()
                    .map_or("no ID".to_string(), |i| format!("says {i}"))
            );
            let mut out = plain;
            versions_disagree(&mut out, &why);
            out
        }
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
    versions_disagree(choice, &why);
}

/// The plain text and the HTML version name different IDs: neither is applied.
fn versions_disagree(choice: &mut Choice, why: &str) {
    for c in &mut choice.candidates {
        if c.verdict.starts_with("chosen") {
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
        choice.no_new_id(format!("the author holds back: \"{text}\""));
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
