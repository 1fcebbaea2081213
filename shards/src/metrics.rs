//! Shard-local counters and a latency histogram. Each shard writes only its own
//! `ShardMetrics` (relaxed atomics, so no cross-core lock and no contended line while
//! serving); the control thread reads and sums them at scrape time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Status codes counted individually; anything else is counted as "other".
pub const COUNTED_STATUSES: [u16; 20] = [
    200, 201, 206, 304, 400, 401, 403, 404, 405, 408, 411, 413, 416, 429, 431, 500, 501, 503, 100,
    0,
];

/// Upper bounds of the latency histogram buckets, in microseconds (last is +Inf).
pub const LATENCY_BUCKETS_US: [u64; 18] = [
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    u64::MAX,
];

#[derive(Debug, Default)]
pub struct ShardMetrics {
    requests_by_status: [AtomicU64; COUNTED_STATUSES.len()],
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
    latency_sum_us: AtomicU64,
    pub verify_failures: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub inflight: AtomicU64,
    pub overload_rejections: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    pub mesh_requests: AtomicU64,
    pub objects_created: AtomicU64,
    /// Objects and bytes in the stores this shard owns (the stores' stats at start-up,
    /// then counted at each commit).
    pub objects_stored: AtomicU64,
    pub bytes_stored: AtomicU64,
    /// Bytes and entries held by the verified-group cache.
    pub cache_bytes: AtomicU64,
    pub cache_entries: AtomicU64,
    /// Set once the shard's listeners accept.
    pub ready: AtomicBool,
    /// Set while the shard's inflight gate is full.
    pub overloaded: AtomicBool,
}

fn status_slot(status: u16) -> usize {
    COUNTED_STATUSES
        .iter()
        .position(|&s| s == status)
        .unwrap_or(COUNTED_STATUSES.len() - 1)
}

impl ShardMetrics {
    pub fn record_request(&self, status: u16, latency_us: u64) {
        self.requests_by_status[status_slot(status)].fetch_add(1, Relaxed);
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| latency_us <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len() - 1);
        self.latency_buckets[bucket].fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(latency_us, Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// A consistent-enough copy for the scraper.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            requests_by_status: COUNTED_STATUSES
                .iter()
                .zip(&self.requests_by_status)
                .map(|(&s, c)| (s, c.load(Relaxed)))
                .collect(),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            latency_buckets: self
                .latency_buckets
                .iter()
                .map(|c| c.load(Relaxed))
                .collect(),
            latency_sum_us: self.latency_sum_us.load(Relaxed),
            verify_failures: self.verify_failures.load(Relaxed),
            cache_hits: self.cache_hits.load(Relaxed),
            cache_misses: self.cache_misses.load(Relaxed),
            connections_open: self.connections_open.load(Relaxed),
            connections_total: self.connections_total.load(Relaxed),
            inflight: self.inflight.load(Relaxed),
            overload_rejections: self.overload_rejections.load(Relaxed),
            tls_handshake_failures: self.tls_handshake_failures.load(Relaxed),
            mesh_requests: self.mesh_requests.load(Relaxed),
            objects_created: self.objects_created.load(Relaxed),
            objects_stored: self.objects_stored.load(Relaxed),
            bytes_stored: self.bytes_stored.load(Relaxed),
            cache_bytes: self.cache_bytes.load(Relaxed),
            cache_entries: self.cache_entries.load(Relaxed),
            ready: self.ready.load(Relaxed),
            overloaded: self.overloaded.load(Relaxed),
        }
    }
}

/// Plain values read from one shard.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    /// (status, count); status 0 collects every status not listed.
    pub requests_by_status: Vec<(u16, u64)>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub latency_buckets: Vec<u64>,
    pub latency_sum_us: u64,
    pub verify_failures: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub connections_open: u64,
    pub connections_total: u64,
    pub inflight: u64,
    pub overload_rejections: u64,
    pub tls_handshake_failures: u64,
    pub mesh_requests: u64,
    pub objects_created: u64,
    pub objects_stored: u64,
    pub bytes_stored: u64,
    pub cache_bytes: u64,
    pub cache_entries: u64,
    pub ready: bool,
    pub overloaded: bool,
}
