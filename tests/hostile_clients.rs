//! Hedgerow against clients that misbehave on purpose, over real sockets:
//! TCP connections opened and held to lock others out (by an outsider, by
//! one insider, by many insiders), and ANY or meta-type queries that must
//! not reach upstream.

mod support;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hedgerow::config::Config;
use hedgerow::dns::{DecisionKind, Flow, Question, Requester, Stage};
use hedgerow::serve::{self, Running};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{LowerName, Name, RData, RecordType};
use support::authority::{Authority, Zone};
use support::client::{build_query, exchange_udp_from};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Connections an attacker opens: more than the old global cap of 1,000.
const ATTACK_CONNECTIONS: usize = 1_100;
/// The default `dns.tcp_per_client`.
const PER_CLIENT: usize = 16;

const NETWORKS: &str = r#"
[groups.staff]
deny = ["blocked.school.test"]

[[networks]]
name = "pupil-net"
cidrs = ["127.0.0.1/32"]
group = "pupil"

[[networks]]
name = "staff-net"
cidrs = ["127.0.0.2/32"]
group = "staff"

[[networks]]
name = "lab"
cidrs = ["127.0.1.0/24"]
group = "guest"
"#;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Forwards to `upstream`, listens on a free loopback port, default limits.
fn config(upstream: SocketAddr) -> Config {
    let data_dir = tempfile::tempdir().unwrap().keep();
    let text = format!(
        "data_dir = {:?}\n[dashboard]\nlisten = []\n[dns]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nmode = \"forward\"\ntimeout_ms = 500\n[[upstream.servers]]\naddress = \"{upstream}\"\n[lists]\nupdate_hours = 0\n{NETWORKS}",
        data_dir.display().to_string()
    );
    Config::parse(&text, "hostile-clients").unwrap_or_else(|error| panic!("{error}\n{text}"))
}

async fn start() -> (Running, Authority, SocketAddr) {
    let zone = Zone::new("school.test.").a("www", "192.0.2.10").txt("www", "hello").a("blocked", "192.0.2.66");
    let authority = Authority::start("127.0.0.1:0", vec![zone]).await;
    let running = serve::start(&config(authority.addr)).await.unwrap();
    let server = running.tcp_addrs()[0];
    (running, authority, server)
}

/// A TCP connection from `source` (port chosen by the kernel), so one test
/// can be many clients: 127.0.0.0/8 is all loopback.
async fn connect_from(source: IpAddr, server: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    tokio::time::timeout(Duration::from_secs(3), socket.connect(server))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TCP connect timed out"))?
}

/// One query over a fresh TCP connection from `source`.
async fn tcp_query_from(source: IpAddr, server: SocketAddr, query: &Message) -> io::Result<Message> {
    let exchange = async {
        let mut stream = connect_from(source, server).await?;
        let bytes = query.to_vec().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await?;
        let len = stream.read_u16().await?;
        let mut buf = vec![0; usize::from(len)];
        stream.read_exact(&mut buf).await?;
        Message::from_vec(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no TCP answer within 3 s"))?
}

async fn insider_answer(server: SocketAddr) -> io::Result<Message> {
    tcp_query_from(ip("127.0.0.2"), server, &build_query("www.school.test", RecordType::A)).await
}

fn assert_answered(result: io::Result<Message>, what: &str) {
    let response = result.unwrap_or_else(|error| panic!("{what}: the insider got no TCP answer: {error}"));
    assert_eq!(response.metadata.response_code, ResponseCode::NoError, "{what}");
    assert!(
        response.answers.iter().any(|r| matches!(&r.data, RData::A(a) if a.0.to_string() == "192.0.2.10")),
        "{what}: {response:?}"
    );
}

/// Opens `count` connections from each of `sources` and keeps them (those
/// the server closes at once show up in [`open_count`]).
async fn hold(sources: &[IpAddr], count: usize, server: SocketAddr) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for source in sources {
        for _ in 0..count {
            match connect_from(*source, server).await {
                Ok(stream) => held.push(stream),
                Err(error) => panic!("connect from {source}: {error}"),
            }
        }
    }
    held
}

/// How many of `streams` the server has not closed (no EOF or reset yet).
fn open_count(streams: &[TcpStream]) -> usize {
    let mut buf = [0u8; 64];
    streams
        .iter()
        .filter(|stream| matches!(stream.try_read(&mut buf), Err(error) if error.kind() == io::ErrorKind::WouldBlock))
        .count()
}

/// Waits (bounded) until at most `at_most` of `streams` are open; the count.
async fn settle(streams: &[TcpStream], at_most: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let open = open_count(streams);
        if open <= at_most || tokio::time::Instant::now() >= deadline {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_holding_tcp_connections_does_not_lock_insiders_out() {
    let (running, authority, server) = start().await;
    // 127.0.0.9 is in no configured network.
    let held = hold(&[ip("127.0.0.9")], ATTACK_CONNECTIONS, server).await;
    assert_answered(insider_answer(server).await, "while an outsider holds 1,100 connections");

    // The outsider's connections take no slot: each gets a short time for one
    // query in a small pool of its own, and is closed.
    let open = settle(&held, 0).await;
    assert_eq!(open, 0, "the outsider still holds {open} connections");
    drop(held);
    // And an outsider asking over TCP is refused, as over UDP.
    let refused = tcp_query_from(ip("127.0.0.9"), server, &build_query("www.school.test", RecordType::A)).await;
    assert_eq!(refused.expect("an answer").metadata.response_code, ResponseCode::Refused);

    running.stop().await;
    authority.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insider_holds_only_its_share_of_tcp_connections() {
    let (running, authority, server) = start().await;
    // 127.0.0.1 is a pupil device: in a network, over its per-client limit.
    let held = hold(&[ip("127.0.0.1")], ATTACK_CONNECTIONS, server).await;
    let open = settle(&held, PER_CLIENT).await;
    assert!(open <= PER_CLIENT, "one client holds {open} connections (limit {PER_CLIENT})");
    assert!(open > 0, "the client keeps its share");
    assert_answered(insider_answer(server).await, "while a pupil device holds its share");

    running.stop().await;
    authority.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_shed_when_every_slot_is_taken() {
    let (running, authority, server) = start().await;
    // 70 lab machines, each at its per-client limit: 1,120 connections, more
    // than the 1,000 slots.
    let lab: Vec<IpAddr> = (1..=70).map(|host| ip(&format!("127.0.1.{host}"))).collect();
    let held = hold(&lab, PER_CLIENT, server).await;
    let open = settle(&held, 1_000).await;
    assert!(open <= 1_000, "{open} connections open past the cap of 1,000");
    // Every slot is taken by an idle connection: the insider's sheds one.
    assert_answered(insider_answer(server).await, "with every slot held by idle connections");
    // Under pressure idle connections also time out sooner (2 s), so on a slow
    // machine some may have gone already; when the table was full, one of
    // them must have been shed for the insider.
    if open == 1_000 {
        let after = settle(&held, open - 1).await;
        assert!(after < open, "a held connection was shed to make room ({after} of {open} still open)");
    }

    running.stop().await;
    authority.stop().await;
}

fn question(name: &str, record_type: RecordType) -> Question {
    Question { name: LowerName::from(Name::from_ascii(name).unwrap()), record_type, dnssec_ok: false }
}

#[tokio::test]
async fn any_and_meta_types_are_answered_without_upstream() {
    let (running, authority, tcp_server) = start().await;
    let server = running.udp_addrs()[0];
    let staff = ip("127.0.0.2");
    let before = authority.query_count();

    // ANY: the RFC 8482 minimal answer, one synthesized HINFO.
    for _ in 0..3 {
        let response =
            exchange_udp_from(staff, server, &build_query("www.school.test", RecordType::ANY)).await.unwrap();
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert_eq!(response.answers.len(), 1, "{response:?}");
        let RData::HINFO(hinfo) = &response.answers[0].data else { panic!("not HINFO: {response:?}") };
        assert_eq!((&*hinfo.cpu, &*hinfo.os), (&b"RFC8482"[..], &b""[..]));
        assert_eq!(response.answers[0].name.to_ascii().to_lowercase(), "www.school.test.");
    }

    // Meta types: NOTIMP, over UDP and TCP, every time.
    for record_type in
        [RecordType::AXFR, RecordType::IXFR, RecordType::from(0), RecordType::from(253), RecordType::from(254)]
    {
        for _ in 0..2 {
            let query = build_query("school.test", record_type);
            let response = exchange_udp_from(staff, server, &query).await.unwrap();
            assert_eq!(response.metadata.response_code, ResponseCode::NotImp, "{record_type} over UDP");
            assert_eq!(response.metadata.message_type, MessageType::Response);
            let response = tcp_query_from(staff, tcp_server, &query).await.unwrap();
            assert_eq!(response.metadata.response_code, ResponseCode::NotImp, "{record_type} over TCP");
        }
    }
    assert_eq!(authority.query_count(), before, "ANY and meta-type queries never reach upstream");

    // A blocked name is still blocked, whatever the type.
    let response =
        exchange_udp_from(staff, server, &build_query("blocked.school.test", RecordType::ANY)).await.unwrap();
    assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);
    assert!(response.answers.is_empty());

    // Each answer says why.
    let decide = |name: &str, record_type| match running.pipeline.decide(
        Requester::Source(staff),
        &question(name, record_type),
        false,
    ) {
        Flow::Final(answer) => answer.decision,
        Flow::Resolve(_) => panic!("{name} {record_type} would go upstream"),
    };
    let any = decide("www.school.test.", RecordType::ANY);
    assert_eq!((any.kind, any.stage), (DecisionKind::Allowed, Stage::QueryType));
    assert!(any.reason.contains("RFC 8482"), "{any}");
    let axfr = decide("school.test.", RecordType::AXFR);
    assert_eq!((axfr.kind, axfr.stage), (DecisionKind::Refused, Stage::QueryType));
    assert!(axfr.reason.contains("AXFR") && axfr.reason.contains("NOTIMP"), "{axfr}");
    let zero = decide("school.test.", RecordType::from(0));
    assert!(zero.reason.contains("TYPE0"), "{zero}");
    assert_eq!(decide("blocked.school.test.", RecordType::ANY).stage, Stage::Blocklist);
    // Ordinary types still go upstream.
    assert!(matches!(
        running.pipeline.decide(Requester::Source(staff), &question("www.school.test.", RecordType::TXT), false),
        Flow::Resolve(_)
    ));

    running.stop().await;
    authority.stop().await;
}
