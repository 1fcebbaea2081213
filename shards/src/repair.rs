//! Degraded reads and repair (issue 14; docs/design/erasure-coding.md, "Reads,
//! degraded"). A group whose block is missing, unreadable, short or failing its check
//! is rebuilt from the other blocks of its stripe (data blocks checked by their
//! chaining values, parity blocks by their checksums) and checked against its own
//! chaining value before it is served. The stripe then waits in a bounded queue, one
//! entry per stripe, for durable repair: the shard's repair task takes the most-asked
//! stripe first, reads it again from disk, rebuilds every bad block, checks it, and
//! writes it back in place with a data sync, on the blocking pool.

use std::cell::RefCell;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::rc::Rc;

use ron_codec::tree::GroupIndex;
use ron_codec::Address;

use crate::cache::AddressMap;
use crate::disk::ObjectFiles;
use crate::ec::{parity_checksum, StripeCode, StripeGeometry, StripeIndex};
use crate::error::ShardError;
use crate::layout;
use crate::record::{ObjectMeta, Parity};
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

/// Reads every block of `stripe` and checks each one: its data blocks with one read
/// (one per block if that read fails) while its parity blocks are read.
pub(crate) async fn read_stripe(
    files: &ObjectFiles,
    store: &Store,
    meta: &ObjectMeta,
    parity: &Parity,
    stripe: StripeIndex,
) -> StripeBlocks {
    let (data, parity_blocks) = futures_lite::future::zip(
        read_stripe_data(files, store, meta, parity, stripe),
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
) -> (Vec<Option<Vec<u8>>>, Vec<usize>) {
    let geometry = parity.geometry(meta.len());
    let k = usize::from(parity.params.data);
    let groups = geometry.groups_of(stripe);
    let whole = files
        .read_groups(
            store,
            meta,
            GroupIndex(groups.start),
            groups.end - groups.start,
        )
        .await
        .ok();
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
        let block = match &whole {
            Some(read) => checked(meta, group, &read.group(group, len)),
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
pub(crate) fn rebuild(
    code: &StripeCode,
    meta: &ObjectMeta,
    parity: &Parity,
    stripe: StripeIndex,
    read: &mut StripeBlocks,
) -> Result<(), ShardError> {
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
    for &column in &bad {
        let block = read.blocks[column].as_deref().unwrap_or_default();
        let good = match column < k {
            true => meta
                .tree
                .verify_group(GroupIndex(first + column as u64), block)
                .is_ok(),
            false => {
                let p = (column - k) as u8;
                parity.checksum(stripe, p) == Some(&parity_checksum(block))
            }
        };
        if !good {
            return Err(unrecoverable(first + column as u64));
        }
    }
    Ok(())
}

/// Rebuilds the bad blocks of `read`, checks them, and writes them back in place,
/// synced, on the blocking pool. Returns the bytes written (0: nothing was bad).
pub(crate) async fn repair_blocks(
    code: &StripeCode,
    store: &Store,
    meta: &ObjectMeta,
    parity: &Parity,
    stripe: StripeIndex,
    read: &mut StripeBlocks,
) -> Result<u64, ShardError> {
    let bad = read.bad_columns();
    if bad.is_empty() {
        return Ok(0);
    }
    rebuild(code, meta, parity, stripe, read)?;
    let geometry = parity.geometry(meta.len());
    let writes = block_writes(store, meta, &geometry, stripe, &bad, read);
    glommio::executor()
        .spawn_blocking(move || write_blocks_blocking(&writes))
        .await
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

/// Writes blocks in place and syncs their files (and the dir of a file it had to
/// create). Blocking; returns the bytes written.
pub(crate) fn write_blocks_blocking(writes: &[BlockWrite]) -> Result<u64, ShardError> {
    let mut written = 0;
    for w in writes {
        let created = !w.path.exists();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&w.path)
            .map_err(ShardError::io("open for repair", &w.path))?;
        file.write_all_at(&w.bytes, w.offset)
            .and_then(|()| file.sync_data())
            .map_err(ShardError::io("repair write", &w.path))?;
        if let (true, Some(dir)) = (created, w.path.parent()) {
            layout::sync_dir(dir)?;
        }
        written += w.bytes.len() as u64;
    }
    Ok(written)
}

/// A stripe waiting for repair: its object, how often reads met it, how many of its
/// blocks were bad when it was queued.
#[derive(Debug)]
struct Queued {
    meta: Rc<ObjectMeta>,
    asks: u64,
    bad_blocks: u64,
}

/// The shard's repair queue, bounded by [`REPAIR_QUEUE_STRIPES_MAX`], one entry per
/// stripe.
#[derive(Debug, Default)]
pub(crate) struct RepairQueue {
    stripes: RefCell<AddressMap<StripeKey, Queued>>,
}

/// What [`RepairQueue::add`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Added {
    New,
    AlreadyQueued,
    Full,
}

impl RepairQueue {
    pub fn add(&self, key: StripeKey, meta: &Rc<ObjectMeta>, bad_blocks: u64) -> Added {
        let mut stripes = self.stripes.borrow_mut();
        if let Some(queued) = stripes.get_mut(&key) {
            queued.asks += 1;
            return Added::AlreadyQueued;
        }
        if stripes.len() >= REPAIR_QUEUE_STRIPES_MAX {
            return Added::Full;
        }
        let queued = Queued {
            meta: Rc::clone(meta),
            asks: 1,
            bad_blocks,
        };
        stripes.insert(key, queued);
        Added::New
    }

    /// The most-asked stripe, taken off the queue, with the bad blocks it was queued
    /// with.
    pub fn take_hottest(&self) -> Option<(StripeKey, Rc<ObjectMeta>, u64)> {
        let mut stripes = self.stripes.borrow_mut();
        let key = *stripes.iter().max_by_key(|(_, q)| q.asks)?.0;
        let queued = stripes.remove(&key)?;
        Some((key, queued.meta, queued.bad_blocks))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.stripes.borrow().len()
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
    fn the_queue_keeps_one_entry_per_stripe_hands_out_the_most_asked_and_is_bounded() {
        let queue = RepairQueue::default();
        let (a, b) = (meta(1), meta(2));
        let key = |m: &ObjectMeta, s| StripeKey {
            addr: m.addr(),
            stripe: StripeIndex(s),
        };
        assert_eq!(queue.add(key(&a, 0), &a, 1), Added::New);
        assert_eq!(queue.add(key(&b, 3), &b, 2), Added::New);
        assert_eq!(queue.add(key(&b, 3), &b, 2), Added::AlreadyQueued);
        assert_eq!(queue.len(), 2);
        let (first, _, bad) = queue.take_hottest().unwrap();
        assert_eq!((first, bad), (key(&b, 3), 2));
        assert_eq!(queue.take_hottest().unwrap().0, key(&a, 0));
        assert!(queue.take_hottest().is_none());
        for s in 0..REPAIR_QUEUE_STRIPES_MAX as u64 {
            assert_eq!(queue.add(key(&a, s), &a, 1), Added::New);
        }
        let over = REPAIR_QUEUE_STRIPES_MAX as u64;
        assert_eq!(queue.add(key(&a, over), &a, 1), Added::Full);
        assert_eq!(queue.len(), REPAIR_QUEUE_STRIPES_MAX);
    }
}
