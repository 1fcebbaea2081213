//! The upstream attempts of one fetch: why each failed, the providers being opened at
//! once (the hedge), and the failure a fetch ends with when none delivered.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use ron_codec::Address;
use ron_link::counters::{FetchFailure, FrontCounters};

use super::peer::PeerGet;
use super::{Failure, FetchConfig};

/// One upstream attempt that failed: who, why, and what it said or did.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{upstream}: {detail}")]
pub struct AttemptError {
    pub upstream: String,
    /// Why it failed: the `reason` label of `ron_fetch_failures_total`.
    pub reason: FetchFailure,
    pub detail: String,
}

pub(super) fn storage_error(e: impl ToString) -> AttemptError {
    AttemptError {
        upstream: "this node's store".into(),
        reason: FetchFailure::Storage,
        detail: e.to_string(),
    }
}

/// The room check refused the copy before a byte of it was written: no other
/// upstream would find room either (507).
pub(super) fn no_room_error(e: impl ToString) -> AttemptError {
    AttemptError {
        upstream: "this node's store".into(),
        reason: FetchFailure::NoRoom,
        detail: e.to_string(),
    }
}

/// One provider being opened, in its own task (dropping it cancels the attempt).
#[derive(Debug)]
pub(super) struct Attempt {
    pub(super) peer: SocketAddr,
    pub(super) task: glommio::Task<Result<PeerGet, AttemptError>>,
}

/// The first of `attempts` to finish, and its index.
pub(super) fn first_done(
    attempts: &mut [Attempt],
) -> impl Future<Output = (usize, Result<PeerGet, AttemptError>)> + '_ {
    std::future::poll_fn(move |cx| {
        for (i, attempt) in attempts.iter_mut().enumerate() {
            if let Poll::Ready(out) = Pin::new(&mut attempt.task).poll(cx) {
                return Poll::Ready((i, out));
            }
        }
        Poll::Pending
    })
}

/// The attempts of one fetch: how many failed and how the last one did.
#[derive(Debug, Default)]
pub(super) struct Attempts {
    failed: u32,
    last: Option<AttemptError>,
}

impl Attempts {
    pub(super) fn note(&mut self, metrics: &FrontCounters, addr: Address, e: AttemptError) {
        metrics.fetch_failed(e.reason);
        if e.reason == FetchFailure::BadGroup {
            tracing::warn!(obj = %addr, upstream = %e.upstream, reason = %e.detail, "read-through: an upstream sent bytes that failed verification; dropped for this object");
        } else {
            tracing::debug!(obj = %addr, upstream = %e.upstream, reason = %e.detail, "read-through: upstream attempt failed");
        }
        self.failed += 1;
        self.last = Some(e);
    }

    pub(super) fn failure(&self, config: &FetchConfig, deadline_passed: bool) -> Failure {
        let timed_out = self
            .last
            .as_ref()
            .is_some_and(|e| e.reason == FetchFailure::Timeout);
        if timed_out || deadline_passed {
            return Failure::TimedOut {
                timeout_ms: config.timeout.as_millis() as u64,
            };
        }
        if let Some(e) = self
            .last
            .as_ref()
            .filter(|e| e.reason == FetchFailure::NoRoom)
        {
            return Failure::NoRoom {
                detail: Rc::from(e.detail.as_str()),
            };
        }
        let last = match &self.last {
            Some(e) => e.to_string(),
            None => "no provider or origin is known".into(),
        };
        Failure::NoVerifiedCopy {
            tried: self.failed,
            last: Rc::from(last),
        }
    }
}
