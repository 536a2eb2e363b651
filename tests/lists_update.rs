//! Downloading URL list sources (`hedgerow::download`) against a real
//! HTTP server on loopback, with real files in temporary folders.
//!
//! The rule every failure test checks: a bad download never touches the last
//! good `<id>.txt`, and says why in the state file.

mod support;

use std::{
    fs,
    io::Write,
    net::TcpListener,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use flate2::{Compression, write::GzEncoder};
use hedgerow::download::{DownloadState, FetchOutcome, FetchSettings, download_state, update_all, update_source};
use hedgerow::lists::{
    parse::Format,
    sources::{Location, SourceDecl},
};
use support::http::{HttpServer, Route};
use tempfile::TempDir;

const GOOD: &str = "# a test list\nads.example\ntracker.example\n\nbad-site.example\n";
const GOOD_V2: &str = "# a test list, version 2\nads.example\ntracker.example\nnew.example\nmore.example\n";

fn source(id: &str, url: &str) -> SourceDecl {
    SourceDecl {
        id: id.to_string(),
        category: 1,
        format: Format::Domains,
        location: Location::Url(url.to_string()),
        enabled: true,
        description: format!("test source {id}"),
        member: None,
        declared_in: PathBuf::from("lists/test.toml"),
    }
}

fn settings() -> FetchSettings {
    FetchSettings {
        timeout: Duration::from_secs(10),
        max_bytes: 1024 * 1024,
        user_agent: "hedgerow-test/1".to_string(),
    }
}

fn text_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.txt"))
}

fn reason(outcome: FetchOutcome) -> String {
    match outcome {
        FetchOutcome::Failed { reason } => reason,
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// Downloads `GOOD` with ETag v1, so a later failure has a copy to keep.
fn with_good_copy(server: &HttpServer, dir: &Path) -> (SourceDecl, Vec<u8>, DownloadState) {
    server.route("/list.txt", Route::ok(GOOD).etag("\"v1\""));
    let src = source("test", &server.url("/list.txt"));
    let outcome = update_source(&src, dir, &settings());
    assert_eq!(outcome, FetchOutcome::Updated { names: 3, bad_lines: 0 });
    let bytes = fs::read(text_path(dir, "test")).unwrap();
    (src, bytes, download_state(dir, "test"))
}

/// Asserts the failure left the old copy and recorded itself.
fn assert_kept(dir: &Path, old: &[u8], before: &DownloadState, reason: &str) {
    assert_eq!(fs::read(text_path(dir, "test")).unwrap(), old, "the last good copy changed");
    assert!(reason.contains("; keeping the last good copy from "), "{reason}");
    assert!(reason.ends_with(" UTC"), "{reason}");
    let after = download_state(dir, "test");
    assert_eq!(after.last_error.as_deref(), Some(reason));
    assert_eq!(after.fetched_at, before.fetched_at);
    assert_eq!(after.etag, before.etag);
    assert_eq!(after.names, before.names);
    assert!(after.checked_at >= before.checked_at);
    assert_no_temporary_files(dir);
}

fn assert_no_temporary_files(dir: &Path) {
    for entry in fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "left behind: {name}");
    }
}

fn tar_gz(files: &[(&str, &str)]) -> Vec<u8> {
    let mut archive = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        if path.ends_with('/') {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            archive.append_data(&mut header, path, std::io::empty()).unwrap();
        } else {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            archive.append_data(&mut header, path, data.as_bytes()).unwrap();
        }
    }
    archive.into_inner().unwrap().finish().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// Deterministic noise (xorshift), for "random bytes" bodies.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Good downloads and conditional GET

#[test]
fn good_list_downloads_then_second_update_is_not_modified() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    server.route("/list.txt", Route::ok(GOOD).etag("\"v1\""));
    let src = source("test", &server.url("/list.txt"));

    let outcome = update_source(&src, dir.path(), &settings());
    assert_eq!(outcome, FetchOutcome::Updated { names: 3, bad_lines: 0 });
    assert_eq!(fs::read_to_string(text_path(dir.path(), "test")).unwrap(), GOOD);
    let state = download_state(dir.path(), "test");
    assert_eq!(state.etag.as_deref(), Some("\"v1\""));
    assert_eq!(state.names, Some(3));
    assert_eq!(state.last_error, None);
    assert!(state.fetched_at.is_some() && state.checked_at.is_some());
    assert!(dir.path().join("test.state.json").is_file());
    assert_no_temporary_files(dir.path());

    let outcome = update_source(&src, dir.path(), &settings());
    assert_eq!(outcome, FetchOutcome::NotModified);
    assert_eq!(fs::read_to_string(text_path(dir.path(), "test")).unwrap(), GOOD);

    let requests = server.requests_to("/list.txt");
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].header("if-none-match"), None, "first download was conditional");
    assert_eq!(requests[1].header("if-none-match"), Some("\"v1\""));
    assert_eq!(requests[0].header("user-agent"), Some("hedgerow-test/1"));

    let after = download_state(dir.path(), "test");
    assert_eq!(after.fetched_at, state.fetched_at);
    assert_eq!(after.names, Some(3));
    assert!(after.checked_at >= state.checked_at);
}

#[test]
fn last_modified_is_sent_back_as_if_modified_since() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    let date = "Wed, 21 Oct 2015 07:28:00 GMT";
    server.route("/list.txt", Route::ok(GOOD).last_modified(date));
    let src = source("test", &server.url("/list.txt"));

    assert!(matches!(update_source(&src, dir.path(), &settings()), FetchOutcome::Updated { .. }));
    assert_eq!(download_state(dir.path(), "test").last_modified.as_deref(), Some(date));
    assert_eq!(update_source(&src, dir.path(), &settings()), FetchOutcome::NotModified);

    let requests = server.requests_to("/list.txt");
    assert_eq!(requests[0].header("if-modified-since"), None);
    assert_eq!(requests[1].header("if-modified-since"), Some(date));
}

#[test]
fn no_conditional_request_without_a_local_copy() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    let (src, _, _) = with_good_copy(&server, dir.path());
    fs::remove_file(text_path(dir.path(), "test")).unwrap();

    // The state still holds ETag v1, but a 304 would leave nothing to use.
    let outcome = update_source(&src, dir.path(), &settings());
    assert_eq!(outcome, FetchOutcome::Updated { names: 3, bad_lines: 0 });
    assert_eq!(server.requests_to("/list.txt")[1].header("if-none-match"), None);
    assert_eq!(fs::read_to_string(text_path(dir.path(), "test")).unwrap(), GOOD);
}

#[test]
fn changing_the_url_or_member_forgets_the_old_validators() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    let date = "Wed, 21 Oct 2015 07:28:00 GMT";
    server.route("/a.txt", Route::ok(GOOD).etag("\"same\"").last_modified(date));
    server.route("/b.txt", Route::ok(GOOD_V2).etag("\"same\"").last_modified(date));
    let mut src = source("test", &server.url("/a.txt"));
    assert!(matches!(update_source(&src, dir.path(), &settings()), FetchOutcome::Updated { .. }));
    let state = download_state(dir.path(), "test");
    assert_eq!(state.url.as_deref(), Some(server.url("/a.txt").as_str()));
    assert_eq!(state.member, None);

    // The new address would answer 304 to the old validators.
    src.location = Location::Url(server.url("/b.txt"));
    assert_eq!(update_source(&src, dir.path(), &settings()), FetchOutcome::Updated { names: 4, bad_lines: 0 });
    let request = &server.requests_to("/b.txt")[0];
    assert_eq!(request.header("if-none-match"), None);
    assert_eq!(request.header("if-modified-since"), None);
    assert_eq!(fs::read_to_string(text_path(dir.path(), "test")).unwrap(), GOOD_V2);

    // Same for another file out of the same archive.
    let archive = tar_gz(&[("bl/one/domains", "one.example\n"), ("bl/two/domains", "two.example\n")]);
    server.route("/bl.tar.gz", Route::ok(archive).etag("\"bl\""));
    src.location = Location::Url(server.url("/bl.tar.gz"));
    src.member = Some("one/domains".to_string());
    assert!(matches!(update_source(&src, dir.path(), &settings()), FetchOutcome::Updated { .. }));
    assert_eq!(update_source(&src, dir.path(), &settings()), FetchOutcome::NotModified);
    src.member = Some("two/domains".to_string());
    assert!(matches!(update_source(&src, dir.path(), &settings()), FetchOutcome::Updated { .. }));
    assert_eq!(fs::read_to_string(text_path(dir.path(), "test")).unwrap(), "two.example\n");
    let requests = server.requests_to("/bl.tar.gz");
    let sent: Vec<Option<&str>> = requests.iter().map(|r| r.header("if-none-match")).collect();
    assert_eq!(sent, [None, Some("\"bl\""), None]);
}

#[test]
fn changed_list_replaces_the_copy() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    let (src, _, _) = with_good_copy(&server, dir.path());
    server.route("/list.txt", Route::ok(GOOD_V2).etag("\"v2\""));

    let outcome = update_source(&src, dir.path(), &settings());
    assert_eq!(outcome, FetchOutcome::Updated { names: 4, bad_lines: 0 });
    assert_eq!(fs::read_to_string(text_path(dir.path(), "test")).unwrap(), GOOD_V2);
    let state = download_state(dir.path(), "test");
    assert_eq!(state.etag.as_deref(), Some("\"v2\""));
    assert_eq!(state.names, Some(4));
}

#[test]
fn same_bytes_from_a_server_without_validators_count_as_not_modified() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    server.route("/list.txt", Route::ok(GOOD));
    let src = source("test", &server.url("/list.txt"));

    assert!(matches!(update_source(&src, dir.path(), &settings()), FetchOutcome::Updated { .. }));
    assert_eq!(update_source(&src, dir.path(), &settings()), FetchOutcome::NotModified);
    assert_eq!(server.requests_to("/list.txt").len(), 2);
    assert_eq!(fs::read_to_string(text_path(dir.path(), "test")).unwrap(), GOOD);
}

#[test]
fn some_bad_lines_are_tolerated_and_counted() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    server.route("/list.txt", Route::ok("a.example\nb.example\nc.example\nnot a name\n"));
    let src = source("test", &server.url("/list.txt"));
    let outcome = update_source(&src, dir.path(), &settings());
    assert_eq!(outcome, FetchOutcome::Updated { names: 3, bad_lines: 1 });
}

#[test]
fn hosts_and_adblock_lists_validate_in_their_own_format() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    server.route("/hosts", Route::ok("127.0.0.1 localhost\n0.0.0.0 a.example b.example\n"));
    server.route("/adblock", Route::ok("[Adblock Plus 2.0]\n! comment\n||a.example^\n@@||ok.a.example^\n"));

    let mut hosts = source("hosts", &server.url("/hosts"));
    hosts.format = Format::Hosts;
    let mut adblock = source("adblock", &server.url("/adblock"));
    adblock.format = Format::Adblock;
    assert_eq!(update_source(&hosts, dir.path(), &settings()), FetchOutcome::Updated { names: 2, bad_lines: 0 });
    // Allow rules are not counted as names.
    assert_eq!(update_source(&adblock, dir.path(), &settings()), FetchOutcome::Updated { names: 1, bad_lines: 0 });

    // A domains list declared as hosts is mostly bad lines.
    server.route("/hosts", Route::ok(GOOD));
    fs::remove_file(text_path(dir.path(), "hosts")).unwrap();
    let why = reason(update_source(&hosts, dir.path(), &settings()));
    assert!(why.contains("`hosts`") && why.contains("lists/test.toml"), "{why}");
    assert!(why.ends_with("; no earlier copy"), "{why}");
}

// ---------------------------------------------------------------------------
// Garbage served with 200

#[test]
fn html_page_is_rejected_and_the_old_copy_kept() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    let (src, old, before) = with_good_copy(&server, dir.path());
    server.route(
        "/list.txt",
        Route::ok("<!DOCTYPE html>\n<html><head><title>Login</title></head>\n<body>Please sign in</body></html>\n")
            .header("Content-Type", "text/html"),
    );

    let why = reason(update_source(&src, dir.path(), &settings()));
    assert!(why.contains("web page"), "{why}");
    assert_kept(dir.path(), &old, &before, &why);
}

#[test]
fn prose_with_no_names_is_rejected() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    let (src, old, before) = with_good_copy(&server, dir.path());
    server.route("/list.txt", Route::ok("Service temporarily unavailable.\nPlease try again later.\n"));

    let why = reason(update_source(&src, dir.path(), &settings()));
    assert!(why.contains("no names to block"), "{why}");
    assert_kept(dir.path(), &old, &before, &why);
}

#[test]
fn mostly_bad_lines_are_rejected() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    let (src, old, before) = with_good_copy(&server, dir.path());
    server.route("/list.txt", Route::ok("a.example\nb.example\nno good\nnot good\nbad line\nworse line\n"));

    let why = reason(update_source(&src, dir.path(), &settings()));
    assert!(why.contains("4 of 6 lines are not valid `domains` lines"), "{why}");
    assert!(why.contains("line 3 `no good`"), "{why}");
    assert_kept(dir.path(), &old, &before, &why);
}

#[test]
fn random_bytes_are_rejected_and_the_old_copy_kept() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    let (src, old, before) = with_good_copy(&server, dir.path());
    server.route("/list.txt", Route::ok(noise(64 * 1024)));

    let why = reason(update_source(&src, dir.path(), &settings()));
    assert!(why.contains("binary"), "{why}");
    assert_kept(dir.path(), &old, &before, &why);
}

#[test]
fn empty_body_is_rejected() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    let (src, old, before) = with_good_copy(&server, dir.path());
    server.route("/list.txt", Route::ok("\n \n"));

    let why = reason(update_source(&src, dir.path(), &settings()));
    assert!(why.contains("empty"), "{why}");
    assert_kept(dir.path(), &old, &before, &why);
}

// ---------------------------------------------------------------------------
// HTTP errors, size cap, timeouts

#[test]
fn http_errors_fail_and_keep_the_old_copy() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    let (src, old, before) = with_good_copy(&server, dir.path());
    for (status, advice) in
        [(404, "check the URL in lists/test.toml"), (500, "try again later"), (403, "refused access")]
    {
        server.route("/list.txt", Route::status(status, "nope\n"));
        let why = reason(update_source(&src, dir.path(), &settings()));
        assert!(why.contains(&format!("HTTP {status}")), "{why}");
        assert!(why.contains(advice), "{why}");
        assert_kept(dir.path(), &old, &before, &why);
    }
}

#[test]
fn failure_without_an_earlier_copy_says_so() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    let src = source("test", &server.url("/missing.txt"));

    let why = reason(update_source(&src, dir.path(), &settings()));
    assert!(why.contains("HTTP 404"), "{why}");
    assert!(why.ends_with("; no earlier copy"), "{why}");
    assert!(!text_path(dir.path(), "test").exists());
    let state = download_state(dir.path(), "test");
    assert_eq!(state.last_error.as_deref(), Some(why.as_str()));
    assert_eq!(state.fetched_at, None);
    assert!(state.checked_at.is_some());
}

#[test]
fn body_over_the_cap_fails_with_or_without_content_length() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    let (src, old, before) = with_good_copy(&server, dir.path());
    let big: String = (0..200_000).map(|i| format!("host{i}.example\n")).collect();
    assert!(big.len() as u64 > settings().max_bytes);

    // Declared up front: refused before reading.
    server.route("/list.txt", Route::ok(big.clone()));
    let why = reason(update_source(&src, dir.path(), &settings()));
    assert!(why.contains("size cap is 1 MiB"), "{why}");
    assert_kept(dir.path(), &old, &before, &why);

    // Chunked, no Content-Length: the count while reading catches it.
    server.route("/list.txt", Route::ok(big).chunked());
    let why = reason(update_source(&src, dir.path(), &settings()));
    assert!(why.contains("over the 1 MiB size cap"), "{why}");
    assert_kept(dir.path(), &old, &before, &why);
}

#[test]
fn stalled_server_fails_within_the_timeout() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    let (src, old, before) = with_good_copy(&server, dir.path());
    let quick = FetchSettings { timeout: Duration::from_secs(1), ..settings() };

    server.route("/list.txt", Route::ok(GOOD_V2).stall(Duration::from_secs(30)));
    let started = Instant::now();
    let why = reason(update_source(&src, dir.path(), &quick));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(why.contains("timed out after 1 s"), "{why}");
    assert_kept(dir.path(), &old, &before, &why);
}

#[test]
fn server_stalling_mid_body_fails_within_the_timeout() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    let (src, old, before) = with_good_copy(&server, dir.path());
    let quick = FetchSettings { timeout: Duration::from_secs(1), ..settings() };

    // Half a valid list, then silence: a partial list must not be kept.
    server.route("/list.txt", Route::ok(GOOD_V2).stall_mid_body(Duration::from_secs(30)));
    let started = Instant::now();
    let why = reason(update_source(&src, dir.path(), &quick));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(why.contains("timed out"), "{why}");
    assert_kept(dir.path(), &old, &before, &why);
}

// ---------------------------------------------------------------------------
// Archives and compression

#[test]
fn tar_gz_member_is_extracted() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    let gambling = "bet.example\ncasino.example\n";
    let archive = tar_gz(&[
        ("blacklists/", ""),
        ("blacklists/gambling/", ""),
        ("blacklists/gambling/urls", "bet.example/page\n"),
        ("blacklists/gambling/domains", gambling),
        ("blacklists/adult/domains", "adult.example\n"),
        ("blacklists/gambling/domains.old", "old.example\n"),
    ]);
    server.route("/gambling.tar.gz", Route::ok(archive).header("Content-Type", "application/x-gzip"));
    let mut src = source("ut1-gambling", &server.url("/gambling.tar.gz"));
    src.member = Some("gambling/domains".to_string());

    let outcome = update_source(&src, dir.path(), &settings());
    assert_eq!(outcome, FetchOutcome::Updated { names: 2, bad_lines: 0 });
    assert_eq!(fs::read_to_string(text_path(dir.path(), "ut1-gambling")).unwrap(), gambling);
}

#[test]
fn tgz_holding_a_single_file_needs_no_member() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    server.route("/list.tgz", Route::ok(tar_gz(&[("lists/", ""), ("lists/only", GOOD)])));
    let src = source("test", &server.url("/list.tgz"));

    assert_eq!(update_source(&src, dir.path(), &settings()), FetchOutcome::Updated { names: 3, bad_lines: 0 });
    assert_eq!(fs::read_to_string(text_path(dir.path(), "test")).unwrap(), GOOD);
}

#[test]
fn archive_problems_are_explained() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    let (mut src, old, before) = with_good_copy(&server, dir.path());
    let archive = tar_gz(&[("bl/gambling/domains", "bet.example\n"), ("bl/games/domains", "game.example\n")]);
    server.route("/bl.tar.gz", Route::ok(archive));
    src.location = Location::Url(server.url("/bl.tar.gz"));

    src.member = Some("dating/domains".to_string());
    let why = reason(update_source(&src, dir.path(), &settings()));
    assert!(why.contains("no file ending in `dating/domains`"), "{why}");
    assert!(why.contains("bl/gambling/domains, bl/games/domains"), "{why}");
    assert_kept(dir.path(), &old, &before, &why);

    src.member = None;
    let why = reason(update_source(&src, dir.path(), &settings()));
    assert!(why.contains("several files") && why.contains("set `member`"), "{why}");
    assert_kept(dir.path(), &old, &before, &why);

    // Not an archive at all.
    server.route("/bl.tar.gz", Route::ok(GOOD));
    src.member = Some("gambling/domains".to_string());
    let why = reason(update_source(&src, dir.path(), &settings()));
    assert!(why.contains("not a readable tar archive"), "{why}");
    assert_kept(dir.path(), &old, &before, &why);

    // A tar archive where a plain list was expected.
    server.route("/plain.txt", Route::ok(tar_gz(&[("x/domains", "a.example\n")])));
    src.location = Location::Url(server.url("/plain.txt"));
    src.member = None;
    let why = reason(update_source(&src, dir.path(), &settings()));
    assert!(why.contains("set `member`"), "{why}");
    assert_kept(dir.path(), &old, &before, &why);
}

#[test]
fn archive_unpacking_past_the_cap_fails() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    let (mut src, old, before) = with_good_copy(&server, dir.path());
    // Compresses to a few KiB, unpacks to 4 MiB against a 1 MiB cap.
    let huge = "a.example\n".repeat(400 * 1024);
    let gz = gzip(huge.as_bytes());
    assert!((gz.len() as u64) < settings().max_bytes);
    server.route("/list.gz", Route::ok(gz));
    src.location = Location::Url(server.url("/list.gz"));
    let why = reason(update_source(&src, dir.path(), &settings()));
    assert!(why.contains("unpacks to more than the 1 MiB size cap"), "{why}");
    assert_kept(dir.path(), &old, &before, &why);

    server.route("/big.tar.gz", Route::ok(tar_gz(&[("x/domains", &huge)])));
    src.location = Location::Url(server.url("/big.tar.gz"));
    src.member = Some("x/domains".to_string());
    let why = reason(update_source(&src, dir.path(), &settings()));
    assert!(why.contains("unpacks to more than the 1 MiB size cap"), "{why}");
    assert_kept(dir.path(), &old, &before, &why);
}

#[test]
fn gzip_bodies_are_unpacked_however_they_are_labelled() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    server.route("/encoded.txt", Route::ok(gzip(GOOD.as_bytes())).header("Content-Encoding", "gzip"));
    server.route("/list.txt.gz", Route::ok(gzip(GOOD_V2.as_bytes())));

    let encoded = source("encoded", &server.url("/encoded.txt"));
    let file = source("file", &server.url("/list.txt.gz"));
    assert!(matches!(update_source(&encoded, dir.path(), &settings()), FetchOutcome::Updated { .. }));
    assert!(matches!(update_source(&file, dir.path(), &settings()), FetchOutcome::Updated { .. }));
    assert_eq!(fs::read_to_string(text_path(dir.path(), "encoded")).unwrap(), GOOD);
    assert_eq!(fs::read_to_string(text_path(dir.path(), "file")).unwrap(), GOOD_V2);
}

// ---------------------------------------------------------------------------
// Redirects and URL rules

#[test]
fn redirects_are_followed_and_checked() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    server.route("/old", Route::redirect(301, "/moved/list.txt"));
    server.route("/moved/list.txt", Route::redirect(302, "final.txt"));
    server.route("/moved/final.txt", Route::ok(GOOD));
    let src = source("test", &server.url("/old"));
    assert!(matches!(update_source(&src, dir.path(), &settings()), FetchOutcome::Updated { .. }));
    assert_eq!(server.requests_to("/moved/final.txt").len(), 1);

    // Off this machine over plain http: refused before connecting. (On
    // Linux 0.0.0.0 reaches this machine, so traffic would show up here.)
    let port = server.addr().port();
    server.route("/away", Route::redirect(302, &format!("http://0.0.0.0:{port}/moved/final.txt")));
    let src = source("away", &server.url("/away"));
    let why = reason(update_source(&src, dir.path(), &settings()));
    assert!(why.contains("redirected to") && why.contains("https"), "{why}");
    assert_eq!(server.requests_to("/moved/final.txt").len(), 1);

    server.route("/loop-a", Route::redirect(302, "/loop-b"));
    server.route("/loop-b", Route::redirect(307, "/loop-a"));
    let src = source("loop", &server.url("/loop-a"));
    let why = reason(update_source(&src, dir.path(), &settings()));
    assert!(why.contains("more than 5 redirects"), "{why}");
    assert!(server.requests_to("/loop-a").len() <= 3);
}

#[test]
fn https_to_a_loopback_port_without_tls_fails_cleanly() {
    let dir = TempDir::new().unwrap();
    let quick = FetchSettings { timeout: Duration::from_secs(5), ..settings() };

    // Nothing listening.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let src = source("closed", &format!("https://127.0.0.1:{closed}/list.txt"));
    let why = reason(update_source(&src, dir.path(), &quick));
    assert!(why.contains(&format!("127.0.0.1:{closed}")), "{why}");
    assert!(why.ends_with("; no earlier copy"), "{why}");

    // A plain HTTP server where TLS was expected.
    let server = HttpServer::start();
    server.route("/list.txt", Route::ok(GOOD));
    let src = source("plain", &format!("https://{}/list.txt", server.addr()));
    let started = Instant::now();
    let why = reason(update_source(&src, dir.path(), &quick));
    assert!(started.elapsed() < quick.timeout, "took {:?}: {why}", started.elapsed());
    assert!(why.contains("TLS"), "{why}");
    assert!(server.connections() >= 1);
    assert!(server.requests().is_empty());
    assert!(!text_path(dir.path(), "plain").exists());
}

#[test]
fn plain_http_off_this_machine_is_rejected_without_traffic() {
    let server = HttpServer::start();
    server.route("/list.txt", Route::ok(GOOD));
    let dir = TempDir::new().unwrap();
    let port = server.addr().port();
    for url in [
        format!("http://0.0.0.0:{port}/list.txt"),
        // TEST-NET-1: a connection attempt would hang until the timeout.
        "http://192.0.2.1/list.txt".to_string(),
        "http://lists.example.org/list.txt".to_string(),
    ] {
        let started = Instant::now();
        let why = reason(update_source(&source("test", &url), dir.path(), &settings()));
        assert!(started.elapsed() < Duration::from_secs(1), "{url} took {:?}", started.elapsed());
        assert!(why.contains("plain http") && why.contains("lists/test.toml"), "{why}");
    }
    assert_eq!(server.connections(), 0);

    for url in ["ftp://lists.example.org/list.txt", "file:///etc/hosts", "lists.example.org/list.txt"] {
        let why = reason(update_source(&source("test", url), dir.path(), &settings()));
        assert!(why.contains("https://"), "{why}");
    }
    assert!(!text_path(dir.path(), "test").exists());
}

#[test]
fn unusable_ids_are_refused_before_anything_is_written() {
    let server = HttpServer::start();
    server.route("/list.txt", Route::ok(GOOD));
    let root = TempDir::new().unwrap();
    let dir = root.path().join("downloads");
    let why = reason(update_source(&source("../escape", &server.url("/list.txt")), &dir, &settings()));
    assert!(why.contains("cannot be used as a file name"), "{why}");
    assert!(!root.path().join("escape.txt").exists());
    assert_eq!(server.connections(), 0);
    assert_eq!(download_state(&dir, "../escape"), DownloadState::default());
}

// ---------------------------------------------------------------------------
// Many sources

#[test]
fn update_all_visits_enabled_url_sources_only() {
    let server = HttpServer::start();
    let dir = TempDir::new().unwrap();
    server.route("/good.txt", Route::ok(GOOD));
    server.route("/off.txt", Route::ok(GOOD));

    let good = source("good", &server.url("/good.txt"));
    let mut off = source("off", &server.url("/off.txt"));
    off.enabled = false;
    let mut local = source("local", "unused");
    local.location = Location::Path(PathBuf::from("lists/local.txt"));
    let gone = source("gone", &server.url("/gone.txt"));

    // The downloads folder does not exist yet: it is created.
    let downloads = dir.path().join("data/downloads");
    let results = update_all(&[good, off, local, gone], &downloads, &settings());
    let ids: Vec<&str> = results.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["good", "gone"]);
    assert_eq!(results[0].1, FetchOutcome::Updated { names: 3, bad_lines: 0 });
    assert!(matches!(&results[1].1, FetchOutcome::Failed { reason } if reason.contains("HTTP 404")));
    assert!(server.requests_to("/off.txt").is_empty());
    assert!(!text_path(&downloads, "off").exists());
    assert!(!text_path(&downloads, "local").exists());
}

#[test]
fn a_path_source_has_nothing_to_download() {
    let dir = TempDir::new().unwrap();
    let mut local = source("local", "unused");
    local.location = Location::Path(PathBuf::from("lists/local.txt"));
    let why = reason(update_source(&local, dir.path(), &settings()));
    assert!(why.contains("nothing to download"), "{why}");
}

#[test]
fn download_state_of_a_source_never_fetched_is_empty() {
    let dir = TempDir::new().unwrap();
    assert_eq!(download_state(dir.path(), "never"), DownloadState::default());
    // A corrupt state file only costs a full download.
    fs::write(dir.path().join("broken.state.json"), "{ not json").unwrap();
    assert_eq!(download_state(dir.path(), "broken"), DownloadState::default());
}

#[test]
fn default_settings() {
    let defaults = FetchSettings::default();
    assert_eq!(defaults.timeout, Duration::from_secs(60));
    assert_eq!(defaults.max_bytes, 200 * 1024 * 1024);
    assert!(defaults.user_agent.starts_with("hedgerow/"), "{}", defaults.user_agent);
}
