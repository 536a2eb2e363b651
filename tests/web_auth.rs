//! The dashboard's foundation at router level (`web::app(state)` driven with
//! `oneshot`, real SQLite files in a tempdir): who is let in, what each
//! role may reach, the CSRF, Origin and Host checks, login throttling,
//! session renewal and timeouts, the one-time setup link and the security
//! headers. One test runs the real `hedgerow serve` and fetches `/login`
//! over TCP.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use hedgerow::config::Config;
use hedgerow::dns::Pipeline;
use hedgerow::lists::compiled::CompiledLists;
use hedgerow::policy::SafeSearchMap;
use hedgerow::store::{AuditEvent, Role};
use hedgerow::web::{self, AppState};
use http_body_util::BodyExt;
use tower::ServiceExt;

const PASSWORD: &str = "correct horse battery";

struct Dashboard {
    _dir: tempfile::TempDir,
    state: AppState,
    database: PathBuf,
}

fn dashboard() -> Dashboard {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config: Config = support::config::forwarding(
        "127.0.0.1:9".parse().unwrap(),
        &data,
        &dir.path().join("lists"),
        "[[networks]]\nname = \"pupils\"\ncidrs = [\"127.0.0.1/32\"]\ngroup = \"pupil\"\n",
        "web test",
    );
    let mut config = config;
    // As a school would write it: the default port and one name.
    config.dashboard = hedgerow::config::DashboardSettings::default();
    let pipeline = Arc::new(Pipeline::new(&config, CompiledLists::empty(), SafeSearchMap::default(), None).unwrap());
    let state = AppState::new(pipeline, &config).unwrap();
    Dashboard { database: config.log.database.clone(), state, _dir: dir }
}

impl Dashboard {
    fn app(&self) -> Router {
        web::app(self.state.clone())
    }

    fn add(&self, name: &str, roles: &[Role]) {
        self.state.users().add(name, PASSWORD, roles, hedgerow::time::now_ms()).unwrap();
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.app().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
    }

    /// Logs in from `address`; the session cookie (`name=value`) on success.
    async fn login_from(&self, name: &str, password: &str, address: &str) -> Reply {
        let body = format!("name={name}&password={}&next=/", password.replace(' ', "+"));
        self.send(post("/login", None, &body).from(address).build()).await
    }

    async fn login(&self, name: &str) -> String {
        let reply = self.login_from(name, PASSWORD, "10.0.0.1").await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        reply.cookie().expect("a session cookie")
    }

    /// The CSRF token of the session `cookie`.
    async fn csrf(&self, cookie: &str) -> String {
        let reply = self.send(get("/api/me", Some(cookie)).build()).await;
        let me: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        me["csrf_token"].as_str().unwrap().to_string()
    }

    fn audit_events(&self) -> Vec<(AuditEvent, String, String)> {
        let entries = self.state.audit().list(1000, 0).unwrap();
        entries.into_iter().map(|entry| (entry.event, entry.user_name, entry.address)).collect()
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn location(&self) -> &str {
        self.headers.get(header::LOCATION).map(|value| value.to_str().unwrap()).unwrap_or("")
    }

    fn cookie(&self) -> Option<String> {
        let set = self.headers.get(header::SET_COOKIE)?.to_str().unwrap();
        let pair = set.split(';').next()?.to_string();
        (!pair.ends_with('=')).then_some(pair)
    }
}

/// A request as a browser on the dashboard's own page sends it.
struct Builder {
    request: Request<Body>,
}

fn request(method: &str, path: &str, cookie: Option<&str>, body: Body) -> Builder {
    let mut builder = Request::builder().method(method).uri(path).header(header::HOST, "localhost:8080");
    if method != "GET" {
        builder = builder.header(header::ORIGIN, "http://localhost:8080");
    }
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, cookie);
    }
    let mut builder = Builder { request: builder.body(body).unwrap() };
    builder = builder.from("10.0.0.1");
    builder
}

fn get(path: &str, cookie: Option<&str>) -> Builder {
    request("GET", path, cookie, Body::empty())
}

fn post(path: &str, cookie: Option<&str>, form: &str) -> Builder {
    let mut builder = request("POST", path, cookie, Body::from(form.to_string()));
    builder.request.headers_mut().insert(header::CONTENT_TYPE, "application/x-www-form-urlencoded".parse().unwrap());
    builder
}

impl Builder {
    fn from(mut self, address: &str) -> Builder {
        let address: SocketAddr = format!("{address}:40000").parse().unwrap();
        self.request.extensions_mut().insert(ConnectInfo(address));
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Builder {
        self.request.headers_mut().insert(name, value.parse().unwrap());
        self
    }

    fn without(mut self, name: header::HeaderName) -> Builder {
        self.request.headers_mut().remove(name);
        self
    }

    fn build(self) -> Request<Body> {
        self.request
    }
}

#[tokio::test]
async fn logged_out_visitors_are_sent_to_login_and_the_api_answers_401() {
    let dashboard = dashboard();
    for path in ["/", "/users", "/audit?page=2"] {
        let reply = dashboard.send(get(path, None).build()).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{path}");
        assert!(reply.location().starts_with("/login?next=/"), "{path}: {}", reply.location());
    }
    for path in ["/api/me", "/api/users", "/api/audit"] {
        let reply = dashboard.send(get(path, None).build()).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}");
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert!(body["error"].as_str().unwrap().contains("log in"), "{}", reply.body);
    }
    let login = dashboard.send(get("/login?next=/users", None).build()).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.body.contains("name=\"next\" value=\"/users\""), "{}", login.body);
    // A stale or forged cookie is no session.
    let reply = dashboard.send(get("/", Some("hedgerow_session=forged")).build()).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_fresh_database_has_no_default_password() {
    let dashboard = dashboard();
    for (name, password) in [("admin", "admin"), ("admin", "password"), ("hedgerow", "hedgerow"), ("root", "")] {
        let reply = dashboard.login_from(name, password, "10.0.0.7").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{name}/{password}");
        assert_eq!(reply.cookie(), None);
    }
    assert!(dashboard.state.users().list().unwrap().is_empty());
}

#[tokio::test]
async fn login_renews_the_session_id_and_logout_ends_it() {
    let dashboard = dashboard();
    dashboard.add("ann", &[Role::Admin]);
    let first = dashboard.login("ann").await;
    assert_eq!(dashboard.send(get("/", Some(&first)).build()).await.status, StatusCode::OK);

    // Logging in again with the old cookie gives a new id; the old session is gone.
    let reply = dashboard
        .send(post("/login", Some(&first), &format!("name=ann&password={}", PASSWORD.replace(' ', "+"))).build())
        .await;
    let second = reply.cookie().unwrap();
    assert_ne!(first, second);
    assert_eq!(dashboard.send(get("/", Some(&first)).build()).await.status, StatusCode::SEE_OTHER);
    let home = dashboard.send(get("/", Some(&second)).build()).await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.body.contains("Hello, ann"), "{}", home.body);
    let set_cookie = reply.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict") && set_cookie.contains("Path=/"));

    let csrf = dashboard.csrf(&second).await;
    let out = dashboard.send(post("/logout", Some(&second), &format!("csrf={csrf}")).build()).await;
    assert_eq!((out.status, out.location()), (StatusCode::SEE_OTHER, "/login"));
    assert_eq!(dashboard.send(get("/", Some(&second)).build()).await.status, StatusCode::SEE_OTHER);
    let events: Vec<AuditEvent> = dashboard.audit_events().into_iter().map(|row| row.0).collect();
    assert_eq!(events, vec![AuditEvent::Logout, AuditEvent::Login, AuditEvent::Login], "newest first");
}

#[tokio::test]
async fn governors_and_dsls_are_refused_the_admin_pages_and_api() {
    let dashboard = dashboard();
    dashboard.add("ann", &[Role::Admin]);
    dashboard.add("gill", &[Role::Governor]);
    dashboard.add("dee", &[Role::Dsl]);
    let admin = dashboard.login("ann").await;
    for (name, cookie) in [("gill", dashboard.login("gill").await), ("dee", dashboard.login("dee").await)] {
        for path in ["/users", "/audit", "/api/users", "/api/audit"] {
            let reply = dashboard.send(get(path, Some(&cookie)).build()).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{name} {path}");
        }
        let csrf = dashboard.csrf(&cookie).await;
        let add = format!("csrf={csrf}&name=mallory&password=long+enough+pass&role_admin=on");
        assert_eq!(dashboard.send(post("/users", Some(&cookie), &add).build()).await.status, StatusCode::FORBIDDEN);
        let change = format!("csrf={csrf}&role_admin=on");
        let reply = dashboard.send(post(&format!("/users/{name}/roles"), Some(&cookie), &change).build()).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{name} cannot make themself admin");
        let api = request(
            "POST",
            "/api/users",
            Some(&cookie),
            Body::from(r#"{"name":"m","password":"long enough pass","roles":["admin"]}"#),
        )
        .header("content-type", "application/json")
        .header("x-csrf-token", &csrf)
        .build();
        let reply = dashboard.send(api).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert!(reply.body.starts_with('{'), "JSON under /api/: {}", reply.body);
        // Home works, and its nav offers nothing they cannot use.
        let home = dashboard.send(get("/", Some(&cookie)).build()).await;
        assert_eq!(home.status, StatusCode::OK);
        assert!(!home.body.contains("href=\"/users\"") && !home.body.contains("href=\"/audit\""), "{}", home.body);
    }
    assert!(dashboard.state.users().get("mallory").unwrap().is_none());
    assert!(dashboard.state.users().get("m").unwrap().is_none());
    assert_eq!(dashboard.state.users().get("gill").unwrap().unwrap().roles, vec![Role::Governor]);
    for path in ["/users", "/audit", "/api/users", "/api/audit"] {
        assert_eq!(dashboard.send(get(path, Some(&admin)).build()).await.status, StatusCode::OK, "{path}");
    }
    let home = dashboard.send(get("/", Some(&admin)).build()).await;
    assert!(home.body.contains("href=\"/users\"") && home.body.contains("href=\"/audit\""));
}

#[tokio::test]
async fn a_change_without_the_right_csrf_token_is_refused_and_changes_nothing() {
    let dashboard = dashboard();
    dashboard.add("ann", &[Role::Admin]);
    let cookie = dashboard.login("ann").await;
    let csrf = dashboard.csrf(&cookie).await;
    let form = "name=bob&password=long+enough+pass&role_dsl=on&reason=new+teacher";
    for sent in [form.to_string(), format!("csrf=wrong{csrf}&{form}"), format!("csrf=&{form}")] {
        let reply = dashboard.send(post("/users", Some(&cookie), &sent).build()).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{sent}");
        assert!(reply.body.contains("security token"), "{}", reply.body);
    }
    let api = |token: &str| {
        request(
            "POST",
            "/api/users",
            Some(&cookie),
            Body::from(r#"{"name":"bob","password":"long enough pass","roles":["dsl"],"reason":"new teacher"}"#),
        )
        .header("content-type", "application/json")
        .header("x-csrf-token", token)
        .build()
    };
    assert_eq!(dashboard.send(api("nope")).await.status, StatusCode::FORBIDDEN);
    // Logout is a change too.
    assert_eq!(dashboard.send(post("/logout", Some(&cookie), "").build()).await.status, StatusCode::FORBIDDEN);
    assert!(dashboard.state.users().get("bob").unwrap().is_none());
    assert_eq!(dashboard.send(get("/", Some(&cookie)).build()).await.status, StatusCode::OK, "still logged in");

    // With the token, the same requests work.
    let reply = dashboard.send(post("/users", Some(&cookie), &format!("csrf={csrf}&{form}")).build()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body.contains("Added bob."));
    let created = dashboard.send(api(&csrf)).await;
    assert_eq!(created.status, StatusCode::BAD_REQUEST, "bob exists: {}", created.body);
    let body: serde_json::Value = serde_json::from_str(&created.body).unwrap();
    assert_eq!(body["field"], "name");
}

#[tokio::test]
async fn a_request_from_another_origin_is_refused() {
    let dashboard = dashboard();
    dashboard.add("ann", &[Role::Admin]);
    let cookie = dashboard.login("ann").await;
    let csrf = dashboard.csrf(&cookie).await;
    let form = format!("csrf={csrf}&name=eve&password=long+enough+pass&role_admin=on&reason=new+ict+technician");
    let foreign = post("/users", Some(&cookie), &form).header("origin", "http://evil.example").build();
    assert_eq!(dashboard.send(foreign).await.status, StatusCode::FORBIDDEN);
    let other_port = post("/users", Some(&cookie), &form).header("origin", "http://localhost:9999").build();
    assert_eq!(dashboard.send(other_port).await.status, StatusCode::FORBIDDEN);
    let neither = post("/users", Some(&cookie), &form).without(header::ORIGIN).build();
    assert_eq!(dashboard.send(neither).await.status, StatusCode::FORBIDDEN);
    let login = post("/login", None, "name=ann&password=x").header("origin", "http://evil.example").build();
    assert_eq!(dashboard.send(login).await.status, StatusCode::FORBIDDEN);
    assert!(dashboard.state.users().get("eve").unwrap().is_none());
    // A same-origin Referer stands in for a missing Origin.
    let referred = post("/users", Some(&cookie), &form)
        .without(header::ORIGIN)
        .header("referer", "http://localhost:8080/users")
        .build();
    assert_eq!(dashboard.send(referred).await.status, StatusCode::OK);
    assert!(dashboard.state.users().get("eve").unwrap().is_some());
}

#[tokio::test]
async fn a_host_the_dashboard_is_not_configured_for_gets_421() {
    let dashboard = dashboard();
    for host in ["evil.example", "evil.example:8080", "localhost.evil.example"] {
        let reply = dashboard.send(get("/login", None).header("host", host).build()).await;
        assert_eq!(reply.status, StatusCode::MISDIRECTED_REQUEST, "{host}");
        assert!(reply.body.contains("[dashboard] hosts"), "{}", reply.body);
    }
    for host in ["localhost", "LOCALHOST:8080", "127.0.0.1:8080"] {
        let reply = dashboard.send(get("/login", None).header("host", host).build()).await;
        assert_eq!(reply.status, StatusCode::OK, "{host}");
    }
}

#[tokio::test]
async fn five_bad_passwords_lock_the_account_even_for_the_right_password() {
    let dashboard = dashboard();
    dashboard.add("ann", &[Role::Admin]);
    dashboard.add("bob", &[Role::Dsl]);
    for attempt in 0..5 {
        let reply = dashboard.login_from("ann", "wrong password!", &format!("10.0.1.{attempt}")).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    let refused = dashboard.login_from("ann", PASSWORD, "10.0.2.1").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.cookie(), None);
    assert!(refused.body.contains("too many failed logins"), "{}", refused.body);
    // Another account from a fresh address is not affected.
    assert_eq!(dashboard.login_from("bob", PASSWORD, "10.0.2.2").await.status, StatusCode::SEE_OTHER);
    let lockouts: Vec<_> = dashboard.audit_events().into_iter().filter(|row| row.0 == AuditEvent::Lockout).collect();
    assert_eq!(lockouts.len(), 1, "{lockouts:?}");
    assert_eq!(lockouts[0].1, "ann");
    let failures = dashboard.audit_events().into_iter().filter(|row| row.0 == AuditEvent::Failure).count();
    assert_eq!(failures, 5);

    // Per address too: five failures from one address, across names, lock that address.
    for name in ["x1", "x2", "x3", "x4", "x5"] {
        dashboard.login_from(name, "nothing at all", "10.9.9.9").await;
    }
    assert_eq!(dashboard.login_from("bob", PASSWORD, "10.9.9.9").await.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn an_idle_or_old_session_ends() {
    let dashboard = dashboard();
    dashboard.add("ann", &[Role::Admin]);
    let idle = dashboard.login("ann").await;
    let old = dashboard.login("ann").await;
    assert_eq!(dashboard.send(get("/", Some(&idle)).build()).await.status, StatusCode::OK);
    let database = rusqlite::Connection::open(&dashboard.database).unwrap();
    let minute = 60_000i64;
    let id_hash = |cookie: &str| {
        let raw = cookie.split_once('=').unwrap().1;
        let digest = ring::digest::digest(&ring::digest::SHA256, raw.as_bytes());
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    // 31 minutes without a request (the default idle limit is 30).
    let moved = database
        .execute(
            "UPDATE sessions SET last_seen_ms = last_seen_ms - ?1, created_ms = created_ms - ?1 WHERE id_hash = ?2",
            rusqlite::params![31 * minute, id_hash(&idle)],
        )
        .unwrap();
    assert_eq!(moved, 1, "sessions are stored by the SHA-256 of their id");
    assert_eq!(dashboard.send(get("/", Some(&idle)).build()).await.status, StatusCode::SEE_OTHER);
    // Busy, but logged in 13 hours ago (the absolute limit is 12).
    database
        .execute(
            "UPDATE sessions SET created_ms = created_ms - ?1 WHERE id_hash = ?2",
            rusqlite::params![13 * 60 * minute, id_hash(&old)],
        )
        .unwrap();
    assert_eq!(dashboard.send(get("/api/me", Some(&old)).build()).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_setup_link_makes_one_admin_once_and_only_while_there_is_none() {
    let dashboard = dashboard();
    let now = hedgerow::time::now_ms();
    let token = dashboard.state.setup_tokens().issue(now, 3_600_000).unwrap().unwrap();
    let path = format!("/setup/{token}");
    let form = dashboard.send(get(&path, None).build()).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains("Create the first admin"));

    // Bad values come back beside their fields, and leave the link usable.
    let reply = dashboard
        .send(post(&path, None, "name=ann&password=long+enough+pass&password_again=other+pass+word").build())
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.body.contains("id=\"password_again-error\"")
            && reply.body.contains("aria-describedby=\"password_again-error\""),
        "{}",
        reply.body
    );
    let reply = dashboard.send(post(&path, None, "name=ann&password=short&password_again=short").build()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.contains("id=\"password-error\""), "{}", reply.body);

    let made = dashboard
        .send(post(&path, None, "name=ann&password=long+enough+pass&password_again=long+enough+pass").build())
        .await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.body);
    let cookie = made.cookie().unwrap();
    let home = dashboard.send(get("/", Some(&cookie)).build()).await;
    assert!(home.body.contains("Hello, ann") && home.body.contains("admin"), "{}", home.body);
    assert!(dashboard.audit_events().iter().any(|row| row.0 == AuditEvent::Setup && row.1 == "ann"));

    // Used: the same link makes nobody else, and says how to get a new one.
    let again = dashboard
        .send(post(&path, None, "name=eve&password=long+enough+pass&password_again=long+enough+pass").build())
        .await;
    assert_eq!(again.status, StatusCode::GONE);
    assert!(again.body.contains("hedgerow user add NAME --role admin"), "{}", again.body);
    assert!(dashboard.send(get(&path, None).build()).await.body.contains("restart"));
    assert!(dashboard.state.users().get("eve").unwrap().is_none());
    // With an admin, no new link is issued at all.
    assert_eq!(dashboard.state.setup_tokens().issue(now, 3_600_000).unwrap(), None);
}

#[tokio::test]
async fn a_link_issued_before_an_admin_was_added_no_longer_works() {
    let dashboard = dashboard();
    let token = dashboard.state.setup_tokens().issue(hedgerow::time::now_ms(), 3_600_000).unwrap().unwrap();
    dashboard.add("ann", &[Role::Admin]);
    let path = format!("/setup/{token}");
    assert_eq!(dashboard.send(get(&path, None).build()).await.status, StatusCode::GONE);
    let reply = dashboard
        .send(post(&path, None, "name=eve&password=long+enough+pass&password_again=long+enough+pass").build())
        .await;
    assert_eq!(reply.status, StatusCode::GONE);
    assert!(dashboard.state.users().get("eve").unwrap().is_none());
    assert_eq!(dashboard.send(get("/setup/not%20a%20token", None).build()).await.status, StatusCode::GONE);
}

#[tokio::test]
async fn pages_carry_the_security_headers_and_the_stylesheet_is_cached() {
    let dashboard = dashboard();
    dashboard.add("ann", &[Role::Admin]);
    let cookie = dashboard.login("ann").await;
    for (path, cookie) in
        [("/login", None), ("/", Some(cookie.as_str())), ("/users", Some(cookie.as_str())), ("/nowhere", None)]
    {
        let reply = dashboard.send(get(path, cookie).build()).await;
        let headers = &reply.headers;
        let value = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        assert_eq!(
            value("content-security-policy"),
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
             form-action 'self'; base-uri 'none'",
            "{path}"
        );
        assert_eq!(value("x-frame-options"), "DENY", "{path}");
        // No referrer to other sites; same-origin keeps a real Origin on POSTs.
        assert_eq!(value("referrer-policy"), "same-origin", "{path}");
        assert_eq!(value("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(value("cache-control"), "no-store", "{path}");
        assert!(!reply.body.contains("<script") && !reply.body.contains("style="), "no inline script or style: {path}");
    }
    let login = dashboard.send(get("/login", None).build()).await;
    let href = login.body.split("href=\"/static/").nth(1).unwrap().split('"').next().unwrap().to_string();
    let css = dashboard.send(get(&format!("/static/{href}"), None).build()).await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/css"));
    assert!(css.headers[header::CACHE_CONTROL].to_str().unwrap().contains("max-age=31536000"));
    assert_eq!(dashboard.send(get("/static/hedgerow.old.css", None).build()).await.status, StatusCode::NOT_FOUND);
    // A form's target fetched as a page is a friendly refusal, not a bare status.
    let reply = dashboard.send(get("/logout", None).build()).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(reply.body.contains("<h1>Not a page</h1>"), "{}", reply.body);
}

#[tokio::test]
async fn admins_manage_users_with_audit_rows_and_the_last_admin_is_kept() {
    let dashboard = dashboard();
    dashboard.add("ann", &[Role::Admin]);
    let cookie = dashboard.login("ann").await;
    let csrf = dashboard.csrf(&cookie).await;
    let send = |path: &str, form: String| {
        dashboard.send(post(path, Some(&cookie), &format!("csrf={csrf}&reason=staffing+change&{form}")).build())
    };
    let unexplained =
        |path: &str, form: String| dashboard.send(post(path, Some(&cookie), &format!("csrf={csrf}&{form}")).build());

    // Every change asks for a reason: without one it is refused beside the
    // reason field and nothing changes.
    let no_reason = unexplained("/users", "name=bob&password=long+enough+pass&role_dsl=on".into()).await;
    assert_eq!(no_reason.status, StatusCode::BAD_REQUEST);
    assert!(no_reason.body.contains("id=\"add-reason-error\""), "{}", no_reason.body);
    assert!(dashboard.state.users().get("bob").unwrap().is_none());

    // A bad value is shown beside its field, never a 500.
    let short = send("/users", "name=bob&password=short&role_dsl=on".into()).await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert!(short.body.contains("id=\"add-password-error\"") && short.body.contains("at least 12"), "{}", short.body);
    let no_roles = send("/users", "name=bob&password=long+enough+pass".into()).await;
    assert!(no_roles.body.contains("id=\"add-roles-error\""), "{}", no_roles.body);
    let bad_name = send("/users", "name=b%20b&password=long+enough+pass&role_dsl=on".into()).await;
    assert!(bad_name.body.contains("id=\"add-name-error\""), "{}", bad_name.body);

    assert_eq!(send("/users", "name=bob&password=long+enough+pass&role_dsl=on".into()).await.status, StatusCode::OK);
    assert_eq!(send("/users/bob/roles", "role_governor=on".into()).await.status, StatusCode::SEE_OTHER);
    assert_eq!(dashboard.state.users().get("bob").unwrap().unwrap().roles, vec![Role::Governor]);
    let bob = dashboard.login_from("bob", "long enough pass", "10.0.0.5").await.cookie().unwrap();
    assert_eq!(send("/users/bob/password", "password=another+long+one".into()).await.status, StatusCode::SEE_OTHER);
    assert_eq!(
        dashboard.send(get("/", Some(&bob)).build()).await.status,
        StatusCode::SEE_OTHER,
        "a reset ends bob's sessions"
    );
    assert_eq!(send("/users/bob/disable", String::new()).await.status, StatusCode::SEE_OTHER);
    assert_eq!(dashboard.login_from("bob", "another long one", "10.0.0.5").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(send("/users/bob/enable", String::new()).await.status, StatusCode::SEE_OTHER);
    assert_eq!(dashboard.login_from("bob", "another long one", "10.0.0.5").await.status, StatusCode::SEE_OTHER);

    // The last admin can be neither disabled nor lose the role.
    let disable = send("/users/ann/disable", String::new()).await;
    assert_eq!(disable.status, StatusCode::BAD_REQUEST);
    assert!(
        disable.body.contains("last enabled admin") && disable.body.contains("-disabled-error"),
        "{}",
        disable.body
    );
    let demote = send("/users/ann/roles", "role_dsl=on".into()).await;
    assert!(demote.body.contains("-roles-error"), "{}", demote.body);
    let ann = dashboard.state.users().get("ann").unwrap().unwrap();
    assert!(!ann.disabled && ann.has(Role::Admin));
    assert_eq!(send("/users/nobody/disable", String::new()).await.status, StatusCode::NOT_FOUND);

    let changes: Vec<(AuditEvent, String, String)> =
        dashboard.audit_events().into_iter().filter(|row| row.1 == "bob" && row.2.ends_with("by ann")).collect();
    let events: Vec<AuditEvent> = changes.iter().map(|row| row.0).collect();
    assert_eq!(
        events,
        vec![AuditEvent::Enabled, AuditEvent::Disabled, AuditEvent::Password, AuditEvent::Roles, AuditEvent::Added]
    );
    assert_eq!(changes[0].2, "10.0.0.1 by ann");
    let audit = dashboard.send(get("/audit", Some(&cookie)).build()).await;
    assert!(audit.body.contains("10.0.0.1 by ann") && audit.body.contains("enabled"), "{}", audit.body);
    // ... and each is in the change log with who, old -> new and why.
    let unexplained_roles = unexplained("/users/bob/roles", "role_admin=on".into()).await;
    assert!(unexplained_roles.body.contains("-roles-reason-error"), "{}", unexplained_roles.body);
    assert!(!dashboard.state.users().get("bob").unwrap().unwrap().has(Role::Admin));
    let filter = hedgerow::store::changes::ChangeFilter { kind: Some("user".into()), limit: 10, ..Default::default() };
    let logged = dashboard.state.changes().search(&filter).unwrap();
    let logged: Vec<(&str, &str, &str, &str, &str)> = logged
        .iter()
        .map(|c| (c.user.as_str(), c.subject.as_str(), c.old.as_str(), c.new.as_str(), c.reason.as_str()))
        .collect();
    assert_eq!(
        logged,
        vec![
            ("ann", "user bob", "disabled (governor)", "governor", "staffing change"),
            ("ann", "user bob", "governor", "disabled (governor)", "staffing change"),
            ("ann", "user bob", "password", "password reset", "staffing change"),
            ("ann", "user bob", "dsl", "governor", "staffing change"),
            ("ann", "user bob", "(none)", "dsl", "staffing change"),
        ]
    );
    let api: serde_json::Value =
        serde_json::from_str(&dashboard.send(get("/api/audit", Some(&cookie)).build()).await.body).unwrap();
    assert_eq!(
        (api["entries"][0]["event"].as_str(), api["entries"][0]["user_name"].as_str()),
        (Some("login"), Some("bob"))
    );
    assert_eq!(api["entries"][1]["event"], "enabled");
    let users: serde_json::Value =
        serde_json::from_str(&dashboard.send(get("/api/users", Some(&cookie)).build()).await.body).unwrap();
    assert_eq!(users.as_array().unwrap().len(), 2);
    assert!(!users.to_string().contains("argon2"), "no password hash leaves the server");
}

/// The real binary: `hedgerow serve` on free ports prints the setup line
/// and serves `/login` over TCP.
#[test]
fn hedgerow_serve_starts_the_dashboard_and_prints_a_setup_link() {
    let dir = tempfile::tempdir().unwrap();
    let lists = support::config::games_lists(dir.path());
    let config = dir.path().join("hedgerow.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n[dns]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nmode = \"forward\"\n\
             [[upstream.servers]]\naddress = \"127.0.0.1:9\"\n[lists]\ndir = {lists:?}\nupdate_hours = 0\n\
             [dashboard]\nlisten = [\"127.0.0.1:0\"]\n\
             [[networks]]\nname = \"pupils\"\ncidrs = [\"127.0.0.1/32\"]\ngroup = \"pupil\"\n",
            data = dir.path().join("data").display().to_string(),
            lists = lists.display().to_string(),
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hedgerow"))
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut setup_line = None;
    let mut output = String::new();
    while setup_line.is_none() && Instant::now() < deadline {
        match seen.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                output.push_str(&line);
                output.push('\n');
                if line.starts_with("No admin yet. Open http://127.0.0.1:") {
                    setup_line = Some(line);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    let finish = |mut child: std::process::Child| {
        let _ = child.kill();
        let _ = child.wait();
    };
    let Some(setup_line) = setup_line else {
        finish(child);
        panic!("no setup line in stderr:\n{output}");
    };
    assert!(
        setup_line
            .ends_with("within 60 minutes to create the first admin (or run: hedgerow user add NAME --role admin).")
    );
    let url = setup_line.split_whitespace().nth(4).unwrap().to_string();
    let base = url.split("/setup/").next().unwrap().to_string();
    let login = ureq::get(&format!("{base}/login")).call();
    let setup = ureq::get(&url).call();
    finish(child);
    let mut login = login.unwrap();
    assert_eq!(login.status(), 200);
    assert_eq!(login.headers().get("x-frame-options").unwrap(), "DENY");
    assert!(login.body_mut().read_to_string().unwrap().contains("Log in"));
    let mut setup = setup.unwrap();
    assert!(setup.body_mut().read_to_string().unwrap().contains("Create the first admin"));
}

#[tokio::test]
async fn a_dashboard_address_in_use_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let mut config = support::config::forwarding(
        "127.0.0.1:9".parse().unwrap(),
        &dir.path().join("data"),
        &support::config::games_lists(dir.path()),
        "[[networks]]\nname = \"pupils\"\ncidrs = [\"127.0.0.1/32\"]\ngroup = \"pupil\"\n",
        "school.toml",
    );
    config.dashboard.listen = vec![address];
    let error = hedgerow::serve::start(&config).await.err().expect("the address is taken").to_string();
    assert!(error.contains(&address.to_string()) && error.contains("[dashboard] listen"), "{error}");
}

/// Every route with every role (and none): who gets in, who is refused.
#[tokio::test]
async fn every_route_with_every_role() {
    let dashboard = dashboard();
    dashboard.add("ann", &[Role::Admin]);
    dashboard.add("dee", &[Role::Dsl]);
    dashboard.add("gill", &[Role::Governor]);
    dashboard.add("target", &[Role::Dsl]);
    // (method, path, form) and whether each role gets in: admin, dsl, governor.
    let routes: &[(&str, &str, &str, [bool; 3])] = &[
        ("GET", "/", "", [true, true, true]),
        ("GET", "/users", "", [true, false, false]),
        ("GET", "/audit", "", [true, false, false]),
        ("GET", "/api/me", "", [true, true, true]),
        ("GET", "/api/users", "", [true, false, false]),
        ("GET", "/api/audit", "", [true, false, false]),
        ("POST", "/users", "name=new1&password=long+enough+pass&role_dsl=on&reason=r", [true, false, false]),
        ("POST", "/users/target/roles", "role_dsl=on&role_governor=on&reason=r", [true, false, false]),
        ("POST", "/users/target/password", "password=long+enough+pass2&reason=r", [true, false, false]),
        ("POST", "/users/target/disable", "reason=r", [true, false, false]),
        ("POST", "/users/target/enable", "reason=r", [true, false, false]),
    ];
    let mut sessions = Vec::new();
    for name in ["ann", "dee", "gill"] {
        let cookie = dashboard.login(name).await;
        let csrf = dashboard.csrf(&cookie).await;
        sessions.push((name, cookie, csrf));
    }
    for (method, path, form, allowed) in routes {
        let logged_out = match *method {
            "GET" => get(path, None).build(),
            _ => post(path, None, form).build(),
        };
        let reply = dashboard.send(logged_out).await;
        let expected = if path.starts_with("/api/") { StatusCode::UNAUTHORIZED } else { StatusCode::SEE_OTHER };
        assert_eq!(reply.status, expected, "logged out: {method} {path}");
        for (index, (name, cookie, csrf)) in sessions.iter().enumerate() {
            let request = match *method {
                "GET" => get(path, Some(cookie)).build(),
                _ => post(path, Some(cookie), &format!("csrf={csrf}&{form}")).build(),
            };
            let reply = dashboard.send(request).await;
            if allowed[index] {
                assert!(
                    reply.status.is_success() || reply.status.is_redirection(),
                    "{name}: {method} {path}: {}",
                    reply.status
                );
            } else {
                assert_eq!(reply.status, StatusCode::FORBIDDEN, "{name}: {method} {path}");
            }
        }
    }
}

/// Sends one HTTP/1.1 request over TLS to `address`, trusting only the test certificate.
async fn https(address: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dashboard-tls");
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(fixtures.join("cert.pem")).unwrap()).unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut tls = connector.connect(ServerName::try_from("localhost").unwrap(), stream).await.unwrap();
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    let _ = tls.read_to_end(&mut reply).await;
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn with_a_certificate_the_dashboard_serves_https_with_secure_cookies() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dashboard-tls");
    let mut config = support::config::forwarding(
        "127.0.0.1:9".parse().unwrap(),
        &dir.path().join("data"),
        &support::config::games_lists(dir.path()),
        "[[networks]]\nname = \"pupils\"\ncidrs = [\"127.0.0.1/32\"]\ngroup = \"pupil\"\n",
        "school.toml",
    );
    config.dashboard.listen = vec!["127.0.0.1:0".parse().unwrap()];
    config.dashboard.tls =
        Some(hedgerow::config::TlsFiles { cert: fixtures.join("cert.pem"), key: fixtures.join("key.pem") });
    let running = hedgerow::serve::start(&config).await.unwrap();
    let address = running.dashboard_addrs()[0];
    let users = hedgerow::store::Users::open(&config.log.database).unwrap();
    users.add("ann", PASSWORD, &[Role::Admin], hedgerow::time::now_ms()).unwrap();

    let page = https(address, "GET /login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("<h1>Log in</h1>"), "{page}");
    // The origin is https://: a form from it is accepted, and the cookie is Secure.
    let body = format!("name=ann&password={}", PASSWORD.replace(' ', "+"));
    let login = https(
        address,
        &format!(
            "POST /login HTTP/1.1\r\nHost: localhost:{port}\r\nOrigin: https://localhost:{port}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len(),
            port = address.port()
        ),
    )
    .await;
    assert!(login.starts_with("HTTP/1.1 303"), "{login}");
    let cookie = login.lines().find(|line| line.to_ascii_lowercase().starts_with("set-cookie:")).unwrap();
    assert!(cookie.contains("hedgerow_session=") && cookie.ends_with("; Secure"), "{cookie}");
    // A plain-HTTP origin is not this origin.
    let plain = https(
        address,
        &format!(
            "POST /login HTTP/1.1\r\nHost: localhost\r\nOrigin: http://localhost\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(plain.starts_with("HTTP/1.1 403"), "{plain}");
    running.stop().await;

    // A key that is not a key stops start-up, naming the setting.
    std::fs::write(dir.path().join("bad.pem"), "not a key\n").unwrap();
    config.dashboard.tls =
        Some(hedgerow::config::TlsFiles { cert: fixtures.join("cert.pem"), key: dir.path().join("bad.pem") });
    let error = hedgerow::serve::start(&config).await.err().expect("a bad key").to_string();
    assert!(error.contains("[dashboard] tls_key"), "{error}");
}
