//! The lab: `ron serve` processes, each in a network namespace of its own, joined by a
//! bridge in a hub namespace; faults injected from outside the nodes, on the bridge.
//!
//! ```text
//!   hub ns:  br0 10.77.0.254/24 (the test's clients talk from here)
//!            ├── veth ── n0 ns: eth0 10.77.0.1   ron serve
//!            ├── veth ── n1 ns: eth0 10.77.0.2   ron serve
//!            └── …
//! ```
//! Faults are nftables rules in the hub's `bridge` table, on the forward hook: they see
//! node-to-node frames only, so the test's own requests (hub to node) always arrive.
//! Partitions and one-way drops match source and destination addresses; loss is
//! `numgen random`; pauses are SIGSTOP/SIGCONT and kills SIGKILL, by PID. Everything the
//! lab makes — namespaces (with their veths and bridge), processes, data dirs — is
//! named after the test process's PID and removed when the lab drops; a lab left by a
//! killed run is removed by the next one.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::{read_response, temp_dir, try_connect, Address, Response};

pub const WRITE_TOKEN: &str = "faults-writer";
pub const ADMIN_TOKEN: &str = "faults-operator";
pub const HUB_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 254);
const P2P_PORT: u16 = 4001;
const OAP_PORT: u16 = 9444;
const HTTP_PORT: u16 = 8080;
const ADMIN_PORT: u16 = 9600;
/// Every namespace this test binary makes starts with this, then its PID.
const NS_PREFIX: &str = "ronf";

/// Labs made by this process (their names must differ).
static LABS: AtomicU32 = AtomicU32::new(0);

/// Runs `program args` and fails the test, naming the command, if it fails.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e} (iproute2 and nftables needed)"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn in_ns(ns: &str, args: &[&str]) {
    let mut full = vec!["netns", "exec", ns];
    full.extend_from_slice(args);
    run("ip", &full);
}

/// Deletes namespaces a killed run of this binary left behind (their PID is gone).
fn remove_namespaces_of_ended_runs() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// One node's place in the lab.
#[derive(Debug, Clone)]
pub struct Host {
    pub ns: String,
    pub ip: Ipv4Addr,
    pub zone: String,
}

impl Host {
    pub fn http(&self) -> SocketAddr {
        SocketAddr::from((self.ip, HTTP_PORT))
    }
    pub fn admin(&self) -> SocketAddr {
        SocketAddr::from((self.ip, ADMIN_PORT))
    }
    pub fn p2p(&self) -> String {
        format!("{}:{P2P_PORT}", self.ip)
    }
}

/// A running (or paused, or killed) `ron serve` in its namespace.
pub struct LabNode {
    pub host: Host,
    pub data_dir: PathBuf,
    pub denylist_dir: PathBuf,
    log_dir: PathBuf,
    args: Vec<String>,
    child: Mutex<Option<Child>>,
}

impl LabNode {
    fn launch(&self, ron: &Path) {
        std::fs::create_dir_all(&self.log_dir).unwrap();
        let out = File::create(self.log_dir.join("stdout")).unwrap();
        let err = File::create(self.log_dir.join("stderr")).unwrap();
        // `ip netns exec` execs the program: the PID is the node's.
        let child = Command::new("ip")
            .args(["netns", "exec", &self.host.ns])
            .arg(ron)
            .arg("serve")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn ron in its namespace");
        *self.child.lock().unwrap() = Some(child);
    }

    pub fn pid(&self) -> i32 {
        self.child.lock().unwrap().as_ref().expect("running").id() as i32
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log_dir.join("stderr")).unwrap_or_default()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the PID of a child this lab started and has not reaped.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    pub fn kill9(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            // SAFETY: as `signal`; a paused node is woken so that it can take SIGTERM.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(child.id() as i32, libc::SIGCONT);
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Nodes in namespaces, a hub, and the faults between them.
pub struct Lab {
    pub name: String,
    hub: String,
    pub nodes: Vec<LabNode>,
    ron: PathBuf,
}

impl Lab {
    /// Namespaces and links for `zones.len()` nodes (node `i` in zone `zones[i]`); no
    /// node is started yet.
    pub fn new(zones: &[&str]) -> Lab {
        remove_namespaces_of_ended_runs();
        let name = format!(
            "{NS_PREFIX}{}l{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        let hub = format!("{name}hub");
        run("ip", &["netns", "add", &hub]);
        let mut lab = Lab {
            name: name.clone(),
            hub: hub.clone(),
            nodes: Vec::new(),
            ron: PathBuf::from(env!("CARGO_BIN_EXE_ron")),
        };
        in_ns(&hub, &["ip", "link", "set", "lo", "up"]);
        in_ns(&hub, &["ip", "link", "add", "br0", "type", "bridge"]);
        in_ns(
            &hub,
            &["ip", "addr", "add", &format!("{HUB_IP}/24"), "dev", "br0"],
        );
        in_ns(&hub, &["ip", "link", "set", "br0", "up"]);
        in_ns(&hub, &["nft", "add", "table", "bridge", "faults"]);
        in_ns(
            &hub,
            &[
                "nft",
                "add chain bridge faults forward { type filter hook forward priority 0; }",
            ],
        );
        for zone in zones {
            lab.add_node(zone);
        }
        lab
    }

    /// A namespace and a data dir for one more node (not started); its index.
    fn add_node(&mut self, zone: &str) -> usize {
        let index = self.nodes.len();
        let host = self.add_host(index, zone);
        let dir = temp_dir(&format!("faults-{}-n{index}", self.name));
        let denylist_dir = dir.with_extension("deny");
        std::fs::create_dir_all(&denylist_dir).unwrap();
        self.nodes.push(LabNode {
            host,
            data_dir: dir.clone(),
            denylist_dir,
            log_dir: dir.with_extension("logs"),
            args: Vec::new(),
            child: Mutex::new(None),
        });
        index
    }

    /// A namespace with `eth0` on the hub's bridge.
    fn add_host(&self, index: usize, zone: &str) -> Host {
        let ns = format!("{}n{index}", self.name);
        let ip = Ipv4Addr::new(10, 77, 0, index as u8 + 1);
        run("ip", &["netns", "add", &ns]);
        // Made in the hub (names there are the lab's own), one end moved into the node's.
        let (outer, inner) = (format!("v{index}"), format!("p{index}"));
        in_ns(
            &self.hub,
            &[
                "ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", &ns,
            ],
        );
        in_ns(&self.hub, &["ip", "link", "set", &outer, "master", "br0"]);
        in_ns(&self.hub, &["ip", "link", "set", &outer, "up"]);
        in_ns(&ns, &["ip", "link", "set", "lo", "up"]);
        in_ns(&ns, &["ip", "link", "set", &inner, "name", "eth0"]);
        in_ns(
            &ns,
            &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        );
        in_ns(&ns, &["ip", "link", "set", "eth0", "up"]);
        Host {
            ns,
            ip,
            zone: zone.to_string(),
        }
    }

    /// Starts node `i` with the lab's flags (zones, replicas 3, every node's bootstrap
    /// peer node 0 — node 0's is node 1) and `extra`; waits until it is ready.
    pub fn start(&mut self, i: usize, extra: &[&str]) {
        let peer = match i {
            0 => self.nodes[1].host.p2p(),
            _ => self.nodes[0].host.p2p(),
        };
        let h = self.nodes[i].host.clone();
        let mut args = self.common_args(i);
        for flag in [
            "--p2p",
            &h.p2p(),
            "--peer",
            &peer,
            "--zone",
            &h.zone,
            "--replicas",
            "3",
        ] {
            args.push(flag.to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        self.nodes[i].args = args;
        self.restart(i);
    }

    /// Adds and starts an edge: a node outside the network that reads through from
    /// `origin` (an HTTP URL), with `extra` flags; its index.
    pub fn start_edge(&mut self, origin: &str, extra: &[&str]) -> usize {
        let i = self.add_node("edge");
        let mut args = self.common_args(i);
        args.extend(["--origin".to_string(), origin.to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        self.nodes[i].args = args;
        self.restart(i);
        i
    }

    /// The flags every lab node runs with: its listeners, tokens, denylist, a small cache.
    fn common_args(&self, i: usize) -> Vec<String> {
        let node = &self.nodes[i];
        let h = &node.host;
        [
            "--data-dir",
            node.data_dir.to_str().unwrap(),
            "--http",
            &h.http().to_string(),
            "--admin",
            &h.admin().to_string(),
            "--oap",
            &format!("{}:{OAP_PORT}", h.ip),
            "--shards",
            "1",
            "--token",
            WRITE_TOKEN,
            "--admin-token",
            ADMIN_TOKEN,
            "--denylist",
            node.denylist_dir.to_str().unwrap(),
            "--cache-bytes",
            "32MiB",
            "--scrub-rate",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Starts node `i` again with the flags it last had, on its data dir.
    pub fn restart(&self, i: usize) {
        let node = &self.nodes[i];
        node.launch(&self.ron);
        let admin = node.host.admin();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let exited = node
                .child
                .lock()
                .unwrap()
                .as_mut()
                .unwrap()
                .try_wait()
                .unwrap();
            if let Some(status) = exited {
                panic!("node {i} exited ({status}): {}", node.stderr());
            }
            if admin_get(admin, "/readyz").is_ok_and(|r| r.status == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "node {i} not ready in 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Drops every frame from a node of `from` to a node of `to` (one way).
    pub fn drop_between(&self, from: &[usize], to: &[usize]) {
        let rule = format!(
            "add rule bridge faults forward ip saddr {} ip daddr {} drop",
            self.ip_set(from),
            self.ip_set(to)
        );
        in_ns(&self.hub, &["nft", &rule]);
    }

    /// Splits the nodes into `a` and `b`: nothing crosses, either way.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        self.drop_between(a, b);
        self.drop_between(b, a);
    }

    /// Drops `percent` % of the frames to and from the nodes of `nodes`, at random.
    pub fn lose(&self, nodes: &[usize], percent: u32) {
        let set = self.ip_set(nodes);
        for side in ["saddr", "daddr"] {
            let rule = format!(
                "add rule bridge faults forward ip {side} {set} numgen random mod 100 < {percent} drop"
            );
            in_ns(&self.hub, &["nft", &rule]);
        }
    }

    /// Removes every fault rule: the network is whole again.
    pub fn heal(&self) {
        in_ns(&self.hub, &["nft", "flush chain bridge faults forward"]);
    }

    fn ip_set(&self, nodes: &[usize]) -> String {
        let ips: Vec<String> = nodes
            .iter()
            .map(|&i| self.nodes[i].host.ip.to_string())
            .collect();
        format!("{{ {} }}", ips.join(", "))
    }

    /// Moves the calling thread into the hub's namespace, where the nodes' addresses are
    /// reached, until the guard drops (threads it starts meanwhile are there too).
    pub fn enter_hub(&self) -> InHub {
        let home = File::open("/proc/thread-self/ns/net").expect("this thread's namespace");
        enter_namespace(&format!("/var/run/netns/{}", self.hub));
        InHub { home }
    }
}

/// Moves the calling thread (only it: network namespaces are per thread, and threads it
/// starts inherit its namespace) into `path`'s.
fn enter_namespace(path: &str) {
    let ns = File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: setns(2) on a descriptor this function holds open.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// The calling thread's stay in a lab's hub namespace; it goes back where it was when
/// this drops.
pub struct InHub {
    home: File,
}

impl Drop for InHub {
    fn drop(&mut self) {
        // SAFETY: setns(2) back to the namespace this thread started in.
        #[allow(unsafe_code)]
        unsafe {
            libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for node in &self.nodes {
            node.stop();
        }
        for node in &self.nodes {
            let _ = Command::new("ip")
                .args(["netns", "del", &node.host.ns])
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.hub])
            .status();
    }
}

/// An admin request (with the lab's admin token) on a fresh connection.
pub fn admin_request(admin: SocketAddr, method: &str, path: &str) -> std::io::Result<Response> {
    use std::io::Write;
    let mut s = try_connect(admin)?;
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(raw.as_bytes())?;
    read_response(&mut s, &mut Vec::new(), false)
}

pub fn admin_get(admin: SocketAddr, path: &str) -> std::io::Result<Response> {
    admin_request(admin, "GET", path)
}

/// A series' value from `/metrics` (`None` until it is published).
pub fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    let body = admin_get(admin, "/metrics").ok()?.body;
    String::from_utf8_lossy(&body).lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')
            .and_then(|v| v.parse().ok())
    })
}

/// `PUT /o` with the write token; the address when the node acknowledged it.
pub fn put_object(http: SocketAddr, data: &[u8]) -> Option<Address> {
    use std::io::Write;
    let mut s = try_connect(http).ok()?;
    let head = format!(
        "PUT /o HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {WRITE_TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        data.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(data).ok()?;
    let r = read_response(&mut s, &mut Vec::new(), false).ok()?;
    match r.status {
        200 | 201 => Some(r.json()["obj"].as_str()?.parse().ok()?),
        _ => None,
    }
}
