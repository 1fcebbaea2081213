//! The disk floor of copies kept for others (`copies_disk_free_percent_min`), with real
//! `ron serve` processes: a node whose floor its disk cannot meet (100 %: no filesystem is
//! all free) refuses every copy the placement asks of it — `failed`, counted, the asker's
//! `PUT ?copies=2` answered with the one copy there is — and still takes its own
//! uploads; a node with the default floor on the same disk takes the copy. And a peer
//! asking for copies of addresses its OAP/1 port does not serve costs no DHT lookups.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(30);

fn flags(p2p: u16, bootstrap: Option<u16>, zone: &str, floor: &str) -> Vec<String> {
    let mut flags = vec![
        "--shards".to_string(),
        "1".into(),
        "--replicas".into(),
        "2".into(),
        "--zone".into(),
        zone.into(),
        "--p2p".into(),
        format!("127.0.0.1:{p2p}"),
        "--copies-disk-free-percent-min".into(),
        floor.into(),
    ];
    if let Some(port) = bootstrap {
        flags.extend(["--peer".into(), format!("127.0.0.1:{port}")]);
    }
    flags
}

fn start(name: &str, flags: &[String]) -> Node {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Node::start(&temp_dir(name), &flags)
}

#[test]
fn a_node_below_its_disk_floor_keeps_no_copies_for_others_but_takes_its_own_uploads() {
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let asker_flags = flags(ports[0], None, "a", "5");
    let mut asker = start("floor-asker", &asker_flags);
    let mut full = start("floor-full", &flags(ports[1], Some(ports[0]), "b", "100"));
    for n in [&asker, &full] {
        wait_for("the two nodes know each other", WAIT, || {
            metric(n.admin, "ron_dht_routing_table_peers") >= 1
        });
    }

    let body = bytes(3, 100_000);
    let r = put(asker.http, "/o?copies=2", &body, "");
    assert_eq!(r.status, 503, "one copy only: {r:?}");
    let message = r.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("1 of the 2 copies"), "{message}");
    assert_eq!(metric(full.admin, "ron_replication_pulls_no_room_total"), 1);
    assert_eq!(metric(full.admin, "ron_replication_pulls_total"), 0);
    assert_eq!(
        metric(
            asker.admin,
            "ron_replication_copies_total{outcome=\"no_room\"}"
        ),
        1
    );
    let left_out = "ron_dht_peers_left_out{reason=\"no_room\"}";
    assert_eq!(metric(asker.admin, left_out), 1);
    let log = std::fs::read_to_string(full.log_dir.join("stderr")).unwrap();
    assert!(
        log.contains(
            "below copies_disk_free_percent_min (100 %): no new copies kept for other nodes"
        ),
        "{log}"
    );
    let addr = Address::of(&body);
    let r = get(full.http, &format!("/o/{addr}")).unwrap();
    assert_eq!(
        r.status, 200,
        "read through from the asker, not kept: {r:?}"
    );

    // Its own uploads are not copies for others.
    let own = bytes(4, 50_000);
    assert_eq!(put(full.http, "/o", &own, "").status, 201);

    // The same node restarted with the default floor on the same disk: the copy is taken.
    // (The asker left it out of its placements when it refused, for an hour, in memory:
    // restarted too, it names it again.)
    let default_floor = flags(ports[1], Some(ports[0]), "b", "5");
    full.stop();
    asker.stop();
    asker.restart(&asker_flags.iter().map(String::as_str).collect::<Vec<_>>());
    full.restart(&default_floor.iter().map(String::as_str).collect::<Vec<_>>());
    for n in [&asker, &full] {
        wait_for("the restarted nodes know each other", WAIT, || {
            metric(n.admin, "ron_dht_routing_table_peers") >= 1
        });
    }
    let body = bytes(5, 100_000);
    let r = put(asker.http, "/o?copies=2", &body, "");
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["copies"], 2, "{r:?}");
    assert_eq!(metric(full.admin, "ron_replication_pulls_no_room_total"), 0);
    assert_eq!(metric(full.admin, "ron_replication_pulls_total"), 1);
}

/// Three nodes in three zones, two copies an object, one node below its floor: an object
/// whose placement named the full node stayed one copy short for good (it refused at
/// every pass, and nobody else was asked). The node that asked leaves it out of its
/// placements once it refuses, and the other node with room takes the copy. Objects
/// uploaded to A: a placement of {A, full} happens for about a third of them.
#[test]
fn a_holder_below_its_floor_is_replaced_in_the_placement_by_one_with_room() {
    const OBJECTS: u64 = 16;
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let node = |i: usize, zone: &str, floor: &str| {
        let mut flags = flags(ports[i], (i > 0).then_some(ports[0]), zone, floor);
        flags.extend(["--replication-interval-ms".into(), "1000".into()]);
        start(&format!("floor-replaced-{i}"), &flags)
    };
    let nodes = [node(0, "a", "5"), node(1, "b", "5"), node(2, "c", "100")];
    for n in &nodes {
        wait_for("every node knows the two others", WAIT, || {
            metric(n.admin, "ron_dht_routing_table_peers") >= 2
        });
    }
    let objects: Vec<Address> = (0..OBJECTS)
        .map(|i| upload(&nodes[0], &bytes(40 + i, 20_000)))
        .collect();
    wait_for(
        "every object on both nodes with room",
        Duration::from_secs(60),
        || {
            objects
                .iter()
                .all(|a| holds(&nodes[0], a) && holds(&nodes[1], a))
        },
    );
    assert!(
        metric(
            nodes[0].admin,
            "ron_replication_copies_total{outcome=\"no_room\"}"
        ) >= 1,
        "the full node was asked and refused"
    );
    assert_eq!(
        metric(nodes[0].admin, "ron_dht_peers_left_out{reason=\"no_room\"}"),
        1
    );
    assert_eq!(metric(nodes[2].admin, "ron_replication_pulls_total"), 0);
    wait_for("A's sweep finds nothing short", WAIT, || {
        metric(nodes[0].admin, "ron_objects_under_replicated") == 0
    });
}

/// A peer asks a node for copies of made-up addresses, its OAP/1 port serving nothing:
/// each pull fails at that source and goes no further. Before, each went on to a whole
/// DHT lookup — a few requests from one host held every lookup slot (256), and clients'
/// read-through misses were refused `too many lookups`. The asker is a ron DHT node of
/// the test's own (not a `ron serve`), so it can name a port nothing listens on.
#[test]
fn copies_asked_of_addresses_the_asker_does_not_serve_cost_no_lookups() {
    let p2p = free_port();
    let n = start("floor-asked", &flags(p2p, None, "z1", "0"));
    let dir = temp_dir("floor-asker");
    let nothing_listens = free_port();
    let asker = ron_dht::node::spawn(ron_dht::node::DhtConfig {
        data_dir: dir.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        peers: vec![ron_dht::node::parse_peer(&format!("127.0.0.1:{p2p}")).unwrap()],
        oap: std::net::SocketAddr::from(([127, 0, 0, 1], nothing_listens)),
        zone: String::new(),
        replicas: 2,
        peer_dead: Duration::ZERO,
        pulls: None,
        limits: ron_dht::store::StoreLimits::default(),
        network_key: None,
    })
    .unwrap();
    let node_id = get(n.admin, "/admin/stats").unwrap().json()["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    let connected = std::time::Instant::now() + WAIT;
    while asker
        .client
        .metrics
        .routing_table_peers
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            std::time::Instant::now() < connected,
            "the asker never joined"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let lookups_before = metric(n.admin, "ron_dht_lookups_total");
    let asked: Vec<_> = (0..16u8)
        .map(|i| {
            let client = asker.client.clone();
            let to = vec![node_id.clone()];
            std::thread::spawn(move || client.copy_to([0xa0 ^ i; 32], to, 20_000))
        })
        .collect();
    let mut failed = 0;
    for answer in asked {
        let made = answer.join().unwrap();
        failed += usize::from(made.is_ok_and(|made| made.held_by.is_empty()));
    }
    assert_eq!(
        failed, 16,
        "answered, and no copy of an address nobody serves"
    );
    assert_eq!(
        metric(n.admin, "ron_replication_accepted_total"),
        16,
        "every address asked was taken to its shard"
    );
    assert_eq!(
        metric(n.admin, "ron_replication_pulls_total"),
        0,
        "no copy pulled"
    );
    let lookups = metric(n.admin, "ron_dht_lookups_total") - lookups_before;
    assert!(
        lookups < 4,
        "{lookups} DHT lookups for 16 made-up addresses"
    );
    asker.stop();
    let _ = std::fs::remove_dir_all(dir);
}
