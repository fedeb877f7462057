//! HTML to plain text for HTML-only mails (ERP mails, Word HTML, web mailers).
//!
//! Policy: keep the structure that tells numbers apart. Block elements and `<br>`
//! end a line, table cells of one row are joined with " | " so a row stays one line,
//! `<blockquote>` content is prefixed with "> " so quoted history is recognised like
//! plain-text quoting, and `<style>`, `<script>`, `<head>` and comments are dropped.
//! In a table whose first row is a header without numbers (e.g. "Feld | bisher | neu"),
//! later cells get their column's header as a prefix ("bisher: 3318702"), because the
//! header is what says which number is old and which is new.
//!
//! A hand-written scanner, linear in the input; the caller caps the input length.

/// Block-level tags that end the current line.
const BLOCK_TAGS: &[&str] = &[
    "p", "div", "br", "tr", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "table", "hr",
    "pre", "section", "article", "header", "footer", "dt", "dd", "dl", "center", "address", "form",
    "tbody", "thead", "tfoot", "caption", "title",
];

/// Elements whose content is never text for a reader.
const SKIP_TAGS: &[&str] = &[
    "style", "script", "head", "title", "xml", "template", "noscript",
];

/// Elements without content: hiding them hides nothing.
const VOID_TAGS: &[&str] = &[
    "img", "br", "hr", "input", "meta", "link", "area", "base", "col", "wbr", "source",
];

/// Whether a tag's attributes hide its content from the reader: `display:none`,
/// `mso-hide:all` (Outlook), or the `hidden` attribute. A newsletter's or CRM's
/// preheader is hidden this way, and may hold a stale number.
fn is_hidden(inner: &str) -> bool {
    // One cheap pass first: every form holds "non" or "hid" ("none", "hidden",
    // "mso-hide"), which most tags do not.
    let maybe = inner.as_bytes().windows(3).any(|w| {
        let w = [w[0] | 0x20, w[1] | 0x20, w[2] | 0x20];
        &w == b"non" || &w == b"hid"
    });
    if !maybe {
        return false;
    }
    let squeezed: String = inner
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    squeezed.contains("display:none")
        || squeezed.contains("visibility:hidden")
        || squeezed.contains("mso-hide:all")
        || inner.split_whitespace().skip(1).any(|a| {
            a.eq_ignore_ascii_case("hidden") || a.to_ascii_lowercase().starts_with("hidden=")
        })
}

/// Longest header cell that is used as a column label.
const MAX_HEADER_LABEL: usize = 30;

/// A cell's breaks become spaces only while its text is shorter than this, and at
/// most this many of them (see [`joins_in_cell`]).
const MAX_JOINED_CELL: usize = 120;
const MAX_CELL_BREAKS: usize = 4;

#[derive(Default)]
struct Table {
    row: usize,
    cell: usize,
    header: Vec<String>,
    /// Byte offset in the output where the current cell's text starts.
    cell_start: usize,
    header_usable: bool,
    /// The first row used `<th>` cells: a declared header, usable with 2 columns.
    header_th: bool,
    /// Between a cell's start and its end (or the row's).
    in_cell: bool,
    /// Line breaks turned into spaces in the current cell (see [`joins_in_cell`]).
    cell_breaks: usize,
}

struct Out {
    text: String,
    quote_depth: usize,
    at_line_start: bool,
    pending_space: bool,
    in_pre: bool,
}

impl Out {
    fn new(capacity: usize) -> Out {
        Out {
            text: String::with_capacity(capacity),
            quote_depth: 0,
            at_line_start: true,
            pending_space: false,
            in_pre: false,
        }
    }

    fn newline(&mut self) {
        // Drop trailing spaces so lines compare cleanly.
        while self.text.ends_with(' ') {
            self.text.pop();
        }
        self.text.push('\n');
        self.at_line_start = true;
        self.pending_space = false;
    }

    /// Ends the current line unless nothing was written on it: block elements do not
    /// stack up empty lines, while `<br>` (see [`Out::newline`]) always breaks.
    fn soft_newline(&mut self) {
        if !self.at_line_start {
            self.newline();
        }
    }

    fn start_line_if_needed(&mut self) {
        if self.at_line_start {
            for _ in 0..self.quote_depth {
                self.text.push_str("> ");
            }
            self.at_line_start = false;
            self.pending_space = false;
        }
    }

    fn push_char(&mut self, c: char) {
        if self.in_pre {
            if c == '\n' {
                self.newline();
                return;
            }
            self.start_line_if_needed();
            self.text.push(c);
            return;
        }
        if c.is_whitespace() && c != '\u{a0}' {
            if !self.at_line_start {
                self.pending_space = true;
            }
            return;
        }
        self.start_line_if_needed();
        if self.pending_space {
            self.text.push(' ');
            self.pending_space = false;
        }
        self.text.push(c);
    }

    fn push_str(&mut self, s: &str) {
        for c in s.chars() {
            self.push_char(c);
        }
    }
}

/// Converts HTML to text lines (see the module documentation).
pub(crate) fn html_to_text(html: &str) -> String {
    let mut out = Out::new(html.len() / 2);
    let mut tables: Vec<Table> = Vec::new();
    let mut skip_depth: Option<String> = None;
    let mut hidden: Option<(String, usize)> = None;
    let bytes = html.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'<' {
            if html[i..].starts_with("<!--") {
                i = match html[i + 4..].find("-->") {
                    Some(p) => i + 4 + p + 3,
                    None => bytes.len(),
                };
                continue;
            }
            let end = tag_end(bytes, i + 1);
            let inner = &html[i + 1..end.min(bytes.len())];
            let tag = parse_tag(inner);
            i = (end + 1).min(bytes.len());
            let Some((name, closing)) = tag else {
                continue;
            };
            if let Some(skipped) = &skip_depth {
                if closing && *skipped == name {
                    skip_depth = None;
                }
                continue;
            }
            // Inside an element hidden from the reader, up to its end (the same tag
            // nested inside is counted).
            if let Some((hidden_name, depth)) = &mut hidden {
                if *hidden_name == name {
                    if closing {
                        *depth -= 1;
                    } else {
                        *depth += 1;
                    }
                }
                // An element left open ends with the body at the latest.
                if *depth == 0 || (closing && matches!(name.as_str(), "body" | "html")) {
                    hidden = None;
                }
                continue;
            }
            if !closing && SKIP_TAGS.contains(&name.as_str()) {
                skip_depth = Some(name);
                continue;
            }
            if !closing && !VOID_TAGS.contains(&name.as_str()) && is_hidden(inner) {
                hidden = Some((name, 1));
                continue;
            }
            handle_tag(&mut out, &mut tables, &name, closing);
            continue;
        }
        if skip_depth.is_some() || hidden.is_some() {
            // Nothing but the next tag matters inside a skipped element.
            i = bytes[i..]
                .iter()
                .position(|&b| b == b'<')
                .map_or(bytes.len(), |p| i + p);
            continue;
        }
        if bytes[i] == b'&' {
            if let Some((decoded, len)) = decode_entity(&html[i..]) {
                out.push_char(decoded);
                i += len;
                continue;
            }
        }
        // The text up to the next tag or entity, in one go (an '&' that is no
        // entity is text, and starts the run).
        let end = bytes[i + 1..]
            .iter()
            .position(|&b| b == b'<' || b == b'&')
            .map_or(bytes.len(), |p| i + 1 + p);
        for c in html[i..end].chars() {
            out.push_char(c);
        }
        i = end;
    }
    out.text
}

/// Index of the '>' that closes the tag opened before `from`, honouring quoted
/// attribute values; `bytes.len()` when the tag never closes.
fn tag_end(bytes: &[u8], from: usize) -> usize {
    let mut quote: Option<u8> = None;
    let mut j = from;
    while j < bytes.len() {
        let b = bytes[j];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'>' => return j,
            None => {}
        }
        j += 1;
    }
    bytes.len()
}

/// Tag name (lower-case, namespace prefix kept: "o:p") and whether it closes.
fn parse_tag(inner: &str) -> Option<(String, bool)> {
    let inner = inner.trim_start();
    let (closing, rest) = match inner.strip_prefix('/') {
        Some(r) => (true, r),
        None => (false, inner),
    };
    let len = rest
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b':' || *b == b'-')
        .count();
    let name = rest[..len].to_ascii_lowercase();
    if name.is_empty() {
        return None;
    }
    Some((name, closing))
}

fn handle_tag(out: &mut Out, tables: &mut Vec<Table>, name: &str, closing: bool) {
    match name {
        "blockquote" => {
            out.soft_newline();
            if closing {
                out.quote_depth = out.quote_depth.saturating_sub(1);
            } else {
                out.quote_depth = (out.quote_depth + 1).min(8);
            }
        }
        "pre" => {
            out.soft_newline();
            out.in_pre = !closing;
        }
        "table" => {
            out.soft_newline();
            if closing {
                tables.pop();
            } else if tables.len() < 16 {
                tables.push(Table::default());
            }
        }
        "tr" => {
            // Both <tr> and </tr> end a row that has cells: many generators omit </tr>.
            finish_cell(out, tables);
            out.soft_newline();
            if let Some(t) = tables.last_mut() {
                if t.cell > 0 {
                    if t.row == 0 {
                        let min_columns = if t.header_th { 2 } else { 3 };
                        t.header_usable = t.header.len() >= min_columns
                            && t.header
                                .iter()
                                .all(|h| !h.chars().any(|c| c.is_ascii_digit()));
                    }
                    t.row += 1;
                    t.cell = 0;
                }
            }
        }
        "td" | "th" => {
            if closing {
                finish_cell(out, tables);
            } else {
                if let Some(t) = tables.last_mut() {
                    if t.row == 0 && name == "th" {
                        t.header_th = true;
                    }
                }
                start_cell(out, tables);
            }
        }
        _ if tables.last().is_some_and(|t| t.in_cell)
            && (name == "br" || BLOCK_TAGS.contains(&name))
            && joins_in_cell(out, tables) => {}
        "br" => out.newline(),
        _ if BLOCK_TAGS.contains(&name) => out.soft_newline(),
        _ => {}
    }
}

/// Text a short table cell holds stays on its row's line: Word writes every cell's
/// text as a paragraph (`<td><p class=MsoNormal>3318702</p></td>`), and a break
/// there would put the number on a line of its own, away from its row's label and
/// its column's header. A break in a cell becomes a space while the cell's text is
/// short; a layout cell that holds a whole mail breaks its lines as usual after
/// its first words. Whether the break was taken care of (as a space).
fn joins_in_cell(out: &mut Out, tables: &mut [Table]) -> bool {
    let Some(t) = tables.last_mut() else {
        return false;
    };
    if !t.in_cell
        || t.cell_breaks >= MAX_CELL_BREAKS
        || out.text.len().saturating_sub(t.cell_start) > MAX_JOINED_CELL
    {
        return false;
    }
    t.cell_breaks += 1;
    if out.text.len() > t.cell_start && !out.at_line_start {
        out.pending_space = true;
    }
    true
}

fn start_cell(out: &mut Out, tables: &mut [Table]) {
    // An unclosed previous cell ends here.
    finish_cell(out, tables);
    let Some(t) = tables.last_mut() else {
        out.push_char(' ');
        return;
    };
    if t.cell > 0 {
        out.start_line_if_needed();
        out.text.push_str(" | ");
        out.pending_space = false;
    }
    if t.row > 0 && t.header_usable {
        if let Some(label) = t.header.get(t.cell).filter(|l| !l.is_empty()) {
            // The first column usually names the row ("Feld"), unless the header
            // was declared with <th>: then it may be "Alte ID".
            if t.cell > 0 || t.header_th {
                let label = label.clone();
                out.push_str(&label);
                out.text.push_str(": ");
            }
        }
    }
    t.cell_start = out.text.len();
    t.cell += 1;
    t.in_cell = true;
    t.cell_breaks = 0;
}

fn finish_cell(out: &mut Out, tables: &mut [Table]) {
    let Some(t) = tables.last_mut() else {
        return;
    };
    t.in_cell = false;
    if t.row == 0 && t.cell > t.header.len() {
        let text = out
            .text
            .get(t.cell_start..)
            .unwrap_or("")
            .trim()
            .to_string();
        let label = if text.chars().count() <= MAX_HEADER_LABEL && !text.contains('\n') {
            text
        } else {
            String::new()
        };
        t.header.push(label);
    }
}

/// Decodes one entity at the start of `s` ("&amp;", "&#228;", "&#xE4;").
fn decode_entity(s: &str) -> Option<(char, usize)> {
    let end = s.bytes().take(12).position(|b| b == b';')?;
    let body = &s[1..end];
    let c = if let Some(num) = body.strip_prefix('#') {
        let code = if let Some(hex) = num.strip_prefix(['x', 'X']) {
            u32::from_str_radix(hex, 16).ok()?
        } else {
            num.parse::<u32>().ok()?
        };
        char::from_u32(code).unwrap_or('\u{fffd}')
    } else {
        named_entity(body)?
    };
    Some((c, end + 1))
}

fn named_entity(name: &str) -> Option<char> {
    let c = match name {
        "nbsp" => '\u{a0}',
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "auml" => 'ä',
        "ouml" => 'ö',
        "uuml" => 'ü',
        "Auml" => 'Ä',
        "Ouml" => 'Ö',
        "Uuml" => 'Ü',
        "szlig" => 'ß',
        "eacute" => 'é',
        "egrave" => 'è',
        "aacute" => 'á',
        "agrave" => 'à',
        "oacute" => 'ó',
        "iacute" => 'í',
        "uacute" => 'ú',
        "ccedil" => 'ç',
        "ntilde" => 'ñ',
        "oslash" => 'ø',
        "aring" => 'å',
        "aelig" => 'æ',
        "Oslash" => 'Ø',
        "Aring" => 'Å',
        "AElig" => 'Æ',
        "middot" => '·',
        "bull" => '•',
        "ndash" => '–',
        "mdash" => '—',
        "hellip" => '…',
        "euro" => '€',
        "pound" => '£',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "sect" => '§',
        "deg" => '°',
        "laquo" => '«',
        "raquo" => '»',
        "bdquo" => '„',
        "ldquo" => '“',
        "rdquo" => '”',
        "lsquo" => '‘',
        "rsquo" => '’',
        "sbquo" => '‚',
        "times" => '×',
        "rarr" => '→',
        "shy" | "zwnj" | "zwj" => '\u{200b}',
        "thinsp" | "ensp" | "emsp" => ' ',
        _ => return None,
    };
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_breaks_make_lines() {
        let t = html_to_text("<div>Hallo</div><div>neue MPN-ID: <b>6284913</b></div>a<br>b");
        assert_eq!(
            t.lines().collect::<Vec<_>>(),
            ["Hallo", "neue MPN-ID: 6284913", "a", "b"]
        );
    }

    #[test]
    fn word_cells_with_paragraphs_stay_on_their_row() {
        // Word wraps every cell's text in a paragraph.
        let p = |t: &str| format!("<td><p class=MsoNormal>{t}<o:p></o:p></p></td>");
        let html = format!(
            "<table><tr>{}{}{}</tr><tr>{}{}{}</tr></table>",
            p("<b>Angabe</b>"),
            p("<b>bisher</b>"),
            p("<b>neu</b>"),
            p("Microsoft Partner-ID (PLA)"),
            p("3318702"),
            p("&nbsp;6479113&nbsp;"),
        );
        let t = html_to_text(&html);
        assert!(
            t.contains("Microsoft Partner-ID (PLA) | bisher: 3318702 | neu: \u{a0}6479113"),
            "{t}"
        );
        // A layout cell holding a whole mail still breaks its lines.
        let long = "Sehr geehrte Damen und Herren, hier kommt ein langer erster Absatz, der weit über die Grenze einer kurzen Tabellenzelle hinaus geht.";
        let t = html_to_text(&format!(
            "<table><tr><td><p>{long}</p><p>Neue MPN-ID: 6284913</p><p>Gruss</p></td></tr></table>"
        ));
        assert_eq!(
            t.lines().collect::<Vec<_>>(),
            [long, "Neue MPN-ID: 6284913", "Gruss"]
        );
    }

    #[test]
    fn style_head_and_comments_are_dropped() {
        let t = html_to_text(
            "<html><head><style>p{x:1234567}</style></head><body><!--[if mso]>9876543<![endif]-->Text</body></html>",
        );
        assert_eq!(t.trim(), "Text");
    }

    #[test]
    fn table_rows_keep_cells_apart_and_get_column_labels() {
        let t = html_to_text(
            "<table><tr><th>Feld</th><th>bisher</th><th>neu</th></tr>\
             <tr><td>Partner-ID</td><td>3318702</td><td><b>6650271</b></td></tr></table>",
        );
        assert!(
            t.contains("Feld: Partner-ID | bisher: 3318702 | neu: 6650271"),
            "{t}"
        );
    }

    #[test]
    fn two_column_th_header_labels() {
        let t = html_to_text(
            "<table><tr><th>Alte ID</th><th>Neue ID</th></tr><tr><td>3318702</td><td>6650271</td></tr></table>",
        );
        assert!(t.contains("Alte ID: 3318702 | Neue ID: 6650271"), "{t}");
    }

    #[test]
    fn two_column_tables_have_no_labels() {
        let t = html_to_text(
            "<table><tr><td>Unternehmen:</td><td>X GmbH</td></tr><tr><td>Partner-ID:</td><td>6773019</td></tr></table>",
        );
        assert!(t.contains("Partner-ID: | 6773019"), "{t}");
    }

    #[test]
    fn blockquote_is_quoted() {
        let t = html_to_text("Hi<blockquote>old text<br>more</blockquote>after");
        assert_eq!(
            t.lines().collect::<Vec<_>>(),
            ["Hi", "> old text", "> more", "after"]
        );
    }

    #[test]
    fn entities() {
        assert_eq!(
            html_to_text("Stra&szlig;e &amp; &#228;&#xE4; &bogus; &"),
            "Straße & ää &bogus; &"
        );
    }

    #[test]
    fn hidden_elements_are_not_text() {
        let t = html_to_text(
            "<div style=\"display: none; max-height:0\">Neue ID 7143440 <div>inner</div> tail</div><p>Sichtbar 7584945</p><span hidden>weg</span><span style=\"mso-hide:all\">auch weg</span>ok",
        );
        assert_eq!(t.trim(), "Sichtbar 7584945\nok", "{t:?}");
        // Hidden, never closed: the rest of the body only, not what follows it.
        let t = html_to_text("a<div style=\"display:none\">b</body>c");
        assert_eq!(t.trim(), "ac", "{t:?}");
        // A void element with display:none hides nothing after it.
        let t = html_to_text("x<img style=\"display:none\">y");
        assert_eq!(t.trim(), "xy", "{t:?}");
    }

    #[test]
    fn broken_html_does_not_panic() {
        for s in [
            "<",
            "<div",
            "<<>>",
            "&#xFFFFFFFF;",
            "<table><td>x",
            "</tr></table></td>",
            "<!--",
            "é<b>é",
        ] {
            let _ = html_to_text(s);
        }
    }
}
