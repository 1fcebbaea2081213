//! The disk floor of copies kept for others (`copies_disk_free_percent_min`), with real
//! `ron serve` processes: a node whose floor its disk cannot meet (100 %: no filesystem is
//! all free) refuses every copy the placement asks of it — `failed`, counted, the asker's
//! `PUT ?copies=2` answered with the one copy there is — and still takes its own
//! uploads; a node with the default floor on the same disk takes the copy.

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
    let asker = start("floor-asker", &flags(ports[0], None, "a", "5"));
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
    let default_floor = flags(ports[1], Some(ports[0]), "b", "5");
    full.stop();
    full.restart(&default_floor.iter().map(String::as_str).collect::<Vec<_>>());
    wait_for("the restarted node knows the asker", WAIT, || {
        metric(full.admin, "ron_dht_routing_table_peers") >= 1
    });
    let body = bytes(5, 100_000);
    let r = put(asker.http, "/o?copies=2", &body, "");
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["copies"], 2, "{r:?}");
    assert_eq!(metric(full.admin, "ron_replication_pulls_no_room_total"), 0);
    assert_eq!(metric(full.admin, "ron_replication_pulls_total"), 1);
}
