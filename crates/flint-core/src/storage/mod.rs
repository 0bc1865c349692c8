//! Everything that touches disk: format, records, the log, snapshots, recovery.
//!
//! Decoders must never panic on bytes read from disk, so indexing and unwrapping are
//! denied here; tests may use them.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod backend;
pub mod codec;
pub mod file;
pub mod format;
pub mod memory;
pub mod record;
pub mod recovery;
pub mod repair;
pub mod replace;
pub mod snapshot;
pub(crate) mod sys;
