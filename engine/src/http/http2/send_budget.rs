//! What a connection's streams have queued for sending and the socket has not yet taken,
//! bounded for the whole connection. h2 bounds what each stream queues
//! (`H2_SEND_BUFFER_BYTES_MAX`), not their sum: a client that opens its windows wide and
//! never reads the socket had every stream's bytes wait in the node, 128 streams' worth.
//!
//! Each DATA frame's bytes are a [`QueuedBytes`] holding its share of the budget until
//! h2 drops it: once the frame is written to the socket, or when its stream is reset and
//! h2 discards it. So the budget counts exactly the memory frames hold, with nothing to
//! reconcile when a stream ends early. A stream that finds no room waits (its waker is
//! kept, in order; at most one a stream). A frame dropped wakes as many waiting streams
//! as there are grains free, oldest first — waking all of them for every frame had 64
//! streams polled to fill one frame's room — and all of them once nothing is queued, so
//! a wake-up that went to a stream already gone is never the last.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Context, Waker};

use bytes::{Buf, Bytes};

/// The least room a stream waits for before it queues more: one frame of the default
/// SETTINGS_MAX_FRAME_SIZE, so a freed byte does not become a one-byte frame.
const GRAIN_BYTES: usize = 16 * 1024;
/// What a queued DATA frame holds besides its bytes, charged with them: its slot in h2's
/// send queue (sized by h2's largest frame kind, ~300 bytes) and its bytes' allocation.
/// Counting bytes alone, a client that opened its windows a byte at a time and never
/// read had a connection queue 262,144 one-byte frames (~80 MiB) against 256 KiB.
pub(super) const FRAME_HELD_BYTES: usize = 512;

#[derive(Debug)]
pub(super) struct SendBudget {
    queued: Cell<usize>,
    queued_max: usize,
    waiting: RefCell<VecDeque<Waker>>,
}

impl SendBudget {
    pub(super) fn new(queued_max: usize) -> Rc<SendBudget> {
        Rc::new(SendBudget {
            queued: Cell::new(0),
            queued_max,
            waiting: RefCell::new(VecDeque::new()),
        })
    }

    /// A copy of as much of `bytes` as there is room for, charged to the budget with
    /// [`FRAME_HELD_BYTES`]; `None` (and `cx` woken once there is room) when less than a
    /// grain, or than `bytes`, is free besides a frame's own.
    pub(super) fn queue(self: &Rc<Self>, bytes: &[u8], cx: &Context<'_>) -> Option<QueuedBytes> {
        let room = self.queued_max.saturating_sub(self.queued.get());
        let room_for_bytes = room.saturating_sub(FRAME_HELD_BYTES);
        if room_for_bytes == 0 || room_for_bytes < bytes.len().min(GRAIN_BYTES) {
            self.wait(cx.waker());
            return None;
        }
        let len = bytes.len().min(room_for_bytes);
        let held = len + FRAME_HELD_BYTES;
        self.queued.set(self.queued.get() + held);
        Some(QueuedBytes {
            bytes: Bytes::copy_from_slice(&bytes[..len]),
            len,
            held,
            budget: Rc::clone(self),
        })
    }

    fn wait(&self, waker: &Waker) {
        let mut waiting = self.waiting.borrow_mut();
        if !waiting.iter().any(|w| w.will_wake(waker)) {
            waiting.push_back(waker.clone());
        }
    }

    fn release(&self, held: usize) {
        let queued = self.queued.get() - held;
        self.queued.set(queued);
        let wake = match queued {
            0 => usize::MAX,
            _ => (self.queued_max - queued) / (GRAIN_BYTES + FRAME_HELD_BYTES),
        };
        let woken: Vec<Waker> = {
            let mut waiting = self.waiting.borrow_mut();
            let count = wake.min(waiting.len());
            waiting.drain(..count).collect()
        };
        woken.into_iter().for_each(Waker::wake);
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queued.get()
    }
}

/// A DATA frame's bytes, holding their share of the connection's send budget until
/// dropped.
#[derive(Debug)]
pub(crate) struct QueuedBytes {
    bytes: Bytes,
    /// The body bytes it carries.
    len: usize,
    /// Its charge to the budget: `len` and [`FRAME_HELD_BYTES`].
    held: usize,
    budget: Rc<SendBudget>,
}

impl QueuedBytes {
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

impl Buf for QueuedBytes {
    fn remaining(&self) -> usize {
        self.bytes.remaining()
    }

    fn chunk(&self) -> &[u8] {
        self.bytes.chunk()
    }

    fn advance(&mut self, cnt: usize) {
        self.bytes.advance(cnt);
    }
}

impl Drop for QueuedBytes {
    fn drop(&mut self) {
        self.budget.release(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_wakers::CountWakes;
    use std::sync::Arc;

    #[test]
    fn frames_hold_their_share_until_dropped_and_waiters_wake_at_a_grain() {
        let budget = SendBudget::new(64 * 1024 + 2 * FRAME_HELD_BYTES);
        let (wakes, waker) = CountWakes::waker();
        let cx = Context::from_waker(&waker);
        let chunk = vec![7u8; 40 * 1024];
        let first = budget.queue(&chunk, &cx).expect("room for 40 KiB");
        assert_eq!(first.len(), 40 * 1024);
        // 24 KiB left: a partial frame, cut to the room.
        let second = budget.queue(&chunk, &cx).expect("room for 24 KiB");
        assert_eq!((second.len(), second.remaining()), (24 * 1024, 24 * 1024));
        assert_eq!(budget.queued(), 64 * 1024 + 2 * FRAME_HELD_BYTES);
        // Full: the stream waits, once however often it asks.
        assert!(budget.queue(&chunk, &cx).is_none());
        assert!(budget.queue(&chunk, &cx).is_none());
        assert_eq!(budget.waiting.borrow().len(), 1);
        // A frame written in part still holds its whole share until h2 drops it.
        let mut second = second;
        second.advance(20 * 1024);
        assert_eq!(budget.queued(), 64 * 1024 + 2 * FRAME_HELD_BYTES);
        drop(second);
        assert_eq!(wakes.count(), 1, "24 KiB free: woken");
        assert_eq!(budget.queued(), 40 * 1024 + FRAME_HELD_BYTES);
        // Less than a grain free is no room for a big send, but is for a small one.
        let third = budget.queue(&chunk[..10 * 1024], &cx).expect("10 KiB");
        assert!(budget.queue(&chunk, &cx).is_none());
        assert!(budget
            .queue(&chunk[..4 * 1024], &cx)
            .is_some_and(|b| b.len() == 4096));
        drop((first, third));
        assert_eq!(budget.queued(), 0);
        assert_eq!(wakes.count(), 2);
    }

    #[test]
    fn a_frame_dropped_wakes_a_stream_per_grain_free_oldest_first_and_all_once_empty() {
        let budget = SendBudget::new(4 * (GRAIN_BYTES + FRAME_HELD_BYTES));
        let grain = vec![0u8; GRAIN_BYTES];
        let streams: Vec<Arc<CountWakes>> =
            (0..10).map(|_| Arc::new(CountWakes::default())).collect();
        let wakers: Vec<Waker> = streams.iter().map(|s| Waker::from(Arc::clone(s))).collect();
        let ask = |at: usize| budget.queue(&grain, &Context::from_waker(&wakers[at]));
        let mut frames: Vec<QueuedBytes> = (0..4).map(|at| ask(at).unwrap()).collect();
        for at in 0..10 {
            assert!(ask(at).is_none(), "full");
        }
        let woken = || -> Vec<usize> { streams.iter().map(|s| s.count()).collect() };
        frames.pop();
        assert_eq!(
            woken(),
            [1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            "one grain free: the oldest"
        );
        frames.pop();
        assert_eq!(
            woken(),
            [1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
            "two free: the next two"
        );
        frames.pop();
        assert_eq!(
            woken(),
            [1, 1, 1, 1, 1, 1, 0, 0, 0, 0],
            "three free: three more"
        );
        frames.pop();
        assert_eq!(woken(), [1; 10], "nothing queued: every one left");
    }

    #[test]
    fn one_byte_frames_are_charged_what_a_frame_holds() {
        let budget = SendBudget::new(256 * 1024);
        let (_, waker) = CountWakes::waker();
        let cx = Context::from_waker(&waker);
        let frames: Vec<QueuedBytes> = std::iter::from_fn(|| budget.queue(&[1], &cx)).collect();
        assert_eq!(frames.len(), 256 * 1024 / (1 + FRAME_HELD_BYTES));
        assert!(frames.iter().all(|f| f.len() == 1 && f.remaining() == 1));
    }
}
