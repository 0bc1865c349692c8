//! The snapshot: the whole registry at one log position, written by compaction.

use std::collections::VecDeque;

use crate::algorithm::{Algorithm, FixedWindow, LimitState, Quota, Run, SlidingLog, TokenBucket};
use crate::duration::Period;
use crate::registry::{Counters, Entry, HistoryEvent, Registry};
use crate::storage::format::{u32_at, FORMAT_VERSION, SNAPSHOT_MAGIC};

/// The log position a snapshot covers: every record of log `generation` before
/// byte `offset` is included in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Covers {
    /// Generation of the log the snapshot was taken from.
    pub generation: u64,
    /// Offset in that log just after the last record included.
    pub offset: u64,
}

/// Why a snapshot could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum SnapshotError {
    /// Damaged or not a snapshot.
    Invalid(String),
    /// A snapshot of another format version.
    Version(u32),
}

/// Serialises `registry` as a snapshot covering `covers`.
pub fn encode(registry: &Registry, covers: Covers) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + registry.len() * 96);
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
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
            out.push(u8::from(h.allowed));
        }
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads a snapshot into a registry keeping `history_capacity` decisions per key.
pub fn decode(bytes: &[u8], history_capacity: usize) -> Result<(Registry, Covers), SnapshotError> {
    let invalid = |why: &str| SnapshotError::Invalid(why.to_owned());
    if bytes.get(..8) != Some(&SNAPSHOT_MAGIC[..]) {
        return Err(invalid("the file does not start with FLINTSNP"));
    }
    let version = u32_at(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(SnapshotError::Version(version));
    }
    let body_len = bytes
        .len()
        .checked_sub(4)
        .ok_or_else(|| invalid("the file is too short"))?;
    let (body, crc) = bytes.split_at(body_len);
    if crc32c::crc32c(body) != u32_at(crc, 0) {
        return Err(invalid(
            "the checksum does not match (the snapshot is damaged)",
        ));
    }
    let mut r = Cursor {
        bytes: body,
        at: 16,
    };
    let short = || invalid("the snapshot is shorter than its contents");
    let covers = Covers {
        generation: r.u64().ok_or_else(short)?,
        offset: r.u64().ok_or_else(short)?,
    };
    let mut registry = Registry::new(history_capacity);
    registry.high_water = r.u64().ok_or_else(short)?;
    let next_id = r.u32().ok_or_else(short)?;
    let count = r.u64().ok_or_else(short)?;
    for _ in 0..count {
        let id = r.u32().ok_or_else(short)?;
        let key_len = r.u16().ok_or_else(short)? as usize;
        let key = std::str::from_utf8(r.take(key_len).ok_or_else(short)?)
            .map_err(|_| invalid("a key is not UTF-8"))?;
        let rate = r.u64().ok_or_else(short)?;
        let per_ms = r.u64().ok_or_else(short)?;
        let algorithm = Algorithm::from_code(r.u8().ok_or_else(short)?)
            .ok_or_else(|| invalid("unknown algorithm code"))?;
        let period = Period::from_millis(per_ms).map_err(|e| invalid(&e.to_string()))?;
        let quota = Quota::new(rate, period, algorithm).map_err(|e| invalid(&e.to_string()))?;
        let mut n = [0u64; 5];
        for slot in &mut n {
            *slot = r.u64().ok_or_else(short)?;
        }
        let state = match algorithm {
            Algorithm::TokenBucket => LimitState::TokenBucket(TokenBucket {
                tat: r.u128().ok_or_else(short)?,
            }),
            Algorithm::FixedWindowCounter => LimitState::FixedWindowCounter(FixedWindow {
                start: r.u64().ok_or_else(short)?,
                used: r.u64().ok_or_else(short)?,
            }),
            Algorithm::SlidingWindowLog => {
                let expired_total = r.u64().ok_or_else(short)?;
                let runs_len = r.u32().ok_or_else(short)? as usize;
                if runs_len.saturating_mul(16) > r.remaining() {
                    return Err(short());
                }
                let mut runs = VecDeque::with_capacity(runs_len);
                for _ in 0..runs_len {
                    runs.push_back(Run {
                        at: r.u64().ok_or_else(short)?,
                        total: r.u64().ok_or_else(short)?,
                    });
                }
                LimitState::SlidingWindowLog(Box::new(SlidingLog {
                    runs,
                    expired_total,
                }))
            }
        };
        let history_len = r.u32().ok_or_else(short)? as usize;
        if history_len.saturating_mul(25) > r.remaining() {
            return Err(short());
        }
        let history = if history_len == 0 {
            None
        } else {
            let mut events = VecDeque::with_capacity(history_len);
            for _ in 0..history_len {
                events.push_back(HistoryEvent {
                    at: r.u64().ok_or_else(short)?,
                    cost: r.u64().ok_or_else(short)?,
                    remaining: r.u64().ok_or_else(short)?,
                    allowed: r.u8().ok_or_else(short)? != 0,
                });
            }
            while events.len() > history_capacity {
                events.pop_front();
            }
            Some(Box::new(events))
        };
        if id >= next_id || registry.get(id).is_some() || registry.lookup(key).is_some() {
            return Err(invalid("a key or key id appears twice"));
        }
        registry.insert_entry(
            id,
            Entry {
                key: key.into(),
                quota,
                state,
                counters: Counters {
                    allowed: n[0],
                    denied: n[1],
                    allowed_cost: n[2],
                    denied_cost: n[3],
                },
                last_seen: n[4],
                history,
            },
        );
    }
    if r.remaining() != 0 {
        return Err(invalid("unexpected bytes after the last key"));
    }
    registry.reserve_ids(next_id);
    Ok((registry, covers))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn u128(&mut self) -> Option<u128> {
        Some(u128::from_le_bytes(self.take(16)?.try_into().ok()?))
    }
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
        let mut newer = bytes.clone();
        newer[8] = 9;
        assert_eq!(decode(&newer, 4).unwrap_err(), SnapshotError::Version(9));
    }
}
