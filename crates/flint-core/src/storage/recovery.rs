//! Opening a data directory: snapshot + log tail, cutting what a crash left past the
//! log's end, refusing damage.
//!
//! The rule that tells a power loss's leftovers from damage is the **durability
//! watermark**: the highest offset of the log known to have been synced. It is the
//! largest of the header's end and every `synced` record in the log (the engine writes
//! one after each sync that moved the durable end; each is checksummed, so a torn write
//! cannot fake one). Below the watermark the disk held
//! every byte before the power went: a bad record there is damage (bit rot, an edit)
//! and opening refuses with `Corrupt`. At or past it, pages may have reached the disk
//! in any order, so the log ends at the first bad record and whatever follows is cut,
//! valid records after a gap of zeros included. Version 1 logs have no watermark: they
//! keep the old rule (a bad record followed by a valid one is damage).
//!
//! In a version 2 log the watermark is at least a same-generation snapshot's offset:
//! compaction syncs the log through it before writing the snapshot. A version 1 log
//! (Flint 0.1 wrote the snapshot first) may hold less than its snapshot covers; the
//! snapshot then holds the whole state by itself: the log is restarted at the next
//! generation, and the difference is reported like a torn tail.
//!
//! Nothing on disk is changed until the whole log has been judged.

use std::path::PathBuf;

use crate::error::{describe_start, Error, Result};
use crate::registry::Registry;
use crate::storage::backend::{Backend, LogFile};
use crate::storage::codec::{DecodeError, DecodeReason};
use crate::storage::format::{
    decode_log_header, encode_log_header, new_log_salt, FRAME_HEADER_LEN, LOG_FILE, LOG_HEADER_LEN,
    LOG_MAGIC, SNAPSHOT_FILE, SNAPSHOT_MAGIC,
};
use crate::storage::record::{find_valid_frame_after, read_frame, Event, Frame};
use crate::storage::replace::{self, temp_name, ReplaceError};
use crate::storage::snapshot;

/// How much a new log reserves up front.
pub const NEW_LOG_CAPACITY: u64 = 1 << 20;

/// What recovery cut from the end of the log (reported by `doctor` as `torn_tail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornTail {
    /// Offset of the log's new end.
    pub offset: u64,
    /// How many bytes were cut (or, when the snapshot covered more than the log held,
    /// how many bytes of log the snapshot stood in for).
    pub bytes: u64,
    /// Valid records found past the cut (a power loss that wrote pages out of order);
    /// none of them had been synced.
    pub records: u64,
    /// Whether the snapshot covered more than the log held.
    pub snapshot_ahead: bool,
}

/// The outcome of opening a data directory.
pub struct Recovered {
    /// The rebuilt state.
    pub registry: Registry,
    /// The open log, positioned at its logical end; every byte of it is synced.
    pub log: Box<dyn LogFile>,
    /// The log's generation.
    pub generation: u64,
    /// Records replayed from the log.
    pub replayed: u64,
    /// What was cut on this open, if anything.
    pub torn: Option<TornTail>,
    /// The offset the last `synced` record of the log names (`LOG_HEADER_LEN` if
    /// none): the engine writes a new one once the durable end passes it.
    pub marked_through: u64,
    /// The log's salt, which its `synced` records repeat.
    pub salt: u32,
}

/// Opens the data directory behind `backend`: loads the snapshot, replays the log tail,
/// cuts what lies past the log's end, and returns the state and the log, synced and
/// ready for appending.
pub fn recover(backend: &dyn Backend, history_capacity: usize) -> Result<Recovered> {
    let snapshot_path = backend.path(SNAPSHOT_FILE);
    let log_path = backend.path(LOG_FILE);
    let corrupt = |offset: u64, reason: String| Error::Corrupt {
        file: backend.path(LOG_FILE),
        offset,
        reason,
    };
    let (mut registry, covers) = match backend
        .read(SNAPSHOT_FILE)
        .map_err(|e| Error::io("read", &snapshot_path, e))?
    {
        None => (Registry::new(history_capacity), None),
        Some(bytes) => match snapshot::decode(&bytes, history_capacity) {
            Ok((registry, covers)) => (registry, Some(covers)),
            Err(e) => return Err(decode_failure(e, snapshot_path, &bytes)),
        },
    };

    let Some(bytes) = backend
        .read(LOG_FILE)
        .map_err(|e| Error::io("read", &log_path, e))?
    else {
        if covers.is_some() {
            return Err(corrupt(
                0,
                format!("the log is missing while {SNAPSHOT_FILE} exists"),
            ));
        }
        // A new data directory.
        remove_temp_files(backend)?;
        let (log, salt) = new_log(backend, 0, &[])?;
        return Ok(Recovered {
            registry,
            log,
            generation: 0,
            replayed: 0,
            torn: None,
            marked_through: LOG_HEADER_LEN,
            salt,
        });
    };

    let (generation, version, salt) = match decode_log_header(&bytes) {
        Ok(header) => (header.generation, header.version, header.salt),
        Err(e) => return Err(decode_failure(e, log_path, &bytes)),
    };
    let start = match covers {
        None if generation == 0 => LOG_HEADER_LEN,
        None => {
            return Err(corrupt(0, format!(
                "the log is generation {generation}, which follows a compaction, but {SNAPSHOT_FILE} is missing"
            )))
        }
        Some(c) if c.generation == generation => c.offset,
        // The crash came after the new log replaced the old one: it holds only records
        // after the snapshot's position.
        Some(c) if c.generation + 1 == generation => LOG_HEADER_LEN,
        Some(c) => {
            return Err(corrupt(0, format!(
                "the log is generation {generation} but {SNAPSHOT_FILE} covers generation {}",
                c.generation
            )))
        }
    };
    // Compaction syncs the log through what its snapshot covers before writing it, so
    // in a version 2 log everything before a same-generation snapshot's offset was
    // synced too.
    let watermark = if version == 1 {
        None
    } else {
        let covered = covers
            .filter(|c| c.generation == generation)
            .map_or(LOG_HEADER_LEN, |c| c.offset);
        Some(watermark(&bytes, salt, &log_path)?.max(covered))
    };

    // Walk the records: replay those past the snapshot's position, find the end.
    let mut at = LOG_HEADER_LEN as usize;
    let mut replayed = 0;
    let mut start_seen = false;
    let mut marked_through = LOG_HEADER_LEN;
    // Derive records at the end of the log with no record after them but watermarks:
    // the engine writes every derive just before the decision that made it, so the
    // decision was lost (a power loss kept a prefix of the write, or the decision's own
    // append failed), and they are cut like a torn tail: the keys they made were at
    // full capacity with no decision, so nothing is lost. Where the run starts, the
    // watermark then, the keys, the count.
    let mut trailing_derives: Option<(usize, u64, Vec<u32>, u64)> = None;
    let end = loop {
        if at as u64 == start {
            start_seen = true;
        }
        let bad = match read_frame(&bytes, at) {
            Frame::Valid { payload, next } => {
                let event = Event::decode(payload, at as u64 + FRAME_HEADER_LEN)
                    .map_err(|e| e.into_error(&log_path))?;
                if start_seen {
                    match event {
                        Event::Derive { id, .. } => {
                            let run =
                                trailing_derives.get_or_insert((at, marked_through, Vec::new(), 0));
                            run.2.push(id);
                            run.3 += 1;
                        }
                        Event::Synced { .. } => {}
                        _ => trailing_derives = None,
                    }
                }
                if let Event::Synced {
                    through, salt: of, ..
                } = event
                {
                    if of == salt {
                        marked_through = marked_through.max(through);
                    }
                }
                if start_seen {
                    // Watermarks are bookkeeping: `replayed` counts decisions and changes.
                    if !matches!(event, Event::Synced { .. }) {
                        replayed += 1;
                    }
                    registry
                        .apply(&event)
                        .map_err(|reason| corrupt(at as u64, reason.to_string()))?;
                }
                at = next;
                continue;
            }
            Frame::End => None,
            Frame::Bad(e) => Some(e.reason.to_string()),
        };
        // The log ends here. Below the watermark nothing may be missing.
        match watermark {
            Some(mark) if (at as u64) < mark => {
                let what = bad.unwrap_or_else(|| "the log has a gap of zeros".to_owned());
                return Err(corrupt(at as u64, format!(
                    "{what}, inside the part of the log that was synced (through offset {mark}): the disk changed what was written"
                )));
            }
            Some(_) => {}
            None => {
                if let Some(valid) = find_valid_frame_after(&bytes, at) {
                    let what = bad.unwrap_or_else(|| "the log has a gap of zeros".to_owned());
                    return Err(corrupt(
                        at as u64,
                        format!("{what}, and a valid record follows at offset {valid}"),
                    ));
                }
            }
        }
        break at;
    };
    // A decision lost after its derive records: the keys they made go, and the log ends
    // before them (the engine never wrote a derive that no decision follows).
    let end = match trailing_derives {
        Some((offset, marked, ids, records)) => {
            for id in ids {
                registry.drop_undecided(id);
            }
            marked_through = marked;
            replayed -= records;
            offset
        }
        None => end,
    };

    let rest = bytes.get(end..).unwrap_or(&[]);
    let mut torn = rest.iter().rposition(|b| *b != 0).map(|last| TornTail {
        offset: end as u64,
        bytes: last as u64 + 1,
        records: count_valid_after(&bytes, end),
        snapshot_ahead: false,
    });

    if !start_seen && start > end as u64 {
        // (Version 1 only: in version 2 the snapshot's offset is below the watermark.)
        // The snapshot covers records the log lost (Flint 0.1 wrote a snapshot before
        // syncing the log it covered, and a power loss kept the one but not the other):
        // the snapshot alone holds the state. Start the next generation's log, empty, as
        // compaction would have.
        remove_temp_files(backend)?;
        let (log, salt) = new_log(backend, generation + 1, &[])?;
        return Ok(Recovered {
            registry,
            log,
            generation: generation + 1,
            replayed,
            torn: Some(TornTail {
                offset: end as u64,
                bytes: start - end as u64,
                records: torn.map_or(0, |t| t.records),
                snapshot_ahead: true,
            }),
            marked_through: LOG_HEADER_LEN,
            salt,
        });
    }
    if !start_seen {
        return Err(corrupt(start, format!(
            "{SNAPSHOT_FILE} covers the log up to offset {start}, which is not a record boundary of the log"
        )));
    }

    // The log is judged; only now is anything on disk changed.
    remove_temp_files(backend)?;
    if version == 1 {
        // Rewrite as version 2 (same generation, same offsets: the header is as long),
        // so the log gets a watermark from here on.
        let records = bytes.get(LOG_HEADER_LEN as usize..end).unwrap_or(&[]);
        let (log, salt) = new_log(backend, generation, records)?;
        return Ok(Recovered {
            registry,
            log,
            generation,
            replayed,
            torn: torn.take(),
            marked_through: LOG_HEADER_LEN,
            salt,
        });
    }
    if let Some(torn) = torn {
        replace::cut(backend, LOG_FILE, torn.offset)
            .map_err(|e| Error::io("cut the torn tail of", &log_path, e))?;
    }
    let file = backend
        .open(LOG_FILE)
        .map_err(|e| Error::io("open", &log_path, e))?;
    let log = file
        .into_log(end as u64)
        .map_err(|e| Error::io("open", &log_path, e))?;
    // What was read may have been only in the page cache (after a kill): make it
    // durable, so that the engine's first watermark is true.
    log.syncer()
        .sync()
        .map_err(|e| Error::io("sync", &log_path, e))?;
    Ok(Recovered {
        registry,
        log,
        generation,
        replayed,
        torn,
        marked_through,
        salt,
    })
}

/// The error for a file that does not decode: another program's file (its magic is
/// not Flint's) is named as such, not as damage that repair could mend.
pub(crate) fn decode_failure(e: DecodeError, file: PathBuf, bytes: &[u8]) -> Error {
    let magics = [&LOG_MAGIC[..], &SNAPSHOT_MAGIC[..]];
    let start = bytes.get(..bytes.len().min(8)).unwrap_or_default();
    let foreign = !start.iter().all(|b| *b == 0) && !magics.iter().any(|m| m.starts_with(start));
    if matches!(e.reason, DecodeReason::BadMagic { .. }) || foreign {
        return Error::NotFlint {
            file,
            found: describe_start(bytes),
        };
    }
    e.into_error(file)
}

/// The durability watermark of a version 2 log (see the module documentation): every
/// valid `synced` record counts, also those past damage or a gap.
fn watermark(bytes: &[u8], salt: u32, log_path: &std::path::Path) -> Result<u64> {
    let mut mark = LOG_HEADER_LEN;
    let mut at = LOG_HEADER_LEN as usize;
    loop {
        match read_frame(bytes, at) {
            Frame::Valid { payload, next } => {
                let base = at as u64 + FRAME_HEADER_LEN;
                // Only this log's own records count: the salt sets them apart from
                // bytes that happen to look like one (inside a key, found past a gap).
                if let Ok(Event::Synced {
                    through, salt: of, ..
                }) = Event::decode(payload, base)
                {
                    if of != salt {
                        at = next;
                        continue;
                    }
                    if through > at as u64 {
                        return Err(Error::Corrupt {
                            file: log_path.to_path_buf(),
                            offset: at as u64,
                            reason: format!(
                                "a synced record at offset {at} claims the log was synced through offset {through}, past itself"
                            ),
                        });
                    }
                    mark = mark.max(through);
                }
                at = next;
            }
            Frame::End | Frame::Bad(_) => {
                // Look past the damage or the gap only if something non-zero follows.
                if bytes
                    .get(at..)
                    .is_none_or(|rest| rest.iter().all(|b| *b == 0))
                {
                    return Ok(mark);
                }
                match find_valid_frame_after(bytes, at) {
                    Some(valid) => at = valid,
                    None => return Ok(mark),
                }
            }
        }
    }
}

/// Valid records anywhere past `from` (what an out-of-order write-back left).
fn count_valid_after(bytes: &[u8], from: usize) -> u64 {
    let mut count = 0;
    let mut at = from;
    while let Some(valid) = find_valid_frame_after(bytes, at) {
        let mut cursor = valid;
        while let Frame::Valid { next, .. } = read_frame(bytes, cursor) {
            count += 1;
            cursor = next;
        }
        at = cursor;
    }
    count
}

/// Replaces the log with a new one of `generation` holding `records` (whose
/// durability the replace makes certain).
fn new_log(
    backend: &dyn Backend,
    generation: u64,
    records: &[u8],
) -> Result<(Box<dyn LogFile>, u32)> {
    let salt = new_log_salt();
    let mut content = encode_log_header(generation, salt).to_vec();
    content.extend_from_slice(records);
    let log_path = backend.path(LOG_FILE);
    match replace::replace_log(backend, LOG_FILE, &content, NEW_LOG_CAPACITY) {
        Ok(new) => {
            new.dir_synced
                .map_err(|e| Error::io("sync the directory of", &log_path, e))?;
            Ok((new.log, salt))
        }
        Err(ReplaceError::NotReplaced(e) | ReplaceError::Unsynced(e)) => {
            Err(Error::io("create", &log_path, e))
        }
    }
}

/// Removes files left by a replace that crashed before its rename.
fn remove_temp_files(backend: &dyn Backend) -> Result<()> {
    for name in [SNAPSHOT_FILE, LOG_FILE] {
        let temp = temp_name(name);
        backend
            .remove(&temp)
            .map_err(|e| Error::io("remove", backend.path(&temp), e))?;
    }
    Ok(())
}
