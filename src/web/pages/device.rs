//! The device page (admin, dsl): `GET /device/{client}`, a device by its
//! name, else by its client text (an address, or a private group's token):
//! its name, owner, groups and the addresses it was seen with; its blocked
//! lookups by category over the last 14 days (per day, with bars); its
//! recent lookups (linking to the explorer); and `GET
//! /device/{client}.csv?from=..&to=..` its lookups over a date range as CSV,
//! streamed like `/log.csv`.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::encode;
use super::explorer::{Row, school_time, stream_csv};
use super::{Layout, render_with};
use crate::store::device_history::{self, DayCount, Seen};
use crate::store::search::Search;
use crate::store::time::DAY_MS;
use crate::web::{AppState, RequireDsl, WebError};

/// Days of blocked lookups shown.
const DAYS: i64 = 14;

/// Recent lookups shown.
const RECENT: usize = 20;

/// The widest bar, in pixels.
const BAR_MAX: u64 = 160;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Report {
    /// Days, `2026-11-30`, school time, both included.
    from: String,
    to: String,
}

struct Bar {
    day: String,
    category: String,
    count: u64,
    width: u64,
}

#[derive(Template)]
#[template(path = "device.html")]
struct DevicePage {
    layout: Layout,
    label: String,
    /// `label`, percent-encoded for links.
    href: String,
    name: String,
    /// The device has a name in the log (else `name` is the label).
    named: bool,
    owner: String,
    groups: String,
    seen: Vec<Seen>,
    bars: Vec<Bar>,
    blocked_total: u64,
    recent: Vec<Row>,
    report: Report,
    timezone: String,
}

pub async fn page(
    State(state): State<AppState>,
    reader: RequireDsl,
    Path(client): Path<String>,
    Query(report): Query<Report>,
) -> Result<Response, WebError> {
    if let Some(label) = client.strip_suffix(".csv") {
        return csv(state, label.to_string(), report).await;
    }
    let config = state.config();
    let label = client.trim().to_string();
    let db = config.log.database.clone();
    let now = crate::time::now_ms();
    let zone = config.timezone.clone();
    let day_of = move |ms: i64| {
        jiff::Timestamp::from_millisecond(ms)
            .map(|t| t.to_zoned(zone.clone()).date().to_string())
            .unwrap_or_else(|_| device_history::utc_day(ms))
    };
    let today = day_of(now);
    let from_ms = school_time(&config, &today, false).unwrap_or(now) - (DAYS - 1) * DAY_MS;
    let search = Search { client: Some(label.clone()), limit: RECENT, ..Search::default() };
    let lookup = label.clone();
    let (seen, counts, rows) = state
        .blocking(move |_| -> Result<_, crate::store::StoreError> {
            let seen = device_history::seen(&db, &lookup)?;
            if seen.is_empty() {
                return Ok((seen, Vec::new(), Vec::new()));
            }
            let ids: Vec<u32> = seen.iter().map(|seen| seen.id).collect();
            let counts: Vec<DayCount> = device_history::blocked_by_day(&db, &ids, from_ms, now + 1, &day_of)?;
            let rows = crate::store::search::search(&db, &search)?;
            Ok((seen, counts, rows))
        })
        .await??;
    let status = if seen.is_empty() { StatusCode::NOT_FOUND } else { StatusCode::OK };
    let distinct = |values: Vec<Option<String>>| {
        let mut values: Vec<String> = values.into_iter().flatten().collect();
        values.sort();
        values.dedup();
        values.join(", ")
    };
    let name = distinct(seen.iter().map(|seen| seen.device.clone()).collect());
    let owner = distinct(seen.iter().map(|seen| seen.owner.clone()).collect());
    let groups = distinct(seen.iter().map(|seen| seen.group.clone()).collect());
    let most = counts.iter().map(|count| count.count).max().unwrap_or(1).max(1);
    let blocked_total = counts.iter().map(|count| count.count).sum();
    let bars = counts
        .into_iter()
        .rev()
        .map(|count| Bar {
            width: (count.count * BAR_MAX).div_ceil(most).max(2),
            day: count.day,
            category: if count.category.is_empty() { "(none)".to_string() } else { count.category },
            count: count.count,
        })
        .collect();
    let page = DevicePage {
        layout: Layout::for_user(&format!("Device {label}"), &reader, "/device"),
        href: encode(&label),
        named: !name.is_empty(),
        name: if name.is_empty() { label.clone() } else { name },
        label,
        owner,
        groups,
        seen,
        bars,
        blocked_total,
        recent: rows.into_iter().map(|row| Row::new(&config, row)).collect(),
        report,
        timezone: config.timezone_name.clone(),
    };
    Ok(render_with(status, &page))
}

/// `/device/{client}.csv?from=..&to=..`: the device's lookups over the days
/// given (the last 30 days when none), newest first.
async fn csv(state: AppState, label: String, report: Report) -> Result<Response, WebError> {
    let config = state.config();
    let now = crate::time::now_ms();
    let since_ms = match report.from.trim() {
        "" => now - 30 * DAY_MS,
        day => school_time(&config, day, false).map_err(|message| WebError::bad("from", message))?,
    };
    let until_ms = match report.to.trim() {
        "" => now + 1,
        day => school_time(&config, day, true).map_err(|message| WebError::bad("to", message))?,
    };
    if until_ms <= since_ms {
        return Err(WebError::bad("to", "the end date is before the start date"));
    }
    let label = label.trim().to_string();
    if label.is_empty() {
        return Err(WebError::NotFound);
    }
    let filename: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .collect();
    let search =
        Search { client: Some(label), since_ms: Some(since_ms), until_ms: Some(until_ms), ..Search::default() };
    Ok(stream_csv(config.log.database.clone(), search, &format!("hedgerow-device-{filename}.csv")))
}
