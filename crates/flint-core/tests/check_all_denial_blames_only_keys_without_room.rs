//! A denied `check_all` counts the denial only on the keys that lacked room; the other
//! keys' history says another key blocked them. The same after replaying the log and
//! after loading a snapshot.

mod common;

use std::sync::Arc;

use common::{data_dir, open_at, quota, START};
use flint_core::{Algorithm, Counters, Limiter, ManualClock, SyncMode, TopBy};

fn keys(ranked: &[flint_core::Status]) -> Vec<&str> {
    ranked.iter().map(|s| s.key.as_str()).collect()
}

fn assert_blame(limiter: &Limiter, when: &str) {
    assert_eq!(
        keys(&limiter.top(TopBy::Denied, 10).unwrap()),
        ["full"],
        "{when}"
    );
    assert_eq!(
        keys(&limiter.top(TopBy::DeniedCost, 10).unwrap()),
        ["full"],
        "{when}"
    );
    let roomy = limiter.status("roomy").unwrap().unwrap();
    assert_eq!(
        roomy.counters,
        Counters {
            allowed: 1,
            denied: 0,
            allowed_cost: 2,
            denied_cost: 0,
            shadow_denied: 0,
        },
        "{when}"
    );
    assert_eq!(roomy.last_seen, Some(START), "{when}");
    let full = limiter.status("full").unwrap().unwrap();
    assert_eq!(
        full.counters,
        Counters {
            allowed: 2,
            denied: 1,
            allowed_cost: 2,
            denied_cost: 1,
            shadow_denied: 0,
        },
        "{when}"
    );
    let roomy_history = limiter.history("roomy", 10).unwrap();
    let blocked: Vec<(bool, bool, u64, u64)> = roomy_history
        .iter()
        .map(|h| (h.allowed, h.blocked_by_other, h.cost, h.remaining))
        .collect();
    assert_eq!(
        blocked,
        [(true, false, 2, 8), (false, true, 3, 8)],
        "{when}: the allowed check-all, then the one another key blocked"
    );
    let full_history = limiter.history("full", 10).unwrap();
    let last = full_history.last().unwrap();
    assert!(!last.allowed && !last.blocked_by_other, "{when}: {last:?}");
    assert_eq!(last.cost, 1);
}

#[test]
fn a_denied_check_all_counts_the_denial_only_on_keys_that_lacked_room() {
    let (_tmp, dir) = data_dir();
    let clock = Arc::new(ManualClock::new(START));
    let limiter = open_at(&dir, SyncMode::Always, &clock);
    limiter
        .limit("roomy", quota(10, "1m", Algorithm::TokenBucket))
        .unwrap();
    limiter
        .limit("full", quota(2, "1m", Algorithm::SlidingWindowLog))
        .unwrap();
    let both = limiter.check_all(&[("roomy", 2), ("full", 1)]).unwrap();
    assert!(both.allowed);
    limiter.check("full", 1).unwrap();
    let denied = limiter.check_all(&[("roomy", 3), ("full", 1)]).unwrap();
    assert!(!denied.allowed);
    assert_eq!(denied.denied_key.as_deref(), Some("full"));
    assert_blame(&limiter, "live");
    limiter.close().unwrap();

    let limiter = open_at(&dir, SyncMode::Always, &clock);
    assert_blame(&limiter, "after replaying the log");
    limiter.compact().unwrap();
    limiter.close().unwrap();

    let limiter = open_at(&dir, SyncMode::Always, &clock);
    assert_blame(&limiter, "after loading the snapshot");
    limiter.close().unwrap();
}
