//! Every row of docs/HTTP-API.md against the real `ron` binary over real sockets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn node(name: &str, extra: &[&str]) -> Node {
    Node::start(&temp_dir(name), extra)
}

#[test]
fn put_get_head_and_the_object_headers() {
    let n = node("basic", &["--shards", "2"]);
    let data = bytes(1, 200_000);
    let addr = Address::of(&data);

    let r = put(n.http, "/o", &data, "Content-Type: text/plain\r\n");
    assert_eq!(r.status, 201);
    assert_eq!(
        r.json(),
        serde_json::json!({"obj": addr.to_string(), "len": 200_000})
    );
    assert_eq!(r.header("Location"), Some(format!("/o/{addr}").as_str()));
    assert_eq!(put(n.http, "/o", &data, "").status, 200, "already stored");

    let r = get(n.http, &format!("/o/{addr}")).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.header("Content-Length"), Some("200000"));
    assert_eq!(r.header("ETag"), Some(format!("\"{addr}\"").as_str()));
    assert_eq!(
        r.header("Cache-Control"),
        Some("public, max-age=31536000, immutable, no-transform")
    );
    assert_eq!(r.header("Accept-Ranges"), Some("bytes"));
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));
    assert!(r.header("X-Corr-ID").is_some());

    let bare = addr.to_string()[3..].to_string();
    assert_eq!(get(n.http, &format!("/o/{bare}")).unwrap().body, data);

    let h = request(
        n.http,
        format!("HEAD /o/{addr} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
    for name in [
        "Content-Length",
        "ETag",
        "Cache-Control",
        "Accept-Ranges",
        "Content-Type",
    ] {
        assert_eq!(h.header(name), r.header(name), "{name}");
    }
}

#[test]
fn default_content_type_and_empty_object() {
    let n = node("empty", &[]);
    let addr = upload(&n, b"");
    assert_eq!(addr, Address::of(b""));
    let r = get(n.http, &format!("/o/{addr}")).unwrap();
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
    let r = get_with(n.http, &format!("/o/{addr}"), "Range: bytes=0-\r\n");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("Content-Range"), Some("bytes */0"));
}

#[test]
fn chunked_post_and_put_to_an_address() {
    let n = node("chunked", &[]);
    let data = bytes(2, 150_001);
    let mut raw =
        b"POST /o HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    for piece in data.chunks(7_777) {
        raw.extend_from_slice(format!("{:x};ext=1\r\n", piece.len()).as_bytes());
        raw.extend_from_slice(piece);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\nX-Trailer: ok\r\n\r\n");
    let r = request(n.http, &raw).unwrap();
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    let addr = Address::of(&data);
    assert_eq!(r.json()["obj"], addr.to_string());
    assert_eq!(get(n.http, &format!("/o/{addr}")).unwrap().body, data);

    let other = bytes(3, 1000);
    let right = Address::of(&other);
    assert_eq!(put(n.http, &format!("/o/{right}"), &other, "").status, 201);
    let wrong_body = bytes(4, 1000);
    let r = put(n.http, &format!("/o/{right}"), &wrong_body, "");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "bad_digest");
    let stored = get(n.http, &format!("/o/{}", Address::of(&wrong_body))).unwrap();
    assert_eq!(stored.status, 404, "nothing stored on a digest mismatch");
}

#[test]
fn ranges() {
    let n = node("ranges", &["--shards", "2"]);
    let data = bytes(5, 10_000);
    let addr = upload(&n, &data);
    let path = format!("/o/{addr}");
    let cases: [(&str, u64, u64); 4] = [
        ("bytes=0-499", 0, 499),
        ("bytes=9500-", 9500, 9999),
        ("bytes=-500", 9500, 9999),
        ("bytes=100-99999", 100, 9999),
    ];
    for (range, first, last) in cases {
        let r = get_with(n.http, &path, &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(
            r.header("Content-Range"),
            Some(format!("bytes {first}-{last}/10000").as_str())
        );
        assert_eq!(r.body, &data[first as usize..=last as usize], "{range}");
    }
    let r = get_with(n.http, &path, "Range: bytes=10000-\r\n");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("Content-Range"), Some("bytes */10000"));
    assert_eq!(r.json()["code"], "range_not_satisfiable");
    for ignored in ["bytes=5-1", "pages=1-2", "bytes=abc"] {
        let r = get_with(n.http, &path, &format!("Range: {ignored}\r\n"));
        assert_eq!((r.status, r.body.len()), (200, 10_000), "{ignored}");
    }
    let r = get_with(n.http, &path, "Range: bytes=0-0,-1\r\n");
    assert_eq!(
        (r.status, r.body.len()),
        (200, 10_000),
        "several ranges: whole body"
    );
}

#[test]
fn ranges_across_groups_of_a_large_object() {
    let n = node("bigranges", &["--shards", "2"]);
    let data = bytes(6, 3 * 65_536 + 4321);
    let addr = upload(&n, &data);
    let path = format!("/o/{addr}");
    for (first, last) in [
        (65_535u64, 65_536u64),
        (1, 200_000),
        (131_072, 200_000),
        (0, 65_535),
    ] {
        let r = get_with(n.http, &path, &format!("Range: bytes={first}-{last}\r\n"));
        assert_eq!(r.status, 206);
        assert_eq!(r.body, &data[first as usize..=last as usize]);
    }
}

/// A connection lands on either shard; an object it asks for that the other shard owns
/// comes over the mesh in round trips of up to 32 groups (one per read-ahead batch of 8),
/// not one per group: 16 objects of 32 groups cost at most 6 trips each that cross (its
/// metadata, the first group, 4 batches), where one trip per group would be 33.
#[test]
fn objects_another_shard_owns_come_over_the_mesh_in_batches() {
    let n = node("meshbatch", &["--shards", "2"]);
    let objects: Vec<_> = (0..16u64)
        .map(|i| bytes(40 + i, 32 * 65_536 - 100))
        .collect();
    let addrs: Vec<_> = objects.iter().map(|data| upload(&n, data)).collect();
    std::thread::sleep(Duration::from_millis(600));
    let before = metric(n.admin, "ron_mesh_requests_total");
    for (data, addr) in objects.iter().zip(&addrs) {
        let r = get(n.http, &format!("/o/{addr}")).unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body == *data, "{addr}: the bytes stored");
    }
    std::thread::sleep(Duration::from_millis(600));
    let trips = metric(n.admin, "ron_mesh_requests_total") - before;
    assert!(trips > 0, "some of 16 objects are owned by the other shard");
    assert!(
        trips <= 6 * 16,
        "{trips} mesh requests for 16 objects of 32 groups"
    );
}

#[test]
fn conditional_requests() {
    let n = node("cond", &[]);
    let addr = upload(&n, &bytes(7, 5000));
    let path = format!("/o/{addr}");
    let etag = format!("\"{addr}\"");
    for inm in [
        etag.clone(),
        "*".to_string(),
        format!("\"b3:00\", W/{etag}"),
    ] {
        let r = get_with(n.http, &path, &format!("If-None-Match: {inm}\r\n"));
        assert_eq!(r.status, 304, "{inm}");
        assert_eq!(r.header("ETag"), Some(etag.as_str()));
        assert!(r.body.is_empty());
    }
    assert_eq!(
        get_with(n.http, &path, "If-None-Match: \"other\"\r\n").status,
        200
    );
    let r = get_with(
        n.http,
        &path,
        &format!("Range: bytes=0-9\r\nIf-Range: {etag}\r\n"),
    );
    assert_eq!((r.status, r.body.len()), (206, 10));
    let r = get_with(n.http, &path, "Range: bytes=0-9\r\nIf-Range: \"stale\"\r\n");
    assert_eq!((r.status, r.body.len()), (200, 5000));
    let r = get_with(
        n.http,
        &path,
        "Range: bytes=0-9\r\nIf-Range: Sat, 21 Nov 2026 00:00:00 GMT\r\n",
    );
    assert_eq!(r.status, 200, "a date validator is not our strong ETag");
}

#[test]
fn errors_use_the_envelope() {
    let n = node("errors", &[]);
    let r = get(n.http, "/o/B3:ABC").unwrap();
    assert_eq!(r.status, 400);
    let j = r.json();
    assert_eq!(j["code"], "bad_addr");
    assert_eq!(j["retryable"], false);
    assert_eq!(j["corr_id"], r.header("X-Corr-ID").unwrap());
    let upper = Address::of(b"x")
        .to_string()
        .to_uppercase()
        .replace("B3:", "b3:");
    assert_eq!(
        get(n.http, &format!("/o/{upper}")).unwrap().json()["code"],
        "bad_addr"
    );

    let r = get_with(
        n.http,
        &format!("/o/{}", Address::of(b"absent")),
        "X-Corr-ID: trace-42\r\n",
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "not_found");
    assert_eq!(r.json()["corr_id"], "trace-42");
    assert_eq!(r.header("X-Corr-ID"), Some("trace-42"));

    assert_eq!(get(n.http, "/elsewhere").unwrap().status, 404);
    let r = request(n.http, b"PATCH /o/b3:0000000000000000000000000000000000000000000000000000000000000000 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    assert_eq!(get(n.http, "/o").unwrap().status, 405);
    let r = request(
        n.http,
        b"PUT /o HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (411, Some("length_required"))
    );
    let r = request(
        n.http,
        b"PUT /o HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 501);
    let r = request(
        n.http,
        b"PUT /o HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    )
    .unwrap();
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (400, Some("bad_request"))
    );
}

#[test]
fn heads_targets_and_preconditions_as_rfc_9110_and_9112_ask() {
    let n = node("rfc", &[]);
    let addr = upload(&n, &bytes(9, 3000));
    let path = format!("/o/{addr}");
    let etag = format!("\"{addr}\"");
    let raw = |head: &str| request(n.http, head.as_bytes()).unwrap();

    // RFC 9112 §3.2: one Host in HTTP/1.1, at most one in HTTP/1.0.
    for (head, why) in [
        (
            format!("GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n"),
            "without Host",
        ),
        (
            format!("GET {path} HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n"),
            "more than one Host",
        ),
        (
            format!("GET {path} HTTP/1.1\r\nHost: a/b\r\n\r\n"),
            "Host is not",
        ),
    ] {
        let r = raw(&head);
        assert_eq!(
            (r.status, r.json()["code"].as_str()),
            (400, Some("bad_request"))
        );
        let message = r.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains(why), "{message}");
    }
    assert_eq!(raw(&format!("GET {path} HTTP/1.0\r\n\r\n")).status, 200);
    // RFC 9110 §2.5: a later minor version of HTTP/1 is read as HTTP/1.1 (it was 400,
    // "invalid HTTP version"); another major version is still refused.
    let later = raw(&format!(
        "GET {path} HTTP/1.2\r\nHost: a\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!((later.status, later.body.len()), (200, 3000));
    let other = raw(&format!("GET {path} HTTP/2.0\r\nHost: a\r\n\r\n"));
    assert_eq!(other.status, 400);
    // The same when the request line arrives cut after its version (the parser refuses
    // the version as soon as it has its 8 bytes).
    let mut s = connect(n.http);
    s.write_all(format!("GET {path} HTTP/1.2").as_bytes())
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    s.write_all(b"\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let cut = read_response(&mut s, &mut Vec::new(), false).unwrap();
    assert_eq!(cut.status, 200, "{cut:?}");
    // §9.3.2: a HEAD's answer has no content, refused at its head too (no Host here).
    let mut s = connect(n.http);
    s.write_all(format!("HEAD {path} HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(
        answer.starts_with(b"HTTP/1.1 400 "),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(answer.len(), end, "a body after a HEAD's head");

    // §9.3 and Appendix C.2.2: an HTTP/1.0 connection kept open is said so (the client
    // takes an answer without `Connection: keep-alive` for the last), and serves the next.
    let mut conn = connect(n.http);
    let mut pending = Vec::new();
    for _ in 0..2 {
        conn.write_all(format!("GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").as_bytes())
            .unwrap();
        let r = read_response(&mut conn, &mut pending, false).unwrap();
        assert_eq!((r.status, r.body.len()), (200, 3000));
        assert_eq!(
            r.header("connection"),
            Some("keep-alive"),
            "{:?}",
            r.headers
        );
    }
    let r = raw(&format!("GET {path} HTTP/1.0\r\n\r\n"));
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "without it, closed after the answer"
    );

    // §3.2.2: an absolute-form target is served by its path.
    let r = raw(&format!(
        "GET http://cdn.example{path} HTTP/1.1\r\nHost: cdn.example\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!((r.status, Address::of(&r.body)), (200, addr));

    // RFC 9110 §13.1.1: If-Match compares strongly; a miss is 412 and sends nothing.
    for ok in [etag.clone(), "*".into(), format!("\"b3:00\", {etag}")] {
        let r = get_with(n.http, &path, &format!("If-Match: {ok}\r\n"));
        assert_eq!((r.status, r.body.len()), (200, 3000), "{ok}");
    }
    for bad in [format!("W/{etag}"), "\"other\"".into()] {
        let r = get_with(n.http, &path, &format!("If-Match: {bad}\r\n"));
        assert_eq!(r.status, 412, "{bad}");
        assert_eq!(r.json()["code"], "precondition_failed");
        assert_eq!(
            r.json()["message"],
            format!(
                "If-Match names no current ETag of {addr}: its one ETag is the strong \"{addr}\""
            )
        );
        assert_eq!(r.header("Cache-Control"), Some("no-store"));
    }
    let absent = format!("/o/{}", Address::of(b"never stored"));
    assert_eq!(get_with(n.http, &absent, "If-Match: *\r\n").status, 404);
    // If-Match is evaluated before If-None-Match (§13.2.2).
    let both = format!("If-Match: \"other\"\r\nIf-None-Match: {etag}\r\n");
    assert_eq!(get_with(n.http, &path, &both).status, 412);

    // §5.3: a condition split over two lines is one list.
    let split = format!("If-None-Match: \"b3:00\"\r\nIf-None-Match: {etag}\r\n");
    assert_eq!(get_with(n.http, &path, &split).status, 304);
    let split = format!("If-Match: \"b3:00\"\r\nIf-Match: {etag}\r\n");
    assert_eq!(get_with(n.http, &path, &split).status, 200);

    // §15.5.6: a 405 names what the route serves.
    let r = raw(&format!(
        "PATCH {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(
        (r.status, r.header("Allow")),
        (405, Some("GET, HEAD, PUT, DELETE"))
    );
    let r = get(n.http, "/o").unwrap();
    assert_eq!((r.status, r.header("Allow")), (405, Some("PUT, POST")));

    // Errors are never stored by a cache (RFC 9111 §5.2.2.5).
    for r in [
        get(n.http, &absent).unwrap(),
        get(n.http, "/o/b3:xyz").unwrap(),
    ] {
        assert!(r.status >= 400);
        assert_eq!(r.header("Cache-Control"), Some("no-store"), "{}", r.status);
    }
}

#[test]
fn keep_alive_and_pipelining() {
    let n = node("pipeline", &["--shards", "2"]);
    let a = upload(&n, &bytes(8, 3000));
    let b = upload(&n, &bytes(9, 70_000));
    let mut s = connect(n.http);
    let mut pending = Vec::new();
    s.write_all(format!("GET /o/{a} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!(
        read_response(&mut s, &mut pending, false).unwrap().body,
        bytes(8, 3000)
    );
    let pipelined = format!(
        "GET /o/{b} HTTP/1.1\r\nHost: localhost\r\n\r\nHEAD /o/{a} HTTP/1.1\r\nHost: localhost\r\n\r\nGET /o/{a} HTTP/1.1\r\nHost: localhost\r\nRange: bytes=0-1\r\n\r\n"
    );
    s.write_all(pipelined.as_bytes()).unwrap();
    let r1 = read_response(&mut s, &mut pending, false).unwrap();
    let r2 = read_response(&mut s, &mut pending, true).unwrap();
    let r3 = read_response(&mut s, &mut pending, false).unwrap();
    assert_eq!((r1.status, r1.body.len()), (200, 70_000));
    assert_eq!(r1.body, bytes(9, 70_000));
    assert_eq!(
        (r2.status, r2.header("Content-Length")),
        (200, Some("3000"))
    );
    assert_eq!((r3.status, r3.body.as_slice()), (206, &bytes(8, 3000)[..2]));

    // A HEAD answered with an error ends at its head too, on a connection kept open:
    // the error's JSON after it was read as the start of the next answer.
    let missing = Address::of(b"nobody stored this");
    let pipelined = format!(
        "HEAD /o/{missing} HTTP/1.1\r\nHost: localhost\r\n\r\nHEAD /o/b3:nothex HTTP/1.1\r\nHost: localhost\r\n\r\nGET /o/{a} HTTP/1.1\r\nHost: localhost\r\nRange: bytes=0-1\r\n\r\n"
    );
    s.write_all(pipelined.as_bytes()).unwrap();
    let absent = read_response(&mut s, &mut pending, true).unwrap();
    let malformed = read_response(&mut s, &mut pending, true).unwrap();
    let next = read_response(&mut s, &mut pending, false).unwrap();
    assert_eq!(absent.status, 404);
    assert_eq!(absent.header("Connection"), None, "kept open");
    assert!(absent.header("Content-Length").is_some());
    assert_eq!(malformed.status, 400);
    assert_eq!(
        (next.status, next.body.as_slice()),
        (206, &bytes(8, 3000)[..2])
    );
}

#[test]
fn limits_head_size_slow_loris_and_body_size() {
    let n = node(
        "limits",
        &["--header-timeout-ms", "400", "--max-object-bytes", "1000"],
    );
    let big = format!(
        "GET /o HTTP/1.1\r\nHost: localhost\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let r = request(n.http, big.as_bytes()).unwrap();
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (431, Some("head_too_large"))
    );
    assert_eq!(r.header("Connection"), Some("close"));

    // Slow-loris: a head trickled in never completes; 408 after the header timeout,
    // while another connection is served meanwhile.
    let mut slow = connect(n.http);
    slow.write_all(b"GET /o/").unwrap();
    let ok = put(n.http, "/o", b"fine", "");
    assert_eq!(ok.status, 201);
    std::thread::sleep(Duration::from_millis(200));
    let _ = slow.write_all(b"b3");
    let r = read_response(&mut slow, &mut Vec::new(), false).unwrap();
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (408, Some("request_timeout"))
    );

    let r = put(n.http, "/o", &[0u8; 1001], "");
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (413, Some("too_large"))
    );
    let mut raw =
        b"POST /o HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    raw.extend_from_slice(b"3e9\r\n");
    raw.extend_from_slice(&[1u8; 1001]);
    raw.extend_from_slice(b"\r\n0\r\n\r\n");
    let r = request(n.http, &raw).unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(
        put(n.http, "/o", &[0u8; 1000], "").status,
        201,
        "exactly the limit is fine"
    );
}

#[test]
fn writes_need_a_token_when_tokens_are_configured() {
    let n = node("auth", &["--token", "s3cret", "--token", "other"]);
    let r = put(n.http, "/o", b"data", "");
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (401, Some("unauthorized"))
    );
    assert_eq!(r.header("WWW-Authenticate"), Some(r#"Bearer realm="ron""#));
    assert_eq!(
        put(n.http, "/o", b"data", "Authorization: Bearer wrong\r\n").status,
        401
    );
    let r = put(n.http, "/o", b"data", "Authorization: Bearer s3cret\r\n");
    assert_eq!(r.status, 201);
    assert_eq!(
        get(n.http, &format!("/o/{}", Address::of(b"data")))
            .unwrap()
            .status,
        200,
        "reads are public"
    );
}

#[test]
fn refuses_to_start_open_on_a_public_address() {
    let dir = temp_dir("public");
    let out = run_ron(&dir, &["--http", "0.0.0.0:1", "--admin", "127.0.0.1:2"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to start: HTTP listens on 0.0.0.0:1"),
        "{err}"
    );
}

#[test]
fn two_listeners_on_one_address_are_refused_with_one_line() {
    let dir = temp_dir("one-address");
    let port = free_port();
    let on = |ip: &str| format!("{ip}:{port}");
    let (local, wild) = (on("127.0.0.1"), on("0.0.0.0"));
    let cases = [
        (
            vec!["--http", &local, "--oap", &local],
            format!("http (127.0.0.1:{port}) and oap (127.0.0.1:{port}) listen on one address"),
        ),
        (
            vec!["--oap", &local, "--admin", &wild],
            format!("oap (127.0.0.1:{port}) and admin (0.0.0.0:{port})"),
        ),
        (
            vec!["--http", &local, "--p2p", &local],
            format!("http (127.0.0.1:{port}) and p2p (127.0.0.1:{port})"),
        ),
    ];
    for (args, want) in cases {
        let out = run_ron(&dir, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    // One port on two different IPs is two addresses.
    let mut n = Node::start(
        &temp_dir("two-ips"),
        &["--http", &local, "--oap", &on("127.0.0.2")],
    );
    n.stop();
}

#[test]
fn a_second_node_cannot_share_the_data_dir_or_port() {
    let n = node("exclusive", &[]);
    let out = run_ron(
        &n.data_dir,
        &["--http", "127.0.0.1:1", "--admin", "127.0.0.1:2"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another ron process"));
    let other = temp_dir("exclusive2");
    let http = n.http.to_string();
    let out = run_ron(&other, &["--http", &http, "--admin", "127.0.0.1:2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen on"));
}

/// A port someone holds for a moment (a node killed just before, whose listener outlived
/// its exit) is bound once it is free: tried five times, 500 ms apart, as nginx does.
#[test]
fn a_port_held_for_a_moment_is_tried_again_until_it_is_free() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = holder.local_addr().unwrap();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let oap = format!("127.0.0.1:{}", free_port());
    let dir = temp_dir("port-held");
    let stderr_path = dir.with_extension("stderr");
    let started = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ron"))
        .args(["serve", "--data-dir"])
        .arg(&dir)
        .args(["--http", &http.to_string(), "--admin", &admin.to_string()])
        .args(["--oap", &oap])
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    drop(holder);
    let ready = loop {
        if get(admin, "/readyz").is_ok_and(|r| r.status == 200) {
            break true;
        }
        if child.try_wait().unwrap().is_some() || started.elapsed() > Duration::from_secs(15) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(ready, "the node started once the port was free: {stderr}");
    assert!(
        stderr.contains("port in use; trying again in 500 ms"),
        "{stderr}"
    );
    assert!(get(http, "/o/b3:00").is_err(), "the node is gone");
}

/// An admin port without an admin token (it listens on loopback) answers no request a
/// web page made and no Host but a loopback one: otherwise any site a browser on the
/// host visits could POST to `/admin/remove/…` (a cross-site form) or, with its DNS
/// name rebound to 127.0.0.1, read `/metrics` and `/admin/stats`.
#[test]
fn a_tokenless_admin_port_refuses_web_pages_and_rebound_names() {
    let n = Node::start(&temp_dir("admin-browser"), &["--shards", "1"]);
    let ask = |method: &str, path: &str, fields: &str| {
        let raw = format!(
            "{method} {path} HTTP/1.1\r\n{fields}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        request(n.admin, raw.as_bytes()).unwrap()
    };
    let loopback = format!("Host: {}\r\n", n.admin);
    assert_eq!(ask("GET", "/metrics", &loopback).status, 200);
    assert_eq!(
        ask("GET", "/admin/stats", "Host: localhost:9600\r\n").status,
        200
    );
    let rebound = ask("GET", "/metrics", "Host: attacker.example:9600\r\n");
    assert_eq!(rebound.status, 403);
    assert!(
        String::from_utf8_lossy(&rebound.body).contains("only requests for a loopback Host"),
        "{rebound:?}"
    );
    let form = format!("{loopback}Origin: https://attacker.example\r\n");
    let posted = ask("POST", "/admin/scrub/pause", &form);
    assert_eq!(posted.status, 403, "{posted:?}");
    let fetched = format!("{loopback}Sec-Fetch-Site: cross-site\r\n");
    assert_eq!(ask("GET", "/admin/stats", &fetched).status, 403);
    let typed = format!("{loopback}Sec-Fetch-Site: none\r\n");
    assert_eq!(ask("GET", "/admin/stats", &typed).status, 200);
    let stats = get(n.admin, "/admin/scrub").unwrap().json();
    assert_eq!(
        stats["paused"], false,
        "the page's POST paused nothing: {stats}"
    );
    assert_eq!(
        ask("GET", "/healthz", "Host: attacker.example\r\n").status,
        200
    );
}

/// Every group a client's read asks for is counted once, a hit or a miss, whichever
/// shard serves the read: a read crossing the mesh is counted by the owner, which read
/// the group or had it cached. Before, the asking shard counted a miss and the owner a
/// hit or a miss besides: on many shards the hit ratio read about half what it was.
#[test]
fn each_group_read_counts_once_in_the_cache_metrics_whichever_shard_serves_it() {
    let n = node("cache-counts", &["--shards", "2"]);
    let addr = upload(&n, &bytes(12, 100_000));
    const GETS: u64 = 12;
    for _ in 0..GETS {
        let r = get(n.http, &format!("/o/{addr}")).unwrap();
        assert_eq!(r.status, 200);
    }
    let counted = |n: &Node| {
        metric(n.admin, "ron_cache_hits_total") + metric(n.admin, "ron_cache_misses_total")
    };
    // Two groups a read.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while counted(&n) < 2 * GETS && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let misses = metric(n.admin, "ron_cache_misses_total");
    assert_eq!(
        (metric(n.admin, "ron_cache_hits_total"), misses),
        (2 * GETS - misses, misses),
        "each group of each read counted once"
    );
    assert!(
        misses <= 2,
        "{misses} misses: each group read from disk once"
    );
}

/// One-group ranges of an object of 16 groups, each on a new connection (both shards
/// serve some): each counts one hit or miss. A read widened to its cache window counted
/// a hit for every group of the window the cache held, asked or not.
#[test]
fn a_range_counts_only_its_own_groups_in_the_cache_metrics() {
    let n = node("cache-counts-ranges", &["--shards", "2"]);
    let group = 64 * 1024;
    let addr = upload(&n, &bytes(13, 16 * group));
    let order = [
        0usize, 1, 9, 2, 3, 10, 4, 5, 11, 6, 7, 12, 8, 13, 14, 15, 1, 9, 3, 12,
    ];
    for &g in &order {
        let range = format!("Range: bytes={}-{}\r\n", g * group, (g + 1) * group - 1);
        let r = get_with(n.http, &format!("/o/{addr}"), &range);
        assert_eq!(r.status, 206);
    }
    let counted =
        || metric(n.admin, "ron_cache_hits_total") + metric(n.admin, "ron_cache_misses_total");
    let asked = order.len() as u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while counted() < asked && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(counted(), asked, "one count a group asked for");
}

#[test]
fn admin_endpoints_and_metrics() {
    let n = node("admin", &["--shards", "2"]);
    assert_eq!(get(n.admin, "/healthz").unwrap().status, 200);
    let ready = get(n.admin, "/readyz").unwrap();
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["shards"].as_array().unwrap().len(), 2);
    assert_eq!(get(n.admin, "/version").unwrap().json()["name"], "ron");
    let addr = upload(&n, &bytes(10, 100_000));
    get(n.http, &format!("/o/{addr}")).unwrap();
    get(n.http, &format!("/o/{addr}")).unwrap();
    let requests = |op: &str, status: u16, want: u64| {
        let series =
            format!("ron_requests_total{{protocol=\"http\",op=\"{op}\",status=\"{status}\"}}");
        metric_reaching(n.admin, &series, want, Duration::from_secs(2))
    };
    assert_eq!(requests("get", 200, 2), 2);
    assert_eq!(requests("put", 201, 1), 1);
    assert!(metric(n.admin, "ron_bytes_sent_total") >= 200_000);
    assert!(metric(n.admin, "ron_bytes_received_total") >= 100_000);
    assert!(
        metric(n.admin, "ron_cache_hits_total") >= 2,
        "second GET is served from the cache"
    );
    assert_eq!(metric(n.admin, "ron_verify_failures_total"), 0);
    // Latency histograms reach the control thread once a second.
    let gets = "ron_request_duration_seconds_count{protocol=\"http\",op=\"get\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while try_metric(n.admin, gets) < Some(2) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric(n.admin, gets), 2);
}

#[test]
fn curl_round_trip_as_in_the_readme() {
    let n = node("curl", &[]);
    let dir = temp_dir("curlfiles");
    let file = dir.join("f.bin");
    let data = bytes(11, 2_500_000); // large enough that curl sends Expect: 100-continue
    std::fs::write(&file, &data).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "-T"])
        .arg(&file)
        .arg(format!("http://{}/o", n.http))
        .output()
        .expect("curl is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let addr = reply["obj"].as_str().unwrap().to_string();
    assert_eq!(addr, Address::of(&data).to_string());
    let out = std::process::Command::new("curl")
        .args(["-sS", "-r", "0-99"])
        .arg(format!("http://{}/o/{addr}", n.http))
        .output()
        .unwrap();
    assert_eq!(out.stdout, &data[..100]);
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let mut n = node("sigterm", &["--shards", "2"]);
    upload(&n, b"before stop");
    let status = n.stop();
    assert_eq!(status.code(), Some(0));
    assert!(n.stderr().contains("INFO main stopped"), "{}", n.stderr());
}

#[test]
fn inflight_gate_answers_503_when_more_requests_are_worked_on_than_it_allows() {
    // A request holds its slot while the shard works on it (here: cold groups read from
    // disk), not while it waits on its peer (attacks.rs). Many cold GETs at once on a
    // one-slot shard: the first holds the slot across its disk read, others are refused.
    let dir = temp_dir("overload");
    let args = [
        "--shards",
        "1",
        "--max-inflight",
        "1",
        "--cache-bytes",
        "1MiB",
    ];
    let mut n = Node::start(&dir, &args);
    let objects: Vec<Vec<u8>> = (0..96).map(|i| bytes(700 + i, 200_000)).collect();
    let addrs: Vec<Address> = objects.iter().map(|o| upload(&n, o)).collect();
    n.stop();
    n.restart(&args);
    let mut refused = None;
    for round in addrs.chunks(24).zip(objects.chunks(24)) {
        let mut conns: Vec<TcpStream> = round.0.iter().map(|_| connect(n.http)).collect();
        for (conn, addr) in conns.iter_mut().zip(round.0) {
            let raw =
                format!("GET /o/{addr} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            conn.write_all(raw.as_bytes()).unwrap();
        }
        for (conn, data) in conns.iter_mut().zip(round.1) {
            let r = read_response(conn, &mut Vec::new(), false).unwrap();
            match r.status {
                200 => assert_eq!(&r.body, data),
                503 => refused = Some(r),
                other => panic!("unexpected {other}: {r:?}"),
            }
        }
        if refused.is_some() {
            break;
        }
    }
    let r = refused.expect("24 cold GETs at once on a one-slot shard: some are refused");
    assert_eq!(r.json()["code"], "overloaded");
    assert_eq!(r.json()["retryable"], true);
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert!(metric(n.admin, "ron_overload_rejections_total") >= 1);
    // Every slot is back once the answers are out; readiness follows.
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(n.admin, "/readyz").unwrap().status != 200 {
        assert!(Instant::now() < deadline, "not ready again within 5 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(metric(n.admin, "ron_inflight_requests"), 0);
}

#[test]
fn sigterm_finishes_a_request_in_flight() {
    let mut n = node("drain", &["--shards", "1"]);
    let body = bytes(12, 5000);
    let mut s = connect(n.http);
    s.write_all(
        format!(
            "PUT /o HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    s.write_all(&body[..1000]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    n.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    // New connections are refused while the in-flight upload may still finish.
    assert!(
        try_connect(n.http).is_err(),
        "still accepting after SIGTERM"
    );
    s.write_all(&body[1000..]).unwrap();
    let r = read_response(&mut s, &mut Vec::new(), false).unwrap();
    assert_eq!(r.status, 201, "the in-flight upload completes");
    assert_eq!(r.header("Connection"), Some("close"));
    assert_eq!(n.stop_wait().code(), Some(0));
    n.restart(&["--shards", "1"]);
    assert_eq!(
        get(n.http, &format!("/o/{}", Address::of(&body)))
            .unwrap()
            .body,
        body
    );
}

/// Once the stop begins, idle keep-alive connections are closed at once (a proxy stops
/// using them) and a request whose head completes after it is refused 503 `not_ready`
/// with `Connection: close`, never started to be cut short when the shard stops; the
/// upload in flight still finishes. Before, idle connections slept on to their 75 s idle
/// timeout, past the process's end, and a late request was served.
#[test]
fn a_stop_closes_idle_connections_and_refuses_requests_that_arrive_after_it() {
    let mut n = node("drain-idle", &["--shards", "1"]);
    let stored = upload(&n, b"served before the stop");
    let body = bytes(13, 5000);
    let mut uploading = connect(n.http);
    let head = format!(
        "PUT /o HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    uploading.write_all(head.as_bytes()).unwrap();
    uploading.write_all(&body[..1000]).unwrap();
    // Five keep-alive connections idle after an answer, and one part way through a head.
    let mut idle: Vec<std::net::TcpStream> = (0..5)
        .map(|_| {
            let mut s = connect(n.http);
            let get = format!("GET /o/{stored} HTTP/1.1\r\nHost: localhost\r\n\r\n");
            s.write_all(get.as_bytes()).unwrap();
            assert_eq!(
                read_response(&mut s, &mut Vec::new(), false)
                    .unwrap()
                    .status,
                200
            );
            s
        })
        .collect();
    let mut late = connect(n.http);
    late.write_all(format!("GET /o/{stored} HTTP/1.1\r\nHost: loc").as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    n.signal("TERM");
    let signalled = Instant::now();
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut byte = [0u8; 1];
        let read = s.read(&mut byte);
        let closed = match &read {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        };
        assert!(closed, "an idle connection is closed at the stop: {read:?}");
    }
    let closed_within = signalled.elapsed();
    assert!(
        closed_within < Duration::from_secs(2),
        "idle connections closed {closed_within:?} after SIGTERM"
    );
    late.write_all(b"alhost\r\n\r\n").unwrap();
    let r = read_response(&mut late, &mut Vec::new(), false).unwrap();
    assert_eq!(
        (r.status, r.header("Connection")),
        (503, Some("close")),
        "{r:?}"
    );
    assert_eq!(r.json()["code"], "not_ready");
    uploading.write_all(&body[1000..]).unwrap();
    let r = read_response(&mut uploading, &mut Vec::new(), false).unwrap();
    assert_eq!(r.status, 201, "the upload in flight completes");
    assert_eq!(n.stop_wait().code(), Some(0));
}

#[test]
fn config_print_shows_sources_and_errors_name_the_key() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ron"))
        .args(["config", "print", "--max-inflight", "7"])
        .env("RON_SHARDS", "2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or("")
            .to_string()
    };
    assert!(
        line("shards").contains("= 2") && line("shards").ends_with("# environment RON_SHARDS"),
        "{text}"
    );
    assert!(
        line("inflight_max").ends_with("# flag --max-inflight"),
        "{text}"
    );
    assert!(line("http").ends_with("# default"), "{text}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ron"))
        .args(["serve"])
        .env("RON_CACHE_BYTES", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("environment RON_CACHE_BYTES (key cache_bytes): invalid size \"lots\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn admin_token_and_stats_that_survive_a_restart() {
    let mut n = node("adminstats", &["--shards", "2", "--admin-token", "adm1n"]);
    assert_eq!(get(n.admin, "/metrics").unwrap().status, 401);
    assert_eq!(get(n.admin, "/admin/stats").unwrap().status, 401);
    assert_eq!(
        get(n.admin, "/healthz").unwrap().status,
        200,
        "probes stay open"
    );
    assert_eq!(
        get(n.admin, "/readyz").unwrap().status,
        200,
        "probes stay open"
    );
    assert_eq!(get_bearer(n.admin, "adm1n", "/metrics").status, 200);

    let sizes = [10usize, 70_000, 200_000];
    for (i, len) in sizes.iter().enumerate() {
        upload(&n, &bytes(40 + i as u64, *len));
    }
    upload(&n, &bytes(40, 10)); // already stored: counts nothing
    let stats = get_bearer(n.admin, "adm1n", "/admin/stats").json();
    assert_eq!(stats["objects"], 3);
    assert_eq!(stats["bytes"], sizes.iter().sum::<usize>() as u64);
    assert_eq!(stats["shards"].as_array().unwrap().len(), 2);

    assert_eq!(n.stop().code(), Some(0));
    n.restart(&["--shards", "2", "--admin-token", "adm1n"]);
    let stats = get_bearer(n.admin, "adm1n", "/admin/stats").json();
    assert_eq!(stats["objects"], 3, "{stats}");
    assert_eq!(stats["bytes"], sizes.iter().sum::<usize>() as u64);
}

/// Large bodies go out with `sendfile` from the verified cache; a reader with a tiny
/// receive window makes every send find the socket full, so each body is pieced
/// together from sendfile runs and the page-sized writes that wait for room.
#[test]
fn a_slow_small_window_reader_gets_every_byte_of_cached_bodies_in_order() {
    let n = node("zero-copy-slow", &["--shards", "1"]);
    let data = bytes(31, 3 * (1 << 20) + 123);
    let addr = upload(&n, &data);
    let p = format!("/o/{addr}");
    assert_eq!(
        get(n.http, &p).unwrap().body,
        data,
        "cached by the first read"
    );
    for (range, want) in [
        (String::new(), &data[..]),
        (
            "Range: bytes=65000-1300000\r\n".to_string(),
            &data[65_000..=1_300_000],
        ),
    ] {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&n.http.into()).unwrap();
        let mut s: TcpStream = socket.into();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let raw =
            format!("GET {p} HTTP/1.1\r\nHost: localhost\r\n{range}Connection: close\r\n\r\n");
        s.write_all(raw.as_bytes()).unwrap();
        let mut received = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let got = std::io::Read::read(&mut s, &mut chunk).unwrap();
            if got == 0 {
                break;
            }
            received.extend_from_slice(&chunk[..got]);
            if received.len() % (256 * 1024) < 1024 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let head_end = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(
            received.len() - head_end == want.len(),
            "{range}: body length"
        );
        assert!(&received[head_end..] == want, "{range}: body bytes");
    }
}

/// An upload refused while its client is still sending the body (over the object limit,
/// no `Expect`) lets the client send its body and then read the answer, as a client that
/// sends its whole request before reading (Python's `requests`, many others) must: the
/// node's close lingers, reading and dropping what still comes (RFC 9112 §9.6, nginx's
/// `lingering_close`). Before, the socket closed with the body unread, the kernel reset
/// the connection, and the client's send failed ("connection reset") before it ever
/// read the 413.
#[test]
fn a_refused_upload_still_sending_its_body_gets_its_answer() {
    let n = node("linger", &["--max-object-bytes", "1000"]);
    let body_len = 8 << 20;
    // The limit refuses a PUT /o; a bad address is refused before any body is read
    // (before, that close did not linger).
    let cases = [("/o", 413, "too_large"), ("/o/b3:xyz", 400, "bad_addr")];
    for (round, (target, status, code)) in cases.iter().cycle().take(4).enumerate() {
        let mut s = connect(n.http);
        let head = format!(
            "PUT {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {body_len}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        // Past the answer's arrival: the node has refused and closed by then.
        std::thread::sleep(Duration::from_millis(100));
        let chunk = vec![7u8; 256 * 1024];
        for _ in 0..body_len / chunk.len() {
            s.write_all(&chunk)
                .unwrap_or_else(|e| panic!("round {round}: the body's send failed: {e}"));
        }
        let mut pending = Vec::new();
        let r = read_response(&mut s, &mut pending, false)
            .unwrap_or_else(|e| panic!("round {round}: no answer, {e}"));
        assert_eq!(
            (r.status, r.json()["code"].as_str()),
            (*status, Some(*code)),
            "round {round}: {target}"
        );
    }
}

/// A suffix range of the empty object is satisfiable (RFC 9110 §14.1.1) but names no
/// byte: the answer is the whole, empty, object (200), not 416. A range starting at 0 of
/// it names a byte it lacks: 416.
#[test]
fn a_suffix_range_of_the_empty_object_is_answered_whole() {
    let n = node("empty-suffix", &[]);
    let empty = upload(&n, b"");
    let path = format!("/o/{empty}");
    let r = get_with(n.http, &path, "Range: bytes=-5\r\n");
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(r.header("Content-Range"), None);
    let r = get_with(n.http, &path, "Range: bytes=0-\r\n");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("Content-Range"), Some("bytes */0"));
}

/// RFC 9110 §13.2.2 on writes: a PUT or DELETE of an address honours If-Match and
/// If-None-Match against whether this node holds the object (its one representation,
/// whose strong ETag is its address), before a body is read or a copy removed.
/// Before, both were ignored: `If-None-Match: *` (a create-only PUT) overwrote nothing
/// but answered 200, and a DELETE with a stale If-Match removed the copy.
#[test]
fn put_and_delete_honour_their_preconditions() {
    let n = Node::start(
        &temp_dir("write-preconditions"),
        &["--shards", "1", "--admin-token", "adm"],
    );
    let data = bytes(21, 5_000);
    let addr = Address::of(&data);
    let path = format!("/o/{addr}");
    let etag = format!("\"{addr}\"");
    let if_match = |tag: &str| format!("If-Match: {tag}\r\n");

    let r = put(n.http, &path, &data, &if_match(&etag));
    assert_eq!(r.status, 412, "not held: If-Match fails: {r:?}");
    assert_eq!(r.json()["code"], "precondition_failed");
    assert_eq!(
        r.json()["message"],
        format!("precondition failed for {addr}: If-Match names no current ETag of it here; nothing was written or removed")
    );
    assert_eq!(get(n.http, &path).unwrap().status, 404);
    assert_eq!(
        put(n.http, &path, &data, "If-None-Match: *\r\n").status,
        201
    );

    let r = put(n.http, &path, &data, "If-None-Match: *\r\n");
    assert_eq!(r.status, 412, "held: a create-only PUT is refused: {r:?}");
    assert_eq!(
        r.json()["message"],
        format!("precondition failed for {addr}: If-None-Match names it, and this node holds it; nothing was written or removed")
    );
    assert_eq!(put(n.http, &path, &data, &if_match(&etag)).status, 200);
    assert_eq!(put(n.http, &path, &data, &if_match("*")).status, 200);

    let delete = |fields: &str| {
        let raw = format!(
            "DELETE {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer adm\r\n{fields}Connection: close\r\n\r\n"
        );
        request(n.http, raw.as_bytes()).unwrap()
    };
    let stale = format!("\"{}\"", Address::of(b"another object"));
    assert_eq!(delete(&if_match(&stale)).status, 412);
    assert_eq!(get(n.http, &path).unwrap().status, 200, "nothing removed");
    assert_eq!(delete(&if_match(&etag)).status, 200);
    assert_eq!(get(n.http, &path).unwrap().status, 404);
}

/// RFC 9110 §14.2: "A server MUST ignore a Range header field received with any request
/// method other than GET." A HEAD with a Range is answered as a HEAD without it: 200,
/// the whole length, no Content-Range (before: 206 with the range's length, which a
/// cache could store as the object's head).
#[test]
fn a_head_ignores_its_range() {
    let n = node("head-range", &[]);
    let addr = upload(&n, &bytes(31, 10_000));
    let raw = format!(
        "HEAD /o/{addr} HTTP/1.1\r\nHost: localhost\r\nRange: bytes=0-99\r\nConnection: close\r\n\r\n"
    );
    let r = request(n.http, raw.as_bytes()).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("Content-Length"), Some("10000"));
    assert_eq!(r.header("Content-Range"), None);
    let r = get_with(n.http, &format!("/o/{addr}"), "Range: bytes=0-99\r\n");
    assert_eq!(
        (r.status, r.body.len()),
        (206, 100),
        "a GET's range still applies"
    );
}
