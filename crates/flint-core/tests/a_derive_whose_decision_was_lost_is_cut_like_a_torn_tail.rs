//! The first decision on a key a template covers is written as a derive record and
//! the check after it. A power loss can keep a prefix of that write (or, for a
//! check-all, of the records it writes one after another): a derive with no decision
//! after it. Recovery cuts such derives like a torn tail, so the directory reopens in
//! a state the engine produced (no key that never had a decision), and the ids keep
//! agreeing with the log afterwards.

mod common;

use std::sync::Arc;

use common::{quota, START};
use flint_core::backend::MemoryBackend;
use flint_core::{Algorithm, Limiter, ManualClock, Options, SyncMode};

fn options(clock: &Arc<ManualClock>, backend: &MemoryBackend) -> Options {
    Options::default()
        .sync(SyncMode::Batch)
        .clock(clock.clone())
        .flush_every_ms(3_600_000)
        .flush_every_events(u64::MAX)
        .backend(Arc::new(backend.clone()))
}

#[test]
fn a_derive_without_its_decision_reopens_as_if_never_written() {
    let clock = Arc::new(ManualClock::new(START));
    let backend = MemoryBackend::new();
    let limiter = Limiter::open("d", options(&clock, &backend)).unwrap();
    limiter
        .limit("t:*", quota(5, "1m", Algorithm::TokenBucket))
        .unwrap();
    limiter.check("t:0", 1).unwrap();
    // The size of a check record of a key that exists.
    let before = common::log_len(&limiter);
    limiter.check("t:0", 1).unwrap();
    let check_len = common::log_len(&limiter) - before;
    let before = common::log_len(&limiter);
    limiter.check("t:1", 1).unwrap();
    let end = common::log_len(&limiter);
    assert!(
        end - before > check_len,
        "a derive and a check were written"
    );
    let log = backend.contents("flint.aof").unwrap();
    drop(limiter);

    // The power went after the derive reached the disk, not the check.
    let image = MemoryBackend::new();
    image.put("flint.aof", &log[..(end - check_len) as usize]);
    let reopened = Limiter::open("d", options(&clock, &image)).unwrap();
    let keys: Vec<String> = reopened
        .list(None)
        .unwrap()
        .into_iter()
        .map(|s| s.key)
        .collect();
    assert_eq!(keys, ["t:*", "t:0"], "no key without a decision");
    assert_eq!(reopened.stats().unwrap().template_keys, 1);
    assert_eq!(reopened.doctor().unwrap().templates[0].live_keys, 1);
    assert_eq!(common::log_len(&reopened), before, "the derive was cut");
    // New keys take ids again; the log agrees with the state on every later open.
    assert!(reopened.check("t:2", 2).unwrap().allowed);
    assert!(reopened.check("t:1", 1).unwrap().allowed);
    let live = reopened.list(None).unwrap();
    reopened.close().unwrap();
    let again = Limiter::open("d", options(&clock, &image)).unwrap();
    assert_eq!(again.list(None).unwrap(), live);
    assert_eq!(again.status("t:2").unwrap().unwrap().remaining, 3);
}

#[test]
fn a_check_all_cut_between_its_derives_and_its_decision_reopens_without_them() {
    let clock = Arc::new(ManualClock::new(START));
    let backend = MemoryBackend::new();
    let limiter = Limiter::open("d", options(&clock, &backend)).unwrap();
    limiter
        .limit("t:*", quota(5, "1m", Algorithm::SlidingWindowLog))
        .unwrap();
    limiter
        .limit("own", quota(5, "1m", Algorithm::FixedWindowCounter))
        .unwrap();
    let before = common::log_len(&limiter);
    // Two derives, then the check-all record: every cut before the check-all's end
    // leaves the state as before the call.
    assert!(
        limiter
            .check_all(&[("t:a", 1), ("own", 1), ("t:b", 2)])
            .unwrap()
            .allowed
    );
    let end = common::log_len(&limiter);
    let log = backend.contents("flint.aof").unwrap();
    drop(limiter);
    for cut in before..end {
        let image = MemoryBackend::new();
        image.put("flint.aof", &log[..cut as usize]);
        let reopened = Limiter::open("d", options(&clock, &image))
            .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let keys: Vec<String> = reopened
            .list(None)
            .unwrap()
            .into_iter()
            .map(|s| s.key)
            .collect();
        assert_eq!(keys, ["own", "t:*"], "cut at {cut}");
        assert_eq!(reopened.stats().unwrap().template_keys, 0, "cut at {cut}");
        assert_eq!(common::log_len(&reopened), before, "cut at {cut}");
        assert!(
            reopened
                .check_all(&[("t:b", 1), ("t:c", 1)])
                .unwrap()
                .allowed
        );
        let live = reopened.list(None).unwrap();
        reopened.close().unwrap();
        let again = Limiter::open("d", options(&clock, &image)).unwrap();
        assert_eq!(again.list(None).unwrap(), live, "cut at {cut}");
    }
}
