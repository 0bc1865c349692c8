//! Opening a data directory: snapshot + log tail, torn-tail repair, corruption checks.
//!
//! Nothing on disk is changed until the whole log has been read and judged: a damaged
//! record followed by valid ones is an error that leaves every file as it was.

use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::storage::backend::{Backend, LogFile};
use crate::storage::format::{
    decode_log_header, encode_log_header, FRAME_HEADER_LEN, LOG_FILE, LOG_HEADER_LEN,
    SNAPSHOT_FILE, TEMP_SUFFIX,
};
use crate::storage::record::{find_valid_frame_after, read_frame, Event, Frame};
use crate::storage::snapshot::{self, Covers};

/// A torn final record that recovery cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornTail {
    /// Offset of the torn record in the log.
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes: u64,
}

/// The outcome of opening a data directory.
pub struct Recovered {
    /// The rebuilt state.
    pub registry: Registry,
    /// The open log, positioned at its logical end.
    pub log: Box<dyn LogFile>,
    /// The log's generation.
    pub generation: u64,
    /// What the snapshot covered, if there was one.
    pub snapshot: Option<Covers>,
    /// Records replayed from the log.
    pub replayed: u64,
    /// The torn tail cut on this open, if any.
    pub torn: Option<TornTail>,
}

/// Where replay starts in a log of generation `log_generation`, given the snapshot.
fn replay_start(backend: &dyn Backend, log_generation: u64, covers: Option<Covers>) -> Result<u64> {
    let corrupt = |reason: String| Error::Corrupt {
        file: backend.path(LOG_FILE),
        offset: 0,
        reason,
    };
    match covers {
        None if log_generation == 0 => Ok(LOG_HEADER_LEN),
        None => Err(corrupt(format!(
            "the log is generation {log_generation}, which follows a compaction, but {SNAPSHOT_FILE} is missing"
        ))),
        Some(c) if c.generation == log_generation => Ok(c.offset),
        // The crash came after the new log replaced the old one: it holds only records
        // after the snapshot's position.
        Some(c) if c.generation + 1 == log_generation => Ok(LOG_HEADER_LEN),
        Some(c) => Err(corrupt(format!(
            "the log is generation {log_generation} but {SNAPSHOT_FILE} covers generation {}",
            c.generation
        ))),
    }
}

/// Opens the data directory behind `backend`: loads the snapshot, replays the log tail,
/// cuts a torn final record, and returns the state and the log ready for appending.
pub fn recover(backend: &dyn Backend, history_capacity: usize) -> Result<Recovered> {
    let snapshot_path = backend.path(SNAPSHOT_FILE);
    let log_path = backend.path(LOG_FILE);
    let (mut registry, covers) = match backend
        .read(SNAPSHOT_FILE)
        .map_err(|e| Error::io("read", &snapshot_path, e))?
    {
        None => (Registry::new(history_capacity), None),
        Some(bytes) => match snapshot::decode(&bytes, history_capacity) {
            Ok((registry, covers)) => (registry, Some(covers)),
            Err(e) => return Err(e.into_error(snapshot_path)),
        },
    };

    let Some(bytes) = backend
        .read(LOG_FILE)
        .map_err(|e| Error::io("read", &log_path, e))?
    else {
        if covers.is_some() {
            return Err(Error::Corrupt {
                file: log_path,
                offset: 0,
                reason: format!("the log is missing while {SNAPSHOT_FILE} exists"),
            });
        }
        // A new data directory.
        remove_temp_files(backend)?;
        let log = backend
            .create_log(LOG_FILE, &encode_log_header(0))
            .map_err(|e| Error::io("create", &log_path, e))?;
        return Ok(Recovered {
            registry,
            log,
            generation: 0,
            snapshot: None,
            replayed: 0,
            torn: None,
        });
    };

    let generation = match decode_log_header(&bytes) {
        Ok(header) => header.generation,
        Err(e) => return Err(e.into_error(log_path)),
    };
    let start = replay_start(backend, generation, covers)?;

    let mut at = LOG_HEADER_LEN as usize;
    let mut replayed = 0;
    let mut start_seen = false;
    let end = loop {
        if at as u64 == start {
            start_seen = true;
        }
        match read_frame(&bytes, at) {
            Frame::Valid { payload, next } => {
                if start_seen {
                    let event =
                        Event::decode(payload, at as u64 + FRAME_HEADER_LEN).map_err(|e| {
                            Error::Corrupt {
                                file: log_path.clone(),
                                offset: at as u64,
                                reason: e.to_string(),
                            }
                        })?;
                    registry.apply(&event).map_err(|reason| Error::Corrupt {
                        file: log_path.clone(),
                        offset: at as u64,
                        reason: reason.to_string(),
                    })?;
                    replayed += 1;
                }
                at = next;
            }
            Frame::End => break at,
            Frame::Bad(e) => {
                if let Some(valid) = find_valid_frame_after(&bytes, at) {
                    return Err(Error::Corrupt {
                        file: log_path,
                        offset: at as u64,
                        reason: format!(
                            "{}, and a valid record follows at offset {valid}",
                            e.reason
                        ),
                    });
                }
                break at;
            }
        }
    };
    if !start_seen {
        return Err(Error::Corrupt {
            file: log_path,
            offset: start,
            reason: format!(
                "{SNAPSHOT_FILE} covers the log up to offset {start}, which is not a record boundary of the log"
            ),
        });
    }
    // Whatever follows the end is a torn record (its bytes are not all zero). A valid
    // record after a zero length is damage in the middle, not a tail.
    let rest = bytes.get(end..).unwrap_or(&[]);
    let torn = match rest.iter().rposition(|b| *b != 0) {
        None => None,
        Some(last) => {
            if let Some(valid) = find_valid_frame_after(&bytes, end) {
                return Err(Error::Corrupt {
                    file: log_path,
                    offset: end as u64,
                    reason: format!(
                        "the log has a gap of zeros, and a valid record follows at offset {valid}"
                    ),
                });
            }
            Some(TornTail {
                offset: end as u64,
                bytes: last as u64 + 1,
            })
        }
    };

    // The log is judged; only now is anything on disk changed.
    if let Some(torn) = torn {
        backend
            .cut_log(LOG_FILE, torn.offset)
            .map_err(|e| Error::io("cut the torn tail of", &log_path, e))?;
    }
    remove_temp_files(backend)?;
    let log = backend
        .open_log(LOG_FILE, end as u64)
        .map_err(|e| Error::io("open", &log_path, e))?;
    Ok(Recovered {
        registry,
        log,
        generation,
        snapshot: covers,
        replayed,
        torn,
    })
}

/// Removes files left by a compaction that crashed before its rename.
fn remove_temp_files(backend: &dyn Backend) -> Result<()> {
    for name in [SNAPSHOT_FILE, LOG_FILE] {
        let temp = format!("{name}{TEMP_SUFFIX}");
        backend
            .remove(&temp)
            .map_err(|e| Error::io("remove", backend.path(&temp), e))?;
    }
    Ok(())
}
