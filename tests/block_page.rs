//! The block page over real sockets: a group whose block answer is the block
//! page gets its address for a blocked name, and the page, asked with that
//! name in the Host header, says it is blocked, the category and why; a
//! locked category says it cannot be unblocked; a name not blocked says so;
//! a device outside the school's networks learns nothing; anything but GET
//! and HEAD is refused; a flood from one address is cut off.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use hedgerow::serve;
use hickory_proto::rr::RecordType;
use support::authority::{Authority, Zone};
use support::client::query_udp_from;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn lists(dir: &Path) -> std::path::PathBuf {
    let lists = support::config::games_lists(dir);
    std::fs::write(lists.join("terror.txt"), "terror.test\n").unwrap();
    let mut declarations = std::fs::read_to_string(lists.join("local.toml")).unwrap();
    declarations.push_str(
        "[[source]]\nid = \"local-terror\"\ncategory = \"terrorism\"\nformat = \"domains\"\npath = \"terror.txt\"\n",
    );
    std::fs::write(lists.join("local.toml"), declarations).unwrap();
    lists
}

/// An HTTP/1.1 request from `from` to the block page with `host` in the Host
/// header; returns the status and the whole response.
async fn http(from: IpAddr, page: SocketAddr, method: &str, host: &str) -> (u16, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let mut stream = socket.connect(page).await.unwrap();
    let request =
        format!("{method} /some/page?x=1 HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_name_leads_to_a_page_that_says_why() {
    let authority = Authority::start("127.0.0.1:0", vec![Zone::new("school.test.").a("www", "192.0.2.10")]).await;
    let data = tempfile::tempdir().unwrap();
    let rest = r#"[block_page]
listen = ["127.0.0.1:0"]
[groups.pupil]
block_answer = "block-page"
block_page_ipv4 = "127.0.0.1"
[[networks]]
name = "pupil-wifi"
cidrs = ["127.0.0.1/32"]
group = "pupil"
"#;
    let config = support::config::forwarding(authority.addr, data.path(), &lists(data.path()), rest, "block-page");
    let running = serve::start(&config).await.unwrap();
    let dns = running.udp_addrs()[0];
    let page = running.block_page_addrs()[0];
    let pupil: IpAddr = "127.0.0.1".parse().unwrap();

    // The DNS answer sends the browser to the block page.
    let answer = query_udp_from(pupil, dns, "game.test", RecordType::A).await;
    assert_eq!(support::server::a_addrs(&answer), ["127.0.0.1"]);

    let (status, response) = http(pupil, page, "GET", &format!("game.test:{}", page.port())).await;
    assert_eq!(status, 403, "{response}");
    assert!(response.contains("This site is blocked") && response.contains("game.test"), "{response}");
    assert!(response.contains("<strong>Games</strong>") || response.contains("<strong>Games"), "{response}");
    assert!(response.contains("Why: ") && response.contains("local-games"), "{response}");
    assert!(response.contains("ask your teacher or the school's ICT lead"), "{response}");
    for header in
        ["content-security-policy: default-src 'none'", "x-content-type-options: nosniff", "cache-control: no-store"]
    {
        assert!(response.to_ascii_lowercase().contains(header), "{header}: {response}");
    }
    assert!(!response.to_ascii_lowercase().contains("set-cookie"), "no session: {response}");

    // A locked category cannot be unblocked, and the page says so.
    let (_, response) = http(pupil, page, "GET", "terror.test").await;
    assert!(response.contains("always blocked") && response.contains("cannot be unblocked"), "{response}");

    // A name the policy does not block.
    let (status, response) = http(pupil, page, "GET", "www.school.test").await;
    assert_eq!(status, 200);
    assert!(response.contains("This site is not blocked"), "{response}");

    // No name (an address in Host), a device on no school network, a POST.
    let (status, _) = http(pupil, page, "GET", &page.to_string()).await;
    assert_eq!(status, 400);
    let (status, response) = http("127.0.0.9".parse().unwrap(), page, "GET", "game.test").await;
    assert_eq!(status, 403);
    assert!(!response.contains("game.test") && response.contains("school's networks only"), "{response}");
    let (status, response) = http(pupil, page, "POST", "game.test").await;
    assert_eq!(status, 405, "{response}");
    assert!(response.to_ascii_lowercase().contains("allow: get, head"), "{response}");

    // The stylesheet is its own, served under a path of its own.
    let (status, response) = http(pupil, page, "GET", "game.test").await;
    assert_eq!(status, 403);
    let css_path = "/.hedgerow/block.css";
    assert!(response.contains(css_path));

    // A flood from one address is cut off (60 pages a minute), another address is not.
    let mut statuses = Vec::new();
    for _ in 0..70 {
        statuses.push(http(pupil, page, "GET", "game.test").await.0);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let (status, _) = http("127.0.0.9".parse().unwrap(), page, "GET", "game.test").await;
    assert_eq!(status, 403, "another address has its own allowance");
    running.stop().await;
}
