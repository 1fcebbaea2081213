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

/// The IP and TCP port of an `/ip…/tcp/…` multiaddr.
pub(super) fn tcp_socket(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut parts = addr.iter();
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
    fn record_keys_are_blake3_multihashes() {
        let key = record_key(&[7; 32]);
        assert_eq!(&key.as_ref()[..2], &[0x1e, 0x20]);
        assert_eq!(&key.as_ref()[2..], &[7; 32]);
    }
}
