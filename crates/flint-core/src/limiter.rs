//! The limiter's public API: [`Limiter`], its [`Options`], and [`Deferred`] calls
//! whose durability wait is a future.
//!
//! Every change is an event: appended to the log, then applied to the registry, both
//! under the state lock so the log's order is the order of application. A caller whose
//! event consumed quota or changed configuration then waits, outside the lock, until a
//! sync covers it (`sync=always`; see `group_commit.rs`). The background flusher
//! (`flusher.rs`), compaction (`compaction.rs`) and doctor (`doctor.rs`) live in their
//! own modules.

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use crate::algorithm::{Algorithm, LimitState, Quota};
use crate::clock::{Clock, SystemClock, UnixNanos};
use crate::decision::{Decision, ItemDecision, LimitChange, MultiDecision};
use crate::error::{Error, Result};
use crate::group_commit::{Durable, GroupCommit};
use crate::inspect::{DoctorReport, ListKind, Stats, Status, TopBy};
use crate::registry::{Counters, Entry, HistoryEvent, Registry, DEFAULT_HISTORY_CAPACITY};
use crate::storage::backend::{Backend, DirLock, LogFile};
use crate::storage::file::FileBackend;
use crate::storage::format::{LOG_FILE, MAX_CHECK_ALL_ITEMS, MAX_KEY_LEN};
use crate::storage::record::{CheckAllItem, Event};
use crate::storage::recovery::{self, TornTail};
use crate::storage::sys;
use crate::templates::is_template;

/// How many key ids the background flusher looks at per round for keys made from
/// templates that are back at full capacity (a round holds the state lock for about a
/// millisecond at most).
const SWEEP_IDS_PER_ROUND: u32 = 65_536;

/// A sweep that dropped at least this many keys hands the freed memory back to the
/// system.
const RELEASE_MEMORY_AFTER_DROPS: usize = 4_096;

/// When a call's record must be on disk before the call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Every call that consumed quota or changed configuration returns after an
    /// `fdatasync` covers its record. Survives power loss.
    Always,
    /// Records are written at once (they survive the process being killed) and synced
    /// every `flush_every_events` events or `flush_every_ms`; a power loss can lose the
    /// last unsynced batch.
    Batch,
}

impl SyncMode {
    /// `always` or `batch`.
    pub fn name(self) -> &'static str {
        match self {
            SyncMode::Always => "always",
            SyncMode::Batch => "batch",
        }
    }
}

impl std::str::FromStr for SyncMode {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        match name {
            "always" => Ok(SyncMode::Always),
            "batch" => Ok(SyncMode::Batch),
            _ => Err(Error::invalid(
                None,
                format!("sync mode {name:?} is unknown: use \"always\" (fsync every event, the default) or \"batch\""),
            )),
        }
    }
}

/// How a limiter is opened. Build it from [`Options::default`] with the setters:
///
/// ```
/// use flint_core::{Options, SyncMode};
/// let options = Options::default().sync(SyncMode::Batch).flush_every_ms(50);
/// assert_eq!(options.flush_every_ms, 50);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct Options {
    /// Durability of each call.
    pub sync: SyncMode,
    /// The longest an event stays unsynced (both modes: denials are synced this way).
    pub flush_every_ms: u64,
    /// In batch mode, sync once this many events are unsynced.
    pub flush_every_events: u64,
    /// Compact automatically once the log is this large (and at least as large as the
    /// last snapshot, so a large snapshot is not rewritten for a small log).
    pub compact_threshold_bytes: u64,
    /// Decisions remembered per key for `history()`.
    pub history_capacity: usize,
    /// The time source.
    pub clock: Arc<dyn Clock>,
    /// The storage; `None` means files in the data directory.
    pub backend: Option<Arc<dyn Backend>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync: SyncMode::Always,
            flush_every_ms: 100,
            flush_every_events: 100,
            compact_threshold_bytes: 64 << 20,
            history_capacity: DEFAULT_HISTORY_CAPACITY,
            clock: Arc::new(SystemClock),
            backend: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("sync", &self.sync)
            .field("flush_every_ms", &self.flush_every_ms)
            .field("flush_every_events", &self.flush_every_events)
            .field("compact_threshold_bytes", &self.compact_threshold_bytes)
            .field("history_capacity", &self.history_capacity)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// Sets [`Options::sync`].
    #[must_use]
    pub fn sync(mut self, sync: SyncMode) -> Self {
        self.sync = sync;
        self
    }

    /// Sets [`Options::flush_every_ms`].
    #[must_use]
    pub fn flush_every_ms(mut self, ms: u64) -> Self {
        self.flush_every_ms = ms;
        self
    }

    /// Sets [`Options::flush_every_events`].
    #[must_use]
    pub fn flush_every_events(mut self, events: u64) -> Self {
        self.flush_every_events = events;
        self
    }

    /// Sets [`Options::compact_threshold_bytes`].
    #[must_use]
    pub fn compact_threshold_bytes(mut self, bytes: u64) -> Self {
        self.compact_threshold_bytes = bytes;
        self
    }

    /// Sets [`Options::history_capacity`].
    #[must_use]
    pub fn history_capacity(mut self, capacity: usize) -> Self {
        self.history_capacity = capacity;
        self
    }

    /// Sets [`Options::clock`].
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets [`Options::backend`]: storage other than files in the data directory
    /// (for example [`crate::backend::MemoryBackend`]).
    #[must_use]
    pub fn backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = Some(backend);
        self
    }

    fn validate(&self) -> Result<()> {
        if self.flush_every_ms == 0 || self.flush_every_ms > 3_600_000 {
            return Err(Error::invalid(
                None,
                format!(
                    "flush_every_ms {} is out of range: use 1 to 3600000 milliseconds",
                    self.flush_every_ms
                ),
            ));
        }
        if self.flush_every_events == 0 {
            return Err(Error::invalid(
                None,
                "flush_every_events 0 is invalid: use a positive number of events",
            ));
        }
        Ok(())
    }
}

/// State guarded by the state lock.
pub(crate) struct Core {
    pub(crate) registry: Registry,
    /// The open log; `None` once closed (the file and its mapping are released).
    pub(crate) log: Option<Box<dyn LogFile>>,
    pub(crate) generation: u64,
    /// The offset the log's last `synced` record names.
    pub(crate) marked_through: u64,
    /// The log's salt, which its `synced` records repeat.
    pub(crate) salt: u32,
    scratch: Vec<u8>,
    pub(crate) replayed: u64,
    pub(crate) torn: Option<TornTail>,
    pub(crate) snapshot_bytes: u64,
    /// Where the background sweep goes on from (see [`SWEEP_IDS_PER_ROUND`]).
    sweep_cursor: u32,
}

/// What the limiter's handle, its flusher thread and its futures share.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) options: Options,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) core: Mutex<Core>,
    pub(crate) commit: Arc<GroupCommit>,
    /// One compaction at a time.
    pub(crate) compaction: Mutex<()>,
    /// Why the last automatic compaction failed, if it did (shown by doctor).
    pub(crate) compaction_failure: Mutex<Option<String>>,
    /// Compactions that completed (for metrics).
    pub(crate) compactions: AtomicU64,
    /// Keys checked since open, by outcome (for metrics): allowed, denied,
    /// shadow-denied. Counted by the live calls only, never by replay.
    pub(crate) checks: [AtomicU64; 3],
    /// An automatic compaction is running (started by the flusher on its own thread).
    pub(crate) compacting: AtomicBool,
    /// The process that opened the limiter, and the fork generation it did so in.
    opened_by: u32,
    fork_generation: u64,
}

/// A persistent rate limiter over one data directory.
///
/// `Send + Sync`: share it between threads (for example in an `Arc`). Dropping it
/// closes it.
pub struct Limiter {
    shared: Arc<Shared>,
    flusher: Mutex<Option<JoinHandle<()>>>,
    lock: Mutex<Option<DirLock>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("dir", &self.shared.dir)
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in apply poisons the engine (see `Shared::apply`) before it could poison
    // a mutex; nothing else panics while holding a lock.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid(
            Some(key),
            "key \"\" is empty: use a non-empty string such as \"api:user-42\"",
        ));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::invalid(
            Some(key),
            format!(
                "key {:?}... is {} bytes long: keys are at most {MAX_KEY_LEN} bytes of UTF-8; shorten it (for example hash the long part)",
                key.chars().take(32).collect::<String>(),
                key.len()
            ),
        ));
    }
    Ok(())
}

/// "rate (10)", or "burst (50)" when the limit has one: its capacity, the largest cost.
fn capacity_words(quota: &Quota) -> String {
    if quota.has_burst() {
        format!("burst ({})", quota.burst())
    } else {
        format!("rate ({})", quota.rate())
    }
}

fn validate_cost(key: &str, cost: u64, quota: &Quota) -> Result<()> {
    if cost == 0 || cost > quota.burst() {
        let fix = if quota.algorithm() == Algorithm::TokenBucket {
            " (or give the limit a larger burst)"
        } else {
            ""
        };
        return Err(Error::invalid(
            Some(key),
            format!(
                "cost {cost} for key {key:?} is invalid: the cost must be between 1 and the limit's {}; a larger cost could never be allowed{fix}",
                capacity_words(quota)
            ),
        ));
    }
    Ok(())
}

fn validate_refund(key: &str, cost: u64, quota: &Quota) -> Result<()> {
    if cost == 0 || cost > quota.burst() {
        return Err(Error::invalid(
            Some(key),
            format!(
                "refund cost {cost} for key {key:?} is invalid: the cost must be between 1 and the limit's {}, the most a check can have consumed",
                capacity_words(quota)
            ),
        ));
    }
    Ok(())
}

/// The decision a caller sees: the algorithm's outcome with the limit's figures; a
/// shadow limit lets through what it would have denied, and says so.
fn decision(quota: &Quota, outcome: Decision, cost: u64) -> Decision {
    let shadow_denied = !outcome.allowed && quota.is_shadow();
    Decision {
        allowed: outcome.allowed || shadow_denied,
        remaining: outcome.remaining,
        reset_at: outcome.reset_at,
        retry_after: if shadow_denied {
            0
        } else {
            outcome.retry_after
        },
        limit: quota.burst(),
        algorithm: quota.algorithm(),
        cost,
        shadow_denied,
    }
}

fn status_of(registry: &Registry, entry: &Entry, now: UnixNanos) -> Status {
    let (remaining, reset_at) = entry.state.peek(&entry.quota, now);
    Status {
        key: entry.key.to_string(),
        quota: entry.quota,
        remaining,
        reset_at,
        counters: entry.counters,
        last_seen: (entry.last_seen != 0).then_some(entry.last_seen),
        template: entry
            .template
            .and_then(|t| registry.get(t))
            .map(|t| t.key.to_string()),
    }
}

/// The status of `key`, covered by `template` and holding no state: full capacity, no
/// decisions.
fn stateless_status(key: &str, template: &Entry, now: UnixNanos) -> Status {
    Status {
        key: key.to_owned(),
        quota: template.quota,
        remaining: template.quota.burst(),
        reset_at: now,
        counters: Counters::default(),
        last_seen: None,
        template: Some(template.key.to_string()),
    }
}

/// What a key names.
enum Target<'r> {
    /// An entry of its own: a configured key, a key made from a template that holds
    /// state, or a template.
    Entry(u32, &'r Entry),
    /// No entry, but a template covers it: the key is at full capacity.
    Covered(u32, &'r Entry),
}

fn resolve<'r>(registry: &'r Registry, key: &str) -> Result<Target<'r>> {
    validate_key(key)?;
    if let Some(found) = registry
        .lookup(key)
        .and_then(|id| registry.get(id).map(|e| Target::Entry(id, e)))
    {
        return Ok(found);
    }
    registry
        .template_for(key)
        .and_then(|t| registry.get(t).map(|e| Target::Covered(t, e)))
        .ok_or_else(|| Error::LimitNotFound {
            key: key.to_owned(),
        })
}

/// A decision, refund or check names a template itself.
fn template_is_not_a_key(key: &str) -> Error {
    let prefix = crate::templates::prefix_of(key);
    Error::invalid(
        Some(key),
        format!(
            "key {key:?} ends in \"*\", so it is a template (the limit of every key that starts with {prefix:?}), not a key to check: check a key it covers, such as \"{prefix}203.0.113.9\""
        ),
    )
}

/// Like [`resolve`], for the calls that decide or change quota: a template is refused.
fn resolve_key<'r>(registry: &'r Registry, key: &str) -> Result<Target<'r>> {
    if is_template(key) {
        validate_key(key)?;
        return Err(template_is_not_a_key(key));
    }
    resolve(registry, key)
}

fn new_key_id(registry: &Registry, key: &str) -> Result<u32> {
    let id = registry.next_id();
    if id == u32::MAX {
        return Err(Error::invalid(
            Some(key),
            "this data directory has 4294967295 keys: remove unused keys (their ids are used again)",
        ));
    }
    Ok(id)
}

/// The result of a call, before its durability wait: `wait()` blocks until the
/// record is on disk (when the call must wait at all); `.await` waits without
/// blocking the thread (the background flusher syncs).
#[must_use = "the call is not durable until waited for"]
pub struct Pending<T> {
    value: T,
    durable: Option<(Arc<GroupCommit>, u64)>,
}

impl<T> Pending<T> {
    fn ready(value: T) -> Self {
        Pending {
            value,
            durable: None,
        }
    }

    /// Whether there is nothing to wait for (denials, batch mode, unchanged limits).
    pub fn is_ready(&self) -> bool {
        self.durable.is_none()
    }

    /// Blocks until the call's record is durable, then returns its result.
    pub fn wait(self) -> Result<T> {
        if let Some((commit, seq)) = &self.durable {
            commit.wait(*seq)?;
        }
        Ok(self.value)
    }
}

impl<T: Unpin> IntoFuture for Pending<T> {
    type Output = Result<T>;
    type IntoFuture = PendingFuture<T>;

    fn into_future(self) -> PendingFuture<T> {
        PendingFuture {
            durable: self
                .durable
                .map(|(commit, seq)| GroupCommit::durable(&commit, seq)),
            value: Some(self.value),
        }
    }
}

/// The future of a [`Pending`] result.
pub struct PendingFuture<T> {
    value: Option<T>,
    durable: Option<Durable>,
}

impl<T: Unpin> Future for PendingFuture<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        if let Some(durable) = &mut self.durable {
            match Pin::new(durable).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => self.durable = None,
            }
        }
        match self.value.take() {
            Some(value) => Poll::Ready(Ok(value)),
            None => Poll::Ready(Err(Error::Closed)),
        }
    }
}

/// The calls of a [`Limiter`] that return before their durability wait; see
/// [`Limiter::deferred`].
#[derive(Debug, Clone, Copy)]
pub struct Deferred<'a> {
    limiter: &'a Limiter,
}

impl Deferred<'_> {
    /// [`Limiter::limit`], before its durability wait.
    pub fn limit(&self, key: &str, quota: Quota) -> Result<Pending<LimitChange>> {
        self.limiter.shared.limit(key, quota)
    }

    /// [`Limiter::check`], before its durability wait.
    pub fn check(&self, key: &str, cost: u64) -> Result<Pending<Decision>> {
        self.limiter.shared.check(key, cost)
    }

    /// [`check`](Self::check), only when the engine's state lock is free right now:
    /// `Ok(None)` when another call holds it (a compaction capturing the state, a
    /// sweep, another check), and then nothing was decided. For an event loop, which
    /// must not wait for the lock; it makes the call on another thread instead.
    pub fn try_check(&self, key: &str, cost: u64) -> Result<Option<Pending<Decision>>> {
        let Some(core) = self.limiter.shared.try_lock_core()? else {
            return Ok(None);
        };
        self.limiter.shared.check_locked(core, key, cost).map(Some)
    }

    /// [`Limiter::check_all`], before its durability wait.
    pub fn check_all(&self, items: &[(&str, u64)]) -> Result<Pending<MultiDecision>> {
        self.limiter.shared.check_all(items)
    }

    /// [`Limiter::reset`], before its durability wait.
    pub fn reset(&self, key: &str) -> Result<Pending<()>> {
        self.limiter
            .shared
            .change(key, |id, at| Event::Reset { id, at })
    }

    /// [`Limiter::refund`], before its durability wait.
    pub fn refund(&self, key: &str, cost: u64) -> Result<Pending<()>> {
        self.limiter.shared.refund(key, cost)
    }

    /// [`Limiter::remove`], before its durability wait.
    pub fn remove(&self, key: &str) -> Result<Pending<()>> {
        self.limiter
            .shared
            .change(key, |id, at| Event::Remove { id, at })
    }
}

impl Limiter {
    /// Opens (creating if needed) the data directory `dir`: takes its lock, loads the
    /// snapshot and replays the log.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Limiter> {
        if dir.as_ref().as_os_str().is_empty() {
            // An empty path would put flint.aof and flint.lock in the current directory.
            return Err(Error::invalid(
                None,
                "the data directory path is empty: pass a directory such as \".flint\" (\".\" for the current directory)",
            ));
        }
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let backend: Arc<dyn Backend> = match &options.backend {
            Some(backend) => Arc::clone(backend),
            None => Arc::new(FileBackend::open(&dir)?),
        };
        sys::watch_forks();
        let guard = backend.lock()?;
        let recovered = recovery::recover(&*backend, options.history_capacity)?;
        let snapshot_bytes = backend
            .size(crate::storage::format::SNAPSHOT_FILE)
            .map_err(|e| {
                Error::io(
                    "stat",
                    backend.path(crate::storage::format::SNAPSHOT_FILE),
                    e,
                )
            })?
            .unwrap_or(0);
        let commit = Arc::new(GroupCommit::new(
            recovered.log.syncer(),
            recovered.generation,
            recovered.log.len(),
            (options.sync == SyncMode::Batch).then_some(options.flush_every_events),
            backend.path(LOG_FILE),
        ));
        let shared = Arc::new(Shared {
            dir,
            core: Mutex::new(Core {
                registry: recovered.registry,
                log: Some(recovered.log),
                generation: recovered.generation,
                marked_through: recovered.marked_through,
                salt: recovered.salt,
                scratch: Vec::with_capacity(64),
                replayed: recovered.replayed,
                torn: recovered.torn,
                snapshot_bytes,
                sweep_cursor: 0,
            }),
            commit,
            compaction: Mutex::new(()),
            compaction_failure: Mutex::new(None),
            compactions: AtomicU64::new(0),
            checks: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            compacting: AtomicBool::new(false),
            opened_by: std::process::id(),
            fork_generation: sys::fork_generation(),
            backend,
            options,
        });
        let flusher = {
            let flusher_shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("flint-flusher".into())
                .spawn(move || flusher_shared.run_flusher())
                .map_err(|e| Error::io("start the flusher thread for", &shared.dir, e))?
        };
        Ok(Limiter {
            flusher: Mutex::new(Some(flusher)),
            lock: Mutex::new(Some(guard)),
            shared,
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The options the limiter was opened with.
    pub fn options(&self) -> &Options {
        &self.shared.options
    }

    /// The engine's internals, for its own unit tests.
    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The calls that return before their durability wait, so that an async caller
    /// can `.await` it instead of blocking a thread:
    /// `limiter.deferred().check(key, 1)?.await?`.
    pub fn deferred(&self) -> Deferred<'_> {
        Deferred { limiter: self }
    }

    /// Configures the limit of `key`. The same settings again change nothing and write
    /// nothing; other settings replace the limit (consumed units carry over when the
    /// algorithm stays the same).
    pub fn limit(&self, key: &str, quota: Quota) -> Result<LimitChange> {
        self.shared.limit(key, quota)?.wait()
    }

    /// What [`check`](Self::check) would answer now for `cost` units of `key`,
    /// consuming nothing and writing nothing (no log record, no counter, no history).
    /// The same validation as `check`: an unknown key or a cost outside
    /// `1..=rate` is an error.
    pub fn peek(&self, key: &str, cost: u64) -> Result<Decision> {
        let core = self.shared.lock_core()?;
        let now = self.shared.now(&core)?;
        let (quota, outcome) = match resolve_key(&core.registry, key)? {
            Target::Entry(_, entry) => {
                validate_cost(key, cost, &entry.quota)?;
                (entry.quota, entry.state.decide(&entry.quota, now, cost))
            }
            // No state: what a new key at full capacity would answer.
            Target::Covered(_, template) => {
                let quota = template.quota;
                validate_cost(key, cost, &quota)?;
                let full = LimitState::full(quota.algorithm());
                (quota, full.decide(&quota, now, cost))
            }
        };
        Ok(decision(&quota, outcome, cost))
    }

    /// Checks `key` for `cost` units and consumes them when allowed.
    pub fn check(&self, key: &str, cost: u64) -> Result<Decision> {
        self.shared.check(key, cost)?.wait()
    }

    /// Like [`check`](Self::check), returning only whether it was allowed.
    pub fn allow(&self, key: &str, cost: u64) -> Result<bool> {
        self.check(key, cost).map(|d| d.allowed)
    }

    /// Checks several keys at once, all or nothing: if any denies, none is consumed.
    /// Costs of a key named more than once are summed.
    pub fn check_all(&self, items: &[(&str, u64)]) -> Result<MultiDecision> {
        self.shared.check_all(items)?.wait()
    }

    /// Like [`check_all`](Self::check_all), returning only whether it was allowed.
    pub fn allow_all(&self, items: &[(&str, u64)]) -> Result<bool> {
        self.check_all(items).map(|d| d.allowed)
    }

    /// Puts `key` back to full capacity (counters and history are kept).
    pub fn reset(&self, key: &str) -> Result<()> {
        self.deferred().reset(key)?.wait()
    }

    /// Gives back `cost` units of `key` consumed earlier (a request that failed and
    /// should not count): a token bucket gets them back, capped at its capacity; a fixed
    /// window counter subtracts them from the current window, not below zero; a sliding
    /// window log removes them from its most recent runs inside the window, newest
    /// first. Logged and replayed like every change (and waited for, with
    /// `sync=always`), but a refund on a key at full capacity changes nothing and
    /// writes nothing. Counters, history and last-seen time are unchanged: a refund is
    /// not a decision. The same validation as `check`: an unknown key or a cost outside
    /// `1..=rate` is an error, and nothing is recorded.
    pub fn refund(&self, key: &str, cost: u64) -> Result<()> {
        self.shared.refund(key, cost)?.wait()
    }

    /// Deletes the limit of `key`, with its counters and history.
    pub fn remove(&self, key: &str) -> Result<()> {
        self.deferred().remove(key)?.wait()
    }

    /// The limit, capacity and counters of `key`, or `None` when it has no limit. A
    /// key covered by a template that holds no state is at full capacity with no
    /// decisions (its template's summary keeps the counters of dropped keys; see
    /// [`top`](Self::top)); a template's counters sum those of its keys.
    pub fn status(&self, key: &str) -> Result<Option<Status>> {
        let core = self.shared.lock_core()?;
        let now = self.shared.now(&core)?;
        Ok(match resolve(&core.registry, key) {
            Ok(Target::Entry(_, entry)) => Some(status_of(&core.registry, entry, now)),
            Ok(Target::Covered(_, template)) => Some(stateless_status(key, template, now)),
            // No key is empty or longer than the longest: none has a limit.
            Err(Error::LimitNotFound { .. } | Error::InvalidArgument { .. }) => None,
            Err(e) => return Err(e),
        })
    }

    /// Every entry whose key starts with `prefix` (all when `None`), sorted by key:
    /// configured keys, templates, and keys made from templates while they hold state.
    pub fn list(&self, prefix: Option<&str>) -> Result<Vec<Status>> {
        self.list_kind(prefix, ListKind::All)
    }

    /// Like [`list`](Self::list), only the entries of `kind` (keys or templates).
    pub fn list_kind(&self, prefix: Option<&str>, kind: ListKind) -> Result<Vec<Status>> {
        let core = self.shared.lock_core()?;
        let now = self.shared.now(&core)?;
        let mut all: Vec<Status> = core
            .registry
            .iter()
            .filter(|(_, e)| prefix.is_none_or(|p| e.key.starts_with(p)) && kind.includes(&e.key))
            .map(|(_, e)| status_of(&core.registry, e, now))
            .collect();
        drop(core);
        all.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        Ok(all)
    }

    /// The most recent `limit` decisions of `key`, oldest first (none for a key
    /// covered by a template that holds no state, and for a template).
    pub fn history(&self, key: &str, limit: usize) -> Result<Vec<HistoryEvent>> {
        let core = self.shared.lock_core()?;
        let Target::Entry(_, entry) = resolve(&core.registry, key)? else {
            return Ok(Vec::new());
        };
        let events = entry.history.as_deref().map(|h| {
            let skip = h.len().saturating_sub(limit);
            h.iter().skip(skip).copied().collect()
        });
        Ok(events.unwrap_or_default())
    }

    /// The `limit` keys with the highest `by` (keys where it is zero are left out):
    /// keys holding state, and the keys that templates dropped at full capacity whose
    /// counters their summaries remember (the most denied ones; see
    /// [`TopKeys`](crate::templates::TopKeys)). Templates are not ranked.
    pub fn top(&self, by: TopBy, limit: usize) -> Result<Vec<Status>> {
        /// A ranked key: one holding state, or one a template's summary remembers.
        enum Row<'r> {
            Live(&'r Entry, Counters),
            Dropped(&'r str, &'r Entry, Counters),
        }
        let core = self.shared.lock_core()?;
        let now = self.shared.now(&core)?;
        let registry = &core.registry;
        // The counters a summary remembers of keys that hold state again add to theirs.
        let mut remembered: HashMap<&str, Counters> = HashMap::new();
        // A dropped key may be remembered by two templates (a longer one took it over
        // between its drops): one row, its counters summed, under the template that
        // covers it now.
        let mut dropped_by_key: HashMap<&str, (Counters, &Entry)> = HashMap::new();
        for (id, template) in registry.iter().filter(|(_, e)| e.is_template()) {
            let Some(state) = registry.template_state(id) else {
                continue;
            };
            for item in state.top.items() {
                if registry.lookup(&item.key).is_some() {
                    remembered.entry(&item.key).or_default().add(&item.counters);
                } else {
                    let covering = registry
                        .template_for(&item.key)
                        .and_then(|t| registry.get(t))
                        .unwrap_or(template);
                    let row = dropped_by_key
                        .entry(&item.key)
                        .or_insert((Counters::default(), covering));
                    row.0.add(&item.counters);
                }
            }
        }
        let dropped: Vec<(Counters, &str, &Entry)> = dropped_by_key
            .into_iter()
            .map(|(key, (counters, template))| (counters, key, template))
            .collect();
        let mut ranked: Vec<(u64, &str, Row<'_>)> = registry
            .iter()
            .filter(|(_, e)| !e.is_template())
            .map(|(_, e)| {
                let mut counters = e.counters;
                if let Some(more) = remembered.get(&*e.key) {
                    counters.add(more);
                }
                (by.metric(&counters), &*e.key, Row::Live(e, counters))
            })
            .chain(dropped.into_iter().map(|(counters, key, template)| {
                (
                    by.metric(&counters),
                    key,
                    Row::Dropped(key, template, counters),
                )
            }))
            .filter(|(metric, _, _)| *metric > 0)
            .collect();
        ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        Ok(ranked
            .into_iter()
            .take(limit)
            .map(|(_, _, row)| match row {
                Row::Live(entry, counters) => Status {
                    counters,
                    ..status_of(registry, entry, now)
                },
                Row::Dropped(key, template, counters) => Status {
                    counters,
                    ..stateless_status(key, template, now)
                },
            })
            .collect())
    }

    /// Drops now every key made from a template that is back at full capacity: its
    /// state goes (it decides exactly as before when checked again) and its counters go
    /// into its template's summary. Returns how many were dropped. The background
    /// flusher does this a slice of key ids at a time, and compaction in full; this is
    /// for tests and for handing memory back at once.
    pub fn sweep(&self) -> Result<usize> {
        self.shared.sweep(None)
    }

    /// Syncs every event written so far to disk.
    pub fn flush(&self) -> Result<()> {
        drop(self.shared.lock_core()?);
        self.shared.commit.sync_all()
    }

    /// Writes the current state to the snapshot and starts a new log holding only what
    /// came after it. Crash-safe at every step.
    pub fn compact(&self) -> Result<CompactReport> {
        drop(self.shared.lock_core()?);
        self.shared.compact()
    }

    /// The engine's running totals, cheap enough for every metrics scrape; see
    /// [`Stats`].
    pub fn stats(&self) -> Result<Stats> {
        let (syncs, sync_nanos) = self.shared.commit.sync_totals();
        let (written, durable) = self.shared.commit.positions();
        let core = self.shared.lock_core()?;
        let template_keys = core.registry.template_keys();
        Ok(Stats {
            keys: core.registry.len(),
            templates: core.registry.template_count(),
            template_keys,
            log_bytes: core.log.as_ref().map_or(0, |log| log.len()),
            snapshot_bytes: core.snapshot_bytes,
            pending_events: written.seq.saturating_sub(durable.seq),
            syncs,
            sync_nanos,
            compactions: self.shared.compactions.load(Ordering::Relaxed),
            checks_allowed: self.shared.checks[CHECK_ALLOWED].load(Ordering::Relaxed),
            checks_denied: self.shared.checks[CHECK_DENIED].load(Ordering::Relaxed),
            checks_shadow_denied: self.shared.checks[CHECK_SHADOW_DENIED].load(Ordering::Relaxed),
        })
    }

    /// Checks the data directory and the engine; see [`DoctorReport`].
    pub fn doctor(&self) -> Result<DoctorReport> {
        self.shared.doctor()
    }

    /// Syncs, stops the background flusher, and releases the log (file and mapping)
    /// and the directory's lock at once. Later calls fail with [`Error::Closed`];
    /// closing twice is fine. In a forked child, closing a limiter of the parent does
    /// nothing (the child's copy of the lock was closed at the fork).
    pub fn close(&self) -> Result<()> {
        let shared = &*self.shared;
        if sys::fork_generation() != shared.fork_generation {
            // The flusher thread does not exist here and the log is not mapped: keep
            // every handle alive forever rather than run their destructors.
            std::mem::forget(Arc::clone(&self.shared));
            std::mem::forget(lock(&self.flusher).take());
            std::mem::forget(lock(&self.lock).take());
            return Ok(());
        }
        if lock(&shared.core).log.is_none() {
            return Ok(());
        }
        shared.commit.stop();
        if let Some(flusher) = lock(&self.flusher).take() {
            let _ = flusher.join();
        }
        // A compaction running on another thread finishes first: it must not rename
        // its files after the lock is released to another opener.
        let _no_compaction = lock(&shared.compaction);
        let result = {
            let mut core = lock(&shared.core);
            let result = if core.log.is_some() {
                shared.commit.sync_all()
            } else {
                Ok(())
            };
            core.log = None;
            shared.commit.close();
            result
        };
        drop(lock(&self.lock).take());
        result
    }
}

impl Drop for Limiter {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactReport {
    /// Keys in the snapshot.
    pub keys: usize,
    /// Size of the new snapshot.
    pub snapshot_bytes: u64,
    /// Log size before.
    pub log_bytes_before: u64,
    /// Log size after.
    pub log_bytes_after: u64,
}

/// The index of each outcome in [`Shared::checks`].
const CHECK_ALLOWED: usize = 0;
const CHECK_DENIED: usize = 1;
const CHECK_SHADOW_DENIED: usize = 2;

impl Shared {
    /// Counts a key checked with this decision (see [`Stats`]).
    fn count_check(&self, decision: &Decision) {
        let outcome = if decision.shadow_denied {
            CHECK_SHADOW_DENIED
        } else if decision.allowed {
            CHECK_ALLOWED
        } else {
            CHECK_DENIED
        };
        if let Some(counter) = self.checks.get(outcome) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The state lock, for a limiter that is open in this process.
    pub(crate) fn lock_core(&self) -> Result<MutexGuard<'_, Core>> {
        if sys::fork_generation() != self.fork_generation {
            return Err(Error::Forked {
                opened_by: self.opened_by,
            });
        }
        let core = lock(&self.core);
        if core.log.is_none() {
            return Err(Error::Closed);
        }
        Ok(core)
    }

    /// Like [`lock_core`](Self::lock_core), without waiting: `None` when the lock is
    /// held.
    pub(crate) fn try_lock_core(&self) -> Result<Option<MutexGuard<'_, Core>>> {
        if sys::fork_generation() != self.fork_generation {
            return Err(Error::Forked {
                opened_by: self.opened_by,
            });
        }
        let core = match self.core.try_lock() {
            Ok(core) => core,
            Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        };
        if core.log.is_none() {
            return Err(Error::Closed);
        }
        Ok(Some(core))
    }

    /// The time to decide at: never earlier than any event already recorded.
    /// A clock past [`MAX_TIME`](crate::clock::MAX_TIME) is refused rather than let
    /// the arithmetic of the algorithms wrap.
    pub(crate) fn now(&self, core: &Core) -> Result<UnixNanos> {
        let now = crate::clock::validate_time(self.options.clock.now())?;
        Ok(now.max(core.registry.high_water))
    }

    /// Appends `event` to the log (under the state lock), preceded by a `synced`
    /// record when the durable end moved since the last one, and returns its sequence
    /// number. On error nothing was recorded and the caller must not apply the event.
    fn append(&self, core: &mut Core, event: &Event) -> Result<u64> {
        self.append_all(core, &[event])
    }

    /// Appends `events` as one write (see [`append`](Self::append)): a power loss keeps
    /// a prefix of them.
    fn append_all(&self, core: &mut Core, events: &[&Event]) -> Result<u64> {
        let Some(first) = events.first() else {
            return Ok(self.commit.positions().0.seq);
        };
        let Core {
            log,
            scratch,
            marked_through,
            salt,
            ..
        } = core;
        let log = log.as_mut().ok_or(Error::Closed)?;
        let backend = &self.backend;
        self.commit.append(|durable| {
            scratch.clear();
            let mark = durable > *marked_through;
            if mark {
                Event::Synced {
                    at: first.at(),
                    through: durable,
                    salt: *salt,
                }
                .encode_frame(scratch);
            }
            for event in events {
                event.encode_frame(scratch);
            }
            log.append(scratch)
                .map_err(|e| Error::io("append to", backend.path(LOG_FILE), e))?;
            if mark {
                *marked_through = durable;
            }
            Ok(log.len())
        })
    }

    /// Applies a decision already in the log to the registry. A panic here (a bug)
    /// would leave the two disagreeing, so it poisons the engine.
    fn apply<T>(&self, core: &mut Core, apply: impl FnOnce(&mut Registry) -> T) -> Result<T> {
        catch_unwind(AssertUnwindSafe(|| apply(&mut core.registry))).map_err(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(ToString::to_string)
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let cause = format!(
                "applying a logged decision failed ({what}): the log holds it but the memory state may not (a bug; please report it)"
            );
            self.commit.poison(cause.clone());
            Error::Poisoned { cause }
        })
    }

    /// `value` after the durability wait this mode requires for a change at `seq`.
    fn durable_after<T>(&self, value: T, seq: u64) -> Pending<T> {
        if self.options.sync == SyncMode::Always {
            Pending {
                value,
                durable: Some((Arc::clone(&self.commit), seq)),
            }
        } else {
            Pending::ready(value)
        }
    }

    fn limit(&self, key: &str, quota: Quota) -> Result<Pending<LimitChange>> {
        validate_key(key)?;
        let mut core = self.lock_core()?;
        let now = self.now(&core)?;
        let (id, change) = if let Some(id) = core.registry.lookup(key) {
            // A key made from a template takes a limit of its own even when it is the
            // template's.
            if core
                .registry
                .get(id)
                .is_some_and(|e| e.quota == quota && e.template.is_none())
            {
                // Nothing to write, but the limit itself (another caller's configure)
                // may not be on disk yet: "unchanged" is as durable as "created".
                let written = self.commit.positions().0.seq;
                drop(core);
                return Ok(self.durable_after(LimitChange::Unchanged, written));
            }
            (id, LimitChange::Updated)
        } else {
            (new_key_id(&core.registry, key)?, LimitChange::Created)
        };
        let event = Event::Configure {
            id,
            at: now,
            quota,
            key: key.to_owned(),
        };
        let seq = self.append(&mut core, &event)?;
        self.apply(&mut core, |r| r.apply_configure(id, key, quota, now))?;
        drop(core);
        Ok(self.durable_after(change, seq))
    }

    fn check(&self, key: &str, cost: u64) -> Result<Pending<Decision>> {
        let core = self.lock_core()?;
        self.check_locked(core, key, cost)
    }

    /// A check, with the state lock already taken.
    fn check_locked(
        &self,
        mut core: MutexGuard<'_, Core>,
        key: &str,
        cost: u64,
    ) -> Result<Pending<Decision>> {
        let now = self.now(&core)?;
        let (id, made_from, quota, outcome) = match resolve_key(&core.registry, key)? {
            Target::Entry(id, entry) => {
                validate_cost(key, cost, &entry.quota)?;
                let outcome = entry.state.decide(&entry.quota, now, cost);
                (id, None, entry.quota, outcome)
            }
            // The first decision on a key its template covers: made at full capacity,
            // and logged as made in the same write as the decision.
            Target::Covered(template, entry) => {
                let quota = entry.quota;
                validate_cost(key, cost, &quota)?;
                let outcome = LimitState::full(quota.algorithm()).decide(&quota, now, cost);
                (
                    new_key_id(&core.registry, key)?,
                    Some(template),
                    quota,
                    outcome,
                )
            }
        };
        let decision = decision(&quota, outcome, cost);
        let event = Event::Check {
            id,
            at: now,
            cost,
            allowed: outcome.allowed,
        };
        let seq = match made_from {
            None => self.append(&mut core, &event)?,
            Some(template) => {
                let derive = Event::Derive {
                    id,
                    at: now,
                    template,
                    key: key.to_owned(),
                };
                let seq = self.append_all(&mut core, &[&derive, &event])?;
                self.apply(&mut core, |r| r.apply_derive(id, template, key, now))?;
                seq
            }
        };
        self.apply(&mut core, |r| {
            r.apply_check(id, now, cost, outcome.allowed, Some(outcome.remaining));
        })?;
        drop(core);
        self.count_check(&decision);
        // Denials (and shadow denials) change no quota: they do not wait for the disk.
        Ok(if outcome.allowed {
            self.durable_after(decision, seq)
        } else {
            Pending::ready(decision)
        })
    }

    /// Drops the keys made from templates that are back at full capacity: all of them
    /// (`max_ids` `None`), or those among the next `max_ids` ids after the last sweep's
    /// (the background flusher's rounds). Written as one `sweep` record when it drops
    /// any; replay drops the same keys. Returns how many were dropped.
    pub(crate) fn sweep(&self, max_ids: Option<u32>) -> Result<usize> {
        let mut core = self.lock_core()?;
        if core.registry.template_count() == 0 {
            return Ok(0);
        }
        let now = self.now(&core)?;
        let bound = core.registry.id_bound();
        let (from, to) = match max_ids {
            None => (0, bound),
            Some(count) => {
                let from = if core.sweep_cursor >= bound {
                    0
                } else {
                    core.sweep_cursor
                };
                (from, from.saturating_add(count).min(bound))
            }
        };
        core.sweep_cursor = if to >= bound { 0 } else { to };
        if from >= to || core.registry.sweepable(now, from, to) == 0 {
            return Ok(0);
        }
        // A sweep changes no decision: it does not wait for the disk (a power loss
        // that loses it loses nothing; the keys are dropped again).
        let event = Event::Sweep { at: now, from, to };
        self.append(&mut core, &event)?;
        let dropped = self.apply(&mut core, |r| r.apply_sweep(now, from, to))?;
        drop(core);
        if dropped >= RELEASE_MEMORY_AFTER_DROPS {
            sys::release_free_memory();
        }
        Ok(dropped)
    }

    /// One round of the background sweep (see [`sweep`](Self::sweep)).
    pub(crate) fn sweep_round(&self) -> Result<usize> {
        self.sweep(Some(SWEEP_IDS_PER_ROUND))
    }

    fn check_all(&self, items: &[(&str, u64)]) -> Result<Pending<MultiDecision>> {
        /// A distinct key of the call; one that its template covers without state has
        /// no id yet.
        struct Item<'k> {
            key: &'k str,
            id: Option<u32>,
            template: Option<u32>,
            quota: Quota,
            cost: u64,
        }
        if items.is_empty() {
            return Err(Error::invalid(
                None,
                "check_all() got no items: pass at least one key",
            ));
        }
        let mut core = self.lock_core()?;
        let now = self.now(&core)?;
        // Distinct keys in first-appearance order, with summed costs.
        let mut merged: Vec<Item<'_>> = Vec::with_capacity(items.len());
        let mut slot_of: HashMap<&str, usize> = HashMap::with_capacity(items.len());
        let mut slots = Vec::with_capacity(items.len());
        for &(key, cost) in items {
            let (id, template, quota) = match resolve_key(&core.registry, key)? {
                Target::Entry(id, entry) => (Some(id), None, entry.quota),
                Target::Covered(template, entry) => (None, Some(template), entry.quota),
            };
            validate_cost(key, cost, &quota)?;
            let slot = *slot_of.entry(key).or_insert_with(|| {
                merged.push(Item {
                    key,
                    id,
                    template,
                    quota,
                    cost: 0,
                });
                merged.len() - 1
            });
            if let Some(m) = merged.get_mut(slot) {
                m.cost += cost;
                if m.cost > quota.burst() {
                    return Err(Error::invalid(
                        Some(key),
                        format!(
                            "the costs given for key {key:?} in one check_all() sum to {}, more than its {}: such a request could never be allowed",
                            m.cost,
                            capacity_words(&quota)
                        ),
                    ));
                }
            }
            slots.push(slot);
        }
        if merged.len() > MAX_CHECK_ALL_ITEMS {
            return Err(Error::invalid(
                None,
                format!(
                    "check_all() names {} distinct keys: at most {MAX_CHECK_ALL_ITEMS} are allowed in one call",
                    merged.len()
                ),
            ));
        }
        // The input is valid: keys that their templates cover get their state now (a
        // key at full capacity; should a later step fail, a sweep drops it, and
        // recovery cuts derive records that no decision follows).
        let mut ids = Vec::with_capacity(merged.len());
        for item in &merged {
            let id = match (item.id, item.template) {
                (Some(id), _) => id,
                (None, Some(template)) => {
                    let id = new_key_id(&core.registry, item.key)?;
                    let derive = Event::Derive {
                        id,
                        at: now,
                        template,
                        key: item.key.to_owned(),
                    };
                    self.append(&mut core, &derive)?;
                    self.apply(&mut core, |r| r.apply_derive(id, template, item.key, now))?;
                    id
                }
                (None, None) => unreachable!("a key resolves to an entry or a template"),
            };
            ids.push(id);
        }
        let outcomes: Vec<Decision> = ids
            .iter()
            .zip(&merged)
            .filter_map(|(&id, item)| {
                core.registry
                    .get(id)
                    .map(|e| e.state.decide(&e.quota, now, item.cost))
            })
            .collect();
        // A shadow limit lacking room lets the check through (and consumes nothing).
        let allowed = merged
            .iter()
            .zip(&outcomes)
            .all(|(item, o)| o.allowed || item.quota.is_shadow());
        // A denial counts only on the keys that lacked room; the others were blocked.
        let event = Event::CheckAll {
            at: now,
            allowed,
            items: ids
                .iter()
                .zip(&merged)
                .zip(&outcomes)
                .map(|((&id, item), outcome)| CheckAllItem {
                    id,
                    cost: item.cost,
                    lacked_room: !outcome.allowed,
                })
                .collect(),
        };
        let seq = self.append(&mut core, &event)?;
        let shown = self.apply(&mut core, |registry| {
            let mut shown = Vec::with_capacity(merged.len());
            for ((&id, item), outcome) in ids.iter().zip(&merged).zip(&outcomes) {
                let lacked_room = !outcome.allowed;
                let mut outcome = *outcome;
                if !allowed || lacked_room {
                    // Nothing was consumed: report the key as it stands.
                    if let Some(e) = registry.get(id) {
                        (outcome.remaining, outcome.reset_at) = e.state.peek(&e.quota, now);
                    }
                }
                registry.apply_check_all_item(
                    id,
                    now,
                    item.cost,
                    allowed,
                    lacked_room,
                    Some(outcome.remaining),
                );
                // The call's decision; a shadow limit that lacked room says so.
                outcome.allowed = allowed && !lacked_room;
                shown.push(outcome);
            }
            shown
        })?;
        let denied_key = merged
            .iter()
            .zip(&outcomes)
            .find(|(item, o)| !o.allowed && !item.quota.is_shadow())
            .map(|(item, _)| item.key.to_owned());
        let results = items
            .iter()
            .zip(&slots)
            .filter_map(|(&(key, cost), &slot)| {
                let item = merged.get(slot)?;
                let lacked_room = !outcomes.get(slot)?.allowed;
                let mut decision = decision(&item.quota, *shown.get(slot)?, cost);
                // A shadow denial is a shadow limit's key that lacked room; in a denied
                // call nothing went through, that key neither.
                decision.shadow_denied = lacked_room && item.quota.is_shadow();
                decision.allowed = allowed && (!lacked_room || decision.shadow_denied);
                Some(ItemDecision {
                    key: key.to_owned(),
                    decision,
                })
            })
            .collect();
        drop(core);
        let result = MultiDecision {
            allowed,
            denied_key,
            results,
        };
        if allowed {
            for item in &result.results {
                self.count_check(&item.decision);
            }
        } else {
            self.checks[CHECK_DENIED].fetch_add(result.results.len() as u64, Ordering::Relaxed);
        }
        Ok(if allowed {
            self.durable_after(result, seq)
        } else {
            Pending::ready(result)
        })
    }

    fn refund(&self, key: &str, cost: u64) -> Result<Pending<()>> {
        let mut core = self.lock_core()?;
        let now = self.now(&core)?;
        let (id, entry) = match resolve_key(&core.registry, key)? {
            Target::Entry(id, entry) => (id, entry),
            // No state: at full capacity, nothing to give back. What it saw (a sweep
            // that dropped the key, say) may not be on disk yet: as durable as that.
            Target::Covered(_, template) => {
                validate_refund(key, cost, &template.quota)?;
                let written = self.commit.positions().0.seq;
                drop(core);
                return Ok(self.durable_after((), written));
            }
        };
        validate_refund(key, cost, &entry.quota)?;
        if entry.state.remaining(&entry.quota, now) == entry.quota.burst() {
            // Full capacity: nothing to give back, nothing to write. The state it saw
            // (another caller's change, say) may not be on disk yet: as durable as that.
            let written = self.commit.positions().0.seq;
            drop(core);
            return Ok(self.durable_after((), written));
        }
        let event = Event::Refund { id, at: now, cost };
        let seq = self.append(&mut core, &event)?;
        self.apply(&mut core, |r| r.apply_refund(id, now, cost))?;
        drop(core);
        Ok(self.durable_after((), seq))
    }

    /// Resets or removes `key`. A key its template covers without state has nothing
    /// to reset or remove: nothing is written.
    fn change(
        &self,
        key: &str,
        event: impl FnOnce(u32, UnixNanos) -> Event,
    ) -> Result<Pending<()>> {
        let mut core = self.lock_core()?;
        let now = self.now(&core)?;
        let id = match resolve(&core.registry, key)? {
            Target::Entry(id, _) => id,
            // As durable as the state it saw (see `refund`).
            Target::Covered(..) => {
                let written = self.commit.positions().0.seq;
                drop(core);
                return Ok(self.durable_after((), written));
            }
        };
        let event = event(id, now);
        let seq = self.append(&mut core, &event)?;
        self.apply(&mut core, |r| r.apply(&event))?
            .map_err(|reason| Error::invalid(Some(key), reason.to_string()))?;
        drop(core);
        Ok(self.durable_after((), seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::Algorithm;
    use crate::storage::memory::MemoryBackend;

    #[test]
    fn a_panic_while_applying_poisons_the_engine_instead_of_leaving_log_and_state_apart() {
        let backend = Arc::new(MemoryBackend::new());
        let limiter = Limiter::open("memory", Options::default().backend(backend)).unwrap();
        let quota = Quota::new(10, "1m".parse().unwrap(), Algorithm::TokenBucket).unwrap();
        limiter.limit("k", quota).unwrap();
        let shared = &limiter.shared;
        let result = {
            let mut core = shared.lock_core().unwrap();
            shared.apply(&mut core, |_| -> () { panic!("a bug in apply") })
        };
        match result {
            Err(Error::Poisoned { cause }) => assert!(cause.contains("a bug in apply"), "{cause}"),
            other => panic!("expected Poisoned, got {other:?}"),
        }
        // Every later write is refused; the state lock is not poisoned.
        assert!(matches!(limiter.check("k", 1), Err(Error::Poisoned { .. })));
        assert!(limiter.status("k").unwrap().is_some());
        let report = limiter.doctor().unwrap();
        assert!(!report.ok);
    }
}
