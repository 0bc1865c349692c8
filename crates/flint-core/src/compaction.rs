//! Compaction: the whole state into the snapshot, and a new log holding only what came
//! after it.
//!
//! A compaction is a [`Compaction`] value taken under the state lock, then carried out
//! in named steps, each of which a power loss may interrupt (the crash tests cut power
//! before every storage primitive of every step):
//!
//! 1. [`Compaction::capture`]: encode the state and note the log position it covers.
//! 2. [`Compaction::sync_covered`]: make the log durable through that position, so the
//!    snapshot never covers records the disk does not hold.
//! 3. [`Compaction::write_snapshot`]: temp file, sync, rename, directory sync. Until
//!    the rename, the old snapshot and log are complete; after it, the new snapshot and
//!    the old log (replay starts at the snapshot's position).
//! 4. [`Compaction::replace_log`]: a log of the next generation holding the records
//!    appended since step 1, written, synced and mapped before its rename (the commit
//!    point). A failure before the rename leaves the old log in use; after it, the new
//!    log is installed, and if the directory sync failed the engine is poisoned, since
//!    the rename might not survive a power loss.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::limiter::{lock, CompactReport, Shared};
use crate::storage::format::{
    encode_log_header, new_log_salt, LOG_FILE, LOG_HEADER_LEN, SNAPSHOT_FILE,
};
use crate::storage::record::strip_synced;
use crate::storage::recovery::NEW_LOG_CAPACITY;
use crate::storage::replace::{self, ReplaceError};
use crate::storage::snapshot::{self, Covers};

/// A compaction in progress; see the module documentation.
pub(crate) struct Compaction {
    covers: Covers,
    /// The sequence number of the last record the snapshot covers.
    seq: u64,
    snapshot: Vec<u8>,
    keys: usize,
}

impl Compaction {
    /// Step 1: the state and the log position it covers, under the state lock.
    pub fn capture(shared: &Shared) -> Result<Compaction> {
        let core = shared.lock_core()?;
        if let Some(cause) = shared.commit.poisoned() {
            return Err(Error::Poisoned { cause });
        }
        let log = core.log.as_ref().ok_or(Error::Closed)?;
        let covers = Covers {
            generation: core.generation,
            offset: log.len(),
        };
        Ok(Compaction {
            covers,
            seq: shared.commit.positions().0.seq,
            snapshot: snapshot::encode(&core.registry, covers),
            keys: core.registry.len(),
        })
    }

    /// Step 2: the log is durable through what the snapshot covers.
    pub fn sync_covered(&self, shared: &Shared) -> Result<()> {
        shared.commit.wait(self.seq)
    }

    /// Step 3: the snapshot replaces the old one.
    pub fn write_snapshot(&self, shared: &Shared) -> Result<()> {
        let result = replace::write_atomic(&*shared.backend, SNAPSHOT_FILE, &self.snapshot);
        if !matches!(result, Err(ReplaceError::NotReplaced(_))) {
            lock(&shared.core).snapshot_bytes = self.snapshot.len() as u64;
        }
        // Even when only the directory sync failed, the old log is complete and in use:
        // stopping here loses nothing.
        result.map_err(|e| Error::io("write", shared.backend.path(SNAPSHOT_FILE), e.into_io()))
    }

    /// Step 4: a new log of the next generation with the records appended since
    /// step 1; see the module documentation for the commit point.
    pub fn replace_log(self, shared: &Shared) -> Result<CompactReport> {
        let log_path = shared.backend.path(LOG_FILE);
        let mut core = shared.lock_core()?;
        let old = core.log.as_ref().ok_or(Error::Closed)?;
        let log_bytes_before = old.len();
        let tail = old
            .read_from(self.covers.offset)
            .map_err(|e| Error::io("read", &log_path, e))?;
        // Watermarks name offsets of the old log: they stay behind.
        let (records, _) = strip_synced(&tail);
        let salt = new_log_salt();
        let mut content = encode_log_header(self.covers.generation + 1, salt).to_vec();
        content.extend_from_slice(&records);
        let capacity = (content.len() as u64 * 2).max(NEW_LOG_CAPACITY);
        let new = replace::replace_log(&*shared.backend, LOG_FILE, &content, capacity)
            .map_err(|e| Error::io("replace", &log_path, e.into_io()))?;
        // Committed: the new log holds, synced, every record written so far. If the
        // directory sync failed the rename may not survive a power loss: poison first,
        // so that the swap releases no waiter as durable.
        let dir_synced = new.dir_synced.map_err(|e| {
            let error = Error::io("sync the directory after replacing", &log_path, e);
            shared.commit.poison(error.to_string());
            error
        });
        let syncer = new.log.syncer();
        let log_bytes_after = new.log.len();
        core.log = Some(new.log);
        core.generation = self.covers.generation + 1;
        core.marked_through = LOG_HEADER_LEN;
        core.salt = salt;
        core.torn = None;
        let written = shared.commit.positions().0.seq;
        shared.commit.swap(
            Arc::clone(&syncer),
            core.generation,
            written,
            log_bytes_after,
        );
        drop(core);
        dir_synced?;
        Ok(CompactReport {
            keys: self.keys,
            snapshot_bytes: self.snapshot.len() as u64,
            log_bytes_before,
            log_bytes_after,
        })
    }
}

impl Shared {
    /// Compacts, remembering the failure (or clearing it) for doctor.
    pub(crate) fn compact(&self) -> Result<CompactReport> {
        let result = self.compact_now();
        if result.is_ok() {
            self.compactions
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        *lock(&self.compaction_failure) = result.as_ref().err().map(ToString::to_string);
        result
    }

    fn compact_now(&self) -> Result<CompactReport> {
        let _one_at_a_time = lock(&self.compaction);
        // Keys back at full capacity need not be in the snapshot.
        self.sweep(None)?;
        let compaction = Compaction::capture(self)?;
        compaction.sync_covered(self)?;
        compaction.write_snapshot(self)?;
        compaction.replace_log(self)
    }

    /// Whether the log has grown enough for an automatic compaction.
    pub(crate) fn compaction_due(&self) -> bool {
        let core = lock(&self.core);
        let log_bytes = core.log.as_ref().map_or(0, |log| log.len());
        log_bytes >= self.options.compact_threshold_bytes && log_bytes >= core.snapshot_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::{Algorithm, Quota};
    use crate::clock::ManualClock;
    use crate::limiter::{Limiter, Options, SyncMode};
    use crate::storage::memory::MemoryBackend;

    /// Each step on its own, and what a power loss right after it keeps.
    #[test]
    fn each_step_leaves_a_directory_that_opens_to_the_same_state() {
        let backend = MemoryBackend::new();
        let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
        let options = Options::default()
            .sync(SyncMode::Batch)
            .clock(clock.clone())
            .flush_every_ms(3_600_000)
            .flush_every_events(u64::MAX)
            .backend(Arc::new(backend.clone()));
        let limiter = Limiter::open("memory", options.clone()).unwrap();
        let quota = Quota::new(100, "1h".parse().unwrap(), Algorithm::TokenBucket).unwrap();
        limiter.limit("k", quota).unwrap();
        for _ in 0..5 {
            limiter.check("k", 1).unwrap();
        }
        let shared = limiter.shared();
        let allowed_after = |image: &MemoryBackend| {
            let reopened =
                Limiter::open("memory", options.clone().backend(Arc::new(image.clone()))).unwrap();
            reopened.status("k").unwrap().unwrap().counters.allowed
        };
        // Nothing synced yet (batch mode): a power loss may keep any prefix.
        let compaction = Compaction::capture(shared).unwrap();
        assert!(allowed_after(&backend.crash_image(1)) <= 5);
        compaction.sync_covered(shared).unwrap();
        // Synced through what the snapshot will cover: every power loss keeps it all.
        for seed in 0..8 {
            assert_eq!(allowed_after(&backend.crash_image(seed)), 5, "seed {seed}");
        }
        compaction.write_snapshot(shared).unwrap();
        assert!(backend.names().contains(&SNAPSHOT_FILE.to_owned()));
        for seed in 0..8 {
            assert_eq!(allowed_after(&backend.crash_image(seed)), 5, "seed {seed}");
        }
        let report = compaction.replace_log(shared).unwrap();
        assert_eq!(report.keys, 1);
        assert!(report.log_bytes_after < report.log_bytes_before);
        for seed in 0..8 {
            assert_eq!(allowed_after(&backend.crash_image(seed)), 5, "seed {seed}");
        }
        assert_eq!(limiter.status("k").unwrap().unwrap().counters.allowed, 5);
    }
}
