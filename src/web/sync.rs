//! The two machine-to-machine routes of `crate::sync`, on the dashboard's
//! listener. Neither takes a session or a CSRF token: each request is
//! signed with the key the two servers share, and one whose signature does
//! not verify, or older than `sync::FRESH_MS`, is refused (403) before
//! anything else is read.
//!
//! - `POST /sync/pull` (primary): a secondary's report in, the signed
//!   bundle out (304 when the secondary already has it);
//! - `POST /sync/notify` (secondary): the primary says the policy changed;
//!   the secondary asks for it at once.
//!
//! And a secondary's line under every page's header ([`note`]).

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{AppState, WebError};
use crate::sync::{self, Notice, PullRequest, SIGNATURE_HEADER, Side, SyncKey};

/// A secondary's line for every page: whose policy it follows, and
/// whether something needs doing.
pub fn note(state: &AppState) -> Option<crate::web::layout::ServerNote> {
    let follower = state.sync().follower()?;
    let status = follower.status();
    let primary = follower.primary();
    let (text, bad) = if !status.error.is_empty() {
        (
            format!(
                "Secondary server: cannot reach its primary {primary} since {}. It keeps answering with the primary's \
                 policy of {}. See Servers.",
                local(state, status.failing_since_ms),
                local(state, status.issued_ms)
            ),
            true,
        )
    } else if status.refused_ms > status.applied_ms {
        (
            format!(
                "Secondary server: the last policy from {primary} was refused (see Servers); the policy in force stays."
            ),
            true,
        )
    } else {
        (
            format!(
                "Secondary server: its policy is the primary's ({primary}), of {}, and is changed there; read-only here.",
                local(state, status.issued_ms)
            ),
            false,
        )
    };
    Some(crate::web::layout::ServerNote { text, bad })
}

fn local(state: &AppState, time_ms: i64) -> String {
    state.config().local_time_text(time_ms)
}

/// The paths that are signed instead of logged in.
pub(super) fn is_signed_route(path: &str) -> bool {
    path == sync::PULL_PATH || path == sync::NOTIFY_PATH
}

/// The request body when `key` signed it.
fn verified<'b>(key: &SyncKey, headers: &HeaderMap, body: &'b Bytes) -> Result<&'b [u8], WebError> {
    let signature = headers.get(SIGNATURE_HEADER).and_then(|value| value.to_str().ok()).unwrap_or_default();
    if body.len() > sync::MAX_REQUEST_BYTES || !key.verifies(body, signature) {
        return Err(WebError::Refused(
            "this sync request is not signed with this server's [sync] key; check that both servers have the same \
             key_file"
                .into(),
        ));
    }
    Ok(body)
}

fn stale(sent_ms: i64) -> WebError {
    WebError::Refused(format!(
        "this sync request was sent at {} and this server's clock says {}: the two clocks must agree within 5 \
         minutes (use NTP on both), and an old request is never taken again",
        crate::time::format_utc(sent_ms),
        crate::time::format_utc(crate::time::now_ms())
    ))
}

/// `POST /sync/pull` on the primary.
pub async fn pull(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let Side::Primary { key, peers } = state.sync() else { return Err(WebError::NotFound) };
    let request: PullRequest = serde_json::from_slice(verified(key, &headers, &body)?)
        .map_err(|error| WebError::bad("request", format!("the sync request cannot be read: {error}")))?;
    let now = crate::time::now_ms();
    if !sync::fresh(request.sent_ms, now) {
        return Err(stale(request.sent_ms));
    }
    let have = request.report.content.clone();
    peers.heard(request.report, peer.ip(), now);
    let config = state.config();
    let built = state
        .blocking(move |_| sync::bundle::build(&config, &sync::follow::host_name(), now))
        .await?
        .map_err(|error| WebError::Internal(format!("cannot build the policy bundle: {error}")))?;
    if built.content == have {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let bytes = sync::bundle::encode(&built);
    let signature = key.sign(&bytes);
    let headers = [
        (header::CONTENT_TYPE, "application/json".to_string()),
        (HeaderName::from_static(SIGNATURE_HEADER), signature),
    ];
    Ok((headers, bytes).into_response())
}

/// `POST /sync/notify` on a secondary.
pub async fn notify(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, WebError> {
    let Some(follower) = state.sync().follower() else { return Err(WebError::NotFound) };
    let notice: Notice = serde_json::from_slice(verified(follower.key(), &headers, &body)?)
        .map_err(|error| WebError::bad("notice", format!("the notice cannot be read: {error}")))?;
    if !sync::fresh(notice.sent_ms, crate::time::now_ms()) {
        return Err(stale(notice.sent_ms));
    }
    follower.wake();
    Ok(StatusCode::ACCEPTED.into_response())
}
