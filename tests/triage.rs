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
    let csv = std::fs::read_to_string(corpus_dir().join("reseller/resellers.csv"))
        .expect("resellers.csv");
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
    let text =
        std::fs::read_to_string(corpus_dir().join("reseller/labels.json")).expect("labels.json");
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
