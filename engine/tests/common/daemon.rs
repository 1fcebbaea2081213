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

/// Where `name` is installed; the test fails when it is not (such tests are `#[ignore]`d
/// with the program they need, and run by `scripts/test-all.sh`, which installs it).
pub fn program(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!("{name} is not installed (apt-get install {name}); scripts/test-all.sh installs it")
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

/// nginx in the foreground with one `server` block (`{listen}` in `server` is replaced
/// by a `listen` on a fresh loopback port), an access log in its `dir`.
pub fn nginx(server: &str) -> Daemon {
    let dir = super::temp_dir("nginx");
    let addr: SocketAddr = format!("127.0.0.1:{}", super::free_port()).parse().unwrap();
    let d = dir.display();
    let server = server.replace("{listen}", &format!("listen {addr}"));
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;
         error_log {d}/error.log;
         events {{ worker_connections 256; }}
         http {{
           access_log {d}/access.log;
           client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
           fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
           server {{ {server} }}
         }}"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let mut command = Command::new(program("nginx"));
    command
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"));
    spawn(command, addr, dir)
}

/// nginx as the usual reverse proxy in front of `backend` on the same host: every
/// request reaches the backend from 127.0.0.1, the client named in X-Forwarded-For.
pub fn nginx_proxy(backend: SocketAddr) -> Daemon {
    nginx(&format!(
        "{{listen}}; client_max_body_size 0;
         location / {{
           proxy_pass http://{backend};
           proxy_http_version 1.1;
           proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
         }}"
    ))
}

/// How HAProxy (TCP mode) tells the backend who the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// Nothing: the backend sees HAProxy's address.
    None,
    /// A PROXY protocol v2 header before the connection's bytes (`send-proxy-v2`).
    V2,
}

/// HAProxy in TCP mode in front of `backend`, on a fresh loopback port.
pub fn haproxy(backend: SocketAddr, header: ProxyHeader) -> Daemon {
    let dir = super::temp_dir("haproxy");
    let addr: SocketAddr = format!("127.0.0.1:{}", super::free_port()).parse().unwrap();
    let send = match header {
        ProxyHeader::None => "",
        ProxyHeader::V2 => " send-proxy-v2",
    };
    let config = format!(
        "global\n  maxconn 256\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
         frontend front\n  bind {addr}\n  default_backend ron\n\
         backend ron\n  server node {backend}{send}\n"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(program("haproxy"));
    command.arg("-db").arg("-f").arg(&path);
    spawn(command, addr, dir)
}
