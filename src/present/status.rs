//! The running server's status as `hedgerow status` prints it.

use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::control::Status;
use crate::lists::health::SourceState;

/// The status as pretty-printed JSON (one line break at the end).
pub fn json(status: &Status) -> serde_json::Result<String> {
    Ok(serde_json::to_string_pretty(status)? + "\n")
}

/// The status as a readable table, then a line per list source not in
/// force as configured. Whole lines, each ending in a line break.
pub fn table(status: &Status) -> String {
    let addresses = |addrs: &[SocketAddr]| addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let mut out = String::new();
    let o = &mut out;
    // Writing to a String cannot fail.
    let _ = writeln!(o, "running:        yes (pid {}, hedgerow {})", status.pid, status.version);
    let _ = writeln!(o, "config:         {}", status.config);
    let _ = writeln!(o, "data_dir:       {}", status.data_dir.display());
    let _ = writeln!(o, "started:        {} (up {} s)", status.started, status.uptime_seconds);
    let _ = writeln!(o, "udp:            {}", addresses(&status.udp));
    let _ = writeln!(o, "tcp:            {}", addresses(&status.tcp));
    let _ = writeln!(o, "listed names:   {}", status.listed_names);
    let _ = writeln!(o, "upstream:       {}", status.upstream);
    let _ = writeln!(o, "query log:      {}", if status.log_enabled { "on" } else { "off" });
    let _ = writeln!(o, "database:       {}", status.database.display());
    let _ = writeln!(o, "device groups:  {}", status.device_groups);
    if let Some(ready) = &status.ready {
        let _ = writeln!(o, "ready:          {}", if ready.ready { "yes" } else { "NO" });
        for check in &ready.checks {
            let _ = writeln!(o, "  {} {}: {}", check.name, if check.ok { "ok" } else { "FAILED" }, check.detail);
        }
    }
    let lists = &status.lists;
    let problems: Vec<_> = lists.problems().collect();
    if lists.is_healthy() {
        let _ = writeln!(o, "lists:          {} sources, all in force", lists.sources.len());
    } else {
        let _ = writeln!(
            o,
            "lists:          {} sources, {} NOT in force as configured",
            lists.sources.len(),
            problems.len()
        );
    }
    if let Some(error) = &lists.error {
        let _ = writeln!(o, "  {error}");
    }
    for source in problems {
        let word = match source.state {
            SourceState::Ok => "ok",
            SourceState::Degraded => "degraded",
            SourceState::Missing => "missing",
        };
        let state = format!("{word}, {}", source.state.consequence());
        let _ = writeln!(o, "  {}: {state}: {}", source.id, source.reason.as_deref().unwrap_or("no reason recorded"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lists::health::{ListHealth, SourceHealth};

    fn source(id: &str, state: SourceState, reason: Option<&str>) -> SourceHealth {
        SourceHealth::example(id, state, reason)
    }

    #[test]
    fn a_healthy_server_shows_every_line_and_all_lists_in_force() {
        let status = Status {
            pid: 7,
            version: "0.1.0".into(),
            udp: vec!["127.0.0.1:5353".parse().unwrap(), "[::1]:5353".parse().unwrap()],
            log_enabled: true,
            lists: ListHealth { sources: vec![source("a", SourceState::Ok, None)], ..ListHealth::default() },
            ..Status::default()
        };
        let text = table(&status);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "running:        yes (pid 7, hedgerow 0.1.0)");
        assert_eq!(lines[4], "udp:            127.0.0.1:5353, [::1]:5353");
        assert_eq!(lines[8], "query log:      on");
        assert_eq!(lines.last(), Some(&"lists:          1 sources, all in force"));
    }

    #[test]
    fn sources_not_in_force_are_counted_and_named() {
        let status = Status {
            lists: ListHealth {
                error: Some("lists folder unreadable".into()),
                sources: vec![
                    source("a", SourceState::Ok, None),
                    source("b", SourceState::Degraded, Some("HTTP 404")),
                    source("c", SourceState::Missing, None),
                ],
                ..ListHealth::default()
            },
            ..Status::default()
        };
        let text = table(&status);
        assert!(text.contains("lists:          3 sources, 2 NOT in force as configured\n"), "{text}");
        assert!(text.contains("\n  lists folder unreadable\n"), "{text}");
        assert!(text.contains("\n  b: degraded, serving its last good copy: HTTP 404\n"), "{text}");
        assert!(text.ends_with("\n  c: missing, no good copy, so it blocks nothing: no reason recorded\n"), "{text}");
    }
}
