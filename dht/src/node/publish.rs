//! Publishing our keys. The shards' announcements are taken on the tick: announced keys
//! are stored as ours and the new ones queued (at most [`FRESH_KEYS_MAX`]); withdrawn
//! ones are forgotten. The publisher keeps up to [`PUBLICATIONS_AT_ONCE`] batches in
//! flight, fresh keys first, then the sweep's next region of keys due
//! ([`REPUBLISH_AFTER`]), one such at a time. A batch is one lookup of
//! the [`PUBLISH_LOOKUP_PEERS`] (k) peers closest to its region's first key; each key
//! goes to its own [`PROVIDE_TO_CLOSEST`] (k/2) closest among them over `/ron/provide/2`,
//! and a key whose k/2 closest may lie outside them goes back to the queue for a lookup
//! of its own (`crate::closest`). A key that reached a peer is marked published; a batch
//! ends once every key of its own did, without waiting for its other requests (a peer
//! slow or silent holds no batch: [`Publication::may_end`]).

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::{Instant, SystemTime};

use libp2p::kad::{self, KBucketKey, QueryId, RecordKey};
use libp2p::request_response::OutboundRequestId;
use ron_link::dht::{EarlyPeer, ProviderChange};

use crate::closest::{
    farthest, likely_closest, network_size_estimate, peer_position, split_by_closest, DistanceKey,
};
use crate::node::address::record_key;
use crate::node::config::{
    ANNOUNCED_KEYS_PER_RUN_MAX, ANNOUNCEMENTS_WORK_PER_TICK, EARLY_BATCH_KEYS_MAX,
    EARLY_PROVIDE_PEERS, EARLY_PROVIDE_RANK, FRESH_KEYS_MAX, K_VALUE, PROVIDE_TO_CLOSEST,
    PUBLICATIONS_AT_ONCE, PUBLISH_LOOKUP_PEERS, PUBLISH_RETRY_AFTER, REPUBLISH_AFTER, SWEEP_REST,
    UNANSWERED_PUBLISH_REQUESTS_MAX,
};
use crate::node::state::{FreshKey, Node, Publication};
use crate::protocol::{ProvideRequest, PROVIDE_KEYS_MAX};
use crate::store::{distance_key, unix_ms};

/// Weight of a new lookup's estimate of the network's size in the running one.
const ESTIMATE_WEIGHT: f64 = 0.25;

impl Node {
    /// Takes the tick's provider changes in order, a run of at most
    /// [`ANNOUNCED_KEYS_PER_RUN_MAX`] keys after another while the tick has spent less
    /// than [`ANNOUNCEMENTS_WORK_PER_TICK`] on them: announced keys are stored as ours
    /// (one commit per run) and the new ones queued for their first publication;
    /// withdrawn keys are no longer provided nor published. What is left waits for the
    /// next tick, which comes at the busy pace.
    pub(super) fn take_announcements(&mut self, announces: &Receiver<ProviderChange>) {
        let started = Instant::now();
        self.publisher.announcements_left = false;
        while self.take_announcement_run(announces) {
            if started.elapsed() >= ANNOUNCEMENTS_WORK_PER_TICK {
                self.publisher.announcements_left = true;
                return;
            }
        }
    }

    /// Takes changes until [`ANNOUNCED_KEYS_PER_RUN_MAX`] keys; whether it stopped there
    /// (more may be waiting).
    fn take_announcement_run(&mut self, announces: &Receiver<ProviderChange>) -> bool {
        let mut provided: Vec<RecordKey> = Vec::new();
        let mut taken = 0;
        let mut full = false;
        for change in announces.try_iter() {
            taken += change.len();
            match change {
                ProviderChange::Provide(addrs) => {
                    provided.extend(addrs.iter().map(record_key));
                }
                ProviderChange::ProvideKept(addrs) => {
                    let keys: Vec<RecordKey> = addrs.iter().map(record_key).collect();
                    self.wait_to_ask_holders(&keys);
                    provided.extend(keys);
                }
                ProviderChange::Withdraw(addrs) => {
                    self.provide(std::mem::take(&mut provided));
                    self.withdraw(addrs.iter().map(record_key).collect());
                }
            }
            if taken >= ANNOUNCED_KEYS_PER_RUN_MAX {
                full = true;
                break;
            }
        }
        self.provide(provided);
        full
    }

    fn provide(&mut self, keys: Vec<RecordKey>) {
        if keys.is_empty() {
            return;
        }
        // Keys provided already (announced again by a start-up walk) wait for the sweep.
        let new = match self.store().provide(&keys) {
            Ok(new) => new,
            Err(e) => {
                tracing::warn!("{e}");
                return;
            }
        };
        // A kept copy of a key provided already (an evictable copy made kept) is
        // published again: its holders are asked once it is.
        let new_keys: HashSet<&RecordKey> = new.iter().collect();
        let again: Vec<RecordKey> = keys
            .iter()
            .filter(|k| !new_keys.contains(k) && self.copies.waiting.contains(*k))
            .cloned()
            .collect();
        let room = FRESH_KEYS_MAX.saturating_sub(self.publisher.fresh.len());
        let queued = Some(Instant::now());
        self.publisher.fresh.extend(
            new.into_iter()
                .chain(again)
                .take(room)
                .map(|key| FreshKey { key, queued }),
        );
    }

    fn withdraw(&mut self, keys: Vec<RecordKey>) {
        if let Err(e) = self.store().unprovide(&keys) {
            tracing::warn!("{e}");
        }
        let gone: std::collections::HashSet<&RecordKey> = keys.iter().collect();
        self.publisher.fresh.retain(|f| !gone.contains(&f.key));
    }

    /// Starts batches while fewer than [`PUBLICATIONS_AT_ONCE`] are in flight, fewer
    /// than [`UNANSWERED_PUBLISH_REQUESTS_MAX`] requests of ended ones are out, and some
    /// peer is connected: fresh keys first, then the sweep's next batch when none of its
    /// own is in flight. A batch is cut to one region of the key space
    /// ([`region_bits`]), about k/2 peers wide, so that most of its keys share their k
    /// closest peers with its first key.
    pub(super) fn publish_next(&mut self) {
        if self.isolated() {
            return;
        }
        let bits = region_bits(self.network_peers());
        while self.publisher.in_flight.len() < PUBLICATIONS_AT_ONCE
            && self.publisher.unanswered.len() < UNANSWERED_PUBLISH_REQUESTS_MAX
        {
            let (mut keys, queued): (Vec<RecordKey>, Vec<Option<Instant>>) = self
                .fresh_batch(bits)
                .into_iter()
                .map(|f| (f.key, f.queued))
                .unzip();
            let swept = keys.is_empty();
            if swept && !self.publisher.in_flight.iter().any(|p| p.swept) {
                keys = self.sweep_batch(bits);
            }
            let Some(first) = keys.first() else {
                return;
            };
            let peers = NonZeroUsize::new(PUBLISH_LOOKUP_PEERS).expect("k > 0");
            let lookup = self
                .swarm
                .behaviour_mut()
                .kad
                .get_n_closest_peers(first.to_vec(), peers);
            self.publisher.in_flight.push(Publication {
                taken: vec![false; keys.len()],
                keys,
                lookup: Some(lookup),
                outstanding: HashMap::new(),
                peers: Vec::new(),
                reach: None,
                swept,
                early: HashMap::new(),
                early_requests: HashSet::new(),
                deferred: Vec::new(),
                queued,
            });
            if !swept {
                self.provide_early(self.publisher.in_flight.len() - 1);
            }
        }
    }

    /// Optimistic provide: the keys of the fresh batch at `at` go at once to the peers of
    /// the routing table likely among each one's closest ([`EARLY_PROVIDE_RANK`],
    /// [`EARLY_PROVIDE_PEERS`]), while its lookup runs; the lookup's own sends then skip
    /// what these carried. The sweep's batches wait for their lookups: nobody is waiting
    /// to find those keys.
    fn provide_early(&mut self, at: usize) {
        let network_peers = self.early_network_peers();
        let batch = &self.publisher.in_flight[at];
        let Some(first) = batch.keys.first().cloned() else {
            return;
        };
        let key_positions: Vec<DistanceKey> = batch.keys.iter().map(distance_key).collect();
        let known: Vec<libp2p::PeerId> = self
            .swarm
            .behaviour_mut()
            .kad
            .get_closest_local_peers(&KBucketKey::new(first))
            .take(K_VALUE)
            .map(|peer| *peer.preimage())
            .collect();
        let positions: Vec<DistanceKey> = known.iter().map(peer_position).collect();
        let mut carried: HashMap<usize, Vec<usize>> = HashMap::new();
        for (key, position) in key_positions.iter().enumerate() {
            let near = likely_closest(
                position,
                &positions,
                network_peers,
                EARLY_PROVIDE_RANK,
                EARLY_PROVIDE_PEERS,
            );
            for peer in near {
                carried.entry(peer).or_default().push(key);
            }
        }
        for (peer, keys) in carried {
            self.send_early(at, known[peer], keys, EarlyPeer::RoutingTable);
        }
    }

    /// Optimistic provide, continued: a peer just connected (most often one a lookup
    /// has dialed: the peers of its later rounds lie nearer the key than the routing
    /// table's) gets each key of a fresh batch still looking up that it lies as near as
    /// [`EARLY_PROVIDE_RANK`] peers are expected, while the key has gone early to fewer
    /// than [`EARLY_PROVIDE_PEERS`]. Batches of more than [`EARLY_BATCH_KEYS_MAX`] keys
    /// are left to their lookups: a connection costs a look at each key.
    pub(super) fn provide_early_to(&mut self, peer: libp2p::PeerId) {
        let looking: Vec<usize> = (0..self.publisher.in_flight.len())
            .filter(|at| {
                let batch = &self.publisher.in_flight[*at];
                !batch.swept
                    && batch.lookup.is_some()
                    && batch.keys.len() <= EARLY_BATCH_KEYS_MAX
                    && !batch.early.contains_key(&peer)
            })
            .collect();
        if looking.is_empty() {
            return;
        }
        let network_peers = self.early_network_peers();
        let position = [peer_position(&peer)];
        for at in looking {
            let batch = &self.publisher.in_flight[at];
            let keys: Vec<usize> = (0..batch.keys.len())
                .filter(|key| {
                    let sent = batch.early.values().filter(|v| v.contains(key)).count();
                    sent < EARLY_PROVIDE_PEERS
                        && !likely_closest(
                            &distance_key(&batch.keys[*key]),
                            &position,
                            network_peers,
                            EARLY_PROVIDE_RANK,
                            1,
                        )
                        .is_empty()
                })
                .collect();
            if !keys.is_empty() {
                self.send_early(at, peer, keys, EarlyPeer::Connection);
            }
        }
    }

    /// Sends the keys at `keys` of the batch at `at` to `peer` ahead of its lookup.
    fn send_early(&mut self, at: usize, peer: libp2p::PeerId, keys: Vec<usize>, from: EarlyPeer) {
        let batch = &self.publisher.in_flight[at];
        let request = ProvideRequest {
            ports: self.ports,
            zone: self.zone.clone(),
            keys: keys.iter().map(|k| batch.keys[*k].clone()).collect(),
        };
        let id = self
            .swarm
            .behaviour_mut()
            .provide
            .send_request(&peer, request);
        self.metrics.publish_early_requests_total[from as usize].fetch_add(1, Ordering::Relaxed);
        let batch = &mut self.publisher.in_flight[at];
        batch.outstanding.insert(id, keys.clone());
        batch.early_requests.insert(id);
        batch.early.insert(peer, keys);
    }

    /// Whether a lookup that returned `found` peers found every peer there is: fewer
    /// than it asks for, not cut by its timeout, and fewer peers answer this node's
    /// pings. A node with k live peers that gets fewer back had some fail to answer the
    /// lookup (overloaded), not a network of `found` nodes: taken as every peer, that
    /// view would name far-away holders for every key (they refuse: `not_holder`).
    pub(super) fn found_every_peer(&self, found: usize, timed_out: bool) -> bool {
        let alive = self.metrics.peers_alive.load(Ordering::Relaxed) as usize;
        !timed_out && found < PUBLISH_LOOKUP_PEERS && alive < PUBLISH_LOOKUP_PEERS
    }

    /// The network's size as this node sees it: the lookups' estimate, and at least
    /// the peers in its routing table and itself.
    fn network_peers(&self) -> f64 {
        let routing = self.metrics.routing_table_peers.load(Ordering::Relaxed) as f64;
        self.publisher.network_peers_estimate.max(routing + 1.0)
    }

    /// The network's size for optimistic provide: the lookups' estimate once a
    /// publication has made one, and before that the routing table's own — its k peers
    /// closest to this node, which the joining lookup of its own id found, lie about
    /// `k / N` of the key space away. The table's count alone would not do: at 1,000
    /// nodes a table holds ~131 peers, and a size of 132 would widen the early share
    /// eightfold, to peers around the key's 40th closest.
    fn early_network_peers(&mut self) -> f64 {
        // Never below the routing table's count and this node.
        let floor = self.network_peers();
        if self.publisher.network_peers_estimate > 0.0 {
            return floor;
        }
        let own = peer_position(&self.local);
        let nearest: Vec<DistanceKey> = self
            .swarm
            .behaviour_mut()
            .kad
            .get_closest_local_peers(&KBucketKey::from(self.local))
            .take(K_VALUE)
            .map(|peer| peer_position(peer.preimage()))
            .collect();
        if nearest.len() < K_VALUE {
            // Fewer than k peers known: the table is the network (or all of it that
            // can be reached), and every peer is among a key's k closest.
            return floor;
        }
        network_size_estimate(&own, &nearest).map_or(floor, |n| n.max(floor))
    }

    fn note_network_size(&mut self, peers: f64) {
        let estimate = &mut self.publisher.network_peers_estimate;
        *estimate = match *estimate {
            0.0 => peers,
            running => running + ESTIMATE_WEIGHT * (peers - running),
        };
    }

    /// Up to a batch of fresh keys in one region: the first region of those waiting, in
    /// distance order; the others go back to the front of the queue.
    fn fresh_batch(&mut self, bits: u32) -> Vec<FreshKey> {
        let fresh = &mut self.publisher.fresh;
        let take = fresh.len().min(PROVIDE_KEYS_MAX);
        let mut batch: Vec<([u8; 32], FreshKey)> = fresh
            .drain(..take)
            .map(|f| (distance_key(&f.key), f))
            .collect();
        batch.sort_unstable_by_key(|(distance, _)| *distance);
        let Some(first) = batch.first().map(|(d, _)| region_of(d, bits)) else {
            return Vec::new();
        };
        let cut = batch.partition_point(|(d, _)| region_of(d, bits) == first);
        for (_, key) in batch.drain(cut..).rev() {
            fresh.push_front(key);
        }
        batch.into_iter().map(|(_, k)| k).collect()
    }

    /// The sweep's next batch: keys from where it stopped, in distance order and in one
    /// region, that were never published or not within [`REPUBLISH_AFTER`]. After a
    /// whole pass it rests for [`SWEEP_REST`].
    fn sweep_batch(&mut self, bits: u32) -> Vec<RecordKey> {
        let now = Instant::now();
        if self.publisher.sweep_idle_until.is_some_and(|at| now < at) {
            return Vec::new();
        }
        let from = self.publisher.sweep_from.unwrap_or([0; 32]);
        let due_before =
            unix_ms(SystemTime::now()).saturating_sub(REPUBLISH_AFTER.as_millis() as u64);
        let mut region = match self.store().provided_from(&from, PROVIDE_KEYS_MAX) {
            Ok(region) => region,
            Err(e) => {
                tracing::warn!("{e}");
                return Vec::new();
            }
        };
        let full = region.len() == PROVIDE_KEYS_MAX;
        let first = region.first().map(|p| region_of(&p.distance_key, bits));
        let cut = region.partition_point(|p| Some(region_of(&p.distance_key, bits)) == first);
        self.publisher.sweep_from = match region.get(cut) {
            Some(next) => Some(next.distance_key),
            None if full => region
                .last()
                .and_then(|l| next_distance_key(&l.distance_key)),
            None => None,
        };
        region.truncate(cut);
        self.publisher.sweep_idle_until = match self.publisher.sweep_from {
            Some(_) => None,
            None if self.publisher.retry_soon => Some(now + PUBLISH_RETRY_AFTER),
            None => Some(now + SWEEP_REST),
        };
        if self.publisher.sweep_from.is_none() {
            self.publisher.retry_soon = false;
        }
        region
            .into_iter()
            .filter(|p| p.published_ms.is_none_or(|at| at <= due_before))
            .map(|p| p.key)
            .collect()
    }

    /// The lookup of the batch in flight answered with `peers` (`exhaustive`: all the
    /// peers there are): each key goes to its k/2 closest of them; keys that may have
    /// closer peers elsewhere go back to the front of the queue.
    pub(super) fn send_publication(
        &mut self,
        lookup: QueryId,
        peers: Vec<kad::PeerInfo>,
        timed_out: bool,
    ) {
        let exhaustive = self.found_every_peer(peers.len(), timed_out);
        let in_flight = &mut self.publisher.in_flight;
        let Some(at) = in_flight.iter().position(|p| p.lookup == Some(lookup)) else {
            return;
        };
        let batch = &mut in_flight[at];
        batch.lookup = None;
        let keys = batch.keys.clone();
        let early = std::mem::take(&mut batch.early);
        let peers: Vec<kad::PeerInfo> = peers
            .into_iter()
            .filter(|p| p.peer_id != self.local)
            .collect();
        let positions: Vec<DistanceKey> = peers.iter().map(|p| peer_position(&p.peer_id)).collect();
        let key_positions: Vec<DistanceKey> = keys.iter().map(distance_key).collect();
        match exhaustive {
            true => self.note_network_size(positions.len() as f64 + 1.0),
            false if positions.len() >= K_VALUE => {
                if let Some(size) = network_size_estimate(&key_positions[0], &positions) {
                    self.note_network_size(size);
                }
            }
            false => {}
        }
        let found: Vec<libp2p::PeerId> = peers.iter().map(|p| p.peer_id).collect();
        let split = split_by_closest(&key_positions, &positions, PROVIDE_TO_CLOSEST, exhaustive);
        self.metrics
            .publish_keys_deferred_total
            .fetch_add(split.deferred.len() as u64, Ordering::Relaxed);
        let batch = &mut self.publisher.in_flight[at];
        let deferred: Vec<FreshKey> = split
            .deferred
            .iter()
            .map(|key| FreshKey {
                key: keys[*key].clone(),
                queued: batch.queued.get_mut(*key).and_then(Option::take),
            })
            .collect();
        batch.deferred = split.deferred;
        for key in deferred.into_iter().rev() {
            self.publisher.fresh.push_front(key);
        }
        let mut outstanding = HashMap::new();
        for (peer, mut carried) in peers.into_iter().zip(split.per_candidate) {
            if let Some(sent) = early.get(&peer.peer_id) {
                carried.retain(|key| !sent.contains(key));
            }
            if carried.is_empty() {
                continue;
            }
            let request = ProvideRequest {
                ports: self.ports,
                zone: self.zone.clone(),
                keys: carried.iter().map(|at| keys[*at].clone()).collect(),
            };
            let id = self
                .swarm
                .behaviour_mut()
                .provide
                .send_request_with_addresses(&peer.peer_id, request, peer.addrs);
            outstanding.insert(id, carried);
        }
        let reach = (!exhaustive).then(|| farthest(&key_positions[0], positions.into_iter()));
        let batch = &mut self.publisher.in_flight[at];
        batch.outstanding.extend(outstanding);
        batch.peers = found;
        batch.reach = reach;
        if batch.may_end() {
            self.finish_publication(at);
        }
    }

    /// A peer answered a publication request (`stored`: the records it says it
    /// stored), or it failed (`None`). Its keys count as taken only when the peer stored
    /// all of them: a peer that refused some (a key's providers full, or a host's share
    /// of them) cannot say which, and a key every peer refused stays for the sweep
    /// rather than being marked published for 12 h.
    pub(super) fn on_published(&mut self, request: OutboundRequestId, stored: Option<usize>) {
        if self.publisher.unanswered.remove(&request) {
            return;
        }
        let in_flight = &mut self.publisher.in_flight;
        let Some(at) = in_flight
            .iter()
            .position(|p| p.outstanding.contains_key(&request))
        else {
            return;
        };
        let batch = &mut in_flight[at];
        let carried = batch.outstanding.remove(&request).unwrap_or_default();
        let mut delays_ms = Vec::new();
        if stored.is_some_and(|stored| stored >= carried.len()) {
            for key in carried {
                batch.taken[key] = true;
                if let Some(queued) = batch.queued.get_mut(key).and_then(Option::take) {
                    delays_ms.push(u64::try_from(queued.elapsed().as_millis()).unwrap_or(u64::MAX));
                }
            }
        }
        let done = batch.may_end();
        for delay_ms in delays_ms {
            self.metrics.record_publish_delay(delay_ms);
        }
        if done {
            self.finish_publication(at);
        }
    }

    /// The keys some peer took are marked published; a batch none of whose keys
    /// reached a peer counts as a failure and is left for the sweep.
    fn finish_publication(&mut self, at: usize) {
        let done = self.publisher.in_flight.swap_remove(at);
        self.publisher
            .unanswered
            .extend(done.outstanding.keys().copied());
        // The lookup was for the batch's first key: its reach is measured from there.
        let first = done.keys.first().map(distance_key).unwrap_or_default();
        let published: Vec<RecordKey> = done
            .keys
            .iter()
            .enumerate()
            .filter(|(at, _)| done.published(*at))
            .map(|(_, key)| key.clone())
            .collect();
        if published.is_empty() {
            self.metrics
                .publish_failures_total
                .fetch_add(1, Ordering::Relaxed);
            if done.peers.is_empty() {
                self.no_holder_reachable(&done.keys);
            }
            // The sweep publishes what was never published: the next pass starts soon
            // (now, if it rests; else right after this one), not after its rest.
            let publisher = &mut self.publisher;
            publisher.retry_soon = true;
            if publisher.sweep_from.is_none() {
                let retry_at = Instant::now() + PUBLISH_RETRY_AFTER;
                if publisher
                    .sweep_idle_until
                    .is_none_or(|until| until > retry_at)
                {
                    publisher.sweep_idle_until = Some(retry_at);
                }
            }
            return;
        }
        let now_ms = unix_ms(SystemTime::now());
        if let Err(e) = self.store().mark_published(&published, now_ms) {
            tracing::warn!("{e}");
        }
        self.metrics
            .keys_published_total
            .fetch_add(published.len() as u64, Ordering::Relaxed);
        self.ask_holders(&published, &done.peers, &first, done.reach);
    }
}

/// How many leading bits of the distance key name a region: about `2N / k` regions
/// for a network of `N` peers, each about k/2 peers wide, so that the k/2 closest peers
/// of most of a region's keys are among the k closest of its first key (the others are
/// looked up on their own). Up to k/2 peers: one region.
pub fn region_bits(network_peers: f64) -> u32 {
    let regions = 2.0 * network_peers / K_VALUE as f64;
    if regions <= 1.0 {
        0
    } else {
        (regions.log2().ceil() as u32).min(32)
    }
}

fn region_of(distance_key: &[u8; 32], bits: u32) -> u32 {
    let head = u32::from_be_bytes([
        distance_key[0],
        distance_key[1],
        distance_key[2],
        distance_key[3],
    ]);
    match bits {
        0 => 0,
        bits => head >> (32 - bits),
    }
}

/// The distance key just after `key` (`None` past the last one).
fn next_distance_key(key: &[u8; 32]) -> Option<[u8; 32]> {
    let mut next = *key;
    for byte in next.iter_mut().rev() {
        if *byte == u8::MAX {
            *byte = 0;
        } else {
            *byte += 1;
            return Some(next);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_grow_finer_with_the_network() {
        assert_eq!(region_bits(0.0), 0);
        assert_eq!(region_bits(10.0), 0);
        assert_eq!(region_bits(11.0), 1);
        assert_eq!(region_bits(20.0), 1);
        assert_eq!(region_bits(100.0), 4);
        assert_eq!(region_bits(1e6), 17);
        assert_eq!(region_bits(f64::MAX), 32);
        let mut key = [0u8; 32];
        key[0] = 0b1010_0000;
        assert_eq!(region_of(&key, 0), 0);
        assert_eq!(region_of(&key, 1), 1);
        assert_eq!(region_of(&key, 3), 0b101);
    }

    #[test]
    fn next_distance_key_carries() {
        let mut key = [0u8; 32];
        key[31] = 0xff;
        key[30] = 0x01;
        let next = next_distance_key(&key).unwrap();
        assert_eq!((next[30], next[31]), (0x02, 0x00));
        assert_eq!(next_distance_key(&[0xff; 32]), None);
    }
}
