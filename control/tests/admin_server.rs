//! The admin server and the control thread over real loopback sockets, without a node:
//! slow clients never delay a probe, past the connection cap silent clients make room for
//! one, the head
//! limits hold, reports and reloads reach `/metrics`, and `stop` ends every thread.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ron_control::admin::{
    ADMIN_CONNECTIONS_MAX, ADMIN_HEAD_BYTES_MAX, ADMIN_HEAD_TIMEOUT_MS, ADMIN_WAITING_MAX,
};
use ron_control::{ControlState, LoadPolicy, OwnerOf, Reloaded, Reloader};
use ron_link::counters::ShardCounters;
use ron_link::link::{links, RemovalReport, ShardLink, ShardReport, ToShard};
use ron_link::policy::{Exhausted, Policy, QuotaLimits};
use ron_link::requests::{Op, Protocol, RequestCounters};

struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    hangup: Arc<AtomicBool>,
    shards: Vec<ShardLink>,
    requests: Vec<Arc<RequestCounters>>,
    control: Option<JoinHandle<()>>,
}

impl Server {
    fn start(shards: usize, token: Option<&str>) -> Server {
        let (link, ends) = links(shards);
        let counters: Vec<_> = (0..shards).map(|_| ShardCounters::default()).collect();
        for c in &counters {
            c.front.ready.store(true, Ordering::Relaxed);
        }
        let requests: Vec<_> = counters.iter().map(|c| Arc::clone(&c.requests)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let hangup = Arc::new(AtomicBool::new(false));
        let load: LoadPolicy = Box::new(|| {
            Ok(Reloaded {
                policy: Policy::new(&["new".into()], vec![], QuotaLimits::default()),
                restart_keys: vec![],
            })
        });
        let state = ControlState {
            shards: counters,
            version: "0.0.0-test",
            stop: Arc::clone(&stop),
            admin_token: token.map(String::from),
            link,
            policy: Policy::new(&[], vec![], QuotaLimits::default()),
            reloader: Some(Reloader {
                watch: Vec::new(),
                watch_dir: None,
                load,
                load_certificate: None,
                running_certificate: None,
                hangup: Arc::clone(&hangup),
            }),
            owner: OwnerOf::new(|_| 0),
            dht: None,
            replication: None,
        };
        let (addr, control) = ron_control::spawn("127.0.0.1:0".parse().unwrap(), state).unwrap();
        Server {
            addr,
            stop,
            hangup,
            shards: ends,
            requests,
            control: Some(control),
        }
    }

    /// Sets `stop` and returns how long the control thread took to end.
    fn stop(&mut self) -> Duration {
        let started = Instant::now();
        self.stop.store(true, Ordering::Relaxed);
        self.control.take().unwrap().join().unwrap();
        started.elapsed()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One request on a fresh connection: (status, body), waiting at most `limit`.
fn ask(addr: SocketAddr, raw: &[u8], limit: Duration) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, limit)?;
    s.set_read_timeout(Some(limit))?;
    s.write_all(raw)?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    ask(addr, raw.as_bytes(), Duration::from_secs(5)).unwrap()
}

/// A connection that has sent part of a head and stays silent.
fn stalled(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metr").unwrap();
    s
}

/// Reads until the server closes; the time that took.
fn closed_after(s: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut sink = [0u8; 256];
    loop {
        match s.read(&mut sink) {
            Ok(0) => return started.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => panic!("still open"),
            Err(_) => return started.elapsed(),
        }
    }
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_trickling_client_neither_delays_probes_nor_outlives_the_head_deadline() {
    let server = Server::start(1, None);
    let mut slow = TcpStream::connect(server.addr).unwrap();
    let started = Instant::now();
    let mut writer = slow.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for byte in b"GET /metrics HTTP/1.1\r\n".iter().take(10) {
            if writer.write_all(&[*byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    for _ in 0..3 {
        let asked = Instant::now();
        let raw = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let (status, body) = ask(server.addr, raw, Duration::from_secs(1)).unwrap();
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        assert!(asked.elapsed() < Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(300));
    }
    closed_after(&mut slow, Duration::from_secs(5));
    let at = started.elapsed();
    let deadline = Duration::from_millis(ADMIN_HEAD_TIMEOUT_MS);
    assert!(
        at >= deadline - Duration::from_millis(100) && at <= deadline + Duration::from_millis(500),
        "closed {at:?} after connecting"
    );
    trickle.join().unwrap();
}

/// Past the connection cap, the connections that have sent no whole head for longer than
/// `ADMIN_CROWDED_HEAD_MS` are closed to make room: a probe behind 64 silent clients is
/// answered. Before, it was answered 503 — and 64 silent connections, reopened every 2 s,
/// kept every liveness probe failing.
#[test]
fn past_the_connection_cap_silent_clients_make_room_for_a_probe() {
    let server = Server::start(1, None);
    let mut held: Vec<TcpStream> = (0..ADMIN_CONNECTIONS_MAX)
        .map(|_| stalled(server.addr))
        .collect();
    // Older than ADMIN_CROWDED_HEAD_MS, and each handed a thread.
    std::thread::sleep(Duration::from_millis(400));
    let (status, body) = get(server.addr, "/healthz");
    assert_eq!(status, 200, "{body}");
    let is_closed = |s: &mut TcpStream| {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut sink = [0u8; 64];
        match s.read(&mut sink) {
            Ok(n) => n == 0,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    };
    let closed = held.iter_mut().map(is_closed).filter(|c| *c).count();
    assert!(closed >= 1, "a silent client was closed to make room");
}

/// Removals (or repair checks, replications) that their shard takes its time over hold
/// their threads, but never all of them: past `ADMIN_WAITING_MAX` one is answered 503 at
/// once, and probes and `/metrics` are still answered. Before, 64 of them held every
/// thread and every probe was answered 503 `admin server busy`.
#[test]
fn requests_waiting_on_a_shard_leave_threads_for_probes() {
    let server = Server::start(1, None);
    let asking = ADMIN_CONNECTIONS_MAX + 4;
    let addr = server.addr;
    let removals: Vec<_> = (0..asking)
        .map(|i| {
            std::thread::spawn(move || {
                let raw =
                    format!("POST /admin/remove/b3:{i:064x} HTTP/1.1\r\nHost: localhost\r\n\r\n");
                ask(addr, raw.as_bytes(), Duration::from_secs(40)).unwrap()
            })
        })
        .collect();
    let mut held = Vec::new();
    let mut refused = 0;
    wait_for(
        "every removal to wait or be refused",
        Duration::from_secs(10),
        || {
            while let Some(message) = server.shards[0].poll() {
                if let ToShard::RemoveObject { reply, .. } = message {
                    held.push(reply);
                }
            }
            refused = removals.iter().filter(|r| r.is_finished()).count();
            held.len() + refused == asking
        },
    );
    assert_eq!(held.len(), ADMIN_WAITING_MAX);
    assert_eq!(get(server.addr, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(get(server.addr, "/metrics").0, 200);
    for reply in held {
        reply.send(RemovalReport::NotFound).unwrap();
    }
    let mut statuses: Vec<u16> = removals.into_iter().map(|r| r.join().unwrap().0).collect();
    statuses.sort();
    let busy = asking - ADMIN_WAITING_MAX;
    assert_eq!(
        statuses,
        [vec![404; ADMIN_WAITING_MAX], vec![503; busy]].concat()
    );
}

#[test]
fn heads_over_the_limit_or_malformed_get_400_and_tokens_guard_the_rest() {
    let server = Server::start(1, Some("s3cret"));
    let mut huge = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Pad: ".to_vec();
    huge.resize(ADMIN_HEAD_BYTES_MAX + 100, b'a');
    let (status, body) = ask(server.addr, &huge, Duration::from_secs(5)).unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(get(server.addr, "/version").0, 401);
    assert_eq!(get(server.addr, "/readyz").0, 200);
    let raw = b"GET /version HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer s3cret\r\n\r\n";
    let (status, body) = ask(server.addr, raw, Duration::from_secs(5)).unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"name":"ron","version":"0.0.0-test"}"#)
    );
    let (status, _) = ask(
        server.addr,
        b"\x16\x03\x01garbage\r\n\r\n",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(status, 400);
}

#[test]
fn reports_and_reloads_reach_the_metrics() {
    let server = Server::start(2, None);
    server.requests[1].record(Protocol::Oap, Op::Stat, 429);
    server.shards[1].report(ShardReport {
        shard: 1,
        quota_rejections: vec![("edge".into(), Exhausted::Bytes, 5)],
        tenants_tracked: 2,
        policy_version: 1,
        ..ShardReport::default()
    });
    let has = |line: &str| get(server.addr, "/metrics").1.contains(line);
    wait_for("the report", Duration::from_secs(3), || {
        has("ron_quota_rejections_total{tenant=\"edge\",limit=\"bytes\"} 5\n")
    });
    assert!(has(
        "ron_requests_total{protocol=\"oap\",op=\"stat\",status=\"429\"} 1\n"
    ));
    assert!(has("ron_quota_tenants_tracked 2\n"));
    let stats: serde_json::Value =
        serde_json::from_str(&get(server.addr, "/admin/stats").1).unwrap();
    assert_eq!(stats["shards"][1]["requests"], 1);
    server.hangup.store(true, Ordering::Relaxed);
    wait_for("the reload", Duration::from_secs(3), || {
        has("ron_config_version 2\n")
    });
    assert!(has("ron_config_reloads_total 1\n"));
    // Both shards were sent the new policy.
    for end in &server.shards {
        let mut got = false;
        while let Some(message) = end.poll() {
            got |= matches!(message, ron_link::link::ToShard::Policy(p) if p.version == 2);
        }
        assert!(got, "shard {} missed the reload", end.shard);
    }
}

#[test]
fn stop_ends_the_control_thread_and_the_admin_server_promptly() {
    let mut server = Server::start(1, None);
    let mut half = stalled(server.addr);
    std::thread::sleep(Duration::from_millis(100));
    let took = server.stop();
    assert!(
        took < Duration::from_millis(1_000),
        "stopping took {took:?}"
    );
    assert!(closed_after(&mut half, Duration::from_secs(1)) < Duration::from_secs(1));
    assert!(
        TcpStream::connect_timeout(&server.addr, Duration::from_secs(1)).is_err(),
        "the listener is closed"
    );
}
