//! A minimal DNS client for tests: one query, one response, plain sockets.
//!
//! Every exchange is bounded by [`TIMEOUT`]. The `query_*` functions panic
//! with a descriptive message on any failure (the usual case in a test); the
//! `try_*`/`exchange_*` variants return the error instead, for tests that
//! expect a server to be unreachable.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, Query},
    rr::{Name, RecordType},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream, UdpSocket},
    time::{Instant, timeout, timeout_at},
};

/// Upper bound for every exchange in this module.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// A standard query for `name` (taken as fully qualified, trailing dot
/// optional) with a random ID, RD set and no EDNS (so UDP answers over 512
/// bytes come back truncated). Tweak the result and pass it to `exchange_*`
/// for anything more specific.
pub fn build_query(name: &str, rtype: RecordType) -> Message {
    let mut name = Name::from_ascii(name).unwrap_or_else(|e| panic!("bad query name {name:?}: {e}"));
    name.set_fqdn(true);
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name, rtype));
    message
}

/// Queries `server` over UDP from an ephemeral port; panics on failure.
pub async fn query_udp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    try_query_udp(server, name, rtype)
        .await
        .unwrap_or_else(|e| panic!("UDP query {name} {rtype} to {server} failed: {e}"))
}

/// Like [`query_udp`], with the client socket bound to `bind_ip` (e.g.
/// 127.0.0.2, to look like a different client); panics on failure.
pub async fn query_udp_from(bind_ip: IpAddr, server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    exchange_udp_from(bind_ip, server, &build_query(name, rtype))
        .await
        .unwrap_or_else(|e| panic!("UDP query {name} {rtype} from {bind_ip} to {server} failed: {e}"))
}

/// Queries `server` over TCP; panics on failure.
pub async fn query_tcp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    try_query_tcp(server, name, rtype)
        .await
        .unwrap_or_else(|e| panic!("TCP query {name} {rtype} to {server} failed: {e}"))
}

/// Like [`query_tcp`], with the client socket bound to `bind_ip` (e.g.
/// 127.0.0.9, to look like an outsider); panics on failure.
pub async fn query_tcp_from(bind_ip: IpAddr, server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    exchange_tcp_from(bind_ip, server, &build_query(name, rtype))
        .await
        .unwrap_or_else(|e| panic!("TCP query {name} {rtype} from {bind_ip} to {server} failed: {e}"))
}

/// [`query_udp`] that returns errors (timeout, ICMP unreachable, ...) instead of panicking.
pub async fn try_query_udp(server: SocketAddr, name: &str, rtype: RecordType) -> io::Result<Message> {
    exchange_udp(server, &build_query(name, rtype)).await
}

/// [`query_tcp`] that returns errors instead of panicking.
pub async fn try_query_tcp(server: SocketAddr, name: &str, rtype: RecordType) -> io::Result<Message> {
    exchange_tcp(server, &build_query(name, rtype)).await
}

/// Sends `query` over UDP from an ephemeral port and waits for the response
/// carrying its ID.
pub async fn exchange_udp(server: SocketAddr, query: &Message) -> io::Result<Message> {
    exchange_udp_from(unspecified_like(server), server, query).await
}

/// Sends `query` over UDP from `bind_ip` (ephemeral port) and waits for the
/// response carrying its ID. Datagrams that are not that response (wrong ID,
/// not a response, unparsable) are skipped, as a real stub resolver would.
pub async fn exchange_udp_from(bind_ip: IpAddr, server: SocketAddr, query: &Message) -> io::Result<Message> {
    let deadline = Instant::now() + TIMEOUT;
    let bytes = encode(query)?;
    let socket = UdpSocket::bind((bind_ip, 0)).await?;
    // Connecting filters out datagrams from other peers and turns an ICMP
    // port-unreachable into a ConnectionRefused error on recv.
    socket.connect(server).await?;
    socket.send(&bytes).await?;

    let mut buf = vec![0u8; 65_535];
    loop {
        let len = timeout_at(deadline, socket.recv(&mut buf)).await.map_err(|_| timed_out(server, "UDP"))??;
        match Message::from_vec(&buf[..len]) {
            Ok(response)
                if response.metadata.id == query.metadata.id
                    && response.metadata.message_type == MessageType::Response =>
            {
                return Ok(response);
            }
            _ => continue,
        }
    }
}

/// Sends `query` over a fresh TCP connection and waits for the response
/// carrying its ID.
pub async fn exchange_tcp(server: SocketAddr, query: &Message) -> io::Result<Message> {
    exchange_tcp_from(unspecified_like(server), server, query).await
}

/// Sends `query` over a fresh TCP connection from `bind_ip` (ephemeral
/// port) and waits for the response carrying its ID. The server sees
/// `bind_ip` as the peer address, so tests can play any client on loopback.
pub async fn exchange_tcp_from(bind_ip: IpAddr, server: SocketAddr, query: &Message) -> io::Result<Message> {
    let bytes = encode(query)?;
    let len = u16::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query over 65535 bytes"))?;
    let exchange = async {
        let mut stream = connect_tcp_from(bind_ip, server).await?;
        // Length prefix and message in one write, as most clients do.
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await?;

        loop {
            let len = stream.read_u16().await? as usize;
            let mut buf = vec![0u8; len];
            stream.read_exact(&mut buf).await?;
            let response =
                Message::from_vec(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if response.metadata.id == query.metadata.id && response.metadata.message_type == MessageType::Response {
                return Ok(response);
            }
        }
    };
    timeout(TIMEOUT, exchange).await.map_err(|_| timed_out(server, "TCP"))?
}

/// Opens a TCP connection to `server` whose source address is `bind_ip`.
pub async fn connect_tcp_from(bind_ip: IpAddr, server: SocketAddr) -> io::Result<TcpStream> {
    let socket = match bind_ip {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(bind_ip, 0))?;
    socket.connect(server).await
}

/// Panics unless `response` is the server's answer to `query`: a response
/// with the query's ID and opcode, and the same question (name, case
/// included, type and class). A stray or forged datagram fails the test
/// instead of passing for the server's answer.
pub fn assert_reply_to(query: &Message, response: &Message) {
    assert_eq!(response.metadata.message_type, MessageType::Response, "not a response: {response:?}");
    assert_eq!(response.metadata.id, query.metadata.id, "response ID differs from the query's: {response:?}");
    assert_eq!(response.metadata.op_code, query.metadata.op_code, "opcode differs: {response:?}");
    let asked: Vec<String> = query.queries.iter().map(ToString::to_string).collect();
    let echoed: Vec<String> = response.queries.iter().map(ToString::to_string).collect();
    assert_eq!(echoed, asked, "the response answers another question: {response:?}");
}

/// Sends arbitrary bytes to `server` over UDP and returns the first datagram
/// that comes back, or `None` on timeout or a socket error (e.g. ICMP
/// port-unreachable). For malformed-packet tests.
pub async fn send_raw_udp(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind((unspecified_like(server), 0)).await.ok()?;
    socket.connect(server).await.ok()?;
    socket.send(bytes).await.ok()?;
    let mut buf = vec![0u8; 65_535];
    let len = timeout(TIMEOUT, socket.recv(&mut buf)).await.ok()?.ok()?;
    buf.truncate(len);
    Some(buf)
}

fn encode(message: &Message) -> io::Result<Vec<u8>> {
    message.to_vec().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
}

/// The wildcard address of `server`'s family, so the kernel picks a source
/// address that can reach it.
fn unspecified_like(server: SocketAddr) -> IpAddr {
    match server {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

fn timed_out(server: SocketAddr, proto: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("no {proto} response from {server} within {TIMEOUT:?}"))
}
