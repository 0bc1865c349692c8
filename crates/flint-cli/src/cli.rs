//! The command tree, as clap sees it. Parsing only: the commands live in `commands/`.

use std::ffi::OsStr;
use std::path::PathBuf;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Arg, Args, Parser, Subcommand};
use clap_complete::Shell;

/// Configure, inspect and administer a Flint data directory.
///
/// Exit codes follow grep: 0 success (or allowed), 1 denied (or a failed doctor
/// check), 2 any error.
#[derive(Debug, Parser)]
#[command(name = "flint", version, propagate_version = true)]
pub struct Cli {
    /// The data directory.
    #[arg(
        long,
        global = true,
        env = "FLINT_DATA_DIR",
        default_value = ".flint",
        value_parser = AnyPath
    )]
    pub data_dir: PathBuf,
    /// Run the command through the `flint server` at this URL instead of opening a data
    /// directory (`--data-dir` is then refused, `FLINT_DATA_DIR` ignored).
    #[arg(long, global = true, env = "FLINT_URL", value_parser = Utf8)]
    pub url: Option<String>,
    /// The server's bearer token (with --url).
    #[arg(
        long,
        global = true,
        env = "FLINT_SERVER_TOKEN",
        hide_env_values = true,
        value_parser = Utf8
    )]
    pub token: Option<String>,
    /// Print one JSON document instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Whether `--data-dir` was on the command line (not from the environment or the
    /// default): with `--url` that is a contradiction.
    #[arg(skip)]
    pub data_dir_on_command_line: bool,
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
    ///
    /// A key ending in * is a template, such as 'ip:*' (quote it for the shell): the
    /// limit of every key that starts with the text before the * and has no limit of
    /// its own (the longest such prefix wins). Those keys are checked without adding
    /// them; each has its own units.
    Add {
        /// The key, such as "api:user-42", or a template, such as 'ip:*'.
        #[arg(value_parser = Utf8)]
        key: String,
        /// Units allowed per period.
        #[arg(long)]
        rate: u64,
        /// The period: 250ms, 1s, 1m, 1h, 1d.
        #[arg(long, value_parser = Utf8)]
        per: String,
        /// token_bucket, sliding_window_log or fixed_window_counter.
        #[arg(long, default_value = "token_bucket", value_parser = Utf8)]
        algorithm: String,
        /// token_bucket only: the capacity, the most units available at once, refilled
        /// at RATE per PER (default: the rate; smaller or larger is allowed).
        #[arg(long)]
        burst: Option<u64>,
        /// enforce, or shadow: allow every check and count the ones the limit would
        /// have denied (shadow_denied), to try a limit out before enforcing it.
        #[arg(long, default_value = "enforce", value_parser = Utf8)]
        mode: String,
    },
    /// Check a key and consume COST units when allowed (exit 1 when denied).
    Check {
        /// The key.
        #[arg(value_parser = Utf8)]
        key: String,
        /// Units to consume.
        #[arg(long, default_value_t = 1)]
        cost: u64,
    },
    /// Show what a check of COST units would answer now, consuming nothing (exit 1
    /// when it would be denied).
    Peek {
        /// The key.
        #[arg(value_parser = Utf8)]
        key: String,
        /// Units the check would ask for.
        #[arg(long, default_value_t = 1)]
        cost: u64,
    },
    /// Check several keys, all or nothing (exit 1 when denied).
    CheckAll {
        /// The keys.
        #[arg(required = true, value_parser = Utf8)]
        keys: Vec<String>,
        /// The cost of one key, as KEY=N (repeatable; others cost 1).
        #[arg(long = "cost", value_name = "KEY=N", value_parser = Utf8)]
        costs: Vec<String>,
    },
    /// Show a key's limit, capacity and counters.
    Status {
        /// The key.
        #[arg(value_parser = Utf8)]
        key: String,
    },
    /// List limits, sorted by key: configured keys, templates, and keys made from
    /// templates while they hold state (back at full capacity they are dropped).
    List {
        /// Only keys starting with this.
        #[arg(long, value_parser = Utf8)]
        prefix: Option<String>,
        /// all, keys (configured keys and keys made from templates) or templates.
        #[arg(long, default_value = "all", value_parser = Utf8)]
        kind: String,
    },
    /// Put a key back to full capacity.
    Reset {
        /// The key.
        #[arg(value_parser = Utf8)]
        key: String,
    },
    /// Give back COST units consumed earlier (a request that failed and should not
    /// count); never beyond full capacity.
    Refund {
        /// The key.
        #[arg(value_parser = Utf8)]
        key: String,
        /// Units to give back.
        #[arg(long, default_value_t = 1)]
        cost: u64,
    },
    /// Delete a key's limit.
    Remove {
        /// The key.
        #[arg(value_parser = Utf8)]
        key: String,
    },
    /// Show a key's most recent decisions, oldest first.
    History {
        /// The key.
        #[arg(value_parser = Utf8)]
        key: String,
        /// How many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Rank keys by denials, allowances, costs, checks or shadow denials.
    Top {
        /// denied, allowed, denied_cost, allowed_cost, checks or shadow_denied.
        #[arg(long, default_value = "denied", value_parser = Utf8)]
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
    /// Serve the data directory over HTTP (shared mode) until SIGINT or SIGTERM.
    Start(ServerStart),
}

/// `flint server start`
#[derive(Debug, Args)]
pub struct ServerStart {
    /// HOST:PORT to listen on. A non-loopback address needs --token.
    #[arg(long, default_value = "127.0.0.1:7878", value_parser = Utf8)]
    pub bind: String,
    /// Bearer token required by every request but GET /v1/health.
    #[arg(long, env = "FLINT_SERVER_TOKEN", hide_env_values = true, value_parser = Utf8)]
    pub token: Option<String>,
    /// always: a consuming request is answered after its record is synced; batch:
    /// records are synced every --flush-every-ms or --flush-every-events.
    #[arg(long, default_value = "always", value_parser = Utf8)]
    pub sync: String,
    /// The longest an event stays unsynced, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub flush_every_ms: u64,
    /// In batch mode, sync after this many events.
    #[arg(long, default_value_t = 100)]
    pub flush_every_events: u64,
    /// Blocking work at once (syncs on request, compaction, doctor).
    #[arg(long, default_value_t = 128)]
    pub max_blocking: usize,
    /// Seconds a client may take to send a request's headers; also how long an idle
    /// keep-alive connection stays open.
    #[arg(long, default_value_t = 60)]
    pub header_timeout: u64,
    /// Seconds a request may take, body included.
    #[arg(long, default_value_t = 30)]
    pub request_timeout: u64,
    /// Seconds requests in flight may take to finish after SIGINT or SIGTERM.
    #[arg(long, default_value_t = 10)]
    pub shutdown_grace: u64,
    /// How consuming requests wait for their sync: async (no thread held) or
    /// blocking (a thread each, at most --max-blocking); for benchmarks.
    #[arg(long, default_value = "async", value_parser = ["async", "blocking"], hide = true)]
    pub durability_wait: String,
    /// Log lines as text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// The value parser of `--data-dir`: any path, even an empty one, which the commands
/// refuse themselves, so that an empty `FLINT_DATA_DIR` does not stop a command that
/// runs through `--url` and ignores it.
#[derive(Debug, Clone, Copy)]
pub struct AnyPath;

impl TypedValueParser for AnyPath {
    type Value = PathBuf;

    fn parse_ref(
        &self,
        _command: &clap::Command,
        _arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<PathBuf, clap::Error> {
        Ok(PathBuf::from(value))
    }
}

/// The value parser of every text argument. clap's own check of UTF-8 says only that
/// "one or more arguments" are not UTF-8; this one names the argument and its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Utf8;

impl TypedValueParser for Utf8 {
    type Value = String;

    fn parse_ref(
        &self,
        command: &clap::Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        value.to_str().map(str::to_owned).ok_or_else(|| {
            let name = arg.map_or_else(|| "an argument".to_owned(), ToString::to_string);
            clap::Error::raw(ErrorKind::ValueValidation, not_utf8(&name, value)).with_cmd(command)
        })
    }
}

/// The message for an argument that is not UTF-8 (`name` says which).
#[expect(
    clippy::unnecessary_debug_formatting,
    reason = "the escaped bytes (\"\\xFF\") are what the message must show"
)]
pub fn not_utf8(name: &str, value: &OsStr) -> String {
    format!("{name} is {value:?}, which is not valid UTF-8: every argument but --data-dir is text; pass it as UTF-8")
}
