//! Fixed window counter: windows aligned to multiples of `per` since the Unix epoch.
//!
//! A window's end saturates: it cannot overflow up to `MAX_TIME`, and past it only the
//! reported reset time stops being exact (`retry_after` is computed without it).

use crate::algorithm::Quota;
use crate::clock::UnixNanos;
use crate::decision::Decision;

/// State of a fixed window counter: which window, and how much it has used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FixedWindow {
    /// Start of the window that `used` belongs to.
    pub start: UnixNanos,
    /// Units consumed in that window.
    pub used: u64,
}

impl FixedWindow {
    fn used_at(&self, window: UnixNanos) -> u64 {
        if self.start == window {
            self.used
        } else {
            0
        }
    }

    pub(crate) fn decide(&self, quota: &Quota, now: UnixNanos, cost: u64) -> Decision {
        let per = quota.per_ns();
        let window = now - now % per;
        let used = self.used_at(window);
        let allowed = used.saturating_add(cost) <= quota.rate();
        let used_after = if allowed { used + cost } else { used };
        let end = window.saturating_add(per);
        Decision {
            allowed,
            remaining: quota.rate().saturating_sub(used_after),
            reset_at: if used_after == 0 { now } else { end },
            retry_after: if allowed { 0 } else { per - now % per },
            limit: quota.rate(),
            algorithm: quota.algorithm(),
            cost,
            shadow_denied: false,
        }
    }

    #[inline]
    pub(crate) fn consume(&mut self, quota: &Quota, now: UnixNanos, cost: u64) -> Option<u64> {
        let per = quota.per_ns();
        let window = now - now % per;
        self.used = self.used_at(window).saturating_add(cost);
        self.start = window;
        quota.rate().checked_sub(self.used)
    }

    /// Gives back `cost` units of the current window (not below zero); units of an
    /// earlier window are gone anyway. Returns false, changing nothing, when the current
    /// window has used nothing.
    pub(crate) fn refund(&mut self, quota: &Quota, now: UnixNanos, cost: u64) -> bool {
        let per = quota.per_ns();
        let window = now - now % per;
        if self.used_at(window) == 0 {
            return false;
        }
        self.used = self.used.saturating_sub(cost);
        true
    }
}

#[cfg(test)]
mod tests {
    use crate::algorithm::{Algorithm, LimitState, Quota};
    use crate::duration::Period;

    const DAY: u64 = 86_400 * 1_000_000_000;

    #[test]
    fn day_windows_start_at_midnight_utc() {
        let q = Quota::new(
            2,
            "1d".parse::<Period>().unwrap(),
            Algorithm::FixedWindowCounter,
        )
        .unwrap();
        let midnight = 19_000 * DAY;
        let mut s = LimitState::full(Algorithm::FixedWindowCounter);
        let late = midnight + DAY - 1_000;
        s.consume(&q, late, 2);
        let denied = s.decide(&q, late, 1);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, 1_000);
        assert_eq!(denied.reset_at, midnight + DAY);
        let next = s.decide(&q, midnight + DAY, 2);
        assert!(next.allowed);
        assert_eq!(next.remaining, 0);
    }
}
