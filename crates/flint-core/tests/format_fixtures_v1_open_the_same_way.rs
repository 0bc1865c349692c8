//! Data directories written by Flint 0.1 (format version 1, commit 029d796) must open
//! the same way in every later version: the same keys, limits, capacities, counters and
//! history; the same torn tail cut; the same damage refused, at the same offset, and
//! repaired the same way. The fixtures are in `tests/fixtures/v1/` (see its README);
//! each is copied to a temporary directory first, because opening may cut a torn tail.
//!
//! Only the stable public API is used here. If one of these tests fails, the format
//! reading changed: fix the engine, never the fixtures or the expectations.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flint_core::admin as repair;
use flint_core::backend::FileBackend;
use flint_core::{Algorithm, CheckLevel, Error, Limiter, ManualClock, Options};

/// Builds the options every fixture is opened with: the one place that knows how
/// `Options` is constructed.
fn options(clock: Arc<ManualClock>) -> Options {
    Options::default().clock(clock)
}

/// 2023-11-14T22:13:20Z: the generator's clock started here.
const START: u64 = 1_700_000_000_000_000_000;
const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
/// The time every fixture is opened and evaluated at: 1.5 s after the last record.
const NOW: u64 = START + 11 * SEC;

/// The offset of the check-all record that the damaged fixtures damage.
const DAMAGED_AT: u64 = 507;
/// The offset of the last record of the generation-0 log (the one the torn cases tear).
const LAST_RECORD_AT: u64 = 1204;
/// The end of the generation-0 log's records.
const PLAIN_END: u64 = 1233;
/// The end of the generation-1 log's records, after the compaction.
const COMPACTED_END: u64 = 511;
/// The snapshot's size (it covers generation 0 up to offset 754).
const SNAPSHOT_BYTES: u64 = 719;

/// What a key looks like once its directory is open, at [`NOW`].
struct ExpectedKey {
    key: &'static str,
    rate: u64,
    per_ms: u64,
    algorithm: Algorithm,
    remaining: u64,
    reset_at: u64,
    allowed: u64,
    denied: u64,
    allowed_cost: u64,
    denied_cost: u64,
    last_seen: Option<u64>,
    /// Every remembered decision, oldest first: (at, cost, allowed, remaining).
    history: &'static [(u64, u64, bool, u64)],
}

/// Every record applied: `plain`, and every case that holds the same events.
const FULL: &[ExpectedKey] = &[
    ExpectedKey {
        key: "fw",
        rate: 200,
        per_ms: 3_600_000,
        algorithm: Algorithm::FixedWindowCounter,
        remaining: 193,
        reset_at: START + 2800 * SEC,
        allowed: 4,
        denied: 3,
        allowed_cost: 102,
        denied_cost: 171,
        last_seen: Some(START + 7500 * MS),
        history: &[
            (START + 2 * SEC, 40, true, 60),
            (START + 2 * SEC, 50, true, 10),
            (START + 2 * SEC, 20, false, 10),
            (START + 2500 * MS, 5, true, 5),
            (START + 2500 * MS, 1, false, 5),
            (START + 7 * SEC, 150, false, 105),
            (START + 7500 * MS, 7, true, 193),
        ],
    },
    ExpectedKey {
        key: "idle",
        rate: 1,
        per_ms: 1000,
        algorithm: Algorithm::FixedWindowCounter,
        remaining: 1,
        reset_at: START + 11 * SEC,
        allowed: 0,
        denied: 0,
        allowed_cost: 0,
        denied_cost: 0,
        last_seen: None,
        history: &[],
    },
    ExpectedKey {
        key: "late",
        rate: 7,
        per_ms: 60_000,
        algorithm: Algorithm::SlidingWindowLog,
        remaining: 4,
        reset_at: START + 67 * SEC,
        allowed: 2,
        denied: 1,
        allowed_cost: 3,
        denied_cost: 1,
        last_seen: Some(START + 8500 * MS),
        history: &[
            (START + 6500 * MS, 2, true, 5),
            (START + 7 * SEC, 1, true, 4),
            (START + 8500 * MS, 1, false, 4),
        ],
    },
    ExpectedKey {
        key: "sw",
        rate: 8,
        per_ms: 10_000,
        algorithm: Algorithm::SlidingWindowLog,
        remaining: 4,
        reset_at: START + 18_500 * MS,
        allowed: 4,
        denied: 3,
        allowed_cost: 8,
        denied_cost: 10,
        last_seen: Some(START + 8500 * MS),
        history: &[
            (START + SEC, 2, true, 3),
            (START + 1500 * MS, 2, true, 1),
            (START + 2 * SEC, 2, false, 1),
            (START + 2500 * MS, 3, false, 1),
            (START + 7 * SEC, 1, true, 4),
            (START + 8500 * MS, 3, true, 4),
            (START + 8500 * MS, 5, false, 4),
        ],
    },
    ExpectedKey {
        key: "tb",
        rate: 20,
        per_ms: 60_000,
        algorithm: Algorithm::TokenBucket,
        remaining: 9,
        reset_at: START + 43_500 * MS,
        allowed: 5,
        denied: 2,
        allowed_cost: 13,
        denied_cost: 11,
        last_seen: Some(START + 9500 * MS),
        history: &[
            (START, 1, true, 9),
            (START + SEC, 3, true, 6),
            (START + 2250 * MS, 10, false, 6),
            (START + 2500 * MS, 3, true, 3),
            (START + 6500 * MS, 5, true, 8),
            (START + 8500 * MS, 1, false, 9),
            (START + 9500 * MS, 1, true, 8),
        ],
    },
];

/// Every record but the last (the torn one).
const WITHOUT_LAST: &[ExpectedKey] = &[
    ExpectedKey {
        key: "fw",
        rate: 200,
        per_ms: 3_600_000,
        algorithm: Algorithm::FixedWindowCounter,
        remaining: 193,
        reset_at: START + 2800 * SEC,
        allowed: 4,
        denied: 3,
        allowed_cost: 102,
        denied_cost: 171,
        last_seen: Some(START + 7500 * MS),
        history: &[
            (START + 2 * SEC, 40, true, 60),
            (START + 2 * SEC, 50, true, 10),
            (START + 2 * SEC, 20, false, 10),
            (START + 2500 * MS, 5, true, 5),
            (START + 2500 * MS, 1, false, 5),
            (START + 7 * SEC, 150, false, 105),
            (START + 7500 * MS, 7, true, 193),
        ],
    },
    ExpectedKey {
        key: "idle",
        rate: 1,
        per_ms: 1000,
        algorithm: Algorithm::FixedWindowCounter,
        remaining: 1,
        reset_at: START + 11 * SEC,
        allowed: 0,
        denied: 0,
        allowed_cost: 0,
        denied_cost: 0,
        last_seen: None,
        history: &[],
    },
    ExpectedKey {
        key: "late",
        rate: 7,
        per_ms: 60_000,
        algorithm: Algorithm::SlidingWindowLog,
        remaining: 4,
        reset_at: START + 67 * SEC,
        allowed: 2,
        denied: 1,
        allowed_cost: 3,
        denied_cost: 1,
        last_seen: Some(START + 8500 * MS),
        history: &[
            (START + 6500 * MS, 2, true, 5),
            (START + 7 * SEC, 1, true, 4),
            (START + 8500 * MS, 1, false, 4),
        ],
    },
    ExpectedKey {
        key: "sw",
        rate: 8,
        per_ms: 10_000,
        algorithm: Algorithm::SlidingWindowLog,
        remaining: 4,
        reset_at: START + 18_500 * MS,
        allowed: 4,
        denied: 3,
        allowed_cost: 8,
        denied_cost: 10,
        last_seen: Some(START + 8500 * MS),
        history: &[
            (START + SEC, 2, true, 3),
            (START + 1500 * MS, 2, true, 1),
            (START + 2 * SEC, 2, false, 1),
            (START + 2500 * MS, 3, false, 1),
            (START + 7 * SEC, 1, true, 4),
            (START + 8500 * MS, 3, true, 4),
            (START + 8500 * MS, 5, false, 4),
        ],
    },
    ExpectedKey {
        key: "tb",
        rate: 20,
        per_ms: 60_000,
        algorithm: Algorithm::TokenBucket,
        remaining: 10,
        reset_at: START + 40_500 * MS,
        allowed: 4,
        denied: 2,
        allowed_cost: 12,
        denied_cost: 11,
        last_seen: Some(START + 8500 * MS),
        history: &[
            (START, 1, true, 9),
            (START + SEC, 3, true, 6),
            (START + 2250 * MS, 10, false, 6),
            (START + 2500 * MS, 3, true, 3),
            (START + 6500 * MS, 5, true, 8),
            (START + 8500 * MS, 1, false, 9),
        ],
    },
];

/// The records before the damaged one (at 507): `damaged_middle` after repair.
const BEFORE_DAMAGE: &[ExpectedKey] = &[
    ExpectedKey {
        key: "fw",
        rate: 100,
        per_ms: 3_600_000,
        algorithm: Algorithm::FixedWindowCounter,
        remaining: 10,
        reset_at: START + 2800 * SEC,
        allowed: 2,
        denied: 1,
        allowed_cost: 90,
        denied_cost: 20,
        last_seen: Some(START + 2 * SEC),
        history: &[
            (START + 2 * SEC, 40, true, 60),
            (START + 2 * SEC, 50, true, 10),
            (START + 2 * SEC, 20, false, 10),
        ],
    },
    ExpectedKey {
        key: "gone",
        rate: 3,
        per_ms: 1000,
        algorithm: Algorithm::TokenBucket,
        remaining: 3,
        reset_at: START + 11 * SEC,
        allowed: 0,
        denied: 0,
        allowed_cost: 0,
        denied_cost: 0,
        last_seen: None,
        history: &[],
    },
    ExpectedKey {
        key: "idle",
        rate: 1,
        per_ms: 1000,
        algorithm: Algorithm::FixedWindowCounter,
        remaining: 1,
        reset_at: START + 11 * SEC,
        allowed: 0,
        denied: 0,
        allowed_cost: 0,
        denied_cost: 0,
        last_seen: None,
        history: &[],
    },
    ExpectedKey {
        key: "sw",
        rate: 5,
        per_ms: 10_000,
        algorithm: Algorithm::SlidingWindowLog,
        remaining: 3,
        reset_at: START + 11_500 * MS,
        allowed: 2,
        denied: 1,
        allowed_cost: 4,
        denied_cost: 2,
        last_seen: Some(START + 2 * SEC),
        history: &[
            (START + SEC, 2, true, 3),
            (START + 1500 * MS, 2, true, 1),
            (START + 2 * SEC, 2, false, 1),
        ],
    },
    ExpectedKey {
        key: "tb",
        rate: 10,
        per_ms: 60_000,
        algorithm: Algorithm::TokenBucket,
        remaining: 7,
        reset_at: START + 24 * SEC,
        allowed: 2,
        denied: 1,
        allowed_cost: 4,
        denied_cost: 10,
        last_seen: Some(START + 2250 * MS),
        history: &[
            (START, 1, true, 9),
            (START + SEC, 3, true, 6),
            (START + 2250 * MS, 10, false, 6),
        ],
    },
];

/// Keys that were configured and removed again (or never reached the state).
const REMOVED: &[&str] = &["gone", "temp"];
const NOT_YET_CONFIGURED: &[&str] = &["late", "temp"];

/// How an open directory must look, besides its keys.
struct Opened {
    keys: &'static [ExpectedKey],
    /// Keys that must have no limit.
    absent: &'static [&'static str],
    generation: u64,
    /// Records replayed from the log on open.
    replayed: u64,
    /// The log's logical end, where appending continues.
    log_bytes: u64,
    snapshot_bytes: u64,
    /// The torn tail cut on open: (offset, bytes).
    torn: Option<(u64, u64)>,
}

/// Every file of every fixture: its size and FNV-1a 64 hash. Guards against a fixture
/// being regenerated or edited (or mangled by a checkout).
const FILES: &[(&str, u64, u64)] = &[
    ("compacted/flint.aof", 511, 0x1581_9888_5d05_c2b2),
    ("compacted/flint.snapshot", 719, 0x2fcd_e011_7049_41a3),
    (
        "crash_after_snapshot_rename/flint.aof",
        2257,
        0x355b_ca3e_bf3d_8aca,
    ),
    (
        "crash_after_snapshot_rename/flint.snapshot",
        719,
        0x2fcd_e011_7049_41a3,
    ),
    (
        "crash_writing_log_tmp/flint.aof",
        2257,
        0x355b_ca3e_bf3d_8aca,
    ),
    (
        "crash_writing_log_tmp/flint.aof.tmp",
        255,
        0x6cec_9588_90b1_a865,
    ),
    (
        "crash_writing_log_tmp/flint.snapshot",
        719,
        0x2fcd_e011_7049_41a3,
    ),
    (
        "crash_writing_snapshot_tmp/flint.aof",
        2257,
        0x355b_ca3e_bf3d_8aca,
    ),
    (
        "crash_writing_snapshot_tmp/flint.snapshot.tmp",
        359,
        0xc90c_6863_9988_5b46,
    ),
    (
        "damaged_covered_by_snapshot/flint.aof",
        2257,
        0xcc2f_27c3_a959_bdaf,
    ),
    (
        "damaged_covered_by_snapshot/flint.snapshot",
        719,
        0x2fcd_e011_7049_41a3,
    ),
    ("damaged_middle/flint.aof", 2257, 0xcc2f_27c3_a959_bdaf),
    ("damaged_snapshot/flint.aof", 511, 0x1581_9888_5d05_c2b2),
    (
        "damaged_snapshot/flint.snapshot",
        719,
        0x91d6_8151_b50e_0ece,
    ),
    ("empty/flint.aof", 1056, 0x50ae_a6b2_c693_26b0),
    ("plain/flint.aof", 2257, 0x355b_ca3e_bf3d_8aca),
    ("torn_bad_crc/flint.aof", 2257, 0x003f_bbd2_bb7e_9c83),
    ("torn_short/flint.aof", 2257, 0xf700_5343_5917_f706),
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn fixture_file(case: &str, name: &str) -> Vec<u8> {
    fs::read(fixtures().join(case).join(name)).unwrap()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The files of `dir` (the lock file aside), sorted by name.
fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "flint.lock")
        .collect();
    names.sort();
    names
}

/// A copy of fixture `case` in a temporary directory, and a clock at [`NOW`].
fn copy(case: &str) -> (tempfile::TempDir, PathBuf, Arc<ManualClock>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(case);
    fs::create_dir(&dir).unwrap();
    for name in file_names(&fixtures().join(case)) {
        fs::copy(fixtures().join(case).join(&name), dir.join(&name)).unwrap();
    }
    (tmp, dir, Arc::new(ManualClock::new(NOW)))
}

fn open(dir: &Path, clock: &Arc<ManualClock>) -> Result<Limiter, Error> {
    Limiter::open(dir, options(Arc::clone(clock)))
}

/// Checks every key of the open `limiter` against `expected`.
fn assert_keys(case: &str, limiter: &Limiter, expected: &Opened) {
    let listed = limiter.list(None).unwrap();
    let keys: Vec<&str> = listed.iter().map(|s| s.key.as_str()).collect();
    let expected_keys: Vec<&str> = expected.keys.iter().map(|k| k.key).collect();
    assert_eq!(keys, expected_keys, "{case}: the keys");
    for (status, want) in listed.iter().zip(expected.keys) {
        let key = want.key;
        assert_eq!(
            limiter.status(key).unwrap().as_ref(),
            Some(status),
            "{case}: status({key}) and list() disagree"
        );
        let got = (
            status.quota.rate(),
            status.quota.period().as_millis(),
            status.quota.algorithm(),
        );
        assert_eq!(
            got,
            (want.rate, want.per_ms, want.algorithm),
            "{case}: {key}: the limit"
        );
        assert_eq!(
            (status.remaining, status.reset_at),
            (want.remaining, want.reset_at),
            "{case}: {key}: remaining and reset_at at NOW"
        );
        let c = status.counters;
        assert_eq!(
            (c.allowed, c.denied, c.allowed_cost, c.denied_cost),
            (
                want.allowed,
                want.denied,
                want.allowed_cost,
                want.denied_cost
            ),
            "{case}: {key}: counters allowed, denied, allowed_cost, denied_cost"
        );
        assert_eq!(status.last_seen, want.last_seen, "{case}: {key}: last_seen");
        let history: Vec<(u64, u64, bool, u64)> = limiter
            .history(key, usize::MAX)
            .unwrap()
            .iter()
            .map(|h| (h.at, h.cost, h.allowed, h.remaining))
            .collect();
        assert_eq!(
            history.len(),
            want.history.len(),
            "{case}: {key}: history length"
        );
        assert_eq!(history, want.history, "{case}: {key}: history");
    }
    for key in expected.absent {
        assert_eq!(
            limiter.status(key).unwrap(),
            None,
            "{case}: {key} must have no limit"
        );
    }
}

/// Checks what doctor reports of the open `limiter`: the log's generation, the records
/// replayed, the log's end, the snapshot, and the torn tail.
fn assert_doctor(case: &str, limiter: &Limiter, expected: &Opened, torn: Option<(u64, u64)>) {
    let report = limiter.doctor().unwrap();
    assert!(report.ok, "{case}: {:?}", report.checks);
    assert_eq!(report.log_bytes, expected.log_bytes, "{case}: log_bytes");
    assert_eq!(
        report.snapshot_bytes, expected.snapshot_bytes,
        "{case}: snapshot_bytes"
    );
    assert_eq!(report.keys, expected.keys.len(), "{case}: keys");
    let check = |name: &str| {
        report
            .checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("{case}: no {name} check"))
    };
    let log = check("log");
    assert!(
        log.detail
            .contains(&format!("generation {},", expected.generation)),
        "{case}: the log's generation: {}",
        log.detail
    );
    assert!(
        log.detail
            .contains(&format!("{} records replayed", expected.replayed)),
        "{case}: records replayed: {}",
        log.detail
    );
    let torn_tail = check("torn_tail");
    match torn {
        None => assert_eq!(
            torn_tail.level,
            CheckLevel::Ok,
            "{case}: no torn tail: {}",
            torn_tail.detail
        ),
        Some((offset, bytes)) => {
            assert_eq!(
                torn_tail.level,
                CheckLevel::Warn,
                "{case}: {}",
                torn_tail.detail
            );
            assert!(
                torn_tail
                    .detail
                    .contains(&format!("{bytes} bytes at offset {offset}")),
                "{case}: the torn tail is {bytes} bytes at offset {offset}: {}",
                torn_tail.detail
            );
        }
    }
}

/// Opens the directory `dir` (a copy of fixture `case`, perhaps repaired) and checks it
/// against `expected`; then checks what opening left on disk, and that it opens the
/// same way again (with the torn tail, if any, gone for good).
fn assert_opens(case: &str, dir: &Path, clock: &Arc<ManualClock>, expected: &Opened) {
    let log_before = fs::read(dir.join("flint.aof")).unwrap();
    let snapshot_before = fs::read(dir.join("flint.snapshot")).ok();

    let limiter = open(dir, clock).unwrap_or_else(|e| panic!("{case}: open: {e}"));
    assert_keys(case, &limiter, expected);
    assert_doctor(case, &limiter, expected, expected.torn);
    limiter.close().unwrap();

    // Opening rewrites no record and no snapshot (a version 1 log gets a version 2
    // header, with the same generation, and nothing else changes); a torn tail is
    // zeroed, as is everything after the records; leftover temp files are removed.
    let end = expected.log_bytes as usize;
    let log = fs::read(dir.join("flint.aof")).unwrap();
    assert_eq!(&log[..8], b"FLINTLOG", "{case}: the log's magic");
    assert_eq!(log[8], 2, "{case}: the log is rewritten as version 2");
    assert_eq!(log[16..24], log_before[16..24], "{case}: the generation");
    assert_eq!(
        log[32..end],
        log_before[32..end],
        "{case}: the records on disk"
    );
    assert!(
        log[end..].iter().all(|b| *b == 0),
        "{case}: the log after offset {end} must be zeros"
    );
    assert_eq!(
        fs::read(dir.join("flint.snapshot")).ok(),
        snapshot_before,
        "{case}: the snapshot"
    );
    let temps: Vec<String> = file_names(dir)
        .into_iter()
        .filter(|n| Path::new(n).extension() == Some("tmp".as_ref()))
        .collect();
    assert!(temps.is_empty(), "{case}: temp files left: {temps:?}");

    let limiter = open(dir, clock).unwrap_or_else(|e| panic!("{case}: reopen: {e}"));
    assert_keys(case, &limiter, expected);
    assert_doctor(case, &limiter, expected, None);
    limiter.close().unwrap();
}

/// Opens a copy of fixture `case` and checks it against `expected`.
fn assert_case(case: &str, expected: &Opened) {
    let (_tmp, dir, clock) = copy(case);
    assert_opens(case, &dir, &clock, expected);
}

/// The state of every case that holds all the events, in a generation-0 log.
const FULL_IN_GENERATION_0: Opened = Opened {
    keys: FULL,
    absent: REMOVED,
    generation: 0,
    replayed: 35,
    log_bytes: PLAIN_END,
    snapshot_bytes: 0,
    torn: None,
};

/// The state of every case whose snapshot covers the generation-0 log up to the end of
/// the reconfiguration (21 records) and whose log holds the 14 records after.
const FULL_AFTER_SNAPSHOT: Opened = Opened {
    keys: FULL,
    absent: REMOVED,
    generation: 0,
    replayed: 14,
    log_bytes: PLAIN_END,
    snapshot_bytes: SNAPSHOT_BYTES,
    torn: None,
};

/// The state of the torn cases: all but the last record, which is cut.
fn torn(bytes: u64) -> Opened {
    Opened {
        keys: WITHOUT_LAST,
        absent: REMOVED,
        generation: 0,
        replayed: 34,
        log_bytes: LAST_RECORD_AT,
        snapshot_bytes: 0,
        torn: Some((LAST_RECORD_AT, bytes)),
    }
}

/// Asserts that opening a copy of `case` is refused with `Corrupt` naming `file` and
/// `offset`, and that nothing on disk changed; returns the copy.
fn assert_refused(
    case: &str,
    file: &str,
    offset: u64,
) -> (tempfile::TempDir, PathBuf, Arc<ManualClock>) {
    let (tmp, dir, clock) = copy(case);
    let error = open(&dir, &clock).expect_err("opening must be refused");
    match &error {
        Error::Corrupt {
            file: named,
            offset: at,
            ..
        } => {
            assert_eq!(named, &dir.join(file), "{case}: the file named");
            assert_eq!(*at, offset, "{case}: the offset named");
        }
        other => panic!("{case}: expected Corrupt, got {other:?}"),
    }
    assert_eq!(
        file_names(&dir),
        file_names(&fixtures().join(case)),
        "{case}: the files"
    );
    for name in file_names(&dir) {
        assert!(
            fs::read(dir.join(&name)).unwrap() == fixture_file(case, &name),
            "{case}: a refused open must not change {name}"
        );
    }
    (tmp, dir, clock)
}

#[test]
fn the_fixtures_are_the_bytes_written_at_029d796() {
    let mut found = Vec::new();
    for case in fs::read_dir(fixtures()).unwrap() {
        let case = case.unwrap();
        if case.file_type().unwrap().is_dir() {
            let name = case.file_name().into_string().unwrap();
            for file in fs::read_dir(case.path()).unwrap() {
                let file = file.unwrap().file_name().into_string().unwrap();
                found.push(format!("{name}/{file}"));
            }
        }
    }
    found.sort();
    let listed: Vec<&str> = FILES.iter().map(|(path, _, _)| *path).collect();
    assert_eq!(found, listed, "the fixture files (no flint.lock)");
    for (path, size, hash) in FILES {
        let bytes = fs::read(fixtures().join(path)).unwrap();
        assert_eq!(bytes.len() as u64, *size, "{path}: size");
        assert_eq!(fnv1a(&bytes), *hash, "{path}: content");
    }
}

#[test]
fn empty_a_new_directory() {
    assert_case(
        "empty",
        &Opened {
            keys: &[],
            absent: &["tb", "sw", "fw"],
            generation: 0,
            replayed: 0,
            log_bytes: 32,
            snapshot_bytes: 0,
            torn: None,
        },
    );
}

#[test]
fn plain_every_record_kind_in_one_log() {
    assert_case("plain", &FULL_IN_GENERATION_0);
}

#[test]
fn compacted_snapshot_and_a_generation_1_log() {
    assert_case(
        "compacted",
        &Opened {
            generation: 1,
            log_bytes: COMPACTED_END,
            ..FULL_AFTER_SNAPSHOT
        },
    );
}

#[test]
fn torn_short_the_last_record_cut_short_is_cut() {
    assert_case("torn_short", &torn(17));
}

#[test]
fn torn_bad_crc_the_last_record_whole_with_a_bad_checksum_is_cut() {
    assert_case("torn_bad_crc", &torn(29));
}

#[test]
fn crash_after_snapshot_rename_replays_the_old_log_from_the_snapshot_offset() {
    assert_case("crash_after_snapshot_rename", &FULL_AFTER_SNAPSHOT);
}

#[test]
fn crash_writing_snapshot_tmp_ignores_and_removes_the_temp_file() {
    assert_case("crash_writing_snapshot_tmp", &FULL_IN_GENERATION_0);
}

#[test]
fn crash_writing_log_tmp_ignores_and_removes_the_temp_file() {
    assert_case("crash_writing_log_tmp", &FULL_AFTER_SNAPSHOT);
}

#[test]
fn damaged_middle_is_refused_and_repair_cuts_it() {
    let case = "damaged_middle";
    let (_tmp, dir, clock) = assert_refused(case, "flint.aof", DAMAGED_AT);

    // The test's own copy has no other user, so no lock is taken around the repair.
    let backend = FileBackend::open(&dir).unwrap();
    let plan = repair::plan(&backend).unwrap().expect("damage to repair");
    assert_eq!(plan.damaged_at, DAMAGED_AT);
    assert!(!plan.rebased);
    assert_eq!(
        (plan.dropped_records, plan.dropped_bytes),
        (20, PLAIN_END - DAMAGED_AT),
        "the valid records after the damaged one; the bytes from the damage to the end of the records"
    );
    assert_eq!(
        (plan.first_dropped_at, plan.last_dropped_at),
        (Some(START + 2500 * MS), Some(START + 9500 * MS))
    );
    let report = repair::apply(&backend, plan, NOW).unwrap();
    assert_eq!(
        report.backup,
        dir.join(format!("flint.aof.bak-{}", NOW / SEC))
    );
    assert_eq!(
        fs::read(&report.backup).unwrap(),
        fixture_file(case, "flint.aof"),
        "the backup is the damaged log"
    );
    assert_opens(
        case,
        &dir,
        &clock,
        &Opened {
            keys: BEFORE_DAMAGE,
            absent: NOT_YET_CONFIGURED,
            generation: 0,
            replayed: 14,
            log_bytes: DAMAGED_AT,
            snapshot_bytes: 0,
            torn: None,
        },
    );
}

#[test]
fn damaged_covered_by_snapshot_is_refused_and_repair_rebases_on_the_snapshot() {
    let case = "damaged_covered_by_snapshot";
    let (_tmp, dir, clock) = assert_refused(case, "flint.aof", DAMAGED_AT);

    let backend = FileBackend::open(&dir).unwrap();
    let plan = repair::plan(&backend).unwrap().expect("damage to repair");
    assert_eq!(plan.damaged_at, DAMAGED_AT);
    assert!(plan.rebased, "the damage lies before the snapshot's offset");
    assert_eq!((plan.dropped_records, plan.dropped_bytes), (0, 0));
    assert_eq!((plan.first_dropped_at, plan.last_dropped_at), (None, None));
    repair::apply(&backend, plan, NOW).unwrap();
    assert_opens(
        case,
        &dir,
        &clock,
        &Opened {
            generation: 1,
            log_bytes: COMPACTED_END,
            ..FULL_AFTER_SNAPSHOT
        },
    );
}

#[test]
fn damaged_snapshot_is_refused_and_repair_declines() {
    let case = "damaged_snapshot";
    let (_tmp, dir, _clock) = assert_refused(case, "flint.snapshot", 0);
    let backend = FileBackend::open(&dir).unwrap();
    // Repair mends only the log: it refuses, without recommending itself.
    match repair::plan(&backend) {
        Err(Error::Unrepairable { file, reason }) => {
            assert_eq!(file, dir.join("flint.snapshot"));
            assert!(reason.contains("byte offset 0"), "{reason}");
        }
        other => panic!("repair must refuse a damaged snapshot: {other:?}"),
    }
}
