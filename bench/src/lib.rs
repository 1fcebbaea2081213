//! # ron-bench — the benchmark suite
//!
//! Today: criterion micro-benchmarks of the codec's hot pieces (`benches/codec.rs`):
//! OAP/1 frame decode and encode, the chunk-tree pass next to plain `blake3::hash`, group
//! verification, merging stored chaining values into a root, HTTP head parsing and
//! response-head writing. Run them with `cargo bench -p ron-bench`; figures and commands
//! are recorded in `docs/PERF.md`.
//!
//! Later (bench suite issue): the `ron-bench` load generator — thread-per-core, HTTP and
//! OAP, open and closed loop, HDR histograms, JSON output — and the side-by-side
//! comparison against nginx.

use std::hint::black_box;
use std::time::Instant;

/// Median of `values` (the upper one for an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Seconds `f` takes, its result kept alive so the work is not optimised away.
pub fn secs<T>(f: impl FnOnce() -> T) -> f64 {
    let start = Instant::now();
    black_box(f());
    start.elapsed().as_secs_f64()
}

/// Deterministic, incompressible-looking bytes for benchmarks.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}
