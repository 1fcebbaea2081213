//! HTTP/2 over TLS (ALPN `h2`, issue 55) with a client we did not write: curl, built with
//! nghttp2. Every HTTP-API row is asked over h2 and over HTTP/1.1 and must answer the
//! same — status, body, and every header but the per-answer ones (Date, X-Corr-ID) and
//! the HTTP/1.1 connection's own (Connection) — reads, ranges, conditionals, bao
//! answers and slices, outboards, raw blocks, bundles with their encodings, refusals,
//! the denylist, read-through from an origin; uploads with a length and chunked; and
//! many streams over one connection.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use ron_codec::Address;

struct Answer {
    version: String,
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// Headers that differ per answer or describe the HTTP/1.1 connection.
const PER_ANSWER: [&str; 4] = ["date", "x-corr-id", "connection", "keep-alive"];

fn comparable(headers: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
    headers
        .into_iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v))
        .filter(|(n, _)| !PER_ANSWER.contains(&n.as_str()))
        .collect()
}

/// curl speaking h2 to `n`'s TLS port as `localhost` (the name its dev certificate
/// carries), trusting that certificate, giving up after `max_time_s`; and the URL of
/// the node's root there.
fn curl_h2_to(n: &TlsNode, max_time_s: u32) -> (Command, String) {
    let port = n.tls.rsplit(':').next().unwrap();
    let mut curl = Command::new("curl");
    curl.args([
        "-s",
        "--http2",
        "--max-time",
        &max_time_s.to_string(),
        "--cacert",
    ])
    .arg(&n.cert)
    .args(["--resolve", &format!("localhost:{port}:127.0.0.1")]);
    (curl, format!("https://localhost:{port}"))
}

/// One request with curl over h2 (`--http2`, TLS, the node's dev certificate trusted).
fn curl_h2(n: &TlsNode, method: &str, path: &str, headers: &[&str], body: Option<&Path>) -> Answer {
    let dir = n.node.data_dir.with_extension("curl");
    std::fs::create_dir_all(&dir).unwrap();
    let (head_file, body_file) = (dir.join("head"), dir.join("body"));
    // curl leaves the file alone when no body comes.
    let _ = std::fs::remove_file(&body_file);
    let (mut curl, root) = curl_h2_to(n, 20);
    curl.args(["-X", method, "-D"])
        .arg(&head_file)
        .arg("-o")
        .arg(&body_file)
        .args(["-w", "%{http_version}"]);
    if method == "HEAD" {
        curl.arg("-I");
    }
    for h in headers {
        curl.args(["-H", h]);
    }
    if let Some(body) = body {
        curl.arg("--data-binary")
            .arg(format!("@{}", body.display()));
    }
    let out = curl.arg(format!("{root}{path}")).output().expect("curl");
    let head = std::fs::read_to_string(&head_file).unwrap_or_default();
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no status in {head:?} ({out:?})"));
    let headers = comparable(lines.filter_map(|l| {
        let (n, v) = l.split_once(':')?;
        Some((n.trim().to_string(), v.trim().to_string()))
    }));
    Answer {
        version: String::from_utf8_lossy(&out.stdout).into_owned(),
        status,
        headers,
        // `-I` writes the head where the body goes.
        body: match method {
            "HEAD" => Vec::new(),
            _ => std::fs::read(&body_file).unwrap_or_default(),
        },
    }
}

fn http1(n: &Node, method: &str, path: &str, headers: &[&str]) -> Answer {
    let fields: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let raw =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{fields}Connection: close\r\n\r\n");
    let r = request(n.http, raw.as_bytes()).unwrap();
    Answer {
        version: "1.1".into(),
        status: r.status,
        headers: comparable(r.headers),
        body: r.body,
    }
}

fn assert_same(n: &TlsNode, method: &str, path: &str, headers: &[&str]) -> Answer {
    let mut one = http1(&n.node, method, path, headers);
    let mut two = curl_h2(n, method, path, headers, None);
    // An error envelope's length varies with its corr_id.
    if without_corr_id(&one.body) != one.body {
        one.headers.remove("content-length");
        two.headers.remove("content-length");
    }
    let what = format!("{method} {path} {headers:?}");
    assert_eq!(two.version, "2", "{what}: not h2");
    assert_eq!(two.status, one.status, "{what}");
    assert_eq!(two.headers, one.headers, "{what}");
    assert!(
        without_corr_id(&two.body) == without_corr_id(&one.body),
        "{what}: bodies differ ({} vs {} bytes)",
        two.body.len(),
        one.body.len()
    );
    two
}

/// An error envelope without its `corr_id` (it names the answer); other bodies as they are.
fn without_corr_id(body: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut envelope)) if envelope.contains_key("corr_id") => {
            envelope.remove("corr_id");
            serde_json::to_vec(&envelope).unwrap()
        }
        _ => body.to_vec(),
    }
}

fn cid_of(addr: &Address) -> String {
    let mut cid = vec![1, 0x55, 0x1e, 32];
    cid.extend_from_slice(addr.as_bytes());
    format!(
        "b{}",
        data_encoding::BASE32_NOPAD.encode(&cid).to_lowercase()
    )
}

#[test]
fn every_row_answers_on_h2_as_on_http1() {
    let deny = temp_dir("h2-deny");
    let blocked_data = bytes(66, 5000);
    let blocked = Address::of(&blocked_data);
    std::fs::write(deny.join("ops.deny"), format!("{blocked}\n")).unwrap();
    let n = tls_node(
        "h2-rows",
        &["--shards", "2", "--denylist", deny.to_str().unwrap()],
    );
    let data = bytes(2, 300_000);
    let addr = upload(&n.node, &data);
    let small = upload(&n.node, &bytes(3, 1000));
    let etag = format!("\"{addr}\"");
    let o = format!("/o/{addr}");
    let rows: Vec<(&str, String, Vec<String>)> = vec![
        ("GET", o.clone(), vec![]),
        ("HEAD", o.clone(), vec![]),
        ("GET", o.clone(), vec!["Range: bytes=1000-70999".into()]),
        ("GET", o.clone(), vec!["Range: bytes=-100".into()]),
        ("GET", o.clone(), vec!["Range: bytes=0-1,5-6".into()]),
        ("GET", o.clone(), vec!["Range: bytes=400000-".into()]),
        ("GET", o.clone(), vec![format!("If-None-Match: {etag}")]),
        ("GET", o.clone(), vec!["If-Match: \"b3:other\"".into()]),
        (
            "GET",
            o.clone(),
            vec![format!("If-Range: {etag}"), "Range: bytes=5-9".into()],
        ),
        ("GET", o.clone(), vec!["Accept: application/x-bao".into()]),
        (
            "GET",
            o.clone(),
            vec![
                "Accept: application/x-bao; chunk-group-log=4".into(),
                "Range: bytes=70000-140000".into(),
            ],
        ),
        ("GET", format!("{o}?outboard"), vec![]),
        ("GET", format!("/o/{small}.obao"), vec![]),
        (
            "GET",
            format!("/ipfs/{}", cid_of(&small)),
            vec!["Accept: application/vnd.ipld.raw".into()],
        ),
        (
            "GET",
            format!("/ipfs/{}", cid_of(&addr)),
            vec!["Accept: */*".into()],
        ),
        ("GET", format!("/ipfs/{}?format=car", cid_of(&addr)), vec![]),
        ("GET", format!("/o/{}", Address::of(b"absent")), vec![]),
        ("GET", "/o/b3:xyz".into(), vec![]),
        ("GET", "/elsewhere".into(), vec![]),
        ("POST", o.clone(), vec![]),
        ("DELETE", o.clone(), vec![]),
        ("GET", format!("/o/{blocked}"), vec![]),
    ];
    for (method, path, headers) in &rows {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        assert_same(&n, method, path, &headers);
    }

    // A bundle: its entries by the coding Accept-Encoding allows.
    let site = temp_dir("h2-site");
    std::fs::write(site.join("index.html"), "<p>ron over h2</p>".repeat(400)).unwrap();
    std::fs::write(site.join("app.js"), "console.log('h2');\n".repeat(300)).unwrap();
    let server = n.node.oap.to_string();
    let out = ron(&["pack", site.to_str().unwrap(), "--server", &server]);
    assert!(out.status.success(), "{out:?}");
    let bundle = String::from_utf8(out.stdout).unwrap().trim().to_string();
    for (path, headers) in [
        ("/", vec![]),
        ("/index.html", vec!["Accept-Encoding: br, gzip"]),
        ("/app.js", vec!["Accept-Encoding: gzip"]),
        (
            "/app.js",
            vec!["Accept-Encoding: gzip", "Range: bytes=10-19"],
        ),
        ("/missing.css", vec![]),
    ] {
        assert_same(&n, "GET", &format!("/o/{bundle}{path}"), &headers);
    }
}

#[test]
fn uploads_over_h2_with_a_length_and_chunked() {
    let n = tls_node("h2-put", &["--shards", "2"]);
    let dir = temp_dir("h2-put-files");
    let data = bytes(9, 1_500_000);
    let file = dir.join("upload");
    std::fs::write(&file, &data).unwrap();
    let addr = Address::of(&data);

    // With a length (curl sends content-length).
    let put = curl_h2(&n, "PUT", "/o", &[], Some(&file));
    assert_eq!(
        (put.version.as_str(), put.status),
        ("2", 201),
        "{}",
        String::from_utf8_lossy(&put.body)
    );
    let json: serde_json::Value = serde_json::from_slice(&put.body).unwrap();
    assert_eq!(json["obj"], addr.to_string());
    assert_eq!(get(n.node.http, &format!("/o/{addr}")).unwrap().body, data);

    // Without one: curl streams stdin as DATA frames; the node reads it chunked.
    let other = bytes(10, 700_000);
    let (mut curl, root) = curl_h2_to(&n, 20);
    let mut curl = curl
        .args(["-T", "-"])
        .args(["-w", " %{http_version} %{http_code}"])
        .arg(format!("{root}/o"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = curl.stdin.take().unwrap();
        for piece in other.chunks(100_000) {
            stdin.write_all(piece).unwrap();
        }
    }
    let out = curl.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with(" 2 201"), "{text}");
    assert!(text.contains(&Address::of(&other).to_string()), "{text}");

    // The upload's rules hold: a body that is not the address named is refused.
    let wrong = curl_h2(
        &n,
        "PUT",
        &format!("/o/{}", Address::of(b"x")),
        &[],
        Some(&file),
    );
    assert_eq!(
        wrong.status,
        400,
        "{}",
        String::from_utf8_lossy(&wrong.body)
    );
    // An empty body is the empty object.
    let empty = curl_h2(&n, "PUT", "/o", &[], None);
    assert_eq!(
        empty.status,
        201,
        "{}",
        String::from_utf8_lossy(&empty.body)
    );
}

#[test]
fn read_through_answers_on_h2() {
    let origin = Node::start(&temp_dir("h2-origin"), &["--shards", "1"]);
    let data = bytes(21, 400_000);
    let addr = upload(&origin, &data);
    let origin_url = format!("http://{}", origin.http);
    let edge = tls_node("h2-edge", &["--shards", "1", "--origin", &origin_url]);
    let got = curl_h2(&edge, "GET", &format!("/o/{addr}"), &[], None);
    assert_eq!((got.version.as_str(), got.status), ("2", 200));
    assert!(got.body == data, "read-through bytes differ");
    assert_eq!(got.headers.get("etag"), Some(&format!("\"{addr}\"")));
}

#[test]
fn many_streams_share_one_connection() {
    let n = tls_node("h2-streams", &["--shards", "2"]);
    let objects: Vec<(Vec<u8>, Address)> = (0..40)
        .map(|i| {
            let data = bytes(300 + i, 1000 + (i as usize) * 7919);
            let addr = upload(&n.node, &data);
            (data, addr)
        })
        .collect();
    let before = metric(n.node.admin, "ron_connections_total");
    let dir = temp_dir("h2-streams-out");
    let (mut curl, root) = curl_h2_to(&n, 30);
    curl.args(["-Z", "--parallel-max", "40"])
        .args(["-w", "%{http_version} %{http_code} %{num_connects}\n"]);
    for (i, (_, addr)) in objects.iter().enumerate() {
        curl.arg("-o")
            .arg(dir.join(i.to_string()))
            .arg(format!("{root}/o/{addr}"));
    }
    let out = curl.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), objects.len(), "{text}");
    assert!(lines.iter().all(|l| l.starts_with("2 200")), "{text}");
    for (i, (data, _)) in objects.iter().enumerate() {
        assert!(
            std::fs::read(dir.join(i.to_string())).unwrap() == *data,
            "object {i}"
        );
    }
    let connections = metric(n.node.admin, "ron_connections_total") - before;
    assert_eq!(connections, 1, "40 answers over one connection: {text}");
}

#[test]
#[ignore = "needs nghttp (Debian's nghttp2-client): run by scripts/test-all.sh"]
fn a_page_and_its_assets_load_over_one_connection_as_a_browser_loads_them() {
    let n = tls_node("h2-page", &["--shards", "2"]);
    let site = temp_dir("h2-page-site");
    std::fs::create_dir_all(site.join("css")).unwrap();
    std::fs::create_dir_all(site.join("img")).unwrap();
    let images: String = (0..30)
        .map(|i| format!("<img src=\"img/{i}.png\">"))
        .collect();
    std::fs::write(
        site.join("index.html"),
        format!("<!doctype html><html><head><link rel=stylesheet href=\"css/site.css\"><script src=\"app.js\"></script></head><body>{images}</body></html>"),
    )
    .unwrap();
    std::fs::write(site.join("css/site.css"), "body{margin:0}\n".repeat(300)).unwrap();
    std::fs::write(site.join("app.js"), "console.log('page');\n".repeat(300)).unwrap();
    for i in 0..30u64 {
        std::fs::write(
            site.join(format!("img/{i}.png")),
            bytes(400 + i, 5000 + 100 * i as usize),
        )
        .unwrap();
    }
    let server = n.node.oap.to_string();
    let out = ron(&["pack", site.to_str().unwrap(), "--server", &server]);
    assert!(out.status.success(), "{out:?}");
    let bundle = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let before = metric(n.node.admin, "ron_connections_total");
    let port = n.tls.rsplit(':').next().unwrap();
    // -a: fetch the page, then the stylesheet, script and images it links, as a browser
    // does (nghttp resolves the links itself: it writes the address's colon as %3A).
    let out = Command::new("nghttp")
        .args(["-a", "-n", "-s", "-y", "-t", "20"])
        .arg(format!("https://localhost:{port}/o/{bundle}/"))
        .output()
        .expect("nghttp");
    let text = String::from_utf8_lossy(&out.stdout);
    let answers: Vec<(&str, &str)> = text
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|t| t.starts_with('+'))
        })
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            Some((*fields.get(4)?, *fields.last()?))
        })
        .collect();
    assert_eq!(answers.len(), 33, "the page and its 32 assets:\n{text}");
    assert!(answers.iter().all(|(code, _)| *code == "200"), "{text}");
    assert!(
        answers
            .iter()
            .any(|(_, path)| path.ends_with("/img/29.png")),
        "{text}"
    );
    let connections = metric(n.node.admin, "ron_connections_total") - before;
    assert_eq!(connections, 1, "one connection for the page: {text}");
}

#[test]
fn quotas_hold_on_h2_streams_as_on_requests() {
    let dir = temp_dir("h2-quota-config");
    let config = dir.join("ron.toml");
    std::fs::write(
        &config,
        "[tenants.burst]\ntokens = [\"tok-burst\"]\nrequests_per_s = 1\nrequests_burst = 3\n\n\
         [tenants.writer]\ntokens = [\"tok-writer\"]\n",
    )
    .unwrap();
    let n = tls_node(
        "h2-quota",
        &["--shards", "1", "--config", config.to_str().unwrap()],
    );
    let data = bytes(8, 2000);
    let stored = put(
        n.node.http,
        "/o",
        &data,
        "Authorization: Bearer tok-writer\r\n",
    );
    assert_eq!(stored.status, 201, "{stored:?}");
    let addr = Address::of(&data);
    let (mut curl, root) = curl_h2_to(&n, 20);
    let url = format!("{root}/o/{addr}");
    // Ten streams at once on one connection, as the tenant.
    let out = curl
        .args(["-Z", "--parallel-max", "10"])
        .args(["-H", "Authorization: Bearer tok-burst"])
        .args(["-w", "%{http_version} %{http_code}\n"])
        .args((0..10).flat_map(|_| ["-o", "/dev/null", url.as_str()]))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let count = |answer: &str| text.lines().filter(|l| *l == answer).count();
    let (served, refused) = (count("2 200"), count("2 429"));
    assert_eq!(served + refused, 10, "{text}");
    assert!(
        (3..=4).contains(&served),
        "the burst of 3 (and one refill): {text}"
    );
    // Another tenant is not held back.
    let other = curl_h2(&n, "GET", &format!("/o/{addr}"), &[], None);
    assert_eq!(other.status, 200);
}

/// `h2load -n N` against `url` with `headers` (and a body to POST); the counts of
/// (2xx, failed + errored) it reports.
fn h2load(url: &str, n: usize, headers: &[&str], body: Option<&Path>) -> (usize, usize, String) {
    let mut cmd = Command::new("h2load");
    cmd.args(["-n", &n.to_string(), "-c", "2", "-m", "8", "-t", "1"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    if let Some(body) = body {
        cmd.arg("-d").arg(body);
    }
    let out = cmd.arg(url).output().expect("h2load");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |line: &str, at: usize| -> usize {
        text.lines()
            .find(|l| l.starts_with(line))
            .and_then(|l| l.split_whitespace().nth(at))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line:?} in h2load's report:\n{text}"))
    };
    let ok = field("status codes:", 2);
    let bad = field("requests:", 9) + field("requests:", 11);
    (ok, bad, text)
}

#[test]
#[ignore = "needs h2load (Debian's nghttp2-client): run by scripts/test-all.sh"]
fn h2load_runs_against_the_rows() {
    let n = tls_node("h2-h2load", &["--shards", "2"]);
    let data = bytes(12, 300_000);
    let addr = upload(&n.node, &data);
    let small = upload(&n.node, &bytes(13, 3000));
    let port = n.tls.rsplit(':').next().unwrap();
    let base = format!("https://127.0.0.1:{port}");
    let dir = temp_dir("h2-h2load-files");
    let body = dir.join("body");
    std::fs::write(&body, bytes(14, 50_000)).unwrap();
    let rows: Vec<(String, Vec<&str>, Option<&Path>)> = vec![
        (format!("{base}/o/{addr}"), vec![], None),
        (
            format!("{base}/o/{addr}"),
            vec!["Range: bytes=1000-66535"],
            None,
        ),
        (
            format!("{base}/o/{addr}"),
            vec!["Accept: application/x-bao"],
            None,
        ),
        (
            format!("{base}/o/{addr}"),
            vec!["Accept: application/x-bao", "Range: bytes=70000-80000"],
            None,
        ),
        (format!("{base}/o/{addr}?outboard"), vec![], None),
        (
            format!("{base}/ipfs/{}?format=raw", cid_of(&small)),
            vec![],
            None,
        ),
        (format!("{base}/o"), vec![], Some(&body)),
    ];
    for (url, headers, body) in &rows {
        let (ok, bad, text) = h2load(url, 200, headers, *body);
        assert_eq!((ok, bad), (200, 0), "{url} {headers:?}:\n{text}");
        assert!(text.contains("Application protocol: h2"), "{text}");
    }
}
