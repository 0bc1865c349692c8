//! A data directory written before bursts existed (storage format version 2: a version
//! 2 snapshot and a version 2 log of records after it, refunds included, written at
//! commit 711804b) must open the same way in every later version: the same keys,
//! limits, remaining units, counters and history. The fixture is in
//! `tests/fixtures/v2/` (see its README); it is copied to a temporary directory first.
//!
//! Then: giving one key a burst and compacting writes a version 3 snapshot (every key
//! with its burst) that reopens to the same state; without any burst, this build
//! still writes version 2 snapshots and plain configure records.
//!
//! If one of these tests fails, the format reading changed: fix the engine, never the
//! fixture or the expectations.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flint_core::internals::format::{LOG_FILE, SNAPSHOT_FILE};
use flint_core::{Algorithm, Counters, Limiter, ManualClock, Options, Period, Quota, Status};

/// 2023-11-14T22:13:20Z: the generator's clock started here.
const START: u64 = 1_700_000_000_000_000_000;
const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
/// 1.5 s after the last record.
const NOW: u64 = START + 8_500 * MS;

/// (path, size, FNV-1a hash) of every fixture file.
const FILES: &[(&str, u64, u64)] = &[
    ("flint.aof", 464, 0x1943_2dee_5c5f_7fdd),
    ("flint.snapshot", 1958, 0xe9ff_b17b_ca56_b971),
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2")
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn copy() -> (tempfile::TempDir, PathBuf, Arc<ManualClock>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v2");
    fs::create_dir(&dir).unwrap();
    for (name, _, _) in FILES {
        fs::copy(fixtures().join(name), dir.join(name)).unwrap();
    }
    (tmp, dir, Arc::new(ManualClock::new(NOW)))
}

fn open(dir: &Path, clock: &Arc<ManualClock>) -> Limiter {
    Limiter::open(
        dir,
        Options::default().clock(Arc::clone(clock) as Arc<dyn flint_core::Clock>),
    )
    .unwrap()
}

fn quota(rate: u64, per: &str, algorithm: Algorithm) -> Quota {
    Quota::new(rate, per.parse::<Period>().unwrap(), algorithm).unwrap()
}

fn counters(allowed: u64, denied: u64, allowed_cost: u64, denied_cost: u64) -> Counters {
    Counters {
        allowed,
        denied,
        allowed_cost,
        denied_cost,
        shadow_denied: 0,
    }
}

/// The state the generator printed when it opened the directory at [`NOW`].
fn expected() -> Vec<Status> {
    let status = |key: &str, quota, remaining, reset_at, counters, last_seen| Status {
        key: key.into(),
        quota,
        remaining,
        reset_at,
        counters,
        last_seen: Some(last_seen),
        template: None,
    };
    vec![
        status(
            "fw",
            quota(100, "1h", Algorithm::FixedWindowCounter),
            21,
            1_700_002_800_000_000_000,
            counters(12, 0, 84, 0),
            START + 5_500 * MS,
        ),
        status(
            "sw",
            quota(5, "10s", Algorithm::SlidingWindowLog),
            1,
            START + 17 * SEC,
            counters(6, 10, 9, 13),
            START + 7 * SEC,
        ),
        status(
            "tb",
            quota(8, "1m", Algorithm::TokenBucket),
            1,
            START + 58_500 * MS,
            counters(7, 20, 10, 32),
            START + 7 * SEC,
        ),
    ]
}

/// (length, the last three (at - START, cost, allowed, remaining)) of each history.
type Histories = Vec<(usize, Vec<(u64, u64, bool, u64)>)>;

fn histories(limiter: &Limiter) -> Histories {
    ["fw", "sw", "tb"]
        .iter()
        .map(|key| {
            let all = limiter.history(key, 1000).unwrap();
            let tail = all[all.len() - 3..]
                .iter()
                .map(|h| (h.at - START, h.cost, h.allowed, h.remaining))
                .collect();
            (all.len(), tail)
        })
        .collect()
}

fn expected_histories() -> Histories {
    vec![
        (
            12,
            vec![
                (4_500 * MS, 7, true, 30),
                (5_000 * MS, 7, true, 23),
                (5_500 * MS, 7, true, 16),
            ],
        ),
        (
            16,
            vec![
                (7 * SEC, 2, false, 1),
                (7 * SEC, 2, false, 1),
                (7 * SEC, 4, true, 1),
            ],
        ),
        (
            27,
            vec![
                (7 * SEC, 2, false, 1),
                (7 * SEC, 2, false, 1),
                (7 * SEC, 2, false, 1),
            ],
        ),
    ]
}

#[test]
fn the_fixture_is_the_bytes_written_at_711804b() {
    for (name, size, hash) in FILES {
        let bytes = fs::read(fixtures().join(name)).unwrap();
        assert_eq!(bytes.len() as u64, *size, "{name}: size");
        assert_eq!(fnv1a(&bytes), *hash, "{name}: content");
    }
    let snapshot = fs::read(fixtures().join(SNAPSHOT_FILE)).unwrap();
    assert_eq!(snapshot[8..12], 2u32.to_le_bytes(), "a version 2 snapshot");
}

#[test]
fn version_2_files_open_to_the_state_they_were_written_with() {
    let (_tmp, dir, clock) = copy();
    let limiter = open(&dir, &clock);
    assert_eq!(limiter.list(None).unwrap(), expected());
    assert_eq!(histories(&limiter), expected_histories());
    assert!(limiter.status("gone").unwrap().is_none());
    for status in limiter.list(None).unwrap() {
        assert_eq!(status.quota.burst(), status.quota.rate(), "{}", status.key);
    }
    // Compacting without any burst writes a version 2 snapshot again.
    limiter.compact().unwrap();
    limiter.close().unwrap();
    let snapshot = fs::read(dir.join(SNAPSHOT_FILE)).unwrap();
    assert_eq!(snapshot[8..12], 2u32.to_le_bytes());
    let limiter = open(&dir, &clock);
    assert_eq!(limiter.list(None).unwrap(), expected());
    assert_eq!(histories(&limiter), expected_histories());
    limiter.close().unwrap();
}

#[test]
fn a_burst_added_to_version_2_files_is_kept_in_a_version_3_snapshot() {
    let (_tmp, dir, clock) = copy();
    let limiter = open(&dir, &clock);
    // tb: 8 per minute, 1 remaining (7 consumed); with a burst of 20: 13 remaining.
    let bursty = quota(8, "1m", Algorithm::TokenBucket)
        .with_burst(20)
        .unwrap();
    limiter.limit("tb", bursty).unwrap();
    assert_eq!(limiter.status("tb").unwrap().unwrap().remaining, 13);
    let before = (limiter.list(None).unwrap(), histories(&limiter));
    limiter.close().unwrap();
    // Replayed from the version 2 snapshot and the log (with its kind 10 record).
    let limiter = open(&dir, &clock);
    assert_eq!((limiter.list(None).unwrap(), histories(&limiter)), before);
    limiter.compact().unwrap();
    limiter.close().unwrap();
    let snapshot = fs::read(dir.join(SNAPSHOT_FILE)).unwrap();
    assert_eq!(snapshot[8..12], 3u32.to_le_bytes());
    let limiter = open(&dir, &clock);
    assert_eq!((limiter.list(None).unwrap(), histories(&limiter)), before);
    assert_eq!(limiter.status("tb").unwrap().unwrap().quota, bursty);
    // Back to no burst: the next compaction writes version 2 again.
    limiter
        .limit("tb", quota(8, "1m", Algorithm::TokenBucket))
        .unwrap();
    limiter.compact().unwrap();
    limiter.close().unwrap();
    let snapshot = fs::read(dir.join(SNAPSHOT_FILE)).unwrap();
    assert_eq!(snapshot[8..12], 2u32.to_le_bytes());
    let log = fs::read(dir.join(LOG_FILE)).unwrap();
    assert_eq!(log[8..12], 2u32.to_le_bytes(), "the log stays version 2");
}
