//! A lean UDP forwarder for plain-DNS upstreams (the usual school set-up: the
//! ISP's or the trust's resolver). DNS-over-TLS/HTTPS upstreams still go
//! through hickory's resolver.
//!
//! Built to hold against an off-path attacker on the school network (a pupil
//! flooding forged replies, or forging ICMP errors):
//!
//! - queries leave from a large rotating pool of sockets, each on a port the
//!   kernel picked at random from the ephemeral range ([`SocketPool`]): a
//!   query takes one of at least [`POOL_IDLE_TARGET`] idle sockets at random,
//!   has it to itself until its reply is in, and a socket carries at most
//!   [`USES_PER_SOCKET`] queries in its life. A socket that times out, or is
//!   sent anything that is not its reply (a forged or stray datagram), is
//!   closed at once. So a port learned from one query is one of hundreds, and
//!   short-lived;
//! - the sockets are not connected, so the kernel does not hand them ICMP
//!   errors (a forged "port unreachable" cannot fail a query or mark a server
//!   down);
//! - the ID is random, and the letters of the name are in random case
//!   (0x20, draft-vixie-dnsext-dns0x20): a reply is taken only if it comes
//!   from the server's address and port, carries the ID, and repeats the
//!   question byte for byte, case included. Anything else is ignored and the
//!   query keeps waiting for the real reply.
//!
//! Why a pool and not a new socket for every query (as Unbound does): on the
//! loopback bed, opening, registering and closing a socket per query cost
//! about a tenth of a core at 14,000 misses a second (mixed queries per
//! second fell from 1.4x Unbound's to 1.2x); a socket used eight times costs
//! an eighth of that. There is still no receiver task, shared map or lock
//! between a query and its reply: the reply wakes the query's own task.
//! Truncated replies are retried over a fresh TCP connection, checked the
//! same way.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{LowerName, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use super::answer::{UpstreamAnswer, UpstreamError};

/// Bytes read per reply datagram. We advertise `wire::MAX_UDP_PAYLOAD`
/// (1232), so a real reply fits; one that fills the buffer may have been cut
/// short and is fetched again over TCP.
const REPLY_BUFFER: usize = 4096;

const HEADER_LEN: usize = 12;

/// A query takes a pooled socket only when at least this many are idle, so
/// the one it gets is one of hundreds; below it, a new socket is opened.
const POOL_IDLE_TARGET: usize = 256;

/// Idle sockets kept at most; a socket coming back to a fuller pool is closed.
const POOL_IDLE_MAX: usize = 320;

/// Queries one socket carries in its life before it is closed.
const USES_PER_SOCKET: u8 = 8;

/// One plain-DNS upstream server.
pub struct UdpUpstream {
    server: SocketAddr,
    timeout: Duration,
    pool: SocketPool,
}

/// Idle sockets for queries to one server (see the module comment).
#[derive(Default)]
struct SocketPool {
    idle: Mutex<Vec<PooledSocket>>,
}

struct PooledSocket {
    socket: UdpSocket,
    uses: u8,
}

impl SocketPool {
    /// A random idle socket, if enough are idle to choose among.
    fn take(&self) -> Option<PooledSocket> {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < POOL_IDLE_TARGET {
            return None;
        }
        let at = rand::random_range(0..idle.len());
        Some(idle.swap_remove(at))
    }

    /// Returns a socket whose query got its reply and nothing else.
    fn give_back(&self, socket: PooledSocket) {
        if socket.uses >= USES_PER_SOCKET {
            return; // closed: its port has been seen often enough
        }
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < POOL_IDLE_MAX {
            idle.push(socket);
        }
    }
}

impl UdpUpstream {
    pub fn new(server: SocketAddr, timeout: Duration) -> UdpUpstream {
        UdpUpstream { server, timeout, pool: SocketPool::default() }
    }

    pub async fn query(
        &self,
        name: &LowerName,
        record_type: RecordType,
        dnssec_ok: bool,
    ) -> Result<UpstreamAnswer, UpstreamError> {
        let deadline = Instant::now() + self.timeout;
        let packet = build_query(rand::random(), name, record_type, dnssec_ok);
        let reply = self.exchange_udp(&packet, deadline).await?;
        let reply = match reply {
            Reply::Whole(bytes) => bytes,
            Reply::Truncated => tokio::time::timeout(self.timeout, query_tcp(self.server, &packet))
                .await
                .map_err(|_| UpstreamError::Timeout)?
                .map_err(|e| UpstreamError::Other(format!("TCP retry to {}: {e}", self.server)))?,
        };
        let mut message =
            Message::from_vec(&reply).map_err(|e| UpstreamError::Other(format!("unreadable reply: {e}")))?;
        match message.metadata.response_code {
            code @ (ResponseCode::NoError | ResponseCode::NXDomain) => Ok(UpstreamAnswer {
                response_code: code,
                answers: lower_case_names(std::mem::take(&mut message.answers)),
                authorities: lower_case_names(std::mem::take(&mut message.authorities)),
            }),
            code => Err(UpstreamError::Failed(code)),
        }
    }

    /// Sends `packet` from a pooled or new socket and waits until `deadline`
    /// for the one reply that matches it. The socket goes back to the pool
    /// only if nothing but that reply reached it.
    async fn exchange_udp(&self, packet: &[u8], deadline: Instant) -> Result<Reply, UpstreamError> {
        let mut pooled = match self.pool.take() {
            Some(pooled) => {
                pooled
                    .socket
                    .send_to(packet, self.server)
                    .await
                    .map_err(|e| UpstreamError::Other(format!("cannot send to {}: {e}", self.server)))?;
                pooled
            }
            None => PooledSocket { socket: self.open_and_send(packet)?, uses: 0 },
        };
        pooled.uses += 1;
        let mut buffer = Vec::with_capacity(REPLY_BUFFER);
        let mut clean = true;
        let reply = loop {
            buffer.clear();
            let (len, from) = match tokio::time::timeout_at(deadline, pooled.socket.recv_buf_from(&mut buffer)).await {
                // Closed, not pooled: the real reply may still come, late.
                Err(_) => return Err(UpstreamError::Timeout),
                Ok(Ok(received)) => received,
                // Errors queued on the socket (none are expected: it is not
                // connected) say nothing about this query: keep waiting.
                Ok(Err(error)) => {
                    tracing::debug!(%error, server = %self.server, "upstream receive error");
                    clean = false;
                    continue;
                }
            };
            if from != self.server || !answers(&buffer[..len], packet) {
                tracing::trace!(%from, len, "ignored a datagram that is not the reply to our query");
                clean = false;
                continue;
            }
            if len >= REPLY_BUFFER || buffer[2] & 0x02 != 0 {
                break Reply::Truncated;
            }
            buffer.truncate(len);
            break Reply::Whole(buffer);
        };
        if clean {
            self.pool.give_back(pooled);
        }
        Ok(reply)
    }

    /// Opens a socket on a port the kernel picks at random and sends
    /// `packet` from it. The query is sent before the socket is handed to
    /// tokio: a socket tokio has just registered is not yet known to be
    /// writable, and sending through it would wait a turn of the reactor.
    fn open_and_send(&self, packet: &[u8]) -> Result<UdpSocket, UpstreamError> {
        let local: SocketAddr = match self.server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let local_error = |e: std::io::Error| {
            UpstreamError::Local(format!(
                "cannot open a UDP socket for an upstream query: {e} (out of ports or file descriptors? \
                 raise `ulimit -n` or net.ipv4.ip_local_port_range)"
            ))
        };
        let socket = std::net::UdpSocket::bind(local).map_err(local_error)?;
        socket.set_nonblocking(true).map_err(local_error)?;
        socket
            .send_to(packet, self.server)
            .map_err(|e| UpstreamError::Other(format!("cannot send to {}: {e}", self.server)))?;
        UdpSocket::from_std(socket).map_err(local_error)
    }
}

enum Reply {
    Whole(Vec<u8>),
    /// TC set (or larger than asked for): ask again over TCP.
    Truncated,
}

/// A query with ID `id`, RD set, the name's letters in random case (0x20) and
/// an OPT record offering `MAX_UDP_PAYLOAD` bytes (and DO if the client set it).
fn build_query(id: u16, name: &LowerName, record_type: RecordType, dnssec_ok: bool) -> Vec<u8> {
    let mut packet = Vec::with_capacity(HEADER_LEN + 256 + 4 + 11);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&[0x01, 0x00]); // RD
    packet.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1]); // one question, one additional (OPT)
    let mut bits: u64 = rand::random();
    let mut used = 0;
    for label in name.iter() {
        packet.push(label.len() as u8);
        for &byte in label {
            if byte.is_ascii_alphabetic() {
                if used == 64 {
                    bits = rand::random();
                    used = 0;
                }
                let upper = bits & 1 == 1;
                bits >>= 1;
                used += 1;
                packet.push(if upper { byte.to_ascii_uppercase() } else { byte.to_ascii_lowercase() });
            } else {
                packet.push(byte);
            }
        }
    }
    packet.push(0);
    packet.extend_from_slice(&u16::from(record_type).to_be_bytes());
    packet.extend_from_slice(&[0, 1]); // class IN
    // OPT: root owner, type 41, class = payload size, TTL = ext-rcode,
    // version, DO flag; no options.
    packet.extend_from_slice(&[0, 0, 41]);
    packet.extend_from_slice(&super::wire::MAX_UDP_PAYLOAD.to_be_bytes());
    packet.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
    packet
}

/// The question of a query built by [`build_query`]: name, type and class.
fn question_of(query: &[u8]) -> &[u8] {
    // A built query ends with its 11-byte OPT record.
    &query[HEADER_LEN..query.len() - 11]
}

/// Is `reply` the reply to `query`? A response (QR) with the same ID and
/// opcode QUERY, one question, and that question identical byte for byte
/// (so in the same letter case) to the one asked.
fn answers(reply: &[u8], query: &[u8]) -> bool {
    let question = question_of(query);
    reply.len() >= HEADER_LEN + question.len()
        && reply[..2] == query[..2]
        && reply[2] & 0x80 != 0
        && reply[2] & 0x78 == 0
        && reply[4..6] == [0, 1]
        && reply[HEADER_LEN..HEADER_LEN + question.len()] == *question
}

/// Names come back in the random case we asked in (and compression can carry
/// it into other names); the cache and the clients get them in lower case, as
/// they were before 0x20 (DNS names compare without case, and DNSSEC's
/// canonical form is lower case, so no signature changes meaning).
fn lower_case_names(mut records: Vec<Record>) -> Vec<Record> {
    for record in &mut records {
        record.name = record.name.to_lowercase();
        if let RData::CNAME(target) = &mut record.data {
            target.0 = target.0.to_lowercase();
        }
    }
    records
}

/// Asks over a new TCP connection and checks the reply as over UDP.
async fn query_tcp(server: SocketAddr, packet: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    let mut framed = Vec::with_capacity(packet.len() + 2);
    framed.extend_from_slice(&(packet.len() as u16).to_be_bytes());
    framed.extend_from_slice(packet);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await?;
    let mut reply = vec![0; usize::from(len)];
    stream.read_exact(&mut reply).await?;
    if !answers(&reply, packet) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the reply does not match the query (ID or question differs)",
        ));
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;

    fn name(text: &str) -> LowerName {
        LowerName::from(Name::from_ascii(text).unwrap())
    }

    fn reply_to(query: &[u8]) -> Vec<u8> {
        let mut reply = query.to_vec();
        reply[2] |= 0x80;
        reply
    }

    #[test]
    fn the_query_parses_and_asks_the_name_in_random_case() {
        let asked = name("www.abcdefghijklmnopqrstuvwxyz.example.test.");
        let packet = build_query(7, &asked, RecordType::AAAA, true);
        let message = Message::from_vec(&packet).unwrap();
        assert_eq!(message.metadata.id, 7);
        assert!(message.metadata.recursion_desired);
        let query = &message.queries[0];
        assert_eq!(query.query_type(), RecordType::AAAA);
        assert_eq!(LowerName::from(query.name().clone()), asked);
        assert!(message.edns.as_ref().unwrap().flags().dnssec_ok);
        assert_eq!(message.edns.as_ref().unwrap().max_payload(), super::super::wire::MAX_UDP_PAYLOAD);
        // 36 letters: the chance of one case pattern repeating is nil.
        let other = build_query(7, &asked, RecordType::AAAA, true);
        assert_ne!(question_of(&packet), question_of(&other), "each query gets its own case pattern");
    }

    #[test]
    fn a_reply_must_repeat_the_id_and_the_question_in_the_same_case() {
        let packet = build_query(7, &name("www.example.test."), RecordType::A, false);
        assert!(answers(&reply_to(&packet), &packet));
        assert!(!answers(&packet, &packet), "a query is not a reply");

        let mut wrong_id = reply_to(&packet);
        wrong_id[1] ^= 1;
        assert!(!answers(&wrong_id, &packet));

        let mut flipped = reply_to(&packet);
        flipped[HEADER_LEN + 1] ^= 0x20; // the case of the first letter
        assert!(!answers(&flipped, &packet));

        let mut other_type = reply_to(&packet);
        let at = HEADER_LEN + question_of(&packet).len() - 3;
        other_type[at] ^= 1;
        assert!(!answers(&other_type, &packet));

        assert!(!answers(&reply_to(&packet)[..HEADER_LEN + 3], &packet), "a short reply is not the reply");
    }
}
