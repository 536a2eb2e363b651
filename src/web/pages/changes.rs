//! The change log (admin, dsl, governor): `GET /changes`, newest first, 50
//! a page, filtered by date (from and to, days in the school's time zone,
//! both inclusive), user, group and kind from a GET form; `GET
//! /changes.csv` the same selection as a CSV attachment (every row, not one
//! page); `GET /api/changes` as JSON. A `file-edit` row shows its diff.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{Layout, render_with, when};
use crate::config::Config;
use crate::store::changes::{Change, ChangeFilter};
use crate::web::{AppState, RequireAnyRole, WebError};

/// Rows on a page.
const PAGE: usize = 50;

/// Every kind a change may have, for the filter.
const KINDS: [&str; 15] = [
    "category",
    "safesearch",
    "youtube",
    "bypass",
    "block-answer",
    "override-add",
    "override-remove",
    "schedule-add",
    "schedule-remove",
    "file-edit",
    "lapse",
    "user",
    "list-source",
    "list-update",
    "sync",
];

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Filters {
    /// A day, `2026-11-30` (school time zone), inclusive.
    from: String,
    to: String,
    user: String,
    group: String,
    kind: String,
    page: Option<usize>,
    /// The API's paging.
    limit: Option<usize>,
    offset: Option<usize>,
}

/// The start of `day` in the school's time zone, as UTC ms.
fn day_start(config: &Config, day: &str, field: &'static str) -> Result<jiff::Timestamp, WebError> {
    let date: jiff::civil::Date =
        day.parse().map_err(|_| WebError::bad(field, format!("{day:?} is not a date; write it as 2026-11-30")))?;
    date.to_zoned(config.timezone.clone())
        .map(|zoned| zoned.timestamp())
        .map_err(|error| WebError::bad(field, format!("{day:?} cannot be used ({error})")))
}

impl Filters {
    fn filter(&self, config: &Config) -> Result<ChangeFilter, WebError> {
        let text = |value: &str| Some(value.trim().to_string()).filter(|value| !value.is_empty());
        let from_ms = match text(&self.from) {
            Some(day) => Some(day_start(config, &day, "from")?.as_millisecond()),
            None => None,
        };
        let to_ms = match text(&self.to) {
            Some(day) => {
                let date: jiff::civil::Date = day
                    .parse()
                    .map_err(|_| WebError::bad("to", format!("{day:?} is not a date; write it as 2026-11-30")))?;
                let next = date.tomorrow().map_err(|_| WebError::bad("to", "that date is too far ahead"))?;
                Some(day_start(config, &next.to_string(), "to")?.as_millisecond())
            }
            None => None,
        };
        if let (Some(from), Some(to)) = (from_ms, to_ms)
            && to <= from
        {
            return Err(WebError::bad("to", "the end date is before the start date"));
        }
        if let Some(kind) = text(&self.kind)
            && !KINDS.contains(&kind.as_str())
        {
            return Err(WebError::bad("kind", format!("{kind:?} is not a kind of change; choose one of the list")));
        }
        Ok(ChangeFilter {
            from_ms,
            to_ms,
            user: text(&self.user),
            group: text(&self.group),
            kind: text(&self.kind),
            limit: 0,
            offset: 0,
        })
    }

    /// The filters as a query string (for the pager links and the CSV link).
    fn query(&self) -> String {
        super::query_string(&[
            ("from", &self.from),
            ("to", &self.to),
            ("user", &self.user),
            ("group", &self.group),
            ("kind", &self.kind),
        ])
    }
}

struct Row {
    when: String,
    user: String,
    kind: String,
    group: String,
    subject: String,
    old: String,
    new: String,
    reason: String,
    /// A file edit: `new` is a diff, shown in a <pre>.
    diff: bool,
}

#[derive(Template)]
#[template(path = "changes.html")]
struct ChangesPage {
    layout: Layout,
    filters: Filters,
    groups: Vec<String>,
    kinds: [&'static str; 15],
    rows: Vec<Row>,
    total: u64,
    page: usize,
    pages: usize,
    query: String,
    field: &'static str,
    message: String,
    timezone: String,
}

pub async fn page(
    State(state): State<AppState>,
    reader: RequireAnyRole,
    Query(filters): Query<Filters>,
) -> Result<Response, WebError> {
    let config = state.config();
    let groups: Vec<String> = config.groups.keys().cloned().collect();
    let page_number = filters.page.unwrap_or(1).max(1);
    let (rows, total, field, message, status) = match filters.filter(&config) {
        Ok(filter) => {
            let log = state.changes().clone();
            let mut paged = filter.clone();
            paged.limit = PAGE;
            paged.offset = (page_number - 1) * PAGE;
            let (changes, total) = state
                .blocking(move |_| Ok::<_, crate::store::StoreError>((log.search(&paged)?, log.count(&filter)?)))
                .await??;
            let rows = changes
                .into_iter()
                .map(|change| Row {
                    when: when(&state, change.time_ms),
                    diff: change.kind == "file-edit" || change.kind == "sync",
                    user: change.user,
                    kind: change.kind,
                    group: change.group.unwrap_or_default(),
                    subject: change.subject,
                    old: change.old,
                    new: change.new,
                    reason: change.reason,
                })
                .collect();
            (rows, total, "", String::new(), StatusCode::OK)
        }
        Err(WebError::BadRequest { field, message }) => {
            (Vec::new(), 0, field.unwrap_or("from"), message, StatusCode::BAD_REQUEST)
        }
        Err(other) => return Err(other),
    };
    let pages = (total as usize).div_ceil(PAGE).max(1);
    let page = ChangesPage {
        layout: Layout::for_user("Change log", &reader, "/changes"),
        query: filters.query(),
        filters,
        groups,
        kinds: KINDS,
        rows,
        total,
        page: page_number,
        pages,
        field,
        message,
        timezone: config.timezone_name.clone(),
    };
    Ok(render_with(status, &page))
}

/// The most rows one export holds.
const CSV_LIMIT: usize = 1_000_000;

pub async fn csv(
    State(state): State<AppState>,
    _reader: RequireAnyRole,
    Query(filters): Query<Filters>,
) -> Result<Response, WebError> {
    let mut filter = filters.filter(&state.config())?;
    filter.limit = CSV_LIMIT;
    let log = state.changes().clone();
    let changes = state.blocking(move |_| log.search(&filter)).await??;
    let body = crate::present::changes::changes_csv(&changes);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"hedgerow-changes.csv\""),
        ],
        body,
    )
        .into_response())
}

#[derive(Serialize)]
pub struct ChangesJson {
    pub total: u64,
    pub changes: Vec<Change>,
}

pub async fn api_list(
    State(state): State<AppState>,
    _reader: RequireAnyRole,
    Query(filters): Query<Filters>,
) -> Result<axum::Json<ChangesJson>, WebError> {
    let filter = filters.filter(&state.config())?;
    let mut paged = filter.clone();
    paged.limit = filters.limit.unwrap_or(PAGE).clamp(1, 1000);
    paged.offset = filters.offset.unwrap_or(0);
    let log = state.changes().clone();
    let (changes, total) = state
        .blocking(move |_| Ok::<_, crate::store::StoreError>((log.search(&paged)?, log.count(&filter)?)))
        .await??;
    Ok(axum::Json(ChangesJson { total, changes }))
}
