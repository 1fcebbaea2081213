//! A node behind a load balancer: a real HAProxy (`send-proxy-v2`) in front of it, and
//! X-Forwarded-For from a trusted sender. Quotas key on the client the balancer names;
//! nobody else's claim counts. Clients take their own loopback source addresses
//! (127.0.0.2, 127.0.0.3, …) so the node can tell them apart.
//!
//! Needs `haproxy` (Debian's package; `.ci/run` installs it): the test fails without
//! it, it does not skip.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::daemon::{program, spawn, Daemon};
use common::*;

const WAIT: Duration = Duration::from_secs(20);

/// Two requests at once from a fresh bucket, then one every 10 s.
const QUOTA: &str = "[quota_default]\nrequests_per_s = 0.1\nrequests_burst = 2\n";

/// HAProxy in TCP mode in front of `backend`, announcing each client with PROXY v2.
fn haproxy(backend: SocketAddr) -> Daemon {
    let dir = temp_dir("haproxy");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = format!(
        "global\n  maxconn 256\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
         frontend front\n  bind {addr}\n  default_backend ron\n\
         backend ron\n  server node {backend} send-proxy-v2\n"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(program("haproxy"));
    command.arg("-db").arg("-f").arg(&path);
    spawn(command, addr, dir)
}

/// A connection to `to` from the loopback address `from`.
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    use socket2::{Domain, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let source: SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&SockAddr::from(source)).unwrap();
    socket.connect(&SockAddr::from(to)).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
}

/// One GET on a fresh connection from `from`, with `headers`; the status.
fn get_from(from: &str, to: SocketAddr, path: &str, headers: &str) -> u16 {
    let mut s = connect_from(from, to);
    let raw = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n");
    s.write_all(raw.as_bytes()).unwrap();
    read_response(&mut s, &mut Vec::new(), false)
        .unwrap()
        .status
}

fn node_with_quota(name: &str, extra: &[&str]) -> Node {
    let dir = temp_dir(name);
    let config = dir.with_extension("toml");
    std::fs::write(&config, QUOTA).unwrap();
    let mut flags = vec!["--config", config.to_str().unwrap(), "--shards", "1"];
    flags.extend_from_slice(extra);
    Node::start(&dir, &flags)
}

#[test]
fn haproxy_with_send_proxy_v2_names_each_client_and_quotas_follow_them() {
    let mut n = node_with_quota("behind-haproxy", &["--trusted-proxy", "127.0.0.1/32"]);
    let addr = upload(&n, &bytes(5, 4000));
    let path = format!("/o/{addr}");
    let lb = haproxy(n.http);
    // Every connection reaches the node from HAProxy's 127.0.0.1; PROXY v2 names the
    // client: 127.0.0.2 spends its own burst, 127.0.0.3 still has its own.
    let first: Vec<u16> = (0..3)
        .map(|_| get_from("127.0.0.2", lb.addr, &path, ""))
        .collect();
    assert_eq!(first, [200, 200, 429]);
    assert_eq!(get_from("127.0.0.3", lb.addr, &path, ""), 200);
    assert_eq!(get_from("127.0.0.3", lb.addr, &path, ""), 200);
    assert_eq!(get_from("127.0.0.3", lb.addr, &path, ""), 429);
    n.stop();
}

#[test]
fn x_forwarded_for_counts_only_from_a_trusted_sender_and_proxy_headers_only_from_one() {
    let mut n = node_with_quota("xff", &["--trusted-proxy", "127.0.0.1"]);
    let addr = upload(&n, &bytes(6, 4000));
    let path = format!("/o/{addr}");
    let xff = |ip: &str| format!("X-Forwarded-For: {ip}, 127.0.0.1\r\n");
    // From the trusted 127.0.0.1: the rightmost untrusted address is the client.
    let forwarded: Vec<u16> = (0..3)
        .map(|_| get_from("127.0.0.1", n.http, &path, &xff("198.51.100.7")))
        .collect();
    assert_eq!(forwarded, [200, 200, 429]);
    assert_eq!(
        get_from("127.0.0.1", n.http, &path, &xff("198.51.100.8")),
        200
    );
    // From 127.0.0.4, not trusted: its claim is ignored, its own bucket is used.
    assert_eq!(
        get_from("127.0.0.4", n.http, &path, &xff("198.51.100.8")),
        200
    );
    assert_eq!(
        get_from("127.0.0.4", n.http, &path, &xff("198.51.100.9")),
        200
    );
    assert_eq!(
        get_from("127.0.0.4", n.http, &path, &xff("198.51.100.10")),
        429
    );

    // A PROXY header from an untrusted address is not one: a malformed request (400).
    let mut s = connect_from("127.0.0.5", n.http);
    let raw = format!(
        "PROXY TCP4 203.0.113.1 127.0.0.1 5000 80\r\nGET {path} HTTP/1.1\r\nHost: t\r\n\r\n"
    );
    s.write_all(raw.as_bytes()).unwrap();
    assert_eq!(
        read_response(&mut s, &mut Vec::new(), false)
            .unwrap()
            .status,
        400
    );
    // From the trusted address, a v1 header names the client; a broken one ends the
    // connection without an answer.
    let mut s = connect_from("127.0.0.1", n.http);
    let raw = format!("PROXY TCP4 203.0.113.1 127.0.0.1 5000 80\r\nGET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.write_all(raw.as_bytes()).unwrap();
    assert_eq!(
        read_response(&mut s, &mut Vec::new(), false)
            .unwrap()
            .status,
        200
    );
    let mut s = connect_from("127.0.0.1", n.http);
    s.write_all(b"PROXY TCP4 not-an-address\r\nGET / HTTP/1.1\r\n\r\n")
        .unwrap();
    assert!(
        read_response(&mut s, &mut Vec::new(), false).is_err(),
        "closed, no answer"
    );
    n.stop();
}

#[test]
fn a_bad_trusted_proxy_block_refuses_the_start() {
    let out = run_ron(&temp_dir("bad-proxy"), &["--trusted-proxy", "10.0.0.0/40"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("trusted_proxies: \"10.0.0.0/40\": the prefix is 0 to 32"),
        "{err}"
    );
}
