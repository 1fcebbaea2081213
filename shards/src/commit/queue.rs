//! What the group commit holds ([`GroupCommit`]): the queue of uploads waiting for a
//! batch, the addresses with a commit or an eviction in flight, the packed objects
//! answered but not yet indexed, and the index backlog — and the small steps every stage
//! takes on them (answering an upload, settling an address, announcing). The stages
//! themselves are `write.rs` (one) and `index.rs` (two); `mod.rs` is the entry and the
//! task that runs them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use glommio::channels::local_channel::LocalSender;
use ron_codec::Address;
use ron_link::counters::StorageCounters;
use ron_link::dht::{DhtClient, ANNOUNCE_BATCH_MAX};

use crate::cache::AddressMap;
use crate::error::ShardError;
use crate::ids::{ShardIndex, StoreId};
use crate::record::{ObjectMeta, Retention};
use crate::segment::{Checkpoint, SegmentLog};
use crate::store::{CommitRecord, Store, StoreStats};
use crate::upload::StagedObject;

/// Unindexed packed records that start an index commit even while uploads keep coming:
/// large, because each commit writes back every random B-tree leaf it touches and the
/// segment syncs beside it slow down while it does (docs/design/storage.md).
pub const CHECKPOINT_RECORDS: usize = 16_384;

/// Most uploads in one batch (`commit_batch_max` is at most this).
pub const BATCH_RECORDS_MAX: usize = 1024;

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    Created,
    AlreadyStored,
}

/// One upload waiting for the next group commit.
pub(super) struct PendingCommit {
    pub(super) store: Store,
    pub(super) staged: StagedObject,
    pub(super) done: LocalSender<Result<(), ShardError>>,
}

/// An address with a commit (or an eviction) queued or running: the uploads waiting
/// for its outcome, told whether it became durable, and the retention it is committed
/// with.
pub(super) struct InFlight {
    pub(super) waiters: Vec<LocalSender<bool>>,
    pub(super) retention: Retention,
}

/// An upload waiting for its answer.
pub(super) type Waiter = (Address, LocalSender<Result<(), ShardError>>);

/// Records waiting for the next index commit, per store, and the uploads answered
/// when it is durable.
#[derive(Default)]
pub(super) struct IndexBacklog {
    pub(super) stores: HashMap<StoreId, StoreBacklog>,
    /// Own-file uploads: answered once their records are committed.
    pub(super) waiters: Vec<Waiter>,
    /// What those uploads add to the shard's stored counts once committed (an upload is
    /// queued only when its address is not stored: each is a new object).
    pub(super) files_added: StoreStats,
    pub(super) packed: usize,
}

pub(super) struct StoreBacklog {
    pub(super) store: Store,
    pub(super) records: Vec<CommitRecord>,
    /// Where the store's packed records reach in its segments, if any are here.
    pub(super) checkpoint: Option<Checkpoint>,
}

impl IndexBacklog {
    pub(super) fn store(&mut self, store: &Store) -> &mut StoreBacklog {
        self.stores
            .entry(store.id())
            .or_insert_with(|| StoreBacklog {
                store: store.clone(),
                records: Vec::new(),
                checkpoint: None,
            })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.stores.is_empty() && self.waiters.is_empty()
    }
}

/// A shard's commit queue and the task that drains it.
pub(crate) struct GroupCommit {
    pub(super) shard: ShardIndex,
    /// Most records in one group commit (`ShardConfig::commit_batch_max`), at least 1.
    pub(super) batch_max: usize,
    pub(super) pending: RefCell<Vec<PendingCommit>>,
    /// Addresses with a commit or an eviction queued or running, and the uploads
    /// waiting on each.
    pub(super) in_flight: RefCell<HashMap<Address, InFlight>>,
    /// The segment log of each store this shard has packed objects into, while no
    /// batch holds it.
    pub(super) segments: RefCell<HashMap<StoreId, SegmentLog>>,
    /// Packed objects answered whose index records are not yet committed.
    pub(super) unindexed: RefCell<AddressMap<Address, (ObjectMeta, Retention)>>,
    /// Addresses the orphan sweep is storing again from their own files: their files
    /// are kept when the index commit fails (unlinked, they were the only copy of an
    /// acknowledged object whose index was lost).
    pub(crate) adopting: RefCell<std::collections::HashSet<Address>>,
    /// Records for the next index commit.
    pub(super) backlog: RefCell<IndexBacklog>,
    /// An index commit is running.
    pub(super) indexing: std::cell::Cell<bool>,
    /// Set by [`GroupCommit::stop`]: new commits are refused, the task finishes what it
    /// holds and ends.
    pub(super) closing: std::cell::Cell<bool>,
    /// The commit task, until [`GroupCommit::stop`] awaits it.
    pub(super) task: RefCell<Option<glommio::Task<()>>>,
    /// Why the last index commit failed, until one succeeds.
    pub(super) index_failure: RefCell<Option<Arc<ShardError>>>,
    pub(super) wakeup: LocalSender<()>,
    pub(super) metrics: Arc<StorageCounters>,
    /// Where acknowledged objects are announced (the DHT thread), when the node has one.
    pub(super) dht: Option<DhtClient>,
    /// Evictable copies acknowledged since the last announcement.
    pub(super) announced: RefCell<Vec<[u8; 32]>>,
    /// Kept objects acknowledged since the last announcement (their placement's other
    /// holders are asked to take them).
    pub(super) announced_kept: RefCell<Vec<[u8; 32]>>,
    /// Woken after each index commit (the shard's evicter), if it has one.
    pub(super) evicter: Option<LocalSender<()>>,
    /// What a test injects (`commit/faults.rs`).
    #[cfg(test)]
    pub(crate) faults: std::sync::Arc<crate::commit::faults::Faults>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("shard", &self.shard)
            .field("batch_max", &self.batch_max)
            .field("pending", &self.pending.borrow().len())
            .finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// The metadata of a packed object that is durable and answered but not yet in
    /// its store's index.
    /// How `addr` is stored here — kept or evictable — or `None`: not stored. A
    /// committed object waiting in the unindexed map counts as stored, as reads see it.
    pub(crate) fn stored_retention(
        &self,
        store: &Store,
        addr: &Address,
    ) -> Result<Option<Retention>, ShardError> {
        if let Some((_, retention)) = self.unindexed.borrow().get(addr) {
            return Ok(Some(*retention));
        }
        if !store.contains(addr)? {
            return Ok(None);
        }
        Ok(Some(match store.is_evictable(addr)? {
            true => Retention::Evictable,
            false => Retention::Kept,
        }))
    }

    pub(crate) fn unindexed_meta(&self, addr: &Address) -> Option<ObjectMeta> {
        self.unindexed
            .borrow()
            .get(addr)
            .map(|(meta, _)| meta.clone())
    }

    /// Ends `addr`'s commit in flight and tells the uploads waiting on it.
    pub(super) fn settle(&self, addr: &Address, durable: bool) {
        let entry = self.in_flight.borrow_mut().remove(addr);
        for waiter in entry.into_iter().flat_map(|e| e.waiters) {
            let _ = waiter.try_send(durable);
        }
    }

    /// Takes the next batch off the queue: at most `batch_max` records, oldest first.
    pub(super) fn next_batch(&self) -> Vec<PendingCommit> {
        let mut pending = self.pending.borrow_mut();
        let take = pending.len().min(self.batch_max);
        pending.drain(..take).collect()
    }

    /// The retention `addr` is being committed with.
    pub(super) fn retention_of(&self, addr: &Address) -> Retention {
        self.in_flight
            .borrow()
            .get(addr)
            .map_or(Retention::Kept, |e| e.retention)
    }

    /// Hands the objects acknowledged and not yet announced to the DHT thread, in
    /// batches while its mailbox takes them (never waits). What a full mailbox does not
    /// take stays here for the next call (the next commit, or the shard's clock tick), at
    /// most [`ANNOUNCEMENTS_HELD_MAX`] of each kind; past that the oldest are dropped,
    /// counted, and announced again by the next start's walk. Dropped at once, an
    /// upload was findable by no other node until a restart: the sweep republishes only
    /// what was provided.
    pub(crate) fn send_announcements(&self) {
        let Some(dht) = &self.dht else { return };
        send_held(&self.announced, dht, |batch| dht.try_announce(batch));
        send_held(&self.announced_kept, dht, |batch| {
            dht.try_announce_kept(batch)
        });
    }

    /// Drops the announcements not yet sent of copies just removed: a held one sent
    /// after the removal's withdrawal advertised a copy the node no longer has (and
    /// asked holders to take it), republished from then on.
    pub(crate) fn forget_announcements(&self, removed: &[Address]) {
        let gone: std::collections::HashSet<[u8; 32]> =
            removed.iter().map(|a| *a.as_bytes()).collect();
        for held in [&self.announced, &self.announced_kept] {
            held.borrow_mut().retain(|addr| !gone.contains(addr));
        }
    }

    /// The announcements held (not yet taken by the DHT thread's mailbox).
    #[cfg(test)]
    pub(crate) fn announcements_held(&self) -> Vec<[u8; 32]> {
        let (plain, kept) = (self.announced.borrow(), self.announced_kept.borrow());
        plain.iter().chain(kept.iter()).copied().collect()
    }

    /// Whether the backlog must be indexed now: own-file uploads wait for it, or the
    /// unindexed records reached a checkpoint's worth.
    pub(super) fn index_due(&self) -> bool {
        let backlog = self.backlog.borrow();
        !backlog.waiters.is_empty() || backlog.packed >= CHECKPOINT_RECORDS
    }

    /// Answers one upload: durable, or the stage's failure shared by `records` uploads.
    pub(super) fn answer(
        &self,
        (addr, waiter): Waiter,
        failure: Option<(usize, &Arc<ShardError>)>,
    ) {
        let retention = self.retention_of(&addr);
        self.settle(&addr, failure.is_none());
        if failure.is_none() && self.dht.is_some() {
            let announced = match retention {
                Retention::Kept => &self.announced_kept,
                Retention::Evictable => &self.announced,
            };
            announced.borrow_mut().push(*addr.as_bytes());
        }
        let result = match failure {
            None => Ok(()),
            Some((records, source)) => Err(ShardError::GroupCommit {
                records,
                source: Arc::clone(source),
            }),
        };
        let _ = waiter.try_send(result);
    }
}

/// Addresses of one kind (kept, evictable) a shard holds while the DHT's mailbox is
/// full: 8 MiB.
pub const ANNOUNCEMENTS_HELD_MAX: usize = 262_144;

/// Sends `held` in batches while `try_send` takes them; keeps the rest (see
/// [`GroupCommit::send_announcements`]). A full mailbox costs one batch's copy per call
/// (the shard's clock calls it every heartbeat), never the whole backlog's.
fn send_held(
    held: &RefCell<Vec<[u8; 32]>>,
    dht: &DhtClient,
    try_send: impl Fn(Vec<[u8; 32]>) -> Option<Result<(), Vec<[u8; 32]>>>,
) {
    let mut waiting = held.borrow_mut();
    let mut sent = 0;
    while sent < waiting.len() {
        let end = waiting.len().min(sent + ANNOUNCE_BATCH_MAX);
        match try_send(waiting[sent..end].to_vec()) {
            Some(Ok(())) => sent = end,
            Some(Err(_)) => break,
            // The DHT thread has stopped: nothing will take them.
            None => {
                waiting.clear();
                return;
            }
        }
    }
    waiting.drain(..sent);
    let over = waiting.len().saturating_sub(ANNOUNCEMENTS_HELD_MAX);
    if over > 0 {
        waiting.drain(..over);
        dht.count_dropped_announcements(over as u64);
    }
}

#[cfg(test)]
impl GroupCommit {
    /// Whether an index commit is running.
    pub(crate) fn indexing_now(&self) -> bool {
        self.indexing.get()
    }

    /// Whether the last index commit failed (uploads retry it first).
    pub(crate) fn index_failed(&self) -> bool {
        self.index_failure.borrow().is_some()
    }
}

#[cfg(test)]
mod announcement_tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn addresses(count: usize) -> Vec<[u8; 32]> {
        (0..count as u64)
            .map(|n| {
                let mut addr = [0u8; 32];
                addr[..8].copy_from_slice(&n.to_be_bytes());
                addr
            })
            .collect()
    }

    /// What a full mailbox does not take is held and sent at the next call; past the
    /// bound, the oldest are dropped and counted. Before, every batch a full mailbox
    /// refused was dropped at once.
    #[test]
    fn announcements_a_full_mailbox_refuses_are_held_for_the_next_call() {
        let (dht, mailbox) = DhtClient::for_tests(1);
        let held = RefCell::new(addresses(ANNOUNCE_BATCH_MAX + 5));
        send_held(&held, &dht, |batch| dht.try_announce_kept(batch));
        assert_eq!(held.borrow().len(), 5, "the second batch waits");
        let first = mailbox.try_recv().unwrap();
        assert!(matches!(
            first,
            ron_link::dht::ProviderChange::ProvideKept(_)
        ));
        assert_eq!(first.len(), ANNOUNCE_BATCH_MAX);
        send_held(&held, &dht, |batch| dht.try_announce_kept(batch));
        assert!(held.borrow().is_empty());
        assert_eq!(mailbox.try_recv().unwrap().len(), 5);
        let dropped = || dht.metrics.announce_dropped_total.load(Ordering::Relaxed);
        assert_eq!(dropped(), 0);

        let (full, _mailbox) = DhtClient::for_tests(0);
        let held = RefCell::new(addresses(ANNOUNCEMENTS_HELD_MAX + 3));
        send_held(&held, &full, |batch| full.try_announce(batch));
        assert_eq!(held.borrow().len(), ANNOUNCEMENTS_HELD_MAX);
        assert_eq!(held.borrow()[0], addresses(4)[3], "the oldest went");
        assert_eq!(
            full.metrics.announce_dropped_total.load(Ordering::Relaxed),
            3
        );
    }
}
