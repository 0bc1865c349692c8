//! Group commit: the one owner of "what is written" and "what is durable".
//!
//! Every append passes through [`GroupCommit::append`], which numbers it; a caller
//! that must not return before its record is on disk waits for its number with
//! [`GroupCommit::wait`] (blocking) or [`GroupCommit::durable`] (a future). One waiter
//! at a time syncs (the leader); its sync covers every record written before it began,
//! so the others need no sync of their own. When it ends, the leader releases the
//! waiters it covered and hands leadership to one that is still waiting.
//!
//! The syncer, the written and durable positions, the waiters, the leader flag and
//! poisoning all live behind one lock, and the log is swapped (compaction) through the
//! same lock. A leader takes the syncer and its target together, after gathering, so
//! a swap can never make it sync one log and release records of another.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::storage::backend::LogSync;

/// The longest a leader waits for released callers to append again.
const MAX_GATHER: Duration = Duration::from_micros(200);

/// A record's place: its sequence number (across logs) and where it ends in its log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Position {
    pub seq: u64,
    pub offset: u64,
}

const WAITING: u8 = 0;
const DURABLE: u8 = 1;
const FAILED: u8 = 2;
const LEAD: u8 = 3;

/// A parked caller's mailbox: the leader writes the outcome, then wakes it.
struct Slot {
    state: AtomicU8,
    wake: Wake,
}

enum Wake {
    Thread(Thread),
    Task(Mutex<Option<Waker>>),
}

impl Slot {
    fn set(&self, state: u8) {
        self.state.store(state, Ordering::Release);
    }

    fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    fn wake(&self) {
        match &self.wake {
            Wake::Thread(thread) => thread.unpark(),
            Wake::Task(waker) => {
                if let Some(waker) = lock(waker).take() {
                    waker.wake();
                }
            }
        }
    }
}

struct Waiter {
    seq: u64,
    slot: Arc<Slot>,
}

/// Everything group commit knows, behind one lock.
struct CommitState {
    /// Syncs the current log.
    syncer: Arc<dyn LogSync>,
    /// Which log the syncer and the offsets belong to (its generation).
    log_id: u64,
    written: Position,
    /// Every record up to `durable.seq` is on disk; `durable.offset` is where the
    /// durable part of the current log ends.
    durable: Position,
    /// A leader is gathering or syncing (or was handed the lead and is waking up).
    leading: bool,
    waiters: Vec<Waiter>,
    /// How many callers the last sync released: they will likely append again soon,
    /// so the next leader gives them a moment to do so.
    released: usize,
    /// How long the last sync took.
    last_sync: Duration,
    /// The longest a leader gathers ([`MAX_GATHER`]; tests lengthen it).
    max_gather: Duration,
    /// While a leader gathers, the sequence number it waits for (0 otherwise).
    gather_for: u64,
    poisoned: Option<String>,
    /// Batch mode: ask the flusher to sync once this many records are unsynced.
    flush_every_events: Option<u64>,
    flush_requested: bool,
    stopping: bool,
    /// Syncs that completed, and the time they took in all (for metrics).
    syncs: u64,
    sync_nanos: u64,
}

/// See the module documentation.
pub(crate) struct GroupCommit {
    state: Mutex<CommitState>,
    /// Signalled when an append reaches the gathering leader's target.
    appended: Condvar,
    /// Signalled when the flusher should run (a request, or stopping).
    flusher: Condvar,
    /// The log's path, for messages.
    log_path: PathBuf,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned mutex still holds
    // consistent data.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl GroupCommit {
    /// Group commit over a log whose first `end` bytes are durable.
    pub fn new(
        syncer: Arc<dyn LogSync>,
        log_id: u64,
        end: u64,
        flush_every_events: Option<u64>,
        log_path: PathBuf,
    ) -> Self {
        let start = Position {
            seq: 0,
            offset: end,
        };
        GroupCommit {
            state: Mutex::new(CommitState {
                syncer,
                log_id,
                written: start,
                durable: start,
                leading: false,
                waiters: Vec::new(),
                released: 0,
                last_sync: Duration::ZERO,
                max_gather: MAX_GATHER,
                gather_for: 0,
                poisoned: None,
                flush_every_events,
                flush_requested: false,
                stopping: false,
                syncs: 0,
                sync_nanos: 0,
            }),
            appended: Condvar::new(),
            flusher: Condvar::new(),
            log_path,
        }
    }

    fn poisoned_error(cause: &str) -> Error {
        Error::Poisoned {
            cause: cause.to_owned(),
        }
    }

    /// Appends one record: `write` gets the offset through which the current log is
    /// durable, appends, and returns the log's new end. Runs under this lock, so the
    /// order of sequence numbers is the order of the log. Returns the record's
    /// sequence number. Refuses (without calling `write`) once poisoned.
    pub fn append(&self, write: impl FnOnce(u64) -> Result<u64>) -> Result<u64> {
        let mut st = lock(&self.state);
        if let Some(cause) = &st.poisoned {
            return Err(Self::poisoned_error(cause));
        }
        let end = write(st.durable.offset)?;
        st.written = Position {
            seq: st.written.seq + 1,
            offset: end,
        };
        let seq = st.written.seq;
        if st.gather_for != 0 && seq >= st.gather_for {
            self.appended.notify_one();
        }
        if let Some(every) = st.flush_every_events {
            if seq - st.durable.seq >= every && !st.flush_requested {
                st.flush_requested = true;
                self.flusher.notify_one();
            }
        }
        Ok(seq)
    }

    /// Returns once record `seq` is durable; the caller may have to sync (lead).
    pub fn wait(&self, seq: u64) -> Result<()> {
        let mut st = lock(&self.state);
        if let Some(cause) = &st.poisoned {
            return Err(Self::poisoned_error(cause));
        }
        if st.durable.seq >= seq {
            return Ok(());
        }
        if !st.leading {
            st.leading = true;
            return self.lead(st);
        }
        let slot = Arc::new(Slot {
            state: AtomicU8::new(WAITING),
            wake: Wake::Thread(std::thread::current()),
        });
        st.waiters.push(Waiter {
            seq,
            slot: Arc::clone(&slot),
        });
        drop(st);
        loop {
            match slot.state() {
                DURABLE => return Ok(()),
                FAILED => {
                    return Err(self
                        .poisoned()
                        .map_or(Error::Closed, |c| Self::poisoned_error(&c)))
                }
                LEAD => return self.lead(lock(&self.state)),
                _ => std::thread::park(),
            }
        }
    }

    /// A future that resolves once record `seq` is durable. It never syncs on the
    /// polling thread: when no leader is running, it asks the flusher to sync.
    pub fn durable(self: &Arc<Self>, seq: u64) -> Durable {
        Durable {
            commit: Arc::clone(self),
            seq,
            slot: None,
        }
    }

    /// Makes everything written so far durable.
    pub fn sync_all(&self) -> Result<()> {
        let target = lock(&self.state).written.seq;
        self.wait(target)
    }

    /// Syncs as the leader (`st.leading` is ours), releases the covered waiters and
    /// hands the lead on.
    fn lead<'a>(&'a self, mut st: MutexGuard<'a, CommitState>) -> Result<()> {
        // Give the callers the last sync released a moment to append again, so that
        // this sync covers them too: without it, on a busy limiter the syncs alternate
        // between one for the first caller back and one for the rest.
        let wanted = st.durable.seq + st.released as u64 + 1;
        if st.released > 0 && st.written.seq < wanted && st.poisoned.is_none() {
            let deadline = Instant::now() + (st.last_sync / 2).min(st.max_gather);
            st.gather_for = wanted;
            while st.written.seq < wanted {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                st = self
                    .appended
                    .wait_timeout(st, left)
                    .map_or_else(|e| e.into_inner().0, |(g, _)| g);
            }
            st.gather_for = 0;
        }
        // The syncer and its target, taken together: both belong to the same log.
        let (syncer, target, log_id) = (Arc::clone(&st.syncer), st.written, st.log_id);
        let mut outcome = Ok(());
        if target.seq > st.durable.seq && st.poisoned.is_none() {
            drop(st);
            let started = Instant::now();
            let result = syncer.sync();
            let took = started.elapsed();
            st = lock(&self.state);
            st.last_sync = took;
            st.syncs += 1;
            st.sync_nanos = st
                .sync_nanos
                .saturating_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
            match result {
                Ok(()) => {
                    st.durable.seq = st.durable.seq.max(target.seq);
                    if log_id == st.log_id {
                        st.durable.offset = st.durable.offset.max(target.offset);
                    }
                }
                Err(e) => {
                    let error = Error::io("sync", &self.log_path, e);
                    st.poisoned = Some(error.to_string());
                    outcome = Err(error);
                }
            }
        }
        if outcome.is_ok() {
            if let Some(cause) = &st.poisoned {
                outcome = Err(Self::poisoned_error(cause));
            }
        }
        let mut woken = Self::release_covered(&mut st);
        st.released = woken.len();
        // Hand the lead to a waiting thread; tasks never lead, the flusher syncs for
        // them.
        let next_leader = st
            .waiters
            .iter()
            .position(|w| matches!(w.slot.wake, Wake::Thread(_)));
        if let Some(next) = next_leader {
            let next = st.waiters.swap_remove(next);
            next.slot.set(LEAD);
            woken.push(next.slot);
        } else {
            st.leading = false;
            if !st.waiters.is_empty() {
                st.flush_requested = true;
                self.flusher.notify_one();
            }
        }
        drop(st);
        for slot in woken {
            slot.wake();
        }
        outcome
    }

    /// Marks the waiters whose record is durable (every waiter, once poisoned) and
    /// returns their slots, to be woken after the lock is released.
    fn release_covered(st: &mut CommitState) -> Vec<Arc<Slot>> {
        let failed = st.poisoned.is_some();
        let durable = st.durable.seq;
        let mut woken = Vec::new();
        st.waiters.retain(|w| {
            if failed || w.seq <= durable {
                w.slot.set(if failed { FAILED } else { DURABLE });
                woken.push(Arc::clone(&w.slot));
                false
            } else {
                true
            }
        });
        woken
    }

    /// Installs a new log (compaction): it holds, synced, every record up to `seq` and
    /// ends at `offset`. Waiters for those records are released.
    pub fn swap(&self, syncer: Arc<dyn LogSync>, log_id: u64, seq: u64, offset: u64) {
        let mut st = lock(&self.state);
        st.syncer = syncer;
        st.log_id = log_id;
        st.written = Position { seq, offset };
        st.durable = Position {
            seq: st.durable.seq.max(seq),
            offset,
        };
        let woken = Self::release_covered(&mut st);
        drop(st);
        for slot in woken {
            slot.wake();
        }
    }

    /// Stops every later write: a storage failure (or a bug) means a decision might
    /// not be recorded. Every waiter fails.
    pub fn poison(&self, cause: String) {
        let mut st = lock(&self.state);
        if st.poisoned.is_none() {
            st.poisoned = Some(cause);
        }
        let woken = Self::release_covered(&mut st);
        drop(st);
        for slot in woken {
            slot.wake();
        }
    }

    /// Why writes stopped, if they did.
    pub fn poisoned(&self) -> Option<String> {
        lock(&self.state).poisoned.clone()
    }

    /// The syncs completed so far and the nanoseconds they took in all.
    pub fn sync_totals(&self) -> (u64, u64) {
        let st = lock(&self.state);
        (st.syncs, st.sync_nanos)
    }

    /// The written and the durable position.
    pub fn positions(&self) -> (Position, Position) {
        let st = lock(&self.state);
        (st.written, st.durable)
    }

    /// The flusher's wait: returns `false` when stopping, `true` after a request or
    /// `interval`.
    pub fn wait_for_flush(&self, interval: Duration) -> bool {
        let mut st = lock(&self.state);
        if !st.stopping && !st.flush_requested {
            st = self
                .flusher
                .wait_timeout(st, interval)
                .map_or_else(|e| e.into_inner().0, |(g, _)| g);
        }
        st.flush_requested = false;
        !st.stopping
    }

    /// Lets go of the log (closing): the syncer, which keeps the file open, is dropped.
    pub fn close(&self) {
        lock(&self.state).syncer = Arc::new(ClosedLog);
    }

    /// Asks the flusher to stop.
    pub fn stop(&self) {
        lock(&self.state).stopping = true;
        self.flusher.notify_all();
    }

    #[cfg(test)]
    fn set_gathering(&self, released: usize, last_sync: Duration) {
        let mut st = lock(&self.state);
        st.released = released;
        st.last_sync = last_sync;
        st.max_gather = last_sync;
    }

    #[cfg(test)]
    fn gathering(&self) -> bool {
        lock(&self.state).gather_for != 0
    }
}

/// The syncer of a closed limiter.
struct ClosedLog;

impl LogSync for ClosedLog {
    fn sync(&self) -> std::io::Result<()> {
        Err(std::io::Error::other("the limiter is closed"))
    }
}

/// Resolves once a record is durable: see [`GroupCommit::durable`].
pub(crate) struct Durable {
    commit: Arc<GroupCommit>,
    seq: u64,
    slot: Option<Arc<Slot>>,
}

impl Future for Durable {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let outcome = |commit: &GroupCommit, state: u8| match state {
            DURABLE => Some(Ok(())),
            FAILED => Some(Err(commit
                .poisoned()
                .map_or(Error::Closed, |c| GroupCommit::poisoned_error(&c)))),
            _ => None,
        };
        if let Some(slot) = &self.slot {
            if let Some(done) = outcome(&self.commit, slot.state()) {
                return Poll::Ready(done);
            }
            if let Wake::Task(waker) = &slot.wake {
                *lock(waker) = Some(cx.waker().clone());
            }
            // The leader may have finished between the check and the new waker.
            return match outcome(&self.commit, slot.state()) {
                Some(done) => Poll::Ready(done),
                None => Poll::Pending,
            };
        }
        let commit = Arc::clone(&self.commit);
        let mut st = lock(&commit.state);
        if let Some(cause) = &st.poisoned {
            return Poll::Ready(Err(GroupCommit::poisoned_error(cause)));
        }
        if st.durable.seq >= self.seq {
            return Poll::Ready(Ok(()));
        }
        let slot = Arc::new(Slot {
            state: AtomicU8::new(WAITING),
            wake: Wake::Task(Mutex::new(Some(cx.waker().clone()))),
        });
        st.waiters.push(Waiter {
            seq: self.seq,
            slot: Arc::clone(&slot),
        });
        if !st.leading {
            st.flush_requested = true;
            commit.flusher.notify_one();
        }
        drop(st);
        self.slot = Some(slot);
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// A syncer that counts its syncs and can be slowed down.
    #[derive(Default)]
    struct Counted {
        syncs: AtomicU64,
        delay_ms: u64,
        fail: bool,
    }

    impl LogSync for Counted {
        fn sync(&self) -> std::io::Result<()> {
            std::thread::sleep(Duration::from_millis(self.delay_ms));
            if self.fail {
                return Err(std::io::Error::other("injected EIO"));
            }
            self.syncs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn commit(syncer: &Arc<Counted>) -> Arc<GroupCommit> {
        Arc::new(GroupCommit::new(
            Arc::clone(syncer) as Arc<dyn LogSync>,
            0,
            32,
            None,
            PathBuf::from("log"),
        ))
    }

    fn append(commit: &GroupCommit, end: u64) -> u64 {
        commit.append(|_| Ok(end)).unwrap()
    }

    /// `n` threads that each append one record and wait until it is durable.
    fn callers(gc: &Arc<GroupCommit>, n: u64) -> Vec<std::thread::JoinHandle<Result<()>>> {
        (0..n)
            .map(|i| {
                let gc = Arc::clone(gc);
                std::thread::spawn(move || {
                    let seq = append(&gc, 100 + i);
                    gc.wait(seq)
                })
            })
            .collect()
    }

    #[test]
    fn a_lone_caller_syncs_and_becomes_durable() {
        let syncer = Arc::new(Counted::default());
        let gc = commit(&syncer);
        let seq = append(&gc, 61);
        gc.wait(seq).unwrap();
        assert_eq!(syncer.syncs.load(Ordering::SeqCst), 1);
        let (written, durable) = gc.positions();
        assert_eq!(written, durable);
        assert_eq!(durable.offset, 61);
        // Nothing new: no second sync.
        gc.wait(seq).unwrap();
        assert_eq!(syncer.syncs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn waiters_share_one_sync_and_the_lead_passes_on() {
        let syncer = Arc::new(Counted {
            delay_ms: 20,
            ..Counted::default()
        });
        let gc = commit(&syncer);
        let threads = callers(&gc, 6);
        for t in threads {
            t.join().unwrap().unwrap();
        }
        let syncs = syncer.syncs.load(Ordering::SeqCst);
        assert!((1..6).contains(&syncs), "{syncs} syncs for 6 callers");
        let (written, durable) = gc.positions();
        assert_eq!(written.seq, durable.seq);
    }

    #[test]
    fn a_swap_during_gathering_never_releases_a_record_of_the_new_log_with_a_sync_of_the_old() {
        let old = Arc::new(Counted::default());
        let new = Arc::new(Counted::default());
        let gc = commit(&old);
        // The last sync released one caller and took long: the next leader gathers.
        gc.set_gathering(1, Duration::from_secs(20));
        let first = append(&gc, 61);
        let leader = {
            let gc = Arc::clone(&gc);
            std::thread::spawn(move || gc.wait(first))
        };
        for _ in 0..10_000 {
            if gc.gathering() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(gc.gathering(), "the leader never started gathering");
        // Compaction: a new log holding record 1, synced as a whole.
        gc.swap(Arc::clone(&new) as Arc<dyn LogSync>, 1, first, 40);
        // A caller appends to the new log; this ends the leader's gathering.
        let second = append(&gc, 69);
        leader.join().unwrap().unwrap();
        gc.wait(second).unwrap();
        assert_eq!(
            old.syncs.load(Ordering::SeqCst),
            0,
            "the old log was synced"
        );
        assert!(
            new.syncs.load(Ordering::SeqCst) >= 1,
            "the new log was never synced"
        );
        assert_eq!(gc.positions().1.offset, 69);
    }

    #[test]
    fn a_failed_sync_poisons_and_fails_every_waiter() {
        let syncer = Arc::new(Counted {
            delay_ms: 20,
            fail: true,
            ..Counted::default()
        });
        let gc = commit(&syncer);
        let threads = callers(&gc, 4);
        for t in threads {
            assert!(t.join().unwrap().is_err());
        }
        assert!(gc.poisoned().is_some());
        assert!(matches!(gc.append(|_| Ok(1)), Err(Error::Poisoned { .. })));
    }

    #[test]
    fn the_async_wait_asks_the_flusher_and_resolves_after_its_sync() {
        let syncer = Arc::new(Counted::default());
        let gc = commit(&syncer);
        let seq = append(&gc, 61);
        let flusher = {
            let gc = Arc::clone(&gc);
            std::thread::spawn(move || {
                assert!(gc.wait_for_flush(Duration::from_secs(20)));
                gc.sync_all()
            })
        };
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut future = gc.durable(seq);
        assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
        flusher.join().unwrap().unwrap();
        assert!(matches!(
            Pin::new(&mut future).poll(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(syncer.syncs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn batch_mode_asks_the_flusher_after_enough_records() {
        let syncer = Arc::new(Counted::default());
        let gc = GroupCommit::new(
            Arc::clone(&syncer) as Arc<dyn LogSync>,
            0,
            32,
            Some(3),
            PathBuf::from("log"),
        );
        for end in [40, 50] {
            gc.append(|_| Ok(end)).unwrap();
        }
        assert!(!lock(&gc.state).flush_requested);
        gc.append(|_| Ok(60)).unwrap();
        assert!(lock(&gc.state).flush_requested);
    }
}
