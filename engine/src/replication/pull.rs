//! The copies other nodes ask this shard to keep (`/ron/replicate/1`, handed over by the
//! DHT thread as [`Pull`]s for the addresses this shard owns), and the copy the sweep
//! asks of this node when its own fails its audit.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use ron_codec::Address;
use ron_link::counters::FrontCounters;
use ron_link::dht::{Pull, PullOutcome};
use ron_shards::scrub::Pacer;

use super::Replication;

impl Replication {
    /// A copy the placement asks this shard (the owner of `addr`) to hold: kept if it
    /// holds it already; refused while a data dir is below the disk floor; else fetched —
    /// from `source` first, then, unless `source_only`, the providers the DHT names —
    /// verified, coalesced with any read of it, and committed as kept. Answers once the
    /// kept copy is durable, or why it failed.
    ///
    /// Another node's request (`/ron/replicate/1`) is fetched from that node only: it
    /// names addresses it claims to hold, and a made-up one its OAP port does not serve
    /// would otherwise cost a whole DHT lookup each — a few requests from one host held
    /// every lookup slot, and clients' misses were refused `too many lookups`. The sweep's
    /// own replacement of a damaged copy may go on to the DHT.
    ///
    /// A holder asks for a copy this node holds only when its audit of it failed, so a
    /// copy held is checked whole first (`Shard::check_object`, which rebuilds what
    /// parity can; one check at a time, paced, and not again soon: `held_checks.rs`);
    /// one damaged beyond that is fetched again verified, and removed only
    /// once its replacement is staged: a fetch that fails (no other copy, the sources
    /// unreachable) leaves it, serving its good groups. A copy held kept is never
    /// refused for the disk floor; an evictable one is, as a copy not held.
    pub async fn pull(
        &self,
        addr: Address,
        source: Option<SocketAddr>,
        source_only: bool,
    ) -> PullOutcome {
        if self.blocked.blocks(&addr) {
            return PullOutcome::Failed("blocked by this node's denylist".into());
        }
        // Below the floor no copy becomes kept that is not kept already: neither one
        // fetched nor a read-through copy held here (made kept, it could never be
        // evicted: a client's GET and one request pinned any object, floor or not).
        match self.shard.is_kept(&addr).await {
            Ok(true) => {}
            Ok(false) => {
                if let Err(below) = self.disk_floor.check().await {
                    FrontCounters::add(&self.counters.replica_pulls_no_room, 1);
                    tracing::warn!(obj = %addr, "a copy asked for is refused: {below}");
                    return PullOutcome::NoRoom(below.to_string());
                }
            }
            Err(e) => return PullOutcome::Failed(e.to_string()),
        }
        let replacing = match self.shard.keep_if_stored(&addr).await {
            Ok(true) if self.held_copy_is_whole(&addr).await => return PullOutcome::Held,
            Ok(held) => held,
            Err(e) => return PullOutcome::Failed(e.to_string()),
        };
        let flight = match self
            .read_through
            .join_copy(addr, source, source_only, replacing)
        {
            Ok(flight) => flight,
            Err(_) => return PullOutcome::Busy,
        };
        if let Err(refused) = flight.wait_stored().await {
            return PullOutcome::Failed(refused.to_string());
        }
        // A flight that committed before this pull joined it made an evictable copy.
        match self.shard.keep_if_stored(&addr).await {
            Ok(true) => {
                // `ron_replication_pulls_total` counts copies made: of the pulls that
                // waited on one flight only the first counts it, and a second flight of
                // an object already stored (a pull that looked just before the first
                // one's commit) made none.
                if flight.claim_new_copy() {
                    FrontCounters::add(&self.counters.replica_pulls_held, 1);
                }
                PullOutcome::Held
            }
            Ok(false) => PullOutcome::Failed("fetched, then evicted before it was kept".into()),
            Err(e) => PullOutcome::Failed(e.to_string()),
        }
    }

    /// Whether every byte of this shard's copy of `addr` reads back verified, straight
    /// or rebuilt from its parity (or another lane). Logged when it does not: the copy
    /// is about to be replaced. Bad blocks that rebuild but were not written back (a full
    /// or read-only disk, a parity checksum) leave the copy whole: replacing it would
    /// cost a fetch for nothing.
    pub(super) async fn copy_is_whole(&self, addr: &Address, pacer: Option<&mut Pacer>) -> bool {
        match self.shard.check_object_paced(addr, pacer).await {
            Ok(check) if check.is_whole() => {
                if check.unrepairable_blocks() > 0 {
                    let bad = check.unrepairable_blocks();
                    tracing::warn!(obj = %addr, bad_blocks = bad, "a copy asked for has bad blocks that rebuild but were not written back: kept");
                }
                true
            }
            Ok(check) => {
                let lost = check.lost_blocks;
                tracing::warn!(obj = %addr, lost_blocks = lost, "a copy asked for is damaged beyond its parity: fetching it again (kept until the replacement is staged)");
                false
            }
            Err(e) => {
                tracing::warn!(obj = %addr, "a copy asked for cannot be checked: {e}; fetching it again (kept until the replacement is staged)");
                false
            }
        }
    }

    /// Whether a copy held that another node asked this shard to hold reads back whole:
    /// remembered when it did lately, else checked in its turn at the shard's pace.
    async fn held_copy_is_whole(&self, addr: &Address) -> bool {
        if self.held_checks.whole_recently(addr, Instant::now()) {
            return true;
        }
        let check = |mut pacer: Option<Pacer>| async move {
            FrontCounters::add(&self.counters.replica_held_checks, 1);
            let whole = self.copy_is_whole(addr, pacer.as_mut()).await;
            (whole, pacer)
        };
        self.held_checks.run(*addr, check).await
    }

    /// One copy the DHT thread handed this shard, in a task of its own (counted in
    /// `requests_running` until it answers, so the stop can wait for it).
    pub(super) fn start_pull(self: &Rc<Self>, pull: Pull) {
        let running = self.requests_running.start();
        let this = Rc::clone(self);
        glommio::spawn_local(async move {
            let addr = Address::from_bytes(pull.addr);
            let outcome = this.pull(addr, Some(pull.source), true).await;
            if matches!(outcome, PullOutcome::Held) {
                this.asked_to_hold.borrow_mut().seen(addr, Instant::now());
            }
            let _ = pull.reply.send(outcome);
            drop(running);
        })
        .detach();
    }
}
