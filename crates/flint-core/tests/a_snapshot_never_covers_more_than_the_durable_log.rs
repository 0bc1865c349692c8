//! A snapshot never covers log records the disk may not hold; and a directory where it
//! does anyway (left by an older engine) opens from the snapshot alone.
//!
//! The defect this protects against: compaction wrote a snapshot covering log records
//! that were never synced (batch mode). A power loss between the snapshot's rename and
//! the new log's rename left a snapshot covering more of the log than the disk held;
//! the directory did not open ("not a record boundary") and repair found nothing.

mod common;

use std::sync::Arc;

use flint_core::backend::{Backend, MemoryBackend};
use flint_core::internals::format::{decode_log_header, LOG_FILE, SNAPSHOT_FILE};
use flint_core::internals::snapshot;
use flint_core::{Algorithm, CheckLevel, Limiter, Options, SyncMode};

/// Checks synced before the compaction, and checks left unsynced for it.
const SYNCED: u64 = 2;
const UNSYNCED: u64 = 3;
/// Power losses tried at each primitive of the compaction.
const SEEDS: u64 = 6;

fn batch_options() -> Options {
    let (options, _clock) = common::manual_options(SyncMode::Batch);
    // Nothing is synced behind the test's back.
    options
        .flush_every_ms(3_600_000)
        .flush_every_events(1 << 40)
}

fn open_memory(backend: &MemoryBackend) -> flint_core::Result<Limiter> {
    let backend: Arc<dyn Backend> = Arc::new(backend.clone());
    Limiter::open("memory", batch_options().backend(backend))
}

fn allowed(limiter: &Limiter) -> u64 {
    limiter.status("k").unwrap().unwrap().counters.allowed
}

/// A limiter with `SYNCED` checks on disk and `UNSYNCED` more only in the page cache.
fn with_unsynced_checks(backend: &MemoryBackend) -> Limiter {
    let limiter = open_memory(backend).unwrap();
    limiter
        .limit("k", common::quota(1000, "1h", Algorithm::TokenBucket))
        .unwrap();
    for _ in 0..SYNCED {
        assert!(limiter.check("k", 1).unwrap().allowed);
    }
    limiter.flush().unwrap();
    for _ in 0..UNSYNCED {
        assert!(limiter.check("k", 1).unwrap().allowed);
    }
    limiter
}

fn torn_tail_detail(limiter: &Limiter) -> (CheckLevel, String) {
    let report = limiter.doctor().unwrap();
    let check = report
        .checks
        .into_iter()
        .find(|c| c.name == "torn_tail")
        .expect("doctor has a torn_tail check");
    (check.level, check.detail)
}

#[test]
fn compaction_syncs_the_log_through_what_its_snapshot_covers_before_writing_it() {
    // How many storage primitives one compaction runs.
    let backend = MemoryBackend::new();
    let limiter = with_unsynced_checks(&backend);
    let before = backend.ops();
    limiter.compact().unwrap();
    let primitives = backend.ops() - before;
    drop(limiter);
    assert!(
        primitives >= 8,
        "a compaction ran only {primitives} primitives"
    );

    // Cut power before each of them in turn, keeping various unsynced pages.
    let mut snapshot_beside_its_own_log = 0;
    for op in 1..=primitives {
        for seed in 0..SEEDS {
            let backend = MemoryBackend::new();
            let limiter = with_unsynced_checks(&backend);
            backend.crash_at(op, seed);
            let compacted = limiter.compact();
            assert!(
                backend.crashed(),
                "power was never cut at primitive {op}: {compacted:?}"
            );
            drop(limiter);
            let image = backend.crash_image(seed);
            let case = format!("power cut before primitive {op} of {primitives}, seed {seed}");

            // What the snapshot left on the image covers (any snapshot there is the new
            // one: the directory had none before).
            let covered = image.contents(SNAPSHOT_FILE).map(|bytes| {
                let (registry, covers) = snapshot::decode(&bytes, 16)
                    .unwrap_or_else(|e| panic!("{case}: the snapshot is unreadable: {e:?}"));
                let id = registry.lookup("k").expect("the snapshot holds the key");
                (registry.get(id).unwrap().counters.allowed, covers)
            });
            let log = image.contents(LOG_FILE).expect("the image has a log");
            let log_generation = decode_log_header(&log)
                .expect("a valid log header")
                .generation;
            if let Some((_, covers)) = covered {
                if covers.generation == log_generation {
                    snapshot_beside_its_own_log += 1;
                }
            }

            let reopened = open_memory(&image)
                .unwrap_or_else(|e| panic!("{case}: the directory does not open: {e}"));
            let (_, torn) = torn_tail_detail(&reopened);
            assert!(
                !torn.contains("snapshot covered"),
                "{case}: the snapshot covered log records the disk did not hold: {torn}"
            );
            let kept = allowed(&reopened);
            assert!(
                (SYNCED..=SYNCED + UNSYNCED).contains(&kept),
                "{case}: {kept} checks kept"
            );
            if let Some((in_snapshot, _)) = covered {
                assert!(
                    kept >= in_snapshot,
                    "{case}: the snapshot holds {in_snapshot} checks, the reopened state {kept}"
                );
            }
            drop(reopened);
        }
    }
    assert!(
        snapshot_beside_its_own_log > 0,
        "no power cut fell between the snapshot's rename and the log's"
    );
}

/// A directory whose snapshot covers more of the log than the log holds (same
/// generation), as Flint 0.1 could leave it (it wrote the snapshot before syncing the
/// log): a power loss between the snapshot's rename and the log's.
fn snapshot_ahead_of_its_log() -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let (tmp, dir) = common::data_dir();
    let (options, _clock) = common::manual_options(SyncMode::Batch);
    let limiter = Limiter::open(&dir, options).unwrap();
    limiter
        .limit("k", common::quota(1000, "1h", Algorithm::TokenBucket))
        .unwrap();
    assert!(limiter.check("k", 1).unwrap().allowed);
    limiter.flush().unwrap();
    // What a power loss keeps of the log: what was synced.
    let durable_log = std::fs::read(dir.join(LOG_FILE)).unwrap();
    for _ in 0..3 {
        assert!(limiter.check("k", 1).unwrap().allowed);
    }
    limiter.compact().unwrap();
    limiter.close().unwrap();
    let snapshot = std::fs::read(dir.join(SNAPSHOT_FILE)).unwrap();
    let (_, covers) = snapshot::decode(&snapshot, 16).unwrap();
    let log_generation = decode_log_header(&durable_log).unwrap().generation;
    assert_eq!(covers.generation, log_generation);
    (tmp, dir, durable_log)
}

/// `log` with its header rewritten as version 1 (it holds no `synced` record).
fn as_version_1(log: &[u8]) -> Vec<u8> {
    let mut log = log.to_vec();
    log[8..12].copy_from_slice(&1u32.to_le_bytes());
    let crc = crc32c::crc32c(&log[..28]);
    log[28..32].copy_from_slice(&crc.to_le_bytes());
    log
}

#[test]
fn a_version_1_snapshot_ahead_of_its_log_opens_from_the_snapshot_alone() {
    let (_tmp, dir, durable_log) = snapshot_ahead_of_its_log();
    std::fs::write(dir.join(LOG_FILE), as_version_1(&durable_log)).unwrap();
    let (options, clock) = common::manual_options(SyncMode::Batch);
    let limiter = Limiter::open(&dir, options)
        .unwrap_or_else(|e| panic!("the snapshot holds every record, yet opening failed: {e}"));
    assert_eq!(allowed(&limiter), 4, "the snapshot's state");
    let (level, detail) = torn_tail_detail(&limiter);
    assert_eq!(level, CheckLevel::Warn, "{detail}");
    assert!(detail.contains("the snapshot covered"), "{detail}");

    // A new log took over: the directory works on, and opens cleanly.
    assert!(limiter.check("k", 1).unwrap().allowed);
    limiter.close().unwrap();
    let limiter = common::open_at(&dir, SyncMode::Batch, &clock);
    assert_eq!(allowed(&limiter), 5);
    let (level, detail) = torn_tail_detail(&limiter);
    assert_eq!(level, CheckLevel::Ok, "{detail}");
    limiter.close().unwrap();
}

/// In a version 2 log, compaction synced the log through the snapshot's offset, so a
/// log ending before it lost synced bytes: opening refuses, and repair rebases the log
/// on the snapshot, which holds every record it covers.
#[test]
fn a_version_2_log_ending_before_its_snapshot_is_refused_and_repair_rebases_it() {
    let (_tmp, dir, durable_log) = snapshot_ahead_of_its_log();
    std::fs::write(dir.join(LOG_FILE), &durable_log).unwrap();
    let (options, clock) = common::manual_options(SyncMode::Batch);
    match Limiter::open(&dir, options) {
        Err(flint_core::Error::Corrupt { reason, .. }) => {
            assert!(reason.contains("synced"), "{reason}");
        }
        other => panic!("a log missing synced bytes must be refused: {other:?}"),
    }
    let backend = flint_core::backend::FileBackend::open(&dir).unwrap();
    let guard = backend.lock().unwrap();
    let plan = flint_core::admin::plan(&backend)
        .unwrap()
        .expect("a repair");
    assert!(plan.rebased, "{plan:?}");
    assert_eq!(plan.dropped_records, 0);
    flint_core::admin::apply(&backend, plan, common::START).unwrap();
    drop(guard);
    let limiter = common::open_at(&dir, SyncMode::Batch, &clock);
    assert_eq!(allowed(&limiter), 4, "the snapshot's state");
    limiter.close().unwrap();
}
