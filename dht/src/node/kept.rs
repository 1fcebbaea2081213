//! Which idle connections stay open: a libp2p behaviour whose handlers hold nothing but
//! a keep-alive flag. A connection with no stream open closes after
//! [`IDLE_CONNECTION_TIMEOUT`](crate::node::config) unless some handler on it keeps it
//! alive, and libp2p closes it from either end: one kept by its dialer alone is closed by
//! the other end. So the dialer decides, and the other end agrees within a bound:
//!
//! - a connection to a peer in this node's routing table is kept (the table is where
//!   every lookup starts: its first round's requests then need no dial) — at most
//!   [`KEPT_ROUTING_PEERS_MAX`] peers, which the table stays under in any network
//!   (k = 20 per bucket, ~log2(N / k) buckets not empty: ~130 at 1,000 nodes);
//! - an inbound connection is kept while this node keeps fewer than one and a half
//!   times its table's peers of them (at least [`KEPT_INBOUND_MIN`], at most
//!   [`KEPT_INBOUND_MAX`]) — a peer that dialed this node for a request of its own and
//!   does not keep the connection closes it itself; one that keeps it has this node in
//!   its table, and over a network a node is in as many tables, on average, as its own
//!   table holds. A node named by many more (a bootstrap peer) holds that many and no
//!   more; past them, connections close when idle, as before. A place is granted when a
//!   connection opens and kept until it closes, so a table that shrinks takes none back.
//!
//! One connection per peer is kept: two nodes that dialed each other at once hold two,
//! and both ends keep the same one — the one dialed by the smaller `PeerId` (else the
//! oldest) — so the other closes when idle (a sixth of the connections kept at 100 nodes
//! were such second ones). Nothing here dials: a routing-table peer's connection is kept
//! once a lookup or a request has opened it. How a kept connection's loss is seen is the
//! transport's (TCP keepalive and `TCP_USER_TIMEOUT`, `swarm.rs`) and ping's
//! (docs/design/dht.md).

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::DeniedUpgrade;
use libp2p::core::Endpoint;
use libp2p::swarm::handler::ConnectionEvent;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId,
    DialFailure, FromSwarm, ListenFailure, NetworkBehaviour, NotifyHandler, SubstreamProtocol,
    THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

use crate::node::config::{
    KEPT_INBOUND_MAX, KEPT_INBOUND_MIN, KEPT_INBOUND_PER_TABLE_PEER_TENTHS, KEPT_ROUTING_PEERS_MAX,
};

/// One open connection as the behaviour sees it.
#[derive(Debug, Clone, Copy)]
struct Kept {
    peer: PeerId,
    /// Dialed by the peer.
    inbound: bool,
    /// An inbound connection granted one of the inbound places.
    inbound_place: bool,
    /// What its handler was last told.
    kept: bool,
}

pub(super) struct KeptConnections {
    local: PeerId,
    routing: HashSet<PeerId>,
    connections: HashMap<ConnectionId, Kept>,
    inbound_places_taken: usize,
    to_handlers: VecDeque<(PeerId, ConnectionId, bool)>,
}

impl KeptConnections {
    pub(super) fn new(local: PeerId) -> Self {
        Self {
            local,
            routing: HashSet::new(),
            connections: HashMap::new(),
            inbound_places_taken: 0,
            to_handlers: VecDeque::new(),
        }
    }

    /// A peer entered the routing table (`RoutingUpdated`); `evicted` left it.
    pub(super) fn on_routing_updated(&mut self, peer: PeerId, evicted: Option<PeerId>) {
        if let Some(old) = evicted {
            self.routing.remove(&old);
            self.retell(old);
        }
        if self.routing.len() < KEPT_ROUTING_PEERS_MAX && self.routing.insert(peer) {
            self.retell(peer);
        }
    }

    /// Connections kept open while idle.
    pub(super) fn kept_count(&self) -> usize {
        self.connections.values().filter(|c| c.kept).count()
    }

    fn should_keep(&self, id: ConnectionId, connection: &Kept) -> bool {
        (connection.inbound_place || self.routing.contains(&connection.peer))
            && self.preferred(connection.peer) == Some(id)
    }

    /// Of `peer`'s connections, the one both ends keep: dialed by the smaller id of the
    /// two, else the oldest (ids grow; the ends may then differ, and both close when idle).
    fn preferred(&self, peer: PeerId) -> Option<ConnectionId> {
        let smaller = self.local.min(peer);
        self.connections
            .iter()
            .filter(|(_, c)| c.peer == peer)
            .min_by_key(|(id, c)| {
                let dialer = if c.inbound { peer } else { self.local };
                (dialer != smaller, **id)
            })
            .map(|(id, _)| *id)
    }

    /// Tells the handlers of `peer`'s connections whose keeping changed.
    fn retell(&mut self, peer: PeerId) {
        let changed: Vec<(ConnectionId, bool)> = self
            .connections
            .iter()
            .filter(|(_, c)| c.peer == peer)
            .map(|(id, c)| (*id, self.should_keep(*id, c)))
            .filter(|(id, keep)| self.connections[id].kept != *keep)
            .collect();
        for (id, keep) in changed {
            if let Some(c) = self.connections.get_mut(&id) {
                c.kept = keep;
            }
            self.to_handlers.push_back((peer, id, keep));
        }
    }

    /// Inbound connections this node keeps while its table holds `self.routing`.
    fn inbound_places(&self) -> usize {
        (self.routing.len() * KEPT_INBOUND_PER_TABLE_PEER_TENTHS / 10)
            .clamp(KEPT_INBOUND_MIN, KEPT_INBOUND_MAX)
    }

    fn established(&mut self, id: ConnectionId, peer: PeerId, inbound: bool) -> KeepAliveHandler {
        let inbound_place = inbound && self.inbound_places_taken < self.inbound_places();
        if inbound_place {
            self.inbound_places_taken += 1;
        }
        let connection = Kept {
            peer,
            inbound,
            inbound_place,
            kept: false,
        };
        self.connections.insert(id, connection);
        let keep = self.should_keep(id, &connection);
        if let Some(c) = self.connections.get_mut(&id) {
            c.kept = keep;
        }
        // A second connection to the peer may take the first one's place.
        self.retell(peer);
        KeepAliveHandler { keep }
    }

    fn closed(&mut self, id: ConnectionId) {
        if let Some(c) = self.connections.remove(&id) {
            if c.inbound_place {
                self.inbound_places_taken -= 1;
            }
            self.retell(c.peer);
        }
    }
}

impl NetworkBehaviour for KeptConnections {
    type ConnectionHandler = KeepAliveHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.established(id, peer, true))
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.established(id, peer, false))
    }

    /// A connection this behaviour accepted may still be denied by a behaviour after it
    /// (the swarm then reports a dial or listen failure, not a close): either way it is
    /// forgotten and its inbound place freed.
    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            | FromSwarm::DialFailure(DialFailure { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.closed(connection_id)
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        match self.to_handlers.pop_front() {
            Some((peer_id, id, keep)) => Poll::Ready(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(id),
                event: keep,
            }),
            None => Poll::Pending,
        }
    }
}

/// A connection's share of [`KeptConnections`]: no protocol, only whether to keep it.
pub(super) struct KeepAliveHandler {
    keep: bool,
}

impl ConnectionHandler for KeepAliveHandler {
    type FromBehaviour = bool;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<DeniedUpgrade> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.keep
    }

    fn on_behaviour_event(&mut self, keep: bool) {
        self.keep = keep;
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, (), Infallible>> {
        Poll::Pending
    }

    fn on_connection_event(&mut self, event: ConnectionEvent<DeniedUpgrade, DeniedUpgrade>) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(n) => match n.protocol {},
            ConnectionEvent::FullyNegotiatedOutbound(n) => match n.protocol {},
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        PeerId::random()
    }

    fn kept_by(local: PeerId) -> KeptConnections {
        KeptConnections::new(local)
    }

    fn told(kept: &mut KeptConnections) -> Vec<(ConnectionId, bool)> {
        kept.to_handlers
            .drain(..)
            .map(|(_, id, keep)| (id, keep))
            .collect()
    }

    #[test]
    fn an_outbound_connection_is_kept_while_its_peer_is_in_the_routing_table() {
        let mut kept = kept_by(peer());
        let (a, b) = (peer(), peer());
        let id = ConnectionId::new_unchecked(1);
        assert!(!kept.established(id, a, false).keep);
        kept.on_routing_updated(a, None);
        assert_eq!(told(&mut kept), vec![(id, true)]);
        assert_eq!(kept.kept_count(), 1);
        kept.on_routing_updated(b, Some(a));
        assert_eq!(told(&mut kept), vec![(id, false)]);
        assert_eq!(kept.kept_count(), 0);
        // A routing-table peer's next connection is kept from the start.
        let next = ConnectionId::new_unchecked(2);
        assert!(kept.established(next, b, false).keep);
        assert!(told(&mut kept).is_empty());
    }

    /// Opens inbound connections from new peers, ids from `first`, until one is not kept;
    /// how many were.
    fn inbound_kept_from(kept: &mut KeptConnections, first: usize) -> usize {
        (first..)
            .take_while(|n| {
                kept.established(ConnectionId::new_unchecked(*n), peer(), true)
                    .keep
            })
            .count()
    }

    #[test]
    fn inbound_connections_are_kept_up_to_their_bound_and_free_their_place_on_close() {
        let mut kept = kept_by(peer());
        assert_eq!(inbound_kept_from(&mut kept, 0), KEPT_INBOUND_MIN);
        let over = ConnectionId::new_unchecked(KEPT_INBOUND_MIN);
        let over_peer = peer();
        assert!(!kept.established(over, over_peer, true).keep);
        // Past the bound, an inbound connection is still kept for the routing table.
        kept.on_routing_updated(over_peer, None);
        assert_eq!(told(&mut kept), vec![(over, true)]);
        kept.closed(ConnectionId::new_unchecked(0));
        kept.closed(over);
        let again = ConnectionId::new_unchecked(1_000);
        assert!(kept.established(again, peer(), true).keep);
        assert_eq!(kept.kept_count(), KEPT_INBOUND_MIN);
    }

    #[test]
    fn inbound_places_are_half_as_many_again_as_the_table_holds_within_bounds() {
        let mut kept = kept_by(peer());
        for _ in 0..100 {
            kept.on_routing_updated(peer(), None);
        }
        assert_eq!(inbound_kept_from(&mut kept, 0), 150);
        // A table at its bound: the inbound bound.
        for _ in 100..KEPT_ROUTING_PEERS_MAX {
            kept.on_routing_updated(peer(), None);
        }
        assert_eq!(inbound_kept_from(&mut kept, 1_000), KEPT_INBOUND_MAX - 150);
        assert_eq!(kept.inbound_places_taken, KEPT_INBOUND_MAX);
    }

    #[test]
    fn of_two_connections_to_a_peer_both_ends_keep_the_one_the_smaller_id_dialed() {
        let (x, y) = (peer(), peer());
        let (smaller, larger) = (x.min(y), x.max(y));
        let mut at_smaller = kept_by(smaller);
        let mut at_larger = kept_by(larger);
        at_smaller.on_routing_updated(larger, None);
        at_larger.on_routing_updated(smaller, None);
        // Each dialed the other at once: at each end one connection is outbound, one inbound.
        let (a, b) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        // The larger's own dial opened first at both ends.
        assert!(at_smaller.established(a, larger, true).keep);
        assert!(at_larger.established(a, smaller, false).keep);
        assert!(at_smaller.established(b, larger, false).keep);
        assert_eq!(
            told(&mut at_smaller),
            vec![(a, false)],
            "the smaller's dial wins"
        );
        assert!(at_larger.established(b, smaller, true).keep);
        assert_eq!(told(&mut at_larger), vec![(a, false)]);
        assert_eq!((at_smaller.kept_count(), at_larger.kept_count()), (1, 1));
        // The kept one closes: the other is kept again.
        at_smaller.closed(b);
        assert_eq!(told(&mut at_smaller), vec![(a, true)]);
    }

    #[test]
    fn a_connection_denied_after_it_was_accepted_frees_its_inbound_place() {
        let mut kept = kept_by(peer());
        let id = ConnectionId::new_unchecked(7);
        assert!(kept.established(id, peer(), true).keep);
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        kept.on_swarm_event(FromSwarm::ListenFailure(ListenFailure {
            local_addr: &addr,
            send_back_addr: &addr,
            error: &libp2p::swarm::ListenError::Aborted,
            connection_id: id,
            peer_id: None,
        }));
        assert_eq!((kept.kept_count(), kept.inbound_places_taken), (0, 0));
    }

    #[test]
    fn the_routing_peers_kept_are_bounded() {
        let mut kept = kept_by(peer());
        let peers: Vec<PeerId> = (0..KEPT_ROUTING_PEERS_MAX + 1).map(|_| peer()).collect();
        for p in &peers {
            kept.on_routing_updated(*p, None);
        }
        let last = ConnectionId::new_unchecked(0);
        assert!(
            !kept
                .established(last, peers[KEPT_ROUTING_PEERS_MAX], false)
                .keep
        );
        let first = ConnectionId::new_unchecked(1);
        assert!(kept.established(first, peers[0], false).keep);
    }
}
