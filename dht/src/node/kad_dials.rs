//! Kademlia's dials, bounded: libp2p-kad, wrapped, with the addresses it hands the
//! swarm for a peer it dials cut to [`DIAL_ADDRESSES_PER_PEER_MAX`], distinct.
//!
//! A lookup dials the peers the answers name, and libp2p-kad offers every address any
//! running query's answers claimed for that peer after its routing table's (at most
//! [`KAD_ADDRESSES_PER_PEER_MAX`](crate::node::config::KAD_ADDRESSES_PER_PEER_MAX),
//! `peers.rs`). The swarm has the transport dial each of them when the dial starts, and
//! libp2p's TCP transport makes the socket right there (the dial concurrency factor
//! only paces the connects): a made-up peer an answer named at ~1,600 addresses held
//! that many sockets of this thread and had a connect sent to every one — a port scan
//! by proxy, and 128 pending dials of such peers were 200,000 descriptors against a
//! bound that counted two per dial. Only Kademlia is cut: the addresses this node
//! dials on its own (bootstrap peers, a greeted peer's) are its own.
//!
//! Everything else is libp2p-kad's, delegated; `Deref` gives its methods.

use std::collections::HashSet;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{kad, Multiaddr, PeerId};

use crate::node::config::DIAL_ADDRESSES_PER_PEER_MAX;
use crate::store::ProviderStore;

/// libp2p-kad over the provider store, its dials' addresses bounded.
pub(super) struct BoundedKad {
    inner: kad::Behaviour<ProviderStore>,
}

impl BoundedKad {
    pub(super) fn new(inner: kad::Behaviour<ProviderStore>) -> BoundedKad {
        BoundedKad { inner }
    }
}

impl std::ops::Deref for BoundedKad {
    type Target = kad::Behaviour<ProviderStore>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl std::ops::DerefMut for BoundedKad {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

/// The first [`DIAL_ADDRESSES_PER_PEER_MAX`] distinct addresses of `offered`, in order
/// (libp2p-kad offers the routing table's first: the likeliest to answer).
fn bounded(offered: Vec<Multiaddr>) -> Vec<Multiaddr> {
    let mut seen = HashSet::new();
    offered
        .into_iter()
        .filter(|a| seen.insert(a.clone()))
        .take(DIAL_ADDRESSES_PER_PEER_MAX)
        .collect()
}

impl NetworkBehaviour for BoundedKad {
    type ConnectionHandler = <kad::Behaviour<ProviderStore> as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = kad::Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner
            .handle_pending_outbound_connection(
                connection_id,
                maybe_peer,
                addresses,
                effective_role,
            )
            .map(bounded)
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.inner.on_swarm_event(event)
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner
            .on_connection_handler_event(peer_id, connection_id, event)
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offered_addresses_are_cut_to_the_first_distinct_ones_in_order() {
        let at = |port: u16| -> Multiaddr { format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap() };
        let mut offered = vec![at(1), at(1), at(2)];
        offered.extend((3..2_000).map(at));
        let kept = bounded(offered);
        assert_eq!(kept.len(), DIAL_ADDRESSES_PER_PEER_MAX);
        assert_eq!(kept[..3], [at(1), at(2), at(3)]);
        assert_eq!(bounded(vec![at(9), at(9)]), vec![at(9)]);
    }
}
