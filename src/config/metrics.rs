//! `[metrics]`: the Prometheus endpoint's own listener and its optional
//! bearer token. Its serde shape, compile step (file:line messages) and
//! rendering live here, as `dashboard.rs` does for `[dashboard]`. A token
//! file is only named here; `hedgerow serve` reads it at start.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::ConfigError;

/// The metrics listener's settings, checked. Off (`listen: None`) unless
/// `[metrics] listen` is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Where `/metrics`, `/health` and `/ready` are served (plain HTTP).
    pub listen: Option<SocketAddr>,
    /// A scrape must send `Authorization: Bearer <token>`.
    pub bearer_token: Option<BearerToken>,
}

/// The token, written in the config or in a file of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BearerToken {
    Inline(String),
    /// Read at start; surrounding white space is ignored.
    File(PathBuf),
}

/// `[metrics]` as written.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    listen: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bearer_token: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bearer_token_file: Option<Spanned<PathBuf>>,
}

fn unplaced<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

/// Checks `[metrics]`; `text` and `source_name` give messages their file and line.
pub(super) fn compile(raw: RawMetrics, text: &str, source_name: &str) -> Result<MetricsSettings, ConfigError> {
    let error = |span: &Range<usize>, message: String| ConfigError {
        source_name: source_name.to_string(),
        line: (span.end > 0).then(|| crate::text::line_at(text, span.start)),
        message,
    };
    let listen = match &raw.listen {
        None => None,
        Some(written) => {
            let value = written.get_ref().trim();
            let address = value.parse::<SocketAddr>().map_err(|_| {
                let why = match value.parse::<IpAddr>() {
                    Ok(IpAddr::V4(_)) => format!("it has no port; write \"{value}:9153\""),
                    Ok(IpAddr::V6(_)) => format!("it has no port; write \"[{value}]:9153\""),
                    Err(_) => "it is not an IP address and port".to_string(),
                };
                error(
                    &written.span(),
                    format!(
                        "[metrics] listen = {value:?}: {why}; write an address like \"127.0.0.1:9153\" (or the \
                         address your monitoring server scrapes), or remove listen to turn metrics off"
                    ),
                )
            })?;
            Some(address)
        }
    };
    let bearer_token = match (raw.bearer_token, raw.bearer_token_file) {
        (Some(_), Some(file)) => {
            return Err(error(
                &file.span(),
                "[metrics] has both bearer_token and bearer_token_file; keep one".to_string(),
            ));
        }
        (Some(token), None) => {
            let value = token.get_ref().trim();
            if value.len() < 16 || !value.chars().all(|c| c.is_ascii_graphic()) {
                return Err(error(
                    &token.span(),
                    "[metrics] bearer_token must be at least 16 visible characters with no spaces (e.g. the \
                     output of `openssl rand -hex 32`)"
                        .to_string(),
                ));
            }
            Some(BearerToken::Inline(value.to_string()))
        }
        (None, Some(file)) => Some(BearerToken::File(file.into_inner())),
        (None, None) => None,
    };
    if bearer_token.is_some() && listen.is_none() {
        return Err(ConfigError {
            source_name: source_name.to_string(),
            line: None,
            message: "[metrics] names a bearer token but no listen address; add listen = \"127.0.0.1:9153\"".into(),
        });
    }
    Ok(MetricsSettings { listen, bearer_token })
}

/// The shape a file would hold to compile into `settings`.
pub(super) fn render(settings: &MetricsSettings) -> RawMetrics {
    RawMetrics {
        listen: settings.listen.map(|address| unplaced(address.to_string())),
        bearer_token: match &settings.bearer_token {
            Some(BearerToken::Inline(token)) => Some(unplaced(token.clone())),
            _ => None,
        },
        bearer_token_file: match &settings.bearer_token {
            Some(BearerToken::File(path)) => Some(unplaced(path.clone())),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const NETWORK: &str = "[[networks]]\nname = \"n\"\ncidrs = [\"10.0.0.0/24\"]\ngroup = \"pupil\"\n";

    fn parse(metrics: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(&format!("{NETWORK}[metrics]\n{metrics}"), "school.toml")
    }

    #[test]
    fn off_unless_a_listen_address_is_written() {
        let config = Config::parse(NETWORK, "school.toml").unwrap();
        assert_eq!(config.metrics, MetricsSettings::default());
        let config =
            parse("listen = \"127.0.0.1:9153\"\nbearer_token_file = \"/etc/hedgerow/metrics.token\"\n").unwrap();
        assert_eq!(config.metrics.listen, Some("127.0.0.1:9153".parse().unwrap()));
        assert_eq!(config.metrics.bearer_token, Some(BearerToken::File("/etc/hedgerow/metrics.token".into())));
        let again = Config::parse(&config.to_toml(), "rendered").unwrap();
        assert_eq!(again.metrics, config.metrics);
    }

    #[test]
    fn mistakes_name_the_line_and_the_fix() {
        let error = parse("listen = \"10.0.0.1\"\n").unwrap_err().to_string();
        assert!(error.starts_with("school.toml:6:") && error.contains("10.0.0.1:9153"), "{error}");
        let error = parse("listen = \"127.0.0.1:9153\"\nbearer_token = \"short\"\n").unwrap_err().to_string();
        assert!(error.starts_with("school.toml:7:") && error.contains("at least 16"), "{error}");
        let error =
            parse("listen = \"127.0.0.1:9153\"\nbearer_token = \"0123456789abcdef\"\nbearer_token_file = \"t\"\n")
                .unwrap_err()
                .to_string();
        assert!(error.starts_with("school.toml:8:") && error.contains("keep one"), "{error}");
        let error = parse("port = 9153\n").unwrap_err().to_string();
        assert!(error.contains("unknown field"), "{error}");
    }
}
