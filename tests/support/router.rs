//! The dashboard's router asked in-process, as the router-level tests do:
//! requests with the Host and Origin a browser sends, logins, forms with the
//! CSRF token, JSON posts with the CSRF header.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use hedgerow::config::Config;
use hedgerow::dns::{DecisionKind, Flow, Question, Requester};
use hedgerow::serve::Running;
use hedgerow::store::changes::{ChangeFilter, ChangeLog};
use hedgerow::store::users::Role;
use hedgerow::web::{self, AppState, WebSettings};
use hickory_proto::rr::{LowerName, Name, RecordType};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// A test school started in-process on the config file a test wrote:
/// the running server, the dashboard's state on it, and three users, ann
/// (admin), dee (DSL) and gus (governor). `keep` holds what must live as
/// long as the school (a test authority, an HTTP server).
pub struct School {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub config: Config,
    pub running: Running,
    pub state: AppState,
    pub keep: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl School {
    /// Starts the server on `path` (a config file in `dir`).
    pub async fn start(dir: tempfile::TempDir, path: PathBuf) -> School {
        let config = Config::load(&path).unwrap();
        let running = hedgerow::serve::start(&config).await.unwrap();
        let state = AppState::with_policy(
            running.pipeline.clone(),
            &config.log.database,
            WebSettings::from_config(&config),
            running.policy_access(),
        )
        .unwrap();
        for (name, roles) in [("ann", &[Role::Admin][..]), ("dee", &[Role::Dsl]), ("gus", &[Role::Governor])] {
            state.users().add(name, PASSWORD, roles, hedgerow::time::now_ms()).unwrap();
        }
        School { dir, path, config, running, state, keep: Vec::new() }
    }
}

impl RouterSchool for School {
    fn state(&self) -> &AppState {
        &self.state
    }
    fn config(&self) -> &Config {
        &self.config
    }
    fn running(&self) -> &Running {
        &self.running
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

/// Every test user's password.
pub const PASSWORD: &str = "correct horse battery";

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn location(&self) -> &str {
        self.headers.get(header::LOCATION).map(|value| value.to_str().unwrap()).unwrap_or("")
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| panic!("{error}: {}", self.body))
    }
}

/// A logged-in user: the cookie and the CSRF token.
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

pub fn request(method: &str, path: &str, cookie: Option<&str>, content_type: &str, body: String) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path).header(header::HOST, "localhost:8080");
    if method != "GET" {
        builder = builder.header(header::ORIGIN, "http://localhost:8080").header(header::CONTENT_TYPE, content_type);
    }
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, cookie);
    }
    let mut request = builder.body(Body::from(body)).unwrap();
    request.extensions_mut().insert(ConnectInfo("10.0.0.1:40000".parse::<SocketAddr>().unwrap()));
    request
}

/// A test school's running server and dashboard state, asked through the
/// router (`web::app`, no sockets). A test's school gives its parts; the
/// requests come with it.
#[allow(async_fn_in_trait)]
pub trait RouterSchool {
    fn state(&self) -> &AppState;
    fn config(&self) -> &Config;
    fn running(&self) -> &Running;
    /// The config file.
    fn path(&self) -> &Path;

    async fn send(&self, request: Request<Body>) -> Reply {
        send(self.state(), request).await
    }

    async fn login(&self, name: &str) -> Session {
        let body = format!("name={name}&password={}&next=/", PASSWORD.replace(' ', "+"));
        let reply = self.send(request("POST", "/login", None, "application/x-www-form-urlencoded", body)).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        let set = reply.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap();
        let cookie = set.split(';').next().unwrap().to_string();
        let me = self.send(request("GET", "/api/me", Some(&cookie), "", String::new())).await.json();
        Session { cookie, csrf: me["csrf_token"].as_str().unwrap().to_string() }
    }

    async fn get(&self, path: &str, session: Option<&Session>) -> Reply {
        self.send(request("GET", path, session.map(|s| s.cookie.as_str()), "", String::new())).await
    }

    /// Posts a form (`csrf` added) as `session`.
    async fn post(&self, path: &str, session: &Session, form: &[(&str, &str)]) -> Reply {
        let mut pairs: Vec<String> = vec![format!("csrf={}", encode(&session.csrf))];
        pairs.extend(form.iter().map(|(key, value)| format!("{key}={}", encode(value))));
        let body = pairs.join("&");
        self.send(request("POST", path, Some(&session.cookie), "application/x-www-form-urlencoded", body)).await
    }

    /// Posts JSON with the CSRF header as `session`.
    async fn post_json(&self, path: &str, session: &Session, body: serde_json::Value) -> Reply {
        let mut request = request("POST", path, Some(&session.cookie), "application/json", body.to_string());
        request.headers_mut().insert("x-csrf-token", session.csrf.parse().unwrap());
        self.send(request).await
    }

    fn file(&self) -> String {
        std::fs::read_to_string(self.path()).unwrap()
    }

    fn changes(&self) -> Vec<hedgerow::store::changes::Change> {
        ChangeLog::open(&self.config().log.database)
            .unwrap()
            .search(&ChangeFilter { limit: 100, ..Default::default() })
            .unwrap()
    }

    /// What the running pipeline decides for `name` asked by a pupil.
    fn pupil_decision(&self, name: &str) -> DecisionKind {
        let question = Question {
            name: LowerName::from(Name::from_utf8(format!("{name}.")).unwrap()),
            record_type: RecordType::A,
            dnssec_ok: false,
        };
        match self.running().pipeline.decide(Requester::Group("pupil"), &question, false) {
            Flow::Final(answer) => answer.decision.kind,
            Flow::Resolve(pending) => pending.policy_decision().kind,
        }
    }
}

/// `request` answered by the dashboard's router on `state`.
pub async fn send(state: &AppState, request: Request<Body>) -> Reply {
    let response = web::app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.') {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}
