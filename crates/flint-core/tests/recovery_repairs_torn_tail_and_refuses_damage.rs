//! Opening a data directory after a crash: a torn final record is cut and reported; a
//! damaged record with valid records after it is refused and nothing is rewritten; a
//! crash at any step of compaction opens to the same state.

mod common;

use std::fs;
use std::path::Path;

use common::{data_dir, log_len, open_at, quota, START};
use flint_core::admin as repair;
use flint_core::backend::Backend;
use flint_core::backend::FileBackend;
use flint_core::internals::format::{LOG_FILE, SNAPSHOT_FILE};
use flint_core::{Algorithm, CheckLevel, Error, Limiter, ManualClock, Options, Status, SyncMode};
use std::sync::Arc;

/// Configures three keys (one per algorithm) and makes a few decisions.
fn populate(limiter: &Limiter, clock: &ManualClock) {
    limiter
        .limit("tb", quota(10, "1m", Algorithm::TokenBucket))
        .unwrap();
    limiter
        .limit("sw", quota(10, "1m", Algorithm::SlidingWindowLog))
        .unwrap();
    limiter
        .limit("fw", quota(10, "1m", Algorithm::FixedWindowCounter))
        .unwrap();
    for i in 0..12 {
        for key in ["tb", "sw", "fw"] {
            limiter.check(key, 1 + i % 2).unwrap();
        }
        clock.advance(1_000_000_000);
    }
}

/// Damages the record at `offset` of the log (a payload byte) and returns the log.
fn damage_record_at(dir: &Path, offset: u64) -> Vec<u8> {
    let path = dir.join(LOG_FILE);
    let mut log = fs::read(&path).unwrap();
    log[offset as usize + 12] ^= 0x55;
    fs::write(&path, &log).unwrap();
    log
}

/// The directory's backend with its lock held, as repair needs.
fn locked_backend(dir: &Path) -> (FileBackend, flint_core::backend::DirLock) {
    let backend = FileBackend::open(dir).unwrap();
    let guard = backend.lock().unwrap();
    (backend, guard)
}

fn list(dir: &Path, clock: &Arc<ManualClock>) -> Vec<Status> {
    let limiter = open_at(dir, SyncMode::Always, clock);
    let all = limiter.list(None).unwrap();
    limiter.close().unwrap();
    all
}

#[test]
fn torn_tail_of_a_short_record_is_cut_and_reported() {
    let (_tmp, dir) = data_dir();
    let clock = Arc::new(ManualClock::new(START));
    let limiter = open_at(&dir, SyncMode::Always, &clock);
    populate(&limiter, &clock);
    let end = log_len(&limiter);
    limiter.close().unwrap();
    let before = list(&dir, &clock);

    // A crash mid-write: the length and part of the payload of one more record.
    let mut log = fs::read(dir.join(LOG_FILE)).unwrap();
    let torn = [29u8, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 2, 7];
    log[end as usize..end as usize + torn.len()].copy_from_slice(&torn);
    fs::write(dir.join(LOG_FILE), &log).unwrap();

    let limiter = open_at(&dir, SyncMode::Always, &clock);
    assert_eq!(limiter.list(None).unwrap(), before);
    let report = limiter.doctor().unwrap();
    let torn_check = report
        .checks
        .iter()
        .find(|c| c.name == "torn_tail")
        .unwrap();
    assert_eq!(torn_check.level, CheckLevel::Warn);
    assert!(
        torn_check.detail.contains(&format!("offset {end}")),
        "{}",
        torn_check.detail
    );
    assert!(
        report.ok,
        "a repaired torn tail is a warning, not a failure"
    );
    // Appending continues where the good records end, and survives another reopen.
    assert_eq!(log_len(&limiter), end);
    limiter.check("tb", 1).unwrap();
    let live = limiter.list(None).unwrap();
    limiter.close().unwrap();
    assert_eq!(list(&dir, &clock), live);
    let limiter = open_at(&dir, SyncMode::Always, &clock);
    let report = limiter.doctor().unwrap();
    let torn_check = report
        .checks
        .iter()
        .find(|c| c.name == "torn_tail")
        .unwrap();
    assert_eq!(
        torn_check.level,
        CheckLevel::Ok,
        "the tail was cut for good"
    );
}

#[test]
fn torn_tail_of_full_length_with_a_bad_checksum_is_cut() {
    let (_tmp, dir) = data_dir();
    let clock = Arc::new(ManualClock::new(START));
    let limiter = open_at(&dir, SyncMode::Always, &clock);
    populate(&limiter, &clock);
    let before_last = log_len(&limiter);
    limiter.check("tb", 1).unwrap();
    let end = log_len(&limiter);
    limiter.close().unwrap();

    // Damage the last record's payload: complete in length, wrong checksum.
    let mut log = fs::read(dir.join(LOG_FILE)).unwrap();
    log[end as usize - 1] ^= 0xff;
    fs::write(dir.join(LOG_FILE), &log).unwrap();

    let limiter = open_at(&dir, SyncMode::Always, &clock);
    assert_eq!(
        log_len(&limiter),
        before_last,
        "the damaged last record is dropped"
    );
    let status = limiter.status("tb").unwrap().unwrap();
    assert_eq!(status.counters.allowed + status.counters.denied, 12);
}

#[test]
fn damaged_record_followed_by_valid_ones_is_refused_and_nothing_changes() {
    let (_tmp, dir) = data_dir();
    let clock = Arc::new(ManualClock::new(START));
    let limiter = open_at(&dir, SyncMode::Always, &clock);
    limiter
        .limit("tb", quota(10, "1m", Algorithm::TokenBucket))
        .unwrap();
    let damaged_at = log_len(&limiter);
    limiter.check("tb", 1).unwrap();
    limiter.check("tb", 2).unwrap();
    limiter.check("tb", 3).unwrap();
    limiter.close().unwrap();

    let path = dir.join(LOG_FILE);
    let log = damage_record_at(&dir, damaged_at);

    let error = Limiter::open(&dir, common::manual_options(SyncMode::Always).0).unwrap_err();
    match &error {
        Error::Corrupt { file, offset, .. } => {
            assert_eq!(file, &path);
            assert_eq!(*offset, damaged_at);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains(&damaged_at.to_string()), "{message}");
    assert_eq!(
        fs::read(&path).unwrap(),
        log,
        "opening must not rewrite a damaged log"
    );
}

#[test]
fn a_damaged_snapshot_is_refused() {
    let (_tmp, dir) = data_dir();
    let clock = Arc::new(ManualClock::new(START));
    let limiter = open_at(&dir, SyncMode::Always, &clock);
    populate(&limiter, &clock);
    limiter.compact().unwrap();
    limiter.close().unwrap();
    let path = dir.join(SNAPSHOT_FILE);
    let mut snapshot = fs::read(&path).unwrap();
    let middle = snapshot.len() / 2;
    snapshot[middle] ^= 1;
    fs::write(&path, &snapshot).unwrap();
    let error = Limiter::open(&dir, common::manual_options(SyncMode::Always).0).unwrap_err();
    assert!(
        matches!(error, Error::Corrupt { ref file, .. } if file == &path),
        "{error:?}"
    );
}

/// A compaction crash state: its name, the log, the snapshot and a temp file if any.
type CrashStep<'a> = (&'a str, &'a [u8], &'a [u8], Option<(&'a str, Vec<u8>)>);

/// The files of a directory: name and content.
type Files = Vec<(String, Vec<u8>)>;

/// The files of a directory, by name.
fn files(dir: &Path) -> Files {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

fn restore(dir: &Path, files: &[(String, Vec<u8>)]) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        fs::write(dir.join(name), bytes).unwrap();
    }
}

fn file<'f>(files: &'f [(String, Vec<u8>)], name: &str) -> &'f [u8] {
    &files.iter().find(|(n, _)| n == name).unwrap().1
}

#[test]
fn a_crash_at_any_step_of_compaction_opens_to_the_same_state() {
    let (_tmp, dir) = data_dir();
    let clock = Arc::new(ManualClock::new(START));
    // Generation 1: a first compaction, then more decisions in the log.
    let limiter = open_at(&dir, SyncMode::Always, &clock);
    populate(&limiter, &clock);
    limiter.compact().unwrap();
    populate(&limiter, &clock);
    limiter.close().unwrap();
    let before = files(&dir);
    let expected = list(&dir, &clock);

    // The compaction whose every intermediate state is tested.
    let limiter = open_at(&dir, SyncMode::Always, &clock);
    let report = limiter.compact().unwrap();
    assert!(report.log_bytes_after < report.log_bytes_before);
    limiter.close().unwrap();
    let after = files(&dir);
    assert_eq!(list(&dir, &clock), expected);

    let old_log = file(&before, LOG_FILE).to_vec();
    let new_log = file(&after, LOG_FILE).to_vec();
    let old_snapshot = file(&before, SNAPSHOT_FILE).to_vec();
    let new_snapshot = file(&after, SNAPSHOT_FILE).to_vec();
    let lock = file(&before, "flint.lock").to_vec();
    let half = |bytes: &[u8]| bytes[..bytes.len() / 2].to_vec();
    let snapshot_temp = format!("{SNAPSHOT_FILE}.tmp");
    let log_temp = format!("{LOG_FILE}.tmp");
    // Each step: the log, the snapshot, and the temp file being written, if any.
    let steps: Vec<CrashStep> = vec![
        (
            "crash while writing the snapshot's temp file",
            &old_log,
            &old_snapshot,
            Some((&snapshot_temp, half(&new_snapshot))),
        ),
        (
            "crash after the snapshot's temp file was complete, before the rename",
            &old_log,
            &old_snapshot,
            Some((&snapshot_temp, new_snapshot.clone())),
        ),
        (
            "crash after the snapshot's rename, before the new log",
            &old_log,
            &new_snapshot,
            None,
        ),
        (
            "crash while writing the new log's temp file",
            &old_log,
            &new_snapshot,
            Some((&log_temp, half(&new_log))),
        ),
        (
            "crash after the new log's rename",
            &new_log,
            &new_snapshot,
            None,
        ),
    ];
    let states = steps.into_iter().map(|(step, log, snapshot, temp)| {
        let mut state: Files = vec![
            ("flint.lock".into(), lock.clone()),
            (LOG_FILE.into(), log.to_vec()),
            (SNAPSHOT_FILE.into(), snapshot.to_vec()),
        ];
        state.extend(temp.map(|(name, bytes)| (name.to_owned(), bytes)));
        (step, state)
    });
    for (step, state) in states {
        restore(&dir, &state);
        let limiter = open_at(&dir, SyncMode::Always, &clock);
        assert_eq!(limiter.list(None).unwrap(), expected, "{step}");
        // Decisions go on from there and survive another reopen.
        limiter.check("tb", 1).unwrap();
        let live = limiter.list(None).unwrap();
        limiter.close().unwrap();
        assert_eq!(list(&dir, &clock), live, "{step}: after one more decision");
        let leftovers: Vec<String> = files(&dir)
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.ends_with(flint_core::internals::format::TEMP_SUFFIX))
            .collect();
        assert!(
            leftovers.is_empty(),
            "{step}: temp files left: {leftovers:?}"
        );
    }
}

#[test]
fn events_after_the_snapshot_position_are_carried_into_the_new_log() {
    let (_tmp, dir) = data_dir();
    let clock = Arc::new(ManualClock::new(START));
    let limiter = open_at(&dir, SyncMode::Always, &clock);
    populate(&limiter, &clock);
    limiter.compact().unwrap();
    limiter.check("sw", 1).unwrap();
    limiter.compact().unwrap();
    limiter.check("fw", 1).unwrap();
    let live = limiter.list(None).unwrap();
    limiter.close().unwrap();
    assert_eq!(list(&dir, &clock), live);
}

#[test]
fn repair_cuts_the_log_at_the_damage_after_keeping_a_backup() {
    let (_tmp, dir) = data_dir();
    let clock = Arc::new(ManualClock::new(START));
    let limiter = open_at(&dir, SyncMode::Always, &clock);
    limiter
        .limit("tb", quota(10, "1m", Algorithm::TokenBucket))
        .unwrap();
    limiter.check("tb", 1).unwrap();
    let damaged_at = log_len(&limiter);
    for cost in [2, 3, 4] {
        clock.advance(1_000_000_000);
        limiter.check("tb", cost).unwrap();
    }
    limiter.close().unwrap();
    let log = damage_record_at(&dir, damaged_at);

    let (backend, guard) = locked_backend(&dir);
    let plan = repair::plan(&backend).unwrap().expect("damage to repair");
    assert_eq!(plan.damaged_at, damaged_at);
    // The damaged record is the watermark written before the check of cost 2 (the
    // first sync moved the durable end); the three checks after it are dropped.
    assert_eq!(
        plan.dropped_records, 3,
        "the valid records after the damaged one"
    );
    assert_eq!(plan.first_dropped_at, Some(START + 1_000_000_000));
    assert_eq!(plan.last_dropped_at, Some(START + 3_000_000_000));
    assert!(plan.dropped_bytes > 0 && !plan.rebased);
    let report = repair::apply(&backend, plan, START).unwrap();
    assert_eq!(
        fs::read(&report.backup).unwrap(),
        log,
        "the backup is the old log"
    );
    drop(guard);

    let limiter = open_at(&dir, SyncMode::Always, &clock);
    let status = limiter.status("tb").unwrap().unwrap();
    assert_eq!(
        status.counters.allowed_cost, 1,
        "only the records before the damage"
    );
    drop(limiter);
    let (backend, _guard) = locked_backend(&dir);
    assert_eq!(
        repair::plan(&backend).unwrap(),
        None,
        "nothing left to repair"
    );
}

#[test]
fn repair_of_damage_the_snapshot_covers_drops_nothing() {
    let (_tmp, dir) = data_dir();
    let clock = Arc::new(ManualClock::new(START));
    let limiter = open_at(&dir, SyncMode::Always, &clock);
    limiter
        .limit("tb", quota(10, "1m", Algorithm::TokenBucket))
        .unwrap();
    let damaged_at = log_len(&limiter);
    populate(&limiter, &clock);
    limiter.close().unwrap();
    let old_log = fs::read(dir.join(LOG_FILE)).unwrap();
    let limiter = open_at(&dir, SyncMode::Always, &clock);
    limiter.compact().unwrap();
    let expected = limiter.list(None).unwrap();
    limiter.close().unwrap();

    // A crash after the snapshot's rename left the old log, whose first records are
    // damaged: all of them are in the snapshot.
    fs::write(dir.join(LOG_FILE), &old_log).unwrap();
    damage_record_at(&dir, damaged_at);
    assert!(matches!(
        Limiter::open(&dir, common::manual_options(SyncMode::Always).0),
        Err(Error::Corrupt { .. })
    ));

    let (backend, guard) = locked_backend(&dir);
    let plan = repair::plan(&backend).unwrap().unwrap();
    assert!(plan.rebased);
    assert_eq!((plan.dropped_records, plan.dropped_bytes), (0, 0));
    repair::apply(&backend, plan, START).unwrap();
    drop(guard);
    assert_eq!(list(&dir, &clock), expected);
}

#[test]
fn another_programs_file_is_named_as_such_not_as_damage_to_repair() {
    let (_tmp, dir) = data_dir();
    fs::create_dir_all(&dir).unwrap();
    // The JSON-lines log of another flint-limiter implementation.
    fs::write(
        dir.join(LOG_FILE),
        "{\"key\": \"api:user-42\", \"at\": 1700000000.0, \"cost\": 1}\n",
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let error = Limiter::open(&dir, Options::default().clock(clock)).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::NotFlint { .. }), "{message}");
    assert!(message.contains("is not a Flint log"), "{message}");
    assert!(message.contains("\"{\\\"key\\\""), "{message}");
    assert!(message.contains("JSON lines"), "{message}");
    assert!(!message.contains("--repair"), "{message}");
    // Repair refuses the same way, and changes nothing.
    let (backend, guard) = locked_backend(&dir);
    let refused = repair::plan(&backend).unwrap_err();
    assert!(matches!(refused, Error::NotFlint { .. }), "{refused}");
    // Binary junk is shown as bytes.
    fs::write(dir.join(LOG_FILE), [0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4]).unwrap();
    drop(guard);
    let message = Limiter::open(&dir, Options::default())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("the bytes de ad be ef 00 01 02 03"),
        "{message}"
    );
}

#[test]
fn repairs_refusals_do_not_recommend_repair() {
    let (_tmp, dir) = data_dir();
    let clock = Arc::new(ManualClock::new(START));
    let limiter = open_at(&dir, SyncMode::Always, &clock);
    limiter
        .limit("k", quota(10, "1m", Algorithm::TokenBucket))
        .unwrap();
    limiter.close().unwrap();
    // A damaged header: repair cannot tell where the records start.
    let path = dir.join(LOG_FILE);
    let mut log = fs::read(&path).unwrap();
    log[18] ^= 0x01;
    fs::write(&path, &log).unwrap();
    let opened = Limiter::open(&dir, Options::default().clock(clock.clone())).unwrap_err();
    assert!(matches!(opened, Error::Corrupt { .. }), "{opened}");
    let (backend, guard) = locked_backend(&dir);
    let refused = repair::plan(&backend).unwrap_err();
    let message = refused.to_string();
    assert!(matches!(refused, Error::Unrepairable { .. }), "{message}");
    assert!(message.contains("cannot be repaired"), "{message}");
    assert!(!message.contains("--repair"), "{message}");
    assert_eq!(fs::read(&path).unwrap(), log, "nothing was changed");
    drop(guard);
}

#[test]
fn two_repairs_in_the_same_second_keep_both_backups() {
    let (_tmp, dir) = data_dir();
    let clock = Arc::new(ManualClock::new(START));
    let mut backups = Vec::new();
    for round in 0..2 {
        let limiter = open_at(&dir, SyncMode::Always, &clock);
        limiter
            .limit(
                &format!("k{round}"),
                quota(10, "1m", Algorithm::TokenBucket),
            )
            .unwrap();
        let damaged_at = log_len(&limiter);
        for _ in 0..3 {
            limiter.check(&format!("k{round}"), 1).unwrap();
        }
        limiter.close().unwrap();
        let log = damage_record_at(&dir, damaged_at);
        let (backend, guard) = locked_backend(&dir);
        let plan = repair::plan(&backend).unwrap().expect("damage to repair");
        let report = repair::apply(&backend, plan, START).unwrap();
        assert_eq!(fs::read(&report.backup).unwrap(), log);
        backups.push(report.backup);
        drop(guard);
    }
    assert_ne!(backups[0], backups[1]);
    assert!(backups.iter().all(|b| b.exists()));
}

#[test]
fn repair_cuts_a_record_the_engine_never_writes_though_its_checksum_holds() {
    let (_tmp, dir) = data_dir();
    let clock = Arc::new(ManualClock::new(START));
    let limiter = open_at(&dir, SyncMode::Batch, &clock);
    limiter
        .limit("k", quota(10, "1m", Algorithm::TokenBucket))
        .unwrap();
    let edited_at = log_len(&limiter) as usize;
    limiter.check("k", 1).unwrap();
    limiter.check("k", 2).unwrap();
    limiter.close().unwrap();
    // The first check's cost becomes 11 (above the rate), its checksum recomputed.
    let path = dir.join(LOG_FILE);
    let mut log = fs::read(&path).unwrap();
    let payload = edited_at + 8;
    log[payload + 13..payload + 21].copy_from_slice(&11u64.to_le_bytes());
    let crc = crc32c::crc32c(&log[payload..payload + 21]);
    log[edited_at + 4..edited_at + 8].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, &log).unwrap();

    match Limiter::open(&dir, Options::default().clock(clock.clone())) {
        Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, edited_at as u64),
        other => panic!("an impossible record must be refused: {other:?}"),
    }
    let (backend, guard) = locked_backend(&dir);
    let plan = repair::plan(&backend).unwrap().expect("a repair");
    assert_eq!(plan.damaged_at, edited_at as u64);
    assert_eq!(plan.dropped_records, 2, "{plan:?}");
    repair::apply(&backend, plan, START).unwrap();
    drop(guard);
    let repaired = open_at(&dir, SyncMode::Batch, &clock);
    let status = repaired.status("k").unwrap().unwrap();
    assert_eq!((status.counters.allowed, status.remaining), (0, 10));
}
