//! `ron-bench network`: its options and the run.

use std::ffi::OsString;
use std::path::PathBuf;

use ron_bench::network::figures::{self, Plan};
use ron_bench::network::{Network, NetworkConfig};

pub const HELP: &str = "\
ron-bench network — N ron nodes on loopback in Z zones: copies, findability and cost

USAGE:
  ron-bench network --ron PATH [OPTIONS]

Starts the nodes (`ron serve --shards 1 --p2p`, bootstrapped from the first few), puts
objects on random nodes, and reports: time to form; per node CPU, RSS, connections and
peers while quiet; each fresh object's time until another node resolves it, and resolve
latency; how many objects are short of `replicas` verified copies in as many zones over
time (`/admin/placement` of random nodes) and when the last got there; reads through
random non-holders; the same copies after kill -9 of --kill-percent of the nodes and
after a join of --join-percent more; the costs again once the network is left alone
(--settle-s, then a --quiet-s window). Kills only what it started.

OPTIONS
  --ron PATH             the ron binary (required)
  --dir DIR              data dirs and logs [a fresh dir under /var/tmp]
  --nodes N              [40]          --zones Z             [4]
  --replicas R           [3]           --bootstrap B         [3]
  --interval-ms MS       replication_interval_ms [5000]
  --peer-dead-ms MS      [10000]       --cache-bytes SIZE    [16MiB]
  --port-base PORT       first port tried [24000]
  --objects N            [100]         --size-min BYTES      [4096]
  --size-max BYTES       [262144]      --seed N              [1]
  --form-max-s SECS      longest wait for every routing table to hold 8 peers [120]
  --settle-s SECS        left alone after forming, before the quiet window, and again
                         before the closing quiet window [30]
  --calm-max-s SECS      then the longest wait until the nodes' CPU p50 is at most
                         0.5 % of a core (a network still forming its routing tables
                         would set every later figure) [120]
  --quiet-s SECS         the quiet window [10]
  --copies-wait-s SECS   longest wait for copies per phase [300]
  --reads N              reads through [40]
  --kill-percent P       [10]          --join-percent P      [10]
  --json FILE            also write the report as JSON
";

pub fn network(args: impl IntoIterator<Item = OsString>) -> Result<(), String> {
    use lexopt::prelude::*;
    let mut ron = None;
    let mut dir = None;
    let mut json = None;
    let mut config = NetworkConfig::new(PathBuf::new(), PathBuf::new(), 40, 4);
    let mut plan = Plan {
        objects: 100,
        size_min: 4_096,
        size_max: 262_144,
        seed: 1,
        form_max_s: 120.0,
        settle_s: 30.0,
        calm_max_s: 120.0,
        quiet_s: 10.0,
        copies_wait_s: 300.0,
        reads: 40,
        kill_percent: 10,
        join_percent: 10,
    };
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        let Long(flag) = arg else {
            return Err(arg.unexpected().to_string());
        };
        let flag = flag.to_string();
        let value: String = p
            .value()
            .map_err(|e| e.to_string())?
            .into_string()
            .map_err(|_| format!("--{flag}: value is not UTF-8"))?;
        match flag.as_str() {
            "ron" => ron = Some(PathBuf::from(&value)),
            "dir" => dir = Some(PathBuf::from(&value)),
            "json" => json = Some(PathBuf::from(&value)),
            "nodes" => config.nodes = num(&flag, &value)?,
            "zones" => config.zones = num(&flag, &value)?,
            "replicas" => config.replicas = num(&flag, &value)?,
            "bootstrap" => config.bootstrap = num(&flag, &value)?,
            "interval-ms" => config.replication_interval_ms = num(&flag, &value)?,
            "peer-dead-ms" => config.peer_dead_ms = num(&flag, &value)?,
            "cache-bytes" => config.cache_bytes = value.clone(),
            "port-base" => config.port_base = num(&flag, &value)?,
            "objects" => plan.objects = num(&flag, &value)?,
            "size-min" => plan.size_min = num(&flag, &value)?,
            "size-max" => plan.size_max = num(&flag, &value)?,
            "seed" => plan.seed = num(&flag, &value)?,
            "form-max-s" => plan.form_max_s = num(&flag, &value)?,
            "settle-s" => plan.settle_s = num(&flag, &value)?,
            "calm-max-s" => plan.calm_max_s = num(&flag, &value)?,
            "quiet-s" => plan.quiet_s = num(&flag, &value)?,
            "copies-wait-s" => plan.copies_wait_s = num(&flag, &value)?,
            "reads" => plan.reads = num(&flag, &value)?,
            "kill-percent" => plan.kill_percent = num(&flag, &value)?,
            "join-percent" => plan.join_percent = num(&flag, &value)?,
            other => {
                return Err(format!(
                    "unknown option --{other}; see `ron-bench network --help`"
                ))
            }
        }
    }
    config.ron = ron.ok_or("--ron PATH is required")?;
    if config.nodes < 2 || config.zones == 0 || plan.objects == 0 || plan.size_min > plan.size_max {
        return Err("--nodes ≥ 2, --zones ≥ 1, --objects ≥ 1 and --size-min ≤ --size-max".into());
    }
    config.dir = match dir {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("ron-network-{}", std::process::id())),
    };
    let mut network = Network::start(config)?;
    let report = figures::run(&mut network, &plan)?;
    print!("{}", report.text());
    if let Some(path) = json {
        std::fs::write(&path, report.json().to_string())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn num<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("--{flag}: invalid value {value:?}"))
}
