//! List reports: a compile's per-source lines, download progress, and the
//! sources that are not in force as configured.

use std::fmt::Write as _;
use std::path::Path;

use crate::download::FetchOutcome;
use crate::lists::compile::CompileReport;
use crate::lists::health::{ListHealth, SourceHealth, SourceState};
use crate::lists::sources::{Location, SourceDecl};

/// A compile report: a line per source (names, exceptions, bad lines, and
/// whether it is in force, with its bad-line examples), then the totals.
/// Whole lines, each ending in a line break.
pub fn compile_report(report: &CompileReport, health: &ListHealth, path: &Path) -> String {
    let mut out = String::new();
    let health = |id: &str| health.sources.iter().find(|h| h.id == id);
    for source in &report.sources {
        let status = match (health(&source.id), &source.error) {
            (_, Some(error)) => format!("FAILED: {error}"),
            (Some(h), None) if h.state != SourceState::Ok => format!("FAILED: {} (see below)", h.state.consequence()),
            _ => "ok".to_string(),
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{:32} {:>9} names {:>6} exceptions {:>6} bad lines  {status}",
            source.id, source.names, source.exceptions, source.bad_lines
        );
        for (line, text, why) in &source.bad_examples {
            let _ = writeln!(out, "    line {line}: {text:?}: {why}");
        }
    }
    let _ = writeln!(
        out,
        "{} names in {} ({} bytes) in {} ms",
        report.names,
        path.display(),
        report.file_bytes,
        report.elapsed_ms
    );
    out
}

/// A source not in force as configured, in one line (no line end):
/// "list source `id` failed (what is served instead): why".
pub fn problem(source: &SourceHealth) -> String {
    let what = source.state.consequence();
    format!("list source `{}` failed ({what}): {}", source.id, source.reason.as_deref().unwrap_or("?"))
}

/// A line of download progress for source number `done` of `total`:
/// starting (`outcome` `None`) or finished.
pub fn download_progress(done: usize, total: usize, source: &SourceDecl, outcome: Option<&FetchOutcome>) -> String {
    let id = &source.id;
    match outcome {
        None => {
            let url = match &source.location {
                Location::Url(url) => url.as_str(),
                Location::Path(_) => "",
            };
            format!("[{done}/{total}] {id}: downloading {url} ...")
        }
        Some(FetchOutcome::Updated { names, bad_lines }) => {
            format!("[{done}/{total}] {id}: downloaded, {names} names, {bad_lines} bad lines")
        }
        Some(FetchOutcome::NotModified) => format!("[{done}/{total}] {id}: not modified"),
        Some(FetchOutcome::Failed { reason }) => format!("[{done}/{total}] {id}: FAILED: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lists::compile::SourceReport;

    fn source(id: &str, names: usize, error: Option<&str>) -> SourceReport {
        SourceReport {
            id: id.into(),
            names,
            exceptions: 1,
            bad_lines: 2,
            bad_examples: vec![(7, "not a name!".into(), "not a domain name".into())],
            error: error.map(String::from),
        }
    }

    fn health(id: &str, state: SourceState, reason: Option<&str>) -> SourceHealth {
        SourceHealth::example(id, state, reason)
    }

    #[test]
    fn a_compile_report_says_which_sources_are_in_force() {
        let report = CompileReport {
            sources: vec![
                source("good", 10, None),
                source("old", 5, None),
                source("broken", 0, Some("unreadable")),
                source("gone", 0, None),
            ],
            names: 15,
            file_bytes: 1234,
            elapsed_ms: 8,
        };
        let health = ListHealth {
            checked_at: 0,
            error: None,
            sources: vec![
                health("good", SourceState::Ok, None),
                health("old", SourceState::Degraded, Some("HTTP 404")),
                health("gone", SourceState::Missing, Some("deleted")),
            ],
        };
        let text = compile_report(&report, &health, Path::new("/data/lists.fst"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("{:32} {:>9} names {:>6} exceptions {:>6} bad lines  ok", "good", 10, 1, 2));
        assert_eq!(lines[1], "    line 7: \"not a name!\": not a domain name");
        assert!(lines[2].ends_with("FAILED: serving its last good copy (see below)"), "{text}");
        assert!(lines[4].ends_with("FAILED: unreadable"), "{text}");
        // A failed source with no good copy never claims one is served.
        assert!(lines[6].ends_with("FAILED: no good copy, so it blocks nothing (see below)"), "{text}");
        assert_eq!(lines.last(), Some(&"15 names in /data/lists.fst (1234 bytes) in 8 ms"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn a_problem_says_what_is_served_instead() {
        assert_eq!(
            problem(&health("old", SourceState::Degraded, Some("HTTP 404"))),
            "list source `old` failed (serving its last good copy): HTTP 404"
        );
        assert_eq!(
            problem(&health("new", SourceState::Missing, None)),
            "list source `new` failed (no good copy, so it blocks nothing): ?"
        );
    }

    #[test]
    fn download_progress_counts_sources_and_says_how_each_went() {
        let source = SourceDecl {
            id: "remote".into(),
            category: 0,
            format: crate::lists::parse::Format::Domains,
            location: Location::Url("https://lists.example/porn.txt".into()),
            enabled: true,
            description: String::new(),
            member: None,
            declared_in: "lists/remote.toml".into(),
        };
        assert_eq!(
            download_progress(1, 2, &source, None),
            "[1/2] remote: downloading https://lists.example/porn.txt ..."
        );
        let updated = FetchOutcome::Updated { names: 9, bad_lines: 1 };
        assert_eq!(download_progress(1, 2, &source, Some(&updated)), "[1/2] remote: downloaded, 9 names, 1 bad lines");
        assert_eq!(download_progress(2, 2, &source, Some(&FetchOutcome::NotModified)), "[2/2] remote: not modified");
        let failed = FetchOutcome::Failed { reason: "HTTP 500; no earlier copy".into() };
        assert_eq!(download_progress(2, 2, &source, Some(&failed)), "[2/2] remote: FAILED: HTTP 500; no earlier copy");
    }
}
