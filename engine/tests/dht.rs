//! Many nodes (issue 15), against the real binary on loopback: five `ron serve`
//! processes joined by `--p2p`/`--peer`; an object stored on one is announced and every
//! other resolves it (admin `/resolve`, `ron stat --providers`) to the storing node's id
//! and OAP address; node ids, provided keys and others' records survive restarts.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ron_codec::Address;

const WAIT: Duration = Duration::from_secs(30);

fn p2p_flags(p2p: u16, peer: Option<u16>) -> Vec<String> {
    let mut flags = vec![
        "--shards".into(),
        "1".into(),
        "--p2p".into(),
        format!("127.0.0.1:{p2p}"),
    ];
    if let Some(peer) = peer {
        flags.extend(["--peer".into(), format!("127.0.0.1:{peer}")]);
    }
    flags
}

/// Node `i`'s flags in a network bootstrapped from `ports[0]`: its p2p port, its zone
/// and the network's replicas.
fn zoned_flags(ports: &[u16], i: usize, zone: String, replicas: usize) -> Vec<String> {
    with_zone(
        p2p_flags(ports[i], (i > 0).then_some(ports[0])),
        zone,
        replicas,
    )
}

/// `flags` with a zone and the network's replicas.
fn with_zone(mut flags: Vec<String>, zone: String, replicas: usize) -> Vec<String> {
    flags.extend([
        "--zone".into(),
        zone,
        "--replicas".into(),
        replicas.to_string(),
    ]);
    flags
}

fn start(dir: &std::path::Path, flags: &[String]) -> Node {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Node::start(dir, &flags)
}

fn providers(n: &Node, addr: &Address) -> serde_json::Value {
    let r = get(n.admin, &format!("/resolve?hash={addr}")).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["providers"].clone()
}

fn resolves_to(n: &Node, addr: &Address, id: &str) -> Option<serde_json::Value> {
    let found = providers(n, addr);
    found
        .as_array()?
        .iter()
        .find(|p| p["node_id"] == id)
        .cloned()
}

#[test]
fn five_nodes_announce_and_resolve_and_keep_their_records_across_restarts() {
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let dirs: Vec<_> = (0..5).map(|i| temp_dir(&format!("dht-{i}"))).collect();
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..5 {
        let peer = (i > 0).then_some(ports[0]);
        let mut flags = p2p_flags(ports[i], peer);
        // One copy per object: this test is about announcing and reading through.
        flags.extend(["--replicas".into(), "1".into()]);
        if i == 0 {
            flags.extend(["--zone".into(), "rack-a".into()]);
        }
        nodes.push(start(&dirs[i], &flags));
    }
    let a_id = node_id(&nodes[0]);
    assert!(a_id.starts_with("12D3KooW"), "an Ed25519 peer id: {a_id}");
    let banner = std::fs::read_to_string(nodes[0].log_dir.join("stdout")).unwrap();
    assert!(
        banner.contains(&format!("p2p    127.0.0.1:{}   (node {a_id})", ports[0])),
        "{banner}"
    );

    let data = bytes(15, 100_000);
    let addr = upload(&nodes[0], &data);
    wait_for("A publishes the object", WAIT, || {
        try_metric(nodes[0].admin, "ron_dht_keys_published_total").unwrap_or(0) >= 1
    });
    assert_eq!(metric(nodes[0].admin, "ron_dht_provided_keys"), 1);
    for n in &nodes[1..] {
        let mut found = None;
        wait_for("a resolve finds A", WAIT, || {
            found = resolves_to(n, &addr, &a_id);
            found.is_some()
        });
        let found = found.unwrap();
        assert_eq!(found["oap"], nodes[0].oap.to_string(), "{found}");
        assert_eq!(found["zone"], "rack-a", "{found}");
        assert_eq!(found["local"], false);
    }
    let own = resolves_to(&nodes[0], &addr, &a_id).expect("A lists itself");
    assert_eq!(own["local"], true);

    // `ron stat --providers` asks the admin port of the node it is given.
    let admin = nodes[4].admin.to_string();
    let out = ron(&["stat", "--providers", "--admin", &admin, &addr.to_string()]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout
            .lines()
            .any(|l| l == format!("{a_id} {}", nodes[0].oap)),
        "{stdout}"
    );
    let missing = Address::of(b"stored nowhere");
    let out = ron(&[
        "stat",
        "--providers",
        "--admin",
        &admin,
        &missing.to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no provider found in the DHT"),
        "{out:?}"
    );
    assert!(metric(nodes[4].admin, "ron_dht_missing_records_total") >= 1);
    assert!(metric(nodes[4].admin, "ron_dht_lookup_duration_seconds_count") >= 2);

    // C holds A's record (k = 20 > 5 nodes: every node does); restarted, it still has it.
    wait_for("C holds A's record", WAIT, || {
        try_metric(nodes[2].admin, "ron_dht_provider_records").unwrap_or(0) >= 1
    });
    nodes[2].stop();
    nodes[2].restart(
        &[
            p2p_flags(ports[2], Some(ports[1])),
            vec!["--replicas".into(), "1".into()],
        ]
        .concat()
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    );
    assert!(metric(nodes[2].admin, "ron_dht_provider_records") >= 1);

    // A restarts: the same node id, still providing the object.
    nodes[0].stop();
    nodes[0].restart(
        &[
            p2p_flags(ports[0], Some(ports[3])),
            vec!["--replicas".into(), "1".into()],
        ]
        .concat()
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    );
    assert_eq!(node_id(&nodes[0]), a_id);
    assert_eq!(metric(nodes[0].admin, "ron_dht_provided_keys"), 1);
    wait_for("E still resolves A", WAIT, || {
        resolves_to(&nodes[4], &addr, &a_id).is_some()
    });

    // E lacks the object: a GET reads it through from A, verified, and E stores it.
    let e = &nodes[4];
    let r = get(e.http, &format!("/o/{addr}")).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body == data, "E served A's bytes");
    assert_eq!(metric(e.admin, "ron_fetches_total"), 1);
    // The answer streams while the fetch stores the object: the commit may come after.
    assert_eq!(
        metric_reaching(e.admin, "ron_fetches_stored_total", 1, WAIT),
        1
    );
    assert_eq!(metric(e.admin, "ron_fetch_bytes_total"), data.len() as u64);
    // Stored: the project's verifying client gets it from E over OAP with proofs, and
    // E does not fetch again.
    let out_file = dirs[4].join("got");
    let out = ron(&[
        "get",
        "--server",
        &e.oap.to_string(),
        &addr.to_string(),
        "-o",
        out_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(std::fs::read(&out_file).unwrap() == data);
    assert_eq!(metric(e.admin, "ron_fetches_total"), 1);
    // E announces what it stored, like any upload.
    let e_id = node_id(e);
    wait_for("D resolves E", WAIT, || {
        resolves_to(&nodes[3], &addr, &e_id).is_some()
    });

    // A stops: D reads the object through from E (A, if D still lists it, is refused).
    nodes[0].stop();
    let d = &nodes[3];
    let r = get(d.http, &format!("/o/{addr}")).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body == data, "D served E's copy");
    assert_eq!(
        metric_reaching(d.admin, "ron_fetches_stored_total", 1, WAIT),
        1
    );

    // Nobody has it: 502, retryable, nothing stored.
    let r = get(d.http, &format!("/o/{missing}")).unwrap();
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.json()["code"], "bad_gateway");
    assert_eq!(
        gauge(d.admin, "ron_fetch_failures_total{reason=\"no_provider\"}"),
        Some(1.0)
    );
    for n in &mut nodes[1..] {
        n.stop();
    }
}

#[test]
fn uploads_are_copied_to_their_placement_one_copy_per_zone() {
    const NODES: usize = 6;
    const PEER_DEAD_MS: u64 = 8_000;
    let zone = |i: usize| format!("z{}", i % 3);
    let ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
    let mut nodes: Vec<Node> = (0..NODES)
        .map(|i| {
            let mut flags = zoned_flags(&ports, i, zone(i), 3);
            flags.extend(["--peer-dead-ms".into(), PEER_DEAD_MS.to_string()]);
            start(&temp_dir(&format!("placement-{i}")), &flags)
        })
        .collect();
    wait_for("A knows every other node", WAIT, || {
        metric(nodes[0].admin, "ron_dht_routing_table_peers") >= NODES as u64 - 1
    });
    assert_eq!(metric(nodes[0].admin, "ron_replication_target"), 3);
    // Small objects (packed in segments) and large ones (files of their own).
    let objects: Vec<(Address, Vec<u8>)> = (0..24u64)
        .map(|i| {
            let data = bytes(100 + i, 700 + (i as usize % 6) * 40_000);
            (upload(&nodes[0], &data), data)
        })
        .collect();
    let addrs: Vec<Address> = objects.iter().map(|(a, _)| *a).collect();
    let held_by = || holders_of(&nodes.iter().collect::<Vec<_>>(), &addrs);
    let mut held = Vec::new();
    wait_for(
        "every upload on three nodes or more",
        Duration::from_secs(60),
        || {
            held = held_by();
            held.iter().all(|h| h.len() >= 3)
        },
    );
    // Three holders may include A's upload while the placement's third copy is still
    // being pulled: wait until every holder the placement names has verified its copy.
    wait_for(
        "every placement holder with its copy",
        Duration::from_secs(60),
        || {
            addrs
                .iter()
                .all(|a| placement_of(&nodes[0], a)["rf_observed"] == 3)
        },
    );
    held = held_by();
    let mut copies_made = 0;
    for ((addr, data), held) in objects.iter().zip(&held) {
        let copies: Vec<usize> = held.iter().copied().filter(|i| *i != 0).collect();
        copies_made += copies.len() as u64;
        // The placement's three holders, one per zone; A keeps its upload besides
        // when it is not one of them.
        let mut zones: Vec<String> = copies.iter().map(|i| zone(*i)).collect();
        if copies.len() == 2 {
            zones.push(zone(0));
        }
        zones.sort();
        zones.dedup();
        assert_eq!(zones.len(), 3, "{addr} held by {held:?}");
        assert!((2..=3).contains(&copies.len()), "{addr} held by {held:?}");
        // A holder serves its own copy: the bytes, without reading through.
        let holder = &nodes[copies[0]];
        let r = get(holder.http, &format!("/o/{addr}")).unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body == *data, "{addr} from node {}", copies[0]);
    }
    // Every copy was asked for, pulled and kept — none is an evictable cache. A pull is
    // counted after its copy is committed, and A counts a copy held when the holder's
    // answer arrives: both may trail the audits that saw the copies.
    let pulled = || -> u64 {
        nodes
            .iter()
            .map(|n| metric(n.admin, "ron_replication_pulls_total"))
            .sum()
    };
    let held_counted = || {
        gauge(
            nodes[0].admin,
            "ron_replication_copies_total{outcome=\"held\"}",
        )
    };
    wait_for("every copy counted", WAIT, || {
        pulled() >= copies_made && held_counted() >= Some(copies_made as f64)
    });
    assert_eq!(pulled(), copies_made);
    assert_eq!(held_counted(), Some(copies_made as f64));
    let bytes_copied: u64 = nodes
        .iter()
        .map(|n| metric(n.admin, "ron_replication_bytes_total"))
        .sum();
    assert!(bytes_copied > 0);
    for n in &nodes {
        assert_eq!(
            metric(n.admin, "ron_fetched_objects"),
            0,
            "no evictable copies"
        );
    }

    // The operator's view agrees with what each node holds: every holder the placement
    // names holds the object, audited (a random group, verified) from another node.
    let oaps: Vec<String> = nodes.iter().map(|n| n.oap.to_string()).collect();
    let node_at = |oap: &str| oaps.iter().position(|o| o == oap);
    let placement = |n: &Node, addr: &Address| {
        let r = get(n.admin, &format!("/admin/placement?hash={addr}")).unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        r.json()
    };
    for ((addr, _), held) in objects.iter().zip(&held) {
        let p = placement(&nodes[5], addr);
        assert_eq!(
            (p["rf_target"].as_u64(), p["rf_observed"].as_u64()),
            (Some(3), Some(3)),
            "{p}"
        );
        for holder in p["placement"].as_array().unwrap() {
            let at = node_at(holder["oap"].as_str().unwrap()).expect("a node of the test");
            assert!(
                held.contains(&at),
                "{addr}: {holder} names node {at}, held by {held:?}"
            );
            assert_eq!(
                (holder["holds"].as_bool(), holder["audit"].as_str()),
                (Some(true), Some("verified")),
                "{holder}"
            );
            assert_eq!(holder["zone"], zone(at));
            assert_eq!(holder["local"], at == 5);
        }
    }
    assert!(
        metric_of(&nodes[5], "ron_replica_audits_total{outcome=\"verified\"}")
            >= 3 * objects.len() as u64
    );

    let admin = nodes[5].admin.to_string();
    let report = |addr: &Address| ron(&["placement", "--admin", &admin, &addr.to_string()]);
    let out = report(&objects[0].0);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"rf_observed\":3"),
        "{out:?}"
    );

    // A holder killed: the placement names a node that cannot answer or does not hold
    // the object, and says so — 2 of 3 copies observed. The victim is the holder in
    // zone z1: in z0 the uploader A still holds its copy and would stand in for it once
    // lookups no longer find the victim, and z2's holder is the asking node 5.
    let (addr, _) = &objects[0];
    let victim = held[0]
        .iter()
        .copied()
        .find(|i| zone(*i) == "z1")
        .expect("a holder in z1");
    let victim_id = node_id(&nodes[victim]);
    nodes[victim].kill9();
    let killed_at = std::time::Instant::now();
    // Within peer_dead_ms the placement still names the victim: a restart would move
    // nothing.
    let p = placement(&nodes[5], addr);
    assert!(
        killed_at.elapsed().as_millis() < u128::from(PEER_DEAD_MS),
        "{p}"
    );
    assert_eq!(p["rf_observed"], 2, "{p}");
    let failing: Vec<&serde_json::Value> = p["placement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["holds"] == false)
        .collect();
    assert_eq!(failing.len(), 1, "{p}");
    assert_eq!(failing[0]["node_id"], victim_id.as_str(), "{p}");
    assert_eq!(failing[0]["audit"], "failed", "{p}");
    // Past it, the victim counts as gone: the placement names another node of its zone,
    // which does not hold the object yet.
    let gone_at = Duration::from_millis(PEER_DEAD_MS + 1_000);
    std::thread::sleep(gone_at.saturating_sub(killed_at.elapsed()));
    let p = placement(&nodes[5], addr);
    assert_eq!(p["rf_observed"], 2, "{p}");
    let failing: Vec<&serde_json::Value> = p["placement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["holds"] == false)
        .collect();
    assert_eq!(failing.len(), 1, "{p}");
    assert_ne!(failing[0]["node_id"], victim_id.as_str(), "{p}");
    assert_eq!(failing[0]["audit"], "missing", "{p}");
    let out = report(addr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "fewer verified copies than replicas: {out:?}"
    );

    // The operator repairs it from a node holding it (A took the upload; the new holder
    // pulls from the asking node first): the holder now named takes a verified copy.
    let a_admin = nodes[0].admin.to_string();
    let out = ron(&[
        "repair",
        "--cluster",
        "--admin",
        &a_admin,
        &addr.to_string(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let repaired: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            repaired["rf_before"].as_u64(),
            repaired["rf_observed"].as_u64()
        ),
        (Some(2), Some(3)),
        "{repaired}"
    );
    assert_eq!(
        repaired["asked"].as_array().map(Vec::len),
        Some(1),
        "{repaired}"
    );
    for holder in repaired["placement"].as_array().unwrap() {
        let at = node_at(holder["oap"].as_str().unwrap()).expect("a node of the test");
        assert!(at != victim && holds(&nodes[at], addr), "{repaired}");
    }
}

fn metric_of(n: &Node, series: &str) -> u64 {
    gauge(n.admin, series).unwrap_or_else(|| panic!("no series {series}")) as u64
}

#[test]
fn the_repair_sweep_restores_three_verified_copies_after_two_holders_are_killed() {
    const NODES: usize = 5;
    let ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
    let mut nodes: Vec<Node> = (0..NODES)
        .map(|i| {
            let mut flags = p2p_flags(ports[i], (i > 0).then_some(ports[0]));
            flags.extend(["--zone".into(), format!("z{}", i % 3)]);
            flags.extend(["--replication-interval-ms".into(), "1000".into()]);
            flags.extend(["--peer-dead-ms".into(), "2000".into()]);
            start(&temp_dir(&format!("sweep-{i}")), &flags)
        })
        .collect();
    wait_for("A knows every other node", WAIT, || {
        metric(nodes[0].admin, "ron_dht_routing_table_peers") >= NODES as u64 - 1
    });
    let objects: Vec<Address> = (0..12u64)
        .map(|i| upload(&nodes[0], &bytes(300 + i, 1_000 + (i as usize) * 11_000)))
        .collect();
    let held_by = |nodes: &[Node], addr: &Address| -> Vec<usize> {
        (0..nodes.len())
            .filter(|i| holds(&nodes[*i], addr))
            .collect()
    };
    wait_for("every upload on three nodes or more", WAIT, || {
        objects.iter().all(|a| held_by(&nodes, a).len() >= 3)
    });
    // Two holders of the first object killed at once: for it, only A's copy is left.
    let victims: Vec<usize> = held_by(&nodes, &objects[0])
        .into_iter()
        .filter(|i| *i != 0)
        .take(2)
        .collect();
    assert_eq!(victims.len(), 2, "two holders besides A");
    let pulled = |nodes: &[&Node]| -> u64 {
        nodes
            .iter()
            .map(|n| metric(n.admin, "ron_replication_pulls_total"))
            .sum()
    };
    let survivors: Vec<usize> = (0..NODES).filter(|i| !victims.contains(i)).collect();
    let before = pulled(&survivors.iter().map(|i| &nodes[*i]).collect::<Vec<_>>());
    for victim in &victims {
        nodes[*victim].kill9();
    }
    // The sweep sees the loss (the gauge that must go back to 0 below was above it).
    wait_for("a survivor's pass to find objects short", WAIT, || {
        survivors
            .iter()
            .any(|i| metric_of(&nodes[*i], "ron_objects_under_replicated") >= 1)
    });
    let rf_observed = |addr: &Address| {
        let r = get(nodes[0].admin, &format!("/admin/placement?hash={addr}")).unwrap();
        r.json()["rf_observed"].as_u64()
    };
    // Nobody asks: once peer_dead_ms passed, the sweep finds the copies the killed nodes
    // held and has them made — on the three nodes left, every object.
    wait_for(
        "every object back to 3 verified copies",
        Duration::from_secs(90),
        || objects.iter().all(|a| rf_observed(a) == Some(3)),
    );
    let live: Vec<&Node> = survivors.iter().map(|i| &nodes[*i]).collect();
    for addr in &objects {
        // `holds` reads back every block of the node's copy against the address.
        assert!(
            live.iter().all(|n| holds(n, addr)),
            "{addr} on every node left"
        );
    }
    wait_for("a sweep pass finds nothing short", WAIT, || {
        live.iter()
            .all(|n| metric_of(n, "ron_objects_under_replicated") == 0)
    });
    let checks: u64 = live
        .iter()
        .map(|n| metric(n.admin, "ron_replication_checks_total"))
        .sum();
    assert!(checks >= objects.len() as u64, "{checks}");
    assert!(pulled(&live) > before, "the sweep had copies made");

    // A node joins: the sweep gives it the copies the placement now names it for, and
    // a displaced copy becomes evictable only once the holders named have theirs — no
    // object ever shows fewer than 3 verified copies meanwhile.
    let mut flags = p2p_flags(free_port(), Some(ports[0]));
    flags.extend(["--zone".into(), "z1".into()]);
    flags.extend(["--replication-interval-ms".into(), "1000".into()]);
    let joiner = start(&temp_dir("sweep-joiner"), &flags);
    let everyone: Vec<&Node> = live.iter().copied().chain([&joiner]).collect();
    let mut lowest = usize::MAX;
    wait_for(
        "the joiner holds its share",
        Duration::from_secs(90),
        || {
            for addr in &objects {
                let copies = everyone.iter().filter(|n| holds(n, addr)).count();
                lowest = lowest.min(copies);
            }
            metric(joiner.admin, "ron_replication_pulls_total") > 0
                && objects.iter().all(|a| rf_observed(a) == Some(3))
        },
    );
    assert!(
        lowest >= 3,
        "an object fell to {lowest} copies during the move"
    );
    let moved = metric(joiner.admin, "ron_replication_bytes_total");
    let total: u64 = (0..12u64).map(|i| 1_000 + i * 11_000).sum();
    eprintln!(
        "join: {} objects, {moved} of {total} bytes moved to the joiner (ideal: replicas/N = 3/{} of the data, {})",
        metric(joiner.admin, "ron_replication_pulls_total"),
        everyone.len(),
        total * 3 / everyone.len() as u64
    );
    assert!(moved > 0 && moved <= total, "{moved}");
    // A holder the placement no longer names demotes its copy on its own next sweep,
    // once the named holders prove theirs: after the copies are at three, not with it.
    wait_for(
        "copies no longer named to be made evictable",
        Duration::from_secs(30),
        || {
            live.iter()
                .map(|n| metric(n.admin, "ron_replication_demoted_total"))
                .sum::<u64>()
                > 0
        },
    );
}

/// The last copy of an object is a read-through copy on a node no placement names: every
/// named holder and the uploader killed at once. The sweep walks kept copies only, so
/// before its rescue walk nobody repaired it (and the copy was the next to be evicted);
/// now the node holding it makes it kept, the holders named take copies from it, and
/// once they prove theirs it is made evictable again.
/// A node whose other holders are gone names itself alone: one verified copy of three
/// is under-replicated, and the gauge says so (it read 0: every holder named had
/// proved its copy).
#[test]
fn a_node_left_alone_counts_its_objects_under_replicated() {
    const NODES: usize = 3;
    let ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
    let mut nodes: Vec<Node> = (0..NODES)
        .map(|i| {
            let mut flags = p2p_flags(ports[i], (i > 0).then_some(ports[0]));
            flags.extend(["--replication-interval-ms".into(), "500".into()]);
            flags.extend(["--peer-dead-ms".into(), "1000".into()]);
            start(&temp_dir(&format!("alone-{i}")), &flags)
        })
        .collect();
    wait_for("A knows every other node", WAIT, || {
        metric(nodes[0].admin, "ron_dht_routing_table_peers") >= NODES as u64 - 1
    });
    let object = upload(&nodes[0], &bytes(77, 20_000));
    wait_for("the upload on every node", WAIT, || {
        nodes.iter().all(|n| holds(n, &object))
    });
    let sweeps = || gauge(nodes[0].admin, "ron_replication_sweeps_total{shard=\"0\"}").unwrap();
    let before = sweeps();
    wait_for("two passes of A since", WAIT, || sweeps() >= before + 2.0);
    assert_eq!(metric_of(&nodes[0], "ron_objects_under_replicated"), 0);
    nodes[1].kill9();
    nodes[2].kill9();
    // Past peer_dead_ms, A's placement no longer names them: it names A alone.
    std::thread::sleep(Duration::from_millis(2_000));
    let sweeps = || gauge(nodes[0].admin, "ron_replication_sweeps_total{shard=\"0\"}").unwrap();
    let after_dead = sweeps();
    wait_for("two passes of A since", WAIT, || {
        sweeps() >= after_dead + 2.0
    });
    assert_eq!(
        placement_of(&nodes[0], &object)["placement"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "A names itself alone"
    );
    assert_eq!(
        metric_of(&nodes[0], "ron_objects_under_replicated"),
        1,
        "one verified copy of three"
    );
}

/// The first holder a placement names may hold its copy and never sweep
/// (`--replication-interval-ms 0`): the holders named after it yield the object's check
/// to it, but each checks it itself on its turn, so a holder lost is replaced. Before,
/// the object stayed at two copies for good, and every node's gauge read 0.
#[test]
fn a_first_holder_that_never_sweeps_does_not_stop_the_repair() {
    const NODES: usize = 4;
    let ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
    let mut nodes: Vec<Node> = (0..NODES)
        .map(|i| {
            let mut flags = p2p_flags(ports[i], (i > 0).then_some(ports[0]));
            let interval = if i == 0 { "0" } else { "500" };
            flags.extend(["--replication-interval-ms".into(), interval.into()]);
            flags.extend(["--peer-dead-ms".into(), "1000".into()]);
            start(&temp_dir(&format!("lazy-first-{i}")), &flags)
        })
        .collect();
    wait_for("A knows every other node", WAIT, || {
        metric(nodes[0].admin, "ron_dht_routing_table_peers") >= NODES as u64 - 1
    });
    let oaps: Vec<String> = nodes.iter().map(|n| n.oap.to_string()).collect();
    let named = |p: &serde_json::Value| named_in(&oaps, p);
    // An object whose placement names the node that never sweeps first.
    let (object, holders) = (0..32u64)
        .find_map(|i| {
            let object = upload(&nodes[1], &bytes(900 + i, 5_000));
            let mut holders = Vec::new();
            wait_for("three verified copies", WAIT, || {
                let p = placement_of(&nodes[1], &object);
                holders = named(&p);
                p["rf_observed"] == 3
            });
            (holders[0] == 0).then_some((object, holders))
        })
        .expect("an object whose first holder is A");
    let victim = holders[1];
    nodes[victim].kill9();
    let observer = (1..NODES).find(|i| *i != victim).unwrap();
    wait_for(
        "three verified copies again, the lost holder replaced",
        Duration::from_secs(30),
        || placement_of(&nodes[observer], &object)["rf_observed"] == 3,
    );
}

#[test]
fn a_read_through_copy_left_alone_is_rescued_to_three_verified_copies() {
    const NODES: usize = 8;
    let ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
    let mut nodes: Vec<Node> = (0..NODES)
        .map(|i| {
            let mut flags = zoned_flags(&ports, i, format!("z{}", i % 3), 3);
            flags.extend(["--replication-interval-ms".into(), "1000".into()]);
            flags.extend(["--peer-dead-ms".into(), "2000".into()]);
            start(&temp_dir(&format!("rescue-{i}")), &flags)
        })
        .collect();
    wait_for("A knows every other node", WAIT, || {
        metric(nodes[0].admin, "ron_dht_routing_table_peers") >= NODES as u64 - 1
    });
    let data = bytes(4_242, 150_000);
    let addr = upload(&nodes[0], &data);
    let oaps: Vec<String> = nodes.iter().map(|n| n.oap.to_string()).collect();
    let named = |p: &serde_json::Value| named_in(&oaps, p);
    let mut holders = Vec::new();
    wait_for("three verified copies", Duration::from_secs(60), || {
        let p = placement_of(&nodes[7], &addr);
        holders = named(&p);
        p["rf_observed"] == 3
    });
    // A node neither named nor the uploader reads it through: an evictable copy.
    let reader = (1..NODES)
        .find(|i| !holders.contains(i))
        .expect("a node not named");
    let r = get(nodes[reader].http, &format!("/o/{addr}")).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, data);
    // The answer streams each group as the fetch verifies it; the copy is stored when
    // the fetch commits, which may be just after the last byte left.
    wait_for("the read-through copy stored", WAIT, || {
        holds(&nodes[reader], &addr)
    });
    assert_eq!(kept_copies(&nodes[reader]), 0, "and evictable");

    let mut victims = holders.clone();
    victims.push(0);
    victims.sort_unstable();
    victims.dedup();
    for victim in &victims {
        nodes[*victim].kill9();
    }
    let live: Vec<usize> = (0..NODES).filter(|i| !victims.contains(i)).collect();
    eprintln!("named {holders:?}, uploader 0, reader {reader}; killed {victims:?}, left {live:?}");
    wait_for(
        "three verified copies again, from the read-through copy",
        Duration::from_secs(120),
        || placement_of(&nodes[reader], &addr)["rf_observed"] == 3,
    );
    assert!(
        metric(nodes[reader].admin, "ron_replication_rescues_total") >= 1,
        "the reader's sweep rescued it"
    );
    let now_named = named(&placement_of(&nodes[reader], &addr));
    for i in &now_named {
        assert!(holds(&nodes[*i], &addr), "node {i} holds every block of it");
        assert_eq!(kept_copies(&nodes[*i]), 1, "node {i} keeps it");
    }
    if !now_named.contains(&reader) {
        wait_for(
            "the rescued copy evictable again once the holders have theirs",
            WAIT,
            || kept_copies(&nodes[reader]) == 0,
        );
    }
}

/// Which of `nodes` hold each of `objects` (`holds`): probed 6 at a time per node, as
/// a probe waits for the owner shard's next control tick (250 ms) and its inbox holds 8.
fn holders_of(nodes: &[&Node], objects: &[Address]) -> Vec<Vec<usize>> {
    const PROBES_PER_NODE: usize = 6;
    let chunk = objects.len().div_ceil(PROBES_PER_NODE).max(1);
    let per_node: Vec<Vec<bool>> = std::thread::scope(|scope| {
        let probes: Vec<Vec<_>> = nodes
            .iter()
            .map(|n| {
                objects
                    .chunks(chunk)
                    .map(|part| {
                        scope.spawn(move || part.iter().map(|a| holds(n, a)).collect::<Vec<bool>>())
                    })
                    .collect()
            })
            .collect();
        probes
            .into_iter()
            .map(|parts| {
                parts
                    .into_iter()
                    .flat_map(|p| p.join().unwrap())
                    .collect::<Vec<bool>>()
            })
            .collect()
    });
    (0..objects.len())
        .map(|o| (0..nodes.len()).filter(|i| per_node[*i][o]).collect())
        .collect()
}

/// The nodes (indexes into `oaps`, the nodes' OAP/1 addresses) a placement names, in
/// its order.
fn named_in(oaps: &[String], placement: &serde_json::Value) -> Vec<usize> {
    placement["placement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let oap = h["oap"].as_str().unwrap();
            oaps.iter()
                .position(|o| o == oap)
                .expect("a node of the test")
        })
        .collect()
}

/// `/admin/placement` of `addr` on `n`; asked again while the node's DHT is too busy
/// for the lookup (503) or it did not answer in time (504).
fn placement_of(n: &Node, addr: &Address) -> serde_json::Value {
    for _ in 0..10 {
        let r = get(n.admin, &format!("/admin/placement?hash={addr}")).unwrap();
        match r.status {
            200 => return r.json(),
            503 | 504 => std::thread::sleep(Duration::from_millis(200)),
            _ => panic!("placement of {addr}: {r:?}"),
        }
    }
    panic!("no placement of {addr} in 10 tries");
}

/// Kept copies on `n`: its stored objects less the evictable (fetched) ones.
fn kept_copies(n: &Node) -> u64 {
    metric(n.admin, "ron_objects_stored") - metric(n.admin, "ron_fetched_objects")
}

/// Waits until the placement `nodes[observer]` computes for each of `objects` names three
/// holders in three zones, each of them holding it, and each node keeps exactly the copies
/// it is named for; panics with the last difference seen when that is not so `within`.
fn wait_for_exact_placement(
    nodes: &[&Node],
    objects: &[Address],
    observer: usize,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let Err(difference) = exact_placement(nodes, objects, observer) else {
            return;
        };
        assert!(
            Instant::now() < deadline,
            "placement not exact within {within:?}: {difference}"
        );
        eprintln!("placement not yet exact: {difference}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The first way the placement seen from `nodes[observer]` differs from what the nodes
/// hold and keep, if any.
fn exact_placement(nodes: &[&Node], objects: &[Address], observer: usize) -> Result<(), String> {
    let oaps: Vec<String> = nodes.iter().map(|n| n.oap.to_string()).collect();
    let held = holders_of(nodes, objects);
    let mut named = vec![0u64; nodes.len()];
    for (addr, held) in objects.iter().zip(&held) {
        let p = placement_of(nodes[observer], addr);
        if p["rf_observed"] != 3 {
            return Err(format!("{addr}: {p}"));
        }
        let mut zones: Vec<String> = Vec::new();
        for holder in p["placement"].as_array().unwrap() {
            let at = oaps
                .iter()
                .position(|o| o == holder["oap"].as_str().unwrap())
                .expect("a node of the test");
            if !held.contains(&at) {
                return Err(format!("{addr}: {holder}, held by {held:?}"));
            }
            named[at] += 1;
            zones.push(holder["zone"].as_str().unwrap().to_owned());
        }
        zones.sort();
        zones.dedup();
        if zones.len() != 3 {
            return Err(format!("{addr}: zones {zones:?} in {p}"));
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        let kept = kept_copies(n);
        if kept != named[i] {
            return Err(format!(
                "node {i} keeps {kept} copies, named for {}",
                named[i]
            ));
        }
    }
    Ok(())
}

#[test]
fn eight_nodes_keep_exactly_three_copies_and_a_ninth_takes_its_share() {
    const NODES: usize = 8;
    const OBJECTS: u64 = 200;
    let ports: Vec<u16> = (0..NODES + 1).map(|_| free_port()).collect();
    let flags_of = |i: usize| -> Vec<String> {
        let mut flags = zoned_flags(&ports, i, format!("z{}", i % 3), 3);
        flags.extend(["--replication-interval-ms".into(), "2000".into()]);
        flags
    };
    let mut nodes: Vec<Node> = (0..NODES)
        .map(|i| start(&temp_dir(&format!("eight-{i}")), &flags_of(i)))
        .collect();
    wait_for("A knows every other node", WAIT, || {
        metric(nodes[0].admin, "ron_dht_routing_table_peers") >= NODES as u64 - 1
    });
    let sizes = |i: u64| 500 + (i as usize % 9) * 1_500;
    let objects: Vec<Address> = (0..OBJECTS)
        .map(|i| upload(&nodes[0], &bytes(900 + i, sizes(i))))
        .collect();
    let data_bytes: u64 = (0..OBJECTS).map(|i| sizes(i) as u64).sum();

    // Within a few sweep intervals: every object kept on exactly its three holders (the
    // uploader's copy made evictable where it is not one of them). The kept total alone
    // passes 3 × OBJECTS on its way up (some objects at 4 copies before the uploader's is
    // demoted, others still at 2), so it only says when to start checking each object.
    let kept_total = |nodes: &[&Node]| -> u64 { nodes.iter().map(|n| kept_copies(n)).sum() };
    let all: Vec<&Node> = nodes.iter().collect();
    wait_for(
        "exactly three kept copies of every object",
        Duration::from_secs(120),
        || kept_total(&all) == 3 * OBJECTS,
    );
    wait_for_exact_placement(&all, &objects, 7, Duration::from_secs(120));

    // A ninth node joins: it receives its share, no object ever has fewer than three
    // copies meanwhile, and the displaced copies become evictable.
    let joiner = start(&temp_dir("eight-joiner"), &flags_of(NODES));
    nodes.push(joiner);
    let everyone: Vec<&Node> = nodes.iter().collect();
    let mut lowest = usize::MAX;
    wait_for(
        "the ninth holds its share, three kept copies of each",
        Duration::from_secs(180),
        || {
            let held = holders_of(&everyone, &objects);
            lowest = held.iter().map(Vec::len).fold(lowest, usize::min);
            metric(nodes[NODES].admin, "ron_replication_pulls_total") > 0
                && kept_total(&everyone) == 3 * OBJECTS
        },
    );
    assert!(
        lowest >= 3,
        "an object fell to {lowest} copies during the move"
    );
    wait_for_exact_placement(&everyone, &objects, NODES, Duration::from_secs(120));
    let moved_objects = metric(nodes[NODES].admin, "ron_replication_pulls_total");
    let moved_bytes = metric(nodes[NODES].admin, "ron_replication_bytes_total");
    let ideal = data_bytes * 3 / (NODES as u64 + 1);
    eprintln!(
        "join at {} nodes: {moved_objects} of {OBJECTS} objects, {moved_bytes} of {data_bytes} \
         bytes moved to the joiner; the ideal replicas/N: {ideal} bytes ({:.2}×)",
        NODES + 1,
        moved_bytes as f64 / ideal as f64
    );
    // A copy the joiner took while its routing table was young, and its own sweep later
    // found the placement does not name it for (every named holder proven), it made
    // evictable: pulled, but no longer kept.
    // The stored-object gauges are published every 250 ms: read them settled.
    let accounted = || {
        let demoted = metric(nodes[NODES].admin, "ron_replication_demoted_total");
        kept_copies(&nodes[NODES]) + demoted
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while accounted() != moved_objects && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let joiner = nodes[NODES].admin;
    assert_eq!(
        accounted(),
        moved_objects,
        "the joiner's copies: stored {}, evictable {}, demoted {}, pulls {}",
        metric(joiner, "ron_objects_stored"),
        metric(joiner, "ron_fetched_objects"),
        metric(joiner, "ron_replication_demoted_total"),
        metric(joiner, "ron_replication_pulls_total"),
    );
    assert!(
        moved_bytes > 0 && moved_bytes <= 3 * ideal,
        "{moved_bytes} vs {ideal}"
    );
}

/// Flips one byte in each of the first `groups` 64 KiB groups of `addr`'s copy on `n`;
/// a packed copy in every lane (its needle lies at the same place in each).
fn rot(n: &Node, addr: &Address, groups: u64) {
    let (path, offset) = n.stored_at(addr);
    let mut copies = vec![path.clone()];
    if offset > 0 {
        let segment = path.file_name().unwrap();
        let store = path.parent().and_then(|lane| lane.parent()).unwrap();
        for entry in std::fs::read_dir(store).unwrap() {
            let lane = entry.unwrap().path();
            let name = lane.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("segments.") {
                copies.push(lane.join(segment));
            }
        }
    }
    for copy in &copies {
        for g in 0..groups {
            flip_byte(copy, offset + g * 65_536 + 7);
        }
    }
}

#[test]
fn a_copy_rotted_past_its_parity_is_caught_by_the_audit_and_fetched_again() {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let flags_of = |i: usize| -> Vec<String> {
        let mut flags = zoned_flags(&ports, i, format!("z{i}"), 3);
        flags.extend(["--replication-interval-ms".into(), "1000".into()]);
        flags
    };
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| start(&temp_dir(&format!("rot-{i}")), &flags_of(i)))
        .collect();
    wait_for("A knows the two others", WAIT, || {
        metric(nodes[0].admin, "ron_dht_routing_table_peers") >= 2
    });
    // A small object (packed, one lane: no parity) and a large one (its own file, 4+1
    // parity: four bad blocks of one stripe are past what parity rebuilds).
    let small = bytes(81, 20_000);
    let large = bytes(82, 300_000);
    let objects = [
        (upload(&nodes[0], &small), small),
        (upload(&nodes[0], &large), large),
    ];
    wait_for("both on every node", WAIT, || {
        objects
            .iter()
            .all(|(a, _)| nodes.iter().all(|n| holds(n, a)))
    });
    // Node 1's copies rot while it is down (a restart: nothing verified in its cache).
    nodes[1].kill9();
    rot(&nodes[1], &objects[0].0, 1);
    rot(&nodes[1], &objects[1].0, 4);
    let flags: Vec<String> = flags_of(1);
    nodes[1].restart(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    // Never the rotted bytes: a 500, or (once its sweep replaced it) the right ones.
    let served = get(nodes[1].http, &format!("/o/{}", objects[0].0)).unwrap();
    assert!(
        served.status == 500 || (served.status == 200 && served.body == objects[0].1),
        "a rotted copy is never served: {}",
        served.status
    );

    // Nobody asks: the sweep's audits (this node's own, or another holder's of it) find
    // the damage; node 1 checks its copy whole, removes it and fetches it verified.
    wait_for(
        "both rotted copies replaced",
        Duration::from_secs(60),
        || metric(nodes[1].admin, "ron_replication_damaged_copies_total") == 2,
    );
    for (addr, data) in &objects {
        wait_for("node 1 serves its own copy again", WAIT, || {
            get(nodes[1].http, &format!("/o/{addr}")).is_ok_and(|r| r.status == 200)
        });
        let r = get(nodes[1].http, &format!("/o/{addr}")).unwrap();
        assert!(r.body == *data, "{addr}");
        // A GET that read it through is answered before the fetch stores the copy.
        wait_for(
            &format!("{addr}: every block of the new copy checks"),
            WAIT,
            || holds(&nodes[1], addr),
        );
        // Every holder proves its copy to another node's audit, node 1's kept. CI once
        // saw it audited `missing` here: the damaged copies' service had removed the
        // rotted copy in the window of the replacement's own removal, which then threw
        // its verified copy away, and the GET above read the object through as an
        // evictable copy (fixed: a removal claims the copy before it demotes it).
        let placement = get(nodes[2].admin, &format!("/admin/placement?hash={addr}"))
            .unwrap()
            .json();
        assert_eq!(
            placement["rf_observed"],
            3,
            "{placement}\nnode 1's log:\n{}",
            nodes[1].stderr()
        );
    }
    assert_eq!(
        metric(nodes[1].admin, "ron_fetched_objects"),
        0,
        "the copies fetched again are kept, not cache"
    );
}

/// Copies damaged beyond their parity, with no whole copy anywhere to fetch: each is
/// kept, and serves its good groups. Before, a pull removed its copy first and then
/// found nothing verified to fetch — every copy lost, good groups and all.
#[test]
fn a_damaged_copy_is_kept_until_a_replacement_is_in_hand() {
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let flags_of = |i: usize| -> Vec<String> {
        let mut flags = zoned_flags(&ports, i, format!("z{i}"), 2);
        flags.extend(["--replication-interval-ms".into(), "300".into()]);
        flags
    };
    let mut nodes: Vec<Node> = (0..2)
        .map(|i| start(&temp_dir(&format!("damaged-{i}")), &flags_of(i)))
        .collect();
    wait_for("the two nodes to meet", WAIT, || {
        metric(nodes[0].admin, "ron_dht_routing_table_peers") >= 1
    });
    // Its own file, 4+1 parity: four bad blocks of the first stripe are past what parity
    // rebuilds; the fifth group is whole.
    let data = bytes(83, 300_000);
    let addr = upload(&nodes[0], &data);
    wait_for("both hold it", WAIT, || {
        nodes.iter().all(|n| holds(n, &addr))
    });
    for (i, node) in nodes.iter_mut().enumerate() {
        node.kill9();
        rot(node, &addr, 4);
        let flags = flags_of(i);
        node.restart(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let failed = "ron_replica_audits_total{outcome=\"failed\"}";
    wait_for(
        "each sweep's own audit to fail twice",
        Duration::from_secs(60),
        || {
            nodes
                .iter()
                .all(|n| gauge(n.admin, failed).is_some_and(|f| f >= 2.0))
        },
    );
    for node in &mut nodes {
        assert_eq!(
            metric(node.admin, "ron_replication_damaged_copies_total"),
            0,
            "nothing verified to fetch: nothing replaced"
        );
        let tail = get_with(
            node.http,
            &format!("/o/{addr}"),
            "Range: bytes=262144-299999\r\n",
        );
        assert_eq!(tail.status, 206, "the good group still serves: {tail:?}");
        assert!(tail.body == data[262_144..]);
        node.stop();
    }
}

/// PUTs `data` to `node` with `?copies=3`: created, and answered with three copies.
fn put_three_copies(node: &Node, data: &[u8]) -> Response {
    let r = put(node.http, "/o?copies=3", data, "");
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["copies"], 3, "{r:?}");
    r
}

#[test]
fn an_upload_waits_for_the_copies_it_asks_for() {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            let flags = zoned_flags(&ports, i, format!("z{i}"), 3);
            start(&temp_dir(&format!("copies-{i}")), &flags)
        })
        .collect();
    wait_for("A knows the two others", WAIT, || {
        metric(nodes[0].admin, "ron_dht_routing_table_peers") >= 2
    });
    let data = bytes(71, 150_000);
    let r = put_three_copies(&nodes[0], &data);
    let addr = Address::of(&data);
    assert_eq!(r.json()["obj"], addr.to_string());
    // Answered only once all three hold it: no waiting here.
    for n in &nodes {
        assert!(holds(n, &addr), "{addr} on {}", n.http);
    }
    // Uploaded again: already stored; answered as soon as two holders say they hold it.
    let r = put(nodes[0].http, "/o?copies=2", &data, "");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.json()["copies"].as_u64() >= Some(2), "{r:?}");

    // Over OAP/1 (`"copies":3` in START), with the project's client.
    let file = temp_dir("copies-oap").join("object");
    let over_oap = bytes(73, 90_000);
    std::fs::write(&file, &over_oap).unwrap();
    let out = ron(&[
        "put",
        "--server",
        &nodes[1].oap.to_string(),
        "--copies",
        "3",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let addr = Address::of(&over_oap);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        addr.to_string()
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("3 copies"),
        "{out:?}"
    );
    for n in &nodes {
        assert!(holds(n, &addr), "{addr} on {}", n.http);
    }

    // Past the 10 s idle timeout, A still holds its connections to its routing table's
    // peers (docs/design/dht.md): an idle network's uploads are copied without a dial.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(metric(nodes[0].admin, "ron_dht_peers_connected"), 2);
    assert!(metric(nodes[0].admin, "ron_dht_connections_kept") >= 2);
    put_three_copies(&nodes[0], &bytes(74, 40_000));

    // A node whose peers all went away and came back without dialing it (the state a
    // network blip leaves: no connection open, its table still naming them) is not
    // alone: its upload dials the peers it knows (judged alone by its connections, it
    // answered 503 at once).
    nodes[1].stop();
    nodes[2].stop();
    wait_for("A's connections close", WAIT, || {
        metric(nodes[0].admin, "ron_dht_peers_connected") == 0
    });
    for (i, other) in [(1, 2), (2, 1)] {
        let flags = with_zone(p2p_flags(ports[i], Some(ports[other])), format!("z{i}"), 3);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        nodes[i].restart(&flags);
    }
    wait_for("B and C meet again", WAIT, || {
        metric(nodes[1].admin, "ron_dht_peers_connected") >= 1
    });
    assert_eq!(metric(nodes[0].admin, "ron_dht_peers_connected"), 0);
    assert!(metric(nodes[0].admin, "ron_dht_routing_table_peers") >= 2);
    put_three_copies(&nodes[0], &bytes(75, 30_000));

    // Asking for what cannot be: 400 before a byte is stored.
    for (query, message) in [
        ("copies=4", "copies=4: this network keeps 3 copies of an object (replicas = 3); an upload can wait for at most that many"),
        ("copies=x", "copies must be a whole number from 1 to 16, not \"x\""),
        ("copies=0", "copies must be a whole number from 1 to 16, not \"0\""),
    ] {
        let r = put(nodes[0].http, &format!("/o?{query}"), b"never stored", "");
        assert_eq!(r.status, 400, "{r:?}");
        assert_eq!(r.json()["code"], "bad_request");
        assert_eq!(r.json()["message"], message);
    }
    let never = Address::of(b"never stored");
    assert!(!holds(&nodes[0], &never));

    // Two of three nodes down: the upload is durable here and the answer says how many
    // copies exist.
    nodes[1].stop();
    nodes[2].stop();
    wait_for("A sees no peer", WAIT, || {
        metric(nodes[0].admin, "ron_dht_peers_connected") == 0
    });
    let alone = bytes(72, 5_000);
    let r = put(nodes[0].http, "/o?copies=3", &alone, "");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json()["code"], "not_ready");
    let addr = Address::of(&alone);
    assert_eq!(
        r.json()["message"],
        format!("{addr} is stored durably here, but only 1 of the 3 copies asked for exist: the placement names no other node that could take it now (every holder asked answered, or no other node could be reached)")
    );
    let r = get(nodes[0].http, &format!("/o/{addr}")).unwrap();
    assert!(r.status == 200 && r.body == alone);
}

/// Two nodes in two zones keeping two copies, each started with `extra`, once the first
/// (the second's bootstrap peer) knows the second.
/// One bad group in a large object without parity, found by the scrubber: the copy is
/// fetched again verified from the network. Before, the scrubber only counted it, and
/// the sweep's audit of one random group a pass (1 in 64 here; 1 in 16,384 for 1 GiB)
/// was all that could notice; its reads answered 5xx meanwhile.
#[test]
fn one_bad_group_the_scrubber_finds_is_fetched_again_from_the_network() {
    a_bad_group_is_fetched_again("scrub-damage", Found::ByTheScrubber);
}

/// The same bad group found by a client's read (no scrubber): that read is refused
/// (never the rotted bytes), and the copy is fetched again.
#[test]
fn one_bad_group_a_read_finds_is_fetched_again_from_the_network() {
    a_bad_group_is_fetched_again("read-damage", Found::ByARead);
}

#[derive(PartialEq)]
enum Found {
    ByTheScrubber,
    ByARead,
}

fn a_bad_group_is_fetched_again(name: &str, found: Found) {
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let flags_of = |i: usize, scrub: &str| -> Vec<String> {
        let mut flags = zoned_flags(&ports, i, format!("z{i}"), 2);
        flags.extend(["--ec", "off", "--scrub-rate", scrub].map(String::from));
        flags
    };
    let mut nodes: Vec<Node> = (0..2)
        .map(|i| start(&temp_dir(&format!("{name}-{i}")), &flags_of(i, "0")))
        .collect();
    wait_for("A knows B", WAIT, || {
        metric(nodes[0].admin, "ron_dht_routing_table_peers") >= 1
    });
    let data = bytes(83, 4 << 20);
    let addr = upload(&nodes[0], &data);
    wait_for("both hold it", WAIT, || {
        nodes.iter().all(|n| holds(n, &addr))
    });
    // Node 1's copy rots while it is down.
    assert!(nodes[1].stop().success());
    let file = nodes[1].object_file(&addr);
    flip_byte(&file, 37 * 65_536 + 7);
    let scrub = match found {
        Found::ByTheScrubber => "64MiB",
        Found::ByARead => "0",
    };
    let flags = flags_of(1, scrub);
    nodes[1].restart(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    let group_37 = "Range: bytes=2424832-2490367\r\n";
    let path = format!("/o/{addr}");
    if found == Found::ByARead {
        let r = get_with(nodes[1].http, &path, group_37);
        assert!(
            r.status != 206 || r.body == data[37 * 65_536..38 * 65_536],
            "never the rotted bytes: {}",
            r.status
        );
    }
    wait_for("node 1's copy replaced", Duration::from_secs(30), || {
        metric(nodes[1].admin, "ron_replication_damaged_copies_total") == 1
    });
    wait_for("node 1 serves group 37 again", WAIT, || {
        get_with(nodes[1].http, &path, group_37).status == 206
    });
    let r = get_with(nodes[1].http, &path, group_37);
    assert!(r.body == data[37 * 65_536..38 * 65_536], "group 37 whole");
    assert!(
        std::fs::read(&file).unwrap() == data,
        "the file on disk replaced whole"
    );
}

fn two_zones_two_copies(name: &str, extra: &[&str]) -> Vec<Node> {
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let nodes: Vec<Node> = (0..2)
        .map(|i| {
            let mut flags = zoned_flags(&ports, i, format!("z{i}"), 2);
            flags.extend(extra.iter().map(|f| f.to_string()));
            start(&temp_dir(&format!("{name}-{i}")), &flags)
        })
        .collect();
    wait_for("A knows B", WAIT, || {
        metric(nodes[0].admin, "ron_dht_routing_table_peers") >= 1
    });
    nodes
}

/// An upload waiting for its copies waits on other nodes, its in-flight slot parked
/// meanwhile. Held, two uploads waiting on a peer that stopped answering filled a gate
/// of two, and every other request was refused 503 for as long as they waited (up to
/// 30 s).
#[test]
fn uploads_waiting_for_copies_hold_no_in_flight_slot() {
    let nodes = two_zones_two_copies("copies-parked", &["--max-inflight", "2"]);
    let kept = upload(&nodes[0], b"served while uploads wait");
    nodes[1].signal("STOP");
    let http = nodes[0].http;
    let bodies: Vec<Vec<u8>> = (0..2).map(|i| bytes(80 + i, 10_000)).collect();
    let waiting: Vec<_> = bodies
        .iter()
        .cloned()
        .map(|body| std::thread::spawn(move || put(http, "/o?copies=2", &body, "")))
        .collect();
    wait_for("both uploads stored here, waiting for copies", WAIT, || {
        bodies.iter().all(|b| holds(&nodes[0], &Address::of(b)))
    });
    std::thread::sleep(Duration::from_millis(500));
    let r = get(nodes[0].http, &format!("/o/{kept}")).unwrap();
    let parked = metric(nodes[0].admin, "ron_parked_requests");
    nodes[1].signal("CONT");
    assert_eq!(r.status, 200, "served while two uploads wait: {r:?}");
    assert_eq!(parked, 2, "both uploads parked");
    for upload in waiting {
        let r = upload.join().unwrap();
        assert!(matches!(r.status, 201 | 503 | 504), "{r:?}");
    }
}

/// One client's uploads waiting for copies on a shard are at most 32: past them its
/// next upload asking for copies is refused 503 before its body. Each wait costs a
/// watch of the DHT thread (1,024 for the node) for up to 30 s, and goes on when its
/// client has gone: one client reconnecting with 32 such uploads a connection held every
/// watch, and every other client's `copies` was answered busy.
#[test]
fn one_clients_uploads_waiting_for_copies_are_bounded() {
    let nodes = two_zones_two_copies("copy-waits", &["--max-uploads", "64"]);
    nodes[1].signal("STOP");
    let http = nodes[0].http;
    let bodies: Vec<Vec<u8>> = (0..32).map(|i| bytes(200 + i, 10_000)).collect();
    let waiting: Vec<_> = bodies
        .iter()
        .cloned()
        .map(|body| std::thread::spawn(move || put(http, "/o?copies=2", &body, "")))
        .collect();
    wait_for("32 uploads stored here, waiting for copies", WAIT, || {
        bodies.iter().all(|b| holds(&nodes[0], &Address::of(b)))
    });
    let one_more = put(http, "/o?copies=2", &bytes(300, 10_000), "");
    let other = put(http, "/o", &bytes(301, 10_000), "");
    nodes[1].signal("CONT");
    assert_eq!(one_more.status, 503, "{one_more:?}");
    assert_eq!(
        one_more.json()["message"],
        "this client has 32 uploads waiting for copies on shard 0, a client's most: try again shortly"
    );
    assert_eq!(
        other.status, 201,
        "an upload asking for no copies: {other:?}"
    );
    for upload in waiting {
        let r = upload.join().unwrap();
        assert!(matches!(r.status, 201 | 503 | 504), "{r:?}");
    }
}

#[test]
fn a_node_started_before_its_bootstrap_peer_joins_once_it_answers() {
    let ports = [free_port(), free_port()];
    let single = ["--replicas".to_string(), "1".into()];
    let early = start(
        &temp_dir("early"),
        &[p2p_flags(ports[1], Some(ports[0])), single.to_vec()].concat(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let late = start(
        &temp_dir("late"),
        &[p2p_flags(ports[0], None), single.to_vec()].concat(),
    );
    wait_for(
        "the early node is connected to its bootstrap peer",
        WAIT,
        || {
            metric(early.admin, "ron_dht_peers_connected") >= 1
                && metric(late.admin, "ron_dht_routing_table_peers") >= 1
        },
    );
}

#[test]
fn p2p_settings_are_checked_before_the_node_starts() {
    let dir = temp_dir("dht-refused");
    let out = run_ron(&dir, &["--peer", "127.0.0.1:4001"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("peers: a node with peers needs its own p2p listener (--p2p HOST:PORT)"),
        "{stderr}"
    );
    let out = run_ron(
        &dir,
        &["--p2p", "127.0.0.1:0", "--peer", "peer.example:4001"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("peers: \"peer.example:4001\" is not HOST:PORT with an IP address"),
        "{stderr}"
    );
    let refusals: [(&[&str], &str); 3] = [
        (
            &["--replicas", "2"],
            "replicas: 2 copies need other nodes: join a network with --p2p HOST:PORT, or set replicas = 1",
        ),
        (
            &["--p2p", "127.0.0.1:0", "--replicas", "17"],
            "replicas: 17 copies; at most 16",
        ),
        (
            &["--p2p", "127.0.0.1:0", "--zone", "eu west"],
            "zone: \"eu west\" is not a zone name (1 to 64 of A-Z a-z 0-9 . _ -)",
        ),
    ];
    for (args, expected) in refusals {
        let out = run_ron(&dir, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn objects_stored_before_p2p_was_turned_on_are_announced_at_start() {
    let dirs: Vec<_> = (0..2).map(|i| temp_dir(&format!("dht-late-{i}"))).collect();
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let mut old = Node::start(&dirs[0], &["--shards", "1"]);
    let addrs: Vec<Address> = (0..3)
        .map(|i| upload(&old, &bytes(30 + i, 5_000)))
        .collect();
    old.stop();
    let mut seed = start(&dirs[1], &p2p_flags(ports[1], None));
    old.restart(
        &p2p_flags(ports[0], Some(ports[1]))
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let old_id = node_id(&old);
    for addr in &addrs {
        wait_for(
            "the seed resolves an object stored before --p2p",
            WAIT,
            || resolves_to(&seed, addr, &old_id).is_some(),
        );
    }
    assert_eq!(metric(old.admin, "ron_dht_provided_keys"), 3);
    // The seed may hold a record (an early provide) before its answer reaches the old
    // node, which marks a key published only then: stopped sooner, it would rightly
    // publish the key again at its next start.
    wait_for("the old node to mark its keys published", WAIT, || {
        metric(old.admin, "ron_dht_keys_published_total") >= 3
    });
    // A second start announces them again; the DHT keeps what it provides already.
    old.stop();
    old.restart(
        &p2p_flags(ports[0], Some(ports[1]))
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    // Published within 12 h already: the walk's keys wait for the sweep, none goes out
    // again at once (the DHT's tick takes the walk in well within this pause).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(metric(old.admin, "ron_dht_provided_keys"), 3);
    assert_eq!(metric(old.admin, "ron_dht_keys_published_total"), 0);
    seed.stop();
    old.stop();
}

#[test]
fn placement_copies_are_paced_at_replication_bytes_per_s() {
    const RATE: u64 = 256 * 1024;
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let nodes: Vec<Node> = (0..2)
        .map(|i| {
            let mut flags = zoned_flags(&ports, i, format!("z{i}"), 2);
            if i == 1 {
                flags.extend(["--replication-bytes-per-s".into(), RATE.to_string()]);
            }
            start(&temp_dir(&format!("paced-{i}")), &flags)
        })
        .collect();
    wait_for("A knows B", WAIT, || {
        metric(nodes[0].admin, "ron_dht_routing_table_peers") >= 1
    });
    // 1 MiB: B may take the first group at once, and each of the other 15 only once the
    // ones before it are paid for at 256 KiB/s — 3.75 s at least.
    let data = bytes(61, 1 << 20);
    let started = std::time::Instant::now();
    let r = put(nodes[0].http, "/o?copies=2", &data, "");
    let took = started.elapsed();
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["copies"], 2);
    assert!(
        took >= Duration::from_millis(3_700),
        "B pulled 1 MiB in {took:?}"
    );
    assert_eq!(
        metric(nodes[1].admin, "ron_replication_bytes_total"),
        1 << 20
    );
    assert!(holds(&nodes[1], &Address::of(&data)));
}
