//! The common HTTP request costs no allocation in the codec: head parse, address parse,
//! Range parse and resolve, and the response head written into a reused buffer.
//! A counting global allocator (this test binary only) proves it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::BytesMut;
use ron_codec::http::head::{parse_request_head, HeadParse, HEAD_LEN_MAX_DEFAULT};
use ron_codec::http::range::{RangeResolution, RangeSet};
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

#[test]
fn a_ranged_get_allocates_nothing_in_the_codec() {
    let request = format!(
        "GET /o/{} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/8\r\nAccept: */*\r\nRange: bytes=65536-131071\r\nX-Corr-ID: abc-123\r\n\r\n",
        Address::of(b"object")
    );
    let mut out = BytesMut::with_capacity(1024);
    serve_one(request.as_bytes(), &mut out); // warm-up: thread-locals, lazy statics
    let before = allocations();
    for _ in 0..100 {
        assert_eq!(serve_one(request.as_bytes(), &mut out), 65536);
    }
    assert_eq!(allocations() - before, 0, "the request path allocated");
    assert!(out.starts_with(b"HTTP/1.1 206 Partial Content\r\n"));
    // The counter itself works: one boxed value is one allocation.
    let before = allocations();
    let boxed = std::hint::black_box(Box::new(7u64));
    assert_eq!(allocations() - before, 1);
    drop(boxed);
}
