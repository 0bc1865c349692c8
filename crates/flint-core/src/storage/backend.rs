//! The storage seam: everything the engine does to disk goes through [`Backend`], so
//! tests can inject failures (a full disk, a failing sync) and count syncs.

use std::any::Any;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Result;

/// Syncs a log file to stable storage; shared with the group-commit leader, which
/// calls it without holding the engine's state lock.
pub trait LogSync: Send + Sync {
    /// Makes every byte appended so far durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
}

/// An open append-only log file.
pub trait LogFile: Send {
    /// Appends `bytes` at the logical end. On return the bytes survive the process
    /// being killed (they are in the kernel's page cache), but not yet a power loss.
    /// On error nothing was appended.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// The logical length: the header plus every appended record.
    fn len(&self) -> u64;
    /// Whether nothing follows the header.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The bytes from `from` to the logical end.
    fn read_from(&self, from: u64) -> io::Result<Vec<u8>>;
    /// A handle that syncs this file.
    fn syncer(&self) -> Arc<dyn LogSync>;
}

/// A data directory, as the engine sees it.
pub trait Backend: Send + Sync {
    /// The directory, for messages.
    fn dir(&self) -> &Path;
    /// The path of a file of the directory, for messages.
    fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }
    /// Takes the directory's exclusive lock; the lock is held until the guard drops.
    fn lock(&self) -> Result<Box<dyn Any + Send + Sync>>;
    /// The whole content of `name`, or `None` when it does not exist.
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// The size of `name` on disk, or `None` when it does not exist.
    fn size(&self, name: &str) -> io::Result<Option<u64>>;
    /// Replaces `name` with `bytes` atomically: temp file, fsync, rename, directory
    /// fsync. A crash leaves either the old or the new content.
    fn write_atomic(&self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Replaces the log `name` atomically with a new log holding `content`, and opens
    /// it for appending after `content`.
    fn create_log(&self, name: &str, content: &[u8]) -> io::Result<Box<dyn LogFile>>;
    /// Opens the existing log `name` for appending at `logical_len`.
    fn open_log(&self, name: &str, logical_len: u64) -> io::Result<Box<dyn LogFile>>;
    /// Zeroes the log `name` from `offset` to its end and syncs: cuts a torn tail.
    fn cut_log(&self, name: &str, offset: u64) -> io::Result<()>;
    /// Removes `name` if it exists.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Free bytes on the directory's file system.
    fn free_space(&self) -> io::Result<u64>;
    /// Permission bits of the directory.
    fn dir_mode(&self) -> io::Result<u32>;
}
