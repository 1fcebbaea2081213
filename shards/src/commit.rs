//! Group commit: how a staged upload becomes a visible, durable object on its owner.
//!
//! `GroupCommit::commit` queues a staged upload; one background task per shard drains
//! the queue in batches of at most `commit_batch_max` records and, on the blocking pool,
//! for each store of the batch: appends the small objects to the store's segment with
//! one write and one data sync (`segment.rs`), syncs every staged file's data, renames
//! each into the store, syncs the object directories, then commits the store's records
//! in one LMDB transaction. Only then are the uploads acknowledged, all with the batch's
//! one result: a failure reaches every waiter as [`ShardError::GroupCommit`], sharing
//! the underlying error, and removes the batch's staged files.
//!
//! So for every acknowledged object: its data was durable before its name (or its
//! needle's place) pointed at it, its name was durable before its index record, and the
//! record was durable before the answer. A crash in between leaves at most an orphan
//! file or needle no record names.
//!
//! Uploads of one address are serialized: an address stays in the pending table from
//! its queueing until its batch is answered; a second upload of it waits for that
//! outcome — answered "already stored" if the first became durable, queued itself if
//! not — and never renames over a file whose commit is in flight.
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

use crate::error::ShardError;
use crate::layout::{self, ShardIndex};
use crate::metrics::ShardMetrics;
use crate::record::{Location, ObjectMeta};
use crate::segment::{Needle, SegmentLog};
use crate::store::{CommitRecord, Store, StoreId, StoreStats};
use crate::upload::{self, StagedBody, StagedObject};

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

/// Where a staged file is, and the name it gets in its store.
struct StagedMove {
    tmp_path: PathBuf,
    object_path: PathBuf,
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

/// Uploads of an address waiting for the outcome of its commit in flight: told
/// whether it became durable.
type AddressWaiters = Vec<LocalSender<bool>>;

/// A shard's commit queue and the task that drains it.
pub(crate) struct GroupCommit {
    shard: ShardIndex,
    /// Most records in one group commit (`ShardConfig::commit_batch_max`), at least 1.
    batch_max: usize,
    pending: RefCell<Vec<PendingCommit>>,
    /// Addresses with a commit queued or running, and the uploads waiting on each.
    in_flight: RefCell<HashMap<Address, AddressWaiters>>,
    /// The segment log of each store this shard has packed objects into, while no
    /// batch holds it.
    segments: RefCell<HashMap<StoreId, SegmentLog>>,
    wakeup: LocalSender<()>,
    metrics: Arc<ShardMetrics>,
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
    ) -> Rc<GroupCommit> {
        assert!(batch_max > 0, "commit_batch_max must be at least 1");
        let (wakeup, wakeups) = local_channel::new_bounded(1);
        let commits = Rc::new(GroupCommit {
            shard,
            batch_max,
            pending: RefCell::new(Vec::new()),
            in_flight: RefCell::new(HashMap::new()),
            segments: RefCell::new(HashMap::new()),
            wakeup,
            metrics,
        });
        glommio::spawn_local(commit_loop(Rc::clone(&commits), wakeups)).detach();
        commits
    }

    /// Makes `staged` visible in `store` (which must be the owner's store of its
    /// address) and returns once it is durable.
    pub(crate) async fn commit(
        &self,
        store: &Store,
        staged: StagedObject,
    ) -> Result<CommitOutcome, ShardError> {
        let addr = staged.meta.addr();
        loop {
            if store.contains(&addr)? {
                upload::discard(staged).await;
                return Ok(CommitOutcome::AlreadyStored);
            }
            let Some(outcome) = self.wait_for_commit_in_flight(&addr) else {
                return self.commit_queued(store, staged).await;
            };
            // Another upload of these bytes is being committed: its outcome decides.
            if outcome.recv().await == Some(true) {
                upload::discard(staged).await;
                return Ok(CommitOutcome::AlreadyStored);
            }
        }
    }

    /// A receiver of the outcome of `addr`'s commit in flight, if there is one.
    fn wait_for_commit_in_flight(&self, addr: &Address) -> Option<LocalReceiver<bool>> {
        let mut in_flight = self.in_flight.borrow_mut();
        let waiters = in_flight.get_mut(addr)?;
        let (tell, outcome) = local_channel::new_bounded(1);
        waiters.push(tell);
        Some(outcome)
    }

    /// Queues `staged` for the next batch and waits for the batch's result.
    async fn commit_queued(
        &self,
        store: &Store,
        staged: StagedObject,
    ) -> Result<CommitOutcome, ShardError> {
        let addr = staged.meta.addr();
        self.in_flight.borrow_mut().insert(addr, Vec::new());
        let (done, result) = local_channel::new_bounded(1);
        self.pending.borrow_mut().push(PendingCommit {
            store: store.clone(),
            staged,
            done,
        });
        let _ = self.wakeup.try_send(());
        result
            .recv()
            .await
            .unwrap_or(Err(ShardError::CommitStopped {
                shard: self.shard.0,
            }))?;
        ShardMetrics::add(&self.metrics.objects_created, 1);
        Ok(CommitOutcome::Created)
    }

    /// Ends `addr`'s commit in flight and tells the uploads waiting on it.
    fn settle(&self, addr: &Address, durable: bool) {
        let waiters = self.in_flight.borrow_mut().remove(addr);
        for waiter in waiters.into_iter().flatten() {
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

/// Waits for pending records and commits them batch by batch until the queue is empty,
/// two stages deep: a batch's bytes are made durable while the batch before it commits
/// its records, so the device's two flushes per batch overlap across batches.
async fn commit_loop(commits: Rc<GroupCommit>, wakeups: LocalReceiver<()>) {
    let mut indexing: Option<glommio::Task<()>> = None;
    while wakeups.recv().await.is_some() {
        loop {
            let batch = commits.next_batch();
            if batch.is_empty() {
                break;
            }
            let written = write_batch(&commits, batch).await;
            if let Some(previous) = indexing.take() {
                previous.await;
            }
            indexing = Some(glommio::spawn_local(index_batch(
                Rc::clone(&commits),
                written,
            )));
        }
    }
    if let Some(last) = indexing {
        last.await;
    }
}

/// A batch whose bytes are durable (or failed to be), waiting for its index commit.
struct WrittenBatch {
    waiters: Vec<(Address, LocalSender<Result<(), ShardError>>)>,
    /// Each store's records, saying where the durable bytes are.
    records: Result<Vec<(Store, Vec<CommitRecord>)>, ShardError>,
}

/// Stage one, on the blocking pool: makes the batch's bytes durable where their records
/// will say (segment appends, staged files synced and renamed).
async fn write_batch(commits: &GroupCommit, batch: Vec<PendingCommit>) -> WrittenBatch {
    let mut per_store: HashMap<StoreId, StoreBatch> = HashMap::new();
    let mut waiters = Vec::with_capacity(batch.len());
    for p in batch {
        let id = p.store.id();
        let entry = per_store.entry(id).or_insert_with(|| StoreBatch {
            segments: commits.segments.borrow_mut().remove(&id),
            store: p.store,
            files: Vec::new(),
            packed: Vec::new(),
        });
        let meta = p.staged.meta;
        waiters.push((meta.addr(), p.done));
        match p.staged.body {
            StagedBody::TempFile(tmp_path) => {
                let object_path = entry.store.object_path(&meta.addr());
                entry.files.push((
                    meta,
                    StagedMove {
                        tmp_path,
                        object_path,
                    },
                ));
            }
            StagedBody::Packed(body) => entry.packed.push((meta, body)),
        }
    }
    let mut batches: Vec<StoreBatch> = per_store.into_values().collect();
    let (records, batches) = glommio::executor()
        .spawn_blocking(move || (write_durably(&mut batches), batches))
        .await;
    for batch in batches {
        if let Some(log) = batch.segments {
            commits.segments.borrow_mut().insert(batch.store.id(), log);
        }
    }
    WrittenBatch { waiters, records }
}

/// Stage two: commits the batch's records on the blocking pool, then answers each of
/// its waiters with the batch's one result.
async fn index_batch(commits: Rc<GroupCommit>, written: WrittenBatch) {
    let records = written.waiters.len();
    let outcome = match written.records {
        Ok(per_store) => {
            glommio::executor()
                .spawn_blocking(move || index_durably(&per_store))
                .await
        }
        Err(failed) => Err(failed),
    };
    let failure = match outcome {
        Ok(added) => {
            ShardMetrics::add(&commits.metrics.objects_stored, added.objects);
            ShardMetrics::add(&commits.metrics.bytes_stored, added.bytes);
            None
        }
        Err(source) => Some(Arc::new(source)),
    };
    for (addr, waiter) in written.waiters {
        commits.settle(&addr, failure.is_none());
        let result = match &failure {
            None => Ok(()),
            Some(source) => Err(ShardError::GroupCommit {
                records,
                source: Arc::clone(source),
            }),
        };
        let _ = waiter.try_send(result);
    }
}

/// Makes each store's objects durable where their records will say and returns the
/// records; on failure removes the staged files not yet moved. Blocking (fsync).
fn write_durably(batches: &mut [StoreBatch]) -> WriteResult {
    let written: WriteResult = batches.iter_mut().map(write_store).collect();
    if written.is_err() {
        for (_, moved) in batches.iter().flat_map(|b| &b.files) {
            let _ = std::fs::remove_file(&moved.tmp_path);
        }
    }
    written
}

type WriteResult = Result<Vec<(Store, Vec<CommitRecord>)>, ShardError>;

fn write_store(batch: &mut StoreBatch) -> Result<(Store, Vec<CommitRecord>), ShardError> {
    let mut records = pack_durably(batch)?;
    let moves: Vec<&StagedMove> = batch.files.iter().map(|(_, m)| m).collect();
    move_durably(&moves)?;
    records.extend(batch.files.iter().map(|(meta, _)| CommitRecord::of(meta)));
    Ok((batch.store.clone(), records))
}

/// Commits each store's records in one LMDB transaction. Blocking (fsync).
fn index_durably(per_store: &[(Store, Vec<CommitRecord>)]) -> Result<StoreStats, ShardError> {
    let mut added = StoreStats::default();
    for (store, records) in per_store {
        let stats = store.commit_blocking(records)?;
        added.objects += stats.objects;
        added.bytes += stats.bytes;
    }
    Ok(added)
}

/// Appends the batch's small objects to its store's segment, durably; returns their
/// records, which say where each one lies.
fn pack_durably(batch: &mut StoreBatch) -> Result<Vec<CommitRecord>, ShardError> {
    if batch.packed.is_empty() {
        return Ok(Vec::new());
    }
    let log = match &mut batch.segments {
        Some(log) => log,
        None => batch.segments.insert(SegmentLog::open(batch.store.root())?),
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
    let places = log.append_durably(&needles)?;
    Ok(batch
        .packed
        .iter_mut()
        .zip(places)
        .map(|((meta, _), at)| {
            meta.location = Location::Packed(at);
            CommitRecord::of(meta)
        })
        .collect())
}

/// Syncs each staged file's data, renames it to its object path, then syncs each
/// distinct object directory, so that a name never points at bytes a crash could lose.
fn move_durably(moves: &[&StagedMove]) -> Result<(), ShardError> {
    for m in moves {
        std::fs::File::open(&m.tmp_path)
            .and_then(|f| f.sync_data())
            .map_err(ShardError::io("fdatasync", &m.tmp_path))?;
    }
    let mut dirs: Vec<&Path> = Vec::new();
    for m in moves {
        std::fs::rename(&m.tmp_path, &m.object_path)
            .map_err(ShardError::io("rename", &m.object_path))?;
        if let Some(dir) = m.object_path.parent() {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    dirs.into_iter().try_for_each(layout::sync_dir)
}
