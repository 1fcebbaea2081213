//! Micro-benchmarks of shard pieces on the hot path: the verified-group cache (memfd
//! arenas) and owner routing. Run: `cargo bench -p ron-bench --bench shard`.
//!
//! The cache prepares its arenas on glommio's blocking pool, so the benchmarks run inside
//! a glommio executor.

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use ron_codec::tree::GroupIndex;
use ron_codec::{Address, PartitionTable};
use ron_shards::arena::ArenaCache;
use ron_shards::cache::GroupKey;
use ron_shards::Routing;

fn key(i: u64) -> GroupKey {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    GroupKey {
        addr: Address::from_bytes(bytes),
        group: GroupIndex(i % 7),
    }
}

/// Caches group `i`, waiting for the blocking pool when the next arena is not ready.
async fn keep(cache: &mut ArenaCache, i: u64, group: &[u8]) {
    loop {
        if let Some(placed) = cache.place(group) {
            cache.keep(key(i), placed);
            return;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

async fn cache(c: &mut Criterion) {
    let group = vec![7u8; 65_536];
    // 1024 resident 64 KiB groups in a 256 MiB budget; lookups all hit.
    let mut cache = ArenaCache::new(256 << 20).expect("arena");
    for i in 0..1024 {
        keep(&mut cache, i, &group).await;
    }
    let mut g = c.benchmark_group("group_cache");
    let mut i = 0u64;
    g.bench_function("hit", |b| {
        b.iter(|| {
            i = (i + 1) % 1024;
            black_box(cache.get(&key(i)))
        })
    });
    g.bench_function("miss", |b| b.iter(|| black_box(cache.get(&key(1_000_000)))));
    g.finish();

    let mut g = c.benchmark_group("routing");
    let routing = Routing::new(PartitionTable::round_robin(8).unwrap(), 3);
    let addr = Address::of(b"object");
    g.bench_function("owner_shard", |b| {
        b.iter(|| routing.owner(black_box(&addr)))
    });
    g.finish();
}

fn main() {
    glommio::LocalExecutorBuilder::default()
        .spawn(|| async {
            let mut c = Criterion::default()
                .warm_up_time(Duration::from_secs(1))
                .measurement_time(Duration::from_secs(3))
                .sample_size(30)
                .configure_from_args();
            cache(&mut c).await;
            c.final_summary();
        })
        .expect("executor")
        .join()
        .expect("benchmarks");
}
