//! Response-head parser (and the Content-Range, ETag and Retry-After readers on what it
//! finds): never panics, never reports a head longer than the input or the limit, is
//! Partial only below the limit, and a head parses the same from its own bytes alone.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ron_codec::http::head::Method;
use ron_codec::http::reply::{parse_response_head, ReplyParse};

fuzz_target!(|data: &[u8]| {
    let limit = 4096;
    match parse_response_head(data, limit) {
        Ok(ReplyParse::Complete(reply)) => {
            assert!(reply.head_len <= data.len().min(limit));
            let _ = reply.parsed_content_range();
            let _ = reply.etag_address();
            let _ = reply.retry_after_secs();
            let _ = (reply.body(Method::Get), reply.is_interim());
            let alone = parse_response_head(&data[..reply.head_len], limit);
            assert_eq!(alone, Ok(ReplyParse::Complete(reply)));
        }
        Ok(ReplyParse::Partial) => assert!(data.len() < limit),
        Err(_) => {}
    }
});
