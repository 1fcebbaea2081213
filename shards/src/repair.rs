//! Degraded reads and repair (issue 14; docs/design/erasure-coding.md, "Reads,
//! degraded"). A group whose block is missing, unreadable, short or failing its check
//! is rebuilt from the other blocks of its stripe (data blocks checked by their
//! chaining values, parity blocks by their checksums) and checked against its own
//! chaining value before it is served. The stripe then waits in a bounded queue, one
//! entry per stripe, for durable repair, holding the blocks the read rebuilt and checked
//! (up to [`REPAIR_HELD_BYTES_MAX`]): the shard's repair task waits for the read path
//! to leave the disk (at most `REPAIR_DEFER_MS_MAX`), takes the most-asked stripe and
//! up to 63 more of its object, writes back the held blocks as they are — rereading,
//! rebuilding and checking the stripes queued without them — with O_DIRECT, and syncs
//! each file once, on the blocking pool. A degraded stream then costs its parity reads
//! and the write-back after it, not a second read of every stripe.

use std::cell::RefCell;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::rc::Rc;

use ron_codec::tree::GroupIndex;
use ron_codec::Address;

use crate::cache::AddressMap;
use crate::disk::{DiskGroups, ObjectFiles};
use crate::ec::{parity_checksum, StripeCode, StripeGeometry};
use crate::error::ShardError;
use crate::ids::{LaneIndex, StripeIndex};
use crate::layout;
use crate::limits::BLOCK_BYTES;
use crate::record::{Location, ObjectMeta, Parity};
use crate::segment::{self, Needle};
use crate::store::Store;

/// Stripes waiting for repair on one shard, at most. Past it a damaged stripe is
/// still served rebuilt; it is counted (`ec_repairs_dropped`) and left for the next
/// read or the scrubber to queue again.
pub const REPAIR_QUEUE_STRIPES_MAX: usize = 1024;

/// One stripe of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct StripeKey {
    pub addr: Address,
    pub stripe: StripeIndex,
}

/// The blocks of one stripe as read from disk: data (the stripe's groups; empty for
/// the groups a short last stripe lacks), then parity. `None` is a block missing,
/// unreadable or failing its check.
#[derive(Debug)]
pub(crate) struct StripeBlocks {
    pub blocks: Vec<Option<Vec<u8>>>,
    pub data_lens: Vec<usize>,
}

impl StripeBlocks {
    /// Columns (data, then parity) that came off disk bad.
    pub fn bad_columns(&self) -> Vec<usize> {
        (0..self.blocks.len())
            .filter(|c| self.blocks[*c].is_none())
            .collect()
    }
}

/// A run of groups already read from disk whose blocks of a stripe need not be read
/// again: `read` holds groups `first..first + checked.len()`, and `checked[i]` says
/// whether group `first + i` already passed its check as read (it is then taken as it
/// is, not hashed a second time).
#[derive(Clone, Copy)]
pub(crate) struct ReadBatch<'a> {
    pub read: &'a DiskGroups,
    pub first: u64,
    pub checked: &'a [bool],
}

impl ReadBatch<'_> {
    /// Group `group`'s block from the batch (`None` if the batch does not hold it):
    /// a copy if it is the group's bytes, `Some(None)` if it fails its check.
    fn block(&self, meta: &ObjectMeta, group: GroupIndex, len: u64) -> Option<Option<Vec<u8>>> {
        let at = usize::try_from(group.0.checked_sub(self.first)?).ok()?;
        let was_checked = *self.checked.get(at)?;
        let bytes = self.read.group(group, len);
        Some(match was_checked {
            true => Some(bytes.to_vec()),
            false => checked(meta, group, &bytes),
        })
    }
}

/// Reads every block of `stripe` and checks each one, its data blocks while its parity
/// blocks are read. Data blocks in `batch` (a stream's run of groups that met a
/// damaged one) are taken from there; without a batch the stripe's data is read with
/// one read. Blocks neither covers (or that the read did not bring) are read one by one.
pub(crate) async fn read_stripe(
    files: &ObjectFiles,
    store: &Store,
    meta: &ObjectMeta,
    parity: &Parity,
    stripe: StripeIndex,
    batch: Option<ReadBatch<'_>>,
) -> StripeBlocks {
    let (data, parity_blocks) = futures_lite::future::zip(
        read_stripe_data(files, store, meta, parity, stripe, batch),
        read_stripe_parity(files, store, meta, parity, stripe),
    )
    .await;
    let (mut blocks, data_lens) = data;
    blocks.extend(parity_blocks);
    StripeBlocks { blocks, data_lens }
}

/// The data blocks of `stripe` (empty ones for the groups a short last stripe lacks)
/// and their true lengths.
async fn read_stripe_data(
    files: &ObjectFiles,
    store: &Store,
    meta: &ObjectMeta,
    parity: &Parity,
    stripe: StripeIndex,
    batch: Option<ReadBatch<'_>>,
) -> (Vec<Option<Vec<u8>>>, Vec<usize>) {
    let geometry = parity.geometry(meta.len());
    let k = usize::from(parity.params.data);
    let groups = geometry.groups_of(stripe);
    let whole;
    let unchecked;
    let batch = match batch {
        Some(batch) => Some(batch),
        None => {
            let count = groups.end - groups.start;
            whole = files
                .read_groups(store, meta, GroupIndex(groups.start), count)
                .await;
            unchecked = vec![false; count as usize];
            whole.as_ref().ok().map(|read| ReadBatch {
                read,
                first: groups.start,
                checked: &unchecked,
            })
        }
    };
    let mut blocks = Vec::with_capacity(usize::from(parity.params.width()));
    let mut data_lens = vec![0; k];
    for (column, g) in (groups.start..groups.start + k as u64).enumerate() {
        let group = GroupIndex(g);
        if !groups.contains(&g) {
            blocks.push(Some(Vec::new()));
            continue;
        }
        let len = geometry.group_len(group);
        data_lens[column] = len as usize;
        let block = match batch.and_then(|batch| batch.block(meta, group, len)) {
            Some(block) => block,
            None => read_data_block(files, store, meta, group, len).await,
        };
        blocks.push(block);
    }
    (blocks, data_lens)
}

async fn read_stripe_parity(
    files: &ObjectFiles,
    store: &Store,
    meta: &ObjectMeta,
    parity: &Parity,
    stripe: StripeIndex,
) -> Vec<Option<Vec<u8>>> {
    let mut blocks = Vec::with_capacity(usize::from(parity.params.parity));
    for p in 0..parity.params.parity {
        blocks.push(files.read_parity_block(store, meta, stripe, p).await.ok());
    }
    blocks
}

async fn read_data_block(
    files: &ObjectFiles,
    store: &Store,
    meta: &ObjectMeta,
    group: GroupIndex,
    len: u64,
) -> Option<Vec<u8>> {
    let read = files.read_groups(store, meta, group, 1).await.ok()?;
    checked(meta, group, &read.group(group, len))
}

/// A copy of `bytes` if they are group `group` of the object.
fn checked(meta: &ObjectMeta, group: GroupIndex, bytes: &[u8]) -> Option<Vec<u8>> {
    meta.tree.verify_group(group, bytes).ok()?;
    Some(bytes.to_vec())
}

/// Rebuilds the bad blocks of `read` and checks each rebuilt block like one read from
/// disk: a data block against its chaining value, a parity block against its checksum.
/// Returns the bad columns whose rebuilt blocks passed: those safe to write back. An
/// error only when a data block cannot be rebuilt (more bad blocks than the parity
/// covers, or a rebuilt one failing its check): a parity block that fails its checksum
/// after every data block checked is left out, never the reason the data is refused —
/// the data is the object, and it is proven by the tree.
pub(crate) fn rebuild(
    code: &StripeCode,
    meta: &ObjectMeta,
    parity: &Parity,
    stripe: StripeIndex,
    read: &mut StripeBlocks,
) -> Result<Vec<usize>, ShardError> {
    let bad = read.bad_columns();
    let unrecoverable = |group: u64| ShardError::StripeUnrecoverable {
        addr: meta.addr(),
        group,
        stripe: stripe.0,
        bad: bad.len(),
        parity: parity.params.parity,
    };
    let geometry = parity.geometry(meta.len());
    let first = geometry.groups_of(stripe).start;
    code.rebuild(&mut read.blocks, &read.data_lens)
        .map_err(|_| unrecoverable(first))?;
    let k = usize::from(parity.params.data);
    let mut writable = Vec::with_capacity(bad.len());
    for &column in &bad {
        let block = read.blocks[column].as_deref().unwrap_or_default();
        if column < k {
            let group = GroupIndex(first + column as u64);
            if meta.tree.verify_group(group, block).is_err() {
                return Err(unrecoverable(group.0));
            }
            writable.push(column);
            continue;
        }
        let p = (column - k) as u8;
        if parity.checksum(stripe, p) == Some(&parity_checksum(block)) {
            writable.push(column);
        } else {
            tracing::warn!(
                object = %meta.addr(),
                stripe = stripe.0,
                parity_block = p,
                "parity rebuilt from checked data does not match its recorded checksum: not written back"
            );
        }
    }
    Ok(writable)
}

/// Writes `writes` in place and syncs each file once, on the blocking pool. Returns the
/// bytes written.
pub(crate) async fn write_back(writes: Vec<BlockWrite>) -> Result<u64, ShardError> {
    glommio::executor()
        .spawn_blocking(move || write_blocks_blocking(&writes))
        .await
}

/// What the lanes of a packed object hold: the body from the first lane whose copy
/// passes its check, and the lanes whose copies do not (missing, unreadable, short or
/// failing their check).
#[derive(Debug)]
pub(crate) struct LaneCheck {
    pub body: Option<Vec<u8>>,
    pub bad: Vec<LaneIndex>,
}

/// Reads and checks the copy of packed object `meta` in every lane on disk.
pub(crate) async fn check_lanes(
    files: &ObjectFiles,
    store: &Store,
    meta: &ObjectMeta,
) -> LaneCheck {
    let mut check = LaneCheck {
        body: None,
        bad: Vec::new(),
    };
    for lane in (0..store.needle_lanes(meta)).map(LaneIndex) {
        match lane_copy(files, store, meta, lane).await {
            Some(body) => {
                check.body.get_or_insert(body);
            }
            None => check.bad.push(lane),
        }
    }
    check
}

/// Packed object `meta`'s body as lane `lane` holds it, if it passes its check.
pub(crate) async fn lane_copy(
    files: &ObjectFiles,
    store: &Store,
    meta: &ObjectMeta,
    lane: LaneIndex,
) -> Option<Vec<u8>> {
    let read = files.read_needle_in_lane(store, meta, lane).await.ok()?;
    checked(meta, GroupIndex(0), &read.group(GroupIndex(0), meta.len()))
}

/// The writes that put packed object `meta`'s whole needle (head, `body`, padding)
/// back into `lanes`, where its record says it lies.
pub(crate) fn needle_writes(
    store: &Store,
    meta: &ObjectMeta,
    lanes: &[LaneIndex],
    body: &[u8],
) -> Vec<BlockWrite> {
    let Location::Packed(at) = meta.location else {
        return Vec::new();
    };
    let needle = Needle {
        addr: meta.addr(),
        content_type: &meta.content_type,
        body,
    };
    let (bytes, body_at) = segment::encode_needle(&needle);
    let Some(offset) = at.body.0.checked_sub(body_at) else {
        return Vec::new();
    };
    lanes
        .iter()
        .map(|&lane| BlockWrite {
            path: store.segment_path(lane, at.segment),
            offset,
            bytes: bytes.clone(),
        })
        .collect()
}

/// One block to write back: its file, offset and bytes.
#[derive(Debug)]
pub(crate) struct BlockWrite {
    pub path: PathBuf,
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// The writes that put the rebuilt `columns` of `read` back in their files.
pub(crate) fn block_writes(
    store: &Store,
    meta: &ObjectMeta,
    geometry: &StripeGeometry,
    stripe: StripeIndex,
    columns: &[usize],
    read: &mut StripeBlocks,
) -> Vec<BlockWrite> {
    let k = usize::from(geometry.params().data);
    let addr = meta.addr();
    let first = geometry.groups_of(stripe).start;
    columns
        .iter()
        .filter_map(|&column| {
            let bytes = read.blocks[column].take()?;
            let (path, at) = match column < k {
                true => {
                    let at = geometry.data_block_at(GroupIndex(first + column as u64));
                    (store.object_path(&addr, at.dir), at)
                }
                false => {
                    let at = geometry.parity_block_at(stripe, (column - k) as u8);
                    (store.parity_path(&addr, at.dir), at)
                }
            };
            Some(BlockWrite {
                path,
                offset: at.offset.0,
                bytes,
            })
        })
        .collect()
}

/// Writes blocks in place and syncs each file once, after its last block (and the dir
/// of a file it had to create). Blocking; returns the bytes written.
fn write_blocks_blocking(writes: &[BlockWrite]) -> Result<u64, ShardError> {
    let mut paths: Vec<&PathBuf> = writes.iter().map(|w| &w.path).collect();
    paths.sort();
    paths.dedup();
    let mut staging = AlignedBlock::new();
    let mut written = 0;
    for path in paths {
        #[cfg(test)]
        write_back_faults::check(path)?;
        let created = !path.exists();
        let file = RepairFile::open(path)?;
        for w in writes.iter().filter(|w| &w.path == path) {
            file.write(w, &mut staging)?;
            written += w.bytes.len() as u64;
        }
        file.sync(path)?;
        if let (true, Some(dir)) = (created, path.parent()) {
            layout::sync_dir(dir)?;
        }
    }
    Ok(written)
}

/// Write-backs a test makes fail, as a full or read-only disk would (test builds only):
/// no file under a listed dir is written.
#[cfg(test)]
pub(crate) mod write_back_faults {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use crate::error::ShardError;

    static FAILING_UNDER: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    pub(crate) fn fail_under(dir: &Path, failing: bool) {
        let mut dirs = FAILING_UNDER.lock().unwrap();
        dirs.retain(|d| d != dir);
        if failing {
            dirs.push(dir.to_path_buf());
        }
    }

    pub(super) fn check(path: &Path) -> Result<(), ShardError> {
        match FAILING_UNDER
            .lock()
            .unwrap()
            .iter()
            .any(|d| path.starts_with(d))
        {
            true => Err(ShardError::Io {
                op: "write back (injected)",
                path: path.to_path_buf(),
                source: std::io::Error::from_raw_os_error(30), // EROFS
            }),
            false => Ok(()),
        }
    }
}

/// Alignment of O_DIRECT offsets, lengths and buffers (the largest logical block size
/// a data disk is expected to have).
const DIRECT_ALIGN_BYTES: usize = 4096;

/// One block's worth of memory aligned for O_DIRECT, without `unsafe`: the aligned
/// window of a slightly larger allocation.
struct AlignedBlock {
    raw: Vec<u8>,
    start: usize,
}

impl AlignedBlock {
    fn new() -> AlignedBlock {
        let raw = vec![0; BLOCK_BYTES as usize + DIRECT_ALIGN_BYTES];
        let start = raw.as_ptr().align_offset(DIRECT_ALIGN_BYTES);
        AlignedBlock { raw, start }
    }

    /// `bytes` copied into the aligned window (at most one block).
    fn holding(&mut self, bytes: &[u8]) -> &[u8] {
        let window = &mut self.raw[self.start..self.start + bytes.len()];
        window.copy_from_slice(bytes);
        window
    }
}

/// A file repairs write into: with O_DIRECT where the filesystem allows it, so that
/// written blocks never sit dirty in the page cache of a file the read path reads
/// with O_DIRECT (the kernel would flush and drop them around every direct read of
/// it), and buffered for the writes O_DIRECT cannot take (a short last block).
struct RepairFile {
    direct: Option<std::fs::File>,
    buffered: std::fs::File,
}

impl RepairFile {
    fn open(path: &PathBuf) -> Result<RepairFile, ShardError> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(false);
        let buffered = options
            .open(path)
            .map_err(ShardError::io("open for repair", path))?;
        options.custom_flags(nix::fcntl::OFlag::O_DIRECT.bits());
        // A filesystem without O_DIRECT (EINVAL) gets buffered writes.
        let direct = options.open(path).ok();
        Ok(RepairFile { direct, buffered })
    }

    fn write(&self, w: &BlockWrite, staging: &mut AlignedBlock) -> Result<(), ShardError> {
        let aligned = |n: u64| n.is_multiple_of(DIRECT_ALIGN_BYTES as u64);
        let fits = w.bytes.len() as u64 <= BLOCK_BYTES;
        match &self.direct {
            Some(direct) if fits && aligned(w.offset) && aligned(w.bytes.len() as u64) => direct
                .write_all_at(staging.holding(&w.bytes), w.offset)
                .map_err(ShardError::io("repair write (direct)", &w.path)),
            _ => self
                .buffered
                .write_all_at(&w.bytes, w.offset)
                .map_err(ShardError::io("repair write", &w.path)),
        }
    }

    fn sync(&self, path: &PathBuf) -> Result<(), ShardError> {
        self.buffered
            .sync_data()
            .map_err(ShardError::io("repair sync", path))
    }
}

/// Bytes of rebuilt blocks the repair queue holds, at most: a stripe queued past it
/// holds none and is read and rebuilt again by the repair task.
pub const REPAIR_HELD_BYTES_MAX: usize = 32 << 20;

/// A stripe waiting for repair: its object, how often reads met it, how many of its
/// blocks were bad when it was queued, and the writes of its blocks as the degraded
/// read rebuilt and checked them (when the queue had room to hold them).
#[derive(Debug)]
struct Queued {
    meta: Rc<ObjectMeta>,
    asks: u64,
    bad_blocks: u64,
    rebuilt: Option<Vec<BlockWrite>>,
}

/// A stripe taken off the queue: which, its bad blocks when queued, its rebuilt
/// blocks' writes if held.
pub(crate) type TakenStripe = (StripeIndex, u64, Option<Vec<BlockWrite>>);

/// The shard's repair queue, bounded by [`REPAIR_QUEUE_STRIPES_MAX`], one entry per
/// stripe, and by [`REPAIR_HELD_BYTES_MAX`] of rebuilt blocks.
#[derive(Debug, Default)]
pub(crate) struct RepairQueue {
    stripes: RefCell<AddressMap<StripeKey, Queued>>,
    held_bytes: std::cell::Cell<usize>,
}

fn write_bytes(writes: &Option<Vec<BlockWrite>>) -> usize {
    writes
        .as_ref()
        .map_or(0, |w| w.iter().map(|w| w.bytes.len()).sum())
}

/// What [`RepairQueue::add`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Added {
    New,
    AlreadyQueued,
    Full,
}

impl RepairQueue {
    /// Bytes of rebuilt blocks held now.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes.get()
    }

    /// Queues `key` with `rebuilt`, the writes of its bad blocks as a read rebuilt and
    /// checked them (kept while the queue's budget allows: the repair task then writes
    /// them without reading the stripe again).
    pub fn add(
        &self,
        key: StripeKey,
        meta: &Rc<ObjectMeta>,
        bad_blocks: u64,
        rebuilt: Option<Vec<BlockWrite>>,
    ) -> Added {
        let mut stripes = self.stripes.borrow_mut();
        if let Some(queued) = stripes.get_mut(&key) {
            queued.asks += 1;
            return Added::AlreadyQueued;
        }
        if stripes.len() >= REPAIR_QUEUE_STRIPES_MAX {
            return Added::Full;
        }
        let held = self.held_bytes.get() + write_bytes(&rebuilt);
        let rebuilt = match held <= REPAIR_HELD_BYTES_MAX {
            true => {
                self.held_bytes.set(held);
                rebuilt
            }
            false => None,
        };
        let queued = Queued {
            meta: Rc::clone(meta),
            asks: 1,
            bad_blocks,
            rebuilt,
        };
        stripes.insert(key, queued);
        Added::New
    }

    /// The most-asked stripe of an object not `busy` and up to `limit - 1` other queued
    /// stripes of its object (repaired together: one write and one sync per file), taken
    /// off the queue, in stripe order, with the object and the bad blocks they were
    /// queued with. A busy object's stripes (a paced scrub of it holds it for minutes)
    /// stay queued and hold up no other object's.
    pub fn take_hottest(
        &self,
        limit: usize,
        busy: impl Fn(&Address) -> bool,
    ) -> Option<(Rc<ObjectMeta>, Vec<TakenStripe>)> {
        let mut stripes = self.stripes.borrow_mut();
        let hottest = *stripes
            .iter()
            .filter(|(key, _)| !busy(&key.addr))
            .max_by_key(|(_, q)| q.asks)?
            .0;
        let mut keys: Vec<StripeKey> = stripes
            .keys()
            .filter(|k| k.addr == hottest.addr && **k != hottest)
            .copied()
            .collect();
        keys.sort_by_key(|k| k.stripe);
        keys.truncate(limit.saturating_sub(1));
        keys.push(hottest);
        keys.sort_by_key(|k| k.stripe);
        let mut meta = None;
        let mut taken = Vec::with_capacity(keys.len());
        for key in keys {
            let queued = stripes.remove(&key)?;
            let held = self.held_bytes.get() - write_bytes(&queued.rebuilt);
            self.held_bytes.set(held);
            taken.push((key.stripe, queued.bad_blocks, queued.rebuilt));
            meta = Some(queued.meta);
        }
        Some((meta?, taken))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.stripes.borrow().len()
    }

    /// Whether no stripe is queued.
    pub fn is_empty(&self) -> bool {
        self.stripes.borrow().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Location;
    use ron_codec::ChunkTree;

    fn meta(byte: u8) -> Rc<ObjectMeta> {
        Rc::new(ObjectMeta {
            tree: ChunkTree::of(&[byte; 10]),
            content_type: String::new(),
            location: Location::OwnFile,
            parity: None,
        })
    }

    #[test]
    fn write_back_puts_whole_blocks_and_a_short_last_one_in_place_over_old_bytes() {
        let dir = std::env::temp_dir().join(format!("ron-repair-write-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("object");
        let block = BLOCK_BYTES as usize;
        std::fs::write(&path, vec![0xEE; 2 * block + 100]).unwrap();
        let write = |offset: u64, bytes: Vec<u8>| BlockWrite {
            path: path.clone(),
            offset,
            bytes,
        };
        // A whole block (O_DIRECT where the filesystem allows it) and the short last
        // block (buffered), given out of order.
        let writes = [
            write(2 * BLOCK_BYTES, vec![3; 100]),
            write(BLOCK_BYTES, vec![2; block]),
        ];
        assert_eq!(write_blocks_blocking(&writes).unwrap(), block as u64 + 100);
        let mut expected = vec![0xEE; block];
        expected.extend(vec![2; block]);
        expected.extend(vec![3; 100]);
        assert_eq!(std::fs::read(&path).unwrap(), expected);
        // A lost file is created again from its blocks.
        let lost = dir.join("lost");
        let writes = [BlockWrite {
            path: lost.clone(),
            offset: 0,
            bytes: vec![7; 300],
        }];
        write_blocks_blocking(&writes).unwrap();
        assert_eq!(std::fs::read(&lost).unwrap(), vec![7; 300]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_queue_keeps_one_entry_per_stripe_hands_out_the_most_asked_and_is_bounded() {
        let queue = RepairQueue::default();
        let (a, b) = (meta(1), meta(2));
        let key = |m: &ObjectMeta, s| StripeKey {
            addr: m.addr(),
            stripe: StripeIndex(s),
        };
        assert_eq!(queue.add(key(&a, 0), &a, 1, None), Added::New);
        assert_eq!(queue.add(key(&b, 3), &b, 2, None), Added::New);
        assert_eq!(queue.add(key(&b, 3), &b, 2, None), Added::AlreadyQueued);
        assert_eq!(queue.len(), 2);
        let (first, stripes) = queue.take_hottest(8, |_| false).unwrap();
        assert_eq!(first.addr(), b.addr());
        assert_eq!(
            stripes
                .iter()
                .map(|(s, bad, _)| (*s, *bad))
                .collect::<Vec<_>>(),
            vec![(StripeIndex(3), 2)]
        );
        assert_eq!(queue.take_hottest(8, |_| false).unwrap().0.addr(), a.addr());
        assert!(queue.take_hottest(8, |_| false).is_none());
        // The hottest stripe brings the object's other stripes, up to the limit.
        for s in [9, 2, 5, 7] {
            queue.add(key(&a, s), &a, 1, None);
        }
        queue.add(key(&b, 1), &b, 1, None);
        queue.add(key(&a, 7), &a, 1, None);
        let (object, stripes) = queue.take_hottest(3, |_| false).unwrap();
        assert_eq!(object.addr(), a.addr());
        let taken: Vec<u64> = stripes.iter().map(|(s, _, _)| s.0).collect();
        assert_eq!(taken, vec![2, 5, 7]);
        assert_eq!(queue.len(), 2);
        // A busy object's stripes wait; the others' are handed out meanwhile.
        queue.add(key(&b, 1), &b, 1, None);
        let a_busy = |addr: &Address| *addr == a.addr();
        let (object, _) = queue.take_hottest(8, a_busy).unwrap();
        assert_eq!(object.addr(), b.addr(), "a is hotter, but busy");
        assert!(queue.take_hottest(8, a_busy).is_none());
        assert_eq!(queue.len(), 1, "a's stripe is still queued");
        while queue.take_hottest(64, |_| false).is_some() {}
        // Rebuilt blocks are held up to the budget; past it a stripe is queued bare.
        let block = |len| {
            Some(vec![BlockWrite {
                path: PathBuf::from("x"),
                offset: 0,
                bytes: vec![0; len],
            }])
        };
        let half = REPAIR_HELD_BYTES_MAX / 2;
        queue.add(key(&a, 0), &a, 1, block(half));
        queue.add(key(&a, 1), &a, 1, block(half));
        queue.add(key(&a, 2), &a, 1, block(1));
        let (_, stripes) = queue.take_hottest(8, |_| false).unwrap();
        let held: Vec<bool> = stripes.iter().map(|(_, _, w)| w.is_some()).collect();
        assert_eq!(held, vec![true, true, false]);
        assert_eq!(queue.held_bytes.get(), 0);
        for s in 0..REPAIR_QUEUE_STRIPES_MAX as u64 {
            assert_eq!(queue.add(key(&a, s), &a, 1, None), Added::New);
        }
        let over = REPAIR_QUEUE_STRIPES_MAX as u64;
        assert_eq!(queue.add(key(&a, over), &a, 1, None), Added::Full);
        assert_eq!(queue.len(), REPAIR_QUEUE_STRIPES_MAX);
    }
}
