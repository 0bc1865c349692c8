//! The command tree, as clap sees it. Parsing only: the commands live in `commands.rs`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use clap_complete::Shell;

/// Configure, inspect and administer a Flint data directory.
///
/// Exit codes follow grep: 0 success (or allowed), 1 denied (or a failed doctor
/// check), 2 any error.
#[derive(Debug, Parser)]
#[command(name = "flint", version, propagate_version = true)]
pub struct Cli {
    /// The data directory.
    #[arg(long, global = true, env = "FLINT_DATA_DIR", default_value = ".flint")]
    pub data_dir: PathBuf,
    /// Print one JSON document instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The command groups.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Configure, check and inspect limits.
    #[command(subcommand)]
    Limit(LimitCommand),
    /// Sync or compact the log.
    #[command(subcommand)]
    Log(LogCommand),
    /// Check the data directory; `--repair` mends a damaged log.
    Doctor(DoctorArgs),
    /// Run the HTTP server (shared mode).
    #[command(subcommand)]
    Server(ServerCommand),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: Shell,
    },
}

/// `flint limit ...`
#[derive(Debug, Subcommand)]
#[expect(
    clippy::doc_markdown,
    reason = "these comments are the --help text, shown without markdown"
)]
pub enum LimitCommand {
    /// Configure a limit (the same settings again change nothing).
    Add {
        /// The key, such as "api:user-42".
        key: String,
        /// Units allowed per period.
        #[arg(long)]
        rate: u64,
        /// The period: 250ms, 1s, 1m, 1h, 1d.
        #[arg(long)]
        per: String,
        /// token_bucket, sliding_window_log or fixed_window_counter.
        #[arg(long, default_value = "token_bucket")]
        algorithm: String,
    },
    /// Check a key and consume COST units when allowed (exit 1 when denied).
    Check {
        /// The key.
        key: String,
        /// Units to consume.
        #[arg(long, default_value_t = 1)]
        cost: u64,
    },
    /// Check several keys, all or nothing (exit 1 when denied).
    CheckAll {
        /// The keys.
        #[arg(required = true)]
        keys: Vec<String>,
        /// The cost of one key, as KEY=N (repeatable; others cost 1).
        #[arg(long = "cost", value_name = "KEY=N")]
        costs: Vec<String>,
    },
    /// Show a key's limit, capacity and counters.
    Status {
        /// The key.
        key: String,
    },
    /// List limits, sorted by key.
    List {
        /// Only keys starting with this.
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Put a key back to full capacity.
    Reset {
        /// The key.
        key: String,
    },
    /// Delete a key's limit.
    Remove {
        /// The key.
        key: String,
    },
    /// Show a key's most recent decisions, oldest first.
    History {
        /// The key.
        key: String,
        /// How many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Rank keys by denials, allowances, costs or checks.
    Top {
        /// denied, allowed, denied_cost, allowed_cost or checks.
        #[arg(long, default_value = "denied")]
        by: String,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

/// `flint log ...`
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Sync every written event to disk.
    Flush,
    /// Write a snapshot and start a new, short log.
    Compact,
}

/// `flint doctor [--repair [--yes]]`
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Cut a damaged log at its last good record (keeps a backup; drops what follows).
    #[arg(long)]
    pub repair: bool,
    /// Do not ask before repairing.
    #[arg(long, requires = "repair")]
    pub yes: bool,
}

/// `flint server ...`
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Serve the data directory over HTTP.
    Start {
        /// HOST:PORT to listen on.
        #[arg(long, default_value = "127.0.0.1:8787")]
        bind: String,
        /// Bearer token required by every request but /v1/health.
        #[arg(long, env = "FLINT_SERVER_TOKEN")]
        token: Option<String>,
    },
}
