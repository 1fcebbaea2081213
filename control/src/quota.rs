//! Quotas: who a request belongs to, what that tenant may use, and the token buckets
//! that enforce it on each shard without a lock shared across cores.
//!
//! ## The scheme (design note: `docs/design/quotas.md`)
//! A tenant's limit (`rate` per second, `burst`) is split across the N shards: shard
//! `i` holds a bucket of capacity `burst × share_i` refilled at `rate × share_i`, with
//! `Σ share_i = 1`. A fresh tenant starts at `share = 1/N` everywhere. Every
//! [`REBALANCE_PERIOD_MS`] each shard reports how much each active tenant asked of it;
//! the control thread gives shard `i` the share `floor + (1 − N·floor) · d_i / Σd`
//! ([`shares`]) and sends it back. So the node never admits more than
//! `rate × t + burst` for a tenant (up to one period of skew while shards apply a new
//! split), and a tenant whose traffic all lands on one shard gets at least
//! `1 − (N−1)·floor` of its limit there after one period.
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

use serde::{Deserialize, Serialize};

/// How often shards report demand and the control thread sends new shares.
pub const REBALANCE_PERIOD_MS: u64 = 250;
/// Σ over the idle shards of a tenant's share floors: a tenant busy on one shard keeps
/// at least `1 − SHARE_FLOOR_TOTAL` of its limit there.
pub const SHARE_FLOOR_TOTAL: f64 = 0.05;
/// Longest `Retry-After` a client is told, whatever the numbers.
pub const RETRY_AFTER_MS_MAX: u64 = 3_600_000;
/// Active tenants a shard reports per period (the busiest are rebalanced first).
pub const REPORT_TENANTS_MAX: usize = 4096;

/// What one tenant may use; `0` means unlimited for that dimension.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaLimits {
    /// Requests admitted per second (fractions allowed).
    pub requests_per_s: f64,
    /// Requests admitted at once from a full bucket; 0 means one second's worth.
    pub requests_burst: f64,
    /// Object bytes (sent and received) per second.
    pub bytes_per_s: u64,
    /// Object bytes from a full bucket; 0 means one second's worth.
    pub bytes_burst: u64,
}

impl QuotaLimits {
    pub fn is_unlimited(&self) -> bool {
        self.requests_per_s == 0.0 && self.bytes_per_s == 0
    }

    fn requests(&self) -> Option<Rate> {
        Rate::new(self.requests_per_s, self.requests_burst)
    }

    fn bytes(&self) -> Option<Rate> {
        Rate::new(self.bytes_per_s as f64, self.bytes_burst as f64)
    }

    /// Names the first bad value, for the configuration error.
    pub fn check(&self) -> Result<(), String> {
        let fields = [
            ("requests_per_s", self.requests_per_s),
            ("requests_burst", self.requests_burst),
        ];
        for (name, value) in fields {
            if !value.is_finite() || value < 0.0 {
                return Err(format!("{name} must be a finite number ≥ 0, not {value}"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Rate {
    per_s: f64,
    burst: f64,
}

impl Rate {
    fn new(per_s: f64, burst: f64) -> Option<Rate> {
        let burst = if burst > 0.0 { burst } else { per_s };
        (per_s > 0.0).then_some(Rate { per_s, burst })
    }
}

/// One configured tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantPolicy {
    pub name: String,
    pub limits: QuotaLimits,
    /// A tenant with tokens is only ever identified by one of them (an `X-Tenant`
    /// claim of its name is ignored).
    pub has_tokens: bool,
}

/// Index of a configured tenant in [`Policy::tenants`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TenantIndex(pub u32);

/// The reloadable part of the configuration: tokens, tenants and their limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Bumped by every successful reload (1 at start-up).
    pub version: u64,
    /// Bearer tokens allowed to write, with the tenant each identifies (if any).
    tokens: Vec<(Vec<u8>, Option<TenantIndex>)>,
    pub tenants: Vec<TenantPolicy>,
    /// Limits of every tenant not configured by name (each its own buckets).
    pub default_limits: QuotaLimits,
}

impl Policy {
    /// `write_tokens` identify no tenant; `tenants` are (name, tokens, limits).
    pub fn new(
        write_tokens: &[String],
        tenants: Vec<(String, Vec<String>, QuotaLimits)>,
        default_limits: QuotaLimits,
    ) -> Policy {
        let mut tokens: Vec<(Vec<u8>, Option<TenantIndex>)> = write_tokens
            .iter()
            .map(|t| (t.as_bytes().to_vec(), None))
            .collect();
        let mut configured = Vec::with_capacity(tenants.len());
        for (i, (name, tenant_tokens, limits)) in tenants.into_iter().enumerate() {
            let index = TenantIndex(i as u32);
            tokens.extend(
                tenant_tokens
                    .iter()
                    .map(|t| (t.as_bytes().to_vec(), Some(index))),
            );
            configured.push(TenantPolicy {
                name,
                limits,
                has_tokens: !tenant_tokens.is_empty(),
            });
        }
        Policy {
            version: 1,
            tokens,
            tenants: configured,
            default_limits,
        }
    }

    /// With no token configured anywhere, writes are open (loopback only; see the
    /// write rule in the engine's configuration).
    pub fn writes_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Whether `token` is a write token; compares against every token in constant time
    /// per token so a near miss takes as long as a far one.
    pub fn token(&self, token: &[u8]) -> Option<TokenMatch> {
        let mut found = None;
        for (known, tenant) in &self.tokens {
            if constant_time_eq(known, token) && found.is_none() {
                found = Some(TokenMatch { tenant: *tenant });
            }
        }
        found
    }

    /// A configured tenant that may be claimed by name (`X-Tenant`, OAP `tenant_id`).
    fn claimable(&self, name: &[u8]) -> Option<TenantIndex> {
        self.tenants
            .iter()
            .position(|t| !t.has_tokens && t.name.as_bytes() == name)
            .map(|i| TenantIndex(i as u32))
    }

    /// Who a request is, by the rule of HTTP-API.md: the bearer token's tenant, else the
    /// claimed name, else the client address, else `public`.
    /// A claim longer than [`TENANT_NAME_BYTES_MAX`] is ignored.
    pub fn tenant(
        &self,
        token: Option<TokenMatch>,
        claim: Option<&[u8]>,
        peer: Option<IpAddr>,
    ) -> Tenant {
        if let Some(index) = token.and_then(|t| t.tenant) {
            return Tenant::Configured(index);
        }
        if let Some(name) = claim.and_then(TenantName::new) {
            return match self.claimable(name.as_bytes()) {
                Some(index) => Tenant::Configured(index),
                None => Tenant::Claimed(name),
            };
        }
        match peer {
            Some(ip) => Tenant::Addr(ip),
            None => Tenant::Public,
        }
    }

    fn limits(&self, tenant: &Tenant) -> &QuotaLimits {
        match tenant {
            Tenant::Configured(i) => &self.tenants[i.0 as usize].limits,
            _ => &self.default_limits,
        }
    }

    /// Whether any tenant has a limit (if not, admission skips the buckets).
    pub fn has_limits(&self) -> bool {
        !self.default_limits.is_unlimited() || self.tenants.iter().any(|t| !t.limits.is_unlimited())
    }

    /// The metrics label of a tenant: configured names only (low cardinality).
    pub fn label(&self, tenant: Option<TenantIndex>) -> &str {
        tenant.map_or("other", |i| self.tenants[i.0 as usize].name.as_str())
    }
}

/// A write token that matched, and the tenant it names (if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenMatch {
    pub tenant: Option<TenantIndex>,
}

/// Longest tenant name a request may claim.
pub const TENANT_NAME_BYTES_MAX: usize = 64;

/// A claimed tenant name, kept inline (no allocation per request).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TenantName {
    bytes: [u8; TENANT_NAME_BYTES_MAX],
    len: u8,
}

impl TenantName {
    pub fn new(name: &[u8]) -> Option<TenantName> {
        if name.is_empty() || name.len() > TENANT_NAME_BYTES_MAX {
            return None;
        }
        let mut bytes = [0; TENANT_NAME_BYTES_MAX];
        bytes[..name.len()].copy_from_slice(name);
        Some(TenantName {
            bytes,
            len: name.len() as u8,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for TenantName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// Who a request is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tenant {
    Configured(TenantIndex),
    /// An unconfigured name from `X-Tenant` or OAP's `tenant_id`.
    Claimed(TenantName),
    Addr(IpAddr),
    Public,
}

impl Tenant {
    fn configured(&self) -> Option<TenantIndex> {
        match self {
            Tenant::Configured(i) => Some(*i),
            _ => None,
        }
    }
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

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

    fn refill(&mut self, rate: Rate, share: f64, now_s: f64) {
        let elapsed = (now_s - self.updated_s).max(0.0);
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
}

impl TenantState {
    fn is_active(&self) -> bool {
        self.demand_requests > 0.0 || self.demand_bytes > 0.0
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    Requests,
    Bytes,
}

impl Exhausted {
    pub fn as_str(self) -> &'static str {
        match self {
            Exhausted::Requests => "requests",
            Exhausted::Bytes => "bytes",
        }
    }
}

/// A refusal: which bucket, how long to wait, and the tenant's label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverQuota {
    pub exhausted: Exhausted,
    pub retry_after_ms: u64,
    pub limit: String,
}

/// What an admitted request is charged to when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuotaKey(u64);

/// A shard's demand for one tenant over the last period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Demand {
    pub key: QuotaKey,
    pub requests: f64,
    pub bytes: f64,
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
            // Indices may now name other tenants: start those counters and states over.
            self.tenants.clear();
            self.active.clear();
            self.reshared.clear();
            self.rejections = vec![[0; 2]; policy.tenants.len() + 1];
        }
        self.policy = policy;
    }

    fn now_s(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.epoch).as_secs_f64()
    }

    fn key(&self, tenant: &Tenant) -> u64 {
        match tenant {
            Tenant::Configured(i) => self.hasher.hash_one((0u8, i.0)),
            Tenant::Claimed(name) => self.hasher.hash_one((1u8, name.as_bytes())),
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
        let default_share = 1.0 / self.shard_count as f64;
        if !self.tenants.contains_key(&key) {
            self.make_room();
        }
        let state = self.tenants.entry(key).or_insert_with(|| TenantState {
            requests: limits.requests().map_or(
                Bucket {
                    tokens: 0.0,
                    updated_s: now_s,
                },
                |r| Bucket::full(r, default_share, now_s),
            ),
            bytes: limits.bytes().map_or(
                Bucket {
                    tokens: 0.0,
                    updated_s: now_s,
                },
                |r| Bucket::full(r, default_share, now_s),
            ),
            share: default_share,
            demand_requests: 0.0,
            demand_bytes: 0.0,
            configured: tenant.configured(),
        });
        if !state.is_active() {
            self.active.push(key);
        }
        state.demand_requests += 1.0;
        let mut wait = (0.0f64, Exhausted::Requests);
        if let Some(rate) = limits.requests() {
            state.requests.refill(rate, state.share, now_s);
            wait = (
                state.requests.wait_s(rate, state.share),
                Exhausted::Requests,
            );
        }
        if let Some(rate) = limits.bytes() {
            state.bytes.refill(rate, state.share, now_s);
            let bytes_wait = state.bytes.wait_s(rate, state.share);
            if bytes_wait > wait.0 {
                wait = (bytes_wait, Exhausted::Bytes);
            }
        }
        if wait.0 > 0.0 {
            let slot = tenant
                .configured()
                .map_or(self.policy.tenants.len(), |i| i.0 as usize);
            self.rejections[slot][wait.1 as usize] += 1;
            let retry_after_ms = ((wait.0 * 1000.0).ceil() as u64).clamp(1, RETRY_AFTER_MS_MAX);
            return Err(OverQuota {
                exhausted: wait.1,
                retry_after_ms,
                limit: self.describe(tenant, &limits, wait.1),
            });
        }
        if limits.requests().is_some() {
            state.requests.tokens -= 1.0;
        }
        Ok(Some(QuotaKey(key)))
    }

    fn describe(&self, tenant: &Tenant, limits: &QuotaLimits, exhausted: Exhausted) -> String {
        let who = match tenant {
            Tenant::Configured(i) => format!("tenant {:?}", self.policy.tenants[i.0 as usize].name),
            Tenant::Claimed(name) => format!("tenant {name:?}"),
            Tenant::Addr(ip) => format!("client {ip}"),
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
        state.bytes.tokens -= bytes as f64;
    }

    /// Keeps the table within `tenants_max`: drops tenants idle since the last report
    /// first (one sweep per period at most); then an arbitrary one (it starts over with a
    /// full bucket — the bound on what a flood of distinct tenants can gain).
    fn make_room(&mut self) {
        if self.tenants.len() < self.tenants_max {
            return;
        }
        if !self.swept {
            self.swept = true;
            self.tenants.retain(|_, s| s.is_active());
        }
        if self.tenants.len() >= self.tenants_max {
            if let Some(&victim) = self.tenants.keys().next() {
                self.tenants.remove(&victim);
            }
        }
    }

    /// The period's demand (busiest first, at most [`REPORT_TENANTS_MAX`]); resets it.
    pub fn take_demand(&mut self) -> Vec<Demand> {
        self.swept = false;
        let mut out = Vec::with_capacity(self.active.len());
        for key in self.active.drain(..) {
            // An evicted tenant leaves its key behind: skip it.
            let Some(state) = self.tenants.get_mut(&key) else {
                continue;
            };
            out.push(Demand {
                key: QuotaKey(key),
                requests: state.demand_requests,
                bytes: state.demand_bytes,
            });
            state.demand_requests = 0.0;
            state.demand_bytes = 0.0;
        }
        if out.len() > REPORT_TENANTS_MAX {
            out.sort_by(|a, b| b.requests.total_cmp(&a.requests));
            out.truncate(REPORT_TENANTS_MAX);
        }
        out
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
        for &(key, share) in shares {
            if self.set_share(key.0, share, now_s) {
                self.reshared.push(key.0);
            }
        }
    }

    /// Sets one tenant's share on this shard (false if the shard does not track it).
    fn set_share(&mut self, key: u64, share: f64, now_s: f64) -> bool {
        let Some(state) = self.tenants.get_mut(&key) else {
            return false;
        };
        let limits = match state.configured {
            Some(i) => self.policy.tenants[i.0 as usize].limits,
            None => self.policy.default_limits,
        };
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

/// The control thread's split of one tenant's limit over the shards, from each shard's
/// demand (requests and bytes, each normalised to its total).
pub fn shares(demand: &[(f64, f64)]) -> Vec<f64> {
    let n = demand.len().max(1) as f64;
    let floor = SHARE_FLOOR_TOTAL / n;
    let (total_requests, total_bytes) = demand
        .iter()
        .fold((0.0, 0.0), |(r, b), d| (r + d.0, b + d.1));
    let weight = |d: &(f64, f64)| {
        let mut parts = 0.0;
        let mut sum = 0.0;
        if total_requests > 0.0 {
            sum += d.0 / total_requests;
            parts += 1.0;
        }
        if total_bytes > 0.0 {
            sum += d.1 / total_bytes;
            parts += 1.0;
        }
        if parts == 0.0 {
            1.0 / n
        } else {
            sum / parts
        }
    };
    demand
        .iter()
        .map(|d| floor + (1.0 - n * floor) * weight(d))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn limits(per_s: f64, burst: f64) -> QuotaLimits {
        QuotaLimits {
            requests_per_s: per_s,
            requests_burst: burst,
            ..QuotaLimits::default()
        }
    }

    fn table(policy: Policy, shards: usize) -> ShardQuotas {
        ShardQuotas::new(policy, shards, RandomState::new(), 1000)
    }

    #[test]
    fn tenant_follows_token_then_claim_then_address_then_public() {
        let policy = Policy::new(
            &["w".into()],
            vec![
                ("alice".into(), vec!["a-tok".into()], limits(1.0, 1.0)),
                ("bob".into(), vec![], limits(1.0, 1.0)),
            ],
            QuotaLimits::default(),
        );
        let ip: IpAddr = "127.0.0.7".parse().unwrap();
        let alice = policy.token(b"a-tok");
        assert_eq!(
            alice,
            Some(TokenMatch {
                tenant: Some(TenantIndex(0))
            })
        );
        assert_eq!(
            policy.tenant(alice, Some(b"bob"), Some(ip)),
            Tenant::Configured(TenantIndex(0))
        );
        let plain = policy.token(b"w");
        assert_eq!(
            policy.tenant(plain, Some(b"bob"), Some(ip)),
            Tenant::Configured(TenantIndex(1))
        );
        // A tenant with tokens cannot be claimed by name.
        let claimed = policy.tenant(None, Some(b"alice"), Some(ip));
        assert_eq!(claimed, Tenant::Claimed(TenantName::new(b"alice").unwrap()));
        assert_eq!(
            policy.tenant(None, Some(&[b'x'; 65]), Some(ip)),
            Tenant::Addr(ip)
        );
        assert_eq!(policy.tenant(None, None, Some(ip)), Tenant::Addr(ip));
        assert_eq!(policy.tenant(None, Some(b""), None), Tenant::Public);
        assert_eq!(policy.token(b"nope"), None);
        assert!(!policy.writes_open());
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
    fn one_busy_shard_gets_nearly_all_of_the_limit() {
        let s = shares(&[(100.0, 0.0), (0.0, 0.0)]);
        assert!((s[0] - 0.975).abs() < 1e-9, "{s:?}");
        assert!((s[1] - 0.025).abs() < 1e-9, "{s:?}");
        let idle = shares(&[(0.0, 0.0), (0.0, 0.0), (0.0, 0.0)]);
        assert!(
            idle.iter().all(|s| (s - 1.0 / 3.0).abs() < 1e-9),
            "{idle:?}"
        );
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
        /// Shares are positive, sum to one, and follow demand.
        #[test]
        fn shares_split_the_whole_limit(demand in proptest::collection::vec((0.0f64..1e6, 0.0f64..1e9), 1..16)) {
            let s = shares(&demand);
            let total: f64 = s.iter().sum();
            prop_assert!((total - 1.0).abs() < 1e-9, "{s:?}");
            prop_assert!(s.iter().all(|&x| x > 0.0));
        }

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
