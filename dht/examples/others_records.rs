//! Measures the provider store taking records of others (docs/PERF.md "DHT"), in
//! batches of 4,096 as a peer's `/ron/provide/2` sends them, the store capped at COUNT:
//! `cargo run --release -p ron-dht --example others_records -- 1000000 /path/on/the/disk`
//! 1. flood: one host fills the store with made-up providers (a fresh peer id a batch);
//! 2. honest: 16 other hosts send 4 batches each, of other keys.
//!
//! Prints per phase the median and slowest batch (ms) and the records stored, then the
//! database's size on disk and the process's peak resident memory.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{key, peak_rss_kib};
use libp2p::kad::ProviderRecord;
use libp2p::PeerId;
use ron_dht::store::{ProviderStore, StoreLimits};

const BATCH: u64 = 4_096;
const HOSTS: u64 = 16;
const HONEST_BATCHES: u64 = 4;

/// One batch of `BATCH` records for keys from `first`, from `provider` at `ip`: how long
/// it took and how many were stored.
fn send(store: &mut ProviderStore, provider: PeerId, ip: IpAddr, first: u64) -> (Duration, u64) {
    store.peer_connected(provider, ip);
    let expires = Some(Instant::now() + Duration::from_secs(24 * 3_600));
    let records = (first..first + BATCH)
        .map(|n| ProviderRecord {
            key: key(n),
            provider,
            expires,
            addresses: vec![format!("/ip4/{ip}/tcp/4001").parse().unwrap()],
        })
        .collect();
    let started = Instant::now();
    let stored = store.add_providers(records);
    // What the DHT thread's next tick does.
    store.flush().unwrap();
    (started.elapsed(), stored as u64)
}

/// A phase's batches: median and slowest (ms), records stored.
fn report(phase: &str, mut batches: Vec<(Duration, u64)>) {
    batches.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let stored: u64 = batches.iter().map(|b| b.1).sum();
    println!(
        "{phase}: {} batches of {BATCH}, median {:.1} ms, slowest {:.1} ms, {stored} stored",
        batches.len(),
        ms(batches[batches.len() / 2].0),
        ms(batches[batches.len() - 1].0),
    );
}

fn main() {
    let (count, root) = common::args();
    let dir = root.join(format!("ron-others-records-{}", std::process::id()));
    let limits = StoreLimits {
        provider_records_max: count,
        ..StoreLimits::default()
    };
    let mut store = ProviderStore::open(&dir, PeerId::random(), limits).unwrap();
    let flooder = IpAddr::from([192, 0, 2, 66]);
    let flood = (0..count.div_ceil(BATCH))
        .map(|b| send(&mut store, PeerId::random(), flooder, b * BATCH))
        .collect();
    report("flood", flood);
    let mut honest = Vec::new();
    for h in 0..HOSTS {
        let (peer, ip) = (PeerId::random(), IpAddr::from([10, 0, 0, h as u8 + 1]));
        for b in 0..HONEST_BATCHES {
            let first = (1 << 40) + (h * HONEST_BATCHES + b) * BATCH;
            honest.push(send(&mut store, peer, ip, first));
        }
    }
    report("honest", honest);
    drop(store);
    let disk = std::fs::metadata(dir.join("data.mdb")).map_or(0, |m| m.len());
    println!(
        "records of others {count}: data.mdb {:.1} MiB ({:.0} B/record), peak RSS {:.1} MiB",
        disk as f64 / 1048576.0,
        disk as f64 / count as f64,
        peak_rss_kib() as f64 / 1024.0,
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
