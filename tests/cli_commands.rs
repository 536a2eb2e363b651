//! The `hedgerow` commands as an ICT lead runs them: each exits non-zero with
//! a message on stderr when it did not do its job, the device commands, and
//! the query log's output formats. Every test keeps its state in a tempdir.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use hedgerow::store::LogSettings;
use hedgerow::store::log::import_records;
use hedgerow::store::record::QueryRecord;

mod support;

const BINARY: &str = env!("CARGO_BIN_EXE_hedgerow");
const CONFIG_HELP: &str = "Config file (default: the embedded demo config)";

/// A school config in a tempdir: games (game.test) blocked for pupils
/// only; demo-pupil 127.0.0.1, demo-staff 127.0.0.2. Nothing is ever sent
/// upstream by these commands.
struct School {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl School {
    fn new() -> School {
        let dir = tempfile::tempdir().unwrap();
        let lists = support::config::games_lists(dir.path());
        let config = dir.path().join("hedgerow.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {data:?}\n[dashboard]\nlisten = []\n[dns]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nmode = \"forward\"\n\
                 [[upstream.servers]]\naddress = \"127.0.0.1:9\"\n[lists]\ndir = {lists:?}\nupdate_hours = 0\n\
                 [[networks]]\nname = \"demo-pupil\"\ncidrs = [\"127.0.0.1/32\"]\ngroup = \"pupil\"\n\
                 [[networks]]\nname = \"demo-staff\"\ncidrs = [\"127.0.0.2/32\"]\ngroup = \"staff\"\n",
                data = dir.path().join("data").display().to_string(),
                lists = lists.display().to_string(),
            ),
        )
        .unwrap();
        School { dir, config }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BINARY).args(args).arg("--config").arg(&self.config).current_dir(self.dir.path()).output().unwrap()
    }

    /// Runs a command that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(output.status.success(), "{args:?} failed: {}", text(&output.stderr));
        text(&output.stdout)
    }

    /// Runs a command that must fail; its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(!output.status.success(), "{args:?} exited 0: {}", text(&output.stdout));
        text(&output.stderr)
    }

    fn database(&self) -> PathBuf {
        self.dir.path().join("data").join("hedgerow.db")
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect()
}

#[test]
fn import_csv_saves_good_rows_and_fails_on_bad_ones() {
    let school = School::new();
    let csv = school.dir.path().join("devices.csv");
    std::fs::write(
        &csv,
        "ip,mac,name,owner,group\n10.0.0.5,,Good-1,,pupil\n10.0.0.300,,Bad-IP,,\n10.0.0.6,,Bad-group,,teachers\n10.0.0.7,,Good-2,,\n",
    )
    .unwrap();
    let output = school.run(&["devices", "import-csv", csv.to_str().unwrap()]);
    assert!(!output.status.success(), "bad rows: exit non-zero");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("line 3: \"10.0.0.300\" is not an IP address"), "{stderr}");
    assert!(stderr.contains("line 4: group \"teachers\" is not configured"), "{stderr}");
    assert!(stderr.contains("guest, pupil, staff"), "the message lists the configured groups: {stderr}");
    assert!(text(&output.stdout).contains("2 devices imported"), "{}", text(&output.stdout));

    let names: Vec<String> = json_lines(&school.ok(&["devices", "list", "--format", "json"]))
        .iter()
        .map(|device| device["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["Good-1", "Good-2"]);

    // A clean file exits 0.
    std::fs::write(&csv, "ip,name,group\n10.0.0.8,Good-3,staff\n").unwrap();
    school.ok(&["devices", "import-csv", csv.to_str().unwrap()]);
}

#[test]
fn unknown_groups_are_refused_with_the_configured_ones_listed() {
    let school = School::new();
    let stderr = school.fails(&["devices", "add", "--ip", "127.0.0.1", "--name", "T-laptop", "--group", "teachers"]);
    assert!(stderr.contains("\"teachers\"") && stderr.contains("guest, pupil, staff"), "{stderr}");
    assert!(school.ok(&["devices", "list"]).contains("(no devices)"));

    let stderr = school.fails(&["check", "www.example.com", "--group", "teachers"]);
    assert!(stderr.contains("no group named \"teachers\"") && stderr.contains("guest, pupil, staff"), "{stderr}");
}

#[test]
fn check_says_plainly_that_an_address_in_no_network_is_refused() {
    let school = School::new();
    let stdout = school.ok(&["check", "www.example.com", "--client", "192.0.2.1"]);
    assert!(stdout.contains("decision: refused"), "{stdout}");
    assert!(stdout.contains("REFUSED:  no configured network covers 192.0.2.1"), "{stdout}");
    assert!(stdout.contains("demo-pupil 127.0.0.1/32"), "the networks are listed: {stdout}");
}

#[test]
fn devices_list_show_remove_and_check_as_a_device() {
    let school = School::new();
    school.ok(&[
        "devices",
        "add",
        "--ip",
        "127.0.0.1",
        "--name",
        "T-laptop",
        "--owner",
        "Ms Smith",
        "--group",
        "staff",
    ]);
    school.ok(&["devices", "add", "--mac", "AA-BB-CC-DD-EE-FF", "--name", "Printer"]);
    school.ok(&["devices", "add", "--ip", "192.0.2.9", "--name", "Away"]);

    let table = school.ok(&["devices", "list"]);
    assert!(table.lines().next().unwrap().starts_with("name"), "{table}");
    let laptop_line = table.lines().find(|line| line.starts_with("T-laptop")).expect("listed");
    assert!(laptop_line.contains("127.0.0.1") && laptop_line.contains("demo-pupil") && laptop_line.contains("staff"));
    assert!(table.lines().any(|line| line.starts_with("Away") && line.contains("(none: refused)")), "{table}");
    let csv = school.ok(&["devices", "list", "--format", "csv"]);
    assert_eq!(csv.lines().next(), Some("name,ip,mac,owner,group,source,network,effective_group"));
    assert_eq!(csv.lines().count(), 4);

    // show: by name (any case) or address.
    assert!(school.ok(&["devices", "show", "t-LAPTOP"]).contains("127.0.0.1"));
    let shown = json_lines(&school.ok(&["devices", "show", "127.0.0.1", "--format", "json"]));
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0]["name"], "T-laptop");
    assert_eq!(shown[0]["network"], "demo-pupil");
    assert_eq!(shown[0]["effective_group"], "staff");
    assert!(school.fails(&["devices", "show", "Nobody"]).contains("no device \"Nobody\""));

    // check as the device: its address's network, its own group.
    let pupil = school.ok(&["check", "game.test", "--group", "pupil"]);
    assert!(pupil.contains("decision: blocked"), "{pupil}");
    let laptop = school.ok(&["check", "game.test", "--device", "T-laptop"]);
    assert!(laptop.contains("decision: allowed"), "{laptop}");
    assert!(laptop.contains("network:  demo-pupil"), "{laptop}");
    assert!(laptop.contains("group:    staff (from the device table: \"T-laptop\")"), "{laptop}");
    assert!(school.fails(&["check", "game.test", "--device", "Printer"]).contains("no IP address yet"));
    assert!(school.fails(&["check", "game.test", "--device", "Nobody"]).contains("no device named \"Nobody\""));

    // remove: by name, then it is gone; removing again fails.
    assert!(school.ok(&["devices", "remove", "T-laptop"]).contains("removed device \"T-laptop\""));
    school.fails(&["devices", "show", "T-laptop"]);
    school.fails(&["devices", "remove", "T-laptop"]);
    school.ok(&["devices", "remove", "aa:bb:cc:dd:ee:ff"]);
    assert_eq!(school.ok(&["devices", "list", "--format", "csv"]).lines().count(), 2);
}

fn write_log(database: &Path) {
    std::fs::create_dir_all(database.parent().unwrap()).unwrap();
    let now = hedgerow::store::time::now_ms();
    let record = |offset: i64, name: &str| QueryRecord {
        time_ms: now - offset,
        client: "127.0.0.1".parse().unwrap(),
        network: Some(Arc::from("demo-pupil")),
        group: Some(Arc::from("pupil")),
        name: name.to_string(),
        record_type: 1,
        decision: "allowed",
        category: None,
        list: None,
        response_code: 0,
        upstream_ms: Some(12),
        cache_hit: false,
        stage: None,
        reason: None,
    };
    let blocked = QueryRecord {
        record_type: 28,
        decision: "blocked",
        category: Some(Arc::from("games")),
        list: Some(Arc::from("local-games")),
        response_code: 3,
        upstream_ms: None,
        cache_hit: true,
        ..record(1_000, "game.test")
    };
    import_records(database, [record(2_000, "www.example.com"), blocked], &LogSettings::default()).unwrap();
}

#[test]
fn log_search_json_and_csv_carry_the_same_fields_in_the_same_form() {
    let school = School::new();
    write_log(&school.database());
    let json = school.ok(&["log", "search", "--format", "json"]);
    let csv = school.ok(&["log", "search", "--format", "csv"]);
    // No value in these rows holds a comma or a quote, so a split reads the CSV.
    let records: Vec<Vec<String>> = csv.lines().map(|line| line.split(',').map(String::from).collect()).collect();
    let header = &records[0];
    assert_eq!(
        header.join(","),
        "id,time,client,device,owner,network,group,name,type,decision,category,list,rcode,upstream_ms,cache_hit,stage,reason"
    );
    let lines: Vec<&str> = json.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(records.len(), 3);
    for (line, cells) in lines.iter().zip(&records[1..]) {
        // Same names in the same order.
        let positions: Vec<usize> = header
            .iter()
            .map(|field| line.find(&format!("\"{field}\":")).unwrap_or_else(|| panic!("{field}: {line}")))
            .collect();
        assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "JSON keys out of CSV order: {line}");
        // Same values in the same form: null is an empty cell.
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        for (field, cell) in header.iter().zip(cells) {
            let as_text = match &value[field.as_str()] {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            assert_eq!(&as_text, cell, "field {field} differs: {line} vs {cells:?}");
        }
    }
    let newest: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(newest["name"], "game.test");
    assert_eq!(newest["type"], "AAAA");
    assert_eq!(newest["rcode"], "NXDOMAIN");
    assert_eq!(newest["upstream_ms"], serde_json::Value::Null);
    assert_eq!(newest["cache_hit"], true);
    assert!(newest["time"].as_str().unwrap().ends_with('Z'), "ISO UTC: {newest}");
    let older: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(
        (older["type"].as_str(), older["rcode"].as_str(), older["upstream_ms"].as_u64()),
        (Some("A"), Some("NOERROR"), Some(12))
    );
}

#[test]
fn log_search_refuses_unknown_categories_and_decisions() {
    let school = School::new();
    write_log(&school.database());
    let stderr = school.fails(&["log", "search", "--category", "gamblin"]);
    assert!(
        stderr.contains("\"gamblin\"") && stderr.contains("gambling") && stderr.contains("social-media"),
        "{stderr}"
    );
    let stderr = school.fails(&["log", "search", "--decision", "denied"]);
    assert!(
        stderr.contains("\"denied\"") && stderr.contains("allowed, blocked, safesearch, bypass, refused, error"),
        "{stderr}"
    );
    // Known ones, in any case, work.
    let rows =
        json_lines(&school.ok(&["log", "search", "--category", "Games", "--decision", "BLOCKED", "--format", "json"]));
    assert_eq!(rows.len(), 1);
}

#[test]
fn log_review_honours_format() {
    let school = School::new();
    write_log(&school.database());
    let args = ["log", "review", "--from", "2026-01-01", "--to", "2026-12-31"];
    let table = school.ok(&args);
    assert!(table.starts_with("Filtering review 2026-01-01 to 2026-12-31"), "{table}");
    assert!(table.contains("registered devices now:"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&school.ok(&[&args[..], &["--format", "json"]].concat())).unwrap();
    assert_eq!(json["from_day"], "2026-01-01");
    let csv = school.ok(&[&args[..], &["--format", "csv"]].concat());
    assert_eq!(csv.lines().next(), Some("section,key,decision,count"));
    assert!(csv.lines().any(|line| line.starts_with("registered_devices,")), "{csv}");
}

#[test]
fn every_command_with_a_config_describes_it_in_its_help() {
    let commands: [&[&str]; 12] = [
        &["serve"],
        &["status"],
        &["lists"],
        &["lists", "compile"],
        &["lists", "reload"],
        &["log"],
        &["log", "search"],
        &["log", "review"],
        &["devices"],
        &["devices", "list"],
        &["devices", "import-csv"],
        &["check"],
    ];
    for command in commands {
        let output = Command::new(BINARY).args(command).arg("--help").output().unwrap();
        assert!(output.status.success(), "{command:?}");
        let help = text(&output.stdout);
        assert!(help.contains(CONFIG_HELP), "{command:?} --help does not describe --config:\n{help}");
    }
}
