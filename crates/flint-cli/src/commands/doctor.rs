//! `flint doctor [--repair [--yes]]`.

use std::fmt::Write as _;
use std::io::BufRead;
use std::path::Path;

use anyhow::{bail, Result};
use flint_core::admin::{self as repair, RepairPlan};
use flint_core::backend::Backend;
use flint_core::backend::FileBackend;
use flint_core::{to_unix_seconds, Error, Limiter, Options, UnixNanos};
use serde_json::json;

use super::{now, opening_error, render, require_existing, Outcome};
use crate::cli::DoctorArgs;
use crate::output::{self, time};

pub(super) fn doctor(dir: &Path, json: bool, args: &DoctorArgs) -> Result<Outcome> {
    require_existing(dir)?;
    let limiter = match Limiter::open(dir, Options::default()) {
        Ok(limiter) => limiter,
        Err(error @ Error::Corrupt { .. }) if args.repair => {
            return repair(dir, json, args.yes, &error)
        }
        Err(error @ (Error::Corrupt { .. } | Error::NotFlint { .. })) => {
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
