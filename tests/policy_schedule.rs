//! Schedules and expiring overrides on a running server (`serve::start`,
//! real sockets): a schedule window containing now lets a category's names
//! through, one that does not keeps them blocked; an allow override with an
//! `until` two seconds ahead lets its name through, and once it lapses the
//! name is blocked again with no reload, and the change log shows the lapse.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hedgerow::config::Config;
use hedgerow::serve;
use hedgerow::store::changes::{ChangeFilter, ChangeLog};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::authority::{Authority, Zone};
use support::client::query_udp_from;

const PUPIL: &str = "127.0.0.1";

async fn code(server: SocketAddr, name: &str) -> ResponseCode {
    query_udp_from(PUPIL.parse::<IpAddr>().unwrap(), server, name, RecordType::A).await.metadata.response_code
}

fn config(upstream: SocketAddr, dir: &Path, rest: &str) -> Config {
    let lists = support::config::games_lists(dir);
    let networks = format!("[[networks]]\nname = \"pupils\"\ncidrs = [\"{PUPIL}/32\"]\ngroup = \"pupil\"\n{rest}");
    support::config::forwarding(upstream, &dir.join("data"), &lists, &networks, "schedule-test")
}

/// A fixed-offset zone in which it is about noon now, so a window around
/// noon contains now and one in the evening does not, whatever the hour.
fn zone_at_noon() -> String {
    let hour = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).hour() as i32;
    match 12 - hour {
        0 => "Etc/GMT".to_string(),
        // Etc/GMT-5 is five hours ahead of UTC.
        ahead if ahead > 0 => format!("Etc/GMT-{ahead}"),
        behind => format!("Etc/GMT+{}", -behind),
    }
}

/// `timezone` is a top-level key, which `support::config::forwarding` writes
/// before `rest`; so it is set on the parsed config.
fn with_zone(mut config: Config, zone: &str) -> Config {
    config.timezone = jiff::tz::TimeZone::get(zone).unwrap();
    config.timezone_name = zone.to_string();
    config
}

const EVERY_DAY: &str = "[\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_window_containing_now_lets_the_category_through() {
    let authority = Authority::start("127.0.0.1:0", vec![Zone::new("test.").a("game.test.", "192.0.2.6")]).await;
    let zone = zone_at_noon();
    for (from, to, open) in [("10:00", "14:00", true), ("18:00", "19:00", false)] {
        let dir = tempfile::tempdir().unwrap();
        let schedule = format!(
            "[[groups.pupil.schedule]]\ncategory = \"games\"\ndays = {EVERY_DAY}\nfrom = \"{from}\"\nto = \"{to}\"\n"
        );
        let config = with_zone(config(authority.addr, dir.path(), &schedule), &zone);
        assert_eq!(config.schedules.len(), 1);
        let running = serve::start(&config).await.unwrap();
        let expected = if open { ResponseCode::NoError } else { ResponseCode::NXDomain };
        assert_eq!(code(running.udp_addrs()[0], "game.test").await, expected, "window {from}-{to} in {zone}");
        running.stop().await;
    }
    authority.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_lapses_by_itself_and_the_change_log_shows_it() {
    let authority = Authority::start("127.0.0.1:0", vec![Zone::new("test.").a("game.test.", "192.0.2.6")]).await;
    let dir = tempfile::tempdir().unwrap();
    let until = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2);
    let until = jiff::Timestamp::from_second(until.as_second() + 1).unwrap();
    let rest =
        format!("[groups.pupil]\nallow = [{{ name = \"game.test\", reason = \"lesson\", until = \"{until}\" }}]\n");
    let config = config(authority.addr, dir.path(), &rest);
    let running = serve::start(&config).await.unwrap();
    let server = running.udp_addrs()[0];
    assert_eq!(code(server, "game.test").await, ResponseCode::NoError, "allowed until {until}");

    // No reload: the policy clock swaps the policy at `until`.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while code(server, "game.test").await != ResponseCode::NXDomain {
        assert!(std::time::Instant::now() < deadline, "the override did not lapse at {until}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(jiff::Timestamp::now() >= until, "blocked before its until");

    let log = ChangeLog::open(&config.log.database).unwrap();
    let lapse = ChangeFilter { kind: Some("lapse".into()), limit: 10, ..Default::default() };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while log.count(&lapse).unwrap() == 0 {
        assert!(std::time::Instant::now() < deadline, "no lapse recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = log.search(&lapse).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].user.as_str(), rows[0].group.as_deref()), ("hedgerow", Some("pupil")));
    assert_eq!(rows[0].subject, "allow game.test for pupil");
    // In the school's time zone, as the dashboard shows every time.
    assert_eq!(rows[0].reason, format!("expired at {}", config.local_time_text(until.as_millisecond())));
    // A reload records no second row for the same lapse, and it stays lapsed.
    running.reload().await.unwrap();
    assert_eq!(log.count(&lapse).unwrap(), 1);
    assert_eq!(code(server, "game.test").await, ResponseCode::NXDomain);
    running.stop().await;
    authority.stop().await;
}
