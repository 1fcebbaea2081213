//! The OAP/1 front end: one connection, one reader task, one writer task, one task per
//! request, all on the shard that accepted the connection.
//!
//! - [`reader`] decodes frames (`ron_codec::frame::FrameDecoder`, bounded before any
//!   body byte is buffered) and dispatches them: HELLO is answered at once; GET and STAT
//!   start a request task ([`get`]); PUT data is written into the upload session as it
//!   arrives (never buffered whole) and, on END, a task finishes and commits it ([`put`]).
//! - [`outbox`] holds each request's queued response frames; [`writer`] is the socket's
//!   only writer and takes them round robin, so requests on one connection interleave
//!   fairly.
//! - Object logic (range, verified groups, write rule, digest, commit) is the object
//!   service's (`crate::service`); this module only frames it.
//!
//! Protocol violations (a header the decoder rejects, a bad COMP payload, an unknown or
//! duplicate `corr_id`, more than `max_inflight` requests) are answered once, ahead of
//! any queued frame, and the connection closes. Problems with one request (bad JSON, no
//! such object, a missing token, an overloaded shard) are answered on that request's
//! `corr_id` and the connection goes on; the rest of a refused PUT's DATA is skipped.

mod answer;
mod get;
mod outbox;
mod put;
mod reader;
mod writer;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ron_codec::frame::{Flags, FrameDecoder};
use ron_codec::inflate::Inflater;
use ron_codec::messages::{HelloReply, DATA_CHUNK_BYTES};
use ron_io::stream::{split, Transport};
use ron_link::counters::FrontCounters;
use ron_link::requests::{Op, Protocol};

use crate::admission::Admission;
use crate::buffers::BufferPool;
use crate::drain::Drain;
use crate::service::Service;
use crate::transfer::TransferPace;
use outbox::{Outboxes, SharedOutboxes, WriterState};
use reader::{ReadEnd, Reader};

/// Flags a client may set on its frames; HELLO advertises the same set plus RESP.
const CLIENT_FLAGS: u16 =
    Flags::REQ.bits() | Flags::START.bits() | Flags::END.bits() | Flags::COMP.bits();
/// `flags_supported` in the HELLO reply: REQ|RESP|START|END|COMP.
pub const FLAGS_SUPPORTED: u16 = CLIENT_FLAGS | Flags::RESP.bits();

/// Limits and policy of the OAP/1 front end, fixed at start-up (configuration keys).
#[derive(Debug, Clone)]
pub struct OapLimits {
    /// Largest frame accepted and sent (at most the protocol's 1 MiB).
    pub max_frame: u32,
    /// Largest HELLO or START frame accepted ([`crate::limits::oap_request_frame_bytes_max`]).
    pub request_frame_bytes_max: u32,
    /// Requests in flight per connection (HELLO's `max_inflight`).
    pub requests_per_connection_max: u32,
    /// COMP ratio bound (output ≤ ratio × compressed size).
    pub inflate_ratio_max: u32,
    /// Longest silence on a connection with nothing in flight.
    pub idle_timeout: Duration,
    /// Longest wait for the rest of a frame's fixed header once its first byte came
    /// (HTTP's head deadline: a header is a few dozen bytes, not a body).
    pub header_timeout: Duration,
    /// Longest wait for the rest of a frame; the grace before uploads and answers must
    /// keep `body_rate_min_bytes_per_s` (`crate::transfer`).
    pub body_timeout: Duration,
    pub body_rate_min_bytes_per_s: u64,
    /// HELLO's `transports`.
    pub transports: Vec<String>,
}

/// Per-shard state shared by the shard's OAP connections.
pub struct OapContext {
    pub service: Rc<Service>,
    /// Quotas, the shard's in-flight gate (shared with HTTP), accounting.
    pub admission: Rc<Admission>,
    pub limits: OapLimits,
    /// Set when the node is shutting down: new requests get 503 not_ready.
    pub draining: Rc<Drain>,
    pub shard_count: u16,
    /// The shard's one zstd inflater, shared by its connections (inflation never
    /// awaits): its context and window are one per shard, not one per connection.
    pub inflater: RefCell<Option<Inflater>>,
    /// Socket read buffers (`OAP_READ_BUFFER_BYTES`), lent only while a connection
    /// has bytes to decode or is receiving (`crate::buffers`).
    pub read_buffers: Rc<BufferPool>,
}

impl std::fmt::Debug for OapContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OapContext")
            .field("shard", &self.service.shard().index())
            .finish_non_exhaustive()
    }
}

impl OapContext {
    fn metrics(&self) -> &FrontCounters {
        self.admission.front()
    }

    fn pace(&self, started: Instant) -> TransferPace {
        let limits = &self.limits;
        TransferPace::new(
            started,
            limits.body_timeout,
            limits.body_rate_min_bytes_per_s,
        )
    }

    fn hello_reply(&self) -> HelloReply {
        HelloReply {
            max_frame: self.limits.max_frame,
            max_inflight: self.limits.requests_per_connection_max,
            flags_supported: FLAGS_SUPPORTED,
            versions: vec![ron_codec::frame::VERSION],
            transports: self.limits.transports.clone(),
            node_id: None,
            shards: Some(self.shard_count),
            chunk: Some(DATA_CHUNK_BYTES),
        }
    }
}

/// Serves one OAP/1 connection until it closes; `client` is who it is for (the
/// socket's peer, or the client a trusted proxy's PROXY header named).
pub async fn serve_connection<S: Transport>(
    ctx: Rc<OapContext>,
    stream: S,
    client: Option<std::net::IpAddr>,
) {
    let _ = stream.tcp().set_nodelay(true);
    let peer = client;
    let _open = ctx.metrics().open_connection();
    FrontCounters::add(&ctx.metrics().connections_total, 1);
    let (read_half, write_half) = split(stream);
    write_half.set_write_timeout(Some(ctx.limits.body_timeout));
    let out: SharedOutboxes = Rc::new(RefCell::new(Outboxes::new()));
    let writer = glommio::spawn_local(writer::write_loop(
        Rc::clone(&ctx),
        write_half,
        Rc::clone(&out),
    ));
    let decoder = FrameDecoder::new(ctx.limits.max_frame);
    let mut reader = Reader::new(Rc::clone(&ctx), peer, read_half, Rc::clone(&out), decoder);
    let end = reader.run().await;
    // Boxed, like every request's work: an idle connection's task stays small.
    Box::pin(reader.abort_uploads()).await;
    let rejected = matches!(end, ReadEnd::Rejected(..));
    let state = match end {
        ReadEnd::PeerDone => WriterState::Draining,
        ReadEnd::Broken => WriterState::Closed,
        ReadEnd::Rejected(last, status) => {
            // A protocol error ends the connection with one answer: counted as a
            // request refused (before: in no count), its latency none of its own.
            ctx.admission
                .record(Protocol::Oap, Op::Other, status, Instant::now());
            WriterState::Failing(Some(last))
        }
    };
    out.borrow_mut().set_state(state);
    writer.await;
    if rejected {
        // The answer is out and the sending side shut; a client still sending (the body
        // of a frame refused from its header) gets it, not a reset. Boxed: only a
        // rejected connection pays for its buffer.
        Box::pin(reader.linger()).await;
    }
}
