//! `GET/POST /setup/{token}`: the one-time form that makes the first admin.
//! The token is redeemed in the same transaction that adds the admin
//! ([`crate::store::SetupTokens::redeem_and_add_admin`]), so a link makes
//! one admin at most, and only while none exists.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{ClientAddress, Form, Layout, render_with};
use crate::store::{AuditEvent, SetupError};
use crate::web::session;
use crate::web::{AppState, WebError};

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage {
    layout: Layout,
    token: String,
    name: String,
    field: &'static str,
    message: String,
}

#[derive(Template)]
#[template(path = "setup_invalid.html")]
struct InvalidPage {
    layout: Layout,
    reason: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SetupForm {
    name: String,
    password: String,
    password_again: String,
}

fn invalid(reason: String) -> Response {
    render_with(StatusCode::GONE, &InvalidPage { layout: Layout::anonymous("Setup link"), reason })
}

/// A token is URL-safe text; anything else cannot be one (and is not echoed into a form action).
fn plausible(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 128
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

const UNUSABLE: &str = "This setup link is unknown, already used or expired, or an admin already exists.";

pub async fn form(State(state): State<AppState>, Path(token): Path<String>) -> Result<Response, WebError> {
    let now = crate::time::now_ms();
    let valid = plausible(&token) && {
        let token = token.clone();
        state.blocking(move |state| state.setup_tokens().is_valid(&token, now)).await??
    };
    if !valid {
        return Ok(invalid(UNUSABLE.to_string()));
    }
    let page = SetupPage {
        layout: Layout::anonymous("Create the first admin"),
        token,
        name: String::new(),
        field: "",
        message: String::new(),
    };
    Ok(render_with(StatusCode::OK, &page))
}

pub async fn submit(
    State(state): State<AppState>,
    Path(token): Path<String>,
    ClientAddress(address): ClientAddress,
    Form(form): Form<SetupForm>,
) -> Result<Response, WebError> {
    if !plausible(&token) {
        return Ok(invalid(UNUSABLE.to_string()));
    }
    let name = form.name.trim().to_string();
    let again = |field: &'static str, message: String| {
        let page = SetupPage {
            layout: Layout::anonymous("Create the first admin"),
            token: token.clone(),
            name: name.clone(),
            field,
            message,
        };
        render_with(StatusCode::BAD_REQUEST, &page)
    };
    if form.password != form.password_again {
        return Ok(again("password_again", "the two passwords differ: type the same password twice".to_string()));
    }
    let now = crate::time::now_ms();
    let outcome = {
        let (token, name, address) = (token.clone(), name.clone(), address.clone());
        state
            .blocking(move |state| -> Result<_, WebError> {
                match state.setup_tokens().redeem_and_add_admin(&token, &name, &form.password, now) {
                    Ok(user) => {
                        state.audit().record(AuditEvent::Setup, &user.name, &address, now)?;
                        let session = state.sessions().create(user.id, &address, now)?;
                        Ok(Ok(session))
                    }
                    Err(error) => Ok(Err(error)),
                }
            })
            .await??
    };
    match outcome {
        Ok(session) => {
            let mut response = Redirect::to("/").into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, session::session_cookie(&session.raw_id, state.settings().tls));
            Ok(response)
        }
        Err(error @ (SetupError::InvalidToken | SetupError::AdminExists)) => Ok(invalid(error.to_string())),
        Err(SetupError::User(crate::store::UserError::Store(error))) => Err(error.into()),
        Err(error) => Ok(again(error.field().unwrap_or("form"), error.to_string())),
    }
}
