//! Micro-benchmarks of shard pieces on the hot path: the verified-group cache and
//! owner routing. Run: `cargo bench -p ron-bench --bench shard`.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ron_codec::tree::GroupIndex;
use ron_codec::{Address, PartitionTable};
use ron_shards::cache::{GroupCache, GroupKey};
use ron_shards::Routing;

fn key(i: u64) -> GroupKey {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    GroupKey {
        addr: Address::from_bytes(bytes),
        group: GroupIndex(i % 7),
    }
}

fn cache(c: &mut Criterion) {
    let group = Bytes::from(vec![7u8; 65_536]);
    let mut g = c.benchmark_group("group_cache");
    g.throughput(Throughput::Elements(1));
    // 4096 resident 64 KiB groups (256 MiB of budget), lookups all hit.
    let mut cache = GroupCache::new(256 << 20);
    for i in 0..4096 {
        cache.insert(key(i), group.clone(), group.len());
    }
    let mut i = 0u64;
    g.bench_function("hit", |b| {
        b.iter(|| {
            i = (i + 1) % 4096;
            black_box(cache.get(&key(i)))
        })
    });
    g.bench_function("miss", |b| b.iter(|| black_box(cache.get(&key(1_000_000)))));
    // Full cache: every insert evicts.
    let mut n = 4096u64;
    g.bench_function("insert_with_eviction", |b| {
        b.iter(|| {
            n += 1;
            cache.insert(key(n), group.clone(), group.len());
        })
    });
    g.finish();

    let mut g = c.benchmark_group("routing");
    let routing = Routing::new(PartitionTable::round_robin(8).unwrap(), 3);
    let addr = Address::of(b"object");
    g.bench_function("owner_shard", |b| {
        b.iter(|| routing.owner(black_box(&addr)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = cache
}
criterion_main!(benches);
