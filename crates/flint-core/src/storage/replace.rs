//! The atomic replace of a file, and where its commit point lies.
//!
//! Every fallible step comes before the rename (the commit point): a failure there
//! leaves the old file in place and the directory as it was. After the rename only the
//! directory's sync remains; when it fails the new file is in place but its name may
//! not survive a power loss, which the caller must treat as a storage failure (the
//! engine installs the new log and stops accepting writes).

use std::io;

use crate::storage::backend::{Backend, LogFile};
use crate::storage::format::TEMP_SUFFIX;

/// The temporary name of `name` while it is being replaced.
pub fn temp_name(name: &str) -> String {
    format!("{name}{TEMP_SUFFIX}")
}

/// What went wrong in a replace, and whether the new file took the old one's place.
#[derive(Debug)]
pub enum ReplaceError {
    /// Before the commit point: nothing changed (but a temporary file, removed on the
    /// next open).
    NotReplaced(io::Error),
    /// After the commit point: the new file is in place, but the directory sync failed.
    Unsynced(io::Error),
}

impl ReplaceError {
    /// The underlying error.
    pub fn into_io(self) -> io::Error {
        match self {
            ReplaceError::NotReplaced(e) | ReplaceError::Unsynced(e) => e,
        }
    }
}

/// Replaces `name` with `bytes`: write a temporary file, sync it, rename it over
/// `name` (the commit point), sync the directory.
pub fn write_atomic(backend: &dyn Backend, name: &str, bytes: &[u8]) -> Result<(), ReplaceError> {
    let temp = temp_name(name);
    let mut file = backend.create(&temp).map_err(ReplaceError::NotReplaced)?;
    file.write_at(0, bytes).map_err(ReplaceError::NotReplaced)?;
    file.sync().map_err(ReplaceError::NotReplaced)?;
    drop(file);
    backend
        .rename(&temp, name)
        .map_err(ReplaceError::NotReplaced)?;
    backend.sync_dir().map_err(ReplaceError::Unsynced)
}

/// A new log that replaced the old one.
pub struct NewLog {
    /// The log, open for appending after its content.
    pub log: Box<dyn LogFile>,
    /// The directory sync after the rename; an error means the replacement may not
    /// survive a power loss.
    pub dir_synced: io::Result<()>,
}

/// Replaces the log `name` with a new one holding `content`, preallocated to
/// `capacity` bytes and opened for appending: write, sync and map a temporary file
/// (everything that can fail), then rename it over `name` (the commit point), then sync
/// the directory.
pub fn replace_log(
    backend: &dyn Backend,
    name: &str,
    content: &[u8],
    capacity: u64,
) -> Result<NewLog, ReplaceError> {
    let temp = temp_name(name);
    let mut file = backend.create(&temp).map_err(ReplaceError::NotReplaced)?;
    file.allocate(capacity.max(content.len() as u64))
        .map_err(ReplaceError::NotReplaced)?;
    file.write_at(0, content)
        .map_err(ReplaceError::NotReplaced)?;
    file.sync().map_err(ReplaceError::NotReplaced)?;
    let log = file
        .into_log(content.len() as u64)
        .map_err(ReplaceError::NotReplaced)?;
    backend
        .rename(&temp, name)
        .map_err(ReplaceError::NotReplaced)?;
    Ok(NewLog {
        log,
        dir_synced: backend.sync_dir(),
    })
}

/// Zeroes `name` from `offset` to its end and syncs it: cuts what recovery judged to
/// lie beyond the log's end. Zeros rather than a shorter file: they are the end marker
/// and keep the preallocation. The sync matters: records appended later at `offset`
/// must never be followed, after another power loss, by stale records of before.
pub fn cut(backend: &dyn Backend, name: &str, offset: u64) -> io::Result<()> {
    let mut file = backend.open(name)?;
    let size = file.len()?;
    if size > offset {
        let zeros = vec![0u8; (size - offset).min(1 << 20) as usize];
        let mut at = offset;
        while at < size {
            let n = (size - at).min(zeros.len() as u64) as usize;
            file.write_at(at, zeros.get(..n).unwrap_or(&[]))?;
            at += n as u64;
        }
    }
    file.sync()
}
