//! Micro-benchmarks of the codec's hot pieces. Figures and the exact commands are in
//! docs/PERF.md. Run: `cargo bench -p ron-bench --bench codec`.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ron_bench::pattern;
use ron_codec::frame::{FrameDecoder, MAX_FRAME_BYTES};
use ron_codec::http::head::{parse_request_head, HeadParse, HEAD_LEN_MAX_DEFAULT};
use ron_codec::http::range::RangeSet;
use ron_codec::http::response::ResponseHead;
use ron_codec::messages::{response_frame, DataHeader, ObjectRequest};
use ron_codec::tree::{GroupIndex, GROUP_LEN_BYTES};
use ron_codec::{Address, ChunkTree, Flags, PartitionTable, TreeHasher};

const GROUP: usize = GROUP_LEN_BYTES as usize;

fn configured() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

fn frames(c: &mut Criterion) {
    let obj = Address::of(b"x");
    let group = pattern(GROUP);
    let data = response_frame(
        Flags::NONE,
        0,
        7,
        DataHeader {
            obj: Some(obj),
            offset: 0,
            total_len: 1 << 30,
        }
        .payload(&group),
    )
    .unwrap();
    let get = ObjectRequest::Get {
        addr: obj,
        range: None,
        proof: false,
        local: false,
        kept: false,
        node: None,
    }
    .frame(9, 0, Bytes::new())
    .unwrap();

    let mut g = c.benchmark_group("oap_frame");
    let mut wire = BytesMut::new();
    for _ in 0..16 {
        data.encode_into(&mut wire);
    }
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("decode_16x64KiB_data", |b| {
        b.iter(|| {
            let mut dec = FrameDecoder::new(MAX_FRAME_BYTES);
            let mut input = &wire[..];
            let mut n = 0;
            while let Some(f) = dec.decode(&mut input).unwrap() {
                n += f.payload.len();
            }
            n
        })
    });
    let mut small = BytesMut::new();
    for _ in 0..64 {
        get.encode_into(&mut small);
    }
    g.throughput(Throughput::Elements(64));
    g.bench_function("decode_and_parse_64_get_requests", |b| {
        b.iter(|| {
            let mut dec = FrameDecoder::new(MAX_FRAME_BYTES);
            let mut input = &small[..];
            while let Some(f) = dec.decode(&mut input).unwrap() {
                black_box(ObjectRequest::parse(&f.payload).unwrap());
            }
        })
    });
    g.throughput(Throughput::Bytes(data.header.len as u64));
    g.bench_function("encode_64KiB_data", |b| {
        let mut out = BytesMut::with_capacity(2 * MAX_FRAME_BYTES as usize);
        b.iter(|| {
            out.clear();
            data.encode_into(&mut out);
            out.len()
        })
    });
    g.bench_function("build_64KiB_data_payload", |b| {
        let header = DataHeader {
            obj: Some(obj),
            offset: 65536,
            total_len: 1 << 30,
        };
        b.iter(|| header.payload(black_box(&group)))
    });
    g.finish();
}

fn tree(c: &mut Criterion) {
    let mut g = c.benchmark_group("chunk_tree");
    for len in [GROUP, 1 << 20, 16 << 20] {
        let data = pattern(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::new("blake3_hash", len), &data, |b, d| {
            b.iter(|| blake3::hash(black_box(d)))
        });
        g.bench_with_input(BenchmarkId::new("tree_pass", len), &data, |b, d| {
            b.iter(|| {
                let mut h = TreeHasher::new();
                h.update(black_box(d));
                h.finalize()
            })
        });
        // The upload path feeds 16 KiB socket reads, not whole objects.
        g.bench_with_input(
            BenchmarkId::new("tree_pass_16KiB_feeds", len),
            &data,
            |b, d| {
                b.iter(|| {
                    let mut h = TreeHasher::new();
                    for piece in d.chunks(16 * 1024) {
                        h.update(black_box(piece));
                    }
                    h.finalize()
                })
            },
        );
    }
    let data = pattern(10 * (1 << 20) + 123);
    let tree = ChunkTree::of(&data);
    let group = &data[3 * GROUP..4 * GROUP];
    g.throughput(Throughput::Bytes(GROUP as u64));
    g.bench_function("verify_group_64KiB", |b| {
        b.iter(|| tree.verify_group(GroupIndex(3), black_box(group)).unwrap())
    });
    let mut stored = Vec::new();
    tree.write_stored(&mut stored);
    g.throughput(Throughput::Elements(tree.group_count()));
    g.bench_function("load_and_check_161_cvs", |b| {
        b.iter(|| {
            ChunkTree::from_stored(data.len() as u64, tree.root(), black_box(&stored)).unwrap()
        })
    });
    g.finish();
}

fn http(c: &mut Criterion) {
    let addr = Address::of(b"object");
    let request = format!(
        "GET /o/{addr} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\nRange: bytes=65536-131071\r\n\r\n"
    );
    let mut g = c.benchmark_group("http");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_head_and_range", |b| {
        b.iter(|| {
            let HeadParse::Complete(head) =
                parse_request_head(black_box(request.as_bytes()), HEAD_LEN_MAX_DEFAULT).unwrap()
            else {
                unreachable!()
            };
            let addr = Address::parse(&head.path().as_bytes()[3..]).unwrap();
            let range = head
                .range
                .and_then(RangeSet::parse)
                .map(|r| r.resolve(1 << 30));
            (addr, range)
        })
    });
    g.bench_function("write_200_head", |b| {
        let mut out = BytesMut::with_capacity(1024);
        b.iter(|| {
            out.clear();
            let mut h = ResponseHead::start(&mut out, 200);
            h.content_length(black_box(4096))
                .etag(&addr)
                .header("Accept-Ranges", b"bytes")
                .header("Cache-Control", b"public, max-age=31536000, immutable")
                .header("Content-Type", b"application/octet-stream")
                .header("X-Corr-ID", b"0000000000000001");
            h.finish();
            out.len()
        })
    });
    let table = PartitionTable::round_robin(7).unwrap();
    g.bench_function("route_to_owner_shard", |b| {
        b.iter(|| table.owner(black_box(&addr)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = configured();
    targets = frames, tree, http
}
criterion_main!(benches);
