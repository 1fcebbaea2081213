//! The shard's in-flight gate, shared by the HTTP and OAP/1 front ends: at most
//! `inflight_max` requests are being answered on a shard; one more gets 503
//! `overloaded`. The count is the shard's `inflight` metric (only this shard writes it;
//! the control thread reads it for `/readyz` and `/metrics`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ron_shards::{Shard, ShardMetrics};

/// One admitted request; the slot is released when the guard drops.
#[derive(Debug)]
pub struct InflightGuard {
    metrics: Arc<ShardMetrics>,
    limit: u64,
}

impl InflightGuard {
    /// Admits a request, or says why not (the message of the 503).
    pub fn admit(shard: &Shard, limit: u32) -> Result<InflightGuard, String> {
        let metrics = shard.metrics();
        let limit = u64::from(limit);
        let inflight = metrics.inflight.load(Ordering::Relaxed);
        if inflight >= limit {
            ShardMetrics::add(&metrics.overload_rejections, 1);
            metrics.overloaded.store(true, Ordering::Relaxed);
            return Err(format!(
                "shard {} has {inflight} requests in flight (limit {limit})",
                shard.index().0
            ));
        }
        metrics.inflight.fetch_add(1, Ordering::Relaxed);
        Ok(InflightGuard {
            metrics: Arc::clone(metrics),
            limit,
        })
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let now = self.metrics.inflight.fetch_sub(1, Ordering::Relaxed) - 1;
        if now < self.limit {
            self.metrics.overloaded.store(false, Ordering::Relaxed);
        }
    }
}
