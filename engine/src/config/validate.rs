//! Checks a configuration before it is used: the limits, the write rule
//! (HTTP-API.md "Who may write"), TLS, tenants and their tokens. Each refusal names
//! the key at fault.

use ron_link::policy::TENANT_NAME_BYTES_MAX;

use ron_dht::protocol::{is_zone_name, ZONE_BYTES_MAX};

use std::net::SocketAddr;

use super::{Config, ConfigError};
use crate::client_addr::TrustedProxies;
use crate::limits::{OPEN_FILES_MAX_CEILING, UPLOADS_OPEN_MAX_CEILING};

/// Whether two listeners would take the same connections: one port (other than 0, which
/// the kernel picks), and one IP or a wildcard on either side.
fn overlap(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

impl Config {
    /// Checks the limits and the write rule (HTTP-API.md "Who may write").
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_distinct_listeners()?;
        self.validate_listeners()?;
        self.validate_oap()?;
        self.validate_tokens()?;
        self.validate_quotas()?;
        self.validate_limits()?;
        self.validate_p2p()?;
        self.trusted_proxies()?;
        self.validate_dirs()
    }

    /// Peers need a p2p listener, and each must be an address libp2p can dial.
    fn validate_p2p(&self) -> Result<(), ConfigError> {
        let refuse = |m: String| Err(ConfigError::Refused(m));
        if self.p2p.is_none() && !self.peers.is_empty() {
            return refuse(
                "peers: a node with peers needs its own p2p listener (--p2p HOST:PORT)".into(),
            );
        }
        for peer in &self.peers {
            if let Err(e) = ron_dht::node::parse_peer(peer) {
                return refuse(format!("peers: {e}"));
            }
        }
        if let Some(origin) = &self.origin {
            let rest = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            if rest.is_none_or(str::is_empty) {
                return refuse(format!(
                    "origin: {origin:?} is not http[s]://HOST[:PORT][/PREFIX]"
                ));
            }
        }
        if self.origin_ca.is_some()
            && !self
                .origin
                .as_deref()
                .is_some_and(|o| o.starts_with("https://"))
        {
            return refuse("origin_ca: only an https:// origin has a certificate to check".into());
        }
        // A zero timeout is no timeout to the socket (set_read_timeout refuses it): an
        // idle connection would never close, a trickled body never be cut.
        let timeouts = [
            ("fetch_timeout_ms", self.fetch_timeout_ms),
            ("header_timeout_ms", self.header_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("body_timeout_ms", self.body_timeout_ms),
        ];
        if let Some((key, _)) = timeouts.iter().find(|(_, ms)| *ms == 0) {
            return refuse(format!("{key}: must be at least 1"));
        }
        self.validate_replication()
    }

    /// Copies need a network, and a zone name is a short label.
    fn validate_replication(&self) -> Result<(), ConfigError> {
        let refuse = |m: String| Err(ConfigError::Refused(m));
        let replicas = self.replicas_target();
        let max = ron_dht::placement::REPLICAS_MAX;
        if replicas > max {
            return refuse(format!("replicas: {replicas} copies; at most {max}"));
        }
        if replicas > 1 && self.p2p.is_none() {
            return refuse(format!(
                "replicas: {replicas} copies need other nodes: join a network with --p2p HOST:PORT, or set replicas = 1"
            ));
        }
        if self.p2p_network_key_file.is_some() && self.p2p.is_none() {
            return refuse(
                "p2p_network_key_file: a private network's key needs a network: --p2p HOST:PORT"
                    .into(),
            );
        }
        if let Some(zone) = &self.zone {
            if zone.is_empty() || !is_zone_name(zone) {
                return refuse(format!(
                    "zone: {zone:?} is not a zone name (1 to {ZONE_BYTES_MAX} of A-Z a-z 0-9 . _ -)"
                ));
            }
        }
        Ok(())
    }

    /// The data dirs: at least one, none twice, and an erasure code that survives the
    /// loss of one whole dir when there are several.
    fn validate_dirs(&self) -> Result<(), ConfigError> {
        let refuse = |m: String| Err(ConfigError::Refused(m));
        let dirs = &self.data_dirs;
        if dirs.is_empty() {
            return refuse("data_dirs: at least one data dir".into());
        }
        if let Some(twice) = dirs
            .iter()
            .enumerate()
            .find(|(i, d)| dirs[..*i].contains(d))
        {
            return refuse(format!("data_dirs: {} is given twice", twice.1.display()));
        }
        let ec = self.ec_params();
        if dirs.len() > 1 && ec.is_off() {
            return refuse(format!(
                "ec = off over {} data dirs: losing one disk would lose objects; use an \
                 erasure code (e.g. {}), or one data dir on a RAID",
                dirs.len(),
                ron_shards::ec::EcParams::default_for(dirs.len().min(64) as u8)
            ));
        }
        ec.check_dirs(dirs.len())
            .or_else(|e| refuse(format!("data_dirs: {e}")))
    }

    /// The write rule on every data listener, and TLS's certificate and key.
    fn validate_listeners(&self) -> Result<(), ConfigError> {
        let refuse = |m: String| Err(ConfigError::Refused(m));
        let public = self
            .data_listeners()
            .into_iter()
            .find(|(_, addr)| !addr.ip().is_loopback());
        if let Some((name, addr)) = public.filter(|_| !self.has_tokens()) {
            if !self.allow_open_writes {
                return refuse(format!(
                    "refusing to start: {name} listens on {addr} (not loopback) and no write tokens \
                     are configured, so anyone could write. Add tokens (--token or `tokens` in \
                     the config) or pass --allow-open-writes to accept that."
                ));
            }
        }
        match (&self.tls, &self.tls_cert, &self.tls_key) {
            (Some(_), Some(_), Some(_)) | (None, None, None) => {}
            (Some(addr), _, _) => {
                return refuse(format!(
                "the TLS listener on {addr} needs both --cert and --key (keys tls_cert, tls_key)"
            ))
            }
            (None, _, _) => {
                return refuse("--cert/--key given without --tls ADDR (key tls)".into())
            }
        }
        Ok(())
    }

    /// No two listeners of the node on one address. Each is bound with SO_REUSEPORT
    /// (one socket per shard), so the kernel would accept a second listener on the same
    /// address and split connections between the two protocols.
    fn validate_distinct_listeners(&self) -> Result<(), ConfigError> {
        // Each shard binds every data listener itself (SO_REUSEPORT): port 0 would be a
        // different port picked by the kernel on each shard, and none of them reported.
        let any_port = self
            .data_listeners()
            .into_iter()
            .find(|(_, a)| a.port() == 0);
        if let (Some((name, addr)), false) = (any_port, self.shards == 1) {
            return Err(ConfigError::Refused(format!(
                "{name} ({addr}) has port 0: with more than one shard each would listen on a \
                 port of its own that the kernel picks; name a port, or run --shards 1"
            )));
        }
        let listeners = self.every_listener();
        for (i, (name, addr)) in listeners.iter().enumerate() {
            let earlier = listeners[..i].iter().find(|(_, a)| overlap(a, addr));
            if let Some((first, first_addr)) = earlier {
                return Err(ConfigError::Refused(format!(
                    "{first} ({first_addr}) and {name} ({addr}) listen on one address: each \
                     listener needs its own port, or the kernel splits connections between them"
                )));
            }
        }
        Ok(())
    }

    /// The trusted proxies, parsed (a bad block is refused, naming it).
    pub fn trusted_proxies(&self) -> Result<TrustedProxies, ConfigError> {
        TrustedProxies::parse(&self.trusted_proxies)
            .map_err(|e| ConfigError::Refused(format!("trusted_proxies: {e}")))
    }

    /// OAP/1's frame size, requests per connection and inflate ratio.
    fn validate_oap(&self) -> Result<(), ConfigError> {
        let refuse = |m: String| Err(ConfigError::Refused(m));
        let frame_min = 2 * ron_codec::tree::GROUP_LEN_BYTES as u32;
        if !(frame_min..=ron_codec::frame::MAX_FRAME_BYTES).contains(&self.oap_max_frame) {
            return refuse(format!(
                "oap_max_frame must be between {frame_min} and {} bytes (one 64 KiB group and \
                 its headers must fit in a frame)",
                ron_codec::frame::MAX_FRAME_BYTES
            ));
        }
        if self.oap_max_inflight == 0 || self.inflate_ratio_max == 0 {
            return refuse("oap_max_inflight and inflate_ratio_max must be positive".into());
        }
        Ok(())
    }

    /// The admin token (required off loopback) and the write tokens.
    fn validate_tokens(&self) -> Result<(), ConfigError> {
        let refuse = |m: String| Err(ConfigError::Refused(m));
        if self.admin_token.is_none() && !self.admin.ip().is_loopback() {
            return refuse(format!(
                "refusing to start: the admin endpoints listen on {} (not loopback) without \
                 an admin token. Set --admin-token (or `admin_token`), or keep admin on loopback.",
                self.admin
            ));
        }
        let bad_token = |t: &String| t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic());
        if self.admin_token.as_ref().is_some_and(bad_token) {
            return refuse("admin_token must be non-empty visible ASCII".into());
        }
        if self.tokens.iter().any(bad_token) {
            return refuse("tokens must be non-empty visible ASCII".into());
        }
        Ok(())
    }

    /// Request heads, connections, requests in flight and shards.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        let refuse = |m: String| Err(ConfigError::Refused(m));
        if self.head_bytes_max < 1024 {
            return refuse("head_bytes_max must be at least 1024".into());
        }
        if self.connections_max == 0 || self.inflight_max == 0 {
            return refuse("connections_max and inflight_max must be positive".into());
        }
        if !(1..=UPLOADS_OPEN_MAX_CEILING).contains(&self.uploads_open_max) {
            return refuse(format!(
                "uploads_open_max must be 1..={UPLOADS_OPEN_MAX_CEILING}"
            ));
        }
        if self.body_rate_min_bytes_per_s == 0 {
            return refuse("body_rate_min_bytes_per_s must be positive".into());
        }
        if self.open_files_max > OPEN_FILES_MAX_CEILING {
            return refuse(format!(
                "open_files_max must be at most {OPEN_FILES_MAX_CEILING}"
            ));
        }
        if self.shards > ron_codec::address::SHARD_COUNT_MAX {
            return refuse(format!(
                "at most {} shards",
                ron_codec::address::SHARD_COUNT_MAX
            ));
        }
        Ok(())
    }

    /// Tenant names, tokens and limits; each error names its key.
    fn validate_quotas(&self) -> Result<(), ConfigError> {
        let refuse = |m: String| Err(ConfigError::Refused(m));
        if let Err(e) = self.quota_default.limits().check() {
            return refuse(format!("quota_default.{e}"));
        }
        if self.quota_tenants_max == 0 {
            return refuse("quota_tenants_max must be positive".into());
        }
        let mut seen: Vec<(&str, String)> = self
            .tokens
            .iter()
            .map(|t| (t.as_str(), "tokens".to_string()))
            .collect();
        for (name, tenant) in &self.tenants {
            let visible = name.bytes().all(|b| b.is_ascii_graphic());
            if name.is_empty() || name.len() > TENANT_NAME_BYTES_MAX || !visible {
                return refuse(format!(
                    "tenants.{name:?}: a tenant name is 1 to {TENANT_NAME_BYTES_MAX} visible ASCII characters"
                ));
            }
            if name == ron_link::policy::OTHER_TENANTS_LABEL {
                return refuse(format!(
                    "tenants.{name}: the name is reserved (the label of every client no tenant's token names)"
                ));
            }
            if let Err(e) = tenant.quota().limits().check() {
                return refuse(format!("tenants.{name}.{e}"));
            }
            if tenant.tokens.is_empty() {
                return refuse(format!(
                    "tenants.{name} has no tokens: a tenant is identified only by one of its \
                     bearer tokens (an X-Tenant header or OAP tenant_id proves nothing)"
                ));
            }
            for token in &tenant.tokens {
                if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                    return refuse(format!(
                        "tenants.{name}.tokens must be non-empty visible ASCII"
                    ));
                }
                if let Some((_, owner)) = seen.iter().find(|(t, _)| t == token) {
                    return refuse(format!(
                        "tenants.{name}.tokens: a token is also listed in {owner} (each token names one tenant)"
                    ));
                }
                seen.push((token, format!("tenants.{name}.tokens")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_loopback_only() {
        let c = Config::default();
        c.validate().unwrap();
        assert!(c.http.ip().is_loopback());
    }

    /// A zero timeout was accepted and meant none: the socket refuses a zero timeout,
    /// the error was ignored, and idle connections never closed.
    #[test]
    fn a_zero_timeout_is_refused() {
        let zero_idle = Config {
            idle_timeout_ms: 0,
            ..Config::default()
        };
        assert_eq!(
            zero_idle.validate().unwrap_err().to_string(),
            "idle_timeout_ms: must be at least 1"
        );
        let zero_body = Config {
            body_timeout_ms: 0,
            ..Config::default()
        };
        assert_eq!(
            zero_body.validate().unwrap_err().to_string(),
            "body_timeout_ms: must be at least 1"
        );
    }

    #[test]
    fn port_0_for_a_data_listener_needs_one_shard() {
        let any_port = |shards| Config {
            oap: "127.0.0.1:0".parse().unwrap(),
            shards,
            ..Config::default()
        };
        assert_eq!(
            any_port(2).validate().unwrap_err().to_string(),
            "OAP (127.0.0.1:0) has port 0: with more than one shard each would listen on a \
             port of its own that the kernel picks; name a port, or run --shards 1"
        );
        assert!(any_port(0).validate().is_err(), "one shard per CPU");
        any_port(1).validate().unwrap();
    }

    /// `other` is the label of every client no tenant's token names: a tenant of that
    /// name shared its series with them, and a reload that renumbered the tenants mixed
    /// up the two counts (a counter went backwards).
    #[test]
    fn a_tenant_named_other_is_refused() {
        let tenant = crate::config::file::TenantConfig {
            tokens: vec!["tok-other".into()],
            requests_per_s: 1.0,
            requests_burst: 1.0,
            bytes_per_s: 0,
            bytes_burst: 0,
        };
        let c = Config {
            tenants: [("other".to_string(), tenant)].into(),
            ..Config::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "tenants.other: the name is reserved (the label of every client no tenant's token names)"
        );
    }

    #[test]
    fn uploads_open_max_is_within_its_ceiling() {
        for refused in [0, UPLOADS_OPEN_MAX_CEILING + 1] {
            let c = Config {
                uploads_open_max: refused,
                ..Config::default()
            };
            assert_eq!(
                c.validate().unwrap_err().to_string(),
                "uploads_open_max must be 1..=1024"
            );
        }
    }

    #[test]
    fn public_bind_without_tokens_is_refused_unless_explicit() {
        let mut c = Config {
            http: "0.0.0.0:8080".parse().unwrap(),
            ..Config::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("refusing to start: HTTP listens on 0.0.0.0:8080"),
            "{err}"
        );
        let oap_public = Config {
            oap: "0.0.0.0:9444".parse().unwrap(),
            ..Config::default()
        };
        let err = oap_public.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("refusing to start: OAP listens on 0.0.0.0:9444"),
            "{err}"
        );
        c.allow_open_writes = true;
        c.validate().unwrap();
        c.allow_open_writes = false;
        c.tokens = vec!["s3cret".into()];
        c.validate().unwrap();
    }

    #[test]
    fn tls_needs_certificate_and_key_and_frames_hold_a_group() {
        let mut c = Config {
            tls: Some("127.0.0.1:9443".parse().unwrap()),
            ..Config::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert_eq!(
            err,
            "the TLS listener on 127.0.0.1:9443 needs both --cert and --key (keys tls_cert, tls_key)"
        );
        c.tls_cert = Some("c.pem".into());
        c.tls_key = Some("k.pem".into());
        c.validate().unwrap();
        c.oap_max_frame = 65536;
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("oap_max_frame must be between 131072 and 1048576"),
            "{err}"
        );
    }

    #[test]
    fn public_admin_needs_an_admin_token() {
        let mut c = Config {
            admin: "0.0.0.0:9600".parse().unwrap(),
            ..Config::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("refusing to start: the admin endpoints listen on 0.0.0.0:9600"),
            "{err}"
        );
        c.admin_token = Some("adm1n".into());
        c.validate().unwrap();
    }
}
