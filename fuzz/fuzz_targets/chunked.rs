//! Chunked body decoder: never panics, never hands back more bytes than it was given,
//! and any split of the input yields the same body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ron_codec::http::chunked::{ChunkedDecoder, ChunkedStep};

fn decode(data: &[u8], piece: usize) -> Option<Vec<u8>> {
    let mut dec = ChunkedDecoder::new();
    let mut body = Vec::new();
    let mut end = 0;
    let mut pos = 0;
    loop {
        let (used, step) = dec.step(&data[pos..end]).ok()?;
        pos += used;
        match step {
            ChunkedStep::Data(d) => body.extend_from_slice(d),
            ChunkedStep::Done => return Some(body),
            ChunkedStep::NeedMore if end == data.len() => return None,
            ChunkedStep::NeedMore => end = (end + piece).min(data.len()),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let piece = data.first().map_or(1, |b| usize::from(*b % 16) + 1);
    let whole = decode(data, data.len().max(1));
    let split = decode(data, piece);
    if let Some(body) = &whole {
        assert!(body.len() <= data.len());
    }
    assert_eq!(whole, split);
});
