//! Deciding one query name (its parents included) against 5 million
//! synthetic listed domains, with and without the bloom filter in front of
//! the fst.
//!
//!     cargo bench --bench lookup
//!
//! Query mixes: 95% unlisted names (the common case on a school network),
//! misses only, and hits only (listed names and their subdomains); about
//! 60% of queries carry a subdomain (`www.`, `cdn.`, ...). Each iteration
//! looks up the next name of a fixed, deterministic set of 20,000 queries.
//! The bloom filter is the default one (2%, two hash functions).

#[path = "support/synthetic.rs"]
mod synthetic;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use hedgerow::lists::compile::{CompileInput, CompileOptions, compile_with};
use hedgerow::lists::compiled::CompiledLists;
use hedgerow::lists::parse::Format;
use hedgerow::policy::category::index_of;

const LISTED: usize = 5_000_000;
const QUERIES: usize = 20_000;

fn lookups(c: &mut Criterion) {
    let work = tempfile::tempdir().expect("temp dir");
    let text = work.path().join("synthetic.txt");
    // `cargo test --all-targets` runs this once to check it works: keep that quick.
    let listed = if std::env::args().any(|a| a == "--bench") { LISTED } else { 50_000 };
    let kept = synthetic::write_list(&text, listed, 42, 97);
    let input = CompileInput {
        id: "synthetic".into(),
        category: index_of("pornography").expect("category"),
        format: Format::Domains,
        text,
    };
    let build = |name: &str, bloom: Option<f64>| {
        let out = work.path().join(name);
        compile_with(
            std::slice::from_ref(&input),
            &out,
            &CompileOptions { bloom_false_positive_rate: bloom, ..Default::default() },
        )
        .expect("compile");
        CompiledLists::open(&out).expect("open")
    };
    let with_bloom = build("bloom.compiled", Some(0.02));
    let without_bloom = build("plain.compiled", None);
    let is_listed = |query: &str| !without_bloom.lookup(query.as_bytes()).is_empty();
    let mix = synthetic::query_mix(&kept, QUERIES, 5, 7, is_listed);
    let hits = synthetic::query_mix(&kept, QUERIES, 100, 8, is_listed);
    let misses = synthetic::query_mix(&kept, QUERIES, 0, 9, is_listed);
    let listed = mix.iter().filter(|q| !with_bloom.lookup(q.as_bytes()).is_empty()).count();
    eprintln!("{} names listed; the 95% mix has {listed} listed queries of {QUERIES}", with_bloom.len());
    for query in mix.iter().chain(&hits) {
        assert_eq!(with_bloom.lookup(query.as_bytes()), without_bloom.lookup(query.as_bytes()), "{query}");
    }

    let mut group = c.benchmark_group("lookup_5m");
    group.sample_size(50).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(5));
    // Each mix with and without the bloom back to back, so a busy machine
    // skews both sides of a comparison alike.
    for (mix_name, queries) in [("mix95miss", &mix), ("misses", &misses), ("hits", &hits)] {
        for (label, lists) in [("bloom", &with_bloom), ("no_bloom", &without_bloom)] {
            group.bench_function(format!("{mix_name}/{label}"), |b| {
                // Wraps with a compare, not `%`: a 64-bit division per
                // iteration would be timed as part of the lookup.
                let mut next = 0usize;
                b.iter(|| {
                    let query = &queries[next];
                    next += 1;
                    if next == queries.len() {
                        next = 0;
                    }
                    black_box(lists.lookup(black_box(query.as_bytes())))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
