//! The socket's only writer, and the frames it sends: response frames in round-robin
//! order across requests, small ones gathered into one send.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_lite::future::poll_once;
use futures_lite::AsyncWriteExt;
use ron_codec::frame::Flags;
use ron_codec::messages::write_response_frame;
use ron_io::stream::{Transport, WriteHalf};
use ron_link::counters::FrontCounters;
use std::rc::Rc;

use super::outbox::{Next, OutFrame, SharedOutboxes, WriterState};
use super::OapContext;
use crate::limits::{COALESCE_BODY_BYTES_MAX, WRITE_BATCH_BYTES_MAX};
use crate::refusal::Refusal;
use crate::transfer::{self, Transfer};

/// Sends queued frames until the connection ends. The peer must take them at the
/// minimum rate: a busy period (from the writer finding frames after waiting for them,
/// to its next wait) is one transfer with one deadline (`crate::transfer`). Request
/// tasks park their slots while their outboxes are full, not the writer.
pub(super) async fn write_loop<S: Transport>(
    ctx: Rc<OapContext>,
    mut half: WriteHalf<S>,
    out: SharedOutboxes,
) {
    // Grown per busy period to what its batch holds (at most WRITE_BATCH_BYTES_MAX)
    // and dropped when the writer waits: an idle connection holds no write buffer.
    let mut wbuf = BytesMut::new();
    let mut busy = Transfer::new(ctx.pace(Instant::now()));
    loop {
        let poll_next = || std::future::poll_fn(|cx| out.borrow_mut().poll_next(cx));
        let next = match poll_once(poll_next()).await {
            Some(next) => next,
            None => {
                wbuf = BytesMut::new();
                let next = poll_next().await;
                busy = Transfer::new(ctx.pace(Instant::now()));
                next
            }
        };
        let (frame, last) = match next {
            Next::Frame(frame) => (frame, false),
            Next::Last(frame) => (frame, true),
            Next::Done => break,
        };
        // Boxed: a batch's sends live on the heap while they run, so an idle
        // connection's writer task stays small.
        let batch = Batch {
            ctx: &ctx,
            out: &out,
            wbuf: &mut wbuf,
            busy: &mut busy,
        };
        let sent = Box::pin(batch.send(&mut half, frame, last)).await;
        if sent.is_err() || last {
            break;
        }
    }
    out.borrow_mut().set_state(WriterState::Closed);
    let _ = half.close().await;
}

/// One send of queued frames: the first, then whatever else is queued, up to
/// `WRITE_BATCH_BYTES_MAX` gathered.
struct Batch<'a> {
    ctx: &'a OapContext,
    out: &'a SharedOutboxes,
    wbuf: &'a mut BytesMut,
    busy: &'a mut Transfer,
}

impl Batch<'_> {
    async fn send<S: Transport>(
        self,
        half: &mut WriteHalf<S>,
        first: OutFrame,
        last: bool,
    ) -> std::io::Result<()> {
        let Batch {
            ctx,
            out,
            wbuf,
            busy,
        } = self;
        add_frame(ctx, half, wbuf, first, busy).await?;
        while !last && wbuf.len() < WRITE_BATCH_BYTES_MAX {
            let Some(frame) = out.borrow_mut().take_next() else {
                break;
            };
            add_frame(ctx, half, wbuf, frame, busy).await?;
        }
        if !wbuf.is_empty() {
            send(ctx, half, wbuf, busy).await?;
            wbuf.clear();
        }
        Ok(())
    }
}

/// Appends `frame` to the batch; a large body is sent straight from its buffer.
async fn add_frame<S: Transport>(
    ctx: &OapContext,
    half: &mut WriteHalf<S>,
    wbuf: &mut BytesMut,
    frame: OutFrame,
    busy: &mut Transfer,
) -> std::io::Result<()> {
    FrontCounters::add(&ctx.metrics().bytes_out, frame.len() as u64);
    wbuf.extend_from_slice(&frame.head);
    if frame.body.len() <= COALESCE_BODY_BYTES_MAX {
        wbuf.extend_from_slice(&frame.body);
    } else {
        send(ctx, half, wbuf, busy).await?;
        wbuf.clear();
        send(ctx, half, &frame.body, busy).await?;
    }
    wbuf.extend_from_slice(&frame.tail);
    Ok(())
}

/// Writes `bytes` within the busy period's deadline.
async fn send<S: Transport>(
    ctx: &OapContext,
    half: &mut WriteHalf<S>,
    bytes: &[u8],
    busy: &mut Transfer,
) -> std::io::Result<()> {
    let set_timeout = |h: &WriteHalf<S>, left| h.set_write_timeout(Some(left));
    transfer::write_all(half, bytes, busy, || (), ctx.metrics(), set_timeout).await
}

/// A refusal's error envelope as an END frame on `corr_id`.
pub(super) fn refusal_frame(corr_id: u64, refusal: &Refusal) -> OutFrame {
    let mut body = Vec::with_capacity(192);
    let mut corr = itoa::Buffer::new();
    refusal.write_envelope(corr.format(corr_id), &mut body);
    reply_frame(Flags::END, refusal.status(), corr_id, &body)
}

/// A response frame carrying a small JSON payload.
pub(super) fn reply_frame(flags: Flags, status: u16, corr_id: u64, payload: &[u8]) -> OutFrame {
    let mut head = BytesMut::with_capacity(ron_codec::frame::HEADER_LEN + payload.len());
    write_response_frame(&mut head, flags, status, corr_id, payload)
        .expect("replies and bounded error envelopes are far smaller than max_frame");
    OutFrame {
        head: head.freeze(),
        body: Bytes::new(),
        tail: Bytes::new(),
    }
}
