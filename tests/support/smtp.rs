//! A real SMTP server on loopback for the alert delivery tests, hand-written
//! on tokio + tokio-rustls: EHLO/HELO, STARTTLS (the certificate in
//! tests/fixtures/dashboard-tls, for `localhost` and 127.0.0.1) or TLS from
//! the first byte, AUTH PLAIN
//! and LOGIN (checking the password), MAIL/RCPT/DATA, RSET, NOOP, QUIT.
//! Each accepted message is recorded with its envelope, its data and how it
//! came (over TLS, as which user). It runs on its own thread and runtime,
//! so sync and async tests alike can use it, and can be stopped and started
//! again on the same port.
//!
//! ```ignore
//! let server = SmtpServer::start(SmtpOptions::default());
//! // ... hedgerow sends to server.addr() ...
//! let mail = server.wait_for(1, Duration::from_secs(10));
//! server.stop();
//! let again = SmtpServer::start(SmtpOptions { port: addr.port(), ..options });
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// The test user and password the server accepts by default.
pub const USER: &str = "hedgerow";
pub const PASSWORD: &str = "correct horse battery staple";

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct SmtpOptions {
    /// 0: any free port.
    pub port: u16,
    /// Offer STARTTLS, and refuse AUTH and MAIL before it.
    pub require_tls: bool,
    /// TLS from the first byte (port 465 style) instead of STARTTLS.
    pub implicit_tls: bool,
    /// The user and password AUTH must give; `None`: no AUTH offered or needed.
    pub credentials: Option<(String, String)>,
    /// The AUTH mechanisms offered, of "PLAIN" and "LOGIN".
    pub mechanisms: Vec<&'static str>,
}

impl Default for SmtpOptions {
    fn default() -> Self {
        SmtpOptions {
            port: 0,
            require_tls: true,
            implicit_tls: false,
            credentials: Some((USER.into(), PASSWORD.into())),
            mechanisms: vec!["PLAIN", "LOGIN"],
        }
    }
}

/// One accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The message as sent, dot-stuffing undone, lines ending in CRLF.
    pub data: String,
    /// Sent after STARTTLS.
    pub tls: bool,
    /// The user AUTH accepted.
    pub user: Option<String>,
}

impl Received {
    /// The value of header `name` (first occurrence, unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or("");
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(current) = value.as_mut() {
                if line.starts_with([' ', '\t']) {
                    current.push_str(line);
                    continue;
                }
                break;
            }
            if let Some((key, rest)) = line.split_once(':')
                && key.eq_ignore_ascii_case(name)
            {
                value = Some(rest.trim().to_string());
            }
        }
        value
    }

    /// The body after the headers, with CRLF turned into LF (the message
    /// is sent as 7-bit or quoted-printable text; see [`Received::text`]).
    pub fn body(&self) -> String {
        self.data.split_once("\r\n\r\n").map_or("", |(_, body)| body).replace("\r\n", "\n")
    }

    /// The body decoded when it is quoted-printable.
    pub fn text(&self) -> String {
        let body = self.body();
        let quoted = self
            .header("Content-Transfer-Encoding")
            .is_some_and(|encoding| encoding.eq_ignore_ascii_case("quoted-printable"));
        if quoted { decode_quoted_printable(&body) } else { body }
    }
}

/// What the server saw: messages and failed logins.
#[derive(Debug, Default)]
struct Seen {
    messages: Vec<Received>,
    failed_logins: Vec<String>,
}

/// A running server; stopped when dropped.
pub struct SmtpServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SmtpServer {
    /// Starts a server with `options` (its own record of messages).
    pub fn start(options: SmtpOptions) -> SmtpServer {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (bound, addr) = std::sync::mpsc::channel();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let thread = std::thread::spawn({
            let seen = seen.clone();
            move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(serve(options, seen, bound, stopped));
                // Dropping the runtime ends every open conversation.
            }
        });
        let addr = addr.recv_timeout(Duration::from_secs(10)).expect("the SMTP server binds");
        SmtpServer { addr, seen, stop: Some(stop), thread: Some(thread) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The messages accepted so far.
    pub fn messages(&self) -> Vec<Received> {
        self.seen.lock().unwrap().messages.clone()
    }

    /// The users whose AUTH was refused.
    pub fn failed_logins(&self) -> Vec<String> {
        self.seen.lock().unwrap().failed_logins.clone()
    }

    /// Waits until at least `count` messages arrived; panics after `wait`.
    pub fn wait_for(&self, count: usize, wait: Duration) -> Vec<Received> {
        let deadline = Instant::now() + wait;
        loop {
            let messages = self.messages();
            if messages.len() >= count {
                return messages;
            }
            assert!(
                Instant::now() < deadline,
                "{} message(s) arrived at the SMTP server, not {count}: {messages:#?}",
                messages.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops listening and closes every conversation; the port is free again.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dashboard-tls").join(name)
}

async fn serve(
    options: SmtpOptions,
    seen: Arc<Mutex<Seen>>,
    bound: std::sync::mpsc::Sender<SocketAddr>,
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port)).await.expect("bind the SMTP server");
    bound.send(listener.local_addr().unwrap()).unwrap();
    let acceptor = hedgerow::web::tls_acceptor(&fixture("cert.pem"), &fixture("key.pem")).unwrap();
    let options = Arc::new(options);
    let accept = async {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (options, seen, acceptor) = (options.clone(), seen.clone(), acceptor.clone());
            tokio::spawn(async move {
                let mut session = Session { options, seen, tls: false, user: None };
                if session.options.implicit_tls {
                    if let Ok(secure) = acceptor.accept(stream).await {
                        session.tls = true;
                        let _ = session.talk(secure, true).await;
                    }
                } else if let Ok(Some(plain)) = session.talk(stream, true).await {
                    if let Ok(secure) = acceptor.accept(plain).await {
                        session.tls = true;
                        let _ = session.talk(secure, false).await;
                    }
                }
            });
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = stopped => {}
    }
}

struct Session {
    options: Arc<SmtpOptions>,
    seen: Arc<Mutex<Seen>>,
    tls: bool,
    user: Option<String>,
}

impl Session {
    /// One conversation on `stream`: `Some(stream)` when the client asked
    /// for STARTTLS (and was told to go ahead).
    async fn talk<S: AsyncRead + AsyncWrite + Unpin>(&mut self, stream: S, greet: bool) -> std::io::Result<Option<S>> {
        let mut reader = BufReader::new(stream);
        if greet {
            reader.get_mut().write_all(b"220 localhost ESMTP hedgerow-test\r\n").await?;
        }
        let mut mail_from: Option<String> = None;
        let mut rcpt_to: Vec<String> = Vec::new();
        loop {
            let Some(line) = read_line(&mut reader).await? else { return Ok(None) };
            let upper = line.to_ascii_uppercase();
            let verb = upper.split(' ').next().unwrap_or("").to_string();
            let reply: String = match verb.as_str() {
                "EHLO" => {
                    let mut lines = vec!["localhost".to_string()];
                    if self.options.require_tls && !self.tls {
                        lines.push("STARTTLS".into());
                    }
                    if self.options.credentials.is_some() && (self.tls || !self.options.require_tls) {
                        lines.push(format!("AUTH {}", self.options.mechanisms.join(" ")));
                    }
                    lines.push("8BITMIME".into());
                    let last = lines.len() - 1;
                    lines
                        .iter()
                        .enumerate()
                        .map(|(i, l)| format!("250{}{l}\r\n", if i == last { ' ' } else { '-' }))
                        .collect()
                }
                "HELO" => "250 localhost\r\n".into(),
                "STARTTLS" if self.options.require_tls && !self.tls => {
                    reader.get_mut().write_all(b"220 2.0.0 go ahead\r\n").await?;
                    return Ok(Some(reader.into_inner()));
                }
                "AUTH" if self.options.require_tls && !self.tls => "530 5.7.0 must issue STARTTLS first\r\n".into(),
                "AUTH" => self.auth(&mut reader, &line).await?,
                "MAIL" if self.options.require_tls && !self.tls => "530 5.7.0 must issue STARTTLS first\r\n".into(),
                "MAIL" if self.options.credentials.is_some() && self.user.is_none() => {
                    "530 5.7.0 authentication required\r\n".into()
                }
                "MAIL" => {
                    mail_from = Some(address(&line));
                    rcpt_to.clear();
                    "250 2.1.0 ok\r\n".into()
                }
                "RCPT" if mail_from.is_none() => "503 5.5.1 MAIL first\r\n".into(),
                "RCPT" => {
                    rcpt_to.push(address(&line));
                    "250 2.1.5 ok\r\n".into()
                }
                "DATA" if rcpt_to.is_empty() => "503 5.5.1 RCPT first\r\n".into(),
                "DATA" => {
                    reader.get_mut().write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                    let mut data = String::new();
                    loop {
                        let Some(line) = read_line(&mut reader).await? else { return Ok(None) };
                        if line == "." {
                            break;
                        }
                        data.push_str(line.strip_prefix('.').unwrap_or(&line));
                        data.push_str("\r\n");
                    }
                    self.seen.lock().unwrap().messages.push(Received {
                        mail_from: mail_from.take().unwrap_or_default(),
                        rcpt_to: std::mem::take(&mut rcpt_to),
                        data,
                        tls: self.tls,
                        user: self.user.clone(),
                    });
                    "250 2.0.0 queued\r\n".into()
                }
                "RSET" => {
                    mail_from = None;
                    rcpt_to.clear();
                    "250 2.0.0 ok\r\n".into()
                }
                "NOOP" => "250 2.0.0 ok\r\n".into(),
                "QUIT" => {
                    reader.get_mut().write_all(b"221 2.0.0 bye\r\n").await?;
                    return Ok(None);
                }
                _ => "502 5.5.2 not implemented\r\n".into(),
            };
            reader.get_mut().write_all(reply.as_bytes()).await?;
        }
    }

    /// AUTH PLAIN (with or without an initial response) or AUTH LOGIN.
    async fn auth<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        reader: &mut BufReader<S>,
        line: &str,
    ) -> std::io::Result<String> {
        let words: Vec<&str> = line.split(' ').collect();
        let mechanism = words.get(1).map(|m| m.to_ascii_uppercase()).unwrap_or_default();
        if !self.options.mechanisms.contains(&mechanism.as_str()) {
            return Ok("504 5.5.4 mechanism not offered\r\n".into());
        }
        let (user, password) = match mechanism.as_str() {
            "PLAIN" => {
                let answer = match words.get(2) {
                    Some(initial) => initial.to_string(),
                    None => {
                        reader.get_mut().write_all(b"334 \r\n").await?;
                        read_line(reader).await?.unwrap_or_default()
                    }
                };
                let decoded = decode_base64(&answer).unwrap_or_default();
                let mut parts = decoded.split(|b| *b == 0).map(|p| String::from_utf8_lossy(p).to_string());
                let _authorization = parts.next();
                (parts.next().unwrap_or_default(), parts.next().unwrap_or_default())
            }
            _ => {
                reader.get_mut().write_all(b"334 VXNlcm5hbWU6\r\n").await?;
                let user = read_line(reader).await?.unwrap_or_default();
                reader.get_mut().write_all(b"334 UGFzc3dvcmQ6\r\n").await?;
                let password = read_line(reader).await?.unwrap_or_default();
                let text = |b64: &str| String::from_utf8_lossy(&decode_base64(b64).unwrap_or_default()).to_string();
                (text(&user), text(&password))
            }
        };
        let expected = self.options.credentials.clone().unwrap_or_default();
        if (user.as_str(), password.as_str()) == (expected.0.as_str(), expected.1.as_str()) {
            self.user = Some(user);
            Ok("235 2.7.0 authenticated\r\n".into())
        } else {
            self.seen.lock().unwrap().failed_logins.push(user);
            Ok("535 5.7.8 authentication failed\r\n".into())
        }
    }
}

/// One line without its CRLF; `None` at the end of the stream.
async fn read_line<S: AsyncRead + Unpin>(reader: &mut BufReader<S>) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), reader.read_until(b'\n', &mut line))
        .await
        .map_err(|_| std::io::Error::other("the client went quiet"))??;
    if read == 0 {
        return Ok(None);
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(Some(String::from_utf8_lossy(&line).to_string()))
}

/// The address in `MAIL FROM:<a@b> SIZE=1` or `RCPT TO:<a@b>`.
fn address(line: &str) -> String {
    match (line.find('<'), line.find('>')) {
        (Some(start), Some(end)) if start < end => line[start + 1..end].to_string(),
        _ => line.split_once(':').map_or("", |(_, rest)| rest.trim()).to_string(),
    }
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in text.trim().bytes().filter(|b| *b != b'=') {
        let value = ALPHABET.iter().position(|a| *a == byte)? as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn decode_quoted_printable(text: &str) -> String {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes.get(i + 1) == Some(&b'\n') => i += 2,
            b'=' if i + 2 < bytes.len() && bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit() => {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).to_string()
}
