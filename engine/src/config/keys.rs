//! The key table: every setting of the node, once. Each [`Key`] names its TOML key
//! (also its `RON_*` variable, upper-cased), its flag, its default as text, a line of
//! help, and the one parser that applies a value from any layer. `Config::default()`
//! is the table's defaults applied; `ron help`'s options are generated from it, and a
//! test holds docs/OPERATIONS.md's configuration reference to it.

use std::net::SocketAddr;
use std::path::PathBuf;

use ron_shards::ec::{EcParams, EcParamsError};

use crate::config::Config;
use crate::logging::{LogFormat, LogLevel};

/// Why a value does not parse, whatever layer it came from (the caller names the key
/// and the layer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("invalid address {0:?}")]
    Address(String),
    #[error("invalid number {0:?}")]
    Number(String),
    #[error("invalid size {0:?} (use e.g. 4096, 16KiB, 256MiB)")]
    Size(String),
    #[error("{0} is too large")]
    TooLarge(String),
    #[error("invalid percentage {0:?} (a whole number from 0 to 100)")]
    Percent(String),
    #[error("invalid boolean {0:?} (true or false)")]
    Boolean(String),
    #[error("invalid {what} {given:?} ({choices})")]
    Choice {
        what: &'static str,
        given: String,
        choices: &'static str,
    },
    #[error("{0}")]
    Ec(String),
    #[error("expected one value, not a list")]
    NotOneValue,
    #[error("expected a list of strings")]
    NotAList,
    #[error("expected a value, not a table")]
    Table,
}

/// A value as a layer hands it to a key's parser.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    /// A `RON_*` variable or a TOML scalar; a list key splits it at commas.
    Text(&'a str),
    /// A flag; a list key appends it (the flag repeats) to the list the first of its
    /// flags started: flags replace a list a lower layer set (`cli::apply_flags`).
    Flag(&'a str),
    /// A TOML array of strings: a list key's whole list.
    List(&'a [String]),
}

impl<'a> Value<'a> {
    /// The single value a scalar key takes.
    pub fn text(self) -> Result<&'a str, ValueError> {
        match self {
            Value::Text(v) | Value::Flag(v) => Ok(v),
            Value::List(_) => Err(ValueError::NotOneValue),
        }
    }
}

/// One setting of the node.
#[derive(Debug)]
pub struct Key {
    /// The TOML key; `RON_` + its upper case is the environment variable.
    pub key: &'static str,
    /// The flag, without `--`.
    pub flag: &'static str,
    /// What the flag takes, for the help (`N`, `SIZE`, `ADDR`); empty for a switch.
    pub value: &'static str,
    /// The default as text (fed to `apply`); `None` for an optional key or a list that
    /// starts empty.
    pub default: Option<&'static str>,
    /// One line of help.
    pub help: &'static str,
    /// The parser: applies a value from any layer to the configuration.
    pub apply: fn(&mut Config, Value<'_>) -> Result<(), ValueError>,
}

impl Key {
    /// A flag that takes no value (`--allow-open-writes`).
    pub fn is_switch(&self) -> bool {
        self.value.is_empty()
    }

    /// The `ron help` line of this key's flag.
    pub fn help_line(&self) -> String {
        let spec = match self.is_switch() {
            true => format!("--{}", self.flag),
            false => format!("--{} {}", self.flag, self.value),
        };
        let mut help = self.help.to_string();
        if self.key != self.flag.replace('-', "_") {
            help = match help.strip_suffix(')') {
                Some(open) => format!("{open}; key {})", self.key),
                None => format!("{help} (key {})", self.key),
            };
        }
        if let Some(default) = self.default.filter(|_| !self.is_switch()) {
            help.push_str(&format!(" [{default}]"));
        }
        format!("  {spec:<27} {help}\n")
    }
}

/// The key of a TOML key (or of a lower-cased `RON_*` suffix).
pub fn find(key: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.key == key)
}

/// The key of a flag (without `--`).
pub fn find_flag(flag: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.flag == flag)
}

/// Keys set only in the file (tables, read by serde).
pub const FILE_ONLY_KEYS: [&str; 2] = ["quota_default", "tenants"];

/// The `ron help` lines of every key, in table order.
pub fn options_help() -> String {
    KEYS.iter().map(Key::help_line).collect()
}

/// Applies every key's default to `config`.
pub(super) fn apply_defaults(config: &mut Config) {
    for key in KEYS {
        if let Some(default) = key.default {
            (key.apply)(config, Value::Text(default))
                .unwrap_or_else(|e| panic!("default of {}: {e}", key.key));
        }
    }
}

/// The largest byte size a key takes: a TOML integer's (a larger one could not be
/// written back as TOML, and comparing configurations at a reload by their TOML found
/// no change at all: restart-only keys changed without the warning).
pub const SIZE_BYTES_MAX: u64 = i64::MAX as u64;

/// Parses a byte size: `4096`, `16KiB`, `256MiB`, `64GiB`, `1TiB`; at most
/// [`SIZE_BYTES_MAX`].
pub fn parse_size(text: &str) -> Result<u64, ValueError> {
    let units = [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("", 1),
    ];
    let (digits, unit) = units
        .iter()
        .find_map(|(suffix, unit)| text.strip_suffix(suffix).map(|d| (d, *unit)))
        .unwrap_or((text, 1));
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| ValueError::Size(text.to_string()))
        .and_then(|n| match n <= SIZE_BYTES_MAX {
            true => Ok(n),
            false => Err(ValueError::TooLarge(text.to_string())),
        })
}

/// A byte size for people: `24 GiB`, `11.8 GiB`, `512 MiB`, `64 KiB`.
pub fn size_text(bytes: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    match bytes {
        n if n >= GIB && n % GIB == 0 => format!("{} GiB", n / GIB),
        n if n >= GIB => format!("{:.1} GiB", n as f64 / GIB as f64),
        n if n >= MIB => format!("{} MiB", n / MIB),
        n => format!("{} KiB", n / KIB),
    }
}

fn addr(v: &str) -> Result<SocketAddr, ValueError> {
    v.parse().map_err(|_| ValueError::Address(v.to_string()))
}

fn num<T: std::str::FromStr>(v: &str) -> Result<T, ValueError> {
    v.parse().map_err(|_| ValueError::Number(v.to_string()))
}

pub(super) fn size(v: &str) -> Result<u64, ValueError> {
    parse_size(v)
}

/// A size, or `auto` (0: sized from the memory limit when the layers are resolved).
/// A share of a whole, 0 to 100.
fn percent(v: &str) -> Result<u8, ValueError> {
    match v.parse::<u8>() {
        Ok(p) if p <= 100 => Ok(p),
        _ => Err(ValueError::Percent(v.to_string())),
    }
}

fn size_or_auto(v: &str) -> Result<u64, ValueError> {
    match v {
        "auto" => Ok(0),
        _ => size(v),
    }
}

/// A count, or `auto` (0: chosen when the layers are resolved).
fn count_or_auto(v: &str) -> Result<usize, ValueError> {
    match v {
        "auto" => Ok(0),
        _ => num(v),
    }
}

/// An erasure code (`4+1`, `off`), or `auto` (`None`: chosen for the node's data dirs
/// when the layers are resolved).
fn ec_or_auto(v: &str) -> Result<Option<EcParams>, ValueError> {
    match v {
        "auto" => Ok(None),
        _ => v
            .parse()
            .map(Some)
            .map_err(|e: EcParamsError| ValueError::Ec(e.to_string())),
    }
}

fn size_usize(v: &str) -> Result<usize, ValueError> {
    usize::try_from(size(v)?).map_err(|_| ValueError::TooLarge(v.to_string()))
}

fn size_u32(v: &str) -> Result<u32, ValueError> {
    u32::try_from(size(v)?).map_err(|_| ValueError::TooLarge(v.to_string()))
}

fn boolean(v: &str) -> Result<bool, ValueError> {
    match v {
        "" | "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(ValueError::Boolean(v.to_string())),
    }
}

fn path(v: &str) -> Result<PathBuf, ValueError> {
    Ok(PathBuf::from(v))
}

fn log_format(v: &str) -> Result<LogFormat, ValueError> {
    match v {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(ValueError::Choice {
            what: "log format",
            given: v.to_string(),
            choices: "text or json",
        }),
    }
}

fn log_level(v: &str) -> Result<LogLevel, ValueError> {
    Ok(match v {
        "error" => LogLevel::Error,
        "warn" => LogLevel::Warn,
        "info" => LogLevel::Info,
        "debug" => LogLevel::Debug,
        "trace" => LogLevel::Trace,
        _ => {
            return Err(ValueError::Choice {
                what: "log level",
                given: v.to_string(),
                choices: "error, warn, info, debug or trace",
            })
        }
    })
}

/// Sets a scalar field from a value, with `parse`.
fn set<T>(
    field: &mut T,
    parse: fn(&str) -> Result<T, ValueError>,
    v: Value,
) -> Result<(), ValueError> {
    *field = parse(v.text()?)?;
    Ok(())
}

/// A list of paths: a flag appends, a variable or TOML string is one path, a TOML
/// array replaces (a path may hold a comma).
fn set_paths(field: &mut Vec<PathBuf>, v: Value) -> Result<(), ValueError> {
    match v {
        Value::Flag(item) => field.push(PathBuf::from(item)),
        Value::Text(text) => *field = vec![PathBuf::from(text)],
        Value::List(items) => *field = items.iter().map(PathBuf::from).collect(),
    }
    Ok(())
}

/// A list: a flag appends, a variable or TOML string is comma-separated, a TOML array
/// replaces.
fn set_list(field: &mut Vec<String>, v: Value) -> Result<(), ValueError> {
    match v {
        Value::Flag(item) => field.push(item.to_owned()),
        Value::Text(text) => {
            *field = text
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect()
        }
        Value::List(items) => *field = items.to_vec(),
    }
    Ok(())
}

/// Every setting but the file-only tables, in `ron help` order.
pub const KEYS: &[Key] = &[
    Key {
        key: "data_dirs",
        flag: "data-dir",
        value: "DIR",
        default: Some("./ron-data"),
        help: "data directory, one per disk (repeatable)",
        apply: |c, v| set_paths(&mut c.data_dirs, v),
    },
    Key {
        key: "http",
        flag: "http",
        value: "ADDR",
        default: Some("127.0.0.1:8080"),
        help: "HTTP listener",
        apply: |c, v| set(&mut c.http, addr, v),
    },
    Key {
        key: "oap",
        flag: "oap",
        value: "ADDR",
        default: Some("127.0.0.1:9444"),
        help: "OAP/1 listener",
        apply: |c, v| set(&mut c.oap, addr, v),
    },
    Key {
        key: "tls",
        flag: "tls",
        value: "ADDR",
        default: None,
        help: "TLS listener for HTTP/2, HTTP/1.1 and OAP/1 by ALPN (off unless set)",
        apply: |c, v| set(&mut c.tls, |s| addr(s).map(Some), v),
    },
    Key {
        key: "tls_cert",
        flag: "cert",
        value: "FILE",
        default: None,
        help: "PEM certificate chain for --tls (reloaded when it or the key changes, or on SIGHUP)",
        apply: |c, v| set(&mut c.tls_cert, |s| path(s).map(Some), v),
    },
    Key {
        key: "tls_key",
        flag: "key",
        value: "FILE",
        default: None,
        help: "PEM private key for --tls",
        apply: |c, v| set(&mut c.tls_key, |s| path(s).map(Some), v),
    },
    Key {
        key: "admin",
        flag: "admin",
        value: "ADDR",
        default: Some("127.0.0.1:9600"),
        help: "admin HTTP: /healthz /readyz /metrics /version",
        apply: |c, v| set(&mut c.admin, addr, v),
    },
    Key {
        key: "p2p",
        flag: "p2p",
        value: "ADDR",
        default: None,
        help: "libp2p listener (TCP): join a network of nodes through the DHT (off unless set)",
        apply: |c, v| set(&mut c.p2p, |s| addr(s).map(Some), v),
    },
    Key {
        key: "peers",
        flag: "peer",
        value: "HOST:PORT",
        default: None,
        help: "a bootstrap peer's --p2p address, or a multiaddr ending /p2p/<id> (repeatable)",
        apply: |c, v| set_list(&mut c.peers, v),
    },
    Key {
        key: "p2p_network_key_file",
        flag: "p2p-network-key",
        value: "FILE",
        default: None,
        help: "a private network's pre-shared key (libp2p pnet; IPFS's swarm.key format): only peers holding the same key can connect to --p2p",
        apply: |c, v| set(&mut c.p2p_network_key_file, |s| path(s).map(Some), v),
    },
    Key {
        key: "oap_advertised_port",
        flag: "oap-advertised-port",
        value: "PORT",
        default: None,
        help: "the OAP port other nodes are told to fetch from (a port-forward or proxy in front of --oap; default its port)",
        apply: |c, v| set(&mut c.oap_advertised_port, |s| num(s).map(Some), v),
    },
    Key {
        key: "origin",
        flag: "origin",
        value: "URL",
        default: None,
        help: "HTTP or HTTPS origin a miss no peer provides is read through from (http[s]://HOST[:PORT][/PREFIX], verified whole)",
        apply: |c, v| set(&mut c.origin, |s| Ok(Some(s.to_owned())), v),
    },
    Key {
        key: "origin_ca",
        flag: "origin-ca",
        value: "FILE",
        default: None,
        help: "PEM CA certificates an https:// origin's certificate must chain to (default: the system's CA bundle)",
        apply: |c, v| set(&mut c.origin_ca, |s| path(s).map(Some), v),
    },
    Key {
        key: "denylist_dir",
        flag: "denylist",
        value: "DIR",
        default: None,
        help: "directory of *.deny files (IPIP-383 compact denylists, plus b3:<hex> lines): those addresses are answered 451 and never fetched, announced or copied; reloaded live",
        apply: |c, v| set(&mut c.denylist_dir, |s| path(s).map(Some), v),
    },
    Key {
        key: "fetch_timeout_ms",
        flag: "fetch-timeout-ms",
        value: "N",
        default: Some("10000"),
        help: "read-through: resolve plus first verified group, and each later group",
        apply: |c, v| set(&mut c.fetch_timeout_ms, num, v),
    },
    Key {
        key: "fetch_rate_min_bytes_per_s",
        flag: "fetch-rate-min",
        value: "SIZE",
        default: Some("256KiB"),
        help: "read-through and placement copies: slowest upstream kept, per second, after fetch_timeout_ms (a slower provider is replaced, a slower origin given up)",
        apply: |c, v| set(&mut c.fetch_rate_min_bytes_per_s, size, v),
    },
    Key {
        key: "fetch_hedge_ms",
        flag: "fetch-hedge-ms",
        value: "N",
        default: Some("300"),
        help: "read-through: ask a second provider when the first has sent nothing verified by then",
        apply: |c, v| set(&mut c.fetch_hedge_ms, num, v),
    },
    Key {
        key: "fetch_miss_ms",
        flag: "fetch-miss-ms",
        value: "N",
        default: Some("5000"),
        help: "read-through: how long an origin's 404, or its bytes that did not hash to the address, are remembered and answered so without asking again; 0 = never",
        apply: |c, v| set(&mut c.fetch_miss_ms, num, v),
    },
    Key {
        key: "fetched_bytes_max",
        flag: "fetched-bytes-max",
        value: "SIZE",
        default: Some("auto"),
        help: "read-through: fetched copies kept, oldest evicted past it; auto = half the data dirs' filesystems, less parity",
        apply: |c, v| set(&mut c.fetched_bytes_max, size_or_auto, v),
    },
    Key {
        key: "replicas",
        flag: "replicas",
        value: "N",
        default: Some("auto"),
        help: "copies of every object kept on the nodes its placement names (1 to 16); auto = 3 with --p2p, 1 without",
        apply: |c, v| set(&mut c.replicas, count_or_auto, v),
    },
    Key {
        key: "replication_interval_ms",
        flag: "replication-interval-ms",
        value: "N",
        default: Some("600000"),
        help: "how often each node checks the copies of the objects it keeps (audits them, has missing ones made); 0 = never",
        apply: |c, v| set(&mut c.replication_interval_ms, num, v),
    },
    Key {
        key: "peer_dead_ms",
        flag: "peer-dead-ms",
        value: "N",
        default: Some("60000"),
        help: "how long a holder whose connections closed still counts before its copies are made elsewhere (a restart moves nothing); 0 = at once",
        apply: |c, v| set(&mut c.peer_dead_ms, num, v),
    },
    Key {
        key: "copies_disk_free_percent_min",
        flag: "copies-disk-free-percent-min",
        value: "PERCENT",
        default: Some("5"),
        help: "no new copy is kept for another node while a data dir's filesystem has less than this share free (0-100; 0 = no floor, 100 = none kept for others)",
        apply: |c, v| set(&mut c.copies_disk_free_percent_min, percent, v),
    },
    Key {
        key: "replication_bytes_per_s",
        flag: "replication-bytes-per-s",
        value: "SIZE",
        default: Some("100MiB"),
        help: "bytes of placement copies (after uploads, repair, joins) this node pulls per second, at most; 0 = unpaced",
        apply: |c, v| set(&mut c.replication_bytes_per_s, size, v),
    },
    Key {
        key: "zone",
        flag: "zone",
        value: "NAME",
        default: None,
        help: "this node's failure domain (rack, data center): copies of an object go to different zones",
        apply: |c, v| set(&mut c.zone, |s| Ok(Some(s.to_owned())), v),
    },
    Key {
        key: "shards",
        flag: "shards",
        value: "N",
        default: Some("0"),
        help: "pinned shards, 0 = one per CPU",
        apply: |c, v| set(&mut c.shards, num, v),
    },
    Key {
        key: "cache_bytes",
        flag: "cache-bytes",
        value: "SIZE",
        default: Some("auto"),
        help: "verified-group cache for the node; auto = half the memory limit",
        apply: |c, v| set(&mut c.cache_bytes, size_or_auto, v),
    },
    Key {
        key: "io_memory_bytes",
        flag: "io-memory-bytes",
        value: "SIZE",
        default: Some("auto"),
        help: "registered (pinned) I/O buffers of each shard; auto = 1/8 of its cache share, 1 MiB to 10 MiB",
        apply: |c, v| set(&mut c.io_memory_bytes, size_or_auto, v),
    },
    Key {
        key: "ec",
        flag: "ec",
        value: "K+M",
        default: Some("auto"),
        help: "erasure code of new objects: K data + M parity blocks per stripe, off, or auto (4+1 for one data dir)",
        apply: |c, v| set(&mut c.ec, ec_or_auto, v),
    },
    Key {
        key: "scrub_bytes_per_s",
        flag: "scrub-rate",
        value: "SIZE",
        default: Some("50MiB"),
        help: "scrubber's read rate for the node, bytes per second (split over shards); 0 = no scrubber",
        apply: |c, v| set(&mut c.scrub_bytes_per_s, size, v),
    },
    Key {
        key: "object_bytes_max",
        flag: "max-object-bytes",
        value: "SIZE",
        default: Some("64GiB"),
        help: "largest upload",
        apply: |c, v| set(&mut c.object_bytes_max, size, v),
    },
    Key {
        key: "head_bytes_max",
        flag: "head-bytes-max",
        value: "SIZE",
        default: Some("16KiB"),
        help: "largest request head",
        apply: |c, v| set(&mut c.head_bytes_max, size_usize, v),
    },
    Key {
        key: "header_timeout_ms",
        flag: "header-timeout-ms",
        value: "N",
        default: Some("10000"),
        help: "time to receive a whole request head or OAP/1 frame header",
        apply: |c, v| set(&mut c.header_timeout_ms, num, v),
    },
    Key {
        key: "idle_timeout_ms",
        flag: "idle-timeout-ms",
        value: "N",
        default: Some("75000"),
        help: "keep-alive idle time",
        apply: |c, v| set(&mut c.idle_timeout_ms, num, v),
    },
    Key {
        key: "body_timeout_ms",
        flag: "body-timeout-ms",
        value: "N",
        default: Some("60000"),
        help: "grace before a body must keep body_rate_min",
        apply: |c, v| set(&mut c.body_timeout_ms, num, v),
    },
    Key {
        key: "body_rate_min_bytes_per_s",
        flag: "body-rate-min",
        value: "SIZE",
        default: Some("4KiB"),
        help: "slowest body transfer kept, per second",
        apply: |c, v| set(&mut c.body_rate_min_bytes_per_s, size, v),
    },
    Key {
        key: "connections_max",
        flag: "max-connections",
        value: "N",
        default: Some("10000"),
        help: "open connections per shard",
        apply: |c, v| set(&mut c.connections_max, num, v),
    },
    Key {
        key: "connections_per_client_max",
        flag: "max-connections-per-client",
        value: "N",
        default: Some("0"),
        help: "open connections per client address (IPv6: per /64) across the node; more are closed at once; 0: no limit",
        apply: |c, v| set(&mut c.connections_per_client_max, num, v),
    },
    Key {
        key: "inflight_max",
        flag: "max-inflight",
        value: "N",
        default: Some("4096"),
        help: "requests in flight per shard; more get 503",
        apply: |c, v| set(&mut c.inflight_max, num, v),
    },
    Key {
        key: "uploads_open_max",
        flag: "max-uploads",
        value: "N",
        default: Some("32"),
        help: "uploads open at once per shard, HTTP and OAP/1 (each holds temp files and write buffers); more get 503",
        apply: |c, v| set(&mut c.uploads_open_max, num, v),
    },
    Key {
        key: "tokens",
        flag: "token",
        value: "TOKEN",
        default: None,
        help: "a bearer token allowed to write (repeatable)",
        apply: |c, v| set_list(&mut c.tokens, v),
    },
    Key {
        key: "trusted_proxies",
        flag: "trusted-proxy",
        value: "CIDR",
        default: None,
        help: "a load balancer whose PROXY protocol header (v1/v2) and X-Forwarded-For name the client, for quotas and logs (repeatable; ADDRESS[/PREFIX])",
        apply: |c, v| set_list(&mut c.trusted_proxies, v),
    },
    Key {
        key: "allow_open_writes",
        flag: "allow-open-writes",
        value: "",
        default: Some("false"),
        help: "allow writes without tokens on a non-loopback listener",
        apply: |c, v| set(&mut c.allow_open_writes, boolean, v),
    },
    Key {
        key: "admin_token",
        flag: "admin-token",
        value: "TOKEN",
        default: None,
        help: "bearer token for admin endpoints (required off loopback)",
        apply: |c, v| set(&mut c.admin_token, |s| Ok(Some(s.to_owned())), v),
    },
    Key {
        key: "drain_timeout_ms",
        flag: "drain-timeout-ms",
        value: "N",
        default: Some("10000"),
        help: "wait for in-flight requests at shutdown",
        apply: |c, v| set(&mut c.drain_timeout_ms, num, v),
    },
    Key {
        key: "meta_cache_bytes",
        flag: "meta-cache-bytes",
        value: "SIZE",
        default: Some("64MiB"),
        help: "object metadata cache for the node",
        apply: |c, v| set(&mut c.meta_cache_bytes, size, v),
    },
    Key {
        key: "open_files_max",
        flag: "open-files-max",
        value: "N",
        default: Some("1024"),
        help: "object files kept open per shard",
        apply: |c, v| set(&mut c.open_files_max, num, v),
    },
    Key {
        key: "index_bytes_max",
        flag: "index-bytes-max",
        value: "SIZE",
        default: Some("64GiB"),
        help: "LMDB map size per store",
        apply: |c, v| set(&mut c.index_bytes_max, size, v),
    },
    Key {
        key: "oap_max_inflight",
        flag: "oap-max-inflight",
        value: "N",
        default: Some("32"),
        help: "OAP/1 requests in flight per connection",
        apply: |c, v| set(&mut c.oap_max_inflight, num, v),
    },
    Key {
        key: "oap_max_frame",
        flag: "oap-max-frame",
        value: "SIZE",
        default: Some("1MiB"),
        help: "OAP/1 largest frame, 128KiB..1MiB",
        apply: |c, v| set(&mut c.oap_max_frame, size_u32, v),
    },
    Key {
        key: "inflate_ratio_max",
        flag: "inflate-ratio-max",
        value: "N",
        default: Some("10"),
        help: "OAP/1 COMP: inflated size at most N × compressed",
        apply: |c, v| set(&mut c.inflate_ratio_max, num, v),
    },
    Key {
        key: "log_format",
        flag: "log-format",
        value: "text|json",
        default: Some("text"),
        help: "log lines as text or JSON lines",
        apply: |c, v| set(&mut c.log_format, log_format, v),
    },
    Key {
        key: "log_level",
        flag: "log-level",
        value: "LEVEL",
        default: Some("info"),
        help: "error, warn, info, debug (one line per request)",
        apply: |c, v| set(&mut c.log_level, log_level, v),
    },
    Key {
        key: "quota_tenants_max",
        flag: "quota-tenants-max",
        value: "N",
        default: Some("100000"),
        help: "tenants with token buckets kept per shard",
        apply: |c, v| set(&mut c.quota_tenants_max, num, v),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    /// A size past a TOML integer's was taken, and then the reload's comparison of the
    /// configurations (by their TOML) saw no key change at all.
    #[test]
    fn a_size_is_at_most_a_toml_integer() {
        assert_eq!(parse_size("8388607TiB"), Ok(8_388_607 << 40));
        assert_eq!(
            parse_size("8388608TiB").unwrap_err().to_string(),
            "8388608TiB is too large"
        );
        assert!(parse_size(&u64::MAX.to_string()).is_err());
    }

    #[test]
    fn keys_and_flags_are_unique() {
        for (i, a) in KEYS.iter().enumerate() {
            for b in &KEYS[i + 1..] {
                assert!(a.key != b.key && a.flag != b.flag, "{} / {}", a.key, b.key);
            }
            assert!(!FILE_ONLY_KEYS.contains(&a.key), "{}", a.key);
        }
    }

    #[test]
    fn defaults_agree_with_the_codec_limits() {
        let c = Config::default();
        assert_eq!(
            c.head_bytes_max,
            ron_codec::http::head::HEAD_LEN_MAX_DEFAULT
        );
        assert_eq!(c.oap_max_frame, ron_codec::frame::MAX_FRAME_BYTES);
        assert_eq!(
            c.inflate_ratio_max,
            ron_codec::inflate::INFLATE_RATIO_DEFAULT
        );
    }

    #[test]
    fn only_optional_keys_and_lists_have_no_default() {
        let none: Vec<&str> = KEYS
            .iter()
            .filter(|k| k.default.is_none())
            .map(|k| k.key)
            .collect();
        assert_eq!(
            none,
            [
                "tls",
                "tls_cert",
                "tls_key",
                "p2p",
                "peers",
                "p2p_network_key_file",
                "oap_advertised_port",
                "origin",
                "origin_ca",
                "denylist_dir",
                "zone",
                "tokens",
                "trusted_proxies",
                "admin_token"
            ]
        );
        let c = Config::default();
        assert!(c.tls.is_none() && c.tls_cert.is_none() && c.tls_key.is_none());
        assert!(c.tokens.is_empty() && c.admin_token.is_none());
        assert!(c.p2p.is_none() && c.peers.is_empty() && c.origin.is_none());
    }

    /// The rows of docs/OPERATIONS.md's configuration reference, as cells.
    fn documented_rows() -> Vec<Vec<String>> {
        let doc = include_str!("../../../docs/OPERATIONS.md");
        let start = doc
            .find("## Configuration reference")
            .expect("section in docs/OPERATIONS.md");
        let section = &doc[start..];
        let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
        section[..end]
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cells = l.trim().trim_matches('|').split(" | ");
                cells.map(|c| c.trim().to_string()).collect()
            })
            .collect()
    }

    #[test]
    fn every_key_is_documented_with_its_default() {
        let rows = documented_rows();
        for key in KEYS {
            let row = rows
                .iter()
                .find(|r| r[0] == format!("`{}`", key.key))
                .unwrap_or_else(|| panic!("{} is not in docs/OPERATIONS.md", key.key));
            let env = format!("`RON_{}`", key.key.to_ascii_uppercase());
            assert!(row[1].starts_with(&env), "{}: {}", key.key, row[1]);
            let flag = format!("`--{}`", key.flag);
            assert!(row[2].starts_with(&flag), "{}: {}", key.key, row[2]);
            match key.default {
                Some(default) => assert!(
                    row[3].starts_with(&format!("`{default}`")),
                    "{}: the docs say {:?}, the key table `{default}`",
                    key.key,
                    row[3]
                ),
                None => assert!(
                    ["none", "off"].contains(&row[3].as_str()),
                    "{}: {}",
                    key.key,
                    row[3]
                ),
            }
        }
        for row in &rows {
            let key = row[0].trim_matches('`');
            assert!(
                find(key).is_some() || FILE_ONLY_KEYS.contains(&key),
                "docs/OPERATIONS.md documents {key}, which is not a key"
            );
        }
    }
}
