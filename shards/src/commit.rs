//! Group commit: how a staged upload becomes a visible, durable object on its owner.
//!
//! `GroupCommit::commit` queues a staged upload; one background task per shard drains
//! the queue in batches of at most `commit_batch_max` records and, on the blocking pool,
//! for each store of the batch: syncs every staged file's data, renames each into the
//! store, syncs the object directories, then commits the store's records in one LMDB
//! transaction. Only then are the uploads acknowledged, all with the batch's one result:
//! a failure reaches every waiter as [`ShardError::GroupCommit`], sharing the underlying
//! error, and removes the batch's staged files.
//!
//! So for every acknowledged object: its data was durable before its name pointed at it,
//! its name was durable before its index record, and the record was durable before the
//! answer. A crash in between leaves at most an orphan file no record names.
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

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use ron_codec::Address;

use crate::error::ShardError;
use crate::layout::{self, ShardIndex};
use crate::metrics::ShardMetrics;
use crate::store::{CommitRecord, Store, StoreId, StoreStats};
use crate::upload::{self, StagedObject};

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    Created,
    AlreadyStored,
}

/// One record waiting for the next group commit.
struct PendingCommit {
    store: Store,
    record: CommitRecord,
    staged: StagedMove,
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
    records: Vec<CommitRecord>,
    moves: Vec<StagedMove>,
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
            record: CommitRecord {
                addr,
                record: staged.meta.encode(),
                object_len: staged.meta.len(),
            },
            staged: StagedMove {
                object_path: store.object_path(&addr),
                tmp_path: staged.tmp_path,
            },
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

/// Waits for pending records and commits them batch by batch until the queue is empty.
async fn commit_loop(commits: Rc<GroupCommit>, wakeups: LocalReceiver<()>) {
    while wakeups.recv().await.is_some() {
        loop {
            let batch = commits.next_batch();
            if batch.is_empty() {
                break;
            }
            commit_batch(&commits, batch).await;
        }
    }
}

/// Commits one batch on the blocking pool and answers each of its waiters.
async fn commit_batch(commits: &GroupCommit, batch: Vec<PendingCommit>) {
    let records = batch.len();
    let mut per_store: HashMap<StoreId, StoreBatch> = HashMap::new();
    let mut waiters = Vec::with_capacity(records);
    for p in batch {
        let entry = per_store.entry(p.store.id()).or_insert_with(|| StoreBatch {
            store: p.store,
            records: Vec::new(),
            moves: Vec::new(),
        });
        waiters.push((p.record.addr, p.done));
        entry.records.push(p.record);
        entry.moves.push(p.staged);
    }
    let outcome = glommio::executor()
        .spawn_blocking(move || commit_blocking(per_store.into_values().collect()))
        .await;
    let failure = match outcome {
        Ok(added) => {
            ShardMetrics::add(&commits.metrics.objects_stored, added.objects);
            ShardMetrics::add(&commits.metrics.bytes_stored, added.bytes);
            None
        }
        Err(source) => Some(Arc::new(source)),
    };
    for (addr, waiter) in waiters {
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

/// Makes each store's files durable under their names, then commits its records; on
/// failure removes the staged files not yet moved. Blocking (fsync).
fn commit_blocking(batches: Vec<StoreBatch>) -> Result<StoreStats, ShardError> {
    let committed = commit_stores(&batches);
    if committed.is_err() {
        for moved in batches.iter().flat_map(|b| &b.moves) {
            let _ = std::fs::remove_file(&moved.tmp_path);
        }
    }
    committed
}

fn commit_stores(batches: &[StoreBatch]) -> Result<StoreStats, ShardError> {
    let mut added = StoreStats::default();
    for batch in batches {
        move_durably(&batch.moves)?;
        let stats = batch.store.commit_blocking(&batch.records)?;
        added.objects += stats.objects;
        added.bytes += stats.bytes;
    }
    Ok(added)
}

/// Syncs each staged file's data, renames it to its object path, then syncs each
/// distinct object directory, so that a name never points at bytes a crash could lose.
fn move_durably(moves: &[StagedMove]) -> Result<(), ShardError> {
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
