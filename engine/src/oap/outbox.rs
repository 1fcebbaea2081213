//! Per-request outboxes and the writer's round-robin order.
//!
//! Every request owns an outbox of at most [`OUTBOX_FRAMES_MAX`] response frames. The
//! writer is the socket's only writer: it takes one frame from each non-empty outbox in
//! turn, so a large GET yields the socket to a small one after every 64 KiB frame, and
//! a full outbox parks its producer (bounded memory: at most `max_inflight ×
//! OUTBOX_FRAMES_MAX` frames per connection, whose data bytes are shared with the
//! verified-group cache, not copied). A small state machine, tested on its own.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use ron_codec::frame::Frame;

use crate::admission::Ticket;
use crate::limits::OUTBOX_FRAMES_MAX;

/// What the writer sends as one unit: `head` (a frame header and, for DATA, the DATA
/// header — preceded by the START frame on a GET's first DATA frame), then `body` (raw
/// object bytes, possibly empty), then `tail` (the END frame after a GET's last DATA
/// frame). START and END ride with a DATA frame so that a small GET is one unit.
pub(super) struct OutFrame {
    pub head: Bytes,
    pub body: Bytes,
    pub tail: Bytes,
}

impl OutFrame {
    pub fn whole(frame: &Frame) -> OutFrame {
        OutFrame {
            head: frame.to_bytes(),
            body: Bytes::new(),
            tail: Bytes::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.body.len() + self.tail.len()
    }
}

/// One request's queued response frames.
#[derive(Default)]
pub(super) struct Outbox {
    frames: VecDeque<OutFrame>,
    /// The END frame is queued: the outbox goes away once it is sent.
    ended: bool,
    producer: Option<Waker>,
}

pub(super) enum WriterState {
    Open,
    /// The peer will send no more requests: finish what is in flight, then close.
    Draining,
    /// A protocol error: send this one answer ahead of everything, then close.
    Failing(Option<OutFrame>),
    Closed,
}

/// The outboxes of a connection and the writer's round-robin order.
pub(super) struct Outboxes {
    pub boxes: HashMap<u64, Outbox>,
    /// Streaming requests (GETs), which may wait for room in their outbox: cancelled
    /// when the connection stops, so none outlives it holding an in-flight slot.
    pub streams: HashMap<u64, glommio::Task<()>>,
    /// corr_ids whose outbox has frames, in the order the writer serves them.
    ready: VecDeque<u64>,
    writer: Option<Waker>,
    /// The reader waiting for the client while the writer may close on its own (a
    /// send past its deadline): woken then, so the connection ends with its writer.
    reader: Option<Waker>,
    state: WriterState,
}

/// The connection is closed; the response cannot be delivered.
#[derive(Debug)]
pub(super) struct Closed;

pub(super) enum Next {
    Frame(OutFrame),
    /// The final answer to a protocol error.
    Last(OutFrame),
    Done,
}

impl Outboxes {
    pub fn new() -> Outboxes {
        Outboxes {
            boxes: HashMap::new(),
            streams: HashMap::new(),
            ready: VecDeque::new(),
            writer: None,
            reader: None,
            state: WriterState::Open,
        }
    }

    pub fn contains(&self, corr_id: u64) -> bool {
        self.boxes.contains_key(&corr_id)
    }

    pub fn open(&mut self, corr_id: u64) {
        self.boxes.entry(corr_id).or_default();
    }

    /// Forgets a request that will never answer (an upload cut short).
    pub fn forget(&mut self, corr_id: u64) {
        self.boxes.remove(&corr_id);
        self.ready.retain(|&c| c != corr_id);
        self.wake_writer();
    }

    fn wake_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }

    pub fn poll_push(
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
    pub fn take_next(&mut self) -> Option<OutFrame> {
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

    pub fn poll_next(&mut self, cx: &Context<'_>) -> Poll<Next> {
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

    /// A closed writer stays closed: the reader ending after it changes nothing.
    pub fn set_state(&mut self, state: WriterState) {
        if matches!(self.state, WriterState::Closed) {
            return;
        }
        let stopping = matches!(state, WriterState::Closed | WriterState::Failing(_));
        self.state = state;
        if stopping {
            // Dropping a task cancels it: its future, in-flight slot and buffers go now
            // rather than whenever it would next run. Its queued frames go too: no
            // answer but a failing connection's last is sent after this.
            self.streams.clear();
            for outbox in self.boxes.values_mut() {
                if let Some(w) = outbox.producer.take() {
                    w.wake();
                }
            }
            self.boxes.clear();
            self.ready.clear();
            if let Some(w) = self.reader.take() {
                w.wake();
            }
        }
        self.wake_writer();
    }

    /// Ready once the writer has closed: the connection can deliver nothing more, so
    /// the reader stops waiting for the client (which may never send again).
    pub fn poll_closed(&mut self, cx: &Context<'_>) -> Poll<()> {
        if matches!(self.state, WriterState::Closed) {
            return Poll::Ready(());
        }
        self.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

pub(super) type SharedOutboxes = Rc<RefCell<Outboxes>>;

/// Queues `frame` on `corr_id`'s outbox, waiting while it is full — the peer is slow
/// to read — with the request's in-flight slot parked (`crate::admission`).
pub(super) async fn push(
    out: &SharedOutboxes,
    corr_id: u64,
    frame: OutFrame,
    end: bool,
    ticket: Option<&Ticket>,
) -> Result<(), Closed> {
    let mut frame = Some(frame);
    let mut parked = None;
    std::future::poll_fn(|cx| {
        let pushed = out.borrow_mut().poll_push(cx, corr_id, &mut frame, end);
        if pushed.is_pending() && parked.is_none() {
            parked = ticket.map(Ticket::park);
        }
        pushed
    })
    .await
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
}
