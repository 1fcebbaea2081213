//! The table of greeted peers: where each serves, its zone and its place in the key
//! space, as its greeting said — at most [`PEERS_MAX`] peers in all,
//! [`PEERS_PER_HOST_MAX`] per public host and [`PEERS_PER_SITE_MAX`] per IPv6 site (a
//! /48, which a tunnel broker hands out for free).
//!
//! What the table holds moves placement and the acceptance of copies: a greeted peer is
//! a proven provider, a placement candidate, one of the nodes counted nearer a key than
//! this one (copies it is asked to hold are refused past a window of those). Peer ids
//! cost nothing to make, so without a per-host limit one host greeting under thousands of
//! fresh ids (and leaving) filled the table: placements named its ids for `peer_dead`,
//! and this node counted them nearer than itself, refusing honest copies as `NotHolder`.
//! A host is what quotas count ([`quota_address`]: an IPv4 address, an IPv6 /64); a host
//! at its limit that greets under a new id has its oldest id forgotten (a node restarted
//! with a new key takes its old one's place). Loopback, private (RFC 1918, RFC 4193) and
//! link-local hosts are not limited — many nodes on one machine or one private network are
//! an operator's own, as in the network harness — like libp2p-kad-dht's IP diversity
//! filter, which leaves private addresses alone.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use ron_link::policy::{is_own_network, quota_address};

use crate::closest::DistanceKey;
use crate::node::config::{PEERS_MAX, PEERS_PER_HOST_MAX, PEERS_PER_SITE_MAX};
use crate::protocol::Ports;

/// Where a peer serves and its zone, from its greeting.
#[derive(Debug, Clone)]
pub(super) struct KnownPeer {
    pub(super) ip: IpAddr,
    pub(super) ports: Ports,
    pub(super) zone: String,
    /// Its position in the key space (placement, acceptance of copies).
    pub(super) position: DistanceKey,
    /// When it was last heard from: its greeting, a ping it answered, its last
    /// connection's close.
    pub(super) seen: Instant,
}

/// Greeted peers; see the module doc.
#[derive(Debug, Default)]
pub(super) struct GreetedPeers {
    peers: HashMap<PeerId, KnownPeer>,
    /// The peers of each limited host, oldest greeting first.
    by_host: HashMap<IpAddr, VecDeque<PeerId>>,
    /// The same per IPv6 site (/48).
    by_site: HashMap<IpAddr, VecDeque<PeerId>>,
}

/// The host a peer at `ip` counts under, `None` where hosts are not limited.
pub(super) fn limited_host(ip: IpAddr) -> Option<IpAddr> {
    (!is_own_network(ip)).then(|| quota_address(ip))
}

/// The IPv6 site (/48) a limited host is in — a tunnel broker hands one out for free:
/// 65,536 /64s, each a host — `None` for IPv4.
pub(super) fn site_of(host: IpAddr) -> Option<IpAddr> {
    match host {
        IpAddr::V6(v6) => Some(IpAddr::V6(Ipv6Addr::from_bits(
            v6.to_bits() & !((1u128 << 80) - 1),
        ))),
        IpAddr::V4(_) => None,
    }
}

/// Remembers `peer` in `group`'s list, forgetting the group's oldest past `max`; returns
/// the one to forget.
fn join_group(
    groups: &mut HashMap<IpAddr, VecDeque<PeerId>>,
    group: IpAddr,
    peer: PeerId,
    max: usize,
) -> Option<PeerId> {
    let ids = groups.entry(group).or_default();
    let oldest = (ids.len() >= max).then(|| ids.front().copied()).flatten();
    ids.push_back(peer);
    oldest
}

fn leave_group(groups: &mut HashMap<IpAddr, VecDeque<PeerId>>, group: IpAddr, peer: &PeerId) {
    if let Some(ids) = groups.get_mut(&group) {
        ids.retain(|p| p != peer);
        if ids.is_empty() {
            groups.remove(&group);
        }
    }
}

impl GreetedPeers {
    pub fn get(&self, peer: &PeerId) -> Option<&KnownPeer> {
        self.peers.get(peer)
    }

    pub fn contains_key(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// Whether a greeted peer came from `ip`.
    pub fn any_at(&self, ip: IpAddr) -> bool {
        self.peers.values().any(|known| known.ip == ip)
    }

    /// The positions of the peers connected now (`connected`) or heard from within
    /// `within` before `now`: those still likely in the network.
    pub fn positions_present(
        &self,
        now: Instant,
        within: Duration,
        connected: impl Fn(&PeerId) -> bool,
    ) -> Vec<DistanceKey> {
        self.peers
            .iter()
            .filter(|(peer, known)| {
                now.saturating_duration_since(known.seen) < within || connected(peer)
            })
            .map(|(_, known)| known.position)
            .collect()
    }

    /// `peer` was heard from (a ping answered, its last connection closed).
    pub fn touch(&mut self, peer: &PeerId) {
        if let Some(known) = self.peers.get_mut(peer) {
            known.seen = Instant::now();
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Remembers `peer`'s greeting; returns the peers forgotten to make room for it (its
    /// host's oldest past [`PEERS_PER_HOST_MAX`], its IPv6 site's past
    /// [`PEERS_PER_SITE_MAX`], the stalest past [`PEERS_MAX`]).
    pub fn insert(&mut self, peer: PeerId, known: KnownPeer) -> Vec<PeerId> {
        let host = limited_host(known.ip);
        let moved = self
            .peers
            .get(&peer)
            .is_some_and(|was| limited_host(was.ip) != host);
        if moved {
            self.forget(&peer);
        }
        let mut forgotten = Vec::new();
        if !self.peers.contains_key(&peer) {
            if let Some(host) = host {
                let oldest = join_group(&mut self.by_host, host, peer, PEERS_PER_HOST_MAX);
                forgotten.extend(oldest.filter(|oldest| self.forget(oldest)));
                if let Some(site) = site_of(host) {
                    let oldest = join_group(&mut self.by_site, site, peer, PEERS_PER_SITE_MAX);
                    forgotten.extend(oldest.filter(|oldest| self.forget(oldest)));
                }
            }
            if self.peers.len() >= PEERS_MAX {
                // The one heard from longest ago goes (a peer forgotten is greeted again
                // when next connected).
                let stalest = self
                    .peers
                    .iter()
                    .filter(|(p, _)| **p != peer)
                    .min_by_key(|(_, known)| known.seen)
                    .map(|(p, _)| *p);
                forgotten.extend(stalest.filter(|stalest| self.forget(stalest)));
            }
        }
        self.peers.insert(peer, known);
        debug_assert!(self.peers.len() <= PEERS_MAX);
        forgotten
    }

    /// Forgets `peer`; returns whether it was greeted.
    fn forget(&mut self, peer: &PeerId) -> bool {
        let Some(known) = self.peers.remove(peer) else {
            return false;
        };
        if let Some(host) = limited_host(known.ip) {
            leave_group(&mut self.by_host, host, peer);
            if let Some(site) = site_of(host) {
                leave_group(&mut self.by_site, site, peer);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use crate::closest::peer_position;

    use super::*;

    fn known(peer: &PeerId, ip: &str) -> KnownPeer {
        KnownPeer {
            ip: ip.parse().unwrap(),
            ports: Ports { p2p: 1, oap: 2 },
            zone: "z".into(),
            position: peer_position(peer),
            seen: Instant::now(),
        }
    }

    fn greet(table: &mut GreetedPeers, ip: &str) -> (PeerId, Vec<PeerId>) {
        let peer = PeerId::random();
        let forgotten = table.insert(peer, known(&peer, ip));
        (peer, forgotten)
    }

    #[test]
    fn a_public_host_keeps_its_latest_ids_only() {
        let mut table = GreetedPeers::default();
        let ids: Vec<PeerId> = (0..PEERS_PER_HOST_MAX)
            .map(|_| greet(&mut table, "198.51.100.7").0)
            .collect();
        let (other, forgotten) = greet(&mut table, "198.51.100.8");
        assert!(forgotten.is_empty(), "another host");
        let (newest, forgotten) = greet(&mut table, "198.51.100.7");
        assert_eq!(forgotten, vec![ids[0]], "its oldest");
        assert!(!table.contains_key(&ids[0]));
        assert!(table.contains_key(&newest) && table.contains_key(&other));
        assert_eq!(table.len(), PEERS_PER_HOST_MAX + 1);
        // A greeting again from a known id takes nobody's place.
        let again = known(&ids[1], "198.51.100.7");
        assert!(table.insert(ids[1], again).is_empty());
        // A /64 is one host, whatever address in it a peer takes.
        for n in 0..PEERS_PER_HOST_MAX + 3 {
            greet(&mut table, &format!("2001:db8:5:5::{n:x}"));
        }
        let forgotten = greet(&mut table, "2001:db8:5:5:ffff::1").1;
        assert_eq!(forgotten.len(), 1);
        assert_eq!(table.len(), 2 * PEERS_PER_HOST_MAX + 1);
    }

    #[test]
    fn an_ipv6_site_keeps_four_hosts_worth_of_ids() {
        let mut table = GreetedPeers::default();
        let mut first = None;
        for n in 0..PEERS_PER_SITE_MAX {
            let (peer, forgotten) = greet(&mut table, &format!("2001:db8:7:{n:x}::1"));
            assert!(forgotten.is_empty(), "one id a /64");
            first.get_or_insert(peer);
        }
        let (_, forgotten) = greet(&mut table, "2001:db8:7:ffff::1");
        assert_eq!(forgotten, vec![first.unwrap()], "the site's oldest");
        assert!(
            greet(&mut table, "2001:db8:8::1").1.is_empty(),
            "another site"
        );
        assert_eq!(table.len(), PEERS_PER_SITE_MAX + 1);
    }

    #[test]
    fn own_machines_and_private_networks_are_not_limited() {
        let mut table = GreetedPeers::default();
        let own = [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.9",
            "::ffff:127.0.0.2",
            "fd00::1",
            "::1",
            "fe80::1",
        ];
        for ip in own {
            for _ in 0..PEERS_PER_HOST_MAX + 2 {
                assert!(greet(&mut table, ip).1.is_empty(), "{ip}");
            }
        }
        assert_eq!(table.len(), own.len() * (PEERS_PER_HOST_MAX + 2));
    }

    #[test]
    fn a_peer_that_moves_counts_at_its_new_host() {
        let mut table = GreetedPeers::default();
        let (moving, _) = greet(&mut table, "198.51.100.7");
        for _ in 1..PEERS_PER_HOST_MAX {
            greet(&mut table, "198.51.100.7");
        }
        table.insert(moving, known(&moving, "203.0.113.1"));
        // Its old host has room for one more again.
        assert!(greet(&mut table, "198.51.100.7").1.is_empty());
        assert_eq!(table.get(&moving).unwrap().ip.to_string(), "203.0.113.1");
    }

    #[test]
    fn peers_not_heard_from_for_long_are_not_counted_present() {
        let mut table = GreetedPeers::default();
        let (heard, _) = greet(&mut table, "192.0.2.1");
        let (silent, _) = greet(&mut table, "192.0.2.2");
        let (connected, _) = greet(&mut table, "192.0.2.3");
        let hour = Duration::from_secs(3_600);
        assert_eq!(
            table
                .positions_present(Instant::now(), hour, |_| false)
                .len(),
            3
        );
        // Two hours on, only `heard` was heard from meanwhile.
        let later = Instant::now() + 2 * hour;
        table.peers.get_mut(&heard).unwrap().seen = later;
        let mut present = table.positions_present(later, hour, |p| *p == connected);
        let mut expected = vec![peer_position(&heard), peer_position(&connected)];
        present.sort();
        expected.sort();
        assert_eq!(present, expected);
        // Heard from again (a ping answered): present again.
        table.touch(&silent);
        let present = table.positions_present(Instant::now(), hour, |_| false);
        assert!(present.contains(&peer_position(&silent)));
    }

    #[test]
    fn a_full_table_forgets_the_peer_heard_from_longest_ago() {
        let mut table = GreetedPeers::default();
        let mut stalest = None;
        let later = Instant::now() + Duration::from_secs(60);
        for n in 0..PEERS_MAX {
            let (peer, _) = greet(&mut table, &format!("10.0.{}.{}", n >> 8, n & 255));
            match n {
                1_000 => stalest = Some(peer),
                _ => table.peers.get_mut(&peer).unwrap().seen = later,
            }
        }
        let (_, forgotten) = greet(&mut table, "10.99.0.1");
        assert_eq!(forgotten, vec![stalest.unwrap()]);
    }

    #[test]
    fn the_whole_table_is_bounded() {
        let mut table = GreetedPeers::default();
        for n in 0..PEERS_MAX + 10 {
            let ip = format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255);
            greet(&mut table, &ip);
        }
        assert_eq!(table.len(), PEERS_MAX);
    }
}
