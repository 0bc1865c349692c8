//! `flint limit ...`: configure, check and inspect limits.

use std::path::Path;

use anyhow::{bail, Context, Result};
use flint_core::{Algorithm, Error, LimitChange, Limiter, Quota, TopBy};
use serde_json::json;

use super::{now, open, render, Outcome};
use crate::cli::LimitCommand;
use crate::output::{self, fields, time};

pub(super) fn limit(dir: &Path, json: bool, command: LimitCommand) -> Result<Outcome> {
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
                        if e.allowed {
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
