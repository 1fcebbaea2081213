//! Interop with another libp2p implementation: a stock js-libp2p peer
//! (`interop/js-libp2p/kad_peer.mjs`, the npm packages pinned in its `package-lock.json`)
//! uses the DHT of three real `ron serve` processes. It proves that a standard libp2p
//! peer (1) connects to a ron node over TCP + noise + yamux, runs identify and ping
//! against it and puts it in its Kademlia routing table (`/ron/kad/1.0.0`), and ron
//! puts the peer in its own; (2) finds, by the CID naming an object's BLAKE3 multihash,
//! the ron node that stores the object; (3) provides a key that a ron node it never
//! dialed then resolves to the peer's id (`/resolve`, with no OAP address: it is not a
//! ron node). `docs/libp2p-clients.md` is the client's side of this.
//!
//! Needs Node.js ≥ 20 and npm (the test fails without them, it does not skip); when
//! `interop/js-libp2p/node_modules` is missing or older than the lock file, the test
//! runs `npm ci` there first.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
/// The JS peer's hard limit: it exits by itself this long after it started.
const JS_TIMEOUT_S: u64 = 120;
/// How long the JS peer may take to report all its steps (each step has its own 20 s).
const JS_STEPS: Duration = Duration::from_secs(90);
const NODE_MAJOR_MIN: u32 = 20;
/// An address the JS peer claims in its provider records and identify answers but
/// does not connect from (TEST-NET-1).
const CLAIMED_IP: &str = "192.0.2.7";

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../interop/js-libp2p")
}

/// Checks Node.js is there and new enough, and installs the locked npm packages when
/// `node_modules` is missing or older than `package-lock.json`.
fn prepare_js() {
    let version = Command::new("node")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "this test needs Node.js ≥ {NODE_MAJOR_MIN} and npm on PATH \
                 (`node --version`: {e}); .ci/run installs them"
            )
        });
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= NODE_MAJOR_MIN,
        "this test needs Node.js ≥ {NODE_MAJOR_MIN} (js-libp2p); `node --version` says {version:?}"
    );
    let dir = js_dir();
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let lock =
        modified(&dir.join("package-lock.json")).expect("interop/js-libp2p/package-lock.json");
    let installed = modified(&dir.join("node_modules/.package-lock.json"));
    if installed.is_some_and(|at| at >= lock) {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("this test needs npm on PATH (`npm ci`: {e})"));
    assert!(
        out.status.success(),
        "npm ci in {} failed ({}):\n{}\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The running JS peer: its JSON lines as they come, killed (by its own handle) when
/// dropped, so a failed assertion never leaves it behind.
struct JsPeer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: PathBuf,
    seen: Vec<String>,
}

impl JsPeer {
    fn start(args: &[String], log_dir: &Path) -> JsPeer {
        std::fs::create_dir_all(log_dir).unwrap();
        let stderr = log_dir.join("kad_peer.stderr");
        let mut child = Command::new("node")
            .arg("kad_peer.mjs")
            .args(args)
            .current_dir(js_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn node kad_peer.mjs");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        JsPeer {
            child,
            stdin,
            lines,
            stderr,
            seen: Vec::new(),
        }
    }

    fn context(&self) -> String {
        format!(
            "JS peer's lines so far:\n{}\nits stderr:\n{}",
            self.seen.join("\n"),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    /// The next line whose `step` is `want`, by `deadline`; fails on an `error` line,
    /// an exit, or the deadline.
    fn step(&mut self, want: &str, deadline: Instant) -> Value {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("JS peer: no {want:?} step in time.\n{}", self.context())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!(
                        "JS peer exited ({status:?}) before its {want:?} step.\n{}",
                        self.context()
                    )
                }
            };
            self.seen.push(line.clone());
            let Ok(value) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            match value["step"].as_str() {
                Some(step) if step == want => return value,
                Some("error") => panic!("JS peer failed.\n{}", self.context()),
                _ => {}
            }
        }
    }

    /// Closes its stdin (it stops then) and waits, bounded, for a clean exit.
    fn finish(&mut self, within: Duration) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "JS peer exited {status}.\n{}",
                    self.context()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "JS peer still running {within:?} after its stdin closed.\n{}",
                self.context()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for JsPeer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn node_id(n: &Node) -> String {
    get(n.admin, "/admin/stats").unwrap().json()["node_id"]
        .as_str()
        .expect("node_id in /admin/stats")
        .to_string()
}

fn hex(addr: &Address) -> String {
    addr.to_string()
        .strip_prefix("b3:")
        .expect("b3:<hex>")
        .to_string()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_js_libp2p_peer_finds_ron_providers_and_provides_to_ron() {
    let started = Instant::now();
    prepare_js();
    let prepared = started.elapsed();

    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let nodes: Vec<Node> = (0..3)
        .map(|i| {
            let mut flags = vec![
                "--shards".to_string(),
                "1".into(),
                "--replicas".into(),
                "1".into(),
                "--p2p".into(),
                format!("127.0.0.1:{}", ports[i]),
            ];
            if i > 0 {
                flags.extend(["--peer".into(), format!("127.0.0.1:{}", ports[0])]);
            }
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            Node::start(&temp_dir(&format!("interop-{i}")), &flags)
        })
        .collect();
    let ids: Vec<String> = nodes.iter().map(node_id).collect();
    for n in &nodes {
        wait_for("every ron node knows the two others", WAIT, || {
            metric(n.admin, "ron_dht_routing_table_peers") >= 2
        });
    }

    // Stored on node 0; the JS peer dials node 1 only, so finding node 0 takes the DHT.
    let stored = upload(&nodes[0], &bytes(7, 50_000));
    wait_for("node 0 publishes the object", WAIT, || {
        try_metric(nodes[0].admin, "ron_dht_keys_published_total").unwrap_or(0) >= 1
    });
    // A key no ron node has: what the JS peer provides.
    let offered = Address::of(format!("provided by js-libp2p, {:?}", Instant::now()).as_bytes());

    let mut js = JsPeer::start(
        &[
            "--bootstrap".into(),
            format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", ports[1], ids[1]),
            "--find".into(),
            hex(&stored),
            "--provide".into(),
            hex(&offered),
            "--timeout".into(),
            JS_TIMEOUT_S.to_string(),
            // A host it does not connect from: ron must never hand it out.
            "--claim".into(),
            format!("/ip4/{CLAIMED_IP}/tcp/4001"),
        ],
        &nodes[0].log_dir,
    );
    let js_started = Instant::now();
    let deadline = js_started + JS_STEPS;

    // (1) Connected, identified, pinged, in each other's routing tables.
    let js_id = js.step("started", deadline)["peer_id"]
        .as_str()
        .expect("peer_id")
        .to_string();
    assert_eq!(js.step("dialed", deadline)["peer"], ids[1].as_str());
    let identify = js.step("identify", deadline);
    assert_eq!(identify["peer"], ids[1].as_str(), "{identify}");
    assert!(
        identify["agent"]
            .as_str()
            .is_some_and(|a| a.starts_with("ron/")),
        "{identify}"
    );
    assert_eq!(identify["protocol_version"], "/ron/1.0.0", "{identify}");
    assert_eq!(
        identify["kad"], true,
        "identify lists /ron/kad/1.0.0: {identify}"
    );
    let ping = js.step("ping", deadline);
    assert!(ping["rtt_ms"].as_f64().is_some(), "{ping}");
    let routing = js.step("routing", deadline);
    assert!(routing["peers"].as_u64().unwrap_or(0) >= 1, "{routing}");
    assert!(
        strings(&routing["ron_peers"]).contains(&ids[1]),
        "{routing}"
    );

    // (2) The storing node found through node 1.
    let providers = js.step("providers", deadline);
    assert!(
        strings(&providers["found"]).contains(&ids[0]),
        "the JS peer finds node 0 ({}) providing {stored}: {providers}",
        ids[0]
    );

    // (3) Its own record, resolved by node 2 (which it did not dial).
    let provided = js.step("provided", deadline);
    assert_eq!(provided["peer_id"], js_id.as_str(), "{provided}");
    assert!(!strings(&provided["sent_to"]).is_empty(), "{provided}");
    let js_steps = js_started.elapsed();
    // Node 1 took the JS peer into its routing table (identify listed our Kademlia).
    wait_for("node 1 has the JS peer in its routing table", WAIT, || {
        metric(nodes[1].admin, "ron_dht_routing_table_peers") >= 3
    });
    let mut found = None;
    let mut answers = Vec::new();
    wait_for("node 2 resolves the JS peer's key to it", WAIT, || {
        let r = get(nodes[2].admin, &format!("/resolve?hash={offered}")).unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let body = r.json();
        found = body["providers"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["node_id"] == js_id.as_str()))
            .cloned();
        answers.push(body);
        found.is_some()
    });
    let found = found.unwrap();
    // Not a ron node: no greeting, so no OAP address (and no zone) to report.
    assert!(found["oap"].is_null(), "{found}");
    assert_eq!(found["local"], false, "{found}");

    // A second JS peer, dialing node 2 only, finds the first as the key's provider —
    // at the IP its connection came from, never at the host its records and identify
    // answers claim (a provider cannot point others at a third host).
    let other = Address::of(format!("second peer, {:?}", Instant::now()).as_bytes());
    let mut second = JsPeer::start(
        &[
            "--bootstrap".into(),
            format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", ports[2], ids[2]),
            "--find".into(),
            hex(&offered),
            "--provide".into(),
            hex(&other),
            "--timeout".into(),
            JS_TIMEOUT_S.to_string(),
        ],
        &nodes[2].log_dir,
    );
    let deadline = Instant::now() + JS_STEPS;
    let providers = second.step("providers", deadline);
    assert!(
        strings(&providers["found"]).contains(&js_id),
        "the second JS peer finds the first providing {offered}: {providers}"
    );
    let handed_out = strings(&providers["addrs"][js_id.as_str()]);
    assert!(!handed_out.is_empty(), "{providers}");
    assert!(
        handed_out
            .iter()
            .all(|a| a.starts_with("/ip4/127.0.0.1/tcp/")),
        "a claimed host ({CLAIMED_IP}) handed out: {providers}"
    );
    second.finish(Duration::from_secs(10));
    js.finish(Duration::from_secs(10));
    eprintln!(
        "libp2p interop: npm set-up {prepared:?}, JS steps {js_steps:?}, whole test {:?}; \
         node 2's resolves: {answers:?}",
        started.elapsed()
    );
}
