//! A self-test run as text (`hedgerow selftest`): a table per group
//! (category, name, expected, got, pass/FAIL), failures first, and a
//! closing line that says what to do about them.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::store::checks::{RunReport, SelftestResult};

/// The failures of a run, most serious first: the locked categories
/// (illegal content), then what should have been blocked, then the rest.
pub fn most_serious_first(results: &[SelftestResult]) -> Vec<&SelftestResult> {
    let mut failed: Vec<&SelftestResult> = results.iter().filter(|result| !result.passed).collect();
    failed.sort_by_key(|result| {
        (
            !crate::policy::category::ALWAYS_LOCKED.contains(&result.subject.as_str()),
            result.expected != "blocked",
            result.group.clone(),
            result.subject.clone(),
        )
    });
    failed
}

/// The run as tables, one per group.
pub fn table(report: &RunReport) -> String {
    let run = &report.run;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "self-test run {} at {} ({}): {} checks, {} failed",
        run.id,
        crate::time::format_utc(run.started_ms),
        run.trigger.as_str(),
        run.checks,
        run.failures
    );
    if !run.error.is_empty() {
        let _ = writeln!(out, "FAILED: the self-test could not ask the server: {}", run.error);
    }
    let mut groups: BTreeMap<&str, Vec<&SelftestResult>> = BTreeMap::new();
    for result in &report.results {
        groups.entry(result.group.as_str()).or_default().push(result);
    }
    for (group, mut results) in groups {
        results.sort_by_key(|result| result.passed);
        let failed = results.iter().filter(|result| !result.passed).count();
        let _ = writeln!(out, "\ngroup {group}: {} checks, {failed} failed", results.len());
        let rows: Vec<[String; 5]> = results
            .iter()
            .map(|result| {
                [
                    format!("{} {}", result.kind, result.subject),
                    result.name.clone(),
                    result.expected.clone(),
                    result.got.clone(),
                    if result.passed { "pass".into() } else { "FAIL".into() },
                ]
            })
            .collect();
        let header = ["CHECK", "NAME", "EXPECTED", "GOT", "RESULT"];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 5]| {
            let mut text = String::new();
            for (index, cell) in cells.iter().enumerate() {
                if index == 4 {
                    text.push_str(cell);
                } else {
                    let _ = write!(text, "{cell:<width$}  ", width = widths[index]);
                }
            }
            text
        };
        let _ = writeln!(out, "{}", line(header));
        for row in &rows {
            let _ = writeln!(out, "{}", line([&row[0], &row[1], &row[2], &row[3], &row[4]]));
        }
    }
    if run.passed() {
        let _ = writeln!(out, "\nall {} checks passed", run.checks);
    } else {
        let _ = writeln!(
            out,
            "\nSELF-TEST FAILED: {} of {} checks; an alert was raised. A category that should block but resolved \
             usually means its list is not loaded (`hedgerow status`, the dashboard's Lists page).",
            run.failures, run.checks
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::checks::{SelftestRun, Trigger};

    #[test]
    fn failures_come_first_in_their_groups_table() {
        let result = |group: &str, name: &str, passed: bool| SelftestResult {
            group: group.into(),
            kind: "category".into(),
            subject: "games".into(),
            name: name.into(),
            expected: "blocked".into(),
            got: if passed { "blocked (NXDOMAIN)".into() } else { "resolved to 192.0.2.1".into() },
            passed,
        };
        let report = RunReport {
            run: SelftestRun {
                id: 3,
                started_ms: 0,
                finished_ms: 1,
                trigger: Trigger::Cli,
                user: String::new(),
                checks: 2,
                failures: 1,
                error: String::new(),
            },
            results: vec![result("pupil", "a.test", true), result("pupil", "b.test", false)],
        };
        let text = table(&report);
        let fail = text.find("b.test").unwrap();
        assert!(fail < text.find("a.test").unwrap(), "{text}");
        assert!(text.contains("FAIL") && text.contains("SELF-TEST FAILED"), "{text}");
        assert!(text.contains("group pupil: 2 checks, 1 failed"), "{text}");
    }
}
