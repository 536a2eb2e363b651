//! A lean UDP forwarder for plain-DNS upstreams (the usual school set-up: the
//! ISP's or the trust's resolver). DNS-over-TLS/HTTPS upstreams still go
//! through hickory's resolver.
//!
//! Built to hold against an off-path attacker on the school network (a pupil
//! flooding forged replies, or forging ICMP errors):
//!
//! - every query leaves from a socket of its own on a fresh port the kernel
//!   picks at random from the ephemeral range (as Unbound does), closed once
//!   the reply is in, so a port learned from one query is useless for the next;
//! - the socket is not connected, so the kernel does not hand it ICMP errors
//!   (a forged "port unreachable" cannot fail a query or mark a server down);
//! - the ID is random, and the letters of the name are in random case
//!   (0x20, draft-vixie-dnsext-dns0x20): a reply is taken only if it comes
//!   from the server's address and port, carries the ID, and repeats the
//!   question byte for byte, case included. Anything else is ignored and the
//!   query keeps waiting for the real reply.
//!
//! Together that is about 16 bits of ID, about 14 of port and one per letter
//! of the name for an attacker to guess within one round trip.
//!
//! The cost of a socket per query is a few system calls (socket, bind, the
//! epoll registration and its removal, close) on top of the send and receive;
//! there is no receiver task, lock or map in between, the reply wakes the
//! query's own task. Truncated replies are retried over a fresh TCP
//! connection, checked the same way.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{LowerName, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use super::cache::UpstreamAnswer;
use super::upstream::UpstreamError;

/// Bytes read per reply datagram. We advertise `wire::MAX_UDP_PAYLOAD`
/// (1232), so a real reply fits; one that fills the buffer may have been cut
/// short and is fetched again over TCP.
const REPLY_BUFFER: usize = 4096;

const HEADER_LEN: usize = 12;

/// One plain-DNS upstream server.
pub struct UdpUpstream {
    server: SocketAddr,
    timeout: Duration,
}

impl UdpUpstream {
    pub fn new(server: SocketAddr, timeout: Duration) -> UdpUpstream {
        UdpUpstream { server, timeout }
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

    /// Sends `packet` from a fresh socket and waits until `deadline` for the
    /// one reply that matches it; everything else that arrives is dropped.
    async fn exchange_udp(&self, packet: &[u8], deadline: Instant) -> Result<Reply, UpstreamError> {
        let local: SocketAddr = match self.server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        // Port 0: the kernel picks a free ephemeral port at random. The query
        // is sent before the socket is handed to tokio: a socket tokio has
        // just registered is not yet known to be writable, and sending
        // through it would wait a turn of the reactor first.
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
        let socket = UdpSocket::from_std(socket).map_err(local_error)?;
        let mut buffer = Vec::with_capacity(REPLY_BUFFER);
        loop {
            buffer.clear();
            let (len, from) = match tokio::time::timeout_at(deadline, socket.recv_buf_from(&mut buffer)).await {
                Err(_) => return Err(UpstreamError::Timeout),
                Ok(Ok(received)) => received,
                // Errors queued on the socket (none are expected: it is not
                // connected) say nothing about this query: keep waiting.
                Ok(Err(error)) => {
                    tracing::debug!(%error, server = %self.server, "upstream receive error");
                    continue;
                }
            };
            if from != self.server || !answers(&buffer[..len], packet) {
                tracing::trace!(%from, len, "ignored a datagram that is not the reply to our query");
                continue;
            }
            if len >= REPLY_BUFFER || buffer[2] & 0x02 != 0 {
                return Ok(Reply::Truncated);
            }
            buffer.truncate(len);
            return Ok(Reply::Whole(buffer));
        }
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
