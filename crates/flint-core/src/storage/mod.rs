//! Everything that touches disk: format, records, the log, snapshots, recovery.

pub mod backend;
pub mod file;
pub mod format;
pub mod record;
pub mod recovery;
pub mod repair;
pub mod snapshot;
