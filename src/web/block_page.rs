//! Hedgerow's own block page (`[block_page] listen`): what a pupil sees when
//! a group's block answer points the browser here. For the name in the Host
//! header it says whether that name is blocked for the asking device's
//! network, the category and why in plain words, and what to do.
//!
//! Its own small server, sharing nothing with the dashboard: no session, no
//! cookie, no login. It answers GET and HEAD only, never redirects (so no
//! open redirect), reads no request body, limits each address to
//! [`PAGES_PER_MINUTE`] pages a minute, and serves only the school's
//! networks (the decision is made for the TCP peer's address, as a DNS
//! query from it would be). HTTPS sites cannot show it: the browser reaches
//! the block page's address but gets no certificate for the blocked name, and
//! shows a certificate warning; the DNS answer still blocks.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hickory_proto::rr::{LowerName, Name, RecordType};

use crate::dns::decision::DecisionKind;
use crate::dns::pipeline::Pipeline;
use crate::dns::{Explanation, Flow, Question, Requester};
use crate::policy::category;

const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The page's own stylesheet, under a path no blocked site's page needs.
const STYLESHEET_PATH: &str = "/.hedgerow/block.css";
const STYLESHEET: &str = include_str!("../../web/static/block.css");

/// Pages one address may load: a burst of this many, refilled at this many a
/// minute. A browser asks once per blocked page; a flood gets 429.
const PAGES_PER_MINUTE: u32 = 60;

/// The server's state: the pipeline (for decisions) and the per-address limit.
#[derive(Clone)]
struct BlockPageState {
    pipeline: Arc<Pipeline>,
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

/// What the page says about one name.
#[derive(Template)]
#[template(path = "block_page.html")]
struct BlockPage {
    name: String,
    verdict: Verdict,
    stylesheet: &'static str,
}

enum Verdict {
    /// Blocked: the category's name and description (none for a deny
    /// override), whether it is locked, and the decision in words.
    Blocked { category: Option<(String, String)>, locked: bool, why: String },
    /// Not blocked for this network.
    NotBlocked,
    /// The asking device is on none of the school's networks.
    Outsider,
    /// The Host header names no valid domain.
    NoName,
}

/// Serves the block page on `listener` until the runtime stops.
pub async fn serve(listener: tokio::net::TcpListener, pipeline: Arc<Pipeline>) -> std::io::Result<()> {
    let quota = Quota::per_minute(std::num::NonZeroU32::new(PAGES_PER_MINUTE).expect("not zero"));
    let state = BlockPageState { pipeline, limiter: Arc::new(RateLimiter::keyed(quota)) };
    let app = Router::new().fallback(page).with_state(state);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
}

async fn page(
    State(state): State<BlockPageState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        let mut response = (StatusCode::METHOD_NOT_ALLOWED, "The block page only shows pages.\n").into_response();
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return secured(response);
    }
    if state.limiter.check_key(&peer.ip().to_canonical()).is_err() {
        let mut response =
            (StatusCode::TOO_MANY_REQUESTS, "Too many pages from this device; wait a minute.\n").into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return secured(response);
    }
    if uri.path() == STYLESHEET_PATH {
        let mut response = STYLESHEET.into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
        return secured(response);
    }
    let host = headers.get(header::HOST).and_then(|value| value.to_str().ok()).map(host_name);
    let (name, verdict) = match host.as_deref().and_then(valid_name) {
        Some(name) => {
            let verdict = verdict(&state.pipeline, peer.ip().to_canonical(), &name);
            (name.trim_end_matches('.').to_string(), verdict)
        }
        None => (String::new(), Verdict::NoName),
    };
    let status = match verdict {
        Verdict::Blocked { .. } => StatusCode::FORBIDDEN,
        Verdict::Outsider => StatusCode::FORBIDDEN,
        Verdict::NotBlocked => StatusCode::OK,
        Verdict::NoName => StatusCode::BAD_REQUEST,
    };
    let page = BlockPage { name, verdict, stylesheet: STYLESHEET_PATH };
    let body = page.render().unwrap_or_else(|_| "This site is blocked by the school's filter.\n".to_string());
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    secured(response)
}

/// The Host header without its port, lower case.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let without_port = match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    without_port.to_ascii_lowercase()
}

/// `host` as a fully qualified DNS name, if it is one (not an address).
fn valid_name(host: &str) -> Option<String> {
    if host.is_empty() || host.len() > 253 || host.parse::<IpAddr>().is_ok() || host.starts_with('[') {
        return None;
    }
    let name = format!("{}.", host.trim_end_matches('.'));
    Name::from_utf8(&name).ok().map(|_| name)
}

/// What the policy in force says of `name` for a device at `ip`: the same
/// decision a DNS query from it would get (nothing is sent upstream).
fn verdict(pipeline: &Pipeline, ip: IpAddr, name: &str) -> Verdict {
    let Ok(parsed) = Name::from_utf8(name) else { return Verdict::NoName };
    let question = Question { name: LowerName::from(parsed), record_type: RecordType::A, dnssec_ok: false };
    let decision = match pipeline.decide(Requester::Source(ip), &question, false) {
        Flow::Final(answer) => answer.decision.clone(),
        Flow::Resolve(pending) => pending.policy_decision(),
    };
    match decision.kind {
        DecisionKind::Refused => Verdict::Outsider,
        DecisionKind::Blocked | DecisionKind::Bypass => {
            let found = decision.category.as_deref().and_then(category::index_of).and_then(category::by_index);
            Verdict::Blocked {
                category: found.map(|c| (c.name.to_string(), c.description.to_string())),
                locked: found.is_some_and(|c| c.locked),
                why: Explanation::of(&decision).reason_text(),
            }
        }
        _ => Verdict::NotBlocked,
    }
}

/// The headers every answer carries: no framing, no sniffing, no referrer,
/// not cached (a policy change shows at once).
fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_header_gives_a_name_or_nothing() {
        assert_eq!(host_name("Games.Example:8081"), "games.example");
        assert_eq!(valid_name(&host_name("games.example")), Some("games.example.".to_string()));
        assert_eq!(valid_name(&host_name("127.0.0.1:8081")), None);
        assert_eq!(valid_name(&host_name("[::1]:8081")), None);
        assert_eq!(valid_name(""), None);
        assert_eq!(valid_name("bad name.example"), None);
    }
}
