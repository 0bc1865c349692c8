//! Snapshot decoding: arbitrary bytes, as they are and with their checksum made valid
//! (so that the fuzzer reaches past it). Never a panic; whatever decodes encodes and
//! decodes again to the same registry.

#![no_main]

use flint_core::internals::snapshot;
use libfuzzer_sys::fuzz_target;

const HISTORY: usize = 8;

/// A snapshot's next key id sizes a table of one slot per id (removed keys' too, as
/// live: 128 bytes each); claims the allocator refuses are refused by the decoder
/// (a unit test covers that), and claims it grants would only measure the machine.
const MAX_IDS: u32 = 1 << 16;

/// The next key id a snapshot claims (bytes 40..44), if the bytes reach it.
pub fn claimed_ids(bytes: &[u8]) -> Option<u32> {
    bytes
        .get(40..44)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
}

fn check(bytes: &[u8]) {
    if claimed_ids(bytes).is_some_and(|ids| ids > MAX_IDS) {
        return;
    }
    if let Ok((registry, covers)) = snapshot::decode(bytes, HISTORY) {
        let encoded = snapshot::encode(&registry, covers);
        let (again, covers_again) =
            snapshot::decode(&encoded, HISTORY).expect("an encoded snapshot decodes");
        assert_eq!(covers_again, covers);
        assert!(
            again == registry,
            "a snapshot changed through encode and decode"
        );
        assert_eq!(again.next_id(), registry.next_id());
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(body) = data.len().checked_sub(4).and_then(|n| data.get(..n)) {
        let mut fixed = body.to_vec();
        let crc = crc32c::crc32c(body);
        fixed.extend_from_slice(&crc.to_le_bytes());
        check(&fixed);
    }
});
