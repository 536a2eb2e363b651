//! What is known about a source's last good copy, kept beside it in
//! `<id>.state.json`.

use serde::{Deserialize, Serialize};

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
    /// Lines of the saved copy the parser could not understand and skipped.
    pub bad_lines: Option<usize>,
    /// Unix seconds of the first failure since the last success (`None`
    /// while the source is healthy): how long it has been degraded.
    pub failing_since: Option<u64>,
    /// For a local `path` source: the length and modification time (Unix
    /// nanoseconds) of the file last checked, so an unchanged file is not
    /// read again on every reload.
    pub local_len: Option<u64>,
    pub local_modified: Option<u128>,
}
