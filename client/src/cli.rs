//! `ron put | get | stat | cert | repair | scrub`: the command-line client, the dev
//! certificate, and the operator's storage requests to the admin port (`admin.rs`).
//!
//! The client speaks OAP/1 by default (verified streaming: every group is checked
//! against the requested address before its bytes are written), HTTP/1.1 with
//! `--http`, either over TLS with `--tls`. `ron get -o FILE` writes `FILE.part` and
//! renames it when the transfer verified and completed, so FILE never holds a partial
//! or unverified object. The `ron` binary (ron-engine) dispatches [`COMMANDS`] here.

use std::ffi::OsString;
use std::io::{IsTerminal, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ron_codec::Address;

use crate::admin::{self, AdminEndpoint, ADMIN_DEFAULT, ADMIN_TOKEN_VAR};
use crate::{ByteRange, Client, ClientError, Endpoint, Options, Protocol, TlsOptions};

/// The command words the client handles (`ron put ...`).
pub const COMMANDS: [&str; 6] = ["put", "get", "stat", "cert", "repair", "scrub"];

/// The environment variable holding the write token (`--token` overrides it).
pub const TOKEN_VAR: &str = "RON_TOKEN";

/// Every environment variable the client reads; the node's `RON_*` layer ignores them.
pub const ENV_VARS: [&str; 1] = [TOKEN_VAR];

pub const CLIENT_HELP: &str = "\
CLIENT:
  ron put FILE|-               store a file (or stdin); prints b3:<hex>
  ron get b3:<hex> [-o FILE] [--range FIRST-LAST]
                               fetch an object, verified against its address
  ron stat b3:<hex>            print the object's length
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

CLIENT OPTIONS:
  --server HOST:PORT          node to talk to [OAP 127.0.0.1:9444, HTTP 127.0.0.1:8080,
                              TLS 127.0.0.1:9443]
  --http                      speak HTTP/1.1 instead of OAP/1
  --tls                       use TLS (ALPN oap/1 or http/1.1); needs --ca or --insecure-dev
  --ca FILE                   PEM certificate(s) to trust for --tls
  --insecure-dev              accept any certificate (a local node with `ron cert --dev`)
  --token TOKEN               write token (or RON_TOKEN in the environment)
  --tenant N                  OAP tenant_id header field [0] (a label: quotas follow --token)
  --timeout-ms N              longest wait for any read or write [60000]
  -o, --output FILE           where `get` writes (default stdout)
  --range FIRST-LAST          inclusive byte range for `get`
  -q, --quiet                 no progress bar (drawn on stderr when stdout is a terminal)
  --admin HOST:PORT           the node's admin port, for repair, scrub and stat
                              --providers [127.0.0.1:9600]
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
    Get {
        addr: Address,
        output: Option<PathBuf>,
        range: Option<ByteRange>,
    },
    Stat(Address),
    /// `ron stat --providers`: who provides the object, from the node's DHT.
    Providers(Address),
    DevCert {
        dir: PathBuf,
        names: Vec<String>,
    },
    Repair(Address),
    Scrub(ScrubVerb),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScrubVerb {
    Status,
    Pause,
    Resume,
}

fn usage(message: impl Into<String>) -> ClientError {
    ClientError::Usage(message.into())
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
    timeout_ms: u64,
    output: Option<PathBuf>,
    range: Option<ByteRange>,
    quiet: bool,
    dev: bool,
    providers: bool,
    dir: Option<PathBuf>,
    names: Vec<String>,
    admin: Option<String>,
    admin_token: Option<String>,
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
            timeout_ms: 60_000,
            output: None,
            range: None,
            quiet: false,
            providers: false,
            dev: false,
            dir: None,
            names: Vec::new(),
            admin: None,
            admin_token: None,
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
            "--out" => self.dir = Some(PathBuf::from(value()?)),
            "--name" => self.names.push(value()?),
            "--admin" => self.admin = Some(value()?),
            "--admin-token" => self.admin_token = Some(value()?),
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
            "get" => Action::Get {
                addr: address(&words)?,
                output: self.output.take(),
                range: self.range.take(),
            },
            "stat" if self.providers => Action::Providers(address(&words)?),
            "stat" => Action::Stat(address(&words)?),
            "cert" if self.dev && words.is_empty() => Action::DevCert {
                dir: self
                    .dir
                    .take()
                    .unwrap_or_else(|| PathBuf::from("ron-dev-tls")),
                names: std::mem::take(&mut self.names),
            },
            "cert" => return Err(usage("only `ron cert --dev` is supported")),
            "repair" => Action::Repair(address(&words)?),
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
    match command.action {
        Action::DevCert { dir, names } => write_dev_cert(&dir, &names),
        Action::Put(path) => {
            let mut client = Client::connect(&command.endpoint, command.options)?;
            let stored = match path {
                Some(path) => {
                    bar.total = std::fs::metadata(&path).ok().map(|m| m.len());
                    client.put_file(&path, &mut |n| bar.update(n))?
                }
                None => {
                    let (mut spool, addr, len) = spool_stdin()?;
                    bar.total = Some(len);
                    client.put(&mut spool, addr, len, &mut |n| bar.update(n))?
                }
            };
            bar.finish();
            println!("{}", stored.addr);
            Ok(())
        }
        Action::Get {
            addr,
            output,
            range,
        } => {
            let mut client = Client::connect(&command.endpoint, command.options)?;
            let result = match &output {
                None => {
                    let stdout = std::io::stdout();
                    let mut sink = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
                    let got = client.get(addr, range, &mut sink, &mut |n| bar.update(n));
                    sink.flush().map_err(ClientError::Output)?;
                    got.map(drop)
                }
                Some(path) => get_to_file(&mut client, addr, range, path, &mut bar),
            };
            bar.finish();
            result
        }
        Action::Stat(addr) => {
            let mut client = Client::connect(&command.endpoint, command.options)?;
            let len = client.stat(addr)?;
            println!("{addr} {len}");
            Ok(())
        }
        Action::Providers(addr) => {
            let path = format!("/resolve?hash={addr}");
            let answer = admin::request(&command.admin, "GET", &path, command.options.timeout)?;
            print_providers(answer)
        }
        Action::Repair(addr) => {
            // The node waits up to a minute for the check; so does this, and a little more.
            let timeout = command.options.timeout.max(REPAIR_TIMEOUT);
            let path = format!("/admin/repair/{addr}");
            let answer = admin::request(&command.admin, "POST", &path, timeout)?;
            print_admin_answer(answer, |body| {
                let outcome = serde_json::from_str::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v["outcome"].as_str().map(String::from));
                matches!(outcome.as_deref(), Some("healthy" | "repaired"))
            })
        }
        Action::Scrub(verb) => {
            let (method, path) = match verb {
                ScrubVerb::Status => ("GET", "/admin/scrub"),
                ScrubVerb::Pause => ("POST", "/admin/scrub/pause"),
                ScrubVerb::Resume => ("POST", "/admin/scrub/resume"),
            };
            let answer = admin::request(&command.admin, method, path, command.options.timeout)?;
            print_admin_answer(answer, |_| true)
        }
    }
}

/// How long `ron repair` waits for its answer at least (the node waits 60 s for the
/// check).
const REPAIR_TIMEOUT: Duration = Duration::from_secs(70);

/// Prints one line per provider of a `/resolve` answer: node id, OAP address (`-` if
/// unknown), and `local` for the node asked. None found is an error (exit 1).
fn print_providers(answer: admin::AdminAnswer) -> Result<(), ClientError> {
    let value: Option<serde_json::Value> = serde_json::from_str(&answer.body).ok();
    let providers = value
        .as_ref()
        .and_then(|v| v["providers"].as_array())
        .filter(|_| answer.status == 200);
    let Some(providers) = providers else {
        return print_admin_answer(answer, |_| false);
    };
    if providers.is_empty() {
        return Err(ClientError::Server {
            status: 404,
            code: "not_found".into(),
            message: "no provider found in the DHT".into(),
            retryable: false,
            retry_after_ms: None,
        });
    }
    for p in providers {
        let node = p["node_id"].as_str().unwrap_or("?");
        let oap = p["oap"].as_str().unwrap_or("-");
        let local = if p["local"].as_bool() == Some(true) {
            " local"
        } else {
            ""
        };
        println!("{node} {oap}{local}");
    }
    Ok(())
}

/// Prints a 2xx answer whose body `good` accepts; anything else is the node's error.
fn print_admin_answer(
    answer: admin::AdminAnswer,
    good: impl Fn(&str) -> bool,
) -> Result<(), ClientError> {
    let body = answer.body.trim_end();
    if (200..300).contains(&answer.status) && good(body) {
        println!("{body}");
        return Ok(());
    }
    Err(ClientError::Server {
        status: answer.status,
        code: "admin".into(),
        message: body.to_string(),
        retryable: answer.status == 503,
        retry_after_ms: None,
    })
}

/// Writes `path.part`, renamed to `path` once the whole transfer verified.
fn get_to_file(
    client: &mut Client,
    addr: Address,
    range: Option<ByteRange>,
    path: &Path,
    bar: &mut ProgressBar,
) -> Result<(), ClientError> {
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let file_error = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| ClientError::File { op, path, source }
    };
    let file = std::fs::File::create(&part).map_err(file_error("create", &part))?;
    let mut sink = std::io::BufWriter::with_capacity(256 * 1024, file);
    let got = client
        .get(addr, range, &mut sink, &mut |n| bar.update(n))
        .and_then(|_| sink.flush().map_err(ClientError::Output));
    if let Err(e) = got {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    std::fs::rename(&part, path).map_err(file_error("rename", path))
}

/// Copies stdin to an unnamed temp file, hashing it on the way.
fn spool_stdin() -> Result<(std::fs::File, Address, u64), ClientError> {
    let mut spool = crate::temp_file().map_err(ClientError::Output)?;
    let (addr, len) = crate::hash_copy(&mut std::io::stdin().lock(), &mut spool)?;
    spool.rewind().map_err(ClientError::Output)?;
    Ok((spool, addr, len))
}

fn write_dev_cert(dir: &Path, names: &[String]) -> Result<(), ClientError> {
    let dev = ron_io::tls::dev_certificate(names).map_err(|e| ClientError::Tls(e.to_string()))?;
    let file_error = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| ClientError::File { op, path, source }
    };
    std::fs::create_dir_all(dir).map_err(file_error("create", dir))?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    for path in [&cert, &key] {
        if path.exists() {
            return Err(usage(format!(
                "{} exists; remove it or choose another --out",
                path.display()
            )));
        }
    }
    std::fs::write(&cert, &dev.cert_pem).map_err(file_error("write", &cert))?;
    write_private(&key, dev.key_pem.as_bytes()).map_err(file_error("write", &key))?;
    println!(
        "wrote {} and {} (self-signed; localhost, 127.0.0.1, ::1{}).\nserve:   ron serve --tls 127.0.0.1:9443 --cert {} --key {}\nclient:  ron get --tls --ca {} b3:<hex>",
        cert.display(),
        key.display(),
        names.iter().map(|n| format!(", {n}")).collect::<String>(),
        cert.display(),
        key.display(),
        cert.display(),
    );
    Ok(())
}

/// Creates `path` readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

/// A one-line progress bar on stderr, redrawn at most ten times a second.
struct ProgressBar {
    enabled: bool,
    total: Option<u64>,
    started: Instant,
    drawn: Instant,
    shown: bool,
}

impl ProgressBar {
    fn new(enabled: bool) -> ProgressBar {
        let now = Instant::now();
        ProgressBar {
            enabled,
            total: None,
            started: now,
            drawn: now,
            shown: false,
        }
    }

    fn update(&mut self, done: u64) {
        // Short transfers stay quiet: the bar appears after half a second.
        if !self.enabled
            || self.started.elapsed() < Duration::from_millis(500)
            || self.drawn.elapsed() < Duration::from_millis(100)
        {
            return;
        }
        self.drawn = Instant::now();
        self.shown = true;
        let mib = done as f64 / (1 << 20) as f64;
        let rate = mib / self.started.elapsed().as_secs_f64().max(1e-3);
        let line = match self.total.filter(|t| *t > 0) {
            Some(total) => {
                let fraction = (done as f64 / total as f64).min(1.0);
                let filled = (fraction * 30.0) as usize;
                format!(
                    "\r[{:<30}] {:5.1}%  {mib:9.1} MiB  {rate:8.1} MiB/s",
                    "#".repeat(filled),
                    fraction * 100.0
                )
            }
            None => format!("\r{mib:9.1} MiB  {rate:8.1} MiB/s"),
        };
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn finish(&mut self) {
        if self.shown {
            let _ = std::io::stderr().write_all(b"\n");
        }
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
