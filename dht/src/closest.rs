//! Who is closest to a key, worked out for a batch of keys from one lookup (pure: no
//! swarm, no I/O).
//!
//! A Kademlia lookup for a key returns the peers closest to it. The publisher sends a
//! whole region of keys after one lookup for the region's first key, asking for more
//! peers than `k` ([`crate::node::PUBLISH_LOOKUP_PEERS`]). [`split_by_closest`] then
//! ranks those candidates for every key of the batch and keeps a key only when its `k`
//! closest are certainly among them: any peer the lookup did not return is at least
//! `reach` from the first key (the farthest candidate's distance), hence, by the
//! triangle inequality of the XOR metric, at least `reach − d(first, key)` from the key.
//! A key whose `k`-th closest candidate is nearer than that bound has its true `k`
//! closest in hand; the others are deferred to a lookup of their own. A region sized
//! too large costs lookups, never a record on the wrong peers.

use libp2p::kad::{KBucketKey, U256};
use libp2p::PeerId;

/// A position in the Kademlia key space: `sha256` of a peer id or of a record key.
pub type DistanceKey = [u8; 32];

/// A peer's position in the key space.
pub fn peer_position(peer: &PeerId) -> DistanceKey {
    let mut out = [0; 32];
    out.copy_from_slice(KBucketKey::from(*peer).hashed_bytes());
    out
}

/// How one lookup's peers are shared out among a batch's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Per candidate, in the order given: the indexes of the keys it is one of the `k`
    /// closest peers of.
    pub per_candidate: Vec<Vec<usize>>,
    /// Indexes of the keys whose `k` closest peers the candidates may not all be.
    pub deferred: Vec<usize>,
}

/// The XOR distance between two positions.
pub fn distance(a: &DistanceKey, b: &DistanceKey) -> U256 {
    U256::from_big_endian(a) ^ U256::from_big_endian(b)
}

/// Shares out the peers a lookup for `keys[0]` returned (`candidates`, each as its
/// position) among `keys`: every key gets its `k` closest candidates, or is deferred
/// when peers the lookup did not return could be closer. `exhaustive`: the lookup
/// returned every peer there is (fewer than it asked for, and it did not time out).
/// The first key is never deferred: it had the lookup of its own, and a lookup that
/// timed out is the best there is for it.
pub fn split_by_closest(
    keys: &[DistanceKey],
    candidates: &[DistanceKey],
    k: usize,
    exhaustive: bool,
) -> Split {
    let mut split = Split {
        per_candidate: vec![Vec::new(); candidates.len()],
        deferred: Vec::new(),
    };
    let Some(first) = keys.first() else {
        return split;
    };
    let reach = candidates.iter().map(|c| distance(first, c)).max();
    let mut ranked: Vec<(U256, usize)> = Vec::with_capacity(candidates.len());
    for (at, key) in keys.iter().enumerate() {
        ranked.clear();
        ranked.extend(
            candidates
                .iter()
                .enumerate()
                .map(|(c, p)| (distance(key, p), c)),
        );
        ranked.sort_unstable();
        ranked.truncate(k);
        let certain = at == 0
            || exhaustive
            || match (ranked.last(), reach) {
                (Some((kth, _)), Some(reach)) if ranked.len() == k => reach
                    .checked_sub(distance(first, key))
                    .is_some_and(|nearest_unseen| *kth <= nearest_unseen),
                _ => false,
            };
        if certain {
            ranked
                .iter()
                .for_each(|(_, c)| split.per_candidate[*c].push(at));
        } else {
            split.deferred.push(at);
        }
    }
    split
}

/// The distance from `key` of the farthest of `positions` (zero with none).
pub fn farthest(key: &DistanceKey, positions: impl Iterator<Item = DistanceKey>) -> U256 {
    positions
        .map(|p| distance(key, &p))
        .max()
        .unwrap_or_default()
}

/// The distance from `key` of the `n`-th nearest of `positions` (`None` with fewer).
pub fn nth_nearest(
    key: &DistanceKey,
    positions: impl Iterator<Item = DistanceKey>,
    n: usize,
) -> Option<U256> {
    let mut distances: Vec<U256> = positions.map(|p| distance(key, &p)).collect();
    if n == 0 || distances.len() < n {
        return None;
    }
    let (_, nth, _) = distances.select_nth_unstable(n - 1);
    Some(*nth)
}

/// Of `known` peers (a routing table's, as positions), those likely among the closest
/// of `key` before any lookup: within the share of the key space where `rank` peers of
/// a network of `network_peers` are expected, nearest first, at most `max`; their
/// indexes in `known`. A peer that near has fewer than `rank` others nearer on average,
/// so with `rank` half of the `k` a key is published to, it is one of them unless the
/// network is much larger than `network_peers` says (then it is merely near: its record
/// still serves the lookups that pass it).
pub fn likely_closest(
    key: &DistanceKey,
    known: &[DistanceKey],
    network_peers: f64,
    rank: usize,
    max: usize,
) -> Vec<usize> {
    if network_peers <= 0.0 {
        return Vec::new();
    }
    let within = rank as f64 / network_peers;
    let mut near: Vec<(U256, usize)> = known
        .iter()
        .enumerate()
        .map(|(at, p)| (distance(key, p), at))
        .filter(|(d, _)| share_of_key_space(*d) <= within)
        .collect();
    near.sort_unstable();
    near.into_iter().take(max).map(|(_, at)| at).collect()
}

/// How many peers the network holds, estimated from a lookup's closest peers to `key`:
/// with `N` ids spread evenly over the key space, the `n`-th closest lies about
/// `n / N` of the space away. `None` with no candidate.
pub fn network_size_estimate(key: &DistanceKey, candidates: &[DistanceKey]) -> Option<f64> {
    let reach = candidates.iter().map(|c| distance(key, c)).max()?;
    let share = share_of_key_space(reach);
    (share > 0.0).then(|| candidates.len() as f64 / share)
}

/// Positions spread uniformly over the key space, the same sequence for the same seed
/// (BLAKE3 of the seed and a counter): for tests and the placement simulation, as
/// random as real positions (`sha256` of ids). A cheap generator (xorshift) was tried
/// and dropped: its consecutive outputs are linearly related, which gave the nodes of
/// one zone (every third node) clustered positions and the simulation a false 10×
/// imbalance.
pub fn scattered_positions(seed: u64) -> impl Iterator<Item = DistanceKey> {
    (0u64..).map(move |i| {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&seed.to_le_bytes());
        hasher.update(&i.to_le_bytes());
        *hasher.finalize().as_bytes()
    })
}

/// `d / 2^256` as a float (its top 64 significant bits).
fn share_of_key_space(d: U256) -> f64 {
    if d.is_zero() {
        return 0.0;
    }
    let zeros = d.leading_zeros();
    let top = (d << zeros as usize >> 192usize).low_u64();
    top as f64 / 2f64.powi(64) / 2f64.powi(zeros as i32)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One scattered position per seed.
    pub(crate) fn position(seed: u64) -> DistanceKey {
        scattered_positions(seed)
            .next()
            .expect("an endless sequence")
    }

    /// The true `k` closest of `key` among all `peers`, by index.
    fn closest(key: &DistanceKey, peers: &[DistanceKey], k: usize) -> Vec<usize> {
        let mut ranked: Vec<(U256, usize)> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| (distance(key, p), i))
            .collect();
        ranked.sort_unstable();
        let mut out: Vec<usize> = ranked.into_iter().take(k).map(|(_, i)| i).collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn the_nth_nearest_is_counted_from_one() {
        let key = [0u8; 32];
        let at = |last: u8| {
            let mut p = [0u8; 32];
            p[31] = last;
            p
        };
        let positions = [at(9), at(3), at(5), at(1)];
        let nth = |n| nth_nearest(&key, positions.iter().copied(), n);
        assert_eq!(nth(1), Some(U256::from(1u64)));
        assert_eq!(nth(3), Some(U256::from(5u64)));
        assert_eq!(nth(4), Some(U256::from(9u64)));
        assert_eq!(nth(5), None);
        assert_eq!(nth(0), None);
    }

    proptest! {
        /// Given the true `n` closest peers of the first key (what a converged lookup
        /// returns), every key kept gets exactly its true `k` closest peers, and the
        /// first key is always kept.
        #[test]
        fn kept_keys_reach_exactly_their_k_closest(
            nodes in 1usize..300,
            seeds in proptest::collection::vec(any::<u64>(), 1..40),
            node_seed: u64,
            prefix_bits in 0u32..12,
        ) {
            let (k, n) = (20, 40);
            let peers: Vec<DistanceKey> =
                (0..nodes as u64).map(|i| position(node_seed ^ i.rotate_left(17))).collect();
            // Keys in one region, as the publisher batches them: a shared prefix.
            let first = position(seeds[0]);
            let keys: Vec<DistanceKey> = seeds
                .iter()
                .map(|s| {
                    let mut key = position(*s);
                    let mask = U256::MAX >> prefix_bits as usize;
                    let merged = (U256::from_big_endian(&first) & !mask)
                        | (U256::from_big_endian(&key) & mask);
                    key = merged.to_big_endian();
                    key
                })
                .collect();
            let lookup = closest(&keys[0], &peers, n);
            let candidates: Vec<DistanceKey> = lookup.iter().map(|i| peers[*i]).collect();
            let split = split_by_closest(&keys, &candidates, k, nodes < n);
            prop_assert!(!split.deferred.contains(&0));
            for (at, key) in keys.iter().enumerate() {
                if split.deferred.contains(&at) {
                    continue;
                }
                let mut got: Vec<usize> = split
                    .per_candidate
                    .iter()
                    .enumerate()
                    .filter(|(_, keys)| keys.contains(&at))
                    .map(|(c, _)| lookup[c])
                    .collect();
                got.sort_unstable();
                prop_assert_eq!(got, closest(key, &peers, k), "key {}", at);
            }
        }
    }

    #[test]
    fn keys_near_the_first_are_kept_and_far_ones_deferred() {
        let peers: Vec<DistanceKey> = (0..1000).map(position).collect();
        let first = position(5_000);
        let mut near = first;
        near[31] ^= 1;
        let far = position(6_000);
        let lookup = closest(&first, &peers, 40);
        let candidates: Vec<DistanceKey> = lookup.iter().map(|i| peers[*i]).collect();
        let split = split_by_closest(&[first, near, far], &candidates, 20, false);
        assert_eq!(split.deferred, vec![2]);
        let reached = split
            .per_candidate
            .iter()
            .filter(|k| k.contains(&1))
            .count();
        assert_eq!(reached, 20);
    }

    #[test]
    fn the_network_size_is_estimated_within_a_factor_of_two() {
        for nodes in [100usize, 1_000, 10_000] {
            let peers: Vec<DistanceKey> = (0..nodes as u64).map(position).collect();
            let mut estimates: Vec<f64> = (0..9)
                .map(|i| {
                    let key = position(1_000_000 + i);
                    let lookup = closest(&key, &peers, 40);
                    let candidates: Vec<DistanceKey> = lookup.iter().map(|i| peers[*i]).collect();
                    network_size_estimate(&key, &candidates).unwrap()
                })
                .collect();
            estimates.sort_by(f64::total_cmp);
            let median = estimates[4];
            assert!(
                median > nodes as f64 / 2.0 && median < nodes as f64 * 2.0,
                "{nodes} nodes estimated as {median}"
            );
        }
        assert_eq!(network_size_estimate(&[0; 32], &[]), None);
    }

    #[test]
    fn likely_closest_peers_are_among_the_true_closest() {
        // A node knows a routing table's share of a network (every fifth peer here) and
        // picks, for fresh keys, those within the space where 5 peers are expected: they
        // must nearly always be among the key's 10 closest of the whole network.
        const NODES: usize = 1_000;
        let peers: Vec<DistanceKey> = scattered_positions(7).take(NODES).collect();
        let known: Vec<DistanceKey> = peers.iter().step_by(5).copied().collect();
        let (mut picked, mut among) = (0, 0);
        for key in scattered_positions(8).take(2_000) {
            let true_closest = closest(&key, &peers, 10);
            for at in likely_closest(&key, &known, NODES as f64, 5, 2) {
                picked += 1;
                if true_closest.contains(&(at * 5)) {
                    among += 1;
                }
            }
        }
        assert!(picked > 1_200, "{picked} picks for 2,000 keys");
        assert!(
            among * 100 >= picked * 99,
            "{among} of {picked} picks among the 10 closest"
        );
        // Nearest first, at most `max`, none beyond the share.
        let key = position(9);
        let picks = likely_closest(&key, &peers, NODES as f64, 5, 3);
        assert!(!picks.is_empty() && picks.len() <= 3);
        let ranked = closest(&key, &peers, picks.len());
        let mut sorted = picks.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, ranked, "the nearest known peers");
        assert!(likely_closest(&key, &peers, NODES as f64, 0, 3).is_empty());
        assert!(likely_closest(&key, &peers, 0.0, 5, 3).is_empty());
        assert_eq!(share_of_key_space(U256::MAX >> 1usize), 0.5);
    }
}
