//! The read side of a connection: one buffer of a size fixed at start-up, lent by the
//! shard's pool only while it is needed (none while idle), the request head
//! (idle timeout before its first byte, header deadline until its last), and request
//! bodies (length-delimited or chunked) streamed into an upload within the request's
//! transfer deadline (`crate::transfer`).

use std::future::Future;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::AsyncReadExt;
use ron_codec::http::chunked::{ChunkedDecoder, ChunkedStep};
use ron_codec::http::head::{later_http1_minor_at, parse_request_head, BodyFraming, HeadParse};
use ron_io::stream::Transport;
use ron_link::counters::FrontCounters;

use super::request::Request;
use super::{Abort, Conn, HttpContext};
use crate::admission::Ticket;
use crate::buffers::{read_pooled, BufferPool, PooledBuffer};
use crate::refusal::Refusal;
use crate::service::UploadSession;
use crate::transfer::{self, Transfer};

/// The connection's read buffer: lent by the shard's pool while it holds bytes or a
/// request is being received, given back between requests (`crate::buffers`).
pub(super) struct ReadBuf {
    data: Option<PooledBuffer>,
    pool: Rc<BufferPool>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    pub fn new(pool: Rc<BufferPool>) -> ReadBuf {
        ReadBuf {
            data: None,
            pool,
            start: 0,
            end: 0,
        }
    }

    pub fn filled(&self) -> &[u8] {
        match &self.data {
            Some(data) => &data[self.start..self.end],
            None => &[],
        }
    }

    /// Writes `byte` at `at` of the filled bytes (a request line's version read as
    /// another: [`later_http1_minor_at`]).
    fn rewrite(&mut self, at: usize, byte: u8) {
        if let Some(data) = &mut self.data {
            data[self.start + at] = byte;
        }
    }

    /// Gives the buffer back to the pool if it holds no bytes (a read after takes one
    /// again): a request without a body needs none while it is answered, and an
    /// HTTP/2 stream waiting on the client's window would hold it for as long.
    pub fn release_if_empty(&mut self) {
        if self.filled().is_empty() {
            self.data = None;
            self.start = 0;
            self.end = 0;
        }
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Waits for the next request's first bytes with the buffer (empty: between
    /// requests) given back to the pool meanwhile; returns the bytes read (0 at end of
    /// stream).
    async fn fill_idle<S: Transport>(&mut self, stream: &mut S) -> io::Result<usize> {
        debug_assert!(self.filled().is_empty(), "idle with unparsed bytes");
        self.data = None;
        let (data, n) = read_pooled(stream, &self.pool).await?;
        self.data = Some(data);
        self.end = n;
        Ok(n)
    }

    /// Reads once from `stream`, returning the bytes read (0 at end of stream).
    async fn fill<S: Transport>(&mut self, stream: &mut S) -> io::Result<usize> {
        let n = stream.read(self.room()).await?;
        self.end += n;
        Ok(n)
    }

    /// Reads once within the request's transfer deadline, its slot parked while
    /// nothing arrives.
    async fn fill_paced<S: Transport>(
        &mut self,
        stream: &mut S,
        transfer: &mut Transfer,
        ticket: Option<&Ticket>,
        metrics: &FrontCounters,
    ) -> io::Result<usize> {
        let park = transfer::park_one(ticket);
        let n = transfer::read(stream, self.room(), transfer, park, metrics, read_deadline).await?;
        self.end += n;
        Ok(n)
    }

    /// The free end of the buffer (taken from the pool if none is held), compacted
    /// first if it is full.
    fn room(&mut self) -> &mut [u8] {
        let data = self.data.get_or_insert_with(|| self.pool.take());
        if self.end == data.len() {
            data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut data[self.end..]
    }
}

// Inline on purpose: boxing the request would allocate on every request.
#[allow(clippy::large_enum_variant)]
pub(super) enum HeadOutcome {
    /// The request, the length of its head in the read buffer, and when its first bytes
    /// were in hand (the request's start: its latency and body deadline count from it).
    Complete(Request, usize, Instant),
    /// The peer closed or stayed idle past the idle timeout between requests.
    Closed,
    /// A head refused, and when its first bytes were in hand.
    Rejected(Refusal, Instant),
}

pub(super) async fn read_head<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
) -> Result<HeadOutcome, Abort> {
    let limits = &ctx.limits;
    if conn.rbuf.filled().is_empty() {
        let _ = conn
            .stream
            .tcp()
            .set_read_timeout(Some(limits.idle_timeout));
        // One read, polled once per wake: while it waits (the socket had nothing) the
        // connection holds no write buffer either. Polling it again before the wake, or
        // a second read, would only meet the same empty socket (`EAGAIN`) once more. The
        // stop's drain ends the wait: an idle connection closes at once (`crate::drain`).
        let mut idle = std::pin::pin!(conn.rbuf.fill_idle(&mut conn.stream));
        let mut drain = ctx.draining.wait();
        let wbuf = &mut conn.wbuf;
        let first = std::future::poll_fn(|cx| {
            if std::pin::Pin::new(&mut drain).poll(cx).is_ready() {
                return std::task::Poll::Ready(Ok(0));
            }
            let read = idle.as_mut().poll(cx);
            if read.is_pending() && wbuf.capacity() > 0 {
                ctx.write_buffers.give_back(std::mem::take(wbuf));
            }
            read
        })
        .await;
        match first {
            Ok(0) | Err(_) => return Ok(HeadOutcome::Closed),
            Ok(_) => {}
        }
        if conn.wbuf.capacity() == 0 {
            conn.wbuf = ctx.write_buffers.take();
        }
    }
    // The one clock read of a request that is already here.
    let started = Instant::now();
    let deadline = started + limits.header_timeout;
    let timed_out = || {
        let timeout_ms = limits.header_timeout.as_millis() as u64;
        HeadOutcome::Rejected(Refusal::HeadTimeout { timeout_ms }, started)
    };
    loop {
        match parse_request_head(conn.rbuf.filled(), limits.head_bytes_max) {
            Ok(HeadParse::Complete(head)) => {
                let request = Request::from_head(&head, ctx, conn.peer);
                return Ok(HeadOutcome::Complete(request, head.head_len, started));
            }
            Ok(HeadParse::Partial) => {}
            Err(e) => match later_http1_minor_at(conn.rbuf.filled()) {
                // `HTTP/1.2`…`HTTP/1.9`: read as HTTP/1.1 (RFC 9110 §2.5), as nginx does.
                Some(at) => {
                    conn.rbuf.rewrite(at, b'1');
                    continue;
                }
                None => return Ok(HeadOutcome::Rejected(e.into(), started)),
            },
        }
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return Ok(timed_out());
        };
        let _ = conn.stream.tcp().set_read_timeout(Some(left));
        match conn.rbuf.fill(&mut conn.stream).await {
            Ok(0) => return Ok(HeadOutcome::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Ok(timed_out()),
            Err(_) => return Ok(HeadOutcome::Closed),
        }
    }
}

/// Sets the socket's read timeout to what is left of a deadline.
fn read_deadline<S: Transport>(stream: &S, left: Duration) {
    let _ = stream.tcp().set_read_timeout(Some(left));
}

/// Why a request body could not be received.
pub(super) enum BodyFailure {
    /// The peer went away or stalled: nothing more can be said.
    Connection,
    /// The body broke a rule: answer, then close.
    Refused(Refusal),
}

impl From<Refusal> for BodyFailure {
    fn from(refusal: Refusal) -> Self {
        BodyFailure::Refused(refusal)
    }
}

/// Reads a request body into `upload`, from what is buffered and then from the socket.
pub(super) async fn receive_body<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    framing: BodyFraming,
    upload: &mut UploadSession,
) -> Result<(), BodyFailure> {
    match framing {
        BodyFraming::Empty => Ok(()),
        BodyFraming::Length(len) => receive_length(ctx, conn, len, upload).await,
        BodyFraming::Chunked => receive_chunked(ctx, conn, upload).await,
    }
}

async fn receive_length<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    mut left: u64,
    upload: &mut UploadSession,
) -> Result<(), BodyFailure> {
    while left > 0 {
        if conn.rbuf.filled().is_empty() {
            if let Some(n) = read_into_upload(ctx, conn, upload).await? {
                left -= n as u64;
                continue;
            }
            read_more(ctx, conn).await?;
        }
        let take = (conn.rbuf.filled().len() as u64).min(left) as usize;
        upload.write(&conn.rbuf.filled()[..take]).await?;
        conn.rbuf.consume(take);
        left -= take as u64;
        FrontCounters::add(&ctx.metrics().bytes_in, take as u64);
    }
    Ok(())
}

/// Reads body bytes from the socket straight into the upload's direct-write buffer when
/// it offers room (a body of declared length going to one data file), so they reach the
/// disk without a copy through the read buffer. Returns the bytes read, or `None` when
/// the upload offers no room.
async fn read_into_upload<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    upload: &mut UploadSession,
) -> Result<Option<usize>, BodyFailure> {
    let Conn {
        stream,
        transfer,
        ticket,
        ..
    } = conn;
    let Some(room) = upload.room() else {
        return Ok(None);
    };
    let metrics = ctx.metrics();
    let park = transfer::park_one(ticket.as_ref());
    let n = match transfer::read(stream, room, transfer, park, metrics, read_deadline).await {
        Ok(0) | Err(_) => return Err(BodyFailure::Connection),
        Ok(n) => n,
    };
    upload.filled(n).await?;
    FrontCounters::add(&metrics.bytes_in, n as u64);
    Ok(Some(n))
}

async fn receive_chunked<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    upload: &mut UploadSession,
) -> Result<(), BodyFailure> {
    let mut decoder = ChunkedDecoder::new();
    loop {
        let (used, step) = decoder
            .step(conn.rbuf.filled())
            .map_err(|e| BodyFailure::Refused(e.into()))?;
        let need_more = match step {
            ChunkedStep::Data(data) => {
                let data_bytes = data.len() as u64;
                upload.write(data).await?;
                // No length was declared to charge up front: each chunk is charged as
                // it arrives, so uploads under way put the tenant in debt now.
                if let Some(ticket) = conn.ticket.as_mut() {
                    ctx.admission.charge_up_front(ticket, data_bytes);
                }
                false
            }
            ChunkedStep::NeedMore => true,
            ChunkedStep::Done => {
                conn.rbuf.consume(used);
                FrontCounters::add(&ctx.metrics().bytes_in, used as u64);
                return Ok(());
            }
        };
        conn.rbuf.consume(used);
        FrontCounters::add(&ctx.metrics().bytes_in, used as u64);
        if need_more {
            read_more(ctx, conn).await?;
        }
    }
}

async fn read_more<S: Transport>(ctx: &HttpContext, conn: &mut Conn<S>) -> Result<(), BodyFailure> {
    let Conn {
        stream,
        rbuf,
        transfer,
        ticket,
        ..
    } = conn;
    let metrics = ctx.metrics();
    match rbuf
        .fill_paced(stream, transfer, ticket.as_ref(), metrics)
        .await
    {
        Ok(0) | Err(_) => Err(BodyFailure::Connection),
        Ok(_) => Ok(()),
    }
}
