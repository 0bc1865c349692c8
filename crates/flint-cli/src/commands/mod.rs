//! The commands, one module per subcommand: each turns its arguments into calls on a
//! [`target::Target`] (a data directory or a server) and renders the API's types with
//! the one renderer in `output`. No limiter rule lives here.

mod completions;
mod doctor;
mod limit;
mod log;
mod server;
mod target;

use std::path::Path;

use anyhow::{bail, Result};
use flint_core::{Clock, Error, SystemClock, UnixNanos};
use serde::Serialize;

use crate::cli::{Cli, Command};
use crate::output::{self, Human};
use target::Place;

/// The address the locked-directory message suggests (the default of `--bind`).
const EXAMPLE_URL: &str = "http://127.0.0.1:7878";

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

    /// `value` rendered as JSON or tables, with exit code 0 or (`failed`) 1.
    fn render<T: Serialize + Human>(json: bool, value: &T, failed: bool) -> Self {
        Outcome {
            stdout: output::render(json, value, now()),
            code: i32::from(failed),
        }
    }
}

fn now() -> UnixNanos {
    SystemClock.now()
}

fn opening_error(dir: &Path, error: Error) -> anyhow::Error {
    match error {
        Error::Locked { pid, .. } => anyhow::anyhow!(
            "data directory {} is locked by another process{}: it owns the directory while it runs. Stop it first, or, if it is a `flint server`, run the command through it: flint --url {EXAMPLE_URL} ... (or FLINT_URL)",
            dir.display(),
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
        ),
        other => anyhow::Error::new(other),
    }
}

/// Where the command runs: `--url` (and `--token`) or `--data-dir`. Both on the
/// command line is a usage error; `FLINT_DATA_DIR` is ignored when there is a URL.
fn place(cli: &Cli) -> Result<Place<'_>> {
    match &cli.url {
        Some(url) if cli.data_dir_on_command_line => bail!(
            "--url {url} and --data-dir {} were both given: a command runs either through a server (--url) or on a data directory (--data-dir); drop one",
            cli.data_dir.display()
        ),
        Some(url) if url.is_empty() => {
            bail!("--url is empty: pass the server's URL, such as {EXAMPLE_URL}")
        }
        Some(url) => Ok(Place::Server {
            url,
            token: cli.token.as_deref(),
        }),
        None => Ok(Place::Dir(&cli.data_dir)),
    }
}

/// Runs the parsed command line.
pub fn run(cli: &Cli) -> Result<Outcome> {
    let uses_dir = match &cli.command {
        Command::Completions { .. } => false,
        Command::Server(_) => true,
        Command::Limit(_) | Command::Log(_) | Command::Doctor(_) => cli.url.is_none(),
    };
    if uses_dir && cli.data_dir.as_os_str().is_empty() {
        bail!("--data-dir is empty (from --data-dir or FLINT_DATA_DIR): an empty path is not the current directory; write --data-dir . for that");
    }
    match &cli.command {
        Command::Limit(command) => limit::limit(place(cli)?, cli.json, command),
        Command::Log(command) => log::log(place(cli)?, cli.json, command),
        Command::Doctor(args) => doctor::doctor(place(cli)?, cli.json, args),
        Command::Server(command) => server::server(&cli.data_dir, command),
        Command::Completions { shell } => completions::completions(*shell),
    }
}
