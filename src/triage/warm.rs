//! Warming triage up before the first mail: most of triage's regexes are compiled
//! on first use, ~40 ms in all, which the first batch after a start would wait for.
//! The daemon triages these samples on one triage thread while it opens the store
//! and connects to the mailbox. Between them they pass every stage: MIME with
//! quoted-printable and HTML, quotes and a forward, signatures with other numbers,
//! new and old IDs, an example ID, and an auto-reply.

use super::{Policy, Registry, RegistryEntry};

/// Sample mails: a German plain reply, an English HTML forward, an auto-reply.
pub const SAMPLES: [&str; 3] = [
    "From: Max Muster <max@warm-up.example>\r\n\
To: cloud@distri.example\r\n\
Subject: AW: Neue Standort-ID\r\n\
Date: Mon, 3 Nov 2025 10:00:00 +0100\r\n\
Message-ID: <warm-1@warm-up.example>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Hallo zusammen,\r\n\
\r\n\
unsere neue Standort-ID (PLA) lautet: 7123456. Die alte MPN-ID war 6123456.\r\n\
\r\n\
Mit freundlichen Gr=C3=BC=C3=9Fen\r\n\
Max Muster\r\n\
Tel. +49 421 1234567 | HRB 12345 | USt-IdNr. DE123456789\r\n\
\r\n\
Am 01.11.2025 um 09:00 schrieb cloud@distri.example:\r\n\
> Bitte senden Sie uns Ihre neue Partner-ID.\r\n\
> Kundennummer 445566\r\n",
    "From: \"Jane Roe\" <jane@warm-up.example>\r\n\
To: cloud@distri.example\r\n\
Subject: Fwd: New partner ID\r\n\
Date: Tue, 4 Nov 2025 11:00:00 +0000\r\n\
Message-ID: <warm-2@warm-up.example>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/alternative; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
\r\n\
Hi team, our new MPN ID is 7234567 (previous: 6234567).\r\n\
--b1\r\n\
Content-Type: text/html; charset=utf-8\r\n\
\r\n\
<html><body><p>Hi team,</p><p>Our new MPN ID is <b>7234567</b> (previous: 6234567,\r\n\
not the example 1234567 from your letter).</p>\r\n\
<div>---------- Forwarded message ---------<br>From: cloud@distri.example<br>\r\n\
Subject: Partner ID</div>\r\n\
<blockquote>On Mon, Nov 3, 2025 at 9:00 AM cloud wrote:<br>Please send your Partner ID.\r\n\
</blockquote><p>Phone: +44 20 7946 0958<br>Company No 45660743<br>VAT GB123456789</p>\r\n\
</body></html>\r\n\
--b1--\r\n",
    "From: Max Muster <max@warm-up.example>\r\n\
To: cloud@distri.example\r\n\
Subject: Automatische Antwort: Abwesenheitsnotiz\r\n\
Auto-Submitted: auto-replied\r\n\
Date: Mon, 3 Nov 2025 10:05:00 +0100\r\n\
Message-ID: <warm-3@warm-up.example>\r\n\
\r\n\
Ich bin bis 10.11. nicht im Haus.\r\n",
];

/// The registry the samples are triaged against: both senders registered.
pub fn registry() -> Registry {
    let entry = |account: &str, email: &str, old: &str, locale: &str| RegistryEntry {
        account: account.to_string(),
        company: format!("{account} GmbH"),
        contact_emails: vec![email.to_string()],
        domains: Vec::new(),
        old_ids: vec![old.to_string()],
        current_id: None,
        updating: false,
        locale: locale.to_string(),
    };
    Registry {
        resellers: vec![
            entry("W-1", "max@warm-up.example", "6123456", "de"),
            entry("W-2", "jane@warm-up.example", "6234567", "en"),
        ],
    }
}

/// The policy the samples are triaged under.
pub fn policy() -> Policy {
    Policy {
        own_addresses: vec!["cloud@distri.example".to_string()],
        trusted_authserv_ids: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triage::{triage, Decision, Outcome};

    /// The samples must go the whole way (an apply each, and an ignored
    /// auto-reply), or they would warm up less than the daemon needs.
    #[test]
    fn samples_pass_every_stage() {
        let got: Vec<(Outcome, Option<String>, Decision)> = SAMPLES
            .iter()
            .map(|raw| {
                let t = triage(raw.as_bytes(), &registry(), &policy());
                (t.outcome, t.mpn_id.map(|m| m.to_string()), t.decision)
            })
            .collect();
        assert_eq!(
            got,
            [
                (Outcome::Id, Some("7123456".into()), Decision::Apply),
                (Outcome::Id, Some("7234567".into()), Decision::Apply),
                (Outcome::Ignored, None, Decision::Ignore),
            ]
        );
    }
}
