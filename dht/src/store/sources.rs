//! Who holds how much of the provider store, and whose record gives way when it is
//! full: max-min fairness between the hosts records come from.
//!
//! A record of others is counted under its [`Source`]: the host its provider's
//! connection came from (an IPv4 address; for IPv6 the site, a /48, which a tunnel
//! broker hands out for free), since a peer id costs nothing to make and a host does.
//! When the store holds `provider_records_max` records, a new one from a source holding
//! fewer than the largest source less one takes the place of one of the largest
//! source's records ([`SourceCounts::gives_way_to`]); otherwise it is refused. So one host flooding the
//! store keeps at most what is left when every other source holds what it asked for (or
//! an equal share): a source is never refused while it holds fewer than
//! `provider_records_max / sources − 1` records, and the flood's own records are
//! refused, not churned, once its host is the largest. Records whose provider had no
//! connection left when they came cannot be told apart and share one source, the
//! unspecified address; so do those of sources past [`SOURCES_MAX`] (a host with a big
//! IPv6 allocation could otherwise make a source of every record, and the counts
//! would take memory in step with the records).
//!
//! The counts are kept three ways, checked against each other: in memory as the store
//! will be once its pending writes are committed (what decisions read), and in LMDB
//! beside the records (`sources` counts, a `by_source` index to find a largest source's
//! records), written in the same transaction as the records they count.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv6Addr};

use ron_link::policy::{is_own_network, quota_address};

pub(crate) const SOURCE_BYTES: usize = 16;
/// Sources counted apart; records of any more share the unspecified address's count.
pub(crate) const SOURCES_MAX: usize = 65_536;

/// The host a record of others came from: an IPv4 address (as its IPv4-mapped IPv6
/// form), an IPv6 /48 (a site; a /64 on an operator's own networks), or the unspecified
/// address for a provider with no connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Source(pub [u8; SOURCE_BYTES]);

impl Source {
    /// The source of a record whose provider's connection came from `ip` (none: no
    /// connection left).
    pub fn of(ip: Option<IpAddr>) -> Source {
        let v6 = match ip.map(quota_address) {
            Some(IpAddr::V4(v4)) => v4.to_ipv6_mapped(),
            // A site (/48), not a host's /64: a tunnel broker hands out a /48 for free,
            // 65,536 /64s, each of which was a source of its own — enough to take a full
            // store's every share, and every place of the sources counted apart.
            Some(IpAddr::V6(v6)) if !is_own_network(IpAddr::V6(v6)) => {
                Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 80) - 1))
            }
            Some(IpAddr::V6(v6)) => v6,
            None => Ipv6Addr::UNSPECIFIED,
        };
        Source(v6.octets())
    }

    /// Whether this source is a host of an operator's own networks (loopback, private,
    /// link-local: `ron_link::policy::is_own_network`), or the shared source of records
    /// that cannot be told apart: no per-host share applies to it.
    pub fn is_unlimited(&self) -> bool {
        let ip = IpAddr::V6(Ipv6Addr::from(self.0));
        ip.is_unspecified() || is_own_network(ip)
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Source> {
        Some(Source(bytes.get(..SOURCE_BYTES)?.try_into().ok()?))
    }
}

/// Records of others per source, and in all.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SourceCounts {
    counts: HashMap<Source, u64>,
    /// The same counts ordered by size: the largest source is the last.
    by_count: BTreeSet<(u64, Source)>,
    total: u64,
}

impl SourceCounts {
    pub fn count(&self, source: Source) -> u64 {
        self.counts.get(&source).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// What a record from `source` is counted under: `source` itself while fewer than
    /// [`SOURCES_MAX`] sources hold records or it is one of them, else the shared
    /// source of records that cannot be told apart.
    pub fn counted_as(&self, source: Source) -> Source {
        if self.counts.len() < SOURCES_MAX || self.counts.contains_key(&source) {
            source
        } else {
            Source::of(None)
        }
    }

    /// One more record from `source`.
    pub fn add(&mut self, source: Source) {
        let count = self.count(source);
        self.set(source, count + 1);
    }

    /// One record fewer from `source`, which holds at least one.
    pub fn remove(&mut self, source: Source) {
        let count = self.count(source);
        assert!(
            count > 0,
            "provider store: a record of others removed from a source counted as holding none"
        );
        self.set(source, count - 1);
    }

    /// `source` holds `count` records.
    pub fn set(&mut self, source: Source, count: u64) {
        let before = self.count(source);
        self.by_count.remove(&(before, source));
        self.total = self.total - before + count;
        if count == 0 {
            self.counts.remove(&source);
        } else {
            self.counts.insert(source, count);
            self.by_count.insert((count, source));
        }
    }

    /// The source whose record gives way for a new one from `newcomer` in a full store:
    /// the largest, if `newcomer` holds fewer than it less one (so that neither ends with
    /// fewer than the other, and two equal sources do not trade records for ever).
    pub fn gives_way_to(&self, newcomer: Source) -> Option<Source> {
        let &(largest_count, largest) = self.by_count.last()?;
        (self.count(newcomer) + 1 < largest_count).then_some(largest)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn source(n: u8) -> Source {
        Source::of(Some(IpAddr::from([192, 0, 2, n])))
    }

    #[test]
    fn a_host_is_one_source_whatever_address_of_its_prefix_it_takes() {
        let v6 = |s: &str| Source::of(Some(s.parse().unwrap()));
        assert_eq!(v6("2001:db8:1:2::1"), v6("2001:db8:1:2:ffff::7"));
        assert_eq!(v6("2001:db8:1:2::1"), v6("2001:db8:1:3::1"), "one /48 site");
        assert_ne!(v6("2001:db8:1:2::1"), v6("2001:db8:2:2::1"));
        // An operator's own network keeps its hosts (/64s) apart.
        assert_ne!(v6("fd00:1:2:3::1"), v6("fd00:1:2:4::1"));
        assert_eq!(v6("::ffff:192.0.2.1"), source(1));
        assert_ne!(source(1), source(2));
        assert_eq!(Source::of(None), Source([0; SOURCE_BYTES]));
        assert_eq!(Source::from_bytes(&source(1).0), Some(source(1)));
        assert_eq!(Source::from_bytes(&[1; 15]), None);
    }

    #[test]
    fn the_largest_source_gives_way_to_a_smaller_one_but_not_to_its_equal() {
        let mut counts = SourceCounts::default();
        for _ in 0..5 {
            counts.add(source(1));
        }
        counts.add(source(2));
        counts.add(source(2));
        assert_eq!(counts.total(), 7);
        assert_eq!(counts.gives_way_to(source(3)), Some(source(1)));
        assert_eq!(counts.gives_way_to(source(2)), Some(source(1)));
        assert_eq!(counts.gives_way_to(source(1)), None, "not to itself");
        counts.remove(source(1));
        counts.add(source(2));
        assert_eq!(
            counts.gives_way_to(source(2)),
            None,
            "4 and 3: would trade places"
        );
        counts.set(source(1), 0);
        assert_eq!(counts.total(), 3);
        assert_eq!(counts.count(source(1)), 0);
    }

    #[test]
    fn sources_past_the_limit_share_one_count() {
        let mut counts = SourceCounts::default();
        for n in 0..SOURCES_MAX as u32 {
            counts.add(Source::of(Some(IpAddr::from(n.to_be_bytes()))));
        }
        let first = Source::of(Some(IpAddr::from([0, 0, 0, 0])));
        let counted = Source::of(Some(IpAddr::from([203, 0, 113, 1])));
        assert_eq!(counts.counted_as(counted), Source::of(None));
        assert_eq!(counts.counted_as(first), first, "already counted");
        counts.set(first, 0);
        assert_eq!(counts.counted_as(counted), counted, "room again");
    }

    proptest! {
        /// Records arrive from up to four sources at a store of `cap`; a full store
        /// takes one when a source gives way. No source is refused while it holds
        /// fewer than its equal share less one, and no source is made to give way to
        /// one that ends up holding more than it.
        #[test]
        fn a_full_store_is_shared_max_min_fairly(
            cap in 1u64..40,
            arrivals in proptest::collection::vec(0u8..4, 0..300),
        ) {
            let mut counts = SourceCounts::default();
            for from in arrivals {
                let newcomer = source(from);
                if counts.total() < cap {
                    counts.add(newcomer);
                    continue;
                }
                match counts.gives_way_to(newcomer) {
                    Some(largest) => {
                        counts.remove(largest);
                        counts.add(newcomer);
                        prop_assert!(counts.count(largest) >= counts.count(newcomer));
                    }
                    None => prop_assert!((counts.count(newcomer) + 1) * 4 >= cap),
                }
                prop_assert_eq!(counts.total(), cap);
            }
        }
    }
}
