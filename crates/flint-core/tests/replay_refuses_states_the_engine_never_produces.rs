//! A log record or a snapshot edited with its checksum recomputed must not open into a
//! state the engine can never produce (a denial of 4294967301 units on a limit of 10, a
//! window holding more than its rate): opening refuses with `Corrupt`, naming the file
//! and the offset of the record (log) or of the field (snapshot).

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use common::{data_dir, log_len, open_at, quota, START};
use flint_core::internals::format::{kind, LOG_FILE, SNAPSHOT_FILE};
use flint_core::{Algorithm, Error, Limiter, ManualClock, Options, SyncMode, MAX_RATE};

/// Applies `edit` to the payload of the record at `offset` of the log and recomputes
/// its checksum.
fn edit_record(dir: &Path, offset: u64, edit: impl FnOnce(&mut [u8])) {
    let path = dir.join(LOG_FILE);
    let mut log = fs::read(&path).unwrap();
    let at = offset as usize;
    let len = u32::from_le_bytes(log[at..at + 4].try_into().unwrap()) as usize;
    let payload = &mut log[at + 8..at + 8 + len];
    edit(payload);
    let crc = crc32c::crc32c(payload);
    log[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, &log).unwrap();
}

/// Applies `edit` to the snapshot and recomputes its checksum.
fn edit_snapshot(dir: &Path, edit: impl FnOnce(&mut [u8])) {
    let path = dir.join(SNAPSHOT_FILE);
    let mut bytes = fs::read(&path).unwrap();
    let body = bytes.len() - 4;
    edit(&mut bytes[..body]);
    let crc = crc32c::crc32c(&bytes[..body]);
    bytes[body..].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, &bytes).unwrap();
}

fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// Opening `dir` fails with `Corrupt` in `file` at `offset`, and changes nothing.
fn assert_refused(dir: &Path, clock: &Arc<ManualClock>, file: &str, offset: u64, what: &str) {
    let before = fs::read(dir.join(file)).unwrap();
    let options = Options::default().clock(clock.clone());
    match Limiter::open(dir, options) {
        Err(Error::Corrupt {
            file: path,
            offset: at,
            reason,
        }) => {
            assert_eq!(path, dir.join(file), "{what}: {reason}");
            assert_eq!(at, offset, "{what}: {reason}");
        }
        Err(other) => panic!("{what}: expected Corrupt, got {other}"),
        Ok(limiter) => {
            let all = limiter.list(None).unwrap();
            panic!("{what}: opened into {all:#?}");
        }
    }
    assert_eq!(
        fs::read(dir.join(file)).unwrap(),
        before,
        "{what}: unchanged"
    );
}

/// A data directory with key "k" (10 per minute, `algorithm`) and the log offsets of
/// the records written by `f`, one offset per call of the `mark` closure.
fn log_with(
    algorithm: Algorithm,
    f: impl FnOnce(&Limiter, &mut dyn FnMut(&Limiter)),
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Arc<ManualClock>,
    Vec<u64>,
) {
    let (tmp, dir) = data_dir();
    let clock = Arc::new(ManualClock::new(START));
    let limiter = open_at(&dir, SyncMode::Batch, &clock);
    limiter.limit("k", quota(10, "1m", algorithm)).unwrap();
    let mut marks = Vec::new();
    f(&limiter, &mut |l| marks.push(log_len(l)));
    limiter.close().unwrap();
    (tmp, dir, clock, marks)
}

// Offsets inside a check record's payload: kind, id, at, cost.
const KIND: usize = 0;
const ID: usize = 1;
const AT: usize = 5;
const COST: usize = 13;

#[test]
fn a_check_whose_cost_exceeds_the_rate_is_refused() {
    let (_tmp, dir, clock, marks) = log_with(Algorithm::TokenBucket, |l, mark| {
        for _ in 0..10 {
            l.check("k", 1).unwrap();
        }
        mark(l);
        assert!(!l.check("k", 5).unwrap().allowed);
    });
    // The review's record: a denial of 4294967301 units on a limit of 10.
    edit_record(&dir, marks[0], |p| put_u64(p, COST, 4_294_967_301));
    assert_refused(
        &dir,
        &clock,
        LOG_FILE,
        marks[0],
        "denied cost above the rate",
    );

    let (_tmp, dir, clock, marks) = log_with(Algorithm::FixedWindowCounter, |l, mark| {
        mark(l);
        l.check("k", 1).unwrap();
        mark(l);
        l.check("k", 1).unwrap();
    });
    edit_record(&dir, marks[1], |p| put_u64(p, COST, 11));
    assert_refused(
        &dir,
        &clock,
        LOG_FILE,
        marks[1],
        "allowed cost above the rate",
    );
    edit_record(&dir, marks[0], |p| put_u64(p, COST, 0));
    assert_refused(&dir, &clock, LOG_FILE, marks[0], "cost zero");
}

#[test]
fn an_allowed_check_the_algorithm_would_have_denied_is_refused() {
    for algorithm in Algorithm::ALL {
        let (_tmp, dir, clock, marks) = log_with(algorithm, |l, mark| {
            for _ in 0..10 {
                assert!(l.check("k", 1).unwrap().allowed);
            }
            mark(l);
            assert!(!l.check("k", 1).unwrap().allowed);
        });
        // The eleventh unit in a minute, turned from denied into allowed.
        edit_record(&dir, marks[0], |p| p[KIND] = kind::CHECK_ALLOWED);
        assert_refused(&dir, &clock, LOG_FILE, marks[0], algorithm.name());
    }
}

#[test]
fn records_naming_unknown_or_removed_keys_are_refused() {
    let (_tmp, dir, clock, marks) = log_with(Algorithm::TokenBucket, |l, mark| {
        l.limit("gone", quota(5, "1m", Algorithm::TokenBucket))
            .unwrap();
        l.remove("gone").unwrap();
        mark(l);
        l.check("k", 1).unwrap();
    });
    edit_record(&dir, marks[0], |p| put_u32(p, ID, 1));
    assert_refused(&dir, &clock, LOG_FILE, marks[0], "a removed key");
}

#[test]
fn a_configure_that_gives_a_key_another_keys_id_or_skips_ids_is_refused() {
    let (_tmp, dir, clock, marks) = log_with(Algorithm::TokenBucket, |l, mark| {
        l.limit("b", quota(5, "1m", Algorithm::TokenBucket))
            .unwrap();
        mark(l);
        l.limit("b", quota(7, "1m", Algorithm::TokenBucket))
            .unwrap();
    });
    // Key "b" reconfigured under the id of key "k".
    edit_record(&dir, marks[0], |p| put_u32(p, ID, 0));
    assert_refused(&dir, &clock, LOG_FILE, marks[0], "another key's id");

    let (_tmp, dir, clock, marks) = log_with(Algorithm::TokenBucket, |l, mark| {
        mark(l);
        l.limit("b", quota(5, "1m", Algorithm::TokenBucket))
            .unwrap();
    });
    edit_record(&dir, marks[0], |p| put_u32(p, ID, 5));
    assert_refused(&dir, &clock, LOG_FILE, marks[0], "a skipped id");
}

#[test]
fn a_record_earlier_than_the_one_before_it_is_refused() {
    let (_tmp, dir, clock, marks) = log_with(Algorithm::SlidingWindowLog, |l, mark| {
        l.check("k", 1).unwrap();
        mark(l);
        l.check("k", 1).unwrap();
    });
    // Recorded times never go backwards: the engine decides at the latest time seen.
    edit_record(&dir, marks[0], |p| put_u64(p, AT, START - 1));
    assert_refused(&dir, &clock, LOG_FILE, marks[0], "time going backwards");
}

#[test]
fn an_inconsistent_check_all_is_refused() {
    // Payload: kind, at u64, allowed u8, count u32, then (id u32, cost u64, flags u8).
    const ALLOWED: usize = 9;
    const FIRST_FLAGS: usize = 14 + 12;
    const SECOND_ID: usize = 14 + 13;
    let make = || {
        log_with(Algorithm::TokenBucket, |l, mark| {
            l.limit("b", quota(1, "1m", Algorithm::TokenBucket))
                .unwrap();
            l.check("b", 1).unwrap();
            mark(l);
            assert!(!l.check_all(&[("k", 1), ("b", 1)]).unwrap().allowed);
        })
    };
    let (_tmp, dir, clock, marks) = make();
    // Allowed, while a key lacked room.
    edit_record(&dir, marks[0], |p| p[ALLOWED] = 1);
    assert_refused(
        &dir,
        &clock,
        LOG_FILE,
        marks[0],
        "allowed with a key lacking room",
    );

    let (_tmp, dir, clock, marks) = make();
    // Denied, while no key lacked room.
    edit_record(&dir, marks[0], |p| p[FIRST_FLAGS + 13] = 0);
    assert_refused(
        &dir,
        &clock,
        LOG_FILE,
        marks[0],
        "denied with room everywhere",
    );

    let (_tmp, dir, clock, marks) = make();
    // The same key twice.
    edit_record(&dir, marks[0], |p| put_u32(p, SECOND_ID, 0));
    assert_refused(&dir, &clock, LOG_FILE, marks[0], "a key named twice");
}

// Snapshot layout of the first key (see docs/storage-format.md): a 52-byte header,
// then id, key length, the key "k", rate, per, algorithm, four counters, last seen,
// then the algorithm state and the history.
const ENTRY: usize = 52;
const DENIED: usize = ENTRY + 4 + 2 + 1 + 8 + 8 + 1 + 8;
const DENIED_COST: usize = DENIED + 16;
const LAST_SEEN: usize = DENIED_COST + 8;
const STATE: usize = LAST_SEEN + 8;

/// A compacted directory holding only key "k" (10 per minute, `algorithm`) after
/// `checks` checks of cost 1 at `START`, and the snapshot bytes.
fn snapshot_with(
    algorithm: Algorithm,
    checks: u64,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Arc<ManualClock>,
    Vec<u8>,
) {
    let (tmp, dir) = data_dir();
    let clock = Arc::new(ManualClock::new(START));
    let limiter = open_at(&dir, SyncMode::Batch, &clock);
    limiter.limit("k", quota(10, "1m", algorithm)).unwrap();
    for _ in 0..checks {
        limiter.check("k", 1).unwrap();
    }
    limiter.compact().unwrap();
    limiter.close().unwrap();
    let bytes = fs::read(dir.join(SNAPSHOT_FILE)).unwrap();
    (tmp, dir, clock, bytes)
}

#[test]
fn snapshot_counters_that_no_sequence_of_checks_gives_are_refused() {
    let (_tmp, dir, clock, _) = snapshot_with(Algorithm::TokenBucket, 12);
    // Two denials of cost 1 each: a denied cost of 1 is impossible.
    edit_snapshot(&dir, |b| put_u64(b, DENIED_COST, 1));
    assert_refused(
        &dir,
        &clock,
        SNAPSHOT_FILE,
        DENIED_COST as u64,
        "denied cost",
    );

    let (_tmp, dir, clock, _) = snapshot_with(Algorithm::TokenBucket, 3);
    edit_snapshot(&dir, |b| put_u64(b, LAST_SEEN, START + 1));
    assert_refused(
        &dir,
        &clock,
        SNAPSHOT_FILE,
        LAST_SEEN as u64,
        "seen after high water",
    );
}

#[test]
fn snapshot_algorithm_state_beyond_the_limit_is_refused() {
    // Fixed window: used above the rate.
    let (_tmp, dir, clock, _) = snapshot_with(Algorithm::FixedWindowCounter, 4);
    edit_snapshot(&dir, |b| put_u64(b, STATE + 8, 11));
    assert_refused(&dir, &clock, SNAPSHOT_FILE, STATE as u64 + 8, "window use");

    // Token bucket: more than the capacity consumed ahead of the latest time.
    let (_tmp, dir, clock, bytes) = snapshot_with(Algorithm::TokenBucket, 4);
    let tat = u128::from_le_bytes(bytes[STATE..STATE + 16].try_into().unwrap());
    edit_snapshot(&dir, |b| {
        let ahead = tat + 10 * 60_000_000_000 * 10;
        b[STATE..STATE + 16].copy_from_slice(&ahead.to_le_bytes());
    });
    assert_refused(&dir, &clock, SNAPSHOT_FILE, STATE as u64, "token bucket");

    // Sliding window log: one run (4 units at START); its total made inconsistent.
    let (_tmp, dir, clock, bytes) = snapshot_with(Algorithm::SlidingWindowLog, 4);
    let runs = STATE + 8 + 4;
    assert_eq!(
        u32::from_le_bytes(bytes[STATE + 8..runs].try_into().unwrap()),
        1
    );
    edit_snapshot(&dir, |b| put_u64(b, runs + 8, MAX_RATE + 1));
    assert_refused(&dir, &clock, SNAPSHOT_FILE, runs as u64 + 8, "run total");
    let (_tmp, dir, clock, _) = snapshot_with(Algorithm::SlidingWindowLog, 4);
    edit_snapshot(&dir, |b| put_u64(b, runs, START + 5));
    assert_refused(
        &dir,
        &clock,
        SNAPSHOT_FILE,
        runs as u64,
        "run after high water",
    );
}

#[test]
fn snapshot_history_that_no_decision_gives_is_refused() {
    // Token bucket state is 16 bytes; then the history count and its entries.
    let history = STATE + 16 + 4;
    let (_tmp, dir, clock, _) = snapshot_with(Algorithm::TokenBucket, 2);
    // Remaining above any rate.
    edit_snapshot(&dir, |b| put_u64(b, history + 16, MAX_RATE + 1));
    assert_refused(
        &dir,
        &clock,
        SNAPSHOT_FILE,
        history as u64 + 16,
        "remaining",
    );
    let (_tmp, dir, clock, _) = snapshot_with(Algorithm::TokenBucket, 2);
    // Blocked by another key, yet allowed.
    edit_snapshot(&dir, |b| b[history + 24] = 3);
    assert_refused(&dir, &clock, SNAPSHOT_FILE, history as u64 + 24, "flags");
    let (_tmp, dir, clock, _) = snapshot_with(Algorithm::TokenBucket, 2);
    // A cost of zero.
    edit_snapshot(&dir, |b| put_u64(b, history + 8, 0));
    assert_refused(&dir, &clock, SNAPSHOT_FILE, history as u64 + 8, "cost");
}

#[test]
fn a_refund_the_engine_would_not_have_written_is_refused() {
    for algorithm in Algorithm::ALL {
        // A refund record has a check record's layout: a check at full capacity turned
        // into a refund is one that changes nothing, which the engine never writes.
        let (_tmp, dir, clock, marks) = log_with(algorithm, |l, mark| {
            mark(l);
            l.check("k", 1).unwrap();
            l.check("k", 1).unwrap();
            mark(l);
            l.refund("k", 1).unwrap();
        });
        edit_record(&dir, marks[1], |p| put_u64(p, COST, 11));
        assert_refused(
            &dir,
            &clock,
            LOG_FILE,
            marks[1],
            "refund cost above the rate",
        );
        edit_record(&dir, marks[1], |p| put_u64(p, COST, 0));
        assert_refused(&dir, &clock, LOG_FILE, marks[1], "refund cost zero");
        edit_record(&dir, marks[1], |p| put_u32(p, ID, 7));
        assert_refused(&dir, &clock, LOG_FILE, marks[1], "refund of no key");
        edit_record(&dir, marks[0], |p| p[KIND] = kind::REFUND);
        assert_refused(
            &dir,
            &clock,
            LOG_FILE,
            marks[0],
            &format!("{algorithm}: a refund at full capacity"),
        );
    }
}

// Offsets inside a derive record's payload: kind, id, at, template id, key length, key.
const DERIVE_TEMPLATE: usize = 13;
const DERIVE_KEY: usize = 19;
// Offsets inside a sweep record's payload: kind, at, first id, end of ids.
const SWEEP_AT: usize = 1;
const SWEEP_FROM: usize = 9;
const SWEEP_TO: usize = 13;

/// A log with key "k" (id 0), template "t:*" (id 1), key "t:1" made from it (id 2)
/// by a check, and a sweep that drops it a minute later; the offsets of the derive
/// record and of the sweep record.
fn log_with_a_template() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Arc<ManualClock>,
    u64,
    u64,
) {
    let (tmp, dir, clock, marks) = log_with(Algorithm::TokenBucket, |l, mark| {
        l.limit("t:*", quota(5, "1s", Algorithm::SlidingWindowLog))
            .unwrap();
        mark(l);
        l.check("t:1", 2).unwrap();
        mark(l);
    });
    clock.advance(60_000_000_000);
    let limiter = open_at(&dir, SyncMode::Batch, &clock);
    assert_eq!(limiter.sweep().unwrap(), 1);
    // The sweep is the last record (a watermark may come before it): 8 bytes of frame
    // header, then kind, time, first id, end of ids.
    let sweep_at = log_len(&limiter) - (8 + 1 + 8 + 4 + 4);
    limiter.close().unwrap();
    assert!(marks[1] > marks[0]);
    (tmp, dir, clock, marks[0], sweep_at)
}

#[test]
fn a_derive_the_engine_would_not_have_written_is_refused() {
    // From a key that is no template.
    let (_tmp, dir, clock, derive, _) = log_with_a_template();
    edit_record(&dir, derive, |p| put_u32(p, DERIVE_TEMPLATE, 0));
    assert_refused(
        &dir,
        &clock,
        LOG_FILE,
        derive,
        "a key made from a configured key",
    );
    // From a template that does not cover the key.
    let (_tmp, dir, clock, derive, _) = log_with_a_template();
    edit_record(&dir, derive, |p| p[DERIVE_KEY] = b'x');
    assert_refused(
        &dir,
        &clock,
        LOG_FILE,
        derive,
        "a key its template does not cover",
    );
    // A key that already has a limit of its own.
    let (_tmp, dir, clock, derive, _) = log_with_a_template();
    edit_record(&dir, derive, |p| {
        p[DERIVE_KEY..DERIVE_KEY + 3].copy_from_slice(b"t:*");
    });
    assert_refused(
        &dir,
        &clock,
        LOG_FILE,
        derive,
        "a template made from itself",
    );
    // With an id that is taken.
    let (_tmp, dir, clock, derive, _) = log_with_a_template();
    edit_record(&dir, derive, |p| put_u32(p, ID, 0));
    assert_refused(&dir, &clock, LOG_FILE, derive, "a key made with a taken id");
}

#[test]
fn a_sweep_the_engine_would_not_have_written_is_refused() {
    // An empty range.
    let (_tmp, dir, clock, _, sweep) = log_with_a_template();
    edit_record(&dir, sweep, |p| put_u32(p, SWEEP_TO, 0));
    assert_refused(&dir, &clock, LOG_FILE, sweep, "a sweep of no ids");
    // A range holding no key made from a template.
    let (_tmp, dir, clock, _, sweep) = log_with_a_template();
    edit_record(&dir, sweep, |p| {
        put_u32(p, SWEEP_FROM, 0);
        put_u32(p, SWEEP_TO, 2);
    });
    assert_refused(&dir, &clock, LOG_FILE, sweep, "a sweep that drops no key");
    // At a time the key was not back at full capacity.
    let (_tmp, dir, clock, _, sweep) = log_with_a_template();
    edit_record(&dir, sweep, |p| put_u64(p, SWEEP_AT, START + 1));
    assert_refused(
        &dir,
        &clock,
        LOG_FILE,
        sweep,
        "a sweep of a key that holds state",
    );
}
