//! Parse: raw bytes to the facts triage needs, with mail-parser doing the MIME work.
//!
//! Owns: the header facts ([`Headers`]), the raw top-level header fields that
//! classification and DMARC read, and the readable texts of the mail: the main body
//! (text/plain preferred, HTML converted when that is all there is) and the bodies of
//! attached messages (message/rfc822, i.e. forwards as attachment).
//!
//! Policy against blowups: each text is cut to [`MAX_TEXT_BYTES`], at most
//! [`MAX_TEXTS`] texts are kept, nesting of attached messages is followed to
//! [`MAX_DEPTH`] levels, and header values are cut to [`MAX_HEADER_BYTES`]. A parser
//! panic (mail-parser is third-party code fed hostile input) becomes "unparseable",
//! never a crash of the daemon.

use std::borrow::Cow;

use mail_parser::{Address, HeaderValue, Message, MessageParser, MimeHeaders, PartType};

use super::html::html_to_text;
use super::Headers;

/// Longest text (per body part) that is examined; IDs sit near the top of a mail.
pub(crate) const MAX_TEXT_BYTES: usize = 256 * 1024;
/// Most text bodies examined per mail (main body parts plus attached messages).
pub(crate) const MAX_TEXTS: usize = 16;
/// Deepest message/rfc822 nesting followed.
pub(crate) const MAX_DEPTH: usize = 3;
/// Longest header value kept for classification.
const MAX_HEADER_BYTES: usize = 8 * 1024;
/// A text/plain body shorter than this is treated as a stub when an HTML body exists.
const STUB_TEXT_CHARS: usize = 16;

/// A plain part shorter than this that only says "view this as HTML" is a stub too.
const STUB_NOTICE_CHARS: usize = 300;

/// "Diese Nachricht enthält HTML-Inhalte …", "This is an HTML message …": ERP and
/// CRM mailers put such a notice in the plain alternative and the content in HTML.
fn says_view_as_html(text: &str) -> bool {
    text.to_ascii_lowercase().contains("html")
}

/// Where a text of the mail comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The mail's own body.
    Main,
    /// A message attached as message/rfc822, with its From address (lower-case).
    Attached { from: Option<String> },
}

#[derive(Clone, Debug)]
pub(crate) struct TextPart {
    pub text: String,
    pub origin: Origin,
    /// Converted from HTML (shown as source "html" to the operator).
    pub html: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub headers: Headers,
    /// Top-level header fields: lower-case name and unfolded raw value, in order.
    pub fields: Vec<(String, String)>,
    /// "type/subtype" of the top-level body, lower-case.
    pub content_type: String,
    pub texts: Vec<TextPart>,
    /// The HTML alternative of the mail's own body when its plain text was read
    /// instead (raw HTML, cut like a text), to check that both say the same ID.
    pub html_alternative: Option<String>,
}

impl Parsed {
    /// All values of a top-level header field (case-insensitive name).
    pub fn field_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn has_field(&self, name: &str) -> bool {
        self.field_values(name).next().is_some()
    }
}

/// Parses `raw`; `None` when mail-parser finds no message or panics.
pub(crate) fn parse(raw: &[u8]) -> Option<Parsed> {
    let message = std::panic::catch_unwind(|| MessageParser::default().parse(raw)).ok()??;
    let mut parsed = Parsed {
        headers: header_facts(&message),
        fields: raw_fields(&message),
        content_type: content_type_of(&message),
        texts: Vec::new(),
        html_alternative: None,
    };
    collect_texts(&message, Origin::Main, 0, &mut parsed.texts);
    let main_is_plain = parsed
        .texts
        .iter()
        .filter(|t| t.origin == Origin::Main)
        .all(|t| !t.html);
    if main_is_plain && message.html_body != message.text_body {
        let html: String = message
            .html_body
            .iter()
            .filter_map(|&id| match &message.parts.get(id as usize)?.body {
                PartType::Html(h) => Some(cut(h, MAX_TEXT_BYTES)),
                _ => None,
            })
            .take(MAX_TEXTS)
            .collect();
        parsed.html_alternative = (!html.is_empty()).then_some(html);
    }
    Some(parsed)
}

fn content_type_of(message: &Message<'_>) -> String {
    match message.content_type() {
        Some(ct) => {
            let sub = ct.subtype().unwrap_or("");
            format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase()
        }
        None => "text/plain".to_string(),
    }
}

fn raw_fields(message: &Message<'_>) -> Vec<(String, String)> {
    message
        .headers_raw()
        .take(512)
        .map(|(name, value)| {
            let value = cut(value, MAX_HEADER_BYTES);
            (name.to_ascii_lowercase(), unfold(value))
        })
        .collect()
}

/// Joins folded header lines into one line with single spaces.
pub(crate) fn unfold(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `s` cut to at most `max` bytes at a char boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn first_address<'a>(addr: Option<&'a Address<'a>>) -> (Option<String>, Option<String>) {
    let Some(first) = addr.and_then(|a| a.first()) else {
        return (None, None);
    };
    let address = first
        .address()
        .map(|a| a.trim().to_lowercase())
        .filter(|a| !a.is_empty());
    let name = first
        .name()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    (address, name)
}

fn ids_of(value: &HeaderValue<'_>) -> Vec<String> {
    let strip = |s: &str| {
        s.trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string()
    };
    match value {
        HeaderValue::Text(t) => vec![strip(t)],
        HeaderValue::TextList(list) => list.iter().map(|t| strip(t)).collect(),
        _ => Vec::new(),
    }
    .into_iter()
    .filter(|s| !s.is_empty())
    .take(128)
    .collect()
}

fn header_facts(message: &Message<'_>) -> Headers {
    let (from, from_name) = first_address(message.from());
    let (reply_to, _) = first_address(message.reply_to());
    let subject = message.subject().map(unfold).unwrap_or_default();
    Headers {
        message_id: message
            .message_id()
            .map(|m| {
                m.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
            .filter(|m| !m.is_empty()),
        from,
        from_name,
        reply_to,
        subject: cut(&subject, MAX_HEADER_BYTES).to_string(),
        references: ids_of(message.references()),
        in_reply_to: ids_of(message.in_reply_to()).into_iter().next(),
        date: message.date().map(|d| d.to_timestamp()),
    }
}

/// The readable texts of `message`: its body (plain preferred over HTML) and,
/// recursively, the bodies of attached messages.
fn collect_texts(message: &Message<'_>, origin: Origin, depth: usize, out: &mut Vec<TextPart>) {
    if out.len() >= MAX_TEXTS {
        return;
    }
    let plain = body_texts(message, &message.text_body);
    let plain_len: usize = plain.iter().map(|t| t.text.trim().chars().count()).sum();
    let use_html = !message.html_body.is_empty()
        && (plain_len < STUB_TEXT_CHARS
            || (plain_len < STUB_NOTICE_CHARS
                && message.html_body != message.text_body
                && plain.iter().any(|t| says_view_as_html(&t.text))));
    let chosen = if use_html {
        body_texts(message, &message.html_body)
    } else {
        plain
    };
    for mut part in chosen {
        if out.len() >= MAX_TEXTS {
            return;
        }
        part.origin = origin.clone();
        out.push(part);
    }
    if depth >= MAX_DEPTH {
        return;
    }
    for &id in message.attachments.iter().take(64) {
        let Some(part) = message.parts.get(id as usize) else {
            continue;
        };
        match &part.body {
            PartType::Message(inner) => {
                let (from, _) = first_address(inner.from());
                collect_texts(inner, Origin::Attached { from }, depth + 1, out);
            }
            // A text file the author attached ("anbei die IDs als Textdatei, direkt
            // aus dem Partner Center exportiert") is read like a forwarded text.
            PartType::Text(t) if is_plain_text(part) && out.len() < MAX_TEXTS => {
                out.push(TextPart {
                    text: normalise(&undo_mojibake(part, cut(t, MAX_TEXT_BYTES)), false),
                    origin: Origin::Attached { from: None },
                    html: false,
                });
            }
            _ => {}
        }
    }
}

/// UTF-8 sent under a single-byte label (a CRM declaring windows-1252 on UTF-8
/// bytes, so that "7 302 916" with narrow no-break spaces reads "7â€¯302â€¯916"):
/// when the decoded text, turned back into windows-1252 bytes, is valid UTF-8,
/// those bytes are what the author wrote. Real Latin-1 text with umlauts or
/// typographic quotes practically never forms valid UTF-8.
fn undo_mojibake<'a>(part: &mail_parser::MessagePart<'_>, text: &'a str) -> Cow<'a, str> {
    let single_byte = part
        .content_type()
        .and_then(|ct| ct.attribute("charset"))
        .is_some_and(|c| {
            [
                "windows-1252",
                "cp1252",
                "iso-8859-1",
                "latin1",
                "iso-8859-15",
            ]
            .iter()
            .any(|l| c.eq_ignore_ascii_case(l))
        });
    // Every UTF-8 lead byte of Latin and punctuation text shows as one of these.
    if !single_byte || !text.contains(['Ã', 'Â', 'â', 'Å', 'Ä', 'Ð', 'Ñ', 'ð']) {
        return Cow::Borrowed(text);
    }
    let bytes: Option<Vec<u8>> = text.chars().map(windows_1252_byte).collect();
    match bytes.map(String::from_utf8) {
        Some(Ok(fixed)) => Cow::Owned(fixed),
        _ => Cow::Borrowed(text),
    }
}

/// The windows-1252 byte a character was decoded from (C1 controls stand for the
/// five bytes windows-1252 leaves undefined).
fn windows_1252_byte(c: char) -> Option<u8> {
    if let Ok(b) = u8::try_from(c) {
        return Some(b);
    }
    let b = match c {
        '€' => 0x80,
        '‚' => 0x82,
        'ƒ' => 0x83,
        '„' => 0x84,
        '…' => 0x85,
        '†' => 0x86,
        '‡' => 0x87,
        'ˆ' => 0x88,
        '‰' => 0x89,
        'Š' => 0x8A,
        '‹' => 0x8B,
        'Œ' => 0x8C,
        'Ž' => 0x8E,
        '‘' => 0x91,
        '’' => 0x92,
        '“' => 0x93,
        '”' => 0x94,
        '•' => 0x95,
        '–' => 0x96,
        '—' => 0x97,
        '˜' => 0x98,
        '™' => 0x99,
        'š' => 0x9A,
        '›' => 0x9B,
        'œ' => 0x9C,
        'ž' => 0x9E,
        'Ÿ' => 0x9F,
        _ => return None,
    };
    Some(b)
}

/// Whether a part is declared text/plain (not a calendar, CSV or other text).
fn is_plain_text(part: &mail_parser::MessagePart<'_>) -> bool {
    part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("text")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("plain"))
    })
}

fn body_texts(message: &Message<'_>, ids: &[u32]) -> Vec<TextPart> {
    let mut texts = Vec::new();
    for &id in ids.iter().take(MAX_TEXTS) {
        let Some(part) = message.parts.get(id as usize) else {
            continue;
        };
        // mail-parser lists a text/plain part among the HTML bodies (and vice versa)
        // when the alternative is missing, so both kinds are handled either way.
        let (text, html) = match &part.body {
            PartType::Text(t) => (
                label_columns(normalise(
                    &undo_mojibake(part, cut(t, MAX_TEXT_BYTES)),
                    is_flowed(part),
                )),
                false,
            ),
            PartType::Html(h) => (
                html_as_text(&undo_mojibake(part, cut(h, MAX_TEXT_BYTES))),
                true,
            ),
            _ => continue,
        };
        texts.push(TextPart {
            text,
            origin: Origin::Main,
            html,
        });
    }
    texts
}

/// Longest header cell of a plain-text table used as its column's label.
const MAX_COLUMN_LABEL: usize = 30;

/// A plain-text table whose header line names its columns, the values aligned
/// below ("                alt (gesperrt)        neu" over "MPN-ID    5361948
/// 6742018"): each number in a row gets its column's header as a prefix, as an
/// HTML table's cells do ("MPN-ID   alt (gesperrt): 5361948   neu: 6742018"),
/// because the header says which number is old.
pub(crate) fn label_columns(text: String) -> String {
    if !text.contains("   ") {
        return text;
    }
    // Built only from the first labelled row on: most texts have no such table.
    let mut out: Option<String> = None;
    let mut header: Option<Vec<(usize, &str)>> = None;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let start = at;
        at += line.len();
        let body = line.trim_end_matches('\n');
        // A table line has two cells at least, so two spaces in a row.
        let cells = if body.contains("  ") {
            columns(body)
        } else {
            Vec::new()
        };
        let has_digit = body.bytes().any(|b| b.is_ascii_digit());
        let labelled = match &header {
            _ if cells.len() < 2 => {
                header = None;
                None
            }
            // A row without numbers ("Tenant   a.example   b.example") keeps it.
            Some(_) if !has_digit => None,
            None if !has_digit => {
                let usable = cells
                    .iter()
                    .all(|(_, c)| c.chars().count() <= MAX_COLUMN_LABEL);
                header = usable.then_some(cells);
                None
            }
            None => None,
            Some(head) => label_row(head, &cells),
        };
        match (labelled, &mut out) {
            (Some(row), Some(o)) => {
                o.push_str(&row);
                o.push_str(&line[body.len()..]);
            }
            (Some(row), None) => {
                let mut o = String::with_capacity(text.len() + 64);
                o.push_str(&text[..start]);
                o.push_str(&row);
                o.push_str(&line[body.len()..]);
                out = Some(o);
            }
            (None, Some(o)) => o.push_str(line),
            (None, None) => {}
        }
    }
    out.unwrap_or(text)
}

/// A table row with each number under a header prefixed by it, cells joined by
/// spaces (" | " in a plain text marks a business card); `None` when no number
/// stands under a header.
fn label_row(head: &[(usize, &str)], cells: &[(usize, &str)]) -> Option<String> {
    let mut labelled = false;
    let row: Vec<String> = cells
        .iter()
        .map(|&(col, cell)| {
            let label = head.iter().find(|(h, _)| h.abs_diff(col) <= 2);
            match label {
                Some((_, l)) if cell.bytes().any(|b| b.is_ascii_digit()) => {
                    labelled = true;
                    format!("{l}: {cell}")
                }
                _ => cell.to_string(),
            }
        })
        .collect();
    labelled.then(|| row.join("   "))
}

/// The cells of a line split at runs of two or more spaces, each with the column
/// (in characters) it starts at.
fn columns(line: &str) -> Vec<(usize, &str)> {
    let mut cells = Vec::new();
    let mut start: Option<(usize, usize)> = None; // (byte, column)
    let mut spaces = 0;
    for (col, (i, c)) in line.char_indices().enumerate() {
        if c == ' ' {
            spaces += 1;
        } else {
            if spaces >= 2 || start.is_none() {
                if let Some((b, cl)) = start {
                    cells.push((cl, line[b..i].trim_end()));
                }
                start = Some((i, col));
            }
            spaces = 0;
        }
    }
    if let Some((b, cl)) = start {
        cells.push((cl, line[b..].trim_end()));
    }
    cells
}

/// An HTML body as the text a reader sees, normalised like a plain one.
pub(crate) fn html_as_text(html: &str) -> String {
    normalise(&html_to_text(html), false)
}

fn is_flowed(part: &mail_parser::MessagePart<'_>) -> bool {
    part.content_type()
        .and_then(|ct| ct.attribute("format"))
        .is_some_and(|f| f.eq_ignore_ascii_case("flowed"))
}

/// Line endings to '\n', invisible characters removed, no-break and thin spaces to
/// plain spaces, Unicode hyphens to '-', full-width digits to ASCII, and format=flowed soft breaks joined
/// (RFC 3676), so that a sentence is one line however the client wrapped it.
pub(crate) fn normalise(text: &str, flowed: bool) -> String {
    let mut clean = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    // Unchanged text is copied a run at a time (a char at a time was 5 % of
    // triage). Only CR, TAB and the lead bytes 0xC2, 0xE2 and 0xEF can start a
    // character to change; each is a char boundary, as every other byte is
    // stepped over one at a time.
    let (mut run, mut i) = (0, 0);
    while i < bytes.len() {
        if !matches!(bytes[i], b'\r' | b'\t' | 0xC2 | 0xE2 | 0xEF) {
            i += 1;
            continue;
        }
        let Some(c) = text[i..].chars().next() else {
            break;
        };
        let with = match c {
            '\r' if bytes.get(i + 1) == Some(&b'\n') => Some(None),
            '\r' => Some(Some('\n')),
            '\u{a0}' | '\u{202f}' | '\u{2000}'..='\u{200a}' | '\t' => Some(Some(' ')),
            '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{feff}' | '\u{ad}' | '\u{2060}' => Some(None),
            // Hyphen, non-breaking hyphen (Word's Ctrl+Shift+-), figure dash.
            '\u{2010}'..='\u{2012}' => Some(Some('-')),
            // Full-width digits and colon (East Asian input methods): "７１８５０３２".
            '\u{ff10}'..='\u{ff19}' => Some(char::from_digit(c as u32 - 0xff10, 10)),
            '\u{ff1a}' => Some(Some(':')),
            _ => None,
        };
        if let Some(with) = with {
            clean.push_str(&text[run..i]);
            clean.extend(with);
            run = i + c.len_utf8();
        }
        i += c.len_utf8();
    }
    clean.push_str(&text[run..]);
    if flowed {
        unflow(&clean).into_owned()
    } else {
        clean
    }
}

fn quote_depth(line: &str) -> usize {
    line.chars().take_while(|c| *c == '>').count()
}

/// Joins soft-broken lines of format=flowed text: a line ending in a space continues
/// on the next line of the same quote depth; "-- " (signature separator) never does.
fn unflow(text: &str) -> Cow<'_, str> {
    if !text.contains(" \n") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut lines = text.split('\n').peekable();
    while let Some(line) = lines.next() {
        let mut current = line.to_string();
        while current.ends_with(' ') && current != "-- " && !current.trim().is_empty() {
            let depth = quote_depth(&current);
            match lines.peek() {
                Some(next)
                    if quote_depth(next) == depth && !next.trim().is_empty() && *next != "-- " =>
                {
                    let cont = next[depth..].strip_prefix(' ').unwrap_or(&next[depth..]);
                    current.push_str(cont);
                    lines.next();
                }
                _ => break,
            }
        }
        out.push_str(&current);
        out.push('\n');
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_tables_label_their_columns() {
        let text = "Bitte umstellen:\n                    alt (gesperrt)        neu\nMPN-/Partner-ID     5361948               6742018\nTenant              a.example             b.example\n\nGruß";
        let out = label_columns(text.to_string());
        assert!(
            out.contains("MPN-/Partner-ID   alt (gesperrt): 5361948   neu: 6742018"),
            "{out}"
        );
        // Cells without digits and lines after the table stay as they were; a row
        // without numbers is no new header.
        assert!(out.contains("Tenant              a.example"), "{out}");
        let text = "          alt        neu\nTenant    a.example  b.example\nKunde     100877     100877\n";
        assert!(label_columns(text.to_string()).contains("alt: 100877   neu: 100877"));
        assert!(out.ends_with("\n\nGruß"), "{out}");
        // No header line: nothing changes.
        let prose = "Unsere neue ID:   6742018\nTel.   0431 556 78-0";
        assert_eq!(label_columns(prose.to_string()), prose);
        assert_eq!(
            columns("  ab  cd e   f"),
            [(2, "ab"), (6, "cd e"), (13, "f")]
        );
    }

    #[test]
    fn unflow_joins_soft_breaks_only() {
        let t = normalise(
            "Wo finde ich die \nneue ID? \n\n-- \nSig\n> a \n> b\n",
            true,
        );
        assert_eq!(t, "Wo finde ich die neue ID? \n\n-- \nSig\n> a b\n\n");
    }

    #[test]
    fn normalise_line_endings_and_spaces() {
        assert_eq!(normalise("a\r\nb\rc\u{a0}d\u{200b}e", false), "a\nb\nc de");
    }

    /// The run-copying `normalise` against the plain one it replaced, one char
    /// at a time, on every lead byte it looks at and on the neighbours it must
    /// leave alone.
    #[test]
    fn normalise_copies_runs_exactly_as_char_by_char() {
        fn slow(text: &str) -> String {
            let mut clean = String::new();
            let mut chars = text.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '\r' if chars.peek() == Some(&'\n') => {}
                    '\r' => clean.push('\n'),
                    '\u{a0}' | '\u{202f}' | '\u{2000}'..='\u{200a}' | '\t' => clean.push(' '),
                    '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{feff}' | '\u{ad}' | '\u{2060}' => {}
                    '\u{2010}'..='\u{2012}' => clean.push('-'),
                    _ => clean.push(c),
                }
            }
            clean
        }
        let pieces = [
            "a",
            "ä",
            "€",
            "\u{a0}",
            "\u{ad}",
            "\u{a9}",
            "\u{202f}",
            "\u{2007}",
            "\u{2009}",
            "\u{200b}",
            "\u{2010}",
            "\u{2011}",
            "\u{200a}",
            "\u{2060}",
            "\u{feff}",
            "\u{fffd}",
            "\r",
            "\n",
            "\t",
            "\r\n",
            "😀",
            "Standort-ID 7123456",
        ];
        let mut seed = 7u64;
        for _ in 0..2000 {
            let mut text = String::new();
            for _ in 0..(seed % 12) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                text.push_str(pieces[(seed >> 33) as usize % pieces.len()]);
            }
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            assert_eq!(normalise(&text, false), slow(&text), "{text:?}");
        }
    }

    #[test]
    fn cut_respects_char_boundaries() {
        assert_eq!(cut("äöü", 3), "ä");
        assert_eq!(cut("abc", 10), "abc");
    }

    #[test]
    fn headers_are_extracted() {
        let raw = b"Message-ID: <abc@x.example>\r\nFrom: \"Jan\" <J.Meyer@X.Example>\r\nReply-To: other@y.example\r\nSubject: =?utf-8?q?Neue_MPN-ID?=\r\nReferences: <a@x> <b@x>\r\nIn-Reply-To: <b@x>\r\n\r\nBody\r\n";
        let p = parse(raw).expect("parses");
        assert_eq!(p.headers.message_id.as_deref(), Some("abc@x.example"));
        assert_eq!(p.headers.from.as_deref(), Some("j.meyer@x.example"));
        assert_eq!(p.headers.from_name.as_deref(), Some("Jan"));
        assert_eq!(p.headers.reply_to.as_deref(), Some("other@y.example"));
        assert_eq!(p.headers.subject, "Neue MPN-ID");
        assert_eq!(p.headers.references, ["a@x", "b@x"]);
        assert_eq!(p.headers.in_reply_to.as_deref(), Some("b@x"));
        assert_eq!(p.texts.len(), 1);
        assert!(p.has_field("from"));
    }

    #[test]
    fn a_view_as_html_stub_yields_the_html() {
        let raw = b"From: a@b.example\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nDiese Nachricht enthaelt HTML-Inhalte.\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>Partner-ID 1</p>\r\n--b--\r\n";
        let p = parse(raw).expect("parses");
        assert!(p
            .texts
            .iter()
            .any(|t| t.html && t.text.contains("Partner-ID 1")));
    }
}
