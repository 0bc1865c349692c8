//! The public behaviours of `Limiter`, one test per rule of the product contract.

mod common;

use std::sync::Arc;

use common::{data_dir, log_len, open_at, quota, START};
use flint_core::{
    Algorithm, Error, LimitChange, Limiter, ManualClock, Options, SyncMode, TopBy, UnixNanos,
};

const SECOND: u64 = 1_000_000_000;

fn open(
    sync: SyncMode,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Limiter,
    Arc<ManualClock>,
) {
    let (tmp, dir) = data_dir();
    let clock = Arc::new(ManualClock::new(START));
    let limiter = open_at(&dir, sync, &clock);
    (tmp, dir, limiter, clock)
}

#[test]
fn state_survives_close_and_reopen_for_every_algorithm_and_sync_mode() {
    for sync in [SyncMode::Always, SyncMode::Batch] {
        for algorithm in [
            Algorithm::TokenBucket,
            Algorithm::SlidingWindowLog,
            Algorithm::FixedWindowCounter,
        ] {
            let (_tmp, dir, limiter, clock) = open(sync);
            limiter.limit("k", quota(10, "1m", algorithm)).unwrap();
            for cost in [3, 4, 5] {
                limiter.check("k", cost).unwrap();
                clock.advance(SECOND);
            }
            let live = limiter.list(None).unwrap();
            let history = limiter.history("k", 100).unwrap();
            limiter.close().unwrap();
            let limiter = open_at(&dir, sync, &clock);
            assert_eq!(limiter.list(None).unwrap(), live, "{sync:?} {algorithm}");
            assert_eq!(
                limiter.history("k", 100).unwrap(),
                history,
                "{sync:?} {algorithm}"
            );
        }
    }
}

#[test]
fn limit_with_the_same_settings_writes_nothing() {
    let (_tmp, _dir, limiter, _clock) = open(SyncMode::Always);
    let q = quota(100, "1m", Algorithm::TokenBucket);
    assert_eq!(limiter.limit("k", q).unwrap(), LimitChange::Created);
    let after_first = log_len(&limiter);
    assert_eq!(limiter.limit("k", q).unwrap(), LimitChange::Unchanged);
    assert_eq!(log_len(&limiter), after_first);
    assert_eq!(
        limiter
            .limit("k", quota(100, "60s", Algorithm::TokenBucket))
            .unwrap(),
        LimitChange::Unchanged,
        "\"60s\" is the same period as \"1m\""
    );
    assert_eq!(
        limiter
            .limit("k", quota(50, "1m", Algorithm::TokenBucket))
            .unwrap(),
        LimitChange::Updated
    );
    assert!(log_len(&limiter) > after_first);
}

#[test]
fn reconfiguring_keeps_consumed_units_with_the_same_algorithm() {
    for algorithm in [
        Algorithm::TokenBucket,
        Algorithm::SlidingWindowLog,
        Algorithm::FixedWindowCounter,
    ] {
        let (_tmp, _dir, limiter, _clock) = open(SyncMode::Batch);
        limiter.limit("k", quota(100, "1h", algorithm)).unwrap();
        limiter.check("k", 30).unwrap(); // 70 left, 30 consumed
        limiter.limit("k", quota(50, "1h", algorithm)).unwrap();
        let status = limiter.status("k").unwrap().unwrap();
        assert_eq!(status.remaining, 20, "{algorithm}: max(0, 50 - 30)");
        assert_eq!(status.counters.allowed, 1, "{algorithm}: counters are kept");
        limiter.limit("k", quota(20, "1h", algorithm)).unwrap();
        assert_eq!(
            limiter.status("k").unwrap().unwrap().remaining,
            0,
            "{algorithm}"
        );
    }
}

#[test]
fn reconfiguring_to_another_algorithm_starts_at_full_capacity() {
    let (_tmp, _dir, limiter, _clock) = open(SyncMode::Batch);
    limiter
        .limit("k", quota(100, "1h", Algorithm::TokenBucket))
        .unwrap();
    limiter.check("k", 30).unwrap();
    limiter
        .limit("k", quota(100, "1h", Algorithm::SlidingWindowLog))
        .unwrap();
    let status = limiter.status("k").unwrap().unwrap();
    assert_eq!(status.remaining, 100);
    assert_eq!(status.quota.algorithm(), Algorithm::SlidingWindowLog);
    assert_eq!(
        limiter.history("k", 10).unwrap().len(),
        1,
        "history is kept"
    );
}

#[test]
fn a_check_reports_remaining_reset_and_retry_after() {
    let (_tmp, _dir, limiter, clock) = open(SyncMode::Always);
    limiter
        .limit("k", quota(10, "10s", Algorithm::TokenBucket))
        .unwrap();
    let allowed = limiter.check("k", 4).unwrap();
    assert!(allowed.allowed);
    assert_eq!((allowed.remaining, allowed.limit, allowed.cost), (6, 10, 4));
    assert_eq!(allowed.retry_after, 0);
    assert_eq!(
        allowed.reset_at,
        START + 4 * SECOND,
        "one unit refills per second"
    );
    assert_eq!(allowed.algorithm, Algorithm::TokenBucket);

    limiter.check("k", 6).unwrap();
    let denied = limiter.check("k", 3).unwrap();
    assert!(!denied.allowed, "a denial is a value");
    assert_eq!(denied.remaining, 0);
    assert_eq!(denied.retry_after, 3 * SECOND);
    // A denial consumed nothing; the same request at retry_after is allowed.
    clock.advance(denied.retry_after);
    assert!(limiter.check("k", 3).unwrap().allowed);
}

#[test]
fn bad_costs_are_errors_that_consume_nothing() {
    let (_tmp, _dir, limiter, _clock) = open(SyncMode::Always);
    limiter
        .limit("k", quota(10, "1m", Algorithm::TokenBucket))
        .unwrap();
    let bytes = log_len(&limiter);
    for cost in [0, 11, u64::MAX] {
        let error = limiter.check("k", cost).unwrap_err();
        let Error::InvalidArgument { key, message } = &error else {
            panic!("expected InvalidArgument, got {error:?}");
        };
        assert_eq!(key.as_deref(), Some("k"));
        assert!(
            message.contains(&cost.to_string()) && message.contains("\"k\""),
            "{message}"
        );
        assert!(
            message.contains("between 1 and"),
            "the message says the fix: {message}"
        );
    }
    assert_eq!(log_len(&limiter), bytes, "nothing recorded");
    assert_eq!(limiter.status("k").unwrap().unwrap().remaining, 10);
}

#[test]
fn unknown_and_invalid_keys_are_errors() {
    let (_tmp, _dir, limiter, _clock) = open(SyncMode::Always);
    let error = limiter.check("nope", 1).unwrap_err();
    assert!(matches!(&error, Error::LimitNotFound { key } if key == "nope"));
    assert!(error.to_string().contains("limit(\"nope\""), "{error}");
    assert!(matches!(
        limiter.reset("nope"),
        Err(Error::LimitNotFound { .. })
    ));
    assert!(matches!(
        limiter.remove("nope"),
        Err(Error::LimitNotFound { .. })
    ));
    assert!(matches!(
        limiter.history("nope", 5),
        Err(Error::LimitNotFound { .. })
    ));
    assert!(limiter.status("nope").unwrap().is_none());

    let q = quota(1, "1s", Algorithm::TokenBucket);
    assert!(matches!(
        limiter.limit("", q),
        Err(Error::InvalidArgument { .. })
    ));
    let long = "x".repeat(1025);
    let error = limiter.limit(&long, q).unwrap_err();
    assert!(error.to_string().contains("1025 bytes"), "{error}");
    limiter.limit(&"x".repeat(1024), q).unwrap();
}

#[test]
fn check_all_is_all_or_nothing_and_sums_duplicates() {
    let (_tmp, _dir, limiter, _clock) = open(SyncMode::Always);
    limiter
        .limit("user", quota(10, "1m", Algorithm::TokenBucket))
        .unwrap();
    limiter
        .limit("org", quota(5, "1m", Algorithm::SlidingWindowLog))
        .unwrap();

    let result = limiter
        .check_all(&[("user", 2), ("org", 3), ("user", 1)])
        .unwrap();
    assert!(result.allowed);
    assert_eq!(result.denied_key, None);
    assert_eq!(result.results.len(), 3, "one result per item, in order");
    assert_eq!(result.results[0].key, "user");
    assert_eq!(
        result.results[0].decision.remaining, 7,
        "2 + 1 summed for user"
    );
    assert_eq!(result.results[1].decision.remaining, 2);

    let denied = limiter.check_all(&[("user", 1), ("org", 3)]).unwrap();
    assert!(!denied.allowed);
    assert_eq!(denied.denied_key.as_deref(), Some("org"));
    assert!(denied.results.iter().all(|r| !r.decision.allowed));
    assert_eq!(
        limiter.status("user").unwrap().unwrap().remaining,
        7,
        "nothing consumed"
    );
    assert_eq!(limiter.status("org").unwrap().unwrap().remaining, 2);
    assert_eq!(limiter.status("org").unwrap().unwrap().counters.denied, 1);
    assert_eq!(
        limiter.history("user", 10).unwrap().len(),
        2,
        "both decisions are history"
    );

    assert!(matches!(
        limiter.check_all(&[]),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        limiter.check_all(&[("user", 1), ("missing", 1)]),
        Err(Error::LimitNotFound { .. })
    ));
    let error = limiter.check_all(&[("org", 3), ("org", 3)]).unwrap_err();
    assert!(error.to_string().contains("sum to 6"), "{error}");
    assert_eq!(limiter.status("user").unwrap().unwrap().remaining, 7);
    assert!(limiter.allow_all(&[("user", 1)]).unwrap());
}

#[test]
fn reset_restores_capacity_and_remove_deletes_the_limit() {
    let (_tmp, dir, limiter, clock) = open(SyncMode::Always);
    limiter
        .limit("k", quota(3, "1h", Algorithm::FixedWindowCounter))
        .unwrap();
    limiter.check("k", 3).unwrap();
    limiter.reset("k").unwrap();
    let status = limiter.status("k").unwrap().unwrap();
    assert_eq!(status.remaining, 3);
    assert_eq!(status.counters.allowed, 1, "counters survive a reset");
    limiter.remove("k").unwrap();
    assert!(limiter.status("k").unwrap().is_none());
    assert!(matches!(
        limiter.check("k", 1),
        Err(Error::LimitNotFound { .. })
    ));
    limiter.close().unwrap();
    let limiter = open_at(&dir, SyncMode::Always, &clock);
    assert!(limiter.status("k").unwrap().is_none(), "removal is durable");
}

#[test]
fn a_clock_stepping_backwards_gains_no_quota() {
    let (_tmp, _dir, limiter, clock) = open(SyncMode::Always);
    limiter
        .limit("k", quota(2, "1m", Algorithm::SlidingWindowLog))
        .unwrap();
    clock.advance(30 * SECOND);
    limiter.check("k", 2).unwrap();
    clock.set(START - 3600 * SECOND);
    assert!(!limiter.check("k", 1).unwrap().allowed);
    clock.set(START + 30 * SECOND + 59 * SECOND);
    assert!(
        !limiter.check("k", 1).unwrap().allowed,
        "still inside the window"
    );
    clock.set(START + 90 * SECOND);
    assert!(limiter.check("k", 1).unwrap().allowed);
}

#[test]
fn history_is_oldest_first_and_bounded() {
    let (_tmp, _dir, limiter, clock) = open(SyncMode::Batch);
    limiter
        .limit("k", quota(1000, "1h", Algorithm::TokenBucket))
        .unwrap();
    for i in 0..150u64 {
        limiter.check("k", 1 + i % 2).unwrap();
        clock.advance(SECOND);
    }
    let all = limiter.history("k", 1000).unwrap();
    assert_eq!(all.len(), 100, "the ring keeps the last 100");
    assert!(all.windows(2).all(|w| w[0].at < w[1].at), "oldest first");
    let last: UnixNanos = START + 149 * SECOND;
    assert_eq!(all.last().unwrap().at, last);
    let three = limiter.history("k", 3).unwrap();
    assert_eq!(three, all[97..].to_vec());
    assert!(three.iter().all(|e| e.allowed));
}

#[test]
fn top_ranks_keys_and_list_filters_by_prefix() {
    let (_tmp, _dir, limiter, _clock) = open(SyncMode::Batch);
    for (key, denials) in [("api:a", 1), ("api:b", 5), ("web:c", 3), ("web:idle", 0)] {
        limiter
            .limit(key, quota(1, "1h", Algorithm::TokenBucket))
            .unwrap();
        if denials > 0 {
            limiter.check(key, 1).unwrap();
        }
        for _ in 0..denials {
            limiter.check(key, 1).unwrap();
        }
    }
    let top: Vec<String> = limiter
        .top(TopBy::Denied, 20)
        .unwrap()
        .into_iter()
        .map(|s| s.key)
        .collect();
    assert_eq!(
        top,
        ["api:b", "web:c", "api:a"],
        "keys with none are left out"
    );
    assert_eq!(limiter.top(TopBy::Denied, 1).unwrap().len(), 1);
    assert_eq!(limiter.top(TopBy::Checks, 20).unwrap()[0].key, "api:b");
    assert!("nope".parse::<TopBy>().is_err());
    let api: Vec<String> = limiter
        .list(Some("api:"))
        .unwrap()
        .into_iter()
        .map(|s| s.key)
        .collect();
    assert_eq!(api, ["api:a", "api:b"]);
    assert_eq!(limiter.list(None).unwrap().len(), 4);
}

#[test]
fn doctor_reports_every_check() {
    let (_tmp, dir, limiter, _clock) = open(SyncMode::Batch);
    limiter
        .limit("k", quota(5, "1m", Algorithm::TokenBucket))
        .unwrap();
    limiter.check("k", 1).unwrap();
    let report = limiter.doctor().unwrap();
    assert!(report.ok);
    assert_eq!(report.sync, "batch");
    assert_eq!(report.data_dir, dir);
    assert_eq!(report.keys, 1);
    assert!(report.log_bytes > 32);
    let names: Vec<&str> = report.checks.iter().map(|c| c.name).collect();
    for name in [
        "lock",
        "permissions",
        "log",
        "snapshot",
        "torn_tail",
        "pending",
        "compaction",
        "disk_space",
    ] {
        assert!(names.contains(&name), "missing check {name}: {names:?}");
    }
    limiter.flush().unwrap();
    assert_eq!(limiter.doctor().unwrap().pending_events, 0);
}

#[test]
fn files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let (_tmp, dir, limiter, _clock) = open(SyncMode::Always);
    limiter
        .limit("k", quota(5, "1m", Algorithm::TokenBucket))
        .unwrap();
    limiter.compact().unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for name in ["flint.lock", "flint.aof", "flint.snapshot"] {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
    }
}

#[test]
fn an_existing_directory_keeps_its_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let (_tmp, dir) = data_dir();
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let limiter = open_at(&dir, SyncMode::Always, &clock);
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o750,
        "never chmod a directory the engine did not create"
    );
    let report = limiter.doctor().unwrap();
    let check = report
        .checks
        .iter()
        .find(|c| c.name == "permissions")
        .unwrap();
    assert!(check.detail.contains("chmod 700"), "{}", check.detail);
}

#[test]
fn a_closed_limiter_refuses_calls_and_releases_the_lock() {
    let (_tmp, dir, limiter, clock) = open(SyncMode::Always);
    limiter
        .limit("k", quota(5, "1m", Algorithm::TokenBucket))
        .unwrap();
    limiter.close().unwrap();
    limiter.close().unwrap();
    assert!(matches!(limiter.check("k", 1), Err(Error::Closed)));
    assert!(matches!(limiter.status("k"), Err(Error::Closed)));
    let again = open_at(&dir, SyncMode::Always, &clock);
    assert!(again.status("k").unwrap().is_some());
    let error = Limiter::open(&dir, common::manual_options(SyncMode::Always).0).unwrap_err();
    assert!(matches!(error, Error::Locked { pid: Some(pid), .. } if pid == std::process::id()));
}

#[test]
fn automatic_compaction_keeps_the_log_bounded() {
    let (_tmp, dir) = data_dir();
    let (mut options, _clock) = common::manual_options(SyncMode::Batch);
    options.compact_threshold_bytes = 64 << 10;
    options.flush_every_ms = 1;
    let limiter = Limiter::open(&dir, options).unwrap();
    limiter
        .limit("k", quota(1_000_000, "1h", Algorithm::TokenBucket))
        .unwrap();
    let mut max_seen = 0;
    for round in 0..200 {
        for _ in 0..500 {
            limiter.check("k", 1).unwrap();
        }
        let len = log_len(&limiter);
        max_seen = max_seen.max(len);
        // On a loaded machine the compaction thread may not have run yet: give it
        // the core (the log must still come down, or the bound below fails).
        if round % 20 == 0 || len > 256 << 10 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    // 100,000 records of up to 32 bytes would be 3 MB; compaction keeps it far below.
    assert!(
        std::fs::metadata(dir.join("flint.snapshot")).is_ok(),
        "compaction ran"
    );
    assert!(max_seen < 1 << 20, "log reached {max_seen} bytes");
    assert_eq!(
        limiter.status("k").unwrap().unwrap().counters.allowed,
        100_000
    );
}

#[test]
fn reconfigurations_replay_to_the_live_state() {
    let (_tmp, dir, limiter, clock) = open(SyncMode::Batch);
    let steps = [
        (10, "1m", Algorithm::TokenBucket),
        (4, "1m", Algorithm::TokenBucket),
        (20, "30s", Algorithm::TokenBucket),
        (20, "30s", Algorithm::SlidingWindowLog),
        (5, "10s", Algorithm::SlidingWindowLog),
        (7, "1h", Algorithm::FixedWindowCounter),
        (3, "1h", Algorithm::FixedWindowCounter),
    ];
    for (rate, per, algorithm) in steps {
        limiter.limit("k", quota(rate, per, algorithm)).unwrap();
        for _ in 0..3 {
            limiter.check("k", 1).unwrap();
            clock.advance(700_000_000);
        }
        if rate == 20 {
            limiter.compact().unwrap();
        }
    }
    limiter.reset("k").unwrap();
    limiter.check("k", 2).unwrap();
    let live = limiter.list(None).unwrap();
    let history = limiter.history("k", 100).unwrap();
    limiter.close().unwrap();
    let limiter = open_at(&dir, SyncMode::Batch, &clock);
    assert_eq!(limiter.list(None).unwrap(), live);
    assert_eq!(limiter.history("k", 100).unwrap(), history);
    assert_eq!(history.len(), 22);
}

#[test]
fn batch_mode_syncs_an_idle_limiter_by_itself() {
    let (_tmp, dir) = data_dir();
    let (mut options, _clock) = common::manual_options(SyncMode::Batch);
    options.flush_every_ms = 5;
    options.flush_every_events = 1_000_000;
    let limiter = Limiter::open(&dir, options).unwrap();
    limiter
        .limit("k", quota(10, "1m", Algorithm::TokenBucket))
        .unwrap();
    limiter.check("k", 1).unwrap();
    // No flush() call: the background flusher syncs within flush_every_ms. Poll with
    // a generous bound (this is not a timing assertion).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while limiter.doctor().unwrap().pending_events > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle limiter never synced"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[test]
fn batch_mode_syncs_after_flush_every_events() {
    let (_tmp, dir) = data_dir();
    let (backend, faults) = common::FaultyBackend::open(&dir);
    let (mut options, _clock) = common::manual_options(SyncMode::Batch);
    options.backend = Some(backend);
    options.flush_every_ms = 3_600_000; // only the event count can trigger a sync
    options.flush_every_events = 10;
    let limiter = Limiter::open(&dir, options).unwrap();
    limiter
        .limit("k", quota(1000, "1m", Algorithm::TokenBucket))
        .unwrap();
    let before = faults.syncs.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..25 {
        limiter.check("k", 1).unwrap();
    }
    // However fast the events came, at most flush_every_events stay unsynced: the
    // flusher was woken at the tenth and synced what was written by then.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while limiter.doctor().unwrap().pending_events >= 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "25 events stayed unsynced"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(faults.syncs.load(std::sync::atomic::Ordering::Relaxed) > before);
}

/// A clock that has run past the end of Flint's time range.
#[derive(Debug)]
struct FarFuture;

impl flint_core::Clock for FarFuture {
    fn now(&self) -> flint_core::UnixNanos {
        u64::MAX - 5
    }
}

#[test]
fn a_clock_past_max_time_is_refused_rather_than_wrapped() {
    let (_tmp, dir) = common::data_dir();
    let clock = Arc::new(ManualClock::new(common::START));
    let limiter = Limiter::open(&dir, Options::default().clock(clock)).unwrap();
    limiter
        .limit("k", common::quota(3, "1h", Algorithm::TokenBucket))
        .unwrap();
    limiter.close().unwrap();
    let limiter = Limiter::open(&dir, Options::default().clock(Arc::new(FarFuture))).unwrap();
    for _ in 0..10 {
        match limiter.check("k", 1) {
            Err(Error::InvalidArgument { message, .. }) => {
                assert!(message.contains("MAX_TIME"), "{message}");
            }
            other => panic!("a wrapped clock must not decide: {other:?}"),
        }
    }
    assert!(matches!(
        limiter.status("k"),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn stats_count_keys_syncs_pending_events_and_compactions() {
    let (_tmp, _dir, limiter, _clock) = open(SyncMode::Always);
    let before = limiter.stats().unwrap();
    assert_eq!((before.keys, before.compactions), (0, 0));
    limiter
        .limit("a", quota(10, "1m", Algorithm::TokenBucket))
        .unwrap();
    limiter.check("a", 1).unwrap();
    let after = limiter.stats().unwrap();
    assert_eq!(after.keys, 1);
    assert!(after.syncs > before.syncs, "{before:?} → {after:?}");
    assert!(after.log_bytes > before.log_bytes);
    assert_eq!(after.pending_events, 0, "sync=always left nothing unsynced");
    limiter.compact().unwrap();
    let compacted = limiter.stats().unwrap();
    assert_eq!(compacted.compactions, 1);
    assert!(compacted.snapshot_bytes > 0);
}

#[test]
fn stats_count_live_checks_by_outcome_and_not_replay() {
    let (_tmp, dir, limiter, clock) = open(SyncMode::Always);
    let tb = |rate| quota(rate, "1h", Algorithm::TokenBucket);
    limiter.limit("a", tb(2)).unwrap();
    limiter.limit("b", tb(1)).unwrap();
    limiter
        .limit("s", tb(1).with_mode(flint_core::Mode::Shadow))
        .unwrap();
    limiter.check("a", 1).unwrap(); // allowed
    limiter.check("s", 1).unwrap(); // allowed
    limiter.check("s", 1).unwrap(); // shadow-denied
    limiter.check_all(&[("a", 1), ("s", 1)]).unwrap(); // allowed + shadow-denied
    limiter.check_all(&[("a", 1), ("b", 1)]).unwrap(); // a lacks room: both denied
    limiter.check("a", 1).unwrap(); // denied
    assert!(limiter.check("nope", 1).is_err(), "an error counts nothing");
    limiter.peek("a", 1).unwrap();
    let stats = limiter.stats().unwrap();
    assert_eq!(
        (
            stats.checks_allowed,
            stats.checks_denied,
            stats.checks_shadow_denied
        ),
        (3, 3, 2),
        "{stats:?}"
    );
    limiter.close().unwrap();
    let reopened = open_at(&dir, SyncMode::Always, &clock);
    let stats = reopened.stats().unwrap();
    assert_eq!(
        (
            stats.checks_allowed,
            stats.checks_denied,
            stats.checks_shadow_denied
        ),
        (0, 0, 0),
        "since open: replay counts nothing"
    );
}

#[test]
fn peek_validates_like_check_and_never_records() {
    let (_tmp, _dir, limiter, _clock) = open(SyncMode::Always);
    assert!(matches!(
        limiter.peek("nope", 1),
        Err(Error::LimitNotFound { .. })
    ));
    limiter
        .limit("k", quota(3, "1h", Algorithm::SlidingWindowLog))
        .unwrap();
    assert!(matches!(
        limiter.peek("k", 0),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        limiter.peek("k", 4),
        Err(Error::InvalidArgument { .. })
    ));
    let log = log_len(&limiter);
    let peeked = limiter.peek("k", 3).unwrap();
    assert!(peeked.allowed);
    assert_eq!(
        peeked.remaining, 0,
        "what is left after it, were it checked"
    );
    assert_eq!(log_len(&limiter), log, "a peek writes nothing");
    let status = limiter.status("k").unwrap().unwrap();
    assert_eq!((status.remaining, status.counters.allowed), (3, 0));
    assert!(limiter.history("k", 10).unwrap().is_empty());
}

#[test]
fn refund_validates_like_check_and_records_nothing_when_refused() {
    let (_tmp, _dir, limiter, _clock) = open(SyncMode::Always);
    assert!(matches!(
        limiter.refund("nope", 1),
        Err(Error::LimitNotFound { .. })
    ));
    limiter
        .limit("k", quota(3, "1h", Algorithm::TokenBucket))
        .unwrap();
    limiter.check("k", 3).unwrap();
    let log = log_len(&limiter);
    for cost in [0, 4] {
        match limiter.refund("k", cost) {
            Err(Error::InvalidArgument { message, .. }) => {
                assert!(
                    message.contains(&format!("refund cost {cost}")),
                    "{message}"
                );
                assert!(message.contains("\"k\""), "{message}");
                assert!(
                    message.contains("between 1 and the limit's rate (3)"),
                    "{message}"
                );
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }
    assert_eq!(log_len(&limiter), log, "a refused refund writes nothing");
    assert_eq!(limiter.status("k").unwrap().unwrap().remaining, 0);
}

#[test]
fn refund_gives_back_per_algorithm_and_never_beyond_full_capacity() {
    for algorithm in Algorithm::ALL {
        let (_tmp, _dir, limiter, clock) = open(SyncMode::Always);
        limiter.limit("k", quota(5, "1h", algorithm)).unwrap();
        limiter.check("k", 2).unwrap();
        clock.advance(SECOND);
        limiter.check("k", 3).unwrap();
        assert!(!limiter.check("k", 1).unwrap().allowed, "{algorithm}");
        limiter.refund("k", 2).unwrap();
        let status = limiter.status("k").unwrap().unwrap();
        assert_eq!(status.remaining, 2, "{algorithm}: two units back");
        assert_eq!(
            (status.counters.allowed, status.counters.allowed_cost),
            (2, 5),
            "{algorithm}: counters say what was admitted"
        );
        assert_eq!(limiter.history("k", 100).unwrap().len(), 3, "{algorithm}");
        assert!(limiter.check("k", 2).unwrap().allowed, "{algorithm}");
        // More than was consumed: back to full capacity, not beyond.
        limiter.refund("k", 5).unwrap();
        limiter.refund("k", 5).unwrap();
        assert_eq!(
            limiter.status("k").unwrap().unwrap().remaining,
            5,
            "{algorithm}"
        );
        assert!(limiter.check("k", 5).unwrap().allowed, "{algorithm}");
        assert!(!limiter.check("k", 1).unwrap().allowed, "{algorithm}");
    }
}

#[test]
fn a_refund_at_full_capacity_changes_and_writes_nothing() {
    for algorithm in Algorithm::ALL {
        let (_tmp, _dir, limiter, clock) = open(SyncMode::Always);
        limiter.limit("k", quota(4, "1s", algorithm)).unwrap();
        let log = log_len(&limiter);
        limiter.refund("k", 4).unwrap();
        assert_eq!(log_len(&limiter), log, "{algorithm}: never checked");
        limiter.check("k", 4).unwrap();
        clock.advance(2 * SECOND);
        let log = log_len(&limiter);
        let before = limiter.status("k").unwrap();
        limiter.refund("k", 1).unwrap();
        assert_eq!(log_len(&limiter), log, "{algorithm}: refilled");
        assert_eq!(limiter.status("k").unwrap(), before, "{algorithm}");
    }
}

#[test]
fn a_sliding_window_refund_takes_the_newest_units_first() {
    let (_tmp, _dir, limiter, clock) = open(SyncMode::Batch);
    limiter
        .limit("k", quota(4, "10s", Algorithm::SlidingWindowLog))
        .unwrap();
    limiter.check("k", 2).unwrap();
    clock.advance(5 * SECOND);
    limiter.check("k", 2).unwrap();
    // Give back 3: the newest run (2 units, at +5s) and one unit of the first (at 0s).
    limiter.refund("k", 3).unwrap();
    assert_eq!(limiter.status("k").unwrap().unwrap().remaining, 3);
    // The unit left is the oldest one: at +10s it expires and the key is full again.
    clock.advance(5 * SECOND - 1);
    assert_eq!(limiter.status("k").unwrap().unwrap().remaining, 3);
    clock.advance(1);
    assert_eq!(limiter.status("k").unwrap().unwrap().remaining, 4);
}

#[test]
fn refunds_replay_to_the_same_state_and_a_fixed_window_refund_stays_in_its_window() {
    let (_tmp, dir, limiter, clock) = open(SyncMode::Always);
    limiter
        .limit("f", quota(3, "1h", Algorithm::FixedWindowCounter))
        .unwrap();
    limiter
        .limit("t", quota(3, "1h", Algorithm::TokenBucket))
        .unwrap();
    limiter.check("f", 3).unwrap();
    limiter.check("t", 3).unwrap();
    limiter.refund("f", 1).unwrap();
    limiter.refund("t", 2).unwrap();
    let live = limiter.list(None).unwrap();
    limiter.close().unwrap();
    let limiter = open_at(&dir, SyncMode::Always, &clock);
    assert_eq!(limiter.list(None).unwrap(), live);
    limiter.compact().unwrap();
    limiter.refund("f", 1).unwrap();
    let live = limiter.list(None).unwrap();
    limiter.close().unwrap();
    let limiter = open_at(&dir, SyncMode::Always, &clock);
    assert_eq!(limiter.list(None).unwrap(), live);
    assert_eq!(limiter.status("f").unwrap().unwrap().remaining, 2);
}

#[test]
fn a_deferred_refund_waits_for_durability_with_sync_always() {
    let (_tmp, _dir, limiter, _clock) = open(SyncMode::Always);
    limiter
        .limit("k", quota(3, "1h", Algorithm::TokenBucket))
        .unwrap();
    limiter.check("k", 1).unwrap();
    let pending = limiter.deferred().refund("k", 1).unwrap();
    assert!(
        !pending.is_ready(),
        "a refund changes state: it waits for the disk"
    );
    pending.wait().unwrap();
    let stats = limiter.stats().unwrap();
    assert_eq!(stats.pending_events, 0);
}
