//! Categories are data: a school's own categories in the config, 64 bits in
//! the compiled file, the previous format recompiling by itself, the
//! illegal-content categories staying locked, and the 2025 themes' seeds.

mod support;

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hedgerow::config::Config;
use hedgerow::dns::blocklist::{self, Verdict};
use hedgerow::download::{prepare, rebuild};
use hedgerow::lists::compiled::{CompiledLists, FORMAT_VERSION, ListError};
use hedgerow::lists::load::artefact_path;
use hedgerow::lists::sources::ListSettings;
use hedgerow::policy::category::{self, CATEGORIES, CategorySet, index_of};
use hedgerow::policy::group::default_blocked;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::client::{build_query, exchange_udp_from};

const BINARY: &str = env!("CARGO_BIN_EXE_hedgerow");

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The school's own categories for the 40-category test: 18 on top of the
/// 22 shipped, at bits from just above the shipped ones up to 63 (the old
/// file format stopped at 23).
const CUSTOM_BITS: [u8; 18] = [22, 23, 24, 25, 30, 31, 32, 33, 40, 41, 47, 48, 50, 55, 56, 61, 62, 63];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_categories_compile_and_each_blocks_over_udp() {
    use support::authority::{Authority, Zone};
    assert_eq!(CATEGORIES.len() + CUSTOM_BITS.len(), 40);
    let authority = Authority::start("127.0.0.1:0", vec![Zone::new("test.").a("open.test.", "192.0.2.8")]).await;
    let dir = tempfile::tempdir().unwrap();
    let lists = dir.path().join("lists");
    fs::create_dir_all(&lists).unwrap();

    // Every category, shipped and custom: (id, the name its own list holds).
    let mut ids: Vec<String> = CATEGORIES.iter().map(|c| c.id.to_string()).collect();
    let mut custom = String::new();
    for bit in CUSTOM_BITS {
        let id = format!("school-{bit}");
        custom.push_str(&format!(
            "[[categories.custom]]\nid = \"{id}\"\nbit = {bit}\nname = \"School category {bit}\"\n\
             description = \"A school's own\"\nkind = \"extra\"\nblocked_for = [\"pupil\"]\n\n"
        ));
        ids.push(id);
    }
    let mut declarations = String::new();
    for id in &ids {
        fs::write(lists.join(format!("{id}.txt")), format!("{id}.block.test\n")).unwrap();
        declarations.push_str(&format!(
            "[[source]]\nid = \"local-{id}\"\ncategory = \"{id}\"\nformat = \"domains\"\npath = \"{id}.txt\"\n\n"
        ));
    }
    fs::write(lists.join("local.toml"), declarations).unwrap();
    assert_eq!(ids.len(), 40);

    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let block: Vec<String> = ids.iter().map(|id| format!("{id:?}")).collect();
    let config_path = dir.path().join("hedgerow.toml");
    fs::write(
        &config_path,
        format!(
            "data_dir = {data:?}\n[dashboard]\nlisten = []\n[dns]\nlisten = [\"127.0.0.1:{port}\"]\n[upstream]\nmode = \"forward\"\n\
             [[upstream.servers]]\naddress = \"{upstream}\"\n[lists]\ndir = {lists:?}\nupdate_hours = 0\n\
             {custom}[groups.pupil]\nblock = [{block}]\n\
             [[networks]]\nname = \"pupils\"\ncidrs = [\"127.0.0.1/32\"]\ngroup = \"pupil\"\n",
            data = dir.path().join("data").display().to_string(),
            upstream = authority.addr,
            lists = lists.display().to_string(),
            block = block.join(", "),
        ),
    )
    .unwrap();

    // The effective config names the custom categories, and reads back.
    let output = Command::new(BINARY).arg("check-config").arg(&config_path).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let effective = String::from_utf8_lossy(&output.stdout);
    assert!(effective.contains("[[categories.custom]]\nid = \"school-63\"\nbit = 63"), "{effective}");

    let server_log = dir.path().join("serve.log");
    let child = Command::new(BINARY)
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&server_log).unwrap())
        .spawn()
        .unwrap();
    let _child = KillOnDrop(child);
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let pupil: IpAddr = "127.0.0.1".parse().unwrap();
    let code = |name: String| async move {
        exchange_udp_from(pupil, server, &build_query(&name, RecordType::A)).await.map(|m| m.metadata.response_code)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while code("open.test".into()).await.is_err() {
        let log = fs::read_to_string(&server_log).unwrap_or_default();
        assert!(Instant::now() < deadline, "server did not start:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(code("open.test".into()).await.unwrap(), ResponseCode::NoError);
    for id in &ids {
        let name = format!("www.{id}.block.test");
        assert_eq!(code(name.clone()).await.unwrap(), ResponseCode::NXDomain, "{name} ({id}) is blocked");
    }

    // The compiled file the server built holds every bit, up to 63.
    let lists = CompiledLists::open(&artefact_path(&dir.path().join("data"))).unwrap();
    assert_eq!(lists.lookup(b"school-63.block.test"), CategorySet(1 << 63));
    assert_eq!(lists.lookup(b"school-22.block.test"), CategorySet(1 << 22));
    assert_eq!(lists.lookup(b"fraud.block.test"), CategorySet::of(index_of("fraud").unwrap()));
    let all = lists.explain(b"school-40.block.test");
    assert_eq!(all[0].blocks, CategorySet(1 << 40));
    assert_eq!(all[0].source.as_deref(), Some("local-school-40"));
}

fn copy_folder(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn a_file_of_the_previous_format_recompiles_by_itself() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format3");
    let dir = tempfile::tempdir().unwrap();
    let lists = dir.path().join("lists");
    copy_folder(&fixture, &lists);
    fs::remove_file(lists.join("lists.compiled")).unwrap();
    let data = dir.path().join("data");
    fs::create_dir_all(&data).unwrap();
    let artefact = artefact_path(&data);
    fs::copy(fixture.join("lists.compiled"), &artefact).unwrap();

    match CompiledLists::open(&artefact) {
        Err(ListError::Version { found: 3, expected, .. }) => assert_eq!(expected, FORMAT_VERSION),
        Err(other) => panic!("the fixture is a format-3 file: {other}"),
        Ok(_) => panic!("a format-3 file must not open as format {FORMAT_VERSION}"),
    }
    let settings = ListSettings { dir: lists, ..Default::default() };
    let prepared = prepare(&settings, &data).expect("the old file is replaced, not an error");
    assert!(prepared.report.is_some(), "the lists were recompiled");
    assert!(prepared.stale.is_none());
    let gambling = CategorySet::of(index_of("gambling").unwrap());
    let ads = CategorySet::of(index_of("ads").unwrap());
    for lists in [prepared.lists, CompiledLists::open(&artefact).expect("the new file opens")] {
        assert_eq!(lists.lookup(b"www.bet365.com"), gambling);
        assert_eq!(lists.lookup(b"paddypower.com"), gambling);
        assert_eq!(lists.lookup(b"ads.doubleclick.net"), ads);
        assert_eq!(lists.lookup(b"allowed.doubleclick.net"), CategorySet::EMPTY);
        assert_eq!(lists.lookup(b"example.com"), CategorySet::EMPTY);
    }
    // And the next start reuses it.
    assert!(prepare(&settings, &data).unwrap().report.is_none());
}

fn parse(extra: &str) -> Result<Config, String> {
    let text = format!(
        "data_dir = \"/tmp/hedgerow-categories-never-written\"\n{extra}\n\
         [[networks]]\nname = \"pupils\"\ncidrs = [\"10.0.0.0/8\"]\ngroup = \"pupil\"\n\
         [[networks]]\nname = \"staff\"\ncidrs = [\"10.1.0.0/16\"]\ngroup = \"staff\"\n"
    );
    Config::parse(&text, "test").map_err(|error| error.to_string())
}

fn shipped_lists(data: &Path) -> CompiledLists {
    let settings = ListSettings { dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("lists"), ..Default::default() };
    rebuild(&settings, data).expect("the shipped lists compile").lists
}

fn blocked_by(lists: &CompiledLists, config: &Config, group: &str, name: &str) -> Option<&'static str> {
    match blocklist::check(lists, &config.groups[group], config.locked, name.as_bytes()) {
        Verdict::Blocked(block) => Some(block.category.map_or("(deny)", |c| c.id)),
        _ => None,
    }
}

/// Refused, not ignored: a config redeclaring `csam` or `terrorism`, or
/// taking their bits, does not load; a data file declaring them unlocked
/// does not parse; a group cannot drop them. The locked set still blocks.
#[test]
fn no_file_unlocks_csam_or_terrorism() {
    for (id, bit) in [("csam", 50), ("terrorism", 51)] {
        let redeclare = |locked: bool| {
            parse(&format!(
                "[[categories.custom]]\nid = \"{id}\"\nbit = {bit}\nname = \"x\"\nkind = \"extra\"\nlocked = {locked}\n"
            ))
            .unwrap_err()
        };
        let error = redeclare(false);
        assert!(error.contains("always locked") && error.contains(id), "{error}");
        let error = redeclare(true);
        assert!(error.contains("shipped category") && error.contains(id), "{error}");
        let taken = index_of(id).unwrap();
        let error = parse(&format!(
            "[[categories.custom]]\nid = \"not-{id}\"\nbit = {taken}\nname = \"x\"\nkind = \"extra\"\n"
        ))
        .unwrap_err();
        assert!(error.contains("is taken by category") && error.contains(id), "{error}");
        let error = parse(&format!("[groups.staff]\nblock = [\"!{id}\"]\n")).unwrap_err();
        assert!(error.contains("locked"), "{error}");

        // The shipped file with this category's `locked = true` turned off.
        let text = category::SHIPPED_TEXT;
        let at = text.find(&format!("id = \"{id}\"")).unwrap();
        let lock = at + text[at..].find("locked = true").unwrap();
        let unlocked = format!("{}locked = false{}", &text[..lock], &text[lock + "locked = true".len()..]);
        let error = category::parse_declarations(&unlocked).unwrap_err();
        assert!(error.contains(id), "{error}");
    }

    let config = parse("[groups.staff]\nblock = []\n").unwrap();
    for id in ["csam", "terrorism", "malware"] {
        assert!(config.locked.contains(index_of(id).unwrap()), "{id} is locked");
        assert!(config.groups["staff"].blocked.contains(index_of(id).unwrap()), "{id} applies to staff");
    }
    let data = tempfile::tempdir().unwrap();
    let lists = shipped_lists(data.path());
    assert_eq!(blocked_by(&lists, &config, "staff", "iwf.testfiltering.com"), Some("csam"));
    assert_eq!(blocked_by(&lists, &config, "staff", "ctiru.testfiltering.com"), Some("terrorism"));
    assert_eq!(blocked_by(&lists, &config, "staff", "www.bet365.com"), None, "staff asked for nothing else");
}

/// The 2025 themes: misinformation and fraud have their own ids; hate is
/// `discrimination` (one id, said in its description).
#[test]
fn misinformation_fraud_and_hate_seeds_are_blocked_for_pupils() {
    let config = parse("").unwrap();
    let data = tempfile::tempdir().unwrap();
    let lists = shipped_lists(data.path());
    for (name, id) in [
        ("www.infowars.com", "misinformation"),
        ("naturalnews.com", "misinformation"),
        ("fakediplomas.com", "fraud"),
        ("www.bogusphd.com", "fraud"),
        ("stormfront.org", "discrimination"),
    ] {
        assert_eq!(blocked_by(&lists, &config, "pupil", name), Some(id), "{name} for pupils");
    }
    let hate = category::by_index(index_of("discrimination").unwrap()).unwrap();
    assert!(hate.description.contains("hate"), "{}", hate.description);
    // Staff: fraud blocked, misinformation open (see lists/categories.toml).
    assert_eq!(blocked_by(&lists, &config, "staff", "fakediplomas.com"), Some("fraud"));
    assert_eq!(blocked_by(&lists, &config, "staff", "www.infowars.com"), None);
    let misinformation = index_of("misinformation").unwrap();
    assert!(default_blocked("guest").contains(misinformation) && !default_blocked("staff").contains(misinformation));
}

/// A school's category declared locked is blocked for every group, and a
/// group cannot take it away; the category file's citations exist.
#[test]
fn a_custom_category_can_be_locked_and_cites_resolve() {
    let custom = "[[categories.custom]]\nid = \"vaping-locked\"\nbit = 45\nname = \"Vaping\"\nkind = \"extra\"\n\
                  locked = true\n";
    let config = parse(&format!("{custom}[groups.staff]\nblock = []\n")).unwrap();
    assert!(config.groups["staff"].blocked.contains(45) && config.locked.contains(45));
    let error = parse(&format!("{custom}[groups.staff]\nblock = [\"!vaping-locked\"]\n")).unwrap_err();
    assert!(error.contains("locked"), "{error}");
    // Reading the same config again (a reload) is fine; a new id at its bit is not.
    assert!(parse(custom).is_ok());
    let error = parse("[[categories.custom]]\nid = \"other\"\nbit = 45\nname = \"x\"\nkind = \"extra\"\n").unwrap_err();
    assert!(error.contains("taken by category \"vaping-locked\""), "{error}");

    let standards = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/standards.md")).unwrap();
    let headings: Vec<String> = standards
        .lines()
        .filter_map(|line| line.strip_prefix("## "))
        .map(|heading| heading.to_lowercase().replace(' ', "-"))
        .collect();
    for c in CATEGORIES.iter() {
        let anchor = c.answers.split("docs/standards.md#").nth(1).expect("each category cites docs/standards.md");
        let anchor = anchor.trim_end_matches(')');
        assert!(headings.iter().any(|h| h == anchor), "{}: no heading for #{anchor}", c.id);
    }
}
