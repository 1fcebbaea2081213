//! Placement lookups: which nodes the placement names for a key, as an operator asks
//! (`/admin/placement`). One `get_closest_peers` lookup of the key's
//! [`PUBLISH_LOOKUP_PEERS`] closest peers (it connects to them, which greets them), then
//! the placement among those whose zone is known and this node, answered once every
//! peer found is greeted or [`GREETING_WAIT`] passed, or at the request's deadline. At
//! most [`RESOLVES_MAX`] at once.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use libp2p::kad::QueryId;
use libp2p::PeerId;
use ron_link::dht::{ResolveError, ResolveReply};

use crate::node::address::record_key;
use crate::node::config::{GREETING_WAIT, PUBLISH_LOOKUP_PEERS, RESOLVES_MAX};
use crate::node::state::{Node, PlacementLookup};
use crate::store::distance_key;

impl Node {
    pub(super) fn start_placement(
        &mut self,
        addr: [u8; 32],
        deadline_ms: u64,
        reply: ResolveReply,
    ) {
        if self.placements.len() >= RESOLVES_MAX {
            reply.send(Err(ResolveError::TooManyLookups(RESOLVES_MAX)));
            return;
        }
        let peers = NonZeroUsize::new(PUBLISH_LOOKUP_PEERS).expect("2k > 0");
        let query = self
            .swarm
            .behaviour_mut()
            .kad
            .get_n_closest_peers(record_key(&addr).to_vec(), peers);
        let lookup = PlacementLookup {
            addr,
            deadline: Instant::now() + Duration::from_millis(deadline_ms),
            deadline_ms,
            found: None,
            reply,
        };
        self.placements.insert(query, lookup);
    }

    /// Whether `query` is a placement lookup (then its peers are taken here).
    pub(super) fn on_placement_peers(&mut self, query: QueryId, peers: Vec<PeerId>) -> bool {
        let Some(lookup) = self.placements.get_mut(&query) else {
            return false;
        };
        let peers: Vec<PeerId> = peers.into_iter().filter(|p| *p != self.local).collect();
        lookup.found = Some((peers, Instant::now() + GREETING_WAIT));
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
                    || lookup.found.as_ref().is_some_and(|(peers, wait_until)| {
                        now >= *wait_until || peers.iter().all(|p| self.peers.contains_key(p))
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

    /// The placement among the lookup's peers; none when the lookup had not answered by
    /// the deadline (a placement of this node alone would name the wrong holders).
    fn answer_placement(&self, lookup: PlacementLookup) {
        let Some((peers, _)) = lookup.found else {
            lookup
                .reply
                .send(Err(ResolveError::Timeout(lookup.deadline_ms)));
            return;
        };
        let placement = self.placement_among(&peers);
        let key = distance_key(&record_key(&lookup.addr));
        let holders = placement
            .holders(&key, self.replicas)
            .into_iter()
            .map(|holder| self.provider(&holder.id.unwrap_or(self.local)))
            .collect();
        lookup.reply.send(Ok(holders));
    }
}
