//! The shard's in-flight gate: at most `inflight_max` requests are being answered on a
//! shard; one more gets 503 `overloaded`. The count is the shard's `inflight` metric
//! (only this shard writes it; `/readyz` reads it to report saturation).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ron_shards::{ShardIndex, ShardMetrics};

use crate::refusal::Refusal;

/// Makes the gate's limit visible to the control thread (saturation in `/readyz`).
pub(super) fn publish_limit(metrics: &ShardMetrics, inflight_max: u32) {
    metrics
        .inflight_max
        .store(u64::from(inflight_max), Ordering::Relaxed);
}

pub(super) fn inflight(metrics: &ShardMetrics) -> u64 {
    metrics.inflight.load(Ordering::Relaxed)
}

/// One slot of the gate, released when dropped.
#[derive(Debug)]
pub(super) struct InflightSlot {
    metrics: Arc<ShardMetrics>,
}

impl InflightSlot {
    pub(super) fn take(
        shard: ShardIndex,
        metrics: &Arc<ShardMetrics>,
        limit: u32,
    ) -> Result<InflightSlot, Refusal> {
        let limit = u64::from(limit);
        let inflight = inflight(metrics);
        if inflight >= limit {
            ShardMetrics::add(&metrics.overload_rejections, 1);
            return Err(Refusal::Overloaded {
                shard: shard.0,
                inflight,
                limit,
            });
        }
        metrics.inflight.fetch_add(1, Ordering::Relaxed);
        Ok(InflightSlot {
            metrics: Arc::clone(metrics),
        })
    }
}

impl Drop for InflightSlot {
    fn drop(&mut self) {
        self.metrics.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_refuses_past_its_limit_and_reopens_when_a_slot_is_dropped() {
        let metrics = Arc::new(ShardMetrics::default());
        let first = InflightSlot::take(ShardIndex(3), &metrics, 1).unwrap();
        let refused = InflightSlot::take(ShardIndex(3), &metrics, 1).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "shard 3 has 1 requests in flight (limit 1)"
        );
        assert_eq!(refused.retry_after_ms(), Some(1000));
        drop(first);
        assert_eq!(inflight(&metrics), 0);
        assert!(InflightSlot::take(ShardIndex(3), &metrics, 1).is_ok());
        assert_eq!(metrics.overload_rejections.load(Ordering::Relaxed), 1);
    }
}
