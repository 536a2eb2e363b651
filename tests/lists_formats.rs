//! Lists end to end on real files: the three formats, compile -> open ->
//! lookup, damaged compiled files, reuse and rebuild in `load::prepare`, bad
//! declarations, and the lists shipped in `lists/`.

use std::fs;
use std::path::{Path, PathBuf};

use hedgerow::download::{prepare, rebuild};
use hedgerow::lists::compile::{CompileInput, compile};
use hedgerow::lists::compiled::{CompiledLists, ListError};
use hedgerow::lists::downloads;
use hedgerow::lists::load::{self, artefact_path};
use hedgerow::lists::parse::{Format, Rule, parse};
use hedgerow::lists::sources::{ListSettings, Location, load_sources};
use hedgerow::policy::category::{CategorySet, index_of};

/// Counts allocations per thread, so a test can show the lookup path makes
/// none while other tests run in parallel.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> usize {
    ALLOCATIONS.with(|count| count.get())
}

fn category(id: &str) -> CategorySet {
    CategorySet::of(index_of(id).expect("a known category"))
}

fn blocks(rules: &[Rule]) -> Vec<&str> {
    rules
        .iter()
        .filter_map(|rule| match rule {
            Rule::Block(name) => Some(name.as_str()),
            Rule::Allow(_) => None,
        })
        .collect()
}

#[test]
fn domains_format_reads_real_world_lines() {
    let text = "\u{feff}# Title: test list\r\n\
                # another comment\r\n\
                \r\n\
                Example.COM\r\n\
                *.wild.example\r\n\
                trailing.example   # why it is listed\r\n\
                bücher.example\r\n\
                XN--BCHER-KVA.example.\r\n\
                   spaced.example   \r\n\
                not a name\r\n\
                http://url.example/path\r\n\
                1.2.3.4\r\n\
                ";
    let report = parse(text, Format::Domains);
    assert_eq!(
        blocks(&report.rules),
        [
            "example.com",
            "wild.example",
            "trailing.example",
            "xn--bcher-kva.example",
            "xn--bcher-kva.example",
            "spaced.example"
        ]
    );
    assert_eq!(report.lines, 12);
    assert_eq!(report.bad_lines, 3);
    let lines: Vec<usize> = report.bad_examples.iter().map(|(line, _, _)| *line).collect();
    assert_eq!(lines, [10, 11, 12]);
    assert_eq!(report.bad_examples[0].1, "not a name");
    assert!(report.bad_examples[2].2.contains("IP address"), "{:?}", report.bad_examples[2]);
}

#[test]
fn hosts_format_reads_real_world_lines() {
    let text = "# hosts file\r\n\
                127.0.0.1 localhost\r\n\
                127.0.0.1 localhost.localdomain\r\n\
                255.255.255.255 broadcasthost\r\n\
                ::1 localhost ip6-localhost ip6-loopback\r\n\
                0.0.0.0 0.0.0.0\r\n\
                0.0.0.0 ads.example\r\n\
                127.0.0.1 Tracker.Example # comment\r\n\
                0.0.0.0\tone.example two.example\r\n\
                :: v6.example\r\n\
                0.0.0.0 ünï.example\r\n\
                just.a.name\r\n\
                0.0.0.0 bad..name\r\n";
    let report = parse(text, Format::Hosts);
    assert_eq!(
        blocks(&report.rules),
        ["ads.example", "tracker.example", "one.example", "two.example", "v6.example", "xn--n-nga1b.example"]
    );
    assert_eq!(report.bad_lines, 2, "{:?}", report.bad_examples);
    assert_eq!(report.bad_examples[0].0, 12);
    assert_eq!(report.bad_examples[1].0, 13);
}

#[test]
fn adblock_format_reads_real_world_lines() {
    let text = "[Adblock Plus 2.0]\r\n\
                ! Title: ads\r\n\
                ||ads.example^\r\n\
                ||Tracker.Example^$important\r\n\
                @@||good.ads.example^\r\n\
                ||cdn.example^|\r\n\
                ||bücher.example^\r\n\
                ||path.example/banner.js\r\n\
                ##.advert\r\n\
                example.org##.banner\r\n\
                ||x.example^$third-party\r\n\
                /banner[0-9]+/\r\n\
                plain.example\r\n";
    let report = parse(text, Format::Adblock);
    assert_eq!(
        report.rules,
        [
            Rule::Block("ads.example".into()),
            Rule::Block("tracker.example".into()),
            Rule::Allow("good.ads.example".into()),
            Rule::Block("cdn.example".into()),
            Rule::Block("xn--bcher-kva.example".into()),
        ]
    );
    assert_eq!(report.bad_lines, 6);
    assert_eq!(report.bad_examples.len(), 5, "at most five examples");
    assert!(report.bad_examples.iter().all(|(_, _, why)| why.starts_with("not a DNS-level rule")));
}

fn write(path: &Path, text: &str) -> PathBuf {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, text).unwrap();
    path.to_path_buf()
}

fn input(id: &str, category: &str, format: Format, text: PathBuf) -> CompileInput {
    CompileInput { id: id.into(), category: index_of(category).unwrap(), format, text }
}

#[test]
fn compile_open_lookup_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = [
        input(
            "gambling",
            "gambling",
            Format::Domains,
            write(&dir.path().join("g.txt"), "bet.example\nCASINO.example\n# c\nbad line\n"),
        ),
        input(
            "porn",
            "pornography",
            Format::Hosts,
            write(&dir.path().join("p.txt"), "0.0.0.0 adult.example www.bet.example\n"),
        ),
        input(
            "ads",
            "ads",
            Format::Adblock,
            write(&dir.path().join("a.txt"), "||ads.example^\n@@||ok.ads.example^\n||deeper.ok.ads.example^\n"),
        ),
    ];
    let out = dir.path().join("data/lists.compiled");
    let report = compile(&inputs, &out).unwrap();
    assert_eq!(report.names, 7);
    assert_eq!(report.sources[0].names, 2);
    assert_eq!(report.sources[0].bad_lines, 1);
    assert_eq!(report.sources[0].bad_examples[0].0, 4);
    assert_eq!(report.sources[2].exceptions, 1);
    assert_eq!(report.file_bytes, fs::metadata(&out).unwrap().len());

    let lists = CompiledLists::open(&out).unwrap();
    assert_eq!(lists.len(), 7);
    assert_eq!(lists.source_ids(), ["gambling", "porn", "ads"]);
    assert_eq!(lists.fingerprint(), hedgerow::lists::compile::fingerprint(&inputs));
    assert_eq!(lists.lookup(b"bet.example"), category("gambling"));
    assert_eq!(lists.lookup(b"casino.example"), category("gambling"));
    assert_eq!(lists.lookup(b"a.b.casino.example"), category("gambling"));
    assert_eq!(lists.lookup(b"www.bet.example"), category("gambling").union(category("pornography")));
    assert_eq!(lists.lookup(b"WWW.Bet.Example."), category("gambling").union(category("pornography")));
    assert_eq!(lists.lookup(b"notbet.example"), CategorySet::EMPTY);
    assert_eq!(lists.lookup(b"example"), CategorySet::EMPTY);
    assert_eq!(lists.lookup(b"bet.example.org"), CategorySet::EMPTY);
    // Exceptions: at and below their level, until a more specific block.
    assert_eq!(lists.lookup(b"x.ads.example"), category("ads"));
    assert_eq!(lists.lookup(b"ok.ads.example"), CategorySet::EMPTY);
    assert_eq!(lists.lookup(b"y.ok.ads.example"), CategorySet::EMPTY);
    assert_eq!(lists.lookup(b"deeper.ok.ads.example"), category("ads"));
    assert_eq!(lists.lookup(b"z.deeper.ok.ads.example"), category("ads"));

    let explained = lists.explain(b"www.bet.example");
    assert_eq!(explained.len(), 2);
    assert_eq!(explained[0].domain, "www.bet.example");
    assert!(explained[0].exact);
    assert_eq!(explained[0].source.as_deref(), Some("porn"));
    assert_eq!(explained[1].domain, "bet.example");
    assert_eq!(explained[1].blocks, category("gambling"));
    assert_eq!(explained[1].source.as_deref(), Some("gambling"));
    let explained = lists.explain(b"ok.ads.example");
    assert_eq!(explained[0].allows, category("ads"));
}

#[test]
fn lookup_does_not_allocate() {
    let dir = tempfile::tempdir().unwrap();
    let names: String = (0..5000).map(|i| format!("site{i}.example\nsub.site{i}.example.org\n")).collect();
    let text = write(&dir.path().join("g.txt"), &names);
    let tld = write(&dir.path().join("t.txt"), "||zip^\n@@||ok.site1.example^\n");
    let queries: Vec<String> = (0..2000)
        .flat_map(|i| [format!("www.site{i}.example"), format!("x.unlisted{i}.com"), format!("A.B.Site{i}.Example.")])
        .chain(["file.zip".to_string(), "ok.site1.example".into(), "com".into(), "".into(), ".".into()])
        .collect();
    for (parts, with_tld) in [(1, false), (3, false), (2, true)] {
        let mut inputs = vec![input("g", "gambling", Format::Domains, text.clone())];
        if with_tld {
            inputs.push(input("t", "ads", Format::Adblock, tld.clone()));
        }
        let out = dir.path().join(format!("{parts}.compiled"));
        let options = hedgerow::lists::compile::CompileOptions { parts: Some(parts), ..Default::default() };
        hedgerow::lists::compile::compile_with(&inputs, &out, &options).unwrap();
        let lists = CompiledLists::open(&out).unwrap();
        let before = allocations();
        let mut listed = 0;
        for query in &queries {
            listed += usize::from(!lists.lookup(query.as_bytes()).is_empty());
        }
        assert_eq!(allocations(), before, "lookup allocated ({parts} parts)");
        assert!(listed >= 4000, "{listed}");
    }
}

#[test]
fn damaged_compiled_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let text = write(&dir.path().join("g.txt"), &(0..2000).map(|i| format!("site{i}.example\n")).collect::<String>());
    let good = dir.path().join("good.compiled");
    compile(&[input("g", "gambling", Format::Domains, text)], &good).unwrap();
    let bytes = fs::read(&good).unwrap();
    let damaged = dir.path().join("damaged.compiled");
    let open_damaged = |content: &[u8]| {
        fs::write(&damaged, content).unwrap();
        CompiledLists::open(&damaged).map(|_| ()).unwrap_err()
    };

    let error = open_damaged(&bytes[..bytes.len() / 2]);
    assert!(matches!(error, ListError::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains("truncated"), "{error}");
    assert!(error.to_string().contains("hedgerow lists compile"), "{error}");

    let error = open_damaged(&bytes[..100]);
    assert!(matches!(error, ListError::Corrupt { .. }), "{error}");

    let error = open_damaged(b"");
    assert!(matches!(error, ListError::NotCompiledLists { .. }), "{error}");

    let error = open_damaged(b"example.com\nexample.org\nnot a compiled file at all\n");
    assert!(matches!(error, ListError::NotCompiledLists { .. }), "{error}");
    assert!(error.to_string().contains("damaged.compiled"), "{error}");

    let mut newer = bytes.clone();
    newer[16] = 99;
    let error = open_damaged(&newer);
    assert!(matches!(error, ListError::Version { found: 99, .. }), "{error}");

    // A flipped bit in every region: header, source table, fst, bloom.
    for at in [33, 130, bytes.len() / 3, bytes.len() / 2, bytes.len() - 10] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x10;
        let error = open_damaged(&flipped);
        assert!(matches!(error, ListError::Corrupt { .. }), "flip at {at}: {error}");
    }

    let error = CompiledLists::open(&dir.path().join("missing.compiled")).unwrap_err();
    assert!(matches!(error, ListError::Io { .. }), "{error}");
    assert!(error.to_string().contains("missing.compiled"), "{error}");

    assert!(CompiledLists::open(&good).is_ok(), "the original is untouched");
}

/// A declarations folder with one path source and one URL source.
struct Setup {
    _dir: tempfile::TempDir,
    settings: ListSettings,
    data: PathBuf,
    seed: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let lists = dir.path().join("lists");
    let seed = write(&lists.join("seed/gambling.txt"), "bet.example\n");
    write(
        &lists.join("local.toml"),
        r#"
[[source]]
id = "local-gambling"
category = "gambling"
format = "domains"
path = "seed/gambling.txt"

[[source]]
id = "remote-porn"
category = "pornography"
format = "hosts"
url = "https://lists.example/porn.txt"
"#,
    );
    let data = dir.path().join("data");
    Setup { settings: ListSettings { dir: lists, ..Default::default() }, data, seed, _dir: dir }
}

#[test]
fn prepare_reuses_unchanged_inputs_and_recompiles_changed_ones() {
    let setup = setup();
    let first = prepare(&setup.settings, &setup.data).unwrap();
    let report = first.report.as_ref().expect("the first start compiles");
    assert_eq!(first.path, artefact_path(&setup.data));
    assert_eq!(first.lists.lookup(b"www.bet.example"), category("gambling"));
    let remote = report.sources.iter().find(|s| s.id == "remote-porn").unwrap();
    assert!(remote.error.as_deref().unwrap().contains("not downloaded yet"), "{remote:?}");
    assert_eq!(report.sources[0].id, "local-gambling", "declaration order");

    let second = prepare(&setup.settings, &setup.data).unwrap();
    assert!(second.report.is_none(), "unchanged inputs reuse the compiled file");
    assert_eq!(second.lists.fingerprint(), first.lists.fingerprint());
    assert!(second.stale.is_none());

    write(&setup.seed, "bet.example\ncasino.example\n");
    let third = prepare(&setup.settings, &setup.data).unwrap();
    assert!(third.report.is_some(), "a changed source recompiles");
    assert_eq!(third.lists.lookup(b"casino.example"), category("gambling"));

    // The fetcher's download appears: recompiled with it.
    write(&downloads::copy(&downloads::folder(&setup.data), "remote-porn"), "0.0.0.0 adult.example\n");
    let fourth = prepare(&setup.settings, &setup.data).unwrap();
    let report = fourth.report.expect("a new download recompiles");
    assert!(report.sources.iter().all(|s| s.error.is_none()), "{:?}", report.sources);
    assert_eq!(fourth.lists.lookup(b"adult.example"), category("pornography"));

    let forced = rebuild(&setup.settings, &setup.data).unwrap();
    assert!(forced.report.is_some(), "rebuild always compiles");
}

/// Was `a_missing_source_file_is_reported_not_fatal`, which asserted that a
/// first start with its only list missing served an empty list. Now: with
/// no good copy of any source there is nothing to filter with, so it is an
/// error; once a good copy exists, a missing file keeps its names.
#[test]
fn a_missing_source_file_keeps_its_last_good_copy_and_none_at_all_is_an_error() {
    let setup = setup();
    fs::remove_file(&setup.seed).unwrap();
    let error = prepare(&setup.settings, &setup.data).unwrap_err().to_string();
    assert!(error.contains("no enabled list source") && error.contains("gambling.txt"), "{error}");

    write(&setup.seed, "bet.example\n");
    prepare(&setup.settings, &setup.data).unwrap();
    fs::remove_file(&setup.seed).unwrap();
    let prepared = prepare(&setup.settings, &setup.data).unwrap();
    assert_eq!(prepared.lists.lookup(b"bet.example"), category("gambling"), "the last good copy stays in force");
    let local = prepared.health.sources.iter().find(|s| s.id == "local-gambling").unwrap();
    assert_eq!(local.state, hedgerow::lists::health::SourceState::Degraded, "{local:?}");
    assert!(local.reason.as_deref().unwrap().contains("gambling.txt"), "{local:?}");
}

#[test]
fn a_broken_declaration_keeps_the_last_good_list() {
    let setup = setup();
    prepare(&setup.settings, &setup.data).unwrap();
    write(
        &setup.settings.dir.join("zz-broken.toml"),
        "[[source]]\nid = \"x\"\ncategory = \"nope\"\nformat = \"domains\"\npath = \"x\"\n",
    );
    let kept = prepare(&setup.settings, &setup.data).unwrap();
    assert!(kept.report.is_none());
    let why = kept.stale.expect("the last good list is kept, and says why");
    assert!(why.contains("zz-broken.toml:3: unknown category `nope`"), "{why}");
    assert_eq!(kept.lists.lookup(b"bet.example"), category("gambling"));
    assert!(rebuild(&setup.settings, &setup.data).is_err(), "an explicit rebuild reports the error");
}

#[test]
fn enable_and_disable_switch_declared_sources() {
    let setup = setup();
    let mut settings = setup.settings.clone();
    settings.disable = vec!["local-gambling".into()];
    let sources = load_sources(&settings).unwrap();
    assert!(!sources.iter().find(|s| s.id == "local-gambling").unwrap().enabled);
    let (inputs, _) = load::plan(&sources, &setup.data);
    assert!(inputs.is_empty());

    settings.disable = vec!["no-such-source".into()];
    let error = load_sources(&settings).unwrap_err().to_string();
    assert!(error.contains("`no-such-source`") && error.contains("local-gambling"), "{error}");
}

#[test]
fn bad_declarations_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let settings = ListSettings { dir: dir.path().to_path_buf(), ..Default::default() };
    let file = dir.path().join("sources.toml");
    let cases = [
        ("[[source]]\nid = \"a\"\ncategory = \"gamble\"\nformat = \"domains\"\npath = \"x\"\n", 3, "unknown category"),
        ("[[source]]\nid = \"a\"\ncategory = \"gambling\"\nformat = \"domains\"\npath = \"x\"\nurls = 1\n", 6, "urls"),
        ("[[source]]\nid = \"a\"\ncategory = \"gambling\"\nformat = \"text\"\npath = \"x\"\n", 4, "domains"),
        ("\n[[source]]\nid = \"a\"\ncategory = \"gambling\"\nformat = \"domains\"\n", 2, "neither `path` nor `url`"),
        (
            "[[source]]\nid = \"a\"\ncategory = \"gambling\"\nformat = \"domains\"\npath = \"x\"\nurl = \"https://a.example/x\"\n",
            6,
            "both",
        ),
        (
            "[[source]]\nid = \"a\"\ncategory = \"gambling\"\nformat = \"domains\"\nurl = \"http://a.example/x\"\n",
            5,
            "plain http",
        ),
        (
            "[[source]]\nid = \"a\"\ncategory = \"gambling\"\nformat = \"domains\"\npath = \"x\"\n\n[[source]]\nid = \"a\"\ncategory = \"ads\"\nformat = \"domains\"\npath = \"y\"\n",
            7,
            "already declared",
        ),
        // A TOML syntax error: the parser's own words, at the line it stopped.
        ("[[source]\nid = \"a\"\n", 1, "unclosed array table, expected `]`"),
    ];
    for (text, line, needle) in cases {
        assert!(!needle.is_empty(), "every case names the words its message must contain");
        fs::write(&file, text).unwrap();
        let error = load_sources(&settings).unwrap_err();
        let message = error.to_string();
        assert_eq!(error.file, file, "{message}");
        assert_eq!(error.line, Some(line), "{message}");
        assert!(message.starts_with(&format!("{}:{line}: ", file.display())), "{message}");
        assert!(message.contains(needle), "{message}");
    }
}

fn shipped() -> ListSettings {
    ListSettings { dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/lists")), ..Default::default() }
}

#[test]
fn shipped_lists_load_and_compile_cleanly() {
    let sources = load_sources(&shipped()).expect("the shipped declarations load");
    let seeds: Vec<_> = sources.iter().filter(|s| s.id.starts_with("hedgerow-")).collect();
    let ut1: Vec<_> = sources.iter().filter(|s| s.id.starts_with("ut1-")).collect();
    assert_eq!(seeds.len(), hedgerow::policy::category::CATEGORIES.len(), "one seed per category");
    assert!(seeds.iter().all(|s| s.enabled && matches!(s.location, Location::Path(_))));
    assert!(!ut1.is_empty());
    for source in &ut1 {
        assert!(!source.enabled, "{} is off until enabled in the config", source.id);
        let Location::Url(url) = &source.location else { panic!("{} is a download", source.id) };
        let folder = source.member.as_deref().unwrap().strip_suffix("/domains").unwrap();
        assert_eq!(url, &format!("https://dsi.ut-capitole.fr/blacklists/download/{folder}.tar.gz"));
    }

    let data = tempfile::tempdir().unwrap();
    let prepared = rebuild(&shipped(), data.path()).unwrap();
    let report = prepared.report.unwrap();
    for source in &report.sources {
        assert!(source.error.is_none(), "{source:?}");
        assert_eq!(source.bad_lines, 0, "{source:?}");
        assert!(source.names > 0, "{source:?}");
    }
    let lists = prepared.lists;
    assert_eq!(lists.lookup(b"iwf.testfiltering.com"), category("csam"));
    assert_eq!(lists.lookup(b"ctiru.testfiltering.com"), category("terrorism"));
    assert!(lists.lookup(b"testfiltering.pornhub.com").contains(index_of("pornography").unwrap()));
    assert_eq!(lists.lookup(b"www.bet365.com"), category("gambling"));
    assert_eq!(lists.lookup(b"dns.google"), category("encrypted-dns"));
    assert_eq!(lists.lookup(b"mozilla.cloudflare-dns.com"), category("encrypted-dns"));
    assert_eq!(lists.lookup(b"nordvpn.com"), category("vpn-proxy"));
    assert_eq!(lists.lookup(b"www.tiktok.com"), category("social-media"));
    assert_eq!(lists.lookup(b"chatgpt.com"), category("ai-chat"));
    assert_eq!(lists.lookup(b"securepubads.g.doubleclick.net"), category("ads"));
    // SafeSearch hosts are rewritten by their own stage, never listed.
    for host in [
        "www.google.com",
        "www.google.co.uk",
        "google.com",
        "www.youtube.com",
        "m.youtube.com",
        "youtubei.googleapis.com",
        "youtube.googleapis.com",
        "www.youtube-nocookie.com",
        "www.bing.com",
        "bing.com",
        "edgeservices.bing.com",
        "duckduckgo.com",
        "start.duckduckgo.com",
        "www.ecosia.org",
        "search.brave.com",
        "pixabay.com",
        "yandex.ru",
        "forcesafesearch.google.com",
        "restrict.youtube.com",
    ] {
        assert_eq!(lists.lookup(host.as_bytes()), CategorySet::EMPTY, "{host} must not be listed");
    }
    // Ordinary school sites are not caught by a parent.
    for host in ["www.bbc.co.uk", "www.gov.uk", "classroom.google.com", "teams.microsoft.com"] {
        assert_eq!(lists.lookup(host.as_bytes()), CategorySet::EMPTY, "{host}");
    }
}
