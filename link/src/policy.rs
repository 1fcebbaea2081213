//! The reloadable policy: write tokens, configured tenants and their limits, who a
//! request is charged to, and the denylist ([`ron_codec::denylist`]). The control thread builds it (at start-up and at every good
//! reload) and sends each shard its own copy; the shard's token buckets
//! (`ron-engine`'s `admission::buckets`) enforce it. Also the words both sides use for
//! quota accounting: [`QuotaKey`], [`Demand`], [`Exhausted`].
//!
//! The scheme is in `docs/design/quotas.md`.

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use ron_codec::denylist::Denylist;

/// How often shards report demand and the control thread sends new shares.
pub const REBALANCE_PERIOD_MS: u64 = 250;
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
    /// Limits on requests only (bytes unlimited).
    pub fn requests_only(requests_per_s: f64, requests_burst: f64) -> QuotaLimits {
        QuotaLimits {
            requests_per_s,
            requests_burst,
            ..QuotaLimits::default()
        }
    }

    pub fn is_unlimited(&self) -> bool {
        self.requests_per_s == 0.0 && self.bytes_per_s == 0
    }

    /// The request bucket's rate, if requests are limited.
    pub fn requests(&self) -> Option<Rate> {
        Rate::new(self.requests_per_s, self.requests_burst)
    }

    /// The byte bucket's rate, if bytes are limited.
    pub fn bytes(&self) -> Option<Rate> {
        Rate::new(self.bytes_per_s as f64, self.bytes_burst as f64)
    }

    /// Names the first bad value, for the configuration error.
    pub fn check(&self) -> Result<(), LimitsError> {
        let fields = [
            ("requests_per_s", self.requests_per_s),
            ("requests_burst", self.requests_burst),
        ];
        for (field, given) in fields {
            if !given.is_finite() || given < 0.0 {
                return Err(LimitsError::OutOfRange { field, given });
            }
        }
        Ok(())
    }
}

/// Why a tenant's limits are refused. The message starts with the field; the caller
/// puts the table in front (`quota_default.`, `tenants.NAME.`).
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum LimitsError {
    /// A request rate or burst that is negative, NaN or infinite.
    #[error("{field} must be a finite number ≥ 0, not {given}")]
    OutOfRange { field: &'static str, given: f64 },
}

/// A bucket's refill rate and capacity (before the shard's share is applied).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_s: f64,
    pub burst: f64,
}

impl Rate {
    fn new(per_s: f64, burst: f64) -> Option<Rate> {
        let burst = if burst > 0.0 { burst } else { per_s };
        (per_s > 0.0).then_some(Rate { per_s, burst })
    }
}

/// One configured tenant. It is identified only by one of its tokens: a claimed name
/// (`X-Tenant`, OAP `tenant_id`) proves nothing and selects nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantPolicy {
    pub name: String,
    pub limits: QuotaLimits,
}

/// Index of a configured tenant in [`Policy::tenants`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TenantIndex(pub u32);

/// The reloadable part of the configuration: tokens, tenants and their limits, and the
/// denylist.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Bumped by every successful reload (1 at start-up).
    pub version: u64,
    /// Bearer tokens allowed to write, with the tenant each identifies (if any).
    tokens: Vec<(Vec<u8>, Option<TenantIndex>)>,
    pub tenants: Vec<TenantPolicy>,
    /// Limits of every tenant not configured by name (each its own buckets).
    pub default_limits: QuotaLimits,
    /// The addresses this node refuses (shared: a policy is cloned per shard).
    pub denylist: Arc<Denylist>,
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
            configured.push(TenantPolicy { name, limits });
        }
        Policy {
            version: 1,
            tokens,
            tenants: configured,
            default_limits,
            denylist: Arc::default(),
        }
    }

    /// The same policy with `denylist`.
    pub fn with_denylist(self, denylist: Denylist) -> Policy {
        Policy {
            denylist: Arc::new(denylist),
            ..self
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

    /// Who a request is, by the rule of HTTP-API.md: the tenant whose token it bears,
    /// else its client address ([`quota_address`]: an IPv6 client's /64), else
    /// `public`. Nothing the client merely claims (an `X-Tenant` header, OAP's
    /// `tenant_id`) counts: rotating a claim must not buy a fresh bucket, and a
    /// configured tenant's limits need its token.
    pub fn tenant(&self, token: Option<TokenMatch>, peer: Option<IpAddr>) -> Tenant {
        if let Some(index) = token.and_then(|t| t.tenant) {
            return Tenant::Configured(index);
        }
        match peer {
            Some(ip) => Tenant::Addr(quota_address(ip)),
            None => Tenant::Public,
        }
    }

    /// The limits that apply to `tenant`.
    pub fn limits(&self, tenant: &Tenant) -> &QuotaLimits {
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
        tenant.map_or(OTHER_TENANTS_LABEL, |i| {
            self.tenants[i.0 as usize].name.as_str()
        })
    }

    /// What a policy crossing to a shard holds, checked by the sender before the write
    /// and by the shard after the read (once per reload): a version, every token's
    /// tenant configured (`limits` and `label` index by it on the request path), and
    /// every limit in range (the buckets divide by them).
    pub fn assert_valid(&self) {
        assert!(
            self.version >= 1,
            "policy invariant: a policy sent to a shard has a version ≥ 1, not {}",
            self.version
        );
        let tenants = self.tenants.len();
        for (_, tenant) in &self.tokens {
            if let Some(TenantIndex(i)) = *tenant {
                assert!(
                    (i as usize) < tenants,
                    "policy invariant: every token names a configured tenant (tenant {i} of {tenants})"
                );
            }
        }
        let limits = std::iter::once(("quota_default", &self.default_limits))
            .chain(self.tenants.iter().map(|t| (t.name.as_str(), &t.limits)));
        for (name, limits) in limits {
            if let Err(e) = limits.check() {
                panic!("policy invariant: every limit is a finite number ≥ 0 ({name}: {e})");
            }
        }
    }
}

/// A write token that matched, and the tenant it names (if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenMatch {
    pub tenant: Option<TenantIndex>,
}

/// Longest name of a configured tenant (it labels metrics and messages).
pub const TENANT_NAME_BYTES_MAX: usize = 64;

/// The label of every client no configured tenant's token names (reserved: a tenant
/// of this name would share its series, and its counts would be mixed up at a reload).
pub const OTHER_TENANTS_LABEL: &str = "other";

/// Who a request is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tenant {
    Configured(TenantIndex),
    /// A client without a tenant's token, by its address: an IPv4 address, or an IPv6
    /// client's /64 (its interface bits zero; [`quota_address`]).
    Addr(IpAddr),
    Public,
}

/// Whether `ip` is of an operator's own networks — loopback, private (RFC 1918, RFC 4193)
/// or link-local — whose hosts the DHT's per-host limits leave alone: many nodes on one
/// machine or one private network are an operator's own (libp2p-kad-dht's IP diversity
/// filter leaves private addresses alone too). Never a right on a data port.
pub fn is_own_network(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unique_local() || v6.is_unicast_link_local(),
    }
}

/// The address a client's quota is kept under: an IPv4 address as it is (an IPv4-mapped
/// IPv6 one as the IPv4 address it maps), an IPv6 address as its /64 — the prefix a
/// single host or subscriber is given (RFC 6177), within which it may take a fresh
/// source address for every connection: keyed by the whole address, each would start
/// with a full bucket, and one host would have as many as it liked.
pub fn quota_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from_bits(
                v6.to_bits() & !u128::from(u64::MAX),
            )),
        },
    }
}

impl Tenant {
    /// The configured tenant's index, if it is one.
    pub fn configured(&self) -> Option<TenantIndex> {
        match self {
            Tenant::Configured(i) => Some(*i),
            _ => None,
        }
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// What an admitted request is charged to when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuotaKey(pub u64);

/// A shard's demand for one tenant over the last period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Demand {
    pub key: QuotaKey,
    pub requests: f64,
    pub bytes: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_s: f64, burst: f64) -> QuotaLimits {
        QuotaLimits::requests_only(per_s, burst)
    }

    #[test]
    fn tenant_follows_the_token_then_the_address_then_public() {
        let policy = Policy::new(
            &["w".into()],
            vec![("alice".into(), vec!["a-tok".into()], limits(1.0, 1.0))],
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
            policy.tenant(alice, Some(ip)),
            Tenant::Configured(TenantIndex(0))
        );
        // A write token of no tenant, or none: the address.
        assert_eq!(
            policy.tenant(policy.token(b"w"), Some(ip)),
            Tenant::Addr(ip)
        );
        assert_eq!(policy.tenant(None, Some(ip)), Tenant::Addr(ip));
        assert_eq!(policy.tenant(None, None), Tenant::Public);
        // An IPv6 client is its /64: a fresh source address per connection within it
        // is the same tenant.
        let host = |last: &str| -> IpAddr { format!("2001:db8:1:2:{last}").parse().unwrap() };
        let prefix: IpAddr = "2001:db8:1:2::".parse().unwrap();
        for last in ["0:0:0:1", "abcd:ef01:2345:6789", "ffff:ffff:ffff:ffff"] {
            assert_eq!(policy.tenant(None, Some(host(last))), Tenant::Addr(prefix));
        }
        let next: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_ne!(policy.tenant(None, Some(next)), Tenant::Addr(prefix));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(
            policy.tenant(None, Some(mapped)),
            Tenant::Addr("192.0.2.7".parse().unwrap())
        );
        assert_eq!(policy.token(b"nope"), None);
        assert!(!policy.writes_open());
    }

    fn one_tenant() -> Policy {
        Policy::new(
            &[],
            vec![("a".into(), vec!["t".into()], limits(1.0, 1.0))],
            QuotaLimits::default(),
        )
    }

    #[test]
    #[should_panic(expected = "policy invariant: a policy sent to a shard has a version ≥ 1")]
    fn a_policy_without_a_version_is_not_sent() {
        let mut policy = one_tenant();
        policy.assert_valid();
        policy.version = 0;
        policy.assert_valid();
    }

    #[test]
    #[should_panic(expected = "policy invariant: every token names a configured tenant")]
    fn a_token_of_a_tenant_gone_is_not_sent() {
        let mut policy = one_tenant();
        policy.tenants.clear();
        policy.assert_valid();
    }

    #[test]
    #[should_panic(
        expected = "policy invariant: every limit is a finite number ≥ 0 (a: requests_burst must be"
    )]
    fn a_limit_out_of_range_is_not_sent() {
        let mut policy = one_tenant();
        policy.tenants[0].limits.requests_burst = -1.0;
        policy.assert_valid();
    }

    #[test]
    fn a_bad_limit_names_its_field_and_the_value_given() {
        assert_eq!(limits(2.5, 0.0).check(), Ok(()));
        let negative = limits(-3.0, 0.0).check().unwrap_err();
        assert_eq!(
            negative,
            LimitsError::OutOfRange {
                field: "requests_per_s",
                given: -3.0
            }
        );
        assert_eq!(
            negative.to_string(),
            "requests_per_s must be a finite number ≥ 0, not -3"
        );
        let burst = limits(1.0, f64::INFINITY).check().unwrap_err();
        assert_eq!(
            burst.to_string(),
            "requests_burst must be a finite number ≥ 0, not inf"
        );
        assert!(matches!(
            limits(f64::NAN, 0.0).check(),
            Err(LimitsError::OutOfRange {
                field: "requests_per_s",
                ..
            })
        ));
    }
}
