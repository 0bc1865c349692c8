//! `flint log flush|compact`.

use anyhow::Result;

use super::target::{Place, Target};
use super::Outcome;
use crate::cli::LogCommand;
use crate::output::FlushOutput;

pub(super) fn log(place: Place<'_>, json: bool, command: &LogCommand) -> Result<Outcome> {
    let target = Target::open(place, false)?;
    let outcome = match command {
        LogCommand::Flush => {
            let done = target.flush()?;
            Outcome::render(
                json,
                &FlushOutput {
                    flushed: true,
                    done,
                },
                false,
            )
        }
        LogCommand::Compact => Outcome::render(json, &target.compact()?, false),
    };
    target.close()?;
    Ok(outcome)
}
