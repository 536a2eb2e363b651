//! `hedgerow backup` and `hedgerow restore` with the real binary: a backup
//! taken while a real server answers DNS load restores into a fresh
//! directory with every policy change, user, alert and committed log row,
//! and the restored server starts and answers with the changed policy. A
//! damaged archive, a running server's data and an existing directory are
//! refused, and nothing is written.

mod support;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hedgerow::store::alerts::{AlertFilter, AlertStore};
use hedgerow::store::changes::{ChangeFilter, ChangeLog};
use hedgerow::store::users::Users;
use hickory_proto::rr::RecordType;
use support::authority::Authority;
use support::dashboard::{DashboardClient, csrf_token};
use support::server::{GAMES_ADDR, GAMES_NAME, Hedgerow, PLAIN_NAME, PUPIL, SchoolFiles, resolves_to};

const BINARY: &str = env!("CARGO_BIN_EXE_hedgerow");
const ADMIN: &str = "ict.lead";
const ADMIN_PASSWORD: &str = "hedge laying in november";
const DSL: &str = "dee.dsl";
const DSL_PASSWORD: &str = "safeguarding first always";
const REASON: &str = "Coding club builds browser games this week";
/// A self-harm name: a lookup is blocked and raises a high-risk alert. It
/// resolves upstream, so only the policy keeps its address from a pupil.
const HARM_NAME: &str = "harm.test";
const HARM_ADDR: &str = "192.0.2.22";

fn world() -> Vec<support::authority::Zone> {
    let mut world = support::server::school_world();
    world[0] = world[0].clone().a("harm.test.", HARM_ADDR);
    world
}

fn hedgerow(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    hedgerow_in(Path::new("."), args)
}

/// Runs in `folder`: relative paths in a config (the default `[lists] dir`)
/// are relative to the working folder, as for `serve`.
fn hedgerow_in(folder: &Path, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut command = Command::new(BINARY);
    command.current_dir(folder);
    for arg in args {
        command.arg(arg);
    }
    command.output().expect("run hedgerow")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// The test school (tests/support/server.rs) with a self-harm list beside its games list.
fn school(dir: &Path, upstream: std::net::SocketAddr) -> SchoolFiles {
    let files = SchoolFiles::write(dir, upstream, true);
    let lists = dir.join("lists");
    std::fs::write(lists.join("harm.txt"), format!("{HARM_NAME}\n")).unwrap();
    let mut declarations = std::fs::read_to_string(lists.join("local.toml")).unwrap();
    declarations.push_str(
        "\n[[source]]\nid = \"local-harm\"\ncategory = \"self-harm\"\nformat = \"domains\"\npath = \"harm.txt\"\n",
    );
    std::fs::write(lists.join("local.toml"), declarations).unwrap();
    files
}

/// Sends pupil lookups of the plain name over UDP until `stop`; counts the answers.
fn load(server: std::net::SocketAddr, stop: Arc<AtomicBool>, answered: Arc<AtomicU64>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let socket = UdpSocket::bind((PUPIL, 0)).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut id: u16 = 0;
        let mut buffer = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            id = id.wrapping_add(1);
            let mut query = support::client::build_query(PLAIN_NAME, RecordType::A);
            query.metadata.id = id;
            socket.send_to(&query.to_vec().unwrap(), server).unwrap();
            if socket.recv_from(&mut buffer).is_ok() {
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

fn database(data_dir: &Path) -> PathBuf {
    data_dir.join("hedgerow.db")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_change_user_alert_and_log_row() {
    let authority = Authority::start("127.0.0.1:0", world()).await;
    let dir = tempfile::tempdir().unwrap();
    let files = school(dir.path(), authority.addr);
    let mut server = Hedgerow::start(&files).await;
    let mut web = server.first_admin(ADMIN, ADMIN_PASSWORD);

    // A policy change and a user, through the dashboard.
    let page = web.get("/policy/pupil");
    let csrf = csrf_token(&page.body).expect("a CSRF token on the policy page");
    let saved = web.post_form(
        "/policy/pupil/category",
        &[("csrf", &csrf), ("category", "games"), ("blocked", "false"), ("reason", REASON)],
    );
    assert_eq!(saved.status, 303, "the change is acknowledged: {}", saved.body);
    assert!(resolves_to(&server.ask(PUPIL, GAMES_NAME).await, GAMES_ADDR), "games allowed for pupils now");
    let page = web.get("/users");
    let csrf = csrf_token(&page.body).expect("a CSRF token on the users page");
    let added = web.post_form(
        "/users",
        &[("csrf", &csrf), ("name", DSL), ("password", DSL_PASSWORD), ("role_dsl", "on"), ("reason", "new DSL")],
    );
    assert!(added.status == 200 && added.body.contains("Added dee.dsl"), "the add is acknowledged: {}", added.body);

    // A high-risk lookup raises an alert.
    let db = database(&files.data_dir);
    let blocked = server.ask(PUPIL, HARM_NAME).await;
    assert!(!resolves_to(&blocked, HARM_ADDR), "the self-harm name is blocked");
    let deadline = Instant::now() + Duration::from_secs(15);
    let alerts = loop {
        let alerts = AlertStore::open(&db).unwrap().search(&AlertFilter::default()).unwrap();
        if alerts.iter().any(|alert| alert.rule == "high-risk") {
            break alerts;
        }
        assert!(Instant::now() < deadline, "no high-risk alert: {alerts:#?}\n{}", server.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // DNS load, and log rows committed before the backup begins.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let loader = load(files.dns, Arc::clone(&stop), Arc::clone(&answered));
    let deadline = Instant::now() + Duration::from_secs(20);
    let committed = loop {
        let rows = hedgerow::store::read::count_rows(&db).unwrap();
        if rows >= 50 {
            break rows;
        }
        assert!(Instant::now() < deadline, "the log never reached 50 rows ({rows})\n{}", server.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let changes = ChangeLog::open(&db).unwrap().search(&ChangeFilter::default()).unwrap();
    assert!(changes.iter().any(|change| change.reason == REASON), "the policy change is logged: {changes:#?}");
    let users: Vec<String> = Users::open(&db).unwrap().list().unwrap().into_iter().map(|user| user.name).collect();
    assert!(users.contains(&DSL.to_string()) && users.contains(&ADMIN.to_string()), "{users:?}");

    let archive = dir.path().join("school.hedgerow.tar.gz");
    let before_backup = answered.load(Ordering::Relaxed);
    let backup = hedgerow(&[&"backup", &archive, &"--config", &files.config]);
    let during_backup = answered.load(Ordering::Relaxed) - before_backup;
    // The load keeps running a moment after the backup, then stops.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    loader.join().unwrap();
    assert!(backup.status.success(), "backup: {}", text(&backup));
    assert!(during_backup > 0, "DNS answered while the backup ran");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the backup is readable by its owner only");
    let staged: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(staged.is_empty(), "no temporary file left beside the backup: {staged:?}");
    server.kill();

    // Restored into a fresh directory elsewhere.
    let elsewhere = tempfile::tempdir().unwrap();
    let into = elsewhere.path().join("school");
    let restore = hedgerow(&[&"restore", &archive, &"--into", &into]);
    assert!(restore.status.success(), "restore: {}", text(&restore));
    let config = into.join("hedgerow.toml");
    let check = hedgerow(&[&"check-config", &config]);
    assert!(check.status.success(), "check-config on the restored config: {}", text(&check));
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(written.contains("!games"), "the policy change is in the restored config:\n{written}");
    assert!(!written.contains(&dir.path().display().to_string()), "nothing points at the old directory:\n{written}");

    let restored_db = database(&into.join("data"));
    let restored_changes = ChangeLog::open(&restored_db).unwrap().search(&ChangeFilter::default()).unwrap();
    for change in &changes {
        assert!(restored_changes.contains(change), "change {change:?} restored: {restored_changes:#?}");
    }
    let restored_users: Vec<String> =
        Users::open(&restored_db).unwrap().list().unwrap().into_iter().map(|user| user.name).collect();
    assert_eq!(restored_users, users);
    let restored_alerts = AlertStore::open(&restored_db).unwrap().search(&AlertFilter::default()).unwrap();
    for alert in &alerts {
        assert!(
            restored_alerts.iter().any(|restored| restored.id == alert.id && restored.rule == alert.rule),
            "alert {alert:?} restored"
        );
    }
    let restored_rows = hedgerow::store::read::count_rows(&restored_db).unwrap();
    assert!(
        restored_rows >= committed,
        "{committed} log rows were committed before the backup; {restored_rows} restored"
    );

    // The restored server starts and answers with the changed policy.
    let restored = SchoolFiles { config: config.clone(), data_dir: into.join("data"), ..files.clone() };
    let server = Hedgerow::start(&restored).await;
    assert!(resolves_to(&server.ask(PUPIL, GAMES_NAME).await, GAMES_ADDR), "games still allowed for pupils");
    assert!(!resolves_to(&server.ask(PUPIL, HARM_NAME).await, HARM_ADDR));
    let mut web = DashboardClient::new(&server.url(""));
    web.log_in(DSL, DSL_PASSWORD);
    assert_eq!(web.get("/alerts").status, 200);

    // Onto the running restored server's directory: refused, even with --force.
    let onto_running = hedgerow(&[&"restore", &archive, &"--into", &into, &"--force"]);
    assert_eq!(onto_running.status.code(), Some(2), "{}", text(&onto_running));
    assert!(text(&onto_running).contains("stop the server first"), "{}", text(&onto_running));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), written, "the running server's config is untouched");
    drop(server);

    // Onto the stopped one: refused without --force; with it, the old one is moved aside.
    let existing = hedgerow(&[&"restore", &archive, &"--into", &into]);
    assert_eq!(existing.status.code(), Some(2), "{}", text(&existing));
    assert!(text(&existing).contains("already exists"), "{}", text(&existing));
    let forced = hedgerow(&[&"restore", &archive, &"--into", &into, &"--force"]);
    assert!(forced.status.success(), "{}", text(&forced));
    let aside: Vec<_> = std::fs::read_dir(elsewhere.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("school.replaced-"))
        .collect();
    assert_eq!(aside.len(), 1, "the old directory is kept aside: {aside:?}");
    authority.stop().await;
}

/// The archive's entries: (name, bytes), in order.
fn entries(archive: &Path) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let file = std::fs::File::open(archive).unwrap();
    let mut reader = tar::Archive::new(flate2::read::GzDecoder::new(file));
    reader
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

fn write_entries(archive: &Path, entries: &[(String, Vec<u8>)]) {
    let file = std::fs::File::create(archive).unwrap();
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(file, flate2::Compression::default()));
    for (name, bytes) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        builder.append_data(&mut header, name, bytes.as_slice()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
}

/// A byte flipped in the database, or in the manifest's checksum for it, or
/// a manifest of another format: the restore is refused and nothing is
/// written (no target, no staging folder left behind). The archive as taken
/// restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_backup_is_refused_and_nothing_is_written() {
    let authority = Authority::start("127.0.0.1:0", world()).await;
    let dir = tempfile::tempdir().unwrap();
    let files = school(dir.path(), authority.addr);
    let server = Hedgerow::start(&files).await;
    let archive = dir.path().join("school.tar.gz");
    let backup = hedgerow(&[&"backup", &archive, &"--config", &files.config]);
    assert!(backup.status.success(), "{}", text(&backup));
    drop(server);
    let good = entries(&archive);
    let names: Vec<&str> = good.iter().map(|(name, _)| name.as_str()).collect();
    for expected in
        ["hedgerow.toml", "lists/local.toml", "lists/games.txt", "lists/harm.txt", "data/hedgerow.db", "manifest.json"]
    {
        assert!(names.contains(&expected), "{expected} in the archive: {names:?}");
    }
    assert!(!names.iter().any(|name| name.contains("compiled") || name.ends_with(".lock")), "{names:?}");

    let place = tempfile::tempdir().unwrap();
    let refused = |archive: &Path, why: &str| {
        let into = place.path().join("school");
        let output = hedgerow(&[&"restore", &archive, &"--into", &into]);
        assert_eq!(output.status.code(), Some(2), "{why}: {}", text(&output));
        assert!(text(&output).contains(why), "{why}: {}", text(&output));
        let left: Vec<_> = std::fs::read_dir(place.path()).unwrap().collect();
        assert!(left.is_empty(), "nothing written for {why}: {left:?}");
    };

    let database = good.iter().position(|(name, _)| name == "data/hedgerow.db").unwrap();
    let mut flipped = good.clone();
    let middle = flipped[database].1.len() / 2;
    flipped[database].1[middle] ^= 0x01;
    let tampered = dir.path().join("flipped-db.tar.gz");
    write_entries(&tampered, &flipped);
    refused(&tampered, "does not match its checksum");

    let manifest = good.iter().position(|(name, _)| name == "manifest.json").unwrap();
    let mut text_of = String::from_utf8(good[manifest].1.clone()).unwrap();
    let hash_at = text_of.find("\"sha256\": \"").unwrap() + "\"sha256\": \"".len();
    let flipped_char = if &text_of[hash_at..hash_at + 1] == "0" { "1" } else { "0" };
    text_of.replace_range(hash_at..hash_at + 1, flipped_char);
    let mut checksum = good.clone();
    checksum[manifest].1 = text_of.into_bytes();
    let tampered = dir.path().join("flipped-checksum.tar.gz");
    write_entries(&tampered, &checksum);
    refused(&tampered, "does not match its checksum");

    let mut other_format = good.clone();
    other_format[manifest].1 = String::from_utf8(good[manifest].1.clone())
        .unwrap()
        .replacen("\"format\": 1", "\"format\": 99", 1)
        .into_bytes();
    let tampered = dir.path().join("format.tar.gz");
    write_entries(&tampered, &other_format);
    refused(&tampered, "its format is 99");

    let mut extra = good.clone();
    extra.insert(0, ("lists/evil.toml".to_string(), b"[[source]]\n".to_vec()));
    let tampered = dir.path().join("extra.tar.gz");
    write_entries(&tampered, &extra);
    refused(&tampered, "not in its manifest");

    let mut escape = good.clone();
    escape[0].0 = "../hedgerow.toml".to_string();
    let tampered = dir.path().join("escape.tar.gz");
    write_entries_raw_names(&tampered, &escape);
    refused(&tampered, "unsafe name");

    let into = place.path().join("school");
    let restored = hedgerow(&[&"restore", &archive, &"--into", &into]);
    assert!(restored.status.success(), "the archive as taken restores: {}", text(&restored));
    authority.stop().await;
}

/// Like [`write_entries`], but writes names as given (the tar crate refuses
/// `..` in `append_data`): the header's name bytes are set directly.
fn write_entries_raw_names(archive: &Path, entries: &[(String, Vec<u8>)]) {
    let file = std::fs::File::create(archive).unwrap();
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(file, flate2::Compression::default()));
    for (name, bytes) in entries {
        let mut header = tar::Header::new_old();
        {
            let old = header.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
        }
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, bytes.as_slice()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
}

/// A backup that cannot be taken (no database: the server never ran on this
/// config) writes nothing: no FILE, no temporary file, and an older FILE
/// is left as it was.
#[test]
fn a_backup_that_cannot_be_taken_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let files = SchoolFiles::write(dir.path(), "127.0.0.1:9".parse().unwrap(), false);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let archive = out.join("school.tar.gz");
    let refused = hedgerow(&[&"backup", &archive, &"--config", &files.config]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("there is no database"), "{}", text(&refused));
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "nothing written");

    std::fs::write(&archive, b"last week's backup").unwrap();
    let refused = hedgerow(&[&"backup", &archive, &"--config", &files.config]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert_eq!(std::fs::read(&archive).unwrap(), b"last week's backup", "the older file is kept");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1, "no temporary file left");
}

/// A server on the lists built into the binary (no `[lists] dir`, no lists
/// folder): the manifest says there was nothing to copy, and the restored
/// config still checks and serves on the built-in lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_the_built_in_lists_backs_up_and_restores() {
    let authority = Authority::start("127.0.0.1:0", world()).await;
    let dir = tempfile::tempdir().unwrap();
    let files = SchoolFiles::write(dir.path(), authority.addr, false);
    // The same school without its lists folder.
    let config = std::fs::read_to_string(&files.config).unwrap();
    let config: String =
        config.lines().filter(|line| !line.starts_with("dir = ")).map(|line| format!("{line}\n")).collect();
    std::fs::write(&files.config, &config).unwrap();
    std::fs::remove_dir_all(dir.path().join("lists")).unwrap();
    let server = Hedgerow::start(&files).await;
    let archive = dir.path().join("school.tar.gz");
    let backup = hedgerow_in(dir.path(), &[&"backup", &archive, &"--config", &files.config]);
    assert!(backup.status.success(), "{}", text(&backup));
    drop(server);
    let entries = entries(&archive);
    assert!(!entries.iter().any(|(name, _)| name.starts_with("lists/")), "no lists copied");
    let manifest = &entries.iter().find(|(name, _)| name == "manifest.json").unwrap().1;
    let manifest: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    assert_eq!(manifest["lists_dir"], serde_json::Value::Null);
    let notes = manifest["notes"].as_array().unwrap();
    assert!(notes.iter().any(|note| note.as_str().unwrap().contains("built into the binary")), "{manifest}");

    let elsewhere = tempfile::tempdir().unwrap();
    let into = elsewhere.path().join("school");
    let restore = hedgerow_in(elsewhere.path(), &[&"restore", &archive, &"--into", &into]);
    assert!(restore.status.success(), "{}", text(&restore));
    let check = hedgerow_in(&into, &[&"check-config", &into.join("hedgerow.toml")]);
    assert!(check.status.success(), "{}", text(&check));
    let restored = SchoolFiles { config: into.join("hedgerow.toml"), data_dir: into.join("data"), ..files.clone() };
    let server = Hedgerow::start(&restored).await;
    assert!(resolves_to(&server.ask(PUPIL, PLAIN_NAME).await, support::server::PLAIN_ADDR));
    drop(server);
    authority.stop().await;
}
