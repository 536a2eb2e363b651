//! Proves the test support code works: the in-process authorities answer
//! correctly over UDP and TCP, stop for real, and serve a root -> test. ->
//! example.test. delegation chain that a real recursive resolver can follow.

mod support;

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Instant,
};

use hickory_proto::{
    op::{Edns, Message, OpCode, Query, ResponseCode},
    rr::{Name, RData, Record, RecordType},
};
use hickory_resolver::{
    net::runtime::TokioRuntimeProvider,
    recursor::{Recursor, RecursorOptions},
};
use support::{
    authority::{Authority, Zone},
    client::{
        build_query, exchange_udp, query_tcp, query_udp, query_udp_from, send_raw_udp, try_query_tcp, try_query_udp,
    },
};

fn example_zone() -> Zone {
    Zone::new("example.test.")
        .a("www", "192.0.2.10")
        .aaaa("www", "2001:db8::10")
        .cname("alias", "www")
        .txt("@", "hello hedgerow")
        .txt("long", &"x".repeat(300))
        .ttl(42)
        .a("short.example.test.", "192.0.2.42")
        .many_a("big", 60)
}

fn a_addrs(records: &[Record]) -> Vec<Ipv4Addr> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

fn names(records: &[Record], rtype: RecordType) -> Vec<String> {
    records.iter().filter(|r| r.record_type() == rtype).map(|r| r.name.to_string()).collect()
}

fn ns_targets(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::NS(ns) => Some(ns.0.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn answers_over_udp_and_tcp() {
    let auth = Authority::start("127.0.0.1:0", vec![example_zone()]).await;
    assert_ne!(auth.addr.port(), 0);
    assert_eq!(auth.query_count(), 0);

    for response in [
        query_udp(auth.addr, "www.example.test", RecordType::A).await,
        query_tcp(auth.addr, "www.example.test.", RecordType::A).await,
    ] {
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(response.metadata.authoritative);
        assert_eq!(a_addrs(&response.answers), [Ipv4Addr::new(192, 0, 2, 10)]);
        assert_eq!(response.answers[0].ttl, 300);
        assert_eq!(response.answers[0].name.to_string(), "www.example.test.");
    }
    assert_eq!(auth.query_count(), 2);
    auth.stop().await;
}

#[tokio::test]
async fn record_types_ttl_and_negative_answers() {
    let auth = Authority::start("127.0.0.1:0", vec![example_zone()]).await;

    let aaaa = query_udp(auth.addr, "www.example.test", RecordType::AAAA).await;
    assert!(matches!(&aaaa.answers[..], [r] if matches!(r.data, RData::AAAA(_))));

    // The in-memory handler chases in-zone CNAMEs itself.
    let alias = query_udp(auth.addr, "alias.example.test", RecordType::A).await;
    assert_eq!(names(&alias.answers, RecordType::CNAME), ["alias.example.test."]);
    assert_eq!(a_addrs(&alias.answers), [Ipv4Addr::new(192, 0, 2, 10)]);

    // TXT strings longer than 255 bytes are split into several character-strings.
    for (name, expected) in [("example.test", vec!["hello hedgerow".len()]), ("long.example.test", vec![255, 45])] {
        let txt = query_udp(auth.addr, name, RecordType::TXT).await;
        match &txt.answers[..] {
            [Record { data: RData::TXT(txt), .. }] => {
                let lens: Vec<usize> = txt.txt_data.iter().map(|s| s.len()).collect();
                assert_eq!(lens, expected, "{name}");
            }
            other => panic!("expected one TXT record at {name}, got {other:?}"),
        }
    }

    let short = query_udp(auth.addr, "short.example.test", RecordType::A).await;
    assert_eq!(short.answers[0].ttl, 42);

    // NXDOMAIN and NODATA carry the SOA, whose MINIMUM is the negative TTL.
    for (name, rcode) in [("nope.example.test", ResponseCode::NXDomain), ("www.example.test", ResponseCode::NoError)] {
        let response = query_udp(auth.addr, name, RecordType::MX).await;
        assert_eq!(response.metadata.response_code, rcode, "{name}");
        assert!(response.answers.is_empty());
        match &response.authorities[..] {
            [Record { data: RData::SOA(soa), ttl, .. }] => {
                assert_eq!(soa.minimum, 60);
                assert_eq!(*ttl, 60);
            }
            other => panic!("expected an SOA authority for {name}, got {other:?}"),
        }
    }

    // Names outside every served zone are refused.
    let refused = query_udp(auth.addr, "www.other.test", RecordType::A).await;
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    auth.stop().await;
}

#[tokio::test]
async fn large_answers_truncate_over_udp_only() {
    let auth = Authority::start("127.0.0.1:0", vec![example_zone()]).await;

    let udp = query_udp(auth.addr, "big.example.test", RecordType::A).await;
    assert!(udp.metadata.truncation, "60 A records must not fit in 512 bytes");
    assert!(udp.to_vec().unwrap().len() <= 512);

    // With a large EDNS buffer the whole answer fits in one datagram.
    let mut query = build_query("big.example.test", RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    query.set_edns(edns);
    let edns_udp = exchange_udp(auth.addr, &query).await.unwrap();
    assert!(!edns_udp.metadata.truncation);
    assert_eq!(edns_udp.answers.len(), 60);

    let tcp = query_tcp(auth.addr, "big.example.test", RecordType::A).await;
    assert!(!tcp.metadata.truncation);
    let addrs = a_addrs(&tcp.answers);
    assert_eq!(addrs.len(), 60);
    assert!(addrs.contains(&Ipv4Addr::new(10, 0, 0, 1)));
    assert!(addrs.contains(&Ipv4Addr::new(10, 0, 0, 60)));
    auth.stop().await;
}

#[tokio::test]
async fn client_can_bind_a_chosen_source_address() {
    let auth = Authority::start("127.0.0.1:0", vec![example_zone()]).await;
    let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let response = query_udp_from(from, auth.addr, "www.example.test", RecordType::A).await;
    assert_eq!(a_addrs(&response.answers), [Ipv4Addr::new(192, 0, 2, 10)]);
    auth.stop().await;
}

#[tokio::test]
async fn raw_udp_gets_raw_replies() {
    let auth = Authority::start("127.0.0.1:0", vec![example_zone()]).await;

    // A well-formed query sent as bytes comes back as a parseable response.
    let query = build_query("www.example.test", RecordType::A);
    let reply = send_raw_udp(auth.addr, &query.to_vec().unwrap()).await.expect("a reply to a valid query");
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(reply.metadata.id, query.metadata.id);
    assert_eq!(a_addrs(&reply.answers), [Ipv4Addr::new(192, 0, 2, 10)]);

    // A header promising a question that is not there gets FORMERR.
    let mut bogus = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    bogus.extend_from_slice(&[0x03, b'w', b'w']); // truncated label
    let reply = send_raw_udp(auth.addr, &bogus).await.expect("a FORMERR reply");
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(reply.metadata.id, 0x1234);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    auth.stop().await;
}

#[tokio::test]
async fn stop_closes_the_sockets() {
    let auth = Authority::start("127.0.0.1:0", vec![example_zone()]).await;
    let addr = auth.addr;
    query_udp(addr, "www.example.test", RecordType::A).await;
    auth.stop().await;

    let started = Instant::now();
    let udp = try_query_udp(addr, "www.example.test", RecordType::A).await;
    assert!(udp.is_err(), "UDP still answered after stop: {udp:?}");
    let tcp = try_query_tcp(addr, "www.example.test", RecordType::A).await;
    assert!(tcp.is_err(), "TCP still answered after stop: {tcp:?}");
    assert!(send_raw_udp(addr, &build_query("www.example.test", RecordType::A).to_vec().unwrap()).await.is_none());
    // Closed loopback ports fail fast (ICMP unreachable / RST), no 3 s timeouts.
    assert!(started.elapsed().as_secs() < 2, "took {:?}", started.elapsed());

    // The very same address can be served again straight away.
    let again = Authority::start(&addr.to_string(), vec![example_zone()]).await;
    assert_eq!(again.addr, addr);
    let response = query_tcp(addr, "www.example.test", RecordType::A).await;
    assert_eq!(a_addrs(&response.answers), [Ipv4Addr::new(192, 0, 2, 10)]);
    assert_eq!(again.query_count(), 1);
    again.stop().await;
}

/// A private DNS tree on port 53: root on 127.0.0.53, "test." on 127.0.0.54,
/// "example.test." on 127.0.0.55. Needs root (or CAP_NET_BIND_SERVICE).
#[tokio::test]
async fn delegation_chain_gives_referrals_with_glue() {
    let root =
        Authority::start("127.0.0.53:53", vec![Zone::new(".").ns("test.", "ns.test.").a("ns.test.", "127.0.0.54")])
            .await;
    let tld = Authority::start(
        "127.0.0.54:53",
        vec![Zone::new("test.").a("ns", "127.0.0.54").ns("example", "ns.example.test.").a("ns.example", "127.0.0.55")],
    )
    .await;
    let leaf = Authority::start("127.0.0.55:53", vec![example_zone().a("ns", "127.0.0.55")]).await;

    // Each parent refers to its child, for the child's NS (as an iterative
    // resolver asks) and for names below the cut; never authoritatively and
    // always with glue.
    for (server, qname, qtype, cut, ns_host, glue) in [
        (root.addr, "www.example.test", RecordType::A, "test.", "ns.test.", [127, 0, 0, 54]),
        (root.addr, "test", RecordType::NS, "test.", "ns.test.", [127, 0, 0, 54]),
        (root.addr, "ns.test", RecordType::A, "test.", "ns.test.", [127, 0, 0, 54]),
        (tld.addr, "www.example.test", RecordType::A, "example.test.", "ns.example.test.", [127, 0, 0, 55]),
        (tld.addr, "example.test", RecordType::NS, "example.test.", "ns.example.test.", [127, 0, 0, 55]),
    ] {
        for response in [query_udp(server, qname, qtype).await, query_tcp(server, qname, qtype).await] {
            let what = format!("{qname} {qtype} @{server}");
            assert_eq!(response.metadata.response_code, ResponseCode::NoError, "{what}");
            assert!(!response.metadata.authoritative, "{what}: referral must not be AA");
            assert!(response.answers.is_empty(), "{what}: {:?}", response.answers);
            assert_eq!(names(&response.authorities, RecordType::NS), [cut], "{what}");
            assert_eq!(ns_targets(&response.authorities), [ns_host], "{what}");
            assert_eq!(names(&response.additionals, RecordType::A), [ns_host], "{what}");
            assert_eq!(a_addrs(&response.additionals), [Ipv4Addr::from(glue)], "{what}");
        }
    }

    // Each server is authoritative for its own apex and data.
    let root_ns = query_udp(root.addr, ".", RecordType::SOA).await;
    assert!(root_ns.metadata.authoritative);
    assert_eq!(names(&root_ns.answers, RecordType::SOA), ["."]);
    let tld_ns = query_udp(tld.addr, "test", RecordType::NS).await;
    assert!(tld_ns.metadata.authoritative);
    assert_eq!(ns_targets(&tld_ns.answers), ["ns.test."]);
    assert_eq!(a_addrs(&tld_ns.additionals), [Ipv4Addr::new(127, 0, 0, 54)]);
    let answer = query_udp(leaf.addr, "www.example.test", RecordType::A).await;
    assert!(answer.metadata.authoritative);
    assert_eq!(a_addrs(&answer.answers), [Ipv4Addr::new(192, 0, 2, 10)]);
    // DS is answered by the parent side of the cut, not referred.
    let ds = query_udp(tld.addr, "example.test", RecordType::DS).await;
    assert!(ds.metadata.authoritative);
    assert!(ds.answers.is_empty());
    assert_eq!(names(&ds.authorities, RecordType::SOA), ["test."]);

    // hickory's own iterative resolver can walk the chain from the root.
    let mut options = RecursorOptions::default();
    options.deny_server.clear(); // loopback is denied by default
    let recursor =
        Recursor::with_options(&[IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53))], options, TokioRuntimeProvider::default())
            .expect("recursor");
    let before = (root.query_count(), tld.query_count(), leaf.query_count());
    let response = recursor
        .resolve(Query::query(Name::from_ascii("www.example.test.").unwrap(), RecordType::A), Instant::now(), false)
        .await
        .expect("recursive resolution through the private tree");
    assert_eq!(response.metadata.op_code, OpCode::Query);
    assert_eq!(a_addrs(&response.answers), [Ipv4Addr::new(192, 0, 2, 10)]);
    assert!(root.query_count() > before.0, "root was not asked");
    assert!(tld.query_count() > before.1, "test. was not asked");
    assert!(leaf.query_count() > before.2, "example.test. was not asked");

    for auth in [root, tld, leaf] {
        auth.stop().await;
    }
}

/// The TCP and UDP clients really send from the address they are given
/// (what the resolver's refusal tests rely on): a plain listener sees it.
#[tokio::test]
async fn client_sends_from_the_chosen_source_address_over_tcp_and_udp() {
    use support::client::{exchange_tcp_from, exchange_udp_from};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));
    let query = build_query("www.example.test", RecordType::A);
    let mut reply = query.clone();
    reply.metadata.message_type = hickory_proto::op::MessageType::Response;
    let reply = reply.to_vec().unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let tcp_reply = reply.clone();
    let peer = tokio::spawn(async move {
        let (mut stream, peer) = listener.accept().await.unwrap();
        let len = stream.read_u16().await.unwrap();
        let mut buf = vec![0; usize::from(len)];
        stream.read_exact(&mut buf).await.unwrap();
        stream.write_all(&(tcp_reply.len() as u16).to_be_bytes()).await.unwrap();
        stream.write_all(&tcp_reply).await.unwrap();
        peer
    });
    let response = exchange_tcp_from(from, server, &query).await.unwrap();
    assert_eq!(response.metadata.id, query.metadata.id);
    assert_eq!(peer.await.unwrap().ip(), from, "TCP peer address");

    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = socket.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let mut buf = vec![0; 512];
        let (_, peer) = socket.recv_from(&mut buf).await.unwrap();
        socket.send_to(&reply, peer).await.unwrap();
        peer
    });
    let response = exchange_udp_from(from, server, &query).await.unwrap();
    assert_eq!(response.metadata.id, query.metadata.id);
    assert_eq!(peer.await.unwrap().ip(), from, "UDP peer address");
}

/// `assert_reply_to` rejects an answer to another question (same ID), so a
/// test using it cannot pass on a stray reply.
#[test]
#[should_panic(expected = "answers another question")]
fn assert_reply_to_rejects_another_question() {
    let query = build_query("www.example.test", RecordType::A);
    let mut other = build_query("www.example.test", RecordType::AAAA);
    other.metadata.id = query.metadata.id;
    other.metadata.message_type = hickory_proto::op::MessageType::Response;
    support::client::assert_reply_to(&query, &other);
}
