//! Hedgerow fails closed (issue 9, section 1): a lists folder that is
//! missing or vanishes, a local list that is emptied, garbled or deleted,
//! and a config that would make an open resolver or refuse everyone never
//! quietly mean less filtering. Also the commands' exit codes and the
//! plain-English config errors.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hedgerow::config::Config;
use hedgerow::lists::health::{ListHealth, SourceState};
use hedgerow::serve;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use support::authority::{Authority, Zone};
use support::client::{build_query, exchange_udp_from};

const BINARY: &str = env!("CARGO_BIN_EXE_hedgerow");
const PUPIL: &str = "127.0.0.1";
const NETWORKS: &str = "[[networks]]\nname = \"pupils\"\ncidrs = [\"127.0.0.1/32\"]\ngroup = \"pupil\"\n";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

async fn ask(server: SocketAddr, name: &str) -> Message {
    exchange_udp_from(ip(PUPIL), server, &build_query(name, RecordType::A)).await.unwrap()
}

fn text_of(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// A lists folder with one local gambling list and a tiny SafeSearch map
/// (search.example.test -> safe.example.test).
fn write_lists(dir: &Path) {
    std::fs::create_dir_all(dir.join("safesearch")).unwrap();
    std::fs::write(dir.join("gambling.txt"), "casino.test\nbet.test\n").unwrap();
    std::fs::write(
        dir.join("local.toml"),
        "[[source]]\nid = \"local-gambling\"\ncategory = \"gambling\"\nformat = \"domains\"\npath = \"gambling.txt\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("safesearch/rewrites.toml"),
        "[[rewrite]]\nservice = \"example\"\nsetting = \"safesearch\"\ntarget = \"safe.example.test\"\nnames = [\"search.example.test\"]\n",
    )
    .unwrap();
}

fn world() -> Zone {
    Zone::new("test.")
        .a("casino.test.", "192.0.2.1")
        .a("bet.test.", "192.0.2.2")
        .a("news.test.", "192.0.2.3")
        .a("safe.example.test.", "192.0.2.4")
        .a("search.example.test.", "192.0.2.5")
}

fn health(data: &Path) -> ListHealth {
    ListHealth::read(data).expect("the server writes data_dir/lists-health.json")
}

// ---------------------------------------------------------------------------
// 1. A path source that fails keeps its last good names across a reload.

#[tokio::test]
async fn reload_keeps_a_local_list_that_was_emptied_garbled_or_deleted() {
    let authority = Authority::start("127.0.0.1:0", vec![world()]).await;
    let dir = tempfile::tempdir().unwrap();
    let (lists, data) = (dir.path().join("lists"), dir.path().join("data"));
    write_lists(&lists);
    let config = support::config::forwarding(authority.addr, &data, &lists, NETWORKS, "fail-closed");
    let running = serve::start(&config).await.unwrap();
    let server = running.udp_addrs()[0];
    assert_eq!(ask(server, "casino.test").await.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(ask(server, "news.test").await.metadata.response_code, ResponseCode::NoError);
    assert!(health(&data).is_healthy(), "{:?}", health(&data));

    let list = lists.join("gambling.txt");
    let garbage = "<html><body>Service unavailable</body></html>\n";
    let mostly_bad = "casino.test\nnot a name\nstill not\n!!!\n";
    for (what, body) in
        [("emptied", Some("")), ("garbled", Some(garbage)), ("mostly bad", Some(mostly_bad)), ("deleted", None)]
    {
        match body {
            Some(body) => std::fs::write(&list, body).unwrap(),
            None => std::fs::remove_file(&list).unwrap(),
        }
        // Whatever the reload makes of it, the names stay blocked.
        let _ = running.reload_lists().await;
        for name in ["casino.test", "bet.test"] {
            let answer = ask(server, name).await;
            assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain, "{name} after the list was {what}");
        }
        let record = health(&data);
        let source = record.sources.iter().find(|s| s.id == "local-gambling").unwrap();
        assert_eq!(source.state, SourceState::Degraded, "{what}: {source:?}");
        assert!(source.reason.as_deref().unwrap().contains("gambling.txt"), "{what}: {source:?}");
        assert!(source.reason.as_deref().unwrap().contains("keeping the last good copy"), "{what}: {source:?}");
        assert!(source.since.is_some() && source.names == Some(2), "{what}: {source:?}");
    }

    // A good list again takes effect, and the record is clean.
    std::fs::write(&list, "casino.test\nnews.test\n").unwrap();
    running.reload_lists().await.unwrap();
    assert_eq!(ask(server, "news.test").await.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(ask(server, "bet.test").await.metadata.response_code, ResponseCode::NoError, "a real edit applies");
    assert!(health(&data).is_healthy(), "{:?}", health(&data));

    running.stop().await;
    authority.stop().await;
}

// ---------------------------------------------------------------------------
// 2. The lists folder vanishing keeps the lists and SafeSearch in force.

#[tokio::test]
async fn reload_with_the_lists_folder_gone_keeps_lists_and_safesearch() {
    let authority = Authority::start("127.0.0.1:0", vec![world()]).await;
    let dir = tempfile::tempdir().unwrap();
    let (lists, data) = (dir.path().join("lists"), dir.path().join("data"));
    write_lists(&lists);
    let config = support::config::forwarding(authority.addr, &data, &lists, NETWORKS, "fail-closed");
    let running = serve::start(&config).await.unwrap();
    let server = running.udp_addrs()[0];
    let rewritten = |answer: &Message| {
        answer
            .answers
            .iter()
            .any(|r| matches!(&r.data, RData::CNAME(target) if target.0.to_ascii() == "safe.example.test."))
    };
    assert!(rewritten(&ask(server, "search.example.test").await));

    std::fs::rename(&lists, dir.path().join("lists-moved")).unwrap();
    let error = running.reload_lists().await.expect_err("the reload cannot read the folder").to_string();
    assert!(error.contains("fail-closed:") && error.contains("[lists] dir"), "{error}");
    assert_eq!(ask(server, "casino.test").await.metadata.response_code, ResponseCode::NXDomain);
    assert!(rewritten(&ask(server, "search.example.test").await), "SafeSearch stays on");
    let record = health(&data);
    assert!(record.error.as_deref().unwrap().contains("last good lists stay"), "{record:?}");

    running.stop().await;
    authority.stop().await;
}

// ---------------------------------------------------------------------------
// 3. Refusing to start with nothing to filter with.

#[tokio::test]
async fn a_named_lists_folder_that_does_not_exist_is_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("lsts");
    let config = support::config::forwarding(
        "127.0.0.1:9".parse().unwrap(),
        &dir.path().join("data"),
        &missing,
        NETWORKS,
        "school.toml",
    );
    let error = serve::start(&config).await.err().expect("must not start unfiltered").to_string();
    // support::config::forwarding writes `dir` on line 10.
    assert!(error.starts_with("school.toml:10: [lists] dir = "), "{error}");
    assert!(error.contains("lsts") && error.contains("hedgerow.toml"), "{error}");
    assert!(serve::load_lists(&config).is_err(), "`hedgerow check` would refuse too");

    // check-config says the same, with the file's own path and line.
    let path = dir.path().join("school.toml");
    std::fs::write(&path, format!("[lists]\ndir = {:?}\n{NETWORKS}", missing.display().to_string())).unwrap();
    let output = Command::new(BINARY).arg("check-config").arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text_of(&output));
    assert!(text_of(&output).contains(&format!("{}:2: [lists] dir", path.display())), "{}", text_of(&output));
}

#[tokio::test]
async fn no_good_copy_of_any_source_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let lists = dir.path().join("lists");
    write_lists(&lists);
    std::fs::write(lists.join("gambling.txt"), "not a list at all\nreally not\n").unwrap();
    let config =
        support::config::forwarding("127.0.0.1:9".parse().unwrap(), &dir.path().join("data"), &lists, NETWORKS, "t");
    let error = serve::start(&config).await.err().expect("nothing to filter with").to_string();
    assert!(error.contains("no enabled list source has ever been read") && error.contains("local-gambling"), "{error}");
}

/// The embedded default run from a folder with no lists/ filters with the
/// lists built into the binary (and says so loudly).
#[test]
fn embedded_default_filters_without_a_lists_folder() {
    let workdir = tempfile::tempdir().unwrap();
    let output = Command::new(BINARY).args(["check", "www.bet365.com"]).current_dir(workdir.path()).output().unwrap();
    let text = text_of(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("decision: blocked") && text.contains("gambling"), "{text}");
    assert!(text.contains("NO LISTS FOLDER HERE"), "a loud warning: {text}");
    let output = Command::new(BINARY)
        .args(["check", "iwf.testfiltering.com", "--group", "staff"])
        .current_dir(workdir.path())
        .output()
        .unwrap();
    assert!(text_of(&output).contains("decision: blocked"), "{}", text_of(&output));
}

// ---------------------------------------------------------------------------
// 4. Commands exit non-zero when they did not do their job.

fn school_config(dir: &Path, lists: &Path, extra: &str) -> PathBuf {
    let path = dir.join("school.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = {:?}\n[upstream]\nmode = \"forward\"\n[[upstream.servers]]\naddress = \"127.0.0.1:9\"\n[lists]\ndir = {:?}\nupdate_hours = 0\n{extra}\n{NETWORKS}",
            dir.join("data").display().to_string(),
            lists.display().to_string()
        ),
    )
    .unwrap();
    path
}

fn hedgerow(args: &[&str], config: &Path) -> Output {
    Command::new(BINARY).args(args).arg("--config").arg(config).output().unwrap()
}

#[test]
fn lists_compile_fails_for_a_bad_or_missing_source_but_keeps_its_last_good_copy() {
    let dir = tempfile::tempdir().unwrap();
    let lists = dir.path().join("lists");
    write_lists(&lists);
    std::fs::write(lists.join("games.txt"), "game.test\n").unwrap();
    std::fs::write(
        lists.join("more.toml"),
        "[[source]]\nid = \"local-games\"\ncategory = \"games\"\nformat = \"domains\"\npath = \"games.txt\"\n",
    )
    .unwrap();
    let config = school_config(dir.path(), &lists, "");
    let output = hedgerow(&["lists", "compile"], &config);
    assert_eq!(output.status.code(), Some(0), "{}", text_of(&output));

    // Every line bad: the compile still writes the lists (from the last
    // good copy) but exits non-zero, naming the source.
    std::fs::write(lists.join("games.txt"), "this is not\na list of names\n").unwrap();
    let output = hedgerow(&["lists", "compile"], &config);
    let text = text_of(&output);
    assert_eq!(output.status.code(), Some(3), "{text}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("list source `local-games` failed"), "{text}");
    assert!(text.contains("serving its last good copy"), "{text}");
    let check = Command::new(BINARY)
        .args(["check", "game.test", "--group", "pupil", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(text_of(&check).contains("decision: blocked"), "{}", text_of(&check));

    // Missing: the same.
    std::fs::remove_file(lists.join("games.txt")).unwrap();
    let output = hedgerow(&["lists", "compile"], &config);
    assert_eq!(output.status.code(), Some(3), "{}", text_of(&output));
    assert!(text_of(&output).contains("games.txt"), "{}", text_of(&output));
}

#[test]
fn lists_update_prints_progress_and_fails_when_a_download_fails() {
    let dir = tempfile::tempdir().unwrap();
    let lists = dir.path().join("lists");
    write_lists(&lists);
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(
        lists.join("remote.toml"),
        format!("[[source]]\nid = \"remote-porn\"\ncategory = \"pornography\"\nformat = \"domains\"\nurl = \"http://127.0.0.1:{port}/porn.txt\"\n"),
    )
    .unwrap();
    let config = school_config(dir.path(), &lists, "download_timeout_secs = 5");
    let output = hedgerow(&["lists", "update"], &config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0), "{}", text_of(&output));
    assert!(stderr.contains("[1/1] remote-porn: downloading http://127.0.0.1:"), "{stderr}");
    assert!(stderr.contains("[1/1] remote-porn: FAILED"), "{stderr}");
    // ...and it still compiled the local list.
    assert!(String::from_utf8_lossy(&output.stdout).contains("local-gambling"), "{}", text_of(&output));
}

// ---------------------------------------------------------------------------
// 5. check-config validates what serve would load.

#[test]
fn check_config_validates_sources_ids_and_the_safesearch_map() {
    let dir = tempfile::tempdir().unwrap();
    let lists = dir.path().join("lists");
    write_lists(&lists);
    let run = |extra: &str| {
        let config = school_config(dir.path(), &lists, extra);
        let output = Command::new(BINARY).arg("check-config").arg(&config).output().unwrap();
        (output.status.code(), text_of(&output))
    };
    let (code, text) = run("");
    assert_eq!(code, Some(0), "{text}");

    let (code, text) = run("disable = [\"local-gamblin\"]");
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("`local-gamblin`") && text.contains("did you mean `local-gambling`"), "{text}");

    std::fs::write(
        lists.join("broken.toml"),
        "[[source]]\nid = \"x\"\ncategory = \"gamblng\"\nformat = \"domains\"\npath = \"x\"\n",
    )
    .unwrap();
    let (code, text) = run("");
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("broken.toml:3: unknown category `gamblng`"), "{text}");
    std::fs::remove_file(lists.join("broken.toml")).unwrap();

    std::fs::write(lists.join("safesearch/rewrites.toml"), "[[rewrite]]\nservice = 3\n").unwrap();
    let (code, text) = run("");
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("rewrites.toml"), "{text}");
    write_lists(&lists);

    std::fs::write(lists.join("gambling.txt"), "").unwrap();
    let (code, text) = run("");
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("local-gambling") && text.contains("empty"), "{text}");
}

// ---------------------------------------------------------------------------
// 6. Config: open resolvers, no networks, plain errors.

const BASE: &str = "[dns]\nlisten = [\"127.0.0.1:53\"]\n";

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, "school.toml").map_err(|error| error.to_string())
}

#[test]
fn a_network_covering_the_internet_needs_allow_open_resolver() {
    for cidr in ["0.0.0.0/0", "::/0", "0.0.0.0/1", "128.0.0.0/1", "2000::/3"] {
        let text =
            format!("{BASE}[[networks]]\nname = \"all\"\ncidrs = [\"10.0.0.0/8\", \"{cidr}\"]\ngroup = \"pupil\"\n");
        let error = parse(&text).expect_err(cidr);
        assert!(error.starts_with("school.toml:5:"), "{error}");
        assert!(
            error.contains(cidr) && error.contains("open resolver") && error.contains("allow_open_resolver = true"),
            "{error}"
        );
        let allowed =
            format!("[dns]\nlisten = [\"127.0.0.1:53\"]\nallow_open_resolver = true\n{}", &text[BASE.len()..]);
        let config = parse(&allowed).unwrap_or_else(|error| panic!("{cidr}: {error}"));
        assert!(config.allow_open_resolver);
        assert!(parse(&config.to_toml()).unwrap().allow_open_resolver, "the key survives check-config's output");
    }
    // A school's own large ranges are fine.
    for cidr in ["10.0.0.0/8", "fc00::/7", "172.16.0.0/12"] {
        parse(&format!("{BASE}[[networks]]\nname = \"a\"\ncidrs = [\"{cidr}\"]\ngroup = \"pupil\"\n")).unwrap();
    }
}

#[test]
fn a_config_without_networks_is_an_error() {
    let error = parse(BASE).unwrap_err();
    assert!(error.contains("no [[networks]]") && error.contains("every query would be refused"), "{error}");
}

#[test]
fn config_errors_quote_the_value_and_give_an_example() {
    let network = |cidr: &str| format!("{BASE}[[networks]]\nname = \"a\"\ncidrs = [\"{cidr}\"]\ngroup = \"pupil\"\n");
    let error = parse(&network("10.0.0.0/33")).unwrap_err();
    assert!(
        error.starts_with("school.toml:5: cidrs = [\"10.0.0.0/33\"]: the prefix length /33 is not 0-32"),
        "{error}"
    );
    assert!(error.contains("e.g.") || error.contains("like \"10.1.0.0/16\""), "{error}");
    let error = parse(&network("10.0.0.1")).unwrap_err();
    assert!(error.contains("\"10.0.0.1/32\""), "{error}");
    let error = parse(&network("pupils")).unwrap_err();
    assert!(error.contains("\"pupils\"") && error.contains("not an IP subnet"), "{error}");

    let error = parse(&format!("{}[groups.pupil]\nyoutube = true\n", network("10.0.0.0/8"))).unwrap_err();
    assert_eq!(
        error,
        "school.toml:8: youtube = true: expected one of \"strict\", \"moderate\", \"off\", e.g. youtube = \"strict\""
    );
    let error = parse(&format!("{}[groups.pupil]\nsafesearch = \"yes\"\n", network("10.0.0.0/8"))).unwrap_err();
    assert!(error.contains("safesearch = \"yes\": expected true or false, e.g. safesearch = true"), "{error}");

    let listen = |entries: &str| format!("[dns]\nlisten = [{entries}]\n{NETWORKS}");
    let error = parse(&listen("\"0.0.0.0\"")).unwrap_err();
    assert!(
        error.starts_with("school.toml:2: listen = [\"0.0.0.0\"]: it has no port; write \"0.0.0.0:53\""),
        "{error}"
    );
    let error = parse(&listen("\"dns.school\"")).unwrap_err();
    assert!(error.contains("\"dns.school\"") && error.contains("\"0.0.0.0:53\""), "{error}");
    let error = parse(&listen("\"127.0.0.1:53\", \"[::1]:53\", \"127.0.0.1:53\"")).unwrap_err();
    assert!(error.contains("has 127.0.0.1:53 twice") && !error.contains("another DNS server"), "{error}");
}

#[test]
fn check_config_exits_non_zero_with_the_plain_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("school.toml");
    for (text, expected) in [
        (
            format!("{BASE}[[networks]]\nname = \"all\"\ncidrs = [\"0.0.0.0/0\"]\ngroup = \"pupil\"\n"),
            "allow_open_resolver",
        ),
        (BASE.to_string(), "no [[networks]]"),
        (format!("{NETWORKS}[groups.pupil]\nyoutube = true\n"), "youtube = true: expected one of"),
        (format!("[dns]\nlisten = [\"127.0.0.1:53\", \"127.0.0.1:53\"]\n{NETWORKS}"), "twice"),
    ] {
        std::fs::write(&path, &text).unwrap();
        let output = Command::new(BINARY).arg("check-config").arg(&path).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{text}\n{}", text_of(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&path.display().to_string()) && stderr.contains(expected), "{stderr}");
    }
}

/// `hedgerow serve` compiles in a child process (`hedgerow lists compile`),
/// which exits 3 when a source is on its last good copy: the server takes
/// that list (not a failure), so it starts filtering even when the compiled
/// file is gone and a local list is garbled.
#[tokio::test]
async fn serve_starts_from_last_good_copies_when_its_compiler_child_reports_a_degraded_source() {
    let authority = Authority::start("127.0.0.1:0", vec![world()]).await;
    let dir = tempfile::tempdir().unwrap();
    let lists = dir.path().join("lists");
    write_lists(&lists);
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("school.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[dashboard]\nlisten = []\n[dns]\nlisten = [\"127.0.0.1:{port}\"]\n[upstream]\nmode = \"forward\"\n[[upstream.servers]]\naddress = \"{}\"\n[lists]\ndir = {:?}\nupdate_hours = 0\n{NETWORKS}",
            dir.path().join("data").display().to_string(),
            authority.addr,
            lists.display().to_string()
        ),
    )
    .unwrap();
    assert_eq!(hedgerow(&["lists", "compile"], &config).status.code(), Some(0));
    std::fs::remove_file(dir.path().join("data/lists.compiled")).unwrap();
    std::fs::write(lists.join("gambling.txt"), "<html>gone</html>\n").unwrap();

    let log = dir.path().join("serve.log");
    let child = Command::new(BINARY)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(child);
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let answer = loop {
        match exchange_udp_from(ip(PUPIL), server, &build_query("casino.test", RecordType::A)).await {
            Ok(answer) => break answer,
            Err(_) => {
                if let Some(status) = child.0.try_wait().unwrap() {
                    panic!("serve exited with {status}: {}", std::fs::read_to_string(&log).unwrap());
                }
                assert!(std::time::Instant::now() < deadline, "{}", std::fs::read_to_string(&log).unwrap());
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("serving its last good copy") && log.contains("local-gambling"), "{log}");
    assert!(!log.contains("the list compiler"), "the child's exit 3 is not a failed compile: {log}");
    authority.stop().await;
}

/// A config that leaves `[lists] dir` out, checked where there is no
/// lists/: valid (serve would use the built-in lists, and check-config says
/// so), and its `disable` ids are checked against the built-in sources.
#[test]
fn check_config_without_a_lists_folder_checks_against_the_built_in_lists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("school.toml");
    let run = |lists: &str| {
        std::fs::write(&path, format!("data_dir = \"data\"\n{lists}{NETWORKS}")).unwrap();
        let output = Command::new(BINARY).arg("check-config").arg(&path).current_dir(dir.path()).output().unwrap();
        (output.status.code(), text_of(&output))
    };
    let (code, text) = run("");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("lists built into this binary"), "{text}");
    let (code, text) = run("[lists]\ndisable = [\"hedgerow-gamblng\"]\n");
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("did you mean `hedgerow-gambling`"), "{text}");
    assert!(!dir.path().join("data").exists(), "check-config writes nothing into data_dir");
}
