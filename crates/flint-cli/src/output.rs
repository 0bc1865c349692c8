//! The one renderer: every command's result is a type of `flint_server::api` (the JSON
//! bodies of the HTTP API), whether it came from a local data directory or from a
//! server. `--json` prints its serde serialisation; otherwise [`Human`] turns the same
//! value into aligned tables. The few documents the CLI prints beyond the API (the
//! envelopes below) wrap an API type and add the fields the CLI has always printed.

use std::fmt::Write as _;

use chrono::{DateTime, Local, SecondsFormat};
use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use flint_core::{from_unix_seconds, UnixNanos};
use flint_server::api;
use serde::Serialize;

/// The text people read for a result; `now` is the time relative times are shown from.
pub trait Human {
    /// The text for stdout, ending with a newline.
    fn human(&self, now: UnixNanos) -> String;
}

/// `value` as one pretty JSON document, or as its tables.
pub fn render<T: Serialize + Human>(json: bool, value: &T, now: UnixNanos) -> String {
    if json {
        // Serialising these types cannot fail: every map key is a string.
        let text = serde_json::to_string_pretty(value).unwrap_or_else(|e| {
            unreachable!("the API types always serialise: {e}");
        });
        format!("{text}\n")
    } else {
        value.human(now)
    }
}

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
fn fields(rows: &[(&str, String)]) -> Table {
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

/// [`time`] of float Unix seconds, the API's times.
fn time_s(at: f64, now: UnixNanos) -> String {
    time(from_unix_seconds(at), now)
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

/// Float seconds with millisecond precision, e.g. "1.250s".
fn seconds(value: f64) -> String {
    format!("{value:.3}s")
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

impl Human for api::LimitResponse {
    fn human(&self, _now: UnixNanos) -> String {
        let s = &self.status;
        // The burst only when it is not the rate: what the user asked for, no more.
        let burst = if s.burst == s.rate {
            String::new()
        } else {
            format!(", burst {}", s.burst)
        };
        let mode = if s.mode == "enforce" {
            String::new()
        } else {
            format!(", {}", s.mode)
        };
        let template = if s.key.ends_with('*') {
            format!(
                "\ntemplate: every key starting with {:?} without a limit of its own takes this limit",
                &s.key[..s.key.len() - 1]
            )
        } else {
            String::new()
        };
        format!(
            "{} {}: {} per {}{burst} ({}{mode}){template}\n",
            self.change, s.key, s.rate, s.per, s.algorithm
        )
    }
}

/// "yes", or for a shadow limit's would-be denial what happened instead.
fn allowed(allowed: bool, shadow_denied: bool) -> String {
    if shadow_denied {
        "yes (shadow: would have been denied)".to_owned()
    } else {
        yes_no(allowed)
    }
}

impl Human for api::CheckResult {
    fn human(&self, now: UnixNanos) -> String {
        let table = fields(&[
            ("key", self.key.clone()),
            ("allowed", allowed(self.allowed, self.shadow_denied)),
            ("cost", self.cost.to_string()),
            ("remaining", format!("{} of {}", self.remaining, self.limit)),
            ("reset_at", time_s(self.reset_at, now)),
            ("retry_after", seconds(self.retry_after)),
            ("algorithm", self.algorithm.clone()),
        ]);
        format!("{table}\n")
    }
}

impl Human for api::CheckAllResult {
    fn human(&self, now: UnixNanos) -> String {
        let shadow = self.results.iter().any(|r| r.shadow_denied);
        let mut header = vec!["key", "cost", "remaining", "reset_at", "retry_after"];
        if shadow {
            header.push("shadow");
        }
        let mut table = table(&header);
        for r in &self.results {
            let mut row = vec![
                r.key.clone(),
                r.cost.to_string(),
                format!("{} of {}", r.remaining, r.limit),
                time_s(r.reset_at, now),
                seconds(r.retry_after),
            ];
            if shadow {
                row.push(if r.shadow_denied { "would deny" } else { "" }.to_owned());
            }
            table.add_row(row);
        }
        let verdict = match &self.denied_key {
            None => "allowed: every limit admitted the request".to_owned(),
            Some(key) => format!("denied by {key}: nothing was consumed"),
        };
        format!("{verdict}\n{table}\n")
    }
}

/// Whether a status has shadow figures to show: a shadow limit, or shadow denials
/// counted while it was one.
fn shows_shadow(s: &api::KeyStatus) -> bool {
    s.mode != "enforce" || s.shadow_denied > 0
}

impl Human for api::KeyStatus {
    fn human(&self, now: UnixNanos) -> String {
        let mut rows = vec![("key", self.key.clone())];
        if let Some(template) = &self.template {
            rows.push(("template", template.clone()));
        } else if self.key.ends_with('*') {
            rows.push((
                "template",
                "this is a template: its counters sum those of its keys".to_owned(),
            ));
        }
        rows.extend([
            ("limit", format!("{} per {}", self.rate, self.per)),
            ("burst", self.burst.to_string()),
            ("algorithm", self.algorithm.clone()),
        ]);
        if self.mode != "enforce" {
            rows.push(("mode", self.mode.clone()));
        }
        rows.extend([
            ("remaining", self.remaining.to_string()),
            ("reset_at", time_s(self.reset_at, now)),
            (
                "allowed",
                format!("{} ({} units)", self.allowed, self.allowed_cost),
            ),
            (
                "denied",
                format!("{} ({} units)", self.denied, self.denied_cost),
            ),
        ]);
        if shows_shadow(self) {
            rows.push(("shadow_denied", self.shadow_denied.to_string()));
        }
        rows.push((
            "last_seen",
            self.last_seen
                .map_or_else(|| "never".into(), |at| time_s(at, now)),
        ));
        format!("{}\n", fields(&rows))
    }
}

impl Human for api::LimitList {
    fn human(&self, now: UnixNanos) -> String {
        if self.limits.is_empty() {
            return "no limits configured\n".into();
        }
        // The template and shadow columns only when a row has something to show.
        let templates = self.limits.iter().any(|s| s.template.is_some());
        let shadow = self.limits.iter().any(shows_shadow);
        let mut header = vec!["key"];
        if templates {
            header.push("template");
        }
        header.extend(["rate", "per", "burst", "algorithm"]);
        header.extend(["remaining", "allowed", "denied"]);
        if shadow {
            header.push("shadow denied");
        }
        header.push("last seen");
        let mut table = table(&header);
        for s in &self.limits {
            let mut row = vec![s.key.clone()];
            if templates {
                row.push(s.template.clone().unwrap_or_default());
            }
            // A shadow limit's mode beside its algorithm: "token_bucket (shadow)".
            let algorithm = if s.mode == "enforce" {
                s.algorithm.clone()
            } else {
                format!("{} ({})", s.algorithm, s.mode)
            };
            row.extend([
                s.rate.to_string(),
                s.per.clone(),
                s.burst.to_string(),
                algorithm,
            ]);
            row.extend([
                s.remaining.to_string(),
                s.allowed.to_string(),
                s.denied.to_string(),
            ]);
            if shadow {
                row.push(s.shadow_denied.to_string());
            }
            row.push(
                s.last_seen
                    .map_or_else(|| "never".into(), |at| relative(from_unix_seconds(at), now)),
            );
            table.add_row(row);
        }
        format!("{table}\n")
    }
}

impl Human for api::History {
    fn human(&self, now: UnixNanos) -> String {
        if self.events.is_empty() {
            return format!("{} has no decisions yet\n", self.key);
        }
        let mut table = table(&["at", "cost", "allowed", "remaining"]);
        for e in &self.events {
            table.add_row(vec![
                time_s(e.at, now),
                e.cost.to_string(),
                if e.shadow_denied {
                    "yes (shadow: would have been denied)"
                } else if e.allowed {
                    "yes"
                } else if e.blocked_by_other {
                    "no (blocked by another key)"
                } else {
                    "no"
                }
                .into(),
                e.remaining.to_string(),
            ]);
        }
        format!("{table}\n")
    }
}

/// `flint limit top`: the API's [`api::Top`] and the ranking asked for.
#[derive(Debug, Serialize)]
pub struct TopOutput {
    /// The ranking: `denied`, `allowed`, `denied_cost`, `allowed_cost`, `checks` or
    /// `shadow_denied`.
    pub by: &'static str,
    /// The ranked keys.
    #[serde(flatten)]
    pub top: api::Top,
}

impl Human for TopOutput {
    fn human(&self, _now: UnixNanos) -> String {
        if self.top.top.is_empty() {
            return format!("no key has any {}\n", self.by);
        }
        let shadow = self.by == "shadow_denied" || self.top.top.iter().any(shows_shadow);
        let mut header = vec![
            "#",
            "key",
            "allowed",
            "denied",
            "allowed units",
            "denied units",
        ];
        if shadow {
            header.push("shadow denied");
        }
        header.push("remaining");
        let mut table = table(&header);
        for (rank, s) in self.top.top.iter().enumerate() {
            let mut row = vec![
                (rank + 1).to_string(),
                s.key.clone(),
                s.allowed.to_string(),
                s.denied.to_string(),
                s.allowed_cost.to_string(),
                s.denied_cost.to_string(),
            ];
            if shadow {
                row.push(s.shadow_denied.to_string());
            }
            row.push(format!("{} of {}", s.remaining, s.burst));
            table.add_row(row);
        }
        format!("top keys by {}\n{table}\n", self.by)
    }
}

/// `flint limit reset`: the API's [`api::Done`], the key, and `"reset": true`.
#[derive(Debug, Serialize)]
pub struct ResetOutput {
    /// The key.
    pub key: String,
    /// Always true.
    pub reset: bool,
    /// The API's answer.
    #[serde(flatten)]
    pub done: api::Done,
}

impl Human for ResetOutput {
    fn human(&self, _now: UnixNanos) -> String {
        format!("reset {}: back to full capacity\n", self.key)
    }
}

/// `flint limit refund`: the API's [`api::Done`], the key, the cost given back and
/// `"refunded": true`.
#[derive(Debug, Serialize)]
pub struct RefundOutput {
    /// The key.
    pub key: String,
    /// The units asked to give back (a key never goes beyond full capacity).
    pub cost: u64,
    /// Always true.
    pub refunded: bool,
    /// The API's answer.
    #[serde(flatten)]
    pub done: api::Done,
}

impl Human for RefundOutput {
    fn human(&self, _now: UnixNanos) -> String {
        let units = if self.cost == 1 { "unit" } else { "units" };
        format!(
            "refunded {}: {} {units} given back (never beyond full capacity)\n",
            self.key, self.cost
        )
    }
}

/// `flint limit remove`: the API's [`api::Done`], the key, and `"removed": true`.
#[derive(Debug, Serialize)]
pub struct RemoveOutput {
    /// The key.
    pub key: String,
    /// Always true.
    pub removed: bool,
    /// The API's answer.
    #[serde(flatten)]
    pub done: api::Done,
}

impl Human for RemoveOutput {
    fn human(&self, _now: UnixNanos) -> String {
        format!("removed {}\n", self.key)
    }
}

/// `flint log flush`: the API's [`api::Done`] and `"flushed": true`.
#[derive(Debug, Serialize)]
pub struct FlushOutput {
    /// Always true.
    pub flushed: bool,
    /// The API's answer.
    #[serde(flatten)]
    pub done: api::Done,
}

impl Human for FlushOutput {
    fn human(&self, _now: UnixNanos) -> String {
        "every event is on disk\n".into()
    }
}

impl Human for api::Compacted {
    fn human(&self, _now: UnixNanos) -> String {
        format!(
            "compacted: snapshot of {} keys ({} bytes); log {} → {} bytes\n",
            self.keys, self.snapshot_bytes, self.log_bytes_before, self.log_bytes_after
        )
    }
}

/// The doctor's checks as a table.
fn checks_table(checks: &[api::DoctorCheck]) -> Table {
    let mut table = table(&["check", "status", "detail"]);
    for c in checks {
        table.add_row(vec![c.name.clone(), c.level.clone(), c.detail.clone()]);
    }
    table
}

impl Human for api::Doctor {
    fn human(&self, _now: UnixNanos) -> String {
        let mut text = format!("{}\n", checks_table(&self.checks));
        if !self.templates.is_empty() {
            let mut table = table(&["template", "live keys", "remembered keys"]);
            for t in &self.templates {
                table.add_row(vec![
                    t.template.clone(),
                    t.live_keys.to_string(),
                    t.remembered_keys.to_string(),
                ]);
            }
            let _ = writeln!(text, "{table}");
        }
        let resident = self
            .process_resident_bytes
            .map(|b| format!("; process resident {}", bytes(b)))
            .unwrap_or_default();
        let _ = writeln!(
            text,
            "memory: engine state about {}{resident}",
            bytes(self.memory_bytes)
        );
        text
    }
}

/// A size in bytes, with a binary unit past 1 KiB ("12.3 MiB").
fn bytes(value: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if value < 1024 {
        return format!("{value} B");
    }
    let mut size = value as f64 / 1024.0;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    format!("{size:.1} {}", UNITS[unit])
}

/// `flint doctor --repair`: the API's [`api::Doctor`] after the repair, and what the
/// repair did.
#[derive(Debug, Serialize)]
pub struct DoctorOutput {
    /// The report.
    #[serde(flatten)]
    pub doctor: api::Doctor,
    /// `false` when there was nothing to repair, else what was cut.
    pub repaired: Repaired,
    /// Shown before the table (the damage found, when not shown with a prompt).
    #[serde(skip)]
    pub preface: String,
}

/// What `doctor --repair` did.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Repaired {
    /// `false`: the log opened cleanly.
    Nothing(bool),
    /// The log was cut.
    Cut(Repair),
}

/// A repair of the log (local only: a server never opens a damaged directory).
#[derive(Debug, Serialize)]
pub struct Repair {
    /// Where the old log was copied.
    pub backup: String,
    /// The offset of the damaged record.
    pub damaged_at: u64,
    /// What is wrong with it.
    pub reason: String,
    /// Bytes cut.
    pub dropped_bytes: u64,
    /// Valid records cut after the damage.
    pub dropped_records: u64,
    /// Unix seconds of the first record cut.
    pub first_dropped_at: Option<f64>,
    /// Unix seconds of the last record cut.
    pub last_dropped_at: Option<f64>,
}

impl Human for DoctorOutput {
    fn human(&self, now: UnixNanos) -> String {
        let table = self.doctor.human(now);
        match &self.repaired {
            Repaired::Nothing(_) => {
                format!("{table}nothing to repair: the log opens cleanly\n")
            }
            Repaired::Cut(r) => format!(
                "{}repaired: the old log is kept at {}\n{table}",
                self.preface, r.backup
            ),
        }
    }
}

/// `flint doctor` on a directory that does not open (damaged, or not Flint's): the one
/// failed check.
#[derive(Debug, Serialize)]
pub struct OpenFailed {
    /// Always false.
    pub ok: bool,
    /// The failed `open` check.
    pub checks: Vec<api::DoctorCheck>,
    /// The data directory.
    pub data_dir: String,
}

impl Human for OpenFailed {
    fn human(&self, _now: UnixNanos) -> String {
        format!("{}\n", checks_table(&self.checks))
    }
}

#[cfg(test)]
mod tests {
    use super::{relative, render, FlushOutput, TopOutput};
    use flint_server::api;

    const S: u64 = 1_000_000_000;

    #[test]
    fn relative_times_read_naturally() {
        assert_eq!(relative(100 * S, 100 * S), "now");
        assert_eq!(relative(112 * S, 100 * S), "in 12s");
        assert_eq!(relative(100 * S, 280 * S), "3m ago");
        assert_eq!(relative(3_790 * S, 100 * S), "in 1h1m");
        assert_eq!(relative(100 * S + 2 * 86_400 * S, 100 * S), "in 2d");
    }

    #[test]
    fn envelopes_are_the_api_type_plus_the_cli_fields() {
        let flushed = render(
            true,
            &FlushOutput {
                flushed: true,
                done: api::Done { ok: true },
            },
            0,
        );
        let value: serde_json::Value = serde_json::from_str(&flushed).unwrap();
        assert_eq!(value, serde_json::json!({"flushed": true, "ok": true}));
        let top = render(
            true,
            &TopOutput {
                by: "denied",
                top: api::Top { top: vec![] },
            },
            0,
        );
        let value: serde_json::Value = serde_json::from_str(&top).unwrap();
        assert_eq!(value, serde_json::json!({"by": "denied", "top": []}));
    }
}
