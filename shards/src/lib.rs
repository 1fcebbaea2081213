//! # ron-shards — one pinned shard and its storage
//!
//! ## What it owns
//! - [`layout`]: the data dirs — each marked with the node and its position
//!   (`ron-dir.bin`), the fixed partition table (4096 partitions → stores) in each, the
//!   stores, the temp dirs, replacement dirs (never a mount point whose disk did not
//!   mount: `mounts`) — and [`layout::Routing`]: address → store → shard.
//! - [`store`]: one storage partition spread over the dirs: an LMDB index (heed;
//!   `store/index.rs`: one replica, its databases and encodings, replica merging) of
//!   [`record::ObjectMeta`] (length, content type, chunk tree, [`record::Location`],
//!   parity) with replicas in `m + 1` dirs, each object over 64 KiB in its own files —
//!   in each dir, the data and parity blocks its columns map there, named by address —
//!   and segments packing the smaller ones (one-dir nodes); `store/evictable.rs`: which
//!   objects are evictable copies fetched by read-through, oldest first, and the
//!   markers of evictions whose files are not yet unlinked; `store/compact.rs`: at
//!   start-up, segments at least half dead have their live needles moved and go.
//! - [`segment`]: append-only segment files of small objects (needles), the log that
//!   appends a whole batch of them with one write and one data sync per lane (`m + 1`
//!   copies of every segment), and the start-up scan of the needles past the index's
//!   checkpoint (a bad needle taken from another lane).
//! - [`ids`] and [`limits`]: the leaves every module may import — one newtype per id
//!   (`ShardIndex`, `StoreId`, `DirIndex`, `StripeIndex`, `SegmentId`, `LaneIndex`,
//!   `ByteOffset`) and the fixed limits of the formats (block size, most data and parity
//!   blocks, most dirs, the packed-object and segment sizes).
//! - [`shard`]: the per-executor state (`shard/mod.rs`) and its operations beside it,
//!   one file each: reading (`read.rs`: metadata and verified groups from the cache, the
//!   shard's own disk or the owner over the mesh), keeping verified groups
//!   (`caching.rs`), degraded reads and their repair (`degraded.rs`), the write path's
//!   entry points (`write.rs`: `begin_upload`, and `commit`, run here or forwarded to
//!   the owner), mesh answers and flights (`peers.rs`), and the background services
//!   (`services.rs`). `Shard::start` and `Shard::stop` are its lifecycle.
//! - [`lifecycle`]: the stop signal and the background tasks a shard starts, stops and
//!   awaits within a bound (`docs/design/lifecycle.md`).
//! - `disk` (private): the disk end of the read path — this shard's open object files
//!   (bounded by count) and one aligned DMA read per run of groups (one group, both
//!   groups of a range, a read-ahead batch), or per contiguous stretch of a dir's file
//!   for an object spread over dirs, all in flight at once.
//! - [`upload`]: an upload in progress (hashed while it is kept in memory, for a small
//!   object, or written to a temp file) and the [`upload::StagedObject`] it becomes.
//! - [`free_space`]: the data dirs' free space, sampled on the blocking pool at most
//!   once a second, and the room check that refuses an announced length (507) before a
//!   byte of it is received; ENOSPC stays the net under uploads running at once.
//! - [`commit`]: the group commit (`commit/`: `queue.rs` what it holds, `write.rs` stage
//!   one, `index.rs` stage two, `mod.rs` the entry and its task), two stages — data (segment appends; staged files
//!   synced and renamed into the store), then index commits (one LMDB transaction per
//!   store, with its segment checkpoint) that run beside later writes — the unindexed
//!   map of packed objects answered before their index commit, and
//!   [`commit::CommitOutcome`].
//! - [`arena`]: the verified-group cache, in memfd arenas written once and evicted
//!   whole, so that a plain TCP send can `sendfile` cached groups without a copy
//!   ([`GroupBytes`] carries a group's bytes and where they lie in an arena).
//! - [`ec`]: erasure coding (issue 14): the stripe geometry — which dir,
//!   file and offset holds each data or parity block of an object — and the
//!   Reed–Solomon code that makes parity and rebuilds lost blocks. Pure; no I/O.
//! - [`scrub`]: the paced scrubber (one low-priority task per shard reading and checking
//!   every stored block, rebuilding what parity allows, resumable from the index) and
//!   the check of one object that `ron repair` asks for.
//! - `shard::orphans` (private): the sweep, once per start, of object files no index
//!   record names (a crash between a batch's renames and its index commit, or an index
//!   lost), each judged by its bytes: stored again through the upload path when they are
//!   its object, else claimed in the commit queue as an eviction claims it and unlinked.
//! - `damaged` (private): the queue of copies a shard found damaged past what it
//!   rebuilds (its scrubber, a read), which the engine's replication fetches again.
//! - `evict` (private): the evicter, one background task per shard keeping the
//!   evictable copies within the shard's share of `fetched_bytes_max`, oldest first
//!   (claims in the commit queue, records out of every replica, metadata forgotten on
//!   every shard over the mesh, files unlinked, DHT told); and the claims by which the
//!   scrubber, the repair task and the evicter keep off each other's objects.
//! - [`cache`]: CLOCK caches with weight budgets (metadata by bytes, open files by
//!   count).
//! - [`mesh`]: request/reply between shards over a full mesh of glommio shared
//!   channels. It carries plain data (metadata, groups, staged objects) and runs a
//!   handler for each request; it does not know the shard.
//! - Counters: the storage writes its shard's [`ron_link::counters::StorageCounters`]
//!   (relaxed atomics, declared in ron-link with their Prometheus families; the control
//!   thread reads them), handed to [`Shard::start`] and the mesh by the engine.
//! - [`error`]: [`ShardError`], naming the operation and what it touched; a failed group
//!   commit reaches each of its uploads as `ShardError::GroupCommit`.
//!
//! Imports point one way: `shard` → `mesh` → `commit` → `upload` → the storage
//! modules (`disk`, `store`, `record`, `segment`, `layout`, `arena`, `cache`, `free_space`,
//! `error`);
//! `shard` → `scrub` → `repair` → the storage modules and `ec`; `shard` → `evict` →
//! `commit`, and `scrub` → `evict` for the claims; `shard` and `scrub` → `damaged`;
//! every module → `ids`, `limits`.
//! Nothing imports `shard`; the mesh reaches the shard only through the handler it is
//! given. No two files import each other (`../shared/tools/module-cycles` checks).
//!
//! ## Invariants
//! - A byte leaves this crate only inside a group that passed
//!   `ChunkTree::verify_group`, itself checked against the address when its record was
//!   loaded. A group is checked once where it is kept — in its arena after the copy
//!   from the DMA buffer, or in the DMA buffer itself for an object too large to cache,
//!   so the bytes checked are the bytes sent — and again by the shard that sends it
//!   when it comes off the mesh. Two exceptions, both copies in memory of bytes already
//!   checked: a cached group given a second chance is moved into a newer arena without
//!   a check (`arena.rs`), and a read-through's groups reach a follower shard as the
//!   owner verified them through their proofs (the follower has no chunk tree yet;
//!   engine `fetch/follow.rs`). An arena region or a DMA buffer, once handed out, is
//!   never written again. A group handed out is at most 64 KiB and exactly as long as
//!   the object's length says (a cached group the record disagrees with is a miss).
//! - An object is visible only once it is durable: an object in its own file once the
//!   file is durable under its final name and its record is committed; a packed object
//!   once its needle is synced in its segment (the log; its record follows, and the
//!   start-up replay indexes any needle past the checkpoint). Commits (fsync + LMDB)
//!   run on the blocking pool, never inline once the shard serves (its start — replay,
//!   compaction, evictions a crash cut short — runs them on its own thread, before it
//!   accepts). An evicted copy's record leaves every
//!   index replica, and every shard's metadata cache, before its files are unlinked.
//! - Everything a shard holds is bounded at start-up ([`ShardConfig`]): cache bytes,
//!   metadata bytes, open files, commit batch, mesh channel length.
//! - No lock is shared between shards: each shard's state is `Rc`/`RefCell` on its own
//!   thread; shards talk only through bounded mesh channels.
//!
//! ## Data flow
//! Read: `Shard::meta(addr)` → `Shard::group(meta, g)` (or `Shard::groups` for a run)
//! for the groups a range covers — on a miss, with the rest of their aligned 512 KiB
//! windows while the cache is below its budget, so that ranges leave an object's groups
//! end to end (docs/design/cache.md); the owner reads them with one aligned DMA read,
//! copies each into an arena and verifies it there (or, for an object over a quarter
//! of the cache, verifies it in the DMA buffer and sends it from there), and both the
//! owner and the asking shard cache the verified bytes (objects are immutable, so any
//! shard may cache any object). Write: `Shard::begin_upload` → `Upload::write` (hash +
//! keep in memory up to 64 KiB, else direct writes to a temp file) → `Upload::finish` →
//! `Shard::commit`, which forwards to the owner; the owner packs the object into a
//! segment (acknowledged once it is synced) or renames its file into the store
//! (acknowledged once its record is committed).

pub mod arena;
pub mod cache;
pub mod commit;
mod damaged;
mod disk;
pub mod ec;
pub mod error;
mod evict;
pub mod free_space;
pub mod ids;
pub mod layout;
pub mod lifecycle;
pub mod limits;
pub mod mesh;
mod mounts;
pub mod record;
mod repair;
pub mod scrub;
pub mod segment;
pub mod shard;
pub mod store;
pub mod upload;

pub use arena::{GroupBytes, MemFile, MemFileSpan};
pub use commit::CommitOutcome;
pub use error::ShardError;
pub use evict::withdraw;
pub use ids::{ByteOffset, DirIndex, LaneIndex, SegmentId, ShardIndex, StoreId, StripeIndex};
pub use layout::Routing;
pub use mesh::{FlightHandler, FlightPart};
pub use record::{Location, ObjectMeta, Parity, Retention};
pub use shard::{AnnounceFilter, ReadAheadPermit, Shard, ShardConfig, CACHE_WINDOW_GROUPS};
pub use upload::{discard, StagedBody, StagedObject, Upload};
