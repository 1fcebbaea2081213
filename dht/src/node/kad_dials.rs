//! Kademlia's dials, bounded: libp2p-kad, wrapped, with the addresses it hands the
//! swarm for a peer it dials cut to [`DIAL_ADDRESSES_PER_PEER_MAX`], distinct, and to
//! the networks this node is in.
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
//! An address in one of an operator's own networks — loopback, a private block (each
//! RFC 1918 block, and the shared 100.64/10 Tailscale uses), link-local, a unique-local
//! /48 — is dialed only once this node has had a connection with that network (either
//! way: a bootstrap peer, a peer that dialed in). A public node's lookups otherwise
//! dialed whatever private addresses the answers named: services on its own host and its
//! hosting provider's network, the scans of private ranges that get IPFS nodes abuse
//! reports (Kubo's `server` profile filters them by hand). A node in a private cluster,
//! or a harness on loopback, dials its own network as before; public addresses are
//! dialed as they come.
//!
//! Everything else is libp2p-kad's, delegated; `Deref` gives its methods.

use std::collections::HashSet;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::ConnectionEstablished;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{kad, Multiaddr, PeerId};

use crate::node::config::DIAL_ADDRESSES_PER_PEER_MAX;
use crate::store::ProviderStore;

/// Own networks remembered at most (a host is in a few; unique-local /48s are the only
/// kind there can be many of).
const OWN_NETWORKS_MAX: usize = 64;

/// libp2p-kad over the provider store, its dials' addresses bounded.
pub(super) struct BoundedKad {
    inner: kad::Behaviour<ProviderStore>,
    /// The own networks this node has had a connection with since its start.
    joined: HashSet<OwnNetwork>,
}

impl BoundedKad {
    pub(super) fn new(inner: kad::Behaviour<ProviderStore>) -> BoundedKad {
        BoundedKad {
            inner,
            joined: HashSet::new(),
        }
    }
}

/// One of an operator's own networks: a dial into it needs a connection with it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum OwnNetwork {
    Loopback,
    /// An IPv4 block, by its first address: 10/8, 172.16/12, 192.168/16, 100.64/10.
    PrivateV4(u32),
    LinkLocal,
    /// A unique-local IPv6 /48, by its prefix.
    UniqueLocal(u64),
}

const PRIVATE_V4_BLOCKS: [(u32, u32); 4] = [
    (0x0a00_0000, 8),
    (0xac10_0000, 12),
    (0xc0a8_0000, 16),
    (0x6440_0000, 10),
];

/// The own network `ip` is in; `None` for a public address.
fn own_network(ip: IpAddr) -> Option<OwnNetwork> {
    match ip.to_canonical() {
        IpAddr::V4(v4) if v4.is_loopback() => Some(OwnNetwork::Loopback),
        IpAddr::V4(v4) if v4.is_link_local() => Some(OwnNetwork::LinkLocal),
        IpAddr::V4(v4) => PRIVATE_V4_BLOCKS
            .into_iter()
            .find(|(block, len)| v4.to_bits() >> (32 - len) == block >> (32 - len))
            .map(|(block, _)| OwnNetwork::PrivateV4(block)),
        IpAddr::V6(v6) if v6.is_loopback() => Some(OwnNetwork::Loopback),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some(OwnNetwork::LinkLocal),
        IpAddr::V6(v6) if v6.is_unique_local() => {
            Some(OwnNetwork::UniqueLocal((v6.to_bits() >> 80) as u64))
        }
        IpAddr::V6(_) => None,
    }
}

fn ip_of(address: &Multiaddr) -> Option<IpAddr> {
    match address.iter().next()? {
        Protocol::Ip4(v4) => Some(IpAddr::V4(v4)),
        Protocol::Ip6(v6) => Some(IpAddr::V6(v6)),
        _ => None,
    }
}

/// Remembers the own network a connection's other end is in.
fn note_connection(joined: &mut HashSet<OwnNetwork>, remote: &Multiaddr) {
    if let Some(network) = ip_of(remote).and_then(own_network) {
        if joined.len() < OWN_NETWORKS_MAX {
            joined.insert(network);
        }
    }
}

/// Whether `address` may be dialed: a public one, or one in a network joined.
fn dialable(joined: &HashSet<OwnNetwork>, address: &Multiaddr) -> bool {
    ip_of(address)
        .and_then(own_network)
        .is_none_or(|network| joined.contains(&network))
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

/// The first [`DIAL_ADDRESSES_PER_PEER_MAX`] distinct dialable addresses of `offered`,
/// in order (libp2p-kad offers the routing table's first: the likeliest to answer).
fn bounded(joined: &HashSet<OwnNetwork>, offered: Vec<Multiaddr>) -> Vec<Multiaddr> {
    let mut seen = HashSet::new();
    offered
        .into_iter()
        .filter(|a| dialable(joined, a) && seen.insert(a.clone()))
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
            .map(|offered| bounded(&self.joined, offered))
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
        if let FromSwarm::ConnectionEstablished(ConnectionEstablished { endpoint, .. }) = event {
            note_connection(&mut self.joined, endpoint.get_remote_address());
        }
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

    fn at(ip: &str, port: u16) -> Multiaddr {
        let ip: IpAddr = ip.parse().unwrap();
        Multiaddr::empty().with(ip.into()).with(Protocol::Tcp(port))
    }

    #[test]
    fn offered_addresses_are_cut_to_the_first_distinct_ones_in_order() {
        let public = |port| at("192.0.2.1", port);
        let mut offered = vec![public(1), public(1), public(2)];
        offered.extend((3..2_000).map(public));
        let kept = bounded(&HashSet::new(), offered);
        assert_eq!(kept.len(), DIAL_ADDRESSES_PER_PEER_MAX);
        assert_eq!(kept[..3], [public(1), public(2), public(3)]);
    }

    #[test]
    fn own_networks_are_dialed_once_joined_and_public_addresses_always() {
        let offered = || {
            let ips = [
                "8.8.8.8",
                "127.0.0.1",
                "10.1.2.3",
                "172.20.0.1",
                "192.168.1.1",
                "100.100.1.1",
                "169.254.1.1",
                "fd12:3456:789a::1",
                "fe80::1",
                "::1",
                "2001:db8::1",
            ];
            ips.map(|ip| at(ip, 9)).to_vec()
        };
        let mut joined = HashSet::new();
        let public = [at("8.8.8.8", 9), at("2001:db8::1", 9)];
        assert_eq!(bounded(&joined, offered()), public);
        for remote in ["127.0.0.9", "10.200.0.1", "fd12:3456:789a:ffff::2"] {
            note_connection(&mut joined, &at(remote, 1));
        }
        let own = ["127.0.0.1", "10.1.2.3", "fd12:3456:789a::1", "::1"].map(|ip| at(ip, 9));
        let dialed = bounded(&joined, offered());
        assert_eq!(dialed.len(), 6, "{dialed:?}");
        assert!(
            public.iter().chain(&own).all(|a| dialed.contains(a)),
            "{dialed:?}"
        );
        // Another unique-local /48, another RFC 1918 block: not joined.
        assert!(!dialable(&joined, &at("fd12:3456:789b::1", 9)));
        assert!(!dialable(&joined, &at("172.16.0.1", 9)));
        // An IPv4-mapped IPv6 address is its IPv4 address.
        assert!(dialable(&joined, &at("::ffff:10.9.9.9", 9)));
    }
}
