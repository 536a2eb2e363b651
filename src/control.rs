//! The control channel: a Unix socket in `data_dir` through which
//! `hedgerow status` and `hedgerow lists reload` (and later the dashboard)
//! reach the running server. Only the server that owns `data_dir` listens
//! there, so a command can never reach an unrelated process (the pid file
//! this replaces could name a reused pid: `lists reload` once killed one).
//!
//! The protocol is one JSON object a line each way:
//! `{"command":"status"}` -> `{"ok":true,"status":{...}}`,
//! `{"command":"reload"}` -> `{"ok":true,"reload":{...}}`, and on failure
//! `{"ok":false,"error":"..."}`.
//!
//! Owning `data_dir`: the server holds an exclusive `flock` on
//! `data_dir/hedgerow.lock` for its whole life. The kernel drops the lock
//! when the process dies, however it dies, so a crash leaves nothing that
//! blocks the next start; a second server on the same `data_dir` cannot take
//! it and is refused. Holding the lock, a socket file already there can only
//! be left from a crash, and is replaced. The socket (mode 0600) is removed
//! when the server stops cleanly.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::config::Config;
use crate::dns::Pipeline;
use crate::dns::identify::DeviceGroupsReport;

/// The socket's name in `data_dir`.
pub const SOCKET_FILE: &str = "hedgerow.sock";
/// The lock file's name in `data_dir`.
pub const LOCK_FILE: &str = "hedgerow.lock";
/// A request line longer than this is refused (requests are a few bytes).
const MAX_REQUEST: u64 = 64 * 1024;

/// The control socket of the server using `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

/// What a command asks the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// What the server is and what it has loaded.
    Status,
    /// The whole reload SIGHUP runs: the config file again, the lists, then
    /// the device table's groups.
    Reload,
    /// The built-in self-test (`hedgerow selftest`): the server asks its own
    /// listener as each group, stores the run and answers with it.
    Selftest,
}

/// The server's answer to one [`Request`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selftest: Option<crate::store::checks::RunReport>,
}

impl Reply {
    fn failed(error: impl Into<String>) -> Reply {
        Reply { ok: false, error: Some(error.into()), ..Reply::default() }
    }
}

/// The running server, as `hedgerow status` shows it. Add fields freely
/// (list health, alerts): readers take missing fields as their defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    pub pid: u32,
    pub version: String,
    /// The config file, or `embedded default`.
    pub config: String,
    pub data_dir: PathBuf,
    /// When the server started, UTC (`2026-11-30T10:00:00.000Z`).
    pub started: String,
    pub uptime_seconds: u64,
    /// The addresses really bound (a configured port 0 shows its real port).
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    /// Names in the compiled lists in use.
    pub listed_names: usize,
    /// `forwarding to ...` or `recursive from the root`.
    pub upstream: String,
    pub log_enabled: bool,
    /// The SQLite file of the query log and device table.
    pub database: PathBuf,
    /// Devices whose table entry sets their group.
    pub device_groups: usize,
    /// How each list source stands (`data_dir/lists-health.json`, written at
    /// every load): a degraded or missing source means less or older
    /// filtering than configured.
    pub lists: crate::lists::health::ListHealth,
    /// Readiness, as `/ready` reports it (`None` from an older server).
    pub ready: Option<crate::dns::ready::Readiness>,
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReloadReport {
    pub listed_names: usize,
    pub devices: DeviceGroupsReport,
    /// The configuration read again (a path, or `embedded default`).
    pub config: String,
    /// Settings that differ in the file but only a restart applies, each as
    /// "dns.listen changed from ... to ...".
    pub restart_needed: Vec<String>,
}

/// Why a control command failed. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "another hedgerow server is already running on data_dir {data_dir} (it holds {lock}); stop it first, or give this server its own data_dir"
    )]
    InUse { data_dir: PathBuf, lock: PathBuf },
    #[error(
        "no hedgerow server is running on data_dir {data_dir} (nothing answers on {socket}); start one with `hedgerow serve` and the same --config"
    )]
    NotRunning { data_dir: PathBuf, socket: PathBuf },
    #[error(
        "{path} is in the way of the control socket and is not a socket; move it away (Hedgerow does not delete files it did not make)"
    )]
    NotASocket { path: PathBuf },
    #[error("{path}: cannot {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the server on {socket} answered something that is not a control reply ({detail})")]
    Protocol { socket: PathBuf, detail: String },
    #[error("the server could not do it: {0}")]
    Failed(String),
}

fn io_error(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> ControlError + use<> {
    let path = path.to_path_buf();
    move |source| ControlError::Io { path, action, source }
}

/// Sends `request` to the server using `data_dir` and waits up to `wait`
/// for its reply. A reply with `ok: false` is [`ControlError::Failed`].
pub fn request(data_dir: &Path, request: Request, wait: Duration) -> Result<Reply, ControlError> {
    let socket = socket_path(data_dir);
    let not_running = || ControlError::NotRunning { data_dir: data_dir.to_path_buf(), socket: socket.clone() };
    let mut stream = match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(stream) => stream,
        // No file, or a file no one listens on (left by a crash).
        Err(error) if matches!(error.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Err(not_running());
        }
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(ControlError::Io {
                path: socket,
                action: "connect (run as the user that runs hedgerow serve, or as root)",
                source: error,
            });
        }
        Err(error) => return Err(io_error(&socket, "connect")(error)),
    };
    stream.set_read_timeout(Some(wait)).map_err(io_error(&socket, "set a timeout"))?;
    stream.set_write_timeout(Some(wait)).map_err(io_error(&socket, "set a timeout"))?;
    let mut line = serde_json::to_string(&request).expect("a request serialises");
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io_error(&socket, "send the request"))?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io_error(&socket, "read the reply"))?;
    if answer.is_empty() {
        return Err(ControlError::Protocol { socket, detail: "it closed the connection without a reply".into() });
    }
    let reply: Reply = serde_json::from_str(answer.trim())
        .map_err(|error| ControlError::Protocol { socket: socket.clone(), detail: error.to_string() })?;
    if !reply.ok {
        return Err(ControlError::Failed(reply.error.unwrap_or_else(|| "no reason given".into())));
    }
    Ok(reply)
}

/// The server's side: the `data_dir` lock and the socket. Dropping it stops
/// answering and removes the socket file.
pub struct ControlServer {
    socket: PathBuf,
    /// Held (locked) for the server's life; the kernel releases it on exit.
    _lock: File,
    listener: Option<std::os::unix::net::UnixListener>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ControlServer {
    /// Takes `data_dir` for this server and binds its control socket. Done
    /// first at start, so a second server is refused before anything else.
    pub fn claim(data_dir: &Path) -> Result<ControlServer, ControlError> {
        let lock_path = data_dir.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_error(&lock_path, "open the lock file"))?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::WouldBlock {
                return Err(ControlError::InUse { data_dir: data_dir.to_path_buf(), lock: lock_path });
            }
            return Err(io_error(&lock_path, "lock the data directory")(error));
        }
        let socket = socket_path(data_dir);
        match std::fs::symlink_metadata(&socket) {
            // Holding the lock, a socket here is a dead server's: replace it.
            Ok(metadata) if metadata.file_type().is_socket() => {
                tracing::info!(socket = %socket.display(), "replacing the control socket left by a server that stopped");
                std::fs::remove_file(&socket).map_err(io_error(&socket, "remove the stale control socket"))?;
            }
            Ok(_) => return Err(ControlError::NotASocket { path: socket }),
            Err(_) => {}
        }
        let listener = std::os::unix::net::UnixListener::bind(&socket)
            .map_err(io_error(&socket, "create the control socket (its path must be under 108 bytes)"))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .map_err(io_error(&socket, "restrict the control socket to its owner"))?;
        // A server from an older version left its pid file: it names a
        // process that may not be Hedgerow any more; nothing reads it now.
        let _ = std::fs::remove_file(data_dir.join("hedgerow.pid"));
        Ok(ControlServer { socket, _lock: lock, listener: Some(listener), task: None })
    }

    /// Starts answering requests about `server` (on the current runtime).
    pub fn serve(&mut self, server: ServerInfo) -> Result<(), ControlError> {
        let Some(listener) = self.listener.take() else { return Ok(()) };
        listener.set_nonblocking(true).map_err(io_error(&self.socket, "set up the control socket"))?;
        let listener = tokio::net::UnixListener::from_std(listener)
            .map_err(io_error(&self.socket, "set up the control socket"))?;
        let server = Arc::new(server);
        self.task = Some(tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(answer_connection(stream, server.clone()));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "control socket: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
        Ok(())
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// What the control channel answers about and acts on.
pub struct ServerInfo {
    pub config: Arc<Config>,
    pub pipeline: Arc<Pipeline>,
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub started: Instant,
    pub started_unix_ms: i64,
    /// The whole reload (one at a time; a second waits for the first),
    /// given by whoever runs the server (`serve`), so this module does not
    /// depend on it.
    pub reload: Reload,
    /// The self-test, given by `serve` as the reload is.
    pub selftest: Selftest,
}

/// Runs the self-test (started by `trigger`, for `user`) and returns the stored run.
pub type Selftest = crate::store::checks::RunFn;

/// Runs the whole reload and says what it did, or why nothing changed.
pub type Reload = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<ReloadReport, String>> + Send>> + Send + Sync>;

impl ServerInfo {
    pub fn status(&self) -> Status {
        let config = &self.config;
        Status {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            config: config.source.clone(),
            data_dir: config.data_dir.clone(),
            started: crate::time::format_utc(self.started_unix_ms),
            uptime_seconds: self.started.elapsed().as_secs(),
            udp: self.udp.clone(),
            tcp: self.tcp.clone(),
            listed_names: self.pipeline.lists().len(),
            upstream: self.pipeline.upstream_description().to_string(),
            log_enabled: config.log.enabled,
            database: config.log.database.clone(),
            device_groups: self.pipeline.device_groups(),
            lists: crate::lists::health::ListHealth::read(&config.data_dir).unwrap_or_default(),
            ready: None,
        }
    }

    async fn answer(&self, request: Request) -> Reply {
        match request {
            Request::Status => {
                let mut status = self.status();
                let writes = self.config.log.enabled || !self.config.dashboard.listen.is_empty();
                let database = writes.then_some(self.config.log.database.as_path());
                status.ready = Some(crate::dns::ready::check(&self.pipeline, database).await);
                Reply { ok: true, status: Some(status), ..Reply::default() }
            }
            Request::Reload => match (self.reload)().await {
                Ok(report) => Reply { ok: true, reload: Some(report), ..Reply::default() },
                Err(error) => Reply::failed(format!("{error}; nothing was changed: the policy in force stays")),
            },
            Request::Selftest => match (self.selftest)(crate::store::checks::Trigger::Cli, String::new()).await {
                Ok(report) => Reply { ok: true, selftest: Some(report), ..Reply::default() },
                Err(error) => Reply::failed(format!("the self-test could not run: {error}")),
            },
        }
    }
}

async fn answer_connection(stream: tokio::net::UnixStream, server: Arc<ServerInfo>) {
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST));
    let mut line = String::new();
    let reply = match tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await {
        Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim()) {
            Ok(request) => server.answer(request).await,
            Err(error) => Reply::failed(format!(
                "not a control request ({error}); send one JSON object a line, e.g. {{\"command\":\"status\"}} or {{\"command\":\"reload\"}}"
            )),
        },
        Ok(Err(error)) => Reply::failed(format!("cannot read the request: {error}")),
        Err(_) => Reply::failed("no request within 10 s"),
    };
    let mut text = serde_json::to_string(&reply).unwrap_or_else(|_| "{\"ok\":false}".into());
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_are_json_lines() {
        assert_eq!(serde_json::to_string(&Request::Reload).unwrap(), r#"{"command":"reload"}"#);
        assert_eq!(serde_json::from_str::<Request>(r#"{"command":"status"}"#).unwrap(), Request::Status);
        assert!(serde_json::from_str::<Request>(r#"{"command":"shutdown"}"#).is_err());
        let failed = serde_json::to_string(&Reply::failed("no")).unwrap();
        assert_eq!(failed, r#"{"ok":false,"error":"no"}"#);
        // A status from a newer or older server still reads: missing fields default.
        let reply: Reply = serde_json::from_str(r#"{"ok":true,"status":{"pid":7,"list_health":"ok"}}"#).unwrap();
        assert_eq!(reply.status.unwrap().pid, 7);
    }
}
