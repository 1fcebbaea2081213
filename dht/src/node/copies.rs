//! Copies for the placement (docs/design/replication.md), both sides of
//! `/ron/replicate/1`.
//!
//! Asking: a kept key announced by a shard waits in `copies.waiting` until its
//! publication; the publication's lookup has just found the key's closest peers and
//! greeted them (their zones are known), so the placement is computed among them and
//! this node, and each holder other than this node is asked for the keys it holds.
//! Their answers are counted by outcome (`ron_replication_copies_total`).
//!
//! Accepting: a peer's request is checked address by address — a node takes a copy
//! only when fewer than the candidates times [`ACCEPT_WINDOW_SLACK`] (40) of the nodes
//! it knows, of any zone, are nearer the key than it (slack, since two views of the
//! network differ; zones are not looked at) — and bounded ([`PULLS_PER_PEER_MAX`],
//! [`PULLS_PER_HOST_MAX`], [`PULLS_MAX`]). Each accepted address goes to its owner
//! shard's replication mailbox; the shard pulls it from the asker only (the IP its
//! connection came from, the OAP port it claims), verified, and keeps it. The
//! answer goes back once every accepted copy is durable, or at
//! [`REPLICATE_ANSWER_WITHIN`] with `pending` for the rest (they go on).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use libp2p::kad::{RecordKey, U256};
use libp2p::request_response::{self, ResponseChannel};
use libp2p::swarm::ConnectionId;
use libp2p::PeerId;
use ron_link::dht::{CopiesEnd, CopiesMade, CopiesReply, CopyOutcome, LeftOut, Pull, PullOutcome};

use crate::closest::{distance, peer_position, DistanceKey};
use crate::node::config::{
    ACCEPT_WINDOW_SLACK, COPIES_PLACEMENT_WAIT, COPIES_WAITING_MAX, COPY_WATCHES_MAX,
    NEARER_SEEN_WITHIN, PEERS_MAX, PEER_LEFT_OUT_FOR, REPLICATE_ANSWER_WITHIN,
};
use crate::node::state::{
    Answering, CopiesWaiter, FreshKey, Node, PlacementAnswer, PullDone, Ungreeted,
};
use crate::placement::candidates;
use crate::replicate::{ReplicateRequest, ReplicateResponse, REPLICATE_KEYS_MAX};
use crate::store::distance_key;

impl Node {
    /// Kept keys: their holders are asked after their next publication.
    pub(super) fn wait_to_ask_holders(&mut self, keys: &[RecordKey]) {
        if self.replicas <= 1 {
            return;
        }
        let waiting = &mut self.copies.waiting;
        let room = COPIES_WAITING_MAX.saturating_sub(waiting.len());
        waiting.extend(keys.iter().take(room).cloned());
    }

    /// Asks the holders of the `published` keys that wait for it to take them, placed in
    /// the publication's view: `peers` (its lookup's, every peer within `reach` of the
    /// batch's `first` key among them; `None`: every peer there is) and this node. A key
    /// whose view is not sure of its holders (its candidates reach past what the lookup
    /// found, or a peer there is not greeted yet) gets a placement lookup of its own,
    /// whose holders are asked when it answers.
    pub(super) fn ask_holders(
        &mut self,
        published: &[RecordKey],
        peers: &[PeerId],
        first: &DistanceKey,
        reach: Option<U256>,
    ) {
        if self.copies.waiting.is_empty() {
            return;
        }
        let keys: Vec<RecordKey> = published
            .iter()
            .filter(|k| self.copies.waiting.remove(*k))
            .cloned()
            .collect();
        let mut per_holder: HashMap<PeerId, Vec<[u8; 32]>> = HashMap::new();
        for key in keys {
            let Some(addr) = address_of(&key) else {
                continue;
            };
            let position = distance_key(&key);
            let key_reach = reach.map(|r| {
                r.checked_sub(distance(first, &position))
                    .unwrap_or_default()
            });
            let view = self.view_holders(&position, peers, key_reach, Ungreeted::CutsTheView);
            if !view.certain {
                let wait_ms = COPIES_PLACEMENT_WAIT.as_millis() as u64;
                if self
                    .start_placement(addr, wait_ms, PlacementAnswer::AskHolders)
                    .is_ok()
                {
                    continue;
                }
            }
            let others: Vec<PeerId> = view.holders.iter().filter_map(|h| h.id).collect();
            self.note_asked(addr, others.len());
            for peer in others {
                per_holder.entry(peer).or_default().push(addr);
            }
        }
        self.send_copy_requests(per_holder);
    }

    /// A publication of `keys` reached no peer (its lookup found none: every peer this
    /// node knows is down or cut off): clients waiting for their copies are told now that
    /// no other node could take them, not at their deadline. The keys stay waiting: the
    /// sweep publishes them again and asks their holders then.
    pub(super) fn no_holder_reachable(&mut self, keys: &[RecordKey]) {
        for addr in keys.iter().filter_map(address_of) {
            self.note_asked(addr, 0);
        }
    }

    /// Asks `holders` to take `addr` (a placement lookup for it answered).
    pub(super) fn ask_holders_of(&mut self, addr: [u8; 32], holders: &[PeerId]) {
        self.note_asked(addr, holders.len());
        let per_holder = holders.iter().map(|peer| (*peer, vec![addr])).collect();
        self.send_copy_requests(per_holder);
    }

    /// A watch on `addr` (`PUT ?copies=N`) learns that `holders` were asked; with none
    /// to ask (a network of one), it is settled at once.
    fn note_asked(&mut self, addr: [u8; 32], holders: usize) {
        if let Some(watch) = self.copies.watches.get_mut(&addr) {
            watch.asked += holders;
            watch.asked_yet = true;
            self.settle_watch(&addr, Instant::now());
        }
    }

    fn send_copy_requests(&mut self, per_holder: HashMap<PeerId, Vec<[u8; 32]>>) {
        for (peer, addrs) in per_holder {
            for batch in addrs.chunks(REPLICATE_KEYS_MAX) {
                let request = ReplicateRequest {
                    oap_port: self.ports.oap,
                    addrs: batch.to_vec(),
                };
                let id = self
                    .swarm
                    .behaviour_mut()
                    .replicate
                    .send_request(&peer, request);
                self.copies.asked.insert(id, batch.to_vec());
            }
        }
    }

    /// A client waits for `want` copies of `addr`. With `to` empty (`PUT ?copies=N`),
    /// the key is published first thing and the holders its placement names asked;
    /// else the nodes `to` names are asked at once (an operator's repair). The answer
    /// comes from [`Node::settle_watch`] as they answer, or at the deadline.
    pub(super) fn watch_copies(
        &mut self,
        addr: [u8; 32],
        want: usize,
        deadline_ms: u64,
        to: &[String],
        reply: CopiesReply,
    ) {
        let now = Instant::now();
        let watches = &mut self.copies.watches;
        if watches.len() >= COPY_WATCHES_MAX && !watches.contains_key(&addr) {
            reply.send(CopiesMade {
                copies: 1,
                ended: CopiesEnd::Busy,
                held_by: Vec::new(),
            });
            return;
        }
        let watch = watches.entry(addr).or_default();
        watch.waiters.push(CopiesWaiter {
            want,
            deadline: now + Duration::from_millis(deadline_ms),
            reply,
        });
        if to.is_empty() {
            watch.asked_yet = false;
            let key = crate::node::address::record_key(&addr);
            self.copies.waiting.insert(key.clone());
            if !self.publisher.fresh.iter().any(|f| f.key == key) {
                self.publisher.fresh.push_front(FreshKey {
                    key,
                    queued: Some(now),
                });
            }
        } else {
            watch.asked_yet = true;
            self.ask_nodes(addr, to);
        }
        self.settle_watch(&addr, now);
    }

    /// Asks the nodes named by id to take `addr` (ids that do not parse, and this
    /// node, are skipped).
    fn ask_nodes(&mut self, addr: [u8; 32], to: &[String]) {
        let peers: Vec<PeerId> = to
            .iter()
            .filter_map(|id| id.parse::<PeerId>().ok())
            .filter(|peer| *peer != self.local)
            .collect();
        if let Some(watch) = self.copies.watches.get_mut(&addr) {
            watch.asked += peers.len();
        }
        for peer in peers {
            let request = ReplicateRequest {
                oap_port: self.ports.oap,
                addrs: vec![addr],
            };
            let id = self
                .swarm
                .behaviour_mut()
                .replicate
                .send_request(&peer, request);
            self.copies.asked.insert(id, vec![addr]);
        }
    }

    /// Answers the waiters of `addr` that can be answered: enough copies, every holder
    /// answered or no peer known (fewer copies), or their deadline passed.
    fn settle_watch(&mut self, addr: &[u8; 32], now: Instant) {
        // With no peer known, no holder can be asked: fewer copies, said at once.
        let alone = self.isolated();
        let Some(watch) = self.copies.watches.get_mut(addr) else {
            return;
        };
        let copies = 1 + watch.held_by.len();
        let all_answered = alone || (watch.asked_yet && watch.answered >= watch.asked);
        let (done, waiting): (Vec<CopiesWaiter>, Vec<CopiesWaiter>) =
            std::mem::take(&mut watch.waiters)
                .into_iter()
                .partition(|w| copies >= w.want || all_answered || w.deadline <= now);
        watch.waiters = waiting;
        let held_by = watch.held_by.clone();
        if watch.waiters.is_empty() {
            self.copies.watches.remove(addr);
        }
        let held_by: Vec<_> = held_by.iter().map(|peer| self.provider(peer)).collect();
        for waiter in done {
            let ended = if copies >= waiter.want {
                CopiesEnd::Reached
            } else if all_answered {
                CopiesEnd::Fewer
            } else {
                CopiesEnd::TimedOut
            };
            waiter.reply.send(CopiesMade {
                copies,
                ended,
                held_by: held_by.clone(),
            });
        }
    }

    /// Answers the waits for copies whose deadline passed, and all of them when no peer
    /// is known.
    pub(super) fn settle_due_watches(&mut self) {
        let now = Instant::now();
        let alone = self.isolated();
        let due: Vec<[u8; 32]> = self
            .copies
            .watches
            .iter()
            .filter(|(_, w)| alone || w.waiters.iter().any(|w| w.deadline <= now))
            .map(|(addr, _)| *addr)
            .collect();
        for addr in due {
            self.settle_watch(&addr, now);
        }
    }

    /// `peer`'s answer for `addrs` (`None`: no answer), counted and told to watches.
    fn on_copies_answered(
        &mut self,
        peer: PeerId,
        addrs: &[[u8; 32]],
        outcomes: Option<Vec<CopyOutcome>>,
    ) {
        let outcomes = outcomes.unwrap_or_else(|| vec![CopyOutcome::Unanswered; addrs.len()]);
        for (addr, outcome) in addrs.iter().zip(outcomes) {
            self.metrics.copies_asked_total[outcome as usize].fetch_add(1, Ordering::Relaxed);
            self.learn_room(peer, outcome);
            let Some(watch) = self.copies.watches.get_mut(addr) else {
                continue;
            };
            watch.answered += 1;
            if outcome == CopyOutcome::Held && !watch.held_by.contains(&peer) {
                watch.held_by.push(peer);
            }
            self.settle_watch(addr, Instant::now());
        }
    }

    /// A holder that refused a copy for want of room is left out of this node's
    /// placements: while it is named, an object placed on it stays a copy short for good
    /// (it refuses every pass). One that held a copy has room again.
    fn learn_room(&mut self, peer: PeerId, outcome: CopyOutcome) {
        match outcome {
            CopyOutcome::NoRoom => self.leave_out(peer, LeftOut::NoRoom),
            CopyOutcome::Held => {
                if matches!(self.left_out.get(&peer), Some((LeftOut::NoRoom, _))) {
                    self.left_out.remove(&peer);
                }
            }
            _ => {}
        }
    }

    /// Leaves `peer` out of this node's placements for [`PEER_LEFT_OUT_FOR`] (`why`): a
    /// holder without room, or one that answered `held` and failed the audit after (a
    /// shard's sweep says so) — named, it keeps its objects a copy short for good.
    pub(super) fn leave_out(&mut self, peer: PeerId, why: LeftOut) {
        let known: usize = self.count_left_out().iter().sum::<u64>() as usize;
        if !self.left_out.contains_key(&peer) {
            if known >= PEERS_MAX {
                return;
            }
            let for_s = PEER_LEFT_OUT_FOR.as_secs();
            let why = why.as_str();
            tracing::info!(%peer, why, for_s, "dht: a holder is left out of placements");
        }
        let until = Instant::now() + PEER_LEFT_OUT_FOR;
        self.left_out.insert(peer, (why, until));
    }

    /// Peers placements leave out now, by why (those whose time is up are forgotten).
    pub(super) fn count_left_out(&mut self) -> [u64; LeftOut::ALL.len()] {
        let now = Instant::now();
        self.left_out.retain(|_, (_, until)| *until > now);
        let mut counts = [0; LeftOut::ALL.len()];
        for (why, _) in self.left_out.values() {
            counts[*why as usize] += 1;
        }
        counts
    }

    /// Whether placements leave `peer` out at `now`.
    pub(super) fn is_left_out(&self, peer: &PeerId, now: Instant) -> bool {
        self.left_out
            .get(peer)
            .is_some_and(|(_, until)| *until > now)
    }

    pub(super) fn on_replicate(
        &mut self,
        event: request_response::Event<ReplicateRequest, ReplicateResponse>,
    ) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                connection_id,
                message:
                    Message::Request {
                        request, channel, ..
                    },
            } => self.take_copies(peer, connection_id, request, channel),
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(addrs) = self.copies.asked.remove(&request_id) {
                    let mut outcomes = response.outcomes;
                    // A short answer leaves the rest unanswered; a long one is cut.
                    outcomes.resize(addrs.len(), CopyOutcome::Unanswered);
                    self.on_copies_answered(peer, &addrs, Some(outcomes));
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, "dht: /ron/replicate/1 request failed: {error}");
                if let Some(addrs) = self.copies.asked.remove(&request_id) {
                    self.on_copies_answered(peer, &addrs, None);
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "dht: /ron/replicate/1 inbound failed: {error}");
            }
            Event::ResponseSent { .. } => {}
        }
    }

    /// A peer asks this node to hold copies: each address accepted goes to its shard.
    fn take_copies(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        request: ReplicateRequest,
        channel: ResponseChannel<ReplicateResponse>,
    ) {
        let source = self
            .connections
            .get(&connection)
            .map(|ip| SocketAddr::new(*ip, request.oap_port));
        let answering = self.copies.next_answering;
        self.copies.next_answering += 1;
        let nearer = self.nearer_counter();
        // An address asked for twice in one request is one copy: each would be a pull
        // of its own (a copy held is read back whole for each).
        let mut asked = std::collections::HashSet::with_capacity(request.addrs.len());
        let outcomes: Vec<Option<CopyOutcome>> = request
            .addrs
            .iter()
            .enumerate()
            .map(|(index, addr)| {
                if !asked.insert(*addr) {
                    return Some(CopyOutcome::Failed);
                }
                let Some(source) = source else {
                    // The connection's IP is unknown: there is no one to pull from.
                    return Some(CopyOutcome::Failed);
                };
                // Busy first: the nearness test walks every peer known (256 keys × a
                // thousand peers a request), which a full node need not pay to refuse.
                if self.copies.full_for(peer, source) {
                    return Some(CopyOutcome::Busy);
                }
                if !nearer.accepts(addr) {
                    return Some(CopyOutcome::NotHolder);
                }
                self.start_pull(peer, *addr, source, answering, index)
            })
            .collect();
        let entry = Answering {
            channel,
            outcomes,
            deadline: Instant::now() + REPLICATE_ANSWER_WITHIN,
        };
        if entry.outcomes.iter().all(Option::is_some) {
            self.send_copies_answer(entry);
        } else {
            self.copies.answering.insert(answering, entry);
        }
    }

    /// Hands one copy to its shard: `None` once it is under way, else the outcome. The
    /// caller has found the copies' limits not reached (`Copies::full_for`).
    fn start_pull(
        &mut self,
        peer: PeerId,
        addr: [u8; 32],
        source: SocketAddr,
        answering: u64,
        index: usize,
    ) -> Option<CopyOutcome> {
        let copies = &mut self.copies;
        let host = ron_link::policy::quota_address(source.ip());
        let Some(pulls) = &copies.pulls else {
            return Some(CopyOutcome::Failed);
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        if !pulls.hand_over(Pull {
            addr,
            source,
            reply,
        }) {
            return Some(CopyOutcome::Busy);
        }
        copies.under_way += 1;
        *copies.per_peer.entry(peer).or_insert(0) += 1;
        *copies.per_host.entry(host).or_insert(0) += 1;
        self.metrics
            .copies_accepted_total
            .fetch_add(1, Ordering::Relaxed);
        copies.pulled.push(Box::pin(async move {
            let outcome = match answer.await {
                Ok(PullOutcome::Held) => CopyOutcome::Held,
                Ok(PullOutcome::Busy) => CopyOutcome::Busy,
                Ok(PullOutcome::NoRoom(reason)) => {
                    tracing::debug!(%peer, "dht: a copy asked for was refused: {reason}");
                    CopyOutcome::NoRoom
                }
                Ok(PullOutcome::Failed(reason)) => {
                    tracing::debug!(%peer, "dht: a copy asked for failed: {reason}");
                    CopyOutcome::Failed
                }
                Err(_) => CopyOutcome::Failed,
            };
            PullDone {
                answering,
                index,
                peer,
                host,
                outcome,
            }
        }));
        None
    }

    /// A shard finished a copy: its request is answered once all of its are done.
    pub(super) fn on_pull_done(&mut self, done: PullDone) {
        let copies = &mut self.copies;
        copies.under_way -= 1;
        count_down(&mut copies.per_peer, &done.peer);
        count_down(&mut copies.per_host, &done.host);
        let Some(entry) = copies.answering.get_mut(&done.answering) else {
            return;
        };
        entry.outcomes[done.index] = Some(done.outcome);
        if entry.outcomes.iter().all(Option::is_some) {
            if let Some(entry) = copies.answering.remove(&done.answering) {
                self.send_copies_answer(entry);
            }
        }
    }

    /// Answers the requests whose deadline passed: what is still copying is `pending`.
    pub(super) fn answer_due_copies(&mut self) {
        let now = Instant::now();
        let due: Vec<u64> = self
            .copies
            .answering
            .iter()
            .filter(|(_, entry)| entry.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(entry) = self.copies.answering.remove(&id) {
                self.send_copies_answer(entry);
            }
        }
    }

    fn send_copies_answer(&mut self, entry: Answering) {
        let outcomes = entry
            .outcomes
            .into_iter()
            .map(|o| o.unwrap_or(CopyOutcome::Pending))
            .collect();
        // An asker that has gone away is not an error: its copies are made all the same.
        let _ = self
            .swarm
            .behaviour_mut()
            .replicate
            .send_response(entry.channel, ReplicateResponse { outcomes });
    }

    /// Who this node counts as nearer than itself to a key: greeted peers connected or
    /// heard from within [`NEARER_SEEN_WITHIN`].
    fn nearer_counter(&self) -> Nearer {
        let others = self
            .peers
            .positions_present(Instant::now(), NEARER_SEEN_WITHIN, |peer| {
                self.swarm.is_connected(peer)
            });
        Nearer {
            me: peer_position(&self.local),
            others,
            window: candidates(self.replicas) * ACCEPT_WINDOW_SLACK,
        }
    }
}

/// The acceptance rule of a copy: fewer than `window` known nodes are closer to the key
/// than this node.
struct Nearer {
    me: DistanceKey,
    others: Vec<DistanceKey>,
    window: usize,
}

impl Nearer {
    fn accepts(&self, addr: &[u8; 32]) -> bool {
        let key = distance_key(&crate::node::address::record_key(addr));
        let mine = distance(&key, &self.me);
        let nearer = self
            .others
            .iter()
            .filter(|p| distance(&key, p) < mine)
            .take(self.window)
            .count();
        nearer < self.window
    }
}

/// The object address of a record key (a BLAKE3-256 multihash: `0x1e 0x20 ‖ digest`).
fn address_of(key: &RecordKey) -> Option<[u8; 32]> {
    match key.as_ref() {
        [0x1e, 0x20, digest @ ..] => digest.try_into().ok(),
        _ => None,
    }
}

/// One fewer copy under way for `key`; a key with none left is forgotten.
fn count_down<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closest::tests::position;

    #[test]
    fn record_keys_give_back_their_address() {
        let addr = [0x5a; 32];
        let key = crate::node::address::record_key(&addr);
        assert_eq!(address_of(&key), Some(addr));
        assert_eq!(address_of(&RecordKey::new(&[0x12, 0x20, 1])), None);
        assert_eq!(address_of(&RecordKey::new(&[0x1e, 0x20, 1, 2])), None);
    }

    #[test]
    fn a_node_accepts_only_keys_it_is_near() {
        let others: Vec<DistanceKey> = (0..200).map(position).collect();
        let me = position(999);
        let rule = Nearer {
            me,
            others: others.clone(),
            window: 16,
        };
        let (mut accepted, mut tried) = (0, 0);
        for seed in 0..2_000u64 {
            let addr = *blake3::hash(&seed.to_be_bytes()).as_bytes();
            let key = distance_key(&crate::node::address::record_key(&addr));
            let mine = distance(&key, &me);
            let nearer = others.iter().filter(|p| distance(&key, p) < mine).count();
            assert_eq!(rule.accepts(&addr), nearer < 16, "seed {seed}");
            tried += 1;
            accepted += usize::from(nearer < 16);
        }
        // 201 nodes, a window of 16: about 16/201 of the keys.
        assert!(
            accepted > tried * 4 / 100 && accepted < tried * 12 / 100,
            "{accepted}"
        );
        let alone = Nearer {
            me,
            others: Vec::new(),
            window: 16,
        };
        assert!(alone.accepts(&[1; 32]));
    }
}
