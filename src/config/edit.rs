//! One policy change written into the config file's text, keeping its
//! comments and layout (`toml_edit`). Pure: text in, text out. The new text
//! is compiled with the config compiler before it is returned, so an edit
//! never produces a file `serve` would refuse. Errors name the form field
//! they are about and say what to do.

use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, TableLike, Value};

use super::Config;
use super::shapes::{BlockAnswerKind, Words, Youtube};
pub use super::timed::OverrideKind;
use super::timed::{self, DAYS};
use crate::policy::category::{self, CategorySet};
use crate::policy::group::{BlockAnswer, GroupPolicy, YoutubeMode};

/// One change a person asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyEdit {
    Category {
        group: String,
        category: String,
        blocked: bool,
    },
    SafeSearch {
        group: String,
        on: bool,
    },
    /// "strict", "moderate" or "off".
    Youtube {
        group: String,
        mode: String,
    },
    Bypass {
        group: String,
        on: bool,
    },
    /// The config's words: "nxdomain", "null" or "block-page".
    BlockAnswer {
        group: String,
        answer: String,
    },
    AddOverride {
        group: String,
        kind: OverrideKind,
        name: String,
        reason: String,
        until_ms: Option<i64>,
    },
    RemoveOverride {
        group: String,
        kind: OverrideKind,
        name: String,
    },
    AddSchedule {
        group: String,
        category: String,
        days: Vec<String>,
        from: String,
        to: String,
    },
    /// The group's `index`-th schedule (from 0, in file order).
    RemoveSchedule {
        group: String,
        index: usize,
    },
    /// Turns a declared list source on or off through `[lists] enable` /
    /// `disable` (the Lists page). Not about a group.
    ListSource {
        id: String,
        enabled: bool,
    },
    /// Writes the whole `[alerts.rules.<id>]` table (the Alerts rules page).
    /// Not about a group. Numbers are as typed, so a bad one is refused on
    /// its field; `None` keeps the rule's value (or its default).
    AlertRule(AlertRuleEdit),
}

/// One alert rule as the rules page sends it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlertRuleEdit {
    pub id: String,
    /// For a new rule: "any", "repeated", "bypass" or "rise"; `None` keeps
    /// the existing rule's kind.
    pub kind: Option<String>,
    pub enabled: bool,
    /// "high", "medium" or "low".
    pub severity: String,
    /// A repeated rule's category.
    pub category: Option<String>,
    /// An "any" rule's categories.
    pub categories: Option<Vec<String>>,
    pub count: Option<String>,
    pub minutes: Option<String>,
    pub factor: Option<String>,
    pub minimum: Option<String>,
}

/// Why an edit was refused: the form field it is about (if one) and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditError {
    pub field: Option<&'static str>,
    pub message: String,
}

impl std::fmt::Display for EditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for EditError {}

fn refuse(field: &'static str, message: impl Into<String>) -> EditError {
    EditError { field: Some(field), message: message.into() }
}

/// The new text and the change in words a governor can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edited {
    pub text: String,
    /// "category", "safesearch", "youtube", "bypass", "block-answer",
    /// "override-add", "override-remove", "schedule-add", "schedule-remove",
    /// "list-source".
    pub kind: &'static str,
    pub group: Option<String>,
    /// What changed ("games for pupil").
    pub subject: String,
    pub old: String,
    pub new: String,
}

/// Applies `edit` to the config text `text` (read from `file_name`).
pub fn apply(text: &str, file_name: &str, edit: &PolicyEdit) -> Result<Edited, EditError> {
    let config = Config::parse(text, file_name).map_err(|error| EditError {
        field: None,
        message: format!("the config file does not compile as it stands, so it cannot be edited: {error}"),
    })?;
    let mut doc: DocumentMut = text.parse().map_err(|error| EditError {
        field: None,
        message: format!("{file_name} is not valid TOML ({error}); fix the file by hand first"),
    })?;
    if let PolicyEdit::ListSource { id, enabled } = edit {
        return list_source(file_name, &config, doc, id, *enabled);
    }
    if let PolicyEdit::AlertRule(rule) = edit {
        return alert_rule(file_name, &config, doc, rule);
    }
    let group_name = group_of(edit);
    let Some(policy) = config.groups.get(group_name) else {
        let known: Vec<&str> = config.groups.keys().map(String::as_str).collect();
        return Err(refuse("group", format!("there is no group {group_name:?}; choose one of {}", known.join(", "))));
    };
    let edited = {
        let table = group_table(&mut doc, group_name)?;
        change(table, &config, policy, edit)?
    };
    let (kind, subject, old, new) = edited;
    let new_text = doc.to_string();
    let new_config = Config::parse(&new_text, file_name).map_err(|error| EditError {
        field: None,
        message: format!("the change would make the config invalid: {error}"),
    })?;
    if let PolicyEdit::Category { category, blocked, .. } = edit {
        let index = category::index_of(category).expect("checked above");
        let now_blocked = new_config.groups[group_name].blocked.contains(index);
        if now_blocked != *blocked {
            return Err(refuse("category", format!("{category} could not be changed for {group_name}")));
        }
    }
    Ok(Edited { text: new_text, kind, group: Some(group_name.to_string()), subject, old, new })
}

fn group_of(edit: &PolicyEdit) -> &str {
    match edit {
        PolicyEdit::Category { group, .. }
        | PolicyEdit::SafeSearch { group, .. }
        | PolicyEdit::Youtube { group, .. }
        | PolicyEdit::Bypass { group, .. }
        | PolicyEdit::BlockAnswer { group, .. }
        | PolicyEdit::AddOverride { group, .. }
        | PolicyEdit::RemoveOverride { group, .. }
        | PolicyEdit::AddSchedule { group, .. }
        | PolicyEdit::RemoveSchedule { group, .. } => group,
        PolicyEdit::ListSource { .. } | PolicyEdit::AlertRule(_) => "",
    }
}

/// `[lists] enable` / `disable` edited so that source `id` is `enabled`:
/// its id leaves the other array, and joins this one only when its
/// declaration says otherwise. Sources of locked categories stay on.
fn list_source(
    file_name: &str,
    config: &Config,
    mut doc: DocumentMut,
    id: &str,
    enabled: bool,
) -> Result<Edited, EditError> {
    use crate::lists::sources::{self, ListSettings};
    let declared_settings = ListSettings { enable: Vec::new(), disable: Vec::new(), ..config.lists.clone() };
    let declared = sources::load_sources(&declared_settings).map_err(|error| EditError {
        field: None,
        message: format!("the list declarations cannot be read: {error}"),
    })?;
    let Some(source) = declared.iter().find(|source| source.id == id) else {
        return Err(refuse("source", format!("no list source is declared with the id {id:?}")));
    };
    let category = category::by_index(source.category).map_or("?", |category| category.id);
    if !enabled && config.locked.contains(source.category) {
        return Err(refuse(
            "source",
            format!(
                "{id} is a source of the locked category {category}: it is always in force and cannot be turned off"
            ),
        ));
    }
    let was = config.lists.disable.iter().all(|other| other != id)
        && (source.enabled || config.lists.enable.iter().any(|other| other == id));
    let root = doc.as_table_mut();
    if !root.contains_key("lists") {
        root.insert("lists", Item::Table(Table::new()));
    }
    let lists = root.get_mut("lists").and_then(Item::as_table_like_mut).ok_or_else(|| EditError {
        field: None,
        message: "the config file's [lists] is not a table; fix the file by hand first".to_string(),
    })?;
    for (key, wanted) in [("enable", enabled && !source.enabled), ("disable", !enabled && source.enabled)] {
        if !lists.contains_key(key) {
            if !wanted {
                continue;
            }
            lists.insert(key, toml_edit::value(Array::new()));
        }
        let array = lists.get_mut(key).and_then(Item::as_array_mut).ok_or_else(|| EditError {
            field: None,
            message: format!("[lists] {key} is not an array of ids; fix the file by hand first"),
        })?;
        array.retain(|value| value.as_str() != Some(id));
        if wanted {
            array.push(id);
        }
    }
    let new_text = doc.to_string();
    let new_config = Config::parse(&new_text, file_name).map_err(|error| EditError {
        field: None,
        message: format!("the change would make the config invalid: {error}"),
    })?;
    let now = sources::load_sources(&new_config.lists)
        .map_err(|error| EditError { field: None, message: format!("the change would break the lists: {error}") })?;
    if now.iter().find(|source| source.id == id).map(|source| source.enabled) != Some(enabled) {
        return Err(refuse("source", format!("{id} could not be turned {}", on_off(enabled))));
    }
    Ok(Edited {
        text: new_text,
        kind: "list-source",
        group: None,
        subject: format!("list source {id} ({category})"),
        old: on_off(was),
        new: on_off(enabled),
    })
}

/// A rule in words for the change log: "on, medium: 5 blocked lookups in
/// pornography by one device within 10 minutes".
pub fn rule_words(rule: &super::alerts::Rule) -> String {
    format!("{}, {}: {}", on_off(rule.enabled), rule.severity.as_str(), rule.describe())
}

/// A whole number typed in a form, within `range`.
fn typed_number(
    field: &'static str,
    typed: &Option<String>,
    kept: Option<i64>,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, EditError> {
    match typed.as_deref().map(str::trim).filter(|text| !text.is_empty()) {
        None => {
            kept.ok_or_else(|| refuse(field, format!("write a whole number from {} to {}", range.start(), range.end())))
        }
        Some(text) => match text.parse::<i64>() {
            Ok(value) if range.contains(&value) => Ok(value),
            _ => {
                Err(refuse(field, format!("{text:?} is not a whole number from {} to {}", range.start(), range.end())))
            }
        },
    }
}

/// `[alerts.rules.<id>]` written whole from `edit` (the rule as it stands,
/// or a new one when `edit.kind` is given and no rule has that id).
fn alert_rule(
    file_name: &str,
    config: &Config,
    mut doc: DocumentMut,
    edit: &AlertRuleEdit,
) -> Result<Edited, EditError> {
    use super::alerts::{Rule, Severity, Trigger, render_rule};
    let id = edit.id.trim();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return Err(refuse(
            "id",
            format!("{id:?} is not a rule id: lower-case letters, digits and '-', e.g. repeated-games"),
        ));
    }
    let existing = config.alerts.rules.iter().find(|rule| rule.id == id);
    let kind = match (&edit.kind, existing) {
        (Some(kind), None) => kind.trim().to_string(),
        (Some(_), Some(_)) => {
            return Err(refuse("id", format!("there is already a rule {id}; change it in its own form")));
        }
        (None, Some(rule)) => rule.trigger.kind().to_string(),
        (None, None) => return Err(refuse("id", format!("there is no alert rule {id:?}"))),
    };
    let severity = Severity::parse(edit.severity.trim()).ok_or_else(|| {
        refuse("severity", format!("{:?} is not a severity; choose high, medium or low", edit.severity))
    })?;
    let known = |id: &str| -> Result<String, EditError> {
        let id = id.trim().to_ascii_lowercase();
        known_category(&id).map(|_| id)
    };
    let trigger = match (kind.as_str(), existing.map(|rule| &rule.trigger)) {
        ("any", base) => {
            let categories = match (&edit.categories, base) {
                (Some(typed), _) => {
                    let mut categories = Vec::new();
                    for typed in typed.iter().filter(|c| !c.trim().is_empty()) {
                        let category = known(typed).map_err(|error| refuse("categories", error.message))?;
                        if !categories.contains(&category) {
                            categories.push(category);
                        }
                    }
                    categories
                }
                (None, Some(Trigger::AnyAttempt { categories })) => categories.clone(),
                (None, _) => Vec::new(),
            };
            if categories.is_empty() {
                return Err(refuse("categories", "name at least one category, e.g. self-harm"));
            }
            Trigger::AnyAttempt { categories }
        }
        ("repeated", base) => {
            let (category, count, minutes) = match base {
                Some(Trigger::Repeated { category, count, window_ms }) => {
                    (Some(category.clone()), Some(*count as i64), Some(window_ms / 60_000))
                }
                _ => (None, None, None),
            };
            let category = match (&edit.category, category) {
                (Some(typed), _) if !typed.trim().is_empty() => known(typed)?,
                (_, Some(category)) => category,
                _ => return Err(refuse("category", "choose the category this rule counts")),
            };
            Trigger::Repeated {
                category,
                count: typed_number("count", &edit.count, count, 2..=1000)? as usize,
                window_ms: typed_number("minutes", &edit.minutes, minutes, 1..=1440)? * 60_000,
            }
        }
        ("bypass", _) => Trigger::Bypass,
        ("rise", base) => {
            let (factor, minimum) = match base {
                Some(Trigger::Rise { factor, minimum }) => (i64::from(*factor), *minimum as i64),
                _ => (3, 50),
            };
            Trigger::Rise {
                factor: typed_number("factor", &edit.factor, Some(factor), 2..=100)? as u32,
                minimum: typed_number("minimum", &edit.minimum, Some(minimum), 1..=1_000_000)? as u64,
            }
        }
        (other, _) => {
            return Err(refuse(
                "kind",
                format!("{other:?} is not a kind of rule; choose any, repeated, bypass or rise"),
            ));
        }
    };
    let rule = Rule {
        id: id.to_string(),
        trigger,
        severity,
        enabled: edit.enabled,
        why: existing.map_or_else(|| "Added by the school.".to_string(), |rule| rule.why.clone()),
    };
    // The table as the config renders it, every field written.
    let rendered = toml::to_string(&render_rule(&rule))
        .map_err(|error| EditError { field: None, message: format!("the rule cannot be written ({error})") })?;
    let rendered: DocumentMut = rendered
        .parse()
        .map_err(|error| EditError { field: None, message: format!("the rule cannot be written ({error})") })?;
    let mut table = rendered.as_table().clone();
    table.set_implicit(false);
    let not_table = |what: &str| EditError {
        field: None,
        message: format!("the config file's {what} is not a table; fix the file by hand first"),
    };
    let root = doc.as_table_mut();
    for (parent, key) in [(None, "alerts"), (Some("alerts"), "rules")] {
        let holder: &mut dyn TableLike = match parent {
            None => root,
            Some(parent) => {
                root.get_mut(parent).and_then(Item::as_table_like_mut).ok_or_else(|| not_table("[alerts]"))?
            }
        };
        if !holder.contains_key(key) {
            let mut fresh = Table::new();
            fresh.set_implicit(true);
            holder.insert(key, Item::Table(fresh));
        }
    }
    let rules = root
        .get_mut("alerts")
        .and_then(Item::as_table_like_mut)
        .and_then(|alerts| alerts.get_mut("rules"))
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| not_table("[alerts.rules]"))?;
    // The comment above a table written before stays above it.
    if let Some(Item::Table(old)) = rules.get(id) {
        *table.decor_mut() = old.decor().clone();
    }
    rules.insert(id, Item::Table(table));
    let new_text = doc.to_string();
    let new_config = Config::parse(&new_text, file_name).map_err(|error| EditError {
        field: None,
        message: format!("the change would make the config invalid: {error}"),
    })?;
    let now = new_config.alerts.rules.iter().find(|written| written.id == id);
    if now.map(|now| (&now.trigger, now.severity, now.enabled)) != Some((&rule.trigger, rule.severity, rule.enabled)) {
        return Err(EditError { field: None, message: format!("the rule {id} could not be written") });
    }
    Ok(Edited {
        text: new_text,
        kind: "alert-rule",
        group: None,
        subject: format!("alert rule {id}"),
        old: existing.map_or_else(|| "(none)".to_string(), rule_words),
        new: rule_words(&rule),
    })
}

/// `[groups.<name>]`, made when the file has none.
fn group_table<'d>(doc: &'d mut DocumentMut, name: &str) -> Result<&'d mut dyn TableLike, EditError> {
    let not_table = || EditError {
        field: None,
        message: "the config file's [groups] is not a table; fix the file by hand first".to_string(),
    };
    let root = doc.as_table_mut();
    if !root.contains_key("groups") {
        let mut groups = Table::new();
        groups.set_implicit(true);
        root.insert("groups", Item::Table(groups));
    }
    let groups = root.get_mut("groups").and_then(Item::as_table_like_mut).ok_or_else(not_table)?;
    if !groups.contains_key(name) {
        groups.insert(name, Item::Table(Table::new()));
    }
    groups.get_mut(name).and_then(Item::as_table_like_mut).ok_or_else(not_table)
}

fn on_off(on: bool) -> String {
    if on { "on" } else { "off" }.to_string()
}

fn blocked_word(blocked: bool) -> String {
    if blocked { "blocked" } else { "allowed" }.to_string()
}

type Words4 = (&'static str, String, String, String);

fn change(
    table: &mut dyn TableLike,
    config: &Config,
    policy: &GroupPolicy,
    edit: &PolicyEdit,
) -> Result<Words4, EditError> {
    let group = policy.name.as_str();
    match edit {
        PolicyEdit::Category { category, blocked, .. } => {
            let index = known_category(category)?;
            if config.locked.contains(index) {
                return Err(refuse(
                    "category",
                    format!("{category} is locked: it is always blocked for every group and cannot be changed"),
                ));
            }
            let was = policy.blocked.contains(index);
            set_category(table, group, category, index, *blocked, config.locked)?;
            Ok(("category", format!("{category} for {group}"), blocked_word(was), blocked_word(*blocked)))
        }
        PolicyEdit::SafeSearch { on, .. } => {
            table.insert("safesearch", toml_edit::value(*on));
            Ok(("safesearch", format!("SafeSearch for {group}"), on_off(policy.safesearch), on_off(*on)))
        }
        PolicyEdit::Bypass { on, .. } => {
            table.insert("bypass", toml_edit::value(*on));
            Ok(("bypass", format!("bypass protection for {group}"), on_off(policy.bypass), on_off(*on)))
        }
        PolicyEdit::Youtube { mode, .. } => {
            if Youtube::from_word(mode).is_none() {
                return Err(refuse(
                    "mode",
                    format!("{mode:?} is not a YouTube mode; choose {}", Youtube::listed(", ")),
                ));
            }
            table.insert("youtube", toml_edit::value(mode.as_str()));
            let old = match policy.youtube {
                YoutubeMode::Strict => "strict",
                YoutubeMode::Moderate => "moderate",
                YoutubeMode::Off => "off",
            };
            Ok(("youtube", format!("YouTube for {group}"), old.to_string(), mode.clone()))
        }
        PolicyEdit::BlockAnswer { answer, .. } => {
            let Some(kind) = BlockAnswerKind::from_word(answer) else {
                return Err(refuse(
                    "answer",
                    format!("{answer:?} is not a block answer; choose {}", BlockAnswerKind::listed(", ")),
                ));
            };
            if kind == BlockAnswerKind::BlockPage && !table.contains_key("block_page_ipv4") {
                return Err(refuse(
                    "answer",
                    "a block page needs its address: set block_page_ipv4 for this group in the config file first",
                ));
            }
            table.insert("block_answer", toml_edit::value(answer.as_str()));
            let old = match policy.block_answer {
                BlockAnswer::NxDomain => BlockAnswerKind::NxDomain,
                BlockAnswer::NullAddress => BlockAnswerKind::Null,
                BlockAnswer::BlockPage { .. } => BlockAnswerKind::BlockPage,
            };
            Ok(("block-answer", format!("block answer for {group}"), old.word(), answer.clone()))
        }
        PolicyEdit::AddOverride { kind, name, reason, until_ms, .. } => {
            let rule = override_rule(name)?;
            let old = config
                .overrides
                .iter()
                .find(|entry| entry.group == group && entry.kind == *kind && entry.rule == rule)
                .map_or("(none)".to_string(), |entry| config.override_words(entry.kind, entry.until_ms, &entry.reason));
            let array = override_array(table, kind.key())?;
            remove_override(array, &rule);
            let written = name.trim().to_string();
            if reason.is_empty() && until_ms.is_none() {
                array.push(written.as_str());
            } else {
                let mut entry = InlineTable::new();
                entry.insert("name", written.as_str().into());
                if !reason.is_empty() {
                    entry.insert("reason", reason.as_str().into());
                }
                if let Some(until) = until_ms {
                    entry.insert("until", timed::instant_text(*until).into());
                }
                array.push(entry);
            }
            let subject = format!("{} {rule} for {group}", kind.key());
            Ok(("override-add", subject, old, config.override_words(*kind, *until_ms, reason)))
        }
        PolicyEdit::RemoveOverride { kind, name, .. } => {
            let rule = override_rule(name)?;
            let Some(entry) =
                config.overrides.iter().find(|entry| entry.group == group && entry.kind == *kind && entry.rule == rule)
            else {
                return Err(refuse("name", format!("{group} has no {} override for {rule:?}", kind.key())));
            };
            let array = override_array(table, kind.key())?;
            remove_override(array, &rule);
            let subject = format!("{} {rule} for {group}", kind.key());
            Ok((
                "override-remove",
                subject,
                config.override_words(entry.kind, entry.until_ms, &entry.reason),
                "(none)".into(),
            ))
        }
        PolicyEdit::AddSchedule { category, days, from, to, .. } => {
            let index = known_category(category)?;
            if config.locked.contains(index) {
                return Err(refuse("category", format!("{category} is locked: no schedule can open it")));
            }
            if days.is_empty() {
                return Err(refuse("days", "choose at least one day"));
            }
            if let Some(day) = days.iter().find(|day| !DAYS.iter().any(|(word, _)| word == &day.as_str())) {
                return Err(refuse("days", format!("{day:?} is not a day; use mon, tue, wed, thu, fri, sat, sun")));
            }
            let start = timed::parse_clock(from)
                .ok_or_else(|| refuse("from", format!("{from:?} is not a time; write 24-hour HH:MM, e.g. 12:00")))?;
            let end = timed::parse_clock(to)
                .ok_or_else(|| refuse("to", format!("{to:?} is not a time; write 24-hour HH:MM, e.g. 13:00")))?;
            if start >= end {
                return Err(refuse(
                    "to",
                    format!("the window must end after it starts ({from} to {to}); e.g. 12:00 to 13:00"),
                ));
            }
            let mut entry = Table::new();
            entry.insert("category", toml_edit::value(category.as_str()));
            entry.insert("days", toml_edit::value(days.iter().map(String::as_str).collect::<Array>()));
            entry.insert("from", toml_edit::value(from.as_str()));
            entry.insert("to", toml_edit::value(to.as_str()));
            if !table.contains_key("schedule") {
                table.insert("schedule", Item::ArrayOfTables(ArrayOfTables::new()));
            }
            let schedules = table.get_mut("schedule").and_then(Item::as_array_of_tables_mut).ok_or_else(|| EditError {
                field: None,
                message: format!("[groups.{group}] schedule is not written as [[groups.{group}.schedule]]; fix the file by hand first"),
            })?;
            schedules.push(entry);
            let window = format!("not blocked {} {from}-{to}", days.join(", "));
            Ok(("schedule-add", format!("{category} schedule for {group}"), "(none)".into(), window))
        }
        PolicyEdit::RemoveSchedule { index, .. } => {
            let schedule = config
                .schedules
                .iter()
                .filter(|schedule| schedule.group == group)
                .nth(*index)
                .ok_or_else(|| refuse("index", format!("{group} has no schedule number {}", index + 1)))?;
            let schedules = table.get_mut("schedule").and_then(Item::as_array_of_tables_mut).ok_or_else(|| EditError {
                field: None,
                message: format!("[groups.{group}] schedule is not written as [[groups.{group}.schedule]]; fix the file by hand first"),
            })?;
            schedules.remove(*index);
            let days: Vec<&str> = schedule.days.iter().map(|day| timed::day_word(*day)).collect();
            let window = format!(
                "not blocked {} {}-{}",
                days.join(", "),
                timed::clock_text(schedule.from_minute),
                timed::clock_text(schedule.to_minute)
            );
            Ok(("schedule-remove", format!("{} schedule for {group}", schedule.category), window, "(none)".into()))
        }
        PolicyEdit::ListSource { .. } | PolicyEdit::AlertRule(_) => {
            Err(EditError { field: None, message: "not a group's change".to_string() })
        }
    }
}

fn known_category(id: &str) -> Result<u8, EditError> {
    category::index_of(id).ok_or_else(|| {
        refuse("category", format!("there is no category {id:?}; choose one of {}", category::known_ids().join(", ")))
    })
}

/// Makes `category` blocked or not in the group's `block` list: its own
/// entries ("games", "!games") are taken out, then one is added if the rest
/// of the list does not already give the wanted answer.
fn set_category(
    table: &mut dyn TableLike,
    group: &str,
    id: &str,
    index: u8,
    blocked: bool,
    locked: CategorySet,
) -> Result<(), EditError> {
    if !table.contains_key("block") {
        table.insert("block", toml_edit::value(Array::from_iter(["default"])));
    }
    let array = table.get_mut("block").and_then(Item::as_array_mut).ok_or_else(|| EditError {
        field: None,
        message: format!("[groups.{group}] block is not a list; fix the file by hand first"),
    })?;
    let negated = format!("!{id}");
    array.retain(|value| value.as_str().is_none_or(|text| text != id && text != negated));
    // What the rest of the list gives, as compile_block_list reads it.
    let mut rest = CategorySet::EMPTY;
    let mut removed = CategorySet::EMPTY;
    for text in array.iter().filter_map(Value::as_str) {
        match text.strip_prefix('!') {
            Some(other) => {
                removed = removed.union(category::index_of(other).map_or(CategorySet::EMPTY, CategorySet::of))
            }
            None => {
                rest = rest.union(match text {
                    "default" => crate::policy::group::default_blocked(group),
                    "uksic" => category::uksic(),
                    "bypass" => category::bypass(),
                    other => category::index_of(other).map_or(CategorySet::EMPTY, CategorySet::of),
                })
            }
        }
    }
    let already = rest.without(removed).union(locked).contains(index);
    if already != blocked {
        array.push(if blocked { id.to_string() } else { negated });
    }
    Ok(())
}

fn override_rule(name: &str) -> Result<String, EditError> {
    let text = name.trim();
    let (exact, bare) = match text.strip_prefix('=') {
        Some(bare) => (true, bare),
        None => (false, text.strip_prefix("*.").unwrap_or(text)),
    };
    let normalised = crate::name::normalise(bare).map_err(|error| {
        refuse(
            "name",
            format!("{text:?} is not a domain name ({error}); write example.com for the domain and its subdomains, or =www.example.com for one name"),
        )
    })?;
    Ok(if exact { format!("={normalised}") } else { normalised })
}

fn override_array<'t>(table: &'t mut dyn TableLike, key: &str) -> Result<&'t mut Array, EditError> {
    if !table.contains_key(key) {
        table.insert(key, toml_edit::value(Array::new()));
    }
    table.get_mut(key).and_then(Item::as_array_mut).ok_or_else(|| EditError {
        field: None,
        message: format!("{key} is not a list in the config file; fix the file by hand first"),
    })
}

/// Takes out the entries (plain or tables) whose name is `rule`.
fn remove_override(array: &mut Array, rule: &str) {
    array.retain(|value| {
        let name = match value {
            Value::String(text) => Some(text.value().as_str()),
            Value::InlineTable(table) => table.get("name").and_then(Value::as_str),
            _ => None,
        };
        name.is_none_or(|name| override_rule(name).ok().as_deref() != Some(rule))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "# The school's config\n\n[[networks]]\nname = \"n\" # pupils\ncidrs = [\"10.0.0.0/8\"]\ngroup = \"pupil\"\n\n# pupils are strict\n[groups.pupil]\nblock = [\"default\"]\n";

    fn edit(text: &str, edit: PolicyEdit) -> Result<Edited, EditError> {
        apply(text, "t.toml", &edit)
    }

    #[test]
    fn an_alert_rule_is_written_whole_keeping_comments_and_refused_on_its_field() {
        let rule = |id: &str| AlertRuleEdit {
            id: id.into(),
            enabled: true,
            severity: "high".into(),
            count: Some("3".into()),
            minutes: Some("5".into()),
            ..AlertRuleEdit::default()
        };
        let edited = edit(BASE, PolicyEdit::AlertRule(rule("repeated-pornography"))).unwrap();
        assert!(edited.text.starts_with("# The school's config") && edited.text.contains("# pupils are strict"));
        assert!(edited.text.contains("[alerts.rules.repeated-pornography]"), "{}", edited.text);
        assert!(!edited.text.contains("\n[alerts]\n"), "the parents stay implicit: {}", edited.text);
        assert_eq!(edited.kind, "alert-rule");
        assert_eq!(edited.old, "on, medium: 5 blocked lookups in pornography by one device within 10 minutes");
        assert_eq!(edited.new, "on, high: 3 blocked lookups in pornography by one device within 5 minutes");
        let config = Config::parse(&edited.text, "t").unwrap();
        assert_eq!(config.alerts.written_rules, ["repeated-pornography"]);

        // Written again: one table, its comment kept.
        let commented = edited.text.replace(
            "[alerts.rules.repeated-pornography]",
            "# Year 9 asked for this\n[alerts.rules.repeated-pornography]",
        );
        let again =
            edit(&commented, PolicyEdit::AlertRule(AlertRuleEdit { enabled: false, ..rule("repeated-pornography") }))
                .unwrap();
        assert_eq!(again.text.matches("[alerts.rules.repeated-pornography]").count(), 1, "{}", again.text);
        assert!(again.text.contains("# Year 9 asked for this\n[alerts.rules.repeated-pornography]"), "{}", again.text);
        assert!(again.text.contains("enabled = false"));

        let bad = AlertRuleEdit { count: Some("lots".into()), ..rule("repeated-pornography") };
        assert_eq!(edit(BASE, PolicyEdit::AlertRule(bad)).unwrap_err().field, Some("count"));
        let bad = AlertRuleEdit { minutes: Some("0".into()), ..rule("repeated-pornography") };
        assert_eq!(edit(BASE, PolicyEdit::AlertRule(bad)).unwrap_err().field, Some("minutes"));
        let bad = AlertRuleEdit { severity: "urgent".into(), ..rule("high-risk") };
        assert_eq!(edit(BASE, PolicyEdit::AlertRule(bad)).unwrap_err().field, Some("severity"));
        let bad = AlertRuleEdit { categories: Some(vec!["self-harm".into(), "nonsense".into()]), ..rule("high-risk") };
        assert_eq!(edit(BASE, PolicyEdit::AlertRule(bad)).unwrap_err().field, Some("categories"));
        assert_eq!(edit(BASE, PolicyEdit::AlertRule(rule("no-such-rule"))).unwrap_err().field, Some("id"));

        // A new repeated rule for games.
        let games = AlertRuleEdit {
            kind: Some("repeated".into()),
            category: Some("games".into()),
            severity: "low".into(),
            ..rule("repeated-games")
        };
        let added = edit(BASE, PolicyEdit::AlertRule(games.clone())).unwrap();
        assert_eq!(added.old, "(none)");
        let config = Config::parse(&added.text, "t").unwrap();
        let rule = config.alerts.rules.iter().find(|rule| rule.id == "repeated-games").unwrap();
        assert_eq!(rule.describe(), "3 blocked lookups in games by one device within 5 minutes");
        assert_eq!(edit(&added.text, PolicyEdit::AlertRule(games)).unwrap_err().field, Some("id"));
    }

    #[test]
    fn category_edits_keep_comments_and_describe_the_change() {
        let edited =
            edit(BASE, PolicyEdit::Category { group: "pupil".into(), category: "games".into(), blocked: false })
                .unwrap();
        assert!(edited.text.contains("# pupils are strict") && edited.text.contains("# pupils"), "{}", edited.text);
        assert!(edited.text.contains("\"!games\""), "{}", edited.text);
        assert_eq!(
            (edited.subject.as_str(), edited.old.as_str(), edited.new.as_str()),
            ("games for pupil", "blocked", "allowed")
        );
        let back =
            edit(&edited.text, PolicyEdit::Category { group: "pupil".into(), category: "games".into(), blocked: true })
                .unwrap();
        assert!(!back.text.contains("games"), "the default blocks games again: {}", back.text);
        // A group with no table gets one.
        let staff = edit(BASE, PolicyEdit::Category { group: "staff".into(), category: "games".into(), blocked: true })
            .unwrap();
        let config = Config::parse(&staff.text, "t").unwrap();
        assert!(config.groups["staff"].blocked.contains(category::index_of("games").unwrap()), "{}", staff.text);
    }

    #[test]
    fn list_sources_switch_through_enable_and_disable() {
        let dir = tempfile::tempdir().unwrap();
        let lists = dir.path().join("lists");
        std::fs::create_dir_all(&lists).unwrap();
        std::fs::write(lists.join("games.txt"), "game.test\n").unwrap();
        std::fs::write(lists.join("malware.txt"), "bad.test\n").unwrap();
        std::fs::write(
            lists.join("local.toml"),
            "[[source]]\nid = \"games\"\ncategory = \"games\"\nformat = \"domains\"\npath = \"games.txt\"\n\n\
             [[source]]\nid = \"spare\"\ncategory = \"games\"\nformat = \"domains\"\npath = \"games.txt\"\nenabled = false\n\n\
             [[source]]\nid = \"malware\"\ncategory = \"malware\"\nformat = \"domains\"\npath = \"malware.txt\"\n",
        )
        .unwrap();
        let text = format!("{BASE}\n# the lists\n[lists]\ndir = {:?}\n", lists.display().to_string());
        let switch =
            |text: &str, id: &str, enabled: bool| edit(text, PolicyEdit::ListSource { id: id.into(), enabled });
        // Off: into disable; on again: out of it, the comments kept.
        let off = switch(&text, "games", false).unwrap();
        assert!(off.text.contains("disable = [\"games\"]") && off.text.contains("# the lists"), "{}", off.text);
        assert_eq!(
            (off.kind, off.old.as_str(), off.new.as_str(), off.group.clone()),
            ("list-source", "on", "off", None)
        );
        let on = switch(&off.text, "games", true).unwrap();
        assert!(!on.text.contains("\"games\""), "{}", on.text);
        // A source declared off is turned on through enable.
        let spare = switch(&text, "spare", true).unwrap();
        assert!(spare.text.contains("enable = [\"spare\"]"), "{}", spare.text);
        assert_eq!((spare.old.as_str(), spare.new.as_str()), ("off", "on"));
        // Locked categories and unknown ids are refused, naming the field.
        let locked = switch(&text, "malware", false).unwrap_err();
        assert_eq!(locked.field, Some("source"));
        assert!(locked.message.contains("locked"), "{}", locked.message);
        assert_eq!(switch(&text, "nope", false).unwrap_err().field, Some("source"));
    }

    #[test]
    fn every_setting_and_override_and_schedule_edit_compiles() {
        let mut text = BASE.to_string();
        for change in [
            PolicyEdit::SafeSearch { group: "pupil".into(), on: false },
            PolicyEdit::Youtube { group: "pupil".into(), mode: "moderate".into() },
            PolicyEdit::Bypass { group: "pupil".into(), on: false },
            PolicyEdit::BlockAnswer { group: "pupil".into(), answer: "null".into() },
            PolicyEdit::AddOverride {
                group: "pupil".into(),
                kind: OverrideKind::Allow,
                name: "bbc.co.uk".into(),
                reason: "Year 9 project".into(),
                until_ms: Some(timed::parse_instant("2026-12-07T16:00:00Z").unwrap()),
            },
            PolicyEdit::AddOverride {
                group: "pupil".into(),
                kind: OverrideKind::Deny,
                name: "bad.example".into(),
                reason: String::new(),
                until_ms: None,
            },
            PolicyEdit::AddSchedule {
                group: "pupil".into(),
                category: "games".into(),
                days: vec!["mon".into(), "fri".into()],
                from: "12:00".into(),
                to: "13:00".into(),
            },
        ] {
            text = edit(&text, change).unwrap_or_else(|e| panic!("{e}\n{text}")).text;
        }
        let config = Config::parse(&text, "t").unwrap();
        let pupil = &config.groups["pupil"];
        assert!(!pupil.safesearch && !pupil.bypass && pupil.youtube == YoutubeMode::Moderate);
        assert_eq!(pupil.block_answer, BlockAnswer::NullAddress);
        assert!(pupil.allow.find("www.bbc.co.uk").is_some() && pupil.deny.find("bad.example").is_some());
        assert_eq!(config.overrides.iter().find(|e| e.rule == "bbc.co.uk").unwrap().reason, "Year 9 project");
        assert_eq!(config.schedules.len(), 1);
        let text = edit(&text, PolicyEdit::RemoveSchedule { group: "pupil".into(), index: 0 }).unwrap().text;
        let removed = edit(
            &text,
            PolicyEdit::RemoveOverride { group: "pupil".into(), kind: OverrideKind::Allow, name: "BBC.co.uk".into() },
        )
        .unwrap();
        assert_eq!(removed.old, "allowed until 2026-12-07 16:00 GMT (Year 9 project)");
        let config = Config::parse(&removed.text, "t").unwrap();
        assert!(config.schedules.is_empty() && config.groups["pupil"].allow.is_empty());
        assert!(removed.text.contains("# pupils are strict"));
    }

    #[test]
    fn bad_edits_name_their_field() {
        let field = |change| edit(BASE, change).unwrap_err().field;
        assert_eq!(
            field(PolicyEdit::Category { group: "pupil".into(), category: "gamez".into(), blocked: false }),
            Some("category")
        );
        assert_eq!(
            field(PolicyEdit::Category { group: "pupil".into(), category: "malware".into(), blocked: false }),
            Some("category")
        );
        assert_eq!(
            field(PolicyEdit::Category { group: "nobody".into(), category: "games".into(), blocked: false }),
            Some("group")
        );
        assert_eq!(field(PolicyEdit::Youtube { group: "pupil".into(), mode: "loud".into() }), Some("mode"));
        assert_eq!(
            field(PolicyEdit::BlockAnswer { group: "pupil".into(), answer: "block-page".into() }),
            Some("answer")
        );
        let add = |name: &str| PolicyEdit::AddOverride {
            group: "pupil".into(),
            kind: OverrideKind::Allow,
            name: name.into(),
            reason: String::new(),
            until_ms: None,
        };
        assert_eq!(field(add("not a name")), Some("name"));
        assert_eq!(
            field(PolicyEdit::RemoveOverride {
                group: "pupil".into(),
                kind: OverrideKind::Deny,
                name: "x.example".into()
            }),
            Some("name")
        );
        let schedule = |days: Vec<&str>, from: &str, to: &str| PolicyEdit::AddSchedule {
            group: "pupil".into(),
            category: "games".into(),
            days: days.into_iter().map(String::from).collect(),
            from: from.into(),
            to: to.into(),
        };
        assert_eq!(field(schedule(vec!["monday"], "12:00", "13:00")), Some("days"));
        assert_eq!(field(schedule(vec!["mon"], "noon", "13:00")), Some("from"));
        assert_eq!(field(schedule(vec!["mon"], "13:00", "12:00")), Some("to"));
        assert_eq!(field(PolicyEdit::RemoveSchedule { group: "pupil".into(), index: 0 }), Some("index"));
    }
}
