//! What a request is, for counting: the protocol it came by, its op, its status, and
//! why it was refused. [`RequestCounters`] is one shard's table of answered requests
//! (relaxed atomics written only by that shard, summed by the control thread at scrape).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::labels::label_enum;

/// Status codes counted individually; anything else is counted as "other".
pub const COUNTED_STATUSES: [u16; 26] = [
    200, 201, 206, 304, 400, 401, 403, 404, 405, 406, 408, 411, 412, 413, 416, 429, 431, 451, 500,
    501, 502, 503, 504, 507, 100, 0,
];

label_enum! {
    /// Front ends a request can arrive by (TLS counts as the protocol it carries).
    pub enum Protocol {
        Http = "http",
        Oap = "oap",
    }
}

label_enum! {
    /// What a request does.
    pub enum Op {
        Get = "get",
        Head = "head",
        Put = "put",
        Stat = "stat",
        /// Unroutable or unparsable requests.
        Other = "other",
    }
}

label_enum! {
    /// Why a request was refused before (or instead of) being served, from its status.
    pub enum Rejection {
        OverQuota = "over_quota",
        Overloaded = "overloaded",
        Unauthorized = "unauthorized",
        TooLarge = "too_large",
        BadRequest = "bad_request",
        Timeout = "timeout",
    }
}

impl Rejection {
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
}

const REQUEST_SERIES: usize = Protocol::ALL.len() * Op::ALL.len();

fn request_series(protocol: Protocol, op: Op) -> usize {
    protocol as usize * Op::ALL.len() + op as usize
}

/// Requests answered by one shard, by protocol, op and status, and refusals by reason.
#[derive(Debug, Default)]
pub struct RequestCounters {
    /// By protocol and op ([`request_series`]), then status ([`status_slot`]).
    requests: [[AtomicU64; COUNTED_STATUSES.len()]; REQUEST_SERIES],
    rejections: [AtomicU64; Rejection::ALL.len()],
}

fn status_slot(status: u16) -> usize {
    COUNTED_STATUSES
        .iter()
        .position(|&s| s == status)
        .unwrap_or(COUNTED_STATUSES.len() - 1)
}

impl RequestCounters {
    /// Counts one answered request and, if it was refused, its reason.
    pub fn record(&self, protocol: Protocol, op: Op, status: u16) {
        self.requests[request_series(protocol, op)][status_slot(status)].fetch_add(1, Relaxed);
        if let Some(reason) = Rejection::of_status(status) {
            self.rejections[reason as usize].fetch_add(1, Relaxed);
        }
    }

    /// Every request this shard answered so far (what the control thread watches to
    /// tell a quiet node; no allocation).
    pub fn answered_total(&self) -> u64 {
        self.requests
            .iter()
            .flatten()
            .map(|c| c.load(Relaxed))
            .sum()
    }

    /// A copy for the scraper.
    pub fn snapshot(&self) -> RequestSnapshot {
        RequestSnapshot {
            requests: self
                .requests
                .iter()
                .map(|series| series.iter().map(|c| c.load(Relaxed)).collect())
                .collect(),
            rejections: self.rejections.iter().map(|c| c.load(Relaxed)).collect(),
        }
    }
}

/// Plain values read from one shard's [`RequestCounters`].
#[derive(Debug, Clone, Default)]
pub struct RequestSnapshot {
    requests: Vec<Vec<u64>>,
    /// Indexed by `Rejection as usize`.
    pub rejections: Vec<u64>,
}

impl RequestSnapshot {
    /// Requests answered with `status` (0: any status not in [`COUNTED_STATUSES`]).
    pub fn requests(&self, protocol: Protocol, op: Op, status: u16) -> u64 {
        self.requests
            .get(request_series(protocol, op))
            .and_then(|series| series.get(status_slot(status)))
            .copied()
            .unwrap_or(0)
    }

    /// Every request this shard answered.
    pub fn total(&self) -> u64 {
        self.requests.iter().flatten().sum()
    }

    /// Refusals for `reason`.
    pub fn rejections(&self, reason: Rejection) -> u64 {
        self.rejections.get(reason as usize).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_by_series_and_refusals_by_reason() {
        let counters = RequestCounters::default();
        counters.record(Protocol::Oap, Op::Put, 429);
        counters.record(Protocol::Http, Op::Get, 200);
        counters.record(Protocol::Http, Op::Get, 299);
        let s = counters.snapshot();
        assert_eq!(s.requests(Protocol::Oap, Op::Put, 429), 1);
        assert_eq!(s.requests(Protocol::Http, Op::Get, 200), 1);
        assert_eq!(
            s.requests(Protocol::Http, Op::Get, 0),
            1,
            "uncounted status"
        );
        assert_eq!(s.total(), 3);
        assert_eq!(counters.answered_total(), 3);
        assert_eq!(s.rejections(Rejection::OverQuota), 1);
        assert_eq!(s.rejections(Rejection::Overloaded), 0);
    }
}
