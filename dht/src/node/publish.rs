//! Publishing our keys. The shards' announcements are taken on the tick: announced keys
//! are stored as ours and the new ones queued (at most [`FRESH_KEYS_MAX`]); withdrawn
//! ones are forgotten. The publisher sends one batch at a time, fresh keys first, then
//! the sweep's next region of keys due ([`REPUBLISH_AFTER`]); a batch is one
//! `get_closest_peers` lookup for its region's first key, then the batch to each of
//! those peers over `/ron/provide/1`; a batch that reached a peer is marked published.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::{Instant, SystemTime};

use libp2p::kad::{self, QueryId, RecordKey};
use libp2p::request_response::OutboundRequestId;
use ron_link::dht::{ProviderChange, DHT_MAILBOX_LEN};

use crate::node::address::record_key;
use crate::node::config::{FRESH_KEYS_MAX, K_VALUE, REPUBLISH_AFTER, SWEEP_REST};
use crate::node::state::{Node, Publication};
use crate::protocol::{ProvideRequest, PROVIDE_KEYS_MAX};
use crate::store::unix_ms;

impl Node {
    /// Takes the tick's provider changes in order: announced keys are stored as ours
    /// (one commit per run of announcements) and the new ones queued for their first
    /// publication; withdrawn keys are no longer provided nor published.
    pub(super) fn take_announcements(&mut self, announces: &Receiver<ProviderChange>) {
        let mut provided: Vec<RecordKey> = Vec::new();
        for change in announces.try_iter().take(DHT_MAILBOX_LEN) {
            match change {
                ProviderChange::Provide(addrs) => {
                    provided.extend(addrs.iter().map(record_key));
                }
                ProviderChange::Withdraw(addrs) => {
                    self.provide(std::mem::take(&mut provided));
                    self.withdraw(addrs.iter().map(record_key).collect());
                }
            }
        }
        self.provide(provided);
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
        let room = FRESH_KEYS_MAX.saturating_sub(self.publisher.fresh.len());
        self.publisher.fresh.extend(new.into_iter().take(room));
    }

    fn withdraw(&mut self, keys: Vec<RecordKey>) {
        if let Err(e) = self.store().unprovide(&keys) {
            tracing::warn!("{e}");
        }
        let gone: std::collections::HashSet<&RecordKey> = keys.iter().collect();
        self.publisher.fresh.retain(|k| !gone.contains(k));
    }

    /// Starts the next batch when none is in flight and some peer is connected: fresh
    /// keys first, then the sweep's next batch. A batch is cut to one region of the key
    /// space ([`region_bits`]): its keys share the closest peers of its first key.
    pub(super) fn publish_next(&mut self) {
        if self.publisher.current.is_some() || self.swarm.connected_peers().next().is_none() {
            return;
        }
        let bits = region_bits(self.metrics.routing_table_peers.load(Ordering::Relaxed));
        let mut keys = self.fresh_batch(bits);
        if keys.is_empty() {
            keys = self.sweep_batch(bits);
        }
        let Some(first) = keys.first() else {
            return;
        };
        let lookup = self
            .swarm
            .behaviour_mut()
            .kad
            .get_closest_peers(first.to_vec());
        self.publisher.current = Some(Publication {
            keys,
            lookup: Some(lookup),
            outstanding: HashSet::new(),
            accepted: 0,
        });
    }

    /// Up to a batch of fresh keys in one region: the first region of those waiting, in
    /// distance order; the others go back to the front of the queue.
    fn fresh_batch(&mut self, bits: u32) -> Vec<RecordKey> {
        let fresh = &mut self.publisher.fresh;
        let take = fresh.len().min(PROVIDE_KEYS_MAX);
        let mut batch: Vec<([u8; 32], RecordKey)> = fresh
            .drain(..take)
            .map(|k| (crate::store::distance_key(&k), k))
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
            None => Some(now + SWEEP_REST),
        };
        region
            .into_iter()
            .filter(|p| p.published_ms.is_none_or(|at| at <= due_before))
            .map(|p| p.key)
            .collect()
    }

    pub(super) fn send_publication(&mut self, lookup: QueryId, peers: Vec<kad::PeerInfo>) {
        let Some(current) = self.publisher.current.as_mut() else {
            return;
        };
        if current.lookup != Some(lookup) {
            return;
        }
        current.lookup = None;
        let keys = current.keys.clone();
        let mut outstanding = HashSet::new();
        for peer in peers.into_iter().filter(|p| p.peer_id != self.local) {
            let request = ProvideRequest {
                ports: self.ports,
                keys: keys.clone(),
            };
            let id = self
                .swarm
                .behaviour_mut()
                .provide
                .send_request_with_addresses(&peer.peer_id, request, peer.addrs);
            outstanding.insert(id);
        }
        let empty = outstanding.is_empty();
        if let Some(current) = self.publisher.current.as_mut() {
            current.outstanding = outstanding;
        }
        if empty {
            self.finish_publication();
        }
    }

    pub(super) fn on_published(&mut self, request: OutboundRequestId, accepted: bool) {
        let Some(current) = self.publisher.current.as_mut() else {
            return;
        };
        if !current.outstanding.remove(&request) {
            return;
        }
        current.accepted += usize::from(accepted);
        if current.outstanding.is_empty() {
            self.finish_publication();
        }
    }

    /// A batch that reached at least one peer is marked published; one that reached
    /// none is left for the sweep.
    fn finish_publication(&mut self) {
        let Some(done) = self.publisher.current.take() else {
            return;
        };
        if done.accepted == 0 {
            self.metrics
                .publish_failures_total
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now_ms = unix_ms(SystemTime::now());
        if let Err(e) = self.store().mark_published(&done.keys, now_ms) {
            tracing::warn!("{e}");
        }
        self.metrics
            .keys_published_total
            .fetch_add(done.keys.len() as u64, Ordering::Relaxed);
    }
}

/// How many leading bits of the distance key name a region: about `N / k` regions for
/// `N` nodes, so the k closest peers of a region's first key are, near enough, those
/// of all its keys. The routing table's size stands in for `N` (it underestimates a
/// large network: regions come out larger, lookups fewer, and a record may land a few
/// peers off its closest ones, where lookups passing near still find it). Up to `k`
/// peers: one region, every key published to every peer.
pub fn region_bits(routing_table_peers: u64) -> u32 {
    let regions = routing_table_peers / K_VALUE as u64;
    match regions {
        0 | 1 => 0,
        n => (n - 1).ilog2() + 1,
    }
    .min(32)
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
        assert_eq!(region_bits(0), 0);
        assert_eq!(region_bits(39), 0);
        assert_eq!(region_bits(40), 1);
        assert_eq!(region_bits(80), 2);
        assert_eq!(region_bits(81), 2);
        assert_eq!(region_bits(100), 3);
        assert_eq!(region_bits(u64::MAX), 32);
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
