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
