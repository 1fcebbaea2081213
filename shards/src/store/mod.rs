//! One storage partition ("store"): an LMDB index, object files and segments, spread
//! over the node's data dirs (`layout.rs`).
//!
//! ```text
//! <dir>/stores/<id>/index/      LMDB env: address (32 bytes) -> record (record.rs), in
//!                               the dirs of `index_replica_dirs`
//! <dir>/stores/<id>/objects/hh/<hex>          the object's data blocks this dir holds
//! <dir>/stores/<id>/objects/hh/<hex>.parity   its parity blocks this dir holds
//! <dir 0>/stores/<id>/segments/<id>           small objects, packed (segment.rs)
//! ```
//!
//! Index replicas: every commit commits each replica in the same order, each counting
//! its commits; at start-up replicas whose counts differ (a crash between two replicas'
//! commits, a replica new in a replaced dir) are brought to their union before the
//! store serves. Reads use the first replica. Records are only added, except evictable
//! copies of fetched objects ([`evictable`]): an eviction's files are unlinked only
//! after every replica committed it, so a union that brings a record back finds its
//! files.
//!
//! Visibility rule: an object in its own file exists only once its index record is
//! committed, and the record is committed only after the file is durable under its final
//! name. A crash at any point leaves either no record (the object is invisible; an orphan
//! file may remain and is overwritten by a re-upload) or a record whose file is complete.
//! A packed object exists once its needle is durable in a segment (the segment is the
//! log, `segment.rs`): the index records of packed objects follow in larger commits, each
//! storing the store's segment [`Checkpoint`], and [`Store::replay_blocking`] indexes
//! the needles past it at start-up.
//!
//! LMDB reads happen inline on the shard (a read transaction is lock-free and
//! syscall-free); commits — which fsync — run on the blocking pool (`commit_blocking`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ron_codec::Address;

use crate::error::ShardError;
use crate::ids::{ByteOffset, DirIndex, LaneIndex, SegmentId, StoreId};
use crate::limits::SEGMENT_LANES_MAX;
use crate::record::{Location, ObjectMeta};
use crate::segment::{self, Checkpoint, FoundNeedle, LaneHistory, Skipped};

/// Needles a replay indexes per transaction (about 300 bytes each while held): a replay
/// from the first needle (a lost index, a rotted checkpoint) reads every needle of the
/// store.
const REPLAY_BATCH_NEEDLES: usize = 16 * 1024;

mod compact;
mod evictable;
mod index;
pub use compact::{Compaction, DEAD_PERCENT_MIN};
use evictable::EvictRule;
pub use evictable::EvictableObject;
use index::{merge_replicas, Index, SCRUB_KEY, STATS_KEY};
pub use index::{now_us, CommitRecord, ScrubPosition, StoreStats};

/// A store's handle. Cheap to clone (shared) and `Send`, so a clone can go to the
/// blocking pool for commits.
#[derive(Clone)]
pub struct Store {
    id: StoreId,
    /// The store's root in each data dir, in dir order.
    roots: Arc<[PathBuf]>,
    /// The index replicas, the one serving reads first. Each has the `objects`
    /// database and `stats`: objects and bytes stored and the commit count, updated in
    /// every commit; `checkpoint`: how far the index has taken in the segments.
    replicas: Arc<[Index]>,
    /// Lanes new segments are written to (`segment.rs`), and lanes reads may find a
    /// packed object's needle in (those on disk: more if the code once had more parity).
    segment_lanes: u8,
    lanes_on_disk: u8,
    /// The lanes each run wrote its segments to (fewer than on disk after `--ec` was
    /// lowered).
    lane_history: Arc<LaneHistory>,
}

/// What [`Store::replay_blocking`] did at start-up.
#[derive(Debug, Default)]
pub struct Replay {
    /// Needles past the checkpoint that had no record and now have one.
    pub indexed: u64,
    /// Segments whose tail was not a whole, matching needle (never acknowledged).
    pub torn: Vec<(SegmentId, ByteOffset)>,
    /// Damaged needles with whole ones after them, passed over: acknowledged objects
    /// lost from this store unless another node holds them.
    pub skipped: Vec<Skipped>,
    /// What the compaction after the replay did ([`Store::compact_blocking`]).
    pub compaction: Compaction,
}

/// The checkpoint a store without one starts from: the start of its segments, or the
/// end of the last segment written before checkpoints existed.
fn first_checkpoint(root: &Path) -> Result<Checkpoint, ShardError> {
    let Some(&last) = segment::segment_ids(root)?.last() else {
        return Ok(Checkpoint::START);
    };
    let path = segment::segment_path(root, last);
    let len = std::fs::metadata(&path)
        .map_err(ShardError::io("stat segment", &path))?
        .len();
    Ok(Checkpoint {
        segment: last,
        end: ByteOffset(len),
    })
}

/// Opens the index replicas at `paths`. A replica LMDB refuses as damaged (not an
/// LMDB file, corrupted, another format) while another replica opens is moved aside
/// (`index.damaged-<unix seconds>`, kept for a look) and made anew, to be filled from
/// the others by [`merge_replicas`]: one damaged replica refused the node's start while
/// the others held every record. With none to fill it from, the damage is the answer.
fn open_replicas(
    paths: &[PathBuf],
    index_bytes_max: usize,
    start: Checkpoint,
) -> Result<Vec<Index>, ShardError> {
    let opened: Vec<Result<Index, ShardError>> = paths
        .iter()
        .map(|path| Index::open(path.clone(), index_bytes_max, start))
        .collect();
    if !opened.iter().any(Result::is_ok) {
        return opened.into_iter().collect();
    }
    opened
        .into_iter()
        .zip(paths)
        .map(|(index, path)| match index {
            Err(e) if e.is_damaged_index() => {
                let aside = path.with_file_name(format!("index.damaged-{}", now_us() / 1_000_000));
                tracing::warn!(index = %path.display(), aside = %aside.display(), error = %e, "a damaged index replica: moved aside and made anew from the others");
                std::fs::rename(path, &aside).map_err(ShardError::io("move aside", path))?;
                Index::open(path.clone(), index_bytes_max, start)
            }
            index => index,
        })
        .collect()
}

/// Index records longer than this (2,048 groups: objects over 128 MiB) are read and
/// checked on the blocking pool: checking a tree is one merge per group (a 4 GiB object:
/// 65,536 merges, milliseconds) that would stall every connection of the shard.
pub const INLINE_RECORD_BYTES_MAX: usize = 64 * 1024;

/// The object's record from `store`, its tree checked against the address: inline when
/// short, on the blocking pool when checking its tree would stall the shard.
pub async fn read_record(store: &Store, addr: &Address) -> Result<Option<ObjectMeta>, ShardError> {
    match store.get_inline(addr, INLINE_RECORD_BYTES_MAX)? {
        Lookup::Found(meta) => Ok(Some(meta)),
        Lookup::Absent => Ok(None),
        Lookup::Long => {
            let (store, key) = (store.clone(), *addr);
            glommio::executor()
                .spawn_blocking(move || store.get(&key))
                .await
        }
    }
}

/// What [`Store::get_inline`] found.
#[derive(Debug)]
pub enum Lookup {
    Found(ObjectMeta),
    Absent,
    /// A record longer than the caller's limit, left undecoded.
    Long,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("id", &self.id)
            .field("roots", &self.roots)
            .field("replicas", &self.replicas.len())
            .finish()
    }
}

/// Where a store's index replicas live: `min(m + 1, n)` dirs from `store mod n` on, so
/// that losing the `m` dirs a stripe survives leaves a replica (one dir: the only
/// one). `parity` is the node's `m`.
pub fn index_replica_dirs(store: StoreId, dirs: u8, parity: u8) -> Vec<DirIndex> {
    let n = u16::from(dirs.max(1));
    let replicas = (u16::from(parity) + 1).min(n);
    (0..replicas)
        .map(|i| DirIndex(((store.0 % n + i) % n) as u8))
        .collect()
}

impl Store {
    /// Opens (creating if needed) the store whose root in each data dir is `roots`
    /// (dir order), with index replicas in `replica_dirs` (the first one serves reads).
    /// Replicas a crash or a replaced dir left apart are merged first: their union is the
    /// index (a pass over the records, only when the replicas' commit counts differ);
    /// then evictions a crash interrupted are finished. New segments are written to `segment_lanes`
    /// lanes (1 to [`SEGMENT_LANES_MAX`]). Blocking; runs at start-up.
    pub fn open(
        roots: Vec<PathBuf>,
        replica_dirs: &[DirIndex],
        segment_lanes: u8,
        id: StoreId,
        index_bytes_max: usize,
    ) -> Result<Store, ShardError> {
        assert!(!roots.is_empty() && !replica_dirs.is_empty());
        let object_dirs: Vec<PathBuf> = roots
            .iter()
            .flat_map(|root| (0..=255u8).map(|hh| root.join("objects").join(format!("{hh:02x}"))))
            .collect();
        crate::layout::create_dirs_durably(object_dirs.iter().map(PathBuf::as_path))?;
        let segment_lanes = segment_lanes.clamp(1, SEGMENT_LANES_MAX);
        segment::create_lane_dirs(&roots[0], segment_lanes)?;
        let lanes_on_disk = segment::lanes_on_disk(&roots[0]);
        let lane_history = Arc::new(LaneHistory::open(&roots[0], segment_lanes)?);
        // A new (or emptied) index replays from the first needle; one whose segments
        // were written before checkpoints existed had every acknowledged needle indexed
        // before its answer, so its replay starts past them (`Index::open` tells which).
        let start = first_checkpoint(&roots[0])?;
        let paths: Vec<PathBuf> = replica_dirs
            .iter()
            .map(|d| roots[usize::from(d.0)].join("index"))
            .collect();
        let replicas = open_replicas(&paths, index_bytes_max, start)?;
        merge_replicas(&replicas)?;
        let store = Store {
            id,
            roots: roots.into(),
            replicas: replicas.into(),
            segment_lanes,
            lanes_on_disk,
            lane_history,
        };
        let unlinked = store.finish_evictions()?;
        if unlinked > 0 {
            tracing::info!(
                store = id.0,
                objects = unlinked,
                "interrupted evictions finished"
            );
        }
        Ok(store)
    }

    /// Indexes the needles past the checkpoint: acknowledged packed objects whose
    /// records a crash kept from the index. Each is checked against its address; a bad
    /// needle is passed over when whole ones follow it, and ends its segment's scan
    /// when none does (a torn tail). Blocking; at start-up, before the
    /// store serves.
    pub fn replay_blocking(&self) -> Result<Replay, ShardError> {
        self.replay_in_batches(REPLAY_BATCH_NEEDLES)
    }

    /// [`Store::replay_blocking`], committing every `batch_needles` needles found with
    /// the checkpoint past them: its memory is one batch, and a crash part way through
    /// keeps what the batches before it indexed.
    fn replay_in_batches(&self, batch_needles: usize) -> Result<Replay, ShardError> {
        let from = self.checkpoint()?;
        let mut indexed = 0;
        let mut index_found = |needles: Vec<FoundNeedle>, end: Checkpoint| {
            let records = self.unindexed_records(needles)?;
            indexed += records.len() as u64;
            self.commit_blocking(&records, Some(end)).map(drop)
        };
        let scan = segment::scan_past_in_batches(
            self.segments_root(),
            from,
            batch_needles,
            &mut index_found,
        )?;
        if scan.end != from {
            index_found(scan.needles, scan.end)?;
        }
        Ok(Replay {
            indexed,
            torn: scan.torn,
            skipped: scan.skipped,
            compaction: Compaction::default(),
        })
    }

    /// The records of the needles `found` whose objects the index does not hold.
    fn unindexed_records(&self, found: Vec<FoundNeedle>) -> Result<Vec<CommitRecord>, ShardError> {
        let mut records = Vec::with_capacity(found.len());
        for found in found {
            let meta = ObjectMeta {
                tree: found.tree,
                content_type: found.content_type,
                location: crate::record::Location::Packed(found.at),
                parity: None,
            };
            if !self.contains(&meta.addr())? {
                records.push(CommitRecord::of(&meta));
            }
        }
        Ok(records)
    }

    /// The replica that serves reads.
    fn index(&self) -> &Index {
        &self.replicas[0]
    }

    /// How far the index has taken in the store's segments.
    pub fn checkpoint(&self) -> Result<Checkpoint, ShardError> {
        self.index()
            .checkpoint()?
            .ok_or_else(|| ShardError::Layout {
                path: self.index().path.clone(),
                reason: "the index has no valid segment checkpoint".into(),
            })
    }

    pub fn id(&self) -> StoreId {
        self.id
    }

    fn lmdb(&self, op: &'static str) -> impl FnOnce(heed::Error) -> ShardError + '_ {
        self.index().lmdb(op)
    }

    /// The object's record if it is at most `record_bytes_max` long (checking a record's
    /// tree costs one merge per group, so long ones are for [`Store::get`] on the
    /// blocking pool).
    pub fn get_inline(
        &self,
        addr: &Address,
        record_bytes_max: usize,
    ) -> Result<Lookup, ShardError> {
        let index = self.index();
        let rtxn = index.env.read_txn().map_err(self.lmdb("read"))?;
        match index
            .db
            .get(&rtxn, addr.as_bytes())
            .map_err(self.lmdb("get"))?
        {
            Some(bytes) if bytes.len() > record_bytes_max => Ok(Lookup::Long),
            Some(bytes) => ObjectMeta::decode(*addr, bytes)
                .and_then(|meta| self.check_layout(meta))
                .map(Lookup::Found),
            None => Ok(Lookup::Absent),
        }
    }

    /// A record whose parity names another number of data dirs than the store spans is
    /// corrupt (a node's dirs are fixed when it is created): its blocks would be looked
    /// for, and repairs written, in the wrong files. The tree check does not cover the
    /// layout.
    fn check_layout(&self, meta: ObjectMeta) -> Result<ObjectMeta, ShardError> {
        match &meta.parity {
            Some(parity) if parity.dirs != self.dir_count() => Err(ShardError::CorruptRecord {
                addr: meta.addr(),
                reason: "its parity names another number of data dirs than the store spans",
            }),
            _ => Ok(meta),
        }
    }

    /// The object's index record, its chunk tree checked against the address.
    pub fn get(&self, addr: &Address) -> Result<Option<ObjectMeta>, ShardError> {
        match self.get_inline(addr, usize::MAX)? {
            Lookup::Found(meta) => Ok(Some(meta)),
            Lookup::Absent => Ok(None),
            Lookup::Long => unreachable!("no record is longer than usize::MAX"),
        }
    }

    pub fn contains(&self, addr: &Address) -> Result<bool, ShardError> {
        let index = self.index();
        let rtxn = index.env.read_txn().map_err(self.lmdb("read"))?;
        Ok(index
            .db
            .get(&rtxn, addr.as_bytes())
            .map_err(self.lmdb("get"))?
            .is_some())
    }

    /// Objects and bytes stored.
    pub fn stats(&self) -> Result<StoreStats, ShardError> {
        Ok(StoreStats::decode(self.index().stat(STATS_KEY)?.as_deref()))
    }

    /// Evictable objects and their bytes (`store/evictable.rs`).
    pub fn evictable_stats(&self) -> Result<StoreStats, ShardError> {
        let index = self.index();
        let rtxn = index.env.read_txn().map_err(self.lmdb("read"))?;
        index.evictable_stats_in(&rtxn)
    }

    /// Whether `addr` is stored as an evictable copy.
    pub fn is_evictable(&self, addr: &Address) -> Result<bool, ShardError> {
        let index = self.index();
        let rtxn = index.env.read_txn().map_err(self.lmdb("read"))?;
        index.is_evictable_in(&rtxn, addr)
    }

    /// Up to `limit` evictable objects, oldest first. A read transaction: inline.
    pub fn oldest_evictable(&self, limit: usize) -> Result<Vec<EvictableObject>, ShardError> {
        self.index().oldest_evictable(limit)
    }

    /// Evicts those of `addrs` still evictable: their records leave every replica (the
    /// first decides, the others follow), each leaving an `evicted` marker until
    /// [`Store::unlink_evicted_blocking`]. Returns what was evicted. Blocking (fsync).
    pub fn evict_blocking(&self, addrs: &[Address]) -> Result<Vec<EvictableObject>, ShardError> {
        let evicted = self.index().evict(addrs, EvictRule::Choose)?;
        if evicted.is_empty() {
            return Ok(evicted);
        }
        let chosen: Vec<Address> = evicted.iter().map(|e| e.addr).collect();
        for replica in &self.replicas[1..] {
            replica.evict(&chosen, EvictRule::Follow)?;
        }
        Ok(evicted)
    }

    /// Removes `addr`'s record from every replica without decoding it, for a record that
    /// fails its own check: its object is then missing here (read through, fetched again
    /// by a pull) where it answered an error for good. Its files stay: a whole one is
    /// stored again by the next start's orphan sweep (`orphans.rs`). The caller holds the
    /// address claimed in the commit queue. Blocking (fsync).
    /// The object length the serving replica's record gave (`None`: it had none).
    pub fn forget_unreadable_record_blocking(
        &self,
        addr: &Address,
    ) -> Result<Option<u64>, ShardError> {
        let mut served = None;
        for (i, replica) in self.replicas.iter().enumerate() {
            let removed = replica.forget_record(addr)?;
            if i == 0 {
                served = removed;
            }
        }
        Ok(served)
    }

    /// Removes the files of evicted objects (data and parity, in every dir; a packed
    /// object has none: its needle stays as dead space), syncs their dirs, then clears
    /// their markers. Every replica must have committed the eviction first.
    /// Blocking (unlink, fsync).
    pub fn unlink_evicted_blocking(&self, addrs: &[Address]) -> Result<(), ShardError> {
        self.unlink_files_blocking(addrs, "unlink evicted object")?;
        self.replicas
            .iter()
            .try_for_each(|r| r.clear_evicted(addrs))
    }

    /// Unlinks the files of `addrs` (data and parity, in every dir) and syncs their
    /// directories. Blocking. `op` names the failure.
    pub(crate) fn unlink_files_blocking(
        &self,
        addrs: &[Address],
        op: &'static str,
    ) -> Result<(), ShardError> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for addr in addrs {
            for d in 0..self.dir_count() {
                let data = self.object_path(addr, DirIndex(d));
                for path in [self.parity_path(addr, DirIndex(d)), data] {
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(ShardError::io(op, &path)(e)),
                    }
                    if let Some(dir) = path.parent().filter(|d| !dirs.iter().any(|x| x == d)) {
                        dirs.push(dir.to_path_buf());
                    }
                }
            }
        }
        dirs.iter().try_for_each(|dir| crate::layout::sync_dir(dir))
    }

    /// Finishes evictions a crash interrupted: the files of marked addresses without a
    /// record are unlinked; a marked address with a record keeps its files. Blocking;
    /// at start-up, after the replicas are merged. Returns the objects unlinked.
    fn finish_evictions(&self) -> Result<usize, ShardError> {
        let mut marked: Vec<Address> = Vec::new();
        for replica in self.replicas.iter() {
            for addr in replica.evicted_markers()? {
                if !marked.contains(&addr) {
                    marked.push(addr);
                }
            }
        }
        let (mut stored, mut gone) = (Vec::new(), Vec::new());
        for addr in marked {
            match self.contains(&addr)? {
                true => stored.push(addr),
                false => gone.push(addr),
            }
        }
        self.replicas
            .iter()
            .try_for_each(|r| r.clear_evicted(&stored))?;
        self.unlink_evicted_blocking(&gone)?;
        Ok(gone.len())
    }

    /// Commits a batch of records, the updated stats and, when given, the segment
    /// checkpoint the records reach (if it is past the stored one), in one durable LMDB
    /// transaction per index replica, the replicas in order; returns what the batch
    /// added (records already present count nothing).
    /// Blocking (fsync): call from the blocking pool only.
    pub fn commit_blocking(
        &self,
        records: &[CommitRecord],
        checkpoint: Option<Checkpoint>,
    ) -> Result<StoreStats, ShardError> {
        records
            .iter()
            .for_each(CommitRecord::assert_decodes_to_its_address);
        let added = self.index().commit(records, checkpoint)?;
        for replica in &self.replicas[1..] {
            replica.commit(records, checkpoint)?;
        }
        Ok(added)
    }

    /// Up to `limit` addresses stored after `after` (from the first when `None`), in key
    /// order. A read transaction: inline on the shard, like a lookup.
    pub fn addresses_after(
        &self,
        after: Option<&Address>,
        limit: usize,
    ) -> Result<Vec<Address>, ShardError> {
        let index = self.index();
        index.keys_after(index.db, after, limit)
    }

    /// Up to `limit` evictable addresses after `after`, in address order (the
    /// `evictable` database's keys): the repair sweep's rescue walk. A read
    /// transaction: inline.
    pub fn evictable_after(
        &self,
        after: Option<&Address>,
        limit: usize,
    ) -> Result<Vec<Address>, ShardError> {
        let index = self.index();
        index.keys_after(index.evictable.by_addr, after, limit)
    }

    /// Where the scrubber stopped in this store (the start of a first pass if it never
    /// ran, or if what it saved cannot be read).
    pub fn scrub_position(&self) -> Result<ScrubPosition, ShardError> {
        let raw = self.index().stat(SCRUB_KEY)?;
        Ok(raw
            .as_deref()
            .and_then(ScrubPosition::decode)
            .unwrap_or_default())
    }

    /// The scrub starts a pass again from the first object, as pass number `passes`
    /// (the fewest of its shard's stores: a store already a pass ahead goes over its
    /// objects again too): a replacement dir holds none of the blocks a pass has passed.
    /// Blocking.
    pub fn restart_scrub_pass_blocking(&self, passes: u64) -> Result<(), ShardError> {
        self.save_scrub_position_blocking(ScrubPosition {
            passes,
            objects: 0,
            after: None,
        })
    }

    /// Saves where the scrubber is, in every replica. Blocking (LMDB commits): the
    /// blocking pool only.
    pub fn save_scrub_position_blocking(&self, position: ScrubPosition) -> Result<(), ShardError> {
        self.replicas
            .iter()
            .try_for_each(|r| r.put_stat(SCRUB_KEY, &position.encode()))
    }

    /// The store's root in dir 0, where its segments of packed objects are.
    pub fn segments_root(&self) -> &Path {
        &self.roots[0]
    }

    /// Lanes new segments are written to.
    pub fn segment_lanes(&self) -> u8 {
        self.segment_lanes
    }

    /// Lanes a packed object's needle may be found in.
    pub fn lanes_on_disk(&self) -> u8 {
        self.lanes_on_disk
    }

    /// Lanes packed object `meta`'s needle should be in: those of the run that wrote its
    /// segment (every lane on disk for a segment older than the lane history), or more
    /// when the code has been raised since (a check fills them). A lane it was written
    /// to under a code lowered since is not counted lost.
    pub fn needle_lanes(&self, meta: &ObjectMeta) -> u8 {
        match meta.location {
            Location::Packed(at) => self
                .lane_history
                .lanes_of(at.segment, self.lanes_on_disk)
                .max(self.segment_lanes)
                .min(self.lanes_on_disk),
            Location::OwnFile => self.lanes_on_disk,
        }
    }

    /// Where a packed object's segment is in lane `lane`.
    pub fn segment_path(&self, lane: LaneIndex, id: SegmentId) -> PathBuf {
        segment::lane_segment_path(self.segments_root(), lane, id)
    }

    /// Where the data blocks of an object with a file of its own that dir `dir` holds
    /// are (an object without parity: all of them, in dir 0).
    pub fn object_path(&self, addr: &Address, dir: DirIndex) -> PathBuf {
        let hex = addr.hex();
        let hex = std::str::from_utf8(&hex).unwrap_or_default();
        self.root_in(dir).join("objects").join(&hex[..2]).join(hex)
    }

    /// The dir of dir `dir` holding the files of objects whose address starts with the
    /// byte `hh`.
    pub fn objects_dir(&self, dir: DirIndex, hh: u8) -> PathBuf {
        self.root_in(dir).join("objects").join(format!("{hh:02x}"))
    }

    /// Where the parity blocks of an object that dir `dir` holds are.
    pub fn parity_path(&self, addr: &Address, dir: DirIndex) -> PathBuf {
        crate::layout::parity_path(&self.object_path(addr, dir))
    }

    /// Data dirs the store spans.
    pub fn dir_count(&self) -> u8 {
        self.roots.len() as u8
    }

    fn root_in(&self, dir: DirIndex) -> &Path {
        // Records naming other dirs are refused as corrupt when read (`check_layout`).
        debug_assert!(usize::from(dir.0) < self.roots.len(), "{dir:?}");
        self.roots.get(usize::from(dir.0)).unwrap_or(&self.roots[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ByteOffset;
    use crate::record::{Location, Retention};
    use crate::segment::{Appended, Needle, SegmentLog};

    const INDEX_BYTES: usize = 64 << 20;

    /// A store in one dir, as a one-dir node has it.
    fn open_one(root: &Path) -> Result<Store, ShardError> {
        Store::open(
            vec![root.to_path_buf()],
            &[DirIndex(0)],
            1,
            StoreId(0),
            INDEX_BYTES,
        )
    }

    fn temp_root(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("ron-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        root
    }

    fn bodies(count: usize, seed: u8) -> Vec<Vec<u8>> {
        (0..count)
            .map(|i| vec![seed.wrapping_add(i as u8); 100 + 1000 * i])
            .collect()
    }

    fn append(log: &mut SegmentLog, bodies: &[Vec<u8>]) -> Appended {
        let needles: Vec<Needle<'_>> = bodies
            .iter()
            .map(|body| Needle {
                addr: Address::of(body),
                content_type: "text/plain",
                body,
            })
            .collect();
        log.append_durably(&needles).unwrap()
    }

    /// What the commit task does once a batch's needles are durable: index them with
    /// the checkpoint they reach.
    fn index(store: &Store, bodies: &[Vec<u8>], appended: &Appended) {
        let records: Vec<CommitRecord> = bodies
            .iter()
            .zip(&appended.places)
            .map(|(body, at)| packed_record(body, *at))
            .collect();
        store.commit_blocking(&records, Some(appended.end)).unwrap();
    }

    /// The record of `body` packed at `at`, kept.
    fn packed_record(body: &[u8], at: segment::NeedleAt) -> CommitRecord {
        CommitRecord::of(&ObjectMeta {
            tree: ron_codec::ChunkTree::of(body),
            content_type: "text/plain".into(),
            location: Location::Packed(at),
            parity: None,
        })
    }

    /// A record whose parity names two dirs, in a store of one: refused as corrupt
    /// when read (its blocks would be looked for, and repairs written, in dir 0's files).
    #[test]
    fn a_record_naming_other_dirs_than_the_store_spans_is_corrupt() {
        let root = temp_root("dirs");
        let store = open_one(&root).unwrap();
        let body = vec![7u8; 300_000];
        let meta_with = |dirs| ObjectMeta {
            tree: ron_codec::ChunkTree::of(&body),
            content_type: String::new(),
            location: Location::OwnFile,
            parity: Some(crate::record::Parity {
                params: crate::ec::EcParams::new(4, 1).unwrap(),
                dirs,
                rot: 0,
                checksums: vec![[0; 32]; 2],
            }),
        };
        let addr = Address::of(&body);
        store
            .commit_blocking(&[CommitRecord::of(&meta_with(1))], None)
            .unwrap();
        assert_eq!(store.get(&addr).unwrap(), Some(meta_with(1)));
        store
            .commit_blocking(&[CommitRecord::of(&meta_with(2))], None)
            .unwrap();
        let refused = store.get(&addr).unwrap_err();
        assert_eq!(
            refused.to_string(),
            format!("index record of {addr} is corrupt: its parity names another number of data dirs than the store spans")
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Packs `bodies` in a segment of their own, indexed, those with `dropped[i]` as
    /// evictable copies that are then evicted: their needles are dead space.
    fn segment_with_dead_needles(store: &Store, bodies: &[Vec<u8>], dropped: &[bool]) {
        let mut log = SegmentLog::open(store.segments_root(), store.segment_lanes).unwrap();
        let appended = append(&mut log, bodies);
        let records: Vec<CommitRecord> = bodies
            .iter()
            .zip(&appended.places)
            .zip(dropped)
            .map(|((body, at), &dropped)| CommitRecord {
                retention: match dropped {
                    true => Retention::Evictable,
                    false => Retention::Kept,
                },
                ..packed_record(body, *at)
            })
            .collect();
        store.commit_blocking(&records, Some(appended.end)).unwrap();
        let gone: Vec<Address> = bodies
            .iter()
            .zip(dropped)
            .filter(|(_, d)| **d)
            .map(|(b, _)| Address::of(b))
            .collect();
        assert_eq!(store.evict_blocking(&gone).unwrap().len(), gone.len());
        store.unlink_evicted_blocking(&gone).unwrap();
    }

    /// The body a packed object's record points at, read back.
    fn packed_body(store: &Store, body: &[u8]) -> (SegmentId, Vec<u8>) {
        let meta = store.get(&Address::of(body)).unwrap().expect("indexed");
        let Location::Packed(at) = meta.location else {
            panic!("packed")
        };
        let bytes = std::fs::read(store.segment_path(LaneIndex(0), at.segment)).unwrap();
        let start = at.body.0 as usize;
        (at.segment, bytes[start..start + body.len()].to_vec())
    }

    #[test]
    fn a_segment_mostly_dead_is_compacted_and_its_live_objects_move() {
        let root = temp_root("compact");
        let store = open_one(&root).unwrap();
        let packed = bodies(10, 1);
        let dropped: Vec<bool> = (0..10).map(|i| i >= 3).collect();
        segment_with_dead_needles(&store, &packed, &dropped);
        // The next start's segment: the checkpoint's, never compacted.
        let mut log = SegmentLog::open(&root, 1).unwrap();
        let later = bodies(1, 90);
        let sealed = append(&mut log, &later);
        index(&store, &later, &sealed);
        let stats = store.stats().unwrap();
        let old = segment::segment_path(&root, SegmentId(0));
        let old_len = std::fs::metadata(&old).unwrap().len();

        let mut budget = u64::MAX;
        let done = store.compact_blocking(&mut budget).unwrap();
        assert_eq!(
            (done.segments_removed, done.needles_moved, done.bytes_freed),
            (1, 3, old_len)
        );
        assert_eq!(done.bytes_moved, 100 + 1_100 + 2_100);
        assert_eq!(
            budget,
            u64::MAX
                - segment::needle_bytes(10, 100)
                - segment::needle_bytes(10, 1_100)
                - segment::needle_bytes(10, 2_100)
        );
        assert!(!old.exists(), "the dead segment is gone");
        for body in &packed[..3] {
            let (segment, read) = packed_body(&store, body);
            assert!(
                segment > sealed.end.segment,
                "moved past the checkpoint's segment"
            );
            assert!(read == *body, "moved whole");
        }
        for body in &packed[3..] {
            assert!(!store.contains(&Address::of(body)).unwrap());
        }
        assert_eq!(store.stats().unwrap(), stats, "stats unchanged");
        assert_eq!(packed_body(&store, &later[0]).0, sealed.end.segment);
        // Nothing more to do, and nothing to replay at the next open.
        assert_eq!(
            store.compact_blocking(&mut budget).unwrap(),
            Compaction::default()
        );
        drop(store);
        let store = open_one(&root).unwrap();
        assert_eq!(store.replay_blocking().unwrap().indexed, 0);
        for body in packed[..3].iter().chain(&later) {
            assert!(packed_body(&store, body).1 == *body);
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Two segments 70 % dead and the checkpoint's after them; returns their bodies.
    fn two_segments_mostly_dead(root: &Path, store: &Store) -> [Vec<Vec<u8>>; 2] {
        let dropped: Vec<bool> = (0..10).map(|i| i >= 3).collect();
        let (first, second) = (bodies(10, 1), bodies(10, 50));
        segment_with_dead_needles(store, &first, &dropped);
        segment_with_dead_needles(store, &second, &dropped);
        let mut log = SegmentLog::open(root, 1).unwrap();
        let later = bodies(1, 120);
        let sealed = append(&mut log, &later);
        index(store, &later, &sealed);
        [first, second]
    }

    /// A start whose budget left a half-dead segment goes on at the next: the removals
    /// counted since the census start from zero again only once nothing chosen was left
    /// behind. Before, the next census waited for another quarter of the sealed bytes to
    /// be removed — on a node whose removals had stopped, never.
    #[test]
    fn a_compaction_cut_short_by_its_budget_goes_on_at_the_next_start() {
        let root = temp_root("compact-budget");
        let store = open_one(&root).unwrap();
        let [first, second] = two_segments_mostly_dead(&root, &store);
        let one_segment: u64 = first[..3]
            .iter()
            .map(|b| segment::needle_bytes(10, b.len() as u64))
            .sum();
        let mut budget = one_segment;
        let done = store.compact_blocking(&mut budget).unwrap();
        assert_eq!((done.segments_removed, done.needles_moved), (1, 3));
        assert_ne!(
            store.index().dead_since_census().unwrap(),
            Some(0),
            "a segment left for the budget: the removals stay counted"
        );
        let mut budget = one_segment;
        let done = store.compact_blocking(&mut budget).unwrap();
        assert_eq!(
            (done.segments_removed, done.needles_moved),
            (1, 3),
            "the segment the first start's budget left"
        );
        for id in [SegmentId(0), SegmentId(1)] {
            assert!(!segment::segment_path(&root, id).exists());
        }
        for body in first[..3].iter().chain(&second[..3]) {
            assert!(packed_body(&store, body).1 == *body);
        }
        assert_eq!(
            store.index().dead_since_census().unwrap(),
            Some(0),
            "done: the census waits for removals again"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// On a disk with no room to move live needles, a segment with nothing live is
    /// still removed (before, the first move's ENOSPC ended the compaction before any
    /// segment went, at every start), and one whose live needles could not move waits
    /// for a start with room.
    #[test]
    fn a_full_disk_still_frees_segments_with_nothing_live() {
        let root = temp_root("compact-full");
        let store = open_one(&root).unwrap();
        let dead = bodies(4, 200);
        segment_with_dead_needles(&store, &dead, &[true; 4]);
        let half: Vec<Vec<u8>> = bodies(10, 1);
        let dropped: Vec<bool> = (0..10).map(|i| i >= 3).collect();
        segment_with_dead_needles(&store, &half, &dropped);
        let mut log = SegmentLog::open(&root, 1).unwrap();
        let later = bodies(1, 120);
        let sealed = append(&mut log, &later);
        index(&store, &later, &sealed);

        let mut budget = u64::MAX;
        let done = store.compact(&mut budget, &|_| false).unwrap();
        assert_eq!(
            (
                done.segments_removed,
                done.needles_moved,
                done.kept_for_room.clone()
            ),
            (1, 0, vec![SegmentId(1)])
        );
        assert!(!segment::segment_path(&root, SegmentId(0)).exists());
        assert!(segment::segment_path(&root, SegmentId(1)).exists());
        let done = store.compact(&mut budget, &|_| true).unwrap();
        assert_eq!(
            (done.segments_removed, done.needles_moved),
            (1, 3),
            "room again: the segment left goes"
        );
        for body in &half[..3] {
            assert!(packed_body(&store, body).1 == *body);
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Replicas a crash left apart, one pointing an object at its needle in segment 0 and
    /// one at its needle in segment 1, both segments mostly dead: neither goes before
    /// the object has moved, whatever the room. Before, the segment only the second
    /// replica pointed into counted as holding nothing live and was unlinked first.
    #[test]
    fn a_segment_any_replica_points_into_stays_until_its_object_moves() {
        let root = temp_root("compact-replicas-apart");
        let roots: Vec<PathBuf> = (0..2).map(|d| root.join(format!("d{d}"))).collect();
        let store = Store::open(
            roots.clone(),
            &[DirIndex(0), DirIndex(1)],
            1,
            StoreId(0),
            INDEX_BYTES,
        )
        .unwrap();
        let x = vec![7u8; 500];
        let first: Vec<Vec<u8>> = [x.clone()].into_iter().chain(bodies(3, 100)).collect();
        segment_with_dead_needles(&store, &first, &[false, true, true, true]);
        let mut log = SegmentLog::open(store.segments_root(), 1).unwrap();
        let dead = bodies(3, 150);
        let second: Vec<Vec<u8>> = [x.clone()].into_iter().chain(dead.clone()).collect();
        let appended = append(&mut log, &second);
        let dead_records: Vec<CommitRecord> = dead
            .iter()
            .zip(&appended.places[1..])
            .map(|(body, at)| CommitRecord {
                retention: Retention::Evictable,
                ..packed_record(body, *at)
            })
            .collect();
        store
            .commit_blocking(&dead_records, Some(appended.end))
            .unwrap();
        let gone: Vec<Address> = dead.iter().map(|b| Address::of(b)).collect();
        store.evict_blocking(&gone).unwrap();
        store.unlink_evicted_blocking(&gone).unwrap();
        // A crash after the second replica's commit of x's new needle only.
        store.replicas[1]
            .commit(&[packed_record(&x, appended.places[0])], None)
            .unwrap();
        drop(log);
        let mut log = SegmentLog::open(store.segments_root(), 1).unwrap();
        let later = bodies(1, 120);
        let sealed = append(&mut log, &later);
        index(&store, &later, &sealed);

        let mut budget = u64::MAX;
        let done = store.compact(&mut budget, &|_| false).unwrap();
        assert_eq!(done.segments_removed, 0);
        assert_eq!(done.kept_for_room, [SegmentId(0), SegmentId(1)]);
        for id in [SegmentId(0), SegmentId(1)] {
            assert!(segment::segment_path(store.segments_root(), id).exists());
        }
        let done = store.compact(&mut budget, &|_| true).unwrap();
        assert_eq!(done.segments_removed, 2);
        assert!(packed_body(&store, &x).1 == x);
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Makes the kept packed objects `bodies` evictable and evicts them.
    fn remove_packed(store: &Store, bodies: &[Vec<u8>]) {
        let addrs: Vec<Address> = bodies.iter().map(|b| Address::of(b)).collect();
        let records: Vec<CommitRecord> = addrs
            .iter()
            .map(|addr| CommitRecord {
                retention: Retention::Evictable,
                ..CommitRecord::of(&store.get(addr).unwrap().unwrap())
            })
            .collect();
        store.commit_blocking(&records, None).unwrap();
        assert_eq!(store.evict_blocking(&addrs).unwrap().len(), addrs.len());
        store.unlink_evicted_blocking(&addrs).unwrap();
    }

    /// The census (a walk of every record) runs only once enough packed needles were
    /// removed since the last one: a quarter of the sealed segments' bytes here. A small
    /// segment three quarters dead waits while the removals are few against a large
    /// live one, and goes once more are removed.
    #[test]
    fn a_census_waits_for_enough_removals_since_the_last() {
        let root = temp_root("census");
        let store = open_one(&root).unwrap();
        let small = bodies(4, 1);
        segment_with_dead_needles(&store, &small, &[false; 4]);
        let large: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 60_000]).collect();
        segment_with_dead_needles(&store, &large, &[false; 10]);
        let mut log = SegmentLog::open(&root, 1).unwrap();
        let later = bodies(1, 90);
        let sealed = append(&mut log, &later);
        index(&store, &later, &sealed);
        let mut budget = u64::MAX;
        assert_eq!(
            store.compact_blocking(&mut budget).unwrap(),
            Compaction::default()
        );

        remove_packed(&store, &small[1..]);
        let done = store.compact_blocking(&mut budget).unwrap();
        assert_eq!(
            done,
            Compaction::default(),
            "6 KB removed of 620 KB sealed: no census"
        );
        assert!(segment::segment_path(&root, SegmentId(0)).exists());
        remove_packed(&store, &large[..3]);
        let done = store.compact_blocking(&mut budget).unwrap();
        assert_eq!(
            (done.segments_removed, done.needles_moved),
            (1, 1),
            "186 KB removed"
        );
        assert!(!segment::segment_path(&root, SegmentId(0)).exists());
        assert!(
            segment::segment_path(&root, SegmentId(1)).exists(),
            "30 % dead: kept"
        );
        assert!(packed_body(&store, &small[0]).1 == small[0]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// With parity, every lane of a compacted segment goes, and the moved needles are in
    /// every lane of the new one.
    #[test]
    fn compaction_moves_needles_into_every_lane_and_removes_every_lane_of_the_old() {
        let root = temp_root("compact-lanes");
        let store = Store::open(
            vec![root.clone()],
            &[DirIndex(0)],
            2,
            StoreId(0),
            INDEX_BYTES,
        )
        .unwrap();
        let packed = bodies(4, 30);
        segment_with_dead_needles(&store, &packed, &[false, true, true, true]);
        let mut log = SegmentLog::open(&root, 2).unwrap();
        let later = bodies(1, 91);
        let sealed = append(&mut log, &later);
        index(&store, &later, &sealed);
        let mut budget = u64::MAX;
        let done = store.compact_blocking(&mut budget).unwrap();
        assert_eq!((done.segments_removed, done.needles_moved), (1, 1));
        for lane in [LaneIndex(0), LaneIndex(1)] {
            assert!(!store.segment_path(lane, SegmentId(0)).exists(), "{lane:?}");
        }
        let meta = store.get(&Address::of(&packed[0])).unwrap().unwrap();
        let Location::Packed(at) = meta.location else {
            panic!("packed")
        };
        for lane in [LaneIndex(0), LaneIndex(1)] {
            let bytes = std::fs::read(store.segment_path(lane, at.segment)).unwrap();
            let start = at.body.0 as usize;
            assert!(
                bytes[start..start + packed[0].len()] == packed[0][..],
                "{lane:?}"
            );
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A crash between two lanes' unlinks of a compacted segment: the next start removes
    /// what is left of it. Lane 0 goes last, so a crash leaves its file, found and
    /// removed again; and a file of another lane whose lane 0 is gone (what the old
    /// order left, which no start looked at) goes too — unless a record points into it
    /// (the surviving copy of a lost lane 0).
    #[test]
    fn lanes_left_by_a_crash_between_two_unlinks_are_removed_at_the_next_start() {
        let root = temp_root("compact-lane-crash");
        let open = || {
            Store::open(
                vec![root.clone()],
                &[DirIndex(0)],
                2,
                StoreId(0),
                INDEX_BYTES,
            )
            .unwrap()
        };
        let store = open();
        let dead = bodies(4, 40);
        segment_with_dead_needles(&store, &dead, &[true; 4]);
        let live = bodies(2, 41);
        segment_with_dead_needles(&store, &live, &[false; 2]);
        let mut log = SegmentLog::open(&root, 2).unwrap();
        let later = bodies(1, 92);
        let sealed = append(&mut log, &later);
        index(&store, &later, &sealed);
        // What the old order's crash left of the dead segment 0: its lane 1 alone. And
        // a lost lane 0 of the live segment 1, whose lane 1 is its copy.
        std::fs::remove_file(store.segment_path(LaneIndex(0), SegmentId(0))).unwrap();
        std::fs::remove_file(store.segment_path(LaneIndex(0), SegmentId(1))).unwrap();
        drop(store);
        let store = open();
        let mut budget = u64::MAX;
        let done = store.compact_blocking(&mut budget).unwrap();
        assert_eq!(done.lane_orphans_removed, 1, "{done:?}");
        assert!(!store.segment_path(LaneIndex(1), SegmentId(0)).exists());
        assert!(
            store.segment_path(LaneIndex(1), SegmentId(1)).exists(),
            "a live copy"
        );
        let lane1 = std::fs::read(store.segment_path(LaneIndex(1), SegmentId(1))).unwrap();
        for body in &live {
            let meta = store
                .get(&Address::of(body))
                .unwrap()
                .expect("still indexed");
            let Location::Packed(at) = meta.location else {
                panic!("packed")
            };
            let start = at.body.0 as usize;
            assert!(
                lane1[start..start + body.len()] == body[..],
                "its copy in lane 1"
            );
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn compaction_keeps_a_segment_with_a_rotten_live_needle_and_one_past_its_budget() {
        let root = temp_root("compact-rot");
        let store = open_one(&root).unwrap();
        let rotten = bodies(4, 1);
        segment_with_dead_needles(&store, &rotten, &[false, true, true, true]);
        let path = segment::segment_path(&root, SegmentId(0));
        let meta = store.get(&Address::of(&rotten[0])).unwrap().unwrap();
        let Location::Packed(at) = meta.location else {
            panic!()
        };
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at.body.0 as usize + 5] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let costly = bodies(4, 20);
        segment_with_dead_needles(&store, &costly, &[false, false, true, true]);
        let mut log = SegmentLog::open(&root, 1).unwrap();
        let later = bodies(1, 90);
        let sealed = append(&mut log, &later);
        index(&store, &later, &sealed);

        // Segment 1's two live needles (100 and 1,100 bytes) cost more than the budget.
        let mut budget = 1_000;
        let done = store.compact_blocking(&mut budget).unwrap();
        assert_eq!(done.kept_for_rot, [SegmentId(0)]);
        assert_eq!((done.segments_removed, done.needles_moved), (0, 0));
        assert!(path.exists() && segment::segment_path(&root, SegmentId(1)).exists());
        assert_eq!(packed_body(&store, &costly[1]).0, SegmentId(1));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn acknowledged_needles_past_the_checkpoint_are_indexed_at_the_next_open() {
        let root = temp_root("replay");
        let store = open_one(&root).unwrap();
        assert_eq!(store.checkpoint().unwrap(), Checkpoint::START);
        let mut log = SegmentLog::open(&root, 1).unwrap();
        let (indexed, unindexed) = (bodies(3, 1), bodies(2, 50));
        let first = append(&mut log, &indexed);
        index(&store, &indexed, &first);
        // Answered once durable in the segment; the crash comes before its index commit.
        let second = append(&mut log, &unindexed);
        assert!(!store.contains(&Address::of(&unindexed[0])).unwrap());
        drop((store, log));

        let store = open_one(&root).unwrap();
        let replay = store.replay_blocking().unwrap();
        assert_eq!((replay.indexed, replay.torn.len()), (2, 0));
        for (body, at) in unindexed.iter().zip(&second.places) {
            let meta = store.get(&Address::of(body)).unwrap().expect("replayed");
            assert_eq!(meta.location, Location::Packed(*at));
            assert_eq!(
                (meta.len(), meta.content_type.as_str()),
                (body.len() as u64, "text/plain")
            );
        }
        assert_eq!(store.checkpoint().unwrap(), second.end);
        store.commit_blocking(&[], Some(first.end)).unwrap();
        assert_eq!(store.checkpoint().unwrap(), second.end, "never backwards");
        assert_eq!(store.stats().unwrap().objects, 5);
        assert_eq!(store.replay_blocking().unwrap().indexed, 0, "nothing twice");
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A checkpoint rotted forward (its segment's high byte flipped) skipped the replay:
    /// the acknowledged needles past the real one were never indexed (and compaction took
    /// the segment being written for sealed). It now fails its check: every needle is
    /// read again, each indexed once.
    #[test]
    fn a_rotted_checkpoint_replays_every_segment() {
        let root = temp_root("rotted-checkpoint");
        let store = open_one(&root).unwrap();
        let mut log = SegmentLog::open(&root, 1).unwrap();
        let (indexed, unindexed) = (bodies(3, 1), bodies(2, 50));
        let first = append(&mut log, &indexed);
        index(&store, &indexed, &first);
        let second = append(&mut log, &unindexed);
        store.replicas[0].rot_checkpoint_for_tests(0);
        drop((store, log));

        let store = open_one(&root).unwrap();
        assert_eq!(store.checkpoint().unwrap(), Checkpoint::START);
        let replay = store.replay_blocking().unwrap();
        assert_eq!(replay.indexed, 2, "only the unindexed, once");
        assert!(unindexed
            .iter()
            .all(|body| store.contains(&Address::of(body)).unwrap()));
        assert_eq!(store.checkpoint().unwrap(), second.end);
        assert_eq!(store.stats().unwrap().objects, 5);
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A replay commits every batch of needles found with the checkpoint past them: its
    /// memory is one batch, however many needles a replay from the first one reads, and
    /// a crash part way keeps what the batches before indexed.
    #[test]
    fn a_replay_indexes_in_batches_each_with_its_checkpoint() {
        let root = temp_root("replay-batches");
        let store = open_one(&root).unwrap();
        let mut log = SegmentLog::open(&root, 1).unwrap();
        let unindexed = bodies(10, 1);
        let written = append(&mut log, &unindexed);
        let commits = store.index().commits().unwrap();
        let replay = store.replay_in_batches(3).unwrap();
        assert_eq!(replay.indexed, 10);
        assert_eq!(
            store.index().commits().unwrap() - commits,
            4,
            "3 + 3 + 3 + 1, one transaction each"
        );
        assert_eq!(store.checkpoint().unwrap(), written.end);
        assert_eq!(store.stats().unwrap().objects, 10);
        assert_eq!(store.replay_in_batches(3).unwrap().indexed, 0);
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A checkpoint rotted in one index replica is taken from another: the replay starts
    /// where the index stands, and a packed object removed since its needle was written
    /// stays removed. Before, the first replica's rotted checkpoint replayed every
    /// segment, and the removed object came back, kept.
    #[test]
    fn a_checkpoint_rotted_in_one_replica_is_taken_from_another() {
        let root = temp_root("rotted-checkpoint-replica");
        let roots: Vec<PathBuf> = (0..2).map(|d| root.join(format!("d{d}"))).collect();
        let open = || {
            Store::open(
                roots.clone(),
                &[DirIndex(0), DirIndex(1)],
                1,
                StoreId(0),
                INDEX_BYTES,
            )
            .unwrap()
        };
        let store = open();
        let mut log = SegmentLog::open(store.segments_root(), 1).unwrap();
        let packed = bodies(4, 1);
        let written = append(&mut log, &packed);
        index(&store, &packed, &written);
        remove_packed(&store, &packed[..1]);
        store.replicas[0].rot_checkpoint_for_tests(0);
        drop((store, log));

        let store = open();
        assert_eq!(store.checkpoint().unwrap(), written.end);
        assert_eq!(store.replay_blocking().unwrap().indexed, 0);
        assert!(!store.contains(&Address::of(&packed[0])).unwrap());
        assert!(packed[1..]
            .iter()
            .all(|body| store.contains(&Address::of(body)).unwrap()));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_checkpoint_written_before_its_check_is_read_and_one_rotted_is_not() {
        let at = Checkpoint {
            segment: SegmentId(7),
            end: ByteOffset(4096),
        };
        let encoded = at.encode();
        assert_eq!(Checkpoint::decode(&encoded), Some(at));
        assert_eq!(
            Checkpoint::decode(&encoded[..12]),
            Some(at),
            "before the check"
        );
        for byte in 0..encoded.len() {
            let mut rotted = encoded;
            rotted[byte] ^= 0x10;
            assert_eq!(Checkpoint::decode(&rotted), None, "byte {byte}");
        }
        assert_eq!(Checkpoint::decode(&encoded[..15]), None);
    }

    #[test]
    fn a_damaged_needle_is_passed_over_and_only_a_torn_tail_ends_its_segments_replay() {
        let root = temp_root("torn");
        let store = open_one(&root).unwrap();
        let mut log = SegmentLog::open(&root, 1).unwrap();
        let acknowledged = bodies(5, 7);
        let first = append(&mut log, &acknowledged);
        // Rot in an acknowledged batch: a flipped byte in the second body, and the fourth
        // needle's magic flipped (its head no longer reads as one).
        let path = segment::segment_path(&root, first.end.segment);
        let head_at = |i: usize| first.places[i].body.0 - NEEDLE_HEAD_TEXT_PLAIN;
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[first.places[1].body.0 as usize + 10] ^= 1;
        bytes[head_at(3) as usize] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        // The next start's segment, and a half-written needle after its one whole one.
        let later = bodies(1, 90);
        let mut log = SegmentLog::open(&root, 1).unwrap();
        let second = append(&mut log, &later);
        let later_path = segment::segment_path(&root, second.end.segment);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&later_path)
            .unwrap();
        std::io::Write::write_all(&mut file, b"RONn\0\0").unwrap();
        drop((store, log, file));

        let store = open_one(&root).unwrap();
        let replay = store.replay_blocking().unwrap();
        assert_eq!(replay.indexed, 4);
        let indexed = |body: &Vec<u8>| store.contains(&Address::of(body)).unwrap();
        let held: Vec<bool> = acknowledged.iter().map(indexed).collect();
        assert_eq!(held, [true, false, true, false, true]);
        assert!(indexed(&later[0]));
        assert_eq!(
            replay.skipped,
            vec![
                Skipped {
                    segment: first.end.segment,
                    at: ByteOffset(head_at(1)),
                    bytes: head_at(2) - head_at(1),
                    claimed: Some(Address::of(&acknowledged[1])),
                },
                Skipped {
                    segment: first.end.segment,
                    at: ByteOffset(head_at(3)),
                    bytes: head_at(4) - head_at(3),
                    claimed: None,
                },
            ]
        );
        assert_eq!(replay.torn, vec![(second.end.segment, second.end.end)]);
        assert_eq!(store.checkpoint().unwrap(), second.end);
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Head bytes of a needle whose content type is `text/plain`.
    const NEEDLE_HEAD_TEXT_PLAIN: u64 = segment::NEEDLE_HEAD_BYTES_MIN + 10;

    #[test]
    fn a_store_whose_segments_predate_checkpoints_starts_past_them() {
        let root = temp_root("upgrade");
        let store = open_one(&root).unwrap();
        let packed = bodies(2, 3);
        let appended = append(&mut SegmentLog::open(&root, 1).unwrap(), &packed);
        index(&store, &packed, &appended);
        // What a version before checkpoints left: the records, and no checkpoint.
        store.replicas[0].forget_checkpoint_for_tests();
        drop(store);
        let store = open_one(&root).unwrap();
        assert_eq!(store.checkpoint().unwrap(), appended.end);
        assert_eq!(store.replay_blocking().unwrap().indexed, 0);
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// An index lost (or moved aside) beside its segments: the new index replays every
    /// needle, and compaction keeps every segment. Before, the new index started past
    /// the segments, indexed none, and compaction unlinked every sealed one as dead:
    /// every packed object gone.
    #[test]
    fn a_lost_index_replays_every_segment_and_compaction_keeps_them() {
        let root = temp_root("lost-index");
        let store = open_one(&root).unwrap();
        let first = bodies(3, 1);
        let sealed = append(&mut SegmentLog::open(&root, 1).unwrap(), &first);
        index(&store, &first, &sealed);
        let later = bodies(2, 50);
        let last = append(&mut SegmentLog::open(&root, 1).unwrap(), &later);
        index(&store, &later, &last);
        assert!(last.end.segment > sealed.end.segment, "two segments");
        drop(store);
        std::fs::remove_dir_all(root.join("index")).unwrap();

        let store = open_one(&root).unwrap();
        assert_eq!(store.replay_blocking().unwrap().indexed, 5);
        let mut budget = u64::MAX;
        let done = store.compact_blocking(&mut budget).unwrap();
        assert_eq!(done.segments_removed, 0);
        assert!(segment::segment_path(&root, sealed.end.segment).exists());
        for body in first.iter().chain(&later) {
            assert!(packed_body(&store, body).1 == *body);
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn checkpoints_round_trip_and_odd_lengths_are_refused() {
        let at = Checkpoint {
            segment: SegmentId(0xdead_beef),
            end: ByteOffset(u64::MAX - 5),
        };
        assert_eq!(Checkpoint::decode(&at.encode()), Some(at));
        assert_eq!(Checkpoint::decode(&at.encode()[..11]), None);
        assert_eq!(Checkpoint::decode(&[0; 13]), None);
    }

    #[test]
    fn the_scrubber_walks_addresses_in_key_order_and_its_position_survives_a_reopen() {
        let root = temp_root("scrub");
        let store = open_one(&root).unwrap();
        let metas: Vec<ObjectMeta> = (0..5u8)
            .map(|i| ObjectMeta {
                tree: ron_codec::ChunkTree::of(&[i; 100]),
                content_type: String::new(),
                location: Location::OwnFile,
                parity: None,
            })
            .collect();
        let records: Vec<CommitRecord> = metas.iter().map(CommitRecord::of).collect();
        store.commit_blocking(&records, None).unwrap();
        let mut sorted: Vec<Address> = metas.iter().map(ObjectMeta::addr).collect();
        sorted.sort();
        assert_eq!(store.addresses_after(None, 3).unwrap(), sorted[..3]);
        assert_eq!(
            store.addresses_after(Some(&sorted[2]), 10).unwrap(),
            sorted[3..]
        );
        assert!(store
            .addresses_after(Some(&sorted[4]), 10)
            .unwrap()
            .is_empty());

        assert_eq!(store.scrub_position().unwrap(), ScrubPosition::default());
        let at = ScrubPosition {
            passes: 7,
            objects: 3,
            after: Some(sorted[2]),
        };
        store.save_scrub_position_blocking(at).unwrap();
        drop(store);
        let store = open_one(&root).unwrap();
        assert_eq!(store.scrub_position().unwrap(), at);
        assert_eq!(ScrubPosition::decode(&at.encode()[..20]), None);
        // A replacement dir taken: the pass starts again, its count kept.
        store.restart_scrub_pass_blocking(7).unwrap();
        assert_eq!(
            store.scrub_position().unwrap(),
            ScrubPosition {
                passes: 7,
                objects: 0,
                after: None
            }
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    /// One index replica that LMDB refuses (its meta pages zeroed: "not an LMDB file")
    /// is moved aside and rebuilt from the others; before, the store, and the node,
    /// refused to open. Every replica damaged: refused.
    #[test]
    fn a_damaged_index_replica_is_moved_aside_and_rebuilt_from_the_others() {
        let root = temp_root("damaged-replica");
        let roots: Vec<PathBuf> = (0..2).map(|d| root.join(format!("d{d}"))).collect();
        let replicas = index_replica_dirs(StoreId(0), 2, 1);
        let open = || Store::open(roots.clone(), &replicas, 1, StoreId(0), INDEX_BYTES);
        let records: Vec<CommitRecord> = (0..3u8)
            .map(|i| {
                CommitRecord::of(&ObjectMeta {
                    tree: ron_codec::ChunkTree::of(&vec![i; 2000 + usize::from(i)]),
                    content_type: String::new(),
                    location: Location::OwnFile,
                    parity: None,
                })
            })
            .collect();
        open().unwrap().commit_blocking(&records, None).unwrap();
        let zero_meta_pages = |dir: &Path| {
            use std::os::unix::fs::FileExt;
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("index").join("data.mdb"))
                .unwrap();
            file.write_all_at(&[0u8; 8192], 0).unwrap();
        };
        zero_meta_pages(&roots[0]);
        let store = open().expect("opened from the other replica");
        assert!(records.iter().all(|r| store.contains(&r.addr).unwrap()));
        let aside = std::fs::read_dir(&roots[0])
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("index.damaged-")
            })
            .count();
        assert_eq!(aside, 1, "the damaged replica kept aside");
        drop(store);
        roots.iter().for_each(|r| zero_meta_pages(r));
        let refused = open().unwrap_err();
        assert!(refused.is_damaged_index(), "{refused}");
    }

    /// A truncated `data.mdb` (a partial copy or restore): LMDB maps it and read past
    /// its end, and the process died of SIGBUS at open. Now refused with its lengths;
    /// beside another replica, moved aside and rebuilt.
    #[test]
    fn a_truncated_index_is_refused_by_name_and_rebuilt_beside_another_replica() {
        let root = temp_root("truncated-index");
        let roots: Vec<PathBuf> = (0..2).map(|d| root.join(format!("d{d}"))).collect();
        let records: Vec<CommitRecord> = (0..200u32)
            .map(|i| {
                CommitRecord::of(&ObjectMeta {
                    tree: ron_codec::ChunkTree::of(&i.to_be_bytes()),
                    content_type: "application/x-a-type-long-enough-to-fill-pages".into(),
                    location: Location::OwnFile,
                    parity: None,
                })
            })
            .collect();
        let truncate = |root: &Path| {
            let data = root.join("index").join("data.mdb");
            let file = std::fs::OpenOptions::new().write(true).open(data).unwrap();
            file.set_len(3 * 4096).unwrap();
        };
        let alone = || {
            Store::open(
                roots[..1].to_vec(),
                &[DirIndex(0)],
                1,
                StoreId(0),
                INDEX_BYTES,
            )
        };
        alone().unwrap().commit_blocking(&records, None).unwrap();
        truncate(&roots[0]);
        let refused = alone().unwrap_err().to_string();
        assert!(
            refused.contains("shorter than") && refused.contains("truncated"),
            "{refused}"
        );
        std::fs::remove_dir_all(&root).unwrap();
        let both = || {
            Store::open(
                roots.clone(),
                &[DirIndex(0), DirIndex(1)],
                1,
                StoreId(0),
                INDEX_BYTES,
            )
        };
        both().unwrap().commit_blocking(&records, None).unwrap();
        truncate(&roots[0]);
        let store = both().expect("rebuilt from the other replica");
        assert!(records.iter().all(|r| store.contains(&r.addr).unwrap()));
    }

    #[test]
    fn replicas_a_crash_left_apart_or_a_replaced_dir_lost_are_merged_at_open() {
        let root = temp_root("replicas");
        let roots: Vec<PathBuf> = (0..3).map(|d| root.join(format!("d{d}"))).collect();
        let replicas = index_replica_dirs(StoreId(1), 3, 2);
        assert_eq!(replicas, vec![DirIndex(1), DirIndex(2), DirIndex(0)]);
        assert_eq!(index_replica_dirs(StoreId(5), 1, 2), vec![DirIndex(0)]);
        assert_eq!(
            index_replica_dirs(StoreId(5), 4, 1),
            vec![DirIndex(1), DirIndex(2)]
        );
        let open = || Store::open(roots.clone(), &replicas, 1, StoreId(1), INDEX_BYTES).unwrap();
        let records: Vec<CommitRecord> = (0..4u8)
            .map(|i| {
                CommitRecord::of(&ObjectMeta {
                    tree: ron_codec::ChunkTree::of(&vec![i; 1000 * (usize::from(i) + 1)]),
                    content_type: String::new(),
                    location: Location::OwnFile,
                    parity: None,
                })
            })
            .collect();
        let store = open();
        store.commit_blocking(&records[..2], None).unwrap();
        // A crash after the first replica's commit of the next batch.
        store.index().commit(&records[2..3], None).unwrap();
        drop(store);
        let store = open();
        for replica in store.replicas.iter() {
            assert_eq!(replica.commits().unwrap(), 2);
            let rtxn = replica.env.read_txn().unwrap();
            assert_eq!(
                replica.db.len(&rtxn).unwrap(),
                3,
                "{}",
                replica.path.display()
            );
        }
        assert_eq!(
            store.stats().unwrap(),
            StoreStats {
                objects: 3,
                bytes: 6000
            }
        );
        store.commit_blocking(&records[3..], None).unwrap();
        drop(store);
        // The serving replica's disk replaced: rebuilt from the others.
        std::fs::remove_dir_all(&roots[1]).unwrap();
        let store = open();
        assert!(records.iter().all(|r| store.contains(&r.addr).unwrap()));
        assert_eq!(store.stats().unwrap().objects, 4);
        assert!(roots[1].join("objects").join("ff").is_dir());
        drop(store);
        let _ = std::fs::remove_dir_all(&root);
    }

    /// Own-file records of `count` objects (`len` bytes each, distinct), with a file
    /// of that many bytes at each one's path in dir 0.
    fn own_files(store: &Store, count: u8, len: usize, retention: Retention) -> Vec<CommitRecord> {
        (0..count)
            .map(|i| {
                let body = vec![i; len];
                let meta = ObjectMeta {
                    tree: ron_codec::ChunkTree::of(&body),
                    content_type: String::new(),
                    location: Location::OwnFile,
                    parity: None,
                };
                std::fs::write(store.object_path(&meta.addr(), DirIndex(0)), &body).unwrap();
                CommitRecord {
                    retention,
                    ..CommitRecord::of(&meta)
                }
            })
            .collect()
    }

    #[test]
    #[should_panic(expected = "decodes to that address")]
    fn a_record_filed_under_another_address_is_never_committed() {
        let root = temp_root("misfiled");
        let store = open_one(&root).unwrap();
        let records = own_files(&store, 2, 200_000, Retention::Kept);
        let misfiled = CommitRecord {
            addr: records[1].addr,
            ..records[0].clone()
        };
        let _ = store.commit_blocking(&[misfiled], None);
    }

    #[test]
    fn fetched_objects_are_evicted_oldest_first_and_an_upload_makes_one_kept() {
        let root = temp_root("evict");
        let store = open_one(&root).unwrap();
        let fetched = own_files(&store, 4, 1000, Retention::Evictable);
        for record in &fetched {
            store
                .commit_blocking(std::slice::from_ref(record), None)
                .unwrap();
        }
        let uploaded = own_files(&store, 1, 3000, Retention::Kept);
        store.commit_blocking(&uploaded, None).unwrap();
        let counted = |objects, bytes| StoreStats { objects, bytes };
        assert_eq!(store.evictable_stats().unwrap(), counted(4, 4000));
        assert_eq!(store.stats().unwrap(), counted(5, 7000));
        let oldest: Vec<Address> = store
            .oldest_evictable(3)
            .unwrap()
            .iter()
            .map(|e| e.addr)
            .collect();
        let order: Vec<Address> = fetched.iter().map(|r| r.addr).collect();
        assert_eq!(oldest, order[..3], "in the order they were stored");
        let mut by_addr = order.clone();
        by_addr.sort_unstable();
        assert_eq!(store.evictable_after(None, 3).unwrap(), by_addr[..3]);
        assert_eq!(
            store.evictable_after(Some(&by_addr[1]), 10).unwrap(),
            by_addr[2..],
            "the rescue walk: evictable copies only, in address order"
        );

        // An upload of the oldest fetched copy keeps it.
        store
            .commit_blocking(
                &[CommitRecord {
                    retention: Retention::Kept,
                    ..fetched[0].clone()
                }],
                None,
            )
            .unwrap();
        assert!(!store.is_evictable(&order[0]).unwrap());
        assert_eq!(store.evictable_stats().unwrap(), counted(3, 3000));

        let evicted = store.evict_blocking(&order[..2]).unwrap();
        assert_eq!(
            evicted.iter().map(|e| e.addr).collect::<Vec<_>>(),
            order[1..2],
            "kept: not evicted"
        );
        assert_eq!(evicted[0].len, 1000);
        assert!(!store.contains(&order[1]).unwrap() && store.contains(&order[0]).unwrap());
        assert!(
            store.object_path(&order[1], DirIndex(0)).exists(),
            "files outlive the record until unlinked"
        );
        store.unlink_evicted_blocking(&[order[1]]).unwrap();
        assert!(!store.object_path(&order[1], DirIndex(0)).exists());
        assert!(store.object_path(&order[0], DirIndex(0)).exists());
        assert_eq!(store.evictable_stats().unwrap(), counted(2, 2000));
        assert_eq!(store.stats().unwrap(), counted(4, 6000));
        assert!(store.index().evicted_markers().unwrap().is_empty());

        // Fetched again after its eviction: evictable again, the newest.
        store.commit_blocking(&fetched[1..2], None).unwrap();
        let oldest: Vec<Address> = store
            .oldest_evictable(10)
            .unwrap()
            .iter()
            .map(|e| e.addr)
            .collect();
        assert_eq!(oldest, vec![order[2], order[3], order[1]]);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn an_eviction_a_crash_interrupted_is_finished_at_open() {
        let root = temp_root("evict-crash");
        let store = open_one(&root).unwrap();
        let fetched = own_files(&store, 3, 2000, Retention::Evictable);
        store.commit_blocking(&fetched, None).unwrap();
        let addrs: Vec<Address> = fetched.iter().map(|r| r.addr).collect();
        // The crash: records removed, files not yet unlinked.
        assert_eq!(store.evict_blocking(&addrs[..2]).unwrap().len(), 2);
        // One of them fetched and stored again before the crash.
        store.commit_blocking(&fetched[1..2], None).unwrap();
        drop(store);
        let store = open_one(&root).unwrap();
        assert!(
            !store.object_path(&addrs[0], DirIndex(0)).exists(),
            "unlinked at open"
        );
        assert!(
            store.object_path(&addrs[1], DirIndex(0)).exists(),
            "stored again: kept"
        );
        assert!(store.contains(&addrs[1]).unwrap() && !store.contains(&addrs[0]).unwrap());
        assert!(store.index().evicted_markers().unwrap().is_empty());
        assert_eq!(store.evictable_stats().unwrap().objects, 2);
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A keep (an upload of a fetched copy) that reached one replica before a crash:
    /// kept in every replica after the merge at open. Before, the merge copied only
    /// missing records, so the other replica kept the copy evictable — and once the
    /// first replica's dir was replaced, the acknowledged upload was evicted.
    #[test]
    fn a_keep_only_one_replica_committed_wins_at_open() {
        let root = temp_root("keep-replicas");
        let roots: Vec<PathBuf> = (0..2).map(|d| root.join(format!("d{d}"))).collect();
        let replicas = index_replica_dirs(StoreId(0), 2, 1);
        let open = || Store::open(roots.clone(), &replicas, 1, StoreId(0), INDEX_BYTES).unwrap();
        let store = open();
        let fetched = own_files(&store, 2, 500, Retention::Evictable);
        store.commit_blocking(&fetched, None).unwrap();
        let kept = CommitRecord {
            retention: Retention::Kept,
            ..fetched[0].clone()
        };
        store.index().commit(&[kept], None).unwrap();
        drop(store);
        let store = open();
        for replica in store.replicas.iter() {
            let rtxn = replica.env.read_txn().unwrap();
            assert!(
                !replica.is_evictable_in(&rtxn, &fetched[0].addr).unwrap(),
                "{}",
                replica.path.display()
            );
            assert!(replica.is_evictable_in(&rtxn, &fetched[1].addr).unwrap());
        }
        assert_eq!(
            store.evictable_stats().unwrap(),
            StoreStats {
                objects: 1,
                bytes: 500
            }
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn an_eviction_only_one_replica_committed_is_undone_at_open() {
        let root = temp_root("evict-replicas");
        let roots: Vec<PathBuf> = (0..2).map(|d| root.join(format!("d{d}"))).collect();
        let replicas = index_replica_dirs(StoreId(0), 2, 1);
        let open = || Store::open(roots.clone(), &replicas, 1, StoreId(0), INDEX_BYTES).unwrap();
        let store = open();
        let fetched = own_files(&store, 2, 500, Retention::Evictable);
        store.commit_blocking(&fetched, None).unwrap();
        // A crash after the first replica's eviction commit: no file was unlinked yet.
        store
            .index()
            .evict(&[fetched[0].addr], EvictRule::Choose)
            .unwrap();
        drop(store);
        let store = open();
        for replica in store.replicas.iter() {
            let rtxn = replica.env.read_txn().unwrap();
            assert_eq!(
                replica.db.len(&rtxn).unwrap(),
                2,
                "{}",
                replica.path.display()
            );
            assert!(replica.is_evictable_in(&rtxn, &fetched[0].addr).unwrap());
        }
        assert!(store.object_path(&fetched[0].addr, DirIndex(0)).exists());
        assert_eq!(
            store.evictable_stats().unwrap(),
            StoreStats {
                objects: 2,
                bytes: 1000
            }
        );
        assert_eq!(store.evict_blocking(&[fetched[0].addr]).unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&root);
    }
}
