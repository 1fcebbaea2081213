//! The chunk-tree pass against plain `blake3::hash`, interleaved: each round times one
//! of each on the same buffer, so machine drift hits both alike. Prints the medians and
//! the median of the per-round ratios.
//!
//! Run: `cargo run --release -p ron-bench --example tree_overhead [ROUNDS]`

use std::hint::black_box;

use ron_bench::{median, pattern, secs};
use ron_codec::TreeHasher;

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(201);
    println!("size_bytes  blake3_GBps  tree_GBps  tree/blake3_time  rounds");
    for len in [64 << 10, 1 << 20, 16 << 20, (10 << 20) + 123] {
        let data = pattern(len);
        let (mut plain, mut tree, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let p = secs(|| blake3::hash(black_box(&data)));
            let t = secs(|| {
                let mut h = TreeHasher::new();
                h.update(black_box(&data));
                h.finalize()
            });
            plain.push(p);
            tree.push(t);
            ratio.push(t / p);
        }
        let gbps = |s: f64| len as f64 / s / 1e9;
        println!(
            "{len:>10}  {:>11.2}  {:>9.2}  {:>16.3}  {rounds}",
            gbps(median(plain)),
            gbps(median(tree)),
            median(ratio)
        );
    }
}
