//! # ron-codec — the pure, I/O-free codecs of the ron data plane
//!
//! Everything a byte goes through between a socket and a storage partition that does not
//! itself touch a socket or a disk lives here, so it can be fuzzed, benchmarked and
//! property-tested without an executor.
//!
//! ## What it owns
//! - [`frame`]: OAP/1 framing. A header layout derived from one field list, a
//!   [`FrameDecoder`] that is fed any split of the input and validates each header
//!   before it reserves a byte for the body, the encoder, and a [`FrameReader`] (the
//!   decoder with its read buffer) that a blocking or an async read loop drives.
//! - [`messages`]: OAP/1 payloads — HELLO, the object-plane requests (GET, PUT, STAT)
//!   and replies, and DATA frames (`[u16 len][JSON header][raw bytes]`).
//! - [`inflate`]: COMP payloads, zstd with an output bound of `8 × max_frame` and a
//!   ratio bound, enforced while inflating.
//! - [`error`]: the error taxonomy ([`ErrorCode`]: HTTP status, OAP code, `code` string,
//!   `retryable`), its JSON envelope, and this crate's [`Error`] enum.
//! - [`address`]: `b3:` addresses and the fixed partition table that names an object's
//!   owner shard from the top bits of its hash.
//! - [`tree`]: the 64 KiB chunk tree — one streaming pass gives the BLAKE3 root and the
//!   chaining value of every 64 KiB group, so any group can be verified alone.
//! - [`proof`]: verified streaming for untrusting clients — the parent nodes a server
//!   sends before each group of a range (bao-style pre-order), and the client's
//!   [`proof::RangeVerifier`] that checks every group against the root it asked for
//!   before the caller may use a byte of it.
//! - [`bao`]: the same verified streaming in the wire format of the `bao` crate and
//!   `bao-tree` (any chunk-group log up to 6), for HTTP clients that ask for
//!   `application/x-bao`: the encoder of encodings, slices and outboards from a
//!   [`ChunkTree`] and the groups' bytes, and the decoder that checks them.
//! - [`bundle`]: bundle manifests — the canonical JSON that names a site's or an app's
//!   files (each an object, with precompressed variants), parsed and checked against
//!   path, size and count limits before a server trusts an entry.
//! - [`cid`]: IPFS content identifiers in any multibase a client sends, and the one form
//!   that names a ron object (CIDv1, raw codec, BLAKE3-256: the same digest).
//! - [`denylist`]: the addresses a node refuses (IPIP-383 `*.deny` rules, plain and
//!   double-hashed), read from text and checked per address without allocating.
//! - [`http`]: HTTP/1.1 request heads (via `httparse`), Range, chunked bodies, a
//!   response-head writer that reuses the caller's buffer, and the response-head parser
//!   of clients and read-through ([`http::reply`]).
//! - [`proxy`]: the PROXY protocol header (v1 text, v2 binary) a load balancer puts in
//!   front of a connection to name its client.
//!
//! ## Invariants
//! - No parser here panics on any input, and each one's memory is bounded by a limit
//!   fixed up front: `max_frame`, the head limit, the inflate bound, the range count,
//!   the chunk-extension and trailer limits. Fuzz targets in `fuzz/` check the first.
//! - A rejected input maps to exactly one [`ErrorCode`]; the codec never decides to
//!   close a connection, it reports and the front end answers once and closes.
//! - The verification group (64 KiB, [`tree::GROUP_LEN_BYTES`]) and the frame limit
//!   (1 MiB, [`frame::MAX_FRAME_BYTES`]) are different knobs and never stand in for
//!   each other.
//!
//! ## How data flows through it
//! Reads: a front end parses a request ([`http::head`] or [`FrameDecoder`] +
//! [`messages::ObjectRequest`]), resolves any range ([`http::range`]), asks the owner
//! shard ([`PartitionTable::owner`]) for the groups that cover it, and each group is
//! checked with [`ChunkTree::verify_group`] before its bytes go out in a DATA frame or
//! an HTTP body. Writes: body bytes (plain, chunked via [`http::chunked`], or DATA
//! frames) stream through a [`TreeHasher`]; its [`ChunkTree`] is stored beside the data.

pub mod address;
pub mod bao;
pub mod bundle;
pub mod cid;
pub mod denylist;
pub mod error;
pub mod frame;
pub mod http;
pub mod inflate;
pub mod messages;
pub mod proof;
pub mod proxy;
pub mod tree;

pub use address::{Address, PartitionId, PartitionTable, ShardId};
pub use error::{Envelope, Error, ErrorCode};
pub use frame::{BodyGate, Flags, Frame, FrameDecoder, FrameHeader, FrameMeta, FrameReader};
pub use tree::{ChainingValue, ChunkTree, GroupIndex, TreeHasher};
