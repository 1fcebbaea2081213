//! Group commit: how a staged upload becomes a visible, durable object on its owner.
//!
//! `GroupCommit::commit` queues a staged upload; one background task per shard drains
//! the queue in batches of at most `commit_batch_max` uploads and, on the blocking pool,
//! for each store of the batch: appends the small objects to the store's segment with
//! one write and one data sync (`segment.rs`), syncs every staged file's data, renames
//! each into the store and syncs the object directories. Then:
//!
//! - a packed object is durable — its needle is the log record — and is answered at
//!   once; its metadata waits in the shard's *unindexed* map, which reads and the
//!   "already stored" check consult, until its index record is committed;
//! - an object in its own file is answered once its index record is committed.
//!
//! Index commits run one at a time, overlapping the next batches' writes, and take
//! everything waiting: when a batch has own-file uploads waiting, when the unindexed
//! records reach [`CHECKPOINT_RECORDS`], and whenever the queue runs empty. Each commits
//! a store's records together with its segment checkpoint (`store.rs`); at start-up the
//! needles past the checkpoint are indexed again from the segments. A batch that
//! reaches the checkpoint size while an index commit runs waits for it, so while index
//! commits succeed at most 2 × ([`CHECKPOINT_RECORDS`] + [`BATCH_RECORDS_MAX`]) packed
//! objects are unindexed (the running commit's and the backlog's); after a failure new
//! uploads are refused until a retry succeeds (`GroupCommit::index_healthy`). A
//! failure reaches every waiter of its stage as [`ShardError::GroupCommit`], sharing the
//! underlying error.
//!
//! So for every acknowledged object: its data was durable before its name (or its
//! needle's place) pointed at it, and either its needle or its index record was durable
//! before the answer. A crash in between leaves at most an orphan file or a needle that
//! was never answered (indexed at the next start if it is whole: harmless, its bytes
//! match their address).
//!
//! Uploads of one address are serialized: an address stays in the pending table from
//! its queueing until it is answered; a second upload of it waits for that outcome —
//! answered "already stored" if the first became durable, queued itself if not — and
//! never renames over a file whose commit is in flight. An eviction claims its addresses
//! the same way ([`GroupCommit::claim_for_eviction`]): an upload of an address being
//! evicted waits for the eviction to end, then stores the object anew. An upload looks
//! for a claim before it looks whether the object is stored: an object claimed is still
//! indexed until its eviction commits, and an upload answered "already stored" then
//! would have been answered for files about to be unlinked.
//!
//! Retention: a staged object marked evictable (a fetched copy) is committed with an
//! evictable record; an upload of an object stored as an evictable copy is answered
//! once its record is committed again as kept ([`crate::store::CommitRecord`]), the
//! address held in flight meanwhile so that no eviction claims it.
//!
//! This module knows neither the shard nor the mesh.
//!
//! Files: `queue.rs` (what the group commit holds), `write.rs` (stage one), `index.rs`
//! (stage two), this file (the entry points and the task that runs the stages),
//! `faults.rs` (what this crate's tests inject).

#[cfg(test)]
pub(crate) mod faults;
mod index;
mod queue;
mod write;

use crate::ObjectMeta;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use ron_codec::Address;
use ron_link::counters::StorageCounters;
use ron_link::dht::DhtClient;

use crate::cache::AddressMap;
use crate::commit::index::index_backlog;
use crate::commit::queue::{InFlight, IndexBacklog, PendingCommit};
use crate::commit::write::write_batch;
use crate::error::ShardError;
use crate::ids::ShardIndex;
use crate::record::Retention;
use crate::store::{CommitRecord, Store};
use crate::upload::{self, StagedObject};

pub(crate) use crate::commit::queue::GroupCommit;
pub use crate::commit::queue::{CommitOutcome, BATCH_RECORDS_MAX, CHECKPOINT_RECORDS};

impl GroupCommit {
    /// Creates the queue and spawns its commit task on the current executor.
    pub(crate) fn start(
        shard: ShardIndex,
        batch_max: usize,
        metrics: Arc<StorageCounters>,
        dht: Option<DhtClient>,
        evicter: Option<LocalSender<()>>,
    ) -> Rc<GroupCommit> {
        assert!(
            (1..=BATCH_RECORDS_MAX).contains(&batch_max),
            "commit_batch_max must be 1..={BATCH_RECORDS_MAX}"
        );
        let (wakeup, wakeups) = local_channel::new_bounded(1);
        let commits = Rc::new(GroupCommit {
            shard,
            batch_max,
            pending: RefCell::new(Vec::new()),
            in_flight: RefCell::new(HashMap::new()),
            segments: RefCell::new(HashMap::new()),
            unindexed: RefCell::new(AddressMap::default()),
            adopting: RefCell::default(),
            backlog: RefCell::new(IndexBacklog::default()),
            indexing: std::cell::Cell::new(false),
            closing: std::cell::Cell::new(false),
            task: RefCell::new(None),
            index_failure: RefCell::new(None),
            wakeup,
            metrics,
            dht,
            announced: RefCell::new(Vec::new()),
            announced_kept: RefCell::new(Vec::new()),
            evicter,
            #[cfg(test)]
            faults: Default::default(),
        });
        let task = glommio::spawn_local(commit_loop(Rc::clone(&commits), wakeups));
        *commits.task.borrow_mut() = Some(task);
        commits
    }

    /// Refuses new commits and waits, at most `within`, for the commit task to make
    /// what it holds durable and to index it; `false` if it had not finished by then
    /// (its uploads were not acknowledged; a packed object's synced needle is indexed
    /// by the next start's replay).
    pub(crate) async fn stop(&self, within: std::time::Duration) -> bool {
        self.closing.set(true);
        let _ = self.wakeup.try_send(());
        let Some(task) = self.task.borrow_mut().take() else {
            return true;
        };
        crate::lifecycle::finished_within(within, task)
            .await
            .is_some()
    }

    /// Makes `staged` visible in `store` (which must be the owner's store of its
    /// address) and returns once it is durable.
    pub(crate) async fn commit(
        self: &Rc<Self>,
        store: &Store,
        staged: StagedObject,
    ) -> Result<CommitOutcome, ShardError> {
        let addr = staged.meta.addr();
        if self.closing.get() {
            upload::discard(staged).await;
            return Err(ShardError::Stopping {
                shard: self.shard.0,
            });
        }
        if let Err(refused) = self.index_healthy().await {
            upload::discard(staged).await;
            return Err(refused);
        }
        loop {
            // Another upload of these bytes is being committed, or the object is being
            // evicted or made kept: wait for the outcome, then look again. First: an
            // object claimed for eviction is still indexed until the eviction commits,
            // and an upload that found it "stored" was answered for files about to go.
            if let Some(outcome) = self.wait_for_commit_in_flight(&addr) {
                outcome.recv().await;
                continue;
            }
            if !(self.unindexed.borrow().contains_key(&addr) || store.contains(&addr)?) {
                return self.commit_queued(store, staged).await;
            }
            let retention = staged.retention;
            // Made kept before the discard's wait: nothing in flight lay between the
            // look above and the claim `keep` makes, so no eviction can come between.
            let kept = match retention {
                Retention::Kept => self.keep(store, &addr).await,
                Retention::Evictable => Ok(()),
            };
            upload::discard(staged).await;
            kept?;
            return Ok(CommitOutcome::AlreadyStored);
        }
    }

    /// Makes `addr` kept if `store` holds it (a copy the placement asks this node to
    /// hold, which it may hold already as an evictable copy); waits for a commit or an
    /// eviction of it in flight first. `false`: not stored.
    pub(crate) async fn keep_if_stored(
        &self,
        store: &Store,
        addr: &Address,
    ) -> Result<bool, ShardError> {
        loop {
            if let Some(outcome) = self.wait_for_commit_in_flight(addr) {
                outcome.recv().await;
                continue;
            }
            if !(self.unindexed.borrow().contains_key(addr) || store.contains(addr)?) {
                return Ok(false);
            }
            self.keep(store, addr).await?;
            return Ok(true);
        }
    }

    /// Makes a kept object evictable (a copy the placement no longer names, once the
    /// holders it names have theirs): its record is committed again as evictable, and
    /// this returns once that is durable. `false`: not stored, or evictable already.
    pub(crate) async fn demote(&self, store: &Store, addr: &Address) -> Result<bool, ShardError> {
        if self.in_flight.borrow().contains_key(addr) {
            // A commit or an eviction of it is under way: the next sweep looks again.
            return Ok(false);
        }
        // In flight as evictable from here, before any wait: uploads of it wait, its
        // answer announces it plainly (no copies asked for), and an operator's removal
        // or an eviction — which claim nothing in flight — cannot take the copy while its
        // record is read (a large one's read waits on the blocking pool). Claimed after
        // that read, a removal in between had its files gone and this commit put its
        // record back: a record with no files.
        self.in_flight.borrow_mut().insert(
            *addr,
            InFlight {
                waiters: Vec::new(),
                retention: Retention::Evictable,
            },
        );
        let meta = match self.record_to_demote(store, addr).await {
            Ok(Some(meta)) => meta,
            Ok(None) => {
                self.settle(addr, false);
                return Ok(false);
            }
            Err(e) => {
                self.settle(addr, false);
                return Err(e);
            }
        };
        let mut record = CommitRecord::of(&meta);
        record.retention = Retention::Evictable;
        self.commit_record_again(store, addr, record)
            .await
            .map(|()| true)
    }

    /// The record of `addr` if it is stored here kept (committed or still in the queue);
    /// `None` if not stored, or evictable already.
    async fn record_to_demote(
        &self,
        store: &Store,
        addr: &Address,
    ) -> Result<Option<ObjectMeta>, ShardError> {
        let unindexed = self.unindexed.borrow().get(addr).cloned();
        match unindexed {
            Some((meta, Retention::Kept)) => Ok(Some(meta)),
            Some((_, Retention::Evictable)) => Ok(None),
            None if !store.contains(addr)? || store.is_evictable(addr)? => Ok(None),
            None => crate::store::read_record(store, addr)
                .await?
                .ok_or(ShardError::NotFound { addr: *addr })
                .map(Some),
        }
    }

    /// Makes a stored object kept if it is an evictable copy (an upload of an object
    /// this node fetched): its record is committed again as kept, and the upload is
    /// answered once that is durable. The caller has found it stored and nothing in
    /// flight for it; `addr` is held in flight from here, before any wait, until this
    /// ends (its record's commit settles it, as a demotion's): an eviction claims nothing
    /// in flight, so it cannot take the copy while it is being made kept.
    async fn keep(&self, store: &Store, addr: &Address) -> Result<(), ShardError> {
        self.in_flight.borrow_mut().insert(
            *addr,
            InFlight {
                waiters: Vec::new(),
                retention: Retention::Kept,
            },
        );
        let meta = match self.record_to_keep(store, addr).await {
            Ok(Some(meta)) => meta,
            Ok(None) => {
                self.settle(addr, true);
                return Ok(());
            }
            Err(e) => {
                self.settle(addr, false);
                return Err(e);
            }
        };
        self.commit_record_again(store, addr, CommitRecord::of(&meta))
            .await
    }

    /// The metadata of `addr` if it is stored as an evictable copy (`None`: kept).
    async fn record_to_keep(
        &self,
        store: &Store,
        addr: &Address,
    ) -> Result<Option<ObjectMeta>, ShardError> {
        let unindexed = self.unindexed.borrow().get(addr).cloned();
        Ok(match unindexed {
            Some((meta, Retention::Evictable)) => Some(meta),
            Some((_, Retention::Kept)) => None,
            None if store.is_evictable(addr)? => Some(
                crate::store::read_record(store, addr)
                    .await?
                    .ok_or(ShardError::NotFound { addr: *addr })?,
            ),
            None => None,
        })
    }

    /// Commits the record of a stored object again (with another retention) in the
    /// next index commit, and returns once it is durable.
    async fn commit_record_again(
        &self,
        store: &Store,
        addr: &Address,
        record: CommitRecord,
    ) -> Result<(), ShardError> {
        if self.closing.get() {
            // The commit task has stopped, or is stopping: nothing would answer this
            // (a removal over the mesh during a stop waited until the executor ended).
            self.settle(addr, false);
            return Err(ShardError::Stopping {
                shard: self.shard.0,
            });
        }
        let (done, result) = local_channel::new_bounded(1);
        {
            let mut backlog = self.backlog.borrow_mut();
            backlog.store(store).records.push(record);
            backlog.waiters.push((*addr, done));
        }
        let _ = self.wakeup.try_send(());
        self.answered(result).await
    }

    /// The answer the commit task sends on `result` (the task gone: `CommitStopped`).
    async fn answered(
        &self,
        result: LocalReceiver<Result<(), ShardError>>,
    ) -> Result<(), ShardError> {
        result
            .recv()
            .await
            .unwrap_or(Err(ShardError::CommitStopped {
                shard: self.shard.0,
            }))
    }

    /// Claims `addrs` for an eviction: those with no commit or eviction in flight and
    /// none waiting for its index record. Until [`GroupCommit::release_evicted`], an
    /// upload of a claimed address waits, then looks again (and stores it anew).
    pub(crate) fn claim_for_eviction(&self, addrs: &[Address]) -> Vec<Address> {
        let unindexed = self.unindexed.borrow();
        let mut in_flight = self.in_flight.borrow_mut();
        let mut claimed = Vec::with_capacity(addrs.len());
        for addr in addrs {
            if unindexed.contains_key(addr) || in_flight.contains_key(addr) {
                continue;
            }
            in_flight.insert(
                *addr,
                InFlight {
                    waiters: Vec::new(),
                    retention: Retention::Evictable,
                },
            );
            claimed.push(*addr);
        }
        claimed
    }

    /// Removes the record of `addr` from `store` once it is found not to decode
    /// ([`ShardError::is_unreadable_record`]), under a claim, after looking again:
    /// [`Store::forget_unreadable_record_blocking`]. `false`: a commit of it is in flight
    /// (the commit writes a good record), or its record now reads well.
    pub(crate) async fn forget_unreadable_record(
        &self,
        store: &Store,
        addr: &Address,
    ) -> Result<bool, ShardError> {
        let claimed = self.claim_for_eviction(&[*addr]);
        if claimed.is_empty() {
            return Ok(false);
        }
        let forgotten = match crate::store::read_record(store, addr).await {
            Err(e) if e.is_unreadable_record() => {
                let (store, key) = (store.clone(), *addr);
                let removed = glommio::executor()
                    .spawn_blocking(move || store.forget_unreadable_record_blocking(&key))
                    .await;
                // The node's gauges follow the index's stats (they stayed high).
                removed.map(|len| {
                    if let Some(len) = len {
                        use std::sync::atomic::Ordering::Relaxed;
                        self.metrics.objects_stored.fetch_sub(1, Relaxed);
                        self.metrics.bytes_stored.fetch_sub(len, Relaxed);
                    }
                    true
                })
            }
            _ => Ok(false),
        };
        self.release_evicted(&claimed);
        forgotten
    }

    /// Whether `addr` has a commit or an eviction in flight, or waits for its index
    /// record: what the orphan sweep must leave alone.
    pub(crate) fn is_busy(&self, addr: &Address) -> bool {
        self.in_flight.borrow().contains_key(addr) || self.unindexed.borrow().contains_key(addr)
    }

    /// Ends the claims of an eviction; uploads waiting on them look again.
    pub(crate) fn release_evicted(&self, addrs: &[Address]) {
        for addr in addrs {
            self.settle(addr, false);
        }
    }

    /// Once an index commit has failed, each upload first retries it, and is refused
    /// with its error while it keeps failing (or while another upload is retrying): the
    /// packed objects answered but unindexed must not grow past what the index takes
    /// (a full index map is the node out of space, 507).
    async fn index_healthy(self: &Rc<Self>) -> Result<(), ShardError> {
        if self.index_failure.borrow().is_none() {
            return Ok(());
        }
        if let Some(retry) = start_index_commit(self) {
            // Detached: an upload dropped while it waits (a stop ending its fetch) must
            // not cancel the retry, whose records must all reach the index — dropped,
            // they were lost and `indexing` stayed set, so no index commit ran again.
            retry.detach().await;
        }
        match self.index_failure.borrow().as_ref() {
            None => Ok(()),
            Some(source) => Err(ShardError::GroupCommit {
                records: 1,
                source: Arc::clone(source),
            }),
        }
    }

    /// A receiver of the outcome of `addr`'s commit in flight, if there is one.
    fn wait_for_commit_in_flight(&self, addr: &Address) -> Option<LocalReceiver<bool>> {
        let mut in_flight = self.in_flight.borrow_mut();
        let entry = in_flight.get_mut(addr)?;
        let (tell, outcome) = local_channel::new_bounded(1);
        entry.waiters.push(tell);
        Some(outcome)
    }

    /// Queues `staged` for the next batch and waits for the batch's result.
    async fn commit_queued(
        &self,
        store: &Store,
        staged: StagedObject,
    ) -> Result<CommitOutcome, ShardError> {
        let addr = staged.meta.addr();
        let entry = InFlight {
            waiters: Vec::new(),
            retention: staged.retention,
        };
        self.in_flight.borrow_mut().insert(addr, entry);
        let (done, result) = local_channel::new_bounded(1);
        self.pending.borrow_mut().push(PendingCommit {
            store: store.clone(),
            staged,
            done,
        });
        let _ = self.wakeup.try_send(());
        self.answered(result).await?;
        StorageCounters::add(&self.metrics.objects_created, 1);
        Ok(CommitOutcome::Created)
    }
}

/// Waits for pending uploads and writes them batch by batch until the queue is empty,
/// starting index commits as the module doc says: one at a time, overlapping the next
/// batches' writes. Once closing, it writes what is queued, indexes the whole backlog
/// and ends.
async fn commit_loop(commits: Rc<GroupCommit>, wakeups: LocalReceiver<()>) {
    let mut indexing: Option<glommio::Task<()>> = None;
    while wakeups.recv().await.is_some() {
        loop {
            let batch = commits.next_batch();
            if batch.is_empty() {
                break;
            }
            let written = write_batch(&commits, batch).await;
            commits.answer_written(written);
            if commits.index_due() {
                if let Some(running) = indexing.take() {
                    running.await;
                }
                indexing = start_indexing(&commits);
            }
        }
        // The queue ran empty: index what waits, unless an index commit is running (its
        // end wakes this loop to look again).
        if !commits.indexing.get() {
            if let Some(finished) = indexing.take() {
                finished.await;
            }
            indexing = start_indexing(&commits);
        }
        if commits.closing.get() {
            break;
        }
    }
    if let Some(running) = indexing {
        running.await;
    }
    // An upload's retry may still be running: the last index commit comes after it.
    while commits.indexing.get() {
        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
    }
    if let Some(last) = start_indexing(&commits) {
        last.await;
    }
}

/// Starts an index commit of the backlog, if it holds anything and no other index
/// commit is running — the loop's own, or an upload's retry after a failure
/// ([`GroupCommit::index_healthy`]). One at a time: two at once could commit the later
/// records' segment checkpoint while the earlier ones failed (or before they landed),
/// and a start replays only past the checkpoint — the earlier small objects, answered,
/// would never be indexed (`shard/write.rs`'s test: the answered object was gone after a
/// crash). The running one's end wakes the loop to look again.
fn start_indexing(commits: &Rc<GroupCommit>) -> Option<glommio::Task<()>> {
    let empty = commits.backlog.borrow().is_empty();
    match empty {
        true => None,
        false => start_index_commit(commits),
    }
}

/// Starts an index commit of the backlog, even an empty one (a retry after a failure:
/// its success clears the failure), unless one is running.
fn start_index_commit(commits: &Rc<GroupCommit>) -> Option<glommio::Task<()>> {
    if commits.indexing.get() {
        return None;
    }
    let backlog = std::mem::take(&mut *commits.backlog.borrow_mut());
    commits.indexing.set(true);
    let commits = Rc::clone(commits);
    Some(glommio::spawn_local(async move {
        index_backlog(&commits, backlog).await;
    }))
}
