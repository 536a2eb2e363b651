//! `GET /`: the overview. Who you are and what your roles let you do (as
//! the home page said before), then what the filter has done: lookups and
//! blocks per group over the last 24 hours by hour and the last 30 days by
//! day (server-drawn SVG charts, each with a table of the same figures),
//! the most blocked categories, and how the lists, the upstream and the log
//! stand. Admins and DSLs also see the most blocked names and devices today,
//! each linking to the query log explorer (`/log?...`) and the device page.
//! Governors see the same figures with no name or device detail: the
//! [`Overview`] built for them has none, so neither page nor API can leak it.
//! `GET /api/overview`: the same [`Overview`] as JSON.
//!
//! Every figure comes from the hourly roll-ups (`store::counts`), never the
//! rows, so the page costs the same on 150 M rows as on 1,000.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Serialize;
use std::path::Path;

use jiff::tz::TimeZone;

use super::{Layout, render};
use crate::config::Config;
use crate::lists::health::{ListHealth, SourceState};
use crate::store::counts;
use crate::store::{LogState, Role, StoreError};
use crate::time::{DAY_MS, HOUR_MS};
use crate::web::chart::{Chart, Series, thousands};
use crate::web::session::CurrentUser;
use crate::web::{AppState, WebError};

/// How many names, devices and categories the lists show.
const TOP: usize = 10;
/// Days in the daily chart.
const DAYS: i64 = 30;

/// What the overview shows, as the API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// When the figures were read (Unix ms).
    pub generated_ms: i64,
    /// Whether names and devices are included (admin, dsl).
    pub detail: bool,
    /// The last 24 hours, by hour (the current hour last).
    pub hourly: Timeline,
    /// The last 30 days, by UTC day (today last).
    pub daily: Timeline,
    /// Blocked lookups by category, today and over the 30 days, most first.
    pub categories: Vec<CategoryCount>,
    /// The most blocked names today (admin, dsl only: absent for governors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_names: Option<Vec<NameCount>>,
    /// The devices with the most blocked lookups today (admin, dsl only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_devices: Option<Vec<DeviceCount>>,
    pub lists: ListsHealth,
    pub upstream: UpstreamHealth,
    pub log: LogHealth,
}

/// Counts per group over a row of periods.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    /// The start of each period (Unix ms).
    pub starts_ms: Vec<i64>,
    /// Each period as the school reads it ("14:00", "30 Nov").
    pub labels: Vec<String>,
    pub groups: Vec<GroupLine>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupLine {
    /// The group, or "no group" for refused lookups from outside every network.
    pub group: String,
    pub lookups: Vec<u64>,
    pub blocked: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CategoryCount {
    /// "" for blocks of no category (an override, a refused query type).
    pub category: String,
    pub today: u64,
    pub days_30: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NameCount {
    pub name: String,
    pub blocked: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceCount {
    /// The address, or its privacy form for private groups.
    pub client: String,
    pub device: Option<String>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub blocked: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ListsHealth {
    /// Unix seconds of the last check of the sources (start, reload, update).
    pub checked_at: Option<u64>,
    /// Why the lists could not be rebuilt at all, if so.
    pub error: Option<String>,
    pub sources: Vec<SourceFigures>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceFigures {
    pub id: String,
    pub category: String,
    /// "ok", "degraded" or "missing".
    pub state: String,
    /// Unix seconds when the copy in force was taken.
    pub updated_at: Option<u64>,
    pub entries: Option<u64>,
    /// Unix seconds since when it has been failing, and why.
    pub failing_since: Option<u64>,
    pub last_failure: Option<String>,
}

/// The upstream since the server started (filled from the metrics when
/// the server keeps them; `None` where nothing is known).
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpstreamHealth {
    pub description: String,
    pub round_trips: Option<u64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub failures: Option<u64>,
    pub stale_answers: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LogHealth {
    pub enabled: bool,
    /// Whether rows are being written now: "ok", "disk_full" (the disk
    /// holding the database is full) or "write_failing" (another error).
    pub state: String,
    /// Since when the log has not been written (Unix ms), unless "ok".
    pub problem_since_ms: Option<i64>,
    /// The problem in words, unless "ok" (the database's path and the error
    /// only for admins and DSLs).
    pub problem: Option<String>,
    /// Rows written and dropped (the writer fell behind, or could not write) since the server started.
    pub rows_written: u64,
    pub rows_dropped: u64,
    /// Bytes of the database file with its write-ahead log.
    pub disk_bytes: u64,
    /// `[log] retention_days`: raw rows kept this many days.
    pub days_kept: u32,
}

/// What `current` may see: everything (admin, dsl), the figures without
/// names and devices (governor), or nothing (no role).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Detail,
    Figures,
    Nothing,
}

fn view(current: &CurrentUser) -> View {
    if current.user.has(Role::Admin) || current.user.has(Role::Dsl) {
        View::Detail
    } else if current.user.has(Role::Governor) {
        View::Figures
    } else {
        View::Nothing
    }
}

/// Reads the overview at `now_ms` (blocking: SQLite): the figures from the
/// log, then the health of the running server.
pub fn read(state: &AppState, now_ms: i64, detail: bool) -> Result<Overview, WebError> {
    let config = state.config();
    let mut overview = figures(state.database(), &config.timezone, now_ms, detail)
        .map_err(|error| WebError::Internal(error.to_string()))?;
    // The running server's figures (atomics, read without a lock).
    let metrics = state.metrics();
    overview.lists = list_figures(state, &metrics, now_ms);
    let pipeline = state.pipeline();
    let seen = metrics.upstream_count > 0 || metrics.upstream_failures > 0;
    overview.upstream = UpstreamHealth {
        description: pipeline.upstream_description().to_string(),
        round_trips: Some(metrics.upstream_count),
        latency_p50_ms: metrics.upstream_p50_seconds.map(|seconds| seconds * 1000.0).filter(|_| seen),
        latency_p99_ms: metrics.upstream_p99_seconds.map(|seconds| seconds * 1000.0).filter(|_| seen),
        failures: Some(metrics.upstream_failures),
        stale_answers: Some(metrics.stale_answers),
    };
    let log = pipeline.log();
    let (log_state, problem_since_ms, problem) = log_problem(&config, log.map(|log| log.state()), detail);
    overview.log = LogHealth {
        state: log_state.to_string(),
        problem_since_ms,
        problem,
        enabled: metrics.log_enabled || log.is_some(),
        rows_written: metrics.log_written.max(log.map_or(0, |log| log.written())),
        rows_dropped: metrics.log_dropped.max(log.map_or(0, |log| log.dropped())),
        disk_bytes: disk_bytes(state.database()),
        days_kept: config.log.settings.retention_days,
    };
    Ok(overview)
}

/// The log writer's state as the overview says it: its name, since when,
/// and in words (with the database's path and the error when `detail`).
fn log_problem(config: &Config, state: Option<LogState>, detail: bool) -> (&'static str, Option<i64>, Option<String>) {
    match state {
        None | Some(LogState::Ok) => ("ok", None, None),
        Some(LogState::DiskFull { since_ms, db }) => {
            let since = config.local_time_text(since_ms);
            let disk = if detail {
                format!("the disk holding {} is full", db.display())
            } else {
                "the server's disk is full".to_string()
            };
            let text = format!(
                "The query log is not being written: {disk} (since {since}). DNS is still answering. Free some \
                 space; logging resumes by itself."
            );
            ("disk_full", Some(since_ms), Some(text))
        }
        // The error names the database's file.
        Some(LogState::WriteFailing { since_ms, error, .. }) => {
            let since = config.local_time_text(since_ms);
            let why = if detail {
                format!("writing to it fails (since {since}): {error}")
            } else {
                format!("writing to the database fails (since {since})")
            };
            let text = format!(
                "The query log is not being written: {why}. DNS is still answering; the details are in \
                 Hedgerow's log."
            );
            ("write_failing", Some(since_ms), Some(text))
        }
    }
}

/// The overview's figures from the log at `db` alone (read-only; the
/// health parts are left empty): what the page costs on a big log, and
/// what `benches/overview.rs` measures. `zone` labels hours and days and
/// says when "today" began.
pub fn figures(db: &Path, zone: &TimeZone, now_ms: i64, detail: bool) -> Result<Overview, StoreError> {
    let local = |ms: i64, format: &str| {
        Timestamp::from_millisecond(ms)
            .map(|t| t.to_zoned(zone.clone()).strftime(format).to_string())
            .unwrap_or_default()
    };

    // The last 24 hours, the current one last.
    let this_hour = now_ms.div_euclid(HOUR_MS);
    let first_hour = this_hour - 23;
    let hours = counts::hourly_by_group(db, first_hour, this_hour + 1)?;
    let hourly = timeline(
        (first_hour..=this_hour).map(|hour| hour * HOUR_MS).collect(),
        |start| local(start, "%H:%M"),
        hours.into_iter().map(|count| ((count.hour - first_hour) as usize, count.group, count.lookups, count.blocked)),
    );

    // The last 30 days, today last.
    let today = now_ms.div_euclid(DAY_MS);
    let first_day = today - (DAYS - 1);
    let days = counts::daily_by_group(db, first_day, today + 1)?;
    let daily = timeline(
        (first_day..=today).map(|day| day * DAY_MS).collect(),
        |start| local(start + 12 * HOUR_MS, "%-d %b"),
        days.into_iter().map(|count| ((count.day - first_day) as usize, count.group, count.lookups, count.blocked)),
    );

    // "Today" as the school means it: since local midnight.
    let midnight_ms = Timestamp::from_millisecond(now_ms)
        .ok()
        .and_then(|t| t.to_zoned(zone.clone()).start_of_day().ok())
        .map(|day| day.timestamp().as_millisecond())
        .unwrap_or(today * DAY_MS);
    let today_hours = (midnight_ms.div_euclid(HOUR_MS), this_hour + 1);
    let month = counts::top_blocked_categories(db, first_day * 24, (today + 1) * 24, TOP)?;
    let todays = counts::top_blocked_categories(db, today_hours.0, today_hours.1, usize::MAX)?;
    let mut categories: Vec<CategoryCount> = month
        .into_iter()
        .map(|(category, days_30)| {
            let today = todays.iter().find(|(name, _)| *name == category).map_or(0, |(_, count)| *count);
            CategoryCount { category, today, days_30 }
        })
        .collect();
    categories.sort_by(|a, b| b.today.cmp(&a.today).then(b.days_30.cmp(&a.days_30)).then(a.category.cmp(&b.category)));

    let (top_names, top_devices) = if detail {
        let names = counts::top_blocked_names(db, midnight_ms, now_ms + 1, TOP)?;
        let devices = counts::top_blocked_clients(db, midnight_ms, now_ms + 1, TOP)?;
        (
            Some(names.into_iter().map(|(name, blocked)| NameCount { name, blocked }).collect()),
            Some(
                devices
                    .into_iter()
                    .map(|count| DeviceCount {
                        client: count.client,
                        device: count.device,
                        owner: count.owner,
                        group: count.group,
                        blocked: count.count,
                    })
                    .collect(),
            ),
        )
    } else {
        (None, None)
    };

    Ok(Overview {
        generated_ms: now_ms,
        detail,
        hourly,
        daily,
        categories,
        top_names,
        top_devices,
        lists: ListsHealth::default(),
        upstream: UpstreamHealth::default(),
        log: LogHealth::default(),
    })
}

/// A timeline over `starts`, from `(period index, group, lookups, blocked)`.
fn timeline(
    starts: Vec<i64>,
    label: impl Fn(i64) -> String,
    counts: impl Iterator<Item = (usize, Option<String>, u64, u64)>,
) -> Timeline {
    let periods = starts.len();
    let mut groups: Vec<GroupLine> = Vec::new();
    for (index, group, lookups, blocked) in counts {
        if index >= periods {
            continue;
        }
        let group = group.unwrap_or_else(|| "no group".to_string());
        let line = match groups.iter().position(|line| line.group == group) {
            Some(at) => &mut groups[at],
            None => {
                groups.push(GroupLine { group, lookups: vec![0; periods], blocked: vec![0; periods] });
                groups.last_mut().expect("just pushed")
            }
        };
        line.lookups[index] += lookups;
        line.blocked[index] += blocked;
    }
    // Groups by name, "no group" last.
    groups.sort_by(|a, b| (a.group == "no group").cmp(&(b.group == "no group")).then(a.group.cmp(&b.group)));
    Timeline { labels: starts.iter().map(|&start| label(start)).collect(), starts_ms: starts, groups }
}

/// How each enabled source stands, as the overview's list-health panel
/// shows it (the Lists page reads the same): the running server's metrics,
/// else the health record in the data folder.
pub(crate) fn list_figures(state: &AppState, metrics: &crate::metrics::Snapshot, now_ms: i64) -> ListsHealth {
    if metrics.lists_checked_at.is_some() {
        lists_from_metrics(metrics, now_ms)
    } else {
        lists_health(ListHealth::read(&state.config().data_dir))
    }
}

/// The lists as the metrics saw them at the last load or reload.
fn lists_from_metrics(metrics: &crate::metrics::Snapshot, now_ms: i64) -> ListsHealth {
    let now_seconds = u64::try_from(now_ms / 1000).unwrap_or(0);
    ListsHealth {
        checked_at: metrics.lists_checked_at,
        error: metrics.lists_error.clone(),
        sources: metrics
            .lists
            .iter()
            .map(|source| SourceFigures {
                id: source.id.clone(),
                category: source.category.clone(),
                state: source.state.to_string(),
                updated_at: source.age_seconds.map(|age| now_seconds.saturating_sub(age)),
                entries: source.entries,
                failing_since: source.failing_since,
                last_failure: source.last_failure.clone(),
            })
            .collect(),
    }
}

fn lists_health(health: Option<ListHealth>) -> ListsHealth {
    let Some(health) = health else { return ListsHealth::default() };
    ListsHealth {
        checked_at: Some(health.checked_at),
        error: health.error,
        sources: health
            .sources
            .into_iter()
            .map(|source| SourceFigures {
                state: match source.state {
                    SourceState::Ok => "ok",
                    SourceState::Degraded => "degraded",
                    SourceState::Missing => "missing",
                }
                .to_string(),
                id: source.id,
                category: source.category,
                updated_at: source.copy_from,
                entries: source.names.map(|names| names as u64),
                failing_since: source.since,
                last_failure: source.reason,
            })
            .collect(),
    }
}

/// The database with its write-ahead log and shared-memory file.
fn disk_bytes(db: &std::path::Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let mut path = db.as_os_str().to_owned();
            path.push(suffix);
            std::fs::metadata(path).ok().map(|meta| meta.len())
        })
        .sum()
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    layout: Layout,
    name: String,
    roles: Vec<&'static str>,
    parts: Vec<super::home::Part>,
    overview: Option<OverviewView>,
    /// Alerts (issue 14): open alerts, for the DSL and admins.
    open_alerts: Option<i64>,
}

/// The overview as the template shows it: charts drawn, numbers formatted.
struct OverviewView {
    charts: Vec<ChartView>,
    categories: Vec<(String, String, String, String)>,
    names: Option<Vec<(String, String, String)>>,
    devices: Option<Vec<DeviceView>>,
    lists_checked: String,
    lists_error: Option<String>,
    sources: Vec<SourceView>,
    upstream: Vec<(&'static str, String)>,
    log: Vec<(&'static str, String)>,
    log_dropped: bool,
    /// The log is not being written: why, in words (a banner at the top).
    log_problem: Option<String>,
}

struct ChartView {
    heading: String,
    svg: String,
    legend: String,
    table: String,
}

struct DeviceView {
    label: String,
    owner: String,
    group: String,
    blocked: String,
    device_href: String,
    log_href: String,
}

struct SourceView {
    id: String,
    category: String,
    state: String,
    problem: bool,
    updated: String,
    entries: String,
    failure: String,
}

fn chart(
    id: &str,
    heading: &str,
    x_name: &str,
    y_name: &str,
    line: &Timeline,
    every: usize,
    blocked: bool,
) -> ChartView {
    let chart = Chart {
        id: id.to_string(),
        title: heading.to_string(),
        x_name: x_name.to_string(),
        y_name: y_name.to_string(),
        columns: line.labels.clone(),
        label_every: every,
        series: line
            .groups
            .iter()
            .map(|group| Series {
                label: group.group.clone(),
                values: if blocked { group.blocked.clone() } else { group.lookups.clone() },
            })
            .collect(),
    };
    ChartView { heading: heading.to_string(), svg: chart.svg(), legend: chart.legend(), table: chart.table() }
}

fn present(config: &Config, overview: &Overview) -> OverviewView {
    let when_seconds = |seconds: Option<u64>| match seconds {
        Some(seconds) => config.local_time_text((seconds as i64).saturating_mul(1000)),
        None => "not known".to_string(),
    };
    // The explorer's `since`: today's date in the school's time zone.
    let midnight = Timestamp::from_millisecond(overview.generated_ms)
        .map(|t| t.to_zoned(config.timezone.clone()).strftime("%Y-%m-%d").to_string())
        .unwrap_or_default();
    let charts = vec![
        chart("lookups-hourly", "Lookups per hour, last 24 hours", "Hour", "Lookups", &overview.hourly, 3, false),
        chart("blocked-hourly", "Blocked per hour, last 24 hours", "Hour", "Blocked", &overview.hourly, 3, true),
        chart("lookups-daily", "Lookups per day, last 30 days", "Day", "Lookups", &overview.daily, 5, false),
        chart("blocked-daily", "Blocked per day, last 30 days", "Day", "Blocked", &overview.daily, 5, true),
    ];
    let categories = overview
        .categories
        .iter()
        .map(|count| {
            let label = if count.category.is_empty() { "no category".to_string() } else { count.category.clone() };
            let href = format!("/log?decision=blocked&category={}", super::encode(&count.category));
            (label, href, thousands(count.today), thousands(count.days_30))
        })
        .collect();
    let names = overview.top_names.as_ref().map(|names| {
        names
            .iter()
            .map(|count| {
                let href = format!("/log?decision=blocked&name={}&since={midnight}", super::encode(&count.name));
                (count.name.clone(), href, thousands(count.blocked))
            })
            .collect()
    });
    let devices = overview.top_devices.as_ref().map(|devices| {
        devices
            .iter()
            .map(|count| DeviceView {
                label: count.device.clone().unwrap_or_else(|| count.client.clone()),
                owner: count.owner.clone().unwrap_or_else(|| "not known".to_string()),
                group: count.group.clone().unwrap_or_default(),
                blocked: thousands(count.blocked),
                device_href: format!("/device/{}", super::encode(&count.client)),
                log_href: format!("/log?decision=blocked&client={}&since={midnight}", super::encode(&count.client)),
            })
            .collect()
    });
    let sources = overview
        .lists
        .sources
        .iter()
        .map(|source| SourceView {
            id: source.id.clone(),
            category: source.category.clone(),
            state: match source.state.as_str() {
                "ok" => "in force".to_string(),
                "degraded" => "failing: serving its last good copy".to_string(),
                _ => "failing: no good copy, blocks nothing".to_string(),
            },
            problem: source.state != "ok",
            updated: when_seconds(source.updated_at),
            entries: source.entries.map_or_else(|| "not known".to_string(), thousands),
            failure: match (&source.last_failure, source.failing_since) {
                (Some(reason), Some(since)) => format!("since {}: {reason}", when_seconds(Some(since))),
                (Some(reason), None) => reason.clone(),
                _ => "none".to_string(),
            },
        })
        .collect();
    let upstream_figure = |value: Option<u64>| value.map_or_else(|| "not known".to_string(), thousands);
    let milliseconds = |value: Option<f64>| value.map_or_else(|| "not known".to_string(), |ms| format!("{ms:.1} ms"));
    let up = &overview.upstream;
    let upstream = vec![
        ("Upstream", up.description.clone()),
        ("Round trips since start", upstream_figure(up.round_trips)),
        ("Latency, median", milliseconds(up.latency_p50_ms)),
        ("Latency, 99th percentile", milliseconds(up.latency_p99_ms)),
        ("Failures (no answer)", upstream_figure(up.failures)),
        ("Stale answers served", upstream_figure(up.stale_answers)),
    ];
    let log = &overview.log;
    let log_rows = vec![
        (
            "Query log",
            match (log.enabled, log.state.as_str()) {
                (false, _) => "off".to_string(),
                (true, "disk_full") => "on, but not written: the disk is full".to_string(),
                (true, "write_failing") => "on, but not written: writes fail".to_string(),
                (true, _) => "on".to_string(),
            },
        ),
        ("Rows written since start", thousands(log.rows_written)),
        ("Rows dropped since start", thousands(log.rows_dropped)),
        ("Disk used", megabytes(log.disk_bytes)),
        ("Days kept", format!("{} days", log.days_kept)),
    ];
    OverviewView {
        charts,
        categories,
        names,
        devices,
        lists_checked: when_seconds(overview.lists.checked_at),
        lists_error: overview.lists.error.clone(),
        sources,
        upstream,
        log: log_rows,
        log_dropped: log.rows_dropped > 0,
        log_problem: log.problem.clone(),
    }
}

fn megabytes(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// The overview's page as HTML with a logged-out layout, for the bench
/// (what `page` renders, less the nav and the role's links).
pub fn render_figures(config: &Config, overview: &Overview) -> Result<String, WebError> {
    let page = OverviewPage {
        layout: Layout::anonymous("Overview"),
        name: String::new(),
        roles: Vec::new(),
        parts: Vec::new(),
        overview: Some(present(config, overview)),
        open_alerts: None,
    };
    Ok(render(&page)?.0)
}

pub async fn page(State(state): State<AppState>, current: CurrentUser) -> Result<Response, WebError> {
    let view = view(&current);
    let overview = match view {
        View::Nothing => None,
        View::Detail | View::Figures => {
            let detail = view == View::Detail;
            let now = crate::time::now_ms();
            Some(
                state
                    .blocking(move |state| read(state, now, detail).map(|overview| present(&state.config(), &overview)))
                    .await??,
            )
        }
    };
    let page = OverviewPage {
        layout: Layout::for_user("Overview", &current, "/"),
        name: current.user.name.clone(),
        roles: current.user.roles.iter().map(|role| role.as_str()).collect(),
        parts: super::home::parts(&current),
        overview,
        open_alerts: current.open_alerts,
    };
    Ok(render(&page)?.into_response())
}

pub async fn api(State(state): State<AppState>, current: CurrentUser) -> Result<axum::Json<Overview>, WebError> {
    let detail = match view(&current) {
        View::Detail => true,
        View::Figures => false,
        View::Nothing => return Err(WebError::Forbidden("the overview is for admins, DSLs and governors".to_string())),
    };
    let now = crate::time::now_ms();
    Ok(axum::Json(state.blocking(move |state| read(state, now, detail)).await??))
}
