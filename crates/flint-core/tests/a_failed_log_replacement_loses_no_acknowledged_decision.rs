//! Compaction replaces the log; a failure while it does never loses a decision that a
//! `sync=always` call acknowledged.
//!
//! The defect this protects against: the log replacement failed *after* its rename
//! (opening the directory for its fsync hit `EMFILE`), the engine kept appending to the
//! old, now unlinked, log, and every later acknowledged decision was gone on reopen.
//!
//! Now the directory is opened once, so a replacement needs one descriptor: with none
//! free it fails before its commit point and the old log goes on; with one free it
//! completes. And when the directory sync does fail after the rename (a wrapper backend
//! injects it), the engine installs the new log and stops accepting writes.

#![expect(unsafe_code, reason = "getrlimit and setrlimit")]

mod common;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use flint_core::backend::{Backend, DirLock, FileBackend, StorageFile};
use flint_core::{Algorithm, Error, Limiter, Options, SyncMode};

/// The descriptor limit is per process: the tests of this file run one at a time, so
/// none of them opens files while another has lowered it.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn nofile_limit() -> libc::rlimit {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out pointer.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) },
        0
    );
    limit
}

fn set_nofile_limit(limit: libc::rlimit) {
    // SAFETY: a valid pointer to an initialized rlimit.
    assert_eq!(
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) },
        0,
        "setrlimit: {}",
        io::Error::last_os_error()
    );
}

/// Runs `f` with exactly `free` more descriptors available to the process: the limit
/// is set just above the lowest free descriptor number. Restored before returning.
fn with_free_descriptors<T>(free: u64, f: impl FnOnce() -> T) -> T {
    let probe = std::fs::File::open("/dev/null").unwrap();
    let lowest_free = std::os::fd::AsRawFd::as_raw_fd(&probe) as u64;
    drop(probe);
    let before = nofile_limit();
    set_nofile_limit(libc::rlimit {
        rlim_cur: lowest_free + free,
        rlim_max: before.rlim_max,
    });
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    set_nofile_limit(before);
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn allowed(limiter: &Limiter) -> u64 {
    limiter.status("k").unwrap().unwrap().counters.allowed
}

/// Checks `n` times, each of which must be acknowledged (allowed and synced).
fn checks(limiter: &Limiter, n: u64) {
    for _ in 0..n {
        assert!(limiter.check("k", 1).unwrap().allowed);
    }
}

#[test]
fn descriptors_running_out_during_compaction_lose_no_acknowledged_decision() {
    let _serial = serial();
    let (_tmp, dir) = common::data_dir();
    let options = Options::default().sync(SyncMode::Always);
    let limiter = Limiter::open(&dir, options.clone()).unwrap();
    limiter
        .limit("k", common::quota(1000, "1h", Algorithm::TokenBucket))
        .unwrap();
    checks(&limiter, 3);

    // No descriptor free: the first file compaction creates fails, before its commit
    // point. Nothing changed: the old log is still in use and writable.
    let log_before = common::log_len(&limiter);
    let error = with_free_descriptors(0, || limiter.compact()).unwrap_err();
    assert!(
        matches!(&error, Error::Io { source, .. } if source.raw_os_error() == Some(libc::EMFILE)),
        "{error:?}"
    );
    assert_eq!(
        common::log_len(&limiter),
        log_before,
        "the old log is still the one in use"
    );
    checks(&limiter, 4);

    // One descriptor free (what made the old engine fail after its rename): enough,
    // since the directory's fsync needs no new descriptor.
    let report = with_free_descriptors(1, || limiter.compact());
    let report = report.unwrap_or_else(|e| {
        panic!(
            "compaction with one free descriptor failed: {e} (engine poisoned: {})",
            matches!(limiter.check("k", 1), Err(Error::Poisoned { .. }))
        )
    });
    assert_eq!(report.keys, 1);
    assert_eq!(
        common::log_len(&limiter),
        report.log_bytes_after,
        "the new log is the one in use"
    );
    checks(&limiter, 5);

    let acknowledged = allowed(&limiter);
    assert_eq!(acknowledged, 12);
    limiter.close().unwrap();
    let limiter = Limiter::open(&dir, options).unwrap();
    assert_eq!(
        allowed(&limiter),
        acknowledged,
        "acknowledged decisions were lost on reopen"
    );
    checks(&limiter, 1);
    limiter.close().unwrap();
}

/// The real files, with the directory's sync failing once after the log's rename.
struct DirSyncFailsAfterLogRename {
    inner: FileBackend,
    armed: AtomicBool,
    log_renamed: AtomicBool,
}

impl Backend for DirSyncFailsAfterLogRename {
    fn dir(&self) -> &Path {
        self.inner.dir()
    }
    fn lock(&self) -> flint_core::Result<DirLock> {
        self.inner.lock()
    }
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        self.inner.read(name)
    }
    fn size(&self, name: &str) -> io::Result<Option<u64>> {
        self.inner.size(name)
    }
    fn create(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        self.inner.create(name)
    }
    fn open(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        self.inner.open(name)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.inner.rename(from, to)?;
        if to == "flint.aof" && self.armed.load(Ordering::SeqCst) {
            self.log_renamed.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
    fn sync_dir(&self) -> io::Result<()> {
        if self.log_renamed.swap(false, Ordering::SeqCst) {
            self.armed.store(false, Ordering::SeqCst);
            return Err(io::Error::other(
                "injected failure: fsync of the directory (EIO)",
            ));
        }
        self.inner.sync_dir()
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }
    fn free_space(&self) -> io::Result<u64> {
        self.inner.free_space()
    }
    fn dir_mode(&self) -> io::Result<u32> {
        self.inner.dir_mode()
    }
}

#[test]
fn a_directory_sync_failing_after_the_log_rename_stops_writes_and_loses_nothing() {
    let _serial = serial();
    let (_tmp, dir) = common::data_dir();
    let backend = Arc::new(DirSyncFailsAfterLogRename {
        inner: FileBackend::open(&dir).unwrap(),
        armed: AtomicBool::new(false),
        log_renamed: AtomicBool::new(false),
    });
    let options = Options::default().sync(SyncMode::Always);
    let limiter = Limiter::open(
        &dir,
        options
            .clone()
            .backend(Arc::clone(&backend) as Arc<dyn Backend>),
    )
    .unwrap();
    limiter
        .limit("k", common::quota(1000, "1h", Algorithm::TokenBucket))
        .unwrap();
    checks(&limiter, 3);

    backend.armed.store(true, Ordering::SeqCst);
    let error = limiter.compact().unwrap_err();
    assert!(
        !backend.armed.load(Ordering::SeqCst),
        "the directory sync after the log's rename never ran"
    );
    assert!(matches!(error, Error::Io { .. }), "{error:?}");
    assert!(error.to_string().contains("injected failure"), "{error}");

    // Whatever the engine answers now, what it acknowledges must survive a reopen.
    let later: Vec<_> = (0..5).map(|_| limiter.check("k", 1)).collect();
    let acknowledged = 3 + later
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|d| d.allowed))
        .count() as u64;
    let report = limiter.doctor().unwrap();
    drop(limiter);
    let reopened = Limiter::open(&dir, options).unwrap();
    assert_eq!(
        allowed(&reopened),
        acknowledged,
        "acknowledged decisions were lost on reopen"
    );

    // The rename might not survive a power loss: the engine refused every later write.
    for result in &later {
        assert!(
            matches!(result, Err(Error::Poisoned { .. })),
            "a write after the failed directory sync was accepted: {result:?}"
        );
    }
    assert!(!report.ok, "doctor reports the stopped engine");
    checks(&reopened, 1);
    reopened.close().unwrap();
}
