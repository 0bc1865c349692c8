//! The limiter: the registry of limits behind one lock, the log behind it, group
//! commit, the background flusher and compaction.
//!
//! Every change is an [`Event`]: appended to the log, then applied to the registry,
//! both under the state lock so the log's order is the order of application. A caller
//! whose event consumed quota or changed configuration then waits, outside the lock,
//! until a sync covers it (`sync=always`); one caller's `fdatasync` covers every record
//! appended before it started (group commit).

use std::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::algorithm::Quota;
use crate::clock::{Clock, SystemClock, UnixNanos};
use crate::decision::{Decision, ItemDecision, LimitChange, MultiDecision};
use crate::error::{Error, Result};
use crate::inspect::{CheckLevel, DoctorCheck, DoctorReport, Status, TopBy};
use crate::registry::{Entry, HistoryEvent, Registry, DEFAULT_HISTORY_CAPACITY};
use crate::storage::backend::{Backend, LogFile, LogSync};
use crate::storage::file::FileBackend;
use crate::storage::format::{
    encode_log_header, LOG_FILE, MAX_CHECK_ALL_ITEMS, MAX_KEY_LEN, SNAPSHOT_FILE,
};
use crate::storage::record::{CheckAllItem, Event};
use crate::storage::recovery::{self, TornTail};
use crate::storage::snapshot::{self, Covers};

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

/// How a limiter is opened.
#[derive(Clone)]
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
struct Core {
    registry: Registry,
    log: Box<dyn LogFile>,
    generation: u64,
    /// Sequence number of the last event appended.
    seq: u64,
    scratch: Vec<u8>,
    closed: bool,
    replayed: u64,
    torn: Option<TornTail>,
    snapshot_bytes: u64,
}

/// Group-commit bookkeeping, guarded by its own lock (never held with a sync running).
struct SyncState {
    durable: u64,
    /// Callers parked until a sync covers them; the leader unparks them.
    waiters: Vec<std::thread::Thread>,
    /// How many callers the last sync released: they will likely append again soon,
    /// so the next leader gives them a moment to do so (see `gather_appends`).
    released: usize,
    /// How long the last sync took, in nanoseconds.
    last_sync_ns: u64,
    syncing: bool,
    poisoned: Option<String>,
    syncer: Arc<dyn LogSync>,
    stop: bool,
    flush_requested: bool,
}

struct Shared {
    dir: PathBuf,
    options: Options,
    backend: Arc<dyn Backend>,
    core: Mutex<Core>,
    sync: Mutex<SyncState>,
    /// Counts finished syncs (and compactions); a parked caller wakes for good when it
    /// moves.
    sync_round: AtomicU64,
    /// Signalled to wake the background flusher.
    wake_flusher: Condvar,
    /// Mirrors for lock-free reads on the hot path.
    written: AtomicU64,
    durable: AtomicU64,
    poisoned: AtomicBool,
    flush_requested: AtomicBool,
    log_bytes: AtomicU64,
    compaction: Mutex<()>,
    /// Why the last automatic compaction failed, if it did (shown by doctor).
    compaction_failure: Mutex<Option<String>>,
    /// While a sync leader waits for callers to append (see `gather_appends`), the
    /// sequence number it waits for (0 otherwise); the appender that reaches it
    /// signals `appended`.
    gather_target: AtomicU64,
    gather_lock: Mutex<()>,
    appended: Condvar,
}

/// A persistent rate limiter over one data directory.
///
/// `Send + Sync`: share it between threads (for example in an `Arc`). Dropping it
/// closes it.
pub struct Limiter {
    shared: Arc<Shared>,
    flusher: Mutex<Option<JoinHandle<()>>>,
    lock: Mutex<Option<Box<dyn Any + Send + Sync>>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("dir", &self.shared.dir)
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock cannot leave the registry half-applied in a way the
    // log disagrees with (append happens before apply), so poisoning is not fatal.
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

fn validate_cost(key: &str, cost: u64, quota: &Quota) -> Result<()> {
    if cost == 0 || cost > quota.rate() {
        return Err(Error::invalid(
            Some(key),
            format!(
                "cost {cost} for key {key:?} is invalid: the cost must be between 1 and the limit's rate ({}); a larger cost could never be allowed",
                quota.rate()
            ),
        ));
    }
    Ok(())
}

fn decision(quota: &Quota, outcome: Decision, cost: u64) -> Decision {
    Decision {
        allowed: outcome.allowed,
        remaining: outcome.remaining,
        reset_at: outcome.reset_at,
        retry_after: outcome.retry_after,
        limit: quota.rate(),
        algorithm: quota.algorithm(),
        cost,
    }
}

fn status_of(entry: &Entry, now: UnixNanos) -> Status {
    let (remaining, reset_at) = entry.state.peek(&entry.quota, now);
    Status {
        key: entry.key.to_string(),
        quota: entry.quota,
        remaining,
        reset_at,
        counters: entry.counters,
        last_seen: (entry.last_seen != 0).then_some(entry.last_seen),
    }
}

impl Limiter {
    /// Opens (creating if needed) the data directory `dir`: takes its lock, loads the
    /// snapshot and replays the log.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Limiter> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let backend: Arc<dyn Backend> = match &options.backend {
            Some(backend) => Arc::clone(backend),
            None => Arc::new(FileBackend::open(&dir)?),
        };
        let guard = backend.lock()?;
        let recovered = recovery::recover(&*backend, options.history_capacity)?;
        let snapshot_bytes = backend
            .size(SNAPSHOT_FILE)
            .map_err(|e| Error::io("stat", backend.path(SNAPSHOT_FILE), e))?
            .unwrap_or(0);
        let syncer = recovered.log.syncer();
        let log_bytes = recovered.log.len();
        let shared = Arc::new(Shared {
            dir,
            backend,
            core: Mutex::new(Core {
                registry: recovered.registry,
                log: recovered.log,
                generation: recovered.generation,
                seq: 0,
                scratch: Vec::with_capacity(64),
                closed: false,
                replayed: recovered.replayed,
                torn: recovered.torn,
                snapshot_bytes,
            }),
            sync: Mutex::new(SyncState {
                durable: 0,
                waiters: Vec::new(),
                released: 0,
                last_sync_ns: 0,
                syncing: false,
                poisoned: None,
                syncer,
                stop: false,
                flush_requested: false,
            }),
            sync_round: AtomicU64::new(0),
            wake_flusher: Condvar::new(),
            written: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            flush_requested: AtomicBool::new(false),
            log_bytes: AtomicU64::new(log_bytes),
            compaction: Mutex::new(()),
            compaction_failure: Mutex::new(None),
            gather_target: AtomicU64::new(0),
            gather_lock: Mutex::new(()),
            appended: Condvar::new(),
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

    /// Configures the limit of `key`. The same settings again change nothing and write
    /// nothing; other settings replace the limit (consumed units carry over when the
    /// algorithm stays the same).
    pub fn limit(&self, key: &str, quota: Quota) -> Result<LimitChange> {
        validate_key(key)?;
        let shared = &*self.shared;
        let (change, seq) = {
            let mut core = shared.lock_core()?;
            let now = shared.now(&core);
            let (id, change) = if let Some(id) = core.registry.lookup(key) {
                if core.registry.get(id).is_some_and(|e| e.quota == quota) {
                    return Ok(LimitChange::Unchanged);
                }
                (id, LimitChange::Updated)
            } else {
                {
                    let id = core.registry.next_id();
                    if id == u32::MAX {
                        return Err(Error::invalid(
                            Some(key),
                            "this data directory has used all 4294967295 key ids: remove unused keys and start a new data directory",
                        ));
                    }
                    (id, LimitChange::Created)
                }
            };
            let event = Event::Configure {
                id,
                at: now,
                quota,
                key: key.to_owned(),
            };
            let seq = shared.append(&mut core, &event)?;
            core.registry.apply_configure(id, key, quota, now);
            (change, seq)
        };
        shared.wait_if_always(seq)?;
        Ok(change)
    }

    /// Checks `key` for `cost` units and consumes them when allowed.
    pub fn check(&self, key: &str, cost: u64) -> Result<Decision> {
        let shared = &*self.shared;
        let (decision, seq) = {
            let mut core = shared.lock_core()?;
            let now = shared.now(&core);
            let (id, entry) = find(&core.registry, key)?;
            validate_cost(key, cost, &entry.quota)?;
            let outcome = entry.state.decide(&entry.quota, now, cost);
            let decision = decision(&entry.quota, outcome, cost);
            let event = Event::Check {
                id,
                at: now,
                cost,
                allowed: outcome.allowed,
            };
            let seq = shared.append(&mut core, &event)?;
            core.registry
                .apply_check(id, now, cost, outcome.allowed, Some(outcome.remaining));
            (decision, seq)
        };
        if decision.allowed {
            shared.wait_if_always(seq)?;
        }
        Ok(decision)
    }

    /// Like [`check`](Self::check), returning only whether it was allowed.
    pub fn allow(&self, key: &str, cost: u64) -> Result<bool> {
        self.check(key, cost).map(|d| d.allowed)
    }

    /// Checks several keys at once, all or nothing: if any denies, none is consumed.
    /// Costs of a key named more than once are summed.
    pub fn check_all(&self, items: &[(&str, u64)]) -> Result<MultiDecision> {
        if items.is_empty() {
            return Err(Error::invalid(
                None,
                "check_all() got no items: pass at least one key",
            ));
        }
        let shared = &*self.shared;
        let (result, seq) = {
            let mut core = shared.lock_core()?;
            let now = shared.now(&core);
            // Distinct keys in first-appearance order, with summed costs.
            let mut merged: Vec<(u32, u64)> = Vec::with_capacity(items.len());
            let mut slot_of: HashMap<u32, usize> = HashMap::with_capacity(items.len());
            let mut slots = Vec::with_capacity(items.len());
            for &(key, cost) in items {
                let (id, entry) = find(&core.registry, key)?;
                validate_cost(key, cost, &entry.quota)?;
                let slot = *slot_of.entry(id).or_insert_with(|| {
                    merged.push((id, 0));
                    merged.len() - 1
                });
                if let Some(m) = merged.get_mut(slot) {
                    m.1 += cost;
                    if m.1 > entry.quota.rate() {
                        return Err(Error::invalid(
                            Some(key),
                            format!(
                                "the costs given for key {key:?} in one check_all() sum to {}, more than its rate ({}): such a request could never be allowed",
                                m.1,
                                entry.quota.rate()
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
            let outcomes: Vec<Decision> = merged
                .iter()
                .filter_map(|&(id, cost)| {
                    core.registry
                        .get(id)
                        .map(|e| e.state.decide(&e.quota, now, cost))
                })
                .collect();
            let allowed = outcomes.iter().all(|o| o.allowed);
            let event = Event::CheckAll {
                at: now,
                allowed,
                items: merged
                    .iter()
                    .zip(&outcomes)
                    .map(|(&(id, cost), outcome)| CheckAllItem {
                        id,
                        cost,
                        lacked_room: !outcome.allowed,
                    })
                    .collect(),
            };
            let seq = shared.append(&mut core, &event)?;
            let mut shown = Vec::with_capacity(merged.len());
            for (&(id, cost), outcome) in merged.iter().zip(&outcomes) {
                let lacked_room = !outcome.allowed;
                let mut outcome = *outcome;
                if !allowed {
                    // Nothing was consumed: report the key as it stands.
                    if let Some(e) = core.registry.get(id) {
                        (outcome.remaining, outcome.reset_at) = e.state.peek(&e.quota, now);
                    }
                    outcome.allowed = false;
                }
                core.registry.apply_check_all_item(
                    id,
                    now,
                    cost,
                    allowed,
                    lacked_room,
                    Some(outcome.remaining),
                );
                shown.push(outcome);
            }
            let registry = &core.registry;
            let denied_key = merged
                .iter()
                .zip(&outcomes)
                .find(|(_, o)| !o.allowed)
                .and_then(|((id, _), _)| registry.get(*id))
                .map(|e| e.key.to_string());
            let results = items
                .iter()
                .zip(&slots)
                .filter_map(|(&(key, cost), &slot)| {
                    let (id, _) = merged.get(slot)?;
                    let quota = registry.get(*id)?.quota;
                    Some(ItemDecision {
                        key: key.to_owned(),
                        decision: decision(&quota, *shown.get(slot)?, cost),
                    })
                })
                .collect();
            (
                MultiDecision {
                    allowed,
                    denied_key,
                    results,
                },
                seq,
            )
        };
        if result.allowed {
            shared.wait_if_always(seq)?;
        }
        Ok(result)
    }

    /// Like [`check_all`](Self::check_all), returning only whether it was allowed.
    pub fn allow_all(&self, items: &[(&str, u64)]) -> Result<bool> {
        self.check_all(items).map(|d| d.allowed)
    }

    /// Puts `key` back to full capacity (counters and history are kept).
    pub fn reset(&self, key: &str) -> Result<()> {
        self.change(key, |id, at| Event::Reset { id, at })
    }

    /// Deletes the limit of `key`, with its counters and history.
    pub fn remove(&self, key: &str) -> Result<()> {
        self.change(key, |id, at| Event::Remove { id, at })
    }

    fn change(&self, key: &str, event: impl FnOnce(u32, UnixNanos) -> Event) -> Result<()> {
        let shared = &*self.shared;
        let seq = {
            let mut core = shared.lock_core()?;
            let now = shared.now(&core);
            let (id, _) = find(&core.registry, key)?;
            let event = event(id, now);
            let seq = shared.append(&mut core, &event)?;
            core.registry
                .apply(&event)
                .map_err(|reason| Error::invalid(Some(key), reason.to_string()))?;
            seq
        };
        shared.wait_if_always(seq)
    }

    /// The limit, capacity and counters of `key`, or `None` when it has no limit.
    pub fn status(&self, key: &str) -> Result<Option<Status>> {
        let core = self.shared.lock_core()?;
        let now = self.shared.now(&core);
        Ok(core
            .registry
            .lookup(key)
            .and_then(|id| core.registry.get(id))
            .map(|e| status_of(e, now)))
    }

    /// Every limit whose key starts with `prefix` (all when `None`), sorted by key.
    pub fn list(&self, prefix: Option<&str>) -> Result<Vec<Status>> {
        let core = self.shared.lock_core()?;
        let now = self.shared.now(&core);
        let mut all: Vec<Status> = core
            .registry
            .iter()
            .filter(|(_, e)| prefix.is_none_or(|p| e.key.starts_with(p)))
            .map(|(_, e)| status_of(e, now))
            .collect();
        drop(core);
        all.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        Ok(all)
    }

    /// The most recent `limit` decisions of `key`, oldest first.
    pub fn history(&self, key: &str, limit: usize) -> Result<Vec<HistoryEvent>> {
        let core = self.shared.lock_core()?;
        let (_, entry) = find(&core.registry, key)?;
        let events = entry.history.as_deref().map(|h| {
            let skip = h.len().saturating_sub(limit);
            h.iter().skip(skip).copied().collect()
        });
        Ok(events.unwrap_or_default())
    }

    /// The `limit` keys with the highest `by` (keys where it is zero are left out).
    pub fn top(&self, by: TopBy, limit: usize) -> Result<Vec<Status>> {
        let core = self.shared.lock_core()?;
        let now = self.shared.now(&core);
        let mut ranked: Vec<(u64, &Entry)> = core
            .registry
            .iter()
            .map(|(_, e)| (by.metric(&e.counters), e))
            .filter(|(metric, _)| *metric > 0)
            .collect();
        ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.key.cmp(&b.1.key)));
        Ok(ranked
            .into_iter()
            .take(limit)
            .map(|(_, e)| status_of(e, now))
            .collect())
    }

    /// Syncs every event written so far to disk.
    pub fn flush(&self) -> Result<()> {
        let shared = &*self.shared;
        drop(shared.lock_core()?);
        shared.wait_durable(shared.written.load(Ordering::Acquire))
    }

    /// Writes the current state to the snapshot and starts a new log holding only what
    /// came after it. Crash-safe at every step.
    pub fn compact(&self) -> Result<CompactReport> {
        self.shared.compact()
    }

    /// Checks the data directory and the engine; see [`DoctorReport`].
    pub fn doctor(&self) -> Result<DoctorReport> {
        self.shared.doctor()
    }

    /// Syncs, stops the background flusher and releases the directory's lock. Later
    /// calls fail with [`Error::Closed`]; closing twice is fine.
    pub fn close(&self) -> Result<()> {
        let shared = &*self.shared;
        {
            let mut core = lock(&shared.core);
            if core.closed {
                return Ok(());
            }
            core.closed = true;
        }
        {
            let mut sync = lock(&shared.sync);
            sync.stop = true;
            shared.wake_flusher.notify_all();
        }
        if let Some(flusher) = lock(&self.flusher).take() {
            let _ = flusher.join();
        }
        let result = shared.wait_durable(shared.written.load(Ordering::Acquire));
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

fn find<'r>(registry: &'r Registry, key: &str) -> Result<(u32, &'r Entry)> {
    validate_key(key)?;
    registry
        .lookup(key)
        .and_then(|id| registry.get(id).map(|e| (id, e)))
        .ok_or_else(|| Error::LimitNotFound {
            key: key.to_owned(),
        })
}

impl Shared {
    fn lock_core(&self) -> Result<MutexGuard<'_, Core>> {
        let core = lock(&self.core);
        if core.closed {
            return Err(Error::Closed);
        }
        Ok(core)
    }

    /// The time to decide at: never earlier than any event already recorded.
    fn now(&self, core: &Core) -> UnixNanos {
        self.options.clock.now().max(core.registry.high_water)
    }

    fn poisoned_error(&self) -> Error {
        Error::Poisoned {
            cause: lock(&self.sync)
                .poisoned
                .clone()
                .unwrap_or_else(|| "unknown".into()),
        }
    }

    /// Appends `event` to the log (under the state lock) and returns its sequence
    /// number. On error nothing was recorded and the caller must not apply the event.
    fn append(&self, core: &mut Core, event: &Event) -> Result<u64> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(self.poisoned_error());
        }
        let mut frame = std::mem::take(&mut core.scratch);
        frame.clear();
        event.encode_frame(&mut frame);
        let appended = core.log.append(&frame);
        core.scratch = frame;
        appended.map_err(|e| Error::io("append to", self.backend.path(LOG_FILE), e))?;
        core.seq += 1;
        self.written.store(core.seq, Ordering::SeqCst);
        let target = self.gather_target.load(Ordering::SeqCst);
        if target != 0 && core.seq >= target {
            let _gather = lock(&self.gather_lock);
            self.appended.notify_one();
        }
        self.log_bytes.store(core.log.len(), Ordering::Relaxed);
        if self.options.sync == SyncMode::Batch
            && core.seq - self.durable.load(Ordering::Relaxed) >= self.options.flush_every_events
            && !self.flush_requested.swap(true, Ordering::AcqRel)
        {
            lock(&self.sync).flush_requested = true;
            self.wake_flusher.notify_one();
        }
        Ok(core.seq)
    }

    fn wait_if_always(&self, seq: u64) -> Result<()> {
        if self.options.sync == SyncMode::Always {
            self.wait_durable(seq)
        } else {
            Ok(())
        }
    }

    /// Returns once event `seq` is on disk. One waiter at a time syncs (the leader);
    /// its sync covers every event written before it began, so the others need no
    /// sync of their own.
    fn wait_durable(&self, seq: u64) -> Result<()> {
        let mut state = lock(&self.sync);
        loop {
            if let Some(cause) = &state.poisoned {
                return Err(Error::Poisoned {
                    cause: cause.clone(),
                });
            }
            if state.durable >= seq {
                return Ok(());
            }
            if state.syncing {
                // Park without the lock: when the sync ends, every waiter it covers
                // returns at once, instead of each retaking the lock in turn.
                state.waiters.push(std::thread::current());
                let round = self.sync_round.load(Ordering::Acquire);
                drop(state);
                while self.sync_round.load(Ordering::Acquire) == round {
                    std::thread::park();
                }
                if self.durable.load(Ordering::Acquire) >= seq {
                    return Ok(());
                }
                state = lock(&self.sync);
                continue;
            }
            state.syncing = true;
            let syncer = Arc::clone(&state.syncer);
            let (expected, patience) = (state.released, state.last_sync_ns / 2);
            drop(state);
            let target = self.gather_appends(expected, patience);
            let started = std::time::Instant::now();
            let result = syncer.sync();
            let took = started.elapsed().as_nanos() as u64;
            state = lock(&self.sync);
            state.syncing = false;
            state.last_sync_ns = took;
            state.released = state.waiters.len();
            let outcome = match result {
                Ok(()) => {
                    state.durable = state.durable.max(target);
                    self.durable.store(state.durable, Ordering::Release);
                    Ok(())
                }
                Err(e) => {
                    let error = Error::io("sync", self.backend.path(LOG_FILE), e);
                    state.poisoned = Some(error.to_string());
                    self.poisoned.store(true, Ordering::Release);
                    Err(error)
                }
            };
            // This sync covered the leader's own event (appended before it began).
            self.release_waiters(state);
            return outcome;
        }
    }

    /// Ends a sync round: every parked caller wakes and either returns (its event is
    /// durable) or tries again (it appended after the sync began, or the sync failed).
    fn release_waiters(&self, mut state: MutexGuard<'_, SyncState>) {
        self.sync_round.fetch_add(1, Ordering::AcqRel);
        let waiters = std::mem::take(&mut state.waiters);
        drop(state);
        for waiter in waiters {
            waiter.unpark();
        }
    }

    /// Before a sync, gives the callers the last sync released a moment to append
    /// again, so that this sync covers them too. Without it, on a busy limiter the
    /// syncs alternate between one for the first caller back and one for the rest.
    /// Waits until `expected` more events than are durable are written, or at most
    /// `patience_ns` (half the last sync's duration, capped at 200 µs). A lone caller
    /// has `expected == 0` and does not wait. Returns the last event the sync covers.
    fn gather_appends(&self, expected: usize, patience_ns: u64) -> u64 {
        let wanted = self.durable.load(Ordering::Acquire) + expected as u64 + 1;
        if expected > 0 && self.written.load(Ordering::Acquire) < wanted {
            let deadline =
                std::time::Instant::now() + Duration::from_nanos(patience_ns.min(200_000));
            // Block rather than spin: the callers need the CPU to get here.
            let mut guard = lock(&self.gather_lock);
            self.gather_target.store(wanted, Ordering::SeqCst);
            while self.written.load(Ordering::SeqCst) < wanted {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                guard = self
                    .appended
                    .wait_timeout(guard, left)
                    .map_or_else(|e| e.into_inner().0, |(g, _)| g);
            }
            self.gather_target.store(0, Ordering::SeqCst);
        }
        self.written.load(Ordering::Acquire)
    }

    /// The background flusher: syncs what is unsynced every `flush_every_ms`, or at
    /// once when batch mode asks, and compacts when the log has grown large.
    fn run_flusher(&self) {
        let interval = Duration::from_millis(self.options.flush_every_ms);
        loop {
            {
                let mut state = lock(&self.sync);
                if !state.stop && !state.flush_requested {
                    state = self
                        .wake_flusher
                        .wait_timeout(state, interval)
                        .map_or_else(|e| e.into_inner().0, |(guard, _)| guard);
                }
                if state.stop {
                    return;
                }
                state.flush_requested = false;
                self.flush_requested.store(false, Ordering::Release);
            }
            let written = self.written.load(Ordering::Acquire);
            if written > self.durable.load(Ordering::Acquire) {
                // A failure poisons the engine; callers see it on their next write.
                let _ = self.wait_durable(written);
            }
            if self.compaction_due() {
                // The log stays complete if this fails; `compact` keeps the error for
                // doctor, and the compaction is tried again at the next round.
                let _ = self.compact();
            }
        }
    }

    fn compaction_due(&self) -> bool {
        let log_bytes = self.log_bytes.load(Ordering::Relaxed);
        let snapshot_bytes = lock(&self.core).snapshot_bytes;
        log_bytes >= self.options.compact_threshold_bytes && log_bytes >= snapshot_bytes
    }

    /// Compacts, remembering the failure (or clearing it) for doctor.
    fn compact(&self) -> Result<CompactReport> {
        let result = self.compact_now();
        *lock(&self.compaction_failure) = result.as_ref().err().map(ToString::to_string);
        result
    }

    fn compact_now(&self) -> Result<CompactReport> {
        let _one_at_a_time = lock(&self.compaction);
        let snapshot_path = self.backend.path(SNAPSHOT_FILE);
        let log_path = self.backend.path(LOG_FILE);
        // 1. Capture the state and the log position it covers.
        let (bytes, covers, keys, log_bytes_before) = {
            let core = self.lock_core()?;
            if self.poisoned.load(Ordering::Acquire) {
                return Err(self.poisoned_error());
            }
            let covers = Covers {
                generation: core.generation,
                offset: core.log.len(),
            };
            (
                snapshot::encode(&core.registry, covers),
                covers,
                core.registry.len(),
                core.log.len(),
            )
        };
        // 2. Write the snapshot (temp, fsync, rename, directory fsync), without the
        //    state lock: checks go on meanwhile, appending to the old log.
        self.backend
            .write_atomic(SNAPSHOT_FILE, &bytes)
            .map_err(|e| Error::io("write", &snapshot_path, e))?;
        // 3. Replace the log with one of the next generation that holds only what was
        //    appended after the snapshot's position. Until the rename the old log and
        //    the snapshot together are complete; after it the new log and the snapshot.
        let mut core = self.lock_core()?;
        core.snapshot_bytes = bytes.len() as u64;
        let tail = core
            .log
            .read_from(covers.offset)
            .map_err(|e| Error::io("read", &log_path, e))?;
        let mut content = encode_log_header(covers.generation + 1).to_vec();
        content.extend_from_slice(&tail);
        let log = self
            .backend
            .create_log(LOG_FILE, &content)
            .map_err(|e| Error::io("replace", &log_path, e))?;
        core.log = log;
        core.generation += 1;
        core.torn = None;
        let log_bytes_after = core.log.len();
        self.log_bytes.store(log_bytes_after, Ordering::Relaxed);
        {
            // The new log was synced as a whole: everything written is durable.
            let mut state = lock(&self.sync);
            state.syncer = core.log.syncer();
            state.durable = state.durable.max(core.seq);
            self.durable.store(state.durable, Ordering::Release);
            self.release_waiters(state);
        }
        Ok(CompactReport {
            keys,
            snapshot_bytes: bytes.len() as u64,
            log_bytes_before,
            log_bytes_after,
        })
    }

    fn doctor(&self) -> Result<DoctorReport> {
        let core = self.lock_core()?;
        let mut checks = Vec::new();
        let mut check = |name, level, detail: String| {
            checks.push(DoctorCheck {
                name,
                level,
                detail,
            });
        };
        check(
            "lock",
            CheckLevel::Ok,
            format!("held by this process (pid {})", std::process::id()),
        );
        match self.backend.dir_mode() {
            Ok(mode) if mode & 0o077 == 0 /* no group or other bits */ => {
                check("permissions", CheckLevel::Ok, format!("directory mode {mode:o}"));
            }
            Ok(mode) => check(
                "permissions",
                CheckLevel::Warn,
                format!(
                    "directory mode {mode:o} lets other users read limiter state: run `chmod 700 {}`",
                    self.dir.display()
                ),
            ),
            Err(e) => check("permissions", CheckLevel::Fail, format!("cannot stat the directory: {e}")),
        }
        let poisoned = lock(&self.sync).poisoned.clone();
        let log_bytes = core.log.len();
        match poisoned {
            None => check(
                "log",
                CheckLevel::Ok,
                format!(
                    "generation {}, {log_bytes} bytes, {} records replayed on open",
                    core.generation, core.replayed
                ),
            ),
            Some(cause) => check(
                "log",
                CheckLevel::Fail,
                format!("writes stopped after a storage failure: {cause}; close and reopen"),
            ),
        }
        check(
            "snapshot",
            CheckLevel::Ok,
            if core.snapshot_bytes == 0 {
                "none yet (written by compaction)".to_owned()
            } else {
                format!("{} bytes", core.snapshot_bytes)
            },
        );
        match core.torn {
            None => check("torn_tail", CheckLevel::Ok, "none found on open".into()),
            Some(torn) => check(
                "torn_tail",
                CheckLevel::Warn,
                format!(
                    "a torn final record (a crash mid-write) was cut on open: {} bytes at offset {}; no acknowledged decision is lost",
                    torn.bytes, torn.offset
                ),
            ),
        }
        let pending = core.seq - self.durable.load(Ordering::Acquire).min(core.seq);
        check(
            "pending",
            CheckLevel::Ok,
            format!("{pending} events written but not yet synced"),
        );
        let threshold = self.options.compact_threshold_bytes;
        let due = log_bytes >= threshold && log_bytes >= core.snapshot_bytes;
        let status = format!(
            "log {log_bytes} bytes of {threshold} before automatic compaction{}",
            if due { " (due now)" } else { "" }
        );
        match lock(&self.compaction_failure).as_deref() {
            None => check("compaction", CheckLevel::Ok, status),
            Some(failure) => check(
                "compaction",
                CheckLevel::Warn,
                format!("{status}; the last automatic compaction failed ({failure}), so the log keeps growing: free disk space or run compact()"),
            ),
        }
        match self.backend.free_space() {
            Ok(free) if free < 16 << 20 => check(
                "disk_space",
                CheckLevel::Fail,
                format!("only {free} bytes free: free space or writes will fail"),
            ),
            Ok(free) if free < 256 << 20 => check(
                "disk_space",
                CheckLevel::Warn,
                format!("only {free} bytes free"),
            ),
            Ok(free) => check("disk_space", CheckLevel::Ok, format!("{free} bytes free")),
            Err(e) => check("disk_space", CheckLevel::Warn, format!("cannot tell: {e}")),
        }
        let ok = checks.iter().all(|c| c.level != CheckLevel::Fail);
        Ok(DoctorReport {
            ok,
            checks,
            sync: self.options.sync.name(),
            version: env!("CARGO_PKG_VERSION"),
            data_dir: self.dir.clone(),
            log_bytes,
            snapshot_bytes: core.snapshot_bytes,
            keys: core.registry.len(),
            pending_events: pending,
        })
    }
}
