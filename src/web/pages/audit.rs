//! `GET /audit` (admin): the login audit, newest first, a page at a time;
//! `GET /api/audit?page=N`: the same rows as JSON.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{Layout, render, when};
use crate::store::AuditEntry;
use crate::web::{AppState, RequireAdmin, WebError};

/// Rows on one page.
pub const PER_PAGE: usize = 50;

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PageQuery {
    page: Option<String>,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    layout: Layout,
    rows: Vec<Row>,
    total: u64,
    page: usize,
    pages: usize,
}

struct Row {
    when: String,
    event: &'static str,
    user: String,
    address: String,
}

/// The page asked for: a bad or missing number is page 1, never an error page.
fn page_number(query: &PageQuery) -> usize {
    query
        .page
        .as_deref()
        .and_then(|text| text.trim().parse::<usize>().ok())
        .filter(|page| *page >= 1)
        .unwrap_or(1)
        .min(1_000_000)
}

async fn rows(state: &AppState, page: usize) -> Result<(Vec<AuditEntry>, u64), WebError> {
    state
        .blocking(move |state| -> Result<_, WebError> {
            let total = state.audit().count()?;
            let rows = state.audit().list(PER_PAGE, (page - 1) * PER_PAGE)?;
            Ok((rows, total))
        })
        .await?
}

pub async fn page(
    State(state): State<AppState>,
    admin: RequireAdmin,
    Query(query): Query<PageQuery>,
) -> Result<Response, WebError> {
    let page = page_number(&query);
    let (entries, total) = rows(&state, page).await?;
    let page = AuditPage {
        layout: Layout::for_user("Login audit", &admin, "/audit"),
        rows: entries
            .into_iter()
            .map(|entry| Row {
                when: when(&state, entry.time_ms),
                event: entry.event.as_str(),
                user: entry.user_name,
                address: entry.address,
            })
            .collect(),
        total,
        page,
        pages: (total as usize).div_ceil(PER_PAGE).max(1),
    };
    Ok(render(&page)?.into_response())
}

pub async fn api_list(
    State(state): State<AppState>,
    _admin: RequireAdmin,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<serde_json::Value>, WebError> {
    let page = page_number(&query);
    let (entries, total) = rows(&state, page).await?;
    Ok(axum::Json(serde_json::json!({ "entries": entries, "total": total, "page": page, "per_page": PER_PAGE })))
}
