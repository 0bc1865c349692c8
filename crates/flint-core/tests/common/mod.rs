//! Helpers shared by the integration tests: a storage backend with injectable faults
//! and sync counting, and shortcuts for opening limiters on a manual clock.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flint_core::backend::{Backend, DirLock, FileBackend, LogFile, LogSync, StorageFile};
use flint_core::{Algorithm, Limiter, ManualClock, Options, Quota, SyncMode};

/// 2023-11-14T22:13:20Z, the manual clock's start in every test.
pub const START: u64 = 1_700_000_000_000_000_000;

/// Switches and counters shared by a [`FaultyBackend`] and the logs it opens.
#[derive(Default)]
pub struct Faults {
    /// Appends fail with `ENOSPC` while set.
    pub disk_full: AtomicBool,
    /// Syncs fail with `EIO` while set.
    pub fail_sync: AtomicBool,
    /// Atomic writes (snapshots) fail while set.
    pub fail_write_atomic: AtomicBool,
    /// Log replacement (the last step of compaction) fails while set.
    pub fail_create_log: AtomicBool,
    /// Syncs that reached the disk.
    pub syncs: AtomicU64,
    /// How long each sync takes, in microseconds (to make overlap certain).
    pub sync_delay_us: AtomicU64,
}

/// The real file backend with faults injected through [`Faults`].
pub struct FaultyBackend {
    inner: FileBackend,
    pub faults: Arc<Faults>,
}

impl FaultyBackend {
    pub fn open(dir: &Path) -> (Arc<FaultyBackend>, Arc<Faults>) {
        let faults = Arc::new(Faults::default());
        let backend = FaultyBackend {
            inner: FileBackend::open(dir).expect("open the data directory"),
            faults: Arc::clone(&faults),
        };
        (Arc::new(backend), faults)
    }
}

fn injected(kind: io::ErrorKind, what: &str) -> io::Error {
    io::Error::new(kind, format!("injected failure: {what}"))
}

struct FaultyLog {
    inner: Box<dyn LogFile>,
    faults: Arc<Faults>,
}

struct FaultySync {
    inner: Arc<dyn LogSync>,
    faults: Arc<Faults>,
}

impl LogSync for FaultySync {
    fn sync(&self) -> io::Result<()> {
        let delay = self.faults.sync_delay_us.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_micros(delay));
        }
        if self.faults.fail_sync.load(Ordering::Relaxed) {
            return Err(injected(io::ErrorKind::Other, "fdatasync failed (EIO)"));
        }
        self.inner.sync()?;
        self.faults.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl LogFile for FaultyLog {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.faults.disk_full.load(Ordering::Relaxed) {
            return Err(injected(
                io::ErrorKind::StorageFull,
                "no space left on device",
            ));
        }
        self.inner.append(bytes)
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_from(&self, from: u64) -> io::Result<Vec<u8>> {
        self.inner.read_from(from)
    }
    fn syncer(&self) -> Arc<dyn LogSync> {
        Arc::new(FaultySync {
            inner: self.inner.syncer(),
            faults: Arc::clone(&self.faults),
        })
    }
}

/// A file of a [`FaultyBackend`]: writes fail as the switch for its name says.
struct FaultyFile {
    inner: Box<dyn StorageFile>,
    faults: Arc<Faults>,
    /// The switch that makes writes to this file fail, if any.
    fail: Option<fn(&Faults) -> &AtomicBool>,
}

impl FaultyFile {
    fn check(&self) -> io::Result<()> {
        match self.fail {
            Some(switch) if switch(&self.faults).load(Ordering::Relaxed) => Err(injected(
                io::ErrorKind::StorageFull,
                "no space left on device",
            )),
            _ => Ok(()),
        }
    }
}

impl StorageFile for FaultyFile {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.check()?;
        self.inner.write_at(offset, bytes)
    }
    fn allocate(&mut self, len: u64) -> io::Result<()> {
        self.check()?;
        self.inner.allocate(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn sync(&mut self) -> io::Result<()> {
        self.inner.sync()
    }
    fn into_log(self: Box<Self>, logical_len: u64) -> io::Result<Box<dyn LogFile>> {
        let log = self.inner.into_log(logical_len)?;
        Ok(Box::new(FaultyLog {
            inner: log,
            faults: self.faults,
        }))
    }
}

impl FaultyBackend {
    fn wrap(&self, name: &str, file: Box<dyn StorageFile>) -> Box<dyn StorageFile> {
        let fail: Option<fn(&Faults) -> &AtomicBool> = match name {
            "flint.snapshot.tmp" => Some(|f| &f.fail_write_atomic),
            "flint.aof.tmp" => Some(|f| &f.fail_create_log),
            _ => None,
        };
        Box::new(FaultyFile {
            inner: file,
            faults: Arc::clone(&self.faults),
            fail,
        })
    }
}

impl Backend for FaultyBackend {
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
        self.inner.create(name).map(|f| self.wrap(name, f))
    }
    fn open(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        self.inner.open(name).map(|f| self.wrap(name, f))
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self) -> io::Result<()> {
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

/// Options on a manual clock at [`START`].
pub fn manual_options(sync: SyncMode) -> (Options, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(START));
    let options = Options::default().sync(sync).clock(clock.clone());
    (options, clock)
}

/// Opens `dir` on a manual clock at [`START`] (or at `clock` when given).
pub fn open_at(dir: &Path, sync: SyncMode, clock: &Arc<ManualClock>) -> Limiter {
    let options = Options::default().sync(sync).clock(clock.clone());
    Limiter::open(dir, options).expect("open the limiter")
}

/// Opens `dir` through a [`FaultyBackend`].
pub fn open_faulty(dir: &Path, sync: SyncMode) -> (Limiter, Arc<Faults>, Arc<ManualClock>) {
    let (backend, faults) = FaultyBackend::open(dir);
    let (options, clock) = manual_options(sync);
    let options = options.backend(backend);
    (
        Limiter::open(dir, options).expect("open the limiter"),
        faults,
        clock,
    )
}

pub fn quota(rate: u64, per: &str, algorithm: Algorithm) -> Quota {
    Quota::new(rate, per.parse().expect("a valid period"), algorithm).expect("a valid quota")
}

/// A fresh data directory inside a temporary directory.
pub fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join(".flint");
    (tmp, dir)
}

/// The logical end of the log (header plus records), as the engine reports it.
pub fn log_len(limiter: &Limiter) -> u64 {
    limiter.doctor().expect("doctor").log_bytes
}
