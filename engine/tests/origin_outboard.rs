//! An edge reading through from an HTTP origin that serves each object's bao outboard
//! beside it (`<hash>.obao`): the body is verified group by group and streamed to the
//! edge's clients as it arrives. The outboards here are bao-tree's (n0's code), the
//! origins a small file server of the test's own (paced, counting what it sent) and
//! another ron. A corrupted byte is never served; an outboard that lies is refused and
//! the body verified whole.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bao_tree::io::outboard::PreOrderMemOutboard;
use bao_tree::BlockSize;
use common::*;
use ron_codec::Address;

const GROUP: usize = 64 * 1024;

/// What the test origin serves at `/o/<addr>` and `/o/<addr>.obao`.
struct Files {
    path: String,
    body: Vec<u8>,
    /// None: the outboard is answered 404.
    outboard: Option<Vec<u8>>,
    /// Body bytes per second (0: as fast as the socket takes them).
    rate_bytes_per_s: u64,
    /// Closes the connection after each answer (`Connection: close`), as an HTTP/1.0
    /// server or one with keep-alive off does.
    one_answer_per_connection: bool,
    /// Sends `103 Early Hints` before each answer.
    early_hints: bool,
}

/// A file server for one object: HTTP/1.1 with keep-alive and pipelining, paced, and
/// counting the body bytes it has handed to the socket. Stops when dropped.
struct TestOrigin {
    addr: SocketAddr,
    body_bytes_sent: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    /// Requests that asked for the bytes as stored (`Accept-Encoding: identity`).
    asked_identity: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl TestOrigin {
    fn start(files: Files) -> TestOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let origin = TestOrigin {
            addr: listener.local_addr().unwrap(),
            body_bytes_sent: Arc::default(),
            requests: Arc::default(),
            asked_identity: Arc::default(),
            stop: Arc::default(),
        };
        let (sent, requests, stop) = (
            Arc::clone(&origin.body_bytes_sent),
            Arc::clone(&origin.requests),
            Arc::clone(&origin.stop),
        );
        let identity = Arc::clone(&origin.asked_identity);
        let files = Arc::new(files);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (files, sent, requests, stop) = (
                            Arc::clone(&files),
                            Arc::clone(&sent),
                            Arc::clone(&requests),
                            Arc::clone(&stop),
                        );
                        let identity = Arc::clone(&identity);
                        std::thread::spawn(move || {
                            let counts = Counts {
                                sent: &sent,
                                requests: &requests,
                                identity: &identity,
                            };
                            let _ = serve(conn, &files, &counts, &stop);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        origin
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// What a test origin counts: body bytes sent, requests, and requests for the bytes as
/// stored.
struct Counts<'a> {
    sent: &'a AtomicU64,
    requests: &'a AtomicU64,
    identity: &'a AtomicU64,
}

fn serve(
    mut conn: TcpStream,
    files: &Files,
    counts: &Counts<'_>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let Counts {
        sent,
        requests,
        identity,
    } = counts;
    conn.set_nonblocking(false)?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut pending = Vec::new();
    loop {
        let head_end = loop {
            if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = conn.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            pending.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&pending[..head_end]).into_owned();
        pending.drain(..head_end);
        requests.fetch_add(1, Ordering::Relaxed);
        let target = head.split(' ').nth(1).unwrap_or("").to_string();
        let lower = head.to_ascii_lowercase();
        if lower.contains("\r\naccept-encoding: identity\r\n") {
            identity.fetch_add(1, Ordering::Relaxed);
        }
        let close = lower.contains("connection: close") || files.one_answer_per_connection;
        if files.early_hints {
            conn.write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")?;
        }
        let (status, body, paced): (&str, &[u8], bool) = if target == files.path {
            ("200 OK", &files.body, true)
        } else if target == format!("{}.obao", files.path) && files.outboard.is_some() {
            ("200 OK", files.outboard.as_deref().unwrap(), false)
        } else {
            ("404 Not Found", b"not here", false)
        };
        let answer_head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: video/mp4\r\n{}\r\n",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        conn.write_all(answer_head.as_bytes())?;
        let started = Instant::now();
        let mut at = 0;
        for piece in body.chunks(GROUP) {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            conn.write_all(piece)?;
            at += piece.len() as u64;
            if paced {
                sent.fetch_add(piece.len() as u64, Ordering::Relaxed);
                if files.rate_bytes_per_s > 0 {
                    let due = Duration::from_secs_f64(at as f64 / files.rate_bytes_per_s as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            }
        }
        if close {
            return Ok(());
        }
    }
}

/// A test origin serving `files`, and an edge (one shard) reading through from it.
fn origin_and_edge(files: Files, edge_name: &str) -> (TestOrigin, Node) {
    origin_and_edge_with(files, edge_name, &[])
}

/// [`origin_and_edge`], the edge started with `extra` flags too.
fn origin_and_edge_with(files: Files, edge_name: &str, extra: &[&str]) -> (TestOrigin, Node) {
    let origin = TestOrigin::start(files);
    let url = origin.url();
    let mut flags = vec!["--shards", "1", "--origin", &url];
    flags.extend_from_slice(extra);
    let edge = Node::start(&temp_dir(edge_name), &flags);
    (origin, edge)
}

/// An edge reading `data` at `path` through an origin whose `.obao` answer (`outboard`,
/// `None`: 404) it must not use: the object is served whole, verified, nothing streamed.
fn served_verified_whole(
    path: &str,
    data: &[u8],
    outboard: Option<Vec<u8>>,
    edge_name: &str,
) -> (TestOrigin, Node) {
    let (origin, edge) = origin_and_edge(
        Files {
            path: path.to_string(),
            body: data.to_vec(),
            outboard,
            rate_bytes_per_s: 0,
            one_answer_per_connection: false,
            early_hints: false,
        },
        edge_name,
    );
    let got = get(edge.http, path).unwrap();
    assert_eq!(got.status, 200, "{edge_name}");
    assert!(got.body == data, "{edge_name}: the object's bytes");
    assert_eq!(metric(edge.admin, "ron_fetch_origin_streamed_total"), 0);
    (origin, edge)
}

/// An object of `len` bytes that is fast to make in a debug build: 64 KiB groups, each
/// a fixed pattern with its own index in front.
fn object(len: usize) -> Vec<u8> {
    let pattern: Vec<u8> = (0..GROUP).map(|i| (i * 131 % 251) as u8).collect();
    let mut data = Vec::with_capacity(len);
    let mut g = 0u64;
    while data.len() < len {
        let start = data.len();
        data.extend_from_slice(&pattern[..GROUP.min(len - start)]);
        let index = g.to_le_bytes();
        let n = index.len().min(data.len() - start);
        data[start..start + n].copy_from_slice(&index[..n]);
        g += 1;
    }
    data
}

/// bao-tree's pre-order outboard with its length header, and the object's address.
fn outboard(data: &[u8], log: u8) -> (Vec<u8>, Address) {
    let outboard = PreOrderMemOutboard::create(data, BlockSize::from_chunk_log(log));
    let addr = Address::from_bytes(*outboard.root.as_bytes());
    (outboard.into_inner_with_prefix(), addr)
}

/// Sends a GET to the edge and returns the connection with the response head read and
/// the body bytes that came with it.
fn open_get(edge: SocketAddr, path: &str) -> (TcpStream, String, Vec<u8>) {
    let mut s = connect(edge);
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "closed before a head: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&chunk[..n]);
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..at]).into_owned();
            return (s, head, got[at + 4..].to_vec());
        }
    }
}

#[test]
fn an_edge_sends_a_cold_gib_before_its_origin_has_sent_one_percent() {
    let len = 1 << 30;
    let data = object(len);
    let (obao, addr) = outboard(&data, 6);
    assert_eq!(
        obao.len(),
        8 + 64 * (16384 - 1),
        "1 MiB of parents for 1 GiB"
    );
    // 50 MB/s: a fast origin link, so that 1 % of the object takes 200 ms to send.
    let first_8_mib = data[..8 << 20].to_vec();
    let (origin, edge) = origin_and_edge(
        Files {
            path: format!("/o/{addr}"),
            body: data,
            outboard: Some(obao),
            rate_bytes_per_s: 50_000_000,
            one_answer_per_connection: false,
            early_hints: false,
        },
        "obao-gib-edge",
    );

    let (mut s, head, mut body) = open_get(edge.http, &format!("/o/{addr}"));
    let mut chunk = [0u8; 65536];
    while body.is_empty() {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "no body");
        body.extend_from_slice(&chunk[..n]);
    }
    let sent_at_first_byte = origin.body_bytes_sent.load(Ordering::Relaxed);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains(&format!("Content-Length: {len}")), "{head}");
    assert!(
        sent_at_first_byte < len as u64 / 100,
        "the origin had sent {sent_at_first_byte} bytes before the first byte reached the client"
    );
    eprintln!("first byte after the origin sent {sent_at_first_byte} of {len} bytes");
    // The next 8 MiB, as the origin sends them, verified and right.
    while body.len() < 8 << 20 {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "cut at {}", body.len());
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(8 << 20);
    assert!(body == first_8_mib, "the streamed bytes are the object's");
    assert_eq!(metric(edge.admin, "ron_fetch_origin_streamed_total"), 1);
}

#[test]
fn an_edge_streams_from_another_ron_by_its_obao() {
    let origin = Node::start(&temp_dir("obao-ron-origin"), &["--shards", "1"]);
    let data = bytes(61, 3 * GROUP * 10 + 123);
    let addr = upload(&origin, &data);
    let url = format!("http://{}", origin.http);
    let edge = Node::start(
        &temp_dir("obao-ron-edge"),
        &["--shards", "2", "--origin", &url],
    );
    let got = get(edge.http, &format!("/o/{addr}")).unwrap();
    assert_eq!(got.status, 200);
    assert!(got.body == data);
    assert_eq!(metric(edge.admin, "ron_fetch_origin_streamed_total"), 1);
    assert_eq!(
        metric(edge.admin, "ron_fetch_origin_outboards_refused_total"),
        0
    );
    // Stored verified: the edge answers again without its origin.
    drop(origin);
    assert!(get(edge.http, &format!("/o/{addr}")).unwrap().body == data);
}

/// An origin that closes after each answer (an HTTP/1.0 server, keep-alive off) and
/// sends `103 Early Hints` before each: its outboard is used (the object asked for again
/// on a new connection) and the object streams; every request asks for the bytes as
/// stored. Before, the checked outboard was thrown away with the connection and the
/// object verified whole, and a 103 failed the fetch (502).
#[test]
fn an_origin_closing_after_each_answer_still_streams_past_its_early_hints() {
    let data = object(6 * GROUP + 321);
    let (obao, addr) = outboard(&data, 0);
    let path = format!("/o/{addr}");
    let (origin, edge) = origin_and_edge(
        Files {
            path: path.clone(),
            body: data.clone(),
            outboard: Some(obao),
            rate_bytes_per_s: 0,
            one_answer_per_connection: true,
            early_hints: true,
        },
        "obao-one-answer-edge",
    );
    let got = get(edge.http, &path).unwrap();
    assert_eq!(got.status, 200, "{got:?}");
    assert!(got.body == data);
    assert_eq!(metric(edge.admin, "ron_fetch_origin_streamed_total"), 1);
    let requests = origin.requests.load(Ordering::Relaxed);
    assert_eq!(
        requests, 2,
        "the outboard, then the object on a new connection"
    );
    assert_eq!(origin.asked_identity.load(Ordering::Relaxed), requests);
}

/// An origin (or a man in the middle of a plain http:// origin) that says a non-empty
/// object is empty: an 8-byte outboard of length 0, then an empty body. Nothing is
/// served as the object. Before, the edge answered 200 with an empty body, the address
/// as its ETag and a year of `immutable` caching for whatever cache stood in front.
#[test]
fn an_origin_saying_an_object_is_empty_is_not_believed() {
    let data = object(3 * GROUP);
    let path = format!("/o/{}", Address::of(&data));
    let (_origin, edge) = origin_and_edge(
        Files {
            path: path.clone(),
            body: Vec::new(),
            outboard: Some(vec![0u8; 8]),
            rate_bytes_per_s: 0,
            one_answer_per_connection: false,
            early_hints: false,
        },
        "obao-empty-lie-edge",
    );
    let got = get(edge.http, &path).unwrap();
    assert_ne!(got.status, 200, "served as the object: {got:?}");
    assert_eq!(
        metric(edge.admin, "ron_fetch_origin_outboards_refused_total"),
        1
    );
    assert_eq!(metric(edge.admin, "ron_fetch_origin_streamed_total"), 0);
}

#[test]
fn a_corrupt_origin_byte_is_never_served_and_a_lying_outboard_is_refused() {
    let data = object(20 * GROUP + 777);
    let (obao, addr) = outboard(&data, 0);
    let path = format!("/o/{addr}");

    // One flipped byte in group 12, with the true outboard: groups 0..12 stream, then
    // the answer is cut; nothing is stored. A request within `fetch_miss_ms` is answered
    // as the origin answered (502), without asking it again — before, each request
    // downloaded the object again to the same end — and the next one after asks again.
    // (Paced, so the client has read the good groups before the edge resets the
    // connection: a reset drops what the client has not read yet.)
    let mut rotten = data.clone();
    rotten[12 * GROUP + 5000] ^= 0x40;
    let (origin, edge) = origin_and_edge_with(
        Files {
            path: path.clone(),
            body: rotten,
            outboard: Some(obao.clone()),
            rate_bytes_per_s: 4_000_000,
            one_answer_per_connection: false,
            early_hints: false,
        },
        "obao-rotten-edge",
        &["--fetch-miss-ms", "1500"],
    );
    let (mut s, head, mut body) = open_get(edge.http, &path);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let _ = s.read_to_end(&mut body);
    assert!(body.len() < data.len(), "the answer is cut short");
    assert!(
        body.len() <= 12 * GROUP,
        "no byte of the bad group: {}",
        body.len()
    );
    assert!(body[..] == data[..body.len()], "what came is right");
    let failed = "ron_fetch_failures_total{reason=\"bad_group\"}";
    assert_eq!(gauge(edge.admin, failed), Some(1.0));
    let requests = origin.requests.load(Ordering::Relaxed);
    let remembered = get(edge.http, &path).unwrap();
    assert_eq!(remembered.status, 502, "{remembered:?}");
    assert_eq!(
        origin.requests.load(Ordering::Relaxed),
        requests,
        "not asked again within fetch_miss_ms"
    );
    assert_eq!(metric(edge.admin, "ron_fetch_misses_remembered_total"), 1);
    std::thread::sleep(Duration::from_millis(1600));
    if let Ok(again) = get(edge.http, &path) {
        assert!(
            again.body.len() < data.len() || again.status != 200,
            "{again:?}"
        );
    }
    assert!(
        origin.requests.load(Ordering::Relaxed) > requests,
        "asked again: nothing stored"
    );
    drop(edge);
    drop(origin);

    // An outboard of the right length whose parents lie: refused, the body (right)
    // verified whole and served.
    let mut lying = obao;
    lying[8 + 64 * 3] ^= 1;
    let (origin, edge) = served_verified_whole(&path, &data, Some(lying), "obao-liar-edge");
    assert_eq!(
        metric(edge.admin, "ron_fetch_origin_outboards_refused_total"),
        1
    );
    drop(edge);
    drop(origin);

    // A `.obao` answered with something that is no outboard of this object (an error
    // page served 200): not read past its first bytes; the object is asked for again
    // on a new connection and verified whole.
    let page = b"<html><body>Welcome to our CDN</body></html>".repeat(200);
    let (origin, edge) = served_verified_whole(&path, &data, Some(page), "obao-page-edge");
    drop(edge);
    drop(origin);

    // No outboard at all (404): verified whole, as before.
    let (origin, _edge) = served_verified_whole(&path, &data, None, "obao-none-edge");
    assert_eq!(
        origin.requests.load(Ordering::Relaxed),
        2,
        "outboard and object, one connection"
    );
}

/// The length of a `bao` CLI outboard (chunk-group log 0) of an object of `object_len`.
fn log0_outboard_len(object_len: u64) -> u64 {
    let log0 = ron_codec::bao::ChunkGroupLog::new(0).unwrap();
    ron_codec::bao::BaoShape::outboard(object_len, log0).encoded_len()
}

/// An origin whose every outboard claims a 768 MiB object — 48 MiB at log 0, as the
/// `bao` CLI writes them — and is sent all but its last byte at once, which never comes;
/// an object asked for alone gets no answer. Each connection ends within 20 s. Returns
/// its URL and how many outboard bodies it has sent whole but their last byte, or been
/// cut off from.
fn almost_sending_origin() -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let ended = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&ended);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten().take(64) {
            let counted = Arc::clone(&counted);
            std::thread::spawn(move || almost_send(conn, &counted));
        }
    });
    (url, ended)
}

fn almost_send(mut conn: TcpStream, ended: &AtomicU64) {
    let mut request = [0u8; 4096];
    let n = conn.read(&mut request).unwrap_or(0);
    let asks_outboard = String::from_utf8_lossy(&request[..n])
        .lines()
        .next()
        .is_some_and(|line| line.contains(".obao "));
    if asks_outboard {
        let object_len: u64 = 768 << 20;
        let len = log0_outboard_len(object_len);
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
        let mut body = vec![0u8; (len - 1) as usize];
        body[..8].copy_from_slice(&object_len.to_le_bytes());
        let _ = conn
            .write_all(head.as_bytes())
            .and_then(|()| conn.write_all(&body));
        ended.fetch_add(1, Ordering::Relaxed);
    }
    std::thread::sleep(Duration::from_secs(20));
}

/// The outboards the node's origin fetches hold at once are bounded (256 MiB, all
/// shards): one past it is not read, and its body is verified whole. An outboard is held
/// whole until it checks out, and a 1 GiB object's at log 0 is 64 MiB: before, twelve
/// reads of such objects (48 MiB each here) held 576 MiB, and an origin that sends
/// each all but its last byte held it until the fetch's pace gave up.
#[test]
fn outboards_held_by_origin_fetches_stay_within_their_budget() {
    let (url, ended) = almost_sending_origin();
    let mut edge = Node::start(
        &temp_dir("obao-budget-edge"),
        &[
            "--shards",
            "1",
            "--origin",
            &url,
            "--fetch-timeout-ms",
            "10000",
        ],
    );
    let before_kib = rss_kib(edge.pid());
    let readers: Vec<_> = (0..12u8)
        .map(|i| {
            let http = edge.http;
            std::thread::spawn(move || {
                let path = format!("/o/{}", Address::of(&[i; 32]));
                let _ = get(http, &path);
            })
        })
        .collect();
    let outboard_len = log0_outboard_len(768 << 20);
    wait_for(
        "every outboard sent or cut off",
        Duration::from_secs(20),
        || ended.load(Ordering::Relaxed) == 12,
    );
    std::thread::sleep(Duration::from_millis(500));
    let grown_kib = rss_kib(edge.pid()).saturating_sub(before_kib);
    let unbuffered = metric(edge.admin, "ron_fetch_origin_outboards_unbuffered_total");
    assert!(
        grown_kib < 320 << 10,
        "the node grew {grown_kib} KiB holding 12 outboards of {outboard_len} bytes ({unbuffered} not read)"
    );
    assert!(unbuffered >= 7, "{unbuffered} outboards not read");
    println!("12 outboards of {outboard_len} bytes: the node grew {grown_kib} KiB, {unbuffered} not read");
    edge.stop();
    for reader in readers {
        reader.join().unwrap();
    }
}
