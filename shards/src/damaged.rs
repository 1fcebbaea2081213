//! Copies this shard found damaged past what it can rebuild, waiting to be fetched again
//! from the network.
//!
//! The scrubber reads every group of every object, and a read whose group neither its
//! block nor its parity (or another lane) gives back verified fails with
//! `StoredDigestMismatch`; both only counted it and logged, so an object without parity
//! (`--ec off`, a packed one on a multi-dir node) or damaged past its parity stayed
//! damaged until the replication sweep's audit of one random group happened on a bad one
//! — for one bad group of a 1 GiB object, one chance in 16,384 a pass. Both now report
//! the address here; on a node in a network the engine's replication takes each in turn
//! and replaces the copy with one fetched verified (a kept copy: checked whole first, then
//! fetched, kept until the replacement is staged), or drops it (a read-through cache's
//! copy: the next read reads it through).
//!
//! An upload of a reported address (or any commit of it) takes the damaged copy's place
//! at once: on a node off a network, the operator's `ron put` of the file is the only
//! mend there is. An address leaves the queue and the taken list when its copy is
//! removed or a whole one is stored ([`DamagedCopies::forget`]).
//!
//! Bounded: at most [`DAMAGED_COPIES_QUEUED_MAX`] addresses wait, each once; past it the
//! oldest report gives way to the new one (the scrubber's next pass finds it again; on a
//! node off a network, where nothing takes them, the newest are the operator's to mend). A copy taken is not
//! queued again for [`DAMAGED_RETRY_AFTER`]: every read of a damaged object reports it,
//! and one no holder can replace would otherwise be checked whole and looked for again
//! as often as it is read. Off a network nothing takes them and the queue stays at its
//! bound.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use ron_codec::Address;

/// Damaged copies waiting on one shard, at most; and copies remembered as taken.
pub const DAMAGED_COPIES_QUEUED_MAX: usize = 1024;
/// How long a copy taken is not queued again.
pub const DAMAGED_RETRY_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
pub struct DamagedCopies {
    queued: RefCell<VecDeque<Address>>,
    /// Copies taken lately, oldest first (at most [`DAMAGED_COPIES_QUEUED_MAX`]).
    taken: RefCell<VecDeque<(Address, Instant)>>,
    /// The one taker waiting for a report.
    taker: RefCell<Option<Waker>>,
}

impl DamagedCopies {
    /// Reports `addr` damaged past what this shard can rebuild (the oldest report
    /// dropped when the queue is full); `false` when it was queued already or taken
    /// lately.
    pub fn report(&self, addr: Address) -> bool {
        self.report_at(addr, Instant::now())
    }

    fn report_at(&self, addr: Address, now: Instant) -> bool {
        {
            let mut taken = self.taken.borrow_mut();
            while taken
                .front()
                .is_some_and(|(_, at)| now.saturating_duration_since(*at) >= DAMAGED_RETRY_AFTER)
            {
                taken.pop_front();
            }
            if taken.iter().any(|(a, _)| *a == addr) {
                return false;
            }
            let mut queued = self.queued.borrow_mut();
            if queued.contains(&addr) {
                return false;
            }
            if queued.len() >= DAMAGED_COPIES_QUEUED_MAX {
                // The newest report is the one an operator acts on next (`ron repair`,
                // then an upload of the object): the oldest gives way; the scrubber's
                // next pass finds it again.
                queued.pop_front();
            }
            queued.push_back(addr);
        }
        if let Some(taker) = self.taker.borrow_mut().take() {
            taker.wake();
        }
        true
    }

    /// Whether `addr`'s copy here was reported damaged and is still so: queued, or taken
    /// within [`DAMAGED_RETRY_AFTER`] and neither removed nor stored anew since
    /// ([`DamagedCopies::forget`]). An upload of it replaces the copy rather than being
    /// dropped as one already stored.
    pub fn is_reported(&self, addr: &Address) -> bool {
        let now = Instant::now();
        self.queued.borrow().contains(addr)
            || self.taken.borrow().iter().any(|(taken, at)| {
                taken == addr && now.saturating_duration_since(*at) < DAMAGED_RETRY_AFTER
            })
    }

    /// Forgets `addr`: its damaged copy was removed, or a whole one stored in its place.
    pub fn forget(&self, addr: &Address) {
        self.queued.borrow_mut().retain(|queued| queued != addr);
        self.taken.borrow_mut().retain(|(taken, _)| taken != addr);
    }

    /// The oldest copy reported, once there is one.
    pub async fn next(&self) -> Address {
        std::future::poll_fn(|cx| match self.queued.borrow_mut().pop_front() {
            Some(addr) => {
                let mut taken = self.taken.borrow_mut();
                if taken.len() >= DAMAGED_COPIES_QUEUED_MAX {
                    taken.pop_front();
                }
                taken.push_back((addr, Instant::now()));
                Poll::Ready(addr)
            }
            None => {
                *self.taker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_copy_waits_once_and_the_queue_is_bounded() {
        let damaged = DamagedCopies::default();
        let addr = |i: u32| Address::of(&i.to_be_bytes());
        assert!(damaged.report(addr(0)));
        assert!(!damaged.report(addr(0)), "queued already");
        for i in 1..DAMAGED_COPIES_QUEUED_MAX as u32 {
            assert!(damaged.report(addr(i)));
        }
        assert!(damaged.report(addr(u32::MAX)), "full: the oldest gives way");
        assert_eq!(damaged.queued.borrow().len(), DAMAGED_COPIES_QUEUED_MAX);
        assert!(!damaged.is_reported(&addr(0)) && damaged.is_reported(&addr(u32::MAX)));
        assert!(damaged.report(addr(0)), "queued again, in its turn");
        let first = futures_lite::future::block_on(damaged.next());
        assert_eq!(first, addr(2), "oldest first");
        // Taken: not queued again until it has had its while.
        let later = Instant::now() + DAMAGED_RETRY_AFTER;
        assert!(!damaged.report(addr(2)), "taken lately");
        let _ = futures_lite::future::block_on(damaged.next());
        assert!(damaged.report_at(addr(2), later), "its while is over");
    }

    #[test]
    fn a_copy_reported_stays_so_until_it_is_forgotten() {
        let damaged = DamagedCopies::default();
        let (a, b) = (Address::of(b"a"), Address::of(b"b"));
        assert!(!damaged.is_reported(&a));
        assert!(damaged.report(a) && damaged.report(b));
        assert!(damaged.is_reported(&a), "queued");
        let _ = futures_lite::future::block_on(damaged.next());
        assert!(damaged.is_reported(&a), "taken, not replaced yet");
        damaged.forget(&a);
        damaged.forget(&b);
        assert!(!damaged.is_reported(&a) && !damaged.is_reported(&b));
        assert!(damaged.report(a), "damaged again: reported again at once");
    }
}
