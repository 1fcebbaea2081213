//! Erasure-code rates on this machine (issue 14): the stripe code ron uses
//! (`reed-solomon-erasure`, GF(2^8), 64 KiB blocks), for the node default 4+1 and for
//! RS(10,4), the anchor figures' shape. Run: `cargo bench -p ron-bench --bench ec`.
//!
//! Throughput is data bytes of a stripe per second (k × 64 KiB): what an upload's
//! encoding or a degraded read's rebuild moves through the code.

use std::hint::black_box;

use criterion::{Criterion, Throughput};
use ron_shards::ec::{EcParams, StripeCode};
use ron_shards::limits::BLOCK_BYTES;

fn stripe(k: usize) -> Vec<Vec<u8>> {
    (0..k)
        .map(|i| {
            (0..BLOCK_BYTES as usize)
                .map(|j| (i * 131 + j * 7) as u8)
                .collect()
        })
        .collect()
}

fn bench_code(c: &mut Criterion, k: u8, m: u8) {
    let code = StripeCode::new(EcParams::new(k, m).expect("k+m"));
    let data = stripe(k.into());
    let views: Vec<&[u8]> = data.iter().map(|b| &b[..]).collect();
    let mut parity = vec![vec![0u8; BLOCK_BYTES as usize]; m.into()];
    let mut group = c.benchmark_group(format!("ec_{k}+{m}"));
    group.throughput(Throughput::Bytes(u64::from(k) * BLOCK_BYTES));
    group.bench_function("encode", |b| {
        b.iter(|| {
            let mut out: Vec<&mut [u8]> = parity.iter_mut().map(|p| &mut p[..]).collect();
            code.encode(black_box(&views), &mut out).expect("encode");
        })
    });
    let mut full: Vec<Option<Vec<u8>>> = data.iter().cloned().map(Some).collect();
    full.extend(parity.iter().cloned().map(Some));
    let lens = vec![BLOCK_BYTES as usize; k.into()];
    group.bench_function("rebuild_one_data_block", |b| {
        b.iter_batched(
            || {
                let mut s = full.clone();
                s[0] = None;
                s
            },
            |mut s| code.rebuild(black_box(&mut s), &lens).expect("rebuild"),
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_code(&mut c, 4, 1);
    bench_code(&mut c, 10, 4);
    c.final_summary();
}
