//! The rescue walk (docs/design/replication.md, "The last copy is an evictable one"): the
//! repair sweep walks kept copies only, so an object whose named holders were all lost
//! while a node still held an evictable copy of it (a read-through, or a copy a join
//! displaced) had nobody to repair it — and that copy could be the next one evicted.
//! After each pass over the kept copies, a shard looks at one page of its evictable
//! copies ([`RESCUES_PER_PASS`], a cursor carried from pass to pass): for each, the
//! holders its placement names are audited in order until one proves a kept copy (that
//! holder's own sweep repairs the object). When none does, the copy here is checked whole
//! and made kept — it can no longer be evicted, and as a kept copy it is announced,
//! offered to the holders and walked by the sweep, which makes it evictable again once
//! every named holder proved its own — and the named holders are asked to take a copy
//! from it now.

use ron_codec::Address;
use ron_link::counters::FrontCounters;
use ron_link::dht::{DhtClient, Provider};
use ron_shards::lifecycle::join_all;
use std::rc::Rc;

use super::sweep::{placements, Checked, PassTally, SWEEP_CHECKS_AT_ONCE};
use super::Replication;

/// Evictable copies a shard looks at per pass of the sweep: one page of placements.
pub(super) const RESCUES_PER_PASS: usize = ron_link::dht::PLACEMENTS_PER_REQUEST_MAX;

impl Replication {
    /// One page of this shard's evictable copies after where the last pass stopped (from
    /// the start once the walk is done), added to the pass's `tally` (rescued copies —
    /// made kept, their holders asked for copies — count as short); `None` when the stop
    /// cut it short. A page none of whose placements could be had is looked at again
    /// next pass, not skipped until the walk comes round.
    pub(super) async fn rescue_page(
        self: &Rc<Self>,
        dht: &DhtClient,
        tally: &mut PassTally,
    ) -> Option<()> {
        let from = self.rescue_from.get();
        let (copies, next) = match self.shard.evictable_after(from.as_ref(), RESCUES_PER_PASS) {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(shard = self.shard.index().0, "rescue walk stopped: {e}");
                return Some(());
            }
        };
        if copies.is_empty() {
            self.rescue_from.set(next);
            return Some(());
        }
        let placed = self.stop.unless_stopped(placements(dht, &copies)).await?;
        if placed.iter().any(Option::is_some) {
            self.rescue_from.set(next);
        }
        for (batch, placed) in copies
            .chunks(SWEEP_CHECKS_AT_ONCE)
            .zip(placed.chunks(SWEEP_CHECKS_AT_ONCE))
        {
            if self.stop.is_stopped() {
                return None;
            }
            let checks = batch
                .iter()
                .zip(placed)
                .map(|(addr, holders)| self.rescue(dht, *addr, holders.as_deref()));
            let checked = self.stop.unless_stopped(join_all(checks.collect())).await?;
            tally.add(&checked);
        }
        Some(())
    }

    /// Whether `addr`'s evictable copy here is the last one a placement holder can prove
    /// (`Short`: then it was made kept and the holders asked for copies) or a named holder
    /// proved a kept copy (`NotMine`).
    async fn rescue(
        self: &Rc<Self>,
        dht: &DhtClient,
        addr: Address,
        holders: Option<&[Provider]>,
    ) -> Checked {
        let (meta, holders) = match self.checkable(addr, holders).await {
            Ok(checkable) => checkable,
            Err(checked) => return checked,
        };
        let mut missing = Vec::new();
        for holder in holders.iter().filter(|h| !h.local) {
            if self.audit(dht, holder, addr, meta.len()).await {
                return Checked::NotMine;
            }
            missing.push(holder.node_id.clone());
        }
        if !self.copy_is_whole(&addr, None).await {
            return Checked::Gone;
        }
        match self.shard.keep_if_stored(&addr).await {
            Ok(true) => {}
            Ok(false) => return Checked::Gone,
            Err(e) => {
                tracing::warn!(obj = %addr, "rescue: cannot keep the last copy: {e}");
                return Checked::Gone;
            }
        }
        FrontCounters::add(&self.counters.replication_rescues, 1);
        tracing::warn!(obj = %addr, holders = missing.len(), "rescue: no holder named proves a copy; this node's evictable copy is kept and the holders asked to take one from it");
        if missing.is_empty() {
            return Checked::Short;
        }
        self.ask_for_copies(dht, addr, missing).await;
        Checked::Short
    }
}
