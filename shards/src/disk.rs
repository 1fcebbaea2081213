//! The disk end of the read path: this shard's open object files and verified group
//! reads from them, one aligned io_uring DMA read per 64 KiB group.
//!
//! A group is verified against the object's chunk tree as it comes off disk
//! ([`verify_group`]); the shard checks again whatever the source before it caches or
//! sends a group.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use glommio::io::DmaFile;
use ron_codec::tree::{group_len, GroupIndex, GROUP_LEN_BYTES};
use ron_codec::Address;

use crate::cache::ClockCache;
use crate::error::ShardError;
use crate::metrics::ShardMetrics;
use crate::record::ObjectMeta;
use crate::store::Store;

/// This shard's object files: an open-file cache (bounded by count) and group reads.
pub(crate) struct ObjectFiles {
    files: RefCell<ClockCache<Address, Rc<DmaFile>>>,
    metrics: Arc<ShardMetrics>,
}

impl std::fmt::Debug for ObjectFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectFiles")
            .field("open", &self.files.borrow().len())
            .finish_non_exhaustive()
    }
}

impl ObjectFiles {
    /// `open_files_max`: object files kept open, files.
    pub(crate) fn new(open_files_max: usize, metrics: Arc<ShardMetrics>) -> ObjectFiles {
        ObjectFiles {
            files: RefCell::new(ClockCache::new(open_files_max)),
            metrics,
        }
    }

    /// Reads group `group` of an object of `store` with one aligned DMA read and
    /// verifies it.
    pub(crate) async fn read_group(
        &self,
        store: &Store,
        meta: &ObjectMeta,
        group: GroupIndex,
    ) -> Result<Bytes, ShardError> {
        let addr = meta.addr();
        let expected = group_len(meta.len(), group).ok_or(ShardError::NotFound { addr })?;
        if expected == 0 {
            verify_group(meta, group, &[], &self.metrics)?;
            return Ok(Bytes::new());
        }
        let file = self.open(store, &addr).await?;
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
        verify_group(meta, group, bytes, &self.metrics)?;
        Ok(Bytes::copy_from_slice(bytes))
    }

    async fn open(&self, store: &Store, addr: &Address) -> Result<Rc<DmaFile>, ShardError> {
        if let Some(file) = self.files.borrow_mut().get(addr) {
            return Ok(file);
        }
        let path = store.object_path(addr);
        let file = DmaFile::open(&path)
            .await
            .map_err(|e| ShardError::io("open", &path)(e.into()))?;
        let file = Rc::new(file);
        self.files.borrow_mut().insert(*addr, Rc::clone(&file), 1);
        Ok(file)
    }
}

/// Checks `bytes` as group `group` of the object; a failure is counted and reported as
/// stored bytes that fail verification.
pub(crate) fn verify_group(
    meta: &ObjectMeta,
    group: GroupIndex,
    bytes: &[u8],
    metrics: &ShardMetrics,
) -> Result<(), ShardError> {
    meta.tree.verify_group(group, bytes).map_err(|_| {
        ShardMetrics::add(&metrics.verify_failures, 1);
        ShardError::StoredBytesCorrupt {
            addr: meta.addr(),
            group: group.0,
        }
    })
}

fn file_path(file: &DmaFile) -> PathBuf {
    file.path().map(|p| p.to_path_buf()).unwrap_or_default()
}
