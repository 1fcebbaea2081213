//! Admission and accounting of requests on one shard, shared by the HTTP and OAP/1 front
//! ends. Every request passes [`Admission::admit`] — the tenant's token buckets, then the
//! shard's in-flight gate — and ends in [`Admission::finish`], which charges its object
//! bytes, counts it by protocol/op/status and records its latency. Everything here is
//! the shard's own (no lock, no atomic shared with another shard); the control thread
//! reads the relaxed counters of [`ShardMetrics`] and receives the rest through the
//! shard's [`ShardLink`] on a timer tick ([`Admission::tick`]).

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ron_codec::ErrorCode;
use ron_control::latency::LatencySet;
use ron_control::link::{ShardLink, ShardReport, ToShard, LATENCY_PUBLISH_PERIOD_MS};
use ron_control::quota::{Policy, QuotaKey, ShardQuotas, Tenant, TokenMatch};
use ron_shards::metrics::{Op, Protocol};
use ron_shards::{ShardIndex, ShardMetrics};

/// A heartbeat this late means a task held the shard's reactor.
pub const STALL_THRESHOLD: Duration = Duration::from_millis(20);
/// How often the heartbeat wakes.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_millis(10);
/// What a client refused by the in-flight gate is told to wait.
pub const OVERLOAD_RETRY_AFTER_MS: u64 = 1000;

/// A request refused at admission: the error to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    /// For 429 and 503: how long the client should wait.
    pub retry_after_ms: Option<u64>,
}

impl From<(ErrorCode, String)> for Refusal {
    fn from((code, message): (ErrorCode, String)) -> Refusal {
        Refusal {
            code,
            message,
            retry_after_ms: None,
        }
    }
}

/// Who a request is: its tenant, and whether it may write.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    pub tenant: Tenant,
    pub may_write: bool,
}

/// One admitted request: its in-flight slot (released on drop) and what it is charged to.
#[derive(Debug)]
pub struct Ticket {
    _slot: InflightSlot,
    quota: Option<QuotaKey>,
    protocol: Protocol,
    op: Op,
    started: Instant,
}

/// The shard's admission state.
#[derive(Debug)]
pub struct Admission {
    shard: ShardIndex,
    metrics: Arc<ShardMetrics>,
    inflight_max: u32,
    quotas: RefCell<ShardQuotas>,
    latency: RefCell<LatencySet>,
    latency_changed: Cell<bool>,
    latency_published: Cell<Instant>,
}

impl Admission {
    pub fn new(
        shard: ShardIndex,
        metrics: Arc<ShardMetrics>,
        inflight_max: u32,
        quotas: ShardQuotas,
    ) -> Admission {
        metrics
            .inflight_max
            .store(u64::from(inflight_max), Ordering::Relaxed);
        Admission {
            shard,
            metrics,
            inflight_max,
            quotas: RefCell::new(quotas),
            latency: RefCell::new(LatencySet::default()),
            latency_changed: Cell::new(false),
            latency_published: Cell::new(Instant::now()),
        }
    }

    /// Who a request is, by the rule of HTTP-API.md: the bearer token's tenant, else the
    /// claimed name (`X-Tenant`, OAP `tenant_id`), else the client address, else public.
    pub fn identify(
        &self,
        token: Option<&[u8]>,
        claim: Option<&[u8]>,
        peer: Option<IpAddr>,
    ) -> Identity {
        let quotas = self.quotas.borrow();
        let policy = quotas.policy();
        let matched: Option<TokenMatch> = token.and_then(|t| policy.token(t));
        Identity {
            tenant: policy.tenant(matched, claim, peer),
            may_write: policy.writes_open() || matched.is_some(),
        }
    }

    /// Admits a request that arrived at `started`: the tenant's quota first, then the
    /// shard's in-flight gate.
    pub fn admit(
        &self,
        tenant: &Tenant,
        protocol: Protocol,
        op: Op,
        started: Instant,
    ) -> Result<Ticket, Refusal> {
        let quota = self
            .quotas
            .borrow_mut()
            .admit(tenant, started)
            .map_err(|refused| Refusal {
                code: ErrorCode::OverQuota,
                message: refused.limit,
                retry_after_ms: Some(refused.retry_after_ms),
            })?;
        let slot = InflightSlot::take(self.shard, &self.metrics, self.inflight_max)?;
        Ok(Ticket {
            _slot: slot,
            quota,
            protocol,
            op,
            started,
        })
    }

    /// Ends an admitted request: charges its object bytes and records it.
    pub fn finish(&self, ticket: Ticket, status: u16, object_bytes: u64) {
        if let (Some(key), true) = (ticket.quota, object_bytes > 0) {
            self.quotas.borrow_mut().charge_bytes(key, object_bytes);
        }
        self.record(ticket.protocol, ticket.op, status, ticket.started);
    }

    /// Records a request answered without a ticket (refused, or unparsable).
    pub fn record(&self, protocol: Protocol, op: Op, status: u16, started: Instant) {
        self.metrics.record_request(protocol, op, status);
        let latency_us = started.elapsed().as_micros() as u64;
        self.latency.borrow_mut().record(protocol, op, latency_us);
        self.latency_changed.set(true);
    }

    /// Requests being answered on this shard.
    pub fn inflight(&self) -> u64 {
        self.metrics.inflight.load(Ordering::Relaxed)
    }

    /// One period of the shard's side of the control link: install what the control
    /// thread sent, then report demand, refusals and (each second, if changed) latency.
    pub fn tick(&self, link: &ShardLink) {
        let now = Instant::now();
        while let Some(message) = link.poll() {
            match message {
                ToShard::Policy(policy) => self.install(Policy::clone(&policy)),
                ToShard::Shares(shares) => self.quotas.borrow_mut().apply_shares(&shares, now),
            }
        }
        let publish_latency = self.latency_changed.get()
            && now.duration_since(self.latency_published.get())
                >= Duration::from_millis(LATENCY_PUBLISH_PERIOD_MS);
        let latency = publish_latency.then(|| {
            self.latency_changed.set(false);
            self.latency_published.set(now);
            Box::new(self.latency.borrow().clone())
        });
        let mut quotas = self.quotas.borrow_mut();
        link.report(ShardReport {
            shard: link.shard,
            demand: quotas.take_demand(),
            quota_rejections: quotas.rejections(),
            tenants_tracked: quotas.tenants_tracked(),
            latency,
            policy_version: quotas.policy().version,
        });
    }

    fn install(&self, policy: Policy) {
        let version = policy.version;
        self.quotas.borrow_mut().set_policy(policy);
        tracing::debug!(
            shard = self.shard.0,
            version,
            "shard installed configuration"
        );
    }

    /// Counts a heartbeat that woke `late` after its due time.
    pub fn heartbeat(&self, late: Duration) {
        if late > STALL_THRESHOLD {
            ShardMetrics::add(&self.metrics.reactor_stalls, 1);
            ShardMetrics::add(&self.metrics.reactor_stall_us, late.as_micros() as u64);
        }
    }
}

/// Logs an error answer: server faults at warn, refusals (4xx, 429, 503) at debug, so a
/// flood of refusals never floods the log. Every line names the request, the shard and
/// the reason.
pub fn log_error(shard: ShardIndex, corr_id: &str, code: ErrorCode, reason: &str) {
    let refusal =
        code.status() < 500 || matches!(code, ErrorCode::Overloaded | ErrorCode::NotReady);
    if refusal {
        tracing::debug!(
            corr_id,
            shard = shard.0,
            code = code.as_str(),
            reason,
            "request refused"
        );
    } else {
        tracing::warn!(
            corr_id,
            shard = shard.0,
            code = code.as_str(),
            reason,
            "request failed"
        );
    }
}

/// One slot of the shard's in-flight gate: at most `inflight_max` requests are being
/// answered on a shard; one more gets 503 `overloaded`. The count is the shard's
/// `inflight` metric (only this shard writes it; `/readyz` reads it).
#[derive(Debug)]
struct InflightSlot {
    metrics: Arc<ShardMetrics>,
}

impl InflightSlot {
    fn take(
        shard: ShardIndex,
        metrics: &Arc<ShardMetrics>,
        limit: u32,
    ) -> Result<InflightSlot, Refusal> {
        let limit = u64::from(limit);
        let inflight = metrics.inflight.load(Ordering::Relaxed);
        if inflight >= limit {
            ShardMetrics::add(&metrics.overload_rejections, 1);
            return Err(Refusal {
                code: ErrorCode::Overloaded,
                message: format!(
                    "shard {} has {inflight} requests in flight (limit {limit})",
                    shard.0
                ),
                retry_after_ms: Some(OVERLOAD_RETRY_AFTER_MS),
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
