//! Whole checks of copies this shard holds that another node asked it to hold.
//!
//! An honest holder asks for a copy this node holds only when its audit of it failed,
//! so the copy is read back whole (rebuilt from parity where it can be) before it is
//! answered `held`. That read is the asker's to cause and the disk's to pay: one
//! request of 256 addresses of a large object held here made the node read the whole
//! object 64 times over, unpaced. So the checks a peer causes run one at a time per
//! shard, at the pace of placement copies (the shard's share of
//! `replication_bytes_per_s`: checking a copy costs what pulling it would), and a copy
//! found whole is answered `held` without another read for [`WHOLE_REMEMBERED`] — the
//! asker audits it again anyway, and a copy damaged since is the scrubber's to find.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use glommio::sync::Semaphore;
use ron_codec::Address;
use ron_shards::scrub::Pacer;

use super::recent::RecentAddresses;

/// How long a copy found whole is answered `held` without being read again.
pub const WHOLE_REMEMBERED: Duration = Duration::from_secs(600);
/// Copies found whole remembered at once, per shard (the oldest forgotten first).
const WHOLE_REMEMBERED_MAX: usize = 4096;

#[derive(Debug)]
pub(super) struct HeldChecks {
    /// One check at a time: the pace is the shard's, not each check's.
    turn: Semaphore,
    /// The pace of the checks' reads (`None`: unpaced); taken by the check whose turn it is.
    pacer: RefCell<Option<Pacer>>,
    bytes_per_s: u64,
    /// When each copy was last found whole.
    whole: RefCell<RecentAddresses>,
}

impl HeldChecks {
    /// Checks paced at `bytes_per_s` (0: unpaced).
    pub(super) fn new(bytes_per_s: u64) -> HeldChecks {
        HeldChecks {
            turn: Semaphore::new(1),
            pacer: RefCell::new(None),
            bytes_per_s,
            whole: RefCell::new(RecentAddresses::new(WHOLE_REMEMBERED_MAX)),
        }
    }

    /// Whether `addr`'s copy was found whole within [`WHOLE_REMEMBERED`] of `now`.
    pub(super) fn whole_recently(&self, addr: &Address, now: Instant) -> bool {
        self.whole.borrow().seen_within(addr, WHOLE_REMEMBERED, now)
    }

    /// Runs `check` with the shard's pacer once it is this check's turn; what it says is
    /// remembered when the copy is whole.
    pub(super) async fn run<F, Fut>(&self, addr: Address, check: F) -> bool
    where
        F: FnOnce(Option<Pacer>) -> Fut,
        Fut: std::future::Future<Output = (bool, Option<Pacer>)>,
    {
        let Ok(_turn) = self.turn.acquire_permit(1).await else {
            return false;
        };
        // The check that had the turn before may have been of this copy.
        if self.whole_recently(&addr, Instant::now()) {
            return true;
        }
        let pacer = self.pacer.take().or_else(|| {
            (self.bytes_per_s > 0).then(|| Pacer::new(self.bytes_per_s, Instant::now()))
        });
        let (whole, pacer) = check(pacer).await;
        *self.pacer.borrow_mut() = pacer;
        if whole {
            self.remember(addr, Instant::now());
        }
        whole
    }

    fn remember(&self, addr: Address, now: Instant) {
        self.whole.borrow_mut().seen(addr, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_found_whole_are_remembered_for_a_while_and_at_most_so_many() {
        let checks = HeldChecks::new(0);
        let addr = |i: usize| Address::of(&i.to_le_bytes());
        let now = Instant::now();
        for i in 0..=WHOLE_REMEMBERED_MAX {
            checks.remember(addr(i), now);
        }
        assert!(
            !checks.whole_recently(&addr(0), now),
            "the oldest forgotten"
        );
        assert!(checks.whole_recently(&addr(1), now));
        assert!(checks.whole_recently(&addr(WHOLE_REMEMBERED_MAX), now));
        let later = now + WHOLE_REMEMBERED;
        assert!(
            !checks.whole_recently(&addr(1), later),
            "read again after a while"
        );
        // Found whole again: remembered once, from then.
        checks.remember(addr(1), later);
        assert!(checks.whole_recently(&addr(1), later));
        assert_eq!(checks.whole.borrow().len(), WHOLE_REMEMBERED_MAX);
    }
}
