//! The repair sweep (docs/design/replication.md): every `replication_interval_ms`, a
//! shard goes over the kept objects it owns and, for each, makes sure the holders its
//! placement names hold a verified copy.
//!
//! For each page of kept objects (256): their placements from fresh lookups, asked in
//! one request (`DhtClient::placements_later`: the DHT thread keeps two lookups in
//! flight and answers every address of the page whose candidates their union holds; a
//! node the network lost is no longer found, so the placement names another). For one object: a holder
//! named after others first audits those before it and leaves the object to the first
//! that proves its copy, except on its turn (one pass in as many as there are holders);
//! so the first named holder checks it (or the next, when the first is a joiner without
//! it), each other holder now and then (the first may never sweep), and so does a node
//! holding a kept copy the placement does not name (the node that took the upload, or
//! one a join displaced). Auditing is asking a
//! holder for its own kept copy only (`"local":true,"kept":true`: a displaced copy made
//! evictable and named again fails, so the next holder checks the object and has that
//! copy kept — its own sweep walks kept copies only), one random 64 KiB group, verified
//! against the address as any peer fetch is (`PeerGet`). A holder that fails is asked to
//! take a copy (`copy_to_later`): it pulls it from this node, verified, and keeps it
//! (a holder asked for a copy it has checks it whole, and replaces it if it is damaged
//! past its parity). The checker's own copy gets the same audit, read from its disk
//! rather than its cache; one that fails is checked whole and replaced the same way.
//! When every holder named proves its copy, a kept copy here that the placement does not
//! name becomes evictable. After the kept copies, one page of evictable copies is looked
//! at for an object whose named holders were all lost (`rescue.rs`). A shard checks
//! [`SWEEP_CHECKS_AT_ONCE`] objects at a time, so a pass keeps at most that many lookups
//! and their few group reads in flight.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use ron_codec::tree::{group_count, GroupIndex};
use ron_codec::Address;
use ron_link::counters::FrontCounters;
use ron_link::dht::{DhtClient, Provider};
use ron_shards::lifecycle::{finished_within, join_all};
use ron_shards::record::ObjectMeta;

use super::audit::random_below;
use super::Replication;

/// Objects looked at per step of the walk (one read transaction per store, one
/// placements request).
const SWEEP_BATCH: usize = ron_link::dht::PLACEMENTS_PER_REQUEST_MAX;
/// Objects a shard checks at once: their lookups and audits overlap (a lookup is
/// network round trips, not work), and a shard's share of the DHT thread's lookups
/// stays small (it takes 256 at once, `RESOLVES_MAX`).
pub(super) const SWEEP_CHECKS_AT_ONCE: usize = 8;
/// The longest the placements of a page may take (its lookups, two at a time).
const PLACEMENTS_WAIT_MS: u64 = 60_000;
/// The longest the holders asked for copies are waited for.
pub(super) const COPIES_WAIT_MS: u64 = 60_000;

/// What one check of one object found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Checked {
    /// Another holder is named first: it checks this object.
    NotMine,
    /// The denylist blocks it: it is not copied anywhere.
    Blocked,
    /// Every holder named holds a verified copy, and `replicas` are named.
    Whole,
    /// Some did not (copies were asked for), or fewer than `replicas` are named.
    Short,
    /// The placement or the object's metadata could not be had (the DHT busy, slow or
    /// unreachable): tried next pass, and counted (`ron_objects_unchecked`).
    Unchecked,
    /// (Rescue walk) the evictable copy here is no longer whole or stored: nothing to
    /// rescue.
    Gone,
}

/// What one pass found, for its gauges and whether it counts as a sweep.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct PassTally {
    /// Objects the pass looked at (kept ones, then the rescue walk's page).
    pub(super) looked: u64,
    pub(super) short: u64,
    pub(super) unchecked: u64,
}

impl PassTally {
    pub(super) fn add(&mut self, checked: &[Checked]) {
        self.looked += checked.len() as u64;
        self.short += checked.iter().filter(|c| **c == Checked::Short).count() as u64;
        self.unchecked += checked.iter().filter(|c| **c == Checked::Unchecked).count() as u64;
    }

    /// Whether the pass counts as a sweep (`ron_replication_sweeps_total` and the last
    /// sweep's time): it checked some object, or had none to check. A pass that could
    /// place none of its objects (the DHT stopped, every lookup out of time) is not one,
    /// so a node whose DHT is broken shows its sweep late instead of a fresh sweep that
    /// found nothing short.
    pub(super) fn swept(&self) -> bool {
        self.looked == 0 || self.unchecked < self.looked
    }
}

impl Replication {
    /// The sweep: a pass every `interval` until replication stops.
    pub(super) async fn sweep_copies(self: Rc<Self>, interval: Duration, replicas: usize) {
        let mut pass = 0u64;
        while self.stop.sleep(interval).await {
            let dht = self.dht.clone();
            let began = Instant::now();
            self.sweep_pass(&dht, replicas, pass).await;
            self.last_pass.set(began.elapsed());
            pass += 1;
        }
    }

    async fn sweep_pass(self: &Rc<Self>, dht: &DhtClient, replicas: usize, pass: u64) {
        let mut after: Option<Address> = None;
        let mut tally = PassTally::default();
        loop {
            let (kept, next) = match self.shard.kept_after(after.as_ref(), SWEEP_BATCH) {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(shard = self.shard.index().0, "repair sweep stopped: {e}");
                    return;
                }
            };
            let Some(placed) = self.stop.unless_stopped(placements(dht, &kept)).await else {
                return;
            };
            for (batch, placed) in kept
                .chunks(SWEEP_CHECKS_AT_ONCE)
                .zip(placed.chunks(SWEEP_CHECKS_AT_ONCE))
            {
                if self.stop.is_stopped() {
                    return;
                }
                FrontCounters::add(&self.counters.replication_checks, batch.len() as u64);
                let checks = batch.iter().zip(placed).map(|(addr, holders)| {
                    self.check_copies(dht, *addr, holders.as_deref(), replicas, pass)
                });
                let Some(checked) = self.stop.unless_stopped(join_all(checks.collect())).await
                else {
                    return;
                };
                tally.add(&checked);
            }
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let Some(()) = self.rescue_page(dht, &mut tally).await else {
            return;
        };
        let metrics = &self.counters;
        metrics
            .under_replicated
            .store(tally.short, std::sync::atomic::Ordering::Relaxed);
        metrics
            .replication_unchecked
            .store(tally.unchecked, std::sync::atomic::Ordering::Relaxed);
        if !tally.swept() {
            tracing::warn!(
                shard = self.shard.index().0,
                objects = tally.looked,
                "repair sweep: no object's placement could be had this pass (is the DHT reachable?)"
            );
            return;
        }
        FrontCounters::add(&metrics.replication_sweeps, 1);
        let now_s = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        metrics
            .replication_sweep_at
            .store(now_s, std::sync::atomic::Ordering::Relaxed);
    }

    async fn check_copies(
        self: &Rc<Self>,
        dht: &DhtClient,
        addr: Address,
        holders: Option<&[Provider]>,
        replicas: usize,
        pass: u64,
    ) -> Checked {
        let (meta, holders) = match self.checkable(addr, holders).await {
            Ok(checkable) => checkable,
            Err(checked) => return checked,
        };
        let claimed = self.held_claims.borrow_mut().take(&addr);
        let named_at = holders.iter().position(|h| h.local);
        let mut held: Vec<Option<bool>> = vec![None; holders.len()];
        // A holder named after another yields to the first before it that proves its
        // copy: that one checks the object (one audit here, not a check per holder) —
        // except on its turn, one pass in as many as there are holders: the first may
        // hold a copy and never sweep (`replication_interval_ms` 0, or a peer that
        // stores and serves but does not repair), and the object would stay short for
        // good, every other holder yielding to it.
        let turn = (pass % holders.len().max(1) as u64) as usize;
        if let Some(at) = named_at.filter(|at| *at != turn) {
            for (before, holder) in holders[..at].iter().enumerate() {
                let proved = self
                    .audit_claim(dht, holder, addr, meta.len(), &claimed)
                    .await;
                held[before] = Some(proved);
                if proved {
                    return Checked::NotMine;
                }
            }
        }
        let mut missing = Vec::new();
        let mut sources = Vec::new();
        let mut own_whole = true;
        for (i, holder) in holders.iter().enumerate() {
            let proved = match (holder.local, held[i]) {
                (true, _) => {
                    own_whole = self.audit_own(dht, &meta).await;
                    continue;
                }
                (false, Some(known)) => known,
                (false, None) => {
                    self.audit_claim(dht, holder, addr, meta.len(), &claimed)
                        .await
                }
            };
            match (proved, holder.oap) {
                (true, Some(oap)) => sources.push(oap),
                (true, None) => {}
                (false, _) => missing.push(holder.node_id.clone()),
            }
        }
        if !own_whole {
            self.replace_own(addr, &sources).await;
        }
        if missing.is_empty() && own_whole {
            // Every holder named proves its copy: a kept copy here that the placement no
            // longer names (the node that took the upload, or one a join displaced)
            // becomes evictable — never before the holders have theirs, nor while a peer
            // that asked for it lately may still audit it (`claims::ASKED_TO_HOLD_MAX`).
            let asked =
                self.asked_to_hold
                    .borrow()
                    .seen_within(&addr, self.demote_grace(), Instant::now());
            if named_at.is_none() && holders.len() >= replicas && !asked {
                self.demote(addr).await;
            }
            // Fewer holders named than `replicas` (a network smaller than that, or a
            // placement answered from a partial view: a node cut off names itself
            // alone) is fewer verified copies all the same.
            return match holders.len() >= replicas {
                true => Checked::Whole,
                false => Checked::Short,
            };
        }
        if missing.is_empty() {
            return Checked::Short;
        }
        tracing::info!(obj = %addr, holders = missing.len(), "repair sweep: asking holders without a verified copy to take one");
        self.ask_for_copies(dht, addr, missing).await;
        Checked::Short
    }

    /// The object's metadata and its placement, or what the check is when it cannot be
    /// made: the denylist blocks it, or the placement or the metadata could not be had.
    pub(super) async fn checkable<'h>(
        &self,
        addr: Address,
        holders: Option<&'h [Provider]>,
    ) -> Result<(Rc<ObjectMeta>, &'h [Provider]), Checked> {
        if self.blocked.blocks(&addr) {
            return Err(Checked::Blocked);
        }
        let holders = holders.ok_or(Checked::Unchecked)?;
        let meta = self
            .shard
            .meta(&addr)
            .await
            .map_err(|_| Checked::Unchecked)?;
        Ok((meta, holders))
    }

    async fn demote(&self, addr: Address) {
        match self.shard.demote_if_kept(&addr).await {
            Ok(true) => FrontCounters::add(&self.counters.replication_demoted, 1),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(obj = %addr, "repair sweep: cannot make a displaced copy evictable: {e}")
            }
        }
    }

    /// Whether this node's own copy reads a random group back verified from its disk
    /// (rebuilt from parity if it must be): the audit it asks of other holders.
    async fn audit_own(&self, dht: &DhtClient, meta: &ObjectMeta) -> bool {
        let groups = group_count(meta.len()).max(1);
        let group = GroupIndex(random_below(groups, &meta.addr()));
        let read = self.shard.group_from_disk(meta, group).await;
        let outcome = if read.is_ok() { "verified" } else { "failed" };
        dht.metrics.count_audit(outcome);
        read.is_ok()
    }

    /// This node's copy failed its own audit: it is checked whole and, if damaged past
    /// its parity, replaced by one fetched verified from a holder that proved its copy
    /// (`sources`; else the providers the DHT names).
    async fn replace_own(self: &Rc<Self>, addr: Address, sources: &[SocketAddr]) {
        let outcome = self.pull(addr, sources.first().copied(), false).await;
        tracing::info!(obj = %addr, ?outcome, "repair sweep: this node's own copy failed its audit");
    }
}

/// The holders of each of `kept` (`None` where the placement could not be had: the DHT
/// busy or slow), asked in one request: the DHT thread looks up each stretch of the key
/// space they lie in once.
pub(super) async fn placements(dht: &DhtClient, kept: &[Address]) -> Vec<Option<Vec<Provider>>> {
    let addrs = kept.iter().map(|a| *a.as_bytes()).collect();
    let answer = match dht.placements_later(addrs, PLACEMENTS_WAIT_MS) {
        Ok(answer) => answer,
        Err(e) => {
            tracing::debug!("repair sweep: no placements this page: {e}");
            return vec![None; kept.len()];
        }
    };
    let wait = Duration::from_millis(PLACEMENTS_WAIT_MS + 1_000);
    match finished_within(wait, answer).await {
        Some(Ok(answers)) if answers.len() == kept.len() => {
            answers.into_iter().map(Result::ok).collect()
        }
        _ => vec![None; kept.len()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_that_could_place_nothing_is_no_sweep_and_counts_what_it_could_not_check() {
        let mut tally = PassTally::default();
        assert!(tally.swept(), "nothing to check is a sweep");
        tally.add(&[Checked::Unchecked; 8]);
        tally.add(&[Checked::Unchecked, Checked::Unchecked]);
        assert_eq!((tally.looked, tally.unchecked, tally.short), (10, 10, 0));
        assert!(!tally.swept(), "a DHT that placed nothing: {tally:?}");
        tally.add(&[
            Checked::Whole,
            Checked::Short,
            Checked::NotMine,
            Checked::Gone,
        ]);
        assert_eq!((tally.looked, tally.unchecked, tally.short), (14, 10, 1));
        assert!(tally.swept(), "some objects were checked: {tally:?}");
    }
}
