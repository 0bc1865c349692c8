//! `close()` waits for a compaction running on another thread: otherwise it would
//! release the directory's lock while that compaction is between capture and writing
//! its snapshot, and its stale snapshot would later replace the snapshot of whoever
//! opened the directory next. Every wait is bounded.
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flint_core::backend::{Backend, DirLock, MemoryBackend, StorageFile};
use flint_core::{Algorithm, Limiter, Options, Quota};

static ARMED: AtomicBool = AtomicBool::new(false);
static PAUSED: AtomicBool = AtomicBool::new(false);
static RESUME: AtomicBool = AtomicBool::new(false);

struct Hooked(MemoryBackend);
impl Backend for Hooked {
    fn dir(&self) -> &Path {
        self.0.dir()
    }
    fn lock(&self) -> flint_core::Result<DirLock> {
        self.0.lock()
    }
    fn read(&self, n: &str) -> io::Result<Option<Vec<u8>>> {
        self.0.read(n)
    }
    fn size(&self, n: &str) -> io::Result<Option<u64>> {
        self.0.size(n)
    }
    fn create(&self, n: &str) -> io::Result<Box<dyn StorageFile>> {
        if n == "flint.snapshot.tmp" && ARMED.swap(false, Ordering::SeqCst) {
            PAUSED.store(true, Ordering::SeqCst);
            for _ in 0..20_000 {
                if RESUME.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.0.create(n)
    }
    fn open(&self, n: &str) -> io::Result<Box<dyn StorageFile>> {
        self.0.open(n)
    }
    fn rename(&self, f: &str, t: &str) -> io::Result<()> {
        self.0.rename(f, t)
    }
    fn sync_dir(&self) -> io::Result<()> {
        self.0.sync_dir()
    }
    fn remove(&self, n: &str) -> io::Result<()> {
        self.0.remove(n)
    }
    fn free_space(&self) -> io::Result<u64> {
        self.0.free_space()
    }
    fn dir_mode(&self) -> io::Result<u32> {
        self.0.dir_mode()
    }
}

#[test]
fn a_compaction_running_across_close_never_overwrites_the_next_opener_s_snapshot() {
    let mem = MemoryBackend::new();
    let backend: Arc<dyn Backend> = Arc::new(Hooked(mem.clone()));
    let options = Options::default().backend(Arc::clone(&backend));
    let a = Arc::new(Limiter::open("memory", options.clone()).unwrap());
    a.limit(
        "k",
        Quota::new(1000, "1h".parse().unwrap(), Algorithm::TokenBucket).unwrap(),
    )
    .unwrap();
    for _ in 0..3 {
        assert!(a.check("k", 1).unwrap().allowed);
    }
    ARMED.store(true, Ordering::SeqCst);
    let compactor = {
        let a = Arc::clone(&a);
        std::thread::spawn(move || a.compact())
    };
    for _ in 0..20_000 {
        if PAUSED.load(Ordering::SeqCst) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        PAUSED.load(Ordering::SeqCst),
        "the compaction never reached its snapshot"
    );
    // close() on another thread must wait for the compaction, which waits for RESUME.
    let closer = {
        let a = Arc::clone(&a);
        std::thread::spawn(move || a.close())
    };
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !closer.is_finished(),
        "close() returned while a compaction was in flight"
    );
    // The directory stays locked meanwhile.
    assert!(matches!(
        Limiter::open("memory", options.clone()),
        Err(flint_core::Error::Locked { .. })
    ));
    RESUME.store(true, Ordering::SeqCst);
    closer.join().unwrap().unwrap();
    compactor.join().unwrap().unwrap();

    let b = Limiter::open("memory", options.clone()).unwrap();
    for _ in 0..5 {
        assert!(b.check("k", 1).unwrap().allowed);
    }
    b.compact().unwrap();
    for _ in 0..2 {
        assert!(b.check("k", 1).unwrap().allowed);
    }
    b.close().unwrap();

    let c = Limiter::open("memory", options).unwrap();
    let allowed = c.status("k").unwrap().unwrap().counters.allowed;
    assert_eq!(
        allowed, 10,
        "acknowledged checks lost: only {allowed} of 10 survive"
    );
}
