//! # ron-bench — the benchmark suite
//!
//! ## What it owns
//! - The `ron-bench` load generator (`src/main.rs`): thread-per-core like the server
//!   (one pinned thread per CPU given, a local executor over an epoll reactor; not
//!   io_uring, whose completions cost the server's core a signal per receive on
//!   loopback), HTTP/1.1, closed loop with a pipelining depth or open loop at a fixed
//!   rate with latency measured from the intended send time; workloads `get`, `range`, `put`, `mixed` over a deterministic
//!   dataset with uniform or Zipf popularity; every body verified by default (a peak
//!   run may instead drop bodies unread in the kernel, `--discard-bodies`, so that fewer
//!   client CPUs saturate a server); HDR
//!   percentiles, req/s, MB/s, statuses, as a table and as JSON. OAP/1 joins when the
//!   node speaks it.
//!   - [`dataset`]: object `i` = seeded bytes, so addresses and expected bytes are
//!     computed, never shipped; can load a node or write files for nginx.
//!   - [`workload`]: the request mix, popularity, and each request's expected answer.
//!   - [`load`]: executors, connections, the send/receive loop, verification.
//!   - [`report`]: the table and the JSON.
//!   - [`cpu`]: how busy a CPU (the server's) was over the measured window.
//! - `ron-bench membarrier` ([`barrier`]): what the barrier glommio issues before each
//!   sleep costs the caller and every other busy thread of the process, by how many are
//!   busy (the many-core model's growing term, issue 54).
//! - `ron-bench network` ([`network`]): N nodes on loopback in Z zones, loaded, killed
//!   and joined, with the figures of replication at scale (`bench/network.sh`).
//! - Criterion micro-benchmarks (`benches/codec.rs`, `benches/shard.rs`).
//! - `compare.sh`: ron vs nginx on the same datasets (many objects picked at random,
//!   uniform or Zipf, by ron-bench and by wrk through a generated Lua script), one ratio
//!   table.
//! - `many_cores.sh`: ron and nginx each on S saturated CPUs, per busy server core;
//!   `rotated_ab.sh`: two ron builds and nginx on one saturated CPU in short rounds whose
//!   order rotates, the A/B a noisy machine can still answer (issue 54).
//! - `examples/`: the chunk-tree overhead and the bao-tree comparison.
//!
//! ## Invariants
//! - Bounded: every run has a duration and a warm-up; nothing waits forever (I/O errors
//!   are counted and the connection retried until the deadline).
//! - Honest latency: in open loop a late answer delays nothing that is measured —
//!   the next request's latency still counts from when it should have been sent.

pub mod barrier;
pub mod cpu;
pub mod dataset;
pub mod load;
pub mod network;
pub mod report;
pub mod workload;

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
