//! Request-head parser (and the Range parser on whatever Range it finds, the Accept
//! negotiation, and the Accept-Encoding ranking of a bundle entry's codings): never
//! panics, never reports a head longer than the input or the limit, never ranks a coding
//! that is not stored or one twice. A later HTTP/1 minor version found is a digit in
//! the first line, and the head with it read as 1.1 parses no worse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ron_codec::bundle::Encoding;
use ron_codec::http::accept::{content_coding, negotiate, ranked_codings};
use ron_codec::http::head::{later_http1_minor_at, parse_request_head, HeadParse};
use ron_codec::http::range::RangeSet;

fuzz_target!(|data: &[u8]| {
    let limit = 4096;
    if let Some(at) = later_http1_minor_at(data) {
        assert!((b'2'..=b'9').contains(&data[at]));
        assert!(!data[..at].contains(&b'\n'));
        let mut as_1_1 = data.to_vec();
        as_1_1[at] = b'1';
        let _ = parse_request_head(&as_1_1, limit);
    }
    if let Ok(HeadParse::Complete(head)) = parse_request_head(data, limit) {
        assert!(head.head_len <= data.len().min(limit));
        let _ = head.path();
        let scheme = head.target.get(..7);
        assert!(!scheme.is_some_and(|s| s.eq_ignore_ascii_case("http://")));
        for tag in head.if_none_match.members().chain(head.if_match.members()) {
            assert!(!tag.is_empty());
        }
        let _ = negotiate(&head.accept);
        let stored = [(Encoding::Br, 300), (Encoding::Zstd, 320)];
        let ranked = ranked_codings(head.accept_encoding.members(), &stored, 1000);
        assert!(ranked.len() <= 3);
        for (i, coding) in ranked.iter().enumerate() {
            assert!(!ranked[..i].contains(coding), "{coding:?} ranked twice");
            assert!(coding.is_none_or(|c| stored.iter().any(|(s, _)| *s == c)));
        }
        assert_eq!(
            content_coding(head.accept_encoding.members(), &stored, 1000),
            ranked.first().copied()
        );
        if let Some(set) = head.range.and_then(RangeSet::parse) {
            let _ = set.resolve(1 << 20);
        }
    }
});
