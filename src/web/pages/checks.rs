//! Checks (issue 15), for the DSL and admins: `GET /checks` the built-in
//! self-test (run now, the latest run's results per group with failures
//! first, the history of runs) and the manual checks log with its form;
//! `POST /checks/selftest` runs the self-test in the server and shows the
//! run; `GET /checks/selftest/{id}` one run; `POST /checks/manual` records a
//! manual check (bad values beside their fields); `GET /checks.csv` both,
//! formula-safe. `/api/checks` (GET), `POST /api/checks/selftest` and
//! `POST /api/checks/manual` are their JSON twins. Governors get no Checks
//! page (403 by extractor): the annual review gives them the summary.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::{Form, Json, Layout, render_with, when};
use crate::store::checks::{ManualCheck, NewManualCheck, Outcome, RunReport, SelftestResult, SelftestRun, Trigger};
use crate::store::csv::format_record;
use crate::web::{AppState, RequireDsl, WebError};

/// Runs in the history; manual checks listed.
const HISTORY: usize = 50;
const MANUAL: usize = 100;
/// The most a manual check's text fields may hold.
const MAX_TEXT: usize = 2_000;

/// The manual check form, as typed.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(default)]
pub struct ManualForm {
    /// `YYYY-MM-DDTHH:MM`, school time (a datetime-local input).
    pub when: String,
    pub who: String,
    pub device: String,
    /// A configured network's name, or "other" with `network_other`.
    pub network: String,
    pub network_other: String,
    pub group: String,
    pub group_other: String,
    pub tested: String,
    /// "as-expected" or "problem".
    pub outcome: String,
    pub result: String,
    pub action: String,
}

/// A form's refusals, by field.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FieldErrors {
    pub when: String,
    pub who: String,
    pub device: String,
    pub network: String,
    pub group: String,
    pub tested: String,
    pub outcome: String,
    pub result: String,
    pub action: String,
}

impl FieldErrors {
    fn fields(&self) -> [(&'static str, &String); 9] {
        [
            ("when", &self.when),
            ("who", &self.who),
            ("device", &self.device),
            ("network", &self.network),
            ("group", &self.group),
            ("tested", &self.tested),
            ("outcome", &self.outcome),
            ("result", &self.result),
            ("action", &self.action),
        ]
    }
    fn any(&self) -> bool {
        self.fields().iter().any(|(_, message)| !message.is_empty())
    }
}

/// A result row as shown.
struct ResultRow {
    check: String,
    name: String,
    expected: String,
    got: String,
    passed: bool,
}

/// A failure of the latest run, with its group.
struct FailureRow {
    group: String,
    check: String,
    name: String,
    expected: String,
    got: String,
}

/// One group's results: failures first.
struct GroupResults {
    group: String,
    checks: usize,
    failures: usize,
    rows: Vec<ResultRow>,
}

/// A run as shown.
struct RunView {
    id: i64,
    when: String,
    trigger: &'static str,
    who: String,
    checks: i64,
    failures: i64,
    error: String,
    passed: bool,
}

struct ManualRow {
    when: String,
    who: String,
    device: String,
    network: String,
    group: String,
    tested: String,
    problem: bool,
    result: String,
    action: String,
    recorded: String,
}

#[derive(Template)]
#[template(path = "checks.html")]
struct ChecksPage {
    layout: Layout,
    notice: String,
    error: String,
    schedule: String,
    can_run: bool,
    latest: Option<RunView>,
    failures: Vec<FailureRow>,
    groups: Vec<GroupResults>,
    history: Vec<RunView>,
    manual: Vec<ManualRow>,
    networks: Vec<String>,
    group_names: Vec<String>,
    form: ManualForm,
    errors: FieldErrors,
    now: String,
}

#[derive(Template)]
#[template(path = "checks_run.html")]
struct RunPage {
    layout: Layout,
    run: RunView,
    groups: Vec<GroupResults>,
}

fn trigger_words(trigger: Trigger) -> &'static str {
    match trigger {
        Trigger::Dashboard => "dashboard",
        Trigger::Cli => "command line",
        Trigger::Schedule => "schedule",
    }
}

fn run_view(state: &AppState, run: &SelftestRun) -> RunView {
    RunView {
        id: run.id,
        when: when(state, run.started_ms),
        trigger: trigger_words(run.trigger),
        who: if run.user.is_empty() { "Hedgerow".into() } else { run.user.clone() },
        checks: run.checks,
        failures: run.failures,
        error: run.error.clone(),
        passed: run.passed(),
    }
}

fn check_words(result: &SelftestResult) -> String {
    match result.kind.as_str() {
        "category" => format!("category {}", result.subject),
        "safesearch" => format!("SafeSearch {}", result.subject),
        _ => format!("bypass: {}", result.subject),
    }
}

/// Results by group (groups with failures first), failures first in each.
fn by_group(results: &[SelftestResult]) -> Vec<GroupResults> {
    let mut groups: Vec<GroupResults> = Vec::new();
    for result in results {
        let index = match groups.iter().position(|group| group.group == result.group) {
            Some(index) => index,
            None => {
                groups.push(GroupResults { group: result.group.clone(), checks: 0, failures: 0, rows: Vec::new() });
                groups.len() - 1
            }
        };
        let group = &mut groups[index];
        group.checks += 1;
        group.failures += usize::from(!result.passed);
        group.rows.push(ResultRow {
            check: check_words(result),
            name: result.name.clone(),
            expected: result.expected.clone(),
            got: result.got.clone(),
            passed: result.passed,
        });
    }
    for group in &mut groups {
        group.rows.sort_by_key(|row| row.passed);
    }
    groups.sort_by(|a, b| (a.failures == 0).cmp(&(b.failures == 0)).then_with(|| a.group.cmp(&b.group)));
    groups
}

fn manual_row(state: &AppState, check: &ManualCheck) -> ManualRow {
    let c = &check.check;
    ManualRow {
        when: when(state, c.checked_ms),
        who: c.checked_by.clone(),
        device: c.device.clone(),
        network: c.network.clone(),
        group: c.group.clone(),
        tested: c.tested.clone(),
        problem: c.outcome == Outcome::Problem,
        result: c.result.clone(),
        action: c.action.clone(),
        recorded: format!("{} at {}", check.recorded_by, when(state, check.recorded_ms)),
    }
}

/// Now in school time, as a datetime-local input holds it.
fn local_input(state: &AppState, time_ms: i64) -> String {
    let config = state.config();
    jiff::Timestamp::from_millisecond(time_ms)
        .map(|t| t.to_zoned(config.timezone.clone()).strftime("%Y-%m-%dT%H:%M").to_string())
        .unwrap_or_default()
}

/// The manual check a form describes, or its refusals beside their fields.
#[allow(clippy::result_large_err)] // once per form post, never on a hot path
fn validate(state: &AppState, form: &ManualForm, now_ms: i64) -> Result<NewManualCheck, FieldErrors> {
    let config = state.config();
    let mut errors = FieldErrors::default();
    let too_long = |value: &str| value.chars().count() > MAX_TEXT;
    let checked_ms = match form.when.trim().parse::<jiff::civil::DateTime>() {
        Ok(local) => match local.to_zoned(config.timezone.clone()) {
            Ok(zoned) => Some(zoned.timestamp().as_millisecond()),
            Err(_) => {
                errors.when =
                    "that time does not exist in the school's time zone (a clock change); pick another".into();
                None
            }
        },
        Err(_) => {
            errors.when = format!("{:?} is not a date and time; write e.g. 2026-12-01T09:30", form.when.trim());
            None
        }
    };
    // A minute's grace for a clock a little ahead of the server's.
    if let Some(at) = checked_ms
        && at > now_ms + 60_000
    {
        errors.when = "that is in the future: record a check once it is done".into();
    }
    let who = form.who.trim();
    if who.is_empty() {
        errors.who = "say who did the check".into();
    }
    let device = form.device.trim();
    if device.is_empty() {
        errors.device = "say which device was used (e.g. pupil laptop 4, or a staff iPad)".into();
    }
    let network = match form.network.trim() {
        "other" => {
            let other = form.network_other.trim();
            if other.is_empty() {
                errors.network = "name the other network, or choose one from the list".into();
            }
            other.to_string()
        }
        "" => String::new(),
        named if config.networks.iter().any(|network| network.name == named) => named.to_string(),
        named => {
            errors.network = format!("{named:?} is not a configured network; choose one, or \"other\" and name it");
            String::new()
        }
    };
    let group = match form.group.trim() {
        "other" => {
            let other = form.group_other.trim();
            if other.is_empty() {
                errors.group = "name the other group, or choose one from the list".into();
            }
            other.to_string()
        }
        "" => String::new(),
        named if config.groups.contains_key(named) => named.to_string(),
        named => {
            errors.group = format!("{named:?} is not a configured group; choose one, or \"other\" and name it");
            String::new()
        }
    };
    let tested = form.tested.trim();
    if tested.is_empty() {
        errors.tested = "say what was tested (e.g. testfiltering.com all tests)".into();
    }
    let outcome = Outcome::parse(form.outcome.trim());
    if outcome.is_none() {
        errors.outcome = "choose whether it went as expected or found a problem".into();
    }
    if outcome == Some(Outcome::Problem) && form.result.trim().is_empty() {
        errors.result = "say what the problem was".into();
    }
    for (value, message) in [
        (who, &mut errors.who),
        (device, &mut errors.device),
        (tested, &mut errors.tested),
        (form.result.trim(), &mut errors.result),
        (form.action.trim(), &mut errors.action),
    ] {
        if too_long(value) {
            *message = format!("keep it under {MAX_TEXT} characters");
        }
    }
    if errors.any() {
        return Err(errors);
    }
    Ok(NewManualCheck {
        checked_ms: checked_ms.unwrap_or(now_ms),
        checked_by: who.to_string(),
        device: device.to_string(),
        network,
        group,
        tested: tested.to_string(),
        outcome: outcome.unwrap_or(Outcome::Problem),
        result: form.result.trim().to_string(),
        action: form.action.trim().to_string(),
    })
}

/// What the page shows besides what it reads.
#[derive(Default)]
struct Extra {
    notice: String,
    error: String,
    form: Option<ManualForm>,
    errors: FieldErrors,
}

async fn show(state: &AppState, user: &RequireDsl, status: StatusCode, extra: Extra) -> Result<Response, WebError> {
    let checks = state.checks().clone();
    let (runs, latest, manual) = state
        .blocking(move |_| -> Result<_, crate::store::StoreError> {
            let runs = checks.runs(HISTORY)?;
            let latest = match runs.first() {
                Some(run) => Some(checks.results(run.id)?),
                None => None,
            };
            Ok((runs, latest, checks.manual_checks(MANUAL)?))
        })
        .await??;
    let config = state.config();
    let now_ms = crate::time::now_ms();
    let form = extra.form.unwrap_or_else(|| ManualForm {
        when: local_input(state, now_ms),
        who: user.user.name.clone(),
        outcome: "as-expected".into(),
        ..ManualForm::default()
    });
    let page = ChecksPage {
        layout: Layout::for_user("Checks", user, "/checks"),
        notice: extra.notice,
        error: extra.error,
        schedule: if config.selftest.enabled {
            format!("It runs by itself daily at {} school time.", config.selftest.daily_at_text())
        } else {
            "It is not scheduled ([selftest] enabled = false): run it here or with hedgerow selftest.".into()
        },
        can_run: state.selftest().is_some(),
        latest: runs.first().map(|run| run_view(state, run)),
        failures: latest
            .as_deref()
            .map(|results| {
                crate::present::selftest::most_serious_first(results)
                    .into_iter()
                    .map(|result| FailureRow {
                        group: result.group.clone(),
                        check: check_words(result),
                        name: result.name.clone(),
                        expected: result.expected.clone(),
                        got: result.got.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        groups: latest.as_deref().map(by_group).unwrap_or_default(),
        history: runs.iter().map(|run| run_view(state, run)).collect(),
        manual: manual.iter().map(|check| manual_row(state, check)).collect(),
        networks: config.networks.iter().map(|network| network.name.clone()).collect(),
        group_names: config.groups.keys().cloned().collect(),
        form,
        errors: extra.errors,
        now: local_input(state, now_ms),
    };
    Ok(render_with(status, &page))
}

pub async fn page(State(state): State<AppState>, user: RequireDsl) -> Result<Response, WebError> {
    show(&state, &user, StatusCode::OK, Extra::default()).await
}

/// Runs the self-test in the server for `user`.
async fn run(state: &AppState, user: &RequireDsl) -> Result<Result<RunReport, String>, WebError> {
    let Some(selftest) = state.selftest() else {
        return Ok(Err("this dashboard is not part of a running server, so there is nothing to test".into()));
    };
    Ok(selftest(Trigger::Dashboard, user.user.name.clone()).await)
}

pub async fn run_now(State(state): State<AppState>, user: RequireDsl) -> Result<Response, WebError> {
    match run(&state, &user).await? {
        Ok(report) => Ok(Redirect::to(&format!("/checks/selftest/{}", report.run.id)).into_response()),
        Err(error) => {
            let extra = Extra { error: format!("The self-test could not run: {error}"), ..Extra::default() };
            show(&state, &user, StatusCode::SERVICE_UNAVAILABLE, extra).await
        }
    }
}

pub async fn run_page(
    State(state): State<AppState>,
    user: RequireDsl,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let id: i64 = id.parse().map_err(|_| WebError::NotFound)?;
    let checks = state.checks().clone();
    let found = state
        .blocking(move |_| -> Result<_, crate::store::StoreError> {
            Ok(match checks.run(id)? {
                Some(run) => Some((checks.results(run.id)?, run)),
                None => None,
            })
        })
        .await??;
    let Some((results, run)) = found else { return Err(WebError::NotFound) };
    let view = run_view(&state, &run);
    let page = RunPage {
        layout: Layout::for_user(&format!("Self-test run {}", run.id), &user, "/checks"),
        run: view,
        groups: by_group(&results),
    };
    Ok(render_with(StatusCode::OK, &page))
}

async fn save_manual(
    state: &AppState,
    user: &RequireDsl,
    form: &ManualForm,
) -> Result<Result<i64, FieldErrors>, WebError> {
    let now_ms = crate::time::now_ms();
    let check = match validate(state, form, now_ms) {
        Ok(check) => check,
        Err(errors) => return Ok(Err(errors)),
    };
    let checks = state.checks().clone();
    let recorded_by = user.user.name.clone();
    let id = state.blocking(move |_| checks.record_manual(&check, &recorded_by, now_ms)).await??;
    Ok(Ok(id))
}

pub async fn add_manual(
    State(state): State<AppState>,
    user: RequireDsl,
    Form(form): Form<ManualForm>,
) -> Result<Response, WebError> {
    match save_manual(&state, &user, &form).await? {
        Ok(_) => {
            let notice = format!("Saved the check of {}.", form.tested.trim());
            show(&state, &user, StatusCode::OK, Extra { notice, ..Extra::default() }).await
        }
        Err(errors) => {
            let error = "The check was not saved: correct the fields marked under Record a check.".to_string();
            let extra = Extra { form: Some(form), errors, error, ..Extra::default() };
            show(&state, &user, StatusCode::BAD_REQUEST, extra).await
        }
    }
}

/// `/checks.csv`: every self-test run and every manual check, one row each.
pub async fn csv(State(state): State<AppState>, _user: RequireDsl) -> Result<Response, WebError> {
    let checks = state.checks().clone();
    let (runs, manual) = state
        .blocking(move |_| -> Result<_, crate::store::StoreError> {
            Ok((checks.runs_between(i64::MIN, i64::MAX)?, checks.manual_between(i64::MIN, i64::MAX)?))
        })
        .await??;
    let mut body = format_record(&[
        "kind", "time", "who", "device", "network", "group", "tested", "outcome", "result", "action", "checks",
        "failures",
    ]);
    body.push('\n');
    let config = state.config();
    for run in &runs {
        let who = if run.user.is_empty() { trigger_words(run.trigger).to_string() } else { run.user.clone() };
        let outcome = if run.passed() { "as-expected" } else { "problem" };
        let result = if run.error.is_empty() {
            format!("{} of {} checks failed", run.failures, run.checks)
        } else {
            run.error.clone()
        };
        body.push_str(&format_record(&[
            "self-test".to_string(),
            config.local_time_text(run.started_ms),
            who,
            String::new(),
            String::new(),
            "every group".into(),
            format!("built-in self-test run {} ({})", run.id, trigger_words(run.trigger)),
            outcome.into(),
            result,
            String::new(),
            run.checks.to_string(),
            run.failures.to_string(),
        ]));
        body.push('\n');
    }
    for check in &manual {
        let c = &check.check;
        body.push_str(&format_record(&[
            "manual".to_string(),
            config.local_time_text(c.checked_ms),
            c.checked_by.clone(),
            c.device.clone(),
            c.network.clone(),
            c.group.clone(),
            c.tested.clone(),
            c.outcome.as_str().into(),
            c.result.clone(),
            c.action.clone(),
            String::new(),
            String::new(),
        ]));
        body.push('\n');
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"hedgerow-checks.csv\""),
        ],
        body,
    )
        .into_response())
}

#[derive(Serialize)]
pub struct ChecksJson {
    /// The newest run with its results (failures first), if any.
    pub latest: Option<RunReport>,
    pub runs: Vec<SelftestRun>,
    pub manual: Vec<ManualCheck>,
}

pub async fn api(State(state): State<AppState>, _user: RequireDsl) -> Result<Response, WebError> {
    let checks = state.checks().clone();
    let json = state
        .blocking(move |_| -> Result<_, crate::store::StoreError> {
            let runs = checks.runs(HISTORY)?;
            let latest = match runs.first() {
                Some(run) => Some(RunReport { run: run.clone(), results: checks.results(run.id)? }),
                None => None,
            };
            Ok(ChecksJson { latest, runs, manual: checks.manual_checks(MANUAL)? })
        })
        .await??;
    Ok(axum::Json(json).into_response())
}

pub async fn api_run(State(state): State<AppState>, user: RequireDsl) -> Result<Response, WebError> {
    match run(&state, &user).await? {
        Ok(report) => Ok(axum::Json(report).into_response()),
        Err(error) => Err(WebError::Internal(format!("the self-test could not run: {error}"))),
    }
}

pub async fn api_manual(
    State(state): State<AppState>,
    user: RequireDsl,
    Json(form): Json<ManualForm>,
) -> Result<Response, WebError> {
    match save_manual(&state, &user, &form).await? {
        Ok(id) => Ok((StatusCode::CREATED, axum::Json(serde_json::json!({ "id": id }))).into_response()),
        Err(errors) => Err(super::first_error(&errors.fields())),
    }
}
