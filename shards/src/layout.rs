//! The data dir: the partition table and the stores.
//!
//! ```text
//! <data>/partitions.bin    PartitionTable encoding: 4096 partitions -> store id
//! <data>/stores/<id>/      one Store per id in 0..store_count
//! <data>/tmp/              uploads in flight; emptied at every start-up
//! ```
//!
//! The table is written once, when the data dir is created, with one store per shard.
//! A later start with a different `--shards` keeps the table and the stores as they are
//! and only reassigns stores to shards (`store % shards`), so no object moves and every
//! object is found. With more shards than stores, the extra shards own no store: they
//! accept connections and forward every request to an owner. Rebalancing data across
//! more stores is a separate, explicit operation (not built yet).

use std::path::{Path, PathBuf};

use ron_codec::{Address, PartitionTable};

use crate::error::ShardError;
use crate::store::StoreId;

const TABLE_FILE: &str = "partitions.bin";

/// A shard's index among the running shards (0..shards).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardIndex(pub u16);

/// The data dir's fixed routing: partition table plus the running shard count.
#[derive(Debug, Clone)]
pub struct Routing {
    table: PartitionTable,
    shards: u16,
}

impl Routing {
    pub fn new(table: PartitionTable, shards: u16) -> Routing {
        Routing {
            table,
            shards: shards.max(1),
        }
    }

    pub fn store_of(&self, addr: &Address) -> StoreId {
        StoreId(self.table.owner(addr).0)
    }

    pub fn shard_of_store(&self, store: StoreId) -> ShardIndex {
        ShardIndex(store.0 % self.shards)
    }

    /// The shard that owns `addr`'s store.
    pub fn owner(&self, addr: &Address) -> ShardIndex {
        self.shard_of_store(self.store_of(addr))
    }

    pub fn store_count(&self) -> u16 {
        self.table.shard_count()
    }

    pub fn shard_count(&self) -> u16 {
        self.shards
    }

    /// Stores owned by `shard`.
    pub fn stores_of(&self, shard: ShardIndex) -> Vec<StoreId> {
        (0..self.store_count())
            .map(StoreId)
            .filter(|s| self.shard_of_store(*s) == shard)
            .collect()
    }
}

pub fn store_dir(data_dir: &Path, store: StoreId) -> PathBuf {
    data_dir.join("stores").join(store.0.to_string())
}

/// Loads the partition table, or creates the data dir with `shards` stores. Blocking;
/// start-up only. Cost is independent of the number of stored objects.
pub fn open_data_dir(data_dir: &Path, shards: u16) -> Result<PartitionTable, ShardError> {
    let layout = |reason: String| ShardError::Layout {
        path: data_dir.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(data_dir).map_err(ShardError::io("create dir", data_dir))?;
    let path = data_dir.join(TABLE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => PartitionTable::decode(&bytes).map_err(|e| layout(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let table = PartitionTable::round_robin(shards).map_err(|e| layout(e.to_string()))?;
            let tmp = data_dir.join(format!("{TABLE_FILE}.tmp"));
            write_durably(&tmp, &table.encode())?;
            std::fs::rename(&tmp, &path).map_err(ShardError::io("rename", &path))?;
            sync_dir(data_dir)?;
            Ok(table)
        }
        Err(e) => Err(ShardError::Io {
            op: "read",
            path,
            source: e,
        }),
    }
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), ShardError> {
    use std::io::Write;
    let mut file = std::fs::File::create(path).map_err(ShardError::io("create", path))?;
    file.write_all(bytes)
        .map_err(ShardError::io("write", path))?;
    file.sync_all().map_err(ShardError::io("fsync", path))
}

/// fsyncs a directory so a rename into it is durable. Blocking.
pub fn sync_dir(dir: &Path) -> Result<(), ShardError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ShardError::io("fsync dir", dir))
}

pub fn tmp_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tmp")
}

/// Empties `<data>/tmp`: uploads that were never acknowledged. Start-up only, before any
/// shard runs; its cost is the number of interrupted uploads, not of stored objects.
pub fn clean_tmp(data_dir: &Path) -> Result<usize, ShardError> {
    let dir = tmp_dir(data_dir);
    std::fs::create_dir_all(&dir).map_err(ShardError::io("create dir", &dir))?;
    let mut removed = 0;
    for entry in std::fs::read_dir(&dir).map_err(ShardError::io("list", &dir))? {
        let path = entry.map_err(ShardError::io("list", &dir))?.path();
        std::fs::remove_file(&path).map_err(ShardError::io("remove", &path))?;
        removed += 1;
    }
    Ok(removed)
}
