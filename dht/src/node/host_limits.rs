//! Inbound connections per host: at most [`PENDING_INBOUND_PER_HOST_MAX`] still in their
//! handshake and [`INBOUND_PER_HOST_MAX`] established from one public host (an IPv4
//! address, an IPv6 /64), and four times that from one IPv6 site (a /48, which a tunnel
//! broker hands out for free: 65,536 /64s), beside libp2p's limits in all ([`PENDING_INBOUND_MAX`],
//! [`INBOUND_CONNECTIONS_MAX`]) and per peer id. Peer ids cost nothing to make, and a TCP
//! connection that never sends a noise byte nothing at all: without a limit per host, one
//! host held every pending slot (64 connects in each 10 s handshake timeout) or every
//! established one (512 fresh ids), and this node refused every honest peer's dial — a
//! bootstrap node so held lets no new node join. Hosts that are not limited are those of
//! the greeting table (`greeted_peers.rs`): loopback, private and link-local addresses,
//! an operator's own machines.
//!
//! [`PENDING_INBOUND_MAX`]: crate::node::config::PENDING_INBOUND_MAX
//! [`INBOUND_CONNECTIONS_MAX`]: crate::node::config::INBOUND_CONNECTIONS_MAX

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint, Multiaddr};
use libp2p::swarm::behaviour::ConnectionEstablished;
use libp2p::swarm::{
    dummy, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure,
    NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::PeerId;

use crate::node::address::tcp_socket;
use crate::node::config::{
    INBOUND_PER_HOST_MAX, INBOUND_PER_SITE_MAX, PENDING_INBOUND_PER_HOST_MAX,
    PENDING_INBOUND_PER_SITE_MAX,
};
use crate::node::greeted_peers::{limited_host, site_of};

/// Connections counted per host (or per site).
#[derive(Debug, Default)]
struct PerHost {
    host_of: HashMap<ConnectionId, IpAddr>,
    count: HashMap<IpAddr, usize>,
}

impl PerHost {
    fn count(&self, host: IpAddr) -> usize {
        self.count.get(&host).copied().unwrap_or(0)
    }

    fn add(&mut self, connection: ConnectionId, host: IpAddr) {
        if self.host_of.insert(connection, host).is_none() {
            *self.count.entry(host).or_default() += 1;
        }
    }

    fn remove(&mut self, connection: &ConnectionId) {
        let Some(host) = self.host_of.remove(connection) else {
            return;
        };
        if let Some(n) = self.count.get_mut(&host) {
            *n -= 1;
            if *n == 0 {
                self.count.remove(&host);
            }
        }
    }
}

/// The limited host a connection's remote address is on, if it is one.
fn host_of(remote: &Multiaddr) -> Option<IpAddr> {
    tcp_socket(remote).and_then(|socket| limited_host(socket.ip()))
}

fn deny(what: &'static str, from: IpAddr, limit: usize, per: &str) -> ConnectionDenied {
    ConnectionDenied::new(std::io::Error::other(format!(
        "{what} connections from {from}: at the limit of {limit} per {per}"
    )))
}

/// Connections from hosts and from sites, and the limits on each.
#[derive(Debug, Default)]
struct Counted {
    hosts: PerHost,
    sites: PerHost,
}

impl Counted {
    /// Why one more connection from `host` is refused, if it is.
    fn refusal(
        &self,
        what: &'static str,
        host: IpAddr,
        (host_max, site_max): (usize, usize),
    ) -> Option<ConnectionDenied> {
        if self.hosts.count(host) >= host_max {
            return Some(deny(what, host, host_max, "host"));
        }
        let site = site_of(host).filter(|site| self.sites.count(*site) >= site_max)?;
        Some(deny(what, site, site_max, "IPv6 /48"))
    }

    fn add(&mut self, connection: ConnectionId, host: IpAddr) {
        self.hosts.add(connection, host);
        if let Some(site) = site_of(host) {
            self.sites.add(connection, site);
        }
    }

    fn remove(&mut self, connection: &ConnectionId) {
        self.hosts.remove(connection);
        self.sites.remove(connection);
    }
}

/// The behaviour; see the module doc.
#[derive(Debug, Default)]
pub(super) struct HostLimits {
    pending: Counted,
    established: Counted,
}

impl NetworkBehaviour for HostLimits {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(host) = host_of(remote) else {
            return Ok(());
        };
        let limits = (PENDING_INBOUND_PER_HOST_MAX, PENDING_INBOUND_PER_SITE_MAX);
        if let Some(refused) = self.pending.refusal("pending", host, limits) {
            return Err(refused);
        }
        self.pending.add(connection, host);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.pending.remove(&connection);
        let limits = (INBOUND_PER_HOST_MAX, INBOUND_PER_SITE_MAX);
        let refused = host_of(remote).and_then(|h| self.established.refusal("inbound", h, limits));
        match refused {
            Some(refused) => Err(refused),
            None => Ok(dummy::ConnectionHandler),
        }
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                connection_id,
                endpoint: ConnectedPoint::Listener { send_back_addr, .. },
                ..
            }) => {
                if let Some(host) = host_of(send_back_addr) {
                    self.established.add(connection_id, host);
                }
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                self.established.remove(&connection_id);
            }
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.pending.remove(&connection_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use libp2p::swarm::ListenError;

    use super::*;

    fn addr(ip: &str, port: u16) -> Multiaddr {
        format!(
            "/{}/{ip}/tcp/{port}",
            if ip.contains(':') { "ip6" } else { "ip4" }
        )
        .parse()
        .unwrap()
    }

    fn local() -> Multiaddr {
        addr("192.0.2.1", 4001)
    }

    /// An inbound connection's endpoint, from `remote`.
    fn inbound_from(remote: &Multiaddr) -> ConnectedPoint {
        ConnectedPoint::Listener {
            local_addr: local(),
            send_back_addr: remote.clone(),
        }
    }

    /// What a refusal says (its source: libp2p's own text is "connection denied").
    fn reason(refused: &ConnectionDenied) -> String {
        std::error::Error::source(refused).unwrap().to_string()
    }

    fn failed(limits: &mut HostLimits, connection: ConnectionId, remote: &Multiaddr) {
        let error = ListenError::Aborted;
        limits.on_swarm_event(FromSwarm::ListenFailure(ListenFailure {
            local_addr: &local(),
            send_back_addr: remote,
            error: &error,
            connection_id: connection,
            peer_id: None,
        }));
    }

    fn established(limits: &mut HostLimits, connection: ConnectionId, remote: &Multiaddr) -> bool {
        let peer = PeerId::random();
        let accepted = limits
            .handle_established_inbound_connection(connection, peer, &local(), remote)
            .is_ok();
        if accepted {
            let endpoint = inbound_from(remote);
            limits.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id: peer,
                connection_id: connection,
                endpoint: &endpoint,
                failed_addresses: &[],
                other_established: 0,
            }));
        }
        accepted
    }

    fn closed(limits: &mut HostLimits, connection: ConnectionId, remote: &Multiaddr) {
        let endpoint = inbound_from(remote);
        limits.on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
            peer_id: PeerId::random(),
            connection_id: connection,
            endpoint: &endpoint,
            cause: None,
            remaining_established: 0,
        }));
    }

    #[test]
    fn a_host_holds_at_most_its_share_of_pending_handshakes() {
        let mut limits = HostLimits::default();
        let pending = |limits: &mut HostLimits, n: usize, remote: &Multiaddr| {
            let connection = ConnectionId::new_unchecked(n);
            limits
                .handle_pending_inbound_connection(connection, &local(), remote)
                .is_ok()
        };
        let host = |port| addr("198.51.100.7", port);
        for n in 0..PENDING_INBOUND_PER_HOST_MAX {
            assert!(pending(&mut limits, n, &host(40_000 + n as u16)));
        }
        let refused = limits
            .handle_pending_inbound_connection(ConnectionId::new_unchecked(99), &local(), &host(1))
            .expect_err("past the limit");
        assert_eq!(
            reason(&refused),
            "pending connections from 198.51.100.7: at the limit of 4 per host"
        );
        assert!(
            pending(&mut limits, 100, &addr("198.51.100.8", 1)),
            "another host"
        );
        assert!(pending(&mut limits, 101, &addr("127.0.0.1", 1)), "loopback");
        // A handshake that failed, and one that finished, leave room.
        failed(&mut limits, ConnectionId::new_unchecked(0), &host(40_000));
        assert!(pending(&mut limits, 102, &host(2)));
        assert!(established(
            &mut limits,
            ConnectionId::new_unchecked(1),
            &host(40_001)
        ));
        assert!(pending(&mut limits, 103, &host(3)));
        assert!(!pending(&mut limits, 104, &host(4)));
    }

    #[test]
    fn an_ipv6_site_holds_at_most_four_hosts_worth() {
        let mut limits = HostLimits::default();
        // One connection from each of many /64s of one /48.
        let host = |n: usize| addr(&format!("2001:db8:7:{n:x}::1"), 4001);
        for n in 0..INBOUND_PER_SITE_MAX {
            assert!(established(
                &mut limits,
                ConnectionId::new_unchecked(n),
                &host(n)
            ));
        }
        let refused = limits
            .handle_established_inbound_connection(
                ConnectionId::new_unchecked(999),
                PeerId::random(),
                &local(),
                &host(999),
            )
            .err()
            .expect("past the site's limit");
        assert_eq!(
            reason(&refused),
            format!(
                "inbound connections from 2001:db8:7::: at the limit of {INBOUND_PER_SITE_MAX} \
                 per IPv6 /48"
            )
        );
        let other_site = addr("2001:db8:8::1", 4001);
        assert!(established(
            &mut limits,
            ConnectionId::new_unchecked(1_000),
            &other_site
        ));
        closed(&mut limits, ConnectionId::new_unchecked(0), &host(0));
        assert!(established(
            &mut limits,
            ConnectionId::new_unchecked(1_001),
            &host(1_001)
        ));
    }

    #[test]
    fn a_host_holds_at_most_its_share_of_established_connections() {
        let mut limits = HostLimits::default();
        let v6 = |n: usize| addr(&format!("2001:db8:9:9::{n:x}"), 4001);
        for n in 0..INBOUND_PER_HOST_MAX {
            assert!(established(
                &mut limits,
                ConnectionId::new_unchecked(n),
                &v6(n)
            ));
        }
        assert!(
            !established(&mut limits, ConnectionId::new_unchecked(50), &v6(50)),
            "a /64 is one host"
        );
        for n in 0..INBOUND_PER_HOST_MAX + 4 {
            let own = addr("10.0.0.9", 5_000 + n as u16);
            assert!(established(
                &mut limits,
                ConnectionId::new_unchecked(100 + n),
                &own
            ));
        }
        closed(&mut limits, ConnectionId::new_unchecked(3), &v6(3));
        assert!(established(
            &mut limits,
            ConnectionId::new_unchecked(51),
            &v6(51)
        ));
    }
}
