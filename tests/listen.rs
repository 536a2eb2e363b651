//! Listening as the README and examples/hedgerow.toml say: one IPv4 and one
//! IPv6 wildcard on the same port (`["0.0.0.0:53", "[::]:53"]`), here on a
//! free high port. On Linux `[::]` is dual-stack unless made IPv6-only, and
//! then collides with `0.0.0.0` on the same port.

mod support;

use std::net::{IpAddr, SocketAddr};

use hedgerow::config::Config;
use hedgerow::serve::{self, Running};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use support::authority::{Authority, Zone};
use support::client::{build_query, exchange_tcp, exchange_udp, exchange_udp_from};

/// True when this machine can talk to itself over IPv6 (`::1`).
fn has_ipv6_loopback() -> bool {
    std::net::UdpSocket::bind("[::1]:0").is_ok()
}

/// A port the OS just had free on 0.0.0.0; the caller retries if it is
/// taken by the time the server binds it.
fn free_port() -> u16 {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// Starts the config `make(port)` builds on a free port, retrying a few
/// times if another process takes the port first.
async fn start_on_free_port(make: impl Fn(u16) -> Config) -> (Running, u16) {
    let mut last_error = String::new();
    for _ in 0..10 {
        let port = free_port();
        match serve::start(&make(port)).await {
            Ok(running) => return (running, port),
            Err(error) => last_error = error.to_string(),
        }
    }
    panic!("could not start on a free port in 10 tries: {last_error}");
}

fn first_a(message: &Message) -> Option<IpAddr> {
    message.answers.iter().find_map(|record| match &record.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        _ => None,
    })
}

#[tokio::test]
async fn ipv4_and_ipv6_wildcards_on_one_port_both_serve() {
    if !has_ipv6_loopback() {
        eprintln!("SKIPPED: this machine has no IPv6 loopback (::1), so [::] cannot be tested here");
        return;
    }
    let authority = Authority::start("127.0.0.1:0", vec![Zone::new("school.test.").a("www", "192.0.2.10")]).await;
    let data_dir = tempfile::tempdir().unwrap();
    let (running, port) = start_on_free_port(|port| {
        let text = format!(
            r#"data_dir = {data:?}
[dashboard]
listen = []
[dns]
listen = ["0.0.0.0:{port}", "[::]:{port}"]
[upstream]
mode = "forward"
timeout_ms = 500
[[upstream.servers]]
address = "{upstream}"
[lists]
update_hours = 0
[[networks]]
name = "loopback"
cidrs = ["127.0.0.1/32", "::1/128"]
group = "staff"
"#,
            data = data_dir.path().display().to_string(),
            upstream = authority.addr,
        );
        Config::parse(&text, "listen-test").unwrap_or_else(|error| panic!("{error}\n{text}"))
    })
    .await;
    assert_eq!(running.udp_addrs().len(), 2, "one UDP socket per listen entry");

    for server in [SocketAddr::from(([127, 0, 0, 1], port)), format!("[::1]:{port}").parse().unwrap()] {
        let query = build_query("www.school.test", RecordType::A);
        let udp = exchange_udp(server, &query).await.unwrap_or_else(|e| panic!("UDP to {server}: {e}"));
        assert_eq!(udp.metadata.response_code, ResponseCode::NoError, "UDP to {server}");
        assert_eq!(first_a(&udp), Some("192.0.2.10".parse().unwrap()), "UDP to {server}");
        let tcp = exchange_tcp(server, &query).await.unwrap_or_else(|e| panic!("TCP to {server}: {e}"));
        assert_eq!(first_a(&tcp), Some("192.0.2.10".parse().unwrap()), "TCP to {server}");
    }

    running.stop().await;
    authority.stop().await;
}

/// Replaces `from` (which must be in the text, so a change to the example
/// shows up here) with `to`.
fn rewrite(text: &mut String, from: &str, to: &str) {
    assert!(text.contains(from), "examples/hedgerow.toml no longer contains {from:?}; update this test");
    *text = text.replace(from, to);
}

#[tokio::test]
async fn the_example_config_serves() {
    let manifest = env!("CARGO_MANIFEST_DIR");
    let example = std::fs::read_to_string(format!("{manifest}/examples/hedgerow.toml")).unwrap();
    let state = tempfile::tempdir().unwrap();
    let ipv6 = has_ipv6_loopback();
    if !ipv6 {
        eprintln!("NOTE: this machine has no IPv6 loopback (::1): serving the example on IPv4 only");
    }
    let (running, port) = start_on_free_port(|port| {
        let mut text = example.clone();
        let listen = if ipv6 {
            format!(r#"listen = ["0.0.0.0:{port}", "[::]:{port}"]"#)
        } else {
            format!(r#"listen = ["0.0.0.0:{port}"]"#)
        };
        rewrite(&mut text, r#"listen = ["0.0.0.0:53", "[::]:53"]"#, &listen);
        rewrite(
            &mut text,
            r#"data_dir = "/var/lib/hedgerow""#,
            &format!("data_dir = {:?}", state.path().display().to_string()),
        );
        rewrite(&mut text, r#"dir = "/usr/share/hedgerow/lists""#, &format!("dir = {:?}", format!("{manifest}/lists")));
        rewrite(
            &mut text,
            r#"leases_file = "/var/lib/misc/dnsmasq.leases""#,
            &format!("leases_file = {:?}", state.path().join("dnsmasq.leases").display().to_string()),
        );
        // No downloads in a test (there is no internet here).
        rewrite(&mut text, "update_hours = 24", "update_hours = 0");
        // Put this machine's loopback addresses in the staff network.
        rewrite(
            &mut text,
            r#"cidrs = ["10.20.0.0/16", "fd00:20::/64"]"#,
            r#"cidrs = ["10.20.0.0/16", "fd00:20::/64", "127.0.0.2/32", "::1/128"]"#,
        );
        // The example's dashboard listens on the staff network's address.
        rewrite(&mut text, r#"listen = ["10.20.0.1:8080"]"#, "listen = []");
        Config::parse(&text, "examples/hedgerow.toml (rewritten)").unwrap_or_else(|error| panic!("{error}\n{text}"))
    })
    .await;

    let mut servers = vec![SocketAddr::from(([127, 0, 0, 1], port))];
    if ipv6 {
        servers.push(format!("[::1]:{port}").parse().unwrap());
    }
    for server in servers {
        let staff: IpAddr = if server.is_ipv4() { "127.0.0.2".parse().unwrap() } else { "::1".parse().unwrap() };
        // The example's staff policy: deny tiktok.com, answered with the block page.
        let blocked = exchange_udp_from(staff, server, &build_query("www.tiktok.com", RecordType::A)).await.unwrap();
        assert_eq!(first_a(&blocked), Some("10.0.0.2".parse().unwrap()), "block page from {server}: {blocked:?}");
        // Over TCP the client's address is the kernel's choice: ::1 (staff)
        // for IPv6, 127.0.0.1 (in no network of the example) for IPv4.
        let over_tcp = exchange_tcp(server, &build_query("www.tiktok.com", RecordType::A)).await.unwrap();
        if server.is_ipv6() {
            assert_eq!(first_a(&over_tcp), Some("10.0.0.2".parse().unwrap()), "over TCP to {server}");
        } else {
            assert_eq!(over_tcp.metadata.response_code, ResponseCode::Refused, "over TCP to {server}");
        }
        // ANY is answered locally (no upstream needed).
        let any = exchange_udp_from(staff, server, &build_query("www.example.org", RecordType::ANY)).await.unwrap();
        assert!(matches!(any.answers.first().map(|r| &r.data), Some(RData::HINFO(_))), "{any:?}");
    }
    // 127.0.0.1 is in none of the example's networks.
    let outsider = exchange_udp_from(
        "127.0.0.1".parse().unwrap(),
        SocketAddr::from(([127, 0, 0, 1], port)),
        &build_query("www.tiktok.com", RecordType::A),
    )
    .await
    .unwrap();
    assert_eq!(outsider.metadata.response_code, ResponseCode::Refused);

    running.stop().await;
}
