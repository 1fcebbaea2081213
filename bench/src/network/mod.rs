//! A network of ron nodes on loopback, for the figures of replication at scale
//! (`ron-bench network`, `bench/network.sh`, and the CI-size test in
//! `engine/tests/network.rs`): N processes of `ron serve --shards 1 --p2p` in Z zones,
//! bootstrapped from the first few, which the harness loads, measures, kills with -9 and
//! joins to.
//!
//! - this file: the nodes' processes ([`Network`]: start, kill, join, stop on drop —
//!   only the processes it started, by PID);
//! - `probe`: one HTTP exchange, a metric, a process's RSS and CPU time;
//! - `figures`: the phases and what each measures ([`figures::run`]);
//! - `findable`: how soon each fresh object is resolvable, polled from its upload on;
//! - `report`: the report as text and JSON.

pub mod figures;
pub mod findable;
pub mod probe;
mod report;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for a node to answer ready after its start.
const READY_WAIT: Duration = Duration::from_secs(180);
/// Lines of a node's log shown when it does not get ready.
const LOG_TAIL_LINES: usize = 20;
/// How long one admin request may take.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What network to run.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The `ron` binary.
    pub ron: PathBuf,
    /// Where the nodes' data dirs and logs go (one dir per node).
    pub dir: PathBuf,
    pub nodes: usize,
    pub zones: usize,
    pub replicas: usize,
    /// How many of the first nodes every other node bootstraps from.
    pub bootstrap: usize,
    pub replication_interval_ms: u64,
    pub peer_dead_ms: u64,
    pub cache_bytes: String,
    /// The first port tried; each node takes four free ones from here on.
    pub port_base: u16,
    /// Further `ron serve` flags for every node.
    pub extra_args: Vec<String>,
}

impl NetworkConfig {
    /// Defaults for `nodes` nodes in `zones` zones: 3 replicas, 3 bootstrap nodes, a
    /// 5 s sweep, peers dead after 10 s, a 16 MiB cache.
    pub fn new(ron: PathBuf, dir: PathBuf, nodes: usize, zones: usize) -> NetworkConfig {
        NetworkConfig {
            ron,
            dir,
            nodes,
            zones,
            replicas: 3,
            bootstrap: 3,
            replication_interval_ms: 5_000,
            peer_dead_ms: 10_000,
            cache_bytes: "16MiB".into(),
            port_base: 24_000,
            extra_args: Vec::new(),
        }
    }
}

/// One node: its process while it runs, and where it listens.
#[derive(Debug)]
pub struct NetNode {
    pub index: usize,
    pub zone: String,
    pub http: SocketAddr,
    pub oap: SocketAddr,
    pub admin: SocketAddr,
    pub p2p: SocketAddr,
    child: Option<Child>,
}

impl NetNode {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_live(&self) -> bool {
        self.child.is_some()
    }
}

/// The running network; dropping it kills every node it started and waits for them.
#[derive(Debug)]
pub struct Network {
    pub config: NetworkConfig,
    pub nodes: Vec<NetNode>,
    next_port: u16,
}

impl Network {
    /// Starts `config.nodes` nodes — the bootstrap ones first — and waits until each
    /// answers ready.
    pub fn start(config: NetworkConfig) -> Result<Network, String> {
        std::fs::create_dir_all(&config.dir)
            .map_err(|e| format!("{}: {e}", config.dir.display()))?;
        let mut network = Network {
            next_port: config.port_base,
            nodes: Vec::with_capacity(config.nodes),
            config,
        };
        let count = network.config.nodes;
        network.add_nodes(count)?;
        Ok(network)
    }

    /// Starts `count` more nodes (in the zones round robin, bootstrapped like the
    /// others) and waits until each is ready; returns their indices.
    pub fn join(&mut self, count: usize) -> Result<Vec<usize>, String> {
        self.add_nodes(count)
    }

    /// Kills the nodes at `indices` with SIGKILL (no stop, no flush) and reaps them.
    pub fn kill(&mut self, indices: &[usize]) {
        for &i in indices {
            if let Some(mut child) = self.nodes[i].child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// The indices of the nodes running.
    pub fn live(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .filter(|n| n.is_live())
            .map(|n| n.index)
            .collect()
    }

    fn add_nodes(&mut self, count: usize) -> Result<Vec<usize>, String> {
        let first = self.nodes.len();
        let mut started = Vec::with_capacity(count);
        for index in first..first + count {
            let node = self.spawn(index)?;
            self.nodes.push(node);
            started.push(index);
            // The bootstrap nodes answer before the rest dial them.
            if index < self.config.bootstrap {
                self.wait_ready(index)?;
            }
        }
        for &index in &started {
            self.wait_ready(index)?;
        }
        Ok(started)
    }

    fn spawn(&mut self, index: usize) -> Result<NetNode, String> {
        let [http, oap, admin, p2p] = [(); 4].map(|_| self.free_port());
        let zone = format!("z{}", index % self.config.zones.max(1));
        let dir = self.config.dir.join(format!("n{index}"));
        let log = std::fs::File::create(self.config.dir.join(format!("n{index}.log")))
            .map_err(|e| format!("node {index}'s log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let config = &self.config;
        let mut command = Command::new(&config.ron);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--shards", "1", "--cache-bytes", &config.cache_bytes])
            .args([
                "--http",
                &at(http).to_string(),
                "--oap",
                &at(oap).to_string(),
            ])
            .args([
                "--admin",
                &at(admin).to_string(),
                "--p2p",
                &at(p2p).to_string(),
            ])
            .args(["--zone", &zone, "--replicas", &config.replicas.to_string()])
            .arg("--replication-interval-ms")
            .arg(config.replication_interval_ms.to_string())
            .arg("--peer-dead-ms")
            .arg(config.peer_dead_ms.to_string())
            .args(&config.extra_args);
        for peer in self.nodes.iter().take(config.bootstrap.min(index)) {
            command.arg("--peer").arg(peer.p2p.to_string());
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("{}: {e}", config.ron.display()))?;
        Ok(NetNode {
            index,
            zone,
            http: at(http),
            oap: at(oap),
            admin: at(admin),
            p2p: at(p2p),
            child: Some(child),
        })
    }

    /// A port free now on 127.0.0.1, from the configured base on.
    fn free_port(&mut self) -> u16 {
        loop {
            let port = self.next_port;
            self.next_port = self.next_port.wrapping_add(1).max(1_024);
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }

    fn wait_ready(&mut self, index: usize) -> Result<(), String> {
        let started = Instant::now();
        let admin = self.nodes[index].admin;
        let mut last = String::from("no answer yet");
        while started.elapsed() < READY_WAIT {
            if let Some(child) = self.nodes[index].child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.nodes[index].child = None;
                    let log = self.config.dir.join(format!("n{index}.log"));
                    return Err(format!(
                        "node {index} exited ({status}) before it was ready; see {}",
                        log.display()
                    ));
                }
            }
            let ready = probe::exchange(admin, "GET", "/readyz", b"", ADMIN_TIMEOUT);
            match ready {
                Ok(answer) if answer.status == 200 => return Ok(()),
                Ok(answer) => {
                    last = format!(
                        "{} {}",
                        answer.status,
                        String::from_utf8_lossy(&answer.body).trim()
                    )
                }
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = self.config.dir.join(format!("n{index}.log"));
        Err(format!(
            "node {index} not ready within {READY_WAIT:?}; its last /readyz: {last}; the end of {}:\n{}",
            log.display(),
            log_tail(&log, LOG_TAIL_LINES)
        ))
    }
}

/// The last `lines` lines of a node's log (empty when it cannot be read).
fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Network {
    fn drop(&mut self) {
        let live = self.live();
        self.kill(&live);
    }
}
