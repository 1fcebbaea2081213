//! One shard: the state a pinned executor owns (`state.rs`), its lifecycle (this file:
//! start and stop), and its operations beside them, each in its own file with the state
//! it may touch:
//!
//! | file | operation | state it uses |
//! |---|---|---|
//! | `read.rs` | metadata and verified groups: cache → own disk → owner over the mesh | `metas`, `meta_loads`, `files`, `stores` |
//! | `caching.rs` | keeping verified groups (memfd arenas), the read-ahead budget | `groups`, `read_ahead_bytes`, `metas` (forgetting) |
//! | `degraded.rs` | a bad block rebuilt from its stripe or lane, queued for repair; `ron repair` | `codes`, `repairs`, `files` |
//! | `write.rs` | an upload begun here (its announced length checked for room), committed on the owner | `upload_seq`, `free_space`, `commits` |
//! | `peers.rs` | what other shards ask over the mesh, flights of read-throughs | `mesh`, `flights` |
//! | `services.rs` | the background services: repair, scrubber, evicter, announce walk | `background`, `claims`, `scrub_paused` |
//!
//! Lifecycle: [`Shard::start`] opens the stores (start-up work, blocking opens) and
//! starts the group commit, the background services and the mesh service;
//! [`Shard::stop`], once the front ends have drained, stops the background services
//! (bounded), then the group commit (what it holds is made durable and indexed).
//!
//! Everything here is `!Send` and lives on one executor thread. The only things shared
//! with other threads are the metrics (written only here) and the mesh channels.

mod caching;
mod degraded;
mod orphans;
mod peers;
mod read;
mod services;
mod state;
mod write;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::local_channel;
use glommio::{Latency, Shares};
use ron_link::counters::StorageCounters;

use crate::arena::ArenaCache;
use crate::cache::{AddressMap, ClockCache};
use crate::commit::GroupCommit;
use crate::disk::ObjectFiles;
use crate::ec::StripeCodes;
use crate::error::ShardError;
use crate::evict::BackgroundClaims;
use crate::free_space::FreeSpace;
use crate::ids::ShardIndex;
use crate::layout::Routing;
use crate::lifecycle::finished_within;
use crate::mesh::Mesh;
use crate::repair::RepairQueue;
use crate::shard::peers::mesh_handler;
use crate::shard::services::start_all;
use crate::store::{self, Store};

pub use crate::shard::caching::{
    ReadAheadPermit, CACHE_ADMIT_SHARE, CACHE_WINDOW_GROUPS, READ_AHEAD_BYTES_MAX,
};
pub use crate::shard::degraded::REPAIR_DEFER_MS_MAX;
pub use crate::shard::state::{AnnounceFilter, Shard, ShardConfig};
pub use crate::shard::write::DamagedDiscard;

/// Task-queue shares of the shard's background work (repair, scrub) against the 1,000
/// of the queue that serves clients: when both have work, clients get ~95 % of the CPU.
pub const BACKGROUND_SHARES: usize = 50;

impl Shard {
    /// Hands the DHT thread the uploads acknowledged and not yet announced that its
    /// mailbox had no room for (the shard's clock tick calls it; commits do too).
    pub fn send_announcements(&self) {
        self.commits.send_announcements();
    }

    /// Opens the stores this shard owns and starts its group commit, its background
    /// services (`services.rs`) and its mesh service. Blocking opens are start-up work,
    /// before the shard accepts.
    pub async fn start(
        index: ShardIndex,
        routing: Routing,
        config: ShardConfig,
        mesh: Option<Mesh>,
        metrics: Arc<StorageCounters>,
    ) -> Result<Rc<Shard>, ShardError> {
        let mut stores = HashMap::new();
        let mut replays = Vec::new();
        let mut compact_budget = crate::limits::COMPACT_MOVE_BYTES_PER_START;
        let restart_scrub = crate::layout::scrub_restart_pending(&config.data_dirs);
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
            let mut replay = store.replay_blocking()?;
            // Compaction gives space back; a failure leaves every object where a record
            // points (store/compact.rs) and is no reason not to serve.
            match store.compact_blocking(&mut compact_budget) {
                Ok(done) => replay.compaction = done,
                Err(e) => tracing::error!(store = id.0, "segment compaction failed: {e}"),
            }
            replays.push((id, replay));
            let stats = store.stats()?;
            StorageCounters::add(&metrics.objects_stored, stats.objects);
            StorageCounters::add(&metrics.bytes_stored, stats.bytes);
            stores.insert(id, store);
        }
        if restart_scrub {
            restart_scrub_passes(&stores)?;
        }
        metrics.scrub_rate.store(
            config.scrub_bytes_per_s,
            std::sync::atomic::Ordering::Relaxed,
        );
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
        let free_space = Rc::new(FreeSpace::sample_blocking(config.data_dirs.clone()));
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
            free_space,
            mesh: mesh.map(Rc::new),
            read_ahead_bytes: Rc::new(Cell::new(0)),
            repairs: RepairQueue::default(),
            repair_wake,
            codes: Rc::new(StripeCodes::default()),
            scrub_paused: Rc::new(Cell::new(false)),
            claims: BackgroundClaims::default(),
            damaged: Rc::default(),
            flights: RefCell::new(None),
            background: RefCell::new(None),
            metrics,
        });
        let background = glommio::executor().create_task_queue(
            Shares::Static(BACKGROUND_SHARES),
            Latency::NotImportant,
            "ron-background",
        );
        let services = start_all(&shard, repair_wakes, evicter_wakes, background)?;
        *shard.background.borrow_mut() = Some(services);
        if let Some(mesh) = &shard.mesh {
            Rc::clone(mesh).serve(mesh_handler(&shard));
        }
        Ok(shard)
    }

    /// Stops the shard's work behind the requests, once its front ends have drained:
    /// the background services (in start order, all within `within`; a service still
    /// running then is cancelled and named in the answer), then the group commit (within
    /// `within` again)
    /// (commits queued are made durable and the index backlog committed, so a restart
    /// replays nothing), then removes the temp files of uploads the stop cut off (within
    /// `within` once more: behind a hung disk, the next start removes them). The
    /// mesh keeps answering until the executor ends, so a shard still stopping can ask
    /// this one.
    pub async fn stop(&self, within: Duration) -> Vec<&'static str> {
        let background = self.background.borrow_mut().take();
        let mut abandoned = match background {
            Some(services) => services.stop(within).await,
            None => Vec::new(),
        };
        if !self.commits.stop(within).await {
            abandoned.push("group commit");
        }
        // Bounded too: it queues on the blocking pool behind whatever a hung disk holds
        // there (the group commit's sync just abandoned), and the next start removes
        // what it leaves.
        match finished_within(within, self.remove_abandoned_uploads()).await {
            None => abandoned.push("temp files of uploads cut off"),
            Some(Ok(0)) => {}
            Some(Ok(uploads)) => {
                tracing::info!(
                    shard = self.index.0,
                    uploads,
                    "removed the temp files of uploads cut off by the stop"
                )
            }
            Some(Err(e)) => {
                tracing::warn!(shard = self.index.0, error = %e, "abandoned uploads' temp files left for the next start")
            }
        }
        abandoned
    }
}

/// A replacement dir was taken: every store of the shard starts a pass again from its
/// first object, all at the pass number of the least scrubbed (one a pass ahead kept its
/// place and was skipped until the others caught up: the pass count rose with its
/// blocks on the new disk never rebuilt).
fn restart_scrub_passes(stores: &HashMap<crate::ids::StoreId, Store>) -> Result<(), ShardError> {
    let mut passes = u64::MAX;
    for store in stores.values() {
        passes = passes.min(store.scrub_position()?.passes);
    }
    stores
        .values()
        .try_for_each(|store| store.restart_scrub_pass_blocking(passes))
}
