//! Placement lookups: which nodes the placement names for a key, as an operator or a
//! shard's sweep asks (`/admin/placement`), or for a kept key whose publication could not
//! be sure of its holders, or a page of them (a shard's sweep). One `get_closest_peers`
//! lookup of the key's k closest (the placement's candidates; it connects to them, which
//! greets them); then the placement over those peers, this node and the peers lost but
//! not yet counted gone, each only when it is within the lookup's reach of the key
//! ([`holders_in_view`]), answered once every peer found is greeted or [`GREETING_WAIT`]
//! passed, or at the request's deadline. A view not sure of the candidates (a lookup that
//! timed out) is answered as it stands and counted
//! (`ron_replication_placements_unsure_total`). At most [`RESOLVES_MAX`] at once.
//!
//! A page keeps the union of its converged lookups' balls ([`Coverage`]) and of the peers
//! they found: after each lookup, every address whose ball out to its k-th nearest known
//! node lies in the union is answered (no unknown node can be among its candidates). The
//! next lookup is of an address outside the union, far from those in flight
//! ([`PlacementBatch::next_lookup`]), [`BATCH_LOOKUPS_AT_ONCE`] at a time: a page of 48
//! addresses over 30 nodes takes 3 lookups, not 48.

use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use libp2p::kad::{QueryId, U256};
use libp2p::PeerId;
use ron_link::dht::{Reply, ResolveError, ResolveReply, Resolved};

use crate::closest::{farthest, nth_nearest, peer_position, DistanceKey};
use crate::coverage::Coverage;
use crate::node::address::record_key;
use crate::node::config::{
    BATCH_LOOKUPS_AT_ONCE, GREETING_WAIT, PUBLISH_LOOKUP_PEERS, RESOLVES_MAX,
};
use crate::node::state::{
    LookupFound, Node, PlacementAnswer, PlacementBatch, PlacementLookup, Ungreeted,
};
use crate::placement::{candidates, holders_in_view, Seen, ViewHolders};
use crate::store::distance_key;

impl Node {
    /// Starts a placement lookup for `addr` (when too many are under way, `answer` is
    /// handed back).
    pub(super) fn start_placement(
        &mut self,
        addr: [u8; 32],
        deadline_ms: u64,
        answer: PlacementAnswer,
    ) -> Result<(), PlacementAnswer> {
        if self.placements.len() >= RESOLVES_MAX {
            return Err(answer);
        }
        let lookup = PlacementLookup {
            addr,
            deadline: Instant::now() + Duration::from_millis(deadline_ms),
            deadline_ms,
            found: None,
            answer,
        };
        self.look_up_placement(lookup);
        Ok(())
    }

    /// An admin thread or a shard asks for the holders of `addr`.
    pub(super) fn ask_placement(&mut self, addr: [u8; 32], deadline_ms: u64, reply: ResolveReply) {
        if let Err(PlacementAnswer::Reply(reply)) =
            self.start_placement(addr, deadline_ms, PlacementAnswer::Reply(reply))
        {
            reply.send(Err(ResolveError::TooManyLookups(RESOLVES_MAX)));
        }
    }

    /// A shard asks for the holders of each of `addrs` (its sweep's page): lookups, a few
    /// at a time, until the union of their views is sure of every address.
    pub(super) fn ask_placements(
        &mut self,
        addrs: Vec<[u8; 32]>,
        deadline_ms: u64,
        reply: Reply<Vec<Resolved>>,
    ) {
        let id = self.next_placement_batch;
        self.next_placement_batch += 1;
        let batch = PlacementBatch {
            answers: vec![None; addrs.len()],
            looking: vec![false; addrs.len()],
            coverage: Coverage::default(),
            peers: Vec::new(),
            addrs: addrs
                .into_iter()
                .map(|addr| (addr, distance_key(&record_key(&addr))))
                .collect(),
            deadline: Instant::now() + Duration::from_millis(deadline_ms),
            deadline_ms,
            reply,
        };
        self.placement_batches.insert(id, batch);
        self.look_up_next_of_batch(id);
    }

    /// Starts lookups for the batch's next addresses ([`PlacementBatch::next_lookup`]), up
    /// to [`BATCH_LOOKUPS_AT_ONCE`] in flight; once every address
    /// is answered, or time or room for lookups ran out and none is in flight, the batch
    /// is answered (what no lookup answered: the reason).
    fn look_up_next_of_batch(&mut self, id: u64) {
        loop {
            let Some(batch) = self.placement_batches.get_mut(&id) else {
                return;
            };
            let left_ms = batch
                .deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as u64;
            let next = batch.next_lookup();
            let unanswered = batch.answers.iter().any(Option::is_none);
            let failed = match next {
                _ if !unanswered => ResolveError::Stopped,
                None => return,
                Some(_) if left_ms == 0 && batch.in_flight() > 0 => return,
                Some(_) if left_ms == 0 => ResolveError::Timeout(batch.deadline_ms),
                Some(_) if batch.in_flight() >= BATCH_LOOKUPS_AT_ONCE => return,
                Some(at) => {
                    batch.looking[at] = true;
                    let addr = batch.addrs[at].0;
                    if self
                        .start_placement(addr, left_ms, PlacementAnswer::Batch(id))
                        .is_ok()
                    {
                        continue;
                    }
                    let Some(batch) = self.placement_batches.get_mut(&id) else {
                        return;
                    };
                    batch.looking[at] = false;
                    if batch.in_flight() > 0 {
                        return;
                    }
                    ResolveError::TooManyLookups(RESOLVES_MAX)
                }
            };
            if let Some(batch) = self.placement_batches.remove(&id) {
                let answers = batch
                    .answers
                    .into_iter()
                    .map(|a| a.unwrap_or_else(|| Err(failed.clone())))
                    .collect();
                batch.reply.send(answers);
            }
            return;
        }
    }

    /// One of a batch's lookups ended (answered or not): it is no longer in flight.
    fn batch_lookup_ended(&mut self, id: u64, addr: &[u8; 32]) {
        if let Some(batch) = self.placement_batches.get_mut(&id) {
            for (looking, (a, _)) in batch.looking.iter_mut().zip(&batch.addrs) {
                if a == addr {
                    *looking = false;
                }
            }
        }
    }

    /// A batch's lookup answered: a converged one adds its ball to the batch's coverage;
    /// then every address not answered yet whose view is sure gets its holders, and the
    /// lookup's own address in any case (it was looked up as wide as it gets).
    fn answer_batch(&mut self, id: u64, addr: [u8; 32], found: LookupFound) {
        let looked_up = distance_key(&record_key(&addr));
        let Some(batch) = self.placement_batches.get_mut(&id) else {
            return;
        };
        if found.converged {
            batch.coverage.add_ball(&looked_up, found.reach);
        }
        batch.peers.extend(found.peers.iter().copied());
        batch.peers.sort_unstable();
        batch.peers.dedup();
        let waiting: Vec<(usize, DistanceKey)> = (0..batch.addrs.len())
            .filter(|at| batch.answers[*at].is_none())
            .map(|at| (at, batch.addrs[at].1))
            .collect();
        let peers = std::mem::take(&mut batch.peers);
        let coverage = std::mem::take(&mut batch.coverage);
        let known = self.known_positions(&peers);
        let candidates = candidates(self.replicas);
        let mut answered = Vec::new();
        for (at, position) in waiting {
            let own = position == looked_up;
            let reach = if coverage.covers_ball(&position, U256::MAX) {
                None
            } else {
                match nth_nearest(&position, known.iter().copied(), candidates) {
                    Some(reach) if coverage.covers_ball(&position, reach) => Some(reach),
                    _ if own => found.reach,
                    _ => continue,
                }
            };
            let view = self.view_holders(&position, &peers, reach, Ungreeted::LeftOut);
            let sure = view.certain && (found.converged || !own);
            if !sure && !own {
                continue;
            }
            if !sure {
                self.metrics
                    .placements_unsure_total
                    .fetch_add(1, Ordering::Relaxed);
            }
            let providers = view
                .holders
                .iter()
                .map(|h| self.provider(&h.id.unwrap_or(self.local)))
                .collect();
            answered.push((at, providers));
        }
        if let Some(batch) = self.placement_batches.get_mut(&id) {
            batch.peers = peers;
            batch.coverage = coverage;
            for (at, providers) in answered {
                batch.answers[at] = Some(Ok(providers));
            }
        }
        self.batch_lookup_ended(id, &addr);
        self.look_up_next_of_batch(id);
    }

    fn look_up_placement(&mut self, lookup: PlacementLookup) {
        self.metrics
            .placement_lookups_total
            .fetch_add(1, Ordering::Relaxed);
        let peers = NonZeroUsize::new(PUBLISH_LOOKUP_PEERS).expect("k > 0");
        let query = self
            .swarm
            .behaviour_mut()
            .kad
            .get_n_closest_peers(record_key(&lookup.addr).to_vec(), peers);
        self.placements.insert(query, lookup);
    }

    /// Whether `query` is a placement lookup (then its peers are taken here).
    pub(super) fn on_placement_peers(
        &mut self,
        query: QueryId,
        peers: Vec<PeerId>,
        timed_out: bool,
    ) -> bool {
        let local = self.local;
        let every_peer = self.found_every_peer(peers.len(), timed_out);
        // Fewer than k back from a node that knows k more: some failed to answer, so
        // the peers found do not hold every node within their reach.
        let converged = !timed_out && (every_peer || peers.len() >= PUBLISH_LOOKUP_PEERS);
        let Some(lookup) = self.placements.get_mut(&query) else {
            return false;
        };
        let peers: Vec<PeerId> = peers.into_iter().filter(|p| *p != local).collect();
        let key = distance_key(&record_key(&lookup.addr));
        let reach = match every_peer {
            true => None,
            false => Some(farthest(&key, peers.iter().map(peer_position))),
        };
        lookup.found = Some(LookupFound {
            peers,
            reach,
            converged,
            greetings_until: Instant::now() + GREETING_WAIT,
        });
        self.answer_due_placements();
        true
    }

    /// Answers the lookups whose peers are all greeted (or stopped being worth waiting
    /// for), and those past their deadline.
    pub(super) fn answer_due_placements(&mut self) {
        let now = Instant::now();
        let due: Vec<QueryId> = self
            .placements
            .iter()
            .filter(|(_, lookup)| {
                now >= lookup.deadline
                    || lookup.found.as_ref().is_some_and(|found| {
                        now >= found.greetings_until
                            || found.peers.iter().all(|p| self.peers.contains_key(p))
                    })
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(lookup) = self.placements.remove(&id) {
                if let Some(mut running) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                    running.finish();
                }
                self.answer_placement(lookup);
            }
        }
    }

    /// The placement in the lookup's view; none when the lookup had not answered by the
    /// deadline (a placement of this node alone would name the wrong holders). A view
    /// unsure of the candidates is answered as it stands, and counted.
    fn answer_placement(&mut self, mut lookup: PlacementLookup) {
        let Some(found) = lookup.found.take() else {
            match lookup.answer {
                PlacementAnswer::Reply(reply) => {
                    reply.send(Err(ResolveError::Timeout(lookup.deadline_ms)))
                }
                PlacementAnswer::AskHolders => tracing::debug!(
                    "dht: a placement lookup for copies found no peer in time; the sweep \
                     checks the object"
                ),
                PlacementAnswer::Batch(id) => {
                    self.batch_lookup_ended(id, &lookup.addr);
                    self.look_up_next_of_batch(id);
                }
            }
            return;
        };
        if let PlacementAnswer::Batch(id) = lookup.answer {
            self.answer_batch(id, lookup.addr, found);
            return;
        }
        let key = distance_key(&record_key(&lookup.addr));
        let view = self.view_holders(&key, &found.peers, found.reach, Ungreeted::LeftOut);
        if !view.certain || !found.converged {
            self.metrics
                .placements_unsure_total
                .fetch_add(1, Ordering::Relaxed);
        }
        let holders = view.holders.iter().map(|h| h.id.unwrap_or(self.local));
        match lookup.answer {
            PlacementAnswer::Reply(reply) => {
                let providers = holders.map(|peer| self.provider(&peer)).collect();
                reply.send(Ok(providers));
            }
            PlacementAnswer::AskHolders => {
                let others: Vec<PeerId> = holders.filter(|p| *p != self.local).collect();
                self.ask_holders_of(lookup.addr, &others);
            }
            PlacementAnswer::Batch(_) => {}
        }
    }

    /// The positions of the nodes a view over `peers` holds: this node, the greeted ones
    /// of `peers` and the greeted peers lost but not yet counted gone.
    fn known_positions(&self, peers: &[PeerId]) -> Vec<DistanceKey> {
        let lost = self.lost_but_not_dead().filter(|p| !peers.contains(p));
        std::iter::once(&self.local)
            .chain(
                peers
                    .iter()
                    .chain(lost)
                    .filter(|p| self.peers.contains_key(p)),
            )
            .map(peer_position)
            .collect()
    }

    /// The zone a greeted peer is placed in: the one it says, where this node has a zone
    /// itself; none where it has none. A zone is a claim a peer makes in its greeting,
    /// and placement prefers the zones holding the fewest copies: in a network without
    /// zones, one peer claiming one was picked as a holder of every key it was a
    /// candidate for (about 20/N of all keys, not 3/N). Nodes of one deployment set
    /// their zones alike, so their views agree.
    fn placement_zone(&self, claimed: &str) -> String {
        match self.zone.is_empty() {
            true => String::new(),
            false => claimed.to_string(),
        }
    }

    /// The holders of `key` as this node sees them: `peers` (a lookup's, every peer
    /// within `reach` of the key among them; `None`: every peer there is), this node and
    /// the greeted peers lost but not yet counted gone.
    pub(super) fn view_holders(
        &self,
        key: &DistanceKey,
        peers: &[PeerId],
        reach: Option<U256>,
        ungreeted: Ungreeted,
    ) -> ViewHolders<Option<PeerId>> {
        let me = Seen {
            id: None,
            position: peer_position(&self.local),
            zone: Some(self.zone.clone()),
        };
        let lost = self.lost_but_not_dead().filter(|p| !peers.contains(p));
        let now = Instant::now();
        let placeable = |peer: &&PeerId| !self.is_left_out(peer, now);
        let others = peers
            .iter()
            .chain(lost)
            .filter(placeable)
            .filter_map(|peer| {
                let zone = self
                    .peers
                    .get(peer)
                    .map(|known| self.placement_zone(&known.zone));
                (zone.is_some() || ungreeted == Ungreeted::CutsTheView).then(|| Seen {
                    id: Some(*peer),
                    position: peer_position(peer),
                    zone,
                })
            });
        let seen = std::iter::once(me).chain(others).collect();
        holders_in_view(key, seen, reach, self.replicas)
    }
}
