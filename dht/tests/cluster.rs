//! Five DHT threads on loopback in one process: an announced object is resolved by
//! every other node with the announcer's node id and OAP address; node ids and records
//! survive a restart. Bounded: every wait gives up after WAIT.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ron_dht::node::{self, DhtConfig, DhtThread, STOP_WAIT_MS};
use ron_dht::store::{ProviderStore, StoreLimits};
use ron_link::dht::Provider;

const WAIT: Duration = Duration::from_secs(30);

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ron-dht-cluster-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn start(dir: &Path, oap_port: u16, peers: &[SocketAddr]) -> DhtThread {
    node::spawn(DhtConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        peers: peers
            .iter()
            .map(|p| node::parse_peer(&p.to_string()).unwrap())
            .collect(),
        oap: SocketAddr::from(([127, 0, 0, 1], oap_port)),
        limits: StoreLimits::default(),
    })
    .unwrap()
}

fn resolve_until(
    node: &DhtThread,
    addr: [u8; 32],
    wanted: impl Fn(&[Provider]) -> bool,
) -> Vec<Provider> {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = node.client.resolve(addr, 16, 2_000).unwrap();
        if wanted(&found) || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn five_nodes_announce_resolve_and_keep_records_across_a_restart() {
    let dirs: Vec<PathBuf> = (0..5).map(|i| scratch(&format!("n{i}"))).collect();
    let a = start(&dirs[0], 7000, &[]);
    let mut nodes = vec![a];
    for (i, dir) in dirs.iter().enumerate().skip(1) {
        let bootstrap = nodes[0].listen;
        nodes.push(start(dir, 7000 + i as u16, &[bootstrap]));
    }
    let a_id = nodes[0].client.node_id.to_string();
    let object = [0x42u8; 32];
    nodes[0].client.announce(vec![object]);
    wait_for("A to publish", || {
        nodes[0]
            .client
            .metrics
            .keys_published_total
            .load(Ordering::Relaxed)
            >= 1
    });

    for (i, node) in nodes.iter().enumerate().skip(1) {
        let found = resolve_until(node, object, |p| {
            p.iter().any(|p| p.node_id == a_id && p.oap.is_some())
        });
        let from_a = found.iter().find(|p| p.node_id == a_id);
        assert_eq!(
            from_a.map(|p| (p.oap, p.local)),
            Some((Some("127.0.0.1:7000".parse().unwrap()), false)),
            "node {i} found {found:?}"
        );
    }
    let own = nodes[0].client.resolve(object, 16, 2_000).unwrap();
    assert!(own.iter().any(|p| p.local && p.node_id == a_id), "{own:?}");
    let unknown = nodes[3].client.resolve([0x43; 32], 16, 2_000).unwrap();
    assert!(unknown.is_empty(), "{unknown:?}");
    let m = &nodes[3].client.metrics;
    assert!(m.missing_records_total.load(Ordering::Relaxed) >= 1);
    assert!(m.lookups_total.load(Ordering::Relaxed) >= 2);

    // A restarts: same node id, still provides the object; B restarts and still holds
    // A's record (E resolves through whoever is up).
    let a = nodes.remove(0);
    let a_listen = a.listen;
    a.stop();
    let b = nodes.remove(0);
    wait_for("B to hold a record", || {
        b.client.metrics.provider_records.load(Ordering::Relaxed) >= 1
    });
    b.stop();
    let b = start(&dirs[1], 7001, &[nodes[0].listen]);
    wait_for("B's records after its restart", || {
        b.client.metrics.provider_records.load(Ordering::Relaxed) >= 1
    });
    let a = start(&dirs[0], 7000, &[nodes[0].listen]);
    assert_eq!(
        a.client.node_id.to_string(),
        a_id,
        "the node key survived the restart"
    );
    assert_ne!(a.listen, a_listen);
    wait_for("A's provided keys after its restart", || {
        a.client.metrics.provided_keys.load(Ordering::Relaxed) == 1
    });
    let found = resolve_until(&nodes[2], object, |p| p.iter().any(|p| p.node_id == a_id));
    assert!(found.iter().any(|p| p.node_id == a_id), "{found:?}");

    a.stop();
    b.stop();
    for node in nodes {
        node.stop();
    }
    for dir in dirs {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn a_withdrawn_key_is_no_longer_provided_nor_answered_as_ours() {
    let dir = scratch("withdraw");
    let node = start(&dir, 7100, &[]);
    let id = node.client.node_id.to_string();
    let (kept, evicted) = ([0x51u8; 32], [0x52u8; 32]);
    node.client.announce(vec![kept, evicted]);
    let provided = || node.client.metrics.provided_keys.load(Ordering::Relaxed);
    wait_for("both keys provided", || provided() == 2);
    assert_eq!(node.client.try_withdraw(vec![evicted]), Some(Ok(())));
    wait_for("the withdrawn key dropped", || provided() == 1);
    let own = |key| {
        let found = node.client.resolve(key, 16, 2_000).unwrap();
        found.iter().any(|p| p.local && p.node_id == id)
    };
    assert!(own(kept));
    assert!(!own(evicted), "no longer answered as ours");
    // Announced again (fetched again): provided again, in order.
    node.client.announce(vec![evicted]);
    wait_for("the key provided again", || provided() == 2);
    node.stop();
    std::fs::remove_dir_all(dir).unwrap();
}

/// The thread ended (stopped or dropped): its provider store is closed, so it opens
/// here (LMDB refuses a second open in one process), with the keys it committed.
fn provided_keys_after_the_thread(dir: &Path) -> u64 {
    let local = ron_dht::identity::load_or_create(dir)
        .unwrap()
        .public()
        .to_peer_id();
    let store = ProviderStore::open(&dir.join("dht"), local, StoreLimits::default()).unwrap();
    store.provided_count().unwrap()
}

#[test]
fn stop_and_drop_end_the_thread_within_the_bound() {
    let dir = scratch("stop");
    let node = start(&dir, 7200, &[]);
    node.client.announce(vec![[0x61; 32]]);
    wait_for("the key provided", || {
        node.client.metrics.provided_keys.load(Ordering::Relaxed) == 1
    });
    let stopping = Instant::now();
    node.stop();
    assert!(stopping.elapsed() < Duration::from_millis(STOP_WAIT_MS));
    assert_eq!(provided_keys_after_the_thread(&dir), 1);
    let node = start(&dir, 7200, &[]);
    let stopping = Instant::now();
    drop(node);
    assert!(stopping.elapsed() < Duration::from_millis(STOP_WAIT_MS));
    assert_eq!(provided_keys_after_the_thread(&dir), 1);
    std::fs::remove_dir_all(dir).unwrap();
}
