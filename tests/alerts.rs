//! Alerts end to end over real sockets: lookups sent to a running server
//! raise the right alerts, join one incident per device, respect the
//! thresholds, name guests by their pseudonym, and are not lost when the
//! query log sheds rows under a flood.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use hedgerow::config::Config;
use hedgerow::serve;
use hedgerow::store::alerts::{Alert, AlertFilter, AlertStore};
use hedgerow::store::{self, Device, Search};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::authority::{Authority, Zone};
use support::client::query_udp_from;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A lists folder with one local source per category the rules watch.
fn lists(dir: &Path) -> std::path::PathBuf {
    let lists = dir.join("lists");
    std::fs::create_dir_all(&lists).unwrap();
    let mut declarations = String::new();
    for (id, category, names) in [
        ("local-harm", "self-harm", "harm.test\nharm2.test\n".to_string()),
        ("local-bet", "gambling", (1..=12).map(|n| format!("bet{n}.test\n")).collect::<String>()),
        ("local-doh", "encrypted-dns", "doh.test\n".to_string()),
        ("local-ads", "ads", "ads.test\n".to_string()),
    ] {
        std::fs::write(lists.join(format!("{id}.txt")), names).unwrap();
        declarations.push_str(&format!(
            "[[source]]\nid = \"{id}\"\ncategory = \"{category}\"\nformat = \"domains\"\npath = \"{id}.txt\"\n"
        ));
    }
    std::fs::write(lists.join("local.toml"), declarations).unwrap();
    lists
}

fn config(upstream: SocketAddr, data_dir: &Path, lists: &Path) -> Config {
    let rest = r#"[log]
guest_privacy = "hash"
[[networks]]
name = "pupil-wifi"
cidrs = ["127.0.0.0/24", "127.0.2.0/24"]
group = "pupil"
[[networks]]
name = "guest-wifi"
cidrs = ["127.0.9.0/24"]
group = "guest"
"#;
    support::config::forwarding(upstream, data_dir, lists, rest, "alerts-test")
}

/// Waits until `done` holds for the alerts in `database` (the watch thread
/// writes within a second), or fails with what there is.
async fn wait_for(database: &Path, what: &str, done: impl Fn(&[Alert]) -> bool) -> Vec<Alert> {
    let store = AlertStore::open(database).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let alerts = store.search(&AlertFilter::default()).unwrap();
        if done(&alerts) {
            return alerts;
        }
        assert!(Instant::now() < deadline, "{what}: the alerts are {alerts:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn of<'a>(alerts: &'a [Alert], rule: &str, client: &str) -> Vec<&'a Alert> {
    alerts.iter().filter(|alert| alert.rule == rule && alert.client == client).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_raise_the_right_alerts_and_join_one_incident_per_device() {
    let authority = Authority::start("127.0.0.1:0", vec![Zone::new("school.test.").a("www", "192.0.2.10")]).await;
    let data = tempfile::tempdir().unwrap();
    let config = config(authority.addr, data.path(), &lists(data.path()));
    let database = config.log.database.clone();
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
    let running = serve::start(&config).await.unwrap();
    let server = running.udp_addrs()[0];
    let ask = |from: &'static str, name: &'static str| query_udp_from(ip(from), server, name, RecordType::A);

    // A high-risk category: an alert at once, naming the device and owner.
    assert_eq!(ask("127.0.0.1", "harm.test").await.metadata.response_code, ResponseCode::NXDomain);
    let alerts = wait_for(&database, "a high-risk attempt", |alerts| !alerts.is_empty()).await;
    let high = of(&alerts, "high-risk", "127.0.0.1")[0].clone();
    assert_eq!(
        (high.severity.as_str(), high.category.as_str(), high.device.as_str(), high.owner.as_str()),
        ("high", "self-harm", "LIB-PC-04", "Year 9: J. Smith")
    );
    assert_eq!(
        (high.network.as_str(), high.group.as_str(), high.names.clone()),
        ("pupil-wifi", "pupil", vec!["harm.test".to_string()])
    );

    // More attempts by the same device join it: one alert, its count and names grow.
    ask("127.0.0.1", "harm2.test").await;
    ask("127.0.0.1", "harm.test").await;
    let alerts = wait_for(&database, "attempts joining", |alerts| {
        of(alerts, "high-risk", "127.0.0.1").first().is_some_and(|alert| alert.attempts == 3)
    })
    .await;
    let joined = of(&alerts, "high-risk", "127.0.0.1");
    assert_eq!(joined.len(), 1, "one incident is one alert");
    assert_eq!(joined[0].names, ["harm.test", "harm2.test"]);

    // Repeated gambling: nothing below the threshold (10 in 30 minutes), an alert at it.
    for name in [
        "bet1.test",
        "bet2.test",
        "bet3.test",
        "bet4.test",
        "bet5.test",
        "bet6.test",
        "bet7.test",
        "bet8.test",
        "bet9.test",
    ] {
        assert_eq!(ask("127.0.0.5", name).await.metadata.response_code, ResponseCode::NXDomain);
    }
    // Another device's attempts do not count towards it, nor do unwatched blocks.
    ask("127.0.0.6", "bet1.test").await;
    ask("127.0.0.5", "ads.test").await;
    running.pipeline.log().unwrap().flush();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let store = AlertStore::open(&database).unwrap();
    let gambling = AlertFilter { category: Some("gambling".into()), ..AlertFilter::default() };
    assert_eq!(store.count(&gambling).unwrap(), 0, "nine attempts are under the threshold");
    ask("127.0.0.5", "bet10.test").await;
    let alerts = wait_for(&database, "the tenth gambling attempt", |alerts| {
        !of(alerts, "repeated-gambling", "127.0.0.5").is_empty()
    })
    .await;
    let repeated = of(&alerts, "repeated-gambling", "127.0.0.5")[0];
    assert_eq!((repeated.severity.as_str(), repeated.attempts), ("medium", 10));
    assert!(of(&alerts, "repeated-gambling", "127.0.0.6").is_empty());
    assert!(alerts.iter().all(|alert| alert.category != "ads"));

    // A bypass attempt (an encrypted-DNS endpoint): medium, no category.
    ask("127.0.0.6", "doh.test").await;
    let alerts = wait_for(&database, "a bypass attempt", |alerts| !of(alerts, "bypass", "127.0.0.6").is_empty()).await;
    let bypass = of(&alerts, "bypass", "127.0.0.6")[0];
    assert_eq!((bypass.severity.as_str(), bypass.names.clone()), ("medium", vec!["doh.test".to_string()]));

    // A hashed guest is named by the pseudonym its log rows carry, never by address.
    ask("127.0.9.7", "harm.test").await;
    let alerts = wait_for(&database, "a guest's attempt", |alerts| {
        alerts.iter().any(|alert| alert.group == "guest" && alert.rule == "high-risk")
    })
    .await;
    let guest = alerts.iter().find(|alert| alert.group == "guest").unwrap();
    assert!(guest.client.starts_with("anon-"), "{guest:?}");
    assert!((guest.device.as_str(), guest.owner.as_str()) == ("", ""));
    running.pipeline.log().unwrap().flush();
    let rows =
        store::search::search(&database, &Search { client: Some(guest.client.clone()), ..Search::default() }).unwrap();
    assert_eq!(rows.len(), 1, "the alert's pseudonym is the log's");
    assert_eq!(alerts.len(), 4, "{alerts:#?}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_that_makes_the_log_shed_rows_loses_no_alert() {
    let authority = Authority::start("127.0.0.1:0", vec![Zone::new("school.test.").a("www", "192.0.2.10")]).await;
    let data = tempfile::tempdir().unwrap();
    let mut config = config(authority.addr, data.path(), &lists(data.path()));
    // A log channel of four rows: any burst sheds ordinary rows.
    config.log.settings.channel_capacity = 4;
    let database = config.log.database.clone();
    let running = serve::start(&config).await.unwrap();
    let server = running.udp_addrs()[0];

    let flood: Vec<_> = (1..=6u8)
        .map(|n| {
            tokio::spawn(async move {
                for _ in 0..400 {
                    query_udp_from(IpAddr::from([127, 0, 0, 100 + n]), server, "www.school.test", RecordType::A).await;
                }
            })
        })
        .collect();
    // Twenty devices each try a high-risk name while the flood runs.
    let devices: Vec<IpAddr> = (1..=20u8).map(|n| IpAddr::from([127, 0, 2, n])).collect();
    for device in &devices {
        query_udp_from(*device, server, "harm.test", RecordType::A).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for task in flood {
        task.await.unwrap();
    }
    let log = running.pipeline.log().unwrap();
    log.flush();
    assert!(log.dropped() > 0, "the flood must make the log shed rows for this test to mean anything");
    let alerts = wait_for(&database, "an alert per device", |alerts| alerts.len() >= devices.len()).await;
    for device in &devices {
        assert_eq!(of(&alerts, "high-risk", &device.to_string()).len(), 1, "{device} has its alert");
    }
    assert_eq!(running.pipeline.alert_feed().unwrap().dropped(), 0);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_incident_survives_a_restart_and_turning_a_rule_off_stops_it() {
    let authority = Authority::start("127.0.0.1:0", vec![Zone::new("school.test.").a("www", "192.0.2.10")]).await;
    let data = tempfile::tempdir().unwrap();
    let lists = lists(data.path());
    let config = config(authority.addr, data.path(), &lists);
    let database = config.log.database.clone();
    let running = serve::start(&config).await.unwrap();
    let server = running.udp_addrs()[0];
    query_udp_from(ip("127.0.0.1"), server, "harm.test", RecordType::A).await;
    wait_for(&database, "the first alert", |alerts| alerts.len() == 1).await;
    running.stop().await;

    // After a restart the same device's next attempt joins the same alert.
    let running = serve::start(&config).await.unwrap();
    let server = running.udp_addrs()[0];
    query_udp_from(ip("127.0.0.1"), server, "harm2.test", RecordType::A).await;
    let alerts = wait_for(&database, "a join after restart", |alerts| alerts[0].attempts == 2).await;
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    running.stop().await;

    // With the bypass rule off, a bypass attempt raises nothing.
    let rest = "[alerts.rules.bypass]\nenabled = false\n";
    let text = support::config::forwarding_text(authority.addr, data.path(), &lists, "127.0.0.1:0", rest);
    let mut off = Config::parse(&format!("{text}{}", &config_tail()), "off").unwrap();
    off.dashboard.listen.clear();
    let running = serve::start(&off).await.unwrap();
    let server = running.udp_addrs()[0];
    query_udp_from(ip("127.0.0.6"), server, "doh.test", RecordType::A).await;
    query_udp_from(ip("127.0.0.7"), server, "harm.test", RecordType::A).await;
    // The high-risk attempt after it shows the thread has seen both.
    let alerts = wait_for(&database, "the later attempt", |alerts| alerts.len() == 2).await;
    assert!(alerts.iter().all(|alert| alert.rule != "bypass"), "{alerts:#?}");
    running.stop().await;
}

/// The networks and log settings of [`config`], as text.
fn config_tail() -> String {
    "[log]\nguest_privacy = \"hash\"\n[[networks]]\nname = \"pupil-wifi\"\ncidrs = [\"127.0.0.0/24\", \"127.0.2.0/24\"]\n\
     group = \"pupil\"\n"
        .to_string()
}

/// `count` query-log rows of `group` in the hour starting at `hour_ms`.
fn rows(hour_ms: i64, group: &str, count: usize, blocked: bool) -> Vec<store::QueryRecord> {
    (0..count)
        .map(|n| store::QueryRecord {
            time_ms: hour_ms + 1_000 * n as i64,
            client: ip("127.0.0.1"),
            network: Some("pupil-wifi".into()),
            group: Some(group.into()),
            name: format!("n{n}.ads.test"),
            record_type: 1,
            decision: if blocked { "blocked" } else { "allowed" },
            category: blocked.then(|| "ads".into()),
            list: None,
            response_code: if blocked { 3 } else { 0 },
            upstream_ms: None,
            cache_hit: false,
            stage: Some("blocklist"),
            reason: None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rise_in_a_groups_blocks_against_its_usual_level_raises_a_low_alert() {
    const HOUR: i64 = 3_600_000;
    let authority = Authority::start("127.0.0.1:0", vec![Zone::new("school.test.").a("www", "192.0.2.10")]).await;
    let data = tempfile::tempdir().unwrap();
    let config = config(authority.addr, data.path(), &lists(data.path()));
    let database = config.log.database.clone();
    std::fs::create_dir_all(data.path()).unwrap();
    // The hour the server looks at first: the last one whose rows are all in.
    let hour = (store::time::now_ms() - 90_000).div_euclid(HOUR) - 1;
    let mut records = Vec::new();
    for day in 1..=7 {
        let then = (hour - 24 * day) * HOUR;
        // Pupils usually have 20 blocks in that hour; guests 30.
        records.extend(rows(then, "pupil", 20, true));
        records.extend(rows(then, "pupil", 5, false));
        records.extend(rows(then + 600_000, "guest", 30, true));
    }
    // This time pupils have 100 (five times their usual), guests 40 (not a rise).
    records.extend(rows(hour * HOUR, "pupil", 100, true));
    records.extend(rows(hour * HOUR, "guest", 40, true));
    records.sort_by_key(|record| record.time_ms);
    store::log::import_records(&database, records, &config.log.settings).unwrap();

    let running = serve::start(&config).await.unwrap();
    let alerts = wait_for(&database, "a rise", |alerts| !alerts.is_empty()).await;
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let rise = &alerts[0];
    assert_eq!(
        (rise.rule.as_str(), rise.severity.as_str(), rise.client.as_str(), rise.group.as_str(), rise.attempts),
        ("rise", "low", "group:pupil", "pupil", 100)
    );
    assert!(rise.summary.contains("usual 20"), "{}", rise.summary);
    assert_eq!(rise.first_ms, hour * HOUR);
    running.stop().await;
    // A restart looks at the same hour again and raises nothing new.
    let running = serve::start(&config).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(AlertStore::open(&database).unwrap().count(&AlertFilter::default()).unwrap(), 1);
    running.stop().await;
}

/// The whole way: a pupil's lookup of a self-harm name, answered NXDOMAIN,
/// becomes an e-mail to the DSL at a real SMTP server (STARTTLS, AUTH), and
/// its outbox row is marked sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_risk_lookup_reaches_the_dsl_by_email() {
    use support::smtp::{PASSWORD, SmtpOptions, SmtpServer, USER};
    let authority = Authority::start("127.0.0.1:0", vec![Zone::new("school.test.").a("www", "192.0.2.10")]).await;
    let data = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(SmtpOptions::default());
    let password = data.path().join("smtp-password");
    std::fs::write(&password, PASSWORD).unwrap();
    let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dashboard-tls/cert.pem");
    let lists = lists(data.path());
    let email = format!(
        "[alerts]\ndashboard_url = \"https://filter.school.example\"\n[alerts.email]\nserver = \"127.0.0.1\"\n\
         port = {}\nusername = \"{USER}\"\npassword_file = {:?}\nca_file = {:?}\n\
         from = \"hedgerow@school.example\"\nhigh = [\"dsl@school.example\"]\n",
        smtp.addr().port(),
        password.display().to_string(),
        ca.display().to_string()
    );
    let text = support::config::forwarding_text(authority.addr, data.path(), &lists, "127.0.0.1:0", &email);
    let mut config = Config::parse(&format!("{text}{}", config_tail()), "email").unwrap();
    config.dashboard.listen.clear();
    let running = serve::start(&config).await.unwrap();
    let server = running.udp_addrs()[0];

    query_udp_from(ip("127.0.0.1"), server, "harm.test", RecordType::A).await;
    let mail = tokio::task::spawn_blocking(move || smtp.wait_for(1, Duration::from_secs(15)).remove(0)).await.unwrap();
    assert!(mail.tls && mail.user.as_deref() == Some(USER), "STARTTLS and AUTH: {mail:?}");
    assert_eq!(mail.rcpt_to, ["dsl@school.example"]);
    assert_eq!(mail.header("Subject").as_deref(), Some("[Hedgerow] High alert: self-harm, 127.0.0.1"));
    let body = mail.text();
    assert!(body.contains("harm.test") && body.contains("https://filter.school.example/alerts/1"), "{body}");
    // Times in the school's zone (Europe/London by default), as the dashboard shows them.
    assert!(
        body.lines().any(|line| line.starts_with("Time:") && (line.ends_with(" GMT") || line.ends_with(" BST"))),
        "{body}"
    );
    let store = AlertStore::open(&config.log.database).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.outbox(10).unwrap()[0].state != "sent" {
        assert!(Instant::now() < deadline, "{:#?}", store.outbox(10).unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await;
}
