//! The real backend: files in a directory, the log as a preallocated memory map.
//!
//! Why a memory map: appending a record must survive `SIGKILL` before the call returns,
//! and one `write(2)` per record costs far more than the rest of a check. A copy into a
//! shared mapping of the file puts the bytes in the kernel's page cache at memory speed,
//! which is exactly what a `write(2)` buys. The file is preallocated with
//! `posix_fallocate`, so a full disk shows up as an error when the log grows, never as
//! a `SIGBUS` on a store into a hole. The region past the logical end is zeros, which
//! the reader takes as the end of the log.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use memmap2::MmapMut;

use crate::error::{Error, Result};
use crate::storage::backend::{Backend, DirLock, LogFile, LogSync, StorageFile};
use crate::storage::format::LOCK_FILE;
use crate::storage::sys;

/// The smallest preallocation of a log, and the smallest step it grows by.
pub const MIN_LOG_GROWTH: u64 = 1 << 20;
/// The largest step a log grows by. Growth is bounded (a quarter of the log, between
/// these two), so that after a full disk a modest amount of freed space is enough.
pub const MAX_LOG_GROWTH: u64 = 16 << 20;

/// How much a log of `capacity` bytes grows by to hold `needed` bytes.
pub(crate) fn growth_step(capacity: u64) -> u64 {
    (capacity / 4).clamp(MIN_LOG_GROWTH, MAX_LOG_GROWTH)
}

/// A data directory on the local file system.
#[derive(Debug)]
pub struct FileBackend {
    dir: PathBuf,
    /// The directory, open for `fsync`: opened once, so syncing it after a rename needs
    /// no new descriptor (an `EMFILE` there would come after the commit point).
    handle: File,
}

impl FileBackend {
    /// Opens `dir`, creating it owner-only (0700) when it does not exist. An existing
    /// directory's permissions are left as they are (`doctor` reports them).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        if !dir.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| Error::io("create data directory", &dir, e))?;
            // The new directory's own entry must survive a power loss too, or the next
            // open would start afresh with every quota full.
            let parent = match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            File::open(&parent)
                .and_then(|p| p.sync_all())
                .map_err(|e| Error::io("sync the parent directory of", &dir, e))?;
        }
        let handle = File::open(&dir).map_err(|e| Error::io("open data directory", &dir, e))?;
        Ok(FileBackend { dir, handle })
    }
}

impl Backend for FileBackend {
    fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    fn lock(&self) -> Result<DirLock> {
        let path = self.dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        // Registered before it is locked, so a fork at any moment closes the child's copy.
        let file = sys::LockFd::new(file);
        let locked = file
            .file()
            .map_err(|e| Error::io("lock", &path, e))?
            .try_lock();
        match locked {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let pid = fs::read_to_string(&path)
                    .ok()
                    .and_then(|text| text.trim().parse().ok());
                return Err(Error::Locked {
                    dir: self.dir.clone(),
                    pid,
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
        }
        // The pid is for the message a second opener gets; the lock itself is the flock.
        let mut handle = file.file().map_err(|e| Error::io("lock", &path, e))?;
        handle
            .set_len(0)
            .and_then(|()| handle.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .map_err(|e| Error::io("write pid to", &path, e))?;
        Ok(DirLock::new(file))
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.dir.join(name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn size(&self, name: &str) -> io::Result<Option<u64>> {
        match fs::metadata(self.dir.join(name)) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(self.dir.join(name))?;
        Ok(Box::new(DiskFile { file }))
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join(name))?;
        Ok(Box::new(DiskFile { file }))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.dir.join(from), self.dir.join(to))
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.handle.sync_all()
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.dir.join(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn free_space(&self) -> io::Result<u64> {
        sys::free_space(&self.dir)
    }

    fn dir_mode(&self) -> io::Result<u32> {
        Ok(fs::metadata(&self.dir)?.permissions().mode() & 0o7777)
    }
}

/// A file of the data directory, open for writing.
struct DiskFile {
    file: File,
}

impl StorageFile for DiskFile {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, offset)
    }

    fn allocate(&mut self, len: u64) -> io::Result<()> {
        sys::preallocate(&self.file, len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn into_log(self: Box<Self>, logical_len: u64) -> io::Result<Box<dyn LogFile>> {
        Ok(Box::new(MappedLog::map(self.file, logical_len)?))
    }
}

/// A log file mapped into memory; appends are copies into the map.
struct MappedLog {
    file: Arc<File>,
    map: MmapMut,
    len: u64,
}

struct FileSync(Arc<File>);

impl LogSync for FileSync {
    fn sync(&self) -> io::Result<()> {
        // On Linux fdatasync writes back the file's dirty pages, including those dirtied
        // through a shared mapping.
        self.0.sync_data()
    }
}

impl MappedLog {
    fn map(file: File, len: u64) -> io::Result<Self> {
        let size = file.metadata()?.len();
        let wanted = len.max(MIN_LOG_GROWTH);
        if size < wanted {
            sys::preallocate(&file, wanted)?;
        }
        let map = sys::map_shared(&file)?;
        Ok(MappedLog {
            file: Arc::new(file),
            map,
            len,
        })
    }

    fn grow(&mut self, needed: u64) -> io::Result<()> {
        let capacity = self.map.len() as u64;
        let step = growth_step(capacity);
        let wanted = capacity + step.max(needed.saturating_sub(capacity));
        if let Err(e) = sys::preallocate(&self.file, wanted) {
            // Out of space for a full step: take only what this append needs, rounded
            // up to the smallest step, so a little freed space is enough to go on.
            let minimal = needed.div_ceil(MIN_LOG_GROWTH) * MIN_LOG_GROWTH;
            if minimal >= wanted {
                return Err(e);
            }
            sys::preallocate(&self.file, minimal)?;
        }
        // The old map is dropped when replaced, after the new one exists, and no
        // reference into it outlives this call.
        self.map = sys::map_shared(&self.file)?;
        Ok(())
    }
}

impl LogFile for MappedLog {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let end = self.len + bytes.len() as u64;
        if end > self.map.len() as u64 {
            self.grow(end)?;
        }
        let target = self
            .map
            .get_mut(self.len as usize..end as usize)
            .ok_or_else(|| io::Error::other("log map shorter than its length"))?;
        target.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn read_from(&self, from: u64) -> io::Result<Vec<u8>> {
        self.map
            .get(from as usize..self.len as usize)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::Error::other("read past the end of the log"))
    }

    fn syncer(&self) -> Arc<dyn LogSync> {
        Arc::new(FileSync(Arc::clone(&self.file)))
    }

    fn next_growth(&self) -> u64 {
        growth_step(self.map.len() as u64)
    }
}
