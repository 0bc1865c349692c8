//! Writes seed inputs for the fuzz targets in `crates/flint-core/fuzz` (run by
//! `make fuzz`): encoded records, snapshots, and whole data directories in the
//! recovery target's input layout, all from the current encoders.
//!
//! Usage: `cargo run -p flint-core --example fuzz_seeds -- <corpus dir>`; writes
//! `<corpus dir>/{record_decode,snapshot_decode,recovery}/seed-*`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flint_core::internals::format::{LOG_FILE, LOG_HEADER_LEN, SNAPSHOT_FILE};
use flint_core::internals::record::{CheckAllItem, Event};
use flint_core::{Algorithm, Limiter, ManualClock, Mode, Options, Quota, SyncMode};

const START: u64 = 1_700_000_000_000_000_000;
const SEC: u64 = 1_000_000_000;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join(name), bytes)
}

fn quota(rate: u64, per: &str, algorithm: Algorithm) -> Quota {
    Quota::new(rate, per.parse().expect("a period"), algorithm).expect("a quota")
}

/// One event of every kind.
fn events() -> Vec<Event> {
    let q = quota(10, "1m", Algorithm::SlidingWindowLog);
    let item = |id, cost, lacked_room| CheckAllItem {
        id,
        cost,
        lacked_room,
    };
    vec![
        Event::Configure {
            id: 0,
            at: START,
            quota: q,
            key: "api:user-42".into(),
        },
        Event::Check {
            id: 0,
            at: START,
            cost: 3,
            allowed: true,
        },
        Event::Check {
            id: 0,
            at: START + 1,
            cost: 9,
            allowed: false,
        },
        Event::CheckAll {
            at: START + 2,
            allowed: false,
            items: vec![item(0, 1, false), item(1, 2, true)],
        },
        Event::Reset {
            id: 0,
            at: START + 3,
        },
        Event::Refund {
            id: 0,
            at: START + 3,
            cost: 2,
        },
        Event::Configure {
            id: 1,
            at: START + 3,
            quota: quota(10, "1s", Algorithm::TokenBucket)
                .with_burst(50)
                .expect("a burst"),
            key: "api:bursty".into(),
        },
        Event::Configure {
            id: 2,
            at: START + 3,
            quota: quota(10, "1s", Algorithm::TokenBucket).with_mode(Mode::Shadow),
            key: "ip:*".into(),
        },
        Event::Derive {
            id: 3,
            at: START + 3,
            template: 2,
            key: "ip:203.0.113.9".into(),
        },
        Event::Sweep {
            at: START + 4,
            from: 0,
            to: 4,
        },
        Event::Remove {
            id: 0,
            at: START + 4,
        },
        Event::Synced {
            at: START + 5,
            through: 4096,
            salt: 0x5A17,
        },
    ]
}

/// A data directory with every algorithm, a token bucket with a burst,
/// reconfigurations, check-alls, a compaction and a removal; returns (snapshot, log) with the log's preallocated zeros trimmed.
fn directory(compact: bool) -> (Option<Vec<u8>>, Vec<u8>) {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let clock = Arc::new(ManualClock::new(START));
    let options = Options::default()
        .sync(SyncMode::Batch)
        .clock(clock.clone());
    let limiter = Limiter::open(tmp.path(), options).expect("open");
    limiter
        .limit("tb", quota(5, "1s", Algorithm::TokenBucket))
        .expect("limit");
    limiter
        .limit("sw", quota(5, "1s", Algorithm::SlidingWindowLog))
        .expect("limit");
    limiter
        .limit("fw", quota(5, "1s", Algorithm::FixedWindowCounter))
        .expect("limit");
    limiter
        .limit("gone", quota(2, "1m", Algorithm::TokenBucket))
        .expect("limit");
    limiter
        .limit(
            "burst",
            quota(4, "1s", Algorithm::TokenBucket)
                .with_burst(12)
                .expect("a burst"),
        )
        .expect("limit");
    limiter
        .limit("ip:*", quota(2, "1s", Algorithm::TokenBucket))
        .expect("limit");
    limiter
        .limit(
            "shadow",
            quota(2, "1s", Algorithm::FixedWindowCounter).with_mode(Mode::Shadow),
        )
        .expect("limit");
    for i in 0..8u64 {
        limiter.check(&format!("ip:{}", i % 3), 1).expect("check");
        limiter.check("shadow", 1).expect("check");
        for key in ["tb", "sw", "fw"] {
            limiter.check(key, 1 + i % 2).expect("check");
        }
        limiter
            .check_all(&[("tb", 1), ("gone", 1)])
            .expect("check_all");
        limiter.check("burst", 3).expect("check");
        clock.advance(SEC / 4);
    }
    if compact {
        limiter.compact().expect("compact");
    }
    limiter
        .limit("sw", quota(3, "2s", Algorithm::SlidingWindowLog))
        .expect("limit");
    limiter.check("sw", 1).expect("check");
    clock.advance(2 * SEC);
    limiter.sweep().expect("sweep");
    limiter.check("ip:9", 1).expect("check");
    limiter.reset("fw").expect("reset");
    limiter.remove("gone").expect("remove");
    let end = limiter.doctor().expect("doctor").log_bytes;
    limiter.close().expect("close");
    let snapshot = fs::read(tmp.path().join(SNAPSHOT_FILE)).ok();
    let mut log = fs::read(tmp.path().join(LOG_FILE)).expect("read the log");
    log.truncate(end as usize);
    (snapshot, log)
}

/// The recovery target's input: flags, snapshot length, snapshot, log.
fn recovery_input(flags: u8, snapshot: Option<&[u8]>, log: &[u8]) -> Vec<u8> {
    let snapshot = snapshot.unwrap_or(&[]);
    let mut input = vec![flags];
    input.extend_from_slice(&(snapshot.len() as u16).to_le_bytes());
    input.extend_from_slice(snapshot);
    input.extend_from_slice(log);
    input
}

fn main() -> std::io::Result<()> {
    let out: PathBuf = std::env::args_os().nth(1).map_or_else(
        || PathBuf::from("crates/flint-core/fuzz/corpus"),
        PathBuf::from,
    );

    let records = out.join("record_decode");
    let mut log = Vec::new();
    for (n, event) in events().iter().enumerate() {
        let mut frame = Vec::new();
        event.encode_frame(&mut frame);
        // A payload alone, and the frames back to back (a log without its header).
        write(&records, &format!("seed-payload-{n}"), &frame[8..])?;
        log.extend_from_slice(&frame);
    }
    write(&records, "seed-frames", &log)?;

    let (snapshot, compacted_log) = directory(true);
    let snapshot = snapshot.expect("compaction wrote a snapshot");
    write(&out.join("snapshot_decode"), "seed-snapshot", &snapshot)?;

    let recovery = out.join("recovery");
    let (_, fresh_log) = directory(false);
    write(
        &recovery,
        "seed-log-only",
        &recovery_input(0b0010, None, &fresh_log),
    )?;
    write(
        &recovery,
        "seed-snapshot-and-log",
        &recovery_input(0b0011, Some(&snapshot), &compacted_log),
    )?;
    // The same, asking the target to keep checksums valid after mutation.
    write(
        &recovery,
        "seed-snapshot-and-log-fixed",
        &recovery_input(0b1111, Some(&snapshot), &compacted_log),
    )?;
    let mut header_only = compacted_log.clone();
    header_only.truncate(LOG_HEADER_LEN as usize);
    write(
        &recovery,
        "seed-empty-log",
        &recovery_input(0b0011, Some(&snapshot), &header_only),
    )?;
    // The committed version 1 files.
    let v1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    if let (Ok(snapshot), Ok(log)) = (
        fs::read(v1.join(SNAPSHOT_FILE)),
        fs::read(v1.join(LOG_FILE)),
    ) {
        write(
            &recovery,
            "seed-v1",
            &recovery_input(0b0011, Some(&snapshot), &log),
        )?;
        write(&out.join("snapshot_decode"), "seed-v1-snapshot", &snapshot)?;
        write(&records, "seed-v1-log", &log[LOG_HEADER_LEN as usize..])?;
    }
    println!("fuzz seeds written to {}", out.display());
    Ok(())
}
