//! One storage partition ("store"): an LMDB index, object files and a temp dir.
//!
//! ```text
//! <data>/stores/<id>/index/      LMDB env: address (32 bytes) -> record (record.rs)
//! <data>/stores/<id>/objects/hh/<hex>   object bytes, named by address
//! <data>/stores/<id>/segments/<id>      small objects, packed (segment.rs)
//! ```
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

use heed::types::Bytes as RawBytes;
use heed::{Database, Env, EnvOpenOptions, WithoutTls};
use ron_codec::Address;

use crate::error::ShardError;
use crate::record::ObjectMeta;
use crate::segment::{self, Checkpoint, SegmentId};

/// Identifies a store: the value the partition table maps a partition to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreId(pub u16);

/// A store's handle. Cheap to clone (the LMDB env is reference counted) and `Send`, so a
/// clone can go to the blocking pool for commits.
#[derive(Clone)]
pub struct Store {
    id: StoreId,
    root: PathBuf,
    env: Env<WithoutTls>,
    db: Database<RawBytes, RawBytes>,
    /// `stats`: objects and bytes stored, updated in every commit; `checkpoint`: how
    /// far the index has taken in the segments.
    stats: Database<RawBytes, RawBytes>,
}

const STATS_KEY: &[u8] = b"stats";
const CHECKPOINT_KEY: &[u8] = b"checkpoint";
const SCRUB_KEY: &[u8] = b"scrub";

/// Where the scrubber is in a store (`scrub.rs`), kept in the store's `stats` database so
/// that a restart resumes: full passes done, objects checked in the pass under way, and
/// the last address checked (`None`: the pass starts at the first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrubPosition {
    pub passes: u64,
    pub objects: u64,
    pub after: Option<Address>,
}

impl ScrubPosition {
    const ENCODED_BYTES: usize = 8 + 8 + 1 + 32;

    fn encode(&self) -> [u8; Self::ENCODED_BYTES] {
        let mut out = [0u8; Self::ENCODED_BYTES];
        out[..8].copy_from_slice(&self.passes.to_be_bytes());
        out[8..16].copy_from_slice(&self.objects.to_be_bytes());
        if let Some(after) = &self.after {
            out[16] = 1;
            out[17..].copy_from_slice(after.as_bytes());
        }
        out
    }

    /// `None` for bytes no version of this code wrote (the scrubber then starts over).
    fn decode(bytes: &[u8]) -> Option<ScrubPosition> {
        let bytes: &[u8; Self::ENCODED_BYTES] = bytes.try_into().ok()?;
        let word = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
        let after = match bytes[16] {
            0 => None,
            1 => Some(Address::from_bytes(bytes[17..].try_into().ok()?)),
            _ => return None,
        };
        Some(ScrubPosition {
            passes: word(0),
            objects: word(8),
            after,
        })
    }
}

/// What [`Store::replay_blocking`] did at start-up.
#[derive(Debug, Default)]
pub struct Replay {
    /// Needles past the checkpoint that had no record and now have one.
    pub indexed: u64,
    /// Segments whose tail was not a whole, matching needle (never acknowledged).
    pub torn: Vec<(SegmentId, segment::ByteOffset)>,
}

/// What a store holds, kept up to date by each commit (O(1) to read at start-up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub objects: u64,
    pub bytes: u64,
}

impl StoreStats {
    fn decode(bytes: Option<&[u8]>) -> StoreStats {
        let word = |at: usize| {
            bytes
                .and_then(|b| b.get(at..at + 8))
                .map_or(0, |w| u64::from_be_bytes(w.try_into().unwrap_or([0; 8])))
        };
        StoreStats {
            objects: word(0),
            bytes: word(8),
        }
    }

    fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.objects.to_be_bytes());
        out[8..].copy_from_slice(&self.bytes.to_be_bytes());
        out
    }
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
        end: segment::ByteOffset(len),
    })
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

/// One record to commit: the object's address, its encoded record and its length.
#[derive(Debug, Clone)]
pub struct CommitRecord {
    pub addr: Address,
    pub record: Vec<u8>,
    pub object_len: u64,
}

impl CommitRecord {
    pub fn of(meta: &ObjectMeta) -> CommitRecord {
        CommitRecord {
            addr: meta.addr(),
            record: meta.encode(),
            object_len: meta.len(),
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("id", &self.id)
            .field("root", &self.root)
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store at `root`. Blocking; runs at start-up.
    pub fn open(root: &Path, id: StoreId, index_bytes_max: usize) -> Result<Store, ShardError> {
        let index_dir = root.join("index");
        std::fs::create_dir_all(&index_dir).map_err(ShardError::io("create dir", &index_dir))?;
        let segments = root.join("segments");
        std::fs::create_dir_all(&segments).map_err(ShardError::io("create dir", &segments))?;
        for hh in 0..=255u8 {
            let dir = root.join("objects").join(format!("{hh:02x}"));
            std::fs::create_dir_all(&dir).map_err(ShardError::io("create dir", &dir))?;
        }
        let lmdb = |op| {
            let path = index_dir.clone();
            move |source| ShardError::Index { op, path, source }
        };
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options
            .map_size(index_bytes_max)
            .max_dbs(2)
            .max_readers(512);
        // SAFETY: each store's index dir is opened once by this process (start-up opens
        // every store exactly once) and nothing else writes its files; LMDB's own lock
        // file guards against a second process.
        #[allow(unsafe_code)]
        let env = unsafe { options.open(&index_dir) }.map_err(lmdb("open"))?;
        let mut wtxn = env.write_txn().map_err(lmdb("begin"))?;
        let db = env
            .create_database::<RawBytes, RawBytes>(&mut wtxn, Some("objects"))
            .map_err(lmdb("create database"))?;
        let stats = env
            .create_database::<RawBytes, RawBytes>(&mut wtxn, Some("stats"))
            .map_err(lmdb("create database"))?;
        if stats
            .get(&wtxn, CHECKPOINT_KEY)
            .map_err(lmdb("get"))?
            .is_none()
        {
            // A new store replays from its first needle; a store whose segments were
            // written before checkpoints existed had every acknowledged needle indexed
            // before its answer, so its replay starts past them.
            let start = first_checkpoint(root)?;
            stats
                .put(&mut wtxn, CHECKPOINT_KEY, &start.encode())
                .map_err(lmdb("put"))?;
        }
        wtxn.commit().map_err(lmdb("commit"))?;
        Ok(Store {
            id,
            root: root.to_path_buf(),
            env,
            db,
            stats,
        })
    }

    /// Indexes the needles past the checkpoint: acknowledged packed objects whose
    /// records a crash kept from the index. Each is checked against its address; a
    /// segment's scan stops at its first bad needle. Blocking; at start-up, before the
    /// store serves.
    pub fn replay_blocking(&self) -> Result<Replay, ShardError> {
        let from = self.checkpoint()?;
        let scan = segment::scan_past(&self.root, from)?;
        let mut records = Vec::with_capacity(scan.needles.len());
        for found in scan.needles {
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
        let indexed = records.len() as u64;
        if scan.end != from {
            self.commit_blocking(&records, Some(scan.end))?;
        }
        Ok(Replay {
            indexed,
            torn: scan.torn,
        })
    }

    /// How far the index has taken in the store's segments.
    pub fn checkpoint(&self) -> Result<Checkpoint, ShardError> {
        let rtxn = self.env.read_txn().map_err(self.lmdb("read"))?;
        let raw = self
            .stats
            .get(&rtxn, CHECKPOINT_KEY)
            .map_err(self.lmdb("get"))?;
        raw.and_then(Checkpoint::decode)
            .ok_or_else(|| ShardError::Layout {
                path: self.root.join("index"),
                reason: "the index has no valid segment checkpoint".into(),
            })
    }

    pub fn id(&self) -> StoreId {
        self.id
    }

    fn lmdb(&self, op: &'static str) -> impl FnOnce(heed::Error) -> ShardError + '_ {
        move |source| ShardError::Index {
            op,
            path: self.root.join("index"),
            source,
        }
    }

    /// The object's record if it is at most `record_bytes_max` long (checking a record's
    /// tree costs one merge per group, so long ones are for [`Store::get`] on the
    /// blocking pool).
    pub fn get_inline(
        &self,
        addr: &Address,
        record_bytes_max: usize,
    ) -> Result<Lookup, ShardError> {
        let rtxn = self.env.read_txn().map_err(self.lmdb("read"))?;
        match self
            .db
            .get(&rtxn, addr.as_bytes())
            .map_err(self.lmdb("get"))?
        {
            Some(bytes) if bytes.len() > record_bytes_max => Ok(Lookup::Long),
            Some(bytes) => ObjectMeta::decode(*addr, bytes).map(Lookup::Found),
            None => Ok(Lookup::Absent),
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
        let rtxn = self.env.read_txn().map_err(self.lmdb("read"))?;
        Ok(self
            .db
            .get(&rtxn, addr.as_bytes())
            .map_err(self.lmdb("get"))?
            .is_some())
    }

    /// Objects and bytes stored.
    pub fn stats(&self) -> Result<StoreStats, ShardError> {
        let rtxn = self.env.read_txn().map_err(self.lmdb("read"))?;
        let raw = self.stats.get(&rtxn, STATS_KEY).map_err(self.lmdb("get"))?;
        Ok(StoreStats::decode(raw))
    }

    /// Commits a batch of records, the updated stats and, when given, the segment
    /// checkpoint the records reach (if it is past the stored one), in one durable LMDB
    /// transaction; returns what the batch added (records already present count
    /// nothing).
    /// Blocking (fsync): call from the blocking pool only.
    pub fn commit_blocking(
        &self,
        records: &[CommitRecord],
        checkpoint: Option<Checkpoint>,
    ) -> Result<StoreStats, ShardError> {
        let mut wtxn = self.env.write_txn().map_err(self.lmdb("begin write"))?;
        let raw = self.stats.get(&wtxn, STATS_KEY).map_err(self.lmdb("get"))?;
        let mut stats = StoreStats::decode(raw);
        let mut added = StoreStats::default();
        for r in records {
            let present = self
                .db
                .get(&wtxn, r.addr.as_bytes())
                .map_err(self.lmdb("get"))?
                .is_some();
            self.db
                .put(&mut wtxn, r.addr.as_bytes(), &r.record)
                .map_err(self.lmdb("put"))?;
            if !present {
                added.objects += 1;
                added.bytes += r.object_len;
            }
        }
        stats.objects += added.objects;
        stats.bytes += added.bytes;
        self.stats
            .put(&mut wtxn, STATS_KEY, &stats.encode())
            .map_err(self.lmdb("put"))?;
        // Never backwards: an older commit finishing last (a retry) keeps the newer one.
        let stored = self
            .stats
            .get(&wtxn, CHECKPOINT_KEY)
            .map_err(self.lmdb("get"))?
            .and_then(Checkpoint::decode);
        if let Some(checkpoint) = checkpoint.filter(|c| stored.is_none_or(|s| *c > s)) {
            self.stats
                .put(&mut wtxn, CHECKPOINT_KEY, &checkpoint.encode())
                .map_err(self.lmdb("put"))?;
        }
        wtxn.commit().map_err(self.lmdb("commit"))?;
        Ok(added)
    }

    /// Up to `limit` addresses stored after `after` (from the first when `None`), in key
    /// order. A read transaction: inline on the shard, like a lookup.
    pub fn addresses_after(
        &self,
        after: Option<&Address>,
        limit: usize,
    ) -> Result<Vec<Address>, ShardError> {
        use std::ops::Bound;
        let rtxn = self.env.read_txn().map_err(self.lmdb("read"))?;
        let from: Bound<&[u8]> = match after {
            Some(addr) => Bound::Excluded(addr.as_bytes().as_slice()),
            None => Bound::Unbounded,
        };
        let range = (from, Bound::Unbounded);
        let mut addresses = Vec::with_capacity(limit.min(1024));
        for entry in self.db.range(&rtxn, &range).map_err(self.lmdb("range"))? {
            if addresses.len() >= limit {
                break;
            }
            let (key, _) = entry.map_err(self.lmdb("range"))?;
            if let Ok(bytes) = <[u8; 32]>::try_from(key) {
                addresses.push(Address::from_bytes(bytes));
            }
        }
        Ok(addresses)
    }

    /// Where the scrubber stopped in this store (the start of a first pass if it never
    /// ran, or if what it saved cannot be read).
    pub fn scrub_position(&self) -> Result<ScrubPosition, ShardError> {
        let rtxn = self.env.read_txn().map_err(self.lmdb("read"))?;
        let raw = self.stats.get(&rtxn, SCRUB_KEY).map_err(self.lmdb("get"))?;
        Ok(raw.and_then(ScrubPosition::decode).unwrap_or_default())
    }

    /// Saves where the scrubber is. Blocking (an LMDB commit): the blocking pool only.
    pub fn save_scrub_position_blocking(&self, position: ScrubPosition) -> Result<(), ShardError> {
        let mut wtxn = self.env.write_txn().map_err(self.lmdb("begin write"))?;
        self.stats
            .put(&mut wtxn, SCRUB_KEY, &position.encode())
            .map_err(self.lmdb("put"))?;
        wtxn.commit().map_err(self.lmdb("commit"))
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a packed object's segment is.
    pub fn segment_path(&self, id: SegmentId) -> PathBuf {
        segment::segment_path(&self.root, id)
    }

    /// Where the bytes of an object in its own file live.
    pub fn object_path(&self, addr: &Address) -> PathBuf {
        let hex = addr.hex();
        let hex = std::str::from_utf8(&hex).unwrap_or_default();
        self.root.join("objects").join(&hex[..2]).join(hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Location;
    use crate::segment::{Appended, ByteOffset, Needle, SegmentLog};

    const INDEX_BYTES: usize = 64 << 20;

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
            .map(|(body, at)| {
                CommitRecord::of(&ObjectMeta {
                    tree: ron_codec::ChunkTree::of(body),
                    content_type: "text/plain".into(),
                    location: Location::Packed(*at),
                    parity: None,
                })
            })
            .collect();
        store.commit_blocking(&records, Some(appended.end)).unwrap();
    }

    #[test]
    fn acknowledged_needles_past_the_checkpoint_are_indexed_at_the_next_open() {
        let root = temp_root("replay");
        let store = Store::open(&root, StoreId(0), INDEX_BYTES).unwrap();
        assert_eq!(store.checkpoint().unwrap(), Checkpoint::START);
        let mut log = SegmentLog::open(&root).unwrap();
        let (indexed, unindexed) = (bodies(3, 1), bodies(2, 50));
        let first = append(&mut log, &indexed);
        index(&store, &indexed, &first);
        // Answered once durable in the segment; the crash comes before its index commit.
        let second = append(&mut log, &unindexed);
        assert!(!store.contains(&Address::of(&unindexed[0])).unwrap());
        drop((store, log));

        let store = Store::open(&root, StoreId(0), INDEX_BYTES).unwrap();
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

    #[test]
    fn a_torn_or_damaged_needle_ends_its_segments_replay_and_later_segments_still_count() {
        let root = temp_root("torn");
        let store = Store::open(&root, StoreId(0), INDEX_BYTES).unwrap();
        let mut log = SegmentLog::open(&root).unwrap();
        let damaged = bodies(3, 7);
        let first = append(&mut log, &damaged);
        // A flipped byte in the second body: it and the needle after it are not indexed.
        let path = segment::segment_path(&root, first.end.segment);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[first.places[1].body.0 as usize + 10] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        // The next start's segment, and a half-written needle after its one whole one.
        let later = bodies(1, 90);
        let mut log = SegmentLog::open(&root).unwrap();
        let second = append(&mut log, &later);
        let later_path = segment::segment_path(&root, second.end.segment);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&later_path)
            .unwrap();
        std::io::Write::write_all(&mut file, b"RONn\0\0").unwrap();
        drop((store, log, file));

        let store = Store::open(&root, StoreId(0), INDEX_BYTES).unwrap();
        let replay = store.replay_blocking().unwrap();
        assert_eq!(replay.indexed, 2);
        assert!(store.contains(&Address::of(&damaged[0])).unwrap());
        assert!(!store.contains(&Address::of(&damaged[1])).unwrap());
        assert!(!store.contains(&Address::of(&damaged[2])).unwrap());
        assert!(store.contains(&Address::of(&later[0])).unwrap());
        let second_head = first.places[1].body.0 - NEEDLE_HEAD_TEXT_PLAIN;
        assert_eq!(
            replay.torn,
            vec![
                (first.end.segment, ByteOffset(second_head)),
                (second.end.segment, second.end.end),
            ]
        );
        assert_eq!(store.checkpoint().unwrap(), second.end);
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Head bytes of a needle whose content type is `text/plain`.
    const NEEDLE_HEAD_TEXT_PLAIN: u64 = segment::NEEDLE_HEAD_BYTES_MIN + 10;

    #[test]
    fn a_store_whose_segments_predate_checkpoints_starts_past_them() {
        let root = temp_root("upgrade");
        std::fs::create_dir_all(root.join("segments")).unwrap();
        let appended = append(&mut SegmentLog::open(&root).unwrap(), &bodies(2, 3));
        let store = Store::open(&root, StoreId(0), INDEX_BYTES).unwrap();
        assert_eq!(store.checkpoint().unwrap(), appended.end);
        assert_eq!(store.replay_blocking().unwrap().indexed, 0);
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
        let store = Store::open(&root, StoreId(0), INDEX_BYTES).unwrap();
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
        let store = Store::open(&root, StoreId(0), INDEX_BYTES).unwrap();
        assert_eq!(store.scrub_position().unwrap(), at);
        assert_eq!(ScrubPosition::decode(&at.encode()[..20]), None);
        let _ = std::fs::remove_dir_all(&root);
    }
}
