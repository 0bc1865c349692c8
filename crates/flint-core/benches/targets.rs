//! Measures every performance target of the engine, each next to a baseline measured in
//! the same run, and prints them as a table (`make bench`; results in BENCHMARKS.md).
//!
//! Plain timing loops rather than criterion: several targets are one-shot costs
//! (reopening a million keys) or whole-process figures (memory per key).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flint_core::registry::Registry;
use flint_core::{Algorithm, Limiter, ManualClock, Options, Quota, SyncMode, MAX_RATE};

/// Counts live heap bytes, for the memory-per-key figure.
struct CountingAllocator;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
#[expect(unsafe_code, reason = "a counting global allocator needs unsafe impl")]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size().cast_signed(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size().cast_signed(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size.cast_signed() - layout.size().cast_signed(),
            Ordering::Relaxed,
        );
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const START: u64 = 1_700_000_000_000_000_000;

struct Row {
    target: &'static str,
    measured: String,
    baseline: String,
    ratio: String,
    goal: &'static str,
}

fn quota(rate: u64, algorithm: Algorithm) -> Quota {
    Quota::new(rate, "1h".parse().unwrap(), algorithm).unwrap()
}

/// Nanoseconds per call of `f`, the best of five runs of `n` calls.
fn ns_per_op(n: u64, mut f: impl FnMut(u64)) -> f64 {
    (0..5)
        .map(|_| {
            let started = Instant::now();
            for i in 0..n {
                f(i);
            }
            started.elapsed().as_nanos() as f64 / n as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn options(sync: SyncMode, clock: &Arc<ManualClock>) -> Options {
    Options::default()
        .sync(sync)
        .clock(clock.clone())
        .compact_threshold_bytes(1 << 30)
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else if ns >= 1_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

fn main() {
    let tmp = tempfile::tempdir_in(".").expect("a temporary directory beside the sources");
    let clock = Arc::new(ManualClock::new(START));
    let mut rows = Vec::new();

    // 1. In-memory decision vs a dict-like lookup plus an integer compare.
    let mut registry = Registry::new(100);
    registry.apply_configure(
        0,
        "api:user-42",
        quota(MAX_RATE, Algorithm::TokenBucket),
        START,
    );
    let decision = ns_per_op(2_000_000, |i| {
        let now = START + i * 1_000;
        let id = registry.lookup(black_box("api:user-42")).unwrap();
        let entry = registry.get(id).unwrap();
        let outcome = entry.state.decide(&entry.quota, now, 1);
        registry.apply_check(id, now, 1, outcome.allowed, Some(outcome.remaining));
    });
    let mut map: HashMap<String, u64> = HashMap::new();
    map.insert("api:user-42".into(), 0);
    let lookup = ns_per_op(2_000_000, |i| {
        let used = map.get_mut(black_box("api:user-42")).unwrap();
        if *used < i + 1 {
            *used += 1;
        }
    });
    rows.push(Row {
        target: "in-memory decision (token bucket)",
        measured: fmt_ns(decision),
        baseline: format!("{} (HashMap lookup + compare)", fmt_ns(lookup)),
        ratio: format!("{:.1}×", decision / lookup),
        goal: "≤ 100 ns",
    });
    let decision_ns = decision;

    // 2. sync=batch check vs one write(2) per event.
    let batch = Limiter::open(tmp.path().join("batch"), options(SyncMode::Batch, &clock)).unwrap();
    batch
        .limit("k", quota(MAX_RATE, Algorithm::TokenBucket))
        .unwrap();
    let before = batch.doctor().unwrap().log_bytes;
    let n = 1_000_000;
    let batch_check = ns_per_op(n, |_| {
        black_box(batch.check("k", 1).unwrap());
    });
    let record_bytes = (batch.doctor().unwrap().log_bytes - before) as f64 / (5 * n) as f64;
    // peek: the decision of a check, under the state lock, with nothing written.
    let peek = ns_per_op(n, |_| {
        black_box(batch.peek("k", 1).unwrap());
    });
    // A check on a key that a template covers and that holds no state yet: the
    // template lookup, a new entry, and its derive record written with the check.
    batch
        .limit("ip:*", quota(MAX_RATE, Algorithm::TokenBucket))
        .unwrap();
    let fresh_per_run = 200_000u64;
    let fresh_keys: Vec<String> = (0..5 * fresh_per_run)
        .map(|i| format!("ip:10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
        .collect();
    let mut next_fresh = fresh_keys.iter();
    let template_check = ns_per_op(fresh_per_run, |_| {
        let key = next_fresh.next().expect("a fresh key per check");
        black_box(batch.check(key, 1).unwrap());
    });
    batch.close().unwrap();
    rows.push(Row {
        target: "check, sync=batch, new key under a template",
        measured: fmt_ns(template_check),
        baseline: format!("{} (check of a configured key)", fmt_ns(batch_check)),
        ratio: format!("{:.2}×", template_check / batch_check),
        goal: "≤ 1.5 × configured key",
    });
    // What any new key costs at least: its text and a value of an entry's size into
    // a hash map that grows the same way.
    let mut bare: hashbrown::HashMap<Box<str>, [u64; 18]> = hashbrown::HashMap::new();
    let mut next_bare = fresh_keys.iter();
    let bare_insert = ns_per_op(fresh_per_run, |i| {
        let key = next_bare.next().expect("a fresh key per insert");
        bare.insert(key.as_str().into(), [i; 18]);
    });
    drop(bare);
    drop(fresh_keys);
    rows.push(Row {
        target: "check, sync=batch, new key under a template",
        measured: fmt_ns(template_check),
        baseline: format!("{} (a new key into a HashMap)", fmt_ns(bare_insert)),
        ratio: format!("{:.2}×", template_check / bare_insert),
        goal: "-",
    });
    let mut raw = OpenOptions::new()
        .create(true)
        .append(true)
        .open(tmp.path().join("raw-write"))
        .unwrap();
    rows.push(Row {
        target: "peek (no record, no counter)",
        measured: fmt_ns(peek),
        baseline: format!("{} (in-memory decision)", fmt_ns(decision_ns)),
        ratio: format!("{:.1}×", peek / decision_ns),
        goal: "≤ decision + the door's overhead (lock, clock, lookup)",
    });
    let record = [0u8; 29];
    let write_syscall = ns_per_op(200_000, |_| raw.write_all(&record).unwrap());
    rows.push(Row {
        target: "check, sync=batch (with log append)",
        measured: fmt_ns(batch_check),
        baseline: format!("{} (one write(2) per event)", fmt_ns(write_syscall)),
        ratio: format!("{:.2}×", batch_check / write_syscall),
        goal: "≤ 200 ns",
    });
    rows.push(Row {
        target: "log bytes per check record",
        measured: format!("{record_bytes:.1} B"),
        baseline: "-".into(),
        ratio: "-".into(),
        goal: "≤ 32 B",
    });

    // 3. sync=always, one thread, vs a raw append + fdatasync loop on the same disk.
    let always_dir = tmp.path().join("always");
    let always = Arc::new(Limiter::open(&always_dir, options(SyncMode::Always, &clock)).unwrap());
    for t in 0..8 {
        always
            .limit(
                &format!("user:{t}"),
                quota(MAX_RATE, Algorithm::TokenBucket),
            )
            .unwrap();
    }
    let syncs = 2_000;
    let always_one = ns_per_op(syncs, |_| {
        black_box(always.check("user:0", 1).unwrap());
    });
    let raw_sync = ns_per_op(syncs, |_| {
        raw.write_all(&record).unwrap();
        raw.sync_data().unwrap();
    });
    rows.push(Row {
        target: "check, sync=always, 1 thread",
        measured: fmt_ns(always_one),
        baseline: format!("{} (write + fdatasync)", fmt_ns(raw_sync)),
        ratio: format!("{:.2}×", always_one / raw_sync),
        goal: "≤ 1.15 × baseline",
    });

    // 4. sync=always, 8 threads on distinct keys: aggregate throughput vs one thread.
    let per_thread = 1_000;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..8 {
            let always = Arc::clone(&always);
            scope.spawn(move || {
                let key = format!("user:{t}");
                for _ in 0..per_thread {
                    black_box(always.check(&key, 1).unwrap());
                }
            });
        }
    });
    let aggregate = started.elapsed().as_nanos() as f64 / (8 * per_thread) as f64;
    rows.push(Row {
        target: "check, sync=always, 8 threads (aggregate)",
        measured: format!("{:.0}/s", 1e9 / aggregate),
        baseline: format!("{:.0}/s (1 thread)", 1e9 / always_one),
        ratio: format!("{:.1}×", always_one / aggregate),
        goal: "≥ 5 × one thread",
    });

    // 5. Denials under sync=always vs the sync=batch check.
    always
        .limit(
            "full",
            Quota::new(1, "1h".parse().unwrap(), Algorithm::TokenBucket).unwrap(),
        )
        .unwrap();
    always.check("full", 1).unwrap();
    let denial = ns_per_op(200_000, |_| {
        black_box(always.check("full", 1).unwrap());
    });
    always.close().unwrap();
    rows.push(Row {
        target: "denial, sync=always",
        measured: fmt_ns(denial),
        baseline: format!("{} (check, sync=batch)", fmt_ns(batch_check)),
        ratio: format!("{:.2}×", denial / batch_check),
        goal: "≤ 2 × batch",
    });

    // 6. Replay rate: reopen a log of 5 million check records, a busy API key: 1,000
    //    keys of 100,000 requests per second each, checked at about that rate (some
    //    checks denied), the clock moving 10 µs per check.
    let replay_dir = tmp.path().join("replay");
    let records = 5_000_000u64;
    {
        let limiter = Limiter::open(&replay_dir, options(SyncMode::Batch, &clock)).unwrap();
        let per_second =
            Quota::new(100_000, "1s".parse().unwrap(), Algorithm::TokenBucket).unwrap();
        let keys: Vec<String> = (0..1000).map(|k| format!("api:{k}")).collect();
        for key in &keys {
            limiter.limit(key, per_second).unwrap();
        }
        for i in 0..records {
            clock.advance(10);
            limiter
                .check(&keys[(i % 1000) as usize], 1 + i % 4)
                .unwrap();
        }
        limiter.close().unwrap();
    }
    rows.push(replay_row(
        "replay on open (1,000 keys at 100k/s each)",
        records,
        reopen_time(&replay_dir, &clock),
    ));

    // 6b. The same, for one key at the largest rate (1e12 per hour): its arithmetic
    //     needs 128-bit divisions, the slowest case.
    let extreme_dir = tmp.path().join("replay-extreme");
    {
        let limiter = Limiter::open(&extreme_dir, options(SyncMode::Batch, &clock)).unwrap();
        limiter
            .limit("k", quota(MAX_RATE, Algorithm::TokenBucket))
            .unwrap();
        for _ in 0..records {
            limiter.check("k", 1).unwrap();
        }
        limiter.close().unwrap();
    }
    rows.push(replay_row(
        "replay on open (1 key at rate 10^12/h)",
        records,
        reopen_time(&extreme_dir, &clock),
    ));

    // 7 + 8. A million idle token-bucket keys: memory per key, snapshot reopen time.
    let million = tmp.path().join("million");
    let keys = 1_000_000u32;
    let heap_before = LIVE_BYTES.load(Ordering::Relaxed);
    let limiter = Limiter::open(&million, options(SyncMode::Batch, &clock)).unwrap();
    for k in 0..keys {
        limiter
            .limit(&format!("user:{k:07}"), quota(100, Algorithm::TokenBucket))
            .unwrap();
    }
    let per_key = (LIVE_BYTES.load(Ordering::Relaxed) - heap_before) as f64 / f64::from(keys);
    limiter.compact().unwrap();
    limiter.close().unwrap();
    drop(limiter);
    rows.push(Row {
        target: "memory per idle token-bucket key (1M keys)",
        measured: format!("{per_key:.0} B"),
        baseline: "-".into(),
        ratio: "-".into(),
        goal: "≤ 200 B",
    });
    let reopen = reopen_time(&million, &clock);
    rows.push(Row {
        target: "reopen a snapshot of 1M keys",
        measured: format!("{:.0} ms", reopen.as_secs_f64() * 1e3),
        baseline: format!("{} B snapshot", file_size(&million.join("flint.snapshot"))),
        ratio: "-".into(),
        goal: "≤ 1 s",
    });

    // 9. configure 10,000 keys with sync=batch.
    let configure = best_of(3, || {
        let dir = tempfile::tempdir_in(tmp.path()).unwrap();
        let limiter = Limiter::open(dir.path(), options(SyncMode::Batch, &clock)).unwrap();
        let started = Instant::now();
        for k in 0..10_000 {
            limiter
                .limit(
                    &format!("tenant:{k}"),
                    quota(1000, Algorithm::SlidingWindowLog),
                )
                .unwrap();
        }
        let elapsed = started.elapsed();
        limiter.close().unwrap();
        elapsed
    });
    rows.push(Row {
        target: "configure 10,000 keys, sync=batch",
        measured: format!("{:.1} ms", configure.as_secs_f64() * 1e3),
        baseline: "-".into(),
        ratio: "-".into(),
        goal: "≤ 50 ms",
    });

    print_table(&rows);
}

/// The best of three times to open `dir` (snapshot load and log replay).
fn reopen_time(dir: &Path, clock: &Arc<ManualClock>) -> Duration {
    best_of(3, || {
        let started = Instant::now();
        let limiter = Limiter::open(dir, options(SyncMode::Batch, clock)).unwrap();
        let elapsed = started.elapsed();
        limiter.close().unwrap();
        elapsed
    })
}

fn replay_row(target: &'static str, records: u64, took: Duration) -> Row {
    Row {
        target,
        measured: format!(
            "{:.1} M records/s",
            records as f64 / took.as_secs_f64() / 1e6
        ),
        baseline: format!("{records} records in {:.0} ms", took.as_secs_f64() * 1e3),
        ratio: "-".into(),
        goal: "≥ 10 M records/s",
    }
}

fn best_of(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..runs).map(|_| f()).min().unwrap()
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn print_table(rows: &[Row]) {
    println!();
    println!("| target | measured | baseline (same run) | ratio | goal |");
    println!("|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            row.target, row.measured, row.baseline, row.ratio, row.goal
        );
    }
}
