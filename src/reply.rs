//! Confirmations to resellers: which text, in which language, with which headers.
//!
//! Rendering is pure (the caller passes the time and the Message-ID) so the store
//! can render a confirmation inside the transaction that queues it: the bytes in the
//! outbox are exactly what is sent, on the first try and on every retry.
//!
//! Every confirmation is marked as an automatic reply (`Auto-Submitted:
//! auto-replied`, RFC 3834, and Exchange's `X-Auto-Response-Suppress: All`) so that
//! out-of-office robots do not answer it, and it is threaded into the reseller's
//! conversation (`In-Reply-To`, `References`, `Re:` subject).

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context, Result};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::Message;

use crate::triage::RejectReason;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Received,
    Applied,
    Rejected,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Received => "received",
            Kind::Applied => "applied",
            Kind::Rejected => "rejected",
        }
    }
}

/// The reply templates, one per kind and locale, each `Subject: …`, a blank line,
/// then the body, with `{{name}}` placeholders.
#[derive(Clone, Debug)]
pub struct Templates {
    entries: Vec<(String, String)>,
}

const EMBEDDED: &[(&str, &str)] = &[
    ("received.de", include_str!("../templates/received.de.txt")),
    ("received.en", include_str!("../templates/received.en.txt")),
    ("applied.de", include_str!("../templates/applied.de.txt")),
    ("applied.en", include_str!("../templates/applied.en.txt")),
    ("rejected.de", include_str!("../templates/rejected.de.txt")),
    ("rejected.en", include_str!("../templates/rejected.en.txt")),
];

impl Templates {
    pub fn embedded() -> Templates {
        Templates {
            entries: EMBEDDED
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The embedded templates, with any `<kind>.<locale>.txt` in `dir` replacing its
    /// namesake. A template without a `Subject:` line is an error, found at start.
    pub fn load(dir: Option<&Path>) -> Result<Templates> {
        let mut t = Templates::embedded();
        if let Some(dir) = dir {
            for (name, text) in t.entries.iter_mut() {
                let path = dir.join(format!("{name}.txt"));
                if path.exists() {
                    *text = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read template {}", path.display()))?;
                    split_template(text).with_context(|| format!("template {}", path.display()))?;
                }
            }
        }
        Ok(t)
    }

    fn get(&self, kind: Kind, locale: &str) -> &str {
        let locale = if locale == "en" { "en" } else { "de" };
        let name = format!("{}.{locale}", kind.as_str());
        self.entries
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("Subject: mpnd\n\n")
    }
}

fn split_template(text: &str) -> Result<(&str, &str)> {
    let rest = text
        .strip_prefix("Subject:")
        .ok_or_else(|| anyhow!("expected the first line to be \"Subject: ...\""))?;
    let (subject, body) = rest.split_once('\n').unwrap_or((rest, ""));
    Ok((subject.trim(), body.trim_start_matches(['\r', '\n'])))
}

/// Everything a confirmation says.
#[derive(Clone, Debug)]
pub struct Reply<'a> {
    pub kind: Kind,
    pub locale: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub account: &'a str,
    pub company: &'a str,
    pub mpn_id: &'a str,
    pub subscriptions: usize,
    /// Plain words for a rejection.
    pub reason: &'a str,
    /// The reseller's mail we answer, for threading (may be empty).
    pub original_subject: &'a str,
    pub original_message_id: Option<&'a str>,
    pub original_references: &'a [String],
    /// Without angle brackets.
    pub message_id: &'a str,
    pub date_unix: i64,
}

/// Renders a confirmation to the bytes that will be sent.
pub fn render(templates: &Templates, r: &Reply<'_>) -> Result<Vec<u8>> {
    let (subject_t, body_t) = split_template(templates.get(r.kind, r.locale))?;
    let fill = |s: &str| {
        s.replace("{{mpn_id}}", r.mpn_id)
            .replace("{{account}}", r.account)
            .replace("{{company}}", r.company)
            .replace("{{subscriptions}}", &r.subscriptions.to_string())
            .replace("{{reason}}", r.reason)
            .replace("{{original_subject}}", r.original_subject)
    };
    let subject = if r.original_subject.trim().is_empty() {
        fill(subject_t)
    } else {
        reply_subject(r.original_subject)
    };
    let from: Mailbox = r
        .from
        .parse()
        .with_context(|| format!("smtp.from {:?} is not a valid address", r.from))?;
    let to: Mailbox =
        r.to.parse()
            .with_context(|| format!("recipient {:?} is not a valid address", r.to))?;
    let date = SystemTime::UNIX_EPOCH + Duration::from_secs(r.date_unix.max(0) as u64);
    let mut b = Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .date(date)
        .message_id(Some(format!("<{}>", r.message_id)));
    if let Some(orig) = r.original_message_id {
        b = b.in_reply_to(format!("<{orig}>"));
        let mut refs: Vec<String> = r
            .original_references
            .iter()
            .map(|m| format!("<{m}>"))
            .collect();
        refs.push(format!("<{orig}>"));
        b = b.references(refs.join(" "));
    }
    let mut msg = b
        .header(ContentType::TEXT_PLAIN)
        .body(fill(body_t))
        .context("cannot build confirmation")?;
    let h = msg.headers_mut();
    h.insert_raw(HeaderValue::new(
        HeaderName::new_from_ascii_str("Auto-Submitted"),
        "auto-replied".into(),
    ));
    h.insert_raw(HeaderValue::new(
        HeaderName::new_from_ascii_str("X-Auto-Response-Suppress"),
        "All".into(),
    ));
    h.insert_raw(HeaderValue::new(
        HeaderName::new_from_ascii_str("X-Mpnd-Kind"),
        r.kind.as_str().into(),
    ));
    Ok(msg.formatted())
}

/// "Re: " + the original subject, without stacking prefixes ("Re: AW: Re: …").
pub fn reply_subject(original: &str) -> String {
    let mut s = original.trim();
    loop {
        let lower = s.to_ascii_lowercase();
        let stripped = ["re:", "aw:", "wg:", "fw:", "fwd:", "antw:"]
            .iter()
            .find(|p| lower.starts_with(**p))
            .map(|p| s[p.len()..].trim_start());
        match stripped {
            Some(rest)
                if lower.starts_with("re:")
                    || lower.starts_with("aw:")
                    || lower.starts_with("antw:") =>
            {
                s = rest
            }
            _ => break,
        }
    }
    format!("Re: {s}")
}

/// The reason for a rejection, in the reseller's language.
pub fn reject_text(reason: &RejectReason, locale: &str) -> String {
    let en = locale == "en";
    match (reason, en) {
        (RejectReason::OwnOldId { .. }, false) => "Diese ID ist Ihre bisherige MPN-ID, deren Berechtigung als \
            indirekter Reseller widerrufen wurde. Microsoft lässt eine widerrufene ID nicht wieder zu: \
            Sie benötigen einen neuen Standort mit neuer ID (PLA), einen neuen Entra-Tenant und eine neue \
            Registrierung als indirekter Reseller."
            .into(),
        (RejectReason::OwnOldId { .. }, true) => "This is your previous MPN ID, whose indirect reseller \
            authorisation was revoked. Microsoft does not allow a revoked ID to be used again: you need a \
            new location with a new ID (PLA), a new Entra tenant and a new indirect reseller registration."
            .into(),
        (RejectReason::OtherResellersId { .. }, false) => "Diese ID ist bei uns bereits einem anderen \
            Partner zugeordnet. Bitte prüfen Sie die ID und senden Sie uns die Standort-ID (PLA) Ihrer \
            neuen Registrierung."
            .into(),
        (RejectReason::OtherResellersId { .. }, true) => "This ID is already on record for another \
            partner. Please check the ID and send us the location ID (PLA) of your new registration."
            .into(),
        (RejectReason::NotAuthorisedAtMicrosoft { code, .. }, en) => {
            let text = not_authorised_text(code.as_deref(), en);
            match code.as_deref() {
                Some(c) if c != "relationship" => {
                    if en {
                        format!("{text} (Microsoft code {c})")
                    } else {
                        format!("{text} (Microsoft-Code {c})")
                    }
                }
                _ => text.to_string(),
            }
        }
    }
}

/// Plain words for what Microsoft's verification said. Microsoft's own description
/// stays in the case for the operator; the reseller gets what to do next. Every
/// variant ends with the same offer: mail us again once it is done.
fn not_authorised_text(code: Option<&str>, en: bool) -> &'static str {
    match (code, en) {
        (Some("800015"), false) => "Microsoft kennt diese ID nicht. Bitte prüfen Sie die Ziffern: \
            wir benötigen die Standort-ID (PLA) Ihrer neuen Registrierung, nicht die globale ID (PGA). \
            Antworten Sie uns gern mit der richtigen ID.",
        (Some("800015"), true) => "Microsoft does not know this ID. Please check the digits: we need \
            the location ID (PLA) of your new registration, not the global ID (PGA). Simply reply with \
            the correct ID.",
        (Some("800039"), false) => "Bei Microsoft ist der Programmstatus dieser ID als Reseller noch \
            nicht aktiv. Bitte schließen Sie die Registrierung im Partner Center ab und schreiben Sie \
            uns danach einfach noch einmal.",
        (Some("800039"), true) => "Microsoft does not show the reseller program status of this ID as \
            active yet. Please complete the enrolment in Partner Center, then simply write to us again.",
        (Some("900123"), false) => "Für diese ID ist bei Microsoft das Microsoft Partner Agreement \
            noch nicht akzeptiert. Bitte akzeptieren Sie es im Partner Center und schreiben Sie uns \
            danach einfach noch einmal.",
        (Some("900123"), true) => "Microsoft shows that the Microsoft Partner Agreement has not been \
            accepted for this ID yet. Please accept it in Partner Center, then simply write to us again.",
        (Some("relationship"), false) => "Microsoft führt diese ID noch nicht als indirekten Reseller \
            bei uns: Bitte nehmen Sie unsere Partnerschaftsanfrage (Reseller-Beziehung) im Partner \
            Center an und schreiben Sie uns danach einfach noch einmal.",
        (Some("relationship"), true) => "Microsoft does not list this ID as an indirect reseller of \
            ours yet: please accept our partnership (reseller relationship) request in Partner Center, \
            then simply write to us again.",
        (_, false) => "Microsoft führt diese ID noch nicht als autorisierten indirekten Reseller. \
            Bitte schließen Sie die Registrierung als indirekter Reseller ab und nehmen Sie unsere \
            Partnerschaftsanfrage im Partner Center an; schreiben Sie uns danach einfach noch einmal.",
        (_, true) => "Microsoft does not list this ID as an authorised indirect reseller yet. Please \
            complete the indirect reseller registration and accept our partnership request in Partner \
            Center, then simply write to us again.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(kind: Kind, locale: &'static str) -> Reply<'static> {
        Reply {
            kind,
            locale,
            from: "Distri Cloud <cloud@distri.example>",
            to: "k.bergmann@bergmann-it.example",
            account: "R-20031",
            company: "Bergmann IT-Systemhaus GmbH",
            mpn_id: "6284913",
            subscriptions: 3,
            reason: "",
            original_subject: "AW: Neue MPN-ID",
            original_message_id: Some("abc@bergmann-it.example"),
            original_references: &[],
            message_id: "mpnd-1-received@distri.example",
            date_unix: 1_763_460_128,
        }
    }

    #[test]
    fn received_german_is_threaded_and_marked_automatic() {
        let raw = render(&Templates::embedded(), &reply(Kind::Received, "de")).unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(text.contains("Subject: Re: Neue MPN-ID"), "{text}");
        assert!(
            text.contains("In-Reply-To: <abc@bergmann-it.example>"),
            "{text}"
        );
        assert!(text.contains("Auto-Submitted: auto-replied"), "{text}");
        assert!(text.contains("X-Auto-Response-Suppress: All"), "{text}");
        assert!(
            text.contains("Message-ID: <mpnd-1-received@distri.example>"),
            "{text}"
        );
        let parsed = mail_parser::MessageParser::default()
            .parse(&raw[..])
            .unwrap();
        let body = parsed.body_text(0).unwrap();
        assert!(
            body.contains("6284913") && body.contains("3 bestehenden"),
            "{body}"
        );
    }

    #[test]
    fn english_locale_picks_english_text() {
        let raw = render(&Templates::embedded(), &reply(Kind::Applied, "en")).unwrap();
        let parsed = mail_parser::MessageParser::default()
            .parse(&raw[..])
            .unwrap();
        assert!(parsed.body_text(0).unwrap().contains("place orders again"));
    }

    #[test]
    fn not_authorised_is_explained_in_both_languages() {
        let r = RejectReason::NotAuthorisedAtMicrosoft {
            code: Some("800016".into()),
            description: "Partner is not a valid indirect reseller".into(),
        };
        let de = reject_text(&r, "de");
        let en = reject_text(&r, "en");
        assert!(
            de.contains("Partnerschaftsanfrage") && de.contains("800016"),
            "{de}"
        );
        assert!(
            en.contains("authorised indirect reseller") && en.contains("800016"),
            "{en}"
        );
        let rel = RejectReason::NotAuthorisedAtMicrosoft {
            code: Some("relationship".into()),
            description: String::new(),
        };
        assert!(!reject_text(&rel, "en").contains("code"));
        let unknown = RejectReason::NotAuthorisedAtMicrosoft {
            code: Some("800015".into()),
            description: String::new(),
        };
        assert!(reject_text(&unknown, "de").contains("kennt diese ID nicht"));
    }

    #[test]
    fn reply_subject_does_not_stack() {
        assert_eq!(reply_subject("AW: Re: Neue ID"), "Re: Neue ID");
        assert_eq!(reply_subject("WG: Neue ID"), "Re: WG: Neue ID");
    }
}
