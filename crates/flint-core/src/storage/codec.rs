//! The one byte reader of the storage layer: every decoder (log header, record frames,
//! payloads, snapshot) reads through [`Cursor`] or, for the fixed layout of the hot
//! check record, [`Fixed`], and fails with one typed [`DecodeError`].
//!
//! Offsets in errors are absolute within the file whenever the caller gives the base
//! offset of the bytes it decodes, so a message can point at the byte.

use std::fmt;
use std::path::PathBuf;

use crate::error::Error;

/// Why bytes could not be decoded, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset of the offending field (absolute within the file when the decoder
    /// was given its base offset).
    pub offset: u64,
    /// What is wrong there.
    pub reason: DecodeReason,
}

/// What is wrong with bytes that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeReason {
    /// The bytes end inside `field`.
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// The file does not start with the expected magic bytes.
    BadMagic {
        /// The magic expected, as text.
        expected: &'static str,
    },
    /// A checksum does not match the bytes it covers.
    ChecksumMismatch {
        /// What the checksum covers: "header", "record", "snapshot".
        what: &'static str,
    },
    /// A format version this build does not read.
    UnsupportedVersion {
        /// The version found.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A record frame claims a payload length of zero with a checksum, or above the
    /// largest payload.
    ImpossibleLength(u32),
    /// A record kind this build does not know.
    UnknownKind(u8),
    /// An algorithm code this build does not know.
    UnknownAlgorithm(u8),
    /// A text field is not UTF-8.
    NotUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A field holds a value it can never hold.
    BadValue {
        /// The field.
        field: &'static str,
        /// Why the value is impossible.
        why: String,
    },
    /// Bytes follow the last field.
    TrailingBytes(usize),
    /// Well-formed bytes describe a state the engine can never produce (an invariant
    /// of the limiter does not hold): the file was edited or damaged and its checksum
    /// recomputed.
    Inconsistent(String),
}

impl fmt::Display for DecodeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeReason::Truncated { field } => write!(f, "the bytes end inside the {field}"),
            DecodeReason::BadMagic { expected } => {
                write!(f, "the file does not start with {expected}")
            }
            DecodeReason::ChecksumMismatch { what } => {
                write!(f, "the {what}'s checksum does not match")
            }
            DecodeReason::UnsupportedVersion { found, supported } => write!(
                f,
                "format version {found} is not one this build reads (1 to {supported})"
            ),
            DecodeReason::ImpossibleLength(len) => {
                write!(f, "a record claims an impossible length ({len} bytes)")
            }
            DecodeReason::UnknownKind(kind) => write!(f, "unknown record kind {kind}"),
            DecodeReason::UnknownAlgorithm(code) => write!(f, "unknown algorithm code {code}"),
            DecodeReason::NotUtf8 { field } => write!(f, "the {field} is not UTF-8"),
            DecodeReason::BadValue { field, why } => write!(f, "the {field} is invalid: {why}"),
            DecodeReason::TrailingBytes(n) => {
                write!(f, "{n} unexpected bytes follow the last field")
            }
            DecodeReason::Inconsistent(why) => f.write_str(why),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.reason, self.offset)
    }
}

impl std::error::Error for DecodeError {}

impl DecodeError {
    /// An error at `offset`.
    pub fn new(offset: u64, reason: DecodeReason) -> Self {
        DecodeError { offset, reason }
    }

    /// A field at `offset` that holds an impossible value, and why.
    pub fn bad_value(offset: u64, field: &'static str, why: impl fmt::Display) -> Self {
        DecodeError::new(
            offset,
            DecodeReason::BadValue {
                field,
                why: why.to_string(),
            },
        )
    }

    /// The engine error for this failure in `file`: `UnsupportedVersion` for another
    /// format version, `Corrupt` (at this error's offset) for everything else.
    pub fn into_error(self, file: impl Into<PathBuf>) -> Error {
        match self.reason {
            DecodeReason::UnsupportedVersion { found, supported } => Error::UnsupportedVersion {
                file: file.into(),
                found,
                supported,
            },
            reason => Error::Corrupt {
                file: file.into(),
                offset: self.offset,
                reason: reason.to_string(),
            },
        }
    }
}

/// A forward reader of little-endian fields that never panics: every read past the
/// end is a [`DecodeReason::Truncated`] error naming the field.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: u64,
}

impl<'a> Cursor<'a> {
    /// A cursor over `bytes`, which start at byte `base` of their file.
    pub fn new(bytes: &'a [u8], base: u64) -> Self {
        Cursor {
            bytes,
            pos: 0,
            base,
        }
    }

    /// The absolute offset of the next byte to read.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// Skips to position `pos` of the bytes (not an absolute offset).
    pub fn seek(&mut self, pos: usize) {
        self.pos = pos;
    }

    /// An error at the next byte to read.
    pub fn error(&self, reason: DecodeReason) -> DecodeError {
        DecodeError::new(self.offset(), reason)
    }

    /// An error at absolute offset `offset` (a field already read).
    pub fn error_at(offset: u64, reason: DecodeReason) -> DecodeError {
        DecodeError::new(offset, reason)
    }

    /// The next `n` bytes, which hold `field`.
    #[inline]
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let slice = self
            .pos
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.pos..end))
            .ok_or_else(|| self.error(DecodeReason::Truncated { field }))?;
        self.pos += n;
        Ok(slice)
    }

    #[inline]
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, field)?;
        <[u8; N]>::try_from(bytes).map_err(|_| self.error(DecodeReason::Truncated { field }))
    }

    /// A `u8`.
    #[inline]
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.array::<1>(field).map(|[b]| b)
    }

    /// A byte that must be 0 (false) or 1 (true).
    pub fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        let at = self.offset();
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::bad_value(
                at,
                field,
                format!("{other} is neither 0 nor 1"),
            )),
        }
    }

    /// A little-endian `u16`.
    #[inline]
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.array(field).map(u16::from_le_bytes)
    }

    /// A little-endian `u32`.
    #[inline]
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_le_bytes)
    }

    /// A little-endian `u64`.
    #[inline]
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// A little-endian `u128`.
    #[inline]
    pub fn u128(&mut self, field: &'static str) -> Result<u128, DecodeError> {
        self.array(field).map(u128::from_le_bytes)
    }

    /// A `u32` count of items of `item_len` bytes each that must fit in what is left
    /// (checked before anything is allocated for them).
    pub fn count(&mut self, field: &'static str, item_len: usize) -> Result<usize, DecodeError> {
        let at = self.offset();
        let count = self.u32(field)? as usize;
        if count.saturating_mul(item_len) > self.remaining() {
            return Err(DecodeError::bad_value(
                at,
                field,
                format!(
                    "{count} items do not fit in the {} bytes left",
                    self.remaining()
                ),
            ));
        }
        Ok(count)
    }

    /// A `u16`-length-prefixed UTF-8 string of at most `max_len` bytes.
    pub fn str16(&mut self, field: &'static str, max_len: usize) -> Result<&'a str, DecodeError> {
        let at = self.offset();
        let len = self.u16(field)? as usize;
        if len > max_len {
            return Err(DecodeError::bad_value(
                at,
                field,
                format!("{len} bytes long, longer than {max_len}"),
            ));
        }
        let bytes = self.take(len, field)?;
        std::str::from_utf8(bytes)
            .map_err(|_| Cursor::error_at(at, DecodeReason::NotUtf8 { field }))
    }

    /// Succeeds when every byte was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(self.error(DecodeReason::TrailingBytes(n))),
        }
    }
}

/// A fixed-size view of exactly `N` bytes whose fields sit at offsets known at compile
/// time: the hot path of replay (check records) reads through it without a bounds
/// check or a branch per field. Reads past `N` do not compile.
#[derive(Debug, Clone, Copy)]
pub struct Fixed<'a, const N: usize>(pub &'a [u8; N]);

impl<'a, const N: usize> Fixed<'a, N> {
    /// The view, when `bytes` has exactly `N` bytes.
    #[inline]
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        <&[u8; N]>::try_from(bytes).ok().map(Fixed)
    }

    /// The view of the first `N` bytes of `bytes`, when it has that many.
    #[cfg(test)]
    #[inline]
    pub fn prefix(bytes: &'a [u8]) -> Option<Self> {
        bytes.first_chunk::<N>().map(Fixed)
    }

    #[inline]
    fn array<const AT: usize, const LEN: usize>(self) -> [u8; LEN] {
        const { assert!(AT + LEN <= N, "a fixed field lies past the end") };
        let mut out = [0u8; LEN];
        // In bounds by the assertion above; `get` keeps the indexing lint honest and
        // compiles to nothing.
        if let Some(field) = self.0.get(AT..AT + LEN) {
            out.copy_from_slice(field);
        }
        out
    }

    /// The byte at `AT`.
    #[inline]
    pub fn u8<const AT: usize>(self) -> u8 {
        let [b] = self.array::<AT, 1>();
        b
    }

    /// The little-endian `u32` at `AT`.
    #[inline]
    pub fn u32<const AT: usize>(self) -> u32 {
        u32::from_le_bytes(self.array::<AT, 4>())
    }

    /// The little-endian `u64` at `AT`.
    #[inline]
    pub fn u64<const AT: usize>(self) -> u64 {
        u64::from_le_bytes(self.array::<AT, 8>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_reads_little_endian_fields_and_reports_absolute_offsets() {
        let bytes = [1u8, 2, 0, 3, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0];
        let mut c = Cursor::new(&bytes, 100);
        assert_eq!(c.u8("a").unwrap(), 1);
        assert_eq!(c.u16("b").unwrap(), 2);
        assert_eq!(c.u32("c").unwrap(), 3);
        assert_eq!(c.offset(), 107);
        let err = c.u64("d").unwrap_err();
        assert_eq!(
            err,
            DecodeError::new(107, DecodeReason::Truncated { field: "d" })
        );
        assert_eq!(err.to_string(), "the bytes end inside the d (at byte 107)");
        assert_eq!(c.remaining(), 7);
        assert_eq!(
            c.finish().unwrap_err().reason,
            DecodeReason::TrailingBytes(7)
        );
    }

    #[test]
    fn counts_that_cannot_fit_are_refused_before_allocating() {
        let mut c = Cursor::new(&[255, 255, 255, 255, 0, 0], 10);
        let err = c.count("items", 12).unwrap_err();
        assert_eq!(err.offset, 10);
        assert!(matches!(
            err.reason,
            DecodeReason::BadValue { field: "items", .. }
        ));
    }

    #[test]
    fn strings_are_bounded_and_utf8() {
        let mut c = Cursor::new(&[2, 0, b'h', b'i'], 0);
        assert_eq!(c.str16("key", 8).unwrap(), "hi");
        let mut long = Cursor::new(&[9, 0], 0);
        assert!(long.str16("key", 8).is_err());
        let mut bad = Cursor::new(&[1, 0, 0xff], 5);
        assert_eq!(
            bad.str16("key", 8).unwrap_err(),
            DecodeError::new(5, DecodeReason::NotUtf8 { field: "key" })
        );
    }

    #[test]
    fn fixed_reads_fields_at_constant_offsets() {
        let bytes = [7u8, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0];
        let f = Fixed::<13>::new(&bytes).unwrap();
        assert_eq!(f.u8::<0>(), 7);
        assert_eq!(f.u32::<1>(), 1);
        assert_eq!(f.u64::<5>(), 2);
        assert!(Fixed::<13>::new(&bytes[..12]).is_none());
        assert_eq!(Fixed::<5>::prefix(&bytes).unwrap().u32::<1>(), 1);
        assert!(Fixed::<14>::prefix(&bytes).is_none());
    }

    #[test]
    fn other_versions_map_to_unsupported_version_and_the_rest_to_corrupt() {
        let version = DecodeError::new(
            8,
            DecodeReason::UnsupportedVersion {
                found: 9,
                supported: 2,
            },
        );
        assert!(matches!(
            version.into_error("f"),
            Error::UnsupportedVersion {
                found: 9,
                supported: 2,
                ..
            }
        ));
        let bad = DecodeError::new(40, DecodeReason::UnknownKind(99));
        assert!(matches!(
            bad.into_error("f"),
            Error::Corrupt { offset: 40, .. }
        ));
    }
}
