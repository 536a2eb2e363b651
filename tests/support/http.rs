//! A tiny, real HTTP/1.1 server on loopback, for testing the list downloader
//! against real sockets instead of a mocked client.
//!
//! ```ignore
//! let server = HttpServer::start();
//! server.route("/list.txt", Route::ok("ads.example\n").etag("\"v1\""));
//! let url = server.url("/list.txt");
//! // ... download url ...
//! assert_eq!(server.requests_to("/list.txt")[0].header("if-none-match"), None);
//! ```
//!
//! One thread accepts; each connection gets its own thread, serves one
//! request and closes (`Connection: close`), so a stalled route never holds
//! up another. Unknown paths get 404. Routes can be replaced while the
//! server runs. Dropping the server stops it, cutting short any stall.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

/// Limit on how long the server waits for a request's headers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server answers on one path.
#[derive(Debug, Clone)]
pub struct Route {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Sent as `ETag`; a request whose `If-None-Match` lists it gets 304.
    pub etag: Option<String>,
    /// Sent as `Last-Modified`; a request whose `If-Modified-Since` equals
    /// it exactly gets 304.
    pub last_modified: Option<String>,
    /// Wait this long before sending anything.
    pub stall: Duration,
    /// Send the headers and the first half of the body, then wait this long
    /// before the rest.
    pub stall_mid_body: Duration,
    /// Send the body chunked, with no `Content-Length`.
    pub chunked: bool,
}

impl Route {
    /// 200 with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Route {
        Route::status(200, body)
    }

    /// Any status with `body`.
    pub fn status(status: u16, body: impl Into<Vec<u8>>) -> Route {
        Route {
            status,
            headers: Vec::new(),
            body: body.into(),
            etag: None,
            last_modified: None,
            stall: Duration::ZERO,
            stall_mid_body: Duration::ZERO,
            chunked: false,
        }
    }

    /// A redirect to `location`.
    pub fn redirect(status: u16, location: &str) -> Route {
        Route::status(status, "").header("Location", location)
    }

    pub fn header(mut self, name: &str, value: &str) -> Route {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// `etag` as sent on the wire, quotes included (`"\"v1\""`).
    pub fn etag(mut self, etag: &str) -> Route {
        self.etag = Some(etag.to_string());
        self
    }

    pub fn last_modified(mut self, date: &str) -> Route {
        self.last_modified = Some(date.to_string());
        self
    }

    pub fn stall(mut self, wait: Duration) -> Route {
        self.stall = wait;
        self
    }

    pub fn stall_mid_body(mut self, wait: Duration) -> Route {
        self.stall_mid_body = wait;
        self
    }

    pub fn chunked(mut self) -> Route {
        self.chunked = true;
        self
    }
}

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target as sent, query included.
    pub target: String,
    /// Header names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or(&self.target)
    }
}

struct Shared {
    routes: Mutex<HashMap<String, Route>>,
    requests: Mutex<Vec<Request>>,
    /// Connections accepted, including ones that never made a valid request.
    connections: Mutex<usize>,
    stopping: AtomicBool,
}

/// The running server; stops when dropped.
pub struct HttpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Starts a server on `127.0.0.1`, on a free port.
    pub fn start() -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("listener address");
        let shared = Arc::new(Shared {
            routes: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            connections: Mutex::new(0),
            stopping: AtomicBool::new(false),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if shared.stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    *shared.connections.lock().unwrap() += 1;
                    let shared = Arc::clone(&shared);
                    // Detached: a handler still stalling when the server is
                    // dropped notices `stopping` and ends by itself.
                    thread::spawn(move || serve(stream, &shared));
                }
            })
        };
        HttpServer { addr, shared, acceptor: Some(acceptor) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Serves `route` on `path` (matched without the query), replacing what
    /// was there.
    pub fn route(&self, path: &str, route: Route) {
        self.shared.routes.lock().unwrap().insert(path.to_string(), route);
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The requests received for `path`, oldest first.
    pub fn requests_to(&self, path: &str) -> Vec<Request> {
        self.requests().into_iter().filter(|r| r.path() == path).collect()
    }

    /// TCP connections accepted so far (a TLS handshake aimed at this
    /// plain server counts here but not in [`HttpServer::requests`]).
    pub fn connections(&self) -> usize {
        *self.shared.connections.lock().unwrap()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees `stopping`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Answers one connection: read a request, record it, respond, close.
fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);

    // A client speaking TLS (or anything else) to this plain server gets a
    // 400 at once rather than waiting for a line end that may never come.
    match reader.fill_buf() {
        Ok(bytes) if bytes.first().is_some_and(u8::is_ascii_uppercase) => {}
        _ => {
            let _ = writer.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
            return;
        }
    }
    let Some(request) = read_request(&mut reader) else {
        return;
    };
    if shared.stopping.load(Ordering::SeqCst) {
        return;
    }
    shared.requests.lock().unwrap().push(request.clone());
    let route =
        shared.routes.lock().unwrap().get(request.path()).cloned().unwrap_or_else(|| Route::status(404, "not found\n"));

    if !sleep_unless_stopping(route.stall, shared) {
        return;
    }
    let _ = respond(&mut writer, &request, &route, shared);
}

fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut words = line.split_whitespace();
    let method = words.next()?.to_string();
    let target = words.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    // GETs only in these tests, but drain a body if one is declared.
    let length =
        headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse::<u64>().ok()).unwrap_or(0);
    std::io::copy(&mut reader.take(length), &mut std::io::sink()).ok()?;
    Some(Request { method, target, headers })
}

fn not_modified(request: &Request, route: &Route) -> bool {
    let etag_matches = match (&route.etag, request.header("if-none-match")) {
        (Some(etag), Some(wanted)) => {
            wanted.split(',').map(str::trim).any(|w| w == "*" || w == etag || w.strip_prefix("W/") == Some(etag))
        }
        _ => false,
    };
    let date_matches = match (&route.last_modified, request.header("if-modified-since")) {
        (Some(date), Some(since)) => date == since,
        _ => false,
    };
    etag_matches || date_matches
}

fn respond(out: &mut TcpStream, request: &Request, route: &Route, shared: &Shared) -> std::io::Result<()> {
    let (status, body): (u16, &[u8]) =
        if not_modified(request, route) { (304, b"") } else { (route.status, &route.body) };
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    head.push_str("Connection: close\r\n");
    if let Some(etag) = &route.etag {
        head.push_str(&format!("ETag: {etag}\r\n"));
    }
    if let Some(date) = &route.last_modified {
        head.push_str(&format!("Last-Modified: {date}\r\n"));
    }
    for (name, value) in &route.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let chunked = route.chunked && status != 304;
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n");
    } else if status != 304 {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    if request.method == "HEAD" || status == 304 {
        return out.flush();
    }

    let (first, rest) = body.split_at(body.len() / 2);
    write_body(out, first, chunked)?;
    out.flush()?;
    if !sleep_unless_stopping(route.stall_mid_body, shared) {
        return Ok(());
    }
    write_body(out, rest, chunked)?;
    if chunked {
        out.write_all(b"0\r\n\r\n")?;
    }
    out.flush()
}

fn write_body(out: &mut TcpStream, bytes: &[u8], chunked: bool) -> std::io::Result<()> {
    if !chunked {
        return out.write_all(bytes);
    }
    for chunk in bytes.chunks(16 * 1024) {
        out.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
        out.write_all(chunk)?;
        out.write_all(b"\r\n")?;
    }
    Ok(())
}

/// Sleeps for `wait` in small steps; false if the server began stopping.
fn sleep_unless_stopping(wait: Duration, shared: &Shared) -> bool {
    let until = Instant::now() + wait;
    while Instant::now() < until {
        if shared.stopping.load(Ordering::SeqCst) {
            return false;
        }
        thread::sleep(Duration::from_millis(10).min(until.saturating_duration_since(Instant::now())));
    }
    !shared.stopping.load(Ordering::SeqCst)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}
