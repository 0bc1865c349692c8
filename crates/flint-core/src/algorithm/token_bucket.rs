//! Token bucket as GCRA: one "theoretical arrival time" per key, in exact integers.
//!
//! Time is scaled by `rate` (one scaled unit is `1/rate` ns), so the emission interval
//! of one token is exactly `per_ns` scaled units and no division is ever rounded in
//! the state. The bucket is full when the theoretical arrival time is not after now.
//!
//! The capacity is `burst` tokens, `burst * per_ns` scaled units (the burst is the
//! rate unless the quota sets one).
//!
//! Scaled times are u128: `u64::MAX * MAX_RATE` plus a capacity (at most
//! `MAX_RATE * per_ns`) is far below `u128::MAX`, so no time, even past `MAX_TIME`,
//! overflows them.

use crate::algorithm::Quota;
use crate::clock::UnixNanos;
use crate::decision::Decision;

/// State of a token bucket: the theoretical arrival time, scaled by `rate`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenBucket {
    /// Theoretical arrival time in units of `1/rate` nanoseconds.
    pub tat: u128,
}

impl TokenBucket {
    pub(crate) fn decide(&self, quota: &Quota, now: UnixNanos, cost: u64) -> Decision {
        let rate = u128::from(quota.rate());
        let per = u128::from(quota.per_ns());
        let now_scaled = u128::from(now) * rate;
        let capacity = u128::from(quota.burst()) * per;
        let base = self.tat.max(now_scaled);
        let after = base + u128::from(cost) * per;
        if after - now_scaled <= capacity {
            Decision {
                allowed: true,
                remaining: div(now_scaled + capacity - after, per) as u64,
                reset_at: scaled_to_nanos_ceil(after, rate).max(now),
                retry_after: 0,
                limit: quota.burst(),
                algorithm: quota.algorithm(),
                cost,
                shadow_denied: false,
            }
        } else {
            // Denied means base > now: allowed again at the first t with
            // base + cost*per - t*rate <= capacity.
            let allowed_at = scaled_to_nanos_ceil(after - capacity, rate);
            Decision {
                allowed: false,
                remaining: div((now_scaled + capacity).saturating_sub(base), per) as u64,
                reset_at: scaled_to_nanos_ceil(base, rate).max(now),
                retry_after: allowed_at.saturating_sub(now),
                limit: quota.burst(),
                algorithm: quota.algorithm(),
                cost,
                shadow_denied: false,
            }
        }
    }

    /// Units available at `now`: `decide(now, 0).remaining` without the rest.
    pub(crate) fn remaining(&self, quota: &Quota, now: UnixNanos) -> u64 {
        let rate = u128::from(quota.rate());
        let per = u128::from(quota.per_ns());
        let now_scaled = u128::from(now) * rate;
        let base = self.tat.max(now_scaled);
        // Saturating: only a state beyond the capacity (refused on load) could go below.
        div(
            (now_scaled + u128::from(quota.burst()) * per).saturating_sub(base),
            per,
        ) as u64
    }

    #[inline]
    pub(crate) fn consume(&mut self, quota: &Quota, now: UnixNanos, cost: u64) -> Option<u64> {
        let rate = u128::from(quota.rate());
        let per = u128::from(quota.per_ns());
        let now_scaled = u128::from(now) * rate;
        self.tat = self.tat.max(now_scaled) + u128::from(cost) * per;
        // Within capacity: tat - now_scaled <= burst * per.
        let room = (now_scaled + u128::from(quota.burst()) * per).checked_sub(self.tat)?;
        Some(div(room, per) as u64)
    }

    /// Gives back `cost` units at `now`, capped at the capacity (a full bucket stays
    /// full): the theoretical arrival time moves back by `cost` emission intervals, but
    /// never before `now`. Returns false, changing nothing, when the bucket is full.
    pub(crate) fn refund(&mut self, quota: &Quota, now: UnixNanos, cost: u64) -> bool {
        let rate = u128::from(quota.rate());
        let per = u128::from(quota.per_ns());
        let now_scaled = u128::from(now) * rate;
        if self.tat <= now_scaled {
            return false;
        }
        self.tat = self
            .tat
            .saturating_sub(u128::from(cost) * per)
            .max(now_scaled);
        true
    }

    /// Whether the bucket can be the state of a key with `quota` whose latest event was
    /// at `latest`: never more than its capacity consumed ahead of that time.
    pub(crate) fn within(&self, quota: &Quota, latest: UnixNanos) -> bool {
        let rate = u128::from(quota.rate());
        let per = u128::from(quota.per_ns());
        self.tat <= u128::from(latest) * rate + u128::from(quota.burst()) * per
    }
}

/// `a / b`, with a 64-bit division when both fit: usual limits (rate × period below
/// 1.8e19 units·ns) never need the much slower 128-bit one.
fn div(a: u128, b: u128) -> u128 {
    match (u64::try_from(a), u64::try_from(b)) {
        (Ok(a), Ok(b)) => u128::from(a / b),
        _ => a / b,
    }
}

/// Scaled time back to nanoseconds, rounded up; saturates at the end of u64, which
/// only times after `MAX_TIME` can reach.
fn scaled_to_nanos_ceil(scaled: u128, rate: u128) -> UnixNanos {
    UnixNanos::try_from(scaled.div_ceil(rate)).unwrap_or(UnixNanos::MAX)
}

#[cfg(test)]
mod tests {
    use crate::algorithm::{Algorithm, LimitState, Quota};
    use crate::duration::Period;

    const T0: u64 = 1_700_000_000_000_000_000;
    const SEC: u64 = 1_000_000_000;

    fn quota(rate: u64, per: &str) -> Quota {
        Quota::new(rate, per.parse::<Period>().unwrap(), Algorithm::TokenBucket).unwrap()
    }

    #[test]
    fn refills_continuously() {
        let q = quota(10, "10s");
        let mut s = LimitState::full(Algorithm::TokenBucket);
        for i in 0..10 {
            let o = s.decide(&q, T0, 1);
            assert!(o.allowed);
            assert_eq!(o.remaining, 9 - i);
            s.consume(&q, T0, 1);
        }
        let denied = s.decide(&q, T0, 1);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, SEC);
        assert_eq!(denied.reset_at, T0 + 10 * SEC);
        assert!(!s.decide(&q, T0 + SEC - 1, 1).allowed);
        assert!(s.decide(&q, T0 + SEC, 1).allowed);
        assert_eq!(s.peek(&q, T0 + 5 * SEC).0, 5);
    }

    #[test]
    fn retry_after_is_exact_for_uneven_rates() {
        let q = quota(3, "1s");
        let mut s = LimitState::full(Algorithm::TokenBucket);
        s.consume(&q, T0, 3);
        let denied = s.decide(&q, T0, 2);
        assert!(!denied.allowed);
        // Two tokens take 2/3 s = 666_666_666.67 ns: rounded up, never early.
        assert_eq!(denied.retry_after, 666_666_667);
        assert!(!s.decide(&q, T0 + 666_666_666, 2).allowed);
        assert!(s.decide(&q, T0 + 666_666_667, 2).allowed);
    }

    #[test]
    fn a_burst_is_the_capacity_refilled_at_the_rate() {
        let q = quota(10, "1s").with_burst(50).unwrap();
        let mut s = LimitState::full(Algorithm::TokenBucket);
        let first = s.decide(&q, T0, 50);
        assert!(first.allowed);
        assert_eq!((first.remaining, first.limit), (0, 50));
        s.consume(&q, T0, 50);
        let denied = s.decide(&q, T0, 1);
        assert_eq!((denied.allowed, denied.retry_after), (false, SEC / 10));
        assert_eq!(denied.reset_at, T0 + 5 * SEC);
        assert_eq!(s.peek(&q, T0 + SEC).0, 10);
        assert_eq!(s.peek(&q, T0 + 10 * SEC).0, 50, "capped at the burst");
        // A refund is capped at the burst too.
        s.refund(&q, T0 + SEC, 50);
        assert_eq!(s.remaining(&q, T0 + SEC), 50);

        // A burst below the rate: smaller bursts, the same sustained rate.
        let small = quota(10, "1s").with_burst(2).unwrap();
        let mut s = LimitState::full(Algorithm::TokenBucket);
        assert!(!s.decide(&small, T0, 3).allowed);
        s.consume(&small, T0, 2);
        assert!(!s.decide(&small, T0, 1).allowed);
        assert!(s.decide(&small, T0 + SEC / 10, 1).allowed);
        assert_eq!(s.peek(&small, T0 + SEC).0, 2);
    }

    #[test]
    fn reconfiguring_the_burst_carries_the_consumed_units_over() {
        let q = quota(10, "1s");
        let big = q.with_burst(50).unwrap();
        let mut s = LimitState::full(Algorithm::TokenBucket);
        s.consume(&q, T0, 7);
        // 7 consumed of 10: 43 of 50 left.
        let s = s.reconfigure(&q, &big, T0);
        assert_eq!(s.remaining(&big, T0), 43);
        let mut s = s;
        s.consume(&big, T0, 40);
        // 47 consumed of 50: none of 10 left; 47 consumed carried over as 10.
        let s = s.reconfigure(&big, &q, T0);
        assert_eq!(s.remaining(&q, T0), 0);
        assert_eq!(s.remaining(&q, T0 + SEC), 10);
        let odd = quota(3, "7s").with_burst(11).unwrap();
        let s = s.reconfigure(&q, &odd, T0 + SEC / 3);
        // A third of a second later 3.33 units were back: 3 whole remained, 7 consumed,
        // 4 of 11 left, exactly.
        assert_eq!(s.remaining(&odd, T0 + SEC / 3), 4);
    }

    #[test]
    fn burst_is_validated() {
        let q = quota(10, "1s");
        assert!(q.with_burst(0).is_err());
        assert!(q.with_burst(crate::algorithm::MAX_RATE + 1).is_err());
        assert_eq!(q.with_burst(10).unwrap(), q);
        for algorithm in [Algorithm::SlidingWindowLog, Algorithm::FixedWindowCounter] {
            let other = Quota::new(10, "1s".parse().unwrap(), algorithm).unwrap();
            assert_eq!(other.with_burst(10).unwrap(), other);
            let err = other.with_burst(50).unwrap_err().to_string();
            assert!(err.contains("burst applies to token_bucket only"), "{err}");
        }
    }
}
