//! A burst of 100,000 distinct keys under one template (say, client addresses under
//! `ip:*`) costs memory and snapshot space only while the keys hold state: once time
//! has moved past `per` and a sweep and a compaction ran, the engine's memory, its
//! count of live keys and the snapshot are back near what they were before the burst.

mod common;

use std::path::Path;
use std::time::Instant;

use common::quota;
use flint_core::{Algorithm, Limiter, SyncMode};

const BURST_KEYS: usize = 100_000;
const SECOND: u64 = 1_000_000_000;

/// Bytes of every file in the data directory.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("read the data directory")
        .map(|e| e.expect("an entry").metadata().expect("metadata").len())
        .sum()
}

/// What is measured before and after the burst.
#[derive(Debug, Clone, Copy)]
struct Figures {
    memory_bytes: u64,
    live_keys: usize,
    template_keys: usize,
    keys: usize,
    dir_bytes: u64,
    snapshot_bytes: u64,
}

fn figures(limiter: &Limiter, dir: &Path) -> Figures {
    let doctor = limiter.doctor().expect("doctor");
    let ip = doctor
        .templates
        .iter()
        .find(|t| t.template == "ip:*")
        .expect("the template is reported");
    Figures {
        memory_bytes: doctor.memory_bytes,
        live_keys: ip.live_keys,
        template_keys: limiter.stats().expect("stats").template_keys,
        keys: limiter.stats().expect("stats").keys,
        dir_bytes: dir_bytes(dir),
        snapshot_bytes: limiter.stats().expect("stats").snapshot_bytes,
    }
}

/// `after` is back within 10% of `before`: at most 10% above it (less is fine: the
/// containers grown before the burst may have shrunk to fit since).
fn near(what: &str, before: u64, after: u64) {
    let allowed = before + before / 10;
    assert!(
        after <= allowed,
        "{what}: {after} after the burst, {before} before (more than 10% above)"
    );
}

#[test]
fn a_burst_of_100k_template_keys_gives_memory_and_snapshot_space_back() {
    let started = Instant::now();
    let (_tmp, dir) = common::data_dir();
    let (options, clock) = common::manual_options(SyncMode::Batch);
    let options = options
        .flush_every_ms(3_600_000)
        .flush_every_events(1 << 20)
        .compact_threshold_bytes(u64::MAX);
    let limiter = Limiter::open(&dir, options).expect("open");
    limiter
        .limit("ip:*", quota(10, "1s", Algorithm::TokenBucket))
        .unwrap();
    // A steady population that outlives the burst: keys of another template with a long
    // period, and configured keys.
    limiter
        .limit("user:*", quota(100, "1h", Algorithm::SlidingWindowLog))
        .unwrap();
    for i in 0..1_000 {
        assert!(limiter.check(&format!("user:{i}"), 1).unwrap().allowed);
    }
    for i in 0..50 {
        limiter
            .limit(
                &format!("api:{i}"),
                quota(5, "1m", Algorithm::FixedWindowCounter),
            )
            .unwrap();
        limiter.check(&format!("api:{i}"), 1).unwrap();
    }
    // A few addresses that are busy before the burst too.
    for i in 0..20 {
        limiter.check(&format!("ip:steady-{i}"), 1).unwrap();
    }
    clock.advance(2 * SECOND);
    limiter.sweep().unwrap();
    limiter.compact().unwrap();
    let before = figures(&limiter, &dir);
    assert_eq!(before.live_keys, 0, "{before:?}");
    assert_eq!(before.template_keys, 1_000, "{before:?}");

    // The burst: 100,000 distinct addresses, one request each (and a second for one in
    // ten, so some hold less than a full bucket for longer).
    for i in 0..BURST_KEYS {
        let key = format!("ip:10.{}.{}.{}", i >> 16, (i >> 8) & 0xff, i & 0xff);
        assert!(limiter.check(&key, 1).unwrap().allowed);
        if i % 10 == 0 {
            limiter.check(&key, 2).unwrap();
        }
        if i % 10_000 == 9_999 {
            clock.advance(1_000_000);
        }
    }
    let during = figures(&limiter, &dir);
    assert_eq!(during.live_keys, BURST_KEYS, "{during:?}");
    assert_eq!(during.template_keys, BURST_KEYS + 1_000, "{during:?}");
    assert!(
        during.memory_bytes > 5 * before.memory_bytes,
        "the burst's keys cost memory: {during:?} against {before:?}"
    );

    // Time moves past `per`: every address is back at full capacity.
    clock.advance(2 * SECOND);
    let dropped = limiter.sweep().unwrap();
    assert_eq!(dropped, BURST_KEYS);
    let report = limiter.compact().unwrap();
    assert!(report.log_bytes_after < report.log_bytes_before);
    let after = figures(&limiter, &dir);
    eprintln!(
        "before {before:?}\nduring {during:?}\nafter  {after:?}\nin {:?}",
        started.elapsed()
    );

    assert_eq!(after.live_keys, before.live_keys, "{after:?}");
    assert_eq!(after.template_keys, before.template_keys, "{after:?}");
    assert_eq!(after.keys, before.keys, "{after:?}");
    near("memory_bytes", before.memory_bytes, after.memory_bytes);
    // The snapshot holds the template's summary of at most 100 dropped keys more.
    near(
        "snapshot bytes",
        before.snapshot_bytes,
        after.snapshot_bytes,
    );
    near("data directory bytes", before.dir_bytes, after.dir_bytes);
    assert!(
        during.snapshot_bytes <= before.snapshot_bytes && during.dir_bytes > 2 * before.dir_bytes
    );

    // The keys decide as new ones, and the summary remembers the busiest of them.
    let key = "ip:10.0.0.0";
    assert_eq!(limiter.peek(key, 10).unwrap().remaining, 0);
    assert!(limiter.peek(key, 10).unwrap().allowed);
    let ip = limiter.status("ip:*").unwrap().unwrap();
    assert_eq!(
        ip.counters.allowed as usize,
        BURST_KEYS + BURST_KEYS / 10 + 20
    );

    // And all of it reopens the same way.
    limiter.close().unwrap();
    let (options, _) = common::manual_options(SyncMode::Batch);
    let reopened = Limiter::open(&dir, options.clock(clock.clone())).unwrap();
    let again = figures(&reopened, &dir);
    assert_eq!(again.live_keys, 0);
    assert_eq!(again.template_keys, before.template_keys);
    near(
        "memory_bytes after reopening",
        before.memory_bytes,
        again.memory_bytes,
    );
}
