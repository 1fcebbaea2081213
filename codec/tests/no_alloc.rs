//! The common HTTP request costs no allocation in the codec: head parse, address parse,
//! Range parse and resolve, and the response head written into a reused buffer; nor does
//! a client's (or a read-through's) parse of that response head.
//! A counting global allocator (this test binary only) proves it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::BytesMut;
use ron_codec::http::head::{parse_request_head, HeadParse, HEAD_LEN_MAX_DEFAULT};
use ron_codec::http::range::{RangeResolution, RangeSet};
use ron_codec::http::reply::{parse_response_head, ContentRange, ReplyParse};
use ron_codec::http::response::ResponseHead;
use ron_codec::Address;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

struct CountingAllocator;

// SAFETY: forwards to the system allocator unchanged; only counts calls per thread.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(|n| n.get())
}

/// Runs `f` once to warm up (thread-locals, lazy statics), then 100 times, which must
/// not allocate.
fn allocates_nothing(what: &str, mut f: impl FnMut()) {
    f();
    let before = allocations();
    for _ in 0..100 {
        f();
    }
    assert_eq!(allocations() - before, 0, "{what} allocated");
}

fn serve_one(request: &[u8], out: &mut BytesMut) -> u64 {
    let HeadParse::Complete(head) = parse_request_head(request, HEAD_LEN_MAX_DEFAULT).unwrap()
    else {
        panic!("partial head")
    };
    let addr = Address::parse(head.path().strip_prefix("/o/").unwrap().as_bytes()).unwrap();
    let object_len = 10_000_000;
    let range = head
        .range
        .and_then(RangeSet::parse)
        .map(|set| set.resolve(object_len));
    let Some(RangeResolution::Partial(ranges)) = range else {
        panic!("expected a satisfiable range")
    };
    let r = ranges.first().unwrap();
    out.clear();
    let mut resp = ResponseHead::start(out, 206);
    resp.content_length(r.len())
        .content_range(r.first, r.last, object_len)
        .etag(&addr)
        .header("Accept-Ranges", b"bytes")
        .header("Cache-Control", b"public, max-age=31536000, immutable")
        .header("Content-Type", b"application/octet-stream")
        .header("X-Corr-ID", head.corr_id.unwrap_or(b"generated-1"));
    resp.finish();
    r.len()
}

/// A GET of `range` of the test object, as curl sends it.
fn ranged_get(range: &str) -> String {
    format!(
        "GET /o/{} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/8\r\nAccept: */*\r\nRange: bytes={range}\r\nX-Corr-ID: abc-123\r\n\r\n",
        Address::of(b"object")
    )
}

#[test]
fn a_ranged_get_allocates_nothing_in_the_codec() {
    let request = ranged_get("65536-131071");
    let mut out = BytesMut::with_capacity(1024);
    allocates_nothing("the request path", || {
        assert_eq!(serve_one(request.as_bytes(), &mut out), 65536);
    });
    assert!(out.starts_with(b"HTTP/1.1 206 Partial Content\r\n"));
    // The counter itself works: one boxed value is one allocation.
    let before = allocations();
    let boxed = std::hint::black_box(Box::new(7u64));
    assert_eq!(allocations() - before, 1);
    drop(boxed);
}

#[test]
fn a_response_head_parses_without_allocating() {
    let mut answer = BytesMut::with_capacity(1024);
    serve_one(ranged_get("0-99").as_bytes(), &mut answer);
    allocates_nothing("the response-head parse", || {
        let ReplyParse::Complete(reply) =
            parse_response_head(&answer, HEAD_LEN_MAX_DEFAULT).unwrap()
        else {
            panic!("partial head")
        };
        assert_eq!(
            (reply.status, reply.content_length, reply.etag_address()),
            (206, Some(100), Some(Address::of(b"object")))
        );
        assert_eq!(
            reply.parsed_content_range(),
            Ok(Some(ContentRange::Bytes {
                first: 0,
                last: 99,
                total: Some(10_000_000)
            }))
        );
    });
}
