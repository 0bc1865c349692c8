//! The commands: each parses its arguments into engine calls and renders the result.
//! No limiter rule lives here.

use std::fmt::Write as _;
use std::io::BufRead;
use std::path::Path;

use anyhow::{bail, Context, Result};
use flint_core::storage::backend::Backend;
use flint_core::storage::file::FileBackend;
use flint_core::storage::repair::{self, RepairPlan};
use flint_core::{
    to_unix_seconds, Algorithm, Clock, Error, LimitChange, Limiter, Options, Quota, SystemClock,
    TopBy, UnixNanos,
};
use serde_json::{json, Value};

use crate::cli::{Cli, Command, DoctorArgs, LimitCommand, LogCommand, ServerCommand};
use crate::output::{self, fields, time};

/// What a command produced: text for stdout and the exit code.
pub struct Outcome {
    /// Printed on stdout.
    pub stdout: String,
    /// 0 success or allowed, 1 denied or a failed doctor check.
    pub code: i32,
}

impl Outcome {
    fn ok(stdout: String) -> Self {
        Outcome { stdout, code: 0 }
    }
}

fn now() -> UnixNanos {
    SystemClock.now()
}

/// Opens the data directory. Only `limit add` may create it: elsewhere a missing
/// directory is a mistyped `--data-dir`, and creating it would hide that.
fn open(dir: &Path, create: bool) -> Result<Limiter> {
    if !create {
        require_existing(dir)?;
    }
    Limiter::open(dir, Options::default()).map_err(|e| opening_error(dir, e))
}

fn require_existing(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!(
            "data directory {} does not exist: check --data-dir or FLINT_DATA_DIR (`flint limit add` creates it)",
            dir.display()
        );
    }
    Ok(())
}

fn opening_error(dir: &Path, error: Error) -> anyhow::Error {
    match error {
        Error::Locked { pid, .. } => anyhow::anyhow!(
            "data directory {} is locked by another process{}: it owns the directory while it runs. Stop it first, or, if it is a `flint server`, inspect through its HTTP API",
            dir.display(),
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
        ),
        other => anyhow::Error::new(other),
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<Outcome> {
    let dir = cli.data_dir.as_path();
    match cli.command {
        Command::Limit(command) => limit(dir, cli.json, command),
        Command::Log(command) => log(dir, cli.json, &command),
        Command::Doctor(args) => doctor(dir, cli.json, &args),
        Command::Server(ServerCommand::Start { .. }) => bail!(
            "`flint server start` is not available in this version: shared mode (the HTTP server) is not built yet. Use the embedded mode (flint.Limiter in Python) meanwhile"
        ),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "flint", &mut script);
            Ok(Outcome::ok(String::from_utf8(script)?))
        }
    }
}

fn render(json: bool, value: &Value, human: impl FnOnce() -> String) -> Result<String> {
    if json {
        Ok(format!("{}\n", serde_json::to_string_pretty(value)?))
    } else {
        Ok(human())
    }
}

fn limit(dir: &Path, json: bool, command: LimitCommand) -> Result<Outcome> {
    if let LimitCommand::Add {
        rate,
        per,
        algorithm,
        ..
    } = &command
    {
        // Bad settings must not leave a new, empty data directory behind.
        Quota::new(*rate, per.parse()?, algorithm.parse()?)?;
    }
    let limiter = open(dir, matches!(command, LimitCommand::Add { .. }))?;
    let outcome = limit_on(&limiter, json, command).map_err(|error| {
        match error.downcast::<Error>() {
            // The engine's message names the Python call; say the command instead.
            Ok(Error::LimitNotFound { key }) => anyhow::anyhow!(
                "no limit is configured for key {key:?}: add one with `flint limit add {key} --rate N --per 1m`"
            ),
            Ok(other) => anyhow::Error::new(other),
            Err(error) => error,
        }
    })?;
    limiter.close()?;
    Ok(outcome)
}

fn limit_on(limiter: &Limiter, json: bool, command: LimitCommand) -> Result<Outcome> {
    match command {
        LimitCommand::Add {
            key,
            rate,
            per,
            algorithm,
        } => {
            let algorithm: Algorithm = algorithm.parse()?;
            let quota = Quota::new(rate, per.parse()?, algorithm)?;
            let change = limiter.limit(&key, quota)?;
            let change = match change {
                LimitChange::Created => "created",
                LimitChange::Updated => "updated",
                LimitChange::Unchanged => "unchanged",
            };
            let status = limiter.status(&key)?.context("the limit vanished")?;
            let value = json!({"change": change, "status": output::status_json(&status)});
            let text = render(json, &value, || {
                format!(
                    "{change} {key}: {} per {} ({})\n",
                    quota.rate(),
                    quota.period(),
                    quota.algorithm()
                )
            })?;
            Ok(Outcome::ok(text))
        }
        LimitCommand::Check { key, cost } => {
            let d = limiter.check(&key, cost)?;
            let value = output::decision_json(&key, &d);
            let now = now();
            let text = render(json, &value, || {
                let table = fields(&[
                    ("key", key.clone()),
                    ("allowed", if d.allowed { "yes" } else { "no" }.into()),
                    ("cost", d.cost.to_string()),
                    ("remaining", format!("{} of {}", d.remaining, d.limit)),
                    ("reset_at", time(d.reset_at, now)),
                    ("retry_after", output::seconds(d.retry_after)),
                    ("algorithm", d.algorithm.name().into()),
                ]);
                format!("{table}\n")
            })?;
            Ok(Outcome {
                stdout: text,
                code: i32::from(!d.allowed),
            })
        }
        LimitCommand::CheckAll { keys, costs } => {
            let items = check_all_items(&keys, &costs)?;
            let borrowed: Vec<(&str, u64)> = items.iter().map(|(k, c)| (k.as_str(), *c)).collect();
            let result = limiter.check_all(&borrowed)?;
            let value = json!({
                "allowed": result.allowed,
                "denied_key": result.denied_key,
                "results": result
                    .results
                    .iter()
                    .map(|r| output::decision_json(&r.key, &r.decision))
                    .collect::<Vec<_>>(),
            });
            let now = now();
            let text = render(json, &value, || {
                let mut table =
                    output::table(&["key", "cost", "remaining", "reset_at", "retry_after"]);
                for r in &result.results {
                    let d = &r.decision;
                    table.add_row(vec![
                        r.key.clone(),
                        d.cost.to_string(),
                        format!("{} of {}", d.remaining, d.limit),
                        time(d.reset_at, now),
                        output::seconds(d.retry_after),
                    ]);
                }
                let verdict = match &result.denied_key {
                    None => "allowed: every limit admitted the request".to_owned(),
                    Some(key) => format!("denied by {key}: nothing was consumed"),
                };
                format!("{verdict}\n{table}\n")
            })?;
            Ok(Outcome {
                stdout: text,
                code: i32::from(!result.allowed),
            })
        }
        LimitCommand::Status { key } => {
            let status = limiter.status(&key)?.ok_or(Error::LimitNotFound { key })?;
            let value = output::status_json(&status);
            let now = now();
            let text = render(json, &value, || {
                let s = &status;
                let table = fields(&[
                    ("key", s.key.clone()),
                    (
                        "limit",
                        format!("{} per {}", s.quota.rate(), s.quota.period()),
                    ),
                    ("algorithm", s.quota.algorithm().name().into()),
                    ("remaining", s.remaining.to_string()),
                    ("reset_at", time(s.reset_at, now)),
                    (
                        "allowed",
                        format!("{} ({} units)", s.counters.allowed, s.counters.allowed_cost),
                    ),
                    (
                        "denied",
                        format!("{} ({} units)", s.counters.denied, s.counters.denied_cost),
                    ),
                    (
                        "last_seen",
                        s.last_seen
                            .map_or_else(|| "never".into(), |at| time(at, now)),
                    ),
                ]);
                format!("{table}\n")
            })?;
            Ok(Outcome::ok(text))
        }
        LimitCommand::List { prefix } => {
            let all = limiter.list(prefix.as_deref())?;
            let value = json!({"limits": all.iter().map(output::status_json).collect::<Vec<_>>()});
            let text = render(json, &value, || {
                if all.is_empty() {
                    "no limits configured\n".into()
                } else {
                    format!("{}\n", output::status_table(&all, now()))
                }
            })?;
            Ok(Outcome::ok(text))
        }
        LimitCommand::Reset { key } => {
            limiter.reset(&key)?;
            let value = json!({"key": key, "reset": true});
            Ok(Outcome::ok(render(json, &value, || {
                format!("reset {key}: back to full capacity\n")
            })?))
        }
        LimitCommand::Remove { key } => {
            limiter.remove(&key)?;
            let value = json!({"key": key, "removed": true});
            Ok(Outcome::ok(render(json, &value, || {
                format!("removed {key}\n")
            })?))
        }
        LimitCommand::History { key, limit } => {
            let events = limiter.history(&key, limit)?;
            let value = json!({
                "key": key,
                "events": events.iter().map(output::history_json).collect::<Vec<_>>(),
            });
            let now = now();
            let text = render(json, &value, || {
                if events.is_empty() {
                    return format!("{key} has no decisions yet\n");
                }
                let mut table = output::table(&["at", "cost", "allowed", "remaining"]);
                for e in &events {
                    table.add_row(vec![
                        time(e.at, now),
                        e.cost.to_string(),
                        if e.allowed { "yes" } else { "no" }.into(),
                        e.remaining.to_string(),
                    ]);
                }
                format!("{table}\n")
            })?;
            Ok(Outcome::ok(text))
        }
        LimitCommand::Top { by, limit } => {
            let by: TopBy = by.parse()?;
            let ranked = limiter.top(by, limit)?;
            let value = json!({
                "by": by.name(),
                "top": ranked.iter().map(output::status_json).collect::<Vec<_>>(),
            });
            let text = render(json, &value, || {
                if ranked.is_empty() {
                    return format!("no key has any {}\n", by.name());
                }
                let mut table = output::table(&[
                    "#",
                    "key",
                    "allowed",
                    "denied",
                    "allowed units",
                    "denied units",
                    "remaining",
                ]);
                for (rank, s) in ranked.iter().enumerate() {
                    table.add_row(vec![
                        (rank + 1).to_string(),
                        s.key.clone(),
                        s.counters.allowed.to_string(),
                        s.counters.denied.to_string(),
                        s.counters.allowed_cost.to_string(),
                        s.counters.denied_cost.to_string(),
                        format!("{} of {}", s.remaining, s.quota.rate()),
                    ]);
                }
                format!("top keys by {}\n{table}\n", by.name())
            })?;
            Ok(Outcome::ok(text))
        }
    }
}

/// `KEY...` with `--cost KEY=N` overrides into (key, cost) items.
fn check_all_items(keys: &[String], costs: &[String]) -> Result<Vec<(String, u64)>> {
    let mut items: Vec<(String, u64)> = keys.iter().map(|k| (k.clone(), 1)).collect();
    for spec in costs {
        let (key, cost) = spec.rsplit_once('=').with_context(|| {
            format!("--cost {spec:?} is not KEY=N: write it as --cost api:user-42=5")
        })?;
        let cost: u64 = cost.parse().with_context(|| {
            format!("--cost {spec:?}: the cost {cost:?} is not a positive integer")
        })?;
        let Some(item) = items.iter_mut().find(|(k, _)| k == key) else {
            bail!("--cost {spec:?} names key {key:?}, which is not among the keys to check: add it to the list");
        };
        item.1 = cost;
    }
    Ok(items)
}

fn log(dir: &Path, json: bool, command: &LogCommand) -> Result<Outcome> {
    let limiter = open(dir, false)?;
    let text = match command {
        LogCommand::Flush => {
            limiter.flush()?;
            render(json, &json!({"flushed": true}), || {
                "every event is on disk\n".into()
            })?
        }
        LogCommand::Compact => {
            let r = limiter.compact()?;
            let value = json!({
                "keys": r.keys,
                "snapshot_bytes": r.snapshot_bytes,
                "log_bytes_before": r.log_bytes_before,
                "log_bytes_after": r.log_bytes_after,
            });
            render(json, &value, || {
                format!(
                    "compacted: snapshot of {} keys ({} bytes); log {} → {} bytes\n",
                    r.keys, r.snapshot_bytes, r.log_bytes_before, r.log_bytes_after
                )
            })?
        }
    };
    limiter.close()?;
    Ok(Outcome::ok(text))
}

fn doctor(dir: &Path, json: bool, args: &DoctorArgs) -> Result<Outcome> {
    require_existing(dir)?;
    let limiter = match Limiter::open(dir, Options::default()) {
        Ok(limiter) => limiter,
        Err(error @ Error::Corrupt { .. }) if args.repair => {
            return repair(dir, json, args.yes, &error)
        }
        Err(error @ Error::Corrupt { .. }) => {
            let detail = error.to_string();
            let value = json!({
                "ok": false,
                "checks": [{"name": "open", "ok": false, "level": "FAIL", "detail": detail}],
                "data_dir": dir.display().to_string(),
            });
            let text = render(json, &value, || {
                let mut table = output::table(&["check", "status", "detail"]);
                table.add_row(vec!["open".into(), "FAIL".into(), detail.clone()]);
                format!("{table}\n")
            })?;
            return Ok(Outcome {
                stdout: text,
                code: 1,
            });
        }
        Err(error) => return Err(opening_error(dir, error)),
    };
    let report = limiter.doctor()?;
    limiter.close()?;
    let mut value = output::doctor_json(&report);
    if args.repair {
        value["repaired"] = json!(false);
    }
    let text = render(json, &value, || {
        let table = output::doctor_table(&report);
        let mut text = format!("{table}\n");
        if args.repair {
            text.push_str("nothing to repair: the log opens cleanly\n");
        }
        text
    })?;
    Ok(Outcome {
        stdout: text,
        code: i32::from(!report.ok),
    })
}

fn describe(plan: &RepairPlan, now: UnixNanos) -> String {
    let mut text = format!(
        "the log is damaged at offset {} ({}).\n",
        plan.damaged_at, plan.reason
    );
    if plan.dropped_records == 0 {
        let _ = writeln!(
            text,
            "the damage is in the part the snapshot already holds: repairing drops no record."
        );
    } else {
        let range = match (plan.first_dropped_at, plan.last_dropped_at) {
            (Some(first), Some(last)) => {
                format!(", from {} to {}", time(first, now), time(last, now))
            }
            _ => String::new(),
        };
        let _ = writeln!(
            text,
            "repairing drops the damaged record and everything after it: {} bytes, {} valid records{range}.",
            plan.dropped_bytes, plan.dropped_records
        );
    }
    text
}

fn repair(dir: &Path, json: bool, yes: bool, error: &Error) -> Result<Outcome> {
    let backend = FileBackend::open(dir)?;
    let guard = backend.lock().map_err(|e| opening_error(dir, e))?;
    let Some(plan) = repair::plan(&backend)? else {
        bail!("{error}: this damage is not in the log's records, so --repair cannot mend it; restore the directory from a backup");
    };
    let now = now();
    let description = describe(&plan, now);
    if !yes {
        eprint!("{description}the log is copied aside first. Repair? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("repair cancelled: nothing was changed (pass --yes to repair without asking)");
        }
    }
    let report = repair::apply(&backend, plan, now)?;
    drop(guard);
    let limiter = Limiter::open(dir, Options::default()).map_err(|e| opening_error(dir, e))?;
    let doctor = limiter.doctor()?;
    limiter.close()?;
    let p = &report.plan;
    let mut value = output::doctor_json(&doctor);
    value["repaired"] = json!({
        "backup": report.backup.display().to_string(),
        "damaged_at": p.damaged_at,
        "reason": p.reason,
        "dropped_bytes": p.dropped_bytes,
        "dropped_records": p.dropped_records,
        "first_dropped_at": p.first_dropped_at.map(to_unix_seconds),
        "last_dropped_at": p.last_dropped_at.map(to_unix_seconds),
    });
    let text = render(json, &value, || {
        let table = output::doctor_table(&doctor);
        // Without --yes the description was shown with the prompt already.
        format!(
            "{}repaired: the old log is kept at {}\n{table}\n",
            if yes { description.as_str() } else { "" },
            report.backup.display()
        )
    })?;
    Ok(Outcome {
        stdout: text,
        code: i32::from(!doctor.ok),
    })
}
