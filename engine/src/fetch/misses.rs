//! The origin's answers a shard remembers (`fetch_miss_ms`): its 404 ("no such object"),
//! and bytes of its that did not hash to the address asked for (or claimed more than
//! the node takes). A request for one meanwhile is answered as the origin's answer was
//! without asking it again: a popular address the origin lacks, or holds damaged, cost
//! one download per request (up to `max_object_bytes` each, for the damaged one). A
//! remembered answer stands from when the origin gave it, whatever asks for the object
//! meanwhile (answers given from memory do not extend it), and the table is bounded.

use std::collections::HashMap;
use std::time::Instant;

use ron_codec::Address;

use super::Failure;

/// Origin answers a shard remembers at once; past it, a new one is not remembered until
/// older ones expire (a flood of distinct missing addresses cannot grow the table).
const MISSES_REMEMBERED_MAX: usize = 4096;

/// The addresses the origin failed, each with how and until when (`fetch_miss_ms`).
#[derive(Debug, Default)]
pub(super) struct Misses {
    until: HashMap<Address, (Instant, Failure)>,
}

impl Misses {
    /// How the origin failed `addr`, while that is remembered.
    pub(super) fn remembered(&self, addr: &Address, now: Instant) -> Option<Failure> {
        self.until
            .get(addr)
            .filter(|(until, _)| now < *until)
            .map(|(_, failure)| failure.clone())
    }

    pub(super) fn remember(
        &mut self,
        addr: Address,
        failure: Failure,
        until: Instant,
        now: Instant,
    ) {
        if until <= now {
            return;
        }
        if self.until.len() >= MISSES_REMEMBERED_MAX {
            self.until.retain(|_, (until, _)| now < *until);
        }
        if self.until.len() < MISSES_REMEMBERED_MAX || self.until.contains_key(&addr) {
            self.until.insert(addr, (until, failure));
        }
    }
}
