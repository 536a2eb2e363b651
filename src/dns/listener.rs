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

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::pipeline::Pipeline;
use super::tcp::{self, ConnectionTable, TcpLimits};
use crate::config::Config;

/// Queries waiting on upstream at once; past this the answer is SERVFAIL at
/// once rather than an unbounded queue while upstreams are slow.
const MAX_IN_FLIGHT: usize = 20_000;
/// Pending TCP connections the kernel queues before `accept`.
const TCP_BACKLOG: i32 = 1_024;

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
        pipeline.set_listeners(server.udp_addrs.clone());
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
