//! The forwarder against a hostile network (issue 9, section 2): forged
//! replies (cache poisoning), forged ICMP errors, and an upstream that has
//! gone silent (serve-stale must not make clients wait it out).
//!
//! Upstreams here are test-owned UDP sockets on loopback ([`FakeUpstream`]),
//! so a test can see the port and ID of every query, hold answers back, and
//! send replies a real server never would; Hedgerow runs in-process on real
//! sockets. Nothing leaves 127.0.0.1.

mod support;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hedgerow::config::Config;
use hedgerow::dns::{Answer, Question};
use hedgerow::serve::{self, Running};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{LowerName, Name, RData, RecordType};
use support::authority::{Authority, Zone};
use tokio::net::UdpSocket;

const NETWORKS: &str = r#"
[[networks]]
name = "pupil-net"
cidrs = ["127.0.0.1/32"]
group = "pupil"
"#;

/// A forwarding config (port 0 on 127.0.0.1) to `upstreams` in order, with
/// `timeout_ms` per server; `extra` adds tables (e.g. `[cache]`).
fn config(upstreams: &[SocketAddr], timeout_ms: u64, extra: &str) -> Config {
    let data_dir = tempfile::tempdir().unwrap().keep();
    let mut text = format!(
        "data_dir = {:?}\n[dashboard]\nlisten = []\n[dns]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nmode = \"forward\"\ntimeout_ms = {timeout_ms}\n",
        data_dir.display().to_string()
    );
    for upstream in upstreams {
        text.push_str(&format!("[[upstream.servers]]\naddress = \"{upstream}\"\n"));
    }
    text.push_str(extra);
    text.push_str(NETWORKS);
    Config::parse(&text, "hostile_upstream").unwrap_or_else(|error| panic!("{error}\n{text}"))
}

fn dns_addr(running: &Running) -> SocketAddr {
    running.udp_addrs()[0]
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn first_a(message: &Message) -> Option<IpAddr> {
    message.answers.iter().find_map(|record| match &record.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        _ => None,
    })
}

/// Asks `server` for `name` (A) from a fresh socket and waits at most `wait`:
/// a stub resolver that gives up after `wait`.
async fn ask_within(server: SocketAddr, name: &str, wait: Duration) -> io::Result<Message> {
    let query = support::client::build_query(name, RecordType::A);
    let bytes = query.to_vec().map_err(io::Error::other)?;
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(server).await?;
    socket.send(&bytes).await?;
    let mut buffer = vec![0u8; 65_535];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let len = tokio::time::timeout_at(deadline, socket.recv(&mut buffer))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no answer for {name} within {wait:?}")))??;
        if let Ok(reply) = Message::from_vec(&buffer[..len])
            && reply.metadata.id == query.metadata.id
            && reply.metadata.message_type == MessageType::Response
        {
            return Ok(reply);
        }
    }
}

async fn ask(server: SocketAddr, name: &str) -> Message {
    ask_within(server, name, Duration::from_secs(5)).await.unwrap_or_else(|error| panic!("{name}: {error}"))
}

fn question(name: &str) -> Question {
    Question { name: LowerName::from(Name::from_ascii(name).unwrap()), record_type: RecordType::A, dnssec_ok: false }
}

/// The pipeline's own answer (with its Decision) for a pupil asking `name`.
async fn answer_with_decision(running: &Running, name: &str) -> Answer {
    running.pipeline.answer(ip("127.0.0.1"), &question(name)).await
}

// ---------------------------------------------------------------------------
// A fake upstream: a UDP socket the test owns.

/// One query the fake upstream received.
#[derive(Debug, Clone)]
struct Seen {
    from: SocketAddr,
    id: u16,
    /// The question as sent: name (letter case kept), type, class.
    question: Vec<u8>,
    /// The name as asked, dotted, letter case kept (no trailing dot).
    name: String,
}

impl Seen {
    fn name_lower(&self) -> String {
        self.name.to_ascii_lowercase()
    }

    /// A reply echoing the question byte for byte, as a real server does.
    fn reply(&self, address: Ipv4Addr, ttl: u32) -> Vec<u8> {
        reply_packet(self.id, &self.question, address, ttl)
    }
}

/// A reply with ID `id`, question `question` (wire bytes) and one A record
/// for that name (a compression pointer to the question).
fn reply_packet(id: u16, question: &[u8], address: Ipv4Addr, ttl: u32) -> Vec<u8> {
    let mut packet = Vec::with_capacity(12 + question.len() + 16);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&[0x81, 0x80]); // QR, RD, RA; NOERROR
    packet.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0]);
    packet.extend_from_slice(question);
    packet.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
    packet.extend_from_slice(&ttl.to_be_bytes());
    packet.extend_from_slice(&[0, 4]);
    packet.extend_from_slice(&address.octets());
    packet
}

/// The question of a query packet and its name, dotted.
fn read_question(packet: &[u8]) -> Option<(Vec<u8>, String)> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*packet.get(at)?);
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(packet.get(at + 1..at + 1 + len)?).into_owned());
        at += 1 + len;
    }
    let end = at + 1 + 4;
    Some((packet.get(12..end)?.to_vec(), labels.join(".")))
}

/// What the fake upstream sends back for one query.
struct Outgoing {
    after: Duration,
    bytes: Vec<u8>,
    /// Send from the fake's second socket (same address, another port).
    from_other_port: bool,
}

impl Outgoing {
    fn now(bytes: Vec<u8>) -> Outgoing {
        Outgoing { after: Duration::ZERO, bytes, from_other_port: false }
    }

    fn after(after: Duration, bytes: Vec<u8>) -> Outgoing {
        Outgoing { after, bytes, from_other_port: false }
    }
}

type Handler = Box<dyn Fn(&Seen) -> Vec<Outgoing> + Send + Sync>;

struct FakeUpstream {
    addr: SocketAddr,
    socket: StdUdpSocket,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeUpstream {
    /// Serves on 127.0.0.1 (a free port), answering each query as `handler` says.
    fn start(handler: impl Fn(&Seen) -> Vec<Outgoing> + Send + Sync + 'static) -> FakeUpstream {
        let handler: Handler = Box::new(handler);
        let socket = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let other = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (socket, seen, stop) = (socket.try_clone().unwrap(), seen.clone(), stop.clone());
            move || {
                let mut buffer = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((len, from)) = socket.recv_from(&mut buffer) else { continue };
                    let packet = &buffer[..len];
                    if len < 12 || packet[2] & 0x80 != 0 {
                        continue; // not a query
                    }
                    let Some((question, name)) = read_question(packet) else { continue };
                    let query = Seen { from, id: u16::from_be_bytes([packet[0], packet[1]]), question, name };
                    seen.lock().unwrap().push(query.clone());
                    for outgoing in handler(&query) {
                        let sender = if outgoing.from_other_port { &other } else { &socket };
                        if outgoing.after.is_zero() {
                            let _ = sender.send_to(&outgoing.bytes, from);
                        } else {
                            let sender = sender.try_clone().unwrap();
                            std::thread::spawn(move || {
                                std::thread::sleep(outgoing.after);
                                let _ = sender.send_to(&outgoing.bytes, from);
                            });
                        }
                    }
                }
            }
        });
        FakeUpstream { addr, socket, seen, stop, thread: Some(thread) }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Queries seen for `name` (any letter case).
    fn seen_for(&self, name: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|seen| seen.name_lower() == name).collect()
    }

    /// Waits (bounded) until a query for `name` has arrived.
    async fn wait_for(&self, name: &str) -> Seen {
        for _ in 0..300 {
            if let Some(seen) = self.seen_for(name).pop() {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the fake upstream never saw a query for {name}");
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const REAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 80);
const FORGED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 66);

// ---------------------------------------------------------------------------
// Source ports and reply checks.

/// Queries leave from a large rotating pool (see `dns/forward.rs`): once
/// the pool is full, hundreds of random ports, a socket carrying at most 8
/// queries in its life, and a socket that is sent anything but its reply is
/// closed after the query that finds it there.
///
/// The test sees ports, not sockets, and the kernel may hand a closed
/// socket's port to a new one (a few of 28,000, hundreds of times), so the
/// limits are checked as counts: with them, a port carrying more than 8
/// queries is rare; without them, it is the rule.
#[tokio::test]
async fn queries_leave_from_hundreds_of_short_lived_random_ports() {
    let upstream = FakeUpstream::start(|seen| vec![Outgoing::now(seen.reply(REAL, 300))]);
    let running = serve::start(&config(&[upstream.addr], 2000, "")).await.unwrap();
    let server = dns_addr(&running);
    let ports_used = |seen: &[Seen]| {
        let mut uses: HashMap<u16, usize> = HashMap::new();
        seen.iter().for_each(|seen| *uses.entry(seen.from.port()).or_default() += 1);
        uses
    };

    // Past the first few hundred queries the pool is full and sockets are
    // reused, each chosen at random among at least 256. Without the limit of
    // 8, 2,400 queries would put about 9 on each of 256 sockets.
    for i in 0..2400 {
        let reply = ask(server, &format!("port{i}.school.test")).await;
        assert_eq!(first_a(&reply), Some(IpAddr::V4(REAL)));
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2400);
    let uses = ports_used(&seen);
    // At least 256 sockets, and more as used-up ones are replaced (a pool
    // that never retires its sockets would show about 256).
    assert!(uses.len() > 300, "2,400 queries left from only {} ports", uses.len());
    let over = uses.values().filter(|&&count| count > 8).count();
    assert!(over <= 16, "{over} ports carried more than 8 queries; a socket carries at most 8 in its life");

    // A stray datagram (from the server's own address, wrong ID) to the
    // sockets of the last 60 queries: each is closed after the next query
    // that reads it, so it carries at most one more query (unless the kernel
    // gives its port to a new socket, which is rare).
    let stray: Vec<u16> = seen[seen.len() - 60..].iter().map(|seen| seen.from.port()).collect();
    for port in &stray {
        let junk = reply_packet(0, b"\x05stray\x04test\x00\x00\x01\x00\x01", FORGED, 60);
        upstream.socket.send_to(&junk, SocketAddr::from(([127, 0, 0, 1], *port))).unwrap();
    }
    for i in 0..600 {
        let reply = ask(server, &format!("after{i}.school.test")).await;
        assert_eq!(first_a(&reply), Some(IpAddr::V4(REAL)));
    }
    let after = ports_used(&upstream.seen()[2400..]);
    let reused: Vec<(u16, usize)> =
        stray.iter().map(|port| (*port, after.get(port).copied().unwrap_or(0))).filter(|(_, n)| *n > 1).collect();
    assert!(reused.len() <= 4, "sockets sent a stray datagram carried more queries: {reused:?}");

    running.stop().await;
}

#[tokio::test]
async fn a_reply_from_another_port_of_the_server_is_ignored() {
    // The forged copy comes first, right ID and question, but from another
    // port; the real reply follows.
    let upstream = FakeUpstream::start(|seen| {
        vec![
            Outgoing { after: Duration::ZERO, bytes: seen.reply(FORGED, 86_400), from_other_port: true },
            Outgoing::after(Duration::from_millis(150), seen.reply(REAL, 300)),
        ]
    });
    let running = serve::start(&config(&[upstream.addr], 2000, "")).await.unwrap();

    let reply = ask(dns_addr(&running), "www.victim-school.test").await;
    assert_eq!(first_a(&reply), Some(IpAddr::V4(REAL)));

    running.stop().await;
}

/// Serves DNS over TCP on 127.0.0.1:`port` on a thread, one query per
/// connection, replying with what `handler` makes of the query (ID, question).
fn serve_tcp(port: u16, handler: impl Fn(u16, &[u8], &str) -> Vec<u8> + Send + 'static) {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("the TCP port next to the fake upstream");
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut len = [0u8; 2];
            if stream.read_exact(&mut len).is_err() {
                continue;
            }
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if stream.read_exact(&mut query).is_err() || query.len() < 12 {
                continue;
            }
            let Some((question, name)) = read_question(&query) else { continue };
            let reply = handler(u16::from_be_bytes([query[0], query[1]]), &question, &name);
            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&reply);
            let _ = stream.write_all(&framed);
        }
    });
}

#[tokio::test]
async fn truncated_replies_are_fetched_over_tcp_and_checked_there_too() {
    // Over UDP every reply is truncated (TC, no records).
    let upstream = FakeUpstream::start(|seen| {
        let mut truncated = seen.reply(REAL, 300);
        truncated[2] |= 0x02;
        truncated[6..8].copy_from_slice(&[0, 0]);
        truncated.truncate(12 + seen.question.len());
        vec![Outgoing::now(truncated)]
    });
    // Over TCP: the real reply, except for one name, whose reply has the
    // wrong ID (a forged or stray answer).
    serve_tcp(upstream.addr.port(), |id, question, name| {
        if name.eq_ignore_ascii_case("wrong-id.school.test") {
            reply_packet(id.wrapping_add(1), question, FORGED, 86_400)
        } else {
            reply_packet(id, question, REAL, 300)
        }
    });
    let running = serve::start(&config(&[upstream.addr], 2000, "")).await.unwrap();
    let server = dns_addr(&running);

    let reply = ask(server, "over-tcp.school.test").await;
    assert_eq!(first_a(&reply), Some(IpAddr::V4(REAL)), "the truncated reply was fetched again over TCP");
    let reply = ask(server, "wrong-id.school.test").await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail, "a TCP reply with another ID is not taken");
    assert_eq!(first_a(&reply), None);

    running.stop().await;
}

// ---------------------------------------------------------------------------
// 0x20.

#[tokio::test]
async fn names_are_asked_in_random_case_and_a_reply_in_another_case_is_ignored() {
    // A forged reply from the right address and port with the right ID, but
    // the question in lower case (what an attacker who cannot see the query
    // would send), then the real reply, which echoes the case asked.
    let upstream = FakeUpstream::start(|seen| {
        let mut lowered = seen.question.clone();
        lowered.make_ascii_lowercase();
        vec![
            Outgoing::now(reply_packet(seen.id, &lowered, FORGED, 86_400)),
            Outgoing::after(Duration::from_millis(150), seen.reply(REAL, 300)),
        ]
    });
    let running = serve::start(&config(&[upstream.addr], 2000, "")).await.unwrap();
    let server = dns_addr(&running);

    let name = "case-randomisation-check.victim-school.test";
    let reply = ask(server, name).await;
    assert_eq!(first_a(&reply), Some(IpAddr::V4(REAL)), "a reply whose case differs from the query is forged");
    // Answers reach clients and the cache in lower case, not in the random case.
    assert_eq!(reply.answers[0].name.to_ascii(), format!("{name}."));

    for i in 0..4 {
        ask(server, &format!("another-long-name-{i}.victim-school.test")).await;
    }
    let asked: Vec<String> = upstream.seen().iter().map(|seen| seen.name.clone()).collect();
    assert_eq!(asked.len(), 5);
    for name in &asked {
        // 35+ letters each: all lower case by chance is a 1 in 2^35 event.
        assert_ne!(*name, name.to_ascii_lowercase(), "the name was not sent in random case: {asked:?}");
    }

    running.stop().await;
}

/// 0x20 only works with servers that echo the question as asked. Our test
/// authority (hickory-server) does, so the rest of the suite exercises it.
#[tokio::test]
async fn the_test_authority_echoes_the_letter_case_of_the_question() {
    let authority = Authority::start("127.0.0.1:0", vec![Zone::new("school.test.").a("www", "192.0.2.10")]).await;
    let query = support::client::build_query("wWw.ScHooL.TeSt", RecordType::A);
    let reply = support::client::exchange_udp(authority.addr, &query).await.unwrap();
    assert_eq!(reply.queries[0].name().to_ascii(), "wWw.ScHooL.TeSt.");
    assert!(!reply.answers.is_empty());

    // And through Hedgerow, whose queries to it are in random case.
    let running = serve::start(&config(&[authority.addr], 2000, "")).await.unwrap();
    let reply = ask(dns_addr(&running), "www.school.test").await;
    assert_eq!(first_a(&reply), Some(ip("192.0.2.10")));
    running.stop().await;
    authority.stop().await;
}

// ---------------------------------------------------------------------------
// Merging identical questions in flight.

#[tokio::test]
async fn identical_questions_in_flight_go_upstream_once() {
    let upstream = FakeUpstream::start(|seen| vec![Outgoing::after(Duration::from_millis(600), seen.reply(REAL, 300))]);
    let running = serve::start(&config(&[upstream.addr], 3000, "")).await.unwrap();
    let server = dns_addr(&running);

    let clients: Vec<_> = (0..40)
        .map(|i| {
            // The same name in differing case is the same question.
            let name = if i % 2 == 0 { "slow.school.test" } else { "SLOW.School.TEST" };
            tokio::spawn(async move { ask(server, name).await })
        })
        .collect();
    for client in clients {
        let reply = client.await.unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(first_a(&reply), Some(IpAddr::V4(REAL)));
    }
    assert_eq!(upstream.seen_for("slow.school.test").len(), 1, "40 clients asking one name at once: one query");

    running.stop().await;
}

// ---------------------------------------------------------------------------
// Cache poisoning by an off-path attacker who controls a zone.

/// The attacker asks names in their own zone, so their server (here the fake
/// upstream, standing in for it) learns the forwarder's source ports; then
/// the victim name is asked, and while the real answer takes 1.5 s the
/// attacker floods forged replies from the server's own address to every
/// learned port with every one of the 65,536 IDs and the name in lower case.
/// Bounded: at most 1.3 s of sending, at most 4 ports x 65,536 datagrams.
#[tokio::test]
async fn a_flood_of_forged_replies_is_never_accepted() {
    let victim = "www.victim-school.test";
    let upstream = FakeUpstream::start(move |seen| {
        let delay = if seen.name_lower() == victim { Duration::from_millis(1500) } else { Duration::ZERO };
        vec![Outgoing::after(delay, seen.reply(REAL, 300))]
    });
    let running = serve::start(&config(&[upstream.addr], 4000, "")).await.unwrap();
    let server = dns_addr(&running);

    // Enough probes to fill the socket pool, so the victim's query is sent
    // from a reused socket as on a busy server; the attacker floods the four
    // ports it saw last (most likely still idle in the pool).
    for i in 0..300 {
        ask(server, &format!("probe{i}.attacker.test")).await;
    }
    let mut learned: Vec<u16> = Vec::new();
    for seen in upstream.seen().iter().rev() {
        if learned.len() < 4 && !learned.contains(&seen.from.port()) {
            learned.push(seen.from.port());
        }
    }

    let asking = tokio::spawn(async move { ask_within(server, victim, Duration::from_secs(5)).await });
    upstream.wait_for(victim).await;

    let flooder = upstream.socket.try_clone().unwrap();
    let forged_question = {
        let mut question = Vec::new();
        for label in victim.split('.') {
            question.push(label.len() as u8);
            question.extend_from_slice(label.as_bytes());
        }
        question.extend_from_slice(&[0, 0, 1, 0, 1]);
        question
    };
    let sent = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let targets: Vec<SocketAddr> = learned.iter().map(|port| SocketAddr::from(([127, 0, 0, 1], *port))).collect();
        let mut sent = 0usize;
        'flood: for id in 0..=u16::MAX {
            let packet = reply_packet(id, &forged_question, FORGED, 86_400);
            for target in &targets {
                let _ = flooder.send_to(&packet, target);
                sent += 1;
            }
            if id % 256 == 0 && started.elapsed() > Duration::from_millis(1300) {
                break 'flood;
            }
        }
        sent
    })
    .await
    .unwrap();
    assert!(sent > 0);

    let reply = asking.await.unwrap().expect("the victim name is answered");
    assert_eq!(first_a(&reply), Some(IpAddr::V4(REAL)), "poisoned after {sent} forged replies");
    let again = ask(server, victim).await;
    assert_eq!(first_a(&again), Some(IpAddr::V4(REAL)), "the cache holds the real answer");
    assert_eq!(upstream.seen_for(victim).len(), 1, "the second answer came from the cache");

    running.stop().await;
}

// ---------------------------------------------------------------------------
// Forged ICMP.

/// Internet checksum (RFC 1071).
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 =
        bytes.chunks(2).map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP "port unreachable" (type 3 code 3) quoting a UDP datagram from
/// `from` to `to`, as a router or the server's host would send it.
fn port_unreachable(from: SocketAddr, to: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(from), SocketAddr::V4(to)) = (from, to) else { panic!("IPv4 only") };
    let mut quoted = vec![0x45, 0, 0, 48, 0x12, 0x34, 0, 0, 64, 17, 0, 0];
    quoted.extend_from_slice(&from.ip().octets());
    quoted.extend_from_slice(&to.ip().octets());
    let header_checksum = checksum(&quoted);
    quoted[10..12].copy_from_slice(&header_checksum.to_be_bytes());
    quoted.extend_from_slice(&from.port().to_be_bytes());
    quoted.extend_from_slice(&to.port().to_be_bytes());
    quoted.extend_from_slice(&[0, 28, 0, 0]); // UDP length, checksum (none)
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&quoted);
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    icmp
}

/// Sends `icmp` to 127.0.0.1 from a raw socket (needs root or CAP_NET_RAW).
fn send_icmp(icmp: &[u8]) -> io::Result<()> {
    // SAFETY: plain libc calls on a socket this function owns and closes.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut to: libc::sockaddr_in = std::mem::zeroed();
        to.sin_family = libc::AF_INET as libc::sa_family_t;
        to.sin_addr = libc::in_addr { s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be() };
        let sent = libc::sendto(
            fd,
            icmp.as_ptr().cast(),
            icmp.len(),
            0,
            (&to as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        let result = if sent < 0 { Err(io::Error::last_os_error()) } else { Ok(()) };
        libc::close(fd);
        result
    }
}

#[tokio::test]
async fn a_forged_port_unreachable_changes_nothing() {
    // The first upstream takes 800 ms over this name; the second would
    // answer differently, so an answer from it shows a failover.
    let first = FakeUpstream::start(|seen| {
        let delay = if seen.name_lower() == "icmp.school.test" { Duration::from_millis(800) } else { Duration::ZERO };
        vec![Outgoing::after(delay, seen.reply(REAL, 300))]
    });
    let second = Authority::start(
        "127.0.0.1:0",
        vec![Zone::new("school.test.").a("icmp", "192.0.2.99").a("next", "192.0.2.99")],
    )
    .await;
    let running = serve::start(&config(&[first.addr, second.addr], 2000, "")).await.unwrap();
    let server = dns_addr(&running);

    let asking = tokio::spawn(async move { ask(server, "icmp.school.test").await });
    let query = first.wait_for("icmp.school.test").await;
    // As if the first upstream's host said the forwarder's port is closed.
    let forged = port_unreachable(query.from, first.addr);
    send_icmp(&forged).expect("raw ICMP socket (the tests run as root)");

    let reply = asking.await.unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(first_a(&reply), Some(IpAddr::V4(REAL)), "the query in flight still got the first upstream's answer");

    // Not marked down: the next query goes to the first upstream first.
    let before = second.query_count();
    let next = ask(server, "next.school.test").await;
    assert_eq!(first_a(&next), Some(IpAddr::V4(REAL)));
    assert_eq!(first.seen_for("next.school.test").len(), 1);
    assert_eq!(second.query_count(), before, "the second upstream was not asked");

    running.stop().await;
    second.stop().await;
}

// ---------------------------------------------------------------------------
// Serve-stale timing (RFC 8767).

/// How the serve-stale fake upstream behaves.
const ANSWER: u8 = 0;
const SILENT: u8 = 1;

/// Answers with TTL 1 while `mode` is ANSWER; when SILENT, says nothing,
/// except that names starting "slow" get a new address after 1 s.
fn stale_upstream(mode: Arc<AtomicU8>) -> FakeUpstream {
    FakeUpstream::start(move |seen| match mode.load(Ordering::SeqCst) {
        ANSWER => vec![Outgoing::now(seen.reply(REAL, 1))],
        _ if seen.name_lower().starts_with("slow") => {
            vec![Outgoing::after(Duration::from_millis(1000), seen.reply(Ipv4Addr::new(192, 0, 2, 81), 300))]
        }
        _ => Vec::new(),
    })
}

#[tokio::test]
async fn stale_answers_come_after_a_short_wait_and_the_refresh_goes_on() {
    let mode = Arc::new(AtomicU8::new(ANSWER));
    let upstream = stale_upstream(mode.clone());
    // A 3 s upstream timeout; the client response timer is left at its default.
    let running = serve::start(&config(&[upstream.addr], 3000, "")).await.unwrap();
    let server = dns_addr(&running);

    for name in ["a.school.test", "b.school.test", "slow.school.test"] {
        assert_eq!(first_a(&ask(server, name).await), Some(IpAddr::V4(REAL)));
    }
    tokio::time::sleep(Duration::from_millis(1200)).await; // TTL 1: all three are stale now
    mode.store(SILENT, Ordering::SeqCst);

    // A stub resolver that gives up after 1.5 s, well before the 3 s upstream timeout.
    let patience = Duration::from_millis(1500);
    let stale = ask_within(server, "a.school.test", patience).await.expect("answered stale before the client gave up");
    assert_eq!(stale.metadata.response_code, ResponseCode::NoError);
    assert_eq!(first_a(&stale), Some(IpAddr::V4(REAL)));
    assert_eq!(stale.answers[0].ttl, 30, "stale answers carry the RFC 8767 TTL");
    assert_eq!(upstream.seen_for("a.school.test").len(), 2, "a refresh was sent");

    // The Decision says it was served stale, and why.
    let answer = answer_with_decision(&running, "b.school.test").await;
    assert_eq!(answer.answers[0].ttl, 30);
    let reason = answer.decision.reason.to_string();
    assert!(reason.starts_with("served stale"), "{reason}");
    assert!(reason.contains("did not answer within 400 ms"), "{reason}");

    // An upstream that is slow, not dead: the client gets the stale answer at
    // once, and the refresh, answered after 1 s, updates the cache.
    let stale = ask_within(server, "slow.school.test", patience).await.expect("answered stale");
    assert_eq!(first_a(&stale), Some(IpAddr::V4(REAL)));
    assert_eq!(stale.answers[0].ttl, 30);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let fresh = ask(server, "slow.school.test").await;
    assert_eq!(first_a(&fresh), Some(ip("192.0.2.81")), "the background refresh updated the cache");
    assert_eq!(upstream.seen_for("slow.school.test").len(), 2, "the fresh answer came from the cache");
    let answer = answer_with_decision(&running, "slow.school.test").await;
    assert_eq!(answer.decision.reason, "answered from the cache");

    running.stop().await;
}

#[tokio::test]
async fn stale_answers_come_at_once_when_upstream_is_down_or_failed_recently() {
    let mode = Arc::new(AtomicU8::new(ANSWER));
    let upstream = stale_upstream(mode.clone());
    // Upstream timeout 1 s; the client response timer 2 s, so only the
    // upstream's failure ends the first wait.
    let extra = "[cache]\nstale_answer_after_ms = 2000\n";
    let running = serve::start(&config(&[upstream.addr], 1000, extra)).await.unwrap();
    let server = dns_addr(&running);

    for name in ["a.school.test", "b.school.test", "c.school.test"] {
        assert_eq!(first_a(&ask(server, name).await), Some(IpAddr::V4(REAL)));
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    mode.store(SILENT, Ordering::SeqCst);

    // The first stale query waits out the upstream's timeout (1 s), which
    // marks the upstream down and notes that refreshing `a` failed.
    let stale = ask(server, "a.school.test").await;
    assert_eq!(stale.answers[0].ttl, 30);
    let asked_for_a = upstream.seen_for("a.school.test").len();
    assert_eq!(asked_for_a, 2, "one refresh: a server that failed is not asked twice for one query");

    // Upstream is marked down: a stub resolver that waits only 700 ms (less
    // than the upstream timeout) still gets its stale answer.
    let patience = Duration::from_millis(700);
    let stale = ask_within(server, "b.school.test", patience).await.expect("answered at once: upstream is down");
    assert_eq!(first_a(&stale), Some(IpAddr::V4(REAL)));
    assert_eq!(stale.answers[0].ttl, 30);
    let answer = answer_with_decision(&running, "c.school.test").await;
    let reason = answer.decision.reason.to_string();
    assert!(reason.starts_with("served stale") && reason.contains("marked down"), "{reason}");

    // `a` failed to refresh just now: answered at once, and not asked again.
    let stale = ask_within(server, "a.school.test", patience).await.expect("answered at once: failure recheck");
    assert_eq!(stale.answers[0].ttl, 30);
    let answer = answer_with_decision(&running, "a.school.test").await;
    let reason = answer.decision.reason.to_string();
    assert!(reason.starts_with("served stale") && reason.contains("failure recheck"), "{reason}");
    assert_eq!(upstream.seen_for("a.school.test").len(), asked_for_a, "no new query within the failure recheck time");

    running.stop().await;
}
