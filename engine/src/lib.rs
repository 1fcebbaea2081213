//! # ron-engine — the `ron` binary
//!
//! ## What it owns
//! - [`cli`] and [`config`]: the command line and the configuration (embedded defaults,
//!   then a TOML file, then flags); every limit of the node is sized here.
//! - [`server`]: start-up (data dir, control thread, one pinned glommio executor per
//!   shard) and graceful shutdown on SIGINT/SIGTERM.
//! - [`http`]: the HTTP/1.1 front end — one task per connection, on the shard that
//!   accepted it (SO_REUSEPORT), turning requests parsed by `ron_codec` into shard
//!   operations.
//! - [`oap`]: the OAP/1 front end — a reader task, a writer task that interleaves the
//!   response frames of concurrent requests fairly (round robin over per-request
//!   outboxes), and one task per request, on the same `Shard` API.
//! - TLS: the shard's TLS listener completes the handshake (`ron_io::tls`) and hands the
//!   stream to the front end its ALPN names; both front ends are generic over
//!   `ron_io::stream::Transport`.
//! - [`admission`]: what both front ends admit requests through and account them to —
//!   the tenant's token buckets (429 `over_quota`), the shard's in-flight gate (503
//!   `overloaded` past `inflight_max`), counters by protocol/op/status and the shard's
//!   latency histograms; its timer tick is the shard's end of the control link
//!   (reloaded policy in, quota demand and latency out).
//! - [`logging`]: `tracing` to stderr as text or JSON lines.
//! - [`client_cli`]: `ron put | get | stat | cert --dev` on top of `ron_client`.
//!
//! ## Invariants
//! - Each socket has one writer. HTTP answers pipelined requests in order from one
//!   bounded read buffer (`head_bytes_max + 64 KiB`); OAP/1 answers concurrent requests
//!   in any order, each request holding at most two queued frames.
//! - Nothing on a shard waits for the control thread: policy and quota shares arrive in
//!   a mailbox the shard polls every 250 ms.
//! - Every wait has a limit: idle, header and body timeouts; connections and in-flight
//!   requests per shard; object size.
//! - Only verified bytes are written: bodies are sent as slices of groups the shard has
//!   verified; a group failing verification before the head is a 500 `bad_digest`, after
//!   it an aborted connection.
//!
//! ## Data flow
//! accept (plain, or TLS then ALPN) → `http::serve_connection` or
//! `oap::serve_connection`. HTTP: head parsed (`ron_codec::http`) → route:
//! GET/HEAD → `Shard::meta` + `Shard::group` per covered group → socket;
//! PUT/POST → `Shard::begin_upload` → body (length or chunked) → `Upload::finish` →
//! `Shard::commit` (on the owner shard) → 201/200.

pub mod admission;
pub mod cli;
pub mod client_cli;
pub mod config;
pub mod http;
pub mod logging;
pub mod oap;
pub mod server;
