//! The policy at a moment: overrides that lapse at their `until`, and weekly
//! schedules in which a category is not blocked for a group, read in the
//! school's time zone (so a window keeps its wall-clock hours across the
//! clock changes). The query path never reads a clock: `serve` builds the
//! snapshot from [`Config::groups_at`] and swaps in a new one at
//! [`Config::next_policy_change_after`].

use std::collections::BTreeMap;

use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use super::Config;
use crate::policy::category::CategorySet;
use crate::policy::{GroupPolicy, group::Overrides};

/// Which list an override is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OverrideKind {
    Allow,
    Deny,
}

impl OverrideKind {
    /// The config key: `allow` or `deny`.
    pub fn key(self) -> &'static str {
        match self {
            OverrideKind::Allow => "allow",
            OverrideKind::Deny => "deny",
        }
    }
}

/// One allow or deny override as written, with its reason and expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideEntry {
    pub group: String,
    pub kind: OverrideKind,
    /// The normalised rule ("example.com", or "=www.example.com" for one name).
    pub rule: String,
    pub reason: String,
    /// When it lapses (UTC milliseconds); `None`: never.
    pub until_ms: Option<i64>,
}

impl OverrideEntry {
    /// In force at `now_ms`.
    pub fn in_force_at(&self, now_ms: i64) -> bool {
        self.until_ms.is_none_or(|until| now_ms < until)
    }
}

/// A weekly window in which `category` is not blocked for `group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub group: String,
    /// The category id as written.
    pub category: String,
    pub bit: u8,
    pub days: Vec<Weekday>,
    /// Minutes after local midnight: the window is `from <= t < to`.
    pub from_minute: u16,
    pub to_minute: u16,
}

/// The words for days, Monday first.
pub const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
    ("sun", Weekday::Sunday),
];

pub fn day_word(day: Weekday) -> &'static str {
    DAYS.iter().find(|(_, d)| *d == day).map(|(word, _)| *word).unwrap_or("mon")
}

/// "12:00" -> 720; hours 0-23 and minutes 0-59, two digits each.
pub fn parse_clock(text: &str) -> Option<u16> {
    let (hours, minutes) = text.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let (hours, minutes): (u16, u16) = (hours.parse().ok()?, minutes.parse().ok()?);
    (hours < 24 && minutes < 60).then_some(hours * 60 + minutes)
}

pub fn clock_text(minute: u16) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

/// An RFC 3339 instant -> UTC milliseconds.
pub fn parse_instant(text: &str) -> Option<i64> {
    text.parse::<Timestamp>().ok().map(|t| t.as_millisecond())
}

impl Config {
    /// An override in words, as the change log shows it: `blocked until
    /// 2026-12-07 16:00 GMT (exam week)`.
    pub fn override_words(&self, kind: OverrideKind, until_ms: Option<i64>, reason: &str) -> String {
        let mut words = match kind {
            OverrideKind::Allow => "allowed".to_string(),
            OverrideKind::Deny => "blocked".to_string(),
        };
        if let Some(until) = until_ms {
            words.push_str(&format!(" until {}", self.local_time_text(until)));
        }
        if !reason.is_empty() {
            words.push_str(&format!(" ({reason})"));
        }
        words
    }

    /// A UTC instant as people at the school read it, in `timezone`:
    /// `2026-12-07 16:00 GMT` (RFC 3339 UTC if it is out of range).
    pub fn local_time_text(&self, ms: i64) -> String {
        Timestamp::from_millisecond(ms)
            .map(|t| t.to_zoned(self.timezone.clone()).strftime("%Y-%m-%d %H:%M %Z").to_string())
            .unwrap_or_else(|_| instant_text(ms))
    }
}

/// UTC milliseconds -> RFC 3339 ("2026-12-07T16:00:00Z").
pub fn instant_text(ms: i64) -> String {
    Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_else(|_| ms.to_string())
}

impl Schedule {
    fn open_at(&self, weekday: Weekday, minute: u16) -> bool {
        self.days.contains(&weekday) && self.from_minute <= minute && minute < self.to_minute
    }
}

impl Config {
    /// The groups' policies as in force at `now_ms`: overrides past their
    /// `until` dropped, scheduled categories unblocked inside their windows.
    pub fn groups_at(&self, now_ms: i64) -> BTreeMap<String, GroupPolicy> {
        let mut groups = self.groups.clone();
        if self.overrides.iter().any(|entry| !entry.in_force_at(now_ms)) {
            for (name, policy) in groups.iter_mut() {
                let (mut allow, mut deny) = (Overrides::default(), Overrides::default());
                for entry in self.overrides.iter().filter(|e| &e.group == name && e.in_force_at(now_ms)) {
                    match entry.kind {
                        OverrideKind::Allow => allow.insert(&entry.rule),
                        OverrideKind::Deny => deny.insert(&entry.rule),
                    }
                }
                policy.allow = allow;
                policy.deny = deny;
            }
        }
        if !self.schedules.is_empty() {
            let local = local_time(&self.timezone, now_ms);
            for schedule in &self.schedules {
                if let (Some((weekday, minute)), Some(policy)) = (local, groups.get_mut(&schedule.group))
                    && schedule.open_at(weekday, minute)
                {
                    policy.blocked = policy.blocked.without(CategorySet::of(schedule.bit));
                }
            }
        }
        groups
    }

    /// The first instant after `now_ms` at which [`Config::groups_at`] may
    /// give a different answer: an override's `until`, or a schedule's
    /// window opening or closing.
    pub fn next_policy_change_after(&self, now_ms: i64) -> Option<i64> {
        let lapses = self.overrides.iter().filter_map(|entry| entry.until_ms).filter(|until| *until > now_ms);
        let windows = self.schedules.iter().filter_map(|schedule| next_edge(&self.timezone, schedule, now_ms));
        lapses.chain(windows).min()
    }

    /// The overrides that have lapsed at `now_ms`.
    pub fn lapsed_overrides(&self, now_ms: i64) -> impl Iterator<Item = &OverrideEntry> {
        self.overrides.iter().filter(move |entry| !entry.in_force_at(now_ms))
    }
}

fn local_time(timezone: &TimeZone, now_ms: i64) -> Option<(Weekday, u16)> {
    let zoned = Timestamp::from_millisecond(now_ms).ok()?.to_zoned(timezone.clone());
    Some((zoned.weekday(), zoned.hour() as u16 * 60 + zoned.minute() as u16))
}

/// The next opening or closing of `schedule` after `now_ms`. A wall-clock
/// time skipped by a clock change is taken as the instant after the gap.
fn next_edge(timezone: &TimeZone, schedule: &Schedule, now_ms: i64) -> Option<i64> {
    let today = Timestamp::from_millisecond(now_ms).ok()?.to_zoned(timezone.clone()).date();
    (0..=8i64)
        .filter_map(|offset| today.checked_add(offset.days()).ok())
        .filter(|date| schedule.days.contains(&date.weekday()))
        .flat_map(|date| [schedule.from_minute, schedule.to_minute].map(move |minute| (date, minute)))
        .filter_map(|(date, minute)| {
            let time = jiff::civil::time((minute / 60) as i8, (minute % 60) as i8, 0, 0);
            date.to_datetime(time).to_zoned(timezone.clone()).ok().map(|zoned| zoned.timestamp().as_millisecond())
        })
        .filter(|edge| *edge > now_ms)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::category;

    fn ms(text: &str) -> i64 {
        parse_instant(text).unwrap()
    }

    const LUNCH: &str = "[[networks]]\nname = \"n\"\ncidrs = [\"10.0.0.0/8\"]\ngroup = \"pupil\"\n\
        [[groups.pupil.schedule]]\ncategory = \"games\"\ndays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]\n\
        from = \"12:00\"\nto = \"13:00\"\n";

    fn games_blocked(config: &Config, now: i64) -> bool {
        config.groups_at(now)["pupil"].blocked.contains(category::index_of("games").unwrap())
    }

    #[test]
    fn a_lunch_window_follows_london_wall_clock_across_the_clock_changes() {
        let config = Config::parse(LUNCH, "t").unwrap();
        // Summer time (BST, UTC+1): Friday 23 October 2026, 12:30 local is 11:30Z.
        assert!(!games_blocked(&config, ms("2026-10-23T11:30:00Z")));
        assert!(games_blocked(&config, ms("2026-10-23T12:30:00Z")), "13:30 BST is after the window");
        // Clocks go back on Sunday 25 October: Monday 26 October 12:30 GMT is 12:30Z.
        assert!(!games_blocked(&config, ms("2026-10-26T12:30:00Z")));
        assert!(games_blocked(&config, ms("2026-10-26T11:30:00Z")), "11:30 GMT is before the window");
        // Weekends stay blocked.
        assert!(games_blocked(&config, ms("2026-10-24T11:30:00Z")));
        // Clocks go forward on Sunday 29 March 2026: Monday 30 March 12:00 BST is 11:00Z.
        assert!(!games_blocked(&config, ms("2026-03-30T11:00:00Z")));
        assert!(games_blocked(&config, ms("2026-03-30T12:00:00Z")));
        assert!(games_blocked(&config, ms("2026-03-27T11:00:00Z")), "Friday 27 March is GMT: 11:00 local");
    }

    #[test]
    fn times_are_shown_in_the_school_time_zone() {
        let london = Config::parse(LUNCH, "t").unwrap();
        assert_eq!(london.local_time_text(ms("2026-07-01T14:30:00Z")), "2026-07-01 15:30 BST");
        assert_eq!(london.local_time_text(ms("2026-11-30T14:30:00Z")), "2026-11-30 14:30 GMT");
        let dublin = Config::parse(&format!("timezone = \"Europe/Dublin\"\n{LUNCH}"), "t").unwrap();
        assert_eq!(dublin.local_time_text(ms("2026-07-01T14:30:00Z")), "2026-07-01 15:30 IST");
    }

    #[test]
    fn the_next_change_is_the_next_window_edge_in_local_time() {
        let config = Config::parse(LUNCH, "t").unwrap();
        // Friday 23 October 2026 13:00 BST, 12:00Z: the window closes.
        assert_eq!(config.next_policy_change_after(ms("2026-10-23T11:30:00Z")), Some(ms("2026-10-23T12:00:00Z")));
        // From Friday afternoon, the next opening is Monday 12:00 GMT (after the change back).
        assert_eq!(config.next_policy_change_after(ms("2026-10-23T12:00:00Z")), Some(ms("2026-10-26T12:00:00Z")));
        // Friday 27 March 2026 after lunch: Monday 30 March 12:00 BST is 11:00Z.
        assert_eq!(config.next_policy_change_after(ms("2026-03-27T13:00:00Z")), Some(ms("2026-03-30T11:00:00Z")));
    }

    #[test]
    fn an_override_lapses_at_its_until() {
        let text = "[[networks]]\nname = \"n\"\ncidrs = [\"10.0.0.0/8\"]\ngroup = \"pupil\"\n[groups.pupil]\n\
            allow = [\"plain.example\", { name = \"lesson.example\", reason = \"Year 9\", until = \"2026-12-07T16:00:00Z\" }]\n";
        let config = Config::parse(text, "t").unwrap();
        let before = config.groups_at(ms("2026-12-07T15:59:59Z"));
        assert!(before["pupil"].allow.find("lesson.example").is_some());
        let after = config.groups_at(ms("2026-12-07T16:00:00Z"));
        assert!(after["pupil"].allow.find("lesson.example").is_none());
        assert!(after["pupil"].allow.find("plain.example").is_some());
        assert_eq!(config.next_policy_change_after(ms("2026-12-01T00:00:00Z")), Some(ms("2026-12-07T16:00:00Z")));
        assert_eq!(config.next_policy_change_after(ms("2026-12-07T16:00:00Z")), None);
        assert_eq!(config.lapsed_overrides(ms("2026-12-08T00:00:00Z")).count(), 1);
    }

    #[test]
    fn bad_schedules_overrides_and_zones_name_their_lines() {
        let base = "[[networks]]\nname = \"n\"\ncidrs = [\"10.0.0.0/8\"]\ngroup = \"pupil\"\n";
        let error = |tail: &str| Config::parse(&format!("{base}{tail}"), "t.toml").unwrap_err().to_string();
        let schedule = |category: &str, days: &str, from: &str, to: &str| {
            error(&format!(
                "[[groups.pupil.schedule]]\ncategory = \"{category}\"\ndays = [{days}]\nfrom = \"{from}\"\nto = \"{to}\"\n"
            ))
        };
        let e = schedule("gamez", "\"mon\"", "12:00", "13:00");
        assert!(
            e.starts_with("t.toml:6:")
                && e.contains("unknown category \"gamez\"")
                && e.contains("category = \"games\""),
            "{e}"
        );
        let e = schedule("malware", "\"mon\"", "12:00", "13:00");
        assert!(e.starts_with("t.toml:6:") && e.contains("locked"), "{e}");
        let e = schedule("games", "\"monday\"", "12:00", "13:00");
        assert!(e.starts_with("t.toml:7:") && e.contains("\"monday\" is not a day"), "{e}");
        let e = schedule("games", "\"mon\"", "13:00", "12:00");
        assert!(e.starts_with("t.toml:8:") && e.contains("is not before"), "{e}");
        let e = schedule("games", "\"mon\"", "12:00", "25:00");
        assert!(e.starts_with("t.toml:9:") && e.contains("\"HH:MM\""), "{e}");
        let e = error("[groups.pupil]\nallow = [{ name = \"a.example\", until = \"next week\" }]\n");
        assert!(e.starts_with("t.toml:6:") && e.contains("RFC 3339"), "{e}");
        let e = Config::parse(&format!("timezone = \"Europe/Londn\"\n{base}"), "t.toml").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:1:") && e.contains("Europe/London"), "{e}");
    }

    #[test]
    fn schedules_and_override_tables_round_trip_through_the_rendering() {
        let text = format!(
            "timezone = \"Europe/Paris\"\n{LUNCH}[groups.pupil]\nallow = [\"a.example\", {{ name = \"b.example\", reason = \"project\", until = \"2026-12-07T16:00:00Z\" }}]\ndeny = [{{ name = \"c.example\", reason = \"why\" }}]\n"
        );
        let config = Config::parse(&text, "t").unwrap();
        let again =
            Config::parse(&config.to_toml(), "rendered").unwrap_or_else(|e| panic!("{e}\n{}", config.to_toml()));
        assert_eq!(again.schedules, config.schedules);
        assert_eq!(again.timezone_name, "Europe/Paris");
        let (mut a, mut b) = (again.overrides.clone(), config.overrides.clone());
        a.sort_by(|x, y| x.rule.cmp(&y.rule));
        b.sort_by(|x, y| x.rule.cmp(&y.rule));
        assert_eq!(a, b);
        assert_eq!(a[1].reason, "project");
    }
}
