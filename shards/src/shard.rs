//! One shard: the state a pinned executor owns, and the read, upload and commit paths.
//!
//! Everything here is `!Send` and lives on one executor thread. The only things shared
//! with other threads are the metrics (written only here) and the mesh channels.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use futures_lite::AsyncWriteExt;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::io::{DmaFile, OpenOptions, StreamWriter, StreamWriterBuilder};
use ron_codec::tree::{group_len, GroupIndex, GROUP_LEN_BYTES};
use ron_codec::{Address, TreeHasher};

use crate::cache::{ClockCache, GroupCache, GroupKey};
use crate::error::ShardError;
use crate::layout::{self, Routing, ShardIndex};
use crate::mesh::{Mesh, MeshOp, MeshReply};
use crate::metrics::ShardMetrics;
use crate::record::ObjectMeta;
use crate::store::{CommitRecord, Store, StoreId, StoreStats};

/// Start-up sizing of one shard; every cache and table has a limit.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    pub data_dir: PathBuf,
    /// Budget of the verified-group cache, bytes.
    pub cache_bytes_max: usize,
    /// Budget of the metadata cache, bytes (chunk trees included: 32 B per 64 KiB).
    pub meta_bytes_max: usize,
    /// Object files kept open.
    pub open_files_max: usize,
    /// LMDB map size per store.
    pub index_bytes_max: usize,
    /// Most records in one group commit.
    pub commit_batch_max: usize,
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    Created,
    AlreadyStored,
}

/// A finished upload, durable-ready in the temp dir, not yet visible.
#[derive(Debug, Clone)]
pub struct StagedObject {
    pub tmp_path: PathBuf,
    pub meta: ObjectMeta,
}

struct PendingCommit {
    store: StoreId,
    record: CommitRecord,
    object_path: PathBuf,
    done: LocalSender<Result<(), String>>,
}

/// The state of one shard.
pub struct Shard {
    index: ShardIndex,
    routing: Routing,
    config: ShardConfig,
    stores: HashMap<StoreId, Store>,
    groups: RefCell<GroupCache>,
    metas: RefCell<ClockCache<Address, Rc<ObjectMeta>>>,
    files: RefCell<ClockCache<Address, Rc<DmaFile>>>,
    pending: RefCell<Vec<PendingCommit>>,
    commit_wakeup: LocalSender<()>,
    upload_seq: Cell<u64>,
    mesh: Option<Mesh>,
    metrics: Arc<ShardMetrics>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("index", &self.index)
            .field("stores", &self.stores.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Shard {
    /// Opens the stores this shard owns and starts its background tasks (group commit,
    /// mesh service). Blocking opens are start-up work, before the shard accepts.
    pub async fn start(
        index: ShardIndex,
        routing: Routing,
        config: ShardConfig,
        mesh: Option<Mesh>,
        metrics: Arc<ShardMetrics>,
    ) -> Result<Rc<Shard>, ShardError> {
        let mut stores = HashMap::new();
        for id in routing.stores_of(index) {
            let dir = layout::store_dir(&config.data_dir, id);
            let store = Store::open(&dir, id, config.index_bytes_max)?;
            let stats = store.stats()?;
            ShardMetrics::add(&metrics.objects_stored, stats.objects);
            ShardMetrics::add(&metrics.bytes_stored, stats.bytes);
            stores.insert(id, store);
        }
        let (commit_wakeup, commit_rx) = local_channel::new_bounded(1);
        let shard = Rc::new(Shard {
            index,
            routing,
            groups: RefCell::new(GroupCache::new(config.cache_bytes_max)),
            metas: RefCell::new(ClockCache::new(config.meta_bytes_max)),
            files: RefCell::new(ClockCache::new(config.open_files_max)),
            config,
            stores,
            pending: RefCell::new(Vec::new()),
            commit_wakeup,
            upload_seq: Cell::new(0),
            mesh,
            metrics,
        });
        glommio::spawn_local(commit_loop(Rc::clone(&shard), commit_rx)).detach();
        if let Some(mesh) = &shard.mesh {
            mesh.serve(Rc::clone(&shard));
        }
        Ok(shard)
    }

    pub fn index(&self) -> ShardIndex {
        self.index
    }

    pub fn routing(&self) -> &Routing {
        &self.routing
    }

    pub fn metrics(&self) -> &Arc<ShardMetrics> {
        &self.metrics
    }

    fn owner(&self, addr: &Address) -> Option<ShardIndex> {
        let owner = self.routing.owner(addr);
        (owner != self.index).then_some(owner)
    }

    pub(crate) fn mesh_ref(&self) -> Option<&Mesh> {
        self.mesh.as_ref()
    }

    fn mesh(&self) -> Result<&Mesh, ShardError> {
        self.mesh.as_ref().ok_or(ShardError::Mesh {
            shard: self.index.0,
            reason: "no mesh with one shard",
        })
    }

    /// The object's metadata (chunk tree verified against the address), from this
    /// shard's cache, its own store, or the owner shard. Objects are immutable, so any
    /// shard may cache any object's metadata.
    pub async fn meta(&self, addr: &Address) -> Result<Rc<ObjectMeta>, ShardError> {
        if let Some(meta) = self.metas.borrow_mut().get(addr) {
            return Ok(meta);
        }
        let meta = match self.owner(addr) {
            None => self.local_meta(addr)?,
            Some(owner) => match self.mesh()?.call(owner, MeshOp::Meta(*addr)).await? {
                MeshReply::Meta(meta) => meta,
                _ => return Err(self.mesh_confused(owner)),
            },
        };
        let meta = Rc::new(meta);
        let weight = meta.footprint_bytes();
        self.metas
            .borrow_mut()
            .insert(*addr, Rc::clone(&meta), weight);
        Ok(meta)
    }

    fn mesh_confused(&self, owner: ShardIndex) -> ShardError {
        ShardError::Mesh {
            shard: owner.0,
            reason: "answered with the wrong reply kind",
        }
    }

    pub(crate) fn local_meta(&self, addr: &Address) -> Result<ObjectMeta, ShardError> {
        let store = self.local_store(addr)?;
        store.get(addr)?.ok_or(ShardError::NotFound { addr: *addr })
    }

    fn local_store(&self, addr: &Address) -> Result<&Store, ShardError> {
        let id = self.routing.store_of(addr);
        self.stores.get(&id).ok_or(ShardError::Mesh {
            shard: self.index.0,
            reason: "asked for an object of a store it does not own",
        })
    }

    /// One whole verified group: from the cache, this shard's disk, or the owner.
    pub async fn group(&self, meta: &ObjectMeta, group: GroupIndex) -> Result<Bytes, ShardError> {
        let key = GroupKey {
            addr: meta.addr(),
            group,
        };
        if let Some(bytes) = self.groups.borrow_mut().get(&key) {
            ShardMetrics::add(&self.metrics.cache_hits, 1);
            return Ok(bytes);
        }
        ShardMetrics::add(&self.metrics.cache_misses, 1);
        let bytes = match self.owner(&key.addr) {
            None => self.read_group_from_disk(meta, group).await?,
            Some(owner) => {
                let op = MeshOp::Group {
                    addr: key.addr,
                    group,
                };
                match self.mesh()?.call(owner, op).await? {
                    MeshReply::Group(bytes) => bytes,
                    _ => return Err(self.mesh_confused(owner)),
                }
            }
        };
        // Trust boundary: whatever the source, check again before it is cached and sent.
        self.check_group(meta, group, &bytes)?;
        let mut groups = self.groups.borrow_mut();
        groups.insert(key, bytes.clone(), bytes.len());
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        self.metrics
            .cache_bytes
            .store(groups.weight() as u64, relaxed);
        self.metrics
            .cache_entries
            .store(groups.len() as u64, relaxed);
        drop(groups);
        Ok(bytes)
    }

    fn check_group(
        &self,
        meta: &ObjectMeta,
        group: GroupIndex,
        bytes: &[u8],
    ) -> Result<(), ShardError> {
        meta.tree.verify_group(group, bytes).map_err(|_| {
            ShardMetrics::add(&self.metrics.verify_failures, 1);
            ShardError::StoredBytesCorrupt {
                addr: meta.addr(),
                group: group.0,
            }
        })
    }

    async fn object_file(&self, addr: &Address) -> Result<Rc<DmaFile>, ShardError> {
        if let Some(file) = self.files.borrow_mut().get(addr) {
            return Ok(file);
        }
        let path = self.local_store(addr)?.object_path(addr);
        let file = DmaFile::open(&path)
            .await
            .map_err(|e| ShardError::io("open", &path)(e.into()))?;
        let file = Rc::new(file);
        self.files.borrow_mut().insert(*addr, Rc::clone(&file), 1);
        Ok(file)
    }

    /// Reads group `group` of a local object with one aligned DMA read and verifies it.
    pub(crate) async fn read_group_from_disk(
        &self,
        meta: &ObjectMeta,
        group: GroupIndex,
    ) -> Result<Bytes, ShardError> {
        let addr = meta.addr();
        let expected = group_len(meta.len(), group).ok_or(ShardError::NotFound { addr })?;
        if expected == 0 {
            self.check_group(meta, group, &[])?;
            return Ok(Bytes::new());
        }
        let file = self.object_file(&addr).await?;
        let read = file
            .read_at_aligned(group.start_offset(), GROUP_LEN_BYTES as usize)
            .await
            .map_err(|e| ShardError::io("read", file_path(&file))(e.into()))?;
        if (read.len() as u64) < expected {
            return Err(ShardError::ShortRead {
                addr,
                group: group.0,
                got: read.len(),
                expected,
                path: file_path(&file),
            });
        }
        let bytes = &read[..expected as usize];
        self.check_group(meta, group, bytes)?;
        Ok(Bytes::copy_from_slice(bytes))
    }

    /// Starts an upload in the data dir's temp area.
    pub async fn begin_upload(&self) -> Result<Upload, ShardError> {
        let seq = self.upload_seq.get();
        self.upload_seq.set(seq + 1);
        let path = layout::tmp_dir(&self.config.data_dir).join(format!(
            "upload-{}-{}-{seq}",
            self.index.0,
            std::process::id()
        ));
        // Buffered (page-cache) writes: the group commit fsyncs the file before the
        // index commit, and an upload of an object already stored never touches the disk.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .buffered_open(&path)
            .await
            .map_err(|e| ShardError::io("create", &path)(e.into()))?;
        let writer = StreamWriterBuilder::new(file)
            .with_buffer_size(GROUP_LEN_BYTES as usize)
            .build();
        Ok(Upload {
            path,
            writer,
            hasher: TreeHasher::new(),
        })
    }

    /// Makes a staged object visible on its owner shard and returns once it is durable.
    pub async fn commit(&self, staged: StagedObject) -> Result<CommitOutcome, ShardError> {
        match self.owner(&staged.meta.addr()) {
            None => self.commit_local(staged).await,
            Some(owner) => match self.mesh()?.call(owner, MeshOp::Commit(staged)).await? {
                MeshReply::Committed(outcome) => Ok(outcome),
                _ => Err(self.mesh_confused(owner)),
            },
        }
    }

    pub(crate) async fn commit_local(
        &self,
        staged: StagedObject,
    ) -> Result<CommitOutcome, ShardError> {
        let addr = staged.meta.addr();
        let store = self.local_store(&addr)?;
        if self.metas.borrow_mut().get(&addr).is_some() || store.contains(&addr)? {
            let _ = glommio::io::remove(&staged.tmp_path).await;
            return Ok(CommitOutcome::AlreadyStored);
        }
        let object_path = store.object_path(&addr);
        glommio::io::rename(&staged.tmp_path, &object_path)
            .await
            .map_err(|e| ShardError::io("rename", &object_path)(e.into()))?;
        let (done, result) = local_channel::new_bounded(1);
        self.pending.borrow_mut().push(PendingCommit {
            store: store.id(),
            record: CommitRecord {
                addr,
                record: staged.meta.encode(),
                object_len: staged.meta.len(),
            },
            object_path,
            done,
        });
        let _ = self.commit_wakeup.try_send(());
        let committed = result
            .recv()
            .await
            .unwrap_or(Err("commit task stopped".into()));
        committed.map_err(|reason| ShardError::Layout {
            path: self.config.data_dir.clone(),
            reason,
        })?;
        ShardMetrics::add(&self.metrics.objects_created, 1);
        Ok(CommitOutcome::Created)
    }
}

/// One store's share of a group commit.
struct StoreBatch {
    store: Store,
    records: Vec<CommitRecord>,
    paths: Vec<PathBuf>,
}

fn file_path(file: &DmaFile) -> PathBuf {
    file.path().map(|p| p.to_path_buf()).unwrap_or_default()
}

/// Group commit: waits for pending records, then on the blocking pool fsyncs their
/// object files and directories and commits each store's records in one LMDB
/// transaction; only then are the uploads acknowledged.
async fn commit_loop(shard: Rc<Shard>, wakeups: LocalReceiver<()>) {
    while wakeups.recv().await.is_some() {
        loop {
            let batch: Vec<PendingCommit> = {
                let mut pending = shard.pending.borrow_mut();
                let take = pending.len().min(shard.config.commit_batch_max);
                pending.drain(..take).collect()
            };
            if batch.is_empty() {
                break;
            }
            let mut per_store: HashMap<StoreId, StoreBatch> = HashMap::new();
            let mut waiters = Vec::with_capacity(batch.len());
            for p in batch {
                let entry = per_store.entry(p.store).or_insert_with(|| StoreBatch {
                    store: shard.stores[&p.store].clone(),
                    records: Vec::new(),
                    paths: Vec::new(),
                });
                entry.records.push(p.record);
                entry.paths.push(p.object_path);
                waiters.push(p.done);
            }
            let outcome = glommio::executor()
                .spawn_blocking(move || -> Result<StoreStats, String> {
                    let mut added = StoreStats::default();
                    for batch in per_store.into_values() {
                        make_durable(&batch.paths).map_err(|e| e.to_string())?;
                        let stats = batch
                            .store
                            .commit_blocking(&batch.records)
                            .map_err(|e| e.to_string())?;
                        added.objects += stats.objects;
                        added.bytes += stats.bytes;
                    }
                    Ok(added)
                })
                .await;
            if let Ok(added) = &outcome {
                ShardMetrics::add(&shard.metrics.objects_stored, added.objects);
                ShardMetrics::add(&shard.metrics.bytes_stored, added.bytes);
            }
            let result = outcome.map(|_| ());
            for waiter in waiters {
                let _ = waiter.try_send(result.clone());
            }
        }
    }
}

/// fsyncs each file and each distinct parent directory (so the renames survive a crash).
fn make_durable(paths: &[PathBuf]) -> Result<(), ShardError> {
    let mut dirs: Vec<&std::path::Path> = Vec::new();
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

/// An upload in progress: bytes are hashed (root + group CVs) as they are written to a
/// temp file through io_uring. Nothing is visible until [`Shard::commit`].
pub struct Upload {
    path: PathBuf,
    writer: StreamWriter,
    hasher: TreeHasher,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("path", &self.path)
            .field("len", &self.hasher.object_len())
            .finish()
    }
}

impl Upload {
    pub fn len(&self) -> u64 {
        self.hasher.object_len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<(), ShardError> {
        self.hasher.update(data);
        self.writer
            .write_all(data)
            .await
            .map_err(ShardError::io("write", &self.path))
    }

    /// Flushes and closes the temp file; returns it with its chunk tree.
    pub async fn finish(mut self, content_type: String) -> Result<StagedObject, ShardError> {
        self.writer
            .close()
            .await
            .map_err(ShardError::io("close", &self.path))?;
        Ok(StagedObject {
            tmp_path: self.path,
            meta: ObjectMeta {
                tree: self.hasher.finalize(),
                content_type,
            },
        })
    }

    /// Drops the upload and its temp file.
    pub async fn abort(mut self) {
        let _ = self.writer.close().await;
        let _ = glommio::io::remove(&self.path).await;
    }
}

/// Removes a staged object that will not be committed (digest mismatch, error).
pub async fn discard(staged: StagedObject) {
    let _ = glommio::io::remove(&staged.tmp_path).await;
}
