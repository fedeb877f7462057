//! Triage throughput over every corpus mail (reseller + real-world), beside a bare
//! `mail_parser` parse of the same bytes, so the cost on top of parsing is visible.
//!
//! Run: `cargo bench --bench triage`. Criterion reports time per pass over the whole
//! set; the throughput lines show mails/s and MB/s for both.

use std::path::{Path, PathBuf};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use mail_parser::MessageParser;
use mpnd::triage::{triage, Policy, Registry, RegistryEntry};

fn eml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            eml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "eml") {
            out.push(p);
        }
    }
}

fn registry(corpus: &Path) -> Registry {
    let csv = std::fs::read_to_string(corpus.join("reseller/resellers.csv")).unwrap_or_default();
    let list = |s: &str| -> Vec<String> {
        s.split(';')
            .map(|x| x.trim().to_lowercase())
            .filter(|x| !x.is_empty())
            .collect()
    };
    let resellers = csv
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.len() == 6).then(|| RegistryEntry {
                account: f[0].into(),
                company: f[1].into(),
                contact_emails: list(f[2]),
                domains: list(f[3]),
                old_ids: list(f[4]),
                current_id: None,
                updating: false,
                locale: f[5].into(),
            })
        })
        .collect();
    Registry { resellers }
}

fn bench(c: &mut Criterion) {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    let mut files = Vec::new();
    eml_files(&corpus, &mut files);
    assert!(!files.is_empty(), "corpus missing at {}", corpus.display());
    let mails: Vec<Vec<u8>> = files.iter().filter_map(|p| std::fs::read(p).ok()).collect();
    let bytes: usize = mails.iter().map(Vec::len).sum();
    let registry = registry(&corpus);
    let policy = Policy {
        own_addresses: vec!["cloud@nordwind-dist.example".into()],
        trusted_authserv_ids: vec!["mx.nordwind-dist.example".into()],
    };
    println!("{} mails, {:.2} MB", mails.len(), bytes as f64 / 1e6);

    for (name, throughput) in [
        ("mails", Throughput::Elements(mails.len() as u64)),
        ("bytes", Throughput::Bytes(bytes as u64)),
    ] {
        let mut group = c.benchmark_group(format!("corpus_{name}"));
        group.throughput(throughput);
        group.sample_size(20);
        group.bench_function("bare_parse", |b| {
            let parser = MessageParser::default();
            b.iter(|| {
                for m in &mails {
                    black_box(parser.parse(black_box(m.as_slice())));
                }
            })
        });
        group.bench_function("triage", |b| {
            b.iter(|| {
                for m in &mails {
                    black_box(triage(black_box(m), &registry, &policy));
                }
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
