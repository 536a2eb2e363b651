//! Alert delivery over real sockets (issue 14): an alert stored with its
//! messages is sent by a running `hedgerow serve` to a real SMTP server on
//! loopback (tests/support/smtp.rs) with STARTTLS and AUTH; a server that is
//! down is retried, across a restart of Hedgerow, and the message arrives
//! once; the webhook's signature verifies (and a tampered body does not);
//! a digest whose time has come is queued and sent.
//!
//! Retry waits are not waited out: the tests check the recorded `next_ms`
//! (30 s after the first failure) and then make the message due at once by
//! writing `next_ms` in the database while Hedgerow is stopped (or between
//! two rounds of the worker), as the passing of time would.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hedgerow::alerts::deliver;
use hedgerow::alerts::message::alert_messages;
use hedgerow::config::Config;
use hedgerow::store::alerts::{AlertStore, NewAlert, OutboxMessage};
use support::authority::Authority;
use support::server::{Hedgerow, PUPIL, SchoolFiles, free_port, school_world};
use support::smtp::{PASSWORD, SmtpOptions, SmtpServer, USER};

const DSL: &str = "dsl@school.example";
const HEAD: &str = "head@school.example";

fn ca_file() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dashboard-tls/cert.pem").display().to_string()
}

/// `[alerts]` sending to the SMTP server on `port` (STARTTLS, AUTH with the
/// password from a file in `dir`), high alerts to the DSL and the head.
fn alerts_section(dir: &Path, port: u16, digests: &str) -> String {
    let password = dir.join("smtp-password");
    std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    format!(
        r#"
[alerts]
dashboard_url = "https://filter.school.example"

[alerts.email]
server = "127.0.0.1"
port = {port}
security = "starttls"
username = "{USER}"
password_file = {password:?}
ca_file = {ca:?}
from = "Hedgerow <hedgerow@school.example>"
high = ["{DSL}", "{HEAD}"]
medium = ["{DSL}"]
{digests}
"#,
        password = password.display().to_string(),
        ca = ca_file(),
    )
}

const NO_DIGESTS: &str = "daily_digest = \"off\"\nweekly_digest = \"off\"\n";

/// The test school with `extra` appended to its config.
fn school(dir: &Path, upstream: SocketAddr, extra: &str) -> SchoolFiles {
    let files = SchoolFiles::write(dir, upstream, false);
    let mut text = std::fs::read_to_string(&files.config).unwrap();
    text.push_str(extra);
    std::fs::write(&files.config, text).unwrap();
    files
}

fn high_alert(first_ms: i64) -> NewAlert {
    NewAlert {
        rule: "high-risk".into(),
        severity: "high".into(),
        category: Some("self-harm".into()),
        client: PUPIL.into(),
        device: "ipad-7".into(),
        owner: "Year 9".into(),
        network: "pupils".into(),
        group: "pupil".into(),
        first_ms,
        last_ms: first_ms,
        attempts: 1,
        names: vec!["selfharm.example".into()],
        summary: "any attempt at csam, terrorism, extremism, self-harm".into(),
    }
}

/// Raises `alert` as the watch thread would: stored with its messages.
fn raise(config: &Config, alert: &NewAlert) -> (AlertStore, i64) {
    let store = AlertStore::open(&config.log.database).unwrap();
    let raised = store.raise(alert, hedgerow::time::now_ms(), |a| alert_messages(a, &config)).unwrap();
    (store, raised.id)
}

/// Waits until `check` holds for some message in the outbox.
fn wait_outbox(store: &AlertStore, wait: Duration, check: impl Fn(&OutboxMessage) -> bool) -> OutboxMessage {
    let deadline = Instant::now() + wait;
    loop {
        let outbox = store.outbox(100).unwrap();
        if let Some(found) = outbox.iter().find(|m| check(m)) {
            return found.clone();
        }
        assert!(Instant::now() < deadline, "the outbox never got there: {outbox:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a retry wait does: every pending message due now.
fn make_due_now(database: &Path) {
    let conn = rusqlite::Connection::open(database).unwrap();
    conn.execute("UPDATE alert_outbox SET next_ms = 0 WHERE state = 'pending'", []).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_high_alert_reaches_the_dsl_by_email_with_starttls_and_auth() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::start("127.0.0.1:0", school_world()).await;
    let smtp = SmtpServer::start(SmtpOptions::default());
    let files = school(dir.path(), authority.addr, &alerts_section(dir.path(), smtp.addr().port(), NO_DIGESTS));
    let server = Hedgerow::start(&files).await;
    let config = Config::load(&files.config).unwrap();

    let (store, id) = raise(&config, &high_alert(hedgerow::time::now_ms()));
    let mail = smtp.wait_for(1, Duration::from_secs(15));
    let mail = &mail[0];
    assert!(mail.tls, "sent before STARTTLS");
    assert_eq!(mail.user.as_deref(), Some(USER));
    assert_eq!(mail.mail_from, "hedgerow@school.example");
    assert_eq!(mail.rcpt_to, [DSL, HEAD]);
    assert_eq!(mail.header("Subject").as_deref(), Some("[Hedgerow] High alert: self-harm, ipad-7"));
    assert_eq!(mail.header("From").as_deref(), Some("Hedgerow <hedgerow@school.example>"));
    assert_eq!(mail.header("To").as_deref(), Some(format!("{DSL}, {HEAD}").as_str()));
    assert!(mail.header("Date").is_some() && mail.header("Message-ID").is_some(), "{}", mail.data);
    let text = mail.text();
    for expected in [
        "Device:   ipad-7, Year 9 (127.0.0.1)",
        "Network:  pupils (group pupil)",
        "Category: self-harm",
        "  selfharm.example\n",
        &format!("https://filter.school.example/alerts/{id}"),
    ] {
        assert!(text.contains(expected), "{expected:?} not in\n{text}");
    }
    let sent = wait_outbox(&store, Duration::from_secs(5), |m| m.state == "sent");
    assert_eq!((sent.alert_id, sent.attempts), (Some(id), 1));

    // Sent once, and the password never in what the server wrote.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(smtp.messages().len(), 1);
    assert!(smtp.failed_logins().is_empty());
    let stderr = server.stderr();
    assert!(stderr.contains("alert message sent"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "the password is in the server's output:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_to_a_server_that_is_down_is_retried_across_a_restart_and_arrives_once() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::start("127.0.0.1:0", school_world()).await;
    let port = free_port();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let extra = format!("{}\n[metrics]\nlisten = \"{metrics}\"\n", alerts_section(dir.path(), port, NO_DIGESTS));
    let files = school(dir.path(), authority.addr, &extra);
    let mut server = Hedgerow::start(&files).await;
    let config = Config::load(&files.config).unwrap();

    // No SMTP server yet: the first attempt fails and is put off 30 s.
    let before = hedgerow::time::now_ms();
    let (store, id) = raise(&config, &high_alert(before));
    let failed = wait_outbox(&store, Duration::from_secs(10), |m| m.attempts == 1);
    let after = hedgerow::time::now_ms();
    assert_eq!((failed.state.as_str(), failed.alert_id), ("pending", Some(id)));
    let error = failed.last_error.clone().unwrap();
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
    assert!((before + 30_000..=after + 30_000).contains(&failed.next_ms), "{failed:?}, {before}..{after}");
    assert_eq!(store.outbox_counts().unwrap().retrying, 1);
    let scrape = ureq::get(&format!("http://{metrics}/metrics")).call().unwrap().into_body().read_to_string().unwrap();
    assert!(scrape.contains("hedgerow_alert_messages{state=\"retrying\"} 1\n"), "{scrape}");
    assert!(scrape.contains("hedgerow_alert_messages{state=\"sent\"} 0\n"), "{scrape}");

    // Hedgerow stops; the wait passes; the SMTP server comes up (offering
    // AUTH LOGIN only); Hedgerow starts again on the same data.
    server.kill();
    make_due_now(&config.log.database);
    let smtp = SmtpServer::start(SmtpOptions { port, mechanisms: vec!["LOGIN"], ..SmtpOptions::default() });
    let server = Hedgerow::start(&files).await;
    let mail = smtp.wait_for(1, Duration::from_secs(15));
    assert_eq!(mail[0].header("Subject").as_deref(), Some("[Hedgerow] High alert: self-harm, ipad-7"));
    assert_eq!(mail[0].user.as_deref(), Some(USER));
    let sent = wait_outbox(&store, Duration::from_secs(5), |m| m.state == "sent");
    assert_eq!((sent.id, sent.attempts, sent.last_error.clone()), (failed.id, 2, None));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(smtp.messages().len(), 1, "delivered more than once");
    assert!(!server.stderr().contains(PASSWORD));
}

/// One HTTP request as the test's receiver read it.
#[derive(Debug, Clone)]
struct Posted {
    head: String,
    body: Vec<u8>,
}

impl Posted {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_string())
        })
    }
}

/// A loopback HTTP receiver: answers each request with the next status of
/// `statuses` (then 200) and keeps what it got.
fn receiver(statuses: Vec<u16>) -> (SocketAddr, Arc<Mutex<Vec<Posted>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let statuses = Arc::new(Mutex::new(statuses.into_iter()));
    std::thread::spawn({
        let got = got.clone();
        move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let posted = Posted { head, body: Vec::new() };
                let length: usize = posted.header("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                got.lock().unwrap().push(Posted { body, ..posted });
                let status = statuses.lock().unwrap().next().unwrap_or(200);
                let _ = write!(stream, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        }
    });
    (addr, got)
}

/// The receiver's own check: HMAC-SHA256 over "<timestamp>.<body>".
fn signature_verifies(secret: &str, posted: &Posted, body: &[u8]) -> bool {
    let timestamp = posted.header("x-hedgerow-timestamp").unwrap();
    let signature = posted.header("x-hedgerow-signature").unwrap();
    let Some(hex) = signature.strip_prefix("sha256=") else { return false };
    let tag: Vec<u8> = (0..hex.len() / 2).filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()).collect();
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::verify(&key, &signed, &tag).is_ok()
}

const NETWORK: &str = "[[networks]]\nname = \"pupils\"\ncidrs = [\"127.0.0.1/32\"]\ngroup = \"pupil\"\n";

#[test]
fn the_webhook_is_signed_retried_on_an_error_status_and_given_up_when_removed() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "webhook-secret-0123456789";
    std::fs::write(dir.path().join("hook.key"), secret).unwrap();
    let (addr, got) = receiver(vec![500]);
    let text = format!(
        "{NETWORK}[alerts]\ndashboard_url = \"https://filter.school.example\"\n[alerts.webhook]\n\
         url = \"http://{addr}/hook\"\nsecret_file = {:?}\n",
        dir.path().join("hook.key").display().to_string()
    );
    let config = Arc::new(Config::parse(&text, "school.toml").unwrap());
    let store = AlertStore::open(&dir.path().join("h.db")).unwrap();
    let alert = NewAlert { severity: "medium".into(), rule: "bypass".into(), category: None, ..high_alert(1) };
    let raised = store.raise(&alert, hedgerow::time::now_ms(), |a| alert_messages(a, &config)).unwrap();
    let second = NewAlert { client: "127.0.0.9".into(), device: "laptop-3".into(), ..alert.clone() };
    store.raise(&second, hedgerow::time::now_ms(), |a| alert_messages(a, &config)).unwrap();

    // The first call gets a 500: recorded, and put off 30 s; the second
    // message is not sent to a receiver that just failed, but put off too.
    let now = hedgerow::time::now_ms();
    assert!(!deliver::step(&store, &config, now).unwrap());
    assert_eq!(got.lock().unwrap().len(), 1);
    for failed in store.outbox(10).unwrap() {
        assert_eq!((failed.state.as_str(), failed.attempts), ("pending", 1));
        assert!(failed.last_error.as_deref().unwrap().contains("500"), "{failed:?}");
        assert!(failed.next_ms >= now + 30_000, "{failed:?}");
    }

    // The running worker sends it once it is due.
    let worker = deliver::spawn(
        store.clone(),
        Arc::new({
            let config = config.clone();
            move || config.clone()
        }),
    );
    make_due_now(store.database());
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.outbox_counts().unwrap().sent < 2 {
        assert!(Instant::now() < deadline, "{:#?}", store.outbox(10).unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    worker.stop();
    assert!(store.outbox(10).unwrap().iter().all(|m| m.attempts == 2));
    let posted = got.lock().unwrap().clone();
    assert_eq!(posted.len(), 3);
    let last = posted
        .iter()
        .find(|p| serde_json::from_slice::<serde_json::Value>(&p.body).unwrap()["id"].as_i64() == Some(raised.id))
        .unwrap();
    assert!(last.head.starts_with("POST /hook HTTP/1.1\r\n"), "{}", last.head);
    assert_eq!(last.header("content-type").as_deref(), Some("application/json"));
    let timestamp: u64 = last.header("x-hedgerow-timestamp").unwrap().parse().unwrap();
    assert!(timestamp.abs_diff(hedgerow::time::unix_now()) < 60);
    assert!(signature_verifies(secret, last, &last.body), "{last:?}");
    let json: serde_json::Value = serde_json::from_slice(&last.body).unwrap();
    assert_eq!((json["id"].as_i64(), json["severity"].as_str()), (Some(raised.id), Some("medium")));
    assert_eq!(json["device"], "ipad-7");
    let link = format!("https://filter.school.example/alerts/{}", raised.id);
    assert_eq!(json["link"].as_str(), Some(link.as_str()));
    // A body changed on the way, or the wrong key, fails the check.
    let tampered = String::from_utf8(last.body.clone()).unwrap().replace("medium", "low");
    assert!(!signature_verifies(secret, last, tampered.as_bytes()));
    assert!(!signature_verifies("another-secret", last, &last.body));

    // With [alerts.webhook] gone, a queued call is given up, saying why.
    store.raise(&alert, hedgerow::time::now_ms(), |a| alert_messages(a, &config)).unwrap();
    let without = Config::parse(NETWORK, "school.toml").unwrap();
    deliver::step(&store, &without, hedgerow::time::now_ms()).unwrap();
    let given_up = wait_outbox(&store, Duration::from_secs(1), |m| m.state == "failed");
    assert!(given_up.last_error.as_deref().unwrap().contains("no longer configured"), "{given_up:?}");
    assert_eq!(store.outbox_counts().unwrap().failed, 1);
    assert_eq!(got.lock().unwrap().len(), 3);
}

#[test]
fn a_due_digest_is_queued_once_and_sent() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(SmtpOptions::default());
    let section = alerts_section(dir.path(), smtp.addr().port(), "daily_digest = \"07:30\"\nweekly_digest = \"off\"\n");
    let config = Arc::new(Config::parse(&format!("{NETWORK}{section}"), "school.toml").unwrap());
    let store = AlertStore::open(&dir.path().join("h.db")).unwrap();
    let now = hedgerow::time::now_ms();
    // The last daily digest covered up to three days ago; alerts since then.
    store.queue_digest("daily", now - 3 * 86_400_000, &[], now).unwrap();
    let day_ago = now - 26 * 3_600_000;
    for (rule, category) in [("repeated-pornography", "pornography"), ("repeated-gambling", "gambling")] {
        let medium = NewAlert {
            rule: rule.into(),
            severity: "medium".into(),
            category: Some(category.into()),
            attempts: 5,
            ..high_alert(day_ago)
        };
        store.raise(&medium, now, |a| alert_messages(a, &config)).unwrap();
    }
    assert!(store.outbox(10).unwrap().is_empty(), "medium alerts wait for the digest");

    let worker = deliver::spawn(
        store.clone(),
        Arc::new({
            let config = config.clone();
            move || config.clone()
        }),
    );
    let mail = smtp.wait_for(1, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(1500));
    worker.stop();
    assert_eq!(smtp.messages().len(), 1, "one digest, once: {:#?}", smtp.messages());
    let digest = &mail[0];
    // The head teacher is on the high list only: no digest.
    assert_eq!(digest.rcpt_to, [DSL]);
    assert_eq!(digest.header("Subject").as_deref(), Some("[Hedgerow] Daily digest: 2 alerts (0 high, 2 medium)"));
    let text = digest.text();
    assert!(text.contains("  gambling         1\n") && text.contains("  pornography      1\n"), "{text}");
    assert!(text.contains("ipad-7, Year 9 (127.0.0.1)  5 attempts"), "{text}");
    assert!(text.contains("The alerts inbox: https://filter.school.example/alerts"), "{text}");
    let email = config.alerts.email.as_ref().unwrap();
    let latest = deliver::latest_digest_at_or_before(email.daily_digest.unwrap(), &config.timezone, now).unwrap();
    let upto = store.digest_upto("daily").unwrap().unwrap();
    assert!(upto >= latest, "{upto} {latest}");
}

#[test]
fn a_wrong_password_is_refused_retried_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(SmtpOptions::default());
    let section = alerts_section(dir.path(), smtp.addr().port(), NO_DIGESTS);
    std::fs::write(dir.path().join("smtp-password"), "not-the-password-42\n").unwrap();
    let config = Config::parse(&format!("{NETWORK}{section}"), "school.toml").unwrap();
    let store = AlertStore::open(&dir.path().join("h.db")).unwrap();
    store.raise(&high_alert(1), hedgerow::time::now_ms(), |a| alert_messages(a, &config)).unwrap();
    deliver::step(&store, &config, hedgerow::time::now_ms()).unwrap();
    let failed = store.outbox(10).unwrap().remove(0);
    let error = failed.last_error.clone().unwrap();
    assert_eq!((failed.state.as_str(), failed.attempts), ("pending", 1), "{failed:?}");
    assert!(error.contains("535") && !error.contains("not-the-password"), "{error}");
    assert_eq!(smtp.failed_logins(), [USER]);
    assert!(smtp.messages().is_empty());
}

#[test]
fn implicit_tls_and_a_plain_local_relay_work_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = AlertStore::open(&dir.path().join("h.db")).unwrap();
    // TLS from the first byte (port 465 style), with AUTH.
    let tls = SmtpServer::start(SmtpOptions { implicit_tls: true, ..SmtpOptions::default() });
    let section = alerts_section(dir.path(), tls.addr().port(), NO_DIGESTS).replace("\"starttls\"", "\"tls\"");
    let config = Config::parse(&format!("{NETWORK}{section}"), "school.toml").unwrap();
    store.raise(&high_alert(1), hedgerow::time::now_ms(), |a| alert_messages(a, &config)).unwrap();
    deliver::step(&store, &config, hedgerow::time::now_ms()).unwrap();
    let mail = tls.wait_for(1, Duration::from_secs(5));
    assert!(mail[0].tls && mail[0].user.as_deref() == Some(USER), "{mail:?}");

    // A relay on this machine with no encryption and no login.
    let relay = SmtpServer::start(SmtpOptions { require_tls: false, credentials: None, ..SmtpOptions::default() });
    let section = format!(
        "[alerts.email]\nserver = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"hedgerow@school.example\"\n\
         high = [\"{DSL}\"]\n{NO_DIGESTS}",
        relay.addr().port()
    );
    let config = Config::parse(&format!("{NETWORK}{section}"), "school.toml").unwrap();
    store.raise(&high_alert(2), hedgerow::time::now_ms(), |a| alert_messages(a, &config)).unwrap();
    deliver::step(&store, &config, hedgerow::time::now_ms()).unwrap();
    let mail = relay.wait_for(1, Duration::from_secs(5));
    assert!(!mail[0].tls && mail[0].user.is_none() && mail[0].rcpt_to == [DSL], "{mail:?}");
    assert_eq!(store.outbox_counts().unwrap().sent, 2);
}
