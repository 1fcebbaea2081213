//! Read-through (issue 15), against the real binary on loopback: a provider that lies
//! (a proxy in front of it flips a byte in one DATA frame) never gets a bad byte served
//! or stored, and an honest provider finishes the object from where the liar was
//! dropped; concurrent misses at an edge share one upstream fetch; a stalled origin —
//! silent, or trickling a byte at a time — times every waiter out and the next request
//! fetches again.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use ron_codec::frame::{Flags, FrameDecoder, MAX_FRAME_BYTES};
use ron_codec::Address;

const WAIT: Duration = Duration::from_secs(30);
const GROUP: usize = 65_536;

/// What a proxy does to the bytes coming back from the node behind it.
#[derive(Clone, Copy)]
enum Mischief {
    /// Flips one byte of the data in the `n`-th DATA frame (0-based) of each connection.
    FlipDataFrame(usize),
    /// Holds the first bytes back this long on each connection.
    DelayFirstByte(Duration),
    /// Holds each DATA frame but the first back this long: a provider that answers at
    /// once, then trickles.
    DelayLaterDataFrames(Duration),
    /// Rewrites every GET's START to claim the object is this many bytes long (its
    /// groups and their parents as they are): a lie the first group's proof cannot see
    /// when the claimed tree's left subtrees are the real ones.
    ClaimLength(u64),
}

/// A TCP proxy to `target` on its own threads; counts the connections it took.
struct Proxy {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
}

fn proxy(listener: TcpListener, target: SocketAddr, mischief: Mischief) -> Proxy {
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&connections);
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            counted.fetch_add(1, Ordering::Relaxed);
            let Ok(node) = TcpStream::connect(target) else {
                continue;
            };
            let (mut up_from, mut up_to) = (client.try_clone().unwrap(), node.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut up_from, &mut up_to);
                let _ = up_to.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || pump_back(node, client, mischief));
        }
    });
    Proxy { addr, connections }
}

/// Copies the node's answer back to the client, with the mischief done to it.
fn pump_back(mut node: TcpStream, mut client: TcpStream, mischief: Mischief) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES);
    let mut data_frames = 0;
    let mut first = true;
    loop {
        let n = match node.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let out = match mischief {
            Mischief::DelayFirstByte(delay) => {
                if std::mem::take(&mut first) {
                    std::thread::sleep(delay);
                }
                buf[..n].to_vec()
            }
            Mischief::DelayLaterDataFrames(delay) => {
                let mut input = &buf[..n];
                while let Ok(Some(frame)) = decoder.decode(&mut input) {
                    let is_data = !frame.header.flags.contains(Flags::START)
                        && !frame.header.flags.contains(Flags::END)
                        && frame.header.corr_id == 2;
                    if is_data {
                        if data_frames > 0 {
                            std::thread::sleep(delay);
                        }
                        data_frames += 1;
                    }
                    let mut out = BytesMut::new();
                    frame.encode_into(&mut out);
                    if client.write_all(&out).is_err() {
                        return;
                    }
                }
                continue;
            }
            Mischief::ClaimLength(claimed) => {
                let mut input = &buf[..n];
                let mut out = BytesMut::new();
                while let Ok(Some(mut frame)) = decoder.decode(&mut input) {
                    let is_start = frame.header.flags.contains(Flags::START)
                        && frame.header.corr_id == 2
                        && frame.header.code < 400;
                    if is_start {
                        let mut start: serde_json::Value =
                            serde_json::from_slice(&frame.payload).unwrap();
                        let offset = start["offset"].as_u64().unwrap();
                        start["total_len"] = claimed.into();
                        start["len"] = (claimed - offset).into();
                        frame.payload = serde_json::to_vec(&start).unwrap().into();
                    }
                    frame.encode_into(&mut out);
                }
                out.to_vec()
            }
            Mischief::FlipDataFrame(target) => {
                let mut input = &buf[..n];
                let mut out = BytesMut::new();
                while let Ok(Some(mut frame)) = decoder.decode(&mut input) {
                    let is_data = !frame.header.flags.contains(Flags::START)
                        && !frame.header.flags.contains(Flags::END)
                        && frame.header.corr_id == 2;
                    if is_data {
                        if data_frames == target {
                            let mut payload = frame.payload.to_vec();
                            let last = payload.len() - 1;
                            payload[last] ^= 0x01;
                            frame.payload = payload.into();
                        }
                        data_frames += 1;
                    }
                    frame.encode_into(&mut out);
                }
                out.to_vec()
            }
        };
        if client.write_all(&out).is_err() {
            break;
        }
    }
    let _ = client.shutdown(std::net::Shutdown::Write);
}

fn node_id(n: &Node) -> String {
    let stats = get(n.admin, "/admin/stats").unwrap().json();
    stats["node_id"].as_str().unwrap().to_string()
}

/// The OAP address a node's DHT reports for provider `id` of `addr`, once it does.
fn provider_oap(n: &Node, addr: &Address, id: &str) -> Option<String> {
    let r = get(n.admin, &format!("/resolve?hash={addr}")).ok()?;
    let providers = r.json()["providers"].clone();
    providers
        .as_array()?
        .iter()
        .find(|p| p["node_id"] == id)
        .map(|p| p["oap"].as_str().unwrap_or_default().to_string())
}

/// A GET read to the end of what the node sends (it may cut the body): status and
/// the body bytes received.
fn get_all(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let (status, _, body) = get_all_with_head(addr, path);
    (status, body)
}

/// The Content-Length a GET is answered with, and the body it carries.
fn get_with_length(addr: SocketAddr, path: &str) -> (u16, Option<u64>, Vec<u8>) {
    let (status, head, body) = get_all_with_head(addr, path);
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    });
    (status, length, body)
}

/// A GET read to the end: status, head and the body bytes received.
fn get_all_with_head(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    let mut s = connect(addr);
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let head_end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let status = std::str::from_utf8(&all[9..12]).unwrap().parse().unwrap();
    let head = String::from_utf8_lossy(&all[..head_end]).into_owned();
    (status, head, all[head_end..].to_vec())
}

fn bad_groups(n: &Node) -> f64 {
    gauge(n.admin, "ron_fetch_failures_total{reason=\"bad_group\"}").unwrap()
}

/// Node `i`'s flags in a network bootstrapped from `p2p[0]`: `base`, its p2p port, and
/// the OAP/1 port it advertises when a proxy (`front`) stands in front of it.
fn network_flags(p2p: &[u16], i: usize, base: &[&str], front: Option<&TcpListener>) -> Vec<String> {
    let mut f: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    f.extend(["--p2p".into(), format!("127.0.0.1:{}", p2p[i])]);
    if i > 0 {
        f.extend(["--peer".into(), format!("127.0.0.1:{}", p2p[0])]);
    }
    if let Some(front) = front {
        let port = front.local_addr().unwrap().port();
        f.extend(["--oap-advertised-port".into(), port.to_string()]);
    }
    f
}

/// [`network_flags`] of a one-shard node in `zone` keeping one copy per object, hedging
/// after 300 ms, with `extra` flags.
fn zoned_flags(
    p2p: &[u16],
    i: usize,
    zone: &str,
    front: Option<&TcpListener>,
    extra: &[&str],
) -> Vec<String> {
    let mut base = vec![
        "--shards",
        "1",
        "--fetch-hedge-ms",
        "300",
        "--replicas",
        "1",
    ];
    base.extend_from_slice(extra);
    let mut f = network_flags(p2p, i, &base, front);
    f.extend(["--zone".into(), zone.into()]);
    f
}

fn start_with(name: &str, flags: &[String]) -> Node {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Node::start(&temp_dir(name), &flags)
}

/// A liar, an honest node and an edge (`edge_shards` shards), one copy per object (what
/// is read through is never a placement copy); the liar's OAP/1 answers pass through a
/// proxy doing `mischief`, the honest node's start a second late.
struct Trio {
    liar: Node,
    honest: Node,
    edge: Node,
    liar_proxy: Proxy,
    honest_proxy: Proxy,
}

fn liar_honest_edge(name: &str, edge_shards: &str, mischief: Mischief) -> Trio {
    let p2p: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let liar_front = TcpListener::bind("127.0.0.1:0").unwrap();
    let honest_front = TcpListener::bind("127.0.0.1:0").unwrap();
    let flags = |i: usize, front: Option<&TcpListener>| {
        let shards = if i == 2 { edge_shards } else { "1" };
        let base = [
            "--shards",
            shards,
            "--fetch-hedge-ms",
            "300",
            "--replicas",
            "1",
        ];
        network_flags(&p2p, i, &base, front)
    };
    let liar = start_with(&format!("{name}-liar"), &flags(0, Some(&liar_front)));
    let honest = start_with(&format!("{name}-honest"), &flags(1, Some(&honest_front)));
    let edge = start_with(&format!("{name}-edge"), &flags(2, None));
    let liar_proxy = proxy(liar_front, liar.oap, mischief);
    let honest_proxy = proxy(
        honest_front,
        honest.oap,
        Mischief::DelayFirstByte(Duration::from_secs(1)),
    );
    Trio {
        liar,
        honest,
        edge,
        liar_proxy,
        honest_proxy,
    }
}

#[test]
fn a_lying_provider_is_dropped_mid_object_and_an_honest_one_finishes_it() {
    // The edge has two shards: a miss on the shard that does not own the object
    // follows the owner's fetch over the mesh. The liar's answers lose one bit in the
    // third group; the honest node's answers start a second late (so a hedge always
    // tries the liar too).
    let Trio {
        mut liar,
        mut honest,
        mut edge,
        liar_proxy,
        honest_proxy,
    } = liar_honest_edge("rt", "2", Mischief::FlipDataFrame(2));

    let data = bytes(21, 5 * GROUP + 123);
    let addr = upload(&liar, &data);
    let liar_id = node_id(&liar);
    let mut seen = None;
    wait_for("the edge resolves the liar", WAIT, || {
        seen = provider_oap(&edge, &addr, &liar_id);
        seen.is_some()
    });
    assert_eq!(seen.unwrap(), liar_proxy.addr.to_string());

    // Only the liar has it: the two good groups are served, then the body stops short;
    // nothing is stored, and the failure is not cached.
    for attempt in 1..=2u64 {
        let (status, body) = get_all(edge.http, &format!("/o/{addr}"));
        assert_eq!(status, 200);
        assert!(body.len() < data.len(), "cut short, not padded");
        assert!(body == data[..body.len()], "no bad byte served");
        assert!(body.len() <= 2 * GROUP, "nothing past the bad group");
        assert_eq!(metric(edge.admin, "ron_fetches_total"), attempt);
        assert_eq!(bad_groups(&edge), attempt as f64);
    }
    assert_eq!(metric(edge.admin, "ron_fetches_stored_total"), 0);
    assert_eq!(metric(edge.admin, "ron_objects_stored"), 0);

    // The honest node stores it too: the liar is dropped at its bad group and the
    // honest one resumes there, whichever of them the edge tried first.
    let honest_id = node_id(&honest);
    assert_eq!(upload(&honest, &data), addr);
    wait_for("the edge resolves the honest node", WAIT, || {
        provider_oap(&edge, &addr, &honest_id).is_some()
    });
    // Twenty at once, over both shards: one fetch for the node.
    let gets: Vec<_> = (0..20)
        .map(|_| {
            let (http, path) = (edge.http, format!("/o/{addr}"));
            std::thread::spawn(move || get_all(http, &path))
        })
        .collect();
    for got in gets {
        let (status, body) = got.join().unwrap();
        assert_eq!(status, 200);
        assert!(body == data, "the whole object, verified");
    }
    assert_eq!(bad_groups(&edge), 3.0, "the liar was used and dropped");
    for shard in 0..2 {
        let answered = format!("ron_shard_requests_total{{shard=\"{shard}\"}}");
        wait_for(&format!("shard {shard} to answer"), WAIT, || {
            gauge(edge.admin, &answered).unwrap_or(0.0) > 0.0
        });
    }
    assert!(honest_proxy.connections.load(Ordering::Relaxed) >= 1);
    assert_eq!(
        metric_reaching(edge.admin, "ron_fetches_stored_total", 1, WAIT),
        1
    );
    // Stored on the edge: served from its store, no fetch, verified by the client.
    let r = get(edge.http, &format!("/o/{addr}")).unwrap();
    assert!(r.status == 200 && r.body == data);
    assert_eq!(metric(edge.admin, "ron_fetches_total"), 3);
    for n in [&mut liar, &mut honest, &mut edge] {
        n.stop();
    }
}

/// A provider that lies about the object's length — 8 groups for 6, the first group's
/// proof holding for both — is not believed: the last group it claims is asked before
/// the length is, and it has none. Before, the edge told the client the false length,
/// the liar's answer ended short of it, and every honest provider was refused on resume
/// for naming the true one: a cut body for every reader while the liar was asked first.
#[test]
fn a_provider_lying_about_the_length_is_not_believed() {
    let claimed = 8 * GROUP as u64;
    // The honest node answers a second late: the liar is always asked, and first.
    let Trio {
        mut liar,
        mut honest,
        mut edge,
        liar_proxy,
        ..
    } = liar_honest_edge("rt-len", "1", Mischief::ClaimLength(claimed));
    let data = bytes(23, 5 * GROUP + 123);
    let addr = upload(&liar, &data);
    assert_eq!(upload(&honest, &data), addr);
    let (liar_id, honest_id) = (node_id(&liar), node_id(&honest));
    wait_for("the edge resolves both", WAIT, || {
        provider_oap(&edge, &addr, &liar_id).is_some()
            && provider_oap(&edge, &addr, &honest_id).is_some()
    });
    let (status, length, body) = get_with_length(edge.http, &format!("/o/{addr}"));
    assert_eq!(status, 200);
    assert_eq!(length, Some(data.len() as u64), "the true length");
    assert!(body == data, "the whole object ({} bytes)", body.len());
    assert!(
        liar_proxy.connections.load(Ordering::Relaxed) >= 1,
        "the liar was asked"
    );
    for n in [&mut liar, &mut honest, &mut edge] {
        n.stop();
    }
}

/// A provider that sends its first group at once and then one group every 3 s (within
/// every stall timeout) does not set the fetch's pace while another provider is queued:
/// a group that takes four hedge intervals has the next provider resume at it. The slow
/// provider is in the edge's zone, so it is asked first; before, the 16-group object took
/// 45 s from it, the fast provider never asked.
#[test]
fn a_provider_slow_after_its_first_group_is_replaced_by_a_queued_one() {
    let p2p: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let slow_front = TcpListener::bind("127.0.0.1:0").unwrap();
    let flags =
        |i: usize, zone: &str, front: Option<&TcpListener>| zoned_flags(&p2p, i, zone, front, &[]);
    let start = |name: &str, f: Vec<String>| start_with(name, &f);
    let mut slow = start("rt-slow-provider", flags(0, "near", Some(&slow_front)));
    let mut fast = start("rt-fast-provider", flags(1, "far", None));
    let mut edge = start("rt-slow-edge", flags(2, "near", None));
    let _slow_proxy = proxy(
        slow_front,
        slow.oap,
        Mischief::DelayLaterDataFrames(Duration::from_secs(3)),
    );
    let data = bytes(31, 16 * GROUP);
    let addr = upload(&slow, &data);
    assert_eq!(upload(&fast, &data), addr);
    let (slow_id, fast_id) = (node_id(&slow), node_id(&fast));
    wait_for("the edge resolves both providers", WAIT, || {
        provider_oap(&edge, &addr, &slow_id).is_some()
            && provider_oap(&edge, &addr, &fast_id).is_some()
    });
    let asked = Instant::now();
    let (status, body) = get_all(edge.http, &format!("/o/{addr}"));
    let took = asked.elapsed();
    assert_eq!(status, 200);
    assert!(body == data, "the whole object, verified");
    assert!(
        took < Duration::from_secs(15),
        "took {took:?}: the slow provider set the pace (a group each 3 s)"
    );
    assert!(metric(edge.admin, "ron_fetch_hedges_total") >= 1);
    for n in [&mut slow, &mut fast, &mut edge] {
        n.stop();
    }
}

/// `n` concurrent GETs of `path`: each one's status and body, and how long it took.
fn concurrent_gets(addr: SocketAddr, path: &str, n: usize) -> Vec<(u16, Vec<u8>, Duration)> {
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let path = path.to_string();
            std::thread::spawn(move || {
                let started = Instant::now();
                let r = get(addr, &path).unwrap();
                (r.status, r.body, started.elapsed())
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn concurrent_misses_at_an_edge_share_one_origin_fetch() {
    let mut origin = Node::start(&temp_dir("rt-origin"), &["--shards", "1"]);
    let data = bytes(22, 3 << 20);
    let addr = upload(&origin, &data);
    // The origin answers half a second late: every request below misses meanwhile.
    let front = TcpListener::bind("127.0.0.1:0").unwrap();
    let slow = proxy(
        front,
        origin.http,
        Mischief::DelayFirstByte(Duration::from_millis(500)),
    );
    let url = format!("http://{}", slow.addr);
    // Two shards: the requests land on both; the object's owner shard leads the one
    // fetch and the other follows it over the mesh.
    let mut edge = Node::start(
        &temp_dir("rt-cdn-edge"),
        &["--shards", "2", "--origin", &url],
    );
    let answers = concurrent_gets(edge.http, &format!("/o/{addr}"), 100);
    for (status, body, _) in &answers {
        assert_eq!(*status, 200);
        assert_eq!(Address::of(body), addr, "verified");
    }
    assert_eq!(
        slow.connections.load(Ordering::Relaxed),
        1,
        "one upstream fetch"
    );
    assert_eq!(metric(edge.admin, "ron_fetches_total"), 1);
    assert_eq!(metric(edge.admin, "ron_fetch_coalesced_waiters_total"), 99);
    // Waiters stream each group as it arrives, so every answer may be out before the
    // fetch commits the object and counts it (stored, and its bytes from an origin).
    gauge_becomes(&edge, "ron_fetches_stored_total", 1);
    assert_eq!(
        metric(edge.admin, "ron_fetch_bytes_total"),
        data.len() as u64
    );
    for shard in 0..2 {
        let answered = format!("ron_shard_requests_total{{shard=\"{shard}\"}}");
        wait_for(
            &format!("shard {shard} to answer some of the 100"),
            WAIT,
            || gauge(edge.admin, &answered).unwrap_or(0.0) > 0.0,
        );
    }
    for n in [&mut origin, &mut edge] {
        n.stop();
    }
}

/// An edge in a network (`--p2p`) with an origin: an object no node holds is fetched
/// from the origin, and the DHT naming no holder first is no failed attempt. Before,
/// every such object counted `ron_fetch_failures_total{reason="no_provider"}`, and
/// `RonFetchFailures` fired for good on a healthy edge.
#[test]
fn an_edge_with_an_origin_counts_no_failure_for_an_object_no_node_holds() {
    let mut origin = Node::start(&temp_dir("rt-origin-p2p"), &["--shards", "1"]);
    let data = bytes(23, 100_000);
    let addr = upload(&origin, &data);
    let url = format!("http://{}", origin.http);
    let p2p = format!("127.0.0.1:{}", free_port());
    let mut edge = Node::start(
        &temp_dir("rt-edge-p2p"),
        &["--shards", "1", "--p2p", &p2p, "--origin", &url],
    );
    let (status, body) = get_all(edge.http, &format!("/o/{addr}"));
    assert_eq!((status, Address::of(&body)), (200, addr));
    gauge_becomes(&edge, "ron_fetches_stored_total", 1);
    assert_eq!(
        try_metric(
            edge.admin,
            "ron_fetch_failures_total{reason=\"no_provider\"}"
        ),
        Some(0)
    );
    for n in [&mut origin, &mut edge] {
        n.stop();
    }
}

#[test]
fn a_stalled_origin_times_each_waiter_out_and_the_next_request_fetches_again() {
    // An origin that takes connections and never answers.
    let (stalled, taken) = silent_listener();
    let url = format!("http://{stalled}");
    let mut edge = Node::start(
        &temp_dir("rt-stalled-edge"),
        &[
            "--shards",
            "1",
            "--origin",
            &url,
            "--fetch-timeout-ms",
            "1000",
        ],
    );
    let addr = Address::of(b"the stalled origin never sends this");
    let answers = concurrent_gets(edge.http, &format!("/o/{addr}"), 20);
    for (status, body, took) in &answers {
        assert_eq!(*status, 504, "{}", String::from_utf8_lossy(body));
        assert!(
            *took < Duration::from_millis(2_500),
            "timed out in {took:?}"
        );
        let json: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(json["code"], "gateway_timeout");
        assert_eq!(json["retryable"], true);
    }
    assert_eq!(
        taken.load(Ordering::Relaxed),
        1,
        "one upstream fetch for all"
    );
    // The waiters' deadlines run from their arrival, the fetch's from its start: once
    // its failure is counted it has left the table, and the next request starts anew.
    let timeouts = "ron_fetch_failures_total{reason=\"timeout\"}";
    wait_for("the fetch's end", WAIT, || {
        gauge(edge.admin, timeouts) == Some(1.0)
    });
    let (status, _) = get_all(edge.http, &format!("/o/{addr}"));
    assert_eq!(status, 504);
    assert_eq!(
        taken.load(Ordering::Relaxed),
        2,
        "the next request fetched again"
    );
    assert_eq!(metric(edge.admin, "ron_fetches_total"), 2);
    // The answer may leave before the fetch counts its own timeout (its stall clock
    // starts after the connect and the request, the waiter's at arrival).
    wait_for("the second fetch's end", WAIT, || {
        gauge(edge.admin, timeouts) == Some(2.0)
    });
    edge.stop();
}

/// Requests waiting on a read-through do not fill the shard's in-flight gate: their
/// slots are parked while they wait, as a slow reader's are. Before, a client asking
/// `--max-inflight` times for an object whose upstream is slow (here an origin that never
/// answers; on a p2p node, any address no one stores: its lookup runs to the fetch
/// timeout) left every other request on the shard refused 503 until they timed out.
#[test]
fn waiters_on_a_slow_read_through_do_not_fill_the_inflight_gate() {
    let (stalled, _) = silent_listener();
    let url = format!("http://{stalled}");
    let mut edge = Node::start(
        &temp_dir("rt-waiters-gate"),
        &[
            "--shards",
            "1",
            "--origin",
            &url,
            "--fetch-timeout-ms",
            "5000",
            "--max-inflight",
            "16",
        ],
    );
    let stored = put(edge.http, "/o", b"a stored object", "").json()["obj"]
        .as_str()
        .unwrap()
        .to_string();
    let missing = Address::of(b"nobody answers for this one");
    let waiters: Vec<_> = (0..32)
        .map(|_| {
            let (http, path) = (edge.http, format!("/o/{missing}"));
            std::thread::spawn(move || get_all(http, &path).0)
        })
        .collect();
    wait_for("the waiters to join the fetch", WAIT, || {
        metric(edge.admin, "ron_fetch_coalesced_waiters_total") >= 31
    });
    assert!(metric(edge.admin, "ron_parked_requests") >= 32);
    let (status, body) = get_all(edge.http, &format!("/o/{stored}"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, b"a stored object");
    for waiter in waiters {
        assert_eq!(waiter.join().unwrap(), 504);
    }
    assert_eq!(metric(edge.admin, "ron_overload_rejections_total"), 0);
    edge.stop();
}

/// The copies other nodes ask a node to hold are pulled through its read-through, but
/// they may start at most half of a shard's fetches: the rest stay for its clients. A
/// peer names the addresses and the source it asks a node to pull from; before, one
/// peer's 64 copies from a source that never answers took every fetch of a one-shard
/// node, and each client's miss was refused 503 meanwhile. Here A advertises an OAP/1
/// port where nothing answers, so B's pulls of A's 70 uploads all hang.
#[test]
fn placement_pulls_leave_half_of_a_shards_fetches_to_its_clients() {
    let (silent_at, _) = silent_listener();
    let p2p = [free_port(), free_port()];
    let flags = |i: usize| -> Vec<String> {
        let mut f: Vec<String> = [
            "--shards",
            "1",
            "--replicas",
            "2",
            "--fetch-timeout-ms",
            "4000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        f.extend(["--p2p".into(), format!("127.0.0.1:{}", p2p[i])]);
        f.extend(["--zone".into(), format!("z{i}")]);
        if i == 0 {
            f.extend(["--oap-advertised-port".into(), silent_at.port().to_string()]);
        } else {
            f.extend(["--peer".into(), format!("127.0.0.1:{}", p2p[0])]);
            f.extend(["--origin".into(), format!("http://{silent_at}")]);
        }
        f
    };
    let start = |name: &str, f: Vec<String>| {
        let f: Vec<&str> = f.iter().map(String::as_str).collect();
        Node::start(&temp_dir(name), &f)
    };
    let mut a = start("rt-pulls-a", flags(0));
    let mut b = start("rt-pulls-b", flags(1));
    wait_for("A and B to know each other", WAIT, || {
        metric(a.admin, "ron_dht_routing_table_peers") >= 1
            && metric(b.admin, "ron_dht_routing_table_peers") >= 1
    });
    for i in 0..70u64 {
        upload(&a, &bytes(200 + i, 1000));
    }
    wait_for("B to pull half its fetches' worth", WAIT, || {
        metric(b.admin, "ron_fetches_total") >= 32
    });
    // Time for any more pulls to start (A asked for all 70 at upload).
    std::thread::sleep(Duration::from_millis(500));
    let pulls = metric(b.admin, "ron_fetches_total");
    assert!(pulls <= 32, "{pulls} pulls started: at most half of 64");
    let missing = Address::of(b"a client's miss, for the silent origin");
    let (status, body) = get_all(b.http, &format!("/o/{missing}"));
    assert_eq!(
        status,
        504,
        "the client's miss was fetched (and timed out), not refused: {}",
        String::from_utf8_lossy(&body)
    );
    a.stop();
    b.stop();
}

/// A GET of `path` from the loopback address `from` (another client than 127.0.0.1's).
fn get_from(from: std::net::Ipv4Addr, node: SocketAddr, path: &str) -> Response {
    let mut s = connect_from(from, node);
    let raw = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(raw.as_bytes()).unwrap();
    read_response(&mut s, &mut Vec::new(), false).unwrap()
}

/// One client's misses take at most a quarter of a shard's fetches (16 of 64): each miss
/// of an address nobody serves is a fetch that waits out the fetch timeout, and before,
/// one client asking for 64 made-up addresses left every other client's misses refused
/// 503 `too_many_fetches` for as long — repeatable at a few hundred bytes a second.
#[test]
fn one_clients_misses_take_at_most_a_quarter_of_a_shards_fetches() {
    let (stalled, _) = silent_listener();
    let url = format!("http://{stalled}");
    let mut edge = Node::start(
        &temp_dir("rt-client-share"),
        &[
            "--shards",
            "1",
            "--origin",
            &url,
            "--fetch-timeout-ms",
            "4000",
        ],
    );
    let misses: Vec<_> = (0..64u32)
        .map(|i| {
            let (http, path) = (edge.http, format!("/o/{}", Address::of(&i.to_le_bytes())));
            std::thread::spawn(move || get_all(http, &path).0)
        })
        .collect();
    wait_for("one client's fetches to start", WAIT, || {
        metric(edge.admin, "ron_fetches_total") >= 16
    });
    // Another client's miss is fetched (and times out on the silent origin), not refused.
    let other = get_from(
        std::net::Ipv4Addr::new(127, 0, 0, 2),
        edge.http,
        &format!("/o/{}", Address::of(b"another client's miss")),
    );
    assert_eq!(
        other.status,
        504,
        "{:?}",
        String::from_utf8_lossy(&other.body)
    );
    let statuses: Vec<u16> = misses.into_iter().map(|m| m.join().unwrap()).collect();
    let fetched = statuses.iter().filter(|s| **s == 504).count();
    let refused = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!((fetched, refused), (16, 48), "{statuses:?}");
    assert_eq!(metric(edge.admin, "ron_fetches_total"), 17);
    edge.stop();
}

/// What a trickling origin sends slowly: each byte within the stall timeout, never
/// enough to finish.
#[derive(Clone, Copy, Debug)]
enum Trickle {
    /// The outboard's response head, a byte at a time.
    Head,
    /// A 404 for the outboard, then the object's head, then its body a byte at a time.
    Body,
}

/// A test origin's listener on loopback, its URL, and a count of the connections it
/// takes (the origin counts them).
fn origin_listener() -> (TcpListener, String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url, Arc::new(AtomicU64::new(0)))
}

/// An origin that takes one connection at a time and trickles `what` at a byte every
/// 200 ms, for 20 s at most; counts the connections it took.
fn trickling_origin(what: Trickle) -> (String, Arc<AtomicU64>) {
    let (listener, url, taken) = origin_listener();
    let counted = Arc::clone(&taken);
    std::thread::spawn(move || {
        let ends = Instant::now() + Duration::from_secs(20);
        for mut c in listener.incoming().flatten() {
            counted.fetch_add(1, Ordering::Relaxed);
            let mut request = [0u8; 4096];
            let _ = c.read(&mut request);
            let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n";
            let trickled: &[u8] = match what {
                Trickle::Head => head,
                Trickle::Body => {
                    let absent = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
                    let _ = c.write_all(absent).and_then(|()| c.write_all(head));
                    &[b'x'; 4096]
                }
            };
            for byte in trickled {
                if Instant::now() > ends || c.write_all(&[*byte]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            if Instant::now() > ends {
                return;
            }
        }
    });
    (url, taken)
}

/// An origin that sends a byte within every read's timeout but never a whole head, or
/// never 64 KiB of body, is given up like one that sends nothing (each head and each
/// 64 KiB must come within about twice the stall timeout), and the next request fetches
/// again. Before, each byte restarted the read's timeout: the fetch went on for as long
/// as the origin liked, every request for the object waited on it and timed out, and it
/// held one of the shard's places for fetches.
#[test]
fn a_trickling_origin_is_given_up_like_a_silent_one() {
    for what in [Trickle::Head, Trickle::Body] {
        let (url, taken) = trickling_origin(what);
        let mut edge = Node::start(
            &temp_dir(&format!("rt-trickle-{what:?}")),
            &[
                "--shards",
                "1",
                "--origin",
                &url,
                "--fetch-timeout-ms",
                "1000",
            ],
        );
        let addr = Address::of(format!("trickled {what:?}").as_bytes());
        let (status, _) = get_all(edge.http, &format!("/o/{addr}"));
        assert_eq!(status, 504, "{what:?}");
        let timeouts = "ron_fetch_failures_total{reason=\"timeout\"}";
        let given_up = Instant::now();
        wait_for(&format!("{what:?}: the fetch given up"), WAIT, || {
            gauge(edge.admin, timeouts) == Some(1.0)
        });
        assert!(
            given_up.elapsed() < Duration::from_secs(5),
            "{what:?}: given up {:?} after the first answer",
            given_up.elapsed()
        );
        let (status, _) = get_all(edge.http, &format!("/o/{addr}"));
        assert_eq!(status, 504, "{what:?}");
        assert!(
            taken.load(Ordering::Relaxed) >= 2,
            "{what:?}: fetched again"
        );
        edge.stop();
    }
}

/// Whether `n` holds a file of `addr`'s own (its data blocks) in any store.
fn has_object_file(n: &Node, addr: &Address) -> bool {
    let hex = addr.to_string()[3..].to_string();
    std::fs::read_dir(n.data_dir.join("stores"))
        .unwrap()
        .any(|store| {
            let store = store.unwrap().path();
            store.join("objects").join(&hex[..2]).join(&hex).exists()
        })
}

/// Waits for a gauge to read `want` (the evicter publishes it after its commits).
fn gauge_becomes(n: &Node, name: &str, want: u64) {
    wait_for(&format!("{name} = {want}"), WAIT, || {
        try_metric(n.admin, name) == Some(want)
    });
}

fn read_through(edge: &Node, addr: &Address) {
    let r = get(edge.http, &format!("/o/{addr}")).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(Address::of(&r.body), *addr, "verified");
}

#[test]
fn fetched_copies_past_the_budget_are_evicted_oldest_first_and_uploads_are_kept() {
    const MIB: u64 = 1 << 20;
    let mut origin = Node::start(&temp_dir("rt-evict-origin"), &["--shards", "1"]);
    let objects: Vec<Address> = (0..5)
        .map(|i| upload(&origin, &bytes(40 + i, MIB as usize)))
        .collect();
    let url = format!("http://{}", origin.http);
    let budget = (5 * MIB / 2).to_string();
    let flags = [
        "--shards",
        "1",
        "--origin",
        &url,
        "--fetched-bytes-max",
        &budget,
    ];
    let mut edge = Node::start(&temp_dir("rt-evict-edge"), &flags);
    gauge_becomes(&edge, "ron_fetched_bytes_max", 5 * MIB / 2);
    let stats = get(edge.admin, "/admin/stats").unwrap().json();
    assert_eq!(stats["fetched"]["bytes_max"], 5 * MIB / 2);
    let evictions = |want| metric_reaching(edge.admin, "ron_evictions_total", want, WAIT);

    // Three copies, 3 MiB past a 2.5 MiB budget: the oldest goes, files and all.
    for addr in &objects[..3] {
        read_through(&edge, addr);
    }
    assert_eq!(evictions(1), 1);
    assert!(
        !has_object_file(&edge, &objects[0]),
        "evicted: its files unlinked"
    );
    assert!(objects[1..3].iter().all(|a| has_object_file(&edge, a)));
    gauge_becomes(&edge, "ron_fetched_bytes", 2 * MIB);
    gauge_becomes(&edge, "ron_fetched_objects", 2);
    assert_eq!(metric(edge.admin, "ron_evicted_bytes_total"), MIB);
    gauge_becomes(&edge, "ron_objects_stored", 2);
    let stats = get(edge.admin, "/admin/stats").unwrap().json();
    assert_eq!(stats["fetched"]["evicted_objects"], 1);
    assert_eq!(stats["fetched"]["objects"], 2);

    // Asked again, the evicted one is read through again; the oldest left goes.
    read_through(&edge, &objects[0]);
    assert_eq!(metric(edge.admin, "ron_fetches_total"), 4);
    assert_eq!(evictions(2), 2);
    assert!(!has_object_file(&edge, &objects[1]));

    // An upload of a fetched copy keeps it: no longer counted, never evicted.
    let kept = bytes(42, MIB as usize);
    assert_eq!(Address::of(&kept), objects[2]);
    let r = put(edge.http, "/o", &kept, "");
    assert!(r.status == 200 || r.status == 201, "{r:?}");
    gauge_becomes(&edge, "ron_fetched_bytes", MIB);
    for addr in &objects[3..5] {
        read_through(&edge, addr);
    }
    assert_eq!(evictions(3), 3, "3 MiB of copies: the oldest copy goes");
    assert!(!has_object_file(&edge, &objects[0]));
    assert!(has_object_file(&edge, &objects[2]), "the kept object stays");
    read_through(&edge, &objects[2]);
    assert_eq!(
        metric(edge.admin, "ron_fetches_total"),
        6,
        "served from the store"
    );

    // The accounting survives a restart.
    edge.stop();
    edge.restart(&flags);
    gauge_becomes(&edge, "ron_fetched_bytes", 2 * MIB);
    gauge_becomes(&edge, "ron_objects_stored", 3);
    for n in [&mut origin, &mut edge] {
        n.stop();
    }
}

/// Bytes in the files of every segment lane under `n`'s stores (packed needles, live
/// or dead).
fn segment_bytes(n: &Node) -> u64 {
    let mut total = 0;
    for store in std::fs::read_dir(n.data_dir.join("stores")).unwrap() {
        for lane in std::fs::read_dir(store.unwrap().path()).unwrap() {
            let lane = lane.unwrap();
            if !lane.file_name().to_string_lossy().starts_with("segments") {
                continue;
            }
            for segment in std::fs::read_dir(lane.path()).unwrap() {
                total += segment.unwrap().metadata().unwrap().len();
            }
        }
    }
    total
}

/// Small fetched copies are files of their own, whose eviction gives their space back.
/// Before, a one-dir edge packed them into segments, where an evicted copy's needle
/// stayed as dead space in every lane: an edge reading small objects through filled its
/// disk however small its budget.
#[test]
fn small_fetched_copies_give_their_space_back_when_evicted() {
    let mut origin = Node::start(&temp_dir("rt-small-origin"), &["--shards", "1"]);
    let objects: Vec<Address> = (0..12)
        .map(|i| upload(&origin, &bytes(60 + i, 20_000)))
        .collect();
    let url = format!("http://{}", origin.http);
    let flags = [
        "--shards",
        "1",
        "--origin",
        &url,
        "--fetched-bytes-max",
        "60000",
    ];
    let mut edge = Node::start(&temp_dir("rt-small-edge"), &flags);
    for addr in &objects {
        read_through(&edge, addr);
    }
    metric_reaching(edge.admin, "ron_evictions_total", 9, WAIT);
    gauge_becomes(&edge, "ron_fetched_objects", 3);
    assert_eq!(segment_bytes(&edge), 0, "no fetched copy is packed");
    let held = objects.iter().filter(|a| has_object_file(&edge, a)).count();
    assert_eq!(held, 3, "the evicted copies' files are gone");
    for n in [&mut origin, &mut edge] {
        n.stop();
    }
}

#[test]
fn an_evicted_copy_is_a_miss_on_every_shard_and_is_read_through_again() {
    let mut origin = Node::start(&temp_dir("rt-evict2-origin"), &["--shards", "1"]);
    let addr = upload(&origin, &bytes(50, 300_000));
    let url = format!("http://{}", origin.http);
    // No room for any copy: each is evicted once a second old.
    let flags = [
        "--shards",
        "2",
        "--origin",
        &url,
        "--fetched-bytes-max",
        "1",
    ];
    let mut edge = Node::start(&temp_dir("rt-evict2-edge"), &flags);
    // Fresh connections land on both shards; each caches the metadata it loads, and
    // must forget it when the owner evicts the copy.
    for round in 1..=6 {
        read_through(&edge, &addr);
        let evicted = metric_reaching(edge.admin, "ron_evictions_total", round, WAIT);
        assert_eq!(evicted, round);
        assert!(!has_object_file(&edge, &addr));
    }
    assert_eq!(metric(edge.admin, "ron_fetches_total"), 6);
    gauge_becomes(&edge, "ron_fetched_bytes", 0);
    for n in [&mut origin, &mut edge] {
        n.stop();
    }
}

/// An origin whose answer names a content type of 256 bytes (one past what a record
/// holds): the object is stored without it, and the shard's index commits go on. Before,
/// the type's length was written as 0 in a byte, the record read back as another object,
/// the index commit's check panicked on the blocking pool, and every upload after waited
/// for an index commit that never ended.
#[test]
fn an_origins_overlong_content_type_is_dropped_and_the_shard_goes_on() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let data = bytes(40, 100);
    let body = data.clone();
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten().take(4) {
            // The outboard's request and the object's, pipelined.
            let mut asked = Vec::new();
            let mut buf = [0u8; 4096];
            while asked.windows(4).filter(|w| w == b"\r\n\r\n").count() < 2 {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => asked.extend_from_slice(&buf[..n]),
                }
            }
            let mut answer = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec();
            answer.extend_from_slice(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
                    "a".repeat(256),
                    body.len()
                )
                .as_bytes(),
            );
            answer.extend_from_slice(&body);
            let _ = c.write_all(&answer);
        }
    });
    let mut edge = Node::start(
        &temp_dir("rt-long-type"),
        &["--shards", "1", "--origin", &url],
    );
    let addr = Address::of(&data);
    let (status, got) = get_all(edge.http, &format!("/o/{addr}"));
    assert_eq!((status, got), (200, data));
    gauge_becomes(&edge, "ron_fetches_stored_total", 1);
    // An upload in a file of its own is answered once its index commit ends.
    let own_file = bytes(41, 300_000);
    let r = put(edge.http, "/o", &own_file, "");
    assert_eq!(r.status, 201, "{r:?}");
    let stored = get(edge.http, &format!("/o/{addr}")).unwrap();
    assert_eq!(stored.status, 200);
    let content_type = stored.header("content-type").unwrap_or_default();
    assert!(!content_type.starts_with("aaaa"), "{content_type}");
    edge.stop();
}

/// An origin that answers the object (no outboard: a 404 for it) as 4 MiB, then sends
/// 64 KiB at once every `every`, for 70 s at most, a thread per connection.
fn bursting_origin(every: Duration) -> String {
    let (listener, url, _) = origin_listener();
    std::thread::spawn(move || {
        let ends = Instant::now() + Duration::from_secs(70);
        for mut c in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                let _ = c.read(&mut request);
                let heads = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n\
                              HTTP/1.1 200 OK\r\nContent-Length: 4194304\r\n\r\n";
                if c.write_all(heads).is_err() {
                    return;
                }
                for _ in 0..64 {
                    if Instant::now() > ends || c.write_all(&[b'x'; GROUP]).is_err() {
                        return;
                    }
                    std::thread::sleep(every);
                }
            });
        }
    });
    url
}

/// An upstream that sends each 64 KiB just within the stall timeout is given up once it
/// falls below `fetch_rate_min_bytes_per_s` (after its first `fetch_timeout_ms`): an
/// origin, and a provider (replaced when another is queued, else the fetch fails).
/// Before, each group only had to beat the stall timeout: 6.4 KiB/s at the default 10 s
/// held a fetch, its waiters and one of the shard's 64 places for fetches for days (a
/// 4 MiB object here for a minute).
#[test]
fn an_upstream_below_the_minimum_rate_is_given_up() {
    let url = bursting_origin(Duration::from_millis(900));
    let mut edge = Node::start(
        &temp_dir("rt-origin-slow"),
        &[
            "--shards",
            "1",
            "--origin",
            &url,
            "--fetch-timeout-ms",
            "1000",
            "--fetch-rate-min",
            "256KiB",
        ],
    );
    let addr = Address::of(b"sent 64 KiB at a time, slowly");
    let asked = Instant::now();
    let (status, _) = get_all(edge.http, &format!("/o/{addr}"));
    assert_eq!(status, 504, "the origin's fetch given up");
    let timeouts = "ron_fetch_failures_total{reason=\"timeout\"}";
    wait_for("the origin's fetch given up", WAIT, || {
        gauge(edge.admin, timeouts) == Some(1.0)
    });
    let given_up = asked.elapsed();
    assert!(
        given_up < Duration::from_secs(6),
        "given up {given_up:?} after the request (at 71 KiB/s: past 1 s + n / 256 KiB/s by ~2 s)"
    );
    edge.stop();

    // A provider: the OAP/1 proxy in front of it holds each group but the first 900 ms.
    let p2p: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let slow_front = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = [
        "--shards",
        "1",
        "--replicas",
        "1",
        "--fetch-timeout-ms",
        "1000",
        "--fetch-rate-min",
        "256KiB",
    ];
    let mut slow = start_with(
        "rt-slow-rate",
        &network_flags(&p2p, 0, &base, Some(&slow_front)),
    );
    let mut edge = start_with("rt-slow-rate-edge", &network_flags(&p2p, 1, &base, None));
    let _slow_proxy = proxy(
        slow_front,
        slow.oap,
        Mischief::DelayLaterDataFrames(Duration::from_millis(900)),
    );
    let data = bytes(41, 64 * GROUP);
    let addr = upload(&slow, &data);
    let slow_id = node_id(&slow);
    wait_for("the edge resolves the provider", WAIT, || {
        provider_oap(&edge, &addr, &slow_id).is_some()
    });
    let asked = Instant::now();
    let (status, body) = get_all(edge.http, &format!("/o/{addr}"));
    let took = asked.elapsed();
    assert!(
        status != 200 || body != data,
        "never served whole at 71 KiB/s"
    );
    assert!(
        took < Duration::from_secs(8),
        "cut off {took:?} after the request (the whole object at its pace: ~57 s)"
    );
    wait_for("the provider's fetch given up", WAIT, || {
        gauge(edge.admin, timeouts) == Some(1.0)
    });
    assert!(!has_object_file(&edge, &addr), "nothing stored");
    for n in [&mut slow, &mut edge] {
        n.stop();
    }
}

/// Two providers in the edge's zone that accept and never answer, and an honest one
/// farther away: the honest one is asked one hedge interval after the second, and the
/// object served. Before, a fetch opened two providers at most, then waited out the
/// whole timeout on them: every client got 504 while an honest holder stood by (two
/// node ids claiming the edge's zone did that to any object they also claimed).
#[test]
fn silent_providers_ahead_in_the_list_do_not_keep_an_honest_one_from_being_asked() {
    let p2p: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let fronts: Vec<TcpListener> = (0..2)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let flags = |i: usize, zone: &str, front: Option<&TcpListener>| {
        zoned_flags(&p2p, i, zone, front, &["--fetch-timeout-ms", "3000"])
    };
    let mut silent: Vec<Node> = (0..2)
        .map(|i| {
            start_with(
                &format!("rt-silent-{i}"),
                &flags(i, "near", Some(&fronts[i])),
            )
        })
        .collect();
    let mut honest = start_with("rt-silent-honest", &flags(2, "far", None));
    let mut edge = start_with("rt-silent-edge", &flags(3, "near", None));
    let _proxies: Vec<Proxy> = fronts
        .into_iter()
        .zip(&silent)
        .map(|(front, n)| {
            proxy(
                front,
                n.oap,
                Mischief::DelayFirstByte(Duration::from_secs(20)),
            )
        })
        .collect();
    let data = bytes(43, 4 * GROUP);
    let addr = upload(&honest, &data);
    let mut ids = vec![node_id(&honest)];
    for n in &silent {
        assert_eq!(upload(n, &data), addr);
        ids.push(node_id(n));
    }
    wait_for("the edge resolves all three providers", WAIT, || {
        ids.iter()
            .all(|id| provider_oap(&edge, &addr, id).is_some())
    });
    let asked = Instant::now();
    let (status, body) = get_all(edge.http, &format!("/o/{addr}"));
    let took = asked.elapsed();
    assert_eq!(status, 200, "served by the honest provider");
    assert!(body == data, "the whole object, verified");
    assert!(
        took < Duration::from_secs(2),
        "took {took:?}: the silent providers' timeout (3 s) set it"
    );
    for n in silent.iter_mut().chain([&mut honest, &mut edge]) {
        n.stop();
    }
}
