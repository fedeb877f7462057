//! Choose: from all possible IDs of a mail, the one new ID, or none, or ambiguous.
//!
//! Policy, in order:
//! 1. A number loses when it is quoted, in a signature (unless explicitly called the
//!    new ID there), labelled as something else (order, ticket, phone, …), called
//!    old/previous/wrong, negated ("nicht 6514802"), an example or placeholder
//!    ("z. B. 1234567"), starts with 0, or has no ID keyword nearby in a mail that
//!    is not about IDs at all. An ID that the author calls old or uses as another
//!    number anywhere loses everywhere.
//! 2. When both a global account (PGA) and another ID remain, the PGA loses: CSP is
//!    transacted with the location (PLA) ID.
//! 3. The rest is ranked: numbers with an ID keyword before bare ones, the author's
//!    own text (body, subject) before a forwarded message, then "new"/location
//!    labels before plain labels before weak ones. Exactly one distinct ID at the top
//!    is the outcome `id`; more than one is `ambiguous`; nothing left is `none`.
//!
//! A bare number (no keyword) or a lone PGA may still be the outcome, but is flagged
//! for review: never apply a wrong ID.

use std::collections::BTreeSet;

use super::cues;
use super::extract::{Found, Role, Shape, Strength, Temporal};
use super::segment::Source;
use super::{Candidate, MpnId, Outcome};

/// Most candidates reported to the operator.
const MAX_REPORTED: usize = 40;
/// Why a quoted number loses.
const QUOTED: &str = "quoted text, not the author's words";
/// How every loss for being called old (here or elsewhere in the mail) begins.
const CALLED_OLD: &str = "called old";
/// Most numbers reported that lost only for standing in quoted history without an
/// ID keyword (dates, order and phone numbers of the mails answered): they tell
/// the operator little, and were most of a stored case.
const MAX_QUOTED_BARE: usize = 4;

pub(crate) struct Choice {
    pub outcome: Outcome,
    pub id: Option<MpnId>,
    pub candidates: Vec<Candidate>,
    /// Reasons the chosen ID needs a person's look even if all else is fine.
    pub review: Vec<String>,
    /// Short explanation of a none/ambiguous outcome.
    pub explanation: Option<String>,
    /// The companies the author names as the chosen ID's holder (see
    /// `Found::owner`).
    pub owners: Vec<String>,
}

impl Choice {
    /// The chosen number turns out not to be the reseller's new location ID (one
    /// the author holds back, see `engine::check_reservations`):
    /// the mail gives none, and the number stays among the candidates for the
    /// operator, its verdict saying why.
    pub(crate) fn no_new_id(&mut self, why: String) {
        let Some(id) = self.id.take() else {
            return;
        };
        for c in &mut self.candidates {
            if c.id == id.as_str() && c.verdict.starts_with("chosen") {
                c.verdict = format!("lost: {why}");
            }
        }
        self.outcome = Outcome::None;
        self.explanation = Some(why);
    }
}

struct Ranked {
    found: Found,
    loss: Option<String>,
    label: u8,
    location: u8,
}

impl Ranked {
    fn key(&self) -> (bool, u8, u8) {
        (self.label >= 1, self.location, self.label)
    }

    fn score(&self) -> i32 {
        match self.loss {
            Some(_) => -10 - i32::from(self.found.strength as u8),
            None => {
                let (labelled, location, label) = self.key();
                i32::from(labelled) * 100 + i32::from(location) * 10 + i32::from(label)
            }
        }
    }
}

/// `asks_which`: the author asks which of the numbers we need ("Welche brauchen
/// Sie?", "not sure which one you need"); see [`demote_pga`].
pub(crate) fn choose(
    found: Vec<Found>,
    about_ids: bool,
    location_pending: bool,
    asks_which: bool,
) -> Choice {
    let mut ranked: Vec<Ranked> = found
        .into_iter()
        .map(|f| rank(f, about_ids, asks_which))
        .collect();
    disqualify_everywhere(&mut ranked);
    supersede_corrected(&mut ranked);
    if !asks_which {
        demote_pga(&mut ranked);
    }

    let best = ranked
        .iter()
        .filter(|r| r.loss.is_none())
        .map(Ranked::key)
        .max();
    let mut choice = Choice {
        outcome: Outcome::None,
        id: None,
        candidates: Vec::new(),
        review: Vec::new(),
        explanation: None,
        owners: Vec::new(),
    };
    let Some(best) = best else {
        choice.explanation = Some(explain_none(&ranked));
        choice.candidates = report(ranked, None);
        return choice;
    };
    let top: BTreeSet<String> = ranked
        .iter()
        .filter(|r| r.loss.is_none() && r.key() == best)
        .map(|r| r.found.id.clone())
        .collect();
    // A winner named only weakly ("ID", "neu:", or nothing) must be the only ID
    // left: two numbers of which one is called "ID" are still two numbers.
    let eligible: BTreeSet<String> = ranked
        .iter()
        .filter(|r| r.loss.is_none())
        .map(|r| r.found.id.clone())
        .collect();
    let top = if best.2 <= 1 && eligible.len() > 1 {
        eligible.clone()
    } else {
        top
    };
    // The subject and the text each name a different ID ("New MPN ID 7412009" over
    // "the subject has a typo, the correct ID is 7412090"): nothing to choose by.
    let top = if top.len() == 1 {
        let named = |subject: bool| -> BTreeSet<String> {
            ranked
                .iter()
                .filter(|r| r.loss.is_none() && r.label >= 1)
                .filter(|r| (r.found.source == Source::Subject) == subject)
                .map(|r| r.found.id.clone())
                .collect()
        };
        let (in_subject, in_text) = (named(true), named(false));
        if !in_subject.is_empty() && !in_text.is_empty() && in_subject != in_text {
            in_subject.union(&in_text).cloned().collect()
        } else {
            top
        }
    } else {
        top
    };
    // "X – oder, laut meinem Kollegen, Y": two numbers offered as alternatives are
    // both in question, however either is named.
    let top = match top.iter().next() {
        Some(w) if top.len() == 1 => ranked
            .iter()
            .filter(|r| r.loss.is_none())
            .filter_map(|r| Some((r.found.id.as_str(), r.found.alternative_to.as_deref()?)))
            .find(|(id, other)| id != other && eligible.contains(*other) && (id == w || other == w))
            .map(|(id, other)| BTreeSet::from([id.to_string(), other.to_string()]))
            .unwrap_or(top),
        _ => top,
    };
    if top.len() > 1 {
        let list = top.iter().cloned().collect::<Vec<_>>().join(", ");
        let kind = if best.2 >= 2 { "labelled" } else { "unlabeled" };
        choice.outcome = Outcome::Ambiguous;
        choice.explanation = Some(format!(
            "{} {kind} IDs, none stated as the new one: {list}",
            top.len()
        ));
        for r in &mut ranked {
            if r.loss.is_none() && top.contains(&r.found.id) {
                r.loss = Some(format!("ambiguous: one of {list}"));
            }
        }
        choice.candidates = report(ranked, None);
        return choice;
    }
    let Some(winner) = top.into_iter().next() else {
        choice.candidates = report(ranked, None);
        return choice;
    };
    choice.id = MpnId::parse(&winner).ok();
    choice.outcome = if choice.id.is_some() {
        Outcome::Id
    } else {
        Outcome::None
    };
    let winners: Vec<&Ranked> = ranked
        .iter()
        .filter(|r| r.loss.is_none() && r.found.id == winner)
        .collect();
    for owner in winners.iter().filter_map(|r| r.found.owner.as_ref()) {
        if !choice.owners.contains(owner) {
            choice.owners.push(owner.clone());
        }
    }
    // The mail then gives no location ID: a global account's is never applied
    // ("PGA 6771205 / PLA noch nicht vorhanden"), and where the author says the
    // new location ID is still to come ("Unsere eigene neue Standort-ID haben wir
    // noch nicht", "Die neue ID erhalten Sie, sobald Microsoft …"), any number
    // the mail does give is someone's or something else's: a closing location's,
    // the one given to another distributor, a future company's.
    let not_location = if winners.iter().all(|r| r.found.role == Role::Pga) {
        Some(if location_pending {
            format!(
                "only a global account (PGA) ID {winner}; the location (PLA) ID is still missing"
            )
        } else {
            format!("only a global account (PGA) ID was given: {winner}")
        })
    } else if location_pending && winners.iter().all(|r| r.found.owner.is_none()) {
        // A number the author gives as a named company's ("Redwood Lane's new
        // location ID is …") is judged by that name (`check_named_owner`).
        Some(format!(
            "the author says the new location ID is still to come; {winner} is not it"
        ))
    } else {
        None
    };
    if let Some(why) = not_location {
        for r in &mut ranked {
            if r.loss.is_none() {
                r.loss = Some(why.clone());
            }
        }
        choice.id = None;
        choice.outcome = Outcome::None;
        choice.explanation = Some(why);
        choice.candidates = report(ranked, None);
        return choice;
    }
    if !best.0 {
        choice
            .review
            .push(format!("{winner} is a bare number without an ID keyword"));
    }
    for r in &mut ranked {
        if r.loss.is_none() && r.found.id != winner {
            r.loss = Some(format!("outranked by {winner}"));
        }
    }
    choice.candidates = report(ranked, Some(&winner));
    choice
}

/// "no new ID stated (4417206: called old/previous/wrong)": the numbers of the
/// author's own text and why none of them is the new ID.
fn explain_none(ranked: &[Ranked]) -> String {
    let own: Vec<String> = ranked
        .iter()
        .filter(|r| r.found.source != Source::Quoted)
        .filter_map(|r| r.loss.as_ref().map(|l| format!("{}: {l}", r.found.id)))
        .take(3)
        .collect();
    if own.is_empty() {
        "no new ID in the author's text".to_string()
    } else {
        format!("no new ID stated ({})", own.join("; "))
    }
}

fn rank(mut found: Found, about_ids: bool, asks_which: bool) -> Ranked {
    // The author asks which number we need: a global-account word beside a number is
    // then a guess or a place ("Manchester (head office): 7519064" under "two
    // location IDs"), and only the number's own keyword names its role.
    if asks_which && found.role == Role::Pga {
        found.role = found.keyword.as_deref().map_or(Role::Unsaid, keyword_role);
    }
    let label = match (found.strength, found.temporal, found.role) {
        (Strength::Strong, Temporal::New, _) | (Strength::Strong, _, Role::Pla) => 3,
        // Called new by the author ("Our new ID: 7294418") weighs like a full name
        // of the ID: it must not lose to a number merely labelled "MPN ID" (an old
        // one in a signature the segmenter missed); a tie becomes a review.
        (Strength::Strong, _, _) | (Strength::Weak, Temporal::New, _) => 2,
        (Strength::Weak, _, _) if about_ids => 1,
        (Strength::None, Temporal::New, _) if about_ids => 1,
        // In a mail about the ID, a number called the location's ("the one for our
        // Manchester location, 7260048") or standing alone on its line is named as
        // clearly as by the bare word "ID"; like it, it must then be the only one.
        (Strength::None, _, Role::Pla) if about_ids => 1,
        (Strength::None, _, _) if about_ids && found.alone && found.id.len() >= 7 => 1,
        _ => 0,
    };
    // A correction names the ID as clearly as its keyword would: it is what the
    // author settled on.
    let label = if found.correction && found.temporal == Temporal::New {
        label.max(2)
    } else {
        label
    };
    let location = match found.source {
        Source::Body | Source::Subject | Source::Signature => 2,
        _ => 1,
    };
    let loss = loss_of(&found, about_ids, label);
    Ranked {
        found,
        loss,
        label,
        location,
    }
}

/// The role an ID keyword itself names: "PGA", "Standort-ID", or neither ("MPN-ID").
fn keyword_role(keyword: &str) -> Role {
    if !cues::pga_words(keyword).is_empty() {
        Role::Pga
    } else if !cues::pla_words(keyword).is_empty() {
        Role::Pla
    } else {
        Role::Unsaid
    }
}

fn loss_of(f: &Found, about_ids: bool, label: u8) -> Option<String> {
    if f.source == Source::Quoted {
        return Some(QUOTED.into());
    }
    match f.shape {
        Shape::LeadingZero => return Some("starts with 0: not an MPN ID".into()),
        Shape::Placeholder => return Some("placeholder-like number".into()),
        Shape::Plain | Shape::Separated => {}
    }
    if f.temporal == Temporal::Example {
        return Some("given as an example".into());
    }
    if let Some(why) = f.disowned {
        return Some(why.into());
    }
    if let Some(d) = &f.distractor {
        return Some(format!("labelled as \"{d}\", not the ID"));
    }
    match f.temporal {
        Temporal::Old => return Some(format!("{CALLED_OLD}/previous/wrong")),
        Temporal::Negated => return Some("negated (\"not …\")".into()),
        _ => {}
    }
    if matches!(f.source, Source::Signature | Source::ForwardedSignature)
        && !(f.strength == Strength::Strong && f.temporal == Temporal::New)
    {
        return Some("in the signature".into());
    }
    if label == 0 {
        if !about_ids || f.strength != Strength::None {
            return Some("no ID keyword nearby".into());
        }
        if f.id.len() < 7 {
            return Some("bare 6-digit number without ID keyword".into());
        }
    }
    None
}

/// An ID the author calls old, negates, gives as an example or labels as another
/// number loses in every other place of the mail too. Except that a number stated
/// as the new ID ("neue Standort-ID … lautet 7168342") keeps that standing where it
/// also follows a loose label ("an den Subscriptions ausschließlich die 7168342"):
/// only old, negated, example or disowned elsewhere cost it that.
fn disqualify_everywhere(ranked: &mut [Ranked]) {
    let own = || ranked.iter().filter(|r| r.found.source != Source::Quoted);
    let unsaid: BTreeSet<String> = own()
        .filter(|r| {
            r.found.disowned.is_some()
                || matches!(
                    r.found.temporal,
                    Temporal::Old | Temporal::Negated | Temporal::Example
                )
        })
        .map(|r| r.found.id.clone())
        .collect();
    let labelled: BTreeSet<String> = own()
        .filter(|r| r.found.distractor.is_some())
        .map(|r| r.found.id.clone())
        .collect();
    for r in ranked.iter_mut() {
        let stated_new = r.found.strength == Strength::Strong && r.found.temporal == Temporal::New;
        if r.loss.is_none()
            && (unsaid.contains(&r.found.id) || (labelled.contains(&r.found.id) && !stated_new))
        {
            r.loss = Some(format!(
                "{CALLED_OLD} or another number elsewhere in this mail"
            ));
        }
    }
}

/// A correction in the author's text ("P.S. typo above - it's …") replaces every
/// other ID named before it, in the subject or higher up in the text.
fn supersede_corrected(ranked: &mut [Ranked]) {
    let Some(at) = ranked.iter().rposition(|r| {
        r.loss.is_none()
            && r.found.correction
            && matches!(r.found.source, Source::Body | Source::Signature)
    }) else {
        return;
    };
    let corrected = ranked[at].found.id.clone();
    for r in ranked[..at].iter_mut() {
        if r.loss.is_none() && r.found.id != corrected {
            r.loss = Some(format!("corrected to {corrected} later in the mail"));
        }
    }
}

/// The PGA loses to any other ID left. Not when the author asks which number we
/// need: then a global-account word is the author's guess ("eine ist wohl für den
/// Hauptsitz, die andere für Konstanz – welche brauchen Sie?"), not a statement, and
/// the numbers must stay side by side (ambiguous unless one is clearly named the
/// location ID by its own keyword, which the ranking still sees).
fn demote_pga(ranked: &mut [Ranked]) {
    let other = ranked
        .iter()
        .any(|r| r.loss.is_none() && r.found.role != Role::Pga);
    if !other {
        return;
    }
    for r in ranked.iter_mut() {
        if r.loss.is_none() && r.found.role == Role::Pga {
            r.loss = Some("global account (PGA): the location (PLA) ID applies".into());
        }
    }
}

fn describe_win(r: &Ranked) -> String {
    let mut words = vec!["chosen:"];
    if r.found.role == Role::Pla {
        words.push("location (PLA) ID");
    }
    match (r.found.strength, r.found.temporal) {
        (Strength::Strong, Temporal::New) => words.push("labelled new"),
        (Strength::Strong, _) => words.push("labelled as the ID"),
        (Strength::Weak, _) => words.push("called \"ID\""),
        (Strength::None, Temporal::New) => words.push("called new"),
        (Strength::None, _) => words.push("bare number"),
    }
    if matches!(r.found.source, Source::Forwarded) {
        words.push("in the forwarded message");
    }
    words.join(" ")
}

/// Whether a reported candidate lost for being called old (see [`loss_of`] and
/// [`disqualify_everywhere`]).
pub(crate) fn lost_as_old(c: &Candidate) -> bool {
    c.verdict
        .strip_prefix("lost: ")
        .is_some_and(|v| v.starts_with(CALLED_OLD))
}

/// The candidates for the operator, best first, each distinct reading once: quoted
/// history often holds the same line twice (a reply to a reply), and repeating it
/// told nobody anything while it made up most of a stored case.
fn report(mut ranked: Vec<Ranked>, winner: Option<&str>) -> Vec<Candidate> {
    ranked.sort_by_key(|r| std::cmp::Reverse(r.score()));
    let mut reported: Vec<Candidate> = Vec::new();
    let rows = ranked.into_iter().map(|r| {
        let verdict = match (&r.loss, winner) {
            (None, Some(w)) if r.found.id == w => describe_win(&r),
            (Some(loss), _) => format!("lost: {loss}"),
            (None, _) => "not chosen".to_string(),
        };
        let mut source = r.found.source.label().to_string();
        if r.found.html {
            source.push_str(" (html)");
        }
        Candidate {
            id: r.found.id.clone(),
            score: r.score(),
            evidence: r.found.evidence.clone(),
            keyword: r.found.keyword.clone(),
            source,
            verdict,
        }
    });
    let mut quoted_bare = 0;
    for row in rows {
        if reported.len() == MAX_REPORTED {
            break;
        }
        // Equal rows have equal scores, which the sort keeps together.
        let mut same_score = reported.iter().rev().take_while(|c| c.score == row.score);
        if same_score.any(|c| *c == row) {
            continue;
        }
        if row.keyword.is_none() && row.verdict.strip_prefix("lost: ") == Some(QUOTED) {
            if quoted_bare == MAX_QUOTED_BARE {
                continue;
            }
            quoted_bare += 1;
        }
        reported.push(row);
    }
    reported
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(
        id: &str,
        strength: Strength,
        temporal: Temporal,
        role: Role,
        source: Source,
    ) -> Found {
        Found {
            id: id.into(),
            source,
            html: false,
            evidence: String::new(),
            keyword: None,
            strength,
            temporal,
            role,
            distractor: None,
            shape: Shape::Plain,
            alone: false,
            disowned: None,
            correction: false,
            alternative_to: None,
            replaces: None,
            owner: None,
        }
    }

    /// The same quoted line twice (a reply to a reply) is one candidate; the same
    /// number on another line is another.
    #[test]
    fn a_repeated_reading_is_reported_once() {
        let quoted = |id: &str, line: &str| Found {
            evidence: line.into(),
            ..found(
                id,
                Strength::None,
                Temporal::Unsaid,
                Role::Unsaid,
                Source::Quoted,
            )
        };
        let c = choose(
            vec![
                found(
                    "7294418",
                    Strength::Strong,
                    Temporal::New,
                    Role::Unsaid,
                    Source::Body,
                ),
                quoted("4417206", "> alte MPN-ID 4417206"),
                quoted("4711563", "> Bestellung 4711-563"),
                quoted("4417206", "> alte MPN-ID 4417206"),
                quoted("4711563", "> Bestellung 4711-563"),
                quoted("4417206", ">> MPN-ID 4417206"),
            ],
            true,
            false,
            false,
        );
        assert_eq!(c.id.as_ref().map(MpnId::as_str), Some("7294418"));
        let rows: Vec<(&str, &str)> = c
            .candidates
            .iter()
            .map(|c| (c.id.as_str(), c.evidence.as_str()))
            .collect();
        assert_eq!(
            rows,
            [
                ("7294418", ""),
                ("4417206", "> alte MPN-ID 4417206"),
                ("4711563", "> Bestellung 4711-563"),
                ("4417206", ">> MPN-ID 4417206"),
            ]
        );
    }

    #[test]
    fn pla_beats_pga_and_old_loses_everywhere() {
        let c = choose(
            vec![
                found(
                    "6120344",
                    Strength::Strong,
                    Temporal::Unsaid,
                    Role::Pga,
                    Source::Body,
                ),
                found(
                    "6120359",
                    Strength::Strong,
                    Temporal::Unsaid,
                    Role::Pla,
                    Source::Body,
                ),
            ],
            true,
            false,
            false,
        );
        assert_eq!(c.id.as_ref().map(MpnId::as_str), Some("6120359"));
        let c = choose(
            vec![
                found(
                    "4039875",
                    Strength::Strong,
                    Temporal::New,
                    Role::Unsaid,
                    Source::Subject,
                ),
                found(
                    "4039875",
                    Strength::Strong,
                    Temporal::Old,
                    Role::Unsaid,
                    Source::Body,
                ),
            ],
            true,
            false,
            false,
        );
        assert_eq!(c.outcome, Outcome::None);
        assert!(
            c.explanation
                .as_deref()
                .is_some_and(|e| e.contains("4039875")),
            "{:?}",
            c.explanation
        );
    }

    #[test]
    fn weak_winner_must_be_alone() {
        let c = choose(
            vec![
                found(
                    "6820174",
                    Strength::None,
                    Temporal::New,
                    Role::Unsaid,
                    Source::Body,
                ),
                found(
                    "6820190",
                    Strength::None,
                    Temporal::Unsaid,
                    Role::Unsaid,
                    Source::Body,
                ),
            ],
            true,
            false,
            false,
        );
        assert_eq!(c.outcome, Outcome::Ambiguous);
    }

    #[test]
    fn body_beats_forwarded_and_bare_numbers_need_review() {
        let c = choose(
            vec![
                found(
                    "6931057",
                    Strength::Strong,
                    Temporal::Unsaid,
                    Role::Unsaid,
                    Source::Body,
                ),
                found(
                    "6931099",
                    Strength::Strong,
                    Temporal::Unsaid,
                    Role::Unsaid,
                    Source::Forwarded,
                ),
            ],
            true,
            false,
            false,
        );
        assert_eq!(c.id.as_ref().map(MpnId::as_str), Some("6931057"));
        let c = choose(
            vec![found(
                "6931057",
                Strength::None,
                Temporal::Unsaid,
                Role::Unsaid,
                Source::Body,
            )],
            true,
            false,
            false,
        );
        assert_eq!(c.outcome, Outcome::Id);
        assert!(!c.review.is_empty());
        let c = choose(
            vec![found(
                "6931057",
                Strength::None,
                Temporal::Unsaid,
                Role::Unsaid,
                Source::Body,
            )],
            false,
            false,
            false,
        );
        assert_eq!(c.outcome, Outcome::None);
    }

    #[test]
    fn a_guessed_global_account_does_not_settle_it_when_the_author_asks_which() {
        let two = || {
            vec![
                found(
                    "6839201",
                    Strength::Weak,
                    Temporal::Unsaid,
                    Role::Unsaid,
                    Source::Body,
                ),
                found(
                    "6839218",
                    Strength::Weak,
                    Temporal::Unsaid,
                    Role::Pga,
                    Source::Body,
                ),
            ]
        };
        let c = choose(two(), true, false, true);
        assert_eq!((c.outcome, c.id), (Outcome::Ambiguous, None));
        let c = choose(two(), true, false, false);
        assert_eq!(c.id.as_ref().map(MpnId::as_str), Some("6839201"));
    }
}
