//! The checks every request passes before any handler, and the headers on
//! every response.
//!
//! - Host: DNS rebinding points an outsider's name at the dashboard's
//!   address; the browser then sends that name as the Host. Only the
//!   configured `[dashboard] hosts`, the listen addresses (any IP address
//!   when listening on 0.0.0.0 or [::], since an IP literal cannot be
//!   rebound) are served; anything else gets 421.
//! - Origin: a state-changing request (any method but GET and HEAD) must
//!   come from a page of this dashboard: its Origin header, or its Referer
//!   when a browser sends no Origin, must be this origin. Neither: refused.
//! - Headers: a CSP without inline script or style, no framing, no
//!   referrer, no sniffing; pages are never cached (static files are, by
//!   their own handler).

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{AppState, WebError};

const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// Middleware: the security headers on every response.
pub(super) async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: no other site is ever sent a
    // referrer, but under `no-referrer` a browser sends `Origin: null` on
    // every form POST (Fetch standard), which `check_origin` must refuse.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The request's Host (header, else the URI's authority), lower case, with its port.
fn host_of(request: &Request) -> Option<String> {
    let host = match request.headers().get(header::HOST) {
        Some(value) => value.to_str().ok()?.to_string(),
        None => request.uri().authority()?.as_str().to_string(),
    };
    Some(host.trim().to_ascii_lowercase())
}

/// `host` without its port: `name:8080` -> `name`, `[::1]:8080` -> `::1`.
fn without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Whether the dashboard answers to `host` (as sent, port included).
pub(super) fn host_allowed(state: &AppState, host: &str) -> bool {
    let name = without_port(host).trim_end_matches('.');
    let settings = state.settings();
    if settings.hosts.iter().any(|allowed| allowed == name) {
        return true;
    }
    match name.parse::<IpAddr>() {
        Ok(ip) => settings.listen.iter().any(|listen| listen.ip() == ip || listen.ip().is_unspecified()),
        Err(_) => false,
    }
}

/// Middleware: 421 for a Host the dashboard does not answer to.
pub(super) async fn check_host(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match host_of(&request) {
        Some(host) if host_allowed(&state, &host) => next.run(request).await,
        host => WebError::WrongHost(format!(
            "this dashboard does not answer to the name {:?}. Use the address the ICT lead gave you; an admin can \
             add a name under [dashboard] hosts in the config",
            host.as_deref().map(without_port).unwrap_or("")
        ))
        .into_response(),
    }
}

/// Middleware: a state-changing request must come from this origin.
pub(super) async fn check_origin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() == Method::GET || request.method() == Method::HEAD {
        return next.run(request).await;
    }
    // Server to server, no cookie: signed with the shared key (web/sync.rs).
    if super::sync::is_signed_route(request.uri().path()) {
        return next.run(request).await;
    }
    if from_this_origin(&request, state.settings().tls) {
        return next.run(request).await;
    }
    WebError::Refused(
        "this request did not come from a page of this dashboard (its Origin does not match), so it was \
         refused. Go back to the dashboard and try again"
            .to_string(),
    )
    .into_response()
}

/// Whether the request's Origin (or, without one, its Referer) is this origin.
fn from_this_origin(request: &Request, tls: bool) -> bool {
    let scheme = if tls { "https" } else { "http" };
    let Some(own) = host_of(request).map(|host| format!("{scheme}://{host}")) else {
        return false;
    };
    let header_text = |name| request.headers().get(name).and_then(|value| value.to_str().ok());
    match (header_text(header::ORIGIN), header_text(header::REFERER)) {
        (Some(origin), _) => origin.eq_ignore_ascii_case(&own),
        (None, Some(referer)) => {
            referer.len() > own.len()
                && referer.is_char_boundary(own.len())
                && referer[..own.len()].eq_ignore_ascii_case(&own)
                && referer.as_bytes()[own.len()] == b'/'
        }
        (None, None) => false,
    }
}
#[cfg(test)]
mod tests {
    use super::without_port;

    #[test]
    fn ports_come_off_names_and_addresses() {
        assert_eq!(without_port("localhost:8080"), "localhost");
        assert_eq!(without_port("localhost"), "localhost");
        assert_eq!(without_port("[::1]:8080"), "::1");
        assert_eq!(without_port("[::1]"), "::1");
        assert_eq!(without_port("10.0.0.1:80"), "10.0.0.1");
    }
}
