//! A metrics [`Snapshot`] in the Prometheus text exposition format 0.0.4:
//! `hedgerow_` names, `_total` counters, a `_seconds` histogram with
//! `_bucket`/`_sum`/`_count`, `# HELP` and `# TYPE` for every family.

use std::fmt::Write as _;

use crate::metrics::{DECISIONS, Snapshot};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label value, escaped as the text format requires (`\`, `"`, newline).
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn one(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// A float as the text format writes it.
fn float(value: f64) -> String {
    if value.is_infinite() { if value > 0.0 { "+Inf".into() } else { "-Inf".into() } } else { format!("{value}") }
}

/// The whole exposition, ending in a line break.
pub fn prometheus(snapshot: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    let o = &mut out;
    family(o, "hedgerow_build_info", "gauge", "Always 1; the version label says which Hedgerow is running.");
    let _ = writeln!(o, "hedgerow_build_info{{version=\"{}\"}} 1", label(snapshot.version));
    one(o, "hedgerow_uptime_seconds", "gauge", "Seconds since the server started.", snapshot.uptime_seconds);

    family(
        o,
        "hedgerow_lookups_total",
        "counter",
        "Answered queries by the client's group (none: before a client was identified) and decision.",
    );
    for group in &snapshot.groups {
        for (index, decision) in DECISIONS.iter().enumerate() {
            let _ = writeln!(
                o,
                "hedgerow_lookups_total{{group=\"{}\",decision=\"{decision}\"}} {}",
                label(&group.group),
                group.by_decision[index]
            );
        }
    }
    one(o, "hedgerow_cache_hits_total", "counter", "Answers from a fresh cache entry.", snapshot.cache_hits);
    one(o, "hedgerow_cache_entries", "gauge", "Answers held in the cache.", snapshot.cache_entries);
    one(o, "hedgerow_cache_bytes", "gauge", "Weight of the answers held in the cache, in bytes.", snapshot.cache_bytes);

    let name = "hedgerow_upstream_latency_seconds";
    family(o, name, "histogram", "Time upstream took to answer or fail a query.");
    for (bound, count) in &snapshot.upstream_buckets {
        let _ = writeln!(o, "{name}_bucket{{le=\"{}\"}} {count}", float(*bound));
    }
    let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {}", snapshot.upstream_count);
    let _ = writeln!(o, "{name}_sum {}", float(snapshot.upstream_sum_seconds));
    let _ = writeln!(o, "{name}_count {}", snapshot.upstream_count);
    one(
        o,
        "hedgerow_upstream_failures_total",
        "counter",
        "Queries that got no upstream answer and no stale one (SERVFAIL).",
        snapshot.upstream_failures,
    );
    one(o, "hedgerow_stale_answers_total", "counter", "Expired answers served (RFC 8767).", snapshot.stale_answers);
    one(
        o,
        "hedgerow_rate_limited_total",
        "counter",
        "Queries refused: the client was over its rate limit.",
        snapshot.rate_limited,
    );
    one(
        o,
        "hedgerow_refused_outsiders_total",
        "counter",
        "Queries refused: the source is in no configured network.",
        snapshot.refused_outsiders,
    );

    one(o, "hedgerow_listed_names", "gauge", "Names in the compiled lists in force.", snapshot.listed_names);
    family(o, "hedgerow_list_entries", "gauge", "Names in the copy of each list source in force.");
    for list in &snapshot.lists {
        if let Some(entries) = list.entries {
            let _ = writeln!(
                o,
                "hedgerow_list_entries{{list=\"{}\",category=\"{}\"}} {entries}",
                label(&list.id),
                label(&list.category)
            );
        }
    }
    family(o, "hedgerow_list_age_seconds", "gauge", "Age of the copy of each list source in force.");
    for list in &snapshot.lists {
        if let Some(age) = list.age_seconds {
            let _ = writeln!(o, "hedgerow_list_age_seconds{{list=\"{}\"}} {age}", label(&list.id));
        }
    }
    family(
        o,
        "hedgerow_list_state",
        "gauge",
        "1 for the state each list source is in (ok, degraded: its last good copy, missing: blocks nothing).",
    );
    for list in &snapshot.lists {
        for state in ["ok", "degraded", "missing"] {
            let value = u8::from(list.state == state);
            let _ = writeln!(o, "hedgerow_list_state{{list=\"{}\",state=\"{state}\"}} {value}", label(&list.id));
        }
    }
    family(o, "hedgerow_list_failing_since_seconds", "gauge", "Unix time since when a list source has been failing.");
    for list in &snapshot.lists {
        if let Some(since) = list.failing_since {
            let _ = writeln!(o, "hedgerow_list_failing_since_seconds{{list=\"{}\"}} {since}", label(&list.id));
        }
    }

    one(o, "hedgerow_log_enabled", "gauge", "1 when the query log is on.", u8::from(snapshot.log_enabled));
    one(o, "hedgerow_log_rows_written_total", "counter", "Query log rows written.", snapshot.log_written);
    one(
        o,
        "hedgerow_log_rows_dropped_total",
        "counter",
        "Query log rows not written (the writer fell behind or the disk was full).",
        snapshot.log_dropped,
    );
    family(
        o,
        "hedgerow_log_state",
        "gauge",
        "1 for the query log's state: ok, disk_full (rows dropped until space returns) or write_failing.",
    );
    for state in ["ok", "disk_full", "write_failing"] {
        let _ = writeln!(o, "hedgerow_log_state{{state=\"{state}\"}} {}", u8::from(snapshot.log_state == state));
    }
    if let Some(since) = snapshot.log_not_written_since_ms {
        one(
            o,
            "hedgerow_log_not_written_since_seconds",
            "gauge",
            "Unix time since when the query log has not been written.",
            since / 1000,
        );
    }
    family(
        o,
        "hedgerow_alert_messages",
        "gauge",
        "Alert messages in the outbox by state: pending (not yet tried), retrying (failed, to be tried again), \
         failed (given up), sent.",
    );
    if let Some(outbox) = &snapshot.alert_messages {
        for (state, count) in [
            ("pending", outbox.pending),
            ("retrying", outbox.retrying),
            ("failed", outbox.failed),
            ("sent", outbox.sent),
        ] {
            let _ = writeln!(o, "hedgerow_alert_messages{{state=\"{state}\"}} {count}");
        }
    }
    family(o, "hedgerow_alerts", "gauge", "Alerts for the DSL by state (open: not yet acknowledged).");
    if let Some(states) = snapshot.alerts_by_state {
        for (state, count) in ["open", "acknowledged", "resolved"].into_iter().zip(states) {
            let _ = writeln!(o, "hedgerow_alerts{{state=\"{state}\"}} {count}");
        }
    }
    one(
        o,
        "hedgerow_alert_lookups_dropped_total",
        "counter",
        "Lookups that could have raised an alert, dropped because the alerts' channel was full.",
        snapshot.alert_lookups_dropped,
    );
    family(o, "hedgerow_reloads_total", "counter", "Reloads (config and lists, or lists) by result.");
    let _ = writeln!(o, "hedgerow_reloads_total{{result=\"success\"}} {}", snapshot.reloads_ok);
    let _ = writeln!(o, "hedgerow_reloads_total{{result=\"failure\"}} {}", snapshot.reloads_failed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Lookup, Metrics};

    #[test]
    fn every_family_is_described_and_labels_are_escaped() {
        let metrics = Metrics::new();
        metrics.register_groups(["pu\"pil"]);
        metrics.record(&Lookup { group: Some("pu\"pil"), decision: 1, ..Lookup::default() });
        metrics.observe_upstream(std::time::Duration::from_millis(3));
        let mut snapshot = metrics.snapshot();
        snapshot.alert_messages =
            Some(crate::metrics::AlertMessageFigures { pending: 1, retrying: 2, failed: 3, sent: 4 });
        let text = prometheus(&snapshot);
        assert!(text.contains("hedgerow_alert_messages{state=\"retrying\"} 2\n"), "{text}");
        snapshot.alerts_by_state = Some([5, 1, 9]);
        snapshot.alert_lookups_dropped = 3;
        let text = prometheus(&snapshot);
        assert!(text.contains("hedgerow_alerts{state=\"open\"} 5\n"), "{text}");
        assert!(text.contains("hedgerow_alerts{state=\"resolved\"} 9\n"), "{text}");
        assert!(text.contains("hedgerow_alert_lookups_dropped_total 3\n"), "{text}");
        assert!(text.contains("hedgerow_lookups_total{group=\"pu\\\"pil\",decision=\"blocked\"} 1\n"), "{text}");
        assert!(text.contains("hedgerow_upstream_latency_seconds_bucket{le=\"0.005\"} 1\n"), "{text}");
        assert!(text.contains("hedgerow_upstream_latency_seconds_bucket{le=\"+Inf\"} 1\n"), "{text}");
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let base =
                ["_bucket", "_sum", "_count"].iter().fold(name, |name, end| name.strip_suffix(end).unwrap_or(name));
            assert!(
                text.contains(&format!("# TYPE {name} ")) || text.contains(&format!("# TYPE {base} histogram")),
                "{line}"
            );
        }
    }
}
