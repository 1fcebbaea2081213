//! `ProviderStore`: libp2p-kad's `RecordStore` on LMDB, so provider records survive a
//! restart and a node can provide millions of keys (libp2p's `MemoryStore` holds 1,024
//! provided keys and nothing across restarts). Design note: `docs/design/dht.md`.
//!
//! Two databases in one LMDB environment (`<data dir 0>/dht/`):
//! - `providers` — records other nodes published to us. Key: `len(record key)` ‖ record
//!   key ‖ provider `PeerId`; value: expiry (u64 ms since the epoch, big-endian) ‖ the
//!   provider's addresses. A key's providers are one contiguous range; at most
//!   [`StoreLimits::providers_per_key_max`] per key and
//!   [`StoreLimits::provider_records_max`] in all (refused past them, counted).
//! - `by_source` and `sources` — who holds how much of `providers`: a source's records
//!   in the order they came (`by_source`: source ‖ sequence number → record's key; a
//!   source is the host its provider's connection came from), and a count per source.
//!   When the store is full, a record from a source holding less takes the place of the
//!   oldest from the source holding most (max-min fairness, `store/sources.rs`): one host
//!   flooding the store with records of made-up peers cannot refuse everyone else's.
//!   Written in the same transaction as the records they count.
//! - `meta` — the layout version (a store of another layout is emptied at open) and the
//!   next sequence number.
//! - `provided` — the keys this node provides. Key: `sha256(record key)` (the Kademlia
//!   distance key) ‖ record key; value: when it was last published (u64 ms, 0 = never).
//!   Ordered by distance key, so a region of the key space is a contiguous range: what
//!   the reprovide sweep walks ([`ProviderStore::provided_from`]).
//!
//! Writes of others' records are buffered and committed together by
//! [`ProviderStore::flush`] (the DHT thread calls it every tick and a full buffer calls
//! it at once): one LMDB commit per batch, not per received record. A process crash
//! loses at most the last tick of others' records, which their providers republish
//! anyway. Our own keys are written by [`ProviderStore::provide`] in one commit per
//! batch. Commits are not synced (`MDB_NOSYNC`): an fsync held the DHT thread, and
//! every peer waiting on it, for tens of milliseconds per commit on a busy disk; a store
//! whose unsynced commits outlived a reboot is thrown away at open instead, and a clean
//! close syncs it (`store/unsynced.rs`). Each commit's time is counted
//! ([`StoreCounters::commit_ms_buckets`], `ron_dht_store_commit_seconds`).
//!
//! Checked at the trust boundary, in pairs: a record of others is checked before it
//! is committed ([`ProviderStore::flush`], `assert!`: a broken one is a bug of this
//! node, and is never written) and after it is read back from LMDB (`debug_assert!`;
//! release builds use what they read as before, skipping a record that does not
//! decode). Per record: its key's length, a sane expiry, the count and sizes of its
//! addresses (`layout::record_flaw`). Per key: its providers stay within
//! [`StoreLimits::providers_per_key_max`] (asserted as a record is buffered; checked
//! in debug builds as a key's records are read, since a store opened with a lower cap
//! than it was filled under may hold more). In all: a commit never takes the records
//! past [`StoreLimits::provider_records_max`], nor grows them while past it. The
//! on-disk layout, its encoding and decoding, and the per-record checks live in
//! `store/layout.rs`.
//!
//! A provider's addresses are never what its record claims: the IP its connection came
//! from with the TCP ports it claims (`ProviderStore::peer_connected` tells the store
//! each peer's IP) — its libp2p ones and its OAP/1 one, which a resolve names it by
//! without dialing it (`node::address::record_addresses`) — so a record cannot make
//! this node hand out a third host; a record from a peer with no connection left keeps
//! no address.
//!
//! `provided()` — the trait's walk over our own records, used only by libp2p-kad's
//! built-in republish job — yields nothing: that job collects every record into memory
//! and runs one lookup per key, so it is disabled (`set_provider_publication_interval(None)`)
//! and the sweep publishes instead.

mod layout;
pub(crate) mod sources;
mod unsynced;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use heed::types::Bytes as RawBytes;
use heed::{Database, Env, EnvFlags, EnvOpenOptions, RwTxn, WithoutTls};
use libp2p::kad::store::{Error as RecordStoreError, RecordStore};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use libp2p::PeerId;
use ron_link::dht::{bucket_of, LOOKUP_BUCKETS_MS};
use unsynced::Durability;

use crate::error::DhtError;
use crate::node::address::record_addresses;
use layout::{
    by_source_db_key, decode_provided, decode_provider, encode_provider_value, expiry_ms,
    provided_db_key, providers_db_key, providers_db_prefix, record_flaw, source_of_value,
    SourceSeq, DISTANCE_KEY_BYTES, LAYOUT_KEY, LAYOUT_VERSION, NEXT_SEQ_KEY, PUBLISHED_NEVER_MS,
};
pub use layout::{
    distance_key, unix_ms, ProvidedKey, PROVIDER_ADDRS_MAX, PROVIDER_ADDR_BYTES_MAX,
    PROVIDER_TTL_MAX, RECORD_KEY_BYTES_MAX,
};
use sources::{Source, SourceCounts};

/// Others' record writes buffered before a flush is forced.
pub const PENDING_WRITES_MAX: usize = 4_096;

/// Sizes fixed at start-up.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    /// LMDB map size: the most the two databases may take on disk.
    pub map_bytes_max: usize,
    /// Records from others, all keys together.
    pub provider_records_max: u64,
    /// Providers kept per key (the first ones win: a flood of fake providers for a key
    /// cannot push out the real ones).
    pub providers_per_key_max: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            map_bytes_max: 8 << 30,
            provider_records_max: 4_000_000,
            providers_per_key_max: 20,
        }
    }
}

/// What the store did that an operator may want to see.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreCounters {
    /// Others' records refused: the store or the key was full, or the record was malformed.
    pub records_refused: u64,
    /// Others' records removed from a full store to make room for one from a source
    /// holding fewer (`store/sources.rs`).
    pub records_evicted: u64,
    /// Expired records of others removed by [`ProviderStore::remove_expired`].
    pub records_expired: u64,
    /// LMDB writes that failed (logged with the error).
    pub write_failures: u64,
    /// Commits by duration: `commit_ms_buckets[i]` counts those of at most
    /// `LOOKUP_BUCKETS_MS[i]` ms (not cumulative), the last one the rest.
    pub commit_ms_buckets: [u64; LOOKUP_BUCKETS_MS.len() + 1],
    pub commit_ms_sum: u64,
}

impl StoreCounters {
    /// A commit that took `elapsed`.
    fn count_commit(&mut self, elapsed: Duration) {
        let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        self.commit_ms_buckets[bucket_of(&LOOKUP_BUCKETS_MS, elapsed_ms)] += 1;
        self.commit_ms_sum = self.commit_ms_sum.saturating_add(elapsed_ms);
    }
}

/// Commits `wtxn`, its time counted in `counters`.
fn commit_counted(wtxn: RwTxn<'_>, counters: &mut StoreCounters) -> heed::Result<()> {
    let started = Instant::now();
    let result = wtxn.commit();
    counters.count_commit(started.elapsed());
    result
}

/// A record of others chosen to give way: its keys in `by_source` and `providers`.
struct Victim {
    by_source_key: Vec<u8>,
    db_key: Vec<u8>,
}

/// The LMDB provider store; see the module doc.
#[derive(Debug)]
pub struct ProviderStore {
    env: Env<WithoutTls>,
    providers: Database<RawBytes, RawBytes>,
    provided: Database<RawBytes, RawBytes>,
    /// Source ‖ sequence number → `providers` key: each source's records, one range per
    /// source, oldest first.
    by_source: Database<RawBytes, RawBytes>,
    /// Source → how many records of others it holds (u64, big-endian).
    source_counts: Database<RawBytes, RawBytes>,
    meta: Database<RawBytes, RawBytes>,
    /// The sequence number the next new record of others gets (committed with it).
    next_seq: SourceSeq,
    local: PeerId,
    limits: StoreLimits,
    /// Others' record writes not yet committed: `providers` key → value (`None`: delete).
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Where the expiry walk goes on (`None`: from the start).
    expire_from: Option<Vec<u8>>,
    /// Records of others per source as they will be once `pending` is committed.
    sources: SourceCounts,
    /// Per source, the `by_source` key of the last record evicted since the last
    /// commit: the next victim is looked for after it (the ones before are deleted in
    /// `pending`). Emptied by every commit.
    evicted_after: HashMap<Source, Vec<u8>>,
    counters: StoreCounters,
    path: PathBuf,
    /// The IP each connected peer's connection came from (the DHT thread keeps it
    /// current; bounded by its connection limits).
    peer_ips: HashMap<PeerId, IpAddr>,
    /// Whether commits are synced; unsynced ones are synced as the store closes.
    durability: Durability,
}

impl ProviderStore {
    /// Opens (creating if needed) the store in `dir`. Blocking. Its commits are not
    /// synced where the boot's id can be read (`store/unsynced.rs`).
    pub fn open(dir: &Path, local: PeerId, limits: StoreLimits) -> Result<Self, DhtError> {
        Self::open_in_boot(dir, local, limits, unsynced::current_boot_id().as_deref())
    }

    /// [`ProviderStore::open`] as if this were the boot `boot` (none: unknown).
    fn open_in_boot(
        dir: &Path,
        local: PeerId,
        limits: StoreLimits,
        boot: Option<&str>,
    ) -> Result<Self, DhtError> {
        let io = |op| {
            let path = dir.to_path_buf();
            move |source| DhtError::Io { op, path, source }
        };
        std::fs::create_dir_all(dir).map_err(io("create dir"))?;
        let prepared = unsynced::prepare(dir, boot).map_err(io("check the unsynced marker"))?;
        if prepared.discarded {
            tracing::warn!(
                "provider store {}: the machine restarted while commits were not yet synced: \
                 the store starts empty (others' records return as their providers republish \
                 them, this node's keys as the shards announce them at start)",
                dir.display()
            );
        }
        let lmdb = |op| {
            let path = dir.to_path_buf();
            move |source| DhtError::Store { op, path, source }
        };
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options.map_size(limits.map_bytes_max).max_dbs(5);
        let flags = match prepared.durability {
            Durability::Unsynced => EnvFlags::NO_SYNC | EnvFlags::NO_META_SYNC,
            Durability::Synced => EnvFlags::NO_META_SYNC,
        };
        // SAFETY: both keep LMDB's integrity while the machine runs; after a system
        // crash NO_META_SYNC may undo the last commit, and NO_SYNC may leave a commit
        // torn — which is why a store with unsynced commits that outlived a reboot is
        // thrown away (`store/unsynced.rs`): all of it is soft state, others' records
        // republished by their providers, our own keys announced again at start.
        #[allow(unsafe_code)]
        unsafe {
            options.flags(flags);
        }
        // SAFETY: the DHT dir is opened once, by the DHT thread of the one process that
        // holds the data dir's lock; nothing else writes its files.
        #[allow(unsafe_code)]
        let env = unsafe { options.open(dir) }.map_err(lmdb("open"))?;
        let mut wtxn = env.write_txn().map_err(lmdb("begin"))?;
        let providers = env
            .create_database(&mut wtxn, Some("providers"))
            .map_err(lmdb("create database"))?;
        let provided = env
            .create_database(&mut wtxn, Some("provided"))
            .map_err(lmdb("create database"))?;
        let by_source = env
            .create_database(&mut wtxn, Some("by_source"))
            .map_err(lmdb("create database"))?;
        let source_counts = env
            .create_database(&mut wtxn, Some("sources"))
            .map_err(lmdb("create database"))?;
        let meta: Database<RawBytes, RawBytes> = env
            .create_database(&mut wtxn, Some("meta"))
            .map_err(lmdb("create database"))?;
        let layout = meta.get(&wtxn, LAYOUT_KEY).map_err(lmdb("get"))?;
        if layout != Some(&LAYOUT_VERSION.to_be_bytes()[..]) {
            let stale = providers.len(&wtxn).map_err(lmdb("count"))?;
            if stale > 0 {
                tracing::warn!(
                    "provider store {}: {stale} records of others in an older layout \
                     dropped (their providers republish them)",
                    dir.display()
                );
            }
            for db in [providers, by_source, source_counts] {
                db.clear(&mut wtxn).map_err(lmdb("clear"))?;
            }
            meta.put(&mut wtxn, LAYOUT_KEY, &LAYOUT_VERSION.to_be_bytes())
                .map_err(lmdb("put"))?;
        }
        let next_seq = meta
            .get(&wtxn, NEXT_SEQ_KEY)
            .map_err(lmdb("get"))?
            .and_then(|seq| seq.try_into().ok())
            .map_or(0, u64::from_be_bytes);
        wtxn.commit().map_err(lmdb("commit"))?;
        let mut store = ProviderStore {
            env,
            providers,
            provided,
            by_source,
            source_counts,
            meta,
            next_seq: SourceSeq(next_seq),
            local,
            limits,
            pending: BTreeMap::new(),
            expire_from: None,
            sources: SourceCounts::default(),
            evicted_after: HashMap::new(),
            counters: StoreCounters::default(),
            path: dir.to_path_buf(),
            peer_ips: HashMap::new(),
            durability: prepared.durability,
        };
        store.sources = match store.committed_source_counts()? {
            Ok(counts) => counts,
            Err(mismatch) => {
                tracing::warn!(
                    "provider store {}: {mismatch}; every record of others dropped \
                     (their providers republish them)",
                    dir.display()
                );
                store.drop_others_records()?;
                SourceCounts::default()
            }
        };
        Ok(store)
    }

    /// Removes every record of others and their indexes, in one commit (soft state:
    /// their providers republish them).
    fn drop_others_records(&mut self) -> Result<(), DhtError> {
        let mut wtxn = self.env.write_txn().map_err(self.lmdb("begin"))?;
        for db in [self.providers, self.by_source, self.source_counts] {
            db.clear(&mut wtxn).map_err(self.lmdb("clear"))?;
        }
        wtxn.commit().map_err(self.lmdb("commit"))
    }

    /// The per-source counts as committed (one entry per source), or, when they do not
    /// add up to the records of others held (the store damaged), what differs.
    fn committed_source_counts(&self) -> Result<Result<SourceCounts, String>, DhtError> {
        let rtxn = self.env.read_txn().map_err(self.lmdb("begin"))?;
        let mut counts = SourceCounts::default();
        for entry in self.source_counts.iter(&rtxn).map_err(self.lmdb("iter"))? {
            let (source, count) = entry.map_err(self.lmdb("iter"))?;
            let source = Source::from_bytes(source);
            let count = count.try_into().ok().map(u64::from_be_bytes);
            if let (Some(source), Some(count)) = (source, count) {
                counts.set(source, count);
            }
        }
        let records = self.providers.len(&rtxn).map_err(self.lmdb("count"))?;
        if counts.total() != records {
            return Ok(Err(format!(
                "the per-source counts add up to {} records of others, the providers \
                 database holds {records}",
                counts.total()
            )));
        }
        Ok(Ok(counts))
    }

    /// `peer` is connected from `ip`: where its records say it is from now on.
    pub fn peer_connected(&mut self, peer: PeerId, ip: IpAddr) {
        self.peer_ips.insert(peer, ip);
    }

    /// `peer`'s last connection closed.
    pub fn peer_disconnected(&mut self, peer: &PeerId) {
        self.peer_ips.remove(peer);
    }

    pub fn counters(&self) -> StoreCounters {
        self.counters
    }

    fn lmdb(&self, op: &'static str) -> impl FnOnce(heed::Error) -> DhtError + '_ {
        move |source| DhtError::Store {
            op,
            path: self.path.clone(),
            source,
        }
    }

    /// Records this node as a provider of `keys` (never published yet unless already
    /// provided), in one commit. Returns the keys that were new.
    pub fn provide(&mut self, keys: &[RecordKey]) -> Result<Vec<RecordKey>, DhtError> {
        let mut wtxn = self.env.write_txn().map_err(self.lmdb("begin"))?;
        let mut added = Vec::new();
        for key in keys
            .iter()
            .filter(|k| k.as_ref().len() <= RECORD_KEY_BYTES_MAX)
        {
            let db_key = provided_db_key(key);
            if self
                .provided
                .get(&wtxn, &db_key)
                .map_err(self.lmdb("get"))?
                .is_none()
            {
                let never = PUBLISHED_NEVER_MS.to_be_bytes();
                self.provided
                    .put(&mut wtxn, &db_key, &never)
                    .map_err(self.lmdb("put"))?;
                added.push(key.clone());
            }
        }
        commit_counted(wtxn, &mut self.counters).map_err(self.lmdb("commit"))?;
        Ok(added)
    }

    /// Stops providing `keys` (one commit).
    pub fn unprovide(&mut self, keys: &[RecordKey]) -> Result<(), DhtError> {
        let mut wtxn = self.env.write_txn().map_err(self.lmdb("begin"))?;
        for key in keys {
            self.provided
                .delete(&mut wtxn, &provided_db_key(key))
                .map_err(self.lmdb("delete"))?;
        }
        commit_counted(wtxn, &mut self.counters).map_err(self.lmdb("commit"))?;
        Ok(())
    }

    /// Records that `keys` were published at `at_ms` (one commit).
    pub fn mark_published(&mut self, keys: &[RecordKey], at_ms: u64) -> Result<(), DhtError> {
        let mut wtxn = self.env.write_txn().map_err(self.lmdb("begin"))?;
        for key in keys {
            let db_key = provided_db_key(key);
            // A key unprovided since its publication started stays gone.
            if self
                .provided
                .get(&wtxn, &db_key)
                .map_err(self.lmdb("get"))?
                .is_some()
            {
                self.provided
                    .put(&mut wtxn, &db_key, &at_ms.to_be_bytes())
                    .map_err(self.lmdb("put"))?;
            }
        }
        commit_counted(wtxn, &mut self.counters).map_err(self.lmdb("commit"))?;
        Ok(())
    }

    pub fn is_provided(&self, key: &RecordKey) -> Result<bool, DhtError> {
        let rtxn = self.env.read_txn().map_err(self.lmdb("begin"))?;
        let found = self
            .provided
            .get(&rtxn, &provided_db_key(key))
            .map_err(self.lmdb("get"))?;
        Ok(found.is_some())
    }

    /// How many keys this node provides (LMDB keeps the count: O(1)).
    pub fn provided_count(&self) -> Result<u64, DhtError> {
        let rtxn = self.env.read_txn().map_err(self.lmdb("begin"))?;
        self.provided.len(&rtxn).map_err(self.lmdb("count"))
    }

    /// How many records of others are stored (committed ones).
    pub fn provider_record_count(&self) -> Result<u64, DhtError> {
        let rtxn = self.env.read_txn().map_err(self.lmdb("begin"))?;
        self.providers.len(&rtxn).map_err(self.lmdb("count"))
    }

    /// Up to `limit` provided keys in distance-key order, from the first whose distance
    /// key is `>= from`: one region of the key space per call, for the sweep.
    pub fn provided_from(
        &self,
        from: &[u8; DISTANCE_KEY_BYTES],
        limit: usize,
    ) -> Result<Vec<ProvidedKey>, DhtError> {
        let rtxn = self.env.read_txn().map_err(self.lmdb("begin"))?;
        let range = (
            std::ops::Bound::Included(&from[..]),
            std::ops::Bound::Unbounded,
        );
        let iter = self
            .provided
            .range(&rtxn, &range)
            .map_err(self.lmdb("range"))?;
        let mut out = Vec::with_capacity(limit.min(4_096));
        for entry in iter.take(limit) {
            let (db_key, value) = entry.map_err(self.lmdb("range"))?;
            if let Some(key) = decode_provided(db_key, value) {
                out.push(key);
            }
        }
        Ok(out)
    }

    /// Adds records of others (a peer's `/ron/provide/2` batch); the same rules as
    /// [`RecordStore::add_provider`], buffered like them: committed at the next
    /// [`ProviderStore::flush`] (the DHT thread's tick), not one commit per batch — a peer
    /// sending a key at a time would otherwise have a commit per request. Returns how many
    /// were stored.
    pub fn add_providers(&mut self, records: Vec<ProviderRecord>) -> usize {
        records
            .into_iter()
            .filter_map(|record| self.add_provider(record).ok())
            .count()
    }

    /// Whether writes of others' records wait for [`ProviderStore::flush`].
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Commits the buffered writes of others' records (one LMDB commit). After it, the
    /// per-source counts kept in memory must be the committed ones (asserted).
    pub fn flush(&mut self) -> Result<(), DhtError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.evicted_after.clear();
        let started = Instant::now();
        let result = self.commit_pending(&pending);
        self.counters.count_commit(started.elapsed());
        match result {
            Ok(committed) => {
                for (source, count) in committed {
                    assert_eq!(
                        self.sources.count(source),
                        count,
                        "provider store: the records of others from {source:?} as counted in \
                         memory and as committed"
                    );
                }
                Ok(())
            }
            Err(e) => {
                self.counters.write_failures += 1;
                match self.committed_source_counts() {
                    Ok(Ok(counts)) => self.sources = counts,
                    Ok(Err(mismatch)) => tracing::warn!("provider store: {mismatch}"),
                    Err(reread) => tracing::warn!("provider store: {reread}"),
                }
                Err(e)
            }
        }
    }

    /// Writes the buffered records in one transaction, with the `by_source` index and
    /// the per-source counts; each record is checked first, and the records' count after
    /// it (see the module doc: paired checks). Returns the committed count of each
    /// source the writes touched.
    fn commit_pending(
        &self,
        pending: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ) -> Result<HashMap<Source, u64>, DhtError> {
        let now_ms = unix_ms(SystemTime::now());
        let mut wtxn = self.env.write_txn().map_err(self.lmdb("begin"))?;
        let before = self.providers.len(&wtxn).map_err(self.lmdb("count"))?;
        let mut deltas: HashMap<Source, i64> = HashMap::new();
        for (db_key, value) in pending {
            let flaw = value
                .as_deref()
                .and_then(|v| record_flaw(db_key, v, Some(now_ms)));
            assert!(
                flaw.is_none(),
                "provider store: a record of others about to be committed breaks its \
                 invariant: {}",
                flaw.unwrap_or_default()
            );
            let old = self
                .providers
                .get(&wtxn, db_key)
                .map_err(self.lmdb("get"))?;
            let old = old.and_then(source_of_value);
            let new = value.as_deref().and_then(source_of_value);
            if old != new {
                if let Some(old) = old {
                    self.by_source
                        .delete(&mut wtxn, &by_source_db_key(old))
                        .map_err(self.lmdb("delete"))?;
                    *deltas.entry(old.0).or_default() -= 1;
                }
                if let Some(new) = new {
                    self.by_source
                        .put(&mut wtxn, &by_source_db_key(new), db_key)
                        .map_err(self.lmdb("put"))?;
                    *deltas.entry(new.0).or_default() += 1;
                }
            }
            match value {
                Some(value) => self.providers.put(&mut wtxn, db_key, value),
                None => self.providers.delete(&mut wtxn, db_key).map(drop),
            }
            .map_err(self.lmdb("write"))?;
        }
        self.meta
            .put(&mut wtxn, NEXT_SEQ_KEY, &self.next_seq.0.to_be_bytes())
            .map_err(self.lmdb("put"))?;
        let mut committed = HashMap::with_capacity(deltas.len());
        for (source, delta) in deltas {
            let stored = self
                .source_counts
                .get(&wtxn, &source.0)
                .map_err(self.lmdb("get"))?
                .and_then(|count| count.try_into().ok())
                .map_or(0, u64::from_be_bytes);
            let count = stored.checked_add_signed(delta);
            assert!(
                count.is_some(),
                "provider store: {source:?} holds {stored} records of others, {delta} changed"
            );
            let count = count.unwrap_or(0);
            if count == 0 {
                self.source_counts.delete(&mut wtxn, &source.0).map(drop)
            } else {
                self.source_counts
                    .put(&mut wtxn, &source.0, &count.to_be_bytes())
            }
            .map_err(self.lmdb("write"))?;
            committed.insert(source, count);
        }
        let after = self.providers.len(&wtxn).map_err(self.lmdb("count"))?;
        let cap = self.limits.provider_records_max;
        assert!(
            after <= before.max(cap),
            "provider store: provider_records_max: a commit takes the records of others \
             from {before} to {after}, past the cap of {cap}"
        );
        wtxn.commit().map_err(self.lmdb("commit"))?;
        Ok(committed)
    }

    /// Looks at up to `scan_max` records of others, from where the last call stopped
    /// (the start after the end), and removes the expired ones, at most `removals_max`
    /// (the walk goes on from the next next time): a bounded step of a walk over the whole
    /// database, not a stall — each removal updates the indexes, and a flood's records
    /// all expire together. Returns how many were removed.
    pub fn remove_expired(
        &mut self,
        now_ms: u64,
        scan_max: usize,
        removals_max: usize,
    ) -> Result<usize, DhtError> {
        self.flush()?;
        // LMDB takes no empty key: a walk from the start begins at the smallest one.
        let from = self.expire_from.take().unwrap_or_else(|| vec![0]);
        let mut expired = Vec::new();
        {
            let rtxn = self.env.read_txn().map_err(self.lmdb("begin"))?;
            let range = (
                std::ops::Bound::Included(from.as_slice()),
                std::ops::Bound::Unbounded,
            );
            let iter = self
                .providers
                .range(&rtxn, &range)
                .map_err(self.lmdb("range"))?;
            for (seen, entry) in iter.enumerate() {
                let (db_key, value) = entry.map_err(self.lmdb("range"))?;
                if seen == scan_max || expired.len() == removals_max {
                    self.expire_from = Some(db_key.to_vec());
                    break;
                }
                if expiry_ms(value).is_none_or(|at| at <= now_ms) {
                    expired.push(db_key.to_vec());
                }
            }
        }
        let removed = expired.len();
        for db_key in expired {
            self.buffer_write(db_key, None)?;
        }
        self.flush()?;
        self.counters.records_expired += removed as u64;
        Ok(removed)
    }

    /// Others' records for `key`: committed ones overlaid with the pending writes.
    fn others(&self, key: &RecordKey) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, DhtError> {
        let prefix = providers_db_prefix(key);
        let rtxn = self.env.read_txn().map_err(self.lmdb("begin"))?;
        let mut found = BTreeMap::new();
        let iter = self
            .providers
            .prefix_iter(&rtxn, &prefix)
            .map_err(self.lmdb("prefix"))?;
        for entry in iter {
            let (db_key, value) = entry.map_err(self.lmdb("prefix"))?;
            debug_assert!(
                record_flaw(db_key, value, None).is_none(),
                "provider store: a record of others read back breaks its invariant: {}",
                record_flaw(db_key, value, None).unwrap_or_default()
            );
            found.insert(db_key.to_vec(), value.to_vec());
        }
        for (db_key, value) in self.pending.range(prefix.clone()..) {
            if !db_key.starts_with(&prefix) {
                break;
            }
            match value {
                Some(value) => found.insert(db_key.clone(), value.clone()),
                None => found.remove(db_key),
            };
        }
        debug_assert!(
            found.len() <= self.limits.providers_per_key_max,
            "provider store: providers_per_key_max: a key holds {} providers, past the cap \
             of {}",
            found.len(),
            self.limits.providers_per_key_max
        );
        Ok(found)
    }

    /// Buffers a record of others from `source`: refused if its key holds
    /// `providers_per_key_max` providers already, or `source`'s share of them
    /// ([`host_share_of_key`]), or if the store is full and no source gives way to
    /// `source` (`store/sources.rs`).
    fn add_others_record(
        &mut self,
        record: ProviderRecord,
        source: Source,
    ) -> Result<(), RecordStoreError> {
        if record.key.as_ref().len() > RECORD_KEY_BYTES_MAX {
            self.counters.records_refused += 1;
            return Err(RecordStoreError::ValueTooLarge);
        }
        let db_key = providers_db_key(&record.key, &record.provider);
        let others = self.others(&record.key).map_err(|e| {
            tracing::warn!("provider store: {e}");
            RecordStoreError::MaxProvidedKeys
        })?;
        let known = others.get(&db_key).map(|old| source_of_value(old));
        if known.is_none() {
            let key_full = others.len() >= self.limits.providers_per_key_max;
            let host_share_taken = !source.is_unlimited()
                && others
                    .values()
                    .filter(|v| source_of_value(v).is_some_and(|(s, _)| s == source))
                    .count()
                    >= host_share_of_key(self.limits.providers_per_key_max);
            let full = self.sources.total() >= self.limits.provider_records_max;
            if key_full || host_share_taken || (full && !self.make_room_for(source)) {
                self.counters.records_refused += 1;
                return Err(RecordStoreError::MaxProvidedKeys);
            }
        }
        // Paired with the check in `others` as a key's records are read.
        assert!(
            known.is_some() || others.len() < self.limits.providers_per_key_max,
            "provider store: providers_per_key_max: a new provider for a key that holds {} \
             already (cap {})",
            others.len(),
            self.limits.providers_per_key_max
        );
        // A republication from the same source keeps the record's place.
        let seq = match known.flatten() {
            Some((known_source, seq)) if known_source == source => seq,
            _ => {
                let seq = self.next_seq;
                self.next_seq.0 += 1;
                seq
            }
        };
        let value = encode_provider_value(&record, (source, seq));
        self.buffer_write(db_key, Some(value)).map_err(|e| {
            tracing::warn!("provider store: {e}");
            RecordStoreError::MaxProvidedKeys
        })
    }

    /// Evicts a record of the source that gives way to `newcomer` in a full store, if
    /// one does; returns whether room was made.
    fn make_room_for(&mut self, newcomer: Source) -> bool {
        let Some(largest) = self.sources.gives_way_to(newcomer) else {
            return false;
        };
        let evicted = self
            .record_to_evict(largest)
            .and_then(|victim| match victim {
                Some(db_key) => self.buffer_write(db_key, None).map(|()| true),
                None => Ok(false),
            });
        match evicted {
            Ok(evicted) => {
                self.counters.records_evicted += u64::from(evicted);
                evicted
            }
            Err(e) => {
                tracing::warn!("provider store: {e}");
                false
            }
        }
    }

    /// The oldest committed record of `source` that the pending writes leave alone, after
    /// the last one evicted (its `providers` key); if there is none, the pending writes
    /// are committed and the search starts again.
    fn record_to_evict(&mut self, source: Source) -> Result<Option<Vec<u8>>, DhtError> {
        for committed_first in [false, true] {
            if committed_first {
                if self.pending.is_empty() {
                    return Ok(None);
                }
                self.flush()?;
            }
            if let Some(victim) = self.committed_record_of(source)? {
                self.evicted_after.insert(source, victim.by_source_key);
                return Ok(Some(victim.db_key));
            }
        }
        Ok(None)
    }

    /// The first record of `source` in `by_source` after the last one evicted that the
    /// pending writes leave alone: its `by_source` and `providers` keys.
    fn committed_record_of(&self, source: Source) -> Result<Option<Victim>, DhtError> {
        let rtxn = self.env.read_txn().map_err(self.lmdb("begin"))?;
        let from = match self.evicted_after.get(&source) {
            Some(last) => std::ops::Bound::Excluded(last.as_slice()),
            None => std::ops::Bound::Included(&source.0[..]),
        };
        let range = (from, std::ops::Bound::Unbounded);
        let iter = self
            .by_source
            .range(&rtxn, &range)
            .map_err(self.lmdb("range"))?;
        for entry in iter {
            let (by_source_key, db_key) = entry.map_err(self.lmdb("range"))?;
            if !by_source_key.starts_with(&source.0) {
                break;
            }
            if !self.pending.contains_key(db_key) {
                return Ok(Some(Victim {
                    by_source_key: by_source_key.to_vec(),
                    db_key: db_key.to_vec(),
                }));
            }
        }
        Ok(None)
    }

    /// Buffers a write of others' records (`None`: a delete), counted under the sources
    /// of the record it replaces and of the one it writes; a full buffer is committed at
    /// once.
    fn buffer_write(&mut self, db_key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), DhtError> {
        let replaced = match self.pending.get(&db_key) {
            Some(pending) => pending.as_deref().and_then(source_of_value),
            None => {
                let rtxn = self.env.read_txn().map_err(self.lmdb("begin"))?;
                let committed = self.providers.get(&rtxn, &db_key);
                committed
                    .map_err(self.lmdb("get"))?
                    .and_then(source_of_value)
            }
        };
        if let Some((replaced, _)) = replaced {
            self.sources.remove(replaced);
        }
        if let Some((written, _)) = value.as_deref().and_then(source_of_value) {
            self.sources.add(written);
        }
        self.pending.insert(db_key, value);
        if self.pending.len() >= PENDING_WRITES_MAX {
            if let Err(e) = self.flush() {
                tracing::warn!("provider store: {e}");
            }
        }
        Ok(())
    }

    fn own_record(&self, key: &RecordKey) -> Option<ProviderRecord> {
        match self.is_provided(key) {
            Ok(true) => Some(ProviderRecord::new(key.clone(), self.local, Vec::new())),
            Ok(false) => None,
            Err(e) => {
                tracing::warn!("provider store: {e}");
                None
            }
        }
    }
}

/// Closing syncs what was committed unsynced, then removes the marker
/// (`store/unsynced.rs`): a store closed this way is trusted after a reboot. A sync that
/// fails leaves the marker, and the store is thrown away if the machine restarts first.
impl Drop for ProviderStore {
    fn drop(&mut self) {
        if self.durability == Durability::Synced {
            return;
        }
        let closed = self
            .env
            .force_sync()
            .map_err(|e| e.to_string())
            .and_then(|()| unsynced::mark_synced(&self.path).map_err(|e| e.to_string()));
        if let Err(e) = closed {
            tracing::warn!(
                "provider store {}: sync at close: {e} (the store is thrown away if the \
                 machine restarts before its next open)",
                self.path.display()
            );
        }
    }
}

impl RecordStore for ProviderStore {
    type RecordsIter<'a> = std::iter::Empty<Cow<'a, Record>>;
    type ProvidedIter<'a> = std::iter::Empty<Cow<'a, ProviderRecord>>;

    /// ron publishes no value records: there are none to get.
    fn get(&self, _key: &RecordKey) -> Option<Cow<'_, Record>> {
        None
    }

    /// ron accepts no value records (providers only): an unauthenticated value from any
    /// peer is a place to park data on our disk.
    fn put(&mut self, _record: Record) -> Result<(), RecordStoreError> {
        Err(RecordStoreError::MaxRecords)
    }

    fn remove(&mut self, _key: &RecordKey) {}

    fn records(&self) -> Self::RecordsIter<'_> {
        std::iter::empty()
    }

    fn add_provider(&mut self, mut record: ProviderRecord) -> Result<(), RecordStoreError> {
        if record.provider == self.local {
            return self
                .provide(std::slice::from_ref(&record.key))
                .map(drop)
                .map_err(|e| {
                    tracing::warn!("provider store: {e}");
                    RecordStoreError::MaxProvidedKeys
                });
        }
        let ip = self.peer_ips.get(&record.provider).copied();
        record.addresses = match ip {
            Some(ip) => record_addresses(ip, &record.addresses, PROVIDER_ADDRS_MAX),
            None => Vec::new(),
        };
        let source = self.sources.counted_as(Source::of(ip));
        self.add_others_record(record, source)
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let others = self.others(key).unwrap_or_else(|e| {
            tracing::warn!("provider store: {e}");
            BTreeMap::new()
        });
        let now = (Instant::now(), SystemTime::now());
        let mut records: Vec<ProviderRecord> = self.own_record(key).into_iter().collect();
        records.extend(
            others
                .iter()
                .filter_map(|(db_key, value)| decode_provider(key, db_key, value, now)),
        );
        records
    }

    /// Empty: see the module doc (the sweep publishes our keys).
    fn provided(&self) -> Self::ProvidedIter<'_> {
        std::iter::empty()
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) {
        if *provider == self.local {
            if let Err(e) = self.unprovide(std::slice::from_ref(key)) {
                tracing::warn!("provider store: {e}");
            }
            return;
        }
        if let Err(e) = self.buffer_write(providers_db_key(key, provider), None) {
            tracing::warn!("provider store: {e}");
        }
    }
}

/// The providers of one key that records from one host may be: a quarter of the key's
/// cap (5 of 20), at least one. Peer ids cost nothing to make: without it one host's 20
/// made-up providers took every place of a key, and holders found later — repairs,
/// joiners — were refused by every record holder. Hosts of an operator's own networks
/// (loopback, private) are not limited, as everywhere in the DHT.
fn host_share_of_key(providers_per_key_max: usize) -> usize {
    (providers_per_key_max / 4).max(1)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use libp2p::Multiaddr;

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ron-dht-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn key(n: u32) -> RecordKey {
        RecordKey::new(&[&[0x1e, 0x20][..], &[n as u8; 28], &n.to_be_bytes()].concat())
    }

    fn others_record(k: &RecordKey, provider: PeerId, ttl: Option<Duration>) -> ProviderRecord {
        ProviderRecord {
            key: k.clone(),
            provider,
            expires: ttl.map(|t| Instant::now() + t),
            addresses: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
        }
    }

    /// What a process that dies leaves of `dir`: the files as the page cache holds them.
    fn copy_of(dir: &Path, name: &str) -> PathBuf {
        let copy = scratch(name);
        std::fs::create_dir_all(&copy).unwrap();
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
        copy
    }

    #[test]
    fn unsynced_commits_are_kept_when_the_process_dies_and_dropped_after_a_reboot() {
        let dir = scratch("unsynced");
        let local = PeerId::random();
        let keys: Vec<RecordKey> = (0..10).map(key).collect();
        let open = |dir: &Path, boot| {
            ProviderStore::open_in_boot(dir, local, StoreLimits::default(), Some(boot)).unwrap()
        };
        let mut store = open(&dir, "boot-a");
        assert_eq!(store.durability, Durability::Unsynced);
        store.provide(&keys).unwrap();
        store
            .add_provider(others_record(&keys[0], PeerId::random(), None))
            .unwrap();
        store.flush().unwrap();
        let died = copy_of(&dir, "unsynced-died");
        let died_across_a_reboot = copy_of(&dir, "unsynced-rebooted");
        drop(store);

        let store = open(&died, "boot-a");
        assert_eq!(store.provided_count().unwrap(), 10);
        assert_eq!(store.provider_record_count().unwrap(), 1);

        let store = open(&died_across_a_reboot, "boot-b");
        assert_eq!(store.provided_count().unwrap(), 0);
        assert_eq!(store.provider_record_count().unwrap(), 0);

        // Closed cleanly: synced, trusted in the next boot.
        let store = open(&dir, "boot-b");
        assert_eq!(store.provided_count().unwrap(), 10);
    }

    #[test]
    fn provided_keys_survive_a_reopen_in_distance_order() {
        let dir = scratch("provided");
        let local = PeerId::random();
        let keys: Vec<RecordKey> = (0..100).map(key).collect();
        {
            let mut store = ProviderStore::open(&dir, local, StoreLimits::default()).unwrap();
            assert_eq!(store.provide(&keys).unwrap().len(), 100);
            assert_eq!(
                store.provide(&keys[..10]).unwrap().len(),
                0,
                "already provided"
            );
            store.mark_published(&keys[..5], 1_234).unwrap();
        }
        let store = ProviderStore::open(&dir, local, StoreLimits::default()).unwrap();
        assert_eq!(store.provided_count().unwrap(), 100);
        let all = store.provided_from(&[0; 32], 1_000).unwrap();
        assert_eq!(all.len(), 100);
        assert!(all
            .windows(2)
            .all(|w| w[0].distance_key < w[1].distance_key));
        for p in &all {
            assert_eq!(p.distance_key, distance_key(&p.key));
            let n = u32::from_be_bytes(p.key.as_ref()[30..34].try_into().unwrap());
            let expected = (n < 5).then_some(1_234);
            assert_eq!(p.published_ms, expected, "key {n}");
        }
        let second_half = store.provided_from(&all[50].distance_key, 1_000).unwrap();
        assert_eq!(second_half, all[50..].to_vec());
        let own = store.providers(&keys[7]);
        assert_eq!(own.len(), 1);
        assert_eq!(own[0].provider, local);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn others_records_are_buffered_then_committed_and_capped() {
        let dir = scratch("others");
        let limits = StoreLimits {
            providers_per_key_max: 3,
            provider_records_max: 5,
            ..StoreLimits::default()
        };
        let k = key(1);
        let peers: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        {
            let mut store = ProviderStore::open(&dir, PeerId::random(), limits).unwrap();
            for p in &peers[..3] {
                store.peer_connected(*p, "127.0.0.1".parse().unwrap());
                store
                    .add_provider(others_record(&k, *p, Some(Duration::from_secs(60))))
                    .unwrap();
            }
            assert_eq!(store.providers(&k).len(), 3, "pending records are visible");
            assert!(store
                .add_provider(others_record(&k, peers[3], None))
                .is_err());
            // Refreshing a known provider is not a new record.
            store
                .add_provider(others_record(&k, peers[0], None))
                .unwrap();
            store.remove_provider(&k, &peers[1]);
            assert_eq!(store.providers(&k).len(), 2);
            store.flush().unwrap();
            for n in 2..5 {
                store
                    .add_provider(others_record(&key(n), peers[0], None))
                    .unwrap();
            }
            assert!(
                store
                    .add_provider(others_record(&key(9), peers[0], None))
                    .is_err(),
                "5 records in all"
            );
            assert_eq!(store.counters().records_refused, 2);
            store.flush().unwrap();
        }
        let store = ProviderStore::open(&dir, PeerId::random(), limits).unwrap();
        assert_eq!(store.provider_record_count().unwrap(), 5);
        let mut found = store.providers(&k);
        found.sort_by_key(|r| r.provider == peers[0]);
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].provider, peers[0]);
        assert_eq!(found[1].expires, None, "the refresh replaced the record");
        assert_eq!(found[0].provider, peers[2]);
        let left = found[0].expires.unwrap() - Instant::now();
        assert!(left > Duration::from_secs(55) && left <= Duration::from_secs(60));
        assert_eq!(
            found[0].addresses,
            vec!["/ip4/127.0.0.1/tcp/4001".parse::<Multiaddr>().unwrap()]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// One public host's records take at most a quarter of a key's providers (5 of
    /// 20): before, 20 made-up peers from one host took every place, and a holder found
    /// later was refused. Hosts of an operator's own networks are not limited.
    #[test]
    fn one_host_takes_at_most_a_quarter_of_a_keys_providers() {
        let dir = scratch("host-share");
        let mut store =
            ProviderStore::open(&dir, PeerId::random(), StoreLimits::default()).unwrap();
        let k = key(7);
        let add_from = |store: &mut ProviderStore, ip: &str| {
            let peer = PeerId::random();
            store.peer_connected(peer, ip.parse().unwrap());
            store.add_provider(others_record(&k, peer, None)).is_ok()
        };
        let taken = (0..20)
            .filter(|_| add_from(&mut store, "198.51.100.7"))
            .count();
        assert_eq!(taken, 5, "a quarter of the key's 20 places");
        assert!(add_from(&mut store, "203.0.113.1"), "another host's holder");
        for _ in 0..10 {
            assert!(
                add_from(&mut store, "10.0.0.9"),
                "an operator's own network"
            );
        }
        assert_eq!(store.providers(&k).len(), 16);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A full store's share is a site's, not each /64's: one /48 (a tunnel broker's
    /// free allocation) cannot make a hundred sources and take an IPv4 host's share.
    #[test]
    fn an_ipv6_site_is_one_source_of_a_full_store() {
        let dir = scratch("site");
        let limits = StoreLimits {
            provider_records_max: 100,
            ..StoreLimits::default()
        };
        let mut store = ProviderStore::open(&dir, PeerId::random(), limits).unwrap();
        let add_from = |store: &mut ProviderStore, ip: String, n: u32| {
            let peer = PeerId::random();
            store.peer_connected(peer, ip.parse().unwrap());
            store
                .add_provider(others_record(&key(n), peer, None))
                .is_ok()
        };
        for n in 0..50 {
            assert!(add_from(&mut store, "192.0.2.1".into(), n));
        }
        for n in 0..100 {
            add_from(&mut store, format!("2001:db8:1:{n:x}::1"), 1_000 + n);
        }
        store.flush().unwrap();
        let of_v4 = (0..50)
            .filter(|n| !store.providers(&key(*n)).is_empty())
            .count();
        assert!(of_v4 >= 49, "the IPv4 host keeps {of_v4} of its 50 records");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_host_flooding_a_full_store_gives_way_to_the_records_of_other_hosts() {
        let dir = scratch("flood");
        let limits = StoreLimits {
            provider_records_max: 100,
            ..StoreLimits::default()
        };
        let mut store = ProviderStore::open(&dir, PeerId::random(), limits).unwrap();
        // One host fills the store with records of made-up peers, a fresh one per batch
        // (peer ids cost nothing to make).
        let mut flooded = Vec::new();
        for n in 0..150 {
            let fake = PeerId::random();
            store.peer_connected(fake, "192.0.2.66".parse().unwrap());
            let stored = store.add_providers(vec![others_record(&key(1_000 + n), fake, None)]);
            if stored == 1 {
                flooded.push((key(1_000 + n), fake));
            }
        }
        assert_eq!(flooded.len(), 100, "its first 100 fill the store");
        assert_eq!(store.counters().records_refused, 50);
        // Three honest hosts publish 20 records each, in one batch a host.
        let honest: Vec<(PeerId, &str)> = vec![
            (PeerId::random(), "198.51.100.1"),
            (PeerId::random(), "198.51.100.2"),
            (PeerId::random(), "2001:db8:7:7::1"),
        ];
        for (h, (peer, ip)) in honest.iter().enumerate() {
            store.peer_connected(*peer, ip.parse().unwrap());
            let records = (0..20)
                .map(|n| others_record(&key(100 * h as u32 + n), *peer, None))
                .collect();
            assert_eq!(store.add_providers(records), 20, "host {ip}");
        }
        store.flush().unwrap();
        assert_eq!(store.counters().records_evicted, 60);
        assert_eq!(store.provider_record_count().unwrap(), 100);
        // The flooding host is the largest (40): its next records are refused, not
        // traded for its own.
        let fake = PeerId::random();
        store.peer_connected(fake, "192.0.2.66".parse().unwrap());
        assert!(store
            .add_provider(others_record(&key(5_000), fake, None))
            .is_err());
        // A host of 20 still takes room from one of 40.
        let (peer, _) = honest[0];
        store
            .add_provider(others_record(&key(99), peer, None))
            .unwrap();
        store.flush().unwrap();
        let held = |k: &RecordKey, p: &PeerId| store.providers(k).iter().any(|r| r.provider == *p);
        let flood_held: Vec<bool> = flooded.iter().map(|(k, p)| held(k, p)).collect();
        assert_eq!(
            flood_held,
            [vec![false; 61], vec![true; 39]].concat(),
            "oldest first"
        );
        drop(store);

        // The counts are committed beside the records: a reopened store goes on from them.
        let mut store = ProviderStore::open(&dir, PeerId::random(), limits).unwrap();
        assert_eq!(store.sources.total(), 100);
        let source = |ip: &str| Source::of(Some(ip.parse().unwrap()));
        assert_eq!(store.sources.count(source("192.0.2.66")), 39);
        assert_eq!(store.sources.count(source("2001:db8:7:7::2")), 20, "a /64");
        store.peer_connected(peer, "198.51.100.1".parse().unwrap());
        store
            .add_provider(others_record(&key(98), peer, None))
            .unwrap();
        store.flush().unwrap();
        assert_eq!(store.sources.count(source("192.0.2.66")), 38);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn expired_and_removed_records_leave_their_sources_counts() {
        let dir = scratch("source-counts");
        let mut store =
            ProviderStore::open(&dir, PeerId::random(), StoreLimits::default()).unwrap();
        let (a, b) = (PeerId::random(), PeerId::random());
        store.peer_connected(a, "192.0.2.1".parse().unwrap());
        store.peer_connected(b, "192.0.2.2".parse().unwrap());
        for n in 0..4 {
            store
                .add_provider(others_record(&key(n), a, Some(Duration::ZERO)))
                .unwrap();
            store.add_provider(others_record(&key(n), b, None)).unwrap();
        }
        store.flush().unwrap();
        // One republished from where it was: its place (and count) kept.
        let place = |store: &mut ProviderStore, k: &RecordKey, p: &PeerId| {
            store.flush().unwrap();
            let rtxn = store.env.read_txn().unwrap();
            let value = store.providers.get(&rtxn, &providers_db_key(k, p)).unwrap();
            value.and_then(source_of_value)
        };
        let before = place(&mut store, &key(2), &b);
        store.add_provider(others_record(&key(2), b, None)).unwrap();
        assert_eq!(place(&mut store, &key(2), &b), before);
        // A peer now connected from elsewhere refreshes its record: counted there.
        store.peer_connected(b, "192.0.2.3".parse().unwrap());
        store.add_provider(others_record(&key(0), b, None)).unwrap();
        store.remove_provider(&key(1), &b);
        let now = unix_ms(SystemTime::now()) + 1;
        assert_eq!(store.remove_expired(now, 100, 100).unwrap(), 4);
        let source = |ip: &str| Source::of(Some(ip.parse().unwrap()));
        assert_eq!(store.sources.count(source("192.0.2.1")), 0);
        assert_eq!(store.sources.count(source("192.0.2.2")), 2);
        assert_eq!(store.sources.count(source("192.0.2.3")), 1);
        drop(store);
        let store = ProviderStore::open(&dir, PeerId::random(), StoreLimits::default()).unwrap();
        assert_eq!(store.sources.total(), 3);
        assert_eq!(
            store.committed_source_counts().unwrap().unwrap(),
            store.sources
        );
        let rtxn = store.env.read_txn().unwrap();
        assert_eq!(
            store.by_source.len(&rtxn).unwrap(),
            3,
            "one index entry a record"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A store with one key of ours and one record of another's, `damaged`, then opened
    /// again: the records of others are gone, our own key kept.
    fn others_dropped_at_open_after(name: &str, damage: impl FnOnce(&ProviderStore)) {
        let dir = scratch(name);
        let local = PeerId::random();
        {
            let mut store = ProviderStore::open(&dir, local, StoreLimits::default()).unwrap();
            store.provide(&[key(1)]).unwrap();
            store
                .add_provider(others_record(&key(2), PeerId::random(), None))
                .unwrap();
            store.flush().unwrap();
            damage(&store);
        }
        let store = ProviderStore::open(&dir, local, StoreLimits::default()).unwrap();
        assert_eq!(store.provider_record_count().unwrap(), 0);
        assert_eq!(store.sources.total(), 0);
        assert_eq!(store.provided_count().unwrap(), 1, "our own keys are kept");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_store_of_an_older_layout_is_emptied_at_open() {
        others_dropped_at_open_after("layout", |store| {
            let meta: Database<RawBytes, RawBytes> = {
                let rtxn = store.env.read_txn().unwrap();
                store
                    .env
                    .open_database(&rtxn, Some("meta"))
                    .unwrap()
                    .unwrap()
            };
            let mut wtxn = store.env.write_txn().unwrap();
            meta.put(&mut wtxn, LAYOUT_KEY, &1u32.to_be_bytes())
                .unwrap();
            wtxn.commit().unwrap();
        });
    }

    /// Counts that do not add up to the records held (a damaged store) drop the records
    /// of others at open, with a warning; the start went on. It was an assertion: the
    /// engine's start panicked.
    #[test]
    fn source_counts_that_do_not_add_up_drop_the_records_of_others_at_open() {
        others_dropped_at_open_after("counts", |store| {
            let mut wtxn = store.env.write_txn().unwrap();
            store.source_counts.clear(&mut wtxn).unwrap();
            wtxn.commit().unwrap();
        });
    }

    #[test]
    fn a_providers_address_is_its_connections_ip_never_the_one_it_claims() {
        let dir = scratch("claimed");
        let mut store =
            ProviderStore::open(&dir, PeerId::random(), StoreLimits::default()).unwrap();
        let (connected, gone) = (PeerId::random(), PeerId::random());
        store.peer_connected(connected, "127.0.0.9".parse().unwrap());
        store.peer_connected(gone, "127.0.0.10".parse().unwrap());
        store.peer_disconnected(&gone);
        let claiming = |provider| ProviderRecord {
            addresses: vec![
                "/ip4/192.0.2.7/tcp/4001".parse().unwrap(),
                "/dns4/example.com/tcp/4002".parse().unwrap(),
            ],
            ..others_record(&key(3), provider, None)
        };
        store.add_provider(claiming(connected)).unwrap();
        store.add_provider(claiming(gone)).unwrap();
        store.flush().unwrap();
        let found = store.providers(&key(3));
        let addresses_of = |peer| {
            found
                .iter()
                .find(|r| r.provider == peer)
                .map(|r| r.addresses.clone())
                .unwrap()
        };
        assert_eq!(
            addresses_of(connected),
            vec!["/ip4/127.0.0.9/tcp/4001".parse::<Multiaddr>().unwrap()]
        );
        assert!(addresses_of(gone).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn expired_records_are_removed_in_bounded_steps() {
        let dir = scratch("expired");
        let mut store =
            ProviderStore::open(&dir, PeerId::random(), StoreLimits::default()).unwrap();
        let p = PeerId::random();
        for n in 0..10 {
            let ttl = if n % 2 == 0 {
                Duration::ZERO
            } else {
                Duration::from_secs(3_600)
            };
            store
                .add_provider(others_record(&key(n), p, Some(ttl)))
                .unwrap();
        }
        let now = unix_ms(SystemTime::now()) + 1;
        // Six records looked at, three of them expired; then the other four (two
        // expired); then a new walk finds nothing left to remove.
        assert_eq!(store.remove_expired(now, 6, 100).unwrap(), 3);
        assert_eq!(store.remove_expired(now, 100, 100).unwrap(), 2);
        assert_eq!(store.remove_expired(now, 100, 100).unwrap(), 0);
        assert_eq!(store.provider_record_count().unwrap(), 5);
        assert_eq!(store.counters().records_expired, 5);
        assert!(store.providers(&key(0)).is_empty());
        assert_eq!(store.providers(&key(1)).len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Records that expire together (a flood's) are removed a bounded number a step: a
    /// step removed every expired record it looked at (up to 100,000, each with its index
    /// updates, in one tick of the DHT thread).
    #[test]
    fn expired_records_are_removed_at_most_so_many_a_step() {
        let dir = scratch("expired-many");
        let mut store =
            ProviderStore::open(&dir, PeerId::random(), StoreLimits::default()).unwrap();
        let p = PeerId::random();
        for n in 0..10 {
            store
                .add_provider(others_record(&key(n), p, Some(Duration::ZERO)))
                .unwrap();
        }
        let now = unix_ms(SystemTime::now()) + 1;
        assert_eq!(store.remove_expired(now, 100, 4).unwrap(), 4);
        assert_eq!(store.remove_expired(now, 100, 4).unwrap(), 4);
        assert_eq!(store.remove_expired(now, 100, 4).unwrap(), 2);
        assert_eq!(store.provider_record_count().unwrap(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    #[should_panic(expected = "about to be committed breaks its invariant: expiry")]
    fn a_malformed_record_is_never_committed() {
        let dir = scratch("malformed");
        let mut store =
            ProviderStore::open(&dir, PeerId::random(), StoreLimits::default()).unwrap();
        let db_key = providers_db_key(&key(1), &PeerId::random());
        store.pending.insert(db_key, Some(vec![0; 7]));
        let _ = store.flush();
    }

    #[test]
    fn value_records_and_oversized_keys_are_refused() {
        let dir = scratch("refused");
        let mut store =
            ProviderStore::open(&dir, PeerId::random(), StoreLimits::default()).unwrap();
        let record = Record::new(key(1), b"parked data".to_vec());
        assert!(store.put(record).is_err());
        assert!(store.get(&key(1)).is_none());
        let long = RecordKey::new(&vec![7u8; RECORD_KEY_BYTES_MAX + 1]);
        assert!(store
            .add_provider(others_record(&long, PeerId::random(), None))
            .is_err());
        assert_eq!(store.provide(&[long]).unwrap().len(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
