//! The real backend: files in a directory, the log as a preallocated memory map.
//!
//! Why a memory map: appending a record must survive `SIGKILL` before the call returns,
//! and one `write(2)` per record costs far more than the rest of a check. A copy into a
//! shared mapping of the file puts the bytes in the kernel's page cache at memory speed,
//! which is exactly what a `write(2)` buys. The file is preallocated with
//! `posix_fallocate`, so a full disk shows up as an error when the log grows, never as
//! a `SIGBUS` on a store into a hole. The region past the logical end is zeros, which
//! the reader takes as the end of the log.

#![expect(
    unsafe_code,
    reason = "memory-mapping the log and posix_fallocate/statvfs need FFI"
)]

use std::any::Any;
use std::ffi::CString;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::MmapMut;

use crate::error::{Error, Result};
use crate::storage::backend::{Backend, LogFile, LogSync};
use crate::storage::format::{LOCK_FILE, TEMP_SUFFIX};

/// The first preallocation of a log; it doubles up to [`MAX_GROWTH`] at a time.
const INITIAL_LOG_CAPACITY: u64 = 1 << 20;
const MAX_GROWTH: u64 = 64 << 20;

/// A data directory on the local file system.
#[derive(Debug)]
pub struct FileBackend {
    dir: PathBuf,
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
        }
        Ok(FileBackend { dir })
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn new_file(path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
    }
}

struct LockGuard {
    _file: File,
}

impl Backend for FileBackend {
    fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> Result<Box<dyn Any + Send + Sync>> {
        let path = self.dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        match file.try_lock() {
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
        file.set_len(0)
            .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .map_err(|e| Error::io("write pid to", &path, e))?;
        Ok(Box::new(LockGuard { _file: file }))
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

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let temp = self.dir.join(format!("{name}{TEMP_SUFFIX}"));
        let mut file = Self::new_file(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, self.dir.join(name))?;
        self.sync_dir()
    }

    fn create_log(&self, name: &str, content: &[u8]) -> io::Result<Box<dyn LogFile>> {
        let temp = self.dir.join(format!("{name}{TEMP_SUFFIX}"));
        let file = Self::new_file(&temp)?;
        let capacity = (content.len() as u64 * 2).max(INITIAL_LOG_CAPACITY);
        preallocate(&file, capacity)?;
        (&file).write_all(content)?;
        file.sync_all()?;
        let path = self.dir.join(name);
        fs::rename(&temp, &path)?;
        self.sync_dir()?;
        Ok(Box::new(MappedLog::map(file, content.len() as u64)?))
    }

    fn open_log(&self, name: &str, logical_len: u64) -> io::Result<Box<dyn LogFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join(name))?;
        Ok(Box::new(MappedLog::map(file, logical_len)?))
    }

    fn cut_log(&self, name: &str, offset: u64) -> io::Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join(name))?;
        let size = file.metadata()?.len();
        if size > offset {
            // Zero rather than shrink: the zeros are the end marker and keep the
            // preallocation.
            let zeros = vec![0u8; (size - offset).min(1 << 20) as usize];
            let mut at = offset;
            while at < size {
                let n = (size - at).min(zeros.len() as u64) as usize;
                std::os::unix::fs::FileExt::write_all_at(&file, zeros.get(..n).unwrap_or(&[]), at)?;
                at += n as u64;
            }
        }
        file.sync_all()
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.dir.join(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn free_space(&self) -> io::Result<u64> {
        let path = CString::new(self.dir.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is a valid NUL-terminated string and `stat` a valid out pointer.
        let rc = unsafe { libc::statvfs(path.as_ptr(), &raw mut stat) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
    }

    fn dir_mode(&self) -> io::Result<u32> {
        Ok(fs::metadata(&self.dir)?.permissions().mode() & 0o7777)
    }
}

/// Reserves real blocks for `len` bytes of `file`, so stores into the map cannot fault.
fn preallocate(file: &File, len: u64) -> io::Result<()> {
    let len = i64::try_from(len).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a plain syscall on an open file descriptor.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
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
        if size < len.max(INITIAL_LOG_CAPACITY) {
            preallocate(&file, len.max(INITIAL_LOG_CAPACITY))?;
        }
        // SAFETY: the data directory is locked by this process, so no one else resizes
        // or writes the file while it is mapped; we only grow it, and remap after.
        let map = unsafe { MmapMut::map_mut(&file)? };
        Ok(MappedLog {
            file: Arc::new(file),
            map,
            len,
        })
    }

    fn grow(&mut self, needed: u64) -> io::Result<()> {
        let capacity = self.map.len() as u64;
        let mut new_capacity = capacity;
        while new_capacity < needed {
            new_capacity += capacity.clamp(INITIAL_LOG_CAPACITY, MAX_GROWTH);
        }
        preallocate(&self.file, new_capacity)?;
        // SAFETY: as in `map`; the old map is dropped when replaced, after the new one
        // exists, and no reference into it outlives this call.
        self.map = unsafe { MmapMut::map_mut(&*self.file)? };
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
}
