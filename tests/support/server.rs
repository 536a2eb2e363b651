//! The real `hedgerow serve` binary as a school runs it, for the browser and
//! crash tests: a config file in a tempdir (data_dir there too) with DNS and
//! (optionally) the dashboard on free loopback ports, forwarding to an
//! in-process authority, with a games list, and its stderr kept so a test
//! can read the one-time setup link from it.
//!
//! ```ignore
//! let authority = Authority::start("127.0.0.1:0", school_world()).await;
//! let school = SchoolFiles::write(&dir, authority.addr, true);
//! let server = Hedgerow::start(&school).await;
//! let link = server.setup_link();
//! ```

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use super::authority::Zone;
use super::client::exchange_udp_from;

const BINARY: &str = env!("CARGO_BIN_EXE_hedgerow");

/// The pupils' and staff's addresses in the test config (loopback addresses
/// a test socket can bind).
pub const PUPIL: &str = "127.0.0.1";
pub const STAFF: &str = "127.0.0.2";

/// The games name listed in the test's games list, and a plain name no list
/// has; both resolve upstream.
pub const GAMES_NAME: &str = "game.test";
pub const GAMES_ADDR: &str = "192.0.2.20";
pub const PLAIN_NAME: &str = "plain.test";
pub const PLAIN_ADDR: &str = "192.0.2.21";

/// How long the server may take to start answering.
const START: Duration = Duration::from_secs(30);

/// Every name resolves upstream, so any other answer comes from policy.
pub fn school_world() -> Vec<Zone> {
    vec![Zone::new("test.").a("game.test.", GAMES_ADDR).a("plain.test.", PLAIN_ADDR).a("www.game.test.", GAMES_ADDR)]
}

/// A loopback port free for both UDP and TCP (bound, then let go).
pub fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A school's files in a folder: the config, its lists and its data_dir.
#[derive(Debug, Clone)]
pub struct SchoolFiles {
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub dns: SocketAddr,
    /// None when the config turns the dashboard off.
    pub dashboard: Option<SocketAddr>,
}

impl SchoolFiles {
    /// Writes `dir/hedgerow.toml` (pupils on [`PUPIL`], staff on [`STAFF`],
    /// forwarding to `upstream`, a `local-games` list naming [`GAMES_NAME`],
    /// data in `dir/data`) with DNS on a free port and, if `dashboard`, the
    /// dashboard on another.
    pub fn write(dir: &Path, upstream: SocketAddr, dashboard: bool) -> SchoolFiles {
        let repository = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert!(dir.is_absolute() && !dir.starts_with(repository), "test files belong in a tempdir");
        // The games list names GAMES_NAME.
        let lists = super::config::games_lists(dir);
        let data_dir = dir.join("data");
        let dns = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let dashboard = dashboard.then(|| SocketAddr::from(([127, 0, 0, 1], free_port())));
        let dashboard_text = match dashboard {
            Some(addr) => format!("\n[dashboard]\nlisten = [\"{addr}\"]\n"),
            None => "\n[dashboard]\nlisten = []\n".to_string(),
        };
        let rest = format!(
            r#"[[networks]]
name = "pupils"
cidrs = ["{PUPIL}/32"]
group = "pupil"

[[networks]]
name = "staff-lan"
cidrs = ["{STAFF}/32"]
group = "staff"
{dashboard_text}"#
        );
        let text = format!(
            "# A test school (written by tests/support/server.rs).\n{}",
            super::config::forwarding_text(upstream, &data_dir, &lists, &dns.to_string(), &rest)
        );
        let config = dir.join("hedgerow.toml");
        std::fs::write(&config, text).unwrap();
        SchoolFiles { config, data_dir, dns, dashboard }
    }
}

/// A running `hedgerow serve --config <file>`; killed (SIGKILL) on drop.
pub struct Hedgerow {
    child: Option<Child>,
    pub files: SchoolFiles,
    stderr: Arc<Mutex<String>>,
}

impl Hedgerow {
    /// Starts the binary on `files` and waits until DNS answers (and the
    /// dashboard accepts connections, when it has one).
    pub async fn start(files: &SchoolFiles) -> Hedgerow {
        let mut child = Command::new(BINARY)
            .arg("serve")
            .arg("--config")
            .arg(&files.config)
            .current_dir(files.config.parent().unwrap())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hedgerow serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let pipe = child.stderr.take().unwrap();
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut text = stderr.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            });
        }
        let mut server = Hedgerow { child: Some(child), files: files.clone(), stderr };
        server.wait_until_ready().await;
        server
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The first stderr line containing `needle`, waiting up to `wait`.
    pub fn stderr_line(&self, needle: &str, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(line) = self.stderr().lines().find(|line| line.contains(needle)) {
                return Some(line.to_string());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The one-time setup link the server printed at start (no admin yet).
    pub fn setup_link(&self) -> String {
        let line = self
            .stderr_line("/setup/", Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no setup link in the server's stderr:\n{}", self.stderr()));
        let start = line.find("http://").unwrap_or_else(|| panic!("no URL in {line:?}"));
        line[start..].split(|c: char| c.is_whitespace()).next().unwrap().trim_end_matches(['.', ',', ')']).to_string()
    }

    /// Makes the first admin through the setup link the server printed; the
    /// client is then logged in as that admin.
    pub fn first_admin(&self, name: &str, password: &str) -> super::dashboard::DashboardClient {
        let link = self.setup_link();
        let mut web = super::dashboard::DashboardClient::new(&self.url(""));
        let path = link.trim_start_matches(&self.url("")).to_string();
        let form = web.get(&path);
        assert_eq!(form.status, 200, "{}", form.body);
        let done = web.post_form(&path, &[("name", name), ("password", password), ("password_again", password)]);
        assert_eq!(done.status, 303, "setup acknowledged: {}", done.body);
        assert!(web.cookie().is_some(), "logged in after setup");
        web
    }

    /// `http://<dashboard><path>`.
    pub fn url(&self, path: &str) -> String {
        let addr = self.files.dashboard.expect("this server has no dashboard");
        format!("http://{addr}{path}")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// True while the process has not exited.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| child.try_wait().ok().flatten().is_none())
    }

    /// SIGKILL, no warning: nothing is flushed or closed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks the server for `name` (A) over UDP from `from`.
    pub async fn ask(&self, from: &str, name: &str) -> Message {
        let from: IpAddr = from.parse().unwrap();
        let query = super::client::build_query(name, RecordType::A);
        exchange_udp_from(from, self.files.dns, &query)
            .await
            .unwrap_or_else(|error| panic!("no answer for {name} from {from}: {error}\n{}", self.stderr()))
    }

    async fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + START;
        let query = super::client::build_query(PLAIN_NAME, RecordType::A);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("hedgerow serve exited with {status}:\n{}", self.stderr());
            }
            let dns_ready = exchange_udp_from(PUPIL.parse().unwrap(), self.files.dns, &query).await.is_ok();
            let web_ready = match self.files.dashboard {
                Some(addr) => TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
                None => true,
            };
            if dns_ready && web_ready {
                return;
            }
            assert!(Instant::now() < deadline, "hedgerow serve never became ready:\n{}", self.stderr());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Hedgerow {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The A addresses of `answer`.
pub fn a_addrs(answer: &Message) -> Vec<String> {
    answer
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

/// True when `answer` is the real upstream address `addr` (NOERROR, that A).
pub fn resolves_to(answer: &Message, addr: &str) -> bool {
    answer.metadata.response_code == ResponseCode::NoError && a_addrs(answer) == [addr]
}
