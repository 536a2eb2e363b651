//! `[selftest]`: when the server runs its built-in self-test by itself
//! (`hedgerow selftest` and the dashboard run it on demand whatever this
//! says). On by default, daily at 07:30 school time (`timezone`), before
//! lessons, so a list that stopped loading overnight is an alert by then.

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::ConfigError;

/// The schedule, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelftestSettings {
    /// Run daily on the schedule (default true).
    pub enabled: bool,
    /// The school-time hour and minute of the daily run (default 07:30).
    pub daily_at: (u8, u8),
}

impl Default for SelftestSettings {
    fn default() -> Self {
        SelftestSettings { enabled: true, daily_at: (7, 30) }
    }
}

impl SelftestSettings {
    /// "07:30".
    pub fn daily_at_text(&self) -> String {
        format!("{:02}:{:02}", self.daily_at.0, self.daily_at.1)
    }
}

/// `[selftest]` as written.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSelftest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    daily_at: Option<Spanned<String>>,
}

/// Checks `[selftest]`; `text` and `source_name` give messages their file and line.
pub(super) fn compile(raw: RawSelftest, text: &str, source_name: &str) -> Result<SelftestSettings, ConfigError> {
    let mut settings = SelftestSettings::default();
    if let Some(enabled) = raw.enabled {
        settings.enabled = enabled;
    }
    if let Some(written) = &raw.daily_at {
        let value = written.get_ref().trim();
        settings.daily_at = parse_time(value).ok_or_else(|| ConfigError {
            source_name: source_name.to_string(),
            line: Some(crate::text::line_at(text, written.span().start)),
            message: format!(
                "[selftest] daily_at = {value:?} is not a time of day; write hours and minutes in school time, e.g. \
                 \"07:30\" (or enabled = false to run the self-test only on demand)"
            ),
        })?;
    }
    Ok(settings)
}

/// "07:30" -> (7, 30); hours 0-23, minutes 0-59, two digits for minutes.
fn parse_time(text: &str) -> Option<(u8, u8)> {
    let (hours, minutes) = text.split_once(':')?;
    if hours.is_empty() || hours.len() > 2 || minutes.len() != 2 {
        return None;
    }
    let hours: u8 = hours.parse().ok()?;
    let minutes: u8 = minutes.parse().ok()?;
    (hours < 24 && minutes < 60).then_some((hours, minutes))
}

pub(super) fn render(settings: &SelftestSettings) -> RawSelftest {
    let default = SelftestSettings::default();
    RawSelftest {
        enabled: (settings.enabled != default.enabled).then_some(settings.enabled),
        daily_at: (settings.daily_at != default.daily_at).then(|| Spanned::new(0..0, settings.daily_at_text())),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const NETWORK: &str = "[[networks]]\nname = \"n\"\ncidrs = [\"10.0.0.0/24\"]\ngroup = \"pupil\"\n";

    #[test]
    fn daily_at_half_past_seven_unless_written_and_a_bad_time_names_its_line() {
        let config = Config::parse(NETWORK, "school.toml").unwrap();
        assert_eq!((config.selftest.enabled, config.selftest.daily_at), (true, (7, 30)));
        let config =
            Config::parse(&format!("{NETWORK}[selftest]\ndaily_at = \"6:05\"\nenabled = false\n"), "school.toml")
                .unwrap();
        assert_eq!((config.selftest.enabled, config.selftest.daily_at), (false, (6, 5)));
        assert_eq!(Config::parse(&config.to_toml(), "rendered").unwrap().selftest, config.selftest);
        for bad in ["7.30", "24:00", "07:60", "07:3", "seven"] {
            let error = Config::parse(&format!("{NETWORK}[selftest]\ndaily_at = \"{bad}\"\n"), "school.toml")
                .unwrap_err()
                .to_string();
            assert!(error.starts_with("school.toml:6:") && error.contains("\"07:30\""), "{bad}: {error}");
        }
        let error = Config::parse(&format!("{NETWORK}[selftest]\nat = \"07:30\"\n"), "school.toml").unwrap_err();
        assert!(error.to_string().contains("at"), "{error}");
    }
}
