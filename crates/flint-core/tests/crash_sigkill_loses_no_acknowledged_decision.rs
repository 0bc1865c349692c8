//! A real child process checks a key in a loop and reports every decision the engine
//! acknowledged; the parent SIGKILLs it at a random moment, reopens the directory and
//! verifies that every acknowledged consumption is there, exactly once.
//!
//! The child is this same test binary, started with `FLINT_CRASH_CHILD` set, running
//! only the `crash_child` test (or, for the rounds with templates,
//! `FLINT_CRASH_TEMPLATE_CHILD` and `crash_template_child`: many distinct keys made
//! from a template, which refill within milliseconds and are dropped by sweeps and
//! compactions and made again, while the parent counts what the template's keys were
//! acknowledged).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use flint_core::{Algorithm, Limiter, Options, SyncMode};

const CHILD_ENV: &str = "FLINT_CRASH_CHILD";
const TEMPLATE_CHILD_ENV: &str = "FLINT_CRASH_TEMPLATE_CHILD";
/// Keys the template child cycles through: each is made, refills, is dropped and made
/// again many times over the rounds.
const TEMPLATE_KEYS: u64 = 3_000;
const RATE: u64 = 1_000_000_000;

/// The child: opens the directory given in the environment and checks until killed.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return; // Only meaningful when started by the parent below.
    };
    let (sync, dir) = spec.split_once(':').expect("sync:dir");
    let options = Options::default()
        .sync(sync.parse().expect("sync mode"))
        .flush_every_ms(5)
        .flush_every_events(7)
        // Small, so that automatic compactions happen (and get killed) too.
        .compact_threshold_bytes(16 << 10);
    let limiter = Limiter::open(dir, options).expect("child opens the directory");
    limiter
        .limit("k", common::quota(RATE, "1d", Algorithm::SlidingWindowLog))
        .expect("configure");
    limiter
        .limit("other", common::quota(RATE, "1d", Algorithm::TokenBucket))
        .expect("configure");
    let mut stdout = std::io::stdout().lock();
    for i in 0u64.. {
        let cost = 1 + i % 3;
        let acknowledged = if i % 5 == 4 {
            limiter
                .check_all(&[("k", cost), ("other", 1)])
                .expect("check_all")
                .allowed
        } else {
            limiter.check("k", cost).expect("check").allowed
        };
        assert!(acknowledged, "the rate is far above what the test consumes");
        if i % 400 == 399 {
            limiter.compact().expect("compact");
        }
        writeln!(stdout, "ACK {cost}").expect("report");
        stdout.flush().expect("report");
    }
}

/// The child of the template rounds: checks keys made from `t:*` (a token bucket that
/// refills in microseconds, so keys are back at full capacity almost at once), sweeps
/// and compacts, until killed. Each line reports the units a call was acknowledged.
#[test]
fn crash_template_child() {
    let Ok(spec) = std::env::var(TEMPLATE_CHILD_ENV) else {
        return; // Only meaningful when started by the parent below.
    };
    let (sync, dir) = spec.split_once(':').expect("sync:dir");
    let options = Options::default()
        .sync(sync.parse().expect("sync mode"))
        .flush_every_ms(5)
        .flush_every_events(7)
        .compact_threshold_bytes(16 << 10);
    let limiter = Limiter::open(dir, options).expect("child opens the directory");
    limiter
        .limit("t:*", common::quota(RATE, "50ms", Algorithm::TokenBucket))
        .expect("configure");
    // Start where the last child stopped, so keys of all ages are about.
    let start = limiter
        .status("t:*")
        .expect("status")
        .map_or(0, |s| s.counters.allowed);
    let mut stdout = std::io::stdout().lock();
    for i in start.. {
        let cost = 1 + i % 3;
        let key = format!("t:{}", i.wrapping_mul(7919) % TEMPLATE_KEYS);
        let acknowledged = if i % 5 == 4 {
            let other = format!("t:{}", (i + 1).wrapping_mul(104_729) % TEMPLATE_KEYS);
            let items = [(key.as_str(), cost), (other.as_str(), 1)];
            let decision = limiter.check_all(&items).expect("check_all");
            assert!(
                decision.allowed,
                "the rate is far above what the test consumes"
            );
            cost + 1
        } else {
            assert!(limiter.check(&key, cost).expect("check").allowed);
            cost
        };
        if i % 97 == 96 {
            limiter.sweep().expect("sweep");
        }
        if i % 700 == 699 {
            limiter.compact().expect("compact");
        }
        writeln!(stdout, "ACK {acknowledged}").expect("report");
        stdout.flush().expect("report");
    }
}

/// A small deterministic generator (no dependency needed for a few random numbers).
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// Runs one child until it has acknowledged `acks` decisions, kills it, and returns the
/// acknowledged cost.
fn run_child_and_kill(dir: &Path, sync: SyncMode, acks: u64) -> u64 {
    run_named_child_and_kill("crash_child", CHILD_ENV, dir, sync, acks)
}

/// [`run_child_and_kill`] for the child test `name`, told its directory in `env`.
fn run_named_child_and_kill(name: &str, env: &str, dir: &Path, sync: SyncMode, acks: u64) -> u64 {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(env, format!("{}:{}", sync.name(), dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut acknowledged_cost = 0;
    let mut seen = 0;
    let ack_cost = |line: &str| {
        // The harness may print "test crash_child ... " on the same line.
        line.split_once("ACK ")
            .map(|(_, cost)| cost.parse::<u64>().expect("a cost"))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in lines.by_ref() {
        if let Some(cost) = ack_cost(&line.expect("read the child")) {
            acknowledged_cost += cost;
            seen += 1;
        }
        if seen >= acks || Instant::now() > deadline {
            break;
        }
    }
    // SIGKILL, while the child is in the middle of its next decisions.
    child.kill().expect("kill the child");
    child.wait().expect("reap the child");
    // Decisions acknowledged after the parent stopped reading are still in the pipe.
    for line in lines.map_while(Result::ok) {
        acknowledged_cost += ack_cost(&line).unwrap_or(0);
    }
    assert!(seen >= acks.min(1), "the child acknowledged nothing");
    acknowledged_cost
}

fn crash_rounds(sync: SyncMode, rounds: u64) {
    let (_tmp, dir) = common::data_dir();
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("time")
        .as_nanos() as u64
        | 1;
    let mut random = XorShift(seed);
    let mut acknowledged = 0;
    for round in 0..rounds {
        let acks = 1 + random.below(if sync == SyncMode::Always { 150 } else { 3000 });
        acknowledged += run_child_and_kill(&dir, sync, acks);

        let limiter = Limiter::open(&dir, Options::default())
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): reopening failed: {e}"));
        let status = limiter
            .status("k")
            .expect("status")
            .expect("the key exists");
        // Every acknowledged unit is there. At most one decision was in flight when the
        // child died (it is single-threaded), costing at most 3: recorded or not, it
        // must not appear twice.
        let recorded = status.counters.allowed_cost;
        assert!(
            recorded >= acknowledged,
            "round {round} (seed {seed}): {acknowledged} units acknowledged, only {recorded} recovered"
        );
        assert!(
            recorded <= acknowledged + 3,
            "round {round} (seed {seed}): {recorded} units recovered for {acknowledged} acknowledged: counted twice"
        );
        // The algorithm state agrees with the counters: the window holds exactly the
        // recovered consumption (everything is within the day).
        assert_eq!(
            status.remaining,
            RATE - recorded,
            "round {round} (seed {seed}): state and counters disagree"
        );
        limiter.close().expect("close");
        // The in-flight decision, if recorded, belongs to the next round's baseline.
        acknowledged = recorded;
    }
}

#[test]
fn sigkill_with_sync_always_loses_no_acknowledged_decision() {
    crash_rounds(SyncMode::Always, 30);
}

#[test]
fn sigkill_with_sync_batch_loses_no_acknowledged_decision() {
    crash_rounds(SyncMode::Batch, 30);
}

/// Rounds of the template child: after each kill the directory opens, the template's
/// counters (which sum those of every key made from it, dropped ones included) hold
/// every acknowledged unit exactly once, every key made from the template that holds
/// state is one the child used, and doctor finds nothing wrong.
fn template_crash_rounds(sync: SyncMode, rounds: u64) {
    let (_tmp, dir) = common::data_dir();
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("time")
        .as_nanos() as u64
        | 1;
    let mut random = XorShift(seed);
    let mut acknowledged = 0;
    for round in 0..rounds {
        let acks = 1 + random.below(if sync == SyncMode::Always { 150 } else { 4000 });
        acknowledged +=
            run_named_child_and_kill("crash_template_child", TEMPLATE_CHILD_ENV, &dir, sync, acks);
        let limiter = Limiter::open(&dir, Options::default())
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): reopening failed: {e}"));
        let template = limiter
            .status("t:*")
            .expect("status")
            .expect("the template exists");
        // At most one call was in flight when the child died, of at most 4 units.
        let recorded = template.counters.allowed_cost;
        assert!(
            recorded >= acknowledged,
            "round {round} (seed {seed}): {acknowledged} units acknowledged, only {recorded} recovered"
        );
        assert!(
            recorded <= acknowledged + 4,
            "round {round} (seed {seed}): {recorded} units recovered for {acknowledged} acknowledged: counted twice"
        );
        assert_eq!(template.counters.denied, 0, "round {round} (seed {seed})");
        let stats = limiter.stats().expect("stats");
        assert!(
            stats.template_keys as u64 <= TEMPLATE_KEYS,
            "round {round}: {stats:?}"
        );
        for status in limiter
            .list_kind(Some("t:"), flint_core::ListKind::Keys)
            .expect("list")
        {
            assert_eq!(
                status.template.as_deref(),
                Some("t:*"),
                "round {round}: {status:?}"
            );
            let n: u64 = status.key[2..].parse().expect("a key the child made");
            assert!(n < TEMPLATE_KEYS);
        }
        let doctor = limiter.doctor().expect("doctor");
        assert!(
            doctor.ok,
            "round {round} (seed {seed}): {:?}",
            doctor.checks
        );
        limiter.close().expect("close");
        // The in-flight call, if recorded, belongs to the next round's baseline.
        acknowledged = recorded;
    }
}

#[test]
fn sigkill_with_templates_and_sync_always_loses_no_acknowledged_decision() {
    template_crash_rounds(SyncMode::Always, 20);
}

#[test]
fn sigkill_with_templates_and_sync_batch_loses_no_acknowledged_decision() {
    template_crash_rounds(SyncMode::Batch, 20);
}

/// The child for the lock test: holds the directory open until its stdin closes.
#[test]
fn lock_holder_child() {
    let Ok(dir) = std::env::var("FLINT_LOCK_CHILD") else {
        return;
    };
    let limiter = Limiter::open(&dir, Options::default()).expect("child opens the directory");
    println!("LOCKED");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    limiter.close().expect("close");
}

#[test]
fn a_second_opener_in_another_process_is_told_who_holds_the_lock() {
    let (_tmp, dir) = common::data_dir();
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "lock_holder_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FLINT_LOCK_CHILD", &dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.ends_with("LOCKED"))),
        "the child did not open the directory"
    );

    let error = Limiter::open(&dir, Options::default()).expect_err("the directory is locked");
    match &error {
        flint_core::Error::Locked { dir: locked, pid } => {
            assert_eq!(locked, &dir);
            assert_eq!(*pid, Some(child.id()));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains(&dir.display().to_string()), "{message}");
    assert!(message.contains(&child.id().to_string()), "{message}");

    // Once the holder is gone, the directory opens.
    drop(child.stdin.take());
    child.wait().expect("reap the child");
    let limiter = Limiter::open(&dir, Options::default()).expect("opens after release");
    limiter.close().expect("close");
}
