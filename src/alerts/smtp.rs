//! One outbox e-mail sent over SMTP, as `[alerts.email]` says: STARTTLS
//! that must succeed, TLS from the first byte, or (to a relay on this
//! machine only, which the config enforces) no encryption; the school's own
//! CA from `ca_file` trusted beside the usual roots; AUTH with the username
//! and the password read now from its file or variable.
//!
//! The password is never logged and never part of an error: errors are short
//! plain text for the dashboard's outbox, with any trace of it blanked.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{SmtpTransport, Transport};

use crate::config::alerts::{EmailSettings, SmtpSecurity};
use crate::store::alerts::OutboxMessage;

/// How long each step of a conversation with the SMTP server (connecting,
/// each read and write) may take.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Why a message was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    /// In words, for the outbox; never the password.
    pub message: String,
    /// The server could not be reached or talked to at all (connection,
    /// TLS, time-out, the password file), so no other message would get
    /// through now either; false when the server refused this message.
    pub whole_server: bool,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Sends `message` (an e-mail in the outbox) as `settings` say.
pub fn send(settings: &EmailSettings, message: &OutboxMessage) -> Result<(), SendError> {
    let password = match &settings.password {
        Some(secret) => Some(secret.read().map_err(|message| SendError { message, whole_server: true })?),
        None => None,
    };
    let result = send_with(settings, message, password.as_deref());
    result.map_err(|error| match &password {
        Some(password) => SendError { message: blank(&error.message, password), ..error },
        None => error,
    })
}

fn send_with(settings: &EmailSettings, message: &OutboxMessage, password: Option<&str>) -> Result<(), SendError> {
    let email = build(settings, message).map_err(|message| SendError { message, whole_server: false })?;
    let mut builder = SmtpTransport::builder_dangerous(settings.server.as_str())
        .port(settings.port)
        .timeout(Some(TIMEOUT))
        .tls(match settings.security {
            SmtpSecurity::Starttls => Tls::Required(tls_parameters(settings)?),
            SmtpSecurity::Tls => Tls::Wrapper(tls_parameters(settings)?),
            SmtpSecurity::None => Tls::None,
        });
    if let Some(username) = &settings.username {
        builder = builder.credentials(Credentials::new(username.clone(), password.unwrap_or_default().to_string()));
    }
    let transport = builder.build();
    transport.send(&email).map(|_| ()).map_err(|error| {
        let message = describe(&error, settings);
        // A refusal of this message (a 4xx or 5xx answer to it) says
        // nothing of the others, unless it refused the login (535).
        let refused = error.is_permanent() || error.is_transient();
        SendError { whole_server: !refused || message.contains("535"), message }
    })
}

/// The message as it goes out: From, To, Subject, Date, a Message-ID that
/// stays the same on every attempt (so a copy delivered twice after a
/// broken connection is recognisably one message), and the text body.
pub fn build(settings: &EmailSettings, message: &OutboxMessage) -> Result<Message, String> {
    let from: Mailbox =
        settings.from.parse().map_err(|error| format!("the sender {:?} is not an address ({error})", settings.from))?;
    let mut builder = Message::builder()
        .from(from.clone())
        .subject(message.subject.as_str())
        .date_now()
        .message_id(Some(format!("<hedgerow-{}-{}@{}>", message.id, message.created_ms, from.email.domain())))
        .header(ContentType::TEXT_PLAIN);
    if message.recipients.is_empty() {
        return Err("the message names nobody to send to".into());
    }
    for recipient in &message.recipients {
        let to: Mailbox =
            recipient.parse().map_err(|error| format!("the recipient {recipient:?} is not an address ({error})"))?;
        builder = builder.to(to);
    }
    builder.body(message.body.clone()).map_err(|error| format!("cannot build the e-mail: {error}"))
}

/// TLS for `settings.server`: the usual public roots, and the PEM
/// certificates of `ca_file` when set (a school relay with its own CA).
fn tls_parameters(settings: &EmailSettings) -> Result<TlsParameters, SendError> {
    tls_parameters_text(settings).map_err(|message| SendError { message, whole_server: true })
}

fn tls_parameters_text(settings: &EmailSettings) -> Result<TlsParameters, String> {
    let mut builder = TlsParameters::builder(settings.server.clone());
    if let Some(file) = &settings.ca_file {
        let pem =
            std::fs::read(file).map_err(|error| format!("cannot read the CA file {} ({error})", file.display()))?;
        let certificate = Certificate::from_pem(&pem)
            .map_err(|error| format!("the CA file {} holds no PEM certificate ({error})", file.display()))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder.build_rustls().map_err(|error| format!("cannot set up TLS: {error}"))
}

/// A failure in a few words, naming the server.
fn describe(error: &lettre::transport::smtp::Error, settings: &EmailSettings) -> String {
    let at = format!("{}:{}", settings.server, settings.port);
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        let said = inner.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = inner.source();
    }
    if error.is_timeout() {
        format!("SMTP server {at} did not answer within {} s", TIMEOUT.as_secs())
    } else if error.is_permanent() || error.is_transient() {
        format!("SMTP server {at} refused: {text}")
    } else {
        format!("cannot send through {at}: {text}")
    }
}

/// `text` with `secret` blanked.
fn blank(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_string();
    }
    text.replace(secret, "********")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn settings() -> EmailSettings {
        EmailSettings {
            server: "127.0.0.1".into(),
            port: 1,
            security: SmtpSecurity::None,
            username: None,
            password: None,
            ca_file: None,
            from: "Hedgerow <hedgerow@school.example>".into(),
            recipients: BTreeMap::new(),
            daily_digest: None,
            weekly_digest: None,
        }
    }

    fn message() -> OutboxMessage {
        OutboxMessage {
            id: 7,
            channel: crate::store::alerts::Channel::Email,
            kind: "alert".into(),
            alert_id: Some(3),
            recipients: vec!["dsl@school.example".into(), "Head <head@school.example>".into()],
            subject: "[Hedgerow] High alert: self-harm, ipad-7".into(),
            body: "Device: ipad-7\n".into(),
            created_ms: 1_000,
            attempts: 0,
            next_ms: 1_000,
            last_error: None,
            state: "pending".into(),
            done_ms: None,
        }
    }

    #[test]
    fn the_message_has_its_headers_and_a_stable_id() {
        let text = String::from_utf8(build(&settings(), &message()).unwrap().formatted()).unwrap();
        for header in [
            "From: Hedgerow <hedgerow@school.example>",
            "To: dsl@school.example, Head <head@school.example>",
            "Subject: [Hedgerow] High alert: self-harm, ipad-7",
            "Message-ID: <hedgerow-7-1000@school.example>",
            "Date: ",
        ] {
            assert!(text.contains(header), "{header} missing in\n{text}");
        }
        assert!(text.ends_with("Device: ipad-7\n") || text.contains("Device: ipad-7"), "{text}");
        let mut nobody = message();
        nobody.recipients.clear();
        assert!(build(&settings(), &nobody).unwrap_err().contains("nobody"));
    }

    #[test]
    fn a_refused_connection_is_said_in_words_and_the_password_never() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("password");
        std::fs::write(&secret, "hunter2-secret\n").unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let settings = EmailSettings {
            port,
            username: Some("hedgerow".into()),
            password: Some(crate::config::alerts::Secret::File(secret)),
            ..settings()
        };
        let error = send(&settings, &message()).unwrap_err();
        assert!(error.whole_server);
        let error = error.message;
        assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        assert_eq!(blank("AUTH failed for hunter2", "hunter2"), "AUTH failed for ********");
    }
}
