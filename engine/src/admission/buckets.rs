//! The shard's token buckets: one pair (requests, bytes) per active tenant, refilled at
//! the tenant's rate × this shard's share, owned by the shard (no lock, no sharing).
//!
//! ## The scheme (design note: `docs/design/quotas.md`)
//! A tenant's limit (`rate` per second, `burst`) is split across the N shards: shard
//! `i` holds a bucket of capacity `burst × share_i` refilled at `rate × share_i`, with
//! `Σ share_i = 1`. A fresh tenant starts at `share = 1/N` everywhere; one busy on other
//! shards and first seen on this one starts at the share the last rebalance gave it here. Every
//! [`REBALANCE_PERIOD_MS`] each shard reports how much each active tenant asked of it
//! ([`ShardQuotas::take_demand`]); the control thread computes the new shares and sends
//! them back ([`ShardQuotas::apply_shares`]). So the node never admits more than
//! `rate × t + burst` for a tenant (up to one period of skew while shards apply a new
//! split).
//!
//! A request is admitted while both buckets hold a token (or are full, when a shard's
//! share of the burst is under one token), then charged one request, and its object
//! bytes when it ends (their size is known only then), so the byte bucket can go into
//! debt. `Retry-After` is the time until both buckets admit again.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::Instant;

#[cfg(doc)]
use ron_link::policy::REBALANCE_PERIOD_MS;
use ron_link::policy::{
    Demand, Exhausted, Policy, QuotaKey, QuotaLimits, Rate, Tenant, TenantIndex,
    REPORT_TENANTS_MAX, RETRY_AFTER_MS_MAX,
};

/// A token bucket that may go into debt. Times are seconds since the table's epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    tokens: f64,
    updated_s: f64,
}

impl Bucket {
    fn full(rate: Rate, share: f64, now_s: f64) -> Bucket {
        Bucket {
            tokens: rate.burst * share,
            updated_s: now_s,
        }
    }

    /// Adds what `rate × share` gave since the last refill. A time before it (a request
    /// admitted at the start of a head that took seconds to arrive) adds nothing and
    /// moves nothing back: set back, the clock would give the same seconds again at the
    /// next refill — a full burst per slow head a client staggers.
    fn refill(&mut self, rate: Rate, share: f64, now_s: f64) {
        if now_s <= self.updated_s {
            return;
        }
        let elapsed = now_s - self.updated_s;
        self.tokens = (self.tokens + elapsed * rate.per_s * share).min(rate.burst * share);
        self.updated_s = now_s;
    }

    /// Seconds until the bucket holds one token — or is full, when its share of the
    /// burst is less than one (0 when it does).
    fn wait_s(&self, rate: Rate, share: f64) -> f64 {
        let need = (rate.burst * share).min(1.0);
        if self.tokens >= need {
            0.0
        } else {
            (need - self.tokens) / (rate.per_s * share)
        }
    }
}

/// The state of one tenant on one shard.
#[derive(Debug, Clone)]
struct TenantState {
    requests: Bucket,
    bytes: Bucket,
    share: f64,
    /// Requests and bytes asked since the last report (admitted or not).
    demand_requests: f64,
    demand_bytes: f64,
    configured: Option<TenantIndex>,
    /// Whether the tenant's limits had a request (byte) rate at its last admission:
    /// charges and refunds move a bucket only while it has one.
    requests_limited: bool,
    bytes_limited: bool,
}

impl TenantState {
    /// The limits `policy` gives this tenant: its own if configured, else the default.
    fn limits<'p>(&self, policy: &'p Policy) -> &'p QuotaLimits {
        match self.configured {
            Some(i) => policy.limits(&Tenant::Configured(i)),
            None => policy.limits(&Tenant::Public),
        }
    }

    fn is_active(&self) -> bool {
        self.demand_requests > 0.0 || self.demand_bytes > 0.0
    }

    /// Whether both buckets would be full at `now_s`: dropped, the state would come back
    /// as it is (full at an even share), so nothing is forgiven.
    fn settled(&self, policy: &Policy, now_s: f64) -> bool {
        let limits = self.limits(policy);
        let full = |bucket: &Bucket, rate: Option<Rate>, limited: bool| {
            let Some(rate) = rate.filter(|_| limited) else {
                return true;
            };
            let elapsed = (now_s - bucket.updated_s).max(0.0);
            bucket.tokens + elapsed * rate.per_s * self.share >= rate.burst * self.share
        };
        full(&self.requests, limits.requests(), self.requests_limited)
            && full(&self.bytes, limits.bytes(), self.bytes_limited)
    }

    /// A bucket whose dimension had no limit until now (a reload added it) starts full:
    /// what the tenant moved while it was unlimited is no debt. Before, the bytes of a
    /// tenant limited on requests only were charged to a bucket nothing refilled, and a
    /// reload adding `bytes_per_s` refused a tenant that had moved terabytes for days.
    fn start_newly_limited(&mut self, limits: &QuotaLimits, now_s: f64) {
        if let (Some(rate), false) = (limits.requests(), self.requests_limited) {
            self.requests = Bucket::full(rate, self.share, now_s);
        }
        if let (Some(rate), false) = (limits.bytes(), self.bytes_limited) {
            self.bytes = Bucket::full(rate, self.share, now_s);
        }
        self.requests_limited = limits.requests().is_some();
        self.bytes_limited = limits.bytes().is_some();
    }

    /// Refills both buckets to `now_s`; the longer wait of the two, and its bucket.
    fn wait(&mut self, limits: &QuotaLimits, now_s: f64) -> (f64, Exhausted) {
        let mut wait = (0.0f64, Exhausted::Requests);
        if let Some(rate) = limits.requests() {
            self.requests.refill(rate, self.share, now_s);
            wait.0 = self.requests.wait_s(rate, self.share);
        }
        if let Some(rate) = limits.bytes() {
            self.bytes.refill(rate, self.share, now_s);
            let bytes_wait = self.bytes.wait_s(rate, self.share);
            if bytes_wait > wait.0 {
                wait = (bytes_wait, Exhausted::Bytes);
            }
        }
        wait
    }
}

/// A refusal: which bucket, how long to wait, and the tenant's label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverQuota {
    pub exhausted: Exhausted,
    pub retry_after_ms: u64,
    pub limit: String,
}

/// One shard's buckets. Owned by the shard (no sharing, no locks).
#[derive(Debug)]
pub struct ShardQuotas {
    policy: Policy,
    shard_count: usize,
    /// The node-wide hasher: the same tenant has the same key on every shard, so the
    /// control thread can match reports.
    hasher: RandomState,
    tenants: HashMap<u64, TenantState>,
    tenants_max: usize,
    /// Tenants asked of in this period, and tenants whose share is not `1/N`: the
    /// periodic work touches these, never the whole table.
    active: Vec<u64>,
    reshared: Vec<u64>,
    /// Shares the last rebalance gave this shard for tenants it does not track (busy on
    /// other shards): a tenant first seen here starts at that share, not at `1/N` — its
    /// shares elsewhere already add up to the rest, and a fresh `1/N` bucket on each
    /// shard it reached was most of a burst more. Replaced at each rebalance.
    untracked_shares: HashMap<u64, f64>,
    /// Whether the table was swept for idle tenants this period (once is enough).
    swept: bool,
    epoch: Instant,
    /// Refusals per configured tenant (last slot: every other tenant), per bucket kind.
    rejections: Vec<[u64; 2]>,
}

impl ShardQuotas {
    pub fn new(
        policy: Policy,
        shard_count: usize,
        hasher: RandomState,
        tenants_max: usize,
    ) -> ShardQuotas {
        let rejections = vec![[0; 2]; policy.tenants.len() + 1];
        ShardQuotas {
            policy,
            shard_count: shard_count.max(1),
            hasher,
            tenants: HashMap::new(),
            tenants_max: tenants_max.max(1),
            active: Vec::new(),
            reshared: Vec::new(),
            untracked_shares: HashMap::new(),
            swept: false,
            epoch: Instant::now(),
            rejections,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Installs a reloaded policy. Buckets are kept (a reload never hands out a fresh
    /// burst) and clamp to the new capacities at their next use.
    pub fn set_policy(&mut self, policy: Policy) {
        if policy
            .tenants
            .iter()
            .map(|t| &t.name)
            .ne(self.policy.tenants.iter().map(|t| &t.name))
        {
            // Indices may now name other tenants: a configured tenant's state and refusal
            // counts follow its name (keys are made from names, so they stay); a tenant
            // removed takes its state and counts with it. Every other state is kept: a
            // reload never hands out a fresh burst.
            self.renumber_tenants(&policy);
            self.rejections = self.rejections_by_name(&policy);
        }
        self.policy = policy;
    }

    /// Points each configured tenant's state at its index in `policy`; drops the states
    /// of tenants `policy` no longer names.
    fn renumber_tenants(&mut self, policy: &Policy) {
        let index_by_name: HashMap<&str, TenantIndex> = policy
            .tenants
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), TenantIndex(i as u32)))
            .collect();
        let before = &self.policy;
        self.tenants.retain(|_, state| {
            let Some(old) = state.configured else {
                return true;
            };
            let name = before.tenants[old.0 as usize].name.as_str();
            state.configured = index_by_name.get(name).copied();
            state.configured.is_some()
        });
        let tenants = &self.tenants;
        self.active.retain(|key| tenants.contains_key(key));
        self.reshared.retain(|key| tenants.contains_key(key));
    }

    /// The refusal counts so far, slotted by `policy`'s tenants (last slot: every other
    /// tenant), each taken from the slot of the same name now.
    fn rejections_by_name(&self, policy: &Policy) -> Vec<[u64; 2]> {
        let label = |policy: &Policy, slot: usize| -> String {
            let tenant = (slot < policy.tenants.len()).then_some(TenantIndex(slot as u32));
            policy.label(tenant).to_string()
        };
        let now: HashMap<String, [u64; 2]> = (0..self.rejections.len())
            .map(|slot| (label(&self.policy, slot), self.rejections[slot]))
            .collect();
        (0..=policy.tenants.len())
            .map(|slot| now.get(&label(policy, slot)).copied().unwrap_or([0; 2]))
            .collect()
    }

    fn now_s(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.epoch).as_secs_f64()
    }

    fn key(&self, tenant: &Tenant) -> u64 {
        match tenant {
            // By name, not index: a reload may renumber the tenants.
            Tenant::Configured(i) => self
                .hasher
                .hash_one((0u8, self.policy.tenants[i.0 as usize].name.as_str())),
            Tenant::Addr(ip) => self.hasher.hash_one((2u8, ip)),
            Tenant::Public => self.hasher.hash_one(3u8),
        }
    }

    /// Admits one request of `tenant` or says how long it must wait.
    pub fn admit(&mut self, tenant: &Tenant, now: Instant) -> Result<Option<QuotaKey>, OverQuota> {
        let limits = *self.policy.limits(tenant);
        if limits.is_unlimited() {
            return Ok(None);
        }
        let key = self.key(tenant);
        let now_s = self.now_s(now);
        let state = self.tenant_state(key, tenant, &limits, now_s);
        state.start_newly_limited(&limits, now_s);
        let (wait_s, exhausted) = state.wait(&limits, now_s);
        if wait_s > 0.0 {
            return Err(self.refuse(tenant, &limits, wait_s, exhausted));
        }
        if limits.requests().is_some() {
            state.requests.tokens -= 1.0;
        }
        Ok(Some(QuotaKey(key)))
    }

    /// The tenant's state (made, with full buckets at an even share, on first sight),
    /// marked active with one more request of demand.
    fn tenant_state(
        &mut self,
        key: u64,
        tenant: &Tenant,
        limits: &QuotaLimits,
        now_s: f64,
    ) -> &mut TenantState {
        let default_share = 1.0 / self.shard_count as f64;
        let mut share = default_share;
        if !self.tenants.contains_key(&key) {
            self.make_room(now_s);
            if let Some(given) = self.untracked_shares.remove(&key) {
                share = given;
                self.reshared.push(key);
            }
        }
        let bucket = |rate: Option<Rate>| {
            rate.map_or(
                Bucket {
                    tokens: 0.0,
                    updated_s: now_s,
                },
                |r| Bucket::full(r, share, now_s),
            )
        };
        let state = self.tenants.entry(key).or_insert_with(|| TenantState {
            requests: bucket(limits.requests()),
            bytes: bucket(limits.bytes()),
            share,
            demand_requests: 0.0,
            demand_bytes: 0.0,
            configured: tenant.configured(),
            requests_limited: limits.requests().is_some(),
            bytes_limited: limits.bytes().is_some(),
        });
        if !state.is_active() {
            self.active.push(key);
        }
        state.demand_requests += 1.0;
        state
    }

    /// Counts a refusal and says how long to wait, and why.
    fn refuse(
        &mut self,
        tenant: &Tenant,
        limits: &QuotaLimits,
        wait_s: f64,
        exhausted: Exhausted,
    ) -> OverQuota {
        let slot = tenant
            .configured()
            .map_or(self.policy.tenants.len(), |i| i.0 as usize);
        self.rejections[slot][exhausted as usize] += 1;
        OverQuota {
            exhausted,
            retry_after_ms: ((wait_s * 1000.0).ceil() as u64).clamp(1, RETRY_AFTER_MS_MAX),
            limit: self.describe(tenant, limits, exhausted),
        }
    }

    fn describe(&self, tenant: &Tenant, limits: &QuotaLimits, exhausted: Exhausted) -> String {
        let who = match tenant {
            Tenant::Configured(i) => format!("tenant {:?}", self.policy.tenants[i.0 as usize].name),
            Tenant::Addr(ip @ IpAddr::V4(_)) => format!("client {ip}"),
            Tenant::Addr(ip) => format!("clients of {ip}/64"),
            Tenant::Public => "tenant \"public\"".to_string(),
        };
        match exhausted {
            Exhausted::Requests => format!(
                "{who} is over its quota of {} requests/s (burst {})",
                limits.requests_per_s,
                limits.requests().map_or(0.0, |r| r.burst)
            ),
            Exhausted::Bytes => format!(
                "{who} is over its quota of {} bytes/s (burst {})",
                limits.bytes_per_s,
                limits.bytes().map_or(0.0, |r| r.burst)
            ),
        }
    }

    /// Charges the object bytes an admitted request moved.
    pub fn charge_bytes(&mut self, key: QuotaKey, bytes: u64) {
        let Some(state) = self.tenants.get_mut(&key.0) else {
            return;
        };
        if !state.is_active() {
            self.active.push(key.0);
        }
        state.demand_bytes += bytes as f64;
        if state.bytes_limited {
            state.bytes.tokens -= bytes as f64;
        }
    }

    /// Gives back object bytes charged up front that a request did not move — never
    /// past the bucket's capacity (a debt paid off by refills meanwhile is not paid
    /// twice).
    pub fn refund_bytes(&mut self, key: QuotaKey, bytes: u64) {
        let Some(state) = self.tenants.get_mut(&key.0) else {
            return;
        };
        let limits = state.limits(&self.policy);
        if let (Some(rate), true) = (limits.bytes(), state.bytes_limited) {
            let capacity = rate.burst * state.share;
            state.bytes.tokens = (state.bytes.tokens + bytes as f64).min(capacity);
        }
    }

    /// Keeps the table within `tenants_max` (one sweep per period at most): drops the
    /// tenants idle since the last report whose buckets have refilled (nothing is lost:
    /// they would start over full); only if that leaves under a tenth free, every idle
    /// tenant (a debt forgiven); then an arbitrary one (it starts over with a full
    /// bucket — the bound on what a flood of distinct tenants can gain). Before, each
    /// sweep dropped every idle tenant: on a busy node whose table had filled, a client
    /// that paused a quarter of a second between large GETs had its byte debt forgiven.
    fn make_room(&mut self, now_s: f64) {
        if self.tenants.len() < self.tenants_max {
            return;
        }
        if !self.swept {
            self.swept = true;
            let policy = &self.policy;
            self.tenants
                .retain(|_, s| s.is_active() || !s.settled(policy, now_s));
            if self.tenants.len() > self.tenants_max - self.tenants_max / 10 {
                let (default_share, untracked) =
                    (1.0 / self.shard_count as f64, &mut self.untracked_shares);
                self.tenants.retain(|key, s| {
                    let keep = s.is_active();
                    if !keep && s.share != default_share {
                        untracked.insert(*key, s.share);
                    }
                    keep
                });
            }
        }
        if self.tenants.len() >= self.tenants_max {
            if let Some(&victim) = self.tenants.keys().next() {
                // Its share kept until the next rebalance: seen again before it, it
                // starts there, not at a fresh 1/N.
                let share = self.tenants.remove(&victim).map(|s| s.share);
                if let Some(share) = share.filter(|&s| s != 1.0 / self.shard_count as f64) {
                    self.untracked_shares.insert(victim, share);
                }
            }
        }
    }

    /// The period's demand (at most [`REPORT_TENANTS_MAX`] tenants); resets it. Past
    /// the cap, the configured tenants go first, then the busiest by their share of the
    /// period's requests and bytes together: cut by requests alone, a flood of
    /// addresses sending one request each pushed a configured tenant, or one moving
    /// large objects with few requests, out of the report, and its share here down to
    /// the floor.
    pub fn take_demand(&mut self) -> Vec<Demand> {
        self.swept = false;
        let mut out = Vec::with_capacity(self.active.len());
        for key in self.active.drain(..) {
            // An evicted tenant leaves its key behind: skip it.
            let Some(state) = self.tenants.get_mut(&key) else {
                continue;
            };
            let demand = Demand {
                key: QuotaKey(key),
                requests: state.demand_requests,
                bytes: state.demand_bytes,
            };
            out.push((state.configured.is_some(), demand));
            state.demand_requests = 0.0;
            state.demand_bytes = 0.0;
        }
        if out.len() > REPORT_TENANTS_MAX {
            let (requests, bytes) = out.iter().fold((0.0f64, 0.0f64), |(r, b), (_, d)| {
                (r + d.requests, b + d.bytes)
            });
            let weight = |d: &Demand| d.requests / requests.max(1.0) + d.bytes / bytes.max(1.0);
            out.sort_by(|(ca, a), (cb, b)| cb.cmp(ca).then(weight(b).total_cmp(&weight(a))));
            out.truncate(REPORT_TENANTS_MAX);
        }
        out.into_iter().map(|(_, demand)| demand).collect()
    }

    /// Applies this shard's new shares; tenants not listed return to `1/N`. Tokens above
    /// a smaller capacity are dropped, so the node-wide total never grows by a reshare.
    pub fn apply_shares(&mut self, shares: &[(QuotaKey, f64)], now: Instant) {
        let now_s = self.now_s(now);
        let default_share = 1.0 / self.shard_count as f64;
        let listed: std::collections::HashSet<u64> = shares.iter().map(|(k, _)| k.0).collect();
        for key in std::mem::take(&mut self.reshared) {
            if !listed.contains(&key) {
                self.set_share(key, default_share, now_s);
            }
        }
        // Replaced, not cleared: a flood's peak would keep its capacity for good.
        self.untracked_shares = HashMap::with_capacity(shares.len().min(REPORT_TENANTS_MAX));
        for &(key, share) in shares {
            if self.set_share(key.0, share, now_s) {
                self.reshared.push(key.0);
            } else {
                self.untracked_shares.insert(key.0, share);
            }
        }
    }

    /// Sets one tenant's share on this shard (false if the shard does not track it).
    fn set_share(&mut self, key: u64, share: f64, now_s: f64) -> bool {
        let Some(state) = self.tenants.get_mut(&key) else {
            return false;
        };
        let limits = *state.limits(&self.policy);
        for (bucket, rate) in [
            (&mut state.requests, limits.requests()),
            (&mut state.bytes, limits.bytes()),
        ] {
            if let Some(rate) = rate {
                bucket.refill(rate, state.share, now_s);
                bucket.tokens = bucket.tokens.min(rate.burst * share);
            }
        }
        state.share = share;
        true
    }

    /// Refusals so far: (tenant label, bucket kind, count), configured tenants first.
    pub fn rejections(&self) -> Vec<(String, Exhausted, u64)> {
        let mut out = Vec::new();
        for (slot, counts) in self.rejections.iter().enumerate() {
            let label = self
                .policy
                .label((slot < self.policy.tenants.len()).then_some(TenantIndex(slot as u32)));
            for (kind, n) in [
                (Exhausted::Requests, counts[0]),
                (Exhausted::Bytes, counts[1]),
            ] {
                out.push((label.to_string(), kind, n));
            }
        }
        out
    }

    pub fn tenants_tracked(&self) -> usize {
        self.tenants.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn limits(per_s: f64, burst: f64) -> QuotaLimits {
        QuotaLimits::requests_only(per_s, burst)
    }

    fn table(policy: Policy, shards: usize) -> ShardQuotas {
        ShardQuotas::new(policy, shards, RandomState::new(), 1000)
    }

    /// A request admitted at an earlier start (its head trickled in over seconds) must
    /// not set the bucket's clock back: the next request would be given those seconds'
    /// tokens again, a burst per slow head.
    #[test]
    fn an_earlier_start_does_not_set_the_clock_back() {
        let policy = Policy::new(&[], vec![], limits(1.0, 1.0));
        let mut quotas = table(policy, 1);
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(10);
        let who = Tenant::Public;
        quotas.admit(&who, now).unwrap();
        quotas.admit(&who, now).unwrap_err();
        quotas.admit(&who, t0).unwrap_err();
        assert!(
            quotas.admit(&who, now).is_err(),
            "the same 10 s given twice"
        );
    }

    fn bytes_limits(bytes_per_s: u64, bytes_burst: u64) -> QuotaLimits {
        QuotaLimits {
            bytes_per_s,
            bytes_burst,
            ..limits(1000.0, 1000.0)
        }
    }

    /// Bytes a tenant moved while only its requests were limited are no debt once a
    /// reload adds a byte limit: before, they were charged to a bucket nothing refilled,
    /// and the tenant was refused for as long as the terabytes took to pay off.
    #[test]
    fn a_byte_limit_added_by_a_reload_starts_full() {
        let policy = Policy::new(&[], vec![], limits(1000.0, 1000.0));
        let mut quotas = table(policy, 1);
        let t0 = Instant::now();
        let key = quotas.admit(&Tenant::Public, t0).unwrap().unwrap();
        quotas.charge_bytes(key, 5_000_000_000_000);
        quotas.set_policy(Policy::new(&[], vec![], bytes_limits(1000, 100_000)));
        let later = t0 + Duration::from_secs(1);
        let key = quotas.admit(&Tenant::Public, later).unwrap().unwrap();
        // From here on bytes count.
        quotas.charge_bytes(key, 200_000);
        let refused = quotas.admit(&Tenant::Public, later).unwrap_err();
        assert_eq!(refused.exhausted, Exhausted::Bytes);
    }

    /// A refund never fills a bucket past its capacity: a debt paid off by refills
    /// while the transfer ran is not paid a second time.
    #[test]
    fn a_refund_stops_at_the_buckets_capacity() {
        let policy = Policy::new(&[], vec![], bytes_limits(1000, 1000));
        let mut quotas = table(policy, 1);
        let t0 = Instant::now();
        let key = quotas.admit(&Tenant::Public, t0).unwrap().unwrap();
        quotas.charge_bytes(key, 1000);
        // Paid off by a refill, then the whole charge is refunded (the transfer moved
        // nothing): the bucket holds its capacity, 1000, not 2000.
        let later = t0 + Duration::from_secs(5);
        quotas.admit(&Tenant::Public, later).unwrap();
        quotas.refund_bytes(key, 1000);
        quotas.charge_bytes(key, 1000);
        let refused = quotas.admit(&Tenant::Public, later).unwrap_err();
        assert_eq!(refused.exhausted, Exhausted::Bytes);
    }

    /// A full table makes room from the idle tenants whose buckets have refilled, not
    /// from one still paying off a large transfer: that debt is not forgiven because
    /// its tenant paused between requests (before, every idle tenant was dropped).
    #[test]
    fn making_room_keeps_an_idle_tenants_debt() {
        let policy = Policy::new(&[], vec![], bytes_limits(1000, 1000));
        let mut quotas = ShardQuotas::new(policy, 1, RandomState::new(), 2);
        let client = |last: u8| Tenant::Addr(IpAddr::from([10, 0, 0, last]));
        let t0 = Instant::now();
        let key = quotas.admit(&client(1), t0).unwrap().unwrap();
        quotas.charge_bytes(key, 1_000_000_000);
        quotas.take_demand();
        quotas.admit(&client(2), t0).unwrap();
        quotas.take_demand();
        let later = t0 + Duration::from_secs(1);
        quotas.admit(&client(3), later).unwrap();
        let refused = quotas.admit(&client(1), later).unwrap_err();
        assert_eq!(refused.exhausted, Exhausted::Bytes);
    }

    /// A report past its cap keeps the configured tenants, and a tenant moving many
    /// bytes with one request, over a flood of addresses sending two requests each.
    #[test]
    fn a_flood_of_addresses_does_not_push_real_tenants_out_of_the_report() {
        let tenant = (
            "t".to_string(),
            vec!["t-token".to_string()],
            bytes_limits(1000, 1000),
        );
        let policy = Policy::new(&[], vec![tenant], bytes_limits(1000, 1000));
        let mut quotas = ShardQuotas::new(policy, 2, RandomState::new(), 10_000);
        let t0 = Instant::now();
        let configured = quotas
            .admit(&Tenant::Configured(TenantIndex(0)), t0)
            .unwrap();
        let heavy = Tenant::Addr(IpAddr::from([10, 9, 9, 9]));
        let heavy_key = quotas.admit(&heavy, t0).unwrap().unwrap();
        quotas.charge_bytes(heavy_key, 50_000_000);
        for i in 0..REPORT_TENANTS_MAX as u32 + 100 {
            let flood = Tenant::Addr(IpAddr::from((i + 1).to_be_bytes()));
            for _ in 0..2 {
                let _ = quotas.admit(&flood, t0);
            }
        }
        let report = quotas.take_demand();
        assert_eq!(report.len(), REPORT_TENANTS_MAX);
        let keys: Vec<QuotaKey> = report.iter().map(|d| d.key).collect();
        assert!(keys.contains(&configured.unwrap()), "the configured tenant");
        assert!(keys.contains(&heavy_key), "the tenant moving 50 MB");
    }

    /// A tenant busy elsewhere, first seen on this shard, starts at the share the last
    /// rebalance gave it here, not at `1/N`: its shares on the other shards already add
    /// up to the rest (before, each shard it reached added a fresh `1/N` of its burst).
    #[test]
    fn a_tenant_first_seen_here_starts_at_the_share_it_was_given() {
        let policy = Policy::new(&[], vec![], limits(40.0, 40.0));
        let mut quotas = table(policy, 16);
        let t0 = Instant::now();
        let key = QuotaKey(quotas.key(&Tenant::Public));
        quotas.apply_shares(&[(key, 0.025)], t0);
        quotas.admit(&Tenant::Public, t0).unwrap();
        assert!(
            quotas.admit(&Tenant::Public, t0).is_err(),
            "a bucket of 40 × 0.025 = 1 request, not 40 / 16 = 2.5"
        );
        // Not listed at the next rebalance: back to 1/N, as any tenant.
        quotas.apply_shares(&[], t0 + Duration::from_secs(1));
        let share = quotas.tenants[&key.0].share;
        assert_eq!(share, 1.0 / 16.0);
    }

    /// A tenant evicted from a full table keeps its share until the next rebalance:
    /// seen again before it, it starts there, not at a fresh 1/N.
    #[test]
    fn an_evicted_tenant_comes_back_at_its_share() {
        let policy = Policy::new(&[], vec![], limits(40.0, 40.0));
        let mut quotas = ShardQuotas::new(policy, 16, RandomState::new(), 1);
        let t0 = Instant::now();
        let a = Tenant::Addr(IpAddr::from([10, 0, 0, 1]));
        let key_a = quotas.admit(&a, t0).unwrap().unwrap();
        quotas.apply_shares(&[(key_a, 0.5)], t0);
        quotas
            .admit(&Tenant::Addr(IpAddr::from([10, 0, 0, 2])), t0)
            .unwrap();
        assert!(!quotas.tenants.contains_key(&key_a.0), "a was evicted");
        quotas.admit(&a, t0).unwrap();
        assert_eq!(quotas.tenants[&key_a.0].share, 0.5);
    }

    #[test]
    fn burst_then_refusal_with_the_wait_then_recovery() {
        let policy = Policy::new(&[], vec![], limits(2.0, 5.0));
        let mut quotas = table(policy, 1);
        let t0 = Instant::now();
        let who = Tenant::Public;
        for _ in 0..5 {
            quotas.admit(&who, t0).unwrap();
        }
        let refused = quotas.admit(&who, t0).unwrap_err();
        assert_eq!(refused.exhausted, Exhausted::Requests);
        assert_eq!(
            refused.retry_after_ms, 500,
            "one request refills in 1/2 s at 2/s"
        );
        assert_eq!(
            refused.limit,
            "tenant \"public\" is over its quota of 2 requests/s (burst 5)"
        );
        // Half a second refills one request at 2/s.
        let later = t0 + Duration::from_millis(501);
        quotas.admit(&who, later).unwrap();
        let refused = quotas.admit(&who, later).unwrap_err();
        assert!((1..=500).contains(&refused.retry_after_ms), "{refused:?}");
        assert_eq!(
            quotas.rejections()[0],
            ("other".into(), Exhausted::Requests, 2)
        );
    }

    /// A reload that changes the tenants keeps each remaining tenant's refusal counts
    /// (and every other tenant's): summed over shards that take the reload at different
    /// times, a count set back to 0 read as a counter reset, and rate() saw refusals
    /// that never happened.
    #[test]
    fn refusal_counts_follow_their_tenant_across_a_reload() {
        let tenant = |name: &str| {
            (
                name.to_string(),
                vec![format!("{name}-token")],
                limits(1.0, 1.0),
            )
        };
        let before = Policy::new(&[], vec![tenant("a"), tenant("b")], limits(1.0, 1.0));
        let mut quotas = table(before, 1);
        let t0 = Instant::now();
        for who in [Tenant::Configured(TenantIndex(1)), Tenant::Public] {
            quotas.admit(&who, t0).unwrap();
            quotas.admit(&who, t0).unwrap_err();
        }
        let count = |q: &ShardQuotas, label: &str| -> u64 {
            q.rejections()
                .iter()
                .filter(|(l, k, _)| l == label && *k == Exhausted::Requests)
                .map(|(_, _, n)| n)
                .sum()
        };
        assert_eq!((count(&quotas, "b"), count(&quotas, "other")), (1, 1));
        quotas.set_policy(Policy::new(
            &[],
            vec![tenant("c"), tenant("b")],
            limits(1.0, 1.0),
        ));
        assert_eq!(
            (
                count(&quotas, "b"),
                count(&quotas, "other"),
                count(&quotas, "c")
            ),
            (1, 1, 0)
        );
        assert_eq!(count(&quotas, "a"), 0, "a tenant removed is gone");
    }

    /// A reload that renumbers the tenants (one added before them) keeps every bucket:
    /// before, it started every state over, so each tenant and every address got a fresh
    /// burst from any reload that touched the tenant list.
    #[test]
    fn a_reload_that_renumbers_the_tenants_hands_out_no_fresh_burst() {
        let tenant = |name: &str| {
            (
                name.to_string(),
                vec![format!("{name}-token")],
                limits(1.0, 2.0),
            )
        };
        let mut quotas = table(
            Policy::new(&[], vec![tenant("a"), tenant("b")], limits(1.0, 2.0)),
            1,
        );
        let t0 = Instant::now();
        let addr = Tenant::Addr("192.0.2.7".parse().unwrap());
        for who in [Tenant::Configured(TenantIndex(1)), addr] {
            quotas.admit(&who, t0).unwrap();
            quotas.admit(&who, t0).unwrap();
            quotas.admit(&who, t0).unwrap_err();
        }
        quotas.set_policy(Policy::new(
            &[],
            vec![tenant("c"), tenant("a"), tenant("b")],
            limits(1.0, 2.0),
        ));
        let b_now = Tenant::Configured(TenantIndex(2));
        for who in [b_now, addr] {
            let refused = quotas.admit(&who, t0).unwrap_err();
            assert_eq!(refused.retry_after_ms, 1_000, "{who:?}");
        }
        assert_eq!(quotas.tenants_tracked(), 2);
        quotas.set_policy(Policy::new(&[], vec![tenant("c")], limits(1.0, 2.0)));
        assert_eq!(quotas.tenants_tracked(), 1, "b's state goes with b");
        quotas
            .admit(&Tenant::Configured(TenantIndex(0)), t0)
            .unwrap();
    }

    #[test]
    fn bytes_go_into_debt_and_the_wait_covers_it() {
        let limits = QuotaLimits {
            bytes_per_s: 1000,
            bytes_burst: 1000,
            ..QuotaLimits::default()
        };
        let mut quotas = table(Policy::new(&[], vec![], limits), 1);
        let t0 = Instant::now();
        let key = quotas.admit(&Tenant::Public, t0).unwrap().unwrap();
        quotas.charge_bytes(key, 3000);
        let refused = quotas.admit(&Tenant::Public, t0).unwrap_err();
        assert_eq!(refused.exhausted, Exhausted::Bytes);
        // 2000 bytes of debt and one byte to admit, at 1000 bytes/s.
        assert_eq!(refused.retry_after_ms, 2001);
        assert!(quotas
            .admit(&Tenant::Public, t0 + Duration::from_millis(2001))
            .is_ok());
    }

    #[test]
    fn unlimited_tenants_take_no_bucket() {
        let mut quotas = table(Policy::new(&[], vec![], QuotaLimits::default()), 2);
        assert_eq!(quotas.admit(&Tenant::Public, Instant::now()), Ok(None));
        assert_eq!(quotas.tenants_tracked(), 0);
    }

    #[test]
    fn the_table_stays_within_its_bound() {
        let policy = Policy::new(&[], vec![], limits(10.0, 10.0));
        let mut quotas = ShardQuotas::new(policy, 1, RandomState::new(), 8);
        let now = Instant::now();
        for i in 0..100u8 {
            let ip = IpAddr::from([10, 0, 0, i]);
            quotas.admit(&Tenant::Addr(ip), now).unwrap();
        }
        assert!(quotas.tenants_tracked() <= 8);
    }

    #[test]
    fn a_reshare_never_adds_tokens() {
        let policy = Policy::new(&[], vec![], limits(100.0, 100.0));
        let mut quotas = table(policy, 2);
        let now = Instant::now();
        let key = quotas.admit(&Tenant::Public, now).unwrap().unwrap();
        quotas.apply_shares(&[(key, 0.9)], now);
        // 49 tokens left of the 1/2 share's 50; a larger capacity refills, not grants.
        for _ in 0..49 {
            quotas.admit(&Tenant::Public, now).unwrap();
        }
        assert!(quotas.admit(&Tenant::Public, now).is_err());
        quotas.apply_shares(&[(key, 0.1)], now + Duration::from_secs(10));
        for _ in 0..10 {
            quotas
                .admit(&Tenant::Public, now + Duration::from_secs(10))
                .unwrap();
        }
        assert!(quotas
            .admit(&Tenant::Public, now + Duration::from_secs(10))
            .is_err());
    }

    #[test]
    fn an_unlisted_tenant_returns_to_an_even_share() {
        let policy = Policy::new(&[], vec![], limits(100.0, 100.0));
        let mut quotas = table(policy, 2);
        let now = Instant::now();
        let key = quotas.admit(&Tenant::Public, now).unwrap().unwrap();
        quotas.apply_shares(&[(key, 0.1)], now);
        let later = now + Duration::from_secs(10);
        quotas.apply_shares(&[], later);
        // The 10 tokens of the 0.1 share stay; back at 1/2, the bucket refills to 50.
        for _ in 0..10 {
            quotas.admit(&Tenant::Public, later).unwrap();
        }
        assert!(quotas.admit(&Tenant::Public, later).is_err());
        let refilled = later + Duration::from_secs(2);
        for _ in 0..50 {
            quotas.admit(&Tenant::Public, refilled).unwrap();
        }
        assert!(quotas.admit(&Tenant::Public, refilled).is_err());
        assert_eq!(quotas.take_demand().len(), 1, "one active tenant reported");
        assert!(quotas.take_demand().is_empty(), "and reset");
    }

    proptest! {
        /// Over any schedule, one shard with the whole share admits at most
        /// burst + rate × elapsed requests.
        #[test]
        fn never_more_than_burst_plus_rate_times_time(
            per_s in 0.5f64..200.0,
            burst in 1.0f64..100.0,
            gaps_ms in proptest::collection::vec(0u64..50, 1..400),
        ) {
            let mut quotas = table(Policy::new(&[], vec![], limits(per_s, burst)), 1);
            let t0 = Instant::now();
            let mut now = t0;
            let mut admitted = 0u64;
            for gap in gaps_ms {
                now += Duration::from_millis(gap);
                if quotas.admit(&Tenant::Public, now).is_ok() {
                    admitted += 1;
                }
            }
            let elapsed = now.duration_since(t0).as_secs_f64();
            prop_assert!(admitted as f64 <= burst + per_s * elapsed + 1e-9, "{admitted}");
        }
    }
}
