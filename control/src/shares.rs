//! How a tenant's limit is split over the shards: each period, every shard reports how
//! much each active tenant asked of it, and the control thread gives shard `i` the share
//! `floor + (1 − N·floor) · d_i / Σd` ([`shares`]), sent back down the shard's mailbox.
//! A tenant busy on one shard gets at least `1 − (N−1)·floor` of its limit there after
//! one period. The scheme: `docs/design/quotas.md`.

use std::collections::HashMap;

use ron_link::link::{ControlLink, ShardReport, ToShard};
use ron_link::policy::QuotaKey;

/// Σ over the idle shards of a tenant's share floors: a tenant busy on one shard keeps
/// at least `1 − SHARE_FLOOR_TOTAL` of its limit there.
pub const SHARE_FLOOR_TOTAL: f64 = 0.05;

/// Gives each shard its share of every tenant that asked anything of any shard.
pub fn rebalance(link: &ControlLink, reports: &[ShardReport]) {
    let shards = reports.len();
    if shards < 2 {
        return;
    }
    let mut demand: HashMap<QuotaKey, Vec<(f64, f64)>> = HashMap::new();
    for report in reports {
        for d in &report.demand {
            demand
                .entry(d.key)
                .or_insert_with(|| vec![(0.0, 0.0); shards])[report.shard] = (d.requests, d.bytes);
        }
    }
    let mut per_shard: Vec<Vec<(QuotaKey, f64)>> = vec![Vec::new(); shards];
    for (key, by_shard) in demand {
        let split = shares(&by_shard);
        assert_whole(&split);
        for (shard, share) in split.into_iter().enumerate() {
            per_shard[shard].push((key, share));
        }
    }
    for (shard, shares) in per_shard.into_iter().enumerate() {
        link.send(shard, ToShard::Shares(shares));
    }
}

/// A tenant's shares over the shards add up to its whole limit: more would let the node
/// admit more than the limit, less would hold the tenant under it. Checked before the
/// shares are sent (once per tenant per period); each shard's share is checked again in
/// range on both ends of its mailbox (`ron_link::link`).
fn assert_whole(split: &[f64]) {
    let total: f64 = split.iter().sum();
    assert!(
        (total - 1.0).abs() < 1e-9,
        "quota invariant: a tenant's shares over the shards add up to 1, not {total}"
    );
}

/// The control thread's split of one tenant's limit over the shards, from each shard's
/// demand (requests and bytes, each normalised to its total).
pub fn shares(demand: &[(f64, f64)]) -> Vec<f64> {
    let n = demand.len().max(1) as f64;
    let floor = SHARE_FLOOR_TOTAL / n;
    let (total_requests, total_bytes) = demand
        .iter()
        .fold((0.0, 0.0), |(r, b), d| (r + d.0, b + d.1));
    let weight = |d: &(f64, f64)| {
        let mut parts = 0.0;
        let mut sum = 0.0;
        if total_requests > 0.0 {
            sum += d.0 / total_requests;
            parts += 1.0;
        }
        if total_bytes > 0.0 {
            sum += d.1 / total_bytes;
            parts += 1.0;
        }
        if parts == 0.0 {
            1.0 / n
        } else {
            sum / parts
        }
    };
    demand
        .iter()
        .map(|d| floor + (1.0 - n * floor) * weight(d))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_busy_shard_gets_nearly_all_of_the_limit() {
        let s = shares(&[(100.0, 0.0), (0.0, 0.0)]);
        assert!((s[0] - 0.975).abs() < 1e-9, "{s:?}");
        assert!((s[1] - 0.025).abs() < 1e-9, "{s:?}");
        let idle = shares(&[(0.0, 0.0), (0.0, 0.0), (0.0, 0.0)]);
        assert!(
            idle.iter().all(|s| (s - 1.0 / 3.0).abs() < 1e-9),
            "{idle:?}"
        );
    }

    #[test]
    #[should_panic(
        expected = "quota invariant: a tenant's shares over the shards add up to 1, not 1.1"
    )]
    fn shares_over_the_whole_are_not_sent() {
        assert_whole(&shares(&[(1.0, 0.0), (3.0, 0.0)]));
        assert_whole(&[0.6, 0.5]);
    }

    #[test]
    fn rebalance_sends_every_shard_its_share() {
        let (control, shards) = ron_link::link::links(2);
        let reports: Vec<ShardReport> = (0..2)
            .map(|shard| ShardReport {
                shard,
                demand: vec![ron_link::policy::Demand {
                    key: QuotaKey(9),
                    requests: if shard == 0 { 10.0 } else { 0.0 },
                    bytes: 0.0,
                }],
                ..ShardReport::default()
            })
            .collect();
        rebalance(&control, &reports);
        let got: Vec<f64> = shards
            .iter()
            .map(|end| match end.poll() {
                Some(ToShard::Shares(s)) => s[0].1,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!((got.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{got:?}");
        assert!(got[0] > got[1], "{got:?}");
    }

    proptest! {
        /// Shares are positive, sum to one, and follow demand.
        #[test]
        fn shares_split_the_whole_limit(demand in proptest::collection::vec((0.0f64..1e6, 0.0f64..1e9), 1..16)) {
            let s = shares(&demand);
            let total: f64 = s.iter().sum();
            prop_assert!((total - 1.0).abs() < 1e-9, "{s:?}");
            prop_assert!(s.iter().all(|&x| x > 0.0));
        }
    }
}
