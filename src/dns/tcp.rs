//! The TCP listener (RFC 7766). Clients fall back to TCP when a UDP answer
//! is truncated, so TCP must stay open to the school's own devices however
//! many connections someone else opens and holds:
//!
//! - An outsider (a source in no configured network) never takes one of the
//!   connection slots: it gets a small pool of its own, where one query is
//!   answered (REFUSED, by the access stage) within a short time, and the
//!   connection is closed; when that pool is full the connection is closed
//!   at once.
//! - One client (an IPv4 address, or an IPv6 prefix as the rate limit counts
//!   it) holds at most `dns.tcp_per_client` connections; past that its own
//!   longest-idle connection is closed to make room, or the new one is.
//! - When `dns.tcp_max_connections` are open, the longest-idle connection is
//!   closed to make room, and past three quarters of the cap idle connections
//!   are given a shorter timeout (RFC 7766 section 6.2.3).
//!
//! A connection counts as idle while it waits for a query, including one
//! whose length has arrived but whose bytes are still trickling in; it is
//! busy only while its query is answered and written.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::access::client_key;
use super::pipeline::{Arrival, Pipeline};
use super::respond::{Step, finish_answer, step, write_answer};
use crate::config::TcpSettings;

/// How long an idle TCP connection is kept (RFC 7766 suggests seconds).
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The idle timeout once three quarters of the connection slots are taken.
const PRESSURED_IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long writing one answer may take before the connection is dropped (a
/// client that never reads would otherwise hold its slot as "busy").
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Outsider connections served at once (each answers one query, REFUSED).
const OUTSIDER_CONNECTIONS: usize = 16;
/// How long an outsider has to send its one query.
const OUTSIDER_TIMEOUT: Duration = Duration::from_secs(2);
const TCP_LIMIT: usize = 65_535;

/// The TCP limits in force (from `[dns]`, and the rate limit's IPv6 prefix).
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    pub max_connections: usize,
    pub per_client: usize,
    pub ipv6_prefix: u8,
}

impl TcpLimits {
    pub fn new(settings: &TcpSettings, ipv6_prefix: u8) -> TcpLimits {
        TcpLimits { max_connections: settings.max_connections, per_client: settings.per_client, ipv6_prefix }
    }
}

/// One insider connection as the table sees it.
struct Tracked {
    client: IpAddr,
    /// Milliseconds since the table's epoch at the last query answered.
    last_active_ms: AtomicU64,
    /// True while the connection waits for a query (it may be shed).
    idle: AtomicBool,
    /// Told to close when shed.
    close: Notify,
}

#[derive(Default)]
struct TableState {
    next_id: u64,
    open: HashMap<u64, Arc<Tracked>>,
    per_client: HashMap<IpAddr, usize>,
}

impl TableState {
    /// Removes a connection from the books; true if it was still there.
    fn forget(&mut self, id: u64) -> Option<Arc<Tracked>> {
        let tracked = self.open.remove(&id)?;
        if let Some(count) = self.per_client.get_mut(&tracked.client) {
            *count -= 1;
            if *count == 0 {
                self.per_client.remove(&tracked.client);
            }
        }
        Some(tracked)
    }

    /// The longest-idle connection (of one client, if given).
    fn longest_idle(&self, client: Option<IpAddr>) -> Option<u64> {
        self.open
            .iter()
            .filter(|(_, tracked)| tracked.idle.load(Ordering::Relaxed))
            .filter(|(_, tracked)| client.is_none_or(|client| tracked.client == client))
            .min_by_key(|(_, tracked)| tracked.last_active_ms.load(Ordering::Relaxed))
            .map(|(id, _)| *id)
    }

    /// Closes a connection to make room.
    fn shed(&mut self, id: u64) {
        if let Some(tracked) = self.forget(id) {
            tracked.close.notify_one();
        }
    }
}

/// Every open TCP connection from an insider, with its client and how long
/// it has been idle: the book-keeping for the limits above. Touched once per
/// connection and per TCP query; UDP never sees it.
pub struct ConnectionTable {
    limits: TcpLimits,
    epoch: Instant,
    state: Mutex<TableState>,
    /// `state.open.len()`, readable without the lock.
    open: AtomicUsize,
    outsiders: Arc<Semaphore>,
}

/// What a new connection may do.
enum Admission {
    Insider(Slot),
    Outsider(OwnedSemaphorePermit),
    Closed(&'static str),
}

/// An insider's place in the table; dropping it frees the place.
struct Slot {
    id: u64,
    tracked: Arc<Tracked>,
    table: Arc<ConnectionTable>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.table.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.forget(self.id);
        self.table.open.store(state.open.len(), Ordering::Relaxed);
    }
}

impl ConnectionTable {
    pub fn new(limits: TcpLimits) -> Arc<ConnectionTable> {
        Arc::new(ConnectionTable {
            limits,
            epoch: Instant::now(),
            state: Mutex::new(TableState::default()),
            open: AtomicUsize::new(0),
            outsiders: Arc::new(Semaphore::new(OUTSIDER_CONNECTIONS)),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The idle timeout now: shorter when the slots are running out.
    fn idle_timeout(&self) -> Duration {
        let open = self.open.load(Ordering::Relaxed);
        if open.saturating_mul(4) >= self.limits.max_connections.saturating_mul(3) {
            PRESSURED_IDLE_TIMEOUT
        } else {
            IDLE_TIMEOUT
        }
    }

    fn admit(self: &Arc<Self>, source: IpAddr, insider: bool) -> Admission {
        if !insider {
            return match self.outsiders.clone().try_acquire_owned() {
                Ok(permit) => Admission::Outsider(permit),
                Err(_) => Admission::Closed("too many connections from outside the configured networks"),
            };
        }
        let client = client_key(source, self.limits.ipv6_prefix);
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.per_client.get(&client).copied().unwrap_or(0) >= self.limits.per_client {
            match state.longest_idle(Some(client)) {
                Some(id) => state.shed(id),
                None => return Admission::Closed("client is at its TCP connection limit"),
            }
        }
        if state.open.len() >= self.limits.max_connections {
            match state.longest_idle(None) {
                Some(id) => state.shed(id),
                None => return Admission::Closed("every TCP connection is busy"),
            }
        }
        let tracked = Arc::new(Tracked {
            client,
            last_active_ms: AtomicU64::new(self.now_ms()),
            idle: AtomicBool::new(true),
            close: Notify::new(),
        });
        let id = state.next_id;
        state.next_id += 1;
        state.open.insert(id, tracked.clone());
        *state.per_client.entry(client).or_insert(0) += 1;
        self.open.store(state.open.len(), Ordering::Relaxed);
        Admission::Insider(Slot { id, tracked, table: self.clone() })
    }
}

/// Accepts connections until the listener fails.
pub async fn serve(listener: TcpListener, pipeline: Arc<Pipeline>, table: Arc<ConnectionTable>) {
    loop {
        let (stream, source) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::debug!(%error, "TCP accept error");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let insider = pipeline.is_insider(source.ip());
        let pipeline = pipeline.clone();
        match table.admit(source.ip(), insider) {
            Admission::Closed(why) => {
                tracing::debug!(%source, why, "TCP connection closed at once");
                drop(stream);
            }
            Admission::Outsider(permit) => {
                tokio::spawn(async move {
                    let connection = Connection { tracked: None, table: None, max_queries: 1 };
                    if let Err(error) = connection.serve(stream, source, &pipeline).await {
                        tracing::debug!(%error, %source, "TCP connection ended");
                    }
                    drop(permit);
                });
            }
            Admission::Insider(slot) => {
                tokio::spawn(async move {
                    let connection =
                        Connection { tracked: Some(&slot.tracked), table: Some(&slot.table), max_queries: usize::MAX };
                    if let Err(error) = connection.serve(stream, source, &pipeline).await {
                        tracing::debug!(%error, %source, "TCP connection ended");
                    }
                    drop(slot);
                });
            }
        }
    }
}

/// How one connection is served.
struct Connection<'a> {
    tracked: Option<&'a Tracked>,
    table: Option<&'a ConnectionTable>,
    max_queries: usize,
}

impl Connection<'_> {
    fn idle_timeout(&self) -> Duration {
        self.table.map_or(OUTSIDER_TIMEOUT, ConnectionTable::idle_timeout)
    }

    /// Waits for `read`, or returns `None` if the connection is shed first.
    async fn unless_shed<T>(&self, read: impl Future<Output = T>) -> Option<T> {
        match self.tracked {
            None => Some(read.await),
            Some(tracked) => tokio::select! {
                biased;
                () = tracked.close.notified() => None,
                value = read => Some(value),
            },
        }
    }

    fn set_idle(&self, idle: bool) {
        if let (Some(tracked), Some(table)) = (self.tracked, self.table) {
            tracked.idle.store(idle, Ordering::Relaxed);
            tracked.last_active_ms.store(table.now_ms(), Ordering::Relaxed);
        }
    }

    async fn serve(&self, mut stream: TcpStream, source: SocketAddr, pipeline: &Pipeline) -> std::io::Result<()> {
        let mut packet = Vec::new();
        let mut out = Vec::with_capacity(1_500);
        for _ in 0..self.max_queries {
            let idle_timeout = self.idle_timeout();
            let Some(read) = self.unless_shed(tokio::time::timeout(idle_timeout, stream.read_u16())).await else {
                return Ok(()); // shed to make room
            };
            let len = match read {
                Ok(Ok(len)) => usize::from(len),
                Ok(Err(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(error)) => return Err(error),
                Err(_) => return Ok(()), // idle
            };
            packet.resize(len, 0);
            let Some(read) = self.unless_shed(tokio::time::timeout(idle_timeout, stream.read_exact(&mut packet))).await
            else {
                return Ok(());
            };
            read.map_err(std::io::Error::other)??;
            self.set_idle(false);
            let arrival = Arrival::now();
            match step(pipeline, arrival, &packet, source, Some(TCP_LIMIT), &mut out) {
                Step::Silent => {
                    self.set_idle(true);
                    continue;
                }
                Step::Reply => {}
                Step::Resolve(query, question, pending) => {
                    let answer = pipeline.resolve(&pending, &question).await;
                    write_answer(&query, &answer, TCP_LIMIT, &mut out);
                    finish_answer(pipeline, arrival, source, &query, &answer);
                }
            }
            let mut framed = Vec::with_capacity(out.len() + 2);
            framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
            framed.extend_from_slice(&out);
            tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&framed)).await.map_err(std::io::Error::other)??;
            self.set_idle(true);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max_connections: usize, per_client: usize) -> Arc<ConnectionTable> {
        ConnectionTable::new(TcpLimits { max_connections, per_client, ipv6_prefix: 64 })
    }

    fn insider(admission: Admission) -> Slot {
        match admission {
            Admission::Insider(slot) => slot,
            Admission::Outsider(_) => panic!("admitted as an outsider"),
            Admission::Closed(why) => panic!("closed: {why}"),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn outsiders_never_take_a_slot() {
        let table = table(2, 2);
        let permits: Vec<Admission> = (0..OUTSIDER_CONNECTIONS).map(|_| table.admit(ip("192.0.2.9"), false)).collect();
        assert!(permits.iter().all(|a| matches!(a, Admission::Outsider(_))));
        assert!(matches!(table.admit(ip("192.0.2.9"), false), Admission::Closed(_)), "the outsider pool is full");
        let _a = insider(table.admit(ip("10.0.0.1"), true));
        let _b = insider(table.admit(ip("10.0.0.2"), true));
        assert_eq!(table.open.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_client_over_its_limit_sheds_its_own_idle_connection_or_is_closed() {
        let table = table(10, 2);
        let first = insider(table.admit(ip("10.0.0.1"), true));
        let second = insider(table.admit(ip("10.0.0.1"), true));
        second.tracked.idle.store(false, Ordering::Relaxed);
        // The third sheds the first (idle), not the second (busy).
        let _third = insider(table.admit(ip("10.0.0.1"), true));
        assert!(!table.state.lock().unwrap().open.contains_key(&first.id));
        let told = tokio::time::timeout(Duration::from_secs(1), first.tracked.close.notified()).await;
        assert!(told.is_ok(), "the shed connection is told to close");
        first.tracked.idle.store(false, Ordering::Relaxed);
        drop(first);
        // Now both of its connections are busy: the next is closed.
        let state = table.state.lock().unwrap();
        state.open.values().for_each(|t| t.idle.store(false, Ordering::Relaxed));
        drop(state);
        assert!(matches!(table.admit(ip("10.0.0.1"), true), Admission::Closed(_)));
        // An IPv6 neighbour in the same /64 counts as the same client.
        let _v6a = insider(table.admit(ip("fd00::1"), true));
        let _v6b = insider(table.admit(ip("fd00::2"), true));
        let state = table.state.lock().unwrap();
        assert_eq!(state.per_client[&ip("fd00::")], 2);
    }

    #[test]
    fn a_full_table_sheds_the_longest_idle_connection() {
        let table = table(3, 3);
        let slots: Vec<Slot> =
            ["10.0.0.1", "10.0.0.2", "10.0.0.3"].iter().map(|a| insider(table.admit(ip(a), true))).collect();
        slots[0].tracked.last_active_ms.store(50, Ordering::Relaxed);
        slots[1].tracked.last_active_ms.store(10, Ordering::Relaxed);
        slots[2].tracked.last_active_ms.store(90, Ordering::Relaxed);
        assert_eq!(table.idle_timeout(), PRESSURED_IDLE_TIMEOUT, "three of three slots taken");
        let _new = insider(table.admit(ip("10.0.0.4"), true));
        let state = table.state.lock().unwrap();
        assert!(!state.open.contains_key(&slots[1].id), "the longest idle went");
        assert_eq!(state.open.len(), 3);
    }
}
