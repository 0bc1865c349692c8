//! A `sync=always` check returns only after a sync of the log that holds its record.
//!
//! The race this protects against: a group-commit leader took the syncer of the log
//! in use, then gathered; meanwhile a compaction swapped in a new log, a caller
//! appended to it and parked, and the leader's sync of the *old* log released that
//! caller, whose record in the new log no sync had covered.
//!
//! The backend wraps the real files and tracks, for each log, how far a sync could
//! have made it durable (generously: the length appended when the sync returned).
//! Each append notes (log, end offset) in a thread-local, so after `check` returns
//! the checking thread knows whether a sync of its own log covered its record. Checks
//! race a compaction loop for at most two and a half seconds, stopping at the first
//! violation.

mod common;

use std::cell::Cell;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flint_core::backend::{Backend, DirLock, FileBackend, LogFile, LogSync, StorageFile};
use flint_core::{Algorithm, Limiter, Options, SyncMode};

/// How long checks race compactions when no violation shows up.
const RACE_FOR: Duration = Duration::from_millis(2500);
/// Threads checking, each its own key.
const THREADS: usize = 8;
/// A slow disk: longer than the leader's longest gathering (200 µs), so leaders gather.
const SYNC_DELAY: Duration = Duration::from_micros(800);

thread_local! {
    /// The log (index into `TrackingBackend::logs`) and end offset of this thread's
    /// last append.
    static LAST_APPEND: Cell<(usize, u64)> = const { Cell::new((usize::MAX, 0)) };
}

#[derive(Default)]
struct Track {
    appended: AtomicU64,
    durable: AtomicU64,
}

struct TrackingBackend {
    inner: FileBackend,
    /// Every log opened, in order; the last one is the newest.
    logs: Arc<Mutex<Vec<Arc<Track>>>>,
}

struct TrackedFile {
    inner: Box<dyn StorageFile>,
    logs: Arc<Mutex<Vec<Arc<Track>>>>,
}

struct TrackedLog {
    inner: Box<dyn LogFile>,
    id: usize,
    track: Arc<Track>,
}

struct TrackedSync {
    inner: Arc<dyn LogSync>,
    track: Arc<Track>,
}

impl LogSync for TrackedSync {
    fn sync(&self) -> io::Result<()> {
        std::thread::sleep(SYNC_DELAY);
        self.inner.sync()?;
        // Generous: everything appended by the time the sync returned is durable.
        let len = self.track.appended.load(Ordering::SeqCst);
        self.track.durable.fetch_max(len, Ordering::SeqCst);
        Ok(())
    }
}

impl LogFile for TrackedLog {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.append(bytes)?;
        let end = self.inner.len();
        self.track.appended.store(end, Ordering::SeqCst);
        LAST_APPEND.with(|c| c.set((self.id, end)));
        Ok(())
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_from(&self, from: u64) -> io::Result<Vec<u8>> {
        self.inner.read_from(from)
    }
    fn syncer(&self) -> Arc<dyn LogSync> {
        Arc::new(TrackedSync {
            inner: self.inner.syncer(),
            track: Arc::clone(&self.track),
        })
    }
}

impl StorageFile for TrackedFile {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_at(offset, bytes)
    }
    fn allocate(&mut self, len: u64) -> io::Result<()> {
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
        // A log starts out durable: a new one was synced before it is mapped, and
        // recovery syncs the one it opens before using it.
        let track = Arc::new(Track::default());
        track.appended.store(logical_len, Ordering::SeqCst);
        track.durable.store(logical_len, Ordering::SeqCst);
        let mut logs = self.logs.lock().unwrap();
        logs.push(Arc::clone(&track));
        Ok(Box::new(TrackedLog {
            inner: log,
            id: logs.len() - 1,
            track,
        }))
    }
}

impl TrackingBackend {
    fn wrap(&self, file: Box<dyn StorageFile>) -> Box<dyn StorageFile> {
        Box::new(TrackedFile {
            inner: file,
            logs: Arc::clone(&self.logs),
        })
    }
}

impl Backend for TrackingBackend {
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
        self.inner.create(name).map(|f| self.wrap(f))
    }
    fn open(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        self.inner.open(name).map(|f| self.wrap(f))
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

#[test]
fn a_check_racing_compactions_returns_only_after_a_sync_of_its_own_log() {
    let (_tmp, dir) = common::data_dir();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let backend = Arc::new(TrackingBackend {
        inner: FileBackend::open(&dir).unwrap(),
        logs: Arc::clone(&logs),
    });
    let options = Options::default()
        .sync(SyncMode::Always)
        .backend(backend as Arc<dyn Backend>);
    let limiter = Arc::new(Limiter::open(&dir, options).unwrap());
    let quota = common::quota(1_000_000_000, "1s", Algorithm::TokenBucket);
    for t in 0..THREADS {
        limiter.limit(&format!("k{t}"), quota).unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let checks = Arc::new(AtomicUsize::new(0));
    let checkers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (limiter, logs, stop, violations, checks) = (
                Arc::clone(&limiter),
                Arc::clone(&logs),
                Arc::clone(&stop),
                Arc::clone(&violations),
                Arc::clone(&checks),
            );
            std::thread::spawn(move || {
                let key = format!("k{t}");
                while !stop.load(Ordering::Relaxed) {
                    assert!(limiter.check(&key, 1).unwrap().allowed);
                    checks.fetch_add(1, Ordering::Relaxed);
                    let (id, end) = LAST_APPEND.with(Cell::get);
                    // Durability first, then whether a newer log exists: a compaction
                    // copies the tail into a new log and syncs it, which covers the
                    // record too.
                    let track = Arc::clone(&logs.lock().unwrap()[id]);
                    let durable = track.durable.load(Ordering::SeqCst);
                    let newest = logs.lock().unwrap().len() - 1;
                    if durable < end && newest == id {
                        violations.lock().unwrap().push(format!(
                            "check of {key} returned, but its record (log #{id}, ending at offset {end}) was never synced: that log is durable only through offset {durable}"
                        ));
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let compactor = {
        let (limiter, stop) = (Arc::clone(&limiter), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut compactions = 0u64;
            while !stop.load(Ordering::Relaxed) {
                limiter.compact().unwrap();
                compactions += 1;
            }
            compactions
        })
    };

    let started = Instant::now();
    while started.elapsed() < RACE_FOR && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for checker in checkers {
        checker.join().unwrap();
    }
    let compactions = compactor.join().unwrap();
    let checks = checks.load(Ordering::Relaxed);
    let violations = violations.lock().unwrap();
    assert!(
        violations.is_empty(),
        "after {checks} checks and {compactions} compactions:\n{}",
        violations.join("\n")
    );
    assert!(
        compactions >= 5 && checks >= 100,
        "the race barely ran: {checks} checks, {compactions} compactions"
    );
    limiter.close().unwrap();
}
