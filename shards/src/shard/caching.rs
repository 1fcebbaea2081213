//! Keeping verified groups: the shard's verified-group cache (memfd arenas), where a
//! group is checked once where it is kept — in its arena after the copy, or where it
//! lies when it is not cached — and the read-ahead budget of streams. Also the
//! metadata cache's forgetting of evicted objects.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use ron_codec::tree::{group_count, group_len, GroupIndex, GROUP_LEN_BYTES};
use ron_codec::Address;
use ron_link::counters::StorageCounters;

use crate::arena::GroupBytes;
use crate::cache::GroupKey;
use crate::disk;
use crate::error::ShardError;
use crate::record::ObjectMeta;
use crate::shard::state::Shard;

/// An object larger than this share of the verified cache (a quarter) is not cached:
/// reading it whole would evict a quarter of everything else, and a cold stream of it
/// would spend more on arena churn (allocate, zero, map, unmap) than on sending.
pub const CACHE_ADMIT_SHARE: u64 = 4;

/// An object's groups that a miss reads together while the cache has room: aligned
/// windows of this many (512 KiB, one read-ahead batch). Ranges would otherwise bring an
/// object's groups in one or two at a time, between other objects' groups, and every
/// later answer would leave in a `sendfile` per piece (docs/design/cache.md).
pub const CACHE_WINDOW_GROUPS: u64 = 8;

/// Read-ahead held on one shard at most, bytes: 128 streams at full depth. Past it,
/// streams read one group at a time, so a crowd of cold streams (or of slow readers
/// holding their read-ahead) cannot hold more than this in DMA buffers.
pub const READ_AHEAD_BYTES_MAX: u64 = 256 << 20;

/// Whether a group about to be kept was checked already, where its bytes lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checked {
    No,
    WhereItLies,
}

/// A share of the shard's read-ahead budget, given back when dropped.
#[derive(Debug)]
pub struct ReadAheadPermit {
    held: Rc<Cell<u64>>,
    bytes: u64,
    metrics: Arc<StorageCounters>,
}

impl Drop for ReadAheadPermit {
    fn drop(&mut self) {
        self.held.set(self.held.get() - self.bytes);
        publish_read_ahead(&self.metrics, self.held.get());
    }
}

fn publish_read_ahead(metrics: &StorageCounters, held: u64) {
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    metrics.read_ahead_bytes.store(held, relaxed);
}

impl Shard {
    /// Groups `first..first + count` if the cache holds every one of them.
    pub fn cached_groups(
        &self,
        meta: &ObjectMeta,
        first: GroupIndex,
        count: u64,
    ) -> Option<Vec<GroupBytes>> {
        self.cached_groups_asked(meta, first, count, &(first.0..first.0 + count))
    }

    /// [`Shard::cached_groups`], hits counted among `asked` only (the rest of a run is
    /// a cache window's, which a client did not ask for: a one-group read whose window
    /// of eight was cached counted eight hits).
    pub(super) fn cached_groups_asked(
        &self,
        meta: &ObjectMeta,
        first: GroupIndex,
        count: u64,
        asked: &std::ops::Range<u64>,
    ) -> Option<Vec<GroupBytes>> {
        let addr = meta.addr();
        let range = first.0..first.0 + count;
        range.clone().all(|g| self.is_cached(addr, g)).then(|| {
            range
                .filter_map(|g| {
                    let key = GroupKey {
                        addr,
                        group: GroupIndex(g),
                    };
                    self.cached_group_counted(meta, &key, asked.contains(&g))
                })
                .collect()
        })
    }

    /// The groups a miss of `first..first + count` reads: the aligned windows of
    /// [`CACHE_WINDOW_GROUPS`] they touch, when the object is cached at all and the
    /// cache takes the windows' bytes without evicting anything; else the groups asked
    /// for. Widened, a range's read brings its whole window in end to end, so the next
    /// answers from it leave in one `sendfile`; a cache that is full and churning reads
    /// only what is asked (no read amplification on a working set larger than it).
    pub(super) fn miss_span(
        &self,
        meta: &ObjectMeta,
        first: GroupIndex,
        count: u64,
    ) -> (GroupIndex, u64) {
        let groups = group_count(meta.len());
        let start = first.0 / CACHE_WINDOW_GROUPS * CACHE_WINDOW_GROUPS;
        let end = (first.0 + count)
            .next_multiple_of(CACHE_WINDOW_GROUPS)
            .min(groups);
        if end <= start || end - start <= count || !self.admits_to_cache(meta) {
            return (first, count);
        }
        let bytes: u64 = (start..end)
            .filter_map(|g| group_len(meta.len(), GroupIndex(g)))
            .sum();
        match self.groups.borrow().takes_without_eviction(bytes as usize) {
            true => (GroupIndex(start), end - start),
            false => (first, count),
        }
    }

    /// How many of groups `first..first + count` the cache holds.
    pub(super) fn cached_count(&self, meta: &ObjectMeta, first: GroupIndex, count: u64) -> u64 {
        let addr = meta.addr();
        (first.0..first.0 + count)
            .filter(|&g| self.is_cached(addr, g))
            .count() as u64
    }

    /// Whether the cache holds group `group` of `addr` (without touching its place in
    /// the eviction order).
    fn is_cached(&self, addr: Address, group: u64) -> bool {
        let key = GroupKey {
            addr,
            group: GroupIndex(group),
        };
        self.groups.borrow().contains(&key)
    }

    /// Group `key` from the cache, when it is there and as long as the object's record
    /// says it is. A record whose length rotted (LMDB keeps no checksums; a one-group
    /// object's tree does not pin its length) disagrees with the verified group: that is
    /// a miss, counted as a failed check, and the read from disk that follows is checked
    /// against the record — never a verified group cut to a wrong length.
    pub(super) fn cached_group(&self, meta: &ObjectMeta, key: &GroupKey) -> Option<GroupBytes> {
        self.cached_group_counted(meta, key, true)
    }

    /// [`Shard::cached_group`], a hit counted when `asked` (a group a client asked for).
    pub(super) fn cached_group_counted(
        &self,
        meta: &ObjectMeta,
        key: &GroupKey,
        asked: bool,
    ) -> Option<GroupBytes> {
        let cached = self.cached_group_uncounted(meta, key)?;
        StorageCounters::add(&self.metrics.cache_hits, u64::from(asked));
        Some(cached)
    }

    /// [`Shard::cached_group`] without counting a hit: for a group another shard read
    /// (and counted) for this one.
    pub(super) fn cached_group_uncounted(
        &self,
        meta: &ObjectMeta,
        key: &GroupKey,
    ) -> Option<GroupBytes> {
        let cached = self.groups.borrow_mut().get(key)?;
        if Some(cached.len() as u64) != group_len(meta.len(), key.group) {
            StorageCounters::add(&self.metrics.verify_failures, 1);
            tracing::error!(
                obj = %meta.addr(),
                group = key.group.0,
                cached_bytes = cached.len(),
                record_len = meta.len(),
                "a cached group and its object's record disagree on its length: the record is damaged"
            );
            return None;
        }
        Some(cached)
    }

    /// Checks `group` once, where it is kept: copied into an arena of the verified
    /// cache and checked there when the object is admitted and there is room (the bytes
    /// checked are the bytes sent), else checked where it is (its DMA buffer, or the
    /// bytes off the mesh) and sent from there.
    pub(super) fn keep_verified(
        &self,
        meta: &ObjectMeta,
        key: GroupKey,
        group: GroupBytes,
    ) -> Result<GroupBytes, ShardError> {
        self.keep(meta, key, group, Checked::No)
    }

    /// Keeps a group a rebuild has just checked where it lies: checked again only if
    /// it is copied into the verified cache.
    pub(super) fn keep_rebuilt(
        &self,
        meta: &ObjectMeta,
        key: GroupKey,
        group: GroupBytes,
    ) -> Result<GroupBytes, ShardError> {
        self.keep(meta, key, group, Checked::WhereItLies)
    }

    fn keep(
        &self,
        meta: &ObjectMeta,
        key: GroupKey,
        group: GroupBytes,
        checked: Checked,
    ) -> Result<GroupBytes, ShardError> {
        let placed = if self.admits_to_cache(meta) {
            self.groups.borrow_mut().place(&group)
        } else {
            None
        };
        let kept = match placed {
            Some(placed) => {
                disk::verify_group(meta, key.group, &placed.group, &self.metrics)?;
                let kept = self.groups.borrow_mut().keep(key, placed);
                self.publish_cache_size();
                kept
            }
            None => {
                if checked == Checked::No {
                    disk::verify_group(meta, key.group, &group, &self.metrics)?;
                }
                group
            }
        };
        debug_assert_group_len(meta, key.group, &kept);
        Ok(kept)
    }

    /// Reserves `bytes` of the shard's read-ahead budget ([`READ_AHEAD_BYTES_MAX`]), or
    /// `None` when it is spent.
    pub fn reserve_read_ahead(&self, bytes: u64) -> Option<ReadAheadPermit> {
        let held = self.read_ahead_bytes.get();
        if held + bytes > READ_AHEAD_BYTES_MAX {
            StorageCounters::add(&self.metrics.read_ahead_refused, 1);
            return None;
        }
        self.read_ahead_bytes.set(held + bytes);
        publish_read_ahead(&self.metrics, held + bytes);
        Some(ReadAheadPermit {
            held: Rc::clone(&self.read_ahead_bytes),
            bytes,
            metrics: Arc::clone(&self.metrics),
        })
    }

    /// Whether groups of this object may enter the verified cache: not those of an
    /// object larger than a [`CACHE_ADMIT_SHARE`]th of it, whose every read would push
    /// out that share of everything else (a scan). Those are verified in the DMA
    /// buffers they were read into and sent from there, cheaper than arenas.
    fn admits_to_cache(&self, meta: &ObjectMeta) -> bool {
        meta.len() <= self.config.cache_bytes_max as u64 / CACHE_ADMIT_SHARE
    }

    fn publish_cache_size(&self) {
        let groups = self.groups.borrow();
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        self.metrics
            .cache_bytes
            .store(groups.weight() as u64, relaxed);
        self.metrics
            .cache_entries
            .store(groups.len() as u64, relaxed);
    }

    /// Closes this shard's open files of `addrs` (objects it owns).
    pub(super) fn forget_files(&self, addrs: &[Address]) {
        for addr in addrs {
            if let Ok(store) = self.local_store(addr) {
                self.files.forget(addr, store.dir_count());
            }
        }
    }

    /// Drops the cached metadata of `addrs` (evicted objects): the next request for
    /// one loads it again, and misses.
    pub(super) fn forget_metas(&self, addrs: &[Address]) {
        let mut metas = self.metas.borrow_mut();
        let mut oversized = self.oversized_meta.borrow_mut();
        for addr in addrs {
            metas.remove(addr);
            if oversized.as_ref().is_some_and(|m| m.addr() == *addr) {
                *oversized = None;
            }
        }
    }
}

/// Postcondition of every group this shard hands out: at most one 64 KiB group, and
/// exactly as long as the object's length says group `group` is.
fn debug_assert_group_len(meta: &ObjectMeta, group: GroupIndex, bytes: &[u8]) {
    debug_assert!(
        bytes.len() as u64 <= GROUP_LEN_BYTES,
        "group {} of {} is {} bytes, more than a group",
        group.0,
        meta.addr(),
        bytes.len()
    );
    debug_assert_eq!(
        Some(bytes.len() as u64),
        group_len(meta.len(), group),
        "group {} of {} has the wrong length",
        group.0,
        meta.addr()
    );
}
