//! # ron-client — talk to a ron node
//!
//! ## What it owns
//! - [`Client`]: one connection to a node over OAP/1 (default) or HTTP/1.1, plain TCP
//!   or TLS ([`transport`]), with blocking I/O: a CLI or a test does one transfer at a
//!   time and needs no executor.
//! - [`oap`]: the OAP/1 side — HELLO, PUT streamed in DATA frames that announce the
//!   object's address (the node checks it and stores nothing on a mismatch), GET with
//!   *verified streaming* (each group checked against the address with the proof the
//!   node sends before it, `ron_codec::proof`), STAT.
//! - [`http`]: the HTTP side — PUT with `Content-Length`, GET verified against the
//!   address as a whole before a byte is handed on (HTTP carries no proofs), STAT by HEAD.
//! - [`ClientError`]: what went wrong, with the node's own message when it answered.
//! - [`cli`]: the `ron put | pack | get | stat | cert --dev | repair | scrub` commands (parsing,
//!   progress bar, `-o FILE` through `FILE.part`), one file per command; the `ron`
//!   binary dispatches them here.
//!
//! ## Invariants
//! - A GET hands the caller's sink only bytes verified against the address the caller
//!   asked for: per 64 KiB group, over OAP with its proofs, over HTTP as a bao answer
//!   (`ron_codec::bao`). A verification failure writes nothing more and is
//!   [`ClientError::Verification`].
//! - Every frame the node sends goes through the codec's bounded decoder (its
//!   `FrameReader`), every HTTP response head through the codec's parser
//!   (`http::reply`); every wait has the connection's timeout.
//!
//! ## Data flow
//! `ron put FILE` → hash the file (address, length) → PUT START(addr, len) → DATA frames
//! → 201/200. `ron get b3:… --range a-b` → GET(range, proof) → START → per group:
//! parents + whole group → `RangeVerifier` → slice of the range → sink → END.

pub mod admin;
pub mod cli;
pub mod error;
#[cfg(test)]
mod fake_node;
pub mod http;
pub mod oap;
pub mod transport;

use std::io::{Read, Write};
use std::path::Path;

pub use error::ClientError;
pub use transport::{Endpoint, Protocol, TlsOptions};

use ron_codec::Address;

/// Bytes moved so far, for progress reporting.
pub type Progress<'a> = &'a mut dyn FnMut(u64);

/// Options shared by every request on a connection.
#[derive(Debug, Clone)]
pub struct Options {
    /// Bearer token (OAP capability section / HTTP Authorization) on every request: it
    /// allows writes and names the tenant whose quota applies.
    pub token: Option<String>,
    /// OAP's tenant_id header field (0 = none): a label, not proof; the node charges
    /// quotas by the token, else the client address.
    pub tenant_id: u128,
    /// Longest wait for any single read or write.
    pub timeout: std::time::Duration,
    /// User agent sent in HELLO / User-Agent.
    pub user_agent: String,
    /// `put` waits until this many nodes hold the object durably (`copies`).
    pub copies: Option<u32>,
    /// OAP `get` asks for the node's own copy only (`"local":true`: 404, never a
    /// read-through).
    pub local_only: bool,
    /// With `local_only`: only a copy the node keeps, not an evictable one (`"kept"`:
    /// 404 otherwise) — what an audit asks.
    pub kept_only: bool,
    /// With `local_only`: the node id the endpoint must be (`"node"`; another node
    /// answers 404): an audit cannot be passed by a neighbour's port.
    pub node: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            token: None,
            tenant_id: 0,
            timeout: std::time::Duration::from_secs(60),
            user_agent: format!("ron/{}", env!("CARGO_PKG_VERSION")),
            copies: None,
            local_only: false,
            kept_only: false,
            node: None,
        }
    }
}

/// An object stored by PUT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub addr: Address,
    pub len: u64,
    /// False when the node already had it (200 rather than 201).
    pub created: bool,
    /// Nodes holding it durably, when the upload asked for copies.
    pub copies: Option<usize>,
}

/// What a GET delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The object's whole length.
    pub total_len: u64,
    /// Bytes written to the sink.
    pub len: u64,
}

/// An inclusive byte range, as `--range a-b` and HTTP say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub first: u64,
    pub last: u64,
}

/// A connection to a node.
#[derive(Debug)]
pub enum Client {
    Oap(Box<oap::OapClient>),
    Http(Box<http::HttpClient>),
}

impl Client {
    pub fn connect(endpoint: &Endpoint, options: Options) -> Result<Client, ClientError> {
        Ok(match endpoint.protocol {
            Protocol::Oap => Client::Oap(Box::new(oap::OapClient::connect(endpoint, options)?)),
            Protocol::Http => Client::Http(Box::new(http::HttpClient::connect(endpoint, options)?)),
        })
    }

    /// Stores the file at `path` (its address is computed first and announced).
    pub fn put_file(&mut self, path: &Path, progress: Progress<'_>) -> Result<Stored, ClientError> {
        let (addr, len) = hash_file(path)?;
        let mut file = open(path)?;
        self.put(&mut file, addr, len, progress)
    }

    /// Stores `len` bytes read from `body`, which must hash to `addr`.
    pub fn put(
        &mut self,
        body: &mut dyn Read,
        addr: Address,
        len: u64,
        progress: Progress<'_>,
    ) -> Result<Stored, ClientError> {
        match self {
            Client::Oap(c) => c.put(body, Some(addr), len, progress),
            Client::Http(c) => c.put(body, addr, len, progress),
        }
    }

    /// Writes the verified bytes of `addr` (or of `range` of it) to `sink`.
    pub fn get(
        &mut self,
        addr: Address,
        range: Option<ByteRange>,
        sink: &mut dyn Write,
        progress: Progress<'_>,
    ) -> Result<Fetched, ClientError> {
        match self {
            Client::Oap(c) => c.get(addr, range, sink, progress),
            Client::Http(c) => c.get(addr, range, sink, progress),
        }
    }

    /// The object's length, if the node has it.
    pub fn stat(&mut self, addr: Address) -> Result<u64, ClientError> {
        match self {
            Client::Oap(c) => c.stat(addr),
            Client::Http(c) => c.stat(addr),
        }
    }
}

fn open(path: &Path) -> Result<std::fs::File, ClientError> {
    std::fs::File::open(path).map_err(|source| ClientError::File {
        op: "open",
        path: path.to_path_buf(),
        source,
    })
}

/// The address and length of a file, in one streaming pass.
pub fn hash_file(path: &Path) -> Result<(Address, u64), ClientError> {
    let mut file = open(path)?;
    hash_copy(&mut file, &mut std::io::sink()).map_err(|e| match e {
        ClientError::Input(source) => ClientError::File {
            op: "read",
            path: path.to_path_buf(),
            source,
        },
        other => other,
    })
}

/// Copies `input` to `copy` while hashing it: the address and length of what passed.
/// Read errors are [`ClientError::Input`], write errors [`ClientError::Output`].
pub fn hash_copy(
    input: &mut dyn Read,
    copy: &mut dyn Write,
) -> Result<(Address, u64), ClientError> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut len = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(ClientError::Input)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        copy.write_all(&buf[..n]).map_err(ClientError::Output)?;
        len += n as u64;
    }
    Ok((Address::from_bytes(*hasher.finalize().as_bytes()), len))
}

/// An unnamed temp file (unlinked at once: it disappears with the process).
pub fn temp_file() -> std::io::Result<std::fs::File> {
    let dir = std::env::temp_dir();
    for attempt in 0..16u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = dir.join(format!(
            "ron-spool-{}-{nanos}-{attempt}",
            std::process::id()
        ));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => {
                std::fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("cannot create a temp file"))
}
