//! `flint server start`: shared mode. The server itself is the `flint-server` crate;
//! this command turns the options into its configuration, sets up logging and runs it
//! until SIGINT or SIGTERM.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use flint_server::{DurabilityWait, ServeError, ServerConfig};

use super::{opening_error, Outcome};
use crate::cli::{ServerCommand, ServerStart};

pub(super) fn server(dir: &Path, command: &ServerCommand) -> Result<Outcome> {
    match command {
        ServerCommand::Start(start) => start_server(dir, start),
    }
}

fn start_server(dir: &Path, start: &ServerStart) -> Result<Outcome> {
    let mut config = ServerConfig::new(dir);
    config.bind.clone_from(&start.bind);
    // An empty token, from --token or FLINT_SERVER_TOKEN, is refused by the server:
    // it would protect nothing, and is most likely an unset variable.
    config.token.clone_from(&start.token);
    config.sync = start.sync.parse()?;
    config.flush_every_ms = start.flush_every_ms;
    config.flush_every_events = start.flush_every_events;
    config.max_blocking = start.max_blocking.max(1);
    config.durability_wait = match start.durability_wait.as_str() {
        "blocking" => DurabilityWait::Blocking,
        _ => DurabilityWait::Async,
    };
    config.header_timeout = Duration::from_secs(start.header_timeout.max(1));
    config.request_timeout = Duration::from_secs(start.request_timeout.max(1));
    config.shutdown_grace = Duration::from_secs(start.shutdown_grace);
    init_logging(&start.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Blocking work is bounded by --max-blocking; the pool needs no more threads.
        .max_blocking_threads(config.max_blocking + 1)
        .thread_name("flint-server")
        .build()
        .context("cannot start the server's runtime")?;
    let result = runtime.block_on(flint_server::serve(config, flint_server::stop_signal()));
    match result {
        Ok(()) => Ok(Outcome::ok(String::new())),
        Err(ServeError::Engine(error)) => Err(opening_error(dir, error)),
        Err(error) => Err(error.into()),
    }
}

/// One line per start, stop and server-side error on stderr, as text or JSON.
/// `FLINT_LOG` (e.g. `debug`) changes the level.
fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLINT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    // Another subscriber may already be set (the server started twice in one
    // process, in tests): keep it.
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
