//! With `sync=always`, a reset, remove or refund of a key that its template covers
//! without state writes nothing, but answers from a state that a sweep (which waits
//! for no disk) may have made: it returns only once that state is durable, as a limit
//! with unchanged settings and a refund at full capacity do. A power loss right after
//! it never brings back the key it saw dropped.

mod common;

use std::sync::Arc;

use common::{quota, START};
use flint_core::backend::MemoryBackend;
use flint_core::{Algorithm, Limiter, ManualClock, Options, SyncMode};

fn options(clock: &Arc<ManualClock>, backend: &MemoryBackend) -> Options {
    Options::default()
        .sync(SyncMode::Always)
        .clock(clock.clone())
        .flush_every_ms(3_600_000)
        .flush_every_events(u64::MAX)
        .compact_threshold_bytes(u64::MAX)
        .backend(Arc::new(backend.clone()))
}

#[test]
fn a_call_that_saw_a_dropped_key_returns_after_the_drop_is_durable() {
    for call in ["remove", "reset", "refund"] {
        for seed in 0..16u64 {
            let clock = Arc::new(ManualClock::new(START));
            let backend = MemoryBackend::new();
            let limiter = Limiter::open("d", options(&clock, &backend)).unwrap();
            limiter
                .limit("t:*", quota(5, "1s", Algorithm::TokenBucket))
                .unwrap();
            limiter.check("t:1", 3).unwrap();
            clock.advance(2_000_000_000);
            assert_eq!(limiter.sweep().unwrap(), 1);
            match call {
                "remove" => limiter.remove("t:1").unwrap(),
                "reset" => limiter.reset("t:1").unwrap(),
                _ => limiter.refund("t:1", 1).unwrap(),
            }
            // The power goes right after the call returned.
            let image = backend.crash_image(seed);
            drop(limiter);
            let reopened = Limiter::open("d", options(&clock, &image)).unwrap();
            assert_eq!(
                reopened.stats().unwrap().template_keys,
                0,
                "{call}, seed {seed}: the key the call saw dropped is back"
            );
        }
    }
}
