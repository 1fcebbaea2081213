//! Placement: which nodes hold an object (pure: no swarm, no I/O; docs/design/replication.md).
//!
//! The holders of a key are chosen among its [`candidates`] — the live nodes closest to
//! it by Kademlia (XOR) distance, [`CANDIDATES`] (k = 20) of them — spread over zones:
//! each zone's window is its [`ZONE_WINDOW`] candidates nearest the key, and each next
//! holder is the window node with the highest [`score`] (rendezvous hashing) among the
//! zones holding the fewest copies so far. With at least `replicas` zones among the
//! candidates no two copies share a zone; with fewer, copies spread as evenly as they
//! allow. Every node that knows the same live nodes computes
//! the same holders, without asking anyone, and one Kademlia lookup of the key's closest
//! peers (libp2p-kad returns k = 20 at most) holds every candidate: a node sure of the
//! key's candidates is sure of its holders ([`holders_in_view`]). The score among the
//! candidates is what balances the load: the closest node alone would inherit whole
//! empty subtrees of the key space.
//!
//! [`Placement`] keeps the nodes sorted by position, so the closest ones to a key are
//! those of the smallest subtree of the key space (a contiguous run of the sorted
//! nodes) around the key holding enough candidates: a placement costs a binary search,
//! a sort of a few dozen nodes and a hash per candidate.

use std::collections::HashMap;

use crate::closest::{distance, DistanceKey};

/// Copies of an object at most (a limit on the `replicas` setting).
pub const REPLICAS_MAX: usize = 16;

/// The nodes closest to a key among which its holders are chosen: Kademlia's k, what
/// one libp2p-kad lookup returns (it returns no more), so one converged lookup holds a
/// key's every candidate.
pub const CANDIDATES: usize = 20;

/// Of the candidates, each zone's nearest this many (`replicas` when that is more) are its
/// window, chosen among by score.
pub const ZONE_WINDOW: usize = 8;

/// How many candidates a key has with `replicas` copies.
pub fn candidates(replicas: usize) -> usize {
    CANDIDATES.max(replicas.min(REPLICAS_MAX))
}

fn zone_window(replicas: usize) -> usize {
    ZONE_WINDOW.max(replicas.min(REPLICAS_MAX))
}

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
        Placement {
            nodes,
            zone_of,
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
        let (from, to) = self.run_around(key, candidates(replicas));
        self.pick(key, from..to, replicas)
            .into_iter()
            .map(|i| &self.nodes[i])
            .collect()
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

    /// The rule over a run of sorted nodes holding the key's candidates: the
    /// [`candidates`] closest of the run, of which each zone's [`ZONE_WINDOW`] nearest;
    /// each next holder is the window node with the highest score among the zones
    /// holding the fewest copies so far.
    fn pick(&self, key: &DistanceKey, run: std::ops::Range<usize>, replicas: usize) -> Vec<usize> {
        let mut ranked: Vec<(libp2p::kad::U256, usize)> = run
            .map(|i| (distance(key, &self.nodes[i].position), i))
            .collect();
        ranked.sort_unstable();
        ranked.truncate(candidates(replicas));
        let mut in_window = vec![0usize; self.zones];
        let scored: Vec<(usize, u64)> = ranked
            .iter()
            .filter(|(_, i)| {
                let zone = &mut in_window[self.zone_of[*i]];
                *zone += 1;
                *zone <= zone_window(replicas)
            })
            .map(|(_, i)| (*i, score(key, &self.nodes[*i].position)))
            .collect();
        let mut copies_in_zone = vec![0usize; self.zones];
        let mut used = vec![false; scored.len()];
        let mut picked = Vec::with_capacity(replicas);
        while picked.len() < replicas {
            let fewest = (0..scored.len())
                .filter(|at| !used[*at])
                .map(|at| copies_in_zone[self.zone_of[scored[at].0]])
                .min();
            let Some(fewest) = fewest else {
                return picked;
            };
            let at = (0..scored.len())
                .filter(|at| !used[*at] && copies_in_zone[self.zone_of[scored[*at].0]] == fewest)
                .max_by_key(|at| scored[*at].1)
                .expect("a candidate with the fewest copies");
            used[at] = true;
            copies_in_zone[self.zone_of[scored[at].0]] += 1;
            picked.push(scored[at].0);
        }
        picked
    }
}

/// A node a view knows near a key: its zone once greeted (`None`: not yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen<Id> {
    pub id: Id,
    pub position: DistanceKey,
    pub zone: Option<String>,
}

/// The holders a view names for a key, and whether any node it does not know could
/// change them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewHolders<Id> {
    pub holders: Vec<PlacedNode<Id>>,
    pub certain: bool,
}

/// The holders of `key` from what one node knows near it: `seen` (a lookup's peers,
/// itself, peers lost but not yet counted gone), where every node within `known_within`
/// of the key is (`None`: every node of the network is).
///
/// Only the nodes closer to the key than the first of `seen` whose zone is unknown, and
/// within `known_within`, are placed over: a node beyond them may be missing, and a
/// node the view happens to know farther out (itself, a peer lost elsewhere) must not
/// stand among the candidates for a nearer one it does not know. The answer is
/// `certain` when those nodes include the key's [`candidates`] (then the rule over them
/// is the rule over the network), or are every node there is.
pub fn holders_in_view<Id: Clone>(
    key: &DistanceKey,
    mut seen: Vec<Seen<Id>>,
    known_within: Option<libp2p::kad::U256>,
    replicas: usize,
) -> ViewHolders<Id> {
    seen.sort_by_key(|s| distance(key, &s.position));
    seen.dedup_by(|a, b| a.position == b.position);
    let known = seen
        .iter()
        .take_while(|s| {
            s.zone.is_some() && known_within.is_none_or(|r| distance(key, &s.position) <= r)
        })
        .count();
    let every_node = known_within.is_none() && known == seen.len();
    let certain = every_node || known >= candidates(replicas);
    let nodes: Vec<PlacedNode<Id>> = seen
        .into_iter()
        .take(known)
        .map(|s| PlacedNode {
            id: s.id,
            position: s.position,
            zone: s.zone.unwrap_or_default(),
        })
        .collect();
    let placement = Placement::new(nodes);
    ViewHolders {
        holders: placement
            .holders(key, replicas)
            .into_iter()
            .cloned()
            .collect(),
        certain,
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
    use libp2p::kad::U256;
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
        let mut in_window = vec![0usize; p.zones];
        let window: Vec<usize> = ranked
            .into_iter()
            .take(candidates(replicas))
            .filter(|i| {
                in_window[p.zone_of[*i]] += 1;
                in_window[p.zone_of[*i]] <= ZONE_WINDOW.max(replicas)
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
            let mut ranked: Vec<&PlacedNode<usize>> = p.nodes().iter().collect();
            ranked.sort_by_key(|n| distance(&key, &n.position));
            let candidate_zones: std::collections::HashSet<&str> = ranked
                .iter()
                .take(candidates(replicas))
                .map(|n| n.zone.as_str())
                .collect();
            prop_assert_eq!(zones_used.len(), got.len().min(candidate_zones.len()));
        }
    }

    /// A join changes a key's holders only where the new node entered its candidates:
    /// the new node takes a place, or a holder pushed out of them is replaced by one
    /// already among them. Nothing else moves.
    #[test]
    fn a_join_moves_copies_only_where_the_new_node_entered_the_candidates() {
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
            let mut ranked: Vec<&PlacedNode<usize>> = after.nodes().iter().collect();
            ranked.sort_by_key(|n| distance(&key, &n.position));
            let window: Vec<usize> = ranked.iter().take(CANDIDATES).map(|n| n.id).collect();
            // (the joiner among the candidates: it entered some zone's window or pushed
            // a node of its zone out of it)
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

    /// What a libp2p-kad lookup returns at most (its k).
    const LOOKUP: usize = 20;

    /// What a node asking `asker`'s way sees of `key`: the `lookup` nodes closest to it
    /// (a converged lookup) and itself, all greeted.
    fn view_of(
        p: &Placement<usize>,
        key: &DistanceKey,
        lookup: usize,
        asker: usize,
    ) -> Vec<Seen<usize>> {
        let mut ranked: Vec<&PlacedNode<usize>> = p.nodes().iter().collect();
        ranked.sort_by_key(|n| distance(key, &n.position));
        let mut seen: Vec<Seen<usize>> = ranked
            .iter()
            .take(lookup)
            .chain(
                p.nodes()
                    .iter()
                    .filter(|n| n.id == asker)
                    .collect::<Vec<_>>()
                    .iter(),
            )
            .map(|n| Seen {
                id: n.id,
                position: n.position,
                zone: Some(n.zone.clone()),
            })
            .collect();
        seen.dedup_by_key(|s| s.id);
        seen
    }

    fn reach(p: &Placement<usize>, key: &DistanceKey, lookup: usize) -> Option<U256> {
        let positions = p.nodes().iter().map(|n| n.position);
        (lookup < p.nodes().len())
            .then(|| crate::closest::nth_nearest(key, positions, lookup))
            .flatten()
    }

    fn ids(nodes: &[PlacedNode<usize>]) -> Vec<usize> {
        nodes.iter().map(|n| n.id).collect()
    }

    proptest! {
        /// A view sure of its holders names those every node would name over the whole
        /// network, whoever asks; and a converged lookup of k = 20 makes it sure.
        #[test]
        fn a_certain_view_names_the_holders_of_the_whole_network(
            nodes in 1usize..400,
            zones in 1usize..7,
            replicas in 1usize..5,
            seed: u64,
            key_seed: u64,
            asker: prop::sample::Index,
        ) {
            let p = network(nodes, zones, seed);
            let key = position(key_seed);
            let seen = view_of(&p, &key, LOOKUP, asker.index(nodes));
            let view = holders_in_view(&key, seen, reach(&p, &key, LOOKUP), replicas);
            let truth: Vec<usize> = p.holders(&key, replicas).iter().map(|n| n.id).collect();
            prop_assert!(view.certain);
            prop_assert_eq!(ids(&view.holders), truth);
        }
    }

    /// The view of a key from what is known around a nearby key (a page's earlier
    /// lookups): sure only when that reach, less the distance between the keys, still
    /// holds the key's candidates — and then right.
    #[test]
    fn a_view_around_one_key_places_the_keys_near_it() {
        let p = network(1_000, 6, 11);
        let first = position(50_000);
        let seen = view_of(&p, &first, 3 * LOOKUP, 0);
        let reach_first = reach(&p, &first, 3 * LOOKUP).unwrap();
        let mut sure = 0;
        for k in 0..200u64 {
            let mut key = position(60_000 + k);
            key[..2].copy_from_slice(&first[..2]);
            let reach = reach_first
                .checked_sub(distance(&first, &key))
                .unwrap_or_default();
            let view = holders_in_view(&key, seen.clone(), Some(reach), 3);
            if view.certain {
                sure += 1;
                let truth: Vec<usize> = p.holders(&key, 3).iter().map(|n| n.id).collect();
                assert_eq!(ids(&view.holders), truth, "key {k}");
            }
        }
        assert!(sure > 0, "no key near the first placed from its lookup");
    }

    #[test]
    fn a_peer_not_yet_greeted_cuts_the_view_short() {
        let p = network(300, 3, 5);
        let key = position(77);
        let mut seen = view_of(&p, &key, LOOKUP, 0);
        seen.sort_by_key(|s| distance(&key, &s.position));
        seen[6].zone = None;
        let view = holders_in_view(&key, seen.clone(), reach(&p, &key, LOOKUP), 3);
        assert!(!view.certain);
        let closest_six: Vec<usize> = seen[..6].iter().map(|s| s.id).collect();
        assert!(view.holders.iter().all(|h| closest_six.contains(&h.id)));
        seen[6].zone = Some("z0".into());
        let everyone: Vec<Seen<usize>> = p
            .nodes()
            .iter()
            .map(|n| Seen {
                id: n.id,
                position: n.position,
                zone: Some(n.zone.clone()),
            })
            .collect();
        assert!(holders_in_view(&key, everyone, None, 3).certain);
    }

    #[test]
    fn fewer_nodes_than_replicas_places_on_all() {
        let p = network(2, 1, 3);
        assert_eq!(p.holders(&position(1), 3).len(), 2);
        let empty: Placement<usize> = Placement::new(Vec::new());
        assert!(empty.holders(&position(1), 3).is_empty());
    }
}
