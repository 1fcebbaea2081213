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
//! uploads are refused until a retry succeeds ([`GroupCommit::index_healthy`]). A
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
//! evicted waits for the eviction to end, then stores the object anew.
//!
//! Retention: a staged object marked evictable (a fetched copy) is committed with an
//! evictable record; an upload of an object stored as an evictable copy is answered
//! once its record is committed again as kept ([`crate::store::CommitRecord`]).
//!
//! This module knows neither the shard nor the mesh.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use ron_codec::Address;
use ron_link::dht::{DhtClient, ANNOUNCE_BATCH_MAX};

use crate::cache::AddressMap;
use crate::error::ShardError;
use crate::ids::{ShardIndex, StoreId};
use crate::layout;
use crate::metrics::ShardMetrics;
use crate::record::{Location, ObjectMeta, Retention};
use crate::segment::{Checkpoint, Needle, SegmentLog};
use crate::store::{CommitRecord, Store, StoreStats};
use crate::upload::{self, StagedBody, StagedObject};

/// Unindexed packed records that start an index commit even while uploads keep coming.
pub const CHECKPOINT_RECORDS: usize = 4096;

/// Most uploads in one batch (`commit_batch_max` is at most this).
pub const BATCH_RECORDS_MAX: usize = 1024;

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    Created,
    AlreadyStored,
}

/// One upload waiting for the next group commit.
struct PendingCommit {
    store: Store,
    staged: StagedObject,
    done: LocalSender<Result<(), ShardError>>,
}

/// Where an object's staged files are, and the names they get in its store, in each
/// file's dir: parity files first, so that an object file in a store has its parity.
struct StagedMove {
    files: Vec<(PathBuf, PathBuf)>,
}

impl StagedMove {
    fn new(store: &Store, addr: &Address, staged: Vec<upload::StagedFile>) -> StagedMove {
        let files = staged
            .into_iter()
            .map(|f| {
                let to = match f.parity {
                    true => store.parity_path(addr, f.dir),
                    false => store.object_path(addr, f.dir),
                };
                (f.path, to)
            })
            .collect();
        StagedMove { files }
    }

    /// (staged, final) paths of its files.
    fn paths(&self) -> impl Iterator<Item = (&Path, &Path)> {
        self.files
            .iter()
            .map(|(tmp, to)| (tmp.as_path(), to.as_path()))
    }
}

/// One store's share of a group commit.
struct StoreBatch {
    store: Store,
    /// Objects in staged files, and where each file goes.
    files: Vec<(ObjectMeta, StagedMove)>,
    /// Objects to pack into the store's segment.
    packed: Vec<(ObjectMeta, Bytes)>,
    /// The store's segment log, lent by the commit task for the batch (opened on the
    /// blocking pool on first use).
    segments: Option<SegmentLog>,
}

/// An address with a commit (or an eviction) queued or running: the uploads waiting
/// for its outcome, told whether it became durable, and the retention it is committed
/// with.
struct InFlight {
    waiters: Vec<LocalSender<bool>>,
    retention: Retention,
}

/// An upload waiting for its answer.
type Waiter = (Address, LocalSender<Result<(), ShardError>>);

/// A store's uploads in a batch: packed ones, then those in their own files.
type StoreWaiters = (Vec<Waiter>, Vec<Waiter>);

/// Records waiting for the next index commit, per store, and the uploads answered
/// when it is durable.
#[derive(Default)]
struct IndexBacklog {
    stores: HashMap<StoreId, StoreBacklog>,
    /// Own-file uploads: answered once their records are committed.
    waiters: Vec<Waiter>,
    /// What those uploads add to the shard's stored counts once committed (an upload is
    /// queued only when its address is not stored: each is a new object).
    files_added: StoreStats,
    packed: usize,
}

struct StoreBacklog {
    store: Store,
    records: Vec<CommitRecord>,
    /// Where the store's packed records reach in its segments, if any are here.
    checkpoint: Option<Checkpoint>,
}

impl IndexBacklog {
    fn store(&mut self, store: &Store) -> &mut StoreBacklog {
        self.stores
            .entry(store.id())
            .or_insert_with(|| StoreBacklog {
                store: store.clone(),
                records: Vec::new(),
                checkpoint: None,
            })
    }

    fn is_empty(&self) -> bool {
        self.stores.is_empty() && self.waiters.is_empty()
    }
}

/// A shard's commit queue and the task that drains it.
pub(crate) struct GroupCommit {
    shard: ShardIndex,
    /// Most records in one group commit (`ShardConfig::commit_batch_max`), at least 1.
    batch_max: usize,
    pending: RefCell<Vec<PendingCommit>>,
    /// Addresses with a commit or an eviction queued or running, and the uploads
    /// waiting on each.
    in_flight: RefCell<HashMap<Address, InFlight>>,
    /// The segment log of each store this shard has packed objects into, while no
    /// batch holds it.
    segments: RefCell<HashMap<StoreId, SegmentLog>>,
    /// Packed objects answered whose index records are not yet committed.
    unindexed: RefCell<AddressMap<Address, (ObjectMeta, Retention)>>,
    /// Records for the next index commit.
    backlog: RefCell<IndexBacklog>,
    /// An index commit is running.
    indexing: std::cell::Cell<bool>,
    /// Set by [`GroupCommit::stop`]: new commits are refused, the task finishes what it
    /// holds and ends.
    closing: std::cell::Cell<bool>,
    /// The commit task, until [`GroupCommit::stop`] awaits it.
    task: RefCell<Option<glommio::Task<()>>>,
    /// Why the last index commit failed, until one succeeds.
    index_failure: RefCell<Option<Arc<ShardError>>>,
    wakeup: LocalSender<()>,
    metrics: Arc<ShardMetrics>,
    /// Where acknowledged objects are announced (the DHT thread), when the node has one.
    dht: Option<DhtClient>,
    /// Objects acknowledged since the last announcement.
    announced: RefCell<Vec<[u8; 32]>>,
    /// Woken after each index commit (the shard's evicter), if it has one.
    evicter: Option<LocalSender<()>>,
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
    /// Creates the queue and spawns its commit task on the current executor.
    pub(crate) fn start(
        shard: ShardIndex,
        batch_max: usize,
        metrics: Arc<ShardMetrics>,
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
            backlog: RefCell::new(IndexBacklog::default()),
            indexing: std::cell::Cell::new(false),
            closing: std::cell::Cell::new(false),
            task: RefCell::new(None),
            index_failure: RefCell::new(None),
            wakeup,
            metrics,
            dht,
            announced: RefCell::new(Vec::new()),
            evicter,
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
        futures_lite::future::or(
            async {
                task.await;
                true
            },
            async {
                glommio::timer::sleep(within).await;
                false
            },
        )
        .await
    }

    /// Makes `staged` visible in `store` (which must be the owner's store of its
    /// address) and returns once it is durable.
    pub(crate) async fn commit(
        &self,
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
            if self.unindexed.borrow().contains_key(&addr) || store.contains(&addr)? {
                let retention = staged.retention;
                upload::discard(staged).await;
                if retention == Retention::Kept {
                    self.keep(store, &addr).await?;
                }
                return Ok(CommitOutcome::AlreadyStored);
            }
            let Some(outcome) = self.wait_for_commit_in_flight(&addr) else {
                return self.commit_queued(store, staged).await;
            };
            // Another upload of these bytes is being committed, or the object is being
            // evicted: wait for the outcome, then look again.
            outcome.recv().await;
        }
    }

    /// Makes a stored object kept if it is an evictable copy (an upload of an object
    /// this node fetched): its record is committed again as kept, and the upload is
    /// answered once that is durable.
    async fn keep(&self, store: &Store, addr: &Address) -> Result<(), ShardError> {
        let unindexed = self.unindexed.borrow().get(addr).cloned();
        let meta = match unindexed {
            Some((meta, Retention::Evictable)) => meta,
            Some((_, Retention::Kept)) => return Ok(()),
            None if store.is_evictable(addr)? => crate::store::read_record(store, addr)
                .await?
                .ok_or(ShardError::NotFound { addr: *addr })?,
            None => return Ok(()),
        };
        let (done, result) = local_channel::new_bounded(1);
        {
            let mut backlog = self.backlog.borrow_mut();
            backlog.store(store).records.push(CommitRecord::of(&meta));
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
    async fn index_healthy(&self) -> Result<(), ShardError> {
        if self.index_failure.borrow().is_none() {
            return Ok(());
        }
        if !self.indexing.get() {
            let backlog = std::mem::take(&mut *self.backlog.borrow_mut());
            self.indexing.set(true);
            index_backlog(self, backlog).await;
        }
        match self.index_failure.borrow().as_ref() {
            None => Ok(()),
            Some(source) => Err(ShardError::GroupCommit {
                records: 1,
                source: Arc::clone(source),
            }),
        }
    }

    /// The metadata of a packed object that is durable and answered but not yet in
    /// its store's index.
    pub(crate) fn unindexed_meta(&self, addr: &Address) -> Option<ObjectMeta> {
        self.unindexed
            .borrow()
            .get(addr)
            .map(|(meta, _)| meta.clone())
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
        ShardMetrics::add(&self.metrics.objects_created, 1);
        Ok(CommitOutcome::Created)
    }

    /// Ends `addr`'s commit in flight and tells the uploads waiting on it.
    fn settle(&self, addr: &Address, durable: bool) {
        let entry = self.in_flight.borrow_mut().remove(addr);
        for waiter in entry.into_iter().flat_map(|e| e.waiters) {
            let _ = waiter.try_send(durable);
        }
    }

    /// Takes the next batch off the queue: at most `batch_max` records, oldest first.
    fn next_batch(&self) -> Vec<PendingCommit> {
        let mut pending = self.pending.borrow_mut();
        let take = pending.len().min(self.batch_max);
        pending.drain(..take).collect()
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
    if let Some(last) = start_indexing(&commits) {
        last.await;
    }
}

/// Starts an index commit of the backlog, if it holds anything.
fn start_indexing(commits: &Rc<GroupCommit>) -> Option<glommio::Task<()>> {
    let backlog = std::mem::take(&mut *commits.backlog.borrow_mut());
    if backlog.is_empty() {
        return None;
    }
    commits.indexing.set(true);
    let commits = Rc::clone(commits);
    Some(glommio::spawn_local(async move {
        index_backlog(&commits, backlog).await;
    }))
}

/// A batch's bytes, made durable (or not), per store, with the uploads waiting on them.
struct WrittenBatch {
    stores: Vec<StoreWritten>,
}

struct StoreWritten {
    store: Store,
    packed: Vec<Waiter>,
    files: Vec<Waiter>,
    outcome: Result<Written, ShardError>,
}

/// A store's share of a batch, durable where its records say.
struct Written {
    packed: Vec<(ObjectMeta, CommitRecord)>,
    files: Vec<CommitRecord>,
    checkpoint: Option<Checkpoint>,
}

/// Stage one, on the blocking pool: makes the batch's bytes durable where their records
/// will say (segment appends, staged files synced and renamed).
async fn write_batch(commits: &GroupCommit, batch: Vec<PendingCommit>) -> WrittenBatch {
    let mut per_store: HashMap<StoreId, (StoreBatch, StoreWaiters)> = HashMap::new();
    for p in batch {
        let id = p.store.id();
        let (entry, (packed, files)) = per_store.entry(id).or_insert_with(|| {
            let batch = StoreBatch {
                segments: commits.segments.borrow_mut().remove(&id),
                store: p.store,
                files: Vec::new(),
                packed: Vec::new(),
            };
            (batch, (Vec::new(), Vec::new()))
        });
        let meta = p.staged.meta;
        match p.staged.body {
            StagedBody::TempFiles(staged) => {
                files.push((meta.addr(), p.done));
                let moves = StagedMove::new(&entry.store, &meta.addr(), staged);
                entry.files.push((meta, moves));
            }
            StagedBody::Packed(body) => {
                packed.push((meta.addr(), p.done));
                entry.packed.push((meta, body));
            }
        }
    }
    let (batches, waiters): (Vec<StoreBatch>, Vec<StoreWaiters>) = per_store.into_values().unzip();
    let (outcomes, batches) = glommio::executor()
        .spawn_blocking(move || {
            let mut batches = batches;
            let outcomes: Vec<_> = batches.iter_mut().map(write_store).collect();
            (outcomes, batches)
        })
        .await;
    let mut stores = Vec::with_capacity(batches.len());
    for ((batch, outcome), (packed, files)) in batches.into_iter().zip(outcomes).zip(waiters) {
        if let Some(log) = batch.segments {
            commits.segments.borrow_mut().insert(batch.store.id(), log);
        }
        stores.push(StoreWritten {
            store: batch.store,
            packed,
            files,
            outcome,
        });
    }
    WrittenBatch { stores }
}

impl GroupCommit {
    /// Answers the packed uploads of a written batch (durable in their segment: their
    /// metadata goes to the unindexed map first) and queues every record for the next
    /// index commit, with the own-file uploads that wait for it. A failed store answers
    /// all its uploads with the failure.
    fn answer_written(&self, written: WrittenBatch) {
        for store in written.stores {
            let records = store.packed.len() + store.files.len();
            let done = match store.outcome {
                Ok(done) => done,
                Err(source) => {
                    let failure = Arc::new(source);
                    for waiter in store.packed.into_iter().chain(store.files) {
                        self.answer(waiter, Some((records, &failure)));
                    }
                    continue;
                }
            };
            let mut backlog = self.backlog.borrow_mut();
            backlog.packed += done.packed.len();
            backlog.waiters.extend(store.files);
            for file in &done.files {
                backlog.files_added.objects += 1;
                backlog.files_added.bytes += file.object_len;
            }
            let queued = backlog.store(&store.store);
            for mut record in done.files {
                record.retention = self.retention_of(&record.addr);
                queued.records.push(record);
            }
            queued.checkpoint = queued.checkpoint.max(done.checkpoint);
            let mut unindexed = self.unindexed.borrow_mut();
            for (meta, mut record) in done.packed {
                // Stored from now on: counted as it is answered.
                ShardMetrics::add(&self.metrics.objects_stored, 1);
                ShardMetrics::add(&self.metrics.bytes_stored, meta.len());
                record.retention = self.retention_of(&record.addr);
                unindexed.insert(meta.addr(), (meta, record.retention));
                queued.records.push(record);
            }
            drop((unindexed, backlog));
            for waiter in store.packed {
                self.answer(waiter, None);
            }
        }
        self.send_announcements();
    }

    /// The retention `addr` is being committed with.
    fn retention_of(&self, addr: &Address) -> Retention {
        self.in_flight
            .borrow()
            .get(addr)
            .map_or(Retention::Kept, |e| e.retention)
    }

    /// Hands the objects acknowledged since the last call to the DHT thread (never
    /// waits: a full mailbox drops them, counted; its sweep and restarts announce them).
    fn send_announcements(&self) {
        let Some(dht) = &self.dht else { return };
        let mut announced = std::mem::take(&mut *self.announced.borrow_mut());
        while !announced.is_empty() {
            let rest = announced.split_off(announced.len().min(ANNOUNCE_BATCH_MAX));
            dht.announce(std::mem::replace(&mut announced, rest));
        }
    }

    /// Whether the backlog must be indexed now: own-file uploads wait for it, or the
    /// unindexed records reached a checkpoint's worth.
    fn index_due(&self) -> bool {
        let backlog = self.backlog.borrow();
        !backlog.waiters.is_empty() || backlog.packed >= CHECKPOINT_RECORDS
    }

    /// Answers one upload: durable, or the stage's failure shared by `records` uploads.
    fn answer(&self, (addr, waiter): Waiter, failure: Option<(usize, &Arc<ShardError>)>) {
        self.settle(&addr, failure.is_none());
        if failure.is_none() && self.dht.is_some() {
            self.announced.borrow_mut().push(*addr.as_bytes());
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

/// Stage two: commits the backlog's records (and each store's checkpoint) on the
/// blocking pool, then takes its packed objects out of the unindexed map and answers
/// the own-file uploads. On failure the packed records (answered already, durable in
/// their segments) go back to the backlog, and the next upload retries
/// ([`GroupCommit::index_healthy`]). Ends with `indexing` cleared; after a success it
/// wakes the commit loop to index what came meanwhile.
async fn index_backlog(commits: &GroupCommit, backlog: IndexBacklog) {
    let IndexBacklog {
        stores,
        waiters,
        files_added,
        packed,
    } = backlog;
    let stores: Vec<StoreBacklog> = stores.into_values().collect();
    let (outcome, stores) = glommio::executor()
        .spawn_blocking(move || (index_durably(&stores), stores))
        .await;
    let succeeded = outcome.is_ok();
    match outcome {
        Ok(()) => {
            // Copies stored, or made kept: the evicter looks at the budget again.
            if let Some(evicter) = &commits.evicter {
                let _ = evicter.try_send(());
            }
            *commits.index_failure.borrow_mut() = None;
            ShardMetrics::add(&commits.metrics.objects_stored, files_added.objects);
            ShardMetrics::add(&commits.metrics.bytes_stored, files_added.bytes);
            let mut unindexed = commits.unindexed.borrow_mut();
            for record in stores.iter().flat_map(|s| &s.records) {
                unindexed.remove(&record.addr);
            }
            drop(unindexed);
            for waiter in waiters {
                commits.answer(waiter, None);
            }
            commits.send_announcements();
        }
        Err(source) => {
            let failure = Arc::new(source);
            let records = waiters.len();
            for waiter in waiters {
                commits.answer(waiter, Some((records, &failure)));
            }
            commits.requeue_packed(stores, packed);
            *commits.index_failure.borrow_mut() = Some(failure);
        }
    }
    commits.indexing.set(false);
    if succeeded {
        let _ = commits.wakeup.try_send(());
    }
}

impl GroupCommit {
    /// Puts the packed records of a failed index commit back in the backlog (they are
    /// still in the unindexed map); own-file records are dropped with their answers.
    fn requeue_packed(&self, stores: Vec<StoreBacklog>, packed: usize) {
        let unindexed = self.unindexed.borrow();
        let mut backlog = self.backlog.borrow_mut();
        backlog.packed += packed;
        for failed in stores {
            let queued = backlog.store(&failed.store);
            let mut records: Vec<CommitRecord> = failed
                .records
                .into_iter()
                .filter(|r| unindexed.contains_key(&r.addr))
                .collect();
            records.append(&mut queued.records);
            queued.records = records;
            queued.checkpoint = queued.checkpoint.max(failed.checkpoint);
        }
    }
}

/// Makes a store's share of a batch durable where its records will say; on failure
/// removes its staged files not yet moved. Blocking (fsync).
fn write_store(batch: &mut StoreBatch) -> Result<Written, ShardError> {
    let written = pack_durably(batch).and_then(|(packed, checkpoint)| {
        let moves: Vec<&StagedMove> = batch.files.iter().map(|(_, m)| m).collect();
        move_durably(&moves)?;
        let files = batch
            .files
            .iter()
            .map(|(meta, _)| CommitRecord::of(meta))
            .collect();
        Ok(Written {
            packed,
            files,
            checkpoint,
        })
    });
    if written.is_err() {
        for (_, moved) in &batch.files {
            for (tmp, _) in moved.paths() {
                let _ = std::fs::remove_file(tmp);
            }
        }
    }
    written
}

/// Commits each store's records and checkpoint in one LMDB transaction per store.
/// Blocking (fsync).
fn index_durably(stores: &[StoreBacklog]) -> Result<(), ShardError> {
    for queued in stores {
        queued
            .store
            .commit_blocking(&queued.records, queued.checkpoint)?;
    }
    Ok(())
}

/// Appends the batch's small objects to its store's segment, durably; returns their
/// metadata and records, which say where each one lies, and where the batch ends.
type Packed = (Vec<(ObjectMeta, CommitRecord)>, Option<Checkpoint>);

fn pack_durably(batch: &mut StoreBatch) -> Result<Packed, ShardError> {
    if batch.packed.is_empty() {
        return Ok((Vec::new(), None));
    }
    let log = match &mut batch.segments {
        Some(log) => log,
        None => batch.segments.insert(SegmentLog::open(
            batch.store.segments_root(),
            batch.store.segment_lanes(),
        )?),
    };
    let needles: Vec<Needle<'_>> = batch
        .packed
        .iter()
        .map(|(meta, body)| Needle {
            addr: meta.addr(),
            content_type: &meta.content_type,
            body,
        })
        .collect();
    let appended = log.append_durably(&needles)?;
    let packed = std::mem::take(&mut batch.packed)
        .into_iter()
        .zip(appended.places)
        .map(|((mut meta, _), at)| {
            meta.location = Location::Packed(at);
            let record = CommitRecord::of(&meta);
            (meta, record)
        })
        .collect();
    Ok((packed, Some(appended.end)))
}

/// Syncs each staged file's data, renames it to its object path, then syncs each
/// distinct object directory, so that a name never points at bytes a crash could lose.
fn move_durably(moves: &[&StagedMove]) -> Result<(), ShardError> {
    for (tmp, _) in moves.iter().flat_map(|m| m.paths()) {
        std::fs::File::open(tmp)
            .and_then(|f| f.sync_data())
            .map_err(ShardError::io("fdatasync", tmp))?;
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (tmp, object_path) in moves.iter().flat_map(|m| m.paths()) {
        std::fs::rename(tmp, object_path).map_err(ShardError::io("rename", object_path))?;
        if let Some(dir) = object_path.parent() {
            if !dirs.iter().any(|d| d == dir) {
                dirs.push(dir.to_path_buf());
            }
        }
    }
    dirs.iter().try_for_each(|dir| layout::sync_dir(dir))
}
