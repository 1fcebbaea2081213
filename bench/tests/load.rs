//! ron-bench against a tiny in-process HTTP server: verification passes on correct
//! bodies and counts every corrupted one; open loop holds its rate; unexpected statuses
//! are counted.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use ron_bench::dataset::Dataset;
use ron_bench::load::{run, RunConfig};
use ron_bench::workload::{Kind, Popularity, Workload};

/// Serves GET /o/b3:<hex> from `data` (keep-alive), flipping one byte if `corrupt`.
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
        cpus: vec![0],
        seed: 1,
    }
}

fn gets() -> Workload {
    Workload {
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
}

#[test]
fn every_corrupted_body_is_caught() {
    let data = Dataset::generate(6, 8, 20_000);
    let target = serve(data.clone(), true, 200);
    let stats = run(config(target, None), gets(), data).unwrap();
    assert!(stats.requests > 10);
    assert_eq!(stats.verify_failures, stats.requests);
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
