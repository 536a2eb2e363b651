//! Hedgerow's UDP and TCP listeners.
//!
//! Each UDP socket has one thread (`dns/udp.rs`) that reads datagrams in
//! batches, runs the synchronous stages and writes the answers at once when
//! policy or the cache settles them (most queries); only queries that must go
//! upstream get a task of their own, bounded by [`MAX_IN_FLIGHT`]. TCP
//! connections (`dns/tcp.rs`) are served one query at a time each (RFC 7766
//! allows more, clients rarely need it), within per-client and overall
//! limits that keep TCP open to insiders. Every answer is written by
//! `wire::WireAnswer`.
//!
//! IPv6 sockets are bound IPv6-only (IPV6_V6ONLY), so `listen = ["0.0.0.0:53",
//! "[::]:53"]` binds two sockets rather than failing on a dual-stack `[::]`
//! that already covers IPv4.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::DNSClass;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::decision::Decision;
use super::finished::Finished;
use super::pipeline::{Answer, Arrival, Immediate, Pending, Pipeline, Question};
use super::tcp::{self, ConnectionTable, TcpLimits};
use super::wire::{self, Rejection, WireAnswer, WireQuery};
use crate::config::Config;

/// Queries waiting on upstream at once; past this the answer is SERVFAIL at
/// once rather than an unbounded queue while upstreams are slow.
const MAX_IN_FLIGHT: usize = 20_000;
/// Pending TCP connections the kernel queues before `accept`.
const TCP_BACKLOG: i32 = 1_024;

/// What the synchronous part made of a packet.
pub(super) enum Step {
    /// The response is in the output buffer.
    Reply,
    /// Send nothing (not a query, or too short to answer).
    Silent,
    /// Resolve upstream, then write.
    Resolve(WireQuery, Question, Pending),
}

/// Reads a packet and answers it if that needs no waiting.
pub(super) fn step(
    pipeline: &Pipeline,
    arrival: Arrival,
    packet: &[u8],
    source: SocketAddr,
    limit: Option<usize>,
    out: &mut Vec<u8>,
) -> Step {
    let query = match wire::read_query(packet) {
        Ok(query) => query,
        Err(Rejection::Drop) => return Step::Silent,
        Err(Rejection::Error { id, flags, code }) => {
            // No question could be read, so there is nothing to log.
            wire::write_error(id, flags, code, out);
            return Step::Reply;
        }
    };
    let limit = limit.unwrap_or_else(|| query.udp_limit());
    // RFC 6891 section 6.1.3: only EDNS version 0 exists.
    if query.edns.is_some_and(|edns| edns.version > 0) {
        return write_error_answer(
            pipeline,
            arrival,
            source,
            &query,
            ResponseCode::BADVERS,
            "unsupported EDNS version",
            limit,
            out,
        );
    }
    if query.class != u16::from(DNSClass::IN) {
        return write_error_answer(
            pipeline,
            arrival,
            source,
            &query,
            ResponseCode::NotImp,
            "only the IN class is served",
            limit,
            out,
        );
    }
    let question = Question {
        name: query.name.clone(),
        record_type: query.record_type,
        dnssec_ok: query.edns.is_some_and(|edns| edns.dnssec_ok),
    };
    match pipeline.answer_now_at(source.ip(), &question, arrival.at) {
        Immediate::Answer(answer) => {
            write_answer(&query, &answer, limit, out);
            finish_answer(pipeline, arrival, source, &query, &answer);
            Step::Reply
        }
        Immediate::Cached { entry, age, decision } => match entry.wire() {
            Some(wire) => {
                wire.write(&query, age, None, None, limit, out);
                let code = entry.stored().response_code;
                finish(pipeline, arrival, source, &query, &decision, code, true, None);
                Step::Reply
            }
            None => write_error_answer(
                pipeline,
                arrival,
                source,
                &query,
                ResponseCode::ServFail,
                "cached answer could not be encoded",
                limit,
                out,
            ),
        },
        Immediate::Upstream(pending) => Step::Resolve(query, question, pending),
    }
}

/// Hands a finished answer to the pipeline's observers: the one place the
/// listeners (UDP and TCP, policy answers, cache hits, upstream answers and
/// errors alike) do so. Observers never change the answer or wait.
#[allow(clippy::too_many_arguments)]
pub(super) fn finish(
    pipeline: &Pipeline,
    arrival: Arrival,
    source: SocketAddr,
    query: &WireQuery,
    decision: &Decision,
    response_code: ResponseCode,
    cache_hit: bool,
    upstream_latency: Option<Duration>,
) {
    pipeline.finish(&Finished {
        time_ms: arrival.unix_ms,
        source: source.ip(),
        name: &query.name,
        record_type: query.record_type,
        decision,
        response_code,
        cache_hit,
        upstream_latency,
    });
}

/// [`finish`] for a pipeline [`Answer`].
pub(super) fn finish_answer(
    pipeline: &Pipeline,
    arrival: Arrival,
    source: SocketAddr,
    query: &WireQuery,
    answer: &Answer,
) {
    let Answer { decision, response_code, cache_hit, upstream_latency, .. } = answer;
    finish(pipeline, arrival, source, query, decision, *response_code, *cache_hit, *upstream_latency);
}

pub(super) fn write_error_answer(
    pipeline: &Pipeline,
    arrival: Arrival,
    source: SocketAddr,
    query: &WireQuery,
    code: ResponseCode,
    reason: &'static str,
    limit: usize,
    out: &mut Vec<u8>,
) -> Step {
    let answer = Answer::empty(code, Decision::unanswerable(reason));
    write_answer(query, &answer, limit, out);
    finish_answer(pipeline, arrival, source, query, &answer);
    Step::Reply
}

/// Writes a pipeline answer (records with TTLs already counted down).
pub(super) fn write_answer(query: &WireQuery, answer: &Answer, limit: usize, out: &mut Vec<u8>) {
    let wire = WireAnswer::encode_parts(
        &query.name,
        query.record_type,
        answer.response_code,
        &answer.answers,
        &answer.authorities,
    )
    .unwrap_or_else(|| WireAnswer::empty(ResponseCode::ServFail));
    wire.write(query, 0, None, answer.extended_error.as_ref(), limit, out);
}

/// Running listeners and the addresses they really bound (port 0 resolved).
pub struct DnsServer {
    pub udp_addrs: Vec<SocketAddr>,
    pub tcp_addrs: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
    udp_threads: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl DnsServer {
    /// Binds UDP and TCP on every `dns.listen` address and starts serving.
    pub async fn start(pipeline: Arc<Pipeline>, config: &Config) -> std::io::Result<DnsServer> {
        let listen = &config.listen;
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let connections = ConnectionTable::new(TcpLimits::new(&config.tcp, config.rate_limit.ipv6_prefix));
        let stop = Arc::new(AtomicBool::new(false));
        let mut server = DnsServer {
            udp_addrs: Vec::new(),
            tcp_addrs: Vec::new(),
            tasks: Vec::new(),
            udp_threads: Vec::new(),
            stop: stop.clone(),
        };
        // Bind everything before serving anything: if one address fails, the
        // sockets already bound close with this function's error rather than
        // being served by threads nobody can stop.
        let mut bound = Vec::with_capacity(listen.len());
        for address in listen {
            let (udp, tcp) = bind_pair(*address)?;
            server.udp_addrs.push(udp.local_addr()?);
            server.tcp_addrs.push(tcp.local_addr()?);
            bound.push((address, udp, tcp));
        }
        for (address, udp, tcp) in bound {
            let (udp_pipeline, in_flight, stop) = (pipeline.clone(), in_flight.clone(), stop.clone());
            let runtime = tokio::runtime::Handle::current();
            let thread = std::thread::Builder::new()
                .name(format!("udp {address}"))
                .spawn(move || super::udp::serve(Arc::new(udp), udp_pipeline, runtime, in_flight, stop))?;
            server.udp_threads.push(thread);
            server.tasks.push(tokio::spawn(tcp::serve(tcp, pipeline.clone(), connections.clone())));
        }
        Ok(server)
    }

    /// Serves until every listener has failed.
    pub async fn run(self) -> std::io::Result<()> {
        for task in self.tasks {
            let _ = task.await;
        }
        Err(std::io::Error::other("every DNS listener stopped"))
    }

    /// Stops serving; the sockets close as the tasks and threads end.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        let threads = self.udp_threads;
        let _ = tokio::task::spawn_blocking(move || threads.into_iter().for_each(|thread| drop(thread.join()))).await;
    }
}

/// Binds UDP and TCP on the same port. With port 0 the OS picks the UDP port,
/// and TCP is bound to the same number (retried if that TCP port is taken).
/// The UDP socket is left blocking, for its thread.
fn bind_pair(address: SocketAddr) -> std::io::Result<(std::net::UdpSocket, TcpListener)> {
    let explain = |error: std::io::Error, proto: &str, at: SocketAddr| {
        let hint = match error.kind() {
            std::io::ErrorKind::PermissionDenied => " (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
            std::io::ErrorKind::AddrInUse => " (another DNS server may be running there: stop it or change dns.listen)",
            std::io::ErrorKind::AddrNotAvailable => " (this machine has no such address: check dns.listen)",
            _ => "",
        };
        std::io::Error::new(error.kind(), format!("cannot listen on {proto} {at}: {error}{hint}"))
    };
    if address.port() != 0 {
        let udp = bind_udp(address).map_err(|e| explain(e, "UDP", address))?;
        let tcp = bind_tcp(address).map_err(|e| explain(e, "TCP", address))?;
        return Ok((udp, tcp));
    }
    let mut last_error = None;
    for _ in 0..20 {
        let udp = bind_udp(address).map_err(|e| explain(e, "UDP", address))?;
        let port = udp.local_addr()?.port();
        match bind_tcp(SocketAddr::new(address.ip(), port)) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error) => last_error = Some(explain(error, "TCP", address)),
        }
    }
    Err(last_error.expect("at least one attempt"))
}

/// A new socket for `address`; an IPv6 one is IPv6-only. Linux makes `[::]`
/// dual-stack by default, which would take the IPv4 port too and make a
/// second listen entry `0.0.0.0:53` fail as "address in use".
fn socket_for(address: SocketAddr, kind: Type, protocol: Protocol) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(address), kind, Some(protocol))?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

fn bind_udp(address: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = socket_for(address, Type::DGRAM, Protocol::UDP)?;
    socket.bind(&address.into())?;
    Ok(socket.into())
}

fn bind_tcp(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket_for(address, Type::STREAM, Protocol::TCP)?;
    // As tokio's own bind does: a restarted server can bind at once while old
    // connections are in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(TCP_BACKLOG)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}
