//! `flint server start`: shared mode, not built yet.

use anyhow::{bail, Result};

use super::Outcome;
use crate::cli::ServerCommand;

/// Refuses, saying that shared mode is not built yet.
pub(super) fn server(command: &ServerCommand) -> Result<Outcome> {
    match command {
        ServerCommand::Start { .. } => bail!(
            "`flint server start` is not available in this version: shared mode (the HTTP server) is not built yet. Use the embedded mode (flint.Limiter in Python) meanwhile"
        ),
    }
}
