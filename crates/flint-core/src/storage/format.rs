//! File names, magic bytes and versions of the data directory. See
//! `docs/storage-format.md` for the byte-level description.

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
/// The snapshot format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// The log format version this build writes. Version 2 added the `synced` record (the
/// durability watermark); version 1 logs are read, and rewritten as version 2 on open.
pub const LOG_VERSION: u32 = 2;

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
    /// An all-or-nothing check of several keys.
    pub const CHECK_ALL: u8 = 4;
    /// A key was reset to full capacity.
    pub const RESET: u8 = 5;
    /// A limit was removed.
    pub const REMOVE: u8 = 6;
    /// The log was synced through an offset (the durability watermark).
    pub const SYNCED: u8 = 7;
}

/// Encodes the log header for `generation`.
pub fn encode_log_header(generation: u64) -> [u8; LOG_HEADER_LEN as usize] {
    let mut header = [0u8; LOG_HEADER_LEN as usize];
    let mut body = Vec::with_capacity(LOG_HEADER_LEN as usize);
    body.extend_from_slice(&LOG_MAGIC);
    body.extend_from_slice(&LOG_VERSION.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&generation.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    let crc = crc32c::crc32c(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    header.copy_from_slice(&body);
    header
}

/// Why a log header could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Not a Flint log, or damaged.
    Invalid(&'static str),
    /// A Flint log of another format version.
    Version(u32),
}

/// Decodes a log header, returning its generation and format version.
pub fn decode_log_header(bytes: &[u8]) -> Result<(u64, u32), HeaderError> {
    let header = bytes
        .get(..LOG_HEADER_LEN as usize)
        .ok_or(HeaderError::Invalid("the file is shorter than its header"))?;
    let (body, crc) = header.split_at(28);
    if body.get(..8) != Some(&LOG_MAGIC[..]) {
        return Err(HeaderError::Invalid(
            "the file does not start with FLINTLOG",
        ));
    }
    if crc32c::crc32c(body) != u32_at(crc, 0) {
        return Err(HeaderError::Invalid("the header checksum does not match"));
    }
    let version = u32_at(body, 8);
    if version != 1 && version != LOG_VERSION {
        return Err(HeaderError::Version(version));
    }
    Ok((u64_at(body, 16), version))
}

/// Reads a little-endian u32 at `at`, or 0 past the end (callers check lengths first).
pub(crate) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// Reads a little-endian u64 at `at`, or 0 past the end (callers check lengths first).
pub(crate) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let header = encode_log_header(7);
        assert_eq!(decode_log_header(&header), Ok((7, LOG_VERSION)));
        let mut damaged = header;
        damaged[17] ^= 1;
        assert!(matches!(
            decode_log_header(&damaged),
            Err(HeaderError::Invalid(_))
        ));
        assert!(matches!(
            decode_log_header(&header[..10]),
            Err(HeaderError::Invalid(_))
        ));
    }
}
