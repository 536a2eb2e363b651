//! The whole policy reloads, not just the lists: a real `hedgerow serve`
//! process with a config file; `hedgerow reload` and SIGHUP read the file
//! again and swap the new policy in under load (every answer is the old
//! policy's or the new one's, never an error), a broken file is refused with
//! its file:line and the policy in force stays, and a setting only a restart
//! applies is named.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hedgerow::control;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use support::authority::{Authority, Zone};
use support::client::{build_query, exchange_udp_from};

const BINARY: &str = env!("CARGO_BIN_EXE_hedgerow");
const PUPIL: &str = "127.0.0.1";
const STAFF: &str = "127.0.0.2";

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The config file: pupils on 127.0.0.1, staff on 127.0.0.2, forwarding to
/// `upstream`; `extra` is appended (group tables).
fn config_text(data: &Path, lists: &Path, upstream: SocketAddr, listen: &str, extra: &str) -> String {
    format!(
        "data_dir = {data:?}\n[dashboard]\nlisten = []\n[dns]\nlisten = [{listen}]\n[upstream]\nmode = \"forward\"\ntimeout_ms = 2000\n\
         [[upstream.servers]]\naddress = \"{upstream}\"\n[lists]\ndir = {lists:?}\nupdate_hours = 0\n\
         [[networks]]\nname = \"pupils\"\ncidrs = [\"{PUPIL}/32\"]\ngroup = \"pupil\"\n\
         [[networks]]\nname = \"staff\"\ncidrs = [\"{STAFF}/32\"]\ngroup = \"staff\"\n{extra}",
        data = data.display().to_string(),
        lists = lists.display().to_string(),
    )
}

/// Runs the binary with `--config` (off the runtime's worker threads).
async fn hedgerow(args: &[&str], config: &Path) -> Output {
    tokio::process::Command::new(BINARY).args(args).arg("--config").arg(config).output().await.unwrap()
}

fn address(answer: &Message) -> Option<IpAddr> {
    answer.answers.iter().find_map(|record| match &record.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        _ => None,
    })
}

async fn ask(server: SocketAddr, from: &str, name: &str) -> Message {
    exchange_udp_from(ip(from), server, &build_query(name, RecordType::A)).await.unwrap()
}

fn allowed(answer: &Message) -> bool {
    answer.metadata.response_code == ResponseCode::NoError && address(answer) == Some(ip("192.0.2.6"))
}

fn blocked(answer: &Message) -> bool {
    answer.metadata.response_code == ResponseCode::NXDomain && answer.answers.is_empty()
}

/// Staff asking for news.test, and pupils for game.test, in a loop. news.test
/// is the name whose policy changes: each answer must be the old policy's
/// (the upstream address) or the new one's (NXDOMAIN), never an error or a
/// timeout. game.test stays blocked for pupils throughout.
struct Load {
    answered: Arc<AtomicUsize>,
    wrong: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(server: SocketAddr) -> Load {
        let answered = Arc::new(AtomicUsize::new(0));
        let wrong = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..3)
            .map(|worker| {
                let (answered, wrong, stop) = (answered.clone(), wrong.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut i = worker;
                    while !stop.load(Ordering::SeqCst) {
                        i += 1;
                        let (from, name) = if i % 3 == 0 { (PUPIL, "game.test") } else { (STAFF, "news.test") };
                        let query = build_query(name, RecordType::A);
                        let outcome = match exchange_udp_from(ip(from), server, &query).await {
                            Err(error) => Err(format!("no answer: {error}")),
                            Ok(answer) if answer.queries != query.queries => {
                                Err(format!("another question: {answer:?}"))
                            }
                            Ok(answer) if name == "game.test" && !blocked(&answer) => {
                                Err(format!("game.test not blocked for pupils: {answer:?}"))
                            }
                            Ok(answer) if name == "news.test" && !allowed(&answer) && !blocked(&answer) => {
                                Err(format!("neither the old nor the new policy's answer: {answer:?}"))
                            }
                            Ok(_) => Ok(()),
                        };
                        match outcome {
                            Ok(()) => {
                                answered.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(why) => wrong.lock().unwrap().push(format!("{from} {name}: {why}")),
                        }
                    }
                })
            })
            .collect();
        Load { answered, wrong, stop, tasks }
    }

    fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// Waits until `more` further queries were answered correctly.
    async fn keeps_answering(&self, more: usize) {
        let target = self.answered() + more;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.answered() < target {
            assert!(Instant::now() < deadline, "the load stopped being answered: {:?}", self.wrong.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
        let wrong = self.wrong.lock().unwrap();
        assert!(wrong.is_empty(), "{} wrong answers, e.g. {:?}", wrong.len(), &wrong[..wrong.len().min(5)]);
        self.answered.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_the_whole_policy_under_load_and_refuses_a_broken_config() {
    let world = Zone::new("test.").a("news.test.", "192.0.2.6").a("game.test.", "192.0.2.7");
    let authority = Authority::start("127.0.0.1:0", vec![world]).await;
    let dir = tempfile::tempdir().unwrap();
    let lists = support::config::games_lists(dir.path());
    let data = dir.path().join("data");
    let config: PathBuf = dir.path().join("hedgerow.toml");
    let listen = "\"127.0.0.1:0\"";
    let good = |extra: &str| config_text(&data, &lists, authority.addr, listen, extra);
    std::fs::write(&config, good("")).unwrap();

    let server_log = dir.path().join("serve.log");
    let child = Command::new(BINARY)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&server_log).unwrap())
        .spawn()
        .unwrap();
    let mut server = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let output = hedgerow(&["status", "--format", "json"], &config).await;
        if output.status.success() {
            break serde_json::from_slice::<control::Status>(&output.stdout).unwrap();
        }
        assert!(
            server.0.try_wait().unwrap().is_none(),
            "serve exited: {}",
            std::fs::read_to_string(&server_log).unwrap()
        );
        assert!(Instant::now() < deadline, "status never answered: {}", text(&output.stderr));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let dns = status.udp[0];
    assert!(allowed(&ask(dns, STAFF, "news.test").await), "staff may read the news at first");

    let load = Load::start(dns);
    load.keeps_answering(50).await;

    // 1. Staff are denied news.test in the file; `hedgerow reload` applies it
    // while the load runs.
    let denied = "[groups.staff]\ndeny = [\"news.test\"]\n";
    std::fs::write(&config, good(denied)).unwrap();
    let output = hedgerow(&["reload"], &config).await;
    assert!(output.status.success(), "{}{}", text(&output.stdout), text(&output.stderr));
    assert!(text(&output.stdout).contains("reloaded"), "{}", text(&output.stdout));
    assert!(!text(&output.stdout).contains("restart to apply"), "nothing needs a restart: {}", text(&output.stdout));
    assert!(blocked(&ask(dns, STAFF, "news.test").await), "the new policy holds once reload returns");
    load.keeps_answering(50).await;
    assert!(blocked(&ask(dns, STAFF, "news.test").await), "and keeps holding");

    // 2. A syntax error: refused with file:line, exit 2; the policy stays.
    let broken = format!("{}this is not toml\n", good(denied));
    let line = broken.lines().count();
    std::fs::write(&config, &broken).unwrap();
    let output = hedgerow(&["reload"], &config).await;
    assert_eq!(output.status.code(), Some(2), "{}{}", text(&output.stdout), text(&output.stderr));
    let where_ = format!("{}:{line}:", config.display());
    assert!(text(&output.stderr).contains(&where_), "no {where_} in: {}", text(&output.stderr));
    assert!(text(&output.stderr).contains("policy in force stays"), "{}", text(&output.stderr));
    assert!(blocked(&ask(dns, STAFF, "news.test").await), "the previous policy still holds");

    // 3. An unknown category (valid TOML, invalid config), together with a
    // change that would otherwise apply (the staff deny removed): refused
    // whole, nothing of it applies.
    let unknown = "[groups.pupil]\nblock = [\"default\", \"no-such-category\"]\n";
    let bad = good(unknown);
    let line = bad.lines().position(|l| l.contains("no-such-category")).unwrap() + 1;
    std::fs::write(&config, &bad).unwrap();
    let output = hedgerow(&["reload"], &config).await;
    assert_eq!(output.status.code(), Some(2), "{}{}", text(&output.stdout), text(&output.stderr));
    let where_ = format!("{}:{line}:", config.display());
    assert!(text(&output.stderr).contains(&where_), "no {where_} in: {}", text(&output.stderr));
    assert!(text(&output.stderr).contains("no-such-category"), "{}", text(&output.stderr));
    assert!(blocked(&ask(dns, STAFF, "news.test").await), "nothing of a refused config applies");
    let log = std::fs::read_to_string(&server_log).unwrap();
    assert!(log.contains("RELOAD REFUSED") && log.contains(&where_), "the server log says why: {log}");

    // 4. dns.listen changed, and the staff deny removed: the deny goes at
    // once, the listen change is named as needing a restart, and the server
    // keeps answering where it was.
    let moved = config_text(&data, &lists, authority.addr, "\"127.0.0.1:0\", \"127.0.0.2:0\"", "");
    std::fs::write(&config, moved).unwrap();
    let output = hedgerow(&["reload"], &config).await;
    assert!(output.status.success(), "{}{}", text(&output.stdout), text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("restart to apply: dns.listen changed from [127.0.0.1:0] to [127.0.0.1:0, 127.0.0.2:0]"),
        "{stdout}"
    );
    assert!(allowed(&ask(dns, STAFF, "news.test").await), "the rest of the change applied");
    load.keeps_answering(50).await;

    // 5. SIGHUP reads the file again too.
    std::fs::write(&config, good(denied)).unwrap();
    // SAFETY: kill(2) on our own child's pid, which has not been reaped.
    assert_eq!(unsafe { libc::kill(server.0.id() as i32, libc::SIGHUP) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !blocked(&ask(dns, STAFF, "news.test").await) {
        assert!(
            Instant::now() < deadline,
            "SIGHUP never applied the config: {}",
            std::fs::read_to_string(&server_log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    load.keeps_answering(50).await;
    assert!(blocked(&ask(dns, STAFF, "news.test").await));

    let answered = load.finish().await;
    assert!(answered >= 250, "{answered}");
    assert!(server.0.try_wait().unwrap().is_none(), "the server is still running");
    authority.stop().await;
}

/// `hedgerow lists reload` is the same whole reload: the lists never run
/// ahead of the config naming them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_reload_is_the_whole_reload() {
    let world = Zone::new("test.").a("news.test.", "192.0.2.6");
    let authority = Authority::start("127.0.0.1:0", vec![world]).await;
    let dir = tempfile::tempdir().unwrap();
    let lists = support::config::games_lists(dir.path());
    let data = dir.path().join("data");
    let config: PathBuf = dir.path().join("hedgerow.toml");
    std::fs::write(&config, config_text(&data, &lists, authority.addr, "\"127.0.0.1:0\"", "")).unwrap();
    let child = Command::new(BINARY)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let output = hedgerow(&["status", "--format", "json"], &config).await;
        if output.status.success() {
            break serde_json::from_slice::<control::Status>(&output.stdout).unwrap();
        }
        assert!(Instant::now() < deadline, "status never answered: {}", text(&output.stderr));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let dns = status.udp[0];
    assert!(allowed(&ask(dns, STAFF, "news.test").await));
    let denied = "[groups.staff]\ndeny = [\"news.test\"]\n";
    std::fs::write(&config, config_text(&data, &lists, authority.addr, "\"127.0.0.1:0\"", denied)).unwrap();
    let output = hedgerow(&["lists", "reload"], &config).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(blocked(&ask(dns, STAFF, "news.test").await));
    authority.stop().await;
}

/// In-process: a server started from text (no file) has nothing to read
/// again; its reload keeps its policy (and reloads the lists).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_without_a_file_keeps_its_policy_on_reload() {
    let authority = Authority::start("127.0.0.1:0", vec![Zone::new("test.").a("news.test.", "192.0.2.6")]).await;
    let dir = tempfile::tempdir().unwrap();
    let lists = support::config::games_lists(dir.path());
    let data = dir.path().join("data");
    let rest = format!(
        "[groups.staff]\ndeny = [\"news.test\"]\n[[networks]]\nname = \"staff\"\ncidrs = [\"{STAFF}/32\"]\ngroup = \"staff\"\n"
    );
    let config = support::config::forwarding(authority.addr, &data, &lists, &rest, "in-process");
    assert!(config.file.is_none());
    let running = hedgerow::serve::start(&config).await.unwrap();
    let dns = running.udp_addrs()[0];
    assert!(blocked(&ask(dns, STAFF, "news.test").await));
    let report = running.reload().await.unwrap();
    assert_eq!(report.config, "in-process");
    assert!(report.restart_needed.is_empty(), "{:?}", report.restart_needed);
    assert!(blocked(&ask(dns, STAFF, "news.test").await), "the same policy after the reload");
    running.stop().await;
    authority.stop().await;
}
