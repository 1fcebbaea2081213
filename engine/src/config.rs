//! Configuration: embedded defaults, then a TOML file (`--config`), then flags.
//! Every limit the node enforces is here, sized before any shard starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use ron_control::quota::{Policy, QuotaLimits, TENANT_NAME_BYTES_MAX};
use serde::{Deserialize, Serialize};

use crate::logging::{LogFormat, LogLevel};

/// Keys a reload applies to the running node; any other changed key is logged as
/// taking effect at the next restart.
pub const RELOADABLE_KEYS: [&str; 3] = ["tokens", "tenants", "quota_default"];

/// One configured tenant (`[tenants.NAME]`): the bearer tokens that identify it (and
/// may write) and its limits; 0 means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantConfig {
    pub tokens: Vec<String>,
    pub requests_per_s: f64,
    pub requests_burst: f64,
    pub bytes_per_s: u64,
    pub bytes_burst: u64,
}

impl TenantConfig {
    fn limits(&self) -> QuotaLimits {
        QuotaLimits {
            requests_per_s: self.requests_per_s,
            requests_burst: self.requests_burst,
            bytes_per_s: self.bytes_per_s,
            bytes_burst: self.bytes_burst,
        }
    }
}

/// The node's configuration. Field names are the TOML keys.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    /// OAP/1 listener (plain TCP).
    pub oap: SocketAddr,
    pub admin: SocketAddr,
    /// Shards (pinned executors); 0 means one per online CPU.
    pub shards: u16,
    /// Verified-group cache, bytes, for the whole node (split across shards).
    pub cache_bytes: u64,
    /// Largest object accepted by an upload.
    pub object_bytes_max: u64,
    /// Largest request head.
    pub head_bytes_max: usize,
    /// Time allowed to receive a whole request head once its first byte arrived.
    pub header_timeout_ms: u64,
    /// Time an idle keep-alive connection is kept.
    pub idle_timeout_ms: u64,
    /// Time allowed between two reads of a request body.
    pub body_timeout_ms: u64,
    /// Open connections per shard.
    pub connections_max: u32,
    /// Requests in flight per shard; more get 503 overloaded.
    pub inflight_max: u32,
    /// Bearer tokens allowed to write. Empty: writes are open, but only on loopback.
    pub tokens: Vec<String>,
    /// Start with open writes on a non-loopback listener (explicit operator choice).
    pub allow_open_writes: bool,
    /// Bearer token for the admin endpoints; required when `admin` is not loopback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// Longest wait for in-flight requests at shutdown.
    pub drain_timeout_ms: u64,
    /// Object metadata cache (records with their chunk trees), bytes, for the whole
    /// node (split across shards).
    pub meta_cache_bytes: u64,
    /// Object files kept open per shard.
    pub open_files_max: usize,
    /// LMDB map size per store, bytes.
    pub index_bytes_max: u64,
    /// OAP/1: requests in flight per connection (HELLO's `max_inflight`).
    pub oap_max_inflight: u32,
    /// OAP/1: largest frame accepted and sent, bytes (128 KiB to 1 MiB).
    pub oap_max_frame: u32,
    /// OAP/1 COMP: largest inflated size as a multiple of the compressed size.
    pub inflate_ratio_max: u32,
    /// TLS listener serving HTTP/1.1 and OAP/1 (chosen by ALPN); off when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<SocketAddr>,
    /// PEM certificate chain for `tls`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Log lines as `text` or `json`.
    pub log_format: LogFormat,
    /// Least severe events logged: error, warn, info, debug (adds one line per request).
    pub log_level: LogLevel,
    /// Tenants with token buckets kept per shard (the rest start over when they return).
    pub quota_tenants_max: usize,
    /// Limits of every tenant not configured by name, each on its own buckets.
    pub quota_default: QuotaLimits,
    /// Configured tenants by name.
    pub tenants: BTreeMap<String, TenantConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./ron-data"),
            http: "127.0.0.1:8080".parse().expect("valid literal"),
            oap: "127.0.0.1:9444".parse().expect("valid literal"),
            admin: "127.0.0.1:9600".parse().expect("valid literal"),
            shards: 0,
            cache_bytes: 256 << 20,
            object_bytes_max: 64 << 30,
            head_bytes_max: ron_codec::http::head::HEAD_LEN_MAX_DEFAULT,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 75_000,
            body_timeout_ms: 60_000,
            connections_max: 10_000,
            inflight_max: 4_096,
            tokens: Vec::new(),
            allow_open_writes: false,
            admin_token: None,
            drain_timeout_ms: 10_000,
            meta_cache_bytes: 64 << 20,
            open_files_max: 1_024,
            index_bytes_max: 64 << 30,
            oap_max_inflight: 32,
            oap_max_frame: ron_codec::frame::MAX_FRAME_BYTES,
            inflate_ratio_max: ron_codec::inflate::INFLATE_RATIO_DEFAULT,
            tls: None,
            tls_cert: None,
            tls_key: None,
            log_format: LogFormat::Text,
            log_level: LogLevel::Info,
            quota_tenants_max: 100_000,
            quota_default: QuotaLimits::default(),
            tenants: BTreeMap::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Usage(String),
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{0}")]
    Refused(String),
}

impl Config {
    pub fn from_toml(path: &std::path::Path) -> Result<Config, ConfigError> {
        Self::from_toml_with_keys(path).map(|(config, _)| config)
    }

    /// Loads a TOML file; also returns the keys it set (for `ron config print`).
    pub fn from_toml_with_keys(
        path: &std::path::Path,
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let file = |reason: String| ConfigError::File {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file(e.to_string()))?;
        let config: Config = toml::from_str(&text).map_err(|e| file(e.to_string()))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| file(e.to_string()))?;
        Ok((config, table.keys().cloned().collect()))
    }

    /// The tokens, tenants and limits the shards enforce (version 1).
    pub fn policy(&self) -> Policy {
        let tenants = self
            .tenants
            .iter()
            .map(|(name, t)| (name.clone(), t.tokens.clone(), t.limits()))
            .collect();
        Policy::new(&self.tokens, tenants, self.quota_default)
    }

    /// Whether any write token is configured (globally or for a tenant).
    pub fn has_tokens(&self) -> bool {
        !self.tokens.is_empty() || self.tenants.values().any(|t| !t.tokens.is_empty())
    }

    /// Keys whose values differ from `other`'s, apart from the reloadable ones.
    pub fn restart_keys_changed(&self, other: &Config) -> Vec<String> {
        let table = |c: &Config| toml::Table::try_from(c).unwrap_or_default();
        let (mine, theirs) = (table(self), table(other));
        let mut keys: Vec<String> = mine
            .keys()
            .chain(theirs.keys())
            .filter(|k| !RELOADABLE_KEYS.contains(&k.as_str()))
            .filter(|k| mine.get(*k) != theirs.get(*k))
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// The listeners that serve objects, by name.
    pub fn data_listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut out = vec![("HTTP", self.http), ("OAP", self.oap)];
        out.extend(self.tls.map(|addr| ("TLS", addr)));
        out
    }

    /// Shards to run: the configured count, or one per online CPU.
    pub fn shard_count(&self) -> u16 {
        if self.shards > 0 {
            return self.shards;
        }
        std::thread::available_parallelism()
            .map(|n| n.get().min(usize::from(u16::MAX)) as u16)
            .unwrap_or(1)
    }

    /// Checks the limits and the write rule (HTTP-API.md "Who may write").
    pub fn validate(&self) -> Result<(), ConfigError> {
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
        self.validate_quotas()?;
        if self.head_bytes_max < 1024 {
            return refuse("head_bytes_max must be at least 1024".into());
        }
        if self.connections_max == 0 || self.inflight_max == 0 {
            return refuse("connections_max and inflight_max must be positive".into());
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
        if let Err(e) = self.quota_default.check() {
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
            if let Err(e) = tenant.limits().check() {
                return refuse(format!("tenants.{name}.{e}"));
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

    #[test]
    fn toml_overrides_defaults_and_rejects_unknown_keys() {
        let dir = std::env::temp_dir().join(format!("ron-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ron.toml");
        std::fs::write(&path, "shards = 3\ntokens = [\"a\"]\ncache_bytes = 1024\n").unwrap();
        let c = Config::from_toml(&path).unwrap();
        assert_eq!((c.shards, c.cache_bytes, c.tokens.len()), (3, 1024, 1));
        assert_eq!(c.http, Config::default().http);
        std::fs::write(&path, "shardz = 3\n").unwrap();
        let err = Config::from_toml(&path).unwrap_err().to_string();
        assert!(err.contains("unknown field `shardz`"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
