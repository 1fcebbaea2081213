//! The shard's in-flight gate: at most `inflight_max` requests are being worked on by a
//! shard; one more gets 503 `overloaded`. The count is the shard's `inflight` metric
//! (only this shard writes it; `/readyz` reads it to report saturation).
//!
//! A request waiting on its peer — a response parked on a full socket, an upload
//! waiting for its next bytes — is not being worked on: it gives its slot back while it
//! waits ([`InflightSlot::park`]) and takes it again, past the limit if need be, when the
//! peer moves. So slow readers and slow uploaders cannot fill the gate; what bounds them
//! is `connections_max` and the transfer deadline (`crate::transfer`). Parked requests
//! are counted in the shard's `parked` metric.

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ron_link::counters::FrontCounters;
use ron_shards::ShardIndex;

use crate::refusal::Refusal;

/// Makes the gate's limit visible to the control thread (saturation in `/readyz`).
pub(super) fn publish_limit(metrics: &FrontCounters, inflight_max: u32) {
    metrics
        .inflight_max
        .store(u64::from(inflight_max), Ordering::Relaxed);
}

pub(super) fn inflight(metrics: &FrontCounters) -> u64 {
    metrics.inflight.load(Ordering::Relaxed)
}

pub(super) fn parked(metrics: &FrontCounters) -> u64 {
    metrics.parked.load(Ordering::Relaxed)
}

/// One slot of the gate, released when dropped.
#[derive(Debug)]
pub(crate) struct InflightSlot {
    metrics: Arc<FrontCounters>,
    /// False while parked: the slot is given back to the gate.
    held: Cell<bool>,
}

impl InflightSlot {
    pub(super) fn take(
        shard: ShardIndex,
        metrics: &Arc<FrontCounters>,
        limit: u32,
    ) -> Result<InflightSlot, Refusal> {
        let limit = u64::from(limit);
        let inflight = inflight(metrics);
        if inflight >= limit {
            FrontCounters::add(&metrics.overload_rejections, 1);
            return Err(Refusal::Overloaded {
                shard: shard.0,
                inflight,
                limit,
            });
        }
        metrics.inflight.fetch_add(1, Ordering::Relaxed);
        Ok(InflightSlot {
            metrics: Arc::clone(metrics),
            held: Cell::new(true),
        })
    }

    /// Gives the slot back while the request waits on its peer; it is taken again
    /// (regardless of the limit: the request was admitted) when the guard drops.
    pub(crate) fn park(&self) -> Parked<'_> {
        if self.held.replace(false) {
            self.metrics.inflight.fetch_sub(1, Ordering::Relaxed);
            self.metrics.parked.fetch_add(1, Ordering::Relaxed);
        }
        Parked(self)
    }

    fn resume(&self) {
        if !self.held.replace(true) {
            self.metrics.parked.fetch_sub(1, Ordering::Relaxed);
            self.metrics.inflight.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A parked slot; dropping it takes the slot again.
#[derive(Debug)]
pub(crate) struct Parked<'a>(&'a InflightSlot);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.resume();
    }
}

impl Drop for InflightSlot {
    /// A slot is never dropped parked: [`Parked`] borrows it.
    fn drop(&mut self) {
        self.metrics.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_refuses_past_its_limit_and_reopens_when_a_slot_is_dropped() {
        let metrics = Arc::new(FrontCounters::default());
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

    #[test]
    fn a_parked_slot_lets_another_request_in_and_is_taken_back_past_the_limit() {
        let metrics = Arc::new(FrontCounters::default());
        let slow = InflightSlot::take(ShardIndex(0), &metrics, 1).unwrap();
        let parked = slow.park();
        assert_eq!(metrics.parked.load(Ordering::Relaxed), 1);
        let fast = InflightSlot::take(ShardIndex(0), &metrics, 1).unwrap();
        drop(parked);
        assert_eq!(inflight(&metrics), 2, "resumed past the limit");
        assert_eq!(metrics.parked.load(Ordering::Relaxed), 0);
        drop(slow.park());
        drop((fast, slow));
        assert_eq!(inflight(&metrics), 0);
        assert_eq!(metrics.parked.load(Ordering::Relaxed), 0);
    }
}
