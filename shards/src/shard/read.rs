//! The read path: an object's metadata (its chunk tree checked against the address
//! once, then cached) and its verified groups — from the cache (`caching.rs`), this
//! shard's disk (`disk.rs`; a damaged block rebuilt by `degraded.rs`) or the owner
//! shard over the mesh. Concurrent loads of one object's metadata share one load.

use std::ops::Range;
use std::rc::Rc;

use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalReceiver};
use ron_codec::tree::{group_len, GroupIndex};
use ron_codec::Address;
use ron_link::counters::StorageCounters;

use crate::arena::GroupBytes;
use crate::cache::GroupKey;
use crate::error::ShardError;
use crate::ids::ShardIndex;
use crate::lifecycle::join_all;
use crate::mesh::{MeshOp, MeshReply, MESH_GROUPS_MAX};
use crate::record::{ObjectMeta, Retention};
use crate::repair::{self, StripeKey};
use crate::shard::state::{mesh_confused, Shard};
use crate::store::{self, Store};

impl Shard {
    /// The kept objects (uploads, placement copies — not evictable copies) among the
    /// next `limit` objects of this shard's stores in address order after `after`, and
    /// where the walk goes on (`None`: done) — the repair sweep's walk. One read
    /// transaction per store, inline.
    pub fn kept_after(
        &self,
        after: Option<&Address>,
        limit: usize,
    ) -> Result<(Vec<Address>, Option<Address>), ShardError> {
        let (found, next) =
            self.merged_after(limit, |store| store.addresses_after(after, limit))?;
        let mut kept = Vec::with_capacity(found.len());
        for addr in found {
            let evictable = match self.local_store(&addr) {
                Ok(store) => store.is_evictable(&addr)?,
                Err(_) => continue,
            };
            if !evictable {
                kept.push(addr);
            }
        }
        Ok((kept, next))
    }

    /// The next `limit` evictable copies of this shard's stores (read-through copies,
    /// displaced copies) in address order after `after`, and where the walk goes on
    /// (`None`: done) — the repair sweep's rescue walk, which looks for an object whose
    /// only copy left is one of these. One read transaction per store, inline.
    pub fn evictable_after(
        &self,
        after: Option<&Address>,
        limit: usize,
    ) -> Result<(Vec<Address>, Option<Address>), ShardError> {
        self.merged_after(limit, |store| store.evictable_after(after, limit))
    }

    /// The first `limit` of the addresses each store gives (`page`), in address order,
    /// and the last of them when there are `limit` (where the walk goes on).
    fn merged_after(
        &self,
        limit: usize,
        page: impl Fn(&Store) -> Result<Vec<Address>, ShardError>,
    ) -> Result<(Vec<Address>, Option<Address>), ShardError> {
        let mut found = Vec::new();
        for store in self.stores.values() {
            found.extend(page(store)?);
        }
        found.sort_unstable();
        found.dedup();
        found.truncate(limit);
        let next = (found.len() == limit)
            .then(|| found.last().copied())
            .flatten();
        Ok((found, next))
    }

    /// Whether this node keeps `addr` (an upload or a placement copy): `false` for an
    /// evictable copy and for none. Asked of the owner shard; one read transaction.
    pub async fn is_kept(&self, addr: &Address) -> Result<bool, ShardError> {
        match self.owner(addr) {
            None => self.is_kept_local(addr),
            Some(owner) => match self.mesh()?.call(owner, MeshOp::Kept(*addr)).await? {
                MeshReply::Kept(kept) => Ok(kept),
                _ => Err(mesh_confused(owner)),
            },
        }
    }

    pub(super) fn is_kept_local(&self, addr: &Address) -> Result<bool, ShardError> {
        let store = self.local_store(addr)?;
        let retention = self.commits.stored_retention(store, addr)?;
        Ok(retention == Some(Retention::Kept))
    }

    /// The object's metadata (chunk tree verified against the address), from this
    /// shard's cache, its own store, or the owner shard. Objects are immutable, so any
    /// shard may cache any object's metadata. Concurrent requests for metadata being
    /// loaded wait for that load instead of repeating it; if it fails, each tries once
    /// itself (so each gets its own error).
    pub async fn meta(&self, addr: &Address) -> Result<Rc<ObjectMeta>, ShardError> {
        if let Some(meta) = self.cached_meta(addr) {
            return Ok(meta);
        }
        // Boxed, like every miss below: a hit then carries none of a load's state in
        // its caller's future, which each request moves whole into its box.
        Box::pin(self.meta_missed(addr)).await
    }

    /// The metadata of an object not in the cache: loaded, or a load already running
    /// waited for.
    async fn meta_missed(&self, addr: &Address) -> Result<Rc<ObjectMeta>, ShardError> {
        if let Some(waiting) = self.join_meta_load(addr) {
            StorageCounters::add(&self.metrics.meta_load_waits, 1);
            if let Some(Some(meta)) = waiting.recv().await {
                return Ok(meta);
            }
            return self.load_meta(addr).await;
        }
        let load = MetaLoad::lead(self, *addr);
        let loaded = self.load_meta(addr).await;
        load.settle(loaded.as_ref().ok());
        loaded
    }

    pub(super) fn cached_meta(&self, addr: &Address) -> Option<Rc<ObjectMeta>> {
        if let Some(meta) = self.metas.borrow_mut().get(addr) {
            return Some(meta);
        }
        let oversized = self.oversized_meta.borrow();
        oversized
            .as_ref()
            .filter(|meta| meta.addr() == *addr)
            .map(Rc::clone)
    }

    /// A receiver for the outcome of a load of `addr` already running, if one is.
    fn join_meta_load(&self, addr: &Address) -> Option<LocalReceiver<Option<Rc<ObjectMeta>>>> {
        let mut loads = self.meta_loads.borrow_mut();
        let waiters = loads.get_mut(addr)?;
        let (tell, told) = local_channel::new_bounded(1);
        waiters.push(tell);
        Some(told)
    }

    async fn load_meta(&self, addr: &Address) -> Result<Rc<ObjectMeta>, ShardError> {
        let meta = match self.owner(addr) {
            None => self.local_meta(addr).await?,
            Some(owner) => match self.mesh()?.call(owner, MeshOp::Meta(*addr)).await? {
                // Checked where it comes off the mesh: cached under `addr`, another
                // object's record would have its verified groups served as this one.
                MeshReply::Meta(meta) if meta.addr() == *addr => meta,
                MeshReply::Meta(_) => {
                    return Err(ShardError::Mesh {
                        shard: owner.0,
                        reason: "answered with another object's record",
                    })
                }
                _ => return Err(mesh_confused(owner)),
            },
        };
        let meta = Rc::new(meta);
        let weight = meta.footprint_bytes();
        if weight > self.config.meta_bytes_max {
            // Too big for the cache: kept beside it (one such tree per shard), so a
            // huge object is not re-read and re-checked on every request.
            *self.oversized_meta.borrow_mut() = Some(Rc::clone(&meta));
        } else {
            self.metas
                .borrow_mut()
                .insert(*addr, Rc::clone(&meta), weight);
        }
        Ok(meta)
    }

    /// Reads and checks the object's record from this shard's store: inline when short,
    /// on the blocking pool when checking its tree would stall the shard.
    async fn local_meta(&self, addr: &Address) -> Result<ObjectMeta, ShardError> {
        let store = self.local_store(addr)?;
        if let Some(meta) = self.commits.unindexed_meta(addr) {
            return Ok(meta);
        }
        StorageCounters::add(&self.metrics.meta_loads, 1);
        self.stored_record(store, addr).await
    }

    /// The record of `addr` in this shard's `store`, checked; `NotFound` when it has
    /// none, or when its record failed its check and was removed
    /// ([`Shard::forget_unreadable_record`]).
    pub(super) async fn stored_record(
        &self,
        store: &Store,
        addr: &Address,
    ) -> Result<ObjectMeta, ShardError> {
        match store::read_record(store, addr).await {
            Ok(Some(meta)) => Ok(meta),
            Ok(None) => Err(ShardError::NotFound { addr: *addr }),
            Err(e) if e.is_unreadable_record() => {
                Box::pin(self.forget_unreadable_record(store, addr, e)).await
            }
            Err(e) => Err(e),
        }
    }

    /// A record that fails its own check answered every read with an error and kept its
    /// object from being fetched again (a pull's commit could not replace what it could
    /// not read): it is removed (counted with the damaged copies discarded), and the
    /// object reads as missing here — read through, or fetched again by a pull.
    async fn forget_unreadable_record(
        &self,
        store: &Store,
        addr: &Address,
        error: ShardError,
    ) -> Result<ObjectMeta, ShardError> {
        match self.commits.forget_unreadable_record(store, addr).await? {
            true => {
                tracing::warn!(obj = %addr, %error, "an index record failed its check: removed, the object is missing here");
                StorageCounters::add(&self.metrics.damaged_copies_discarded, 1);
                Err(ShardError::NotFound { addr: *addr })
            }
            false => Err(error),
        }
    }

    /// One whole verified group: from the cache, this shard's disk, or the owner — on a
    /// miss with its window when the cache has room ([`Shard::miss_span`]).
    pub async fn group(
        &self,
        meta: &ObjectMeta,
        group: GroupIndex,
    ) -> Result<GroupBytes, ShardError> {
        let key = GroupKey {
            addr: meta.addr(),
            group,
        };
        if let Some(cached) = self.cached_group(meta, &key) {
            return Ok(cached);
        }
        Box::pin(self.group_missed(meta, group)).await
    }

    /// A group not in the cache: read with the rest of its window, or alone.
    async fn group_missed(
        &self,
        meta: &ObjectMeta,
        group: GroupIndex,
    ) -> Result<GroupBytes, ShardError> {
        let asked = group.0..group.0 + 1;
        if let Some(mut widened) = self.read_widened(meta, group, 1, asked).await {
            if let Some(one) = widened.pop() {
                return Ok(one);
            }
        }
        self.group_exact(meta, group).await
    }

    /// Groups `first..first + count`, none of them necessarily cached, read with the
    /// rest of their windows ([`Shard::miss_span`]); `None` when the cache has no room
    /// for that or the widened read failed (damage in a window, the owner's error about
    /// it): the caller then reads its groups alone, and their own error is the answer.
    /// Misses are counted among `asked`.
    async fn read_widened(
        &self,
        meta: &ObjectMeta,
        first: GroupIndex,
        count: u64,
        asked: Range<u64>,
    ) -> Option<Vec<GroupBytes>> {
        let (wide_first, wide_count) = self.miss_span(meta, first, count);
        if wide_count <= count {
            return None;
        }
        // Boxed: only a first touch of a window reads it, and no hit should carry it.
        let mut wide = Box::pin(self.read_groups(meta, wide_first, wide_count, asked))
            .await
            .ok()?;
        let skip = (first.0 - wide_first.0) as usize;
        Some(wide.drain(skip..skip + count as usize).collect())
    }

    /// One whole verified group not cached, from this shard's disk or the owner, read
    /// alone.
    async fn group_exact(
        &self,
        meta: &ObjectMeta,
        group: GroupIndex,
    ) -> Result<GroupBytes, ShardError> {
        match self.owner(&meta.addr()) {
            None => {
                StorageCounters::add(&self.metrics.cache_misses, 1);
                self.group_from_disk(meta, group).await
            }
            Some(owner) => {
                let asked = group.0..group.0 + 1;
                let mut one = self.remote_groups(owner, meta, group, 1, asked).await?;
                one.pop().ok_or_else(|| mesh_confused(owner))
            }
        }
    }

    /// One whole verified group of an object this shard owns, read from its disk (never
    /// the cache: how the repair sweep audits its own copy), rebuilt from parity or
    /// another lane when its block is damaged.
    pub async fn group_from_disk(
        &self,
        meta: &ObjectMeta,
        group: GroupIndex,
    ) -> Result<GroupBytes, ShardError> {
        let key = GroupKey {
            addr: meta.addr(),
            group,
        };
        let store = self.local_store(&key.addr)?;
        let read = self.disk_group(store, meta, key).await;
        // Stored again since its metadata was loaded (evicted, then fetched or uploaded
        // again: on several dirs, its columns elsewhere): the bytes read are the new
        // copy's, not damage. Rebuilt with the old geometry, they failed, and the damage
        // report made replication discard the healthy new copy.
        if read.as_ref().is_err_and(ShardError::is_stored_damage)
            && !self.same_copy_stored(meta).await
        {
            self.forget_metas(&[key.addr]);
            return Err(ShardError::NotFound { addr: key.addr });
        }
        let read = match read {
            // Evicted since its metadata was loaded: a miss, not damage. A packed object
            // answered but not yet indexed is stored all the same (the unindexed map).
            Err(_) if matches!(self.commits.stored_retention(store, &key.addr), Ok(None)) => {
                self.forget_metas(&[key.addr]);
                Err(ShardError::NotFound { addr: key.addr })
            }
            Err(e) if meta.parity.is_some() && e.is_stored_damage() => {
                // Boxed (rare: damage only): every read's state would carry its size.
                Box::pin(self.degraded_group(store, meta, key, e, None)).await
            }
            Err(e) if meta.is_packed() && e.is_stored_damage() => {
                Box::pin(self.group_from_lanes(store, meta, key, e)).await
            }
            read => read,
        };
        if read.as_ref().is_err_and(ShardError::is_damage_past_repair) {
            self.damaged.report(key.addr);
        }
        read
    }

    /// The next copy this shard found damaged past what it rebuilds (by its scrubber or
    /// a read), once there is one: for the network to replace (`damaged.rs`).
    pub async fn next_damaged_copy(&self) -> Address {
        self.damaged.next().await
    }

    /// Groups `first..first + count`, verified: from the cache when all are there;
    /// else read with the rest of their windows while the cache has room
    /// ([`Shard::miss_span`]), or alone.
    pub async fn groups(
        &self,
        meta: &ObjectMeta,
        first: GroupIndex,
        count: u64,
    ) -> Result<Vec<GroupBytes>, ShardError> {
        self.groups_asked(meta, first, count, first.0..first.0 + count)
            .await
    }

    /// [`Shard::groups`], the misses counted among `asked`: for another shard reading
    /// `first..first + count` of an object this shard owns for its client (`asked` its
    /// client's groups, the rest its cache window). The asker counts none of them: one
    /// read's misses counted on two shards read as half the hit ratio it had.
    pub(super) async fn groups_asked(
        &self,
        meta: &ObjectMeta,
        first: GroupIndex,
        count: u64,
        asked: Range<u64>,
    ) -> Result<Vec<GroupBytes>, ShardError> {
        if let Some(cached) = self.cached_groups_asked(meta, first, count, &asked) {
            return Ok(cached);
        }
        Box::pin(self.groups_missed(meta, first, count, asked)).await
    }

    /// Groups not all in the cache: read with the rest of their windows, or alone.
    async fn groups_missed(
        &self,
        meta: &ObjectMeta,
        first: GroupIndex,
        count: u64,
        asked: Range<u64>,
    ) -> Result<Vec<GroupBytes>, ShardError> {
        let widened = self.read_widened(meta, first, count, asked.clone()).await;
        if let Some(widened) = widened {
            return Ok(widened);
        }
        self.read_groups(meta, first, count, asked).await
    }

    /// Groups `first..first + count`, verified, cached or not: for an object this shard
    /// owns, one DMA read for the whole run (read-ahead for streams, both groups of a
    /// range at once, a window); for one another shard owns, one mesh round trip per
    /// [`MESH_GROUPS_MAX`] groups. Groups not cached count as misses if `asked`, else as
    /// a window's bytes.
    async fn read_groups(
        &self,
        meta: &ObjectMeta,
        first: GroupIndex,
        count: u64,
        asked: Range<u64>,
    ) -> Result<Vec<GroupBytes>, ShardError> {
        let addr = meta.addr();
        if let Some(owner) = self.owner(&addr) {
            return self.remote_groups(owner, meta, first, count, asked).await;
        }
        if count == 1 {
            return self.groups_one_by_one(meta, first, count).await;
        }
        let store = self.local_store(&addr)?;
        let read = match self.files.read_groups(store, meta, first, count).await {
            Ok(read) => read,
            // One group at a time: each rebuilt from its stripe if it must be.
            Err(e) if meta.parity.is_some() && e.is_stored_damage() => {
                return self.groups_one_by_one(meta, first, count).await;
            }
            Err(e) => return Err(e),
        };
        let mut groups = Vec::with_capacity(count as usize);
        let mut damaged = Vec::new();
        // Which of the read's groups passed their check as read (not those served
        // from the cache instead): a rebuild takes them without hashing them again.
        let mut checked = vec![false; count as usize];
        // A run read cold is kept end to end in one arena, so that it leaves in one
        // `sendfile` (a range that found one of its two groups cached paid two): its
        // cached groups are kept again from the read, after the groups before it — when
        // they are at most half the run, so that the extra checks and copies never cost
        // more than the read's own (a read-ahead batch that missed one group of eight
        // keeps the other seven where they are). Old copies go with their arenas.
        let keep_cached_again = 2 * self.cached_count(meta, first, count) <= count;
        for g in first.0..first.0 + count {
            let key = GroupKey {
                addr,
                group: GroupIndex(g),
            };
            let expected = group_len(meta.len(), key.group).unwrap_or(0);
            let kept = match self.cached_group_counted(meta, &key, asked.contains(&g)) {
                Some(cached) if !keep_cached_again => cached,
                // A read that fails its check (counted in `verify_failures`) leaves the
                // cached copy in use, and the damage under it goes to the repair task.
                Some(cached) => {
                    match self.keep_verified(meta, key, read.group(key.group, expected)) {
                        Ok(kept) => {
                            checked[groups.len()] = true;
                            kept
                        }
                        Err(e) => {
                            self.queue_repair_of_damage(meta, key.group, &e);
                            cached
                        }
                    }
                }
                None => {
                    self.count_miss(meta, key.group, &asked);
                    match self.keep_verified(meta, key, read.group(key.group, expected)) {
                        Err(e) if meta.parity.is_some() && e.is_stored_damage() => {
                            damaged.push((groups.len(), key, e));
                            GroupBytes::in_memory(Bytes::new())
                        }
                        kept => {
                            let kept = kept?;
                            checked[groups.len()] = true;
                            kept
                        }
                    }
                }
            };
            groups.push(kept);
        }
        if damaged.is_empty() {
            return Ok(groups);
        }
        // The batch's damaged groups are rebuilt at once: their stripes' parity reads
        // are in flight together rather than one after another.
        let batch = repair::ReadBatch {
            read: &read,
            first: first.0,
            checked: &checked,
        };
        let rebuilds = damaged.into_iter().map(|(at, key, cause)| {
            let batch = Some(batch);
            async move {
                (
                    at,
                    self.degraded_group(store, meta, key, cause, batch).await,
                )
            }
        });
        for (at, rebuilt) in join_all(rebuilds.collect()).await {
            groups[at] = rebuilt?;
        }
        Ok(groups)
    }

    /// Queues the stripe of `group` for the repair task (which reads and rebuilds it
    /// when the disk is quiet) when `failed` is damage on disk its parity covers.
    fn queue_repair_of_damage(&self, meta: &ObjectMeta, group: GroupIndex, failed: &ShardError) {
        let Some(parity) = meta.parity.as_ref().filter(|_| failed.is_stored_damage()) else {
            return;
        };
        let stripe = parity.geometry(meta.len()).stripe_of(group);
        let key = StripeKey {
            addr: meta.addr(),
            stripe,
        };
        self.queue_repair(meta, key, 1, None);
    }

    async fn groups_one_by_one(
        &self,
        meta: &ObjectMeta,
        first: GroupIndex,
        count: u64,
    ) -> Result<Vec<GroupBytes>, ShardError> {
        let mut groups = Vec::with_capacity(count as usize);
        for g in first.0..first.0 + count {
            let key = GroupKey {
                addr: meta.addr(),
                group: GroupIndex(g),
            };
            let group = match self.cached_group(meta, &key) {
                Some(cached) => cached,
                None => self.group_exact(meta, key.group).await?,
            };
            groups.push(group);
        }
        Ok(groups)
    }

    /// One group of an object this shard owns, read from disk and checked.
    async fn disk_group(
        &self,
        store: &Store,
        meta: &ObjectMeta,
        key: GroupKey,
    ) -> Result<GroupBytes, ShardError> {
        let read = self.files.read_groups(store, meta, key.group, 1).await?;
        let expected = group_len(meta.len(), key.group).unwrap_or(0);
        self.keep_verified(meta, key, read.group(key.group, expected))
    }

    /// Groups `first..first + count` of an object `owner` holds: asked for in round trips
    /// of up to [`MESH_GROUPS_MAX`] groups (not one per group: each trip wakes both
    /// shards), each group checked here before it is kept or sent — unless this shard's
    /// cache has it by the time the answer arrives (kept once). The owner counts the hits
    /// and misses ([`Shard::groups_asked`]) and the window's bytes.
    async fn remote_groups(
        &self,
        owner: ShardIndex,
        meta: &ObjectMeta,
        first: GroupIndex,
        count: u64,
        asked: Range<u64>,
    ) -> Result<Vec<GroupBytes>, ShardError> {
        let addr = meta.addr();
        let mut groups = Vec::with_capacity(count as usize);
        let (mut at, end) = (first.0, first.0 + count);
        while at < end {
            let trip = (end - at).min(MESH_GROUPS_MAX);
            let op = MeshOp::Groups {
                addr,
                first: GroupIndex(at),
                count: trip,
                asked: asked.clone(),
            };
            let answered = match self.mesh()?.call(owner, op).await {
                Ok(MeshReply::Groups(answered)) if answered.len() as u64 == trip => answered,
                Ok(_) => return Err(mesh_confused(owner)),
                Err(e) => return Err(self.forget_if_gone(&addr, e)),
            };
            for (g, bytes) in (at..).zip(answered) {
                let key = GroupKey {
                    addr,
                    group: GroupIndex(g),
                };
                // Counted by the owner, which read it or had it cached.
                let kept = match self.cached_group_uncounted(meta, &key) {
                    Some(cached) => cached,
                    // Trust boundary: the owner checked it, and so does this shard.
                    None => self.keep_verified(meta, key, GroupBytes::in_memory(bytes))?,
                };
                groups.push(kept);
            }
            at += trip;
        }
        Ok(groups)
    }

    /// A group read because it was not cached: a miss if the read asked for it, else
    /// bytes read to fill its window ([`Shard::miss_span`]).
    fn count_miss(&self, meta: &ObjectMeta, group: GroupIndex, asked: &Range<u64>) {
        match asked.contains(&group.0) {
            true => StorageCounters::add(&self.metrics.cache_misses, 1),
            false => StorageCounters::add(
                &self.metrics.cache_window_bytes,
                group_len(meta.len(), group).unwrap_or(0),
            ),
        }
    }

    /// A mesh error as this shard returns it; a not-found means the object was evicted
    /// since its metadata was cached here, so the metadata is forgotten too.
    fn forget_if_gone(&self, addr: &Address, e: ShardError) -> ShardError {
        if e.code() == ron_codec::ErrorCode::NotFound {
            self.forget_metas(&[*addr]);
        }
        e
    }
}

/// The load of one object's metadata that other requests wait for. Dropped without
/// [`MetaLoad::settle`] (its request went away), it still ends: its waiters see the
/// channel close and load for themselves.
struct MetaLoad<'a> {
    shard: &'a Shard,
    addr: Address,
}

impl<'a> MetaLoad<'a> {
    fn lead(shard: &'a Shard, addr: Address) -> MetaLoad<'a> {
        shard.meta_loads.borrow_mut().insert(addr, Vec::new());
        MetaLoad { shard, addr }
    }

    fn settle(self, meta: Option<&Rc<ObjectMeta>>) {
        let waiters = self.shard.meta_loads.borrow_mut().remove(&self.addr);
        for waiter in waiters.into_iter().flatten() {
            let _ = waiter.try_send(meta.map(Rc::clone));
        }
    }
}

impl Drop for MetaLoad<'_> {
    fn drop(&mut self) {
        self.shard.meta_loads.borrow_mut().remove(&self.addr);
    }
}
