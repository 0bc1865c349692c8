//! Sliding window log, exact, in runs of (timestamp, running total).
//!
//! Each allowed check adds at most one run, whatever its cost, and checks that share a
//! timestamp share a run. Every run stores the running total of all costs ever consumed
//! up to and including it, so the sum inside the window is one subtraction and the
//! first run still inside the window is a binary search: no check costs O(rate).
//!
//! The running totals wrap at the end of u64 (after ~18 million full-rate checks at
//! the largest rate): every use of them is a difference of two totals, which wrapping
//! arithmetic keeps exact as long as the true difference fits in u64, and it is at most
//! the sum of the runs kept (at most `MAX_RATE`). Expiry compares `now - at` with the
//! period, which cannot overflow for any time (runs are never after `now`); only the
//! reported reset time `at + per` saturates, past `MAX_TIME`.

use std::collections::VecDeque;

use crate::algorithm::Quota;
use crate::clock::UnixNanos;
use crate::decision::Decision;

/// One or more allowed checks at the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// When they were allowed.
    pub at: UnixNanos,
    /// Total of all costs consumed up to and including this run (wrapping at the end
    /// of u64: only differences of totals mean anything).
    pub total: u64,
}

/// State of a sliding window log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlidingLog {
    /// Runs that may still be inside the window, oldest first.
    pub runs: VecDeque<Run>,
    /// Running total at the end of the newest run that has left the window (wrapping,
    /// like the runs' totals).
    pub expired_total: u64,
}

/// Whether a run at `at` has left the window `(now - per, now]`: `at + per <= now`,
/// written so that it cannot overflow.
fn expired(at: UnixNanos, per: u64, now: UnixNanos) -> bool {
    now.saturating_sub(at) >= per
}

impl SlidingLog {
    fn total(&self) -> u64 {
        self.runs.back().map_or(self.expired_total, |r| r.total)
    }

    /// Index of the first run inside the window `(now - per, now]`, and the running
    /// total just before it.
    fn window(&self, per: u64, now: UnixNanos) -> (usize, u64) {
        let first = self.runs.partition_point(|r| expired(r.at, per, now));
        let before = match first.checked_sub(1).and_then(|i| self.runs.get(i)) {
            Some(run) => run.total,
            None => self.expired_total,
        };
        (first, before)
    }

    pub(crate) fn decide(&self, quota: &Quota, now: UnixNanos, cost: u64) -> Decision {
        let per = quota.per_ns();
        let rate = quota.rate();
        let (first, before) = self.window(per, now);
        let total = self.total();
        let used = total.wrapping_sub(before);
        let allowed = used.saturating_add(cost) <= rate;
        let used_after = if allowed { used + cost } else { used };
        let newest = if allowed && cost > 0 {
            Some(now)
        } else {
            self.runs.back().filter(|_| used > 0).map(|r| r.at)
        };
        let retry_after = if allowed {
            0
        } else {
            // The first run whose expiry leaves room for `cost`. The newest run always
            // qualifies (it leaves zero used), because cost <= rate.
            // Running totals only grow, so the predicate is monotone over all runs, and
            // no run before `first` can satisfy it (the request would then be allowed).
            let index = self
                .runs
                .partition_point(|r| total.wrapping_sub(r.total).saturating_add(cost) > rate)
                .max(first);
            let run = self
                .runs
                .get(index)
                .copied()
                .unwrap_or(Run { at: now, total });
            per.saturating_sub(now.saturating_sub(run.at))
        };
        Decision {
            allowed,
            remaining: rate.saturating_sub(used_after),
            reset_at: newest.map_or(now, |at| at.saturating_add(per)),
            retry_after,
            limit: quota.rate(),
            algorithm: quota.algorithm(),
            cost,
            shadow_denied: false,
        }
    }

    pub(crate) fn consume(&mut self, quota: &Quota, now: UnixNanos, cost: u64) -> Option<u64> {
        let per = quota.per_ns();
        while let Some(front) = self.runs.front() {
            if !expired(front.at, per, now) {
                break;
            }
            self.expired_total = front.total;
            self.runs.pop_front();
        }
        let total = self.total().wrapping_add(cost);
        match self.runs.back_mut() {
            Some(back) if back.at == now => back.total = total,
            _ => self.runs.push_back(Run { at: now, total }),
        }
        // Every run left is inside the window now: their sum is what the window uses.
        quota
            .rate()
            .checked_sub(total.wrapping_sub(self.expired_total))
    }

    /// Gives back `cost` units from the most recent runs inside the window, newest
    /// first: a run given back whole is removed, the last one touched keeps the rest of
    /// its cost. Never below zero: at most what the window holds is given back. Runs
    /// that have left the window are dropped first (as [`consume`](Self::consume) does).
    /// Returns false, changing nothing, when the window holds nothing.
    pub(crate) fn refund(&mut self, quota: &Quota, now: UnixNanos, cost: u64) -> bool {
        let (first, before) = self.window(quota.per_ns(), now);
        if self.total().wrapping_sub(before) == 0 {
            return false;
        }
        self.runs.drain(..first);
        self.expired_total = before;
        let mut left = cost;
        while left > 0 {
            let previous = match self.runs.len().checked_sub(2) {
                Some(i) => self.runs.get(i).map_or(self.expired_total, |r| r.total),
                None => self.expired_total,
            };
            let Some(newest) = self.runs.back_mut() else {
                break;
            };
            let size = newest.total.wrapping_sub(previous);
            if size <= left {
                self.runs.pop_back();
                left -= size;
            } else {
                newest.total = newest.total.wrapping_sub(left);
                left = 0;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use crate::algorithm::{Algorithm, LimitState, Quota};
    use crate::duration::Period;

    const T0: u64 = 1_700_000_000_000_000_000;
    const SEC: u64 = 1_000_000_000;

    #[test]
    fn an_event_exactly_per_old_no_longer_counts() {
        let q = Quota::new(
            2,
            "1s".parse::<Period>().unwrap(),
            Algorithm::SlidingWindowLog,
        )
        .unwrap();
        let mut s = LimitState::full(Algorithm::SlidingWindowLog);
        s.consume(&q, T0, 1);
        s.consume(&q, T0 + SEC / 2, 1);
        let denied = s.decide(&q, T0 + SEC - 1, 1);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, 1);
        assert!(s.decide(&q, T0 + SEC, 1).allowed);
        assert!(!s.decide(&q, T0 + SEC, 2).allowed);
        assert_eq!(s.decide(&q, T0 + SEC, 2).retry_after, SEC / 2);
    }

    #[test]
    fn a_large_cost_is_one_run() {
        let q = Quota::new(
            1_000_000,
            "1m".parse::<Period>().unwrap(),
            Algorithm::SlidingWindowLog,
        )
        .unwrap();
        let mut s = LimitState::full(Algorithm::SlidingWindowLog);
        s.consume(&q, T0, 999_999);
        s.consume(&q, T0, 1);
        let LimitState::SlidingWindowLog(log) = &s else {
            unreachable!()
        };
        assert_eq!(log.runs.len(), 1);
    }
}
