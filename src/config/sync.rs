//! `[sync]`: two Hedgerow servers, one policy. The primary owns the policy;
//! a secondary follows it (`crate::sync`). A secondary's own file holds only
//! what belongs to its machine (`data_dir`, `[dns]` listeners, `[dashboard]`,
//! `[metrics]`, `[block_page]`, `[sync]`); everything else comes from the
//! last policy bundle it verified, kept in `data_dir/sync/current/`, and
//! [`load_secondary`] puts the two together each time the config is read
//! (start, reload), so a secondary has one config like any server.
//!
//! ```toml
//! [sync]                                   # on the primary
//! role = "primary"
//! key_file = "/etc/hedgerow/sync.key"      # `hedgerow sync-key FILE` makes one
//! secondaries = ["http://10.0.0.3:8080"]   # told at once after each change (optional)
//!
//! [sync]                                   # on the secondary
//! role = "secondary"
//! primary = "http://10.0.0.2:8080"         # the primary's dashboard
//! key_file = "/etc/hedgerow/sync.key"      # the same key
//! interval_seconds = 300                   # how often it asks (and whenever told)
//! ```

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{Config, ConfigError};

/// What this server is in a pair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SyncRole {
    /// No `[sync]`: a server on its own.
    #[default]
    Alone,
    /// Owns the policy; serves the bundle to secondaries.
    Primary {
        /// The secondaries' dashboard URLs, told after each change.
        secondaries: Vec<String>,
    },
    /// Follows the primary's policy.
    Secondary {
        /// The primary's dashboard URL (`http://10.0.0.2:8080`).
        primary: String,
        /// How often the bundle is asked for.
        interval: Duration,
    },
}

/// `[sync]`, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncSettings {
    pub role: SyncRole,
    /// The shared key's file (read when the server starts).
    pub key_file: PathBuf,
}

impl SyncSettings {
    /// The primary's URL when this server is a secondary.
    pub fn primary(&self) -> Option<&str> {
        match &self.role {
            SyncRole::Secondary { primary, .. } => Some(primary),
            _ => None,
        }
    }
}

/// `[sync]` as written.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSync {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_file: Option<Spanned<PathBuf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    secondaries: Vec<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    primary: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interval_seconds: Option<Spanned<u64>>,
}

/// How often a secondary asks when `interval_seconds` is not written.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);

/// Checks `[sync]`; `text` and `source_name` give messages their file and line.
pub(super) fn compile(raw: RawSync, text: &str, source_name: &str) -> Result<SyncSettings, ConfigError> {
    let error = |span: Option<Range<usize>>, message: String| ConfigError {
        source_name: source_name.to_string(),
        line: span.map(|span| crate::text::line_at(text, span.start)),
        message,
    };
    let Some(role) = raw.role else {
        if raw.key_file.is_some() || raw.primary.is_some() || !raw.secondaries.is_empty() {
            return Err(error(
                None,
                "[sync] needs role = \"primary\" or role = \"secondary\" (or remove [sync] for a server on its own)"
                    .into(),
            ));
        }
        return Ok(SyncSettings::default());
    };
    let key_file = raw.key_file.map(Spanned::into_inner).ok_or_else(|| {
        error(
            Some(role.span()),
            "[sync] needs key_file = \"/etc/hedgerow/sync.key\": the same key on the primary and each secondary \
             (make one with `hedgerow sync-key /etc/hedgerow/sync.key` and copy the file)"
                .into(),
        )
    })?;
    let url = |written: &Spanned<String>, what: &str| -> Result<String, ConfigError> {
        let value = written.get_ref().trim().trim_end_matches('/');
        let rest = value.strip_prefix("http://").or_else(|| value.strip_prefix("https://"));
        if rest.is_none_or(|rest| rest.is_empty() || rest.contains('/')) {
            return Err(error(
                Some(written.span()),
                format!("[sync] {what} = {value:?} is not a dashboard address; write e.g. \"http://10.0.0.2:8080\""),
            ));
        }
        Ok(value.to_string())
    };
    let role = match role.get_ref().as_str() {
        "primary" => {
            if raw.primary.is_some() || raw.interval_seconds.is_some() {
                return Err(error(
                    Some(role.span()),
                    "[sync] role = \"primary\" takes `secondaries`, not `primary` or `interval_seconds` (those are \
                     the secondary's)"
                        .into(),
                ));
            }
            let secondaries: Result<Vec<String>, ConfigError> =
                raw.secondaries.iter().map(|written| url(written, "secondaries")).collect();
            SyncRole::Primary { secondaries: secondaries? }
        }
        "secondary" => {
            let primary = raw.primary.as_ref().ok_or_else(|| {
                error(
                    Some(role.span()),
                    "[sync] role = \"secondary\" needs primary = \"http://<primary's address>:8080\" (its dashboard)"
                        .into(),
                )
            })?;
            if let Some(first) = raw.secondaries.first() {
                return Err(error(Some(first.span()), "a secondary lists no secondaries; remove `secondaries`".into()));
            }
            let interval = match &raw.interval_seconds {
                Some(seconds) if *seconds.get_ref() == 0 || *seconds.get_ref() > 86_400 => {
                    return Err(error(
                        Some(seconds.span()),
                        format!(
                            "[sync] interval_seconds = {} is out of range; write 1 to 86400 (300, five minutes, suits a school)",
                            seconds.get_ref()
                        ),
                    ));
                }
                Some(seconds) => Duration::from_secs(*seconds.get_ref()),
                None => DEFAULT_INTERVAL,
            };
            SyncRole::Secondary { primary: url(primary, "primary")?, interval }
        }
        other => {
            return Err(error(
                Some(role.span()),
                format!("[sync] role = {other:?} is not a role; write \"primary\" or \"secondary\""),
            ));
        }
    };
    Ok(SyncSettings { role, key_file })
}

pub(super) fn render(settings: &SyncSettings) -> RawSync {
    fn placed<T>(value: T) -> Option<Spanned<T>> {
        Some(Spanned::new(0..0, value))
    }
    let mut raw = RawSync::default();
    if settings.role != SyncRole::Alone {
        raw.key_file = placed(settings.key_file.clone());
    }
    match &settings.role {
        SyncRole::Alone => {}
        SyncRole::Primary { secondaries } => {
            raw.role = placed("primary".to_string());
            raw.secondaries = secondaries.iter().map(|url| Spanned::new(0..0, url.clone())).collect();
        }
        SyncRole::Secondary { primary, interval } => {
            raw.role = placed("secondary".to_string());
            raw.primary = placed(primary.clone());
            raw.interval_seconds = Some(Spanned::new(0..0, interval.as_secs()));
        }
    }
    raw
}

/// The keys a secondary's own file may hold: its machine's, not policy.
const LOCAL_KEYS: &[&str] = &["data_dir", "dns", "dashboard", "metrics", "block_page", "sync"];
/// The `[dns]` keys that are the machine's (the rest of `[dns]` is policy).
const LOCAL_DNS_KEYS: &[&str] = &["listen", "tcp_max_connections", "tcp_per_client"];
/// A network that lets a secondary's own file be checked alone, for its
/// own lines (it is never used: the merged config has the primary's).
const CHECK_ONLY_NETWORK: &str =
    "\n[[networks]]\nname = \"check-only\"\ncidrs = [\"192.0.2.0/24\"]\ngroup = \"pupil\"\n";

/// Where a secondary keeps the policy it follows, under its data_dir.
pub fn sync_folder(data_dir: &Path) -> PathBuf {
    data_dir.join("sync")
}

/// The policy in force on a secondary: `sync/current` (a link to the
/// folder of the last bundle applied), holding `hedgerow.toml` and `lists/`.
pub fn current_policy(data_dir: &Path) -> PathBuf {
    sync_folder(data_dir).join("current")
}

/// A secondary's own file (`text`, the file `source_name`), checked alone:
/// its data_dir and `[sync]` as `Config` fields, every line of it checked
/// (a policy key refused at its line). `None` when it is not a secondary's.
fn own_settings(text: &str, source_name: &str) -> Result<Option<(Config, toml::Table)>, ConfigError> {
    let Ok(local) = text.parse::<toml::Table>() else {
        return Ok(None); // not TOML: Config::parse says where
    };
    let is_secondary =
        local.get("sync").and_then(|sync| sync.get("role")).and_then(|role| role.as_str()) == Some("secondary");
    if !is_secondary {
        return Ok(None);
    }
    let own = Config::parse(&format!("{text}{CHECK_ONLY_NETWORK}"), source_name)?;
    let error =
        |line: Option<usize>, message: String| ConfigError { source_name: source_name.to_string(), line, message };
    let line_of =
        |needle: &str| text.lines().position(|line| line.trim_start().starts_with(needle)).map(|index| index + 1);
    for (key, value) in &local {
        let policy_key = !LOCAL_KEYS.contains(&key.as_str());
        let policy_dns_key = (key == "dns")
            .then(|| value.as_table())
            .flatten()
            .and_then(|dns| dns.keys().find(|dns_key| !LOCAL_DNS_KEYS.contains(&dns_key.as_str())).cloned());
        if policy_key {
            return Err(error(
                line_of(&format!("[{key}")).or_else(|| line_of(&format!("[[{key}"))).or_else(|| line_of(key)),
                format!(
                    "this is a secondary ([sync] role = \"secondary\"): `{key}` is policy and comes from the primary; \
                     change it there and remove it from this file (a secondary's file holds only data_dir, [dns] \
                     listen, [dashboard], [metrics], [block_page] and [sync])"
                ),
            ));
        }
        if let Some(dns_key) = policy_dns_key {
            return Err(error(
                line_of(&dns_key),
                format!(
                    "this is a secondary: [dns] {dns_key} is policy and comes from the primary; remove it from this \
                     file (a secondary's [dns] holds only listen, tcp_max_connections and tcp_per_client)"
                ),
            ));
        }
    }
    Ok(Some((own, local)))
}

/// The text of the config file at `path`, and the name errors give it.
fn read_config(path: &Path) -> Result<(String, String), ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
        source_name: name.clone(),
        line: None,
        message: format!("cannot read the config file ({error}); check the path and its permissions"),
    })?;
    Ok((text, name))
}

/// The secondary's own settings in the file at `path` (its data_dir and
/// `[sync]`), before it has any policy: what `hedgerow serve` needs to fetch
/// the first one. `None` for any other server's file.
pub fn secondary_settings(path: &Path) -> Result<Option<(PathBuf, SyncSettings)>, ConfigError> {
    let (text, name) = read_config(path)?;
    Ok(own_settings(&text, &name)?.map(|(own, _)| (own.data_dir, own.sync)))
}

/// The secondary's config at `path` over the policy in `folder` (a bundle
/// unpacked but not yet in force), to check it before it is put in force.
pub fn load_with_policy(path: &Path, folder: &Path) -> Result<Config, ConfigError> {
    let (text, name) = read_config(path)?;
    let mut config = load_secondary(&text, &name, Some(folder))?.ok_or_else(|| ConfigError {
        source_name: name.clone(),
        line: None,
        message: "this is not a secondary's config ([sync] role = \"secondary\")".into(),
    })?;
    config.file = Some(path.to_path_buf());
    Ok(config)
}

/// When `text` (the file `source_name`) is a secondary's, the config it
/// runs on: its own keys over the policy in `folder` (default
/// `data_dir/sync/current/`; `[lists] dir` pointing at the lists that came with it). `None` for any
/// other server. The secondary's own lines are checked first, so a mistake
/// there is reported at its line.
pub(super) fn load_secondary(
    text: &str,
    source_name: &str,
    folder: Option<&Path>,
) -> Result<Option<Config>, ConfigError> {
    let Some((own, local)) = own_settings(text, source_name)? else { return Ok(None) };
    let error =
        |line: Option<usize>, message: String| ConfigError { source_name: source_name.to_string(), line, message };
    let folder = folder.map_or_else(|| current_policy(&own.data_dir), Path::to_path_buf);
    let policy_file = folder.join("hedgerow.toml");
    let policy_text = std::fs::read_to_string(&policy_file).map_err(|_| {
        error(
            None,
            format!(
                "this secondary has no policy from its primary yet ({} is missing); `hedgerow serve` fetches it \
                 from {} at start: check that the primary runs and has the same [sync] key",
                policy_file.display(),
                own.sync.primary().unwrap_or_default()
            ),
        )
    })?;
    let policy_name = policy_file.display().to_string();
    let mut merged: toml::Table = policy_text.parse().map_err(|parse: toml::de::Error| {
        error(None, format!("{policy_name}: the policy from the primary is not TOML: {parse}"))
    })?;
    // The primary's machine keys are its own.
    for key in LOCAL_KEYS {
        if *key != "dns" {
            merged.remove(*key);
        }
    }
    if let Some(dns) = merged.get_mut("dns").and_then(|dns| dns.as_table_mut()) {
        dns.retain(|key, _| !LOCAL_DNS_KEYS.contains(&&*key));
    }
    for (key, value) in local {
        match (key.as_str(), merged.get_mut("dns").and_then(|dns| dns.as_table_mut()), value) {
            ("dns", Some(dns), toml::Value::Table(own_dns)) => dns.extend(own_dns),
            (_, _, value) => {
                merged.insert(key, value);
            }
        }
    }
    let lists = folder.join("lists");
    if lists.is_dir() {
        let table = merged.entry("lists").or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let Some(table) = table.as_table_mut() {
            table.insert("dir".into(), toml::Value::String(lists.display().to_string()));
        }
    }
    let merged_text =
        toml::to_string(&merged).map_err(|render| error(None, format!("cannot merge the policy: {render}")))?;
    let mut config =
        Config::parse(&merged_text, &format!("{source_name} with the primary's policy")).map_err(|mut failed| {
            // Its own lines were checked above: what fails is the primary's policy.
            failed.source_name = format!("{policy_name} (the policy from the primary, merged with {source_name})");
            failed.line = None;
            failed
        })?;
    config.source = source_name.to_string();
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETWORK: &str = "[[networks]]\nname = \"n\"\ncidrs = [\"10.0.0.0/24\"]\ngroup = \"pupil\"\n";

    #[test]
    fn roles_are_checked_with_their_lines() {
        assert_eq!(Config::parse(NETWORK, "s.toml").unwrap().sync, SyncSettings::default());
        let primary = Config::parse(
            &format!(
                "{NETWORK}[sync]\nrole = \"primary\"\nkey_file = \"k\"\nsecondaries = [\"http://10.0.0.3:8080/\"]\n"
            ),
            "s.toml",
        )
        .unwrap();
        assert_eq!(primary.sync.role, SyncRole::Primary { secondaries: vec!["http://10.0.0.3:8080".into()] });
        assert_eq!(Config::parse(&primary.to_toml(), "rendered").unwrap().sync, primary.sync);
        let secondary = Config::parse(
            &format!("{NETWORK}[sync]\nrole = \"secondary\"\nkey_file = \"k\"\nprimary = \"http://10.0.0.2:8080\"\n"),
            "s.toml",
        )
        .unwrap();
        assert_eq!(secondary.sync.primary(), Some("http://10.0.0.2:8080"));
        for (bad, line, words) in [
            ("[sync]\nrole = \"leader\"\nkey_file = \"k\"\n", 6, "not a role"),
            ("[sync]\nrole = \"secondary\"\nkey_file = \"k\"\nprimary = \"10.0.0.2\"\n", 8, "http://10.0.0.2:8080"),
            ("[sync]\nrole = \"primary\"\n", 6, "key_file"),
            (
                "[sync]\nrole = \"secondary\"\nkey_file = \"k\"\nprimary = \"http://a:1\"\ninterval_seconds = 0\n",
                9,
                "1 to 86400",
            ),
        ] {
            let error = Config::parse(&format!("{NETWORK}{bad}"), "s.toml").unwrap_err().to_string();
            assert!(error.starts_with(&format!("s.toml:{line}:")) && error.contains(words), "{error}");
        }
    }

    #[test]
    fn a_secondary_file_with_policy_in_it_is_refused_at_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secondary.toml");
        let text = format!(
            "data_dir = {:?}\n[sync]\nrole = \"secondary\"\nkey_file = \"k\"\nprimary = \"http://10.0.0.2:8080\"\n\n{NETWORK}",
            dir.path().join("data")
        );
        std::fs::write(&file, &text).unwrap();
        let error = Config::load(&file).unwrap_err().to_string();
        assert!(error.contains("secondary.toml:7:") && error.contains("`networks` is policy"), "{error}");
        let text = text.replace(NETWORK, "[dns]\nlisten = [\"127.0.0.1:53\"]\nallow_open_resolver = true\n");
        std::fs::write(&file, &text).unwrap();
        let error = Config::load(&file).unwrap_err().to_string();
        assert!(error.contains("secondary.toml:9:") && error.contains("allow_open_resolver"), "{error}");
        // Its own keys only: it needs the policy from its primary.
        let text = text.replace("allow_open_resolver = true\n", "");
        std::fs::write(&file, &text).unwrap();
        let error = Config::load(&file).unwrap_err().to_string();
        assert!(error.contains("no policy from its primary yet"), "{error}");
    }

    #[test]
    fn a_secondary_runs_on_its_own_keys_over_the_primary_policy() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let policy = current_policy(&data);
        std::fs::create_dir_all(policy.join("lists")).unwrap();
        std::fs::write(
            policy.join("hedgerow.toml"),
            format!(
                "data_dir = \"/primary/data\"\n[dns]\nlisten = [\"10.0.0.2:53\"]\n[dashboard]\nlisten = [\"10.0.0.2:8080\"]\n\
                 [sync]\nrole = \"primary\"\nkey_file = \"k\"\n[lists]\ndir = \"/etc/hedgerow/lists\"\n{NETWORK}"
            ),
        )
        .unwrap();
        let file = dir.path().join("secondary.toml");
        std::fs::write(
            &file,
            format!(
                "data_dir = {data:?}\n[dns]\nlisten = [\"10.0.0.3:53\"]\n[sync]\nrole = \"secondary\"\nkey_file = \"k\"\n\
                 primary = \"http://10.0.0.2:8080\"\n"
            ),
        )
        .unwrap();
        let config = Config::load(&file).unwrap();
        assert_eq!(config.data_dir, data);
        assert_eq!(config.listen, ["10.0.0.3:53".parse().unwrap()]);
        assert_ne!(config.dashboard.listen, ["10.0.0.2:8080".parse().unwrap()], "the primary's dashboard is its own");
        assert_eq!(config.lists.dir, policy.join("lists"));
        assert_eq!(config.networks.len(), 1);
        assert_eq!(config.sync.primary(), Some("http://10.0.0.2:8080"));
        assert_eq!(config.file.as_deref(), Some(file.as_path()));
    }
}
