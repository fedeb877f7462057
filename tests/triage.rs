//! Integration tests of the triage engine: the labelled reseller corpus, the
//! real-world MIME corpus (no ID, no panic, fast), many small cases of our own, and a
//! bounded mutation run for robustness.
//!
//! The corpus lives beside the repository (`../shared/corpus`, as CI clones it);
//! when it is missing these tests fail loudly instead of skipping.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mpnd::triage::{
    triage, Decision, Outcome, Policy, Registry, RegistryEntry, RejectReason, Triage,
};

// ---------------------------------------------------------------------------
// Corpus helpers
// ---------------------------------------------------------------------------

fn corpus_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    assert!(
        dir.join("reseller/labels.json").is_file(),
        "corpus missing at {}: clone `shared/` beside the repository",
        dir.display()
    );
    dir
}

fn policy() -> Policy {
    Policy {
        own_addresses: vec!["cloud@nordwind-dist.example".into()],
        trusted_authserv_ids: vec!["mx.nordwind-dist.example".into()],
    }
}

fn split_list(field: &str) -> Vec<String> {
    field
        .split(';')
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

fn corpus_registry() -> Registry {
    registry_at(&corpus_dir().join("reseller/resellers.csv"))
}

/// A registry in the corpus's `resellers.csv` format.
fn registry_at(path: &Path) -> Registry {
    let csv = std::fs::read_to_string(path).expect("resellers.csv");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    assert_eq!(
        header,
        [
            "account",
            "company",
            "contact_emails",
            "domains",
            "old_mpn_id",
            "locale"
        ]
    );
    let resellers = lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!(f.len(), 6, "unexpected CSV line {line}");
            RegistryEntry {
                account: f[0].into(),
                company: f[1].into(),
                contact_emails: split_list(f[2]),
                domains: split_list(f[3]),
                old_ids: split_list(f[4]),
                current_id: None,
                updating: false,
                locale: f[5].into(),
            }
        })
        .collect();
    Registry { resellers }
}

struct Label {
    outcome: String,
    mpn_id: Option<String>,
    decision: String,
}

fn labels() -> BTreeMap<String, Label> {
    labels_at(&corpus_dir().join("reseller/labels.json"))
}

/// A `labels.json` in the corpus format: file name → outcome, mpn_id, decision.
fn labels_at(path: &Path) -> BTreeMap<String, Label> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).expect("labels.json is JSON");
    json.as_object()
        .expect("object")
        .iter()
        .map(|(file, v)| {
            (
                file.clone(),
                Label {
                    outcome: v["outcome"].as_str().expect("outcome").to_string(),
                    mpn_id: v["mpn_id"].as_str().map(str::to_string),
                    decision: v["decision"].as_str().expect("decision").to_string(),
                },
            )
        })
        .collect()
}

fn eml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("readable dir")
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            eml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "eml") {
            out.push(p);
        }
    }
}

// ---------------------------------------------------------------------------
// (a) The labelled reseller corpus
// ---------------------------------------------------------------------------

#[test]
fn reseller_corpus_matches_labels() {
    let registry = corpus_registry();
    let policy = policy();
    let labels = labels();
    assert_eq!(labels.len(), 33, "the corpus has 33 labelled mails");
    let mut table = String::new();
    let mut wrong = 0;
    let (mut ok_outcome, mut ok_id, mut ok_decision) = (0, 0, 0);
    for (file, label) in &labels {
        let raw =
            std::fs::read(corpus_dir().join("reseller").join(file)).expect("labelled file exists");
        let t = triage(&raw, &registry, &policy);
        let id = t.mpn_id.as_ref().map(|m| m.as_str().to_string());
        let o = t.outcome.as_str() == label.outcome;
        let i = id == label.mpn_id;
        let d = t.decision.as_str() == label.decision;
        ok_outcome += usize::from(o);
        ok_id += usize::from(i);
        ok_decision += usize::from(d);
        let mark = if o && i && d { "ok " } else { "BAD" };
        if !(o && i && d) {
            wrong += 1;
        }
        let _ = writeln!(
            table,
            "{mark} {file:<52} outcome {:<9} (want {:<9}) id {:<9} (want {:<9}) decision {:<6} (want {:<6}) {:?}",
            t.outcome.as_str(),
            label.outcome,
            id.as_deref().unwrap_or("-"),
            label.mpn_id.as_deref().unwrap_or("-"),
            t.decision.as_str(),
            label.decision,
            t.reasons
        );
    }
    println!("{table}");
    println!("outcome {ok_outcome}/33, id {ok_id}/33, decision {ok_decision}/33");
    assert_eq!(
        wrong, 0,
        "{wrong} corpus mails differ from their labels:\n{table}"
    );
}

// ---------------------------------------------------------------------------
// (a2) Red-team fixtures: mails written after the corpus, labelled by its rules
// ---------------------------------------------------------------------------

/// Runs every `.eml` of `tests/fixtures/triage/` against its label in that folder's
/// `labels.json`, with the corpus registry and policy. The table of mismatches is
/// printed; the test fails on any wrong apply (an ID applied that is not the labelled
/// one, or an apply where a person would review, reject or ignore), and on any
/// mismatch that is not in [`KNOWN_FIXTURE_MISSES`].
#[test]
fn red_team_fixtures_match_labels() {
    run_fixture_folder("tests/fixtures/triage", 60, KNOWN_FIXTURE_MISSES);
}

/// The second, independent red-team round (`tests/fixtures/triage-b/`): other
/// authors' habits and traps, run the same way against [`KNOWN_FIXTURE_B_MISSES`].
#[test]
fn red_team_b_fixtures_match_labels() {
    run_fixture_folder("tests/fixtures/triage-b", 40, KNOWN_FIXTURE_B_MISSES);
}

/// The third round (`tests/fixtures/triage-c/`): ordinary mails imitating the
/// labelled corpus (its categories, clients and style), written before the engine
/// saw them, run the same way against [`KNOWN_FIXTURE_C_MISSES`].
#[test]
fn red_team_c_fixtures_match_labels() {
    run_fixture_folder("tests/fixtures/triage-c", 45, KNOWN_FIXTURE_C_MISSES);
}

/// The fourth round (`tests/fixtures/triage-d/`): 45 mails of every corpus category,
/// written blind (by an author who read only the corpus and its README, not the
/// engine), measured before any change, run against [`KNOWN_FIXTURE_D_MISSES`].
#[test]
fn red_team_d_fixtures_match_labels() {
    run_fixture_folder("tests/fixtures/triage-d", 45, KNOWN_FIXTURE_D_MISSES);
}

/// The fifth round (`tests/fixtures/triage-e/`): 45 more blind mails of every
/// category, by other kinds of authors (on the phone, on behalf of the boss, inline
/// between our quoted lines, pasting Partner Center), run against
/// [`KNOWN_FIXTURE_E_MISSES`].
#[test]
fn red_team_e_fixtures_match_labels() {
    run_fixture_folder("tests/fixtures/triage-e", 45, KNOWN_FIXTURE_E_MISSES);
}

/// The sixth round (`tests/fixtures/triage-f/`): 45 blind mails about the wording
/// around the ID (passive German, non-native English, the ID before its label, next
/// to dates, amounts and case numbers, split across HTML, bottom-posted), with hard
/// negatives (customer, contract, invoice numbers; a customer's own ID), run
/// against [`KNOWN_FIXTURE_F_MISSES`].
#[test]
fn red_team_f_fixtures_match_labels() {
    run_fixture_folder("tests/fixtures/triage-f", 45, KNOWN_FIXTURE_F_MISSES);
}

/// The seventh round (`tests/fixtures/triage-g/`): 45 blind mails of every category
/// in the MIME structures real clients and systems produce (Word HTML with VML,
/// multipart/related, forwards as message/rfc822, S/MIME and PGP/MIME, TNEF,
/// broken charsets, soft line breaks inside the ID, hidden preheaders, calendar
/// invites, DSNs and read receipts, ticket systems), run against
/// [`KNOWN_FIXTURE_G_MISSES`].
#[test]
fn red_team_g_fixtures_match_labels() {
    run_fixture_folder("tests/fixtures/triage-g", 45, KNOWN_FIXTURE_G_MISSES);
}

/// The eighth round (`tests/fixtures/triage-h/`): 45 blind mails about who writes
/// and the conversation around the mail (replies to our confirmations, follow-ups,
/// colleagues and shared mailboxes, service providers and send-on-behalf, our own
/// sales staff forwarding, long threads, sister companies, resent and list mail),
/// run against [`KNOWN_FIXTURE_H_MISSES`].
#[test]
fn red_team_h_fixtures_match_labels() {
    run_fixture_folder("tests/fixtures/triage-h", 45, KNOWN_FIXTURE_H_MISSES);
}

/// The ninth round (`tests/fixtures/triage-i/`): a blind twin of the corpus, with a
/// registry of its own (other resellers, domains and old IDs) and 45 mails of every
/// corpus category in other words, clients and MIME shapes, as the acceptance
/// corpus will be; run against [`KNOWN_FIXTURE_I_MISSES`].
#[test]
fn red_team_i_fixtures_match_labels() {
    run_fixture_folder("tests/fixtures/triage-i", 45, KNOWN_FIXTURE_I_MISSES);
}

/// The tenth round (`tests/fixtures/triage-j/`): a second blind twin of the corpus
/// with its own registry, leaning on what people really type (terse one-liners,
/// late IDs, keyword typos, Austrian and Swiss German, non-native English, Swiss
/// separators); run against [`KNOWN_FIXTURE_J_MISSES`].
#[test]
fn red_team_j_fixtures_match_labels() {
    run_fixture_folder("tests/fixtures/triage-j", 45, KNOWN_FIXTURE_J_MISSES);
}

/// The eleventh round (`tests/fixtures/triage-k/`): safety. 30 blind traps where a
/// careless reader would apply a wrong number (old IDs phrased as new, a PGA alone,
/// customers', agreements' and requests' numbers, doubt, questions, sandboxes,
/// withdrawals, look-alike senders) and 15 applies with a trap beside the ID; its
/// own registry. Run against [`KNOWN_FIXTURE_K_MISSES`].
#[test]
fn red_team_k_fixtures_match_labels() {
    run_fixture_folder("tests/fixtures/triage-k", 45, KNOWN_FIXTURE_K_MISSES);
}

/// The twelfth round (`tests/fixtures/triage-l/`): a third blind twin of the corpus
/// with its own registry (Austrian, Swiss, British and Irish resellers among them;
/// a reseller whose contact is `cloud@` at its own domain; sequences of mails),
/// run against [`KNOWN_FIXTURE_L_MISSES`].
#[test]
fn red_team_l_fixtures_match_labels() {
    run_fixture_folder("tests/fixtures/triage-l", 45, KNOWN_FIXTURE_L_MISSES);
}

/// The thirteenth round (`tests/fixtures/triage-m/`): the mail around the ID,
/// blind, with its own registry: authentication results (untrusted and forged
/// ones, temperror, ARC), colleagues, look-alike and punycode domains, display
/// names, automatic mail of every kind, the ID only in HTML, an attachment, TNEF,
/// entities, full-width digits and invisible characters; run against
/// [`KNOWN_FIXTURE_M_MISSES`].
#[test]
fn red_team_m_fixtures_match_labels() {
    run_fixture_folder("tests/fixtures/triage-m", 45, KNOWN_FIXTURE_M_MISSES);
}

/// The fourteenth round (`tests/fixtures/triage-n/`): a fourth blind twin of the
/// corpus with its own registry, leaning on the hardest categories (PGA and PLA,
/// old and new, corrections, distractors, two IDs) and on threads of mails per
/// reseller; run against [`KNOWN_FIXTURE_N_MISSES`].
#[test]
fn red_team_n_fixtures_match_labels() {
    run_fixture_folder("tests/fixtures/triage-n", 45, KNOWN_FIXTURE_N_MISSES);
}

/// The fifteenth round (`tests/fixtures/triage-o/`): safety again, blind, with its
/// own registry: 30 mails where a careless reader applies a wrong number (a
/// customer's, a sister or parent company's, a sub-distributor's, an acquired
/// company's, provisional, conditional, sandbox, expired, withdrawn, the PGA
/// alone, agreement and enrollment numbers, the own old ID reformatted) and 15
/// applies with such a number beside the ID; run against
/// [`KNOWN_FIXTURE_O_MISSES`].
#[test]
fn red_team_o_fixtures_match_labels() {
    run_fixture_folder("tests/fixtures/triage-o", 45, KNOWN_FIXTURE_O_MISSES);
}

/// The sixteenth round (`tests/fixtures/triage-p/`), blind with its own registry:
/// how real mail software writes, encodes and breaks the ID and its keyword
/// (quoted-printable and encoded-word splits, flowed and hard wraps, markup inside
/// the digits, invisible characters, digit grouping beside look-alike numbers,
/// mojibake, Excel's exponent); run against [`KNOWN_FIXTURE_P_MISSES`].
#[test]
fn red_team_p_fixtures_match_labels() {
    run_fixture_folder("tests/fixtures/triage-p", 45, KNOWN_FIXTURE_P_MISSES);
}

/// The seventeenth round (`tests/fixtures/triage-q/`): a fifth blind twin of the
/// corpus with its own registry, in other people's habits (non-native English,
/// French, Italian and Dutch Outlook headers, long threads, shared mailboxes,
/// terse phone mails, letters longer than their ID); run against
/// [`KNOWN_FIXTURE_Q_MISSES`].
#[test]
fn red_team_q_fixtures_match_labels() {
    run_fixture_folder("tests/fixtures/triage-q", 45, KNOWN_FIXTURE_Q_MISSES);
}

/// The eighteenth round (`tests/fixtures/triage-r/`): safety, third time, blind,
/// with its own registry: other vendors' partner IDs, our own and a competing
/// distributor's Partner ID, an ID to remove, a closing location, a future
/// company, Microsoft's examples, a KB number in a URL, a tenant domain, a
/// colleague's guess, a reply-all from another reseller, a spoofed display name;
/// run against [`KNOWN_FIXTURE_R_MISSES`].
#[test]
fn red_team_r_fixtures_match_labels() {
    run_fixture_folder("tests/fixtures/triage-r", 45, KNOWN_FIXTURE_R_MISSES);
}

fn run_fixture_folder(folder: &str, at_least: usize, known_misses: &[&str]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
    let labels = labels_at(&dir.join("labels.json"));
    let mut files = Vec::new();
    eml_files(&dir, &mut files);
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert!(
        labels.len() >= at_least,
        "expected {at_least}+ labelled fixtures in {folder}"
    );
    for name in &names {
        assert!(labels.contains_key(name), "{name} has no label");
    }
    assert_eq!(names.len(), labels.len(), "a label without its .eml file");

    // A round may bring its own registry, as a second corpus would.
    let own = dir.join("resellers.csv");
    let registry = if own.exists() {
        registry_at(&own)
    } else {
        corpus_registry()
    };
    let policy = policy();
    let mut table = String::new();
    let (mut ok_outcome, mut ok_id, mut ok_decision) = (0, 0, 0);
    let mut wrong_applies = Vec::new();
    let mut unexpected = Vec::new();
    let mut cured = Vec::new();
    for (file, label) in &labels {
        let raw = std::fs::read(dir.join(file)).expect("labelled fixture exists");
        let t = triage(&raw, &registry, &policy);
        let id = t.mpn_id.as_ref().map(|m| m.as_str().to_string());
        let o = t.outcome.as_str() == label.outcome;
        let i = id == label.mpn_id;
        let d = t.decision.as_str() == label.decision;
        ok_outcome += usize::from(o);
        ok_id += usize::from(i);
        ok_decision += usize::from(d);
        if t.decision == Decision::Apply && !(label.decision == "apply" && i) {
            wrong_applies.push(file.clone());
        }
        if o && i && d {
            if known_misses.contains(&file.as_str()) {
                cured.push(file.clone());
            }
            continue;
        }
        if !known_misses.contains(&file.as_str()) {
            unexpected.push(file.clone());
        }
        let _ = writeln!(
            table,
            "BAD {file:<52} outcome {:<9} (want {:<9}) id {:<9} (want {:<9}) decision {:<6} (want {:<6}) {:?}\n    {:?}",
            t.outcome.as_str(),
            label.outcome,
            id.as_deref().unwrap_or("-"),
            label.mpn_id.as_deref().unwrap_or("-"),
            t.decision.as_str(),
            label.decision,
            t.reasons,
            t.candidates
                .iter()
                .take(6)
                .map(|c| format!("{} [{}] {:?} {}", c.id, c.source, c.keyword, c.verdict))
                .collect::<Vec<_>>()
        );
    }
    let n = labels.len();
    println!("{table}");
    println!("{folder}: outcome {ok_outcome}/{n}, id {ok_id}/{n}, decision {ok_decision}/{n}, wrong applies {}", wrong_applies.len());
    assert!(
        wrong_applies.is_empty(),
        "wrong applies: {wrong_applies:?}\n{table}"
    );
    assert!(
        unexpected.is_empty(),
        "fixtures differ from their labels: {unexpected:?}\n{table}"
    );
    assert!(
        cured.is_empty(),
        "listed as known misses but now right (take them off the list): {cured:?}"
    );
}

/// Fixtures the engine still gets wrong, each a safe miss (review instead of apply),
/// kept visible here rather than hidden by relabelling.
const KNOWN_FIXTURE_MISSES: &[&str] = &[];

/// Second-round fixtures the engine still gets wrong; each must be a safe miss.
const KNOWN_FIXTURE_B_MISSES: &[&str] = &[
    // An ERP order confirmation prints the dealer's Partner-ID on record, which is
    // the sender's revoked ID. A person sees no ID statement and reviews; triage
    // reads "Partner-ID des Händlers: 4602277" as the ID and rejects it as the old
    // one (as corpus 29 wants for "Unsere MPN-ID: <old>"). Safe: never an apply.
    "c06_de_html_erp_order_confirmation.eml",
];

/// Third-round fixtures the engine still gets wrong; each must be a safe miss.
const KNOWN_FIXTURE_C_MISSES: &[&str] = &[];

/// Fourth-round fixtures the engine still gets wrong; each must be a safe miss.
const KNOWN_FIXTURE_D_MISSES: &[&str] = &[];

/// Fifth-round fixtures the engine still gets wrong; each must be a safe miss.
const KNOWN_FIXTURE_E_MISSES: &[&str] = &[];

/// Sixth-round fixtures the engine still gets wrong; each must be a safe miss.
const KNOWN_FIXTURE_F_MISSES: &[&str] = &[];

/// Seventh-round fixtures the engine still gets wrong; each must be a safe miss.
const KNOWN_FIXTURE_G_MISSES: &[&str] = &[];

/// Eleventh-round fixtures the engine still gets wrong; each must be a safe miss.
/// It gets the label's decision (review); only the outcome differs.
const KNOWN_FIXTURE_K_MISSES: &[&str] = &[
    // "ich glaube … 6482950, bin mir aber nicht sicher": held back (label: ambiguous).
    "k18_de_thunderbird_unsure_id.eml",
];

/// Tenth-round fixtures the engine still gets wrong; each must be a safe miss.
const KNOWN_FIXTURE_J_MISSES: &[&str] = &[];

/// Ninth-round fixtures the engine still gets wrong; each must be a safe miss.
const KNOWN_FIXTURE_I_MISSES: &[&str] = &[];

/// Eighth-round fixtures the engine still gets wrong; each must be a safe miss.
const KNOWN_FIXTURE_H_MISSES: &[&str] = &[
    // The reseller insists on its revoked ID ("Bitte tragen Sie die 3981022 wieder
    // ein"); the label wants a reject (its own old ID). Triage reads no ID statement
    // ("unter Kontoeinstellungen … die 3981022 angezeigt" is a label, and our quoted
    // rejection calls it old) and asks for review. Safe: never an apply.
    "h07_de_exchange_rejected_reply_insists_on_old_id.eml",
    // Two companies' IDs, each after "<Company> (Ihr Konto R-…):"; the label wants
    // the sender's own ID found and reviewed (the other company's account cannot be
    // switched by this sender). Triage reads "Konto" as the label of both numbers
    // and finds none. The decision, review, is the label's.
    "h37_de_thunderbird_own_and_sister_reseller_ids.eml",
];

#[test]
fn reseller_corpus_rejects_name_the_reseller() {
    let registry = corpus_registry();
    let dir = corpus_dir().join("reseller");
    let t = triage(
        &std::fs::read(dir.join("29_de_exchange_id_is_own_old_id.eml")).expect("file"),
        &registry,
        &policy(),
    );
    assert_eq!(
        t.reject,
        Some(RejectReason::OwnOldId {
            account: "R-20231".into()
        })
    );
    let t = triage(
        &std::fs::read(dir.join("30_en_thunderbird_id_is_other_resellers_old_id.eml"))
            .expect("file"),
        &registry,
        &policy(),
    );
    assert_eq!(
        t.reject,
        Some(RejectReason::OtherResellersId {
            account: "R-20072".into()
        })
    );
    assert_eq!(t.reseller.as_deref(), Some("R-20236"));
}

#[test]
fn reseller_corpus_headers_and_evidence() {
    let registry = corpus_registry();
    let dir = corpus_dir().join("reseller");
    let t = triage(
        &std::fs::read(dir.join("28_de_dmarc_fail_spoof.eml")).expect("file"),
        &registry,
        &policy(),
    );
    assert!(
        t.reasons
            .iter()
            .any(|r| r == "DMARC fail at mx.nordwind-dist.example"),
        "{:?}",
        t.reasons
    );
    assert_eq!(
        t.headers.from.as_deref(),
        Some("k.bergmann@bergmann-it.example")
    );
    assert!(t.headers.reply_to.is_some());
    assert!(t
        .headers
        .message_id
        .as_deref()
        .is_some_and(|m| !m.contains('<')));

    let t = triage(
        &std::fs::read(dir.join("32_de_outlook_id_with_spaces.eml")).expect("file"),
        &registry,
        &policy(),
    );
    let winner = t.candidates.first().expect("a candidate");
    assert_eq!(winner.id, "6173402");
    assert!(winner.evidence.contains("6 173 402"), "{winner:?}");
    assert_eq!(winner.keyword.as_deref(), Some("Partner-ID"));
    assert!(winner.verdict.starts_with("chosen"), "{winner:?}");
    assert!(t.headers.subject.starts_with("AW: AW:"));
    assert!(!t.headers.references.is_empty());
    assert!(t.headers.in_reply_to.is_some());
}

// ---------------------------------------------------------------------------
// (b) The real-world corpus: no ID, no panic, fast
// ---------------------------------------------------------------------------

#[test]
fn real_world_corpus_gives_no_id() {
    let mut files = Vec::new();
    eml_files(&corpus_dir().join("real-world"), &mut files);
    assert!(
        files.len() >= 300,
        "expected 300 real-world mails, found {}",
        files.len()
    );
    let registry = corpus_registry();
    let policy = policy();
    let mut bad = String::new();
    let mut bytes = 0usize;
    let started = Instant::now();
    for file in &files {
        let raw = std::fs::read(file).expect("readable");
        bytes += raw.len();
        let t = triage(&raw, &registry, &policy);
        if t.mpn_id.is_some() || !matches!(t.outcome, Outcome::None | Outcome::Ignored) {
            let _ = writeln!(
                bad,
                "{}: outcome {} id {:?} candidates {:?}",
                file.display(),
                t.outcome.as_str(),
                t.mpn_id,
                t.candidates.iter().take(3).collect::<Vec<_>>()
            );
        }
        assert!(!t.reasons.is_empty(), "{}: no reason given", file.display());
    }
    let elapsed = started.elapsed();
    assert!(bad.is_empty(), "real-world mails with an ID:\n{bad}");
    // Generous for an unoptimised test build on a busy machine; the bench measures
    // the real figure (well under a second per MB is the target).
    let mb = bytes as f64 / 1e6;
    println!("{} files, {mb:.1} MB in {elapsed:?}", files.len());
    assert!(
        elapsed.as_secs_f64() < 5.0 * mb.max(1.0),
        "too slow: {elapsed:?} for {mb:.1} MB"
    );
}

// ---------------------------------------------------------------------------
// (c) Small data-driven cases beyond the corpus
// ---------------------------------------------------------------------------

/// Our own test distributor: different names, domains and IDs from the corpus.
fn test_policy() -> Policy {
    Policy {
        own_addresses: vec!["cloud@mpnd-dist.example".into()],
        trusted_authserv_ids: vec!["mx.mpnd-dist.example".into()],
    }
}

fn entry(
    account: &str,
    emails: &[&str],
    domains: &[&str],
    old: &[&str],
    current: Option<&str>,
) -> RegistryEntry {
    RegistryEntry {
        account: account.into(),
        company: format!("Company {account}"),
        contact_emails: emails.iter().map(|s| s.to_string()).collect(),
        domains: domains.iter().map(|s| s.to_string()).collect(),
        old_ids: old.iter().map(|s| s.to_string()).collect(),
        current_id: current.map(str::to_string),
        updating: false,
        locale: "de".into(),
    }
}

fn test_registry() -> Registry {
    Registry {
        resellers: vec![
            entry(
                "R-30001",
                &["einkauf@falkenstein-sh.example"],
                &["falkenstein-sh.example"],
                &["4412987"],
                None,
            ),
            entry(
                "R-30002",
                &["ops@greenway-it.example"],
                &["greenway-it.example"],
                &["5520413"],
                Some("7810442"),
            ),
            entry(
                "R-30003",
                &["nordlicht.edv@freemail.example"],
                &[],
                &["3367105"],
                None,
            ),
            entry(
                "R-30004",
                &["cloud@cloudberry.example"],
                &["cloudberry.example"],
                &["2981134"],
                None,
            ),
            entry(
                "R-30005",
                &["it@moorland-it.example"],
                &["moorland-it.example"],
                &["5093318", "4170266"],
                None,
            ),
        ],
    }
}

const DE: &str = "Sebastian Falk <einkauf@falkenstein-sh.example>";
const EN: &str = "Olivia Green <ops@greenway-it.example>";

/// A plain mail as our MX delivers it (trusted Authentication-Results: pass).
struct Msg {
    from: String,
    subject: String,
    headers: Vec<String>,
    content_type: String,
    encoding: String,
    body: Vec<u8>,
    auth: Option<String>,
}

fn msg(from: &str, subject: &str, body: &str) -> Msg {
    Msg {
        from: from.into(),
        subject: subject.into(),
        headers: Vec::new(),
        content_type: "text/plain; charset=utf-8".into(),
        encoding: "8bit".into(),
        body: body.as_bytes().to_vec(),
        auth: Some("dmarc=pass".into()),
    }
}

impl Msg {
    fn header(mut self, h: &str) -> Msg {
        self.headers.push(h.to_string());
        self
    }
    fn html(mut self) -> Msg {
        self.content_type = "text/html; charset=utf-8".into();
        self
    }
    fn content_type(mut self, ct: &str) -> Msg {
        self.content_type = ct.into();
        self
    }
    fn encoding(mut self, cte: &str) -> Msg {
        self.encoding = cte.into();
        self
    }
    fn raw_body(mut self, body: &[u8]) -> Msg {
        self.body = body.to_vec();
        self
    }
    fn auth(mut self, result: Option<&str>) -> Msg {
        self.auth = result.map(str::to_string);
        self
    }
    fn build(&self) -> Vec<u8> {
        let addr = self
            .from
            .rsplit_once('<')
            .map(|(_, a)| a.trim_end_matches('>').to_string())
            .unwrap_or_else(|| self.from.clone());
        let domain = addr
            .rsplit_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or_default();
        let mut out = String::new();
        let explicit_return_path = self
            .headers
            .iter()
            .any(|h| h.to_lowercase().starts_with("return-path:"));
        if !explicit_return_path {
            let _ = writeln!(out, "Return-Path: <{addr}>");
        }
        if let Some(result) = &self.auth {
            let _ = writeln!(
                out,
                "Authentication-Results: mx.mpnd-dist.example;\n\tdkim=pass header.d={domain};\n\tspf=pass smtp.mailfrom={addr};\n\t{result} header.from={domain}"
            );
        }
        for h in &self.headers {
            let _ = writeln!(out, "{h}");
        }
        let _ = writeln!(out, "From: {}", self.from);
        let _ = writeln!(out, "To: cloud@mpnd-dist.example");
        let _ = writeln!(out, "Subject: {}", self.subject);
        let _ = writeln!(out, "Date: Tue, 18 Nov 2025 10:00:00 +0100");
        let _ = writeln!(
            out,
            "Message-ID: <case-{}@test.example>",
            self.subject.len()
        );
        let _ = writeln!(out, "MIME-Version: 1.0");
        let _ = writeln!(out, "Content-Type: {}", self.content_type);
        let _ = writeln!(out, "Content-Transfer-Encoding: {}", self.encoding);
        let _ = writeln!(out);
        let mut raw = out.into_bytes();
        raw.extend_from_slice(&self.body);
        raw
    }
}

#[derive(Debug, PartialEq)]
struct Expect {
    outcome: Outcome,
    id: Option<&'static str>,
    decision: Decision,
}

fn id(id: &'static str, decision: Decision) -> Expect {
    Expect {
        outcome: Outcome::Id,
        id: Some(id),
        decision,
    }
}
fn apply(i: &'static str) -> Expect {
    id(i, Decision::Apply)
}
fn none() -> Expect {
    Expect {
        outcome: Outcome::None,
        id: None,
        decision: Decision::Review,
    }
}
fn ambiguous() -> Expect {
    Expect {
        outcome: Outcome::Ambiguous,
        id: None,
        decision: Decision::Review,
    }
}
fn ignored() -> Expect {
    Expect {
        outcome: Outcome::Ignored,
        id: None,
        decision: Decision::Ignore,
    }
}

/// Triage `raw` with the test registry; a description of the difference, if any.
fn check(name: &str, raw: &[u8], expect: &Expect) -> Option<String> {
    let t: Triage = triage(raw, &test_registry(), &test_policy());
    let got = Expect {
        outcome: t.outcome,
        id: None,
        decision: t.decision,
    };
    let got_id = t.mpn_id.as_ref().map(|m| m.as_str().to_string());
    let same = got.outcome == expect.outcome
        && got.decision == expect.decision
        && got_id.as_deref() == expect.id;
    (!same).then(|| {
        format!(
            "{name}: got {} {:?} {} want {} {:?} {}\n    reasons {:?}\n    candidates {:?}",
            t.outcome.as_str(),
            got_id,
            t.decision.as_str(),
            expect.outcome.as_str(),
            expect.id,
            expect.decision.as_str(),
            t.reasons,
            t.candidates
                .iter()
                .map(|c| format!("{} [{}] {:?} {}", c.id, c.source, c.keyword, c.verdict))
                .collect::<Vec<_>>()
        )
    })
}

fn run_cases(cases: Vec<(&str, Vec<u8>, Expect)>) {
    let n = cases.len();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(name, raw, expect)| check(name, raw, expect))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {n} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

const SIG_DE: &str = "\n\nMit freundlichen Grüßen\n\nSebastian Falk\nFalkenstein Systemhaus GmbH\nBurgweg 3 · 08223 Falkenstein\nTel. 03745 7781-0\nAmtsgericht Chemnitz HRB 31877\n";
const SIG_EN: &str = "\n\nKind regards,\nOlivia Green\nGreenway IT Ltd\n5 Mill Lane, York YO1 7HH\n+44 1904 555 0188\nCompany No. 09314277\n";

#[test]
fn phrasings_german_and_english() {
    let s = |b: &str| format!("Hallo,\n\n{b}{SIG_DE}");
    let e = |b: &str| format!("Hello,\n\n{b}{SIG_EN}");
    run_cases(vec![
        ("de lautet", msg(DE, "Neue MPN-ID", &s("unsere neue MPN-ID lautet 6831204.")).build(), apply("6831204")),
        ("de Partnernummer", msg(DE, "Registrierung", &s("anbei unsere neue Partnernummer: 6831205")).build(), apply("6831205")),
        ("de Standort-ID", msg(DE, "Standort", &s("Die Standort-ID unseres neuen Standorts ist 6831206.")).build(), apply("6831206")),
        ("de PLA-ID line", msg(DE, "ID", &s("PLA-ID: 6831207")).build(), apply("6831207")),
        ("de sloppy lower case", msg(DE, "id", "hi, neue partnerid 6831208 bitte hinterlegen danke\nsf").build(), apply("6831208")),
        ("de PLA account (neu)", msg(DE, "Partner Location Account", &s("Partner Location Account ID 6831209 (neu)")).build(), apply("6831209")),
        ("de label on line above", msg(DE, "Neue Partner-ID", &s("unsere neue Partner-ID lautet:\n\n6831210\n\nBitte umstellen.")).build(), apply("6831210")),
        ("de dots as separators", msg(DE, "MPN", &s("MPN-Nummer neu: 6.831.211")).build(), apply("6831211")),
        ("de dash separator", msg(DE, "Partner-ID", &s("Partner-ID: 683-1212")).build(), apply("6831212")),
        ("de spaces separator", msg(DE, "Partner-ID", &s("Microsoft Partner-ID (neu): 68 31 240")).build(), apply("6831240")),
        ("de Partner-ID nach Registrierung", msg(DE, "Wieder registriert", &s("wir sind wieder indirekter Reseller. Bitte nehmen Sie ab sofort die Partner ID 6831241 für unser Konto.")).build(), apply("6831241")),
        ("en location id", msg(EN, "New Location ID", &e("Our new Location ID is 7245519.")).build(), apply("7245519")),
        ("en PLA colon", msg(EN, "PLA", &e("Please note our new PLA: 7245520")).build(), apply("7245520")),
        ("en sloppy arrow", msg(EN, "id", "new partner id -> 7245521 pls update asap\nolivia").build(), apply("7245521")),
        ("en AI Cloud Partner Program ID 8 digits", msg(EN, "ID", &e("Our Microsoft AI Cloud Partner Program ID: 72455209")).build(), apply("72455209")),
        ("en location MPN ID", msg(EN, "CSP", &e("Location MPN ID 7245523 is the one enrolled for CSP.")).build(), apply("7245523")),
        ("en id after number", msg(EN, "Re-enrolment done", &e("7245524 is our new Partner ID for the CSP location.")).build(), apply("7245524")),
        ("de subject only", msg(DE, "Neue Partner-ID 6831213", "siehe Betreff\n\nGruß\nTim").build(), apply("6831213")),
        ("en subject only", msg(EN, "New MPN ID: 7245525", "as per subject, thanks\n\nOlivia").build(), apply("7245525")),
        ("en 6 digits", msg(EN, "New MPN ID", &e("Our new MPN ID is 724553.")).build(), apply("724553")),
    ]);
}

#[test]
fn html_bodies() {
    let table = "<html><body><p>Guten Tag,</p><p>bitte folgende Daten &auml;ndern:</p>\
        <table border=1><tr><th>Feld</th><th>alt</th><th>neu</th></tr>\
        <tr><td>Kundennummer</td><td>204411</td><td>unver&auml;ndert</td></tr>\
        <tr><td>Partner-ID</td><td>4412987</td><td><b>6831214</b></td></tr></table>\
        <p>Gru&szlig;<br>Sebastian Falk</p></body></html>";
    let word = "<html xmlns:o=\"urn:schemas-microsoft-com:office:office\"><head><style><!-- p.MsoNormal {margin:0cm} --></style></head>\
        <body lang=DE><div class=WordSection1><p class=MsoNormal>Hallo Frau Kraus,<o:p></o:p></p>\
        <p class=MsoNormal><o:p>&nbsp;</o:p></p><p class=MsoNormal>unsere neue Standort-ID lautet <b>6831215</b>.<o:p></o:p></p>\
        <p class=MsoNormal>Viele Gr&uuml;&szlig;e<o:p></o:p></p><p class=MsoNormal>Sebastian Falk<o:p></o:p></p>\
        <div style='border:none;border-top:solid #E1E1E1 1.0pt'><p class=MsoNormal><b>Von:</b> Cloud Team &lt;cloud@mpnd-dist.example&gt;<br>\
        <b>Gesendet:</b> Montag, 17. November 2025 09:00<br><b>An:</b> Sebastian Falk<br><b>Betreff:</b> Neue MPN-ID erforderlich</p></div>\
        <p class=MsoNormal>Ihre bisherige MPN-ID 4412987 ist ung&uuml;ltig. Bitte senden Sie uns die neue Standort-ID (z. B. 1234567).</p></div></body></html>";
    let gmail = "<div dir=\"ltr\">Hi,<br><br>our new MPN ID is 7245526.<br><br>Olivia</div><br>\
        <div class=\"gmail_quote\"><div class=\"gmail_attr\">On Mon, 17 Nov 2025 at 09:00, Cloud Team &lt;cloud@mpnd-dist.example&gt; wrote:<br></div>\
        <blockquote class=\"gmail_quote\">Your current MPN ID 5520413 is no longer valid. Please send us your new location ID (e.g. 7010203).</blockquote></div>";
    let erp = "<html><body><p>Stammdaten&auml;nderung</p><table><tr><td>Unternehmen:</td><td>Falkenstein Systemhaus GmbH</td></tr>\
        <tr><td>Partner-ID (Standort):</td><td><strong>6831216</strong></td></tr><tr><td>Tenant-ID:</td><td>1b2c3d4e-1111-2222-3333-444455556666</td></tr></table></body></html>";
    run_cases(vec![
        (
            "html table alt/neu",
            msg(DE, "Stammdatenänderung", table).html().build(),
            apply("6831214"),
        ),
        (
            "word html reply",
            msg(DE, "AW: Neue MPN-ID erforderlich", word).html().build(),
            apply("6831215"),
        ),
        (
            "gmail html blockquote",
            msg(EN, "Re: action required", gmail).html().build(),
            apply("7245526"),
        ),
        (
            "erp two-column table",
            msg(DE, "Stammdaten", erp).html().build(),
            apply("6831216"),
        ),
        (
            "th header alte/neue id",
            msg(DE, "Partner-ID", "<table><tr><th>Alte ID</th><th>Neue ID</th></tr><tr><td>4412987</td><td>6831245</td></tr></table>").html().build(),
            apply("6831245"),
        ),
        // The plain text and its HTML alternative must name the same ID; split
        // across tags in the HTML it is the same.
        (
            "alternatives disagree",
            msg(EN, "New location ID", &alternative("our new location ID is 6303918.", "<p>our new location ID is <b>6303981</b>.</p>")).content_type(ALTERNATIVE).build(),
            ambiguous(),
        ),
        (
            "alternatives agree, html split across tags",
            msg(EN, "New location ID", &alternative("our new location ID is 6 303 918.", "<p>our new location ID is <span>6 303</span>&nbsp;<span>918</span>.</p>")).content_type(ALTERNATIVE).build(),
            apply("6303918"),
        ),
        (
            "html alternative without numbers",
            msg(EN, "New location ID", &alternative("our new location ID is 6303918.", "<p>see the text version</p>")).content_type(ALTERNATIVE).build(),
            apply("6303918"),
        ),
    ]);
}

const ALTERNATIVE: &str = "multipart/alternative; boundary=\"alt\"";

/// A multipart/alternative body with these plain and HTML versions.
fn alternative(plain: &str, html: &str) -> String {
    format!(
        "--alt\nContent-Type: text/plain; charset=utf-8\n\n{plain}\n--alt\nContent-Type: text/html; charset=utf-8\n\n<html><body>{html}</body></html>\n--alt--\n"
    )
}

#[test]
fn quoting_and_history() {
    let notice_de = "Ihre bisherige MPN-ID 4412987 ist ungültig. Senden Sie uns Ihre neue Standort-ID (z. B. 1234567).";
    run_cases(vec![
        (
            "> quoting",
            msg(DE, "Re: Neue MPN-ID", &format!("Neue ID: 6831217\n\nGruß Sebastian\n\n> {notice_de}\n> Partner-ID 6831299\n")).build(),
            apply("6831217"),
        ),
        (
            "outlook english block",
            msg(EN, "RE: New MPN ID", &format!("Our new Partner ID is 7245527.{SIG_EN}\nFrom: Cloud Team <cloud@mpnd-dist.example>\nSent: Monday, November 17, 2025 9:00 AM\nTo: Olivia Green <ops@greenway-it.example>\nSubject: New MPN ID required\n\nYour current MPN ID 5520413 is no longer valid. New MPN ID: 7245599\n")).build(),
            apply("7245527"),
        ),
        (
            "original message marker",
            msg(EN, "RE: ID", "Location ID: 7245528\n\n-----Original Message-----\nPartner ID 7245598 was the example we sent\n").build(),
            apply("7245528"),
        ),
        (
            "ursprüngliche nachricht marker",
            msg(DE, "AW: ID", "Standort-ID: 6831218\n\n-----Ursprüngliche Nachricht-----\nneue Standort-ID 6831298 bitte\n").build(),
            apply("6831218"),
        ),
        (
            "on … wrote without > prefixes",
            msg(EN, "Re: ID", "Here it is: new PLA ID 7245529\n\nOn Mon, 17 Nov 2025 at 09:00, Cloud Team <cloud@mpnd-dist.example> wrote:\nPlease send your new MPN ID 7245597 to us.\n").build(),
            apply("7245529"),
        ),
        (
            "am … schrieb (thunderbird)",
            msg(DE, "Re: ID", "Hallo,\nneue MPN-ID 6831219.\n\nAm 17.11.2025 um 09:00 schrieb Cloud Team:\n> Ihre neue MPN-ID 6831297?\n").build(),
            apply("6831219"),
        ),
        (
            "gmail attribution on two lines",
            msg(DE, "Re: ID", "Neue Partner-ID 6831220\n\nAm Mo., 17. Nov. 2025 um 09:00 Uhr schrieb Cloud Team <\ncloud@mpnd-dist.example>:\nBitte senden Sie die neue Partner-ID 6831296\n").build(),
            apply("6831220"),
        ),
        (
            "only the quote has an ID",
            msg(DE, "AW: Ihre neue MPN-ID wurde hinterlegt", "Danke, erledigt!\n\nVon: Cloud Team <cloud@mpnd-dist.example>\nGesendet: Montag\nAn: Falk\nBetreff: Ihre neue MPN-ID wurde hinterlegt\n\nIhre neue MPN-ID 6831221 wurde hinterlegt.\n").build(),
            none(),
        ),
        (
            "reply subject carries our ID",
            msg(DE, "AW: Ihre MPN-ID 4412987 wurde widerrufen", "Wir kümmern uns darum und melden uns.\n\nGruß Falk").build(),
            none(),
        ),
    ]);
}

/// Round D (blind fixtures): what the author writes into a reply's subject, numbers
/// offered as alternatives, a place word under "which one?", "für mein Konto:".
#[test]
fn edited_subjects_alternatives_and_owners() {
    let notice = "\n\nVon: Cloud Team <cloud@mpnd-dist.example>\nGesendet: Montag\nAn: Falk\nBetreff: Neue MPN-ID erforderlich\n\nIhre MPN-ID 4412987 ist ungültig. Bitte senden Sie die neue (z. B. 1234567).\n";
    let notice_en = "\n\nFrom: Cloud Team <cloud@mpnd-dist.example>\nSent: Monday\nTo: Olivia Green\nSubject: Your MPN ID 5520413 is revoked\n\nYour MPN ID 5520413 is no longer valid. Please send the new one (e.g. 1234567).\n";
    run_cases(vec![
        // A reply's subject the author extended or rewrote is the author's text.
        (
            "reply subject extended by the author",
            msg(DE, "AW: Neue MPN-ID erforderlich - unsere ist 6831250", &format!("siehe Betreff.{notice}")).build(),
            apply("6831250"),
        ),
        (
            "reply subject rewritten by the author",
            msg(EN, "RE: New location ID 7245560", &format!("See subject.{notice_en}")).build(),
            apply("7245560"),
        ),
        // … but a number our subject or our mail already had is not the author's.
        (
            "reply subject only repeats ours",
            msg(EN, "RE: Your MPN ID 5520413 is revoked", &format!("We are on it.{notice_en}")).build(),
            none(),
        ),
        (
            "reply subject tagged, our number in it",
            msg(EN, "RE: [EXT] Your MPN ID 5520413 is revoked", &format!("We are on it.{notice_en}")).build(),
            none(),
        ),
        (
            "reply subject repeats the example",
            msg(DE, "AW: Neue MPN-ID erforderlich (1234567?)", &format!("Was genau brauchen Sie?{notice}")).build(),
            none(),
        ),
        // Without the quoted header block a reply's subject stays ours.
        (
            "reply subject without a quoted header",
            msg(DE, "AW: Ihre MPN-ID 4412987 wurde widerrufen", "Wir kümmern uns darum.\n\nGruß Falk").build(),
            none(),
        ),
        // Two numbers offered as alternatives: neither is stated.
        (
            "oder, laut Kollegen",
            msg(DE, "Partner-ID", "unsere neue Partner-ID ist die 6831251 – oder, laut meinem Kollegen, die 6831215. Können Sie das prüfen?").build(),
            ambiguous(),
        ),
        ("x or y", msg(EN, "New ID", "Our new location ID is 7245561 or 7245516, I will confirm tomorrow.").build(), ambiguous()),
        ("bzw.", msg(DE, "Neue ID", "Neue MPN-ID: 6831252 bzw. 6831225").build(), ambiguous()),
        // … but not when the other is no candidate.
        ("ticket or id", msg(EN, "New ID", "Re ticket 7702145 or our new Partner ID 7245562: please update.").build(), apply("7245562")),
        ("old or new", msg(DE, "Neue ID", "Nicht mehr die alte 4412987 oder irgendeine andere: die neue MPN-ID ist 6831253.").build(), apply("6831253")),
        // "Which one?": a place word (head office) is no global-account statement.
        (
            "two locations, which one",
            msg(EN, "Two location IDs", "We now have two location IDs:\n\nManchester (head office): 7245563\nLeeds: 7245564\n\nNot sure which one should be linked to our account.").build(),
            ambiguous(),
        ),
        (
            "pga and pla named, which one",
            msg(DE, "IDs", "PGA: 6831254\nPLA: 6831255\nWelche davon brauchen Sie?").build(),
            apply("6831255"),
        ),
        // "für mein Konto:" names the owner of the ID, not the number.
        ("für mein Konto:", msg(DE, "neue MPN-ID", "Neue MPN-ID für mein Konto: 6831256\n\nBitte umstellen.").build(), apply("6831256")),
        ("for our account:", msg(EN, "new ID", "New Partner ID for our account: 7245565").build(), apply("7245565")),
        (
            "für unser Konto <number>",
            msg(DE, "neue MPN-ID", "Bitte die neue MPN-ID für unser Konto 40078125 eintragen, sie kommt morgen.").build(),
            none(),
        ),
    ]);
}

/// Round H (blind fixtures): a registered contact may give the ID of another
/// company by name (a customer it looks after, a company it acquired); the name of
/// the sender's own company (or its domain) is fine; Microsoft holds no one's ID.
#[test]
fn named_holders_of_the_id() {
    run_cases(vec![
        (
            "der Firma des Absenders",
            msg(DE, "Partner-ID", "Die neue Partner-ID der Falkenstein Systemhaus GmbH lautet: 6831260").build(),
            apply("6831260"),
        ),
        (
            "der Firma eines anderen",
            msg(DE, "Partner-ID", "ich schreibe im Auftrag der Förde IT GmbH.\n\nDie neue Partner-ID der Förde IT GmbH lautet: 6831261").build(),
            id("6831261", Decision::Review),
        ),
        (
            "name right after the number",
            msg(DE, "Neue MPN-ID", "Neue MPN-ID: 6831262 (Förde IT GmbH)").build(),
            id("6831262", Decision::Review),
        ),
        (
            "another company's, possessive",
            msg(EN, "New ID", "Redwood Lane's new location ID is 7245570. Please put it on their account.").build(),
            id("7245570", Decision::Review),
        ),
        (
            "own company's, possessive",
            msg(EN, "New ID", "Greenway's new location ID is 7245571.").build(),
            apply("7245571"),
        ),
        (
            "Microsoft's",
            msg(EN, "New ID", "Microsoft's new Partner ID for us is 7245572.").build(),
            apply("7245572"),
        ),
        // A name of common words alone tells nothing.
        (
            "common words only",
            msg(DE, "Neue ID", "Die neue MPN-ID der IT Service GmbH: 6831263").build(),
            apply("6831263"),
        ),
        // "Sie." ends a sentence: the keyword before it names the first number only.
        (
            "Sie. ends the sentence",
            msg(DE, "Re: zwei Nummern", "die 6831264 ist die Standort-ID (PLA) – die brauchen Sie. Die 6831246 ist unser globales Konto, die bitte nicht eintragen.").build(),
            apply("6831264"),
        ),
    ]);
}

/// Round H: a bare number the author repeats from the quoted thread takes the name
/// the quote gives it, read in full: new (or unsaid) and the sender's own only.
#[test]
fn numbers_repeated_from_the_quote() {
    let quote = |line: &str| {
        format!("\n\nAm 10.11.2026 schrieb Sebastian Falk <einkauf@falkenstein-sh.example>:\n> Hallo,\n>\n> {line}\n>\n> Gruß S. Falk\n")
    };
    run_cases(vec![
        (
            "repeat of the quoted new ID",
            msg(
                DE,
                "Re: Neue Partner-ID",
                &format!(
                    "klar, hier nochmal von der Firmenadresse: 6831270{}",
                    quote("unsere neue Partner-ID ist 6831270, bitte eintragen.")
                ),
            )
            .build(),
            apply("6831270"),
        ),
        (
            "repeat of a number the quote calls old",
            msg(
                DE,
                "Re: Partner-ID",
                &format!(
                    "hier nochmal: 6831271{}",
                    quote("unsere bisherige Partner-ID 6831271 ist gesperrt.")
                ),
            )
            .build(),
            id("6831271", Decision::Review),
        ),
        (
            "repeat of a customer's ID from the quote",
            msg(
                DE,
                "Re: Partner-ID",
                &format!(
                    "hier nochmal: 6831272{}",
                    quote("die Partner-ID unseres Kunden ist 6831272.")
                ),
            )
            .build(),
            id("6831272", Decision::Review),
        ),
        (
            "repeat of the quoted global account",
            msg(
                DE,
                "Re: Partner-ID",
                &format!(
                    "hier nochmal: 6831273{}",
                    quote("unsere globale Konto-ID (PGA) ist 6831273.")
                ),
            )
            .build(),
            id("6831273", Decision::Review),
        ),
    ]);
}

/// Round I (a blind twin of the corpus): "registered" as a verb labels nothing
/// (only "Registered in/No./office" does), and commas separate thousands or list.
#[test]
fn registered_as_a_verb_and_commas() {
    run_cases(vec![
        (
            "we registered as an indirect reseller",
            msg(EN, "IDs", "The location-level PartnerID for our Leeds office - that's the location we registered as an indirect reseller - is 7245580. Partner Center also shows a global PGA ID of 7245558.").build(),
            apply("7245580"),
        ),
        (
            "registered both offices, which one",
            msg(EN, "Two location IDs", "We registered both offices, so we have two location IDs:\n\nHexham office: 7245582\nNewcastle office: 7245583\n\nCould you pick the right one?").build(),
            ambiguous(),
        ),
        (
            "Registered in England stays a label",
            msg(EN, "New ID", "Our new Partner ID is 7245584.\n\nGreenway IT Ltd\nRegistered in England No. 08123456").build(),
            apply("7245584"),
        ),
        ("thousands commas", msg(EN, "New ID", "Our new Partner ID is 7,245,585 (location).").build(), apply("7245585")),
        ("a comma list", msg(DE, "Neue IDs", "Unsere neuen MPN-IDs: 6831282,6831283").build(), ambiguous()),
        // A plural keyword's "new" is said of each number it names.
        ("neuen MPN-IDs: x und y", msg(DE, "Neue IDs", "Unsere neuen MPN-IDs: 6831284 und 6831285").build(), ambiguous()),
        ("neue Partner-IDs: x / y", msg(DE, "Neue IDs", "Neue Partner-IDs: 6831286 / 6831287").build(), ambiguous()),
    ]);
}

/// Round J (a second blind twin): a replacement without a keyword takes the name of
/// the number it replaces; Swiss apostrophes separate thousands.
#[test]
fn replacements_and_swiss_separators() {
    let earlier = |line: &str| {
        format!("\n\n-----Ursprüngliche Nachricht-----\nVon: Sebastian Falk <einkauf@falkenstein-sh.example>\nGesendet: Montag, 2. November 2026 10:14\nAn: cloud@mpnd-dist.example\nBetreff: Neue Partner-ID\n\n{line}\n\nGruß S. Falk\n")
    };
    run_cases(vec![
        (
            "statt x bitte y, x named in the quote",
            msg(DE, "AW: Neue Partner-ID", &format!("Korrektur, da hab ich mich vertippt: statt 6831290 bitte 6831209 eintragen.{}", earlier("hiermit die neue Partner-ID: 6831290"))).build(),
            apply("6831209"),
        ),
        (
            "instead of x please use y",
            msg(EN, "RE: New ID", "Sorry - instead of 7245590 please use 7245509.\n\n> Our new location ID: 7245590\n").build(),
            apply("7245509"),
        ),
        (
            "statt x bitte y, x named nowhere",
            msg(DE, "Korrektur", "statt 6831293 bitte 6831294 eintragen.").build(),
            none(),
        ),
        ("Swiss apostrophes", msg(DE, "Neue Partner-ID", "Die neue Partner-ID (Standort Zug) ist 6'831'295.").build(), apply("6831295")),
        ("typographic apostrophes", msg(DE, "Neue Partner-ID", "Die neue Partner-ID ist 6’831’296.").build(), apply("6831296")),
    ]);
}

/// Round K (blind safety traps): the author holding us back, a location ID still to
/// come, a keyword inside a compound ("Partner-ID-Umstellung"), a label ending in
/// an abbreviation ("Kundennr.").
#[test]
fn authors_reservations_and_pending_locations() {
    run_cases(vec![
        (
            "bitte noch nichts umstellen",
            msg(DE, "Neue ID", "ich glaube, unsere neue MPN-ID ist 6831300, bin mir aber nicht sicher. Bitte noch nichts umstellen.").build(),
            none(),
        ),
        // The next sentence asks about it: asked, not stated (as round K labels it).
        (
            "ist das die richtige?",
            msg(DE, "Frage Partner-ID", "im Partner Center steht jetzt die Partner-ID 6831301. Ist das die richtige?").build(),
            none(),
        ),
        (
            "please don't change anything yet",
            msg(EN, "New ID", "Our new Partner ID is 7245600. Please don't change anything yet, we are double-checking.").build(),
            none(),
        ),
        // Said of the old ID or of an earlier mail's number: no reservation.
        (
            "die alte bitte nicht mehr verwenden",
            msg(DE, "Neue ID", "Unsere neue MPN-ID ist 6831302. Die alte bitte nicht mehr verwenden.").build(),
            apply("6831302"),
        ),
        (
            "the number from my first mail",
            msg(DE, "Korrektur", "Die richtige Standort-ID lautet 6831303. Die Nummer aus meiner ersten Mail bitte nicht verwenden.").build(),
            apply("6831303"),
        ),
        (
            "own location ID still to come",
            msg(DE, "Frage", "Vorab die MPN-ID 6831304 aus dem Portal. Unsere eigene neue Standort-ID haben wir noch nicht.").build(),
            none(),
        ),
        (
            "waiting for our location ID",
            msg(DE, "WG: Partner-ID", "zur Info: die neue Partner-ID unserer Partnerfirma ist 6831305. Wir selbst warten noch auf unsere Standort-ID.").build(),
            none(),
        ),
        (
            "Partner-ID-Umstellung names a switch",
            msg(DE, "Frage", "Wie lange dauert es noch? Unsere Bestellung zur Partner-ID-Umstellung: 4503962 hängt.").build(),
            none(),
        ),
        (
            "Kundennr. labels its number",
            msg(DE, "Neue Partner-ID", "Kundennr. 10448213 · neue Partner-ID (Standort/PLA) 6831306 · registriert am 12.11.2026").build(),
            apply("6831306"),
        ),
    ]);
}

/// Rounds L and M (blind fixtures): what points back, what is withdrawn, whose
/// question it is, what a reader sees, and where else the author puts the ID.
#[test]
fn pointers_withdrawals_and_what_the_reader_sees() {
    let mixed = |text: &str, attachment: &str| {
        format!(
            "--mix\nContent-Type: text/plain; charset=utf-8\n\n{text}\n--mix\nContent-Type: text/plain; charset=utf-8\nContent-Disposition: attachment; filename=\"ids.txt\"\n\n{attachment}\n--mix--\n"
        )
    };
    run_cases(vec![
        (
            "it is … points back at the sentence naming the ID",
            msg(EN, "Renewal blocked", "Joseph already sent you our new partner location ID on 13 November. For the avoidance of doubt it is 7245610 - the old one (5520413) should not be used any more.").build(),
            apply("7245610"),
        ),
        (
            "noch einmal: … points back",
            msg(DE, "Bestellung hängt", "Herr Falk hatte Ihnen unsere neue Partner-ID bereits geschickt. Zur Sicherheit noch einmal: 6831310 (Standort Chemnitz).").build(),
            apply("6831310"),
        ),
        (
            "pointing back at an order number names nothing",
            msg(DE, "Bestellung hängt", "Unsere Bestellnummer haben Sie ja. Zur Sicherheit noch einmal: 6831311.").build(),
            none(),
        ),
        (
            "a correction and the withdrawn number after it",
            msg(DE, "Re: Neue Standort-ID", "Korrektur - mir sind zwei Ziffern durcheinandergeraten.\n\nRichtig ist: 6831313\n\nDie 6831331 aus meiner Mail von heute früh bitte verwerfen.\n\n> Am 20.11.2025 um 08:12 schrieb Sebastian Falk:\n> Neue Standort-ID: 6831331\n").build(),
            apply("6831313"),
        ),
        (
            "our question in a reply's subject is not the author's",
            msg(EN, "Re: Which Partner ID do you need?", "Partner Center lists PartnerID 7245611 for the company as a whole (that's the global account) and 7245612 for our Leeds location, the one enrolled as indirect reseller.").build(),
            apply("7245612"),
        ),
        (
            "a comma inside the note ends no clause",
            msg(DE, "Re: Zwei Partner-IDs", "Ich habe im Partner Center unter Kontoeinstellungen nachgeschaut: Die 6831314 ist die Standort-ID (PLA, Zwickau), die 6831341 ist das globale Konto (PGA).").build(),
            apply("6831314"),
        ),
        (
            "not transactional is no location",
            msg(EN, "Partner IDs", "<table><tr><th>Item</th><th>Previous</th><th>Now</th></tr><tr><td>Partner location ID (PLA) - use for CSP</td><td>5520413</td><td>7245613</td></tr><tr><td>Partner global account (PGA) - not transactional</td><td>-</td><td>7245631</td></tr></table>").html().build(),
            apply("7245613"),
        ),
        (
            "a dash ends the order's statement in the subject",
            msg(DE, "Bestellung 4410726 weiterhin gesperrt - Partner-ID 6831315", "Guten Morgen,\nunsere Bestellung hängt weiterhin. Die neue ID hatten wir Ihnen geschickt.").build(),
            apply("6831315"),
        ),
        (
            "the current one, set against the new one, is old",
            msg(EN, "Re: Action needed", "Will the new ID look anything like our current one (7810442), or is it a completely different number?").build(),
            none(),
        ),
        (
            "a forward the iPhone marked with >",
            msg(DE, "WG: Ihre Registrierung ist abgeschlossen", "Hier die Bestätigung von Microsoft.\n\nVon meinem iPhone gesendet\n\n> Anfang der weitergeleiteten Nachricht:\n>\n> Von: Microsoft Partner Center <pcnotifications@microsoft.example>\n> Betreff: Ihre Registrierung ist abgeschlossen\n>\n> Standort-ID (PartnerID): 6831316\n> Globales Partnerkonto (PGA): 6831361\n").build(),
            apply("6831316"),
        ),
        (
            "full-width digits",
            msg(EN, "New Partner ID", "Our new Partner ID (PLA) is ７２４５６１４.").build(),
            apply("7245614"),
        ),
        (
            "a text file attached",
            msg(DE, "Partner-ID", &mixed("anbei die Identifikatoren aus dem Partner Center als Textdatei. Bitte nehmen Sie die Standort-ID.", "Partner Global Account (PGA): 6831317\nPartner Location Account (PLA) Chemnitz: 6831318")).content_type("multipart/mixed; boundary=\"mix\"").build(),
            apply("6831318"),
        ),
        (
            "a stale plain text, the HTML naming its ID old",
            msg(EN, "Updated partner details", &alternative("Microsoft Partner ID: 5520413", "<table><tr><td>Microsoft Partner ID (new location / PLA)</td><td>7245615</td></tr><tr><td>Replaces</td><td>5520413 (revoked by Microsoft)</td></tr></table>")).content_type(ALTERNATIVE).build(),
            apply("7245615"),
        ),
        (
            "plain and HTML with different new IDs: neither",
            msg(EN, "New Partner ID", &alternative("Our new Partner ID is 7245616.", "Our new Partner ID is 7245661.")).content_type(ALTERNATIVE).build(),
            ambiguous(),
        ),
        (
            "a hidden preheader is not read",
            msg(DE, "Neue Partner-ID", &alternative("Unsere neue Partner-ID lautet 6831319.", "<div style=\"display: none\">Neue Partner-ID 6831391 <div>x</div> bitte umstellen</div><p>Unsere neue Partner-ID lautet 6831319.</p>")).content_type(ALTERNATIVE).build(),
            apply("6831319"),
        ),
    ]);
}

/// Round O (blind safety traps): whose ID it is, when it was, whether it exists yet,
/// and questions about a number.
#[test]
fn whose_when_and_whether_yet() {
    run_cases(vec![
        (
            "their Partner ID: a sub-distributor's",
            msg(EN, "Partner ID for our account", "We will work through CloudBridge Partners Ltd, who act as a sub-distributor. Their Partner ID is 7245620. Could you please put 7245620 on our account?").build(),
            none(),
        ),
        (
            "a partner's mail forwarded for information",
            msg(DE, "WG: Unsere neue Partner-ID", "nur zur Info, unten die Mail unseres Kooperationspartners.\n\nVon: Peter Hansen <p.hansen@foerde-it.example>\nGesendet: Mittwoch, 19. November 2025 16:38\nAn: Sebastian Falk <einkauf@falkenstein-sh.example>\nBetreff: Unsere neue Partner-ID\n\nMoin, wir sind wieder registriert, unsere neue Partner-ID ist 6831321.\n").build(),
            id("6831321", Decision::Review),
        ),
        (
            "a colleague's mail forwarded is the sender's own",
            msg(DE, "WG: Unsere neue Partner-ID", "anbei die Mail meines Kollegen.\n\nVon: Jana Falk <j.falk@falkenstein-sh.example>\nGesendet: Mittwoch, 19. November 2025 16:38\nAn: Sebastian Falk <einkauf@falkenstein-sh.example>\nBetreff: Unsere neue Partner-ID\n\nUnsere neue Partner-ID ist 6831322.\n").build(),
            apply("6831322"),
        ),
        (
            "the ID a location got back then",
            msg(DE, "Frage", "Wir hatten 2023 schon einmal einen zweiten Standort angelegt. Der hat damals die ID 6831323 bekommen, wurde aber deaktiviert. Können wir diese wieder aktivieren lassen?").build(),
            none(),
        ),
        (
            "wird … die X sein: expected, not issued",
            msg(DE, "Neuregistrierung - ID reserviert", "Wenn Microsoft die Registrierung genehmigt, wird unsere neue Standort-ID die 6831324 sein.").build(),
            none(),
        ),
        (
            "will be X: expected, not issued",
            msg(EN, "Re-enrolment", "Microsoft is still reviewing our application. Our new location ID will be 7245621.").build(),
            none(),
        ),
        (
            "the subject's number is the old one, bitte ersetzen",
            msg(DE, "Partner-ID 4412987 bitte ersetzen", "die Nummer im Betreff ist unsere alte ID, die ist ja gesperrt.\nNeue Standort-ID: 6831325\n").build(),
            apply("6831325"),
        ),
        (
            "a question about the current ID",
            msg(EN, "Re: Action required", "And our current ID 5520413 - does that simply stop working, or do we have to close it ourselves?").build(),
            none(),
        ),
        (
            "the next sentence asks about it",
            msg(DE, "Gilt unsere Partner-ID weiter?", "Im Partner Center steht nach wie vor die Partner-ID 44 12 987 mit dem Status „Aktiv“. Gilt die nicht einfach weiter?").build(),
            none(),
        ),
        (
            "reicht Ihnen die? holds back",
            msg(DE, "Standort-ID", "unsere Niederlassung hat heute von Microsoft die Standort-ID 6831326 bekommen. Reicht Ihnen die erst mal für unser Konto?").build(),
            none(),
        ),
    ]);
}

/// Round N (blind twin): a plain-text table's column headers, and a note inside
/// the keyword's phrase.
#[test]
fn plain_text_tables_and_notes() {
    run_cases(vec![
        (
            "a plain-text table: alt and neu over their columns",
            msg(DE, "Stammdaten: MPN-ID alt/neu", "anstelle unserer bisherigen MPN-ID bitte ab sofort die neue Standort-ID verwenden:\n\n                    alt (gesperrt)        neu\nMPN-/Partner-ID     4412987               6831327\nKundennummer        100877                (unverändert)\n").build(),
            apply("6831327"),
        ),
        (
            "a plain-text table: the new column first",
            msg(EN, "Partner IDs", "Here are our IDs:\n\n                 new          previous\nPartner ID       7245622      5520413\n").build(),
            apply("7245622"),
        ),
        (
            "a word in a closed note labels nothing",
            msg(EN, "Re: Partner Center IDs", "The ID for our transacting location (Reading - the one enrolled as indirect reseller and linked to the new tenant) is 7245623. The other number, 7245632, is the HQ/global account.").build(),
            apply("7245623"),
        ),
    ]);
}

/// What the operator is shown: every number the author wrote, but of the numbers
/// that lost only for standing in quoted history without an ID keyword (dates,
/// orders, phone numbers of the mails answered) no more than four.
#[test]
fn reported_candidates_leave_out_most_bare_quoted_numbers() {
    let quote: String = (0..12)
        .map(|i| {
            format!(
                "> Bestellung {} vom 12.11.2025 ist bestätigt.\n",
                4_500_100 + i * 37
            )
        })
        .collect();
    let body = format!(
        "Unsere neue Partner-ID lautet 6831320.\n\nAm 17.11.2025 schrieb Cloud Team <cloud@mpnd-dist.example>:\n> Ihre bisherige MPN-ID 4412987 ist ungültig.\n{quote}"
    );
    let t = triage(
        &msg(DE, "AW: Partner-ID", &body).build(),
        &test_registry(),
        &test_policy(),
    );
    assert_eq!(t.mpn_id.as_ref().map(|m| m.as_str()), Some("6831320"));
    assert!(
        t.candidates[0].verdict.starts_with("chosen"),
        "{:?}",
        t.candidates[0]
    );
    let bare_quoted = t
        .candidates
        .iter()
        .filter(|c| c.source.starts_with("quoted") && c.keyword.is_none())
        .count();
    assert_eq!(bare_quoted, 4, "{:?}", t.candidates);
    // The quoted number with a keyword (our notice's old ID) is still shown.
    assert!(
        t.candidates.iter().any(|c| c.id == "4412987"),
        "{:?}",
        t.candidates
    );
}

/// Round E (blind fixtures): answers written between the lines of our mail, and a
/// number stated as the new ID that also follows a loose label.
#[test]
fn answers_between_quoted_lines_and_loose_labels() {
    let asked = |answer: &str| {
        format!(
            "Hallo,\nmeine Antworten stehen unten im Text.\n\nGruß\nSebastian Falk\n\nAm 17.11.2025 um 09:00 schrieb Cloud Team <cloud@mpnd-dist.example>:\n> Ihre bisherige MPN-ID 4412987 ist ungültig.\n\nVerstanden.\n\n> Bitte senden Sie uns Ihre neue Standort-ID (z. B. 1234567).\n\n{answer}\n\n> Mit freundlichen Grüßen\n> Cloud Team\n"
        )
    };
    run_cases(vec![
        ("answer below the question", msg(DE, "Re: Neue MPN-ID", &asked("Gerne, hier ist sie: 6831260")).build(), apply("6831260")),
        ("answer says what it is", msg(DE, "Re: Neue MPN-ID", &asked("Ticket 6831263 ist bei Microsoft offen, die ID kommt noch.")).build(), none()),
        (
            "answer below a line that asks for nothing new",
            msg(DE, "Re: Neue MPN-ID", "Hallo,\n\nGruß\nFalk\n\nAm 17.11.2025 schrieb Cloud Team <cloud@mpnd-dist.example>:\n> Ihre bisherige MPN-ID 4412987 ist ungültig.\n\nDas wissen wir, 6831264 ist beantragt.\n").build(),
            id("6831264", Decision::Review),
        ),
        (
            "stated new, then after a loose label",
            msg(DE, "Neue Standort-ID", "unsere neue Standort-ID lautet 6831261.\n\nBitte hinterlegen Sie an unserem Konto und an den bestehenden Subscriptions ausschließlich die 6831261.").build(),
            apply("6831261"),
        ),
        (
            "labelled, never stated new",
            msg(DE, "Frage", "Bitte prüfen Sie die Bestellung 6831262, die 6831262 ist dringend.").build(),
            none(),
        ),
    ]);
}

#[test]
fn forwarded_confirmations() {
    let ms_de = "Willkommen im Microsoft AI Cloud Partner Program\n\nUnternehmen: Falkenstein Systemhaus GmbH\nPartner-ID (Standort): 6831222\nPartner Global Account ID: 6831200\nTenant-ID: 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\n";
    let ms_en = "Your enrollment is complete.\n\nPartnerID (location): 7245530\nPartner global account ID: 7245501\n";
    let attached = format!(
        "--b1\nContent-Type: text/plain; charset=utf-8\n\nPlease see the attached confirmation from Microsoft.\n\nOlivia\n--b1\nContent-Type: message/rfc822\n\nFrom: Microsoft Partner Center <partnercenter-noreply@microsoft.example>\nSubject: Welcome\nContent-Type: text/plain; charset=utf-8\n\n{ms_en}\n--b1--\n"
    );
    let own_notice = "---------- Forwarded message ---------\nFrom: Cloud Team <cloud@mpnd-dist.example>\nDate: Mon, 17 Nov 2025\nSubject: MPN-ID\nTo: <einkauf@falkenstein-sh.example>\n\nIhre neue MPN-ID 6831223 wurde hinterlegt.\n";
    run_cases(vec![
        (
            "thunderbird inline forward (de)",
            msg(DE, "WG: Willkommen", &format!("Zur Info.\n\n-------- Weitergeleitete Nachricht --------\nBetreff: Willkommen\nDatum: Mon, 17 Nov 2025\nVon: Microsoft <pc@microsoft.example>\nAn: einkauf@falkenstein-sh.example\n\n{ms_de}")).build(),
            apply("6831222"),
        ),
        (
            "apple begin forwarded message (en)",
            msg(EN, "Fwd: Welcome", &format!("FYI\n\nBegin forwarded message:\n\nFrom: Microsoft <pc@microsoft.example>\nSubject: Welcome\nDate: 17 November 2025\nTo: ops@greenway-it.example\n\n{ms_en}")).build(),
            apply("7245530"),
        ),
        (
            "message/rfc822 attachment",
            msg(EN, "Fwd: Welcome", "").content_type("multipart/mixed; boundary=\"b1\"").raw_body(attached.as_bytes()).build(),
            apply("7245530"),
        ),
        (
            "outlook WG: block forward",
            msg(DE, "WG: Willkommen im Microsoft AI Cloud Partner Program", &format!("Anbei die Bestätigung.\n\nVon: Microsoft Partner Center <pc@microsoft.example>\nGesendet: Montag, 17. November 2025 08:00\nAn: Falk\nBetreff: Willkommen\n\n{ms_de}")).build(),
            apply("6831222"),
        ),
        ("forward of our own notice", msg(DE, "WG: MPN-ID", &format!("Bitte prüfen.\n\n{own_notice}")).build(), none()),
    ]);
}

#[test]
fn signatures_pga_pla_old_new_and_corrections() {
    run_cases(vec![
        (
            "signature with old id after --",
            msg(DE, "Neue Partner-ID", "Bitte tragen Sie als neue Partner-ID die 6831224 ein.\n\n-- \nFalkenstein Systemhaus GmbH\nMicrosoft Partner · MPN-ID 4412987\n").build(),
            apply("6831224"),
        ),
        (
            "signature with old id after regards",
            msg(EN, "New ID", "Our new Partner ID is 7245531.\n\nBest regards,\nOlivia Green\nMicrosoft Partner ID 5520413\n").build(),
            apply("7245531"),
        ),
        ("signature only", msg(EN, "Question", "When will our orders work again?\n\nBest regards,\nOlivia\nMPN ID 7245532\n").build(), none()),
        ("pga and pla lines", msg(DE, "Neue IDs", "PGA: 6831225\nPLA: 6831235\n").build(), apply("6831235")),
        ("global account and location", msg(EN, "IDs", "Global Account ID 7245533, Location ID 7245534.").build(), apply("7245534")),
        (
            "pla first in prose",
            msg(EN, "IDs", "Our location (PLA) ID is 7245535; the global account (PGA) is 7245502.").build(),
            apply("7245535"),
        ),
        ("annotations after numbers", msg(DE, "IDs", "MPN-ID: 6831226 (PGA) und 6831236 (PLA)").build(), apply("6831236")),
        (
            "only a pga",
            msg(EN, "New PGA", "Our new PGA ID is 7245536.").build(),
            none(),
        ),
        ("alte / neue on one line", msg(DE, "MPN-ID", "alte MPN-ID: 4412987, neue MPN-ID: 6831227").build(), apply("6831227")),
        ("old -> new", msg(EN, "ID change", "old ID 5520413 -> new ID 7245537").build(), apply("7245537")),
        ("note with the old id", msg(DE, "MPN-ID", "Neue MPN-ID 6831246 (vorher 4412987)").build(), apply("6831246")),
        ("x ersetzt y", msg(DE, "MPN-ID", "Die MPN-ID 6831247 ersetzt die alte 4412987.").build(), apply("6831247")),
        ("ersetzt durch", msg(DE, "Änderung", "Die bisherige Partner-ID 4412987 wird ersetzt durch 6831228.").build(), apply("6831228")),
        ("vorher / jetzt", msg(DE, "MPN-ID Änderung", "MPN-ID vorher 4412987, jetzt 6831229").build(), apply("6831229")),
        ("only the ehemalige", msg(DE, "MPN", "Unsere ehemalige ID 4412987 ist gesperrt, wie geht es weiter?").build(), none()),
        (
            "previous then new one",
            msg(EN, "MPN", "Our previous MPN ID was 5520413, the new one is 7245538.").build(),
            apply("7245538"),
        ),
        ("Korrektur (nicht)", msg(DE, "Korrektur: MPN-ID", "Korrektur: richtig ist die MPN-ID 6831230 (nicht 6831203).").build(), apply("6831230")),
        (
            "correct … not …",
            msg(EN, "Correction", "Sorry, typo in my last mail - the correct Partner ID is 7245539, not 7245593.").build(),
            apply("7245539"),
        ),
        (
            "verwenden Sie … statt …",
            msg(DE, "Korrektur Partner-ID", "Bitte verwenden Sie 6831242 statt 6831224, da war ein Tippfehler drin.").build(),
            apply("6831242"),
        ),
        (
            "the right one is",
            msg(EN, "Re-sent: MPN ID", "Ignore my last mail, the right one is 7245546 (not 7245564).").build(),
            apply("7245546"),
        ),
        (
            "correction beats the wrong subject",
            msg(DE, "Neue MPN-ID 6831203", "Korrektur: die richtige MPN-ID ist 6831230, die 6831203 war falsch.").build(),
            apply("6831230"),
        ),
        ("example in own text", msg(DE, "Frage", "Ist die Standort-ID so etwas wie z. B. 6831231?").build(), none()),
        (
            "correction that names the wrong ID first",
            msg(EN, "RE: New MPN ID", "Sorry, I made a typo this morning. Please do not use 7245581, the correct MPN ID is 7245518.").build(),
            apply("7245518"),
        ),
        (
            "German: verwenden Sie nicht …, richtig ist …",
            msg(DE, "AW: Neue MPN-ID", "Verwenden Sie bitte nicht die 6831273 aus meiner Mail von heute früh, die richtige MPN-ID ist 6831237.").build(),
            apply("6831237"),
        ),
    ]);
}

#[test]
fn distractor_numbers() {
    run_cases(vec![
        (
            "customer order invoice (de)",
            msg(DE, "Partner-ID / Auftrag 7004512", "Kundennummer 1004711, Rechnung 2025004711, Auftrag 7004512:\nunsere neue MPN-ID ist 6831232.").build(),
            apply("6831232"),
        ),
        (
            "invoice case po (en)",
            msg(EN, "Case 7300013", "Invoice 7300012 and PO 7300014 are blocked (case 7300013). Our new MPN ID is 7245540.").build(),
            apply("7245540"),
        ),
        ("phone number", msg(DE, "Neue MPN-ID", "Neue MPN-ID: 6831233\nRückfragen gern unter Tel. 0171 4456789 oder 4456790.").build(), apply("6831233")),
        (
            "address iban bic vat hrb",
            msg(DE, "Neue Partner-ID", "Neue Partner-ID 6831234.\nHauptstraße 5, 80331 München\nIBAN DE12 5001 0517 0648 4898 90, BIC INGDDEFFXXX\nUSt-IdNr. DE811907980\nHRB 2231877\n").build(),
            apply("6831234"),
        ),
        ("dates", msg(DE, "MPN-ID", "Seit 18.11.2025 (bzw. 2025-11-18) lautet unsere MPN-ID 6831237.").build(), apply("6831237")),
        ("week and month with year", msg(DE, "MPN-ID", "Die MPN-ID gilt ab KW 47/2025 (Stand 11.2025): 6831243").build(), apply("6831243")),
        ("supplier number", msg(DE, "MPN-ID", "Lieferantennummer 7300088; neue MPN-ID: 6831244").build(), apply("6831244")),
        (
            "tenant guid of digits",
            msg(EN, "New ID", "New MPN ID 7245541, tenant 12345678-9012-3456-7890-123456789012.").build(),
            apply("7245541"),
        ),
        ("only distractors", msg(DE, "Bestellung blockiert", "Bestellung 4471920 ist blockiert, Ticket 7702145. Was ist mit der MPN-ID?").build(), none()),
        ("uk company number", msg(EN, "New ID", "New Partner ID: 7245542\nRegistered in England, company number 10455821").build(), apply("7245542")),
        ("support request number", msg(EN, "MPN", "Microsoft support request 2511190040009876 is still open; no new MPN ID yet.").build(), none()),
        ("verification code", msg(EN, "MPN", "Partner Center sent the verification code 4417731, the MPN ID will follow.").build(), none()),
    ]);
}

#[test]
fn bare_numbers() {
    run_cases(vec![
        (
            "two bare numbers",
            msg(
                DE,
                "Neue Partner-ID",
                "Im Partner Center stehen zwei Nummern: 6831238 und 6831239. Welche brauchen Sie?",
            )
            .build(),
            ambiguous(),
        ),
        (
            "two labelled numbers",
            msg(
                EN,
                "Partner IDs",
                "We have two Partner IDs, 7245543 and 7245544 - which one?",
            )
            .build(),
            ambiguous(),
        ),
        (
            "bare number without topic",
            msg(DE, "Rückruf", "Hallo, bitte Rückruf zu 6831250. Danke").build(),
            none(),
        ),
        (
            "single bare number in topic mail",
            msg(DE, "Neue Partner-ID", "Hier ist sie: 6831251").build(),
            id("6831251", Decision::Review),
        ),
        (
            "nothing at all",
            msg(
                DE,
                "Frage zur MPN-ID",
                "Wo finde ich die neue MPN-ID im Partner Center?",
            )
            .build(),
            none(),
        ),
    ]);
}

#[test]
fn automated_and_own_mail() {
    let body = "Neue MPN-ID: 6831252";
    let dsn = "--r1\nContent-Type: text/plain\n\nDelivery failed.\n--r1\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.falkenstein-sh.example\n\n--r1--\n";
    run_cases(vec![
        (
            "abwesenheitsnotiz subject",
            msg(DE, "Abwesenheitsnotiz: Neue MPN-ID 6831252", body).build(),
            ignored(),
        ),
        (
            "automatic reply subject",
            msg(EN, "Automatic reply: New MPN ID", body).build(),
            ignored(),
        ),
        (
            "out of office subject",
            msg(EN, "Out of Office: New MPN ID", body).build(),
            ignored(),
        ),
        (
            "automatische antwort subject",
            msg(DE, "Automatische Antwort: Ihre neue MPN-ID", body).build(),
            ignored(),
        ),
        (
            "auto-submitted",
            msg(DE, "Neue MPN-ID", body)
                .header("Auto-Submitted: auto-replied (vacation)")
                .build(),
            ignored(),
        ),
        (
            "auto-submitted no",
            msg(DE, "Neue MPN-ID", body)
                .header("Auto-Submitted: no")
                .build(),
            apply("6831252"),
        ),
        (
            "x-auto-response-suppress",
            msg(DE, "Neue MPN-ID", body)
                .header("X-Auto-Response-Suppress: All")
                .build(),
            ignored(),
        ),
        (
            "inbox rules loop",
            msg(DE, "Neue MPN-ID", body)
                .header("X-MS-Exchange-Inbox-Rules-Loop: einkauf@falkenstein-sh.example")
                .build(),
            ignored(),
        ),
        (
            "null return-path",
            msg(DE, "Neue MPN-ID", body)
                .header("Return-Path: <>")
                .build(),
            ignored(),
        ),
        (
            "list-id",
            msg(DE, "Neue MPN-ID", body)
                .header("List-Id: <news.example>")
                .build(),
            ignored(),
        ),
        (
            "list-unsubscribe",
            msg(DE, "Neue MPN-ID", body)
                .header("List-Unsubscribe: <mailto:off@news.example>")
                .build(),
            ignored(),
        ),
        (
            "precedence bulk",
            msg(DE, "Neue MPN-ID", body)
                .header("Precedence: bulk")
                .build(),
            ignored(),
        ),
        (
            "precedence list",
            msg(DE, "Neue MPN-ID", body)
                .header("Precedence: list")
                .build(),
            ignored(),
        ),
        (
            "precedence junk",
            msg(DE, "Neue MPN-ID", body)
                .header("Precedence: junk")
                .build(),
            ignored(),
        ),
        (
            "dsn multipart/report",
            msg(
                "Mail Delivery System <mailer@mx.falkenstein-sh.example>",
                "Undelivered",
                "",
            )
            .content_type("multipart/report; report-type=delivery-status; boundary=\"r1\"")
            .raw_body(dsn.as_bytes())
            .build(),
            ignored(),
        ),
        (
            "mailer-daemon from",
            msg("MAILER-DAEMON@mx.falkenstein-sh.example", "Failure", body).build(),
            ignored(),
        ),
        (
            "postmaster from",
            msg("postmaster@falkenstein-sh.example", "Failure", body).build(),
            ignored(),
        ),
        (
            "own address, other case",
            msg(
                "Cloud Team <Cloud@MPND-Dist.example>",
                "AW: Neue MPN-ID",
                body,
            )
            .build(),
            ignored(),
        ),
        (
            "reseller's cloud@ is not ours",
            msg(
                "Cloudberry <cloud@cloudberry.example>",
                "New MPN ID",
                "Our new MPN ID is 7245545.",
            )
            .build(),
            apply("7245545"),
        ),
    ]);
}

#[test]
fn contacts_and_authentication() {
    let body = "Unsere neue MPN-ID lautet 6831253.";
    let ar_fail = "Authentication-Results: mx.mpnd-dist.example; spf=fail smtp.mailfrom=x; dmarc=fail header.from=falkenstein-sh.example";
    run_cases(vec![
        ("contact by domain", msg("Anna <a.roth@falkenstein-sh.example>", "MPN", body).build(), apply("6831253")),
        ("contact case-insensitive", msg("<EINKAUF@Falkenstein-SH.example>", "MPN", body).build(), apply("6831253")),
        ("subdomain is not the domain", msg("<a@mail.falkenstein-sh.example>", "MPN", body).build(), id("6831253", Decision::Review)),
        (
            "display name pretends",
            msg("\"einkauf@falkenstein-sh.example\" <falk@phish.example>", "MPN", body).build(),
            id("6831253", Decision::Review),
        ),
        (
            "reply-to registered, from not",
            msg("<falk@other.example>", "MPN", body).header("Reply-To: einkauf@falkenstein-sh.example").build(),
            id("6831253", Decision::Review),
        ),
        ("freemail registered contact", msg("<nordlicht.edv@freemail.example>", "MPN", body).build(), apply("6831253")),
        ("freemail other address", msg("<nordlicht.it@freemail.example>", "MPN", body).build(), id("6831253", Decision::Review)),
        ("trusted dmarc fail", msg(DE, "MPN", body).auth(Some("dmarc=fail")).build(), id("6831253", Decision::Review)),
        (
            "untrusted dmarc fail is ignored",
            msg(DE, "MPN", body).header("Authentication-Results: relay.other.example; dmarc=fail header.from=x").build(),
            apply("6831253"),
        ),
        (
            "forged pass below a trusted fail",
            msg(DE, "MPN", body)
                .auth(None)
                .header(ar_fail)
                .header("Authentication-Results: mail.falkenstein-sh.example; dmarc=pass")
                .build(),
            id("6831253", Decision::Review),
        ),
        (
            "second trusted header fails",
            msg(DE, "MPN", body).header(ar_fail).build(),
            id("6831253", Decision::Review),
        ),
        ("no authentication-results", msg(DE, "MPN", body).auth(None).build(), apply("6831253")),
        (
            "dmarc=fail only in a comment",
            msg(DE, "MPN", body).auth(Some("dmarc=pass (was dmarc=fail before)")).build(),
            apply("6831253"),
        ),
        (
            "exchange internal header without authserv-id",
            msg(DE, "MPN", body).header("authentication-results: dkim=none (message not signed) header.d=none;dmarc=fail action=none header.from=x;").build(),
            apply("6831253"),
        ),
    ]);
}

#[test]
fn registry_decisions() {
    run_cases(vec![
        (
            "own old id",
            msg(DE, "MPN-ID", "Unsere MPN-ID: 4412987").build(),
            id("4412987", Decision::Reject),
        ),
        (
            "second old id of sender",
            msg(
                "<it@moorland-it.example>",
                "MPN-ID",
                "Unsere MPN-ID: 4170266",
            )
            .build(),
            id("4170266", Decision::Reject),
        ),
        (
            "other reseller's old id",
            msg(DE, "MPN-ID", "Unsere neue MPN-ID: 5520413").build(),
            id("5520413", Decision::Reject),
        ),
        (
            "other reseller's current id",
            msg(DE, "MPN-ID", "Unsere neue MPN-ID: 7810442").build(),
            id("7810442", Decision::Reject),
        ),
        (
            "own current id again",
            msg(EN, "MPN ID", "Our new MPN ID: 7810442").build(),
            id("7810442", Decision::Review),
        ),
        (
            "review beats reject",
            msg("<x@unknown.example>", "MPN-ID", "Neue MPN-ID: 4412987").build(),
            id("4412987", Decision::Review),
        ),
    ]);
    let t = triage(
        &msg(DE, "MPN-ID", "Unsere neue MPN-ID: 7810442").build(),
        &test_registry(),
        &test_policy(),
    );
    assert_eq!(
        t.reject,
        Some(RejectReason::OtherResellersId {
            account: "R-30002".into()
        })
    );
    assert_eq!(t.reseller.as_deref(), Some("R-30001"));
    let t = triage(
        &msg(EN, "MPN ID", "Our new MPN ID: 7810442").build(),
        &test_registry(),
        &test_policy(),
    );
    assert!(
        t.reasons
            .iter()
            .any(|r| r.contains("already the current ID of R-30002")),
        "{:?}",
        t.reasons
    );
    // Still being applied: the reseller repeating it joins that update, while
    // for anyone else it stays taken.
    let mut updating = test_registry();
    for r in &mut updating.resellers {
        r.updating = r.current_id.is_some();
    }
    let own = triage(
        &msg(EN, "MPN ID", "Our new MPN ID: 7810442").build(),
        &updating,
        &test_policy(),
    );
    assert_eq!(own.decision, Decision::Apply, "{:?}", own.reasons);
    let other = triage(
        &msg(DE, "MPN-ID", "Unsere neue MPN-ID: 7810442").build(),
        &updating,
        &test_policy(),
    );
    assert_eq!(other.decision, Decision::Reject, "{:?}", other.reasons);
}

/// Round R's traps, in other words: another vendor's or program's number, a
/// mail that says the reseller's own new ID is still to come (whatever other
/// number it gives), a colleague's guess, a number disowned or held back.
#[test]
fn other_programs_and_ids_still_to_come() {
    run_cases(vec![
        (
            "another vendor's partner ID, called ours",
            msg(DE, "Partner-ID", "Für die Google-Workspace-Bestellungen lautet unsere neue Partner-ID 6831280.").build(),
            none(),
        ),
        (
            "a marketplace seller ID, asked about",
            msg(EN, "New ID", "Our marketplace Seller ID is 7245610 - is this the number you need for our account?").build(),
            none(),
        ),
        (
            "a branch's location ID while the new one is still to come",
            msg(DE, "Standorte", "Die neue Standort-ID erhalten Sie, sobald Microsoft die Prüfung abgeschlossen hat. Zur Info: unsere Filiale Passau hatte die Standort-ID 6831281.").build(),
            none(),
        ),
        (
            "English: still stuck, sent once it's through",
            msg(EN, "Leeds", "Our Leeds branch (location ID 7245611) closes at year end. Our own new ID is still stuck in verification; I'll send it once it's through.").build(),
            none(),
        ),
        (
            "a promise about something else",
            msg(EN, "New MPN ID", "Our new MPN ID is 7245614. We'll send the signed agreement once it's provided by our lawyer.").build(),
            apply("7245614"),
        ),
        (
            "a colleague's guess",
            msg(EN, "RE: new ID", "I think the new number is 7245612, but I can't log into Partner Center to check.").build(),
            none(),
        ),
        (
            "a number on our invoice that is not theirs",
            msg(DE, "Rechnung", "Auf Ihrer Rechnung steht die Partner-ID 6831282 - das ist nicht unsere! Bitte wieder entfernen.").build(),
            none(),
        ),
        (
            "held back with a separable verb",
            msg(DE, "MPN-ID", "Unsere neue MPN-ID ist 6831283. Bitte stellen Sie aber noch nichts um, wir prüfen das intern.").build(),
            none(),
        ),
        (
            "other vendors' numbers beside the location ID",
            msg(DE, "Herstellernummern", "Sophos Partner-Nr.: 6831284\nAdobe VIP Reseller-ID: 6831286\nMicrosoft Standort-ID (PLA): 6831285").build(),
            apply("6831285"),
        ),
        (
            "the Microsoft Partner Network is Microsoft's",
            msg(EN, "MPN", "Our new Microsoft Partner Network ID is 7245613.").build(),
            apply("7245613"),
        ),
    ]);
}

#[test]
fn encodings() {
    let latin1: Vec<u8> =
        b"Gr\xfc\xdfe aus Falkenstein,\nunsere neue Standort-ID f\xfcr M\xfcnchen: 6831254\n"
            .to_vec();
    let b64 = "VW5zZXJlIG5ldWUgTVBOLUlEIGxhdXRldCA2ODMxMjU1Lgo="; // "Unsere neue MPN-ID lautet 6831255.\n"
    run_cases(vec![
        (
            "quoted-printable windows-1252",
            msg(DE, "Neue Standort-ID", "")
                .content_type("text/plain; charset=windows-1252")
                .encoding("quoted-printable")
                .raw_body(b"Unsere neue Standort-ID f=FCr M=FCnchen lautet =\n6831256.\n\nGr=FC=DFe\n")
                .build(),
            apply("6831256"),
        ),
        (
            "base64 utf-8",
            msg(DE, "MPN", "").encoding("base64").raw_body(b64.as_bytes()).build(),
            apply("6831255"),
        ),
        (
            "8bit iso-8859-1",
            msg(DE, "Standort", "").content_type("text/plain; charset=iso-8859-1").raw_body(&latin1).build(),
            apply("6831254"),
        ),
        (
            "rfc 2047 B subject",
            // "Neue Partner-ID: 6831257"
            msg(DE, "=?UTF-8?B?TmV1ZSBQYXJ0bmVyLUlEOiA2ODMxMjU3?=", "siehe Betreff").build(),
            apply("6831257"),
        ),
        (
            "format=flowed soft break",
            msg(DE, "MPN", "")
                .content_type("text/plain; charset=utf-8; format=flowed")
                .raw_body("wir haben uns neu registriert und unsere neue \nMPN-ID lautet ab heute \n6831258.\n".as_bytes())
                .build(),
            apply("6831258"),
        ),
        (
            "utf-8 sent as windows-1252",
            // A CRM's "New value: 7 302 916" with narrow no-break spaces, shown as
            // "7â€¯302â€¯916" by the declared charset; the old value is revoked.
            msg(EN, "Partner record updated", "")
                .content_type("text/plain; charset=windows-1252")
                .raw_body("Field changed: MPN ID (Partner Location)\nOld value: 5 520 413\nNew value: 6\u{202f}831\u{202f}270\nAccount manager: Jo \u{2013} jo@greenway-it.example\n".as_bytes())
                .build(),
            apply("6831270"),
        ),
        (
            "genuine windows-1252 stays as it is",
            msg(DE, "Neue MPN-ID", "")
                .content_type("text/plain; charset=windows-1252")
                .raw_body(b"Gr\xfc\xdfe \x96 unsere neue MPN-ID f\xfcr M\xfcnchen: 6831271 \x84Standort\x93\n")
                .build(),
            apply("6831271"),
        ),
        (
            "non-breaking hyphen inside the number",
            msg(DE, "Neue Partner-ID", "Unsere neue Partner-ID lautet 683\u{2011}1272 (Standort Uster).").build(),
            apply("6831272"),
        ),
    ]);
}

#[test]
fn ids_never_come_from_malformed_or_empty_mail() {
    for raw in [
        &b""[..],
        b"\r\n\r\n",
        b"garbage without headers 6831259",
        b"From: <a@b>\n\n",
        b"Subject: MPN-ID 6831259\n",
    ] {
        let t = triage(raw, &test_registry(), &test_policy());
        assert_ne!(
            t.decision,
            Decision::Apply,
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

// ---------------------------------------------------------------------------
// Robustness: mutated and hostile input, bounded
// ---------------------------------------------------------------------------

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut m = base.to_vec();
    match rng.below(9) {
        0 => {
            for _ in 0..=rng.below(32) {
                let i = rng.below(m.len());
                if let Some(b) = m.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
        }
        1 => m.truncate(rng.below(m.len() + 1)),
        2 => {
            // Duplicate boundary-looking lines and cut multiparts short.
            let text = String::from_utf8_lossy(&m).into_owned();
            let mut out = String::new();
            for line in text.lines() {
                out.push_str(line);
                out.push('\n');
                if line.starts_with("--") && rng.below(2) == 0 {
                    for _ in 0..rng.below(50) {
                        out.push_str(line);
                        out.push('\n');
                    }
                }
            }
            m = out.into_bytes();
        }
        3 => {
            let mut huge = b"X-Huge: ".to_vec();
            huge.extend(std::iter::repeat_n(b'7', 200_000 + rng.below(100_000)));
            huge.extend_from_slice(b"\nSubject: ");
            huge.extend(std::iter::repeat_n(b"MPN-ID 6831260 ".as_slice(), 5_000).flatten());
            huge.push(b'\n');
            huge.extend_from_slice(&m);
            m = huge;
        }
        4 => {
            // Deeply nested multiparts and message/rfc822.
            let depth = 50 + rng.below(400);
            let mut s = String::from("From: <a@b.example>\nSubject: nest\nMIME-Version: 1.0\n");
            for d in 0..depth {
                if d % 3 == 2 {
                    s.push_str(
                        "Content-Type: message/rfc822\n\nFrom: <c@d.example>\nSubject: inner\n",
                    );
                } else {
                    s.push_str(&format!(
                        "Content-Type: multipart/mixed; boundary=\"b{d}\"\n\n--b{d}\n"
                    ));
                }
            }
            s.push_str("Content-Type: text/plain\n\nPartner-ID 6831261\n");
            m = s.into_bytes();
        }
        5 => {
            for _ in 0..=rng.below(64) {
                let i = rng.below(m.len() + 1);
                m.insert(i, 0);
            }
        }
        6 => {
            let cut = rng.below(m.len() + 1);
            let from = rng.below(other.len() + 1);
            m.truncate(cut);
            m.extend_from_slice(&other[from..]);
        }
        7 => {
            // Random bytes, sometimes with a header.
            let n = rng.below(4096);
            m = (0..n).map(|_| rng.next() as u8).collect();
            if rng.below(2) == 0 {
                let mut h = b"Content-Type: text/html\n\n<table><tr><td>".to_vec();
                h.extend(m);
                m = h;
            }
        }
        _ => {
            // Many lines with ID-shaped numbers and keywords.
            let mut s = String::from("From: <einkauf@falkenstein-sh.example>\nSubject: MPN-ID\n\n");
            for i in 0..20_000 {
                s.push_str(&format!(
                    "alte MPN-ID {} neu {} (nicht {})\n",
                    6_000_000 + i,
                    7_000_000 + i,
                    8_000_000 + i
                ));
            }
            m = s.into_bytes();
        }
    }
    m
}

#[test]
fn mutated_mails_never_panic_and_stay_fast() {
    let mut bases = Vec::new();
    eml_files(&corpus_dir().join("reseller"), &mut bases);
    let mut real = Vec::new();
    eml_files(&corpus_dir().join("real-world"), &mut real);
    bases.extend(real.into_iter().step_by(10));
    let mails: Vec<Vec<u8>> = bases
        .iter()
        .map(|p| std::fs::read(p).expect("readable"))
        .collect();
    let registry = corpus_registry();
    let policy = policy();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut slowest = Duration::ZERO;
    for round in 0..400 {
        let base = &mails[rng.below(mails.len())];
        let other = &mails[rng.below(mails.len())];
        let input = mutate(&mut rng, base, other);
        let started = Instant::now();
        let t = triage(&input, &registry, &policy);
        let took = started.elapsed();
        slowest = slowest.max(took);
        // Debug build on a shared 2-core machine: generous, but catches blowups.
        assert!(
            took < Duration::from_secs(3),
            "round {round}: {took:?} for {} bytes",
            input.len()
        );
        // The result must be internally consistent whatever the input.
        assert_eq!(
            t.outcome == Outcome::Ignored,
            t.decision == Decision::Ignore,
            "round {round}"
        );
        assert_eq!(
            t.mpn_id.is_some(),
            t.outcome == Outcome::Id,
            "round {round}"
        );
        assert_eq!(
            t.reject.is_some(),
            t.decision == Decision::Reject,
            "round {round}"
        );
        if t.decision == Decision::Apply {
            assert!(t.reseller.is_some() && t.mpn_id.is_some(), "round {round}");
        }
        assert!(!t.reasons.is_empty(), "round {round}");
    }
    println!("slowest mutated mail: {slowest:?}");
}

/// Twelfth-round fixtures the engine still gets wrong; each must be a safe miss.
const KNOWN_FIXTURE_L_MISSES: &[&str] = &[];

/// Thirteenth-round fixtures the engine still gets wrong; each must be a safe miss.
const KNOWN_FIXTURE_M_MISSES: &[&str] = &[];

/// Fifteenth-round fixtures the engine still gets wrong; each must be a safe miss.
/// o16 gets the label's decision (review) with the number kept, where the label
/// says no ID of the sender's was stated; the last two review where the label
/// rejects or finds them ambiguous.
const KNOWN_FIXTURE_O_MISSES: &[&str] = &[
    // A partner's mail forwarded "zur Info": the forwarded author's own ID.
    "o16_de_outlook_forwards_partners_id.eml",
    // Agreement and enrollment numbers called "ID": ambiguous, not none.
    "o21_de_crm_html_only_mpa_and_registration_numbers.eml",
    // A parent company's ID that is another reseller's old one: the label rejects
    // it, triage reviews it as another company's ID. Neither applies it.
    "o37_en_outlook_ios_parents_old_id.eml",
];

/// Sixteenth-round fixtures the engine still gets wrong; each must be a safe miss.
const KNOWN_FIXTURE_P_MISSES: &[&str] = &[
    // "P L A - I D :   6 0 8 4 5 2 1", letter-spaced from a PDF: the keyword is not
    // read, so the number is bare and reviewed.
    "p22_de_emclient_base64_bom_letterspaced.eml",
    // A Partner Center grid pasted as one cell per line, each type after its ID:
    // the PLA reads as labelled by the PGA line before it; reviewed as a PGA.
    "p24_de_newoutlook_div_grid_pga_pla.eml",
    // "6741085/86" (two IDs in shorthand) is read as no ID: none, not ambiguous.
    "p37_de_thunderbird_slash_shorthand.eml",
];

/// Seventeenth-round fixtures the engine still gets wrong; each must be a safe miss.
const KNOWN_FIXTURE_Q_MISSES: &[&str] = &[];

/// Eighteenth-round fixtures the engine still gets wrong; each must be a safe miss.
const KNOWN_FIXTURE_R_MISSES: &[&str] = &[];

/// Fourteenth-round fixtures the engine still gets wrong; each must be a safe miss.
const KNOWN_FIXTURE_N_MISSES: &[&str] = &[
    // Asks to use another reseller's revoked ID, named as that company's: the label
    // rejects it, triage reviews it as another company's ID. Neither applies it.
    "n35_en_outlookmac_other_resellers_old_id.eml",
];
