//! Deterministic, realistic-looking domain names for benchmarks: words built
//! from syllables, a sprinkling of digits and hyphens, common subdomains and
//! a top-level domain mix roughly like real blocklists.

#![allow(dead_code)]

/// SplitMix64: tiny, fast and deterministic; good enough to pick syllables.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const SYLLABLES: &[&str] = &[
    "ba", "be", "bi", "bo", "bu", "ca", "ce", "co", "cu", "da", "de", "di", "do", "fa", "fe", "fi", "fo", "ga", "ge",
    "go", "ha", "he", "hi", "ho", "ja", "jo", "ka", "ke", "ki", "ko", "la", "le", "li", "lo", "lu", "ma", "me", "mi",
    "mo", "mu", "na", "ne", "ni", "no", "pa", "pe", "pi", "po", "ra", "re", "ri", "ro", "ru", "sa", "se", "si", "so",
    "ta", "te", "ti", "to", "tu", "va", "ve", "vi", "vo", "wa", "we", "xa", "ya", "yo", "za", "ze", "zo", "star",
    "net", "web", "shop", "play", "win", "bet", "cam", "live", "hot", "free", "best", "top", "max", "pro", "click",
    "media", "cloud", "data", "tube", "pix", "hub", "zone", "land", "city", "club", "ex", "an", "in", "on", "or", "er",
    "ar", "al", "el", "ul", "ist", "ing", "ment", "ly", "tion", "ness", "ful",
];

const TLDS: &[(&str, u64)] = &[
    ("com", 48),
    ("net", 8),
    ("org", 5),
    ("ru", 4),
    ("de", 3),
    ("info", 3),
    ("co.uk", 3),
    ("xyz", 3),
    ("fr", 2),
    ("nl", 2),
    ("online", 2),
    ("top", 2),
    ("site", 2),
    ("biz", 2),
    ("pl", 2),
    ("it", 2),
    ("com.br", 2),
    ("io", 2),
    ("es", 1),
    ("jp", 1),
    ("cn", 1),
    ("in", 1),
    ("eu", 1),
    ("club", 1),
    ("me", 1),
];

const SUBDOMAINS: &[&str] = &["www", "m", "cdn", "img", "api", "mail", "shop", "blog", "static", "ads", "track", "app"];

pub fn word(rng: &mut Rng, out: &mut String) {
    let syllables = 3 + rng.below(3);
    for _ in 0..syllables {
        out.push_str(SYLLABLES[rng.below(SYLLABLES.len() as u64) as usize]);
    }
    if rng.chance(25) {
        out.push_str(&rng.below(10_000).to_string());
    }
}

fn tld(rng: &mut Rng) -> &'static str {
    let total: u64 = TLDS.iter().map(|(_, w)| w).sum();
    let mut pick = rng.below(total);
    for (tld, weight) in TLDS {
        if pick < *weight {
            return tld;
        }
        pick -= weight;
    }
    "com"
}

/// A registrable-looking domain, sometimes with a subdomain in front (as
/// listed in real blocklists).
pub fn listed_name(rng: &mut Rng) -> String {
    let mut name = String::with_capacity(32);
    if rng.chance(20) {
        if rng.chance(60) {
            name.push_str(SUBDOMAINS[rng.below(SUBDOMAINS.len() as u64) as usize]);
        } else {
            word(rng, &mut name);
        }
        name.push('.');
    }
    word(rng, &mut name);
    if rng.chance(12) {
        name.push('-');
        word(rng, &mut name);
    }
    name.push('.');
    name.push_str(tld(rng));
    name
}

/// A query name as a client asks it: usually with a subdomain in front.
pub fn query_for(rng: &mut Rng, base: &str) -> String {
    if rng.chance(60) {
        format!("{}.{base}", SUBDOMAINS[rng.below(SUBDOMAINS.len() as u64) as usize])
    } else {
        base.to_string()
    }
}

/// Writes `count` listed names, one a line, to `path`; returns the names
/// picked (every `keep_every`th) for building hit queries.
pub fn write_list(path: &std::path::Path, count: usize, seed: u64, keep_every: usize) -> Vec<String> {
    use std::io::Write;
    let mut rng = Rng::new(seed);
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).expect("create list"));
    let mut kept = Vec::new();
    for i in 0..count {
        let name = listed_name(&mut rng);
        out.write_all(name.as_bytes()).expect("write");
        out.write_all(b"\n").expect("write");
        if i % keep_every == 0 {
            kept.push(name);
        }
    }
    out.flush().expect("flush");
    kept
}

/// A query mix: `hit_percent` of the queries are listed names or their
/// subdomains, the rest names drawn from another seed that `is_listed`
/// says are listed at no level.
pub fn query_mix(
    kept: &[String],
    queries: usize,
    hit_percent: u64,
    seed: u64,
    is_listed: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let mut other = Rng::new(seed ^ 0xdead_beef);
    (0..queries)
        .map(|_| {
            if rng.chance(hit_percent) {
                let base = &kept[rng.below(kept.len() as u64) as usize];
                query_for(&mut rng, base)
            } else {
                loop {
                    let base = listed_name(&mut other);
                    let query = query_for(&mut rng, &base);
                    if !is_listed(&query) {
                        break query;
                    }
                }
            }
        })
        .collect()
}
