//! Programs this project did not write (Varnish, nginx, HAProxy), run in the foreground
//! as children of a test and killed by their PID when it drops them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{try_connect, wait_for};

/// A daemon listening on `addr`, with `dir` for its configuration and logs.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where `name` is installed; the test fails (it does not skip) when it is not.
pub fn program(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!("{name} is not installed (apt-get install {name}); .ci/run installs it")
}

/// Starts `command` and waits until `addr` takes connections.
pub fn spawn(mut command: Command, addr: SocketAddr, dir: PathBuf) -> Daemon {
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let daemon = Daemon { child, addr, dir };
    wait_for("the daemon to listen", Duration::from_secs(20), || {
        try_connect(addr).is_ok()
    });
    daemon
}
