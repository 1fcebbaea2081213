//! Bundles (issue 40): `ron pack` against the real binary — every file stored as an
//! object with its precompressed variants, the manifest last, its address printed.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use ron_codec::bundle::{Encoding, Manifest};
use ron_codec::Address;

/// A small static site: HTML, CSS and JS that compress, a random binary that does not,
/// an image (never compressed), nested directories and an empty file.
fn write_site(root: &Path) {
    // Relative links, as a site served under its bundle's address needs; together they
    // reach every file.
    let page = |title: &str, up: &str, links: &str| {
        format!(
            "<!doctype html><html><head><title>{title}</title><link rel=stylesheet \
             href={up}css/site.css><script src={up}app.js></script></head><body>{links}{}\
             </body></html>",
            "<p>ron serves verified bytes from addresses.</p>".repeat(60)
        )
    };
    let home_links = "<a href=docs/guide/>guide</a> <a href=noise.bin>noise</a> \
                      <img src=logo.png> <a href=empty.txt>empty</a>";
    std::fs::create_dir_all(root.join("css")).unwrap();
    std::fs::create_dir_all(root.join("docs/guide")).unwrap();
    std::fs::write(root.join("index.html"), page("home", "", home_links)).unwrap();
    let guide = page("guide", "../../", "<a href=../../index.html>home</a>");
    std::fs::write(root.join("docs/guide/index.html"), guide).unwrap();
    std::fs::write(root.join("css/site.css"), "body{margin:0}\n".repeat(200)).unwrap();
    std::fs::write(root.join("app.js"), "console.log('ron');\n".repeat(300)).unwrap();
    std::fs::write(root.join("noise.bin"), bytes(7, 50_000)).unwrap();
    std::fs::write(root.join("logo.png"), vec![0u8; 4096]).unwrap();
    std::fs::write(root.join("empty.txt"), b"").unwrap();
}

fn get_bytes(n: &Node, addr: &Address) -> Vec<u8> {
    let r = get(n.http, &format!("/o/{addr}")).unwrap();
    assert_eq!(r.status, 200, "{addr}: {r:?}");
    r.body
}

fn pack(n: &Node, path: &Path, extra: &[&str]) -> std::process::Output {
    let server = n.oap.to_string();
    let mut args = vec!["pack", path.to_str().unwrap(), "--server", &server];
    args.extend_from_slice(extra);
    ron(&args)
}

fn packed_address(out: &std::process::Output) -> Address {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    text.trim().parse().unwrap()
}

#[test]
fn a_directory_is_packed_as_objects_variants_and_a_manifest_that_names_them() {
    let dir = temp_dir("bundle-pack");
    let site = dir.with_extension("site");
    let _ = std::fs::remove_dir_all(&site);
    write_site(&site);
    std::os::unix::fs::symlink(site.join("app.js"), site.join("link.js")).unwrap();
    let n = Node::start(&dir, &["--shards", "1"]);

    let out = pack(&n, &site, &["--tld", "site"]);
    let bundle = packed_address(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("skipped") && stderr.contains("link.js"),
        "{stderr}"
    );
    assert!(stderr.contains("packed 7 files"), "{stderr}");

    let manifest_bytes = get_bytes(&n, &bundle);
    let manifest = Manifest::parse(&manifest_bytes).unwrap();
    assert_eq!(
        manifest.encode(),
        manifest_bytes,
        "stored in canonical form"
    );
    assert_eq!(manifest.meta["tld"], "site");
    let paths: Vec<&str> = manifest.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "app.js",
            "css/site.css",
            "docs/guide/index.html",
            "empty.txt",
            "index.html",
            "logo.png",
            "noise.bin"
        ]
    );
    for entry in &manifest.entries {
        let file = std::fs::read(site.join(&entry.path)).unwrap();
        assert_eq!(
            (entry.hash, entry.len),
            (Address::of(&file), file.len() as u64)
        );
        assert_eq!(get_bytes(&n, &entry.hash), file, "{}", entry.path);
        for (encoding, piece) in &entry.variants {
            let stored = get_bytes(&n, &piece.hash);
            assert_eq!(stored.len() as u64, piece.len);
            let decoded = match encoding {
                Encoding::Br => {
                    let mut out = Vec::new();
                    brotli::BrotliDecompress(&mut &stored[..], &mut out).unwrap();
                    out
                }
                Encoding::Zstd => zstd::decode_all(&stored[..]).unwrap(),
                Encoding::Gzip => panic!("ron pack makes no gzip variants"),
            };
            assert!(
                decoded == file,
                "{} {encoding:?} decodes to the file",
                entry.path
            );
            assert!(
                piece.len * 100 <= entry.len * 95,
                "{}: saves 5 %",
                entry.path
            );
        }
    }
    let variants = |path: &str| -> Vec<Encoding> {
        manifest
            .entry(path)
            .unwrap()
            .variants
            .keys()
            .copied()
            .collect()
    };
    assert_eq!(variants("index.html"), [Encoding::Br, Encoding::Zstd]);
    assert_eq!(variants("css/site.css"), [Encoding::Br, Encoding::Zstd]);
    assert!(
        variants("noise.bin").is_empty(),
        "random bytes do not compress"
    );
    assert!(variants("logo.png").is_empty(), "images are not tried");
    assert!(variants("empty.txt").is_empty());
    assert_eq!(
        manifest.entry("index.html").unwrap().media_type,
        "text/html; charset=utf-8"
    );

    // `ron stat` of the manifest lists its entries; of a piece, only its length.
    let server = n.oap.to_string();
    let out = ron(&["stat", &bundle.to_string(), "--server", &server]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("{bundle} {}", manifest_bytes.len()));
    assert_eq!(lines.len(), 1 + manifest.entries.len(), "{text}");
    let css = manifest.entry("css/site.css").unwrap();
    let br = css.variants[&Encoding::Br];
    assert!(
        lines.contains(
            &format!(
                "css/site.css\t{}\ttext/css; charset=utf-8\t{}\tbr:{}:{}\tzstd:{}:{}",
                css.len,
                css.hash,
                br.len,
                br.hash,
                css.variants[&Encoding::Zstd].len,
                css.variants[&Encoding::Zstd].hash
            )
            .as_str()
        ),
        "{text}"
    );
    let out = ron(&["stat", &css.hash.to_string(), "--server", &server]);
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);

    // The same tree packs to the same address, over HTTP too; a single file packs as a
    // bundle of one.
    assert_eq!(packed_address(&pack(&n, &site, &["--tld", "site"])), bundle);
    let http = n.http.to_string();
    let over_http = ron(&[
        "pack",
        site.to_str().unwrap(),
        "--http",
        "--server",
        &http,
        "--tld",
        "site",
    ]);
    assert_eq!(packed_address(&over_http), bundle);
    let one = packed_address(&pack(&n, &site.join("app.js"), &[]));
    let single = Manifest::parse(&get_bytes(&n, &one)).unwrap();
    assert_eq!(single.entries.len(), 1);
    assert_eq!(single.entries[0].path, "app.js");
    std::fs::remove_dir_all(&site).unwrap();
}

#[test]
fn a_tree_a_manifest_cannot_name_is_refused_before_anything_is_stored() {
    let dir = temp_dir("bundle-refused");
    let site = dir.with_extension("site");
    let _ = std::fs::remove_dir_all(&site);
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("a\\b.txt"), b"x").unwrap();
    let n = Node::start(&dir, &["--shards", "1"]);
    let out = pack(&n, &site, &[]);
    assert_eq!(out.status.code(), Some(2), "usage");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("backslash"), "{stderr}");
    assert_eq!(metric(n.admin, "ron_objects_stored"), 0);

    let empty = dir.with_extension("empty");
    let _ = std::fs::remove_dir_all(&empty);
    std::fs::create_dir_all(&empty).unwrap();
    let out = pack(&n, &empty, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no regular file to pack"));
    std::fs::remove_file(site.join("a\\b.txt")).unwrap();
    std::fs::write(site.join("ok.txt"), b"fine").unwrap();
    let out = pack(&n, &site, &["--meta", "Bad Key=v"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(r#"metadata key "Bad Key""#), "{stderr}");
    assert_eq!(metric(n.admin, "ron_objects_stored"), 0, "nothing stored");
    for tree in [site, empty] {
        std::fs::remove_dir_all(tree).unwrap();
    }
}

fn ask(n: &Node, method: &str, path: &str, fields: &[&str]) -> Response {
    let fields: String = fields.iter().map(|f| format!("{f}\r\n")).collect();
    let raw =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{fields}Connection: close\r\n\r\n");
    request(n.http, raw.as_bytes()).unwrap()
}

fn decoded(coding: Option<&str>, body: &[u8]) -> Vec<u8> {
    match coding {
        None => body.to_vec(),
        Some("br") => {
            let mut out = Vec::new();
            brotli::BrotliDecompress(&mut &body[..], &mut out).unwrap();
            out
        }
        Some("zstd") => zstd::decode_all(body).unwrap(),
        Some(other) => panic!("coding {other}"),
    }
}

/// Entries are served by path in the coding Accept-Encoding allows, each representation
/// with its own ETag, conditions and ranges; directories answer their index.html.
#[test]
fn bundle_entries_are_served_by_path_in_the_coding_the_client_accepts() {
    let dir = temp_dir("bundle-serve");
    let site = dir.with_extension("site");
    let _ = std::fs::remove_dir_all(&site);
    write_site(&site);
    let n = Node::start(&dir, &["--shards", "1"]);
    let bundle = packed_address(&pack(&n, &site, &[]));
    let manifest = Manifest::parse(&get_bytes(&n, &bundle)).unwrap();
    let index = manifest.entry("index.html").unwrap();
    let index_file = std::fs::read(site.join("index.html")).unwrap();
    let root = format!("/o/{bundle}/");

    // What browsers, curl and caches send: the representation and its headers.
    let cases: [(&[&str], Option<&str>); 6] = [
        (&[], None),
        (&["Accept-Encoding: br, gzip;q=0.8"], Some("br")),
        (&["Accept-Encoding: zstd"], Some("zstd")),
        (&["Accept-Encoding: gzip, deflate"], None),
        (&["Accept-Encoding: br;q=0, *"], Some("zstd")),
        (&["Accept-Encoding: ;;;, @@"], None),
    ];
    for (fields, coding) in cases {
        let r = ask(&n, "GET", &root, fields);
        assert_eq!(r.status, 200, "{fields:?}: {r:?}");
        assert_eq!(r.header("Content-Encoding"), coding, "{fields:?}");
        assert_eq!(r.header("Vary"), Some("Accept-Encoding"));
        assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
        let piece = match coding {
            None => index.identity(),
            Some("br") => index.variants[&Encoding::Br],
            Some(_) => index.variants[&Encoding::Zstd],
        };
        assert_eq!(
            r.header("ETag"),
            Some(format!("\"{}\"", piece.hash).as_str())
        );
        assert_eq!(r.body.len() as u64, piece.len);
        assert!(decoded(coding, &r.body) == index_file, "{fields:?}");
    }
    for refused in ["identity;q=0", "*;q=0"] {
        let field = format!("Accept-Encoding: {refused}");
        let r = ask(&n, "GET", &format!("/o/{bundle}/noise.bin"), &[&field]);
        assert_eq!(r.status, 406, "{refused}: {r:?}");
        assert!(
            r.json()["message"].as_str().unwrap().contains("(identity)"),
            "{r:?}"
        );
    }

    // Conditions and ranges apply to the representation chosen.
    let br = index.variants[&Encoding::Br];
    let br_tag = format!("If-None-Match: \"{}\"", br.hash);
    let r = ask(&n, "GET", &root, &["Accept-Encoding: br", &br_tag]);
    assert_eq!((r.status, r.header("Vary")), (304, Some("Accept-Encoding")));
    let r = ask(&n, "GET", &root, &[&br_tag]);
    assert_eq!(r.status, 200, "identity has another ETag");
    let r = ask(
        &n,
        "GET",
        &root,
        &["Accept-Encoding: br", "Range: bytes=0-9"],
    );
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes 0-9/{}", br.len).as_str())
    );
    assert_eq!(r.body, get_bytes(&n, &br.hash)[..10]);
    let r = ask(
        &n,
        "HEAD",
        &format!("{root}index.html"),
        &["Accept-Encoding: zstd"],
    );
    assert_eq!(
        (r.status, r.header("Content-Encoding")),
        (200, Some("zstd"))
    );
    assert!(r.body.is_empty());

    // Paths: directories, redirects, refusals.
    let guide = std::fs::read(site.join("docs/guide/index.html")).unwrap();
    let r = ask(&n, "GET", &format!("/o/{bundle}/docs/guide/"), &[]);
    assert_eq!((r.status, &r.body), (200, &guide));
    let r = ask(&n, "GET", &format!("/o/{bundle}/docs/guide"), &[]);
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("Location"),
        Some(format!("/o/{bundle}/docs/guide/").as_str())
    );
    let r = ask(&n, "GET", &format!("/o/{bundle}/docs/"), &[]);
    assert_eq!(r.status, 404);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("directory without index.html"));
    let r = ask(&n, "GET", &format!("/o/{bundle}/missing.html"), &[]);
    assert_eq!(r.status, 404);
    for bad in [
        "../index.html",
        "docs//guide/",
        "css/%2e%2e/app.js",
        "a%2Fb",
    ] {
        let r = ask(&n, "GET", &format!("/o/{bundle}/{bad}"), &[]);
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert_eq!(r.json()["code"], "bad_request");
    }
    let r = ask(&n, "PUT", &format!("/o/{bundle}/x"), &["Content-Length: 0"]);
    assert_eq!(r.status, 405);
    // The plain object GET of any piece, and of the manifest, keeps working.
    assert_eq!(get_bytes(&n, &index.hash), index_file);

    // curl --compressed decodes what it is sent into the file's bytes.
    let url = format!("http://{}{root}css/site.css", n.http);
    let out = std::process::Command::new("curl")
        .args(["-sS", "--compressed", "-D", "-", "-o", "-", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        text.contains("content-encoding: br") || text.contains("content-encoding: zstd"),
        "{text}"
    );
    let css = std::fs::read(site.join("css/site.css")).unwrap();
    assert!(
        out.stdout.ends_with(&css),
        "curl --compressed decodes to the file"
    );

    // Counted by the coding sent: 5 identity, 3 br, 3 zstd, and curl's one of either.
    let served = |coding: &str| {
        let series = format!("ron_bundle_entries_served_total{{encoding=\"{coding}\"}}");
        gauge(n.admin, &series).unwrap_or(0.0) as u64
    };
    let counted = || served("identity") + served("br") + served("zstd");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while counted() != 12 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        counted(),
        12,
        "identity {}, br {}, zstd {}",
        served("identity"),
        served("br"),
        served("zstd")
    );
    assert_eq!(served("identity"), 5);
    assert!((3..=4).contains(&served("br")) && (3..=4).contains(&served("zstd")));
    assert_eq!(served("gzip"), 0);
    assert_eq!(metric(n.admin, "ron_http_range_answers_total"), 1);
    assert_eq!(metric(n.admin, "ron_http_not_modified_total"), 1);
    std::fs::remove_dir_all(&site).unwrap();
}

/// A manifest is trusted only once it parses and checks out, and a piece only at the
/// length the manifest gives it.
#[test]
fn a_bad_manifest_or_a_lying_one_is_refused_with_the_reason() {
    let dir = temp_dir("bundle-bad");
    let n = Node::start(&dir, &["--shards", "1"]);
    let not_manifest = upload(&n, b"just some bytes");
    let r = ask(&n, "GET", &format!("/o/{not_manifest}/index.html"), &[]);
    assert_eq!(r.status, 400, "{r:?}");
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.starts_with("bundle manifest: not a manifest"),
        "{message}"
    );

    let page = b"<h1>the real page</h1>".repeat(20);
    let page_addr = upload(&n, &page);
    let lying = format!(
        r#"{{"format":"ron-bundle/1","entries":[{{"path":"index.html","hash":"{page_addr}","len":7,"type":"text/html"}}]}}"#
    );
    let lying_addr = upload(&n, lying.as_bytes());
    let r = ask(&n, "GET", &format!("/o/{lying_addr}/"), &[]);
    assert_eq!(r.status, 502, "{r:?}");
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("says \"index.html\" is 7 bytes in identity"),
        "{message}"
    );
    assert!(
        message.contains(&format!("holds {}", page.len())),
        "{message}"
    );

    let twice = format!(
        r#"{{"format":"ron-bundle/1","entries":[{{"path":"a","hash":"{page_addr}","len":440,"type":"t/t"}},{{"path":"a","hash":"{page_addr}","len":440,"type":"t/t"}}]}}"#
    );
    let twice_addr = upload(&n, twice.as_bytes());
    let r = ask(&n, "GET", &format!("/o/{twice_addr}/a"), &[]);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["message"].as_str().unwrap(),
        "bundle manifest: \"a\" is named twice"
    );
    let missing = Address::of(b"no such manifest");
    assert_eq!(ask(&n, "GET", &format!("/o/{missing}/a"), &[]).status, 404);
    // A bad path is refused before the manifest is looked for.
    let r = ask(&n, "GET", &format!("/o/{missing}/a/../b"), &[]);
    assert_eq!(r.status, 400, "{r:?}");
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(message.starts_with("bundle path \"a/../b\""), "{message}");
}

/// Every file of the tree under `root`, by its path below it.
fn tree_files(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for item in std::fs::read_dir(&dir).unwrap() {
            let path = item.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let name = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                files.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// A packed site browsed the way a crawler does (`wget --mirror`, following its links
/// from `/`) comes back byte for byte; and through an edge that has never seen it, read
/// through from the node that holds it, in the coding asked for.
#[test]
#[ignore = "needs wget: run by scripts/test-all.sh"]
fn a_packed_site_mirrors_byte_for_byte_and_an_edge_reads_it_through() {
    let dir = temp_dir("bundle-mirror");
    let site = dir.with_extension("site");
    let mirror = dir.with_extension("mirror");
    for d in [&site, &mirror] {
        let _ = std::fs::remove_dir_all(d);
    }
    write_site(&site);
    let n = Node::start(&dir, &["--shards", "1"]);
    let bundle = packed_address(&pack(&n, &site, &[]));
    let url = format!("http://{}/o/{bundle}/", n.http);
    let out = std::process::Command::new("wget")
        .args(["--mirror", "--no-parent", "-nH", "--cut-dirs=2", "-q", "-P"])
        .arg(&mirror)
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        tree_files(&mirror),
        tree_files(&site),
        "the mirror is the site"
    );

    // An edge with the node as its origin: the manifest, then the entry, read through.
    let origin = format!("http://{}", n.http);
    let edge = Node::start(
        &temp_dir("bundle-edge"),
        &["--shards", "2", "--origin", &origin],
    );
    let css = std::fs::read(site.join("css/site.css")).unwrap();
    let r = ask(
        &edge,
        "GET",
        &format!("/o/{bundle}/css/site.css"),
        &["Accept-Encoding: zstd"],
    );
    assert_eq!(
        (r.status, r.header("Content-Encoding")),
        (200, Some("zstd")),
        "{r:?}"
    );
    assert!(decoded(Some("zstd"), &r.body) == css);
    let r = ask(&edge, "GET", &format!("/o/{bundle}/docs/guide/"), &[]);
    assert_eq!(r.status, 200);
    assert!(r.body == std::fs::read(site.join("docs/guide/index.html")).unwrap());
    let fetched = metric_reaching(
        edge.admin,
        "ron_fetches_stored_total",
        3,
        Duration::from_secs(5),
    );
    assert!(fetched >= 3, "the manifest and two pieces: {fetched}");
    for d in [site, mirror] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// A stored variant that fails verification is never sent: the next representation the
/// client accepts is, and with none left the error is a clean 500.
#[test]
fn a_rotten_variant_is_never_served_and_the_next_representation_is() {
    let dir = temp_dir("bundle-rot");
    let site = dir.with_extension("site");
    let _ = std::fs::remove_dir_all(&site);
    write_site(&site);
    // One lane (no parity): a flipped byte cannot be rebuilt.
    let mut n = Node::start(&dir, &["--shards", "1", "--ec", "off"]);
    let bundle = packed_address(&pack(&n, &site, &[]));
    let manifest = Manifest::parse(&get_bytes(&n, &bundle)).unwrap();
    let entry = manifest.entry("app.js").unwrap().clone();
    let br = entry.variants[&Encoding::Br];
    assert_eq!(n.stop().code(), Some(0));
    let (segment, at) = n.stored_at(&br.hash);
    flip_byte(&segment, at + br.len / 2);
    n.restart(&["--shards", "1", "--ec", "off"]);
    let file = std::fs::read(site.join("app.js")).unwrap();
    let path = format!("/o/{bundle}/app.js");

    let r = ask(&n, "GET", &path, &["Accept-Encoding: br, zstd"]);
    assert_eq!(
        (r.status, r.header("Content-Encoding")),
        (200, Some("zstd")),
        "{r:?}"
    );
    assert!(decoded(Some("zstd"), &r.body) == file);
    let r = ask(&n, "GET", &path, &["Accept-Encoding: br"]);
    assert_eq!((r.status, r.header("Content-Encoding")), (200, None));
    assert!(r.body == file, "identity, the last acceptable");
    let r = ask(&n, "GET", &path, &["Accept-Encoding: br, identity;q=0"]);
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(r.json()["code"], "bad_digest");
    let failures = metric_reaching(
        n.admin,
        "ron_verify_failures_total",
        1,
        Duration::from_secs(5),
    );
    assert!(failures >= 1, "counted: {failures}");
    std::fs::remove_dir_all(&site).unwrap();
}

/// A HEAD of a bundle entry shows what a GET sends: a first-choice variant of several
/// groups whose first group is rotten is passed over by both. Before, HEAD did not open
/// it (a variant of one group is checked when it is found; a longer one only when
/// opened), and showed its coding and ETag while GET sent another.
#[test]
fn a_head_shows_the_representation_a_get_sends() {
    let dir = temp_dir("bundle-head");
    let site = dir.with_extension("site");
    let _ = std::fs::remove_dir_all(&site);
    std::fs::create_dir_all(&site).unwrap();
    let text: String = bytes(41, 200_000)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(site.join("big.txt"), &text).unwrap();
    let mut n = Node::start(&dir, &["--shards", "1", "--ec", "off"]);
    let bundle = packed_address(&pack(&n, &site, &[]));
    let manifest = Manifest::parse(&get_bytes(&n, &bundle)).unwrap();
    let br = manifest.entry("big.txt").unwrap().variants[&Encoding::Br];
    assert!(
        br.len > 64 * 1024,
        "a variant of several groups: {}",
        br.len
    );
    assert_eq!(n.stop().code(), Some(0));
    let (file, at) = n.stored_at(&br.hash);
    flip_byte(&file, at + 100);
    n.restart(&["--shards", "1", "--ec", "off"]);
    let path = format!("/o/{bundle}/big.txt");

    let head = ask(&n, "HEAD", &path, &["Accept-Encoding: br, zstd"]);
    let r = ask(&n, "GET", &path, &["Accept-Encoding: br, zstd"]);
    assert_eq!(
        (r.status, r.header("Content-Encoding")),
        (200, Some("zstd")),
        "{r:?}"
    );
    assert_eq!(
        (head.header("Content-Encoding"), head.header("ETag")),
        (r.header("Content-Encoding"), r.header("ETag")),
        "{head:?}"
    );
    // The fallback is right but not what a br client should get from a cache for a
    // year: cached for a minute (before: immutable, a year), the HEAD alike.
    for answer in [&r, &head] {
        assert_eq!(
            answer.header("Cache-Control"),
            Some("public, max-age=60, no-transform"),
            "{answer:?}"
        );
    }
    let first_choice = ask(&n, "GET", &path, &["Accept-Encoding: zstd"]);
    assert_eq!(
        first_choice.header("Cache-Control"),
        Some("public, max-age=31536000, immutable, no-transform"),
        "{first_choice:?}"
    );
    std::fs::remove_dir_all(&site).unwrap();
}

/// A manifest too large to parse on the shard (over 64 KiB: the blocking pool) serves
/// the same, to many clients asking at once before it is cached.
#[test]
fn a_large_manifest_serves_many_clients_at_once() {
    use ron_codec::bundle::Entry;
    let n = Node::start(&temp_dir("bundle-large"), &["--shards", "1"]);
    let body = b"shared body".to_vec();
    let piece = upload(&n, &body);
    let entries: Vec<Entry> = (0..2_000)
        .map(|i| Entry {
            path: format!("dir{}/file{i:04}.txt", i % 7),
            hash: piece,
            len: body.len() as u64,
            media_type: "text/plain; charset=utf-8".into(),
            variants: Default::default(),
        })
        .collect();
    let bytes = Manifest::new(entries, Default::default()).unwrap().encode();
    assert!(bytes.len() > 64 * 1024, "{} bytes", bytes.len());
    let bundle = upload(&n, &bytes);
    let node = &n;
    let answers: Vec<Response> = std::thread::scope(|scope| {
        let asks: Vec<_> = (0..16)
            .map(|i| {
                let path = format!("/o/{bundle}/dir{}/file{:04}.txt", (i * 97) % 7, i * 97);
                scope.spawn(move || ask(node, "GET", &path, &[]))
            })
            .collect();
        asks.into_iter().map(|a| a.join().unwrap()).collect()
    });
    for r in answers {
        assert_eq!((r.status, &r.body), (200, &body), "{r:?}");
    }
}

/// A site packed on a one-shard node that reads its denylist from a dir of its own:
/// the node, the site's root, the lists' dir and the bundle's address.
fn site_under_a_denylist(name: &str) -> (Node, PathBuf, PathBuf, Address) {
    let dir = temp_dir(name);
    let site = dir.with_extension("site");
    let lists = dir.with_extension("lists");
    let _ = std::fs::remove_dir_all(&site);
    std::fs::create_dir_all(&lists).unwrap();
    write_site(&site);
    let list_dir = lists.to_str().unwrap().to_string();
    let n = Node::start(&dir, &["--shards", "1", "--denylist", &list_dir]);
    let bundle = packed_address(&pack(&n, &site, &[]));
    (n, site, lists, bundle)
}

/// A takedown of a site: once its bundle's address is on the denylist, every page of
/// it answers 451 at once — also on a shard that had its manifest cached (before, the
/// cache answered without asking the denylist, and a visited site stayed up).
#[test]
fn a_blocked_bundle_stops_serving_at_once_even_with_its_manifest_cached() {
    let (n, _site, lists, bundle) = site_under_a_denylist("bundle-blocked");
    for page in ["index.html", "css/site.css"] {
        let r = get(n.http, &format!("/o/{bundle}/{page}")).unwrap();
        assert_eq!(r.status, 200, "{page}: {r:?}");
    }

    write_list(&lists, "takedown.deny", &format!("b3:{}\n", hex(&bundle)));
    wait_for_policy(&n, 2);
    for page in ["index.html", "css/site.css", "docs/guide/"] {
        let r = get(n.http, &format!("/o/{bundle}/{page}")).unwrap();
        assert_eq!(r.status, 451, "{page}: {r:?}");
        assert_eq!(r.json()["code"], "blocked", "{page}");
    }
}

/// The denylist names content: a file's own bytes blocked are blocked in every coding
/// (before, a browser asking for br got the blocked file in br, 200); a variant blocked
/// or removed is passed over for the next representation (before: 451, or 404 for an
/// entry the manifest names while its identity was held).
#[test]
fn a_blocked_file_is_blocked_in_every_coding_and_a_missing_variant_is_passed_over() {
    let (n, site, lists, bundle) = site_under_a_denylist("bundle-entry-blocked");
    let manifest = Manifest::parse(&get_bytes(&n, &bundle)).unwrap();
    let app = manifest.entry("app.js").unwrap().clone();
    let css = manifest.entry("css/site.css").unwrap().clone();
    assert!(!app.variants.is_empty() && css.variants.contains_key(&Encoding::Br));

    write_list(
        &lists,
        "takedown.deny",
        &format!(
            "b3:{}\nb3:{}\n",
            hex(&app.hash),
            hex(&css.variants[&Encoding::Br].hash)
        ),
    );
    wait_for_policy(&n, 2);
    for accept in ["br, zstd", "zstd", "identity"] {
        let field = format!("Accept-Encoding: {accept}");
        let r = ask(&n, "GET", &format!("/o/{bundle}/app.js"), &[&field]);
        assert_eq!(r.status, 451, "app.js as {accept}: {r:?}");
    }
    let r = ask(
        &n,
        "GET",
        &format!("/o/{bundle}/css/site.css"),
        &["Accept-Encoding: br"],
    );
    assert_eq!(
        (r.status, r.header("Content-Encoding")),
        (200, None),
        "{r:?}"
    );

    let zstd = css.variants[&Encoding::Zstd].hash;
    let removed = request(
        n.admin,
        format!("POST /admin/remove/{zstd} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    assert_eq!(removed.status, 200, "{removed:?}");
    let r = ask(
        &n,
        "GET",
        &format!("/o/{bundle}/css/site.css"),
        &["Accept-Encoding: zstd"],
    );
    assert_eq!(
        (r.status, r.header("Content-Encoding")),
        (200, None),
        "{r:?}"
    );
    assert_eq!(
        r.header("Cache-Control"),
        Some("public, max-age=60, no-transform"),
        "the identity served for a zstd client is cached briefly: {r:?}"
    );
    assert!(r.body == std::fs::read(site.join("css/site.css")).unwrap());
    std::fs::remove_dir_all(&site).unwrap();
}

/// A site stored here loads at once while anonymous requests for addresses nobody has
/// wait on a read-through that never answers: a lookup holds no manifest slot (before,
/// each took one of a shard's four for its whole wait, and four such requests every
/// fetch timeout kept every cold bundle of the shard from loading).
#[test]
fn lookups_of_missing_bundles_hold_no_slot_a_stored_site_needs() {
    let (stalled, taken) = silent_listener();
    let dir = temp_dir("bundle-slots");
    let site = dir.with_extension("site");
    let _ = std::fs::remove_dir_all(&site);
    write_site(&site);
    let origin = format!("http://{stalled}");
    let flags = [
        "--shards",
        "1",
        "--origin",
        &origin,
        "--fetch-timeout-ms",
        "8000",
    ];
    let n = Node::start(&dir, &flags);
    let bundle = packed_address(&pack(&n, &site, &[]));

    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let lookups: Vec<_> = (0..6u8)
        .map(|i| {
            let (at, answered) = (n.http, std::sync::Arc::clone(&answered));
            let missing = Address::of(&[i; 9]);
            std::thread::spawn(move || {
                let r = get(at, &format!("/o/{missing}/index.html")).unwrap();
                answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                r.status
            })
        })
        .collect();
    wait_for(
        "every lookup waits on the origin",
        Duration::from_secs(10),
        || taken.load(std::sync::atomic::Ordering::SeqCst) >= 6,
    );
    let r = get(n.http, &format!("/o/{bundle}/index.html")).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        answered.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the stored site answered while every lookup still waited"
    );
    for lookup in lookups {
        assert_eq!(lookup.join().unwrap(), 504);
    }
}

/// A path under an object that is not a manifest is refused, and the refusal remembered;
/// what finding that out read is charged to the client's byte quota. An object that does
/// not begin as a JSON object (an image, a video) is refused having read its first
/// group; one that does is read whole. Before, every such object was read whole (up to
/// 16 MiB), for nothing, to answer a 400 of a hundred bytes, and only 64 refusals were
/// remembered: a client cycling through 65 objects made the node read one each time.
#[test]
fn paths_under_objects_that_are_no_manifests_cost_a_group_or_the_clients_quota() {
    let dir = temp_dir("bundle-no-manifest");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("ron.toml");
    std::fs::write(
        &config,
        "[quota_default]\nbytes_per_s = 1048576\nbytes_burst = 8388608\n\n\
         [tenants.up]\ntokens = [\"tok-up\"]\nbytes_per_s = 1000000000000\nbytes_burst = 1000000000000\n",
    )
    .unwrap();
    let n = Node::start(
        &dir.join("data"),
        &["--shards", "1", "--config", config.to_str().unwrap()],
    );
    let store = |body: &[u8]| -> Address {
        let r = put(n.http, "/o", body, "Authorization: Bearer tok-up\r\n");
        assert_eq!(r.status, 201, "{r:?}");
        r.json()["obj"].as_str().unwrap().parse().unwrap()
    };
    // Six 4 MiB objects that are not JSON: 24 MiB if read whole, three times the
    // client's burst; one group each (384 KiB) leaves it well within.
    let binaries: Vec<Address> = (0..6u8)
        .map(|i| {
            let mut body = bytes(100 + u64::from(i), 4 << 20);
            body[0] = 0;
            store(&body)
        })
        .collect();
    for addr in &binaries {
        let r = ask(&n, "GET", &format!("/o/{addr}/index.html"), &[]);
        assert_eq!(r.status, 400, "{r:?}");
        assert_eq!(
            r.json()["message"].as_str().unwrap(),
            format!("bundle manifest: not a manifest: {addr} does not begin with a JSON object")
        );
    }
    let small = store(b"a small object the client may still read");
    let r = ask(&n, "GET", &format!("/o/{small}"), &[]);
    assert_eq!(r.status, 200, "within its byte quota still: {r:?}");
    // Sixteen 1 MiB JSON objects that are no manifests: each is read and parsed whole,
    // and the client's quota pays for it.
    let padding = "a".repeat(1 << 20);
    let lookalikes: Vec<Address> = (0..16)
        .map(|i| {
            let body = format!(r#"{{"format":"ron-bundle/1","entries":[],"pad{i}":"{padding}"}}"#);
            store(body.as_bytes())
        })
        .collect();
    let statuses: Vec<u16> = lookalikes
        .iter()
        .map(|addr| ask(&n, "GET", &format!("/o/{addr}/index.html"), &[]).status)
        .collect();
    let refused = statuses.iter().filter(|s| **s == 400).count();
    let over_quota = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(refused + over_quota, 16, "{statuses:?}");
    assert!(
        (8..=11).contains(&refused),
        "an 8 MiB burst and 1 MiB/s pay for 8 to 11 reads of 1 MiB: {statuses:?}"
    );
}
