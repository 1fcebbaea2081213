//! Shard-local counters (storage, cache, connections, the in-flight gate). Each shard writes only its own
//! `ShardMetrics` (relaxed atomics, so no cross-core lock and no contended line while
//! serving); the control thread reads and sums them at scrape time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct ShardMetrics {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub verify_failures: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    /// Index records read and checked against their address (metadata cache misses),
    /// and requests that waited for a load of the same record already running.
    pub meta_loads: AtomicU64,
    pub meta_load_waits: AtomicU64,
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub inflight: AtomicU64,
    /// Admitted requests waiting on their peer (a full socket, an upload's next bytes)
    /// with their in-flight slot given back.
    pub parked: AtomicU64,
    /// Connections ended because a body fell behind its transfer deadline.
    pub transfer_deadline_drops: AtomicU64,
    pub overload_rejections: AtomicU64,
    /// Accepts that failed (e.g. out of file descriptors).
    pub accept_failures: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    /// Times the shard's heartbeat woke late by more than the stall threshold, and the
    /// total lateness of those wakes.
    pub reactor_stalls: AtomicU64,
    pub reactor_stall_us: AtomicU64,
    /// The in-flight gate's limit; the shard is saturated while `inflight` reaches it.
    pub inflight_max: AtomicU64,
    pub mesh_requests: AtomicU64,
    pub objects_created: AtomicU64,
    /// Objects and bytes in the stores this shard owns (the stores' stats at start-up,
    /// then counted at each commit).
    pub objects_stored: AtomicU64,
    pub bytes_stored: AtomicU64,
    /// Bytes and entries held by the verified-group cache, and its budget.
    pub cache_bytes: AtomicU64,
    pub cache_bytes_max: AtomicU64,
    pub cache_entries: AtomicU64,
    /// Groups served rebuilt from their stripe (their block missing, unreadable or bad).
    pub ec_degraded_reads: AtomicU64,
    /// Reads of a stripe with more bad blocks than its parity covers (clean failures).
    pub ec_unrecoverable: AtomicU64,
    /// Bad blocks of the stripes queued for repair (or being repaired).
    pub ec_missing_blocks: AtomicU64,
    /// Repairs that could not rebuild or write back their stripe.
    pub ec_repair_failures: AtomicU64,
    /// Bytes of rebuilt blocks written back by repair.
    pub ec_repair_bytes: AtomicU64,
    /// Stripes not queued for repair because the queue was full.
    pub ec_repairs_dropped: AtomicU64,
    /// Bytes the scrubber read and checked (data, parity, packed needles).
    pub scrub_bytes: AtomicU64,
    /// Objects the scrubber checked whole.
    pub scrub_objects: AtomicU64,
    /// Bad blocks the scrubber found (each then rebuilt if its stripe allows).
    pub scrub_bad_blocks: AtomicU64,
    /// Bad blocks the scrubber found but could not rebuild: the object has no parity
    /// (packed, version 1, `--ec off`) or its stripe has more bad blocks than parity.
    pub scrub_unrepairable: AtomicU64,
    /// Full passes over every store of the shard.
    pub scrub_passes: AtomicU64,
    /// How far the pass under way is, millionths.
    pub scrub_progress_ppm: AtomicU64,
    /// 1 while an operator has paused the scrubber.
    pub scrub_paused: AtomicU64,
    /// Read-through (engine `fetch`): upstream fetches started, and finished with the
    /// object verified and stored.
    pub fetches: AtomicU64,
    pub fetches_stored: AtomicU64,
    /// Verified bytes received from providers and origins.
    pub fetch_bytes: AtomicU64,
    /// Upstream attempts that failed, by [`FETCH_FAILURE_REASONS`].
    pub fetch_failures: [AtomicU64; FETCH_FAILURE_REASONS.len()],
    /// Second providers asked because the first was slow to its first group.
    pub fetch_hedges: AtomicU64,
    /// Requests that joined a fetch already under way instead of starting one.
    pub fetch_coalesced_waiters: AtomicU64,
    /// Fetched copies held (evictable), their bytes, and this shard's budget for them.
    pub evictable_objects: AtomicU64,
    pub evictable_bytes: AtomicU64,
    pub fetched_bytes_max: AtomicU64,
    /// Fetched copies evicted, and their bytes.
    pub evictions: AtomicU64,
    pub evicted_bytes: AtomicU64,
    /// Set once the shard's listeners accept.
    pub ready: AtomicBool,
}

/// Why an upstream attempt of a read-through failed (`ron_fetch_failures_total`'s
/// `reason` label), in the order of [`ShardMetrics::fetch_failures`].
pub const FETCH_FAILURE_REASONS: [&str; 8] = [
    "no_provider",
    "connect",
    "refused",
    "bad_group",
    "protocol",
    "timeout",
    "too_large",
    "storage",
];

impl ShardMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Counts one open connection (a TLS handshake, a served connection) in
    /// `connections_open` for as long as the guard lives.
    pub fn open_connection(&self) -> OpenConnection<'_> {
        self.connections_open.fetch_add(1, Relaxed);
        OpenConnection(self)
    }

    /// A consistent-enough copy for the scraper.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            verify_failures: self.verify_failures.load(Relaxed),
            cache_hits: self.cache_hits.load(Relaxed),
            cache_misses: self.cache_misses.load(Relaxed),
            meta_loads: self.meta_loads.load(Relaxed),
            meta_load_waits: self.meta_load_waits.load(Relaxed),
            connections_open: self.connections_open.load(Relaxed),
            connections_total: self.connections_total.load(Relaxed),
            inflight: self.inflight.load(Relaxed),
            parked: self.parked.load(Relaxed),
            transfer_deadline_drops: self.transfer_deadline_drops.load(Relaxed),
            overload_rejections: self.overload_rejections.load(Relaxed),
            accept_failures: self.accept_failures.load(Relaxed),
            tls_handshake_failures: self.tls_handshake_failures.load(Relaxed),
            reactor_stalls: self.reactor_stalls.load(Relaxed),
            reactor_stall_us: self.reactor_stall_us.load(Relaxed),
            inflight_max: self.inflight_max.load(Relaxed),
            mesh_requests: self.mesh_requests.load(Relaxed),
            objects_created: self.objects_created.load(Relaxed),
            objects_stored: self.objects_stored.load(Relaxed),
            bytes_stored: self.bytes_stored.load(Relaxed),
            cache_bytes: self.cache_bytes.load(Relaxed),
            cache_bytes_max: self.cache_bytes_max.load(Relaxed),
            cache_entries: self.cache_entries.load(Relaxed),
            ec_degraded_reads: self.ec_degraded_reads.load(Relaxed),
            ec_unrecoverable: self.ec_unrecoverable.load(Relaxed),
            ec_missing_blocks: self.ec_missing_blocks.load(Relaxed),
            ec_repair_failures: self.ec_repair_failures.load(Relaxed),
            ec_repair_bytes: self.ec_repair_bytes.load(Relaxed),
            ec_repairs_dropped: self.ec_repairs_dropped.load(Relaxed),
            scrub_bytes: self.scrub_bytes.load(Relaxed),
            scrub_objects: self.scrub_objects.load(Relaxed),
            scrub_bad_blocks: self.scrub_bad_blocks.load(Relaxed),
            scrub_unrepairable: self.scrub_unrepairable.load(Relaxed),
            scrub_passes: self.scrub_passes.load(Relaxed),
            scrub_progress_ppm: self.scrub_progress_ppm.load(Relaxed),
            scrub_paused: self.scrub_paused.load(Relaxed),
            fetches: self.fetches.load(Relaxed),
            fetches_stored: self.fetches_stored.load(Relaxed),
            fetch_bytes: self.fetch_bytes.load(Relaxed),
            fetch_failures: std::array::from_fn(|i| self.fetch_failures[i].load(Relaxed)),
            fetch_hedges: self.fetch_hedges.load(Relaxed),
            fetch_coalesced_waiters: self.fetch_coalesced_waiters.load(Relaxed),
            evictable_objects: self.evictable_objects.load(Relaxed),
            evictable_bytes: self.evictable_bytes.load(Relaxed),
            fetched_bytes_max: self.fetched_bytes_max.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
            evicted_bytes: self.evicted_bytes.load(Relaxed),
            ready: self.ready.load(Relaxed),
        }
    }
}

/// One connection in `connections_open`; dropping it takes it out.
#[derive(Debug)]
pub struct OpenConnection<'a>(&'a ShardMetrics);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Relaxed);
    }
}

/// Plain values read from one shard.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub verify_failures: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub meta_loads: u64,
    pub meta_load_waits: u64,
    pub connections_open: u64,
    pub connections_total: u64,
    pub inflight: u64,
    pub parked: u64,
    pub transfer_deadline_drops: u64,
    pub overload_rejections: u64,
    pub accept_failures: u64,
    pub tls_handshake_failures: u64,
    pub reactor_stalls: u64,
    pub reactor_stall_us: u64,
    pub inflight_max: u64,
    pub mesh_requests: u64,
    pub objects_created: u64,
    pub objects_stored: u64,
    pub bytes_stored: u64,
    pub cache_bytes: u64,
    pub cache_bytes_max: u64,
    pub cache_entries: u64,
    pub ec_degraded_reads: u64,
    pub ec_unrecoverable: u64,
    pub ec_missing_blocks: u64,
    pub ec_repair_failures: u64,
    pub ec_repair_bytes: u64,
    pub ec_repairs_dropped: u64,
    pub scrub_bytes: u64,
    pub scrub_objects: u64,
    pub scrub_bad_blocks: u64,
    pub scrub_unrepairable: u64,
    pub scrub_passes: u64,
    pub scrub_progress_ppm: u64,
    pub scrub_paused: u64,
    pub fetches: u64,
    pub fetches_stored: u64,
    pub fetch_bytes: u64,
    pub fetch_failures: [u64; FETCH_FAILURE_REASONS.len()],
    pub fetch_hedges: u64,
    pub fetch_coalesced_waiters: u64,
    pub evictable_objects: u64,
    pub evictable_bytes: u64,
    pub fetched_bytes_max: u64,
    pub evictions: u64,
    pub evicted_bytes: u64,
    pub ready: bool,
}

impl MetricsSnapshot {
    /// Whether the in-flight gate is full (the shard refuses new requests).
    pub fn saturated(&self) -> bool {
        self.inflight_max > 0 && self.inflight >= self.inflight_max
    }
}
