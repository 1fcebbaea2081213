//! The command line and the configuration layers.
//!
//! Precedence, lowest first: embedded defaults, the TOML file (`--config`), `RON_*`
//! environment variables (`RON_SHARDS=4` sets `shards`), flags. Every setting has one
//! parser, whatever layer its value comes from (the key table, [`crate::config::keys`]),
//! so a bad value is reported the same way with the key and the layer named. `ron config
//! print` shows the result and, per key, the layer it came from. The client commands
//! (`ron put | get | stat | cert | repair | scrub | placement`) are parsed by `ron_client::cli`; the variables the
//! client reads (`RON_TOKEN`) are not the node's.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::sync::LazyLock;

pub use crate::config::parse_size;
use crate::config::{disk, keys, memory, Config, ConfigError, FILE_ONLY_KEYS, KEYS};

const HELP_HEAD: &str = "\
ron — the RustyOnions data-plane node

USAGE:
  ron serve [OPTIONS]          run a node (embedded defaults work on a fresh machine)
  ron config print [OPTIONS]   show the effective configuration and where each value came from
  ron config sample [OPTIONS]  a configuration file of every key with its meaning and default
                               (keys given as OPTIONS are set, the rest commented)
  ron doctor [OPTIONS] [--unit ron.service]
                               check this host for the configuration (io_uring, limits, CPUs,
                               data dir); exits 1 if `ron serve` would refuse to start. With
                               --unit, as that systemd unit runs the node: its User=,
                               LimitMEMLOCK= and LimitNOFILE= (run it as root)
  ron help | --help            this text
  ron --version

CONFIGURATION, lowest precedence first: embedded defaults, the TOML file (--config),
RON_* environment variables (the key in upper case: RON_SHARDS=4, RON_TOKENS=a,b), flags.

OPTIONS (defaults in brackets; the TOML key is the flag with '_' for '-' unless given):
  --config FILE               TOML file with any of the keys below
";

const HELP_TAIL: &str = "
QUOTAS AND TENANTS (file only; reloaded on SIGHUP and when the file changes):
  [quota_default]             requests_per_s, requests_burst, bytes_per_s, bytes_burst
                              for every tenant not named below (0 = unlimited)
  [tenants.NAME]              tokens = [..] (required: they identify NAME, and may write) and
                              the same limits

SIZE accepts a plain number of bytes or a suffix: KiB, MiB, GiB, TiB.

EXIT CODES: 0 clean stop (SIGINT/SIGTERM); 1 runtime failure or a refusal to start the host
causes (e.g. a data dir in use, a port taken, a preflight check); 2 an error in the command
line, the file or RON_* variables, or a configuration the node refuses (e.g. the write rule).
";

/// `ron help` for the node: the options are generated from the key table.
pub static HELP: LazyLock<String> =
    LazyLock::new(|| format!("{HELP_HEAD}{}{HELP_TAIL}", keys::options_help()));

#[derive(Debug)]
pub enum Command {
    Serve(Box<Resolved>),
    Client(Box<ron_client::cli::ClientCommand>),
    PrintConfig(Box<Resolved>),
    SampleConfig(Box<Resolved>),
    /// `ron doctor`, as `unit` (a systemd unit's name or file) would run the node.
    Doctor {
        resolved: Box<Resolved>,
        unit: Option<String>,
    },
    Help,
    Version,
}

/// The layer a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    /// A default sized for this machine at start (`cache_bytes = "auto"`): how.
    Auto(String),
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
            Origin::Auto(why) => write!(f, "auto: {why}"),
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

fn usage(message: impl Into<String>) -> ConfigError {
    ConfigError::Usage(message.into())
}

/// Parses the command line; `env` is the process environment (passed in for tests).
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Command, ConfigError> {
    let args: Vec<OsString> = args.into_iter().collect();
    let first = args.first().and_then(|a| a.to_str()).unwrap_or("");
    if ron_client::cli::COMMANDS.contains(&first) {
        let command =
            ron_client::cli::parse_with_env(args, env).map_err(|e| usage(e.to_string()))?;
        return Ok(Command::Client(Box::new(command)));
    }
    let (words, flags) = match read_args(args)? {
        Args::Words(words, flags) => (words, flags),
        Args::Done(command) => return Ok(command),
    };
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["serve"] => Ok(Command::Serve(Box::new(resolve(&flags, env)?))),
        ["config", "print"] => Ok(Command::PrintConfig(Box::new(resolve(&flags, env)?))),
        ["config", "sample"] => Ok(Command::SampleConfig(Box::new(resolve(&flags, env)?))),
        ["doctor"] => {
            let (unit, flags): (Vec<_>, Vec<_>) = flags.into_iter().partition(|(n, _)| n == "unit");
            Ok(Command::Doctor {
                resolved: Box::new(resolve(&flags, env)?),
                unit: unit.into_iter().last().map(|(_, v)| v),
            })
        }
        ["help"] => Ok(Command::Help),
        [] => Err(usage("missing command")),
        other => Err(usage(format!("unknown command {:?}", other.join(" ")))),
    }
}

/// A node command line, read.
enum Args {
    /// The command words and the flags with their values, in order.
    Words(Vec<String>, Vec<(String, String)>),
    /// `--help` or `--version`: nothing more to read.
    Done(Command),
}

fn read_args(args: Vec<OsString>) -> Result<Args, ConfigError> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut flags: Vec<(String, String)> = Vec::new();
    let mut words: Vec<String> = Vec::new();
    while let Some(arg) = parser.next().map_err(|e| usage(e.to_string()))? {
        match arg {
            Short('h') | Long("help") => return Ok(Args::Done(Command::Help)),
            Short('V') | Long("version") => return Ok(Args::Done(Command::Version)),
            Long(name) if keys::find_flag(name).is_some_and(|k| k.is_switch()) => {
                flags.push((name.to_string(), "true".into()))
            }
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
    Ok(Args::Words(words, flags))
}

/// Whether a variable is the node's: `RON_*`, apart from the client's own
/// (`ron_client::cli::ENV_VARS`, e.g. `RON_TOKEN`).
fn is_node_var(var: &str) -> bool {
    var.starts_with("RON_") && !ron_client::cli::ENV_VARS.contains(&var)
}

/// Applies the layers in order and records where each key's value came from.
pub fn resolve(
    flags: &[(String, String)],
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Resolved, ConfigError> {
    let mut origins: BTreeMap<&'static str, Origin> = KEYS
        .iter()
        .map(|k| k.key)
        .chain(FILE_ONLY_KEYS)
        .map(|key| (key, Origin::Default))
        .collect();
    let config_file = flags
        .iter()
        .rev()
        .find(|(n, _)| n == "config")
        .map(|(_, path)| PathBuf::from(path));
    let mut config = Config::default();
    if let Some(path) = &config_file {
        for key in config.apply_file(path)? {
            origins.insert(key, Origin::File(path.clone()));
        }
    }
    let mut env: Vec<(String, String)> = env.into_iter().filter(|(k, _)| is_node_var(k)).collect();
    env.sort();
    apply_env(&mut config, &mut origins, &env)?;
    apply_flags(&mut config, &mut origins, flags)?;
    if config.cache_bytes == 0 {
        let limit = memory::memory_limit();
        let (bytes, why) = memory::auto_cache_bytes(limit.as_ref());
        config.cache_bytes = bytes;
        origins.insert("cache_bytes", Origin::Auto(why));
    }
    if config.io_memory_bytes == 0 {
        let (bytes, why) = memory::auto_io_memory_bytes(config.cache_bytes, config.shard_count());
        config.io_memory_bytes = bytes;
        origins.insert("io_memory_bytes", Origin::Auto(why));
    }
    if config.fetched_bytes_max == 0 {
        let (bytes, why) = disk::auto_fetched_bytes(&config.data_dirs, config.ec_params());
        config.fetched_bytes_max = bytes;
        origins.insert("fetched_bytes_max", Origin::Auto(why));
    }
    if config.replicas == 0 {
        config.replicas = config.replicas_target();
        let why = match config.p2p {
            Some(_) => "3 in a network (--p2p)",
            None => "1 without --p2p",
        };
        origins.insert("replicas", Origin::Auto(why.into()));
    }
    if config.ec.is_none() {
        let ec = config.ec_params();
        config.ec = Some(ec);
        let dirs = config.data_dirs.len();
        let why = format!(
            "{ec} for {dirs} data dir{}",
            if dirs == 1 { "" } else { "s" }
        );
        origins.insert("ec", Origin::Auto(why));
    }
    Ok(Resolved {
        config,
        origins,
        config_file,
        flags: flags.to_vec(),
        env,
    })
}

/// The `RON_*` layer: `RON_CACHE_BYTES` sets `cache_bytes`.
fn apply_env(
    config: &mut Config,
    origins: &mut BTreeMap<&'static str, Origin>,
    env: &[(String, String)],
) -> Result<(), ConfigError> {
    for (var, value) in env {
        let key = var["RON_".len()..].to_ascii_lowercase();
        let setting = keys::find(&key)
            .ok_or_else(|| usage(format!("environment {var}: unknown key {key:?}")))?;
        (setting.apply)(config, keys::Value::Text(value)).map_err(|reason| ConfigError::Env {
            var: var.clone(),
            key: setting.key,
            reason,
        })?;
        origins.insert(setting.key, Origin::Env(var.clone()));
    }
    Ok(())
}

/// The flags, in order (`--config` was read first).
fn apply_flags(
    config: &mut Config,
    origins: &mut BTreeMap<&'static str, Origin>,
    flags: &[(String, String)],
) -> Result<(), ConfigError> {
    for (flag, value) in flags.iter().filter(|(n, _)| n != "config") {
        let setting =
            keys::find_flag(flag).ok_or_else(|| usage(format!("unknown option --{flag}")))?;
        if !matches!(origins.get(setting.key), Some(Origin::Flag(_))) {
            // A list given by flags replaces what the layers below set (a scalar key
            // refuses the empty list and is left as it is).
            let _ = (setting.apply)(config, keys::Value::List(&[]));
        }
        (setting.apply)(config, keys::Value::Flag(value)).map_err(|reason| ConfigError::Flag {
            flag: flag.clone(),
            key: setting.key,
            reason,
        })?;
        origins.insert(setting.key, Origin::Flag(flag.clone()));
    }
    Ok(())
}

impl Resolved {
    /// `ron config sample`: every key, those not at their default written out.
    pub fn sample(&self) -> String {
        crate::config::sample::render(&self.config, |key| {
            self.origins
                .get(key)
                .is_some_and(|origin| !matches!(origin, Origin::Default | Origin::Auto(_)))
        })
    }

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
        // Top-level lines and table headers carry an origin; lines inside a table
        // (a tenant's `tokens`) are not the top-level key of the same name.
        let mut in_table = false;
        for line in text.lines() {
            let key = match line.strip_prefix('[') {
                Some(table) => {
                    in_table = true;
                    table.trim_end_matches(']').split('.').next().unwrap_or("")
                }
                None if in_table => "",
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
    fn a_list_given_by_flags_replaces_the_one_below_and_repeated_flags_add_to_it() {
        let dir = std::env::temp_dir().join(format!("ron-cli-lists-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ron.toml");
        std::fs::write(
            &file,
            "data_dirs = [\"/f0\", \"/f1\"]\ntokens = [\"file\"]\n",
        )
        .unwrap();
        let file_arg = file.to_string_lossy().to_string();
        let resolved = |extra: &[&str]| {
            let mut all = vec!["config", "print", "--config", &file_arg];
            all.extend_from_slice(extra);
            let Command::PrintConfig(r) = parse(args(&all), no_env()).unwrap() else {
                panic!()
            };
            r.config
        };
        let from_file = resolved(&[]);
        assert_eq!(
            from_file.data_dirs,
            vec![PathBuf::from("/f0"), PathBuf::from("/f1")]
        );
        assert_eq!(from_file.tokens, vec!["file"]);
        let flagged = resolved(&["--data-dir", "/a", "--token", "t", "--data-dir", "/b"]);
        assert_eq!(
            flagged.data_dirs,
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert_eq!(flagged.tokens, vec!["t"]);
        let Command::Serve(c) = parse(args(&["serve"]), no_env()).unwrap() else {
            panic!()
        };
        assert_eq!(c.config.data_dirs, vec![PathBuf::from("./ron-data")]);
        let _ = std::fs::remove_dir_all(&dir);
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
        assert!(
            text.contains("\ntokens = [\"<redacted>\"]\n"),
            "a tenant's tokens carry no origin: {text}"
        );
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
            p2p: Some("127.0.0.1:2".parse().unwrap()),
            origin: Some("http://127.0.0.1:3".into()),
            oap_advertised_port: Some(4),
            zone: Some("eu".into()),
            denylist_dir: Some("/etc/ron/deny".into()),
            origin_ca: Some("/etc/ron/origin-ca.pem".into()),
            p2p_network_key_file: Some("/etc/ron/swarm.key".into()),
            ..Config::default()
        };
        let rendered = toml::to_string(&with_all).unwrap();
        for s in KEYS {
            assert!(
                rendered
                    .lines()
                    .any(|l| l.starts_with(&format!("{} = ", s.key))),
                "{}",
                s.key
            );
        }
        let top_level = rendered.lines().take_while(|l| !l.starts_with('['));
        assert_eq!(top_level.filter(|l| l.contains(" = ")).count(), KEYS.len());
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
    fn the_clients_variables_are_not_the_nodes() {
        let Command::Serve(r) = parse(args(&["serve"]), env(&[("RON_TOKEN", "x")])).unwrap() else {
            panic!()
        };
        assert!(r.config.tokens.is_empty());
        assert!(!r.origins.values().any(|o| matches!(o, Origin::Env(_))));
        let Command::Client(c) = parse(
            args(&["put", "-"]),
            env(&[("RON_TOKEN", "x"), ("RON_SHARDZ", "1")]),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(c.options.token.as_deref(), Some("x"));
    }

    #[test]
    fn help_lists_every_flag_with_its_default() {
        assert!(HELP.starts_with("ron — the RustyOnions data-plane node\n"));
        assert!(HELP.contains(
            "  --config FILE               TOML file with any of the keys below\n  --data-dir DIR              data directory, one per disk (repeatable; key data_dirs) [./ron-data]\n"
        ));
        for line in [
            "  --cert FILE                 PEM certificate chain for --tls (reloaded when it or the key changes, or on SIGHUP; key tls_cert)\n",
            "  --max-inflight N            requests in flight per shard; more get 503 (key inflight_max) [4096]\n",
            "  --token TOKEN               a bearer token allowed to write (repeatable; key tokens)\n",
            "  --allow-open-writes         allow writes without tokens on a non-loopback listener\n",
            "  --quota-tenants-max N       tenants with token buckets kept per shard [100000]\n\nQUOTAS AND TENANTS",
        ] {
            assert!(HELP.contains(line), "{line}");
        }
        for key in KEYS {
            assert!(HELP.contains(&format!("  --{} ", key.flag)), "{}", key.key);
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
