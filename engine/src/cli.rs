//! The command line and the configuration layers.
//!
//! Precedence, lowest first: embedded defaults, the TOML file (`--config`), `RON_*`
//! environment variables (`RON_SHARDS=4` sets `shards`), flags. Every setting has one
//! parser, whatever layer its value comes from, so a bad value is reported the same way
//! with the key and the layer named. `ron config print` shows the result and, per key,
//! the layer it came from.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use crate::config::{Config, ConfigError};
use crate::logging::{LogFormat, LogLevel};

pub const HELP: &str = "\
ron — the RustyOnions data-plane node

USAGE:
  ron serve [OPTIONS]          run a node (embedded defaults work on a fresh machine)
  ron config print [OPTIONS]   show the effective configuration and where each value came from
  ron help | --help            this text
  ron --version

CONFIGURATION, lowest precedence first: embedded defaults, the TOML file (--config),
RON_* environment variables (the key in upper case: RON_SHARDS=4, RON_TOKENS=a,b), flags.

OPTIONS (defaults in brackets; the TOML key is the flag with '_' for '-' unless given):
  --config FILE               TOML file with any of the keys below
  --data-dir DIR              data directory [./ron-data]
  --http ADDR                 HTTP listener [127.0.0.1:8080]
  --oap ADDR                  OAP/1 listener [127.0.0.1:9444]
  --tls ADDR                  TLS listener for HTTP/1.1 and OAP/1 by ALPN (off unless set)
  --cert FILE                 PEM certificate chain for --tls (key tls_cert)
  --key FILE                  PEM private key for --tls (key tls_key)
  --admin ADDR                admin HTTP: /healthz /readyz /metrics /version [127.0.0.1:9600]
  --shards N                  pinned shards, 0 = one per CPU [0]
  --cache-bytes SIZE          verified-group cache for the node [256MiB]
  --max-object-bytes SIZE     largest upload (key object_bytes_max) [64GiB]
  --head-bytes-max SIZE       largest request head [16KiB]
  --header-timeout-ms N       time to receive a whole head [10000]
  --idle-timeout-ms N         keep-alive idle time [75000]
  --body-timeout-ms N         time between body reads / writes [60000]
  --max-connections N         open connections per shard (key connections_max) [10000]
  --max-inflight N            requests in flight per shard; more get 503 (key inflight_max) [4096]
  --token TOKEN               a bearer token allowed to write (repeatable; key tokens)
  --allow-open-writes         allow writes without tokens on a non-loopback listener
  --admin-token TOKEN         bearer token for admin endpoints (required off loopback)
  --drain-timeout-ms N        wait for in-flight requests at shutdown [10000]
  --meta-cache-bytes SIZE     object metadata cache for the node [64MiB]
  --open-files-max N          object files kept open per shard [1024]
  --index-bytes-max SIZE      LMDB map size per store [64GiB]
  --oap-max-inflight N        OAP/1 requests in flight per connection [32]
  --oap-max-frame SIZE        OAP/1 largest frame, 128KiB..1MiB [1MiB]
  --inflate-ratio-max N       OAP/1 COMP: inflated size at most N × compressed [10]
  --log-format text|json      log lines as text or JSON lines [text]
  --log-level LEVEL           error, warn, info, debug (one line per request) [info]
  --quota-tenants-max N       tenants with token buckets kept per shard [100000]

QUOTAS AND TENANTS (file only; reloaded on SIGHUP and when the file changes):
  [quota_default]             requests_per_s, requests_burst, bytes_per_s, bytes_burst
                              for every tenant not named below (0 = unlimited)
  [tenants.NAME]              tokens = [..] (identify NAME and may write) and the same limits

SIZE accepts a plain number of bytes or a suffix: KiB, MiB, GiB, TiB.

EXIT CODES: 0 clean stop (SIGINT/SIGTERM); 1 runtime failure or refusal to start (e.g. the
write rule, a data dir in use); 2 an error in the command line, the file or RON_* variables.
";

#[derive(Debug)]
pub enum Command {
    Serve(Box<Resolved>),
    Client(Box<crate::client_cli::ClientCommand>),
    PrintConfig(Box<Resolved>),
    Help,
    Version,
}

/// The layer a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Env(var) => write!(f, "environment {var}"),
            Origin::Flag(flag) => write!(f, "flag --{flag}"),
        }
    }
}

/// The effective configuration and, per key, where its value came from.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub config: Config,
    pub origins: BTreeMap<&'static str, Origin>,
    /// The layers it came from, to resolve again at a reload.
    pub config_file: Option<PathBuf>,
    flags: Vec<(String, String)>,
    env: Vec<(String, String)>,
}

/// One setting: its TOML key (also the `RON_` variable, upper-cased), its flag, and how
/// a textual value applies to the configuration.
struct Setting {
    key: &'static str,
    flag: &'static str,
    apply: fn(&mut Config, &str, Layer) -> Result<(), String>,
}

/// Lists (tokens) append when repeated as flags and replace otherwise.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layer {
    Env,
    Flag,
}

fn addr(v: &str) -> Result<std::net::SocketAddr, String> {
    v.parse().map_err(|_| format!("invalid address {v:?}"))
}

fn num<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("invalid number {v:?}"))
}

fn size(v: &str) -> Result<u64, String> {
    parse_size(v).map_err(|e| e.to_string())
}

fn boolean(v: &str) -> Result<bool, String> {
    match v {
        "" | "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("invalid boolean {v:?} (true or false)")),
    }
}

const SETTINGS: &[Setting] = &[
    Setting {
        key: "data_dir",
        flag: "data-dir",
        apply: |c, v, _| {
            c.data_dir = PathBuf::from(v);
            Ok(())
        },
    },
    Setting {
        key: "http",
        flag: "http",
        apply: |c, v, _| {
            c.http = addr(v)?;
            Ok(())
        },
    },
    Setting {
        key: "oap",
        flag: "oap",
        apply: |c, v, _| {
            c.oap = addr(v)?;
            Ok(())
        },
    },
    Setting {
        key: "admin",
        flag: "admin",
        apply: |c, v, _| {
            c.admin = addr(v)?;
            Ok(())
        },
    },
    Setting {
        key: "shards",
        flag: "shards",
        apply: |c, v, _| {
            c.shards = num(v)?;
            Ok(())
        },
    },
    Setting {
        key: "cache_bytes",
        flag: "cache-bytes",
        apply: |c, v, _| {
            c.cache_bytes = size(v)?;
            Ok(())
        },
    },
    Setting {
        key: "object_bytes_max",
        flag: "max-object-bytes",
        apply: |c, v, _| {
            c.object_bytes_max = size(v)?;
            Ok(())
        },
    },
    Setting {
        key: "head_bytes_max",
        flag: "head-bytes-max",
        apply: |c, v, _| {
            c.head_bytes_max = size(v)? as usize;
            Ok(())
        },
    },
    Setting {
        key: "header_timeout_ms",
        flag: "header-timeout-ms",
        apply: |c, v, _| {
            c.header_timeout_ms = num(v)?;
            Ok(())
        },
    },
    Setting {
        key: "idle_timeout_ms",
        flag: "idle-timeout-ms",
        apply: |c, v, _| {
            c.idle_timeout_ms = num(v)?;
            Ok(())
        },
    },
    Setting {
        key: "body_timeout_ms",
        flag: "body-timeout-ms",
        apply: |c, v, _| {
            c.body_timeout_ms = num(v)?;
            Ok(())
        },
    },
    Setting {
        key: "connections_max",
        flag: "max-connections",
        apply: |c, v, _| {
            c.connections_max = num(v)?;
            Ok(())
        },
    },
    Setting {
        key: "inflight_max",
        flag: "max-inflight",
        apply: |c, v, _| {
            c.inflight_max = num(v)?;
            Ok(())
        },
    },
    Setting {
        key: "tokens",
        flag: "token",
        apply: |c, v, layer| {
            if layer == Layer::Flag {
                c.tokens.push(v.to_owned());
            } else {
                c.tokens = v
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(String::from)
                    .collect();
            }
            Ok(())
        },
    },
    Setting {
        key: "allow_open_writes",
        flag: "allow-open-writes",
        apply: |c, v, _| {
            c.allow_open_writes = boolean(v)?;
            Ok(())
        },
    },
    Setting {
        key: "admin_token",
        flag: "admin-token",
        apply: |c, v, _| {
            c.admin_token = Some(v.to_owned());
            Ok(())
        },
    },
    Setting {
        key: "drain_timeout_ms",
        flag: "drain-timeout-ms",
        apply: |c, v, _| {
            c.drain_timeout_ms = num(v)?;
            Ok(())
        },
    },
    Setting {
        key: "meta_cache_bytes",
        flag: "meta-cache-bytes",
        apply: |c, v, _| {
            c.meta_cache_bytes = size(v)?;
            Ok(())
        },
    },
    Setting {
        key: "open_files_max",
        flag: "open-files-max",
        apply: |c, v, _| {
            c.open_files_max = num(v)?;
            Ok(())
        },
    },
    Setting {
        key: "index_bytes_max",
        flag: "index-bytes-max",
        apply: |c, v, _| {
            c.index_bytes_max = size(v)?;
            Ok(())
        },
    },
    Setting {
        key: "oap_max_inflight",
        flag: "oap-max-inflight",
        apply: |c, v, _| {
            c.oap_max_inflight = num(v)?;
            Ok(())
        },
    },
    Setting {
        key: "oap_max_frame",
        flag: "oap-max-frame",
        apply: |c, v, _| {
            c.oap_max_frame = u32::try_from(size(v)?).map_err(|_| format!("{v} is too large"))?;
            Ok(())
        },
    },
    Setting {
        key: "inflate_ratio_max",
        flag: "inflate-ratio-max",
        apply: |c, v, _| {
            c.inflate_ratio_max = num(v)?;
            Ok(())
        },
    },
    Setting {
        key: "tls",
        flag: "tls",
        apply: |c, v, _| {
            c.tls = Some(addr(v)?);
            Ok(())
        },
    },
    Setting {
        key: "tls_cert",
        flag: "cert",
        apply: |c, v, _| {
            c.tls_cert = Some(PathBuf::from(v));
            Ok(())
        },
    },
    Setting {
        key: "tls_key",
        flag: "key",
        apply: |c, v, _| {
            c.tls_key = Some(PathBuf::from(v));
            Ok(())
        },
    },
    Setting {
        key: "log_format",
        flag: "log-format",
        apply: |c, v, _| {
            c.log_format = LogFormat::parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "log_level",
        flag: "log-level",
        apply: |c, v, _| {
            c.log_level = LogLevel::parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "quota_tenants_max",
        flag: "quota-tenants-max",
        apply: |c, v, _| {
            c.quota_tenants_max = num(v)?;
            Ok(())
        },
    },
];

/// Keys set only in the file (tables).
const FILE_ONLY_KEYS: [&str; 2] = ["quota_default", "tenants"];

/// Flags that take no value.
const SWITCHES: &[&str] = &["allow-open-writes"];

fn usage(message: impl Into<String>) -> ConfigError {
    ConfigError::Usage(message.into())
}

/// Parses a byte size: `4096`, `16KiB`, `256MiB`, `64GiB`, `1TiB`.
pub fn parse_size(text: &str) -> Result<u64, ConfigError> {
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
        .ok_or_else(|| {
            usage(format!(
                "invalid size {text:?} (use e.g. 4096, 16KiB, 256MiB)"
            ))
        })
}

/// Parses the command line; `env` is the process environment (passed in for tests).
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Command, ConfigError> {
    use lexopt::prelude::*;
    let args: Vec<OsString> = args.into_iter().collect();
    let first = args.first().and_then(|a| a.to_str()).unwrap_or("");
    if ["put", "get", "stat", "cert"].contains(&first) {
        let env_token = env
            .into_iter()
            .find(|(k, _)| k == "RON_TOKEN")
            .map(|(_, v)| v);
        let command = crate::client_cli::parse(first, args[1..].to_vec(), env_token)
            .map_err(|e| usage(e.to_string()))?;
        return Ok(Command::Client(Box::new(command)));
    }
    let mut parser = lexopt::Parser::from_args(args);
    let mut flags: Vec<(String, String)> = Vec::new();
    let mut words: Vec<String> = Vec::new();
    while let Some(arg) = parser.next().map_err(|e| usage(e.to_string()))? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Long(name) if SWITCHES.contains(&name) => flags.push((name.to_string(), "true".into())),
            Long(name) => {
                let name = name.to_string();
                let value = parser.value().map_err(|e| usage(e.to_string()))?;
                let value = value
                    .into_string()
                    .map_err(|_| usage(format!("--{name}: value is not UTF-8")))?;
                flags.push((name, value));
            }
            Value(word) => words.push(
                word.into_string()
                    .map_err(|_| usage("command is not UTF-8"))?,
            ),
            other => return Err(usage(other.unexpected().to_string())),
        }
    }
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["serve"] => Ok(Command::Serve(Box::new(resolve(&flags, env)?))),
        ["config", "print"] => Ok(Command::PrintConfig(Box::new(resolve(&flags, env)?))),
        ["help"] => Ok(Command::Help),
        [] => Err(usage("missing command")),
        other => Err(usage(format!("unknown command {:?}", other.join(" ")))),
    }
}

/// Applies the layers in order and records where each key's value came from.
pub fn resolve(
    flags: &[(String, String)],
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Resolved, ConfigError> {
    let mut origins: BTreeMap<&'static str, Origin> = SETTINGS
        .iter()
        .map(|s| s.key)
        .chain(FILE_ONLY_KEYS)
        .map(|key| (key, Origin::Default))
        .collect();
    let config_file = flags
        .iter()
        .rev()
        .find(|(n, _)| n == "config")
        .map(|(_, path)| PathBuf::from(path));
    let mut config = match &config_file {
        Some(path) => {
            let (config, keys) = Config::from_toml_with_keys(path)?;
            let known = SETTINGS.iter().map(|s| s.key).chain(FILE_ONLY_KEYS);
            for key in known.filter(|k| keys.iter().any(|set| set == k)) {
                origins.insert(key, Origin::File(path.clone()));
            }
            config
        }
        None => Config::default(),
    };
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("RON_"))
        .collect();
    env.sort();
    for (var, value) in env.iter().cloned() {
        let key = var["RON_".len()..].to_ascii_lowercase();
        let setting = SETTINGS
            .iter()
            .find(|s| s.key == key)
            .ok_or_else(|| usage(format!("environment {var}: unknown key {key:?}")))?;
        (setting.apply)(&mut config, &value, Layer::Env)
            .map_err(|e| usage(format!("environment {var} (key {key}): {e}")))?;
        origins.insert(setting.key, Origin::Env(var));
    }
    for (flag, value) in flags.iter().filter(|(n, _)| n != "config") {
        let setting = SETTINGS
            .iter()
            .find(|s| s.flag == flag)
            .ok_or_else(|| usage(format!("unknown option --{flag}")))?;
        (setting.apply)(&mut config, value, Layer::Flag)
            .map_err(|e| usage(format!("--{flag} (key {}): {e}", setting.key)))?;
        origins.insert(setting.key, Origin::Flag(flag.clone()));
    }
    Ok(Resolved {
        config,
        origins,
        config_file,
        flags: flags.to_vec(),
        env,
    })
}

impl Resolved {
    /// The same layers read again (the file may have changed), validated.
    pub fn reload(&self) -> Result<Resolved, ConfigError> {
        let again = resolve(&self.flags, self.env.clone())?;
        again.config.validate()?;
        Ok(again)
    }

    /// The effective configuration as TOML, each line annotated with its origin.
    /// Tokens are redacted.
    pub fn render(&self) -> String {
        let mut shown = self.config.clone();
        shown.tokens = shown
            .tokens
            .iter()
            .map(|_| "<redacted>".to_string())
            .collect();
        shown.admin_token = shown.admin_token.as_ref().map(|_| "<redacted>".to_string());
        for tenant in shown.tenants.values_mut() {
            tenant
                .tokens
                .iter_mut()
                .for_each(|t| *t = "<redacted>".into());
        }
        let text = toml::to_string(&shown).unwrap_or_default();
        let mut out = String::from(
            "# effective configuration: defaults < file < RON_* environment < flags\n",
        );
        for line in text.lines() {
            let key = match line.strip_prefix('[') {
                Some(table) => table.trim_end_matches(']').split('.').next().unwrap_or(""),
                None => line.split(" = ").next().unwrap_or(""),
            };
            match self.origins.get(key) {
                Some(origin) => out.push_str(&format!("{line:<44} # {origin}\n")),
                None => out.push_str(&format!("{line}\n")),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn flags_override_defaults() {
        let Command::Serve(c) = parse(
            args(&[
                "serve",
                "--shards",
                "3",
                "--cache-bytes",
                "64MiB",
                "--token",
                "t1",
                "--token",
                "t2",
                "--http",
                "127.0.0.1:1",
            ]),
            no_env(),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(c.config.shards, 3);
        assert_eq!(c.config.cache_bytes, 64 << 20);
        assert_eq!(c.config.tokens, vec!["t1", "t2"]);
        assert_eq!(c.config.http.port(), 1);
    }

    #[test]
    fn layers_apply_in_order_and_record_their_origin() {
        let dir = std::env::temp_dir().join(format!("ron-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ron.toml");
        std::fs::write(
            &file,
            "shards = 2\ncache_bytes = 1024\nidle_timeout_ms = 5\n\
             [tenants.edge]\ntokens = [\"edge-secret\"]\nrequests_per_s = 5\n",
        )
        .unwrap();
        let file_arg = file.to_string_lossy().to_string();
        let Command::PrintConfig(r) = parse(
            args(&[
                "config",
                "print",
                "--config",
                &file_arg,
                "--cache-bytes",
                "2KiB",
            ]),
            env(&[
                ("RON_SHARDS", "4"),
                ("RON_CACHE_BYTES", "3KiB"),
                ("RON_TOKENS", "a, b"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(r.config.shards, 4, "environment over file");
        assert_eq!(r.config.cache_bytes, 2048, "flag over environment");
        assert_eq!(r.config.idle_timeout_ms, 5, "file over default");
        assert_eq!(r.config.tokens, vec!["a", "b"]);
        assert_eq!(r.origins["shards"], Origin::Env("RON_SHARDS".into()));
        assert_eq!(r.origins["cache_bytes"], Origin::Flag("cache-bytes".into()));
        assert_eq!(r.origins["idle_timeout_ms"], Origin::File(file.clone()));
        assert_eq!(r.origins["http"], Origin::Default);
        let text = r.render();
        assert!(text.contains("# environment RON_SHARDS"), "{text}");
        assert!(
            text.contains("tokens = [\"<redacted>\", \"<redacted>\"]"),
            "{text}"
        );
        assert!(!text.contains("\"a\""), "tokens leaked: {text}");
        assert!(
            !text.contains("edge-secret"),
            "tenant tokens leaked: {text}"
        );
        assert!(text.contains("[tenants.edge]"), "{text}");
        assert!(text.contains("# file "), "{text}");
        assert_eq!(r.origins["tenants"], Origin::File(file.clone()));
        assert_eq!(r.origins["quota_default"], Origin::Default);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_name_the_key_and_the_layer() {
        let e = parse(args(&["serve", "--shards", "x"]), no_env())
            .unwrap_err()
            .to_string();
        assert_eq!(e, "--shards (key shards): invalid number \"x\"");
        let e = parse(args(&["serve", "--nope", "1"]), no_env())
            .unwrap_err()
            .to_string();
        assert_eq!(e, "unknown option --nope");
        let e = parse(args(&["serve"]), env(&[("RON_SHARDZ", "1")]))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "environment RON_SHARDZ: unknown key \"shardz\"");
        let e = parse(args(&["serve"]), env(&[("RON_HTTP", "nowhere")]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "environment RON_HTTP (key http): invalid address \"nowhere\""
        );
        let e = parse(args(&["frobnicate"]), no_env())
            .unwrap_err()
            .to_string();
        assert_eq!(e, "unknown command \"frobnicate\"");
        assert!(matches!(
            parse(args(&["--help"]), no_env()).unwrap(),
            Command::Help
        ));
    }

    #[test]
    fn every_setting_is_a_config_key() {
        let with_all = Config {
            admin_token: Some("x".into()),
            tls: Some("127.0.0.1:1".parse().unwrap()),
            tls_cert: Some("c".into()),
            tls_key: Some("k".into()),
            ..Config::default()
        };
        let rendered = toml::to_string(&with_all).unwrap();
        for s in SETTINGS {
            assert!(
                rendered
                    .lines()
                    .any(|l| l.starts_with(&format!("{} = ", s.key))),
                "{}",
                s.key
            );
        }
        let top_level = rendered.lines().take_while(|l| !l.starts_with('['));
        assert_eq!(
            top_level.filter(|l| l.contains(" = ")).count(),
            SETTINGS.len()
        );
        for table in FILE_ONLY_KEYS {
            let text = toml::to_string(&Config {
                tenants: [("t".to_string(), Default::default())].into(),
                ..Config::default()
            })
            .unwrap();
            assert!(text.contains(&format!("[{table}")), "{table} in\n{text}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("16KiB").unwrap(), 16384);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert!(parse_size("2GB").is_err());
        assert!(parse_size("99999999TiB").is_err());
    }
}
