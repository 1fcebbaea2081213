//! Placement: which nodes hold an object (pure: no swarm, no I/O; docs/design/replication.md).
//!
//! The holders of a key are chosen among the live nodes closest to it by Kademlia (XOR)
//! distance, spread over zones: each zone's window is its [`ZONE_WINDOW`] nodes closest
//! to the key, and each next holder is the window node with the highest [`score`]
//! (rendezvous hashing) among the zones holding the fewest copies so far. With at least
//! `replicas` zones no two copies share a zone; with fewer, copies spread as evenly as
//! the zones allow. Every node that knows the same live nodes computes the same
//! holders, without asking anyone: a node's view of who is live comes from
//! libp2p-kad's routing table and lookups, and one lookup of a key's closest peers
//! finds its windows. The score within a window is what balances the load: the closest
//! node alone would inherit whole empty subtrees of the key space.
//!
//! [`Placement`] keeps the nodes sorted by position, so the closest ones to a key are
//! those of the smallest subtree of the key space (a contiguous run of the sorted
//! nodes) around the key holding enough candidates: a placement costs a binary search
//! and a sort of a few dozen nodes and a hash per window node.

use std::collections::HashMap;

use crate::closest::{distance, DistanceKey};

/// Copies of an object at most (a limit on the `replicas` setting).
pub const REPLICAS_MAX: usize = 16;

/// The nodes of each zone closest to a key among which its holders are chosen by score
/// (`replicas` of them when that is more).
pub const ZONE_WINDOW: usize = 8;

/// A node as placement sees it: its position in the key space and its zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedNode<Id> {
    pub id: Id,
    pub position: DistanceKey,
    pub zone: String,
}

/// The live nodes, sorted by position, and the zones they are in.
#[derive(Debug, Clone)]
pub struct Placement<Id> {
    nodes: Vec<PlacedNode<Id>>,
    /// Each node's zone, as an index.
    zone_of: Vec<usize>,
    /// Nodes per zone.
    zone_sizes: Vec<usize>,
    zones: usize,
}

impl<Id: Clone> Placement<Id> {
    /// The placement over `nodes` (duplicated positions keep the first).
    pub fn new(mut nodes: Vec<PlacedNode<Id>>) -> Placement<Id> {
        nodes.sort_by_key(|n| n.position);
        nodes.dedup_by(|a, b| a.position == b.position);
        let mut names: HashMap<&str, usize> = HashMap::new();
        let zone_of: Vec<usize> = nodes
            .iter()
            .map(|n| {
                let next = names.len();
                *names.entry(n.zone.as_str()).or_insert(next)
            })
            .collect();
        let zones = names.len();
        let mut zone_sizes = vec![0; zones];
        zone_of.iter().for_each(|z| zone_sizes[*z] += 1);
        Placement {
            nodes,
            zone_of,
            zone_sizes,
            zones,
        }
    }

    pub fn nodes(&self) -> &[PlacedNode<Id>] {
        &self.nodes
    }

    pub fn zones(&self) -> usize {
        self.zones
    }

    /// The holders of `key`, in the order picked: `replicas` of them (fewer when fewer
    /// nodes exist), spread over zones.
    pub fn holders(&self, key: &DistanceKey, replicas: usize) -> Vec<&PlacedNode<Id>> {
        let replicas = replicas.min(REPLICAS_MAX).min(self.nodes.len());
        if replicas == 0 {
            return Vec::new();
        }
        let mut candidates = ZONE_WINDOW.max(replicas) * self.zones;
        loop {
            let (from, to) = self.run_around(key, candidates);
            let covers_all = from == 0 && to == self.nodes.len();
            if let Some(picked) = self.pick(key, from..to, replicas, covers_all) {
                return picked.into_iter().map(|i| &self.nodes[i]).collect();
            }
            candidates *= 4;
        }
    }

    /// The smallest run of sorted nodes sharing a prefix with `key` that holds at
    /// least `at_least` nodes (all of them when fewer exist): it contains the
    /// `at_least` nodes closest to the key, since nodes outside the run differ from the
    /// key in an earlier bit than any node inside.
    fn run_around(&self, key: &DistanceKey, at_least: usize) -> (usize, usize) {
        // The run shrinks as the prefix grows: binary search for the longest prefix
        // whose run still holds `at_least` nodes (prefix 0 is every node).
        let (mut holds, mut short) = (0usize, 257usize);
        while short - holds > 1 {
            let mid = (holds + short) / 2;
            let (from, to) = self.run_with_prefix(key, mid);
            if to - from >= at_least {
                holds = mid;
            } else {
                short = mid;
            }
        }
        self.run_with_prefix(key, holds)
    }

    fn run_with_prefix(&self, key: &DistanceKey, bits: usize) -> (usize, usize) {
        let (low, high) = prefix_bounds(key, bits);
        let from = self.nodes.partition_point(|n| n.position < low);
        let to = self.nodes.partition_point(|n| n.position <= high);
        (from, to)
    }

    /// The rule over a run of sorted nodes: each zone's window is its [`ZONE_WINDOW`]
    /// nodes closest to the key; each next holder is the window node with the highest
    /// score among the zones holding the fewest copies so far. `None` when a zone's
    /// window may reach outside the run (and the run is not every node): every node
    /// outside the run is farther than every node inside, so what it picks is what the
    /// rule picks over all nodes.
    fn pick(
        &self,
        key: &DistanceKey,
        run: std::ops::Range<usize>,
        replicas: usize,
        covers_all: bool,
    ) -> Option<Vec<usize>> {
        let mut ranked: Vec<(libp2p::kad::U256, usize)> = run
            .map(|i| (distance(key, &self.nodes[i].position), i))
            .collect();
        ranked.sort_unstable();
        let zone_window = ZONE_WINDOW.max(replicas);
        let mut in_window = vec![0usize; self.zones];
        let mut window: Vec<(usize, u64)> = Vec::new();
        for (_, i) in ranked {
            let zone = self.zone_of[i];
            if in_window[zone] < zone_window {
                in_window[zone] += 1;
                window.push((i, score(key, &self.nodes[i].position)));
            }
        }
        let windows_whole =
            (0..self.zones).all(|z| in_window[z] == self.zone_sizes[z].min(zone_window));
        if !windows_whole && !covers_all {
            return None;
        }
        let mut copies_in_zone = vec![0usize; self.zones];
        let mut used = vec![false; window.len()];
        let mut picked = Vec::with_capacity(replicas);
        while picked.len() < replicas {
            let fewest = (0..window.len())
                .filter(|at| !used[*at])
                .map(|at| copies_in_zone[self.zone_of[window[at].0]])
                .min();
            let Some(fewest) = fewest else {
                return Some(picked);
            };
            let at = (0..window.len())
                .filter(|at| !used[*at] && copies_in_zone[self.zone_of[window[*at].0]] == fewest)
                .max_by_key(|at| window[*at].1)
                .expect("a node with the fewest copies");
            used[at] = true;
            copies_in_zone[self.zone_of[window[at].0]] += 1;
            picked.push(window[at].0);
        }
        Some(picked)
    }
}

/// A node's rendezvous score for a key: a hash of both positions, the same on every
/// node, independent across keys and nodes.
pub fn score(key: &DistanceKey, position: &DistanceKey) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(key);
    hasher.update(position);
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    u64::from_be_bytes(first)
}

/// The lowest and highest positions sharing the first `bits` bits of `key`.
fn prefix_bounds(key: &DistanceKey, bits: usize) -> (DistanceKey, DistanceKey) {
    let (mut low, mut high) = (*key, *key);
    for bit in bits..256 {
        let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
        low[byte] &= !mask;
        high[byte] |= mask;
    }
    (low, high)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closest::tests::position;
    use proptest::prelude::*;

    fn network(nodes: usize, zones: usize, seed: u64) -> Placement<usize> {
        Placement::new(
            (0..nodes)
                .map(|i| PlacedNode {
                    id: i,
                    position: position(seed ^ (i as u64).rotate_left(23)),
                    zone: format!("z{}", i % zones.max(1)),
                })
                .collect(),
        )
    }

    /// The same rule over every node, ranked by brute force.
    fn holders_by_brute_force(
        p: &Placement<usize>,
        key: &DistanceKey,
        replicas: usize,
    ) -> Vec<usize> {
        let replicas = replicas.min(p.nodes.len());
        let mut ranked: Vec<usize> = (0..p.nodes.len()).collect();
        ranked.sort_by_key(|i| distance(key, &p.nodes[*i].position));
        let window: Vec<usize> = ranked
            .iter()
            .copied()
            .filter(|i| {
                let zone = p.zone_of[*i];
                let closer_in_zone = ranked
                    .iter()
                    .take_while(|j| *j != i)
                    .filter(|j| p.zone_of[**j] == zone)
                    .count();
                closer_in_zone < ZONE_WINDOW.max(replicas)
            })
            .collect();
        let mut copies = vec![0usize; p.zones];
        let mut out: Vec<usize> = Vec::new();
        while out.len() < replicas {
            let fewest = window
                .iter()
                .filter(|i| !out.contains(*i))
                .map(|i| copies[p.zone_of[*i]])
                .min()
                .unwrap();
            let next = *window
                .iter()
                .filter(|i| !out.contains(*i) && copies[p.zone_of[**i]] == fewest)
                .max_by_key(|i| score(key, &p.nodes[**i].position))
                .unwrap();
            copies[p.zone_of[next]] += 1;
            out.push(next);
        }
        out.iter().map(|i| p.nodes[*i].id).collect()
    }

    proptest! {
        #[test]
        fn holders_follow_the_rule_applied_to_every_node(
            nodes in 1usize..120,
            zones in 1usize..6,
            replicas in 1usize..12,
            seed: u64,
            key_seed: u64,
        ) {
            let p = network(nodes, zones, seed);
            let key = position(key_seed);
            let got: Vec<usize> = p.holders(&key, replicas).iter().map(|n| n.id).collect();
            prop_assert_eq!(&got, &holders_by_brute_force(&p, &key, replicas));
            let zones_used: std::collections::HashSet<&str> = p
                .holders(&key, replicas)
                .iter()
                .map(|n| n.zone.as_str())
                .collect();
            prop_assert_eq!(zones_used.len(), got.len().min(p.zones()));
        }
    }

    /// A join changes a key's holders only where the new node entered its zone's
    /// window: the new node takes a place, or a holder pushed out of the window is
    /// replaced by one already in it. Nothing else moves.
    #[test]
    fn a_join_moves_copies_only_where_the_new_node_entered_the_window() {
        let before = network(200, 3, 7);
        let joiner = PlacedNode {
            id: 200,
            position: position(999_999),
            zone: "z1".into(),
        };
        let mut nodes = before.nodes().to_vec();
        nodes.push(joiner.clone());
        let after = Placement::new(nodes);
        let (mut changed, mut to_others) = (0, 0);
        for k in 0..5_000 {
            let key = position(10_000 + k);
            let old: Vec<usize> = before.holders(&key, 3).iter().map(|n| n.id).collect();
            let new: Vec<usize> = after.holders(&key, 3).iter().map(|n| n.id).collect();
            let gained: Vec<usize> = new.iter().copied().filter(|n| !old.contains(n)).collect();
            if gained.is_empty() {
                continue;
            }
            changed += 1;
            let mut zone_ranked: Vec<&PlacedNode<usize>> = after
                .nodes()
                .iter()
                .filter(|n| n.zone == joiner.zone)
                .collect();
            zone_ranked.sort_by_key(|n| distance(&key, &n.position));
            let window: Vec<usize> = zone_ranked.iter().take(ZONE_WINDOW).map(|n| n.id).collect();
            assert!(
                window.contains(&200),
                "key {k}: {old:?} -> {new:?} without the joiner near"
            );
            assert!(gained.len() <= 2, "key {k}: {old:?} -> {new:?}");
            to_others += gained.iter().filter(|n| **n != 200).count();
        }
        assert!(changed > 0, "the joiner took no copies");
        assert!(
            to_others <= changed,
            "{to_others} copies to others for {changed} keys changed"
        );
    }

    #[test]
    fn fewer_nodes_than_replicas_places_on_all() {
        let p = network(2, 1, 3);
        assert_eq!(p.holders(&position(1), 3).len(), 2);
        let empty: Placement<usize> = Placement::new(Vec::new());
        assert!(empty.holders(&position(1), 3).is_empty());
    }
}
