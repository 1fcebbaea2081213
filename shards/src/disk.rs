//! The disk end of the read path: this shard's open object files and segments, and
//! group reads from them, one io_uring DMA read per run of 64 KiB groups (aligned for
//! an object's own file; around the needle for a packed object).
//!
//! Bytes come off disk unverified ([`DiskGroups`]); the shard checks each group once,
//! with [`verify_group`], where it keeps it (in an arena of the verified cache, or in
//! ordinary memory), so the bytes checked are the bytes sent.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{DmaFile, ReadResult};
use ron_codec::tree::{group_len, GroupIndex, GROUP_LEN_BYTES};
use ron_codec::Address;

use crate::arena::GroupBytes;
use crate::cache::ClockCache;
use crate::ec::{parity_checksum, StripeIndex, BLOCK_BYTES};
use crate::error::ShardError;
use crate::metrics::ShardMetrics;
use crate::record::{Location, ObjectMeta};
use crate::segment::SegmentId;
use crate::store::{Store, StoreId};
use crate::upload;

/// A file the read path opens: an object's own file or a segment of packed objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum FileKey {
    Object(Address),
    /// An object's parity file (`upload::parity_path`).
    Parity(Address),
    Segment(StoreId, SegmentId),
}

/// This shard's object files and segments: an open-file cache (bounded by count) and
/// group reads.
pub(crate) struct ObjectFiles {
    files: RefCell<ClockCache<FileKey, Rc<DmaFile>>>,
    /// Reads submitted and not yet completed (the scrubber yields to the read path's).
    reads_in_flight: Rc<Cell<u32>>,
}

/// One read in `reads_in_flight` for as long as it lives.
struct ReadInFlight<'a>(&'a Cell<u32>);

impl ReadInFlight<'_> {
    fn start(count: &Cell<u32>) -> ReadInFlight<'_> {
        count.set(count.get() + 1);
        ReadInFlight(count)
    }
}

impl Drop for ReadInFlight<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
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
    pub(crate) fn new(open_files_max: usize) -> ObjectFiles {
        ObjectFiles {
            files: RefCell::new(ClockCache::new(open_files_max)),
            reads_in_flight: Rc::new(Cell::new(0)),
        }
    }

    /// The count of this instance's reads in flight, to watch.
    pub(crate) fn reads_in_flight(&self) -> Rc<Cell<u32>> {
        Rc::clone(&self.reads_in_flight)
    }

    /// Reads `count` groups of an object of `store` from `first` on, with one aligned
    /// DMA read. The bytes are not verified here: the shard checks each group once,
    /// where it keeps it (`Shard::group`).
    pub(crate) async fn read_groups(
        &self,
        store: &Store,
        meta: &ObjectMeta,
        first: GroupIndex,
        count: u64,
    ) -> Result<DiskGroups, ShardError> {
        let addr = meta.addr();
        let last = GroupIndex(first.0 + count.max(1) - 1);
        let expected = group_len(meta.len(), last)
            .map(|len| last.start_offset() - first.start_offset() + len)
            .ok_or(ShardError::NotFound { addr })?;
        if expected == 0 {
            return Ok(DiskGroups { first, read: None });
        }
        let (key, path) = match meta.location {
            Location::OwnFile => (FileKey::Object(addr), store.object_path(&addr)),
            Location::Packed(at) => (
                FileKey::Segment(store.id(), at.segment),
                store.segment_path(at.segment),
            ),
        };
        let file = self.open(key, &path).await?;
        let _in_flight = ReadInFlight::start(&self.reads_in_flight);
        let read = match meta.location {
            Location::OwnFile => {
                let span_bytes = (last.0 + 1 - first.0) * GROUP_LEN_BYTES;
                file.read_at_aligned(first.start_offset(), span_bytes as usize)
                    .await
            }
            // A needle lies anywhere in its segment: glommio aligns the read around it.
            Location::Packed(at) => {
                file.read_at(at.body.0 + first.start_offset(), expected as usize)
                    .await
            }
        }
        .map_err(|e| ShardError::io("read", &path)(e.into()))?;
        if (read.len() as u64) < expected {
            return Err(ShardError::ShortRead {
                addr,
                group: first.0,
                got: read.len(),
                expected,
                path,
            });
        }
        Ok(DiskGroups {
            first,
            read: Some(read),
        })
    }

    /// Reads parity block `parity` of `stripe` of an object stored with parity, and
    /// checks it against its checksum in the record: the block, or why it is not there.
    pub(crate) async fn read_parity_block(
        &self,
        store: &Store,
        meta: &ObjectMeta,
        stripe: StripeIndex,
        parity: u8,
    ) -> Result<Vec<u8>, ShardError> {
        let addr = meta.addr();
        let code = meta.parity.as_ref().ok_or(ShardError::NotFound { addr })?;
        let path = upload::parity_path(&store.object_path(&addr));
        let file = self.open(FileKey::Parity(addr), &path).await?;
        let at = code.geometry(meta.len()).parity_block_at(stripe, parity);
        let _in_flight = ReadInFlight::start(&self.reads_in_flight);
        let read = file
            .read_at_aligned(at.offset.0, BLOCK_BYTES as usize)
            .await
            .map_err(|e| ShardError::io("read", &path)(e.into()))?;
        let good = read.len() == BLOCK_BYTES as usize
            && code.checksum(stripe, parity) == Some(&parity_checksum(&read));
        match good {
            true => Ok(read.to_vec()),
            false => Err(ShardError::ParityBlockBad {
                addr,
                stripe: stripe.0,
                parity,
                path,
            }),
        }
    }

    /// Forgets the open files of `addr` (after repair rewrote or recreated one).
    pub(crate) fn forget(&self, addr: &Address) {
        let mut files = self.files.borrow_mut();
        files.remove(&FileKey::Object(*addr));
        files.remove(&FileKey::Parity(*addr));
    }

    async fn open(&self, key: FileKey, path: &Path) -> Result<Rc<DmaFile>, ShardError> {
        if let Some(file) = self.files.borrow_mut().get(&key) {
            return Ok(file);
        }
        let file = DmaFile::open(path)
            .await
            .map_err(|e| ShardError::io("open", path)(e.into()))?;
        let file = Rc::new(file);
        self.files.borrow_mut().insert(key, Rc::clone(&file), 1);
        Ok(file)
    }
}

/// Groups as one DMA read brought them off disk, not yet verified.
pub(crate) struct DiskGroups {
    first: GroupIndex,
    read: Option<ReadResult>,
}

impl DiskGroups {
    /// The bytes of group `group` (one the read covers), `expected` long, where they
    /// lie in the read's DMA buffer.
    pub(crate) fn group(&self, group: GroupIndex, expected: u64) -> GroupBytes {
        let Some(read) = &self.read else {
            return GroupBytes::in_memory(Bytes::new());
        };
        let from = ((group.0 - self.first.0) * GROUP_LEN_BYTES) as usize;
        let slice = ReadResult::slice(read, from, expected as usize)
            .expect("the read covers the group (checked against its length)");
        GroupBytes::in_disk_read(slice)
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
