//! Coverage: the parts of the key space in which a page of placement lookups knows every
//! node (pure: no swarm, no I/O).
//!
//! A converged lookup for a key returns its k closest live peers, so every node within
//! the farthest one's distance of the key is known: a ball of the XOR metric, which is a
//! union of aligned subtrees of the key space (runs of positions). A page of placements
//! (a shard's sweep) looks its addresses up in position order and keeps the union of
//! their balls ([`Coverage::add_ball`]). An address is sure of its candidates once the
//! ball around it out to its k-th nearest known node lies in the union
//! ([`Coverage::covers_ball`]): no node closer than that can be unknown. One lookup's ball alone rarely holds a neighbour's candidates (its k nodes are
//! closest to the looked-up key, not to the neighbour); the union of two or three
//! adjacent ones does, so a page of many addresses over a network of `N` nodes costs
//! about `N / 10` lookups rather than one per address.

use libp2p::kad::U256;

use crate::closest::DistanceKey;

/// The union of the balls of a page's converged lookups: sorted, disjoint, merged runs
/// of positions (inclusive bounds).
#[derive(Debug, Default, Clone)]
pub struct Coverage {
    runs: Vec<(U256, U256)>,
    everything: bool,
}

impl Coverage {
    /// A converged lookup for `center` knows every node within `reach` of it (`None`:
    /// it found every node there is).
    pub fn add_ball(&mut self, center: &DistanceKey, reach: Option<U256>) {
        match reach.filter(|r| *r != U256::MAX) {
            Some(reach) => {
                self.runs.extend(ball_runs(center, reach));
                self.merge();
            }
            None => self.everything = true,
        }
    }

    /// Whether every node within `reach` of `key` is known: the ball lies in the union.
    pub fn covers_ball(&self, key: &DistanceKey, reach: U256) -> bool {
        self.everything
            || (reach != U256::MAX
                && ball_runs(key, reach).all(|(low, high)| self.covers(low, high)))
    }

    /// Whether the positions `low..=high` all lie in one run (runs are merged, so in the
    /// union).
    fn covers(&self, low: U256, high: U256) -> bool {
        let at = self.runs.partition_point(|run| run.1 < low);
        self.runs
            .get(at)
            .is_some_and(|run| run.0 <= low && high <= run.1)
    }

    fn merge(&mut self) {
        self.runs.sort_unstable();
        let mut merged: Vec<(U256, U256)> = Vec::with_capacity(self.runs.len());
        for run in self.runs.drain(..) {
            match merged.last_mut() {
                Some(last) if last.1 == U256::MAX || run.0 <= last.1 + U256::one() => {
                    last.1 = last.1.max(run.1)
                }
                _ => merged.push(run),
            }
        }
        self.runs = merged;
    }
}

/// The ball of positions within `reach` (< MAX) of `center`, as aligned runs: the
/// distances `[0, reach + 1)` are one aligned block per bit set in `reach + 1`, and XOR
/// with the center maps each to an aligned block of positions.
fn ball_runs(center: &DistanceKey, reach: U256) -> impl Iterator<Item = (U256, U256)> {
    let center = U256::from_big_endian(center);
    let end = reach + U256::one();
    (0..256).filter(move |bit| end.bit(*bit)).map(move |bit| {
        let start = end & !low_bits(bit + 1);
        let low = (start ^ center) & !low_bits(bit);
        (low, low | low_bits(bit))
    })
}

/// The lowest `bits` bits set (all of them at 256).
fn low_bits(bits: usize) -> U256 {
    match bits {
        0 => U256::zero(),
        256.. => U256::MAX,
        _ => (U256::one() << bits) - U256::one(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(value: U256) -> DistanceKey {
        value.to_big_endian()
    }

    fn u256(words: [u64; 4]) -> U256 {
        U256(words)
    }

    #[test]
    fn a_ball_covers_its_own_reach_and_no_wider_one() {
        let center = u256([0x1234, 0, 0, 0x8000_0000_0000_0000]);
        let reach = U256::from(0b1_0110u64);
        let mut coverage = Coverage::default();
        assert!(!coverage.covers_ball(&key(center), U256::zero()));
        coverage.add_ball(&key(center), Some(reach));
        assert!(coverage.covers_ball(&key(center), reach));
        assert!(!coverage.covers_ball(&key(center), reach + U256::one()));
        let edge = center ^ reach;
        assert!(coverage.covers_ball(&key(edge), U256::zero()));
        assert!(!coverage.covers_ball(&key(edge), U256::one()));
        assert!(!coverage.covers_ball(&key(center ^ U256::from(0b1_0111u64)), U256::zero()));
    }

    #[test]
    fn two_sibling_balls_cover_the_subtree_holding_both() {
        let left = U256::from(0x40u64) << 200;
        let right = left | (U256::one() << 199);
        let half = low_bits(199);
        let mut coverage = Coverage::default();
        coverage.add_ball(&key(left), Some(half));
        assert!(!coverage.covers_ball(&key(left | U256::from(7u64)), low_bits(200)));
        coverage.add_ball(&key(right), Some(half));
        assert!(coverage.covers_ball(&key(left | U256::from(7u64)), low_bits(200)));
        assert!(!coverage.covers_ball(&key(right), low_bits(201)));
    }

    #[test]
    fn a_lookup_that_found_every_node_covers_everything() {
        let mut coverage = Coverage::default();
        coverage.add_ball(&[1; 32], None);
        assert!(coverage.covers_ball(&[7; 32], U256::MAX));
        let mut whole = Coverage::default();
        whole.add_ball(&[1; 32], Some(U256::MAX));
        assert!(whole.covers_ball(&[0; 32], U256::MAX));
        let mut half = Coverage::default();
        half.add_ball(&[1; 32], Some(U256::MAX >> 1));
        assert!(!half.covers_ball(&[1; 32], U256::MAX));
    }

    fn any_u256() -> impl Strategy<Value = U256> {
        any::<[u64; 4]>().prop_map(U256)
    }

    proptest! {
        /// What a ball adds is exactly the positions within its reach.
        #[test]
        fn a_ball_covers_its_reach_and_nothing_past_it(
            center in any_u256(),
            reach_bits in 0usize..256,
            reach_low in any_u256(),
            offset in any_u256(),
        ) {
            let reach = reach_low & low_bits(reach_bits);
            let mut coverage = Coverage::default();
            coverage.add_ball(&key(center), Some(reach));
            let within = offset & low_bits(reach_bits);
            prop_assert_eq!(
                coverage.covers_ball(&key(center ^ within), U256::zero()),
                within <= reach
            );
            prop_assert!(coverage.runs.len() <= 256);
        }

        /// A ball the union covers lies inside the balls added: any point of it is
        /// within some ball's reach.
        #[test]
        fn a_covered_ball_lies_in_the_balls(
            balls in proptest::collection::vec((any_u256(), 0usize..256), 1..8),
            target in 0usize..8,
            radius_bits in 0usize..256,
            offset in any_u256(),
        ) {
            let balls: Vec<(U256, U256)> = balls
                .into_iter()
                .map(|(center, bits)| (center, low_bits(bits)))
                .collect();
            let mut coverage = Coverage::default();
            for (center, reach) in &balls {
                coverage.add_ball(&key(*center), Some(*reach));
            }
            let (center, _) = balls[target % balls.len()];
            let radius = low_bits(radius_bits);
            if coverage.covers_ball(&key(center), radius) {
                let point = center ^ (offset & radius);
                prop_assert!(balls.iter().any(|(c, r)| (*c ^ point) <= *r));
            }
        }
    }
}
