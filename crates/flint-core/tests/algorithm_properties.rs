//! Property tests of the three algorithms against brute-force models, and of replay
//! against live state; with refunds mixed into the sequences, and token buckets with a
//! burst (a capacity other than the rate), too.

use std::sync::Arc;

use flint_core::algorithm::LimitState;
use flint_core::{Algorithm, Limiter, ManualClock, Mode, Options, Period, Quota, SyncMode};
use proptest::prelude::*;

const T0: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;

/// One step: move the clock by `dt` nanoseconds, then ask for `cost` (clamped to rate).
#[derive(Debug, Clone, Copy)]
struct Step {
    dt: u64,
    cost: u64,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let dt = prop_oneof![
        Just(0u64),
        1u64..1_000,
        (1u64..2_000).prop_map(|ms| ms * MS),
        (1u64..200).prop_map(|ms| ms * MS + 1),
    ];
    prop::collection::vec(
        (dt, 1u64..12).prop_map(|(dt, cost)| Step { dt, cost }),
        1..120,
    )
}

/// One step of a sequence with refunds: move the clock by `dt`, then check `cost`
/// units, or give `cost` units back (both clamped to the rate).
#[derive(Debug, Clone, Copy)]
struct Op {
    dt: u64,
    cost: u64,
    refund: bool,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let dt = prop_oneof![
        Just(0u64),
        1u64..1_000,
        (1u64..2_000).prop_map(|ms| ms * MS),
        (1u64..200).prop_map(|ms| ms * MS + 1),
    ];
    let refund = prop_oneof![3 => Just(false), 1 => Just(true)];
    prop::collection::vec(
        (dt, 1u64..12, refund).prop_map(|(dt, cost, refund)| Op { dt, cost, refund }),
        1..120,
    )
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![
        Just(Algorithm::TokenBucket),
        Just(Algorithm::SlidingWindowLog),
        Just(Algorithm::FixedWindowCounter),
    ]
}

/// The brute-force models: plain lists of what was admitted, and for the token bucket
/// a token level kept as an exact fraction (tokens x per), capped at `burst` tokens and
/// refilled at `rate` tokens per `per`.
struct Model {
    rate: u64,
    burst: u64,
    per: u64,
    algorithm: Algorithm,
    admitted: Vec<(u64, u64)>,
    level: u128,
    last: u64,
}

impl Model {
    fn new(quota: &Quota) -> Self {
        let per = quota.period().as_nanos();
        Model {
            rate: quota.rate(),
            burst: quota.burst(),
            per,
            algorithm: quota.algorithm(),
            admitted: Vec::new(),
            level: u128::from(quota.burst()) * u128::from(per),
            last: 0,
        }
    }

    fn refill(&mut self, now: u64) {
        let full = u128::from(self.burst) * u128::from(self.per);
        let gained = u128::from(now.saturating_sub(self.last)) * u128::from(self.rate);
        self.level = (self.level + gained).min(full);
        self.last = now;
    }

    fn allows(&mut self, now: u64, cost: u64) -> bool {
        match self.algorithm {
            Algorithm::SlidingWindowLog => {
                let used: u64 = self
                    .admitted
                    .iter()
                    .filter(|(at, _)| *at + self.per > now)
                    .map(|(_, c)| c)
                    .sum();
                used + cost <= self.rate
            }
            Algorithm::FixedWindowCounter => {
                let window = now - now % self.per;
                let used: u64 = self
                    .admitted
                    .iter()
                    .filter(|(at, _)| *at >= window)
                    .map(|(_, c)| c)
                    .sum();
                used + cost <= self.rate
            }
            Algorithm::TokenBucket => {
                self.refill(now);
                self.level >= u128::from(cost) * u128::from(self.per)
            }
        }
    }

    fn admit(&mut self, now: u64, cost: u64) {
        if self.algorithm == Algorithm::TokenBucket {
            self.refill(now);
            self.level -= u128::from(cost) * u128::from(self.per);
        }
        self.admitted.push((now, cost));
    }

    /// What a refund of `cost` at `now` gives back, by definition:
    ///
    /// - token bucket: `cost` tokens back, the level capped at the capacity (`burst`);
    /// - fixed window counter: `cost` units off the current window's admitted units, not
    ///   below zero (earlier windows are gone anyway);
    /// - sliding window log: `cost` units off the admitted units still inside the window
    ///   `(now - per, now]`, newest first, not below zero.
    ///
    /// `admitted` stays the net list (what still counts). Returns how much was given
    /// back, in tokens x per for the token bucket and in units otherwise: 0 means the
    /// key was at full capacity and nothing changed.
    fn refund(&mut self, now: u64, cost: u64) -> u128 {
        let in_window: Box<dyn Fn(u64) -> bool> = match self.algorithm {
            Algorithm::TokenBucket => {
                self.refill(now);
                let full = u128::from(self.burst) * u128::from(self.per);
                let before = self.level;
                self.level = (self.level + u128::from(cost) * u128::from(self.per)).min(full);
                return self.level - before;
            }
            Algorithm::SlidingWindowLog => {
                let per = self.per;
                Box::new(move |at| at + per > now)
            }
            Algorithm::FixedWindowCounter => {
                let window = now - now % self.per;
                Box::new(move |at| at >= window)
            }
        };
        let mut left = cost;
        for (at, units) in self.admitted.iter_mut().rev() {
            if left == 0 || !in_window(*at) {
                break;
            }
            let taken = left.min(*units);
            *units -= taken;
            left -= taken;
        }
        self.admitted.retain(|(_, units)| *units > 0);
        u128::from(cost - left)
    }

    /// Units a request could use now.
    fn remaining(&mut self, now: u64) -> u64 {
        match self.algorithm {
            Algorithm::TokenBucket => {
                self.refill(now);
                (self.level / u128::from(self.per)) as u64
            }
            Algorithm::SlidingWindowLog | Algorithm::FixedWindowCounter => {
                let window = now - now % self.per;
                let used: u64 = self
                    .admitted
                    .iter()
                    .filter(|(at, _)| match self.algorithm {
                        Algorithm::SlidingWindowLog => *at + self.per > now,
                        _ => *at >= window,
                    })
                    .map(|(_, c)| c)
                    .sum();
                self.rate.saturating_sub(used)
            }
        }
    }
}

fn quota(rate: u64, per_ms: u64, algorithm: Algorithm) -> Quota {
    Quota::new(rate, Period::from_millis(per_ms).unwrap(), algorithm).unwrap()
}

/// A token bucket of `rate` per `per_ms` holding at most `burst`.
fn bursty(rate: u64, per_ms: u64, burst: u64) -> Quota {
    quota(rate, per_ms, Algorithm::TokenBucket)
        .with_burst(burst)
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every decision equals the brute-force model's, and a retry at `retry_after` is
    /// allowed (one nanosecond earlier it is not).
    #[test]
    fn decisions_match_the_model_and_retry_after_is_exact(
        algorithm in algorithm(),
        rate in 1u64..12,
        per_ms in 1u64..3_000,
        steps in steps(),
    ) {
        let q = quota(rate, per_ms, algorithm);
        let mut state = LimitState::full(algorithm);
        let mut model = Model::new(&q);
        let mut now = T0;
        for step in steps {
            now += step.dt;
            let cost = step.cost.min(rate);
            let outcome = state.decide(&q, now, cost);
            prop_assert_eq!(outcome.allowed, model.allows(now, cost), "at {} cost {}", now - T0, cost);
            if outcome.allowed {
                prop_assert_eq!(outcome.retry_after, 0);
                state.consume(&q, now, cost);
                model.admit(now, cost);
            } else {
                let before = state.clone();
                prop_assert!(outcome.retry_after > 0);
                prop_assert!(state.decide(&q, now + outcome.retry_after, cost).allowed);
                prop_assert!(!state.decide(&q, now + outcome.retry_after - 1, cost).allowed);
                prop_assert!(outcome.reset_at >= now);
                // A denial changes nothing.
                prop_assert_eq!(&state, &before);
            }
            prop_assert!(outcome.remaining <= rate);
        }
    }

    /// The admitted traffic never exceeds what each algorithm promises.
    #[test]
    fn admitted_traffic_respects_the_rate(
        algorithm in algorithm(),
        rate in 1u64..12,
        per_ms in 1u64..3_000,
        steps in steps(),
    ) {
        let q = quota(rate, per_ms, algorithm);
        let per = q.period().as_nanos();
        let mut state = LimitState::full(algorithm);
        let mut admitted: Vec<(u64, u64)> = Vec::new();
        let mut now = T0;
        for step in steps {
            now += step.dt;
            let cost = step.cost.min(rate);
            if state.decide(&q, now, cost).allowed {
                state.consume(&q, now, cost);
                admitted.push((now, cost));
            }
        }
        for (i, &(start, _)) in admitted.iter().enumerate() {
            for &(end, _) in &admitted[i..] {
                let sum: u64 = admitted.iter().filter(|(at, _)| *at >= start && *at <= end).map(|(_, c)| c).sum();
                match algorithm {
                    // No window (t - per, t] holds more than rate.
                    Algorithm::SlidingWindowLog => if end - start < per {
                        prop_assert!(sum <= rate, "{} in a window of {}ns", sum, end - start);
                    },
                    // No aligned window holds more than rate.
                    Algorithm::FixedWindowCounter => if start / per == end / per {
                        prop_assert!(sum <= rate);
                    },
                    // A full bucket plus what refills in between, exactly.
                    Algorithm::TokenBucket => {
                        let refill = u128::from(end - start) * u128::from(rate) / u128::from(per);
                        prop_assert!(u128::from(sum) <= u128::from(rate) + refill);
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Reopening the data directory (replaying the log, with and without a snapshot)
    /// gives the same state as was live: the same status, history and next decisions.
    #[test]
    fn state_after_replay_equals_live_state(
        algorithm in algorithm(),
        rate in 1u64..12,
        per_ms in 1u64..3_000,
        steps in steps(),
        compact_at in 0usize..120,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let options = Options::default().sync(SyncMode::Batch).clock(clock.clone());
        let q = quota(rate, per_ms, algorithm);
        let live = Limiter::open(dir.path(), options.clone()).unwrap();
        live.limit("a", q).unwrap();
        live.limit("b", quota(rate + 1, per_ms, algorithm)).unwrap();
        for (i, step) in steps.iter().enumerate() {
            clock.advance(step.dt);
            let cost = step.cost.min(rate);
            if i % 3 == 0 {
                live.check_all(&[("a", cost), ("b", 1)]).unwrap();
            } else {
                live.check("a", cost).unwrap();
            }
            if i == compact_at {
                live.compact().unwrap();
            }
        }
        let before = (live.list(None).unwrap(), live.history("a", 1000).unwrap(), live.history("b", 1000).unwrap());
        live.close().unwrap();
        let replayed = Limiter::open(dir.path(), options).unwrap();
        let after = (replayed.list(None).unwrap(), replayed.history("a", 1000).unwrap(), replayed.history("b", 1000).unwrap());
        prop_assert_eq!(before, after);
        for _ in 0..5 {
            clock.advance(per_ms * MS / 3 + 1);
            let decision = replayed.check("a", 1).unwrap();
            prop_assert!(decision.remaining <= rate);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(60))]

    /// `peek` answers exactly what the following `check` decides (allowed, remaining,
    /// reset, retry), for any cost and any history, and writes nothing: the log, the
    /// counters and the history are as if it had not been called.
    #[test]
    fn peek_equals_the_following_check_and_writes_nothing(
        algorithm in algorithm(),
        rate in 1u64..12,
        per_ms in 1u64..3_000,
        steps in steps(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let options = Options::default().sync(SyncMode::Batch).clock(clock.clone());
        let limiter = Limiter::open(dir.path(), options).unwrap();
        limiter.limit("a", quota(rate, per_ms, algorithm)).unwrap();
        for step in &steps {
            clock.advance(step.dt);
            let cost = step.cost.min(rate);
            let before = (limiter.status("a").unwrap(), limiter.history("a", 1000).unwrap());
            let log = limiter.doctor().unwrap().log_bytes;
            let peeked = limiter.peek("a", cost).unwrap();
            prop_assert_eq!(limiter.doctor().unwrap().log_bytes, log);
            prop_assert_eq!(&before, &(limiter.status("a").unwrap(), limiter.history("a", 1000).unwrap()));
            let checked = limiter.check("a", cost).unwrap();
            prop_assert_eq!(peeked, checked);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// With refunds in the sequence, every decision equals the model's, every refund
    /// changes the state exactly when the model gives something back, and after every
    /// step the units available equal the model's.
    #[test]
    fn decisions_with_refunds_match_the_model(
        algorithm in algorithm(),
        rate in 1u64..12,
        per_ms in 1u64..3_000,
        ops in ops(),
    ) {
        let q = quota(rate, per_ms, algorithm);
        let mut state = LimitState::full(algorithm);
        let mut model = Model::new(&q);
        let mut now = T0;
        for op in ops {
            now += op.dt;
            let cost = op.cost.min(rate);
            if op.refund {
                let before = state.clone();
                let changed = state.refund(&q, now, cost);
                prop_assert_eq!(changed, model.refund(now, cost) > 0, "refund at {} cost {}", now - T0, cost);
                if !changed {
                    prop_assert_eq!(&state, &before, "a refund that gives nothing back changes nothing");
                }
            } else {
                let outcome = state.decide(&q, now, cost);
                prop_assert_eq!(outcome.allowed, model.allows(now, cost), "check at {} cost {}", now - T0, cost);
                if outcome.allowed {
                    state.consume(&q, now, cost);
                    model.admit(now, cost);
                } else {
                    prop_assert!(outcome.retry_after > 0);
                    prop_assert!(state.decide(&q, now + outcome.retry_after, cost).allowed);
                    prop_assert!(!state.decide(&q, now + outcome.retry_after - 1, cost).allowed);
                }
            }
            let remaining = state.peek(&q, now).0;
            prop_assert_eq!(remaining, model.remaining(now), "remaining at {}", now - T0);
            prop_assert!(remaining <= rate);
        }
    }

    /// A refund never creates more quota than `rate` in any window of the model: what
    /// still counts after refunds (admitted minus given back) never exceeds what each
    /// algorithm promises, over every stretch of the sequence.
    #[test]
    fn admitted_traffic_net_of_refunds_respects_the_rate(
        algorithm in algorithm(),
        rate in 1u64..12,
        per_ms in 1u64..3_000,
        ops in ops(),
    ) {
        let q = quota(rate, per_ms, algorithm);
        let per = q.period().as_nanos();
        let mut state = LimitState::full(algorithm);
        let mut model = Model::new(&q);
        // Token bucket: (time, admitted minus given back, in tokens x per) per step.
        let mut ledger: Vec<(u64, i128)> = Vec::new();
        let mut now = T0;
        for op in ops {
            now += op.dt;
            let cost = op.cost.min(rate);
            if op.refund {
                state.refund(&q, now, cost);
                let given = model.refund(now, cost);
                ledger.push((now, -i128::try_from(given).unwrap()));
            } else if state.decide(&q, now, cost).allowed {
                state.consume(&q, now, cost);
                model.admit(now, cost);
                ledger.push((now, i128::from(cost) * i128::from(per)));
            }
        }
        let net = &model.admitted;
        match algorithm {
            // No window (t - per, t] holds more than rate.
            Algorithm::SlidingWindowLog => for &(start, _) in net {
                let sum: u64 = net.iter().filter(|(at, _)| *at >= start && *at - start < per).map(|(_, c)| c).sum();
                prop_assert!(sum <= rate, "{} in the window from {}", sum, start - T0);
            },
            // No aligned window holds more than rate.
            Algorithm::FixedWindowCounter => for &(start, _) in net {
                let sum: u64 = net.iter().filter(|(at, _)| at / per == start / per).map(|(_, c)| c).sum();
                prop_assert!(sum <= rate, "{} in the window of {}", sum, start - T0);
            },
            // Over any stretch of steps: a full bucket plus what refills in between.
            Algorithm::TokenBucket => for i in 0..ledger.len() {
                let mut sum = 0i128;
                for &(end, delta) in &ledger[i..] {
                    sum += delta;
                    let refill = i128::from(end - ledger[i].0) * i128::from(rate);
                    prop_assert!(sum <= i128::from(rate) * i128::from(per) + refill);
                }
            },
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Through the limiter, with refunds (of which those at full capacity write
    /// nothing), check-alls and a compaction: reopening gives the same status, history
    /// and the same answers at later times for every cost.
    #[test]
    fn state_after_replay_with_refunds_equals_live_state(
        algorithm in algorithm(),
        rate in 1u64..12,
        per_ms in 1u64..3_000,
        ops in ops(),
        compact_at in 0usize..120,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let options = Options::default().sync(SyncMode::Batch).clock(clock.clone());
        let q = quota(rate, per_ms, algorithm);
        let live = Limiter::open(dir.path(), options.clone()).unwrap();
        live.limit("a", q).unwrap();
        live.limit("b", quota(rate + 1, per_ms, algorithm)).unwrap();
        let mut now = T0;
        for (i, op) in ops.iter().enumerate() {
            clock.advance(op.dt);
            now += op.dt;
            let cost = op.cost.min(rate);
            if op.refund {
                let full = live.status("a").unwrap().unwrap().remaining == rate;
                let log = live.doctor().unwrap().log_bytes;
                live.refund("a", cost).unwrap();
                prop_assert_eq!(live.doctor().unwrap().log_bytes == log, full, "only a refund at full capacity writes nothing");
                if i % 2 == 0 {
                    live.refund("b", 1).unwrap();
                }
            } else if i % 3 == 0 {
                live.check_all(&[("a", cost), ("b", 1)]).unwrap();
            } else {
                live.check("a", cost).unwrap();
            }
            if i == compact_at {
                live.compact().unwrap();
            }
        }
        let answers = |limiter: &Limiter| {
            let mut answers = Vec::new();
            for later in [0, 1, per_ms * MS / 3, per_ms * MS / 2 + 1, per_ms * MS - 1, per_ms * MS] {
                clock.set(now + later);
                for cost in 1..=rate {
                    answers.push(limiter.peek("a", cost).unwrap());
                }
            }
            clock.set(now);
            answers
        };
        let before = (live.list(None).unwrap(), live.history("a", 1000).unwrap(), live.history("b", 1000).unwrap(), answers(&live));
        live.close().unwrap();
        let replayed = Limiter::open(dir.path(), options).unwrap();
        let after = (replayed.list(None).unwrap(), replayed.history("a", 1000).unwrap(), replayed.history("b", 1000).unwrap(), answers(&replayed));
        prop_assert_eq!(before, after);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A token bucket with any burst (below, equal to or above its rate): with checks
    /// and refunds in the sequence every decision equals the model's (level capped at
    /// burst x per, refilled at rate), a retry at `retry_after` is allowed and not one
    /// nanosecond earlier, and the units available equal the model's, never above the
    /// burst.
    #[test]
    fn decisions_with_a_burst_match_the_model(
        rate in 1u64..12,
        burst in 1u64..30,
        per_ms in 1u64..3_000,
        ops in ops(),
    ) {
        let q = bursty(rate, per_ms, burst);
        let mut state = LimitState::full(Algorithm::TokenBucket);
        let mut model = Model::new(&q);
        let mut now = T0;
        for op in ops {
            now += op.dt;
            let cost = op.cost.min(burst);
            if op.refund {
                let changed = state.refund(&q, now, cost);
                prop_assert_eq!(changed, model.refund(now, cost) > 0, "refund at {} cost {}", now - T0, cost);
            } else {
                let outcome = state.decide(&q, now, cost);
                prop_assert_eq!(outcome.allowed, model.allows(now, cost), "check at {} cost {}", now - T0, cost);
                prop_assert_eq!(outcome.limit, burst);
                if outcome.allowed {
                    state.consume(&q, now, cost);
                    model.admit(now, cost);
                } else {
                    prop_assert!(outcome.retry_after > 0);
                    prop_assert!(state.decide(&q, now + outcome.retry_after, cost).allowed);
                    prop_assert!(!state.decide(&q, now + outcome.retry_after - 1, cost).allowed);
                }
            }
            let remaining = state.peek(&q, now).0;
            prop_assert_eq!(remaining, model.remaining(now), "remaining at {}", now - T0);
            prop_assert_eq!(remaining, state.remaining(&q, now));
            prop_assert!(remaining <= burst);
        }
    }

    /// Over any stretch of a sequence, what a token bucket with a burst admits (net of
    /// refunds) is at most a full bucket (`burst`) plus what refills in between at
    /// `rate`: exactly, in tokens x per.
    #[test]
    fn admitted_traffic_with_a_burst_respects_burst_plus_refill(
        rate in 1u64..12,
        burst in 1u64..30,
        per_ms in 1u64..3_000,
        ops in ops(),
    ) {
        let q = bursty(rate, per_ms, burst);
        let per = q.period().as_nanos();
        let mut state = LimitState::full(Algorithm::TokenBucket);
        let mut ledger: Vec<(u64, i128)> = Vec::new();
        let mut model = Model::new(&q);
        let mut now = T0;
        for op in ops {
            now += op.dt;
            let cost = op.cost.min(burst);
            if op.refund {
                state.refund(&q, now, cost);
                let given = model.refund(now, cost);
                ledger.push((now, -i128::try_from(given).unwrap()));
            } else if state.decide(&q, now, cost).allowed {
                state.consume(&q, now, cost);
                model.admit(now, cost);
                ledger.push((now, i128::from(cost) * i128::from(per)));
            }
        }
        for i in 0..ledger.len() {
            let mut sum = 0i128;
            for &(end, delta) in &ledger[i..] {
                sum += delta;
                let refill = i128::from(end - ledger[i].0) * i128::from(rate);
                prop_assert!(sum <= i128::from(burst) * i128::from(per) + refill);
            }
        }
    }

    /// Reconfiguring a token bucket (another burst, rate or period) carries the units
    /// consumed over exactly: `remaining = max(0, new_burst - (old_burst -
    /// old_remaining))`, and from then on every decision equals that of a model that
    /// starts with exactly that many tokens.
    #[test]
    fn reconfiguring_the_burst_carries_the_consumed_units_over(
        rate in 1u64..12,
        burst in 1u64..30,
        per_ms in 1u64..3_000,
        new_rate in 1u64..12,
        new_burst in 1u64..30,
        new_per_ms in 1u64..3_000,
        before in steps(),
        after in steps(),
    ) {
        let old = bursty(rate, per_ms, burst);
        let new = bursty(new_rate, new_per_ms, new_burst);
        let mut state = LimitState::full(Algorithm::TokenBucket);
        let mut now = T0;
        for step in before {
            now += step.dt;
            let cost = step.cost.min(burst);
            if state.decide(&old, now, cost).allowed {
                state.consume(&old, now, cost);
            }
        }
        let old_remaining = state.remaining(&old, now);
        let state_new = state.reconfigure(&old, &new, now);
        let expected = new_burst.saturating_sub(burst - old_remaining);
        prop_assert_eq!(state_new.remaining(&new, now), expected);
        let mut state = state_new;
        let mut model = Model::new(&new);
        model.level = u128::from(expected) * u128::from(new.period().as_nanos());
        model.last = now;
        for step in after {
            now += step.dt;
            let cost = step.cost.min(new_burst);
            let outcome = state.decide(&new, now, cost);
            prop_assert_eq!(outcome.allowed, model.allows(now, cost), "at {} cost {}", now - T0, cost);
            if outcome.allowed {
                state.consume(&new, now, cost);
                model.admit(now, cost);
            }
            prop_assert_eq!(state.remaining(&new, now), model.remaining(now));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Through the limiter, with keys with and without a burst, refunds, check-alls,
    /// a change of burst halfway (an update, logged as a configure with a burst, or
    /// without one when the new burst equals the rate), the same settings again (no
    /// write) and a compaction: reopening gives the same status, history and answers.
    #[test]
    fn state_after_replay_with_bursts_equals_live_state(
        rate in 1u64..12,
        burst in 1u64..30,
        second_burst in 1u64..30,
        per_ms in 1u64..3_000,
        ops in ops(),
        compact_at in 0usize..120,
        reconfigure_at in 0usize..120,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let options = Options::default().sync(SyncMode::Batch).clock(clock.clone());
        let live = Limiter::open(dir.path(), options.clone()).unwrap();
        let mut qa = bursty(rate, per_ms, burst);
        live.limit("a", qa).unwrap();
        live.limit("b", quota(rate + 1, per_ms, Algorithm::TokenBucket)).unwrap();
        live.limit("c", quota(rate, per_ms, Algorithm::FixedWindowCounter)).unwrap();
        let mut now = T0;
        for (i, op) in ops.iter().enumerate() {
            clock.advance(op.dt);
            now += op.dt;
            if i == reconfigure_at {
                let log = live.doctor().unwrap().log_bytes;
                prop_assert_eq!(live.limit("a", qa).unwrap(), flint_core::LimitChange::Unchanged);
                prop_assert_eq!(live.doctor().unwrap().log_bytes, log, "the same settings write nothing");
                let next = bursty(rate, per_ms, second_burst);
                let consumed = burst - live.status("a").unwrap().unwrap().remaining;
                live.limit("a", next).unwrap();
                prop_assert_eq!(live.status("a").unwrap().unwrap().remaining, second_burst.saturating_sub(consumed));
                qa = next;
            }
            let cost = op.cost.min(qa.burst());
            if op.refund {
                live.refund("a", cost).unwrap();
            } else if i % 3 == 0 {
                live.check_all(&[("a", cost), ("b", 1), ("c", 1)]).unwrap();
            } else {
                live.check("a", cost).unwrap();
            }
            if i == compact_at {
                live.compact().unwrap();
            }
        }
        let answers = |limiter: &Limiter| {
            let mut answers = Vec::new();
            for later in [0, 1, per_ms * MS / 3, per_ms * MS / 2 + 1, per_ms * MS - 1, per_ms * MS] {
                clock.set(now + later);
                for cost in 1..=qa.burst() {
                    answers.push(limiter.peek("a", cost).unwrap());
                }
            }
            clock.set(now);
            answers
        };
        let before = (live.list(None).unwrap(), live.history("a", 1000).unwrap(), live.history("b", 1000).unwrap(), answers(&live));
        live.close().unwrap();
        let replayed = Limiter::open(dir.path(), options).unwrap();
        let after = (replayed.list(None).unwrap(), replayed.history("a", 1000).unwrap(), replayed.history("b", 1000).unwrap(), answers(&replayed));
        prop_assert_eq!(&before, &after);
        prop_assert_eq!(replayed.status("a").unwrap().unwrap().quota, qa);
    }
}

/// Keys of the template sequences: `t:1`, `t:2` take the limit of `t:*`; `t:a1`,
/// `t:a2`, `t:ab` that of `t:a*` (the longest prefix); `t:own` and `c` have their own.
const TEMPLATE_KEYS: [&str; 7] = ["t:1", "t:2", "t:a1", "t:a2", "t:ab", "t:own", "c"];

/// One step of a sequence over templates and configured keys.
#[derive(Debug, Clone, Copy)]
enum TOp {
    Advance(u64),
    Check(usize, u64),
    CheckAll(usize, u64, usize, u64),
    Refund(usize, u64),
    Sweep,
    Compact,
    Reopen,
}

fn template_ops() -> impl Strategy<Value = Vec<TOp>> {
    let key = 0usize..TEMPLATE_KEYS.len();
    let op = prop_oneof![
        4 => prop_oneof![
            (1u64..1_000),
            (1u64..800).prop_map(|ms| ms * MS),
            (1u64..4_000).prop_map(|ms| ms * MS + 1),
        ].prop_map(TOp::Advance),
        8 => (key.clone(), 1u64..12).prop_map(|(k, c)| TOp::Check(k, c)),
        2 => (key.clone(), 1u64..12, key.clone(), 1u64..12)
            .prop_map(|(a, ca, b, cb)| TOp::CheckAll(a, ca, b, cb)),
        2 => (key, 1u64..12).prop_map(|(k, c)| TOp::Refund(k, c)),
        2 => Just(TOp::Sweep),
        1 => Just(TOp::Compact),
        1 => Just(TOp::Reopen),
    ];
    prop::collection::vec(op, 1..90)
}

/// A quota of `algorithm` for the template sequences: token buckets with a burst.
fn template_quota(algorithm: Algorithm, rate: u64, per_ms: u64, burst: u64) -> Quota {
    match algorithm {
        Algorithm::TokenBucket => bursty(rate, per_ms, burst),
        _ => quota(rate, per_ms, algorithm),
    }
}

/// Options with no timed flushes or background sweeps: every sweep is the test's.
fn quiet_options(
    clock: &Arc<ManualClock>,
    backend: &flint_core::backend::MemoryBackend,
) -> Options {
    Options::default()
        .sync(SyncMode::Batch)
        .clock(clock.clone())
        .flush_every_ms(3_600_000)
        .flush_every_events(u64::MAX)
        .compact_threshold_bytes(u64::MAX)
        .backend(Arc::new(backend.clone()))
}

/// Everything observable about a limiter at the clock's time: list, every key's
/// status and history, and the top lists (which merge the templates' summaries).
type Seen = (
    Vec<flint_core::Status>,
    Vec<Option<flint_core::Status>>,
    Vec<Vec<flint_core::HistoryEvent>>,
    Vec<flint_core::Status>,
    Vec<flint_core::Status>,
);

fn seen(limiter: &Limiter) -> Seen {
    (
        limiter.list(None).unwrap(),
        TEMPLATE_KEYS
            .iter()
            .map(|k| limiter.status(k).unwrap())
            .collect(),
        TEMPLATE_KEYS
            .iter()
            .map(|k| limiter.history(k, 1000).unwrap())
            .collect(),
        limiter.top(flint_core::TopBy::Allowed, 100).unwrap(),
        limiter.top(flint_core::TopBy::Denied, 100).unwrap(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random sequences over two templates (`t:*` and the longer `t:a*`), keys made
    /// from them and configured keys (one of which a template would cover), of checks,
    /// check-alls, peeks, refunds, time past `per`, sweeps, compactions and reopens,
    /// for every algorithm (token buckets with a burst):
    ///
    /// - every decision equals the brute-force model of the key's limit (own limit
    ///   first, then the longest template), so no window admits more than the model
    ///   allows, for template keys too (and that is checked over the whole sequence);
    /// - a peek equals the check that follows it;
    /// - reopening (replay of the log and snapshot) gives back exactly the live state:
    ///   list, statuses, histories and top lists;
    /// - a twin limiter running the same sequence with no sweep, compaction or reopen
    ///   (so its keys are never dropped) makes exactly the same decisions: a key
    ///   dropped at full capacity decides as if it had never been dropped.
    #[test]
    fn template_keys_match_the_model_and_dropping_them_changes_no_decision(
        algorithms in (algorithm(), algorithm(), algorithm()),
        rates in (1u64..12, 1u64..12, 1u64..12),
        bursts in (1u64..20, 1u64..20),
        pers in (1u64..3_000, 1u64..3_000),
        ops in template_ops(),
    ) {
        let qt = template_quota(algorithms.0, rates.0, pers.0, bursts.0);
        let qa = template_quota(algorithms.1, rates.1, pers.1, bursts.1);
        let qown = quota(rates.2, pers.0, algorithms.2);
        let qc = quota(rates.2 + 1, pers.1, algorithms.2);
        let quota_of = |key: &str| match key {
            "t:own" => qown,
            "c" => qc,
            k if k.starts_with("t:a") => qa,
            _ => qt,
        };
        let clock = Arc::new(ManualClock::new(T0));
        let backend = flint_core::backend::MemoryBackend::new();
        let twin_backend = flint_core::backend::MemoryBackend::new();
        let mut live = Limiter::open("live", quiet_options(&clock, &backend)).unwrap();
        let twin = Limiter::open("twin", quiet_options(&clock, &twin_backend)).unwrap();
        for limiter in [&live, &twin] {
            limiter.limit("t:*", qt).unwrap();
            limiter.limit("t:a*", qa).unwrap();
            limiter.limit("t:own", qown).unwrap();
            limiter.limit("c", qc).unwrap();
        }
        let mut models: Vec<Model> = TEMPLATE_KEYS.iter().map(|k| Model::new(&quota_of(k))).collect();
        // Per key: (time, admitted minus given back, in tokens x per).
        let mut ledgers: Vec<Vec<(u64, i128)>> = vec![Vec::new(); TEMPLATE_KEYS.len()];
        let mut now = T0;
        for (i, op) in ops.iter().enumerate() {
            match *op {
                TOp::Advance(dt) => {
                    now += dt;
                    clock.set(now);
                }
                TOp::Check(k, cost) => {
                    let key = TEMPLATE_KEYS[k];
                    let cost = cost.min(quota_of(key).burst());
                    let peeked = live.peek(key, cost).unwrap();
                    let decided = live.check(key, cost).unwrap();
                    prop_assert_eq!(peeked, decided, "step {}: peek then check {} {}", i, key, cost);
                    prop_assert_eq!(twin.check(key, cost).unwrap(), decided, "step {}: twin {} {}", i, key, cost);
                    let model = &mut models[k];
                    prop_assert_eq!(decided.allowed, model.allows(now, cost), "step {}: {} {}", i, key, cost);
                    if decided.allowed {
                        model.admit(now, cost);
                        ledgers[k].push((now, i128::from(cost) * i128::from(quota_of(key).period().as_nanos())));
                    }
                    prop_assert_eq!(decided.remaining, model.remaining(now), "step {}: remaining of {}", i, key);
                }
                TOp::CheckAll(a, ca, b, cb) => {
                    let (ka, kb) = (TEMPLATE_KEYS[a], TEMPLATE_KEYS[b]);
                    let ca = ca.min(quota_of(ka).burst());
                    let cb = cb.min(quota_of(kb).burst());
                    let items: Vec<(&str, u64)> = if a == b { vec![(ka, ca)] } else { vec![(ka, ca), (kb, cb)] };
                    let decided = live.check_all(&items).unwrap();
                    prop_assert_eq!(&twin.check_all(&items).unwrap(), &decided, "step {}: twin check_all", i);
                    let expected = items.iter().all(|&(key, cost)| {
                        let k = TEMPLATE_KEYS.iter().position(|x| *x == key).unwrap();
                        models[k].allows(now, cost)
                    });
                    prop_assert_eq!(decided.allowed, expected, "step {}: check_all {:?}", i, items);
                    for &(key, cost) in &items {
                        let k = TEMPLATE_KEYS.iter().position(|x| *x == key).unwrap();
                        if expected {
                            models[k].admit(now, cost);
                            ledgers[k].push((now, i128::from(cost) * i128::from(quota_of(key).period().as_nanos())));
                        }
                        let remaining = live.status(key).unwrap().unwrap().remaining;
                        prop_assert_eq!(remaining, models[k].remaining(now), "step {}: remaining of {}", i, key);
                    }
                }
                TOp::Refund(k, cost) => {
                    let key = TEMPLATE_KEYS[k];
                    let cost = cost.min(quota_of(key).burst());
                    live.refund(key, cost).unwrap();
                    twin.refund(key, cost).unwrap();
                    let given = models[k].refund(now, cost);
                    let given = if quota_of(key).algorithm() == Algorithm::TokenBucket {
                        i128::try_from(given).unwrap()
                    } else {
                        i128::try_from(given).unwrap() * i128::from(quota_of(key).period().as_nanos())
                    };
                    ledgers[k].push((now, -given));
                    let remaining = live.status(key).unwrap().unwrap().remaining;
                    prop_assert_eq!(remaining, models[k].remaining(now), "step {}: refund of {}", i, key);
                }
                TOp::Sweep => {
                    let before = live.stats().unwrap().template_keys;
                    let dropped = live.sweep().unwrap();
                    prop_assert_eq!(live.stats().unwrap().template_keys, before - dropped);
                    // Every key made from a template that is left holds state.
                    for status in live.list_kind(None, flint_core::ListKind::Keys).unwrap() {
                        if status.template.is_some() {
                            prop_assert!(status.remaining < status.quota.burst(), "{} is full after a sweep", status.key);
                        }
                    }
                }
                TOp::Compact => {
                    live.compact().unwrap();
                    prop_assert!(live.list_kind(None, flint_core::ListKind::Keys).unwrap().iter()
                        .all(|s| s.template.is_none() || s.remaining < s.quota.burst()));
                }
                TOp::Reopen => {
                    let before = seen(&live);
                    live.close().unwrap();
                    live = Limiter::open("live", quiet_options(&clock, &backend)).unwrap();
                    prop_assert_eq!(&seen(&live), &before, "step {}: reopened", i);
                }
            }
        }
        // Both limiters see every key the same way (status aside from what the sweeps
        // moved into summaries: capacity and reset time).
        for key in TEMPLATE_KEYS {
            let (a, b) = (live.status(key).unwrap().unwrap(), twin.status(key).unwrap().unwrap());
            prop_assert_eq!((a.remaining, a.reset_at, a.quota), (b.remaining, b.reset_at, b.quota), "{}", key);
        }
        // The totals of the templates are the same: summaries keep dropped keys' counts.
        for template in ["t:*", "t:a*"] {
            prop_assert_eq!(live.status(template).unwrap().unwrap().counters, twin.status(template).unwrap().unwrap().counters);
        }
        // No window of any key admitted more than its limit allows (net of refunds).
        for (k, model) in models.iter().enumerate() {
            let q = quota_of(TEMPLATE_KEYS[k]);
            let per = q.period().as_nanos();
            let net = &model.admitted;
            match q.algorithm() {
                Algorithm::SlidingWindowLog => for &(start, _) in net {
                    let sum: u64 = net.iter().filter(|(at, _)| *at >= start && *at - start < per).map(|(_, c)| c).sum();
                    prop_assert!(sum <= q.rate(), "{}: {} in the window from {}", TEMPLATE_KEYS[k], sum, start - T0);
                },
                Algorithm::FixedWindowCounter => for &(start, _) in net {
                    let sum: u64 = net.iter().filter(|(at, _)| at / per == start / per).map(|(_, c)| c).sum();
                    prop_assert!(sum <= q.rate(), "{}: {} in the window of {}", TEMPLATE_KEYS[k], sum, start - T0);
                },
                // A full bucket plus what refills in between, exactly, in tokens x per.
                Algorithm::TokenBucket => {
                    let ledger = &ledgers[k];
                    for i in 0..ledger.len() {
                        let mut sum = 0i128;
                        for &(end, delta) in &ledger[i..] {
                            sum += delta;
                            let refill = i128::from(end - ledger[i].0) * i128::from(q.rate());
                            prop_assert!(sum <= i128::from(q.burst()) * i128::from(per) + refill, "{}", TEMPLATE_KEYS[k]);
                        }
                    }
                }
            }
        }
        let before = seen(&live);
        live.close().unwrap();
        let reopened = Limiter::open("live", quiet_options(&clock, &backend)).unwrap();
        prop_assert_eq!(&seen(&reopened), &before, "reopened at the end");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A shadow limit next to its enforced twin (the same quota), as a configured key
    /// and as a template with keys made from it, through the same checks, check-alls,
    /// refunds, time, sweeps and compactions: every shadow check is allowed, says
    /// `shadow_denied` exactly when the enforced twin denied, and shows the same
    /// remaining and reset time; the states stay equal (a shadow denial consumes
    /// nothing), `shadow_denied` counts the twin's denials, and all of it survives a
    /// reopen.
    #[test]
    fn a_shadow_limit_evolves_like_its_enforced_twin_and_allows_everything(
        algorithm in algorithm(),
        rate in 1u64..12,
        burst in 1u64..20,
        per_ms in 1u64..3_000,
        ops in template_ops(),
    ) {
        let enforced = template_quota(algorithm, rate, per_ms, burst);
        let shadow = enforced.with_mode(Mode::Shadow);
        let clock = Arc::new(ManualClock::new(T0));
        let backend = flint_core::backend::MemoryBackend::new();
        let mut live = Limiter::open("shadow", quiet_options(&clock, &backend)).unwrap();
        live.limit("e", enforced).unwrap();
        live.limit("s", shadow).unwrap();
        live.limit("e:*", enforced).unwrap();
        live.limit("s:*", shadow).unwrap();
        // Each pair: the enforced key and its shadow twin.
        let pairs = [("e", "s"), ("e:1", "s:1"), ("e:2", "s:2"), ("e:3", "s:3")];
        let pair = |k: usize| pairs[k % pairs.len()];
        let cap = enforced.burst();
        let mut denials = 0u64;
        let mut now = T0;
        for (i, op) in ops.iter().enumerate() {
            match *op {
                TOp::Advance(dt) => {
                    now += dt;
                    clock.set(now);
                }
                TOp::Check(k, cost) => {
                    let (e, s) = pair(k);
                    let cost = cost.min(cap);
                    let peeked = live.peek(s, cost).unwrap();
                    let de = live.check(e, cost).unwrap();
                    let ds = live.check(s, cost).unwrap();
                    prop_assert_eq!(peeked, ds, "step {}: peek of the shadow key", i);
                    prop_assert!(ds.allowed, "step {}: a shadow check is allowed", i);
                    prop_assert_eq!(ds.shadow_denied, !de.allowed, "step {}", i);
                    prop_assert!(!de.shadow_denied);
                    prop_assert_eq!((ds.remaining, ds.reset_at, ds.retry_after), (de.remaining, de.reset_at, 0), "step {}", i);
                    denials += u64::from(!de.allowed);
                }
                TOp::CheckAll(a, ca, _, _) => {
                    let (e, s) = pair(a);
                    let ca = ca.min(cap);
                    let de = live.check_all(&[(e, ca)]).unwrap();
                    let ds = live.check_all(&[(s, ca)]).unwrap();
                    prop_assert!(ds.allowed && ds.denied_key.is_none(), "step {}: {:?}", i, ds);
                    let (de, ds) = (de.results[0].decision, ds.results[0].decision);
                    prop_assert!(ds.allowed);
                    prop_assert_eq!(ds.shadow_denied, !de.allowed, "step {}", i);
                    prop_assert_eq!((ds.remaining, ds.reset_at), (de.remaining, de.reset_at), "step {}", i);
                    denials += u64::from(!de.allowed);
                }
                TOp::Refund(k, cost) => {
                    let (e, s) = pair(k);
                    let cost = cost.min(cap);
                    live.refund(e, cost).unwrap();
                    live.refund(s, cost).unwrap();
                }
                TOp::Sweep => {
                    live.sweep().unwrap();
                }
                TOp::Compact => {
                    live.compact().unwrap();
                }
                TOp::Reopen => {
                    live.close().unwrap();
                    live = Limiter::open("shadow", quiet_options(&clock, &backend)).unwrap();
                }
            }
            for (e, s) in pairs {
                let (se, ss) = (live.status(e).unwrap().unwrap(), live.status(s).unwrap().unwrap());
                prop_assert_eq!((se.remaining, se.reset_at), (ss.remaining, ss.reset_at), "step {}: {} and {}", i, e, s);
            }
        }
        // Every enforced denial is a shadow denial of the twin; the shadow side denied
        // nothing; what went through is the same.
        let counters = |limiter: &Limiter, keys: [&str; 2]| {
            let mut total = flint_core::Counters::default();
            for key in keys {
                total.add(&limiter.status(key).unwrap().unwrap().counters);
            }
            total
        };
        let ce = counters(&live, ["e", "e:*"]);
        let cs = counters(&live, ["s", "s:*"]);
        prop_assert_eq!(ce.denied, denials);
        prop_assert_eq!(cs.shadow_denied, denials);
        prop_assert_eq!(cs.denied, 0);
        prop_assert_eq!((cs.allowed, cs.allowed_cost), (ce.allowed, ce.allowed_cost));
        prop_assert_eq!(ce.shadow_denied, 0);
        let before = (live.list(None).unwrap(), live.top(flint_core::TopBy::ShadowDenied, 100).unwrap());
        live.close().unwrap();
        let reopened = Limiter::open("shadow", quiet_options(&clock, &backend)).unwrap();
        prop_assert_eq!((reopened.list(None).unwrap(), reopened.top(flint_core::TopBy::ShadowDenied, 100).unwrap()), before);
    }
}
