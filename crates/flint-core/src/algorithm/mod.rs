//! The three algorithms, as pure functions of (quota, state, now, cost).
//!
//! `decide` never changes state; `consume` applies an allowed decision. Recovery replays
//! the log through the same `consume`, so replay cannot decide differently from live
//! operation. All arithmetic is on integers.

mod fixed_window_counter;
mod sliding_window_log;
mod token_bucket;

use std::fmt;
use std::str::FromStr;

pub use fixed_window_counter::FixedWindow;
pub use sliding_window_log::{Run, SlidingLog};
pub use token_bucket::TokenBucket;

use crate::clock::UnixNanos;
use crate::decision::Decision;
use crate::duration::Period;
use crate::error::{Error, Result};

/// The largest `rate` a limit may have: large enough for any real quota, small enough
/// that every intermediate product fits the engine's integers.
pub const MAX_RATE: u64 = 1_000_000_000_000;

/// A rate-limiting algorithm. The discriminants are persisted: never reorder them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Algorithm {
    /// Capacity `rate`, refilled continuously at `rate / per` (GCRA).
    TokenBucket = 1,
    /// Exact: the costs allowed in `(now - per, now]` never sum past `rate`.
    SlidingWindowLog = 2,
    /// At most `rate` per window; windows are aligned to multiples of `per` since the
    /// Unix epoch (UTC).
    FixedWindowCounter = 3,
}

impl Algorithm {
    /// Every algorithm, in the order of its discriminant.
    pub const ALL: [Algorithm; 3] = [
        Algorithm::TokenBucket,
        Algorithm::SlidingWindowLog,
        Algorithm::FixedWindowCounter,
    ];

    /// The name users write: `token_bucket`, `sliding_window_log`, `fixed_window_counter`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::TokenBucket => "token_bucket",
            Algorithm::SlidingWindowLog => "sliding_window_log",
            Algorithm::FixedWindowCounter => "fixed_window_counter",
        }
    }

    /// The algorithm persisted as `code`, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Algorithm::ALL.into_iter().find(|a| *a as u8 == code)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| {
                Error::invalid(
                    None,
                    format!("algorithm {name:?} is unknown: use one of token_bucket, sliding_window_log, fixed_window_counter"),
                )
            })
    }
}

/// Whether a limit denies what it would deny, or only counts it. Persisted: never
/// renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Mode {
    /// Checks over the limit are denied.
    #[default]
    Enforce = 0,
    /// Every check is allowed; one the limit would have denied is counted and
    /// remembered as `shadow_denied`, and consumes nothing (the state moves exactly as
    /// an enforced limit's would). For trying a limit on real traffic before enforcing
    /// it.
    Shadow = 1,
}

impl Mode {
    /// `enforce` or `shadow`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }

    /// The mode persisted as `code`, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        [Mode::Enforce, Mode::Shadow]
            .into_iter()
            .find(|m| *m as u8 == code)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        match name {
            "enforce" => Ok(Mode::Enforce),
            "shadow" => Ok(Mode::Shadow),
            _ => Err(Error::invalid(
                None,
                format!("mode {name:?} is unknown: use \"enforce\" (deny over the limit, the default) or \"shadow\" (allow everything, count what would be denied)"),
            )),
        }
    }
}

/// A validated limit: at most `rate` units per `period`, enforced by `algorithm`, with
/// a capacity of `burst` units (the rate unless [`with_burst`](Quota::with_burst) says
/// otherwise; only a token bucket may have another), in a [`Mode`] (enforced unless
/// [`with_mode`](Quota::with_mode) says otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    rate: u64,
    period: Period,
    algorithm: Algorithm,
    burst: u64,
    mode: Mode,
}

impl Quota {
    /// A quota, or an error naming the bad value and the fix.
    pub fn new(rate: u64, period: Period, algorithm: Algorithm) -> Result<Self> {
        if rate == 0 {
            return Err(Error::invalid(
                None,
                "rate 0 is invalid: the rate must be a whole number of at least 1",
            ));
        }
        if rate > MAX_RATE {
            return Err(Error::invalid(
                None,
                format!("rate {rate} is too large: the largest rate is {MAX_RATE}; use a shorter period instead"),
            ));
        }
        Ok(Quota {
            rate,
            period,
            algorithm,
            burst: rate,
            mode: Mode::Enforce,
        })
    }

    /// This quota with a capacity of `burst` units, or an error naming the bad value and
    /// the fix. A token bucket holds at most `burst` units and refills at `rate` per
    /// period: a burst larger than the rate allows bursts above the sustained rate, a
    /// smaller one smooths traffic at the same sustained rate. Any burst from 1 to
    /// [`MAX_RATE`] is allowed for a token bucket; the other algorithms count units
    /// per window, where the capacity is the rate, so they accept only `burst == rate`
    /// (which changes nothing).
    pub fn with_burst(self, burst: u64) -> Result<Self> {
        if burst == 0 {
            return Err(Error::invalid(
                None,
                "burst 0 is invalid: the burst must be a whole number of at least 1",
            ));
        }
        if burst > MAX_RATE {
            return Err(Error::invalid(
                None,
                format!("burst {burst} is too large: the largest burst is {MAX_RATE}"),
            ));
        }
        if burst != self.rate && self.algorithm != Algorithm::TokenBucket {
            return Err(Error::invalid(
                None,
                format!(
                    "burst {burst} is invalid for {}: burst applies to token_bucket only ({} holds at most its rate, {} units, per window); use the token_bucket algorithm, or a larger rate, or leave burst out",
                    self.algorithm, self.algorithm, self.rate
                ),
            ));
        }
        Ok(Quota { burst, ..self })
    }

    /// This quota in `mode`.
    #[must_use]
    pub fn with_mode(self, mode: Mode) -> Self {
        Quota { mode, ..self }
    }

    /// Whether checks over the limit are denied or only counted.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether the limit is in shadow mode.
    pub fn is_shadow(&self) -> bool {
        self.mode == Mode::Shadow
    }

    /// The sustained rate: units per period.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// The capacity: the most units available at once, and so the largest allowed cost.
    /// The rate unless the quota was made [`with_burst`](Self::with_burst).
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Whether the capacity differs from the rate (only possible for a token bucket):
    /// such a quota is logged with a `configure_burst` record.
    pub fn has_burst(&self) -> bool {
        self.burst != self.rate
    }

    /// The period.
    pub fn period(&self) -> Period {
        self.period
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub(crate) fn per_ns(&self) -> u64 {
        self.period.as_nanos()
    }
}

/// The state one key keeps for its algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitState {
    /// State of a token bucket.
    TokenBucket(TokenBucket),
    /// State of a sliding window log (boxed: it is the largest and the rarest).
    SlidingWindowLog(Box<SlidingLog>),
    /// State of a fixed window counter.
    FixedWindowCounter(FixedWindow),
}

impl LimitState {
    /// The state of a key at full capacity.
    pub fn full(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::TokenBucket => LimitState::TokenBucket(TokenBucket::default()),
            Algorithm::SlidingWindowLog => LimitState::SlidingWindowLog(Box::default()),
            Algorithm::FixedWindowCounter => LimitState::FixedWindowCounter(FixedWindow::default()),
        }
    }

    /// Decides whether `cost` units fit at `now`, without changing anything.
    /// `cost` must be in `1..=quota.burst()`.
    pub fn decide(&self, quota: &Quota, now: UnixNanos, cost: u64) -> Decision {
        match self {
            LimitState::TokenBucket(s) => s.decide(quota, now, cost),
            LimitState::SlidingWindowLog(s) => s.decide(quota, now, cost),
            LimitState::FixedWindowCounter(s) => s.decide(quota, now, cost),
        }
    }

    /// Consumes `cost` units at `now`: applies a decision that was allowed. Returns the
    /// units remaining afterwards (what [`remaining`](Self::remaining) would say), or
    /// `None` when the key went beyond its quota, which happens exactly when
    /// [`decide`](Self::decide) would have denied it (replay checks every allowed
    /// record so).
    #[inline]
    pub fn consume(&mut self, quota: &Quota, now: UnixNanos, cost: u64) -> Option<u64> {
        match self {
            LimitState::TokenBucket(s) => s.consume(quota, now, cost),
            LimitState::SlidingWindowLog(s) => s.consume(quota, now, cost),
            LimitState::FixedWindowCounter(s) => s.consume(quota, now, cost),
        }
    }

    /// Gives back `cost` units consumed earlier (a request that failed and should not
    /// count), at `now`. Token bucket: `cost` units back, capped at the capacity; fixed
    /// window: subtracted from the current window's count, not below zero; sliding window
    /// log: removed from the most recent runs inside the window, newest first, not below
    /// zero. A refund never leaves more than `rate` available, and never makes room in a
    /// window that a check did not use. Returns whether anything changed: when the key is
    /// already at full capacity it changes nothing (not even expired runs are dropped).
    pub fn refund(&mut self, quota: &Quota, now: UnixNanos, cost: u64) -> bool {
        match self {
            LimitState::TokenBucket(s) => s.refund(quota, now, cost),
            LimitState::SlidingWindowLog(s) => s.refund(quota, now, cost),
            LimitState::FixedWindowCounter(s) => s.refund(quota, now, cost),
        }
    }

    /// Units that a request could use at `now`, and when the key is full again.
    pub fn peek(&self, quota: &Quota, now: UnixNanos) -> (u64, UnixNanos) {
        // A zero-cost look: every algorithm's decide handles cost 0 as "nothing asked".
        let outcome = self.decide(quota, now, 0);
        (outcome.remaining, outcome.reset_at)
    }

    /// Whether the key is at full capacity at `now`: its state then decides exactly as
    /// [`LimitState::full`] would, so a key made from a template can be dropped.
    pub fn is_full(&self, quota: &Quota, now: UnixNanos) -> bool {
        self.remaining(quota, now) >= quota.burst()
    }

    /// Units available at `now` (the first half of [`peek`](Self::peek), cheaper).
    pub fn remaining(&self, quota: &Quota, now: UnixNanos) -> u64 {
        match self {
            LimitState::TokenBucket(s) => s.remaining(quota, now),
            _ => self.peek(quota, now).0,
        }
    }

    /// The state after reconfiguring from `old` to `new` at `now`.
    ///
    /// With the same algorithm the units already consumed carry over (capped at the new
    /// capacity), so `remaining` becomes `max(0, new_burst - consumed)`, where
    /// `consumed = old_burst - old_remaining` (the burst is the rate unless set); with another
    /// algorithm the key starts at full capacity. A sliding window log keeps its
    /// recorded events, which then expire by the new period.
    #[must_use]
    pub fn reconfigure(&self, old: &Quota, new: &Quota, now: UnixNanos) -> Self {
        if old.algorithm() != new.algorithm() {
            return LimitState::full(new.algorithm());
        }
        if let LimitState::SlidingWindowLog(log) = self {
            return LimitState::SlidingWindowLog(log.clone());
        }
        let (remaining, _) = self.peek(old, now);
        let consumed = old.burst().saturating_sub(remaining).min(new.burst());
        let mut state = LimitState::full(new.algorithm());
        if consumed > 0 {
            // Within the new quota: at most its capacity is consumed at once. For a
            // token bucket this sets tat = now + consumed emission intervals exactly, so
            // remaining is exactly new_burst - consumed.
            state.consume(new, now, consumed);
        }
        state
    }
}
