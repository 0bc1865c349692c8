//! Arithmetic at the edges of u64: running totals that pass `u64::MAX` keep counting
//! exactly, times up to the end of u64 never wrap a decision, and a manual clock
//! refuses to move past the latest supported time.

mod common;

use std::collections::VecDeque;
use std::sync::Arc;

use common::{data_dir, open_at, quota};
use flint_core::algorithm::{LimitState, SlidingLog};
use flint_core::clock::{validate_time, MAX_TIME};
use flint_core::duration::MAX_PERIOD_MS;
use flint_core::{Algorithm, Clock, Error, ManualClock, Quota, SyncMode, MAX_RATE};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
const HOUR: u64 = 3_600 * SEC;

#[test]
fn sliding_window_keeps_counting_exactly_when_its_running_total_passes_u64_max() {
    // Reached for real after ~18 million full-rate checks at the largest rate; here the
    // running total starts just below the end of u64.
    let q = Quota::new(
        MAX_RATE,
        "1ms".parse().unwrap(),
        Algorithm::SlidingWindowLog,
    )
    .unwrap();
    let mut s = LimitState::SlidingWindowLog(Box::new(SlidingLog {
        runs: VecDeque::new(),
        expired_total: u64::MAX - MAX_RATE / 2,
    }));
    let t0: u64 = 1_700_000_000_000_000_000;
    for i in 0..5 {
        let now = t0 + i * MS;
        assert!(
            s.decide(&q, now, MAX_RATE).allowed,
            "step {i}: an empty window"
        );
        s.consume(&q, now, MAX_RATE);
        let again = s.decide(&q, now, 1);
        assert!(!again.allowed, "step {i}: the window is full");
        assert_eq!(again.remaining, 0);
        assert_eq!(again.retry_after, MS);
        assert_eq!(
            s.peek(&q, now + MS).0,
            MAX_RATE,
            "step {i}: the next window"
        );
    }
}

/// Decides and consumes `checks` requests of cost 1, one a second from `start` (times
/// saturating at the end of u64), and returns how many were allowed.
fn allowed_of(algorithm: Algorithm, start: u64, checks: u64) -> u64 {
    let q = Quota::new(3, "1h".parse().unwrap(), algorithm).unwrap();
    let mut s = LimitState::full(algorithm);
    let mut allowed = 0;
    for i in 0..checks {
        let now = start.saturating_add(i * SEC);
        let d = s.decide(&q, now, 1);
        assert!(d.reset_at >= now || d.reset_at == u64::MAX, "{algorithm}");
        if d.allowed {
            s.consume(&q, now, 1);
            allowed += 1;
        }
    }
    allowed
}

#[test]
fn no_algorithm_wraps_time_near_the_end_of_u64() {
    for algorithm in Algorithm::ALL {
        for start in [
            MAX_TIME - HOUR / 2,
            u64::MAX - HOUR / 2,
            u64::MAX - 10 * SEC,
        ] {
            let allowed = allowed_of(algorithm, start, 50);
            assert!(
                allowed <= 3,
                "{algorithm} from {start}: {allowed} of 50 allowed on 3 per hour"
            );
        }
    }
}

#[test]
fn a_clock_past_the_end_of_time_never_admits_more_than_the_rate() {
    // The limiter may refuse such a clock outright; it must never wrap a decision.
    let (_tmp, dir) = data_dir();
    let clock = Arc::new(ManualClock::new(u64::MAX - HOUR / 2));
    let limiter = open_at(&dir, SyncMode::Batch, &clock);
    let mut allowed = 0;
    for algorithm in Algorithm::ALL {
        let key = algorithm.name();
        match limiter.limit(key, quota(3, "1h", algorithm)) {
            Ok(_) => {}
            Err(Error::InvalidArgument { .. }) => continue,
            Err(e) => panic!("{e}"),
        }
        for _ in 0..50 {
            match limiter.check(key, 1) {
                Ok(d) => allowed += u64::from(d.allowed),
                Err(Error::InvalidArgument { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert!(allowed <= 3, "{key}: {allowed} of 50 allowed on 3 per hour");
        allowed = 0;
    }
}

#[test]
fn max_time_leaves_room_for_the_longest_period() {
    // Year 2500, UTC.
    assert_eq!(MAX_TIME, 16_725_225_600 * SEC);
    assert!(MAX_TIME.checked_add(MAX_PERIOD_MS * MS).is_some());
    assert!(u128::from(MAX_TIME) * u128::from(MAX_RATE) * 2 < u128::MAX / 2);
    assert_eq!(validate_time(MAX_TIME).unwrap(), MAX_TIME);
    assert!(matches!(
        validate_time(MAX_TIME + 1),
        Err(Error::InvalidArgument { key: None, .. })
    ));
}

#[test]
fn a_manual_clock_refuses_to_move_past_max_time() {
    let clock = ManualClock::new(1_700_000_000 * SEC);
    // 1e10 s twice used to wrap u64 and send the clock back to 1970.
    clock.try_advance(10_000_000_000 * SEC).unwrap();
    assert!(clock.try_advance(10_000_000_000 * SEC).is_err());
    assert_eq!(
        clock.now(),
        11_700_000_000 * SEC,
        "unchanged after a refusal"
    );
    clock.try_advance(SEC).unwrap();
    assert_eq!(clock.now(), 11_700_000_001 * SEC);
    assert!(matches!(
        clock.try_set(MAX_TIME + 1),
        Err(Error::InvalidArgument { key: None, .. })
    ));
    clock.try_set(MAX_TIME).unwrap();
    assert!(clock.try_advance(1).is_err());
    assert_eq!(clock.now(), MAX_TIME);
    clock.try_set(0).unwrap();
    assert_eq!(clock.now(), 0);
}

#[test]
#[should_panic(expected = "MAX_TIME")]
fn advancing_a_manual_clock_past_max_time_panics_rather_than_wraps() {
    let clock = ManualClock::new(1_700_000_000 * SEC);
    clock.advance(10_000_000_000 * SEC);
    clock.advance(10_000_000_000 * SEC);
}
