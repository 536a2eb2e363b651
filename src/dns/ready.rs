//! Readiness: is this server fit to take a school's queries? DNS answers on
//! its own listener (a real query over loopback), lists are loaded, and the
//! database is writable. `/ready` (dashboard and metrics listeners) and
//! `hedgerow status` report the same [`Readiness`].

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::pipeline::Pipeline;

/// Answers counted within this long of the last check prove DNS answers.
const RECENT: Duration = Duration::from_secs(30);

/// How long the loopback query may take before DNS counts as not answering.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The name the probe asks (type ANY: answered by the query-type stage,
/// never sent upstream).
const PROBE_NAME: &str = "ready.hedgerow.invalid";

/// One check: its name, whether it passed, and what was found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// Every check; ready when all pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Readiness {
    pub ready: bool,
    pub checks: Vec<Check>,
}

impl Readiness {
    /// The failed checks as "name: detail", one a line (empty when ready).
    pub fn reasons(&self) -> String {
        self.checks
            .iter()
            .filter(|check| !check.ok)
            .map(|check| format!("{}: {}\n", check.name, check.detail))
            .collect()
    }
}

/// Runs every check. `database` is the SQLite file the server writes (the
/// query log and dashboard's), `None` when it writes none.
pub async fn check(pipeline: &Pipeline, database: Option<&Path>) -> Readiness {
    let mut checks = Vec::with_capacity(3);
    // Answers counted since the last check: the listeners are answering,
    // and a busy server's log and counters get no probe rows. Else a probe.
    let moved = pipeline.metrics().answers_since_last_look(RECENT);
    let probed = match moved {
        Some((answers, over)) => Ok(format!("{answers} answers in the last {:.0} s", over.as_secs_f64().max(1.0))),
        None => probe_dns(pipeline).await.map(|address| format!("answered on {address}")),
    };
    checks.push(match probed {
        Ok(detail) => Check { name: "dns".into(), ok: true, detail },
        Err(why) => Check { name: "dns".into(), ok: false, detail: why },
    });
    let listed = pipeline.lists().len();
    checks.push(Check {
        name: "lists".into(),
        ok: listed > 0,
        detail: if listed > 0 { format!("{listed} names loaded") } else { "no listed names loaded".into() },
    });
    if let Some(database) = database {
        let path = database.to_path_buf();
        let result = tokio::task::spawn_blocking(move || crate::store::check_writable(&path))
            .await
            .unwrap_or_else(|error| Err(format!("the check failed: {error}")));
        checks.push(match result {
            Ok(()) => {
                Check { name: "database".into(), ok: true, detail: format!("{} is writable", database.display()) }
            }
            Err(why) => Check { name: "database".into(), ok: false, detail: why },
        });
    }
    Readiness { ready: checks.iter().all(|check| check.ok), checks }
}

/// Sends one query to the first UDP listener from its own address; any reply
/// with the query's ID is an answer (REFUSED included: it was answered). The
/// answer is neither logged nor counted: a monitor polling `/ready` on an
/// idle server adds no rows, and loopback outside the school's networks is
/// not reported as a refused outsider.
async fn probe_dns(pipeline: &Pipeline) -> Result<SocketAddr, String> {
    let Some(target) = pipeline.probe_target() else {
        return Err("no DNS listener is running".into());
    };
    let socket = tokio::net::UdpSocket::bind(SocketAddr::new(target.ip(), 0))
        .await
        .map_err(|error| format!("cannot open a probe socket: {error}"))?;
    let port = socket.local_addr().map_err(|error| format!("cannot open a probe socket: {error}"))?.port();
    // An internal query by its source address (loopback outside the
    // school's networks: REFUSED, which is an answer).
    let _registered = pipeline.register_internal(port, None);
    ask(&socket, target).await
}

/// Sends the probe query to `target` and waits for its answer.
async fn ask(socket: &tokio::net::UdpSocket, target: SocketAddr) -> Result<SocketAddr, String> {
    let id: u16 = rand::random();
    let query = probe_query(id);
    socket.send_to(&query, target).await.map_err(|error| format!("cannot send to {target}: {error}"))?;
    let mut buffer = [0u8; 1500];
    let deadline = tokio::time::Instant::now() + PROBE_TIMEOUT;
    loop {
        let received = tokio::time::timeout_at(deadline, socket.recv_from(&mut buffer)).await;
        match received {
            Err(_) => return Err(format!("no answer from {target} within {} s", PROBE_TIMEOUT.as_secs())),
            Ok(Err(error)) => return Err(format!("no answer from {target}: {error}")),
            Ok(Ok((length, from))) if from == target && length >= 12 && buffer[..2] == id.to_be_bytes() => {
                return Ok(target);
            }
            Ok(Ok(_)) => continue,
        }
    }
}

/// A DNS query for [`PROBE_NAME`] type ANY, class IN.
fn probe_query(id: u16) -> Vec<u8> {
    let mut query = Vec::with_capacity(48);
    query.extend_from_slice(&id.to_be_bytes());
    query.extend_from_slice(&[0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
    for label in PROBE_NAME.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0x00, 0x00, 0xff, 0x00, 0x01]);
    query
}
