//! SafeSearch and the bypass stage over real sockets, with the shipped
//! SafeSearch map (`lists/safesearch/rewrites.toml`) and seed lists, against
//! loopback authorities that stand in for the search engines.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use hedgerow::config::Config;
use hedgerow::serve::{self, Running};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::svcb::SvcParamKey;
use hickory_proto::rr::{RData, RecordType};
use support::authority::{Authority, Zone};
use support::client::query_udp_from;

const PUPIL: &str = "127.0.0.1"; // safesearch on, youtube strict, bypass on
const STAFF: &str = "127.0.0.2"; // safesearch on, youtube moderate, bypass off
const OPEN: &str = "127.0.0.3"; // a group with everything off
const ECH: &[u8] = b"unrestricted-host-ech-config";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// (safe host, its A, its AAAA)
const SAFE_HOSTS: &[(&str, &str, &str)] = &[
    ("forcesafesearch.google.com", "216.239.38.120", "2001:4860:4802:32::78"),
    ("restrict.youtube.com", "216.239.38.119", "2001:4860:4802:32::77"),
    ("restrictmoderate.youtube.com", "216.239.38.118", "2001:4860:4802:32::76"),
    ("strict.bing.com", "204.79.197.220", "2620:1ec:c11::220"),
    ("safe.duckduckgo.com", "52.142.124.215", "2a01:111:202c::215"),
    ("strict-safe-search.ecosia.org", "192.0.2.61", "2001:db8::61"),
    ("safe.search.brave.com", "192.0.2.62", "2001:db8::62"),
    ("safesearch.pixabay.com", "192.0.2.63", "2001:db8::63"),
];

/// (unrestricted host, the safe host it must be rewritten to for pupils)
const SERVICES: &[(&str, &str)] = &[
    ("www.google.com", "forcesafesearch.google.com"),
    ("google.com", "forcesafesearch.google.com"),
    ("www.google.co.uk", "forcesafesearch.google.com"),
    ("www.bing.com", "strict.bing.com"),
    ("edgeservices.bing.com", "strict.bing.com"),
    ("duckduckgo.com", "safe.duckduckgo.com"),
    ("start.duckduckgo.com", "safe.duckduckgo.com"),
    ("www.ecosia.org", "strict-safe-search.ecosia.org"),
    ("search.brave.com", "safe.search.brave.com"),
    ("pixabay.com", "safesearch.pixabay.com"),
    ("www.youtube.com", "restrict.youtube.com"),
    ("m.youtube.com", "restrict.youtube.com"),
    ("youtubei.googleapis.com", "restrict.youtube.com"),
    ("youtube.googleapis.com", "restrict.youtube.com"),
    ("www.youtube-nocookie.com", "restrict.youtube.com"),
];

/// One zone per registrable domain, holding the safe hosts and the
/// unrestricted hosts (with an HTTPS record carrying ECH, which must never
/// reach a pupil): the services above and every Google domain in the
/// shipped map.
fn engines() -> Vec<Zone> {
    // The zone a host lives in: a Google domain itself (google.com.au), or
    // the last two labels, three under co.uk.
    let apex_of = |host: &str| -> String {
        let bare = host.strip_prefix("www.").unwrap_or(host);
        if bare.starts_with("google.") {
            return bare.to_string();
        }
        let labels: Vec<&str> = host.split('.').collect();
        let keep = if host.ends_with(".co.uk") { 3 } else { 2 };
        labels[labels.len() - keep..].join(".")
    };
    let mut zones: std::collections::BTreeMap<String, Zone> = std::collections::BTreeMap::new();
    let mut add = |host: &str, build: &dyn Fn(Zone) -> Zone| {
        let apex = apex_of(host);
        let zone = zones.remove(&apex).unwrap_or_else(|| Zone::new(&format!("{apex}.")));
        zones.insert(apex, build(zone));
    };
    for (host, v4, v6) in SAFE_HOSTS {
        let owner = format!("{host}.");
        add(host, &|zone| zone.a(&owner, v4).aaaa(&owner, v6).https(&owner, &["h2"], None));
    }
    let unrestricted: std::collections::BTreeSet<String> = SERVICES
        .iter()
        .map(|(host, _)| host.to_string())
        .chain(google_names())
        .chain(["use-application-dns.net", "mask.icloud.com", "mask-h2.icloud.com", "dns.google"].map(String::from))
        .collect();
    for host in unrestricted {
        let owner = format!("{host}.");
        add(&host, &|zone| {
            zone.a(&owner, "198.51.100.1").aaaa(&owner, "2001:db8:bad::1").https(&owner, &["h3", "h2"], Some(ECH))
        });
    }
    let mut zones: Vec<Zone> = zones.into_values().collect();
    zones.push(Zone::new("resolver.arpa.").txt("_dns.resolver.arpa.", "ddr"));
    zones
}

fn config(upstream: SocketAddr, lists: &Path) -> Config {
    let data_dir = tempfile::tempdir().unwrap().keep();
    let rest = format!(
        r#"[groups.open]
safesearch = false
youtube = "off"
bypass = false
block = ["uksic"]
[[networks]]
name = "pupils"
cidrs = ["{PUPIL}/32"]
group = "pupil"
[[networks]]
name = "staff"
cidrs = ["{STAFF}/32"]
group = "staff"
[[networks]]
name = "open"
cidrs = ["{OPEN}/32"]
group = "open"
"#
    );
    support::config::forwarding(upstream, &data_dir, lists, &rest, "safesearch-test")
}

fn shipped_lists() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/lists"))
}

/// Every name of the Google rewrite in the shipped map
/// (`lists/safesearch/rewrites.toml`), read as TOML: www.google.com,
/// google.com, www.google.co.uk, google.co.uk, ... for every country domain.
fn google_names() -> Vec<String> {
    let path = shipped_lists().join("safesearch/rewrites.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let map: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let rewrites = map["rewrite"].as_array().expect("[[rewrite]] tables");
    let google: Vec<&toml::Table> =
        rewrites.iter().filter_map(|r| r.as_table()).filter(|r| r["service"].as_str() == Some("google")).collect();
    assert_eq!(google.len(), 1, "one Google rewrite in {}", path.display());
    let google = google[0];
    assert_eq!(google["setting"].as_str(), Some("safesearch"));
    assert_eq!(google["target"].as_str(), Some("forcesafesearch.google.com"));
    let names: Vec<String> =
        google["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect();
    for expected in ["www.google.com", "google.com", "www.google.co.uk", "google.co.uk", "www.google.com.au"] {
        assert!(names.iter().any(|n| n == expected), "{expected} is in the Google rewrite of {}", path.display());
    }
    names
}

async fn start() -> (Running, Authority) {
    let authority = Authority::start("127.0.0.1:0", engines()).await;
    let running = serve::start(&config(authority.addr, shipped_lists())).await.unwrap();
    (running, authority)
}

async fn ask(server: SocketAddr, from: &str, name: &str, record_type: RecordType) -> Message {
    query_udp_from(ip(from), server, name, record_type).await
}

fn cname_target(message: &Message) -> Option<String> {
    message.answers.iter().find_map(|r| match &r.data {
        RData::CNAME(target) => Some(target.0.to_ascii().trim_end_matches('.').to_string()),
        _ => None,
    })
}

fn addresses(message: &Message) -> Vec<String> {
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

fn safe_addresses(host: &str) -> (String, String) {
    let (_, v4, v6) = SAFE_HOSTS.iter().find(|(h, _, _)| *h == host).unwrap();
    (v4.to_string(), v6.parse::<std::net::Ipv6Addr>().unwrap().to_string())
}

#[tokio::test]
async fn every_service_is_rewritten_for_pupils_and_untouched_when_off() {
    let (running, authority) = start().await;
    let server = running.udp_addrs()[0];
    for (host, target) in SERVICES.iter().map(|(h, t)| (h.to_string(), t.to_string())) {
        let (v4, v6) = safe_addresses(&target);
        // A and AAAA: CNAME to the safe host, then its own addresses.
        let a = ask(server, PUPIL, &host, RecordType::A).await;
        assert_eq!(a.metadata.response_code, ResponseCode::NoError, "{host}");
        assert_eq!(cname_target(&a).as_deref(), Some(target.as_str()), "{host} A");
        assert_eq!(addresses(&a), vec![v4.clone()], "{host} A carries the safe host's address");
        assert_eq!(a.answers[0].record_type(), RecordType::CNAME, "CNAME first");
        let aaaa = ask(server, PUPIL, &host, RecordType::AAAA).await;
        assert_eq!(cname_target(&aaaa).as_deref(), Some(target.as_str()), "{host} AAAA");
        assert_eq!(addresses(&aaaa), vec![v6], "{host} AAAA");
        // HTTPS: the safe host's record, never the unrestricted host's ECH or alt-svc.
        let https = ask(server, PUPIL, &host, RecordType::HTTPS).await;
        assert_eq!(cname_target(&https).as_deref(), Some(target.as_str()), "{host} HTTPS");
        for record in &https.answers {
            if let RData::HTTPS(svcb) = &record.data {
                assert!(
                    svcb.0.svc_params.iter().all(|(key, _)| *key != SvcParamKey::EchConfigList),
                    "{host}: ECH leaked"
                );
                assert_eq!(
                    record.name.to_ascii().trim_end_matches('.'),
                    target,
                    "{host}: HTTPS record of the safe host"
                );
            }
        }
        assert!(
            https.answers.iter().any(|r| r.record_type() == RecordType::HTTPS),
            "{host}: safe host's HTTPS record follows"
        );

        // The group with everything off gets the real host, untouched.
        let open = ask(server, OPEN, &host, RecordType::A).await;
        assert_eq!(cname_target(&open), None, "{host} untouched for the open group");
        assert_eq!(addresses(&open), vec!["198.51.100.1".to_string()], "{host}");
        let open_https = ask(server, OPEN, &host, RecordType::HTTPS).await;
        assert!(open_https.answers.iter().any(|r| matches!(&r.data, RData::HTTPS(s) if s.0.svc_params.iter().any(|(k, _)| *k == SvcParamKey::EchConfigList))));
    }

    // Yandex is answered with its published address.
    let yandex = ask(server, PUPIL, "yandex.ru", RecordType::A).await;
    assert_eq!(addresses(&yandex), vec!["213.180.193.56".to_string()]);

    running.stop().await;
    authority.stop().await;
}

/// Every Google domain in the shipped map (a few hundred names: every
/// country domain, with and without www) is rewritten for pupils and left
/// alone for a group with SafeSearch off. One server, two queries a name.
#[tokio::test]
async fn every_google_domain_in_the_map_is_rewritten_for_pupils() {
    let (running, authority) = start().await;
    let server = running.udp_addrs()[0];
    let names = google_names();
    let (v4, _) = safe_addresses("forcesafesearch.google.com");
    for host in &names {
        let pupil = ask(server, PUPIL, host, RecordType::A).await;
        assert_eq!(pupil.metadata.response_code, ResponseCode::NoError, "{host}");
        assert_eq!(cname_target(&pupil).as_deref(), Some("forcesafesearch.google.com"), "{host} for pupils");
        assert_eq!(addresses(&pupil), vec![v4.clone()], "{host}: the safe host's address, never the real one");
        let open = ask(server, OPEN, host, RecordType::A).await;
        assert_eq!(cname_target(&open), None, "{host} untouched for the open group");
        assert_eq!(addresses(&open), vec!["198.51.100.1".to_string()], "{host} for the open group");
    }
    eprintln!("{} Google names checked", names.len());
    running.stop().await;
    authority.stop().await;
}

#[tokio::test]
async fn youtube_strict_and_moderate_land_on_the_right_hosts() {
    let (running, authority) = start().await;
    let server = running.udp_addrs()[0];
    for host in [
        "www.youtube.com",
        "m.youtube.com",
        "youtubei.googleapis.com",
        "youtube.googleapis.com",
        "www.youtube-nocookie.com",
    ] {
        let pupil = ask(server, PUPIL, host, RecordType::A).await;
        assert_eq!(cname_target(&pupil).as_deref(), Some("restrict.youtube.com"), "{host} pupil");
        let staff = ask(server, STAFF, host, RecordType::A).await;
        assert_eq!(cname_target(&staff).as_deref(), Some("restrictmoderate.youtube.com"), "{host} staff");
        assert_eq!(addresses(&staff), vec![safe_addresses("restrictmoderate.youtube.com").0]);
    }
    // Staff still get web SafeSearch (their own setting).
    let staff_google = ask(server, STAFF, "www.google.com", RecordType::A).await;
    assert_eq!(cname_target(&staff_google).as_deref(), Some("forcesafesearch.google.com"));
    running.stop().await;
    authority.stop().await;
}

#[tokio::test]
async fn an_unresolvable_safe_host_is_servfail_never_the_real_address() {
    // A map of our own: search.example.test -> safe.missing.test, which no
    // authority serves; the real host resolves.
    let lists = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(lists.path().join("safesearch")).unwrap();
    std::fs::write(
        lists.path().join("safesearch/rewrites.toml"),
        "[[rewrite]]\nservice = \"example\"\nsetting = \"safesearch\"\ntarget = \"safe.missing.test\"\nnames = [\"search.example.test\"]\n",
    )
    .unwrap();
    // A lists folder must declare a source (one with none is refused, as a
    // mistyped folder would be); one small list, unrelated to this test.
    std::fs::write(lists.path().join("games.txt"), "game.test\n").unwrap();
    std::fs::write(
        lists.path().join("local.toml"),
        "[[source]]\nid = \"local-games\"\ncategory = \"games\"\nformat = \"domains\"\npath = \"games.txt\"\n",
    )
    .unwrap();
    let authority = Authority::start("127.0.0.1:0", vec![Zone::new("example.test.").a("search", "198.51.100.9")]).await;
    let running = serve::start(&config(authority.addr, lists.path())).await.unwrap();
    let server = running.udp_addrs()[0];
    for record_type in [RecordType::A, RecordType::AAAA, RecordType::HTTPS] {
        let pupil = ask(server, PUPIL, "search.example.test", record_type).await;
        assert_eq!(pupil.metadata.response_code, ResponseCode::ServFail, "{record_type}");
        assert!(pupil.answers.is_empty(), "{record_type}: nothing of the real host");
    }
    let open = ask(server, OPEN, "search.example.test", RecordType::A).await;
    assert_eq!(addresses(&open), vec!["198.51.100.9".to_string()]);
    running.stop().await;
    authority.stop().await;
}

#[tokio::test]
async fn bypass_names_are_closed_for_pupils_and_resolve_with_the_stage_off() {
    let (running, authority) = start().await;
    let server = running.udp_addrs()[0];
    for name in ["use-application-dns.net", "mask.icloud.com", "mask-h2.icloud.com", "dns.google"] {
        let pupil = ask(server, PUPIL, name, RecordType::A).await;
        assert_eq!(pupil.metadata.response_code, ResponseCode::NXDomain, "{name} for pupils");
        let open = ask(server, OPEN, name, RecordType::A).await;
        assert_eq!(addresses(&open), vec!["198.51.100.1".to_string()], "{name} resolves with the bypass stage off");
    }
    // DDR discovery gets no answer (NODATA) for pupils, whatever the type.
    for record_type in [RecordType::SVCB, RecordType::TXT] {
        let pupil = ask(server, PUPIL, "_dns.resolver.arpa", record_type).await;
        assert_eq!(pupil.metadata.response_code, ResponseCode::NoError);
        assert!(pupil.answers.is_empty(), "{record_type}");
    }
    let open = ask(server, OPEN, "_dns.resolver.arpa", RecordType::TXT).await;
    assert_eq!(open.answers.len(), 1, "the open group reaches the real record");

    // Each is a Decision of kind bypass, not an ordinary block.
    let question = |name: &str| hedgerow::dns::Question {
        name: hickory_proto::rr::LowerName::from(hickory_proto::rr::Name::from_ascii(format!("{name}.")).unwrap()),
        record_type: RecordType::A,
        dnssec_ok: false,
    };
    for name in ["use-application-dns.net", "mask.icloud.com", "dns.google"] {
        let hedgerow::dns::Flow::Final(answer) =
            running.pipeline.decide(hedgerow::dns::Requester::Source(ip(PUPIL)), &question(name), false)
        else {
            panic!("{name} is settled by policy");
        };
        assert_eq!(answer.decision.kind, hedgerow::dns::DecisionKind::Bypass, "{name}");
    }
    running.stop().await;
    authority.stop().await;
}

/// dig, a real stub resolver, parses the synthesised answers as valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_accepts_the_synthesised_answers() {
    let (running, authority) = start().await;
    let server = running.udp_addrs()[0];
    for (name, record_type, expected) in [
        ("www.google.com", "A", "forcesafesearch.google.com."),
        ("www.youtube.com", "AAAA", "restrict.youtube.com."),
        ("www.bing.com", "HTTPS", "strict.bing.com."),
    ] {
        let output = tokio::process::Command::new("dig")
            .args([
                "-b",
                PUPIL,
                "-p",
                &server.port().to_string(),
                "@127.0.0.1",
                name,
                record_type,
                "+tries=1",
                "+time=3",
            ])
            .output()
            .await
            .expect("dig is installed (dnsutils)");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{text}");
        assert!(text.contains("status: NOERROR"), "{text}");
        assert!(text.contains(&format!("CNAME\t{expected}")), "{name}: {text}");
        assert!(
            text.lines().any(|line| line.starts_with(expected) && line.contains(&format!("\t{record_type}\t"))),
            "{name}: {text}"
        );
        assert!(!text.contains("WARNING") && !text.contains("malformed"), "{text}");
    }
    running.stop().await;
    authority.stop().await;
}
