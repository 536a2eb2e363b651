//! The change log as CSV (the change log page's export): one row per
//! change, newest first as given, times in UTC (RFC 3339).

use crate::store::changes::Change;

/// The CSV header and one row per change.
pub fn changes_csv(changes: &[Change]) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let header = ["id", "time", "user", "kind", "group", "subject", "old", "new", "reason"];
    let mut write = |record: &[String]| writer.write_record(record).expect("writing CSV to memory cannot fail");
    write(&header.map(String::from));
    for change in changes {
        write(&[
            change.id.to_string(),
            crate::config::timed::instant_text(change.time_ms),
            change.user.clone(),
            change.kind.clone(),
            change.group.clone().unwrap_or_default(),
            change.subject.clone(),
            change.old.clone(),
            change.new.clone(),
            change.reason.clone(),
        ]);
    }
    let bytes = writer.into_inner().expect("writing CSV to memory cannot fail");
    String::from_utf8(bytes).expect("CSV of UTF-8 fields is UTF-8")
}
