//! The command line. Precedence: embedded defaults, then `--config FILE`, then flags.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::config::{Config, ConfigError};

pub const HELP: &str = "\
ron — the RustyOnions data-plane node

USAGE:
  ron serve [OPTIONS]     run a node (embedded defaults work on a fresh machine)
  ron help | --help       this text
  ron --version

SERVE OPTIONS (defaults in brackets; each also a key in the --config TOML file):
  --config FILE               TOML file with any of the keys below (snake_case)
  --data-dir DIR              data directory [./ron-data]
  --http ADDR                 HTTP listener [127.0.0.1:8080]
  --oap ADDR                  OAP/1 listener, accepted now, served later [127.0.0.1:9444]
  --admin ADDR                admin HTTP: /healthz /readyz /metrics /version [127.0.0.1:9600]
  --shards N                  pinned shards, 0 = one per CPU [0]
  --cache-bytes SIZE          verified-group cache for the node [256MiB]
  --max-object-bytes SIZE     largest upload [64GiB]
  --head-bytes-max SIZE       largest request head [16KiB]
  --header-timeout-ms N       time to receive a whole head [10000]
  --idle-timeout-ms N         keep-alive idle time [75000]
  --body-timeout-ms N         time between body reads / writes [60000]
  --max-connections N         open connections per shard [10000]
  --max-inflight N            requests in flight per shard; more get 503 [4096]
  --token TOKEN               a bearer token allowed to write (repeatable)
  --allow-open-writes         allow writes without tokens on a non-loopback listener
  --drain-timeout-ms N        wait for in-flight requests at shutdown [10000]

SIZE accepts a plain number of bytes or a suffix: KiB, MiB, GiB, TiB.

EXIT CODES: 0 clean stop (SIGINT/SIGTERM), 1 runtime failure, 2 usage error.
";

#[derive(Debug)]
pub enum Command {
    Serve(Box<Config>),
    Help,
    Version,
}

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

pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, ConfigError> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut flags: Vec<(String, String)> = Vec::new();
    let mut subcommand = None;
    while let Some(arg) = parser.next().map_err(|e| usage(e.to_string()))? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Long("allow-open-writes") => flags.push(("allow-open-writes".into(), String::new())),
            Long(name) => {
                let name = name.to_string();
                let value = parser.value().map_err(|e| usage(e.to_string()))?;
                let value = value
                    .into_string()
                    .map_err(|_| usage(format!("--{name}: value is not UTF-8")))?;
                flags.push((name, value));
            }
            Value(word) if subcommand.is_none() => {
                subcommand = Some(
                    word.into_string()
                        .map_err(|_| usage("command is not UTF-8"))?,
                )
            }
            other => return Err(usage(other.unexpected().to_string())),
        }
    }
    match subcommand.as_deref() {
        Some("serve") => {}
        Some("help") => return Ok(Command::Help),
        Some(other) => return Err(usage(format!("unknown command {other:?}"))),
        None => return Err(usage("missing command")),
    }
    let mut config = match flags.iter().find(|(n, _)| n == "config") {
        Some((_, path)) => Config::from_toml(&PathBuf::from(path))?,
        None => Config::default(),
    };
    for (name, value) in &flags {
        apply_flag(&mut config, name, value)?;
    }
    Ok(Command::Serve(Box::new(config)))
}

fn apply_flag(config: &mut Config, name: &str, value: &str) -> Result<(), ConfigError> {
    let bad = |what: &str| usage(format!("--{name}: invalid {what} {value:?}"));
    let addr = || value.parse().map_err(|_| bad("address"));
    let number = || value.parse::<u64>().map_err(|_| bad("number"));
    match name {
        "config" => {}
        "data-dir" => config.data_dir = PathBuf::from(value),
        "http" => config.http = addr()?,
        "oap" => config.oap = addr()?,
        "admin" => config.admin = addr()?,
        "shards" => config.shards = value.parse().map_err(|_| bad("shard count"))?,
        "cache-bytes" => config.cache_bytes = parse_size(value)?,
        "max-object-bytes" => config.object_bytes_max = parse_size(value)?,
        "head-bytes-max" => config.head_bytes_max = parse_size(value)? as usize,
        "header-timeout-ms" => config.header_timeout_ms = number()?,
        "idle-timeout-ms" => config.idle_timeout_ms = number()?,
        "body-timeout-ms" => config.body_timeout_ms = number()?,
        "drain-timeout-ms" => config.drain_timeout_ms = number()?,
        "max-connections" => config.connections_max = value.parse().map_err(|_| bad("number"))?,
        "max-inflight" => config.inflight_max = value.parse().map_err(|_| bad("number"))?,
        "token" => config.tokens.push(value.to_owned()),
        "allow-open-writes" => config.allow_open_writes = true,
        other => return Err(usage(format!("unknown option --{other}"))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn flags_override_defaults() {
        let Command::Serve(c) = parse(args(&[
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
        ]))
        .unwrap() else {
            panic!()
        };
        assert_eq!(c.shards, 3);
        assert_eq!(c.cache_bytes, 64 << 20);
        assert_eq!(c.tokens, vec!["t1", "t2"]);
        assert_eq!(c.http.port(), 1);
    }

    #[test]
    fn usage_errors_name_the_problem() {
        let e = parse(args(&["serve", "--shards", "x"]))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "--shards: invalid shard count \"x\"");
        let e = parse(args(&["serve", "--nope", "1"]))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "unknown option --nope");
        let e = parse(args(&["frobnicate"])).unwrap_err().to_string();
        assert_eq!(e, "unknown command \"frobnicate\"");
        assert!(matches!(parse(args(&["--help"])).unwrap(), Command::Help));
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
