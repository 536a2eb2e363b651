//! The names the synthetic school looks up: a head of the names every
//! school network sees (search, Microsoft 365, Google Workspace, Apple,
//! update and CDN hosts), real domains from the UT1 lists in
//! `../shared/data` (benign categories for ordinary browsing, blocking
//! categories for the blocked rows), and generated names for the long tail.
//! Ids are indexes + 1, and become `log_names.id`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::random::{Rng, Zipf};

/// The names nearly every device asks for, most popular first. SafeSearch
/// hosts and the bypass canaries are among them, as on a real network.
pub const HEAD: &[&str] = &[
    "clients4.google.com",
    "www.gstatic.com",
    "fonts.gstatic.com",
    "accounts.google.com",
    "login.microsoftonline.com",
    "outlook.office365.com",
    "teams.microsoft.com",
    "www.googleapis.com",
    "i.ytimg.com",
    "apis.google.com",
    "play.google.com",
    "docs.google.com",
    "drive.google.com",
    "classroom.google.com",
    "gateway.icloud.com",
    "captive.apple.com",
    "time.apple.com",
    "graph.microsoft.com",
    "settings-win.data.microsoft.com",
    "ctldl.windowsupdate.com",
    "www.msftconnecttest.com",
    "connectivitycheck.gstatic.com",
    "safebrowsing.googleapis.com",
    "update.googleapis.com",
    "www.office.com",
    "officeclient.microsoft.com",
    "config.teams.microsoft.com",
    "www.bbc.co.uk",
    "www.google.com",
    "static.files.bbci.co.uk",
    "en.wikipedia.org",
    "upload.wikimedia.org",
    "www.google.co.uk",
    "m.youtube.com",
    "www.youtube.com",
    "youtubei.googleapis.com",
    "rr1---sn-aigl6nze.googlevideo.com",
    "www.instagram.com",
    "www.tiktok.com",
    "duckduckgo.com",
    "www.sparxmaths.uk",
    "www.senecalearning.com",
    "quizlet.com",
    "www.kahoot.it",
    "www.canva.com",
    "mask.icloud.com",
    "static.canva.com",
    "www.bbc.com",
    "cdn.jsdelivr.net",
    "ajax.googleapis.com",
    "www.googletagmanager.com",
    "www.google-analytics.com",
    "stats.g.doubleclick.net",
    "mask-h2.icloud.com",
    "edge.microsoft.com",
    "www.linkedin.com",
    "api.spotify.com",
    "www.netflix.com",
    "www.amazon.co.uk",
    "images-eu.ssl-images-amazon.com",
    "www.bing.com",
    "www.apple.com",
    "swscan.apple.com",
    "mesu.apple.com",
    "gsp-ssl.ls.apple.com",
    "push.apple.com",
    "mobile.events.data.microsoft.com",
    "www.gov.uk",
    "assets.publishing.service.gov.uk",
    "www.oaknational.org.uk",
    "use-application-dns.net",
    "www.educationcity.com",
    "www.mathsisfun.com",
    "www.timestables.co.uk",
    "www.doodlemaths.com",
    "www.purplemash.com",
    "www.microsoft.com",
    "login.live.com",
    "onedrive.live.com",
    "sharepoint.com",
    "www.dropbox.com",
    "ocsp.digicert.com",
    "ocsp.pki.goog",
    "r3.o.lencr.org",
    "x1.c.lencr.org",
    "firefox.settings.services.mozilla.com",
    "detectportal.firefox.com",
    "incoming.telemetry.mozilla.org",
    "www.wikipedia.org",
    "www.dictionary.com",
    "translate.google.com",
    "maps.googleapis.com",
    "www.roblox.com",
    "www.minecraft.net",
    "web.whatsapp.com",
    "www.snapchat.com",
    "open.spotify.com",
    "chatgpt.com",
    "www.duolingo.com",
    "_dns.resolver.arpa",
];

/// Benign UT1 categories: ordinary browsing (and, in `publicite`, the ads
/// and trackers every page pulls in, which schools rarely block).
pub const BENIGN_FILES: &[&str] = &[
    "liste_blanche",
    "press",
    "shopping",
    "sports",
    "bank",
    "jobsearch",
    "educational_games",
    "translation",
    "webmail",
    "update",
    "cooking",
    "radio",
    "audio-video",
    "financial",
    "blog",
    "forums",
    "publicite",
    "child",
    "manga",
    "mobile-phone",
    "download",
    "celebrity",
    "cleaning",
    "astrology",
];

/// A category the school's lists know, as `lists/ut1.toml` and
/// `lists/categories.toml` ship it: who it blocks, and whether it is a
/// bypass category (its rows say `bypass`, not `blocked`) or locked.
#[derive(Debug, Clone, Copy)]
pub struct CategorySpec {
    pub id: &'static str,
    pub list: &'static str,
    /// File under the data folder.
    pub file: &'static str,
    pub blocked_for: &'static [&'static str],
    pub bypass: bool,
    pub locked: bool,
    /// Share of lookups by pupils, staff and guests landing on it.
    pub share: [f64; 3],
}

const ALL: &[&str] = &["pupil", "staff", "guest"];

pub const CATEGORIES: &[CategorySpec] = &[
    spec(
        "social-media",
        "ut1-social-networks",
        "ut1/social_networks.domains",
        &["pupil", "guest"],
        [0.020, 0.012, 0.02],
    ),
    spec("games", "ut1-games", "ut1/games.domains", &["pupil"], [0.008, 0.001, 0.004]),
    spec("chat", "ut1-chat", "ut1/chat.domains", &["pupil", "guest"], [0.004, 0.002, 0.003]),
    spec("ai-chat", "ut1-ai", "ut1/ai.domains", &["pupil", "guest"], [0.003, 0.004, 0.002]),
    spec("pornography", "ut1-adult", "adult/domains.txt", ALL, [0.0012, 0.0002, 0.0008]),
    spec("pornography", "ut1-mixed-adult", "ut1/mixed_adult.domains", ALL, [0.0004, 0.0001, 0.0003]),
    spec("gambling", "ut1-gambling", "ut1/gambling.domains", ALL, [0.0008, 0.0004, 0.0006]),
    CategorySpec {
        locked: true,
        ..spec("malware", "ut1-malware", "ut1/malware.domains", ALL, [0.0012, 0.0008, 0.0012])
    },
    CategorySpec {
        locked: true,
        ..spec("malware", "ut1-phishing", "ut1/phishing.domains", ALL, [0.0006, 0.0004, 0.0004])
    },
    spec("dating", "ut1-dating", "ut1/dating.domains", &["pupil", "guest"], [0.0004, 0.0001, 0.0003]),
    spec("violence", "ut1-agressif", "ut1/agressif.domains", ALL, [0.0003, 0.00005, 0.0002]),
    spec("drugs", "ut1-drogue", "ut1/drogue.domains", ALL, [0.0002, 0.00005, 0.0002]),
    spec("piracy", "ut1-warez", "ut1/warez.domains", ALL, [0.0008, 0.0002, 0.0006]),
    spec("misinformation", "ut1-fakenews", "ut1/fakenews.domains", &["pupil", "guest"], [0.0003, 0.0002, 0.0002]),
    CategorySpec { bypass: true, ..spec("vpn-proxy", "ut1-vpn", "ut1/vpn.domains", ALL, [0.0010, 0.0002, 0.0008]) },
    CategorySpec { bypass: true, ..spec("encrypted-dns", "ut1-doh", "ut1/doh.domains", ALL, [0.0006, 0.0004, 0.0006]) },
];

const fn spec(
    id: &'static str,
    list: &'static str,
    file: &'static str,
    blocked_for: &'static [&'static str],
    share: [f64; 3],
) -> CategorySpec {
    CategorySpec { id, list, file, blocked_for, bypass: false, locked: false, share }
}

/// Real names taken from each file at most (the adult list is sampled
/// evenly across its 2.2 million names).
const PER_FILE: usize = 20_000;
/// Generated names for the long tail, per million rows per school day.
const TAIL_PER_MILLION: usize = 60_000;

/// Where a name leads when asked: most are plain, a few are rewritten
/// (SafeSearch) or answered by the bypass stage (canaries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    Plain,
    /// Index into [`REWRITES`].
    SafeSearch(u8),
    /// Index into [`CANARIES`].
    Canary(u8),
}

pub struct Names {
    /// Dotted names; id = index + 1.
    pub names: Vec<String>,
    pub special: Vec<Special>,
    /// Benign ids, most popular first, and their skew.
    pub benign: Vec<u32>,
    pub benign_zipf: Zipf,
    /// Per entry of [`CATEGORIES`]: its ids, most popular first, and skew.
    pub categories: Vec<(Vec<u32>, Zipf)>,
}

/// The data folder next to the repository (`../shared/data`).
pub fn default_data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
}

impl Names {
    /// Loads the lists under `data` and builds the universe. `tail` is the
    /// number of generated long-tail names.
    pub fn load(data: &Path, seed: u64, tail: usize) -> Result<Names, String> {
        let mut names = Names {
            names: Vec::new(),
            special: Vec::new(),
            benign: Vec::new(),
            benign_zipf: Zipf::new(1, 1.0),
            categories: Vec::new(),
        };
        let mut ids: HashMap<String, u32> = HashMap::new();
        let mut add = |names: &mut Names, name: String| -> Option<u32> {
            if ids.contains_key(&name) {
                return None;
            }
            names.names.push(name.clone());
            names.special.push(Special::Plain);
            let id = names.names.len() as u32;
            ids.insert(name, id);
            Some(id)
        };
        // The head first, so its names are benign even when a list has them.
        let mut head = Vec::new();
        for name in HEAD {
            let id = add(&mut names, (*name).to_string()).expect("HEAD names are distinct");
            names.special[id as usize - 1] = special_of(name);
            head.push(id);
        }
        for (index, category) in CATEGORIES.iter().enumerate() {
            let mut rng = Rng::new(seed, 0x6361_7400 + index as u64);
            let mut list = read_list(&data.join(category.file))?;
            rng.shuffle(&mut list);
            let ids: Vec<u32> = list.into_iter().filter_map(|name| add(&mut names, name)).collect();
            if ids.is_empty() {
                return Err(format!("{}: no names", data.join(category.file).display()));
            }
            let zipf = Zipf::new(ids.len(), 1.1);
            names.categories.push((ids, zipf));
        }
        let mut real = Vec::new();
        for file in BENIGN_FILES {
            let path = data.join("ut1").join(format!("{file}.domains"));
            let mut list = read_list(&path)?;
            let mut rng = Rng::new(seed, 0x6265_6e00 + real.len() as u64);
            rng.shuffle(&mut list);
            for name in list {
                // Most sites are asked for as www.<domain>.
                let name = if rng.chance(0.6) && !name.starts_with("www.") { format!("www.{name}") } else { name };
                if let Some(id) = add(&mut names, name) {
                    real.push(id);
                }
            }
        }
        let mut rng = Rng::new(seed, 0x7461_696c);
        let mut generated = Vec::with_capacity(tail);
        while generated.len() < tail {
            if let Some(id) = add(&mut names, tail_name(&mut rng)) {
                generated.push(id);
            }
        }
        // Popularity: the head, then real and generated names mixed, real
        // ones more often near the front.
        let mut rest: Vec<(f64, u32)> = real.iter().map(|&id| (rng.unit(), id)).collect();
        rest.extend(generated.iter().map(|&id| (rng.unit() + 0.5, id)));
        rest.sort_by(|a, b| a.0.total_cmp(&b.0));
        names.benign = head.into_iter().chain(rest.into_iter().map(|(_, id)| id)).collect();
        names.benign_zipf = Zipf::new(names.benign.len(), 1.0);
        Ok(names)
    }

    pub fn name(&self, id: u32) -> &str {
        &self.names[id as usize - 1]
    }

    pub fn special(&self, id: u32) -> Special {
        self.special[id as usize - 1]
    }

    /// A benign name, drawn by popularity.
    pub fn benign(&self, rng: &mut Rng) -> u32 {
        self.benign[self.benign_zipf.sample(rng)]
    }

    /// A name of `CATEGORIES[category]`, drawn by popularity.
    pub fn in_category(&self, category: usize, rng: &mut Rng) -> u32 {
        let (ids, zipf) = &self.categories[category];
        ids[zipf.sample(rng)]
    }

    /// The long-tail names to generate for a school of this size.
    pub fn tail_for(rows_per_school_day: u64) -> usize {
        ((rows_per_school_day as f64 / 1e6) * TAIL_PER_MILLION as f64).clamp(10_000.0, 600_000.0) as usize
    }
}

/// A file's names (one a line; `#` comments and blanks skipped), at most
/// [`PER_FILE`] of them taken evenly across the file.
fn read_list(path: &Path) -> Result<Vec<String>, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("{}: {e} (give the folder of the UT1 lists with --data)", path.display()))?;
    let all: Vec<String> = BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .map(|line| line.trim().to_ascii_lowercase())
        .filter(|line| !line.is_empty() && !line.starts_with('#') && line.contains('.') && line.len() < 200)
        .collect();
    if all.len() <= PER_FILE {
        return Ok(all);
    }
    let step = all.len() as f64 / PER_FILE as f64;
    Ok((0..PER_FILE).map(|i| all[(i as f64 * step) as usize].clone()).collect())
}

const SYLLABLES: &[&str] = &[
    "an", "bel", "cor", "da", "el", "fin", "gra", "hol", "in", "jo", "ka", "lum", "mar", "nor", "op", "pra", "qui",
    "ros", "sol", "tri", "ul", "ver", "wex", "yo", "zen", "stream", "cloud", "byte", "learn", "net",
];
const TLDS: &[&str] = &["com", "co.uk", "net", "org", "io", "org.uk", "uk", "app", "dev", "eu"];
const CDN_BASES: &[&str] =
    &["googlevideo.com", "akamaihd.net", "cloudfront.net", "fbcdn.net", "azureedge.net", "fastly.net", "ttvnw.net"];

/// A made-up name: a site (`word.tld`, with `www.` or a service label
/// sometimes) or a CDN host with a random label.
fn tail_name(rng: &mut Rng) -> String {
    if rng.chance(0.3) {
        let base = CDN_BASES[rng.below(CDN_BASES.len() as u64) as usize];
        return format!("r{}-{:08x}.{base}", rng.below(20), rng.next_u64() as u32);
    }
    let mut word = String::new();
    for _ in 0..2 + rng.below(3) {
        word.push_str(SYLLABLES[rng.below(SYLLABLES.len() as u64) as usize]);
    }
    let tld = TLDS[rng.below(TLDS.len() as u64) as usize];
    match rng.below(4) {
        0 => format!("www.{word}.{tld}"),
        1 => format!("{}.{word}.{tld}", ["api", "cdn", "static", "img", "login"][rng.below(5) as usize]),
        _ => format!("{word}.{tld}"),
    }
}

/// SafeSearch rewrites of the shipped data (service, host, safe host).
pub const REWRITES: &[(&str, &str, &str)] = &[
    ("google", "www.google.com", "forcesafesearch.google.com"),
    ("google", "www.google.co.uk", "forcesafesearch.google.com"),
    ("youtube", "www.youtube.com", "restrict.youtube.com"),
    ("youtube", "m.youtube.com", "restrict.youtube.com"),
    ("youtube", "youtubei.googleapis.com", "restrict.youtube.com"),
    ("bing", "www.bing.com", "strict.bing.com"),
    ("duckduckgo", "duckduckgo.com", "safe.duckduckgo.com"),
];

/// The bypass stage's canaries (`dns/bypass.rs`): name, reason, response code.
pub const CANARIES: &[(&str, &str, u16)] = &[
    ("use-application-dns.net", "Firefox's DNS-over-HTTPS canary: NXDOMAIN keeps Firefox's own encrypted DNS off", 3),
    ("mask.icloud.com", "iCloud Private Relay: NXDOMAIN makes Apple devices fall back to this resolver", 3),
    ("mask-h2.icloud.com", "iCloud Private Relay: NXDOMAIN makes Apple devices fall back to this resolver", 3),
    (
        "_dns.resolver.arpa",
        "discovery of designated encrypted resolvers (DDR, RFC 9462): no answer, so clients do not upgrade away",
        0,
    ),
];

/// What a name is when asked for (used when building the universe).
pub fn special_of(name: &str) -> Special {
    if let Some(i) = REWRITES.iter().position(|r| r.1 == name) {
        return Special::SafeSearch(i as u8);
    }
    if let Some(i) = CANARIES.iter().position(|c| c.0 == name) {
        return Special::Canary(i as u8);
    }
    Special::Plain
}
