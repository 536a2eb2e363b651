//! Property tests: any set of names and exceptions, compiled to a real file
//! and opened, answers exactly as a naive model does, for listed names,
//! their parents and subdomains, siblings and look-alike suffixes, with and
//! without the bloom filter.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use hedgerow::lists::compile::{CompileInput, CompileOptions, compile_with};
use hedgerow::lists::compiled::CompiledLists;
use hedgerow::lists::parse::Format;
use hedgerow::name::normalise;
use hedgerow::policy::category::{CategorySet, MAX_CATEGORIES};
use proptest::prelude::*;

/// Labels from a small pool (so names share suffixes, and look-alikes such
/// as `notexample`/`example`/`ample` meet) or random ones.
fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "com", "example", "notexample", "ample", "exampl", "e", "a", "b", "ab", "www", "co", "uk", "x-y", "_srv", "xn--bcher-kva",
        ])
        .prop_map(str::to_string),
        // A letter first: never an IP address. Not `xn--`: a random A-label is
        // invalid punycode, which the normaliser rightly counts as a bad line.
        2 => "[a-z][a-z0-9_-]{0,8}".prop_filter("not an A-label", |label| !label.starts_with("xn--")),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 2..5).prop_map(|labels| labels.join("."))
}

/// One rule: a name (now and then a whole top-level domain, `||com^`), a
/// category bit, and whether it is an exception.
fn rule() -> impl Strategy<Value = (String, u8, bool)> {
    let rule_name = prop_oneof![12 => name(), 1 => label()];
    (rule_name, 0..MAX_CATEGORIES as u8, prop::bool::weighted(0.2))
}

/// The naive model: levels from the top-level domain down; each level adds
/// the categories blocking it, then removes those with an exception there.
fn model(rules: &HashMap<String, (u64, u64)>, query: &str) -> CategorySet {
    let labels: Vec<&str> = query.split('.').collect();
    let mut result = 0u64;
    for start in (0..labels.len()).rev() {
        let level = labels[start..].join(".");
        if let Some((blocks, allows)) = rules.get(&level) {
            result = (result | blocks) & !allows;
        }
    }
    CategorySet(result)
}

/// Writes the rules as one adblock source per category, compiles, opens.
fn build(rules: &[(String, u8, bool)], dir: &Path, bloom: Option<f64>, parts: usize) -> CompiledLists {
    let mut by_category: HashMap<u8, String> = HashMap::new();
    for (name, category, allow) in rules {
        let text = by_category.entry(*category).or_default();
        let _ = writeln!(text, "{}||{name}^", if *allow { "@@" } else { "" });
    }
    let mut categories: Vec<u8> = by_category.keys().copied().collect();
    categories.sort();
    let inputs: Vec<CompileInput> = categories
        .iter()
        .map(|category| {
            let text = dir.join(format!("{category}.txt"));
            std::fs::write(&text, &by_category[category]).unwrap();
            CompileInput { id: format!("c{category}"), category: *category, format: Format::Adblock, text }
        })
        .collect();
    let out = dir.join(format!("{}-{parts}.compiled", bloom.is_some()));
    let options = CompileOptions { bloom_false_positive_rate: bloom, parts: Some(parts) };
    let report = compile_with(&inputs, &out, &options).unwrap();
    assert!(report.sources.iter().all(|s| s.bad_lines == 0 && s.error.is_none()), "{:?}", report.sources);
    CompiledLists::open(&out).unwrap()
}

fn queries_for(name: &str, extra: &[String]) -> Vec<String> {
    let labels: Vec<&str> = name.split('.').collect();
    let mut queries = vec![name.to_string(), format!("www.{name}"), format!("a.b.{name}")];
    for start in 1..labels.len() {
        queries.push(labels[start..].join(".")); // parents
    }
    let first = labels[0];
    let with_rest = |label: &str| {
        if labels.len() > 1 { format!("{label}.{}", labels[1..].join(".")) } else { label.to_string() }
    };
    queries.push(with_rest(&format!("not{first}"))); // look-alikes
    queries.push(with_rest(&format!("x{first}")));
    queries.push(with_rest(&format!("{first}x")));
    if first.len() > 1 {
        queries.push(with_rest(&first[1..])); // a suffix of the label
    }
    queries.push(with_rest("sibling"));
    queries.push(format!("{name}.evil")); // the name as a prefix of another
    queries.extend(extra.iter().cloned());
    queries
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn compiled_lists_answer_like_the_model(
        rules in prop::collection::vec(rule(), 1..40),
        others in prop::collection::vec(name(), 0..20),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut merged: HashMap<String, (u64, u64)> = HashMap::new();
        for (name, category, allow) in &rules {
            let entry = merged.entry(normalise(name).unwrap()).or_default();
            if *allow { entry.1 |= 1 << category } else { entry.0 |= 1 << category }
        }
        // One part with a bloom filter; three parts without; four with.
        let with_bloom = build(&rules, dir.path(), Some(0.01), 1);
        let in_parts = build(&rules, dir.path(), None, 3);
        let in_parts_with_bloom = build(&rules, dir.path(), Some(0.01), 4);
        for lists in [&with_bloom, &in_parts, &in_parts_with_bloom] {
            prop_assert_eq!(lists.len(), merged.len());
        }
        for (name, _, _) in &rules {
            for query in queries_for(name, &others) {
                let expected = model(&merged, &query);
                prop_assert_eq!(with_bloom.lookup(query.as_bytes()), expected, "query {}", query);
                prop_assert_eq!(in_parts.lookup(query.as_bytes()), expected, "query {} (3 parts)", query);
                prop_assert_eq!(in_parts_with_bloom.lookup(query.as_bytes()), expected, "query {} (4 parts, bloom)", query);
            }
        }
    }

    #[test]
    fn normalising_is_idempotent_and_case_blind(text in prop_oneof!["\\PC{0,40}", "[a-zA-Z0-9äöüßÄÖÜ_.-]{1,30}"]) {
        if let Ok(once) = normalise(&text) {
            prop_assert_eq!(normalise(&once), Ok(once.clone()));
            prop_assert!(once.len() <= 253 && once.is_ascii());
            prop_assert!(!once.bytes().any(|b| b.is_ascii_uppercase()));
            prop_assert!(once.split('.').all(|label| (1..=63).contains(&label.len())));
            prop_assert_eq!(normalise(&format!("{text}.")).ok(), if text.ends_with('.') { None } else { Some(once.clone()) });
        }
    }

    #[test]
    fn generated_names_normalise_to_themselves(name in name()) {
        let upper = name.to_ascii_uppercase();
        prop_assert_eq!(normalise(&upper).unwrap(), name.clone());
        prop_assert_eq!(normalise(&format!("{name}.")).unwrap(), name);
    }

    #[test]
    fn every_listed_name_and_its_subdomains_match(names in prop::collection::vec(name(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let rules: Vec<(String, u8, bool)> = names.iter().map(|n| (n.clone(), 5, false)).collect();
        let lists = build(&rules, dir.path(), Some(0.01), 2);
        let category = CategorySet::of(5);
        for name in &names {
            prop_assert_eq!(lists.lookup(name.as_bytes()), category);
            let sub = format!("deep.er.{name}");
            prop_assert_eq!(lists.lookup(sub.as_bytes()), category);
            let upper = sub.to_ascii_uppercase();
            prop_assert_eq!(lists.lookup(upper.as_bytes()), category);
            let explained = lists.explain(sub.as_bytes());
            prop_assert!(explained.iter().any(|m| &m.domain == name && !m.exact));
            let exact = lists.explain(name.as_bytes());
            prop_assert!(exact[0].exact && &exact[0].domain == name);
            prop_assert_eq!(exact[0].source.as_deref(), Some("c5"));
        }
    }

    #[test]
    fn look_alike_suffixes_never_match(first in "[a-z]{1,8}", prefix in "[a-z0-9-]{1,5}", tld in "[a-z]{2,4}") {
        let dir = tempfile::tempdir().unwrap();
        let listed = format!("{first}.{tld}");
        let lists = build(&[(listed.clone(), 3, false)], dir.path(), Some(0.01), 1);
        let look_alike = format!("{prefix}{first}.{tld}");
        prop_assert_eq!(lists.lookup(look_alike.as_bytes()), CategorySet::EMPTY);
        let longer_tld = format!("{first}.{tld}x");
        prop_assert_eq!(lists.lookup(longer_tld.as_bytes()), CategorySet::EMPTY);
        if first.len() > 1 {
            let shorter = format!("{}.{tld}", &first[1..]);
            prop_assert_eq!(lists.lookup(shorter.as_bytes()), CategorySet::EMPTY);
        }
        prop_assert_eq!(lists.lookup(tld.as_bytes()), CategorySet::EMPTY);
        prop_assert_eq!(lists.lookup(listed.as_bytes()), CategorySet::of(3));
    }

    #[test]
    fn exceptions_unblock_only_their_category_at_and_below_their_level(
        base in "[a-z]{1,8}\\.[a-z]{2,3}",
        sub in "[a-z]{1,6}",
    ) {
        let dir = tempfile::tempdir().unwrap();
        let excepted = format!("{sub}.{base}");
        let rules = vec![
            (base.clone(), 19, false),        // ads blocks the domain
            (base.clone(), 5, false),         // gambling too
            (excepted.clone(), 19, true),     // ads exception one level down
        ];
        let lists = build(&rules, dir.path(), Some(0.01), 2);
        let both = CategorySet::of(19).union(CategorySet::of(5));
        prop_assert_eq!(lists.lookup(base.as_bytes()), both);
        let sibling = format!("other{sub}.{base}");
        prop_assert_eq!(lists.lookup(sibling.as_bytes()), both);
        prop_assert_eq!(lists.lookup(excepted.as_bytes()), CategorySet::of(5));
        let below = format!("www.{excepted}");
        prop_assert_eq!(lists.lookup(below.as_bytes()), CategorySet::of(5));
    }
}
