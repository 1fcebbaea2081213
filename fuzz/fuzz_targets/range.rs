//! Range parser: never panics, and every resolved range lies inside the object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ron_codec::http::range::{RangeResolution, RangeSet};

fuzz_target!(|data: &[u8]| {
    let Some((len_bytes, header)) = data.split_first_chunk::<8>() else {
        return;
    };
    let object_len = u64::from_le_bytes(*len_bytes);
    if let Some(set) = RangeSet::parse(header) {
        if let RangeResolution::Partial(ranges) = set.resolve(object_len) {
            for r in ranges.iter() {
                assert!(r.first <= r.last && r.last < object_len);
            }
        }
    }
});
