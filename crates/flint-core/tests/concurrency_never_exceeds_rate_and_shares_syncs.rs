//! Many threads on one limiter: one key never admits more than its rate, and under
//! `sync=always` concurrent callers share syncs (group commit).

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::{data_dir, open_faulty, quota};
use flint_core::{Algorithm, SyncMode};

const THREADS: usize = 8;
const CHECKS: usize = 50;

#[test]
fn threads_hammering_one_key_never_exceed_its_rate() {
    for algorithm in [
        Algorithm::TokenBucket,
        Algorithm::SlidingWindowLog,
        Algorithm::FixedWindowCounter,
    ] {
        let (_tmp, dir) = data_dir();
        let (limiter, _faults, _clock) = open_faulty(&dir, SyncMode::Batch);
        let limiter = Arc::new(limiter);
        limiter.limit("hot", quota(1000, "1h", algorithm)).unwrap();
        let allowed: u64 = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..THREADS)
                .map(|_| {
                    let limiter = Arc::clone(&limiter);
                    scope.spawn(move || {
                        (0..400)
                            .filter(|_| limiter.allow("hot", 1).unwrap())
                            .count() as u64
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        // The manual clock stands still: exactly the rate is admitted, no more.
        assert_eq!(allowed, 1000, "{algorithm}");
        let status = limiter.status("hot").unwrap().unwrap();
        assert_eq!(status.remaining, 0);
        assert_eq!(status.counters.allowed, 1000);
        assert_eq!(status.counters.denied, (THREADS * 400 - 1000) as u64);
    }
}

#[test]
fn concurrent_callers_share_one_sync() {
    let (_tmp, dir) = data_dir();
    let (limiter, faults, _clock) = open_faulty(&dir, SyncMode::Always);
    let limiter = Arc::new(limiter);
    for t in 0..THREADS {
        limiter
            .limit(
                &format!("user:{t}"),
                quota(1_000_000, "1h", Algorithm::TokenBucket),
            )
            .unwrap();
    }
    // A slow disk makes callers pile up behind each sync.
    faults.sync_delay_us.store(2_000, Ordering::Relaxed);
    let syncs_before = faults.syncs.load(Ordering::Relaxed);
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let limiter = Arc::clone(&limiter);
            scope.spawn(move || {
                for _ in 0..CHECKS {
                    assert!(limiter.allow(&format!("user:{t}"), 1).unwrap());
                }
            });
        }
    });
    let syncs = faults.syncs.load(Ordering::Relaxed) - syncs_before;
    let acknowledged = (THREADS * CHECKS) as u64;
    assert!(
        syncs * 2 < acknowledged,
        "{syncs} syncs for {acknowledged} acknowledged checks: group commit is not sharing"
    );
    // Each caller waited for a sync covering its record: all of them are durable.
    let report = limiter.doctor().unwrap();
    assert_eq!(report.pending_events, 0);
}

#[test]
fn denials_do_not_wait_for_a_sync() {
    let (_tmp, dir) = data_dir();
    let (limiter, faults, _clock) = open_faulty(&dir, SyncMode::Always);
    limiter
        .limit("k", quota(1, "1h", Algorithm::TokenBucket))
        .unwrap();
    assert!(limiter.allow("k", 1).unwrap());
    let syncs_before = faults.syncs.load(Ordering::Relaxed);
    for _ in 0..100 {
        assert!(!limiter.allow("k", 1).unwrap());
    }
    // No caller synced: at most the background flusher did (every 100 ms).
    let syncs = faults.syncs.load(Ordering::Relaxed) - syncs_before;
    assert!(syncs <= 2, "{syncs} syncs for 100 denials");
    // The denials are logged all the same, and synced by the next group sync.
    limiter.flush().unwrap();
    assert_eq!(limiter.doctor().unwrap().pending_events, 0);
    assert_eq!(limiter.status("k").unwrap().unwrap().counters.denied, 100);
}

#[test]
fn compaction_racing_with_checks_loses_and_repeats_nothing() {
    let (_tmp, dir) = data_dir();
    let (limiter, _faults, clock) = open_faulty(&dir, SyncMode::Batch);
    let limiter = Arc::new(limiter);
    for t in 0..4 {
        limiter
            .limit(
                &format!("k:{t}"),
                quota(1_000_000, "1h", Algorithm::SlidingWindowLog),
            )
            .unwrap();
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    let compacted = std::sync::atomic::AtomicU64::new(0);
    // Workers check until they have done 3,000 checks each and at least 3 compactions
    // ran meanwhile (bounded: at most 200,000 checks each).
    let checked = std::thread::scope(|scope| {
        let compactor = scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                limiter.compact().unwrap();
                compacted.fetch_add(1, Ordering::Relaxed);
            }
        });
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let limiter = Arc::clone(&limiter);
                let compacted = &compacted;
                scope.spawn(move || {
                    let mut cost = 0;
                    for i in 0..200_000u64 {
                        if i >= 3_000 && compacted.load(Ordering::Relaxed) >= 3 {
                            return (i, cost);
                        }
                        assert!(limiter.allow(&format!("k:{t}"), 1 + i % 3).unwrap());
                        cost += 1 + i % 3;
                    }
                    (200_000, cost)
                })
            })
            .collect();
        let checked: Vec<(u64, u64)> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        done.store(true, Ordering::Relaxed);
        compactor.join().unwrap();
        checked
    });
    assert!(
        compacted.load(Ordering::Relaxed) >= 3,
        "compaction ran while checks did"
    );
    let live = limiter.list(None).unwrap();
    for (status, (checks, cost)) in live.iter().zip(&checked) {
        assert_eq!(status.counters.allowed, *checks);
        assert_eq!(status.counters.allowed_cost, *cost);
    }
    limiter.close().unwrap();
    let reopened = common::open_at(&dir, SyncMode::Batch, &clock);
    assert_eq!(reopened.list(None).unwrap(), live);
}
