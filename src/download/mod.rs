//! Keeps the last good copies of list sources up to date: URL sources are
//! downloaded, local `path` sources copied, both only after the same checks;
//! [`refresh`] also says how each source stands. `lists` compiles from these
//! copies and never uses this module ([`prepare`] runs the two in order).
//!
//! Files: this one (updates, the copies and their state files, the health
//! refresh), `http.rs` (requests, redirects, conditional GET, limits,
//! unpacking, failures explained), `validate.rs` (is it a plausible list?),
//! `state.rs` ([`DownloadState`]). The folder's layout is `lists::downloads`.
//!
//! Every URL source `<id>` owns two files in the downloads folder
//! (`data_dir/downloads`):
//!
//! - `<id>.txt`: the last good copy of the list as plain text, already taken
//!   out of any archive. `lists::load` compiles from this file, so a school
//!   whose internet link is down still filters with what it had.
//! - `<id>.state.json`: a [`DownloadState`]: the validators for conditional
//!   GETs, when the list was last fetched and checked, and the last error.
//!
//! A download replaces `<id>.txt` only once it has arrived in full, within the
//! size cap and the time limit, and looks like a list in the source's format.
//! Anything else leaves the old copy alone and says why in `last_error`, so a
//! broken mirror, a full disk or a captive portal's login page can never
//! empty a school's filter.
//!
//! Lists travel over https. Plain http is allowed only to this machine
//! (a local mirror, and the tests); redirects are followed here rather than
//! by the HTTP client so that every hop passes the same check and an https
//! source can never be downgraded to http.
//!
//! Everything here blocks: call it from `spawn_blocking` or a plain thread.
//! Two updates of the same source must not run at once (they share
//! `<id>.txt.tmp`); updates of different sources may.

use std::{
    fs::{self, File},
    io::{self, Read, Write},
    path::{Path, PathBuf},
    time::UNIX_EPOCH,
};

use serde::Serialize;

mod http;
mod state;
mod validate;

pub use http::FetchSettings;
pub use state::DownloadState;

use crate::files::{replace_with, write_atomically};
use crate::lists::compiled::ListError;
use crate::lists::health::{ListHealth, SourceHealth, SourceState};
use crate::lists::load::{self, Prepared};
use crate::lists::sources::ListSettings;
use crate::lists::{
    downloads,
    sources::{self, Location, SourceDecl},
};
use crate::policy::category;
use crate::time::day_string;
pub use crate::time::unix_now;
use http::{Fetched, fetch};
use validate::validate_file;

/// What one update of one source did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum FetchOutcome {
    /// A new copy was accepted and saved. `names` counts the names it blocks
    /// (block rules; allow rules are not counted); `bad_lines` the lines the
    /// parser could not understand and skipped.
    Updated { names: usize, bad_lines: usize },
    /// The list has not changed: the server answered 304 Not Modified, or
    /// sent exactly the bytes already saved. Nothing needs recompiling.
    NotModified,
    /// Nothing was saved; the last good copy (if any) is still in place.
    /// `reason` says what went wrong and how to fix it, and ends with
    /// "; keeping the last good copy from <date>" or "; no earlier copy".
    Failed { reason: String },
}

/// The files of source `id`'s last good copy, with their folder made: the
/// one set-up both a download and a local file's copy need.
fn copies_of(downloads_dir: &Path, id: &str) -> Result<Files, String> {
    let files = Files::new(downloads_dir, id)?;
    fs::create_dir_all(downloads_dir).map_err(|e| {
        format!(
            "cannot create the folder {} for last good copies ({e}); check that it is writable by the user \
             hedgerow runs as",
            downloads_dir.display()
        )
    })?;
    Ok(files)
}

/// Downloads one URL source into `downloads_dir/<id>.txt`, replacing the old
/// copy only with a complete, plausible list. Blocking.
pub fn update_source(source: &SourceDecl, downloads_dir: &Path, settings: &FetchSettings) -> FetchOutcome {
    let url = match &source.location {
        Location::Url(url) => url.as_str(),
        Location::Path(path) => {
            return FetchOutcome::Failed {
                reason: format!(
                    "source `{}` is the local file {}; there is nothing to download",
                    source.id,
                    path.display()
                ),
            };
        }
    };
    // Checked before any network traffic: a download that cannot be saved is
    // wasted, and this error has a different fix.
    let files = match copies_of(downloads_dir, &source.id) {
        Ok(files) => files,
        Err(reason) => return FetchOutcome::Failed { reason },
    };

    let mut state = files.read_state();
    let have_copy = files.text.is_file();
    // Validators describe the saved copy, so they are sent only while there
    // is one (else a 304 would leave us with nothing) and only to where it
    // came from: after the URL or member is changed, a 304 from the new
    // address (say, for an older file) must not keep the old list.
    let same_origin = state.url.as_deref() == Some(url) && state.member == source.member;
    let validators = (have_copy && same_origin).then(|| state.clone());

    let result = fetch(source, url, validators.as_ref(), settings).and_then(|fetched| {
        let now = unix_now();
        match fetched {
            Fetched::NotModified => Ok(FetchOutcome::NotModified),
            Fetched::List(list) => {
                let unchanged = have_copy && fs::read(&files.text).is_ok_and(|old| old == list.text.as_bytes());
                if !unchanged {
                    write_atomically(&files.text, |file| file.write_all(list.text.as_bytes())).map_err(|e| {
                        format!(
                            "could not save {} ({e}); check free disk space and that the \
                             folder is writable",
                            files.text.display()
                        )
                    })?;
                }
                state.url = Some(url.to_string());
                state.member = source.member.clone();
                state.etag = list.etag;
                state.last_modified = list.last_modified;
                state.fetched_at = Some(now);
                state.names = Some(list.names);
                state.bad_lines = Some(list.bad_lines);
                Ok(if unchanged {
                    FetchOutcome::NotModified
                } else {
                    FetchOutcome::Updated { names: list.names, bad_lines: list.bad_lines }
                })
            }
        }
    });

    let outcome = files.record(&mut state, result, unix_now(), have_copy);
    // The list itself is already safe (or untouched); a lost state file
    // costs at most one unconditional download next time.
    if let Err(e) = files.write_state(&state) {
        tracing::warn!(
            source = %source.id,
            "could not save {} ({e}); the next update will download the list in full",
            files.state.display()
        );
    }
    match &outcome {
        FetchOutcome::Updated { names, bad_lines } => {
            tracing::info!(source = %source.id, names, bad_lines, "list downloaded")
        }
        FetchOutcome::NotModified => tracing::debug!(source = %source.id, "list unchanged"),
        FetchOutcome::Failed { .. } => {}
    }
    outcome
}

/// Updates every enabled URL source, one after another (path sources and
/// disabled sources are skipped). Logs each failure with `tracing::warn`.
///
/// Holds an exclusive lock on `downloads_dir/.update.lock` throughout, so the
/// server's schedule and `hedgerow lists update` never write the same
/// `<id>.txt.tmp` at once; the second waits for the first.
pub fn update_all(
    sources: &[SourceDecl],
    downloads_dir: &Path,
    settings: &FetchSettings,
) -> Vec<(String, FetchOutcome)> {
    update_all_with(sources, downloads_dir, settings, |_, _| {})
}

/// [`update_all`], calling `progress(source, None)` as each download starts
/// and `progress(source, Some(outcome))` as it ends (for `hedgerow lists
/// update`, which prints a line for each).
pub fn update_all_with(
    sources: &[SourceDecl],
    downloads_dir: &Path,
    settings: &FetchSettings,
    mut progress: impl FnMut(&SourceDecl, Option<&FetchOutcome>),
) -> Vec<(String, FetchOutcome)> {
    let lock = std::fs::create_dir_all(downloads_dir)
        .and_then(|()| std::fs::File::create(downloads::lock(downloads_dir)))
        .and_then(|file| file.lock().map(|()| file));
    if let Err(error) = &lock {
        tracing::warn!(%error, dir = %downloads_dir.display(), "cannot lock the downloads folder; updating anyway");
    }
    sources
        .iter()
        .filter(|source| source.enabled && matches!(source.location, Location::Url(_)))
        .map(|source| {
            progress(source, None);
            let outcome = update_source(source, downloads_dir, settings);
            if let FetchOutcome::Failed { reason } = &outcome {
                tracing::warn!(source = %source.id, "list update failed: {reason}");
            }
            progress(source, Some(&outcome));
            (source.id.clone(), outcome)
        })
        .collect()
}

/// Checks a local `path` source as [`update_local`] would, without
/// keeping anything: the names it holds, or why it would be refused (for
/// `hedgerow check-config`).
pub fn check_local(source: &SourceDecl) -> Result<usize, String> {
    let Location::Path(path) = &source.location else {
        return Err(format!("source `{}` is a download, not a local file", source.id));
    };
    validate_file(path, source, &format!("the file {}", path.display())).map(|(names, _)| names)
}

/// Keeps the last good copy of a local `path` source, exactly as
/// [`update_source`] does for a download: the file is checked with the same
/// rules (not empty, text, mostly lines in its format) and copied to
/// `downloads_dir/<id>.txt` only when it passes, so a file that is emptied,
/// garbled, unreadable or deleted leaves the last good names in force.
/// [`super::load`] compiles every source from that copy. An unchanged file
/// (same length and modification time as last checked) is not read again.
/// Blocking.
pub fn update_local(source: &SourceDecl, downloads_dir: &Path) -> FetchOutcome {
    let Location::Path(path) = &source.location else {
        return FetchOutcome::Failed { reason: format!("source `{}` is a download, not a local file", source.id) };
    };
    let files = match copies_of(downloads_dir, &source.id) {
        Ok(files) => files,
        Err(reason) => return FetchOutcome::Failed { reason },
    };
    let mut state = files.read_state();
    let have_copy = files.text.is_file();
    let stamp = fs::metadata(path).ok().map(|meta| {
        let modified = meta.modified().ok().and_then(|time| time.duration_since(UNIX_EPOCH).ok());
        (meta.len(), modified.map_or(0, |d| d.as_nanos()))
    });
    let seen_before = stamp.is_some() && stamp == state.local_len.zip(state.local_modified);
    if seen_before && have_copy && state.last_error.is_none() {
        return FetchOutcome::NotModified;
    }
    if seen_before && let Some(reason) = &state.last_error {
        // The same bad file as last time: the same answer, without reading it.
        return FetchOutcome::Failed { reason: reason.clone() };
    }
    let now = unix_now();
    // Copied first, then checked and compared as the copy: what is checked
    // is exactly what is kept, even if the file changes meanwhile.
    let mut tmp = files.text.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = fs::copy(path, &tmp)
        .map_err(|e| {
            let fix = if e.kind() == io::ErrorKind::NotFound {
                format!("put the list back, or change `path` in {}", source.declared_in.display())
            } else {
                "check its permissions, and free disk space for the copy".to_string()
            };
            format!("cannot read {} ({e}); {fix}", path.display())
        })
        .and_then(|_| validate_file(&tmp, source, &format!("the file {}", path.display())))
        .and_then(|(names, bad_lines)| {
            let unchanged = have_copy && same_contents(&tmp, &files.text);
            if !unchanged {
                replace_with(&tmp, &files.text).map_err(|e| {
                    format!(
                        "could not save the last good copy {} ({e}); check free disk space and that the \
                         folder is writable",
                        files.text.display()
                    )
                })?;
                state.fetched_at = Some(now);
            }
            state.names = Some(names);
            state.bad_lines = Some(bad_lines);
            Ok(if unchanged { FetchOutcome::NotModified } else { FetchOutcome::Updated { names, bad_lines } })
        });
    let _ = fs::remove_file(&tmp);
    (state.local_len, state.local_modified) = stamp.unzip();
    let outcome = files.record(&mut state, result, now, have_copy);
    if let Err(e) = files.write_state(&state) {
        tracing::warn!(source = %source.id, "could not save {} ({e})", files.state.display());
    }
    outcome
}

/// Refreshes the last good copy of every enabled local source (see
/// [`update_local`]) and reads how every enabled download stands.
pub fn refresh(sources: &[SourceDecl], downloads_dir: &Path) -> ListHealth {
    let mut health = ListHealth { checked_at: unix_now(), ..ListHealth::default() };
    // The same lock as `update_all`: a `hedgerow lists compile` and a
    // server reload never write one copy's temporary file at once.
    let _lock = std::fs::create_dir_all(downloads_dir)
        .and_then(|()| std::fs::File::create(downloads::lock(downloads_dir)))
        .and_then(|file| file.lock().map(|()| file));
    for source in sources.iter().filter(|source| source.enabled) {
        let failure = match &source.location {
            Location::Path(_) => match update_local(source, downloads_dir) {
                FetchOutcome::Failed { reason } => Some(reason),
                FetchOutcome::Updated { .. } | FetchOutcome::NotModified => None,
            },
            Location::Url(_) => download_state(downloads_dir, &source.id).last_error,
        };
        let state = download_state(downloads_dir, &source.id);
        let copy = downloads::copy(downloads_dir, &source.id);
        let have_copy = copy.is_file();
        let (state_now, reason) = match (failure, have_copy) {
            (None, true) => (SourceState::Ok, None),
            (Some(reason), true) => (SourceState::Degraded, Some(reason)),
            (Some(reason), false) => (SourceState::Missing, Some(reason)),
            (None, false) => (
                SourceState::Missing,
                Some(format!("not downloaded yet ({} is missing); run `hedgerow lists update`", copy.display())),
            ),
        };
        health.sources.push(SourceHealth {
            id: source.id.clone(),
            category: category::by_index(source.category).map_or("?", |c| c.id).to_string(),
            since: (state_now != SourceState::Ok).then_some(state.failing_since.or(state.checked_at)).flatten(),
            names: have_copy.then_some(state.names).flatten(),
            copy_from: have_copy.then_some(state.fetched_at).flatten(),
            state: state_now,
            reason,
        });
    }
    health
}

/// What is known about a source's download; all `None` if it never ran (or
/// `id` could not name a file).
pub fn download_state(downloads_dir: &Path, id: &str) -> DownloadState {
    Files::new(downloads_dir, id).map(|files| files.read_state()).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Files

/// The files one source owns in the downloads folder.
struct Files {
    text: PathBuf,
    state: PathBuf,
}

impl Files {
    fn new(dir: &Path, id: &str) -> Result<Files, String> {
        // The id becomes a file name: the sources module already insists on
        // the one id rule; being sure here costs nothing.
        if !sources::valid_id(id) {
            return Err(format!("source id `{id}` cannot be used as a file name; use {}", sources::ID_RULE));
        }
        Ok(Files { text: downloads::copy(dir, id), state: downloads::state(dir, id) })
    }

    fn read_state(&self) -> DownloadState {
        match fs::read(&self.state) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                // Only costs a full download; not worth failing over.
                tracing::warn!("ignoring unreadable {} ({e})", self.state.display());
                DownloadState::default()
            }),
            Err(_) => DownloadState::default(),
        }
    }

    fn write_state(&self, state: &DownloadState) -> io::Result<()> {
        let mut json = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        json.push(b'\n');
        write_atomically(&self.state, |file| file.write_all(&json))
    }

    /// Notes one check of a source (a download or a local file) in its
    /// state: when it was checked, and since when it has been failing.
    fn record(
        &self,
        state: &mut DownloadState,
        result: Result<FetchOutcome, String>,
        now: u64,
        have_copy: bool,
    ) -> FetchOutcome {
        state.checked_at = Some(now);
        match result {
            Ok(outcome) => {
                state.last_error = None;
                state.failing_since = None;
                outcome
            }
            Err(reason) => {
                let reason = format!("{reason}; {}", self.keeping_note(state, have_copy));
                state.last_error = Some(reason.clone());
                state.failing_since = state.failing_since.or(Some(now));
                FetchOutcome::Failed { reason }
            }
        }
    }

    /// The end of every failure reason: whether filtering carries on with an
    /// older copy, and from when.
    fn keeping_note(&self, state: &DownloadState, have_copy: bool) -> String {
        if !have_copy {
            return "no earlier copy".to_string();
        }
        // The state file may be missing (copied by hand, or lost); the
        // file's own age is the next best thing.
        let when = state.fetched_at.or_else(|| {
            let modified = fs::metadata(&self.text).ok()?.modified().ok()?;
            Some(modified.duration_since(UNIX_EPOCH).ok()?.as_secs())
        });
        match when {
            Some(secs) => format!("keeping the last good copy from {}", format_utc(secs)),
            None => "keeping the last good copy".to_string(),
        }
    }
}

/// Whether two files hold the same bytes (read in chunks).
fn same_contents(a: &Path, b: &Path) -> bool {
    let (Ok(meta_a), Ok(meta_b)) = (fs::metadata(a), fs::metadata(b)) else { return false };
    if meta_a.len() != meta_b.len() {
        return false;
    }
    let (Ok(mut a), Ok(mut b)) = (File::open(a), File::open(b)) else { return false };
    let (mut buf_a, mut buf_b) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let Ok(n) = a.read(&mut buf_a) else { return false };
        if n == 0 {
            return true;
        }
        if b.read_exact(&mut buf_b[..n]).is_err() || buf_a[..n] != buf_b[..n] {
            return false;
        }
    }
}

/// `2025-03-04 05:06 UTC`. UTC keeps the code free of time zone data; the
/// dashboard can show local time.
fn format_utc(secs: u64) -> String {
    let minutes = secs % 86_400 / 60;
    format!("{} {:02}:{:02} UTC", day_string((secs / 86_400) as i64), minutes / 60, minutes % 60)
}

/// Brings the last good copies up to date ([`refresh`]), then prepares the
/// lists from them ([`load::prepare`]): the start-up and reload path.
pub fn prepare(settings: &ListSettings, data_dir: &Path) -> Result<Prepared, ListError> {
    load::prepare(settings, data_dir, &refresh)
}

/// Like [`prepare`], but always recompiles ([`load::rebuild`]).
pub fn rebuild(settings: &ListSettings, data_dir: &Path) -> Result<Prepared, ListError> {
    load::rebuild(settings, data_dir, &refresh)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ureq::http::Uri;

    use super::http::{check_url, human_bytes, human_duration, resolve_location, uri_path};
    use super::*;

    #[test]
    fn dates_format_in_utc() {
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13 UTC");
        assert_eq!(format_utc(4_102_444_799), "2099-12-31 23:59 UTC");
    }

    #[test]
    fn https_anywhere_http_only_on_loopback() {
        assert!(check_url("https://dsi.ut-capitole.fr/blacklists/x.tar.gz").is_ok());
        assert!(check_url("HTTPS://example.org/list").is_ok());
        for ok in [
            "http://127.0.0.1:8080/a",
            "http://127.3.2.1/a",
            "http://localhost/a",
            "http://LocalHost:1/a",
            "http://[::1]:9/a",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.org/list",
            "http://0.0.0.0:80/list",
            "http://10.0.0.1/list",
            "http://[::ffff:127.0.0.1]/list",
            "http://localhost.example.org/list",
            "ftp://example.org/list",
            "file:///etc/passwd",
            "example.org/list",
            "/just/a/path",
            "https://",
            "not a url",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn locations_resolve_against_the_base() {
        let base: Uri = "https://lists.example/a/b/list.txt?x=1".parse().unwrap();
        let cases = [
            ("https://other.example/x", "https://other.example/x"),
            ("//cdn.example/y", "https://cdn.example/y"),
            ("/top", "https://lists.example/top"),
            ("sibling.txt", "https://lists.example/a/b/sibling.txt"),
            ("?v=2", "https://lists.example/a/b/list.txt?v=2"),
        ];
        for (location, want) in cases {
            assert_eq!(resolve_location(&base, location), want, "{location}");
        }
        let root: Uri = "http://127.0.0.1:8/".parse().unwrap();
        assert_eq!(resolve_location(&root, "x"), "http://127.0.0.1:8/x");
    }

    #[test]
    fn url_paths_ignore_query_and_fragment() {
        assert_eq!(uri_path("https://h/a/b.tar.gz?x=1#f"), "/a/b.tar.gz");
        assert_eq!(uri_path("https://h"), "");
        assert_eq!(uri_path("https://h/x.tgz"), "/x.tgz");
    }

    #[test]
    fn ids_must_be_plain_file_names() {
        let dir = Path::new("/tmp/d");
        for ok in ["ut1-gambling", "hagezi_pro.plus", "a"] {
            assert!(Files::new(dir, ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "../escape", "a/b", "a\\b", "sp ace", &"x".repeat(101)] {
            assert!(Files::new(dir, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_bytes(200 * 1024 * 1024), "200 MiB");
        assert_eq!(human_bytes(4096), "4 KiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
        assert_eq!(human_bytes(3_688_890), "3.5 MiB");
        assert_eq!(human_duration(Duration::from_secs(60)), "60 s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5 s");
    }
}
