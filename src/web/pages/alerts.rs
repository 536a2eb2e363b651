//! Alerts (issue 14): the DSL's inbox and what a governor may see of it.
//!
//! - `GET /alerts`: for the DSL and admins the inbox (tabs open,
//!   acknowledged, resolved; filters; 50 a page, newest first); for a
//!   governor only the counts of an academic year (by month, category and
//!   severity, and the mean time to acknowledge), built from
//!   [`AlertStore::counts`] alone, so no device, owner, client or name can
//!   reach the page.
//! - `GET /alerts/{id}`: one alert, the device's lookups an hour either
//!   side (a link to the explorer and the newest 20 inline), the DSL's
//!   record, and the forms: acknowledge, resolve (a note required), note,
//!   reopen (`POST /alerts/{id}/{action}`).
//! - `GET /alerts/rules`: the rules, each with its form (`POST
//!   /alerts/rules/{id}`), and a form adding a repeated rule for a category
//!   (`POST /alerts/rules`); saved through the [`PolicyEditor`] like a
//!   policy change (`[alerts.rules.<id>]`, change log kind `alert-rule`).
//! - `GET /alerts/delivery`: the channels as configured (never a password or
//!   secret), the outbox, "send a test alert" (`POST
//!   /alerts/delivery/test/{channel}`) and "try again" (`POST
//!   /alerts/delivery/retry/{id}`).
//! - JSON: `GET /api/alerts`, `GET /api/alerts/summary`, `GET
//!   /api/alerts/{id}`, `POST /api/alerts/{id}/{action}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::explorer::{self, Row};
use super::{Form, Json, Layout, checked, render_with, text};
use crate::config::Config;
use crate::config::alerts::{DigestTime, Rule, Severity, SmtpSecurity, Trigger};
use crate::config::edit::{AlertRuleEdit, EditError, PolicyEdit};
use crate::policy_editor::PolicyEditor;
use crate::store::Role;
use crate::store::alerts::{Alert, AlertCount, AlertFilter, AlertNote, AlertState, Channel, OutboxMessage};
use crate::store::search::Search;
use crate::web::session::CurrentUser;
use crate::web::{AppState, RequireAnyRole, RequireDsl, WebError};

/// Alerts on one page of the inbox.
pub const PER_PAGE: usize = 50;
/// Lookups shown inline on an alert's page.
const INLINE_LOOKUPS: usize = 20;
/// The longest note kept.
const NOTE_MAX: usize = 4000;
const HOUR_MS: i64 = 3_600_000;

const LOG_OFF_NOTE: &str = "The query log is off ([log] enabled = false), and alerts are raised from it: no new \
                            alerts can be raised until it is turned on.";
const READ_ONLY_NOTE: &str = "Hedgerow was not started from a config file it can write, so the rules are shown \
                              read-only.";

/// Whether `user` sees the inbox (the DSL and admins) rather than the counts.
fn sees_alerts(user: &CurrentUser) -> bool {
    user.user.has(Role::Dsl) || user.user.has(Role::Admin)
}

/// What the pages say above everything when alerts cannot be raised.
fn warning(config: &Config) -> String {
    if !config.log.enabled {
        LOG_OFF_NOTE.to_string()
    } else if !config.alerts.enabled {
        "Alerts are off ([alerts] enabled = false): no new alerts are raised.".to_string()
    } else {
        String::new()
    }
}

// ---------------------------------------------------------------- the inbox

/// The inbox's tab and filters, as the query string carries them.
#[derive(Debug, Clone, Deserialize, Default, Serialize)]
#[serde(default)]
pub struct InboxQuery {
    /// "open" (the default), "acknowledged" or "resolved".
    pub state: String,
    pub severity: String,
    pub category: String,
    pub group: String,
    /// A device name, an address or a guest's pseudonym.
    pub device: String,
    /// Days in the school's time zone, both included.
    pub from: String,
    pub to: String,
    /// From 1.
    pub page: String,
    /// A governor's academic year (its first calendar year, "2025").
    pub year: String,
}

#[derive(Debug, Default)]
pub struct InboxErrors {
    pub state: String,
    pub severity: String,
    pub group: String,
    pub from: String,
    pub to: String,
}

impl InboxErrors {
    pub fn any(&self) -> bool {
        [&self.state, &self.severity, &self.group, &self.from, &self.to].iter().any(|message| !message.is_empty())
    }

    fn first(&self) -> WebError {
        super::first_error(&[
            ("state", &self.state),
            ("severity", &self.severity),
            ("group", &self.group),
            ("from", &self.from),
            ("to", &self.to),
        ])
    }
}

impl InboxQuery {
    pub fn state(&self) -> &str {
        match self.state.trim() {
            "" => "open",
            other => other,
        }
    }

    fn page(&self) -> usize {
        self.page.trim().parse::<usize>().ok().filter(|page| *page >= 1).unwrap_or(1)
    }

    /// The filter this form asks for (a page of [`PER_PAGE`]), or the bad values.
    pub fn filter(&self, config: &Config) -> Result<AlertFilter, InboxErrors> {
        let mut errors = InboxErrors::default();
        let state = AlertState::parse(self.state());
        if state.is_none() {
            errors.state = format!("{:?} is not a tab; choose open, acknowledged or resolved", self.state());
        }
        let severity = text(&self.severity).map(|severity| severity.to_ascii_lowercase());
        if let Some(severity) = &severity
            && Severity::parse(severity).is_none()
        {
            errors.severity = format!("{severity:?} is not a severity; choose high, medium or low");
        }
        let group = text(&self.group);
        if let Some(group) = &group
            && !config.groups.contains_key(group)
        {
            errors.group = format!("there is no group {group:?}; choose one of the list");
        }
        let mut from_ms = None;
        let mut to_ms = None;
        if let Some(from) = text(&self.from) {
            match explorer::school_time(config, &from, false) {
                Ok(ms) => from_ms = Some(ms),
                Err(message) => errors.from = message,
            }
        }
        if let Some(to) = text(&self.to) {
            match explorer::school_time(config, &to, true) {
                Ok(ms) => to_ms = Some(ms),
                Err(message) => errors.to = message,
            }
        }
        if let (Some(from), Some(to)) = (from_ms, to_ms)
            && to <= from
        {
            errors.to = "the end is before the start".to_string();
        }
        if errors.any() {
            return Err(errors);
        }
        Ok(AlertFilter {
            state,
            severity,
            category: text(&self.category).map(|category| category.to_ascii_lowercase()),
            group,
            device: text(&self.device),
            from_ms,
            to_ms,
            limit: PER_PAGE,
            offset: (self.page() - 1) * PER_PAGE,
        })
    }

    /// The filters as a query string (no tab, no page).
    fn query(&self) -> String {
        super::query_string(&[
            ("severity", &self.severity),
            ("category", &self.category),
            ("group", &self.group),
            ("device", &self.device),
            ("from", &self.from),
            ("to", &self.to),
        ])
    }
}

/// Who an alert is about, for a row: the device and its owner, else the
/// client as the log names it (an address, or a guest's pseudonym).
fn who(alert: &Alert) -> (String, String) {
    if let Some(group) = alert.client.strip_prefix("group:") {
        return (format!("the {group} group"), String::new());
    }
    match (alert.device.as_str(), alert.owner.as_str()) {
        ("", _) => (alert.client.clone(), String::new()),
        (device, "") => (device.to_string(), alert.client.clone()),
        (device, owner) => (format!("{device} ({owner})"), alert.client.clone()),
    }
}

/// One alert as a row of the inbox.
pub struct AlertRow {
    pub id: i64,
    pub when: String,
    pub severity: String,
    pub category: String,
    pub who: String,
    pub client: String,
    pub group: String,
    pub attempts: i64,
    pub state: String,
}

impl AlertRow {
    fn new(state: &AppState, alert: &Alert) -> AlertRow {
        let (who, client) = who(alert);
        AlertRow {
            id: alert.id,
            when: super::when(state, alert.first_ms),
            severity: alert.severity.clone(),
            category: if alert.category.is_empty() { alert.rule.clone() } else { alert.category.clone() },
            who,
            client,
            group: alert.group.clone(),
            attempts: alert.attempts,
            state: alert.state.as_str().to_string(),
        }
    }
}

struct Tab {
    state: &'static str,
    label: &'static str,
    count: i64,
    current: bool,
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct InboxPage {
    layout: Layout,
    warning: String,
    form: InboxQuery,
    tab: String,
    tabs: Vec<Tab>,
    severities: [&'static str; 3],
    groups: Vec<String>,
    errors: InboxErrors,
    rows: Vec<AlertRow>,
    total: i64,
    page: usize,
    pages: usize,
    /// The filters' query string with `&amp;` between pairs (safe in an attribute).
    query_attr: String,
    timezone: String,
}

pub async fn page(
    State(state): State<AppState>,
    reader: RequireAnyRole,
    Query(form): Query<InboxQuery>,
) -> Result<Response, WebError> {
    if !sees_alerts(&reader) {
        return counts_page(state, reader, form).await;
    }
    let config = state.config();
    let filter = form.filter(&config);
    let (rows, total, tabs, errors, status) = match filter {
        Ok(filter) => {
            let (alerts, total, tabs) = state
                .blocking(move |state| -> Result<_, WebError> {
                    let store = state.alerts();
                    let alerts = store.search(&filter)?;
                    let total = store.count(&filter)?;
                    let mut counts = Vec::new();
                    for tab in [AlertState::Open, AlertState::Acknowledged, AlertState::Resolved] {
                        let each = AlertFilter { state: Some(tab), limit: 0, offset: 0, ..filter.clone() };
                        counts.push(store.count(&each)?);
                    }
                    Ok((alerts, total, counts))
                })
                .await??;
            let rows = alerts.iter().map(|alert| AlertRow::new(&state, alert)).collect();
            (rows, total, tabs, InboxErrors::default(), StatusCode::OK)
        }
        Err(errors) => (Vec::new(), 0, vec![0, 0, 0], errors, StatusCode::BAD_REQUEST),
    };
    let tab = form.state().to_string();
    let tabs = [("open", "Open"), ("acknowledged", "Acknowledged"), ("resolved", "Resolved")]
        .into_iter()
        .zip(tabs)
        .map(|((state, label), count)| Tab { state, label, count, current: tab == state })
        .collect();
    let page = InboxPage {
        layout: Layout::for_user("Alerts", &reader, "/alerts"),
        warning: warning(&config),
        tab,
        tabs,
        severities: ["high", "medium", "low"],
        groups: config.groups.keys().cloned().collect(),
        errors,
        rows,
        total,
        page: form.page(),
        pages: (total.max(0) as usize).div_ceil(PER_PAGE).max(1),
        query_attr: form.query().replace('&', "&amp;"),
        form,
        timezone: config.timezone_name.clone(),
    };
    Ok(render_with(status, &page))
}

// ---------------------------------------------------------------- the governors' counts

/// The academic year starting in September of `year`: [1 Sep, 1 Sep next
/// year) in the school's time zone, as UTC milliseconds.
pub(super) fn academic_year(config: &Config, year: i16) -> (i64, i64) {
    let start = |year: i16| {
        jiff::civil::date(year, 9, 1)
            .to_datetime(jiff::civil::Time::midnight())
            .to_zoned(config.timezone.clone())
            .map(|zoned| zoned.timestamp().as_millisecond())
            .unwrap_or(0)
    };
    (start(year), start(year + 1))
}

/// The first calendar year of the academic year `now_ms` is in.
pub(super) fn current_year(config: &Config, now_ms: i64) -> i16 {
    let now = jiff::Timestamp::from_millisecond(now_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let local = now.to_zoned(config.timezone.clone());
    if local.month() >= 9 { local.year() } else { local.year() - 1 }
}

/// One line of the governors' figures.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct CountLine {
    pub label: String,
    pub raised: i64,
    pub acknowledged: i64,
    pub resolved: i64,
    /// Mean milliseconds from alert to acknowledgement (acknowledged ones).
    pub mean_ms_to_acknowledge: Option<i64>,
    /// The same in words ("1 h 5 min", "-").
    pub mean_to_acknowledge: String,
    /// Acknowledged ms summed, for the mean.
    #[serde(skip)]
    acknowledged_ms: i128,
}

impl CountLine {
    fn named(label: String) -> CountLine {
        CountLine { label, ..CountLine::default() }
    }

    fn add(&mut self, count: &AlertCount) {
        self.raised += count.raised;
        self.acknowledged += count.acknowledged;
        self.resolved += count.resolved;
        if let Some(mean) = count.mean_ms_to_acknowledge {
            self.acknowledged_ms += i128::from(mean) * i128::from(count.acknowledged);
        }
    }

    fn finish(mut self) -> CountLine {
        self.mean_ms_to_acknowledge =
            (self.acknowledged > 0).then(|| (self.acknowledged_ms / i128::from(self.acknowledged)) as i64);
        self.mean_to_acknowledge = self.mean_ms_to_acknowledge.map_or_else(|| "-".to_string(), duration_words);
        self
    }
}

/// "45 s", "12 min", "2 h 5 min", "3 days 4 h".
pub(super) fn duration_words(ms: i64) -> String {
    let minutes = ms / 60_000;
    match minutes {
        _ if ms < 60_000 => format!("{} s", ms / 1000),
        0..60 => format!("{minutes} min"),
        60..1440 => format!("{} h {} min", minutes / 60, minutes % 60),
        _ => format!("{} days {} h", minutes / 1440, (minutes % 1440) / 60),
    }
}

/// The governors' figures for one academic year, from the counts alone.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct YearCounts {
    /// "2025-26".
    pub academic_year: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub total: CountLine,
    /// Every month of the year, September first.
    pub months: Vec<CountLine>,
    pub categories: Vec<CountLine>,
    pub severities: Vec<CountLine>,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

pub(super) fn year_counts(year: i16, from_ms: i64, to_ms: i64, counts: &[AlertCount]) -> YearCounts {
    let mut months: Vec<(String, CountLine)> = (0..12)
        .map(|step| {
            let (calendar, month) = if step < 4 { (year, step + 9) } else { (year + 1, step - 3) };
            (
                format!("{calendar:04}-{month:02}"),
                CountLine::named(format!("{} {calendar}", MONTHS[month as usize - 1])),
            )
        })
        .collect();
    let mut categories: BTreeMap<String, CountLine> = BTreeMap::new();
    let mut severities: Vec<CountLine> =
        Severity::ALL.iter().map(|severity| CountLine::named(severity.as_str().to_string())).collect();
    let mut total = CountLine::named("All alerts".to_string());
    for count in counts {
        total.add(count);
        if let Some((_, line)) = months.iter_mut().find(|(key, _)| *key == count.month) {
            line.add(count);
        }
        let category = if count.category.is_empty() { "bypass or rise" } else { count.category.as_str() };
        categories.entry(category.to_string()).or_insert_with(|| CountLine::named(category.to_string())).add(count);
        if let Some(line) = severities.iter_mut().find(|line| line.label == count.severity) {
            line.add(count);
        }
    }
    YearCounts {
        academic_year: format!("{year}-{:02}", (i32::from(year) + 1) % 100),
        from_ms,
        to_ms,
        total: total.finish(),
        months: months.into_iter().map(|(_, line)| line.finish()).collect(),
        categories: categories.into_values().map(CountLine::finish).collect(),
        severities: severities.into_iter().map(CountLine::finish).collect(),
    }
}

/// The year asked for (a bad or missing one is the current year), its figures.
async fn read_year(state: &AppState, form: &InboxQuery) -> Result<(i16, Vec<i16>, YearCounts), WebError> {
    let config = state.config();
    let current = current_year(&config, crate::time::now_ms());
    let year = form.year.trim().parse::<i16>().ok().filter(|year| (2000..=current).contains(year)).unwrap_or(current);
    let (from_ms, to_ms) = academic_year(&config, year);
    let counts = state.blocking(move |state| state.alerts().counts(from_ms, to_ms)).await??;
    let years = (0..5).map(|back| current - back).collect();
    Ok((year, years, year_counts(year, from_ms, to_ms, &counts)))
}

#[derive(Template)]
#[template(path = "alerts_counts.html")]
struct CountsPage {
    layout: Layout,
    year: i16,
    years: Vec<(i16, String)>,
    counts: YearCounts,
}

async fn counts_page(state: AppState, reader: RequireAnyRole, form: InboxQuery) -> Result<Response, WebError> {
    let (year, years, counts) = read_year(&state, &form).await?;
    let page = CountsPage {
        layout: Layout::for_user("Alerts", &reader, "/alerts"),
        year,
        years: years.into_iter().map(|year| (year, format!("{year}-{:02}", (i32::from(year) + 1) % 100))).collect(),
        counts,
    };
    Ok(render_with(StatusCode::OK, &page))
}

/// `GET /api/alerts`: the inbox's search as JSON for the DSL and admins
/// (`{ "total", "page", "per_page", "alerts": [...] }`); a governor gets the
/// year's counts (`?year=2025`) and nothing else.
pub async fn api_list(
    State(state): State<AppState>,
    reader: RequireAnyRole,
    Query(form): Query<InboxQuery>,
) -> Result<Response, WebError> {
    if !sees_alerts(&reader) {
        let (_, _, counts) = read_year(&state, &form).await?;
        return Ok(axum::Json(counts).into_response());
    }
    let filter = form.filter(&state.config()).map_err(|errors| errors.first())?;
    let page = form.page();
    let (alerts, total) = state
        .blocking(move |state| -> Result<_, WebError> {
            Ok((state.alerts().search(&filter)?, state.alerts().count(&filter)?))
        })
        .await??;
    Ok(axum::Json(serde_json::json!({ "total": total, "page": page, "per_page": PER_PAGE, "alerts": alerts }))
        .into_response())
}

/// `GET /api/alerts/summary`: how many alerts are in each state (any role:
/// no device or name), and the outbox's counts for the DSL and admins.
pub async fn api_summary(
    State(state): State<AppState>,
    reader: RequireAnyRole,
) -> Result<axum::Json<serde_json::Value>, WebError> {
    let detail = sees_alerts(&reader);
    let summary = state
        .blocking(move |state| -> Result<_, WebError> {
            let store = state.alerts();
            let count = |alert_state, severity: Option<&str>| {
                store.count(&AlertFilter {
                    state: Some(alert_state),
                    severity: severity.map(str::to_string),
                    ..AlertFilter::default()
                })
            };
            let mut summary = serde_json::json!({
                "open": count(AlertState::Open, None)?,
                "open_high": count(AlertState::Open, Some("high"))?,
                "acknowledged": count(AlertState::Acknowledged, None)?,
                "resolved": count(AlertState::Resolved, None)?,
            });
            if detail {
                summary["outbox"] = serde_json::to_value(store.outbox_counts()?).unwrap_or_default();
            }
            Ok(summary)
        })
        .await??;
    Ok(axum::Json(summary))
}

// ---------------------------------------------------------------- one alert

/// What the alert page shows.
struct AlertView {
    alert: Alert,
    who: String,
    first: String,
    last: String,
    rule: String,
    why: String,
    /// The explorer for the device and an hour either side.
    log_href: String,
    acknowledged: String,
    resolved: String,
    /// The device and its owner, a group (a rise), or "" when the device
    /// table does not name it.
    device: String,
}

struct NoteView {
    when: String,
    user: String,
    action: String,
    text: String,
}

/// A refused action: which form, and the message beside its note.
#[derive(Default)]
struct ActionError {
    action: String,
    message: String,
    note: String,
}

#[derive(Template)]
#[template(path = "alert.html")]
struct AlertPage {
    layout: Layout,
    warning: String,
    view: AlertView,
    notes: Vec<NoteView>,
    lookups: Vec<Row>,
    lookups_note: String,
    error: ActionError,
    flash: String,
}

/// A moment as the explorer's custom window takes it, school time.
fn explorer_time(config: &Config, ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_zoned(config.timezone.clone()).strftime("%Y-%m-%dT%H:%M:%S").to_string())
        .unwrap_or_default()
}

/// The explorer's search for `alert`'s device an hour either side.
fn window(config: &Config, alert: &Alert) -> (String, Search) {
    let (from, to) = (alert.first_ms - HOUR_MS, alert.last_ms + HOUR_MS + 1000);
    let (from_text, to_text) = (explorer_time(config, from), explorer_time(config, to));
    let mut search = Search { since_ms: Some(from), until_ms: Some(to), limit: INLINE_LOOKUPS, ..Search::default() };
    let filter = match alert.client.strip_prefix("group:") {
        Some(group) => {
            search.group = Some(group.to_string());
            format!("group={}", super::encode(group))
        }
        None => {
            search.client = Some(alert.client.clone());
            format!("client={}", super::encode(&alert.client))
        }
    };
    let href = format!("/log?{filter}&window=custom&from={}&to={}", super::encode(&from_text), super::encode(&to_text));
    (href, search)
}

fn rule_of<'c>(config: &'c Config, id: &str) -> Option<&'c Rule> {
    config.alerts.rules.iter().find(|rule| rule.id == id)
}

async fn show_alert(
    state: &AppState,
    current: &CurrentUser,
    id: i64,
    status: StatusCode,
    error: ActionError,
    flash: String,
) -> Result<Response, WebError> {
    let config = state.config();
    let (alert, notes) = state
        .blocking(move |state| -> Result<_, WebError> {
            let alert = state.alerts().get(id)?.ok_or(WebError::NotFound)?;
            Ok((alert, state.alerts().notes(id)?))
        })
        .await??;
    let (log_href, search) = window(&config, &alert);
    let db = config.log.database.clone();
    let (lookups, lookups_note) = if config.log.enabled {
        match state.blocking(move |_| crate::store::search::search(&db, &search)).await? {
            Ok(rows) => (rows.into_iter().map(|row| Row::new(&config, row)).collect(), String::new()),
            Err(error) => {
                tracing::warn!("an alert's lookups could not be read: {error}");
                (Vec::new(), "The lookups could not be read just now; follow the link to the query log.".into())
            }
        }
    } else {
        (Vec::new(), LOG_OFF_NOTE.to_string())
    };
    let (name, client) = who(&alert);
    let rule = rule_of(&config, &alert.rule);
    let view = AlertView {
        who: if client.is_empty() || name == client { name } else { format!("{name}, {client}") },
        first: super::when(state, alert.first_ms),
        last: super::when(state, alert.last_ms),
        rule: format!("{}: {}", alert.rule, alert.summary),
        why: rule.map(|rule| rule.why.clone()).unwrap_or_default(),
        log_href,
        device: match (alert.client.strip_prefix("group:"), alert.device.as_str(), alert.owner.as_str()) {
            (Some(group), _, _) => format!("the whole {group} group"),
            (None, "", _) => String::new(),
            (None, device, "") => device.to_string(),
            (None, device, owner) => format!("{device}, {owner}"),
        },
        acknowledged: alert.acknowledged_ms.map(|ms| super::when(state, ms)).unwrap_or_default(),
        resolved: alert.resolved_ms.map(|ms| super::when(state, ms)).unwrap_or_default(),
        alert,
    };
    let page = AlertPage {
        layout: Layout::for_user(&format!("Alert {id}"), current, "/alerts"),
        warning: if config.log.enabled { String::new() } else { LOG_OFF_NOTE.to_string() },
        view,
        notes: notes.into_iter().map(|note| note_view(state, note)).collect(),
        lookups,
        lookups_note,
        error,
        flash,
    };
    Ok(render_with(status, &page))
}

fn note_view(state: &AppState, note: AlertNote) -> NoteView {
    NoteView {
        when: super::when(state, note.time_ms),
        user: note.user,
        action: match note.action.as_str() {
            "acknowledged" => "Acknowledged",
            "resolved" => "Resolved",
            "reopened" => "Reopened",
            _ => "Note",
        }
        .to_string(),
        text: note.text,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DoneQuery {
    done: String,
}

pub async fn detail(
    State(state): State<AppState>,
    reader: RequireDsl,
    Path(id): Path<i64>,
    Query(done): Query<DoneQuery>,
) -> Result<Response, WebError> {
    let flash = match done.done.as_str() {
        "acknowledge" => "Acknowledged: your name and the time are on the record.",
        "resolve" => "Resolved: your note is on the record.",
        "note" => "Note added.",
        "reopen" => "Reopened.",
        _ => "",
    };
    show_alert(&state, &reader, id, StatusCode::OK, ActionError::default(), flash.to_string()).await
}

/// An action's note, as a form or the API sends it.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct NoteForm {
    pub note: String,
}

/// Does `action` to alert `id` as `user`: the alert after it.
fn act(state: &AppState, id: i64, action: &str, user: &str, note: &str) -> Result<Alert, WebError> {
    let store = state.alerts();
    let alert = store.get(id)?.ok_or(WebError::NotFound)?;
    let note = note.trim();
    if note.chars().count() > NOTE_MAX {
        return Err(WebError::bad("note", format!("a note is at most {NOTE_MAX} characters")));
    }
    let now = crate::time::now_ms();
    match action {
        "acknowledge" => {
            if alert.state != AlertState::Open {
                return Err(WebError::bad("note", format!("this alert is already {}", alert.state.as_str())));
            }
            store.set_state(id, AlertState::Acknowledged, user, note, now)?;
        }
        "resolve" => {
            if alert.state == AlertState::Resolved {
                return Err(WebError::bad("note", "this alert is already resolved"));
            }
            if note.is_empty() {
                return Err(WebError::bad(
                    "note",
                    "say what was done (who was spoken to, what was decided): the note is the DSL's record",
                ));
            }
            store.set_state(id, AlertState::Resolved, user, note, now)?;
        }
        "note" => {
            if note.is_empty() {
                return Err(WebError::bad("note", "write the note first"));
            }
            store.add_note(id, user, note, now)?;
        }
        "reopen" => {
            if alert.state == AlertState::Open {
                return Err(WebError::bad("note", "this alert is already open"));
            }
            store.set_state(id, AlertState::Open, user, note, now)?;
        }
        _ => return Err(WebError::NotFound),
    }
    Ok(store.get(id)?.ok_or(WebError::NotFound)?)
}

pub async fn action(
    State(state): State<AppState>,
    dsl: RequireDsl,
    Path((id, action)): Path<(i64, String)>,
    Form(form): Form<NoteForm>,
) -> Result<Response, WebError> {
    let user = dsl.user.name.clone();
    let (what, note) = (action.clone(), form.note.clone());
    match state.blocking(move |state| act(state, id, &what, &user, &note)).await? {
        Ok(_) => Ok(Redirect::to(&format!("/alerts/{id}?done={action}")).into_response()),
        Err(WebError::BadRequest { message, .. }) => {
            let error = ActionError { action, message, note: form.note };
            show_alert(&state, &dsl, id, StatusCode::BAD_REQUEST, error, String::new()).await
        }
        Err(error) => Err(error),
    }
}

/// `GET /api/alerts/{id}`: the alert and its record.
pub async fn api_detail(
    State(state): State<AppState>,
    _reader: RequireDsl,
    Path(id): Path<i64>,
) -> Result<axum::Json<serde_json::Value>, WebError> {
    let config = state.config();
    let (alert, notes) = state
        .blocking(move |state| -> Result<_, WebError> {
            let alert = state.alerts().get(id)?.ok_or(WebError::NotFound)?;
            Ok((alert, state.alerts().notes(id)?))
        })
        .await??;
    let (log_href, _) = window(&config, &alert);
    Ok(axum::Json(serde_json::json!({ "alert": alert, "notes": notes, "lookups": log_href })))
}

/// `POST /api/alerts/{id}/{action}`: body `{ "note": "..." }`.
pub async fn api_action(
    State(state): State<AppState>,
    dsl: RequireDsl,
    Path((id, action)): Path<(i64, String)>,
    Json(body): Json<NoteForm>,
) -> Result<axum::Json<Alert>, WebError> {
    let user = dsl.user.name.clone();
    Ok(axum::Json(state.blocking(move |state| act(state, id, &action, &user, &body.note)).await??))
}

// ---------------------------------------------------------------- rules

/// Every field of a rule's form (each kind uses some).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct RuleForm {
    pub enabled: String,
    pub severity: String,
    pub category: String,
    pub categories: String,
    pub count: String,
    pub minutes: String,
    pub factor: String,
    pub minimum: String,
    pub reason: String,
}

struct RuleView {
    id: String,
    kind: &'static str,
    words: String,
    why: String,
    severity: String,
    enabled: bool,
    /// Written in the config file (rather than the shipped default).
    written: bool,
    category: String,
    categories: String,
    count: String,
    minutes: String,
    factor: String,
    minimum: String,
    /// The form's message (if refused), its field, and the reason typed.
    field: &'static str,
    message: String,
    reason: String,
}

impl RuleView {
    fn new(rule: &Rule, written: bool) -> RuleView {
        let mut view = RuleView {
            id: rule.id.clone(),
            kind: rule.trigger.kind(),
            words: rule.describe(),
            why: rule.why.clone(),
            severity: rule.severity.as_str().to_string(),
            enabled: rule.enabled,
            written,
            category: String::new(),
            categories: String::new(),
            count: String::new(),
            minutes: String::new(),
            factor: String::new(),
            minimum: String::new(),
            field: "",
            message: String::new(),
            reason: String::new(),
        };
        match &rule.trigger {
            Trigger::AnyAttempt { categories } => view.categories = categories.join(", "),
            Trigger::Repeated { category, count, window_ms } => {
                view.category = category.clone();
                view.count = count.to_string();
                view.minutes = (window_ms / 60_000).to_string();
            }
            Trigger::Bypass => {}
            Trigger::Rise { factor, minimum } => {
                view.factor = factor.to_string();
                view.minimum = minimum.to_string();
            }
        }
        view
    }

    /// The form as typed, shown again with its message.
    fn refused(&mut self, form: &RuleForm, field: &'static str, message: String) {
        self.enabled = checked(&form.enabled);
        self.severity = form.severity.clone();
        self.category = form.category.clone();
        self.categories = form.categories.clone();
        self.count = form.count.clone();
        self.minutes = form.minutes.clone();
        self.factor = form.factor.clone();
        self.minimum = form.minimum.clone();
        self.reason = form.reason.clone();
        self.field = field;
        self.message = message;
    }
}

/// The "add a repeated rule" form as typed, and its message.
#[derive(Default)]
struct NewRuleView {
    category: String,
    count: String,
    minutes: String,
    severity: String,
    reason: String,
    field: &'static str,
    message: String,
}

#[derive(Template)]
#[template(path = "alert_rules.html")]
struct RulesPage {
    layout: Layout,
    warning: String,
    editable: bool,
    note: String,
    flash: String,
    rules: Vec<RuleView>,
    added: NewRuleView,
    severities: [&'static str; 3],
    categories: Vec<(&'static str, &'static str)>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SavedQuery {
    saved: String,
}

fn rules_page(
    state: &AppState,
    current: &CurrentUser,
    refused: Option<(&str, &RuleForm, EditError)>,
    added: NewRuleView,
    flash: String,
) -> RulesPage {
    let config = state.config();
    let mut rules: Vec<RuleView> = config
        .alerts
        .rules
        .iter()
        .map(|rule| RuleView::new(rule, config.alerts.written_rules.contains(&rule.id)))
        .collect();
    if let Some((id, form, error)) = refused
        && let Some(view) = rules.iter_mut().find(|view| view.id == id)
    {
        let known =
            ["enabled", "severity", "category", "categories", "count", "minutes", "factor", "minimum", "reason"];
        let field = error.field.filter(|field| known.contains(field)).unwrap_or("form");
        view.refused(form, field, error.message);
    }
    let mut categories: Vec<(&'static str, &'static str)> =
        crate::policy::category::all().map(|category| (category.id, category.name)).collect();
    categories.sort();
    RulesPage {
        layout: Layout::for_user("Alert rules", current, "/alerts"),
        warning: warning(&config),
        editable: state.editor().is_some(),
        note: state.read_only_note(READ_ONLY_NOTE),
        flash,
        rules,
        added,
        severities: ["high", "medium", "low"],
        categories,
    }
}

pub async fn rules(
    State(state): State<AppState>,
    reader: RequireDsl,
    Query(saved): Query<SavedQuery>,
) -> Result<Response, WebError> {
    let flash = match text(&saved.saved) {
        Some(id) => format!("Saved: alert rule {id} (in force now; the change log has it)."),
        None => String::new(),
    };
    Ok(render_with(StatusCode::OK, &rules_page(&state, &reader, None, NewRuleView::default(), flash)))
}

fn editor(state: &AppState) -> Result<Arc<PolicyEditor>, WebError> {
    state
        .editor()
        .cloned()
        .ok_or_else(|| WebError::BadRequest { field: None, message: state.read_only_note(READ_ONLY_NOTE) })
}

fn some(text: &str) -> Option<String> {
    Some(text.trim().to_string())
}

/// The edit a rule's form asks for.
fn rule_edit(rule: &Rule, form: &RuleForm) -> AlertRuleEdit {
    let mut edit = AlertRuleEdit {
        id: rule.id.clone(),
        enabled: checked(&form.enabled),
        severity: form.severity.trim().to_string(),
        ..AlertRuleEdit::default()
    };
    match rule.trigger {
        Trigger::AnyAttempt { .. } => {
            edit.categories = Some(
                form.categories
                    .split([',', ' ', '\n'])
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(String::from)
                    .collect(),
            );
        }
        Trigger::Repeated { .. } => {
            edit.count = some(&form.count);
            edit.minutes = some(&form.minutes);
        }
        Trigger::Bypass => {}
        Trigger::Rise { .. } => {
            edit.factor = some(&form.factor);
            edit.minimum = some(&form.minimum);
        }
    }
    edit
}

pub async fn change_rule(
    State(state): State<AppState>,
    dsl: RequireDsl,
    Path(id): Path<String>,
    Form(form): Form<RuleForm>,
) -> Result<Response, WebError> {
    let config = state.config();
    let Some(rule) = rule_of(&config, &id) else { return Err(WebError::NotFound) };
    let editor = editor(&state)?;
    let edit = rule_edit(rule, &form);
    match editor.apply(PolicyEdit::AlertRule(edit), &dsl.user.name, &form.reason).await {
        Ok(_) => Ok(Redirect::to(&format!("/alerts/rules?saved={id}#rule-{id}")).into_response()),
        Err(error) => {
            let page = rules_page(&state, &dsl, Some((&id, &form, error)), NewRuleView::default(), String::new());
            Ok(render_with(StatusCode::BAD_REQUEST, &page))
        }
    }
}

/// `POST /api/alerts/rules/{id}`: [`change_rule`] for scripts. The body is
/// the form's fields as JSON (`{"enabled": "on", "severity": "high",
/// "count": "8", "minutes": "20", "reason": "..."}`); the answer is the
/// change recorded, or 400 naming the field.
pub async fn api_change_rule(
    State(state): State<AppState>,
    dsl: RequireDsl,
    Path(id): Path<String>,
    Json(body): Json<RuleForm>,
) -> Result<Response, WebError> {
    let config = state.config();
    let Some(rule) = rule_of(&config, &id) else { return Err(WebError::NotFound) };
    let editor = editor(&state)?;
    match editor.apply(PolicyEdit::AlertRule(rule_edit(rule, &body)), &dsl.user.name, &body.reason).await {
        Ok(change) => Ok((StatusCode::OK, axum::Json(change)).into_response()),
        Err(error) => Err(WebError::BadRequest { field: error.field, message: error.message }),
    }
}

/// `POST /alerts/rules`: a new repeated rule for a category
/// (`repeated-<category>`).
pub async fn add_rule(
    State(state): State<AppState>,
    dsl: RequireDsl,
    Form(form): Form<RuleForm>,
) -> Result<Response, WebError> {
    let editor = editor(&state)?;
    let category = form.category.trim().to_ascii_lowercase();
    let id = format!("repeated-{category}");
    let outcome = if category.is_empty() {
        Err(EditError { field: Some("category"), message: "choose the category to count".to_string() })
    } else {
        let edit = AlertRuleEdit {
            id: id.clone(),
            kind: Some("repeated".to_string()),
            enabled: true,
            severity: form.severity.trim().to_string(),
            category: Some(category.clone()),
            count: some(&form.count),
            minutes: some(&form.minutes),
            ..AlertRuleEdit::default()
        };
        editor.apply(PolicyEdit::AlertRule(edit), &dsl.user.name, &form.reason).await
    };
    match outcome {
        Ok(_) => Ok(Redirect::to(&format!("/alerts/rules?saved={id}#rule-{id}")).into_response()),
        Err(error) => {
            let field = match error.field {
                Some("id" | "category") => "category",
                Some(field @ ("count" | "minutes" | "severity" | "reason")) => field,
                _ => "form",
            };
            let added = NewRuleView {
                category: form.category.clone(),
                count: form.count.clone(),
                minutes: form.minutes.clone(),
                severity: form.severity.clone(),
                reason: form.reason.clone(),
                field,
                message: error.message,
            };
            Ok(render_with(StatusCode::BAD_REQUEST, &rules_page(&state, &dsl, None, added, String::new())))
        }
    }
}

// ---------------------------------------------------------------- delivery

struct EmailView {
    server: String,
    security: &'static str,
    login: String,
    from: String,
    recipients: Vec<(&'static str, String)>,
    daily: String,
    weekly: String,
}

struct MessageView {
    id: i64,
    channel: &'static str,
    kind: String,
    subject: String,
    to: String,
    created: String,
    attempts: i64,
    last_error: String,
    next: String,
    done: String,
    alert_id: Option<i64>,
}

#[derive(Template)]
#[template(path = "alert_delivery.html")]
struct DeliveryPage {
    layout: Layout,
    warning: String,
    flash: String,
    email: Option<EmailView>,
    webhook: Option<String>,
    pending: Vec<MessageView>,
    failed: Vec<MessageView>,
    sent: Vec<MessageView>,
    timezone: String,
}

fn digest_words(time: Option<DigestTime>) -> String {
    match time {
        None => "off".to_string(),
        Some(DigestTime { minute, day }) => {
            let clock = format!("{:02}:{:02}", minute / 60, minute % 60);
            match day {
                None => format!("every day at {clock}"),
                Some(day) => format!("every {day:?} at {clock}"),
            }
        }
    }
}

/// A webhook's address without its query string (which may carry a token).
fn webhook_shown(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?… (the query is not shown)"),
        None => url.to_string(),
    }
}

fn message_view(state: &AppState, message: OutboxMessage) -> MessageView {
    MessageView {
        id: message.id,
        channel: match message.channel {
            Channel::Email => "e-mail",
            Channel::Webhook => "webhook",
        },
        kind: message.kind,
        subject: message.subject,
        to: if message.recipients.is_empty() { "the webhook".to_string() } else { message.recipients.join(", ") },
        created: super::when(state, message.created_ms),
        attempts: message.attempts,
        last_error: message.last_error.unwrap_or_default(),
        next: super::when(state, message.next_ms),
        done: message.done_ms.map(|ms| super::when(state, ms)).unwrap_or_default(),
        alert_id: message.alert_id,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DeliveryQuery {
    queued: String,
    retried: String,
}

pub async fn delivery(
    State(state): State<AppState>,
    reader: RequireDsl,
    Query(query): Query<DeliveryQuery>,
) -> Result<Response, WebError> {
    let config = state.config();
    let outbox = state.blocking(|state| state.alerts().outbox(20)).await??;
    let (mut pending, mut failed, mut sent) = (Vec::new(), Vec::new(), Vec::new());
    for message in outbox {
        match message.state.as_str() {
            "pending" => pending.push(message_view(&state, message)),
            "failed" => failed.push(message_view(&state, message)),
            _ => sent.push(message_view(&state, message)),
        }
    }
    let email = config.alerts.email.as_ref().map(|email| EmailView {
        server: format!("{}:{}", email.server, email.port),
        security: match email.security {
            SmtpSecurity::Starttls => "STARTTLS",
            SmtpSecurity::Tls => "TLS from the start",
            SmtpSecurity::None => "none (plain text)",
        },
        login: match (&email.username, &email.password) {
            (Some(user), Some(_)) => format!("as {user}, with a password (not shown)"),
            (Some(user), None) => format!("as {user}, no password"),
            (None, _) => "no login".to_string(),
        },
        from: email.from.clone(),
        recipients: Severity::ALL
            .iter()
            .map(|severity| {
                let list = email.recipients.get(severity).map(|list| list.join(", ")).unwrap_or_default();
                (severity.as_str(), if list.is_empty() { "nobody".to_string() } else { list })
            })
            .collect(),
        daily: digest_words(email.daily_digest),
        weekly: digest_words(email.weekly_digest),
    });
    let flash = if let Some(channel) = text(&query.queued) {
        let channel = if channel == "email" { "e-mail".to_string() } else { channel };
        format!(
            "A test alert by {channel} is in the outbox below; it shows as sent once it has gone (refresh the page)."
        )
    } else if text(&query.retried).is_some() {
        "The message is queued again and will be tried shortly.".to_string()
    } else {
        String::new()
    };
    let page = DeliveryPage {
        layout: Layout::for_user("Alert delivery", &reader, "/alerts"),
        warning: warning(&config),
        flash,
        email,
        webhook: config.alerts.webhook.as_ref().map(|webhook| webhook_shown(&webhook.url)),
        pending,
        failed,
        sent,
        timezone: config.timezone_name.clone(),
    };
    Ok(render_with(StatusCode::OK, &page))
}

/// `POST /alerts/delivery/test/{channel}`: queues a test message.
pub async fn send_test(
    State(state): State<AppState>,
    dsl: RequireDsl,
    Path(channel): Path<String>,
) -> Result<Response, WebError> {
    let channel = match channel.as_str() {
        "email" => Channel::Email,
        "webhook" => Channel::Webhook,
        _ => return Err(WebError::NotFound),
    };
    let config = state.config();
    let messages =
        crate::alerts::message::test_messages(&config.alerts, channel, &dsl.user.name, crate::time::now_ms());
    if messages.is_empty() {
        return Err(WebError::bad(
            "channel",
            format!("{} is not configured; docs/alerts.md says how", channel.as_str()),
        ));
    }
    state.blocking(move |state| state.alerts().enqueue(&messages, crate::time::now_ms())).await??;
    Ok(Redirect::to(&format!("/alerts/delivery?queued={}", channel.as_str())).into_response())
}

/// `POST /alerts/delivery/retry/{id}`: a given-up message queued again.
pub async fn retry(State(state): State<AppState>, _dsl: RequireDsl, Path(id): Path<i64>) -> Result<Response, WebError> {
    let queued = state.blocking(move |state| state.alerts().retry(id, crate::time::now_ms())).await??;
    if !queued {
        return Err(WebError::bad("id", "that message is not one given up (it may have been sent or queued already)"));
    }
    Ok(Redirect::to(&format!("/alerts/delivery?retried={id}")).into_response())
}
