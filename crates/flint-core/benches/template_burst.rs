//! A burst of distinct keys under one template, then time moving on past the limit's
//! period: resident memory and the compacted data directory before, at the peak and
//! after (`make bench`; results in BENCHMARKS.md).
//!
//! Run by `cargo bench` with 10 million keys; `cargo test --benches` runs it with 20,000
//! as a smoke test. `FLINT_BURST_KEYS` overrides the count.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use flint_core::{Algorithm, Limiter, ManualClock, Options, Quota, SyncMode};

const START: u64 = 1_700_000_000_000_000_000;
const MINUTE: u64 = 60_000_000_000;
const HOUR: u64 = 60 * MINUTE;

/// What is measured at one moment.
struct Figures {
    resident: u64,
    engine_memory: u64,
    live_keys: usize,
    data_dir: u64,
    log: u64,
    snapshot: u64,
}

/// Bytes the files of `dir` take on disk (the log is preallocated, so its blocks count
/// what it reserved).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

fn measure(limiter: &Limiter) -> Figures {
    let doctor = limiter.doctor().unwrap();
    Figures {
        resident: doctor.process_resident_bytes.unwrap_or(0),
        engine_memory: doctor.memory_bytes,
        live_keys: doctor.templates.iter().map(|t| t.live_keys).sum(),
        data_dir: disk_usage(limiter.data_dir()),
        log: doctor.log_bytes,
        snapshot: doctor.snapshot_bytes,
    }
}

fn mib(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    }
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let keys: u64 = std::env::var("FLINT_BURST_KEYS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if benching { 10_000_000 } else { 20_000 });
    let tmp = tempfile::tempdir_in(".").expect("a temporary directory beside the sources");
    let clock = Arc::new(ManualClock::new(START));
    // Automatic compaction is off during the burst so that the figures are the burst's
    // own; the compaction at the end is what an automatic one would do.
    let options = Options::default()
        .sync(SyncMode::Batch)
        .clock(clock.clone())
        .compact_threshold_bytes(u64::MAX);
    let limiter = Limiter::open(tmp.path().join("burst"), options).unwrap();
    let per_hour = Quota::new(100, "1h".parse().unwrap(), Algorithm::TokenBucket).unwrap();
    limiter.limit("ip:*", per_hour).unwrap();
    for k in 0..100 {
        limiter.limit(&format!("api:user-{k}"), per_hour).unwrap();
        limiter.check(&format!("api:user-{k}"), 1).unwrap();
    }
    clock.advance(2 * HOUR);
    limiter.compact().unwrap();
    let before = measure(&limiter);

    // The burst: every key seen once (some twice, and ten of them 150 times: denied 50
    // times each), within ten seconds: no key is back at full capacity before it ends
    // (a unit comes back every 36 s), so every one holds state at the peak.
    let started = Instant::now();
    let step = 10_000_000_000 / keys.max(1);
    let hammered = (keys / 10).max(1);
    for i in 0..keys {
        let key = format!(
            "ip:{}.{}.{}.{}",
            10 + (i >> 24),
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        );
        limiter.check(&key, 1).unwrap();
        if i % 16 == 0 {
            limiter.check(&key, 1).unwrap();
        }
        if i % hammered == 0 {
            for _ in 0..150 {
                limiter.check(&key, 1).unwrap();
            }
        }
        clock.advance(step);
    }
    let burst_took = started.elapsed();
    let peak = measure(&limiter);

    // Time moves on past the period: every key is back at full capacity. A compaction
    // drops them all (the background sweep would, a slice at a time) and rewrites the
    // directory.
    clock.advance(2 * HOUR);
    let started = Instant::now();
    let report = limiter.compact().unwrap();
    let compact_took = started.elapsed();
    let after = measure(&limiter);
    let top = limiter.top(flint_core::TopBy::Denied, 3).unwrap();

    println!(
        "\n{keys} distinct keys under \"ip:*\" (100/h), burst in {:.1} s ({:.0} ns per check), compaction after it {:.1} s ({} keys kept)\n",
        burst_took.as_secs_f64(),
        burst_took.as_nanos() as f64 / keys as f64,
        compact_took.as_secs_f64(),
        report.keys
    );
    println!("| figure | before the burst | at the peak | after (past `per`, compacted) | after / before |");
    println!("|---|---|---|---|---|");
    let row = |name: &str, b: u64, p: u64, a: u64, show: &dyn Fn(u64) -> String| {
        println!(
            "| {name} | {} | {} | {} | {:.2}× |",
            show(b),
            show(p),
            show(a),
            a as f64 / b.max(1) as f64
        );
    };
    row(
        "process resident memory",
        before.resident,
        peak.resident,
        after.resident,
        &mib,
    );
    row(
        "engine state (doctor memory_bytes)",
        before.engine_memory,
        peak.engine_memory,
        after.engine_memory,
        &mib,
    );
    row(
        "live template keys",
        before.live_keys as u64,
        peak.live_keys as u64,
        after.live_keys as u64,
        &|n| n.to_string(),
    );
    row(
        "data directory on disk",
        before.data_dir,
        peak.data_dir,
        after.data_dir,
        &mib,
    );
    row("log (logical)", before.log, peak.log, after.log, &mib);
    row(
        "snapshot",
        before.snapshot,
        peak.snapshot,
        after.snapshot,
        &mib,
    );
    println!(
        "\ntop(by=\"denied\") once every key was dropped, from the template's summary: {:?}",
        top.iter()
            .map(|s| (&s.key, s.counters.denied))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        after.live_keys, 0,
        "every key back at full capacity was dropped"
    );
    limiter.close().unwrap();
}
