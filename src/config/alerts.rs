//! `[alerts]`: the rules that raise alerts for the DSL, and how alerts are
//! delivered (e-mail over SMTP, a signed webhook). Its serde shape, compile
//! step (file:line messages) and rendering live here, as `metrics.rs` does
//! for `[metrics]`. Secrets are only named here (a file or an environment
//! variable); they are read when a message is sent and never logged.
//!
//! Rules are the shipped defaults ([`default_rules`]) with any
//! `[alerts.rules.<id>]` table written over the rule of that id (or adding
//! a new one): a school changes one threshold without copying the rest.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::ConfigError;
use super::timed::{DAYS, clock_text, day_word, parse_clock};

/// How urgent an alert is: high ones are sent at once, the rest in digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Severity::High, Severity::Medium, Severity::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }

    pub fn parse(word: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|severity| severity.as_str() == word)
    }
}

/// What a rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Any attempt at one of these categories.
    AnyAttempt { categories: Vec<String> },
    /// `count` attempts in `category` by one device within `window_ms`.
    Repeated { category: String, count: usize, window_ms: i64 },
    /// Any bypass attempt.
    Bypass,
    /// A group's blocks in the last hour reach `factor` times its usual
    /// level for that hour (the mean of the same hour on the last 7 days),
    /// and at least `minimum`.
    Rise { factor: u32, minimum: u64 },
}

impl Trigger {
    /// The config's word for the kind of rule.
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::AnyAttempt { .. } => "any",
            Trigger::Repeated { .. } => "repeated",
            Trigger::Bypass => "bypass",
            Trigger::Rise { .. } => "rise",
        }
    }
}

/// One rule: an id (stable, for the change log and the inbox), what it
/// matches, the severity of what it raises, and whether it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    pub trigger: Trigger,
    pub severity: Severity,
    pub enabled: bool,
    /// Why it is set as it is, for the rules page.
    pub why: String,
}

impl Rule {
    /// The rule in words, for messages and the inbox.
    pub fn describe(&self) -> String {
        match &self.trigger {
            Trigger::AnyAttempt { categories } => format!("any attempt at {}", categories.join(", ")),
            Trigger::Repeated { category, count, window_ms } => {
                format!("{count} blocked lookups in {category} by one device within {} minutes", window_ms / 60_000)
            }
            Trigger::Bypass => "an attempt to get round the filter (encrypted DNS, VPN or proxy, relay)".into(),
            Trigger::Rise { factor, minimum } => {
                format!("a group's blocks in an hour at {factor} times its usual level (and at least {minimum})")
            }
        }
    }
}

const MINUTE: i64 = 60_000;

/// The shipped rules, each with why it is set so.
pub fn default_rules() -> Vec<Rule> {
    let repeated = |category: &str, count: usize, minutes: i64, why: &str| Rule {
        id: format!("repeated-{category}"),
        trigger: Trigger::Repeated { category: category.into(), count, window_ms: minutes * MINUTE },
        severity: Severity::Medium,
        enabled: true,
        why: why.into(),
    };
    vec![
        Rule {
            id: "high-risk".into(),
            trigger: Trigger::AnyAttempt {
                categories: ["csam", "terrorism", "extremism", "self-harm"].map(String::from).to_vec(),
            },
            severity: Severity::High,
            enabled: true,
            why: "One attempt at these themes is a safeguarding concern the DSL should know of at once.".into(),
        },
        // A page pulls in several names, so one visit can be a few blocks:
        // counts are set above what one page gives.
        repeated("pornography", 5, 10, "A stray link gives one or two blocks; five in ten minutes is someone trying."),
        repeated(
            "gambling",
            10,
            30,
            "Betting sites pull in many names a page (odds feeds, payment), so the count is higher.",
        ),
        repeated("drugs", 5, 30, "Repeated searching for drugs sites in half an hour is a pattern worth a look."),
        repeated("violence", 5, 30, "Repeated attempts at violent content in half an hour."),
        repeated("discrimination", 5, 30, "Repeated attempts at hate sites in half an hour."),
        repeated("fraud", 5, 30, "Repeated attempts at scam sites: a pupil may be being targeted."),
        Rule {
            id: "bypass".into(),
            trigger: Trigger::Bypass,
            severity: Severity::Medium,
            enabled: true,
            why: "Encrypted DNS, VPNs, proxies and relays take a device out of filtering and monitoring.".into(),
        },
        Rule {
            id: "rise".into(),
            trigger: Trigger::Rise { factor: 3, minimum: 50 },
            severity: Severity::Low,
            enabled: true,
            why: "Three times a group's usual blocks in an hour can be a new app, a broken list or a trend: \
                  for the ICT lead as much as the DSL."
                .into(),
        },
    ]
}

/// A digest's schedule, in the school's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestTime {
    /// Minutes after local midnight.
    pub minute: u16,
    /// The weekly digest's day; `None` for the daily one.
    pub day: Option<jiff::civil::Weekday>,
}

/// A secret named in the config, read when it is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// Read from this file (surrounding white space ignored).
    File(PathBuf),
    /// Read from this environment variable.
    Env(String),
}

impl Secret {
    /// The secret now. The message names where it should be, never the value.
    pub fn read(&self) -> Result<String, String> {
        match self {
            Secret::File(path) => std::fs::read_to_string(path)
                .map(|text| text.trim().to_string())
                .map_err(|error| format!("cannot read the secret file {} ({error})", path.display())),
            Secret::Env(name) => std::env::var(name)
                .map(|text| text.trim().to_string())
                .map_err(|_| format!("the environment variable {name} is not set")),
        }
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only allowed to a loopback server (a local relay).
    None,
}

/// `[alerts.email]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailSettings {
    pub server: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Extra CA certificates (PEM) to trust, for a school relay with its own CA.
    pub ca_file: Option<PathBuf>,
    pub from: String,
    /// Who gets alerts of each severity (high at once, the rest in digests).
    pub recipients: BTreeMap<Severity, Vec<String>>,
    pub daily_digest: Option<DigestTime>,
    pub weekly_digest: Option<DigestTime>,
}

impl EmailSettings {
    /// Everyone any alert goes to, each once (test messages go to them).
    pub fn everyone(&self) -> Vec<String> {
        let mut all: Vec<String> = self.recipients.values().flatten().cloned().collect();
        all.sort();
        all.dedup();
        all
    }
}

/// `[alerts.webhook]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    pub url: String,
    /// The HMAC-SHA256 key for the `X-Hedgerow-Signature` header.
    pub secret: Secret,
}

/// `[alerts]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSettings {
    pub enabled: bool,
    /// An incident closes after this long without a matching lookup.
    pub quiet_ms: i64,
    /// The dashboard's address as people reach it, for links in messages.
    pub dashboard_url: Option<String>,
    /// The defaults with the config's rules written over them, in order.
    pub rules: Vec<Rule>,
    /// The rule ids the config itself writes (the rest are defaults).
    pub written_rules: Vec<String>,
    pub email: Option<EmailSettings>,
    pub webhook: Option<WebhookSettings>,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            enabled: true,
            quiet_ms: 30 * MINUTE,
            dashboard_url: None,
            rules: default_rules(),
            written_rules: Vec::new(),
            email: None,
            webhook: None,
        }
    }
}

/// `[alerts]` as written.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quiet_minutes: Option<Spanned<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dashboard_url: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    rules: BTreeMap<Spanned<String>, RawRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<RawEmail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    webhook: Option<RawWebhook>,
}

/// `[alerts.rules.<id>]` as written.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    severity: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    categories: Option<Spanned<Vec<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    category: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    count: Option<Spanned<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    minutes: Option<Spanned<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    factor: Option<Spanned<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    minimum: Option<Spanned<i64>>,
}

/// `[alerts.email]` as written.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEmail {
    server: Spanned<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<Spanned<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    security: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password_file: Option<Spanned<PathBuf>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password_env: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca_file: Option<Spanned<PathBuf>>,
    from: Spanned<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    high: Vec<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    medium: Vec<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    low: Vec<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    daily_digest: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weekly_digest: Option<Spanned<String>>,
}

/// `[alerts.webhook]` as written.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    url: Spanned<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_file: Option<Spanned<PathBuf>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_env: Option<Spanned<String>>,
}

fn unplaced<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

/// Checks `[alerts]`; `text` and `source_name` give messages their file and line.
pub(super) fn compile(raw: RawAlerts, text: &str, source_name: &str) -> Result<AlertSettings, ConfigError> {
    let error = |span: &Range<usize>, message: String| ConfigError {
        source_name: source_name.to_string(),
        line: (span.end > 0).then(|| crate::text::line_at(text, span.start)),
        message,
    };
    let mut settings = AlertSettings { enabled: raw.enabled.unwrap_or(true), ..AlertSettings::default() };
    if let Some(quiet) = &raw.quiet_minutes {
        let minutes = *quiet.get_ref();
        if !(1..=24 * 60).contains(&minutes) {
            return Err(error(
                &quiet.span(),
                format!(
                    "[alerts] quiet_minutes = {minutes}: write minutes from 1 to 1440; an incident closes after \
                     this long without a matching lookup (30 suits most schools)"
                ),
            ));
        }
        settings.quiet_ms = minutes * MINUTE;
    }
    if let Some(url) = &raw.dashboard_url {
        let value = url.get_ref().trim().trim_end_matches('/');
        if !(value.starts_with("https://") || value.starts_with("http://")) {
            return Err(error(
                &url.span(),
                format!(
                    "[alerts] dashboard_url = {value:?}: write the dashboard's address as staff reach it, e.g. \
                     \"https://filter.school.example:8080\" (links in alert messages use it)"
                ),
            ));
        }
        settings.dashboard_url = Some(value.to_string());
    }
    for (id, rule) in raw.rules {
        let compiled = compile_rule(id.get_ref(), &id.span(), rule, &settings.rules, &error)?;
        settings.written_rules.push(compiled.id.clone());
        match settings.rules.iter_mut().find(|existing| existing.id == compiled.id) {
            Some(existing) => *existing = compiled,
            None => settings.rules.push(compiled),
        }
    }
    if let Some(email) = raw.email {
        settings.email = Some(compile_email(email, &error)?);
    }
    if let Some(webhook) = raw.webhook {
        let url = webhook.url.get_ref().trim();
        let secure = url.starts_with("https://");
        let loopback = ["http://127.0.0.1", "http://[::1]", "http://localhost"].iter().any(|p| url.starts_with(p));
        if !(secure || loopback) {
            return Err(error(
                &webhook.url.span(),
                format!(
                    "[alerts.webhook] url = {url:?}: write an https:// address (plain http is allowed only to this \
                     machine, e.g. \"http://127.0.0.1:9000/hook\")"
                ),
            ));
        }
        let secret = match (webhook.secret_file, webhook.secret_env) {
            (Some(file), None) => Secret::File(file.into_inner()),
            (None, Some(env)) => Secret::Env(env.into_inner()),
            (Some(file), Some(_)) => {
                return Err(error(&file.span(), "[alerts.webhook]: write secret_file or secret_env, not both".into()));
            }
            (None, None) => {
                return Err(error(
                    &webhook.url.span(),
                    "[alerts.webhook] has no secret: add secret_file = \"/etc/hedgerow/webhook.key\" (or \
                     secret_env = \"HEDGEROW_WEBHOOK_KEY\") so the receiver can check each message's signature"
                        .into(),
                ));
            }
        };
        settings.webhook = Some(WebhookSettings { url: url.to_string(), secret });
    }
    Ok(settings)
}

fn compile_rule(
    id: &str,
    span: &Range<usize>,
    raw: RawRule,
    defaults: &[Rule],
    error: &impl Fn(&Range<usize>, String) -> ConfigError,
) -> Result<Rule, ConfigError> {
    let valid_id = !id.is_empty() && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid_id {
        return Err(error(
            span,
            format!("[alerts.rules.{id}]: a rule id is lower-case letters, digits and '-', e.g. repeated-games"),
        ));
    }
    let base = defaults.iter().find(|rule| rule.id == id);
    let kind = match (&raw.kind, base) {
        (Some(kind), _) => kind.get_ref().clone(),
        (None, Some(base)) => base.trigger.kind().to_string(),
        (None, None) => {
            return Err(error(
                span,
                format!(
                    "[alerts.rules.{id}] is a new rule: say its kind, kind = \"any\", \"repeated\", \"bypass\" or \
                     \"rise\""
                ),
            ));
        }
    };
    let here = |field: &Option<Spanned<i64>>| field.as_ref().map_or(span.clone(), |value| value.span());
    let number = |field: &Option<Spanned<i64>>, name: &str, range: Range<i64>, default: Option<i64>| match (
        field.as_ref().map(|value| *value.get_ref()),
        default,
    ) {
        (Some(value), _) if range.contains(&value) => Ok(value),
        (Some(value), _) => Err(error(
            &here(field),
            format!(
                "[alerts.rules.{id}] {name} = {value}: write a whole number from {} to {}",
                range.start,
                range.end - 1
            ),
        )),
        (None, Some(default)) => Ok(default),
        (None, None) => Err(error(span, format!("[alerts.rules.{id}] needs {name} = <number>"))),
    };
    let category = |written: &Option<Spanned<String>>, default: Option<&String>| -> Result<String, ConfigError> {
        let value = written.as_ref().map(|c| c.get_ref().clone()).or_else(|| default.cloned());
        let Some(value) = value else {
            return Err(error(span, format!("[alerts.rules.{id}] needs category = \"<category id>\"")));
        };
        if crate::policy::category::index_of(&value).is_none() {
            return Err(error(
                &written.as_ref().map_or(span.clone(), |c| c.span()),
                format!("[alerts.rules.{id}] category {value:?} is not a category; see lists/categories.toml"),
            ));
        }
        Ok(value)
    };
    let trigger = match (kind.as_str(), base.map(|rule| &rule.trigger)) {
        ("any", base) => {
            let defaults = match base {
                Some(Trigger::AnyAttempt { categories }) => Some(categories.clone()),
                _ => None,
            };
            let categories = match (&raw.categories, defaults) {
                (Some(written), _) => {
                    for value in written.get_ref() {
                        if crate::policy::category::index_of(value).is_none() {
                            return Err(error(
                                &written.span(),
                                format!(
                                    "[alerts.rules.{id}] category {value:?} is not a category; see \
                                     lists/categories.toml"
                                ),
                            ));
                        }
                    }
                    written.get_ref().clone()
                }
                (None, Some(defaults)) => defaults,
                (None, None) => {
                    return Err(error(
                        span,
                        format!("[alerts.rules.{id}] needs categories = [\"<category id>\", ...]"),
                    ));
                }
            };
            Trigger::AnyAttempt { categories }
        }
        ("repeated", base) => {
            let (default_category, default_count, default_window) = match base {
                Some(Trigger::Repeated { category, count, window_ms }) => {
                    (Some(category), Some(*count as i64), Some(window_ms / MINUTE))
                }
                _ => (None, None, None),
            };
            Trigger::Repeated {
                category: category(&raw.category, default_category)?,
                count: number(&raw.count, "count", 2..1001, default_count)? as usize,
                window_ms: number(&raw.minutes, "minutes", 1..1441, default_window)? * MINUTE,
            }
        }
        ("bypass", _) => Trigger::Bypass,
        ("rise", base) => {
            let (factor, minimum) = match base {
                Some(Trigger::Rise { factor, minimum }) => (Some(i64::from(*factor)), Some(*minimum as i64)),
                _ => (Some(3), Some(50)),
            };
            Trigger::Rise {
                factor: number(&raw.factor, "factor", 2..101, factor)? as u32,
                minimum: number(&raw.minimum, "minimum", 1..1_000_001, minimum)? as u64,
            }
        }
        (other, _) => {
            let at = raw.kind.as_ref().map_or(span.clone(), |kind| kind.span());
            return Err(error(
                &at,
                format!("[alerts.rules.{id}] kind = {other:?}: write \"any\", \"repeated\", \"bypass\" or \"rise\""),
            ));
        }
    };
    let severity = match &raw.severity {
        Some(written) => Severity::parse(written.get_ref()).ok_or_else(|| {
            error(
                &written.span(),
                format!(
                    "[alerts.rules.{id}] severity = {:?}: write \"high\", \"medium\" or \"low\"",
                    written.get_ref()
                ),
            )
        })?,
        None => base.map_or(Severity::Medium, |rule| rule.severity),
    };
    Ok(Rule {
        id: id.to_string(),
        trigger,
        severity,
        enabled: raw.enabled.unwrap_or(true),
        why: base.map_or_else(|| "Added by the school.".to_string(), |rule| rule.why.clone()),
    })
}

fn compile_email(
    raw: RawEmail,
    error: &impl Fn(&Range<usize>, String) -> ConfigError,
) -> Result<EmailSettings, ConfigError> {
    let security = match &raw.security {
        None => SmtpSecurity::Starttls,
        Some(written) => match written.get_ref().as_str() {
            "starttls" => SmtpSecurity::Starttls,
            "tls" => SmtpSecurity::Tls,
            "none" => SmtpSecurity::None,
            other => {
                return Err(error(
                    &written.span(),
                    format!(
                        "[alerts.email] security = {other:?}: write \"starttls\" (port 587), \"tls\" (port 465) or \
                         \"none\" (only to a relay on this machine)"
                    ),
                ));
            }
        },
    };
    let server = raw.server.get_ref().trim().to_string();
    if server.is_empty() {
        return Err(error(&raw.server.span(), "[alerts.email] server is empty: write the SMTP server's name".into()));
    }
    let loopback = server == "localhost" || server.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if security == SmtpSecurity::None && !loopback {
        let at = raw.security.as_ref().map_or(raw.server.span(), |s| s.span());
        return Err(error(
            &at,
            format!(
                "[alerts.email] security = \"none\" would send safeguarding alerts unencrypted to {server}: use \
                 \"starttls\" or \"tls\" (\"none\" is only for a relay on this machine)"
            ),
        ));
    }
    let port = match &raw.port {
        None => match security {
            SmtpSecurity::Tls => 465,
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::None => 25,
        },
        Some(port) => u16::try_from(*port.get_ref()).ok().filter(|p| *p > 0).ok_or_else(|| {
            error(&port.span(), format!("[alerts.email] port = {}: write a port from 1 to 65535", port.get_ref()))
        })?,
    };
    let password = match (raw.password_file, raw.password_env) {
        (Some(file), None) => Some(Secret::File(file.into_inner())),
        (None, Some(env)) => Some(Secret::Env(env.into_inner())),
        (None, None) => None,
        (Some(file), Some(_)) => {
            return Err(error(&file.span(), "[alerts.email]: write password_file or password_env, not both".into()));
        }
    };
    if password.is_some() && raw.username.is_none() {
        return Err(error(&raw.server.span(), "[alerts.email] has a password but no username: add username".into()));
    }
    let address = |written: &Spanned<String>, field: &str| -> Result<String, ConfigError> {
        let value = written.get_ref().trim();
        let bare = value.rsplit_once('<').map_or(value, |(_, rest)| rest.trim_end_matches('>'));
        let valid = bare.split_once('@').is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'));
        if valid {
            Ok(value.to_string())
        } else {
            Err(error(
                &written.span(),
                format!(
                    "[alerts.email] {field}: {value:?} is not an e-mail address; write e.g. \"dsl@school.example\""
                ),
            ))
        }
    };
    let from = address(&raw.from, "from")?;
    let mut recipients = BTreeMap::new();
    for (severity, list) in [(Severity::High, &raw.high), (Severity::Medium, &raw.medium), (Severity::Low, &raw.low)] {
        let addresses = list.iter().map(|a| address(a, severity.as_str())).collect::<Result<Vec<_>, _>>()?;
        recipients.insert(severity, addresses);
    }
    if recipients.values().all(Vec::is_empty) {
        return Err(error(
            &raw.server.span(),
            "[alerts.email] names nobody to send to: add high = [\"dsl@school.example\"] (and medium, low)".into(),
        ));
    }
    let digest = |written: &Option<Spanned<String>>, weekly: bool| -> Result<Option<DigestTime>, ConfigError> {
        let Some(written) = written else {
            // Daily at 07:30, weekly on Monday at 07:30.
            return Ok(Some(DigestTime { minute: 7 * 60 + 30, day: weekly.then_some(jiff::civil::Weekday::Monday) }));
        };
        let value = written.get_ref().trim();
        if value == "off" {
            return Ok(None);
        }
        let parsed = if weekly {
            value.split_once(' ').and_then(|(day, clock)| {
                let day = DAYS.iter().find(|(word, _)| day.to_ascii_lowercase().starts_with(word))?.1;
                Some(DigestTime { minute: parse_clock(clock.trim())?, day: Some(day) })
            })
        } else {
            parse_clock(value).map(|minute| DigestTime { minute, day: None })
        };
        parsed.map(Some).ok_or_else(|| {
            let example = if weekly { "\"mon 07:30\"" } else { "\"07:30\"" };
            let field = if weekly { "weekly_digest" } else { "daily_digest" };
            error(
                &written.span(),
                format!("[alerts.email] {field} = {value:?}: write {example} (school time) or \"off\""),
            )
        })
    };
    Ok(EmailSettings {
        server,
        port,
        security,
        username: raw.username.map(|u| u.into_inner()),
        password,
        ca_file: raw.ca_file.map(|f| f.into_inner()),
        from,
        recipients,
        daily_digest: digest(&raw.daily_digest, false)?,
        weekly_digest: digest(&raw.weekly_digest, true)?,
    })
}

/// `[alerts]` as it would be written: only what differs from the defaults.
pub(super) fn render(settings: &AlertSettings) -> RawAlerts {
    let defaults = default_rules();
    let rules = settings
        .rules
        .iter()
        .filter(|rule| settings.written_rules.contains(&rule.id) || !defaults.contains(rule))
        .map(|rule| (unplaced(rule.id.clone()), render_rule(rule)))
        .collect();
    RawAlerts {
        enabled: (!settings.enabled).then_some(false),
        quiet_minutes: (settings.quiet_ms != 30 * MINUTE).then(|| unplaced(settings.quiet_ms / MINUTE)),
        dashboard_url: settings.dashboard_url.clone().map(unplaced),
        rules,
        email: settings.email.as_ref().map(render_email),
        webhook: settings.webhook.as_ref().map(|webhook| RawWebhook {
            url: unplaced(webhook.url.clone()),
            secret_file: match &webhook.secret {
                Secret::File(path) => Some(unplaced(path.clone())),
                Secret::Env(_) => None,
            },
            secret_env: match &webhook.secret {
                Secret::Env(name) => Some(unplaced(name.clone())),
                Secret::File(_) => None,
            },
        }),
    }
}

/// One rule as a `[alerts.rules.<id>]` table, every field written.
pub(super) fn render_rule(rule: &Rule) -> RawRule {
    let mut raw = RawRule {
        kind: Some(unplaced(rule.trigger.kind().to_string())),
        enabled: Some(rule.enabled),
        severity: Some(unplaced(rule.severity.as_str().to_string())),
        ..RawRule::default()
    };
    match &rule.trigger {
        Trigger::AnyAttempt { categories } => raw.categories = Some(unplaced(categories.clone())),
        Trigger::Repeated { category, count, window_ms } => {
            raw.category = Some(unplaced(category.clone()));
            raw.count = Some(unplaced(*count as i64));
            raw.minutes = Some(unplaced(window_ms / MINUTE));
        }
        Trigger::Bypass => {}
        Trigger::Rise { factor, minimum } => {
            raw.factor = Some(unplaced(i64::from(*factor)));
            raw.minimum = Some(unplaced(*minimum as i64));
        }
    }
    raw
}

fn render_email(email: &EmailSettings) -> RawEmail {
    let list = |severity| {
        email.recipients.get(&severity).map(|list| list.iter().cloned().map(unplaced).collect()).unwrap_or_default()
    };
    let digest = |time: Option<DigestTime>| {
        Some(unplaced(match time {
            None => "off".to_string(),
            Some(DigestTime { minute, day: None }) => clock_text(minute),
            Some(DigestTime { minute, day: Some(day) }) => format!("{} {}", day_word(day), clock_text(minute)),
        }))
    };
    RawEmail {
        server: unplaced(email.server.clone()),
        port: Some(unplaced(i64::from(email.port))),
        security: Some(unplaced(
            match email.security {
                SmtpSecurity::Starttls => "starttls",
                SmtpSecurity::Tls => "tls",
                SmtpSecurity::None => "none",
            }
            .to_string(),
        )),
        username: email.username.clone().map(unplaced),
        password_file: match &email.password {
            Some(Secret::File(path)) => Some(unplaced(path.clone())),
            _ => None,
        },
        password_env: match &email.password {
            Some(Secret::Env(name)) => Some(unplaced(name.clone())),
            _ => None,
        },
        ca_file: email.ca_file.clone().map(unplaced),
        from: unplaced(email.from.clone()),
        high: list(Severity::High),
        medium: list(Severity::Medium),
        low: list(Severity::Low),
        daily_digest: digest(email.daily_digest),
        weekly_digest: digest(email.weekly_digest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const NETWORK: &str = "[[networks]]\nname = \"n\"\ncidrs = [\"10.0.0.0/24\"]\ngroup = \"pupil\"\n";

    fn parse(alerts: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(&format!("{NETWORK}{alerts}"), "school.toml")
    }

    #[test]
    fn the_defaults_hold_until_a_rule_is_written_over_them() {
        let config = Config::parse(NETWORK, "school.toml").unwrap();
        assert_eq!(config.alerts, AlertSettings::default());
        let config = parse(
            "[alerts]\nquiet_minutes = 20\n[alerts.rules.repeated-gambling]\ncount = 4\n\
             [alerts.rules.repeated-games]\nkind = \"repeated\"\ncategory = \"games\"\ncount = 20\nminutes = 60\n\
             severity = \"low\"\n[alerts.rules.bypass]\nenabled = false\n",
        )
        .unwrap();
        let rule = |id: &str| config.alerts.rules.iter().find(|rule| rule.id == id).unwrap().clone();
        assert_eq!(
            rule("repeated-gambling").trigger,
            Trigger::Repeated { category: "gambling".into(), count: 4, window_ms: 30 * MINUTE }
        );
        assert_eq!(rule("repeated-games").severity, Severity::Low);
        assert!(!rule("bypass").enabled);
        assert_eq!(config.alerts.quiet_ms, 20 * MINUTE);
        let again = Config::parse(&config.to_toml(), "rendered").unwrap();
        assert_eq!(again.alerts.rules, config.alerts.rules);
        assert_eq!(again.alerts.quiet_ms, config.alerts.quiet_ms);
    }

    #[test]
    fn email_and_webhook_settings_are_checked_and_kept() {
        let config = parse(
            "[alerts.email]\nserver = \"smtp.school.example\"\nusername = \"hedgerow\"\n\
             password_env = \"SMTP_PASSWORD\"\nfrom = \"Hedgerow <hedgerow@school.example>\"\n\
             high = [\"dsl@school.example\", \"head@school.example\"]\nlow = [\"ict@school.example\"]\n\
             weekly_digest = \"fri 16:00\"\n[alerts.webhook]\nurl = \"https://hooks.school.example/a\"\n\
             secret_file = \"/etc/hedgerow/hook.key\"\n",
        )
        .unwrap();
        let email = config.alerts.email.clone().unwrap();
        assert_eq!((email.port, email.security), (587, SmtpSecurity::Starttls));
        assert_eq!(email.password, Some(Secret::Env("SMTP_PASSWORD".into())));
        assert_eq!(email.weekly_digest, Some(DigestTime { minute: 16 * 60, day: Some(jiff::civil::Weekday::Friday) }));
        assert_eq!(email.daily_digest, Some(DigestTime { minute: 450, day: None }));
        assert_eq!(email.everyone().len(), 3);
        let again = Config::parse(&config.to_toml(), "rendered").unwrap();
        assert_eq!(again.alerts, config.alerts);
    }

    #[test]
    fn mistakes_name_the_line_and_the_fix() {
        let error = |text: &str| parse(text).unwrap_err().to_string();
        let e = error("[alerts.rules.repeated-gambling]\ncount = 0\n");
        assert!(e.starts_with("school.toml:6:") && e.contains("from 2 to 1000"), "{e}");
        let e = error("[alerts.rules.mine]\ncategory = \"games\"\n");
        assert!(e.starts_with("school.toml:5:") && e.contains("kind ="), "{e}");
        let e = error("[alerts.rules.mine]\nkind = \"repeated\"\ncategory = \"gamez\"\ncount = 3\nminutes = 5\n");
        assert!(e.contains("not a category"), "{e}");
        let e = error(
            "[alerts.email]\nserver = \"smtp.example.org\"\nsecurity = \"none\"\nfrom = \"a@b.example\"\nhigh = [\"c@d.example\"]\n",
        );
        assert!(e.starts_with("school.toml:7:") && e.contains("unencrypted"), "{e}");
        let e = error("[alerts.email]\nserver = \"smtp.example.org\"\nfrom = \"a@b.example\"\nhigh = [\"dsl\"]\n");
        assert!(e.starts_with("school.toml:8:") && e.contains("not an e-mail address"), "{e}");
        let e = error("[alerts.webhook]\nurl = \"http://hooks.example.org/\"\nsecret_env = \"K\"\n");
        assert!(e.starts_with("school.toml:6:") && e.contains("https://"), "{e}");
        let e = error("[alerts.webhook]\nurl = \"https://hooks.example.org/\"\n");
        assert!(e.contains("no secret"), "{e}");
    }
}
