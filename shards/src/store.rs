//! One storage partition ("store"): an LMDB index, object files and a temp dir.
//!
//! ```text
//! <data>/stores/<id>/index/      LMDB env: address (32 bytes) -> record (record.rs)
//! <data>/stores/<id>/objects/hh/<hex>   object bytes, named by address
//! <data>/stores/<id>/segments/<id>      small objects, packed (segment.rs)
//! ```
//!
//! Visibility rule: an object exists only once its index record is committed, and the
//! record is committed only after the object file is durable under its final name. A
//! crash at any point leaves either no record (the object is invisible; an orphan file
//! may remain and is overwritten by a re-upload) or a record whose file is complete.
//!
//! LMDB reads happen inline on the shard (a read transaction is lock-free and
//! syscall-free); commits — which fsync — run on the blocking pool (`commit_blocking`).

use std::path::{Path, PathBuf};

use heed::types::Bytes as RawBytes;
use heed::{Database, Env, EnvOpenOptions, WithoutTls};
use ron_codec::Address;

use crate::error::ShardError;
use crate::record::ObjectMeta;
use crate::segment::{self, SegmentId};

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
    /// One record, `stats`: objects and bytes stored, updated in every commit.
    stats: Database<RawBytes, RawBytes>,
}

const STATS_KEY: &[u8] = b"stats";

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
        wtxn.commit().map_err(lmdb("commit"))?;
        Ok(Store {
            id,
            root: root.to_path_buf(),
            env,
            db,
            stats,
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

    /// Commits a batch of records and the updated stats in one durable LMDB transaction;
    /// returns what the batch added (records already present count nothing).
    /// Blocking (fsync): call from the blocking pool only.
    pub fn commit_blocking(&self, records: &[CommitRecord]) -> Result<StoreStats, ShardError> {
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
        wtxn.commit().map_err(self.lmdb("commit"))?;
        Ok(added)
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
