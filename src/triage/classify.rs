//! Classify: is this mail automated (or our own), so that it is ignored?
//!
//! Policy (RFC 3834 and common practice): `Auto-Submitted` other than "no",
//! `X-Auto-Response-Suppress`, `X-MS-Exchange-Inbox-Rules-Loop`, `X-Autoreply` /
//! `X-Autorespond`, a null `Return-Path: <>`, a `multipart/report` body (DSN, MDN),
//! a From of MAILER-DAEMON or postmaster, list or bulk mail (`List-Id`,
//! `List-Unsubscribe`, `Precedence: bulk|list|junk`), an out-of-office subject in
//! German or English (also the ones on-premise servers and people's own rules write
//! without any header: "Urlaub bis …", "I'm away until …"), a read receipt or bounce
//! sent as ordinary mail ("Gelesen:", "Unzustellbar:", Exchange's system sender),
//! and a mail From one of our own addresses (the full address, case-insensitive:
//! another domain's `cloud@` is a reseller, not us).
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
          |auto(?:matic)?[\s-]?reply|autoreply|auto[\s-]?response|réponse\s+automatique|afwezig|fuera\s+de\s+la\s+oficina
          |im\s+urlaub\b|urlaub(?:sabwesenheit|snotiz)?\s*(?:[:\-–]|bis\b|vom\b|von\b|ab\b|until\b)
          |(?:i'?m|i\s+am|we\s+are|we're)\s+(?:currently\s+)?(?:away|out\s+of|on\s+(?:holiday|vacation|leave|annual\s+leave))
          |away\s+until\b|on\s+(?:holiday|vacation)\b|(?:zurzeit|derzeit|momentan)\s+(?:nicht\s+erreichbar|abwesend|nicht\s+im\s+(?:haus|büro))
          |ich\s+bin\b[^:]{0,40}\b(?:nicht\s+im\s+(?:haus|büro)|nicht\s+erreichbar|abwesend|im\s+urlaub)\b)",
    )
});

/// Out-of-office phrases that no person puts in the subject of a mail they write,
/// wherever they stand in it: "Neue MPN-ID [Automatische Antwort]".
static OUT_OF_OFFICE_ANYWHERE: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)\b(?:automatische\s+antwort|automatic\s+reply|abwesenheitsnotiz|out\s+of\s+(?:the\s+)?office|autoreply)\b",
    )
});

/// Read and delivery receipts that clients send as ordinary mail (Outlook's
/// "Gelesen:" without multipart/report), and bounces that a gateway or an Exchange
/// server sends without multipart/report or a null Return-Path. Anchored at the
/// start: these systems put their word before the original subject.
static RECEIPT_OR_BOUNCE: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?ix)^\s*(?:
            (?:gelesen|nicht\s+gelesen|read|not\s+read|lesebestätigung|read\s+receipt|return\s+receipt|zugestellt|delivered|übermittelt|relayed)\s*:
          | (?:accepted|declined|tentative|angenommen|abgelehnt|mit\s+vorbehalt\s+angenommen|vorläufig\s+angenommen|zugesagt|abgesagt|new\s+time\s+proposed|neuer\s+zeitvorschlag)\s*:
          | (?:undeliverable|unzustellbar|nicht\s+zustellbar|non[\s-]?deliverable|undelivered\s+mail|returned\s+mail|mail\s+delivery\s+(?:failed|failure|system)
             |delivery\s+(?:status\s+notification|failure|has\s+failed|delayed)|zustellung\s+(?:fehlgeschlagen|verzögert)|failure\s+notice
             |message\s+not\s+delivered|nachricht\s+nicht\s+zugestellt|zustellungsbericht|übermittlungsfehler)\b
        )",
    )
});

/// An out-of-office text under an ordinary reply subject, sent by a server rule
/// without any header. Three signals, of which it takes two (one of them the first):
/// the message is not forwarded / the mailbox is not read; the author is away until
/// a date; the text opens by thanking for the message. A person who mentions a
/// holiday in a real mail rarely writes two of them.
static OOF_NOT_READ: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?ix)\b(?:(?:nachricht|e-?mail|mail)\s+wird\s+nicht\s+weitergeleitet|(?:message|e-?mail|mail)\s+will\s+not\s+be\s+forwarded
          |keinen\s+zugriff\s+auf\s+(?:meine\s+)?e-?mails?|(?:no|limited)\s+access\s+to\s+(?:my\s+)?e-?mails?|eingeschränkt(?:em)?\s+zugriff)",
    )
});
static OOF_AWAY: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?ix)\b(?:ich\s+bin|i\s+am|i'm|we\s+are)\s+(?:bis|vom|von|ab|until|from|currently|derzeit|zurzeit)\b(?:[^.!?\n]|\.[0-9]|[0-9]\.\s){0,50}\b(?:nicht\s+im\s+(?:büro|haus)|abwesend|im\s+urlaub|nicht\s+erreichbar|out\s+of\s+(?:the\s+)?office|away|on\s+(?:holiday|leave|vacation|annual\s+leave))\b
          | \b(?:ich\s+bin|i\s+am|i'm|we\s+are)\s+(?:currently\s+|derzeit\s+|zurzeit\s+)?(?:away|out\s+of\s+(?:the\s+)?office|on\s+(?:holiday|leave|vacation)|abwesend|nicht\s+im\s+(?:büro|haus)|im\s+urlaub)\s+(?:until|till|bis|from|vom|ab)\b",
    )
});
static OOF_THANKS: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)^\s*(?:vielen\s+dank|danke|thank\s+you|thanks)\s+(?:für\s+ihre|for\s+your)\s+(?:nachricht|e-?mail|mail|message|anfrage)",
    )
});

/// Outlook's recall of an earlier message: the sender withdraws it, so the ID in
/// the recalled subject must not be applied; a person decides.
static RECALL: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?i)^\s*(?:recall|rückruf|zurückrufen|rappel)\s*:"));

/// Exchange's system sender, "MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@…",
/// which sends NDRs and other reports, never a person's mail.
static EXCHANGE_SYSTEM: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?i)^microsoftexchange[0-9a-f]{32}@"));

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
            let subject = &parsed.headers.subject;
            (OUT_OF_OFFICE.is_match(subject) || OUT_OF_OFFICE_ANYWHERE.is_match(subject))
                .then(|| format!("out-of-office subject \"{}\"", short(subject)))
        })
        .or_else(|| {
            let subject = &parsed.headers.subject;
            RECEIPT_OR_BOUNCE.is_match(subject).then(|| {
                format!(
                    "receipt, meeting response or bounce subject \"{}\"",
                    short(subject)
                )
            })
        })
        .or_else(|| out_of_office_text(parsed))
}

/// Why the mail is a recall of an earlier one ("Recall: …"), if it is.
pub(crate) fn recall(parsed: &Parsed) -> Option<String> {
    let subject = &parsed.headers.subject;
    RECALL.is_match(subject).then(|| {
        format!(
            "the sender recalls an earlier message (\"{}\")",
            short(subject)
        )
    })
}

/// An out-of-office text in the mail's own body (see [`OOF_NOT_READ`]).
fn out_of_office_text(parsed: &Parsed) -> Option<String> {
    let main = parsed
        .texts
        .iter()
        .find(|t| t.origin == super::parse::Origin::Main)?;
    // The top of the text: an auto-reply is short, and quoted history below it
    // (another person's out-of-office) must not count.
    let top: Vec<&str> = main
        .text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take_while(|l| !l.starts_with('>'))
        .take(12)
        .collect();
    let not_read = top.iter().any(|l| OOF_NOT_READ.is_match(l));
    let away = top.iter().any(|l| OOF_AWAY.is_match(l));
    let thanks = top.first().is_some_and(|l| OOF_THANKS.is_match(l));
    ((not_read && (away || thanks)) || (away && thanks))
        .then(|| "out-of-office text without auto-reply headers".to_string())
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
    if parsed
        .headers
        .from
        .as_deref()
        .is_some_and(|f| EXCHANGE_SYSTEM.is_match(f))
    {
        return Some("report from an Exchange system mailbox".to_string());
    }
    if parsed.has_field("x-ms-exchange-message-is-ndr") {
        return Some("Exchange non-delivery report (X-MS-Exchange-Message-Is-Ndr)".to_string());
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

    #[test]
    fn out_of_office_subjects_without_a_prefix_word() {
        for s in [
            "Urlaub bis 01.12. - Re: Ihre neue MPN-ID",
            "Im Urlaub: AW: Partner-ID",
            "I'm away until 1 December: New Partner ID",
            "I am currently out of the office",
            "Ich bin ab 24.11. nicht im Haus",
            "Zurzeit nicht erreichbar",
            "AW: Neue MPN-ID [Automatische Antwort]",
        ] {
            assert!(
                OUT_OF_OFFICE.is_match(s) || OUT_OF_OFFICE_ANYWHERE.is_match(s),
                "{s}"
            );
        }
        for s in [
            "Neue MPN-ID vor meinem Urlaub",
            "Urlaubsvertretung: neue Partner-ID",
            "Ich bin Ansprechpartner für die MPN-ID",
        ] {
            assert!(
                !OUT_OF_OFFICE.is_match(s) && !OUT_OF_OFFICE_ANYWHERE.is_match(s),
                "{s}"
            );
        }
    }

    #[test]
    fn out_of_office_bodies() {
        let oof = "Vielen Dank für Ihre Nachricht.\nIch bin bis einschließlich 05.12.2025 nicht im Büro. Ihre E-Mail wird nicht weitergeleitet.";
        assert!(OOF_THANKS.is_match(oof.lines().next().unwrap_or("")));
        assert!(OOF_AWAY.is_match(oof) && OOF_NOT_READ.is_match(oof));
        let genuine =
            "bevor ich ab morgen im Urlaub bin, noch schnell: unsere neue MPN-ID lautet 6390482.";
        assert!(!OOF_AWAY.is_match(genuine) && !OOF_NOT_READ.is_match(genuine));
        assert!(OOF_AWAY.is_match("I'm away until Monday 1 December with limited access to email."));
    }

    #[test]
    fn receipts_and_bounces_by_subject() {
        for s in [
            "Gelesen: Ihre neue Partner-ID",
            "Read: New Partner ID",
            "Undeliverable: Your new Partner ID",
            "Unzustellbar: Ihre neue MPN-ID",
            "Delivery Status Notification (Failure)",
            "Mail delivery failed: returning message to sender",
        ] {
            assert!(RECEIPT_OR_BOUNCE.is_match(s), "{s}");
        }
        for s in [
            "Neue MPN-ID (read me)",
            "AW: Unzustellbare Mail an Ihren Kollegen",
        ] {
            assert!(!RECEIPT_OR_BOUNCE.is_match(s), "{s}");
        }
        assert!(EXCHANGE_SYSTEM
            .is_match("microsoftexchange329e71ec88ae4615bbc36ab6ce41109e@meridian-cloud.example"));
    }
}
