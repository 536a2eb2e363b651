//! Query-log rows as a table line, a JSON object or a CSV record.

use crate::dns::Explanation;
use crate::store::LogRow;
use crate::store::csv::format_record;
use crate::store::search::ExportRow;

/// The header line of [`table_line`]s.
pub fn table_header() -> String {
    format!(
        "{:<24} {:<16} {:<18} {:<8} {:<40} {:<6} {:<10} {:<11} {}",
        "time (UTC)", "client", "device", "group", "name", "type", "decision", "stage", "reason"
    )
}

/// One row as a line of the readable table: the reason in the words
/// `hedgerow check` uses.
pub fn table_line(row: LogRow) -> String {
    let why = Explanation::of_row(&row).reason_text();
    let row = ExportRow::from_row(row);
    let device = match (&row.device, &row.owner) {
        (Some(device), Some(owner)) => format!("{device} ({owner})"),
        (Some(device), None) => device.clone(),
        _ => String::new(),
    };
    format!(
        "{:<24} {:<16} {:<18} {:<8} {:<40} {:<6} {:<10} {:<11} {}",
        row.time,
        row.client,
        device,
        row.group.unwrap_or_default(),
        row.name,
        row.record_type,
        row.decision,
        row.stage.unwrap_or_default(),
        why
    )
}

/// One row as a JSON object on one line (the fields of [`ExportRow`]).
pub fn json_line(row: LogRow) -> String {
    serde_json::to_string(&ExportRow::from_row(row)).unwrap_or_default()
}

/// The header of [`csv_line`]s: [`ExportRow::FIELDS`].
pub fn csv_header() -> String {
    ExportRow::FIELDS.join(",")
}

/// One row as a CSV record (no line end).
pub fn csv_line(row: LogRow) -> String {
    format_record(&ExportRow::from_row(row).cells())
}

/// One row as a CSV record for a spreadsheet (the dashboard's exports): as
/// [`csv_line`], but a cell a spreadsheet would take for a formula (starting
/// with `=`, `+`, `-`, `@`, a tab or a carriage return) starts with `'`, so
/// opening the file never runs what a client put in a name.
pub fn csv_line_for_spreadsheet(row: LogRow) -> String {
    format_record(&ExportRow::from_row(row).cells().map(|cell| spreadsheet_safe(cell)))
}

/// `cell`, with `'` before a leading formula character.
pub fn spreadsheet_safe(cell: String) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{cell}") } else { cell }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(stage: Option<&str>, reason: Option<&str>) -> LogRow {
        LogRow {
            id: 42,
            time_ms: 1_764_489_000_250,
            client: "10.0.0.5".into(),
            device: Some("lab-3".into()),
            owner: Some("Ms \"Lee\", IT".into()),
            network: Some("lab".into()),
            group: Some("pupil".into()),
            name: "bet.example".into(),
            record_type: 28,
            decision: "blocked".into(),
            category: Some("gambling".into()),
            list: None,
            response_code: 3,
            upstream_ms: Some(12),
            cache_hit: true,
            stage: stage.map(String::from),
            reason: reason.map(String::from),
        }
    }

    /// Splits one CSV record written by `format_record` (quoted fields with
    /// doubled quotes).
    fn split_csv(line: &str) -> Vec<String> {
        let mut cells = vec![String::new()];
        let mut quoted = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '"' if quoted && chars.peek() == Some(&'"') => {
                    chars.next();
                    cells.last_mut().unwrap().push('"');
                }
                '"' => quoted = !quoted,
                ',' if !quoted => cells.push(String::new()),
                c => cells.last_mut().unwrap().push(c),
            }
        }
        cells
    }

    #[test]
    fn csv_and_json_of_one_row_agree_field_by_field() {
        for row in [row(Some("blocklist"), Some("listed, in gambling")), row(None, None)] {
            let json: serde_json::Value = serde_json::from_str(&json_line(row.clone())).unwrap();
            let object = json.as_object().unwrap();
            let header = csv_header();
            let names: Vec<&str> = header.split(',').collect();
            let cells = split_csv(&csv_line(row));
            assert_eq!(names.len(), cells.len());
            assert_eq!(object.keys().count(), names.len());
            for (name, cell) in names.iter().zip(&cells) {
                let value = &object[*name];
                let text = match value {
                    serde_json::Value::Null => String::new(),
                    serde_json::Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                assert_eq!(&text, cell, "field {name}");
            }
        }
    }

    #[test]
    fn spreadsheet_lines_defuse_formulas_and_quote() {
        let mut evil = row(None, Some("=HYPERLINK(\"http://x\")"));
        evil.name = "-a,b.example".into();
        evil.owner = Some("@Lee".into());
        let cells = split_csv(&csv_line_for_spreadsheet(evil));
        assert_eq!(cells[7], "'-a,b.example");
        assert_eq!(cells[4], "'@Lee");
        assert_eq!(cells[16], "'=HYPERLINK(\"http://x\")");
        assert_eq!(spreadsheet_safe("+1".into()), "'+1");
        assert_eq!(spreadsheet_safe("plain".into()), "plain");
        // The plain rows are as the CLI writes them.
        assert_eq!(csv_line_for_spreadsheet(row(None, None)), csv_line(row(None, None)));
    }

    #[test]
    fn json_keys_are_the_csv_header_in_order() {
        let line = json_line(row(None, None));
        let mut at = 0;
        for name in ExportRow::FIELDS {
            let key = format!("\"{name}\":");
            let found = line[at..].find(&key).unwrap_or_else(|| panic!("{name} missing or out of order"));
            at += found + key.len();
        }
    }

    #[test]
    fn table_line_lines_up_with_the_header_and_shows_owner_and_stage() {
        let mut owned = row(Some("blocklist"), None);
        owned.owner = Some("Lee".into());
        let line = table_line(owned);
        let header = table_header();
        assert!(line.starts_with("2025-11-30T07:50:00.250Z "), "{line}");
        assert!(line.contains(" lab-3 (Lee) "), "{line}");
        // The stage column starts where the header's does.
        let stage_at = header.find("stage").unwrap();
        assert_eq!(&line[stage_at..stage_at + "blocklist".len()], "blocklist", "{line}");
        // A row without a device leaves the column blank.
        let mut bare = row(None, None);
        bare.device = None;
        let line = table_line(bare);
        let device_at = header.find("device").unwrap();
        assert!(line[device_at..device_at + 18].trim().is_empty(), "{line}");
    }
}
