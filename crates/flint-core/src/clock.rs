//! Time sources: the system's wall clock and a manual clock for tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Nanoseconds since the Unix epoch (UTC). Every time in the engine and on disk is one.
pub type UnixNanos = u64;

/// Nanoseconds per millisecond.
pub const NANOS_PER_MILLI: u64 = 1_000_000;
/// Nanoseconds per second.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;

/// The latest time the engine supports: 2500-01-01T00:00:00Z, in nanoseconds since the
/// Unix epoch.
///
/// Chosen so that no arithmetic of the engine can overflow for times up to it: a time
/// plus the longest period ([`MAX_PERIOD_MS`](crate::duration::MAX_PERIOD_MS), 365 days)
/// stays below `u64::MAX` (year 2554), and a time scaled by the largest rate
/// ([`MAX_RATE`](crate::MAX_RATE)) plus a bucket's capacity stays far below `u128::MAX`.
/// Clock readings and [`ManualClock`] moves beyond it are refused (see
/// [`validate_time`]); the algorithms still never wrap a decision for later times (their
/// time arithmetic saturates), they only stop being exact.
pub const MAX_TIME: UnixNanos = 16_725_225_600 * NANOS_PER_SEC;

/// `at`, when it is not after [`MAX_TIME`]; otherwise an `InvalidArgument` error. The
/// limiter calls this on every clock reading before deciding.
pub fn validate_time(at: UnixNanos) -> Result<UnixNanos> {
    if at > MAX_TIME {
        return Err(Error::invalid(
            None,
            format!(
                "time {at} ns since the Unix epoch is after MAX_TIME ({MAX_TIME} ns, 2500-01-01T00:00:00Z), the latest time Flint supports: check the clock"
            ),
        ));
    }
    Ok(at)
}

/// A source of wall-clock time.
///
/// Wall-clock (not monotonic) time, because limiter state must survive a reboot. The
/// engine never lets a key gain quota when this clock steps backwards: it uses the
/// latest time it has seen.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> UnixNanos;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixNanos {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            // Saturates rather than wraps past 2554: the limiter refuses times after
            // MAX_TIME, but a wrapped time would look valid.
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// A clock that moves only when told to; for deterministic tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    /// A clock that reads `start` until moved. `start` is not checked, so that tests can
    /// give a limiter a clock beyond [`MAX_TIME`]; [`try_new`](Self::try_new) checks it.
    pub fn new(start: UnixNanos) -> Self {
        ManualClock {
            now: AtomicU64::new(start),
        }
    }

    /// A clock that reads `start` until moved, or `InvalidArgument` when `start` is
    /// after [`MAX_TIME`].
    pub fn try_new(start: UnixNanos) -> Result<Self> {
        validate_time(start).map(ManualClock::new)
    }

    /// Moves the clock forward by `nanos`, or returns `InvalidArgument` (and leaves the
    /// clock as it was) when that would pass [`MAX_TIME`].
    pub fn try_advance(&self, nanos: u64) -> Result<()> {
        self.now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                now.checked_add(nanos).filter(|at| *at <= MAX_TIME)
            })
            .map(drop)
            .map_err(|now| {
                Error::invalid(
                    None,
                    format!(
                        "cannot advance the clock by {nanos} ns from {now}: it would pass MAX_TIME ({MAX_TIME} ns, 2500-01-01T00:00:00Z), the latest time Flint supports"
                    ),
                )
            })
    }

    /// Sets the clock to `at` (which may be in the past, as a stepped clock can be), or
    /// returns `InvalidArgument` (and leaves the clock as it was) when `at` is after
    /// [`MAX_TIME`].
    pub fn try_set(&self, at: UnixNanos) -> Result<()> {
        self.now.store(validate_time(at)?, Ordering::SeqCst);
        Ok(())
    }

    /// Moves the clock forward by `nanos`.
    ///
    /// # Panics
    ///
    /// When that would pass [`MAX_TIME`]; [`try_advance`](Self::try_advance) returns an
    /// error instead.
    #[track_caller]
    pub fn advance(&self, nanos: u64) {
        if let Err(e) = self.try_advance(nanos) {
            panic!("{e}");
        }
    }

    /// Sets the clock to `at` (which may be in the past, as a stepped clock can be).
    ///
    /// # Panics
    ///
    /// When `at` is after [`MAX_TIME`]; [`try_set`](Self::try_set) returns an error
    /// instead.
    #[track_caller]
    pub fn set(&self, at: UnixNanos) {
        if let Err(e) = self.try_set(at) {
            panic!("{e}");
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixNanos {
        self.now.load(Ordering::SeqCst)
    }
}

/// Converts engine time to float Unix seconds, the form Python and JSON show.
pub fn to_unix_seconds(at: UnixNanos) -> f64 {
    (at / NANOS_PER_SEC) as f64 + (at % NANOS_PER_SEC) as f64 / NANOS_PER_SEC as f64
}

/// Converts float Unix seconds to engine time (negative and NaN become 0).
pub fn from_unix_seconds(seconds: f64) -> UnixNanos {
    if seconds.is_nan() || seconds <= 0.0 {
        return 0;
    }
    (seconds * NANOS_PER_SEC as f64).round() as u64
}
