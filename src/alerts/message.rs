//! What alerts say: the e-mail and the webhook body for an alert, and the
//! test messages. Written when the alert is raised and queued in the
//! outbox, so a message is the same whenever it is finally delivered.

use serde_json::json;

use crate::config::alerts::{AlertSettings, Severity};
use crate::store::alerts::{Alert, Channel, NewMessage};
use crate::time::format_utc;

/// The link to an alert in the dashboard, when its address is known.
pub fn alert_link(settings: &AlertSettings, id: i64) -> Option<String> {
    settings.dashboard_url.as_ref().map(|base| format!("{base}/alerts/{id}"))
}

/// Who the alert is about, in words: the device and owner where known,
/// else the client as the log names it (a guest's pseudonym).
pub fn who(alert: &Alert) -> String {
    match (alert.device.as_str(), alert.owner.as_str()) {
        ("", _) => alert.client.clone(),
        (device, "") => format!("{device} ({})", alert.client),
        (device, owner) => format!("{device}, {owner} ({})", alert.client),
    }
}

/// The messages queued when `alert` is raised: an e-mail at once to the
/// high-severity recipients for a high alert (the rest wait for the
/// digests), and the webhook for every alert.
pub fn alert_messages(alert: &Alert, settings: &AlertSettings) -> Vec<NewMessage> {
    let mut messages = Vec::new();
    let severity = Severity::parse(&alert.severity).unwrap_or(Severity::Medium);
    if let Some(email) = &settings.email {
        let recipients = email.recipients.get(&severity).cloned().unwrap_or_default();
        if severity == Severity::High && !recipients.is_empty() {
            messages.push(NewMessage {
                channel: Channel::Email,
                kind: "alert",
                recipients,
                subject: subject(alert),
                body: email_body(alert, settings),
            });
        }
    }
    if settings.webhook.is_some() {
        messages.push(NewMessage {
            channel: Channel::Webhook,
            kind: "alert",
            recipients: Vec::new(),
            subject: subject(alert),
            body: webhook_body(alert, settings),
        });
    }
    messages
}

/// "[Hedgerow] High alert: self-harm, ipad-7".
pub fn subject(alert: &Alert) -> String {
    let what = if alert.category.is_empty() { alert.rule.as_str() } else { alert.category.as_str() };
    let severity = alert.severity[..1].to_uppercase() + &alert.severity[1..];
    format!(
        "[Hedgerow] {severity} alert: {what}, {}",
        if alert.device.is_empty() { &alert.client } else { &alert.device }
    )
}

fn email_body(alert: &Alert, settings: &AlertSettings) -> String {
    let mut body = format!(
        "Hedgerow raised a {} alert.\n\n\
         Device:   {}\n\
         Network:  {} (group {})\n\
         Time:     {} UTC\n\
         Category: {}\n\
         Rule:     {}\n\
         Attempts: {}\n\n\
         Names tried:\n",
        alert.severity,
        who(alert),
        alert.network,
        alert.group,
        format_utc(alert.first_ms),
        if alert.category.is_empty() { "-" } else { &alert.category },
        alert.summary,
        alert.attempts,
    );
    for name in &alert.names {
        body.push_str("  ");
        body.push_str(name);
        body.push('\n');
    }
    match alert_link(settings, alert.id) {
        Some(link) => {
            body.push_str(&format!("\nOpen the alert, and the device's lookups an hour either side: {link}\n"))
        }
        None => body.push_str(&format!("\nOpen alert {} in the dashboard's Alerts page.\n", alert.id)),
    }
    body
}

fn webhook_body(alert: &Alert, settings: &AlertSettings) -> String {
    json!({
        "type": "alert",
        "id": alert.id,
        "severity": alert.severity,
        "rule": alert.rule,
        "summary": alert.summary,
        "category": alert.category,
        "client": alert.client,
        "device": alert.device,
        "owner": alert.owner,
        "network": alert.network,
        "group": alert.group,
        "first": format_utc(alert.first_ms),
        "attempts": alert.attempts,
        "names": alert.names,
        "link": alert_link(settings, alert.id),
    })
    .to_string()
}

/// A test message for `channel`, asked for by `user` from the dashboard:
/// an e-mail to everyone any alert goes to, or a webhook call. Empty when
/// the channel is not configured.
pub fn test_messages(settings: &AlertSettings, channel: Channel, user: &str, now_ms: i64) -> Vec<NewMessage> {
    let subject = "[Hedgerow] Test alert".to_string();
    match channel {
        Channel::Email => match &settings.email {
            Some(email) => vec![NewMessage {
                channel,
                kind: "test",
                recipients: email.everyone(),
                subject,
                body: format!(
                    "This is a test alert, sent by {user} from the Hedgerow dashboard at {} UTC.\n\
                     If you can read it, alerts by e-mail reach you. Nothing needs doing.\n",
                    format_utc(now_ms)
                ),
            }],
            None => Vec::new(),
        },
        Channel::Webhook => match &settings.webhook {
            Some(_) => vec![NewMessage {
                channel,
                kind: "test",
                recipients: Vec::new(),
                subject,
                body: json!({ "type": "test", "sent_by": user, "time": format_utc(now_ms) }).to_string(),
            }],
            None => Vec::new(),
        },
    }
}
