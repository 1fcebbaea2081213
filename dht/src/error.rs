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
    #[error("dht: cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("dht: {0}")]
    Start(String),
}
