//! Keeps local copies of URL list sources up to date.
//!
//! Every URL source `<id>` owns two files in the downloads folder
//! (`data_dir/downloads`):
//!
//! - `<id>.txt`: the last good copy of the list as plain text, already taken
//!   out of any archive. [`super::load`] compiles from this file, so a school
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
    cell::RefCell,
    fs::{self, File},
    io::{self, Read, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant, UNIX_EPOCH},
};

use flate2::read::GzDecoder;
use serde::{Deserialize, Serialize};
use ureq::http::{StatusCode, Uri, header};

mod validate;

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
use validate::{NewList, validate, validate_file};

/// Redirect hops followed before giving up (browsers allow about 20; list
/// hosts use one or two).
const MAX_REDIRECTS: usize = 5;

/// How to download: limits and identity.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// Limit on the whole request: connecting, every redirect and the body.
    pub timeout: Duration,
    /// Cap on the body as received, and again on the list once unpacked
    /// from gzip or tar, so a small archive cannot unpack into gigabytes.
    pub max_bytes: u64,
    /// Sent as `User-Agent`, so list publishers can see who fetches them.
    pub user_agent: String,
}

impl Default for FetchSettings {
    fn default() -> Self {
        FetchSettings {
            timeout: Duration::from_secs(60),
            // The biggest public lists (UT1 "adult", full HaGeZi) are tens of
            // MiB; this leaves room without letting a runaway server fill
            // memory on a small box.
            max_bytes: 200 * 1024 * 1024,
            user_agent: concat!("hedgerow/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

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

/// What is known about a source's download, kept in `<id>.state.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DownloadState {
    /// The URL the saved copy came from (as declared, before redirects).
    pub url: Option<String>,
    /// The archive member the saved copy was taken from, if any.
    pub member: Option<String>,
    /// `ETag` of the saved copy, sent back as `If-None-Match`.
    pub etag: Option<String>,
    /// `Last-Modified` of the saved copy, sent back as `If-Modified-Since`.
    pub last_modified: Option<String>,
    /// Unix seconds of the last good download.
    pub fetched_at: Option<u64>,
    /// Unix seconds of the last attempt, whatever its result.
    pub checked_at: Option<u64>,
    /// Why the last attempt failed; `None` once one succeeds.
    pub last_error: Option<String>,
    /// Names the saved copy blocks (see [`FetchOutcome::Updated`]).
    pub names: Option<usize>,
    /// Unix seconds of the first failure since the last success (`None`
    /// while the source is healthy): how long it has been degraded.
    pub failing_since: Option<u64>,
    /// For a local `path` source: the length and modification time (Unix
    /// nanoseconds) of the file last checked, so an unchanged file is not
    /// read again on every reload.
    pub local_len: Option<u64>,
    pub local_modified: Option<u128>,
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
    let files = match Files::new(downloads_dir, &source.id) {
        Ok(files) => files,
        Err(reason) => return FetchOutcome::Failed { reason },
    };
    // Checked before any network traffic: a download that cannot be saved is
    // wasted, and this error has a different fix.
    if let Err(e) = fs::create_dir_all(downloads_dir) {
        return FetchOutcome::Failed {
            reason: format!(
                "cannot create the downloads folder {} ({e}); check that it is writable \
                 by the user hedgerow runs as",
                downloads_dir.display()
            ),
        };
    }

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
    let files = match Files::new(downloads_dir, &source.id) {
        Ok(files) => files,
        Err(reason) => return FetchOutcome::Failed { reason },
    };
    if let Err(e) = fs::create_dir_all(downloads_dir) {
        return FetchOutcome::Failed {
            reason: format!(
                "cannot create the folder {} for last good copies ({e}); check that it is writable \
                 by the user hedgerow runs as",
                downloads_dir.display()
            ),
        };
    }
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

// ---------------------------------------------------------------------------
// Downloading

enum Fetched {
    NotModified,
    List(NewList),
}

/// One download: request (following redirects), read within the limits,
/// unpack, validate. Errors are reasons for a person, without the
/// "keeping ..." ending.
fn fetch(
    source: &SourceDecl,
    url: &str,
    validators: Option<&DownloadState>,
    settings: &FetchSettings,
) -> Result<Fetched, String> {
    let now = Instant::now();
    // A timeout too large to add is as good as none.
    let deadline = now.checked_add(settings.timeout).unwrap_or(now + Duration::from_secs(365 * 86_400));
    let declared_in = source.declared_in.display();
    let mut uri = check_url(url).map_err(|e| format!("{e}; fix the URL in {declared_in}"))?;

    let agent = ureq::Agent::config_builder()
        // Statuses and redirects are explained and checked below.
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(settings.user_agent.as_str())
        .build()
        .new_agent();

    let mut hops = 0;
    let mut response = loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(timed_out(settings.timeout, &uri));
        }
        let mut request = agent
            .get(uri.clone())
            .config()
            .timeout_global(Some(remaining))
            // A proxy from HTTPS_PROXY cannot reach this machine's loopback.
            .proxy(if is_loopback(&uri) { None } else { ureq::Proxy::try_from_env() })
            .build();
        if let Some(state) = validators {
            if let Some(etag) = &state.etag {
                request = request.header(header::IF_NONE_MATCH, etag);
            }
            if let Some(date) = &state.last_modified {
                request = request.header(header::IF_MODIFIED_SINCE, date);
            }
        }
        let response = request.call().map_err(|e| describe_ureq(&e, &uri, settings))?;

        let status = response.status();
        if !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
            break response;
        }
        let location =
            response.headers().get(header::LOCATION).and_then(|value| value.to_str().ok()).ok_or_else(|| {
                format!("{uri} answered {status} without a usable Location; check the URL in {declared_in}")
            })?;
        hops += 1;
        if hops > MAX_REDIRECTS {
            return Err(format!(
                "more than {MAX_REDIRECTS} redirects starting from {url}; check the URL in {declared_in}"
            ));
        }
        let target = resolve_location(&uri, location);
        let next = check_url(&target).map_err(|e| format!("{uri} redirected to {target}, which is refused: {e}"))?;
        if is_https(&uri) && !is_https(&next) {
            return Err(format!(
                "{uri} redirected to plain http ({next}); refusing to give up https. \
                 Ask the list's publisher, or use an https URL that does not redirect"
            ));
        }
        uri = next;
    };

    let status = response.status();
    if status == StatusCode::NOT_MODIFIED {
        return match validators {
            Some(_) => Ok(Fetched::NotModified),
            None => Err(format!(
                "{uri} answered 304 Not Modified to a request that was not conditional; \
                 the server is misbehaving"
            )),
        };
    }
    if !status.is_success() {
        return Err(describe_status(status, &uri, source));
    }

    let header_text = |name| {
        let value = response.headers().get(name)?.to_str().ok()?;
        Some(value.to_string())
    };
    let etag = header_text(header::ETAG);
    let last_modified = header_text(header::LAST_MODIFIED);

    // An early, clear refusal when the server admits the size up front. The
    // count while reading is what actually enforces the cap.
    if let Some(length) = response.body().content_length()
        && length > settings.max_bytes
    {
        return Err(format!(
            "{uri} is {} but the download size cap is {}; if the list really is \
             this big, raise the cap",
            human_bytes(length),
            human_bytes(settings.max_bytes)
        ));
    }

    let reading = Reading { uri: &uri, settings, deadline, failure: RefCell::new(None) };
    let member =
        source.member.as_deref().map(|m| m.trim_start_matches("./").trim_start_matches('/')).filter(|m| !m.is_empty());
    let path = uri_path(url).to_ascii_lowercase();
    let is_archive = member.is_some() || [".tar.gz", ".tgz", ".tar"].iter().any(|ext| path.ends_with(ext));
    let body = response.body_mut().as_reader();
    let bytes = reading.read_body(body, is_archive.then_some(member), source)?;

    let list = validate(bytes, source, "the download")?;
    Ok(Fetched::List(NewList { etag, last_modified, ..list }))
}

/// Shared by the layers that read a body, so the innermost one that knows
/// why reading stopped (cap, deadline, network) can say so: by the time an
/// error has come up through gzip and tar its cause is often lost.
struct Reading<'a> {
    uri: &'a Uri,
    settings: &'a FetchSettings,
    deadline: Instant,
    failure: RefCell<Option<String>>,
}

#[derive(Clone, Copy)]
enum Stage {
    /// Bytes as they come off the connection (after any Content-Encoding).
    Download,
    /// Bytes coming out of gunzip.
    Unpack,
}

impl Reading<'_> {
    /// Records why reading stopped, unless a lower layer already did.
    fn stop(&self, reason: String) {
        self.failure.borrow_mut().get_or_insert(reason);
    }

    /// The reason for a read error: the recorded one if any, else the
    /// deadline if it has passed, else `otherwise`.
    fn explain(&self, otherwise: impl FnOnce() -> String) -> String {
        if let Some(reason) = self.failure.borrow_mut().take() {
            return reason;
        }
        if Instant::now() >= self.deadline {
            return timed_out(self.settings.timeout, self.uri);
        }
        otherwise()
    }

    fn too_big(&self, stage: Stage) -> String {
        let cap = human_bytes(self.settings.max_bytes);
        match stage {
            Stage::Download => format!(
                "the download from {} is over the {cap} size cap; if the list really is \
                 this big, raise the cap",
                self.uri
            ),
            Stage::Unpack => format!(
                "the download from {} unpacks to more than the {cap} size cap; if the list \
                 really is this big, raise the cap",
                self.uri
            ),
        }
    }

    /// The list's bytes: the body itself, gunzipped if it is gzip, and if
    /// `archive` is `Some`, the chosen file from inside the tar.
    fn read_body(
        &self,
        body: impl Read,
        archive: Option<Option<&str>>,
        source: &SourceDecl,
    ) -> Result<Vec<u8>, String> {
        let mut download = Guarded::new(body, self, Stage::Download);
        // Peek at the magic number to spot gzip, whatever the URL or headers
        // say (servers label .tar.gz in every way imaginable), then put the
        // peeked bytes back in front.
        let mut magic = [0u8; 2];
        let mut got = 0;
        while got < magic.len() {
            match download.read(&mut magic[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.explain(|| e.to_string())),
            }
        }
        let stream = io::Cursor::new(magic[..got].to_vec()).chain(download);
        let gzipped = magic[..got] == [0x1f, 0x8b];
        let mut list: Box<dyn Read + '_> = if gzipped {
            Box::new(Guarded::new(GzDecoder::new(stream), self, Stage::Unpack))
        } else {
            Box::new(stream)
        };

        match archive {
            Some(member) => self.extract(list, member, source),
            None => {
                let mut bytes = Vec::new();
                list.read_to_end(&mut bytes)
                    .map_err(|e| self.explain(|| format!("reading from {} failed ({e})", self.uri)))?;
                Ok(bytes)
            }
        }
    }

    /// Takes one regular file out of a tar stream: the one whose path ends
    /// with `member` (whole path components, so `gambling/domains` matches
    /// `blacklists/gambling/domains` but not `gambling/domains.old`), or with
    /// no `member` the only file there is.
    fn extract(&self, stream: impl Read, member: Option<&str>, source: &SourceDecl) -> Result<Vec<u8>, String> {
        let declared_in = source.declared_in.display();
        let broken = |e: io::Error| {
            self.explain(|| format!("the download from {} is not a readable tar archive ({e})", self.uri))
        };
        let mut archive = tar::Archive::new(stream);
        let mut files = Vec::new();
        let mut only: Option<Vec<u8>> = None;
        for entry in archive.entries().map_err(broken)? {
            let mut entry = entry.map_err(broken)?;
            let path = entry.path().map_err(broken)?.into_owned();
            let kind = entry.header().entry_type();
            let wanted = match member {
                Some(member) => path.ends_with(member),
                None => kind.is_file(),
            };
            if wanted && (kind.is_symlink() || kind.is_hard_link()) {
                let target = entry.link_name().ok().flatten().map(|t| t.display().to_string()).unwrap_or_default();
                return Err(format!(
                    "`{}` in the archive is a link to `{target}`; set `member` in \
                     {declared_in} to the file it points to",
                    path.display()
                ));
            }
            if !kind.is_file() {
                continue;
            }
            if files.len() < 10 {
                files.push(path.display().to_string());
            }
            if !wanted {
                continue;
            }
            if member.is_none() && only.is_some() {
                return Err(format!(
                    "the archive holds several files ({} ...); set `member` in {declared_in} \
                     to the one to use",
                    files.join(", ")
                ));
            }
            if entry.header().size().is_ok_and(|size| size > self.settings.max_bytes) {
                return Err(self.too_big(Stage::Unpack));
            }
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(broken)?;
            if member.is_some() {
                return Ok(bytes);
            }
            only = Some(bytes);
        }
        if let Some(bytes) = only {
            return Ok(bytes);
        }
        let holds = if files.is_empty() { "no files at all".to_string() } else { files.join(", ") };
        Err(match member {
            Some(member) => format!(
                "the archive has no file ending in `{member}` (it holds {holds}); check \
                 `member` in {declared_in}"
            ),
            None => format!("the archive holds {holds}; check the URL in {declared_in}"),
        })
    }
}

/// A reader that enforces the size cap and the deadline, and records why it
/// stopped in the shared [`Reading`].
struct Guarded<'a, R> {
    inner: R,
    reading: &'a Reading<'a>,
    stage: Stage,
    count: u64,
}

impl<'a, R: Read> Guarded<'a, R> {
    fn new(inner: R, reading: &'a Reading<'a>, stage: Stage) -> Self {
        Guarded { inner, reading, stage, count: 0 }
    }
}

impl<R: Read> Read for Guarded<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let reading = self.reading;
        // ureq's own timeout covers waiting on the network; this also covers
        // time spent unpacking.
        if Instant::now() >= reading.deadline {
            reading.stop(timed_out(reading.settings.timeout, reading.uri));
            return Err(io::ErrorKind::TimedOut.into());
        }
        // Ask for at most one byte past the cap: enough to see it crossed,
        // without reading far beyond it.
        let room = reading.settings.max_bytes.saturating_sub(self.count) + 1;
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        match self.inner.read(&mut buf[..want]) {
            Ok(n) => {
                self.count += n as u64;
                if self.count > reading.settings.max_bytes {
                    reading.stop(reading.too_big(self.stage));
                    return Err(io::Error::other("over the size cap"));
                }
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                reading.stop(match self.stage {
                    Stage::Download => describe_io(&e, reading.uri, reading.settings),
                    Stage::Unpack => format!("the download from {} is damaged or not really gzip ({e})", reading.uri),
                });
                Err(e)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// URLs

/// Applies the one URL rule ([`sources::check_url`]) and parses the URL.
fn check_url(url: &str) -> Result<Uri, String> {
    sources::check_url(url).map_err(|why| format!("`{}` {why}", url.trim()))?;
    url.trim().parse().map_err(|e| format!("`{url}` is not a valid URL ({e}); lists come from https:// URLs"))
}

fn is_https(uri: &Uri) -> bool {
    uri.scheme_str().is_some_and(|s| s.eq_ignore_ascii_case("https"))
}

fn is_loopback(uri: &Uri) -> bool {
    uri.host().is_some_and(sources::is_loopback_host)
}

/// The path part of a URL string, without query or fragment.
fn uri_path(url: &str) -> &str {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
        None => url,
    }
}

/// Resolves a `Location` header against the URL that sent it (RFC 3986
/// section 5.2, minus dot-segment removal, which servers do not send in
/// practice and which the check that follows makes harmless).
fn resolve_location(base: &Uri, location: &str) -> String {
    let location = location.trim();
    let scheme = base.scheme_str().unwrap_or("https");
    let authority = base.authority().map_or("", |a| a.as_str());
    if location.contains("://") {
        location.to_string()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else if location.starts_with('?') {
        format!("{scheme}://{authority}{}{location}", base.path())
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        let dir = if dir.is_empty() { "/" } else { dir };
        format!("{scheme}://{authority}{dir}{location}")
    }
}

// ---------------------------------------------------------------------------
// Explaining failures

fn timed_out(timeout: Duration, uri: &Uri) -> String {
    format!(
        "timed out after {} downloading {uri}; the server is slow or unreachable, try \
         again later",
        human_duration(timeout)
    )
}

fn host_port(uri: &Uri) -> String {
    let host = uri.host().unwrap_or("?");
    let port = uri.port_u16().unwrap_or(if is_https(uri) { 443 } else { 80 });
    format!("{host}:{port}")
}

fn describe_status(status: StatusCode, uri: &Uri, source: &SourceDecl) -> String {
    let declared_in = source.declared_in.display();
    let advice = match status.as_u16() {
        404 | 410 => {
            format!("the list is not at this address (any more); check the URL in {declared_in}")
        }
        401 | 403 => "the server refused access; the list may need a subscription or key, \
                      or the publisher may block automated downloads"
            .to_string(),
        407 => "the proxy wants a login; put it in the proxy URL (HTTPS_PROXY)".to_string(),
        429 => "the server is limiting how often the list may be fetched; try again later".to_string(),
        500..=599 => "the server had a problem; this is usually temporary, try again later".to_string(),
        _ => format!("check the URL in {declared_in}"),
    };
    let reason = status.canonical_reason().unwrap_or("");
    format!("{uri} answered HTTP {} {reason}: {advice}", status.as_u16())
}

fn describe_ureq(error: &ureq::Error, uri: &Uri, settings: &FetchSettings) -> String {
    let at = host_port(uri);
    let host = uri.host().unwrap_or("?");
    match error {
        ureq::Error::Timeout(_) => timed_out(settings.timeout, uri),
        ureq::Error::HostNotFound => format!(
            "could not look up {host}; check the host name in the URL, and this machine's \
             own DNS settings"
        ),
        ureq::Error::ConnectionFailed => format!(
            "could not connect to {at}; check the URL, and that this machine can reach \
             the internet (firewall, proxy)"
        ),
        ureq::Error::Io(e) => describe_io(e, uri, settings),
        ureq::Error::Tls(e) => secure_failed(&at, host, e),
        ureq::Error::Rustls(e) => secure_failed(&at, host, e),
        ureq::Error::Protocol(e) => {
            format!("{at} did not answer with valid HTTP ({e}); check the URL's scheme and port")
        }
        ureq::Error::BodyExceedsLimit(_) => format!(
            "the download from {uri} is over the {} size cap; if the list really is this \
             big, raise the cap",
            human_bytes(settings.max_bytes)
        ),
        ureq::Error::Decompress(encoding, e) => {
            format!("could not decompress the {encoding} response from {at} ({e})")
        }
        ureq::Error::ConnectProxyFailed(e) => {
            format!("the proxy would not connect to {at} ({e}); check HTTPS_PROXY and NO_PROXY")
        }
        other => format!("downloading {uri} failed: {other}"),
    }
}

fn secure_failed(at: &str, host: &str, error: &dyn std::fmt::Display) -> String {
    format!(
        "the secure (TLS) connection to {at} failed ({error}); the server may not speak \
         https on this port, or its certificate is not valid for {host}. Check the URL, \
         and this machine's clock"
    )
}

fn describe_io(error: &io::Error, uri: &Uri, settings: &FetchSettings) -> String {
    // Errors from ureq's body reader arrive as io::Errors wrapping its own.
    if let Some(inner) = error.get_ref().and_then(|inner| inner.downcast_ref::<ureq::Error>()) {
        return describe_ureq(inner, uri, settings);
    }
    let at = host_port(uri);
    match error.kind() {
        // rustls reports a failed handshake as invalid data.
        io::ErrorKind::InvalidData if is_https(uri) => secure_failed(&at, uri.host().unwrap_or("?"), error),
        io::ErrorKind::ConnectionRefused => format!(
            "{at} refused the connection: nothing is listening there; check the host and \
             port in the URL"
        ),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => timed_out(settings.timeout, uri),
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => format!(
            "the connection to {at} dropped before the list was complete ({error}); try \
             again later"
        ),
        _ => format!("network error talking to {at} ({error})"),
    }
}

// ---------------------------------------------------------------------------
// Small formatting helpers

fn human_bytes(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    let (unit, size) = match bytes {
        b if b >= MIB => ("MiB", MIB),
        b if b >= KIB => ("KiB", KIB),
        _ => return format!("{bytes} bytes"),
    };
    if bytes.is_multiple_of(size) {
        format!("{} {unit}", bytes / size)
    } else {
        format!("{:.1} {unit}", bytes as f64 / size as f64)
    }
}

fn human_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{:.1} s", duration.as_secs_f64())
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
