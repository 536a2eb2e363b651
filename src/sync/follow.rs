//! The secondary's side: ask the primary for its bundle (every
//! `interval_seconds`, at once when told, and once at start), verify it,
//! and put it in force:
//!
//! 1. unpack it into `data_dir/sync/policy-<issued>/` and check the config
//!    it makes with this server's own file (`config::sync::load_with_policy`);
//! 2. point `data_dir/sync/current` at it (a symlink replaced by rename: a
//!    crash leaves the old or the new policy, never half of one);
//! 3. the whole reload; if it refuses (lists that do not load), `current`
//!    goes back to the policy before and nothing has changed;
//! 4. the users and roles, in one transaction;
//! 5. one `sync` row in the change log: what changed (the config's line
//!    diff, the list files, the users) and the bundle's time.
//!
//! While the primary cannot be reached the secondary keeps answering with
//! the policy it has (across restarts too: it is on disk) and says so on
//! its dashboard. A bundle whose signature does not verify, or older than
//! the one in force, is refused and the refusal shown; nothing of it is used.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::bundle::{self, Bundle};
use super::{PULL_PATH, PullRequest, Report, SIGNATURE_HEADER, SyncKey};
use crate::config::Config;
use crate::config::sync::{current_policy, sync_folder};
use crate::policy_editor::ReloadFn;
use crate::store::changes::{ChangeLog, NewChange};

/// How long one request to the primary may take.
const TIMEOUT: Duration = Duration::from_secs(20);
/// The user the change log records a sync as.
pub const SYNC_USER: &str = "(primary)";
/// The status file, beside the policies.
const STATE_FILE: &str = "state.json";

/// How the following stands, shown on the secondary's dashboard.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FollowStatus {
    pub primary: String,
    /// The bundle in force: its content hash, when the primary issued it and
    /// when it was applied here.
    pub content: String,
    pub issued_ms: i64,
    pub applied_ms: i64,
    /// The last time the primary answered with a bundle or "nothing newer".
    pub last_contact_ms: i64,
    /// Why the last try failed ('' when it did not), and since when it fails.
    pub error: String,
    pub failing_since_ms: i64,
    /// The last bundle refused, when, and why.
    pub refused: String,
    pub refused_ms: i64,
}

/// What one try did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The primary has nothing newer.
    Unchanged,
    /// A new bundle is in force; the change log row's id.
    Applied { change: i64 },
}

/// A secondary following its primary.
pub struct Follower {
    config_file: PathBuf,
    data_dir: PathBuf,
    database: PathBuf,
    primary: String,
    interval: Duration,
    key: SyncKey,
    status: Mutex<FollowStatus>,
    wake: tokio::sync::Notify,
    /// The server's whole reload, with its lock taken.
    reload: ReloadFn,
    /// What this server says about itself when it asks.
    report: Arc<dyn Fn() -> Report + Send + Sync>,
}

impl Follower {
    /// The follower of the secondary `config` describes (`None` for any
    /// other server).
    pub fn for_server(
        config: &Config,
        key: SyncKey,
        reload: ReloadFn,
        report: Arc<dyn Fn() -> Report + Send + Sync>,
    ) -> Option<Follower> {
        let crate::config::sync::SyncRole::Secondary { primary, interval } = &config.sync.role else { return None };
        let status = read_status(&config.data_dir).unwrap_or_default();
        Some(Follower {
            config_file: config.file.clone()?,
            data_dir: config.data_dir.clone(),
            database: config.log.database.clone(),
            primary: primary.clone(),
            interval: *interval,
            key,
            status: Mutex::new(FollowStatus { primary: primary.clone(), ..status }),
            wake: tokio::sync::Notify::new(),
            reload,
            report,
        })
    }

    /// How the following stands now.
    pub fn status(&self) -> FollowStatus {
        self.status.lock().expect("the status lock is never poisoned").clone()
    }

    /// The primary's URL.
    pub fn primary(&self) -> &str {
        &self.primary
    }

    /// The key the primary's notices are checked with.
    pub fn key(&self) -> &SyncKey {
        &self.key
    }

    /// Asks the primary now (it said the policy changed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Asks every interval, and whenever woken, until the server stops.
    pub async fn run(self: Arc<Self>) {
        loop {
            let _ = self.sync_once().await;
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// One try: ask, and apply what comes back. Failures are in the status
    /// and the server's log as well as returned.
    pub async fn sync_once(&self) -> Result<Outcome, String> {
        let now = crate::time::now_ms();
        let mut report = (self.report)();
        let before = self.status();
        report.content = before.content.clone();
        report.issued_ms = before.issued_ms;
        report.last_error = before.error.clone();
        let request = PullRequest { sent_ms: now, report };
        let (primary, key) = (self.primary.clone(), self.key.clone());
        let fetched = tokio::task::spawn_blocking(move || fetch(&primary, &key, &request))
            .await
            .unwrap_or_else(|error| Err(format!("the request failed ({error})")));
        let result = match fetched {
            Err(error) => Err(error),
            Ok(None) => Ok(Outcome::Unchanged),
            Ok(Some((bytes, signature))) => self.take(&bytes, &signature).await,
        };
        self.note(&result, now);
        result
    }

    /// Verifies, stages, reloads, and records a fetched bundle.
    async fn take(&self, bytes: &[u8], signature: &str) -> Result<Outcome, String> {
        let bundle = match bundle::open(bytes, signature, &self.key).and_then(|bundle| self.newer(bundle)) {
            Ok(Some(bundle)) => bundle,
            Ok(None) => return Ok(Outcome::Unchanged),
            Err(why) => {
                let why = format!("refused a policy bundle from {}: {why}", self.primary);
                tracing::error!("SYNC: {why}; the policy in force stays");
                let mut status = self.status.lock().expect("the status lock is never poisoned");
                status.refused = why.clone();
                status.refused_ms = crate::time::now_ms();
                return Err(why);
            }
        };
        let staged = {
            let (config_file, data_dir, bundle) = (self.config_file.clone(), self.data_dir.clone(), bundle.clone());
            tokio::task::spawn_blocking(move || stage(&config_file, &data_dir, &bundle))
                .await
                .map_err(|error| format!("staging failed ({error})"))??
        };
        if let Err(error) = (self.reload)().await {
            staged.undo();
            return Err(format!(
                "the primary's policy could not be put in force here, the policy before stays: {error}"
            ));
        }
        let (database, primary) = (self.database.clone(), self.primary.clone());
        let change = tokio::task::spawn_blocking(move || commit(&database, &primary, &bundle, &staged))
            .await
            .map_err(|error| format!("recording failed ({error})"))??;
        Ok(Outcome::Applied { change })
    }

    /// `bundle` when it is newer than the one in force; `None` when it is
    /// the same policy; an error for an older one (a replay).
    fn newer(&self, bundle: Bundle) -> Result<Option<Bundle>, String> {
        let status = self.status();
        if bundle.content == status.content {
            return Ok(None);
        }
        if bundle.issued_ms <= status.issued_ms {
            return Err(format!(
                "it was issued at {}, before the policy in force here ({}): an old bundle sent again",
                crate::time::format_utc(bundle.issued_ms),
                crate::time::format_utc(status.issued_ms)
            ));
        }
        Ok(Some(bundle))
    }

    fn note(&self, result: &Result<Outcome, String>, now: i64) {
        let mut status = self.status.lock().expect("the status lock is never poisoned");
        match result {
            Ok(outcome) => {
                status.last_contact_ms = now;
                status.error.clear();
                status.failing_since_ms = 0;
                if let Outcome::Applied { .. } = outcome {
                    if let Some(applied) = read_status(&self.data_dir) {
                        status.content = applied.content;
                        status.issued_ms = applied.issued_ms;
                        status.applied_ms = applied.applied_ms;
                    }
                    tracing::info!(primary = %self.primary, issued = %crate::time::format_utc(status.issued_ms), "SYNC: the primary's policy is in force");
                }
            }
            Err(error) => {
                if status.error.is_empty() {
                    tracing::warn!(primary = %self.primary, %error, "SYNC: cannot follow the primary; answering with the policy in force");
                    status.failing_since_ms = now;
                }
                status.error = error.clone();
            }
        }
        let _ = write_status(&self.data_dir, &status);
    }
}

/// Asks `primary` for its bundle: `None` when it has nothing newer than
/// the request's, else the bytes and their signature (not yet verified).
pub fn fetch(primary: &str, key: &SyncKey, request: &PullRequest) -> Result<Option<(Vec<u8>, String)>, String> {
    let body = serde_json::to_vec(request).expect("a request serialises");
    let url = format!("{primary}{PULL_PATH}");
    let response = super::agent(TIMEOUT)
        .post(&url)
        .header("Content-Type", "application/json")
        .header(SIGNATURE_HEADER, key.sign(&body))
        .send(&body[..])
        .map_err(|error| format!("cannot reach the primary at {primary} ({error})"))?;
    let status = response.status();
    if status == 304 {
        return Ok(None);
    }
    if status != 200 {
        let mut response = response;
        let text = response.body_mut().read_to_string().unwrap_or_default();
        return Err(format!(
            "the primary at {primary} answered {status}: {}",
            text.chars().take(300).collect::<String>().trim()
        ));
    }
    let signature =
        response.headers().get(SIGNATURE_HEADER).and_then(|value| value.to_str().ok()).unwrap_or_default().to_string();
    let mut response = response;
    let bytes = response
        .body_mut()
        .with_config()
        .limit(256 * 1024 * 1024)
        .read_to_vec()
        .map_err(|error| format!("cannot read the bundle from {primary} ({error})"))?;
    Ok(Some((bytes, signature)))
}

/// A bundle unpacked and made current, not yet recorded.
pub struct Staged {
    link: PathBuf,
    folder: PathBuf,
    previous: Option<PathBuf>,
}

impl Staged {
    /// Points `current` back at the policy before, and removes the new one.
    fn undo(&self) {
        match &self.previous {
            Some(previous) => {
                let _ = point(&self.link, previous);
            }
            None => {
                let _ = std::fs::remove_file(&self.link);
            }
        }
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

/// Unpacks `bundle` beside the policy in force, checks the config it makes
/// with `config_file`, and points `current` at it.
fn stage(config_file: &Path, data_dir: &Path, bundle: &Bundle) -> Result<Staged, String> {
    let folder_name = format!("policy-{}", bundle.issued_ms);
    let folder = sync_folder(data_dir).join(&folder_name);
    let _ = std::fs::remove_dir_all(&folder);
    bundle::unpack(bundle, &folder)?;
    if let Err(error) = crate::config::sync::load_with_policy(config_file, &folder) {
        let _ = std::fs::remove_dir_all(&folder);
        return Err(format!("the primary's policy does not make a valid config here: {error}"));
    }
    let link = current_policy(data_dir);
    let previous = std::fs::read_link(&link).ok();
    point(&link, Path::new(&folder_name)).map_err(|error| format!("cannot switch to the new policy ({error})"))?;
    Ok(Staged { link, folder, previous })
}

/// Makes the symlink `link` point at `target`, by rename (atomic).
fn point(link: &Path, target: &Path) -> std::io::Result<()> {
    let temporary = link.with_extension("new");
    let _ = std::fs::remove_file(&temporary);
    std::os::unix::fs::symlink(target, &temporary)?;
    std::fs::rename(&temporary, link)?;
    if let Some(folder) = link.parent() {
        std::fs::File::open(folder)?.sync_all()?;
    }
    Ok(())
}

/// Takes the users, records the change, saves the status, and removes all
/// but the two newest policies.
fn commit(database: &Path, primary: &str, bundle: &Bundle, staged: &Staged) -> Result<i64, String> {
    let now = crate::time::now_ms();
    let users = crate::store::Users::open(database)
        .and_then(|users| users.take(&bundle.policy.users, now))
        .map_err(|error| format!("the policy is in force but the users could not be taken ({error})"))?;
    let data_dir = staged.link.parent().and_then(Path::parent).unwrap_or(Path::new("."));
    let before = staged.previous.as_ref().map(|previous| sync_folder(data_dir).join(previous));
    let old_config = before
        .as_ref()
        .and_then(|folder| std::fs::read_to_string(folder.join(bundle::CONFIG_FILE)).ok())
        .unwrap_or_default();
    let mut new = similar::TextDiff::from_lines(old_config.as_str(), bundle.policy.config.as_str())
        .unified_diff()
        .context_radius(1)
        .header("the primary's config before", "the primary's config now")
        .to_string();
    for line in list_changes(before.as_deref(), &staged.folder).into_iter().chain(users.summary()) {
        new.push_str(&line);
        new.push('\n');
    }
    let change = NewChange {
        time_ms: now,
        user: SYNC_USER.to_string(),
        kind: "sync".to_string(),
        group: None,
        subject: format!("policy from the primary {primary}"),
        old: match &staged.previous {
            Some(_) => "the primary's policy as last followed".to_string(),
            None => "none (the first policy from the primary)".to_string(),
        },
        new: if new.trim().is_empty() { "no change to the config, lists or users".to_string() } else { new },
        reason: format!(
            "followed the primary: its policy of {}, signature verified",
            crate::time::format_utc(bundle.issued_ms)
        ),
    };
    let recorded = ChangeLog::open(database)
        .and_then(|log| log.record_only(&change))
        .map_err(|error| format!("the policy is in force but could not be recorded ({error})"))?;
    let status = FollowStatus {
        primary: primary.to_string(),
        content: bundle.content.clone(),
        issued_ms: bundle.issued_ms,
        applied_ms: now,
        last_contact_ms: now,
        ..read_status(data_dir).unwrap_or_default()
    };
    write_status(data_dir, &status).map_err(|error| format!("cannot save the sync status ({error})"))?;
    prune(data_dir, &staged.folder, before.as_deref());
    Ok(recorded.id)
}

/// "lists: changed a.txt; added b.txt; removed c.txt", when any did.
fn list_changes(before: Option<&Path>, after: &Path) -> Option<String> {
    let files = |folder: Option<&Path>| -> std::collections::BTreeMap<String, Vec<u8>> {
        let mut found = std::collections::BTreeMap::new();
        let Some(root) = folder.map(|folder| folder.join(bundle::LISTS_FOLDER)) else { return found };
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let (Ok(bytes), Ok(relative)) = (std::fs::read(&path), path.strip_prefix(&root)) {
                    found.insert(relative.to_string_lossy().into_owned(), bytes);
                }
            }
        }
        found
    };
    let (old, new) = (files(before), files(Some(after)));
    let changed: Vec<&str> = new
        .iter()
        .filter(|(path, bytes)| old.get(*path).is_some_and(|was| was != *bytes))
        .map(|(p, _)| p.as_str())
        .collect();
    let added: Vec<&str> = new.keys().filter(|path| !old.contains_key(*path)).map(String::as_str).collect();
    let removed: Vec<&str> = old.keys().filter(|path| !new.contains_key(*path)).map(String::as_str).collect();
    let parts: Vec<String> = [("changed", changed), ("added", added), ("removed", removed)]
        .into_iter()
        .filter(|(_, paths)| !paths.is_empty())
        .map(|(what, paths)| format!("{what} {}", paths.join(", ")))
        .collect();
    (!parts.is_empty()).then(|| format!("lists: {}", parts.join("; ")))
}

/// Removes every policy folder but `keep` and `previous`.
fn prune(data_dir: &Path, keep: &Path, previous: Option<&Path>) {
    for entry in std::fs::read_dir(sync_folder(data_dir)).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("policy-") && path != keep && Some(path.as_path()) != previous {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn read_status(data_dir: &Path) -> Option<FollowStatus> {
    let text = std::fs::read(sync_folder(data_dir).join(STATE_FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

fn write_status(data_dir: &Path, status: &FollowStatus) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    crate::files::write_atomically(&sync_folder(data_dir).join(STATE_FILE), |file| {
        std::io::Write::write_all(file, &text)
    })
}

/// At start, before the config is read: a secondary with no policy yet
/// fetches its first one (no reload: nothing runs yet). `Ok(false)` when
/// there was nothing to do.
pub fn first_policy(config_file: &Path) -> Result<bool, String> {
    // The file checked as `Config::load` will check it (a mistake is named
    // with its line here too), before any policy exists.
    let Some((data_dir, settings)) =
        crate::config::sync::secondary_settings(config_file).map_err(|error| error.to_string())?
    else {
        return Ok(false);
    };
    if current_policy(&data_dir).join(bundle::CONFIG_FILE).is_file() {
        return Ok(false);
    }
    let primary = settings.primary().unwrap_or_default().to_string();
    let key = SyncKey::read(&settings.key_file)?;
    std::fs::create_dir_all(sync_folder(&data_dir))
        .map_err(|error| format!("cannot create {} ({error})", sync_folder(&data_dir).display()))?;
    let request = PullRequest {
        sent_ms: crate::time::now_ms(),
        report: Report { name: host_name(), hedgerow_version: env!("CARGO_PKG_VERSION").into(), ..Report::default() },
    };
    let fail = |why: String| {
        format!(
            "this secondary has no policy yet and could not get one from its primary: {why}. Start the primary first \
             (with [sync] role = \"primary\" and the same key_file), then start this server again"
        )
    };
    let (bytes, signature) = fetch(&primary, &key, &request).map_err(fail)?.ok_or_else(|| fail("no bundle".into()))?;
    let bundle = bundle::open(&bytes, &signature, &key).map_err(|why| fail(format!("refused its bundle: {why}")))?;
    let staged = stage(config_file, &data_dir, &bundle).map_err(fail)?;
    let database = Config::load(config_file).map_err(|error| fail(error.to_string()))?.log.database;
    if let Err(error) = commit(&database, &primary, &bundle, &staged) {
        staged.undo();
        return Err(fail(error));
    }
    tracing::info!(%primary, "SYNC: took the first policy from the primary");
    Ok(true)
}

/// This machine's host name, for the primary's list of servers.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "secondary".to_string())
}
