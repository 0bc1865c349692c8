//! What a command runs against: a data directory opened in this process, or a
//! `flint server` that owns one. One method per operation, each returning the API's
//! type, so that one renderer shows both and the exit codes agree.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use flint_core::{Error, Limiter, ListKind, Options, Quota, TopBy};
use flint_server::api;
use flint_server::client::{Client, ClientError, ErrorKind};

use super::opening_error;

/// Where the command line points: `--data-dir` or `--url`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Place<'a> {
    /// A data directory, opened (and locked) by this process.
    Dir(&'a Path),
    /// A `flint server`, with its bearer token.
    Server {
        /// The server's base URL.
        url: &'a str,
        /// The bearer token, if the server wants one.
        token: Option<&'a str>,
    },
}

/// How long the CLI waits for each answer of a server (a compaction of a large log
/// takes a while).
const TIMEOUT: Duration = Duration::from_secs(60);

/// The data directory or server a command runs against.
pub(crate) enum Target {
    /// A data directory opened in this process.
    Local(Limiter),
    /// A `flint server` that owns the directory.
    Remote(Client),
}

impl Target {
    /// Opens `place`. Only `flint limit add` may create a data directory (`create`):
    /// elsewhere a missing directory is a mistyped `--data-dir`, and creating it would
    /// hide that.
    pub(crate) fn open(place: Place<'_>, create: bool) -> Result<Target> {
        match place {
            Place::Dir(dir) => {
                if !create {
                    require_existing(dir)?;
                }
                let limiter =
                    Limiter::open(dir, Options::default()).map_err(|e| opening_error(dir, e))?;
                Ok(Target::Local(limiter))
            }
            // Nothing is sent yet: an unreachable server shows at the first call.
            Place::Server { url, token } => Ok(Target::Remote(
                Client::new(url, token, TIMEOUT).map_err(remote)?,
            )),
        }
    }

    /// Configures a limit. The settings were validated by the caller.
    pub(crate) fn limit(&self, request: &api::LimitRequest) -> Result<api::LimitResponse> {
        match self {
            Target::Local(limiter) => {
                let quota = quota_of(request)?;
                let change = limiter.limit(&request.key, quota).map_err(engine)?;
                let status = limiter
                    .status(&request.key)
                    .map_err(engine)?
                    .ok_or_else(|| anyhow!("the limit of {:?} vanished", request.key))?;
                Ok(api::LimitResponse {
                    change: api::change_name(change).to_owned(),
                    status: api::KeyStatus::from(&status),
                })
            }
            Target::Remote(client) => client.limit(request).map_err(remote),
        }
    }

    /// Checks `key` and consumes `cost` when allowed.
    pub(crate) fn check(&self, key: &str, cost: u64) -> Result<api::CheckResult> {
        match self {
            Target::Local(limiter) => {
                let decision = limiter.check(key, cost).map_err(engine)?;
                Ok(api::CheckResult::new(key, &decision))
            }
            Target::Remote(client) => client.check(key, cost).map_err(remote),
        }
    }

    /// What a check of `cost` units of `key` would answer now; consumes nothing.
    pub(crate) fn peek(&self, key: &str, cost: u64) -> Result<api::CheckResult> {
        match self {
            Target::Local(limiter) => {
                let decision = limiter.peek(key, cost).map_err(engine)?;
                Ok(api::CheckResult::new(key, &decision))
            }
            Target::Remote(client) => client.peek(key, cost).map_err(remote),
        }
    }

    /// Checks every item, all or nothing.
    pub(crate) fn check_all(&self, items: &[(&str, u64)]) -> Result<api::CheckAllResult> {
        match self {
            Target::Local(limiter) => {
                let result = limiter.check_all(items).map_err(engine)?;
                Ok(api::CheckAllResult::from(&result))
            }
            Target::Remote(client) => client.check_all(items).map_err(remote),
        }
    }

    /// Puts `key` back to full capacity.
    pub(crate) fn reset(&self, key: &str) -> Result<api::Done> {
        match self {
            Target::Local(limiter) => limiter.reset(key).map_err(engine)?,
            Target::Remote(client) => client.reset(key).map_err(remote)?,
        }
        Ok(api::Done { ok: true })
    }

    /// Gives back `cost` units of `key` consumed earlier.
    pub(crate) fn refund(&self, key: &str, cost: u64) -> Result<api::Done> {
        match self {
            Target::Local(limiter) => limiter.refund(key, cost).map_err(engine)?,
            Target::Remote(client) => client.refund(key, cost).map_err(remote)?,
        }
        Ok(api::Done { ok: true })
    }

    /// Deletes the limit of `key`.
    pub(crate) fn remove(&self, key: &str) -> Result<api::Done> {
        match self {
            Target::Local(limiter) => limiter.remove(key).map_err(engine)?,
            Target::Remote(client) => client.remove(key).map_err(remote)?,
        }
        Ok(api::Done { ok: true })
    }

    /// The status of `key`; a key without a limit is an error.
    pub(crate) fn status(&self, key: &str) -> Result<api::KeyStatus> {
        match self {
            Target::Local(limiter) => match limiter.status(key).map_err(engine)? {
                Some(status) => Ok(api::KeyStatus::from(&status)),
                None => Err(limit_not_found(key)),
            },
            Target::Remote(client) => client
                .status(key)
                .map_err(remote)?
                .ok_or_else(|| limit_not_found(key)),
        }
    }

    /// The limits whose keys start with `prefix`, sorted by key.
    pub(crate) fn list(&self, prefix: Option<&str>, kind: ListKind) -> Result<api::LimitList> {
        match self {
            Target::Local(limiter) => {
                let all = limiter.list_kind(prefix, kind).map_err(engine)?;
                Ok(api::LimitList {
                    limits: all.iter().map(api::KeyStatus::from).collect(),
                })
            }
            Target::Remote(client) => Ok(api::LimitList {
                limits: client.list(prefix, kind).map_err(remote)?,
            }),
        }
    }

    /// The `limit` most recent decisions of `key`, oldest first.
    pub(crate) fn history(&self, key: &str, limit: usize) -> Result<api::History> {
        match self {
            Target::Local(limiter) => {
                let events = limiter.history(key, limit).map_err(engine)?;
                Ok(api::History {
                    key: key.to_owned(),
                    events: events.iter().map(api::HistoryEntry::from).collect(),
                })
            }
            Target::Remote(client) => Ok(api::History {
                key: key.to_owned(),
                events: client.history(key, limit).map_err(remote)?,
            }),
        }
    }

    /// The `limit` keys ranked highest by `by`.
    pub(crate) fn top(&self, by: TopBy, limit: usize) -> Result<api::Top> {
        match self {
            Target::Local(limiter) => {
                let ranked = limiter.top(by, limit).map_err(engine)?;
                Ok(api::Top {
                    top: ranked.iter().map(api::KeyStatus::from).collect(),
                })
            }
            Target::Remote(client) => Ok(api::Top {
                top: client.top(by.name(), limit).map_err(remote)?,
            }),
        }
    }

    /// Syncs every written event to disk.
    pub(crate) fn flush(&self) -> Result<api::Done> {
        match self {
            Target::Local(limiter) => limiter.flush().map_err(engine)?,
            Target::Remote(client) => client.flush().map_err(remote)?,
        }
        Ok(api::Done { ok: true })
    }

    /// Writes a snapshot and starts a new log.
    pub(crate) fn compact(&self) -> Result<api::Compacted> {
        match self {
            Target::Local(limiter) => {
                let report = limiter.compact().map_err(engine)?;
                Ok(api::Compacted::from(&report))
            }
            Target::Remote(client) => client.compact().map_err(remote),
        }
    }

    /// The health report.
    pub(crate) fn doctor(&self) -> Result<api::Doctor> {
        match self {
            Target::Local(limiter) => {
                let report = limiter.doctor().map_err(engine)?;
                Ok(api::Doctor::from(&report))
            }
            Target::Remote(client) => client.doctor().map_err(remote),
        }
    }

    /// Closes a local directory (syncing it and releasing its lock); a server's stays
    /// open.
    pub(crate) fn close(self) -> Result<()> {
        match self {
            Target::Local(limiter) => limiter.close().map_err(engine),
            Target::Remote(_) => Ok(()),
        }
    }
}

/// The quota a `limit add` asks for (also its validation, before anything is opened).
pub(crate) fn quota_of(request: &api::LimitRequest) -> Result<Quota> {
    Ok(request.quota()?)
}

/// A missing data directory: a mistyped `--data-dir`, most likely.
pub(crate) fn require_existing(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!(
            "data directory {} does not exist: check --data-dir or FLINT_DATA_DIR (`flint limit add` creates it)",
            dir.display()
        );
    }
    Ok(())
}

/// The message for a key without a limit: the engine's names the Python call, this
/// one the command.
pub(crate) fn limit_not_found(key: &str) -> anyhow::Error {
    anyhow!("no limit is configured for key {key:?}: add one with `flint limit add {key} --rate N --per 1m`")
}

/// An engine error as the CLI says it.
fn engine(error: Error) -> anyhow::Error {
    match error {
        Error::LimitNotFound { key } => limit_not_found(&key),
        other => anyhow::Error::new(other),
    }
}

/// A client error as the CLI says it: a key without a limit as the local CLI says it, a
/// refused token with the way to pass one; the rest (a server that cannot be reached,
/// bad input, a failure of the server) in the client's words, which name the URL.
fn remote(error: ClientError) -> anyhow::Error {
    match (error.kind(), error.key()) {
        (ErrorKind::LimitNotFound, Some(key)) => limit_not_found(key),
        (ErrorKind::Authentication, _) => anyhow!(
            "the server at {} refused the token: pass --token or FLINT_SERVER_TOKEN",
            error.url()
        ),
        _ => anyhow::Error::new(error),
    }
}
