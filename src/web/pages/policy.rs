//! The policy pages: `GET /policy` (admin, governor) lists the groups at a
//! glance; `GET /policy/{group}` shows one group's categories, search
//! settings, overrides and schedules, with a form for each change for
//! admins and no forms at all for governors. `POST /policy/{group}/{form}`
//! (admin) makes one change through [`PolicyEditor::apply`] with the reason
//! asked, then redirects back with a flash naming the change; a refused
//! change shows the page again with the message beside its field and the
//! input kept. The API twins: `GET /api/policy`, `GET /api/policy/{group}`,
//! `POST /api/policy/{group}` (a JSON edit and its `reason`).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::{Form, Json, Layout, checked, render_with};
use crate::config::edit::{EditError, OverrideKind, PolicyEdit};
use crate::config::{Config, timed};
use crate::policy::category::{self, CategoryKind};
use crate::policy::group::{BlockAnswer, YoutubeMode};
use crate::policy_editor::PolicyEditor;
use crate::store::Role;
use crate::store::changes::Change;
use crate::web::session::CurrentUser;
use crate::web::{AppState, RequireAdmin, RequireGovernorOrAdmin, WebError};

/// Why the policy cannot be changed here, when it cannot.
const READ_ONLY_NOTE: &str = "Hedgerow was not started from a config file it can write, so the policy is shown \
                              read-only. Start it with --config pointing at a writable file (or let it use \
                              ./data/hedgerow.toml) to change the policy here.";

// ---------------------------------------------------------------- views

/// One group at a glance (the overview's rows, `GET /api/policy`).
#[derive(Debug, Clone, Serialize)]
pub struct GroupSummary {
    pub name: String,
    pub description: String,
    pub networks: Vec<String>,
    /// How many categories the group is kept from now (locked ones included).
    pub blocked_count: usize,
    pub safesearch: bool,
    pub youtube: &'static str,
    pub bypass: bool,
    pub block_answer: &'static str,
    pub allow_count: usize,
    pub deny_count: usize,
    pub schedule_count: usize,
}

/// One category for one group.
#[derive(Debug, Clone, Serialize)]
pub struct CategoryView {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    /// "UKSIC theme", "bypass" or "extra".
    pub kind: &'static str,
    pub answers: &'static str,
    /// "blocked", "allowed" or "allowed by schedule now".
    pub state: &'static str,
    /// Blocked in the policy as written (schedules aside).
    pub blocked: bool,
    pub locked: bool,
    /// Why it is locked ("" when it is not).
    pub locked_reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct OverrideView {
    /// "allow" or "deny".
    pub kind: &'static str,
    pub name: String,
    pub reason: String,
    pub until_ms: Option<i64>,
    /// The expiry in the school's time zone, or "no expiry".
    pub expiry: String,
    pub lapsed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScheduleView {
    /// Its number in the group's schedules, from 0 (what removing takes).
    pub index: usize,
    pub category: String,
    pub days: Vec<&'static str>,
    pub from: String,
    pub to: String,
    pub open_now: bool,
}

/// One group in full (`GET /api/policy/{group}`).
#[derive(Debug, Clone, Serialize)]
pub struct GroupDetail {
    #[serde(flatten)]
    pub summary: GroupSummary,
    pub timezone: String,
    pub categories: Vec<CategoryView>,
    pub overrides: Vec<OverrideView>,
    pub schedules: Vec<ScheduleView>,
    /// Whether the policy can be changed here (a writable config file).
    pub editable: bool,
}

fn youtube_word(mode: YoutubeMode) -> &'static str {
    match mode {
        YoutubeMode::Strict => "strict",
        YoutubeMode::Moderate => "moderate",
        YoutubeMode::Off => "off",
    }
}

fn answer_word(answer: &BlockAnswer) -> &'static str {
    match answer {
        BlockAnswer::NxDomain => "nxdomain",
        BlockAnswer::NullAddress => "null",
        BlockAnswer::BlockPage { .. } => "block-page",
    }
}

fn kind_label(kind: CategoryKind) -> &'static str {
    match kind {
        CategoryKind::Uksic => "UKSIC theme",
        CategoryKind::Bypass => "bypass",
        CategoryKind::Extra => "extra",
    }
}

fn locked_reason(category: &category::Category) -> String {
    if category.answers.contains("illegal content") {
        "always blocked: illegal content, the law requires it".to_string()
    } else {
        "always blocked for every group: it puts the school's devices and data at risk".to_string()
    }
}

fn summary(config: &Config, name: &str, now_ms: i64) -> Option<GroupSummary> {
    let policy = config.groups.get(name)?;
    let in_force = config.groups_at(now_ms);
    let blocked_now = in_force.get(name).map_or(policy.blocked, |p| p.blocked).union(config.locked);
    let overrides = config.overrides.iter().filter(|entry| entry.group == name);
    Some(GroupSummary {
        name: name.to_string(),
        description: policy.description.clone(),
        networks: config
            .networks
            .iter()
            .filter(|network| network.group == name)
            .map(|network| {
                let cidrs: Vec<String> = network.cidrs.iter().map(ToString::to_string).collect();
                format!("{} ({})", network.name, cidrs.join(", "))
            })
            .collect(),
        blocked_count: blocked_now.indexes().count(),
        safesearch: policy.safesearch,
        youtube: youtube_word(policy.youtube),
        bypass: policy.bypass,
        block_answer: answer_word(&policy.block_answer),
        allow_count: overrides.clone().filter(|entry| entry.kind == OverrideKind::Allow).count(),
        deny_count: overrides.filter(|entry| entry.kind == OverrideKind::Deny).count(),
        schedule_count: config.schedules.iter().filter(|schedule| schedule.group == name).count(),
    })
}

fn detail(config: &Config, name: &str, now_ms: i64, editable: bool) -> Option<GroupDetail> {
    let summary = summary(config, name, now_ms)?;
    let policy = &config.groups[name];
    let in_force = config.groups_at(now_ms);
    let blocked_now = in_force.get(name).map_or(policy.blocked, |p| p.blocked);
    let categories = category::all()
        .map(|c| {
            let locked = config.locked.contains(c.bit);
            let blocked = locked || policy.blocked.contains(c.bit);
            let state = if locked || (blocked && blocked_now.contains(c.bit)) {
                "blocked"
            } else if blocked {
                "allowed by schedule now"
            } else {
                "allowed"
            };
            CategoryView {
                id: c.id,
                name: c.name,
                description: c.description,
                kind: kind_label(c.kind),
                answers: c.answers,
                state,
                blocked,
                locked,
                locked_reason: if locked { locked_reason(c) } else { String::new() },
            }
        })
        .collect();
    let overrides = config
        .overrides
        .iter()
        .filter(|entry| entry.group == name)
        .map(|entry| OverrideView {
            kind: entry.kind.key(),
            name: entry.rule.clone(),
            reason: entry.reason.clone(),
            until_ms: entry.until_ms,
            expiry: entry.until_ms.map_or("no expiry".to_string(), |until| config.local_time_text(until)),
            lapsed: !entry.in_force_at(now_ms),
        })
        .collect();
    let schedules = config
        .schedules
        .iter()
        .filter(|schedule| schedule.group == name)
        .enumerate()
        .map(|(index, schedule)| ScheduleView {
            index,
            category: schedule.category.clone(),
            days: schedule.days.iter().map(|day| timed::day_word(*day)).collect(),
            from: timed::clock_text(schedule.from_minute),
            to: timed::clock_text(schedule.to_minute),
            open_now: policy.blocked.contains(schedule.bit) && !blocked_now.contains(schedule.bit),
        })
        .collect();
    Some(GroupDetail { summary, timezone: config.timezone_name.clone(), categories, overrides, schedules, editable })
}

// ---------------------------------------------------------------- the overview

#[derive(Template)]
#[template(path = "policy.html")]
struct OverviewPage {
    layout: Layout,
    groups: Vec<GroupSummary>,
    editable: bool,
    admin: bool,
    note: String,
}

pub async fn overview(State(state): State<AppState>, reader: RequireGovernorOrAdmin) -> Result<Response, WebError> {
    let config = state.config();
    let now = crate::time::now_ms();
    let groups = config.groups.keys().filter_map(|name| summary(&config, name, now)).collect();
    let editable = state.editor().is_some();
    let page = OverviewPage {
        layout: Layout::for_user("Policy", &reader, "/policy"),
        groups,
        editable,
        admin: reader.user.has(Role::Admin),
        note: state.read_only_note(READ_ONLY_NOTE),
    };
    Ok(render_with(StatusCode::OK, &page))
}

pub async fn api_overview(
    State(state): State<AppState>,
    _reader: RequireGovernorOrAdmin,
) -> Result<axum::Json<Vec<GroupSummary>>, WebError> {
    let config = state.config();
    let now = crate::time::now_ms();
    Ok(axum::Json(config.groups.keys().filter_map(|name| summary(&config, name, now)).collect()))
}

// ---------------------------------------------------------------- one group

/// Every field any policy form sends; each form uses some of them.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct PolicyForm {
    reason: String,
    category: String,
    /// "true" or "false" (the category toggle).
    blocked: String,
    /// "on" or "off".
    on: String,
    mode: String,
    answer: String,
    /// "allow" or "deny".
    kind: String,
    name: String,
    until_date: String,
    until_time: String,
    index: String,
    from: String,
    to: String,
    day_mon: String,
    day_tue: String,
    day_wed: String,
    day_thu: String,
    day_fri: String,
    day_sat: String,
    day_sun: String,
}

impl PolicyForm {
    fn days(&self) -> Vec<String> {
        [
            ("mon", &self.day_mon),
            ("tue", &self.day_tue),
            ("wed", &self.day_wed),
            ("thu", &self.day_thu),
            ("fri", &self.day_fri),
            ("sat", &self.day_sat),
            ("sun", &self.day_sun),
        ]
        .into_iter()
        .filter(|(_, value)| checked(value))
        .map(|(day, _)| day.to_string())
        .collect()
    }
}

/// A refused form: which one (`form`, and its row for a row's form), the
/// field the message belongs beside, and what was typed.
#[derive(Debug, Clone, Default)]
struct Refusal {
    /// The form's key: "category:games", "safesearch", "youtube", "bypass",
    /// "block-answer", "override-add", "override-remove:allow:example.com",
    /// "schedule-add", "schedule-remove:0".
    form: String,
    /// A field of that form, or "form" for the form as a whole.
    field: &'static str,
    message: String,
    input: PolicyForm,
}

/// A small form's state for the template: its error (if refused) and the reason typed.
#[derive(Default)]
struct FormState {
    field: &'static str,
    message: String,
    reason: String,
}

struct CategoryRow {
    view: CategoryView,
    /// What it answers, without the pointer into the docs.
    answers: String,
    form: FormState,
}

struct OverrideRow {
    view: OverrideView,
    form: FormState,
}

struct ScheduleRow {
    view: ScheduleView,
    form: FormState,
}

struct DayBox {
    word: &'static str,
    label: &'static str,
    checked: bool,
}

#[derive(Template)]
#[template(path = "policy_group.html")]
struct GroupPage {
    layout: Layout,
    group: GroupSummary,
    timezone: String,
    /// Admin with a writable file: the forms are shown.
    controls: bool,
    admin: bool,
    editable: bool,
    note: String,
    flash: String,
    /// A refused change, also shown at the top (its form may have no place
    /// on the page, e.g. a locked category's).
    problem: String,
    categories: Vec<CategoryRow>,
    overrides: Vec<OverrideRow>,
    schedules: Vec<ScheduleRow>,
    /// Categories a schedule may open (not locked).
    schedulable: Vec<(&'static str, &'static str)>,
    safesearch: FormState,
    youtube: FormState,
    bypass: FormState,
    block_answer: FormState,
    override_add: FormState,
    add_name: String,
    add_kind: String,
    add_until_date: String,
    add_until_time: String,
    schedule_add: FormState,
    add_category: String,
    add_from: String,
    add_to: String,
    add_days: Vec<DayBox>,
}

fn form_state(refusal: Option<&Refusal>, key: &str) -> FormState {
    match refusal {
        Some(refusal) if refusal.form == key => {
            FormState { field: refusal.field, message: refusal.message.clone(), reason: refusal.input.reason.clone() }
        }
        _ => FormState::default(),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct GroupQuery {
    /// The change just saved (its id in the change log), for the flash.
    saved: Option<i64>,
}

/// "Saved: games for pupil allowed (in force now)".
fn flash_text(change: &Change) -> String {
    let new = change.new.lines().next().unwrap_or_default();
    format!("Saved: {} {new} (in force now)", change.subject)
}

async fn show_group(
    state: &AppState,
    current: &CurrentUser,
    group: &str,
    status: StatusCode,
    refusal: Option<Refusal>,
    saved: Option<i64>,
) -> Result<Response, WebError> {
    let config = state.config();
    let now = crate::time::now_ms();
    let editable = state.editor().is_some();
    let Some(detail) = detail(&config, group, now, editable) else {
        return Err(WebError::NotFound);
    };
    let flash = match saved {
        Some(id) => {
            let changes = state.changes().clone();
            state
                .blocking(move |_| changes.get(id))
                .await??
                .filter(|change| change.group.as_deref() == Some(group))
                .map(|change| flash_text(&change))
                .unwrap_or_default()
        }
        None => String::new(),
    };
    let admin = current.user.has(Role::Admin);
    let refusal = refusal.as_ref();
    let input = refusal.map(|r| r.input.clone()).unwrap_or_default();
    let adding_override = refusal.is_some_and(|r| r.form == "override-add");
    let adding_schedule = refusal.is_some_and(|r| r.form == "schedule-add");
    let days_ticked: Vec<String> =
        if adding_schedule { input.days() } else { ["mon", "tue", "wed", "thu", "fri"].map(String::from).to_vec() };
    let page = GroupPage {
        layout: Layout::for_user(&format!("Policy for {group}"), &current, "/policy"),
        timezone: detail.timezone.clone(),
        controls: admin && editable,
        admin,
        editable,
        note: state.read_only_note(READ_ONLY_NOTE),
        flash,
        problem: refusal
            .map(|r| {
                // A change saved but not yet in force says so itself.
                if r.message.starts_with("the change is saved") {
                    r.message.clone()
                } else {
                    format!("Not saved: {}", r.message)
                }
            })
            .unwrap_or_default(),
        categories: detail
            .categories
            .iter()
            .map(|view| CategoryRow {
                form: form_state(refusal, &format!("category:{}", view.id)),
                answers: view.answers.split(" (docs/").next().unwrap_or_default().to_string(),
                view: view.clone(),
            })
            .collect(),
        overrides: detail
            .overrides
            .iter()
            .map(|view| OverrideRow {
                form: form_state(refusal, &format!("override-remove:{}:{}", view.kind, view.name)),
                view: view.clone(),
            })
            .collect(),
        schedules: detail
            .schedules
            .iter()
            .map(|view| ScheduleRow {
                form: form_state(refusal, &format!("schedule-remove:{}", view.index)),
                view: view.clone(),
            })
            .collect(),
        // A schedule opens a category the group blocks: those first.
        schedulable: {
            let blocked = config.groups[group].blocked;
            let open = category::all().filter(|c| !config.locked.contains(c.bit));
            let (first, rest): (Vec<&category::Category>, Vec<_>) = open.partition(|c| blocked.contains(c.bit));
            first.into_iter().chain(rest).map(|c| (c.id, c.name)).collect()
        },
        safesearch: form_state(refusal, "safesearch"),
        youtube: form_state(refusal, "youtube"),
        bypass: form_state(refusal, "bypass"),
        block_answer: form_state(refusal, "block-answer"),
        override_add: form_state(refusal, "override-add"),
        add_name: if adding_override { input.name.clone() } else { String::new() },
        add_kind: if adding_override && input.kind == "deny" { "deny".into() } else { "allow".into() },
        add_until_date: if adding_override { input.until_date.clone() } else { String::new() },
        add_until_time: if adding_override { input.until_time.clone() } else { String::new() },
        schedule_add: form_state(refusal, "schedule-add"),
        add_category: if adding_schedule { input.category.clone() } else { String::new() },
        add_from: if adding_schedule { input.from.clone() } else { "12:00".into() },
        add_to: if adding_schedule { input.to.clone() } else { "13:00".into() },
        add_days: timed::DAYS
            .iter()
            .map(|(word, _)| DayBox {
                word,
                label: day_label(word),
                checked: days_ticked.iter().any(|day| day == word),
            })
            .collect(),
        group: detail.summary,
    };
    Ok(render_with(status, &page))
}

fn day_label(word: &str) -> &'static str {
    match word {
        "mon" => "Monday",
        "tue" => "Tuesday",
        "wed" => "Wednesday",
        "thu" => "Thursday",
        "fri" => "Friday",
        "sat" => "Saturday",
        _ => "Sunday",
    }
}

pub async fn group_page(
    State(state): State<AppState>,
    reader: RequireGovernorOrAdmin,
    Path(group): Path<String>,
    Query(query): Query<GroupQuery>,
) -> Result<Response, WebError> {
    show_group(&state, &reader, &group, StatusCode::OK, None, query.saved).await
}

pub async fn api_group(
    State(state): State<AppState>,
    _reader: RequireGovernorOrAdmin,
    Path(group): Path<String>,
) -> Result<axum::Json<GroupDetail>, WebError> {
    let config = state.config();
    let detail = detail(&config, &group, crate::time::now_ms(), state.editor().is_some());
    detail.map(axum::Json).ok_or(WebError::NotFound)
}

// ---------------------------------------------------------------- changes

/// A date and an optional time in the school's time zone -> UTC ms
/// (`None` when no date is given). A missing time is the end of that day.
pub(super) fn expiry(config: &Config, date: &str, time: &str, now_ms: i64) -> Result<Option<i64>, EditError> {
    let (date, time) = (date.trim(), time.trim());
    if date.is_empty() {
        if !time.is_empty() {
            return Err(bad("until_date", "give the date the override ends as well as the time"));
        }
        return Ok(None);
    }
    let day: jiff::civil::Date =
        date.parse().map_err(|_| bad("until_date", format!("{date:?} is not a date; write it as 2026-12-07")))?;
    let clock = if time.is_empty() {
        jiff::civil::time(23, 59, 0, 0)
    } else {
        time.parse::<jiff::civil::Time>()
            .map_err(|_| bad("until_time", format!("{time:?} is not a time; write 24-hour HH:MM, e.g. 16:00")))?
    };
    let instant = day
        .to_datetime(clock)
        .to_zoned(config.timezone.clone())
        .map_err(|error| bad("until_date", format!("that date and time cannot be used ({error})")))?
        .timestamp()
        .as_millisecond();
    if instant <= now_ms {
        return Err(bad("until_date", "that time has already passed; choose a date and time in the future"));
    }
    Ok(Some(instant))
}

fn bad(field: &'static str, message: impl Into<String>) -> EditError {
    EditError { field: Some(field), message: message.into() }
}

fn override_kind(word: &str) -> Result<OverrideKind, EditError> {
    match word {
        "allow" => Ok(OverrideKind::Allow),
        "deny" => Ok(OverrideKind::Deny),
        other => Err(bad("kind", format!("{other:?} is neither allow nor deny"))),
    }
}

fn on_word(word: &str, field: &'static str) -> Result<bool, EditError> {
    match word {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        other => Err(bad(field, format!("{other:?} is neither on nor off"))),
    }
}

/// The edit a page form asks for, and the form's key (see [`Refusal::form`]).
fn form_edit(
    config: &Config,
    group: &str,
    action: &str,
    form: &PolicyForm,
    now_ms: i64,
) -> Result<(String, Result<PolicyEdit, EditError>), WebError> {
    let group = group.to_string();
    let made = match action {
        "category" => (
            format!("category:{}", form.category),
            on_word(&form.blocked, "blocked").map(|blocked| PolicyEdit::Category {
                group,
                category: form.category.clone(),
                blocked,
            }),
        ),
        "safesearch" => ("safesearch".into(), on_word(&form.on, "on").map(|on| PolicyEdit::SafeSearch { group, on })),
        "youtube" => ("youtube".into(), Ok(PolicyEdit::Youtube { group, mode: form.mode.clone() })),
        "bypass" => ("bypass".into(), on_word(&form.on, "on").map(|on| PolicyEdit::Bypass { group, on })),
        "block-answer" => ("block-answer".into(), Ok(PolicyEdit::BlockAnswer { group, answer: form.answer.clone() })),
        "override-add" => (
            "override-add".into(),
            override_kind(&form.kind).and_then(|kind| {
                let until_ms = expiry(config, &form.until_date, &form.until_time, now_ms)?;
                Ok(PolicyEdit::AddOverride {
                    group,
                    kind,
                    name: form.name.trim().to_string(),
                    reason: form.reason.trim().to_string(),
                    until_ms,
                })
            }),
        ),
        "override-remove" => (
            format!("override-remove:{}:{}", form.kind, form.name),
            override_kind(&form.kind).map(|kind| PolicyEdit::RemoveOverride { group, kind, name: form.name.clone() }),
        ),
        "schedule-add" => (
            "schedule-add".into(),
            Ok(PolicyEdit::AddSchedule {
                group,
                category: form.category.clone(),
                days: form.days(),
                from: form.from.trim().to_string(),
                to: form.to.trim().to_string(),
            }),
        ),
        "schedule-remove" => (
            format!("schedule-remove:{}", form.index),
            form.index
                .parse::<usize>()
                .map_err(|_| bad("index", "choose a schedule to remove"))
                .map(|index| PolicyEdit::RemoveSchedule { group, index }),
        ),
        _ => return Err(WebError::NotFound),
    };
    Ok(made)
}

/// The fields each form shows; a message about any other field is shown
/// at the top of the form.
fn form_fields(key: &str) -> &'static [&'static str] {
    match key.split(':').next().unwrap_or_default() {
        "override-add" => &["name", "kind", "reason", "until_date", "until_time"],
        "schedule-add" => &["category", "days", "from", "to", "reason"],
        _ => &["reason"],
    }
}

/// The editor, or a clear refusal when the policy cannot be changed here.
fn editor(state: &AppState) -> Result<Arc<PolicyEditor>, WebError> {
    state
        .editor()
        .cloned()
        .ok_or_else(|| WebError::BadRequest { field: None, message: state.read_only_note(READ_ONLY_NOTE) })
}

pub async fn change(
    State(state): State<AppState>,
    admin: RequireAdmin,
    Path((group, action)): Path<(String, String)>,
    Form(form): Form<PolicyForm>,
) -> Result<Response, WebError> {
    let config = state.config();
    if !config.groups.contains_key(&group) {
        return Err(WebError::NotFound);
    }
    let editor = editor(&state)?;
    let (key, edit) = form_edit(&config, &group, &action, &form, crate::time::now_ms())?;
    let outcome = match edit {
        Ok(edit) => editor.apply(edit, &admin.user.name, &form.reason).await,
        Err(error) => Err(error),
    };
    match outcome {
        Ok(change) => Ok(Redirect::to(&format!("/policy/{group}?saved={}", change.id)).into_response()),
        Err(error) => {
            let field = error.field.filter(|field| form_fields(&key).contains(field)).unwrap_or("form");
            let refusal = Refusal { form: key, field, message: error.message, input: form };
            show_group(&state, &admin, &group, StatusCode::BAD_REQUEST, Some(refusal), None).await
        }
    }
}

/// An edit as the API takes it: `{"kind": "category", "category": "games",
/// "blocked": false, "reason": "..."}`; the group is the path's.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ApiEdit {
    Category {
        category: String,
        blocked: bool,
    },
    Safesearch {
        on: bool,
    },
    Youtube {
        mode: String,
    },
    Bypass {
        on: bool,
    },
    BlockAnswer {
        answer: String,
    },
    OverrideAdd {
        /// "allow" or "deny".
        list: String,
        name: String,
        /// RFC 3339, e.g. "2026-12-07T16:00:00Z".
        #[serde(default)]
        until: Option<String>,
    },
    OverrideRemove {
        list: String,
        name: String,
    },
    ScheduleAdd {
        category: String,
        days: Vec<String>,
        from: String,
        to: String,
    },
    ScheduleRemove {
        index: usize,
    },
}

#[derive(Debug, Deserialize)]
pub struct ApiChange {
    #[serde(flatten)]
    edit: ApiEdit,
    #[serde(default)]
    reason: String,
}

fn api_edit(group: String, change: &ApiChange, now_ms: i64) -> Result<PolicyEdit, EditError> {
    Ok(match &change.edit {
        ApiEdit::Category { category, blocked } => {
            PolicyEdit::Category { group, category: category.clone(), blocked: *blocked }
        }
        ApiEdit::Safesearch { on } => PolicyEdit::SafeSearch { group, on: *on },
        ApiEdit::Youtube { mode } => PolicyEdit::Youtube { group, mode: mode.clone() },
        ApiEdit::Bypass { on } => PolicyEdit::Bypass { group, on: *on },
        ApiEdit::BlockAnswer { answer } => PolicyEdit::BlockAnswer { group, answer: answer.clone() },
        ApiEdit::OverrideAdd { list, name, until } => {
            let until_ms = match until.as_deref().map(str::trim).filter(|text| !text.is_empty()) {
                None => None,
                Some(text) => {
                    let ms = timed::parse_instant(text).ok_or_else(|| {
                        bad("until", format!("{text:?} is not an RFC 3339 time (2026-12-07T16:00:00Z)"))
                    })?;
                    if ms <= now_ms {
                        return Err(bad("until", "that time has already passed"));
                    }
                    Some(ms)
                }
            };
            PolicyEdit::AddOverride {
                group,
                kind: override_kind(list).map_err(|error| bad("list", error.message))?,
                name: name.trim().to_string(),
                reason: change.reason.trim().to_string(),
                until_ms,
            }
        }
        ApiEdit::OverrideRemove { list, name } => PolicyEdit::RemoveOverride {
            group,
            kind: override_kind(list).map_err(|error| bad("list", error.message))?,
            name: name.clone(),
        },
        ApiEdit::ScheduleAdd { category, days, from, to } => PolicyEdit::AddSchedule {
            group,
            category: category.clone(),
            days: days.clone(),
            from: from.clone(),
            to: to.clone(),
        },
        ApiEdit::ScheduleRemove { index } => PolicyEdit::RemoveSchedule { group, index: *index },
    })
}

pub async fn api_change(
    State(state): State<AppState>,
    admin: RequireAdmin,
    Path(group): Path<String>,
    Json(body): Json<ApiChange>,
) -> Result<Response, WebError> {
    if !state.config().groups.contains_key(&group) {
        return Err(WebError::NotFound);
    }
    let editor = editor(&state)?;
    let edit = api_edit(group, &body, crate::time::now_ms())
        .map_err(|error| WebError::BadRequest { field: error.field, message: error.message })?;
    match editor.apply(edit, &admin.user.name, &body.reason).await {
        Ok(change) => Ok((StatusCode::OK, axum::Json(change)).into_response()),
        Err(error) => Err(WebError::BadRequest { field: error.field, message: error.message }),
    }
}
