//! The routing-table refresh on this node's own schedule (`ROUTING_REFRESH`, drawn per
//! node and round in `state.rs`): a lookup of this node's own id, then one of a random
//! key in each bucket past the closest non-empty one that holds fewer than k peers, one
//! lookup at a time. libp2p-kad's bootstrap looks up a key in every such bucket, full
//! or not; a full bucket already holds k peers at its distance (what routing needs from
//! it), and a dead one in it gives way to a newly connected peer (libp2p-kad replaces a
//! bucket's least recently connected entry, when disconnected, with a pending one) —
//! looking it up again only opened a connection to each of a few dozen far peers, most
//! of a refresh's cost (docs/design/dht.md "Refreshing the routing table").

use std::sync::atomic::Ordering;
use std::time::Instant;

use libp2p::kad::{self, QueryId};

use crate::node::config::K_VALUE;
use crate::node::state::{refresh_wait, Node};

/// Candidate keys tried per bucket for one that falls in it: the bucket `i` buckets
/// from the farthest takes one in 2^(i+1) (a refresh looks at the buckets past the
/// closest non-empty one: at 10,000 nodes about 13 from the farthest, 16,384 tries on
/// average, ~8 ms; a miss, one in 10^7 there, skips that bucket this round).
const BUCKET_KEY_TRIES_MAX: u32 = 1 << 18;
/// The deepest bucket a refresh looks a key up in (15 from the farthest: 65,536 tries on
/// average, ~33 ms). The closest non-empty bucket is this deep only in a network of
/// ~32,000 nodes or more — or because one peer's id was ground to share a long prefix
/// with this node's: from its bucket on, each deeper one took the whole
/// [`BUCKET_KEY_TRIES_MAX`] (~130 ms) and found no key, seconds of the DHT thread a
/// refresh.
const REFRESH_BUCKET_DEEPEST: u32 = 255 - 15;

impl Node {
    /// Starts a refresh when its time has come (not while the last one still runs).
    pub(super) fn refresh_routing_when_due(&mut self) {
        if Instant::now() < self.next_refresh {
            return;
        }
        self.refreshes += 1;
        self.next_refresh = Instant::now() + refresh_wait(&self.local, self.refreshes);
        if self.refresh.running.is_some() || self.isolated() {
            return;
        }
        if self.swarm.connected_peers().next().is_none() {
            // Its table's peers may all be gone (a node cut off for long): the bootstrap
            // peers too, once a refresh.
            self.dial_bootstrap_peers();
        }
        self.refresh.targets = self.refresh_targets();
        self.metrics
            .routing_refreshes_total
            .fetch_add(1, Ordering::Relaxed);
        self.refresh_next();
    }

    /// A lookup finished: when it was the refresh's, the next one starts. Whether it was.
    pub(super) fn on_refresh_lookup_done(&mut self, id: QueryId) -> bool {
        if self.refresh.running != Some(id) {
            return false;
        }
        self.refresh.running = None;
        self.refresh_next();
        true
    }

    fn refresh_next(&mut self) {
        if let Some(target) = self.refresh.targets.pop() {
            self.refresh.running = Some(self.swarm.behaviour_mut().kad.get_closest_peers(target));
        }
    }

    /// The refresh's lookups, the last one first: this node's id, then a key in each
    /// bucket past the closest non-empty one that is not full (empty ones included).
    fn refresh_targets(&mut self) -> Vec<Vec<u8>> {
        let local = kad::KBucketKey::from(self.local);
        let filled: Vec<(u32, usize)> = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .filter_map(|b| Some((b.range().0.ilog2()?, b.num_entries())))
            .collect();
        if filled.is_empty() {
            return Vec::new();
        }
        let mut targets: Vec<Vec<u8>> = buckets_to_refresh(&filled)
            .filter_map(|bucket| key_in_bucket(&local, bucket, self.refreshes))
            .collect();
        targets.reverse();
        targets.push(self.local.to_bytes());
        targets
    }
}

/// The buckets (by the log2 of their distances) a refresh looks a key up in, given the
/// non-empty ones and their peers: those past the closest non-empty one (and from
/// [`REFRESH_BUCKET_DEEPEST`] on), empty or holding fewer than k.
fn buckets_to_refresh(filled: &[(u32, usize)]) -> impl Iterator<Item = u32> + '_ {
    let closest = filled
        .iter()
        .map(|(bucket, _)| *bucket)
        .min()
        .unwrap_or(255);
    ((closest + 1).max(REFRESH_BUCKET_DEEPEST)..256).filter(|bucket| {
        !filled
            .iter()
            .any(|(b, entries)| b == bucket && *entries >= K_VALUE)
    })
}

/// A key whose distance from `local` falls in `bucket` (its log2), drawn from a hash of
/// this node, the round and the bucket; `None` if none of the tries does.
fn key_in_bucket(
    local: &kad::KBucketKey<libp2p::PeerId>,
    bucket: u32,
    round: u64,
) -> Option<Vec<u8>> {
    let mut seed = blake3::Hasher::new();
    seed.update(local.preimage().to_bytes().as_slice());
    seed.update(&round.to_le_bytes());
    seed.update(&bucket.to_le_bytes());
    (0..BUCKET_KEY_TRIES_MAX).find_map(|attempt| {
        let mut hasher = seed.clone();
        hasher.update(&attempt.to_le_bytes());
        let candidate = kad::KBucketKey::from(hasher.finalize().as_bytes().to_vec());
        (local.distance(&candidate).ilog2() == Some(bucket)).then(|| candidate.into_preimage())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_looks_at_the_buckets_past_the_closest_that_are_not_full() {
        // 300 nodes: the far buckets full, the near ones not, one empty between.
        let filled = [
            (248, 1),
            (250, 3),
            (251, 9),
            (252, 19),
            (253, 20),
            (254, 20),
            (255, 20),
        ];
        let buckets: Vec<u32> = buckets_to_refresh(&filled).collect();
        assert_eq!(buckets, [249, 250, 251, 252]);
        let all_full = [(250, 20), (255, 20)];
        let buckets: Vec<u32> = buckets_to_refresh(&all_full).collect();
        assert_eq!(buckets, [251, 252, 253, 254], "the empty ones between");
        assert_eq!(buckets_to_refresh(&[]).count(), 0);
        // One peer whose id shares 55 bits with this node's (ground to): the buckets
        // from the deepest a refresh looks at, not from its.
        let ground = [(200, 1), (252, 5), (253, 20), (254, 20), (255, 20)];
        let buckets: Vec<u32> = buckets_to_refresh(&ground).collect();
        assert_eq!(buckets, (240..=252).collect::<Vec<u32>>());
    }

    #[test]
    fn a_key_is_found_in_each_bucket_a_refresh_looks_at() {
        let local = kad::KBucketKey::from(libp2p::PeerId::random());
        // 10,000 nodes: the closest non-empty bucket is about 13 from the farthest.
        for bucket in 242..256 {
            let key = key_in_bucket(&local, bucket, 1).expect("a key in the bucket");
            let distance = local.distance(&kad::KBucketKey::from(key.clone()));
            assert_eq!(distance.ilog2(), Some(bucket));
            assert_ne!(key_in_bucket(&local, bucket, 2), Some(key), "rounds differ");
        }
    }
}
