//! What a hostile HTTP/2 client can stretch (issue 55, docs/design/http2.md), each with a
//! client that writes raw frames over TLS: rapid reset (CVE-2023-44487), a CONTINUATION
//! flood and a CONTINUATION trickle (CVE-2024-27316 and kin), SETTINGS and PING floods,
//! a window that never opens, and streams past the concurrency limit. Each shows the
//! flooding connection cut off or its stream reset, and the node serving other clients
//! all along (a client on another connection asks every 20 ms and must be answered).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ron_codec::Address;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const CANCEL: u32 = 0x8;
const REFUSED_STREAM: u32 = 0x7;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A GET of `path` as an HPACK block: static-table `:method GET`, `:scheme https`, and
/// literal `:path` and `:authority` (no Huffman, no indexing).
fn get_block(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x87, 0x04, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 9]);
    block.extend_from_slice(b"localhost");
    block
}

/// A literal header field `x-f: <value>` (no indexing) of `len` value bytes (< 16 KiB).
fn filler_field(len: usize) -> Vec<u8> {
    let mut field = vec![0x00, 3];
    field.extend_from_slice(b"x-f");
    // The value's length as an HPACK integer with a 7-bit prefix.
    let mut rest = len - 127;
    field.push(0x7f);
    while rest >= 128 {
        field.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    field.push(rest as u8);
    field.extend(std::iter::repeat_n(b'a', len));
    field
}

enum Outcome {
    Frame(Frame),
    /// The connection ended.
    Ended,
    /// Nothing decisive within the time given.
    Quiet,
}

struct Frame {
    kind: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// A client speaking raw HTTP/2 frames over TLS (ALPN h2) to a node.
struct RawH2 {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    read: Vec<u8>,
}

impl RawH2 {
    /// Connects and sends the preface and `settings` (pairs of id and value).
    fn connect(n: &TlsNode, settings: &[(u16, u32)]) -> RawH2 {
        RawH2::connect_over(n, TcpStream::connect(&n.tls).unwrap(), settings)
    }

    fn connect_over(n: &TlsNode, tcp: TcpStream, settings: &[(u16, u32)]) -> RawH2 {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&n.cert).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let name = ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        // The TLS handshake's reads wait as long as a busy node may take.
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tcp.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut raw = RawH2 {
            tls: rustls::StreamOwned::new(conn, tcp),
            read: Vec::new(),
        };
        let mut payload = Vec::new();
        for (id, value) in settings {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &payload));
        raw.send(&hello).unwrap();
        raw.tls
            .sock
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert_eq!(
            raw.tls.conn.alpn_protocol(),
            Some(&b"h2"[..]),
            "the node agreed to h2"
        );
        raw
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tls.write_all(bytes)?;
        self.tls.flush()
    }

    /// Frames until `done` says so, the connection ends (`None` then), or `within`
    /// passes (a panic).
    fn until(&mut self, within: Duration, done: impl FnMut(&Frame) -> bool) -> Option<Frame> {
        match self.read_until(within, done) {
            Outcome::Frame(f) => Some(f),
            Outcome::Ended => None,
            Outcome::Quiet => panic!("nothing decisive within {within:?}"),
        }
    }

    fn read_until(&mut self, within: Duration, mut done: impl FnMut(&Frame) -> bool) -> Outcome {
        let deadline = Instant::now() + within;
        loop {
            while self.read.len() >= 9 {
                let len = (usize::from(self.read[0]) << 16)
                    | (usize::from(self.read[1]) << 8)
                    | usize::from(self.read[2]);
                if self.read.len() < 9 + len {
                    break;
                }
                let f = Frame {
                    kind: self.read[3],
                    stream: u32::from_be_bytes(self.read[5..9].try_into().unwrap()) & 0x7fff_ffff,
                    payload: self.read[9..9 + len].to_vec(),
                };
                self.read.drain(..9 + len);
                if done(&f) {
                    return Outcome::Frame(f);
                }
            }
            if Instant::now() >= deadline {
                return Outcome::Quiet;
            }
            let mut buf = [0u8; 65536];
            match self.tls.read(&mut buf) {
                Ok(0) => return Outcome::Ended,
                Ok(n) => self.read.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Outcome::Ended,
            }
        }
    }

    /// The error code of a GOAWAY among the frames the node has sent so far.
    fn goaway_so_far(&mut self) -> Option<u32> {
        let socket = &self.tls.sock;
        socket
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let code = match self.read_until(Duration::from_millis(5), |f| f.kind == GOAWAY) {
            Outcome::Frame(f) => Some(u32::from_be_bytes(f.payload[4..8].try_into().unwrap())),
            Outcome::Ended | Outcome::Quiet => None,
        };
        self.tls
            .sock
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        code
    }

    /// The GOAWAY's error code, or `None` when the connection ended without one.
    fn goaway(&mut self, within: Duration) -> Option<u32> {
        self.until(within, |f| f.kind == GOAWAY)
            .map(|f| u32::from_be_bytes(f.payload[4..8].try_into().unwrap()))
    }
}

/// A client on its own connection asking every 20 ms while a flood runs; its slowest
/// answer and its failures when stopped.
struct Bystander {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(Duration, Vec<String>)>,
}

impl Bystander {
    fn start(n: &TlsNode, addr: Address) -> Bystander {
        let stop = Arc::new(AtomicBool::new(false));
        let (http, flag) = (n.node.http, Arc::clone(&stop));
        let handle = std::thread::spawn(move || {
            let (mut slowest, mut failures) = (Duration::ZERO, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                let asked = Instant::now();
                match get(http, &format!("/o/{addr}")) {
                    Ok(r) if r.status == 200 => {}
                    other => failures.push(format!("{other:?}")),
                }
                slowest = slowest.max(asked.elapsed());
                std::thread::sleep(Duration::from_millis(20));
            }
            (slowest, failures)
        });
        Bystander { stop, handle }
    }

    fn finish(self, what: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let (slowest, failures) = self.handle.join().unwrap();
        assert!(failures.is_empty(), "{what}: others failed: {failures:?}");
        assert!(
            slowest < Duration::from_secs(2),
            "{what}: others waited {slowest:?}"
        );
    }
}

#[test]
fn rapid_reset_is_sent_goaway_and_others_are_served() {
    let n = tls_node("h2-rapid-reset", &["--shards", "1"]);
    let addr = upload(&n.node, &bytes(1, 20_000));
    let bystander = Bystander::start(&n, addr);
    let mut raw = RawH2::connect(&n, &[]);
    let block = get_block(&format!("/o/{addr}"));
    let streams = 20_000u32;
    let mut sent = 0;
    let mut code = None;
    // Between batches, the node's frames so far are read: its GOAWAY is seen before
    // writing on into a closed connection (whose reset would discard it).
    for batch in 0..streams / 100 {
        let mut bytes = Vec::new();
        for i in 0..100 {
            let id = 2 * (batch * 100 + i) + 1;
            bytes.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &block));
            bytes.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
        }
        if raw.send(&bytes).is_err() {
            break;
        }
        sent += 100;
        code = raw.goaway_so_far();
        if code.is_some() {
            break;
        }
    }
    assert_eq!(
        code,
        Some(0xb),
        "GOAWAY ENHANCE_YOUR_CALM after {sent} streams sent"
    );
    assert!(sent < streams, "all {sent} streams were taken");
    bystander.finish("rapid reset");
}

#[test]
fn a_continuation_flood_is_cut_off_and_others_are_served() {
    let n = tls_node("h2-continuation", &["--shards", "1"]);
    let addr = upload(&n.node, &bytes(2, 20_000));
    let rss_before = rss_kib(n.node.pid());
    let bystander = Bystander::start(&n, addr);
    let mut raw = RawH2::connect(&n, &[]);
    raw.send(&frame(HEADERS, 0, 1, &get_block("/o/x"))).unwrap();
    let filler = frame(CONTINUATION, 0, 1, &filler_field(8000));
    let mut sent_bytes = 0usize;
    // 80 MB of header block offered, without END_HEADERS.
    for _ in 0..10_000 {
        if raw.send(&filler).is_err() {
            break;
        }
        sent_bytes += filler.len();
    }
    let ended = raw.goaway(Duration::from_secs(15));
    assert!(
        sent_bytes < 40_000_000,
        "the node read {sent_bytes} bytes of one header block (ended: {ended:?})"
    );
    let grown = rss_kib(n.node.pid()).saturating_sub(rss_before);
    assert!(grown < 64 * 1024, "the node grew {grown} KiB");
    bystander.finish("CONTINUATION flood");
}

/// A client that goes quiet between requests for longer than the header timeout (a
/// page open in a browser, a client waiting on a slow answer) keeps its connection until
/// the idle timeout, as on HTTP/1.1. Before, the TLS handshake's read deadline stayed on
/// the socket: the connection was cut, every stream with it, and no GOAWAY said which
/// requests had been served.
#[test]
fn a_connection_quiet_past_the_header_timeout_is_kept_until_idle() {
    let n = tls_node("h2-quiet", &["--shards", "1", "--header-timeout-ms", "500"]);
    let data = bytes(7, 1_000);
    let addr = upload(&n.node, &data);
    let mut raw = RawH2::connect(&n, &[]);
    let path = format!("/o/{addr}");
    for stream in [1, 3] {
        raw.send(&frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            stream,
            &get_block(&path),
        ))
        .unwrap();
        let mut body = 0;
        let ended = raw.until(Duration::from_secs(5), |f| {
            if f.kind == DATA && f.stream == stream {
                body += f.payload.len();
            }
            f.kind == GOAWAY || (f.kind == DATA && f.stream == stream && body == data.len())
        });
        let ended = ended.unwrap_or_else(|| panic!("stream {stream}: the connection ended"));
        assert_eq!(ended.kind, DATA, "stream {stream}: GOAWAY");
        // Quiet for three header timeouts.
        std::thread::sleep(Duration::from_millis(1_500));
    }
}

#[test]
fn a_trickled_header_block_is_closed_when_idle() {
    let n = tls_node(
        "h2-trickle",
        &["--shards", "1", "--idle-timeout-ms", "1000"],
    );
    let mut raw = RawH2::connect(&n, &[]);
    raw.send(&frame(HEADERS, 0, 1, &get_block("/o/x"))).unwrap();
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(10) {
        // One small field every 200 ms: never a whole head.
        if raw
            .send(&frame(CONTINUATION, 0, 1, &[0x00, 1, b'y', 1, b'z']))
            .is_err()
        {
            closed = true;
            break;
        }
        if raw
            .until(Duration::from_secs(1), |f| f.kind == GOAWAY)
            .is_some()
        {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a header block trickled for {:?} was not cut off",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// An idle connection is closed the way RFC 9113 §6.8 asks: GOAWAY with the largest
/// stream id and a PING, then, once the client has answered it, a final GOAWAY naming
/// the last stream the node took, before the connection ends. Before, the node dropped
/// the connection right after the first GOAWAY: a request the client sent meanwhile
/// was lost without a word.
#[test]
fn an_idle_connection_is_closed_gracefully_naming_its_last_stream() {
    let n = tls_node(
        "h2-idle-goaway",
        &["--shards", "1", "--idle-timeout-ms", "300"],
    );
    let mut raw = RawH2::connect(&n, &[]);
    raw.send(&frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &get_block("/o/x"),
    ))
    .unwrap();
    let last_stream = |f: &Frame| u32::from_be_bytes(f.payload[..4].try_into().unwrap());
    let mut goaways = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let Some(f) = raw.until(Duration::from_secs(5), |f| {
            f.kind == GOAWAY || f.kind == PING
        }) else {
            break;
        };
        match f.kind {
            PING => raw.send(&frame(PING, 0x1, 0, &f.payload)).unwrap(),
            _ => goaways.push(last_stream(&f)),
        }
        if goaways.last() == Some(&1) {
            break;
        }
    }
    assert_eq!(goaways, [0x7fff_ffff, 1], "GOAWAYs before the end");
}

#[test]
fn settings_and_ping_floods_leave_others_served() {
    let n = tls_node(
        "h2-settings-ping",
        &["--shards", "1", "--body-timeout-ms", "2000"],
    );
    let addr = upload(&n.node, &bytes(3, 20_000));
    let rss_before = rss_kib(n.node.pid());
    let bystander = Bystander::start(&n, addr);
    let mut raw = RawH2::connect(&n, &[]);
    let mut batch = Vec::new();
    for i in 0..1000u64 {
        batch.extend(frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]));
        batch.extend(frame(PING, 0, 0, &i.to_be_bytes()));
    }
    // Never read: the node's answers back up until it stops reading this client.
    let started = Instant::now();
    let mut frames_sent = 0;
    while started.elapsed() < Duration::from_secs(20) && raw.send(&batch).is_ok() {
        frames_sent += 2000;
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the node read {frames_sent} SETTINGS and PINGs from a client that reads nothing"
    );
    let grown = rss_kib(n.node.pid()).saturating_sub(rss_before);
    assert!(grown < 64 * 1024, "the node grew {grown} KiB");
    bystander.finish("SETTINGS and PING flood");
}

#[test]
fn a_window_that_never_opens_is_reset_at_the_deadline_and_streams_past_the_limit_refused() {
    let n = tls_node(
        "h2-window",
        &[
            "--shards",
            "1",
            "--body-timeout-ms",
            "1500",
            "--body-rate-min",
            "64MiB",
        ],
    );
    let big = upload(&n.node, &bytes(4, 1 << 20));
    let small = upload(&n.node, &bytes(5, 1000));
    let bystander = Bystander::start(&n, small);
    // SETTINGS_INITIAL_WINDOW_SIZE = 0: no stream may carry a byte of DATA.
    let mut raw = RawH2::connect(&n, &[(0x4, 0)]);
    let block = get_block(&format!("/o/{big}"));
    let mut bytes = Vec::new();
    for i in 0..129u32 {
        bytes.extend(frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, &block));
    }
    raw.send(&bytes).unwrap();
    // The 129th stream is over the limit the node announced.
    let refused = raw
        .until(Duration::from_secs(5), |f| {
            f.kind == RST_STREAM && f.stream == 257
        })
        .expect("an answer to the 129th stream");
    assert_eq!(
        u32::from_be_bytes(refused.payload[..4].try_into().unwrap()),
        REFUSED_STREAM
    );
    // The others wait for a window that never opens, then are reset.
    let started = Instant::now();
    let mut reset = 0;
    let mut data = 0;
    raw.until(Duration::from_secs(15), |f| {
        match f.kind {
            RST_STREAM => reset += 1,
            DATA => data += 1,
            _ => {}
        }
        reset == 128
    })
    .expect("the connection stays open");
    assert_eq!(data, 0, "DATA sent without a window");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    wait_for("every slot is given back", Duration::from_secs(5), || {
        gauge(n.node.admin, "ron_inflight_requests").unwrap_or(0.0) == 0.0
    });
    bystander.finish("stalled windows");
}

/// Streams parked on a window that never opens hold no read buffer: the head is read,
/// and a request without a body needs none after it. Before, each held its connection's
/// 80 KiB buffer (`head_bytes_max` + 64 KiB) until the stream's deadline: 128 streams a
/// connection, 10 MiB each.
#[test]
fn streams_parked_on_a_closed_window_hold_no_read_buffer() {
    let n = tls_node("h2-parked", &["--shards", "1"]);
    let big = upload(&n.node, &bytes(6, 1 << 20));
    let block = get_block(&format!("/o/{big}"));
    let rss_before = rss_kib(n.node.pid());
    let mut parked = Vec::new();
    for _ in 0..8 {
        let mut raw = RawH2::connect(&n, &[(0x4, 0)]);
        let mut frames = Vec::new();
        for i in 0..128u32 {
            frames.extend(frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, &block));
        }
        raw.send(&frames).unwrap();
        parked.push(raw);
    }
    std::thread::sleep(Duration::from_secs(2));
    let grown = rss_kib(n.node.pid()).saturating_sub(rss_before);
    eprintln!("1,024 parked streams: RSS grew {grown} KiB");
    // Measured on 2 CPUs: 19.7–20.1 MiB with a buffer each, 11.2–11.6 MiB without (the
    // streams' own state); the bound sits between.
    assert!(
        grown < 16 * 1024,
        "1,024 parked streams: RSS grew {grown} KiB"
    );
    drop(parked);
}

/// A client that opens every window as wide as HTTP/2 allows and never reads the socket:
/// once the kernel's buffers are full, what streams send waits in the node. Before, each
/// of a connection's 128 streams queued up to its own send buffer (64 KiB) in h2, 8 MiB a
/// connection; a connection's streams now queue at most `H2_SEND_QUEUED_BYTES_MAX` (256
/// KiB) together, and wait for the socket to take it.
#[test]
fn streams_of_a_client_that_never_reads_queue_a_bounded_amount_per_connection() {
    let n = tls_node("h2-never-reads", &["--shards", "1"]);
    let big = upload(&n.node, &bytes(7, 1 << 20));
    let block = get_block(&format!("/o/{big}"));
    // Stream windows and the connection's window at their largest (2^31 - 1).
    let window_max = 0x7fff_ffffu32;
    let connection_window = frame(WINDOW_UPDATE, 0, 0, &(window_max - 65_535).to_be_bytes());
    let rss_before = rss_kib(n.node.pid());
    let mut unread = Vec::new();
    for _ in 0..8 {
        let mut raw = RawH2::connect(&n, &[(0x4, window_max)]);
        let mut frames = connection_window.clone();
        for i in 0..128u32 {
            frames.extend(frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, &block));
        }
        raw.send(&frames).unwrap();
        unread.push(raw);
    }
    std::thread::sleep(Duration::from_secs(3));
    let grown = rss_kib(n.node.pid()).saturating_sub(rss_before);
    eprintln!("8 connections never read, 1,024 streams: RSS grew {grown} KiB");
    // 1,024 streams' own state is ~11.5 MiB (the parked-streams test above); 8 queues of
    // 256 KiB add 2 MiB. Each connection queued 8 MiB before: 64 MiB more.
    assert!(
        grown < 20 * 1024,
        "1,024 streams of clients that never read: RSS grew {grown} KiB"
    );
    drop(unread);
}

/// Request bodies the node never reads (a GET's) are not held for the answer's life: a
/// client whose GETs send bodies up to their windows (256 KiB a stream, 1 MiB a
/// connection) and that reads nothing would hold 1 MiB of the node's memory a
/// connection if h2 kept them (32 MiB here); 3 MiB measured, the answers' send queues.
#[test]
fn request_bodies_the_node_never_reads_are_not_held() {
    let n = tls_node("h2-unread-bodies", &["--shards", "1"]);
    let big = upload(&n.node, &bytes(9, 1 << 20));
    let block = get_block(&format!("/o/{big}"));
    const CONNECTIONS: usize = 32;
    const STREAMS: u32 = 4;
    let piece = vec![0x5a; 16 * 1024];
    let rss_before = rss_kib(n.node.pid());
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut raw = RawH2::connect(&n, &[]);
        // The node's WINDOW_UPDATE opening its connection window past 64 KiB.
        raw.until(Duration::from_secs(2), |f| {
            f.kind == WINDOW_UPDATE && f.stream == 0
        })
        .expect("the connection window opened");
        let mut frames = Vec::new();
        for i in 0..STREAMS {
            frames.extend(frame(HEADERS, END_HEADERS, 2 * i + 1, &block));
        }
        for i in 0..STREAMS {
            for _ in 0..16 {
                frames.extend(frame(DATA, 0, 2 * i + 1, &piece));
            }
        }
        raw.send(&frames).unwrap();
        held.push(raw);
    }
    std::thread::sleep(Duration::from_secs(3));
    let grown = rss_kib(n.node.pid()).saturating_sub(rss_before);
    eprintln!("{CONNECTIONS} connections, {STREAMS} GETs each with 256 KiB of body unread: RSS grew {grown} KiB");
    assert!(
        grown < 16 * 1024,
        "GET bodies never read held: RSS grew {grown} KiB"
    );
    drop(held);
}

/// Stream windows opened a byte at a time (CVE-2019-9511, "data dribble"): each 1-byte
/// WINDOW_UPDATE let a stream send a 1-byte DATA frame, an allocation, an h2 frame and a
/// wake-up each, 13 bytes of the client's for ~40 of the node's. A stream now sends a
/// frame shorter than 1 KiB (or than what is left of its body) only once its window has
/// stayed that small for 20 ms.
#[test]
fn windows_opened_a_byte_at_a_time_get_few_data_frames() {
    const STREAMS: u32 = 4;
    const LEN: usize = 64 * 1024;
    let n = tls_node("h2-dribble", &["--shards", "1"]);
    let object = upload(&n.node, &bytes(8, LEN));
    let block = get_block(&format!("/o/{object}"));
    // Stream windows start closed; the connection's is as wide as HTTP/2 allows.
    let mut raw = RawH2::connect(&n, &[(0x4, 0)]);
    let mut frames = frame(
        WINDOW_UPDATE,
        0,
        0,
        &(0x7fff_ffffu32 - 65_535).to_be_bytes(),
    );
    for i in 0..STREAMS {
        frames.extend(frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, &block));
    }
    raw.send(&frames).unwrap();
    let (data_frames, data_bytes) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    let count = |f: &Frame| {
        if f.kind == DATA {
            data_frames.set(data_frames.get() + 1);
            data_bytes.set(data_bytes.get() + f.payload.len());
        }
        false
    };
    let open_by = |bytes: u32| -> Vec<u8> {
        (0..STREAMS)
            .flat_map(|i| frame(WINDOW_UPDATE, 0, 2 * i + 1, &bytes.to_be_bytes()))
            .collect()
    };
    raw.tls
        .sock
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    // A byte of window per stream every 200 µs for 2 s, the answers read as they come.
    let began = Instant::now();
    let mut rounds = 0u32;
    while began.elapsed() < Duration::from_secs(2) {
        raw.send(&open_by(1)).unwrap();
        rounds += 1;
        if rounds.is_multiple_of(50) {
            raw.read_until(Duration::from_millis(1), count);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let dribbled = (data_frames.get(), data_bytes.get());
    raw.send(&open_by(LEN as u32)).unwrap();
    raw.tls
        .sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let complete = STREAMS as usize * LEN;
    raw.read_until(Duration::from_secs(10), |f| {
        count(f);
        data_bytes.get() == complete
    });
    let (data_frames, data_bytes) = (data_frames.get(), data_bytes.get());
    eprintln!(
        "{rounds} windows of a byte per stream over 2 s: {} DATA frames for {} bytes by then; {data_frames} frames for {data_bytes} bytes in all",
        dribbled.0, dribbled.1
    );
    assert_eq!(data_bytes, complete, "every body sent whole");
    assert!(
        data_frames <= 1_024,
        "{data_frames} DATA frames for {STREAMS} bodies of {LEN} bytes"
    );
}

/// Each wait for a stream's window lasts what is left of the transfer's deadline at that
/// wait. The send path polls once before it sets a wait's limit, and that first poll made
/// the wait's timer with the previous wait's limit: a window opened a little just before
/// the deadline bought the stream the whole first wait again.
#[test]
fn a_window_opened_a_little_before_the_deadline_buys_no_second_grace() {
    let n = tls_node(
        "h2-second-wait",
        &[
            "--shards",
            "1",
            "--body-timeout-ms",
            "1000",
            "--body-rate-min",
            "1MiB",
        ],
    );
    let object = upload(&n.node, &bytes(10, 64 * 1024));
    let mut raw = RawH2::connect(&n, &[(0x4, 0)]);
    let mut frames = frame(
        WINDOW_UPDATE,
        0,
        0,
        &(0x7fff_ffffu32 - 65_535).to_be_bytes(),
    );
    frames.extend(frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &get_block(&format!("/o/{object}")),
    ));
    raw.send(&frames).unwrap();
    let asked = Instant::now();
    // The deadline: 1 s of grace and 64 KiB at 1 MiB/s, ~1.06 s after the head.
    raw.until(Duration::from_secs(5), |f| {
        f.kind == HEADERS && f.stream == 1
    })
    .expect("the response's head");
    std::thread::sleep(Duration::from_millis(700).saturating_sub(asked.elapsed()));
    raw.send(&frame(WINDOW_UPDATE, 0, 1, &1024u32.to_be_bytes()))
        .unwrap();
    let reset = raw
        .until(Duration::from_secs(5), |f| {
            f.kind == RST_STREAM && f.stream == 1
        })
        .expect("the stream reset at its deadline");
    let took = asked.elapsed();
    eprintln!("a window opened 1 KiB 0.7 s in: the stream reset {took:?} after its request");
    assert!(reset.payload.len() == 4);
    assert!(
        took < Duration::from_millis(1_450),
        "reset {took:?} after the request; its deadline was ~1.06 s"
    );
}

/// An idle HTTP/2 connection is sent GOAWAY as soon as the stop begins, while an upload
/// on another connection keeps the shard draining; before, nothing was sent until a new
/// stream or the idle timeout (75 s), past the process's end.
#[test]
fn a_stop_sends_goaway_to_an_idle_connection_at_once() {
    let mut n = tls_node("h2-drain", &["--shards", "1"]);
    let mut raw = RawH2::connect(&n, &[]);
    raw.until(Duration::from_secs(5), |f| f.kind == SETTINGS)
        .expect("the node's SETTINGS");
    let mut uploading = connect(n.node.http);
    uploading
        .write_all(b"PUT /o HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\r\nstarted")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    n.node.signal("TERM");
    let signalled = Instant::now();
    let code = raw.goaway(Duration::from_secs(10));
    let took = signalled.elapsed();
    assert_eq!(code, Some(0), "GOAWAY NO_ERROR");
    assert!(
        took < Duration::from_secs(2),
        "GOAWAY {took:?} after SIGTERM"
    );
    drop(uploading);
    assert_eq!(n.node.stop_wait().code(), Some(0));
}

/// An origin that accepts connections and never answers (at most 64, held until the
/// test ends).
fn silent_origin() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().take(64) {
            held.push(conn);
        }
        std::thread::sleep(Duration::from_secs(60));
    });
    addr
}

#[test]
fn streams_reset_while_they_wait_are_bounded_per_connection() {
    // Every request waits on a read-through from an origin that never answers: a stream
    // the client resets leaves its task waiting, so resets that come after the node took
    // the streams pile up tasks unless the connection is cut off.
    let origin = format!("http://{}", silent_origin());
    let n = tls_node(
        "h2-reset-waiting",
        &[
            "--shards",
            "1",
            "--origin",
            &origin,
            "--fetch-timeout-ms",
            "20000",
        ],
    );
    let stored = upload(&n.node, &bytes(6, 1000));
    let bystander = Bystander::start(&n, stored);
    let mut raw = RawH2::connect(&n, &[]);
    let block = get_block(&format!("/o/{}", Address::of(b"never anywhere")));
    let mut next_id = 1u32;
    let mut code = None;
    let mut waited_most = 0;
    for _round in 0..10 {
        let ids: Vec<u32> = (0..100).map(|i| next_id + 2 * i).collect();
        next_id += 200;
        let opened: Vec<u8> = ids
            .iter()
            .flat_map(|&id| frame(HEADERS, END_STREAM | END_HEADERS, id, &block))
            .collect();
        raw.send(&opened).unwrap();
        // Taken by the node before they are reset: not "reset before accept".
        std::thread::sleep(Duration::from_millis(100));
        let reset: Vec<u8> = ids
            .iter()
            .flat_map(|&id| frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()))
            .collect();
        waited_most = waited_most.max(metric(n.node.admin, "ron_parked_requests"));
        if raw.send(&reset).is_err() {
            break;
        }
        code = raw.goaway_so_far();
        if code.is_some() {
            break;
        }
    }
    assert_eq!(
        code,
        Some(0xb),
        "GOAWAY ENHANCE_YOUR_CALM once reset streams' tasks outnumber twice the limit ({} streams opened)",
        next_id / 2
    );
    // The connection gone, its streams' tasks end with it: a client that came back
    // after each GOAWAY piled them up (each waited out the fetch timeout, 20 s here).
    assert!(
        waited_most >= 100,
        "the streams waited on the origin: {waited_most}"
    );
    drop(raw);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(n.node.admin, "ron_parked_requests") > 0 {
        assert!(
            Instant::now() < deadline,
            "{} streams still wait 5 s after their connection closed",
            metric(n.node.admin, "ron_parked_requests")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    bystander.finish("resets of waiting streams");
}

/// What streams hold of their shard's read-ahead budget shows as `ron_read_ahead_bytes`:
/// streams parked on closed windows hold the batches read ahead for them until they end,
/// and give them back with their connection. (Held by stalled clients, the budget leaves
/// other cold reads going one group at a time, counted in
/// `ron_read_ahead_refused_total`; no metric showed either before.)
#[test]
fn read_ahead_held_by_parked_streams_is_shown_and_given_back() {
    let n = tls_node("h2-read-ahead", &["--shards", "1"]);
    let big = upload(&n.node, &bytes(8, 4 << 20));
    let block = get_block(&format!("/o/{big}"));
    let mut raw = RawH2::connect(&n, &[(0x4, 0)]);
    let mut frames = Vec::new();
    for i in 0..16u32 {
        frames.extend(frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, &block));
    }
    raw.send(&frames).unwrap();
    let held = |n: &TlsNode| gauge(n.node.admin, "ron_read_ahead_bytes").unwrap_or(0.0);
    let asked = Instant::now();
    while held(&n) == 0.0 {
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "no read-ahead shown for 16 parked streams"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(held(&n) <= (256u64 << 20) as f64, "{}", held(&n));
    drop(raw);
    let closed = Instant::now();
    while held(&n) > 0.0 {
        assert!(
            closed.elapsed() < Duration::from_secs(5),
            "{} bytes of read-ahead held 5 s after the streams' connection closed",
            held(&n)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One client's streams hold at most a quarter of their shard's read-ahead budget (64 MiB
/// of 256): its 128 streams of cold 4 MiB objects parked on closed windows held all of it
/// before (2 MiB each: four batches read ahead), and every other client's cold reads went
/// one group at a time until the send deadline cut the streams. Objects larger than a
/// quarter of the 8 MiB cache are never cached: every stream reads from disk.
#[test]
fn one_clients_parked_streams_hold_at_most_a_quarter_of_the_read_ahead() {
    let n = tls_node(
        "h2-read-ahead-share",
        &["--shards", "1", "--cache-bytes", "8MiB"],
    );
    let objects: Vec<Address> = (0..8)
        .map(|i| upload(&n.node, &bytes(60 + i, 4 << 20)))
        .collect();
    let mut raw = RawH2::connect(&n, &[(0x4, 0)]);
    let mut frames = Vec::new();
    for i in 0..128u32 {
        let block = get_block(&format!("/o/{}", objects[i as usize % objects.len()]));
        frames.extend(frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, &block));
    }
    raw.send(&frames).unwrap();
    let held = || gauge(n.node.admin, "ron_read_ahead_bytes").unwrap_or(0.0) as u64;
    // Settled: the gauge has not moved for a second.
    let (mut last, mut since, asked) = (u64::MAX, Instant::now(), Instant::now());
    loop {
        let now = held();
        if now != last {
            (last, since) = (now, Instant::now());
        }
        if now > 0 && since.elapsed() > Duration::from_secs(1) {
            break;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(20),
            "read-ahead still moving: {now}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        last <= 64 << 20,
        "one client's parked streams hold {last} bytes of read-ahead"
    );
    // Another client's cold read still reads ahead.
    let refused = metric(n.node.admin, "ron_read_ahead_refused_total");
    let mut s = connect_from(std::net::Ipv4Addr::new(127, 0, 0, 2), n.node.http);
    let path = format!("/o/{}", objects[0]);
    let raw_get = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(raw_get.as_bytes()).unwrap();
    let r = read_response(&mut s, &mut Vec::new(), false).unwrap();
    assert!(r.status == 200 && r.body.len() == 4 << 20, "{}", r.status);
    assert_eq!(
        metric(n.node.admin, "ron_read_ahead_refused_total"),
        refused,
        "another client's cold read went group by group"
    );
    println!("128 parked streams of one client hold {last} bytes of read-ahead");
    drop(raw);
}
