//! Why `ron serve` did not start, or stopped with an error: every step that can fail
//! names what failed.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the node did not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// One line per problem found by [`crate::preflight`], each with its fix.
    #[error("{}", .0.join("\nron: "))]
    Preflight(Vec<String>),
    #[error("data dir {path}: {reason}")]
    DataDirLock { path: PathBuf, reason: String },
    #[error(transparent)]
    DataDir(#[from] ron_shards::ShardError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] ron_io::tls::TlsError),
    #[error("cannot install the {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        source: std::io::Error,
    },
    #[error("admin listener on {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("shard {shard}: cannot start its executor: {reason}")]
    Executor { shard: u16, reason: String },
    #[error("shard {shard}: {source}")]
    Shard { shard: u16, source: Box<StartError> },
    #[error("shard {shard} stopped: {reason}")]
    ShardPanicked { shard: u16, reason: String },
    #[error(transparent)]
    Dht(#[from] ron_dht::DhtError),
    #[error("{0}")]
    Origin(crate::fetch::origin::OriginError),
}

impl StartError {
    /// The exit status `ron serve` ends with: 2 for a configuration the node refuses
    /// (restarting it cannot help: `ron.service` does not), 1 for anything else — a
    /// denylist that could not be read included (a disk mounted late: the unit retries).
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Config(crate::config::ConfigError::DenylistUnreadable { .. }) => 1,
            StartError::Config(_) => 2,
            StartError::Shard { source, .. } => source.exit_code(),
            _ => 1,
        }
    }
}
