//! A private network (`--p2p-network-key`, libp2p pnet): real `ron serve` processes, two
//! holding one key, one holding none and one holding another, all bootstrapping from
//! the first. The two with the key form a DHT and resolve each other's objects; the
//! others never get a connection past its first bytes, so they are in no routing table
//! and resolve nothing (and could ask no node for copies, which takes a connection).
//! A key file that is not one refuses the start, naming the file. The js-libp2p side of
//! the same key format: `libp2p_interop.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(30);
/// libp2p-pnet's test key, whose go-libp2p fingerprint is known.
const KEY_HEX: &str = "6189c5cf0b87fb800c1a9feeda73c6ab5e998db48fb9e6a978575c770ceef683";
const KEY_FINGERPRINT: &str = "45fc986bbc9388a11d939df26f730f0c";

fn key_file(dir: &Path, name: &str, hex: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}\n")).unwrap();
    path
}

fn start(name: &str, p2p: u16, bootstrap: Option<u16>, key: Option<&Path>) -> Node {
    let mut flags = vec![
        "--shards".to_string(),
        "1".into(),
        "--replicas".into(),
        "1".into(),
        "--p2p".into(),
        format!("127.0.0.1:{p2p}"),
    ];
    if let Some(port) = bootstrap {
        flags.extend(["--peer".into(), format!("127.0.0.1:{port}")]);
    }
    if let Some(key) = key {
        flags.extend(["--p2p-network-key".into(), key.display().to_string()]);
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Node::start(&temp_dir(name), &flags)
}

fn provider_ids(n: &Node, addr: &Address) -> Vec<String> {
    let r = get(n.admin, &format!("/resolve?hash={addr}")).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["providers"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["node_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn only_nodes_holding_the_network_key_join_its_dht() {
    let keys = temp_dir("pnet-keys");
    let key = key_file(&keys, "swarm.key", KEY_HEX);
    let other_key = key_file(&keys, "other.key", &KEY_HEX.replace("6189", "7189"));
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let first = start("pnet-first", ports[0], None, Some(&key));
    let member = start("pnet-member", ports[1], Some(ports[0]), Some(&key));
    let keyless = start("pnet-keyless", ports[2], Some(ports[0]), None);
    let stranger = start("pnet-other-key", ports[3], Some(ports[0]), Some(&other_key));

    for n in [&first, &member] {
        wait_for(
            "the two nodes holding the key know each other",
            WAIT,
            || metric(n.admin, "ron_dht_routing_table_peers") >= 1,
        );
    }
    let banner = std::fs::read_to_string(first.log_dir.join("stdout")).unwrap();
    assert!(
        banner.contains("; a private network: only peers holding its key)"),
        "{banner}"
    );
    let log = std::fs::read_to_string(first.log_dir.join("stderr")).unwrap();
    assert!(
        log.contains(&format!("network_key_fingerprint={KEY_FINGERPRINT}")),
        "{log}"
    );
    let stored = upload(&member, &bytes(5, 20_000));
    let member_id = node_id(&member);
    wait_for("the first node resolves the member's object", WAIT, || {
        provider_ids(&first, &stored).contains(&member_id)
    });

    // Both outsiders dialed the first node, and failed.
    for n in [&keyless, &stranger] {
        wait_for("an outsider's bootstrap dial fails", WAIT, || {
            try_metric(n.admin, "ron_dht_dial_failures_total").unwrap_or(0) >= 1
        });
    }
    for n in [&first, &member] {
        assert_eq!(metric(n.admin, "ron_dht_routing_table_peers"), 1);
        assert_eq!(metric(n.admin, "ron_dht_peers_connected"), 1);
    }
    for n in [&keyless, &stranger] {
        assert_eq!(metric(n.admin, "ron_dht_routing_table_peers"), 0);
        assert_eq!(metric(n.admin, "ron_dht_peers_connected"), 0);
        assert!(provider_ids(n, &stored).is_empty());
    }
}

#[test]
fn a_network_key_file_that_is_not_one_refuses_the_start() {
    let dir = temp_dir("pnet-bad-key");
    let short = key_file(&dir, "short.key", &KEY_HEX[..60]);
    let p2p = format!("127.0.0.1:{}", free_port());
    let shown = short.display().to_string();
    let out = run_ron(
        &dir.join("data"),
        &["--p2p", &p2p, "--p2p-network-key", &shown],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("dht: network key {shown}: ")) && err.contains("64 hex digits"),
        "{err}"
    );
    let out = run_ron(&dir.join("data"), &["--p2p-network-key", &shown]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "p2p_network_key_file: a private network's key needs a network: --p2p HOST:PORT"
        ),
        "{err}"
    );
}
