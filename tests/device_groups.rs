//! The device table's `group` decides a registered device's policy wherever
//! it is on the school's networks, over real UDP: a teacher's laptop on the
//! pupil network gets staff policy, after a reload through the control
//! channel or from start-up. The access check is unchanged.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hedgerow::config::Config;
use hedgerow::control::{self, Request};
use hedgerow::dns::{Flow, Question, Requester};
use hedgerow::serve;
use hedgerow::store::Device;
use hedgerow::store::devices::upsert_device;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{LowerName, Name, RecordType};
use support::authority::{Authority, Zone};
use support::client::query_udp_from;

const PUPIL_LAPTOP: &str = "127.0.0.1";
const OTHER_PUPIL: &str = "127.0.0.3";
const OUTSIDER: &str = "127.0.0.4";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn world() -> Zone {
    Zone::new("test.").a("game.test.", "192.0.2.1").a("casino.test.", "192.0.2.3")
}

/// games (game.test): blocked for pupils, allowed for staff; gambling
/// (casino.test): blocked for everyone.
fn write_lists(dir: &Path) {
    std::fs::write(dir.join("games.txt"), "game.test\n").unwrap();
    std::fs::write(dir.join("gambling.txt"), "casino.test\n").unwrap();
    std::fs::write(
        dir.join("sources.toml"),
        "[[source]]\nid = \"t-games\"\ncategory = \"games\"\nformat = \"domains\"\npath = \"games.txt\"\n\n\
         [[source]]\nid = \"t-gambling\"\ncategory = \"gambling\"\nformat = \"domains\"\npath = \"gambling.txt\"\n",
    )
    .unwrap();
}

fn config(upstream: SocketAddr, data: &Path, lists: &Path) -> Config {
    let networks = format!(
        "[[networks]]\nname = \"pupil-wifi\"\ncidrs = [\"{PUPIL_LAPTOP}/32\", \"{OTHER_PUPIL}/32\"]\ngroup = \"pupil\"\n\
         [[networks]]\nname = \"staff-lan\"\ncidrs = [\"127.0.0.2/32\"]\ngroup = \"staff\"\n"
    );
    support::config::forwarding(upstream, data, lists, &networks, "device-groups-test")
}

fn laptop(ip_text: &str) -> Device {
    Device {
        ip: Some(ip(ip_text)),
        mac: None,
        name: format!("T-laptop {ip_text}"),
        owner: Some("Ms Smith".into()),
        group: Some("staff".into()),
        source: "manual".into(),
    }
}

async fn ask(server: SocketAddr, from: &str, name: &str) -> Message {
    query_udp_from(ip(from), server, name, RecordType::A).await
}

fn question(name: &str) -> Question {
    Question { name: LowerName::from(Name::from_ascii(name).unwrap()), record_type: RecordType::A, dnssec_ok: false }
}

async fn reload(data: &Path) -> control::ReloadReport {
    let data = data.to_path_buf();
    tokio::task::spawn_blocking(move || control::request(&data, Request::Reload, Duration::from_secs(60)))
        .await
        .unwrap()
        .unwrap()
        .reload
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staff_laptop_on_the_pupil_network_gets_staff_policy_after_a_reload() {
    let authority = Authority::start("127.0.0.1:0", vec![world()]).await;
    let dir = tempfile::tempdir().unwrap();
    let (data, lists) = (dir.path().join("data"), dir.path().join("lists"));
    std::fs::create_dir_all(&lists).unwrap();
    write_lists(&lists);
    let config = config(authority.addr, &data, &lists);
    let running = serve::start(&config).await.unwrap();
    let server = running.udp_addrs()[0];

    // Unregistered, the laptop is a pupil: games are blocked.
    assert_eq!(ask(server, PUPIL_LAPTOP, "game.test").await.metadata.response_code, ResponseCode::NXDomain);

    upsert_device(&config.log.database, &laptop(PUPIL_LAPTOP)).unwrap();
    // An outsider cannot get in by being in the device table.
    upsert_device(&config.log.database, &laptop(OUTSIDER)).unwrap();
    let report = reload(&data).await;
    assert_eq!(report.devices.applied, 1, "{report:?}");
    assert!(report.devices.skipped[0].contains("in no configured network"), "{report:?}");

    // Registered with group staff: games allowed, gambling still blocked.
    let allowed = ask(server, PUPIL_LAPTOP, "game.test").await;
    assert_eq!(allowed.metadata.response_code, ResponseCode::NoError);
    assert_eq!(allowed.answers.len(), 1);
    assert_eq!(ask(server, PUPIL_LAPTOP, "casino.test").await.metadata.response_code, ResponseCode::NXDomain);
    // Another pupil on the same network is still a pupil; the outsider is refused.
    assert_eq!(ask(server, OTHER_PUPIL, "game.test").await.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(ask(server, OUTSIDER, "game.test").await.metadata.response_code, ResponseCode::Refused);

    // The decision names the network, the group, and where the group came from.
    let Flow::Resolve(pending) =
        running.pipeline.decide(Requester::Source(ip(PUPIL_LAPTOP)), &question("game.test."), false)
    else {
        panic!("game.test is allowed for staff");
    };
    assert_eq!(&*pending.client.network, "pupil-wifi");
    assert_eq!(&*pending.client.group, "staff");
    assert_eq!(pending.client.device.as_deref(), Some("T-laptop 127.0.0.1"));
    let Flow::Final(blocked) =
        running.pipeline.decide(Requester::Source(ip(PUPIL_LAPTOP)), &question("casino.test."), false)
    else {
        panic!("casino.test is blocked for everyone");
    };
    let decision = &blocked.decision;
    assert_eq!(decision.network.as_deref(), Some("pupil-wifi"));
    assert_eq!(decision.group.as_deref(), Some("staff"));
    assert_eq!(decision.device.as_deref(), Some("T-laptop 127.0.0.1"));
    assert!(decision.to_string().contains("group staff (from the device table: T-laptop 127.0.0.1)"), "{decision}");

    // Removing the group (and reloading) makes it a pupil again.
    upsert_device(&config.log.database, &Device { group: None, ..laptop(PUPIL_LAPTOP) }).unwrap();
    assert_eq!(reload(&data).await.devices.applied, 0);
    assert_eq!(ask(server, PUPIL_LAPTOP, "game.test").await.metadata.response_code, ResponseCode::NXDomain);
    running.stop().await;
    authority.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_groups_apply_from_start_up() {
    let authority = Authority::start("127.0.0.1:0", vec![world()]).await;
    let dir = tempfile::tempdir().unwrap();
    let (data, lists) = (dir.path().join("data"), dir.path().join("lists"));
    std::fs::create_dir_all(&lists).unwrap();
    write_lists(&lists);
    let config = config(authority.addr, &data, &lists);
    std::fs::create_dir_all(&data).unwrap();
    upsert_device(&config.log.database, &laptop(PUPIL_LAPTOP)).unwrap();

    let running = serve::start(&config).await.unwrap();
    let server = running.udp_addrs()[0];
    assert_eq!(ask(server, PUPIL_LAPTOP, "game.test").await.metadata.response_code, ResponseCode::NoError);
    assert_eq!(ask(server, OTHER_PUPIL, "game.test").await.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(running.pipeline.device_groups(), 1);
    running.stop().await;
    authority.stop().await;
}

/// A device known only by MAC gets its address from a DHCP lease; the
/// server notices the changed table by itself (no reload) and applies the
/// device's group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_gives_a_mac_only_device_its_address_and_the_server_picks_it_up() {
    use hedgerow::store::devices::{import_leases, parse_dnsmasq_leases};
    let authority = Authority::start("127.0.0.1:0", vec![world()]).await;
    let dir = tempfile::tempdir().unwrap();
    let (data, lists) = (dir.path().join("data"), dir.path().join("lists"));
    std::fs::create_dir_all(&lists).unwrap();
    write_lists(&lists);
    let config = config(authority.addr, &data, &lists);
    let running = serve::start(&config).await.unwrap();
    let server = running.udp_addrs()[0];
    let database = &config.log.database;
    let by_mac = Device { ip: None, mac: Some("02:00:00:00:00:07".into()), ..laptop(PUPIL_LAPTOP) };
    upsert_device(database, &by_mac).unwrap();
    assert_eq!(ask(server, PUPIL_LAPTOP, "game.test").await.metadata.response_code, ResponseCode::NXDomain);

    let expiry = hedgerow::store::time::now_ms() / 1000 + 3600;
    let leases = parse_dnsmasq_leases(&format!("{expiry} 02:00:00:00:00:07 {PUPIL_LAPTOP} t-laptop *\n"));
    assert_eq!(import_leases(database, &leases).unwrap(), 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while ask(server, PUPIL_LAPTOP, "game.test").await.metadata.response_code != ResponseCode::NoError {
        assert!(std::time::Instant::now() < deadline, "the server never applied the leased device's group");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running.stop().await;
    authority.stop().await;
}
