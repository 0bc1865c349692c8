//! The `flint` command as a library: [`run`] takes the arguments and returns the exit
//! code, so the Rust binary and the Python package's console script are one program.
//!
//! Exit codes follow grep: 0 success (or allowed), 1 denied (or a failed doctor
//! check), 2 any error, with a one-line message on stderr.

mod cli;
mod commands;
mod output;

use std::ffi::OsString;
use std::io::Write;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};

pub use cli::Cli;

/// Runs `flint` with `args` (the first is the program name) and returns the exit code.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let cli = match parse(&args) {
        Ok(cli) => cli,
        Err(error) => {
            return match error.kind() {
                // Text arguments name themselves (`cli::Utf8`); this is the rest
                // (numbers, command names), where clap does not say which one.
                ErrorKind::InvalidUtf8 => fail(&not_utf8(&args)),
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = error.print();
                    if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        2
                    } else {
                        0
                    }
                }
                _ => {
                    let rendered = error.render().to_string();
                    let first = rendered
                        .lines()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("invalid arguments")
                        .trim_start_matches("error: ");
                    fail(&format!("{first} (see `flint --help`)"))
                }
            };
        }
    };
    match commands::run(&cli) {
        Ok(outcome) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`flint limit list | head`) is not an error worth a panic.
            let _ = stdout.write_all(outcome.stdout.as_bytes());
            let _ = stdout.flush();
            outcome.code
        }
        Err(error) => fail(&one_line(&error)),
    }
}

/// Parses the command line, noting where `--data-dir` came from.
fn parse(args: &[OsString]) -> Result<Cli, clap::Error> {
    let matches = Cli::command().try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    cli.data_dir_on_command_line =
        matches.value_source("data_dir") == Some(ValueSource::CommandLine);
    // An empty variable of the environment is as good as unset.
    let from_env = |id: &str| matches.value_source(id) == Some(ValueSource::EnvVariable);
    if cli.url.as_deref() == Some("") && from_env("url") {
        cli.url = None;
    }
    if cli.token.as_deref() == Some("") && from_env("token") {
        cli.token = None;
    }
    // `flint --token T server start`: the token written before the subcommand is the
    // server's too (clap gives `server start` an argument of its own).
    if let cli::Command::Server(cli::ServerCommand::Start(start)) = &mut cli.command {
        if start.token.is_none() {
            start.token.clone_from(&cli.token);
        }
    }
    Ok(cli)
}

/// The error and its causes, `context: cause: cause`. A cause whose text the message
/// already ends with is left out: the engine's I/O errors (like many errors of `std`)
/// show their source in their own text and also return it from `source()`, and
/// printing both would name the OS error twice.
fn one_line(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.is_empty() {
            text = cause;
        } else if !text.ends_with(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// The message for the first argument that is not UTF-8, named by the one before it.
fn not_utf8(args: &[OsString]) -> String {
    let mut previous = None;
    for arg in args.iter().skip(1) {
        // --data-dir takes any path: its value is not the culprit.
        let is_path = previous.is_some_and(|p: &OsString| p == "--data-dir");
        if arg.to_str().is_none() && !is_path {
            let name = match previous {
                Some(p) => format!("the argument after {}", p.to_string_lossy()),
                None => "the first argument".to_owned(),
            };
            return cli::not_utf8(&name, arg);
        }
        previous = Some(arg);
    }
    "invalid UTF-8 was detected in one or more arguments".to_owned()
}

/// Prints `message` as the one line on stderr and returns exit code 2.
fn fail(message: &str) -> i32 {
    let line = message.replace('\n', " ");
    let _ = writeln!(std::io::stderr().lock(), "flint: {line}");
    2
}
