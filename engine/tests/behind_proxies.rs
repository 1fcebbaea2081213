//! A node behind the proxies users put in front of it — nginx (`proxy_pass`), HAProxy in
//! TCP mode with and without `send-proxy-v2` — and every rule of docs/design/trust.md
//! that a proxy could bend: operator actions need the admin token whatever address a
//! request comes from, writes need a write token once tokens are configured, quotas key
//! on the client a *trusted* balancer names and on nobody else's claim. Clients take
//! their own loopback source addresses (127.0.0.2, 127.0.0.3, …) so the node can tell
//! them apart.
//!
//! Needs `haproxy` and `nginx` (Debian's packages): the tests that run them are
//! `#[ignore]`d with that reason; `scripts/test-all.sh` installs them and runs every test.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::daemon::{haproxy, nginx_proxy, Daemon, ProxyHeader};
use common::*;

const WAIT: Duration = Duration::from_secs(20);

/// Two requests at once from a fresh bucket, then one every 10 s.
const QUOTA: &str = "[quota_default]\nrequests_per_s = 0.1\nrequests_burst = 2\n";

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

/// One request (`method path`, `headers`, `body`) on a fresh connection from `from`.
fn request_from(
    from: &str,
    to: SocketAddr,
    method_path: &str,
    headers: &str,
    body: &[u8],
) -> Response {
    let mut s = connect_from(from, to);
    let head = format!(
        "{method_path} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_response(&mut s, &mut Vec::new(), false).unwrap()
}

/// One GET on a fresh connection from `from`, with `headers`; the status.
fn get_from(from: &str, to: SocketAddr, path: &str, headers: &str) -> u16 {
    request_from(from, to, &format!("GET {path}"), headers, b"").status
}

fn bearer(token: Option<&str>) -> String {
    token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"))
}

/// The proxies a node is put behind on the same host: nginx, and HAProxy in TCP mode
/// without and with the PROXY protocol. Every request reaches the node from 127.0.0.1.
fn proxies_in_front(node: &Node) -> Vec<Daemon> {
    vec![
        nginx_proxy(node.http),
        haproxy(node.http, ProxyHeader::None),
        haproxy(node.http, ProxyHeader::V2),
    ]
}

const ADMIN_TOKEN: &str = "operator-secret";
const WRITE_TOKEN: &str = "writer-secret";

#[test]
#[ignore = "needs nginx, haproxy: run by scripts/test-all.sh"]
fn no_address_grants_an_operator_action_with_no_admin_token_configured() {
    // 127.0.0.1 trusted, so the PROXY header and X-Forwarded-For are believed: the
    // clients the node sees are 127.0.0.1 and 127.0.0.2 themselves, loopback all.
    let mut n = Node::start(
        &temp_dir("trust-no-admin-token"),
        &["--shards", "1", "--trusted-proxy", "127.0.0.1/32"],
    );
    let addr = upload(&n, &bytes(7, 4000));
    let fronts = proxies_in_front(&n);
    let doors = fronts.iter().map(|d| d.addr).chain([n.http]);
    for door in doors {
        for from in ["127.0.0.1", "127.0.0.2"] {
            let r = request_from(from, door, &format!("DELETE /o/{addr}"), "", b"");
            assert_eq!(
                (r.status, r.json()["code"].as_str()),
                (403, Some("forbidden")),
                "DELETE through {door} from {from}: {r:?}"
            );
            let message = r.json()["message"].as_str().unwrap().to_string();
            assert!(
                message.contains("--admin-token") && message.contains(&n.admin.to_string()),
                "{message}"
            );
        }
    }
    assert_eq!(get(n.http, &format!("/o/{addr}")).unwrap().status, 200);
    // The admin port removes it (`ron rm`).
    let out = ron(&["rm", "--admin", &n.admin.to_string(), &addr.to_string()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(get(n.http, &format!("/o/{addr}")).unwrap().status, 404);
    // The banner says what a proxy in front would open.
    let banner = std::fs::read_to_string(n.log_dir.join("stdout")).unwrap();
    assert!(
        banner.contains("A proxy in front on this host") && banner.contains("no admin token"),
        "{banner}"
    );
    n.stop();
}

#[test]
#[ignore = "needs nginx, haproxy: run by scripts/test-all.sh"]
fn behind_a_proxy_writes_and_removals_need_their_tokens() {
    let mut n = Node::start(
        &temp_dir("trust-tokens"),
        &[
            "--shards",
            "1",
            "--trusted-proxy",
            "127.0.0.1/32",
            "--token",
            WRITE_TOKEN,
            "--admin-token",
            ADMIN_TOKEN,
        ],
    );
    let fronts = proxies_in_front(&n);
    for (seed, door) in fronts.iter().map(|d| d.addr).enumerate() {
        let data = bytes(40 + seed as u64, 5000);
        let put = |token| request_from("127.0.0.2", door, "PUT /o", &bearer(token), &data);
        let r = put(None);
        assert_eq!(
            (r.status, r.json()["code"].as_str()),
            (401, Some("unauthorized")),
            "{door}"
        );
        assert_eq!(
            put(Some(ADMIN_TOKEN)).status,
            401,
            "{door}: not a write token"
        );
        let r = put(Some(WRITE_TOKEN));
        assert!(r.status == 201 || r.status == 200, "{door}: {r:?}");
        let addr = Address::of(&data);

        let delete = |token| {
            request_from(
                "127.0.0.1",
                door,
                &format!("DELETE /o/{addr}"),
                &bearer(token),
                b"",
            )
        };
        assert_eq!(delete(None).status, 401, "{door}");
        assert_eq!(delete(Some(WRITE_TOKEN)).status, 403, "{door}");
        assert_eq!(get(n.http, &format!("/o/{addr}")).unwrap().status, 200);
        let r = delete(Some(ADMIN_TOKEN));
        assert_eq!(
            (r.status, r.json()["removed"].as_bool()),
            (200, Some(true)),
            "{door}"
        );
        assert_eq!(get(n.http, &format!("/o/{addr}")).unwrap().status, 404);
    }
    n.stop();
}

#[test]
#[ignore = "needs nginx: run by scripts/test-all.sh"]
fn a_forged_x_forwarded_for_through_nginx_buys_no_fresh_bucket() {
    let mut n = node_with_quota("trust-xff-nginx", &["--trusted-proxy", "127.0.0.1/32"]);
    let addr = upload(&n, &bytes(8, 4000));
    let path = format!("/o/{addr}");
    let web = nginx_proxy(n.http);
    // nginx appends the address it saw; the node reads the list from the right, so a
    // client's own entries (a new one per request) name nobody.
    let forged = |i: u32| format!("X-Forwarded-For: 198.51.100.{i}\r\n");
    let answers: Vec<u16> = (1..=3)
        .map(|i| get_from("127.0.0.2", web.addr, &path, &forged(i)))
        .collect();
    assert_eq!(answers, [200, 200, 429]);
    assert_eq!(get_from("127.0.0.3", web.addr, &path, &forged(4)), 200);
    n.stop();
}

#[test]
#[ignore = "needs haproxy: run by scripts/test-all.sh"]
fn haproxy_without_the_proxy_protocol_is_one_client_and_its_header_is_believed_only_when_trusted() {
    // Without send-proxy-v2 the node cannot tell HAProxy's clients apart: they share
    // 127.0.0.1's bucket, which the upload (made from 127.0.0.1) has spent half of.
    let mut n = node_with_quota("trust-haproxy-plain", &["--trusted-proxy", "127.0.0.1/32"]);
    let addr = upload(&n, &bytes(9, 4000));
    let path = format!("/o/{addr}");
    let lb = haproxy(n.http, ProxyHeader::None);
    assert_eq!(get_from("127.0.0.2", lb.addr, &path, ""), 200);
    assert_eq!(get_from("127.0.0.3", lb.addr, &path, ""), 429);
    n.stop();

    // A balancer that sends PROXY v2 to a node that does not trust it gets no answer
    // from its header: the header is the request's first bytes, a malformed request.
    let mut n = node_with_quota("trust-haproxy-untrusted", &[]);
    let addr = upload(&n, &bytes(10, 4000));
    let lb = haproxy(n.http, ProxyHeader::V2);
    assert_eq!(
        get_from("127.0.0.2", lb.addr, &format!("/o/{addr}"), ""),
        400
    );
    n.stop();
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
#[ignore = "needs haproxy: run by scripts/test-all.sh"]
fn haproxy_with_send_proxy_v2_names_each_client_and_quotas_follow_them() {
    let mut n = node_with_quota("behind-haproxy", &["--trusted-proxy", "127.0.0.1/32"]);
    let addr = upload(&n, &bytes(5, 4000));
    let path = format!("/o/{addr}");
    let lb = haproxy(n.http, ProxyHeader::V2);
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

/// Behind HAProxy with `send-proxy-v2`, `connections_per_client_max` holds each client
/// the header names, not the balancer: every connection reaches the node from
/// HAProxy's 127.0.0.1, a client's connection past the limit is closed (HAProxy then
/// closes its client's), and another client is still served.
#[test]
#[ignore = "needs haproxy: run by scripts/test-all.sh"]
fn haproxy_with_send_proxy_v2_holds_each_client_to_its_connections() {
    let mut n = Node::start(
        &temp_dir("per-client-haproxy"),
        &[
            "--shards",
            "2",
            "--trusted-proxy",
            "127.0.0.1/32",
            "--max-connections-per-client",
            "2",
        ],
    );
    let addr = upload(&n, &bytes(11, 4000));
    let lb = haproxy(n.http, ProxyHeader::V2);
    let get = format!("GET /o/{addr} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let served = |from: &str| -> std::io::Result<TcpStream> {
        let mut s = connect_from(from, lb.addr);
        s.write_all(get.as_bytes())?;
        let r = read_response(&mut s, &mut Vec::new(), false)?;
        assert_eq!(r.status, 200);
        Ok(s)
    };
    let held: Vec<TcpStream> = (0..2).map(|_| served("127.0.0.2").unwrap()).collect();
    assert!(
        served("127.0.0.2").is_err(),
        "a third connection was answered"
    );
    assert_eq!(metric(n.admin, "ron_connections_refused_total"), 1);
    let other = served("127.0.0.3").expect("another client behind the balancer");
    drop((held, other));
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
        "PROXY TCP4 203.0.113.1 127.0.0.1 5000 80\r\nGET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"
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
    let raw = format!("PROXY TCP4 203.0.113.1 127.0.0.1 5000 80\r\nGET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
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
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("trusted_proxies: \"10.0.0.0/40\": the prefix is 0 to 32"),
        "{err}"
    );
}

/// The node's threads' voluntary context switches so far: each is a sleep it woke from.
fn wake_ups(n: &Node) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", n.pid())).unwrap();
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .filter_map(|status| {
            let line = status
                .lines()
                .find(|l| l.starts_with("voluntary_ctxt_switches:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

/// A trusted peer that sends the start of a PROXY header and stops is peeked at again
/// after pauses that grow to 100 ms, not every millisecond: twenty such connections
/// cost the node a few dozen wake-ups a second, not a thousand. They still end at the
/// header deadline, unanswered.
#[test]
fn a_trusted_peer_stopping_inside_a_proxy_header_is_not_polled_every_millisecond() {
    let mut n = Node::start(
        &temp_dir("trust-partial-header"),
        &[
            "--shards",
            "1",
            "--trusted-proxy",
            "127.0.0.1/32",
            "--header-timeout-ms",
            "6000",
        ],
    );
    let stalled: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(n.http).unwrap();
            s.write_all(b"PROXY TCP4 ").unwrap();
            s
        })
        .collect();
    // Past the pauses' growth (1 + 2 + … + 64 ms), then two seconds counted.
    std::thread::sleep(Duration::from_millis(1_500));
    // Each waiting header holds a connection (counted against connections_max).
    assert_eq!(metric(n.admin, "ron_connections_open"), 20);
    let before = wake_ups(&n);
    std::thread::sleep(Duration::from_secs(2));
    let woke = wake_ups(&n) - before;
    println!("{woke} wake-ups in 2 s for 20 partial headers");
    assert!(
        woke < 400,
        "{woke} wake-ups in 2 s for 20 partial headers (1 ms polling: ~2,000)"
    );
    for mut s in stalled {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut answer = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut answer);
        assert!(answer.is_empty(), "closed unanswered");
    }
    n.stop();
}
