//! Frame decoder + payload parsers: arbitrary bytes, fed in arbitrary splits, must never
//! panic, never yield a frame above max_frame, and the same input split two ways, or
//! read through a `FrameReader` with a small read buffer, must yield the same frames; gated
//! (bodies kept, skipped or refused by corr_id), the same headers, skipped ones empty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ron_codec::frame::{BodyGate, FrameDecoder, FrameHeader, FrameReader, MAX_FRAME_BYTES};
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

fn gate(h: &FrameHeader) -> BodyGate {
    match h.corr_id % 3 {
        0 => BodyGate::Keep,
        1 => BodyGate::Skip,
        _ => BodyGate::Refuse(ron_codec::Error::RequestFrameTooLarge { len: h.len, max: 0 }),
    }
}

fn decode_gated(data: &[u8], piece: usize) -> (Vec<ron_codec::Frame>, Option<ron_codec::Error>) {
    let mut dec = FrameDecoder::new(MAX_FRAME_BYTES);
    let mut frames = Vec::new();
    for mut chunk in data.chunks(piece.max(1)) {
        loop {
            match dec.decode_gated(&mut chunk, gate) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

/// What gating makes of the ungated frames: kept whole, skipped emptied, and the first
/// refused one the error.
fn gated(ungated: &(Vec<ron_codec::Frame>, Option<ron_codec::Error>)) -> (Vec<ron_codec::Frame>, Option<ron_codec::Error>) {
    let mut frames = Vec::new();
    for frame in &ungated.0 {
        match gate(&frame.header) {
            BodyGate::Keep => frames.push(frame.clone()),
            BodyGate::Skip => frames.push(ron_codec::Frame {
                header: frame.header,
                cap: frame.cap.slice(0..0),
                payload: frame.payload.slice(0..0),
            }),
            BodyGate::Refuse(e) => return (frames, Some(e)),
        }
    }
    (frames, ungated.1.clone())
}

fuzz_target!(|data: &[u8]| {
    let piece = data.first().map_or(1, |b| usize::from(*b) + 1);
    let whole = decode(data, data.len());
    let split = decode(data, piece);
    assert_eq!(whole, split);
    assert_eq!(whole, read(data, piece));
    let gated_split = decode_gated(data, piece);
    assert_eq!(gated_split, decode_gated(data, data.len()));
    let want = gated(&whole);
    assert_eq!(gated_split.0, want.0);
    match want.1 {
        Some(e) => assert_eq!(gated_split.1, Some(e)),
        // A last header the gate refuses ends the decode before its body came.
        None => assert!(matches!(
            gated_split.1,
            None | Some(ron_codec::Error::RequestFrameTooLarge { .. })
        )),
    }
});
