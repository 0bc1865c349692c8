//! `flint log flush|compact`.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::{open, render, Outcome};
use crate::cli::LogCommand;

pub(super) fn log(dir: &Path, json: bool, command: &LogCommand) -> Result<Outcome> {
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
