//! The device table on real SQLite files: CSV import, DHCP lease files
//! (dnsmasq and ISC dhcpd), lease attribution in the log, search by device.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use hedgerow::store::devices::{
    Device, Lease, RowError, import_csv, import_leases, import_leases_at, list_devices, parse_dnsmasq_leases,
    parse_isc_leases, remove_device, upsert_device,
};
use hedgerow::store::record::QueryRecord;
use hedgerow::store::search::{Search, search};
use hedgerow::store::time::{now_ms, parse_utc};
use hedgerow::store::{LogSettings, QueryLog};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn find<'a>(devices: &'a [Device], name: &str) -> &'a Device {
    devices.iter().find(|device| device.name == name).unwrap_or_else(|| panic!("no {name} in {devices:#?}"))
}

#[test]
fn csv_import_saves_good_rows_and_reports_bad_ones_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hedgerow.db");
    // As a spreadsheet saves it: BOM, CRLF, quoted commas, a note over two lines.
    let csv = "\u{feff}IP,MAC,Name,Owner,Group,Notes\r\n\
        10.1.0.5,,LIB-PC-01,Library,pupil,\r\n\
        10.1.0.6,3C-22-FB-12-34-56,Y7-iPad-12,\"Smith, Jane\",pupil,\"cracked screen,\r\nsent for repair\"\r\n\
        ,aa:bb:cc:dd:ee:01,Staff laptop 3,Mr Brown,staff,\r\n\
        10.1.0.300,,Bad address,,,\r\n\
        10.1.0.8,zz:zz,Bad MAC,,,\r\n\
        10.1.0.9,,,No name,,\r\n\
        ,,Nothing to match,,,\r\n\
        10.1.0.10,,Too many,,,,extra\r\n\
        \r\n\
        2001:db8::10,,Office printer,,staff,\r\n";
    let report = import_csv(&db, csv).unwrap();
    assert_eq!(report.imported, 4);
    assert_eq!(report.ignored_columns, vec!["Notes".to_string()]);
    let errors: Vec<(usize, &str)> = report.errors.iter().map(|error| (error.line, error.message.as_str())).collect();
    assert_eq!(
        errors,
        vec![
            (6, "\"10.1.0.300\" is not an IP address"),
            (7, "\"zz:zz\" is not a MAC address"),
            (8, "the device has no name"),
            (9, "\"Nothing to match\" has neither an IP address nor a MAC address"),
            (10, "7 fields, but the header has 6"),
        ]
    );
    assert_eq!(RowError { line: 6, message: "x".into() }.to_string(), "line 6: x");

    let devices = list_devices(&db).unwrap();
    assert_eq!(devices.len(), 4);
    let ipad = find(&devices, "Y7-iPad-12");
    assert_eq!(ipad.ip, Some(ip("10.1.0.6")));
    assert_eq!(ipad.mac.as_deref(), Some("3c:22:fb:12:34:56"));
    assert_eq!(ipad.owner.as_deref(), Some("Smith, Jane"));
    assert_eq!(ipad.group.as_deref(), Some("pupil"));
    assert_eq!(ipad.source, "csv");
    assert_eq!(find(&devices, "Staff laptop 3").ip, None);
    assert_eq!(find(&devices, "Office printer").ip, Some(ip("2001:db8::10")));

    // Importing again updates in place.
    let report = import_csv(&db, "name,ip,owner\nLIB-PC-01 (upstairs),10.1.0.5,Library\n").unwrap();
    assert_eq!((report.imported, report.errors.len()), (1, 0));
    let devices = list_devices(&db).unwrap();
    assert_eq!(devices.len(), 4);
    assert_eq!(find(&devices, "LIB-PC-01 (upstairs)").ip, Some(ip("10.1.0.5")));
}

#[test]
fn csv_without_a_usable_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hedgerow.db");
    let error = import_csv(&db, "hostname,address\nPC,10.0.0.1\n").unwrap_err().to_string();
    assert!(error.contains("line 1") && error.contains("ip,mac,name,owner,group"), "{error}");
    assert!(import_csv(&db, "").unwrap_err().to_string().contains("empty"));
}

#[test]
fn an_address_moves_to_the_latest_device_named_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hedgerow.db");
    let manual = |ip: Option<&str>, mac: Option<&str>, name: &str| Device {
        ip: ip.map(|text| text.parse().unwrap()),
        mac: mac.map(String::from),
        name: name.into(),
        owner: None,
        group: None,
        source: "manual".into(),
    };
    upsert_device(&db, &manual(Some("10.1.0.5"), None, "Front desk")).unwrap();
    // The same address, now known by MAC: the address-only entry is adopted.
    upsert_device(&db, &manual(Some("10.1.0.5"), Some("aa-bb-cc-dd-ee-01"), "Front desk PC")).unwrap();
    let devices = list_devices(&db).unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].mac.as_deref(), Some("aa:bb:cc:dd:ee:01"));
    // Another device takes the address; the first keeps its MAC.
    upsert_device(&db, &manual(Some("10.1.0.5"), Some("aa:bb:cc:dd:ee:02"), "Spare PC")).unwrap();
    let devices = list_devices(&db).unwrap();
    assert_eq!(find(&devices, "Front desk PC").ip, None);
    assert_eq!(find(&devices, "Spare PC").ip, Some(ip("10.1.0.5")));
    assert!(remove_device(&db, "AA:BB:CC:DD:EE:02").unwrap());
    assert!(!remove_device(&db, "10.1.0.5").unwrap());
    assert!(upsert_device(&db, &manual(None, None, "Ghost")).is_err());
}

/// Unix seconds a day from now (a live lease) and a day ago (an expired
/// one): fixtures are dated from the clock, so they never go stale.
fn live_and_expired() -> (i64, i64) {
    let now = now_ms() / 1000;
    (now + 86_400, now - 86_400)
}

/// A dnsmasq lease file as dnsmasq 2.89 writes it, with DHCPv6 leases: the
/// live leases end a day from now, `expired-phone`'s ended a day ago.
fn dnsmasq_leases() -> String {
    let (live, expired) = live_and_expired();
    format!(
        "\
{live} 3c:22:fb:12:34:56 10.1.0.50 Y7-iPad-12 01:3c:22:fb:12:34:56
{live} a4:83:e7:0b:cc:01 10.1.0.51 * 01:a4:83:e7:0b:cc:01
0 00:1b:21:aa:bb:cc 10.1.0.2 office-printer *
{expired} f0:18:98:00:00:01 10.1.0.52 expired-phone 01:f0:18:98:00:00:01
duid 00:01:00:01:2c:5f:3a:10:52:54:00:12:34:56
{live} 305419896 fd00:1::1a2b Jane-MacBook 00:01:00:01:2c:5f:3a:10:3c:22:fb:00:00:07
garbage line
"
    )
}

#[test]
fn dnsmasq_leases_are_parsed() {
    let (live, expired) = live_and_expired();
    let leases = parse_dnsmasq_leases(&dnsmasq_leases());
    assert_eq!(leases.len(), 5);
    assert_eq!(
        leases[0],
        Lease {
            ip: ip("10.1.0.50"),
            mac: Some("3c:22:fb:12:34:56".into()),
            hostname: Some("Y7-iPad-12".into()),
            ends_ms: Some(live * 1000),
            active: true,
        }
    );
    assert!(leases[0].is_current(now_ms()), "a lease ending tomorrow is current");
    assert_eq!(leases[1].hostname, None);
    assert_eq!(leases[2].ends_ms, None, "0 means an infinite lease");
    assert!(leases[2].is_current(now_ms()), "an infinite lease is current");
    assert_eq!(leases[3].ends_ms, Some(expired * 1000));
    assert!(!leases[3].is_current(now_ms()), "a lease that ended yesterday is not current");
    assert_eq!((leases[4].ip, leases[4].mac.as_deref()), (ip("fd00:1::1a2b"), None));
    assert_eq!(leases[4].hostname.as_deref(), Some("Jane-MacBook"));
}

/// An ISC dhcpd 4.4 lease file: dhcpd appends a block per change, so an
/// address can appear more than once (the last block wins). Tests judge it
/// at a fixed time, 2025-03-03T15:00Z, when 10.2.0.25's lease had ended
/// (12:00) though dhcpd had not yet marked it free.
const ISC_LEASES: &str = r#"# The format of this file is documented in the dhcpd.leases(5) manual page.
# This lease file was written by isc-dhcp-4.4.3-P1

# authoring-byte-order entry is generated, DO NOT DELETE
authoring-byte-order little-endian;

server-duid "\000\001\000\001,_:\020RT\000\0224V";

lease 10.2.0.20 {
  starts 1 2025/03/03 08:01:12;
  ends 1 2025/03/03 20:01:12;
  cltt 1 2025/03/03 08:01:12;
  binding state active;
  next binding state free;
  rewind binding state free;
  hardware ethernet aa:bb:cc:00:00:20;
  uid "\001\252\273\314\000\000 ";
  set vendor-class-identifier = "MSFT 5.0";
  client-hostname "STAFF-LT-20";
}
lease 10.2.0.21 {
  starts 1 2025/03/03 08:05:00;
  ends never;
  binding state active;
  hardware ethernet AA:BB:CC:00:00:21;
  client-hostname "Head's \"Surface\"";
}
lease 10.2.0.22 {
  starts 1 2025/03/03 07:00:00;
  ends 1 2025/03/03 07:30:00;
  tstp 1 2025/03/03 07:30:00;
  binding state free;
  hardware ethernet aa:bb:cc:00:00:22;
}
lease 10.2.0.23 {
  starts epoch 1741000000; # Mon Mar 03 11:06:40 2025
  ends epoch 1893456000; # Tue Jan 01 00:00:00 2030
  binding state active;
  hardware ethernet aa:bb:cc:00:00:23;
}
lease 10.2.0.20 {
  starts 1 2025/03/03 12:00:00;
  ends 1 2025/03/03 23:00:00;
  binding state active;
  hardware ethernet aa:bb:cc:00:00:20;
  client-hostname "STAFF-LT-20";
}
lease 10.2.0.24 {
  starts 1 2025/03/03 09:00:00;
  ends 1 2025/03/03 21:00:00;
  binding state abandoned;
}
lease 10.2.0.25 {
  starts 1 2025/03/03 06:00:00;
  ends 1 2025/03/03 12:00:00;
  binding state active;
  hardware ethernet aa:bb:cc:00:00:25;
  client-hostname "ENDED-LT-25";
}
"#;

#[test]
fn isc_leases_are_parsed() {
    let leases = parse_isc_leases(ISC_LEASES);
    let ips: Vec<IpAddr> = leases.iter().map(|lease| lease.ip).collect();
    assert_eq!(
        ips,
        [ip("10.2.0.21"), ip("10.2.0.22"), ip("10.2.0.23"), ip("10.2.0.20"), ip("10.2.0.24"), ip("10.2.0.25")]
    );
    let head = &leases[0];
    assert_eq!(head.mac.as_deref(), Some("aa:bb:cc:00:00:21"));
    assert_eq!(head.hostname.as_deref(), Some("Head's \"Surface\""));
    assert_eq!(head.ends_ms, None);
    assert!(!leases[1].active, "binding state free");
    assert_eq!(leases[2].ends_ms, Some(1_893_456_000_000));
    assert_eq!(leases[2].hostname, None);
    assert_eq!(leases[3].ends_ms, parse_utc("2025-03-03T23:00:00"), "the last block of 10.2.0.20 wins");
    assert!(!leases[4].active && leases[4].mac.is_none());
    let judged = parse_utc("2025-03-03T15:00").unwrap();
    assert!(leases[5].active && !leases[5].is_current(judged), "active, but ended at 12:00");
    assert!(leases[3].is_current(judged) && leases[2].is_current(judged));
}

fn record(time_ms: i64, client: &str, name: &str) -> QueryRecord {
    QueryRecord {
        time_ms,
        client: client.parse().unwrap(),
        network: Some(Arc::from("pupil-wifi")),
        group: Some(Arc::from("pupil")),
        name: name.into(),
        record_type: 1,
        decision: "allowed",
        category: None,
        list: None,
        response_code: 0,
        upstream_ms: Some(4),
        cache_hit: false,
        stage: None,
        reason: None,
    }
}

fn log_rows(db: &Path, records: &[QueryRecord]) {
    let log = QueryLog::open(db, LogSettings::default()).unwrap();
    for record in records {
        log.record(record.clone());
    }
    log.close();
}

#[test]
fn leases_attribute_log_rows_keeping_hand_given_names() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hedgerow.db");
    // Known by hand: the iPad by MAC (with its owner); a printer pinned by address.
    upsert_device(
        &db,
        &Device {
            ip: None,
            mac: Some("3c:22:fb:12:34:56".into()),
            name: "Y7 iPad 12".into(),
            owner: Some("Jane Smith".into()),
            group: Some("pupil".into()),
            source: "manual".into(),
        },
    )
    .unwrap();
    upsert_device(
        &db,
        &Device {
            ip: Some(ip("10.1.0.2")),
            mac: None,
            name: "Reception printer".into(),
            owner: None,
            group: None,
            source: "csv".into(),
        },
    )
    .unwrap();

    // dnsmasq: the iPad gets .50, a phone with no hostname .51, the printer's
    // pinned address goes to an unknown MAC (refused), one lease expired
    // yesterday (ignored), and the DHCPv6 lease names its address.
    let applied = import_leases(&db, &parse_dnsmasq_leases(&dnsmasq_leases())).unwrap();
    assert_eq!(applied, 3);
    let devices = list_devices(&db).unwrap();
    let ipad = find(&devices, "Y7 iPad 12");
    assert_eq!(
        (ipad.ip, ipad.owner.as_deref(), ipad.source.as_str()),
        (Some(ip("10.1.0.50")), Some("Jane Smith"), "manual")
    );
    let phone = find(&devices, "a4:83:e7:0b:cc:01");
    assert_eq!((phone.ip, phone.source.as_str()), (Some(ip("10.1.0.51")), "dhcp"));
    assert_eq!(find(&devices, "Reception printer").ip, Some(ip("10.1.0.2")));
    assert_eq!(find(&devices, "Jane-MacBook").ip, Some(ip("fd00:1::1a2b")));
    assert!(devices.iter().all(|device| device.name != "expired-phone" && device.name != "office-printer"));
    assert!(devices.iter().all(|device| device.ip != Some(ip("10.1.0.52"))), "the expired lease named nothing");

    // ISC leases, judged on the day they were written.
    let now = parse_utc("2025-03-03T15:00").unwrap();
    let applied = import_leases_at(&db, &parse_isc_leases(ISC_LEASES), now).unwrap();
    assert_eq!(applied, 3, "the free, abandoned and ended leases are not applied");
    let devices = list_devices(&db).unwrap();
    assert_eq!(find(&devices, "STAFF-LT-20").ip, Some(ip("10.2.0.20")));
    assert_eq!(find(&devices, "Head's \"Surface\"").ip, Some(ip("10.2.0.21")));
    assert_eq!(find(&devices, "aa:bb:cc:00:00:23").ip, Some(ip("10.2.0.23")));
    assert!(
        devices.iter().all(|device| device.name != "ENDED-LT-25" && device.ip != Some(ip("10.2.0.25"))),
        "a lease that had ended is not applied"
    );

    let t = now_ms();
    log_rows(
        &db,
        &[
            record(t, "10.1.0.50", "a.example"),
            record(t + 1, "10.1.0.51", "b.example"),
            record(t + 2, "10.1.0.2", "c.example"),
            record(t + 3, "10.2.0.21", "d.example"),
            record(t + 4, "fd00:1::1a2b", "e.example"),
            record(t + 5, "10.1.0.99", "f.example"),
        ],
    );
    // The iPad's lease moves to a new address; the old address goes to a laptop.
    let (live, _) = live_and_expired();
    let moved = format!(
        "{live} 3c:22:fb:12:34:56 10.1.0.60 Y7-iPad-12 *\n{live} 00:11:22:33:44:55 10.1.0.50 Loan-laptop-4 *\n"
    );
    assert_eq!(import_leases(&db, &parse_dnsmasq_leases(&moved)).unwrap(), 2);
    log_rows(&db, &[record(t + 6, "10.1.0.60", "g.example"), record(t + 7, "10.1.0.50", "h.example")]);

    let rows = search(&db, &Search { limit: 100, ..Search::default() }).unwrap();
    let mut seen: Vec<(String, String, Option<String>, Option<String>)> =
        rows.into_iter().map(|row| (row.name, row.client, row.device, row.owner)).collect();
    seen.reverse();
    let s = |text: &str| Some(text.to_string());
    assert_eq!(
        seen,
        vec![
            ("a.example".into(), "10.1.0.50".into(), s("Y7 iPad 12"), s("Jane Smith")),
            ("b.example".into(), "10.1.0.51".into(), s("a4:83:e7:0b:cc:01"), None),
            ("c.example".into(), "10.1.0.2".into(), s("Reception printer"), None),
            ("d.example".into(), "10.2.0.21".into(), s("Head's \"Surface\""), None),
            ("e.example".into(), "fd00:1::1a2b".into(), s("Jane-MacBook"), None),
            ("f.example".into(), "10.1.0.99".into(), None, None),
            ("g.example".into(), "10.1.0.60".into(), s("Y7 iPad 12"), s("Jane Smith")),
            ("h.example".into(), "10.1.0.50".into(), s("Loan-laptop-4"), None),
        ]
    );

    // Search by device name (any case) or owner finds the iPad at both addresses.
    for who in ["y7 ipad 12", "Jane Smith"] {
        let rows = search(&db, &Search { client: Some(who.into()), ..Search::default() }).unwrap();
        let names: Vec<&str> = rows.iter().map(|row| row.name.as_str()).collect();
        assert_eq!(names, ["g.example", "a.example"], "{who}");
    }
    let rows = search(&db, &Search { client: Some("10.1.0.50".into()), ..Search::default() }).unwrap();
    let names: Vec<&str> = rows.iter().map(|row| row.name.as_str()).collect();
    assert_eq!(names, ["h.example", "a.example"]);
}
