//! How ron names peers and objects to libp2p: a `--peer` as a multiaddr, a socket
//! address as `/ip…/tcp/…` and back, the `/p2p/` id in a multiaddr, and an object's
//! record key.

use std::net::{IpAddr, SocketAddr};

use libp2p::kad::RecordKey;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use crate::error::DhtError;

/// Listen addresses taken from one identify answer (a peer may claim many).
const IDENTIFIED_ADDRESSES_MAX: usize = 4;

/// Parses a `--peer`: `HOST:PORT` (an IP address) or a multiaddr such as
/// `/ip4/10.0.0.2/tcp/4001/p2p/12D3Koo…`.
pub fn parse_peer(text: &str) -> Result<Multiaddr, DhtError> {
    if text.starts_with('/') {
        let addr: Multiaddr = text.parse().map_err(|source| DhtError::PeerMultiaddr {
            text: text.to_owned(),
            source,
        })?;
        return match tcp_socket(&addr) {
            Some(_) => Ok(addr),
            None => Err(DhtError::PeerNotTcp {
                text: text.to_owned(),
            }),
        };
    }
    let socket: SocketAddr = text.parse().map_err(|source| DhtError::PeerSocket {
        text: text.to_owned(),
        source,
    })?;
    Ok(tcp_multiaddr(socket.ip(), socket.port()))
}

pub(super) fn tcp_multiaddr(ip: IpAddr, port: u16) -> Multiaddr {
    let mut addr = Multiaddr::empty();
    addr.push(match ip {
        IpAddr::V4(v4) => Protocol::Ip4(v4),
        IpAddr::V6(v6) => Protocol::Ip6(v6),
    });
    addr.push(Protocol::Tcp(port));
    addr
}

/// The IP and TCP port of an `/ip…/tcp/…[/p2p/…]` multiaddr: a libp2p TCP address,
/// what libp2p's TCP transport dials (an OAP/1 address, [`oap_multiaddr`], is not one).
pub(super) fn tcp_socket(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut parts = addr.iter();
    let socket = ip_and_port(&mut parts)?;
    match (parts.next(), parts.next()) {
        (None, _) | (Some(Protocol::P2p(_)), None) => Some(socket),
        _ => None,
    }
}

/// What ends a provider record's address for the provider's OAP/1 listener:
/// `/ip…/tcp/PORT/sni/oap`. ron's own convention (ron's DHT is its own network): no
/// libp2p transport dials an address with a component after the TCP port other than
/// `/p2p/` (libp2p's TCP transport refuses it as unsupported; `sni` without `tls`
/// names no transport at all), so the address rides beside the provider's libp2p one
/// and only ron reads it.
const OAP_MARKER: &str = "oap";

/// The address of an OAP/1 listener, as a provider record carries it (docs/design/dht.md,
/// "Lookup": a resolve names a provider from it without dialing it).
pub(super) fn oap_multiaddr(ip: IpAddr, port: u16) -> Multiaddr {
    tcp_multiaddr(ip, port).with(Protocol::Sni(OAP_MARKER.into()))
}

/// The socket of an [`oap_multiaddr`], with or without the `/p2p/` id a Kademlia answer
/// appends to a peer's addresses; `None` for any other address.
pub(super) fn oap_socket(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut parts = addr.iter();
    let socket = ip_and_port(&mut parts)?;
    match (parts.next()?, parts.next(), parts.next()) {
        (Protocol::Sni(name), None | Some(Protocol::P2p(_)), None) if name == OAP_MARKER => {
            Some(socket)
        }
        _ => None,
    }
}

fn ip_and_port<'a>(parts: &mut impl Iterator<Item = Protocol<'a>>) -> Option<SocketAddr> {
    let ip = match parts.next()? {
        Protocol::Ip4(v4) => IpAddr::V4(v4),
        Protocol::Ip6(v6) => IpAddr::V6(v6),
        _ => return None,
    };
    match parts.next()? {
        Protocol::Tcp(port) => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

/// Where a peer that reached us on `ip` listens, from the listen addresses its identify
/// answer claims: the connection's IP with each distinct TCP port claimed, at most
/// [`IDENTIFIED_ADDRESSES_MAX`] (a claimed IP is never taken).
pub(crate) fn identified_addresses(ip: IpAddr, claimed: &[Multiaddr]) -> Vec<Multiaddr> {
    let mut ports: Vec<u16> = Vec::new();
    for port in claimed
        .iter()
        .filter_map(|a| tcp_socket(a).map(|s| s.port()))
    {
        if !ports.contains(&port) && ports.len() < IDENTIFIED_ADDRESSES_MAX {
            ports.push(port);
        }
    }
    ports.into_iter().map(|p| tcp_multiaddr(ip, p)).collect()
}

/// A provider record's addresses for a provider that reached us on `ip`: its libp2p
/// addresses as [`identified_addresses`] keeps them, then the first OAP/1 address it
/// claims ([`oap_multiaddr`]), at the same IP (a claimed IP is never taken).
pub(crate) fn record_addresses(
    ip: IpAddr,
    claimed: &[Multiaddr],
    addresses_max: usize,
) -> Vec<Multiaddr> {
    let mut addresses = identified_addresses(ip, claimed);
    let oap = claimed.iter().find_map(oap_socket);
    // At most `addresses_max` in all, the OAP/1 address (the one ron fetches from)
    // among them: the store keeps the first ones, and it came last.
    addresses.truncate(addresses_max.saturating_sub(usize::from(oap.is_some())));
    addresses.extend(oap.map(|socket| oap_multiaddr(ip, socket.port())));
    addresses
}

pub(super) fn peer_in(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

/// ron's record key for an object: the multihash of its BLAKE3 address (code 0x1e).
pub fn record_key(addr: &[u8; 32]) -> RecordKey {
    let mut bytes = Vec::with_capacity(34);
    bytes.extend_from_slice(&[0x1e, 0x20]);
    bytes.extend_from_slice(addr);
    RecordKey::new(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identified_addresses_keep_the_connection_ip_and_the_claimed_ports() {
        let claimed: Vec<Multiaddr> = [
            "/ip4/203.0.113.9/tcp/4001",
            "/ip6/::1/tcp/4001",
            "/ip4/10.0.0.1/tcp/4002/p2p/12D3KooWLRPJAA5o6Z6RwQprCXpX8FMTQKR5NoUzLQMC2LuXkxP6",
            "/ip4/10.0.0.1/udp/4003/quic-v1",
            "/dns4/example.com/tcp/4004",
            "/ip4/10.0.0.1/tcp/5001",
            "/ip4/10.0.0.1/tcp/5002",
            "/ip4/10.0.0.1/tcp/5003",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let ip: IpAddr = "127.0.0.7".parse().unwrap();
        let got: Vec<String> = identified_addresses(ip, &claimed)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(
            got,
            [
                "/ip4/127.0.0.7/tcp/4001",
                "/ip4/127.0.0.7/tcp/4002",
                "/ip4/127.0.0.7/tcp/5001",
                "/ip4/127.0.0.7/tcp/5002"
            ]
        );
        assert!(identified_addresses(ip, &[]).is_empty());
    }

    /// A provider claiming four libp2p ports and its OAP/1 port: the record keeps the
    /// OAP/1 address (the store keeps the first four; it was the fifth, and dropped).
    #[test]
    fn a_record_keeps_the_oap_address_beside_many_ports() {
        let claimed: Vec<Multiaddr> = [
            "/ip4/10.0.0.1/tcp/5001",
            "/ip4/10.0.0.1/tcp/5002",
            "/ip4/10.0.0.1/tcp/5003",
            "/ip4/10.0.0.1/tcp/5004",
            "/ip4/10.0.0.1/tcp/7000/sni/oap",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let ip: IpAddr = "127.0.0.7".parse().unwrap();
        let kept = record_addresses(ip, &claimed, 4);
        assert!(kept.len() <= 4, "{kept:?}");
        assert_eq!(
            kept.iter().find_map(oap_socket),
            Some("127.0.0.7:7000".parse().unwrap())
        );
    }

    #[test]
    fn peers_parse_from_host_port_and_multiaddr() {
        assert_eq!(
            parse_peer("127.0.0.1:4001").unwrap().to_string(),
            "/ip4/127.0.0.1/tcp/4001"
        );
        assert_eq!(
            parse_peer("[::1]:4001").unwrap().to_string(),
            "/ip6/::1/tcp/4001"
        );
        let id = PeerId::random();
        let full = format!("/ip4/10.0.0.2/tcp/4001/p2p/{id}");
        let parsed = parse_peer(&full).unwrap();
        assert_eq!(peer_in(&parsed), Some(id));
        // Each refusal: its variant, and a message with the text given and what is wrong.
        let refusals = [
            (
                "example.com:4001",
                "PeerSocket",
                "\"example.com:4001\" is not HOST:PORT with an IP address: ",
            ),
            (
                "/dns4/example.com/tcp/1",
                "PeerNotTcp",
                "\"/dns4/example.com/tcp/1\": expected /ip4|ip6/…/tcp/PORT[/p2p/ID]",
            ),
            (
                "/ip4/10.0.0.2/tcp/x",
                "PeerMultiaddr",
                "\"/ip4/10.0.0.2/tcp/x\" is not a multiaddr: ",
            ),
        ];
        for (text, variant, message) in refusals {
            let err = parse_peer(text).unwrap_err();
            assert!(format!("{err:?}").starts_with(variant), "{err:?}");
            assert!(err.to_string().starts_with(message), "{err}");
        }
    }

    #[test]
    fn an_oap_address_is_read_back_and_is_no_libp2p_address() {
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let oap = oap_multiaddr(ip, 4433);
        assert_eq!(oap.to_string(), "/ip4/10.0.0.2/tcp/4433/sni/oap");
        assert_eq!(oap_socket(&oap), Some(SocketAddr::new(ip, 4433)));
        assert_eq!(tcp_socket(&oap), None);
        assert!(identified_addresses(ip, std::slice::from_ref(&oap)).is_empty());
        let claimed = [
            "/ip4/203.0.113.9/tcp/4001".parse().unwrap(),
            "/ip4/203.0.113.9/tcp/4433/sni/oap".parse().unwrap(),
            "/ip4/203.0.113.9/tcp/4434/sni/oap".parse().unwrap(),
        ];
        let kept: Vec<String> = record_addresses(ip, &claimed, 4)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(
            kept,
            ["/ip4/10.0.0.2/tcp/4001", "/ip4/10.0.0.2/tcp/4433/sni/oap"],
            "the connection's IP, the libp2p ports and the first OAP/1 port claimed"
        );
        let text = oap.to_string();
        let err = parse_peer(&text).unwrap_err();
        assert!(format!("{err:?}").starts_with("PeerNotTcp"), "{err:?}");
        // A libp2p address is no OAP one, nor is any other name after the port.
        let libp2p = tcp_multiaddr(ip, 4001);
        assert_eq!(oap_socket(&libp2p), None);
        assert_eq!(tcp_socket(&libp2p), Some(SocketAddr::new(ip, 4001)));
        let other: Multiaddr = "/ip4/10.0.0.2/tcp/4433/sni/example.com".parse().unwrap();
        assert_eq!(oap_socket(&other), None);
        let trailing: Multiaddr = "/ip4/10.0.0.2/tcp/4433/sni/oap/http".parse().unwrap();
        assert_eq!(oap_socket(&trailing), None);
        // As a Kademlia answer names it: the peer's id appended.
        let named = oap.clone().with(Protocol::P2p(PeerId::random()));
        assert_eq!(oap_socket(&named), Some(SocketAddr::new(ip, 4433)));
        assert_eq!(tcp_socket(&named), None);
    }

    #[test]
    fn record_keys_are_blake3_multihashes() {
        let key = record_key(&[7; 32]);
        assert_eq!(&key.as_ref()[..2], &[0x1e, 0x20]);
        assert_eq!(&key.as_ref()[2..], &[7; 32]);
    }
}
