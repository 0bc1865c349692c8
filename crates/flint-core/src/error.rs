//! The one error type of the engine, split by what the caller can do about it.

use std::io;
use std::path::PathBuf;

/// The result type of every fallible engine operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine.
///
/// A denied request is not an error: it is a [`Decision`](crate::Decision) with
/// `allowed == false`. Errors are for input that can never succeed and for storage
/// that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument (key, rate, period, algorithm, cost) is invalid; nothing was changed.
    #[error("{message}")]
    InvalidArgument {
        /// The key the argument was given for, when there is one.
        key: Option<String>,
        /// What is wrong, with the value and the fix.
        message: String,
    },
    /// The key has no configured limit.
    #[error(
        "no limit is configured for key {key:?}: call limit({key:?}, rate=..., per=...) first"
    )]
    LimitNotFound {
        /// The key that was looked up.
        key: String,
    },
    /// Another process holds the data directory's lock.
    #[error("{}", locked_message(dir, *pid))]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// The pid written into the lock file by the holder, when readable.
        pid: Option<u32>,
    },
    /// A read, write or sync failed.
    #[error("{op} {} failed: {source}", path.display())]
    Io {
        /// What the engine was doing ("append to", "sync", "rename", ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A Flint file holds bytes that Flint did not write (damage, or an edit); nothing
    /// was rewritten.
    #[error("{} is corrupt at byte offset {offset}: {reason}; the file was left untouched{}", file.display(), corrupt_hint(file))]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the first damaged record.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A file of the data directory was not written by Flint (another program's file
    /// under a Flint name); nothing was changed.
    #[error("{} is not a Flint {}: it starts with {found}; Flint changed nothing. Move the directory's files aside or give Flint a directory of its own", file.display(), file_kind(file))]
    NotFlint {
        /// The file.
        file: PathBuf,
        /// What it starts with, described.
        found: String,
    },
    /// Repair cannot mend this damage (only a damaged log after its header can be cut).
    #[error("{} cannot be repaired: {reason}; nothing was changed. Restore the data directory from a backup, or move it aside to start afresh", file.display())]
    Unrepairable {
        /// The damaged file.
        file: PathBuf,
        /// What is damaged.
        reason: String,
    },
    /// A file was written by a newer (or unknown) version of the format.
    #[error("{} has format version {found}, this build reads versions 1 to {supported}: upgrade Flint", file.display())]
    UnsupportedVersion {
        /// The file.
        file: PathBuf,
        /// The version found in its header.
        found: u32,
        /// The newest version of this file this build reads (and the one it writes).
        supported: u32,
    },
    /// An earlier write or sync failed; the engine refuses further writes (fail-stop)
    /// rather than report decisions it may not have recorded.
    #[error("the limiter stopped accepting writes after a storage failure ({cause}); close it and open the data directory again")]
    Poisoned {
        /// The failure that poisoned the engine.
        cause: String,
    },
    /// The limiter was closed.
    #[error("the limiter is closed: open the data directory again")]
    Closed,
    /// The limiter was opened by the parent of this forked process. The child closed
    /// its inherited copy of the lock and the log mapping at the fork; it must not
    /// write its parent's log.
    #[error("this limiter was opened by process {opened_by} before a fork; using it in the child process {} would write the same log from two processes: open a new limiter in the child (after the parent has closed it), or use shared mode", std::process::id())]
    Forked {
        /// The process that opened the limiter.
        opened_by: u32,
    },
}

/// What a corrupt file's message suggests: repair mends the log, nothing rebuilds a
/// snapshot.
fn corrupt_hint(file: &std::path::Path) -> &'static str {
    if file_kind(file) == "log" {
        " (`flint doctor --repair` can cut the log at the last good record, after making a backup)"
    } else {
        " (restore it from a backup: Flint cannot rebuild a snapshot)"
    }
}

/// "log" or "snapshot", from the file's name.
fn file_kind(file: &std::path::Path) -> &'static str {
    let snapshot = file
        .file_name()
        .is_some_and(|name| name.to_string_lossy().starts_with("flint.snapshot"));
    if snapshot {
        "snapshot"
    } else {
        "log"
    }
}

/// Describes the first bytes of a file that is not Flint's, for a message.
pub(crate) fn describe_start(bytes: &[u8]) -> String {
    let head = bytes.get(..bytes.len().min(48)).unwrap_or(bytes);
    let text = String::from_utf8_lossy(head);
    let printable = !head.is_empty()
        && text
            .chars()
            .all(|c| c == '\n' || c == '\t' || c == '\r' || !c.is_control());
    if !printable {
        let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
        return format!("the bytes {}", hex.join(" "));
    }
    let first_line = text.lines().next().unwrap_or_default().trim();
    let kind = if first_line.starts_with('{') {
        " (JSON lines: perhaps the log of another flint-limiter implementation)"
    } else {
        " (text)"
    };
    format!("{first_line:?}{kind}")
}

fn locked_message(dir: &std::path::Path, pid: Option<u32>) -> String {
    if pid == Some(std::process::id()) {
        return format!(
            "data directory {} is already open in this process (pid {}): use that limiter, or close it before opening the directory again",
            dir.display(),
            std::process::id()
        );
    }
    format!(
        "data directory {} is locked by another process{}: stop that process, or use shared mode (one server owns the directory, other processes talk to it over HTTP)",
        dir.display(),
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )
}

impl Error {
    /// An invalid argument for `key`.
    pub(crate) fn invalid(key: Option<&str>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            key: key.map(str::to_owned),
            message: message.into(),
        }
    }

    /// An I/O failure while doing `op` on `path`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True when the error is about storage (I/O, corruption, lock, poisoning).
    pub fn is_storage(&self) -> bool {
        matches!(
            self,
            Error::Io { .. }
                | Error::Corrupt { .. }
                | Error::NotFlint { .. }
                | Error::Unrepairable { .. }
                | Error::UnsupportedVersion { .. }
                | Error::Locked { .. }
                | Error::Poisoned { .. }
        )
    }
}
