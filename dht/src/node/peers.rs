//! The peers this node talks to: the IP each connection came from, the greeting a
//! dialer sends on every new connection (each side learns the other's ports), the
//! table of greeted peers (`node/greeted_peers.rs`), and the batches of keys peers send over
//! `/ron/provide/2`, stored as their provider records at the address their connection
//! came from.

use std::sync::atomic::Ordering;
use std::time::Instant;

use libp2p::core::ConnectedPoint;
use libp2p::request_response;
use libp2p::swarm::{ConnectionError, ConnectionId};
use libp2p::PeerId;
use libp2p::{identify, kad, ping};

use crate::closest::peer_position;
use crate::node::address::{identified_addresses, oap_multiaddr, tcp_multiaddr, tcp_socket};
use crate::node::config::{
    ALIVE_WITHIN, KAD_ADDRESSES_PER_PEER_MAX, KAD_PROTOCOL, PEERS_MAX, PROVIDER_TTL,
};
use crate::node::greeted_peers::KnownPeer;
use crate::node::provide_budget::Sender;
use crate::node::state::Node;
use crate::protocol::{Ports, ProvideRequest, ProvideResponse};

/// Whether a connection ended because the kernel gave up on its peer (`ETIMEDOUT`:
/// keepalive probes or data unacknowledged past `TCP_USER_TIMEOUT`) — the peer cut off,
/// as an unanswered ping says — rather than closed by it, which reads as another I/O
/// error. The timeout comes up through noise and yamux, each wrapping the last.
fn closed_by_timeout(cause: &ConnectionError) -> bool {
    match cause {
        ConnectionError::IO(e) => timed_out(e),
        ConnectionError::KeepAliveTimeout => false,
    }
}

fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(io) = error.downcast_ref::<std::io::Error>() {
        if io.kind() == std::io::ErrorKind::TimedOut {
            return true;
        }
        if let Some(inner) = io.get_ref() {
            return timed_out(inner);
        }
    }
    error.source().is_some_and(timed_out)
}

impl Node {
    pub(super) fn on_connected(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        endpoint: &ConnectedPoint,
    ) {
        if let Some(socket) = tcp_socket(endpoint.get_remote_address()) {
            self.connections.insert(connection, socket.ip());
            self.store().peer_connected(peer, socket.ip());
        }
        self.lost.remove(&peer);
        self.contact_failed = false;
        if endpoint.is_dialer() {
            // The greeting: the other side learns our ports, we learn its ports.
            let greeting = ProvideRequest {
                ports: self.ports,
                zone: self.zone.clone(),
                keys: Vec::new(),
            };
            self.swarm
                .behaviour_mut()
                .provide
                .send_request(&peer, greeting);
        }
        self.on_connected_join(endpoint.is_dialer());
        self.provide_early_to(peer);
    }

    /// Remembers a peer's ports at the IP its connection came from, and its zone, and
    /// tells Kademlia where it listens.
    fn learn_peer(&mut self, peer: PeerId, connection: ConnectionId, ports: Ports, zone: String) {
        let Some(ip) = self.connections.get(&connection).copied() else {
            return;
        };
        let newly_greeted = !self.peers.contains_key(&peer);
        tracing::debug!(%peer, %ip, oap = ports.oap, zone = %zone, "dht: greeted");
        let position = peer_position(&peer);
        let known = KnownPeer {
            ip,
            ports,
            zone,
            position,
            seen: Instant::now(),
        };
        for forgotten in self.peers.insert(peer, known) {
            self.lost.remove(&forgotten);
        }
        self.tell_kad(&peer, tcp_multiaddr(ip, ports.p2p));
        // A resolve or placement may have been waiting for this greeting only (a peer
        // greeted before was counted then: every request it sends greets again).
        if newly_greeted {
            self.answer_due_resolves();
            self.answer_due_placements();
        }
    }

    /// A peer's identify answer: when it speaks our Kademlia, Kademlia learns where it
    /// listens — the IP its connection came from with the ports it claims (as for the
    /// greeting: a peer cannot point others at a third host). How a standard libp2p
    /// peer that never sends ron's greeting gets into the routing table.
    pub(super) fn on_identify(&mut self, event: identify::Event) {
        let identify::Event::Received {
            connection_id,
            peer_id,
            info,
        } = event
        else {
            return;
        };
        if !info.protocols.contains(&KAD_PROTOCOL) {
            return;
        }
        let Some(ip) = self.connections.get(&connection_id).copied() else {
            return;
        };
        tracing::debug!(peer = %peer_id, agent = %info.agent_version, "dht: identified");
        for address in identified_addresses(ip, &info.listen_addrs) {
            self.tell_kad(&peer_id, address);
        }
    }

    /// Tells Kademlia `peer` listens at `address`, keeping at most
    /// [`KAD_ADDRESSES_PER_PEER_MAX`] addresses of it (the oldest go). Kademlia keeps
    /// every address it is given, and names all of a peer's in each answer it gives:
    /// a peer that greeted with one port after another (a claim costs a message) grew
    /// every answer naming it past what receivers read (16 KiB), and the lookups of
    /// keys near its id failed at the nodes that knew it.
    fn tell_kad(&mut self, peer: &PeerId, address: libp2p::Multiaddr) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        kad.add_address(peer, address);
        let known: Vec<libp2p::Multiaddr> = kad
            .kbucket(*peer)
            .and_then(|bucket| {
                bucket
                    .iter()
                    .find(|entry| entry.node.key.preimage() == peer)
                    .map(|entry| entry.node.value.iter().cloned().collect())
            })
            .unwrap_or_default();
        let over = known.len().saturating_sub(KAD_ADDRESSES_PER_PEER_MAX);
        for old in &known[..over] {
            kad.remove_address(peer, old);
        }
    }

    /// A ping answered marks the peer alive (liveness for placement and repair). A ping
    /// unanswered closes its connection (libp2p's ping only reports it): across a
    /// partition a TCP connection whose segments are dropped stays open for many minutes,
    /// the peer is never counted lost, and when the network heals the first segment
    /// through waits out TCP's retransmission backoff (tens of seconds) — a fresh dial
    /// after the close connects at once (docs/design/faults.md).
    pub(super) fn on_ping(&mut self, event: ping::Event) {
        match event.result {
            Ok(_) => {
                self.peers.touch(&event.peer);
                if self.alive.len() >= PEERS_MAX && !self.alive.contains_key(&event.peer) {
                    self.forget_silent_peers();
                }
                if self.alive.len() < PEERS_MAX {
                    self.alive.insert(event.peer, Instant::now());
                }
            }
            Err(ping::Failure::Unsupported) => {}
            Err(e) => {
                tracing::debug!(peer = %event.peer, "dht: ping failed, connection closed: {e}");
                self.contact_failed = true;
                self.swarm.close_connection(event.connection);
            }
        }
    }

    /// A connection closed: a peer whose last one it was is lost (`on_lost`), and one
    /// the kernel gave up on says this node may be cut off (`contact_failed`).
    pub(super) fn on_closed(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        num_established: u32,
        cause: Option<&ConnectionError>,
    ) {
        if cause.is_some_and(closed_by_timeout) {
            tracing::debug!(%peer, "dht: connection timed out (TCP keepalive)");
            self.contact_failed = true;
        }
        self.connections.remove(&connection);
        if num_established == 0 {
            self.peers.touch(&peer);
            self.store().peer_disconnected(&peer);
            self.on_lost(peer);
        }
    }

    /// Peers whose last ping answer is recent enough (those that are not are forgotten).
    /// A greeted peer's last connection closed: from now, placements name it for
    /// `peer_dead` more (`lost_but_not_dead`), then it is counted gone.
    pub(super) fn on_lost(&mut self, peer: PeerId) {
        if self.peer_dead.is_zero() || !self.peers.contains_key(&peer) {
            return;
        }
        let peer_dead = self.peer_dead;
        self.lost.retain(|_, at| at.elapsed() < peer_dead);
        if self.lost.len() < PEERS_MAX {
            self.lost.insert(peer, Instant::now());
        }
    }

    /// Greeted peers lost less than `peer_dead` ago: not found by lookups, not yet gone.
    pub(super) fn lost_but_not_dead(&self) -> impl Iterator<Item = &PeerId> {
        let peer_dead = self.peer_dead;
        self.lost
            .iter()
            .filter(move |(_, at)| at.elapsed() < peer_dead)
            .map(|(peer, _)| peer)
    }

    pub(super) fn count_alive(&mut self) -> usize {
        self.forget_silent_peers();
        self.alive.len()
    }

    fn forget_silent_peers(&mut self) {
        self.alive.retain(|_, at| at.elapsed() < ALIVE_WITHIN);
    }

    pub(super) fn on_provide(
        &mut self,
        event: request_response::Event<ProvideRequest, ProvideResponse>,
    ) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                connection_id,
                message:
                    Message::Request {
                        mut request,
                        channel,
                        ..
                    },
            } => {
                let zone = std::mem::take(&mut request.zone);
                self.learn_peer(peer, connection_id, request.ports, zone);
                let stored = self.store_provided_by(peer, connection_id, request);
                let response = ProvideResponse {
                    ports: self.ports,
                    zone: self.zone.clone(),
                    stored,
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .provide
                    .send_response(channel, response);
            }
            Event::Message {
                peer,
                connection_id,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
            } => {
                self.learn_peer(peer, connection_id, response.ports, response.zone);
                self.on_published(request_id, Some(usize::from(response.stored)));
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, "dht: /ron/provide/2 request failed: {error}");
                self.metrics
                    .provide_requests_failed_total
                    .fetch_add(1, Ordering::Relaxed);
                self.on_published(request_id, None);
            }
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "dht: /ron/provide/2 inbound failed: {error}");
            }
            Event::ResponseSent { .. } => {}
        }
    }

    /// Stores a provider record per key of a batch, for the peer that sent it, at the
    /// address its connection came from: its libp2p port and its OAP/1 port there, so
    /// that a resolve can name the provider without dialing it for its greeting.
    fn store_provided_by(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        request: ProvideRequest,
    ) -> u16 {
        if request.keys.is_empty() {
            return 0;
        }
        let Some(ip) = self.connections.get(&connection).copied() else {
            return 0;
        };
        let mut keys = request.keys;
        let wanted = keys.len() as u64;
        let granted = self
            .provide_budget
            .take(Sender::of(ip, peer), wanted, Instant::now());
        if granted < wanted {
            keys.truncate(granted as usize);
            self.metrics
                .provided_keys_throttled_total
                .fetch_add(wanted - granted, Ordering::Relaxed);
        }
        let addresses = vec![
            tcp_multiaddr(ip, request.ports.p2p),
            oap_multiaddr(ip, request.ports.oap),
        ];
        let expires = Some(Instant::now() + PROVIDER_TTL);
        let records = keys
            .into_iter()
            .map(|key| kad::ProviderRecord {
                key,
                provider: peer,
                expires,
                addresses: addresses.clone(),
            })
            .collect();
        let stored = self.store().add_providers(records);
        u16::try_from(stored).unwrap_or(u16::MAX)
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    /// An error that wraps another as its source, as yamux's does an I/O error.
    #[derive(Debug)]
    struct Wrapped(io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "connection error")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_connection_the_kernel_timed_out_is_told_from_one_closed() {
        let timed_out = || io::Error::from(io::ErrorKind::TimedOut);
        let cases = [
            (ConnectionError::IO(timed_out()), true),
            (
                ConnectionError::IO(io::Error::other(Wrapped(timed_out()))),
                true,
            ),
            (
                ConnectionError::IO(io::Error::other(io::Error::other(timed_out()))),
                true,
            ),
            (
                ConnectionError::IO(io::Error::from(io::ErrorKind::ConnectionReset)),
                false,
            ),
            (
                ConnectionError::IO(io::Error::other(Wrapped(
                    io::ErrorKind::UnexpectedEof.into(),
                ))),
                false,
            ),
            (ConnectionError::KeepAliveTimeout, false),
        ];
        for (cause, want) in cases {
            assert_eq!(closed_by_timeout(&cause), want, "{cause:?}");
        }
    }
}
