//! Log records: framing (length + CRC32C) and the payload of every event.
//!
//! A frame is `len: u32 | crc32c(payload): u32 | payload`, little-endian. A zero length
//! marks the end of the log (the file is preallocated with zeros).

use crate::algorithm::{Algorithm, Quota};
use crate::clock::UnixNanos;
use crate::duration::Period;
use crate::storage::format::{kind, u32_at, u64_at, FRAME_HEADER_LEN, MAX_PAYLOAD_LEN};

/// One change to limiter state, as logged. Keys are interned: only `Configure` carries
/// the key's text; every other record names the key by the id it assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A limit was created (new id) or changed (existing id).
    Configure {
        /// The key's id.
        id: u32,
        /// When.
        at: UnixNanos,
        /// The new quota.
        quota: Quota,
        /// The key.
        key: String,
    },
    /// A single-key check and its outcome.
    Check {
        /// The key's id.
        id: u32,
        /// When.
        at: UnixNanos,
        /// The cost asked for.
        cost: u64,
        /// Whether it was allowed (and so consumed `cost`).
        allowed: bool,
    },
    /// An all-or-nothing check; items are distinct keys with summed costs.
    CheckAll {
        /// When.
        at: UnixNanos,
        /// Whether all were allowed (and so consumed).
        allowed: bool,
        /// (key id, cost) per distinct key.
        items: Vec<(u32, u64)>,
    },
    /// A key went back to full capacity.
    Reset {
        /// The key's id.
        id: u32,
        /// When.
        at: UnixNanos,
    },
    /// A limit was deleted.
    Remove {
        /// The key's id.
        id: u32,
        /// When.
        at: UnixNanos,
    },
    /// The log was synced (`fdatasync`) through byte offset `through` of this log: the
    /// durability watermark recovery uses to tell a power loss's damage from bit rot.
    Synced {
        /// When.
        at: UnixNanos,
        /// Every byte of this log before this offset was on disk.
        through: u64,
    },
}

impl Event {
    /// When the event happened.
    pub fn at(&self) -> UnixNanos {
        match self {
            Event::Configure { at, .. }
            | Event::Check { at, .. }
            | Event::CheckAll { at, .. }
            | Event::Reset { at, .. }
            | Event::Remove { at, .. }
            | Event::Synced { at, .. } => *at,
        }
    }

    /// Appends this event as one framed record to `out`.
    pub fn encode_frame(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0u8; FRAME_HEADER_LEN as usize]);
        match self {
            Event::Configure { id, at, quota, key } => {
                out.push(kind::CONFIGURE);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&at.to_le_bytes());
                out.extend_from_slice(&quota.rate().to_le_bytes());
                out.extend_from_slice(&quota.period().as_millis().to_le_bytes());
                out.push(quota.algorithm() as u8);
                out.extend_from_slice(&(key.len() as u16).to_le_bytes());
                out.extend_from_slice(key.as_bytes());
            }
            Event::Check {
                id,
                at,
                cost,
                allowed,
            } => {
                out.push(if *allowed {
                    kind::CHECK_ALLOWED
                } else {
                    kind::CHECK_DENIED
                });
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&at.to_le_bytes());
                out.extend_from_slice(&cost.to_le_bytes());
            }
            Event::CheckAll { at, allowed, items } => {
                out.push(kind::CHECK_ALL);
                out.extend_from_slice(&at.to_le_bytes());
                out.push(u8::from(*allowed));
                out.extend_from_slice(&(items.len() as u32).to_le_bytes());
                for (id, cost) in items {
                    out.extend_from_slice(&id.to_le_bytes());
                    out.extend_from_slice(&cost.to_le_bytes());
                }
            }
            Event::Synced { at, through } => {
                out.push(kind::SYNCED);
                out.extend_from_slice(&at.to_le_bytes());
                out.extend_from_slice(&through.to_le_bytes());
            }
            Event::Reset { id, at } | Event::Remove { id, at } => {
                out.push(if matches!(self, Event::Reset { .. }) {
                    kind::RESET
                } else {
                    kind::REMOVE
                });
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&at.to_le_bytes());
            }
        }
        let payload_start = start + FRAME_HEADER_LEN as usize;
        let len = (out.len() - payload_start) as u32;
        let crc = out.get(payload_start..).map_or(0, crc32c::crc32c);
        if let Some(header) = out.get_mut(start..payload_start) {
            let fields = len.to_le_bytes().into_iter().chain(crc.to_le_bytes());
            for (slot, byte) in header.iter_mut().zip(fields) {
                *slot = byte;
            }
        }
    }

    /// Decodes a payload whose checksum has already been verified.
    pub fn decode(payload: &[u8]) -> Result<Event, String> {
        // The common record first, by fixed offsets: replay speed is mostly this.
        if let [kind @ (kind::CHECK_ALLOWED | kind::CHECK_DENIED), fields @ ..] = payload {
            if fields.len() == 20 {
                return Ok(Event::Check {
                    id: u32_at(fields, 0),
                    at: u64_at(fields, 4),
                    cost: u64_at(fields, 12),
                    allowed: *kind == kind::CHECK_ALLOWED,
                });
            }
        }
        let mut r = Reader {
            bytes: payload,
            at: 0,
        };
        let kind = r.u8()?;
        let event = match kind {
            kind::CONFIGURE => {
                let id = r.u32()?;
                let at = r.u64()?;
                let rate = r.u64()?;
                let per_ms = r.u64()?;
                let code = r.u8()?;
                let key_len = r.u16()? as usize;
                let key = std::str::from_utf8(r.take(key_len)?)
                    .map_err(|_| "configure record holds a key that is not UTF-8".to_owned())?
                    .to_owned();
                let algorithm = Algorithm::from_code(code)
                    .ok_or_else(|| format!("configure record has unknown algorithm code {code}"))?;
                let period = Period::from_millis(per_ms)
                    .map_err(|e| format!("configure record has a bad period: {e}"))?;
                let quota = Quota::new(rate, period, algorithm)
                    .map_err(|e| format!("configure record has a bad quota: {e}"))?;
                Event::Configure { id, at, quota, key }
            }
            kind::CHECK_ALLOWED | kind::CHECK_DENIED => Event::Check {
                id: r.u32()?,
                at: r.u64()?,
                cost: r.u64()?,
                allowed: kind == kind::CHECK_ALLOWED,
            },
            kind::CHECK_ALL => {
                let at = r.u64()?;
                let allowed = r.u8()? != 0;
                let count = r.u32()? as usize;
                if count.saturating_mul(12) > r.remaining() {
                    return Err(format!(
                        "check-all record claims {count} items but is too short"
                    ));
                }
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push((r.u32()?, r.u64()?));
                }
                Event::CheckAll { at, allowed, items }
            }
            kind::RESET => Event::Reset {
                id: r.u32()?,
                at: r.u64()?,
            },
            kind::REMOVE => Event::Remove {
                id: r.u32()?,
                at: r.u64()?,
            },
            kind::SYNCED => Event::Synced {
                at: r.u64()?,
                through: r.u64()?,
            },
            other => return Err(format!("unknown record kind {other}")),
        };
        if r.remaining() != 0 {
            return Err(format!(
                "record of kind {kind} has {} unexpected trailing bytes",
                r.remaining()
            ));
        }
        Ok(event)
    }
}

/// What is found at one offset of a log.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A record with a valid checksum; the next frame starts at `next`.
    Valid {
        /// The payload.
        payload: &'a [u8],
        /// Offset of the following frame.
        next: usize,
    },
    /// A zero length: the end of the log.
    End,
    /// Not a valid record (short, too long, or a checksum mismatch).
    Bad(&'static str),
}

/// Reads the frame that starts at `at` in `log`.
pub fn read_frame(log: &[u8], at: usize) -> Frame<'_> {
    let Some(header) = log.get(at..at + FRAME_HEADER_LEN as usize) else {
        return if log
            .get(at..)
            .is_none_or(|rest| rest.iter().all(|b| *b == 0))
        {
            Frame::End
        } else {
            Frame::Bad("the record header is cut short")
        };
    };
    let len = u32_at(header, 0);
    if len == 0 {
        return if u32_at(header, 4) == 0 {
            Frame::End
        } else {
            Frame::Bad("a record has length zero but a checksum")
        };
    }
    if len > MAX_PAYLOAD_LEN {
        return Frame::Bad("a record claims an impossible length");
    }
    let start = at + FRAME_HEADER_LEN as usize;
    let end = start + len as usize;
    let Some(payload) = log.get(start..end) else {
        return Frame::Bad("the record is cut short");
    };
    if crc32c::crc32c(payload) != u32_at(header, 4) {
        return Frame::Bad("the record's checksum does not match");
    }
    Frame::Valid { payload, next: end }
}

/// The first offset after `from` at which a valid, decodable record starts, if any.
/// Used to tell a torn tail (nothing valid follows) from damage in the middle.
pub fn find_valid_frame_after(log: &[u8], from: usize) -> Option<usize> {
    (from + 1..log.len()).find(|&at| match read_frame(log, at) {
        Frame::Valid { payload, .. } => Event::decode(payload).is_ok(),
        _ => false,
    })
}

/// The valid records at the start of `frames` (back to back, from offset 0) without
/// their `synced` records, and where the valid records end: a watermark names an
/// offset of the log it was written in, so records copied into another log
/// (compaction, repair) leave theirs behind.
pub fn strip_synced(frames: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(frames.len());
    let mut at = 0;
    while let Frame::Valid { payload, next } = read_frame(frames, at) {
        if payload.first() != Some(&kind::SYNCED) {
            out.extend_from_slice(frames.get(at..next).unwrap_or(&[]));
        }
        at = next;
    }
    (out, at)
}

/// [`strip_synced`] of a run of valid records.
pub fn without_synced(frames: &[u8]) -> Vec<u8> {
    strip_synced(frames).0
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let slice = self
            .bytes
            .get(self.at..self.at + n)
            .ok_or_else(|| "record is shorter than its fields".to_owned())?;
        self.at += n;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([
            b.first().copied().unwrap_or(0),
            b.get(1).copied().unwrap_or(0),
        ]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32_at(self.take(4)?, 0))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64_at(self.take(8)?, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Vec<Event> {
        let quota = Quota::new(100, "1m".parse().unwrap(), Algorithm::SlidingWindowLog).unwrap();
        vec![
            Event::Configure {
                id: 3,
                at: 42,
                quota,
                key: "api:user-42".into(),
            },
            Event::Check {
                id: 3,
                at: 43,
                cost: 5,
                allowed: true,
            },
            Event::Check {
                id: 3,
                at: 44,
                cost: 500,
                allowed: false,
            },
            Event::CheckAll {
                at: 45,
                allowed: true,
                items: vec![(3, 1), (9, 2)],
            },
            Event::Reset { id: 3, at: 46 },
            Event::Remove { id: 3, at: 47 },
        ]
    }

    #[test]
    fn every_event_round_trips() {
        let mut log = Vec::new();
        for e in events() {
            e.encode_frame(&mut log);
        }
        let mut at = 0;
        let mut decoded = Vec::new();
        while let Frame::Valid { payload, next } = read_frame(&log, at) {
            decoded.push(Event::decode(payload).unwrap());
            at = next;
        }
        assert_eq!(decoded, events());
        assert_eq!(read_frame(&log, at), Frame::End);
    }

    #[test]
    fn a_check_record_is_at_most_32_bytes() {
        let mut out = Vec::new();
        Event::Check {
            id: u32::MAX,
            at: u64::MAX,
            cost: u64::MAX,
            allowed: true,
        }
        .encode_frame(&mut out);
        assert!(out.len() <= 32, "{} bytes", out.len());
    }

    #[test]
    fn damage_is_detected() {
        let mut log = Vec::new();
        events()[1].encode_frame(&mut log);
        let mut flipped = log.clone();
        *flipped.last_mut().unwrap() ^= 0x40;
        assert!(matches!(read_frame(&flipped, 0), Frame::Bad(_)));
        assert!(matches!(
            read_frame(&log[..log.len() - 1], 0),
            Frame::Bad(_)
        ));
        assert!(matches!(read_frame(&log[..3], 0), Frame::Bad(_)));
        assert_eq!(read_frame(&[0u8; 3], 0), Frame::End);
    }

    #[test]
    fn decoding_never_panics_on_garbage() {
        for len in 0..64 {
            let garbage: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            let _ = Event::decode(&garbage);
            let _ = read_frame(&garbage, 0);
        }
        assert!(Event::decode(&[
            kind::CHECK_ALL,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            1,
            255,
            255,
            255,
            255
        ])
        .is_err());
    }
}
