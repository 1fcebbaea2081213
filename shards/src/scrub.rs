//! The paced scrubber and the check of one object (issue 14; docs/design/
//! erasure-coding.md, "Scrubber"). Reads only find rot in the blocks clients ask for, and
//! parity blocks are read only when a data block fails; the scrubber reads every stored
//! block in the background and checks it, so rot is found and rebuilt before a second
//! bad block in the same stripe makes it unrecoverable.
//!
//! One task per shard, in the shard's background task queue (low shares, so client
//! work runs first when both are ready), walks each store's index in key order: every
//! block of every object — data groups against their chaining values, parity blocks
//! against their checksums, packed needles against their tree — and rebuilds and writes
//! back the bad blocks of a stripe at once. It reads through its own few open files
//! (never the read path's open-file cache) with O_DIRECT reads (never the page cache),
//! paced by [`Pacer`] at the shard's share of the node's `scrub_bytes_per_s`. Where it
//! is in each store ([`ScrubPosition`]) is saved in the store's index every
//! [`SCRUB_SAVE_PERIOD_MS`] and at the end of each store's pass, so a restart resumes
//! near where it stopped. An operator may pause and resume it; [`check_object`] is the
//! same check of one object, unpaced, for `ron repair`.

use std::cell::Cell;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ron_codec::tree::GroupIndex;
use ron_codec::Address;
use ron_link::counters::StorageCounters;

use crate::damaged::DamagedCopies;
use crate::disk::ObjectFiles;
use crate::ec::StripeCodes;
use crate::error::ShardError;
use crate::evict::{BackgroundClaim, BackgroundClaims};
use crate::ids::StripeIndex;
use crate::lifecycle::StopSignal;
use crate::limits::BLOCK_BYTES;
use crate::record::{Location, ObjectMeta, Parity};
use crate::repair;
use crate::store::{self, ScrubPosition, Store};

/// Addresses taken from the index at a time.
pub const SCRUB_BATCH_OBJECTS: usize = 64;
/// How often the position in the store under way is saved, at most (a crash re-reads
/// at most this much of the scrub).
pub const SCRUB_SAVE_PERIOD_MS: u64 = 10_000;
/// How long the scrubber waits for an object another background task holds (the repair
/// of stripes a read queued, an eviction: each holds it briefly) before it passes it
/// over until the next pass. It passed over at once, and a hot object the repair task
/// kept claiming went unscrubbed — its stripes on a replacement disk unrebuilt — by
/// a pass that counted it done.
pub const SCRUB_CLAIM_WAIT_MS: u64 = 5_000;
/// Between two looks at a claimed object.
const SCRUB_CLAIM_POLL_MS: u64 = 20;
/// How often a paused scrubber looks whether it was resumed.
pub const SCRUB_PAUSE_POLL_MS: u64 = 250;
/// After a failure to read the index or save a position, the scrubber waits this long
/// before it tries again (a failing disk is not hammered).
pub const SCRUB_RETRY_MS: u64 = 10_000;
/// The shortest round over every store: a node holding little (or nothing) is not
/// re-read, and its index not re-committed, in a busy loop.
pub const SCRUB_ROUND_MIN_MS: u64 = 60_000;
/// Files the scrubber keeps open (its own: it never churns the read path's cache).
pub const SCRUB_OPEN_FILES_MAX: usize = 8;
/// Groups of an object without parity checked per read (512 KiB).
pub const SCRUB_RUN_GROUPS_MAX: u64 = 8;

/// Spaces reads so that the bytes read from `start` to `t` never exceed
/// `bytes_per_s · (t − start)` plus one read: each read may start only once the reads
/// before it are paid for. Idle time is not saved up, so there are no bursts. When it
/// watches the read path's reads in flight, a read due while clients' reads are on the
/// disk waits for them, at most [`SCRUB_YIELD_MS_MAX`]: the rate is a ceiling, and
/// under client load the scrub slows rather than queue beside their reads.
#[derive(Debug)]
pub struct Pacer {
    bytes_per_s: u64,
    next: Instant,
    client_reads: Option<Rc<Cell<u32>>>,
    /// The scrubber's stop: a wait for the next read ends at once when it comes.
    stop: Option<StopSignal>,
}

/// The longest one scrub read waits for clients' reads to leave the disk.
pub const SCRUB_YIELD_MS_MAX: u64 = 10;

impl Pacer {
    pub fn new(bytes_per_s: u64, now: Instant) -> Pacer {
        Pacer {
            bytes_per_s: bytes_per_s.max(1),
            next: now,
            client_reads: None,
            stop: None,
        }
    }

    /// How long a read of `bytes` must wait at `now`; books it.
    pub fn delay(&mut self, bytes: u64, now: Instant) -> Duration {
        let start = self.next.max(now);
        let cost_ns = u128::from(bytes) * 1_000_000_000 / u128::from(self.bytes_per_s);
        self.next = start + Duration::from_nanos(cost_ns.min(u128::from(u64::MAX)) as u64);
        start - now
    }

    /// Waits until a read of `bytes` is due; `false` if a stop came first.
    async fn wait(&mut self, bytes: u64) -> bool {
        let delay = self.delay(bytes, Instant::now());
        if self.stop.as_ref().is_some_and(StopSignal::is_stopped) {
            return false;
        }
        if !delay.is_zero() {
            let slept = match &self.stop {
                Some(stop) => stop.sleep(delay).await,
                None => {
                    glommio::timer::sleep(delay).await;
                    true
                }
            };
            if !slept {
                return false;
            }
        }
        let Some(client_reads) = &self.client_reads else {
            return true;
        };
        let yielded = Instant::now();
        while client_reads.get() > 0
            && yielded.elapsed() < Duration::from_millis(SCRUB_YIELD_MS_MAX)
        {
            glommio::timer::sleep(Duration::from_micros(500)).await;
        }
        // Time spent yielding is not owed back: the next read is paced from now.
        self.next = self.next.max(Instant::now());
        true
    }
}

/// What a check of one object found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectCheck {
    /// Whether the object can be rebuilt: parity (a file of its own, written with `--ec
    /// K+M`), or a packed object's copies in more than one lane.
    pub protected: bool,
    pub blocks_checked: u64,
    pub bytes_checked: u64,
    /// Blocks missing, unreadable or failing their check.
    pub bad_blocks: u64,
    /// Of those, the ones rebuilt and written back, and their bytes.
    pub repaired_blocks: u64,
    pub repaired_bytes: u64,
    /// Of the bad ones, the data the copy has lost: data blocks (or a packed object's
    /// every lane) that neither read good nor rebuild into bytes that pass their check.
    /// Bad blocks that rebuild but could not be written back (a full or read-only disk),
    /// or parity failing its recorded checksum, are unrepaired, not lost: every byte of
    /// the object still reads back verified.
    pub lost_blocks: u64,
}

impl ObjectCheck {
    pub fn unrepairable_blocks(&self) -> u64 {
        self.bad_blocks - self.repaired_blocks
    }

    /// Whether every byte of the object reads back verified from this copy (straight,
    /// or rebuilt from its parity or another lane).
    pub fn is_whole(&self) -> bool {
        self.lost_blocks == 0
    }

    fn add(&mut self, other: ObjectCheck) {
        self.blocks_checked += other.blocks_checked;
        self.bytes_checked += other.bytes_checked;
        self.bad_blocks += other.bad_blocks;
        self.repaired_blocks += other.repaired_blocks;
        self.repaired_bytes += other.repaired_bytes;
        self.lost_blocks += other.lost_blocks;
    }
}

/// Reads and checks every stored block of `meta`'s object, rebuilding and writing back
/// the bad blocks of each stripe its parity can rebuild; paced by `pacer` if given. A
/// stop the pacer sees ends the check between stripes (or runs): what it returns then
/// covers only the part checked.
pub(crate) async fn check_object(
    files: &ObjectFiles,
    codes: &StripeCodes,
    store: &Store,
    meta: &ObjectMeta,
    mut pacer: Option<&mut Pacer>,
) -> ObjectCheck {
    match (&meta.parity, meta.location) {
        (Some(parity), Location::OwnFile) => {
            let mut check = ObjectCheck {
                protected: true,
                ..ObjectCheck::default()
            };
            let stripes = parity.geometry(meta.len()).stripes();
            for stripe in (0..stripes).map(StripeIndex) {
                let stripe_check = check_stripe(files, codes, store, meta, parity, stripe);
                let bytes = stripe_bytes(meta, parity, stripe);
                let Some(checked) = paced(&mut pacer, bytes, stripe_check).await else {
                    break;
                };
                check.add(checked);
            }
            check
        }
        (_, Location::Packed(_)) if store.needle_lanes(meta) > 1 => {
            let lanes = u64::from(store.needle_lanes(meta));
            paced(
                &mut pacer,
                lanes * meta.len(),
                check_lanes(files, store, meta),
            )
            .await
            .unwrap_or_default()
        }
        _ => {
            let mut check = ObjectCheck::default();
            let groups = meta.tree.group_count();
            for first in (0..groups).step_by(SCRUB_RUN_GROUPS_MAX as usize) {
                let count = SCRUB_RUN_GROUPS_MAX.min(groups - first);
                let bytes = (meta.len() - first * BLOCK_BYTES).min(count * BLOCK_BYTES);
                let run = check_groups(files, store, meta, GroupIndex(first), count);
                let Some(checked) = paced(&mut pacer, bytes, run).await else {
                    break;
                };
                check.add(checked);
            }
            check
        }
    }
}

async fn paced(
    pacer: &mut Option<&mut Pacer>,
    bytes: u64,
    check: impl std::future::Future<Output = ObjectCheck>,
) -> Option<ObjectCheck> {
    if let Some(pacer) = pacer {
        if !pacer.wait(bytes).await {
            return None;
        }
    }
    Some(check.await)
}

/// Bytes of `stripe` on disk: its data groups and its parity blocks.
fn stripe_bytes(meta: &ObjectMeta, parity: &Parity, stripe: StripeIndex) -> u64 {
    let geometry = parity.geometry(meta.len());
    let data: u64 = geometry
        .groups_of(stripe)
        .map(|g| geometry.group_len(GroupIndex(g)))
        .sum();
    data + u64::from(parity.params.parity) * BLOCK_BYTES
}

async fn check_stripe(
    files: &ObjectFiles,
    codes: &StripeCodes,
    store: &Store,
    meta: &ObjectMeta,
    parity: &Parity,
    stripe: StripeIndex,
) -> ObjectCheck {
    let mut read = repair::read_stripe(files, store, meta, parity, stripe, None).await;
    let groups = parity.geometry(meta.len()).groups_of(stripe);
    let bad = read.bad_columns().len() as u64;
    let mut check = ObjectCheck {
        protected: true,
        blocks_checked: groups.end - groups.start + u64::from(parity.params.parity),
        bytes_checked: stripe_bytes(meta, parity, stripe),
        bad_blocks: bad,
        ..ObjectCheck::default()
    };
    if bad == 0 {
        return check;
    }
    let code = codes.get(parity.params);
    let k = usize::from(parity.params.data);
    let bad_data = read.bad_columns().iter().filter(|c| **c < k).count() as u64;
    let writable = match repair::rebuild(&code, meta, parity, stripe, &mut read) {
        Ok(writable) => writable,
        Err(e) => {
            check.lost_blocks = bad_data;
            tracing::warn!(object = %meta.addr(), stripe = stripe.0, bad_blocks = bad, error = %e, "scrub: stripe cannot be rebuilt");
            return check;
        }
    };
    let geometry = parity.geometry(meta.len());
    let writes = repair::block_writes(store, meta, &geometry, stripe, &writable, &mut read);
    match repair::write_back(writes).await {
        Ok(written) => {
            check.repaired_blocks = writable.len() as u64;
            check.repaired_bytes = written;
        }
        Err(e) => tracing::warn!(
            object = %meta.addr(),
            stripe = stripe.0,
            bad_blocks = bad,
            error = %e,
            "scrub: stripe rebuilt but not written back"
        ),
    }
    check
}

/// Checks the copy of packed object `meta` in every lane and writes a good one over the
/// bad ones.
async fn check_lanes(files: &ObjectFiles, store: &Store, meta: &ObjectMeta) -> ObjectCheck {
    let lanes = repair::check_lanes(files, store, meta).await;
    let lane_count = u64::from(store.needle_lanes(meta));
    let bad = lanes.bad.len() as u64;
    let mut check = ObjectCheck {
        protected: true,
        blocks_checked: lane_count,
        bytes_checked: lane_count * meta.len(),
        bad_blocks: bad,
        ..ObjectCheck::default()
    };
    if bad == 0 {
        return check;
    }
    let Some(body) = lanes.body else {
        tracing::warn!(object = %meta.addr(), lanes = bad, "scrub: packed object bad in every lane");
        check.lost_blocks = 1;
        return check;
    };
    let writes = repair::needle_writes(store, meta, &lanes.bad, &body);
    let written = repair::write_back(writes).await;
    if let Location::Packed(at) = meta.location {
        files.forget_segment(store, at.segment);
    }
    match written {
        Ok(bytes) => {
            check.repaired_blocks = bad;
            check.repaired_bytes = bytes;
        }
        Err(e) => tracing::warn!(object = %meta.addr(), error = %e, "scrub: lanes not repaired"),
    }
    check
}

/// Checks groups `first..first + count` of an object without parity: bad ones are
/// found and counted, not rebuilt.
async fn check_groups(
    files: &ObjectFiles,
    store: &Store,
    meta: &ObjectMeta,
    first: GroupIndex,
    count: u64,
) -> ObjectCheck {
    let mut check = ObjectCheck {
        blocks_checked: count,
        ..ObjectCheck::default()
    };
    let read = files.read_groups(store, meta, first, count).await;
    for g in (first.0..first.0 + count).map(GroupIndex) {
        let len = ron_codec::tree::group_len(meta.len(), g).unwrap_or(0);
        check.bytes_checked += len;
        let good = match &read {
            Ok(read) => meta.tree.verify_group(g, &read.group(g, len)).is_ok(),
            Err(_) => false,
        };
        check.bad_blocks += u64::from(!good);
    }
    // Nothing to rebuild them from.
    check.lost_blocks = check.bad_blocks;
    if check.bad_blocks > 0 {
        tracing::warn!(
            object = %meta.addr(),
            first_group = first.0,
            bad_blocks = check.bad_blocks,
            "scrub: bad blocks in an object without parity (not repairable here)"
        );
    }
    check
}

/// What the shard tells its scrubber: pause (the operator's switch, held weakly) and
/// stop.
pub(crate) struct ScrubControl {
    pub paused: Weak<Cell<bool>>,
    pub stop: StopSignal,
    /// Where a copy damaged past what the shard rebuilds is reported (`damaged.rs`).
    pub damaged: Rc<DamagedCopies>,
}

/// The store to scrub next: the fewest passes, each failed scrub counted as one, the
/// lowest id first among equals.
fn least_scrubbed(passes_and_failures: impl Iterator<Item = (u64, u64)>) -> Option<usize> {
    passes_and_failures
        .enumerate()
        .min_by_key(|&(i, (passes, failures))| (passes.saturating_add(failures), i))
        .map(|(i, _)| i)
}

/// One shard's scrubber. It ends when the shard stops (its position saved) or is gone.
pub(crate) struct Scrubber {
    /// The shard's stores, in id order, and where the scrubber is in each.
    stores: Vec<(Store, ScrubPosition)>,
    /// Per store, the scrubs of it an error cut short since this start: each counts as
    /// a pass when the next store is picked, so a store whose index fails is tried
    /// again after the others' next pass, not before every one of theirs.
    failures: Vec<u64>,
    files: ObjectFiles,
    codes: Rc<StripeCodes>,
    metrics: Arc<StorageCounters>,
    control: ScrubControl,
    pacer: Pacer,
    /// Objects the evicter or the repair task holds: skipped.
    claims: BackgroundClaims,
}

impl Scrubber {
    /// `client_reads`: the read path's reads in flight, which the scrub yields to.
    pub fn new(
        stores: Vec<Store>,
        codes: Rc<StripeCodes>,
        metrics: Arc<StorageCounters>,
        control: ScrubControl,
        bytes_per_s: u64,
        client_reads: Rc<Cell<u32>>,
        claims: BackgroundClaims,
    ) -> Result<Scrubber, ShardError> {
        let mut positioned = Vec::with_capacity(stores.len());
        for store in stores {
            let at = store.scrub_position()?;
            positioned.push((store, at));
        }
        positioned.sort_by_key(|(store, _)| store.id());
        let stop = control.stop.clone();
        let scrubber = Scrubber {
            failures: vec![0; positioned.len()],
            stores: positioned,
            files: ObjectFiles::new(SCRUB_OPEN_FILES_MAX),
            codes,
            metrics,
            control,
            pacer: Pacer {
                client_reads: Some(client_reads),
                stop: Some(stop),
                ..Pacer::new(bytes_per_s, Instant::now())
            },
            claims,
        };
        let current = match scrubber.next_store() {
            Some(i) => Some((i, scrubber.stores[i].0.stats()?.objects)),
            None => None,
        };
        scrubber.publish_progress(current);
        Ok(scrubber)
    }

    /// Scrubs store after store, the one with the fewest passes first, forever; a
    /// round over every store takes at least [`SCRUB_ROUND_MIN_MS`].
    pub async fn run(mut self) {
        let mut round_started = Instant::now();
        let mut rounds = self.rounds_done();
        while let Some(i) = self.next_store() {
            if self.rounds_done() > rounds {
                rounds = self.rounds_done();
                let rest = Duration::from_millis(SCRUB_ROUND_MIN_MS)
                    .saturating_sub(round_started.elapsed());
                if !self.control.stop.sleep(rest).await {
                    return;
                }
                round_started = Instant::now();
            }
            match self.scrub_store(i).await {
                Ok(Some(())) => {}
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(store = self.stores[i].0.id().0, error = %e, "scrub: store skipped until the others' next pass");
                    self.failures[i] += 1;
                    let retry = Duration::from_millis(SCRUB_RETRY_MS);
                    if !self.control.stop.sleep(retry).await {
                        return;
                    }
                }
            }
        }
    }

    /// Passes every store has completed.
    fn rounds_done(&self) -> u64 {
        self.stores
            .iter()
            .map(|(_, at)| at.passes)
            .min()
            .unwrap_or(0)
    }

    fn next_store(&self) -> Option<usize> {
        let passes = self.stores.iter().map(|(_, at)| at.passes);
        least_scrubbed(passes.zip(self.failures.iter().copied()))
    }

    /// Scrubs store `i` from where it stopped to its end (`Some`), or until the shard
    /// stops or is gone (`None`; its position saved when it stops).
    async fn scrub_store(&mut self, i: usize) -> Result<Option<()>, ShardError> {
        let mut saved = Instant::now();
        let mut stored = self.stores[i].0.stats()?.objects;
        loop {
            let store = self.stores[i].0.clone();
            let after = self.stores[i].1.after;
            let batch = store.addresses_after(after.as_ref(), SCRUB_BATCH_OBJECTS)?;
            if batch.is_empty() {
                let at = &mut self.stores[i].1;
                *at = ScrubPosition {
                    passes: at.passes + 1,
                    objects: 0,
                    after: None,
                };
                self.save(i).await?;
                self.publish_progress(None);
                return Ok(Some(()));
            }
            for addr in batch {
                if !self.wait_while_paused(i).await? {
                    return Ok(None);
                }
                self.scrub_one(&store, &addr).await?;
                if self.control.stop.is_stopped() {
                    // Cut short between stripes: checked again from its start next time.
                    self.save(i).await?;
                    return Ok(None);
                }
                let at = &mut self.stores[i].1;
                at.objects += 1;
                at.after = Some(addr);
                self.publish_progress(Some((i, stored)));
                // After each object, not each batch: 64 large objects at the scrub's
                // pace took hours, all of it read again after a crash.
                if saved.elapsed() >= Duration::from_millis(SCRUB_SAVE_PERIOD_MS) {
                    self.save(i).await?;
                    saved = Instant::now();
                    stored = store.stats()?.objects;
                }
            }
        }
    }

    async fn scrub_one(&mut self, store: &Store, addr: &Address) -> Result<(), ShardError> {
        // Being evicted (or repaired): waited for a while, then passed over this pass.
        let Some(_claim) = self.claim(*addr).await else {
            tracing::warn!(object = %addr, "scrub: held by another background task for {SCRUB_CLAIM_WAIT_MS} ms; passed over until the next pass");
            return Ok(());
        };
        let meta = match store::read_record(store, addr).await {
            Ok(Some(meta)) => meta,
            Ok(None) => return Ok(()),
            Err(e @ ShardError::Index { .. }) => return Err(e),
            Err(e) => {
                // A record that fails its own check: nothing of the object can be
                // trusted or rebuilt; counted with the unrepairable blocks.
                tracing::warn!(object = %addr, error = %e, "scrub: bad index record");
                StorageCounters::add(&self.metrics.scrub_bad_blocks, 1);
                StorageCounters::add(&self.metrics.scrub_unrepairable, 1);
                return Ok(());
            }
        };
        let check = check_object(
            &self.files,
            &self.codes,
            store,
            &meta,
            Some(&mut self.pacer),
        )
        .await;
        // Done with it: its files held open would outlive an eviction of it.
        self.files.forget(addr, store.dir_count());
        let m = &self.metrics;
        StorageCounters::add(&m.scrub_bytes, check.bytes_checked);
        // Cut short by the stop: checked again from its start at the next, counted then.
        let cut_short = self.control.stop.is_stopped();
        StorageCounters::add(&m.scrub_objects, u64::from(!cut_short));
        StorageCounters::add(&m.scrub_bad_blocks, check.bad_blocks);
        StorageCounters::add(&m.scrub_unrepairable, check.unrepairable_blocks());
        StorageCounters::add(&m.ec_repair_bytes, check.repaired_bytes);
        if check.lost_blocks > 0 {
            self.control.damaged.report(*addr);
        }
        Ok(())
    }

    /// `addr` claimed for the scrub, once no other background task holds it, within
    /// [`SCRUB_CLAIM_WAIT_MS`]; `None` past that, or once the shard stops.
    async fn claim(&self, addr: Address) -> Option<BackgroundClaim> {
        let deadline = Instant::now() + Duration::from_millis(SCRUB_CLAIM_WAIT_MS);
        loop {
            if let Some(claim) = self.claims.try_claim(addr) {
                return Some(claim);
            }
            let poll = Duration::from_millis(SCRUB_CLAIM_POLL_MS);
            if Instant::now() >= deadline || !self.control.stop.sleep(poll).await {
                return None;
            }
        }
    }

    /// Waits while the operator has the scrubber paused, having saved where it is in
    /// store `i` (a restart while paused resumes there); `false` once the shard stops
    /// (where it is saved) or is gone.
    async fn wait_while_paused(&self, i: usize) -> Result<bool, ShardError> {
        let mut saved = false;
        loop {
            if self.control.stop.is_stopped() {
                if !saved {
                    self.save(i).await?;
                }
                return Ok(false);
            }
            match self.control.paused.upgrade() {
                None => return Ok(false),
                Some(paused) if !paused.get() => return Ok(true),
                Some(_) if !saved => {
                    self.save(i).await?;
                    saved = true;
                }
                Some(_) => {
                    let poll = Duration::from_millis(SCRUB_PAUSE_POLL_MS);
                    self.control.stop.sleep(poll).await;
                }
            }
        }
    }

    async fn save(&self, i: usize) -> Result<(), ShardError> {
        let (store, at) = (self.stores[i].0.clone(), self.stores[i].1);
        glommio::executor()
            .spawn_blocking(move || store.save_scrub_position_blocking(at))
            .await
    }

    /// Publishes the passes every store has completed and how far the pass under way
    /// is: stores already past it count whole, the one under way (`current`: its index
    /// and how many objects it holds) by the share of its objects checked.
    fn publish_progress(&self, current: Option<(usize, u64)>) {
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        let passes = self
            .stores
            .iter()
            .map(|(_, at)| at.passes)
            .min()
            .unwrap_or(0);
        let ahead = self
            .stores
            .iter()
            .filter(|(_, at)| at.passes > passes)
            .count() as f64;
        // Only a store on the pass under way adds its part: one already a pass ahead
        // counts whole, and its part besides took the ratio past 1, then back down.
        let partial = current
            .filter(|&(i, _)| self.stores[i].1.passes == passes)
            .map_or(0.0, |(i, stored)| {
                let at = &self.stores[i].1;
                (at.objects as f64 / stored.max(1) as f64).min(1.0)
            });
        let stores = self.stores.len().max(1) as f64;
        let ppm = ((ahead + partial) / stores * 1e6) as u64;
        self.metrics.scrub_passes.store(passes, relaxed);
        self.metrics
            .scrub_progress_ppm
            .store(ppm.min(1_000_000), relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_whose_scrub_failed_waits_for_the_others_next_pass() {
        // Stores 0 and 1 at 3 passes: 0 first.
        assert_eq!(least_scrubbed([(3, 0), (3, 0)].into_iter()), Some(0));
        // Store 0's scrub failed: store 1 next (picking 0 again starved 1 for good).
        assert_eq!(least_scrubbed([(3, 1), (3, 0)].into_iter()), Some(1));
        // Store 1 passed: store 0 again, then it and the others take turns.
        assert_eq!(least_scrubbed([(3, 1), (4, 0)].into_iter()), Some(0));
        assert_eq!(
            least_scrubbed([(3, 2), (4, 0), (4, 0)].into_iter()),
            Some(1)
        );
        assert_eq!(least_scrubbed(std::iter::empty()), None);
    }

    #[test]
    fn the_pacer_never_lets_reads_run_ahead_of_the_rate_and_saves_no_idle_credit() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(1_000_000, t0);
        assert_eq!(pacer.delay(500_000, t0), Duration::ZERO);
        assert_eq!(pacer.delay(500_000, t0), Duration::from_millis(500));
        assert_eq!(pacer.delay(1, t0), Duration::from_millis(1000));
        // Idle for 10 s: the next read goes at once, the one after waits its turn.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(pacer.delay(2_000_000, later), Duration::ZERO);
        assert_eq!(pacer.delay(1, later), Duration::from_secs(2));
    }
}
