//! The shard's background services, started into its background queue (a small share
//! of the CPU against clients) with [`BackgroundTasks`] and stopped by its signal:
//!
//! | service | works on | stops |
//! |---|---|---|
//! | repair | stripes a read rebuilt (`degraded.rs`) | after the write-back under way; stripes still queued are left to the scrubber |
//! | scrubber | every stored block, paced | between objects, its position saved |
//! | evicter | evictable copies past the budget | between evictions (an eviction cut short is finished by the next open: its markers) |
//! | announce walk | every stored address, once, to the DHT | between batches (the next start walks again) |
//! | orphan sweep | object files no record names, once (`orphans.rs`) | between dirs (the next start sweeps again) |
//!
//! Each holds the shard weakly or holds only what it needs, so the shard's state is
//! not kept alive by its services. The group commit and the mesh are not here: they
//! serve requests and stop after them ([`Shard::stop`]).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::local_channel::LocalReceiver;
use ron_link::counters::StorageCounters;
use ron_link::dht::{DhtClient, ANNOUNCE_BATCH_MAX};

use crate::error::ShardError;
use crate::evict::{Evicter, Forget, ForgetFiles};
use crate::lifecycle::{BackgroundTasks, StopSignal};
use crate::scrub::{ScrubControl, Scrubber};
use crate::shard::orphans::sweep_orphans;
use crate::shard::state::AnnounceFilter;
use crate::shard::state::Shard;
use crate::store::Store;

/// Stripes of one object the repair task rebuilds before one write-back with one sync
/// per file: 64 stripes of 4+1 are 16 MiB of reads, and 4 MiB of writes held for one
/// bad block per stripe.
const REPAIR_BATCH_STRIPES: usize = 64;

/// How soon the repair task looks again when every object queued is held by another
/// background task (a paced scrub holds an object for as long as it takes to read it).
const REPAIR_BUSY_RETRY: Duration = Duration::from_millis(200);

/// How long the announce walk waits for room in a full DHT mailbox before trying
/// again.
const ANNOUNCE_RETRY_MS: u64 = 100;

/// Starts every background service the shard's configuration asks for.
pub(super) fn start_all(
    shard: &Rc<Shard>,
    repair_wakes: LocalReceiver<()>,
    evicter_wakes: Option<LocalReceiver<()>>,
    queue: glommio::TaskQueueHandle,
) -> Result<BackgroundTasks, ShardError> {
    let mut tasks = BackgroundTasks::default();
    let stop = tasks.signal();
    tasks.start(
        "repair",
        queue,
        repair(Rc::downgrade(shard), repair_wakes, stop.clone()),
    )?;
    if let Some(scrubber) = scrubber(shard, stop.clone())? {
        tasks.start("scrubber", queue, scrubber.run())?;
    }
    if let Some(wakes) = evicter_wakes {
        tasks.start("evicter", queue, evicter(shard, stop.clone()).run(wakes))?;
    }
    let stores = shard.stores.values().cloned().collect();
    tasks.start(
        "orphan sweep",
        queue,
        sweep_orphans(stores, Rc::downgrade(shard), stop.clone()),
    )?;
    if let Some(dht) = shard.config.dht.clone() {
        let stores = shard.stores.values().cloned().collect();
        let filter = shard.config.announce_filter.clone();
        tasks.start(
            "announce walk",
            queue,
            announce_stored(stores, dht, filter, stop),
        )?;
    }
    Ok(tasks)
}

/// The repair task: woken when a stripe is queued, it repairs the most-asked stripe
/// until the queue is empty.
async fn repair(shard: std::rc::Weak<Shard>, wakes: LocalReceiver<()>, stop: StopSignal) {
    while let Some(Some(())) = stop.unless_stopped(wakes.recv()).await {
        while !stop.is_stopped() {
            let Some(shard) = shard.upgrade() else {
                return;
            };
            shard.wait_for_quiet_disk().await;
            let claims = &shard.claims;
            let taken = shard
                .repairs
                .take_hottest(REPAIR_BATCH_STRIPES, |addr| claims.is_claimed(addr));
            let Some((meta, stripes)) = taken else {
                if shard.repairs.is_empty() {
                    break;
                }
                // Every object queued is held by a scrub, check or eviction: look again.
                glommio::timer::sleep(REPAIR_BUSY_RETRY).await;
                continue;
            };
            let bad_blocks: u64 = stripes.iter().map(|(_, bad, _)| bad).sum();
            // Not held when taken, and nothing ran since: claimed at once. Evicted
            // meanwhile: nothing to repair (`same_copy_stored`).
            let Some(claim) = stop.unless_stopped(shard.claims.claim(meta.addr())).await else {
                return;
            };
            let failed = match shard.same_copy_stored(&meta).await {
                true => shard.repair_stripes(&meta, stripes).await,
                false => 0,
            };
            drop(claim);
            StorageCounters::add(&shard.metrics.ec_repair_failures, failed);
            shard
                .metrics
                .ec_missing_blocks
                .fetch_sub(bad_blocks, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The evicter (`evict.rs`): keeps the evictable copies within the shard's share of
/// `fetched_bytes_max`. Woken once at start and after each index commit that stored
/// evictable copies.
pub(super) fn evicter(shard: &Rc<Shard>, stop: StopSignal) -> Evicter {
    let weak = Rc::downgrade(shard);
    let forget: Forget = Rc::new(move |addrs| {
        let shard = weak.clone();
        Box::pin(async move {
            if let Some(shard) = shard.upgrade() {
                shard.forget_everywhere(addrs).await;
            }
        })
    });
    let weak = Rc::downgrade(shard);
    let forget_files: ForgetFiles = Rc::new(move |addrs| {
        if let Some(shard) = weak.upgrade() {
            shard.forget_files(addrs);
        }
    });
    Evicter {
        stores: shard.stores.values().cloned().collect(),
        budget_bytes: shard.config.evictable_bytes_max.unwrap_or(u64::MAX),
        commits: Rc::downgrade(&shard.commits),
        forget,
        forget_files,
        metrics: Arc::clone(&shard.metrics),
        dht: shard.config.dht.clone(),
        claims: shard.claims.clone(),
        stop,
    }
}

/// The scrubber (`scrub.rs`), unless its rate is 0.
fn scrubber(shard: &Rc<Shard>, stop: StopSignal) -> Result<Option<Scrubber>, ShardError> {
    let rate = shard.config.scrub_bytes_per_s;
    if rate == 0 {
        return Ok(None);
    }
    let stores = shard.stores.values().cloned().collect();
    let scrubber = Scrubber::new(
        stores,
        Rc::clone(&shard.codes),
        Arc::clone(&shard.metrics),
        ScrubControl {
            paused: Rc::downgrade(&shard.scrub_paused),
            stop,
            damaged: Rc::clone(&shard.damaged),
        },
        rate,
        shard.files.reads_in_flight(),
        shard.claims.clone(),
    )?;
    Ok(Some(scrubber))
}

/// On a node in a network, announces once at start-up every object the shard's stores
/// hold (that `filter` allows: a blocked one is not announced), so that objects stored before `--p2p` was turned on (or whose announcement a
/// full mailbox dropped) are found too. The DHT thread keeps what it already provides
/// (only keys new to it are published at once; the sweep republishes the rest). A full
/// mailbox makes the walk wait, never drop.
async fn announce_stored(
    stores: Vec<Store>,
    dht: DhtClient,
    filter: AnnounceFilter,
    stop: StopSignal,
) {
    for store in stores {
        let mut after = None;
        while !stop.is_stopped() {
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
            let keys: Vec<[u8; 32]> = batch
                .iter()
                .filter(|a| filter.allows(a))
                .map(|a| *a.as_bytes())
                .collect();
            if !keys.is_empty() && !announce_waiting(&dht, keys, &stop).await {
                return;
            }
            if batch.len() < ANNOUNCE_BATCH_MAX {
                break;
            }
            after = Some(last);
            glommio::yield_if_needed().await;
        }
    }
}

/// Hands `keys` to the DHT thread, waiting while its mailbox is full; `false` when the
/// DHT thread is gone or the shard stops.
async fn announce_waiting(dht: &DhtClient, mut keys: Vec<[u8; 32]>, stop: &StopSignal) -> bool {
    loop {
        match dht.try_announce(keys) {
            Some(Ok(())) => return true,
            Some(Err(back)) => keys = back,
            None => return false,
        }
        let retry = std::time::Duration::from_millis(ANNOUNCE_RETRY_MS);
        if !stop.sleep(retry).await {
            return false;
        }
    }
}
