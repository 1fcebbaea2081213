//! The origin's 404s a shard remembers (`fetch_miss_ms`): a request for one meanwhile
//! is answered 404 without asking the origin again. A miss stands from when the origin
//! said it, whatever asks for the object meanwhile (answers given from memory do not
//! extend it), and the table is bounded.

use std::collections::HashMap;
use std::time::Instant;

use ron_codec::Address;

/// Origin 404s a shard remembers at once; past it, a new one is not remembered until
/// older ones expire (a flood of distinct missing addresses cannot grow the table).
const MISSES_REMEMBERED_MAX: usize = 4096;

/// The addresses an origin answered 404 for, each until a deadline
/// (`fetch_miss_ms`): a request for one is answered 404 without asking again.
#[derive(Debug, Default)]
pub(super) struct Misses {
    until: HashMap<Address, Instant>,
}

impl Misses {
    pub(super) fn remembers(&self, addr: &Address, now: Instant) -> bool {
        self.until.get(addr).is_some_and(|until| now < *until)
    }

    pub(super) fn remember(&mut self, addr: Address, until: Instant, now: Instant) {
        if until <= now {
            return;
        }
        if self.until.len() >= MISSES_REMEMBERED_MAX {
            self.until.retain(|_, until| now < *until);
        }
        if self.until.len() < MISSES_REMEMBERED_MAX || self.until.contains_key(&addr) {
            self.until.insert(addr, until);
        }
    }
}
