//! Storage failures injected through the backend seam: a full disk refuses the call and
//! records nothing; a failed sync stops every later write (fail-stop); a failed
//! compaction leaves the directory as it was.

mod common;

use std::sync::atomic::Ordering;

use common::{data_dir, open_faulty, quota};
use flint_core::{Algorithm, Error, Limiter, SyncMode};

#[test]
fn a_full_disk_fails_the_call_and_consumes_nothing() {
    let (_tmp, dir) = data_dir();
    let (limiter, faults, clock) = open_faulty(&dir, SyncMode::Always);
    limiter
        .limit("k", quota(5, "1m", Algorithm::TokenBucket))
        .unwrap();
    limiter.check("k", 1).unwrap();

    faults.disk_full.store(true, Ordering::Relaxed);
    let error = limiter.check("k", 1).unwrap_err();
    assert!(error.is_storage(), "{error:?}");
    assert!(matches!(error, Error::Io { .. }), "{error:?}");
    assert!(error.to_string().contains("no space left"), "{error}");
    assert!(limiter
        .limit("k2", quota(5, "1m", Algorithm::TokenBucket))
        .is_err());
    assert!(limiter.reset("k").is_err());
    let status = limiter.status("k").unwrap().unwrap();
    assert_eq!(status.remaining, 4, "the failed check consumed nothing");
    assert_eq!(status.counters.allowed, 1);
    assert!(limiter.status("k2").unwrap().is_none());

    // The failed append wrote nothing, so the engine is not poisoned: space freed,
    // work goes on, and what was acknowledged survives a reopen.
    faults.disk_full.store(false, Ordering::Relaxed);
    assert_eq!(limiter.check("k", 1).unwrap().remaining, 3);
    limiter.close().unwrap();
    let limiter = common::open_at(&dir, SyncMode::Always, &clock);
    let status = limiter.status("k").unwrap().unwrap();
    assert_eq!((status.remaining, status.counters.allowed), (3, 2));
}

#[test]
fn a_failed_sync_poisons_the_engine_and_nothing_unrecorded_is_reported() {
    let (_tmp, dir) = data_dir();
    let (limiter, faults, _clock) = open_faulty(&dir, SyncMode::Always);
    limiter
        .limit("k", quota(5, "1m", Algorithm::TokenBucket))
        .unwrap();

    faults.fail_sync.store(true, Ordering::Relaxed);
    let error = limiter.check("k", 1).unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error:?}");
    assert!(error.to_string().contains("sync"), "{error}");

    // Even with the disk healthy again, writes stay refused until reopened.
    faults.fail_sync.store(false, Ordering::Relaxed);
    for attempt in [limiter.check("k", 1), limiter.check("k", 5)] {
        let error = attempt.unwrap_err();
        assert!(matches!(error, Error::Poisoned { .. }), "{error:?}");
        assert!(error.to_string().contains("injected failure"), "{error}");
    }
    assert!(matches!(limiter.flush(), Err(Error::Poisoned { .. })));
    assert!(matches!(limiter.compact(), Err(Error::Poisoned { .. })));
    let report = limiter.doctor().unwrap();
    assert!(!report.ok, "doctor reports the stopped engine");
    assert!(limiter.close().is_err(), "close reports the failure too");
}

#[test]
fn a_failed_background_sync_in_batch_mode_stops_later_writes() {
    let (_tmp, dir) = data_dir();
    let (limiter, faults, _clock) = open_faulty(&dir, SyncMode::Batch);
    limiter
        .limit("k", quota(1000, "1m", Algorithm::TokenBucket))
        .unwrap();
    faults.fail_sync.store(true, Ordering::Relaxed);
    limiter.check("k", 1).unwrap(); // written; its sync is still to come
    assert!(matches!(
        limiter.flush(),
        Err(Error::Io { .. } | Error::Poisoned { .. })
    ));
    assert!(matches!(limiter.check("k", 1), Err(Error::Poisoned { .. })));
}

#[test]
fn a_failed_compaction_leaves_the_directory_as_it_was() {
    let (_tmp, dir) = data_dir();
    let (limiter, faults, clock) = open_faulty(&dir, SyncMode::Always);
    limiter
        .limit("k", quota(5, "1m", Algorithm::SlidingWindowLog))
        .unwrap();
    limiter.check("k", 2).unwrap();

    faults.fail_write_atomic.store(true, Ordering::Relaxed);
    assert!(matches!(limiter.compact(), Err(Error::Io { .. })));
    faults.fail_write_atomic.store(false, Ordering::Relaxed);
    faults.fail_create_log.store(true, Ordering::Relaxed);
    assert!(matches!(limiter.compact(), Err(Error::Io { .. })));
    faults.fail_create_log.store(false, Ordering::Relaxed);

    // The engine goes on appending to the old log; everything survives a reopen.
    assert_eq!(limiter.check("k", 1).unwrap().remaining, 2);
    limiter.close().unwrap();
    let limiter = common::open_at(&dir, SyncMode::Always, &clock);
    assert_eq!(limiter.status("k").unwrap().unwrap().remaining, 2);
    limiter.compact().unwrap();
    limiter.close().unwrap();
    let limiter = Limiter::open(&dir, common::manual_options(SyncMode::Always).0).unwrap();
    assert_eq!(limiter.status("k").unwrap().unwrap().remaining, 2);
}

#[test]
fn a_failing_automatic_compaction_is_reported_by_doctor() {
    use flint_core::CheckLevel;

    let (_tmp, dir) = data_dir();
    let (backend, faults) = common::FaultyBackend::open(&dir);
    let (mut options, _clock) = common::manual_options(SyncMode::Batch);
    options.backend = Some(backend);
    options.compact_threshold_bytes = 1024;
    options.flush_every_ms = 1;
    let limiter = Limiter::open(&dir, options).unwrap();
    limiter
        .limit("k", quota(1_000_000, "1h", Algorithm::TokenBucket))
        .unwrap();
    faults.fail_write_atomic.store(true, Ordering::Relaxed);
    for _ in 0..100 {
        limiter.check("k", 1).unwrap();
    }
    let compaction_check = || {
        let report = limiter.doctor().unwrap();
        report
            .checks
            .into_iter()
            .find(|c| c.name == "compaction")
            .unwrap()
    };
    // Poll (bounded, not a timing assertion) for the flusher's attempt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while compaction_check().level != CheckLevel::Warn {
        assert!(
            std::time::Instant::now() < deadline,
            "no failed compaction reported"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(compaction_check().detail.contains("injected failure"));
    // Checks go on meanwhile, and once the disk recovers the warning clears.
    assert!(limiter.allow("k", 1).unwrap());
    faults.fail_write_atomic.store(false, Ordering::Relaxed);
    while compaction_check().level != CheckLevel::Ok {
        assert!(
            std::time::Instant::now() < deadline,
            "compaction never recovered"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}
