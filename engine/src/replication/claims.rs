//! Holders' claims to a copy, kept from one pass of the sweep to the next: a holder asked
//! for a copy that answers `held` is audited at the next check of the object, and one
//! that fails that audit claimed a copy it cannot show (a liar, or a node whose copy or
//! port is broken). Named by the placement, it would keep the object a copy short for
//! good — asked every pass, answering `held` every time — so the sweep has the DHT
//! thread leave it out of this node's placements for a while
//! (`DhtClient::leave_out`), and the next node of the view takes the copy.

use std::collections::HashMap;

use ron_codec::Address;
use ron_link::dht::Provider;

/// Copies peers asked this shard to hold that it remembers at once (the oldest
/// forgotten first): the other side of a claim. This shard answered `held` when a peer
/// asked (`/ron/replicate/1`); the asker audits the copy at the object's next check of
/// its own, and leaves out for an hour a holder that fails it. A copy this node's own
/// placement does not name was demoted at its next pass — before the asker's audit, when
/// the two views differ for a while (a join, a lookup that missed a peer under loss) —
/// and an honest node was left out of the asker's placements as a liar, the asker then
/// naming others (itself) for its keys and keeping copies no other node's placement
/// named. Such a copy is not demoted within a grace of a few sweep intervals of the
/// last request (`Replication::asked_to_hold`): long enough for the asker's audit to find
/// it, short enough that views which agree again soon leave no extra copy for long.
pub(super) const ASKED_TO_HOLD_MAX: usize = 4_096;

/// Objects whose claims a shard remembers; past it, new claims are not remembered (their
/// holders are audited all the same, and a liar among them is caught on a later pass).
pub(super) const CLAIMED_OBJECTS_MAX: usize = 4_096;

/// Per object: the holders (node ids) that last answered `held` when asked for a copy.
#[derive(Debug, Default)]
pub(super) struct HeldClaims {
    by_object: HashMap<Address, Vec<String>>,
}

impl HeldClaims {
    /// Remembers the holders other than this node in `held_by` as claiming a copy of
    /// `addr` (replacing what was remembered for it).
    pub(super) fn remember(&mut self, addr: Address, held_by: &[Provider]) {
        let claimed: Vec<String> = held_by
            .iter()
            .filter(|p| !p.local)
            .map(|p| p.node_id.clone())
            .collect();
        if claimed.is_empty() {
            self.by_object.remove(&addr);
            return;
        }
        if self.by_object.len() < CLAIMED_OBJECTS_MAX || self.by_object.contains_key(&addr) {
            self.by_object.insert(addr, claimed);
        }
    }

    /// The holders that claimed a copy of `addr`, forgotten here: one check judges them.
    pub(super) fn take(&mut self, addr: &Address) -> Vec<String> {
        self.by_object.remove(addr).unwrap_or_default()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_object.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(id: &str, local: bool) -> Provider {
        Provider {
            node_id: id.into(),
            oap: None,
            zone: None,
            local,
        }
    }

    #[test]
    fn claims_are_taken_once_and_bounded() {
        let mut claims = HeldClaims::default();
        let a = Address::of(b"a");
        claims.remember(a, &[provider("me", true), provider("liar", false)]);
        assert_eq!(claims.take(&a), vec!["liar".to_string()]);
        assert!(claims.take(&a).is_empty(), "judged once");
        claims.remember(a, &[provider("me", true)]);
        assert_eq!(claims.len(), 0, "only this node: nothing to judge");
        for i in 0..CLAIMED_OBJECTS_MAX as u32 + 10 {
            claims.remember(Address::of(&i.to_le_bytes()), &[provider("p", false)]);
        }
        assert_eq!(claims.len(), CLAIMED_OBJECTS_MAX);
    }
}
