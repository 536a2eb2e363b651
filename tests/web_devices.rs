//! The Devices page at router level (`web::app(state)` driven with
//! `oneshot`, real SQLite files in a tempdir): only admins reach each route
//! (dsl and governors get 403 and no device detail); a change without the
//! CSRF token is refused; add, edit and remove round trip, each recorded
//! with the admin's name; bad values shown beside their field with what was
//! typed kept; a CSV import with a bad line reported by its number while the
//! good lines are saved; the CSV export defuses formulas; and the DHCP
//! leases status after a real leases file is read.

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use axum::http::{StatusCode, header};
use hedgerow::config::{Config, LeasesFormat};
use hedgerow::dns::Pipeline;
use hedgerow::lists::compiled::CompiledLists;
use hedgerow::policy::SafeSearchMap;
use hedgerow::store::Role;
use hedgerow::store::devices::{Device, list_device_rows, upsert_device};
use hedgerow::web::AppState;

const PASSWORD: &str = "correct horse battery";

struct Dashboard {
    dir: tempfile::TempDir,
    state: AppState,
    database: PathBuf,
}

fn dashboard_with(leases: Option<(PathBuf, LeasesFormat)>) -> Dashboard {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut config: Config = support::config::forwarding(
        "127.0.0.1:9".parse().unwrap(),
        &data,
        &dir.path().join("lists"),
        "[[networks]]\nname = \"pupils\"\ncidrs = [\"10.0.0.0/24\"]\ngroup = \"pupil\"\n",
        "devices test",
    );
    config.dashboard = hedgerow::config::DashboardSettings::default();
    config.log.leases = leases;
    let pipeline = Arc::new(Pipeline::new(&config, CompiledLists::empty(), SafeSearchMap::default(), None).unwrap());
    let state = AppState::new(pipeline, &config).unwrap();
    let dashboard = Dashboard { database: config.log.database.clone(), state, dir };
    for (name, role) in [("ada", Role::Admin), ("dee", Role::Dsl), ("gov", Role::Governor)] {
        dashboard.state.users().add(name, PASSWORD, &[role], hedgerow::time::now_ms()).unwrap();
    }
    upsert_device(
        &dashboard.database,
        &Device {
            ip: Some("10.0.0.5".parse().unwrap()),
            mac: None,
            name: "lab-pc-3".into(),
            owner: Some("Ms Lee".into()),
            group: None,
            source: "manual".into(),
        },
    )
    .unwrap();
    dashboard
}

fn dashboard() -> Dashboard {
    dashboard_with(None)
}

use support::router::Reply;

impl Dashboard {
    async fn send(&self, path: &str, cookie: Option<&str>, method: &str, body: &str) -> Reply {
        let form = "application/x-www-form-urlencoded";
        support::router::send(&self.state, support::router::request(method, path, cookie, form, body.to_string())).await
    }

    async fn get(&self, path: &str, cookie: &str) -> Reply {
        self.send(path, Some(cookie), "GET", "").await
    }

    /// A form posted with the session's CSRF token.
    async fn post(&self, path: &str, session: &Session, fields: &[(&str, &str)]) -> Reply {
        let mut body = format!("csrf={}", encode(&session.csrf));
        for (key, value) in fields {
            body.push_str(&format!("&{key}={}", encode(value)));
        }
        self.send(path, Some(&session.cookie), "POST", &body).await
    }

    async fn login(&self, name: &str) -> Session {
        let body = format!("name={name}&password={}&next=/", PASSWORD.replace(' ', "+"));
        let reply = self.send("/login", None, "POST", &body).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        let set = reply.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap();
        let cookie = set.split(';').next().unwrap().to_string();
        let home = self.get("/", &cookie).await;
        let marker = "name=\"csrf\" value=\"";
        let at = home.body.find(marker).expect("the layout carries the CSRF token") + marker.len();
        let csrf = home.body[at..at + home.body[at..].find('"').unwrap()].to_string();
        Session { cookie, csrf }
    }

    fn device_id(&self, name: &str) -> i64 {
        list_device_rows(&self.database).unwrap().into_iter().find(|row| row.device.name == name).unwrap().id
    }
}

struct Session {
    cookie: String,
    csrf: String,
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// The text of the field error with this id.
fn field_error(html: &str, id: &str) -> Option<String> {
    let marker = format!("id=\"{id}\" class=\"field-error\">");
    let at = html.find(&marker)? + marker.len();
    Some(html[at..at + html[at..].find('<').unwrap()].to_string())
}

#[tokio::test]
async fn every_route_is_for_admins_only() {
    let dashboard = dashboard();
    let id = dashboard.device_id("lab-pc-3");
    let governor = dashboard.login("gov").await;
    let dsl = dashboard.login("dee").await;
    let admin = dashboard.login("ada").await;
    let gets = ["/devices".to_string(), "/devices.csv".into(), "/api/devices".into(), format!("/devices/{id}/edit")];
    for path in &gets {
        let anonymous = dashboard.send(path, None, "GET", "").await;
        assert!(matches!(anonymous.status, StatusCode::SEE_OTHER | StatusCode::UNAUTHORIZED), "{path}");
        for session in [&governor, &dsl] {
            let refused = dashboard.get(path, &session.cookie).await;
            assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path}");
            assert!(!refused.body.contains("lab-pc-3") && !refused.body.contains("10.0.0.5"), "{path}");
        }
        let reply = dashboard.get(path, &admin.cookie).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
        assert!(reply.body.contains("lab-pc-3"), "{path}");
    }
    let posts = [
        ("/devices".to_string(), vec![("ip", "10.0.0.9"), ("name", "x")]),
        ("/devices/import".into(), vec![("csv", "ip,name\n10.0.0.9,x\n")]),
        ("/devices/leases".into(), vec![]),
        (format!("/devices/{id}/edit"), vec![("ip", "10.0.0.9"), ("name", "x")]),
        (format!("/devices/{id}/remove"), vec![("confirm", "on")]),
    ];
    for (path, fields) in &posts {
        for session in [&governor, &dsl] {
            let refused = dashboard.post(path, session, fields).await;
            assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path}");
            assert!(!refused.body.contains("lab-pc-3"), "{path}");
        }
        // Without the CSRF token, even an admin is refused.
        let body: String = fields.iter().map(|(k, v)| format!("{k}={}&", encode(v))).collect();
        let forged = dashboard.send(path, Some(&admin.cookie), "POST", &body).await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN, "{path}: {}", forged.body);
    }
    let rows = list_device_rows(&dashboard.database).unwrap();
    assert_eq!(rows.len(), 1, "nothing refused was saved");
    assert_eq!(rows[0].device.name, "lab-pc-3");
    // The nav offers Devices to admins only.
    assert!(dashboard.get("/", &admin.cookie).await.body.contains("href=\"/devices\""));
    for session in [&governor, &dsl] {
        assert!(!dashboard.get("/", &session.cookie).await.body.contains("href=\"/devices\""));
    }
}

#[tokio::test]
async fn add_edit_and_remove_round_trip_with_the_admins_name_recorded() {
    let dashboard = dashboard();
    let admin = dashboard.login("ada").await;
    let fields = [
        ("ip", "10.0.0.40"),
        ("mac", "3C-22-FB-01-A4-9E"),
        ("name", "staff-laptop-7"),
        ("owner", "Ms Okafor"),
        ("group", "pupil"),
    ];
    let added = dashboard.post("/devices", &admin, &fields).await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.body);
    assert!(added.body.contains("Saved staff-laptop-7."));
    let id = dashboard.device_id("staff-laptop-7");
    let row = list_device_rows(&dashboard.database).unwrap().into_iter().find(|row| row.id == id).unwrap();
    assert_eq!(row.device.mac.as_deref(), Some("3c:22:fb:01:a4:9e"));
    assert_eq!(row.device.group.as_deref(), Some("pupil"));
    assert_eq!(row.device.source, "manual");

    let form = dashboard.get(&format!("/devices/{id}/edit"), &admin.cookie).await;
    assert!(form.body.contains("value=\"Ms Okafor\"") && form.body.contains("href=\"/device/10.0.0.40\""));
    let edit = [
        ("ip", "10.0.0.41"),
        ("mac", "3c:22:fb:01:a4:9e"),
        ("name", "staff-laptop-8"),
        ("owner", "Mr Hale"),
        ("group", ""),
    ];
    let edited = dashboard.post(&format!("/devices/{id}/edit"), &admin, &edit).await;
    assert_eq!(edited.status, StatusCode::SEE_OTHER, "{}", edited.body);
    let row = list_device_rows(&dashboard.database).unwrap().into_iter().find(|row| row.id == id).unwrap();
    assert_eq!(row.device.name, "staff-laptop-8");
    assert_eq!(row.device.ip, Some("10.0.0.41".parse().unwrap()));
    assert_eq!(row.device.owner.as_deref(), Some("Mr Hale"));
    assert_eq!(row.device.group, None);

    // Removal asks for a ticked confirmation first.
    let unconfirmed = dashboard.post(&format!("/devices/{id}/remove"), &admin, &[]).await;
    assert_eq!(unconfirmed.status, StatusCode::BAD_REQUEST);
    assert!(field_error(&unconfirmed.body, "remove-error").unwrap().contains("tick the box"));
    assert_eq!(list_device_rows(&dashboard.database).unwrap().len(), 2);
    let removed = dashboard.post(&format!("/devices/{id}/remove"), &admin, &[("confirm", "on")]).await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.body);
    assert!(removed.body.contains("Removed staff-laptop-8."));
    assert_eq!(list_device_rows(&dashboard.database).unwrap().len(), 1);

    // Each change, with who made it, what it was before and after.
    let page = dashboard.get("/devices", &admin.cookie).await;
    let changes = &page.body[page.body.find("Recent changes").unwrap()..];
    for expected in ["ada (10.0.0.1)", "added", "edited", "removed", "staff-laptop-7 (ip 10.0.0.40", "owner Mr Hale"] {
        assert!(changes.contains(expected), "{expected} in {changes}");
    }
    let removed = dashboard.get(&format!("/devices/{id}/edit"), &admin.cookie).await;
    assert_eq!(removed.status, StatusCode::NOT_FOUND);
    let nonsense = dashboard.get("/devices/lab-pc/edit", &admin.cookie).await;
    assert_eq!(nonsense.status, StatusCode::NOT_FOUND);
    assert!(nonsense.body.contains("no such page"));
}

#[tokio::test]
async fn bad_values_are_shown_beside_their_fields_and_the_form_keeps_what_was_typed() {
    let dashboard = dashboard();
    let admin = dashboard.login("ada").await;
    let bad =
        [("ip", "10.0.0.300"), ("mac", "not-a-mac"), ("name", "  "), ("owner", "Mrs O'Neil"), ("group", "wizards")];
    let reply = dashboard.post("/devices", &admin, &bad).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(field_error(&reply.body, "dev-ip-error").unwrap().contains("not an IP address"));
    assert!(field_error(&reply.body, "dev-mac-error").unwrap().contains("not a MAC address"));
    assert!(field_error(&reply.body, "dev-name-error").unwrap().contains("give the device a name"));
    assert!(field_error(&reply.body, "dev-group-error").unwrap().contains("not configured"));
    assert!(reply.body.contains("value=\"10.0.0.300\"") && reply.body.contains("value=\"not-a-mac\""));
    assert!(reply.body.contains("value=\"Mrs O&#x27;Neil\"") || reply.body.contains("value=\"Mrs O&#39;Neil\""));
    let neither = dashboard.post("/devices", &admin, &[("name", "orphan")]).await;
    assert_eq!(neither.status, StatusCode::BAD_REQUEST);
    assert!(field_error(&neither.body, "dev-ip-error").unwrap().contains("IP address or a MAC address"));
    assert!(neither.body.contains("value=\"orphan\""));
    assert_eq!(list_device_rows(&dashboard.database).unwrap().len(), 1, "nothing bad was saved");

    // The edit form too, and a MAC another device has.
    upsert_device(
        &dashboard.database,
        &Device {
            ip: None,
            mac: Some("3c:22:fb:00:00:01".into()),
            name: "tablet-1".into(),
            owner: None,
            group: None,
            source: "manual".into(),
        },
    )
    .unwrap();
    let id = dashboard.device_id("lab-pc-3");
    let taken = [("ip", "10.0.0.5"), ("mac", "3c:22:fb:00:00:01"), ("name", "lab-pc-3")];
    let reply = dashboard.post(&format!("/devices/{id}/edit"), &admin, &taken).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(field_error(&reply.body, "dev-mac-error").unwrap().contains("tablet-1"));
    let reply = dashboard.post(&format!("/devices/{id}/edit"), &admin, &[("ip", "nope"), ("name", "renamed")]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(field_error(&reply.body, "dev-ip-error").is_some());
    assert!(reply.body.contains("value=\"renamed\""));
    assert_eq!(
        list_device_rows(&dashboard.database).unwrap().iter().filter(|r| r.device.name == "lab-pc-3").count(),
        1
    );
}

#[tokio::test]
async fn a_csv_import_saves_good_lines_and_reports_bad_ones_by_number() {
    let dashboard = dashboard();
    let admin = dashboard.login("ada").await;
    let csv = "ip,mac,name,owner,group\n10.0.0.20,,lab-pc-20,ICT suite,pupil\n10.0.0.999,,broken,,\n,3c:22:fb:01:02:03,ipad-7,\"Smith, J\",pupil\n10.0.0.22,,lab-pc-22,,martians\n";
    let reply = dashboard.post("/devices/import", &admin, &[("csv", csv)]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(reply.body.contains("Imported 2 devices"), "{}", reply.body);
    assert!(
        reply.body.contains("Line 3: &quot;10.0.0.999&quot; is not an IP address")
            || reply.body.contains("Line 3: &#34;10.0.0.999&#34; is not an IP address"),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("Line 5: group"), "{}", reply.body);
    let names: Vec<String> =
        list_device_rows(&dashboard.database).unwrap().into_iter().map(|row| row.device.name).collect();
    assert!(names.contains(&"lab-pc-20".to_string()) && names.contains(&"ipad-7".to_string()), "{names:?}");
    assert!(!names.contains(&"broken".to_string()) && !names.contains(&"lab-pc-22".to_string()));
    // A file with no usable header is refused beside the box, the text kept.
    let reply = dashboard.post("/devices/import", &admin, &[("csv", "hostname\nfoo\n")]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(field_error(&reply.body, "import-csv-error").unwrap().contains("header"));
    assert!(reply.body.contains(">hostname\nfoo\n</textarea>"));
    assert!(reply.body.contains("ip,mac,name,owner,group"), "the template is shown");

    // The export: every device, formula-like cells defused, commas quoted.
    upsert_device(
        &dashboard.database,
        &Device {
            ip: Some("10.0.0.66".parse().unwrap()),
            mac: None,
            name: "=HYPERLINK(\"x\")".into(),
            owner: Some("+44 owner".into()),
            group: None,
            source: "manual".into(),
        },
    )
    .unwrap();
    let export = dashboard.get("/devices.csv", &admin.cookie).await;
    assert_eq!(export.status, StatusCode::OK);
    assert!(
        export.headers.get(header::CONTENT_DISPOSITION).unwrap().to_str().unwrap().contains("hedgerow-devices.csv")
    );
    let mut reader = csv::ReaderBuilder::new().from_reader(export.body.as_bytes());
    let rows: Vec<Vec<String>> = reader.records().map(|r| r.unwrap().iter().map(String::from).collect()).collect();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().any(|row| row[2] == "'=HYPERLINK(\"x\")" && row[3] == "'+44 owner"), "{rows:?}");
    assert!(rows.iter().any(|row| row[2] == "ipad-7" && row[3] == "Smith, J"), "{rows:?}");

    // The JSON twin and the filter.
    let json = dashboard.get("/api/devices?q=ipad", &admin.cookie).await;
    let value: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(value["total"], 1);
    assert_eq!(value["devices"][0]["name"], "ipad-7");
    assert_eq!(value["devices"][0]["mac"], "3c:22:fb:01:02:03");
    assert!(value["leases"].is_null());
    let page = dashboard.get("/devices?q=10.0.0.2", &admin.cookie).await;
    assert!(page.body.contains("lab-pc-20") && !page.body.contains(">lab-pc-3<"));
}

#[tokio::test]
async fn the_page_pages_a_long_table() {
    let dashboard = dashboard();
    let admin = dashboard.login("ada").await;
    let mut csv = String::from("ip,name\n");
    for n in 0..250 {
        csv.push_str(&format!("10.1.{}.{},pc-{n:03}\n", n / 200, n % 200 + 1));
    }
    let reply = dashboard.post("/devices/import", &admin, &[("csv", &csv)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let first = dashboard.get("/devices", &admin.cookie).await;
    assert!(first.body.contains("page 1 of 3") && first.body.contains(">pc-000<") && !first.body.contains(">pc-150<"));
    let third = dashboard.get("/devices?page=3", &admin.cookie).await;
    assert!(third.body.contains(">pc-249<") && !third.body.contains(">pc-000<"));
    let filtered = dashboard.get("/devices?q=pc-24&page=1", &admin.cookie).await;
    assert!(filtered.body.contains("10 devices match"), "pc-240..249");
}

#[tokio::test]
async fn the_leases_status_after_a_real_leases_file_is_read() {
    // No file configured: the page says how to set one.
    let plain = dashboard();
    let admin = plain.login("ada").await;
    let page = plain.get("/devices", &admin.cookie).await;
    assert!(page.body.contains("No leases file is configured.") && page.body.contains("leases_file"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dnsmasq.leases");
    let dashboard = dashboard_with(Some((file.clone(), LeasesFormat::Dnsmasq)));
    let admin = dashboard.login("ada").await;
    let page = dashboard.get("/devices", &admin.cookie).await;
    assert!(page.body.contains("not read yet") && page.body.contains("dnsmasq.leases (dnsmasq)"));

    // Missing: the error is shown.
    let reply = dashboard.post("/devices/leases", &admin, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.contains("Could not read the leases file"), "{}", reply.body);
    assert!(reply.body.contains("Last error"));

    let now = hedgerow::time::now_ms() / 1000;
    std::fs::write(
        &file,
        format!(
            "{} 3c:22:fb:11:22:33 10.0.0.50 pupil-ipad-17 *\n{} 3c:22:fb:11:22:44 10.0.0.51 old-phone *\n{} 3c:22:fb:11:22:55 10.0.0.52 chromebook-9 *\n",
            now + 86_400,
            now - 86_400,
            now + 3600
        ),
    )
    .unwrap();
    let reply = dashboard.post("/devices/leases", &admin, &[]).await;
    assert!(reply.body.contains("2 current leases, 2 devices named or updated"), "{}", reply.body);
    assert!(reply.body.contains("2 current of 3 in the file"));
    assert!(!reply.body.contains("Last error"), "a good reading clears the error");
    assert!(reply.body.contains(">pupil-ipad-17<") && reply.body.contains("source-dhcp"));
    // Read again, unchanged: nothing named, the time kept on disk.
    let again = dashboard.post("/devices/leases", &admin, &[]).await;
    assert!(again.body.contains("0 devices named or updated"), "{}", again.body);
    let status = hedgerow::store::devices::leases_status(&dashboard.database).unwrap().unwrap();
    assert_eq!((status.leases, status.current, status.changed), (3, 2, 0));
    assert!(status.read_ms.is_some() && status.error.is_none());
    let json = dashboard.get("/api/devices", &admin.cookie).await;
    let value: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(value["leases"]["current"], 2);
    assert_eq!(value["leases"]["format"], "dnsmasq");
    let _ = &dashboard.dir;
}

/// A secondary school's device table: 2,500 devices imported in one paste
/// are all saved, every page of the table answers, the filter finds the
/// hundred whose names contain `device-12`, and the export holds them all.
/// (Server time is measured by `cargo bench --bench dashboard`, not here.)
#[tokio::test]
async fn a_school_of_2500_devices_imports_pages_filters_and_exports() {
    let dashboard = dashboard();
    let admin = dashboard.login("ada").await;
    let mut csv = String::from("ip,mac,name,owner,group\n");
    for n in 0..2500u32 {
        csv.push_str(&format!(
            "10.{}.{}.{},3c:22:fb:{:02x}:{:02x}:{:02x},device-{n:04},Owner {n},{}\n",
            20 + n / 60000,
            (n / 250) % 250,
            n % 250 + 1,
            n >> 16 & 0xff,
            n >> 8 & 0xff,
            n & 0xff,
            if n % 3 == 0 { "staff" } else { "pupil" }
        ));
    }
    let reply = dashboard.post("/devices/import", &admin, &[("csv", &csv)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", &reply.body[..reply.body.len().min(2000)]);
    assert_eq!(list_device_rows(&dashboard.database).unwrap().len(), 2501);
    for path in ["/devices", "/devices?q=device-12&page=1", "/devices?page=25"] {
        assert_eq!(dashboard.get(path, &admin.cookie).await.status, StatusCode::OK, "{path}");
    }
    let all: serde_json::Value =
        serde_json::from_str(&dashboard.get("/api/devices", &admin.cookie).await.body).unwrap();
    assert_eq!(all["total"], 2501);
    let found = dashboard.get("/api/devices?q=device-12", &admin.cookie).await;
    let found: serde_json::Value = serde_json::from_str(&found.body).unwrap();
    assert_eq!(found["total"], 100);
    let export = dashboard.get("/devices.csv", &admin.cookie).await;
    assert_eq!(export.body.lines().count(), 2502);
}
