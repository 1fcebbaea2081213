//! How many keys of `/ron/provide/2` batches this node stores a second: a token bucket
//! per sender and one for all of them together, checked before a batch reaches the
//! provider store.
//!
//! A batch of 4,096 records costs the DHT thread about 40 ms (about 95 ms once the
//! store is full and each record evicts another; docs/PERF.md, "Records of others shared
//! between hosts"), and the thread also answers every lookup, resolve and placement of
//! the node and of its peers. Without a rate, one host sending batches as fast as
//! request-response let it (64 streams per connection, 16 connections) had the thread
//! busy storing its records, and every resolve through the node waited behind them. The
//! store's shares ([`crate::store`]) bound what a host may hold, not what it costs.
//!
//! A sender is its host (the store's [`Source`]: an IPv4 address, an IPv6 /48), since
//! peer ids cost nothing to make; on an operator's own networks (loopback, private,
//! link-local), where many nodes share one host, its peer id. Keys past the budget are
//! not stored and not answered as stored: the publisher leaves them to another of the
//! key's 20 closest peers or to its next sweep. Honest traffic sits far below the rates
//! (a node's republication of a million keys every 12 hours sends each peer a few keys
//! a second), and a peer publishing a fresh store in one burst is paced, not refused.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use libp2p::PeerId;

use crate::store::sources::Source;

/// Keys a second one sender's batches may have stored, and the most it may have stored
/// at once after a quiet spell (16 full batches).
pub const PROVIDED_KEYS_PER_SECOND_PER_SENDER: u64 = 4_096;
pub const PROVIDED_KEYS_BURST_PER_SENDER: u64 = 65_536;
/// Keys a second all senders together may have stored (about a third of the DHT
/// thread at 40 ms a batch of 4,096), and their burst.
pub const PROVIDED_KEYS_PER_SECOND: u64 = 32_768;
pub const PROVIDED_KEYS_BURST: u64 = 262_144;
/// Senders with a bucket of their own; past that, new senders share one (a host with a
/// big IPv6 allocation could otherwise make a bucket of every batch).
pub const PROVIDE_SENDERS_MAX: usize = 65_536;
/// How often a full table looks for buckets that have refilled (and so may go): at
/// most once this long, so that a flood of new senders costs no walk per batch.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// Who a batch's keys are counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Sender {
    /// A public host (its source in the provider store's sense).
    Host(Source),
    /// A peer on an operator's own networks, where hosts are shared.
    Peer(PeerId),
    /// Senders past [`PROVIDE_SENDERS_MAX`].
    Others,
}

impl Sender {
    pub(crate) fn of(ip: IpAddr, peer: PeerId) -> Sender {
        let source = Source::of(Some(ip));
        match source.is_unlimited() {
            true => Sender::Peer(peer),
            false => Sender::Host(source),
        }
    }
}

/// One token bucket: `keys` available at `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    keys: u64,
    at: Instant,
}

impl Bucket {
    fn full(burst: u64, now: Instant) -> Bucket {
        Bucket {
            keys: burst,
            at: now,
        }
    }

    /// The keys available at `now` (refilled at `per_second` up to `burst`).
    fn available(&self, now: Instant, per_second: u64, burst: u64) -> u64 {
        let elapsed_us = now.saturating_duration_since(self.at).as_micros();
        let refill = elapsed_us.saturating_mul(u128::from(per_second)) / 1_000_000;
        u64::try_from(u128::from(self.keys).saturating_add(refill))
            .unwrap_or(u64::MAX)
            .min(burst)
    }
}

/// The buckets of every sender, and the one of all together.
#[derive(Debug)]
pub(crate) struct ProvideBudget {
    senders: HashMap<Sender, Bucket>,
    all: Bucket,
    pruned_at: Instant,
}

impl ProvideBudget {
    pub(crate) fn new(now: Instant) -> ProvideBudget {
        ProvideBudget {
            senders: HashMap::new(),
            all: Bucket::full(PROVIDED_KEYS_BURST, now),
            pruned_at: now,
        }
    }

    /// How many of `wanted` keys `sender` may have stored now (the rest are refused),
    /// taken from its bucket and from the one of all senders.
    pub(crate) fn take(&mut self, sender: Sender, wanted: u64, now: Instant) -> u64 {
        let sender = self.counted_as(sender, now);
        let own = self
            .senders
            .get(&sender)
            .map_or(PROVIDED_KEYS_BURST_PER_SENDER, |b| {
                b.available(
                    now,
                    PROVIDED_KEYS_PER_SECOND_PER_SENDER,
                    PROVIDED_KEYS_BURST_PER_SENDER,
                )
            });
        let all = self
            .all
            .available(now, PROVIDED_KEYS_PER_SECOND, PROVIDED_KEYS_BURST);
        let granted = wanted.min(own).min(all);
        self.senders.insert(
            sender,
            Bucket {
                keys: own - granted,
                at: now,
            },
        );
        self.all = Bucket {
            keys: all - granted,
            at: now,
        };
        granted
    }

    /// `sender`, or [`Sender::Others`] when the table is full of buckets still
    /// refilling.
    fn counted_as(&mut self, sender: Sender, now: Instant) -> Sender {
        if self.senders.contains_key(&sender) || self.senders.len() < PROVIDE_SENDERS_MAX {
            return sender;
        }
        if now.saturating_duration_since(self.pruned_at) >= PRUNE_EVERY {
            self.pruned_at = now;
            self.senders.retain(|_, b| {
                b.available(
                    now,
                    PROVIDED_KEYS_PER_SECOND_PER_SENDER,
                    PROVIDED_KEYS_BURST_PER_SENDER,
                ) < PROVIDED_KEYS_BURST_PER_SENDER
            });
        }
        match self.senders.len() < PROVIDE_SENDERS_MAX {
            true => sender,
            false => Sender::Others,
        }
    }

    #[cfg(test)]
    fn senders(&self) -> usize {
        self.senders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(n: u32) -> Sender {
        Sender::of(
            IpAddr::from((0xC000_0000u32 + n).to_be_bytes()),
            PeerId::random(),
        )
    }

    #[test]
    fn a_sender_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut budget = ProvideBudget::new(t0);
        let a = host(1);
        let mut stored = 0;
        for _ in 0..20 {
            stored += budget.take(a, 4_096, t0);
        }
        assert_eq!(stored, PROVIDED_KEYS_BURST_PER_SENDER);
        assert_eq!(budget.take(a, 4_096, t0), 0);
        let later = t0 + Duration::from_millis(500);
        assert_eq!(
            budget.take(a, 4_096, later),
            PROVIDED_KEYS_PER_SECOND_PER_SENDER / 2
        );
        // Another host has its own.
        assert_eq!(budget.take(host(2), 4_096, later), 4_096);
    }

    #[test]
    fn peer_ids_on_one_public_host_share_its_bucket_and_on_loopback_do_not() {
        let t0 = Instant::now();
        let mut budget = ProvideBudget::new(t0);
        let public: IpAddr = "203.0.113.7".parse().unwrap();
        let mut stored = 0;
        for _ in 0..40 {
            stored += budget.take(Sender::of(public, PeerId::random()), 4_096, t0);
        }
        assert_eq!(stored, PROVIDED_KEYS_BURST_PER_SENDER);
        // An IPv6 host's neighbours in its /48 are the same sender.
        let site = |s: &str| Sender::of(s.parse().unwrap(), PeerId::random());
        assert_eq!(site("2001:db8:1:2::1"), site("2001:db8:1:ffff::9"));
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let (p, q) = (PeerId::random(), PeerId::random());
        assert_eq!(budget.take(Sender::of(loopback, p), 65_536, t0), 65_536);
        assert_eq!(budget.take(Sender::of(loopback, q), 65_536, t0), 65_536);
        assert_eq!(budget.take(Sender::of(loopback, p), 1, t0), 0);
    }

    #[test]
    fn all_senders_together_get_the_node_wide_rate() {
        let t0 = Instant::now();
        let mut budget = ProvideBudget::new(t0);
        let stored: u64 = (0..10).map(|n| budget.take(host(n), 65_536, t0)).sum();
        assert_eq!(stored, PROVIDED_KEYS_BURST);
        let later = t0 + Duration::from_secs(1);
        let stored: u64 = (10..20).map(|n| budget.take(host(n), 65_536, later)).sum();
        assert_eq!(stored, PROVIDED_KEYS_PER_SECOND);
    }

    #[test]
    fn senders_past_the_table_share_one_bucket_until_others_refill() {
        let t0 = Instant::now();
        let mut budget = ProvideBudget::new(t0);
        budget.all.keys = u64::MAX;
        for n in 0..PROVIDE_SENDERS_MAX as u32 {
            budget.take(host(n), 1, t0);
            budget.all.keys = u64::MAX;
        }
        assert_eq!(budget.senders(), PROVIDE_SENDERS_MAX);
        let (x, y) = (host(1 << 20), host(1 << 21));
        assert_eq!(budget.take(x, 65_536, t0), 65_536);
        budget.all.keys = u64::MAX;
        assert_eq!(
            budget.take(y, 1, t0),
            0,
            "x and y share the overflow bucket"
        );
        assert_eq!(budget.senders(), PROVIDE_SENDERS_MAX + 1);
        // A second on, the buckets that refilled go, and a new sender has its own.
        let later = t0 + Duration::from_secs(1);
        budget.all.keys = u64::MAX;
        assert_eq!(budget.take(y, 65_536, later), 65_536);
        assert!(budget.senders() <= 2, "{}", budget.senders());
    }
}
