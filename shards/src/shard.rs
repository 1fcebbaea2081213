//! One shard: the state a pinned executor owns, its read path (metadata and verified
//! groups: cache → own disk (`disk.rs`) → owner over the mesh), and the entry points of
//! the upload (`upload.rs`) and group-commit (`commit.rs`) paths. It also answers other
//! shards' mesh requests, through the handler it gives [`Mesh::serve`].
//!
//! Everything here is `!Send` and lives on one executor thread. The only things shared
//! with other threads are the metrics (written only here) and the mesh channels.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ron_codec::tree::{group_len, GroupIndex, GROUP_LEN_BYTES};
use ron_codec::Address;
use ron_link::dht::DhtClient;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::{Latency, Shares};

use crate::arena::{ArenaCache, GroupBytes};
use crate::cache::{AddressMap, ClockCache, GroupKey};
use crate::commit::{CommitOutcome, GroupCommit};
use crate::disk::{self, ObjectFiles};
use crate::ec::{EcParams, StripeCodes, StripeIndex};
use crate::error::ShardError;
use crate::evict::{BackgroundClaims, Evicter, Forget};
use crate::layout::{DataDirs, Routing, ShardIndex};
use crate::mesh::{FlightHandler, FlightPart, Mesh, MeshHandler, MeshOp, MeshReply};
use crate::metrics::ShardMetrics;
use crate::record::{Location, ObjectMeta, Retention};
use crate::repair::{self, RepairQueue, StripeKey};
use crate::scrub::{self, ObjectCheck, Scrubber};
use crate::segment::LaneIndex;
use crate::store::{self, Replay, Store, StoreId};
use crate::upload::{self, Placement, StagedObject, Upload};

/// An object larger than this share of the verified cache (a quarter) is not cached:
/// reading it whole would evict a quarter of everything else, and a cold stream of it
/// would spend more on arena churn (allocate, zero, map, unmap) than on sending.
pub const CACHE_ADMIT_SHARE: u64 = 4;

/// Task-queue shares of the shard's background work (repair, scrub) against the 1,000
/// of the queue that serves clients: when both have work, clients get ~95 % of the CPU.
pub const BACKGROUND_SHARES: usize = 50;

/// Stripes of one object the repair task rebuilds before one write-back with one sync
/// per file: 64 stripes of 4+1 are 16 MiB of reads, and 4 MiB of writes held for one
/// bad block per stripe.
const REPAIR_BATCH_STRIPES: usize = 64;
/// How long the repair task lets clients' reads have the disk before it writes, at
/// most: a degraded stream's write-back then follows the stream, in few large batches,
/// instead of splitting the disk with it in many small ones.
pub const REPAIR_DEFER_MS_MAX: u64 = 500;

/// Whether a group about to be kept was checked already, where its bytes lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checked {
    No,
    WhereItLies,
}

/// Start-up sizing of one shard; every cache and table has a limit.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// The data dirs (`layout.rs`): partition table, stores, temp dirs.
    pub data_dirs: DataDirs,
    /// Budget of this shard's verified-group cache, bytes.
    pub cache_bytes_max: usize,
    /// Budget of this shard's metadata cache, bytes (chunk trees included: 32 B per
    /// 64 KiB group; see `ObjectMeta::footprint_bytes`).
    pub meta_bytes_max: usize,
    /// Object files this shard keeps open, files.
    pub open_files_max: usize,
    /// LMDB map size of each store this shard owns (the most its index can grow to),
    /// bytes.
    pub index_bytes_max: usize,
    /// Most uploads acknowledged by one group commit (one fsync round), records; ≥ 1.
    pub commit_batch_max: usize,
    /// The erasure code new objects with a file of their own are written with.
    pub ec: EcParams,
    /// This shard's share of the node's scrub rate, bytes per second; 0: no scrubber.
    pub scrub_bytes_per_s: u64,
    /// The DHT thread's mailboxes, when the node is in a network (`--p2p`): stored
    /// objects are announced there.
    pub dht: Option<DhtClient>,
    /// This shard's share of the node's `fetched_bytes_max`: the evictable copies
    /// (read-through) its stores may hold, bytes; `None`: never evicted.
    pub evictable_bytes_max: Option<u64>,
}

/// Requests waiting for a metadata load: told its outcome (`None`: it failed).
type MetaWaiters = Vec<LocalSender<Option<Rc<ObjectMeta>>>>;

/// The state of one shard.
pub struct Shard {
    index: ShardIndex,
    routing: Routing,
    config: ShardConfig,
    stores: HashMap<StoreId, Store>,
    groups: RefCell<ArenaCache>,
    metas: RefCell<ClockCache<Address, Rc<ObjectMeta>>>,
    /// The last metadata too heavy for `metas` (a tree bigger than its whole budget).
    oversized_meta: RefCell<Option<Rc<ObjectMeta>>>,
    /// Metadata loads running, and the requests waiting for each.
    meta_loads: RefCell<AddressMap<Address, MetaWaiters>>,
    files: ObjectFiles,
    commits: Rc<GroupCommit>,
    /// What each store's start-up replay of its segments did (for the start-up log).
    replays: Vec<(StoreId, Replay)>,
    upload_seq: Cell<u64>,
    mesh: Option<Rc<Mesh>>,
    /// Bytes of disk reads started ahead of their senders and not yet sent past.
    read_ahead_bytes: Rc<Cell<u64>>,
    /// Stripes served rebuilt, waiting for the repair task; and its wake-up.
    repairs: RepairQueue,
    repair_wake: LocalSender<()>,
    /// The Reed–Solomon code of each `k+m` met (built once: its matrices).
    codes: Rc<StripeCodes>,
    /// Set while an operator has the scrubber paused (the scrubber holds it weakly).
    scrub_paused: Rc<Cell<bool>>,
    /// Objects the scrubber, the repair task or the evicter is working on.
    claims: BackgroundClaims,
    /// The read-through that answers other shards' [`MeshOp::Flight`] (the engine's,
    /// once it has one).
    flights: RefCell<Option<FlightHandler>>,
    metrics: Arc<ShardMetrics>,
}

/// Read-ahead held on one shard at most, bytes: 128 streams at full depth. Past it,
/// streams read one group at a time, so a crowd of cold streams (or of slow readers
/// holding their read-ahead) cannot hold more than this in DMA buffers.
pub const READ_AHEAD_BYTES_MAX: u64 = 256 << 20;

/// A share of the shard's read-ahead budget, given back when dropped.
#[derive(Debug)]
pub struct ReadAheadPermit {
    held: Rc<Cell<u64>>,
    bytes: u64,
}

impl Drop for ReadAheadPermit {
    fn drop(&mut self) {
        self.held.set(self.held.get() - self.bytes);
    }
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("index", &self.index)
            .field("stores", &self.stores.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Shard {
    /// Opens the stores this shard owns and starts its background tasks (group commit,
    /// mesh service). Blocking opens are start-up work, before the shard accepts.
    pub async fn start(
        index: ShardIndex,
        routing: Routing,
        config: ShardConfig,
        mesh: Option<Mesh>,
        metrics: Arc<ShardMetrics>,
    ) -> Result<Rc<Shard>, ShardError> {
        let mut stores = HashMap::new();
        let mut replays = Vec::new();
        for id in routing.stores_of(index) {
            let dirs = &config.data_dirs;
            let replicas = store::index_replica_dirs(id, dirs.count(), config.ec.parity);
            // Packed objects (one-dir nodes only) get `m + 1` copies: the lanes.
            let lanes = match dirs.count() {
                1 => config.ec.parity + 1,
                _ => 1,
            };
            let store = Store::open(
                dirs.store_roots(id),
                &replicas,
                lanes,
                id,
                config.index_bytes_max,
            )?;
            replays.push((id, store.replay_blocking()?));
            let stats = store.stats()?;
            ShardMetrics::add(&metrics.objects_stored, stats.objects);
            ShardMetrics::add(&metrics.bytes_stored, stats.bytes);
            stores.insert(id, store);
        }
        metrics.cache_bytes_max.store(
            config.cache_bytes_max as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let groups = ArenaCache::new(config.cache_bytes_max).map_err(ShardError::io(
            "create a memfd arena for the verified-group cache",
            "memfd:ron-verified-groups",
        ))?;
        let (evicter_wake, evicter_wakes) = match config.evictable_bytes_max {
            Some(_) => {
                let (wake, wakes) = local_channel::new_bounded(1);
                (Some(wake), Some(wakes))
            }
            None => (None, None),
        };
        let commits = GroupCommit::start(
            index,
            config.commit_batch_max,
            Arc::clone(&metrics),
            config.dht.clone(),
            evicter_wake,
        );
        let (repair_wake, repair_wakes) = local_channel::new_bounded(1);
        let shard = Rc::new(Shard {
            index,
            routing,
            groups: RefCell::new(groups),
            metas: RefCell::new(ClockCache::new(config.meta_bytes_max)),
            oversized_meta: RefCell::new(None),
            meta_loads: RefCell::new(AddressMap::default()),
            files: ObjectFiles::new(config.open_files_max),
            config,
            stores,
            commits,
            replays,
            upload_seq: Cell::new(0),
            mesh: mesh.map(Rc::new),
            read_ahead_bytes: Rc::new(Cell::new(0)),
            repairs: RepairQueue::default(),
            repair_wake,
            codes: Rc::new(StripeCodes::default()),
            scrub_paused: Rc::new(Cell::new(false)),
            claims: BackgroundClaims::default(),
            flights: RefCell::new(None),
            metrics,
        });
        let background = glommio::executor().create_task_queue(
            Shares::Static(BACKGROUND_SHARES),
            Latency::NotImportant,
            "ron-background",
        );
        start_repairs(&shard, repair_wakes, background)?;
        start_scrubber(&shard, background)?;
        start_announce_walk(&shard, background)?;
        if let Some(wakes) = evicter_wakes {
            start_evicter(&shard, wakes, background)?;
        }
        if let Some(mesh) = &shard.mesh {
            Rc::clone(mesh).serve(mesh_handler(&shard));
        }
        Ok(shard)
    }

    pub fn index(&self) -> ShardIndex {
        self.index
    }

    /// What each store's start-up replay did: packed objects indexed from their
    /// segments, and torn segment tails skipped.
    pub fn replays(&self) -> &[(StoreId, Replay)] {
        &self.replays
    }

    pub fn routing(&self) -> &Routing {
        &self.routing
    }

    pub fn metrics(&self) -> &Arc<ShardMetrics> {
        &self.metrics
    }

    /// The owner of `addr` when it is another shard; `None` when it is this one.
    pub fn owner(&self, addr: &Address) -> Option<ShardIndex> {
        let owner = self.routing.owner(addr);
        (owner != self.index).then_some(owner)
    }

    fn mesh(&self) -> Result<&Mesh, ShardError> {
        self.mesh.as_deref().ok_or(ShardError::Mesh {
            shard: self.index.0,
            reason: "no mesh with one shard",
        })
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
        if let Some(waiting) = self.join_meta_load(addr) {
            ShardMetrics::add(&self.metrics.meta_load_waits, 1);
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

    fn cached_meta(&self, addr: &Address) -> Option<Rc<ObjectMeta>> {
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
                MeshReply::Meta(meta) => meta,
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
        ShardMetrics::add(&self.metrics.meta_loads, 1);
        store::read_record(store, addr)
            .await?
            .ok_or(ShardError::NotFound { addr: *addr })
    }

    fn local_store(&self, addr: &Address) -> Result<&Store, ShardError> {
        let id = self.routing.store_of(addr);
        self.stores.get(&id).ok_or(ShardError::Mesh {
            shard: self.index.0,
            reason: "asked for an object of a store it does not own",
        })
    }

    /// One whole verified group: from the cache, this shard's disk, or the owner.
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
        ShardMetrics::add(&self.metrics.cache_misses, 1);
        match self.owner(&key.addr) {
            None => {
                let store = self.local_store(&key.addr)?;
                match self.disk_group(store, meta, key).await {
                    // Evicted since its metadata was loaded: a miss, not damage.
                    Err(_) if !store.contains(&key.addr).unwrap_or(true) => {
                        self.forget_metas(&[key.addr]);
                        Err(ShardError::NotFound { addr: key.addr })
                    }
                    Err(e) if meta.parity.is_some() && e.is_stored_damage() => {
                        self.degraded_group(store, meta, key, e, None).await
                    }
                    Err(e) if meta.is_packed() && e.is_stored_damage() => {
                        self.group_from_lanes(store, meta, key, e).await
                    }
                    read => read,
                }
            }
            Some(owner) => {
                let bytes = match self.remote_group(owner, key).await {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        if e.code() == ron_codec::ErrorCode::NotFound {
                            // Evicted since its metadata was cached here.
                            self.forget_metas(&[key.addr]);
                        }
                        return Err(e);
                    }
                };
                // Trust boundary: the owner checked it, and so does this shard.
                self.keep_verified(meta, key, GroupBytes::in_memory(bytes))
            }
        }
    }

    /// Groups `first..first + count`, verified: from the cache when all are there;
    /// else, for an object this shard owns, one DMA read for the whole run (read-ahead
    /// for streams, both groups of a range at once); else one group at a time.
    pub async fn groups(
        &self,
        meta: &ObjectMeta,
        first: GroupIndex,
        count: u64,
    ) -> Result<Vec<GroupBytes>, ShardError> {
        if let Some(cached) = self.cached_groups(meta, first, count) {
            return Ok(cached);
        }
        let addr = meta.addr();
        if self.owner(&addr).is_some() || count == 1 {
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
        for g in first.0..first.0 + count {
            let key = GroupKey {
                addr,
                group: GroupIndex(g),
            };
            let kept = match self.cached_group(meta, &key) {
                Some(cached) => cached,
                None => {
                    ShardMetrics::add(&self.metrics.cache_misses, 1);
                    let expected = group_len(meta.len(), key.group).unwrap_or(0);
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

    async fn groups_one_by_one(
        &self,
        meta: &ObjectMeta,
        first: GroupIndex,
        count: u64,
    ) -> Result<Vec<GroupBytes>, ShardError> {
        let mut groups = Vec::with_capacity(count as usize);
        for g in first.0..first.0 + count {
            groups.push(self.group(meta, GroupIndex(g)).await?);
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

    /// A group whose block failed (`cause`), rebuilt from the rest of its stripe and
    /// checked against its chaining value; the stripe is queued for repair. More bad
    /// blocks than the parity covers: a clean failure, counted. `batch`: the run of
    /// groups the failed one came in, whose other blocks of the stripe are not read
    /// again.
    async fn degraded_group(
        &self,
        store: &Store,
        meta: &ObjectMeta,
        key: GroupKey,
        cause: ShardError,
        batch: Option<repair::ReadBatch<'_>>,
    ) -> Result<GroupBytes, ShardError> {
        let Some(parity) = &meta.parity else {
            return Err(cause);
        };
        let geometry = parity.geometry(meta.len());
        let stripe = geometry.stripe_of(key.group);
        let mut read = repair::read_stripe(&self.files, store, meta, parity, stripe, batch).await;
        let bad = read.bad_columns();
        let code = self.codes.get(parity.params);
        if let Err(e) = repair::rebuild(&code, meta, parity, stripe, &mut read) {
            ShardMetrics::add(&self.metrics.ec_unrecoverable, 1);
            return Err(e);
        }
        let column = (key.group.0 - geometry.groups_of(stripe).start) as usize;
        // The bytes served are the bytes the rebuild checked; the write-back of a bad
        // block gets a copy.
        let rebuilt = read.blocks[column].take().unwrap_or_default();
        if bad.contains(&column) {
            read.blocks[column] = Some(rebuilt.clone());
        }
        ShardMetrics::add(&self.metrics.ec_degraded_reads, 1);
        if !bad.is_empty() {
            // The rebuilt blocks are checked: repair writes them as they are.
            let writes = repair::block_writes(store, meta, &geometry, stripe, &bad, &mut read);
            let key = StripeKey {
                addr: key.addr,
                stripe,
            };
            self.queue_repair(meta, key, bad.len() as u64, Some(writes));
        }
        self.keep_rebuilt(meta, key, GroupBytes::in_memory(Bytes::from(rebuilt)))
    }

    /// A packed object whose copy in lane 0 failed (`cause`), from the first other lane
    /// whose copy passes its check; lane 0 is queued for repair. No lane good: a clean
    /// failure, counted.
    async fn group_from_lanes(
        &self,
        store: &Store,
        meta: &ObjectMeta,
        key: GroupKey,
        cause: ShardError,
    ) -> Result<GroupBytes, ShardError> {
        for lane in (1..store.lanes_on_disk()).map(LaneIndex) {
            let Some(body) = repair::lane_copy(&self.files, store, meta, lane).await else {
                continue;
            };
            ShardMetrics::add(&self.metrics.ec_degraded_reads, 1);
            let writes = repair::needle_writes(store, meta, &[LaneIndex(0)], &body);
            let stripe = StripeKey {
                addr: key.addr,
                stripe: StripeIndex(0),
            };
            self.queue_repair(meta, stripe, 1, Some(writes));
            return self.keep_rebuilt(meta, key, GroupBytes::in_memory(Bytes::from(body)));
        }
        if store.lanes_on_disk() > 1 {
            ShardMetrics::add(&self.metrics.ec_unrecoverable, 1);
        }
        Err(cause)
    }

    fn queue_repair(
        &self,
        meta: &ObjectMeta,
        key: StripeKey,
        bad_blocks: u64,
        rebuilt: Option<Vec<repair::BlockWrite>>,
    ) {
        let meta = match self.cached_meta(&key.addr) {
            Some(meta) => meta,
            None => Rc::new(meta.clone()),
        };
        match self.repairs.add(key, &meta, bad_blocks, rebuilt) {
            repair::Added::New => {
                ShardMetrics::add(&self.metrics.ec_missing_blocks, bad_blocks);
                let _ = self.repair_wake.try_send(());
            }
            repair::Added::AlreadyQueued => {}
            repair::Added::Full => ShardMetrics::add(&self.metrics.ec_repairs_dropped, 1),
        }
    }

    /// Returns once the read path has had no read in flight for two ticks in a row, or
    /// the repair queue holds half its budget of rebuilt blocks, or after
    /// [`REPAIR_DEFER_MS_MAX`].
    async fn wait_for_quiet_disk(&self) {
        const TICK: Duration = Duration::from_millis(1);
        let reads = self.files.reads_in_flight();
        let since = Instant::now();
        let mut quiet_ticks = 0;
        while quiet_ticks < 2
            && self.repairs.held_bytes() < repair::REPAIR_HELD_BYTES_MAX / 2
            && since.elapsed() < Duration::from_millis(REPAIR_DEFER_MS_MAX)
        {
            quiet_ticks = match reads.get() {
                0 => quiet_ticks + 1,
                _ => 0,
            };
            glommio::timer::sleep(TICK).await;
        }
    }

    /// Writes back the bad blocks of `stripes` of one object: those a degraded read
    /// rebuilt and checked as they are, the others read again from disk, rebuilt and
    /// checked here; one write per block and one sync per file (on the blocking pool).
    /// Returns how many stripes could not be repaired.
    async fn repair_stripes(&self, meta: &ObjectMeta, stripes: Vec<repair::TakenStripe>) -> u64 {
        if meta.is_packed() {
            return self.repair_lanes(meta, stripes).await;
        }
        let all = stripes.len() as u64;
        let (Some(parity), Ok(store)) = (&meta.parity, self.local_store(&meta.addr())) else {
            return all;
        };
        let code = self.codes.get(parity.params);
        let geometry = parity.geometry(meta.len());
        let mut writes = Vec::new();
        let mut failed = 0;
        for (stripe, _, rebuilt) in stripes {
            if let Some(rebuilt) = rebuilt {
                writes.extend(rebuilt);
                continue;
            }
            let read = repair::read_stripe(&self.files, store, meta, parity, stripe, None);
            let mut read = read.await;
            let bad = read.bad_columns();
            if bad.is_empty() {
                continue;
            }
            match repair::rebuild(&code, meta, parity, stripe, &mut read) {
                Ok(()) => writes.extend(repair::block_writes(
                    store, meta, &geometry, stripe, &bad, &mut read,
                )),
                Err(_) => failed += 1,
            }
        }
        if writes.is_empty() {
            return failed;
        }
        let written = repair::write_back(writes).await;
        self.files.forget(&meta.addr(), store.dir_count());
        match written {
            Ok(bytes) => {
                ShardMetrics::add(&self.metrics.ec_repair_bytes, bytes);
                failed
            }
            Err(_) => all,
        }
    }

    /// Writes back the lanes of a packed object whose copies a read found bad: the
    /// needle the read checked, or, if the queue could not hold it, the lanes read and
    /// checked again. Returns 1 if the repair failed, else 0.
    async fn repair_lanes(&self, meta: &ObjectMeta, stripes: Vec<repair::TakenStripe>) -> u64 {
        let (Ok(store), Location::Packed(at)) = (self.local_store(&meta.addr()), meta.location)
        else {
            return 1;
        };
        let held = stripes.into_iter().find_map(|(_, _, held)| held);
        let writes = match held {
            Some(writes) => writes,
            None => {
                let check = repair::check_lanes(&self.files, store, meta).await;
                match &check.body {
                    Some(body) => repair::needle_writes(store, meta, &check.bad, body),
                    None => return 1,
                }
            }
        };
        let written = repair::write_back(writes).await;
        self.files.forget_segment(store, at.segment);
        match written {
            Ok(bytes) => {
                ShardMetrics::add(&self.metrics.ec_repair_bytes, bytes);
                0
            }
            Err(_) => 1,
        }
    }

    /// Whether `meta`'s object still has its record (not evicted since).
    fn still_stored(&self, meta: &ObjectMeta) -> bool {
        let addr = meta.addr();
        self.local_store(&addr)
            .and_then(|store| store.contains(&addr))
            .unwrap_or(false)
    }

    /// Reads and checks every stored block of `addr`'s object now, unpaced (`ron
    /// repair`), and rebuilds and writes back what its parity can rebuild. On the
    /// object's owner only: another shard answers `Mesh`.
    pub async fn check_object(&self, addr: &Address) -> Result<ObjectCheck, ShardError> {
        let store = self.local_store(addr)?;
        let meta = store::read_record(store, addr)
            .await?
            .ok_or(ShardError::NotFound { addr: *addr })?;
        let check = scrub::check_object(&self.files, &self.codes, store, &meta, None).await;
        self.files.forget(addr, store.dir_count());
        ShardMetrics::add(&self.metrics.ec_repair_bytes, check.repaired_bytes);
        Ok(check)
    }

    /// Pauses (`true`) or resumes the scrubber.
    pub fn pause_scrub(&self, paused: bool) {
        self.scrub_paused.set(paused);
        self.metrics
            .scrub_paused
            .store(u64::from(paused), std::sync::atomic::Ordering::Relaxed);
    }

    /// Groups `first..first + count` if the cache holds every one of them.
    pub fn cached_groups(
        &self,
        meta: &ObjectMeta,
        first: GroupIndex,
        count: u64,
    ) -> Option<Vec<GroupBytes>> {
        let addr = meta.addr();
        let all_cached = {
            let cache = self.groups.borrow();
            (first.0..first.0 + count).all(|g| {
                cache.contains(&GroupKey {
                    addr,
                    group: GroupIndex(g),
                })
            })
        };
        all_cached.then(|| {
            (first.0..first.0 + count)
                .filter_map(|g| {
                    let key = GroupKey {
                        addr,
                        group: GroupIndex(g),
                    };
                    self.cached_group(meta, &key)
                })
                .collect()
        })
    }

    fn cached_group(&self, meta: &ObjectMeta, key: &GroupKey) -> Option<GroupBytes> {
        let cached = self.groups.borrow_mut().get(key)?;
        ShardMetrics::add(&self.metrics.cache_hits, 1);
        debug_assert_group_len(meta, key.group, &cached);
        Some(cached)
    }

    /// Checks `group` once, where it is kept: copied into an arena of the verified
    /// cache and checked there when the object is admitted and there is room (the bytes
    /// checked are the bytes sent), else checked where it is (its DMA buffer, or the
    /// bytes off the mesh) and sent from there.
    fn keep_verified(
        &self,
        meta: &ObjectMeta,
        key: GroupKey,
        group: GroupBytes,
    ) -> Result<GroupBytes, ShardError> {
        self.keep(meta, key, group, Checked::No)
    }

    /// Keeps a group a rebuild has just checked where it lies: checked again only if
    /// it is copied into the verified cache.
    fn keep_rebuilt(
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
        (held + bytes <= READ_AHEAD_BYTES_MAX).then(|| {
            self.read_ahead_bytes.set(held + bytes);
            ReadAheadPermit {
                held: Rc::clone(&self.read_ahead_bytes),
                bytes,
            }
        })
    }

    /// Whether groups of this object may enter the verified cache: not those of an
    /// object larger than a [`CACHE_ADMIT_SHARE`]th of it, whose every read would push
    /// out that share of everything else (a scan). Those are verified in the DMA
    /// buffers they were read into and sent from there, cheaper than arenas.
    fn admits_to_cache(&self, meta: &ObjectMeta) -> bool {
        meta.len() <= self.config.cache_bytes_max as u64 / CACHE_ADMIT_SHARE
    }

    async fn remote_group(&self, owner: ShardIndex, key: GroupKey) -> Result<Bytes, ShardError> {
        let op = MeshOp::Group {
            addr: key.addr,
            group: key.group,
        };
        match self.mesh()?.call(owner, op).await? {
            MeshReply::Group(bytes) => Ok(bytes),
            _ => Err(mesh_confused(owner)),
        }
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

    /// Starts an upload of `expected_len` bytes if announced; a long one gets a temp
    /// file in the data dir's temp area, a small one is kept in memory to be packed.
    pub fn begin_upload(&self, expected_len: Option<u64>) -> Upload {
        let seq = self.upload_seq.get();
        self.upload_seq.set(seq + 1);
        let name = format!("upload-{}-{}-{seq}", self.index.0, std::process::id());
        let placement = Placement {
            dirs: self.config.data_dirs.clone(),
            // Spreads column 0 of successive uploads over the dirs.
            rot: seq as u8,
        };
        Upload::new(placement, name, expected_len, self.config.ec)
    }

    /// Makes a staged object visible on its owner shard and returns once it is durable.
    pub async fn commit(&self, staged: StagedObject) -> Result<CommitOutcome, ShardError> {
        match self.owner(&staged.meta.addr()) {
            None => self.commit_local(staged).await,
            Some(owner) => match self.mesh()?.call(owner, MeshOp::Commit(staged)).await? {
                MeshReply::Committed(outcome) => Ok(outcome),
                _ => Err(mesh_confused(owner)),
            },
        }
    }

    async fn commit_local(&self, staged: StagedObject) -> Result<CommitOutcome, ShardError> {
        let store = self.local_store(&staged.meta.addr())?;
        // An upload of a stored object may have to make it kept: the commit queue looks.
        let evictable = staged.retention == Retention::Evictable;
        if evictable && self.cached_meta(&staged.meta.addr()).is_some() {
            upload::discard(staged).await;
            return Ok(CommitOutcome::AlreadyStored);
        }
        self.commits.commit(store, staged).await
    }

    /// The owner side of the mesh: what this shard answers to another shard's request.
    async fn answer(&self, op: MeshOp) -> Result<MeshReply, ShardError> {
        match op {
            MeshOp::Meta(addr) => Ok(MeshReply::Meta((*self.meta(&addr).await?).clone())),
            MeshOp::Group { addr, group } => {
                let meta = self.meta(&addr).await?;
                let group = self.group(&meta, group).await?;
                Ok(MeshReply::Group(group.to_bytes()))
            }
            MeshOp::Commit(staged) => self.commit_local(staged).await.map(MeshReply::Committed),
            MeshOp::Forget(addrs) => {
                self.forget_metas(&addrs);
                Ok(MeshReply::Forgotten)
            }
            MeshOp::Flight { addr, from } => {
                let handler = self.flights.borrow().clone();
                let part = match handler {
                    Some(serve) => serve(addr, from).await,
                    None => FlightPart::Failed {
                        code: ron_codec::ErrorCode::NotFound,
                        message: ShardError::NotFound { addr }.to_string(),
                    },
                };
                Ok(MeshReply::Flight(part))
            }
        }
    }

    /// Gives the shard the read-through that answers other shards following a fetch of
    /// an object it owns.
    pub fn serve_flights(&self, handler: FlightHandler) {
        *self.flights.borrow_mut() = Some(handler);
    }

    /// Verified groups from group `from` on of the owner's read-through of `addr`.
    pub async fn follow_flight(
        &self,
        owner: ShardIndex,
        addr: Address,
        from: u64,
    ) -> Result<FlightPart, ShardError> {
        match self
            .mesh()?
            .call(owner, MeshOp::Flight { addr, from })
            .await?
        {
            MeshReply::Flight(part) => Ok(part),
            _ => Err(mesh_confused(owner)),
        }
    }

    /// Drops the cached metadata of `addrs` (evicted objects): the next request for
    /// one loads it again, and misses.
    fn forget_metas(&self, addrs: &[Address]) {
        let mut metas = self.metas.borrow_mut();
        let mut oversized = self.oversized_meta.borrow_mut();
        for addr in addrs {
            metas.remove(addr);
            if oversized.as_ref().is_some_and(|m| m.addr() == *addr) {
                *oversized = None;
            }
        }
    }

    /// Drops the metadata of `addrs` on every shard, this one first; returns once all
    /// have (a shard that cannot be asked has its cache healed by its next miss).
    async fn forget_everywhere(&self, addrs: Vec<Address>) {
        self.forget_metas(&addrs);
        let Some(mesh) = &self.mesh else { return };
        let others = (0..self.routing.shard_count())
            .map(ShardIndex)
            .filter(|s| *s != self.index);
        let asks = others.map(|s| mesh.call(s, MeshOp::Forget(addrs.clone())));
        for answer in join_all(asks.collect()).await {
            if let Err(e) = answer {
                tracing::warn!(error = %e, "a shard did not forget evicted objects");
            }
        }
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

/// The handler this shard gives its end of the mesh: each request runs
/// [`Shard::answer`]; the mesh sends the result back.
fn mesh_handler(shard: &Rc<Shard>) -> MeshHandler {
    let shard = Rc::clone(shard);
    Rc::new(move |op| {
        let shard = Rc::clone(&shard);
        Box::pin(async move { shard.answer(op).await })
    })
}

/// Runs `futures` concurrently on this task and returns their outputs in order.
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pending: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (future, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                if let std::task::Poll::Ready(done) = future.as_mut().poll(cx) {
                    *output = Some(done);
                }
            }
        }
        match outputs.iter().all(Option::is_some) {
            true => std::task::Poll::Ready(()),
            false => std::task::Poll::Pending,
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// The shard's repair task: woken when a stripe is queued, it repairs the most-asked
/// stripe until the queue is empty. It holds the shard weakly and ends with it.
fn start_repairs(
    shard: &Rc<Shard>,
    wakes: LocalReceiver<()>,
    queue: glommio::TaskQueueHandle,
) -> Result<(), ShardError> {
    let shard = Rc::downgrade(shard);
    let task = glommio::spawn_local_into(
        async move {
            while wakes.recv().await.is_some() {
                loop {
                    let Some(shard) = shard.upgrade() else {
                        return;
                    };
                    shard.wait_for_quiet_disk().await;
                    let Some((meta, stripes)) = shard.repairs.take_hottest(REPAIR_BATCH_STRIPES)
                    else {
                        break;
                    };
                    let bad_blocks: u64 = stripes.iter().map(|(_, bad, _)| bad).sum();
                    // Waits out a scrub or an eviction of the object; evicted: nothing
                    // to repair.
                    let claim = shard.claims.claim(meta.addr()).await;
                    let failed = match shard.still_stored(&meta) {
                        true => shard.repair_stripes(&meta, stripes).await,
                        false => 0,
                    };
                    drop(claim);
                    ShardMetrics::add(&shard.metrics.ec_repair_failures, failed);
                    shard
                        .metrics
                        .ec_missing_blocks
                        .fetch_sub(bad_blocks, std::sync::atomic::Ordering::Relaxed);
                }
            }
        },
        queue,
    )
    .map_err(task_error("start the repair task"))?;
    task.detach();
    Ok(())
}

/// The shard's evicter (`evict.rs`): keeps the evictable copies within the shard's
/// share of `fetched_bytes_max`. Woken once at start and after each index commit that
/// stored evictable copies.
fn start_evicter(
    shard: &Rc<Shard>,
    wakes: LocalReceiver<()>,
    queue: glommio::TaskQueueHandle,
) -> Result<(), ShardError> {
    let weak = Rc::downgrade(shard);
    let forget: Forget = Rc::new(move |addrs| {
        let shard = weak.clone();
        Box::pin(async move {
            if let Some(shard) = shard.upgrade() {
                shard.forget_everywhere(addrs).await;
            }
        })
    });
    let evicter = Evicter {
        stores: shard.stores.values().cloned().collect(),
        budget_bytes: shard.config.evictable_bytes_max.unwrap_or(u64::MAX),
        commits: Rc::downgrade(&shard.commits),
        forget,
        metrics: Arc::clone(&shard.metrics),
        dht: shard.config.dht.clone(),
        claims: shard.claims.clone(),
    };
    glommio::spawn_local_into(evicter.run(wakes), queue)
        .map_err(task_error("start the evicter"))?
        .detach();
    Ok(())
}

/// The shard's scrubber (`scrub.rs`), unless its rate is 0.
fn start_scrubber(shard: &Rc<Shard>, queue: glommio::TaskQueueHandle) -> Result<(), ShardError> {
    let rate = shard.config.scrub_bytes_per_s;
    if rate == 0 {
        return Ok(());
    }
    let stores = shard.stores.values().cloned().collect();
    let scrubber = Scrubber::new(
        stores,
        Rc::clone(&shard.codes),
        Arc::clone(&shard.metrics),
        Rc::downgrade(&shard.scrub_paused),
        rate,
        shard.files.reads_in_flight(),
        shard.claims.clone(),
    )?;
    glommio::spawn_local_into(scrubber.run(), queue)
        .map_err(task_error("start the scrubber"))?
        .detach();
    Ok(())
}

/// On a node in a network, announces once at start-up every object the shard's stores
/// hold, so that objects stored before `--p2p` was turned on (or whose announcement a
/// full mailbox dropped) are found too. The DHT thread keeps what it already provides
/// (only keys new to it are published at once; the sweep republishes the rest). A full
/// mailbox makes the walk wait, never drop; it runs in the background queue.
fn start_announce_walk(
    shard: &Rc<Shard>,
    queue: glommio::TaskQueueHandle,
) -> Result<(), ShardError> {
    let Some(dht) = shard.config.dht.clone() else {
        return Ok(());
    };
    let stores: Vec<Store> = shard.stores.values().cloned().collect();
    glommio::spawn_local_into(announce_stored(stores, dht), queue)
        .map_err(task_error("start the announce walk"))?
        .detach();
    Ok(())
}

async fn announce_stored(stores: Vec<Store>, dht: DhtClient) {
    use ron_link::dht::ANNOUNCE_BATCH_MAX;
    for store in stores {
        let mut after = None;
        loop {
            let batch = match store.addresses_after(after.as_ref(), ANNOUNCE_BATCH_MAX) {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(store = store.id().0, error = %e, "announce walk stopped");
                    break;
                }
            };
            let Some(last) = batch.last().copied() else {
                break;
            };
            let mut keys: Vec<[u8; 32]> = batch.iter().map(|a| *a.as_bytes()).collect();
            loop {
                match dht.try_announce(keys) {
                    Some(Ok(())) => break,
                    Some(Err(back)) => {
                        keys = back;
                        glommio::timer::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    None => return,
                }
            }
            if batch.len() < ANNOUNCE_BATCH_MAX {
                break;
            }
            after = Some(last);
            glommio::yield_if_needed().await;
        }
    }
}

fn task_error(op: &'static str) -> impl FnOnce(glommio::GlommioError<()>) -> ShardError {
    move |e| ShardError::io(op, "glommio task queue")(std::io::Error::other(e.to_string()))
}

fn mesh_confused(owner: ShardIndex) -> ShardError {
    ShardError::Mesh {
        shard: owner.0,
        reason: "answered with the wrong reply kind",
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
