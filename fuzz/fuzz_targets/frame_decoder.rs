//! Frame decoder + payload parsers: arbitrary bytes, fed in arbitrary splits, must never
//! panic, never yield a frame above max_frame, and the same input split two ways, or
//! read through a `FrameReader` with a small read buffer, must yield the same frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ron_codec::frame::{FrameDecoder, FrameReader, MAX_FRAME_BYTES};
use ron_codec::messages::{DataHeader, HelloRequest, ObjectRequest};

fn decode(data: &[u8], piece: usize) -> (Vec<ron_codec::Frame>, Option<ron_codec::Error>) {
    let mut dec = FrameDecoder::new(MAX_FRAME_BYTES);
    let mut frames = Vec::new();
    for mut chunk in data.chunks(piece.max(1)) {
        loop {
            match dec.decode(&mut chunk) {
                Ok(Some(frame)) => {
                    assert!(frame.header.len <= MAX_FRAME_BYTES);
                    let _ = ObjectRequest::parse(&frame.payload);
                    let _ = HelloRequest::parse(&frame.payload);
                    let _ = DataHeader::split_with_parents(&frame.payload);
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

/// The same through a reader whose buffer holds `piece` bytes, as a read loop drives it.
fn read(data: &[u8], piece: usize) -> (Vec<ron_codec::Frame>, Option<ron_codec::Error>) {
    let mut reader = FrameReader::new(MAX_FRAME_BYTES, piece);
    let mut frames = Vec::new();
    let mut rest = data;
    loop {
        match reader.next_frame() {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) if rest.is_empty() => return (frames, None),
            Ok(None) => rest = &rest[reader.feed(rest)..],
            Err(e) => return (frames, Some(e)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let piece = data.first().map_or(1, |b| usize::from(*b) + 1);
    let whole = decode(data, data.len());
    let split = decode(data, piece);
    assert_eq!(whole, split);
    assert_eq!(whole, read(data, piece));
});
