//! Configuration: the node's settings, their defaults and how each layer sets them.
//! Every limit the node enforces is here, sized before any shard starts.
//!
//! - [`keys`]: the key table — per setting its TOML key, `RON_*` variable, flag,
//!   default, help line and the one parser every layer goes through.
//! - [`file`]: the TOML file (top-level keys through the key table; the tables
//!   `quota_default` and `[tenants.NAME]` through serde).
//! - `validate`: the checks a configuration passes before it is used.
//!
//! The layers themselves (defaults < file < `RON_*` < flags, and where each value came
//! from) are put together by `crate::cli::resolve`.

mod denylist;
pub mod disk;
pub mod file;
pub mod keys;
pub mod memory;
pub mod sample;
mod validate;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ron_link::policy::Policy;
use ron_shards::ec::EcParams;
use serde::Serialize;

use crate::logging::{LogFormat, LogLevel};

pub use file::{QuotaConfig, TenantConfig};
pub use keys::{parse_size, Key, Value, ValueError, FILE_ONLY_KEYS, KEYS};

/// Keys a reload applies to the running node; any other changed key is logged as
/// taking effect at the next restart.
pub const RELOADABLE_KEYS: [&str; 3] = ["tokens", "tenants", "quota_default"];

/// The node's configuration. Field names are the TOML keys.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The data dirs, each a disk (a failure domain); fixed when the node is created.
    pub data_dirs: Vec<PathBuf>,
    pub http: SocketAddr,
    /// OAP/1 listener (plain TCP).
    pub oap: SocketAddr,
    pub admin: SocketAddr,
    /// Shards (pinned executors); 0 means one per online CPU.
    pub shards: u16,
    /// Verified-group cache, bytes, for the whole node (split across shards); 0 until
    /// resolved means "auto" (`memory::auto_cache_bytes`).
    pub cache_bytes: u64,
    /// io_uring registered buffers of each shard, bytes (pinned and resident from the
    /// start; reads and writes past them use ordinary buffers); 0 until resolved means
    /// "auto" (`memory::auto_io_memory_bytes`).
    pub io_memory_bytes: u64,
    /// Largest object accepted by an upload.
    pub object_bytes_max: u64,
    /// Largest request head.
    pub head_bytes_max: usize,
    /// Time allowed to receive a whole request head once its first byte arrived.
    pub header_timeout_ms: u64,
    /// Time an idle keep-alive connection is kept.
    pub idle_timeout_ms: u64,
    /// Grace for a body (either direction) before it must keep the minimum rate: its
    /// first `n` bytes must be through within `body_timeout_ms + n / body_rate_min`.
    pub body_timeout_ms: u64,
    /// The slowest body transfer kept, bytes per second (see `body_timeout_ms`).
    pub body_rate_min_bytes_per_s: u64,
    /// Open connections per shard.
    pub connections_max: u32,
    /// Open connections per client across the node (an IPv4 address, an IPv6 /64; the
    /// one a trusted proxy's PROXY header names); 0: no such limit.
    pub connections_per_client_max: u32,
    /// Requests in flight per shard; more get 503 overloaded.
    pub inflight_max: u32,
    /// Uploads open at once per shard (HTTP and OAP/1); more get 503 overloaded.
    pub uploads_open_max: u32,
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
    /// The erasure code of new objects with a file of their own (`4+1`, `off`); `None`
    /// until resolved means "auto" (`EcParams::default_for` the node's data dirs).
    #[serde(serialize_with = "ec_text")]
    pub ec: Option<EcParams>,
    /// The scrubber's read rate for the whole node, bytes per second (each shard gets
    /// its share); 0: no scrubber.
    pub scrub_bytes_per_s: u64,
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
    /// libp2p listener (TCP): the node joins the DHT; off when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p2p: Option<SocketAddr>,
    /// Bootstrap peers: `HOST:PORT` (their `p2p`) or multiaddrs with `/p2p/<id>`.
    pub peers: Vec<String>,
    /// A private network's key file: only peers holding the same key connect over
    /// `p2p` (docs/design/trust.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p2p_network_key_file: Option<PathBuf>,
    /// The OAP port announced to other nodes, when it is not `oap`'s (a port-forward).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oap_advertised_port: Option<u16>,
    /// HTTP origin of read-through (`http://HOST[:PORT][/PREFIX]`); off when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// CA certificates (PEM) an `https://` origin is checked against; none: the
    /// system's bundle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_ca: Option<PathBuf>,
    /// Directory of `*.deny` files: addresses refused on every path (read at start,
    /// reloaded when a file changes or on SIGHUP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denylist_dir: Option<PathBuf>,
    /// Read-through: bound on the resolve plus the first verified group, and per group.
    pub fetch_timeout_ms: u64,
    /// Read-through and placement copies: the slowest upstream kept, bytes per second,
    /// after `fetch_timeout_ms` (the whole transfer's bound, beside the per-group one).
    pub fetch_rate_min_bytes_per_s: u64,
    /// Read-through: when a second provider is asked.
    pub fetch_hedge_ms: u64,
    /// Read-through: how long an origin's "no such object" (404) is remembered, so a
    /// flood of requests for a missing address costs the origin one request per period.
    pub fetch_miss_ms: u64,
    /// How often the repair sweep checks the copies of kept objects (0: never).
    pub replication_interval_ms: u64,
    /// No new copy is kept for another node while a data dir's filesystem has less
    /// than this percentage free (0: no floor).
    pub copies_disk_free_percent_min: u8,
    /// How long a peer that stopped answering still counts as a holder before the
    /// placement names another (0: as soon as lookups stop finding it).
    pub peer_dead_ms: u64,
    /// Bytes of placement copies (after an upload, repair, a join) this node pulls per
    /// second, at most, split evenly over its shards (0: unpaced).
    pub replication_bytes_per_s: u64,
    /// Read-through: bytes of fetched copies kept (evicted oldest first past it); 0
    /// until resolved means "auto" (`disk::auto_fetched_bytes`).
    pub fetched_bytes_max: u64,
    /// Copies of every object the network keeps (placement, docs/design/replication.md);
    /// 0 until resolved means "auto" ([`Config::replicas_target`]).
    pub replicas: usize,
    /// This node's failure domain; copies of an object go to different zones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Load balancers (`ADDRESS[/PREFIX]`) believed about the client: their PROXY
    /// protocol header and `X-Forwarded-For` (docs/design/client-address.md).
    pub trusted_proxies: Vec<String>,
    /// Log lines as `text` or `json`.
    pub log_format: LogFormat,
    /// Least severe events logged: error, warn, info, debug (adds one line per request).
    pub log_level: LogLevel,
    /// Tenants with token buckets kept per shard (the rest start over when they return).
    pub quota_tenants_max: usize,
    /// Limits of every tenant not configured by name, each on its own buckets.
    pub quota_default: QuotaConfig,
    /// Configured tenants by name.
    pub tenants: BTreeMap<String, TenantConfig>,
}

fn ec_text<S: serde::Serializer>(ec: &Option<EcParams>, s: S) -> Result<S::Ok, S::Error> {
    match ec {
        Some(ec) => s.collect_str(ec),
        None => s.serialize_str("auto"),
    }
}

/// The key table's defaults ([`KEYS`]); optional keys unset, lists and tables empty.
impl Default for Config {
    fn default() -> Self {
        let mut config = Config::unset();
        keys::apply_defaults(&mut config);
        config
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Usage(String),
    /// The denylist directory, or one of its `*.deny` files, could not be read or was
    /// refused (`reason` names the file).
    #[error("denylist_dir {}: {reason}", dir.display())]
    Denylist { dir: PathBuf, reason: String },
    /// The denylist directory, or one of its files, could not be read (absent, no
    /// permission, an I/O error: a disk not mounted yet, perhaps) — no refusal of what
    /// it says. `ron serve` exits 1 for it, so that its unit retries.
    #[error("denylist_dir {}: {reason}", dir.display())]
    DenylistUnreadable { dir: PathBuf, reason: String },
    /// The file at `path` could not be read.
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file at `path` is not TOML, or one of its tables (`quota_default`,
    /// `[tenants.NAME]`) does not fit: the parser's message names the table, the line
    /// and what was expected.
    #[error("config file {path}: {source}")]
    Toml {
        path: PathBuf,
        source: toml::de::Error,
    },
    /// The file at `path` sets `key`, which is not a key of the node.
    #[error("config file {path}: unknown key {key:?}")]
    UnknownKey { path: PathBuf, key: String },
    /// A bad value for `key` in the file at `path`.
    #[error("config file {path} (key {key}): {reason}")]
    Key {
        path: PathBuf,
        key: &'static str,
        reason: ValueError,
    },
    /// A bad value for `key` in the environment variable `var`.
    #[error("environment {var} (key {key}): {reason}")]
    Env {
        var: String,
        key: &'static str,
        reason: ValueError,
    },
    /// A bad value for `key` given with `--flag`.
    #[error("--{flag} (key {key}): {reason}")]
    Flag {
        flag: String,
        key: &'static str,
        reason: ValueError,
    },
    #[error("{0}")]
    Refused(String),
}

/// A reload the control thread asked for failed: the same message, with the file or
/// the key at fault.
impl From<ConfigError> for ron_control::ReloadError {
    fn from(error: ConfigError) -> Self {
        use ron_control::ReloadError as Reload;
        match error {
            ConfigError::Read { path, source } => Reload::File {
                path,
                reason: source.to_string(),
            },
            ConfigError::Toml { path, source } => Reload::File {
                path,
                reason: source.to_string(),
            },
            ConfigError::UnknownKey { path, key } => Reload::File {
                path,
                reason: format!("unknown key {key:?}"),
            },
            ConfigError::Key { path, key, reason } => Reload::Value {
                at: format!("config file {}", path.display()),
                key,
                reason: reason.to_string(),
            },
            ConfigError::Env { var, key, reason } => Reload::Value {
                at: format!("environment {var}"),
                key,
                reason: reason.to_string(),
            },
            ConfigError::Flag { flag, key, reason } => Reload::Value {
                at: format!("--{flag}"),
                key,
                reason: reason.to_string(),
            },
            ConfigError::Usage(message) | ConfigError::Refused(message) => Reload::Refused(message),
            e @ (ConfigError::Denylist { .. } | ConfigError::DenylistUnreadable { .. }) => {
                Reload::Refused(e.to_string())
            }
        }
    }
}

impl Config {
    /// The erasure code new objects get: the configured one, or the default for the
    /// node's data dirs when the configuration was not resolved.
    pub fn ec_params(&self) -> EcParams {
        let dirs = self.data_dirs.len().min(usize::from(u8::MAX)) as u8;
        self.ec.unwrap_or(EcParams::default_for(dirs))
    }

    /// Copies of every object: the configured number, or when unresolved ("auto") 3 on
    /// a node in a network and 1 without one. The placement caps it by the nodes that
    /// exist.
    pub fn replicas_target(&self) -> usize {
        match (self.replicas, self.p2p) {
            (0, Some(_)) => 3,
            (0, None) => 1,
            (n, _) => n,
        }
    }

    /// The data dirs as the shards take them.
    pub fn data_dirs(&self) -> ron_shards::layout::DataDirs {
        ron_shards::layout::DataDirs::new(self.data_dirs.clone())
    }

    /// Every field before the key table's defaults apply: placeholders that
    /// `Config::default()` overwrites for every key with a default (the others stay
    /// unset or empty).
    fn unset() -> Config {
        let nowhere = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        Config {
            data_dirs: Vec::new(),
            http: nowhere,
            oap: nowhere,
            admin: nowhere,
            shards: 0,
            cache_bytes: 0,
            io_memory_bytes: 0,
            object_bytes_max: 0,
            head_bytes_max: 0,
            header_timeout_ms: 0,
            idle_timeout_ms: 0,
            body_timeout_ms: 0,
            body_rate_min_bytes_per_s: 0,
            connections_max: 0,
            connections_per_client_max: 0,
            inflight_max: 0,
            uploads_open_max: 0,
            tokens: Vec::new(),
            allow_open_writes: false,
            admin_token: None,
            drain_timeout_ms: 0,
            meta_cache_bytes: 0,
            open_files_max: 0,
            index_bytes_max: 0,
            ec: None,
            scrub_bytes_per_s: 0,
            oap_max_inflight: 0,
            oap_max_frame: 0,
            inflate_ratio_max: 0,
            tls: None,
            p2p: None,
            peers: Vec::new(),
            oap_advertised_port: None,
            origin: None,
            trusted_proxies: Vec::new(),
            origin_ca: None,
            denylist_dir: None,
            fetch_timeout_ms: 0,
            fetch_rate_min_bytes_per_s: 0,
            fetch_hedge_ms: 0,
            fetch_miss_ms: 0,
            replication_interval_ms: 0,
            peer_dead_ms: 0,
            copies_disk_free_percent_min: 0,
            replication_bytes_per_s: 0,
            fetched_bytes_max: 0,
            replicas: 0,
            zone: None,
            p2p_network_key_file: None,
            tls_cert: None,
            tls_key: None,
            log_format: LogFormat::Text,
            log_level: LogLevel::Error,
            quota_tenants_max: 0,
            quota_default: QuotaConfig::default(),
            tenants: BTreeMap::new(),
        }
    }

    /// The defaults with the TOML file at `path` applied.
    pub fn from_toml(path: &Path) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        config.apply_file(path)?;
        Ok(config)
    }

    /// Applies the TOML file at `path`; returns the keys it set (for `ron config print`).
    pub fn apply_file(&mut self, path: &Path) -> Result<Vec<&'static str>, ConfigError> {
        file::apply(self, path)
    }

    /// The tokens, tenants and limits the shards enforce (version 1), and the denylist
    /// read from `denylist_dir` now.
    pub fn policy(&self) -> Result<Policy, ConfigError> {
        let tenants = self
            .tenants
            .iter()
            .map(|(name, t)| (name.clone(), t.tokens.clone(), t.quota().limits()))
            .collect();
        let policy = Policy::new(&self.tokens, tenants, self.quota_default.limits());
        match &self.denylist_dir {
            Some(dir) => Ok(policy.with_denylist(denylist::load(dir)?)),
            None => Ok(policy),
        }
    }

    /// Whether any write token is configured (globally or for a tenant).
    pub fn has_tokens(&self) -> bool {
        !self.tokens.is_empty() || self.tenants.values().any(|t| !t.tokens.is_empty())
    }

    /// What runs after a reload that read `reloaded`: its reloadable keys (tokens,
    /// tenants, quotas), every other key as running. Validated as a whole: a reload is
    /// checked against the listeners that stay open, not those the file names for the
    /// next start (tokens dropped together with a public listener moved to loopback
    /// left the public one open to writes from anyone).
    pub fn with_reloaded(&self, reloaded: &Config) -> Config {
        let mut live = self.clone();
        live.tokens.clone_from(&reloaded.tokens);
        live.tenants.clone_from(&reloaded.tenants);
        live.quota_default = reloaded.quota_default;
        live
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

    /// Every TCP listener of the node, named by its key.
    pub fn every_listener(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut out = vec![("http", self.http), ("oap", self.oap)];
        out.extend(self.tls.map(|addr| ("tls", addr)));
        out.push(("admin", self.admin));
        out.extend(self.p2p.map(|addr| ("p2p", addr)));
        out
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(err.contains("unknown key \"shardz\""), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_refused_reload_logs_what_the_config_error_says() {
        use ron_control::ReloadError;
        let path = PathBuf::from("/etc/ron.toml");
        let number = || ValueError::Number("x".into());
        let errors = [
            ConfigError::Usage("no data dir".into()),
            ConfigError::Read {
                path: path.clone(),
                source: std::io::Error::other("permission denied"),
            },
            ConfigError::Toml {
                path: path.clone(),
                source: toml::from_str::<toml::Table>("shards =").unwrap_err(),
            },
            ConfigError::UnknownKey {
                path: path.clone(),
                key: "shardz".into(),
            },
            ConfigError::Key {
                path: path.clone(),
                key: "shards",
                reason: number(),
            },
            ConfigError::Env {
                var: "RON_SHARDS".into(),
                key: "shards",
                reason: number(),
            },
            ConfigError::Flag {
                flag: "shards".into(),
                key: "shards",
                reason: number(),
            },
            ConfigError::Refused("tenants.a.requests_per_s must be a finite number ≥ 0".into()),
        ];
        for error in errors {
            let said = error.to_string();
            let reload = ReloadError::from(error);
            assert_eq!(reload.to_string(), said);
            match reload {
                ReloadError::File { path: p, .. } => assert_eq!(p, path),
                ReloadError::Value { key, .. } => assert_eq!(key, "shards"),
                ReloadError::Refused(_) => {}
            }
        }
    }
}
