//! The query log end to end: queries over real sockets become rows in a real
//! SQLite file, attributed to devices from the device table and from DHCP
//! leases files, for allowed, blocked, SafeSearch, bypass and refused answers.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use hedgerow::config::{Config, LeasesFormat};
use hedgerow::serve;
use hedgerow::store::{self, Device, Search};
use hickory_proto::rr::RecordType;
use support::authority::{Authority, Zone};
use support::client::query_udp_from;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// An ISC dhcpd lease time, `W YYYY/MM/DD HH:MM:SS` (UTC, weekday 0 = Sunday),
/// for Unix seconds.
fn isc_time(unix_seconds: i64) -> String {
    let iso = store::time::format_utc(unix_seconds * 1000); // 2026-11-30T10:00:00.000Z
    let weekday = (store::time::day_number(unix_seconds * 1000) + 4).rem_euclid(7); // 1970-01-01 was a Thursday
    format!("{weekday} {} {}", iso[..10].replace('-', "/"), &iso[11..19])
}

fn config(upstream: SocketAddr, data_dir: &Path) -> Config {
    let lists = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/lists"));
    let rest = r#"[log]
retention_days = 30
[[networks]]
name = "pupil-wifi"
cidrs = ["127.0.0.1/32", "127.0.0.5/32", "127.0.0.6/32", "127.0.0.7/32", "127.0.0.8/32"]
group = "pupil"
[[networks]]
name = "staff-lan"
cidrs = ["127.0.0.2/32"]
group = "staff"
"#;
    support::config::forwarding(upstream, data_dir, lists, rest, "log-test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_answer_is_logged_and_attributed() {
    let authority = Authority::start(
        "127.0.0.1:0",
        vec![
            Zone::new("school.test.").a("www", "192.0.2.10"),
            Zone::new("google.com.")
                .a("forcesafesearch.google.com.", "216.239.38.120")
                .a("www.google.com.", "198.51.100.1"),
        ],
    )
    .await;
    let data = tempfile::tempdir().unwrap();
    let config = config(authority.addr, data.path());
    let database = config.log.database.clone();

    // Devices named three ways: by hand, from a dnsmasq leases file, from an ISC one.
    std::fs::create_dir_all(data.path()).unwrap();
    store::devices::upsert_device(
        &database,
        &Device {
            ip: Some(ip("127.0.0.1")),
            mac: None,
            name: "LIB-PC-04".into(),
            owner: Some("Year 9: J. Smith".into()),
            group: None,
            source: "manual".into(),
        },
    )
    .unwrap();
    // Each file also holds a lease that ended yesterday, which must name nothing.
    let now = store::time::now_ms() / 1000;
    let (tomorrow, yesterday) = (now + 86_400, now - 86_400);
    let dnsmasq = data.path().join("dnsmasq.leases");
    std::fs::write(
        &dnsmasq,
        format!(
            "{tomorrow} 3c:22:fb:11:22:33 127.0.0.5 pupil-ipad-17 01:3c:22:fb:11:22:33\n\
             {yesterday} 3c:22:fb:11:22:44 127.0.0.7 old-phone 01:3c:22:fb:11:22:44\n"
        ),
    )
    .unwrap();
    assert_eq!(serve::import_leases_file(&database, &dnsmasq, LeasesFormat::Dnsmasq).unwrap(), 1, "the live lease");
    let isc = data.path().join("dhcpd.leases");
    std::fs::write(
        &isc,
        format!(
            "lease 127.0.0.6 {{\n  starts {};\n  ends {};\n  binding state active;\n  hardware ethernet 3c:22:fb:aa:bb:cc;\n  client-hostname \"chromebook-22\";\n}}\n\
             lease 127.0.0.8 {{\n  starts {};\n  ends {};\n  binding state active;\n  hardware ethernet 3c:22:fb:aa:bb:dd;\n  client-hostname \"old-chromebook\";\n}}\n",
            isc_time(now - 3600),
            isc_time(tomorrow),
            isc_time(now - 2 * 86_400),
            isc_time(yesterday),
        ),
    )
    .unwrap();
    assert_eq!(serve::import_leases_file(&database, &isc, LeasesFormat::Isc).unwrap(), 1, "the live lease");

    let running = serve::start(&config).await.unwrap();
    let server = running.udp_addrs()[0];
    let ask = |from: &'static str, name: &'static str| async move {
        query_udp_from(ip(from), server, name, RecordType::A).await
    };
    ask("127.0.0.1", "www.school.test").await; // allowed (upstream)
    ask("127.0.0.1", "www.school.test").await; // allowed (cache)
    ask("127.0.0.1", "www.bet365.com").await; // blocked, gambling
    ask("127.0.0.5", "www.google.com").await; // safesearch
    ask("127.0.0.6", "use-application-dns.net").await; // bypass
    ask("127.0.0.7", "www.school.test").await; // allowed, from the expired dnsmasq lease's address
    ask("127.0.0.8", "www.school.test").await; // allowed, from the expired ISC lease's address
    ask("127.0.0.9", "www.school.test").await; // refused: no network

    running.pipeline.log().expect("logging is on by default").flush();
    let rows = store::search::search(&database, &Search { limit: 100, ..Search::default() }).unwrap();
    let find = |name: &str, client: &str| {
        rows.iter()
            .find(|r| r.name == name && r.client == client)
            .unwrap_or_else(|| panic!("no row for {name} from {client}: {rows:#?}"))
    };

    let allowed: Vec<_> = rows.iter().filter(|r| r.name == "www.school.test" && r.client == "127.0.0.1").collect();
    assert_eq!(allowed.len(), 2);
    assert!(allowed.iter().all(|r| r.decision == "allowed" && r.group.as_deref() == Some("pupil")));
    assert!(allowed.iter().any(|r| r.cache_hit) && allowed.iter().any(|r| !r.cache_hit && r.upstream_ms.is_some()));
    assert_eq!(allowed[0].device.as_deref(), Some("LIB-PC-04"));
    assert_eq!(allowed[0].owner.as_deref(), Some("Year 9: J. Smith"));
    assert_eq!(allowed[0].network.as_deref(), Some("pupil-wifi"));

    let blocked = find("www.bet365.com", "127.0.0.1");
    assert_eq!(blocked.decision, "blocked");
    assert_eq!(blocked.category.as_deref(), Some("gambling"));
    assert_eq!(blocked.list.as_deref(), Some("hedgerow-gambling"));
    assert_eq!(blocked.response_code, 3, "NXDOMAIN");

    let safesearch = find("www.google.com", "127.0.0.5");
    assert_eq!(safesearch.decision, "safesearch");
    assert_eq!(safesearch.device.as_deref(), Some("pupil-ipad-17"), "named from the dnsmasq leases");

    let bypass = find("use-application-dns.net", "127.0.0.6");
    assert_eq!(bypass.decision, "bypass");
    assert_eq!(bypass.device.as_deref(), Some("chromebook-22"), "named from the ISC leases");

    for client in ["127.0.0.7", "127.0.0.8"] {
        let row = find("www.school.test", client);
        assert_eq!(row.decision, "allowed", "{client}");
        assert_eq!(row.device, None, "{client}: an expired lease names no device");
    }

    let refused = find("www.school.test", "127.0.0.9");
    assert_eq!(refused.decision, "refused");
    assert_eq!(refused.response_code, 5);
    assert_eq!(refused.group, None);

    // Searching by device name and by decision finds the same rows.
    let by_device =
        store::search::search(&database, &Search { client: Some("LIB-PC-04".into()), ..Search::default() }).unwrap();
    assert_eq!(by_device.len(), 3);
    let by_decision =
        store::search::search(&database, &Search { decision: Some("blocked".into()), ..Search::default() }).unwrap();
    assert_eq!(by_decision.len(), 1);

    running.stop().await;
    authority.stop().await;
}
