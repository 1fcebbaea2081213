//! The socket's only writer, and the frames it sends: response frames in round-robin
//! order across requests, small ones gathered into one send.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_lite::future::poll_once;
use futures_lite::AsyncWriteExt;
use ron_codec::frame::{Flags, APP_OBJECTS};
use ron_codec::messages::{write_response_frame, write_response_frame_on};
use ron_io::stream::{MoreFollows, Transport, WriteHalf};
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
    /// Every send but the batch's last tells the kernel more follows (`MSG_MORE`), so
    /// the batch leaves in full segments and at most one short one: a large body's head
    /// and the body itself used to be pushed separately, and each short segment behind
    /// a full one waited on a BBR pacing timer in the socket (loopback has no fq qdisc)
    /// — 7 hrtimers per 1 MiB GET, and half the throughput in the runs where pacing
    /// bound (docs/PERF.md, "OAP/1 sends"). The next frame is taken before this one's
    /// body is sent, to know whether anything follows it.
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
        let mut frame = first;
        loop {
            let batch_full = gathered_after(wbuf.len(), &frame) >= WRITE_BATCH_BYTES_MAX;
            let next = match last || batch_full {
                true => None,
                false => out.borrow_mut().take_next(),
            };
            let body_follows = match next.is_some() || !frame.tail.is_empty() {
                true => Follows::More,
                false => Follows::Nothing,
            };
            add_frame(ctx, half, wbuf, frame, busy, body_follows).await?;
            match next {
                Some(following) => frame = following,
                None => break,
            }
        }
        if !wbuf.is_empty() {
            send(ctx, half, wbuf, busy, Follows::Nothing).await?;
            wbuf.clear();
        }
        Ok(())
    }
}

/// How many gathered bytes the batch holds once `frame` is added to `gathered`: a large
/// body goes straight out and takes what was gathered with its head.
fn gathered_after(gathered: usize, frame: &OutFrame) -> usize {
    match frame.body.len() <= COALESCE_BODY_BYTES_MAX {
        true => gathered + frame.len(),
        false => frame.tail.len(),
    }
}

/// Whether more bytes of the batch follow a send at once.
#[derive(Clone, Copy)]
enum Follows {
    More,
    Nothing,
}

/// Appends `frame` to the batch; a large body is sent straight from its buffer, right
/// behind what was gathered (its head with it), then `body_follows` says whether the
/// batch sends more after it.
async fn add_frame<S: Transport>(
    ctx: &OapContext,
    half: &mut WriteHalf<S>,
    wbuf: &mut BytesMut,
    frame: OutFrame,
    busy: &mut Transfer,
    body_follows: Follows,
) -> std::io::Result<()> {
    FrontCounters::add(&ctx.metrics().bytes_out, frame.len() as u64);
    wbuf.extend_from_slice(&frame.head);
    if frame.body.len() <= COALESCE_BODY_BYTES_MAX {
        wbuf.extend_from_slice(&frame.body);
    } else {
        send(ctx, half, wbuf, busy, Follows::More).await?;
        wbuf.clear();
        send(ctx, half, &frame.body, busy, body_follows).await?;
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
    follows: Follows,
) -> std::io::Result<()> {
    match follows {
        Follows::Nothing => {
            let set_timeout = |h: &WriteHalf<S>, left| h.set_write_timeout(Some(left));
            transfer::write_all(half, bytes, busy, || (), ctx.metrics(), set_timeout).await
        }
        Follows::More => {
            let set_timeout =
                |h: &MoreFollows<'_, WriteHalf<S>>, left| h.get_ref().set_write_timeout(Some(left));
            let mut half = MoreFollows(half);
            transfer::write_all(&mut half, bytes, busy, || (), ctx.metrics(), set_timeout).await
        }
    }
}

/// A refusal's error envelope as an END frame on `corr_id`.
pub(super) fn refusal_frame(corr_id: u64, refusal: &Refusal) -> OutFrame {
    refusal_frame_on(APP_OBJECTS, corr_id, refusal)
}

/// A refusal on `app_proto_id`'s plane: a protocol error's answer is on the offending
/// frame's (a HELLO's on 0, where a client routing frames by plane looks for it).
pub(super) fn refusal_frame_on(app_proto_id: u16, corr_id: u64, refusal: &Refusal) -> OutFrame {
    let mut body = Vec::with_capacity(192);
    let mut corr = itoa::Buffer::new();
    refusal.write_envelope(corr.format(corr_id), &mut body);
    let mut head = BytesMut::with_capacity(ron_codec::frame::HEADER_LEN + body.len());
    let status = refusal.status();
    write_response_frame_on(&mut head, app_proto_id, Flags::END, status, corr_id, &body)
        .expect("error envelopes are far smaller than max_frame");
    OutFrame {
        head: head.freeze(),
        body: Bytes::new(),
        tail: Bytes::new(),
    }
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

#[cfg(test)]
mod tests {
    use crate::fuzzing::{FrontEnd, Harness};
    use bytes::Bytes;
    use ron_codec::messages::{HelloRequest, ObjectRequest};
    use ron_codec::{Address, FrameDecoder};

    /// A GET of several groups: each large body's head tells the stream more follows
    /// (it must not go out alone), and the last send says nothing follows (no byte is
    /// left held back); the body arrives whole.
    #[test]
    fn large_bodies_follow_their_heads_and_the_last_send_pushes() {
        let dir = std::env::temp_dir().join(format!("ron-oap-writer-{}", std::process::id()));
        let harness = Harness::new(&dir);
        let served = |front, input| harness.serve_to_end(front, input);
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut put = format!(
            "PUT /o HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        put.extend_from_slice(&body);
        assert!(served(FrontEnd::Http, put)
            .bytes()
            .starts_with(b"HTTP/1.1 201 "));

        let get = ObjectRequest::Get {
            addr: Address::of(&body),
            range: None,
            proof: false,
            local: false,
            kept: false,
            node: None,
        };
        let mut input = HelloRequest::default().frame(1).to_bytes().to_vec();
        input.extend_from_slice(&get.frame(2, 0, Bytes::new()).unwrap().to_bytes());
        let written = served(FrontEnd::Oap, input);

        let out = written.bytes();
        let mut decoder = FrameDecoder::new(ron_codec::frame::MAX_FRAME_BYTES);
        let mut received = 0;
        let mut rest = &out[..];
        while let Some(frame) = decoder.decode(&mut rest).unwrap() {
            if frame.header.corr_id == 2 {
                received += frame.payload.len();
            }
        }
        assert!(received >= body.len(), "the body arrives: {received} bytes");

        let sends = written.sends();
        let large: Vec<usize> = (1..sends.len())
            .filter(|&i| sends[i].0 > 16 << 10)
            .collect();
        assert!(large.len() >= 4, "one send per group body: {sends:?}");
        for i in large {
            assert!(
                sends[i - 1].1,
                "the head before send {i} said more follows: {sends:?}"
            );
        }
        assert_eq!(
            sends.last().map(|&(_, more)| more),
            Some(false),
            "{sends:?}"
        );
        drop(harness);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
