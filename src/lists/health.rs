//! How each list source stands: serving fresh names, serving its last good
//! copy because the source failed (degraded), or contributing nothing
//! (missing). Built on every start, reload and `hedgerow lists compile`,
//! logged, returned with the lists, and written to
//! `data_dir/lists-health.json` for the dashboard and `hedgerow status`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The health record's file name inside the data folder.
pub const HEALTH_FILE: &str = "lists-health.json";

/// Where the health record lives.
pub fn health_path(data_dir: &Path) -> PathBuf {
    data_dir.join(HEALTH_FILE)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceState {
    /// The source was read (or downloaded) and its names are in force.
    Ok,
    /// The source failed; its last good copy is in force instead.
    Degraded,
    /// The source failed and there is no good copy: it blocks nothing.
    Missing,
}

impl SourceState {
    /// What the school gets from a source in this state, in the words the
    /// log, `lists compile` and `hedgerow status` all use.
    pub fn consequence(self) -> &'static str {
        match self {
            SourceState::Ok => "in force",
            SourceState::Degraded => "serving its last good copy",
            SourceState::Missing => "no good copy, so it blocks nothing",
        }
    }
}

/// One enabled source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceHealth {
    pub id: String,
    pub category: String,
    pub state: SourceState,
    /// What went wrong and how to fix it (`None` when `Ok`).
    pub reason: Option<String>,
    /// Unix seconds since when the source has been failing.
    pub since: Option<u64>,
    /// Names in the copy in force (when known).
    pub names: Option<usize>,
    /// Unix seconds when the copy in force was taken.
    pub copy_from: Option<u64>,
}

/// Every enabled source, plus any problem with the list set as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListHealth {
    /// Unix seconds of the check.
    pub checked_at: u64,
    /// Why the lists could not be rebuilt at all (an unreadable lists
    /// folder, a broken declaration): the lists in force are the last good
    /// ones. `None` when the rebuild ran.
    pub error: Option<String>,
    pub sources: Vec<SourceHealth>,
}

impl SourceHealth {
    /// A gambling source in `state` (for tests of what shows it).
    #[cfg(test)]
    pub(crate) fn example(id: &str, state: SourceState, reason: Option<&str>) -> SourceHealth {
        SourceHealth {
            id: id.into(),
            category: "gambling".into(),
            state,
            reason: reason.map(String::from),
            since: None,
            names: None,
            copy_from: None,
        }
    }
}

impl ListHealth {
    /// Sources not fully in force (degraded or missing).
    pub fn problems(&self) -> impl Iterator<Item = &SourceHealth> {
        self.sources.iter().filter(|source| source.state != SourceState::Ok)
    }

    /// "ok", or in a few words what is wrong (the set's error, or how many
    /// sources are not in force as they should be): what a pair's Servers
    /// page shows for each server.
    pub fn summary(health: Option<&ListHealth>) -> String {
        match health {
            Some(health) if !health.is_healthy() => health
                .error
                .clone()
                .unwrap_or_else(|| format!("{} source(s) not in force as they should be", health.problems().count())),
            _ => "ok".to_string(),
        }
    }

    /// Nothing wrong anywhere.
    pub fn is_healthy(&self) -> bool {
        self.error.is_none() && self.problems().next().is_none()
    }

    /// Logs every problem at error level: each one means less filtering
    /// than the school configured, or filtering from an old copy.
    pub fn log(&self) {
        if let Some(error) = &self.error {
            tracing::error!("{error}; the lists in force stay as they were");
        }
        for source in self.problems() {
            let reason = source.reason.as_deref().unwrap_or("unknown");
            tracing::error!(
                list = %source.id,
                names = source.names,
                "list source failed, {}: {reason}",
                source.state.consequence()
            );
        }
    }

    /// Writes the record to `data_dir/lists-health.json` (best effort: the
    /// log already says the same).
    pub fn save(&self, data_dir: &Path) {
        let path = health_path(data_dir);
        // Replaced whole, as every state file is, so a reader never sees half.
        let result = serde_json::to_vec_pretty(self)
            .map_err(std::io::Error::other)
            .and_then(|json| crate::files::write_atomically(&path, |file| std::io::Write::write_all(file, &json)));
        if let Err(error) = result {
            tracing::warn!(path = %path.display(), %error, "cannot write the list health record");
        }
    }

    /// The last record written, if any.
    pub fn read(data_dir: &Path) -> Option<ListHealth> {
        serde_json::from_slice(&std::fs::read(health_path(data_dir)).ok()?).ok()
    }
}
