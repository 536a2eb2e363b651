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
pub fn alert_messages(alert: &Alert, config: &crate::config::Config) -> Vec<NewMessage> {
    let settings = &config.alerts;
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
                body: email_body(alert, settings, &config.timezone),
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

fn email_body(alert: &Alert, settings: &AlertSettings, timezone: &jiff::tz::TimeZone) -> String {
    let mut body = format!(
        "Hedgerow raised a {} alert.\n\n\
         Device:   {}\n\
         Network:  {} (group {})\n\
         Time:     {}\n\
         Category: {}\n\
         Rule:     {}\n\
         Attempts: {}\n\n\
         Names tried:\n",
        alert.severity,
        who(alert),
        alert.network,
        alert.group,
        local(alert.first_ms, timezone),
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

/// The link to the dashboard's alerts inbox, when its address is known.
pub fn inbox_link(settings: &AlertSettings) -> Option<String> {
    settings.dashboard_url.as_ref().map(|base| format!("{base}/alerts"))
}

/// At most this many alerts are listed one per line in a digest; the rest
/// are counted and left to the inbox.
pub const DIGEST_LINES: usize = 500;

/// A time as people at the school read it: "2026-11-30 07:30 GMT".
fn local(time_ms: i64, timezone: &jiff::tz::TimeZone) -> String {
    match jiff::Timestamp::from_millisecond(time_ms) {
        Ok(at) => at.to_zoned(timezone.clone()).strftime("%Y-%m-%d %H:%M %Z").to_string(),
        Err(_) => format_utc(time_ms),
    }
}

/// The `kind` ("daily" or "weekly") digest of `alerts` (those first seen
/// from `from_ms` up to `upto_ms`, any order): one e-mail per set of
/// severities people are listed for, so each reader gets exactly the
/// severities they asked for. People listed only for high alerts get none
/// (those reach them at once); someone listed for high and medium gets both
/// in the digest, the full picture. A digest with nothing in it is still
/// sent, saying so: a DSL then knows the alerts are quiet, not broken.
pub fn digest_messages(
    kind: &str,
    alerts: &[Alert],
    from_ms: i64,
    upto_ms: i64,
    settings: &AlertSettings,
    timezone: &jiff::tz::TimeZone,
) -> Vec<NewMessage> {
    let Some(email) = &settings.email else { return Vec::new() };
    let mut readers: std::collections::BTreeMap<Vec<Severity>, Vec<String>> = std::collections::BTreeMap::new();
    for person in email.everyone() {
        let severities: Vec<Severity> = Severity::ALL
            .into_iter()
            .filter(|severity| email.recipients.get(severity).is_some_and(|list| list.contains(&person)))
            .collect();
        if severities.iter().any(|severity| *severity != Severity::High) {
            readers.entry(severities).or_default().push(person);
        }
    }
    let mut ordered: Vec<&Alert> = alerts.iter().collect();
    ordered.sort_by_key(|alert| (alert.first_ms, alert.id));
    readers
        .into_iter()
        .map(|(severities, recipients)| {
            let chosen: Vec<&Alert> = ordered
                .iter()
                .copied()
                .filter(|alert| Severity::parse(&alert.severity).is_some_and(|s| severities.contains(&s)))
                .collect();
            let (subject, body) = digest_text(kind, &chosen, &severities, from_ms, upto_ms, settings, timezone);
            NewMessage { channel: Channel::Email, kind: "digest", recipients, subject, body }
        })
        .collect()
}

/// A digest's subject and body.
fn digest_text(
    kind: &str,
    alerts: &[&Alert],
    severities: &[Severity],
    from_ms: i64,
    upto_ms: i64,
    settings: &AlertSettings,
    timezone: &jiff::tz::TimeZone,
) -> (String, String) {
    let title = format!("{}{} digest", kind[..1].to_uppercase(), &kind[1..]);
    let by_severity: Vec<(Severity, usize)> = severities
        .iter()
        .map(|severity| (*severity, alerts.iter().filter(|a| a.severity == severity.as_str()).count()))
        .collect();
    let counts = by_severity.iter().map(|(s, n)| format!("{n} {}", s.as_str())).collect::<Vec<_>>().join(", ");
    let plural = |n: usize| if n == 1 { "alert" } else { "alerts" };
    let subject = if alerts.is_empty() {
        format!("[Hedgerow] {title}: no alerts")
    } else {
        format!("[Hedgerow] {title}: {} {} ({counts})", alerts.len(), plural(alerts.len()))
    };
    let words: Vec<&str> = severities.iter().map(|s| s.as_str()).collect();
    let words = match words.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    };
    let mut body = format!(
        "Hedgerow's {kind} digest of {words} alerts, from {} to {}.\n\n",
        local(from_ms, timezone),
        local(upto_ms, timezone)
    );
    if alerts.is_empty() {
        body.push_str("No alerts were raised. Nothing needs doing.\n");
    } else {
        body.push_str(&format!("{} {}: {counts}.\n\nBy category:\n", alerts.len(), plural(alerts.len())));
        let mut categories: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for alert in alerts {
            let what = if alert.category.is_empty() { alert.rule.as_str() } else { alert.category.as_str() };
            *categories.entry(what).or_default() += 1;
        }
        for (category, count) in &categories {
            body.push_str(&format!("  {category:<16} {count}\n"));
        }
        body.push_str("\nAlerts, oldest first:\n");
        for alert in alerts.iter().take(DIGEST_LINES) {
            let what = if alert.category.is_empty() { alert.rule.as_str() } else { alert.category.as_str() };
            let attempts =
                if alert.attempts == 1 { "1 attempt".to_string() } else { format!("{} attempts", alert.attempts) };
            body.push_str(&format!(
                "  {}  {:<6}  {what}  {}  {attempts}\n",
                local(alert.first_ms, timezone),
                alert.severity,
                who(alert)
            ));
            match alert_link(settings, alert.id) {
                Some(link) => body.push_str(&format!("      {link}\n")),
                None => body.push_str(&format!("      alert {}\n", alert.id)),
            }
        }
        if alerts.len() > DIGEST_LINES {
            body.push_str(&format!("  ... and {} more in the inbox.\n", alerts.len() - DIGEST_LINES));
        }
    }
    match inbox_link(settings) {
        Some(link) => body.push_str(&format!("\nThe alerts inbox: {link}\n")),
        None => body.push_str("\nThe alerts are in the dashboard's Alerts page.\n"),
    }
    (subject, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::alerts::{EmailSettings, SmtpSecurity};
    use crate::store::alerts::AlertState;

    fn alert(id: i64, severity: &str, category: &str, first_ms: i64) -> Alert {
        Alert {
            id,
            rule: if category.is_empty() { "bypass".into() } else { "repeated".into() },
            severity: severity.into(),
            category: category.into(),
            client: "10.0.0.5".into(),
            device: "ipad-7".into(),
            owner: "Year 9".into(),
            network: "pupil-wifi".into(),
            group: "pupil".into(),
            first_ms,
            last_ms: first_ms,
            attempts: 5,
            names: vec!["a.example".into()],
            summary: "five in ten minutes".into(),
            state: AlertState::Open,
            acknowledged_by: None,
            acknowledged_ms: None,
            resolved_by: None,
            resolved_ms: None,
        }
    }

    fn settings() -> AlertSettings {
        let mut recipients = std::collections::BTreeMap::new();
        recipients.insert(Severity::High, vec!["dsl@school.example".into(), "head@school.example".into()]);
        recipients.insert(Severity::Medium, vec!["dsl@school.example".into()]);
        recipients.insert(Severity::Low, vec!["dsl@school.example".into(), "ict@school.example".into()]);
        AlertSettings {
            dashboard_url: Some("https://filter.school.example".into()),
            email: Some(EmailSettings {
                server: "smtp.school.example".into(),
                port: 587,
                security: SmtpSecurity::Starttls,
                username: None,
                password: None,
                ca_file: None,
                from: "hedgerow@school.example".into(),
                recipients,
                daily_digest: None,
                weekly_digest: None,
            }),
            ..AlertSettings::default()
        }
    }

    #[test]
    fn a_digest_gives_each_reader_the_severities_they_are_listed_for() {
        let london = jiff::tz::TimeZone::get("Europe/London").unwrap();
        // 2026-07-01T09:15:00Z is 10:15 BST.
        let at = 1_782_897_300_000;
        let alerts = [
            alert(3, "medium", "pornography", at + 60_000),
            alert(1, "high", "self-harm", at),
            alert(2, "low", "", at),
        ];
        let messages = digest_messages("daily", &alerts, at - 3_600_000, at + 3_600_000, &settings(), &london);
        // The head teacher is only on the high list: no digest.
        assert_eq!(
            messages.iter().map(|m| m.recipients.clone()).collect::<Vec<_>>(),
            [vec!["ict@school.example".to_string()], vec!["dsl@school.example".to_string()]]
        );
        let ict = &messages[0];
        assert_eq!(ict.subject, "[Hedgerow] Daily digest: 1 alert (1 low)");
        assert!(!ict.body.contains("self-harm") && !ict.body.contains("pornography"), "{}", ict.body);
        let dsl = &messages[1];
        assert_eq!(dsl.subject, "[Hedgerow] Daily digest: 3 alerts (1 high, 1 medium, 1 low)");
        let body = &dsl.body;
        assert!(body.contains("from 2026-07-01 09:15 BST to 2026-07-01 11:15 BST"), "{body}");
        assert!(body.contains("  pornography      1\n") && body.contains("  bypass           1\n"), "{body}");
        let first =
            body.find("2026-07-01 10:15 BST  high    self-harm  ipad-7, Year 9 (10.0.0.5)  5 attempts").unwrap();
        let later = body.find("2026-07-01 10:16 BST  medium  pornography").unwrap();
        assert!(first < later, "oldest first:\n{body}");
        assert!(body.contains("      https://filter.school.example/alerts/3\n"), "{body}");
        assert!(body.contains("The alerts inbox: https://filter.school.example/alerts\n"), "{body}");

        let quiet = digest_messages("weekly", &[], at - 3_600_000, at, &settings(), &london);
        assert_eq!(quiet[1].subject, "[Hedgerow] Weekly digest: no alerts");
        assert!(quiet[1].body.contains("No alerts were raised."), "{}", quiet[1].body);
    }
}
