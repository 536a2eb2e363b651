//! "Test a name" (admin, dsl, governor): `GET /test` shows the form (and,
//! with `?name=`, the answer), `POST /test` answers it: the decision the
//! running server takes for a name asked by a group or from a client
//! address, with the same explanation `hedgerow check` prints
//! ([`Pipeline::decide`] and [`Explanation`]). Nothing is sent upstream.
//! `POST /api/check` is the same as JSON.

use std::net::IpAddr;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use hickory_proto::rr::{LowerName, Name, RecordType};
use serde::{Deserialize, Serialize};

use super::{Form, Json, Layout, render_with};
use crate::dns::{Explanation, Flow, Question, Requester};
use crate::web::{AppState, RequireAnyRole, WebError};

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct TestForm {
    pub name: String,
    /// A group's name, or "" to ask from `client`.
    pub group: String,
    /// A client address (used when no group is chosen).
    pub client: String,
    /// The record type (A when empty).
    #[serde(rename = "type")]
    pub record_type: String,
}

/// The answer, as shown and as the API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub name: String,
    pub record_type: String,
    /// "a member of group pupil" or "client 10.0.20.7".
    pub asked_by: String,
    /// "allowed", "blocked", "safesearch", "bypass", "refused" or "error".
    pub decision: String,
    pub stage: String,
    pub group: Option<String>,
    pub category: Option<String>,
    pub reason: String,
    /// The lines `hedgerow check` prints.
    pub explanation: String,
    /// What the answer would be.
    pub answer: String,
}

/// Answers `form` with the running pipeline; a bad value names its field.
fn decide(state: &AppState, form: &TestForm) -> Result<Verdict, WebError> {
    let config = state.config();
    let name = form.name.trim().trim_end_matches('.');
    if name.is_empty() {
        return Err(WebError::bad("name", "type a name to test, for example games.example"));
    }
    let type_word = if form.record_type.trim().is_empty() { "A" } else { form.record_type.trim() };
    let record_type: RecordType = type_word.to_ascii_uppercase().parse().map_err(|_| {
        WebError::bad("type", format!("{type_word:?} is not a DNS record type (try A, AAAA, HTTPS, TXT)"))
    })?;
    let parsed = Name::from_utf8(format!("{name}."))
        .map_err(|_| WebError::bad("name", format!("{name:?} is not a valid domain name")))?;
    let question = Question { name: LowerName::from(parsed), record_type, dnssec_ok: false };
    let group = form.group.trim();
    let client = form.client.trim();
    let (requester, asked_by) = if !group.is_empty() {
        if !config.groups.contains_key(group) {
            let known: Vec<&str> = config.groups.keys().map(String::as_str).collect();
            return Err(WebError::bad(
                "group",
                format!("there is no group {group:?}; choose one of {}", known.join(", ")),
            ));
        }
        (Requester::Group(group), format!("a member of group {group}"))
    } else if !client.is_empty() {
        let ip: IpAddr = client
            .parse()
            .map_err(|_| WebError::bad("client", format!("{client:?} is not an IP address (e.g. 10.0.20.7)")))?;
        (Requester::Source(ip), format!("client {ip}"))
    } else {
        return Err(WebError::bad("group", "choose a group, or give a client address"));
    };
    let pipeline = state.pipeline();
    let (decision, answer) = match pipeline.decide(requester, &question, false) {
        Flow::Final(answer) => {
            let records: Vec<String> = answer.answers.iter().map(|r| r.data.to_string()).collect();
            let text = if records.is_empty() {
                answer.response_code.to_string()
            } else {
                format!("{} {}", answer.response_code, records.join(", "))
            };
            (answer.decision.clone(), text)
        }
        Flow::Resolve(pending) => {
            let text = match &pending.rewrite {
                Some(rewrite) => format!(
                    "CNAME {} followed by its {} records ({}; nothing is sent by this test)",
                    rewrite.target,
                    question.record_type,
                    pipeline.upstream_description()
                ),
                None => format!("{} (nothing is sent by this test)", pipeline.upstream_description()),
            };
            (pending.policy_decision(), text)
        }
    };
    let explanation = Explanation::of(&decision);
    Ok(Verdict {
        name: question.name.to_string().trim_end_matches('.').to_string(),
        record_type: question.record_type.to_string(),
        asked_by,
        decision: decision.kind.as_str().to_string(),
        stage: decision.stage.as_str().to_string(),
        group: decision.group.as_deref().map(String::from),
        category: decision.category.as_deref().map(String::from),
        reason: explanation.reason_text(),
        explanation: explanation.to_string(),
        answer,
    })
}

#[derive(Template)]
#[template(path = "test_name.html")]
struct TestPage {
    layout: Layout,
    form: TestForm,
    groups: Vec<String>,
    verdict: Option<Verdict>,
    field: &'static str,
    message: String,
}

fn show(state: &AppState, reader: &RequireAnyRole, form: TestForm, asked: bool) -> Response {
    let groups: Vec<String> = state.config().groups.keys().cloned().collect();
    let mut form = form;
    if !asked && form.group.is_empty() && form.client.is_empty() {
        form.group = if groups.iter().any(|g| g == "pupil") { "pupil".into() } else { groups[0].clone() };
    }
    let (verdict, field, message, status) = if asked {
        match decide(state, &form) {
            Ok(verdict) => (Some(verdict), "", String::new(), StatusCode::OK),
            Err(WebError::BadRequest { field, message }) => {
                (None, field.unwrap_or("name"), message, StatusCode::BAD_REQUEST)
            }
            Err(other) => (None, "name", other.to_string(), StatusCode::BAD_REQUEST),
        }
    } else {
        (None, "", String::new(), StatusCode::OK)
    };
    let page =
        TestPage { layout: Layout::for_user("Test a name", &reader, "/test"), form, groups, verdict, field, message };
    render_with(status, &page)
}

pub async fn page(State(state): State<AppState>, reader: RequireAnyRole, Query(form): Query<TestForm>) -> Response {
    let asked = !form.name.trim().is_empty();
    show(&state, &reader, form, asked)
}

pub async fn submit(State(state): State<AppState>, reader: RequireAnyRole, Form(form): Form<TestForm>) -> Response {
    show(&state, &reader, form, true)
}

pub async fn api_check(
    State(state): State<AppState>,
    _reader: RequireAnyRole,
    Json(form): Json<TestForm>,
) -> Result<axum::Json<Verdict>, WebError> {
    decide(&state, &form).map(axum::Json)
}
