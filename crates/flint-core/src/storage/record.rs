//! Log records: framing (length + CRC32C) and the payload of every event.
//!
//! A frame is `len: u32 | crc32c(payload): u32 | payload`, little-endian. A zero length
//! marks the end of the log (the file is preallocated with zeros).

use crate::algorithm::{Algorithm, Mode, Quota};
use crate::clock::UnixNanos;
use crate::duration::Period;
use crate::storage::codec::{Cursor, DecodeError, DecodeReason, Fixed};
use crate::storage::format::{
    check_all_flags, kind, FRAME_HEADER_LEN, MAX_CHECK_ALL_ITEMS, MAX_KEY_LEN, MAX_PAYLOAD_LEN,
};

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
    /// A key was made from a template (see [`kind::DERIVE`]).
    Derive {
        /// The new key's id (a free one).
        id: u32,
        /// When.
        at: UnixNanos,
        /// The template's id.
        template: u32,
        /// The key.
        key: String,
    },
    /// Keys made from templates, with ids in `from..to`, at full capacity at `at` were
    /// dropped (see [`kind::SWEEP`]).
    Sweep {
        /// When.
        at: UnixNanos,
        /// The first id swept.
        from: u32,
        /// One past the last id swept.
        to: u32,
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
        /// One per distinct key.
        items: Vec<CheckAllItem>,
    },
    /// A key went back to full capacity.
    Reset {
        /// The key's id.
        id: u32,
        /// When.
        at: UnixNanos,
    },
    /// Units consumed earlier were given back; written only when it changed the key's
    /// state.
    Refund {
        /// The key's id.
        id: u32,
        /// When.
        at: UnixNanos,
        /// The units given back (asked for: the algorithm caps what it gives back).
        cost: u64,
    },
    /// A limit was deleted.
    Remove {
        /// The key's id.
        id: u32,
        /// When.
        at: UnixNanos,
    },
    /// The log was synced (`fdatasync`) through byte offset `through` of this log:
    /// every byte before it was durable when this record was written. Changes no
    /// limiter state.
    Synced {
        /// When the sync completed.
        at: UnixNanos,
        /// Offset in this log up to which the sync made the log durable.
        through: u64,
        /// The log's salt (from its header): a `synced` record counts only in the log
        /// it was written for.
        salt: u32,
    },
}

/// One key of a check-all record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckAllItem {
    /// The key's id.
    pub id: u32,
    /// The key's cost (the sum when the key was named more than once).
    pub cost: u64,
    /// Whether this key lacked room for its cost: a denied check-all counts a denial
    /// only on such keys; the others were blocked by them. Always false when the
    /// check-all was allowed. A version 1 record (kind 4) does not say, so it decodes
    /// with every key of a denial marked as lacking room, which is how it was counted.
    pub lacked_room: bool,
}

impl Event {
    /// When the event happened.
    pub fn at(&self) -> UnixNanos {
        match self {
            Event::Configure { at, .. }
            | Event::Derive { at, .. }
            | Event::Sweep { at, .. }
            | Event::Check { at, .. }
            | Event::CheckAll { at, .. }
            | Event::Reset { at, .. }
            | Event::Refund { at, .. }
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
                // The oldest kind that can say it, so that logs without the newer
                // features are byte for byte what earlier builds wrote.
                let kind = if quota.mode() != Mode::Enforce {
                    kind::CONFIGURE_MODE
                } else if quota.has_burst() {
                    kind::CONFIGURE_BURST
                } else {
                    kind::CONFIGURE
                };
                out.push(kind);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&at.to_le_bytes());
                out.extend_from_slice(&quota.rate().to_le_bytes());
                out.extend_from_slice(&quota.period().as_millis().to_le_bytes());
                out.push(quota.algorithm() as u8);
                if kind != kind::CONFIGURE {
                    out.extend_from_slice(&quota.burst().to_le_bytes());
                }
                if kind == kind::CONFIGURE_MODE {
                    out.push(quota.mode() as u8);
                }
                out.extend_from_slice(&(key.len() as u16).to_le_bytes());
                out.extend_from_slice(key.as_bytes());
            }
            Event::Derive {
                id,
                at,
                template,
                key,
            } => {
                out.push(kind::DERIVE);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&at.to_le_bytes());
                out.extend_from_slice(&template.to_le_bytes());
                out.extend_from_slice(&(key.len() as u16).to_le_bytes());
                out.extend_from_slice(key.as_bytes());
            }
            Event::Sweep { at, from, to } => {
                out.push(kind::SWEEP);
                out.extend_from_slice(&at.to_le_bytes());
                out.extend_from_slice(&from.to_le_bytes());
                out.extend_from_slice(&to.to_le_bytes());
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
                out.push(kind::CHECK_ALL_PER_KEY);
                out.extend_from_slice(&at.to_le_bytes());
                out.push(u8::from(*allowed));
                out.extend_from_slice(&(items.len() as u32).to_le_bytes());
                for item in items {
                    out.extend_from_slice(&item.id.to_le_bytes());
                    out.extend_from_slice(&item.cost.to_le_bytes());
                    out.push(if item.lacked_room {
                        check_all_flags::LACKED_ROOM
                    } else {
                        0
                    });
                }
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
            Event::Refund { id, at, cost } => {
                out.push(kind::REFUND);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&at.to_le_bytes());
                out.extend_from_slice(&cost.to_le_bytes());
            }
            Event::Synced { at, through, salt } => {
                out.push(kind::SYNCED);
                out.extend_from_slice(&at.to_le_bytes());
                out.extend_from_slice(&through.to_le_bytes());
                out.extend_from_slice(&salt.to_le_bytes());
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

    /// Decodes a payload whose checksum has already been verified; `base` is the
    /// payload's offset in its file, so errors name absolute offsets.
    pub fn decode(payload: &[u8], base: u64) -> Result<Event, DecodeError> {
        // The common record first, by fixed offsets: replay speed is mostly this.
        if let Some(check) = Fixed::<CHECK_PAYLOAD_LEN>::new(payload) {
            let kind = check.u8::<0>();
            if kind == kind::CHECK_ALLOWED || kind == kind::CHECK_DENIED {
                return Ok(Event::Check {
                    id: check.u32::<1>(),
                    at: check.u64::<5>(),
                    cost: check.u64::<13>(),
                    allowed: kind == kind::CHECK_ALLOWED,
                });
            }
        }
        let mut r = Cursor::new(payload, base);
        let kind = r.u8("record kind")?;
        let event = match kind {
            kind::CONFIGURE | kind::CONFIGURE_BURST | kind::CONFIGURE_MODE => {
                let id = r.u32("key id")?;
                let at = r.u64("time")?;
                let rate_at = r.offset();
                let rate = r.u64("rate")?;
                let per_at = r.offset();
                let per_ms = r.u64("period")?;
                let code_at = r.offset();
                let code = r.u8("algorithm code")?;
                let burst_at = r.offset();
                let burst = if kind == kind::CONFIGURE {
                    None
                } else {
                    Some(r.u64("burst")?)
                };
                let mode_at = r.offset();
                let mode = if kind == kind::CONFIGURE_MODE {
                    let code = r.u8("mode code")?;
                    match Mode::from_code(code) {
                        // An enforced limit is written with an older kind.
                        Some(Mode::Enforce) | None => {
                            return Err(DecodeError::bad_value(
                                mode_at,
                                "mode code",
                                format!("mode code {code} is not a mode this kind is written for"),
                            ))
                        }
                        Some(mode) => mode,
                    }
                } else {
                    Mode::Enforce
                };
                let key = r.str16("key", MAX_KEY_LEN)?.to_owned();
                let algorithm = Algorithm::from_code(code).ok_or_else(|| {
                    Cursor::error_at(code_at, DecodeReason::UnknownAlgorithm(code))
                })?;
                let period = Period::from_millis(per_ms)
                    .map_err(|e| DecodeError::bad_value(per_at, "period", e))?;
                let mut quota = Quota::new(rate, period, algorithm)
                    .map_err(|e| DecodeError::bad_value(rate_at, "rate", e))?;
                if let Some(burst) = burst {
                    // The engine writes the burst kind only for a burst that differs
                    // from the rate: a record that says otherwise was not written by it.
                    if burst == rate && kind == kind::CONFIGURE_BURST {
                        return Err(DecodeError::bad_value(
                            burst_at,
                            "burst",
                            format!("burst {burst} equals the rate: such a limit is written as a plain configure record"),
                        ));
                    }
                    quota = quota
                        .with_burst(burst)
                        .map_err(|e| DecodeError::bad_value(burst_at, "burst", e))?;
                }
                Event::Configure {
                    id,
                    at,
                    quota: quota.with_mode(mode),
                    key,
                }
            }
            kind::DERIVE => Event::Derive {
                id: r.u32("key id")?,
                at: r.u64("time")?,
                template: r.u32("template id")?,
                key: r.str16("key", MAX_KEY_LEN)?.to_owned(),
            },
            kind::SWEEP => Event::Sweep {
                at: r.u64("time")?,
                from: r.u32("first swept id")?,
                to: r.u32("end of swept ids")?,
            },
            kind::CHECK_ALLOWED | kind::CHECK_DENIED => Event::Check {
                id: r.u32("key id")?,
                at: r.u64("time")?,
                cost: r.u64("cost")?,
                allowed: kind == kind::CHECK_ALLOWED,
            },
            kind::CHECK_ALL | kind::CHECK_ALL_PER_KEY => {
                let per_key = kind == kind::CHECK_ALL_PER_KEY;
                let at = r.u64("time")?;
                let allowed = r.bool("allowed flag")?;
                let count_at = r.offset();
                let count = r.count("item count", if per_key { 13 } else { 12 })?;
                if count > MAX_CHECK_ALL_ITEMS {
                    return Err(DecodeError::bad_value(
                        count_at,
                        "item count",
                        format!("{count} items, more than {MAX_CHECK_ALL_ITEMS}"),
                    ));
                }
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    let id = r.u32("key id")?;
                    let cost = r.u64("cost")?;
                    let lacked_room = if per_key {
                        let flags_at = r.offset();
                        match r.u8("item flags")? {
                            0 => false,
                            check_all_flags::LACKED_ROOM => true,
                            other => {
                                return Err(DecodeError::bad_value(
                                    flags_at,
                                    "item flags",
                                    format!("unknown flags {other:#04x}"),
                                ))
                            }
                        }
                    } else {
                        !allowed
                    };
                    items.push(CheckAllItem {
                        id,
                        cost,
                        lacked_room,
                    });
                }
                Event::CheckAll { at, allowed, items }
            }
            kind::RESET => Event::Reset {
                id: r.u32("key id")?,
                at: r.u64("time")?,
            },
            kind::REMOVE => Event::Remove {
                id: r.u32("key id")?,
                at: r.u64("time")?,
            },
            kind::REFUND => Event::Refund {
                id: r.u32("key id")?,
                at: r.u64("time")?,
                cost: r.u64("cost")?,
            },
            kind::SYNCED => Event::Synced {
                at: r.u64("time")?,
                through: r.u64("synced offset")?,
                salt: r.u32("log salt")?,
            },
            other => return Err(Cursor::error_at(base, DecodeReason::UnknownKind(other))),
        };
        r.finish()?;
        Ok(event)
    }
}

/// Payload length of a check record: kind, id, at, cost.
const CHECK_PAYLOAD_LEN: usize = 1 + 4 + 8 + 8;

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
    /// Not a valid record (short, too long, or a checksum mismatch); the error's
    /// offset is the frame's.
    Bad(DecodeError),
}

/// Reads the frame that starts at `at` in `log` (a whole log file: offsets are its).
#[inline]
pub fn read_frame(log: &[u8], at: usize) -> Frame<'_> {
    let bad = |reason| Frame::Bad(DecodeError::new(at as u64, reason));
    let rest = log.get(at..).unwrap_or(&[]);
    let Some((header, body)) = rest.split_first_chunk::<{ FRAME_HEADER_LEN as usize }>() else {
        return if rest.iter().all(|b| *b == 0) {
            Frame::End
        } else {
            bad(DecodeReason::Truncated {
                field: "record header",
            })
        };
    };
    let header = Fixed(header);
    let (len, crc) = (header.u32::<0>(), header.u32::<4>());
    if len == 0 {
        return if crc == 0 {
            Frame::End
        } else {
            bad(DecodeReason::ImpossibleLength(0))
        };
    }
    if len > MAX_PAYLOAD_LEN {
        return bad(DecodeReason::ImpossibleLength(len));
    }
    let Some(payload) = body.get(..len as usize) else {
        return bad(DecodeReason::Truncated { field: "record" });
    };
    if crc32c::crc32c(payload) != crc {
        return bad(DecodeReason::ChecksumMismatch { what: "record" });
    }
    Frame::Valid {
        payload,
        next: at + FRAME_HEADER_LEN as usize + len as usize,
    }
}

/// The first offset after `from` at which a valid, decodable record starts, if any.
/// Used to tell a torn tail (nothing valid follows) from damage in the middle.
pub fn find_valid_frame_after(log: &[u8], from: usize) -> Option<usize> {
    (from + 1..log.len()).find(|&at| match read_frame(log, at) {
        Frame::Valid { payload, .. } => {
            Event::decode(payload, (at as u64) + FRAME_HEADER_LEN).is_ok()
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::MAX_RATE;

    fn item(id: u32, cost: u64, lacked_room: bool) -> CheckAllItem {
        CheckAllItem {
            id,
            cost,
            lacked_room,
        }
    }

    #[test]
    fn a_version_1_check_all_decodes_with_every_key_of_a_denial_lacking_room() {
        let mut payload = vec![kind::CHECK_ALL];
        payload.extend_from_slice(&45u64.to_le_bytes());
        payload.push(0);
        payload.extend_from_slice(&2u32.to_le_bytes());
        for (id, cost) in [(3u32, 1u64), (9, 2)] {
            payload.extend_from_slice(&id.to_le_bytes());
            payload.extend_from_slice(&cost.to_le_bytes());
        }
        assert_eq!(
            Event::decode(&payload, 0).unwrap(),
            Event::CheckAll {
                at: 45,
                allowed: false,
                items: vec![item(3, 1, true), item(9, 2, true)],
            }
        );
        payload[9] = 1;
        let Event::CheckAll { items, .. } = Event::decode(&payload, 0).unwrap() else {
            unreachable!()
        };
        assert!(items.iter().all(|i| !i.lacked_room));
        payload[9] = 2;
        assert!(Event::decode(&payload, 0).is_err(), "allowed is 0 or 1");
    }

    #[test]
    fn a_check_all_records_which_keys_lacked_room() {
        let mut frame = Vec::new();
        Event::CheckAll {
            at: 45,
            allowed: false,
            items: vec![item(3, 1, false), item(9, 2, true)],
        }
        .encode_frame(&mut frame);
        let payload = &mut frame[FRAME_HEADER_LEN as usize..];
        assert_eq!(payload[0], kind::CHECK_ALL_PER_KEY);
        assert_eq!(payload.len(), 14 + 2 * 13);
        assert_eq!(
            (payload[26], payload[39]),
            (0, check_all_flags::LACKED_ROOM)
        );
        payload[26] = 0x80;
        let err = Event::decode(payload, 100).unwrap_err();
        assert_eq!(err.offset, 126);
    }

    fn events() -> Vec<Event> {
        let quota = Quota::new(100, "1m".parse().unwrap(), Algorithm::SlidingWindowLog).unwrap();
        let bursty = Quota::new(10, "1s".parse().unwrap(), Algorithm::TokenBucket)
            .unwrap()
            .with_burst(50)
            .unwrap();
        vec![
            Event::Configure {
                id: 3,
                at: 42,
                quota,
                key: "api:user-42".into(),
            },
            Event::Configure {
                id: 9,
                at: 42,
                quota: bursty,
                key: "api:bursty".into(),
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
                items: vec![item(3, 1, false), item(9, 2, false)],
            },
            Event::CheckAll {
                at: 45,
                allowed: false,
                items: vec![item(3, 1, false), item(9, 2, true)],
            },
            Event::Reset { id: 3, at: 46 },
            Event::Refund {
                id: 3,
                at: 46,
                cost: 7,
            },
            Event::Remove { id: 3, at: 47 },
            Event::Synced {
                at: 48,
                through: 4096,
                salt: 0xA5A5_0001,
            },
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
            decoded.push(Event::decode(payload, at as u64 + FRAME_HEADER_LEN).unwrap());
            at = next;
        }
        assert_eq!(decoded, events());
        assert_eq!(read_frame(&log, at), Frame::End);
    }

    #[test]
    fn a_synced_record_is_kind_7_with_time_offset_and_salt() {
        let mut frame = Vec::new();
        Event::Synced {
            at: 0x0102,
            through: 0x0304,
            salt: 0x0506,
        }
        .encode_frame(&mut frame);
        let payload = &frame[FRAME_HEADER_LEN as usize..];
        assert_eq!(payload.len(), 21);
        assert_eq!(payload[0], kind::SYNCED);
        assert_eq!(payload[1..9], 0x0102u64.to_le_bytes());
        assert_eq!(payload[9..17], 0x0304u64.to_le_bytes());
        assert_eq!(payload[17..21], 0x0506u32.to_le_bytes());
    }

    #[test]
    fn a_refund_record_is_kind_9_with_id_time_and_cost() {
        let mut frame = Vec::new();
        Event::Refund {
            id: 0x0A0B,
            at: 0x0102,
            cost: 0x0304,
        }
        .encode_frame(&mut frame);
        let payload = &frame[FRAME_HEADER_LEN as usize..];
        assert_eq!(payload.len(), 21);
        assert_eq!(payload[0], kind::REFUND);
        assert_eq!(payload[1..5], 0x0A0Bu32.to_le_bytes());
        assert_eq!(payload[5..13], 0x0102u64.to_le_bytes());
        assert_eq!(payload[13..21], 0x0304u64.to_le_bytes());
        assert!(Event::decode(&payload[..20], 0).is_err(), "short");
        let mut long = payload.to_vec();
        long.push(0);
        assert!(Event::decode(&long, 0).is_err(), "trailing byte");
    }

    #[test]
    fn a_burst_is_written_only_when_it_differs_from_the_rate_as_kind_10() {
        let plain = Quota::new(10, "1s".parse().unwrap(), Algorithm::TokenBucket).unwrap();
        let configure = |quota| Event::Configure {
            id: 0x0A0B,
            at: 0x0102,
            quota,
            key: "k".into(),
        };
        let mut without = Vec::new();
        configure(plain).encode_frame(&mut without);
        let mut same = Vec::new();
        configure(plain.with_burst(10).unwrap()).encode_frame(&mut same);
        assert_eq!(without, same, "burst == rate is a plain configure record");
        assert_eq!(without[FRAME_HEADER_LEN as usize], kind::CONFIGURE);

        let mut frame = Vec::new();
        configure(plain.with_burst(50).unwrap()).encode_frame(&mut frame);
        let payload = &frame[FRAME_HEADER_LEN as usize..];
        assert_eq!(payload.len(), 1 + 4 + 8 + 8 + 8 + 1 + 8 + 2 + 1);
        assert_eq!(payload[0], kind::CONFIGURE_BURST);
        assert_eq!(payload[1..5], 0x0A0Bu32.to_le_bytes());
        assert_eq!(payload[5..13], 0x0102u64.to_le_bytes());
        assert_eq!(payload[13..21], 10u64.to_le_bytes());
        assert_eq!(payload[21..29], 1000u64.to_le_bytes());
        assert_eq!(payload[29], Algorithm::TokenBucket as u8);
        assert_eq!(payload[30..38], 50u64.to_le_bytes());
        assert_eq!(payload[38..40], 1u16.to_le_bytes());
        assert_eq!(payload[40], b'k');
        assert_eq!(
            Event::decode(payload, 0).unwrap(),
            configure(plain.with_burst(50).unwrap())
        );

        // A burst equal to the rate, zero, too large, or on another algorithm is refused.
        for (burst, code) in [(10u64, 1u8), (0, 1), (MAX_RATE + 1, 1), (50, 2), (50, 3)] {
            let mut bad = payload.to_vec();
            bad[29] = code;
            bad[30..38].copy_from_slice(&burst.to_le_bytes());
            let err = Event::decode(&bad, 100).unwrap_err();
            assert_eq!(err.offset, 130, "burst {burst}, algorithm {code}: {err:?}");
        }
        assert!(Event::decode(&payload[..35], 0).is_err(), "short");
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
    fn decode_errors_name_the_absolute_offset_of_the_field() {
        let mut frame = Vec::new();
        events()[0].encode_frame(&mut frame);
        let payload = &mut frame[FRAME_HEADER_LEN as usize..];
        // The algorithm code: after kind, id, at, rate, per.
        let code_at = 1 + 4 + 8 + 8 + 8;
        payload[code_at] = 9;
        let err = Event::decode(payload, 1000).unwrap_err();
        assert_eq!(
            err,
            DecodeError::new(1000 + code_at as u64, DecodeReason::UnknownAlgorithm(9))
        );
        let short = Event::decode(&payload[..10], 1000).unwrap_err();
        assert_eq!(short.offset, 1005);
        assert_eq!(short.reason, DecodeReason::Truncated { field: "time" });
        let mut log = vec![0u8; 40];
        events()[1].encode_frame(&mut log);
        *log.last_mut().unwrap() ^= 1;
        assert_eq!(
            read_frame(&log, 40),
            Frame::Bad(DecodeError::new(
                40,
                DecodeReason::ChecksumMismatch { what: "record" }
            ))
        );
    }

    #[test]
    fn decoding_never_panics_on_garbage() {
        for len in 0..64 {
            let garbage: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            let _ = Event::decode(&garbage, 0);
            let _ = read_frame(&garbage, 0);
        }
        assert!(Event::decode(
            &[
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
            ],
            0
        )
        .is_err());
    }
}
