//! Shard-local counters and a latency histogram. Each shard writes only its own
//! `ShardMetrics` (relaxed atomics, so no cross-core lock and no contended line while
//! serving); the control thread reads and sums them at scrape time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Status codes counted individually; anything else is counted as "other".
pub const COUNTED_STATUSES: [u16; 20] = [
    200, 201, 206, 304, 400, 401, 403, 404, 405, 408, 411, 413, 416, 429, 431, 500, 501, 503, 100,
    0,
];

/// Front ends a request can arrive by (TLS counts as the protocol it carries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http = 0,
    Oap = 1,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::Http, Protocol::Oap];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Oap => "oap",
        }
    }
}

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get = 0,
    Head = 1,
    Put = 2,
    Stat = 3,
    /// Unroutable or unparsable requests.
    Other = 4,
}

impl Op {
    pub const ALL: [Op; 5] = [Op::Get, Op::Head, Op::Put, Op::Stat, Op::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Head => "head",
            Op::Put => "put",
            Op::Stat => "stat",
            Op::Other => "other",
        }
    }
}

/// Why a request was refused before (or instead of) being served, from its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    OverQuota = 0,
    Overloaded = 1,
    Unauthorized = 2,
    TooLarge = 3,
    BadRequest = 4,
    Timeout = 5,
}

impl Rejection {
    pub const ALL: [Rejection; 6] = [
        Rejection::OverQuota,
        Rejection::Overloaded,
        Rejection::Unauthorized,
        Rejection::TooLarge,
        Rejection::BadRequest,
        Rejection::Timeout,
    ];

    /// 429 over quota; 503 overloaded or not ready; 401/403; 413/431; 400/405/411;
    /// 408. Other statuses are answers, not rejections.
    pub fn of_status(status: u16) -> Option<Rejection> {
        Some(match status {
            429 => Rejection::OverQuota,
            503 => Rejection::Overloaded,
            401 | 403 => Rejection::Unauthorized,
            413 | 431 => Rejection::TooLarge,
            400 | 405 | 411 => Rejection::BadRequest,
            408 => Rejection::Timeout,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::OverQuota => "over_quota",
            Rejection::Overloaded => "overloaded",
            Rejection::Unauthorized => "unauthorized",
            Rejection::TooLarge => "too_large",
            Rejection::BadRequest => "bad_request",
            Rejection::Timeout => "timeout",
        }
    }
}

const REQUEST_SERIES: usize = Protocol::ALL.len() * Op::ALL.len();

fn request_series(protocol: Protocol, op: Op) -> usize {
    protocol as usize * Op::ALL.len() + op as usize
}

#[derive(Debug, Default)]
pub struct ShardMetrics {
    /// By protocol and op ([`request_series`]), then status.
    requests: [[AtomicU64; COUNTED_STATUSES.len()]; REQUEST_SERIES],
    rejections: [AtomicU64; Rejection::ALL.len()],
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub verify_failures: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub inflight: AtomicU64,
    pub overload_rejections: AtomicU64,
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
    /// Bytes and entries held by the verified-group cache.
    pub cache_bytes: AtomicU64,
    pub cache_entries: AtomicU64,
    /// Set once the shard's listeners accept.
    pub ready: AtomicBool,
}

fn status_slot(status: u16) -> usize {
    COUNTED_STATUSES
        .iter()
        .position(|&s| s == status)
        .unwrap_or(COUNTED_STATUSES.len() - 1)
}

impl ShardMetrics {
    /// Counts one answered request and, if it was refused, its reason.
    pub fn record_request(&self, protocol: Protocol, op: Op, status: u16) {
        self.requests[request_series(protocol, op)][status_slot(status)].fetch_add(1, Relaxed);
        if let Some(reason) = Rejection::of_status(status) {
            self.rejections[reason as usize].fetch_add(1, Relaxed);
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// A consistent-enough copy for the scraper.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            requests: self
                .requests
                .iter()
                .map(|series| series.iter().map(|c| c.load(Relaxed)).collect())
                .collect(),
            rejections: self.rejections.iter().map(|c| c.load(Relaxed)).collect(),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            verify_failures: self.verify_failures.load(Relaxed),
            cache_hits: self.cache_hits.load(Relaxed),
            cache_misses: self.cache_misses.load(Relaxed),
            connections_open: self.connections_open.load(Relaxed),
            connections_total: self.connections_total.load(Relaxed),
            inflight: self.inflight.load(Relaxed),
            overload_rejections: self.overload_rejections.load(Relaxed),
            tls_handshake_failures: self.tls_handshake_failures.load(Relaxed),
            reactor_stalls: self.reactor_stalls.load(Relaxed),
            reactor_stall_us: self.reactor_stall_us.load(Relaxed),
            inflight_max: self.inflight_max.load(Relaxed),
            mesh_requests: self.mesh_requests.load(Relaxed),
            objects_created: self.objects_created.load(Relaxed),
            objects_stored: self.objects_stored.load(Relaxed),
            bytes_stored: self.bytes_stored.load(Relaxed),
            cache_bytes: self.cache_bytes.load(Relaxed),
            cache_entries: self.cache_entries.load(Relaxed),
            ready: self.ready.load(Relaxed),
        }
    }
}

/// Plain values read from one shard.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    requests: Vec<Vec<u64>>,
    /// Indexed by `Rejection as usize`.
    pub rejections: Vec<u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub verify_failures: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub connections_open: u64,
    pub connections_total: u64,
    pub inflight: u64,
    pub overload_rejections: u64,
    pub tls_handshake_failures: u64,
    pub reactor_stalls: u64,
    pub reactor_stall_us: u64,
    pub inflight_max: u64,
    pub mesh_requests: u64,
    pub objects_created: u64,
    pub objects_stored: u64,
    pub bytes_stored: u64,
    pub cache_bytes: u64,
    pub cache_entries: u64,
    pub ready: bool,
}

impl MetricsSnapshot {
    /// Requests answered with `status` (0: any status not in [`COUNTED_STATUSES`]).
    pub fn requests(&self, protocol: Protocol, op: Op, status: u16) -> u64 {
        self.requests
            .get(request_series(protocol, op))
            .and_then(|series| series.get(status_slot(status)))
            .copied()
            .unwrap_or(0)
    }

    /// Every request this shard answered.
    pub fn requests_total(&self) -> u64 {
        self.requests.iter().flatten().sum()
    }

    /// Whether the in-flight gate is full (the shard refuses new requests).
    pub fn saturated(&self) -> bool {
        self.inflight_max > 0 && self.inflight >= self.inflight_max
    }
}
