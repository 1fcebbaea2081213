//! Group commit: how a staged upload becomes a visible, durable object on its owner.
//!
//! `GroupCommit::commit` renames the staged file into its store and queues its index
//! record; one background task per shard drains the queue in batches of at most
//! `commit_batch_max` records and, on the blocking pool, fsyncs the batch's object files
//! and their directories, then commits each store's records in one LMDB transaction.
//! Only then are the uploads acknowledged, all with the batch's one result: a failure
//! reaches every waiter as [`ShardError::GroupCommit`], sharing the underlying error.
//!
//! This module knows neither the shard nor the mesh.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

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
    object_path: PathBuf,
    done: LocalSender<Result<(), ShardError>>,
}

/// One store's share of a group commit.
struct StoreBatch {
    store: Store,
    records: Vec<CommitRecord>,
    paths: Vec<PathBuf>,
}

/// A shard's commit queue and the task that drains it.
pub(crate) struct GroupCommit {
    shard: ShardIndex,
    /// Most records in one group commit (`ShardConfig::commit_batch_max`), at least 1.
    batch_max: usize,
    pending: RefCell<Vec<PendingCommit>>,
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
        if store.contains(&addr)? {
            upload::discard(staged).await;
            return Ok(CommitOutcome::AlreadyStored);
        }
        let object_path = store.object_path(&addr);
        glommio::io::rename(&staged.tmp_path, &object_path)
            .await
            .map_err(|e| ShardError::io("rename", &object_path)(e.into()))?;
        let (done, result) = local_channel::new_bounded(1);
        self.pending.borrow_mut().push(PendingCommit {
            store: store.clone(),
            record: CommitRecord {
                addr,
                record: staged.meta.encode(),
                object_len: staged.meta.len(),
            },
            object_path,
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
            commit_batch(&commits.metrics, batch).await;
        }
    }
}

/// Commits one batch on the blocking pool and answers each of its waiters.
async fn commit_batch(metrics: &ShardMetrics, batch: Vec<PendingCommit>) {
    let records = batch.len();
    let mut per_store: HashMap<StoreId, StoreBatch> = HashMap::new();
    let mut waiters = Vec::with_capacity(records);
    for p in batch {
        let entry = per_store.entry(p.store.id()).or_insert_with(|| StoreBatch {
            store: p.store,
            records: Vec::new(),
            paths: Vec::new(),
        });
        entry.records.push(p.record);
        entry.paths.push(p.object_path);
        waiters.push(p.done);
    }
    let outcome = glommio::executor()
        .spawn_blocking(move || commit_blocking(per_store.into_values()))
        .await;
    let failure = match outcome {
        Ok(added) => {
            ShardMetrics::add(&metrics.objects_stored, added.objects);
            ShardMetrics::add(&metrics.bytes_stored, added.bytes);
            None
        }
        Err(source) => Some(Arc::new(source)),
    };
    for waiter in waiters {
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

/// Makes each store's files durable, then commits its records. Blocking (fsync).
fn commit_blocking(batches: impl Iterator<Item = StoreBatch>) -> Result<StoreStats, ShardError> {
    let mut added = StoreStats::default();
    for batch in batches {
        make_durable(&batch.paths)?;
        let stats = batch.store.commit_blocking(&batch.records)?;
        added.objects += stats.objects;
        added.bytes += stats.bytes;
    }
    Ok(added)
}

/// fsyncs each file and each distinct parent directory (so the renames survive a crash).
fn make_durable(paths: &[PathBuf]) -> Result<(), ShardError> {
    let mut dirs: Vec<&Path> = Vec::new();
    for path in paths {
        std::fs::File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(ShardError::io("fsync", path))?;
        if let Some(dir) = path.parent() {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    dirs.into_iter().try_for_each(layout::sync_dir)
}
