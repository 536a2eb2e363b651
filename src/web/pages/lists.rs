//! `GET /lists` (admin): every declared list source with how it stands
//! (the overview's list-health figures, [`super::overview::list_figures`],
//! joined to the declarations and each copy's download state);
//! `POST /lists/update` and `POST /api/lists/update`: "update now", the
//! downloads and the whole-lists reload run in the background, one at a
//! time, their progress at `GET /api/lists/update` (polled by
//! `web/static/lists.js`; without script, reloading `/lists` shows the same);
//! `POST /lists/source/{id}`: a source turned on or off through `[lists]
//! enable` / `disable`, a policy edit with a reason; `GET /api/lists`: the
//! page's figures as JSON.
//!
//! Origins are shown as text, never as links: a list's URL is somewhere a
//! school admin has no reason to go from here.

use std::sync::{Arc, Mutex};

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::overview::{ListsHealth, SourceFigures, list_figures};
use super::{Form, Json, Layout, render_with, when};
use crate::config::Config;
use crate::config::edit::{EditError, PolicyEdit};
use crate::download::{self, FetchOutcome};
use crate::lists::downloads;
use crate::lists::sources::{self, Location, SourceDecl};
use crate::policy::category;
use crate::store::changes::NewChange;
use crate::web::{AppState, RequireAdmin, WebError};

/// The one "update now" at a time and how far it has got.
#[derive(Clone, Default)]
pub struct UpdateSlot(Arc<Mutex<UpdateStatus>>);

impl UpdateSlot {
    fn get(&self) -> UpdateStatus {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
    fn with<T>(&self, change: impl FnOnce(&mut UpdateStatus) -> T) -> T {
        change(&mut self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

/// The last (or running) "update now".
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpdateStatus {
    /// "" (none since the server started), "running", "done" or "failed".
    pub state: &'static str,
    pub started_by: Option<String>,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    /// Downloads to run (enabled URL sources) and how many have ended.
    pub total: usize,
    pub done: usize,
    /// The source being downloaded now.
    pub current: Option<String>,
    pub sources: Vec<SourceProgress>,
    /// "waiting", "running", "done" or "failed": the whole-lists reload.
    pub reload: &'static str,
    /// What happened, in a sentence.
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceProgress {
    pub id: String,
    /// "waiting", "downloading", "updated", "unchanged" or "failed".
    pub state: &'static str,
    pub detail: Option<String>,
}

/// One declared source on the page and in `/api/lists`.
#[derive(Debug, Clone, Serialize)]
pub struct SourceRow {
    pub id: String,
    pub category: String,
    pub format: &'static str,
    /// "url" or "path".
    pub origin_kind: &'static str,
    pub origin: String,
    pub enabled: bool,
    /// "declaration", "config-enable" or "config-disable".
    pub enabled_by: &'static str,
    /// A locked category's source: it cannot be turned off.
    pub locked: bool,
    /// "ok", "degraded", "missing", or "off" for a disabled source.
    pub state: String,
    /// Unix seconds when the copy in force was taken.
    pub last_fetch: Option<u64>,
    pub entries: Option<u64>,
    pub bad_lines: Option<u64>,
    pub failing_since: Option<u64>,
    pub last_error: Option<String>,
    pub age_seconds: Option<u64>,
    pub description: String,
}

/// The page's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ListsFigures {
    pub sources: Vec<SourceRow>,
    pub declared: usize,
    pub enabled: usize,
    /// Names in the lists in force (the running pipeline's).
    pub entries: u64,
    /// Unix seconds of the newest copy in force.
    pub last_update: Option<u64>,
    /// Hours between scheduled updates (`[lists] update_hours`; none: off).
    pub update_hours: Option<u64>,
    /// Unix seconds, roughly: the last scheduled check plus the interval.
    pub next_update: Option<u64>,
    /// Why the declarations or the lists could not be read, if so.
    pub error: Option<String>,
    pub update: UpdateStatus,
}

fn now_seconds() -> u64 {
    download::unix_now()
}

/// The declared sources (disabled ones too) and the same with the
/// config's enable/disable left out (how each is declared).
fn declared(config: &Config) -> Result<(Vec<SourceDecl>, Vec<SourceDecl>), String> {
    let settings = crate::serve::list_settings(config).map_err(|error| error.to_string())?;
    let now = sources::load_sources(&settings).map_err(|error| error.to_string())?;
    let as_declared = sources::ListSettings { enable: Vec::new(), disable: Vec::new(), ..settings };
    let declared = sources::load_sources(&as_declared).map_err(|error| error.to_string())?;
    Ok((now, declared))
}

/// Reads the page's figures (blocking: files).
pub fn figures(state: &AppState) -> ListsFigures {
    let config = state.config();
    let metrics = state.metrics();
    let now = now_seconds();
    let health: ListsHealth = list_figures(state, &metrics, crate::time::now_ms());
    let downloads_dir = downloads::folder(&config.data_dir);
    let (sources, error) = match declared(&config) {
        Ok(pair) => (Some(pair), None),
        Err(error) => (None, Some(error)),
    };
    let error = error.or(health.error.clone());
    let mut rows = Vec::new();
    if let Some((now_sources, as_declared)) = &sources {
        for source in now_sources {
            let by_declaration = as_declared.iter().find(|d| d.id == source.id).is_some_and(|d| d.enabled);
            let enabled_by = if source.enabled == by_declaration {
                "declaration"
            } else if source.enabled {
                "config-enable"
            } else {
                "config-disable"
            };
            let figures: Option<&SourceFigures> = health.sources.iter().find(|figures| figures.id == source.id);
            let download = download::download_state(&downloads_dir, &source.id);
            let last_fetch = figures.and_then(|f| f.updated_at).or(download.fetched_at);
            let (origin_kind, origin) = match &source.location {
                Location::Url(url) => ("url", url.clone()),
                Location::Path(path) => ("path", path.display().to_string()),
            };
            rows.push(SourceRow {
                id: source.id.clone(),
                category: category::by_index(source.category).map_or("?", |c| c.id).to_string(),
                format: source.format.as_str(),
                origin_kind,
                origin,
                enabled: source.enabled,
                enabled_by,
                locked: config.locked.contains(source.category),
                state: if source.enabled {
                    figures.map_or("unknown".to_string(), |f| f.state.clone())
                } else {
                    "off".to_string()
                },
                last_fetch,
                entries: figures.and_then(|f| f.entries).or(download.names.map(|n| n as u64)),
                bad_lines: download.bad_lines.map(|n| n as u64),
                failing_since: figures.and_then(|f| f.failing_since).or(download.failing_since),
                last_error: figures.and_then(|f| f.last_failure.clone()).or(download.last_error),
                age_seconds: last_fetch.map(|at| now.saturating_sub(at)),
                description: source.description.clone(),
            });
        }
    }
    let update_hours = config.list_update_interval.map(|interval| interval.as_secs() / 3600);
    let last_checked = rows
        .iter()
        .filter(|row| row.enabled && row.origin_kind == "url")
        .filter_map(|row| download::download_state(&downloads_dir, &row.id).checked_at)
        .max();
    ListsFigures {
        declared: rows.len(),
        enabled: rows.iter().filter(|row| row.enabled).count(),
        entries: state.pipeline().lists().len() as u64,
        last_update: rows.iter().filter(|row| row.enabled).filter_map(|row| row.last_fetch).max(),
        next_update: update_hours.zip(last_checked).map(|(hours, at)| at + hours * 3600),
        update_hours,
        error,
        sources: rows,
        update: state.lists_update().get(),
    }
}

/// A duration in words: "5 min", "3 h", "2 days".
fn age_text(seconds: u64) -> String {
    match seconds {
        0..60 => "just now".to_string(),
        60..3600 => format!("{} min", seconds / 60),
        3600..172_800 => format!("{} h", seconds / 3600),
        _ => format!("{} days", seconds / 86_400),
    }
}

// ---------------------------------------------------------------------------
// The page

#[derive(Template)]
#[template(path = "lists.html")]
struct ListsPage {
    layout: Layout,
    rows: Vec<PageRow>,
    declared: usize,
    enabled: usize,
    entries: u64,
    last_update: String,
    next_update: String,
    error: String,
    update: PageUpdate,
    flash: String,
    /// Whether this server can change its config file.
    editable: bool,
    /// The progress script's URL.
    script: String,
}

struct PageRow {
    row: SourceRow,
    last_fetch: String,
    age: String,
    failing_since: String,
    /// The switch form's refusal, when this row's form was refused.
    field: &'static str,
    message: String,
    reason: String,
}

struct PageUpdate {
    running: bool,
    state: &'static str,
    summary: String,
    sources: Vec<SourceProgress>,
}

fn page_update(state: &AppState, update: &UpdateStatus) -> PageUpdate {
    let summary = match update.state {
        "running" => format!(
            "Updating: {} of {} downloads done{}{}.",
            update.done,
            update.total,
            update.current.as_ref().map_or(String::new(), |id| format!(", now {id}")),
            if update.done == update.total { ", reloading the lists" } else { "" }
        ),
        "done" | "failed" => format!(
            "Last update started by {} at {}: {}",
            update.started_by.as_deref().unwrap_or("?"),
            update.started_ms.map_or(String::new(), |ms| when(state, ms)),
            update.message
        ),
        _ => "No update has been started from the dashboard since the server started.".to_string(),
    };
    PageUpdate { running: update.state == "running", state: update.state, summary, sources: update.sources.clone() }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PageQuery {
    saved: Option<String>,
    started: Option<String>,
}

/// A refused switch form: the source, its field and message, the reason typed.
struct Refusal {
    id: String,
    field: &'static str,
    message: String,
    reason: String,
}

async fn show(
    state: &AppState,
    admin: &RequireAdmin,
    status: StatusCode,
    refusal: Option<Refusal>,
    flash: String,
) -> Result<Response, WebError> {
    let figures = state.blocking(figures).await?;
    let seconds_text = |seconds: Option<u64>| seconds.map_or("never".to_string(), |s| when(state, s as i64 * 1000));
    let rows = figures
        .sources
        .iter()
        .map(|row| {
            let refused = refusal.as_ref().filter(|refusal| refusal.id == row.id);
            PageRow {
                last_fetch: seconds_text(row.last_fetch),
                age: row.age_seconds.map_or("-".to_string(), age_text),
                failing_since: row.failing_since.map_or(String::new(), |s| when(state, s as i64 * 1000)),
                field: refused.map_or("", |refusal| refusal.field),
                message: refused.map_or(String::new(), |refusal| refusal.message.clone()),
                reason: refused.map_or(String::new(), |refusal| refusal.reason.clone()),
                row: row.clone(),
            }
        })
        .collect();
    let page = ListsPage {
        layout: Layout::for_user("Lists", &admin, "/lists"),
        rows,
        declared: figures.declared,
        enabled: figures.enabled,
        entries: figures.entries,
        last_update: seconds_text(figures.last_update),
        next_update: match (figures.update_hours, figures.next_update) {
            (None, _) => "off ([lists] update_hours = 0)".to_string(),
            (Some(hours), Some(at)) => format!("about {} (every {hours} h)", when(state, at as i64 * 1000)),
            (Some(hours), None) => format!("every {hours} h"),
        },
        error: figures.error.clone().unwrap_or_default(),
        update: page_update(state, &figures.update),
        flash,
        editable: state.editor().is_some(),
        script: format!("/static/{}", *crate::web::assets::LISTS_SCRIPT_NAME),
    };
    Ok(render_with(status, &page))
}

pub async fn page(
    State(state): State<AppState>,
    admin: RequireAdmin,
    Query(query): Query<PageQuery>,
) -> Result<Response, WebError> {
    let flash = if let Some(id) = query.saved.as_deref().and_then(|id| id.parse::<i64>().ok()) {
        format!("Saved: the change is in force and recorded in the change log (change {id}).")
    } else if query.started.is_some() {
        "Update started: it runs in the background; this page shows how far it has got.".to_string()
    } else {
        String::new()
    };
    show(&state, &admin, StatusCode::OK, None, flash).await
}

pub async fn api(State(state): State<AppState>, _admin: RequireAdmin) -> Result<axum::Json<ListsFigures>, WebError> {
    Ok(axum::Json(state.blocking(figures).await?))
}

// ---------------------------------------------------------------------------
// Update now

/// Starts "update now" unless one is running: `Ok(true)` when started.
fn start_update(state: &AppState, user: &str) -> Result<bool, WebError> {
    // The downloads to make are known before the status says "running", so a
    // page or poll in the first instant never reads "0 of 0" (a few small
    // declaration files; run_update reads them again and reports an error).
    let planned = declared(&state.config()).map(|(sources, _)| planned_downloads(&sources)).unwrap_or_default();
    let started = state.lists_update().with(|status| {
        if status.state == "running" {
            return false;
        }
        *status = UpdateStatus {
            state: "running",
            started_by: Some(user.to_string()),
            started_ms: Some(crate::time::now_ms()),
            reload: "waiting",
            message: "starting".to_string(),
            total: planned.len(),
            sources: planned,
            ..UpdateStatus::default()
        };
        true
    });
    if !started {
        return Ok(false);
    }
    let changes = state.changes().clone();
    let change = NewChange {
        time_ms: crate::time::now_ms(),
        user: user.to_string(),
        kind: "list-update".to_string(),
        group: None,
        subject: "every list source that is on".to_string(),
        old: String::new(),
        new: "downloaded and reloaded (update now)".to_string(),
        reason: "update now on the Lists page".to_string(),
    };
    let task_state = state.clone();
    tokio::spawn(async move {
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(error) = changes.record_only(&change) {
                tracing::warn!(%error, "cannot record the list update in the change log");
            }
        })
        .await;
        run_update(task_state).await;
    });
    Ok(true)
}

/// The URL sources that are on: what "update now" downloads, each waiting.
fn planned_downloads(sources: &[SourceDecl]) -> Vec<SourceProgress> {
    sources
        .iter()
        .filter(|source| source.enabled && matches!(source.location, Location::Url(_)))
        .map(|source| SourceProgress { id: source.id.clone(), state: "waiting", detail: None })
        .collect()
}

/// The downloads (one thread, off the runtime), then the whole-lists reload.
async fn run_update(state: AppState) {
    let config = state.config();
    let slot = state.lists_update().clone();
    let downloads = {
        let slot = slot.clone();
        tokio::task::spawn_blocking(move || -> Result<Vec<(String, FetchOutcome)>, String> {
            let (sources, _) = declared(&config)?;
            let ids = planned_downloads(&sources);
            slot.with(|status| {
                status.total = ids.len();
                status.sources = ids;
                status.message = "downloading".to_string();
            });
            let downloads_dir = downloads::folder(&config.data_dir);
            Ok(download::update_all_with(&sources, &downloads_dir, &config.downloads, |source, outcome| {
                slot.with(|status| {
                    let (state, detail) = match outcome {
                        None => ("downloading", None),
                        Some(FetchOutcome::Updated { names, bad_lines }) => {
                            ("updated", Some(format!("{names} names, {bad_lines} bad lines")))
                        }
                        Some(FetchOutcome::NotModified) => ("unchanged", None),
                        Some(FetchOutcome::Failed { reason }) => ("failed", Some(reason.clone())),
                    };
                    if outcome.is_none() {
                        status.current = Some(source.id.clone());
                    } else {
                        status.done += 1;
                        status.current = None;
                    }
                    if let Some(row) = status.sources.iter_mut().find(|row| row.id == source.id) {
                        row.state = state;
                        row.detail = detail;
                    }
                });
            }))
        })
        .await
        .unwrap_or_else(|error| Err(format!("the download task failed ({error})")))
    };
    let failed_downloads = match &downloads {
        Ok(outcomes) => outcomes.iter().filter(|(_, outcome)| matches!(outcome, FetchOutcome::Failed { .. })).count(),
        Err(_) => 0,
    };
    slot.with(|status| status.reload = "running");
    let reload = match state.reload_lists() {
        Some(reload) => reload().await,
        None => Err("this dashboard is not attached to a running server; nothing was reloaded".to_string()),
    };
    slot.with(|status| {
        status.finished_ms = Some(crate::time::now_ms());
        status.current = None;
        status.reload = if reload.is_ok() { "done" } else { "failed" };
        let (state, message) = match (&downloads, &reload) {
            (Err(error), _) => ("failed", format!("the sources could not be read ({error}); the lists in force stay")),
            (Ok(_), Err(error)) => {
                ("failed", format!("the reload failed ({error}); the last good lists stay in force"))
            }
            (Ok(_), Ok(())) if failed_downloads > 0 => (
                "failed",
                format!(
                    "{failed_downloads} of {} downloads failed; each failed source keeps its last good copy, and \
                     the lists were reloaded",
                    status.total
                ),
            ),
            (Ok(_), Ok(())) => (
                "done",
                format!(
                    "{} download{} checked and the lists reloaded",
                    status.total,
                    if status.total == 1 { "" } else { "s" }
                ),
            ),
        };
        status.state = state;
        status.message = message;
    });
}

pub async fn update(State(state): State<AppState>, admin: RequireAdmin) -> Result<Response, WebError> {
    if start_update(&state, &admin.user.name)? {
        Ok(Redirect::to("/lists?started=1").into_response())
    } else {
        show(
            &state,
            &admin,
            StatusCode::CONFLICT,
            None,
            "An update is already running; this page shows how far it has got.".to_string(),
        )
        .await
    }
}

pub async fn api_update(State(state): State<AppState>, admin: RequireAdmin) -> Result<Response, WebError> {
    let started = start_update(&state, &admin.user.name)?;
    let status = if started { StatusCode::ACCEPTED } else { StatusCode::CONFLICT };
    let mut body = serde_json::to_value(state.lists_update().get()).unwrap_or_default();
    body["started"] = serde_json::Value::Bool(started);
    if !started {
        body["error"] = serde_json::Value::String("an update is already running".to_string());
    }
    Ok((status, axum::Json(body)).into_response())
}

pub async fn api_progress(State(state): State<AppState>, _admin: RequireAdmin) -> axum::Json<UpdateStatus> {
    axum::Json(state.lists_update().get())
}

// ---------------------------------------------------------------------------
// Enable or disable

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SwitchForm {
    /// "on" or "off".
    pub enabled: String,
    pub reason: String,
}

pub async fn switch(
    State(state): State<AppState>,
    admin: RequireAdmin,
    Path(id): Path<String>,
    Form(form): Form<SwitchForm>,
) -> Result<Response, WebError> {
    let outcome = switch_source(&state, &admin, &id, &form.enabled, &form.reason).await;
    match outcome {
        Ok(change) => Ok(Redirect::to(&format!("/lists?saved={change}")).into_response()),
        Err(error) => {
            let field = match error.field {
                Some("reason") => "reason",
                _ => "form",
            };
            let refusal = Refusal { id, field, message: error.message, reason: form.reason };
            show(&state, &admin, StatusCode::BAD_REQUEST, Some(refusal), String::new()).await
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ApiSwitch {
    pub enabled: bool,
    #[serde(default)]
    pub reason: String,
}

/// Applies the switch through the policy editor: the change id.
async fn switch_source(
    state: &AppState,
    admin: &RequireAdmin,
    id: &str,
    enabled: &str,
    reason: &str,
) -> Result<i64, EditError> {
    let enabled = match enabled {
        "on" => true,
        "off" => false,
        other => return Err(EditError { field: Some("enabled"), message: format!("{other:?} is not on or off") }),
    };
    let Some(editor) = state.editor().cloned() else {
        return Err(EditError {
            field: None,
            message: "this server was not started from a config file it can write, so sources cannot be switched \
                      here; edit [lists] enable/disable in the config file"
                .to_string(),
        });
    };
    let edit = PolicyEdit::ListSource { id: id.to_string(), enabled };
    editor.apply(edit, &admin.user.name, reason).await.map(|change| change.id)
}

/// `POST /api/lists/source/{id}`-like JSON switch: `{"enabled": false, "reason": "..."}`.
pub async fn api_switch(
    State(state): State<AppState>,
    admin: RequireAdmin,
    Path(id): Path<String>,
    Json(body): Json<ApiSwitch>,
) -> Result<Response, WebError> {
    let enabled = if body.enabled { "on" } else { "off" };
    match switch_source(&state, &admin, &id, enabled, &body.reason).await {
        Ok(change) => Ok(axum::Json(serde_json::json!({ "saved": true, "change": change })).into_response()),
        Err(error) => Err(WebError::BadRequest { field: error.field, message: error.message }),
    }
}
