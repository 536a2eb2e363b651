//! The query log explorer (admin, dsl): `GET /log` a search form above
//! paged results, newest first (the next page starts below the last row's
//! id, so a page never repeats or skips a row as new ones arrive); `GET
//! /log.csv` the same search as a CSV attachment, streamed: rows are read a
//! page at a time on a blocking thread and sent into the response body as
//! they come, so an export of a month never sits in memory whole.

use std::pin::Pin;
use std::task::{Context, Poll};

use askama::Template;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{Layout, render_with, text};
use crate::config::Config;
use crate::dns::Explanation;
use crate::store::record::DECISIONS;
use crate::store::search::{ExportRow, LogRow, Search};
use crate::web::{AppState, RequireDsl, WebError};

/// Rows on one page.
pub const PER_PAGE: usize = 100;

/// Rows read per step of a CSV export.
const CSV_STEP: usize = 20_000;

/// The time windows the form offers.
pub const WINDOWS: [(&str, &str); 5] =
    [("hour", "Last hour"), ("today", "Today"), ("7d", "Last 7 days"), ("30d", "Last 30 days"), ("custom", "Custom")];

/// The search form, as the query string carries it.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct LogQuery {
    /// A device name, owner or IP address.
    pub client: String,
    /// A domain, with its subdomains.
    pub name: String,
    pub category: String,
    pub decision: String,
    pub group: String,
    /// One of [`WINDOWS`]; empty is `7d`.
    pub window: String,
    /// For `custom`: `2026-11-30` or `2026-11-30T08:00`, school time.
    pub from: String,
    pub to: String,
    /// Paging: the id of the last row shown.
    pub before: String,
}

/// A bad value and the field it belongs beside.
#[derive(Debug, Default)]
pub struct FieldErrors {
    pub client: String,
    pub name: String,
    pub category: String,
    pub decision: String,
    pub group: String,
    pub window: String,
    pub from: String,
    pub to: String,
}

impl FieldErrors {
    pub fn any(&self) -> bool {
        [&self.client, &self.name, &self.category, &self.decision, &self.group, &self.window, &self.from, &self.to]
            .iter()
            .any(|message| !message.is_empty())
    }

    /// The first, as a [`WebError`] (for the CSV export).
    fn first(&self) -> WebError {
        super::first_error(&[
            ("client", &self.client),
            ("name", &self.name),
            ("category", &self.category),
            ("decision", &self.decision),
            ("group", &self.group),
            ("window", &self.window),
            ("from", &self.from),
            ("to", &self.to),
        ])
    }
}

/// A moment in the school's time zone: `2026-11-30T08:00` (or with
/// seconds), or a day `2026-11-30` (its start; with `end`, the next day's
/// start, so a day given as the end is included).
pub fn school_time(config: &Config, value: &str, end: bool) -> Result<i64, String> {
    let value = value.trim();
    // A day alone first: jiff reads `2026-11-30` as a DateTime (midnight) too.
    let civil = if let Ok(date) = value.parse::<jiff::civil::Date>()
        && !value.contains(['T', 't', ' '])
    {
        let date = if end { date.tomorrow().map_err(|_| "that date is too far ahead".to_string())? } else { date };
        date.to_datetime(jiff::civil::Time::midnight())
    } else if let Ok(time) = value.parse::<jiff::civil::DateTime>() {
        time
    } else {
        return Err(format!("{value:?} is not a time; write it as 2026-11-30 or 2026-11-30T08:00"));
    };
    civil
        .to_zoned(config.timezone.clone())
        .map(|zoned| zoned.timestamp().as_millisecond())
        .map_err(|error| format!("{value:?} cannot be used ({error})"))
}

/// The start of today in the school's time zone.
fn today_start(config: &Config, now_ms: i64) -> i64 {
    jiff::Timestamp::from_millisecond(now_ms)
        .ok()
        .and_then(|now| now.to_zoned(config.timezone.clone()).start_of_day().ok())
        .map(|start| start.timestamp().as_millisecond())
        .unwrap_or(now_ms - now_ms.rem_euclid(crate::store::time::DAY_MS))
}

impl LogQuery {
    pub fn window(&self) -> &str {
        match self.window.trim() {
            "" => "7d",
            other => other,
        }
    }

    /// The search this form asks for (limit [`PER_PAGE`]), or the bad values.
    pub fn search(&self, config: &Config, now_ms: i64) -> Result<Search, FieldErrors> {
        let mut errors = FieldErrors::default();
        let decision = text(&self.decision).map(|decision| decision.to_ascii_lowercase());
        if let Some(decision) = &decision
            && !DECISIONS.contains(&decision.as_str())
        {
            errors.decision = format!("{decision:?} is not a decision; choose one of the list");
        }
        let group = text(&self.group);
        if let Some(group) = &group
            && !config.groups.contains_key(group)
        {
            errors.group = format!("there is no group {group:?}; choose one of the list");
        }
        let name = text(&self.name);
        if let Some(name) = &name {
            let bare = name.trim_start_matches("*.").trim_end_matches('.');
            if bare.is_empty() || bare.contains(char::is_whitespace) || bare.contains('/') {
                errors.name = format!("{name:?} is not a domain name; write it as example.com");
            }
        }
        let category = text(&self.category).map(|category| category.to_ascii_lowercase());
        if let Some(category) = &category
            && !category.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            errors.category = format!("{category:?} is not a category name");
        }
        let hour = crate::store::time::HOUR_MS;
        let (mut since_ms, mut until_ms) = (None, None);
        match self.window() {
            "hour" => since_ms = Some(now_ms - hour),
            "today" => since_ms = Some(today_start(config, now_ms)),
            "7d" => since_ms = Some(now_ms - 7 * 24 * hour),
            "30d" => since_ms = Some(now_ms - 30 * 24 * hour),
            "custom" => {
                if let Some(from) = text(&self.from) {
                    match school_time(config, &from, false) {
                        Ok(ms) => since_ms = Some(ms),
                        Err(message) => errors.from = message,
                    }
                }
                if let Some(to) = text(&self.to) {
                    match school_time(config, &to, true) {
                        Ok(ms) => until_ms = Some(ms),
                        Err(message) => errors.to = message,
                    }
                }
                if let (Some(from), Some(to)) = (since_ms, until_ms)
                    && to <= from
                {
                    errors.to = "the end is before the start".to_string();
                }
            }
            other => errors.window = format!("{other:?} is not a time window; choose one of the list"),
        }
        let before_id = match text(&self.before) {
            None => None,
            // A bad page marker is the first page, never an error page.
            Some(before) => before.parse::<i64>().ok().filter(|id| *id > 0),
        };
        if errors.any() {
            return Err(errors);
        }
        Ok(Search {
            client: text(&self.client),
            name,
            category,
            group,
            decision,
            since_ms,
            until_ms,
            limit: PER_PAGE,
            before_id,
        })
    }

    /// The filters as a query string, without the page marker.
    pub fn query(&self) -> String {
        super::query_string(&[
            ("client", &self.client),
            ("name", &self.name),
            ("category", &self.category),
            ("decision", &self.decision),
            ("group", &self.group),
            ("window", &self.window),
            ("from", &self.from),
            ("to", &self.to),
        ])
    }
}

/// One row as the page shows it.
pub struct Row {
    /// The day and the time of day (with seconds), school time.
    pub day: String,
    pub clock: String,
    /// The device (owner), else the client text.
    pub who: String,
    /// The address, when a device name is shown.
    pub client: String,
    /// `/device/..`.
    pub device_href: String,
    pub group: String,
    pub name: String,
    pub record_type: String,
    pub decision: String,
    pub stage: String,
    pub reason: String,
    pub list: String,
}

/// A time with seconds in the school's time zone: `2026-11-30 13:45:07`.
pub fn log_time(config: &Config, time_ms: i64) -> String {
    jiff::Timestamp::from_millisecond(time_ms)
        .map(|t| t.to_zoned(config.timezone.clone()).strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| time_ms.to_string())
}

impl Row {
    pub fn new(config: &Config, row: LogRow) -> Row {
        let reason = Explanation::of_row(&row).reason_text();
        let who = match (&row.device, &row.owner) {
            (Some(device), Some(owner)) => format!("{device} ({owner})"),
            (Some(device), None) => device.clone(),
            _ => row.client.clone(),
        };
        let label = row.device.clone().unwrap_or_else(|| row.client.clone());
        let when = log_time(config, row.time_ms);
        let (day, clock) = when.split_once(' ').unwrap_or((&when, ""));
        Row {
            day: day.to_string(),
            clock: clock.to_string(),
            client: if row.device.is_some() { row.client.clone() } else { String::new() },
            who,
            device_href: format!("/device/{}", super::encode(&label)),
            group: row.group.unwrap_or_default(),
            name: row.name,
            record_type: hickory_proto::rr::RecordType::from(row.record_type).to_string(),
            decision: row.decision,
            stage: row.stage.unwrap_or_default(),
            // The list, unless the reason already names it.
            list: row.list.filter(|list| !reason.contains(list.as_str())).unwrap_or_default(),
            reason,
        }
    }
}

#[derive(Template)]
#[template(path = "log.html")]
struct LogPage {
    layout: Layout,
    form: LogQuery,
    window: String,
    windows: [(&'static str, &'static str); 5],
    decisions: [&'static str; 6],
    groups: Vec<String>,
    errors: FieldErrors,
    rows: Vec<Row>,
    /// The filters' query string, percent-encoded, with `&amp;` between
    /// pairs: safe in an attribute as it is.
    query_attr: String,
    /// The next page's marker, when this page is full.
    next: String,
    paged: bool,
    timezone: String,
}

pub async fn page(
    State(state): State<AppState>,
    reader: RequireDsl,
    Query(form): Query<LogQuery>,
) -> Result<Response, WebError> {
    let config = state.config();
    let now = crate::time::now_ms();
    let (rows, errors, status) = match form.search(&config, now) {
        Ok(search) => {
            let db = config.log.database.clone();
            let rows = state.blocking(move |_| crate::store::search::search(&db, &search)).await??;
            (rows, FieldErrors::default(), StatusCode::OK)
        }
        Err(errors) => (Vec::new(), errors, StatusCode::BAD_REQUEST),
    };
    let next = if rows.len() == PER_PAGE {
        rows.last().map(|row| row.id.to_string()).unwrap_or_default()
    } else {
        String::new()
    };
    let page = LogPage {
        layout: Layout::for_user("Query log", &reader, "/log"),
        window: form.window().to_string(),
        query_attr: form.query().replace('&', "&amp;"),
        paged: text(&form.before).is_some(),
        form,
        windows: WINDOWS,
        decisions: DECISIONS,
        groups: config.groups.keys().cloned().collect(),
        errors,
        rows: rows.into_iter().map(|row| Row::new(&config, row)).collect(),
        next,
        timezone: config.timezone_name.clone(),
    };
    Ok(render_with(status, &page))
}

/// `GET /api/log`: the page's search as JSON for scripts: the rows in the
/// fields of `hedgerow log search --format json`, and `next`, the `before`
/// of the following page (null on the last).
pub async fn api(
    State(state): State<AppState>,
    _reader: RequireDsl,
    Query(form): Query<LogQuery>,
) -> Result<axum::Json<serde_json::Value>, WebError> {
    let config = state.config();
    let search = form.search(&config, crate::time::now_ms()).map_err(|errors| errors.first())?;
    let db = config.log.database.clone();
    let rows = state.blocking(move |_| crate::store::search::search(&db, &search)).await??;
    let next = (rows.len() == PER_PAGE).then(|| rows.last().map(|row| row.id)).flatten();
    let rows: Vec<ExportRow> = rows.into_iter().map(ExportRow::from_row).collect();
    Ok(axum::Json(serde_json::json!({ "rows": rows, "next": next })))
}

pub async fn csv(
    State(state): State<AppState>,
    _reader: RequireDsl,
    Query(form): Query<LogQuery>,
) -> Result<Response, WebError> {
    let config = state.config();
    let mut search = form.search(&config, crate::time::now_ms()).map_err(|errors| errors.first())?;
    search.before_id = None;
    Ok(stream_csv(config.log.database.clone(), search, "hedgerow-log.csv"))
}

/// A CSV attachment of every row of `search` (its limit and paging
/// ignored), newest first, in the columns of `hedgerow log search --format
/// csv`, each cell safe to open in a spreadsheet.
pub fn stream_csv(db: std::path::PathBuf, mut search: Search, filename: &str) -> Response {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    search.limit = CSV_STEP;
    search.before_id = None;
    tokio::task::spawn_blocking(move || {
        let mut chunk = crate::present::log::csv_header();
        chunk.push_str("\r\n");
        if sender.blocking_send(Ok(Bytes::from(chunk))).is_err() {
            return;
        }
        let exported = crate::store::search::export(&db, &search, |rows| {
            let mut chunk = String::with_capacity(rows.len() * 160);
            for row in rows {
                chunk.push_str(&crate::present::log::csv_line_for_spreadsheet(row));
                chunk.push_str("\r\n");
            }
            // The reader went away (download cancelled): stop reading.
            sender.blocking_send(Ok(Bytes::from(chunk))).is_ok()
        });
        if let Err(error) = exported {
            tracing::warn!("a CSV export of the query log stopped: {error}");
            let _ = sender.blocking_send(Err(std::io::Error::other(error.to_string())));
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
        ],
        Body::from_stream(Chunks(receiver)),
    )
        .into_response()
}

/// The export's chunks as a body stream.
struct Chunks(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures_core::Stream for Chunks {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
