//! The one error type of the DHT crate: what failed, on which path, and why.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DhtError {
    #[error("dht: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dht: provider store {}: {op}: {source}", path.display())]
    Store {
        op: &'static str,
        path: PathBuf,
        source: heed::Error,
    },
    #[error("dht: node key {}: {reason}", path.display())]
    NodeKey { path: PathBuf, reason: String },
    /// `p2p_network_key_file` unreadable or not a key file (`network_key.rs`).
    #[error("dht: network key {}: {reason}", path.display())]
    NetworkKey { path: PathBuf, reason: String },
    #[error("dht: cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("dht: {0}")]
    Start(String),
    // A `--peer` that is not an address libp2p can dial ([`crate::node::parse_peer`]).
    // No "dht:" prefix: the caller names the setting (the engine's config check says
    // `peers: …`), and the text given comes first, quoted.
    /// A `--peer` starting with `/` that is not a multiaddr.
    #[error("{text:?} is not a multiaddr: {source}")]
    PeerMultiaddr {
        text: String,
        source: libp2p::multiaddr::Error,
    },
    /// A `--peer` multiaddr that is not `/ip4|ip6/…/tcp/PORT[/p2p/ID]` (a DNS name,
    /// another transport): the only kind this node dials.
    #[error("{text:?}: expected /ip4|ip6/…/tcp/PORT[/p2p/ID]")]
    PeerNotTcp { text: String },
    /// A `--peer` that is not `HOST:PORT` with an IP address (names are not resolved).
    #[error("{text:?} is not HOST:PORT with an IP address: {source}")]
    PeerSocket {
        text: String,
        source: std::net::AddrParseError,
    },
}
