//! What the answers are made from. The control thread owns a `View` of the node beyond
//! the shards' counters (the running policy, reload counts, each shard's latest report
//! and latency copy) and, after each change, posts a read-only copy of what the admin
//! endpoints show ([`Published`]) on the [`Board`]. An admin thread takes the latest copy
//! and reads the shards' atomic counters itself ([`sample`]); it never sees the `View`.

use std::collections::hash_map::{Entry, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use ron_link::counters::{FrontSnapshot, ShardCounters, StorageSnapshot};
use ron_link::latency::LatencySet;
use ron_link::link::{ControlLink, ShardReport, ToShard};
use ron_link::policy::{Exhausted, Policy};
use ron_link::requests::RequestSnapshot;

/// The control thread's own state; only that thread reads or writes it.
#[derive(Debug)]
pub(crate) struct View {
    policy: Arc<Policy>,
    reloads_ok: u64,
    reloads_failed: u64,
    heap_trims: u64,
    /// Resident bytes the heap trims gave back (RSS before less after, each trim).
    heap_released_bytes: u64,
    /// The latest report of each shard.
    reports: Vec<ShardReport>,
    /// The latest latency copy of each shard.
    latency: Vec<LatencySet>,
}

impl View {
    pub(crate) fn new(policy: Policy, shards: usize) -> View {
        View {
            policy: Arc::new(policy),
            reloads_ok: 0,
            reloads_failed: 0,
            heap_trims: 0,
            heap_released_bytes: 0,
            reports: (0..shards)
                .map(|shard| ShardReport {
                    shard,
                    ..ShardReport::default()
                })
                .collect(),
            latency: vec![LatencySet::default(); shards],
        }
    }

    /// The policy every shard has been sent.
    pub(crate) fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    pub(crate) fn reports(&self) -> &[ShardReport] {
        &self.reports
    }

    /// A reload was applied and `policy` sent to every shard. Each good reload raises
    /// the version by one (`ron_config_version` is the start's plus the good reloads).
    pub(crate) fn reloaded(&mut self, policy: Arc<Policy>) {
        assert!(
            policy.version == self.policy.version + 1,
            "reload invariant: a good reload raises the policy version by one (v{} after v{})",
            policy.version,
            self.policy.version
        );
        self.policy = policy;
        self.reloads_ok += 1;
    }

    /// A reload was refused; the running policy stays.
    pub(crate) fn reload_failed(&mut self) {
        self.reloads_failed += 1;
    }

    /// The heap was trimmed, giving back `released_bytes` of resident memory.
    pub(crate) fn heap_trimmed(&mut self, released_bytes: u64) {
        self.heap_trims += 1;
        self.heap_released_bytes += released_bytes;
    }

    /// Keeps each shard's latest report; a shard that missed a reload (its mailbox was
    /// full) is sent the running policy again.
    pub(crate) fn take_reports(&mut self, link: &ControlLink) {
        for mut report in link.drain() {
            let shard = report.shard;
            if shard >= self.reports.len() {
                continue;
            }
            if let Some(latency) = report.latency.take() {
                self.latency[shard] = *latency;
            }
            if report.policy_version < self.policy.version {
                link.send(shard, ToShard::Policy(Arc::clone(&self.policy)));
            }
            self.reports[shard] = report;
        }
    }

    /// The copy the admin threads answer from: latency merged and quota refusals summed
    /// over shards.
    pub(crate) fn publish(&self) -> Published {
        let mut latency = LatencySet::default();
        for set in &self.latency {
            latency.merge(set);
        }
        // In the order first seen, each (tenant, bucket) once: a map finds its entry, so
        // the merge is linear in the entries however many tenants are configured.
        let mut rejections: Vec<(String, Exhausted, u64)> = Vec::new();
        let mut entry_of: HashMap<(&str, Exhausted), usize> = HashMap::new();
        for report in &self.reports {
            for (label, kind, n) in &report.quota_rejections {
                match entry_of.entry((label.as_str(), *kind)) {
                    Entry::Occupied(at) => rejections[*at.get()].2 += n,
                    Entry::Vacant(at) => {
                        at.insert(rejections.len());
                        rejections.push((label.clone(), *kind, *n));
                    }
                }
            }
        }
        let extra = Extra {
            latency,
            quota_rejections: rejections,
            quota_tenants_tracked: self.reports.iter().map(|r| r.tenants_tracked as u64).sum(),
            config_version: self.policy.version,
            denylist_rules: self.policy.denylist.len() as u64,
            reloads_ok: self.reloads_ok,
            reloads_failed: self.reloads_failed,
            heap_trims: self.heap_trims,
            heap_released_bytes: self.heap_released_bytes,
        };
        let shards = self
            .reports
            .iter()
            .map(|r| ShardStatus {
                tenants_tracked: r.tenants_tracked,
                policy_version: r.policy_version,
            })
            .collect();
        Published { extra, shards }
    }
}

/// What the admin endpoints show beyond the shards' counters, as of the control
/// thread's last change.
#[derive(Debug, Default)]
pub struct Published {
    /// For `/metrics`.
    pub extra: Extra,
    /// For `/admin/stats`, one per shard, in shard order.
    pub shards: Vec<ShardStatus>,
}

/// What `/metrics` shows beyond the shards' counters (kept by the control thread; the
/// Prometheus renderer reads it).
#[derive(Debug, Default)]
pub struct Extra {
    pub latency: LatencySet,
    /// (tenant label, bucket, refusals) summed over shards.
    pub quota_rejections: Vec<(String, Exhausted, u64)>,
    pub quota_tenants_tracked: u64,
    pub config_version: u64,
    /// Rules of the denylist enforced.
    pub denylist_rules: u64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// Trims of the heap after a quiet spell, and the resident bytes they gave back.
    pub heap_trims: u64,
    pub heap_released_bytes: u64,
}

/// What a shard last reported about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStatus {
    pub tenants_tracked: usize,
    /// The policy version the shard enforces.
    pub policy_version: u64,
}

/// Where the control thread posts the latest [`Published`] and admin threads take it.
/// The lock is held only to swap or clone an `Arc`: never across I/O or rendering.
#[derive(Debug)]
pub struct Board {
    latest: Mutex<Arc<Published>>,
}

impl Board {
    pub fn new(first: Published) -> Board {
        Board {
            latest: Mutex::new(Arc::new(first)),
        }
    }

    pub fn post(&self, published: Published) {
        let fresh = Arc::new(published);
        let old = std::mem::replace(&mut *self.lock(), fresh);
        // The previous copy is freed here, after the lock is released.
        drop(old);
    }

    pub fn latest(&self) -> Arc<Published> {
        Arc::clone(&self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<Published>> {
        // Nothing can panic while the lock is held, but a poisoned swap is still whole.
        self.latest.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One shard's counters, read when an answer is made.
#[derive(Debug, Clone, Default)]
pub struct ShardSample {
    pub storage: StorageSnapshot,
    pub front: FrontSnapshot,
    pub requests: RequestSnapshot,
}

impl ShardSample {
    pub fn of(counters: &ShardCounters) -> ShardSample {
        ShardSample {
            storage: counters.storage.snapshot(),
            front: counters.front.snapshot(),
            requests: counters.requests.snapshot(),
        }
    }
}

/// Reads every shard's counters, in shard order.
pub fn sample(shards: &[ShardCounters]) -> Vec<ShardSample> {
    shards.iter().map(ShardSample::of).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ron_link::link::links;
    use ron_link::policy::QuotaLimits;
    use ron_link::requests::{Op, Protocol};

    fn report(shard: usize, version: u64, tenants: usize) -> ShardReport {
        ShardReport {
            shard,
            quota_rejections: vec![("a".into(), Exhausted::Requests, 2)],
            tenants_tracked: tenants,
            policy_version: version,
            ..ShardReport::default()
        }
    }

    #[test]
    fn publish_sums_reports_and_merges_latency() {
        let (control, shards) = links(2);
        let mut view = View::new(Policy::new(&[], vec![], QuotaLimits::default()), 2);
        for (i, end) in shards.iter().enumerate() {
            let mut latency = LatencySet::default();
            latency.record(Protocol::Oap, Op::Stat, 100);
            end.report(ShardReport {
                latency: Some(Box::new(latency)),
                ..report(i, 1, 3 + i)
            });
        }
        view.take_reports(&control);
        let published = view.publish();
        assert_eq!(published.extra.latency.count(Protocol::Oap, Op::Stat), 2);
        assert_eq!(
            published.extra.quota_rejections,
            vec![("a".to_string(), Exhausted::Requests, 4)]
        );
        assert_eq!(published.extra.quota_tenants_tracked, 7);
        assert_eq!(published.extra.config_version, 1);
        assert_eq!(published.shards[1].tenants_tracked, 4);
        // Every shard enforces version 1: nothing is sent again.
        assert!(shards.iter().all(|s| s.poll().is_none()));
    }

    #[test]
    fn a_shard_behind_the_policy_is_sent_it_again() {
        let (control, shards) = links(2);
        let mut policy = Policy::new(&[], vec![], QuotaLimits::default());
        policy.version = 3;
        let mut view = View::new(policy, 2);
        shards[0].report(report(0, 3, 0));
        shards[1].report(report(1, 2, 0));
        shards[1].report(report(7, 1, 0)); // no such shard: ignored
        view.take_reports(&control);
        assert!(shards[0].poll().is_none());
        assert!(matches!(shards[1].poll(), Some(ToShard::Policy(p)) if p.version == 3));
        assert_eq!(view.reports()[1].policy_version, 2);
    }

    #[test]
    #[should_panic(
        expected = "reload invariant: a good reload raises the policy version by one (v3 after v1)"
    )]
    fn a_reload_that_skips_a_version_is_refused() {
        let mut view = View::new(Policy::new(&[], vec![], QuotaLimits::default()), 1);
        let mut next = Policy::new(&["t".into()], vec![], QuotaLimits::default());
        next.version = 3;
        view.reloaded(Arc::new(next));
    }

    #[test]
    fn the_board_hands_out_the_latest_copy() {
        let board = Board::new(Published::default());
        let before = board.latest();
        board.post(Published {
            shards: vec![ShardStatus::default(); 3],
            ..Published::default()
        });
        assert!(before.shards.is_empty(), "a taken copy never changes");
        assert_eq!(board.latest().shards.len(), 3);
    }
}
