//! `flint limit ...`: configure, check and inspect limits.

use anyhow::{bail, Context, Result};
use flint_core::{ListKind, TopBy};
use flint_server::api;

use super::target::{quota_of, Place, Target};
use super::Outcome;
use crate::cli::LimitCommand;
use crate::output::{RefundOutput, RemoveOutput, ResetOutput, TopOutput};

pub(super) fn limit(place: Place<'_>, json: bool, command: &LimitCommand) -> Result<Outcome> {
    let request = match command {
        LimitCommand::Add {
            key,
            rate,
            per,
            algorithm,
            burst,
            mode,
        } => {
            let request = api::LimitRequest {
                key: key.clone(),
                rate: *rate,
                per: per.clone(),
                algorithm: Some(algorithm.clone()),
                burst: *burst,
                mode: Some(mode.clone()),
            };
            // Bad settings must not leave a new, empty data directory behind, and a
            // server would refuse them with the same message.
            quota_of(&request)?;
            Some(request)
        }
        _ => None,
    };
    // Likewise an unknown ranking or kind, before anything is opened.
    let by = match command {
        LimitCommand::Top { by, .. } => Some(by.parse::<TopBy>()?),
        _ => None,
    };
    let kind = match command {
        LimitCommand::List { kind, .. } => kind.parse::<ListKind>()?,
        _ => ListKind::All,
    };
    let target = Target::open(place, request.is_some())?;
    let outcome = match command {
        LimitCommand::Add { .. } => {
            let request = request.context("the request was built above")?;
            Outcome::render(json, &target.limit(&request)?, false)
        }
        LimitCommand::Check { key, cost } => {
            let result = target.check(key, *cost)?;
            Outcome::render(json, &result, !result.allowed)
        }
        LimitCommand::Peek { key, cost } => {
            let result = target.peek(key, *cost)?;
            Outcome::render(json, &result, !result.allowed)
        }
        LimitCommand::CheckAll { keys, costs } => {
            let items = check_all_items(keys, costs)?;
            let borrowed: Vec<(&str, u64)> = items.iter().map(|(k, c)| (k.as_str(), *c)).collect();
            let result = target.check_all(&borrowed)?;
            Outcome::render(json, &result, !result.allowed)
        }
        LimitCommand::Status { key } => Outcome::render(json, &target.status(key)?, false),
        LimitCommand::List { prefix, .. } => {
            Outcome::render(json, &target.list(prefix.as_deref(), kind)?, false)
        }
        LimitCommand::Refund { key, cost } => {
            let done = target.refund(key, *cost)?;
            let value = RefundOutput {
                key: key.clone(),
                cost: *cost,
                refunded: true,
                done,
            };
            Outcome::render(json, &value, false)
        }
        LimitCommand::Reset { key } => {
            let done = target.reset(key)?;
            let value = ResetOutput {
                key: key.clone(),
                reset: true,
                done,
            };
            Outcome::render(json, &value, false)
        }
        LimitCommand::Remove { key } => {
            let done = target.remove(key)?;
            let value = RemoveOutput {
                key: key.clone(),
                removed: true,
                done,
            };
            Outcome::render(json, &value, false)
        }
        LimitCommand::History { key, limit } => {
            Outcome::render(json, &target.history(key, *limit)?, false)
        }
        LimitCommand::Top { limit, .. } => {
            let by = by.context("the ranking was parsed above")?;
            let top = target.top(by, *limit)?;
            Outcome::render(json, &TopOutput { by: by.name(), top }, false)
        }
    };
    target.close()?;
    Ok(outcome)
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
