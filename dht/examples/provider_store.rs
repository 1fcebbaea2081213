//! Measures the provider store with N provided keys (docs/PERF.md "DHT"):
//! `cargo run --release -p ron-dht --example provider_store -- 1000000 /path/on/the/disk`
//! Prints the time to provide them (batches of 4,096, one commit each), to reopen the
//! store, to look one key up after the reopen, and to walk every key in distance order
//! (the reprovide sweep's read), the database's size on disk, and the process's peak
//! resident memory.

mod common;

use std::time::Instant;

use common::{key, peak_rss_kib};
use libp2p::kad::RecordKey;
use libp2p::PeerId;
use ron_dht::store::{ProviderStore, StoreLimits};

const BATCH: u64 = 4_096;

fn main() {
    let (count, root) = common::args();
    let dir = root.join(format!("ron-provider-store-{}", std::process::id()));
    let local = PeerId::random();
    let started = Instant::now();
    {
        let mut store = ProviderStore::open(&dir, local, StoreLimits::default()).unwrap();
        let mut n = 0;
        while n < count {
            let batch: Vec<RecordKey> = (n..(n + BATCH).min(count)).map(key).collect();
            store.provide(&batch).unwrap();
            n += BATCH;
        }
    }
    let provide_s = started.elapsed().as_secs_f64();
    let reopened = Instant::now();
    let store = ProviderStore::open(&dir, local, StoreLimits::default()).unwrap();
    let reopen_ms = reopened.elapsed().as_secs_f64() * 1e3;
    let looked = Instant::now();
    assert!(store.is_provided(&key(count / 2)).unwrap());
    let lookup_us = looked.elapsed().as_secs_f64() * 1e6;
    assert_eq!(store.provided_count().unwrap(), count);
    let walked = Instant::now();
    let (mut from, mut seen) = ([0u8; 32], 0u64);
    loop {
        let region = store.provided_from(&from, 65_536).unwrap();
        seen += region.len() as u64;
        match region.last() {
            Some(last) if region.len() == 65_536 => {
                from = last.distance_key;
                seen -= 1;
            }
            _ => break,
        }
    }
    let walk_s = walked.elapsed().as_secs_f64();
    let disk = std::fs::metadata(dir.join("data.mdb")).map_or(0, |m| m.len());
    println!(
        "keys {count}: provide {provide_s:.2} s ({:.0} keys/s), reopen {reopen_ms:.2} ms, \
         first lookup {lookup_us:.0} us, sweep walk {walk_s:.2} s ({seen} keys), \
         data.mdb {:.1} MiB ({:.0} B/key), peak RSS {:.1} MiB",
        count as f64 / provide_s,
        disk as f64 / 1048576.0,
        disk as f64 / count as f64,
        peak_rss_kib() as f64 / 1024.0,
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
