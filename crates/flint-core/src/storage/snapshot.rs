//! The snapshot: the whole registry at one log position, written by compaction.

use std::collections::VecDeque;

use crate::algorithm::{Algorithm, FixedWindow, LimitState, Quota, Run, SlidingLog, TokenBucket};
use crate::duration::Period;
use crate::registry::{Counters, Entry, HistoryEvent, Registry};
use crate::storage::codec::{Cursor, DecodeError, DecodeReason};
use crate::storage::format::{history_flags, MAX_KEY_LEN, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};

/// The log position a snapshot covers: every record of log `generation` before
/// byte `offset` is included in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Covers {
    /// Generation of the log the snapshot was taken from.
    pub generation: u64,
    /// Offset in that log just after the last record included.
    pub offset: u64,
}

/// Serialises `registry` as a snapshot covering `covers`.
pub fn encode(registry: &Registry, covers: Covers) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + registry.len() * 96);
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&covers.generation.to_le_bytes());
    out.extend_from_slice(&covers.offset.to_le_bytes());
    out.extend_from_slice(&registry.high_water.to_le_bytes());
    out.extend_from_slice(&registry.next_id().to_le_bytes());
    out.extend_from_slice(&(registry.len() as u64).to_le_bytes());
    for (id, entry) in registry.iter() {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&(entry.key.len() as u16).to_le_bytes());
        out.extend_from_slice(entry.key.as_bytes());
        out.extend_from_slice(&entry.quota.rate().to_le_bytes());
        out.extend_from_slice(&entry.quota.period().as_millis().to_le_bytes());
        out.push(entry.quota.algorithm() as u8);
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
            out.push(flags);
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
    let mut registry = Registry::new(history_capacity);
    registry.high_water = r.u64("high-water time")?;
    let next_id = r.u32("next key id")?;
    let count = r.u64("key count")?;
    for _ in 0..count {
        let entry_at = r.offset();
        let id = r.u32("key id")?;
        let key = r.str16("key", MAX_KEY_LEN)?;
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
        let quota = Quota::new(rate, period, algorithm)
            .map_err(|e| DecodeError::bad_value(rate_at, "rate", e))?;
        let counters = Counters {
            allowed: r.u64("allowed count")?,
            denied: r.u64("denied count")?,
            allowed_cost: r.u64("allowed cost")?,
            denied_cost: r.u64("denied cost")?,
        };
        let last_seen = r.u64("last seen time")?;
        let state = match algorithm {
            Algorithm::TokenBucket => LimitState::TokenBucket(TokenBucket {
                tat: r.u128("token bucket state")?,
            }),
            Algorithm::FixedWindowCounter => LimitState::FixedWindowCounter(FixedWindow {
                start: r.u64("window start")?,
                used: r.u64("window use")?,
            }),
            Algorithm::SlidingWindowLog => {
                let expired_total = r.u64("expired total")?;
                let runs_len = r.count("run count", 16)?;
                let mut runs = VecDeque::with_capacity(runs_len);
                for _ in 0..runs_len {
                    runs.push_back(Run {
                        at: r.u64("run time")?,
                        total: r.u64("run total")?,
                    });
                }
                LimitState::SlidingWindowLog(Box::new(SlidingLog {
                    runs,
                    expired_total,
                }))
            }
        };
        let history_len = r.count("history length", 25)?;
        let history = if history_len == 0 {
            None
        } else {
            let mut events = VecDeque::with_capacity(history_len.min(history_capacity));
            for _ in 0..history_len {
                let at = r.u64("history time")?;
                let cost = r.u64("history cost")?;
                let remaining = r.u64("history remaining")?;
                let flags_at = r.offset();
                let flags = r.u8("history flags")?;
                // Version 1 wrote 0 or 1 (allowed); version 2 adds "blocked by another key".
                let known = if version == 1 {
                    history_flags::ALLOWED
                } else {
                    history_flags::ALLOWED | history_flags::BLOCKED_BY_OTHER
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
                };
                if events.len() == history_capacity {
                    events.pop_front();
                }
                if history_capacity > 0 {
                    events.push_back(event);
                }
            }
            (!events.is_empty()).then(|| Box::new(events))
        };
        if id >= next_id || registry.get(id).is_some() || registry.lookup(key).is_some() {
            return Err(Cursor::error_at(
                entry_at,
                DecodeReason::Inconsistent(format!(
                    "key {key:?} or its id {id} appears twice, or the id is not below the next id {next_id}"
                )),
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
            },
        );
    }
    r.finish()?;
    registry.reserve_ids(next_id);
    Ok((registry, covers))
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
        assert_eq!(decoded.next_id(), 3);
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
