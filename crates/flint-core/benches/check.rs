//! Criterion benches of the hot paths: the in-memory decision, a `sync=batch` check
//! (including the log append) and a denial under `sync=always`.
//!
//! `make bench` also runs the `targets` bench, which prints the table of issue targets.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use flint_core::registry::Registry;
use flint_core::{Algorithm, Limiter, ManualClock, Options, Quota, SyncMode};

const START: u64 = 1_700_000_000_000_000_000;

fn quota(algorithm: Algorithm) -> Quota {
    Quota::new(1_000_000_000, "1h".parse().unwrap(), algorithm).unwrap()
}

fn in_memory_decision(c: &mut Criterion) {
    // A key checked steadily at its rate (1,000 per second, one check per millisecond),
    // so every algorithm is in its steady state: the sliding window holds a second of
    // runs and drops one as it adds one.
    let mut group = c.benchmark_group("in_memory_decision");
    for algorithm in [
        Algorithm::TokenBucket,
        Algorithm::SlidingWindowLog,
        Algorithm::FixedWindowCounter,
    ] {
        let mut registry = Registry::new(100);
        let quota = Quota::new(1000, "1s".parse().unwrap(), algorithm).unwrap();
        registry.apply_configure(0, "api:user-42", quota, START);
        let mut now = START;
        group.bench_function(algorithm.name(), |b| {
            b.iter(|| {
                now += 1_000_000;
                let id = registry.lookup("api:user-42").unwrap();
                let entry = registry.get(id).unwrap();
                let outcome = entry.state.decide(&entry.quota, now, 1);
                registry.apply_check(id, now, 1, outcome.allowed, Some(outcome.remaining));
                outcome.allowed
            });
        });
    }
    group.finish();
}

fn limiter_checks(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let options = |sync| {
        Options::default()
            .sync(sync)
            .clock(clock.clone())
            .compact_threshold_bytes(256 << 20)
    };
    let batch = Limiter::open(tmp.path().join("batch"), options(SyncMode::Batch)).unwrap();
    batch.limit("k", quota(Algorithm::TokenBucket)).unwrap();
    c.bench_function("check_sync_batch", |b| {
        b.iter(|| batch.check("k", 1).unwrap());
    });
    batch.close().unwrap();

    let always = Limiter::open(tmp.path().join("always"), options(SyncMode::Always)).unwrap();
    always
        .limit(
            "full",
            Quota::new(1, "1h".parse().unwrap(), Algorithm::TokenBucket).unwrap(),
        )
        .unwrap();
    always.check("full", 1).unwrap();
    c.bench_function("denial_sync_always", |b| {
        b.iter(|| always.check("full", 1).unwrap());
    });
    always.close().unwrap();
}

criterion_group!(benches, in_memory_decision, limiter_checks);
criterion_main!(benches);
