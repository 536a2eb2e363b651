//! `[dashboard]`: where the web dashboard listens, which names it answers
//! to, and how long a login lasts. Its serde shape, its compile step (with
//! file:line messages like `compile.rs`) and its rendering live here, so
//! `shapes.rs`, `compile.rs` and `render.rs` each hold one line for it. TLS
//! files are only named here; `hedgerow serve` reads them at start.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::ConfigError;

/// The dashboard's settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardSettings {
    /// Addresses to serve HTTP on; empty turns the dashboard off.
    pub listen: Vec<SocketAddr>,
    /// Names the Host header may carry (lower case, no port); the listen
    /// addresses are always allowed too.
    pub hosts: Vec<String>,
    /// A session ends after this long without a request.
    pub idle: Duration,
    /// A session ends this long after login, however busy.
    pub absolute: Duration,
    /// Serve over TLS with this certificate chain and key (PEM files).
    pub tls: Option<TlsFiles>,
}

/// `[dashboard] tls_cert` and `tls_key`, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        DashboardSettings {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            hosts: vec!["localhost".to_string()],
            idle: Duration::from_secs(30 * 60),
            absolute: Duration::from_secs(12 * 3600),
            tls: None,
        }
    }
}

/// `[dashboard]` as written.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDashboard {
    #[serde(default = "default_listen")]
    listen: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "default_hosts")]
    hosts: Vec<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls_cert: Option<Spanned<PathBuf>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls_key: Option<Spanned<PathBuf>>,
    #[serde(default = "default_idle_minutes")]
    idle_minutes: Spanned<u64>,
    #[serde(default = "default_absolute_hours")]
    absolute_hours: Spanned<u64>,
}

impl Default for RawDashboard {
    fn default() -> Self {
        render(&DashboardSettings::default())
    }
}

fn unplaced<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}
fn default_listen() -> Spanned<Vec<Spanned<String>>> {
    unplaced(vec![unplaced("127.0.0.1:8080".to_string())])
}
fn default_hosts() -> Vec<Spanned<String>> {
    vec![unplaced("localhost".to_string())]
}
fn default_idle_minutes() -> Spanned<u64> {
    unplaced(30)
}
fn default_absolute_hours() -> Spanned<u64> {
    unplaced(12)
}

/// Checks `[dashboard]`; `text` and `source_name` give messages their file and line.
pub(super) fn compile(raw: RawDashboard, text: &str, source_name: &str) -> Result<DashboardSettings, ConfigError> {
    let error = |span: &Range<usize>, message: String| ConfigError {
        source_name: source_name.to_string(),
        line: (span.end > 0).then(|| crate::text::line_at(text, span.start)),
        message,
    };
    let mut listen = Vec::new();
    for written in raw.listen.get_ref() {
        let value = written.get_ref().trim();
        let address = value.parse::<SocketAddr>().map_err(|_| {
            let why = match value.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => format!("it has no port; write \"{value}:8080\""),
                Ok(IpAddr::V6(_)) => format!("it has no port; write \"[{value}]:8080\""),
                Err(_) => "it is not an IP address and port".to_string(),
            };
            error(
                &written.span(),
                format!(
                    "[dashboard] listen = [{value:?}]: {why}; write addresses like \"10.0.20.5:8080\" (the staff \
                     network's address), or listen = [] to turn the dashboard off"
                ),
            )
        })?;
        if listen.contains(&address) {
            return Err(error(&written.span(), format!("[dashboard] listen has {address} twice; remove one")));
        }
        listen.push(address);
    }
    let mut hosts = Vec::new();
    for written in &raw.hosts {
        let host = written.get_ref().trim().trim_end_matches('.').to_ascii_lowercase();
        let fine = !host.is_empty()
            && host.len() <= 253
            && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            && !host.starts_with('.')
            && !host.starts_with('-');
        if !fine && host.parse::<IpAddr>().is_err() {
            return Err(error(
                &written.span(),
                format!(
                    "[dashboard] hosts = [{:?}] is not a host name; write the names people type to reach the \
                     dashboard, without a port or scheme, e.g. hosts = [\"hedgerow.school.internal\", \"localhost\"]",
                    written.get_ref()
                ),
            ));
        }
        hosts.push(host);
    }
    let tls = match (raw.tls_cert, raw.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert: cert.into_inner(), key: key.into_inner() }),
        (None, None) => None,
        (Some(one), None) | (None, Some(one)) => {
            return Err(error(
                &one.span(),
                "[dashboard] needs both tls_cert (the certificate chain, PEM) and tls_key (its private key, PEM), \
                 or neither to serve plain HTTP"
                    .to_string(),
            ));
        }
    };
    let idle = *raw.idle_minutes.get_ref();
    if !(1..=24 * 60).contains(&idle) {
        return Err(error(
            &raw.idle_minutes.span(),
            format!("[dashboard] idle_minutes = {idle} must be from 1 to 1440 (a day); 30 suits most schools"),
        ));
    }
    let absolute = *raw.absolute_hours.get_ref();
    if !(1..=24 * 7).contains(&absolute) {
        return Err(error(
            &raw.absolute_hours.span(),
            format!("[dashboard] absolute_hours = {absolute} must be from 1 to 168 (a week); 12 covers a school day"),
        ));
    }
    Ok(DashboardSettings {
        listen,
        hosts,
        idle: Duration::from_secs(idle * 60),
        absolute: Duration::from_secs(absolute * 3600),
        tls,
    })
}

/// The shape a file would hold to compile into `settings`.
pub(super) fn render(settings: &DashboardSettings) -> RawDashboard {
    RawDashboard {
        listen: unplaced(settings.listen.iter().map(|address| unplaced(address.to_string())).collect()),
        hosts: settings.hosts.iter().map(|host| unplaced(host.clone())).collect(),
        tls_cert: settings.tls.as_ref().map(|tls| unplaced(tls.cert.clone())),
        tls_key: settings.tls.as_ref().map(|tls| unplaced(tls.key.clone())),
        idle_minutes: unplaced(settings.idle.as_secs() / 60),
        absolute_hours: unplaced(settings.absolute.as_secs() / 3600),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const NETWORK: &str = "[[networks]]\nname = \"n\"\ncidrs = [\"10.0.0.0/24\"]\ngroup = \"pupil\"\n";

    fn parse(dashboard: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(&format!("{NETWORK}[dashboard]\n{dashboard}"), "school.toml")
    }

    #[test]
    fn defaults_listen_on_loopback_8080_for_localhost() {
        let config = Config::parse(NETWORK, "school.toml").unwrap();
        assert_eq!(config.dashboard.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(config.dashboard.hosts, vec!["localhost".to_string()]);
        assert_eq!(config.dashboard.idle.as_secs(), 30 * 60);
        assert_eq!(config.dashboard.absolute.as_secs(), 12 * 3600);
        assert_eq!(Config::embedded_default().dashboard.listen, config.dashboard.listen);
    }

    #[test]
    fn an_empty_listen_turns_it_off_and_settings_read_back() {
        let config = parse(
            "listen = []\nhosts = [\"Hedgerow.School.Internal\"]\nidle_minutes = 10\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
        )
        .unwrap();
        assert_eq!(config.dashboard.tls.as_ref().map(|tls| tls.key.clone()), Some("k.pem".into()));
        assert!(config.dashboard.listen.is_empty());
        assert_eq!(config.dashboard.hosts, vec!["hedgerow.school.internal".to_string()]);
        let again = Config::parse(&config.to_toml(), "rendered").unwrap();
        assert_eq!(again.dashboard, config.dashboard);
    }

    #[test]
    fn mistakes_name_the_line_and_the_fix() {
        let error = parse("listen = [\"10.0.0.1\"]\n").unwrap_err().to_string();
        assert!(error.starts_with("school.toml:6:") && error.contains("10.0.0.1:8080"), "{error}");
        let error = parse("hosts = [\"http://x\"]\n").unwrap_err().to_string();
        assert!(error.starts_with("school.toml:6:") && error.contains("without a port or scheme"), "{error}");
        let error = parse("idle_minutes = 0\n").unwrap_err().to_string();
        assert!(error.starts_with("school.toml:6:") && error.contains("1 to 1440"), "{error}");
        let error = parse("tls_cert = \"/etc/cert.pem\"\n").unwrap_err().to_string();
        assert!(error.starts_with("school.toml:6:") && error.contains("both tls_cert"), "{error}");
        let error = parse("port = 80\n").unwrap_err().to_string();
        assert!(error.contains("unknown field"), "{error}");
    }
}
