//! # ron-engine — the node
//!
//! ## What it owns
//! Everything of the `ron` node that is not storage and not the control thread:
//! - [`config`] and [`cli`]: the command line and the configuration — one key table,
//!   one parser per key for flags, `RON_*` variables and the TOML file; [`limits`]: every
//!   fixed limit, with its unit and why.
//! - [`server`]: start-up (data dir lock, ports, TLS, signals, the control thread, one
//!   pinned glommio executor per shard) and graceful shutdown; its errors name what
//!   failed. It makes each shard's counters (`ron_link::counters::ShardCounters`: the
//!   storage's, handed to the shard, the front's and the requests', held by admission)
//!   and hands them to the control thread, with which shard owns an object as a
//!   function over the routing.
//! - [`service`]: the object service, once for both protocols — GET (metadata, the one
//!   range resolver, the first verified group before any head, the group stream with
//!   prefetch), STAT, uploads (write rule, size limit, announced length and digest,
//!   commit outcome).
//! - [`fetch`]: read-through — a GET of an object this node lacks is fetched from a
//!   provider the DHT names (OAP/1 with proofs, every group verified as it arrives,
//!   hedged, resumed at the failed group by the next provider) or the HTTP origin
//!   (by its bao outboard, group by group, else verified whole), streamed to every request
//!   waiting on it (one fetch per object per shard) and stored.
//! - [`replication`]: on a node in a network, the copies the placement asks this shard
//!   to keep (pulled through the read-through, verified, committed as kept) and the
//!   repair sweep that audits each kept object's holders and asks for missing copies;
//!   started and stopped with the shard.
//! - [`admission`]: what every request passes first and is accounted to — the tenant's
//!   token buckets (429 `over_quota`), the shard's in-flight gate (503 `overloaded`),
//!   tenant identity, counters by protocol/op/status and latency histograms, and the
//!   front's counters the front ends and read-through write
//!   (`ron_link::counters::FrontCounters`: connections, bytes, the gate, deadlines,
//!   fetches, readiness; [`admission::Admission::front`]); it is the shard's end of
//!   the control link (`ron_link`): messages taken as they arrive, reports on its timer
//!   tick. Nothing here imports the control thread's crate.
//! - [`refusal`]: [`refusal::Refusal`], every error answer, written the same way by both
//!   protocols.
//! - [`blocked`]: the shard's copy of the operator's denylist (read by `config` from
//!   `denylist_dir`, sent with each policy); every path that serves, fetches, announces,
//!   copies or stores an object asks it first (451 `blocked`).
//! - [`http`] and [`oap`]: thin protocol adapters (parse → admit → service → encode),
//!   each split by concern (connection loop, read side, writer side, GET, PUT, bao,
//!   bundle entries, IPFS raw blocks), generic over `ron_io::stream::Transport` (plain
//!   or TLS, chosen by ALPN on the TLS port). HTTP/2 (`http::http2`, ALPN `h2`) runs the
//!   `h2` crate per connection and serves each stream with the HTTP/1.1 front end as a
//!   one-request connection (docs/design/http2.md).
//! - [`client_addr`]: who the client is behind a load balancer — the PROXY protocol
//!   header and `X-Forwarded-For`, believed only from `trusted_proxies`.
//! - [`client_connections`]: each client's open connections across the node, under
//!   `connections_per_client_max` (opt-in): a count-min table every shard shares.
//! - [`drain`]: the stop's drain as a shard's connections see it — raised once, it
//!   closes idle HTTP/1.1 connections, sends HTTP/2 connections GOAWAY and refuses heads
//!   that complete after it (503), each wait on it an O(1) slot.
//! - [`transfer`]: body deadlines that grow with the bytes moved, and in-flight slots
//!   given back while a request waits on a slow peer.
//! - [`logging`]: `tracing` to stderr as text or JSON lines.
//! - [`preflight`]: what the host must offer (io_uring, kernel, locked memory, open
//!   files, CPUs, the data dir); checked before any shard starts and printed by
//!   `ron doctor`.
//!
//! The client commands (`ron put | pack | get | stat | rm | cert --dev | repair | scrub |
//! placement`) live in `ron_client::cli`; the binary dispatches them there.
//!
//! ## Invariants
//! - Each socket has one writer. HTTP answers pipelined requests in order from one
//!   bounded read buffer (`head_bytes_max + 64 KiB`); OAP/1 answers concurrent requests
//!   in any order, each request holding at most two queued frames. Read buffers are
//!   lent by a per-shard pool ([`buffers`]) only while they hold bytes: an idle
//!   connection costs its socket and a task of about 1 KiB.
//! - Nothing on a shard waits for the control thread: policy and quota shares arrive in
//!   a mailbox the shard polls every 250 ms.
//! - Every wait has a limit: idle timeout, header deadline, a body deadline that grows
//!   with the bytes moved (`body_timeout + bytes / body_rate_min`); connections and
//!   in-flight requests per shard (a request waiting on a slow peer parks its slot),
//!   connections per client across the node when configured; object size.
//! - A blocked address (the denylist) is answered 451 before any lookup, fetch or
//!   commit: the first thing `Service::find`, `Service::begin_upload` (and the upload's
//!   commit), `ReadThrough::join`, `Replication::pull` and the repair sweep do.
//! - Only verified bytes are written: bodies are slices of groups the shard verified
//!   against the object's tree; a group failing verification before the head is a 500
//!   `bad_digest`, after it an aborted stream.
//!
//! ## Data flow
//! accept (plain, or TLS then ALPN) → `http::serve_connection` | `oap::serve_connection`
//! → parse (head | frame) → `Admission::admit` → `Service::find` (a miss with read-through
//! on joins or starts a `fetch::Flight`) + `Span::resolve` +
//! `Service::stream` (GET) | `Service::begin_upload` → `UploadSession::{write, finish}`
//! (PUT) → encode (response | frames) → `Admission::finish` (bytes charged, counted,
//! latency recorded).

pub mod admission;
pub mod blocked;
pub mod buffers;
pub mod cli;
pub mod client_addr;
pub mod client_connections;
pub mod config;
pub mod drain;
pub mod fetch;
/// The in-memory harness of the `front_end` fuzz target: only in unit tests and with
/// the `fuzzing` feature (which `fuzz/` turns on), never in the node.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod limits;
pub mod logging;
pub mod oap;
pub mod preflight;
pub mod refusal;
pub mod replication;
pub mod server;
pub mod service;
#[cfg(test)]
mod test_wakers;
pub mod transfer;
