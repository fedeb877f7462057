//! Extract: find the numbers that could be an MPN/PLA ID and read what the words
//! around each one say about it.
//!
//! Owns the number shapes (6 to 8 digits, also typed with separators as in
//! "6 173 402"; dates, phone numbers, IBAN/VAT fragments, codes glued to letters and
//! GUIDs, URLs and mail addresses are not candidates) and the reading of the context:
//! the ID keyword nearest before the number (or right after it), a distractor label
//! that is nearer ("Bestellung 40078125"), old/new words next to the number or its
//! keyword ("alte MPN-ID", "neu:", "(nicht 6514802)", "4039875 (alt)"), example
//! words ("z. B."), and whether the number is the global account (PGA) or the
//! location (PLA).
//!
//! Context never crosses a sentence end, and reaches at most a few lines up, so a
//! label in a heading ("Partner-ID:" above "alt: … / neu: …") still counts. Every
//! window is short, so the work per number is bounded.

use std::sync::LazyLock;

use regex::Regex;

use super::cues::{self, regex, Cue};
use super::segment::{Block, Source};

/// How clearly the number is named as the ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Strength {
    None,
    Weak,
    Strong,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Temporal {
    Unsaid,
    New,
    Old,
    Negated,
    Example,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Unsaid,
    Pga,
    Pla,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    Plain,
    Separated,
    LeadingZero,
    Placeholder,
}

/// One occurrence of a possible ID and what its context says.
#[derive(Clone, Debug)]
pub(crate) struct Found {
    pub id: String,
    pub source: Source,
    pub html: bool,
    pub evidence: String,
    pub keyword: Option<String>,
    pub strength: Strength,
    pub temporal: Temporal,
    pub role: Role,
    pub distractor: Option<String>,
    pub shape: Shape,
    /// The number is all its line says ("6813097" under the greeting): the way
    /// people answer "send us your new ID" when the subject already names it.
    pub alone: bool,
    /// Why the words around it make it no new ID of the sender's even when a keyword
    /// names it: another company's, a test registration's, withdrawn, hypothetical or
    /// only asked about.
    pub disowned: Option<&'static str>,
    /// Introduced as the correction of an ID given before it ("P.S. typo above -
    /// it's …", "Zahlendreher! Richtig ist …"): it replaces every earlier one.
    pub correction: bool,
    /// The number before it in the same sentence, when the two are offered as
    /// alternatives ("die 6840157 – oder, laut meinem Kollegen, die 6840175").
    pub alternative_to: Option<String>,
    /// The number it replaces: "statt 7757741 bitte 7757714" (see
    /// `named_by_what_it_replaces`).
    pub replaces: Option<String>,
    /// The company the author gives the ID to by name ("die neue Partner-ID der
    /// Förde IT GmbH", "Redwood Lane's new location ID"): triage compares it with
    /// the sender's reseller (see `engine`).
    pub owner: Option<String>,
}

/// Most possible IDs examined per mail: a mail with more numbers is no reseller note.
const MAX_FOUND: usize = 200;
/// How far back (bytes) an ID keyword may stand from its number.
const KEYWORD_REACH: usize = 160;
/// How far back an old/new word may stand before the keyword ("die bisherige MPN-ID").
/// Wide enough for "new location account ID" and "neue Microsoft Partner-ID".
const ADJECTIVE_REACH: usize = 32;
/// How near a negation must be: "(nicht 6514802)".
const NEGATION_REACH: usize = 16;
/// How near an example word must be: "z. B. 1234567".
const EXAMPLE_REACH: usize = 30;
/// How far forward a keyword or role may stand: "7716204 as our … ID for the … (PGA)".
const FORWARD_REACH: usize = 110;
/// How many lines up a heading may label a number.
const LINES_UP: usize = 3;

static BLANK: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?ix)
        [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}
      | \b(?:https?://|www\.)\S+
      | [\w.+%-]+@[\w.-]+\.[a-z]{2,}
      | \b[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.(?:example|com|net|org|de|eu|at|ch|nl|uk|io|info|biz|co)\b",
    )
});

/// What a blanked value looks like after [`blank`] (the shortest host name is longer).
const BLANKED: &str = "______";

/// Finds the possible IDs in the subject and the blocks of a mail.
pub(crate) fn find(subject: &str, subject_source: Source, blocks: &[Block]) -> Vec<Found> {
    let mut found = Vec::new();
    let subject_block = Block {
        lines: vec![super::segment::Line {
            text: subject.to_string(),
            source: subject_source,
        }],
        html: false,
    };
    // "Sorry, der Betreff war falsch": the subject's numbers are withdrawn.
    let subject_retracted = blocks.iter().flat_map(|b| &b.lines).any(|l| {
        matches!(l.source, Source::Body | Source::Signature) && cues::retracts_subject(&l.text)
    });
    let all: Vec<&Block> = std::iter::once(&subject_block).chain(blocks).collect();
    let blanked: Vec<Vec<String>> = all
        .iter()
        .map(|b| b.lines.iter().map(|l| blank(&l.text)).collect())
        .collect();
    // Where each quoted number stands, for `repeated_from_quote`.
    let mut quoted_at: Vec<(usize, usize, Token, Option<usize>)> = Vec::new();
    'blocks: for (n, block) in all.iter().enumerate() {
        for (index, line) in block.lines.iter().enumerate() {
            if found.len() >= MAX_FOUND {
                break 'blocks;
            }
            if line.text.bytes().filter(u8::is_ascii_digit).count() < 6 {
                continue;
            }
            let line_tokens = tokens(&blanked[n][index]);
            for (i, token) in line_tokens.iter().enumerate() {
                if found.len() >= MAX_FOUND {
                    break;
                }
                let next = line_tokens.get(i + 1).map(|t| t.start);
                let mut f = read_context(block, &blanked[n], index, token, next, false);
                if n == 0 && subject_retracted && f.disowned.is_none() {
                    f.disowned = Some("the author says the subject is wrong");
                }
                if f.source == Source::Quoted && f.strength == Strength::Strong {
                    quoted_at.push((n, index, token.clone(), next));
                }
                found.push(f);
            }
        }
    }
    repeated_from_quote(&mut found, &all, &blanked, &quoted_at);
    named_by_what_it_replaces(&mut found);
    found
}

/// "Korrektur: statt 7757741 bitte 7757714 eintragen" under the quoted "neue
/// Partner-ID: 7757741": a replacement without a keyword of its own takes the name
/// of the number it replaces, wherever that one was named.
fn named_by_what_it_replaces(found: &mut [Found]) {
    for i in 0..found.len() {
        let Some(replaced) = found[i].replaces.clone() else {
            continue;
        };
        if found[i].strength != Strength::None || found[i].disowned.is_some() {
            continue;
        }
        let named = found
            .iter()
            .filter(|f| f.id == replaced && f.strength == Strength::Strong)
            .find_map(|f| f.keyword.clone());
        if let Some(keyword) = named {
            found[i].strength = Strength::Strong;
            found[i].keyword = Some(keyword);
        }
    }
}

/// "klar, hier nochmal von der Firmenadresse: 6418573" above the author's quoted
/// earlier mail "unsere neue Partner-ID ist 6418573": a bare number of the author's
/// that the quoted thread names as the new ID takes that name, once the quoted
/// sentence is read in full (a quote that calls it old, another company's or a
/// global account gives nothing). Only then: reading every quoted number in full is
/// most of the work triage would do.
fn repeated_from_quote(
    found: &mut [Found],
    blocks: &[&Block],
    blanked: &[Vec<String>],
    quoted_at: &[(usize, usize, Token, Option<usize>)],
) {
    // What the quote names each number, read once per number: a mail that repeats
    // a number many times costs one full reading of its quoted occurrences.
    let mut named_as: Vec<(String, Option<Found>)> = Vec::new();
    for f in found.iter_mut() {
        if f.source == Source::Quoted
            || f.strength != Strength::None
            || f.disowned.is_some()
            || f.distractor.is_some()
            || f.temporal != Temporal::Unsaid
        {
            continue;
        }
        let named = match named_as.iter().find(|(id, _)| *id == f.id) {
            Some((_, q)) => q.clone(),
            None => {
                let q = quoted_at
                    .iter()
                    .filter(|(_, _, t, _)| t.digits == f.id)
                    .map(|(n, index, t, next)| {
                        read_context(blocks[*n], &blanked[*n], *index, t, *next, true)
                    })
                    .find(|q| {
                        q.strength == Strength::Strong
                            && matches!(q.temporal, Temporal::New | Temporal::Unsaid)
                            && q.role != Role::Pga
                            && q.distractor.is_none()
                            && q.disowned.is_none()
                            && q.alternative_to.is_none()
                    });
                named_as.push((f.id.clone(), q.clone()));
                q
            }
        };
        if let Some(q) = named {
            f.strength = Strength::Strong;
            f.keyword = q.keyword;
            f.temporal = q.temporal;
            f.role = q.role;
            f.owner = f.owner.take().or(q.owner);
        }
    }
}

/// The ID-shaped numbers of a line (its GUIDs, addresses and links left out).
pub(crate) fn line_numbers(line: &str) -> Vec<String> {
    tokens(&blank(line)).into_iter().map(|t| t.digits).collect()
}

/// Whether the author says the location (PLA) ID is still missing ("PLA noch nicht
/// vorhanden", "die neue ID schicken wir Ihnen dann"): a number the mail does
/// give is then no new ID at all (see `choose`).
pub(crate) fn location_pending(subject: &str, blocks: &[Block]) -> bool {
    cues::says_location_pending(subject)
        || blocks.iter().flat_map(|b| &b.lines).any(|l| {
            matches!(l.source, Source::Body | Source::Subject)
                && cues::says_location_pending(&l.text)
        })
}

/// Whether the author (subject or own text, not a quote) asks which of the numbers
/// we need.
pub(crate) fn asks_which(subject: &str, blocks: &[Block]) -> bool {
    cues::asks_which(subject)
        || blocks.iter().flat_map(|b| &b.lines).any(|l| {
            matches!(l.source, Source::Body | Source::Subject) && cues::asks_which(&l.text)
        })
}

/// Whether a line of the author's (or forwarded) text talks about the ID at all.
/// The ID-shaped numbers an HTML alternative shows a reader instead of `id`, when
/// it shows others but not `id` (converted as for an HTML-only mail); `None` when
/// it shows `id` (found in the raw HTML as it is, it needs no conversion) or no
/// ID-shaped number at all.
pub(crate) fn html_names_instead(html: &str, id: &str) -> Option<Vec<String>> {
    if html.contains(id) {
        return None;
    }
    let text = super::parse::html_as_text(html);
    let mut shown: Vec<String> = Vec::new();
    for line in text.lines() {
        for t in tokens(&blank(line)) {
            if t.digits == id {
                return None;
            }
            if !shown.contains(&t.digits) && shown.len() < 8 {
                shown.push(t.digits);
            }
        }
    }
    (!shown.is_empty()).then_some(shown)
}

/// The ID-shaped numbers of a text, as digits.
pub(crate) fn numbers_in(text: &str) -> std::collections::HashSet<String> {
    text.lines()
        .filter(|l| l.bytes().any(|b| b.is_ascii_digit()))
        .flat_map(|l| tokens(&blank(l)))
        .map(|t| t.digits)
        .collect()
}

pub(crate) fn mail_is_about_ids(subject: &str, blocks: &[Block]) -> bool {
    cues::mentions_id_topic(subject)
        || blocks.iter().flat_map(|b| &b.lines).any(|l| {
            matches!(l.source, Source::Body | Source::Forwarded | Source::Subject)
                && cues::mentions_id_topic(&l.text)
        })
}

/// Replaces GUIDs, URLs, mail addresses and host names with '_' of the same byte
/// length, so their digits are not numbers while byte offsets stay valid; a run of
/// [`BLANKED`] shows later that a value stood there.
/// A ticket system's tag: "[#1189034]", "[Ticket#2025111710000123]". Its own
/// pattern, run only on lines with both '[' and '#': inside [`BLANK`] its
/// open-ended class blew the lazy DFA's cache and tripled triage's instructions.
static TICKET_TAG: LazyLock<Regex> =
    LazyLock::new(|| regex(r"\[[^\[\]\n0-9]{0,40}\#\s?[0-9]{3,}\]"));

fn blank(line: &str) -> String {
    if !line.bytes().any(|b| b.is_ascii_digit()) {
        return line.to_string();
    }
    let mut out = blank_with(&BLANK, line);
    if out.contains('[') && out.contains('#') {
        out = blank_with(&TICKET_TAG, &out);
    }
    out
}

/// `line` with every match of `re` replaced by as many '_' as it has bytes.
fn blank_with(re: &Regex, line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut last = 0;
    for m in re.find_iter(line) {
        out.push_str(&line[last..m.start()]);
        out.extend(std::iter::repeat_n('_', m.end() - m.start()));
        last = m.end();
    }
    out.push_str(&line[last..]);
    out
}

/// A number in a line that has the shape of an ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub start: usize,
    pub end: usize,
    pub digits: String,
    pub separated: bool,
}

/// Most digit groups one run joins ("1 2 3 4 5 6 7 8 9 0 1 2" at most).
const MAX_GROUPS: usize = 12;

/// Digit groups (byte ranges) joined by single separators, and the separators:
/// "6 173 402" or "12.11.2025". Fixed arrays: a line holds many runs, most of them
/// one short group ("25 seats"), and each was two allocations.
struct Run {
    groups: [(usize, usize); MAX_GROUPS],
    seps: [u8; MAX_GROUPS],
    len: usize,
}

impl Run {
    fn groups(&self) -> &[(usize, usize)] {
        &self.groups[..self.len]
    }

    fn seps(&self) -> &[u8] {
        &self.seps[..self.len - 1]
    }

    fn digits(&self) -> usize {
        self.groups().iter().map(|(s, e)| e - s).sum()
    }
}

/// The next run at or after `i`, and where the search goes on.
fn next_run(bytes: &[u8], mut i: usize) -> Option<(Run, usize)> {
    while i < bytes.len() && !bytes[i].is_ascii_digit() {
        i += 1;
    }
    if i >= bytes.len() {
        return None;
    }
    let mut run = Run {
        groups: [(0, 0); MAX_GROUPS],
        seps: [0; MAX_GROUPS],
        len: 0,
    };
    loop {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        run.groups[run.len] = (start, i);
        run.len += 1;
        let plain = i + 1 < bytes.len()
            && matches!(bytes[i], b' ' | b'-' | b'.' | b'/')
            && bytes[i + 1].is_ascii_digit();
        let (sep, sep_len) = if plain {
            (bytes[i], 1)
        } else {
            // A thousands separator is kept as ',' whatever was typed.
            (b',', thousands_separator(bytes, start, i))
        };
        if sep_len == 0 || run.len >= MAX_GROUPS {
            break;
        }
        run.seps[run.len - 1] = sep;
        i += sep_len;
    }
    Some((run, i))
}

/// The length of a thousands separator after the group `start..end`, 0 when there
/// is none: a comma ("7,163,025") or a Swiss apostrophe ("6'696'056", also '’')
/// after at most three digits, with exactly three after it. A comma between longer
/// numbers lists them ("12345,6284913").
fn thousands_separator(bytes: &[u8], start: usize, end: usize) -> usize {
    let len = match bytes.get(end..) {
        Some([b',' | b'\'', ..]) => 1,
        Some([0xE2, 0x80, 0x99, ..]) => 3, // '’'
        _ => return 0,
    };
    let after = end + len;
    let three = bytes
        .get(after..after + 3)
        .is_some_and(|g| g.iter().all(u8::is_ascii_digit));
    if end - start <= 3 && three && !bytes.get(after + 3).is_some_and(u8::is_ascii_digit) {
        len
    } else {
        0
    }
}

/// The ID-shaped numbers of a line (see the module documentation).
pub(crate) fn tokens(line: &str) -> Vec<Token> {
    let bytes = line.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some((run, next)) = next_run(bytes, at) {
        at = next;
        // Fewer than six digits in all make no ID in any shape below.
        if run.digits() < 6 {
            continue;
        }
        let (groups, seps) = (run.groups(), run.seps());
        let (start, end) = (groups[0].0, groups[groups.len() - 1].1);
        if glued_before(line, start) || glued_after(bytes, end) || is_phone(&line[..start]) {
            continue;
        }
        let mut lens = [0usize; MAX_GROUPS];
        for (l, (s, e)) in lens.iter_mut().zip(groups) {
            *l = e - s;
        }
        let lens = &lens[..groups.len()];
        if is_date(lens, seps, line, groups) {
            continue;
        }
        let digits = |s: usize, e: usize| line[s..e].to_string();
        if lens.iter().all(|l| (6..=8).contains(l)) {
            out.extend(groups.iter().map(|&(s, e)| Token {
                start: s,
                end: e,
                digits: digits(s, e),
                separated: false,
            }));
            continue;
        }
        let total: usize = lens.iter().sum();
        let same_sep = seps.windows(2).all(|w| w[0] == w[1]);
        // "6 173 402", "61-73-402", "6.173.402"; or spelled digit by digit; with
        // commas only as thousands ("7,163,025"), never a list ("1,2,3").
        let grouping = if seps.first() == Some(&b',') {
            (1..=3).contains(&lens[0]) && lens[1..].iter().all(|l| *l == 3)
        } else {
            ((1..=4).contains(&lens[0]) && lens[1..].iter().all(|l| (2..=4).contains(l)))
                || lens.iter().all(|l| *l == 1)
        };
        if (6..=8).contains(&total) && same_sep && grouping {
            let joined: String = groups.iter().map(|&(s, e)| &line[s..e]).collect();
            out.push(Token {
                start,
                end,
                digits: joined,
                separated: true,
            });
        }
    }
    out
}

/// A letter right before the number, or a code like "R-20085" / "ST-2025-0193".
fn glued_before(line: &str, start: usize) -> bool {
    let mut before = line[..start].chars().rev();
    let Some(prev) = before.next() else {
        return false;
    };
    if prev.is_alphabetic() || prev == '_' {
        return true;
    }
    // A dial string: "+49 69 365 053 721,,61203345#" (conference ID typed for the
    // phone; with one comma the '#' after it tells, see `glued_after`). One comma
    // between two numbers of ID size lists them: "6840157,6840175".
    if prev == ',' && line[..start - 1].ends_with(',') {
        return true;
    }
    if prev == ','
        && line[..start - 1].ends_with(|c: char| c.is_ascii_digit())
        && line[..start - 1]
            .bytes()
            .rev()
            .take_while(u8::is_ascii_digit)
            .count()
            < 6
    {
        return true;
    }
    // "R-20085", "v1.2", "DE-1234567": a code, not a number. But the ID's own name as
    // a prefix ("PLA-6402917", "MPN-6284913", "ID-6284913") is how people write the ID.
    if !matches!(prev, '-' | '/' | '.' | '+') {
        return false;
    }
    let word: String = before.take_while(|c| c.is_alphanumeric()).collect();
    if word.is_empty() {
        return false;
    }
    let word: String = word.chars().rev().collect::<String>().to_ascii_lowercase();
    !matches!(
        word.as_str(),
        "pla" | "mpn" | "pga" | "id" | "partnerid" | "mcpp"
    )
}

fn glued_after(bytes: &[u8], end: usize) -> bool {
    let Some(&next) = bytes.get(end) else {
        return false;
    };
    // "61203345#": a code typed on a phone keypad (conference ID, PIN), not an ID.
    if next.is_ascii_alphabetic() || matches!(next, b'_' | b'@' | b'#') {
        return true;
    }
    if !matches!(next, b'-' | b'/') || !bytes.get(end + 1).is_some_and(u8::is_ascii_alphanumeric) {
        return false;
    }
    // "7581036/PLA", "7581036-MPN": the ID's own name as a suffix, like the prefix
    // in `glued_before`.
    let word: Vec<u8> = bytes[end + 1..]
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric())
        .map(u8::to_ascii_lowercase)
        .collect();
    !matches!(word.as_slice(), b"pla" | b"mpn" | b"pga" | b"id" | b"mcpp")
}

/// "+49 …" or "(512) 555-0148": a phone number.
fn is_phone(before: &str) -> bool {
    let t = before.trim_end();
    if t.ends_with('+') {
        return true;
    }
    if let Some(inner) = t.strip_suffix(')') {
        let digits = inner
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_digit())
            .count();
        return digits > 0 && inner[..inner.len() - digits].ends_with('(');
    }
    false
}

/// "18.11.2025", "2025-11-18", "11/25", and month or week with year: "47/2025".
fn is_date(lens: &[usize], seps: &[u8], line: &str, groups: &[(usize, usize)]) -> bool {
    let year_at = |g: usize| {
        groups
            .get(g)
            .and_then(|&(s, e)| line.get(s..e))
            .is_some_and(|y| y.len() == 4 && (y.starts_with("19") || y.starts_with("20")))
    };
    match (lens, seps) {
        ([a, 4], [b'.' | b'/' | b'-']) if (1..=2).contains(a) && year_at(1) => return true,
        ([4, a], [b'.' | b'/' | b'-']) if (1..=2).contains(a) && year_at(0) => return true,
        _ => {}
    }
    match (lens, seps) {
        ([d, m, y], [a, b]) if a == b && matches!(a, b'.' | b'/' | b'-') => {
            ((1..=2).contains(d) && (1..=2).contains(m) && (*y == 2 || *y == 4))
                || (*d == 4 && (1..=2).contains(m) && (1..=2).contains(y))
        }
        _ => false,
    }
}

fn shape_of(token: &Token) -> Shape {
    let d = token.digits.as_bytes();
    if d.first() == Some(&b'0') {
        return Shape::LeadingZero;
    }
    let step = |up: bool| {
        d.windows(2).all(|w| {
            if up {
                w[1] == w[0] + 1
            } else {
                w[0] == w[1] + 1
            }
        })
    };
    let same = d.windows(2).all(|w| w[0] == w[1]);
    if same || step(true) || step(false) {
        return Shape::Placeholder;
    }
    if token.separated {
        Shape::Separated
    } else {
        Shape::Plain
    }
}

/// Start of the current sentence in `s`: just after the last ". ", "! " or "? "
/// (an abbreviation such as "Nr." or "z. B." does not end a sentence).
fn sentence_start(s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = b.len();
    while i > 1 {
        i -= 1;
        if b[i - 1] != b'.' && b[i - 1] != b'!' && b[i - 1] != b'?' {
            continue;
        }
        if !b[i].is_ascii_whitespace() {
            continue;
        }
        if b[i - 1] != b'.' || ends_sentence_with_period(&s[..i - 1]) {
            return i;
        }
    }
    0
}

/// End of the sentence that starts `s` (index of its terminator), or `s.len()`.
fn sentence_end(s: &str) -> usize {
    let b = s.as_bytes();
    for i in 0..b.len() {
        if matches!(b[i], b'.' | b'!' | b'?')
            && b.get(i + 1).is_none_or(u8::is_ascii_whitespace)
            && (b[i] != b'.' || ends_sentence_with_period(&s[..i]))
        {
            return i;
        }
    }
    s.len()
}

/// Whether a period after `before` ends a sentence rather than an abbreviation:
/// after a word of 4+ letters, a digit or a closing parenthesis; after a word of two
/// or three letters unless it is a known abbreviation ("Nr.", "bzw.", "Tel.": "die
/// brauchen Sie. Die 6347068 …" ends a sentence).
fn ends_sentence_with_period(before: &str) -> bool {
    /// Abbreviations of two or three letters that stand before a number or a name.
    const ABBREVIATIONS: &[&str] = &[
        "nr", "no", "bzw", "ca", "tel", "str", "dr", "fr", "hr", "vgl", "usw", "etc", "co", "inc",
        "ltd", "mr", "mrs", "ms", "st", "abs", "bsp", "geb", "gez", "jr", "sr", "vs", "fa", "kd",
        "kto", "ust", "abt", "ggf", "evt", "mio", "mrd", "tsd", "min", "max", "std", "ref", "att",
        "cc", "pp", "ff", "rd", "apt", "ave", "jan", "feb", "mär", "apr", "jun", "jul", "aug",
        "sep", "okt", "oct", "nov", "dez", "dec", "az", "id", "bd", "hrb", "hra", "kw", "vol",
        "ed", "fig", "tab", "ziff", "lit",
    ];
    // A quote closed before the period ("mit dem Status „Aktiv“.") ends a sentence.
    if before.ends_with(['"', '“', '”', '»', '«']) {
        return true;
    }
    let mut rev = before
        .chars()
        .rev()
        .take_while(|c| c.is_alphanumeric() || *c == ')');
    match rev.next() {
        None => false,
        Some(last) if last == ')' || last.is_ascii_digit() => true,
        Some(_) => {
            let len = 1 + rev.take(3).count();
            if len >= 4 {
                // "Kundennr.", "Bestellnr.", "Hauptstr.": compounds ending in an
                // abbreviation.
                let tail = |n: usize, w: &str| {
                    before.len() >= n
                        && before.is_char_boundary(before.len() - n)
                        && before[before.len() - n..].eq_ignore_ascii_case(w)
                };
                return !(tail(2, "nr") || tail(3, "str"));
            }
            if len == 1 {
                return false; // "z. B.", "d. h.", an initial
            }
            let cut = before.len()
                - before
                    .chars()
                    .rev()
                    .take(len)
                    .map(char::len_utf8)
                    .sum::<usize>();
            let word = before[cut..].to_lowercase();
            !ABBREVIATIONS.contains(&word.as_str())
        }
    }
}

/// Largest index `<= i` that is a char boundary of `s`.
fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i.min(s.len())
}

/// The text before a number that may speak about it: the current sentence, reaching
/// up to a few lines above when the number's own line has no sentence end (a heading
/// "Partner-ID:" or a label line above the number). Returns the context and the
/// offset in it where the number's own line starts.
fn backward_context(
    block: &Block,
    blanked: &[String],
    index: usize,
    start: usize,
) -> (String, usize) {
    let own = &blanked[index][..start];
    let mut above: Vec<&str> = Vec::new();
    if sentence_start(own) == 0 {
        let source = block.lines[index].source;
        let mut blanks = 0;
        for up in (0..index).rev().take(LINES_UP + 1) {
            if block.lines[up].source != source || above.len() >= LINES_UP {
                break;
            }
            let text = blanked[up].trim_end();
            if text.trim().is_empty() {
                blanks += 1;
                if blanks > 1 {
                    break;
                }
                continue;
            }
            if text.ends_with(['.', '!', '?']) {
                break;
            }
            above.push(text);
            if text.ends_with(':') {
                break;
            }
        }
    }
    let mut ctx = String::new();
    for line in above.iter().rev() {
        ctx.push_str(line);
        ctx.push('\n');
    }
    let line_start = ctx.len();
    ctx.push_str(own);
    let from = sentence_start(&ctx);
    let from = floor_boundary(&ctx, from.max(ctx.len().saturating_sub(KEYWORD_REACH * 2)));
    let from = ceil_boundary(&ctx, from);
    let clause = ctx[from..].to_string();
    (clause, line_start.saturating_sub(from))
}

/// The text after a number up to the end of its sentence, the next number, or
/// [`FORWARD_REACH`] bytes.
fn forward_context(line: &str, end: usize) -> &str {
    let rest = &line[end..];
    // "… 6839201 und 6839218. Eine ist wohl für den Hauptsitz": a period right
    // after the number ends its sentence. `sentence_end` cannot tell, because the
    // digits that make the period a full stop are not in `rest`.
    let full_stop =
        rest.starts_with('.') && rest[1..].chars().next().is_none_or(char::is_whitespace);
    let mut stop = if full_stop {
        0
    } else {
        sentence_end(rest).min(FORWARD_REACH)
    };
    if let Some(next_digit) = rest.find(|c: char| c.is_ascii_digit()) {
        stop = stop.min(next_digit);
    }
    &rest[..floor_boundary(rest, stop)]
}

/// The rest of the number's sentence like [`forward_context`], but past dates and
/// counts, up to the next ID-shaped number (`next`).
fn past_small_numbers(line: &str, end: usize, next: Option<usize>) -> &str {
    let rest = &line[end..next.unwrap_or(line.len()).max(end)];
    &rest[..floor_boundary(rest, sentence_end(rest).min(FORWARD_REACH))]
}

/// End offset of the last number (3+ digits) in `s`, 0 when there is none.
fn last_number_end(s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = b.len();
    while i > 0 {
        if b[i - 1].is_ascii_digit() {
            let end = i;
            while i > 0 && b[i - 1].is_ascii_digit() {
                i -= 1;
            }
            if end - i >= 3 {
                return end;
            }
        } else {
            i -= 1;
        }
    }
    0
}

/// Where the number that ends at `end` in `s` starts (separators inside it
/// included, as in [`digits_ending_at`]).
fn number_start(s: &str, end: usize) -> usize {
    let b = &s.as_bytes()[..end];
    let mut start = end;
    while start > 0 {
        let c = b[start - 1];
        let separator = matches!(c, b' ' | b'.' | b'-')
            && start >= 2
            && b[start - 2].is_ascii_digit()
            && b.get(start).is_some_and(u8::is_ascii_digit);
        if c.is_ascii_digit() || separator {
            start -= 1;
        } else {
            break;
        }
    }
    start
}

/// The digits of the number that ends at `end` in `s`, its separators left out
/// ("6 840 157" gives "6840157").
fn digits_ending_at(s: &str, end: usize) -> String {
    s.as_bytes()[number_start(s, end)..end]
        .iter()
        .filter(|c| c.is_ascii_digit())
        .map(|&c| char::from(c))
        .collect()
}

fn nearest(cues: Vec<Cue>) -> Option<Cue> {
    cues.into_iter().max_by_key(|c| c.end)
}

/// What the line around `token` says of it; `next` is where the line's next ID-shaped
/// number starts.
fn read_context(
    block: &Block,
    blanked: &[String],
    index: usize,
    token: &Token,
    next: Option<usize>,
    full: bool,
) -> Found {
    let line = &blanked[index];
    let (clause, line_start) = backward_context(block, blanked, index, token.start);
    let after = forward_context(line, token.end);

    // The ID keyword: nearest before the number, else right after it. A quoted
    // number needs the distractors only to tell its keyword (see below).
    // `full`: read a quoted number like the author's (see `repeated_from_quote`).
    let quoted = block.lines[index].source == Source::Quoted && !full;
    let (clause_distractors, (strong, weak)) = if quoted {
        (Vec::new(), cues::keywords_alone(&clause))
    } else {
        let d = cues::distractors(&clause);
        let k = cues::keywords(&clause, &d);
        (d, k)
    };
    let backward_kw = nearest(strong.iter().chain(weak.iter()).cloned().collect())
        .filter(|k| clause.len() - k.end <= KEYWORD_REACH);
    let mut strength = match &backward_kw {
        Some(_) if !strong.is_empty() => Strength::Strong,
        Some(_) => Strength::Weak,
        None => Strength::None,
    };
    let mut keyword = backward_kw.as_ref().map(|k| k.text.clone());
    // "7536110 is our PGA and 7536127 is the PLA": a name said of the number itself
    // wins over one that belongs to the number before it.
    if backward_kw
        .as_ref()
        .is_some_and(|k| k.end <= previous_statement_end(&clause, last_number_end(&clause)))
    {
        if let Some(k) = cues::postposed_keyword(after) {
            strength = Strength::Strong;
            keyword = Some(k.text);
        }
    }
    // "Kundennr. 10448213 · neue Partner-ID 6651407": a number with a label of its
    // own right before it does not take the next number's keyword.
    let own_label = clause_distractors
        .iter()
        .any(|d| clause.len() - d.end <= 12 && !clause[d.end..].contains(BLANKED));
    if backward_kw.is_none() && !own_label {
        let (fs, fw) = cues::keywords_alone(after);
        if let Some(k) = fs.first() {
            strength = Strength::Strong;
            keyword = Some(k.text.clone());
        } else if let Some(k) = fw.first() {
            strength = Strength::Weak;
            keyword = Some(k.text.clone());
        }
    }
    // An answer written between the lines of our mail, right below the line that
    // asks for the new ID ("> 3. Senden Sie uns Ihre neue Standort-ID …" /
    // "Gerne, hier ist sie: 7046283"), is named by that question.
    let mut answers_for_new_id = false;
    if keyword.is_none() && !quoted {
        if let Some(k) = asked_for_new_id(block, blanked, index) {
            strength = Strength::Strong;
            keyword = Some(k);
            answers_for_new_id = true;
        }
    }

    // "Joseph already sent you our new partner location ID on 13 November. For the
    // avoidance of doubt it is 6958312": named by the sentence it points back at.
    let mut named_before = None;
    if keyword.is_none() && !quoted && !own_label && cues::refers_back(&clause) {
        if let Some((sentence, k)) =
            sentence_naming_id_before(block, blanked, index, token.start, &clause)
        {
            strength = Strength::Strong;
            keyword = Some(k.text.trim().to_string());
            named_before = Some(sentence[..k.end].to_string());
        }
    }

    // A quoted number loses whatever its words say (see `choose`): only its keyword
    // (shown to the operator, and in its score) is worth reading. Quoted history is
    // most of a reply's numbers, so this is most of the time triage spends here.
    if quoted {
        return found_at(block, index, line, token, keyword, strength);
    }

    // A distractor label nearer than the keyword ("… MPN-ID / Bestellung 40078125").
    let distractor = nearest(clause_distractors)
        .filter(|d| clause.len() - d.end <= KEYWORD_REACH)
        .filter(|d| backward_kw.as_ref().is_none_or(|k| d.end > k.end))
        // "für den neuen Mandanten <host> lautet 6830278": the label has its value.
        .filter(|d| !clause[d.end..].contains(BLANKED))
        // "Neue MPN-ID für mein Konto: 6021947": the ID of the account, not its number.
        .filter(|d| !cues::is_what_the_value_is_for(&clause[..d.start], &clause[d.end..]))
        // "unter Kontoeinstellungen nachgeschaut: Die 6297415": where, not what.
        .filter(|d| !cues::is_place_looked_in(&clause[..d.start], &clause[d.end..]))
        // "the ID for our location (… linked to the new tenant) is 7150428": a word
        // inside a note closed before the number labels nothing of it.
        .filter(|d| !in_closed_note(&clause[..d.start], &clause[d.end..]))
        .map(|d| d.text)
        .or_else(|| {
            if backward_kw.is_some() {
                return None;
            }
            cues::after_note(after)
                .and_then(|note| nearest(cues::distractors(note)))
                .map(|d| d.text)
        });

    // Old/new and PGA/PLA are read in a window that starts after the previous
    // number (and its parenthetical note) and not far before the keyword.
    let window = marker_window(&clause, line_start, backward_kw.as_ref());
    // `after` ends at the next digit; old words may stand behind a date or a count
    // that is no ID ("4039875 ist seit 01.12.2025 von Microsoft deaktiviert").
    let says_old_after = cues::after_says_old(after) || {
        let stop = token.end + after.len();
        line[stop..].starts_with(|c: char| c.is_ascii_digit())
            && next.is_none_or(|n| n > stop)
            && cues::after_says_old(past_small_numbers(line, token.end, next))
    };
    let mut temporal = temporal_of(window, after, says_old_after);
    if answers_for_new_id && temporal == Temporal::Unsaid {
        temporal = Temporal::New;
    }
    // "7581036 ist ab sofort unsere Partner-ID": what the predicate that names the
    // number says before the name.
    if temporal == Temporal::Unsaid {
        if let Some(k) = cues::postposed_keyword(after) {
            temporal = temporal_of(&after[..k.start], "", false);
        }
    }
    // "X durch Y", "von X auf Y": a joint word alone between two numbers makes the
    // first the replaced one and the second its replacement.
    let next_is_number = starts_with_id_shape(&line[token.end + after.len()..]);
    if temporal == Temporal::Unsaid {
        if next_is_number && cues::is_replacing_joint(after) {
            temporal = Temporal::Old;
        } else if window_follows_number(&clause, window) && cues::is_replacing_joint(window) {
            temporal = Temporal::New;
        }
    }
    if let Some(named) = &named_before {
        if temporal == Temporal::Unsaid {
            temporal = temporal_of(named, "", false);
        }
    }
    let mut role = role_of(window, after);
    if let Some(named) = &named_before {
        if role == Role::Unsaid {
            role = role_of(named, "");
        }
    }
    // A keyword shared by several numbers ("zwei Standort-IDs, 6732095 für Trier und
    // 6732112 für Luxemburg") names the role of every one of them, not only of the
    // first: otherwise the first would outrank the others by position alone.
    let window_start = clause.len() - window.len();
    if let Some(k) = backward_kw.as_ref().filter(|k| k.end <= window_start) {
        if role == Role::Unsaid {
            role = role_of(&k.text, "");
        }
        // Likewise a plural keyword's "new" ("unsere neuen MPN-IDs: 6831282,
        // 6831283"): each number it names is new, so none wins by coming first.
        if temporal == Temporal::Unsaid && is_plural_keyword(&k.text) {
            let from = floor_boundary(&clause, k.start.saturating_sub(ADJECTIVE_REACH));
            temporal = temporal_of(&clause[from..k.end], "", false);
        }
    }

    let correction = introduced_as_correction(block, blanked, index, token.start);
    if correction && temporal != Temporal::Negated && !says_old_after {
        temporal = Temporal::New;
    }
    let rest = &line[token.end + after.len()..];
    let prev = last_number_end(&clause);
    let since_prev = {
        let from = prev + cues::leading_note_len(&clause[prev..]);
        clause.get(from..).unwrap_or("")
    };
    // A question about a number the author calls new is a polite one ("ist das so
    // ok?"); about any other number it asks, and states nothing.
    let asks = rest.starts_with('?') && temporal != Temporal::New;
    let disowned = cues::disowned_before(since_prev, window)
        .or_else(|| cues::disowned_after(after, asks))
        // "And our current ID 4276158 - does that simply stop working …?": asked
        // about by a question it stands in, named by no more than "ID".
        .or_else(|| {
            (asks && strength != Strength::Strong && distractor.is_none())
                .then_some("asked about, not stated")
        })
        .or_else(|| {
            (temporal != Temporal::New && cues::asked_next(rest))
                .then_some("asked about, not stated")
        });

    let alternative_to = (prev > 0 && cues::offers_alternative(&clause[prev..]))
        .then(|| digits_ending_at(&clause, prev))
        .filter(|d| d.len() >= 6);

    // "statt 7757741 bitte 7757714", "nicht 6514802, sondern 6514820": this number
    // replaces the negated one before it, and is the new one.
    let replaces = (prev > 0 && cues::is_instead_joint(&clause[prev..]))
        .then(|| {
            let start = number_start(&clause, prev);
            let before =
                &clause[floor_boundary(&clause, start.saturating_sub(NEGATION_REACH))..start];
            (!cues::negations(before).is_empty()).then(|| digits_ending_at(&clause, prev))
        })
        .flatten()
        .filter(|d| d.len() >= 6);
    if replaces.is_some() && temporal == Temporal::Unsaid {
        temporal = Temporal::New;
    }

    // Whose ID: a company named between the keyword and the number, right after the
    // number, or as the owner of the keyword ("Redwood Lane's new location ID").
    let since_start = clause.len() - since_prev.len();
    let owner = match backward_kw.as_ref().filter(|k| k.start >= since_start) {
        Some(k) => cues::named_owner(&clause[since_start..k.start], &clause[k.end..], after),
        None => cues::named_owner("", "", after),
    };

    Found {
        temporal,
        role,
        distractor,
        disowned,
        correction,
        alternative_to,
        replaces,
        owner,
        ..found_at(block, index, line, token, keyword, strength)
    }
}

/// "MPN-IDs", "Partner-IDs", "location IDs", "Standortnummern": a name of several.
fn is_plural_keyword(keyword: &str) -> bool {
    let k = keyword.trim().to_lowercase();
    ["ids", "nummern", "numbers", "nrn"]
        .iter()
        .any(|p| k.ends_with(p))
}

/// The ID keyword of the quoted line right above an answer of the author's (one
/// blank line between at most), when that line asks for the new ID: a strong
/// keyword and a word for "new" ("Senden Sie uns Ihre neue Standort-ID").
fn asked_for_new_id(block: &Block, blanked: &[String], index: usize) -> Option<String> {
    if block.lines[index].source != Source::Body {
        return None;
    }
    let up = (0..index)
        .rev()
        .take(2)
        .find(|&i| !blanked[i].trim().is_empty())?;
    let line = &block.lines[up];
    if line.source != Source::Quoted || !line.text.trim_start().starts_with('>') {
        return None;
    }
    let question = &blanked[up];
    if cues::new_words(question).is_empty() {
        return None;
    }
    let (strong, _) = cues::keywords_alone(question);
    strong.last().map(|k| k.text.clone())
}

/// The number itself, where it stands and how it is named; what its context says
/// (temporal, role, …) is left unsaid for the caller to fill in.
fn found_at(
    block: &Block,
    index: usize,
    line: &str,
    token: &Token,
    keyword: Option<String>,
    strength: Strength,
) -> Found {
    let evidence = evidence_around(&block.lines[index].text, token.start, token.end);
    Found {
        id: token.digits.clone(),
        source: block.lines[index].source,
        html: block.html,
        evidence,
        keyword: keyword.map(|k| k.trim().to_string()),
        strength,
        temporal: Temporal::Unsaid,
        role: Role::Unsaid,
        distractor: None,
        shape: shape_of(token),
        alone: stands_alone(line, token),
        disowned: None,
        correction: false,
        alternative_to: None,
        replaces: None,
        owner: None,
    }
}

/// The sentence right before the one of a number (on its line, else the line above,
/// in the same part of the mail) and the strong ID keyword it ends on, when no
/// number follows that keyword there: what "it is …" / "noch einmal: …" points at.
fn sentence_naming_id_before(
    block: &Block,
    blanked: &[String],
    index: usize,
    start: usize,
    clause: &str,
) -> Option<(String, Cue)> {
    let own = &blanked[index][..start];
    let before = own.strip_suffix(clause)?;
    let mut text = before.trim_end();
    if text.trim().is_empty() {
        let source = block.lines[index].source;
        let up = (0..index)
            .rev()
            .take(2)
            .find(|&i| !blanked[i].trim().is_empty())
            .filter(|&i| block.lines[i].source == source)?;
        text = blanked[up].trim_end();
    }
    let text = text.strip_suffix(['.', '!', ':'])?;
    let sentence = &text[sentence_start(text)..];
    let distractors = cues::distractors(sentence);
    let (strong, _) = cues::keywords(sentence, &distractors);
    let k = strong.into_iter().max_by_key(|k| k.end)?;
    if last_number_end(&sentence[k.end..]) != 0 || distractors.iter().any(|d| d.start >= k.end) {
        return None;
    }
    Some((sentence.to_string(), k))
}

/// Whether a word between `before` and `after` stands in a parenthesis that opens
/// in `before` and closes in `after`.
fn in_closed_note(before: &str, after: &str) -> bool {
    let opened = before
        .rfind('(')
        .is_some_and(|o| before.rfind(')').is_none_or(|c| c < o));
    opened && after.contains(')')
}

/// Longest line shown whole as a number's evidence.
const EVIDENCE_LINE: usize = 200;
/// Else the evidence is this much of the line before the number and after it.
const EVIDENCE_BEFORE: usize = 90;
const EVIDENCE_AFTER: usize = 100;

/// The number's line as evidence for the operator: whole when short, else the words
/// around the number ("… before 6 173 402 after …"), so that a long line (an HTML
/// paragraph) still shows the number itself and a stored case stays small.
fn evidence_around(line: &str, start: usize, end: usize) -> String {
    let trimmed = line.trim();
    if trimmed.len() <= EVIDENCE_LINE {
        return trimmed.to_string();
    }
    let mut from = floor_boundary(line, start.saturating_sub(EVIDENCE_BEFORE));
    let mut to = ceil_boundary(line, end + EVIDENCE_AFTER);
    // Whole words at both ends.
    if from > 0 {
        from = line[from..start]
            .find(char::is_whitespace)
            .map_or(from, |i| from + i);
    }
    if to < line.len() {
        to = line[end..to]
            .rfind(char::is_whitespace)
            .map_or(to, |i| end + i);
    }
    let mut out = String::with_capacity(to - from + 8);
    if !line[..from].trim().is_empty() {
        out.push_str("… ");
    }
    out.push_str(line[from..to].trim());
    if !line[to..].trim().is_empty() {
        out.push_str(" …");
    }
    out
}

/// Whether a correction cue stands before the number, on its line or the line above,
/// with no other number in between (see [`cues::correction_end`]).
fn introduced_as_correction(block: &Block, blanked: &[String], index: usize, start: usize) -> bool {
    let source = block.lines[index].source;
    let mut text = String::new();
    if let Some(up) = (0..index)
        .rev()
        .take(2)
        .find(|&i| !blanked[i].trim().is_empty())
        .filter(|&i| block.lines[i].source == source)
    {
        text.push_str(&blanked[up]);
        text.push('\n');
    }
    text.push_str(&blanked[index][..start]);
    cues::correction_end(&text).is_some_and(|end| last_number_end(&text[end..]) == 0)
}

/// Whether `s` starts with a number of ID size (6+ digits, separators allowed), not
/// a count ("to 12 customers").
fn starts_with_id_shape(s: &str) -> bool {
    let digits = s
        .bytes()
        .take(16)
        .take_while(|b| b.is_ascii_digit() || matches!(b, b' ' | b'.' | b'-'))
        .filter(u8::is_ascii_digit)
        .count();
    s.bytes().next().is_some_and(|b| b.is_ascii_digit()) && digits >= 6
}

/// Whether `window` (a suffix of `clause`) starts right after an earlier number.
fn window_follows_number(clause: &str, window: &str) -> bool {
    let prev = last_number_end(clause);
    prev > 0 && prev == clause.len() - window.len()
}

/// Nothing but the number (and a closing period) on its line.
fn stands_alone(line: &str, token: &Token) -> bool {
    line[..token.start].trim().is_empty()
        && line[token.end..]
            .trim()
            .trim_end_matches(['.', '!'])
            .is_empty()
}

/// Where what `clause` says of its last number (`prev`, its end) stops: its
/// parenthetical note and its predicate ("7581036 ist unsere neue PLA, die …": "neue
/// PLA" is said of 7581036, not of the number after it).
fn previous_statement_end(clause: &str, prev: usize) -> usize {
    let after_note = prev + cues::leading_note_len(&clause[prev..]);
    if prev == 0 {
        return after_note;
    }
    after_note + cues::predicate_len(&clause[after_note..])
}

fn marker_window<'a>(clause: &'a str, line_start: usize, kw: Option<&Cue>) -> &'a str {
    let prev = last_number_end(clause);
    let after_prev = previous_statement_end(clause, prev);
    let own_line_text = clause.get(line_start..).unwrap_or("");
    // Words on the number's own line; "(" of a sentence wrapped before the number
    // ("die alte\n(5377104)") is no label of its own.
    let own_line_has_words = own_line_text.chars().any(char::is_alphanumeric);
    // A heading ("Partner-ID:") above labelled lines, not a sentence wrapped over
    // lines ("die neue Partner-ID unseres Standorts\nin Regensburg lautet …").
    let heading_above = clause[..line_start.min(clause.len())]
        .trim_end()
        .ends_with(':');
    let from = match kw {
        // Keyword in a heading above: only a label on the number's own line speaks,
        // unless the number stands alone on its line.
        Some(k) if k.end <= line_start && own_line_has_words && heading_above => line_start,
        Some(k) => k.start.saturating_sub(ADJECTIVE_REACH),
        None => clause.len().saturating_sub(40).max(line_start),
    };
    // "Bestellung 4410726 weiterhin gesperrt - Partner-ID 7264019": a dash or bar
    // between the previous number and this keyword ends the previous statement.
    let after_prev = match kw {
        Some(k) if prev > 0 && k.start > after_prev => [" - ", " – ", " | "]
            .iter()
            .filter_map(|sep| {
                clause[after_prev..k.start]
                    .rfind(sep)
                    .map(|i| after_prev + i + sep.len())
            })
            .max()
            .unwrap_or(after_prev),
        _ => after_prev,
    };
    let from = ceil_boundary(clause, from.max(after_prev).min(clause.len()));
    &clause[from..]
}

fn temporal_of(window: &str, after: &str, says_old_after: bool) -> Temporal {
    if says_old_after {
        return Temporal::Old;
    }
    if cues::after_says_new(after) {
        return Temporal::New;
    }
    if cues::just_before_says_new(window) {
        return Temporal::New;
    }
    // "the new ID we received was 7…" stays new: "was" alone only says old when no
    // word in the window says new.
    if cues::just_before_says_old(window) && cues::new_words(window).is_empty() {
        return Temporal::Old;
    }
    let len = window.len();
    let mut best: Option<(usize, Temporal)> = None;
    let mut consider = |cues: Vec<Cue>, t: Temporal, reach: Option<usize>| {
        for c in cues {
            if reach.is_some_and(|r| len - c.end > r) {
                continue;
            }
            if best.is_none_or(|(end, _)| c.end > end) {
                best = Some((c.end, t));
            }
        }
    };
    let new = cues::new_words(window);
    // "Will the new ID look anything like our current one (3864127)": set against a
    // new one, the current ID is the old one.
    if let Some(first_new) = new.iter().map(|c| c.end).min() {
        let current = cues::current_words(window);
        consider(
            current
                .into_iter()
                .filter(|c| c.start >= first_new)
                .collect(),
            Temporal::Old,
            None,
        );
    }
    consider(new, Temporal::New, None);
    consider(cues::old_words(window), Temporal::Old, None);
    consider(
        cues::negations(window),
        Temporal::Negated,
        Some(NEGATION_REACH),
    );
    consider(
        cues::examples(window),
        Temporal::Example,
        Some(EXAMPLE_REACH),
    );
    best.map_or(Temporal::Unsaid, |(_, t)| t)
}

/// `after` up to the first comma, semicolon or "und"/"and" that starts the next clause.
fn clause_head(after: &str) -> &str {
    let mut end = after.find([',', ';']).unwrap_or(after.len());
    for joint in [" und ", " and ", " sowie ", " while ", " whereas "] {
        if let Some(i) = after.find(joint) {
            end = end.min(i);
        }
    }
    &after[..end]
}

fn role_of(window: &str, after: &str) -> Role {
    if let Some(note) = cues::after_note(after) {
        if !cues::pga_words(note).is_empty() {
            return Role::Pga;
        }
        if !cues::pla_words(note).is_empty() {
            return Role::Pla;
        }
    }
    let pga = nearest(cues::pga_words(window)).map(|c| c.end);
    let pla = nearest(cues::pla_words(window)).map(|c| c.end);
    match (pga, pla) {
        (Some(g), Some(l)) => return if g > l { Role::Pga } else { Role::Pla },
        (Some(_), None) => return Role::Pga,
        (None, Some(_)) => return Role::Pla,
        (None, None) => {}
    }
    // Forward, the role speaks of this number only up to the end of its clause:
    // in "X, die des Standorts München Y" the location belongs to Y, not X.
    let after = clause_head(after);
    let pga = cues::pga_words(after).first().map(|c| c.start);
    let pla = cues::pla_words(after).first().map(|c| c.start);
    match (pga, pla) {
        (Some(g), Some(l)) if g < l => Role::Pga,
        (Some(_), Some(_)) => Role::Pla,
        (Some(_), None) => Role::Pga,
        (None, Some(_)) => Role::Pla,
        (None, None) => Role::Unsaid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triage::segment::Line;

    fn ids(line: &str) -> Vec<String> {
        tokens(&blank(line)).into_iter().map(|t| t.digits).collect()
    }

    #[test]
    fn token_shapes() {
        assert_eq!(ids("Partner-ID: 6 173 402"), ["6173402"]);
        assert_eq!(ids("PartnerID is 7,163,025 (location)"), ["7163025"]);
        assert_eq!(ids("6840157,6840175"), ["6840157", "6840175"]);
        assert!(ids("1,2,3,4,5,6,7 und 12,50 EUR").is_empty());
        assert_eq!(ids("Partner-ID ist 6'696'056."), ["6696056"]);
        assert_eq!(ids("Partner-ID ist 6’696’056."), ["6696056"]);
        assert_eq!(
            ids("MPN-ID 6514820 (nicht 6514802)"),
            ["6514820", "6514802"]
        );
        assert_eq!(ids("alt/neu 4039875/6057318"), ["4039875", "6057318"]);
        assert!(ids("vom 12.11.2025 und 2025-11-14").is_empty());
        assert!(ids("Tel. 0381 20786-30, +49 89 2154770-31").is_empty());
        assert!(ids("IBAN DE89 3704 0044 0532 0130 00").is_empty());
        assert!(ids("USt-IdNr.: DE 285 417 963, DE298765432").is_empty());
        assert!(ids("(512) 555-0148").is_empty());
        assert!(ids("Konto R-20085, Vorgang ST-2025-0193").is_empty());
        assert!(ids("Tenant 8d3f2a61-5c4b-4e7a-9f1d-2b6c8e0a4d97").is_empty());
        assert!(ids("Tenant 12345678-1234-1234-1234-123456789012").is_empty());
        assert!(ids("mail 1234567@x.example, https://x.example/1234567").is_empty());
        assert!(ids("198.51.100.35 und 192.0.2.25").is_empty());
        assert_eq!(ids("ID:6284913."), ["6284913"]);
        assert_eq!(ids("ID 6 1 7 3 4 0 2"), ["6173402"]);
        assert!(ids("ab KW 47/2025, Stand 11.2025, 2025/11").is_empty());
        assert_eq!(ids("Ticket #7702145"), ["7702145"]);
        // A ticket system's tag in brackets is no ID.
        assert!(ids("Re: new MPN ID required [#1189034]").is_empty());
        assert!(ids("[Ticket#1189034] Partner-ID").is_empty());
        // The ID's own name as a prefix is no code; a dial string is.
        assert_eq!(ids("Kennung PLA-6402917."), ["6402917"]);
        assert_eq!(ids("ID#6520017, MPN-6284913"), ["6520017", "6284913"]);
        assert!(ids("Konto R-2003145").is_empty());
        // … and so is it as a suffix; any other word glued on makes a code.
        assert_eq!(ids("ID 7581036/PLA, 7581049-MPN"), ["7581036", "7581049"]);
        assert!(ids("Art. 7581036-B, Los 7581049/A2").is_empty());
        assert!(ids("+49 69 365 053 721,,61203345#").is_empty());
        assert!(ids("Konferenz-ID: 612 033 45#").is_empty());
    }

    #[test]
    fn disowned_numbers() {
        let d = |lines: &[&str]| {
            read(lines)
                .into_iter()
                .map(|f| f.disowned.is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            d(&["unsere Schwesterfirma hat ihre neue MPN-ID 6592210 bekommen."]),
            [true]
        );
        assert_eq!(
            d(&["die neue Partner-ID für unsere Tochtergesellschaft X GmbH: 6650934"]),
            [true]
        );
        assert_eq!(d(&["testweise eine Registrierung angelegt (Partner-ID 6498201), die bitte NICHT verwenden."]), [true]);
        assert_eq!(d(&["Partner-ID 6498201 bitte nicht verwenden."]), [true]);
        assert_eq!(
            d(&["Please ignore the ID 7401122 from my email below."]),
            [true]
        );
        assert_eq!(d(&["If the new ID is 7190023, can we send it?"]), [true]);
        // A customer's own ID, sent to us; "uns" as an object claims nothing.
        assert_eq!(
            d(&["Der Kunde ist selbst Microsoft-Partner und hat uns seine eigene MPN-ID 6348215 weitergeleitet."]),
            [true]
        );
        assert_eq!(
            d(&["The customer forwarded their own MPN ID 6348215 to us."]),
            [true]
        );
        // The owner named after the number: someone else's.
        assert_eq!(
            d(&["7581036 ist die PLA von unserem Kunden, unsere eigene folgt."]),
            [true]
        );
        assert_eq!(d(&["7581036 is our customer's MPN ID."]), [true]);
        assert_eq!(
            d(&["anbei die neue MPN-ID 7581036 unseres Kunden Bäckerei Huber."]),
            [true]
        );
        // The customer as the one who has it, before the number.
        assert_eq!(
            d(&["our customer Contoso Ltd already has the MPN ID 7581036 - do you need it?"]),
            [true]
        );
        assert_eq!(
            d(&["unser Kunde hat die MPN-ID 7581036, brauchen Sie die?"]),
            [true]
        );
        assert_eq!(d(&["the end customer's partner ID is 7581036."]), [true]);
        // A customer in the sentence, the ID claimed as ours after it.
        assert_eq!(
            d(&["Unser Kunde hat bereits bestellt, unsere neue MPN-ID ist 7581036."]),
            [false]
        );
        assert_eq!(
            d(&["Wir haben die neue MPN-ID 7581036 bekommen, bitte für alle Kunden eintragen."]),
            [false]
        );
        assert_eq!(
            d(&["Please apply 7581036 to all subscriptions of our customers."]),
            [false]
        );
        // "für uns" claims it, and "our" after a subsidiary does.
        assert_eq!(
            d(&["Unser Kunde ist selbst Partner, für uns gilt ab sofort die MPN-ID 6348215."]),
            [false]
        );
        assert_eq!(
            d(&["unsere MPN-ID: 3190846 - ist die bei Ihnen noch richtig hinterlegt?"]),
            [true]
        );
        // Not disowned: a correction after "ignore my last mail", the old ID
        // withdrawn after the new one, and a polite question with the new ID.
        assert_eq!(
            d(&["Ignore my last mail, the right one is 7245546."]),
            [false]
        );
        assert_eq!(
            d(&["Neue MPN-ID: 6284913 - die alte bitte nicht mehr verwenden."]),
            [false]
        );
        assert_eq!(
            d(&["Können Sie unsere neue Partner-ID 6284913 hinterlegen?"]),
            [false]
        );
        assert_eq!(d(&["Die neue MPN-ID ist 6284913, ist das so ok?"]), [false]);
        // Another party is named, but the author claims the number as their own.
        assert_eq!(
            d(&["As the UK subsidiary of Harbour Group we re-registered, and our new location ID is 7401158."]),
            [false]
        );
        assert_eq!(
            d(&["der Test im Partner Center war erfolgreich, unsere neue Partner-ID ist 6011527."]),
            [false]
        );
        assert_eq!(
            d(&["als indirekter Anbieter steht dort Nordwind mit der Partner-ID 5001877."]),
            [true]
        );
    }

    #[test]
    fn corrections_and_labels_with_their_own_value() {
        let f = read(&[
            "Our new MPN ID is 7318842.",
            "",
            "P.S. Sorry, typo above - it's 7318824.",
        ]);
        assert!(!f[0].correction);
        assert!(f[1].correction && f[1].temporal == Temporal::New);
        let f = read(&["Nachtrag: Zahlendreher! Richtig ist 6405581."]);
        assert!(f[0].correction);
        // The distractor "Mandanten" labels the host name after it, not the number.
        let f = read(&[
            "die neue PLA für den neuen Mandanten x2025.onmicrosoft.example lautet 6830278.",
        ]);
        assert_eq!((f.len(), f[0].distractor.as_deref()), (1, None));
        assert_eq!(f[0].temporal, Temporal::New);
    }

    #[test]
    fn shapes() {
        let t = |d: &str| Token {
            start: 0,
            end: d.len(),
            digits: d.to_string(),
            separated: false,
        };
        assert_eq!(shape_of(&t("1234567")), Shape::Placeholder);
        assert_eq!(shape_of(&t("7654321")), Shape::Placeholder);
        assert_eq!(shape_of(&t("0841276")), Shape::LeadingZero);
        assert_eq!(shape_of(&t("6284913")), Shape::Plain);
    }

    #[test]
    fn sentences() {
        assert_eq!(sentence_start("Zahlendreher passiert. Die richtige "), 22);
        assert_eq!(sentence_start("Nr. 5 und z. B. "), 0);
        assert_eq!(sentence_end(" as our ID (PGA). The location"), 16);
        assert_eq!(sentence_end(" Tel. 123"), 9);
    }

    fn read(lines: &[&str]) -> Vec<Found> {
        let block = Block {
            lines: lines
                .iter()
                .map(|t| Line {
                    text: t.to_string(),
                    source: Source::Body,
                })
                .collect(),
            html: false,
        };
        find("", Source::Subject, &[block])
    }

    #[test]
    fn context_reading() {
        let f = read(&["Die richtige MPN-ID lautet 6514820 (nicht 6514802)."]);
        assert_eq!(f[0].temporal, Temporal::New);
        assert_eq!(f[0].strength, Strength::Strong);
        assert_eq!(f[1].temporal, Temporal::Negated);

        let f = read(&[
            "hier die Änderung unserer Microsoft-Partner-ID:",
            "",
            "alt: 4039875",
            "neu: 6057318",
        ]);
        assert_eq!(
            (f[0].temporal, f[0].strength),
            (Temporal::Old, Strength::Strong)
        );
        assert_eq!(
            (f[1].temporal, f[1].strength),
            (Temporal::New, Strength::Strong)
        );

        let f = read(&["Re your ticket 7702145 - order 4471920 for our customer."]);
        assert_eq!(f[0].distractor.as_deref(), Some("ticket"));
        assert_eq!(f[1].distractor.as_deref(), Some("order"));

        let f = read(&["Partner Center shows 7716204 as our Microsoft AI Cloud Partner Program ID for the global account (PGA). The location ID for our office is 7716229."]);
        assert_eq!((f[0].strength, f[0].role), (Strength::Strong, Role::Pga));
        assert_eq!((f[1].strength, f[1].role), (Strength::Strong, Role::Pla));

        let f = read(&["MPN-ID: 6120344 (PGA) und 6120359 (PLA)"]);
        assert_eq!((f[0].role, f[1].role), (Role::Pga, Role::Pla));

        let f = read(&["Ihre neue Standort-ID (PLA-ID, z. B. 1234567)"]);
        assert_eq!(f[0].temporal, Temporal::Example);

        // A full stop right after a number ends its sentence: the role word in the
        // next sentence is not this number's.
        let f = read(&[
            "Wir haben zwei IDs bekommen: 6839201 und 6839218. Eine ist wohl für den Hauptsitz.",
        ]);
        assert_eq!((f[0].role, f[1].role), (Role::Unsaid, Role::Unsaid));
        // A thousands dot inside a number is not a full stop.
        let f = read(&["Partner-ID lautet 6.951.372 (Standort)."]);
        assert_eq!((f[0].id.as_str(), f[0].role), ("6951372", Role::Pla));
    }

    #[test]
    fn red_team_context_cases() {
        // A shared plural keyword gives every listed number the same role.
        let f = read(&["zwei Standort-IDs, 6732095 für Trier und 6732112 für Luxemburg."]);
        assert_eq!((f[0].role, f[1].role), (Role::Pla, Role::Pla));
        // The location named after the second number is not the first one's.
        let f =
            read(&["Die MPN-ID des Hauptkontos ist 6402552, die des Standorts München 6402569."]);
        assert_eq!((f[0].role, f[1].role), (Role::Pga, Role::Pla));
        // "was X, now Y" and "(ehemals X)".
        let f = read(&["our partner ID was 4760018, now it's 7178395."]);
        assert_eq!(
            (f[0].temporal, f[1].temporal),
            (Temporal::Old, Temporal::New)
        );
        let f = read(&["the new ID we received was 7178395."]);
        assert_eq!(f[0].temporal, Temporal::New);
        let f = read(&["Partner-ID: 6902258 (ehemals 956311)"]);
        assert_eq!(f[1].temporal, Temporal::Old);
        // "new" a few words before the keyword.
        let f = read(&["Our new location account ID is 7015592."]);
        assert_eq!(
            (f[0].strength, f[0].temporal),
            (Strength::Strong, Temporal::New)
        );
        // "X durch Y", "von X auf Y"; a count after "to" is no replacement.
        let f = read(&["bitte ersetzen Sie die Partner-ID 4417206 durch 6409981."]);
        assert_eq!(
            (f[0].temporal, f[1].temporal),
            (Temporal::Old, Temporal::New)
        );
        let f = read(&["unsere MPN-ID ändert sich von 5377104 auf 6521136."]);
        assert_eq!(
            (f[0].temporal, f[1].temporal),
            (Temporal::Old, Temporal::New)
        );
        let f = read(&["move Partner ID 6409981 to 12 customers"]);
        assert_eq!(f[0].temporal, Temporal::Unsaid);
        assert!(read(&["6813097"])[0].alone);
        // The old ID on the next line of a hard-wrapped sentence, after "(".
        let f = read(&[
            "die neue Partner-ID unseres Standorts",
            "in Regensburg lautet 6712309, die alte",
            "(5377104) ist ab sofort ungültig.",
        ]);
        assert_eq!(
            (f[0].temporal, f[1].temporal),
            (Temporal::New, Temporal::Old)
        );
        // "wurde von Microsoft widerrufen" says old without the word "alt".
        let f = read(&["unsere MPN-ID 4417206 wurde von Microsoft widerrufen."]);
        assert_eq!(f[0].temporal, Temporal::Old);
        assert!(!read(&["Ticket 6813097"])[0].alone);
    }

    #[test]
    fn evidence_shows_the_number_of_a_long_line() {
        let line = format!(
            "{}neue Partner-ID 6173402 {}",
            "Wort ".repeat(60),
            "mehr ".repeat(60)
        );
        let start = line.find("6173402").unwrap();
        let e = evidence_around(&line, start, start + 7);
        assert!(e.contains("neue Partner-ID 6173402 mehr"), "{e}");
        assert!(e.starts_with("… Wort") && e.ends_with("mehr …"), "{e}");
        assert!(e.len() < 220, "{e}");
        assert_eq!(evidence_around("  kurz: 6173402  ", 8, 15), "kurz: 6173402");
    }

    #[test]
    fn labels_said_after_the_number() {
        // The ID before its name: "neue PLA" is said of the first number only, and
        // "seit <date> … deaktiviert" makes the second old.
        let f = read(&[
            "7581036 ist unsere neue PLA, die 4039875 ist seit 01.12.2025 von Microsoft deaktiviert.",
        ]);
        assert_eq!(
            (f[0].temporal, f[1].temporal),
            (Temporal::New, Temporal::Old)
        );
        // Each number's own name gives its role, not the one before it.
        let f = read(&["7536110 is our PGA (global account) and 7536127 is the PLA for London."]);
        assert_eq!((f[0].role, f[1].role), (Role::Pga, Role::Pla));
        assert_eq!(f[1].keyword.as_deref(), Some("PLA"));
        // "und X die alte", "die X bitte löschen", "X can be deleted"; new words in
        // the predicate that names the number ("ist ab sofort unsere Partner-ID").
        let f = read(&["7581036 ist unsere neue PLA und 4039875 die alte."]);
        assert_eq!(
            (f[0].temporal, f[1].temporal),
            (Temporal::New, Temporal::Old)
        );
        let f = read(&["7581036 ist ab sofort unsere Partner-ID, die 4039875 bitte löschen."]);
        assert_eq!(
            (f[0].temporal, f[1].temporal),
            (Temporal::New, Temporal::Old)
        );
        let f = read(&["7581036 can now be used, 4039875 can be deleted."]);
        assert_eq!(
            (f[0].temporal, f[1].temporal),
            (Temporal::Unsaid, Temporal::Old)
        );
        // Two locations named the same way stay two PLAs (a review, not a pick).
        let f = read(&["7581036 ist unsere PLA für Dresden, 7581049 die für Leipzig."]);
        assert_eq!((f[0].role, f[1].role), (Role::Pla, Role::Pla));
        // A statement running on to the next number is one clause about both.
        let f =
            read(&["die alte ID 4417206 ist ab sofort durch die neue Partner-ID 6409981 ersetzt."]);
        assert_eq!(
            (f[0].temporal, f[1].temporal),
            (Temporal::Old, Temporal::New)
        );
    }
}
