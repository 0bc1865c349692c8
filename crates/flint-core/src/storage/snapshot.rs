//! The snapshot: the whole registry at one log position, written by compaction.

use std::collections::VecDeque;

use crate::algorithm::{
    Algorithm, FixedWindow, LimitState, Mode, Quota, Run, SlidingLog, TokenBucket,
};
use crate::clock::{UnixNanos, MAX_TIME};
use crate::duration::Period;
use crate::registry::{Counters, Entry, HistoryEvent, Registry};
use crate::storage::codec::{Cursor, DecodeError, DecodeReason};
use crate::storage::format::{
    history_flags, snapshot_version_for, LOG_HEADER_LEN, MAX_KEY_LEN, SNAPSHOT_MAGIC,
    SNAPSHOT_VERSION,
};
use crate::templates::{is_template, TopKey, TopKeys, TOP_KEYS_PER_TEMPLATE};

/// The template id of a key that was not made from a template (version 4).
const NO_TEMPLATE: u32 = u32::MAX;
use crate::MAX_RATE;

/// The log position a snapshot covers: every record of log `generation` before
/// byte `offset` is included in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Covers {
    /// Generation of the log the snapshot was taken from.
    pub generation: u64,
    /// Offset in that log just after the last record included.
    pub offset: u64,
}

/// Serialises `registry` as a snapshot covering `covers`, in the oldest version that
/// holds it (see [`snapshot_version_for`]).
pub fn encode(registry: &Registry, covers: Covers) -> Vec<u8> {
    let bursts = registry.iter().any(|(_, e)| e.quota.has_burst());
    let newer = registry.template_count() > 0
        || registry
            .iter()
            .any(|(_, e)| e.quota.mode() != Mode::Enforce || e.counters.shadow_denied > 0);
    let version = snapshot_version_for(bursts, newer);
    let with_bursts = version >= 3;
    let mut out = Vec::with_capacity(64 + registry.len() * 96);
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&covers.generation.to_le_bytes());
    out.extend_from_slice(&covers.offset.to_le_bytes());
    out.extend_from_slice(&registry.high_water.to_le_bytes());
    out.extend_from_slice(&registry.id_bound().to_le_bytes());
    out.extend_from_slice(&(registry.len() as u64).to_le_bytes());
    for (id, entry) in registry.iter() {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&(entry.key.len() as u16).to_le_bytes());
        out.extend_from_slice(entry.key.as_bytes());
        out.extend_from_slice(&entry.quota.rate().to_le_bytes());
        out.extend_from_slice(&entry.quota.period().as_millis().to_le_bytes());
        out.push(entry.quota.algorithm() as u8);
        if with_bursts {
            out.extend_from_slice(&entry.quota.burst().to_le_bytes());
        }
        if version >= 4 {
            out.push(entry.quota.mode() as u8);
            out.extend_from_slice(&entry.template.unwrap_or(NO_TEMPLATE).to_le_bytes());
        }
        let c = entry.counters;
        for n in [
            c.allowed,
            c.denied,
            c.allowed_cost,
            c.denied_cost,
            entry.last_seen,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        if version >= 4 {
            out.extend_from_slice(&c.shadow_denied.to_le_bytes());
        }
        match &entry.state {
            LimitState::TokenBucket(s) => out.extend_from_slice(&s.tat.to_le_bytes()),
            LimitState::FixedWindowCounter(s) => {
                out.extend_from_slice(&s.start.to_le_bytes());
                out.extend_from_slice(&s.used.to_le_bytes());
            }
            LimitState::SlidingWindowLog(s) => {
                out.extend_from_slice(&s.expired_total.to_le_bytes());
                out.extend_from_slice(&(s.runs.len() as u32).to_le_bytes());
                for run in &s.runs {
                    out.extend_from_slice(&run.at.to_le_bytes());
                    out.extend_from_slice(&run.total.to_le_bytes());
                }
            }
        }
        let history = entry.history.as_deref();
        out.extend_from_slice(&(history.map_or(0, VecDeque::len) as u32).to_le_bytes());
        for h in history.into_iter().flatten() {
            out.extend_from_slice(&h.at.to_le_bytes());
            out.extend_from_slice(&h.cost.to_le_bytes());
            out.extend_from_slice(&h.remaining.to_le_bytes());
            let mut flags = 0;
            if h.allowed {
                flags |= history_flags::ALLOWED;
            }
            if h.blocked_by_other {
                flags |= history_flags::BLOCKED_BY_OTHER;
            }
            if h.shadow_denied {
                flags |= history_flags::SHADOW_DENIED;
            }
            out.push(flags);
        }
    }
    if version >= 4 {
        let summaries: Vec<(u32, &[TopKey])> = registry
            .iter()
            .filter(|(_, e)| e.is_template())
            .filter_map(|(id, _)| Some((id, registry.template_state(id)?.top.items())))
            .filter(|(_, items)| !items.is_empty())
            .collect();
        out.extend_from_slice(&(summaries.len() as u32).to_le_bytes());
        for (id, items) in summaries {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&(items.len() as u32).to_le_bytes());
            for item in items {
                out.extend_from_slice(&(item.key.len() as u16).to_le_bytes());
                out.extend_from_slice(item.key.as_bytes());
                let c = item.counters;
                for n in [
                    c.allowed,
                    c.denied,
                    c.allowed_cost,
                    c.denied_cost,
                    c.shadow_denied,
                    item.overcount,
                ] {
                    out.extend_from_slice(&n.to_le_bytes());
                }
            }
        }
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads a snapshot into a registry keeping `history_capacity` decisions per key.
/// Error offsets are offsets in the snapshot file.
pub fn decode(bytes: &[u8], history_capacity: usize) -> Result<(Registry, Covers), DecodeError> {
    let mut r = Cursor::new(bytes, 0);
    if r.take(8, "magic").ok() != Some(&SNAPSHOT_MAGIC[..]) {
        return Err(DecodeError::new(
            0,
            DecodeReason::BadMagic {
                expected: "FLINTSNP",
            },
        ));
    }
    let version_at = r.offset();
    let version = r.u32("format version")?;
    if !(1..=SNAPSHOT_VERSION).contains(&version) {
        return Err(DecodeError::new(
            version_at,
            DecodeReason::UnsupportedVersion {
                found: version,
                supported: SNAPSHOT_VERSION,
            },
        ));
    }
    let truncated = DecodeError::new(0, DecodeReason::Truncated { field: "snapshot" });
    let body_len = bytes.len().checked_sub(4).ok_or(truncated.clone())?;
    let (body, crc) = bytes.split_at_checked(body_len).ok_or(truncated)?;
    // The checksum covers everything before it: report the damage at its start.
    if crc32c::crc32c(body) != Cursor::new(crc, body_len as u64).u32("snapshot checksum")? {
        return Err(DecodeError::new(
            0,
            DecodeReason::ChecksumMismatch { what: "snapshot" },
        ));
    }
    let mut r = Cursor::new(body, 0);
    r.seek(16);
    let covers = Covers {
        generation: r.u64("covered log generation")?,
        offset: r.u64("covered log offset")?,
    };
    // Every check below is an invariant of the state the engine writes: the bytes
    // passed their checksum, so a failure means they were edited (or written by a
    // broken build), and loading them would give a key impossible quota or counts.
    if covers.offset < LOG_HEADER_LEN {
        return Err(inconsistent(
            24,
            format!(
                "it covers the log up to offset {}, inside the log's header",
                covers.offset
            ),
        ));
    }
    let mut registry = Registry::new(history_capacity);
    let high_water_at = r.offset();
    let high_water = r.u64("high-water time")?;
    if high_water > MAX_TIME {
        return Err(inconsistent(
            high_water_at,
            format!("its latest time {high_water} is after MAX_TIME ({MAX_TIME})"),
        ));
    }
    registry.high_water = high_water;
    let next_id_at = r.offset();
    let next_id = r.u32("next key id")?;
    // One slot per id ever given (removed keys' too), as live: a claim this process
    // cannot allocate is refused rather than aborting it.
    registry.try_reserve_ids(next_id).map_err(|e| {
        DecodeError::bad_value(
            next_id_at,
            "next key id",
            format!("{next_id} key ids need more memory than can be allocated ({e})"),
        )
    })?;
    let count = r.u64("key count")?;
    for _ in 0..count {
        let entry_at = r.offset();
        let id = r.u32("key id")?;
        let key_at = r.offset();
        let key = r.str16("key", MAX_KEY_LEN)?;
        if key.is_empty() {
            return Err(inconsistent(key_at, "a key is empty".into()));
        }
        let rate_at = r.offset();
        let rate = r.u64("rate")?;
        let per_at = r.offset();
        let per_ms = r.u64("period")?;
        let code_at = r.offset();
        let code = r.u8("algorithm code")?;
        let algorithm = Algorithm::from_code(code)
            .ok_or_else(|| Cursor::error_at(code_at, DecodeReason::UnknownAlgorithm(code)))?;
        let period =
            Period::from_millis(per_ms).map_err(|e| DecodeError::bad_value(per_at, "period", e))?;
        let mut quota = Quota::new(rate, period, algorithm)
            .map_err(|e| DecodeError::bad_value(rate_at, "rate", e))?;
        // Version 3 holds every key's burst (its rate when it has none).
        if version >= 3 {
            let burst_at = r.offset();
            let burst = r.u64("burst")?;
            quota = quota
                .with_burst(burst)
                .map_err(|e| DecodeError::bad_value(burst_at, "burst", e))?;
        }
        // Version 4 holds its mode and the template it was made from.
        let mut template = None;
        if version >= 4 {
            let mode_at = r.offset();
            let code = r.u8("mode code")?;
            let mode = Mode::from_code(code).ok_or_else(|| {
                DecodeError::bad_value(mode_at, "mode code", format!("unknown mode {code}"))
            })?;
            quota = quota.with_mode(mode);
            let template_at = r.offset();
            let id = r.u32("template id")?;
            if id != NO_TEMPLATE {
                if is_template(key) {
                    return Err(inconsistent(
                        template_at,
                        format!("template {key:?} is made from another template"),
                    ));
                }
                template = Some(id);
            }
        }
        let counters_at = r.offset();
        let mut counters = Counters {
            allowed: r.u64("allowed count")?,
            denied: r.u64("denied count")?,
            allowed_cost: r.u64("allowed cost")?,
            denied_cost: r.u64("denied cost")?,
            shadow_denied: 0,
        };
        // Every cost is at least 1 (and the sums saturate together with the counts).
        if counters.allowed_cost < counters.allowed {
            return Err(inconsistent(
                counters_at + 16,
                format!(
                    "key {key:?} has {} allowed checks but only {} units allowed",
                    counters.allowed, counters.allowed_cost
                ),
            ));
        }
        if counters.denied_cost < counters.denied {
            return Err(inconsistent(
                counters_at + 24,
                format!(
                    "key {key:?} has {} denied checks but only {} units denied",
                    counters.denied, counters.denied_cost
                ),
            ));
        }
        let last_seen_at = r.offset();
        let last_seen = r.u64("last seen time")?;
        if version >= 4 {
            counters.shadow_denied = r.u64("shadow denied count")?;
        }
        if last_seen > high_water {
            return Err(inconsistent(
                last_seen_at,
                format!(
                    "key {key:?} was last seen at {last_seen}, after the latest time {high_water}"
                ),
            ));
        }
        let state = decode_state(&mut r, key, &quota, high_water)?;
        let history = decode_history(
            &mut r,
            key,
            version,
            history_capacity,
            high_water,
            last_seen,
        )?;
        // Idle keys keep no history allocation, as live.
        let history = (!history.is_empty()).then(|| Box::new(history));
        if id >= next_id
            || id == NO_TEMPLATE
            || registry.get(id).is_some()
            || registry.lookup(key).is_some()
        {
            return Err(inconsistent(
                entry_at,
                format!(
                    "key {key:?} or its id {id} appears twice, or the id is not below the next id {next_id}"
                ),
            ));
        }
        registry.insert_entry(
            id,
            Entry {
                key: key.into(),
                quota,
                state,
                counters,
                last_seen,
                history,
                template,
            },
        );
    }
    if version >= 4 {
        let count_at = r.offset();
        let count = r.count("summary count", 8)?;
        for _ in 0..count {
            let id_at = r.offset();
            let id = r.u32("template id")?;
            let items_len = r.count("summary length", 50)?;
            if items_len > TOP_KEYS_PER_TEMPLATE || registry.template_state(id).is_some() {
                return Err(inconsistent(
                    id_at,
                    format!("the summary of template id {id} appears twice or holds {items_len} keys, more than {TOP_KEYS_PER_TEMPLATE}"),
                ));
            }
            let mut items = Vec::with_capacity(items_len);
            for _ in 0..items_len {
                let key = r.str16("summary key", MAX_KEY_LEN)?.into();
                let counters = Counters {
                    allowed: r.u64("allowed count")?,
                    denied: r.u64("denied count")?,
                    allowed_cost: r.u64("allowed cost")?,
                    denied_cost: r.u64("denied cost")?,
                    shadow_denied: r.u64("shadow denied count")?,
                };
                let overcount = r.u64("overcount")?;
                items.push(TopKey {
                    key,
                    counters,
                    overcount,
                });
            }
            registry.set_top_keys(id, TopKeys::from_items(items));
        }
        let _ = count_at;
    }
    r.finish()?;
    registry
        .finish_load(next_id)
        .map_err(|why| inconsistent(next_id_at, why))?;
    Ok((registry, covers))
}

fn inconsistent(offset: u64, why: String) -> DecodeError {
    DecodeError::new(offset, DecodeReason::Inconsistent(why))
}

/// Reads and checks one key's algorithm state: within its quota as of the latest time
/// (`high_water`).
fn decode_state(
    r: &mut Cursor<'_>,
    key: &str,
    quota: &Quota,
    high_water: UnixNanos,
) -> Result<LimitState, DecodeError> {
    let state_at = r.offset();
    Ok(match quota.algorithm() {
        Algorithm::TokenBucket => {
            let bucket = TokenBucket {
                tat: r.u128("token bucket state")?,
            };
            // A consumption never takes the bucket more than its capacity ahead of its
            // time, and a reconfiguration starts from a full bucket.
            if !bucket.within(quota, high_water) {
                return Err(inconsistent(
                    state_at,
                    format!("token bucket {key:?} has consumed more than its capacity ahead of the latest time"),
                ));
            }
            LimitState::TokenBucket(bucket)
        }
        Algorithm::FixedWindowCounter => {
            let window = FixedWindow {
                start: r.u64("window start")?,
                used: r.u64("window use")?,
            };
            if window.start > high_water || !window.start.is_multiple_of(quota.per_ns()) {
                return Err(inconsistent(
                    state_at,
                    format!(
                        "fixed window {key:?} starts at {}, not a multiple of its period at or before the latest time",
                        window.start
                    ),
                ));
            }
            // A reconfiguration carries over at most the new rate.
            if window.used > quota.rate() {
                return Err(inconsistent(
                    state_at + 8,
                    format!(
                        "fixed window {key:?} has used {} units of its rate {}",
                        window.used,
                        quota.rate()
                    ),
                ));
            }
            LimitState::FixedWindowCounter(window)
        }
        Algorithm::SlidingWindowLog => {
            let expired_total = r.u64("expired total")?;
            let runs_len = r.count("run count", 16)?;
            let mut runs = VecDeque::with_capacity(runs_len);
            let mut previous: Option<UnixNanos> = None;
            let mut total = expired_total;
            let mut kept: u64 = 0;
            for _ in 0..runs_len {
                let at_offset = r.offset();
                let at = r.u64("run time")?;
                let total_offset = r.offset();
                let run_total = r.u64("run total")?;
                // Runs are appended in time order, one per distinct time, never after
                // the latest time.
                if at > high_water || previous.is_some_and(|p| p >= at) {
                    return Err(inconsistent(
                        at_offset,
                        format!("sliding window {key:?} has a run at {at} out of time order"),
                    ));
                }
                // Totals wrap (see the algorithm): only differences count. Each run
                // adds at least one unit; the runs kept were all inside the window at
                // the last consumption, so they sum to at most the rate then, which
                // is at most MAX_RATE (not the current rate: a reconfiguration to a
                // lower rate keeps them).
                let added = run_total.wrapping_sub(total);
                kept = kept.saturating_add(added);
                if added == 0 || kept > MAX_RATE {
                    return Err(inconsistent(
                        total_offset,
                        format!(
                            "sliding window {key:?} has runs whose totals are not consistent (a run adds {added} units, the runs sum to {kept})"
                        ),
                    ));
                }
                previous = Some(at);
                total = run_total;
                runs.push_back(Run {
                    at,
                    total: run_total,
                });
            }
            LimitState::SlidingWindowLog(Box::new(SlidingLog {
                runs,
                expired_total,
            }))
        }
    })
}

/// Reads and checks one key's history, keeping its last `capacity` decisions.
fn decode_history(
    r: &mut Cursor<'_>,
    key: &str,
    version: u32,
    capacity: usize,
    high_water: UnixNanos,
    last_seen: UnixNanos,
) -> Result<VecDeque<HistoryEvent>, DecodeError> {
    let history_len = r.count("history length", 25)?;
    let mut events = VecDeque::with_capacity(history_len.min(capacity));
    let mut previous = 0;
    for n in 0..history_len {
        let at_offset = r.offset();
        let at = r.u64("history time")?;
        let cost_offset = r.offset();
        let cost = r.u64("history cost")?;
        let remaining_offset = r.offset();
        let remaining = r.u64("history remaining")?;
        let flags_at = r.offset();
        let flags = r.u8("history flags")?;
        // Version 1 wrote 0 or 1 (allowed); version 2 adds "blocked by another key";
        // version 4 "shadow denied".
        let known = match version {
            1 => history_flags::ALLOWED,
            2 | 3 => history_flags::ALLOWED | history_flags::BLOCKED_BY_OTHER,
            _ => {
                history_flags::ALLOWED
                    | history_flags::BLOCKED_BY_OTHER
                    | history_flags::SHADOW_DENIED
            }
        };
        if flags & !known != 0 {
            return Err(DecodeError::bad_value(
                flags_at,
                "history flags",
                format!("unknown flags {flags:#04x}"),
            ));
        }
        let event = HistoryEvent {
            at,
            cost,
            remaining,
            allowed: flags & history_flags::ALLOWED != 0,
            blocked_by_other: flags & history_flags::BLOCKED_BY_OTHER != 0,
            shadow_denied: flags & history_flags::SHADOW_DENIED != 0,
        };
        // Decisions are remembered in time order; the newest is when the key was last
        // seen.
        let last = n + 1 == history_len;
        if at < previous || at > high_water || (last && at != last_seen) {
            return Err(inconsistent(
                at_offset,
                format!("key {key:?} remembers a decision at {at}, out of time order or after it was last seen"),
            ));
        }
        previous = at;
        // Costs and what remained are bounded by the rate at the time, which a later
        // reconfiguration may have lowered: only MAX_RATE bounds them now.
        if cost == 0 || cost > MAX_RATE {
            return Err(inconsistent(
                cost_offset,
                format!("key {key:?} remembers a decision of {cost} units"),
            ));
        }
        // A shadow denial let through consumed nothing: what remained was below its cost.
        let consumed = event.allowed && !event.shadow_denied;
        if remaining > MAX_RATE || (consumed && remaining + cost > MAX_RATE) {
            return Err(inconsistent(
                remaining_offset,
                format!(
                    "key {key:?} remembers {remaining} units remaining after a decision of {cost}"
                ),
            ));
        }
        if event.allowed && event.blocked_by_other {
            return Err(inconsistent(
                flags_at,
                format!("key {key:?} remembers a decision both allowed and blocked by another key"),
            ));
        }
        if events.len() == capacity {
            events.pop_front();
        }
        if capacity > 0 {
            events.push_back(event);
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Registry {
        let mut registry = Registry::new(4);
        let t0 = 1_700_000_000_000_000_000;
        for (id, algorithm) in Algorithm::ALL.into_iter().enumerate() {
            let quota = Quota::new(10, "1s".parse().unwrap(), algorithm).unwrap();
            registry.apply_configure(id as u32, &format!("k{id}"), quota, t0);
            for i in 0..6 {
                registry.apply_check(id as u32, t0 + i, 2, i < 5, None);
            }
        }
        registry.apply_check_all_item(0, t0 + 7, 1, false, false, None);
        registry.apply_check_all_item(2, t0 + 7, 9, false, true, None);
        registry.apply_remove(1, t0 + 10);
        registry
    }

    #[test]
    fn round_trips_every_algorithm() {
        let registry = sample();
        let covers = Covers {
            generation: 3,
            offset: 999,
        };
        let (decoded, got) = decode(&encode(&registry, covers), 4).unwrap();
        assert_eq!(got, covers);
        assert_eq!(decoded, registry);
        assert_eq!(decoded.id_bound(), 3);
        // The removed key's id is free again, and the lowest.
        assert_eq!(decoded.next_id(), 1);
        assert_eq!(decoded.lookup("k2"), Some(2));
        assert_eq!(decoded.lookup("k1"), None);
    }

    #[test]
    fn history_flags_say_allowed_and_blocked_by_another_key() {
        let registry = sample();
        let history = registry.get(0).unwrap().history.as_deref().unwrap();
        let last = history.back().unwrap();
        assert!(!last.allowed && last.blocked_by_other);
        let bytes = encode(
            &registry,
            Covers {
                generation: 0,
                offset: 32,
            },
        );
        // The last byte of key 0's history is that entry's flags.
        let (decoded, _) = decode(&bytes, 4).unwrap();
        assert_eq!(
            decoded.get(0).unwrap().history.as_deref().unwrap().back(),
            Some(last)
        );
        assert_eq!(bytes[8..12], 2u32.to_le_bytes(), "written as version 2");
        // Version 1 knew only "allowed": the same bytes labelled version 1 are refused.
        let mut v1 = bytes[..bytes.len() - 4].to_vec();
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let err = decode(&v1, 4).unwrap_err();
        assert!(
            matches!(
                err.reason,
                DecodeReason::BadValue {
                    field: "history flags",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(v1[err.offset as usize], history_flags::BLOCKED_BY_OTHER);
    }

    #[test]
    fn a_snapshot_is_version_3_with_every_burst_only_when_some_key_has_one() {
        let mut registry = sample();
        let covers = Covers {
            generation: 1,
            offset: 32,
        };
        let without = encode(&registry, covers);
        assert_eq!(without[8..12], 2u32.to_le_bytes());
        let t0 = 1_700_000_000_000_000_000;
        let bursty = Quota::new(10, "1s".parse().unwrap(), Algorithm::TokenBucket)
            .unwrap()
            .with_burst(50)
            .unwrap();
        registry.apply_configure(3, "bursty", bursty, t0 + 20);
        registry.apply_check(3, t0 + 21, 45, true, None);
        let bytes = encode(&registry, covers);
        assert_eq!(bytes[8..12], 3u32.to_le_bytes());
        let (decoded, _) = decode(&bytes, 4).unwrap();
        assert_eq!(decoded, registry);
        assert_eq!(decoded.get(3).unwrap().quota.burst(), 50);
        assert_eq!(decoded.get(0).unwrap().quota.burst(), 10);
        // A version 3 entry whose burst is refused by its quota is refused: key 0
        // ("k0", a token bucket) starts at 52; its burst follows id, key, rate, per, code.
        let burst_at = 52 + 4 + 2 + 2 + 8 + 8 + 1;
        assert_eq!(bytes[burst_at..burst_at + 8], 10u64.to_le_bytes());
        let mut zero = bytes[..bytes.len() - 4].to_vec();
        zero[burst_at..burst_at + 8].copy_from_slice(&0u64.to_le_bytes());
        let crc = crc32c::crc32c(&zero);
        zero.extend_from_slice(&crc.to_le_bytes());
        let err = decode(&zero, 4).unwrap_err();
        assert_eq!(err.offset, burst_at as u64, "{err}");
    }

    #[test]
    fn a_key_id_space_too_large_to_allocate_is_refused_not_aborted() {
        // Linux only allocates what it can back unless told to overcommit always; the
        // refusal needs an allocator that can say no.
        if std::fs::read_to_string("/proc/sys/vm/overcommit_memory")
            .is_ok_and(|mode| mode.trim() == "1")
        {
            return;
        }
        let mut bytes = encode(
            &sample(),
            Covers {
                generation: 0,
                offset: 32,
            },
        );
        let body = bytes.len() - 4;
        bytes[40..44].copy_from_slice(&(u32::MAX - 1).to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
        let err = decode(&bytes, 4).unwrap_err();
        assert_eq!(err.offset, 40, "{err}");
        assert!(
            matches!(
                err.reason,
                DecodeReason::BadValue {
                    field: "next key id",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn rejects_damage_and_other_versions() {
        let bytes = encode(
            &sample(),
            Covers {
                generation: 0,
                offset: 32,
            },
        );
        for i in [0, 20, bytes.len() / 2, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            assert!(decode(&damaged, 4).is_err(), "flip at {i}");
        }
        assert!(decode(&bytes[..bytes.len() - 7], 4).is_err());
        let mut cut = bytes[..bytes.len() - 9].to_vec();
        let crc = crc32c::crc32c(&cut);
        cut.extend_from_slice(&crc.to_le_bytes());
        let err = decode(&cut, 4).unwrap_err();
        // Cut inside the last key's history: the history cannot fit what is left.
        assert!(
            matches!(
                err.reason,
                DecodeReason::BadValue {
                    field: "history length",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.offset > 56 && err.offset <= cut.len() as u64, "{err}");
        let mut newer = bytes.clone();
        newer[8] = 9;
        assert_eq!(
            decode(&newer, 4).unwrap_err(),
            DecodeError::new(
                8,
                DecodeReason::UnsupportedVersion {
                    found: 9,
                    supported: SNAPSHOT_VERSION
                }
            )
        );
    }
}
