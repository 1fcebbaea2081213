//! systemd's readiness protocol (`sd_notify(3)`) without libsystemd: one datagram to
//! the socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
//! Without the variable — not started by systemd with `Type=notify` — nothing is sent.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Every shard is ready: `systemctl start` returns, dependants may start.
pub(super) fn ready(shards: u16) {
    send(&format!(
        "READY=1\nSTATUS=serving with {shards} shard(s)\nMAINPID={}",
        std::process::id()
    ));
}

/// Shards are still starting: systemd's start timeout is pushed `by` from now (systemd
/// 236 and later; older ones ignore it).
pub(super) fn extend_start(by: std::time::Duration, starting: usize, shards: usize) {
    send(&format!(
        "EXTEND_TIMEOUT_USEC={}\nSTATUS=starting: {starting} of {shards} shard(s) opening their stores",
        by.as_micros()
    ));
}

/// A stop began: shards stop accepting and drain.
pub(super) fn stopping() {
    send("STOPPING=1\nSTATUS=draining");
}

fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = (|| {
        let name = path.as_bytes();
        let addr = match name.strip_prefix(b"@") {
            Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name)?,
            None => SocketAddr::from_pathname(&path)?,
        };
        UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)
    })();
    if let Err(e) = result {
        tracing::warn!(socket = ?path, reason = %e, "cannot notify systemd");
    }
}
