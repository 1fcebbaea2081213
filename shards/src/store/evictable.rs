//! Evictable objects: copies a node fetched from a peer or an origin (read-through), kept
//! as a cache and removed oldest first once they pass the node's `fetched_bytes_max`
//! (docs/design/eviction.md). Uploaded objects are never evictable; an upload of an
//! object held as a fetched copy makes it kept.
//!
//! Three LMDB databases beside `objects` in every index replica, changed in the same
//! transactions as the records they describe:
//!
//! ```text
//! evictable        address (32)                 -> fetched at µs u64 BE | object_len u64 BE
//! evictable_by_age fetched at µs u64 BE | address -> (empty)   oldest first
//! evicted          address (32)                 -> (empty)   record removed, files not
//!                                                            yet unlinked
//! ```
//!
//! and `evictable` in `stats`: objects and bytes evictable (O(1) for the evicter).
//!
//! An eviction removes the record (and its evictable entries) and leaves an `evicted`
//! marker in one transaction per replica; the files are unlinked after every replica
//! committed, and the markers cleared after that. A crash in between leaves markers
//! that the next open finishes ([`super::Store::open`]): files of an address still
//! without a record are unlinked. An address with a record again (a replica that
//! missed the eviction brought the record back, or it was stored again) keeps its
//! files. A packed object's needle stays in its segment as dead space.

use heed::{RwTxn, WithoutTls};
use ron_codec::Address;

use crate::error::ShardError;
use crate::store::index::{Index, StoreStats, STATS_KEY};

pub(super) const EVICTABLE_STATS_KEY: &[u8] = b"evictable";

/// Which of the addresses given to [`Index::evict`] a replica evicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EvictRule {
    Choose,
    Follow,
}

/// One evictable object, as the evicter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvictableObject {
    pub addr: Address,
    /// When it was stored, µs since the epoch.
    pub fetched_at_us: u64,
    pub len: u64,
}

fn age_key(fetched_at_us: u64, addr: &Address) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..8].copy_from_slice(&fetched_at_us.to_be_bytes());
    key[8..].copy_from_slice(addr.as_bytes());
    key
}

fn decode_entry(bytes: &[u8]) -> Option<(u64, u64)> {
    let at = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let len = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((at, len))
}

impl Index {
    pub(super) fn evictable_stats_in(
        &self,
        txn: &heed::RoTxn<'_, WithoutTls>,
    ) -> Result<StoreStats, ShardError> {
        Ok(StoreStats::decode(
            self.stat_in(txn, EVICTABLE_STATS_KEY)?.as_deref(),
        ))
    }

    fn put_evictable_stats(
        &self,
        wtxn: &mut RwTxn<'_>,
        stats: StoreStats,
    ) -> Result<(), ShardError> {
        self.stats
            .put(wtxn, EVICTABLE_STATS_KEY, &stats.encode())
            .map_err(self.lmdb("put"))
    }

    /// Marks a newly stored object evictable, fetched at `at_us`.
    pub(super) fn add_evictable(
        &self,
        wtxn: &mut RwTxn<'_>,
        addr: &Address,
        len: u64,
        at_us: u64,
    ) -> Result<(), ShardError> {
        let mut entry = [0u8; 16];
        entry[..8].copy_from_slice(&at_us.to_be_bytes());
        entry[8..].copy_from_slice(&len.to_be_bytes());
        let dbs = &self.evictable;
        dbs.by_addr
            .put(wtxn, addr.as_bytes(), &entry)
            .map_err(self.lmdb("put"))?;
        dbs.by_age
            .put(wtxn, &age_key(at_us, addr), &[])
            .map_err(self.lmdb("put"))?;
        // A marker left by an earlier eviction is moot: the address has a record again.
        dbs.evicted
            .delete(wtxn, addr.as_bytes())
            .map_err(self.lmdb("delete"))?;
        let mut stats = self.evictable_stats_in(wtxn)?;
        stats.objects = stats.objects.saturating_add(1);
        stats.bytes = stats.bytes.saturating_add(len);
        self.put_evictable_stats(wtxn, stats)
    }

    /// Makes `addr` kept (no longer evictable); returns whether it was evictable.
    pub(super) fn remove_evictable(
        &self,
        wtxn: &mut RwTxn<'_>,
        addr: &Address,
    ) -> Result<bool, ShardError> {
        let dbs = &self.evictable;
        let Some((at, len)) = dbs
            .by_addr
            .get(wtxn, addr.as_bytes())
            .map_err(self.lmdb("get"))?
            .and_then(decode_entry)
        else {
            return Ok(false);
        };
        dbs.by_addr
            .delete(wtxn, addr.as_bytes())
            .map_err(self.lmdb("delete"))?;
        dbs.by_age
            .delete(wtxn, &age_key(at, addr))
            .map_err(self.lmdb("delete"))?;
        let mut stats = self.evictable_stats_in(wtxn)?;
        stats.objects = stats.objects.saturating_sub(1);
        stats.bytes = stats.bytes.saturating_sub(len);
        self.put_evictable_stats(wtxn, stats)?;
        Ok(true)
    }

    /// Whether `addr` is evictable in this replica.
    pub(super) fn is_evictable_in(
        &self,
        txn: &heed::RoTxn<'_, WithoutTls>,
        addr: &Address,
    ) -> Result<bool, ShardError> {
        Ok(self
            .evictable
            .by_addr
            .get(txn, addr.as_bytes())
            .map_err(self.lmdb("get"))?
            .is_some())
    }

    /// The evictable entry of `addr`, if any (for copying between replicas).
    pub(super) fn evictable_entry(
        &self,
        txn: &heed::RoTxn<'_, WithoutTls>,
        addr: &[u8],
    ) -> Result<Option<(u64, u64)>, ShardError> {
        Ok(self
            .evictable
            .by_addr
            .get(txn, addr)
            .map_err(self.lmdb("get"))?
            .and_then(decode_entry))
    }

    /// Evicts `addrs` in one transaction: removes each record and its evictable
    /// entries, counts it out of the store's stats and leaves an `evicted` marker.
    /// `Choose`: only those still evictable here (the first replica decides);
    /// `Follow`: all of them (the others follow its choice). Returns what was evicted.
    pub(super) fn evict(
        &self,
        addrs: &[Address],
        rule: EvictRule,
    ) -> Result<Vec<EvictableObject>, ShardError> {
        let mut wtxn = self.env.write_txn().map_err(self.lmdb("begin write"))?;
        let mut evicted = Vec::with_capacity(addrs.len());
        let mut stats = StoreStats::decode(self.stat_in(&wtxn, STATS_KEY)?.as_deref());
        for addr in addrs {
            let entry = self.evictable_entry(&wtxn, addr.as_bytes())?;
            if entry.is_none() && rule == EvictRule::Choose {
                continue;
            }
            let record_len = self.remove_record(&mut wtxn, addr, &mut stats)?;
            self.evictable
                .evicted
                .put(&mut wtxn, addr.as_bytes(), &[])
                .map_err(self.lmdb("put"))?;
            let (fetched_at_us, len) = entry.unwrap_or((0, record_len.unwrap_or(0)));
            evicted.push(EvictableObject {
                addr: *addr,
                fetched_at_us,
                len,
            });
        }
        self.put_stats_counting_commit(&mut wtxn, &stats)?;
        wtxn.commit().map_err(self.lmdb("commit"))?;
        Ok(evicted)
    }

    /// Removes `addr`'s record, if any, and its evictable entries, without decoding the
    /// record (its length and needle are read where they lie), counting it out of
    /// `stats` and its needle as dead; returns the record's object length.
    fn remove_record(
        &self,
        wtxn: &mut RwTxn<'_>,
        addr: &Address,
        stats: &mut StoreStats,
    ) -> Result<Option<u64>, ShardError> {
        self.remove_evictable(wtxn, addr)?;
        let record = self
            .db
            .get(wtxn, addr.as_bytes())
            .map_err(self.lmdb("get"))?;
        let record_len = record.map(|r| crate::record::object_len_of(r).unwrap_or(0));
        let dead_needle = record.and_then(crate::record::packed_needle_of);
        if let Some((_, bytes)) = dead_needle {
            self.add_dead_since_census(wtxn, bytes)?;
        }
        if let Some(len) = record_len {
            self.db
                .delete(wtxn, addr.as_bytes())
                .map_err(self.lmdb("delete"))?;
            stats.objects = stats.objects.saturating_sub(1);
            stats.bytes = stats.bytes.saturating_sub(len);
        }
        Ok(record_len)
    }

    /// Removes `addr`'s record as [`Index::evict`] does, but leaves no `evicted` marker:
    /// its files stay where they are (`Store::forget_unreadable_record_blocking`).
    /// Removes `addr`'s record; the object length it gave (`None`: there was none).
    pub(super) fn forget_record(&self, addr: &Address) -> Result<Option<u64>, ShardError> {
        let mut wtxn = self.env.write_txn().map_err(self.lmdb("begin write"))?;
        let mut stats = StoreStats::decode(self.stat_in(&wtxn, STATS_KEY)?.as_deref());
        let removed = self.remove_record(&mut wtxn, addr, &mut stats)?;
        self.put_stats_counting_commit(&mut wtxn, &stats)?;
        wtxn.commit().map_err(self.lmdb("commit"))?;
        Ok(removed)
    }

    /// Up to `limit` evictable objects, oldest first.
    pub(super) fn oldest_evictable(
        &self,
        limit: usize,
    ) -> Result<Vec<EvictableObject>, ShardError> {
        let rtxn = self.env.read_txn().map_err(self.lmdb("read"))?;
        let mut oldest = Vec::with_capacity(limit.min(1024));
        let dbs = &self.evictable;
        for entry in dbs.by_age.iter(&rtxn).map_err(self.lmdb("iterate"))? {
            if oldest.len() >= limit {
                break;
            }
            let (key, _) = entry.map_err(self.lmdb("iterate"))?;
            let Some(addr) = key.get(8..).and_then(|a| <[u8; 32]>::try_from(a).ok()) else {
                continue;
            };
            if let Some((at, len)) = self.evictable_entry(&rtxn, &addr)? {
                oldest.push(EvictableObject {
                    addr: Address::from_bytes(addr),
                    fetched_at_us: at,
                    len,
                });
            }
        }
        Ok(oldest)
    }

    /// Addresses with an `evicted` marker.
    pub(super) fn evicted_markers(&self) -> Result<Vec<Address>, ShardError> {
        let rtxn = self.env.read_txn().map_err(self.lmdb("read"))?;
        let mut markers = Vec::new();
        for entry in self
            .evictable
            .evicted
            .iter(&rtxn)
            .map_err(self.lmdb("iterate"))?
        {
            let (key, _) = entry.map_err(self.lmdb("iterate"))?;
            if let Ok(addr) = <[u8; 32]>::try_from(key) {
                markers.push(Address::from_bytes(addr));
            }
        }
        Ok(markers)
    }

    /// Clears the `evicted` markers of `addrs` (their files are gone); one transaction.
    pub(super) fn clear_evicted(&self, addrs: &[Address]) -> Result<(), ShardError> {
        let mut wtxn = self.env.write_txn().map_err(self.lmdb("begin write"))?;
        for addr in addrs {
            self.evictable
                .evicted
                .delete(&mut wtxn, addr.as_bytes())
                .map_err(self.lmdb("delete"))?;
        }
        wtxn.commit().map_err(self.lmdb("commit"))
    }

    /// Recounts the evictable stats from the entries (after replicas are merged).
    pub(super) fn recount_evictable(&self, wtxn: &mut RwTxn<'_>) -> Result<(), ShardError> {
        let mut stats = StoreStats::default();
        for entry in self
            .evictable
            .by_addr
            .iter(wtxn)
            .map_err(self.lmdb("iterate"))?
        {
            let (_, value) = entry.map_err(self.lmdb("iterate"))?;
            if let Some((_, len)) = decode_entry(value) {
                stats.objects = stats.objects.saturating_add(1);
                stats.bytes = stats.bytes.saturating_add(len);
            }
        }
        self.put_evictable_stats(wtxn, stats)
    }
}
