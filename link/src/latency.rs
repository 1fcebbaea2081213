//! Request latency per protocol and op: one HDR histogram each, per shard. A shard
//! records into its own set (no atomics, no sharing) and hands a copy to the control
//! thread every [`crate::link::LATENCY_PUBLISH_PERIOD_MS`] when it changed; the control
//! thread merges the shards' latest copies at scrape time.

use crate::requests::{Op, Protocol};
use hdrhistogram::Histogram;

/// Latencies are microseconds, 1 µs to 60 s, two significant digits (≤ 1 % error).
const LATENCY_US_MAX: u64 = 60_000_000;
const SIGNIFICANT_DIGITS: u8 = 2;
const SERIES: usize = Protocol::ALL.len() * Op::ALL.len();

/// Upper bounds of the exported Prometheus buckets, microseconds.
pub const EXPORTED_BUCKETS_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// One histogram and the exact latency sum per (protocol, op).
#[derive(Debug, Clone)]
pub struct LatencySet {
    histograms: Vec<Histogram<u64>>,
    sums_us: Vec<u64>,
}

impl Default for LatencySet {
    fn default() -> Self {
        let empty = Histogram::new_with_bounds(1, LATENCY_US_MAX, SIGNIFICANT_DIGITS)
            .expect("constant bounds are valid");
        LatencySet {
            histograms: vec![empty; SERIES],
            sums_us: vec![0; SERIES],
        }
    }
}

fn series(protocol: Protocol, op: Op) -> usize {
    protocol as usize * Op::ALL.len() + op as usize
}

impl LatencySet {
    pub fn record(&mut self, protocol: Protocol, op: Op, latency_us: u64) {
        let i = series(protocol, op);
        self.histograms[i].saturating_record(latency_us.clamp(1, LATENCY_US_MAX));
        self.sums_us[i] = self.sums_us[i].saturating_add(latency_us);
    }

    /// Adds another shard's set into this one.
    pub fn merge(&mut self, other: &LatencySet) {
        for (mine, theirs) in self.histograms.iter_mut().zip(&other.histograms) {
            // Same bounds on both sides, so addition cannot fail.
            let _ = mine.add(theirs);
        }
        for (mine, theirs) in self.sums_us.iter_mut().zip(&other.sums_us) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    pub fn count(&self, protocol: Protocol, op: Op) -> u64 {
        self.histograms[series(protocol, op)].len()
    }

    pub fn sum_us(&self, protocol: Protocol, op: Op) -> u64 {
        self.sums_us[series(protocol, op)]
    }

    /// Requests at or under `bound_us` (to the histogram's resolution).
    pub fn count_at_or_below(&self, protocol: Protocol, op: Op, bound_us: u64) -> u64 {
        self.histograms[series(protocol, op)].count_between(0, bound_us)
    }

    /// The latency at quantile `q` (0..=1), microseconds.
    pub fn quantile_us(&self, protocol: Protocol, op: Op, q: f64) -> u64 {
        self.histograms[series(protocol, op)].value_at_quantile(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_merge_into_one_distribution() {
        let mut a = LatencySet::default();
        let mut b = LatencySet::default();
        for us in 1..=100 {
            a.record(Protocol::Http, Op::Get, us * 10);
        }
        for us in 1..=100 {
            b.record(Protocol::Http, Op::Get, us * 1000);
        }
        b.record(Protocol::Oap, Op::Put, 7);
        a.merge(&b);
        assert_eq!(a.count(Protocol::Http, Op::Get), 200);
        assert_eq!(a.count(Protocol::Oap, Op::Put), 1);
        assert_eq!(a.count_at_or_below(Protocol::Http, Op::Get, 1_000), 101);
        let p99 = a.quantile_us(Protocol::Http, Op::Get, 0.99);
        assert!((97_000..=100_000).contains(&p99), "{p99}");
        assert_eq!(a.sum_us(Protocol::Http, Op::Get), 50_500 + 5_050_000);
    }
}
