//! The commands, one module per subcommand: each parses its arguments into engine
//! calls and renders the result. No limiter rule lives here.

mod completions;
mod doctor;
mod limit;
mod log;
mod server;

use std::path::Path;

use anyhow::{bail, Result};
use flint_core::{Clock, Error, Limiter, Options, SystemClock, UnixNanos};
use serde_json::Value;

use crate::cli::{Cli, Command};

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
        Command::Limit(command) => limit::limit(dir, cli.json, command),
        Command::Log(command) => log::log(dir, cli.json, &command),
        Command::Doctor(args) => doctor::doctor(dir, cli.json, &args),
        Command::Server(command) => server::server(dir, &command),
        Command::Completions { shell } => completions::completions(shell),
    }
}

fn render(json: bool, value: &Value, human: impl FnOnce() -> String) -> Result<String> {
    if json {
        Ok(format!("{}\n", serde_json::to_string_pretty(value)?))
    } else {
        Ok(human())
    }
}
