//! # ron-shards — one pinned shard and its storage
//!
//! ## What it owns
//! - [`layout`]: the data dir — the fixed partition table (4096 partitions → stores),
//!   the stores, the temp dir — and [`layout::Routing`]: address → store → shard.
//! - [`store`]: one storage partition: an LMDB index (heed) of [`record::ObjectMeta`]
//!   (length, content type, chunk tree) and one file per object, named by address.
//! - [`shard`]: the per-executor state and the data paths: metadata and verified-group
//!   reads (cache → own disk via io_uring DMA → owner over the mesh), uploads (hashed
//!   while written to a temp file) and group commit.
//! - [`cache`]: CLOCK caches with weight budgets (verified groups by bytes, metadata
//!   and open files by count).
//! - [`mesh`]: request/reply between shards over glommio's channel mesh.
//! - [`metrics`]: shard-local atomic counters and a latency histogram.
//!
//! ## Invariants
//! - A byte leaves this crate only inside a group that passed
//!   `ChunkTree::verify_group`, itself checked against the address when its record was
//!   loaded. Groups are checked when they come off disk, and again by the shard that
//!   sends them when they come off the mesh.
//! - An object is visible only once its file is durable under its final name and its
//!   record is committed; commits (fsync + LMDB) run on the blocking pool, never inline.
//! - Everything a shard holds is bounded at start-up: cache bytes, metadata entries,
//!   open files, commit batch, mesh channel length.
//! - No lock is shared between shards: each shard's state is `Rc`/`RefCell` on its own
//!   thread; shards talk only through bounded mesh channels.
//!
//! ## Data flow
//! Read: `Shard::meta(addr)` → `Shard::group(meta, g)` for each group a range covers;
//! the owner reads the 64 KiB group with one aligned DMA read, verifies it, and both the
//! owner and the asking shard cache the verified bytes (objects are immutable, so any
//! shard may cache any object). Write: `Shard::begin_upload` → `Upload::write` (hash +
//! DMA write) → `Upload::finish` → `Shard::commit`, which forwards to the owner; the
//! owner renames the file into its store and acknowledges after the group commit.

pub mod cache;
pub mod error;
pub mod layout;
pub mod mesh;
pub mod metrics;
pub mod record;
pub mod shard;
pub mod store;

pub use error::ShardError;
pub use layout::{Routing, ShardIndex};
pub use metrics::{MetricsSnapshot, ShardMetrics};
pub use record::ObjectMeta;
pub use shard::{CommitOutcome, Shard, ShardConfig, StagedObject, Upload};
