//! A bounded memory of when each of a shard's addresses was last seen — a copy found
//! whole for a peer (`held_checks`), a copy a peer asked for (`claims`) — the oldest
//! forgotten first once it holds `max`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use ron_codec::Address;

#[derive(Debug)]
pub(super) struct RecentAddresses {
    at: HashMap<Address, Instant>,
    /// Oldest first; each address once, where it was last seen.
    order: VecDeque<Address>,
    max: usize,
}

impl RecentAddresses {
    pub(super) fn new(max: usize) -> RecentAddresses {
        RecentAddresses {
            at: HashMap::new(),
            order: VecDeque::new(),
            max,
        }
    }

    /// `addr` seen at `now`: the latest time is what counts, and it goes last in line.
    pub(super) fn seen(&mut self, addr: Address, now: Instant) {
        if self.at.insert(addr, now).is_some() {
            self.order.retain(|a| *a != addr);
        }
        self.order.push_back(addr);
        while self.order.len() > self.max {
            if let Some(oldest) = self.order.pop_front() {
                self.at.remove(&oldest);
            }
        }
    }

    /// Whether `addr` was seen less than `span` before `now`.
    pub(super) fn seen_within(&self, addr: &Address, span: Duration, now: Instant) -> bool {
        self.at
            .get(addr)
            .is_some_and(|at| now.saturating_duration_since(*at) < span)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        assert_eq!(self.at.len(), self.order.len());
        self.at.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_remembered_for_its_span_from_its_latest_sighting_and_the_oldest_go_first() {
        let t0 = Instant::now();
        let span = Duration::from_secs(30);
        let max = 64;
        let mut recent = RecentAddresses::new(max);
        let a = Address::of(b"seen");
        assert!(!recent.seen_within(&a, span, t0));
        recent.seen(a, t0);
        assert!(recent.seen_within(&a, span, t0 + Duration::from_secs(29)));
        assert!(!recent.seen_within(&a, span, t0 + span));
        // Seen again: the span starts over.
        recent.seen(a, t0 + Duration::from_secs(20));
        assert!(recent.seen_within(&a, span, t0 + Duration::from_secs(45)));
        let b = Address::of(b"seen again");
        recent.seen(b, t0);
        for i in 0..max as u32 - 2 {
            recent.seen(Address::of(&i.to_be_bytes()), t0);
        }
        recent.seen(b, t0);
        recent.seen(Address::of(b"one more"), t0);
        recent.seen(Address::of(b"and another"), t0);
        assert_eq!(recent.len(), max);
        assert!(
            !recent.seen_within(&a, span, t0),
            "the oldest forgotten first"
        );
        assert!(
            recent.seen_within(&b, span, t0),
            "seen again: it went last in line"
        );
    }
}
