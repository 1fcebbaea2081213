//! A public node refuses what its operator's denylist names (`--denylist DIR`, IPIP-383
//! `*.deny` files), and removes copies on request: against the real binary, over HTTP,
//! OAP/1, the DHT and the placement's copies.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(30);
const ADMIN_TOKEN: &str = "operator-secret";

/// The object's CIDv1 (raw, BLAKE3) in base32, as kubo prints it.
fn cid_base32(addr: &Address) -> String {
    let mut cid = vec![0x01, 0x55, 0x1e, 0x20];
    cid.extend_from_slice(addr.as_bytes());
    format!(
        "b{}",
        data_encoding::BASE32_NOPAD
            .encode(&cid)
            .to_ascii_lowercase()
    )
}

/// The legacy ("badbits") double-hashed rule of an object: sha2-256 of `<CID>/`.
fn legacy_double_hash(addr: &Address) -> String {
    let digest = Sha256::digest(format!("{}/", cid_base32(addr)).as_bytes());
    data_encoding::HEXLOWER.encode(&digest)
}

fn status_of(n: &Node, addr: &Address) -> u16 {
    get(n.http, &format!("/o/{addr}")).unwrap().status
}

fn delete(n: &Node, addr: &Address, token: Option<&str>) -> Response {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let raw =
        format!("DELETE /o/{addr} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
    request(n.http, raw.as_bytes()).unwrap()
}

/// `POST /admin/remove/<addr>` on the node's admin port (no admin token configured).
fn remove_through_admin(n: &Node, addr: &Address) -> Response {
    let raw = format!(
        "POST /admin/remove/{addr} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    request(n.admin, raw.as_bytes()).unwrap()
}

fn stored_objects(n: &Node) -> u64 {
    get(n.admin, "/admin/stats").unwrap().json()["objects"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_denylist_blocks_every_path_live_and_the_operator_removes_copies() {
    let lists = temp_dir("denylists");
    let dir_arg = lists.to_str().unwrap().to_string();
    let flags = ["--shards", "2", "--denylist", &dir_arg];
    let mut n = Node::start(&temp_dir("deny-node"), &flags);
    let (x_data, y_data, z_data) = (bytes(1, 100_000), bytes(2, 3_000), bytes(3, 7_000));
    let (x, y) = (upload(&n, &x_data), upload(&n, &y_data));
    let z = Address::of(&z_data);
    assert_eq!(metric(n.admin, "ron_denylist_rules"), 0);

    // A takedown: a plain rule for x and a CID rule for z, picked up without a restart.
    write_list(
        &lists,
        "10-takedown.deny",
        &format!(
            "version: 1\nname: test\n---\n# notice 1\nb3:{}\n/ipfs/{}\n",
            hex(&x),
            cid_base32(&z)
        ),
    );
    wait_for_policy(&n, 2);
    let r = get(n.http, &format!("/o/{x}")).unwrap();
    assert_eq!(r.json()["code"], "blocked");
    assert_eq!(r.json()["retryable"], false);
    assert_eq!(
        r.json()["message"],
        format!("{x} is blocked on this node by its operator's denylist")
    );
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
    let head = request(
        n.http,
        format!("HEAD /o/{x} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    assert_eq!(head.status, 451);
    assert_eq!(status_of(&n, &y), 200, "what is not listed is served");
    assert_eq!(metric(n.admin, "ron_denylist_rules"), 2);

    // OAP/1: GET and STAT answer the documented error.
    for command in ["get", "stat"] {
        let out = ron(&[command, "--server", &n.oap.to_string(), &x.to_string()]);
        assert_eq!(out.status.code(), Some(1), "{command}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("451") && err.contains("blocked"),
            "{command}: {err}"
        );
    }
    // A blocked address is not stored by an upload, to /o or to its address.
    let r = put(n.http, "/o", &z_data, "");
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (451, Some("blocked"))
    );
    let r = put(n.http, &format!("/o/{z}"), &z_data, "");
    assert_eq!(r.status, 451);
    assert_eq!(stored_objects(&n), 2);

    // The double-hashed form, in a second file: y is blocked without being named.
    write_list(
        &lists,
        "20-hashed.deny",
        &format!("//{}\n", legacy_double_hash(&y)),
    );
    wait_for_policy(&n, 3);
    assert_eq!(status_of(&n, &y), 451);
    // An exception in a later file un-blocks x (the last rule on an object decides).
    write_list(&lists, "30-appeal.deny", &format!("!b3:{}\n", hex(&x)));
    wait_for_policy(&n, 4);
    assert_eq!((status_of(&n, &x), status_of(&n, &y)), (200, 451));

    // A broken list is refused whole: the running one stays, the failure is counted.
    let failed = metric(n.admin, "ron_config_reload_failures_total");
    write_list(&lists, "40-broken.deny", "version: 2\n---\n");
    wait_for("the broken list to be refused", WAIT, || {
        metric(n.admin, "ron_config_reload_failures_total") > failed
    });
    assert_eq!((status_of(&n, &x), status_of(&n, &y)), (200, 451));
    std::fs::remove_file(lists.join("40-broken.deny")).unwrap();

    // The operator removes copies through the admin port (no admin token is
    // configured: the data port removes nothing), a blocked one too: a purge.
    let r = delete(&n, &y, None);
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (403, Some("forbidden"))
    );
    assert!(holds(&n, &y), "a refused removal removes nothing");
    let r = remove_through_admin(&n, &y);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["removed"], true);
    assert!(!holds(&n, &y));
    assert_eq!(remove_through_admin(&n, &y).status, 404);
    // `ron rm`, the same over the CLI.
    let out = ron(&["rm", "--admin", &n.admin.to_string(), &x.to_string()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(status_of(&n, &x), 404);
    assert_eq!(stored_objects(&n), 0);

    // Removal is durable: killed at once, the node restarts without either copy, and
    // with the list it had.
    n.kill9();
    n.restart(&flags);
    assert_eq!((status_of(&n, &x), status_of(&n, &y)), (404, 451));
    assert!(!holds(&n, &x) && !holds(&n, &y));
    n.stop();
}

#[test]
fn removing_a_copy_needs_the_admin_token_when_one_is_configured() {
    let mut n = Node::start(
        &temp_dir("rm-token"),
        &["--shards", "1", "--admin-token", ADMIN_TOKEN],
    );
    let (a, b) = (upload(&n, &bytes(21, 1000)), upload(&n, &bytes(22, 1000)));
    let r = delete(&n, &a, None);
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (401, Some("unauthorized"))
    );
    assert_eq!(
        r.json()["message"],
        "removing an object needs the admin token (Authorization: Bearer <admin_token>)"
    );
    let r = delete(&n, &a, Some("guess"));
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (403, Some("forbidden"))
    );
    assert_eq!(status_of(&n, &a), 200, "refused removals remove nothing");
    let r = delete(&n, &a, Some(ADMIN_TOKEN));
    assert_eq!((r.status, r.json()["removed"].as_bool()), (200, Some(true)));
    assert_eq!(status_of(&n, &a), 404);
    let admin = n.admin.to_string();
    let rm = |token: &str| {
        ron(&[
            "rm",
            "--admin",
            &admin,
            "--admin-token",
            token,
            &b.to_string(),
        ])
    };
    let out = rm("guess");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("admin endpoints need"),
        "{out:?}"
    );
    assert_eq!(status_of(&n, &b), 200);
    assert!(rm(ADMIN_TOKEN).status.success());
    assert_eq!(status_of(&n, &b), 404);
    n.stop();
}

/// A takedown of many objects: each removal is taken by its shard when it arrives (the
/// shard's sleep cut short), not on the shard's next one-second tick, and removals from
/// every admin connection at once all fit in the shards' inboxes. Before, each removal
/// waited up to a second, and beyond 8 waiting per shard were refused 503.
#[test]
fn a_takedown_of_many_objects_is_neither_paced_nor_refused() {
    let mut n = Node::start(&temp_dir("rm-many"), &["--shards", "2"]);
    let started = std::time::Instant::now();
    for seed in 0..20 {
        let absent = Address::of(&bytes(1000 + seed, 100));
        assert_eq!(remove_through_admin(&n, &absent).status, 404);
    }
    let paced = started.elapsed();
    assert!(
        paced < Duration::from_secs(10),
        "20 removals one after another took {paced:?}: paced by the shards' tick"
    );
    let addrs: Vec<Address> = (0..48)
        .map(|seed| upload(&n, &bytes(2000 + seed, 700)))
        .collect();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let removals: Vec<_> = addrs
            .chunks(2)
            .map(|pair| {
                let n = &n;
                scope.spawn(move || {
                    pair.iter()
                        .map(|addr| remove_through_admin(n, addr).status)
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        removals
            .into_iter()
            .flat_map(|removal| removal.join().unwrap())
            .collect()
    });
    assert_eq!(statuses, vec![200; 48], "24 connections removing at once");
    assert_eq!(stored_objects(&n), 0);
    assert!(addrs.iter().all(|addr| status_of(&n, addr) == 404));
    n.stop();
}

#[test]
fn a_broken_denylist_refuses_the_start_with_one_line() {
    let lists = temp_dir("denylists-bad");
    write_list(&lists, "a.deny", "version: 3\n---\n");
    let out = run_ron(
        &temp_dir("deny-bad-node"),
        &["--denylist", lists.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a.deny: header says version 3; only version 1 is read"),
        "{err}"
    );
    let missing = run_ron(
        &temp_dir("deny-missing"),
        &["--denylist", "/nonexistent/ron-deny"],
    );
    // Unreadable, not refused: exit 1, so that a unit retries (a disk mounted late).
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("denylist_dir /nonexistent/ron-deny"));
}

fn p2p_node(name: &str, p2p: u16, peer: Option<u16>, extra: &[&str]) -> Node {
    let p2p_addr = format!("127.0.0.1:{p2p}");
    let mut flags = vec!["--shards", "1", "--p2p", &p2p_addr];
    let peer_addr = peer.map(|p| format!("127.0.0.1:{p}"));
    if let Some(peer) = &peer_addr {
        flags.extend(["--peer", peer]);
    }
    flags.extend_from_slice(extra);
    Node::start(&temp_dir(name), &flags)
}

#[test]
fn a_blocked_address_is_never_fetched_served_to_peers_or_copied_here() {
    let lists = temp_dir("denylists-net");
    let (w_data, v_data) = (bytes(11, 200_000), bytes(12, 50_000));
    let (w, v) = (Address::of(&w_data), Address::of(&v_data));
    write_list(
        &lists,
        "net.deny",
        &format!("b3:{}\nb3:{}\n", hex(&w), hex(&v)),
    );
    let (pa, pb) = (free_port(), free_port());
    let common = ["--replicas", "2", "--replication-interval-ms", "500"];
    let lists_arg = lists.to_str().unwrap();
    let mut a: Vec<&str> = vec!["--zone", "z0", "--denylist", lists_arg];
    a.extend_from_slice(&common);
    let mut b: Vec<&str> = vec!["--zone", "z1"];
    b.extend_from_slice(&common);
    let mut blocking = p2p_node("deny-a", pa, None, &a);
    let mut other = p2p_node("deny-b", pb, Some(pa), &b);
    wait_for("the two nodes to meet", WAIT, || {
        metric(blocking.admin, "ron_dht_routing_table_peers") >= 1
            && metric(other.admin, "ron_dht_routing_table_peers") >= 1
    });

    // B takes w: its placement names A, which refuses the copy, sweep after sweep.
    assert_eq!(upload(&other, &w_data), w);
    let sweeps_of_b = || gauge(other.admin, "ron_replication_sweeps_total{shard=\"0\"}").unwrap();
    let sweeps = sweeps_of_b();
    wait_for("B to sweep three times", WAIT, || {
        sweeps_of_b() >= sweeps + 3.0
    });
    assert_eq!(
        metric(other.admin, "ron_objects_under_replicated"),
        1,
        "B's sweep finds w short of its 2 copies: A was named and refused"
    );
    assert!(!holds(&blocking, &w), "A never stores what it blocks");
    assert_eq!(metric(blocking.admin, "ron_replication_pulls_total"), 0);

    // A client asks A for w: 451 at once, nothing fetched from B.
    assert_eq!(status_of(&blocking, &w), 451);
    assert_eq!(metric(blocking.admin, "ron_fetches_total"), 0);
    assert_eq!(metric(blocking.admin, "ron_fetch_bytes_total"), 0);

    // v is stored on A before A blocks it (started without the list), then the list
    // arrives: A withdraws it and serves it to no one, B included.
    let a_alone = |list: &[&str]| {
        let p2p = format!("127.0.0.1:{pa}");
        let mut flags = vec![
            "--shards",
            "1",
            "--p2p",
            &p2p,
            "--zone",
            "z0",
            "--replicas",
            "1",
        ];
        flags.extend_from_slice(list);
        flags.iter().map(|f| f.to_string()).collect::<Vec<String>>()
    };
    let restart = |n: &mut Node, flags: Vec<String>| {
        n.stop();
        n.restart(&flags.iter().map(String::as_str).collect::<Vec<&str>>());
    };
    restart(&mut blocking, a_alone(&[]));
    assert_eq!(upload(&blocking, &v_data), v);
    wait_for("A to provide v", WAIT, || {
        metric(blocking.admin, "ron_dht_provided_keys") == 1
    });
    wait_for("B to resolve v to A", WAIT, || {
        let r = get(other.admin, &format!("/resolve?hash={v}")).unwrap();
        r.json()["providers"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    });
    restart(&mut blocking, a_alone(&["--denylist", lists_arg]));
    assert!(holds(&blocking, &v), "blocked, still on disk until removed");
    // Withdrawn at start: A no longer provides (or republishes) it.
    wait_for("A to withdraw v", WAIT, || {
        metric(blocking.admin, "ron_dht_provided_keys") == 0
    });
    let r = get(other.http, &format!("/o/{v}")).unwrap();
    assert_ne!(r.status, 200, "B gets no byte of v from A: {r:?}");
    assert_eq!(metric(other.admin, "ron_fetch_bytes_total"), 0);
    // A answered B's peer fetch (OAP/1) with the documented error: B asked it, as its
    // provider record of A (B holds it: two nodes) outlives A's withdrawal until it
    // expires.
    let refused = "ron_requests_total{protocol=\"oap\",op=\"get\",status=\"451\"}";
    let asked = gauge(blocking.admin, refused).unwrap_or(0.0);
    let fetch_failures = gauge(other.admin, "ron_fetch_failures_total{reason=\"refused\"}");
    assert!(asked > 0.0, "B asked A for v, and A refused it");
    assert!(fetch_failures > Some(0.0), "A's refusals are B's failures");

    // u is stored on A and provided; a list dropped into the directory while A runs
    // blocks it: the reload withdraws it (the control thread, once every shard runs
    // the new list).
    let u_data = bytes(13, 30_000);
    let u = upload(&blocking, &u_data);
    wait_for("A to provide u", WAIT, || {
        metric(blocking.admin, "ron_dht_provided_keys") == 1
    });
    write_list(&lists, "later.deny", &format!("b3:{}\n", hex(&u)));
    wait_for_policy(&blocking, 2);
    wait_for("A to withdraw u", WAIT, || {
        metric(blocking.admin, "ron_dht_provided_keys") == 0
    });
    assert_eq!(status_of(&blocking, &u), 451);
    // The block undone (a mistaken takedown): u is served again and announced again,
    // so other nodes find it here. Before, nothing announced it until A's next start.
    std::fs::remove_file(lists.join("later.deny")).unwrap();
    wait_for_policy(&blocking, 3);
    assert_eq!(status_of(&blocking, &u), 200);
    wait_for("A to provide u again", WAIT, || {
        metric(blocking.admin, "ron_dht_provided_keys") == 1
    });
    for n in [&mut blocking, &mut other] {
        n.stop();
    }
}

/// An origin that answers requests for `body` (none has an outboard): its head and
/// first half at once, the rest when `release` is sent; counts the requests it took.
fn gated_origin(body: Vec<u8>) -> (String, std::sync::mpsc::Sender<()>, Arc<AtomicU64>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (release, released) = std::sync::mpsc::channel::<()>();
    let taken = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&taken);
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut head = [0u8; 4096];
            let read = std::io::Read::read(&mut conn, &mut head).unwrap_or(0);
            if String::from_utf8_lossy(&head[..read]).contains(".obao ") {
                let _ = conn.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            counted.fetch_add(1, Ordering::SeqCst);
            let start = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let half = body.len() / 2;
            let _ = conn.write_all(start.as_bytes());
            let _ = conn.write_all(&body[..half]);
            let _ = released.recv_timeout(Duration::from_secs(30));
            let _ = conn.write_all(&body[half..]);
        }
    });
    (url, release, taken)
}

/// A block that arrives while an object is being read through: the fetch completes,
/// verified, but nothing is stored (before, it was committed as an evictable copy and
/// announced again after the block had withdrawn it).
#[test]
fn an_object_blocked_while_it_is_fetched_is_not_stored() {
    let body = bytes(12, 400_000);
    let addr = Address::of(&body);
    let (origin, release, taken) = gated_origin(body);
    let lists = temp_dir("deny-mid-fetch-lists");
    std::fs::create_dir_all(&lists).unwrap();
    let list_dir = lists.to_str().unwrap().to_string();
    let n = Node::start(
        &temp_dir("deny-mid-fetch"),
        &[
            "--shards",
            "1",
            "--origin",
            &origin,
            "--denylist",
            &list_dir,
        ],
    );
    let reader = {
        let at = n.http;
        std::thread::spawn(move || get(at, &format!("/o/{addr}")).unwrap().status)
    };
    wait_for("the fetch is under way", WAIT, || {
        taken.load(Ordering::SeqCst) == 1
    });
    write_list(&lists, "takedown.deny", &format!("b3:{}\n", hex(&addr)));
    wait_for_policy(&n, 2);
    release.send(()).unwrap();
    let status = reader.join().unwrap();
    assert_ne!(status, 200, "a blocked object is not served");
    assert_eq!(status_of(&n, &addr), 451);
    let stats = get(n.admin, "/admin/stats").unwrap().json();
    assert_eq!(stats["fetched"]["objects"], 0, "nothing stored: {stats}");
    assert_eq!(stored_objects(&n), 0, "nothing stored: {stats}");
}
