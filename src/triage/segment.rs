//! Segment: whose words is each line? The author's own text, their signature, quoted
//! history, or a forwarded message.
//!
//! Policy: quoted text (ours or theirs) never gives the new ID, so everything from the
//! first reply marker on is [`Source::Quoted`]: `>` lines, "On … wrote:" / "Am …
//! schrieb …:" attributions, Outlook's "Von:/Gesendet:/An:/Betreff:" and
//! "From:/Sent:/To:/Subject:" blocks, "-----Original Message-----" and
//! "-----Ursprüngliche Nachricht-----". A forward ("---------- Forwarded message
//! ---------", "Weitergeleitete Nachricht", "Begin forwarded message:", "Anfang der
//! weitergeleiteten Nachricht:", an Outlook header block in a "WG:"/"FW:" mail, or a
//! message/rfc822 attachment) is the author's statement and becomes
//! [`Source::Forwarded`], unless the forwarded mail is our own (From one of our
//! addresses or domains): then it is quoted too. A signature starts at "-- ", at a
//! closing phrase ("Mit freundlichen Grüßen", "Kind regards", …) or at a mobile
//! footer ("Von meinem iPhone gesendet").

use std::sync::LazyLock;

use regex::Regex;

use super::cues::regex;

use super::parse::{Origin, TextPart};

/// Where a line sits in the mail; decides whether a number on it may be the new ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Subject,
    Body,
    Signature,
    Quoted,
    Forwarded,
    ForwardedSignature,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Subject => "subject",
            Source::Body => "body",
            Source::Signature => "signature",
            Source::Quoted => "quoted",
            Source::Forwarded => "forwarded",
            Source::ForwardedSignature => "forwarded signature",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Line {
    pub text: String,
    pub source: Source,
}

/// The lines of one text of the mail.
#[derive(Clone, Debug)]
pub(crate) struct Block {
    pub lines: Vec<Line>,
    pub html: bool,
}

/// Most lines examined per text; beyond this a mail is not a reseller's note.
const MAX_LINES: usize = 5000;
/// How far below a forward marker its header block may start.
const FORWARD_HEADER_REACH: usize = 8;

static REPLY_PREFIX: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"(?i)^\s*(?:re|aw|antw|antwort|sv|vs|ref|rif|odp|r)\s*(?:\[\d+\])?\s*:")
});
static FORWARD_PREFIX: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"(?i)^\s*(?:fwd?|wg|weitergeleitet|weiterleitung|tr|rv|doorst)\s*(?:\[\d+\])?\s*:")
});
static FORWARD_MARKER: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?ix)^(?:
            -{2,}\s*(?:forwarded\s+message|weitergeleitete\s+(?:nachricht|e-?mail)|message\s+transféré|mensaje\s+reenviado)\s*-*
          | (?:begin\s+forwarded\s+message|anfang\s+der\s+weitergeleiteten\s+(?:nachricht|e-?mail))\s*:?
        )$",
    )
});
static ORIGINAL_MARKER: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?ix)^-{2,}\s*(?:original\s+message|ursprüngliche\s+nachricht|original-?nachricht|message\s+d'origine|mensaje\s+original)\s*-*$",
    )
});
static ATTRIBUTION: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)^.{0,300}\b(?:wrote|schrieb|a\s+écrit|escribió|ha\s+scritto|schreef|skrev)(?:[^0-9A-Za-z].{0,119})?:$",
    )
});
static HEADER_FROM: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?i)^\*?(?:von|from|de|da|van|fra)\s*:\*?\s*\S"));
static HEADER_OTHER: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)^\*?(?:gesendet|sent|date|datum|an|to|cc|betreff|subject|objet|envoyé|onderwerp|verzonden|aan)\s*:",
    )
});
static INLINE_HEADER_BLOCK: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?i)^(?:von|from)\s*:.{1,200}\b(?:gesendet|sent|date|datum)\s*:"));
static CLOSING: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?ix)^(?:
            (?:mit\s+)?(?:freundlich\w*|best\w*|herzlich\w*|lieb\w*|viel\w*|schön\w*|sonnig\w*)?\s*(?:grüß\w*|grüss\w*|gruß|gruss)(?:[^0-9A-Za-z].*)?
          | .{0,25}\b(?:gruß|gruss|grüße|grüsse|grüßen|grüssen|regards)(?:[^0-9A-Za-z].*)?
          | (?:mfg|vg|lg|bg|beste\s+grüße|kind\s+regards|best\s+regards|warm\s+regards|regards|best|cheers|thanks|thank\s+you|many\s+thanks|thanks\s+again|(?:many\s+)?thanks\s+in\s+advance|thank\s+you\s+in\s+advance|best\s+wishes|all\s+the\s+best|(?:vielen\s+)?dank\s+im\s+voraus|danke\s+(?:im\s+voraus|vorab)|sincerely|yours\s+sincerely|yours\s+faithfully|yours|danke|vielen\s+dank|besten\s+dank|danke\s+schön|dankeschön|thx|br|ciao|tschüss)\s*[,.!]*
        )$",
    )
});
static MOBILE_FOOTER: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)^(?:sent\s+from\s+my\b|von\s+meinem\s+.{1,40}\s+gesendet|gesendet\s+von\s+meinem\b|get\s+outlook\s+for\b|outlook\s+für\s+\w+\s+beziehen|diese\s+nachricht\s+wurde\s+von\s+meinem)",
    )
});
/// A company's legal form ("GmbH", "Ltd", "B.V.", "GmbH & Co. KG"), case-sensitive
/// because "AG", "AS" or "SE" in lower case are ordinary words.
static LEGAL_FORM: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"\b(?:GmbH|AG|KG|OHG|UG|GbR|SE|e\.\s?K\.|Ltd|LTD|Limited|LLC|Inc|PLC|plc|B\.V\.|BV|N\.V\.|AS|A/S|AB|Pty|S\.A\.|Oy)(?:\b|$)",
    )
});
/// The separators of a business-card line: "Anton Ketterer | Firma GmbH · Straße 1".
static CARD_SEPARATOR: LazyLock<Regex> = LazyLock::new(|| regex(r"\s[|·•]\s"));
/// A postscript: the author writes again below the signature ("P.S. …", "PS:",
/// "Nachtrag:").
static POSTSCRIPT: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?i)^(?:p\.\s?(?:p\.\s?)?s\.|ps\s*:|pps\s*:|nachtrag\s*:)"));
static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| regex(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"));

/// Whose text the subject is: a reply's subject is ours (quoted), a forward's subject
/// belongs to the forwarded mail.
pub(crate) fn subject_source(subject: &str) -> Source {
    if REPLY_PREFIX.is_match(subject) {
        Source::Quoted
    } else if FORWARD_PREFIX.is_match(subject) {
        Source::Forwarded
    } else {
        Source::Subject
    }
}

/// The subject line of a quoted header block ("Subject: …", "Betreff: …"), also
/// behind '>' or in bold ("*Betreff:*").
static QUOTED_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"(?i)^[>\s]*\*?(?:subject|betreff|objet|onderwerp|asunto|oggetto)\s*:\*?\s*(.*\S)")
});

/// A reply's subject where the author wrote into it ("RE: <our subject> - ours is
/// 7519064", or a new subject altogether), or `None` when it only repeats the
/// subject of the mail it answers (then it is ours, see [`subject_source`]).
///
/// Only decidable when the quote keeps its header block: the subject of the
/// answered mail is its first quoted "Subject:" line. The author's subject is then
/// read as the author's, with every number that stands anywhere in the quote
/// blanked out: a number repeated from our mail (its old ID, the example
/// "1234567"), or the tail of a subject line the quote wrapped, is no statement of
/// the author's.
pub(crate) fn edited_reply_subject(subject: &str, blocks: &[Block]) -> Option<String> {
    let quoted = || {
        blocks
            .iter()
            .flat_map(|b| &b.lines)
            .filter(|l| l.source == Source::Quoted)
    };
    let original = quoted().find_map(|l| {
        QUOTED_SUBJECT
            .captures(&l.text)
            .and_then(|c| c.get(1))
            .map(|m| m.as_str())
    })?;
    let words = |s: &str| {
        s.split_whitespace()
            .map(str::to_lowercase)
            .collect::<Vec<_>>()
    };
    let mine = strip_subject_prefixes(subject);
    if !mine.bytes().any(|b| b.is_ascii_digit())
        || words(mine) == words(strip_subject_prefixes(original))
    {
        return None;
    }
    let in_quote: std::collections::HashSet<&str> = quoted()
        .flat_map(|l| l.text.split(|c: char| !c.is_ascii_digit()))
        .filter(|run| !run.is_empty())
        .collect();
    let mut out = String::with_capacity(mine.len());
    let mut rest = mine;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        out.push_str(&rest[..start]);
        let run = &rest[start..];
        let len = run.find(|c: char| !c.is_ascii_digit()).unwrap_or(run.len());
        if in_quote.contains(&run[..len]) {
            out.extend(std::iter::repeat_n(' ', len));
        } else {
            out.push_str(&run[..len]);
        }
        rest = &run[len..];
    }
    out.push_str(rest);
    Some(out)
}

/// The subject without its reply and forward prefixes ("AW: WG: Re[2]: …").
fn strip_subject_prefixes(subject: &str) -> &str {
    let mut s = subject.trim();
    while let Some(m) = REPLY_PREFIX.find(s).or_else(|| FORWARD_PREFIX.find(s)) {
        s = s[m.end()..].trim_start();
    }
    s
}

/// Our own addresses and their domains, lower-case, to recognise our own mails in
/// forwarded or attached parts.
pub(crate) struct Own {
    pub addresses: Vec<String>,
    pub domains: Vec<String>,
}

impl Own {
    pub fn new(addresses: &[String]) -> Own {
        let addresses: Vec<String> = addresses.iter().map(|a| a.trim().to_lowercase()).collect();
        let mut domains: Vec<String> = addresses
            .iter()
            .filter_map(|a| a.rsplit_once('@').map(|(_, d)| d.to_string()))
            .collect();
        domains.sort();
        domains.dedup();
        Own { addresses, domains }
    }

    pub fn is_own(&self, address: &str) -> bool {
        let address = address.trim().to_lowercase();
        self.addresses.contains(&address)
            || address
                .rsplit_once('@')
                .is_some_and(|(_, d)| self.domains.iter().any(|own| own == d))
    }
}

/// Splits one text of the mail into sourced lines.
///
/// `may_forward`: the subject is not a reply's ("AW:", "Re:"), so a header block or
/// "Original Message" marker below the author's text introduces a forwarded mail
/// (people rewrite a forward's subject, rarely a reply's); our own mail in it is
/// still quoted.
pub(crate) fn segment(part: &TextPart, may_forward: bool, own: &Own) -> Block {
    let raw_lines: Vec<&str> = part.text.lines().take(MAX_LINES).collect();
    let mut state = match &part.origin {
        Origin::Main => Source::Body,
        Origin::Attached { from: Some(from) } if own.is_own(from) => Source::Quoted,
        Origin::Attached { .. } => Source::Forwarded,
    };
    let mut lines = Vec::with_capacity(raw_lines.len());
    // Lines left in which a header block belongs to the forward marker above it.
    let mut forward_reach = 0usize;
    let mut seen_forward = !matches!(part.origin, Origin::Main);
    let mut author_lines = 0usize;
    // The second line of an attribution wrapped over two lines.
    let mut attribution_tail = false;
    // An attribution whose quote is marked line by line: the author may answer
    // between its lines.
    let mut answers_between = false;
    // A forward the client marked with '>' ("> Anfang der weitergeleiteten
    // Nachricht:", iPhone and Apple Mail do): its '>' lines are forwarded, not quoted.
    let mut quoted_forward: Option<Source> = None;
    for i in 0..raw_lines.len() {
        let t = raw_lines[i].trim();
        let wrapped_attribution = std::mem::take(&mut attribution_tail);
        // Glued to a quoted line: a client that wrapped the quote without repeating
        // '>'. The author's own answer below a quote starts after a blank line.
        let glued_to_quote =
            !t.is_empty() && i > 0 && raw_lines[i - 1].trim_start().starts_with('>');
        if !t.is_empty() && !t.starts_with('>') {
            quoted_forward = None;
        }
        // A '>' line is quoted, but the author may answer below it, so the state
        // stays.
        let source = if let Some(forwarded) = quoted_forward {
            forwarded
        } else if may_forward
            && !seen_forward
            && matches!(state, Source::Body | Source::Signature)
            && t.starts_with('>')
            && FORWARD_MARKER.is_match(unquoted(t))
        {
            let below: Vec<&str> = raw_lines[i + 1..]
                .iter()
                .take(FORWARD_HEADER_REACH)
                .map(|l| unquoted(l.trim()))
                .collect();
            let forwarded = forward_state(&below, 0, own);
            seen_forward = true;
            quoted_forward = Some(forwarded);
            forwarded
        } else if state == Source::Quoted
            || wrapped_attribution
            || t.starts_with('>')
            || glued_to_quote
        {
            Source::Quoted
        } else if FORWARD_MARKER.is_match(t) {
            state = forward_state(&raw_lines, i + 1, own);
            seen_forward = true;
            forward_reach = FORWARD_HEADER_REACH;
            state
        } else if ORIGINAL_MARKER.is_match(t) {
            state = if may_forward && !seen_forward {
                seen_forward = true;
                forward_reach = FORWARD_HEADER_REACH;
                forward_state(&raw_lines, i + 1, own)
            } else {
                Source::Quoted
            };
            state
        } else if is_attribution(&raw_lines, i) {
            // "On … wrote:" followed by '>' lines: the quote is marked line by line,
            // and the author may answer below it (interleaved or bottom-posted), so
            // only the '>' lines are quoted. Without '>' everything below is quoted.
            if prefix_quote_follows(&raw_lines, i) {
                answers_between = true;
            } else {
                state = Source::Quoted;
            }
            attribution_tail = !t.ends_with(':');
            Source::Quoted
        } else if is_header_block(&raw_lines, i) {
            if forward_reach > 0 {
                // The header block of the forward announced just above.
            } else if may_forward && !seen_forward {
                seen_forward = true;
                state = forward_state(&raw_lines, i, own);
            } else {
                state = Source::Quoted;
            }
            forward_reach = 0;
            state
        } else {
            if state == Source::Signature && POSTSCRIPT.is_match(t) {
                state = Source::Body;
            }
            if is_signature_start(t, author_lines, part.html) {
                state = match state {
                    Source::Body => Source::Signature,
                    Source::Forwarded => Source::ForwardedSignature,
                    other => other,
                };
            }
            state
        };
        // The author's closing above the quote ("Gruß, Ute") made the state the
        // signature; an answer written between the quoted lines below it is the
        // author's text again ("> 3. Senden Sie uns Ihre neue ID" / "Hier: …").
        if answers_between && t.starts_with('>') && state == Source::Signature {
            state = Source::Body;
            author_lines = 0;
        }
        forward_reach = forward_reach.saturating_sub(1);
        if source == Source::Body && !t.is_empty() {
            author_lines += 1;
        }
        lines.push(Line {
            text: raw_lines[i].to_string(),
            source,
        });
    }
    Block {
        lines,
        html: part.html,
    }
}

/// The sender addresses of the forwarded header blocks in `block` ("Von: Peter
/// Hansen <p.hansen@foerde-it.example>"), lower-case.
pub(crate) fn forwarded_authors(block: &Block) -> Vec<String> {
    block
        .lines
        .iter()
        .filter(|l| l.source == Source::Forwarded)
        .map(|l| unquoted(l.text.trim()))
        .filter(|t| HEADER_FROM.is_match(t))
        .filter_map(|t| EMAIL.find(t).map(|m| m.as_str().to_lowercase()))
        .collect()
}

/// A line without its quote marks ("> > text" → "text").
fn unquoted(line: &str) -> &str {
    line.trim_start_matches(['>', ' '])
}

/// Forwarded, unless the forwarded header block (within reach of `from`) names one
/// of our own addresses as its sender: our own text never counts.
fn forward_state(lines: &[&str], from: usize, own: &Own) -> Source {
    for line in lines.iter().skip(from).take(FORWARD_HEADER_REACH) {
        let t = line.trim();
        if HEADER_FROM.is_match(t) {
            let is_own = EMAIL.find_iter(t).any(|m| own.is_own(m.as_str()));
            return if is_own {
                Source::Quoted
            } else {
                Source::Forwarded
            };
        }
    }
    Source::Forwarded
}

/// Whether the first non-blank line after the attribution at `i` (or after its
/// second line, when wrapped) is a '>' quote.
fn prefix_quote_follows(lines: &[&str], i: usize) -> bool {
    lines
        .iter()
        .skip(i + 1)
        .take(4)
        .map(|l| l.trim())
        .find(|l| !l.is_empty() && !l.ends_with(':') && !l.ends_with(">:"))
        .is_some_and(|l| l.starts_with('>'))
}

fn is_attribution(lines: &[&str], i: usize) -> bool {
    let t = lines[i].trim();
    if t.len() > 400 {
        return false;
    }
    if t.ends_with(':') && ATTRIBUTION.is_match(t) {
        return true;
    }
    // Gmail and Thunderbird wrap a long attribution over two lines.
    let starts_like = {
        let lower = t.get(..3).unwrap_or("").to_ascii_lowercase();
        lower.starts_with("on ") || lower.starts_with("am ") || lower.starts_with("le ")
    };
    if starts_like {
        if let Some(next) = lines.get(i + 1) {
            let joined = format!("{} {}", t, next.trim());
            return joined.len() <= 400 && joined.ends_with(':') && ATTRIBUTION.is_match(&joined);
        }
    }
    false
}

/// An Outlook-style header block: "Von:" followed by at least two of
/// "Gesendet:/An:/Betreff:" (or the English names) within a few lines, or all of it on
/// one line as some clients write it.
fn is_header_block(lines: &[&str], i: usize) -> bool {
    let t = lines[i].trim();
    if !HEADER_FROM.is_match(t) {
        return false;
    }
    if INLINE_HEADER_BLOCK.is_match(t) {
        return true;
    }
    let others = lines
        .iter()
        .skip(i + 1)
        .take(5)
        .filter(|l| HEADER_OTHER.is_match(l.trim()))
        .count();
    others >= 2
}

fn is_signature_start(t: &str, author_lines: usize, html: bool) -> bool {
    if t == "--" || t == "-- " || t == "—" {
        return true;
    }
    if MOBILE_FOOTER.is_match(t) {
        return true;
    }
    // A closing phrase ends the message only after some text of the author, and is
    // short: "Danke für Ihre schnelle Hilfe bei der Umstellung" is not a closing.
    if author_lines > 0 && t.chars().count() <= 45 && CLOSING.is_match(t) {
        return true;
    }
    // A signature without a closing phrase still starts with a card line: name or
    // address and the company with its legal form, joined by '|' or '·'. A sentence
    // naming the company has no such separator. Not in text converted from HTML,
    // whose table rows are joined with the same " | ".
    !html
        && author_lines > 0
        && t.len() <= 200
        && CARD_SEPARATOR.is_match(t)
        && LEGAL_FORM.is_match(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(text: &str, fwd: bool) -> Vec<(String, Source)> {
        let part = TextPart {
            text: text.to_string(),
            origin: Origin::Main,
            html: false,
        };
        let own = Own::new(&["cloud@nordwind-dist.example".to_string()]);
        segment(&part, fwd, &own)
            .lines
            .into_iter()
            .map(|l| (l.text, l.source))
            .collect()
    }

    fn source_of(all: &[(String, Source)], text: &str) -> Source {
        all.iter()
            .find(|(t, _)| t.contains(text))
            .map(|(_, s)| *s)
            .unwrap_or_else(|| panic!("no line {text}"))
    }

    #[test]
    fn outlook_reply_block_is_quoted() {
        let s = sources(
            "Neu: 1\n\nGruß\nX\n\nVon: A <a@b.example>\nGesendet: Montag\nAn: B\nBetreff: C\n\nalt: 2\n",
            false,
        );
        assert_eq!(source_of(&s, "Neu: 1"), Source::Body);
        assert_eq!(source_of(&s, "X"), Source::Signature);
        assert_eq!(source_of(&s, "alt: 2"), Source::Quoted);
    }

    #[test]
    fn outlook_block_in_a_forward_is_forwarded_unless_ours() {
        let text = "Siehe unten.\n\nVon: Microsoft <pc@microsoft.example>\nGesendet: Montag\nAn: B\nBetreff: C\n\nPartner-ID: 1\n";
        assert_eq!(
            source_of(&sources(text, true), "Partner-ID"),
            Source::Forwarded
        );
        let ours = text.replace("pc@microsoft.example", "cloud@nordwind-dist.example");
        assert_eq!(
            source_of(&sources(&ours, true), "Partner-ID"),
            Source::Quoted
        );
    }

    #[test]
    fn gmail_forward_and_attribution() {
        let s = sources(
            "Hi\n\n---------- Forwarded message ---------\nFrom: MS <x@microsoft.example>\nDate: Mon\nSubject: S\nTo: <a@b>\n\nPartnerID: 1\n",
            false,
        );
        assert_eq!(source_of(&s, "PartnerID"), Source::Forwarded);
        let s = sources("Top 1\n\nOn Mon, 10 Nov 2025 at 15:20, Team <cloud@nordwind-dist.example>\nwrote:\n\n> x 2\nafter\n", false);
        assert_eq!(source_of(&s, "Top 1"), Source::Body);
        assert_eq!(source_of(&s, "after"), Source::Quoted);
        let s = sources(
            "Top\nAm 10.11.2025 um 15:02 schrieb Nordwind Cloud Team:\nalt\n",
            false,
        );
        assert_eq!(source_of(&s, "alt"), Source::Quoted);
    }

    #[test]
    fn signatures() {
        let s = sources("Text\n-- \nMPN-ID 2\n", false);
        assert_eq!(source_of(&s, "MPN-ID"), Source::Signature);
        let s = sources("Text\nMit freundlichen Grüßen\nName\nTel. 1\n", false);
        assert_eq!(source_of(&s, "Tel."), Source::Signature);
        let s = sources("Danke,\nunsere neue ID ist 1\n", false);
        assert_eq!(source_of(&s, "neue ID"), Source::Body);
    }

    #[test]
    fn a_postscript_is_the_authors_again() {
        let s = sources(
            "ID 1\n\nBest,\nSanne\n\nP.S. Sorry, typo above - it's 2.\n",
            false,
        );
        assert_eq!(source_of(&s, "Sanne"), Source::Signature);
        assert_eq!(source_of(&s, "P.S."), Source::Body);
    }

    #[test]
    fn a_card_line_starts_the_signature() {
        let s = sources(
            "die neue ID ist 1.\n\nAnton Ketterer | Schwarzwald Bürotechnik GmbH\nMicrosoft Partner ID 2\n",
            false,
        );
        assert_eq!(source_of(&s, "neue ID"), Source::Body);
        assert_eq!(source_of(&s, "Partner ID 2"), Source::Signature);
        let s = sources(
            "Wir, die Schwarzwald Bürotechnik GmbH, haben die ID 1.\nsee you | as agreed\n",
            false,
        );
        assert_eq!(source_of(&s, "see you"), Source::Body);
    }

    #[test]
    fn subject_sources() {
        assert_eq!(subject_source("AW: Neue ID"), Source::Quoted);
        assert_eq!(subject_source("RE: Order 1"), Source::Quoted);
        assert_eq!(subject_source("WG: Willkommen"), Source::Forwarded);
        assert_eq!(subject_source("Fwd: Welcome"), Source::Forwarded);
        assert_eq!(subject_source("Neue MPN-ID: 5873104"), Source::Subject);
        assert_eq!(subject_source("Antwort erbeten: neue ID"), Source::Subject);
    }

    #[test]
    fn answers_below_a_prefixed_quote_are_the_authors() {
        let s = sources(
            "Hi\n\nOn 10 Nov 2025, at 15:20, Team <cloud@nordwind-dist.example> wrote:\n\n> old 1\n> more\nwrapped 2\n\nHere it is: 3\n\n> tail 4\n",
            false,
        );
        assert_eq!(source_of(&s, "old 1"), Source::Quoted);
        assert_eq!(source_of(&s, "wrapped 2"), Source::Quoted);
        assert_eq!(source_of(&s, "Here it is"), Source::Body);
        assert_eq!(source_of(&s, "tail 4"), Source::Quoted);
        // Without '>' lines the attribution still quotes everything below it.
        let s = sources("Top\nOn Mon, Team wrote:\nold 1\n", false);
        assert_eq!(source_of(&s, "old 1"), Source::Quoted);
        // Gmail's attribution wrapped over two lines, then a '>' quote.
        let s = sources("Top\nAm Mo., 10. Nov. 2025 um 15:02 Uhr schrieb Team <\ncloud@nordwind-dist.example>:\n\n> a 1\n", false);
        assert_eq!(source_of(&s, "cloud@"), Source::Quoted);
    }

    #[test]
    fn a_header_block_under_a_plain_subject_is_a_forward() {
        let text = "Anbei.\n\n________________________________\nVon: Microsoft <pc@microsoft.example>\nGesendet: Montag\nAn: B\nBetreff: C\n\nPartner-ID: 1\n";
        assert_eq!(
            source_of(&sources(text, true), "Partner-ID"),
            Source::Forwarded
        );
        assert_eq!(
            source_of(&sources(text, false), "Partner-ID"),
            Source::Quoted
        );
    }
}
