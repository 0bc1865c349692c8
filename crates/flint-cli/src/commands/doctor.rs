//! `flint doctor [--repair [--yes]]`.

use std::fmt::Write as _;
use std::io::BufRead;
use std::path::Path;

use anyhow::{bail, Result};
use flint_core::admin::{self as repair, RepairPlan};
use flint_core::backend::Backend;
use flint_core::backend::FileBackend;
use flint_core::{to_unix_seconds, Error, Limiter, Options, UnixNanos};
use flint_server::api;

use super::target::{require_existing, Place, Target};
use super::{now, opening_error, Outcome};
use crate::cli::DoctorArgs;
use crate::output::{time, DoctorOutput, OpenFailed, Repair, Repaired};

pub(super) fn doctor(place: Place<'_>, json: bool, args: &DoctorArgs) -> Result<Outcome> {
    let dir = match place {
        Place::Dir(dir) => dir,
        Place::Server { url, .. } => {
            if args.repair {
                bail!("doctor --repair needs the data directory itself, not a server (--url {url}): stop the server, then run `flint --data-dir DIR doctor --repair` on its directory");
            }
            let report = Target::open(place, false)?.doctor()?;
            return Ok(Outcome::render(json, &report, !report.ok));
        }
    };
    require_existing(dir)?;
    let limiter = match Limiter::open(dir, Options::default()) {
        Ok(limiter) => limiter,
        Err(error @ Error::Corrupt { .. }) if args.repair => {
            return repair(dir, json, args.yes, &error)
        }
        Err(error @ (Error::Corrupt { .. } | Error::NotFlint { .. })) => {
            let value = OpenFailed {
                ok: false,
                checks: vec![api::DoctorCheck {
                    name: "open".into(),
                    ok: false,
                    level: "FAIL".into(),
                    detail: error.to_string(),
                }],
                data_dir: dir.display().to_string(),
            };
            return Ok(Outcome::render(json, &value, true));
        }
        Err(error) => return Err(opening_error(dir, error)),
    };
    let target = Target::Local(limiter);
    let report = target.doctor()?;
    target.close()?;
    let failed = !report.ok;
    if args.repair {
        let value = DoctorOutput {
            doctor: report,
            repaired: Repaired::Nothing(false),
            preface: String::new(),
        };
        Ok(Outcome::render(json, &value, failed))
    } else {
        Ok(Outcome::render(json, &report, failed))
    }
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
    let target = Target::Local(limiter);
    let doctor = target.doctor()?;
    target.close()?;
    let p = &report.plan;
    let failed = !doctor.ok;
    let value = DoctorOutput {
        doctor,
        repaired: Repaired::Cut(Repair {
            backup: report.backup.display().to_string(),
            damaged_at: p.damaged_at,
            reason: p.reason.clone(),
            dropped_bytes: p.dropped_bytes,
            dropped_records: p.dropped_records,
            first_dropped_at: p.first_dropped_at.map(to_unix_seconds),
            last_dropped_at: p.last_dropped_at.map(to_unix_seconds),
        }),
        // Without --yes the description was shown with the prompt already.
        preface: if yes { description } else { String::new() },
    };
    Ok(Outcome::render(json, &value, failed))
}
