//! Stage one of a group commit, on the blocking pool: a batch's bytes made durable where
//! their records will say — small objects appended to their store's segment with one
//! write and one data sync, staged files synced and renamed into the store — then the
//! packed uploads answered and every record queued for the index (`index.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use ron_codec::Address;
use ron_link::counters::StorageCounters;

use crate::commit::queue::{GroupCommit, PendingCommit, Waiter};
use crate::error::ShardError;
use crate::ids::StoreId;
use crate::layout;
use crate::record::{Location, ObjectMeta};
use crate::segment::{Checkpoint, Needle, SegmentLog};
use crate::store::{CommitRecord, Store};
use crate::upload::{self, StagedBody};

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

/// A store's uploads in a batch: packed ones, then those in their own files.
type StoreWaiters = (Vec<Waiter>, Vec<Waiter>);

/// A batch's bytes, made durable (or not), per store, with the uploads waiting on them.
pub(super) struct WrittenBatch {
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
pub(super) async fn write_batch(commits: &GroupCommit, batch: Vec<PendingCommit>) -> WrittenBatch {
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
    #[cfg(test)]
    let faults = std::sync::Arc::clone(&commits.faults);
    let (outcomes, batches) = glommio::executor()
        .spawn_blocking(move || {
            #[cfg(test)]
            faults.stall_write();
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
    pub(super) fn answer_written(&self, written: WrittenBatch) {
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
                StorageCounters::add(&self.metrics.objects_stored, 1);
                StorageCounters::add(&self.metrics.bytes_stored, meta.len());
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
