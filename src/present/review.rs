//! The annual filtering review: a readable report, JSON, or CSV rows of
//! `section,key,decision,count`. Each function returns whole lines, each
//! ending in a line break.

use std::fmt::Write as _;

use crate::store::csv::format_record;
use crate::store::retention::AnnualFigures;

/// The figures as pretty-printed JSON (one line break at the end).
pub fn json(figures: &AnnualFigures) -> serde_json::Result<String> {
    Ok(serde_json::to_string_pretty(figures)? + "\n")
}

/// The figures as CSV rows of `section,key,decision,count`, header first.
pub fn csv(figures: &AnnualFigures) -> String {
    let mut out = String::new();
    let mut row = |cells: [&str; 4]| {
        out.push_str(&format_record(&cells.map(String::from)));
        out.push('\n');
    };
    row(["section", "key", "decision", "count"]);
    row(["period", &figures.from_day, "", ""]);
    row(["period", &figures.to_day, "", ""]);
    row(["days_rolled_up", "", "", &figures.days_rolled_up.to_string()]);
    for total in &figures.totals {
        row(["total", "", &total.decision, &total.count.to_string()]);
    }
    for month in &figures.by_month {
        row(["month", &month.month, &month.decision, &month.count.to_string()]);
    }
    for group in &figures.by_group {
        row(["group", &group.group, &group.decision, &group.count.to_string()]);
    }
    for category in &figures.by_category {
        row(["category", &category.category, &category.decision, &category.count.to_string()]);
    }
    for name in &figures.top_blocked {
        row(["top_blocked", &name.name, "blocked", &name.count.to_string()]);
    }
    row(["devices_per_day_average", "", "", &format!("{:.1}", figures.devices_per_day_average)]);
    row(["devices_busiest_day", "", "", &figures.devices_busiest_day.to_string()]);
    row(["registered_devices", "", "", &figures.registered_devices.to_string()]);
    out
}

/// The figures as a readable report: totals, then a table per breakdown
/// (empty ones left out), the most blocked names and the device counts.
pub fn table(figures: &AnnualFigures) -> String {
    let mut out = String::new();
    let o = &mut out;
    // Writing to a String cannot fail.
    let _ = writeln!(
        o,
        "Filtering review {} to {} ({} days with records)",
        figures.from_day, figures.to_day, figures.days_rolled_up
    );
    let _ = writeln!(o);
    let _ = writeln!(o, "{:<12} {:>12}", "decision", "queries");
    for total in &figures.totals {
        let _ = writeln!(o, "{:<12} {:>12}", total.decision, total.count);
    }
    let table = |o: &mut String, title: &str, rows: Vec<(&str, &str, u64)>| {
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(o);
        let _ = writeln!(o, "{:<32} {:<12} {:>12}", title, "decision", "queries");
        for (key, decision, count) in rows {
            let _ = writeln!(o, "{:<32} {:<12} {:>12}", if key.is_empty() { "(none)" } else { key }, decision, count);
        }
    };
    table(o, "month", figures.by_month.iter().map(|m| (m.month.as_str(), m.decision.as_str(), m.count)).collect());
    table(o, "group", figures.by_group.iter().map(|g| (g.group.as_str(), g.decision.as_str(), g.count)).collect());
    table(
        o,
        "category",
        figures.by_category.iter().map(|c| (c.category.as_str(), c.decision.as_str(), c.count)).collect(),
    );
    if !figures.top_blocked.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(o, "{:<45} {:>12}", "most blocked name", "queries");
        for name in &figures.top_blocked {
            let _ = writeln!(o, "{:<45} {:>12}", name.name, name.count);
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "devices a day (average): {:.1}", figures.devices_per_day_average);
    let _ = writeln!(o, "devices on the busiest day: {}", figures.devices_busiest_day);
    let _ = writeln!(o, "registered devices now: {}", figures.registered_devices);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::retention::{CategoryCount, DecisionCount, GroupCount, MonthCount, NameCount};

    fn figures() -> AnnualFigures {
        AnnualFigures {
            from_day: "2025-09-01".into(),
            to_day: "2026-07-31".into(),
            days_rolled_up: 2,
            totals: vec![DecisionCount { decision: "blocked".into(), count: 7 }],
            by_month: vec![MonthCount { month: "2025-09".into(), decision: "blocked".into(), count: 7 }],
            by_group: vec![GroupCount { group: String::new(), decision: "refused".into(), count: 1 }],
            by_category: vec![CategoryCount { category: "gambling".into(), decision: "blocked".into(), count: 7 }],
            top_blocked: vec![NameCount { name: "bet.example".into(), count: 7 }],
            devices_per_day_average: 2.5,
            devices_busiest_day: 3,
            registered_devices: 4,
        }
    }

    #[test]
    fn csv_has_one_row_per_figure_under_a_header() {
        let text = csv(&figures());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "section,key,decision,count");
        assert!(lines.contains(&"total,,blocked,7"), "{text}");
        assert!(lines.contains(&"group,,refused,1"), "{text}");
        assert!(lines.contains(&"top_blocked,bet.example,blocked,7"), "{text}");
        assert_eq!(lines.last(), Some(&"registered_devices,,,4"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn table_names_an_empty_group_and_leaves_out_empty_breakdowns() {
        let mut figures = figures();
        let text = table(&figures);
        assert!(text.starts_with("Filtering review 2025-09-01 to 2026-07-31 (2 days with records)\n"), "{text}");
        assert!(text.lines().any(|line| line.starts_with("(none)") && line.contains("refused")), "{text}");
        assert!(text.contains("devices a day (average): 2.5"), "{text}");
        figures.by_month.clear();
        assert!(!table(&figures).lines().any(|line| line.starts_with("month ")));
    }
}
