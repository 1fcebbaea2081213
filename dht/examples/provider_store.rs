//! Measures the provider store with N provided keys (docs/PERF.md "DHT"):
//! `cargo run --release -p ron-dht --example provider_store -- 1000000 /path/on/the/disk`
//! Prints the time to provide them (batches of 4,096, one commit each), to reopen the
//! store, to look one key up after the reopen, and to walk every key in distance order
//! (the reprovide sweep's read), the database's size on disk, and the process's peak
//! resident memory.

use std::time::Instant;

use libp2p::kad::RecordKey;
use libp2p::PeerId;
use ron_dht::store::{ProviderStore, StoreLimits};

const BATCH: u64 = 4_096;

fn key(n: u64) -> RecordKey {
    let mut bytes = vec![0x1e, 0x20];
    bytes.extend_from_slice(blake3_like(n).as_slice());
    RecordKey::new(&bytes)
}

/// 32 well-spread bytes per n (what a BLAKE3 address looks like to the store).
fn blake3_like(n: u64) -> Vec<u8> {
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5851_f42d_4c95_7f2d;
    (0..4)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_be_bytes()
        })
        .collect()
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let count: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let root = args.next().map_or_else(std::env::temp_dir, Into::into);
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
