//! Resolves: an admin thread's "who provides this object?" as a Kademlia
//! `get_providers` query, at most [`RESOLVES_MAX`] at once. Providers not greeted yet
//! are dialed while the query still holds their addresses; a resolve is answered when
//! its query is done and those greetings arrived (or [`GREETING_WAIT`] passed), or at
//! its own deadline — whichever comes first — with each provider's node id and OAP
//! address.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libp2p::kad::{QueryId, RecordKey};
use libp2p::PeerId;
use ron_link::dht::{Provider, ResolveError, ResolveReply};

use crate::node::config::{GREETING_WAIT, RESOLVES_MAX};
use crate::node::state::{Node, Resolve};

impl Node {
    pub(super) fn start_resolve(
        &mut self,
        key: RecordKey,
        limit: usize,
        deadline_ms: u64,
        reply: ResolveReply,
    ) {
        if self.resolves.len() >= RESOLVES_MAX {
            reply.send(Err(ResolveError::TooManyLookups(RESOLVES_MAX)));
            return;
        }
        let now = Instant::now();
        let query = self.swarm.behaviour_mut().kad.get_providers(key.clone());
        self.resolves.insert(
            query,
            Resolve {
                key,
                limit,
                started: now,
                deadline: now + Duration::from_millis(deadline_ms),
                found: Vec::new(),
                query_done: false,
                greeting_deadline: None,
                reply,
            },
        );
    }

    pub(super) fn on_providers_found(&mut self, query: QueryId, providers: HashSet<PeerId>) {
        let Some(resolve) = self.resolves.get_mut(&query) else {
            return;
        };
        let mut dial = Vec::new();
        for peer in providers {
            if resolve.found.len() < resolve.limit && !resolve.found.contains(&peer) {
                resolve.found.push(peer);
                if peer != self.local && !self.peers.contains_key(&peer) {
                    dial.push(peer);
                }
            }
        }
        let enough = resolve.found.len() >= resolve.limit;
        for peer in dial {
            // The query still holds the addresses its answers carried for this peer.
            let _ = self.swarm.dial(peer);
        }
        if enough {
            if let Some(mut running) = self.swarm.behaviour_mut().kad.query_mut(&query) {
                running.finish();
            }
        }
    }

    pub(super) fn on_providers_done(&mut self, query: QueryId) {
        if let Some(resolve) = self.resolves.get_mut(&query) {
            resolve.query_done = true;
            resolve.greeting_deadline = Some(Instant::now() + GREETING_WAIT);
        }
        self.answer_due_resolves();
    }

    /// Answers the resolves whose query is done and whose providers' greetings arrived
    /// (or stopped being worth waiting for), and those past their deadline.
    pub(super) fn answer_due_resolves(&mut self) {
        let now = Instant::now();
        let due: Vec<QueryId> = self
            .resolves
            .iter()
            .filter(|(_, r)| {
                let greeted = r
                    .found
                    .iter()
                    .all(|p| *p == self.local || self.peers.contains_key(p));
                let waited = r.greeting_deadline.is_some_and(|at| now >= at);
                now >= r.deadline || (r.query_done && (greeted || waited))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(resolve) = self.resolves.remove(&id) {
                if let Some(mut running) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                    running.finish();
                }
                self.answer(resolve);
            }
        }
    }

    fn answer(&self, resolve: Resolve) {
        let elapsed_ms = u64::try_from(resolve.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.metrics.record_lookup(elapsed_ms, resolve.found.len());
        let providers = resolve
            .found
            .iter()
            .map(|peer| self.provider(peer))
            .collect();
        tracing::debug!(key = ?resolve.key, elapsed_ms, "dht: resolved");
        resolve.reply.send(Ok(providers));
    }

    pub(super) fn provider(&self, peer: &PeerId) -> Provider {
        let local = *peer == self.local;
        let (oap, zone) = match (local, self.peers.get(peer)) {
            (true, _) => (Some(self.oap), Some(self.zone.clone())),
            (false, Some(p)) => (
                Some(SocketAddr::new(p.ip, p.ports.oap)),
                Some(p.zone.clone()),
            ),
            (false, None) => (None, None),
        };
        Provider {
            node_id: peer.to_base58(),
            oap,
            zone: zone.filter(|z| !z.is_empty()),
            local,
        }
    }
}
