//! Damage met on the read path, and its repair: a group whose block is bad is rebuilt
//! from the rest of its stripe (or, for a packed object, taken from another lane),
//! checked, served, and queued for the repair task (`services.rs`), which writes the
//! rebuilt blocks back once the disk is quiet. `ron repair`'s check of one object too.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ron_codec::Address;
use ron_link::counters::StorageCounters;

use crate::arena::GroupBytes;
use crate::cache::GroupKey;
use crate::error::ShardError;
use crate::ids::{LaneIndex, StripeIndex};
use crate::record::{Location, ObjectMeta};
use crate::repair::{self, StripeKey};
use crate::scrub::{self, ObjectCheck};
use crate::shard::state::Shard;
use crate::store::{self, Store};

/// How long the repair task lets clients' reads have the disk before it writes, at
/// most: a degraded stream's write-back then follows the stream, in few large batches,
/// instead of splitting the disk with it in many small ones.
pub const REPAIR_DEFER_MS_MAX: u64 = 500;

impl Shard {
    /// A group whose block failed (`cause`), rebuilt from the rest of its stripe and
    /// checked against its chaining value; the stripe is queued for repair. More bad
    /// blocks than the parity covers: a clean failure, counted. `batch`: the run of
    /// groups the failed one came in, whose other blocks of the stripe are not read
    /// again.
    pub(super) async fn degraded_group(
        &self,
        store: &Store,
        meta: &ObjectMeta,
        key: GroupKey,
        cause: ShardError,
        batch: Option<repair::ReadBatch<'_>>,
    ) -> Result<GroupBytes, ShardError> {
        let Some(parity) = &meta.parity else {
            return Err(cause);
        };
        let geometry = parity.geometry(meta.len());
        let stripe = geometry.stripe_of(key.group);
        let mut read = repair::read_stripe(&self.files, store, meta, parity, stripe, batch).await;
        let bad = read.bad_columns();
        let code = self.codes.get(parity.params);
        let writable = match repair::rebuild(&code, meta, parity, stripe, &mut read) {
            Ok(writable) => writable,
            Err(e) => {
                StorageCounters::add(&self.metrics.ec_unrecoverable, 1);
                return Err(e);
            }
        };
        let column = (key.group.0 - geometry.groups_of(stripe).start) as usize;
        // The bytes served are the bytes the rebuild checked; the write-back of a bad
        // block gets a copy.
        let rebuilt = read.blocks[column].take().unwrap_or_default();
        if writable.contains(&column) {
            read.blocks[column] = Some(rebuilt.clone());
        }
        StorageCounters::add(&self.metrics.ec_degraded_reads, 1);
        if !writable.is_empty() {
            // The rebuilt blocks are checked: repair writes them as they are.
            let writes = repair::block_writes(store, meta, &geometry, stripe, &writable, &mut read);
            let key = StripeKey {
                addr: key.addr,
                stripe,
            };
            self.queue_repair(meta, key, bad.len() as u64, Some(writes));
        }
        self.keep_rebuilt(meta, key, GroupBytes::in_memory(Bytes::from(rebuilt)))
    }

    /// A packed object whose copy in lane 0 failed (`cause`), from the first other lane
    /// whose copy passes its check; lane 0 is queued for repair. No lane good: a clean
    /// failure, counted.
    pub(super) async fn group_from_lanes(
        &self,
        store: &Store,
        meta: &ObjectMeta,
        key: GroupKey,
        cause: ShardError,
    ) -> Result<GroupBytes, ShardError> {
        for lane in (1..store.needle_lanes(meta)).map(LaneIndex) {
            let Some(body) = repair::lane_copy(&self.files, store, meta, lane).await else {
                continue;
            };
            StorageCounters::add(&self.metrics.ec_degraded_reads, 1);
            let writes = repair::needle_writes(store, meta, &[LaneIndex(0)], &body);
            let stripe = StripeKey {
                addr: key.addr,
                stripe: StripeIndex(0),
            };
            self.queue_repair(meta, stripe, 1, Some(writes));
            return self.keep_rebuilt(meta, key, GroupBytes::in_memory(Bytes::from(body)));
        }
        if store.needle_lanes(meta) > 1 {
            StorageCounters::add(&self.metrics.ec_unrecoverable, 1);
        }
        Err(cause)
    }

    pub(super) fn queue_repair(
        &self,
        meta: &ObjectMeta,
        key: StripeKey,
        bad_blocks: u64,
        rebuilt: Option<Vec<repair::BlockWrite>>,
    ) {
        let meta = match self.cached_meta(&key.addr) {
            Some(meta) => meta,
            None => Rc::new(meta.clone()),
        };
        match self.repairs.add(key, &meta, bad_blocks, rebuilt) {
            repair::Added::New => {
                StorageCounters::add(&self.metrics.ec_missing_blocks, bad_blocks);
                let _ = self.repair_wake.try_send(());
            }
            repair::Added::AlreadyQueued => {}
            repair::Added::Full => StorageCounters::add(&self.metrics.ec_repairs_dropped, 1),
        }
    }

    /// Returns once the read path has had no read in flight for two ticks in a row, or
    /// the repair queue holds half its budget of rebuilt blocks, or after
    /// [`REPAIR_DEFER_MS_MAX`].
    pub(super) async fn wait_for_quiet_disk(&self) {
        const TICK: Duration = Duration::from_millis(1);
        let reads = self.files.reads_in_flight();
        let since = Instant::now();
        let mut quiet_ticks = 0;
        while quiet_ticks < 2
            && self.repairs.held_bytes() < repair::REPAIR_HELD_BYTES_MAX / 2
            && since.elapsed() < Duration::from_millis(REPAIR_DEFER_MS_MAX)
        {
            quiet_ticks = match reads.get() {
                0 => quiet_ticks + 1,
                _ => 0,
            };
            glommio::timer::sleep(TICK).await;
        }
    }

    /// Writes back the bad blocks of `stripes` of one object: those a degraded read
    /// rebuilt and checked as they are, the others read again from disk, rebuilt and
    /// checked here; one write per block and one sync per file (on the blocking pool).
    /// Returns how many stripes could not be repaired.
    pub(super) async fn repair_stripes(
        &self,
        meta: &ObjectMeta,
        stripes: Vec<repair::TakenStripe>,
    ) -> u64 {
        if meta.is_packed() {
            return self.repair_lanes(meta, stripes).await;
        }
        let all = stripes.len() as u64;
        let (Some(parity), Ok(store)) = (&meta.parity, self.local_store(&meta.addr())) else {
            return all;
        };
        let code = self.codes.get(parity.params);
        let geometry = parity.geometry(meta.len());
        let mut writes = Vec::new();
        let mut failed = 0;
        for (stripe, _, rebuilt) in stripes {
            if let Some(rebuilt) = rebuilt {
                writes.extend(rebuilt);
                continue;
            }
            let read = repair::read_stripe(&self.files, store, meta, parity, stripe, None);
            let mut read = read.await;
            let bad = read.bad_columns();
            if bad.is_empty() {
                continue;
            }
            match repair::rebuild(&code, meta, parity, stripe, &mut read) {
                Ok(writable) => writes.extend(repair::block_writes(
                    store, meta, &geometry, stripe, &writable, &mut read,
                )),
                Err(_) => failed += 1,
            }
        }
        if writes.is_empty() {
            return failed;
        }
        let written = repair::write_back(writes).await;
        self.files.forget(&meta.addr(), store.dir_count());
        match written {
            Ok(bytes) => {
                StorageCounters::add(&self.metrics.ec_repair_bytes, bytes);
                failed
            }
            Err(_) => all,
        }
    }

    /// Writes back the lanes of a packed object whose copies a read found bad: the
    /// needle the read checked, or, if the queue could not hold it, the lanes read and
    /// checked again. Returns 1 if the repair failed, else 0.
    async fn repair_lanes(&self, meta: &ObjectMeta, stripes: Vec<repair::TakenStripe>) -> u64 {
        let (Ok(store), Location::Packed(at)) = (self.local_store(&meta.addr()), meta.location)
        else {
            return 1;
        };
        let held = stripes.into_iter().find_map(|(_, _, held)| held);
        let writes = match held {
            Some(writes) => writes,
            None => {
                let check = repair::check_lanes(&self.files, store, meta).await;
                match &check.body {
                    Some(body) => repair::needle_writes(store, meta, &check.bad, body),
                    None => return 1,
                }
            }
        };
        let written = repair::write_back(writes).await;
        self.files.forget_segment(store, at.segment);
        match written {
            Ok(bytes) => {
                StorageCounters::add(&self.metrics.ec_repair_bytes, bytes);
                0
            }
            Err(_) => 1,
        }
    }

    /// Whether the copy `meta` describes is the one stored now: its record is there and
    /// places the object where `meta` does, under the same parity. A copy evicted (or
    /// removed as damaged) and then fetched again lies elsewhere — another needle, other
    /// parity after a changed `--ec` — and blocks rebuilt for the old copy must not be
    /// written into it.
    pub(super) async fn same_copy_stored(&self, meta: &ObjectMeta) -> bool {
        let addr = meta.addr();
        let Ok(store) = self.local_store(&addr) else {
            return false;
        };
        let held = self.commits.stored_retention(store, &addr);
        if !held.is_ok_and(|retention| retention.is_some()) {
            return false;
        }
        let current = match self.commits.unindexed_meta(&addr) {
            Some(current) => Some(current),
            None => store::read_record(store, &addr).await.ok().flatten(),
        };
        current.is_some_and(|now| now.location == meta.location && now.parity == meta.parity)
    }

    /// Reads and checks every stored block of `addr`'s object now, unpaced (`ron
    /// repair`), and rebuilds and writes back what its parity can rebuild. On the
    /// object's owner only: another shard answers `Mesh`. A copy that lost data is
    /// reported damaged (`damaged.rs`), as the scrubber reports it: the network replaces
    /// it, an upload of it mends it.
    pub async fn check_object(&self, addr: &Address) -> Result<ObjectCheck, ShardError> {
        let check = self.check_object_paced(addr, None).await?;
        if check.lost_blocks > 0 {
            self.damaged.report(*addr);
        }
        Ok(check)
    }

    /// [`Shard::check_object`], its reads at `pacer`'s pace when one is given (a check a
    /// peer asked for, which it must not be able to make the disk's whole work).
    pub async fn check_object_paced(
        &self,
        addr: &Address,
        pacer: Option<&mut scrub::Pacer>,
    ) -> Result<ObjectCheck, ShardError> {
        let store = self.local_store(addr)?;
        // Waits out a scrub, a repair or an eviction of the object, as they wait for each
        // other: a rebuild written back while an eviction unlinks the files would make
        // them again, after their record is gone, never to be collected.
        let _claim = self.claims.claim(*addr).await;
        // Committed but not yet indexed: the commit queue has its record.
        let meta = match self.commits.unindexed_meta(addr) {
            Some(meta) => meta,
            None => self.stored_record(store, addr).await?,
        };
        let check = scrub::check_object(&self.files, &self.codes, store, &meta, pacer).await;
        self.files.forget(addr, store.dir_count());
        StorageCounters::add(&self.metrics.ec_repair_bytes, check.repaired_bytes);
        if check.is_whole() {
            // Replaced (or rebuilt) since it was reported: an upload of it then would
            // remove a healthy copy to store it again.
            self.damaged.forget(addr);
        }
        Ok(check)
    }
}
