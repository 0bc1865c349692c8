//! Key templates and shadow limits through the public API: the matching rule, what
//! a template's changes do to its keys, dropping keys at full capacity, and what a
//! shadow limit lets through and counts. Every scenario is reopened from the same
//! directory and must read back identically (replay equals live state).

use std::sync::Arc;

use flint_core::backend::MemoryBackend;
use flint_core::{
    Algorithm, Error, Limiter, ListKind, ManualClock, Mode, Options, Quota, Status, SyncMode, TopBy,
};

const START: u64 = 1_700_000_000_000_000_000;
const SECOND: u64 = 1_000_000_000;

fn quota(rate: u64, per: &str) -> Quota {
    Quota::new(rate, per.parse().unwrap(), Algorithm::TokenBucket).unwrap()
}

struct Fixture {
    backend: MemoryBackend,
    clock: Arc<ManualClock>,
    limiter: Limiter,
}

impl Fixture {
    fn new() -> Fixture {
        let backend = MemoryBackend::new();
        let clock = Arc::new(ManualClock::new(START));
        let limiter = Limiter::open("memory", Self::options(&backend, &clock)).unwrap();
        Fixture {
            backend,
            clock,
            limiter,
        }
    }

    fn options(backend: &MemoryBackend, clock: &Arc<ManualClock>) -> Options {
        Options::default()
            .sync(SyncMode::Batch)
            .clock(clock.clone())
            .backend(Arc::new(backend.clone()))
    }

    /// Everything a user can read, for comparing live state with replayed state.
    fn view(limiter: &Limiter) -> (Vec<Status>, Vec<Status>, Vec<Status>) {
        (
            limiter.list(None).unwrap(),
            limiter.top(TopBy::Denied, 1000).unwrap(),
            limiter.top(TopBy::ShadowDenied, 1000).unwrap(),
        )
    }

    /// Closes, reopens from the same storage, and checks that nothing changed.
    fn reopen(self) -> Fixture {
        let before = Self::view(&self.limiter);
        self.limiter.close().unwrap();
        let limiter = Limiter::open("memory", Self::options(&self.backend, &self.clock)).unwrap();
        assert_eq!(Self::view(&limiter), before, "replay equals live state");
        Fixture { limiter, ..self }
    }
}

#[test]
fn a_template_covers_keys_by_their_longest_prefix_and_a_key_of_its_own_wins() {
    let f = Fixture::new();
    let l = &f.limiter;
    l.limit("ip:*", quota(3, "1m")).unwrap();
    l.limit("ip:10.*", quota(5, "1m")).unwrap();
    l.limit("ip:10.0.0.1", quota(1, "1m")).unwrap();
    assert_eq!(l.check("ip:203.0.113.9", 1).unwrap().remaining, 2);
    assert_eq!(l.check("ip:10.9.9.9", 1).unwrap().remaining, 4);
    assert_eq!(l.check("ip:10.0.0.1", 1).unwrap().remaining, 0);
    let status = l.status("ip:10.9.9.9").unwrap().unwrap();
    assert_eq!(status.template.as_deref(), Some("ip:10.*"));
    assert_eq!(l.status("ip:10.0.0.1").unwrap().unwrap().template, None);
    // No template covers it, and `*` inside a key is an ordinary character.
    assert!(matches!(
        l.check("user:1", 1),
        Err(Error::LimitNotFound { .. })
    ));
    l.limit("a*b", quota(1, "1m")).unwrap();
    assert!(matches!(
        l.check("a-b", 1),
        Err(Error::LimitNotFound { .. })
    ));
    assert!(l.check("a*b", 1).unwrap().allowed);
    // A template is not a key to check.
    let Err(Error::InvalidArgument { message, .. }) = l.check("ip:*", 1) else {
        panic!("checking a template must be refused");
    };
    assert!(
        message.contains("\"ip:*\"") && message.contains("template"),
        "{message}"
    );
    assert!(l.peek("ip:10.*", 1).is_err() && l.refund("ip:*", 1).is_err());
    assert!(l.check_all(&[("ip:1", 1), ("ip:*", 1)]).is_err());
    f.reopen();
}

#[test]
fn a_covered_key_without_state_reads_as_full_and_costs_nothing_to_inspect() {
    let f = Fixture::new();
    let l = &f.limiter;
    l.limit("ip:*", quota(10, "1m")).unwrap();
    let status = l.status("ip:192.0.2.1").unwrap().unwrap();
    assert_eq!(
        (
            status.remaining,
            status.last_seen,
            status.template.as_deref()
        ),
        (10, None, Some("ip:*"))
    );
    assert!(l.history("ip:192.0.2.1", 10).unwrap().is_empty());
    let peek = l.peek("ip:192.0.2.1", 4).unwrap();
    assert!(peek.allowed && peek.remaining == 6);
    // Nothing to reset, refund or remove: no error, and no entry appears.
    l.reset("ip:192.0.2.1").unwrap();
    l.refund("ip:192.0.2.1", 1).unwrap();
    l.remove("ip:192.0.2.1").unwrap();
    assert_eq!(l.list(None).unwrap().len(), 1, "only the template");
    assert_eq!(l.stats().unwrap().template_keys, 0);
}

#[test]
fn list_filters_templates_and_keys() {
    let f = Fixture::new();
    let l = &f.limiter;
    l.limit("ip:*", quota(10, "1m")).unwrap();
    l.limit("api:user-42", quota(10, "1m")).unwrap();
    l.check("ip:1", 1).unwrap();
    let keys = |kind| {
        l.list_kind(None, kind)
            .unwrap()
            .into_iter()
            .map(|s| s.key)
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(ListKind::Templates), ["ip:*"]);
    assert_eq!(keys(ListKind::Keys), ["api:user-42", "ip:1"]);
    assert_eq!(keys(ListKind::All), ["api:user-42", "ip:*", "ip:1"]);
    assert_eq!(
        "templates".parse::<ListKind>().unwrap(),
        ListKind::Templates
    );
    assert!("tmpl".parse::<ListKind>().is_err());
}

#[test]
fn a_template_change_reaches_its_live_keys_and_remove_takes_them_away() {
    let f = Fixture::new();
    let l = &f.limiter;
    l.limit("t:*", quota(10, "1h")).unwrap();
    l.check("t:a", 4).unwrap();
    l.check("t:ab", 2).unwrap();
    // Reconfigured: consumed units carry over, as for any key.
    l.limit("t:*", quota(20, "1h")).unwrap();
    assert_eq!(l.status("t:a").unwrap().unwrap().remaining, 16);
    // A longer template takes over the keys it now covers, with their state.
    l.limit("t:a*", quota(5, "1h")).unwrap();
    let moved = l.status("t:ab").unwrap().unwrap();
    assert_eq!(
        (moved.template.as_deref(), moved.remaining),
        (Some("t:a*"), 3)
    );
    // A key given a limit of its own leaves its template.
    l.limit("t:a", quota(10, "1h")).unwrap();
    assert_eq!(l.status("t:a").unwrap().unwrap().template, None);
    // Reset of a template resets its keys.
    l.reset("t:a*").unwrap();
    assert_eq!(l.status("t:ab").unwrap().unwrap().remaining, 5);
    l.check("t:ab", 1).unwrap();
    let f = f.reopen();
    let l = &f.limiter;
    // Removing a template removes its keys, and their ids are used again.
    l.remove("t:a*").unwrap();
    assert_eq!(
        l.status("t:ab").unwrap().unwrap().template.as_deref(),
        Some("t:*"),
        "covered by the shorter template again, at full capacity"
    );
    assert_eq!(l.status("t:ab").unwrap().unwrap().remaining, 20);
    assert_eq!(l.stats().unwrap().templates, 1);
    f.reopen();
}

#[test]
fn keys_back_at_full_capacity_are_dropped_and_decide_as_if_they_never_were() {
    let f = Fixture::new();
    let l = &f.limiter;
    l.limit("ip:*", quota(2, "1s")).unwrap();
    for n in 0..1000 {
        l.check(&format!("ip:{n}"), 1).unwrap();
    }
    // The noisy client: allowed once more, then denied four times.
    for _ in 0..5 {
        l.check("ip:7", 1).unwrap();
    }
    assert_eq!(l.stats().unwrap().template_keys, 1000);
    assert_eq!(l.sweep().unwrap(), 0, "no key is full yet");
    f.clock.advance(SECOND);
    // A twin that is never swept decides the same afterwards.
    let twin_dir = MemoryBackend::new();
    let twin = Limiter::open("memory", Fixture::options(&twin_dir, &f.clock)).unwrap();
    twin.limit("ip:*", quota(2, "1s")).unwrap();
    twin.check("ip:7", 2).unwrap();
    f.clock.advance(SECOND);
    // The background flusher sweeps too: whichever ran first dropped them all.
    l.sweep().unwrap();
    assert_eq!(l.stats().unwrap().template_keys, 0);
    let doctor = l.doctor().unwrap();
    assert_eq!(doctor.templates[0].live_keys, 0);
    assert_eq!(l.list_kind(None, ListKind::Keys).unwrap().len(), 0);
    // top() still names the client denied most, from the template's summary.
    let top = l.top(TopBy::Denied, 1).unwrap();
    assert_eq!(top[0].key, "ip:7");
    assert_eq!(top[0].counters.denied, 4);
    assert_eq!(top[0].template.as_deref(), Some("ip:*"));
    // The template's own counters sum every decision of its keys.
    let template = l.status("ip:*").unwrap().unwrap();
    assert_eq!(
        (template.counters.allowed, template.counters.denied),
        (1001, 4)
    );
    for _ in 0..3 {
        let dropped = l.check("ip:7", 1).unwrap();
        let kept = twin.check("ip:7", 1).unwrap();
        assert_eq!(dropped, kept);
    }
    // Checked again, the key's counters add to what the summary remembers.
    assert_eq!(l.top(TopBy::Denied, 1).unwrap()[0].counters.denied, 5);
    let f = f.reopen();
    f.limiter.compact().unwrap();
    f.reopen();
}

#[test]
fn compaction_drops_full_keys_so_the_snapshot_holds_only_keys_with_state() {
    let f = Fixture::new();
    let l = &f.limiter;
    l.limit("ip:*", quota(5, "1s")).unwrap();
    for n in 0..500 {
        l.check(&format!("ip:{n}"), 1).unwrap();
    }
    let busy = l.compact().unwrap();
    assert_eq!(busy.keys, 501);
    f.clock.advance(2 * SECOND);
    l.check("ip:still-busy", 1).unwrap();
    let idle = l.compact().unwrap();
    assert_eq!(idle.keys, 2, "the template and the one key with state");
    assert!(idle.snapshot_bytes * 10 < busy.snapshot_bytes);
    f.reopen();
}

#[test]
fn a_shadow_limit_lets_everything_through_and_counts_what_it_would_deny() {
    let f = Fixture::new();
    let l = &f.limiter;
    let shadow = quota(2, "1h").with_mode(Mode::Shadow);
    l.limit("k", shadow).unwrap();
    let results: Vec<_> = (0..4).map(|_| l.check("k", 1).unwrap()).collect();
    assert!(results.iter().all(|r| r.allowed));
    assert_eq!(
        results.iter().map(|r| r.shadow_denied).collect::<Vec<_>>(),
        [false, false, true, true]
    );
    assert_eq!(results[3].remaining, 0);
    assert_eq!(
        results[3].retry_after, 0,
        "let through: nothing to wait for"
    );
    let status = l.status("k").unwrap().unwrap();
    assert_eq!(
        (
            status.counters.allowed,
            status.counters.denied,
            status.counters.shadow_denied
        ),
        (2, 0, 2)
    );
    let history = l.history("k", 10).unwrap();
    assert!(history[3].allowed && history[3].shadow_denied);
    assert!(!history[1].shadow_denied);
    assert_eq!(l.top(TopBy::ShadowDenied, 5).unwrap()[0].key, "k");
    // Peek answers what check would.
    assert!(l.peek("k", 1).unwrap().shadow_denied);
    // Enforced now, with the same state: the next check is denied at once.
    let f = f.reopen();
    let l = &f.limiter;
    l.limit("k", quota(2, "1h")).unwrap();
    let enforced = l.check("k", 1).unwrap();
    assert!(!enforced.allowed && !enforced.shadow_denied);
    f.reopen();
}

#[test]
fn a_shadow_limit_in_a_check_all_neither_blocks_nor_consumes_when_it_lacks_room() {
    let f = Fixture::new();
    let l = &f.limiter;
    l.limit("org", quota(1, "1h").with_mode(Mode::Shadow))
        .unwrap();
    l.limit("user", quota(10, "1h")).unwrap();
    l.check("org", 1).unwrap();
    let through = l.check_all(&[("user", 1), ("org", 1)]).unwrap();
    assert!(through.allowed && through.denied_key.is_none());
    assert!(through.results[1].decision.allowed && through.results[1].decision.shadow_denied);
    assert!(!through.results[0].decision.shadow_denied);
    assert_eq!(l.status("user").unwrap().unwrap().remaining, 9);
    assert_eq!(l.status("org").unwrap().unwrap().counters.shadow_denied, 1);
    // An enforced key that lacks room denies the call; the shadow key is not blamed.
    l.limit("tight", quota(1, "1h")).unwrap();
    l.check("tight", 1).unwrap();
    let denied = l
        .check_all(&[("org", 1), ("tight", 1), ("user", 1)])
        .unwrap();
    assert!(!denied.allowed);
    assert_eq!(denied.denied_key.as_deref(), Some("tight"));
    assert!(denied.results.iter().all(|r| !r.decision.allowed));
    assert!(denied.results[0].decision.shadow_denied);
    assert!(!denied.results[2].decision.shadow_denied);
    assert_eq!(l.status("user").unwrap().unwrap().remaining, 9);
    f.reopen();
}

#[test]
fn mode_names_parse_and_a_bad_one_names_the_fix() {
    assert_eq!("shadow".parse::<Mode>().unwrap(), Mode::Shadow);
    assert_eq!("enforce".parse::<Mode>().unwrap(), Mode::Enforce);
    let message = "dry-run".parse::<Mode>().unwrap_err().to_string();
    assert!(
        message.contains("dry-run") && message.contains("shadow"),
        "{message}"
    );
}

#[test]
fn a_shadow_denial_of_the_largest_cost_compacts_into_a_snapshot_that_opens() {
    let f = Fixture::new();
    let l = &f.limiter;
    let huge = Quota::new(
        flint_core::MAX_RATE,
        "1000s".parse().unwrap(),
        Algorithm::TokenBucket,
    )
    .unwrap()
    .with_mode(Mode::Shadow);
    l.limit("big", huge).unwrap();
    assert!(l.check("big", flint_core::MAX_RATE).unwrap().allowed);
    f.clock.advance(1);
    assert!(l.check("big", flint_core::MAX_RATE).unwrap().shadow_denied);
    l.compact().unwrap();
    f.reopen();
}

#[test]
fn top_names_a_key_that_two_templates_remember_once() {
    let f = Fixture::new();
    let l = &f.limiter;
    l.limit("ip:*", quota(1, "1s")).unwrap();
    for _ in 0..2 {
        l.check("ip:10.1", 1).unwrap();
    }
    f.clock.advance(2 * SECOND);
    l.sweep().unwrap();
    // A longer template takes over the key, which is denied and dropped again.
    l.limit("ip:10.*", quota(1, "1s")).unwrap();
    for _ in 0..2 {
        l.check("ip:10.1", 1).unwrap();
    }
    f.clock.advance(2 * SECOND);
    l.sweep().unwrap();
    let top = l.top(TopBy::Denied, 10).unwrap();
    assert_eq!(top.len(), 1, "{top:?}");
    assert_eq!(
        (
            top[0].key.as_str(),
            top[0].template.as_deref(),
            top[0].counters.denied
        ),
        ("ip:10.1", Some("ip:10.*"), 2)
    );
    f.reopen();
}

#[test]
fn a_shadow_key_in_a_denied_check_all_is_remembered_as_not_let_through() {
    let f = Fixture::new();
    let l = &f.limiter;
    l.limit("enf", quota(1, "1h")).unwrap();
    l.limit("sh", quota(1, "1h").with_mode(Mode::Shadow))
        .unwrap();
    l.check("enf", 1).unwrap();
    l.check("sh", 1).unwrap();
    let denied = l.check_all(&[("enf", 1), ("sh", 1)]).unwrap();
    assert!(!denied.allowed && denied.results[1].decision.shadow_denied);
    let last = *l.history("sh", 1).unwrap().last().unwrap();
    assert!(!last.allowed && last.shadow_denied);
    assert_eq!(l.status("sh").unwrap().unwrap().counters.shadow_denied, 1);
    l.compact().unwrap();
    f.reopen();
}
