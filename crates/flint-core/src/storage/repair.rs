//! Repairing what opening refuses: a damaged record with valid records after it.
//!
//! Opening never discards a valid record. Repair is the one operation that does, so it
//! is split in two: [`plan`] reads the directory and says exactly what would be
//! dropped; [`apply`] keeps a backup copy of the log, then replaces the log with its
//! part before the damage. Damage inside the part of the log that the snapshot already
//! covers drops nothing: the log is rebased on the snapshot instead.

use std::path::PathBuf;

use crate::clock::UnixNanos;
use crate::error::{Error, Result};
use crate::registry::{Registry, DEFAULT_HISTORY_CAPACITY};
use crate::storage::backend::Backend;
use crate::storage::format::{
    decode_log_header, encode_log_header, new_log_salt, FRAME_HEADER_LEN, LOG_FILE, LOG_HEADER_LEN,
    SNAPSHOT_FILE,
};
use crate::storage::record::{find_valid_frame_after, read_frame, strip_synced, Event, Frame};
use crate::storage::recovery::decode_failure;
use crate::storage::recovery::NEW_LOG_CAPACITY;
use crate::storage::replace;
use crate::storage::snapshot;

/// What a repair would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairPlan {
    /// Offset of the first damaged record in the current log.
    pub damaged_at: u64,
    /// Why that record is damaged.
    pub reason: String,
    /// Bytes of the log dropped (from the damage to the last valid record's end).
    pub dropped_bytes: u64,
    /// Valid records after the damage, which are dropped with it.
    pub dropped_records: u64,
    /// Time of the earliest dropped record.
    pub first_dropped_at: Option<UnixNanos>,
    /// Time of the latest dropped record.
    pub last_dropped_at: Option<UnixNanos>,
    /// Whether the damage lies in the part the snapshot covers (nothing is lost then).
    pub rebased: bool,
    /// The new log's content.
    new_log: Vec<u8>,
    /// The log as it is now (the backup's content).
    old_log: Vec<u8>,
}

/// What a repair did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// The plan that was carried out.
    pub plan: RepairPlan,
    /// Where the old log was copied before it was replaced.
    pub backup: PathBuf,
}

/// The first damaged record at or after `from` that has valid records after it.
fn find_damage(log: &[u8], from: usize) -> Option<(usize, String)> {
    let mut at = from;
    loop {
        match read_frame(log, at) {
            Frame::Valid { next, .. } => at = next,
            Frame::End => {
                return find_valid_frame_after(log, at).map(|_| (at, "a gap of zeros".into()));
            }
            Frame::Bad(e) => {
                return find_valid_frame_after(log, at).map(|_| (at, e.reason.to_string()))
            }
        }
    }
}

/// Reads the data directory behind `backend` (whose lock the caller holds) and returns
/// what a repair would do, or `None` when the log has no damage before valid records.
pub fn plan(backend: &dyn Backend) -> Result<Option<RepairPlan>> {
    let log_path = backend.path(LOG_FILE);
    let Some(log) = backend
        .read(LOG_FILE)
        .map_err(|e| Error::io("read", &log_path, e))?
    else {
        return Ok(None);
    };
    // Repair only cuts a log after its header; anything else it refuses, without
    // recommending itself.
    let generation = match decode_log_header(&log) {
        Ok(header) => header.generation,
        Err(e) => {
            if let error @ Error::NotFlint { .. } =
                decode_failure(e.clone(), log_path.clone(), &log)
            {
                return Err(error);
            }
            return Err(Error::Unrepairable {
                file: log_path,
                reason: format!(
                    "the log header is damaged ({}), so repair cannot tell where records start",
                    e.reason
                ),
            });
        }
    };
    let snapshot_path = backend.path(SNAPSHOT_FILE);
    let covers = match backend
        .read(SNAPSHOT_FILE)
        .map_err(|e| Error::io("read", &snapshot_path, e))?
    {
        Some(bytes) => match snapshot::decode(&bytes, DEFAULT_HISTORY_CAPACITY) {
            Ok((registry, covers)) => Some((registry, covers)),
            Err(e) => {
                if let error @ Error::NotFlint { .. } =
                    decode_failure(e.clone(), snapshot_path.clone(), &bytes)
                {
                    return Err(error);
                }
                return Err(Error::Unrepairable {
                    file: snapshot_path,
                    reason: format!(
                        "the snapshot is damaged at byte offset {} ({}); repair mends only the log",
                        e.offset, e.reason
                    ),
                });
            }
        },
        None => None,
    };
    let (registry, covers) = match covers {
        Some((registry, covers)) => (registry, Some(covers)),
        None => (Registry::new(DEFAULT_HISTORY_CAPACITY), None),
    };
    let header = LOG_HEADER_LEN as usize;
    let Some((first_damage, first_reason)) = find_damage(&log, header) else {
        // Every frame is sound, but a record may describe what the engine never
        // writes (opening refuses it): cut the log there.
        let start = match covers {
            Some(c) if c.generation == generation => c.offset as usize,
            _ => header,
        };
        if let Some((at, reason)) = first_refused_record(&log, registry, start) {
            let mut content = log.clone();
            let dropped = count_records(&content, at);
            content.truncate(at);
            return Ok(Some(RepairPlan {
                damaged_at: at as u64,
                reason,
                dropped_bytes: (dropped.end - at) as u64,
                dropped_records: dropped.records,
                first_dropped_at: dropped.first_at,
                last_dropped_at: dropped.last_at,
                rebased: false,
                new_log: content,
                old_log: log,
            }));
        }
        // No valid record after damage, but the log may end before what the snapshot
        // covers (synced bytes lost: opening refuses a version 2 log then). The
        // snapshot holds all of it: rebase on it, as compaction would have.
        let end = end_of_records(&log, header) as u64;
        return Ok(covers
            .filter(|c| c.generation == generation && end < c.offset)
            .map(|c| RepairPlan {
                damaged_at: end,
                reason: format!(
                    "the log ends at offset {end}, before offset {} that the snapshot covers",
                    c.offset
                ),
                dropped_bytes: 0,
                dropped_records: 0,
                first_dropped_at: None,
                last_dropped_at: None,
                rebased: true,
                new_log: encode_log_header(generation + 1, new_log_salt()).to_vec(),
                old_log: log.clone(),
            }));
    };

    // Damage in the part the snapshot covers: start a log of the next generation with
    // only what follows the snapshot's position, as compaction does.
    let (mut content, base, rebased) = match covers {
        Some(c) if c.generation == generation && first_damage < c.offset as usize => {
            // The tail's watermarks name offsets of the old log: leave them behind.
            let tail = log.get(c.offset as usize..).unwrap_or(&[]);
            let (records, valid_end) = strip_synced(tail);
            let mut content = encode_log_header(generation + 1, new_log_salt()).to_vec();
            content.extend_from_slice(&records);
            content.extend_from_slice(tail.get(valid_end..).unwrap_or(&[]));
            (content, c.offset as usize - header, true)
        }
        _ => (log.clone(), 0, false),
    };
    let Some((damage, reason)) = find_damage(&content, header) else {
        // Trim the preallocated zeros; the engine extends the file again on open.
        let end = end_of_records(&content, header);
        content.truncate(end);
        return Ok(Some(RepairPlan {
            damaged_at: first_damage as u64,
            reason: first_reason,
            dropped_bytes: 0,
            dropped_records: 0,
            first_dropped_at: None,
            last_dropped_at: None,
            rebased,
            new_log: content,
            old_log: log,
        }));
    };
    // What is dropped: every valid record after the damage.
    let dropped = count_records(&content, damage);
    content.truncate(damage);
    Ok(Some(RepairPlan {
        damaged_at: (damage + if rebased { base } else { 0 }) as u64,
        reason,
        dropped_bytes: (dropped.end - damage) as u64,
        dropped_records: dropped.records,
        first_dropped_at: dropped.first_at,
        last_dropped_at: dropped.last_at,
        rebased,
        new_log: content,
        old_log: log,
    }))
}

/// The first record at or after `start` that replay refuses (it decodes, but states
/// what the engine never writes), with the reason, replaying onto `registry`.
fn first_refused_record(
    log: &[u8],
    mut registry: Registry,
    start: usize,
) -> Option<(usize, String)> {
    let mut at = LOG_HEADER_LEN as usize;
    while let Frame::Valid { payload, next } = read_frame(log, at) {
        if at >= start {
            let refused = match Event::decode(payload, at as u64 + FRAME_HEADER_LEN) {
                Ok(event) => registry.apply(&event).err().map(|r| r.to_string()),
                Err(e) => Some(e.reason.to_string()),
            };
            if let Some(reason) = refused {
                return Some((
                    at,
                    format!("a record that the engine never writes: {reason}"),
                ));
            }
        }
        at = next;
    }
    None
}

/// What cutting a log at `from` drops: the records from there to the last valid one.
struct Dropped {
    records: u64,
    first_at: Option<UnixNanos>,
    last_at: Option<UnixNanos>,
    end: usize,
}

fn count_records(log: &[u8], from: usize) -> Dropped {
    let mut dropped = Dropped {
        records: 0,
        first_at: None,
        last_at: None,
        end: from,
    };
    let mut cursor = from;
    loop {
        while let Frame::Valid { payload, next } = read_frame(log, cursor) {
            // Watermarks are bookkeeping, not decisions: they are not counted.
            let decision = Event::decode(payload, cursor as u64 + FRAME_HEADER_LEN)
                .ok()
                .filter(|e| !matches!(e, Event::Synced { .. }));
            if let Some(event) = decision {
                dropped.records += 1;
                let when = event.at();
                dropped.first_at = Some(dropped.first_at.map_or(when, |f| f.min(when)));
                dropped.last_at = Some(dropped.last_at.map_or(when, |l| l.max(when)));
            }
            cursor = next;
        }
        dropped.end = dropped.end.max(cursor);
        match find_valid_frame_after(log, cursor) {
            Some(valid) => cursor = valid,
            None => return dropped,
        }
    }
}

fn end_of_records(log: &[u8], from: usize) -> usize {
    let mut at = from;
    while let Frame::Valid { next, .. } = read_frame(log, at) {
        at = next;
    }
    at
}

/// Carries out `plan`: copies the log to `flint.aof.bak-<unix seconds>`, then replaces
/// the log atomically with the repaired one. The caller holds the directory's lock.
pub fn apply(backend: &dyn Backend, plan: RepairPlan, now: UnixNanos) -> Result<RepairReport> {
    // A second repair in the same second keeps the first one's backup.
    let stem = format!("{LOG_FILE}.bak-{}", now / 1_000_000_000);
    let mut backup_name = stem.clone();
    let mut n = 1;
    while backend
        .size(&backup_name)
        .map_err(|e| Error::io("stat", backend.path(&backup_name), e))?
        .is_some()
    {
        n += 1;
        backup_name = format!("{stem}-{n}");
    }
    let backup = backend.path(&backup_name);
    replace::write_atomic(backend, &backup_name, &plan.old_log)
        .map_err(|e| Error::io("back up the log to", &backup, e.into_io()))?;
    let new = replace::replace_log(backend, LOG_FILE, &plan.new_log, NEW_LOG_CAPACITY)
        .map_err(|e| Error::io("replace", backend.path(LOG_FILE), e.into_io()))?;
    new.dir_synced
        .map_err(|e| Error::io("sync the directory of", backend.path(LOG_FILE), e))?;
    Ok(RepairReport { plan, backup })
}
