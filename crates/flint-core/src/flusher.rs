//! The background flusher: syncs what is unsynced every `flush_every_ms` (denials in
//! both modes, everything in batch mode), at once when batch mode or an async waiter
//! asks, and compacts when the log has grown large.

use std::time::Duration;

use crate::limiter::Shared;

impl Shared {
    /// The flusher thread's loop; returns when the limiter closes.
    pub(crate) fn run_flusher(&self) {
        let interval = Duration::from_millis(self.options.flush_every_ms);
        while self.commit.wait_for_flush(interval) {
            let (written, durable) = self.commit.positions();
            if written.seq > durable.seq {
                // A failure poisons the engine; callers see it on their next write.
                let _ = self.commit.sync_all();
            }
            if self.compaction_due() {
                // The log stays complete if this fails; `compact` keeps the error for
                // doctor, and the compaction is tried again at the next round.
                let _ = self.compact();
            }
        }
    }
}
