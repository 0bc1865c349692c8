//! The engine of Flint: an exact, durable, persistent rate limiter.
//!
//! Every decision is an event appended to a log in a data directory before the call
//! returns, so state survives crashes and restarts; arithmetic is exact integers, so a
//! key never admits more than its rate per period.
//!
//! ```
//! use flint_core::{Algorithm, Limiter, Options, Quota};
//!
//! let dir = tempfile::tempdir()?;
//! let limiter = Limiter::open(dir.path().join(".flint"), Options::default())?;
//! let quota = Quota::new(100, "1m".parse()?, Algorithm::TokenBucket)?;
//! limiter.limit("api:user-42", quota)?;
//!
//! let decision = limiter.check("api:user-42", 1)?;
//! assert!(decision.allowed);
//! assert_eq!(decision.remaining, 99);
//!
//! // A denial is a value, not an error.
//! let too_much = limiter.check("api:user-42", 100)?;
//! assert!(!too_much.allowed);
//! limiter.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The Python package, the `flint` command and the HTTP server all call this crate; no
//! rule of the limiter lives anywhere else.

pub mod algorithm;
pub mod clock;
mod compaction;
pub mod decision;
mod doctor;
pub mod duration;
pub mod error;
mod flusher;
mod group_commit;
pub mod inspect;
pub mod limiter;
pub mod registry;
mod storage;
pub mod templates;

/// Administration of a data directory that is not open: repair (what
/// `flint doctor --repair` does) and the names of the directory's files.
pub mod admin {
    pub use crate::storage::format::{LOCK_FILE, LOG_FILE, SNAPSHOT_FILE, TEMP_SUFFIX};
    pub use crate::storage::repair::{apply, plan, RepairPlan, RepairReport};
}

/// The byte-level format (codec, records, snapshots), for the format's own tests and
/// fuzz targets only: not a stable API. Enabled by the `internals` feature.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals {
    pub use crate::storage::{codec, format, record, recovery, snapshot};
}

/// The storage seam: implement [`Backend`](backend::Backend) to put a data directory
/// somewhere else, or use [`MemoryBackend`](backend::MemoryBackend) (in memory, with
/// simulated power loss) in tests.
pub mod backend {
    pub use crate::storage::backend::{Backend, DirLock, LogFile, LogSync, StorageFile};
    pub use crate::storage::file::FileBackend;
    pub use crate::storage::memory::MemoryBackend;
}

pub use algorithm::{Algorithm, Mode, Quota, MAX_RATE};
pub use clock::{
    from_unix_seconds, to_unix_seconds, Clock, ManualClock, SystemClock, UnixNanos, MAX_TIME,
};
pub use decision::{Decision, ItemDecision, LimitChange, MultiDecision};
pub use duration::Period;
pub use error::{Error, Result};
pub use inspect::{
    CheckLevel, DoctorCheck, DoctorReport, ListKind, Stats, Status, TemplateReport, TopBy,
};
pub use limiter::{CompactReport, Deferred, Limiter, Options, Pending, PendingFuture, SyncMode};
pub use registry::{Counters, HistoryEvent};
pub use storage::format::{MAX_CHECK_ALL_ITEMS, MAX_KEY_LEN};
