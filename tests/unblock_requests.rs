//! Unblock requests end to end over real sockets (issue 15): a pupil's DNS
//! lookup of a blocked name gets the block page's address; the block page,
//! asked with that name as Host, offers the request form; a POST without the
//! form's token, with a forged one, from another address, without or with a
//! foreign Origin, too large, not a form, or beyond the hourly limit is
//! refused, and a good one is stored (the client named as the query log
//! names it); a locked category offers no form and a POST is refused. Then
//! the dashboard (its router on the running server's state and policy
//! editor): an admin approves through the API, after which the same lookup
//! resolves upstream for the pupils only, and the change log holds the allow
//! override with its reason; staff ask from /requests/new (a name not
//! blocked is refused beside its field); a decline keeps its reply; a locked
//! request offers only decline; governors are refused.

mod support;

use std::net::{IpAddr, SocketAddr};

use axum::http::StatusCode;
use hedgerow::store::unblock::UnblockStore;
use hickory_proto::rr::RecordType;
use serde_json::json;
use support::authority::{Authority, Zone};
use support::client::query_udp_from;
use support::router::{RouterSchool, School};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PUPIL: &str = "127.0.0.1";
const STAFF: &str = "127.0.0.2";
const GAME_ADDR: &str = "192.0.2.20";

/// A school whose pupils (127.0.0.1) and staff (127.0.0.2) both get the
/// block page for game.test (games) and terror.test (terrorism, locked).
async fn school() -> School {
    let authority = Authority::start(
        "127.0.0.1:0",
        vec![
            Zone::new("test.")
                .a("game.test.", GAME_ADDR)
                .a("plain.test.", "192.0.2.21")
                .a("terror.test.", "192.0.2.22"),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let lists = support::config::games_lists(dir.path());
    std::fs::write(lists.join("terror.txt"), "terror.test\n").unwrap();
    std::fs::write(
        lists.join("terror.toml"),
        "[[source]]\nid = \"local-terror\"\ncategory = \"terrorism\"\nformat = \"domains\"\npath = \"terror.txt\"\n",
    )
    .unwrap();
    let rest = format!(
        r#"[block_page]
listen = ["127.0.0.1:0"]
[dashboard]
listen = []
[groups.pupil]
block_answer = "block-page"
block_page_ipv4 = "127.0.0.1"
[groups.staff]
block = ["default", "games"]
block_answer = "block-page"
block_page_ipv4 = "127.0.0.1"
[[networks]]
name = "pupil-wifi"
cidrs = ["{PUPIL}/32"]
group = "pupil"
[[networks]]
name = "staff-lan"
cidrs = ["{STAFF}/32"]
group = "staff"
"#
    );
    let text = support::config::forwarding_text(authority.addr, &dir.path().join("data"), &lists, "127.0.0.1:0", &rest);
    let path = dir.path().join("hedgerow.toml");
    std::fs::write(&path, text).unwrap();
    let mut school = School::start(dir, path).await;
    assert!(school.running.editor.is_some());
    school.keep.push(Box::new(authority));
    school
}

/// One HTTP/1.1 exchange from `from` with the block page: `headers` are
/// extra header lines; returns the status and the whole response.
async fn http(from: &str, page: SocketAddr, method: &str, path: &str, headers: &[String], body: &str) -> (u16, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from.parse().unwrap(), 0)).unwrap();
    let mut stream = socket.connect(page).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, response)
}

/// The form's hidden token in a block page.
fn token_in(page: &str) -> String {
    let start = page.find("name=\"token\" value=\"").unwrap_or_else(|| panic!("no token in {page}")) + 20;
    page[start..].split('"').next().unwrap().to_string()
}

fn form_body(token: &str, reason: &str, requester: &str) -> String {
    let encode = support::router::encode;
    format!("token={}&reason={}&requester={}", encode(token), encode(reason), encode(requester))
}

/// The headers of a form POST a browser sends from the page at `host`.
fn post_headers(host: &str, origin: Option<&str>) -> Vec<String> {
    let mut headers = vec![format!("Host: {host}"), "Content-Type: application/x-www-form-urlencoded".to_string()];
    if let Some(origin) = origin {
        headers.push(format!("Origin: {origin}"));
    }
    headers
}

async fn lookup(school: &School, from: &str, name: &str) -> Vec<String> {
    let answer =
        query_udp_from(from.parse::<IpAddr>().unwrap(), school.running.udp_addrs()[0], name, RecordType::A).await;
    support::server::a_addrs(&answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_from_the_block_page_is_approved_and_the_name_resolves_for_that_group_only() {
    let school = school().await;
    let page = school.running.block_page_addrs()[0];
    let host = format!("game.test:{}", page.port());
    let origin = format!("http://{host}");
    let store = UnblockStore::open(&school.config.log.database).unwrap();

    // The DNS answer sends both groups' browsers to the block page.
    assert_eq!(lookup(&school, PUPIL, "game.test").await, [PUPIL]);
    assert_eq!(lookup(&school, STAFF, "game.test").await, [PUPIL]);

    // The page offers the form.
    let (status, response) = http(PUPIL, page, "GET", "/", &[format!("Host: {host}")], "").await;
    assert_eq!(status, 403, "{response}");
    assert!(response.contains("Ask for this to be unblocked") && response.contains("action=\"/.hedgerow/request\""));
    assert!(response.to_ascii_lowercase().contains("form-action 'self'"), "{response}");
    let token = token_in(&response);

    // Refused: no token, a forged token, another address's token, no Origin, a foreign Origin.
    let good = form_body(&token, "We use it in maths", "Sam Year 8");
    let refusals = [
        (PUPIL, form_body("", "r", ""), Some(origin.as_str())),
        (PUPIL, form_body(&format!("{}.{}", token.split('.').next().unwrap(), "0".repeat(64)), "r", ""), Some(&origin)),
        (STAFF, good.clone(), Some(&origin)),
        (PUPIL, good.clone(), None),
        (PUPIL, good.clone(), Some("http://evil.test")),
    ];
    for (from, body, origin) in refusals {
        let (status, response) =
            http(from, page, "POST", "/.hedgerow/request", &post_headers(&host, origin), &body).await;
        assert_eq!(status, 403, "{from} {origin:?}: {response}");
        assert!(response.contains("Reload the page and try again"), "{response}");
    }
    // Not a form: 415; too large: 413; no reason: shown again with the message beside it.
    let mut json_headers = post_headers(&host, Some(&origin));
    json_headers[1] = "Content-Type: application/json".to_string();
    assert_eq!(http(PUPIL, page, "POST", "/.hedgerow/request", &json_headers, "{}").await.0, 415);
    let huge = form_body(&token, &"x".repeat(5000), "");
    let (status, response) =
        http(PUPIL, page, "POST", "/.hedgerow/request", &post_headers(&host, Some(&origin)), &huge).await;
    assert_eq!(status, 413, "{response}");
    let (status, response) = http(
        PUPIL,
        page,
        "POST",
        "/.hedgerow/request",
        &post_headers(&host, Some(&origin)),
        &form_body(&token, "  ", "Sam"),
    )
    .await;
    assert_eq!(status, 400, "{response}");
    assert!(response.contains("Say why you need this site.") && response.contains("value=\"Sam\""), "{response}");
    assert_eq!(store.open_count().unwrap(), 0, "nothing refused was stored");

    // A good request is stored, with the client as the log names it, and the page says so.
    let (status, response) =
        http(PUPIL, page, "POST", "/.hedgerow/request", &post_headers(&host, Some(&origin)), &good).await;
    assert_eq!(status, 200, "{response}");
    assert!(response.contains("Your request has been sent to the school's IT team"), "{response}");
    assert!(!response.to_ascii_lowercase().contains("location:"), "no redirect");
    let open = store.open_groups().unwrap();
    assert_eq!(open.len(), 1);
    let stored = &open[0].requests[0];
    assert_eq!(
        (stored.name.as_str(), stored.group.as_str(), stored.category.as_str(), stored.locked),
        ("game.test", "pupil", "games", false)
    );
    assert_eq!(
        (stored.reason.as_str(), stored.requester.as_str(), stored.source.as_str(), stored.client.as_str()),
        ("We use it in maths", "Sam Year 8", "block-page", PUPIL)
    );

    // Ten requests an hour from one address, then 429.
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let body = form_body(&token, "again", "");
        statuses
            .push(http(PUPIL, page, "POST", "/.hedgerow/request", &post_headers(&host, Some(&origin)), &body).await.0);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 9, "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert_eq!(store.open_group("game.test", "pupil").unwrap().unwrap().count, 10);

    // A locked category: no form, and a POST is refused (no token is ever issued for it).
    let locked_host = format!("terror.test:{}", page.port());
    let (_, response) = http(STAFF, page, "GET", "/", &[format!("Host: {locked_host}")], "").await;
    assert!(response.contains("cannot be unblocked") && !response.contains("<form"), "{response}");
    let locked_origin = format!("http://{locked_host}");
    let (status, _) = http(
        STAFF,
        page,
        "POST",
        "/.hedgerow/request",
        &post_headers(&locked_host, Some(&locked_origin)),
        &form_body(&token, "history", ""),
    )
    .await;
    assert_eq!(status, 403);
    assert!(store.open_group("terror.test", "staff").unwrap().is_none());

    // The dashboard: governors are refused; the admin sees the grouped requests.
    let governor = school.login("gus").await;
    assert_eq!(school.get("/requests", Some(&governor)).await.status, StatusCode::FORBIDDEN);
    assert_eq!(school.get("/api/requests", Some(&governor)).await.status, StatusCode::FORBIDDEN);
    assert_eq!(school.get("/requests/new", Some(&governor)).await.status, StatusCode::FORBIDDEN);
    let admin = school.login("ann").await;
    let list = school.get("/requests", Some(&admin)).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(
        list.body.contains("game.test") && list.body.contains("We use it in maths") && list.body.contains("Sam Year 8")
    );
    assert!(list.body.contains("10 requests") && list.body.contains("/requests/approve"), "{}", list.body);
    assert!(list.body.contains("Requests <span class=\"nav-badge\">10"), "the nav's count: {}", list.body);

    // Staff ask from the dashboard: the staff group's game.test; plain.test is not blocked.
    let dsl = school.login("dee").await;
    let refused =
        school.post("/requests/new", &dsl, &[("name", "plain.test"), ("group", "staff"), ("reason", "Science")]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("plain.test is not blocked for staff") && refused.body.contains("new-name-error"));
    // The DSL may ask but not decide; logged out, nothing.
    for path in ["/requests", "/requests?tab=decided", "/api/requests"] {
        assert_eq!(school.get(path, Some(&dsl)).await.status, StatusCode::FORBIDDEN, "{path}");
        assert_ne!(school.get(path, None).await.status, StatusCode::OK, "{path}");
    }
    let refused_decision =
        school.post("/requests/approve", &dsl, &[("name", "game.test"), ("group", "pupil"), ("reason", "x")]).await;
    assert_eq!(refused_decision.status, StatusCode::FORBIDDEN);
    let dsl_home = school.get("/requests/new", Some(&dsl)).await;
    assert!(
        dsl_home.body.contains("href=\"/requests/new\"") && !dsl_home.body.contains("href=\"/requests\""),
        "{}",
        dsl_home.body
    );
    let asked = school
        .post("/requests/new", &dsl, &[("name", "game.test"), ("group", "staff"), ("reason", "Games club")])
        .await;
    assert_eq!(asked.status, StatusCode::SEE_OTHER, "{}", asked.body);
    let staff_request = store.open_group("game.test", "staff").unwrap().unwrap();
    assert_eq!(
        (staff_request.requests[0].requester.as_str(), staff_request.requests[0].source.as_str()),
        ("dee", "dashboard")
    );

    // A refused approval (an expiry already past, no reason) is shown beside its field and decides nothing.
    let past = school
        .post(
            "/requests/approve",
            &admin,
            &[("name", "game.test"), ("group", "pupil"), ("reason", "Maths"), ("until_date", "2020-01-01")],
        )
        .await;
    assert_eq!(past.status, StatusCode::BAD_REQUEST);
    assert!(
        past.body.contains("id=\"approve-until-error-pupil-game-test\"") && past.body.contains("already passed"),
        "{}",
        past.body
    );
    let no_reason =
        school.post("/requests/approve", &admin, &[("name", "game.test"), ("group", "pupil"), ("reason", " ")]).await;
    assert!(no_reason.body.contains("id=\"approve-reason-error-pupil-game-test\""), "{}", no_reason.body);
    assert_eq!(store.open_group("game.test", "pupil").unwrap().unwrap().count, 10, "nothing decided");
    assert!(school.changes().iter().all(|c| c.kind != "override-add"), "no override made");
    assert_eq!(lookup(&school, PUPIL, "game.test").await, [PUPIL]);

    // Approve the pupils' through the API: the name resolves for pupils, not for staff.
    let approved = school
        .post_json(
            "/api/requests",
            &admin,
            json!({ "action": "approve", "name": "game.test", "group": "pupil", "reason": "Maths department uses it" }),
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    let approved = approved.json();
    assert_eq!(approved["decided"], 10);
    assert_eq!(lookup(&school, PUPIL, "game.test").await, [GAME_ADDR]);
    assert_eq!(lookup(&school, STAFF, "game.test").await, [PUPIL], "staff still get the block page");
    let change = school.changes().into_iter().find(|c| c.kind == "override-add").expect("the allow override");
    assert_eq!(
        (change.group.as_deref(), change.reason.as_str(), change.user.as_str()),
        (Some("pupil"), "Maths department uses it", "ann")
    );
    assert!(change.subject.contains("game.test"), "{change:?}");
    assert_eq!(approved["change"]["id"], change.id);
    assert!(school.file().contains("game.test"), "the override is in the config file");
    let request = store.get(stored.id).unwrap().unwrap();
    assert_eq!((request.state.as_str(), request.change_id), ("approved", Some(change.id)));
    // The block page now says it is not blocked for the pupils.
    let (status, response) = http(PUPIL, page, "GET", "/", &[format!("Host: {host}")], "").await;
    assert!(status == 200 && response.contains("This site is not blocked"), "{response}");

    // Decline the staff's with a reply (the page form); an empty reply is refused beside its field.
    let empty =
        school.post("/requests/decline", &admin, &[("name", "game.test"), ("group", "staff"), ("reply", " ")]).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert!(empty.body.contains("decline-reply-error-staff-game-test"), "{}", empty.body);
    let reply = "Staff can use the games club laptop";
    let declined =
        school.post("/requests/decline", &admin, &[("name", "game.test"), ("group", "staff"), ("reply", reply)]).await;
    assert_eq!((declined.status, declined.location()), (StatusCode::SEE_OTHER, "/requests?done=declined"));
    let decided = store.decided(10, 0).unwrap();
    assert_eq!(
        (decided[0].state.as_str(), decided[0].reply.as_str(), decided[0].decided_by.as_str()),
        ("declined", reply, "ann")
    );
    let tab = school.get("/requests?tab=decided", Some(&admin)).await;
    assert!(tab.body.contains(reply) && tab.body.contains("Maths department uses it"), "{}", tab.body);

    // A locked category asked from the dashboard: only decline is offered, and approving is refused.
    let locked = school
        .post("/requests/new", &dsl, &[("name", "terror.test"), ("group", "pupil"), ("reason", "History project")])
        .await;
    assert_eq!(locked.location(), "/requests/new?sent=locked&name=terror.test&group=pupil");
    let list = school.get("/requests", Some(&admin)).await;
    assert!(list.body.contains("terror.test") && list.body.contains("locked"), "{}", list.body);
    assert!(!list.body.contains("/requests/approve"), "a locked request offers only decline: {}", list.body);
    assert!(list.body.contains("illegal content lists cannot be unblocked by anyone"));
    let refused = school
        .post_json(
            "/api/requests",
            &admin,
            json!({ "action": "approve", "name": "terror.test", "group": "pupil", "reason": "x" }),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("cannot be unblocked by anyone"), "{}", refused.body);
    assert_eq!(lookup(&school, PUPIL, "terror.test").await, [PUPIL], "still blocked");
    let declined = school
        .post_json(
            "/api/requests",
            &admin,
            json!({ "action": "decline", "name": "terror.test", "group": "pupil", "reply": "Illegal content" }),
        )
        .await;
    assert_eq!((declined.status, declined.json()["decided"].clone()), (StatusCode::OK, json!(1)));
    assert_eq!(store.open_count().unwrap(), 0);
    school.running.stop().await;
}
