//! Property: whatever sequence of calls the engine serves (reconfigurations up and down,
//! bursts above and below the rate and back, algorithm changes, resets, refunds, removals, all-or-nothing checks, a clock stepping back,
//! compactions; templates and keys made from them, limits in shadow mode, sweeps), the
//! files it writes pass every consistency check of replay and snapshot loading, and
//! reopen to the state that was live.

use std::sync::Arc;

use flint_core::{Algorithm, Error, Limiter, ManualClock, Options, Period, Quota, SyncMode};
use proptest::prelude::*;

const T0: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;
/// Configured keys, two templates (`t:*` and the longer `t:a*`), and keys that they
/// cover (until one gets a limit of its own). Checks of a template are refused.
const KEYS: [&str; 8] = ["a", "b", "c", "t:*", "t:a*", "t:1", "t:a1", "t:a2"];

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    StepBack(u64),
    /// Key, rate, period, algorithm, burst, shadow mode.
    Limit(usize, u64, u64, Algorithm, Option<u64>, bool),
    Check(usize, u64),
    CheckAll(usize, u64, usize, u64),
    Reset(usize),
    Refund(usize, u64),
    Remove(usize),
    Compact,
    Sweep,
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![
        Just(Algorithm::TokenBucket),
        Just(Algorithm::SlidingWindowLog),
        Just(Algorithm::FixedWindowCounter),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0usize..KEYS.len();
    prop_oneof![
        3 => prop_oneof![Just(0u64), 1u64..1_000, (1u64..3_000).prop_map(|ms| ms * MS)]
            .prop_map(Op::Advance),
        1 => (1u64..2_000).prop_map(|ms| Op::StepBack(ms * MS)),
        3 => (key.clone(), 1u64..12, 1u64..3_000, algorithm(), prop::option::of(1u64..30), prop::bool::weighted(0.2))
            .prop_map(|(k, rate, per, a, burst, shadow)| Op::Limit(k, rate, per, a, burst, shadow)),
        8 => (key.clone(), 1u64..12).prop_map(|(k, cost)| Op::Check(k, cost)),
        3 => (key.clone(), 1u64..6, key.clone(), 1u64..6)
            .prop_map(|(a, ca, b, cb)| Op::CheckAll(a, ca, b, cb)),
        1 => key.clone().prop_map(Op::Reset),
        2 => (key.clone(), 1u64..12).prop_map(|(k, cost)| Op::Refund(k, cost)),
        1 => key.prop_map(Op::Remove),
        1 => Just(Op::Compact),
        2 => Just(Op::Sweep),
    ]
}

/// Calls that can never succeed (an unknown key, a cost above the rate) are fine; a
/// storage error is not.
fn tolerate<T>(result: flint_core::Result<T>) {
    match result {
        Ok(_) | Err(Error::LimitNotFound { .. } | Error::InvalidArgument { .. }) => {}
        Err(e) => panic!("{e}"),
    }
}

type Snapshot = (
    Vec<flint_core::Status>,
    Vec<Vec<flint_core::HistoryEvent>>,
    Vec<flint_core::Status>,
    Vec<flint_core::Status>,
    Vec<(String, usize, usize)>,
);

fn state(limiter: &Limiter) -> Snapshot {
    let list = limiter.list(None).unwrap();
    let histories = list
        .iter()
        .map(|s| limiter.history(&s.key, 1000).unwrap())
        .collect();
    let templates = limiter
        .doctor()
        .unwrap()
        .templates
        .into_iter()
        .map(|t| (t.template, t.live_keys, t.remembered_keys))
        .collect();
    (
        list,
        histories,
        limiter.top(flint_core::TopBy::Checks, 100).unwrap(),
        limiter.top(flint_core::TopBy::ShadowDenied, 100).unwrap(),
        templates,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_state_the_engine_writes_reopens_to_itself(ops in prop::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let options = Options::default().sync(SyncMode::Batch).clock(clock.clone());
        let live = Limiter::open(dir.path(), options.clone()).unwrap();
        for op in &ops {
            match *op {
                Op::Advance(dt) => clock.advance(dt),
                Op::StepBack(dt) => clock.set(clock_now(&clock) - dt),
                Op::Limit(k, rate, per_ms, algorithm, burst, shadow) => {
                    let period = Period::from_millis(per_ms).unwrap();
                    let quota = Quota::new(rate, period, algorithm).unwrap();
                    // A burst on another algorithm is refused (unless it equals the rate).
                    let quota = match burst.map(|b| quota.with_burst(b)) {
                        None => quota,
                        Some(Ok(q)) => q,
                        Some(Err(_)) => continue,
                    };
                    let quota = if shadow { quota.with_mode(flint_core::Mode::Shadow) } else { quota };
                    tolerate(live.limit(KEYS[k], quota));
                }
                Op::Check(k, cost) => tolerate(live.check(KEYS[k], cost)),
                Op::CheckAll(a, ca, b, cb) => tolerate(live.check_all(&[(KEYS[a], ca), (KEYS[b], cb)])),
                Op::Reset(k) => tolerate(live.reset(KEYS[k])),
                Op::Refund(k, cost) => tolerate(live.refund(KEYS[k], cost)),
                Op::Remove(k) => tolerate(live.remove(KEYS[k])),
                Op::Compact => { live.compact().unwrap(); }
                Op::Sweep => { live.sweep().unwrap(); }
            }
        }
        let before = state(&live);
        live.close().unwrap();
        let reopened = Limiter::open(dir.path(), options.clone())
            .unwrap_or_else(|e| panic!("reopening failed: {e}"));
        prop_assert_eq!(&state(&reopened), &before);
        // Compaction first drops the keys made from templates that are back at full
        // capacity (a sweep): the snapshot holds the state after that.
        reopened.compact().unwrap();
        let compacted = state(&reopened);
        prop_assert!(compacted.0.len() <= before.0.len());
        reopened.close().unwrap();
        let from_snapshot = Limiter::open(dir.path(), options)
            .unwrap_or_else(|e| panic!("reopening the snapshot failed: {e}"));
        prop_assert_eq!(&state(&from_snapshot), &compacted);
    }
}

fn clock_now(clock: &ManualClock) -> u64 {
    use flint_core::Clock;
    clock.now()
}
