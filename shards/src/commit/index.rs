//! Stage two of a group commit: the index backlog's records (and each store's segment
//! checkpoint) committed in one LMDB transaction per store on the blocking pool, one
//! index commit at a time, overlapping the next batches' writes.

use std::sync::Arc;

use ron_link::counters::StorageCounters;

use crate::commit::queue::{GroupCommit, IndexBacklog, StoreBacklog};
use crate::error::ShardError;
use crate::store::{CommitRecord, Store};
use ron_codec::Address;

/// Stage two: commits the backlog's records (and each store's checkpoint) on the
/// blocking pool, then takes its packed objects out of the unindexed map and answers
/// the own-file uploads. On failure the packed records (answered already, durable in
/// their segments) go back to the backlog, and the next upload retries
/// ([`GroupCommit::index_healthy`]). Ends with `indexing` cleared; after a success, or
/// a failure with own-file uploads waiting, it wakes the commit loop to index what came
/// meanwhile.
pub(super) async fn index_backlog(commits: &GroupCommit, backlog: IndexBacklog) {
    let IndexBacklog {
        stores,
        waiters,
        files_added,
        packed,
    } = backlog;
    let stores: Vec<StoreBacklog> = stores.into_values().collect();
    #[cfg(test)]
    let faults = std::sync::Arc::clone(&commits.faults);
    let (outcome, stores) = glommio::executor()
        .spawn_blocking(move || {
            #[cfg(test)]
            let outcome = faults.index(|| index_durably(&stores));
            #[cfg(not(test))]
            let outcome = index_durably(&stores);
            (outcome, stores)
        })
        .await;
    let succeeded = outcome.is_ok();
    match outcome {
        Ok(()) => {
            // Copies stored, or made kept: the evicter looks at the budget again.
            if let Some(evicter) = &commits.evicter {
                let _ = evicter.try_send(());
            }
            *commits.index_failure.borrow_mut() = None;
            StorageCounters::add(&commits.metrics.objects_stored, files_added.objects);
            StorageCounters::add(&commits.metrics.bytes_stored, files_added.bytes);
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
            // Before the answers: the addresses are still in flight, so no new upload
            // of one renames its files in meanwhile.
            remove_unrecorded_files(commits, &stores).await;
            let records = waiters.len();
            for waiter in waiters {
                commits.answer(waiter, Some((records, &failure)));
            }
            commits.requeue_packed(stores, packed);
            *commits.index_failure.borrow_mut() = Some(failure);
        }
    }
    commits.indexing.set(false);
    // After a success the loop indexes what came meanwhile. After a failure, only if
    // own-file uploads came meanwhile (they wait for an index commit, and would wait
    // for the next upload's retry otherwise): one more try answers them either way.
    let waiting = !commits.backlog.borrow().waiters.is_empty();
    if succeeded || waiting {
        let _ = commits.wakeup.try_send(());
    }
}

impl GroupCommit {
    /// Puts the packed records of a failed index commit back in the backlog (they are
    /// still in the unindexed map, as written); own-file records, and a packed object's
    /// record made again by a keep or a demotion, are dropped with their answers. A
    /// demotion answered as failed was requeued with the packed record it followed, and
    /// the next index commit made a copy reported kept evictable.
    fn requeue_packed(&self, stores: Vec<StoreBacklog>, packed: usize) {
        let unindexed = self.unindexed.borrow();
        let mut backlog = self.backlog.borrow_mut();
        backlog.packed += packed;
        for failed in stores {
            let queued = backlog.store(&failed.store);
            let as_written = |r: &CommitRecord| {
                unindexed
                    .get(&r.addr)
                    .is_some_and(|(_, retention)| *retention == r.retention)
            };
            let mut records: Vec<CommitRecord> =
                failed.records.into_iter().filter(as_written).collect();
            records.append(&mut queued.records);
            queued.records = records;
            queued.checkpoint = queued.checkpoint.max(failed.checkpoint);
        }
    }
}

/// After a failed index commit: the files of the own-file objects it held, which stage
/// one renamed into place and no record names (none committed in any replica; a packed
/// object stays in the unindexed map, a record made again for a stored object keeps its
/// old one). Kept, they were space nothing ever gave back. An adopted orphan's file is
/// kept: its bytes were there before (the next start adopts it again). Best effort: a
/// failure is logged, and the files then stay until the object is uploaded again.
async fn remove_unrecorded_files(commits: &GroupCommit, stores: &[StoreBacklog]) {
    let dropped: Vec<(Store, Vec<Address>)> = {
        let unindexed = commits.unindexed.borrow();
        let adopting = commits.adopting.borrow();
        stores
            .iter()
            .map(|s| {
                let addrs = s.records.iter().map(|r| r.addr);
                let own_file = addrs
                    .filter(|a| !unindexed.contains_key(a) && !adopting.contains(a))
                    .collect();
                (s.store.clone(), own_file)
            })
            .filter(|(_, addrs): &(Store, Vec<Address>)| !addrs.is_empty())
            .collect()
    };
    if dropped.is_empty() {
        return;
    }
    let removed = glommio::executor()
        .spawn_blocking(move || {
            for (store, addrs) in dropped {
                let unrecorded: Vec<Address> = addrs
                    .into_iter()
                    .filter(|a| matches!(store.contains(a), Ok(false)))
                    .collect();
                store.unlink_files_blocking(&unrecorded, "remove an unindexed object's file")?;
            }
            Ok::<(), ShardError>(())
        })
        .await;
    if let Err(e) = removed {
        tracing::warn!(error = %e, "files of uploads whose index commit failed are kept until they are uploaded again");
    }
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
