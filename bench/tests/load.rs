//! ron-bench against a tiny in-process HTTP server: verification passes on correct
//! bodies and counts every corrupted one; open loop holds its rate; unexpected statuses
//! are counted.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use ron_bench::dataset::Dataset;
use ron_bench::load::{run, RunConfig, STREAM_BODY_BYTES};
use ron_bench::workload::{Kind, Popularity, Proto, Workload};
use ron_codec::frame::FrameDecoder;
use ron_codec::messages::{response_frame, DataHeader, GetEnd, GetStart, ObjectRequest};
use ron_codec::Flags;

/// Serves GET /o/b3:<hex> from `data` (keep-alive), whole or the range asked for,
/// flipping one byte if `corrupt`.
fn serve(data: Dataset, corrupt: bool, status: u16) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let data = Arc::new(data);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let data = Arc::clone(&data);
            std::thread::spawn(move || {
                let mut s = stream;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end);
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    let object = data.objects.iter().find(|o| o.path == path);
                    let mut body = object.map(|o| o.bytes.clone()).unwrap_or_default();
                    // `Range: bytes=a-b` (how ron-bench writes it): the slice.
                    let mut status = status;
                    if let Some(spec) = head
                        .split("\r\n")
                        .find_map(|l| l.strip_prefix("Range: bytes="))
                    {
                        let (a, b) = spec.split_once('-').unwrap();
                        let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
                        body = body[a..=b].to_vec();
                        status = if status == 200 { 206 } else { status };
                    }
                    if corrupt && !body.is_empty() {
                        let middle = body.len() / 2;
                        body[middle] ^= 1;
                    }
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    if s.write_all(reply.as_bytes())
                        .and_then(|_| s.write_all(&body))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn config(target: SocketAddr, rate: Option<f64>) -> RunConfig {
    RunConfig {
        target,
        connections: 4,
        depth: 2,
        rate,
        duration: Duration::from_millis(600),
        warmup: Duration::from_millis(100),
        verify: true,
        discard_bodies: false,
        cpus: vec![0],
        seed: 1,
        tls: None,
    }
}

fn gets() -> Workload {
    Workload {
        proto: Proto::Http,
        mix: vec![(Kind::Get, 1)],
        popularity: Popularity::Uniform,
        host: "t".into(),
        put_path: "/o".into(),
        token: None,
    }
}

#[test]
fn correct_bodies_verify() {
    let data = Dataset::generate(5, 8, 20_000);
    let target = serve(data.clone(), false, 200);
    let stats = run(config(target, None), gets(), data).unwrap();
    assert!(stats.requests > 10, "{}", stats.requests);
    assert_eq!(stats.verify_failures, 0);
    assert_eq!(stats.unexpected, 0);
    assert_eq!(stats.statuses.get(&200), Some(&stats.requests));
    // Whole answers in the window vs answers to the requests sent in it: they differ by
    // at most what was in flight at either edge (4 connections x depth 2, twice).
    assert!(stats.window_body_bytes.abs_diff(stats.body_bytes) <= 2 * 8 * 20_000);
}

#[test]
fn every_corrupted_body_is_caught() {
    let data = Dataset::generate(6, 8, 20_000);
    let target = serve(data.clone(), true, 200);
    let stats = run(config(target, None), gets(), data).unwrap();
    assert!(stats.requests > 10);
    assert_eq!(stats.verify_failures, stats.requests);
}

fn ranges(range_len: u64) -> Workload {
    Workload {
        mix: vec![(Kind::Range { range_len }, 1)],
        ..gets()
    }
}

#[test]
fn unaligned_ranges_verify_and_corrupted_ones_are_caught() {
    let data = Dataset::generate(9, 3, 300_000);
    let good = serve(data.clone(), false, 200);
    let stats = run(config(good, None), ranges(65_536), data.clone()).unwrap();
    assert!(stats.requests > 10, "{}", stats.requests);
    assert_eq!((stats.verify_failures, stats.unexpected), (0, 0));
    assert_eq!(stats.body_bytes, stats.requests * 65_536);
    let bad = serve(data.clone(), true, 200);
    let stats = run(config(bad, None), ranges(65_536), data).unwrap();
    assert!(stats.requests > 10);
    assert_eq!(stats.verify_failures, stats.requests);
}

/// A peak run that drops bodies unread (`recv` with `MSG_TRUNC` and no buffer: a kernel
/// that copied would fail every read with EFAULT) counts every answer and every body
/// byte, whole objects and ranges, short and past STREAM_BODY_BYTES, two in flight per
/// connection: a body dropped one byte too far or too short would break the next head.
#[test]
fn dropped_bodies_are_counted_like_read_ones() {
    let size = STREAM_BODY_BYTES + 65_536 + 3;
    let data = Dataset::generate(12, 3, size);
    let mixed = Workload {
        mix: vec![
            (Kind::Get, 1),
            (Kind::Range { range_len: 65_536 }, 1),
            (Kind::Range { range_len: 1 }, 1),
        ],
        ..gets()
    };
    let target = serve(data.clone(), false, 200);
    let config = RunConfig {
        verify: false,
        discard_bodies: true,
        ..config(target, None)
    };
    let stats = run(config, mixed, data).unwrap();
    assert!(stats.requests > 6, "{}", stats.requests);
    assert_eq!((stats.unexpected, stats.io_errors), (0, 0));
    let gets = stats.statuses.get(&200).copied().unwrap_or(0);
    let ranges = stats.statuses.get(&206).copied().unwrap_or(0);
    assert_eq!(gets + ranges, stats.requests);
    assert!(gets > 0 && ranges > 0, "{:?}", stats.statuses);
    // Ranges are 65,536 or 1 byte: what is not whole objects is between those.
    let range_bytes = stats.body_bytes - gets * size as u64;
    assert!(
        (ranges..=ranges * 65_536).contains(&range_bytes),
        "{range_bytes}"
    );
    assert!(stats.window_body_bytes > 0);
}

/// Bodies longer than STREAM_BODY_BYTES are checked as they stream in, whole objects
/// and ranges, and pipelined answers behind them still line up.
#[test]
fn long_bodies_are_verified_while_streaming() {
    let size = STREAM_BODY_BYTES + 3 * 65_536 + 7;
    let data = Dataset::generate(10, 2, size);
    let long_range = (STREAM_BODY_BYTES + 1) as u64;
    let mixed = Workload {
        mix: vec![
            (Kind::Get, 1),
            (
                Kind::Range {
                    range_len: long_range,
                },
                1,
            ),
            (Kind::Range { range_len: 4096 }, 1),
        ],
        ..gets()
    };
    let good = serve(data.clone(), false, 200);
    let stats = run(config(good, None), mixed.clone(), data.clone()).unwrap();
    assert!(stats.requests > 6, "{}", stats.requests);
    assert_eq!(
        (stats.verify_failures, stats.unexpected, stats.io_errors),
        (0, 0, 0)
    );
    assert!(stats.window_body_bytes > 0);
    let bad = serve(data.clone(), true, 200);
    let stats = run(config(bad, None), mixed, data).unwrap();
    assert!(stats.requests > 6);
    assert_eq!(stats.verify_failures, stats.requests);
}

/// Serves every GET with `body`, written slowly: 64 KiB every `pause`.
fn serve_slowly(body: Vec<u8>, pause: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let body = Arc::new(body);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let body = Arc::clone(&body);
            std::thread::spawn(move || {
                let mut s = stream;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                loop {
                    while !head.ends_with(b"\r\n\r\n") {
                        match s.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    head.clear();
                    let reply =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                    if s.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                    for piece in body.chunks(65_536) {
                        std::thread::sleep(pause);
                        if s.write_all(piece).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// An answer longer than the run still counts in the window's throughput, by the bytes
/// that arrived in it, while requests and latency count only those sent in the window.
#[test]
fn window_bytes_count_long_answers_as_they_arrive() {
    let data = Dataset::generate(11, 1, STREAM_BODY_BYTES * 2);
    // 128 pieces of 64 KiB, one every 10 ms: at least 1.28 s per answer.
    let target = serve_slowly(data.objects[0].bytes.clone(), Duration::from_millis(10));
    let config = RunConfig {
        connections: 1,
        depth: 1,
        ..config(target, None)
    };
    let stats = run(config, gets(), data).unwrap();
    // The one request was sent in the warm-up: not counted, but its bytes arrived in the
    // 600 ms window, about 60 pieces of 64 KiB.
    assert_eq!(stats.requests, 0);
    let pieces = stats.window_body_bytes / 65_536;
    assert!((30..=70).contains(&pieces), "{pieces} pieces");
}

#[test]
fn unexpected_statuses_are_counted_not_verified() {
    let data = Dataset::generate(7, 4, 1000);
    let target = serve(data.clone(), false, 404);
    let stats = run(config(target, None), gets(), data).unwrap();
    assert!(stats.requests > 0);
    assert_eq!(stats.unexpected, stats.requests);
    assert_eq!(stats.statuses.get(&404), Some(&stats.requests));
}

#[test]
fn open_loop_holds_its_rate() {
    let data = Dataset::generate(8, 4, 1000);
    let target = serve(data.clone(), false, 200);
    let stats = run(config(target, Some(200.0)), gets(), data).unwrap();
    // 200 req/s for 0.6 s measured: 120 requests, give or take the edges.
    assert!((100..=140).contains(&stats.requests), "{}", stats.requests);
}

/// Serves OAP/1 GETs from `data`: START, the body in two DATA frames, END; flips one
/// byte if `corrupt`.
fn serve_oap(data: Dataset, corrupt: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let data = Arc::new(data);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let data = Arc::clone(&data);
            std::thread::spawn(move || {
                let mut s = stream;
                let mut decoder = FrameDecoder::new(1 << 20);
                let mut chunk = [0u8; 4096];
                loop {
                    let n = match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let mut input = &chunk[..n];
                    while let Ok(Some(frame)) = decoder.decode(&mut input) {
                        let corr = frame.header.corr_id;
                        let Ok(ObjectRequest::Get { addr, .. }) =
                            ObjectRequest::parse(&frame.payload)
                        else {
                            return;
                        };
                        let object = data.objects.iter().find(|o| o.addr == addr).unwrap();
                        let mut body = object.bytes.clone();
                        if corrupt {
                            body[7] ^= 1;
                        }
                        let total = body.len() as u64;
                        let start = GetStart {
                            obj: addr,
                            total_len: total,
                            offset: 0,
                            len: total,
                            chunk: 65536,
                        };
                        let mut out = response_frame(Flags::START, 200, corr, start.to_payload())
                            .unwrap()
                            .to_bytes()
                            .to_vec();
                        let half = body.len() / 2;
                        for (offset, part) in [(0, &body[..half]), (half, &body[half..])] {
                            let header = DataHeader {
                                obj: Some(addr),
                                offset: offset as u64,
                                total_len: total,
                            };
                            out.extend_from_slice(
                                &response_frame(Flags::NONE, 0, corr, header.payload(part))
                                    .unwrap()
                                    .to_bytes(),
                            );
                        }
                        let end = GetEnd {
                            status: "ok".into(),
                            len: total,
                        };
                        out.extend_from_slice(
                            &response_frame(Flags::END, 200, corr, end.to_payload())
                                .unwrap()
                                .to_bytes(),
                        );
                        if s.write_all(&out).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn oap_gets() -> Workload {
    Workload {
        proto: Proto::Oap,
        ..gets()
    }
}

#[test]
fn oap_answers_are_assembled_and_verified() {
    let data = Dataset::generate(9, 8, 20_000);
    let target = serve_oap(data.clone(), false);
    let stats = run(config(target, None), oap_gets(), data.clone()).unwrap();
    assert!(stats.requests > 10, "{}", stats.requests);
    assert_eq!(stats.verify_failures, 0);
    assert_eq!(stats.body_bytes, stats.requests * 20_000);
    let target = serve_oap(data.clone(), true);
    let stats = run(config(target, None), oap_gets(), data).unwrap();
    assert!(stats.requests > 10);
    assert_eq!(stats.verify_failures, stats.requests);
}
