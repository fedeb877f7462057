//! Classify: is this mail automated (or our own), so that it is ignored?
//!
//! Policy (RFC 3834 and common practice): `Auto-Submitted` other than "no",
//! `X-Auto-Response-Suppress`, `X-MS-Exchange-Inbox-Rules-Loop`, `X-Autoreply` /
//! `X-Autorespond`, a null `Return-Path: <>`, a `multipart/report` body (DSN, MDN),
//! a From of MAILER-DAEMON or postmaster, list or bulk mail (`List-Id`,
//! `List-Unsubscribe`, `Precedence: bulk|list|junk`), an out-of-office subject in
//! German or English, and a mail From one of our own addresses (the full address,
//! case-insensitive: another domain's `cloud@` is a reseller, not us).
//!
//! The answer is the reason for the operator, or `None` for a person's mail.

use std::sync::LazyLock;

use regex::Regex;

use super::cues::regex;

use super::parse::Parsed;
use super::Policy;

static OUT_OF_OFFICE: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?ix)^\s*(?:(?:re|aw|fw|fwd|wg)\s*:\s*)*
        (?:automatische\s+antwort|abwesenheitsnotiz|abwesenheit\b|abwesend\b|urlaubsabwesenheit|nicht\s+im\s+büro|out\s+of\s+(?:the\s+)?office
          |away\s+from\s+(?:the\s+)?office|on\s+(?:annual\s+)?leave\b|vacation\s+(?:reply|notice)|automatic\s+reply
          |auto(?:matic)?[\s-]?reply|autoreply|auto[\s-]?response|réponse\s+automatique|afwezig|fuera\s+de\s+la\s+oficina)",
    )
});

/// Why the mail is ignored, or `None` when a person wrote it.
pub(crate) fn automated(parsed: &Parsed, policy: &Policy) -> Option<String> {
    if let Some(from) = parsed.headers.from.as_deref() {
        if policy
            .own_addresses
            .iter()
            .any(|own| own.trim().eq_ignore_ascii_case(from))
        {
            return Some(format!("sent from our own address {from}"));
        }
        // The address the mail was delivered to is ours too, configured or not: a
        // mail from the mailbox's own address is our own mail coming back.
        let delivered_to = parsed
            .field_values("delivered-to")
            .chain(parsed.field_values("x-original-to"))
            .map(|v| {
                v.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .trim()
            })
            .any(|v| v.eq_ignore_ascii_case(from));
        if delivered_to {
            return Some(format!("sent from the mailbox's own address {from}"));
        }
    }
    header_reason(parsed)
        .or_else(|| bounce_reason(parsed))
        .or_else(|| list_reason(parsed))
        .or_else(|| {
            OUT_OF_OFFICE.is_match(&parsed.headers.subject).then(|| {
                format!(
                    "out-of-office subject \"{}\"",
                    short(&parsed.headers.subject)
                )
            })
        })
}

fn short(s: &str) -> String {
    let mut out: String = s.chars().take(60).collect();
    if s.chars().count() > 60 {
        out.push('…');
    }
    out
}

/// The value without comments and parameters: "auto-replied (vacation); x=y" →
/// "auto-replied".
fn token(value: &str) -> String {
    let mut depth = 0usize;
    let mut out = String::new();
    for c in value.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ';' if depth == 0 => break,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.trim().to_ascii_lowercase()
}

fn header_reason(parsed: &Parsed) -> Option<String> {
    for value in parsed.field_values("auto-submitted") {
        let v = token(value);
        if !v.is_empty() && v != "no" {
            return Some(format!("auto-reply (Auto-Submitted: {v})"));
        }
    }
    for name in [
        "x-auto-response-suppress",
        "x-ms-exchange-inbox-rules-loop",
        "x-autoreply",
        "x-autorespond",
    ] {
        if parsed.has_field(name) {
            return Some(format!("auto-reply (header {name})"));
        }
    }
    None
}

fn bounce_reason(parsed: &Parsed) -> Option<String> {
    if parsed.content_type == "multipart/report" {
        return Some("delivery or read report (multipart/report)".to_string());
    }
    if parsed.field_values("return-path").any(|v| {
        let v: String = v.chars().filter(|c| !c.is_whitespace()).collect();
        v == "<>"
    }) {
        return Some("null Return-Path <> (bounce or auto-reply)".to_string());
    }
    let local = parsed
        .headers
        .from
        .as_deref()
        .and_then(|f| f.split('@').next())
        .unwrap_or("");
    if local.eq_ignore_ascii_case("mailer-daemon") || local.eq_ignore_ascii_case("postmaster") {
        return Some(format!("bounce from {local}"));
    }
    None
}

fn list_reason(parsed: &Parsed) -> Option<String> {
    if parsed.has_field("list-id") {
        return Some("mailing list (List-Id)".to_string());
    }
    if parsed.has_field("list-unsubscribe") {
        return Some("bulk mail (List-Unsubscribe)".to_string());
    }
    for value in parsed.field_values("precedence") {
        let v = token(value);
        if matches!(v.as_str(), "bulk" | "list" | "junk") {
            return Some(format!("bulk mail (Precedence: {v})"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_drop_comments_and_parameters() {
        assert_eq!(token(" Auto-Replied (vacation); owner=x"), "auto-replied");
        assert_eq!(token("No"), "no");
    }

    #[test]
    fn out_of_office_subjects() {
        for s in [
            "Automatische Antwort: Ihre neue MPN-ID",
            "Abwesenheitsnotiz: Neue ID",
            "Out of Office: New MPN ID",
            "Automatic reply: x",
            "AW: Automatische Antwort: x",
            "Abwesend: AW: Ihre neue MPN-ID 6718254 wurde hinterlegt",
            "Away from the office: Re: New MPN ID",
        ] {
            assert!(OUT_OF_OFFICE.is_match(s), "{s}");
        }
        assert!(!OUT_OF_OFFICE.is_match("Neue MPN-ID, Antwort erbeten"));
    }
}
