//! The resolver core over real sockets: per-network identification, refusal
//! of outsiders, forward and recursive upstreams, failover, serve-stale, TCP
//! and truncation, and robustness against malformed packets.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hedgerow::config::Config;
use hedgerow::dns::{Flow, Question, Requester};
use hedgerow::serve::{self, Running};
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::{LowerName, Name, RData, RecordType};
use support::authority::{Authority, Zone};
use support::client::{
    assert_reply_to, build_query, exchange_tcp, exchange_tcp_from, exchange_udp, exchange_udp_from, query_tcp,
    query_udp, query_udp_from, send_raw_udp,
};

const DEMO_NETWORKS: &str = r#"
[[networks]]
name = "pupil-net"
cidrs = ["127.0.0.1/32"]
group = "pupil"

[[networks]]
name = "staff-net"
cidrs = ["127.0.0.2/32"]
group = "staff"

[[networks]]
name = "guest-net"
cidrs = ["127.0.0.3/32"]
group = "guest"
"#;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A config forwarding to `upstreams`, listening on a free loopback port.
fn forward_config(upstreams: &[SocketAddr], extra: &str) -> Config {
    let data_dir = tempfile::tempdir().unwrap().keep();
    let mut text = format!(
        "data_dir = {:?}\n[dashboard]\nlisten = []\n[dns]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nmode = \"forward\"\ntimeout_ms = 400\n",
        data_dir.display().to_string()
    );
    for upstream in upstreams {
        text.push_str(&format!("[[upstream.servers]]\naddress = \"{upstream}\"\n"));
    }
    text.push_str(extra);
    text.push_str(DEMO_NETWORKS);
    Config::parse(&text, "test").unwrap_or_else(|error| panic!("{error}\n{text}"))
}

fn school_zone() -> Zone {
    Zone::new("school.test.")
        .a("www", "192.0.2.10")
        .aaaa("www", "2001:db8::10")
        .cname("intranet", "www.school.test.")
        .many_a("big", 100)
}

fn first_a(message: &Message) -> Option<IpAddr> {
    message.answers.iter().find_map(|record| match &record.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        _ => None,
    })
}

fn dns_addr(running: &Running) -> SocketAddr {
    running.udp_addrs()[0]
}

#[tokio::test]
async fn each_group_resolves_and_an_outsider_is_refused() {
    let authority = Authority::start("127.0.0.1:0", vec![school_zone()]).await;
    let config = forward_config(&[authority.addr], "");
    let running = serve::start(&config).await.unwrap();
    let server = dns_addr(&running);

    for client in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        let response = query_udp_from(ip(client), server, "www.school.test", RecordType::A).await;
        assert_eq!(response.metadata.response_code, ResponseCode::NoError, "client {client}");
        assert_eq!(first_a(&response), Some(ip("192.0.2.10")), "client {client}");
        assert!(response.metadata.recursion_available);
    }

    // The pipeline attributes each source to its network's group.
    let question = Question {
        name: LowerName::from(Name::from_ascii("www.school.test.").unwrap()),
        record_type: RecordType::A,
        dnssec_ok: false,
    };
    for (client, group) in [("127.0.0.1", "pupil"), ("127.0.0.2", "staff"), ("127.0.0.3", "guest")] {
        let Flow::Resolve(pending) = running.pipeline.decide(Requester::Source(ip(client)), &question, false) else {
            panic!("{client} should be let through");
        };
        assert_eq!(&*pending.client.group, group);
    }

    // 127.0.0.4 is loopback but in no configured network.
    let refused = query_udp_from(ip("127.0.0.4"), server, "www.school.test", RecordType::A).await;
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    assert!(refused.answers.is_empty());
    let before = authority.query_count();
    let refused = query_udp_from(ip("127.0.0.4"), server, "other.school.test", RecordType::A).await;
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    assert_eq!(authority.query_count(), before, "a refused query must not reach upstream");

    running.stop().await;
    authority.stop().await;
}

/// The same refusal over TCP, where the source is the connection's peer:
/// an outsider's connection gets REFUSED and nothing goes upstream, while
/// each insider on its own connection gets the answer.
#[tokio::test]
async fn an_outsider_is_refused_over_tcp_and_insiders_are_answered() {
    let authority = Authority::start("127.0.0.1:0", vec![school_zone()]).await;
    let running = serve::start(&forward_config(&[authority.addr], "")).await.unwrap();
    let server = running.tcp_addrs()[0];

    // 127.0.0.9 is loopback but in no configured network (DEMO_NETWORKS: .1-.3).
    let outsider = ip("127.0.0.9");
    for name in ["www.school.test", "big.school.test", "never-asked.school.test"] {
        let before = authority.query_count();
        let query = build_query(name, RecordType::A);
        let refused = exchange_tcp_from(outsider, server, &query)
            .await
            .unwrap_or_else(|error| panic!("an outsider gets an answer (REFUSED) over TCP for {name}: {error}"));
        assert_reply_to(&query, &refused);
        assert_eq!(refused.metadata.response_code, ResponseCode::Refused, "{name} from {outsider}");
        assert!(refused.answers.is_empty(), "{name}: a refusal carries no records");
        assert_eq!(authority.query_count(), before, "{name}: a refused TCP query must not reach upstream");
    }

    for client in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        let before = authority.query_count();
        let query = build_query("www.school.test", RecordType::AAAA);
        let answer = exchange_tcp_from(ip(client), server, &query).await.unwrap();
        assert_reply_to(&query, &answer);
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError, "client {client}");
        assert!(matches!(answer.answers[0].data, RData::AAAA(_)), "client {client}: {answer:?}");
        if client == "127.0.0.1" {
            assert!(authority.query_count() > before, "the first insider's query went upstream");
        }
    }
    // The 100-record answer that UDP truncates arrives whole over TCP for an insider.
    let query = build_query("big.school.test", RecordType::A);
    let big = exchange_tcp_from(ip("127.0.0.2"), server, &query).await.unwrap();
    assert_reply_to(&query, &big);
    assert_eq!(big.answers.len(), 100);

    running.stop().await;
    authority.stop().await;
}

#[tokio::test]
async fn negative_answers_pass_through_and_are_cached() {
    let authority = Authority::start("127.0.0.1:0", vec![school_zone()]).await;
    let running = serve::start(&forward_config(&[authority.addr], "")).await.unwrap();
    let server = dns_addr(&running);

    let nx = query_udp(server, "missing.school.test", RecordType::A).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(nx.authorities.iter().any(|r| r.record_type() == RecordType::SOA), "NXDOMAIN carries the SOA");

    let nodata = query_udp(server, "www.school.test", RecordType::TXT).await;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());

    let cname = query_udp(server, "intranet.school.test", RecordType::A).await;
    assert!(cname.answers.iter().any(|r| r.record_type() == RecordType::CNAME));
    assert_eq!(first_a(&cname), Some(ip("192.0.2.10")));

    let asked = authority.query_count();
    let again = query_udp(server, "missing.school.test", RecordType::A).await;
    assert_eq!(again.metadata.response_code, ResponseCode::NXDomain);
    let again = query_udp(server, "www.school.test", RecordType::TXT).await;
    assert_eq!(again.metadata.response_code, ResponseCode::NoError);
    assert_eq!(authority.query_count(), asked, "negative answers come from the cache");

    running.stop().await;
    authority.stop().await;
}

#[tokio::test]
async fn forward_mode_fails_over_then_serves_stale_then_recovers() {
    let zone = || Zone::new("school.test.").ttl(1).a("www", "192.0.2.10").a("fresh", "192.0.2.11");
    let first = Authority::start("127.0.0.1:0", vec![zone()]).await;
    let second = Authority::start("127.0.0.1:0", vec![zone()]).await;
    let second_addr = second.addr;
    let running = serve::start(&forward_config(&[first.addr, second.addr], "")).await.unwrap();
    let server = dns_addr(&running);

    // Both up: the first (preferred) server answers.
    let response = query_udp(server, "www.school.test", RecordType::A).await;
    assert_eq!(first_a(&response), Some(ip("192.0.2.10")));
    assert!(first.query_count() >= 1);

    // The first goes down: the second answers.
    first.stop().await;
    let before = second.query_count();
    let response = query_udp(server, "fresh.school.test", RecordType::A).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert_eq!(first_a(&response), Some(ip("192.0.2.11")));
    assert!(second.query_count() > before, "the second upstream took over");

    // Both down, and the cached answer has expired (TTL 1): served stale.
    second.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stale = query_udp(server, "www.school.test", RecordType::A).await;
    assert_eq!(stale.metadata.response_code, ResponseCode::NoError);
    assert_eq!(first_a(&stale), Some(ip("192.0.2.10")));
    assert_eq!(stale.answers[0].ttl, 30, "stale answers carry the RFC 8767 TTL");

    // A name never seen cannot be served stale: SERVFAIL, not a hang.
    let unknown = query_udp(server, "never.school.test", RecordType::A).await;
    assert_eq!(unknown.metadata.response_code, ResponseCode::ServFail);

    // One upstream returns. `www` failed to refresh moments ago, so it stays
    // stale without asking again for 30 s (RFC 8767 failure recheck).
    let back = Authority::start(&second_addr.to_string(), vec![zone()]).await;
    let rechecked = query_udp(server, "www.school.test", RecordType::A).await;
    assert_eq!(rechecked.answers[0].ttl, 30, "no new attempt within the failure recheck time");
    // A miss asks every server, those marked down last: the one that came
    // back answers and is marked up; then answers are fresh again.
    let nx = query_udp(server, "gone.school.test", RecordType::A).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    let fresh = query_udp(server, "fresh.school.test", RecordType::A).await;
    assert_eq!(fresh.metadata.response_code, ResponseCode::NoError);
    assert!(fresh.answers[0].ttl <= 1, "a fresh answer has the zone's TTL, got {}", fresh.answers[0].ttl);
    assert!(back.query_count() >= 2);

    running.stop().await;
    back.stop().await;
}

#[tokio::test]
async fn tcp_and_udp_answer_and_large_answers_truncate_over_udp() {
    let authority = Authority::start("127.0.0.1:0", vec![school_zone()]).await;
    let running = serve::start(&forward_config(&[authority.addr], "")).await.unwrap();
    let udp = dns_addr(&running);
    let tcp = running.tcp_addrs()[0];

    let over_tcp = query_tcp(tcp, "www.school.test", RecordType::AAAA).await;
    assert_eq!(over_tcp.metadata.response_code, ResponseCode::NoError);
    assert!(matches!(over_tcp.answers[0].data, RData::AAAA(_)));

    // 100 A records do not fit in 512 bytes (no EDNS) nor in 1232 (EDNS).
    let truncated = query_udp(udp, "big.school.test", RecordType::A).await;
    assert!(truncated.metadata.truncation, "TC set for a 512-byte client");
    let mut with_edns = build_query("big.school.test", RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    with_edns.set_edns(edns);
    let truncated = exchange_udp(udp, &with_edns).await.unwrap();
    assert!(truncated.metadata.truncation, "TC set past the EDNS buffer");
    assert!(truncated.edns.is_some(), "EDNS is echoed");

    let full = query_tcp(tcp, "big.school.test", RecordType::A).await;
    assert!(!full.metadata.truncation);
    assert_eq!(full.answers.len(), 100);

    // A small answer to an EDNS query fits and carries OPT back.
    let mut small = build_query("www.school.test", RecordType::A);
    small.set_edns(Edns::new());
    let small = exchange_udp(udp, &small).await.unwrap();
    assert!(!small.metadata.truncation);
    assert!(small.edns.is_some());

    running.stop().await;
    authority.stop().await;
}

#[tokio::test]
async fn malformed_packets_do_not_stop_the_server() {
    let authority = Authority::start("127.0.0.1:0", vec![school_zone()]).await;
    let running = serve::start(&forward_config(&[authority.addr], "")).await.unwrap();
    let server = dns_addr(&running);

    // Garbage shorter than a header: dropped (no answer is possible).
    let _ = send_raw_udp(server, b"\x01\x02\x03").await;
    // Random garbage with a plausible header: FORMERR or dropped.
    let garbage: Vec<u8> = (0..300u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    if let Some(reply) = send_raw_udp(server, &garbage).await {
        let reply = Message::from_vec(&reply).expect("a reply is a DNS message");
        assert_ne!(reply.metadata.response_code, ResponseCode::NoError);
    }
    // A valid query cut short in the middle of its question: FORMERR.
    let query = build_query("www.school.test", RecordType::A).to_vec().unwrap();
    let reply = send_raw_udp(server, &query[..query.len() - 3]).await.expect("a truncated query gets an answer");
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    // Two questions in one message: FORMERR.
    let mut two = build_query("www.school.test", RecordType::A);
    two.add_query(hickory_proto::op::Query::query(Name::from_ascii("x.school.test.").unwrap(), RecordType::A));
    let reply = exchange_udp(server, &two).await.unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    // An unknown record type is passed on and answered (NODATA here).
    let unknown = query_udp(server, "www.school.test", RecordType::Unknown(65_280)).await;
    assert_eq!(unknown.metadata.response_code, ResponseCode::NoError);
    assert!(unknown.answers.is_empty());

    // Still serving, over both transports.
    let response = query_udp(server, "www.school.test", RecordType::A).await;
    assert_eq!(first_a(&response), Some(ip("192.0.2.10")));
    let response = query_tcp(running.tcp_addrs()[0], "www.school.test", RecordType::A).await;
    assert_eq!(first_a(&response), Some(ip("192.0.2.10")));

    running.stop().await;
    authority.stop().await;
}

#[tokio::test]
async fn rate_limit_is_per_client() {
    let authority = Authority::start("127.0.0.1:0", vec![school_zone()]).await;
    let extra = "[rate_limit]\nqueries_per_second = 2\nburst = 5\nexempt_loopback = false\n";
    let running = serve::start(&forward_config(&[authority.addr], extra)).await.unwrap();
    let server = dns_addr(&running);

    let mut refused = 0;
    for _ in 0..15 {
        let response = query_udp_from(ip("127.0.0.2"), server, "www.school.test", RecordType::A).await;
        if response.metadata.response_code == ResponseCode::Refused {
            refused += 1;
        }
    }
    assert!(refused >= 8, "a client past its burst is refused ({refused} of 15)");
    let neighbour = query_udp_from(ip("127.0.0.3"), server, "www.school.test", RecordType::A).await;
    assert_eq!(neighbour.metadata.response_code, ResponseCode::NoError, "another client is unaffected");

    running.stop().await;
    authority.stop().await;
}

#[tokio::test]
async fn ipv6_listener_and_network() {
    let authority = Authority::start("127.0.0.1:0", vec![school_zone()]).await;
    let text = format!(
        "data_dir = {:?}\n[dashboard]\nlisten = []\n[dns]\nlisten = [\"[::1]:0\"]\n[upstream]\nmode = \"forward\"\n[[upstream.servers]]\naddress = \"{}\"\n[[networks]]\nname = \"v6-pupils\"\ncidrs = [\"::1/128\"]\ngroup = \"pupil\"\n",
        tempfile::tempdir().unwrap().keep().display().to_string(),
        authority.addr
    );
    let running = serve::start(&Config::parse(&text, "v6").unwrap()).await.unwrap();
    let server = dns_addr(&running);
    assert!(server.is_ipv6());
    let response =
        exchange_udp_from(ip("::1"), server, &build_query("www.school.test", RecordType::AAAA)).await.unwrap();
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert!(matches!(response.answers[0].data, RData::AAAA(_)));
    let over_tcp = exchange_tcp(running.tcp_addrs()[0], &build_query("www.school.test", RecordType::A)).await.unwrap();
    assert_eq!(first_a(&over_tcp), Some(ip("192.0.2.10")));

    running.stop().await;
    authority.stop().await;
}

/// Recursion from a private root: root (127.0.0.53) -> test. (127.0.0.54)
/// -> example.test. (127.0.0.55), all on port 53 as the recursor requires;
/// plus an internal zone sent to its own server by conditional forwarding.
#[tokio::test]
async fn recursive_mode_resolves_through_a_private_root() {
    let root =
        Authority::start("127.0.0.53:53", vec![Zone::new(".").ns("test.", "ns.test.").a("ns.test.", "127.0.0.54")])
            .await;
    let tld = Authority::start(
        "127.0.0.54:53",
        vec![Zone::new("test.").ns("example.test.", "ns.example.test.").a("ns.example.test.", "127.0.0.55")],
    )
    .await;
    let zone = Authority::start(
        "127.0.0.55:53",
        vec![Zone::new("example.test.").a("www", "192.0.2.80").cname("alias", "www.example.test.")],
    )
    .await;
    let internal = Authority::start("127.0.0.1:0", vec![Zone::new("school.internal.").a("mis", "10.0.0.20")]).await;

    let text = format!(
        "data_dir = {:?}\n[dashboard]\nlisten = []\n[dns]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nmode = \"recursive\"\nroot_hints = [\"127.0.0.53\"]\n[[upstream.conditional]]\nzone = \"school.internal\"\nservers = [{{ address = \"{}\" }}]\n{DEMO_NETWORKS}",
        tempfile::tempdir().unwrap().keep().display().to_string(),
        internal.addr
    );
    let running = serve::start(&Config::parse(&text, "recursive").unwrap()).await.unwrap();
    let server = dns_addr(&running);

    let response = query_udp(server, "www.example.test", RecordType::A).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NoError, "{response:?}");
    assert_eq!(first_a(&response), Some(ip("192.0.2.80")));
    assert!(root.query_count() >= 1 && tld.query_count() >= 1 && zone.query_count() >= 1, "every level was asked");

    let nx = query_udp(server, "nothing.example.test", RecordType::A).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);

    let internal_answer = query_udp(server, "mis.school.internal", RecordType::A).await;
    assert_eq!(first_a(&internal_answer), Some(ip("10.0.0.20")));
    assert!(internal.query_count() >= 1);

    running.stop().await;
    for authority in [root, tld, zone, internal] {
        authority.stop().await;
    }
}
