//! Category blocklists and group policy over real sockets: pupils, staff and
//! guests get different answers for the same names; locked categories stay
//! blocked whatever the config says; blocked names never go upstream; CNAME
//! targets are inspected; lists reload under load without losing a query.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hedgerow::config::Config;
use hedgerow::serve::{self, Running};
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{RData, RecordType};
use support::authority::{Authority, Zone};
use support::client::{build_query, exchange_udp_from, query_udp_from};

const PUPIL: &str = "127.0.0.1";
const STAFF: &str = "127.0.0.2";
const GUEST: &str = "127.0.0.3";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// The upstream world: every name resolves, so any NXDOMAIN comes from policy.
fn world() -> Zone {
    Zone::new("test.")
        .a("game.test.", "192.0.2.1")
        .a("social.test.", "192.0.2.2")
        .a("casino.test.", "192.0.2.3")
        .a("www.casino.test.", "192.0.2.3")
        .a("notcasino.test.", "192.0.2.4")
        .a("iwf.test.", "192.0.2.5")
        .a("news.test.", "192.0.2.6")
        .a("vpn.test.", "192.0.2.7")
        .cname("alias.test.", "casino.test.")
        .a("later.test.", "192.0.2.8")
}

/// A lists folder with one source per category, as a school would write it.
fn write_lists(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let sources = [
        ("games", "domains", "game.test\n"),
        ("social-media", "hosts", "0.0.0.0 social.test\n"),
        ("gambling", "adblock", "||casino.test^\n"),
        ("csam", "domains", "iwf.test\n"),
        ("vpn-proxy", "domains", "vpn.test\n"),
    ];
    let mut toml = String::new();
    for (category, format, body) in sources {
        std::fs::write(dir.join(format!("{category}.txt")), body).unwrap();
        toml.push_str(&format!(
            "[[source]]\nid = \"test-{category}\"\ncategory = \"{category}\"\nformat = \"{format}\"\npath = \"{category}.txt\"\n\n"
        ));
    }
    std::fs::write(dir.join("sources.toml"), toml).unwrap();
}

fn config(upstream: SocketAddr, lists: &Path, groups: &str) -> Config {
    let data_dir = tempfile::tempdir().unwrap().keep();
    let rest = format!(
        r#"{groups}
[[networks]]
name = "pupils"
cidrs = ["{PUPIL}/32"]
group = "pupil"
[[networks]]
name = "staff"
cidrs = ["{STAFF}/32"]
group = "staff"
[[networks]]
name = "guests"
cidrs = ["{GUEST}/32"]
group = "guest"
"#
    );
    support::config::forwarding(upstream, &data_dir, lists, &rest, "policy-test")
}

async fn ask(server: SocketAddr, from: &str, name: &str) -> Message {
    query_udp_from(ip(from), server, name, RecordType::A).await
}

fn address(message: &Message) -> Option<IpAddr> {
    message.answers.iter().find_map(|r| match &r.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        _ => None,
    })
}

fn is_blocked(message: &Message) -> bool {
    message.metadata.response_code == ResponseCode::NXDomain
}

async fn start(groups: &str) -> (Running, Authority, tempfile::TempDir) {
    let authority = Authority::start("127.0.0.1:0", vec![world()]).await;
    let lists = tempfile::tempdir().unwrap();
    write_lists(lists.path());
    let running = serve::start(&config(authority.addr, lists.path(), groups)).await.unwrap();
    (running, authority, lists)
}

#[tokio::test]
async fn pupils_staff_and_guests_get_their_own_policy() {
    let (running, authority, _lists) = start("").await;
    let server = running.udp_addrs()[0];

    // games: pupils blocked; staff and guests allowed.
    assert!(is_blocked(&ask(server, PUPIL, "game.test").await));
    assert_eq!(address(&ask(server, STAFF, "game.test").await), Some(ip("192.0.2.1")));
    assert_eq!(address(&ask(server, GUEST, "game.test").await), Some(ip("192.0.2.1")));
    // social media: pupils and guests blocked; staff allowed.
    assert!(is_blocked(&ask(server, PUPIL, "social.test").await));
    assert!(is_blocked(&ask(server, GUEST, "social.test").await));
    assert_eq!(address(&ask(server, STAFF, "social.test").await), Some(ip("192.0.2.2")));
    // gambling (UKSIC): blocked for everyone, subdomains too, look-alikes not.
    for client in [PUPIL, STAFF, GUEST] {
        assert!(is_blocked(&ask(server, client, "casino.test").await), "{client}");
        assert!(is_blocked(&ask(server, client, "www.casino.test").await), "{client}");
        assert_eq!(address(&ask(server, client, "notcasino.test").await), Some(ip("192.0.2.4")), "{client}");
    }

    // A blocked name is never sent upstream.
    let before = authority.query_count();
    assert!(is_blocked(&ask(server, STAFF, "casino.test").await));
    assert!(is_blocked(&ask(server, PUPIL, "deep.www.casino.test").await));
    assert_eq!(authority.query_count(), before);

    // The block carries an RFC 8914 Extended DNS Error naming the category.
    let mut query = build_query("casino.test", RecordType::A);
    query.set_edns(Edns::new());
    let answer = exchange_udp_from(ip(STAFF), server, &query).await.unwrap();
    let Some(EdnsOption::Unknown(15, data)) = answer.edns.as_ref().unwrap().option(EdnsCode::from(15)) else {
        panic!("no Extended DNS Error in {answer:?}");
    };
    assert_eq!(u16::from_be_bytes([data[0], data[1]]), 15, "info code Blocked");
    let text = String::from_utf8_lossy(&data[2..]);
    assert!(text.contains("gambling") && text.contains("test-gambling"), "{text}");

    // Answer inspection: a CNAME leading to a blocked name is blocked.
    assert!(is_blocked(&ask(server, STAFF, "alias.test").await));
    assert!(is_blocked(&ask(server, STAFF, "alias.test").await), "also when the answer comes from the cache");

    running.stop().await;
    authority.stop().await;
}

#[tokio::test]
async fn overrides_and_block_answers_are_per_group() {
    let groups = r#"
[groups.staff]
allow = ["casino.test"]
block_answer = "null"
[groups.pupil]
deny = ["=news.test"]
block_answer = "block-page"
block_page_ipv4 = "192.0.2.250"
"#;
    let (running, authority, _lists) = start(groups).await;
    let server = running.udp_addrs()[0];

    // Staff's allow override wins over gambling; pupils still blocked.
    assert_eq!(address(&ask(server, STAFF, "www.casino.test").await), Some(ip("192.0.2.3")));
    let pupil = ask(server, PUPIL, "casino.test").await;
    assert_eq!(pupil.metadata.response_code, ResponseCode::NoError);
    assert_eq!(address(&pupil), Some(ip("192.0.2.250")), "pupils get the block page");
    // Staff block answer is 0.0.0.0; pupils' deny override is exact only.
    assert_eq!(address(&ask(server, STAFF, "vpn.test").await), Some(ip("0.0.0.0")));
    assert_eq!(address(&ask(server, PUPIL, "news.test").await), Some(ip("192.0.2.250")));
    assert_eq!(address(&ask(server, GUEST, "news.test").await), Some(ip("192.0.2.6")));

    running.stop().await;
    authority.stop().await;
}

#[tokio::test]
async fn a_locked_category_cannot_be_unblocked() {
    let authority = Authority::start("127.0.0.1:0", vec![world()]).await;
    let lists = tempfile::tempdir().unwrap();
    write_lists(lists.path());

    // An override naming a locked name: the server refuses to start, saying why.
    let config_text = "[groups.staff]\nallow = [\"iwf.test\"]\n";
    let error = serve::start(&config(authority.addr, lists.path(), config_text)).await.err().expect("must not start");
    let message = error.to_string();
    assert!(message.contains("locked") && message.contains("csam") && message.contains("iwf.test"), "{message}");

    // Taking csam out of a group's categories is a config error with a line.
    let error = Config::parse("[groups.staff]\nblock = [\"uksic\", \"!csam\"]\n", "school.toml").unwrap_err();
    assert!(error.to_string().starts_with("school.toml:2:") && error.message.contains("locked"), "{error}");

    // An override on a parent domain does not reach into a locked category.
    let running =
        serve::start(&config(authority.addr, lists.path(), "[groups.staff]\nallow = [\"test\"]\n")).await.unwrap();
    let server = running.udp_addrs()[0];
    assert!(is_blocked(&ask(server, STAFF, "iwf.test").await), "csam stays blocked");
    assert_eq!(
        address(&ask(server, STAFF, "casino.test").await),
        Some(ip("192.0.2.3")),
        "the override works elsewhere"
    );

    running.stop().await;
    authority.stop().await;
}

/// Reloads swap lists while queries are in flight, and not one query is
/// lost or wrong: workers ask without pause until the reloads are done, and
/// every answer is checked (the blocked name NXDOMAIN from policy, the
/// allowed one NOERROR with its address); a SERVFAIL, a wrong answer or a
/// timeout fails the test. Answers counted while `reload_lists` was running
/// prove the queries really overlapped the reloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_reload_under_load_without_losing_a_query() {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;
    const RELOADS: usize = 8;
    const WORKERS: usize = 4;

    let (running, authority, lists) = start("").await;
    let server = running.udp_addrs()[0];
    assert_eq!(address(&ask(server, STAFF, "later.test").await), Some(ip("192.0.2.8")));

    let correct = Arc::new(AtomicUsize::new(0));
    let wrong = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = (0..WORKERS)
        .map(|worker| {
            let (correct, wrong, stop) = (correct.clone(), wrong.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = worker;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let name = if i % 2 == 0 { "game.test" } else { "news.test" };
                    let query = build_query(name, RecordType::A);
                    let outcome = match exchange_udp_from(ip(PUPIL), server, &query).await {
                        Err(error) => Err(format!("{error}")),
                        Ok(answer) if answer.queries != query.queries => Err(format!("another question: {answer:?}")),
                        // games are blocked for pupils: NXDOMAIN from policy (game.test exists upstream).
                        Ok(answer) if name == "game.test" => {
                            if is_blocked(&answer) && answer.answers.is_empty() {
                                Ok(())
                            } else {
                                Err(format!("not the block answer: {answer:?}"))
                            }
                        }
                        Ok(answer) => {
                            if answer.metadata.response_code == ResponseCode::NoError
                                && address(&answer) == Some(ip("192.0.2.6"))
                            {
                                Ok(())
                            } else {
                                Err(format!("not the upstream answer: {answer:?}"))
                            }
                        }
                    };
                    match outcome {
                        Ok(()) => {
                            correct.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(why) => wrong.lock().unwrap().push(format!("worker {worker}, {name}: {why}")),
                    }
                }
            })
        })
        .collect::<Vec<_>>();

    // The load is running before the first reload.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while correct.load(Ordering::SeqCst) < 50 {
        assert!(std::time::Instant::now() < deadline, "the load never got going: {:?}", wrong.lock().unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    // Meanwhile: add names to the games list and reload, again and again.
    let pupil_question = |name: &str| hedgerow::dns::Question {
        name: hickory_proto::rr::LowerName::from(hickory_proto::rr::Name::from_ascii(format!("{name}.")).unwrap()),
        record_type: RecordType::A,
        dnssec_ok: false,
    };
    let at_first_reload = correct.load(Ordering::SeqCst);
    let mut during_reloads = 0;
    for round in 0..RELOADS {
        let body = format!("game.test\nlater.test\nround{round}.test\n");
        std::fs::write(lists.path().join("games.txt"), body).unwrap();
        let before = correct.load(Ordering::SeqCst);
        running.reload_lists().await.unwrap();
        during_reloads += correct.load(Ordering::SeqCst) - before;
        // The new list is in force as soon as the reload returns.
        let hedgerow::dns::Flow::Final(answer) = running.pipeline.decide(
            hedgerow::dns::Requester::Source(ip(PUPIL)),
            &pupil_question(&format!("round{round}.test")),
            false,
        ) else {
            panic!("round{round}.test is not blocked after reload {round}");
        };
        assert_eq!(answer.decision.kind, hedgerow::dns::DecisionKind::Blocked, "round {round}");
    }
    let between_first_and_last = correct.load(Ordering::SeqCst) - at_first_reload;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }

    let wrong = wrong.lock().unwrap();
    assert!(
        wrong.is_empty(),
        "{} queries lost or answered wrongly, e.g. {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    eprintln!(
        "{RELOADS} reloads; {between_first_and_last} correct answers from the first reload to the last, \
         {during_reloads} of them while a reload was running; {} in all",
        correct.load(Ordering::SeqCst)
    );
    assert!(between_first_and_last > 0, "no query was answered between the first and the last reload");
    assert!(during_reloads > 0, "no query was answered while a reload was running: nothing overlapped");

    // The reloaded list is in force: later.test is now a game.
    assert!(is_blocked(&ask(server, PUPIL, "later.test").await));
    assert_eq!(address(&ask(server, STAFF, "later.test").await), Some(ip("192.0.2.8")));

    running.stop().await;
    authority.stop().await;
}
