//! The engine's only unsafe code: memory-mapping the log, `posix_fallocate`, `statvfs`
//! and the fork handler. Every other module forbids `unsafe`.

#![allow(
    unsafe_code,
    reason = "the FFI calls of the engine live here and only here"
)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Once;

use memmap2::{Advice, MmapMut};

/// Reserves real blocks for the first `len` bytes of `file` (extending it with zeros),
/// so stores into a mapping of it cannot fault for lack of space.
pub(crate) fn preallocate(file: &File, len: u64) -> io::Result<()> {
    let len = i64::try_from(len).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a plain syscall on an open file descriptor.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Maps the whole of `file` shared and writable. The mapping is not inherited by a
/// forked child (`MADV_DONTFORK`): a child must never write the parent's log.
pub(crate) fn map_shared(file: &File) -> io::Result<MmapMut> {
    // SAFETY: the data directory is locked by this process, so no other process
    // resizes or writes the file while it is mapped; the engine only grows it, and
    // remaps after growing.
    let map = unsafe { MmapMut::map_mut(file)? };
    map.advise(Advice::DontFork)?;
    Ok(map)
}

/// Free bytes on the file system holding `path`.
pub(crate) fn free_space(path: &Path) -> io::Result<u64> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `statvfs` is plain old data; all zeros is a valid value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `stat` a valid out pointer.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &raw mut stat) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// Incremented in the child after every `fork()`. A limiter remembers the value it was
/// opened under, so in a forked child it knows it is not its own.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Descriptors of the locks this process holds (-1: a free slot). The child of a fork
/// closes them at once, so it never keeps its parent's data directories locked. A
/// process holding more than 64 data directories at once leaves the rest to the child
/// (it holds them until it exits or execs: the descriptors are close-on-exec).
static LOCK_FDS: [AtomicI32; 64] = [const { AtomicI32::new(-1) }; 64];

extern "C" fn after_fork_in_child() {
    // Only async-signal-safe work here: atomics and close(2). Closing a descriptor does
    // not unlock the `flock` (the parent's descriptor of the same open file keeps it);
    // it only stops the child from holding it too.
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
    for slot in &LOCK_FDS {
        let fd = slot.swap(-1, Ordering::SeqCst);
        if fd >= 0 {
            // SAFETY: the descriptor was registered by a live lock guard, which will not
            // close it again in this process (see `LockFd::drop`).
            unsafe { libc::close(fd) };
        }
    }
}

/// The current fork generation (see [`watch_forks`]).
pub(crate) fn fork_generation() -> u64 {
    FORK_GENERATION.load(Ordering::Acquire)
}

/// Registers the fork handler, once per process.
pub(crate) fn watch_forks() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the handler only touches atomics and calls close(2), which is
        // async-signal-safe as the child side of fork requires.
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        }
    });
}

/// An open lock file whose descriptor a forked child closes (see
/// [`after_fork_in_child`]).
pub(crate) struct LockFd {
    file: Option<File>,
    slot: Option<usize>,
    generation: u64,
}

impl LockFd {
    /// Registers `file` (before it is locked) so that forked children close it.
    pub(crate) fn new(file: File) -> Self {
        watch_forks();
        let fd: RawFd = file.as_raw_fd();
        let slot = LOCK_FDS.iter().position(|slot| {
            slot.compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        LockFd {
            file: Some(file),
            slot,
            generation: fork_generation(),
        }
    }
}

impl LockFd {
    /// The open lock file (only `drop` takes it out).
    pub(crate) fn file(&self) -> io::Result<&File> {
        self.file
            .as_ref()
            .ok_or_else(|| io::Error::other("the lock file was closed"))
    }
}

impl Drop for LockFd {
    fn drop(&mut self) {
        if fork_generation() != self.generation {
            // A forked child: the handler already closed the descriptor (or, with every
            // slot taken, the child must not release what the parent holds).
            std::mem::forget(self.file.take());
            return;
        }
        if let Some(slot) = self.slot.and_then(|i| LOCK_FDS.get(i)) {
            slot.store(-1, Ordering::SeqCst);
        }
        if let Some(file) = self.file.take() {
            // Unlock explicitly: a child being spawned at this moment shares the open
            // file (until its exec closes it), and would otherwise hold the lock on.
            let _ = file.unlock();
        }
    }
}

/// The process's resident memory in bytes, from `/proc/self/statm` (Linux); `None`
/// elsewhere.
pub(crate) fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf reads a constant of the system; it has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// Hands memory the allocator holds free back to the system, after many keys were
/// dropped at once: glibc's allocator keeps freed small blocks in the process unless
/// asked (`malloc_trim`). Elsewhere, nothing to do.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists, under its locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
