//! The write path's entry points: an upload begins on the shard its connection is on
//! (`upload.rs` hashes and stages it) and is committed on the owner of its address
//! (`commit.rs`'s group commit), forwarded over the mesh when that is another shard.

use std::rc::Rc;

use ron_codec::Address;
use ron_link::counters::StorageCounters;

use crate::commit::CommitOutcome;
use crate::error::ShardError;
use crate::evict::BackgroundClaim;
use crate::lifecycle::StopSignal;
use crate::mesh::{MeshOp, MeshReply};
use crate::record::Retention;
use crate::shard::state::{mesh_confused, Shard};
use crate::upload::{self, Placement, StagedObject, Upload};

/// What [`Shard::discard_damaged_if_evictable`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamagedDiscard {
    /// The evictable copy is gone.
    Discarded,
    /// The copy is kept: a placement's, to be replaced rather than dropped.
    Kept,
    /// Not held here, or a check, repair, eviction or removal of it is under way.
    NotHeld,
}

impl Shard {
    /// Starts an upload of `expected_len` bytes if announced; a long one gets a temp
    /// file in the data dir's temp area, a small one is kept in memory to be packed.
    /// An announced length the data dirs have no room for is refused here
    /// ([`ShardError::NoRoom`], 507), before a byte of it is received.
    pub fn begin_upload(&self, expected_len: Option<u64>) -> Result<Upload, ShardError> {
        self.begin(expected_len, true)
    }

    /// Starts the upload of a copy fetched to be evictable: never packed, whatever its
    /// size — a file of its own, whose space its eviction gives back at once. A packed
    /// copy's needle outlives its eviction as dead space in its segment until a start
    /// compacts it, so an edge reading small objects through filled its disk with them.
    /// Refused like [`Shard::begin_upload`] when the claimed length has no room.
    pub fn begin_fetched_copy(&self, expected_len: Option<u64>) -> Result<Upload, ShardError> {
        self.begin(expected_len, false)
    }

    /// Starts storing again, in a file of its own, an object of `len` bytes found with
    /// no record (`orphans.rs`): kept, refused like any upload without room. `rot`: the
    /// rotation its files were found in, so that its new files replace them one for one.
    pub(super) fn begin_own_file(&self, len: u64, rot: u8) -> Result<Upload, ShardError> {
        self.begin_at(Some(len), false, Some(rot))
    }

    fn begin(&self, expected_len: Option<u64>, pack: bool) -> Result<Upload, ShardError> {
        self.begin_at(expected_len, pack, None)
    }

    fn begin_at(
        &self,
        expected_len: Option<u64>,
        pack: bool,
        rot: Option<u8>,
    ) -> Result<Upload, ShardError> {
        let seq = self.upload_seq.get();
        let placement = Placement {
            dirs: self.config.data_dirs.clone(),
            // Spreads column 0 of successive uploads over the dirs.
            rot: rot.unwrap_or(seq as u8),
        };
        if let Some(len) = expected_len {
            let per_dir = Upload::disk_bytes_per_dir(&placement, len, self.config.ec, pack);
            self.free_space.check(len, &per_dir)?;
        }
        self.upload_seq.set(seq + 1);
        let name = format!("{}{seq}", self.upload_prefix());
        Ok(Upload::new(
            placement,
            name,
            expected_len,
            self.config.ec,
            pack,
        ))
    }

    /// Makes a staged object visible on its owner shard and returns once it is durable.
    pub async fn commit(
        self: &Rc<Self>,
        staged: StagedObject,
    ) -> Result<CommitOutcome, ShardError> {
        match self.owner(&staged.meta.addr()) {
            None => self.commit_local(staged).await,
            Some(owner) => match self.mesh()?.call(owner, MeshOp::Commit(staged)).await? {
                MeshReply::Committed(outcome) => Ok(outcome),
                _ => Err(mesh_confused(owner)),
            },
        }
    }

    /// Makes `addr` a kept copy if this shard holds it (durable before it returns);
    /// `false` when it does not hold it. Only the owner shard holds an object: on
    /// another shard it answers `false`.
    pub async fn keep_if_stored(&self, addr: &Address) -> Result<bool, ShardError> {
        if self.owner(addr).is_some() {
            return Ok(false);
        }
        let store = self.local_store(addr)?;
        self.commits.keep_if_stored(store, addr).await
    }

    /// Makes `addr` evictable if this shard holds it kept (durable before it returns);
    /// `false` when it does not hold it kept. Only on the owner shard.
    pub async fn demote_if_kept(&self, addr: &Address) -> Result<bool, ShardError> {
        if self.owner(addr).is_some() {
            return Ok(false);
        }
        let store = self.local_store(addr)?;
        self.commits.demote(store, addr).await
    }

    /// Removes the copy of `addr` this shard holds, kept or not, so that a verified copy
    /// can be fetched in its place: for a copy found damaged beyond what its parity can
    /// rebuild ([`Shard::remove_local`]). `false`: not held here, or a commit, eviction
    /// or repair of it is under way (the caller asks again later).
    pub async fn discard_damaged(self: &Rc<Self>, addr: &Address) -> Result<bool, ShardError> {
        if self.owner(addr).is_some() {
            return Ok(false);
        }
        let discarded = self.remove_local(addr).await?;
        if discarded {
            StorageCounters::add(&self.metrics.damaged_copies_discarded, 1);
        }
        Ok(discarded)
    }

    /// Removes this (owner) shard's copy of `addr` if it is evictable — a read-through's
    /// copy found damaged: its next read reads it through. One step: the copy claimed,
    /// its retention looked at and its eviction claimed with no wait between, so no keep
    /// comes between the look and the removal. Looked at first and removed after a wait,
    /// a copy a pull had made kept meanwhile (a placement's copy, to be replaced once its
    /// replacement is staged) was dropped as a cache's.
    pub async fn discard_damaged_if_evictable(
        self: &Rc<Self>,
        addr: &Address,
    ) -> Result<DamagedDiscard, ShardError> {
        if self.owner(addr).is_some() {
            return Ok(DamagedDiscard::NotHeld);
        }
        let store = self.local_store(addr)?.clone();
        let Some(claim) = self.claims.try_claim(*addr) else {
            return Ok(DamagedDiscard::NotHeld);
        };
        match self.commits.stored_retention(&store, addr)? {
            None => return Ok(DamagedDiscard::NotHeld),
            Some(Retention::Kept) => return Ok(DamagedDiscard::Kept),
            Some(Retention::Evictable) => {}
        }
        let evicter = super::services::evicter(self, StopSignal::default());
        if !evicter.discard(&store, claim).await? {
            return Ok(DamagedDiscard::NotHeld);
        }
        self.damaged.forget(addr);
        self.files.forget(addr, store.dir_count());
        StorageCounters::add(&self.metrics.damaged_copies_discarded, 1);
        // Nothing is fetched in its place: no longer provided here.
        self.withdraw(*addr).await;
        Ok(DamagedDiscard::Discarded)
    }

    /// Removes this node's copy of `addr` (an operator's DELETE), on whichever shard
    /// owns it. `false`: none is held, or a commit, eviction or repair of it is under
    /// way. The DHT is not told here: the caller withdraws the record.
    pub async fn remove(self: &Rc<Self>, addr: &Address) -> Result<bool, ShardError> {
        match self.owner(addr) {
            None => self.remove_local(addr).await,
            Some(owner) => match self.mesh()?.call(owner, MeshOp::Remove(*addr)).await? {
                MeshReply::Removed(removed) => Ok(removed),
                _ => Err(mesh_confused(owner)),
            },
        }
    }

    /// Removes the copy of `addr` this (owner) shard holds, kept or not, crash-safely:
    /// made evictable first (durable), then evicted as the evicter would (its record,
    /// every shard's cached metadata, its files).
    pub(super) async fn remove_local(self: &Rc<Self>, addr: &Address) -> Result<bool, ShardError> {
        // Claimed before it is made evictable, held until it is gone: another removal
        // in between (the damaged copies' service) saw it evictable, took it for a
        // read-through's copy and removed it, and the verified replacement this removal
        // made way for was thrown away — the node left with no copy.
        let Some(claim) = self.claims.try_claim(*addr) else {
            // A scrub, check, repair, eviction or removal of it is under way.
            return Ok(false);
        };
        self.remove_claimed(addr, claim).await
    }

    /// [`Shard::remove_local`] of a copy `claim` holds.
    async fn remove_claimed(
        self: &Rc<Self>,
        addr: &Address,
        claim: BackgroundClaim,
    ) -> Result<bool, ShardError> {
        let store = self.local_store(addr)?.clone();
        let demoted = self.commits.demote(&store, addr).await?;
        let evicter = super::services::evicter(self, StopSignal::default());
        let removed = evicter.discard(&store, claim).await?;
        if removed {
            self.damaged.forget(addr);
        }
        if demoted && !removed {
            // A commit of it in flight (an upload, a keep) kept it from the eviction:
            // kept again, as it was, so the sweep's walk of kept copies still finds it.
            self.commits.keep_if_stored(&store, addr).await?;
        }
        // The open files of the removed copy: a copy stored later takes their names.
        self.files.forget(addr, store.dir_count());
        Ok(removed)
    }

    pub(super) async fn commit_local(
        self: &Rc<Self>,
        staged: StagedObject,
    ) -> Result<CommitOutcome, ShardError> {
        let addr = staged.meta.addr();
        let store = self.local_store(&addr)?;
        // The copy held failed its check past repair: these verified bytes take its
        // place. Answered "already stored" and dropped before, they left the object
        // unreadable here — a node off a network had no other way to mend it.
        let mending = match self.damaged.is_reported(&addr) {
            false => false,
            true => match self.discard_reported_damage(&addr).await {
                Ok(removed) => removed,
                Err(e) => {
                    upload::discard(staged).await;
                    return Err(e);
                }
            },
        };
        // An upload of a stored object may have to make it kept: the commit queue looks.
        let evictable = staged.retention == Retention::Evictable;
        if evictable && self.cached_meta(&addr).is_some() {
            upload::discard(staged).await;
            return Ok(CommitOutcome::AlreadyStored);
        }
        let outcome = self.commits.commit(store, staged).await;
        match &outcome {
            Ok(CommitOutcome::Created) => self.damaged.forget(&addr),
            // The damaged copy is gone and nothing took its place: no longer provided.
            Err(_) if mending => self.withdraw(addr).await,
            _ => {}
        }
        outcome
    }

    /// Removes the copy of `addr` reported damaged, counted with the damaged copies
    /// discarded, once no check, repair or other removal holds it (a second upload of
    /// the object waits for the first's removal, then finds the report gone with the
    /// first's commit, or nothing left to remove). Refused on the spot, a second upload
    /// came between the first's removal and its eviction, and both were answered
    /// "already stored" with the damage left. `false`: nothing removed.
    async fn discard_reported_damage(self: &Rc<Self>, addr: &Address) -> Result<bool, ShardError> {
        let claim = self.claims.claim(*addr).await;
        if !self.damaged.is_reported(addr) {
            return Ok(false);
        }
        let removed = self.remove_claimed(addr, claim).await?;
        if removed {
            tracing::warn!(obj = %addr, "a copy found damaged past repair is replaced by the whole one stored again");
            StorageCounters::add(&self.metrics.damaged_copies_discarded, 1);
        }
        Ok(removed)
    }

    /// Tells the DHT (on a node in a network) this node no longer provides `addr`.
    async fn withdraw(&self, addr: Address) {
        if let Some(dht) = &self.config.dht {
            crate::evict::withdraw(dht, vec![*addr.as_bytes()]).await;
        }
    }

    /// What the temp files of this shard's uploads are named by: the shard and the
    /// process, so that no other shard's or process's files match.
    fn upload_prefix(&self) -> String {
        format!("upload-{}-{}-", self.index.0, std::process::id())
    }

    /// Removes the temp files of this shard's uploads that were abandoned (a request or
    /// a fetch cut off by a stop) and returns how many there were. Called by
    /// [`Shard::stop`] once nothing of this shard uploads or commits any more.
    pub(super) async fn remove_abandoned_uploads(&self) -> Result<usize, ShardError> {
        let (dirs, prefix) = (self.config.data_dirs.tmp_dirs(), self.upload_prefix());
        glommio::executor()
            .spawn_blocking(move || remove_named(&dirs, &prefix))
            .await
    }
}

/// Removes the files of `dirs` whose names start with `prefix`. Blocking.
fn remove_named(dirs: &[std::path::PathBuf], prefix: &str) -> Result<usize, ShardError> {
    let mut removed = 0;
    for dir in dirs {
        let entries = std::fs::read_dir(dir).map_err(ShardError::io("list", dir))?;
        for entry in entries {
            let entry = entry.map_err(ShardError::io("list", dir))?;
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(ShardError::io("remove", &path))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::path::Path;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    use glommio::{LocalExecutorBuilder, Placement as Pinning, PoolPlacement};
    use ron_codec::tree::GroupIndex;
    use ron_codec::ChunkTree;

    use super::*;
    use crate::layout::{self, DataDirs, Routing};
    use crate::repair;
    use crate::{ShardConfig, ShardIndex};

    fn config(data_dir: &Path) -> ShardConfig {
        ShardConfig {
            data_dirs: DataDirs::one(data_dir),
            cache_bytes_max: 4 << 20,
            meta_bytes_max: 1 << 20,
            open_files_max: 16,
            index_bytes_max: 1 << 26,
            commit_batch_max: 64,
            ec: crate::ec::EcParams::default_for(1),
            scrub_bytes_per_s: 0,
            dht: None,
            evictable_bytes_max: None,
            announce_filter: Default::default(),
        }
    }

    async fn start_shard(data_dir: &Path) -> Rc<Shard> {
        start_shard_with(data_dir, crate::ec::EcParams::default_for(1)).await
    }

    async fn start_shard_with(data_dir: &Path, ec: crate::ec::EcParams) -> Rc<Shard> {
        start_shard_configured(ShardConfig {
            ec,
            ..config(data_dir)
        })
        .await
    }

    /// A shard of `config`'s data dirs, with `config`.
    async fn start_shard_configured(config: ShardConfig) -> Rc<Shard> {
        let table = layout::open_data_dirs(&config.data_dirs, 1, 0)
            .unwrap()
            .table;
        for (_, dir) in config.data_dirs.iter() {
            layout::clean_tmp(dir).unwrap();
        }
        let routing = Routing::new(table, 1);
        let metrics = Arc::new(StorageCounters::default());
        Shard::start(ShardIndex(0), routing, config, None, metrics)
            .await
            .unwrap()
    }

    /// Runs `work` on a shard started in a fresh data dir named `name`, on an executor
    /// of its own; the dir is removed after.
    fn on_one_shard<F, Fut>(name: &str, work: F)
    where
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        on_shard_configured(name, config, work);
    }

    /// As [`on_one_shard`], the shard's configuration made by `configured` from the
    /// fresh dir (which may name several data dirs under it).
    fn on_shard_configured<C, F, Fut>(name: &str, configured: C, work: F)
    where
        C: FnOnce(&Path) -> ShardConfig + Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.clone();
        LocalExecutorBuilder::new(Pinning::Unbound)
            .blocking_thread_pool_placement(PoolPlacement::Unbound(1))
            .spawn(
                move || async move { work(start_shard_configured(configured(&root)).await).await },
            )
            .unwrap()
            .join()
            .unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    /// What a process that dies leaves of `from`: its files as the page cache holds them.
    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    async fn staged(shard: &Shard, data: &[u8], retention: Retention) -> StagedObject {
        let mut upload = shard.begin_upload(Some(data.len() as u64)).unwrap();
        upload.write(data).await.unwrap();
        let mut staged = upload.finish(String::new()).await.unwrap();
        staged.retention = retention;
        staged
    }

    /// A 300,000-byte object (its bytes cycling below `modulus`) committed kept, then
    /// reported damaged as a read or the scrubber would: its address and bytes.
    async fn kept_and_reported_damaged(shard: &Rc<Shard>, modulus: u32) -> (Address, Vec<u8>) {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % modulus) as u8).collect();
        let copy = staged(shard, &data, Retention::Kept).await;
        let addr = copy.meta.addr();
        shard.commit(copy).await.unwrap();
        assert!(shard.damaged.report(addr));
        (addr, data)
    }

    /// An own-file upload whose index commit fails leaves no file behind: stage one had
    /// renamed its data and parity into place, and nothing ever removed them (a re-upload
    /// renamed over them; otherwise their space was lost).
    #[test]
    fn an_upload_whose_index_commit_fails_leaves_no_file() {
        on_one_shard("ron-shards-index-fails-files", |shard| async move {
            let faults = Arc::clone(&shard.commits.faults);
            faults.index_failures.store(1, Ordering::Relaxed);
            let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            let upload = staged(&shard, &data, Retention::Kept).await;
            let addr = upload.meta.addr();
            assert!(upload.meta.parity.is_some(), "written with parity");
            let refused = shard
                .commit(upload)
                .await
                .expect_err("the index commit failed");
            assert!(refused.to_string().contains("injected"), "{refused}");
            let store = shard.local_store(&addr).unwrap().clone();
            let path = store.object_path(&addr, crate::ids::DirIndex(0));
            assert!(!path.exists(), "{} kept", path.display());
            assert!(!layout::parity_path(&path).exists(), "its parity kept");
        });
    }

    /// The orphan sweep's adoption of a file whose index commit fails keeps the file:
    /// its bytes were the only copy of an acknowledged object whose index was lost.
    /// Before, the failure's clean-up removed it as an upload's.
    #[test]
    fn an_adopted_file_is_kept_when_its_index_commit_fails() {
        on_one_shard("ron-shards-adopt-fails", |shard| async move {
            shard
                .commits
                .faults
                .index_failures
                .store(1, Ordering::Relaxed);
            let data: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
            let adopted = staged(&shard, &data, Retention::Kept).await;
            let addr = adopted.meta.addr();
            shard.commits.adopting.borrow_mut().insert(addr);
            shard
                .commit(adopted)
                .await
                .expect_err("the index commit failed");
            shard.commits.adopting.borrow_mut().remove(&addr);
            let store = shard.local_store(&addr).unwrap().clone();
            let path = store.object_path(&addr, crate::ids::DirIndex(0));
            assert_eq!(std::fs::read(&path).unwrap(), data, "kept, whole");
        });
    }

    /// A demotion of a packed object not yet indexed, answered as failed with its index
    /// commit, is not committed by the next one: the copy stays kept. Before, its record
    /// was requeued with the packed record it followed, and a copy reported kept (a
    /// placement's pull, meanwhile) was made evictable.
    #[test]
    fn a_demotion_answered_as_failed_is_not_committed_later() {
        on_one_shard("ron-shards-demote-fails", |shard| async move {
            let faults = Arc::clone(&shard.commits.faults);
            faults.index_stall_ms.store(200, Ordering::Relaxed);
            faults.index_failures.store(2, Ordering::Relaxed);
            let small = staged(&shard, &[5u8; 64], Retention::Kept).await;
            let addr = small.meta.addr();
            assert_eq!(shard.commit(small).await.unwrap(), CommitOutcome::Created);
            wait_until(|| shard.commits.index_failed() && !shard.commits.indexing_now()).await;
            let store = shard.local_store(&addr).unwrap().clone();
            shard
                .commits
                .demote(&store, &addr)
                .await
                .expect_err("its index commit failed");
            assert!(shard.commits.keep_if_stored(&store, &addr).await.unwrap());
            let later = staged(&shard, &[6u8; 64], Retention::Kept).await;
            assert_eq!(shard.commit(later).await.unwrap(), CommitOutcome::Created);
            wait_until(|| !shard.commits.index_failed() && store.contains(&addr).unwrap()).await;
            assert!(!store.is_evictable(&addr).unwrap(), "still kept");
        });
    }

    /// A copy removed while its announcement waits for room in the DHT thread's mailbox
    /// is not announced after its withdrawal. Before, the held announcement went out at
    /// the next call, and the node advertised (and republished) a copy it no longer had.
    #[test]
    fn a_removed_copy_is_not_announced_after_its_withdrawal() {
        // A mailbox with no room: every announcement is held.
        let (dht, mailbox) = ron_link::dht::DhtClient::for_tests(0);
        let configured = |dir: &Path| ShardConfig {
            dht: Some(dht),
            ..config(dir)
        };
        on_shard_configured("ron-shards-held", configured, |shard| async move {
            let _mailbox = mailbox;
            let data: Vec<u8> = (0..300_000u32).map(|i| (i % 239) as u8).collect();
            let upload = staged(&shard, &data, Retention::Kept).await;
            let addr = upload.meta.addr();
            shard.commit(upload).await.unwrap();
            assert!(shard.commits.announcements_held().contains(addr.as_bytes()));
            assert!(shard.remove(&addr).await.unwrap());
            assert!(
                !shard.commits.announcements_held().contains(addr.as_bytes()),
                "a removed copy's announcement dropped"
            );
        });
    }

    /// An upload mending a damaged copy whose own commit then fails leaves the node
    /// without the object: it is withdrawn from the DHT. Before, the node went on
    /// providing a copy it no longer had.
    #[test]
    fn a_mending_upload_that_fails_to_commit_withdraws_the_object() {
        let (dht, mailbox) = ron_link::dht::DhtClient::for_tests(64);
        let configured = |dir: &Path| ShardConfig {
            dht: Some(dht),
            ..config(dir)
        };
        on_shard_configured("ron-shards-mend-fails", configured, |shard| async move {
            let (addr, data) = kept_and_reported_damaged(&shard, 233).await;
            // The upload's files are written slowly: its index commit is set to fail
            // once the damaged copy is gone, before the upload's own commit.
            let faults = Arc::clone(&shard.commits.faults);
            faults.write_stall_ms.store(300, Ordering::Relaxed);
            let again = staged(&shard, &data, Retention::Kept).await;
            let committing = glommio::spawn_local({
                let shard = Rc::clone(&shard);
                async move { shard.commit(again).await }
            });
            let discarded = || {
                shard
                    .metrics
                    .damaged_copies_discarded
                    .load(Ordering::Relaxed)
            };
            while discarded() == 0 {
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
            faults.index_failures.store(1, Ordering::Relaxed);
            committing
                .await
                .expect_err("the upload's index commit failed");
            let withdrawn = mailbox.try_iter().any(|change| {
                matches!(change, ron_link::dht::ProviderChange::Withdraw(keys) if keys.contains(addr.as_bytes()))
            });
            assert!(withdrawn, "the lost copy is no longer provided");
        });
    }

    /// Two uploads at once of an object whose copy was reported damaged: one stores it
    /// anew, the other finds it stored, and the copy is whole. Before, the second came
    /// between the first's removal and its eviction: both were answered "already
    /// stored" and the damaged copy stayed.
    #[test]
    fn two_uploads_at_once_mend_a_damaged_copy() {
        on_one_shard("ron-shards-mend-twice", |shard| async move {
            let (addr, data) = kept_and_reported_damaged(&shard, 227).await;
            let uploads: Vec<_> = [
                staged(&shard, &data, Retention::Kept).await,
                staged(&shard, &data, Retention::Kept).await,
            ]
            .into_iter()
            .map(|upload| {
                let shard = Rc::clone(&shard);
                glommio::spawn_local(async move { shard.commit(upload).await.unwrap() })
            })
            .collect();
            let mut outcomes = Vec::new();
            for upload in uploads {
                outcomes.push(upload.await);
            }
            outcomes.sort_by_key(|o| *o == CommitOutcome::AlreadyStored);
            assert_eq!(
                outcomes,
                [CommitOutcome::Created, CommitOutcome::AlreadyStored]
            );
            assert!(!shard.damaged.is_reported(&addr));
            let removed = shard
                .metrics
                .damaged_copies_discarded
                .load(Ordering::Relaxed);
            assert_eq!(removed, 1);
        });
    }

    /// A copy reported damaged and then found whole (replaced since, or rebuilt) is no
    /// longer reported: an upload of it then would remove a healthy copy to store it
    /// again.
    #[test]
    fn a_whole_check_clears_a_damage_report() {
        on_one_shard("ron-shards-whole-clears", |shard| async move {
            let (addr, data) = kept_and_reported_damaged(&shard, 229).await;
            assert!(shard.check_object(&addr).await.unwrap().is_whole());
            assert!(!shard.damaged.is_reported(&addr));
            let again = staged(&shard, &data, Retention::Kept).await;
            assert_eq!(
                shard.commit(again).await.unwrap(),
                CommitOutcome::AlreadyStored
            );
        });
    }

    /// The damaged copies' service drops a read-through's evictable copy and leaves a kept
    /// one (a placement's, replaced rather than dropped) in one step.
    #[test]
    fn only_an_evictable_damaged_copy_is_dropped() {
        on_one_shard("ron-shards-drop-evictable", |shard| async move {
            let cached: Vec<u8> = (0..100_000u32).map(|i| (i % 211) as u8).collect();
            let placed: Vec<u8> = (0..100_000u32).map(|i| (i % 199) as u8).collect();
            let evictable = staged(&shard, &cached, Retention::Evictable).await;
            let kept = staged(&shard, &placed, Retention::Kept).await;
            let (a, b) = (evictable.meta.addr(), kept.meta.addr());
            shard.commit(evictable).await.unwrap();
            shard.commit(kept).await.unwrap();
            let drop_it = |addr| {
                let shard = Rc::clone(&shard);
                async move { shard.discard_damaged_if_evictable(&addr).await.unwrap() }
            };
            assert_eq!(drop_it(b).await, DamagedDiscard::Kept);
            assert!(shard.is_kept(&b).await.unwrap(), "the kept copy stays");
            assert_eq!(drop_it(a).await, DamagedDiscard::Discarded);
            assert!(shard.meta(&a).await.is_err(), "the cache's copy is gone");
            assert_eq!(drop_it(a).await, DamagedDiscard::NotHeld);
            let claim = shard.claims.claim(b).await;
            assert_eq!(drop_it(b).await, DamagedDiscard::NotHeld, "busy");
            drop(claim);
        });
    }

    /// Two removals of one copy at once (a replacement making way for its verified copy,
    /// and the damaged copies' service): the first claims the copy before it makes it
    /// evictable, so the second, which sees it evictable, is refused. Before, the second
    /// took it for a read-through's copy and removed it in the first's window, and the
    /// first (a replacement's commit) threw its verified copy away: no copy left.
    #[test]
    fn a_copy_being_removed_is_not_removed_by_a_second_removal_meanwhile() {
        on_one_shard("ron-shards-remove-twice", |shard| async move {
            let data: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
            let kept = staged(&shard, &data, Retention::Kept).await;
            let addr = kept.meta.addr();
            shard.commit(kept).await.unwrap();
            let first = glommio::spawn_local({
                let shard = Rc::clone(&shard);
                async move { shard.remove_local(&addr).await.unwrap() }
            });
            // The first has made it evictable (its demotion is indexed).
            while shard.is_kept(&addr).await.unwrap() {
                glommio::yield_if_needed().await;
                glommio::timer::sleep(Duration::from_micros(50)).await;
            }
            let second = shard.remove_local(&addr).await.unwrap();
            assert!(!second, "the second removal found the copy claimed");
            assert!(first.await, "the first removal removed it");
        });
    }

    /// A read holding an object's metadata from before an eviction, on a node of three
    /// dirs, finds the copy stored again since (another rotation: its columns in other
    /// dirs): a miss, not damage. Before, the new copy's blocks read with the old
    /// geometry failed, the rebuild failed, and the damage report made replication
    /// discard the healthy new copy.
    #[test]
    fn a_copy_stored_again_elsewhere_is_no_damage_to_a_read_of_the_old_metadata() {
        let configured = |root: &Path| ShardConfig {
            data_dirs: DataDirs::new((0..3).map(|d| root.join(format!("d{d}"))).collect()),
            ec: crate::ec::EcParams::new(2, 1).unwrap(),
            ..config(&root.join("d0"))
        };
        on_shard_configured("ron-shards-again", configured, |shard| async move {
            let data: Vec<u8> = (0..300_000u32).map(|i| (i % 233) as u8).collect();
            let first = staged(&shard, &data, Retention::Evictable).await;
            let (addr, before) = (first.meta.addr(), first.meta.clone());
            shard.commit(first).await.unwrap();
            assert!(shard.remove(&addr).await.unwrap());
            drop(shard.begin_upload(Some(10)).unwrap());
            let again = staged(&shard, &data, Retention::Evictable).await;
            assert_ne!(again.meta.parity, before.parity, "another rotation");
            shard.commit(again).await.unwrap();
            let read = shard.group_from_disk(&before, GroupIndex(0)).await;
            assert!(
                matches!(read, Err(ShardError::NotFound { .. })),
                "{:?}",
                read.as_ref().err()
            );
            assert!(shard.damaged.report(addr), "reported damaged by the read");
        });
    }

    /// A removal (a demotion first) asked of a stopped shard is refused at once. Before,
    /// its record waited in the backlog of a commit task that had ended, and the caller
    /// (a mesh removal during a stop) waited until the executor did.
    #[test]
    fn a_removal_asked_of_a_stopped_shard_is_refused() {
        on_one_shard("ron-shards-remove-stopped", |shard| async move {
            let data: Vec<u8> = (0..300_000u32).map(|i| (i % 229) as u8).collect();
            let upload = staged(&shard, &data, Retention::Kept).await;
            let addr = upload.meta.addr();
            shard.commit(upload).await.unwrap();
            shard.stop(Duration::from_secs(5)).await;
            let removal =
                crate::lifecycle::finished_within(Duration::from_secs(5), shard.remove(&addr));
            let refused = removal.await.expect("answered, not left waiting");
            assert!(
                matches!(refused, Err(ShardError::Stopping { .. })),
                "{refused:?}"
            );
        });
    }

    /// An upload dropped while it retries a failed index commit (a stop ending its
    /// fetch) does not take the retry with it: the retry ends, every answered object is
    /// indexed, and later index commits run. Before, `indexing` stayed set, so no index
    /// commit ran again, and the records the retry held were dropped.
    #[test]
    fn an_upload_dropped_during_its_index_retry_leaves_the_retry_running() {
        on_one_shard("ron-shards-retry-dropped", |shard| async move {
            let faults = Arc::clone(&shard.commits.faults);
            faults.index_stall_ms.store(300, Ordering::Relaxed);
            faults.index_failures.store(2, Ordering::Relaxed);
            let answered = [1u8; 64];
            let first = staged(&shard, &answered, Retention::Kept).await;
            assert_eq!(shard.commit(first).await.unwrap(), CommitOutcome::Created);
            wait_until(|| shard.commits.index_failed() && !shard.commits.indexing_now()).await;
            let second = staged(&shard, &[2u8; 64], Retention::Kept).await;
            let uploader = Rc::clone(&shard);
            let dropped = glommio::spawn_local(async move { uploader.commit(second).await });
            wait_until(|| shard.commits.indexing_now()).await;
            drop(dropped);
            wait_until(|| !shard.commits.indexing_now()).await;
            let third = staged(&shard, &[3u8; 64], Retention::Kept).await;
            assert_eq!(shard.commit(third).await.unwrap(), CommitOutcome::Created);
            wait_until(|| !shard.commits.index_failed()).await;
            let addr = ChunkTree::of(&answered).root();
            let store = shard.local_store(&addr).unwrap().clone();
            wait_until(|| store.contains(&addr).unwrap()).await;
        });
    }

    /// An upload of an object the evicter has claimed waits for the eviction and then
    /// stores it anew. Before, it found the object still indexed, was answered "already
    /// stored", and the eviction then unlinked its files: an acknowledged write lost.
    #[test]
    fn an_upload_of_an_object_being_evicted_waits_and_stores_it_anew() {
        on_one_shard("ron-shards-evict-race", |shard| async move {
            // An evictable copy in a file of its own (larger than a packed object).
            let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            let addr = ChunkTree::of(&data).root();
            let copy = staged(&shard, &data, Retention::Evictable).await;
            assert_eq!(shard.commit(copy).await.unwrap(), CommitOutcome::Created);
            let store = shard.local_store(&addr).unwrap().clone();
            assert_eq!(shard.commits.claim_for_eviction(&[addr]), [addr]);

            let upload = staged(&shard, &data, Retention::Kept).await;
            let answered = Rc::new(Cell::new(false));
            let (uploader, told) = (Rc::clone(&shard), Rc::clone(&answered));
            let put = glommio::spawn_local(async move {
                let outcome = uploader.commit(upload).await;
                told.set(true);
                outcome
            });
            glommio::timer::sleep(Duration::from_millis(100)).await;
            assert!(
                !answered.get(),
                "answered while its object was being evicted"
            );

            let (evicting, to_evict) = (store.clone(), vec![addr]);
            let evicted = glommio::executor()
                .spawn_blocking(move || evicting.evict_blocking(&to_evict))
                .await
                .unwrap();
            assert_eq!(evicted.len(), 1);
            shard.forget_everywhere(vec![addr]).await;
            let (unlinking, to_unlink) = (store.clone(), vec![addr]);
            glommio::executor()
                .spawn_blocking(move || unlinking.unlink_evicted_blocking(&to_unlink))
                .await
                .unwrap();
            shard.commits.release_evicted(&[addr]);

            assert_eq!(put.await.unwrap(), CommitOutcome::Created);
            let meta = shard.meta(&addr).await.expect("stored anew");
            assert_eq!(meta.len(), data.len() as u64);
            assert!(!store.is_evictable(&addr).unwrap(), "kept");
        });
    }

    /// A repair queued for a copy that was then evicted and stored again (another
    /// needle) finds it is not the same copy, and writes nothing into the new one. Before,
    /// the repair task asked only whether a record existed, and wrote the old copy's
    /// blocks at the old copy's places — into whatever the segment holds there now.
    #[test]
    fn a_repair_queued_for_an_evicted_copy_does_not_touch_the_copy_stored_again() {
        on_one_shard("ron-shards-same", |shard| async move {
            let data: Vec<u8> = (0..2_000u32).map(|i| (i % 253) as u8).collect();
            let addr = ChunkTree::of(&data).root();
            let first = staged(&shard, &data, Retention::Evictable).await;
            assert_eq!(shard.commit(first).await.unwrap(), CommitOutcome::Created);
            let queued = shard.meta(&addr).await.unwrap();
            assert!(queued.is_packed());
            assert!(shard.same_copy_stored(&queued).await);

            // Removable once its record is indexed (a commit under way is busy).
            let mut removed = false;
            for _ in 0..200 {
                removed = shard.remove_local(&addr).await.unwrap();
                if removed {
                    break;
                }
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
            assert!(removed);
            assert!(!shard.same_copy_stored(&queued).await, "evicted");
            let again = staged(&shard, &data, Retention::Kept).await;
            assert_eq!(shard.commit(again).await.unwrap(), CommitOutcome::Created);
            let now = shard.meta(&addr).await.unwrap();
            assert_ne!(now.location, queued.location, "another needle");
            assert!(
                !shard.same_copy_stored(&queued).await,
                "stored again elsewhere: not the copy the repair was queued for"
            );
            assert!(shard.same_copy_stored(&now).await);
        });
    }

    /// A removal refused because a background task holds the object leaves it kept.
    /// Before, it was made evictable first and left so: the operator was told "busy",
    /// and the sweep's walk of kept copies no longer saw it.
    #[test]
    fn a_removal_refused_as_busy_leaves_the_copy_kept() {
        on_one_shard("ron-shards-busyrm", |shard| async move {
            let data: Vec<u8> = (0..300_000u32).map(|i| (i % 247) as u8).collect();
            let addr = ChunkTree::of(&data).root();
            let copy = staged(&shard, &data, Retention::Kept).await;
            assert_eq!(shard.commit(copy).await.unwrap(), CommitOutcome::Created);
            let store = shard.local_store(&addr).unwrap().clone();
            let scrub = shard.claims.try_claim(addr).expect("nobody holds it");
            assert!(!shard.remove_local(&addr).await.unwrap(), "busy");
            assert!(!store.is_evictable(&addr).unwrap(), "still kept");
            drop(scrub);
            assert!(shard.remove_local(&addr).await.unwrap());
        });
    }

    /// After `--ec` is lowered, a packed object written since has the lanes of the run
    /// that wrote it, and checks healthy; one written before is still checked in all of
    /// its lanes. Before, every lane dir on disk was checked: the new objects came out
    /// bad in the lanes they were never written to, and were "repaired" into them.
    #[test]
    fn a_lowered_code_leaves_new_packed_objects_healthy() {
        let dir =
            std::env::temp_dir().join(format!("ron-shards-lanes-down-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let small = |seed: u8| -> Vec<u8> { (0..3_000u32).map(|i| (i as u8) ^ seed).collect() };
        let (before, after) = (small(1), small(2));
        // Each restart runs on a copy of the dir the last one left: LMDB refuses a second
        // open of an environment this process may still hold.
        let run = |step: u8, ec, data: Vec<u8>, checked: Vec<Vec<u8>>| {
            let data_dir = dir.join(format!("run{step}"));
            if step > 0 {
                copy_dir(&dir.join(format!("run{}", step - 1)), &data_dir);
            }
            LocalExecutorBuilder::new(Pinning::Unbound)
                .blocking_thread_pool_placement(PoolPlacement::Unbound(1))
                .spawn(move || async move {
                    let shard = start_shard_with(&data_dir, ec).await;
                    let copy = staged(&shard, &data, Retention::Kept).await;
                    assert_eq!(shard.commit(copy).await.unwrap(), CommitOutcome::Created);
                    let mut lanes = Vec::new();
                    for data in checked {
                        let addr = ChunkTree::of(&data).root();
                        let check = shard.check_object(&addr).await.unwrap();
                        assert_eq!(check.lost_blocks, 0, "{check:?}");
                        lanes.push((check.blocks_checked, check.bad_blocks));
                    }
                    lanes
                })
                .unwrap()
                .join()
                .unwrap()
        };
        let three_lanes = crate::ec::EcParams::new(4, 2).unwrap();
        assert_eq!(
            run(0, three_lanes, before.clone(), vec![before.clone()]),
            [(3, 0)]
        );
        let off = crate::ec::EcParams::OFF;
        assert_eq!(
            run(1, off, after.clone(), vec![before.clone(), after.clone()]),
            [(3, 0), (1, 0)],
            "the one written since has one lane, whole"
        );
        // Raised again: the object written with one lane is checked in three, the two it
        // lacks filled; checked again, whole.
        let third = small(3);
        let checked = run(
            2,
            three_lanes,
            third.clone(),
            vec![after.clone(), after, third],
        );
        assert_eq!(checked, [(3, 2), (3, 0), (3, 0)]);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Files of this process open on a deleted file whose name holds `name`.
    fn open_deleted(name: &str) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .map(|target| target.to_string_lossy().into_owned())
            .filter(|target| target.contains(name) && target.ends_with(" (deleted)"))
            .count()
    }

    /// An evicted copy's files are closed once unlinked: the shard's open files do not
    /// keep their disk space. Before, only an operator's removal closed them; an
    /// eviction left them open until pushed out of the open-file cache (1,024 per shard),
    /// holding the space of every recently read evicted copy.
    #[test]
    fn an_evicted_copy_read_before_leaves_no_file_open() {
        on_one_shard("ron-shards-evfd", |shard| async move {
            let data: Vec<u8> = (0..300_000u32).map(|i| (i % 249) as u8).collect();
            let addr = ChunkTree::of(&data).root();
            let copy = staged(&shard, &data, Retention::Evictable).await;
            assert_eq!(shard.commit(copy).await.unwrap(), CommitOutcome::Created);
            let meta = shard.meta(&addr).await.unwrap();
            shard.group_from_disk(&meta, GroupIndex(0)).await.unwrap();
            let hex = addr.to_string()[3..].to_string();
            let store = shard.local_store(&addr).unwrap().clone();
            let evicter = super::super::services::evicter(&shard, StopSignal::default());
            let mut evicted = false;
            for _ in 0..200 {
                let claim = shard.claims.claim(addr).await;
                evicted = evicter.discard(&store, claim).await.unwrap();
                if evicted {
                    break;
                }
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
            assert!(evicted);
            // Closes are submitted with the next I/O cycle.
            glommio::timer::sleep(Duration::from_millis(50)).await;
            assert_eq!(open_deleted(&hex), 0, "an evicted file is still open");
        });
    }

    /// Index commits run one at a time, an upload's retry after a failure included.
    /// Before, the commit loop started one beside the retry: the retry of a packed
    /// object's record (answered, its needle durable) failed while the loop's commit of
    /// later records succeeded with their segment checkpoint, and a start replays only
    /// the needles past the checkpoint — after a crash the answered object was gone.
    #[test]
    fn an_index_commit_never_runs_beside_an_uploads_retry_and_no_answered_object_is_lost() {
        let dir = std::env::temp_dir().join(format!("ron-shards-retry-{}", std::process::id()));
        let crashed = dir.with_extension("crashed");
        for d in [&dir, &crashed] {
            let _ = std::fs::remove_dir_all(d);
        }
        let object = |seed: u8, len: usize| -> Vec<u8> {
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                .collect()
        };
        let first = object(1, 64);
        let (data_dir, copy) = (dir.clone(), crashed.clone());
        let run = move |blocking_threads| {
            LocalExecutorBuilder::new(Pinning::Unbound)
                .blocking_thread_pool_placement(PoolPlacement::Unbound(blocking_threads))
        };
        let answered_first = first.clone();
        run(2)
            .spawn(move || async move {
                let shard = start_shard(&data_dir).await;
                let faults = Arc::clone(&shard.commits.faults);
                faults.index_stall_ms.store(400, Ordering::Relaxed);
                faults.index_failures.store(2, Ordering::Relaxed);
                let mut staged_all = Vec::new();
                for (seed, len) in [(2, 64), (3, 300_000), (4, 64)] {
                    staged_all.push(staged(&shard, &object(seed, len), Retention::Kept).await);
                }
                let [packed, own_file, retrying] =
                    <[StagedObject; 3]>::try_from(staged_all).unwrap_or_else(|_| unreachable!());
                // A packed object: answered once its needle is written; the index commit
                // of its record then starts (and will fail).
                let first = staged(&shard, &answered_first, Retention::Kept).await;
                assert_eq!(shard.commit(first).await.unwrap(), CommitOutcome::Created);
                wait_until(|| shard.commits.indexing_now()).await;
                // Two more uploads pass the health check while it runs; their batch is
                // written after it failed and while an upload retries it.
                faults.write_stall_ms.store(600, Ordering::Relaxed);
                let later: Vec<_> = [packed, own_file]
                    .into_iter()
                    .map(|staged| {
                        let uploader = Rc::clone(&shard);
                        glommio::spawn_local(async move { uploader.commit(staged).await })
                    })
                    .collect();
                wait_until(|| shard.commits.index_failed()).await;
                let refused = shard.commit(retrying).await.expect_err("the retry failed");
                assert!(refused.to_string().contains("injected"), "{refused}");
                for upload in later {
                    assert_eq!(upload.await.unwrap(), CommitOutcome::Created);
                }
                assert_eq!(
                    faults.index_commits_at_once_max.load(Ordering::Relaxed),
                    1,
                    "an index commit ran beside another"
                );
                copy_dir(&data_dir, &copy);
            })
            .unwrap()
            .join()
            .unwrap();
        let addr = ChunkTree::of(&first).root();
        let copy = crashed.clone();
        run(1)
            .spawn(move || async move {
                let shard = start_shard(&copy).await;
                let meta = shard.meta(&addr).await.expect("answered, so stored");
                assert_eq!(meta.len(), 64);
            })
            .unwrap()
            .join()
            .unwrap();
        for d in [dir, crashed] {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    /// A packed object answered but not yet indexed whose needle is damaged in lane 0
    /// is read from another lane, as an indexed one is. Before, the read took the damage
    /// for an eviction (the index did not hold it yet) and answered "no such object".
    #[test]
    fn a_damaged_needle_not_yet_indexed_is_read_from_another_lane() {
        let dir = std::env::temp_dir().join(format!("ron-shards-lanes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let data: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        let (data_dir, written) = (dir.clone(), data.clone());
        LocalExecutorBuilder::new(Pinning::Unbound)
            .blocking_thread_pool_placement(PoolPlacement::Unbound(2))
            .spawn(move || async move {
                let dirs = DataDirs::one(&data_dir);
                let table = layout::open_data_dirs(&dirs, 1, 0).unwrap().table;
                layout::clean_tmp(&data_dir).unwrap();
                let metrics = Arc::new(StorageCounters::default());
                let routing = Routing::new(table, 1);
                let config = config(&data_dir);
                let shard =
                    Shard::start(ShardIndex(0), routing, config, None, Arc::clone(&metrics))
                        .await
                        .unwrap();
                // Its index commit waits: the object stays in the unindexed map.
                shard
                    .commits
                    .faults
                    .index_stall_ms
                    .store(10_000, Ordering::Relaxed);
                let staged = staged(&shard, &written, Retention::Kept).await;
                assert_eq!(shard.commit(staged).await.unwrap(), CommitOutcome::Created);
                assert_eq!(flip_a_byte_in_lane_zero(&data_dir, &written), 1);
                let addr = ChunkTree::of(&written).root();
                let meta = shard.meta(&addr).await.unwrap();
                assert!(meta.is_packed());
                assert!(shard.commits.indexing_now(), "not indexed yet");
                let group = shard.group_from_disk(&meta, GroupIndex(0)).await;
                let group = group.expect("read from the other lane");
                assert!(group.iter().copied().eq(written.iter().copied()));
                assert_eq!(metrics.ec_degraded_reads.load(Ordering::Relaxed), 1);
            })
            .unwrap()
            .join()
            .unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Flips one byte of `body` in each lane-0 segment (`segments/`) under `dir` that
    /// holds it; returns how many.
    fn flip_a_byte_in_lane_zero(dir: &Path, body: &[u8]) -> usize {
        let mut flipped = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                flipped += flip_a_byte_in_lane_zero(&path, body);
                continue;
            }
            if path.parent().and_then(Path::file_name) != Some("segments".as_ref()) {
                continue;
            }
            let mut bytes = std::fs::read(&path).unwrap();
            if let Some(at) = bytes.windows(body.len()).position(|w| w == body) {
                bytes[at + 7] ^= 0x01;
                std::fs::write(&path, bytes).unwrap();
                flipped += 1;
            }
        }
        flipped
    }

    /// `ron repair`'s check of an object waits out an eviction (or a scrub) of it, as the
    /// scrubber and the repair task do: a rebuild written back while an eviction unlinks
    /// the files made them again after their record was gone.
    #[test]
    fn a_check_of_an_object_waits_for_its_eviction_to_end() {
        let dir = std::env::temp_dir().join(format!("ron-shards-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let data_dir = dir.clone();
        LocalExecutorBuilder::new(Pinning::Unbound)
            .spawn(move || async move {
                let shard = start_shard(&data_dir).await;
                let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
                let upload = staged(&shard, &data, Retention::Kept).await;
                assert_eq!(shard.commit(upload).await.unwrap(), CommitOutcome::Created);
                let addr = ChunkTree::of(&data).root();
                let claim = shard.claims.try_claim(addr).expect("nobody holds it");
                let (checker, done) = (Rc::clone(&shard), Rc::new(Cell::new(false)));
                let told = Rc::clone(&done);
                let check = glommio::spawn_local(async move {
                    let checked = checker.check_object(&addr).await;
                    told.set(true);
                    checked
                });
                glommio::timer::sleep(Duration::from_millis(100)).await;
                assert!(!done.get(), "checked while the object was claimed");
                drop(claim);
                let checked = check.await.unwrap();
                assert_eq!(checked.unrepairable_blocks(), 0);
            })
            .unwrap()
            .join()
            .unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A copy whose bad blocks rebuild from parity but cannot be written back (a full
    /// or read-only disk) is whole — every byte reads back verified — and said so:
    /// before, it counted as damaged past its parity, and a replication pull discarded
    /// it before a replacement was secured. Data blocks past what the parity covers are
    /// lost, and said so.
    #[test]
    fn bad_blocks_that_rebuild_but_are_not_written_back_leave_the_copy_whole() {
        let dir = std::env::temp_dir().join(format!("ron-shards-unwritten-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let data_dir = dir.clone();
        LocalExecutorBuilder::new(Pinning::Unbound)
            .spawn(move || async move {
                let shard = start_shard(&data_dir).await;
                // Five groups under the 4+1 code of one dir: stripe 0 holds groups 0-3.
                let data: Vec<u8> = (0..300_000u32).map(|i| (i % 249) as u8).collect();
                let upload = staged(&shard, &data, Retention::Kept).await;
                assert_eq!(shard.commit(upload).await.unwrap(), CommitOutcome::Created);
                let addr = ChunkTree::of(&data).root();
                let hex = String::from_utf8(addr.hex().to_vec()).unwrap();
                let file = data_dir.join("stores/0/objects").join(&hex[..2]).join(&hex);
                let flip = |at: usize| {
                    let mut bytes = std::fs::read(&file).unwrap();
                    bytes[at] ^= 0x40;
                    std::fs::write(&file, bytes).unwrap();
                    shard.files.forget(&addr, 1);
                };
                // A parity checksum the index holds wrong (as if its record rotted): every
                // data block checks, so nothing is lost, and the parity is not rewritten.
                let store = shard.local_store(&addr).unwrap().clone();
                let mut meta = store.get(&addr).unwrap().unwrap();
                meta.parity.as_mut().unwrap().checksums[0][0] ^= 1;
                let checked =
                    crate::scrub::check_object(&shard.files, &shard.codes, &store, &meta, None)
                        .await;
                assert_eq!(
                    (
                        checked.bad_blocks,
                        checked.repaired_blocks,
                        checked.lost_blocks
                    ),
                    (1, 0, 0)
                );
                flip(1_000);
                repair::write_back_faults::fail_under(&data_dir, true);
                let checked = shard.check_object(&addr).await.unwrap();
                assert_eq!(
                    (
                        checked.bad_blocks,
                        checked.repaired_blocks,
                        checked.lost_blocks
                    ),
                    (1, 0, 0)
                );
                assert!(checked.is_whole() && checked.unrepairable_blocks() == 1);
                repair::write_back_faults::fail_under(&data_dir, false);
                let checked = shard.check_object(&addr).await.unwrap();
                assert_eq!((checked.bad_blocks, checked.repaired_blocks), (1, 1));
                let checked = shard.check_object(&addr).await.unwrap();
                assert_eq!(checked.bad_blocks, 0, "written back");
                // Two data blocks of one stripe: past its one parity block.
                flip(1_000);
                flip(70_000);
                let checked = shard.check_object(&addr).await.unwrap();
                assert_eq!((checked.bad_blocks, checked.lost_blocks), (2, 2));
                assert!(!checked.is_whole());
            })
            .unwrap()
            .join()
            .unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    async fn wait_until(done: impl Fn() -> bool) {
        for _ in 0..1_000 {
            if done() {
                return;
            }
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
        panic!("gave up waiting");
    }
}
