//! One replica of a store's index: an LMDB env in one data dir, with its databases —
//! `objects` (address → record), `stats` (objects and bytes stored, the commit count,
//! the segment checkpoint, the scrubber's position) and the evictable copies' databases
//! (`evictable.rs` works on them) — and how replicas that a crash or a replaced dir left
//! apart are merged at open. The encodings of what `stats` holds live here too.

use std::path::PathBuf;

use heed::types::Bytes as RawBytes;
use heed::{Database, Env, EnvOpenOptions, RoTxn, RwTxn, WithoutTls};
use ron_codec::Address;

use crate::error::ShardError;
use crate::record::{ObjectMeta, Retention};
use crate::segment::Checkpoint;

/// Where the scrubber is in a store (`scrub.rs`), kept in the store's `stats` database so
/// that a restart resumes: full passes done, objects checked in the pass under way, and
/// the last address checked (`None`: the pass starts at the first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrubPosition {
    pub passes: u64,
    pub objects: u64,
    pub after: Option<Address>,
}

/// What a store holds, kept up to date by each commit (O(1) to read at start-up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub objects: u64,
    pub bytes: u64,
}

/// The databases of one replica.
#[derive(Clone)]
pub(super) struct EvictableDbs {
    pub(super) by_addr: Database<RawBytes, RawBytes>,
    pub(super) by_age: Database<RawBytes, RawBytes>,
    pub(super) evicted: Database<RawBytes, RawBytes>,
}

impl EvictableDbs {
    pub(super) fn create(env: &Env<WithoutTls>, wtxn: &mut RwTxn<'_>) -> heed::Result<Self> {
        Ok(EvictableDbs {
            by_addr: env.create_database(wtxn, Some("evictable"))?,
            by_age: env.create_database(wtxn, Some("evictable_by_age"))?,
            evicted: env.create_database(wtxn, Some("evicted"))?,
        })
    }
}

pub(super) const STATS_KEY: &[u8] = b"stats";
pub(super) const COMMITS_KEY: &[u8] = b"commits";
pub(super) const CHECKPOINT_KEY: &[u8] = b"checkpoint";
pub(super) const SCRUB_KEY: &[u8] = b"scrub";
/// Bytes of packed needles whose records were removed since the last compaction census
/// (`store/compact.rs`): u64 BE; absent until a census has run.
pub(super) const DEAD_SINCE_CENSUS_KEY: &[u8] = b"dead-since-census";

impl ScrubPosition {
    const ENCODED_BYTES: usize = 8 + 8 + 1 + 32;

    pub(super) fn encode(&self) -> [u8; Self::ENCODED_BYTES] {
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
    pub(super) fn decode(bytes: &[u8]) -> Option<ScrubPosition> {
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

impl StoreStats {
    pub(super) fn decode(bytes: Option<&[u8]>) -> StoreStats {
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

    pub(super) fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.objects.to_be_bytes());
        out[8..].copy_from_slice(&self.bytes.to_be_bytes());
        out
    }
}

/// One record to commit: the object's address, its encoded record, its length and its
/// retention. An evictable record new to the store is marked evictable; a kept record
/// of an object already stored makes it kept (an upload of a fetched copy); an
/// evictable record of a kept object makes it evictable (a copy the placement no longer
/// names, once its holders have theirs).
#[derive(Debug, Clone)]
pub struct CommitRecord {
    pub addr: Address,
    pub record: Vec<u8>,
    pub object_len: u64,
    pub retention: Retention,
}

impl CommitRecord {
    /// The record of a kept object.
    pub fn of(meta: &ObjectMeta) -> CommitRecord {
        CommitRecord {
            addr: meta.addr(),
            record: meta.encode(),
            object_len: meta.len(),
            retention: Retention::Kept,
        }
    }

    /// Precondition of every commit, paired with the check of each read-back (a loaded
    /// record's chunk tree must hash to the address it is stored under): what is written
    /// under an address decodes to that address and length. Cheap (the tree's parents
    /// only), and on the blocking pool. A one-group object's record holds no chaining
    /// values (its address is its group's hash, checked when the group is read), so for
    /// it only the length is checked here.
    pub(super) fn assert_decodes_to_its_address(&self) {
        let decoded = ObjectMeta::decode(self.addr, &self.record);
        assert!(
            decoded
                .as_ref()
                .is_ok_and(|meta| meta.addr() == self.addr && meta.len() == self.object_len),
            "a record committed under {} decodes to that address and {} bytes: {:?}",
            self.addr,
            self.object_len,
            decoded.map(|meta| (meta.addr(), meta.len()))
        );
    }
}

/// Now, µs since the epoch (0 if the clock is before it): when a copy was stored.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// One copy of a store's index: an LMDB env in one data dir.
#[derive(Clone)]
pub(super) struct Index {
    pub(super) env: Env<WithoutTls>,
    pub(super) db: Database<RawBytes, RawBytes>,
    pub(super) stats: Database<RawBytes, RawBytes>,
    pub(super) evictable: EvictableDbs,
    pub(super) path: PathBuf,
}

impl Index {
    /// Opens (creating if needed) the index at `path`; a new one starts its segment
    /// replay at `start`. Blocking.
    pub(super) fn open(
        path: PathBuf,
        index_bytes_max: usize,
        start: Checkpoint,
    ) -> Result<Index, ShardError> {
        crate::layout::create_dir_durably(&path)?;
        check_not_truncated(&path)?;
        let lmdb = |op| {
            let path = path.clone();
            move |source| ShardError::Index { op, path, source }
        };
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options
            .map_size(index_bytes_max)
            .max_dbs(5)
            .max_readers(512);
        // SAFETY: each store's index dir is opened once by this process (start-up opens
        // every store exactly once) and nothing else writes its files; LMDB's own lock
        // file guards against a second process.
        #[allow(unsafe_code)]
        let env = unsafe { options.open(&path) }.map_err(lmdb("open"))?;
        let mut wtxn = env.write_txn().map_err(lmdb("begin"))?;
        let db = env
            .create_database::<RawBytes, RawBytes>(&mut wtxn, Some("objects"))
            .map_err(lmdb("create database"))?;
        let stats = env
            .create_database::<RawBytes, RawBytes>(&mut wtxn, Some("stats"))
            .map_err(lmdb("create database"))?;
        let evictable = EvictableDbs::create(&env, &mut wtxn).map_err(lmdb("create database"))?;
        let stored = stats.get(&wtxn, CHECKPOINT_KEY).map_err(lmdb("get"))?;
        let from = match stored {
            // `start` (past the segments) only for an index that holds the records of
            // segments written before checkpoints existed. A new or emptied index (lost,
            // or moved aside by an operator) replays every needle: started past them,
            // it indexed none, and compaction then took every sealed segment for dead.
            None if db.is_empty(&wtxn).map_err(lmdb("count"))? => Some(Checkpoint::START),
            None => Some(start),
            // A rotted checkpoint: replay every needle (each indexed once; the cost of
            // one start), never trust where it points.
            Some(bytes) if Checkpoint::decode(bytes).is_none() => {
                tracing::warn!(index = %path.display(), "the segment checkpoint fails its check: every segment is read again");
                Some(Checkpoint::START)
            }
            Some(_) => None,
        };
        if let Some(from) = from {
            stats
                .put(&mut wtxn, CHECKPOINT_KEY, &from.encode())
                .map_err(lmdb("put"))?;
        }
        wtxn.commit().map_err(lmdb("commit"))?;
        // LMDB syncs its files, never their dir: a new index's `data.mdb` is only as
        // durable as its name, which a power loss could take with every commit in it.
        crate::layout::sync_dir(&path)?;
        Ok(Index {
            env,
            db,
            stats,
            evictable,
            path,
        })
    }

    pub(super) fn lmdb(&self, op: &'static str) -> impl FnOnce(heed::Error) -> ShardError + '_ {
        move |source| ShardError::Index {
            op,
            path: self.path.clone(),
            source,
        }
    }

    /// Up to `limit` addresses keying `db` after `after` (from the first when `None`), in
    /// key order; keys that are not 32 bytes are skipped. A read transaction.
    pub(super) fn keys_after(
        &self,
        db: Database<RawBytes, RawBytes>,
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
        for entry in db.range(&rtxn, &range).map_err(self.lmdb("range"))? {
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

    pub(super) fn stat(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ShardError> {
        let rtxn = self.env.read_txn().map_err(self.lmdb("read"))?;
        self.stat_in(&rtxn, key)
    }

    pub(super) fn stat_in(
        &self,
        txn: &RoTxn<'_, WithoutTls>,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, ShardError> {
        let raw = self.stats.get(txn, key).map_err(self.lmdb("get"))?;
        Ok(raw.map(<[u8]>::to_vec))
    }

    /// Commits counted so far (replicas that a crash left apart differ in it).
    pub(super) fn commits(&self) -> Result<u64, ShardError> {
        let rtxn = self.env.read_txn().map_err(self.lmdb("read"))?;
        self.commits_in(&rtxn)
    }

    pub(super) fn commits_in(&self, txn: &RoTxn<'_, WithoutTls>) -> Result<u64, ShardError> {
        let raw = self.stat_in(txn, COMMITS_KEY)?;
        Ok(raw
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    pub(super) fn checkpoint(&self) -> Result<Option<Checkpoint>, ShardError> {
        let rtxn = self.env.read_txn().map_err(self.lmdb("read"))?;
        self.checkpoint_in(&rtxn)
    }

    pub(super) fn checkpoint_in(
        &self,
        txn: &RoTxn<'_, WithoutTls>,
    ) -> Result<Option<Checkpoint>, ShardError> {
        Ok(self
            .stat_in(txn, CHECKPOINT_KEY)?
            .as_deref()
            .and_then(Checkpoint::decode))
    }

    /// [`Store::commit_blocking`] on this replica.
    pub(super) fn commit(
        &self,
        records: &[CommitRecord],
        checkpoint: Option<Checkpoint>,
    ) -> Result<StoreStats, ShardError> {
        let mut wtxn = self.env.write_txn().map_err(self.lmdb("begin write"))?;
        let mut stats = self.stats_in(&wtxn)?;
        let mut added = StoreStats::default();
        let now_us = now_us();
        for r in records {
            let present = self
                .db
                .get(&wtxn, r.addr.as_bytes())
                .map_err(self.lmdb("get"))?
                .is_some();
            self.db
                .put(&mut wtxn, r.addr.as_bytes(), &r.record)
                .map_err(self.lmdb("put"))?;
            match (present, r.retention) {
                (false, Retention::Evictable) => {
                    self.add_evictable(&mut wtxn, &r.addr, r.object_len, now_us)?
                }
                (true, Retention::Kept) => {
                    self.remove_evictable(&mut wtxn, &r.addr)?;
                }
                // A kept copy the placement no longer names, made evictable.
                (true, Retention::Evictable) if !self.is_evictable_in(&wtxn, &r.addr)? => {
                    self.add_evictable(&mut wtxn, &r.addr, r.object_len, now_us)?
                }
                _ => {}
            }
            if !present {
                added.objects = added.objects.saturating_add(1);
                added.bytes = added.bytes.saturating_add(r.object_len);
            }
        }
        stats.objects = stats.objects.saturating_add(added.objects);
        stats.bytes = stats.bytes.saturating_add(added.bytes);
        self.put_stats_counting_commit(&mut wtxn, &stats)?;
        if let Some(checkpoint) = checkpoint {
            self.advance_checkpoint(&mut wtxn, checkpoint)?;
        }
        wtxn.commit().map_err(self.lmdb("commit"))?;
        Ok(added)
    }

    /// The stats as `txn` sees them.
    pub(super) fn stats_in(&self, txn: &RoTxn<'_, WithoutTls>) -> Result<StoreStats, ShardError> {
        let raw = self.stats.get(txn, STATS_KEY).map_err(self.lmdb("get"))?;
        Ok(StoreStats::decode(raw))
    }

    /// Stores `checkpoint` in `wtxn` if it is past the stored one. Never backwards: an
    /// older commit finishing last (a retry) keeps the newer one.
    pub(super) fn advance_checkpoint(
        &self,
        wtxn: &mut RwTxn<'_>,
        checkpoint: Checkpoint,
    ) -> Result<(), ShardError> {
        let stored = self
            .stats
            .get(wtxn, CHECKPOINT_KEY)
            .map_err(self.lmdb("get"))?
            .and_then(Checkpoint::decode);
        if stored.is_none_or(|s| checkpoint > s) {
            self.stats
                .put(wtxn, CHECKPOINT_KEY, &checkpoint.encode())
                .map_err(self.lmdb("put"))?;
        }
        Ok(())
    }

    /// Writes `stats` and counts one more commit, in `wtxn`: every transaction that
    /// changes the records does both (the replicas' commit counts are how an open finds
    /// one that missed a commit).
    pub(super) fn put_stats_counting_commit(
        &self,
        wtxn: &mut RwTxn<'_>,
        stats: &StoreStats,
    ) -> Result<(), ShardError> {
        self.stats
            .put(wtxn, STATS_KEY, &stats.encode())
            .map_err(self.lmdb("put"))?;
        let commits = self.commits_in(wtxn)?.saturating_add(1);
        self.stats
            .put(wtxn, COMMITS_KEY, &commits.to_be_bytes())
            .map_err(self.lmdb("put"))?;
        Ok(())
    }

    /// Bytes of packed needles removed since the last compaction census; `None` when
    /// none has run (a store from before they were counted).
    pub(super) fn dead_since_census(&self) -> Result<Option<u64>, ShardError> {
        let raw = self.stat(DEAD_SINCE_CENSUS_KEY)?;
        Ok(raw
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(u64::from_be_bytes))
    }

    /// Counts `bytes` more of packed needles removed, in `wtxn`, when a census has run.
    pub(super) fn add_dead_since_census(
        &self,
        wtxn: &mut RwTxn<'_>,
        bytes: u64,
    ) -> Result<(), ShardError> {
        let Some(raw) = self.stat_in(wtxn, DEAD_SINCE_CENSUS_KEY)? else {
            return Ok(());
        };
        let before = <[u8; 8]>::try_from(raw.as_slice()).map_or(0, u64::from_be_bytes);
        self.stats
            .put(
                wtxn,
                DEAD_SINCE_CENSUS_KEY,
                &before.saturating_add(bytes).to_be_bytes(),
            )
            .map_err(self.lmdb("put"))
    }

    pub(super) fn put_stat(&self, key: &[u8], value: &[u8]) -> Result<(), ShardError> {
        let mut wtxn = self.env.write_txn().map_err(self.lmdb("begin write"))?;
        self.stats
            .put(&mut wtxn, key, value)
            .map_err(self.lmdb("put"))?;
        wtxn.commit().map_err(self.lmdb("commit"))
    }

    /// Copies into this replica every record of `from` it lacks, then recounts its
    /// stats and takes the furthest checkpoint and the most commits of the two.
    /// Returns the records copied. Blocking; start-up only.
    pub(super) fn take_missing(&self, from: &Index) -> Result<u64, ShardError> {
        let rtxn = from.env.read_txn().map_err(from.lmdb("read"))?;
        let mut wtxn = self.env.write_txn().map_err(self.lmdb("begin write"))?;
        let mut copied = 0;
        for entry in from.db.iter(&rtxn).map_err(from.lmdb("iterate"))? {
            let (key, record) = entry.map_err(from.lmdb("iterate"))?;
            let held = self.db.get(&wtxn, key).map_err(self.lmdb("get"))?.is_some();
            if held {
                // Kept in one replica, evictable in this one (a keep — an upload of a
                // fetched copy — that reached only the other before a failure or a
                // crash): kept wins. The upload may have been acknowledged; a demotion
                // lost this way only keeps a copy that could have gone.
                let evictable_here = self.evictable_entry(&wtxn, key)?.is_some();
                if evictable_here && from.evictable_entry(&rtxn, key)?.is_none() {
                    if let Ok(addr) = <[u8; 32]>::try_from(key) {
                        self.remove_evictable(&mut wtxn, &Address::from_bytes(addr))?;
                    }
                }
            } else {
                self.db
                    .put(&mut wtxn, key, record)
                    .map_err(self.lmdb("put"))?;
                if let (Some((at, len)), Ok(addr)) =
                    (from.evictable_entry(&rtxn, key)?, <[u8; 32]>::try_from(key))
                {
                    self.add_evictable(&mut wtxn, &Address::from_bytes(addr), len, at)?;
                }
                copied += 1;
            }
        }
        self.recount_evictable(&mut wtxn)?;
        let mut stats = StoreStats::default();
        for entry in self.db.iter(&wtxn).map_err(self.lmdb("iterate"))? {
            let (_, record) = entry.map_err(self.lmdb("iterate"))?;
            stats.objects = stats.objects.saturating_add(1);
            stats.bytes = stats
                .bytes
                .saturating_add(crate::record::object_len_of(record).unwrap_or(0));
        }
        self.stats
            .put(&mut wtxn, STATS_KEY, &stats.encode())
            .map_err(self.lmdb("put"))?;
        let commits = self.commits_in(&wtxn)?.max(from.commits_in(&rtxn)?);
        self.stats
            .put(&mut wtxn, COMMITS_KEY, &commits.to_be_bytes())
            .map_err(self.lmdb("put"))?;
        let furthest = self.checkpoint_in(&wtxn)?.max(from.checkpoint_in(&rtxn)?);
        if let Some(checkpoint) = furthest {
            self.stats
                .put(&mut wtxn, CHECKPOINT_KEY, &checkpoint.encode())
                .map_err(self.lmdb("put"))?;
        }
        if self.stat_in(&wtxn, SCRUB_KEY)?.is_none() {
            if let Some(scrub) = from.stat_in(&rtxn, SCRUB_KEY)? {
                self.stats
                    .put(&mut wtxn, SCRUB_KEY, &scrub)
                    .map_err(self.lmdb("put"))?;
            }
        }
        wtxn.commit().map_err(self.lmdb("commit"))?;
        Ok(copied)
    }
}

/// Brings every replica to the union of all (records and their evictable entries):
/// replicas that a crash left one commit apart, or a new one in a replaced dir. Equal commit counts: nothing to do.
impl Index {
    /// Removes the checkpoint, as an index written before checkpoints existed has none.
    #[cfg(test)]
    pub(super) fn forget_checkpoint_for_tests(&self) {
        let mut wtxn = self.env.write_txn().unwrap();
        self.stats.delete(&mut wtxn, CHECKPOINT_KEY).unwrap();
        wtxn.commit().unwrap();
    }

    /// Flips one bit of the stored checkpoint's byte `at`, as rot in `data.mdb` would.
    #[cfg(test)]
    pub(super) fn rot_checkpoint_for_tests(&self, at: usize) {
        let mut wtxn = self.env.write_txn().unwrap();
        let mut bytes = self
            .stats
            .get(&wtxn, CHECKPOINT_KEY)
            .unwrap()
            .unwrap()
            .to_vec();
        bytes[at] ^= 1;
        self.stats.put(&mut wtxn, CHECKPOINT_KEY, &bytes).unwrap();
        wtxn.commit().unwrap();
    }
}

// Where LMDB's meta page keeps what `check_not_truncated` reads (64-bit layout: a
// 16-byte page header, then `MDB_meta`: magic, version, address, map size, two
// `MDB_db`s — the first's `md_pad` is the page size — the last page, the txn id).
const MDB_MAGIC: u32 = 0xBEEF_C0DE;
const MDB_DATA_VERSION: u32 = 1;
const META_MAGIC_AT: usize = 16;
const META_PAGE_SIZE_AT: usize = 40;
const META_LAST_PAGE_AT: usize = 136;
const META_TXN_AT: usize = 144;
const META_BYTES: usize = 152;

/// One meta page of an LMDB file: its txn id, page size, and the file length the pages
/// it names need. `None` when it does not read as one.
fn meta_page(file: &std::fs::File, offset: u64) -> Option<(u64, u64, u64)> {
    use std::os::unix::fs::FileExt;
    let mut page = [0u8; META_BYTES];
    file.read_exact_at(&mut page, offset).ok()?;
    let u32_at = |at: usize| u32::from_le_bytes(page[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(page[at..at + 8].try_into().unwrap());
    let is_meta =
        u32_at(META_MAGIC_AT) == MDB_MAGIC && u32_at(META_MAGIC_AT + 4) == MDB_DATA_VERSION;
    let page_bytes = u64::from(u32_at(META_PAGE_SIZE_AT));
    let needed = u64_at(META_LAST_PAGE_AT)
        .checked_add(1)?
        .checked_mul(page_bytes)?;
    (is_meta && page_bytes >= 512).then_some((u64_at(META_TXN_AT), page_bytes, needed))
}

/// Refuses an index whose `data.mdb` is shorter than the pages its newest commit names:
/// LMDB maps the file and reads past its end (SIGBUS: the node died at start without a
/// word, after a truncated copy or a partial restore). A commit's pages are written and
/// synced before its meta page, so a whole file covers them. A file whose meta pages do
/// not read is left to LMDB, which names that itself. Blocking.
fn check_not_truncated(dir: &std::path::Path) -> Result<(), ShardError> {
    let path = dir.join("data.mdb");
    let Ok(file) = std::fs::File::open(&path) else {
        return Ok(());
    };
    let len_bytes = file
        .metadata()
        .map_err(ShardError::io("stat", &path))?
        .len();
    let Some(first) = meta_page(&file, 0) else {
        return Ok(());
    };
    let newest = match meta_page(&file, first.1) {
        Some(second) if second.0 > first.0 => second,
        _ => first,
    };
    match newest.2 > len_bytes {
        true => Err(ShardError::IndexTruncated {
            path,
            len_bytes,
            needed_bytes: newest.2,
        }),
        false => Ok(()),
    }
}

pub(super) fn merge_replicas(replicas: &[Index]) -> Result<(), ShardError> {
    let counts: Vec<u64> = replicas
        .iter()
        .map(Index::commits)
        .collect::<Result<_, _>>()?;
    if counts.iter().all(|c| *c == counts[0]) {
        return furthest_checkpoint_everywhere(replicas);
    }
    for (t, target) in replicas.iter().enumerate() {
        for (f, from) in replicas.iter().enumerate() {
            if t != f && counts[t] != counts[f] {
                let copied = target.take_missing(from)?;
                tracing::info!(
                    index = %target.path.display(),
                    from = %from.path.display(),
                    records = copied,
                    "index replica brought up to date"
                );
            }
        }
    }
    Ok(())
}

/// Every replica's checkpoint moved to the furthest any holds. A checkpoint says every
/// needle before it is indexed, and replicas with equal commit counts hold the same
/// records: one whose checkpoint rotted (rewritten as the start) replayed every segment
/// while another knew where it stood — and a full replay indexes again, as kept, the
/// needles of packed objects removed since they were written.
fn furthest_checkpoint_everywhere(replicas: &[Index]) -> Result<(), ShardError> {
    let mut furthest = None;
    for replica in replicas {
        furthest = furthest.max(replica.checkpoint()?);
    }
    let Some(furthest) = furthest else {
        return Ok(());
    };
    for replica in replicas {
        if replica.checkpoint()? < Some(furthest) {
            let mut wtxn = replica
                .env
                .write_txn()
                .map_err(replica.lmdb("begin write"))?;
            replica.advance_checkpoint(&mut wtxn, furthest)?;
            wtxn.commit().map_err(replica.lmdb("commit"))?;
            tracing::info!(index = %replica.path.display(), "segment checkpoint taken from another index replica");
        }
    }
    Ok(())
}
