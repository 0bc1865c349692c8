//! When the directory sync after a compaction's log rename fails, the engine poisons
//! before the new log is installed, so a caller whose record was synced only in the
//! new log is not acknowledged: a power loss may lose the rename, and the record with
//! it (it was never synced in the old log).
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flint_core::backend::{Backend, DirLock, LogFile, LogSync, MemoryBackend, StorageFile};
use flint_core::{Algorithm, Limiter, Options, Quota, SyncMode};

static SLOW: AtomicBool = AtomicBool::new(false);
static GO_L: AtomicBool = AtomicBool::new(false);
static GO_W: AtomicBool = AtomicBool::new(false);

struct Hooked {
    inner: MemoryBackend,
    fail_next_dir_sync: AtomicBool,
}
struct F(Box<dyn StorageFile>);
struct L(Box<dyn LogFile>);
struct S(Arc<dyn LogSync>);
impl LogSync for S {
    fn sync(&self) -> io::Result<()> {
        self.0.sync()?; // durable now; then take long, so later appends stay unsynced
        if SLOW.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(800));
        }
        Ok(())
    }
}
impl LogFile for L {
    fn append(&mut self, b: &[u8]) -> io::Result<()> {
        self.0.append(b)
    }
    fn len(&self) -> u64 {
        self.0.len()
    }
    fn read_from(&self, from: u64) -> io::Result<Vec<u8>> {
        self.0.read_from(from)
    }
    fn syncer(&self) -> Arc<dyn LogSync> {
        Arc::new(S(self.0.syncer()))
    }
}
impl StorageFile for F {
    fn write_at(&mut self, o: u64, b: &[u8]) -> io::Result<()> {
        self.0.write_at(o, b)
    }
    fn allocate(&mut self, l: u64) -> io::Result<()> {
        self.0.allocate(l)
    }
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync()
    }
    fn into_log(self: Box<Self>, l: u64) -> io::Result<Box<dyn LogFile>> {
        Ok(Box::new(L(self.0.into_log(l)?)))
    }
}
impl Backend for Hooked {
    fn dir(&self) -> &Path {
        self.inner.dir()
    }
    fn lock(&self) -> flint_core::Result<DirLock> {
        self.inner.lock()
    }
    fn read(&self, n: &str) -> io::Result<Option<Vec<u8>>> {
        self.inner.read(n)
    }
    fn size(&self, n: &str) -> io::Result<Option<u64>> {
        self.inner.size(n)
    }
    fn create(&self, n: &str) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(F(self.inner.create(n)?)))
    }
    fn open(&self, n: &str) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(F(self.inner.open(n)?)))
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        if to == "flint.snapshot" && SLOW.load(Ordering::SeqCst) {
            // Step 3 of compaction (no state lock held): a leader starts a slow sync of
            // the old log, then a second caller appends and parks behind it.
            GO_L.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(100));
            GO_W.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(100));
        }
        self.inner.rename(from, to)?;
        if to == "flint.aof" && SLOW.load(Ordering::SeqCst) {
            self.fail_next_dir_sync.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
    fn sync_dir(&self) -> io::Result<()> {
        if self.fail_next_dir_sync.swap(false, Ordering::SeqCst) {
            return Err(io::Error::other("injected EIO on directory fsync"));
        }
        self.inner.sync_dir()
    }
    fn remove(&self, n: &str) -> io::Result<()> {
        self.inner.remove(n)
    }
    fn free_space(&self) -> io::Result<u64> {
        self.inner.free_space()
    }
    fn dir_mode(&self) -> io::Result<u32> {
        self.inner.dir_mode()
    }
}

fn wait_for(flag: &AtomicBool) {
    for _ in 0..20_000 {
        if flag.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("the compaction never reached its snapshot's rename");
}

#[test]
fn no_caller_is_acknowledged_by_a_log_whose_rename_may_not_be_durable() {
    let mem = MemoryBackend::new();
    let backend = Arc::new(Hooked {
        inner: mem.clone(),
        fail_next_dir_sync: AtomicBool::new(false),
    });
    let options = Options::default().sync(SyncMode::Always);
    let limiter = Arc::new(
        Limiter::open(
            "memory",
            options.clone().backend(backend as Arc<dyn Backend>),
        )
        .unwrap(),
    );
    limiter
        .limit(
            "k",
            Quota::new(1000, "1h".parse().unwrap(), Algorithm::TokenBucket).unwrap(),
        )
        .unwrap();
    limiter
        .limit(
            "other",
            Quota::new(1000, "1h".parse().unwrap(), Algorithm::TokenBucket).unwrap(),
        )
        .unwrap();
    assert!(limiter.check("k", 1).unwrap().allowed);
    SLOW.store(true, Ordering::SeqCst);
    let l = {
        let lim = Arc::clone(&limiter);
        std::thread::spawn(move || {
            wait_for(&GO_L);
            lim.check("other", 1)
        })
    };
    let w = {
        let lim = Arc::clone(&limiter);
        std::thread::spawn(move || {
            wait_for(&GO_W);
            lim.check("k", 1)
        })
    };
    let compacted = limiter.compact();
    let w = w.join().unwrap();
    let l = l.join().unwrap();
    SLOW.store(false, Ordering::SeqCst);
    eprintln!("compact: {compacted:?}\nleader: {l:?}\nparked waiter: {w:?}");
    assert!(compacted.is_err(), "the directory sync was meant to fail");
    let acknowledged = 1 + u64::from(w.is_ok()); // on key "k"
    let mut lost = 0;
    for seed in 0..200 {
        let image = mem.crash_image(seed);
        let reopened = Limiter::open("memory", options.clone().backend(Arc::new(image))).unwrap();
        let allowed = reopened.status("k").unwrap().unwrap().counters.allowed;
        if allowed < acknowledged {
            lost += 1;
        }
    }
    assert_eq!(
        lost, 0,
        "{lost}/200 power-loss images lost an acknowledged check ({acknowledged} acknowledged)"
    );
}
