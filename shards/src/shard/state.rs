//! What one shard holds: its configuration, stores, caches, queues and handles — the
//! state every operation in the files beside this one reads or changes — and the
//! accessors and small helpers they share. No operation lives here.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use glommio::channels::local_channel::LocalSender;
use ron_codec::Address;
use ron_link::counters::StorageCounters;
use ron_link::dht::DhtClient;

use crate::arena::ArenaCache;
use crate::cache::{AddressMap, ClockCache};
use crate::commit::GroupCommit;
use crate::damaged::DamagedCopies;
use crate::disk::ObjectFiles;
use crate::ec::{EcParams, StripeCodes};
use crate::error::ShardError;
use crate::evict::BackgroundClaims;
use crate::free_space::FreeSpace;
use crate::ids::{ShardIndex, StoreId};
use crate::layout::{DataDirs, Routing};
use crate::lifecycle::BackgroundTasks;
use crate::mesh::{FlightHandler, Mesh};
use crate::record::ObjectMeta;
use crate::repair::RepairQueue;
use crate::store::{Replay, Store};

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
    /// Which stored objects the start-up walk announces (the node's denylist keeps
    /// blocked ones out).
    pub announce_filter: AnnounceFilter,
}

/// Decides whether the start-up walk announces a stored object; the default announces
/// every one. Read at each batch, so a filter that changes (a reloaded denylist) is
/// followed from then on.
#[derive(Clone, Default)]
pub struct AnnounceFilter(Option<Rc<AllowsAddress>>);

/// Whether an address may be announced.
type AllowsAddress = dyn Fn(&Address) -> bool;

impl AnnounceFilter {
    pub fn new(allows: impl Fn(&Address) -> bool + 'static) -> AnnounceFilter {
        AnnounceFilter(Some(Rc::new(allows)))
    }

    pub fn allows(&self, addr: &Address) -> bool {
        self.0.as_ref().is_none_or(|allows| allows(addr))
    }
}

impl std::fmt::Debug for AnnounceFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "AnnounceFilter(set)"
        } else {
            "AnnounceFilter(all)"
        })
    }
}

/// Requests waiting for a metadata load: told its outcome (`None`: it failed).
type MetaWaiters = Vec<LocalSender<Option<Rc<ObjectMeta>>>>;

/// The state of one shard.
pub struct Shard {
    pub(super) index: ShardIndex,
    pub(super) routing: Routing,
    pub(super) config: ShardConfig,
    pub(super) stores: HashMap<StoreId, Store>,
    pub(super) groups: RefCell<ArenaCache>,
    pub(super) metas: RefCell<ClockCache<Address, Rc<ObjectMeta>>>,
    /// The last metadata too heavy for `metas` (a tree bigger than its whole budget).
    pub(super) oversized_meta: RefCell<Option<Rc<ObjectMeta>>>,
    /// Metadata loads running, and the requests waiting for each.
    pub(super) meta_loads: RefCell<AddressMap<Address, MetaWaiters>>,
    pub(super) files: ObjectFiles,
    pub(super) commits: Rc<GroupCommit>,
    /// What each store's start-up replay of its segments did (for the start-up log).
    pub(super) replays: Vec<(StoreId, Replay)>,
    pub(super) upload_seq: Cell<u64>,
    /// The data dirs' free space, sampled: the room check of announced lengths.
    pub(super) free_space: Rc<FreeSpace>,
    pub(super) mesh: Option<Rc<Mesh>>,
    /// Bytes of disk reads started ahead of their senders and not yet sent past.
    pub(super) read_ahead_bytes: Rc<Cell<u64>>,
    /// Stripes served rebuilt, waiting for the repair task; and its wake-up.
    pub(super) repairs: RepairQueue,
    pub(super) repair_wake: LocalSender<()>,
    /// The Reed–Solomon code of each `k+m` met (built once: its matrices).
    pub(super) codes: Rc<StripeCodes>,
    /// Set while an operator has the scrubber paused (the scrubber holds it weakly).
    pub(super) scrub_paused: Rc<Cell<bool>>,
    /// Objects the scrubber, the repair task or the evicter is working on.
    pub(super) claims: BackgroundClaims,
    /// Copies found damaged past what this shard rebuilds, for the network to replace.
    pub(super) damaged: Rc<DamagedCopies>,
    /// The read-through that answers other shards' [`MeshOp::Flight`] (the engine's,
    /// once it has one).
    pub(super) flights: RefCell<Option<FlightHandler>>,
    /// The background services (`services.rs`), until [`Shard::stop`] takes them.
    pub(super) background: RefCell<Option<BackgroundTasks>>,
    pub(super) metrics: Arc<StorageCounters>,
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

    pub fn metrics(&self) -> &Arc<StorageCounters> {
        &self.metrics
    }

    /// The owner of `addr` when it is another shard; `None` when it is this one.
    pub fn owner(&self, addr: &Address) -> Option<ShardIndex> {
        let owner = self.routing.owner(addr);
        (owner != self.index).then_some(owner)
    }

    pub(super) fn mesh(&self) -> Result<&Mesh, ShardError> {
        self.mesh.as_deref().ok_or(ShardError::Mesh {
            shard: self.index.0,
            reason: "no mesh with one shard",
        })
    }

    /// The store `addr` belongs in, on whichever shard owns it.
    pub(super) fn store_of(&self, addr: &Address) -> StoreId {
        self.routing.store_of(addr)
    }

    pub(super) fn local_store(&self, addr: &Address) -> Result<&Store, ShardError> {
        let id = self.routing.store_of(addr);
        self.stores.get(&id).ok_or(ShardError::Mesh {
            shard: self.index.0,
            reason: "asked for an object of a store it does not own",
        })
    }

    /// Pauses (`true`) or resumes the scrubber.
    pub fn pause_scrub(&self, paused: bool) {
        self.scrub_paused.set(paused);
        self.metrics
            .scrub_paused
            .store(u64::from(paused), std::sync::atomic::Ordering::Relaxed);
    }
}

/// The error for an owner shard that answered a mesh request with another kind of reply.
pub(super) fn mesh_confused(owner: ShardIndex) -> ShardError {
    ShardError::Mesh {
        shard: owner.0,
        reason: "answered with the wrong reply kind",
    }
}
