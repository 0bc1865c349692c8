//! The background flusher: syncs what is unsynced every `flush_every_ms` (denials in
//! both modes, everything in batch mode), at once when batch mode or an async waiter
//! asks, and starts a compaction when the log has grown large.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::limiter::Shared;

impl Shared {
    /// The flusher thread's loop; returns when the limiter closes.
    pub(crate) fn run_flusher(self: &Arc<Self>) {
        let interval = Duration::from_millis(self.options.flush_every_ms);
        while self.commit.wait_for_flush(interval) {
            let (written, durable) = self.commit.positions();
            if written.seq > durable.seq {
                // A failure poisons the engine; callers see it on their next write.
                let _ = self.commit.sync_all();
            }
            // Keys made from templates that are back at full capacity go, a slice of
            // ids per round. A failure poisons or closes the engine; callers see it.
            let _ = self.sweep_round();
            if self.compaction_due() && !self.compacting.swap(true, Ordering::SeqCst) {
                // On a thread of its own: async waiters rely on this thread for their
                // syncs, and a compaction of many keys takes a while. The log stays
                // complete if it fails; `compact` keeps the error for doctor, and it is
                // tried again at a later round.
                let shared = Arc::clone(self);
                let started = std::thread::Builder::new()
                    .name("flint-compaction".into())
                    .spawn(move || {
                        let _ = shared.compact();
                        shared.compacting.store(false, Ordering::SeqCst);
                    });
                if started.is_err() {
                    let _ = self.compact();
                    self.compacting.store(false, Ordering::SeqCst);
                }
            }
        }
    }
}
