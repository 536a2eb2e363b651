//! Headless Chromium for the browser tests: Debian's `chromedriver` started
//! as a child on a free loopback port, a `fantoccini` WebDriver session with
//! Chromium headless in a 1280x900 window, and screenshots saved as test
//! artefacts.
//!
//! ```ignore
//! let browser = Browser::start("my_test").await;
//! browser.goto(&server.url("/")).await;
//! browser.screenshot("home").await; // target/screenshots/my_test/home.png
//! browser.close().await;
//! ```
//!
//! Screenshots go to `target/screenshots/<test>/<name>.png` (the target
//! folder that holds the test binaries, so `CARGO_TARGET_DIR` is honoured),
//! each of the whole page, not only the window. The driver runs in its own
//! process group, so dropping the [`Browser`] ends the driver and the
//! Chromium it started, even when a test fails before [`Browser::close`].

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

/// The window every test starts with (a school laptop).
pub const WIDTH: u32 = 1280;
pub const HEIGHT: u32 = 900;

/// Where Debian puts them (`chromium`, `chromium-driver`).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "chromedriver";

/// How long the driver may take to listen, and a page element to appear.
const DRIVER_START: Duration = Duration::from_secs(30);
pub const WAIT: Duration = Duration::from_secs(20);

/// A `chromedriver` child in its own process group; the group is killed on
/// drop (the driver and every Chromium process it started).
struct Driver {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Driver {
    /// Starts the driver on a free port, trying another port when the one
    /// picked is taken before the driver binds it.
    fn start(log_dir: &Path) -> Driver {
        let mut last = String::new();
        for attempt in 0..5 {
            match Driver::try_start(log_dir, attempt) {
                Ok(driver) => return driver,
                Err(log) => last = log,
            }
        }
        panic!("chromedriver would not start:\n{last}");
    }

    /// The driver listening, or its log if it exited first.
    fn try_start(log_dir: &Path, attempt: u32) -> Result<Driver, String> {
        use std::os::unix::process::CommandExt;
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
            listener.local_addr().unwrap().port()
        };
        let log = log_dir.join(format!("chromedriver-{attempt}.log"));
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start {CHROMEDRIVER} ({error}): install Debian's chromium and chromium-driver")
            });
        let mut driver = Driver { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), log };
        let deadline = Instant::now() + DRIVER_START;
        loop {
            let listening = TcpStream::connect_timeout(&driver.addr, Duration::from_millis(200)).is_ok();
            // Exited (its port taken): whatever answered there was not it.
            if let Ok(Some(status)) = driver.child.try_wait() {
                return Err(format!("exited with {status}: {}", driver.log_text()));
            }
            if listening {
                return Ok(driver);
            }
            assert!(Instant::now() < deadline, "chromedriver never listened on {}: {}", driver.addr, driver.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Our own child's group (its id is the driver's pid): the driver and
        // the browser processes it started, none other.
        let group = self.child.id() as libc::pid_t;
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// One WebDriver session in headless Chromium.
pub struct Browser {
    client: Client,
    shots: PathBuf,
    // Dropped after the client: the profile folder outlives the browser.
    _driver: Driver,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts the driver and a headless Chromium session for test `test`
    /// (the screenshots' folder name), its window [`WIDTH`]x[`HEIGHT`].
    pub async fn start(test: &str) -> Browser {
        Browser::start_with(test, &[]).await
    }

    /// As [`Browser::start`], with more Chromium flags (e.g.
    /// `--host-resolver-rules=MAP game.test 127.0.0.1`, so a page can be
    /// opened with a test name as its Host).
    pub async fn start_with(test: &str, extra_args: &[String]) -> Browser {
        let shots = screenshot_dir(test);
        // Only this run's shots: none left from an earlier run to mislead.
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        let profile = tempfile::tempdir().unwrap();
        let driver = Driver::start(profile.path());
        let mut chrome = json!({
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                format!("--window-size={WIDTH},{HEIGHT}"),
                format!("--user-data-dir={}", profile.path().join("profile").display()),
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-features=Translate,OptimizationHints,MediaRouter",
                "--password-store=basic",
                // A UK school's browser (Accept-Language; date fields follow
                // it only where Debian's chromium-l10n is installed).
                "--lang=en-GB",
            ],
            "prefs": {
                "credentials_enable_service": false,
                "profile.password_manager_enabled": false,
                "intl.accept_languages": "en-GB,en",
            },
        });
        if let Some(args) = chrome["args"].as_array_mut() {
            args.extend(extra_args.iter().map(|arg| json!(arg)));
        }
        if Path::new(CHROMIUM).exists() {
            chrome["binary"] = json!(CHROMIUM);
        }
        let mut capabilities = Capabilities::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".into(), chrome);
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://{}", driver.addr))
            .await
            .unwrap_or_else(|error| panic!("no Chromium session: {error}\n{}", driver.log_text()));
        Browser { client, shots, _driver: driver, _profile: profile }
    }

    /// The WebDriver client, for anything the helpers below do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Where this test's screenshots go.
    pub fn screenshot_dir(&self) -> &Path {
        &self.shots
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|error| panic!("cannot open {url}: {error}"));
    }

    pub async fn current_url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    /// The path (and query) of the page shown.
    pub async fn current_path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// The visible text of the whole page.
    pub async fn text(&self) -> String {
        self.find("body").await.text().await.unwrap()
    }

    /// The page's HTML as the browser holds it now.
    pub async fn source(&self) -> String {
        self.client.source().await.unwrap()
    }

    /// The first element matching `css`, waiting up to [`WAIT`] for it.
    pub async fn find(&self, css: &str) -> Element {
        match self.client.wait().at_most(WAIT).for_element(Locator::Css(css)).await {
            Ok(element) => element,
            Err(error) => panic!("no element {css:?} on {}: {error}", self.current_url_lossy().await),
        }
    }

    /// Every element matching `css` now (no waiting).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client.find_all(Locator::Css(css)).await.unwrap()
    }

    /// Clears the field `css` and types `text` into it.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Clicks `css` (a submit button, a link) and waits for the page it
    /// loads to be ready.
    pub async fn click(&self, css: &str) {
        let before = self.page_marker().await;
        self.find(css).await.click().await.unwrap_or_else(|error| panic!("cannot click {css:?}: {error}"));
        self.wait_for_new_page(&before, css).await;
    }

    /// Runs `script` in the page (`arguments[i]` are `args`) and returns its
    /// value.
    pub async fn execute(&self, script: &str, args: Vec<serde_json::Value>) -> serde_json::Value {
        self.client.execute(script, args).await.unwrap_or_else(|error| panic!("script failed: {error}\n{script}"))
    }

    /// Runs an async `script`: its last argument is the callback to call with
    /// the result.
    pub async fn execute_async(&self, script: &str, args: Vec<serde_json::Value>) -> serde_json::Value {
        self.client.execute_async(script, args).await.unwrap_or_else(|error| panic!("script failed: {error}\n{script}"))
    }

    /// Resizes the window to `width`x`height` (for example 390x844, a phone).
    pub async fn resize(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
    }

    /// Saves a PNG of the whole page as `<screenshot dir>/<name>.png` and
    /// returns its path. The window is stretched to the page's height for
    /// the shot (at most 12,000 px), then put back.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let (width, height) = self.client.get_window_size().await.unwrap();
        let page = self
            .execute(
                "return Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0);",
                vec![],
            )
            .await
            .as_u64()
            .unwrap_or(height);
        // The window is a little taller than the page area it shows.
        let inner = self.execute("return window.innerHeight;", vec![]).await.as_u64().unwrap_or(height);
        let chrome = height.saturating_sub(inner);
        let wanted = (page + chrome).clamp(height, 12_000);
        if wanted != height {
            self.client.set_window_size(width as u32, wanted as u32).await.unwrap();
        }
        let png = self.client.screenshot().await.unwrap();
        if wanted != height {
            self.client.set_window_size(width as u32, height as u32).await.unwrap();
        }
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the screenshot is not a PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Runs axe-core (tests/fixtures/axe, injected through WebDriver, so the
    /// page's CSP does not stop it) on the page and returns every serious or
    /// critical WCAG 2 A/AA violation (labels, contrast, names of buttons and
    /// links, document structure), one line each.
    pub async fn accessibility_problems(&self) -> Vec<String> {
        const AXE: &str = include_str!("../fixtures/axe/axe.min.js");
        let loaded = self.execute(&format!("{AXE}\nreturn typeof axe.run;"), vec![]).await;
        assert_eq!(loaded, "function", "axe-core did not load");
        let found = self
            .execute_async(
                "const done = arguments[arguments.length - 1];\n\
                 axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } })\n\
                   .then(result => done(result.violations\n\
                     .filter(v => v.impact === 'serious' || v.impact === 'critical')\n\
                     .map(v => `${v.impact} ${v.id}: ${v.help} at ${v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', ')}`)))\n\
                   .catch(error => done(['axe failed: ' + error]));",
                vec![],
            )
            .await;
        found.as_array().map(|items| items.iter().map(|item| item.to_string()).collect()).unwrap_or_default()
    }

    /// Fails when [`Browser::accessibility_problems`] finds any; `page` names it.
    pub async fn assert_accessible(&self, page: &str) {
        let problems = self.accessibility_problems().await;
        assert!(problems.is_empty(), "{page} has accessibility problems:\n{}", problems.join("\n"));
    }

    /// Screenshots of the page at desktop width, 820 px and 390 px (a
    /// phone), each checked with axe; the window is back at desktop width after.
    pub async fn look_at_widths(&self, name: &str) {
        self.screenshot(name).await;
        self.assert_accessible(name).await;
        for width in [820, 390] {
            self.resize(width, 1100).await;
            self.screenshot(&format!("{name}-{width}")).await;
            self.assert_accessible(&format!("{name} at {width} px")).await;
        }
        self.resize(WIDTH, HEIGHT).await;
    }

    /// Ends the session (Chromium quits); the driver stops when dropped.
    pub async fn close(self) {
        let Browser { client, _driver, _profile, .. } = self;
        let _ = client.close().await;
    }

    async fn current_url_lossy(&self) -> String {
        self.client.current_url().await.map(|url| url.to_string()).unwrap_or_else(|_| "?".into())
    }

    /// A value that changes when a new document loads: a property set on
    /// the current document's window.
    async fn page_marker(&self) -> String {
        let marker = format!("{:?}", Instant::now());
        self.execute("window.__hedgerowTestMarker = arguments[0]; return arguments[0];", vec![json!(marker)]).await;
        marker
    }

    async fn wait_for_new_page(&self, marker: &str, clicked: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let state =
                self.client.execute("return [window.__hedgerowTestMarker || '', document.readyState];", vec![]).await;
            if let Ok(value) = state {
                let same = value[0].as_str() == Some(marker);
                if !same && value[1].as_str() == Some("complete") {
                    return;
                }
            }
            if Instant::now() >= deadline {
                let shot = self.screenshot("failed-click").await;
                panic!(
                    "no new page loaded within {WAIT:?} of clicking {clicked:?} on {} (screenshot {})",
                    self.current_url_lossy().await,
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `target/screenshots/<test>` beside the test binaries' target folder.
pub fn screenshot_dir(test: &str) -> PathBuf {
    // The binary under test is `<target>/<profile>/hedgerow`.
    let binary = Path::new(env!("CARGO_BIN_EXE_hedgerow"));
    let target = binary.parent().and_then(Path::parent).expect("the target folder");
    target.join("screenshots").join(test)
}
