//! The node behind and in front of real HTTP software it did not write: Varnish 7 as a
//! cache in front of a node, nginx as the origin behind an edge. What is at stake is what
//! those programs do with the node's headers, so they are the judges.
//!
//! Needs `varnishd` and `nginx` (in /usr/sbin or on the PATH): each test is `#[ignore]`d
//! with the program it needs, so a plain `cargo test` says so; `scripts/test-all.sh`
//! installs them and runs every test.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{nginx, program, spawn, Daemon};
use common::*;

/// Varnish with its built-in VCL (what a user gets from `-b`) in front of `backend`.
fn varnish(backend: SocketAddr) -> Daemon {
    varnish_with(backend, "")
}

/// Varnish with `vcl` (VCL 4.1, the backend named `default` pointing at `backend`),
/// followed by the built-in VCL as always.
fn varnish_with(backend: SocketAddr, vcl: &str) -> Daemon {
    varnish_with_params(backend, vcl, &[])
}

/// The same with runtime parameters (`-p name=value` each).
fn varnish_with_params(backend: SocketAddr, vcl: &str, params: &[&str]) -> Daemon {
    let dir = temp_dir("varnish-vcl");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (host, port) = (backend.ip(), backend.port());
    let file = dir.join("default.vcl");
    let text =
        format!("vcl 4.1;\nbackend default {{ .host = \"{host}\"; .port = \"{port}\"; }}\n{vcl}");
    std::fs::write(&file, text).unwrap();
    let mut command = Command::new(program("varnishd"));
    command
        .args(["-F", "-j", "none", "-s", "malloc,32m"])
        .arg("-n")
        .arg(dir.join("work"))
        .args(["-a", &addr.to_string(), "-f"])
        .arg(&file);
    for param in params {
        command.args(["-p", param]);
    }
    spawn(command, addr, dir)
}

/// nginx serving the files of `root` as an origin (`root/o/b3:<hex>`), with an access
/// log the test reads to count what reached it.
fn nginx_origin(root: &Path) -> Daemon {
    nginx_serving(root, None)
}

/// The same over HTTPS with the certificate and key in `tls_dir` (`ron cert --dev`).
fn nginx_serving(root: &Path, tls_dir: Option<&Path>) -> Daemon {
    let listen = match tls_dir {
        None => "{listen};".to_string(),
        Some(tls) => format!(
            "{{listen}} ssl; ssl_certificate {}; ssl_certificate_key {};",
            tls.join("cert.pem").display(),
            tls.join("key.pem").display()
        ),
    };
    nginx(&format!("{listen} root {};", root.display()))
}

/// Lines of nginx's access log that asked for `path`.
fn origin_requests(nginx: &Daemon, path: &str) -> usize {
    let log = std::fs::read_to_string(nginx.dir.join("access.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains(&format!("GET {path} ")))
        .count()
}

#[test]
#[ignore = "needs varnish: run by scripts/test-all.sh"]
fn varnish_never_keeps_a_404_and_caches_the_object_once_it_exists() {
    let mut n = Node::start(&temp_dir("behind-varnish"), &["--shards", "1"]);
    let cache = varnish(n.http);
    let data = bytes(31, 20_000);
    let addr = Address::of(&data);
    let path = format!("/o/{addr}");

    let missing = get(cache.addr, &path).unwrap();
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("Cache-Control"), Some("no-store"));
    // Uploaded a moment later: Varnish's default is to keep a 404 for 120 s, unless told.
    assert_eq!(upload(&n, &data), addr);
    let found = get(cache.addr, &path).unwrap();
    assert_eq!((found.status, Address::of(&found.body)), (200, addr));

    // Now a hit: the node is not asked again, and Varnish answers conditions itself.
    // (A request is counted after its last byte leaves: let the last one's count land.)
    let requests = "ron_shard_requests_total{shard=\"0\"}";
    std::thread::sleep(Duration::from_millis(600));
    let served = gauge(n.admin, requests);
    let again = get(cache.addr, &path).unwrap();
    assert_eq!((again.status, again.body.len()), (200, data.len()));
    assert!(again.header("Age").is_some());
    let etag = found.header("ETag").unwrap().to_string();
    let not_modified = get_with(cache.addr, &path, &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(not_modified.status, 304);
    let ranged = get_with(cache.addr, &path, "Range: bytes=100-199\r\n");
    assert_eq!((ranged.status, &ranged.body[..]), (206, &data[100..200]));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(gauge(n.admin, requests), served, "answered from the cache");
    n.stop();
}

#[test]
#[ignore = "needs nginx: run by scripts/test-all.sh"]
fn an_edge_answers_an_origins_404_as_404_and_asks_again_only_after_fetch_miss_ms() {
    let root = temp_dir("nginx-root");
    std::fs::create_dir_all(root.join("o")).unwrap();
    let origin = nginx_origin(&root);
    let url = format!("http://{}", origin.addr);
    // Two shards: requests land on both, the owner shard fetches and remembers.
    let mut edge = Node::start(
        &temp_dir("edge-404"),
        &["--shards", "2", "--origin", &url, "--fetch-miss-ms", "3000"],
    );
    let data = bytes(32, 300_000);
    let addr = Address::of(&data);
    let path = format!("/o/{addr}");

    let answers: Vec<Response> = std::thread::scope(|s| {
        let asks: Vec<_> = (0..50)
            .map(|_| s.spawn(|| get(edge.http, &path).unwrap()))
            .collect();
        asks.into_iter().map(|a| a.join().unwrap()).collect()
    });
    for r in &answers {
        assert_eq!(r.status, 404);
        assert_eq!(r.json()["code"], "not_found");
        assert_eq!(r.json()["retryable"], false);
        assert_eq!(r.header("Cache-Control"), Some("no-store"));
        assert!(r.header("Retry-After").is_none());
    }
    let message = answers[0].json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("has no such object"), "{message}");
    assert_eq!(
        origin_requests(&origin, &path),
        1,
        "one origin request for 50 misses"
    );

    // The file appears at the origin; the edge keeps its answer for fetch_miss_ms.
    std::fs::write(root.join("o").join(addr.to_string()), &data).unwrap();
    assert_eq!(get(edge.http, &path).unwrap().status, 404);
    assert_eq!(origin_requests(&origin, &path), 1);
    assert!(metric(edge.admin, "ron_fetch_misses_remembered_total") >= 1);
    let not_found = gauge(edge.admin, "ron_fetch_failures_total{reason=\"not_found\"}");
    assert_eq!(not_found, Some(1.0));

    // Asked every second meanwhile, the edge asks the origin again once fetch_miss_ms
    // has passed since its 404: the answers the edge gives from memory do not extend it.
    let asking_since = Instant::now();
    let found = loop {
        std::thread::sleep(Duration::from_millis(1000));
        let r = get(edge.http, &path).unwrap();
        if r.status != 404 {
            break r;
        }
        assert!(
            asking_since.elapsed() < Duration::from_millis(3000 + 2000),
            "still the remembered 404 after {:?} of requests every second",
            asking_since.elapsed()
        );
    };
    assert_eq!(
        (found.status, Address::of(&found.body)),
        (200, addr),
        "verified"
    );
    assert_eq!(origin_requests(&origin, &path), 2);
    edge.stop();
}

#[test]
#[ignore = "needs nginx: run by scripts/test-all.sh"]
fn an_edge_reads_through_an_https_origin_and_checks_its_certificate() {
    let root = temp_dir("https-root");
    std::fs::create_dir_all(root.join("o")).unwrap();
    let data = bytes(33, 700_000);
    let addr = Address::of(&data);
    std::fs::write(root.join("o").join(addr.to_string()), &data).unwrap();
    let (ours, theirs) = (temp_dir("origin-tls"), temp_dir("other-tls"));
    dev_cert(&ours);
    dev_cert(&theirs);
    let origin = nginx_serving(&root, Some(&ours));
    let impostor = nginx_serving(&root, Some(&theirs));
    let ca = ours.join("cert.pem");
    let edge_of = |name: &str, at: SocketAddr| {
        let url = format!("https://{at}");
        Node::start(
            &temp_dir(name),
            &[
                "--shards",
                "1",
                "--origin",
                &url,
                "--origin-ca",
                ca.to_str().unwrap(),
            ],
        )
    };
    let mut edge = edge_of("https-edge", origin.addr);
    let r = get(edge.http, &format!("/o/{addr}")).unwrap();
    assert_eq!((r.status, Address::of(&r.body)), (200, addr), "verified");
    assert_eq!(origin_requests(&origin, &format!("/o/{addr}")), 1);

    // An origin whose certificate does not chain to the CA given: nothing is taken.
    let mut fooled = edge_of("https-fooled", impostor.addr);
    let r = get(fooled.http, &format!("/o/{addr}")).unwrap();
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (502, Some("bad_gateway"))
    );
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("TLS"), "{message}");
    assert_eq!(origin_requests(&impostor, &format!("/o/{addr}")), 0);
    for n in [&mut edge, &mut fooled] {
        n.stop();
    }
}

/// The VCL docs/OPERATIONS.md gives for bao slices behind Varnish.
const BAO_SLICES_VCL: &str = r#"
sub vcl_recv {
  if (req.http.Range && req.http.Accept ~ "application/x-bao") {
    set req.http.Bao-Slice-Range = req.http.Range;
    unset req.http.Range;
  }
}
sub vcl_hash {
  if (req.http.Bao-Slice-Range) {
    hash_data(req.http.Bao-Slice-Range);
  }
}
sub vcl_backend_fetch {
  if (bereq.http.Bao-Slice-Range) {
    set bereq.http.Range = bereq.http.Bao-Slice-Range;
    unset bereq.http.Bao-Slice-Range;
  }
}
sub vcl_backend_response {
  if (beresp.http.Bao-Range) {
    set beresp.http.Vary = "Accept";
  }
}
"#;

#[test]
#[ignore = "needs varnish: run by scripts/test-all.sh"]
fn varnish_keeps_an_objects_bytes_and_its_bao_encoding_apart() {
    let mut n = Node::start(&temp_dir("bao-behind-varnish"), &["--shards", "1"]);
    let cache = varnish(n.http);
    let data = bytes(32, 300_000);
    let addr = upload(&n, &data);
    let path = format!("/o/{addr}");
    let bao = "Accept: application/x-bao; chunk-group-log=4\r\n";
    let encoding = get_with(n.http, &path, bao).body;
    assert_ne!(encoding, data);

    let plain = get(cache.addr, &path).unwrap();
    assert!(plain.body == data, "the plain bytes");
    let first = get_with(cache.addr, &path, bao);
    assert!(
        first.body == encoding,
        "the bao encoding, not the cached bytes"
    );
    let requests = "ron_shard_requests_total{shard=\"0\"}";
    std::thread::sleep(Duration::from_millis(600));
    let served = gauge(n.admin, requests);
    for _ in 0..2 {
        assert!(
            get(cache.addr, &path).unwrap().body == data,
            "plain again: the bytes"
        );
        let hit = get_with(cache.addr, &path, bao);
        assert!(
            hit.body == encoding && hit.header("Age").is_some(),
            "bao again, cached"
        );
    }
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        gauge(n.admin, requests),
        served,
        "both answered from the cache"
    );

    // The built-in VCL fetches without Range and cuts its own 206 out of the cached
    // encoding: not a slice, and `ron get --http` says so instead of using it.
    let addr_text = addr.to_string();
    let get_range = |cache: &Daemon, range: &str| {
        let server = cache.addr.to_string();
        ron(&[
            "get", &addr_text, "--range", range, "--server", &server, "--http",
        ])
    };
    let refused = get_range(&cache, "100000-100999");
    assert_eq!(refused.status.code(), Some(3), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("answered 206"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    drop(cache);

    // With the VCL of docs/OPERATIONS.md, each slice is fetched with its Range and
    // cached under it: the second ask is a hit.
    let cache = varnish_with(n.http, BAO_SLICES_VCL);
    let sliced = get_range(&cache, "100000-100999");
    assert!(
        sliced.status.success(),
        "{}",
        String::from_utf8_lossy(&sliced.stderr)
    );
    assert!(sliced.stdout == data[100_000..=100_999]);
    std::thread::sleep(Duration::from_millis(600));
    let served = gauge(n.admin, requests);
    let again = get_range(&cache, "100000-100999");
    assert!(again.status.success() && again.stdout == data[100_000..=100_999]);
    let other = get_range(&cache, "5-9");
    assert!(
        other.status.success() && other.stdout == data[5..=9],
        "another slice, its own"
    );
    std::thread::sleep(Duration::from_millis(600));
    let now = gauge(n.admin, requests);
    assert_eq!(now, served.map(|s| s + 1.0), "the repeated slice was a hit");
    assert!(
        get(cache.addr, &path).unwrap().body == data,
        "plain bytes still cached apart"
    );
    n.stop();
}

/// A bundle entry stored as identity and br, and its manifest's address.
fn bundle_of_one(n: &Node, page: &[u8]) -> (Address, ron_codec::bundle::Piece) {
    use ron_codec::bundle::{Encoding, Entry, Manifest, Piece};
    let mut br = Vec::new();
    let params = brotli::enc::BrotliEncoderParams::default();
    brotli::BrotliCompress(&mut &page[..], &mut br, &params).unwrap();
    let variant = Piece {
        hash: upload(n, &br),
        len: br.len() as u64,
    };
    let entry = Entry {
        path: "index.html".into(),
        hash: upload(n, page),
        len: page.len() as u64,
        media_type: "text/html; charset=utf-8".into(),
        variants: [(Encoding::Br, variant)].into(),
    };
    let manifest = Manifest::new(vec![entry], Default::default()).unwrap();
    (upload(n, &manifest.encode()), variant)
}

/// Varnish in front of a bundle: with its default `http_gzip_support` it asks the node
/// for gzip or nothing (so identity comes back, never a coding the client did not ask
/// for); with the client's `Accept-Encoding` passed through, `Vary: Accept-Encoding`
/// keeps the br and identity answers apart, each cached.
#[test]
#[ignore = "needs varnish: run by scripts/test-all.sh"]
fn varnish_keeps_a_bundle_entrys_codings_apart() {
    let n = Node::start(&temp_dir("bundle-behind-varnish"), &["--shards", "1"]);
    let page = b"<p>a page worth compressing</p>".repeat(200);
    let (bundle, br) = bundle_of_one(&n, &page);
    let path = format!("/o/{bundle}/");
    let browser = "Accept-Encoding: br, gzip;q=0.8\r\n";

    let cache = varnish(n.http);
    let r = get_with(cache.addr, &path, browser);
    assert_eq!((r.status, r.header("Content-Encoding")), (200, None));
    assert!(r.body == page, "identity: Varnish asked for gzip only");
    drop(cache);

    let cache = varnish_with_params(n.http, "", &["http_gzip_support=off"]);
    let served = |coding: &str| {
        let series = format!("ron_bundle_entries_served_total{{encoding=\"{coding}\"}}");
        gauge(n.admin, &series).unwrap_or(0.0)
    };
    std::thread::sleep(Duration::from_millis(600));
    let before = (served("br"), served("identity"));
    for round in 0..2 {
        let r = get_with(cache.addr, &path, browser);
        assert_eq!(r.header("Content-Encoding"), Some("br"), "round {round}");
        assert_eq!(r.header("ETag"), Some(format!("\"{}\"", br.hash).as_str()));
        assert_eq!(r.body.len() as u64, br.len);
        let r = get(cache.addr, &path).unwrap();
        assert_eq!(r.header("Content-Encoding"), None, "round {round}");
        assert!(
            r.body == page,
            "identity for a client without Accept-Encoding"
        );
        if round == 1 {
            assert!(r.header("Age").is_some(), "cached");
        }
    }
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        (served("br"), served("identity")),
        (before.0 + 1.0, before.1 + 1.0),
        "each coding fetched once, then served from the cache"
    );
}
