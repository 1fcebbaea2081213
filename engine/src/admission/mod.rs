//! Admission and accounting of requests on one shard, shared by the HTTP and OAP/1 front
//! ends. Every request passes [`Admission::admit`] — the tenant's token buckets
//! ([`buckets`]), then the shard's in-flight gate ([`gate`]) — and ends in
//! [`Admission::finish`], which charges its object bytes, counts it by
//! protocol/op/status and records its latency — or, dropped unfinished (its client gone,
//! its task cancelled with its connection), counts it with status 0 and the time it
//! ran. Everything here is the shard's own (no
//! lock, no atomic shared with another shard). The control thread reads the relaxed
//! counters (the shard's `ShardCounters`: admission writes the in-flight gate's and the
//! heartbeat's front counters and the request counts) and talks to the shard only through the shard's [`ShardLink`]: policy and
//! quota shares come down, demand, refusals and latency go up, on a timer tick
//! ([`Admission::tick`]).

pub mod buckets;
mod gate;

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ron_link::counters::{FrontCounters, ShardCounters};
use ron_link::latency::LatencySet;
use ron_link::link::{ShardLink, ShardReport, ToShard, LATENCY_PUBLISH_PERIOD_MS};
use ron_link::policy::{Policy, QuotaKey, Tenant, TokenMatch};
use ron_link::requests::{Op, Protocol, RequestCounters};
use ron_shards::ShardIndex;

use crate::limits::STALL_THRESHOLD;
use crate::refusal::Refusal;
use buckets::ShardQuotas;
use gate::InflightSlot;
pub(crate) use gate::Parked;

/// Who a request is: its tenant, and whether it may write.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    pub tenant: Tenant,
    pub may_write: bool,
}

/// What a request says about who it is, unproven until checked: a bearer token, and the
/// address it came from. A claimed tenant name (`X-Tenant`, OAP `tenant_id`) is not
/// among them: it proves nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Claims<'a> {
    pub token: Option<&'a [u8]>,
    pub peer: Option<IpAddr>,
}

/// One admitted request: its in-flight slot (released on drop) and what it is charged to.
/// Dropped without [`Admission::finish`] — a request whose task ended with its
/// connection (an HTTP/2 stream reset, an OAP/1 connection whose writer failed) — it is
/// counted with status 0: before, such requests (the slow ones whose clients gave up)
/// vanished from the request counts and the latency histograms.
#[derive(Debug)]
pub struct Ticket {
    slot: InflightSlot,
    log: Rc<RequestLog>,
    finished: bool,
    quota: Option<QuotaKey>,
    /// Who the request is charged to (its share of the read-through's fetches).
    tenant: Tenant,
    protocol: Protocol,
    op: Op,
    started: Instant,
    /// Object bytes already charged to the tenant's bucket ([`Admission::charge_up_front`]).
    bytes_charged: u64,
}

impl Ticket {
    /// Gives the request's in-flight slot back while it waits on its peer (see
    /// [`gate`]); the slot is taken again when the guard drops.
    pub(crate) fn park(&self) -> Parked<'_> {
        self.slot.park()
    }

    pub(crate) fn tenant(&self) -> Tenant {
        self.tenant
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.finished {
            self.log.record(self.protocol, self.op, 0, self.started);
        }
    }
}

/// The shard's record of answered requests: counts by protocol, op and status, and
/// their latency. Shared by the shard's admission and each ticket it issued.
#[derive(Debug)]
struct RequestLog {
    requests: Arc<RequestCounters>,
    latency: RefCell<LatencySet>,
    latency_changed: Cell<bool>,
}

impl RequestLog {
    fn record(&self, protocol: Protocol, op: Op, status: u16, started: Instant) {
        self.requests.record(protocol, op, status);
        let latency_us = started.elapsed().as_micros() as u64;
        self.latency.borrow_mut().record(protocol, op, latency_us);
        self.latency_changed.set(true);
    }
}

/// The shard's admission state.
#[derive(Debug)]
pub struct Admission {
    shard: ShardIndex,
    /// The shard's counters: admission writes the front's (the in-flight gate, the
    /// heartbeat) and the requests'; the front ends write theirs through [`Admission::front`].
    counters: ShardCounters,
    inflight_max: u32,
    quotas: RefCell<ShardQuotas>,
    log: Rc<RequestLog>,
    latency_published: Cell<Instant>,
}

impl Admission {
    pub fn new(
        shard: ShardIndex,
        counters: ShardCounters,
        inflight_max: u32,
        quotas: ShardQuotas,
    ) -> Admission {
        gate::publish_limit(&counters.front, inflight_max);
        let requests = Arc::clone(&counters.requests);
        Admission {
            shard,
            counters,
            inflight_max,
            quotas: RefCell::new(quotas),
            log: Rc::new(RequestLog {
                requests,
                latency: RefCell::new(LatencySet::default()),
                latency_changed: Cell::new(false),
            }),
            latency_published: Cell::new(Instant::now()),
        }
    }

    /// Who a request is, by the rule of HTTP-API.md: the bearer token's tenant, else the
    /// client address, else public.
    pub fn identify(&self, claims: Claims<'_>) -> Identity {
        let quotas = self.quotas.borrow();
        let policy = quotas.policy();
        let matched: Option<TokenMatch> = claims.token.and_then(|t| policy.token(t));
        Identity {
            tenant: policy.tenant(matched, claims.peer),
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
            .map_err(|refused| Refusal::OverQuota {
                limit: refused.limit,
                retry_after_ms: refused.retry_after_ms,
            })?;
        let slot = InflightSlot::take(self.shard, &self.counters.front, self.inflight_max)?;
        Ok(Ticket {
            slot,
            log: Rc::clone(&self.log),
            finished: false,
            quota,
            tenant: *tenant,
            protocol,
            op,
            started,
            bytes_charged: 0,
        })
    }

    /// Charges the object bytes a request is about to move (an answer's span, an
    /// upload's declared length) before it moves them: a tenant's next request, on this
    /// connection or any other, finds the bucket already in debt. Charged only at the end,
    /// as many large transfers as a tenant could start at once were admitted on one
    /// byte of the bucket.
    pub fn charge_up_front(&self, ticket: &mut Ticket, bytes: u64) {
        if let (Some(key), true) = (ticket.quota, bytes > 0) {
            self.quotas.borrow_mut().charge_bytes(key, bytes);
            ticket.bytes_charged += bytes;
        }
    }

    /// Charges bytes a request made the node read for its own sake and never sends (a
    /// bundle's manifest, loaded to answer a path under it): not given back at the
    /// request's end, whatever its answer moved.
    pub fn charge_work(&self, ticket: &Ticket, bytes: u64) {
        if let (Some(key), true) = (ticket.quota, bytes > 0) {
            self.quotas.borrow_mut().charge_bytes(key, bytes);
        }
    }

    /// Ends an admitted request: settles its object bytes — what it moved beyond what
    /// was charged up front is charged, what was charged and not moved (an upload cut
    /// short) given back — and records it.
    pub fn finish(&self, mut ticket: Ticket, status: u16, object_bytes: u64) {
        if let Some(key) = ticket.quota {
            let mut quotas = self.quotas.borrow_mut();
            match object_bytes.checked_sub(ticket.bytes_charged) {
                Some(0) => {}
                Some(owed) => quotas.charge_bytes(key, owed),
                None => quotas.refund_bytes(key, ticket.bytes_charged - object_bytes),
            }
        }
        self.record(ticket.protocol, ticket.op, status, ticket.started);
        ticket.finished = true;
    }

    /// Records a request answered without a ticket (refused, or unparsable).
    pub fn record(&self, protocol: Protocol, op: Op, status: u16, started: Instant) {
        self.log.record(protocol, op, status, started);
    }

    /// The shard's front counters (connections, bytes, deadlines, read-through), which
    /// the front ends write.
    pub fn front(&self) -> &Arc<FrontCounters> {
        &self.counters.front
    }

    /// Requests being worked on by this shard (the in-flight gate's count).
    pub fn inflight(&self) -> u64 {
        gate::inflight(&self.counters.front)
    }

    /// Requests admitted and not yet answered: worked on, or parked on a slow peer.
    pub fn admitted(&self) -> u64 {
        gate::inflight(&self.counters.front) + gate::parked(&self.counters.front)
    }

    /// Takes what the control thread and the admin threads put in the shard's inbox:
    /// installs policies and quota shares; an operator's request about storage (and the
    /// denylist, the storage's business too) goes to `operator`.
    pub fn take_messages(&self, link: &ShardLink, mut operator: impl FnMut(ToShard)) {
        while let Some(message) = link.poll() {
            match message {
                ToShard::Policy(policy) => {
                    self.install(Policy::clone(&policy));
                    operator(ToShard::Policy(policy));
                }
                ToShard::Shares(shares) => self
                    .quotas
                    .borrow_mut()
                    .apply_shares(&shares, Instant::now()),
                other => operator(other),
            }
        }
    }

    /// One period's report to the control thread: demand, refusals and (each second,
    /// if changed) latency.
    pub fn report(&self, link: &ShardLink) {
        let latency = self.latency_to_publish(Instant::now());
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

    /// A copy of the latency histograms, once per publish period and only if changed.
    fn latency_to_publish(&self, now: Instant) -> Option<Box<LatencySet>> {
        let due = now.duration_since(self.latency_published.get())
            >= Duration::from_millis(LATENCY_PUBLISH_PERIOD_MS);
        if !(self.log.latency_changed.get() && due) {
            return None;
        }
        self.log.latency_changed.set(false);
        self.latency_published.set(now);
        Some(Box::new(self.log.latency.borrow().clone()))
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
            FrontCounters::add(&self.counters.front.reactor_stalls, 1);
            FrontCounters::add(
                &self.counters.front.reactor_stall_us,
                late.as_micros() as u64,
            );
        }
    }
}
