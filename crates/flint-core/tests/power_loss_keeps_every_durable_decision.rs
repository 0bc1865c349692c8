//! Simulated power loss at every step of checks, compactions, sweeps and repairs, with
//! keys made from a template (derived, checked, dropped) among them, in both sync modes, through `MemoryBackend` (which keeps written and durable bytes apart and, at
//! a crash, keeps the durable bytes plus any subset of unsynced pages, torn or whole,
//! and loses unsynced renames).
//!
//! Each seed runs a random workload on a manual clock, cuts power before a random
//! storage primitive, reopens the image, and checks that the state is exactly the
//! state after some prefix of the workload that includes every acknowledged durable
//! call (so nothing acknowledged is lost and no quota appears from nowhere). A failure
//! prints its seed; `FLINT_POWER_LOSS_SEED=<seed>` replays one seed, and
//! `FLINT_POWER_LOSS_CRASHES=<n>` sets how many crashes to simulate (the soak);
//! `FLINT_POWER_LOSS_DEBUG=1` prints the steps and states of a failing seed.

mod common;

use std::sync::Arc;

use common::{quota, START};
use flint_core::admin as repair;
use flint_core::backend::MemoryBackend;
use flint_core::{
    Algorithm, Clock, Error, HistoryEvent, Limiter, ManualClock, Options, Status, SyncMode, TopBy,
};

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const KEYS: [&str; 4] = ["a", "b", "c", "d"];

/// The template of the workload, and the keys it covers (or that take a limit of
/// their own when a step configures one): derived on their first decision, dropped by
/// sweeps once back at full capacity.
const TEMPLATE: &str = "t:*";
const TEMPLATE_KEYS: [&str; 5] = ["t:1", "t:2", "t:3", "t:4", "t:5"];

/// A key of the workload: a configured one or one under the template.
fn any_key(rng: &mut Rng) -> &'static str {
    if rng.below(2) == 0 {
        KEYS[rng.below(KEYS.len() as u64) as usize]
    } else {
        TEMPLATE_KEYS[rng.below(TEMPLATE_KEYS.len() as u64) as usize]
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Key, rate, period, algorithm, and the burst of a token bucket that has one.
    Limit(&'static str, u64, &'static str, Algorithm, Option<u64>),
    Check(&'static str, u64),
    CheckAll(Vec<(&'static str, u64)>),
    Reset(&'static str),
    Refund(&'static str, u64),
    Remove(&'static str),
    Compact,
    Flush,
    /// A full sweep of the keys made from templates that are back at full capacity.
    Sweep,
}

/// One step of a workload: an operation at a time.
#[derive(Debug, Clone)]
struct Step {
    at: u64,
    op: Op,
}

fn workload(rng: &mut Rng, len: usize) -> Vec<Step> {
    let mut at = START;
    let mut steps = Vec::with_capacity(len);
    let algorithms = Algorithm::ALL;
    for _ in 0..len {
        at += rng.below(400) * 1_000_000;
        let key = any_key(rng);
        let op = match rng.below(26) {
            0..=2 => {
                let algorithm = algorithms[rng.below(3) as usize];
                let per = ["1s", "2s", "500ms"][rng.below(3) as usize];
                let rate = 2 + rng.below(6);
                // Half the token buckets get a burst, below or above their rate.
                let burst = (algorithm == Algorithm::TokenBucket && rng.below(2) == 0)
                    .then(|| 1 + rng.below(12));
                Op::Limit(key, rate, per, algorithm, burst)
            }
            3..=12 => Op::Check(key, 1 + rng.below(2)),
            13..=14 => {
                let other = any_key(rng);
                Op::CheckAll(vec![(key, 1), (other, 1)])
            }
            15 => Op::Reset(key),
            16 => Op::Remove(key),
            17 | 18 => Op::Compact,
            20 | 21 => Op::Refund(key, 1 + rng.below(3)),
            // The template: configured (again, or with other settings), reset or
            // removed with every key made from it.
            22 => {
                let algorithm = algorithms[rng.below(3) as usize];
                let per = ["1s", "300ms"][rng.below(2) as usize];
                Op::Limit(TEMPLATE, 2 + rng.below(4), per, algorithm, None)
            }
            23 => [Op::Reset(TEMPLATE), Op::Remove(TEMPLATE)][rng.below(2) as usize].clone(),
            24 | 25 => Op::Sweep,
            _ => Op::Flush,
        };
        steps.push(Step { at, op });
    }
    steps
}

/// Runs one step; returns whether its result was acknowledged as durable.
fn run(limiter: &Limiter, sync: SyncMode, op: &Op) -> Result<bool, Error> {
    let always = sync == SyncMode::Always;
    Ok(match op {
        Op::Limit(key, rate, per, algorithm, burst) => {
            let quota = quota(*rate, per, *algorithm);
            limiter.limit(key, burst.map_or(Ok(quota), |b| quota.with_burst(b))?)?;
            always
        }
        Op::Check(key, cost) => limiter.check(key, *cost)?.allowed && always,
        Op::CheckAll(items) => limiter.check_all(items)?.allowed && always,
        Op::Reset(key) => {
            limiter.reset(key)?;
            always
        }
        Op::Refund(key, cost) => {
            limiter.refund(key, *cost)?;
            always
        }
        Op::Remove(key) => {
            limiter.remove(key)?;
            always
        }
        Op::Compact => {
            limiter.compact()?;
            true
        }
        Op::Flush => {
            limiter.flush()?;
            true
        }
        // A sweep changes no decision: nothing waits for it to be durable.
        Op::Sweep => {
            limiter.sweep()?;
            false
        }
    })
}

fn is_input_error(e: &Error) -> bool {
    matches!(
        e,
        Error::LimitNotFound { .. } | Error::InvalidArgument { .. }
    )
}

fn options(sync: SyncMode, clock: &Arc<ManualClock>, backend: &MemoryBackend) -> Options {
    // No timed flushes: every sync comes from a step, so a seed replays exactly.
    Options::default()
        .sync(sync)
        .clock(clock.clone())
        .flush_every_ms(3_600_000)
        .flush_every_events(u64::MAX)
        .compact_threshold_bytes(u64::MAX)
        .backend(Arc::new(backend.clone()))
}

/// Everything observable about the state at the clock's time: every entry with its
/// history, and the top lists (which merge the template's summary of dropped keys).
type Observed = (Vec<(Status, Vec<HistoryEvent>)>, Vec<Status>, Vec<Status>);

fn observe(limiter: &Limiter) -> Observed {
    let entries = limiter
        .list(None)
        .expect("list")
        .into_iter()
        .map(|status| {
            let history = limiter.history(&status.key, 1_000).expect("history");
            (status, history)
        })
        .collect();
    (
        entries,
        limiter.top(TopBy::Allowed, 100).expect("top"),
        limiter.top(TopBy::Denied, 100).expect("top"),
    )
}

/// The states after the first `len` steps, for every `len` in `lens`, observed at
/// `now`: one run of the workload on a limiter that never crashes.
fn model(
    sync: SyncMode,
    steps: &[Step],
    lens: std::ops::RangeInclusive<usize>,
    now: u64,
) -> Vec<Observed> {
    let backend = MemoryBackend::new();
    let clock = Arc::new(ManualClock::new(START));
    let limiter = Limiter::open("model", options(sync, &clock, &backend)).expect("open the model");
    let mut states = Vec::new();
    for len in 0..=*lens.end() {
        if lens.contains(&len) {
            // Observing records nothing, so the clock may go forward and back.
            clock.set(now);
            states.push(observe(&limiter));
        }
        if let Some(step) = steps.get(len) {
            clock.set(step.at);
            let _ = run(&limiter, sync, &step.op);
        }
    }
    states
}

/// The outcome of one simulated power loss.
struct Crash {
    seed: u64,
    sync: SyncMode,
    steps: Vec<Step>,
    /// Steps that ran (the last may have been cut by the power loss).
    ran: usize,
    /// Steps whose result was acknowledged as durable: all of them must survive.
    durable: usize,
    image: MemoryBackend,
    now: u64,
}

/// Runs the workload of `seed`, cutting power before a random storage primitive.
fn crash(seed: u64) -> Crash {
    let mut rng = Rng(seed);
    let sync = if rng.below(2) == 0 {
        SyncMode::Always
    } else {
        SyncMode::Batch
    };
    let len = 8 + rng.below(40) as usize;
    let steps = workload(&mut rng, len);
    // A dry run counts the primitives, so the cut can fall on any of them.
    let primitives = {
        let backend = MemoryBackend::new();
        let clock = Arc::new(ManualClock::new(START));
        let limiter = Limiter::open("dry", options(sync, &clock, &backend)).expect("dry open");
        let opened = backend.ops();
        for step in &steps {
            clock.set(step.at);
            let _ = run(&limiter, sync, &step.op);
        }
        backend.ops() - opened
    };
    let backend = MemoryBackend::new();
    let clock = Arc::new(ManualClock::new(START));
    let limiter = Limiter::open("live", options(sync, &clock, &backend)).expect("open");
    backend.crash_at(1 + rng.below(primitives + 1), rng.next());
    let (mut ran, mut durable) = (0, 0);
    for step in &steps {
        clock.set(step.at);
        ran += 1;
        match run(&limiter, sync, &step.op) {
            Ok(true) => durable = ran,
            Ok(false) => {}
            Err(e) if is_input_error(&e) && !backend.crashed() => {}
            Err(_) => break,
        }
    }
    let now = clock.now();
    // The power goes (if it has not yet); what the limiter does after is not seen.
    let image = backend.crash_image(rng.next());
    drop(limiter);
    Crash {
        seed,
        sync,
        steps,
        ran,
        durable,
        image,
        now,
    }
}

/// Opens the image and checks it against the model; returns the failure, if any.
fn verify(crash: &Crash) -> Result<(), String> {
    let seed = crash.seed;
    let clock = Arc::new(ManualClock::new(crash.now));
    let image = crash.image.crash_image(0); // a copy: the image is all durable
    let limiter = Limiter::open("image", options(crash.sync, &clock, &image))
        .map_err(|e| format!("seed {seed}: the image does not open: {e}"))?;
    let recovered = observe(&limiter);
    let states = model(
        crash.sync,
        &crash.steps,
        crash.durable..=crash.ran,
        crash.now,
    );
    if !states.contains(&recovered) {
        if std::env::var("FLINT_POWER_LOSS_DEBUG").is_ok() {
            eprintln!("steps {:#?}\nrecovered {:#?}", crash.steps, recovered);
            for (i, state) in states.iter().enumerate() {
                eprintln!("state {} {:#?}", crash.durable + i, state);
            }
        }
        return Err(format!(
            "seed {seed}: the recovered state is no prefix of {}..={} steps ({:?} mode, {} steps)",
            crash.durable,
            crash.ran,
            crash.sync,
            crash.steps.len()
        ));
    }
    // The recovered directory keeps working, and survives another close and open.
    if let Some(status) = recovered.0.iter().find(|s| !s.0.is_template()) {
        let _ = limiter.check(&status.0.key, 1);
    }
    let after = observe(&limiter);
    limiter
        .close()
        .map_err(|e| format!("seed {seed}: close after recovery: {e}"))?;
    let again = Limiter::open("image", options(crash.sync, &clock, &image))
        .map_err(|e| format!("seed {seed}: the second open fails: {e}"))?;
    if observe(&again) != after {
        return Err(format!("seed {seed}: the second open differs"));
    }
    Ok(())
}

/// Cuts power during the recovery of an image too: the image of that must open to
/// the same state as the first recovery does.
fn verify_crash_during_recovery(crash: &Crash, rng: &mut Rng) -> Result<(), String> {
    let seed = crash.seed;
    let clock = Arc::new(ManualClock::new(crash.now));
    let reference = {
        let image = crash.image.crash_image(0);
        let limiter = Limiter::open("ref", options(crash.sync, &clock, &image))
            .map_err(|e| format!("seed {seed}: {e}"))?;
        observe(&limiter)
    };
    let image = crash.image.crash_image(0);
    image.crash_at(1 + rng.below(12), rng.next());
    let cut = Limiter::open("cut", options(crash.sync, &clock, &image));
    let twice = image.crash_image(rng.next());
    drop(cut);
    let limiter = Limiter::open("twice", options(crash.sync, &clock, &twice))
        .map_err(|e| format!("seed {seed}: power lost during recovery, then: {e}"))?;
    if observe(&limiter) != reference {
        return Err(format!(
            "seed {seed}: power lost during recovery changed the recovered state"
        ));
    }
    Ok(())
}

fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("FLINT_POWER_LOSS_SEED") {
        return vec![seed.parse().expect("FLINT_POWER_LOSS_SEED is a number")];
    }
    let count: u64 = std::env::var("FLINT_POWER_LOSS_CRASHES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let base = std::env::var("FLINT_POWER_LOSS_BASE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0x000F_11A7);
    (0..count).map(|i| base + i).collect()
}

#[test]
fn every_power_loss_reopens_with_every_acknowledged_durable_decision() {
    let seeds = seeds();
    let mut failures = Vec::new();
    let (mut always, mut batch) = (0, 0);
    for &seed in &seeds {
        let crash = crash(seed);
        match crash.sync {
            SyncMode::Always => always += 1,
            SyncMode::Batch => batch += 1,
        }
        let mut rng = Rng(seed ^ 0xDEAD_BEEF);
        if let Err(failure) =
            verify(&crash).and_then(|()| verify_crash_during_recovery(&crash, &mut rng))
        {
            eprintln!("{failure}");
            failures.push(failure);
        }
    }
    eprintln!(
        "power loss: {} simulated crashes ({always} sync=always, {batch} sync=batch), each with a second crash during recovery; {} violations",
        seeds.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} simulated power losses broke a promise; replay one with FLINT_POWER_LOSS_SEED=<seed>:\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
}

/// Power lost at every primitive of a repair: the directory opens either as before
/// the repair (refused, and the repair can run again) or as after it.
#[test]
fn a_power_loss_during_repair_leaves_the_old_log_or_the_repaired_one() {
    let mut checked = 0;
    for seed in 0..40u64 {
        let backend = MemoryBackend::new();
        let clock = Arc::new(ManualClock::new(START));
        let limiter =
            Limiter::open("r", options(SyncMode::Always, &clock, &backend)).expect("open");
        limiter
            .limit("k", quota(100, "1h", Algorithm::TokenBucket))
            .unwrap();
        for _ in 0..5 {
            limiter.check("k", 1).unwrap();
        }
        let end_of_first = limiter.doctor().unwrap().log_bytes;
        for _ in 0..5 {
            limiter.check("k", 1).unwrap();
        }
        limiter.close().unwrap();
        // Bit rot inside the synced part: opening refuses, repair cuts.
        let mut log = backend.contents("flint.aof").unwrap();
        log[end_of_first as usize + 12] ^= 0x40;
        backend.put("flint.aof", &log);
        let refused = Limiter::open("r", options(SyncMode::Always, &clock, &backend));
        assert!(matches!(refused, Err(Error::Corrupt { .. })), "seed {seed}");
        let plan = repair::plan(&backend).unwrap().expect("damage to repair");
        backend.crash_at(1 + seed % 12, seed);
        let _ = repair::apply(&backend, plan, START);
        let image = backend.crash_image(seed);
        match Limiter::open("r", options(SyncMode::Always, &clock, &image)) {
            Ok(repaired) => {
                let status = repaired.status("k").unwrap().unwrap();
                assert_eq!(status.counters.allowed, 5, "seed {seed}: the repaired log");
            }
            Err(Error::Corrupt { .. }) => {
                // The old log is intact: the repair can run again and succeed.
                let plan = repair::plan(&image).unwrap().expect("still damaged");
                repair::apply(&image, plan, START).unwrap();
                let repaired =
                    Limiter::open("r", options(SyncMode::Always, &clock, &image)).unwrap();
                assert_eq!(repaired.status("k").unwrap().unwrap().counters.allowed, 5);
            }
            Err(e) => panic!("seed {seed}: after a power loss during repair: {e}"),
        }
        checked += 1;
    }
    eprintln!("repair: {checked} simulated power losses, 0 violations");
}

/// A `synced` record forged inside a key (all ASCII, checksum valid, with a guessed
/// salt), exposed by a power loss that loses the page holding its configure record's
/// header: recovery must not take it for the log's watermark.
#[test]
fn a_synced_record_forged_inside_a_key_is_not_taken_for_the_watermark() {
    fn forged_frame() -> Vec<u8> {
        for at in 0x2020_2020_2020_2020u64.. {
            let mut payload = vec![7u8];
            payload.extend_from_slice(&at.to_le_bytes());
            payload.extend_from_slice(&0x3030_3030_3030_3030u64.to_le_bytes());
            payload.extend_from_slice(&0x3030_3030u32.to_le_bytes());
            if !payload.iter().all(u8::is_ascii) {
                continue;
            }
            let crc = crc32c::crc32c(&payload).to_le_bytes();
            if crc.iter().all(u8::is_ascii) {
                let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
                frame.extend_from_slice(&crc);
                frame.extend_from_slice(&payload);
                return frame;
            }
        }
        unreachable!("an all-ASCII frame exists")
    }
    let backend = MemoryBackend::new();
    let clock = Arc::new(ManualClock::new(START));
    let limiter = Limiter::open("forged", options(SyncMode::Batch, &clock, &backend)).unwrap();
    let quota = quota(10, "1m", Algorithm::TokenBucket);
    // Seven keys of ~1 KiB: the log ends near 7 KiB, inside its second page.
    for i in 0..7 {
        limiter
            .limit(&format!("p{i}{}", "x".repeat(982)), quota)
            .unwrap();
    }
    let end = limiter.doctor().unwrap().log_bytes as usize;
    assert!(end > 4096 && end < 8192 - 64, "{end}");
    let forged = String::from_utf8(forged_frame()).unwrap();
    // The forged frame starts in the third page, the record's header is in the second.
    let padding = 8192 + 8 - (end + 8 + 32);
    let key = format!("{}{forged}", "a".repeat(padding));
    limiter.limit(&key, quota).unwrap();
    let mut bytes = backend.contents("flint.aof").unwrap();
    drop(limiter);
    // A power loss: nothing past the header was synced, and the second page was lost.
    bytes[4096..8192].fill(0);
    let image = MemoryBackend::new();
    image.put("flint.aof", &bytes);
    let reopened = Limiter::open("forged", options(SyncMode::Batch, &clock, &image))
        .unwrap_or_else(|e| panic!("a power loss that lost only unsynced bytes is refused: {e}"));
    assert!(reopened.list(None).unwrap().len() < 8);
}
