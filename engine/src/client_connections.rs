//! Connections per client, node-wide, under `connections_per_client_max` (opt-in, as
//! nginx's `limit_conn`; 0: off).
//!
//! `connections_max` bounds a shard, not a client: one host opening idle connections
//! took every place and other clients waited in the kernel's backlog. With a per-client
//! limit, a connection past it is closed as soon as its client is known (the peer's
//! address, or the one a trusted proxy's PROXY header names), before a byte of its
//! protocol is read, and counted in `ron_connections_refused_total`. The kernel spreads
//! one client's connections over every shard (`SO_REUSEPORT`), so the count is the
//! node's, in a table every shard shares.
//!
//! The table is a count-min sketch: [`ROWS`] rows of [`BUCKETS`] atomic counters, each
//! row indexed by its own seeded hash of the client. A connection adds one to a counter
//! in every row and its client's count is the smallest of them: never below the truth
//! (a flooding client is held to the limit — up to [`ROWS`] − 1 past it for an instant
//! when its connections arrive on several shards at once, each seeing the others' adds
//! in a different order), above it only where other clients share all of that client's
//! counters. Fixed memory (1 MiB), no lock, no allocation
//! per connection; the seeds are random per start, so no client can pick addresses that
//! collide.
//!
//! Keys: an IPv4 address; an IPv6 /64 (a host is given a /64 and can use every address
//! in it). A trusted proxy itself is never limited: a connection from one without a
//! PROXY header speaks for many clients.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

/// Rows of the sketch: a client shares its limit with others only where they collide
/// in every row.
const ROWS: usize = 4;
/// Counters per row.
const BUCKETS: usize = 1 << 16;

/// The node's count of open connections per client.
#[derive(Debug)]
pub struct ClientConnections {
    per_client_max: u32,
    /// `ROWS` rows of `BUCKETS`, row after row.
    counts: Box<[AtomicU32]>,
    seeds: [std::collections::hash_map::RandomState; ROWS],
}

/// One connection counted for its client, until dropped.
#[derive(Debug)]
pub struct ClientConnection {
    table: Arc<ClientConnections>,
    counters: [usize; ROWS],
}

impl ClientConnections {
    /// The table for `per_client_max` connections per client; `None` when 0 (off).
    pub fn new(per_client_max: u32) -> Option<Arc<ClientConnections>> {
        (per_client_max > 0).then(|| {
            Arc::new(ClientConnections {
                per_client_max,
                counts: (0..ROWS * BUCKETS).map(|_| AtomicU32::new(0)).collect(),
                seeds: std::array::from_fn(|_| Default::default()),
            })
        })
    }

    /// Counts a new connection of `client`, or `None` when the client has
    /// `per_client_max` open already (nothing counted then).
    pub fn enter(self: &Arc<Self>, client: IpAddr) -> Option<ClientConnection> {
        let key = key_of(client);
        let counters: [usize; ROWS] =
            std::array::from_fn(|row| row * BUCKETS + self.bucket(row, key));
        let mut open = u32::MAX;
        for &counter in &counters {
            let before = self.counts[counter].fetch_add(1, Relaxed);
            open = open.min(before.saturating_add(1));
        }
        let connection = ClientConnection {
            table: Arc::clone(self),
            counters,
        };
        // Past the limit: dropped at once, which takes the counts back.
        (open <= self.per_client_max).then_some(connection)
    }

    fn bucket(&self, row: usize, key: u128) -> usize {
        (self.seeds[row].hash_one(key) as usize) % BUCKETS
    }

    /// The client's count now (what [`ClientConnections::enter`] compares).
    #[cfg(test)]
    fn open(&self, client: IpAddr) -> u32 {
        let key = key_of(client);
        (0..ROWS)
            .map(|row| self.counts[row * BUCKETS + self.bucket(row, key)].load(Relaxed))
            .min()
            .unwrap_or(0)
    }
}

impl Drop for ClientConnection {
    fn drop(&mut self) {
        for &counter in &self.counters {
            self.table.counts[counter].fetch_sub(1, Relaxed);
        }
    }
}

/// What a client is counted by: an IPv4 address (tagged, so that no IPv6 prefix equals
/// it), an IPv6 address's first 64 bits.
fn key_of(client: IpAddr) -> u128 {
    match client {
        IpAddr::V4(v4) => (1 << 64) | u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6) >> 64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_is_held_to_its_limit_and_others_are_not() {
        let table = ClientConnections::new(3).unwrap();
        let mut held: Vec<ClientConnection> = (0..3)
            .map(|_| table.enter(ip("192.0.2.1")).unwrap())
            .collect();
        assert!(table.enter(ip("192.0.2.1")).is_none(), "a fourth");
        assert_eq!(
            table.open(ip("192.0.2.1")),
            3,
            "the refused one not counted"
        );
        let others: Vec<ClientConnection> = (1..=1_000u32)
            .map(|i| {
                let other = IpAddr::from((0xc633_6400u32 + i).to_be_bytes());
                table
                    .enter(other)
                    .expect("another client has its own limit")
            })
            .collect();
        drop(held.pop());
        assert!(table.enter(ip("192.0.2.1")).is_some(), "one closed: room");
        drop(others);
        assert_eq!(table.open(ip("192.0.2.1")), 2);
        drop(held);
        assert!(
            table.counts.iter().all(|c| c.load(Relaxed) == 0),
            "all taken back"
        );
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_bit_prefix() {
        let table = ClientConnections::new(2).unwrap();
        let _a = table.enter(ip("2001:db8:1:2::1")).unwrap();
        let _b = table.enter(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert!(
            table.enter(ip("2001:db8:1:2::77")).is_none(),
            "the same /64: the same client"
        );
        assert!(table.enter(ip("2001:db8:1:3::1")).is_some(), "another /64");
        assert_ne!(key_of(ip("0.0.0.1")), key_of(ip("::1")));
    }

    #[test]
    fn off_is_no_table() {
        assert!(ClientConnections::new(0).is_none());
    }
}
