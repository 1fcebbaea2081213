//! strace attached to a running node by PID and detached by PID, for the tests that
//! prove a promise from the node's own system calls.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Attaches strace to every thread of `pid`, tracing the calls in `calls` (strace's
/// `-e trace=` list) into `out` with wall-clock times (`-ttt`), durations (`-T`) and
/// what each descriptor is (`-yy`: a path, or a TCP socket's two ends); returns once
/// strace has attached.
pub fn attach(pid: u32, out: &Path, calls: &str) -> Child {
    let child = Command::new("strace")
        .args(["-f", "-ttt", "-T", "-yy", "-o"])
        .arg(out)
        .args(["-e", &format!("trace={calls}")])
        .args(["-p", &pid.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .expect("strace is needed for this test (apt-get install strace; scripts/test-all.sh installs it)");
    // strace reports once it has attached every thread.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| {
            !s.lines()
                .any(|l| l.starts_with("TracerPid:") && l.trim() != "TracerPid:\t0")
        })
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < deadline,
            "strace did not attach within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    child
}

/// Detaches strace (SIGINT to its PID) and waits up to 10 s for it to exit.
pub fn detach(mut strace: Child) {
    super::send_signal(strace.id(), "INT");
    let deadline = Instant::now() + Duration::from_secs(10);
    while strace.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "strace did not detach");
        std::thread::sleep(Duration::from_millis(20));
    }
}
