//! The JSON answers: `/readyz` ([`readiness`]), `/admin/stats` ([`stats`]) and
//! `/version` ([`version`]). Pure functions of what was read; the admin server sends
//! them.

use ron_link::counters::{FrontSnapshot, StorageSnapshot};
use serde_json::json;

use crate::view::{ShardSample, ShardStatus};

/// The `/readyz` verdict and its report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Every shard accepts and none has its in-flight gate full (answered 200, else 503).
    pub ready: bool,
    /// The JSON report, per shard.
    pub body: String,
}

/// Ready when every shard accepts and none has its in-flight gate full.
pub fn readiness(shards: &[FrontSnapshot]) -> Readiness {
    let all_up = shards.iter().all(|s| s.ready);
    let saturated = shards.iter().any(|s| s.saturated());
    let ready = all_up && !saturated && !shards.is_empty();
    let report = json!({
        "ready": ready,
        "control": true,
        "overloaded": saturated,
        "shards": shards.iter().enumerate().map(|(i, s)| json!({
            "shard": i, "ready": s.ready, "overloaded": s.saturated(),
            "inflight": s.inflight, "inflight_max": s.inflight_max,
            "connections": s.connections_open,
        })).collect::<Vec<_>>(),
    });
    Readiness {
        ready,
        body: report.to_string(),
    }
}

/// The `/admin/stats` report: what each shard holds and serves. `status` is what each
/// shard last reported (same order as `shards`).
/// `/admin/stats`; `node_id` is the node's libp2p id on a node with `--p2p`.
pub fn stats(shards: &[ShardSample], status: &[ShardStatus], node_id: Option<&str>) -> String {
    let per_shard: Vec<_> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let status = status.get(i).copied().unwrap_or_default();
            let (storage, front) = (&s.storage, &s.front);
            json!({
                "shard": i,
                "objects": storage.objects_stored,
                "bytes": storage.bytes_stored,
                "cache_bytes": storage.cache_bytes,
                "cache_bytes_max": storage.cache_bytes_max,
                "cache_entries": storage.cache_entries,
                "connections": front.connections_open,
                "inflight": front.inflight,
                "requests": s.requests.total(),
                "reactor_stalls": front.reactor_stalls,
                "quota_tenants_tracked": status.tenants_tracked,
                "policy_version": status.policy_version,
            })
        })
        .collect();
    let mut stats = json!({
        "objects": shards.iter().map(|s| s.storage.objects_stored).sum::<u64>(),
        "bytes": shards.iter().map(|s| s.storage.bytes_stored).sum::<u64>(),
        "scrub": scrub_value(shards),
        "fetched": fetched_value(shards),
        "shards": per_shard,
    });
    if let Some(node_id) = node_id {
        stats["node_id"] = json!(node_id);
    }
    stats.to_string()
}

/// Fetched copies held as a cache (read-through): objects, bytes, the budget, and what
/// was evicted.
fn fetched_value(shards: &[ShardSample]) -> serde_json::Value {
    let sum = |f: fn(&StorageSnapshot) -> u64| shards.iter().map(|s| f(&s.storage)).sum::<u64>();
    json!({
        "objects": sum(|m| m.evictable_objects),
        "bytes": sum(|m| m.evictable_bytes),
        "bytes_max": sum(|m| m.fetched_bytes_max),
        "evicted_objects": sum(|m| m.evictions),
        "evicted_bytes": sum(|m| m.evicted_bytes),
    })
}

/// The scrubber's state (`GET /admin/scrub`, and the `scrub` part of `/admin/stats`):
/// node totals and, per shard, its passes and how far the pass under way is.
pub fn scrub(shards: &[ShardSample]) -> String {
    scrub_value(shards).to_string()
}

fn scrub_value(shards: &[ShardSample]) -> serde_json::Value {
    let sum = |f: fn(&StorageSnapshot) -> u64| shards.iter().map(|s| f(&s.storage)).sum::<u64>();
    let progress = |m: &StorageSnapshot| m.scrub_progress_ppm as f64 / 1e6;
    let count = shards.len().max(1) as f64;
    json!({
        "paused": shards.iter().any(|s| s.storage.scrub_paused > 0),
        "passes": shards.iter().map(|s| s.storage.scrub_passes).min().unwrap_or(0),
        "progress": shards.iter().map(|s| progress(&s.storage)).sum::<f64>() / count,
        "bytes": sum(|m| m.scrub_bytes),
        "objects": sum(|m| m.scrub_objects),
        "bad_blocks": sum(|m| m.scrub_bad_blocks),
        "unrepairable_blocks": sum(|m| m.scrub_unrepairable),
        "repair_bytes": sum(|m| m.ec_repair_bytes),
        "shards": shards.iter().enumerate().map(|(i, s)| json!({
            "shard": i,
            "paused": s.storage.scrub_paused > 0,
            "passes": s.storage.scrub_passes,
            "progress": progress(&s.storage),
            "bytes": s.storage.scrub_bytes,
        })).collect::<Vec<_>>(),
    })
}

/// The `/version` answer.
pub fn version(version: &str) -> String {
    json!({ "name": "ron", "version": version }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ron_link::counters::{FrontCounters, StorageCounters};
    use ron_link::requests::{Op, Protocol, RequestCounters};
    use std::sync::atomic::Ordering;

    #[test]
    fn ready_only_when_every_shard_is_up_and_none_saturated() {
        let a = FrontCounters::default();
        let b = FrontCounters::default();
        for m in [&a, &b] {
            m.inflight_max.store(2, Ordering::Relaxed);
        }
        assert!(!readiness(&[]).ready, "no shard, not ready");
        a.ready.store(true, Ordering::Relaxed);
        assert!(!readiness(&[a.snapshot(), b.snapshot()]).ready);
        b.ready.store(true, Ordering::Relaxed);
        assert!(readiness(&[a.snapshot(), b.snapshot()]).ready);
        b.inflight.store(2, Ordering::Relaxed);
        let verdict = readiness(&[a.snapshot(), b.snapshot()]);
        assert!(!verdict.ready);
        let body: serde_json::Value = serde_json::from_str(&verdict.body).unwrap();
        assert_eq!(body["overloaded"], true);
        assert_eq!(body["shards"][1]["overloaded"], true);
        assert_eq!(body["shards"][0]["overloaded"], false);
    }

    #[test]
    fn stats_sum_the_stores_and_name_each_shard() {
        let (a, b) = (StorageCounters::default(), StorageCounters::default());
        StorageCounters::add(&a.objects_stored, 2);
        StorageCounters::add(&b.objects_stored, 3);
        StorageCounters::add(&b.bytes_stored, 70);
        let requests = RequestCounters::default();
        requests.record(Protocol::Http, Op::Get, 200);
        requests.record(Protocol::Oap, Op::Stat, 404);
        let shards = [
            ShardSample {
                storage: a.snapshot(),
                requests: requests.snapshot(),
                ..ShardSample::default()
            },
            ShardSample {
                storage: b.snapshot(),
                ..ShardSample::default()
            },
        ];
        let status = [ShardStatus {
            tenants_tracked: 5,
            policy_version: 2,
        }];
        let report: serde_json::Value =
            serde_json::from_str(&stats(&shards, &status, None)).unwrap();
        assert_eq!(
            (report["objects"].as_u64(), report["bytes"].as_u64()),
            (Some(5), Some(70))
        );
        assert_eq!(report["shards"][0]["requests"], 2);
        assert_eq!(report["shards"][0]["quota_tenants_tracked"], 5);
        assert_eq!(report["shards"][0]["policy_version"], 2);
        assert_eq!(report["shards"][1]["policy_version"], 0, "not reported yet");
        assert_eq!(version("1.2.3"), r#"{"name":"ron","version":"1.2.3"}"#);
    }
}
