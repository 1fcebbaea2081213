//! The standing attack suite: hostile clients against the real binary on loopback.
//! Every case asserts the documented answer *and* that a well-behaved client beside the
//! attack keeps its latency: p99 under [`WELL_BEHAVED_P99`] over its probes (a debug
//! build on two cores; a release build answers these probes in well under 1 ms).
//! Every case is bounded in time and stops its own threads.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// The p99 a well-behaved client must keep while an attack runs.
const WELL_BEHAVED_P99: Duration = Duration::from_millis(250);

/// `count` GETs of `path` with `headers`, each on a fresh connection, expecting
/// `status`; returns their p99 latency.
fn probe_p99(addr: SocketAddr, path: &str, headers: &str, status: u16, count: usize) -> Duration {
    let mut took: Vec<Duration> = (0..count)
        .map(|_| {
            let started = Instant::now();
            let r = get_with(addr, path, headers);
            assert_eq!(r.status, status, "a well-behaved client's answer: {r:?}");
            started.elapsed()
        })
        .collect();
    took.sort();
    took[(count * 99).div_ceil(100) - 1]
}

fn assert_well_behaved_client_unharmed(addr: SocketAddr, path: &str, headers: &str, status: u16) {
    let p99 = probe_p99(addr, path, headers, status, 100);
    assert!(
        p99 < WELL_BEHAVED_P99,
        "a well-behaved client's p99 is {p99:?} during the attack (bound {WELL_BEHAVED_P99:?})"
    );
}

/// A connection whose receive buffer is 4 KiB, so the kernel absorbs little of a
/// response the client does not read.
fn small_window(addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// Starts GETs of `addr` on `count` small-window connections that read nothing, `batch`
/// at a time: a batch is admitted while the shard fills their sockets, then parks.
fn stalled_readers(n: &Node, addr: &Address, count: usize, batch: usize) -> Vec<TcpStream> {
    let mut readers = Vec::with_capacity(count);
    while readers.len() < count {
        for _ in 0..batch.min(count - readers.len()) {
            let mut s = small_window(n.http);
            let raw = format!("GET /o/{addr} HTTP/1.1\r\nHost: t\r\n\r\n");
            s.write_all(raw.as_bytes()).unwrap();
            readers.push(s);
        }
        wait_metric(
            n,
            "ron_parked_requests",
            readers.len() as u64,
            Duration::from_secs(10),
        );
    }
    readers
}

/// Waits (bounded) until `metric` reaches `at_least`.
fn wait_metric(n: &Node, name: &str, at_least: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while try_metric(n.admin, name).unwrap_or(0) < at_least {
        assert!(
            Instant::now() < deadline,
            "{name} did not reach {at_least} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) until the node holds no client connection; returns how long it took.
fn wait_connections_closed(n: &Node, limit: Duration) -> Duration {
    let started = Instant::now();
    while metric(n.admin, "ron_connections_open") > 0 {
        assert!(
            started.elapsed() < limit,
            "the node kept a slow connection open past {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

/// Reads one byte every `pace` until told to stop or the connection ends.
fn trickle_reader(
    mut s: TcpStream,
    pace: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        s.set_read_timeout(Some(pace)).unwrap();
        let mut byte = [0u8; 1];
        while !stop.load(Ordering::Relaxed) {
            match s.read(&mut byte) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
            std::thread::sleep(pace);
        }
    })
}

#[test]
fn slow_readers_cannot_fill_the_inflight_gate() {
    // The case: eight (here sixteen) clients that GET a large object through a
    // 4 KiB receive buffer and never read leave a ninth client's small range unharmed.
    let n = Node::start(
        &temp_dir("atk-slow-readers"),
        &["--shards", "1", "--max-inflight", "8"],
    );
    let big = bytes(1, 24 << 20);
    let addr = upload(&n, &big);
    let readers = stalled_readers(&n, &addr, 16, 8);
    let r = get_with(n.http, &format!("/o/{addr}"), "Range: bytes=0-99\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &big[..100]);
    let path = format!("/o/{addr}");
    assert_well_behaved_client_unharmed(n.http, &path, "Range: bytes=0-99\r\n", 206);
    assert_eq!(metric(n.admin, "ron_overload_rejections_total"), 0);
    drop(readers);
}

#[test]
fn oap_slow_readers_cannot_fill_the_inflight_gate() {
    use ron_codec::messages::ObjectRequest;
    let n = Node::start(
        &temp_dir("atk-oap-slow-readers"),
        &["--shards", "1", "--max-inflight", "4"],
    );
    let big = bytes(2, 16 << 20);
    let addr = upload(&n, &big);
    let get_frame = |corr_id| {
        let req = ObjectRequest::Get {
            addr,
            range: None,
            proof: false,
        };
        req.frame(corr_id, 0, bytes::Bytes::new())
            .unwrap()
            .to_bytes()
    };
    let mut readers = Vec::new();
    for _ in 0..2 {
        for _ in 0..4 {
            let mut s = small_window(n.oap);
            s.write_all(&get_frame(1)).unwrap();
            readers.push(s);
        }
        let parked = readers.len() as u64;
        wait_metric(&n, "ron_parked_requests", parked, Duration::from_secs(10));
    }
    let path = format!("/o/{addr}");
    assert_well_behaved_client_unharmed(n.http, &path, "Range: bytes=0-99\r\n", 206);
    drop(readers);
}

#[test]
fn a_reader_slower_than_the_minimum_rate_is_cut_off_and_a_fast_one_is_not() {
    let n = Node::start(
        &temp_dir("atk-min-rate"),
        &[
            "--shards",
            "1",
            "--body-timeout-ms",
            "500",
            "--body-rate-min",
            "2MiB",
        ],
    );
    let big = bytes(3, 16 << 20);
    let addr = upload(&n, &big);
    // One byte every 100 ms: far below 2 MiB/s. The socket buffers absorb a few MiB at
    // once, so the deadline falls at ~0.5 s + (bytes sent) / 2 MiB/s.
    let slow = stalled_readers(&n, &addr, 1, 1).remove(0);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = trickle_reader(slow, Duration::from_millis(100), Arc::clone(&stop));
    let took = wait_connections_closed(&n, Duration::from_secs(15));
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert!(
        took > Duration::from_millis(300),
        "cut before its grace: {took:?}"
    );
    wait_metric(
        &n,
        "ron_transfer_deadline_drops_total",
        1,
        Duration::from_secs(5),
    );
    // A client reading at full speed under the same limits gets every byte.
    let r = get(n.http, &format!("/o/{addr}")).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == big, "the fast reader's body is whole");
}

#[test]
fn slow_uploads_cannot_fill_the_gate_and_are_cut_off_leaving_nothing() {
    let n = Node::start(
        &temp_dir("atk-slow-uploads"),
        &[
            "--shards",
            "1",
            "--max-inflight",
            "4",
            // A grace longer than the well-behaved client's probes: the cut-offs (each
            // removes a temp file, real work holding a slot) come after them.
            "--body-timeout-ms",
            "3000",
            "--body-rate-min",
            "64KiB",
        ],
    );
    let small = upload(&n, b"a small object a well-behaved client reads");
    let stop = Arc::new(AtomicBool::new(false));
    let uploaders: Vec<_> = (0..8)
        .map(|i| {
            let (stop, http) = (Arc::clone(&stop), n.http);
            std::thread::spawn(move || {
                // Retried while the gate refuses it (503, while others begin): each
                // upload is admitted once, then trickles until the node cuts it off.
                for _ in 0..50 {
                    match trickle_upload(http, i, &stop) {
                        Trickle::Refused => std::thread::sleep(Duration::from_millis(50)),
                        Trickle::Cut(took) => return Some(took),
                        Trickle::Stopped => return None,
                    }
                }
                None
            })
        })
        .collect();
    wait_metric(&n, "ron_parked_requests", 8, Duration::from_secs(5));
    assert_well_behaved_client_unharmed(n.http, &format!("/o/{small}"), "", 200);
    let cut: Vec<Option<Duration>> = uploaders.into_iter().map(|u| u.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    for took in &cut {
        let took = took.expect("a trickling upload is cut off");
        assert!(took < Duration::from_secs(5), "cut off after {took:?}");
    }
    wait_metric(
        &n,
        "ron_transfer_deadline_drops_total",
        8,
        Duration::from_secs(5),
    );
    assert_eq!(
        metric(n.admin, "ron_objects_stored"),
        1,
        "nothing partial stored"
    );
    let tmp: Vec<_> = std::fs::read_dir(n.data_dir.join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "temp files left behind: {tmp:?}");
}

enum Trickle {
    Refused,
    Cut(Duration),
    Stopped,
}

/// A PUT of 1,000,000 bytes sent one byte every 100 ms, uploader `byte` offset by
/// `byte` × 12 ms within that period: independent clients, not one clock. (Each byte
/// is a write to the upload's temp file — real work that holds a slot for its
/// duration — so eight bytes landing in the same instant could briefly fill the gate.)
fn trickle_upload(http: SocketAddr, byte: u8, stop: &AtomicBool) -> Trickle {
    let mut s = connect(http);
    let head = "PUT /o HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n";
    s.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(12 * u64::from(byte % 8)));
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(15) {
        if s.write_all(&[byte]).is_err() {
            return Trickle::Cut(started.elapsed());
        }
        let mut answer = [0u8; 512];
        match s.read(&mut answer) {
            Ok(n) if answer[..n].starts_with(b"HTTP/1.1 503") => return Trickle::Refused,
            Ok(_) => return Trickle::Cut(started.elapsed()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Trickle::Cut(started.elapsed()),
        }
    }
    Trickle::Stopped
}

#[test]
fn a_trickled_tls_handshake_is_cut_at_its_deadline_and_holds_a_connection_meanwhile() {
    let t = tls_node(
        "atk-tls-trickle",
        &["--shards", "1", "--header-timeout-ms", "1000"],
    );
    let n = &t.node;
    let mut s = connect(t.tls.parse().unwrap());
    // A TLS record header announcing a ClientHello, then one byte every 200 ms: each
    // byte arrives well inside any per-read timer, so only a deadline ends it.
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
    let started = Instant::now();
    let mut counted = false;
    let closed = loop {
        if !counted && started.elapsed() > Duration::from_millis(500) {
            counted = metric(n.admin, "ron_connections_open") >= 1;
        }
        if s.write_all(&[0x01]).is_err() {
            break started.elapsed();
        }
        let mut byte = [0u8; 1];
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match s.read(&mut byte) {
            Ok(0) => break started.elapsed(),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            _ => break started.elapsed(),
        }
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "a trickled handshake is still open after 6 s"
        );
    };
    assert!(closed < Duration::from_secs(3), "closed after {closed:?}");
    assert!(
        counted,
        "a handshake in progress counts as an open connection"
    );
    wait_metric(
        n,
        "ron_tls_handshake_failures_total",
        1,
        Duration::from_secs(5),
    );
}

/// A PUT as curl sends a large one: `Expect: 100-continue`, then the body written while
/// the answer is read, so a refusal mid-body is seen rather than a broken pipe.
fn put_streaming(http: SocketAddr, body: &[u8]) -> Response {
    let mut s = connect(http);
    let head = format!(
        "PUT /o HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut pending = Vec::new();
    let first = read_response(&mut s, &mut pending, false).unwrap();
    if first.status != 100 {
        return first;
    }
    let mut writer = s.try_clone().unwrap();
    let body = body.to_vec();
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(&body);
    });
    let answer = read_response(&mut s, &mut pending, false).unwrap();
    drop(s);
    sending.join().unwrap();
    answer
}

/// A tmpfs of `size` mounted for one test, unmounted when dropped.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(name: &str, size: &str) -> SmallDisk {
        let path = temp_dir(name);
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the disk-full case mounts a small tmpfs (needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { path }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}

#[test]
fn a_full_disk_refuses_uploads_with_507_keeps_serving_reads_and_recovers() {
    let disk = SmallDisk::mount("atk-disk-full", "24m");
    let mut n = Node::start(&disk.path.join("data"), &["--shards", "1"]);
    let kept = bytes(5, 300_000);
    let kept_addr = upload(&n, &kept);
    // An upload larger than the disk: refused 507, nothing of it left behind.
    let big = bytes(6, 40 << 20);
    let r = put_streaming(n.http, &big);
    assert_eq!(r.status, 507, "{r:?}");
    assert_eq!(r.json()["code"], "insufficient_storage");
    assert_eq!(r.json()["retryable"], false);
    assert!(
        !r.json()["message"].as_str().unwrap().contains('/'),
        "the client is not told the node's paths: {}",
        r.json()
    );
    assert_eq!(
        get(n.http, &format!("/o/{}", Address::of(&big)))
            .unwrap()
            .status,
        404
    );
    let tmp: Vec<_> = std::fs::read_dir(n.data_dir.join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "temp files left behind: {tmp:?}");
    // The disk filled by something else: small uploads are refused too, reads go on.
    let filler = disk.path.join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "count=64"])
        .arg(format!("of={}", filler.display()))
        .output()
        .unwrap();
    let small = bytes(7, 200_000);
    assert_eq!(put(n.http, "/o", &small, "").status, 507);
    let path = format!("/o/{kept_addr}");
    assert_well_behaved_client_unharmed(n.http, &path, "", 200);
    assert_eq!(get(n.http, &path).unwrap().body, kept);
    // Space returns: the same upload succeeds, no restart needed.
    std::fs::remove_file(&filler).unwrap();
    let small_addr = upload(&n, &small);
    assert_eq!(
        get(n.http, &format!("/o/{small_addr}")).unwrap().body,
        small
    );
    n.stop();
}

#[test]
fn a_connection_flood_under_a_low_descriptor_limit_waits_in_the_backlog_and_recovers() {
    // 300 descriptors: enough to start (preflight's floor for one shard with 16 open
    // object files is 272), far fewer than the connections this test opens. The node
    // lowers its connection limit to what the descriptors allow, so the flood waits in
    // the kernel backlog: no failing accepts, and the admin port keeps its descriptors.
    let n = Node::start_with_nofile(
        &temp_dir("atk-fd-exhaustion"),
        &["--shards", "1", "--open-files-max", "16"],
        300,
    );
    assert!(
        n.stderr().contains("leaves room for fewer connections"),
        "{}",
        n.stderr()
    );
    let kept = upload(&n, b"an object read after the flood");
    let flood: Vec<TcpStream> = (0..600).filter_map(|_| try_connect(n.http).ok()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let open = metric(n.admin, "ron_connections_open");
    assert!(
        open > 0 && open <= 300,
        "connections open during the flood: {open}"
    );
    assert_eq!(metric(n.admin, "ron_accept_failures_total"), 0);
    assert!(!n.stderr().contains("accept failing"), "{}", n.stderr());
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = get(n.http, &format!("/o/{kept}")) {
            assert_eq!(r.status, 200);
            break;
        }
        assert!(Instant::now() < deadline, "no recovery within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_well_behaved_client_unharmed(n.http, &format!("/o/{kept}"), "", 200);
}

/// Resident memory of process `pid`, bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Idle connections each cost the node at most this much resident memory.
const IDLE_CONNECTION_BYTES_MAX: u64 = 16 * 1024;
const IDLE_CONNECTIONS: usize = 10_000;

/// Opens [`IDLE_CONNECTIONS`] connections to `addr`, each having made one request with
/// `ask` (which must read its whole answer), and returns the node's resident memory per
/// connection they added, with the connections (still open, idle).
fn idle_connection_cost(
    n: &Node,
    addr: SocketAddr,
    ask: impl Fn(&mut TcpStream),
) -> (u64, Vec<TcpStream>) {
    // Warm-up: the shard's pools, caches and allocator arenas as a busy node has them.
    let warm: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut s = connect(addr);
            ask(&mut s);
            s
        })
        .collect();
    drop(warm);
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_bytes(n.pid());
    let idle: Vec<TcpStream> = (0..IDLE_CONNECTIONS)
        .map(|_| {
            let mut s = connect(addr);
            ask(&mut s);
            s
        })
        .collect();
    wait_metric(
        n,
        "ron_connections_open",
        IDLE_CONNECTIONS as u64,
        Duration::from_secs(10),
    );
    let after = rss_bytes(n.pid());
    (after.saturating_sub(before) / IDLE_CONNECTIONS as u64, idle)
}

fn idle_node(name: &str) -> Node {
    // One shard holds them all; the test process and the node each keep 10,000 sockets.
    Node::start(
        &temp_dir(name),
        &["--shards", "1", "--max-connections", "12000"],
    )
}

#[test]
fn ten_thousand_idle_http_connections_cost_at_most_16_kib_each() {
    let n = idle_node("atk-idle-http");
    let kept = upload(&n, b"an object each idle connection asked for once");
    let raw = format!("GET /o/{kept} HTTP/1.1\r\nHost: t\r\n\r\n");
    let (per_connection, idle) = idle_connection_cost(&n, n.http, |s| {
        s.write_all(raw.as_bytes()).unwrap();
        let r = read_response(s, &mut Vec::new(), false).unwrap();
        assert_eq!(r.status, 200);
    });
    eprintln!("idle HTTP connection: {per_connection} bytes resident in the node");
    assert!(
        per_connection <= IDLE_CONNECTION_BYTES_MAX,
        "an idle HTTP connection costs {per_connection} bytes"
    );
    assert_well_behaved_client_unharmed(n.http, &format!("/o/{kept}"), "", 200);
    drop(idle);
}

#[test]
fn ten_thousand_idle_oap_connections_cost_at_most_16_kib_each() {
    use ron_codec::frame::FrameDecoder;
    use ron_codec::messages::ObjectRequest;

    let n = idle_node("atk-idle-oap");
    let kept = upload(&n, b"an object each idle connection asked about once");
    let stat = ObjectRequest::Stat { addr: kept }
        .frame(1, 0, bytes::Bytes::new())
        .unwrap()
        .to_bytes();
    let (per_connection, idle) = idle_connection_cost(&n, n.oap, |s| {
        s.write_all(&stat).unwrap();
        let mut decoder = FrameDecoder::new(1 << 20);
        let mut chunk = [0u8; 4096];
        loop {
            let got = s.read(&mut chunk).unwrap();
            assert!(got > 0, "the node closed instead of answering STAT");
            let mut input = &chunk[..got];
            if let Some(frame) = decoder.decode(&mut input).unwrap() {
                assert_eq!(frame.header.code, 200);
                break;
            }
        }
    });
    eprintln!("idle OAP/1 connection: {per_connection} bytes resident in the node");
    assert!(
        per_connection <= IDLE_CONNECTION_BYTES_MAX,
        "an idle OAP/1 connection costs {per_connection} bytes"
    );
    assert_well_behaved_client_unharmed(n.http, &format!("/o/{kept}"), "", 200);
    drop(idle);
}
