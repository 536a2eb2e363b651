//! For the monitoring a school's IT provider runs, with no login:
//! `/health` (liveness: the process answers) and `/ready` (DNS answering on
//! its own listener, lists loaded, database writable) on the dashboard and
//! on the metrics listener; `/metrics` (Prometheus text format) on the
//! metrics listener alone, behind its optional bearer token.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::dns::Pipeline;
use crate::web::AppState;

/// What the metrics listener serves from.
#[derive(Clone)]
pub struct Monitor {
    pub pipeline: Arc<Pipeline>,
    /// The database readiness checks is writable (`None`: the server writes none).
    pub database: Option<PathBuf>,
    /// A scrape must send `Authorization: Bearer <token>` when set.
    pub token: Option<Arc<str>>,
}

/// `/health`: 200 "ok" while the process answers HTTP.
pub async fn health() -> Response {
    plain(StatusCode::OK, "ok\n".to_string())
}

/// `/ready` on the dashboard.
pub async fn dashboard_ready(State(state): State<AppState>) -> Response {
    ready_response(state.pipeline(), Some(state.database())).await
}

/// 200 "ready" and each check, or 503 with the reasons first.
async fn ready_response(pipeline: &Pipeline, database: Option<&std::path::Path>) -> Response {
    let readiness = crate::dns::ready::check(pipeline, database).await;
    let mut body = if readiness.ready { "ready\n".to_string() } else { format!("not ready\n{}", readiness.reasons()) };
    body.push('\n');
    for check in &readiness.checks {
        body.push_str(&format!("{} {}: {}\n", check.name, if check.ok { "ok" } else { "FAILED" }, check.detail));
    }
    let status = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    plain(status, body)
}

fn plain(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The metrics listener's routes.
pub fn app(monitor: Monitor) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .fallback(|| async { plain(StatusCode::NOT_FOUND, "not found: try /metrics, /health or /ready\n".into()) })
        .with_state(monitor)
}

async fn ready(State(monitor): State<Monitor>) -> Response {
    ready_response(&monitor.pipeline, monitor.database.as_deref()).await
}

async fn metrics(State(monitor): State<Monitor>, headers: HeaderMap) -> Response {
    if let Some(token) = &monitor.token
        && !bearer_matches(&headers, token)
    {
        let mut response =
            plain(StatusCode::UNAUTHORIZED, "a bearer token is required ([metrics] bearer_token)\n".into());
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"hedgerow\""));
        return response;
    }
    let snapshot = monitor.pipeline.metrics().snapshot();
    let mut response = plain(StatusCode::OK, crate::present::metrics::prometheus(&snapshot));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::present::metrics::CONTENT_TYPE));
    response
}

/// `Authorization: Bearer <token>`, compared in time independent of where
/// they differ.
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()) else {
        return false;
    };
    let Some((scheme, given)) = given.trim().split_once(' ') else {
        return false;
    };
    let (given, token) = (given.trim().as_bytes(), token.as_bytes());
    scheme.eq_ignore_ascii_case("bearer")
        && given.len() == token.len()
        && given.iter().zip(token).fold(0u8, |differ, (a, b)| differ | (a ^ b)) == 0
}

/// Serves the metrics listener until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, monitor: Monitor) -> std::io::Result<()> {
    axum::serve(listener, app(monitor)).await
}
