//! The provider store keeps 1,000,000 provided keys across a restart: every key is
//! there after reopening, the sweep's walk sees each exactly once in distance order,
//! and reopening reads nothing per key (LMDB keeps the count). Time and memory are
//! measured by `examples/provider_store.rs` (docs/PERF.md), not asserted here.

use libp2p::kad::RecordKey;
use libp2p::PeerId;
use ron_dht::store::{ProviderStore, StoreLimits};

const KEYS: u32 = 1_000_000;
const BATCH: u32 = 4_096;

fn key(n: u32) -> RecordKey {
    let mut bytes = vec![0x1e, 0x20];
    bytes.extend_from_slice(&[0xab; 28]);
    bytes.extend_from_slice(&n.to_be_bytes());
    RecordKey::new(&bytes)
}

#[test]
fn a_million_provided_keys_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("ron-dht-million-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let local = PeerId::random();
    {
        let mut store = ProviderStore::open(&dir, local, StoreLimits::default()).unwrap();
        let mut start = 0;
        while start < KEYS {
            let batch: Vec<RecordKey> = (start..(start + BATCH).min(KEYS)).map(key).collect();
            assert_eq!(store.provide(&batch).unwrap().len(), batch.len());
            start += BATCH;
        }
    }
    let store = ProviderStore::open(&dir, local, StoreLimits::default()).unwrap();
    assert_eq!(store.provided_count().unwrap(), u64::from(KEYS));
    for n in [0, 1, 499_999, 777_777, KEYS - 1] {
        assert!(store.is_provided(&key(n)).unwrap(), "key {n}");
    }
    assert!(!store.is_provided(&key(KEYS)).unwrap());
    let mut seen = vec![false; KEYS as usize];
    let mut from = [0u8; 32];
    let mut last: Option<[u8; 32]> = None;
    loop {
        let region = store.provided_from(&from, 65_536).unwrap();
        let Some(tail) = region.last() else { break };
        let next = tail.distance_key;
        for p in &region {
            if Some(p.distance_key) == last {
                continue;
            }
            assert!(last.is_none_or(|l| l < p.distance_key), "distance order");
            let n = u32::from_be_bytes(p.key.as_ref()[30..34].try_into().unwrap());
            assert!(!seen[n as usize], "key {n} twice");
            seen[n as usize] = true;
            last = Some(p.distance_key);
        }
        if region.len() < 65_536 {
            break;
        }
        from = next;
    }
    assert!(seen.iter().all(|s| *s), "every key walked");
    std::fs::remove_dir_all(&dir).unwrap();
}
