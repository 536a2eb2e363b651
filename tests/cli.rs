//! The `hedgerow` binary as an ICT lead uses it: the embedded default's demo
//! networks served on a free port, `check-config` on a bad file, `check`
//! explaining a decision. Every command keeps its state in a tempdir: none
//! writes into the repository.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hedgerow::config::{Config, DEFAULT_CONFIG};
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use support::client::{assert_reply_to, build_query, exchange_tcp_from, exchange_udp_from};

const BINARY: &str = env!("CARGO_BIN_EXE_hedgerow");
const SHIPPED_LISTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/lists");

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free for both UDP and TCP (bound, then let go).
fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The embedded default config (what `hedgerow serve` runs without
/// `--config`) written to `dir/hedgerow.toml`, changed only where a test
/// must: it listens on `listen`, keeps its state in `dir/data` (not `./data`
/// in the repository) and reads the repository's shipped lists by absolute
/// path without ever downloading.
fn default_config_in(dir: &Path, listen: SocketAddr) -> PathBuf {
    let replace = |text: &str, from: &str, to: &str| {
        assert!(text.contains(from), "the embedded default no longer has {from:?}: update this test");
        text.replacen(from, to, 1)
    };
    let data_dir = dir.join("data").display().to_string();
    let text = replace(DEFAULT_CONFIG, "data_dir = \"./data\"", &format!("data_dir = {data_dir:?}"));
    let text = replace(&text, "listen = [\"127.0.0.1:5353\"]", &format!("listen = [\"{listen}\"]"));
    let text = replace(&text, "listen = [\"127.0.0.1:8081\"]", "listen = []");
    let text = format!("{text}\n[lists]\ndir = {SHIPPED_LISTS:?}\nupdate_hours = 0\n[dashboard]\nlisten = []\n");
    let path = dir.join("hedgerow.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The RFC 8914 Extended DNS Error of `answer`: (info code, text).
fn extended_error(answer: &Message) -> Option<(u16, String)> {
    match answer.edns.as_ref()?.option(EdnsCode::from(15))? {
        EdnsOption::Unknown(15, data) if data.len() >= 2 => {
            Some((u16::from_be_bytes([data[0], data[1]]), String::from_utf8_lossy(&data[2..]).into_owned()))
        }
        _ => None,
    }
}

/// `hedgerow serve` on the embedded default's demo networks answers over UDP
/// and TCP, refuses loopback addresses outside them, and filters (bypass
/// canary, seed gambling list). The default itself listens on 5353, a port
/// that may be taken here (mDNS uses it), so the binary serves the same
/// config on a free port, and every answer is checked to be this server's
/// (ID, question, Hedgerow's own Extended DNS Error text), and the port is
/// checked silent once the server is killed. Only queries that policy
/// answers are sent, so nothing tries to reach the real root servers.
#[tokio::test]
async fn embedded_default_serves_its_demo_networks_and_refuses_outsiders() {
    let default = Config::embedded_default();
    assert_eq!(default.listen, ["127.0.0.1:5353".parse::<SocketAddr>().unwrap()], "the embedded default's port");
    assert_eq!(default.data_dir, Path::new("./data"), "the embedded default keeps its state under ./data");
    assert_eq!(default.block_page.listen, ["127.0.0.1:8081".parse::<SocketAddr>().unwrap()], "the block page's port");

    let workdir = tempfile::tempdir().unwrap();
    let server = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = default_config_in(workdir.path(), server);
    let server_log = workdir.path().join("serve.log");
    let child = Command::new(BINARY)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .current_dir(workdir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&server_log).unwrap())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let pupil: IpAddr = "127.0.0.1".parse().unwrap();
    let outsider: IpAddr = "127.0.0.4".parse().unwrap();

    // Wait for the first answer to a pupil asking for Firefox's DoH canary.
    let canary = build_query("use-application-dns.net", RecordType::A);
    let deadline = Instant::now() + Duration::from_secs(20);
    let response = loop {
        match exchange_udp_from(pupil, server, &canary).await {
            Ok(response) => break response,
            Err(error) => {
                if let Some(status) = child.0.try_wait().unwrap() {
                    let log = std::fs::read_to_string(&server_log).unwrap_or_default();
                    panic!("hedgerow serve exited with {status}: {log}");
                }
                assert!(Instant::now() < deadline, "hedgerow serve never answered on {server}: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // The bypass stage answers the canary itself: NXDOMAIN, no records.
    assert_reply_to(&canary, &response);
    assert_eq!(response.metadata.response_code, ResponseCode::NXDomain, "{response:?}");
    assert!(response.answers.is_empty(), "{response:?}");

    // An outsider is refused over both transports.
    let query = build_query("example.com", RecordType::A);
    let refused = exchange_udp_from(outsider, server, &query).await.expect("a UDP answer for the outsider");
    assert_reply_to(&query, &refused);
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    assert!(refused.answers.is_empty());
    let query = build_query("example.com", RecordType::AAAA);
    let refused = exchange_tcp_from(outsider, server, &query).await.expect("a TCP answer for the outsider");
    assert_reply_to(&query, &refused);
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);

    // A pupil asking over TCP for a name in the shipped gambling seed list
    // is blocked, with Hedgerow's own explanation attached.
    let mut query = build_query("www.bet365.com", RecordType::A);
    query.set_edns(Edns::new());
    let blocked = exchange_tcp_from(pupil, server, &query).await.expect("a TCP answer for the pupil");
    assert_reply_to(&query, &blocked);
    assert_eq!(blocked.metadata.response_code, ResponseCode::NXDomain, "{blocked:?}");
    let (code, text) = extended_error(&blocked).unwrap_or_else(|| panic!("no Extended DNS Error in {blocked:?}"));
    assert_eq!(code, 15, "info code Blocked");
    assert!(text.contains("blocked by Hedgerow") && text.contains("gambling"), "{text}");
    assert!(workdir.path().join("data").is_dir(), "state lives in the config's data_dir");

    // Once this server is gone, nothing answers there: the answers above were its own.
    let _ = child.0.kill();
    child.0.wait().unwrap();
    let after = exchange_udp_from(pupil, server, &canary).await;
    assert!(after.is_err(), "something else answers on {server}: {after:?}");
}

#[test]
fn check_config_names_the_file_and_line_of_a_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("school.toml");
    // State in the tempdir: were `serve` ever to start on this file, it would
    // write there, not into the repository.
    let data_dir = format!("data_dir = {:?}\n", dir.path().join("data").display().to_string());
    std::fs::write(
        &path,
        format!("{data_dir}[dns]\nlisten = [\"127.0.0.1:53\"]\n\n[cache]\nsize = 1000\nmax_ttl = 60\n"),
    )
    .unwrap();
    let output = Command::new(BINARY).arg("check-config").arg(&path).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!("{}:7:", path.display());
    assert!(stderr.contains(&expected), "expected {expected:?} in: {stderr}");
    assert!(stderr.contains("max_ttl"), "the message names the key: {stderr}");

    // `serve` refuses the same file with the same message instead of starting.
    let output = Command::new(BINARY).arg("serve").arg("--config").arg(&path).current_dir(dir.path()).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains(&expected));

    // A good file prints the effective config, defaults included. (A file
    // with no [[networks]] is an error: every query would be refused.)
    std::fs::write(
        &path,
        format!("{data_dir}[dns]\nlisten = [\"127.0.0.1:53\"]\n[[networks]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\ngroup = \"pupil\"\n"),
    )
    .unwrap();
    let output = Command::new(BINARY).arg("check-config").arg(&path).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("mode = \"recursive\"") && stdout.contains("[groups.pupil]"), "{stdout}");
    assert!(stdout.contains(data_dir.trim()), "{stdout}");
}

#[test]
fn example_config_is_valid() {
    // check-config now checks the lists folder the file names too; the
    // example names where a package installs it, so point it at the repo's.
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hedgerow.toml")).unwrap();
    let lists = concat!(env!("CARGO_MANIFEST_DIR"), "/lists");
    let installed = "dir = \"/usr/share/hedgerow/lists\"";
    assert!(example.contains(installed), "the example's lists folder moved; update this test");
    let dir = tempfile::tempdir().unwrap();
    let example_path = dir.path().join("hedgerow.toml");
    std::fs::write(&example_path, example.replace(installed, &format!("dir = {lists:?}"))).unwrap();
    let output = Command::new(BINARY).arg("check-config").arg(&example_path).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn check_explains_the_decision_for_a_client_or_group() {
    // The embedded default's networks and groups, with state in a tempdir.
    let dir = tempfile::tempdir().unwrap();
    let config = default_config_in(dir.path(), "127.0.0.1:5353".parse().unwrap());
    let run = |args: &[&str]| {
        let output = Command::new(BINARY)
            .arg("check")
            .args(args)
            .arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let staff = run(&["www.example.com", "--client", "127.0.0.2"]);
    assert!(staff.contains("group:    staff") && staff.contains("network:  demo-staff"), "{staff}");
    assert!(staff.contains("decision: allowed"), "{staff}");

    let outsider = run(&["www.example.com", "--client", "192.0.2.1"]);
    assert!(outsider.contains("decision: refused") && outsider.contains("stage:    access"), "{outsider}");

    let guest = run(&["www.example.com", "--group", "guest", "--type", "AAAA"]);
    assert!(guest.contains("group:    guest") && guest.contains("AAAA"), "{guest}");
}

/// `hedgerow lists reload` reaches the running server (SIGHUP via its pid
/// file), which rebuilds its lists and swaps them in without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_reload_command_swaps_lists_in_a_running_server() {
    use support::authority::{Authority, Zone};
    let authority = Authority::start("127.0.0.1:0", vec![Zone::new("test.").a("later.test.", "192.0.2.8")]).await;
    let dir = tempfile::tempdir().unwrap();
    let lists = support::config::games_lists(dir.path());
    // A free port for the server (found by binding port 0 and letting it go).
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config_path = dir.path().join("hedgerow.toml");
    std::fs::write(
        &config_path,
        format!(
            "data_dir = {data:?}\n[dashboard]\nlisten = []\n[dns]\nlisten = [\"127.0.0.1:{port}\"]\n[upstream]\nmode = \"forward\"\n[[upstream.servers]]\naddress = \"{upstream}\"\n[lists]\ndir = {lists:?}\nupdate_hours = 0\n[[networks]]\nname = \"pupils\"\ncidrs = [\"127.0.0.1/32\"]\ngroup = \"pupil\"\n",
            data = dir.path().join("data").display().to_string(),
            upstream = authority.addr,
            lists = lists.display().to_string(),
        ),
    )
    .unwrap();
    let server_log = dir.path().join("serve.log");
    let child = Command::new(BINARY)
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&server_log).unwrap())
        .spawn()
        .unwrap();
    let _child = KillOnDrop(child);
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let pupil: IpAddr = "127.0.0.1".parse().unwrap();

    let code = |name: &'static str| async move {
        exchange_udp_from(pupil, server, &build_query(name, RecordType::A)).await.map(|m| m.metadata.response_code)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while code("later.test").await.is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(code("later.test").await.unwrap(), ResponseCode::NoError);
    assert_eq!(code("game.test").await.unwrap(), ResponseCode::NXDomain);

    std::fs::write(lists.join("games.txt"), "game.test\nlater.test\n").unwrap();
    let output = Command::new(BINARY).args(["lists", "reload", "--config"]).arg(&config_path).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    while code("later.test").await.unwrap() != ResponseCode::NXDomain {
        assert!(Instant::now() < deadline, "the reloaded list never took effect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The server compiled in a child process (its memory is not the server's):
    // at start and again for the reload.
    let log = std::fs::read_to_string(&server_log).unwrap();
    assert_eq!(log.matches("lists compiled by a child process").count(), 2, "{log}");
    authority.stop().await;
}
