//! `close()` releases the log file, its mapping and the lock at once (not when the
//! handle is dropped), and `Deferred` calls return a result whose durability wait is a
//! future.

mod common;

use std::future::{Future, IntoFuture};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use common::{data_dir, open_faulty, quota};
use flint_core::{Algorithm, Error, Limiter, Options, SyncMode};

/// Lines of this process's memory map and open descriptors that name `needle`.
fn held(needle: &str) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_to_string("/proc/self/maps")
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(needle))
        .map(str::to_owned)
        .collect();
    for fd in std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            if target.to_string_lossy().contains(needle) {
                found.push(target.display().to_string());
            }
        }
    }
    found
}

#[test]
fn close_releases_the_file_the_mapping_and_the_lock_before_the_handle_is_dropped() {
    let (_tmp, dir) = data_dir();
    let limiter = Limiter::open(&dir, Options::default()).unwrap();
    limiter
        .limit("k", quota(10, "1m", Algorithm::TokenBucket))
        .unwrap();
    let log = dir.join("flint.aof").display().to_string();
    let lock = dir.join("flint.lock").display().to_string();
    assert!(!held(&log).is_empty(), "the open log is mapped");
    limiter.close().unwrap();
    assert_eq!(held(&log), Vec::<String>::new(), "the log after close()");
    assert_eq!(held(&lock), Vec::<String>::new(), "the lock after close()");
    // The handle is still alive, and the directory opens again in this process.
    let again = Limiter::open(&dir, Options::default()).unwrap();
    assert!(matches!(limiter.check("k", 1), Err(Error::Closed)));
    assert!(again.check("k", 1).unwrap().allowed);
}

/// Runs a future to completion on this thread, polling when woken.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        assert!(Instant::now() < deadline, "the future never resolved");
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

#[test]
fn a_deferred_check_resolves_after_a_sync_made_by_the_flusher() {
    let (_tmp, dir) = data_dir();
    let (limiter, faults, _clock) = open_faulty(&dir, SyncMode::Always);
    limiter
        .limit("k", quota(10, "1m", Algorithm::TokenBucket))
        .unwrap();
    let syncs = faults.syncs.load(std::sync::atomic::Ordering::SeqCst);
    let pending = limiter.deferred().check("k", 3).unwrap();
    assert!(
        !pending.is_ready(),
        "an allowed check under sync=always waits"
    );
    let decision = block_on(pending.into_future()).unwrap();
    assert!(decision.allowed);
    assert_eq!(decision.remaining, 7);
    assert!(
        faults.syncs.load(std::sync::atomic::Ordering::SeqCst) > syncs,
        "a sync covered the check before the future resolved"
    );
    // A denial has nothing to wait for.
    let denied = limiter.deferred().check("k", 10).unwrap();
    assert!(denied.is_ready());
    assert!(!block_on(denied.into_future()).unwrap().allowed);
    // Every deferred call, and a failing sync failing the future.
    block_on(limiter.deferred().reset("k").unwrap().into_future()).unwrap();
    let both = limiter.deferred().check_all(&[("k", 1)]).unwrap();
    assert!(block_on(both.into_future()).unwrap().allowed);
    faults
        .fail_sync
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let doomed = limiter.deferred().check("k", 1).unwrap();
    assert!(matches!(
        block_on(doomed.into_future()),
        Err(Error::Poisoned { .. } | Error::Io { .. })
    ));
}

#[test]
fn deferred_results_wait_in_batch_mode_for_nothing() {
    let (_tmp, dir) = data_dir();
    let limiter = Limiter::open(&dir, Options::default().sync(SyncMode::Batch)).unwrap();
    let created = limiter
        .deferred()
        .limit("k", quota(10, "1m", Algorithm::SlidingWindowLog))
        .unwrap();
    assert!(created.is_ready());
    assert_eq!(created.wait().unwrap(), flint_core::LimitChange::Created);
    let removed = limiter.deferred().remove("k").unwrap();
    removed.wait().unwrap();
    assert!(limiter.status("k").unwrap().is_none());
}
