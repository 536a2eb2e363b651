//! Unblock requests (issue 15): what the block page and staff users ask for,
//! and the admins' decisions.
//!
//! - `GET /requests` (admin): the open requests grouped by name and group
//!   (newest first), each group with its reasons and requesters and two
//!   forms: approve (`POST /requests/approve`: an allow override for the
//!   group through [`PolicyEditor::apply`], with the reason and an optional
//!   expiry, then every open request of that name and group marked approved
//!   with the change's id) and decline (`POST /requests/decline`, a reply
//!   required). A locked category's group offers only decline. The decided
//!   tab (`?tab=decided`) lists decisions, newest first.
//! - `GET /requests/new`, `POST /requests/new` (admin, dsl): ask for a name
//!   to be unblocked for a group, with a reason; refused unless the policy in
//!   force blocks it for that group.
//! - JSON: `GET /api/requests`, `POST /api/requests` (approve or decline).
//!
//! Governors have no access (the role extractors answer 403): requests name
//! sites, requesters and addresses.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use hickory_proto::rr::{LowerName, Name, RecordType};
use serde::{Deserialize, Serialize};

use super::{Form, Json, Layout, render_with};
use crate::config::Config;
use crate::config::edit::{EditError, OverrideKind, PolicyEdit};
use crate::dns::decision::DecisionKind;
use crate::dns::{Flow, Question, Requester};
use crate::policy::category;
use crate::policy_editor::PolicyEditor;
use crate::store::changes::Change;
use crate::store::unblock::{Decision, NewRequest, OpenGroup, Source, UnblockError};
use crate::web::session::CurrentUser;
use crate::web::{AppState, RequireAdmin, RequireDsl, WebError};

/// Decisions on one page of the decided tab.
pub const PER_PAGE: usize = 50;

const READ_ONLY_NOTE: &str = "Hedgerow was not started from a config file it can write, so requests cannot be \
                              approved here (an approval is an allow override in the config file). They can still \
                              be declined.";

// ---------------------------------------------------------------- shared

/// A category's name for people ("blocked by name" for a deny override).
fn category_name(id: &str) -> String {
    if id.is_empty() {
        return "blocked by name (deny override)".to_string();
    }
    category::index_of(id).and_then(category::by_index).map(|c| c.name.to_string()).unwrap_or_else(|| id.to_string())
}

fn duration_words(ms: i64) -> String {
    let minutes = ms / 60_000;
    match minutes {
        _ if ms < 60_000 => format!("{} s", ms.max(0) / 1000),
        0..60 => format!("{minutes} min"),
        60..1440 => format!("{} h {} min", minutes / 60, minutes % 60),
        _ => format!("{} days {} h", minutes / 1440, (minutes % 1440) / 60),
    }
}

/// The editor, or the reason approving is not possible here.
fn editor(state: &AppState) -> Result<Arc<PolicyEditor>, EditError> {
    state.editor().cloned().ok_or_else(|| EditError { field: None, message: state.read_only_note(READ_ONLY_NOTE) })
}

fn store_error(error: UnblockError) -> EditError {
    match error {
        UnblockError::Invalid { field, message } => EditError { field: Some(field), message },
        UnblockError::Store(error) => {
            tracing::error!(%error, "unblock requests");
            EditError { field: None, message: "the requests could not be read or saved; try again".to_string() }
        }
    }
}

/// What an approval made: how many requests it decided and the change log row.
#[derive(Debug, Clone, Serialize)]
pub struct Approved {
    pub decided: usize,
    pub change: Change,
}

/// Approves every open request for `name` and `group`: checks they may be
/// approved, makes the allow override through the policy editor (a refused
/// edit decides nothing), then marks them approved with the change's id.
async fn approve(
    state: &AppState,
    user: &str,
    name: &str,
    group: &str,
    reason: &str,
    until_ms: Option<i64>,
) -> Result<Approved, EditError> {
    let (n, g) = (name.to_string(), group.to_string());
    state
        .blocking(move |state| state.unblock().check_approvable(&n, &g))
        .await
        .map_err(|error| EditError { field: None, message: error.to_string() })?
        .map_err(store_error)?;
    if reason.trim().is_empty() {
        return Err(EditError {
            field: Some("reason"),
            message: "say why it is allowed; the reason is kept with the override in the change log".to_string(),
        });
    }
    let editor = editor(state)?;
    let edit = PolicyEdit::AddOverride {
        group: group.to_string(),
        kind: OverrideKind::Allow,
        name: name.to_string(),
        reason: reason.trim().to_string(),
        until_ms,
    };
    let change = editor.apply(edit, user, reason).await?;
    let (n, g, u, r, id) = (name.to_string(), group.to_string(), user.to_string(), reason.to_string(), change.id);
    let decided = state
        .blocking(move |state| state.unblock().approve(&n, &g, &u, &r, until_ms, Some(id), crate::time::now_ms()))
        .await
        .map_err(|error| EditError { field: None, message: error.to_string() })?
        .map_err(store_error)?;
    Ok(Approved { decided, change })
}

async fn decline(state: &AppState, user: &str, name: &str, group: &str, reply: &str) -> Result<usize, EditError> {
    let (n, g, u, r) = (name.to_string(), group.to_string(), user.to_string(), reply.to_string());
    state
        .blocking(move |state| state.unblock().decline(&n, &g, &u, &r, crate::time::now_ms()))
        .await
        .map_err(|error| EditError { field: None, message: error.to_string() })?
        .map_err(store_error)
}

// ---------------------------------------------------------------- the page

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct ListQuery {
    /// "open" (the default) or "decided".
    pub tab: String,
    pub page: String,
    /// After a decision: "approved" or "declined".
    pub done: String,
}

/// An approve or decline form as sent.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct DecideForm {
    pub name: String,
    pub group: String,
    /// Approve: the override's reason.
    pub reason: String,
    /// Approve: the last day it is allowed ("" until removed).
    pub until_date: String,
    /// Decline: the reply.
    pub reply: String,
}

/// A refused decision: which group's form, which field, and what was typed.
struct Refusal {
    /// "approve" or "decline".
    action: String,
    name: String,
    group: String,
    field: &'static str,
    message: String,
    input: DecideForm,
}

struct RequestView {
    reason: String,
    requester: String,
    source: &'static str,
    client: String,
    when: String,
}

struct GroupView {
    name: String,
    group: String,
    category: String,
    locked: bool,
    count: usize,
    first: String,
    last: String,
    requests: Vec<RequestView>,
    /// An id for the forms' fields: unique on the page.
    key: String,
    /// The approve form's values and its message (field, text).
    reason: String,
    until_date: String,
    reply: String,
    approve_error: (&'static str, String),
    decline_error: (&'static str, String),
}

struct DecisionView {
    name: String,
    group: String,
    category: String,
    locked: bool,
    approved: bool,
    by: String,
    when: String,
    reply: String,
    until: String,
    change_id: Option<i64>,
    count: usize,
    took: String,
}

#[derive(Template)]
#[template(path = "requests.html")]
struct RequestsPage {
    layout: Layout,
    tab: String,
    open_count: usize,
    groups: Vec<GroupView>,
    decisions: Vec<DecisionView>,
    flash: String,
    /// Why approving is off ("" when it is possible).
    read_only: String,
    page: usize,
    more: bool,
    timezone: String,
}

/// The reason an approval is pre-filled with: the requesters' reasons.
fn suggested_reason(group: &OpenGroup) -> String {
    let mut reasons: Vec<&str> = Vec::new();
    for request in &group.requests {
        if !reasons.contains(&request.reason.as_str()) {
            reasons.push(&request.reason);
        }
    }
    let mut text = format!("Requested: {}", reasons.join("; "));
    if text.chars().count() > 300 {
        text = text.chars().take(299).collect::<String>() + "…";
    }
    text
}

fn group_view(state: &AppState, group: OpenGroup, refusal: Option<&Refusal>) -> GroupView {
    let key = format!("{}-{}", group.group, group.name).replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let mine = refusal.filter(|r| r.name == group.name && r.group == group.group);
    let mut view = GroupView {
        key,
        category: category_name(&group.category),
        locked: group.locked,
        count: group.count,
        first: super::when(state, group.first_ms),
        last: super::when(state, group.last_ms),
        reason: suggested_reason(&group),
        until_date: String::new(),
        reply: String::new(),
        approve_error: ("", String::new()),
        decline_error: ("", String::new()),
        requests: group
            .requests
            .iter()
            .map(|request| RequestView {
                reason: request.reason.clone(),
                requester: request.requester.clone(),
                source: if request.source == "dashboard" { "dashboard" } else { "block page" },
                client: request.client.clone(),
                when: super::when(state, request.created_ms),
            })
            .collect(),
        name: group.name,
        group: group.group,
    };
    if let Some(refusal) = mine {
        if refusal.action == "approve" {
            view.reason = refusal.input.reason.clone();
            view.until_date = refusal.input.until_date.clone();
            let field = if matches!(refusal.field, "reason" | "until_date") { refusal.field } else { "form" };
            view.approve_error = (field, refusal.message.clone());
        } else {
            view.reply = refusal.input.reply.clone();
            let field = if refusal.field == "reply" { "reply" } else { "form" };
            view.decline_error = (field, refusal.message.clone());
        }
    }
    view
}

fn decision_view(state: &AppState, decision: Decision) -> DecisionView {
    DecisionView {
        category: category_name(&decision.category),
        locked: decision.locked,
        approved: decision.state == "approved",
        when: super::when(state, decision.decided_ms),
        until: match decision.until_ms {
            Some(until) => super::when(state, until),
            None => "until removed".to_string(),
        },
        took: duration_words(decision.ms_to_decide),
        change_id: decision.change_id,
        count: decision.count,
        reply: decision.reply,
        by: decision.decided_by,
        name: decision.name,
        group: decision.group,
    }
}

async fn show(
    state: &AppState,
    admin: &RequireAdmin,
    query: &ListQuery,
    status: StatusCode,
    refusal: Option<Refusal>,
) -> Result<Response, WebError> {
    let tab = if query.tab == "decided" { "decided" } else { "open" }.to_string();
    let page = query.page.trim().parse::<usize>().ok().filter(|page| *page >= 1).unwrap_or(1);
    let decided = tab == "decided";
    let (open, decisions) = state
        .blocking(move |state| -> Result<_, WebError> {
            let open = state.unblock().open_groups()?;
            let decisions =
                if decided { state.unblock().decided(PER_PAGE + 1, (page - 1) * PER_PAGE)? } else { Vec::new() };
            Ok((open, decisions))
        })
        .await??;
    let more = decisions.len() > PER_PAGE;
    let config = state.config();
    let flash = match query.done.as_str() {
        "approved" => "Approved: the site is allowed for that group now, and the change is in the change log.",
        "declined" => "Declined: the reply is kept with the requests.",
        _ => "",
    };
    let view = RequestsPage {
        layout: Layout::for_user("Unblock requests", admin, "/requests"),
        open_count: open.len(),
        groups: if decided {
            Vec::new()
        } else {
            open.into_iter().map(|g| group_view(state, g, refusal.as_ref())).collect()
        },
        decisions: decisions.into_iter().take(PER_PAGE).map(|d| decision_view(state, d)).collect(),
        flash: flash.to_string(),
        read_only: if state.editor().is_some() { String::new() } else { state.read_only_note(READ_ONLY_NOTE) },
        tab,
        page,
        more,
        timezone: config.timezone_name.clone(),
    };
    Ok(render_with(status, &view))
}

pub async fn page(
    State(state): State<AppState>,
    admin: RequireAdmin,
    Query(query): Query<ListQuery>,
) -> Result<Response, WebError> {
    show(&state, &admin, &query, StatusCode::OK, None).await
}

/// The last day of an approval's override, or `None` (until removed).
fn until_from_form(config: &Config, date: &str) -> Result<Option<i64>, EditError> {
    super::policy::expiry(config, date, "", crate::time::now_ms())
}

/// `POST /requests/approve` and `POST /requests/decline`.
pub async fn decide(
    State(state): State<AppState>,
    admin: RequireAdmin,
    axum::extract::Path(action): axum::extract::Path<String>,
    Form(form): Form<DecideForm>,
) -> Result<Response, WebError> {
    let user = admin.user.name.clone();
    let outcome = match action.as_str() {
        "approve" => match until_from_form(&state.config(), &form.until_date) {
            Ok(until_ms) => approve(&state, &user, &form.name, &form.group, &form.reason, until_ms).await.map(|_| ()),
            Err(error) => Err(error),
        },
        "decline" => decline(&state, &user, &form.name, &form.group, &form.reply).await.map(|_| ()),
        _ => return Err(WebError::NotFound),
    };
    match outcome {
        Ok(()) => Ok(Redirect::to(&format!("/requests?done={action}d")).into_response()),
        Err(error) => {
            let refusal = Refusal {
                action,
                name: form.name.clone(),
                group: form.group.clone(),
                field: error.field.unwrap_or("form"),
                message: error.message,
                input: form,
            };
            show(&state, &admin, &ListQuery::default(), StatusCode::BAD_REQUEST, Some(refusal)).await
        }
    }
}

// ---------------------------------------------------------------- ask from the dashboard

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct NewForm {
    pub name: String,
    pub group: String,
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct SentQuery {
    pub sent: String,
    pub name: String,
    pub group: String,
}

#[derive(Template)]
#[template(path = "request_new.html")]
struct NewPage {
    layout: Layout,
    groups: Vec<String>,
    form: NewForm,
    /// (field, message) of a refusal.
    error: (&'static str, String),
    flash: String,
    reason_max: usize,
}

fn new_page(
    state: &AppState,
    user: &CurrentUser,
    form: NewForm,
    error: (&'static str, String),
    flash: String,
) -> NewPage {
    NewPage {
        layout: Layout::for_user("Ask for a site to be unblocked", user, "/requests/new"),
        groups: state.config().groups.keys().cloned().collect(),
        form,
        error,
        flash,
        reason_max: crate::store::unblock::REASON_MAX,
    }
}

pub async fn new_form(
    State(state): State<AppState>,
    staff: RequireDsl,
    Query(query): Query<SentQuery>,
) -> Result<Response, WebError> {
    let asked = match (query.name.trim(), query.group.trim()) {
        ("", _) => "Your request".to_string(),
        (name, group) => format!("Your request for {name} ({group})"),
    };
    let flash = match query.sent.as_str() {
        "" => String::new(),
        "locked" => format!(
            "{asked} is saved. It is in a locked category, so it can only be declined (illegal content lists cannot \
             be unblocked by anyone)."
        ),
        _ => format!("{asked} has been sent to the admins. It shows on their Requests page until one decides it."),
    };
    Ok(render_with(StatusCode::OK, &new_page(&state, &staff, NewForm::default(), ("", String::new()), flash)))
}

/// What the policy in force does with `name` for `group`: blocked (the
/// category's id and whether it is locked), or why it cannot be asked for.
fn blocked_for(state: &AppState, name: &str, group: &str) -> Result<(String, bool), EditError> {
    let bad = |field: &'static str, message: String| EditError { field: Some(field), message };
    let trimmed = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if trimmed.is_empty() {
        return Err(bad("name", "write the site's name, e.g. www.example.org".to_string()));
    }
    if trimmed.contains('/') || trimmed.contains(':') || trimmed.parse::<std::net::IpAddr>().is_ok() {
        return Err(bad("name", format!("{name:?} is not a site's name; write only the name, e.g. www.example.org")));
    }
    let Ok(parsed) = Name::from_utf8(format!("{trimmed}.")) else {
        return Err(bad("name", format!("{name:?} is not a site's name; write e.g. www.example.org")));
    };
    if !state.config().groups.contains_key(group) {
        return Err(bad("group", format!("{group:?} is not one of the school's groups")));
    }
    let question = Question { name: LowerName::from(parsed), record_type: RecordType::A, dnssec_ok: false };
    let decision = match state.pipeline().decide(Requester::Group(group), &question, false) {
        Flow::Final(answer) => answer.decision.clone(),
        Flow::Resolve(pending) => pending.policy_decision(),
    };
    if decision.kind != DecisionKind::Blocked {
        return Err(bad("name", format!("{trimmed} is not blocked for {group}; there is nothing to unblock")));
    }
    let id = decision.category.as_deref().unwrap_or_default().to_string();
    let locked = category::index_of(&id).and_then(category::by_index).is_some_and(|c| c.locked);
    Ok((id, locked))
}

pub async fn new_submit(
    State(state): State<AppState>,
    staff: RequireDsl,
    Form(form): Form<NewForm>,
) -> Result<Response, WebError> {
    let user = staff.user.name.clone();
    let input = form.clone();
    let outcome = state
        .blocking(move |state| -> Result<bool, EditError> {
            let (category, locked) = blocked_for(state, &input.name, &input.group)?;
            let request = NewRequest {
                name: input.name.trim().trim_end_matches('.').to_ascii_lowercase(),
                group: input.group.clone(),
                category,
                locked,
                reason: input.reason.clone(),
                requester: user,
                source: Source::Dashboard,
                client: String::new(),
            };
            state.unblock().submit(&request, crate::time::now_ms()).map_err(store_error)?;
            Ok(locked)
        })
        .await?;
    match outcome {
        Ok(locked) => {
            let sent = if locked { "locked" } else { "1" };
            let name = form.name.trim().trim_end_matches('.').to_ascii_lowercase();
            let to =
                format!("/requests/new?sent={sent}&name={}&group={}", super::encode(&name), super::encode(&form.group));
            Ok(Redirect::to(&to).into_response())
        }
        Err(error) => {
            let field = error.field.filter(|f| matches!(*f, "name" | "group" | "reason")).unwrap_or("form");
            let page = new_page(&state, &staff, form, (field, error.message), String::new());
            Ok(render_with(StatusCode::BAD_REQUEST, &page))
        }
    }
}

// ---------------------------------------------------------------- the API

#[derive(Debug, Clone, Serialize)]
pub struct RequestList {
    pub open: Vec<OpenGroup>,
    pub decided: Vec<Decision>,
}

/// `GET /api/requests`: the open requests grouped, and the newest 50 decisions.
pub async fn api_list(
    State(state): State<AppState>,
    _admin: RequireAdmin,
) -> Result<axum::Json<RequestList>, WebError> {
    let list = state
        .blocking(|state| -> Result<_, WebError> {
            Ok(RequestList { open: state.unblock().open_groups()?, decided: state.unblock().decided(PER_PAGE, 0)? })
        })
        .await??;
    Ok(axum::Json(list))
}

/// `POST /api/requests`: `{"action": "approve", "name", "group", "reason",
/// "until": RFC 3339 or absent}` or `{"action": "decline", "name", "group", "reply"}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiDecision {
    pub action: String,
    pub name: String,
    pub group: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub until: Option<String>,
    #[serde(default)]
    pub reply: String,
}

pub async fn api_decide(
    State(state): State<AppState>,
    admin: RequireAdmin,
    Json(body): Json<ApiDecision>,
) -> Result<Response, WebError> {
    let user = admin.user.name.clone();
    let refused = |error: EditError| WebError::BadRequest { field: error.field, message: error.message };
    match body.action.as_str() {
        "approve" => {
            let until_ms = match body.until.as_deref().map(str::trim).filter(|text| !text.is_empty()) {
                None => None,
                Some(text) => {
                    let ms = crate::config::timed::parse_instant(text).ok_or_else(|| {
                        WebError::bad("until", format!("{text:?} is not an RFC 3339 time (2026-12-07T16:00:00Z)"))
                    })?;
                    if ms <= crate::time::now_ms() {
                        return Err(WebError::bad("until", "that time has already passed"));
                    }
                    Some(ms)
                }
            };
            let approved =
                approve(&state, &user, &body.name, &body.group, &body.reason, until_ms).await.map_err(refused)?;
            Ok(axum::Json(approved).into_response())
        }
        "decline" => {
            let decided = decline(&state, &user, &body.name, &body.group, &body.reply).await.map_err(refused)?;
            Ok(axum::Json(serde_json::json!({ "decided": decided })).into_response())
        }
        other => Err(WebError::bad("action", format!("{other:?} is neither approve nor decline"))),
    }
}
