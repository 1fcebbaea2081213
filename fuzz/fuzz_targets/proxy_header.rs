//! PROXY protocol header parser (v1 and v2): never panics, a header's length lies within
//! the input and the v2 limit, and any split of the input before the header is whole
//! answers Partial, never a different header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ron_codec::proxy::{parse, Preface, V2_BYTES_MAX};

fuzz_target!(|data: &[u8]| {
    let Ok(whole) = parse(data) else {
        return;
    };
    if let Preface::Header { len, .. } = whole {
        assert!(len <= data.len() && len <= V2_BYTES_MAX);
        for cut in 0..len {
            assert!(matches!(
                parse(&data[..cut]),
                Ok(Preface::Partial | Preface::None)
            ));
        }
        assert_eq!(parse(&data[..len]), Ok(whole));
    }
});
