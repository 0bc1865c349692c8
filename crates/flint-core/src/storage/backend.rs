//! The storage seam: the primitives the engine uses on a data directory.
//!
//! A [`Backend`] offers only primitives (create a file, write, sync, rename, sync the
//! directory, map a log, lock). The policy — the order of an atomic replace, where its
//! commit point lies, what must be synced before what — lives in the engine
//! ([`super::replace`], compaction, recovery), so it is written and tested once, against
//! every backend: the real files ([`super::file::FileBackend`]), memory
//! ([`super::memory::MemoryBackend`]) and simulated power loss
//! ([`super::memory::MemoryBackend::crash_image`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Result;

/// Makes what was appended to a log durable; shared with the group-commit leader, which
/// calls it without holding the engine's state lock.
pub trait LogSync: Send + Sync {
    /// Makes every byte appended so far durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
}

/// An open append-only log.
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
    /// A handle that syncs this log.
    fn syncer(&self) -> Arc<dyn LogSync>;
    /// How many bytes the next growth of the file will reserve, when the log is full
    /// enough that the next appends need one (for `doctor` after a full disk).
    fn next_growth(&self) -> u64 {
        0
    }
}

/// A file opened for writing (a temporary file before its rename, or a log to cut).
pub trait StorageFile: Send {
    /// Writes `bytes` at `offset`, extending the file when needed.
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Reserves real blocks for the first `len` bytes (extending the file with zeros),
    /// so that later writes into them cannot fail for lack of space.
    fn allocate(&mut self, len: u64) -> io::Result<()>;
    /// The file's size.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Makes the file's content durable (`fsync`). Its name is durable only after
    /// [`Backend::sync_dir`].
    fn sync(&mut self) -> io::Result<()>;
    /// Turns the file into a log appended after its first `logical_len` bytes.
    fn into_log(self: Box<Self>, logical_len: u64) -> io::Result<Box<dyn LogFile>>;
}

/// The directory's exclusive lock: held until dropped.
pub struct DirLock {
    _guard: Box<dyn Send + Sync>,
}

impl DirLock {
    /// Wraps whatever keeps the lock held (an open, locked file; a flag).
    pub fn new(guard: impl Send + Sync + 'static) -> Self {
        DirLock {
            _guard: Box::new(guard),
        }
    }
}

impl std::fmt::Debug for DirLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirLock")
    }
}

/// A data directory, as the engine sees it: files by name, and the directory itself.
pub trait Backend: Send + Sync {
    /// The directory, for messages.
    fn dir(&self) -> &Path;
    /// The path of a file of the directory, for messages.
    fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }
    /// Takes the directory's exclusive lock.
    fn lock(&self) -> Result<DirLock>;
    /// The whole content of `name`, or `None` when it does not exist.
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// The size of `name`, or `None` when it does not exist.
    fn size(&self, name: &str) -> io::Result<Option<u64>>;
    /// Creates `name` empty (truncating it if it exists), owner-only, for writing.
    fn create(&self, name: &str) -> io::Result<Box<dyn StorageFile>>;
    /// Opens the existing file `name` for writing.
    fn open(&self, name: &str) -> io::Result<Box<dyn StorageFile>>;
    /// Renames `from` to `to`, replacing `to`. Durable only after [`Backend::sync_dir`].
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self) -> io::Result<()>;
    /// Removes `name` if it exists.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Free bytes on the directory's file system.
    fn free_space(&self) -> io::Result<u64>;
    /// Permission bits of the directory.
    fn dir_mode(&self) -> io::Result<u32>;
}
