//! Opening a whole data directory: the input is split into snapshot bytes and log
//! bytes, put into an in-memory data directory (`MemoryBackend`: the same recovery as
//! on files, thousands of times faster), and opened with a manual clock. Opening
//! must return (Ok or an error), never panic or hang; a directory that opens must keep
//! working and, once compacted and closed, reopen to the same state.
//!
//! Input: `flags: u8`, `snapshot length: u16` (little-endian; taken modulo what is
//! left), the snapshot bytes, then the log bytes. Flags: bit 0 writes the snapshot,
//! bit 1 writes the log, bit 2 makes the snapshot's checksum valid, bit 3 makes the
//! log header's and every frame's checksum valid (so that the fuzzer reaches replay).

#![no_main]

use std::sync::Arc;

use flint_core::backend::MemoryBackend;
use flint_core::internals::format::{
    FRAME_HEADER_LEN, LOG_FILE, LOG_HEADER_LEN, MAX_PAYLOAD_LEN, SNAPSHOT_FILE,
};
use flint_core::{Limiter, ManualClock, Options, SyncMode};
use libfuzzer_sys::fuzz_target;

/// 2023-11-14T22:13:20Z, as in the engine's tests.
const START: u64 = 1_700_000_000_000_000_000;

fn fix_snapshot(bytes: &mut [u8]) {
    if let Some(body) = bytes.len().checked_sub(4) {
        let crc = crc32c::crc32c(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
    }
}

fn fix_log(bytes: &mut [u8]) {
    let header = LOG_HEADER_LEN as usize;
    if bytes.len() < header {
        return;
    }
    let crc = crc32c::crc32c(&bytes[..header - 4]);
    bytes[header - 4..header].copy_from_slice(&crc.to_le_bytes());
    let mut at = header;
    let frame = FRAME_HEADER_LEN as usize;
    while at + frame <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let end = at + frame + len as usize;
        if len == 0 || len > MAX_PAYLOAD_LEN || end > bytes.len() {
            return;
        }
        let crc = crc32c::crc32c(&bytes[at + frame..end]);
        bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        at = end;
    }
}

fn options(clock: &Arc<ManualClock>, dir: &MemoryBackend) -> Options {
    Options::default()
        .sync(SyncMode::Batch)
        .clock(clock.clone())
        .flush_every_ms(3_600_000)
        .backend(Arc::new(dir.clone()))
}

type State = (Vec<flint_core::Status>, Vec<Vec<flint_core::HistoryEvent>>);

fn state(limiter: &Limiter) -> State {
    let list = limiter.list(None).expect("list");
    let histories = list
        .iter()
        .map(|s| limiter.history(&s.key, usize::MAX).expect("history"))
        .collect();
    (list, histories)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((len, rest)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let snapshot_len = usize::from(u16::from_le_bytes(*len)) % (rest.len() + 1);
    let (snapshot, log) = rest.split_at(snapshot_len);
    let (mut snapshot, mut log) = (snapshot.to_vec(), log.to_vec());
    if flags & 4 != 0 {
        fix_snapshot(&mut snapshot);
    }
    if flags & 8 != 0 {
        fix_log(&mut log);
    }
    // See the snapshot target: a next key id the allocator would grant only measures
    // the machine.
    if flags & 1 != 0
        && snapshot
            .get(40..44)
            .is_some_and(|b| u32::from_le_bytes(b.try_into().unwrap()) > 1 << 16)
    {
        return;
    }
    let dir = MemoryBackend::new();
    if flags & 1 != 0 {
        dir.put(SNAPSHOT_FILE, &snapshot);
    }
    if flags & 2 != 0 {
        dir.put(LOG_FILE, &log);
    }

    let clock = Arc::new(ManualClock::new(START));
    let Ok(limiter) = Limiter::open("fuzz", options(&clock, &dir)) else {
        return;
    };
    // Keys made from templates that are at full capacity go now rather than in a
    // background sweep between the comparisons below (the clock stands still, so no
    // key comes back to full capacity after its check).
    limiter.sweep().expect("sweep");
    // What opened keeps working: every key can be checked (a template is not a key),
    // and what the engine then writes reopens to the same state, from the log and from
    // a snapshot.
    for status in limiter.list(None).expect("list") {
        if status.is_template() {
            continue;
        }
        limiter
            .check(&status.key, 1)
            .expect("a check of a configured key");
    }
    let before = state(&limiter);
    limiter.close().expect("close");
    let limiter =
        Limiter::open("fuzz", options(&clock, &dir)).expect("reopen what the engine wrote");
    assert!(state(&limiter) == before, "replay changed the state");
    limiter.compact().expect("compact");
    limiter.close().expect("close");
    let limiter = Limiter::open("fuzz", options(&clock, &dir)).expect("reopen after compaction");
    assert!(state(&limiter) == before, "the snapshot changed the state");
    limiter.close().expect("close");
});
