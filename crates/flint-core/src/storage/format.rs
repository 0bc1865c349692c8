//! File names, magic bytes and versions of the data directory. See
//! `docs/storage-format.md` for the byte-level description.

use crate::storage::codec::{Cursor, DecodeError, DecodeReason};

/// The exclusive lock file; holds the owner's pid as text.
pub const LOCK_FILE: &str = "flint.lock";
/// The append-only log.
pub const LOG_FILE: &str = "flint.aof";
/// The snapshot written by compaction.
pub const SNAPSHOT_FILE: &str = "flint.snapshot";
/// Suffix of files being written before their atomic rename.
pub const TEMP_SUFFIX: &str = ".tmp";

/// Magic bytes at the start of the log.
pub const LOG_MAGIC: [u8; 8] = *b"FLINTLOG";
/// Magic bytes at the start of the snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"FLINTSNP";
/// The log format version this build writes; it reads every version from 1 up to it.
pub const LOG_VERSION: u32 = 2;
/// The newest snapshot format version this build writes; it reads every version from 1
/// up to it. Versioned apart from the log: each file changes on its own. Version 3 adds
/// each key's burst; version 4 each key's mode, template and shadow denials, and each
/// template's summary of dropped keys. A snapshot is written in the oldest version that
/// can hold its state (see [`snapshot_version_for`]), so a directory that uses none of
/// the newer features is byte for byte what earlier builds wrote.
pub const SNAPSHOT_VERSION: u32 = 4;
/// The snapshot version written when no key has a burst, a mode or a template.
pub const SNAPSHOT_VERSION_WITHOUT_BURSTS: u32 = 2;

/// The oldest snapshot version that holds a state with these features.
pub fn snapshot_version_for(bursts: bool, templates_or_shadow: bool) -> u32 {
    if templates_or_shadow {
        4
    } else if bursts {
        3
    } else {
        SNAPSHOT_VERSION_WITHOUT_BURSTS
    }
}

/// Length of the log header: magic, version, flags, generation, reserved, crc32c.
pub const LOG_HEADER_LEN: u64 = 32;
/// Length of a record frame's header: payload length and payload crc32c.
pub const FRAME_HEADER_LEN: u64 = 8;
/// The largest payload a record may have (a configure with a 1 KiB key is ~1 KiB;
/// a check-all is bounded by [`MAX_CHECK_ALL_ITEMS`]).
pub const MAX_PAYLOAD_LEN: u32 = 1 << 20;
/// The most distinct keys one check-all may name.
pub const MAX_CHECK_ALL_ITEMS: usize = 4096;
/// The longest key, in bytes of UTF-8.
pub const MAX_KEY_LEN: usize = 1024;

/// Record kinds: the first byte of every payload. Persisted: never renumber.
pub mod kind {
    /// A limit was created or changed.
    pub const CONFIGURE: u8 = 1;
    /// A check was allowed and consumed its cost.
    pub const CHECK_ALLOWED: u8 = 2;
    /// A check was denied and consumed nothing.
    pub const CHECK_DENIED: u8 = 3;
    /// An all-or-nothing check of several keys, without saying which keys lacked room
    /// (written by log version 1 only; still read).
    pub const CHECK_ALL: u8 = 4;
    /// A key was reset to full capacity.
    pub const RESET: u8 = 5;
    /// A limit was removed.
    pub const REMOVE: u8 = 6;
    /// The log was synced (`fdatasync`) through a byte offset of this log: the
    /// durability watermark. Changes no limiter state. Since log version 2.
    pub const SYNCED: u8 = 7;
    /// An all-or-nothing check of several keys, with a flags byte per key saying
    /// whether it lacked room. Since log version 2.
    pub const CHECK_ALL_PER_KEY: u8 = 8;
    /// Units consumed earlier were given back (a refund that changed the key's state;
    /// one that changed nothing is not written). Added within log version 2 (earlier
    /// version 2 builds refuse it as an unknown kind).
    pub const REFUND: u8 = 9;
    /// A limit with a burst (a token bucket whose capacity differs from its rate) was
    /// created or changed: a [`CONFIGURE`] with the burst after the algorithm code. A
    /// limit without one is still written as a `CONFIGURE`, so logs without bursts are
    /// byte for byte what earlier builds wrote. Added within log version 2 (earlier
    /// version 2 builds refuse it as an unknown kind).
    pub const CONFIGURE_BURST: u8 = 10;
    /// A limit in a mode other than enforce (a shadow limit) was created or changed: a
    /// [`CONFIGURE_BURST`] whose burst is always present (the rate when it has none),
    /// followed by the mode code (1 = shadow). An enforced limit is still written as a
    /// `CONFIGURE` or `CONFIGURE_BURST`. Added within log version 2.
    pub const CONFIGURE_MODE: u8 = 11;
    /// A key was made from a template: its key id (a free one), the time, the
    /// template's key id and the key. Written just before the first decision on a key
    /// that holds no state. Added within log version 2.
    pub const DERIVE: u8 = 12;
    /// Keys made from templates with ids in `from..to` that were at full capacity at
    /// the record's time were dropped (their counters went into their template's
    /// summary). Written only when it drops at least one. Added within log version 2.
    pub const SWEEP: u8 = 13;
}

/// Flags of one key of a [`kind::CHECK_ALL_PER_KEY`] record. Persisted.
pub mod check_all_flags {
    /// The key lacked room for its cost (it is why a denied check-all was denied).
    pub const LACKED_ROOM: u8 = 1;
}

/// Flags of one history entry in a snapshot (version 2; version 1 has 0 or 1 for
/// allowed). Persisted.
pub mod history_flags {
    /// The decision allowed the request.
    pub const ALLOWED: u8 = 1;
    /// Denied only because another key of the same check-all lacked room.
    pub const BLOCKED_BY_OTHER: u8 = 2;
    /// A shadow limit allowed a request it would have denied (with `ALLOWED`). Since
    /// snapshot version 4.
    pub const SHADOW_DENIED: u8 = 4;
}

/// Encodes the log header for `generation`, at the current [`LOG_VERSION`].
pub fn encode_log_header(generation: u64, salt: u32) -> [u8; LOG_HEADER_LEN as usize] {
    let mut header = [0u8; LOG_HEADER_LEN as usize];
    let mut body = Vec::with_capacity(LOG_HEADER_LEN as usize);
    body.extend_from_slice(&LOG_MAGIC);
    body.extend_from_slice(&LOG_VERSION.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&generation.to_le_bytes());
    body.extend_from_slice(&salt.to_le_bytes());
    let crc = crc32c::crc32c(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    header.copy_from_slice(&body);
    header
}

/// A decoded log header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHeader {
    /// The format version the log was written in.
    pub version: u32,
    /// The log's generation: 0 for a new directory, +1 at every compaction.
    pub generation: u64,
    /// A random number chosen when the log was created (0 in version 1), which its
    /// `synced` records repeat: bytes that merely look like a `synced` record (inside a
    /// key, say) do not have it.
    pub salt: u32,
}

/// A fresh random salt for a new log (see [`LogHeader::salt`]).
pub fn new_log_salt() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    // std's RandomState is seeded from the operating system's randomness.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish() as u32
}

/// Decodes the log header at the start of `bytes`.
pub fn decode_log_header(bytes: &[u8]) -> Result<LogHeader, DecodeError> {
    let truncated = DecodeError::new(
        0,
        DecodeReason::Truncated {
            field: "log header",
        },
    );
    let header = bytes
        .get(..LOG_HEADER_LEN as usize)
        .ok_or(truncated.clone())?;
    let (body, _) = header.split_at_checked(28).ok_or(truncated)?;
    let mut c = Cursor::new(header, 0);
    if c.take(8, "magic")? != LOG_MAGIC {
        return Err(DecodeError::new(
            0,
            DecodeReason::BadMagic {
                expected: "FLINTLOG",
            },
        ));
    }
    let version_at = c.offset();
    let version = c.u32("format version")?;
    c.u32("reserved field")?;
    let generation = c.u64("generation")?;
    let salt = c.u32("salt")?;
    // The checksum covers the bytes before it: report the damage at their start.
    if crc32c::crc32c(body) != c.u32("header checksum")? {
        return Err(DecodeError::new(
            0,
            DecodeReason::ChecksumMismatch { what: "log header" },
        ));
    }
    if !(1..=LOG_VERSION).contains(&version) {
        return Err(DecodeError::new(
            version_at,
            DecodeReason::UnsupportedVersion {
                found: version,
                supported: LOG_VERSION,
            },
        ));
    }
    Ok(LogHeader {
        version,
        generation,
        salt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_logs_are_version_2_and_version_1_headers_still_read() {
        let header = encode_log_header(3, 9);
        assert_eq!(header[8..12], 2u32.to_le_bytes());
        let mut v1 = header;
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32c::crc32c(&v1[..28]);
        v1[28..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_log_header(&v1),
            Ok(LogHeader {
                version: 1,
                generation: 3,
                salt: 9,
            })
        );
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let header = encode_log_header(7, 9);
        assert_eq!(
            decode_log_header(&header),
            Ok(LogHeader {
                version: LOG_VERSION,
                generation: 7,
                salt: 9,
            })
        );
        let mut damaged = header;
        damaged[17] ^= 1;
        assert_eq!(
            decode_log_header(&damaged).unwrap_err().reason,
            DecodeReason::ChecksumMismatch { what: "log header" }
        );
        assert_eq!(
            decode_log_header(&header[..10]).unwrap_err().reason,
            DecodeReason::Truncated {
                field: "log header"
            }
        );
        let mut newer = header;
        newer[8] = 3;
        let crc = crc32c::crc32c(&newer[..28]);
        newer[28..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_log_header(&newer).unwrap_err(),
            DecodeError::new(
                8,
                DecodeReason::UnsupportedVersion {
                    found: 3,
                    supported: 2
                }
            )
        );
        let mut other = header;
        other[0] = b'X';
        assert!(matches!(
            decode_log_header(&other).unwrap_err().reason,
            DecodeReason::BadMagic { .. }
        ));
    }
}
