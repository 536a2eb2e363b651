//! The Devices page (admin): `GET /devices` the device table (filter by
//! name, owner, IP or MAC; 100 a page), each row linking to its history
//! (`/device/{client}`) and its edit form; `POST /devices` adds one;
//! `GET/POST /devices/{id}/edit` edits one; `POST /devices/{id}/remove`
//! removes one (a ticked confirmation); `POST /devices/import` a pasted CSV
//! (`ip,mac,name,owner,group`; bad rows listed by line); `GET /devices.csv`
//! the table as CSV (spreadsheet-safe); the DHCP leases file's last reading
//! and `POST /devices/leases` to read it now. Every change is written to the
//! device audit with the admin's name and address (shown on the page).
//! `GET /api/devices`: the table and the leases status as JSON.

use std::net::IpAddr;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::{ClientAddress, Form, Layout, encode, query_string, render_with, when};
use crate::store::csv::format_record;
use crate::store::devices::{self, Device, DeviceChange, DeviceRow, ImportReport, LeasesStatus, normalise_mac};
use crate::web::{AppState, RequireAdmin, WebError};

/// Devices on a page.
pub const PAGE: usize = 100;

/// Device changes shown.
const RECENT: usize = 10;

/// The CSV template shown on the page.
const TEMPLATE: &str =
    "ip,mac,name,owner,group\n10.20.0.15,,lab-pc-15,ICT suite,pupil\n,3c:22:fb:01:a4:9e,staff-laptop-7,Ms Okafor,staff";

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Filter {
    /// Part of a name, owner, IP or MAC.
    q: String,
    /// 1-based.
    page: String,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct DeviceForm {
    ip: String,
    mac: String,
    name: String,
    owner: String,
    group: String,
}

/// A form's refusals, by field (`form` for one that belongs to no field).
#[derive(Debug, Clone, Default)]
struct FieldErrors {
    ip: String,
    mac: String,
    name: String,
    group: String,
    form: String,
}

impl FieldErrors {
    fn any(&self) -> bool {
        [&self.ip, &self.mac, &self.name, &self.group, &self.form].iter().any(|error| !error.is_empty())
    }
}

struct TableRow {
    id: i64,
    name: String,
    owner: String,
    group: String,
    ip: String,
    mac: String,
    source: String,
    history: String,
}

struct ChangeRow {
    when: String,
    user: String,
    action: String,
    device: String,
    old: String,
    new: String,
}

/// The leases status as the page says it.
struct LeasesView {
    configured: bool,
    file: String,
    format: String,
    read: String,
    leases: usize,
    current: usize,
    changed: usize,
    error: String,
    error_when: String,
}

#[derive(Template)]
#[template(path = "devices.html")]
struct DevicesPage {
    layout: Layout,
    notice: String,
    q: String,
    rows: Vec<TableRow>,
    total: usize,
    matched: usize,
    page: usize,
    pages: usize,
    query_attr: String,
    groups: Vec<String>,
    form: DeviceForm,
    errors: FieldErrors,
    import_text: String,
    import_error: String,
    report: Option<ImportReport>,
    template: &'static str,
    leases: LeasesView,
    changes: Vec<ChangeRow>,
}

#[derive(Template)]
#[template(path = "device_edit.html")]
struct EditPage {
    layout: Layout,
    id: i64,
    title: String,
    history: String,
    groups: Vec<String>,
    form: DeviceForm,
    errors: FieldErrors,
    remove_error: String,
}

/// A device id from the path; anything else is no such device.
fn device_id(text: &str) -> Result<i64, WebError> {
    text.parse().map_err(|_| WebError::NotFound)
}

fn text(value: &Option<String>) -> String {
    value.clone().unwrap_or_default()
}

/// Where a device's history is: by address, else by name.
fn history_href(device: &Device) -> String {
    match device.ip {
        Some(ip) => format!("/device/{}", encode(&ip.to_string())),
        None => format!("/device/{}", encode(&device.name)),
    }
}

fn groups(state: &AppState) -> Vec<String> {
    state.config().groups.keys().cloned().collect()
}

/// The device a form describes, or its refusals beside their fields.
fn validate(form: &DeviceForm, groups: &[String]) -> Result<Device, FieldErrors> {
    let mut errors = FieldErrors::default();
    let ip = match form.ip.trim() {
        "" => None,
        ip => match ip.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                errors.ip = format!("{ip:?} is not an IP address (for example 10.20.0.15 or fd00::15)");
                None
            }
        },
    };
    let mac = match form.mac.trim() {
        "" => None,
        mac => match normalise_mac(mac) {
            Some(mac) => Some(mac),
            None => {
                errors.mac = format!("{mac:?} is not a MAC address (for example 3c:22:fb:01:a4:9e)");
                None
            }
        },
    };
    if form.name.trim().is_empty() {
        errors.name = "give the device a name (for example lab-pc-15)".into();
    }
    let group = form.group.trim();
    if !group.is_empty() && !groups.iter().any(|known| known == group) {
        errors.group = format!("group {group:?} is not configured; choose one of: {}", groups.join(", "));
    }
    if form.ip.trim().is_empty() && form.mac.trim().is_empty() {
        errors.ip = "give an IP address or a MAC address (or both)".into();
    }
    if errors.any() {
        return Err(errors);
    }
    let label = |value: &str| Some(value.trim().to_string()).filter(|value| !value.is_empty());
    Ok(Device {
        ip,
        mac,
        name: form.name.trim().to_string(),
        owner: label(&form.owner),
        group: label(group),
        source: "manual".into(),
    })
}

fn form_of(device: &Device) -> DeviceForm {
    DeviceForm {
        ip: device.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        mac: text(&device.mac),
        name: device.name.clone(),
        owner: text(&device.owner),
        group: text(&device.group),
    }
}

fn leases_view(state: &AppState, status: Option<LeasesStatus>) -> LeasesView {
    let config = state.config();
    let configured = config.log.leases.as_ref();
    // A reading of another file (the config named a different one then) says nothing of this one.
    let status = status
        .filter(|status| configured.is_none_or(|(file, _)| file.display().to_string() == status.file))
        .unwrap_or_default();
    let (file, format) = match configured {
        Some((file, format)) => (
            file.display().to_string(),
            match format {
                crate::config::LeasesFormat::Dnsmasq => "dnsmasq".to_string(),
                crate::config::LeasesFormat::Isc => "isc".to_string(),
            },
        ),
        None => (status.file.clone(), status.format.clone()),
    };
    LeasesView {
        configured: configured.is_some(),
        file,
        format,
        read: status.read_ms.map(|ms| when(state, ms)).unwrap_or_default(),
        leases: status.leases,
        current: status.current,
        changed: status.changed,
        error: status.error.unwrap_or_default(),
        error_when: status.error_ms.map(|ms| when(state, ms)).unwrap_or_default(),
    }
}

/// What the list page shows besides the table.
#[derive(Default)]
struct Extra {
    notice: String,
    form: DeviceForm,
    errors: FieldErrors,
    import_text: String,
    import_error: String,
    report: Option<ImportReport>,
}

fn matches(row: &DeviceRow, needle: &str) -> bool {
    let device = &row.device;
    let has = |value: &str| value.to_lowercase().contains(needle);
    has(&device.name)
        || device.owner.as_deref().is_some_and(has)
        || device.ip.is_some_and(|ip| ip.to_string().contains(needle))
        || device.mac.as_deref().is_some_and(has)
}

async fn show(
    state: &AppState,
    admin: &RequireAdmin,
    filter: Filter,
    status: StatusCode,
    extra: Extra,
) -> Result<Response, WebError> {
    let (all, leases, changes) = state
        .blocking(|state| -> Result<_, crate::store::StoreError> {
            let db = state.database();
            Ok((
                devices::list_device_rows(db)?,
                devices::leases_status(db)?,
                devices::recent_device_changes(db, RECENT)?,
            ))
        })
        .await??;
    let q = filter.q.trim().to_string();
    let needle = q.to_lowercase();
    let total = all.len();
    let matched: Vec<&DeviceRow> = all.iter().filter(|row| needle.is_empty() || matches(row, &needle)).collect();
    let pages = matched.len().div_ceil(PAGE).max(1);
    let page = filter.page.trim().parse::<usize>().unwrap_or(1).clamp(1, pages);
    let rows = matched
        .iter()
        .skip((page - 1) * PAGE)
        .take(PAGE)
        .map(|row| {
            let device = &row.device;
            TableRow {
                id: row.id,
                name: device.name.clone(),
                owner: text(&device.owner),
                group: text(&device.group),
                ip: device.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                mac: text(&device.mac),
                source: device.source.clone(),
                history: history_href(device),
            }
        })
        .collect();
    let changes = changes
        .into_iter()
        .map(|change| ChangeRow {
            when: when(state, change.time_ms),
            user: format!("{} ({})", change.user, change.address),
            action: change.action,
            device: change.device,
            old: change.old,
            new: change.new,
        })
        .collect();
    let page_view = DevicesPage {
        layout: Layout::for_user("Devices", &admin, "/devices"),
        notice: extra.notice,
        query_attr: query_string(&[("q", &q)]),
        q,
        rows,
        total,
        matched: matched.len(),
        page,
        pages,
        groups: groups(state),
        form: extra.form,
        errors: extra.errors,
        import_text: extra.import_text,
        import_error: extra.import_error,
        report: extra.report,
        template: TEMPLATE,
        leases: leases_view(state, leases),
        changes,
    };
    Ok(render_with(status, &page_view))
}

pub async fn page(
    State(state): State<AppState>,
    admin: RequireAdmin,
    Query(filter): Query<Filter>,
) -> Result<Response, WebError> {
    show(&state, &admin, filter, StatusCode::OK, Extra::default()).await
}

fn audit(admin: &RequireAdmin, address: &str, action: &str, device: &str, old: String, new: String) -> DeviceChange {
    DeviceChange {
        time_ms: crate::time::now_ms(),
        user: admin.user.name.clone(),
        address: address.to_string(),
        action: action.to_string(),
        device: device.to_string(),
        old,
        new,
    }
}

pub async fn add(
    State(state): State<AppState>,
    admin: RequireAdmin,
    ClientAddress(address): ClientAddress,
    Form(form): Form<DeviceForm>,
) -> Result<Response, WebError> {
    let device = match validate(&form, &groups(&state)) {
        Ok(device) => device,
        Err(errors) => {
            let extra = Extra { form, errors, ..Extra::default() };
            return show(&state, &admin, Filter::default(), StatusCode::BAD_REQUEST, extra).await;
        }
    };
    let change = audit(&admin, &address, "added", &device.name, "(none)".into(), devices::describe(&device));
    let saved = state
        .blocking(move |state| -> Result<Result<i64, String>, crate::store::StoreError> {
            let db = state.database();
            match devices::add_device(db, &device) {
                Ok(id) => {
                    devices::record_device_change(db, &change)?;
                    Ok(Ok(id))
                }
                Err(crate::store::StoreError::Invalid(message)) => Ok(Err(message)),
                Err(error) => Err(error),
            }
        })
        .await??;
    match saved {
        Ok(_) => {
            let notice = format!("Saved {}.", form.name.trim());
            show(&state, &admin, Filter::default(), StatusCode::OK, Extra { notice, ..Extra::default() }).await
        }
        Err(message) => {
            let errors = FieldErrors { form: message, ..FieldErrors::default() };
            show(&state, &admin, Filter::default(), StatusCode::BAD_REQUEST, Extra { form, errors, ..Extra::default() })
                .await
        }
    }
}

async fn edit_page(
    state: &AppState,
    admin: &RequireAdmin,
    id: i64,
    status: StatusCode,
    form: Option<(DeviceForm, FieldErrors)>,
    remove_error: String,
) -> Result<Response, WebError> {
    let found = state.blocking(move |state| devices::get_device(state.database(), id)).await??;
    let Some(row) = found else { return Err(WebError::NotFound) };
    let (form, errors) = form.unwrap_or_else(|| (form_of(&row.device), FieldErrors::default()));
    let page = EditPage {
        layout: Layout::for_user(&format!("Edit {}", row.device.name), &admin, "/devices"),
        id,
        title: row.device.name.clone(),
        history: history_href(&row.device),
        groups: groups(state),
        form,
        errors,
        remove_error,
    };
    Ok(render_with(status, &page))
}

pub async fn edit_form(
    State(state): State<AppState>,
    admin: RequireAdmin,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let id = device_id(&id)?;
    edit_page(&state, &admin, id, StatusCode::OK, None, String::new()).await
}

pub async fn edit(
    State(state): State<AppState>,
    admin: RequireAdmin,
    ClientAddress(address): ClientAddress,
    Path(id): Path<String>,
    Form(form): Form<DeviceForm>,
) -> Result<Response, WebError> {
    let id = device_id(&id)?;
    let device = match validate(&form, &groups(&state)) {
        Ok(device) => device,
        Err(errors) => {
            return edit_page(&state, &admin, id, StatusCode::BAD_REQUEST, Some((form, errors)), String::new()).await;
        }
    };
    let (user, address_for) = (admin.user.name.clone(), address.clone());
    let outcome = state
        .blocking(move |state| -> Result<_, crate::store::StoreError> {
            let db = state.database();
            let before = devices::get_device(db, id)?;
            let saved = devices::update_device(db, id, &device)?;
            if let (Some(before), Ok(Some(saved))) = (&before, &saved) {
                devices::record_device_change(
                    db,
                    &DeviceChange {
                        time_ms: crate::time::now_ms(),
                        user,
                        address: address_for,
                        action: "edited".into(),
                        device: saved.device.name.clone(),
                        old: devices::describe(&before.device),
                        new: devices::describe(&saved.device),
                    },
                )?;
            }
            Ok(saved)
        })
        .await??;
    match outcome {
        Ok(Some(saved)) => Ok(Redirect::to(&format!("/devices?q={}", encode(&saved.device.name))).into_response()),
        Ok(None) => Err(WebError::NotFound),
        Err(refused) => {
            let mut errors = FieldErrors::default();
            match refused.field {
                "mac" => errors.mac = refused.message,
                _ => errors.form = refused.message,
            }
            edit_page(&state, &admin, id, StatusCode::BAD_REQUEST, Some((form, errors)), String::new()).await
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct RemoveForm {
    confirm: String,
}

pub async fn remove(
    State(state): State<AppState>,
    admin: RequireAdmin,
    ClientAddress(address): ClientAddress,
    Path(id): Path<String>,
    Form(form): Form<RemoveForm>,
) -> Result<Response, WebError> {
    let id = device_id(&id)?;
    if !super::checked(&form.confirm) {
        let message = "tick the box to confirm: the device loses its name, owner and group".to_string();
        return edit_page(&state, &admin, id, StatusCode::BAD_REQUEST, None, message).await;
    }
    let user = admin.user.name.clone();
    let removed = state
        .blocking(move |state| -> Result<_, crate::store::StoreError> {
            let db = state.database();
            let removed = devices::remove_device_by_id(db, id)?;
            if let Some(row) = &removed {
                devices::record_device_change(
                    db,
                    &DeviceChange {
                        time_ms: crate::time::now_ms(),
                        user,
                        address,
                        action: "removed".into(),
                        device: row.device.name.clone(),
                        old: devices::describe(&row.device),
                        new: "(none)".into(),
                    },
                )?;
            }
            Ok(removed)
        })
        .await??;
    let Some(row) = removed else { return Err(WebError::NotFound) };
    let notice = format!("Removed {}.", row.device.name);
    show(&state, &admin, Filter::default(), StatusCode::OK, Extra { notice, ..Extra::default() }).await
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct ImportForm {
    csv: String,
}

pub async fn import(
    State(state): State<AppState>,
    admin: RequireAdmin,
    ClientAddress(address): ClientAddress,
    Form(form): Form<ImportForm>,
) -> Result<Response, WebError> {
    let groups = groups(&state);
    let (text, user) = (form.csv.clone(), admin.user.name.clone());
    let outcome = state
        .blocking(move |state| -> Result<Result<ImportReport, String>, crate::store::StoreError> {
            let db = state.database();
            let names: Vec<&str> = groups.iter().map(String::as_str).collect();
            match devices::import_csv_for_groups(db, &text, &names) {
                Ok(report) => {
                    let summary = format!("{} saved, {} refused", report.imported, report.errors.len());
                    devices::record_device_change(
                        db,
                        &DeviceChange {
                            time_ms: crate::time::now_ms(),
                            user,
                            address,
                            action: "imported".into(),
                            device: "CSV import".into(),
                            old: String::new(),
                            new: summary,
                        },
                    )?;
                    Ok(Ok(report))
                }
                Err(crate::store::StoreError::Invalid(message)) => Ok(Err(message)),
                Err(error) => Err(error),
            }
        })
        .await??;
    match outcome {
        Ok(report) => {
            let status = if report.errors.is_empty() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
            let notice = format!(
                "Imported {} device{}{}.",
                report.imported,
                if report.imported == 1 { "" } else { "s" },
                match report.errors.len() {
                    0 => String::new(),
                    1 => "; 1 line refused, listed below".to_string(),
                    n => format!("; {n} lines refused, listed below"),
                }
            );
            // The refused lines stay in the box to correct and send again.
            let import_text = if report.errors.is_empty() { String::new() } else { form.csv };
            let extra = Extra { notice, report: Some(report), import_text, ..Extra::default() };
            show(&state, &admin, Filter::default(), status, extra).await
        }
        Err(message) => {
            let extra = Extra { import_error: message, import_text: form.csv, ..Extra::default() };
            show(&state, &admin, Filter::default(), StatusCode::BAD_REQUEST, extra).await
        }
    }
}

/// `GET /devices.csv`: the whole table, each cell spreadsheet-safe.
pub async fn csv(State(state): State<AppState>, _admin: RequireAdmin) -> Result<Response, WebError> {
    let rows = state.blocking(|state| devices::list_device_rows(state.database())).await??;
    let safe = crate::present::log::spreadsheet_safe;
    let mut body = format_record(&["ip", "mac", "name", "owner", "group", "source"]);
    body.push_str("\r\n");
    for row in rows {
        let device = row.device;
        let cells = [
            device.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            device.mac.unwrap_or_default(),
            device.name,
            device.owner.unwrap_or_default(),
            device.group.unwrap_or_default(),
            device.source,
        ];
        body.push_str(&format_record(&cells.map(safe)));
        body.push_str("\r\n");
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"hedgerow-devices.csv\""),
        ],
        body,
    )
        .into_response())
}

/// `POST /devices/leases`: reads the configured leases file now.
pub async fn read_leases(State(state): State<AppState>, admin: RequireAdmin) -> Result<Response, WebError> {
    let Some((file, format)) = state.config().log.leases.clone() else {
        let notice = "No leases file is configured.".to_string();
        return show(&state, &admin, Filter::default(), StatusCode::BAD_REQUEST, Extra { notice, ..Extra::default() })
            .await;
    };
    let outcome = state.blocking(move |state| crate::serve::read_leases_file(state.database(), &file, format)).await?;
    let notice = match outcome {
        Ok(counted) => format!(
            "Read the leases file: {} current lease{}, {} device{} named or updated.",
            counted.current,
            if counted.current == 1 { "" } else { "s" },
            counted.changed,
            if counted.changed == 1 { "" } else { "s" }
        ),
        Err(error) => format!("Could not read the leases file: {error}"),
    };
    show(&state, &admin, Filter::default(), StatusCode::OK, Extra { notice, ..Extra::default() }).await
}

#[derive(Serialize)]
pub struct DevicesJson {
    pub total: usize,
    pub devices: Vec<DeviceRow>,
    /// `null` when no leases file is configured.
    pub leases: Option<LeasesStatus>,
}

/// `GET /api/devices?q=`: every device (or those `q` matches), with the leases status.
pub async fn api(
    State(state): State<AppState>,
    _admin: RequireAdmin,
    Query(filter): Query<Filter>,
) -> Result<axum::Json<DevicesJson>, WebError> {
    let (all, status) = state
        .blocking(|state| -> Result<_, crate::store::StoreError> {
            Ok((devices::list_device_rows(state.database())?, devices::leases_status(state.database())?))
        })
        .await??;
    let needle = filter.q.trim().to_lowercase();
    let devices: Vec<DeviceRow> = all.into_iter().filter(|row| needle.is_empty() || matches(row, &needle)).collect();
    let leases = state.config().log.leases.as_ref().map(|(file, _)| {
        let view = leases_view(&state, None);
        let status = status.filter(|status| file.display().to_string() == status.file).unwrap_or_default();
        LeasesStatus { file: view.file, format: view.format, ..status }
    });
    Ok(axum::Json(DevicesJson { total: devices.len(), devices, leases }))
}
