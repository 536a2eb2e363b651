//! The UT1 snapshot in ../shared/data/ut1, compiled through the shipped
//! declarations in lists/ut1.toml (their `member` names the folder, their
//! `category` the Hedgerow category): every declared folder in the snapshot
//! compiles, and a sample of names from each blocks under its category.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hedgerow::lists::compile::{CompileInput, compile};
use hedgerow::lists::compiled::CompiledLists;
use hedgerow::lists::sources::{ListSettings, load_sources};
use hedgerow::name::normalise;
use hedgerow::policy::category::{CategorySet, by_index};

const UT1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/ut1");

/// Every `SAMPLE_EVERY`th line of each file is checked.
const SAMPLE_EVERY: usize = 97;

/// Fails (never skips) when the snapshot is missing, saying where it goes
/// and where it comes from.
fn require_snapshot() {
    let folder = Path::new(UT1);
    let has_domains = std::fs::read_dir(folder)
        .map(|entries| entries.flatten().any(|e| e.path().extension().is_some_and(|x| x == "domains")))
        .unwrap_or(false);
    assert!(
        has_domains,
        "the UT1 snapshot is missing: this test reads {} (`../shared/data/ut1` next to the repository, described \
         in ../shared/data/README.md), one file per UT1 category named <category>.domains, one domain a line. \
         The lists come from the UT1 blacklists of the Université Toulouse Capitole \
         (https://dsi.ut-capitole.fr/blacklists/, CC BY-SA 4.0): download a category's .tar.gz and save its \
         <category>/domains file as {}/<category>.domains (gambling, drogue, malware, phishing, warez, agressif, \
         vpn, doh, social_networks, games, dating, chat, ai, redirector, ...). Run the other tests with \
         `cargo test -- --skip ut1` until it is there.",
        folder.display(),
        folder.display(),
    );
}

fn ut1_inputs() -> Vec<CompileInput> {
    let settings =
        ListSettings { dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/lists")), ..Default::default() };
    load_sources(&settings)
        .expect("the shipped declarations load")
        .into_iter()
        .filter_map(|source| {
            let folder = source.member.as_deref()?.split('/').next()?.to_string();
            let text = Path::new(UT1).join(format!("{folder}.domains"));
            text.is_file().then_some(CompileInput {
                id: source.id,
                category: source.category,
                format: source.format,
                text,
            })
        })
        .collect()
}

#[test]
fn the_ut1_snapshot_blocks_under_the_right_categories() {
    require_snapshot();
    let inputs = ut1_inputs();
    let ids: Vec<&str> = inputs.iter().map(|i| i.id.as_str()).collect();
    for expected in [
        "ut1-gambling",
        "ut1-drogue",
        "ut1-malware",
        "ut1-phishing",
        "ut1-warez",
        "ut1-agressif",
        "ut1-vpn",
        "ut1-doh",
        "ut1-social-networks",
        "ut1-games",
        "ut1-dating",
        "ut1-chat",
        "ut1-ai",
        "ut1-redirector",
    ] {
        assert!(ids.contains(&expected), "{expected} is declared and in the snapshot: {ids:?}");
    }

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ut1.compiled");
    let report = compile(&inputs, &out).unwrap();
    let lists = CompiledLists::open(&out).unwrap();
    assert_eq!(lists.len(), report.names);
    assert!(report.names > 400_000, "{} names", report.names);
    for source in &report.sources {
        assert!(source.error.is_none(), "{source:?}");
        // UT1 lists some IP addresses (mostly in redirector); DNS lists
        // cannot use them, so they are the only bad lines.
        for (_, line, why) in &source.bad_examples {
            assert!(why.contains("IP address"), "{}: {line}: {why}", source.id);
        }
    }

    let bad: usize = report.sources.iter().map(|s| s.bad_lines).sum();
    assert!(bad * 10 < report.names, "{bad} bad lines");

    // Which categories each name should carry (a name may be in several folders).
    let mut expected: HashMap<String, CategorySet> = HashMap::new();
    let mut sampled = 0;
    for input in &inputs {
        let text = std::fs::read_to_string(&input.text).unwrap();
        for (number, line) in text.lines().enumerate() {
            if number % SAMPLE_EVERY != 0 {
                continue;
            }
            if let Ok(name) = normalise(line.trim()) {
                let set = expected.entry(name).or_default();
                *set = set.union(CategorySet::of(input.category));
                sampled += 1;
            }
        }
    }
    assert!(sampled > 4_000, "{sampled}");
    for (name, categories) in &expected {
        let found = lists.lookup(name.as_bytes());
        assert_eq!(found.intersection(*categories), *categories, "{name}: found {found}, expected {categories}");
        let sub = format!("www.{name}");
        let found = lists.lookup(sub.as_bytes());
        assert_eq!(found.intersection(*categories), *categories, "{sub}: found {found}");
    }

    // Spot checks by category.
    let check = |name: &str, category: &str| {
        let found = lists.lookup(name.as_bytes());
        assert!(found.iter().any(|c| c.id == category), "{name}: found {found}, expected {category}");
    };
    check("bet365.com", "gambling");
    check("www.omegle.com", "chat");
    check("chatgpt.com", "ai-chat");
    check("1337x.to", "piracy");
    check("erowid.org", "drugs");
    check("stormfront.org", "violence");
    // Names in no declared folder stay clear.
    for name in ["www.bbc.co.uk", "www.gov.uk", "www.google.com", "classroom.google.com"] {
        let found = lists.lookup(name.as_bytes());
        assert!(found.is_empty(), "{name}: {found}");
    }
    // Categories actually used.
    let used: Vec<&str> = inputs.iter().filter_map(|i| by_index(i.category)).map(|c| c.id).collect();
    for category in [
        "pornography",
        "gambling",
        "drugs",
        "malware",
        "piracy",
        "violence",
        "vpn-proxy",
        "encrypted-dns",
        "social-media",
        "games",
        "dating",
        "chat",
        "ai-chat",
    ] {
        assert!(used.contains(&category), "{category}");
    }
}
