//! A lean UDP forwarder for plain-DNS upstreams (the usual school set-up: the
//! ISP's or the trust's resolver). hickory's resolver opens a socket, a task
//! chain and a cache layer per query; on the loopback bed that made upstream
//! misses the bottleneck of a mixed load. Here a few long-lived sockets per
//! upstream carry every query, each with a random ID on a random source port,
//! and a reply is accepted only if its ID *and* question match (so a spoofed
//! or stray datagram is ignored). Truncated replies are retried over TCP.
//! DNS-over-TLS/HTTPS upstreams still go through hickory's resolver.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{LowerName, Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{OnceCell, oneshot};
use tokio::task::JoinHandle;

use super::cache::UpstreamAnswer;
use super::upstream::UpstreamError;

/// Sockets per upstream: more source ports for spoofing resistance, and
/// fewer IDs in flight per socket.
const CHANNELS: usize = 4;

/// One plain-DNS upstream server.
pub struct UdpUpstream {
    server: SocketAddr,
    timeout: Duration,
    channels: OnceCell<Vec<Channel>>,
    next: AtomicUsize,
}

struct Channel {
    socket: Arc<UdpSocket>,
    pending: Arc<Mutex<HashMap<u16, Waiter>>>,
    receiver: JoinHandle<()>,
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

/// A query waiting for its reply: the question it asked (lower-case wire
/// name and type), to check the reply against.
struct Waiter {
    question: Vec<u8>,
    reply: oneshot::Sender<Vec<u8>>,
}

impl UdpUpstream {
    pub fn new(server: SocketAddr, timeout: Duration) -> UdpUpstream {
        UdpUpstream { server, timeout, channels: OnceCell::new(), next: AtomicUsize::new(0) }
    }

    /// Sockets are opened on first use, so building a pipeline (as
    /// `hedgerow check` does) sends and binds nothing.
    async fn channels(&self) -> Result<&[Channel], UpstreamError> {
        let channels = self
            .channels
            .get_or_try_init(|| async {
                let mut channels = Vec::with_capacity(CHANNELS);
                for _ in 0..CHANNELS {
                    let local: SocketAddr =
                        if self.server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("valid");
                    let socket = UdpSocket::bind(local)
                        .await
                        .map_err(|e| UpstreamError::Other(format!("cannot open a socket: {e}")))?;
                    socket
                        .connect(self.server)
                        .await
                        .map_err(|e| UpstreamError::Other(format!("cannot reach {}: {e}", self.server)))?;
                    super::udp::enlarge_receive_buffer(&socket);
                    let socket = Arc::new(socket);
                    let pending = Arc::new(Mutex::new(HashMap::new()));
                    let receiver = tokio::spawn(receive(socket.clone(), pending.clone()));
                    channels.push(Channel { socket, pending, receiver });
                }
                Ok::<_, UpstreamError>(channels)
            })
            .await?;
        Ok(channels)
    }

    pub async fn query(
        &self,
        name: &LowerName,
        record_type: RecordType,
        dnssec_ok: bool,
    ) -> Result<UpstreamAnswer, UpstreamError> {
        let channels = self.channels().await?;
        let channel = &channels[self.next.fetch_add(1, Ordering::Relaxed) % channels.len()];
        let question = question_key(name, record_type);
        let (reply, replied) = oneshot::channel();
        let id = {
            let mut pending = channel.pending.lock().expect("pending lock");
            let id = loop {
                let id: u16 = rand::random();
                if !pending.contains_key(&id) {
                    break id;
                }
            };
            pending.insert(id, Waiter { question, reply });
            id
        };
        let packet = build_query(id, name, record_type, dnssec_ok)?;
        if let Err(error) = channel.socket.send(&packet).await {
            channel.pending.lock().expect("pending lock").remove(&id);
            return Err(UpstreamError::Other(format!("cannot send to {}: {error}", self.server)));
        }
        let bytes = match tokio::time::timeout(self.timeout, replied).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(_)) => {
                return Err(UpstreamError::Other(format!("{} refused the connection (is it running?)", self.server)));
            }
            Err(_) => {
                channel.pending.lock().expect("pending lock").remove(&id);
                return Err(UpstreamError::Timeout);
            }
        };
        let mut message =
            Message::from_vec(&bytes).map_err(|e| UpstreamError::Other(format!("unreadable reply: {e}")))?;
        if message.metadata.truncation {
            let bytes = tokio::time::timeout(self.timeout, query_tcp(self.server, &packet))
                .await
                .map_err(|_| UpstreamError::Timeout)?
                .map_err(|e| UpstreamError::Other(format!("TCP retry to {}: {e}", self.server)))?;
            message = Message::from_vec(&bytes).map_err(|e| UpstreamError::Other(format!("unreadable reply: {e}")))?;
        }
        match message.metadata.response_code {
            code @ (ResponseCode::NoError | ResponseCode::NXDomain) => Ok(UpstreamAnswer {
                response_code: code,
                answers: std::mem::take(&mut message.answers),
                authorities: std::mem::take(&mut message.authorities),
            }),
            code => Err(UpstreamError::Failed(code)),
        }
    }
}

/// Reads replies and hands each to the query waiting for it.
async fn receive(socket: Arc<UdpSocket>, pending: Arc<Mutex<HashMap<u16, Waiter>>>) {
    let mut buffer = vec![0u8; 65_535];
    loop {
        let len = match socket.recv(&mut buffer).await {
            Ok(len) => len,
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                // ICMP port unreachable: the server is down. Fail everything
                // in flight at once (dropping the senders) rather than
                // letting each query wait out its timeout.
                pending.lock().expect("pending lock").clear();
                continue;
            }
            Err(error) => {
                tracing::debug!(%error, "upstream receive error");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let reply = &buffer[..len];
        if len < 12 || reply[2] & 0x80 == 0 {
            continue; // not a response
        }
        let id = u16::from_be_bytes([reply[0], reply[1]]);
        let mut pending = pending.lock().expect("pending lock");
        let matches =
            pending.get(&id).is_some_and(|waiter| reply_question(reply).is_some_and(|q| q == waiter.question));
        if matches && let Some(waiter) = pending.remove(&id) {
            let _ = waiter.reply.send(reply.to_vec());
        }
    }
}

fn build_query(id: u16, name: &LowerName, record_type: RecordType, dnssec_ok: bool) -> Result<Vec<u8>, UpstreamError> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from(name), record_type));
    let mut edns = Edns::new();
    edns.set_max_payload(super::wire::MAX_UDP_PAYLOAD);
    edns.set_dnssec_ok(dnssec_ok);
    message.set_edns(edns);
    message.to_vec().map_err(|e| UpstreamError::Other(format!("cannot encode the query: {e}")))
}

/// The question as lower-case wire name plus type, to match replies.
fn question_key(name: &LowerName, record_type: RecordType) -> Vec<u8> {
    let mut key = Vec::with_capacity(64);
    for label in name.iter() {
        key.push(label.len() as u8);
        key.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    key.push(0);
    key.extend_from_slice(&u16::from(record_type).to_be_bytes());
    key
}

/// The question of a reply in the same form, if it has exactly one.
fn reply_question(reply: &[u8]) -> Option<Vec<u8>> {
    if u16::from_be_bytes([reply[4], reply[5]]) != 1 {
        return None;
    }
    let mut key = Vec::with_capacity(64);
    let mut at = 12;
    loop {
        let len = *reply.get(at)? as usize;
        if len > 63 {
            return None;
        }
        key.push(len as u8);
        if len == 0 {
            break;
        }
        key.extend(reply.get(at + 1..at + 1 + len)?.iter().map(u8::to_ascii_lowercase));
        at += 1 + len;
    }
    key.extend_from_slice(reply.get(at + 1..at + 3)?);
    Some(key)
}

async fn query_tcp(server: SocketAddr, packet: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    let mut framed = Vec::with_capacity(packet.len() + 2);
    framed.extend_from_slice(&(packet.len() as u16).to_be_bytes());
    framed.extend_from_slice(packet);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await?;
    let mut reply = vec![0; usize::from(len)];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_question_matches_the_query_key_whatever_the_case() {
        let name = LowerName::from(Name::from_ascii("WWW.Example.test.").unwrap());
        let packet = build_query(7, &name, RecordType::AAAA, false).unwrap();
        let mut reply = packet.clone();
        reply[2] |= 0x80;
        reply[13] = b'W';
        assert_eq!(reply_question(&reply), Some(question_key(&name, RecordType::AAAA)));
        assert_ne!(reply_question(&reply), Some(question_key(&name, RecordType::A)));
    }
}
