//! Record decoding: frames read back to back from arbitrary bytes, and arbitrary bytes
//! decoded as a payload. Never a panic; whatever decodes encodes and decodes again to
//! the same event.

#![no_main]

use flint_core::internals::format::FRAME_HEADER_LEN;
use flint_core::internals::record::{find_valid_frame_after, read_frame, Event, Frame};
use libfuzzer_sys::fuzz_target;

fn round_trips(event: &Event) {
    let mut frame = Vec::new();
    event.encode_frame(&mut frame);
    let Frame::Valid { payload, next } = read_frame(&frame, 0) else {
        panic!("an encoded event does not read back as a frame: {event:?}");
    };
    assert_eq!(next, frame.len());
    let again = Event::decode(payload, FRAME_HEADER_LEN).expect("an encoded event decodes");
    assert_eq!(&again, event);
}

fuzz_target!(|data: &[u8]| {
    // The bytes as one payload (its checksum already verified).
    if let Ok(event) = Event::decode(data, 0) {
        round_trips(&event);
    }
    // The bytes as a log: frames back to back, then the search for a valid frame
    // after damage.
    let mut at = 0;
    while let Frame::Valid { payload, next } = read_frame(data, at) {
        assert!(next > at);
        if let Ok(event) = Event::decode(payload, at as u64 + FRAME_HEADER_LEN) {
            round_trips(&event);
        }
        at = next;
    }
    if let Some(valid) = find_valid_frame_after(data, at) {
        assert!(valid > at && matches!(read_frame(data, valid), Frame::Valid { .. }));
    }
});
