//! The evicter: one background task per shard that keeps the evictable copies in the
//! shard's stores (objects fetched by read-through, `store/evictable.rs`) within the
//! shard's share of `fetched_bytes_max`, oldest first (docs/design/eviction.md).
//!
//! Woken at start and after each index commit that stored evictable copies, it sums the
//! stores' evictable bytes (one stat read per store) and, while they exceed the budget,
//! evicts a batch: the oldest copies across the shard's stores until the excess is
//! covered (at most [`EVICT_BATCH_MAX`]), once the youngest of them is
//! [`EVICT_AGE_MIN_US`] old. For each store of the batch:
//!
//! 1. claim the addresses in the commit queue, so that an upload of one waits
//!    ([`GroupCommit::claim_for_eviction`]);
//! 2. remove their records from every index replica, leaving markers (blocking pool);
//! 3. have every shard forget their metadata (`forget`: the mesh), so that a new request
//!    misses and reads through again instead of reading files about to go;
//! 4. unlink their files and clear the markers (blocking pool), then close this shard's
//!    open files of them (a read that opened one again after step 3 does not keep it);
//! 5. release the claims, count them, and tell the DHT the node no longer provides them.
//!
//! A request already streaming an evicted object keeps reading a file it holds open (the
//! inode outlives its name); its next open after the unlink finds no file, and the
//! request ends there.

use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use futures_lite::future::BoxedLocal;
use glommio::channels::local_channel::LocalReceiver;
use ron_codec::Address;
use ron_link::counters::StorageCounters;
use ron_link::dht::DhtClient;

use crate::cache::AddressMap;
use crate::commit::GroupCommit;
use crate::error::ShardError;
use crate::lifecycle::StopSignal;
use crate::store::{now_us, EvictableObject, Store};

/// Most objects evicted in one batch (one index commit per store of the batch).
pub const EVICT_BATCH_MAX: usize = 256;

/// Youngest copy evicted, µs: requests that waited on its fetch move from the fetch's
/// window to the store when it is stored, and must find it there.
pub const EVICT_AGE_MIN_US: u64 = 1_000_000;

/// Drops the metadata of evicted objects from every shard's cache; resolves once all
/// have.
pub type Forget = Rc<dyn Fn(Vec<Address>) -> BoxedLocal<()>>;
/// Closes this shard's open files of evicted objects, once they are unlinked.
pub type ForgetFiles = Rc<dyn Fn(&[Address])>;

/// How often a task waiting for a claim looks again.
const CLAIM_RETRY: std::time::Duration = std::time::Duration::from_millis(10);

/// Objects a background task of the shard (scrub, repair, eviction) is working on. Each
/// skips an object another holds, so that no repair writes back blocks of an object
/// being evicted and no eviction unlinks files a repair is writing.
#[derive(Debug, Default, Clone)]
pub(crate) struct BackgroundClaims(Rc<RefCell<AddressMap<Address, ()>>>);

/// A claim on one object, given back when dropped.
#[derive(Debug)]
pub(crate) struct BackgroundClaim {
    claims: BackgroundClaims,
    addr: Address,
}

impl BackgroundClaims {
    /// Claims `addr` once no other background task holds it (each holds an object for
    /// one check, repair or eviction).
    pub(crate) async fn claim(&self, addr: Address) -> BackgroundClaim {
        loop {
            if let Some(claim) = self.try_claim(addr) {
                return claim;
            }
            glommio::timer::sleep(CLAIM_RETRY).await;
        }
    }

    /// Whether a background task holds `addr` now.
    pub(crate) fn is_claimed(&self, addr: &Address) -> bool {
        self.0.borrow().contains_key(addr)
    }

    /// Claims `addr`, unless another background task holds it.
    pub(crate) fn try_claim(&self, addr: Address) -> Option<BackgroundClaim> {
        let mut held = self.0.borrow_mut();
        if held.contains_key(&addr) {
            return None;
        }
        held.insert(addr, ());
        Some(BackgroundClaim {
            claims: self.clone(),
            addr,
        })
    }
}

impl Drop for BackgroundClaim {
    fn drop(&mut self) {
        self.claims.0.borrow_mut().remove(&self.addr);
    }
}

/// What the evicter of one shard works with.
pub(crate) struct Evicter {
    pub stores: Vec<Store>,
    /// This shard's share of the node's `fetched_bytes_max`.
    pub budget_bytes: u64,
    pub commits: Weak<GroupCommit>,
    pub forget: Forget,
    pub forget_files: ForgetFiles,
    pub metrics: Arc<StorageCounters>,
    pub dht: Option<DhtClient>,
    pub claims: BackgroundClaims,
    /// The shard's stop: the evicter stops between evictions.
    pub stop: StopSignal,
}

impl Evicter {
    /// Runs until the shard stops: each wake-up evicts until within the budget. An
    /// eviction under way is finished first (its steps are each durable, and the next
    /// open finishes one a crash cut short).
    pub(crate) async fn run(self, wakes: LocalReceiver<()>) {
        self.publish_budget();
        while !self.stop.is_stopped() {
            if let Err(e) = self.evict_to_budget().await {
                tracing::warn!(error = %e, "eviction stopped until the next commit");
            }
            if self
                .stop
                .unless_stopped(wakes.recv())
                .await
                .flatten()
                .is_none()
            {
                return;
            }
        }
    }

    fn publish_budget(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.metrics
            .fetched_bytes_max
            .store(self.budget_bytes, Relaxed);
    }

    /// Evictable bytes held, summed over the shard's stores (and published).
    fn held(&self) -> Result<u64, ShardError> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut held = crate::store::StoreStats::default();
        for store in &self.stores {
            let stats = store.evictable_stats()?;
            held.objects = held.objects.saturating_add(stats.objects);
            held.bytes = held.bytes.saturating_add(stats.bytes);
        }
        self.metrics.evictable_objects.store(held.objects, Relaxed);
        self.metrics.evictable_bytes.store(held.bytes, Relaxed);
        Ok(held.bytes)
    }

    async fn evict_to_budget(&self) -> Result<(), ShardError> {
        while !self.stop.is_stopped() {
            let held = self.held()?;
            if held <= self.budget_bytes {
                return Ok(());
            }
            let batch = self.oldest_covering(held - self.budget_bytes)?;
            let now_us = now_us();
            let youngest = batch
                .iter()
                .map(|(_, o)| o.fetched_at_us)
                .max()
                .unwrap_or(0);
            let wait_us = wait_before_evicting_us(youngest, now_us);
            let wait = std::time::Duration::from_micros(wait_us);
            if wait_us > 0 && !self.stop.sleep(wait).await {
                return Ok(());
            }
            let mut evicted = 0;
            for store in &self.stores {
                let mine: Vec<Address> = batch
                    .iter()
                    .filter(|(s, _)| s.id() == store.id())
                    .map(|(_, o)| o.addr)
                    .collect();
                if !mine.is_empty() {
                    evicted += self.evict(store, &mine).await?;
                }
            }
            if evicted == 0 {
                // Every candidate is being committed again or read through: the next
                // commit wakes the evicter.
                return Ok(());
            }
        }
        Ok(())
    }

    /// The oldest evictable copies across the stores whose bytes cover `excess`, at
    /// most [`EVICT_BATCH_MAX`], with their stores.
    fn oldest_covering(&self, excess: u64) -> Result<Vec<(&Store, EvictableObject)>, ShardError> {
        let mut oldest: Vec<(&Store, EvictableObject)> = Vec::new();
        for store in &self.stores {
            let candidates = store.oldest_evictable(EVICT_BATCH_MAX)?;
            oldest.extend(candidates.into_iter().map(|o| (store, o)));
        }
        oldest.sort_by_key(|(_, o)| o.fetched_at_us);
        let mut covered = 0u64;
        let take = oldest
            .iter()
            .take_while(|(_, o)| {
                let before = covered;
                covered = covered.saturating_add(o.len);
                before < excess
            })
            .count();
        oldest.truncate(take.clamp(1, EVICT_BATCH_MAX));
        Ok(oldest)
    }

    /// Evicts `addrs` of `store` (steps 1–5 of the module doc); returns how many were.
    async fn evict(&self, store: &Store, addrs: &[Address]) -> Result<usize, ShardError> {
        let evicted = self.evict_quietly(store, addrs).await?;
        self.count(&evicted);
        if let Some(dht) = &self.dht {
            withdraw(dht, evicted.iter().map(|o| *o.addr.as_bytes()).collect()).await;
        }
        Ok(evicted.len())
    }

    /// Removes the copy `claim` holds in `store`, which must be evictable (a damaged
    /// copy made so to be fetched again): steps 1–4, the DHT not told — the caller
    /// withdraws it when no copy takes its place. The caller claimed it before making it
    /// evictable, so no other task saw it evictable and took it. `false`: it is gone.
    pub(crate) async fn discard(
        &self,
        store: &Store,
        claim: BackgroundClaim,
    ) -> Result<bool, ShardError> {
        let discarded = self.evict_claimed(store, vec![claim]).await?;
        self.count_stored(&discarded);
        Ok(discarded.len() == 1)
    }

    /// Steps 1–4: the objects evicted, of those no other background task holds.
    async fn evict_quietly(
        &self,
        store: &Store,
        addrs: &[Address],
    ) -> Result<Vec<EvictableObject>, ShardError> {
        let held: Vec<BackgroundClaim> = addrs
            .iter()
            .filter_map(|a| self.claims.try_claim(*a))
            .collect();
        self.evict_claimed(store, held).await
    }

    /// Steps 1–4 for the objects `held` claims.
    async fn evict_claimed(
        &self,
        store: &Store,
        held: Vec<BackgroundClaim>,
    ) -> Result<Vec<EvictableObject>, ShardError> {
        let Some(commits) = self.commits.upgrade() else {
            return Ok(Vec::new());
        };
        let free: Vec<Address> = held.iter().map(|c| c.addr).collect();
        let claimed = commits.claim_for_eviction(&free);
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let (owned, to_evict) = (store.clone(), claimed.clone());
        let evicted = glommio::executor()
            .spawn_blocking(move || owned.evict_blocking(&to_evict))
            .await;
        let evicted = match evicted {
            Ok(evicted) => evicted,
            Err(e) => {
                commits.release_evicted(&claimed);
                return Err(e);
            }
        };
        let gone: Vec<Address> = evicted.iter().map(|o| o.addr).collect();
        commits.forget_announcements(&gone);
        (self.forget)(gone.clone()).await;
        let (owned, to_unlink) = (store.clone(), gone.clone());
        let unlinked = glommio::executor()
            .spawn_blocking(move || owned.unlink_evicted_blocking(&to_unlink))
            .await;
        // A read still holding the metadata may have opened a file again between the
        // forget and the unlink: no descriptor of an unlinked file stays open.
        (self.forget_files)(&gone);
        commits.release_evicted(&claimed);
        if let Err(e) = unlinked {
            // Their records are gone; the next start unlinks what is left.
            tracing::warn!(store = store.id().0, error = %e, "evicted objects' files kept until restart");
        }
        drop(held);
        Ok(evicted)
    }

    fn count(&self, evicted: &[EvictableObject]) {
        let bytes: u64 = evicted.iter().map(|o| o.len).sum();
        StorageCounters::add(&self.metrics.evictions, evicted.len() as u64);
        StorageCounters::add(&self.metrics.evicted_bytes, bytes);
        self.count_stored(evicted);
    }

    /// The objects and bytes stored, less `removed`.
    fn count_stored(&self, removed: &[EvictableObject]) {
        use std::sync::atomic::Ordering::Relaxed;
        let bytes: u64 = removed.iter().map(|o| o.len).sum();
        let objects = removed.len() as u64;
        let m = &self.metrics;
        m.objects_stored.fetch_sub(objects, Relaxed);
        m.bytes_stored.fetch_sub(bytes, Relaxed);
    }
}

/// How long to wait before evicting a batch whose youngest copy was fetched at
/// `youngest_us` (wall clock): until it is [`EVICT_AGE_MIN_US`] old, and never longer
/// than that — the wall clock stepped back would otherwise put the fetch in the future
/// and stall every eviction (the copies past the budget growing) for as long as the
/// step.
fn wait_before_evicting_us(youngest_us: u64, now_us: u64) -> u64 {
    youngest_us
        .saturating_add(EVICT_AGE_MIN_US)
        .saturating_sub(now_us)
        .min(EVICT_AGE_MIN_US)
}

/// Tells the DHT thread the node no longer provides `keys`, waiting while its mailbox
/// is full (a withdrawal dropped would keep a key republished that the node lacks).
pub async fn withdraw(dht: &DhtClient, mut keys: Vec<[u8; 32]>) {
    loop {
        match dht.try_withdraw(keys) {
            Some(Ok(())) | None => return,
            Some(Err(back)) => {
                keys = back;
                glommio::timer::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_evicted_once_a_second_old_and_a_clock_stepped_back_stalls_nothing() {
        let now = 50_000_000;
        assert_eq!(
            wait_before_evicting_us(now - 3_000_000, now),
            0,
            "old enough"
        );
        assert_eq!(wait_before_evicting_us(now - 400_000, now), 600_000);
        // The wall clock stepped back an hour after the fetch: one second, not an hour.
        let fetched_before_the_step = now + 3_600_000_000;
        assert_eq!(
            wait_before_evicting_us(fetched_before_the_step, now),
            EVICT_AGE_MIN_US
        );
    }
}
