//! The disk end of the read path: this shard's open object files and segments, and
//! group reads from them, one io_uring DMA read per run of 64 KiB groups (aligned for
//! an object's own file; around the needle for a packed object). An object spread over
//! several data dirs has a data file in each dir its columns map to: a run of groups
//! is one read per contiguous stretch of one of them, all in flight at once.
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
use ron_link::counters::StorageCounters;

use crate::arena::GroupBytes;
use crate::cache::ClockCache;
use crate::ec::parity_checksum;
use crate::error::ShardError;
use crate::ids::{DirIndex, LaneIndex, SegmentId, StoreId, StripeIndex};
use crate::limits::BLOCK_BYTES;
use crate::record::{Location, ObjectMeta, Parity};
use crate::store::Store;

/// A file the read path opens: an object's own file or a segment of packed objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum FileKey {
    /// An object's data file in one dir.
    Object(Address, DirIndex),
    /// An object's parity file in one dir (`layout::parity_path`).
    Parity(Address, DirIndex),
    /// A segment in one lane.
    Segment(StoreId, SegmentId, LaneIndex),
}

/// This shard's object files and segments: an open-file cache (bounded by count) and
/// group reads.
pub(crate) struct ObjectFiles {
    files: RefCell<ClockCache<FileKey, Rc<DmaFile>>>,
    /// Forgets so far: an open under way when one happens is used, not kept (it may be
    /// of a file about to be unlinked, whose name a later copy takes).
    forgets: Cell<u64>,
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
            forgets: Cell::new(0),
            reads_in_flight: Rc::new(Cell::new(0)),
        }
    }

    /// The count of this instance's reads in flight, to watch.
    pub(crate) fn reads_in_flight(&self) -> Rc<Cell<u32>> {
        Rc::clone(&self.reads_in_flight)
    }

    /// Reads `count` groups of an object of `store` from `first` on: one aligned DMA
    /// read per run of them that lies contiguous in one file (one read for an object in
    /// one dir; one per block when its columns are spread over dirs), all in flight at
    /// once. The bytes are not verified here: the shard checks each group once, where it
    /// keeps it (`Shard::group`).
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
            return Ok(DiskGroups::Empty);
        }
        if let Location::Packed(at) = meta.location {
            return self
                .read_needle_groups(store, meta, at, LaneIndex(0), first, expected)
                .await;
        }
        let parity = match &meta.parity {
            Some(parity) if parity.dirs > 1 => parity,
            // One dir: the data file is the groups in order.
            _ => {
                let run = FileRun {
                    dir: DirIndex(0),
                    offset: first.start_offset(),
                    first,
                    count: last.0 - first.0 + 1,
                };
                let read = self.read_run(store, meta, &run).await?;
                return Ok(DiskGroups::One { first, read });
            }
        };
        let runs = file_runs(meta, parity, first, last);
        if let [run] = runs.as_slice() {
            let read = self.read_run(store, meta, run).await?;
            return Ok(DiskGroups::One { first, read });
        }
        let _in_flight = ReadInFlight::start(&self.reads_in_flight);
        let mut reads = Vec::with_capacity(runs.len());
        for run in &runs {
            let file = self.open_data_file(store, &addr, run.dir).await?;
            let span_bytes = run.count * GROUP_LEN_BYTES;
            let at = run.offset;
            let read =
                glommio::spawn_local(
                    async move { file.read_at_aligned(at, span_bytes as usize).await },
                );
            reads.push(read);
        }
        let mut done = Vec::with_capacity(runs.len());
        for (run, read) in runs.into_iter().zip(reads) {
            let path = || store.object_path(&addr, run.dir);
            let read = read
                .await
                .map_err(|e| ShardError::io("read", path())(e.into()))?;
            check_read_len(meta, &run, &read, path)?;
            done.push((run.first, read));
        }
        Ok(DiskGroups::Many(done))
    }

    /// One run's read, awaited here (the common case: every group in one file).
    async fn read_run(
        &self,
        store: &Store,
        meta: &ObjectMeta,
        run: &FileRun,
    ) -> Result<ReadResult, ShardError> {
        let addr = meta.addr();
        let file = self.open_data_file(store, &addr, run.dir).await?;
        let path = || store.object_path(&addr, run.dir);
        let _in_flight = ReadInFlight::start(&self.reads_in_flight);
        let read = file
            .read_at_aligned(run.offset, (run.count * GROUP_LEN_BYTES) as usize)
            .await
            .map_err(|e| ShardError::io("read", path())(e.into()))?;
        check_read_len(meta, run, &read, path)?;
        Ok(read)
    }

    /// The body of packed object `meta` (not checked) as lane `lane` holds it.
    pub async fn read_needle_in_lane(
        &self,
        store: &Store,
        meta: &ObjectMeta,
        lane: LaneIndex,
    ) -> Result<DiskGroups, ShardError> {
        let Location::Packed(at) = meta.location else {
            return Err(ShardError::NotFound { addr: meta.addr() });
        };
        if meta.is_empty() {
            return Ok(DiskGroups::Empty);
        }
        self.read_needle_groups(store, meta, at, lane, GroupIndex(0), meta.len())
            .await
    }

    /// Groups of a packed object in lane `lane`: its needle lies anywhere in its
    /// segment, and glommio aligns the read around it.
    async fn read_needle_groups(
        &self,
        store: &Store,
        meta: &ObjectMeta,
        at: crate::segment::NeedleAt,
        lane: LaneIndex,
        first: GroupIndex,
        expected: u64,
    ) -> Result<DiskGroups, ShardError> {
        let path = store.segment_path(lane, at.segment);
        let file = self
            .open(FileKey::Segment(store.id(), at.segment, lane), &path)
            .await?;
        let _in_flight = ReadInFlight::start(&self.reads_in_flight);
        let read = file
            .read_at(at.body.0 + first.start_offset(), expected as usize)
            .await
            .map_err(|e| ShardError::io("read", &path)(e.into()))?;
        if (read.len() as u64) < expected {
            return Err(ShardError::ShortRead {
                addr: meta.addr(),
                group: first.0,
                got: read.len(),
                expected,
                path,
            });
        }
        Ok(DiskGroups::One { first, read })
    }

    async fn open_data_file(
        &self,
        store: &Store,
        addr: &Address,
        dir: DirIndex,
    ) -> Result<Rc<DmaFile>, ShardError> {
        let key = FileKey::Object(*addr, dir);
        if let Some(file) = self.files.borrow_mut().get(&key) {
            return Ok(file);
        }
        self.open(key, &store.object_path(addr, dir)).await
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
        let at = code.geometry(meta.len()).parity_block_at(stripe, parity);
        let path = store.parity_path(&addr, at.dir);
        let file = self.open(FileKey::Parity(addr, at.dir), &path).await?;
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

    /// Forgets the open files of `addr` in `dirs` dirs (after repair rewrote or
    /// recreated one).
    pub(crate) fn forget(&self, addr: &Address, dirs: u8) {
        self.forgets.set(self.forgets.get() + 1);
        let mut files = self.files.borrow_mut();
        for d in 0..dirs.max(1) {
            files.remove(&FileKey::Object(*addr, DirIndex(d)));
            files.remove(&FileKey::Parity(*addr, DirIndex(d)));
        }
    }

    /// Closes segment `segment` of `store` in every lane (a repair rewrote or created it).
    pub(crate) fn forget_segment(&self, store: &Store, segment: SegmentId) {
        self.forgets.set(self.forgets.get() + 1);
        let mut files = self.files.borrow_mut();
        for lane in (0..store.lanes_on_disk()).map(LaneIndex) {
            files.remove(&FileKey::Segment(store.id(), segment, lane));
        }
    }

    async fn open(&self, key: FileKey, path: &Path) -> Result<Rc<DmaFile>, ShardError> {
        if let Some(file) = self.files.borrow_mut().get(&key) {
            return Ok(file);
        }
        let forgets = self.forgets.get();
        let file = DmaFile::open(path)
            .await
            .map_err(|e| ShardError::io("open", path)(e.into()))?;
        let file = Rc::new(file);
        if self.forgets.get() == forgets {
            self.files.borrow_mut().insert(key, Rc::clone(&file), 1);
        }
        Ok(file)
    }
}

/// Groups of one object that lie back to back in one of its files: from `first`,
/// `count` of them, at `offset` in the data file of `dir`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileRun {
    dir: DirIndex,
    offset: u64,
    first: GroupIndex,
    count: u64,
}

/// The runs groups `first..=last` of an object spread over several dirs lie in, in
/// group order: one per contiguous stretch of a dir's data file.
fn file_runs(
    meta: &ObjectMeta,
    parity: &Parity,
    first: GroupIndex,
    last: GroupIndex,
) -> Vec<FileRun> {
    let geometry = parity.geometry(meta.len());
    let mut runs: Vec<FileRun> = Vec::new();
    for g in first.0..=last.0 {
        let at = geometry.data_block_at(GroupIndex(g));
        match runs.last_mut() {
            Some(run)
                if run.dir == at.dir && run.offset + run.count * BLOCK_BYTES == at.offset.0 =>
            {
                run.count += 1;
            }
            _ => runs.push(FileRun {
                dir: at.dir,
                offset: at.offset.0,
                first: GroupIndex(g),
                count: 1,
            }),
        }
    }
    runs
}

/// A run's read must hold all its groups (the object's last one may be short).
fn check_read_len(
    meta: &ObjectMeta,
    run: &FileRun,
    read: &ReadResult,
    path: impl FnOnce() -> std::path::PathBuf,
) -> Result<(), ShardError> {
    let last = GroupIndex(run.first.0 + run.count - 1);
    let expected = (run.count - 1) * GROUP_LEN_BYTES + group_len(meta.len(), last).unwrap_or(0);
    match (read.len() as u64) < expected {
        true => Err(ShardError::ShortRead {
            addr: meta.addr(),
            group: run.first.0,
            got: read.len(),
            expected,
            path: path(),
        }),
        false => Ok(()),
    }
}

/// Groups as DMA reads brought them off disk, not yet verified.
pub(crate) enum DiskGroups {
    /// Nothing to read: an empty object.
    Empty,
    /// One read from `first` on.
    One { first: GroupIndex, read: ReadResult },
    /// Several reads, each from its first group on, in group order.
    Many(Vec<(GroupIndex, ReadResult)>),
}

impl DiskGroups {
    /// The bytes of group `group` (one the read covers), `expected` long, where they
    /// lie in the read's DMA buffer.
    pub(crate) fn group(&self, group: GroupIndex, expected: u64) -> GroupBytes {
        let (first, read) = match self {
            DiskGroups::Empty => return GroupBytes::in_memory(Bytes::new()),
            DiskGroups::One { first, read } => (*first, read),
            DiskGroups::Many(reads) => {
                let at = reads.partition_point(|(first, _)| first.0 <= group.0);
                let (first, read) = &reads[at.saturating_sub(1)];
                (*first, read)
            }
        };
        let from = ((group.0 - first.0) * GROUP_LEN_BYTES) as usize;
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
    metrics: &StorageCounters,
) -> Result<(), ShardError> {
    meta.tree.verify_group(group, bytes).map_err(|_| {
        StorageCounters::add(&metrics.verify_failures, 1);
        ShardError::StoredBytesCorrupt {
            addr: meta.addr(),
            group: group.0,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file forgotten while it was being opened (an eviction's forget landing during
    /// a read's open) is used by that read and not kept open: kept, it held the unlinked
    /// file's descriptor, and its space, until the cache pushed it out, and reads of a
    /// later copy under the same key went to the old file.
    #[test]
    fn a_file_forgotten_while_it_opens_is_not_kept() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async move {
                let dir = std::env::temp_dir().join(format!("ron-files-{}", std::process::id()));
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join("object");
                std::fs::write(&path, vec![7u8; 4096]).unwrap();
                let files = ObjectFiles::new(4);
                let addr = Address::of(b"object");
                let key = FileKey::Object(addr, DirIndex(0));
                let mut open = std::pin::pin!(files.open(key, &path));
                let first = futures_lite::future::poll_once(open.as_mut()).await;
                assert!(first.is_none(), "an open goes through the ring");
                files.forget(&addr, 1);
                open.await.unwrap();
                assert_eq!(files.files.borrow().len(), 0);
                files.open(key, &path).await.unwrap();
                assert_eq!(files.files.borrow().len(), 1, "kept when nothing forgot it");
                std::fs::remove_dir_all(&dir).unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
