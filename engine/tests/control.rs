//! The control thread against the real binary over real sockets: quotas (HTTP and
//! OAP/1), live reload on SIGHUP and on file change, readiness under an in-flight flood,
//! configuration errors, and `/metrics` read by an independent Prometheus text parser.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("ron.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A node with `config` as its TOML file (plus `extra` flags).
fn configured_node(name: &str, config: &str, extra: &[&str]) -> (Node, PathBuf) {
    let dir = temp_dir(name);
    let path = write_config(&dir, config);
    let mut args = vec!["--config", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    (Node::start(&dir.join("data"), &args), path)
}

/// A one-shard node with a tenant `bytes` limited to 1,000 bytes/s from a `burst` and
/// a tenant `free` with no limit.
fn bytes_and_free_tenants(name: &str, burst: u64, extra: &[&str]) -> Node {
    let config = format!(
        "[tenants.bytes]\ntokens = [\"tok-bytes\"]\nbytes_per_s = 1000\nbytes_burst = {burst}\n\n\
         [tenants.free]\ntokens = [\"tok-free\"]\n"
    );
    let mut args = vec!["--shards", "1"];
    args.extend_from_slice(extra);
    configured_node(name, &config, &args).0
}

/// `data` uploaded as tenant `free`, and its address.
fn stored_by_free(n: &Node, data: &[u8]) -> ron_codec::Address {
    let r = put(n.http, "/o", data, &bearer("free"));
    assert_eq!(r.status, 201, "{r:?}");
    r.json()["obj"].as_str().unwrap().parse().unwrap()
}

/// How a test proves it is `tenant`: the tests' configs give tenant NAME the token
/// `tok-NAME`.
fn bearer(tenant: &str) -> String {
    format!("Authorization: Bearer tok-{tenant}\r\n")
}

/// How an OAP/1 client reaches `n` presenting `token`.
fn oap_as(n: &Node, token: &str) -> (ron_client::transport::Endpoint, ron_client::Options) {
    let endpoint = ron_client::transport::Endpoint {
        addr: n.oap.to_string(),
        protocol: ron_client::transport::Protocol::Oap,
        tls: None,
    };
    let options = ron_client::Options {
        token: Some(token.into()),
        ..ron_client::Options::default()
    };
    (endpoint, options)
}

/// A GET of a missing object on a kept-alive connection, as `tenant` (by its token).
fn get_as(stream: &mut TcpStream, pending: &mut Vec<u8>, tenant: &str) -> Response {
    get_with_head(stream, pending, &bearer(tenant))
}

/// A GET of a missing object on a kept-alive connection, with extra header lines.
fn get_with_head(stream: &mut TcpStream, pending: &mut Vec<u8>, headers: &str) -> Response {
    let missing = Address::of(b"not stored");
    let raw = format!("GET /o/{missing} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n");
    stream.write_all(raw.as_bytes()).unwrap();
    read_response(stream, pending, false).unwrap()
}

fn hangup(n: &Node) {
    send_signal(n.pid(), "HUP");
}

/// Bytes are charged as a transfer starts, not when it ends: a tenant whose answer is
/// still streaming finds its bucket in debt on its next request, on any connection.
/// Before, every transfer it started at once was admitted on one byte of the bucket
/// (HTTP/2 streams, connections, OAP/1 requests), and a stream cut short was never
/// charged on OAP/1.
#[test]
fn a_transfer_under_way_has_charged_its_bytes_already() {
    let config = r#"
[tenants.bytes]
tokens = ["tok-bytes"]
bytes_per_s = 100000
bytes_burst = 200000

[tenants.free]
tokens = ["tok-free"]
"#;
    let (n, _) = configured_node("quota-concurrent", config, &["--shards", "1"]);
    // Larger than what loopback's socket buffers hold: the answer cannot end until read.
    let data = bytes(9, 48 << 20);
    let r = put(n.http, "/o", &data, &bearer("free"));
    assert_eq!(r.status, 201, "{r:?}");
    let addr = r.json()["obj"].as_str().unwrap().to_string();

    let mut streaming = connect(n.http);
    let raw = format!(
        "GET /o/{addr} HTTP/1.1\r\nHost: localhost\r\n{}Connection: close\r\n\r\n",
        bearer("bytes")
    );
    streaming.write_all(raw.as_bytes()).unwrap();
    let mut first = [0u8; 12];
    std::io::Read::read_exact(&mut streaming, &mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200", "the download has started");

    let mut other = connect(n.http);
    let refused = get_as(&mut other, &mut Vec::new(), "bytes");
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(refused.json()["code"], "over_quota");
    drop(streaming);
}

/// A chunked upload (every HTTP/2 upload is one) declares no length to charge up front:
/// its chunks are charged as they arrive. Before, it was charged only at its end, so a
/// tenant could have any number of uploads under way on one byte of its bucket.
#[test]
fn a_chunked_upload_under_way_charges_its_chunks_as_they_arrive() {
    let config = r#"
[tenants.bytes]
tokens = ["tok-bytes"]
bytes_per_s = 1000
bytes_burst = 200000
"#;
    let (n, _) = configured_node("quota-chunked", config, &["--shards", "1"]);
    let mut uploading = connect(n.http);
    let head = format!(
        "PUT /o HTTP/1.1\r\nHost: localhost\r\n{}Transfer-Encoding: chunked\r\n\r\n",
        bearer("bytes")
    );
    uploading.write_all(head.as_bytes()).unwrap();
    let chunk = bytes(4, 100_000);
    for _ in 0..3 {
        write!(uploading, "{:x}\r\n", chunk.len()).unwrap();
        uploading.write_all(&chunk).unwrap();
        uploading.write_all(b"\r\n").unwrap();
    }
    // 300 kB of a 200 kB burst are in the node; the upload has not ended.
    let mut other = connect(n.http);
    let mut pending = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let refused = loop {
        let r = get_as(&mut other, &mut pending, "bytes");
        if r.status != 404 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(refused.json()["code"], "over_quota");

    // The upload still ends as it should, charged once: 300 kB, not 600 kB.
    uploading.write_all(b"0\r\n\r\n").unwrap();
    let mut pending = Vec::new();
    let r = read_response(&mut uploading, &mut pending, false).unwrap();
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["len"], 300_000);
}

/// An OAP/1 upload whose connection drops gives back what it declared and did not
/// send. Before, its whole declared length stayed charged: a client on a flaky link was
/// throttled for bytes it never sent.
#[test]
fn an_oap_upload_cut_short_gives_back_what_it_did_not_send() {
    let config = r#"
[tenants.bytes]
tokens = ["tok-bytes"]
bytes_per_s = 1000
bytes_burst = 200000
"#;
    let (n, _) = configured_node("quota-oap-cut", config, &["--shards", "1"]);
    let start = ron_codec::messages::ObjectRequest::Put {
        len: 10_000_000,
        addr: None,
        copies: None,
    }
    .frame(1, 0, bytes::Bytes::from_static(b"tok-bytes"))
    .unwrap();
    let mut cut = TcpStream::connect(n.oap).unwrap();
    cut.write_all(&start.to_bytes()).unwrap();
    // Charged 10 MB up front while it is open: the tenant is in debt.
    let (endpoint, options) = oap_as(&n, "tok-bytes");
    let missing = ron_codec::Address::of(b"not stored");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut client = ron_client::Client::connect(&endpoint, options.clone()).unwrap();
        match client.stat(missing) {
            Err(ron_client::error::ClientError::Server { status: 429, .. }) => break,
            other => assert!(Instant::now() < deadline, "never in debt: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(cut);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut client = ron_client::Client::connect(&endpoint, options.clone()).unwrap();
        match client.stat(missing) {
            Err(ron_client::error::ClientError::Server { status: 404, .. }) => break,
            other => assert!(
                Instant::now() < deadline,
                "still charged for bytes never sent: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A verified (proof) GET over OAP/1 is charged the whole groups it sends, not the
/// range it asked for. Before, a one-byte range carried a 64 KiB group and its proof
/// and was charged one byte.
#[test]
fn a_proof_get_is_charged_the_groups_it_sends() {
    let n = bytes_and_free_tenants("quota-proof", 100_000, &[]);
    let data = bytes(8, 5 * 65536);
    let addr = stored_by_free(&n, &data);
    let (endpoint, options) = oap_as(&n, "tok-bytes");
    let mut client = ron_client::Client::connect(&endpoint, options).unwrap();
    for group in [1u64, 3] {
        let one_byte = ron_client::ByteRange {
            first: group * 65536 + 5,
            last: group * 65536 + 5,
        };
        let mut sink = Vec::new();
        client
            .get(addr, Some(one_byte), &mut sink, &mut |_| {})
            .unwrap();
        assert_eq!(sink, [data[(group * 65536 + 5) as usize]]);
    }
    match client.stat(addr) {
        Err(ron_client::error::ClientError::Server { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (429, "over_quota"));
        }
        other => panic!("two 64 KiB groups sent of a 100 kB burst: expected 429, got {other:?}"),
    }
}

/// A GET over OAP/1 that ends early on a rotten group stays charged for the bytes it
/// sent. Before, the failure refunded every byte, so a tenant could read most of a
/// damaged object again and again for free.
#[test]
fn an_oap_answer_cut_by_a_rotten_group_stays_charged_for_what_it_sent() {
    let n = bytes_and_free_tenants("quota-rotten", 150_000, &["--ec", "off"]);
    let data = bytes(8, 5 * 65536);
    let addr = stored_by_free(&n, &data);
    let path = n.object_file(&addr);
    let mut file = std::fs::read(&path).unwrap();
    file[3 * 65536 + 10] ^= 1;
    std::fs::write(&path, file).unwrap();

    let (endpoint, options) = oap_as(&n, "tok-bytes");
    let mut client = ron_client::Client::connect(&endpoint, options.clone()).unwrap();
    let mut sink = Vec::new();
    let cut = client.get(addr, None, &mut sink, &mut |_| {});
    assert!(cut.is_err(), "the rotten group ends the answer: {cut:?}");
    let mut client = ron_client::Client::connect(&endpoint, options).unwrap();
    match client.stat(addr) {
        Err(ron_client::error::ClientError::Server { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (429, "over_quota"));
        }
        other => panic!("196,608 bytes sent of a 150 kB burst: expected 429, got {other:?}"),
    }
}

/// The HTTP counterpart: a GET the node cuts short (a rotten group past the first) is
/// charged what it sent, not its span. Before, the whole 640 KiB span stayed charged
/// against a 300 kB burst, and the client's retry was refused (429) for minutes.
#[test]
fn an_http_answer_cut_by_a_rotten_group_is_charged_what_it_sent() {
    let n = bytes_and_free_tenants("quota-rotten-http", 300_000, &["--ec", "off"]);
    let data = bytes(9, 10 * 65536);
    let addr = stored_by_free(&n, &data);
    flip_byte(&n.object_file(&addr), 65536 + 10);

    let path = format!("/o/{addr}");
    let raw = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{}Connection: close\r\n\r\n",
        bearer("bytes")
    );
    if let Ok(r) = request(n.http, raw.as_bytes()) {
        assert!(r.body.len() < data.len(), "cut short: {}", r.status);
    }
    let again = get_with(
        n.http,
        &path,
        &format!("{}Range: bytes=0-99\r\n", bearer("bytes")),
    );
    assert_eq!(
        again.status, 206,
        "charged what it sent (64 KiB at most): {again:?}"
    );
}

#[test]
fn a_burst_past_the_bucket_gets_429_with_retry_after_and_recovers() {
    // One shard holds the whole bucket, so the numbers are exact.
    let config = r#"
[tenants.burst]
tokens = ["tok-burst"]
requests_per_s = 2
requests_burst = 5

[tenants.bytes]
tokens = ["tok-bytes"]
bytes_per_s = 100000
bytes_burst = 200000

[tenants."7"]
tokens = ["tok-7"]
requests_per_s = 1
requests_burst = 2
"#;
    let (n, _) = configured_node("quota-burst", config, &["--shards", "1"]);
    let mut conn = connect(n.http);
    let mut pending = Vec::new();
    for i in 0..5 {
        let r = get_as(&mut conn, &mut pending, "burst");
        assert_eq!(r.status, 404, "request {i} is within the burst");
    }
    let refused = get_as(&mut conn, &mut pending, "burst");
    assert_eq!(refused.status, 429);
    let body = refused.json();
    assert_eq!(body["code"], "over_quota");
    assert_eq!(body["retryable"], true);
    assert_eq!(
        body["message"],
        "tenant \"burst\" is over its quota of 2 requests/s (burst 5)"
    );
    let wait_ms = body["retry_after_ms"].as_u64().unwrap();
    assert!(
        (1..=500).contains(&wait_ms),
        "at 2/s one request refills in ≤ 500 ms: {wait_ms}"
    );
    assert_eq!(refused.header("Retry-After"), Some("1"));
    // Other tenants are not affected, and the connection stays open.
    assert_eq!(get_as(&mut conn, &mut pending, "someone-else").status, 404);
    std::thread::sleep(Duration::from_millis(wait_ms + 20));
    assert_eq!(
        get_as(&mut conn, &mut pending, "burst").status,
        404,
        "recovered"
    );

    // Bytes: a 150 kB upload and its download overdraw a 200 kB burst. The
    // bucket refills while the requests run, so the wait is 1 s of debt less
    // the time they took (a slow machine takes more than 100 ms).
    let data = bytes(3, 150_000);
    let bytes_started = std::time::Instant::now();
    let r = put(n.http, "/o", &data, &bearer("bytes"));
    assert_eq!(r.status, 201, "{r:?}");
    let addr = r.json()["obj"].as_str().unwrap().to_string();
    let r = get_with(n.http, &format!("/o/{addr}"), &bearer("bytes"));
    assert_eq!((r.status, r.body.len()), (200, 150_000));
    let r = get_with(n.http, &format!("/o/{addr}"), &bearer("bytes"));
    assert_eq!(r.status, 429);
    let wait_ms = r.json()["retry_after_ms"].as_u64().unwrap();
    let refilled_ms = bytes_started.elapsed().as_millis() as u64;
    assert!(
        (1000u64.saturating_sub(refilled_ms + 5)..=1000).contains(&wait_ms),
        "100 kB of debt at 100 kB/s, less {refilled_ms} ms of refill: {wait_ms}"
    );
    assert_eq!(r.header("Retry-After"), Some("1"));

    // OAP/1: the token in the capability section names the configured tenant "7".
    let (endpoint, options) = oap_as(&n, "tok-7");
    let mut client = ron_client::Client::connect(&endpoint, options).unwrap();
    let stored: ron_codec::Address = addr.parse().unwrap();
    assert_eq!(client.stat(stored).unwrap(), 150_000);
    assert_eq!(client.stat(stored).unwrap(), 150_000);
    match client.stat(stored) {
        Err(ron_client::error::ClientError::Server {
            status,
            code,
            retry_after_ms,
            ..
        }) => {
            assert_eq!((status, code.as_str()), (429, "over_quota"));
            assert!(retry_after_ms.is_some_and(|ms| (1..=1000).contains(&ms)));
        }
        other => panic!("expected 429 over_quota, got {other:?}"),
    }

    // Quota counters reach the control thread with the shards' next report.
    wait_for("the quota report", Duration::from_secs(5), || {
        try_metric(
            n.admin,
            "ron_quota_rejections_total{tenant=\"7\",limit=\"requests\"}",
        ) == Some(1)
    });
    assert_eq!(
        metric(
            n.admin,
            "ron_quota_rejections_total{tenant=\"burst\",limit=\"requests\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            n.admin,
            "ron_quota_rejections_total{tenant=\"bytes\",limit=\"bytes\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            n.admin,
            "ron_quota_rejections_total{tenant=\"7\",limit=\"requests\"}"
        ),
        1
    );
    assert_eq!(
        metric(n.admin, "ron_rejections_total{reason=\"over_quota\"}"),
        3
    );
    assert_eq!(
        metric(
            n.admin,
            "ron_requests_total{protocol=\"oap\",op=\"stat\",status=\"429\"}"
        ),
        1
    );
}

#[test]
fn a_claimed_tenant_name_proves_nothing_and_rotating_it_escapes_no_quota() {
    // Unauthenticated callers share their address's bucket; a configured tenant's
    // (generous) limits need its token, not its name.
    let config = r#"
[quota_default]
requests_per_s = 0.5
requests_burst = 3

[tenants.paid]
tokens = ["tok-paid"]
requests_per_s = 1000
requests_burst = 1000
"#;
    let (n, _) = configured_node("tenant-claims", config, &["--shards", "1"]);
    let mut conn = connect(n.http);
    let mut pending = Vec::new();
    let statuses: Vec<u16> = (0..6)
        .map(|i| {
            let claim = format!("X-Tenant: rotating-{i}\r\n");
            get_with_head(&mut conn, &mut pending, &claim).status
        })
        .collect();
    assert_eq!(
        statuses,
        [404, 404, 404, 429, 429, 429],
        "one bucket per address"
    );
    let claimed = get_with_head(&mut conn, &mut pending, "X-Tenant: paid\r\n");
    assert_eq!(
        claimed.status, 429,
        "the name of a configured tenant is no token"
    );
    assert_eq!(
        claimed.json()["message"],
        "client 127.0.0.1 is over its quota of 0.5 requests/s (burst 3)"
    );
    // OAP's tenant_id is no proof either.
    let endpoint = ron_client::transport::Endpoint {
        addr: n.oap.to_string(),
        protocol: ron_client::transport::Protocol::Oap,
        tls: None,
    };
    let options = ron_client::Options {
        tenant_id: 12345,
        ..ron_client::Options::default()
    };
    let mut client = ron_client::Client::connect(&endpoint, options).unwrap();
    match client.stat(Address::of(b"not stored")) {
        Err(ron_client::error::ClientError::Server { status, .. }) => assert_eq!(status, 429),
        other => panic!("expected 429, got {other:?}"),
    }
    // The token is.
    for _ in 0..20 {
        assert_eq!(get_as(&mut conn, &mut pending, "paid").status, 404);
    }
}

#[test]
fn a_tenant_busy_on_one_shard_gets_its_limit_there_after_a_rebalance() {
    // Two shards: a fresh tenant starts with half its bucket on each. One connection
    // lands on one shard; after a rebalance that shard holds ≥ 97.5 % of the limit.
    let config =
        "[tenants.steady]\ntokens = [\"tok-steady\"]\nrequests_per_s = 40\nrequests_burst = 40\n";
    let (n, _) = configured_node("quota-share", config, &["--shards", "2"]);
    let mut conn = connect(n.http);
    let mut pending = Vec::new();
    let mut admitted = 0;
    let burst_started = Instant::now();
    while get_as(&mut conn, &mut pending, "steady").status == 404 {
        admitted += 1;
        assert!(admitted < 100, "the bucket never ran out");
    }
    // Half of the burst (20), plus what the shard's half of the rate (20/s) refilled
    // while the requests ran: a loaded machine runs them slower.
    let refilled = (20.0 * burst_started.elapsed().as_secs_f64()).ceil() as u32;
    assert!(
        (19..=22 + refilled).contains(&admitted),
        "half of the burst first: {admitted} ({refilled} refilled meanwhile)"
    );
    // Keep asking for 3 s; the shares follow the demand within a period or two.
    let started = Instant::now();
    let mut admitted = 0u32;
    while started.elapsed() < Duration::from_secs(3) {
        if get_as(&mut conn, &mut pending, "steady").status == 404 {
            admitted += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // 40/s for 3 s is 120 at most (plus what refilled during the first burst).
    assert!(
        (95..=130).contains(&admitted),
        "{admitted} admitted in 3 s at 40/s"
    );
}

#[test]
fn a_reload_changes_limits_live_without_dropping_connections() {
    let generous =
        "[tenants.live]\ntokens = [\"tok-live\"]\nrequests_per_s = 1000\nrequests_burst = 1000\n";
    let (n, path) = configured_node("reload", generous, &["--shards", "1"]);
    let mut conn = connect(n.http);
    let mut pending = Vec::new();
    for _ in 0..20 {
        assert_eq!(get_as(&mut conn, &mut pending, "live").status, 404);
    }
    assert_eq!(metric(n.admin, "ron_config_version"), 1);

    // SIGHUP: a strict limit applies to the open connection.
    std::fs::write(
        &path,
        "[tenants.live]\ntokens = [\"tok-live\"]\nrequests_per_s = 0.5\nrequests_burst = 2\n",
    )
    .unwrap();
    hangup(&n);
    wait_for("the strict limit", Duration::from_secs(5), || {
        get_as(&mut conn, &mut pending, "live").status == 429
    });
    // The shards apply a policy before the control thread logs it and shows its version.
    wait_for("version 2 shown", Duration::from_secs(5), || {
        metric(n.admin, "ron_config_version") == 2 && n.stderr().contains("version=2")
    });
    assert!(
        n.stderr().contains("configuration reloaded"),
        "{}",
        n.stderr()
    );

    // A bad file (noticed by the file watcher): the running limits stay, and the log
    // names the key.
    std::fs::write(
        &path,
        "[tenants.live]\ntokens = [\"tok-live\"]\nrequests_per_s = -3\n",
    )
    .unwrap();
    wait_for("the refused reload", Duration::from_secs(5), || {
        n.stderr().contains("configuration reload failed")
    });
    assert!(
        n.stderr()
            .contains("tenants.live.requests_per_s must be a finite number ≥ 0, not -3"),
        "{}",
        n.stderr()
    );
    // Logged before the count is shown.
    wait_for("the failure counted", Duration::from_secs(5), || {
        metric(n.admin, "ron_config_reload_failures_total") == 1
    });
    assert_eq!(metric(n.admin, "ron_config_version"), 2);
    let statuses: Vec<u16> = (0..5)
        .map(|_| get_as(&mut conn, &mut pending, "live").status)
        .collect();
    assert!(statuses.contains(&429), "still strict: {statuses:?}");

    // Fixed again, noticed without a signal.
    std::fs::write(&path, generous).unwrap();
    wait_for("the generous limit", Duration::from_secs(5), || {
        get_as(&mut conn, &mut pending, "live").status == 404
    });
    wait_for("version 3 shown", Duration::from_secs(5), || {
        metric(n.admin, "ron_config_version") == 3
    });
    // The same connection served every request above.
    assert_eq!(metric(n.admin, "ron_connections_total"), 1);

    // A key that needs a restart is named in the log and not applied.
    let moved = format!("idle_timeout_ms = 1234\n{generous}");
    std::fs::write(&path, moved).unwrap();
    hangup(&n);
    wait_for("the restart warning", Duration::from_secs(5), || {
        n.stderr()
            .contains("changed keys take effect only at a restart")
    });
    assert!(
        n.stderr().contains("keys=idle_timeout_ms"),
        "{}",
        n.stderr()
    );
}

#[test]
fn readiness_flips_under_an_in_flight_flood_and_back() {
    // A slot is held while the shard works on a request (a waiting peer parks it:
    // attacks.rs), so the flood is real work: eight clients asking for cold objects
    // (a 1 MiB cache, 24 MiB of objects) as fast as a four-slot shard answers.
    let args = [
        "--shards",
        "1",
        "--max-inflight",
        "4",
        "--cache-bytes",
        "1MiB",
    ];
    let (n, _) = configured_node("flood", "", &args);
    let addrs: Vec<Address> = (0..96)
        .map(|i| upload(&n, &bytes(900 + i, 256 << 10)))
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refusals = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (stop, addrs, http) = (std::sync::Arc::clone(&stop), addrs.clone(), n.http);
            let refusals = std::sync::Arc::clone(&refusals);
            std::thread::spawn(move || {
                let mut refused = 0u64;
                let deadline = Instant::now() + Duration::from_secs(20);
                for i in (c * 11..).step_by(7) {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) || Instant::now() > deadline
                    {
                        break;
                    }
                    let r = get(http, &format!("/o/{}", addrs[i % addrs.len()])).unwrap();
                    if r.status == 503 {
                        assert_eq!(r.json()["code"], "overloaded");
                        assert_eq!(r.json()["retry_after_ms"], 1000);
                        assert_eq!(r.header("Retry-After"), Some("1"));
                        refused += 1;
                        refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    } else {
                        assert_eq!(r.status, 200);
                    }
                }
                refused
            })
        })
        .collect();
    wait_for("saturation", Duration::from_secs(15), || {
        get(n.admin, "/readyz").unwrap().status == 503
    });
    // The readiness report can show the four slots taken before a fifth request has
    // met them: the flood goes on until one has (or the clients' 20 s are up).
    wait_for("a refusal", Duration::from_secs(15), || {
        refusals.load(std::sync::atomic::Ordering::Relaxed) > 0
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let refused: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(
        refused > 0,
        "a four-slot shard under eight clients refuses some"
    );
    // Counters reach /metrics with the shard's next report.
    wait_for("the refusals counted", Duration::from_secs(5), || {
        metric(n.admin, "ron_rejections_total{reason=\"overloaded\"}") >= refused
    });
    // A request's slot is freed just after its answer leaves.
    wait_for(
        "readiness, nothing in flight",
        Duration::from_secs(5),
        || {
            let r = get(n.admin, "/readyz").unwrap();
            r.status == 200 && r.json()["shards"][0]["inflight"] == 0
        },
    );
    let report = get(n.admin, "/readyz").unwrap().json();
    assert_eq!(report["overloaded"], false);
    assert_eq!(report["shards"][0]["inflight"], 0);
    assert_eq!(report["shards"][0]["inflight_max"], 4);
}

#[test]
fn configuration_errors_name_the_key() {
    let dir = temp_dir("config-errors");
    let cases: [(&str, &[&str], i32, &str); 5] = [
        (
            "[tenants.a]\nrequests_per_s = -1\n",
            &[],
            2,
            "tenants.a.requests_per_s must be a finite number ≥ 0, not -1",
        ),
        (
            "[tenants.a]\nrequests_per_sec = 1\n",
            &[],
            2,
            "unknown field `requests_per_sec`",
        ),
        (
            "[quota_default]\nbytes_per_s = \"lots\"\n",
            &[],
            2,
            "bytes_per_s",
        ),
        (
            "",
            &["--log-format", "xml"],
            2,
            "--log-format (key log_format): invalid log format \"xml\"",
        ),
        (
            "tokens = [\"t\"]\n[tenants.a]\ntokens = [\"t\"]\n",
            &[],
            2,
            "tenants.a.tokens: a token is also listed in tokens",
        ),
    ];
    for (i, (text, flags, code, expected)) in cases.iter().enumerate() {
        let path = dir.join(format!("case{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let mut args = vec!["--config", path.to_str().unwrap(), "--http", "127.0.0.1:1"];
        args.extend_from_slice(flags);
        let out = run_ron(&dir.join(format!("data{i}")), &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "case {i}: {stderr}");
        assert!(stderr.contains(expected), "case {i}: {stderr}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ron"))
        .args(["config", "print"])
        .env("RON_QUOTA_TENANTS_MAX", "many")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("environment RON_QUOTA_TENANTS_MAX (key quota_tenants_max): invalid number"));
}

#[test]
fn a_quiet_node_trims_its_heap_once_and_not_while_it_answers() {
    use ron_control::heap::{HEAP_TRIM_PERIOD_MS, HEAP_TRIM_QUIET_MS};
    let quiet = Duration::from_millis(HEAP_TRIM_QUIET_MS);
    let dir = temp_dir("heap-trim");
    let n = Node::start(&dir.join("data"), &["--shards", "1"]);
    let addr = upload(&n, &bytes(53, 1 << 20));
    // A request every half second, for longer than the quiet spell: no trim.
    let busy_until = Instant::now() + quiet + Duration::from_secs(2);
    while Instant::now() < busy_until {
        assert_eq!(get(n.http, &format!("/o/{addr}")).unwrap().status, 200);
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        metric(n.admin, "ron_heap_trims_total"),
        0,
        "trimmed while answering"
    );
    let last_answer = Instant::now();
    let trims = metric_reaching(
        n.admin,
        "ron_heap_trims_total",
        1,
        quiet + Duration::from_secs(5),
    );
    assert_eq!(
        trims,
        1,
        "no trim {:?} after the last answer",
        last_answer.elapsed()
    );
    assert!(
        last_answer.elapsed() + Duration::from_millis(600) >= quiet,
        "trimmed {:?} after the last answer",
        last_answer.elapsed()
    );
    // Scrapes are not answers of the shards, and the next trim is a period away.
    std::thread::sleep(Duration::from_secs(2));
    const { assert!(HEAP_TRIM_PERIOD_MS > 2_000 + HEAP_TRIM_QUIET_MS + 5_000) };
    assert_eq!(metric(n.admin, "ron_heap_trims_total"), 1);
}

#[test]
fn metrics_parse_with_an_independent_prometheus_parser() {
    let config = "tokens = [\"w\"]\n[quota_default]\nrequests_per_s = 1000\n\
                  [tenants.a]\ntokens = [\"tok-a\"]\nrequests_per_s = 1\n";
    let (n, _) = configured_node("prom", config, &["--shards", "2", "--log-format", "json"]);
    let r = put(
        n.http,
        "/o",
        &bytes(9, 70_000),
        "Authorization: Bearer w\r\n",
    );
    assert_eq!(r.status, 201, "{r:?}");
    let addr: Address = r.json()["obj"].as_str().unwrap().parse().unwrap();
    get(n.http, &format!("/o/{addr}")).unwrap();
    let endpoint = ron_client::transport::Endpoint {
        addr: n.oap.to_string(),
        protocol: ron_client::transport::Protocol::Oap,
        tls: None,
    };
    let mut client =
        ron_client::Client::connect(&endpoint, ron_client::Options::default()).unwrap();
    client.stat(addr).unwrap();
    // One connection, so one shard: its half of a one-request burst admits the first.
    let mut conn = connect(n.http);
    let mut pending = Vec::new();
    for _ in 0..3 {
        let raw = format!(
            "GET /o/{addr} HTTP/1.1\r\nHost: localhost\r\n{}\r\n",
            bearer("a")
        );
        conn.write_all(raw.as_bytes()).unwrap();
        read_response(&mut conn, &mut pending, false).unwrap();
    }
    let stats = "ron_request_duration_seconds_count{protocol=\"oap\",op=\"stat\"}";
    let puts = "ron_request_duration_seconds_count{protocol=\"http\",op=\"put\"}";
    // Histograms and quota rejections reach /metrics with each shard's next report; a
    // request is counted once its answer has left.
    let rejected = "ron_quota_rejections_total{tenant=\"a\",limit=\"requests\"}";
    let refused = "ron_requests_total{protocol=\"http\",op=\"get\",status=\"429\"}";
    wait_for(
        "latency histograms and the refusals",
        Duration::from_secs(5),
        || {
            try_metric(n.admin, stats) == Some(1)
                && try_metric(n.admin, puts) == Some(1)
                && try_metric(n.admin, rejected) == Some(2)
                && try_metric(n.admin, refused) == Some(2)
        },
    );
    let text = String::from_utf8(get(n.admin, "/metrics").unwrap().body).unwrap();

    // Every line is something the parser recognises.
    let mut types = std::collections::HashMap::new();
    for line in text.lines() {
        match prometheus_parse::LineInfo::parse(line) {
            prometheus_parse::LineInfo::Type {
                metric_name,
                metric_alias,
                ..
            } => {
                let family = metric_alias.unwrap_or(metric_name);
                assert!(
                    types.insert(family.clone(), ()).is_none(),
                    "{family} registered twice"
                );
            }
            prometheus_parse::LineInfo::Ignored | prometheus_parse::LineInfo::Empty => {
                panic!("unparsable line {line:?}")
            }
            _ => {}
        }
    }
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let find = |name: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
            .value
            .clone()
    };
    use prometheus_parse::Value;
    assert_eq!(
        find(
            "ron_requests_total",
            &[("protocol", "http"), ("op", "get"), ("status", "200")]
        ),
        Value::Counter(2.0)
    );
    assert_eq!(
        find(
            "ron_requests_total",
            &[("protocol", "oap"), ("op", "stat"), ("status", "200")]
        ),
        Value::Counter(1.0)
    );
    assert_eq!(
        find(
            "ron_requests_total",
            &[("protocol", "http"), ("op", "get"), ("status", "429")]
        ),
        Value::Counter(2.0)
    );
    assert_eq!(
        find(
            "ron_quota_rejections_total",
            &[("tenant", "a"), ("limit", "requests")]
        ),
        Value::Counter(2.0)
    );
    match find(
        "ron_request_duration_seconds",
        &[("protocol", "http"), ("op", "put")],
    ) {
        Value::Histogram(buckets) => {
            assert_eq!(buckets.last().unwrap().count, 1.0);
            assert!(buckets
                .windows(2)
                .all(|w| w[0].count <= w[1].count && w[0].less_than < w[1].less_than));
        }
        other => panic!("not a histogram: {other:?}"),
    }
    for shard in ["0", "1"] {
        assert!(matches!(
            find("ron_reactor_stalls_total", &[("shard", shard)]),
            Value::Counter(_)
        ));
        assert_eq!(
            find("ron_shard_ready", &[("shard", shard)]),
            Value::Gauge(1.0)
        );
    }
    assert_eq!(find("ron_verify_failures_total", &[]), Value::Counter(0.0));
    assert_eq!(find("ron_config_version", &[]), Value::Gauge(1.0));
    assert!(matches!(find("ron_bytes_received_total", &[]), Value::Counter(v) if v >= 70_000.0));

    // JSON logs: one object per line.
    drop(client);
    let mut n = n;
    n.stop();
    let stderr = n.stderr();
    for line in stderr.lines() {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        assert!(
            event["level"].is_string() && event["message"].is_string(),
            "{line}"
        );
    }
    assert!(stderr.contains("\"message\":\"stopped\""), "{stderr}");
}

#[test]
fn admin_probe_answers_while_a_client_trickles_a_head() {
    let dir = temp_dir("admin-trickle");
    let n = Node::start(&dir.join("data"), &["--shards", "1"]);
    // A client that sends its head one byte every 300 ms, for about 3 s.
    let mut slow = connect(n.admin);
    let mut writer = slow.try_clone().unwrap();
    writer.write_all(b"G").unwrap();
    let first_byte = Instant::now();
    let trickle = std::thread::spawn(move || {
        for byte in b"ET /metrics HTTP/1.1\r\n".iter().take(9) {
            std::thread::sleep(Duration::from_millis(300));
            if writer.write_all(&[*byte]).is_err() {
                break; // closed by the node
            }
        }
    });
    // Meanwhile every probe is answered at once.
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        let asked = Instant::now();
        let mut probe = TcpStream::connect_timeout(&n.admin, Duration::from_secs(1)).unwrap();
        probe
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        probe
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let r = read_response(&mut probe, &mut Vec::new(), false)
            .unwrap_or_else(|e| panic!("probe {i} unanswered while a head trickles: {e}"));
        assert_eq!(r.status, 200, "probe {i}");
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "probe {i} took {:?}",
            asked.elapsed()
        );
    }
    // The trickling connection is closed by the node at its head deadline.
    slow.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
    let mut sink = [0u8; 64];
    let closed = loop {
        match std::io::Read::read(&mut slow, &mut sink) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    let at = first_byte.elapsed();
    assert!(
        closed,
        "the trickling connection is still open after {at:?}"
    );
    assert!(
        at <= Duration::from_millis(2_500),
        "closed only after {at:?}"
    );
    trickle.join().unwrap();
}

/// A reload is checked against the listeners that stay open. A file that drops every
/// token and, in the same edit, the public TLS listener (a change for the next start)
/// is refused: that listener stays open until then. Before, the check ran on the new
/// file alone, the tokens were dropped, and anyone reaching the public listener could
/// store objects.
#[test]
fn a_reload_that_would_open_writes_on_a_listener_still_public_is_refused() {
    let dir = temp_dir("reload-open-writes");
    dev_cert(&dir);
    let config = format!(
        "tls = \"0.0.0.0:{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntokens = [\"tok-w\"]\n",
        free_port(),
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    );
    let path = write_config(&dir, &config);
    let n = Node::start(
        &dir.join("data"),
        &["--config", path.to_str().unwrap(), "--shards", "1"],
    );
    std::fs::write(&path, "tokens = []\n").unwrap();
    hangup(&n);
    wait_for("the refused reload", Duration::from_secs(5), || {
        metric(n.admin, "ron_config_reload_failures_total") == 1
    });
    assert!(
        n.stderr().contains("TLS listens on 0.0.0.0:"),
        "{}",
        n.stderr()
    );
    assert_eq!(metric(n.admin, "ron_config_version"), 1);
    let anyone = put(n.http, "/o", b"from anyone", "");
    assert_eq!(anyone.status, 401, "{anyone:?}");
    let writer = put(
        n.http,
        "/o",
        b"from the writer",
        "Authorization: Bearer tok-w\r\n",
    );
    assert_eq!(writer.status, 201, "{writer:?}");
}
