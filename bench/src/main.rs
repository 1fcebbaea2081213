//! `ron-bench` — load generator for ron (and anything that serves the same URLs).
//! See `ron-bench help` and docs/PERF.md.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ron_bench::cpu;
use ron_bench::dataset::Dataset;
use ron_bench::load::{self, RunConfig};
use ron_bench::report::{Percentiles, Report};
use ron_bench::workload::{Kind, Popularity, Proto, Workload};

mod network_cli;

const HELP: &str = "\
ron-bench — HTTP and OAP/1 load generator for ron, thread-per-core (epoll), HDR latency

USAGE:
  ron-bench run [OPTIONS]        run a workload against --target
  ron-bench dataset --dir DIR    write the dataset as DIR/o/b3:<hex> (for nginx)
  ron-bench dataset --list FILE  write its URL paths (/o/b3:<hex>), one a line, in dataset
                                 order: line i is object i, Zipf rank i (both flags may be given)
  ron-bench network --ron PATH  N nodes on loopback: copies, findability, cost per node
                                 (`ron-bench network --help`)
  ron-bench membarrier [--others LIST] [--calls N]
                                 what the barrier a glommio shard issues before each
                                 sleep costs it and every other busy thread: N barriers
                                 [20000] from the first CPU of the affinity mask with 0,
                                 1, 2, 4, … threads spinning on the next (LIST: 0,1,15)
  ron-bench help

DATASET (deterministic: object i is generated from seed+i; the same flags give the same objects)
  --objects N          objects in the dataset [100]
  --size BYTES         bytes per object [4096]
  --seed N             dataset and request seed [1]

RUN OPTIONS
  --target ADDR        server address [127.0.0.1:8080]
  --proto P            http | oap [http]; OAP reads are plain (no proofs), checked here
  --tls-insecure       TLS to the target without checking its certificate (benchmarks
                       of a `ron cert --dev` node only)
  --workload W         get | range | put | mixed [get]
  --range-bytes N      bytes per range request [65536]
  --put-size BYTES     bytes per PUT [--size]
  --write-ratio F      share of PUTs in `mixed` [0.1]
  --put-path PATH      where PUTs go; {n} becomes a unique number per PUT [/o]
  --zipf S             Zipf popularity with exponent S, object 0 the most popular
                       (default: uniform over the dataset)
  --connections N      connections in total [64]
  --depth N            requests in flight per connection (closed loop) [1]
  --rate R             open loop: R requests/s in total, latency from intended send time
  --duration SECS      measured time [10]
  --warmup SECS        unmeasured time first [2]
  --cpus LIST          CPUs to run on, e.g. 1 or 0,1 [all]
  --no-verify          do not check bodies (peak runs); on by default. HTTP bodies over
                       4 MiB are checked (or counted) as they stream in, never held whole
  --discard-bodies     with --no-verify over plain HTTP: drop each body unread (recv with
                       MSG_TRUNC: the kernel frees the bytes, nothing is copied to the
                       client), so fewer client CPUs saturate a server
  --load               upload the dataset to the target first (ron: PUT /o/b3:<hex>)
  --token T            bearer token for uploads
  --json FILE          also write the report as JSON (body_bytes_per_s: answers to the
                       requests sent in the measured window; window_body_bytes_per_s: body
                       bytes that arrived in it, right for answers longer than a run)
  --busy-cpu N         report how busy CPU N (e.g. the server's) was over the measured
                       window, from /proc/stat (JSON: busy_cpu, busy_share)
";

struct Options {
    target: String,
    workload: String,
    objects: usize,
    size: usize,
    seed: u64,
    range_bytes: u64,
    put_size: Option<usize>,
    write_ratio: f64,
    put_path: String,
    zipf: Option<f64>,
    connections: usize,
    depth: usize,
    rate: Option<f64>,
    duration: f64,
    warmup: f64,
    cpus: Option<Vec<usize>>,
    verify: bool,
    discard_bodies: bool,
    load: bool,
    token: Option<String>,
    json: Option<PathBuf>,
    busy_cpu: Option<usize>,
    dir: Option<PathBuf>,
    list: Option<PathBuf>,
    proto: Proto,
    tls: bool,
}

fn parse(args: impl IntoIterator<Item = OsString>) -> Result<(String, Options), String> {
    use lexopt::prelude::*;
    let mut o = Options {
        target: "127.0.0.1:8080".into(),
        workload: "get".into(),
        objects: 100,
        size: 4096,
        seed: 1,
        range_bytes: 65_536,
        put_size: None,
        write_ratio: 0.1,
        put_path: "/o".into(),
        zipf: None,
        connections: 64,
        depth: 1,
        rate: None,
        duration: 10.0,
        warmup: 2.0,
        cpus: None,
        verify: true,
        discard_bodies: false,
        load: false,
        token: None,
        json: None,
        busy_cpu: None,
        dir: None,
        list: None,
        proto: Proto::Http,
        tls: false,
    };
    let mut command = None;
    let mut p = lexopt::Parser::from_args(args);
    fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String> {
        v.parse()
            .map_err(|_| format!("--{flag}: invalid value {v:?}"))
    }
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        let flag = match arg {
            Long(name) => name.to_string(),
            Short('h') => "help".to_string(),
            Value(v) if command.is_none() => {
                command = Some(v.into_string().map_err(|_| "command is not UTF-8")?);
                continue;
            }
            other => return Err(other.unexpected().to_string()),
        };
        let mut value = || -> Result<String, String> {
            p.value()
                .map_err(|e| e.to_string())?
                .into_string()
                .map_err(|_| format!("--{flag}: value is not UTF-8"))
        };
        match flag.as_str() {
            "target" => o.target = value()?,
            "workload" => o.workload = value()?,
            "objects" => o.objects = num("objects", value()?)?,
            "size" => o.size = num("size", value()?)?,
            "seed" => o.seed = num("seed", value()?)?,
            "range-bytes" => o.range_bytes = num("range-bytes", value()?)?,
            "put-size" => o.put_size = Some(num("put-size", value()?)?),
            "write-ratio" => o.write_ratio = num("write-ratio", value()?)?,
            "put-path" => o.put_path = value()?,
            "zipf" => o.zipf = Some(num("zipf", value()?)?),
            "connections" => o.connections = num("connections", value()?)?,
            "depth" => o.depth = num("depth", value()?)?,
            "rate" => o.rate = Some(num("rate", value()?)?),
            "duration" => o.duration = num("duration", value()?)?,
            "warmup" => o.warmup = num("warmup", value()?)?,
            "cpus" => {
                let list = value()?;
                o.cpus = Some(
                    list.split(',')
                        .map(|c| num("cpus", c.to_string()))
                        .collect::<Result<_, _>>()?,
                );
            }
            "no-verify" => o.verify = false,
            "discard-bodies" => o.discard_bodies = true,
            "load" => o.load = true,
            "token" => o.token = Some(value()?),
            "json" => o.json = Some(PathBuf::from(value()?)),
            "busy-cpu" => o.busy_cpu = Some(num("busy-cpu", value()?)?),
            "dir" => o.dir = Some(PathBuf::from(value()?)),
            "list" => o.list = Some(PathBuf::from(value()?)),
            "proto" => {
                o.proto = match value()?.as_str() {
                    "http" => Proto::Http,
                    "oap" => Proto::Oap,
                    other => return Err(format!("--proto: {other:?} is not http or oap")),
                }
            }
            "tls-insecure" => o.tls = true,
            "help" => command = Some("help".to_string()),
            other => return Err(format!("unknown option --{other}; see `ron-bench help`")),
        }
    }
    if o.objects == 0 || o.connections == 0 || o.duration <= 0.0 {
        return Err("--objects, --connections and --duration must be positive".into());
    }
    if o.discard_bodies && (o.verify || o.proto != Proto::Http || o.tls) {
        return Err(
            "--discard-bodies needs --no-verify and plain HTTP: a body dropped unread cannot be \
             checked, and TLS records must be decrypted to be counted"
                .into(),
        );
    }
    Ok((command.unwrap_or_else(|| "help".into()), o))
}

fn workload(o: &Options) -> Result<(Workload, String), String> {
    let put = Kind::Put {
        size: o.put_size.unwrap_or(o.size),
    };
    let mix = match o.workload.as_str() {
        "get" => vec![(Kind::Get, 1)],
        "range" => vec![(
            Kind::Range {
                range_len: o.range_bytes,
            },
            1,
        )],
        "put" => vec![(put, 1)],
        "mixed" => {
            let writes = (o.write_ratio.clamp(0.0, 1.0) * 1000.0).round() as u32;
            vec![(Kind::Get, 1000 - writes), (put, writes)]
        }
        other => {
            return Err(format!(
                "unknown workload {other:?} (get, range, put, mixed)"
            ))
        }
    };
    let (popularity, name) = match o.zipf {
        Some(s) => (Popularity::zipf(o.objects, s), format!("zipf {s}")),
        None => (Popularity::Uniform, "uniform".to_string()),
    };
    let w = Workload {
        proto: o.proto,
        mix,
        popularity,
        host: o.target.clone(),
        put_path: o.put_path.clone(),
        token: o.token.clone(),
    };
    Ok((w, name))
}

fn run(o: Options) -> Result<(), String> {
    let target = o
        .target
        .parse()
        .map_err(|_| format!("--target: invalid address {:?}", o.target))?;
    let data = Dataset::generate(o.seed, o.objects, o.size);
    if o.load {
        let created = if o.proto == Proto::Http && !o.tls {
            data.load_into(target, o.token.as_deref())
                .map_err(|e| e.to_string())?
        } else {
            load_with_client(&o, &data)?
        };
        eprintln!(
            "ron-bench: loaded {} objects ({created} new)",
            data.objects.len()
        );
    }
    let (workload, popularity) = workload(&o)?;
    let cpus = o.cpus.clone().unwrap_or_else(|| {
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
    });
    let config = RunConfig {
        target,
        connections: o.connections,
        depth: o.depth,
        rate: o.rate,
        duration: Duration::from_secs_f64(o.duration),
        warmup: Duration::from_secs_f64(o.warmup),
        verify: o.verify,
        discard_bodies: o.discard_bodies,
        cpus,
        seed: o.seed,
        tls: o.tls.then(|| tls_config(o.proto)).transpose()?,
    };
    let start = Instant::now() + Duration::from_millis(50);
    let measured = start + config.warmup;
    let until = measured + config.duration;
    let sampler = o
        .busy_cpu
        .map(|cpu| std::thread::spawn(move || cpu::busy_share(cpu, measured, until)));
    let stats = load::run_from(config, workload, data, start).map_err(|e| e.to_string())?;
    let busy_share = sampler.and_then(|s| s.join().ok().flatten());
    let report = Report {
        tool: "ron-bench",
        target: o.target.clone(),
        protocol: match (o.proto, o.tls) {
            (Proto::Http, false) => "http/1.1",
            (Proto::Http, true) => "http/1.1+tls",
            (Proto::Oap, false) => "oap/1",
            (Proto::Oap, true) => "oap/1+tls",
        },
        workload: o.workload.clone(),
        popularity,
        objects: o.objects,
        object_bytes: o.size,
        mode: if o.rate.is_some() { "open" } else { "closed" },
        connections: o.connections,
        depth: o.depth,
        rate_target: o.rate,
        duration_s: o.duration,
        warmup_s: o.warmup,
        verify: o.verify,
        discard_bodies: o.discard_bodies,
        requests: stats.requests,
        req_per_s: stats.requests as f64 / o.duration,
        body_bytes_per_s: stats.body_bytes as f64 / o.duration,
        window_body_bytes_per_s: stats.window_body_bytes as f64 / o.duration,
        latency_us: Percentiles::of(&stats),
        statuses: stats.statuses.clone(),
        unexpected_statuses: stats.unexpected,
        verify_failures: stats.verify_failures,
        io_errors: stats.io_errors,
        busy_cpu: o.busy_cpu,
        busy_share,
    };
    print!("{}", report.table());
    if let Some(path) = &o.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if stats.verify_failures > 0 {
        return Err(format!(
            "{} bodies failed verification",
            stats.verify_failures
        ));
    }
    Ok(())
}

fn client_tls() -> ron_client::TlsOptions {
    ron_client::TlsOptions {
        ca: None,
        insecure_dev: true,
    }
}

fn tls_config(proto: Proto) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    let alpn: &[u8] = match proto {
        Proto::Http => b"http/1.1",
        Proto::Oap => b"oap/1",
    };
    ron_client::transport::client_config(&client_tls(), alpn).map_err(|e| e.to_string())
}

/// Uploads the dataset with the ron client (OAP or TLS targets); returns how many were new.
fn load_with_client(o: &Options, data: &Dataset) -> Result<usize, String> {
    let endpoint = ron_client::Endpoint {
        addr: o.target.clone(),
        protocol: match o.proto {
            Proto::Http => ron_client::Protocol::Http,
            Proto::Oap => ron_client::Protocol::Oap,
        },
        tls: o.tls.then(client_tls),
    };
    let options = ron_client::Options {
        token: o.token.clone(),
        ..ron_client::Options::default()
    };
    let mut client = ron_client::Client::connect(&endpoint, options).map_err(|e| e.to_string())?;
    let mut created = 0;
    for object in &data.objects {
        let mut body = &object.bytes[..];
        let stored = client
            .put(
                &mut body,
                object.addr,
                object.bytes.len() as u64,
                &mut |_| {},
            )
            .map_err(|e| e.to_string())?;
        created += usize::from(stored.created);
    }
    Ok(created)
}

/// `ron-bench dataset`: the files for another server and/or the list of URL paths.
fn dataset(o: &Options) -> Result<(), String> {
    if o.dir.is_none() && o.list.is_none() {
        return Err("dataset needs --dir or --list".into());
    }
    let data = Dataset::generate(o.seed, o.objects, o.size);
    if let Some(dir) = &o.dir {
        data.write_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    if let Some(list) = &o.list {
        std::fs::write(list, data.path_list()).map_err(|e| format!("{}: {e}", list.display()))?;
    }
    Ok(())
}

/// `ron-bench membarrier`: one line per spinner count.
fn membarrier(args: Vec<OsString>) -> Result<(), String> {
    let mut others = ron_bench::barrier::default_others()?;
    let mut calls: u32 = 20_000;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .and_then(|v| v.into_string().ok())
            .ok_or_else(|| format!("{} needs a value", flag.to_string_lossy()))?;
        match flag.to_str() {
            Some("--others") => {
                others = value
                    .split(',')
                    .map(|n| {
                        n.trim()
                            .parse()
                            .map_err(|_| format!("--others: bad count {n:?}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            Some("--calls") => {
                calls = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--calls: {value:?} is not a positive count"))?;
            }
            _ => return Err(format!("unknown flag {flag:?}; see `ron-bench help`")),
        }
    }
    for count in others {
        println!("{}", ron_bench::barrier::measure(count, calls)?.line());
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).peekable();
    let result = if args.peek().is_some_and(|a| a == "membarrier") {
        membarrier(args.skip(1).collect())
    } else if args.peek().is_some_and(|a| a == "network") {
        let rest: Vec<OsString> = args.skip(1).collect();
        match rest.iter().any(|a| a == "--help" || a == "-h") {
            true => {
                print!("{}", network_cli::HELP);
                Ok(())
            }
            false => network_cli::network(rest),
        }
    } else {
        parse(args).and_then(|(command, o)| match command.as_str() {
            "help" => {
                print!("{HELP}");
                Ok(())
            }
            "run" => run(o),
            "dataset" => dataset(&o),
            other => Err(format!("unknown command {other:?}; see `ron-bench help`")),
        })
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ron-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
