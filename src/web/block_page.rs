//! Hedgerow's own block page (`[block_page] listen`): what a pupil sees when
//! a group's block answer points the browser here. For the name in the Host
//! header it says whether that name is blocked for the asking device's
//! network, the category and why in plain words, and what to do.
//!
//! Its own small server, sharing nothing with the dashboard: no session, no
//! cookie, no login. It answers GET and HEAD, and one POST: the unblock
//! request form ([`REQUEST_PATH`], issue 15). It never redirects (so no open
//! redirect), limits each address to [`PAGES_PER_MINUTE`] pages a minute and
//! [`REQUESTS_PER_HOUR`] requests an hour, and serves only the school's
//! networks (the decision is made for the TCP peer's address, as a DNS
//! query from it would be).
//!
//! The request form, without a session or cookie: its hidden token is an
//! HMAC-SHA256, under a key made at start, over the peer's address, the name
//! and the minute it was issued, valid for [`TOKEN_MINUTES`] minutes; the POST
//! must also carry an Origin (or Referer) of the Host it was sent to, be
//! form-urlencoded and at most [`BODY_LIMIT`] bytes (413 beyond). The decision
//! is made again on POST for the peer and the Host's name: only a name
//! blocked for the peer's group, and not in a locked category, can be asked
//! for; nothing in the form says which group or category. HTTPS sites cannot show it: the browser reaches
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
use ring::hmac;

use crate::dns::decision::DecisionKind;
use crate::dns::pipeline::Pipeline;
use crate::dns::{Explanation, Flow, Question, Requester};
use crate::policy::category;
use crate::store::privacy::PrivacyRules;
use crate::store::settings::LogSettings;
use crate::store::unblock::{NewRequest, REASON_MAX, REQUESTER_MAX, Source, UnblockError, UnblockStore};

const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Where the unblock request form posts (a path no blocked site's page needs).
pub const REQUEST_PATH: &str = "/.hedgerow/request";
/// The largest request body read; beyond it, 413.
pub const BODY_LIMIT: usize = 4096;
/// Requests one address may send an hour (on top of the page limit), so a
/// pupil cannot flood the admin's list.
pub const REQUESTS_PER_HOUR: u32 = 10;
/// How long a form's token is good for.
pub const TOKEN_MINUTES: i64 = 120;

/// The page's own stylesheet, under a path no blocked site's page needs.
const STYLESHEET_PATH: &str = "/.hedgerow/block.css";
const STYLESHEET: &str = include_str!("../../web/static/block.css");

/// Pages one address may load: a burst of this many, refilled at this many a
/// minute. A browser asks once per blocked page; a flood gets 429.
const PAGES_PER_MINUTE: u32 = 60;

/// The server's state: the pipeline (for decisions), the per-address
/// limits, and where requests are kept.
#[derive(Clone)]
struct BlockPageState {
    pipeline: Arc<Pipeline>,
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    submits: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    requests: Option<Arc<Requests>>,
    /// The form tokens' key, made at start (a restart makes open forms stale).
    key: Arc<hmac::Key>,
}

/// Where unblock requests go: the store, and how the query log names a
/// client (a private group's pseudonym), so a request names it the same way.
pub struct Requests {
    store: UnblockStore,
    privacy: std::sync::Mutex<PrivacyRules>,
}

impl Requests {
    pub fn new(store: UnblockStore, settings: &LogSettings) -> Requests {
        Requests { store, privacy: std::sync::Mutex::new(PrivacyRules::new(settings)) }
    }

    /// `ip` as the query log names it for a device of `group` at `now_ms`.
    fn client_name(&self, ip: IpAddr, group: &str, now_ms: i64) -> Result<String, crate::store::StoreError> {
        let database = self.store.database();
        let conn = crate::store::schema::open(database, crate::store::schema::Purpose::Config)?;
        let mut privacy = self.privacy.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(privacy.client_name(&conn, database, ip, Some(group), now_ms)?.unwrap_or_else(|| ip.to_string()))
    }
}

/// The unblock request form on a block page.
struct RequestForm {
    action: &'static str,
    token: String,
    reason: String,
    requester: String,
    reason_error: String,
    requester_error: String,
    reason_max: usize,
    requester_max: usize,
}

/// What the page says about one name.
#[derive(Template)]
#[template(path = "block_page.html")]
struct BlockPage {
    name: String,
    verdict: Verdict,
    stylesheet: &'static str,
    /// The request form, when this name may be asked for here.
    form: Option<RequestForm>,
}

enum Verdict {
    /// Blocked: the category's name and description (none for a deny
    /// override), whether it is locked, and the decision in words; for a
    /// request, the group, the category's id and whether one may be made.
    Blocked {
        category: Option<(String, String)>,
        locked: bool,
        why: String,
        group: String,
        category_id: String,
        requestable: bool,
    },
    /// The request was stored.
    Sent,
    /// A request refused before it was read (a stale form, too many).
    Refused { title: &'static str, message: String },
    /// Not blocked for this network.
    NotBlocked,
    /// The asking device is on none of the school's networks.
    Outsider,
    /// The Host header names no valid domain.
    NoName,
}

/// Serves the block page on `listener` until the runtime stops; with
/// `requests`, blocked names offer the unblock request form.
pub async fn serve(
    listener: tokio::net::TcpListener,
    pipeline: Arc<Pipeline>,
    requests: Option<Arc<Requests>>,
) -> std::io::Result<()> {
    let quota = Quota::per_minute(std::num::NonZeroU32::new(PAGES_PER_MINUTE).expect("not zero"));
    let submit_quota = Quota::per_hour(std::num::NonZeroU32::new(REQUESTS_PER_HOUR).expect("not zero"));
    let key: [u8; 32] = rand::random();
    let state = BlockPageState {
        pipeline,
        limiter: Arc::new(RateLimiter::keyed(quota)),
        submits: Arc::new(RateLimiter::keyed(submit_quota)),
        requests,
        key: Arc::new(hmac::Key::new(hmac::HMAC_SHA256, &key)),
    };
    let app = Router::new().fallback(page).with_state(state);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
}

async fn page(
    State(state): State<BlockPageState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    let ip = peer.ip().to_canonical();
    let is_request = method == Method::POST && uri.path() == REQUEST_PATH;
    if method != Method::GET && method != Method::HEAD && !is_request {
        let mut response = (StatusCode::METHOD_NOT_ALLOWED, "The block page only shows pages.\n").into_response();
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return secured(response);
    }
    if state.limiter.check_key(&ip).is_err() {
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
            let verdict = verdict(&state.pipeline, ip, &name, state.requests.is_some());
            (name.trim_end_matches('.').to_string(), verdict)
        }
        None => (String::new(), Verdict::NoName),
    };
    if is_request {
        return submit(&state, ip, &headers, body, name, verdict).await;
    }
    let form = match &verdict {
        Verdict::Blocked { requestable: true, .. } => Some(RequestForm::new(token(&state.key, ip, &name, minute()))),
        _ => None,
    };
    show(StatusCode::OK, BlockPage { name, verdict, stylesheet: STYLESHEET_PATH, form })
}

/// The page, with the status its verdict calls for (`ok` for a page with no
/// status of its own: the sent page).
fn show(ok: StatusCode, page: BlockPage) -> Response {
    let status = match page.verdict {
        Verdict::Blocked { .. } => StatusCode::FORBIDDEN,
        Verdict::Outsider => StatusCode::FORBIDDEN,
        Verdict::NotBlocked | Verdict::Sent => ok,
        Verdict::Refused { .. } => ok,
        Verdict::NoName => StatusCode::BAD_REQUEST,
    };
    let status = if page.form.as_ref().is_some_and(RequestForm::has_errors) { StatusCode::BAD_REQUEST } else { status };
    let body = page.render().unwrap_or_else(|_| "This site is blocked by the school's filter.\n".to_string());
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    secured(response)
}

/// A plain page refusing a request: `title`, and what to do.
fn refused(status: StatusCode, name: String, title: &'static str, message: impl Into<String>) -> Response {
    let verdict = Verdict::Refused { title, message: message.into() };
    show(status, BlockPage { name, verdict, stylesheet: STYLESHEET_PATH, form: None })
}

impl RequestForm {
    fn new(token: String) -> RequestForm {
        RequestForm {
            action: REQUEST_PATH,
            token,
            reason: String::new(),
            requester: String::new(),
            reason_error: String::new(),
            requester_error: String::new(),
            reason_max: REASON_MAX,
            requester_max: REQUESTER_MAX,
        }
    }

    fn has_errors(&self) -> bool {
        !self.reason_error.is_empty() || !self.requester_error.is_empty()
    }
}

/// The current minute since the epoch (the tokens' clock).
fn minute() -> i64 {
    crate::time::now_ms().div_euclid(60_000)
}

/// The form token for `ip` asking about `name`, issued at `minute`: `<minute>.<hex HMAC>`.
fn token(key: &hmac::Key, ip: IpAddr, name: &str, minute: i64) -> String {
    let tag = hmac::sign(key, format!("{ip}|{name}|{minute}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{minute}.{hex}")
}

/// Whether `sent` is a token this server issued for `ip` and `name` in the last [`TOKEN_MINUTES`].
fn token_ok(key: &hmac::Key, ip: IpAddr, name: &str, sent: &str, now_minute: i64) -> bool {
    let Some((issued, hex)) = sent.split_once('.') else { return false };
    let Ok(issued) = issued.parse::<i64>() else { return false };
    if !(0..=TOKEN_MINUTES).contains(&(now_minute - issued)) || hex.len() != 64 {
        return false;
    }
    let bytes: Option<Vec<u8>> =
        (0..hex.len()).step_by(2).map(|at| hex.get(at..at + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect();
    bytes.is_some_and(|tag| hmac::verify(key, format!("{ip}|{name}|{issued}").as_bytes(), &tag).is_ok())
}

/// Whether the request came from a page of the Host it was sent to: its
/// Origin (or, without one, its Referer) is `http(s)://<Host>`.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|value| value.to_str().ok()) else { return false };
    let host = host.trim().to_ascii_lowercase();
    let matches = |origin: &str| {
        let origin = origin.trim().to_ascii_lowercase();
        origin == format!("http://{host}") || origin == format!("https://{host}")
    };
    if let Some(origin) = headers.get(header::ORIGIN) {
        return origin.to_str().is_ok_and(matches);
    }
    headers.get(header::REFERER).and_then(|value| value.to_str().ok()).is_some_and(|referer| {
        let after_scheme =
            referer.split_once("://").map(|(scheme, rest)| (scheme, rest.split('/').next().unwrap_or("")));
        after_scheme.is_some_and(|(scheme, authority)| matches(&format!("{scheme}://{authority}")))
    })
}

const STALE_FORM: &str = "This form is out of date or was not sent from this page, so nothing was sent. Reload the \
                          page and try again.";

/// `POST /.hedgerow/request`: checks the form came from this page, reads it,
/// decides again, and stores the request.
async fn submit(
    state: &BlockPageState,
    ip: IpAddr,
    headers: &HeaderMap,
    body: axum::body::Body,
    name: String,
    verdict: Verdict,
) -> Response {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !form_type {
        return refused(StatusCode::UNSUPPORTED_MEDIA_TYPE, name, "Not sent", "Send the form from the block page.");
    }
    let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                name,
                "Too long",
                format!("The request is too long; keep the reason to {REASON_MAX} characters."),
            );
        }
    };
    let field = |key: &str| super::session::form_field(&bytes, key).unwrap_or_default();
    let sent_token = field("token");
    if !same_origin(headers) || !token_ok(&state.key, ip, &name, &sent_token, minute()) {
        return refused(StatusCode::FORBIDDEN, name, "Please reload the page", STALE_FORM);
    }
    let (group, category_id, locked) = match &verdict {
        Verdict::Blocked { requestable: true, group, category_id, locked, .. } => {
            (group.clone(), category_id.clone(), *locked)
        }
        Verdict::Blocked { locked: true, .. } => {
            return refused(
                StatusCode::FORBIDDEN,
                name,
                "This site cannot be unblocked",
                "This category is always blocked, for everyone, because its content is illegal or dangerous. It \
                 cannot be unblocked, so no request was sent.",
            );
        }
        _ => {
            return refused(
                StatusCode::FORBIDDEN,
                name,
                "Nothing to ask for",
                "This site is not blocked for your network in a way that can be asked about here, so no request \
                 was sent.",
            );
        }
    };
    let Some(requests) = state.requests.clone() else {
        return refused(StatusCode::FORBIDDEN, name, "Nothing to ask for", "Requests are not taken here.");
    };
    let (reason, requester) = (field("reason"), field("requester"));
    let mut form = RequestForm::new(token(&state.key, ip, &name, minute()));
    form.reason = reason.clone();
    form.requester = requester.clone();
    if reason.trim().is_empty() {
        form.reason_error = "Say why you need this site.".to_string();
    } else if reason.trim().chars().count() > REASON_MAX {
        form.reason_error = format!("Keep the reason to {REASON_MAX} characters.");
    }
    if requester.trim().chars().count() > REQUESTER_MAX {
        form.requester_error = format!("Keep your name to {REQUESTER_MAX} characters.");
    }
    if form.has_errors() {
        return show(
            StatusCode::BAD_REQUEST,
            BlockPage { name, verdict, stylesheet: STYLESHEET_PATH, form: Some(form) },
        );
    }
    if state.submits.check_key(&ip).is_err() {
        let mut response = refused(
            StatusCode::TOO_MANY_REQUESTS,
            name,
            "Too many requests",
            format!(
                "This device has sent {REQUESTS_PER_HOUR} requests in the last hour. Wait a while, or ask your \
                 teacher."
            ),
        );
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("3600"));
        return response;
    }
    let stored_name = name.clone();
    let stored = tokio::task::spawn_blocking(move || -> Result<(), UnblockError> {
        let now = crate::time::now_ms();
        let client = requests.client_name(ip, &group, now)?;
        let request = NewRequest {
            name: stored_name,
            group,
            category: category_id,
            locked,
            reason,
            requester,
            source: Source::BlockPage,
            client,
        };
        requests.store.submit(&request, now).map(|_| ())
    })
    .await;
    match stored {
        Ok(Ok(())) => {
            show(StatusCode::OK, BlockPage { name, verdict: Verdict::Sent, stylesheet: STYLESHEET_PATH, form: None })
        }
        Ok(Err(UnblockError::Invalid { field, message })) => {
            if field == "requester" {
                form.requester_error = message;
            } else {
                form.reason_error = message;
            }
            show(StatusCode::BAD_REQUEST, BlockPage { name, verdict, stylesheet: STYLESHEET_PATH, form: Some(form) })
        }
        Ok(Err(error)) => {
            tracing::error!(%error, "an unblock request could not be stored");
            refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                name,
                "Not sent",
                "The request could not be saved. Try again later, or ask your teacher.",
            )
        }
        Err(error) => {
            tracing::error!(%error, "an unblock request task failed");
            refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                name,
                "Not sent",
                "The request could not be saved. Try again later.",
            )
        }
    }
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
/// `requests`: whether requests are taken (a blocked name not locked is then requestable).
fn verdict(pipeline: &Pipeline, ip: IpAddr, name: &str, requests: bool) -> Verdict {
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
            let locked = found.is_some_and(|c| c.locked);
            let group = decision.group.as_deref().unwrap_or_default().to_string();
            Verdict::Blocked {
                category: found.map(|c| (c.name.to_string(), c.description.to_string())),
                locked,
                why: Explanation::of(&decision).reason_text(),
                requestable: requests && decision.kind == DecisionKind::Blocked && !locked && !group.is_empty(),
                group,
                category_id: decision.category.as_deref().unwrap_or_default().to_string(),
            }
        }
        _ => Verdict::NotBlocked,
    }
}

/// The headers every answer carries: no framing, no sniffing, no referrer
/// beyond this page's own origin (a form's POST then carries its Origin),
/// not cached (a policy change shows at once).
fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
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

    #[test]
    fn a_token_is_good_for_its_address_name_and_two_hours() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"0123456789abcdef0123456789abcdef");
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let issued = token(&key, ip, "game.test", 1_000);
        assert!(token_ok(&key, ip, "game.test", &issued, 1_000));
        assert!(token_ok(&key, ip, "game.test", &issued, 1_000 + TOKEN_MINUTES));
        assert!(!token_ok(&key, ip, "game.test", &issued, 1_001 + TOKEN_MINUTES), "expired");
        assert!(!token_ok(&key, ip, "game.test", &issued, 999), "from the future");
        assert!(!token_ok(&key, "10.0.0.6".parse().unwrap(), "game.test", &issued, 1_000), "another address");
        assert!(!token_ok(&key, ip, "other.test", &issued, 1_000), "another name");
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"another key, another server start");
        assert!(!token_ok(&other, ip, "game.test", &issued, 1_000), "another start");
        assert!(!token_ok(&key, ip, "game.test", &issued.replace("1000.", "1001."), 1_001), "minute changed");
        assert!(!token_ok(&key, ip, "game.test", "", 1_000) && !token_ok(&key, ip, "game.test", "1000.zz", 1_000));
    }

    #[test]
    fn the_origin_or_referer_must_be_the_host() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (key, value) in pairs {
                map.insert(*key, HeaderValue::from_static(value));
            }
            map
        };
        assert!(same_origin(&headers(&[("host", "game.test:8081"), ("origin", "http://game.test:8081")])));
        assert!(!same_origin(&headers(&[("host", "game.test:8081"), ("origin", "http://evil.test:8081")])));
        assert!(!same_origin(&headers(&[("host", "game.test"), ("origin", "null")])));
        assert!(same_origin(&headers(&[("host", "game.test"), ("referer", "http://game.test/a/b")])));
        assert!(!same_origin(&headers(&[("host", "game.test"), ("referer", "http://game.test.evil/a")])));
        assert!(!same_origin(&headers(&[("host", "game.test")])), "neither");
    }
}
