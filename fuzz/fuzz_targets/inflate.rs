//! COMP inflate: never panics and never returns more than its bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ron_codec::frame::MAX_FRAME_BYTES;
use ron_codec::inflate::{Inflater, INFLATE_RATIO_DEFAULT};

fuzz_target!(|data: &[u8]| {
    let mut inflater = Inflater::new(INFLATE_RATIO_DEFAULT).unwrap();
    if let Ok(out) = inflater.inflate(data, MAX_FRAME_BYTES) {
        assert!(out.len() as u64 <= inflater.bound(data.len(), MAX_FRAME_BYTES));
    }
});
