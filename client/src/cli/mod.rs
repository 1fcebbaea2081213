//! `ron put | pack | get | stat | rm | cert | repair | scrub | placement`: the command-line client, the dev
//! certificate, and the operator's storage requests to the admin port (`admin.rs`).
//! This module parses the command line and dispatches; each command is its own file.
//!
//! The client speaks OAP/1 by default (verified streaming: every group is checked
//! against the requested address before its bytes are written), HTTP/1.1 with
//! `--http`, either over TLS with `--tls`. `ron get -o FILE` writes `FILE.part` and
//! renames it when the transfer verified and completed, so FILE never holds a partial
//! or unverified object. The `ron` binary (ron-engine) dispatches [`COMMANDS`] here.

mod cert;
mod get;
mod pack;
mod progress;
mod put;
mod remove;
mod repair;
mod scrub;
mod shared;
mod stat;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use ron_codec::Address;

use crate::admin::{AdminEndpoint, ADMIN_DEFAULT, ADMIN_TOKEN_VAR};
use crate::{ByteRange, ClientError, Endpoint, Options, Protocol, TlsOptions};
use progress::ProgressBar;
pub use scrub::ScrubVerb;
use shared::usage;

/// The command words the client handles (`ron put ...`).
pub const COMMANDS: [&str; 9] = [
    "put",
    "pack",
    "get",
    "stat",
    "rm",
    "cert",
    "repair",
    "scrub",
    "placement",
];

/// The environment variable holding the write token (`--token` overrides it).
pub const TOKEN_VAR: &str = "RON_TOKEN";

/// Every environment variable the client reads; the node's `RON_*` layer ignores them.
pub const ENV_VARS: [&str; 1] = [TOKEN_VAR];

pub const CLIENT_HELP: &str = "\
CLIENT:
  ron put FILE|-               store a file (or stdin); prints b3:<hex>
  ron pack PATH [--tld TYPE] [--meta KEY=VALUE]...
                               store a file or a directory tree as a bundle: each file an
                               object (with brotli and zstd variants where they save at
                               least 5 %), then its manifest; prints the manifest's
                               b3:<hex>, which names the bundle (docs/design/bundles.md)
  ron get b3:<hex> [-o FILE] [--range FIRST-LAST]
                               fetch an object, verified against its address
  ron stat b3:<hex>            print the object's length; for a bundle's manifest, then
                               one line per entry: path, length, media type, address and
                               its variants (coding:length:address)
  ron rm b3:<hex>              remove the node's copy of the object and withdraw its DHT
                               record (through its admin port: --admin, --admin-token)
  ron stat --providers b3:<hex>
                               the nodes providing the object, from the node's DHT (its
                               admin port): one line each, node id and OAP address (exit 1
                               if none)
  ron cert --dev [--out DIR] [--name HOST]...
                               write a self-signed cert.pem + key.pem for local TLS
  ron repair b3:<hex>          read and check every block of the object on the node now,
                               rebuild what its parity can; prints the report (exit 1 if
                               bad blocks are left, or the node lacks the object)
  ron scrub status|pause|resume
                               the node's background scrubber: progress, or pause/resume
  ron repair --cluster b3:<hex>
                               check the object's copies on the network now (as
                               `ron placement`) and have each holder without a verified
                               copy take one; prints the report (exit 1 if fewer
                               verified copies than replicas are left)
  ron placement b3:<hex>       the nodes the placement names for the object (from the
                               node's DHT) and whether each holds a verified copy (each
                               audited: a random 64 KiB group and its proof); prints the
                               report (exit 1 if fewer verified copies than replicas)

CLIENT OPTIONS:
  --server HOST:PORT          node to talk to [OAP 127.0.0.1:9444, HTTP 127.0.0.1:8080,
                              TLS 127.0.0.1:9443]
  --http                      speak HTTP/1.1 instead of OAP/1
  --tls                       use TLS (ALPN oap/1 or http/1.1); needs --ca or --insecure-dev
  --ca FILE                   PEM certificate(s) to trust for --tls
  --insecure-dev              accept any certificate (a local node with `ron cert --dev`)
  --token TOKEN               write token (or RON_TOKEN in the environment)
  --tenant N                  OAP tenant_id header field [0] (a label: quotas follow --token)
  --timeout-ms N              longest wait for any read or write, and for a whole
                              response head or OAP/1 frame; past it an HTTP body
                              must keep 4 KiB/s [60000]
  --copies N                  `put` waits until N nodes hold the object durably (1-16,
                              at most the network's replicas); prints how many did
  -o, --output FILE           where `get` writes (default stdout)
  --range FIRST-LAST          inclusive byte range for `get`
  -q, --quiet                 no progress bar (drawn on stderr when stdout is a terminal)
  --admin HOST:PORT           the node's admin port, for rm, repair, scrub, placement
                              and stat --providers [127.0.0.1:9600]
  --admin-token TOKEN         its admin token (or RON_ADMIN_TOKEN in the environment)

CLIENT EXIT CODES: 0 done; 1 the node answered with an error (its message is printed);
2 usage; 3 connection, TLS or protocol failure; 4 bytes failed verification (nothing
unverified was written); 5 a local file could not be read or written.
";

/// A parsed client command.
#[derive(Debug)]
pub struct ClientCommand {
    pub action: Action,
    pub endpoint: Endpoint,
    /// The admin port, for `repair` and `scrub`.
    pub admin: AdminEndpoint,
    pub options: Options,
    pub quiet: bool,
}

#[derive(Debug)]
pub enum Action {
    /// `None`: standard input.
    Put(Option<PathBuf>),
    Pack(pack::PackRequest),
    Get {
        addr: Address,
        output: Option<PathBuf>,
        range: Option<ByteRange>,
    },
    Stat(Address),
    /// `ron rm`: the node removes its copy (through its admin port).
    Remove(Address),
    /// `ron stat --providers`: who provides the object, from the node's DHT.
    Providers(Address),
    DevCert {
        dir: PathBuf,
        names: Vec<String>,
    },
    Repair(Address),
    RepairCluster(Address),
    Placement(Address),
    Scrub(ScrubVerb),
}

/// The options of a command line, as given.
#[derive(Debug)]
struct Flags {
    words: Vec<String>,
    server: Option<String>,
    http: bool,
    tls: bool,
    ca: Option<PathBuf>,
    insecure: bool,
    token: Option<String>,
    tenant: u128,
    copies: Option<u32>,
    timeout_ms: u64,
    output: Option<PathBuf>,
    range: Option<ByteRange>,
    quiet: bool,
    dev: bool,
    providers: bool,
    cluster: bool,
    dir: Option<PathBuf>,
    names: Vec<String>,
    admin: Option<String>,
    admin_token: Option<String>,
    /// `ron pack`'s manifest metadata, in order given.
    meta: Vec<(String, String)>,
}

impl Flags {
    fn new(env_token: Option<String>) -> Flags {
        Flags {
            words: Vec::new(),
            server: None,
            http: false,
            tls: false,
            ca: None,
            insecure: false,
            token: env_token,
            tenant: 0,
            copies: None,
            timeout_ms: 60_000,
            output: None,
            range: None,
            quiet: false,
            providers: false,
            cluster: false,
            dev: false,
            dir: None,
            names: Vec::new(),
            admin: None,
            admin_token: None,
            meta: Vec::new(),
        }
    }

    /// Reads every option and word, in order; the first bad one is the error.
    fn read(args: Vec<OsString>, env_token: Option<String>) -> Result<Flags, ClientError> {
        use lexopt::prelude::*;
        let mut parser = lexopt::Parser::from_args(args);
        let mut flags = Flags::new(env_token);
        loop {
            let arg = match parser.next().map_err(|e| usage(e.to_string()))? {
                None => return Ok(flags),
                Some(Long(name)) => format!("--{name}"),
                Some(Short(c)) => format!("-{c}"),
                Some(Value(word)) => {
                    flags.words.push(text(word)?);
                    continue;
                }
            };
            let mut value = || -> Result<String, ClientError> {
                text(parser.value().map_err(|e| usage(format!("{arg}: {e}")))?)
            };
            flags.set(&arg, &mut value)?;
        }
    }

    /// Applies one option; `value` takes its argument.
    fn set(
        &mut self,
        arg: &str,
        value: &mut dyn FnMut() -> Result<String, ClientError>,
    ) -> Result<(), ClientError> {
        match arg {
            "--server" => self.server = Some(value()?),
            "--http" => self.http = true,
            "--tls" => self.tls = true,
            "--ca" => self.ca = Some(PathBuf::from(value()?)),
            "--insecure-dev" => self.insecure = true,
            "--token" => self.token = Some(value()?),
            "--tenant" => {
                self.tenant = value()?
                    .parse()
                    .map_err(|_| usage("--tenant: not a number"))?
            }
            "--copies" => {
                let copies: u32 = value()?
                    .parse()
                    .map_err(|_| usage("--copies: not a number"))?;
                if !(1..=16).contains(&copies) {
                    return Err(usage("--copies: from 1 to 16"));
                }
                self.copies = Some(copies);
            }
            "--timeout-ms" => {
                self.timeout_ms = value()?
                    .parse()
                    .map_err(|_| usage("--timeout-ms: not a number"))?
            }
            "-o" | "--output" => self.output = Some(PathBuf::from(value()?)),
            "--range" => self.range = Some(parse_range(&value()?)?),
            "-q" | "--quiet" => self.quiet = true,
            "--dev" => self.dev = true,
            "--providers" => self.providers = true,
            "--cluster" => self.cluster = true,
            "--out" => self.dir = Some(PathBuf::from(value()?)),
            "--name" => self.names.push(value()?),
            "--admin" => self.admin = Some(value()?),
            "--admin-token" => self.admin_token = Some(value()?),
            "--tld" => self.meta.push(("tld".into(), value()?)),
            "--meta" => {
                let pair = value()?;
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| usage(format!("--meta {pair:?}: use KEY=VALUE")))?;
                self.meta.push((key.into(), value.into()));
            }
            other => return Err(usage(format!("unknown option {other}"))),
        }
        Ok(())
    }

    /// What `command` does with the words and options given.
    fn action(&mut self, command: &str) -> Result<Action, ClientError> {
        let words = std::mem::take(&mut self.words);
        let address = |words: &[String]| match words {
            [one] => Address::parse(one.as_bytes()).map_err(|e| usage(format!("{one}: {e}"))),
            _ => Err(usage(format!("`ron {command}` takes one address"))),
        };
        Ok(match command {
            "put" => match words.as_slice() {
                [one] if one == "-" => Action::Put(None),
                [one] => Action::Put(Some(PathBuf::from(one))),
                _ => return Err(usage("`ron put` takes one FILE, or - for stdin")),
            },
            "pack" => match words.as_slice() {
                [one] => Action::Pack(pack::PackRequest {
                    path: PathBuf::from(one),
                    meta: std::mem::take(&mut self.meta).into_iter().collect(),
                }),
                _ => return Err(usage("`ron pack` takes one PATH (a file or a directory)")),
            },
            "get" => Action::Get {
                addr: address(&words)?,
                output: self.output.take(),
                range: self.range.take(),
            },
            "stat" if self.providers => Action::Providers(address(&words)?),
            "stat" => Action::Stat(address(&words)?),
            "rm" if self.tls || self.server.is_some() => {
                return Err(usage(
                    "`ron rm` removes through the node's admin port: give --admin HOST:PORT \
                     (and --admin-token), not --server or --tls",
                ))
            }
            "rm" => Action::Remove(address(&words)?),
            "cert" if self.dev && words.is_empty() => Action::DevCert {
                dir: self
                    .dir
                    .take()
                    .unwrap_or_else(|| PathBuf::from("ron-dev-tls")),
                names: std::mem::take(&mut self.names),
            },
            "cert" => return Err(usage("only `ron cert --dev` is supported")),
            "repair" if self.cluster => Action::RepairCluster(address(&words)?),
            "repair" => Action::Repair(address(&words)?),
            "placement" => Action::Placement(address(&words)?),
            "scrub" => Action::Scrub(match words.as_slice() {
                [] => ScrubVerb::Status,
                [one] if one == "status" => ScrubVerb::Status,
                [one] if one == "pause" => ScrubVerb::Pause,
                [one] if one == "resume" => ScrubVerb::Resume,
                _ => return Err(usage("`ron scrub` takes status, pause or resume")),
            }),
            other => return Err(usage(format!("unknown command {other:?}"))),
        })
    }

    /// The node to talk to: `--server`, or the default port of the protocol.
    fn endpoint(&mut self) -> Result<Endpoint, ClientError> {
        let protocol = if self.http {
            Protocol::Http
        } else {
            Protocol::Oap
        };
        let default_server = match (self.tls, protocol) {
            (true, _) => "127.0.0.1:9443",
            (false, Protocol::Oap) => "127.0.0.1:9444",
            (false, Protocol::Http) => "127.0.0.1:8080",
        };
        if !self.tls && (self.ca.is_some() || self.insecure) {
            return Err(usage("--ca and --insecure-dev only make sense with --tls"));
        }
        Ok(Endpoint {
            addr: self
                .server
                .take()
                .unwrap_or_else(|| default_server.to_string()),
            protocol,
            tls: self.tls.then_some(TlsOptions {
                ca: self.ca.take(),
                insecure_dev: self.insecure,
            }),
        })
    }
}

fn text(v: OsString) -> Result<String, ClientError> {
    v.into_string().map_err(|_| usage("argument is not UTF-8"))
}

/// Parses `args` (after the command word) for `command` (put, get, stat, cert).
pub fn parse(
    command: &str,
    args: Vec<OsString>,
    env_token: Option<String>,
    env_admin_token: Option<String>,
) -> Result<ClientCommand, ClientError> {
    let mut flags = Flags::read(args, env_token)?;
    let action = flags.action(command)?;
    let endpoint = flags.endpoint()?;
    let admin = AdminEndpoint {
        addr: flags.admin.take().unwrap_or_else(|| ADMIN_DEFAULT.into()),
        token: flags.admin_token.take().or(env_admin_token),
    };
    let options = Options {
        token: flags.token,
        tenant_id: flags.tenant,
        timeout: Duration::from_millis(flags.timeout_ms.max(1)),
        copies: flags.copies,
        ..Options::default()
    };
    Ok(ClientCommand {
        action,
        endpoint,
        admin,
        options,
        quiet: flags.quiet,
    })
}

/// Parses a client command line: `args` starts with the command word; the token may
/// come from [`TOKEN_VAR`] in `env`.
pub fn parse_with_env(
    args: Vec<OsString>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<ClientCommand, ClientError> {
    let command = args
        .first()
        .and_then(|a| a.to_str())
        .unwrap_or("")
        .to_owned();
    let env: Vec<(String, String)> = env.into_iter().collect();
    let var = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    parse(
        &command,
        args.into_iter().skip(1).collect(),
        var(TOKEN_VAR),
        var(ADMIN_TOKEN_VAR),
    )
}

/// `FIRST-LAST`, inclusive.
fn parse_range(text: &str) -> Result<ByteRange, ClientError> {
    let bad = || usage(format!("--range {text:?}: use FIRST-LAST, e.g. 0-1023"));
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let first: u64 = a.trim().parse().map_err(|_| bad())?;
    let last: u64 = b.trim().parse().map_err(|_| bad())?;
    if first > last {
        return Err(bad());
    }
    Ok(ByteRange { first, last })
}

/// Runs a client command; the text it prints on success goes to stdout.
pub fn run(command: ClientCommand) -> Result<(), ClientError> {
    // Interactive use (stdout a terminal) gets a bar; pipes and scripts stay quiet.
    let show_progress = !command.quiet && std::io::stdout().is_terminal();
    let mut bar = ProgressBar::new(show_progress);
    let ClientCommand {
        action,
        endpoint,
        admin,
        options,
        quiet: _,
    } = command;
    let timeout = options.timeout;
    match action {
        Action::DevCert { dir, names } => cert::run(&dir, &names),
        Action::Put(path) => put::run(&endpoint, options, path, &mut bar),
        Action::Pack(request) => pack::run(&endpoint, options, request),
        Action::Get {
            addr,
            output,
            range,
        } => get::run(&endpoint, options, addr, range, output.as_deref(), &mut bar),
        Action::Stat(addr) => stat::run(&endpoint, options, addr),
        Action::Remove(addr) => remove::run(&admin, addr, timeout),
        Action::Providers(addr) => stat::providers(&admin, addr, timeout),
        Action::Repair(addr) => repair::run(&admin, addr, timeout),
        Action::Placement(addr) => repair::placement(&admin, addr, timeout),
        Action::RepairCluster(addr) => repair::cluster(&admin, addr, timeout),
        Action::Scrub(verb) => scrub::run(&admin, verb, timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn defaults_follow_protocol_and_tls() {
        let c = parse(
            "stat",
            args(&[&format!("{}", Address::of(b"x"))]),
            None,
            None,
        )
        .unwrap();
        assert_eq!(c.endpoint.addr, "127.0.0.1:9444");
        assert_eq!(c.endpoint.protocol, Protocol::Oap);
        let c = parse("put", args(&["-", "--http", "--token", "t"]), None, None).unwrap();
        assert_eq!(c.endpoint.addr, "127.0.0.1:8080");
        assert_eq!(c.options.token.as_deref(), Some("t"));
        assert!(matches!(c.action, Action::Put(None)));
        let c = parse(
            "put",
            args(&["f", "--tls", "--insecure-dev"]),
            Some("env".into()),
            None,
        )
        .unwrap();
        assert_eq!(c.endpoint.addr, "127.0.0.1:9443");
        assert_eq!(c.options.token.as_deref(), Some("env"));
    }

    #[test]
    fn bad_input_names_the_problem() {
        let e = parse("get", args(&["b3:XYZ"]), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("b3:XYZ: address must be"), "{e}");
        let e = parse(
            "get",
            args(&[&Address::of(b"").to_string(), "--range", "9-1"]),
            None,
            None,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "--range \"9-1\": use FIRST-LAST, e.g. 0-1023");
        let e = parse("put", args(&["a", "--ca", "x"]), None, None)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "--ca and --insecure-dev only make sense with --tls");
        let e = parse("cert", args(&[]), None, None).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(
            parse_range("0-99").unwrap(),
            ByteRange { first: 0, last: 99 }
        );
    }

    #[test]
    fn repair_and_scrub_talk_to_the_admin_port_with_the_admin_token() {
        let addr = Address::of(b"x").to_string();
        let c = parse("repair", args(&[&addr]), None, Some("env".into())).unwrap();
        assert!(matches!(c.action, Action::Repair(a) if a.to_string() == addr));
        assert_eq!(c.admin.addr, ADMIN_DEFAULT);
        assert_eq!(c.admin.token.as_deref(), Some("env"));
        let flags = ["--admin", "127.0.0.2:1", "--admin-token", "flag"];
        let c = parse(
            "scrub",
            args(&["pause", flags[0], flags[1], flags[2], flags[3]]),
            None,
            Some("env".into()),
        )
        .unwrap();
        assert!(matches!(c.action, Action::Scrub(ScrubVerb::Pause)));
        assert_eq!(
            (c.admin.addr.as_str(), c.admin.token.as_deref()),
            ("127.0.0.2:1", Some("flag"))
        );
        assert!(matches!(
            parse("scrub", args(&[]), None, None).unwrap().action,
            Action::Scrub(ScrubVerb::Status)
        ));
        let e = parse("scrub", args(&["now"]), None, None).unwrap_err();
        assert_eq!(e.to_string(), "`ron scrub` takes status, pause or resume");
        assert!(parse("repair", args(&[]), None, None).is_err());
    }
}
