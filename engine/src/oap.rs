//! The OAP/1 front end: one connection, one reader task, one writer task, one task per
//! request, all on the shard that accepted the connection.
//!
//! The reader decodes frames (`ron_codec::frame::FrameDecoder`, bounded before any body
//! byte is buffered) and dispatches them: HELLO is answered at once; GET and STAT start
//! a request task; PUT data is written into the shard's upload as it arrives (never
//! buffered whole) and, on END, a task finishes, checks and commits it.
//!
//! Every request owns an *outbox* of at most [`OUTBOX_FRAMES_MAX`] response frames.
//! The writer is the socket's only writer: it takes one frame from each non-empty
//! outbox in turn (round robin), so a large GET yields the socket to a small one after
//! every 64 KiB frame, and a full outbox parks its producer (bounded memory: at most
//! `max_inflight × OUTBOX_FRAMES_MAX` frames per connection, whose data bytes are
//! shared with the verified-group cache, not copied).
//!
//! Protocol violations (a header the decoder rejects, a bad COMP payload, an unknown or
//! duplicate `corr_id`, more than `max_inflight` requests) are answered once, ahead of
//! any queued frame, and the connection closes. Problems with one request (bad JSON, no
//! such object, a missing token, an overloaded shard) are answered on that request's
//! `corr_id` and the connection goes on; the rest of a refused PUT's DATA is skipped.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use ron_codec::frame::{Flags, Frame, FrameDecoder, FrameMeta, APP_HELLO, APP_OBJECTS};
use ron_codec::inflate::Inflater;
use ron_codec::messages::{
    write_response_frame, DataHeader, GetEnd, GetStart, HelloReply, HelloRequest, InclusiveRange,
    ObjectInfo, ObjectRequest, DATA_CHUNK_BYTES,
};
use ron_codec::proof::{parents_before, GroupRange};
use ron_codec::tree::{GroupIndex, GROUP_LEN_BYTES};
use ron_codec::{Address, Envelope, ErrorCode};
use ron_io::stream::{split, ReadHalf, Transport, WriteHalf};
use ron_shards::{CommitOutcome, ObjectMeta, Shard, ShardMetrics, Upload};

use crate::admission::{Admission, Refusal, Ticket};
use ron_shards::metrics::{Op, Protocol};

/// Response frames a request may have queued before its task waits for the writer.
pub const OUTBOX_FRAMES_MAX: usize = 2;
/// The writer gathers small frames into one send of at most this many bytes.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// Raw bytes of at most this size are copied behind their frame head (one send);
/// larger ones go out straight from the verified buffer.
const COALESCE_BODY_BYTES_MAX: usize = 16 * 1024;
/// Socket reads go into a buffer of this size.
const READ_BUF_BYTES: usize = 64 * 1024;
/// Flags a client may set on its frames; HELLO advertises the same set plus RESP.
const CLIENT_FLAGS: u16 =
    Flags::REQ.bits() | Flags::START.bits() | Flags::END.bits() | Flags::COMP.bits();
/// `flags_supported` in the HELLO reply: REQ|RESP|START|END|COMP.
pub const FLAGS_SUPPORTED: u16 = CLIENT_FLAGS | Flags::RESP.bits();
/// Longest error message sent in an envelope, bytes.
const ERROR_MESSAGE_BYTES_MAX: usize = 1024;

/// Limits and policy of the OAP/1 front end, fixed at start-up.
#[derive(Debug, Clone)]
pub struct OapLimits {
    /// Largest frame accepted and sent (at most the protocol's 1 MiB).
    pub max_frame: u32,
    /// Requests in flight per connection (HELLO's `max_inflight`).
    pub requests_per_connection_max: u32,
    /// COMP ratio bound (output ≤ ratio × compressed size).
    pub inflate_ratio_max: u32,
    /// Longest silence on a connection with nothing in flight.
    pub idle_timeout: Duration,
    /// Longest wait for the rest of a frame, and for the peer to take our bytes.
    pub body_timeout: Duration,
    pub object_bytes_max: u64,
    /// HELLO's `transports`.
    pub transports: Vec<String>,
}

/// Per-shard state shared by the shard's OAP connections.
pub struct OapContext {
    pub shard: Rc<Shard>,
    /// Quotas, the shard's in-flight gate (shared with HTTP), accounting.
    pub admission: Rc<Admission>,
    pub limits: OapLimits,
    /// Set when the node is shutting down: new requests get 503 not_ready.
    pub draining: Rc<Cell<bool>>,
    pub shard_count: u16,
}

impl std::fmt::Debug for OapContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OapContext")
            .field("shard", &self.shard.index())
            .finish_non_exhaustive()
    }
}

impl OapContext {
    fn metrics(&self) -> &ShardMetrics {
        self.shard.metrics()
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

/// What the writer sends as one unit: `head` (a frame header and, for DATA, the DATA
/// header — preceded by the START frame on a GET's first DATA frame), then `body` (raw
/// object bytes, possibly empty), then `tail` (the END frame after a GET's last DATA
/// frame). START and END ride with a DATA frame so that a small GET is one unit.
struct OutFrame {
    head: Bytes,
    body: Bytes,
    tail: Bytes,
}

impl OutFrame {
    fn whole(frame: &Frame) -> OutFrame {
        OutFrame {
            head: frame.to_bytes(),
            body: Bytes::new(),
            tail: Bytes::new(),
        }
    }

    fn len(&self) -> usize {
        self.head.len() + self.body.len() + self.tail.len()
    }
}

/// One request's queued response frames.
#[derive(Default)]
struct Outbox {
    frames: VecDeque<OutFrame>,
    /// The END frame is queued: the outbox goes away once it is sent.
    ended: bool,
    producer: Option<Waker>,
}

enum WriterState {
    Open,
    /// The peer will send no more requests: finish what is in flight, then close.
    Draining,
    /// A protocol error: send this one answer ahead of everything, then close.
    Failing(Option<OutFrame>),
    Closed,
}

/// The outboxes of a connection and the writer's round-robin order.
struct Outboxes {
    boxes: HashMap<u64, Outbox>,
    /// Streaming requests (GETs), which may wait for room in their outbox: cancelled
    /// when the connection stops, so none outlives it holding an in-flight slot.
    streams: HashMap<u64, glommio::Task<()>>,
    /// corr_ids whose outbox has frames, in the order the writer serves them.
    ready: VecDeque<u64>,
    writer: Option<Waker>,
    state: WriterState,
}

/// The connection is closed; the response cannot be delivered.
#[derive(Debug)]
struct Closed;

enum Next {
    Frame(OutFrame),
    /// The final answer to a protocol error.
    Last(OutFrame),
    Done,
}

impl Outboxes {
    fn new() -> Outboxes {
        Outboxes {
            boxes: HashMap::new(),
            streams: HashMap::new(),
            ready: VecDeque::new(),
            writer: None,
            state: WriterState::Open,
        }
    }

    fn contains(&self, corr_id: u64) -> bool {
        self.boxes.contains_key(&corr_id)
    }

    fn open(&mut self, corr_id: u64) {
        self.boxes.entry(corr_id).or_default();
    }

    /// Forgets a request that will never answer (an upload cut short).
    fn forget(&mut self, corr_id: u64) {
        self.boxes.remove(&corr_id);
        self.ready.retain(|&c| c != corr_id);
        self.wake_writer();
    }

    fn wake_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }

    fn poll_push(
        &mut self,
        cx: &Context<'_>,
        corr_id: u64,
        frame: &mut Option<OutFrame>,
        end: bool,
    ) -> Poll<Result<(), Closed>> {
        if matches!(self.state, WriterState::Closed | WriterState::Failing(_)) {
            return Poll::Ready(Err(Closed));
        }
        let Some(outbox) = self.boxes.get_mut(&corr_id) else {
            return Poll::Ready(Err(Closed));
        };
        if outbox.frames.len() >= OUTBOX_FRAMES_MAX {
            outbox.producer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let was_empty = outbox.frames.is_empty();
        outbox.frames.extend(frame.take());
        outbox.ended |= end;
        if was_empty {
            self.ready.push_back(corr_id);
        }
        self.wake_writer();
        Poll::Ready(Ok(()))
    }

    /// The next frame in round-robin order, if any is queued.
    fn take_next(&mut self) -> Option<OutFrame> {
        let corr_id = self.ready.pop_front()?;
        let outbox = self.boxes.get_mut(&corr_id)?;
        let frame = outbox.frames.pop_front()?;
        if let Some(w) = outbox.producer.take() {
            w.wake();
        }
        if !outbox.frames.is_empty() {
            self.ready.push_back(corr_id);
        } else if outbox.ended {
            self.boxes.remove(&corr_id);
            // Its task pushed END as its last act and has returned.
            self.streams.remove(&corr_id);
        }
        Some(frame)
    }

    fn poll_next(&mut self, cx: &Context<'_>) -> Poll<Next> {
        match &mut self.state {
            WriterState::Failing(last) => {
                return Poll::Ready(last.take().map_or(Next::Done, Next::Last));
            }
            WriterState::Closed => return Poll::Ready(Next::Done),
            WriterState::Open | WriterState::Draining => {}
        }
        if let Some(frame) = self.take_next() {
            return Poll::Ready(Next::Frame(frame));
        }
        if matches!(self.state, WriterState::Draining) && self.boxes.is_empty() {
            return Poll::Ready(Next::Done);
        }
        self.writer = Some(cx.waker().clone());
        Poll::Pending
    }

    fn set_state(&mut self, state: WriterState) {
        let stopping = matches!(state, WriterState::Closed | WriterState::Failing(_));
        self.state = state;
        if stopping {
            // Dropping a task cancels it: its future, in-flight slot and buffers go now
            // rather than whenever it would next run.
            self.streams.clear();
            for outbox in self.boxes.values_mut() {
                if let Some(w) = outbox.producer.take() {
                    w.wake();
                }
            }
        }
        self.wake_writer();
    }
}

type SharedOutboxes = Rc<RefCell<Outboxes>>;

/// Queues `frame` on `corr_id`'s outbox, waiting while it is full.
async fn push(
    out: &SharedOutboxes,
    corr_id: u64,
    frame: OutFrame,
    end: bool,
) -> Result<(), Closed> {
    let mut frame = Some(frame);
    std::future::poll_fn(|cx| out.borrow_mut().poll_push(cx, corr_id, &mut frame, end)).await
}

fn error_frame(corr_id: u64, code: ErrorCode, message: &str) -> OutFrame {
    error_frame_with(corr_id, code, message, None)
}

/// An error envelope; codes that carry a wait get `retry_after_ms` (given, or 1 s).
fn error_frame_with(
    corr_id: u64,
    code: ErrorCode,
    message: &str,
    retry_after_ms: Option<u64>,
) -> OutFrame {
    // A message may quote client input (a bad JSON field): keep the envelope small.
    let mut cut = message.len().min(ERROR_MESSAGE_BYTES_MAX);
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut body = Vec::with_capacity(128 + cut);
    let mut corr = itoa::Buffer::new();
    Envelope {
        code,
        message: &message[..cut],
        corr_id: corr.format(corr_id),
        retry_after_ms: code
            .carries_retry_after()
            .then(|| retry_after_ms.unwrap_or(crate::admission::OVERLOAD_RETRY_AFTER_MS)),
    }
    .write_json(&mut body);
    ok_frame(Flags::END, code.status(), corr_id, &body)
}

fn ok_frame(flags: Flags, status: u16, corr_id: u64, payload: &[u8]) -> OutFrame {
    let mut head = BytesMut::with_capacity(ron_codec::frame::HEADER_LEN + payload.len());
    write_response_frame(&mut head, flags, status, corr_id, payload)
        .expect("replies and bounded error envelopes are far smaller than max_frame");
    OutFrame {
        head: head.freeze(),
        body: Bytes::new(),
        tail: Bytes::new(),
    }
}

/// How an answered request is accounted: through its admission ticket (with the object
/// bytes it moved), or — refused before admission — by op and start time.
enum Account {
    Admitted(Ticket, u64),
    Unadmitted(Op, Instant),
}

impl Account {
    fn finish(self, admission: &Admission, status: u16) {
        match self {
            Account::Admitted(ticket, bytes) => admission.finish(ticket, status, bytes),
            Account::Unadmitted(op, started) => {
                admission.record(Protocol::Oap, op, status, started)
            }
        }
    }
}

/// Answers one request with a single END frame and records it.
async fn answer(
    ctx: &OapContext,
    out: &SharedOutboxes,
    corr_id: u64,
    frame: OutFrame,
    status: u16,
    account: Account,
) {
    let _ = push(out, corr_id, frame, true).await;
    account.finish(&ctx.admission, status);
}

async fn answer_error(
    ctx: &OapContext,
    out: &SharedOutboxes,
    corr_id: u64,
    code: ErrorCode,
    message: &str,
    account: Account,
) {
    answer_envelope(ctx, out, corr_id, code, message, None, account).await;
}

/// Answers with an error envelope (logged), carrying `retry_after_ms` when given.
async fn answer_envelope(
    ctx: &OapContext,
    out: &SharedOutboxes,
    corr_id: u64,
    code: ErrorCode,
    message: &str,
    retry_after_ms: Option<u64>,
    account: Account,
) {
    let mut corr = itoa::Buffer::new();
    crate::admission::log_error(ctx.shard.index(), corr.format(corr_id), code, message);
    let frame = error_frame_with(corr_id, code, message, retry_after_ms);
    answer(ctx, out, corr_id, frame, code.status(), account).await;
}

/// Serves one OAP/1 connection until it closes.
pub async fn serve_connection<S: Transport>(ctx: Rc<OapContext>, stream: S) {
    let _ = stream.tcp().set_nodelay(true);
    let peer = stream.tcp().peer_addr().ok().map(|a| a.ip());
    let metrics = Rc::clone(&ctx);
    ShardMetrics::add(&metrics.metrics().connections_open, 1);
    ShardMetrics::add(&metrics.metrics().connections_total, 1);
    let (read_half, write_half) = split(stream);
    write_half.set_write_timeout(Some(ctx.limits.body_timeout));
    let out: SharedOutboxes = Rc::new(RefCell::new(Outboxes::new()));
    let writer = glommio::spawn_local(write_loop(Rc::clone(&ctx), write_half, Rc::clone(&out)));
    let mut reader = Reader {
        ctx: Rc::clone(&ctx),
        peer,
        half: read_half,
        out: Rc::clone(&out),
        decoder: FrameDecoder::new(ctx.limits.max_frame),
        inflater: None,
        inbound: HashMap::new(),
        frames_seen: 0,
    };
    let end = reader.run().await;
    reader.abort_uploads().await;
    let state = match end {
        ReadEnd::PeerDone => WriterState::Draining,
        ReadEnd::Broken => WriterState::Closed,
        ReadEnd::Rejected(last) => WriterState::Failing(Some(last)),
    };
    out.borrow_mut().set_state(state);
    writer.await;
    metrics
        .metrics()
        .connections_open
        .fetch_sub(1, Ordering::Relaxed);
}

/// The socket's only writer: frames in round-robin order across requests.
async fn write_loop<S: Transport>(
    ctx: Rc<OapContext>,
    mut half: WriteHalf<S>,
    out: SharedOutboxes,
) {
    let mut wbuf = BytesMut::with_capacity(WRITE_BATCH_BYTES);
    loop {
        let next = std::future::poll_fn(|cx| out.borrow_mut().poll_next(cx)).await;
        let (frame, last) = match next {
            Next::Frame(frame) => (frame, false),
            Next::Last(frame) => (frame, true),
            Next::Done => break,
        };
        let mut sent = add_frame(&ctx, &mut half, &mut wbuf, frame).await;
        while !last && sent.is_ok() && wbuf.len() < WRITE_BATCH_BYTES {
            let Some(frame) = out.borrow_mut().take_next() else {
                break;
            };
            sent = add_frame(&ctx, &mut half, &mut wbuf, frame).await;
        }
        if sent.is_ok() && !wbuf.is_empty() {
            sent = half.write_all(&wbuf).await.map(|()| wbuf.len());
            wbuf.clear();
        }
        match sent {
            Ok(_) if !last => {}
            _ => break,
        }
    }
    out.borrow_mut().set_state(WriterState::Closed);
    let _ = half.close().await;
}

/// Appends `frame` to the batch; a large body is sent straight from its buffer.
async fn add_frame<S: Transport>(
    ctx: &OapContext,
    half: &mut WriteHalf<S>,
    wbuf: &mut BytesMut,
    frame: OutFrame,
) -> std::io::Result<usize> {
    let len = frame.len();
    ShardMetrics::add(&ctx.metrics().bytes_out, len as u64);
    wbuf.extend_from_slice(&frame.head);
    if frame.body.len() <= COALESCE_BODY_BYTES_MAX {
        wbuf.extend_from_slice(&frame.body);
    } else {
        half.write_all(wbuf).await?;
        wbuf.clear();
        half.write_all(&frame.body).await?;
    }
    wbuf.extend_from_slice(&frame.tail);
    Ok(len)
}

/// How the reading side of a connection ended.
enum ReadEnd {
    /// End of stream or idle timeout: answer what is in flight, then close.
    PeerDone,
    /// Read error or a frame left unfinished past the timeout: close now.
    Broken,
    /// A protocol error: this answer, then close.
    Rejected(OutFrame),
}

/// An upload being received, or a refused request whose remaining DATA is skipped.
enum Inbound {
    Receiving(Box<PutState>),
    Skipping,
}

struct PutState {
    upload: Upload,
    len: u64,
    announced: Option<Address>,
    ticket: Ticket,
}

struct Reader<S> {
    ctx: Rc<OapContext>,
    peer: Option<std::net::IpAddr>,
    half: ReadHalf<S>,
    out: SharedOutboxes,
    decoder: FrameDecoder,
    inflater: Option<Inflater>,
    inbound: HashMap<u64, Inbound>,
    frames_seen: u64,
}

/// A protocol error: the one answer to send before closing.
struct Reject(OutFrame);

fn reject(corr_id: u64, code: ErrorCode, message: &str) -> Reject {
    Reject(error_frame(corr_id, code, message))
}

impl<S: Transport> Reader<S> {
    async fn run(&mut self) -> ReadEnd {
        let mut buf = vec![0u8; READ_BUF_BYTES].into_boxed_slice();
        loop {
            let waiting_for_frame = !self.decoder.is_idle();
            let timeout = if waiting_for_frame {
                self.ctx.limits.body_timeout
            } else {
                self.ctx.limits.idle_timeout
            };
            self.half.set_read_timeout(Some(timeout));
            let n = match self.half.read(&mut buf).await {
                Ok(0) if waiting_for_frame => return ReadEnd::Broken,
                Ok(0) => return ReadEnd::PeerDone,
                Ok(n) => n,
                // Silence between frames ends the connection only once nothing is in
                // flight: a client downloading a large object has nothing to say.
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut && !waiting_for_frame => {
                    if self.busy() {
                        continue;
                    }
                    return ReadEnd::PeerDone;
                }
                Err(_) => return ReadEnd::Broken,
            };
            ShardMetrics::add(&self.ctx.metrics().bytes_in, n as u64);
            let mut input = &buf[..n];
            loop {
                match self.decoder.decode(&mut input) {
                    Ok(Some(frame)) => {
                        if let Err(Reject(last)) = self.on_frame(frame).await {
                            return ReadEnd::Rejected(last);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let corr_id = self.decoder.rejected_header().map_or(0, |h| h.corr_id);
                        return ReadEnd::Rejected(error_frame(corr_id, e.code(), &e.to_string()));
                    }
                }
            }
        }
    }

    fn busy(&self) -> bool {
        !self.out.borrow().boxes.is_empty() || !self.inbound.is_empty()
    }

    /// Removes the temp files of uploads the peer never finished.
    async fn abort_uploads(&mut self) {
        for (corr_id, inbound) in std::mem::take(&mut self.inbound) {
            self.out.borrow_mut().forget(corr_id);
            if let Inbound::Receiving(put) = inbound {
                put.upload.abort().await;
            }
        }
    }

    async fn on_frame(&mut self, mut frame: Frame) -> Result<(), Reject> {
        let header = frame.header;
        let corr_id = header.corr_id;
        self.frames_seen += 1;
        let unsupported = header.flags.bits() & !CLIENT_FLAGS;
        if unsupported != 0 || !header.flags.contains(Flags::REQ) {
            let message = format!(
                "frame flags {:#06x}: a client frame carries REQ and only REQ, START, END, COMP (unsupported: {unsupported:#06x})",
                header.flags.bits()
            );
            return Err(reject(corr_id, ErrorCode::BadFrame, &message));
        }
        if header.flags.contains(Flags::COMP) {
            frame.payload = self.inflate(&frame)?;
        }
        match header.app_proto_id {
            APP_HELLO => self.on_hello(&frame),
            APP_OBJECTS if header.flags.contains(Flags::START) => self.on_start(frame).await,
            APP_OBJECTS => self.on_data(frame).await,
            other => {
                let message =
                    format!("app_proto_id {other} is not served here (0 HELLO, 1 objects)");
                Err(reject(corr_id, ErrorCode::BadRequest, &message))
            }
        }
    }

    fn inflate(&mut self, frame: &Frame) -> Result<Bytes, Reject> {
        let corr_id = frame.header.corr_id;
        if self.inflater.is_none() {
            let inflater = Inflater::new(self.ctx.limits.inflate_ratio_max)
                .map_err(|e| reject(corr_id, ErrorCode::Internal, &e.to_string()))?;
            self.inflater = Some(inflater);
        }
        let inflater = self.inflater.as_mut().expect("set above");
        inflater
            .inflate(&frame.payload, self.decoder.max_frame())
            .map_err(|e| reject(corr_id, e.code(), &e.to_string()))
    }

    fn on_hello(&mut self, frame: &Frame) -> Result<(), Reject> {
        let corr_id = frame.header.corr_id;
        if self.frames_seen != 1 {
            return Err(reject(
                corr_id,
                ErrorCode::BadRequest,
                "HELLO must be the first frame of the connection",
            ));
        }
        HelloRequest::parse(&frame.payload)
            .map_err(|e| reject(corr_id, e.code(), &e.to_string()))?;
        let reply = self.ctx.hello_reply().frame(corr_id);
        let mut out = self.out.borrow_mut();
        out.open(corr_id);
        let mut frame = Some(OutFrame::whole(&reply));
        let waker = Waker::noop();
        // A fresh outbox has room: this cannot be Pending.
        let _ = out.poll_push(&Context::from_waker(waker), corr_id, &mut frame, true);
        Ok(())
    }

    fn requests_in_flight(&self) -> usize {
        let out = self.out.borrow();
        out.boxes.len() + self.inbound.keys().filter(|c| !out.contains(**c)).count()
    }

    async fn on_start(&mut self, frame: Frame) -> Result<(), Reject> {
        let header = frame.header;
        let corr_id = header.corr_id;
        let started = Instant::now();
        if self.out.borrow().contains(corr_id) || self.inbound.contains_key(&corr_id) {
            let message = format!("corr_id {corr_id} is already in flight on this connection");
            return Err(reject(corr_id, ErrorCode::BadFrame, &message));
        }
        let limit = self.ctx.limits.requests_per_connection_max as usize;
        if self.requests_in_flight() >= limit {
            let message =
                format!("more than max_inflight = {limit} requests in flight on one connection");
            return Err(reject(corr_id, ErrorCode::BadRequest, &message));
        }
        let has_more = !header.flags.contains(Flags::END);
        self.out.borrow_mut().open(corr_id);
        let request = ObjectRequest::parse(&frame.payload);
        let op = match &request {
            Ok(ObjectRequest::Get { .. }) => Op::Get,
            Ok(ObjectRequest::Stat { .. }) => Op::Stat,
            Ok(ObjectRequest::Put { .. }) => Op::Put,
            Err(_) => Op::Other,
        };
        let begun = match request {
            Ok(request) => self.begin(&frame, request, op, started).await,
            Err(e) => Err((e.code(), e.to_string()).into()),
        };
        if let Err(refusal) = begun {
            if has_more {
                self.inbound.insert(corr_id, Inbound::Skipping);
            }
            let account = Account::Unadmitted(op, started);
            let (code, message, wait) = (refusal.code, &refusal.message, refusal.retry_after_ms);
            answer_envelope(&self.ctx, &self.out, corr_id, code, message, wait, account).await;
        }
        Ok(())
    }

    /// Starts the request a START frame names, or says why it is refused.
    async fn begin(
        &mut self,
        frame: &Frame,
        request: ObjectRequest,
        op: Op,
        started: Instant,
    ) -> Result<(), Refusal> {
        let header = frame.header;
        let corr_id = header.corr_id;
        let has_more = !header.flags.contains(Flags::END);
        if self.ctx.draining.get() {
            return Err((ErrorCode::NotReady, "the node is shutting down".to_string()).into());
        }
        let principal = Principal {
            tenant_id: header.tenant_id,
            token: frame.cap.clone(),
        };
        let mut claim = itoa::Buffer::new();
        let claim =
            (principal.tenant_id != 0).then(|| claim.format(principal.tenant_id).as_bytes());
        let token = (!principal.token.is_empty()).then_some(&principal.token[..]);
        let identity = self.ctx.admission.identify(token, claim, self.peer);
        let ticket = self
            .ctx
            .admission
            .admit(&identity.tenant, Protocol::Oap, op, started)?;
        let ctx = Rc::clone(&self.ctx);
        let out = Rc::clone(&self.out);
        match request {
            ObjectRequest::Get { addr, range, proof } => {
                let request = GetRequest {
                    corr_id,
                    addr,
                    range,
                    proof,
                };
                let task = glommio::spawn_local(get(ctx, out, request, ticket));
                self.out.borrow_mut().streams.insert(corr_id, task);
            }
            ObjectRequest::Stat { addr } => {
                glommio::spawn_local(stat(ctx, out, corr_id, addr, ticket)).detach();
            }
            ObjectRequest::Put { len, addr } => {
                self.admit_put(&principal, identity.may_write, len, has_more)?;
                let upload = self
                    .ctx
                    .shard
                    .begin_upload()
                    .await
                    .map_err(|e| (e.code(), e.to_string()))?;
                let put = Box::new(PutState {
                    upload,
                    len,
                    announced: addr,
                    ticket,
                });
                if has_more {
                    self.inbound.insert(corr_id, Inbound::Receiving(put));
                } else {
                    glommio::spawn_local(commit(ctx, out, corr_id, put)).detach();
                }
            }
        }
        Ok(())
    }

    /// The write rule and the size limit, checked before any byte is stored.
    fn admit_put(
        &self,
        who: &Principal,
        may_write: bool,
        len: u64,
        has_more: bool,
    ) -> Result<(), (ErrorCode, String)> {
        let limits = &self.ctx.limits;
        if !may_write {
            let message = if who.token.is_empty() {
                format!(
                    "tenant {}: writes need a bearer token in the START frame's capability section",
                    who.tenant_id
                )
            } else {
                format!(
                    "tenant {}: the capability token is not a write token of this node",
                    who.tenant_id
                )
            };
            return Err((ErrorCode::Unauthorized, message));
        }
        if len > limits.object_bytes_max {
            let message = format!(
                "PUT of {len} bytes exceeds the object limit of {} bytes",
                limits.object_bytes_max
            );
            return Err((ErrorCode::TooLarge, message));
        }
        if len > 0 && !has_more {
            let message = format!("PUT announces {len} bytes but its START frame carries END");
            return Err((ErrorCode::BadRequest, message));
        }
        Ok(())
    }

    async fn on_data(&mut self, frame: Frame) -> Result<(), Reject> {
        let corr_id = frame.header.corr_id;
        let end = frame.header.flags.contains(Flags::END);
        let Some(inbound) = self.inbound.remove(&corr_id) else {
            let message = format!("DATA for corr_id {corr_id}, which has no upload in progress");
            return Err(reject(corr_id, ErrorCode::BadFrame, &message));
        };
        let Inbound::Receiving(mut put) = inbound else {
            if !end {
                self.inbound.insert(corr_id, Inbound::Skipping);
            }
            return Ok(());
        };
        let received = match receive(&mut put, &frame.payload).await {
            Ok(()) if !end => {
                self.inbound.insert(corr_id, Inbound::Receiving(put));
                return Ok(());
            }
            Ok(()) if put.upload.len() != put.len => Err((
                ErrorCode::BadRequest,
                format!(
                    "upload ended after {} of the {} bytes its START announced",
                    put.upload.len(),
                    put.len
                ),
            )),
            other => other,
        };
        match received {
            Ok(()) => {
                let (ctx, out) = (Rc::clone(&self.ctx), Rc::clone(&self.out));
                glommio::spawn_local(commit(ctx, out, corr_id, put)).detach();
            }
            Err((code, message)) => {
                let PutState { upload, ticket, .. } = *put;
                let account = Account::Admitted(ticket, upload.len());
                upload.abort().await;
                if !end {
                    self.inbound.insert(corr_id, Inbound::Skipping);
                }
                answer_error(&self.ctx, &self.out, corr_id, code, &message, account).await;
            }
        }
        Ok(())
    }
}

/// Who is asking: the tenant named in the frame header and the bearer token from the
/// START frame's capability section.
struct Principal {
    tenant_id: u128,
    token: Bytes,
}

/// Appends one DATA frame's bytes to an upload after checking its DATA header.
async fn receive(put: &mut PutState, payload: &Bytes) -> Result<(), (ErrorCode, String)> {
    let (data, raw) = DataHeader::split(payload).map_err(|e| (e.code(), e.to_string()))?;
    let received = put.upload.len();
    if data.offset != received || data.total_len != put.len {
        let message = format!(
            "DATA at offset {} of {} bytes, expected offset {received} of {}",
            data.offset, data.total_len, put.len
        );
        return Err((ErrorCode::BadRequest, message));
    }
    if let (Some(obj), Some(announced)) = (data.obj, put.announced) {
        if obj != announced {
            let message = format!("DATA names {obj} but START announced {announced}");
            return Err((ErrorCode::BadRequest, message));
        }
    }
    if received + raw.len() as u64 > put.len {
        let message = format!(
            "DATA carries bytes past the {} bytes START announced",
            put.len
        );
        return Err((ErrorCode::BadRequest, message));
    }
    put.upload
        .write(&raw)
        .await
        .map_err(|e| (e.code(), e.to_string()))
}

/// Finishes an upload: digest check against the announced address, then commit.
async fn commit(ctx: Rc<OapContext>, out: SharedOutboxes, corr_id: u64, put: Box<PutState>) {
    let PutState {
        upload,
        announced,
        ticket,
        ..
    } = *put;
    let account = Account::Admitted(ticket, upload.len());
    let staged = match upload.finish(String::new()).await {
        Ok(s) => s,
        Err(e) => {
            return answer_error(&ctx, &out, corr_id, e.code(), &e.to_string(), account).await;
        }
    };
    let addr = staged.meta.addr();
    let len = staged.meta.len();
    if let Some(announced) = announced.filter(|a| *a != addr) {
        ron_shards::shard::discard(staged).await;
        let message = format!("body hashes to {addr}, not to the announced {announced}");
        let code = ErrorCode::UploadDigestMismatch;
        return answer_error(&ctx, &out, corr_id, code, &message, account).await;
    }
    let status = match ctx.shard.commit(staged).await {
        Ok(CommitOutcome::Created) => 201,
        Ok(CommitOutcome::AlreadyStored) => 200,
        Err(e) => {
            return answer_error(&ctx, &out, corr_id, e.code(), &e.to_string(), account).await;
        }
    };
    let info = ObjectInfo { obj: addr, len };
    let frame = ok_frame(Flags::END, status, corr_id, &info.to_payload());
    answer(&ctx, &out, corr_id, frame, status, account).await;
}

async fn stat(
    ctx: Rc<OapContext>,
    out: SharedOutboxes,
    corr_id: u64,
    addr: Address,
    ticket: Ticket,
) {
    let account = Account::Admitted(ticket, 0);
    match ctx.shard.meta(&addr).await {
        Ok(meta) => {
            let info = ObjectInfo {
                obj: addr,
                len: meta.len(),
            };
            let frame = ok_frame(Flags::END, 200, corr_id, &info.to_payload());
            answer(&ctx, &out, corr_id, frame, 200, account).await;
        }
        Err(e) => answer_error(&ctx, &out, corr_id, e.code(), &e.to_string(), account).await,
    }
}

/// The bytes of `range` (inclusive) a GET sends, or why it cannot.
fn resolve_range(
    range: Option<InclusiveRange>,
    total: u64,
) -> Result<(u16, u64, u64), (ErrorCode, String)> {
    match range {
        None => Ok((200, 0, total)),
        Some(r) if r.first >= total => Err((
            ErrorCode::RangeNotSatisfiable,
            format!(
                "range [{}, {}] starts past the object's {total} bytes",
                r.first, r.last
            ),
        )),
        Some(r) => {
            let last = r.last.min(total - 1);
            Ok((206, r.first, last - r.first + 1))
        }
    }
}

/// A GET as the request task needs it.
struct GetRequest {
    corr_id: u64,
    addr: Address,
    range: Option<InclusiveRange>,
    /// Verified streaming: whole groups, each DATA header with its proof's parents.
    proof: bool,
}

/// GET: the START frame, one DATA frame per verified group slice, END. The next group
/// is fetched while the current one waits for the writer.
async fn get(ctx: Rc<OapContext>, out: SharedOutboxes, req: GetRequest, ticket: Ticket) {
    let corr_id = req.corr_id;
    let Found {
        meta,
        total,
        status,
        offset,
        len,
        mut current,
    } = match find(&ctx, &req).await {
        Ok(found) => found,
        Err((code, message)) => {
            let account = Account::Admitted(ticket, 0);
            return answer_error(&ctx, &out, corr_id, code, &message, account).await;
        }
    };
    let start = GetStart {
        obj: req.addr,
        total_len: total,
        offset,
        len,
        chunk: DATA_CHUNK_BYTES,
    };
    let (json, json_len) = start.write_json();
    let mut head = BytesMut::with_capacity(256);
    write_response_frame(&mut head, Flags::START, status, corr_id, &json[..json_len])
        .expect("a GET start frame is small");
    let Some(first) = current.take() else {
        // An empty object: START and END, nothing between.
        let (json, json_len) = GetEnd::write_ok_json(0);
        write_response_frame(&mut head, Flags::END, status, corr_id, &json[..json_len])
            .expect("a GET end frame is small");
        let frame = OutFrame {
            head: head.freeze(),
            body: Bytes::new(),
            tail: Bytes::new(),
        };
        return answer(
            &ctx,
            &out,
            corr_id,
            frame,
            status,
            Account::Admitted(ticket, 0),
        )
        .await;
    };
    let stream = GroupStream {
        ctx: &ctx,
        out: &out,
        corr_id,
        meta: &meta,
        offset,
        len,
        status,
        proof: req.proof,
    };
    match stream.send(first, head).await {
        Ok(()) => ctx.admission.finish(ticket, status, len),
        Err(Some((code, message))) => {
            let account = Account::Admitted(ticket, 0);
            answer_error(&ctx, &out, corr_id, code, &message, account).await;
        }
        Err(None) => {}
    }
}

/// What a GET found before its START frame: the object, the bytes to send, and the
/// first of their groups, already verified (a rotten first group is a clean error).
struct Found {
    meta: Rc<ObjectMeta>,
    total: u64,
    /// 200 or 206.
    status: u16,
    offset: u64,
    len: u64,
    current: Option<Bytes>,
}

async fn find(ctx: &OapContext, req: &GetRequest) -> Result<Found, (ErrorCode, String)> {
    let failed = |e: ron_shards::ShardError| (e.code(), e.to_string());
    let meta = ctx.shard.meta(&req.addr).await.map_err(failed)?;
    let total = meta.len();
    let (status, offset, len) = resolve_range(req.range, total)?;
    let current = if len > 0 {
        let first = GroupIndex::containing(offset);
        Some(ctx.shard.group(&meta, first).await.map_err(failed)?)
    } else {
        None
    };
    Ok(Found {
        meta,
        total,
        status,
        offset,
        len,
        current,
    })
}

/// The DATA frames of one GET: bytes `[offset, offset + len)` of `meta`'s object.
struct GroupStream<'a> {
    ctx: &'a Rc<OapContext>,
    out: &'a SharedOutboxes,
    corr_id: u64,
    meta: &'a Rc<ObjectMeta>,
    offset: u64,
    len: u64,
    /// 200 or 206, repeated on END.
    status: u16,
    proof: bool,
}

impl GroupStream<'_> {
    /// Sends every DATA frame, starting with the already verified `first` group; the
    /// first carries `start` (the START frame) before it, the last the END frame after
    /// it. `Err(None)`: the connection closed.
    async fn send(&self, first: Bytes, start: BytesMut) -> Result<(), Option<(ErrorCode, String)>> {
        let range = GroupRange::covering(self.offset, self.len);
        let mut group = range.first;
        let mut bytes = first;
        let mut head = start;
        loop {
            let next = (group < range.last).then(|| {
                let (shard, meta) = (Rc::clone(&self.ctx.shard), Rc::clone(self.meta));
                let g = GroupIndex(group.0 + 1);
                glommio::spawn_local(async move { shard.group(&meta, g).await })
            });
            let last = next.is_none();
            let frame = self.data_frame(range, group, bytes, head, last);
            push(self.out, self.corr_id, frame, last)
                .await
                .map_err(|_| None)?;
            head = BytesMut::new();
            let Some(next) = next else {
                return Ok(());
            };
            group = GroupIndex(group.0 + 1);
            // A group failing verification ends the stream with 500 bad_digest; its
            // bytes are never sent.
            bytes = next.await.map_err(|e| Some((e.code(), e.to_string())))?;
        }
    }

    /// One group's DATA frame, appended to `head`: the slice inside the range, or with
    /// `proof` the whole group and the parent nodes that precede it; with `last`, the
    /// END frame follows.
    fn data_frame(
        &self,
        range: GroupRange,
        group: GroupIndex,
        bytes: Bytes,
        mut head: BytesMut,
        last: bool,
    ) -> OutFrame {
        debug_assert!(bytes.len() <= GROUP_LEN_BYTES as usize);
        let group_start = group.start_offset();
        let (raw, raw_offset) = if self.proof {
            (bytes, group_start)
        } else {
            let from = self.offset.saturating_sub(group_start) as usize;
            let to = ((self.offset + self.len - group_start) as usize).min(bytes.len());
            (bytes.slice(from..to), group_start + from as u64)
        };
        let mut parents = Vec::new();
        if self.proof {
            parents_before(&self.meta.tree, range, group, &mut parents);
        }
        let meta = FrameMeta {
            flags: Flags::RESP,
            code: 0,
            app_proto_id: APP_OBJECTS,
            tenant_id: 0,
            corr_id: self.corr_id,
        };
        let header = DataHeader {
            obj: Some(self.meta.addr()),
            offset: raw_offset,
            total_len: self.meta.len(),
        };
        head.reserve(ron_codec::frame::HEADER_LEN + header.encoded_len() + 2 * parents.len() + 16);
        header
            .write_frame_head_with_parents(
                &mut head,
                meta,
                &parents,
                raw.len(),
                self.ctx.limits.max_frame,
            )
            .expect("one 64 KiB group, its header and its proof fit in max_frame");
        let mut tail = Bytes::new();
        if last {
            let (json, json_len) = GetEnd::write_ok_json(self.len);
            let mut end = BytesMut::with_capacity(ron_codec::frame::HEADER_LEN + json_len);
            write_response_frame(
                &mut end,
                Flags::END,
                self.status,
                self.corr_id,
                &json[..json_len],
            )
            .expect("a GET end frame is small");
            tail = end.freeze();
        }
        OutFrame {
            head: head.freeze(),
            body: raw,
            tail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_of(n: u8) -> OutFrame {
        OutFrame {
            head: Bytes::from(vec![n]),
            body: Bytes::new(),
            tail: Bytes::new(),
        }
    }

    fn push_now(o: &mut Outboxes, corr_id: u64, n: u8, end: bool) -> Poll<Result<(), Closed>> {
        let mut f = Some(frame_of(n));
        o.poll_push(&Context::from_waker(Waker::noop()), corr_id, &mut f, end)
    }

    #[test]
    fn writer_takes_frames_round_robin_and_forgets_ended_requests() {
        let mut o = Outboxes::new();
        o.open(1);
        o.open(2);
        assert!(push_now(&mut o, 1, 10, false).is_ready());
        assert!(push_now(&mut o, 1, 11, false).is_ready());
        assert!(
            push_now(&mut o, 1, 12, false).is_pending(),
            "outbox is full"
        );
        assert!(push_now(&mut o, 2, 20, true).is_ready());
        let order: Vec<u8> = std::iter::from_fn(|| o.take_next().map(|f| f.head[0])).collect();
        assert_eq!(order, vec![10, 20, 11]);
        assert!(o.contains(1) && !o.contains(2), "2 ended and was sent");
    }

    #[test]
    fn a_failing_connection_refuses_pushes_and_sends_its_answer_first() {
        let mut o = Outboxes::new();
        o.open(1);
        assert!(push_now(&mut o, 1, 10, false).is_ready());
        o.set_state(WriterState::Failing(Some(frame_of(99))));
        assert!(matches!(
            push_now(&mut o, 1, 11, false),
            Poll::Ready(Err(Closed))
        ));
        let cx = Context::from_waker(Waker::noop());
        match o.poll_next(&cx) {
            Poll::Ready(Next::Last(f)) => assert_eq!(f.head[0], 99),
            _ => panic!("the rejection goes first"),
        }
        assert!(matches!(o.poll_next(&cx), Poll::Ready(Next::Done)));
    }

    #[test]
    fn ranges_resolve_like_http() {
        assert_eq!(resolve_range(None, 10).unwrap(), (200, 0, 10));
        let r = |first, last| Some(InclusiveRange { first, last });
        assert_eq!(resolve_range(r(2, 4), 10).unwrap(), (206, 2, 3));
        assert_eq!(resolve_range(r(2, 400), 10).unwrap(), (206, 2, 8));
        let (code, message) = resolve_range(r(10, 12), 10).unwrap_err();
        assert_eq!(code, ErrorCode::RangeNotSatisfiable);
        assert_eq!(message, "range [10, 12] starts past the object's 10 bytes");
        assert!(resolve_range(r(0, 0), 0).is_err());
    }
}
