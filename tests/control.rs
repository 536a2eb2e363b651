//! The control channel: `hedgerow status` and `hedgerow lists reload` reach
//! the server that owns the config's data_dir through its Unix socket, and
//! nothing else. A real `hedgerow serve` process, a real socket, real UDP.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hedgerow::control::{self, ControlError, Request};
use hedgerow::lists::health::SourceState;
use hedgerow::serve;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::authority::{Authority, Zone};
use support::client::{build_query, exchange_udp_from};

const BINARY: &str = env!("CARGO_BIN_EXE_hedgerow");

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A lists folder with one local source (games: game.test) and a config
/// that listens on 127.0.0.1 port 0 and forwards to `upstream`.
fn write_config(dir: &Path, upstream: SocketAddr) -> (PathBuf, PathBuf, PathBuf) {
    let lists = support::config::games_lists(dir);
    let data = dir.join("data");
    let config = dir.join("hedgerow.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n[dashboard]\nlisten = []\n[dns]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nmode = \"forward\"\n[[upstream.servers]]\naddress = \"{upstream}\"\n[lists]\ndir = {lists:?}\nupdate_hours = 0\n[[networks]]\nname = \"pupils\"\ncidrs = [\"127.0.0.1/32\"]\ngroup = \"pupil\"\n",
            data = data.display().to_string(),
            lists = lists.display().to_string(),
        ),
    )
    .unwrap();
    (config, data, lists)
}

fn hedgerow(args: &[&str], config: &Path) -> Output {
    Command::new(BINARY).args(args).arg("--config").arg(config).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_reload_reach_the_server_and_never_another_process() {
    let authority = Authority::start("127.0.0.1:0", vec![Zone::new("test.").a("later.test.", "192.0.2.8")]).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, data, lists) = write_config(dir.path(), authority.addr);
    std::fs::create_dir_all(&data).unwrap();

    // What an older server or a crash leaves behind: a pid file naming some
    // other live process (here a `sleep` of ours), and a socket file that no
    // one listens on.
    let bystander = Command::new("sleep").arg("60").spawn().unwrap();
    let mut bystander = KillOnDrop(bystander);
    std::fs::write(data.join("hedgerow.pid"), bystander.0.id().to_string()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(data.join("hedgerow.sock")).unwrap());
    assert!(data.join("hedgerow.sock").exists());

    // No server yet: both commands say so and fail.
    let output = hedgerow(&["status"], &config);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("no hedgerow server is running on data_dir"), "{}", text(&output.stderr));
    let output = hedgerow(&["lists", "reload"], &config);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("no hedgerow server is running"), "{}", text(&output.stderr));
    assert!(bystander.0.try_wait().unwrap().is_none(), "`lists reload` signalled the process in the pid file");

    let server_log = dir.path().join("serve.log");
    let child = Command::new(BINARY)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&server_log).unwrap())
        .spawn()
        .unwrap();
    let mut server = KillOnDrop(child);

    // `status --format json` once the server is up: the real pid and ports.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let output = hedgerow(&["status", "--format", "json"], &config);
        if output.status.success() {
            break serde_json::from_slice::<control::Status>(&output.stdout).unwrap();
        }
        assert!(
            server.0.try_wait().unwrap().is_none(),
            "serve exited: {}",
            std::fs::read_to_string(&server_log).unwrap()
        );
        assert!(Instant::now() < deadline, "status never answered: {}", text(&output.stderr));
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.pid, server.0.id());
    assert_eq!(status.udp.len(), 1);
    assert_ne!(status.udp[0].port(), 0, "the bound port, not the configured 0");
    assert_eq!(status.listed_names, 1);
    assert!(status.upstream.contains("forward"), "{}", status.upstream);
    assert!(!data.join("hedgerow.pid").exists(), "no pid file any more");
    let mode = std::fs::metadata(data.join("hedgerow.sock")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let table = hedgerow(&["status"], &config);
    assert!(table.status.success());
    assert!(text(&table.stdout).contains(&format!("pid {}", status.pid)), "{}", text(&table.stdout));

    // `lists reload` swaps in a changed list.
    let dns = status.udp[0];
    let pupil: IpAddr = "127.0.0.1".parse().unwrap();
    let code = |name: &'static str| async move {
        exchange_udp_from(pupil, dns, &build_query(name, RecordType::A)).await.unwrap().metadata.response_code
    };
    assert_eq!(code("later.test").await, ResponseCode::NoError);
    std::fs::write(lists.join("games.txt"), "game.test\nlater.test\n").unwrap();
    let output = hedgerow(&["lists", "reload"], &config);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("2 listed names"), "{}", text(&output.stdout));
    assert_eq!(code("later.test").await, ResponseCode::NXDomain, "the reply comes after the swap");
    assert!(status.lists.is_healthy(), "{:?}", status.lists);

    // The list is emptied by mistake: the reload keeps its last good names,
    // and `status` tells the ICT lead that the source is degraded.
    std::fs::write(lists.join("games.txt"), "").unwrap();
    let _ = hedgerow(&["lists", "reload"], &config);
    assert_eq!(code("later.test").await, ResponseCode::NXDomain, "an emptied list keeps its last good names");
    let output = hedgerow(&["status", "--format", "json"], &config);
    let degraded = serde_json::from_slice::<control::Status>(&output.stdout).unwrap();
    let source = &degraded.lists.sources[0];
    assert_eq!((source.id.as_str(), source.state), ("local-games", SourceState::Degraded), "{:?}", degraded.lists);
    let table = text(&hedgerow(&["status"], &config).stdout);
    assert!(table.contains("1 NOT in force") && table.contains("local-games: degraded"), "{table}");

    // A clean stop removes the socket; then the commands fail and signal no one.
    // SAFETY: kill(2) on our own child's pid, which has not been reaped.
    assert_eq!(unsafe { libc::kill(server.0.id() as i32, libc::SIGTERM) }, 0);
    let stopped = server.0.wait().unwrap();
    assert!(stopped.success(), "{}", std::fs::read_to_string(&server_log).unwrap());
    assert!(!data.join("hedgerow.sock").exists(), "the socket is removed at a clean exit");
    std::fs::write(data.join("hedgerow.pid"), bystander.0.id().to_string()).unwrap();
    let output = hedgerow(&["lists", "reload"], &config);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("no hedgerow server is running"), "{}", text(&output.stderr));
    assert!(!hedgerow(&["status"], &config).status.success());
    std::thread::sleep(Duration::from_millis(100));
    assert!(bystander.0.try_wait().unwrap().is_none(), "no process was signalled");
    authority.stop().await;
}

fn in_process_config(data: &Path, lists: &Path, upstream: SocketAddr) -> hedgerow::config::Config {
    support::config::forwarding(
        upstream,
        data,
        lists,
        "[[networks]]\nname = \"pupils\"\ncidrs = [\"127.0.0.1/32\"]\ngroup = \"pupil\"\n",
        "control-test",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_dir_is_refused_and_the_protocol_answers() {
    let authority = Authority::start("127.0.0.1:0", vec![Zone::new("test.")]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lists = support::config::games_lists(dir.path());
    let config = in_process_config(&data, &lists, authority.addr);
    let running = serve::start(&config).await.unwrap();

    let error = serve::start(&config).await.err().expect("a second server must not start");
    let message = error.to_string();
    assert!(
        message.contains("already running on data_dir") && message.contains(&data.display().to_string()),
        "{message}"
    );

    // The protocol, as the dashboard will speak it.
    let data_for_request = data.clone();
    let reply = tokio::task::spawn_blocking(move || {
        control::request(&data_for_request, Request::Status, Duration::from_secs(5))
    })
    .await
    .unwrap()
    .unwrap();
    let status = reply.status.unwrap();
    assert_eq!(status.udp, running.udp_addrs());
    assert_eq!(status.pid, std::process::id());
    assert!(status.log_enabled);

    let socket = control::socket_path(&data);
    let raw = tokio::task::spawn_blocking(move || {
        use std::io::{BufRead, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        stream.write_all(b"{\"command\":\"format-disk\"}\n").unwrap();
        let mut line = String::new();
        std::io::BufReader::new(&stream).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let reply: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(reply["ok"], false);
    assert!(reply["error"].as_str().unwrap().contains("not a control request"), "{raw}");

    running.stop().await;
    assert!(!control::socket_path(&data).exists());
    let error = control::request(&data, Request::Status, Duration::from_secs(5)).unwrap_err();
    assert!(matches!(error, ControlError::NotRunning { .. }), "{error}");
    // The data_dir is free again.
    let again = serve::start(&config).await.unwrap();
    again.stop().await;
    authority.stop().await;
}
