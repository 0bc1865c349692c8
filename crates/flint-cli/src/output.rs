//! Rendering: aligned tables for people, one JSON document per command for machines.
//! The JSON fields and units are those of the Python API (times are float Unix seconds).

use chrono::{DateTime, Local, SecondsFormat};
use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use flint_core::{to_unix_seconds, Decision, DoctorReport, HistoryEvent, Status, UnixNanos};
use serde_json::{json, Value};

/// A table with the project's look.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    if table.width().is_none() {
        // Not a terminal: wrap long details at a readable width all the same.
        table.set_width(120);
    }
    table
}

/// A two-column table of fields and values.
pub fn fields(rows: &[(&str, String)]) -> Table {
    let mut table = table(&["field", "value"]);
    for (name, value) in rows {
        table.add_row(vec![(*name).to_owned(), value.clone()]);
    }
    table
}

/// `at` as local ISO-8601 with the time relative to `now`, e.g.
/// `2026-11-22T23:10:04+01:00 (in 12s)`.
pub fn time(at: UnixNanos, now: UnixNanos) -> String {
    let local: DateTime<Local> =
        DateTime::from_timestamp_nanos(i64::try_from(at).unwrap_or(i64::MAX)).into();
    format!(
        "{} ({})",
        local.to_rfc3339_opts(SecondsFormat::Secs, false),
        relative(at, now)
    )
}

/// "in 12s", "3m ago", "now".
pub fn relative(at: UnixNanos, now: UnixNanos) -> String {
    let (delta, future) = if at >= now {
        (at - now, true)
    } else {
        (now - at, false)
    };
    let seconds = delta / 1_000_000_000;
    if seconds == 0 {
        return "now".into();
    }
    let amount = match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}", s / 60, tail(s % 60, "s")),
        s if s < 86_400 => format!("{}h{}", s / 3600, tail(s % 3600 / 60, "m")),
        s => format!("{}d{}", s / 86_400, tail(s % 86_400 / 3600, "h")),
    };
    if future {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

fn tail(value: u64, unit: &str) -> String {
    if value == 0 {
        String::new()
    } else {
        format!("{value}{unit}")
    }
}

/// Seconds with millisecond precision, e.g. "1.250s".
pub fn seconds(nanos: u64) -> String {
    format!("{:.3}s", nanos as f64 / 1e9)
}

/// A decision as the Python `CheckResult` fields.
pub fn decision_json(key: &str, d: &Decision) -> Value {
    json!({
        "key": key,
        "allowed": d.allowed,
        "remaining": d.remaining,
        "reset_at": to_unix_seconds(d.reset_at),
        "retry_after": d.retry_after as f64 / 1e9,
        "limit": d.limit,
        "algorithm": d.algorithm.name(),
        "cost": d.cost,
    })
}

/// A status as the Python `status()` dict.
pub fn status_json(s: &Status) -> Value {
    json!({
        "key": s.key,
        "rate": s.quota.rate(),
        "per": s.quota.period().to_string(),
        "per_ms": s.quota.period().as_millis(),
        "algorithm": s.quota.algorithm().name(),
        "remaining": s.remaining,
        "reset_at": to_unix_seconds(s.reset_at),
        "allowed": s.counters.allowed,
        "denied": s.counters.denied,
        "allowed_cost": s.counters.allowed_cost,
        "denied_cost": s.counters.denied_cost,
        "last_seen": s.last_seen.map(to_unix_seconds),
    })
}

/// A history event as the Python `history()` dict.
pub fn history_json(e: &HistoryEvent) -> Value {
    json!({
        "at": to_unix_seconds(e.at),
        "cost": e.cost,
        "allowed": e.allowed,
        "blocked_by_other": e.blocked_by_other,
        "remaining": e.remaining,
    })
}

/// A doctor report as the Python `doctor()` dict.
pub fn doctor_json(r: &DoctorReport) -> Value {
    let checks: Vec<Value> = r
        .checks
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "ok": c.level != flint_core::CheckLevel::Fail,
                "level": c.level.to_string(),
                "detail": c.detail,
            })
        })
        .collect();
    json!({
        "ok": r.ok,
        "checks": checks,
        "sync": r.sync,
        "version": r.version,
        "data_dir": r.data_dir.display().to_string(),
        "log_bytes": r.log_bytes,
        "snapshot_bytes": r.snapshot_bytes,
        "keys": r.keys,
        "pending_events": r.pending_events,
    })
}

/// A doctor report as a table of checks.
pub fn doctor_table(report: &DoctorReport) -> Table {
    let mut table = table(&["check", "status", "detail"]);
    for c in &report.checks {
        table.add_row(vec![
            c.name.to_owned(),
            c.level.to_string(),
            c.detail.clone(),
        ]);
    }
    table
}

/// The rows of a limits table.
pub fn status_table(statuses: &[Status], now: UnixNanos) -> Table {
    let mut table = table(&[
        "key",
        "rate",
        "per",
        "algorithm",
        "remaining",
        "allowed",
        "denied",
        "last seen",
    ]);
    for s in statuses {
        table.add_row(vec![
            s.key.clone(),
            s.quota.rate().to_string(),
            s.quota.period().to_string(),
            s.quota.algorithm().name().to_owned(),
            s.remaining.to_string(),
            s.counters.allowed.to_string(),
            s.counters.denied.to_string(),
            s.last_seen
                .map_or_else(|| "never".into(), |at| relative(at, now)),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::relative;

    const S: u64 = 1_000_000_000;

    #[test]
    fn relative_times_read_naturally() {
        assert_eq!(relative(100 * S, 100 * S), "now");
        assert_eq!(relative(112 * S, 100 * S), "in 12s");
        assert_eq!(relative(100 * S, 280 * S), "3m ago");
        assert_eq!(relative(3_790 * S, 100 * S), "in 1h1m");
        assert_eq!(relative(100 * S + 2 * 86_400 * S, 100 * S), "in 2d");
    }
}
