//! Time sources: the system's wall clock and a manual clock for tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch (UTC). Every time in the engine and on disk is one.
pub type UnixNanos = u64;

/// Nanoseconds per millisecond.
pub const NANOS_PER_MILLI: u64 = 1_000_000;
/// Nanoseconds per second.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;

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
            .map_or(0, |d| d.as_nanos() as u64)
    }
}

/// A clock that moves only when told to; for deterministic tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    /// A clock that reads `start` until moved.
    pub fn new(start: UnixNanos) -> Self {
        ManualClock {
            now: AtomicU64::new(start),
        }
    }

    /// Moves the clock forward by `nanos`.
    pub fn advance(&self, nanos: u64) {
        self.now.fetch_add(nanos, Ordering::SeqCst);
    }

    /// Sets the clock to `at` (which may be in the past, as a stepped clock can be).
    pub fn set(&self, at: UnixNanos) {
        self.now.store(at, Ordering::SeqCst);
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
