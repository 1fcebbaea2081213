//! What a keep-alive request costs the node in system calls on its connection, proven
//! from the node's own calls (strace, attached and detached by PID): the request read
//! in one `recv` and none that finds the socket empty (the read came back short, so the
//! shard waits for the next input edge without asking the kernel again), and a 64 KiB
//! range over two cached groups answered with its head in one send (waiting for the
//! body, `MSG_MORE`, unless the socket's congestion control paces its sends) and its
//! body in one `sendfile` from the verified cache's arena — no body byte copied through
//! user space, however the range cuts the groups (a small first or last slice
//! included); and a whole body whose groups lie apart in the arena sent as a `sendfile`
//! per run with the socket corked between them, uncorked at its end (never corked when
//! it is one run, nor when it is two runs of a cache window: a 1 MiB answer).

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::strace;
use common::*;

/// Requests traced on the one connection.
const REQUESTS: usize = 12;
/// A range's length: two groups' worth, so an unaligned one touches two groups.
const RANGE_BYTES: usize = 65536;

/// One traced call on the client's connection: its name and its result (`-errno` for
/// a failed call).
struct SocketCall {
    name: String,
    result: i64,
}

/// strace's `= -1 EAGAIN (…)`, as a result.
const EAGAIN: i64 = -11;

/// The calls in `trace` on the node's end of the connection whose client port is
/// `client_port` (`strace -yy` names a socket `FD<TCP:[LOCAL->PEER]>`).
fn calls_on_connection(trace: &str, client_port: u16) -> Vec<SocketCall> {
    let peer = format!("->127.0.0.1:{client_port}]>");
    trace
        .lines()
        .filter(|line| line.contains(&peer))
        .filter_map(|line| {
            let call = line.split_whitespace().nth(2)?;
            let name = call.split('(').next()?.to_string();
            let result = line.rsplit_once(") = ")?.1;
            let result = match result.starts_with("-1 EAGAIN") {
                true => EAGAIN,
                false => result.split_whitespace().next()?.parse().ok()?,
            };
            Some(SocketCall { name, result })
        })
        .collect()
}

fn count(calls: &[SocketCall], name: &str, result: impl Fn(i64) -> bool) -> usize {
    calls
        .iter()
        .filter(|c| c.name == name && result(c.result))
        .count()
}

/// Starts a node, reads a 1 MiB object whole (every group kept end to end in one arena),
/// then asks for unaligned 64 KiB ranges of it on one keep-alive connection — four, then
/// [`REQUESTS`] with strace tracing `calls` — and gives the trace and the connection's
/// client port.
fn traced_ranges(name: &str, calls: &str) -> (String, u16) {
    let dir = temp_dir(name);
    let n = Node::start(&dir, &["--shards", "1"]);
    let data = bytes(39, 16 * RANGE_BYTES);
    let addr = upload(&n, &data);
    let whole = get(n.http, &format!("/o/{}", hex(&addr))).unwrap();
    assert_eq!(whole.body, data);

    let mut client = connect(n.http);
    let client_port = client.local_addr().unwrap().port();
    let mut pending = Vec::new();
    let mut range = |i: usize, client: &mut std::net::TcpStream| {
        // Unaligned; some cut a small slice (at most 16 KiB) off one of the two groups.
        let into_group = [
            20_000,
            RANGE_BYTES - 4096,
            1000,
            RANGE_BYTES - 16_384,
            33_333,
        ];
        let from = (i % 14) * RANGE_BYTES + into_group[i % into_group.len()];
        let to = from + RANGE_BYTES - 1;
        let path = format!("/o/{}", hex(&addr));
        let head =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nRange: bytes={from}-{to}\r\n\r\n");
        client.write_all(head.as_bytes()).unwrap();
        let answer = read_response(client, &mut pending, false).unwrap();
        assert_eq!(answer.status, 206);
        assert!(answer.body == data[from..=to], "range {from}-{to}");
        // The node goes back to waiting before the next request comes.
        std::thread::sleep(Duration::from_millis(20));
    };
    // A few first, so the connection's send buffer has grown to a whole answer.
    for i in 0..4 {
        range(i, &mut client);
    }
    let trace_path = dir.with_extension("strace");
    let tracer = strace::attach(n.pid(), &trace_path, calls);
    for i in 0..REQUESTS {
        range(4 + i, &mut client);
    }
    strace::detach(tracer);
    (std::fs::read_to_string(&trace_path).unwrap(), client_port)
}

/// The heads in `trace` sent on the connection to `client_port` with `MSG_MORE`.
fn heads_sent_more(trace: &str, client_port: u16) -> usize {
    let peer = format!("->127.0.0.1:{client_port}]>");
    trace
        .lines()
        .filter(|l| l.contains(&peer) && l.contains("sendto(") && l.contains("MSG_MORE"))
        .count()
}

#[test]
#[ignore = "needs strace: run by scripts/test-all.sh"]
fn a_keep_alive_range_costs_one_read_one_empty_read_one_head_send_and_one_sendfile() {
    let (trace, client_port) = traced_ranges(
        "syscall-budget",
        "recvfrom,sendto,sendmsg,sendfile,setsockopt",
    );
    let calls = calls_on_connection(&trace, client_port);

    let reads = count(&calls, "recvfrom", |r| r > 0);
    let empty_reads = count(&calls, "recvfrom", |r| r == EAGAIN);
    // A head is a few hundred bytes; one with body bytes behind it would be more.
    let heads = count(&calls, "sendto", |r| r > 0) + count(&calls, "sendmsg", |r| r > 0);
    let heads_alone = count(&calls, "sendto", |r| (1..1024).contains(&r))
        + count(&calls, "sendmsg", |r| (1..1024).contains(&r));
    let sendfiles = count(&calls, "sendfile", |r| r > 0);
    let body_bytes: i64 = calls
        .iter()
        .filter(|c| c.name == "sendfile" && c.result > 0)
        .map(|c| c.result)
        .sum();
    let seen = format!(
        "{reads} reads, {empty_reads} empty reads, {heads} sends, {sendfiles} sendfiles \
         for {REQUESTS} requests:\n{}",
        trace
            .lines()
            .filter(|l| l.contains(&format!("127.0.0.1:{client_port}]")))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(reads, REQUESTS, "each request read in one recv: {seen}");
    assert_eq!(empty_reads, 0, "no recv after a short one: {seen}");
    assert_eq!(heads, REQUESTS, "one send per head: {seen}");
    assert_eq!(
        heads_alone, REQUESTS,
        "no body bytes copied behind a head: {seen}"
    );
    assert_eq!(sendfiles, REQUESTS, "one sendfile per body: {seen}");
    assert_eq!(
        count(&calls, "setsockopt", |_| true),
        0,
        "a body in one run is never corked: {seen}"
    );
    assert_eq!(body_bytes, (REQUESTS * RANGE_BYTES) as i64, "{seen}");
}

/// A head waits for its body (`MSG_MORE`: it rides in the body's first packet) unless
/// the socket's congestion control paces its sends, as BBR does; then it goes alone.
/// Each congestion control in a network namespace of its own, so the host's default
/// does not decide which branch is tried. Reno is in every kernel and any namespace may
/// make it its default; cubic and BBR are tried where the kernel has them and lets a
/// namespace other than the host's choose them (`net.ipv4.tcp_allowed_congestion_control`:
/// one left out of it is the host's alone), and a branch not tried is said on stderr.
#[test]
#[ignore = "needs strace and root (network namespaces): run by scripts/test-all.sh"]
fn a_range_head_rides_with_its_body_unless_the_socket_paces_its_sends() {
    let mut tried = Vec::new();
    for (congestion, heads_waiting) in [("reno", REQUESTS), ("cubic", REQUESTS), ("bbr", 0)] {
        let run = std::thread::spawn(move || {
            if let Err(e) = netns::enter_with_congestion_control(congestion) {
                assert_ne!(congestion, "reno", "reno: {e}");
                return Err(e);
            }
            let (trace, client_port) =
                traced_ranges(&format!("head-rides-{congestion}"), "sendto,sendfile");
            Ok((heads_sent_more(&trace, client_port), trace))
        });
        let (heads, trace) = match run.join().expect("the namespace's run") {
            Ok(traced) => traced,
            Err(e) => {
                eprintln!(
                    "{congestion}: not a namespace's to choose here ({e}; the kernel lacks \
                     it, or the host allows it only itself), its branch not tried"
                );
                continue;
            }
        };
        assert_eq!(
            heads, heads_waiting,
            "range heads sent with MSG_MORE under {congestion}:\n{trace}"
        );
        tried.push(congestion);
    }
    assert_eq!(tried[0], "reno", "tried {tried:?}");
    // The paced branch is the one that differs: where the host lets a namespace choose
    // BBR, it must have been tried (it is the host's default here and in CI).
    let allowed = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_allowed_congestion_control")
        .unwrap_or_default();
    if allowed.split_whitespace().any(|c| c == "bbr") {
        assert!(
            tried.contains(&"bbr"),
            "bbr allowed ({allowed:?}), not tried: {tried:?}"
        );
    } else {
        eprintln!("bbr is not allowed to namespaces here ({allowed:?}): the paced branch untried");
    }
}

/// What `strace -yy` shows of the calls on the connection to `client_port` that shape a
/// body's segments: `cork`, `uncork`, `sendfile`, and `send` (a head).
fn segment_calls(trace: &str, client_port: u16) -> Vec<&'static str> {
    let peer = format!("->127.0.0.1:{client_port}]>");
    trace
        .lines()
        .filter(|line| line.contains(&peer))
        .filter_map(|line| match line {
            l if l.contains("TCP_CORK, [1]") => Some("cork"),
            l if l.contains("TCP_CORK, [0]") => Some("uncork"),
            l if l.contains(" sendfile(") => Some("sendfile"),
            l if l.contains(" sendto(") || l.contains(" sendmsg(") => Some("send"),
            _ => None,
        })
        .collect()
}

/// Reads one group of each object at a time, as ranges: `objects` interleaved,
/// group by group (as on an edge serving ranges of the same files).
fn read_groups_interleaved(n: &Node, objects: &[(Address, Vec<u8>)], groups: usize) {
    for group in 0..groups {
        for (addr, data) in objects {
            read_group(n, addr, data, group);
        }
    }
}

/// Reads group `group` of the object `addr` (holding `data`) as a range.
fn read_group(n: &Node, addr: &Address, data: &[u8], group: usize) {
    let (from, to) = (group * RANGE_BYTES, (group + 1) * RANGE_BYTES - 1);
    let answer = request(
        n.http,
        format!(
            "GET /o/{} HTTP/1.1\r\nHost: localhost\r\nRange: bytes={from}-{to}\r\n\
             Connection: close\r\n\r\n",
            hex(addr)
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(answer.status, 206);
    assert!(answer.body == data[from..=to]);
}

/// The calls that shape the segments of two whole answers of `addr` on one connection
/// (`segment_calls`).
fn calls_of_two_answers(n: &Node, dir: &Path, addr: &Address, data: &[u8]) -> Vec<&'static str> {
    let mut client = connect(n.http);
    let client_port = client.local_addr().unwrap().port();
    let mut pending = Vec::new();
    let trace_path = dir.with_extension(format!("{client_port}.strace"));
    let tracer = strace::attach(n.pid(), &trace_path, "sendto,sendmsg,sendfile,setsockopt");
    for _ in 0..2 {
        let head = format!("GET /o/{} HTTP/1.1\r\nHost: localhost\r\n\r\n", hex(addr));
        client.write_all(head.as_bytes()).unwrap();
        let answer = read_response(&mut client, &mut pending, false).unwrap();
        assert_eq!(answer.status, 200);
        assert!(answer.body == data, "the whole body, in order");
    }
    strace::detach(tracer);
    let trace = std::fs::read_to_string(&trace_path).unwrap();
    segment_calls(&trace, client_port).to_vec()
}

#[test]
#[ignore = "needs strace: run by scripts/test-all.sh"]
fn a_body_whose_groups_lie_apart_in_the_arena_leaves_corked_and_is_uncorked_at_its_end() {
    let dir = temp_dir("syscall-budget-runs");
    let n = Node::start(&dir, &["--shards", "1", "--cache-bytes", "4MiB"]);
    const GROUPS: usize = 4;
    let upload_one = |seed| {
        let data = bytes(seed, GROUPS * RANGE_BYTES);
        (upload(&n, &data), data)
    };

    // Below its budget, the cache reads a range's whole window (8 groups, these objects
    // whole) on its miss: ranges interleaved leave each object end to end, and a whole
    // answer is one run, never corked.
    let fresh = [upload_one(41), upload_one(42)];
    read_groups_interleaved(&n, &fresh, GROUPS);
    let (a, first) = &fresh[0];
    assert_eq!(
        calls_of_two_answers(&n, &dir, a, first),
        ["send", "sendfile", "send", "sendfile"],
        "each answer: its head alone, then one run"
    );

    // Two 1 MiB objects, a range of each object's first window, then of each one's
    // second: the windows are read whole (the cache is below its budget) but lie apart,
    // e0 f0 in one arena and e1 f1 in the next. A whole answer of `e` is two runs of a
    // window each: too long to be worth the cork (`CORK_RUN_BYTES_MAX`).
    let windows = [45, 46].map(|seed| {
        let data = bytes(seed, 16 * RANGE_BYTES);
        (upload(&n, &data), data)
    });
    for group in [0, 8] {
        for (addr, data) in &windows {
            read_group(&n, addr, data, group);
        }
        // The arena after a roll is made on the blocking pool (below).
        std::thread::sleep(Duration::from_millis(200));
    }
    let (e, fifth) = &windows[0];
    assert_eq!(
        calls_of_two_answers(&n, &dir, e, fifth),
        ["send", "sendfile", "sendfile", "send", "sendfile", "sendfile"],
        "each answer: its head alone, then a run per window, never corked"
    );

    // At its budget (8 MiB read through 4 MiB), a miss reads only its groups: one of
    // each object at a time leaves the arena holding c0 d0 c1 d1 …, so a whole answer
    // of `c` is a run per group.
    for seed in 0..8 {
        let other = bytes(100 + seed, 1 << 20);
        let other_addr = upload(&n, &other);
        assert!(get(n.http, &format!("/o/{other_addr}")).unwrap().body == other);
    }
    // The next arena is made on the blocking pool after each roll; a group placed
    // before it is ready is served and not cached, and would leave from memory. Time for
    // it, so the eight groups below (half an arena, at most one roll) are all cached.
    std::thread::sleep(Duration::from_millis(200));
    let full = [upload_one(43), upload_one(44)];
    read_groups_interleaved(&n, &full, GROUPS);
    let (c, third) = &full[0];
    let answer = [
        "send", "cork", "sendfile", "sendfile", "sendfile", "sendfile", "uncork",
    ];
    assert_eq!(
        calls_of_two_answers(&n, &dir, c, third),
        [answer, answer].concat(),
        "each answer: its head alone, then corked, a run per group, uncorked"
    );
}

#[test]
#[ignore = "needs strace: run by scripts/test-all.sh"]
fn a_body_in_many_window_runs_leaves_corked() {
    let dir = temp_dir("syscall-budget-window-runs");
    let n = Node::start(&dir, &["--shards", "1", "--cache-bytes", "64MiB"]);
    // A 2 MiB object whose four windows are read by ranges out of order (1, 0, 3, 2)
    // lies in the arenas as w1 w0 w3 w2: a whole answer is four runs of a window, and
    // more than 1 MiB follows the first (`UNCORKED_REST_BYTES_MAX`): corked.
    let data = bytes(47, 32 * RANGE_BYTES);
    let addr = upload(&n, &data);
    for window in [1, 0, 3, 2] {
        read_group(&n, &addr, &data, window * 8);
        // An arena after a roll is made on the blocking pool.
        std::thread::sleep(Duration::from_millis(200));
    }
    let calls = calls_of_two_answers(&n, &dir, &addr, &data);
    assert_eq!(
        calls[..7],
        ["send", "cork", "sendfile", "sendfile", "sendfile", "sendfile", "uncork"],
        "the first answer: its head alone, then corked, a run per window, uncorked"
    );
    // The first answer can move windows in the cache (three runs seen in the second):
    // still corked, still several runs.
    let second = &calls[7..];
    assert!(
        second.starts_with(&["send", "cork", "sendfile", "sendfile"])
            && second.ends_with(&["uncork"]),
        "the second answer: {second:?}"
    );
}
