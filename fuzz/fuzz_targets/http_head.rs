//! Request-head parser (and the Range parser on whatever Range it finds): never panics,
//! never reports a head longer than the input or the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ron_codec::http::accept::negotiate;
use ron_codec::http::head::{parse_request_head, HeadParse};
use ron_codec::http::range::RangeSet;

fuzz_target!(|data: &[u8]| {
    let limit = 4096;
    if let Ok(HeadParse::Complete(head)) = parse_request_head(data, limit) {
        assert!(head.head_len <= data.len().min(limit));
        let _ = head.path();
        let scheme = head.target.get(..7);
        assert!(!scheme.is_some_and(|s| s.eq_ignore_ascii_case("http://")));
        for tag in head.if_none_match.members().chain(head.if_match.members()) {
            assert!(!tag.is_empty());
        }
        let _ = negotiate(&head.accept);
        if let Some(set) = head.range.and_then(RangeSet::parse) {
            let _ = set.resolve(1 << 20);
        }
    }
});
