//! Test harness: runs the real `ron` binary on loopback ports in a temp dir and talks
//! to it over real sockets. Every wait is bounded; nodes are stopped by PID on drop.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

pub use ron_codec::Address;

pub mod daemon;
pub mod js;
pub mod netns;
pub mod strace;

/// Ports handed out by this test binary: distinct within it (SO_REUSEPORT would let two
/// nodes share a port otherwise), probed free before use, and below Linux's ephemeral
/// range (32768 on), where a client connection could take a node's port between a stop
/// and a restart.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 80) as u16 * 100;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 4_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A fresh dir for one test, `ron-test-<pid>-<seq>-<name>` in the temp dir. Tests keep
/// their dirs (a failure leaves them to look at); the first call in each test process
/// removes those of test processes that have ended, so runs do not pile up.
pub fn temp_dir(name: &str) -> PathBuf {
    static SEQ: AtomicU16 = AtomicU16::new(0);
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(remove_dirs_of_ended_tests);
    let dir = std::env::temp_dir().join(format!(
        "ron-test-{}-{}-{name}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn remove_dirs_of_ended_tests() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("ron-test-")) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

pub struct Node {
    pub child: Option<Child>,
    pub http: SocketAddr,
    pub oap: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    pub log_dir: PathBuf,
    args: Vec<String>,
    /// Open-files limit (soft and hard) the node starts under, if not inherited.
    nofile: Option<u64>,
    /// strace's output file and the calls it traces, for a node run under strace from
    /// its first call (`child` is then strace, and the node its child).
    trace: Option<(PathBuf, String)>,
}

impl Node {
    /// Starts `ron serve` with `extra` flags and waits until /readyz says ready.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Node {
        let mut node = Node::start_unlaunched(data_dir, extra);
        node.launch();
        node
    }

    /// As [`Node::start`], under an open-files limit of `nofile` (soft and hard).
    pub fn start_with_nofile(data_dir: &Path, extra: &[&str], nofile: u64) -> Node {
        let mut node = Node::start_unlaunched(data_dir, extra);
        node.nofile = Some(nofile);
        node.launch();
        node
    }

    /// As [`Node::start`], run under strace from its first call, tracing the calls in
    /// `calls` (strace's `-e trace=` list) into `out` as [`strace::attach`] does (times,
    /// durations, descriptors' paths). strace ends with the node.
    pub fn start_traced(data_dir: &Path, extra: &[&str], out: &Path, calls: &str) -> Node {
        let mut node = Node::start_unlaunched(data_dir, extra);
        node.trace = Some((out.to_path_buf(), calls.to_string()));
        node.launch();
        node
    }

    fn start_unlaunched(data_dir: &Path, extra: &[&str]) -> Node {
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let oap: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Node {
            child: None,
            http,
            oap,
            admin,
            data_dir: data_dir.to_path_buf(),
            log_dir: data_dir.with_extension("logs"),
            args: extra.iter().map(|s| s.to_string()).collect(),
            nofile: None,
            trace: None,
        }
    }

    /// Starts again with `extra`, once, and waits until the node is ready; `Err` with
    /// its exit status and stderr when it exits first.
    pub fn try_restart(&mut self, extra: &[&str]) -> Result<(), String> {
        self.args = extra.iter().map(|s| s.to_string()).collect();
        self.try_launch()
    }

    /// Starts again on the same data dir and ports (after a stop or a kill).
    pub fn restart(&mut self, extra: &[&str]) {
        self.args = extra.iter().map(|s| s.to_string()).collect();
        self.launch();
    }

    /// Starts the node and waits until it is ready. A node refused a port ("Address
    /// already in use") is started again a few times: the ports were probed free when
    /// the node was made, and kept across restarts, so another socket on the machine can
    /// hold one for a moment in between; the node is right to refuse.
    fn launch(&mut self) {
        const ATTEMPTS: u32 = 8;
        for attempt in 1..=ATTEMPTS {
            match self.try_launch() {
                Ok(()) => return,
                Err(early) if early.contains("Address already in use") && attempt < ATTEMPTS => {
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(early) => panic!("ron exited early {early}"),
            }
        }
    }

    /// Spawns the node and waits (bounded) until it is ready; `Err` with its exit status
    /// and stderr when it exits first.
    fn try_launch(&mut self) -> Result<(), String> {
        std::fs::create_dir_all(&self.log_dir).unwrap();
        let out = std::fs::File::create(self.log_dir.join("stdout")).unwrap();
        let err = std::fs::File::create(self.log_dir.join("stderr")).unwrap();
        let mut command = match &self.trace {
            None => Command::new(env!("CARGO_BIN_EXE_ron")),
            Some((out, calls)) => {
                let mut strace = Command::new("strace");
                strace
                    .args(["-f", "-ttt", "-T", "-yy", "-o"])
                    .arg(out)
                    .args(["-e", &format!("trace={calls}"), "--"])
                    .arg(env!("CARGO_BIN_EXE_ron"));
                strace
            }
        };
        if let Some(nofile) = self.nofile {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: nofile,
                rlim_max: nofile,
            };
            // SAFETY: one async-signal-safe syscall on a value copied into the closure.
            #[allow(unsafe_code)]
            unsafe {
                command.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                })
            };
        }
        let child = command
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--http")
            .arg(self.http.to_string())
            .arg("--admin")
            .arg(self.admin.to_string())
            .arg("--oap")
            .arg(self.oap.to_string())
            .args(self.default_flags())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn ron");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("({status}): {}", self.stderr()));
            }
            if let Ok(r) = get(self.admin, "/readyz") {
                if r.status == 200 {
                    return Ok(());
                }
            }
            assert!(
                Instant::now() < deadline,
                "ron not ready in 30 s: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Flags every test node gets unless the test gives its own: no scrubber, so what
    /// a test counts (degraded reads, repairs, bad blocks) is what its requests did.
    fn default_flags(&self) -> Vec<&'static str> {
        match self.args.iter().any(|a| a == "--scrub-rate") {
            true => vec![],
            false => vec!["--scrub-rate", "0"],
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log_dir.join("stderr")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        let child = self.child.as_ref().expect("running").id();
        match self.trace {
            None => child,
            // strace blocks the fatal signals sent to it: a signal goes to the node.
            Some(_) => std::fs::read_to_string(format!("/proc/{child}/task/{child}/children"))
                .ok()
                .and_then(|c| c.split_whitespace().next()?.parse().ok())
                .expect("the traced node is strace's child"),
        }
    }

    /// Sends `signal` (`TERM`, `HUP`, `STOP`, `CONT`) to the node's process.
    pub fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        send_signal(self.pid(), "TERM");
        self.wait_exit(Duration::from_secs(20))
    }

    /// Waits (bounded) for a node that was already signalled to exit.
    pub fn stop_wait(&mut self) -> ExitStatus {
        self.wait_exit(Duration::from_secs(20))
    }

    /// SIGKILL: a crash.
    pub fn kill9(&mut self) {
        if self.trace.is_some() {
            send_signal(self.pid(), "KILL");
        }
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let mut child = self.child.take().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("ron did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn object_file(&self, addr: &Address) -> PathBuf {
        let (path, offset) = self.stored_at(addr);
        assert_eq!(
            offset,
            0,
            "{addr} is packed in {}, not in a file of its own",
            path.display()
        );
        path
    }

    /// The file holding `addr`'s bytes and the offset they start at: its own file
    /// (offset 0), or the segment its needle (magic, length, address, content type
    /// length and content type, body) is in.
    pub fn stored_at(&self, addr: &Address) -> (PathBuf, u64) {
        let hex = addr.to_string()[3..].to_string();
        for entry in std::fs::read_dir(self.data_dir.join("stores")).unwrap() {
            let store = entry.unwrap().path();
            let path = store.join("objects").join(&hex[..2]).join(&hex);
            if path.exists() {
                return (path, 0);
            }
            for segment in std::fs::read_dir(store.join("segments")).unwrap() {
                let segment = segment.unwrap().path();
                let bytes = std::fs::read(&segment).unwrap();
                let found = bytes
                    .windows(40)
                    .position(|w| w.starts_with(b"RONn") && &w[8..] == addr.as_bytes());
                if let Some(at) = found {
                    let type_len = u64::from(bytes[at + 40]);
                    return (segment, at as u64 + 41 + type_len);
                }
            }
        }
        panic!("no stored bytes for {addr}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

pub fn try_connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.set_write_timeout(Some(Duration::from_secs(20)))?;
    Ok(s)
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    try_connect(addr).unwrap()
}

/// A connection to `addr` from the loopback address `from` (another client than
/// 127.0.0.1's: quotas and shares count clients by address).
pub fn connect_from(from: std::net::Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads one response from `stream`; `head_only` for answers to HEAD.
pub fn read_response(
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
    head_only: bool,
) -> std::io::Result<Response> {
    let mut chunk = [0u8; 65536];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head_len) = resp
            .parse(pending)
            .map_err(|e| std::io::Error::other(e.to_string()))?
        {
            let status = resp.code.unwrap();
            let headers: Vec<(String, String)> = resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let len: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.parse().unwrap())
                .unwrap_or(0);
            let body_len = if head_only || status == 304 || status == 100 {
                0
            } else {
                len
            };
            while pending.len() < head_len + body_len {
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("body cut at {} of {body_len}", pending.len() - head_len),
                    ));
                }
                pending.extend_from_slice(&chunk[..n]);
            }
            let body = pending[head_len..head_len + body_len].to_vec();
            pending.drain(..head_len + body_len);
            return Ok(Response {
                status,
                headers,
                body,
            });
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before a response",
            ));
        }
        pending.extend_from_slice(&chunk[..n]);
    }
}

/// One request on a fresh connection.
pub fn request(addr: SocketAddr, raw: &[u8]) -> std::io::Result<Response> {
    let mut s = try_connect(addr)?;
    s.write_all(raw)?;
    let head_only = raw.starts_with(b"HEAD ");
    read_response(&mut s, &mut Vec::new(), head_only)
}

pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// GET with `Authorization: Bearer <token>`.
pub fn get_bearer(addr: SocketAddr, token: &str, path: &str) -> Response {
    let raw = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    request(addr, raw.as_bytes()).unwrap()
}

pub fn get_with(addr: SocketAddr, path: &str, headers: &str) -> Response {
    request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap()
}

pub fn put(addr: SocketAddr, path: &str, body: &[u8], headers: &str) -> Response {
    let mut raw = format!("PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n", body.len()).into_bytes();
    raw.extend_from_slice(body);
    request(addr, &raw).unwrap()
}

/// An OAP/1 object frame (app 1, tenant 0) with `payload` and no capability section.
pub fn object_frame(
    flags: ron_codec::frame::Flags,
    corr_id: u64,
    payload: &[u8],
) -> ron_codec::frame::Frame {
    use ron_codec::frame::{Frame, FrameMeta, APP_OBJECTS};
    let meta = FrameMeta {
        flags,
        code: 0,
        app_proto_id: APP_OBJECTS,
        tenant_id: 0,
        corr_id,
    };
    let payload = bytes::Bytes::copy_from_slice(payload);
    Frame::new(meta, bytes::Bytes::new(), payload, 1 << 20).unwrap()
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn metric(admin: SocketAddr, name: &str) -> u64 {
    try_metric(admin, name).unwrap_or_else(|| panic!("no metric {name}"))
}

/// A series' value once it reaches `want`, or what it was when `within` ran out: the
/// shards count a request after its last byte is sent (and report some series, latency
/// histograms and quota rejections, on a tick), so a client that has its answer may read
/// `/metrics` before its request is counted.
pub fn metric_reaching(admin: SocketAddr, name: &str, want: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let value = try_metric(admin, name).unwrap_or(0);
        if value >= want || Instant::now() >= deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A series' value, if `/metrics` has it yet.
pub fn try_metric(admin: SocketAddr, name: &str) -> Option<u64> {
    series_text(admin, name).map(|v| v.parse().unwrap())
}

/// A series that is not a whole number (a ratio), or is labelled: give the name with
/// its labels, `ron_scrub_passes_total{shard="0"}`.
pub fn gauge(admin: SocketAddr, series: &str) -> Option<f64> {
    series_text(admin, series).map(|v| v.parse().unwrap())
}

fn series_text(admin: SocketAddr, series: &str) -> Option<String> {
    let text = String::from_utf8(get(admin, "/metrics").unwrap().body).unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(str::to_owned)
}

/// Uploads `data` with `PUT /o`; asserts 201/200 and returns the address.
/// Resident memory of process `pid`, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

pub fn upload(n: &Node, data: &[u8]) -> Address {
    let r = put(n.http, "/o", data, "");
    assert!(r.status == 201 || r.status == 200, "{r:?}");
    r.json()["obj"].as_str().unwrap().parse().unwrap()
}

/// Runs a `ron` command (a client one: no stdin, no `RON_TOKEN` from the environment)
/// to completion.
pub fn ron(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ron"))
        .args(args)
        .env_remove("RON_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Polls `done` every 50 ms until it holds; fails the test naming `what` past `within`.
pub fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes a denylist file whole (a temp name, then a rename: the node never reads half).
pub fn write_list(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join(name)).unwrap();
}

/// Waits until every shard enforces policy version `version` (the control thread reads
/// the changed files within a second; each shard installs the list at its next tick).
pub fn wait_for_policy(n: &Node, version: u64) {
    wait_for(
        &format!("policy {version} on every shard"),
        Duration::from_secs(30),
        || {
            let stats = get(n.admin, "/admin/stats").unwrap().json();
            let shards = stats["shards"].as_array().unwrap().clone();
            shards.iter().all(|s| s["policy_version"] == version)
        },
    );
}

/// A listener on loopback that takes connections and never answers (held open until
/// the test process ends); where it listens, and how many it took.
pub fn silent_listener() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = listener.local_addr().unwrap();
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = std::sync::Arc::clone(&taken);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().flatten() {
            counted.fetch_add(1, Ordering::Relaxed);
            held.push(c);
        }
    });
    (at, taken)
}

/// Sends `signal` (`TERM`, `INT`, `HUP`, `KILL`, `STOP`, `CONT`) to the process `pid`
/// (one a test started): kill(2) itself, so the tests need no `kill` program (procps).
pub fn send_signal(pid: u32, signal: &str) {
    let number = match signal {
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        "HUP" => libc::SIGHUP,
        "KILL" => libc::SIGKILL,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        other => panic!("no signal {other} here"),
    };
    let pid = libc::pid_t::try_from(pid).expect("a process id");
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    #[allow(unsafe_code)]
    let sent = unsafe { libc::kill(pid, number) };
    assert_eq!(
        sent,
        0,
        "kill -{signal} {pid}: {}",
        std::io::Error::last_os_error()
    );
}

/// Runs `ron serve` with `args` to completion (for start-up refusals).
pub fn run_ron(data_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ron"))
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap()
}

/// A node with a TLS listener using a `ron cert --dev` certificate.
pub struct TlsNode {
    pub node: Node,
    pub tls: String,
    pub cert: PathBuf,
}

/// Writes a dev certificate (checking `ron cert --dev` refuses to overwrite it) and starts
/// a node serving TLS with it, plus `extra` flags.
/// Writes a development certificate and key (`ron cert --dev`) into `dir`; the
/// certificate's PEM.
pub fn dev_cert(dir: &Path) -> Vec<u8> {
    let out = ron(&["cert", "--dev", "--out", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    std::fs::read(dir.join("cert.pem")).unwrap()
}

/// A TLS client (rustls, ring) that trusts the PEM certificates `trusted` and nothing
/// else.
pub fn tls_client_trusting(trusted: &[&[u8]]) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for pem in trusted {
        let der = rustls::pki_types::CertificateDer::from_pem_slice(pem).unwrap();
        roots.add(der).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    std::sync::Arc::new(config)
}

pub fn tls_node(name: &str, extra: &[&str]) -> TlsNode {
    let dir = temp_dir(name);
    let tls_dir = dir.with_extension("tls");
    let cert_dev = || {
        Command::new(env!("CARGO_BIN_EXE_ron"))
            .args(["cert", "--dev", "--out"])
            .arg(&tls_dir)
            .output()
            .unwrap()
    };
    let out = cert_dev();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(cert_dev().status.code(), Some(2), "never overwrites a key");
    let tls = format!("127.0.0.1:{}", free_port());
    let cert = tls_dir.join("cert.pem");
    let key = tls_dir.join("key.pem");
    let mut args = vec![
        "--tls",
        &tls,
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let node = Node::start(&dir, &args);
    TlsNode { node, tls, cert }
}

/// Flips the stored byte at `offset` of the file at `path`.
pub fn flip_byte(path: &std::path::Path, offset: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8; 1];
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.read_exact(&mut byte).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(&[byte[0] ^ 0x01]).unwrap();
    file.sync_all().unwrap();
}

/// The parity file beside the object file of `addr`.
pub fn parity_file(n: &Node, addr: &Address) -> PathBuf {
    let mut path = n.object_file(addr).into_os_string();
    path.push(".parity");
    PathBuf::from(path)
}

/// Asserts the file at `path` holds exactly `want`.
pub fn file_is(path: &Path, want: &[u8]) {
    let stored = std::fs::read(path).unwrap();
    assert!(
        stored == want,
        "{} differs from what it should hold",
        path.display()
    );
}

/// Checks that `data`, stored at `addr` in a file of its own with parity at `k+m`, has
/// its whole parity file beside it: every stripe's blocks as the code computes them.
pub fn assert_parity_intact(n: &Node, addr: &Address, data: &[u8], k: u8, m: u8) {
    use ron_shards::ec::{EcParams, StripeCode};
    let block = 65_536;
    let stored = std::fs::read(parity_file(n, addr))
        .unwrap_or_else(|e| panic!("{addr}: no parity file: {e}"));
    let code = StripeCode::new(EcParams::new(k, m).unwrap());
    let stripes: Vec<&[u8]> = data.chunks(usize::from(k) * block).collect();
    assert_eq!(
        stored.len(),
        stripes.len() * usize::from(m) * block,
        "{addr}: parity length"
    );
    for (s, stripe) in stripes.iter().enumerate() {
        let blocks: Vec<&[u8]> = stripe.chunks(block).collect();
        let mut want = vec![vec![0u8; block]; usize::from(m)];
        let mut out: Vec<&mut [u8]> = want.iter_mut().map(|b| &mut b[..]).collect();
        code.encode(&blocks, &mut out).unwrap();
        let at = s * usize::from(m) * block;
        assert!(
            stored[at..at + want.concat().len()] == want.concat()[..],
            "{addr}: stripe {s} parity"
        );
    }
}

pub fn node_id(n: &Node) -> String {
    let stats = get(n.admin, "/admin/stats").unwrap().json();
    stats["node_id"]
        .as_str()
        .expect("node_id in /admin/stats")
        .to_string()
}

/// Whether `n` holds `addr` itself: the owner shard reads and checks every block of it
/// (`POST /admin/repair`: 200 healthy; 404 when it does not hold it). A shard's
/// operator inbox holds 8 requests: a full one (503) is asked again.
pub fn holds(n: &Node, addr: &Address) -> bool {
    let raw = format!(
        "POST /admin/repair/{addr} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut r = request(n.admin, raw.as_bytes()).unwrap();
    for _ in 0..40 {
        if r.status != 503 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        r = request(n.admin, raw.as_bytes()).unwrap();
    }
    match r.status {
        200 => {
            assert_eq!(r.json()["outcome"], "healthy", "{r:?}");
            true
        }
        404 => false,
        _ => panic!("repair probe of {addr}: {r:?}"),
    }
}

/// An address's hex digits, without `b3:` (what libp2p peers are given).
pub fn hex(addr: &Address) -> String {
    addr.to_string()
        .strip_prefix("b3:")
        .expect("b3:<hex>")
        .to_string()
}

/// LMDB's own lock on a store's index (`lock.mdb`, its first byte), held as a writer
/// that is not the node would hold it: the node's open of that index waits while it is.
pub struct IndexLock(std::fs::File);

impl IndexLock {
    /// Takes the lock of the index of store 0 in `data_dir` (the store must exist).
    pub fn hold(data_dir: &Path) -> IndexLock {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(data_dir.join("stores/0/index/lock.mdb"))
            .unwrap();
        let lock = IndexLock(file);
        lock.set(libc::F_WRLCK);
        lock
    }

    pub fn release(self) {
        self.set(libc::F_UNLCK);
    }

    fn set(&self, kind: i32) {
        use std::os::fd::AsRawFd;
        // SAFETY: zeroed is a valid flock; the descriptor outlives the call.
        #[allow(unsafe_code)]
        let rc = unsafe {
            let mut range: libc::flock = std::mem::zeroed();
            range.l_type = kind as i16;
            range.l_whence = libc::SEEK_SET as i16;
            range.l_len = 1;
            libc::fcntl(self.0.as_raw_fd(), libc::F_SETLK, &range)
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    }
}
