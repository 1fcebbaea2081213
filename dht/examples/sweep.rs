//! Measures the reprovide sweep (docs/PERF.md "DHT"): one node providing N keys, none of
//! them published yet (what a node finds after a restart 12 h after its last pass), in
//! a cluster of five DHT threads on loopback:
//! `cargo run --release -p ron-dht --example sweep -- 1000000 /path/on/the/disk`
//! Prints the wall time until the sweep has published every key to the closest peers,
//! the lookups it took (one per batch), the records the other nodes hold, and the
//! process's peak resident memory (all five nodes are in this process).

mod common;

use std::time::{Duration, Instant};

use common::{key, peak_rss_kib};
use libp2p::kad::RecordKey;
use ron_dht::node::{parse_peer, spawn, DhtConfig, DhtThread};
use ron_dht::store::{ProviderStore, StoreLimits};

const BATCH: u64 = 4_096;

fn node(dir: &std::path::Path, peer: Option<std::net::SocketAddr>) -> DhtThread {
    spawn(DhtConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        peers: peer
            .map(|p| parse_peer(&p.to_string()).unwrap())
            .into_iter()
            .collect(),
        oap: "127.0.0.1:9444".parse().unwrap(),
        zone: String::new(),
        replicas: 1,
        peer_dead: std::time::Duration::ZERO,
        pulls: None,
        limits: StoreLimits::default(),
        network_key: None,
    })
    .unwrap()
}

fn main() {
    let (count, root) = common::args();
    let root = root.join(format!("ron-sweep-{}", std::process::id()));
    let dirs: Vec<_> = (0..5).map(|i| root.join(format!("node{i}"))).collect();
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    // The providing node's keys, stored before it starts: never published.
    let local = ron_dht::identity::load_or_create(&dirs[0])
        .unwrap()
        .public()
        .to_peer_id();
    {
        let mut store =
            ProviderStore::open(&dirs[0].join("dht"), local, StoreLimits::default()).unwrap();
        let mut n = 0;
        while n < count {
            let batch: Vec<RecordKey> = (n..(n + BATCH).min(count)).map(key).collect();
            store.provide(&batch).unwrap();
            n += BATCH;
        }
    }
    let seed = node(&dirs[1], None);
    let others: Vec<DhtThread> = dirs[2..]
        .iter()
        .map(|d| node(d, Some(seed.listen)))
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let provider = node(&dirs[0], Some(seed.listen));
    let m = &provider.client.metrics;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    while load(&m.keys_published_total) < count {
        assert!(
            started.elapsed() < Duration::from_secs(3_600),
            "not published within an hour: {} of {count}",
            load(&m.keys_published_total)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let wall_s = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let held: Vec<u64> = std::iter::once(&seed)
        .chain(others.iter())
        .map(|n| load(&n.client.metrics.provider_records))
        .collect();
    println!(
        "keys {count}: sweep published all in {wall_s:.1} s ({:.0} keys/s), \
         batch failures {}, routing table {}, records held by the others {held:?}, \
         peak RSS (5 nodes) {:.1} MiB",
        count as f64 / wall_s,
        load(&m.publish_failures_total),
        load(&m.routing_table_peers),
        peak_rss_kib() as f64 / 1024.0,
    );
    provider.stop();
    seed.stop();
    for n in others {
        n.stop();
    }
    std::fs::remove_dir_all(&root).unwrap();
}
