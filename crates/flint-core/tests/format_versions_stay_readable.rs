//! Files of every format version this build reads keep opening to the state they were
//! written with; a newer version is refused as unsupported; the durability watermark
//! record replays as no change.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use common::{data_dir, log_len, open_at, quota, START};
use flint_core::internals::format::{decode_log_header, LOG_FILE, LOG_VERSION, SNAPSHOT_FILE};
use flint_core::internals::record::Event;
use flint_core::{Algorithm, Counters, Error, ManualClock, SyncMode};

const SEC: u64 = 1_000_000_000;

/// Copies the committed version 1 data directory (written by Flint 0.1 at commit
/// 029d796: a snapshot of version 1 and a log of version 1 holding records after it).
fn v1_fixture(dir: &Path) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    fs::create_dir_all(dir).unwrap();
    for name in [LOG_FILE, SNAPSHOT_FILE] {
        fs::copy(fixtures.join(name), dir.join(name)).unwrap();
    }
}

/// The state the fixture was written with, as Flint 0.1 reported it.
fn assert_v1_state(limiter: &flint_core::Limiter) {
    let all = limiter.list(None).unwrap();
    let summary: Vec<(&str, u64, u64, Counters)> = all
        .iter()
        .map(|s| (s.key.as_str(), s.quota.rate(), s.remaining, s.counters))
        .collect();
    let counters = |allowed, denied, allowed_cost, denied_cost| Counters {
        allowed,
        denied,
        allowed_cost,
        denied_cost,
        shadow_denied: 0,
    };
    assert_eq!(
        summary,
        vec![
            ("fw", 10, 10, counters(8, 7, 12, 28)),
            ("sw", 20, 7, counters(8, 7, 13, 11)),
            ("tb", 10, 4, counters(9, 6, 13, 9)),
        ]
    );
    for key in ["fw", "sw", "tb"] {
        assert_eq!(limiter.history(key, 100).unwrap().len(), 15, "{key}");
    }
    let last: Vec<(u64, u64, bool, u64, bool)> = limiter
        .history("tb", 3)
        .unwrap()
        .iter()
        .map(|h| {
            (
                h.at - START,
                h.cost,
                h.allowed,
                h.remaining,
                h.blocked_by_other,
            )
        })
        .collect();
    // A version 1 check-all record does not say which key lacked room: the denied
    // check-all at +42 s counts as a denial on every key, as it did in Flint 0.1.
    assert_eq!(
        last,
        vec![
            (12 * SEC, 1, false, 1, false),
            (42 * SEC, 2, true, 4, false),
            (42 * SEC, 1, false, 4, false),
        ]
    );
    assert!(limiter.status("gone").unwrap().is_none());
}

#[test]
fn version_1_files_open_to_the_state_they_were_written_with() {
    let (_tmp, dir) = data_dir();
    v1_fixture(&dir);
    let clock = Arc::new(ManualClock::new(START + 42 * SEC));
    let limiter = open_at(&dir, SyncMode::Always, &clock);
    assert_v1_state(&limiter);
    // Appending to a version 1 log and compacting it into version 2 files changes
    // nothing that was there.
    limiter.compact().unwrap();
    limiter.close().unwrap();
    let log = fs::read(dir.join(LOG_FILE)).unwrap();
    assert_eq!(log[8..12], LOG_VERSION.to_le_bytes());
    let limiter = open_at(&dir, SyncMode::Always, &clock);
    assert_v1_state(&limiter);
    limiter.close().unwrap();
}

#[test]
fn a_log_of_a_newer_version_is_refused_as_unsupported() {
    let (_tmp, dir) = data_dir();
    let clock = Arc::new(ManualClock::new(START));
    open_at(&dir, SyncMode::Always, &clock).close().unwrap();
    let path = dir.join(LOG_FILE);
    let mut log = fs::read(&path).unwrap();
    log[8..12].copy_from_slice(&(LOG_VERSION + 1).to_le_bytes());
    let crc = crc32c::crc32c(&log[..28]);
    log[28..32].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, &log).unwrap();
    let options = flint_core::Options::default().clock(clock.clone());
    match flint_core::Limiter::open(&dir, options) {
        Err(Error::UnsupportedVersion {
            file,
            found,
            supported,
        }) => {
            assert_eq!(file, path);
            assert_eq!((found, supported), (LOG_VERSION + 1, LOG_VERSION));
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
}

#[test]
fn a_synced_record_replays_as_no_change() {
    let (_tmp, dir) = data_dir();
    let clock = Arc::new(ManualClock::new(START));
    let limiter = open_at(&dir, SyncMode::Always, &clock);
    limiter
        .limit("k", quota(5, "1m", Algorithm::SlidingWindowLog))
        .unwrap();
    limiter.check("k", 2).unwrap();
    let end = log_len(&limiter);
    let before = limiter.list(None).unwrap();
    limiter.close().unwrap();

    let path = dir.join(LOG_FILE);
    let mut log = fs::read(&path).unwrap();
    let mut frame = Vec::new();
    Event::Synced {
        at: START + SEC,
        through: end,
        salt: decode_log_header(&log).unwrap().salt,
    }
    .encode_frame(&mut frame);
    log[end as usize..end as usize + frame.len()].copy_from_slice(&frame);
    fs::write(&path, &log).unwrap();

    let limiter = open_at(&dir, SyncMode::Always, &clock);
    assert_eq!(limiter.list(None).unwrap(), before);
    assert_eq!(log_len(&limiter), end + frame.len() as u64);
    // The watermark is not a decision: it does not move the high-water time.
    assert_eq!(limiter.check("k", 1).unwrap().reset_at, START + 60 * SEC);
    limiter.close().unwrap();
}
