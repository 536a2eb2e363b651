//! Decisions in words: the one formatting of a [`Decision`] (or of a query
//! log row, which stores one) that `hedgerow check`, `hedgerow log search`
//! and, later, the dashboard all print.

use std::fmt;

use super::decision::Decision;
use crate::store::LogRow;

/// A decision as it is shown: from a live [`Decision`] or a stored row.
#[derive(Debug, Clone, Copy)]
pub struct Explanation<'a> {
    /// `allowed`, `blocked`, `safesearch`, `bypass`, `refused`, `error`.
    pub decision: &'a str,
    /// The stage that settled it; `None` in rows from before it was kept.
    pub stage: Option<&'a str>,
    pub network: Option<&'a str>,
    pub group: Option<&'a str>,
    /// The device-table entry that chose the group (live decisions only).
    pub device: Option<&'a str>,
    pub category: Option<&'a str>,
    pub list: Option<&'a str>,
    /// The listed domain or override rule that fired (live decisions only).
    pub rule: Option<&'a str>,
    pub reason: Option<&'a str>,
}

impl<'a> Explanation<'a> {
    pub fn of(decision: &'a Decision) -> Explanation<'a> {
        Explanation {
            decision: decision.kind.as_str(),
            stage: Some(decision.stage.as_str()),
            network: decision.network.as_deref(),
            group: decision.group.as_deref(),
            device: decision.device.as_deref(),
            category: decision.category.as_deref(),
            list: decision.list.as_deref(),
            rule: decision.rule.as_deref(),
            reason: Some(&decision.reason),
        }
    }

    /// A query-log row's decision (its device column is the address's
    /// label, shown in its own column, not the entry that chose the group).
    pub fn of_row(row: &'a LogRow) -> Explanation<'a> {
        Explanation {
            decision: &row.decision,
            stage: row.stage.as_deref(),
            network: row.network.as_deref(),
            group: row.group.as_deref(),
            device: None,
            category: row.category.as_deref(),
            list: row.list.as_deref(),
            rule: None,
            reason: row.reason.as_deref(),
        }
    }

    /// Why, in one line: the reason, or for rows from before reasons were
    /// kept, the category and list.
    pub fn reason_text(&self) -> String {
        match (self.reason, self.category, self.list) {
            (Some(reason), _, _) => reason.to_string(),
            (None, Some(category), Some(list)) => format!("{category} / {list}"),
            (None, Some(category), None) => category.to_string(),
            (None, None, _) => String::new(),
        }
    }
}

/// The labelled lines `hedgerow check` prints, one fact a line.
impl fmt::Display for Explanation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "decision: {}", self.decision)?;
        if let Some(stage) = self.stage {
            writeln!(f, "stage:    {stage}")?;
        }
        if let Some(network) = self.network {
            writeln!(f, "network:  {network}")?;
        }
        match (self.group, self.device) {
            (Some(group), Some(device)) => writeln!(f, "group:    {group} (from the device table: {device:?})")?,
            (Some(group), None) => writeln!(f, "group:    {group}")?,
            (None, _) => {}
        }
        if let Some(category) = self.category {
            writeln!(f, "category: {category}")?;
        }
        if let Some(list) = self.list {
            writeln!(f, "list:     {list}")?;
        }
        if let Some(rule) = self.rule {
            writeln!(f, "rule:     {rule}")?;
        }
        write!(f, "reason:   {}", self.reason_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(stage: Option<&str>, reason: Option<&str>) -> LogRow {
        LogRow {
            id: 1,
            time_ms: 0,
            client: "10.0.0.1".into(),
            device: None,
            owner: None,
            network: Some("pupils".into()),
            group: Some("pupil".into()),
            name: "game.test".into(),
            record_type: 1,
            decision: "blocked".into(),
            category: Some("games".into()),
            list: Some("local-games".into()),
            response_code: 3,
            upstream_ms: None,
            cache_hit: false,
            stage: stage.map(String::from),
            reason: reason.map(String::from),
        }
    }

    #[test]
    fn a_row_reads_as_its_reason_and_old_rows_as_their_category_and_list() {
        let new = row(Some("inspection"), Some("CNAME target casino.test is in category gambling"));
        assert_eq!(Explanation::of_row(&new).reason_text(), "CNAME target casino.test is in category gambling");
        let shown = Explanation::of_row(&new).to_string();
        assert!(
            shown.contains("stage:    inspection")
                && shown.ends_with("reason:   CNAME target casino.test is in category gambling")
        );
        let old = row(None, None);
        assert_eq!(Explanation::of_row(&old).reason_text(), "games / local-games");
        assert!(!Explanation::of_row(&old).to_string().contains("stage:"));
    }
}
