//! The reading side of a connection: frames decoded and dispatched — HELLO answered,
//! GET/STAT started as request tasks, PUT data fed to its upload — and protocol
//! violations turned into the one answer sent before the connection closes.

use std::collections::HashMap;
use std::rc::Rc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use ron_codec::frame::{BodyGate, Flags, Frame, FrameDecoder, FrameHeader, APP_HELLO, APP_OBJECTS};
use ron_codec::inflate::Inflater;
use ron_codec::messages::{HelloRequest, ObjectRequest};
use ron_io::stream::{ReadHalf, Transport};
use ron_link::counters::FrontCounters;
use ron_link::requests::{Op, Protocol};

use super::answer::{refuse, Account};
use super::get::{self, GetRequest};
use super::outbox::{OutFrame, SharedOutboxes};
use super::put::{self, PutStart, PutState, TOKEN_CARRIER};
use super::writer::refusal_frame_on;
use super::{OapContext, CLIENT_FLAGS};
use crate::admission::{Claims, Ticket};
use crate::buffers::{read_pooled, PooledBuffer};
use crate::limits::REQUEST_INFLATE_BYTES_MAX;
use crate::refusal::Refusal;
use crate::service::WriteCredential;
use crate::transfer::{self, Transfer};

/// Refused uploads a connection may leave unfinished (their DATA skipped if it comes),
/// per request it may have in flight: past it, a protocol error (400, close).
const SKIPPED_UPLOADS_PER_REQUEST: usize = 4;
/// How long an idle wait lasts once the stop's drain began: a connection with answers
/// still going out looks again this often, and closes once they are done.
const DRAINING_WAIT: Duration = Duration::from_millis(100);
/// The shortest socket wait an upload's or a frame header's deadline sets (a zero one
/// would mean none).
const UPLOAD_WAIT_MIN: Duration = Duration::from_millis(1);

/// How the reading side of a connection ended.
pub(super) enum ReadEnd {
    /// End of stream or idle timeout: answer what is in flight, then close.
    PeerDone,
    /// Read error or a frame left unfinished past the timeout: close now.
    Broken,
    /// A protocol error: this answer (its status beside it, for the counts), then close.
    Rejected(OutFrame, u16),
}

/// An upload being received, or a refused request whose remaining DATA is skipped.
enum Inbound {
    Receiving(Box<PutState>),
    Skipping,
}

/// Which bodies a connection buffers: a request's (HELLO, START) up to `request_max`, and
/// the DATA of an upload it is receiving (up to `max_frame`); any other frame's body is
/// read and dropped as it comes, to be refused or ignored whole once it ended. A client
/// that has not been admitted holds at most one request frame's bytes — without this,
/// 1 MiB a connection: a START or a refused upload's DATA announced at the frame limit
/// and fed at the minimum rate, ten thousand connections a shard.
fn body_gate(header: &FrameHeader, inbound: &HashMap<u64, Inbound>, request_max: u32) -> BodyGate {
    let is_request = header.app_proto_id == APP_HELLO || header.flags.contains(Flags::START);
    if is_request && header.len > request_max {
        let len = header.len;
        return BodyGate::Refuse(ron_codec::Error::RequestFrameTooLarge {
            len,
            max: request_max,
        });
    }
    let receiving = || matches!(inbound.get(&header.corr_id), Some(Inbound::Receiving(_)));
    match is_request || (header.app_proto_id == APP_OBJECTS && receiving()) {
        true => BodyGate::Keep,
        false => BodyGate::Skip,
    }
}

/// Ends once the connection's writer has closed.
async fn writer_closed(out: &SharedOutboxes) -> Result<(PooledBuffer, usize), ReadEnd> {
    std::future::poll_fn(|cx| out.borrow_mut().poll_closed(cx)).await;
    Err(ReadEnd::Broken)
}

/// Why a START frame's request was not started: the refusal to answer, and its ticket
/// when it was admitted first (finished with the refusal: dropped, it would count the
/// request a second time, as one whose client left).
struct NotBegun {
    refusal: Refusal,
    ticket: Option<Ticket>,
}

impl NotBegun {
    fn unadmitted(refusal: Refusal) -> NotBegun {
        NotBegun {
            refusal,
            ticket: None,
        }
    }
}

/// A protocol error: the one answer to send before closing, on the offending frame's
/// `corr_id` and plane (`app_proto_id`).
struct Reject {
    corr_id: u64,
    /// Boxed: a protocol error is rare, and every frame's result carries this.
    refusal: Box<Refusal>,
    app_proto_id: u16,
}

fn reject(corr_id: u64, refusal: impl Into<Refusal>) -> Reject {
    Reject {
        corr_id,
        refusal: Box::new(refusal.into()),
        app_proto_id: APP_OBJECTS,
    }
}

impl Reject {
    /// The answer on `app_proto_id`'s plane: a HELLO's refusal is on 0, as its reply is.
    fn on_plane(self, app_proto_id: u16) -> Reject {
        Reject {
            app_proto_id,
            ..self
        }
    }
}

impl From<Reject> for ReadEnd {
    fn from(r: Reject) -> ReadEnd {
        let last = refusal_frame_on(r.app_proto_id, r.corr_id, &r.refusal);
        ReadEnd::Rejected(last, r.refusal.status())
    }
}

pub(super) struct Reader<S> {
    ctx: Rc<OapContext>,
    peer: Option<std::net::IpAddr>,
    half: ReadHalf<S>,
    out: SharedOutboxes,
    decoder: FrameDecoder,
    inbound: HashMap<u64, Inbound>,
    /// Since the connection began receiving (a frame begun, or uploads open).
    receiving: Option<Transfer>,
    /// When the frame header begun must be whole (`header_timeout` from when a read
    /// first left one part way).
    header_due: Option<Instant>,
    frames_seen: u64,
}

impl<S: Transport> Reader<S> {
    pub fn new(
        ctx: Rc<OapContext>,
        peer: Option<std::net::IpAddr>,
        half: ReadHalf<S>,
        out: SharedOutboxes,
        decoder: FrameDecoder,
    ) -> Reader<S> {
        Reader {
            ctx,
            peer,
            half,
            out,
            decoder,
            inbound: HashMap::new(),
            receiving: None,
            header_due: None,
            frames_seen: 0,
        }
    }

    pub async fn run(&mut self) -> ReadEnd {
        let out = Rc::clone(&self.out);
        loop {
            // The buffer goes back to the shard's pool once its bytes are decoded. A
            // writer that closed on its own (its send past the transfer deadline: a
            // client that stopped reading) ends the read too; else a client that also
            // sends nothing would hold the connection while its requests' outboxes kept
            // the idle timeout from ending it.
            let read = future::or(self.read(), writer_closed(&out));
            let (buf, n) = match read.await {
                Ok(read) => read,
                Err(end) => return end,
            };
            FrontCounters::add(&self.ctx.metrics().bytes_in, n as u64);
            let mut input = &buf[..n];
            loop {
                let Reader {
                    decoder,
                    inbound,
                    ctx,
                    ..
                } = &mut *self;
                let request_max = ctx.limits.request_frame_bytes_max;
                let gate = |header: &FrameHeader| body_gate(header, inbound, request_max);
                match decoder.decode_gated(&mut input, gate) {
                    Ok(Some(frame)) => {
                        // Boxed: a frame's handling lives on the heap while it runs,
                        // so an idle connection's task stays small.
                        let app_proto_id = frame.header.app_proto_id;
                        if let Err(rejected) = Box::pin(self.on_frame(frame)).await {
                            return rejected.on_plane(app_proto_id).into();
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let raw = self.decoder.rejected_header();
                        let corr_id = raw.map_or(0, |h| h.corr_id);
                        let app_proto_id = raw.map_or(APP_OBJECTS, |h| h.app_proto_id);
                        return reject(corr_id, e).on_plane(app_proto_id).into();
                    }
                }
            }
        }
    }

    /// One socket read. While the connection is receiving — inside a frame, or with
    /// uploads open — reads keep the transfer deadline (`crate::transfer`) from when it
    /// began receiving, and the uploads' slots are parked while nothing arrives. Between
    /// frames with nothing to receive, the idle timeout applies, the wait holds no read
    /// buffer (`crate::buffers`), and silence ends the connection only once nothing is in
    /// flight: a client downloading a large object has nothing to say.
    async fn read(&mut self) -> Result<(PooledBuffer, usize), ReadEnd> {
        loop {
            let behind = self.uploads_behind(Instant::now());
            if !behind.is_empty() {
                // Boxed: an idle connection's task stays small (it waits in this
                // function between frames); only a cut pays for the box.
                Box::pin(self.cut_uploads(behind)).await;
            }
            if self.decoder.is_idle() && !self.uploads_open() {
                break;
            }
            let header_due = self.header_due();
            let upload_due = self.next_upload_due();
            let due = match (header_due, upload_due) {
                (Some(header), Some(upload)) => Some(header.min(upload)),
                (header, upload) => header.or(upload),
            };
            match self.read_receiving(due).await {
                Ok(read) => return Ok(read),
                Err(ReadEnd::Broken) if header_due.is_some_and(|due| Instant::now() >= due) => {
                    let timeout_ms = self.ctx.limits.header_timeout.as_millis() as u64;
                    return Err(reject(0, Refusal::FrameHeaderTimeout { timeout_ms }).into());
                }
                // An upload's own deadline ended the wait, not the connection's: it is
                // cut (and counted) at the top of the loop, and the others go on.
                Err(ReadEnd::Broken) if self.an_upload_fell_behind(upload_due) => {}
                Err(end) => return Err(end),
            }
        }
        self.receiving = None;
        loop {
            // The stop's drain ends the wait (`crate::drain`); from then on the wait is
            // short, and the connection closes at the first one with nothing in flight
            // (answers under way still go out), as an idle HTTP/1.1 one does.
            let draining = self.ctx.draining.is_draining();
            let wait = match draining {
                true => DRAINING_WAIT,
                false => self.ctx.limits.idle_timeout,
            };
            self.half.set_read_timeout(Some(wait));
            let Reader { half, ctx, .. } = &mut *self;
            let read = async { Some(read_pooled(half, &ctx.read_buffers).await) };
            let drain = async {
                match draining {
                    true => std::future::pending().await,
                    false => ctx.draining.wait().await,
                }
                None
            };
            let Some(read) = future::or(read, drain).await else {
                continue;
            };
            return match read {
                Ok((_, 0)) => Err(ReadEnd::PeerDone),
                Ok(read) => Ok(read),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    if self.busy() {
                        continue;
                    }
                    Err(ReadEnd::PeerDone)
                }
                Err(_) => Err(ReadEnd::Broken),
            };
        }
    }

    /// When the frame header part way in must be whole, if one is; a slow-loris client
    /// sending a header a byte at a time gets HTTP's head deadline, not a body's grace.
    fn header_due(&mut self) -> Option<Instant> {
        if !self.decoder.header_begun() {
            self.header_due = None;
            return None;
        }
        let timeout = self.ctx.limits.header_timeout;
        Some(
            *self
                .header_due
                .get_or_insert_with(|| Instant::now() + timeout),
        )
    }

    /// When the first open upload falls behind its own pace if nothing more of it comes.
    fn next_upload_due(&self) -> Option<Instant> {
        self.inbound
            .values()
            .filter_map(|i| match i {
                Inbound::Receiving(put) => Some(put.pace.deadline(put.session.received())),
                Inbound::Skipping => None,
            })
            .min()
    }

    /// Whether a read that failed did so because an upload's deadline (`due`) came
    /// while the connection itself was on time.
    fn an_upload_fell_behind(&self, due: Option<Instant>) -> bool {
        let now = Instant::now();
        let connection_on_time = self
            .receiving
            .as_ref()
            .is_none_or(|t| t.pace.time_left(t.moved, now).is_some());
        due.is_some_and(|due| now >= due) && connection_on_time
    }

    /// The open uploads that fell behind their own pace, to be cancelled (answered 408,
    /// their slots and temp files given back; later DATA of them skipped): the
    /// connection's pace counts every byte it receives, so one upload fed at the minimum
    /// rate kept every other upload of the connection open without a byte — all 32
    /// upload slots of a shard held by one connection. Time an upload earned past its
    /// grace is spent first, as for a connection's (`crate::transfer`).
    fn uploads_behind(&mut self, now: Instant) -> Vec<u64> {
        self.inbound
            .iter_mut()
            .filter_map(|(corr_id, inbound)| match inbound {
                Inbound::Receiving(put) => {
                    let received = put.session.received();
                    put.pace.spend_credit_past_grace(received, now);
                    put.pace
                        .time_left(received, now)
                        .is_none()
                        .then_some(*corr_id)
                }
                Inbound::Skipping => None,
            })
            .collect()
    }

    /// Cancels the uploads `behind` found ([`Reader::uploads_behind`]), each counted a
    /// transfer-deadline drop.
    async fn cut_uploads(&mut self, behind: Vec<u64>) {
        FrontCounters::add(
            &self.ctx.metrics().transfer_deadline_drops,
            behind.len() as u64,
        );
        for corr_id in behind {
            let Some(Inbound::Receiving(put)) = self.inbound.insert(corr_id, Inbound::Skipping)
            else {
                continue;
            };
            // Its DATA frame part way in (up to 1 MiB, kept while it was receiving) is
            // dropped now, not held until the rest of it comes.
            self.decoder.skip_rest_of(corr_id);
            let PutState {
                session, ticket, ..
            } = *put;
            let received = session.received();
            session.abort().await;
            let limits = &self.ctx.limits;
            let refusal = Refusal::UploadTooSlow {
                received,
                rate_min_bytes_per_s: limits.body_rate_min_bytes_per_s,
                grace_ms: limits.body_timeout.as_millis() as u64,
            };
            let account = Account::Admitted(ticket, received);
            refuse(&self.ctx, &self.out, corr_id, &refusal, account).await;
        }
    }

    async fn read_receiving(
        &mut self,
        due: Option<Instant>,
    ) -> Result<(PooledBuffer, usize), ReadEnd> {
        let Reader {
            ctx,
            half,
            inbound,
            receiving,
            ..
        } = self;
        let transfer = receiving.get_or_insert_with(|| Transfer::new(ctx.pace(Instant::now())));
        let park = || {
            inbound
                .values()
                .filter_map(|i| match i {
                    Inbound::Receiving(put) => Some(put.ticket.park()),
                    Inbound::Skipping => None,
                })
                .collect::<Vec<_>>()
        };
        // An upload's or the frame header's own deadline, whichever comes first.
        let own_left = due.map(|due| due.saturating_duration_since(Instant::now()));
        let set_timeout = |h: &ReadHalf<S>, left: Duration| {
            let left = own_left.map_or(left, |own| left.min(own.max(UPLOAD_WAIT_MIN)));
            h.set_read_timeout(Some(left));
            left
        };
        let pool = &ctx.read_buffers;
        match transfer::read_pooled(half, pool, transfer, park, ctx.metrics(), set_timeout).await {
            // Uploads left unfinished are aborted either way; answers already queued
            // still go out unless a frame was cut short.
            Ok((_, 0)) if self.decoder.is_idle() => Err(ReadEnd::PeerDone),
            Ok((_, 0)) | Err(_) => Err(ReadEnd::Broken),
            Ok(read) => Ok(read),
        }
    }

    fn busy(&self) -> bool {
        !self.out.borrow().boxes.is_empty() || self.uploads_open()
    }

    /// Whether an admitted upload waits for DATA. A refused one whose DATA is being
    /// skipped is over (its END was answered): it neither keeps the connection receiving
    /// nor counts in flight, and the client may have stopped sending it altogether.
    fn uploads_open(&self) -> bool {
        self.inbound
            .values()
            .any(|i| matches!(i, Inbound::Receiving(_)))
    }

    /// Reads and drops what the peer still sends, for a while, before the close
    /// ([`crate::transfer::linger`]), into the shard's pooled read buffers.
    pub async fn linger(&mut self) {
        let pool = &self.ctx.read_buffers;
        crate::transfer::linger(&mut self.half, pool, |h, left| {
            h.set_read_timeout(Some(left))
        })
        .await
    }

    /// Removes the temp files of uploads the peer never finished. A refused upload's
    /// answer, still queued, goes out.
    pub async fn abort_uploads(&mut self) {
        for (corr_id, inbound) in std::mem::take(&mut self.inbound) {
            if let Inbound::Receiving(put) = inbound {
                self.out.borrow_mut().forget(corr_id);
                let PutState {
                    session, ticket, ..
                } = *put;
                let received = session.received();
                session.abort().await;
                // Settled to what arrived: the rest of its declared length, charged up
                // front, is given back (as HTTP does for a body cut short).
                self.ctx.admission.finish(ticket, 0, received);
            }
        }
    }

    async fn on_frame(&mut self, mut frame: Frame) -> Result<(), Reject> {
        let header = frame.header;
        let corr_id = header.corr_id;
        self.frames_seen += 1;
        let unsupported = header.flags.bits() & !CLIENT_FLAGS;
        if unsupported != 0 || !header.flags.contains(Flags::REQ) {
            let flags = header.flags.bits();
            return Err(reject(corr_id, Refusal::ClientFlags { flags, unsupported }));
        }
        let is_start = header.flags.contains(Flags::START);
        if header.flags.contains(Flags::COMP) && (header.app_proto_id == APP_HELLO || is_start) {
            // A request itself is a small JSON document: inflated before admission, but
            // never to more than REQUEST_INFLATE_BYTES_MAX.
            frame.payload = self.inflate(&frame, REQUEST_INFLATE_BYTES_MAX)?;
        }
        match header.app_proto_id {
            APP_HELLO => self.on_hello(&frame),
            APP_OBJECTS if is_start => self.on_start(frame).await,
            APP_OBJECTS => self.on_data(frame).await,
            app => Err(reject(corr_id, Refusal::UnknownApp { app })),
        }
    }

    /// Inflates a COMP payload with the shard's inflater, to at most `cap` bytes.
    fn inflate(&self, frame: &Frame, cap: u64) -> Result<Bytes, Reject> {
        let corr_id = frame.header.corr_id;
        let max_frame = self.decoder.max_frame();
        let mut inflater = self.ctx.inflater.borrow_mut();
        if inflater.is_none() {
            let ratio_max = self.ctx.limits.inflate_ratio_max;
            *inflater = Some(Inflater::new(ratio_max).map_err(|e| reject(corr_id, e))?);
        }
        let inflater = inflater.as_mut().expect("set above");
        inflater
            .inflate_at_most(&frame.payload, max_frame, cap)
            .map_err(|e| reject(corr_id, e))
    }

    fn on_hello(&mut self, frame: &Frame) -> Result<(), Reject> {
        let corr_id = frame.header.corr_id;
        if self.frames_seen != 1 {
            return Err(reject(corr_id, Refusal::HelloNotFirst));
        }
        HelloRequest::parse(&frame.payload).map_err(|e| reject(corr_id, e))?;
        let reply = self.ctx.hello_reply().frame(corr_id);
        let mut out = self.out.borrow_mut();
        out.open(corr_id);
        let mut frame = Some(OutFrame::whole(&reply));
        // A fresh outbox has room: this cannot be Pending.
        let _ = out.poll_push(
            &Context::from_waker(Waker::noop()),
            corr_id,
            &mut frame,
            true,
        );
        Ok(())
    }

    fn requests_in_flight(&self) -> usize {
        let out = self.out.borrow();
        let receiving = self.inbound.iter().filter(|(corr_id, inbound)| {
            matches!(inbound, Inbound::Receiving(_)) && !out.contains(**corr_id)
        });
        out.boxes.len() + receiving.count()
    }

    async fn on_start(&mut self, frame: Frame) -> Result<(), Reject> {
        let header = frame.header;
        let corr_id = header.corr_id;
        let started = Instant::now();
        if let Some(Inbound::Skipping) = self.inbound.get(&corr_id) {
            // The refused upload is over; frames come in order, so any DATA of it came
            // before this START. Its corr_id is free again.
            self.inbound.remove(&corr_id);
        }
        if self.out.borrow().contains(corr_id) || self.inbound.contains_key(&corr_id) {
            return Err(reject(corr_id, Refusal::DuplicateCorrId { corr_id }));
        }
        let limit = self.ctx.limits.requests_per_connection_max;
        // Refused uploads whose DATA may still come are remembered apart, up to
        // SKIPPED_UPLOADS_PER_REQUEST per request a connection may have in flight.
        let skipping = self
            .inbound
            .values()
            .filter(|i| matches!(i, Inbound::Skipping))
            .count();
        let skipping_max = SKIPPED_UPLOADS_PER_REQUEST * limit as usize;
        if self.requests_in_flight() >= limit as usize || skipping >= skipping_max {
            return Err(reject(corr_id, Refusal::TooManyInFlight { limit }));
        }
        self.out.borrow_mut().open(corr_id);
        let request = ObjectRequest::parse(&frame.payload);
        let op = match &request {
            Ok(ObjectRequest::Get { .. }) => Op::Get,
            Ok(ObjectRequest::Stat { .. }) => Op::Stat,
            Ok(ObjectRequest::Put { .. }) => Op::Put,
            Err(_) => Op::Other,
        };
        // Only an upload has DATA to skip once refused: a GET or STAT sent without END
        // is one frame all the same (remembered as skipping, 128 refused ones closed the
        // connection as "more than max_inflight in flight").
        let has_more = !header.flags.contains(Flags::END) && !matches!(op, Op::Get | Op::Stat);
        let begun = match request {
            Ok(request) => self.begin(&frame, request, op, started).await,
            Err(e) => Err(NotBegun::unadmitted(e.into())),
        };
        if let Err(NotBegun { refusal, ticket }) = begun {
            if has_more {
                self.inbound.insert(corr_id, Inbound::Skipping);
            }
            let account = match ticket {
                Some(ticket) => Account::Admitted(ticket, 0),
                None => Account::Unadmitted(op, started),
            };
            refuse(&self.ctx, &self.out, corr_id, &refusal, account).await;
        }
        Ok(())
    }

    /// Admits the request a START frame names and starts it, or says why not.
    async fn begin(
        &mut self,
        frame: &Frame,
        request: ObjectRequest,
        op: Op,
        started: Instant,
    ) -> Result<(), NotBegun> {
        if self.ctx.draining.is_draining() {
            return Err(NotBegun::unadmitted(Refusal::ShuttingDown));
        }
        let tenant_id = frame.header.tenant_id;
        let claims = Claims {
            token: (!frame.cap.is_empty()).then_some(&frame.cap[..]),
            peer: self.peer,
        };
        let identity = self.ctx.admission.identify(claims);
        let ticket = self
            .ctx
            .admission
            .admit(&identity.tenant, Protocol::Oap, op, started)
            .map_err(NotBegun::unadmitted)?;
        let corr_id = frame.header.corr_id;
        let (ctx, out) = (Rc::clone(&self.ctx), Rc::clone(&self.out));
        match request {
            ObjectRequest::Get {
                addr,
                range,
                proof,
                local,
                kept,
                node,
            } => {
                let request = GetRequest {
                    corr_id,
                    addr,
                    range,
                    proof,
                    local,
                    kept,
                    node,
                };
                let task = glommio::spawn_local(get::get(ctx, out, request, ticket));
                self.out.borrow_mut().streams.insert(corr_id, task);
            }
            ObjectRequest::Stat { addr } => {
                glommio::spawn_local(get::stat(ctx, out, corr_id, addr, ticket)).detach();
            }
            ObjectRequest::Put { len, addr, copies } => {
                let start = PutStart {
                    len,
                    announced: addr,
                    copies,
                    has_more: !frame.header.flags.contains(Flags::END),
                    credential: WriteCredential {
                        may_write: identity.may_write,
                        token_given: !frame.cap.is_empty(),
                        carrier: TOKEN_CARRIER,
                        tenant_id: Some(tenant_id),
                    },
                };
                self.begin_put(corr_id, start, ticket).await?;
            }
        }
        Ok(())
    }

    async fn begin_put(
        &mut self,
        corr_id: u64,
        start: PutStart,
        mut ticket: Ticket,
    ) -> Result<(), NotBegun> {
        let has_more = start.has_more;
        let declared = start.len;
        let begun = put::begin(&self.ctx, start, ticket.tenant()).await;
        let (session, copies, copy_wait) = match begun {
            Ok(begun) => begun,
            Err(refusal) => {
                return Err(NotBegun {
                    refusal,
                    ticket: Some(ticket),
                })
            }
        };
        self.ctx.admission.charge_up_front(&mut ticket, declared);
        let put = PutState {
            session,
            ticket,
            copies,
            copy_wait,
            pace: self.ctx.pace(Instant::now()),
        };
        if has_more {
            self.inbound
                .insert(corr_id, Inbound::Receiving(Box::new(put)));
        } else {
            let (ctx, out) = (Rc::clone(&self.ctx), Rc::clone(&self.out));
            glommio::spawn_local(put::commit(ctx, out, corr_id, put)).detach();
        }
        Ok(())
    }

    /// A DATA frame: its payload is inflated (if COMP) only for an upload that was
    /// admitted; the DATA of a refused upload is dropped unread.
    async fn on_data(&mut self, mut frame: Frame) -> Result<(), Reject> {
        let corr_id = frame.header.corr_id;
        let end = frame.header.flags.contains(Flags::END);
        let Some(inbound) = self.inbound.remove(&corr_id) else {
            return Err(reject(corr_id, Refusal::DataWithoutUpload { corr_id }));
        };
        let Inbound::Receiving(mut put) = inbound else {
            if !end {
                self.inbound.insert(corr_id, Inbound::Skipping);
            }
            return Ok(());
        };
        // The gate kept every body of an upload receiving when its header came, and
        // nothing makes an upload receiving part way through a frame.
        assert!(
            !frame.is_skipped(),
            "DATA of upload {corr_id} skipped while it was receiving"
        );
        if frame.header.flags.contains(Flags::COMP) {
            match self.inflate(&frame, u64::MAX) {
                Ok(payload) => frame.payload = payload,
                Err(rejected) => {
                    self.inbound.insert(corr_id, Inbound::Receiving(put));
                    return Err(rejected);
                }
            }
        }
        match put::receive(&mut put, &frame.payload).await {
            Ok(()) if !end => {
                self.inbound.insert(corr_id, Inbound::Receiving(put));
            }
            Ok(()) => {
                let (ctx, out) = (Rc::clone(&self.ctx), Rc::clone(&self.out));
                glommio::spawn_local(put::commit(ctx, out, corr_id, *put)).detach();
            }
            Err(refusal) => {
                let PutState {
                    session, ticket, ..
                } = *put;
                let account = Account::Admitted(ticket, session.received());
                session.abort().await;
                if !end {
                    self.inbound.insert(corr_id, Inbound::Skipping);
                }
                refuse(&self.ctx, &self.out, corr_id, &refusal, account).await;
            }
        }
        Ok(())
    }
}
