//! `GET /servers` (admin): the two servers of a pair (`[sync]`). On the
//! primary: this server and each secondary as it last reported (when,
//! whether it has the policy in force here, its answers, its lists, its
//! last problem), and any configured secondary not heard from. On a
//! secondary: where its policy comes from, the policy in force, the last
//! contact and any problem or refused bundle, and "Sync now"
//! (`POST /servers/sync`). `GET /api/servers`: the same as JSON.

use askama::Template;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Serialize;

use super::{Layout, render, when};
use crate::sync::Side;
use crate::web::chart::thousands;
use crate::web::{AppState, RequireAdmin, WebError};

/// A secondary not heard from for this long is shown as a problem (its
/// interval is five minutes unless set otherwise).
const QUIET_MS: i64 = 15 * 60 * 1000;

/// One server as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ServerView {
    pub name: String,
    pub role: &'static str,
    pub address: String,
    pub dns: String,
    pub version: String,
    /// "ok", "warn" or "bad", and what it means in words.
    pub state: &'static str,
    pub state_text: String,
    pub heard: String,
    pub policy: String,
    pub answered: String,
    pub lists: String,
    pub problem: String,
}

/// A secondary's following, as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FollowView {
    pub primary: String,
    pub state: &'static str,
    pub state_text: String,
    pub policy: String,
    pub applied: String,
    pub contact: String,
    pub error: String,
    pub refused: String,
}

#[derive(Serialize)]
struct Servers {
    role: &'static str,
    servers: Vec<ServerView>,
    following: Option<FollowView>,
}

#[derive(Template)]
#[template(path = "servers.html")]
struct ServersPage {
    layout: Layout,
    role: &'static str,
    servers: Vec<ServerView>,
    following: Option<FollowView>,
}

async fn servers(state: &AppState) -> Result<Servers, WebError> {
    match state.sync() {
        Side::Alone => Ok(Servers { role: "alone", servers: Vec::new(), following: None }),
        Side::Secondary(follower) => {
            let status = follower.status();
            let now = crate::time::now_ms();
            let (state_word, state_text) = if !status.error.is_empty() {
                (
                    "bad",
                    format!(
                        "Cannot follow the primary since {}; answering with the policy in force",
                        when(state, status.failing_since_ms)
                    ),
                )
            } else if status.refused_ms > status.applied_ms {
                ("bad", "The last bundle from the primary was refused; the policy in force stays".to_string())
            } else if status.content.is_empty() {
                ("warn", "No policy from the primary yet".to_string())
            } else {
                ("ok", "Following the primary".to_string())
            };
            let at = |ms: i64| if ms > 0 { when(state, ms) } else { "never".to_string() };
            let following = FollowView {
                primary: follower.primary().to_string(),
                state: state_word,
                state_text,
                policy: if status.issued_ms > 0 {
                    format!("the primary's policy of {}", when(state, status.issued_ms))
                } else {
                    "none yet".to_string()
                },
                applied: at(status.applied_ms),
                contact: if status.last_contact_ms > 0 {
                    format!("{} ({} ago)", when(state, status.last_contact_ms), ago(now - status.last_contact_ms))
                } else {
                    "never".to_string()
                },
                error: status.error,
                refused: if status.refused.is_empty() {
                    String::new()
                } else {
                    format!("{}: {}", when(state, status.refused_ms), status.refused)
                },
            };
            Ok(Servers { role: "secondary", servers: Vec::new(), following: Some(following) })
        }
        Side::Primary { peers, .. } => {
            let config = state.config();
            let now = crate::time::now_ms();
            let built = {
                let config = config.clone();
                state.blocking(move |_| crate::sync::bundle::build(&config, "", now)).await?
            };
            let content = built.as_ref().map(|bundle| bundle.content.clone()).unwrap_or_default();
            let metrics = state.pipeline().metrics().snapshot();
            let mut servers = vec![ServerView {
                name: crate::sync::follow::host_name(),
                role: "primary (this server)",
                address: config.dashboard.listen.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                dns: config.listen.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                version: metrics.version.to_string(),
                state: if built.is_ok() { "ok" } else { "bad" },
                state_text: if built.is_ok() { "Answering; owns the policy".into() } else { "Answering".into() },
                heard: "now".into(),
                policy: "the policy in force here".into(),
                answered: answers(metrics.lookups),
                lists: crate::lists::health::ListHealth::summary(
                    crate::lists::health::ListHealth::read(&config.data_dir).as_ref(),
                ),
                problem: built
                    .err()
                    .map(|error| format!("secondaries cannot get the policy: {error}"))
                    .unwrap_or_default(),
            }];
            let heard = peers.list();
            for peer in &heard {
                let report = &peer.report;
                let quiet = now - peer.seen_ms > QUIET_MS;
                let in_step = report.content == content;
                let (state_word, state_text) = if quiet {
                    ("bad", format!("Not heard from for {}", ago(now - peer.seen_ms)))
                } else if !in_step {
                    ("warn", "Behind: it has not taken the policy in force here yet".to_string())
                } else if report.lists != "ok" || !report.last_error.is_empty() {
                    ("warn", "Answering, with a problem".to_string())
                } else {
                    ("ok", "Answering; policy in step".to_string())
                };
                servers.push(ServerView {
                    name: report.name.clone(),
                    role: "secondary",
                    address: peer.address.to_string(),
                    dns: report.dns.clone(),
                    version: report.hedgerow_version.clone(),
                    state: state_word,
                    state_text,
                    heard: format!("{} ({} ago)", when(state, peer.seen_ms), ago(now - peer.seen_ms)),
                    policy: if in_step {
                        "the same as here".to_string()
                    } else if report.issued_ms > 0 {
                        format!("the policy of {}", when(state, report.issued_ms))
                    } else {
                        "none yet".to_string()
                    },
                    answered: answers(report.answered),
                    lists: report.lists.clone(),
                    problem: report.last_error.clone(),
                });
            }
            if let crate::config::sync::SyncRole::Primary { secondaries } = &config.sync.role {
                for url in secondaries {
                    let host = url.split("://").nth(1).unwrap_or(url).split(':').next().unwrap_or_default();
                    if heard.iter().any(|peer| peer.address.to_string() == host) {
                        continue;
                    }
                    servers.push(ServerView {
                        name: url.clone(),
                        role: "secondary",
                        address: host.to_string(),
                        dns: String::new(),
                        version: String::new(),
                        state: "bad",
                        state_text: "Not heard from since this server started".into(),
                        heard: "never".into(),
                        policy: "not known".into(),
                        answered: String::new(),
                        lists: String::new(),
                        problem: "check that it runs with [sync] role = \"secondary\", this server's address and the \
                                  same key_file"
                            .into(),
                    });
                }
            }
            Ok(Servers { role: "primary", servers, following: None })
        }
    }
}

/// "1 answer", "12,345 answers".
fn answers(count: u64) -> String {
    format!("{} answer{}", thousands(count), if count == 1 { "" } else { "s" })
}

/// "a moment", "40 s", "12 min", "3 h", "2 days".
fn ago(ms: i64) -> String {
    let seconds = ms.max(0) / 1000;
    match seconds {
        0..5 => "a moment".to_string(),
        5..60 => format!("{seconds} s"),
        60..3600 => format!("{} min", seconds / 60),
        3600..172_800 => format!("{} h", seconds / 3600),
        _ => format!("{} days", seconds / 86_400),
    }
}

pub async fn page(State(state): State<AppState>, admin: RequireAdmin) -> Result<Response, WebError> {
    let found = servers(&state).await?;
    let page = ServersPage {
        layout: Layout::for_user("Servers", &admin, "/servers"),
        role: found.role,
        servers: found.servers,
        following: found.following,
    };
    Ok(render(&page)?.into_response())
}

pub async fn api(State(state): State<AppState>, _admin: RequireAdmin) -> Result<Response, WebError> {
    Ok(Json(servers(&state).await?).into_response())
}

/// `POST /servers/sync` (admin, secondary): ask the primary now.
pub async fn sync_now(State(state): State<AppState>, _admin: RequireAdmin) -> Result<Response, WebError> {
    let Some(follower) = state.sync().follower() else { return Err(WebError::NotFound) };
    // The outcome is in the status the page shows.
    let _ = follower.sync_once().await;
    Ok(Redirect::to("/servers").into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_ago_read_as_people_say_them() {
        assert_eq!(super::ago(1_000), "a moment");
        assert_eq!(super::ago(40_000), "40 s");
        assert_eq!(super::answers(1), "1 answer");
        assert_eq!(super::answers(12_345), "12,345 answers");
        assert_eq!(super::ago(12 * 60_000), "12 min");
        assert_eq!(super::ago(3 * 3_600_000), "3 h");
        assert_eq!(super::ago(3 * 86_400_000), "3 days");
    }
}
