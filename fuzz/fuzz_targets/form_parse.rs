//! The dashboard's form parsing: any urlencoded body posted to a form, by a
//! logged-in admin and DSL with the right CSRF token, is read by the real
//! router (`web::app`, in-process) and answered with a page, a redirect or
//! a 4xx (a bad value beside its field) — never a panic or a 500.
//!
//! The school is started once (loopback sockets on port 0, a temporary data
//! directory); the first byte picks the form, the rest is the body after
//! the CSRF token.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use hedgerow::config::Config;
use hedgerow::store::users::Role;
use hedgerow::web::{self, AppState, WebSettings};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

/// The forms a DSL or admin posts (name-bearing forms included).
const FORMS: &[&str] = &[
    "/checks/manual",
    "/devices",
    "/devices/import",
    "/alerts/rules",
    "/requests/new",
    "/requests/approve",
    "/policy/pupil/category",
    "/policy/pupil/override-add",
    "/policy/pupil/block-answer",
    "/test",
    "/users",
];

struct School {
    runtime: tokio::runtime::Runtime,
    state: AppState,
    cookie: String,
    csrf: String,
    _dir: tempfile::TempDir,
    _running: hedgerow::serve::Running,
}

const PASSWORD: &str = "correct horse battery";

fn school() -> &'static School {
    static SCHOOL: OnceLock<School> = OnceLock::new();
    SCHOOL.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let lists = dir.path().join("lists");
        std::fs::create_dir_all(&lists).unwrap();
        std::fs::write(lists.join("games.txt"), "game.test\n").unwrap();
        std::fs::write(
            lists.join("local.toml"),
            "[[source]]\nid = \"local-games\"\ncategory = \"games\"\nformat = \"domains\"\npath = \"games.txt\"\n",
        )
        .unwrap();
        let text = format!(
            "data_dir = {data:?}\n\n[dns]\nlisten = [\"127.0.0.1:0\"]\n\n[dashboard]\nlisten = []\n\n\
             [upstream]\nmode = \"forward\"\ntimeout_ms = 500\n[[upstream.servers]]\naddress = \"127.0.0.1:9\"\n\n\
             [lists]\ndir = {lists:?}\nupdate_hours = 0\n\n\
             [[networks]]\nname = \"pupils\"\ncidrs = [\"127.0.0.1/32\"]\ngroup = \"pupil\"\n\n\
             [groups.pupil]\nblock = [\"games\"]\n",
            data = dir.path().join("data").display().to_string(),
            lists = lists.display().to_string(),
        );
        let path = dir.path().join("hedgerow.toml");
        std::fs::write(&path, text).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let config = Config::load(&path).unwrap();
        let running = runtime.block_on(hedgerow::serve::start(&config)).unwrap();
        let state = {
            let _guard = runtime.enter();
            AppState::with_policy(
                running.pipeline.clone(),
                &config.log.database,
                WebSettings::from_config(&config),
                running.policy_access(),
            )
            .unwrap()
        };
        state.users().add("ann", PASSWORD, &[Role::Admin, Role::Dsl], hedgerow::time::now_ms()).unwrap();
        let (cookie, csrf) = runtime.block_on(async {
            let body = format!("name=ann&password={}&next=/", PASSWORD.replace(' ', "+"));
            let reply = web::app(state.clone()).oneshot(request("/login", None, body)).await.unwrap();
            assert_eq!(reply.status(), StatusCode::SEE_OTHER);
            let set = reply.headers().get(header::SET_COOKIE).unwrap().to_str().unwrap();
            let cookie = set.split(';').next().unwrap().to_string();
            let mut me = Request::builder().uri("/api/me").header(header::HOST, "localhost:8080");
            me = me.header(header::COOKIE, &cookie);
            let mut me = me.body(Body::empty()).unwrap();
            me.extensions_mut().insert(ConnectInfo("10.0.0.1:40000".parse::<SocketAddr>().unwrap()));
            let reply = web::app(state.clone()).oneshot(me).await.unwrap();
            let body = reply.into_body().collect().await.unwrap().to_bytes();
            let me: serde_json::Value = serde_json::from_slice(&body).unwrap();
            (cookie, me["csrf_token"].as_str().unwrap().to_string())
        });
        School { runtime, state, cookie, csrf, _dir: dir, _running: running }
    })
}

fn request(path: &str, cookie: Option<&str>, body: String) -> Request<Body> {
    let mut builder = Request::builder()
        .method("POST")
        .uri(path)
        .header(header::HOST, "localhost:8080")
        .header(header::ORIGIN, "http://localhost:8080")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, cookie);
    }
    let mut request = builder.body(Body::from(body)).unwrap();
    request.extensions_mut().insert(ConnectInfo("10.0.0.1:40000".parse::<SocketAddr>().unwrap()));
    request
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let school = school();
    let path = FORMS[usize::from(pick) % FORMS.len()];
    let body = format!("csrf={}&{}", school.csrf, String::from_utf8_lossy(rest));
    let status = school.runtime.block_on(async {
        let reply = web::app(school.state.clone()).oneshot(request(path, Some(&school.cookie), body)).await.unwrap();
        reply.status()
    });
    if std::env::var_os("HEDGEROW_FUZZ_SHOW").is_some() {
        eprintln!("{path} answered {status}"); // to see that seeds pass the CSRF check
    }
    assert!(!status.is_server_error(), "{path} answered {status}");
});
