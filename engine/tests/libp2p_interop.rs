//! Interop with another libp2p implementation: a stock js-libp2p peer
//! (`interop/js-libp2p/kad_peer.mjs`, the npm packages pinned in its `package-lock.json`)
//! uses the DHT of three real `ron serve` processes. It proves that a standard libp2p
//! peer (1) connects to a ron node over TCP + noise + yamux, runs identify and ping
//! against it and puts it in its Kademlia routing table (`/ron/kad/1.0.0`), and ron
//! puts the peer in its own; (2) finds, by the CID naming an object's BLAKE3 multihash,
//! the ron node that stores the object; (3) provides a key that a ron node it never
//! dialed then resolves to the peer's id (`/resolve`, with no OAP address: it is not a
//! ron node). `docs/libp2p-clients.md` is the client's side of this. A second test
//! makes a private network's key with js-libp2p's own generator (`@libp2p/pnet`): a JS
//! peer holding it joins ron nodes started with `--p2p-network-key` and finds their
//! object; one without it cannot even dial them.
//!
//! Needs Node.js ≥ 20 and npm (`#[ignore]`d with that reason; `scripts/test-all.sh` runs
//! it); when
//! `interop/js-libp2p/node_modules` is missing or older than the lock file, the test
//! runs `npm ci` there first.

mod common;

use std::time::{Duration, Instant};

use common::js::{prepare_js, JsPeer};
use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
/// The JS peer's hard limit: it exits by itself this long after it started.
const JS_TIMEOUT_S: u64 = 120;
/// How long the JS peer may take to report all its steps (each step has its own 20 s).
const JS_STEPS: Duration = Duration::from_secs(90);
/// An address the JS peer claims in its provider records and identify answers but
/// does not connect from (TEST-NET-1).
const CLAIMED_IP: &str = "192.0.2.7";

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
#[ignore = "needs Node.js >= 20 and npm: run by scripts/test-all.sh"]
fn a_js_libp2p_peer_finds_ron_providers_and_provides_to_ron() {
    let started = Instant::now();
    prepare_js();
    let prepared = started.elapsed();

    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let nodes: Vec<Node> = (0..3)
        .map(|i| {
            let mut flags = vec![
                "--shards".to_string(),
                "1".into(),
                "--replicas".into(),
                "1".into(),
                "--p2p".into(),
                format!("127.0.0.1:{}", ports[i]),
            ];
            if i > 0 {
                flags.extend(["--peer".into(), format!("127.0.0.1:{}", ports[0])]);
            }
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            Node::start(&temp_dir(&format!("interop-{i}")), &flags)
        })
        .collect();
    let ids: Vec<String> = nodes.iter().map(node_id).collect();
    for n in &nodes {
        wait_for("every ron node knows the two others", WAIT, || {
            metric(n.admin, "ron_dht_routing_table_peers") >= 2
        });
    }

    // Stored on node 0; the JS peer dials node 1 only, so finding node 0 takes the DHT.
    let stored = upload(&nodes[0], &bytes(7, 50_000));
    wait_for("node 0 publishes the object", WAIT, || {
        try_metric(nodes[0].admin, "ron_dht_keys_published_total").unwrap_or(0) >= 1
    });
    // A key no ron node has: what the JS peer provides.
    let offered = Address::of(format!("provided by js-libp2p, {:?}", Instant::now()).as_bytes());

    let mut js = JsPeer::start(
        "kad_peer.mjs",
        &[
            "--bootstrap".into(),
            format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", ports[1], ids[1]),
            "--find".into(),
            hex(&stored),
            "--provide".into(),
            hex(&offered),
            "--timeout".into(),
            JS_TIMEOUT_S.to_string(),
            // A host it does not connect from: ron must never hand it out.
            "--claim".into(),
            format!("/ip4/{CLAIMED_IP}/tcp/4001"),
        ],
        &nodes[0].log_dir,
    );
    let js_started = Instant::now();
    let deadline = js_started + JS_STEPS;

    // (1) Connected, identified, pinged, in each other's routing tables.
    let js_id = js.step("started", deadline)["peer_id"]
        .as_str()
        .expect("peer_id")
        .to_string();
    assert_eq!(js.step("dialed", deadline)["peer"], ids[1].as_str());
    let identify = js.step("identify", deadline);
    assert_eq!(identify["peer"], ids[1].as_str(), "{identify}");
    assert!(
        identify["agent"]
            .as_str()
            .is_some_and(|a| a.starts_with("ron/")),
        "{identify}"
    );
    assert_eq!(identify["protocol_version"], "/ron/1.0.0", "{identify}");
    assert_eq!(
        identify["kad"], true,
        "identify lists /ron/kad/1.0.0: {identify}"
    );
    let routing = js.step("routing", deadline);
    assert!(routing["peers"].as_u64().unwrap_or(0) >= 1, "{routing}");
    assert!(
        strings(&routing["ron_peers"]).contains(&ids[1]),
        "{routing}"
    );
    let ping = js.step("ping", deadline);
    assert!(ping["rtt_ms"].as_f64().is_some(), "{ping}");

    // (2) The storing node found through node 1.
    let providers = js.step("providers", deadline);
    assert!(
        strings(&providers["found"]).contains(&ids[0]),
        "the JS peer finds node 0 ({}) providing {stored}: {providers}",
        ids[0]
    );

    // (3) Its own record, resolved by node 2 (which it did not dial).
    let provided = js.step("provided", deadline);
    assert_eq!(provided["peer_id"], js_id.as_str(), "{provided}");
    assert!(!strings(&provided["sent_to"]).is_empty(), "{provided}");
    let js_steps = js_started.elapsed();
    // Node 1 took the JS peer into its routing table (identify listed our Kademlia).
    wait_for("node 1 has the JS peer in its routing table", WAIT, || {
        metric(nodes[1].admin, "ron_dht_routing_table_peers") >= 3
    });
    let mut found = None;
    let mut answers = Vec::new();
    wait_for("node 2 resolves the JS peer's key to it", WAIT, || {
        let r = get(nodes[2].admin, &format!("/resolve?hash={offered}")).unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let body = r.json();
        found = body["providers"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["node_id"] == js_id.as_str()))
            .cloned();
        answers.push(body);
        found.is_some()
    });
    let found = found.unwrap();
    // Not a ron node: no greeting, so no OAP address (and no zone) to report.
    assert!(found["oap"].is_null(), "{found}");
    assert_eq!(found["local"], false, "{found}");

    // A second JS peer, dialing node 2 only, finds the first as the key's provider —
    // at the IP its connection came from, never at the host its records and identify
    // answers claim (a provider cannot point others at a third host).
    let other = Address::of(format!("second peer, {:?}", Instant::now()).as_bytes());
    let mut second = JsPeer::start(
        "kad_peer.mjs",
        &[
            "--bootstrap".into(),
            format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", ports[2], ids[2]),
            "--find".into(),
            hex(&offered),
            "--provide".into(),
            hex(&other),
            "--timeout".into(),
            JS_TIMEOUT_S.to_string(),
        ],
        &nodes[2].log_dir,
    );
    let deadline = Instant::now() + JS_STEPS;
    let providers = second.step("providers", deadline);
    assert!(
        strings(&providers["found"]).contains(&js_id),
        "the second JS peer finds the first providing {offered}: {providers}"
    );
    let handed_out = strings(&providers["addrs"][js_id.as_str()]);
    assert!(!handed_out.is_empty(), "{providers}");
    assert!(
        handed_out
            .iter()
            .all(|a| a.starts_with("/ip4/127.0.0.1/tcp/")),
        "a claimed host ({CLAIMED_IP}) handed out: {providers}"
    );
    second.finish(Duration::from_secs(10));
    js.finish(Duration::from_secs(10));
    eprintln!(
        "libp2p interop: npm set-up {prepared:?}, JS steps {js_steps:?}, whole test {:?}; \
         node 2's resolves: {answers:?}",
        started.elapsed()
    );
}

#[test]
#[ignore = "needs Node.js >= 20 and npm: run by scripts/test-all.sh"]
fn a_js_libp2p_peer_holding_a_private_networks_key_joins_ron_nodes_holding_it() {
    prepare_js();
    let keys = temp_dir("interop-pnet-key");
    std::fs::create_dir_all(&keys).unwrap();
    let key = keys.join("swarm.key");
    let generated = std::process::Command::new("node")
        .args([
            "-e",
            "import('@libp2p/pnet').then(({ generateKey }) => generateKey(process.stdout))",
        ])
        .current_dir(common::js::js_dir())
        .output()
        .expect("node runs");
    assert!(generated.status.success(), "{generated:?}");
    std::fs::write(&key, &generated.stdout).unwrap();
    let key_flag = key.display().to_string();

    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let nodes: Vec<Node> = (0..2)
        .map(|i| {
            let p2p = format!("127.0.0.1:{}", ports[i]);
            let bootstrap = format!("127.0.0.1:{}", ports[0]);
            let mut flags = vec!["--shards", "1", "--replicas", "1", "--p2p", &p2p];
            flags.extend(["--p2p-network-key", &key_flag]);
            if i > 0 {
                flags.extend(["--peer", &bootstrap]);
            }
            Node::start(&temp_dir(&format!("interop-pnet-{i}")), &flags)
        })
        .collect();
    let ids: Vec<String> = nodes.iter().map(node_id).collect();
    for n in &nodes {
        wait_for("the two ron nodes know each other", WAIT, || {
            metric(n.admin, "ron_dht_routing_table_peers") >= 1
        });
    }
    let stored = upload(&nodes[0], &bytes(11, 30_000));
    wait_for("node 0 publishes the object", WAIT, || {
        try_metric(nodes[0].admin, "ron_dht_keys_published_total").unwrap_or(0) >= 1
    });
    let args = |with_key: bool| {
        let mut args = vec![
            "--bootstrap".to_string(),
            format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", ports[1], ids[1]),
            "--find".into(),
            hex(&stored),
            "--provide".into(),
            hex(&Address::of(
                format!("pnet {with_key} {:?}", Instant::now()).as_bytes(),
            )),
            "--timeout".into(),
            JS_TIMEOUT_S.to_string(),
        ];
        if with_key {
            args.extend(["--network-key".into(), key_flag.clone()]);
        }
        args
    };

    let mut member = JsPeer::start("kad_peer.mjs", &args(true), &nodes[1].log_dir);
    let deadline = Instant::now() + JS_STEPS;
    assert_eq!(member.step("dialed", deadline)["peer"], ids[1].as_str());
    let providers = member.step("providers", deadline);
    assert!(
        strings(&providers["found"]).contains(&ids[0]),
        "the JS peer holding the key finds node 0 ({}) providing {stored}: {providers}",
        ids[0]
    );
    member.step("provided", deadline);
    member.finish(Duration::from_secs(10));

    // Without the key: its dial of the same node fails in the handshake.
    let mut outsider = JsPeer::start("kad_peer.mjs", &args(false), &nodes[0].log_dir);
    let failed = outsider.failure(Instant::now() + JS_STEPS);
    assert!(outsider.steps_seen("dialed").is_empty(), "{failed}");
    eprintln!("the JS peer without the key: {failed}");
}
