//! The write path's entry points: an upload begins on the shard its connection is on
//! (`upload.rs` hashes and stages it) and is committed on the owner of its address
//! (`commit.rs`'s group commit), forwarded over the mesh when that is another shard.

use std::rc::Rc;

use ron_codec::Address;
use ron_link::counters::StorageCounters;

use crate::commit::CommitOutcome;
use crate::error::ShardError;
use crate::lifecycle::StopSignal;
use crate::mesh::{MeshOp, MeshReply};
use crate::record::Retention;
use crate::shard::state::{mesh_confused, Shard};
use crate::upload::{self, Placement, StagedObject, Upload};

impl Shard {
    /// Starts an upload of `expected_len` bytes if announced; a long one gets a temp
    /// file in the data dir's temp area, a small one is kept in memory to be packed.
    pub fn begin_upload(&self, expected_len: Option<u64>) -> Upload {
        let seq = self.upload_seq.get();
        self.upload_seq.set(seq + 1);
        let name = format!("{}{seq}", self.upload_prefix());
        let placement = Placement {
            dirs: self.config.data_dirs.clone(),
            // Spreads column 0 of successive uploads over the dirs.
            rot: seq as u8,
        };
        Upload::new(placement, name, expected_len, self.config.ec)
    }

    /// Makes a staged object visible on its owner shard and returns once it is durable.
    pub async fn commit(&self, staged: StagedObject) -> Result<CommitOutcome, ShardError> {
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
        let store = self.local_store(addr)?.clone();
        self.commits.demote(&store, addr).await?;
        let evicter = super::services::evicter(self, StopSignal::default());
        let removed = evicter.discard(&store, *addr).await?;
        // The open files of the removed copy: a copy stored later takes their names.
        self.files.forget(addr, store.dir_count());
        Ok(removed)
    }

    pub(super) async fn commit_local(
        &self,
        staged: StagedObject,
    ) -> Result<CommitOutcome, ShardError> {
        let store = self.local_store(&staged.meta.addr())?;
        // An upload of a stored object may have to make it kept: the commit queue looks.
        let evictable = staged.retention == Retention::Evictable;
        if evictable && self.cached_meta(&staged.meta.addr()).is_some() {
            upload::discard(staged).await;
            return Ok(CommitOutcome::AlreadyStored);
        }
        self.commits.commit(store, staged).await
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
