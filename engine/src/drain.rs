//! The stop's drain as one shard's connections see it: raised once, when the shard stops
//! accepting. Requests in flight finish (and close their connection); a request whose
//! head arrives after it is refused 503 (`not_ready`; OAP/1: `ShuttingDown`); and the
//! connections that wait between requests — an idle HTTP/1.1 keep-alive or OAP/1
//! connection, an HTTP/2 connection between events — are woken by it, so the first two
//! close at once (an OAP/1 one with answers going out, once they are done) and the third
//! is sent GOAWAY. Before, they slept on until their idle timeout (75 s), past the process's
//! end, and a proxy's request on one after the drain was cut short when the shard
//! stopped.
//!
//! Each wait takes a slot and gives it back when it ends, both O(1) (a free list): an
//! idle connection waits on the drain between every two of its requests, at any count
//! up to `connections_max`.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
pub struct Drain {
    raised: Cell<bool>,
    waiting: RefCell<Slots>,
}

/// The wakers of the waits in progress, by slot; freed slots are reused.
#[derive(Debug, Default)]
struct Slots {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Drain {
    /// Raises the drain and wakes every wait.
    pub fn begin(&self) {
        self.raised.set(true);
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        waiting.wakers.into_iter().flatten().for_each(Waker::wake);
    }

    pub fn is_draining(&self) -> bool {
        self.raised.get()
    }

    /// Resolves once the drain is raised.
    pub fn wait(&self) -> DrainWait<'_> {
        DrainWait {
            drain: self,
            slot: None,
        }
    }
}

/// A wait for the drain, holding its slot until it ends.
#[derive(Debug)]
pub struct DrainWait<'a> {
    drain: &'a Drain,
    slot: Option<usize>,
}

impl Future for DrainWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.drain.raised.get() {
            return Poll::Ready(());
        }
        let mut waiting = self.drain.waiting.borrow_mut();
        match self.slot {
            Some(slot) => {
                if let Some(Some(waker)) = waiting.wakers.get_mut(slot) {
                    if !waker.will_wake(cx.waker()) {
                        waker.clone_from(cx.waker());
                    }
                }
            }
            None => {
                let waker = Some(cx.waker().clone());
                let slot = match waiting.free.pop() {
                    Some(slot) => {
                        waiting.wakers[slot] = waker;
                        slot
                    }
                    None => {
                        waiting.wakers.push(waker);
                        waiting.wakers.len() - 1
                    }
                };
                drop(waiting);
                self.slot = Some(slot);
            }
        }
        Poll::Pending
    }
}

impl Drop for DrainWait<'_> {
    fn drop(&mut self) {
        let Some(slot) = self.slot else {
            return;
        };
        // Once raised, the slots were taken (and woken) whole: nothing to give back.
        if self.drain.raised.get() {
            return;
        }
        let mut waiting = self.drain.waiting.borrow_mut();
        if let Some(waker) = waiting.wakers.get_mut(slot) {
            *waker = None;
            waiting.free.push(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_wakers::CountWakes;

    #[test]
    fn waits_reuse_their_slots_and_the_drain_wakes_every_one_left() {
        let drain = Drain::default();
        let (wakes, waker) = CountWakes::waker();
        let mut cx = Context::from_waker(&waker);
        let mut poll = |wait: &mut DrainWait<'_>| Pin::new(wait).poll(&mut cx);
        // A thousand waits that end, one after another, take one slot between them.
        for _ in 0..1000 {
            let mut wait = drain.wait();
            assert!(poll(&mut wait).is_pending());
        }
        assert_eq!(drain.waiting.borrow().wakers.len(), 1);
        let mut waits: Vec<DrainWait<'_>> = (0..3).map(|_| drain.wait()).collect();
        for wait in &mut waits {
            assert!(poll(wait).is_pending());
        }
        drop(waits.pop());
        drain.begin();
        assert_eq!(wakes.count(), 2, "the two waits left");
        assert!(waits.iter_mut().all(|w| poll(w).is_ready()));
        assert!(poll(&mut drain.wait()).is_ready(), "raised: at once");
    }
}
