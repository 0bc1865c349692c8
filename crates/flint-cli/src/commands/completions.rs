//! `flint completions bash|zsh|fish`.

use anyhow::Result;
use clap_complete::Shell;

use super::Outcome;
use crate::cli::Cli;

/// Prints the completion script of `shell`.
pub(super) fn completions(shell: Shell) -> Result<Outcome> {
    let mut command = <Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "flint", &mut script);
    Ok(Outcome::ok(String::from_utf8(script)?))
}
