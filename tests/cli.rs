//! The `hedgerow` binary as an ICT lead uses it: the embedded default on
//! 127.0.0.1:5353, `check-config` on a bad file, `check` explaining a decision.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::client::{build_query, exchange_tcp, exchange_udp_from};

const BINARY: &str = env!("CARGO_BIN_EXE_hedgerow");

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `hedgerow serve` with no config answers on 127.0.0.1:5353, over UDP and
/// TCP, refuses loopback addresses outside the demo networks, and keeps its
/// state under ./data. Only queries that policy answers are sent, so nothing
/// tries to reach the real root servers.
#[tokio::test]
async fn embedded_default_serves_on_5353_and_refuses_outsiders() {
    let workdir = tempfile::tempdir().unwrap();
    let child = Command::new(BINARY)
        .arg("serve")
        .current_dir(workdir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let server: SocketAddr = "127.0.0.1:5353".parse().unwrap();
    let outsider: IpAddr = "127.0.0.4".parse().unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    let response = loop {
        let query = build_query("example.com", RecordType::A);
        match exchange_udp_from(outsider, server, &query).await {
            Ok(response) => break response,
            Err(_) if Instant::now() < deadline => {
                if let Some(status) = child.0.try_wait().unwrap() {
                    let mut stderr = String::new();
                    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
                    panic!("hedgerow serve exited with {status}: {stderr}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("the embedded default never answered on {server}: {error}"),
        }
    };
    assert_eq!(response.metadata.response_code, ResponseCode::Refused);

    // TCP answers too. A pupil asking for Firefox's DoH canary is answered by
    // the bypass stage itself, so again nothing goes upstream.
    let over_tcp = exchange_tcp(server, &build_query("use-application-dns.net", RecordType::A)).await;
    assert_eq!(over_tcp.expect("TCP on 5353").metadata.response_code, ResponseCode::NXDomain);
    assert!(workdir.path().join("data").is_dir(), "state lives under ./data");
}

#[test]
fn check_config_names_the_file_and_line_of_a_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("school.toml");
    std::fs::write(&path, "[dns]\nlisten = [\"127.0.0.1:53\"]\n\n[cache]\nsize = 1000\nmax_ttl = 60\n").unwrap();
    let output = Command::new(BINARY).arg("check-config").arg(&path).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!("{}:6:", path.display());
    assert!(stderr.contains(&expected), "expected {expected:?} in: {stderr}");
    assert!(stderr.contains("max_ttl"), "the message names the key: {stderr}");

    // `serve` refuses the same file with the same message instead of starting.
    let output = Command::new(BINARY).arg("serve").arg("--config").arg(&path).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains(&expected));

    // A good file prints the effective config, defaults included. (A file
    // with no [[networks]] is now an error: every query would be refused.)
    std::fs::write(
        &path,
        "[dns]\nlisten = [\"127.0.0.1:53\"]\n[[networks]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\ngroup = \"pupil\"\n",
    )
    .unwrap();
    let output = Command::new(BINARY).arg("check-config").arg(&path).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("mode = \"recursive\"") && stdout.contains("[groups.pupil]"), "{stdout}");
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
    let run = |args: &[&str]| {
        let output = Command::new(BINARY).arg("check").args(args).output().unwrap();
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
    let lists = dir.path().join("lists");
    std::fs::create_dir_all(&lists).unwrap();
    std::fs::write(lists.join("games.txt"), "game.test\n").unwrap();
    std::fs::write(
        lists.join("local.toml"),
        "[[source]]\nid = \"local-games\"\ncategory = \"games\"\nformat = \"domains\"\npath = \"games.txt\"\n",
    )
    .unwrap();
    // A free port for the server (found by binding port 0 and letting it go).
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config_path = dir.path().join("hedgerow.toml");
    std::fs::write(
        &config_path,
        format!(
            "data_dir = {data:?}\n[dns]\nlisten = [\"127.0.0.1:{port}\"]\n[upstream]\nmode = \"forward\"\n[[upstream.servers]]\naddress = \"{upstream}\"\n[lists]\ndir = {lists:?}\nupdate_hours = 0\n[[networks]]\nname = \"pupils\"\ncidrs = [\"127.0.0.1/32\"]\ngroup = \"pupil\"\n",
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
