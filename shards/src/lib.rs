//! # ron-shards — the per-core shard and its storage partition (not built yet)
//!
//! This crate will own one pinned glommio executor per core and everything it alone
//! touches: its storage partition (an LMDB index via heed, object data files, the
//! chunk-tree table), the read and write paths, the per-shard cache of verified 64 KiB
//! groups, erasure coding and repair, the cross-shard mesh that forwards requests to an
//! object's owner, and shard-local counters summed by the control thread at scrape.
//!
//! Invariants to keep: no lock shared across cores, no blocking syscall, fsync or LMDB
//! commit on the reactor thread, and no byte leaves a shard unverified against its
//! chunk tree (`ron_codec::tree`). It lands with the HTTP serving issue.
