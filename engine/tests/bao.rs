//! Bao over HTTP against the real binary, decoded by code this project did not write:
//! bao-tree (n0's implementation) in process and the `bao` CLI (bao_bin) as a program.
//! Whole encodings and slices at unaligned offsets, empty objects, the last partial
//! chunk, 16 KiB groups, outboards; a corrupting proxy's flipped byte rejected; the
//! HTTP around them (ETags, Vary, 304, 412, 416, 406).

mod common;

use std::io::{Cursor, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;

use bao_tree::blake3;
use bao_tree::io::outboard::PreOrderMemOutboard;
use bao_tree::io::sync::DecodeResponseIter;
use bao_tree::io::BaoContentItem;
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};
use common::daemon::program;
use common::*;
use ron_codec::Address;

const MIB: usize = 1 << 20;

/// Lengths at the edges that matter: empty, one byte, a chunk and one more, a group
/// and one more, an unaligned object of several groups, 1 MiB and a partial chunk.
const LENGTHS: [usize; 7] = [0, 1, 1024, 1025, 65537, 300_001, MIB + 7];

fn bao_get(
    http: SocketAddr,
    addr: &Address,
    log: u8,
    range: Option<(u64, u64)>,
    extra: &str,
) -> Response {
    let mut headers = format!("Accept: application/x-bao; chunk-group-log={log}\r\n{extra}");
    if let Some((first, last)) = range {
        headers.push_str(&format!("Range: bytes={first}-{last}\r\n"));
    }
    get_with(http, &format!("/o/{addr}"), &headers)
}

/// The leaves bao-tree proves of `answer` (length header, then the walk) for the
/// chunks `first..end` (all when `None`), checked against `addr`: (offset, bytes).
fn bao_tree_decode(
    addr: &Address,
    log: u8,
    chunks: Option<(u64, u64)>,
    answer: &[u8],
) -> Result<Vec<(u64, Vec<u8>)>, String> {
    let (header, body) = answer.split_at_checked(8).ok_or("no length header")?;
    let len = u64::from_le_bytes(header.try_into().unwrap());
    let tree = BaoTree::new(len, BlockSize::from_chunk_log(log));
    let ranges = match chunks {
        Some((first, end)) => ChunkRanges::from(ChunkNum(first)..ChunkNum(end)),
        None => ChunkRanges::all(),
    };
    let root = blake3::Hash::from_bytes(*addr.as_bytes());
    let mut reader = Cursor::new(body);
    let mut leaves = Vec::new();
    for item in DecodeResponseIter::new(root, tree, &mut reader, &ranges) {
        if let BaoContentItem::Leaf(leaf) = item.map_err(|e| e.to_string())? {
            leaves.push((leaf.offset, leaf.data.to_vec()));
        }
    }
    if reader.position() != body.len() as u64 {
        return Err(format!(
            "{} bytes past the walk",
            body.len() as u64 - reader.position()
        ));
    }
    Ok(leaves)
}

/// Checks that `leaves` are `data`'s bytes and cover `first..=last`.
fn assert_proves(leaves: &[(u64, Vec<u8>)], data: &[u8], first: u64, last: u64, what: &str) {
    let mut covered = first;
    for (offset, bytes) in leaves {
        let at = *offset as usize;
        assert_eq!(
            &data[at..at + bytes.len()],
            &bytes[..],
            "{what}: leaf at {offset}"
        );
        if *offset <= covered {
            covered = covered.max(offset + bytes.len() as u64);
        }
    }
    assert!(
        covered > last || data.is_empty(),
        "{what}: proves up to {covered}, not {last}"
    );
}

#[test]
fn encodings_and_slices_decode_with_bao_tree() {
    let dir = temp_dir("bao-decode");
    let node = Node::start(&dir.join("data"), &[]);
    for (i, len) in LENGTHS.into_iter().enumerate() {
        let data = bytes(i as u64 + 1, len);
        let addr = upload(&node, &data);
        let plain_etag = format!("\"{addr}\"");
        for log in [0u8, 4, 6] {
            let what = format!("{len} bytes, chunk-group-log {log}");
            let whole = bao_get(node.http, &addr, log, None, "");
            assert_eq!(whole.status, 200, "{what}: {whole:?}");
            let content_type = format!("application/x-bao; chunk-group-log={log}");
            assert_eq!(
                whole.header("content-type"),
                Some(content_type.as_str()),
                "{what}"
            );
            assert_eq!(
                whole.header("vary"),
                Some("Accept, Range, If-Range"),
                "{what}"
            );
            assert_eq!(whole.header("bao-range"), None, "{what}: a whole encoding");
            let etag = whole.header("etag").unwrap();
            assert_eq!(etag, format!("\"{addr}.bao{log}\""), "{what}");
            assert_ne!(etag, plain_etag);
            let leaves = bao_tree_decode(&addr, log, None, &whole.body).unwrap();
            let decoded: Vec<u8> = leaves.iter().flat_map(|(_, b)| b.clone()).collect();
            assert!(
                decoded == data,
                "{what}: the whole encoding decodes to the object"
            );
            if len == 0 {
                assert_eq!(
                    whole.body,
                    0u64.to_le_bytes(),
                    "the empty object's encoding"
                );
                continue;
            }
            let last_byte = len as u64 - 1;
            let third = len as u64 / 3;
            let slices = [
                (0, 0),
                (last_byte, last_byte),
                (1000.min(last_byte), 1099.min(last_byte)),
                (third, (third + 70_000).min(last_byte)),
                (5.min(last_byte), last_byte),
            ];
            for (first, last) in slices {
                let what = format!("{what}, bytes {first}-{last}");
                let slice = bao_get(node.http, &addr, log, Some((first, last)), "");
                assert_eq!(slice.status, 200, "{what}: a slice is not a 206: {slice:?}");
                let named = format!("bytes {first}-{last}/{len}");
                assert_eq!(slice.header("bao-range"), Some(named.as_str()), "{what}");
                assert_eq!(
                    slice.header("vary"),
                    Some("Accept, Range, If-Range"),
                    "{what}"
                );
                let slice_etag = format!("\"{addr}.bao{log}.{first}-{last}\"");
                assert_eq!(slice.header("etag"), Some(slice_etag.as_str()), "{what}");
                let chunks = (first / 1024, last / 1024 + 1);
                let leaves = bao_tree_decode(&addr, log, Some(chunks), &slice.body)
                    .unwrap_or_else(|e| panic!("{what}: bao-tree refuses the slice: {e}"));
                assert_proves(&leaves, &data, first, last, &what);
            }
        }
    }
}

#[test]
fn outboards_are_what_bao_tree_computes() {
    let dir = temp_dir("bao-outboard");
    let node = Node::start(&dir.join("data"), &[]);
    for (i, len) in [0, 1025, 300_001, MIB + 7].into_iter().enumerate() {
        let data = bytes(i as u64 + 40, len);
        let addr = upload(&node, &data);
        let theirs = |log: u8| {
            PreOrderMemOutboard::create(&data, BlockSize::from_chunk_log(log))
                .into_inner_with_prefix()
        };
        for (target, log) in [
            (format!("/o/{addr}?outboard"), 0),
            (format!("/o/{addr}?outboard&chunk-group-log=4"), 4),
            (format!("/o/{addr}.obao"), 6),
        ] {
            let r = get(node.http, &target).unwrap();
            assert_eq!(r.status, 200, "{target}: {r:?}");
            let content_type = format!("application/x-bao-outboard; chunk-group-log={log}");
            assert_eq!(
                r.header("content-type"),
                Some(content_type.as_str()),
                "{target}"
            );
            assert_eq!(r.header("etag").unwrap(), format!("\"{addr}.obao{log}\""));
            assert!(r.body == theirs(log), "{target}: {len} bytes, log {log}");
        }
        // At log 6 it costs 64 bytes per 64 KiB: a 1 GiB object's is 1 MiB.
        if len == MIB + 7 {
            assert_eq!(theirs(6).len(), 8 + 16 * 64);
        }
    }
}

#[test]
fn bao_answers_speak_http_as_caches_expect() {
    let dir = temp_dir("bao-http");
    let node = Node::start(&dir.join("data"), &[]);
    let data = bytes(7, 200_000);
    let addr = upload(&node, &data);
    let path = format!("/o/{addr}");

    let plain = get(node.http, &path).unwrap();
    assert_eq!(
        plain.header("vary"),
        Some("Accept"),
        "the plain bytes vary by Accept too"
    );
    let whole = bao_get(node.http, &addr, 4, None, "");
    let etag = whole.header("etag").unwrap().to_string();

    let again = bao_get(
        node.http,
        &addr,
        4,
        None,
        &format!("If-None-Match: {etag}\r\n"),
    );
    assert_eq!(again.status, 304, "{again:?}");
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    assert_eq!(again.header("vary"), Some("Accept, Range, If-Range"));
    let plain_tag = format!("If-None-Match: \"{addr}\"\r\n");
    assert_eq!(
        bao_get(node.http, &addr, 4, None, &plain_tag).status,
        200,
        "another tag"
    );
    let bao_tag = format!("If-None-Match: {etag}\r\n");
    assert_eq!(
        get_with(node.http, &path, &bao_tag).status,
        200,
        "the plain answer's tag differs"
    );
    let if_match = bao_get(node.http, &addr, 4, None, &plain_tag.replace("None-", ""));
    assert_eq!(if_match.status, 412, "{if_match:?}");

    let head = request(
        node.http,
        format!("HEAD {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/x-bao;chunk-group-log=4\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        whole.header("content-length")
    );
    assert!(head.body.is_empty());

    // A slice is a representation of its own: HEAD answers the GET's head.
    let slice = bao_get(node.http, &addr, 0, Some((70_000, 80_000)), "");
    let slice_head = request(
        node.http,
        format!("HEAD {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/x-bao\r\nRange: bytes=70000-80000\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    assert_eq!(slice_head.status, slice.status, "{slice_head:?}");
    for name in [
        "etag",
        "content-length",
        "bao-range",
        "content-type",
        "vary",
    ] {
        assert_eq!(slice_head.header(name), slice.header(name), "{name}");
    }
    assert!(slice_head.body.is_empty());

    let past = bao_get(node.http, &addr, 0, Some((200_000, 200_010)), "");
    assert_eq!(past.status, 416, "{past:?}");
    assert_eq!(past.header("content-range"), Some("bytes */200000"));
    assert_eq!(past.json()["code"], "range_not_satisfiable");

    let unservable = bao_get(node.http, &addr, 9, None, "");
    assert_eq!(unservable.status, 406, "{unservable:?}");
    assert_eq!(unservable.json()["code"], "not_acceptable");
    // RFC 9110 §12.5.1: a fallback beside the unservable bao accepts the bytes.
    let fallback = get_with(
        node.http,
        &path,
        "Accept: application/x-bao; chunk-group-log=9, */*\r\n",
    );
    assert_eq!(fallback.status, 200, "{fallback:?}");
    assert_eq!(fallback.header("content-length"), Some("200000"));
    let bad_log = get(node.http, &format!("{path}?outboard&chunk-group-log=x")).unwrap();
    assert_eq!(bad_log.status, 400, "{bad_log:?}");
    assert_eq!(
        bad_log.json()["message"],
        "chunk-group-log=\"x\": outboards are served at chunk-group-log 0 through 6"
    );

    // If-Range naming another tag, or several ranges: the whole encoding.
    let if_range = bao_get(
        node.http,
        &addr,
        4,
        Some((10, 20)),
        "If-Range: \"other\"\r\n",
    );
    assert_eq!(if_range.header("bao-range"), None);
    assert_eq!(if_range.body, whole.body);
    let several = get_with(
        node.http,
        &path,
        "Accept: application/x-bao;chunk-group-log=4\r\nRange: bytes=0-9,100-109\r\n",
    );
    assert_eq!(several.body, whole.body);

    let unknown = format!("/o/b3:{}", "0".repeat(64));
    let missing = get_with(node.http, &unknown, "Accept: application/x-bao\r\n");
    assert_eq!(missing.status, 404);
    let outboard_put = request(
        node.http,
        format!("PUT {path}?outboard HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    assert_eq!(outboard_put.status, 405);
    assert_eq!(outboard_put.header("allow"), Some("GET, HEAD"));
}

/// A proxy for `answers` requests in turn (one connection each): it forwards the
/// request, reads the whole answer, flips the body byte at the offset given for that
/// request (if the body has it) and sends the rest on.
fn corrupting_proxy(upstream: SocketAddr, flips: Vec<u64>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for flip in flips {
            let Ok((mut client, _)) = listener.accept() else {
                return;
            };
            let _ = relay_flipped(&mut client, upstream, flip);
        }
    });
    addr
}

fn relay_flipped(client: &mut TcpStream, upstream: SocketAddr, flip: u64) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") {
        client.read_exact(&mut byte)?;
        request.push(byte[0]);
    }
    // One answer per connection: the node closes after it, so the answer is whole at EOF.
    request.truncate(request.len() - 2);
    request.extend_from_slice(b"Connection: close\r\n\r\n");
    let mut server = connect(upstream);
    server.write_all(&request)?;
    let mut answer = Vec::new();
    server.read_to_end(&mut answer)?;
    let head_len = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |at| at + 4);
    if let Some(byte) = answer.get_mut(head_len + flip as usize) {
        *byte ^= 0x01;
    }
    client.write_all(&answer)
}

#[test]
fn a_flipped_byte_anywhere_is_rejected_by_bao_tree() {
    let dir = temp_dir("bao-flip");
    let node = Node::start(&dir.join("data"), &[]);
    let data = bytes(9, 300_001);
    let addr = upload(&node, &data);
    for (log, range) in [
        (0u8, None),
        (4, Some((70_000u64, 140_000u64))),
        (6, Some((3, 65_540))),
    ] {
        let clean = bao_get(node.http, &addr, log, range, "");
        let len = clean.body.len() as u64;
        // The length header, the first parent, bytes inside, the very last byte.
        let flips = vec![0, 9, 8 + 64 + 3, len / 2, len - 1];
        let proxy = corrupting_proxy(node.http, flips.clone());
        let chunks = range.map(|(first, last)| (first / 1024, last / 1024 + 1));
        for flip in flips {
            let bad = bao_get(proxy, &addr, log, range, "");
            assert_eq!(bad.body.len(), clean.body.len());
            assert_ne!(bad.body, clean.body, "the proxy flipped byte {flip}");
            let decoded = bao_tree_decode(&addr, log, chunks, &bad.body);
            if flip >= 8 || range.is_none() {
                assert!(
                    decoded.is_err(),
                    "log {log} {range:?}: flip at {flip} went unnoticed"
                );
                continue;
            }
            // bao's own rule: a slice that stops short of the last chunk proves its bytes,
            // not the length header — a lie about it that keeps the tree's shape on the
            // slice's path goes through, and every byte delivered is still the object's.
            if let Ok(leaves) = decoded {
                let (first, last) = range.unwrap();
                assert_proves(&leaves, &data, first, last, "a slice under a wrong length");
            }
        }
    }
}

fn bao_cli(args: &[&str]) -> std::process::Output {
    Command::new(program_in_path("bao"))
        .args(args)
        .output()
        .expect("run bao")
}

/// `bao` is installed with `cargo install bao_bin` (in ~/.cargo/bin; scripts/test-all.sh does it).
fn program_in_path(name: &str) -> std::path::PathBuf {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|home| home.join("bin").join(name));
    match cargo_bin.filter(|path| path.exists()) {
        Some(path) => path,
        None => program(name),
    }
}

#[test]
#[ignore = "needs the bao CLI (cargo install bao_bin): run by scripts/test-all.sh"]
fn the_bao_cli_decodes_encodings_slices_and_outboards() {
    let dir = temp_dir("bao-cli");
    let node = Node::start(&dir.join("data"), &[]);
    for (i, len) in [0usize, 1, 5000, 300_001].into_iter().enumerate() {
        let data = bytes(i as u64 + 20, len);
        let addr = upload(&node, &data);
        let hex = hex(&addr);
        let file = |name: &str| dir.join(format!("{len}.{name}"));
        let path = |name: &str| file(name).to_str().unwrap().to_string();
        std::fs::write(file("data"), &data).unwrap();

        let encoding = bao_get(node.http, &addr, 0, None, "");
        std::fs::write(file("bao"), &encoding.body).unwrap();
        let out = bao_cli(&["decode", &hex, &path("bao"), &path("decoded")]);
        assert!(out.status.success(), "bao decode: {out:?}");
        assert_eq!(std::fs::read(file("decoded")).unwrap(), data);

        let outboard = get(node.http, &format!("/o/{addr}?outboard")).unwrap();
        std::fs::write(file("obao"), &outboard.body).unwrap();
        let outboard_arg = format!("--outboard={}", path("obao"));
        let out = bao_cli(&[
            "decode",
            &hex,
            &path("data"),
            &path("from-obao"),
            &outboard_arg,
        ]);
        assert!(out.status.success(), "bao decode --outboard: {out:?}");
        assert_eq!(std::fs::read(file("from-obao")).unwrap(), data);

        if len == 0 {
            continue;
        }
        let (first, last) = (len as u64 / 3, (len as u64 / 3 + 2500).min(len as u64 - 1));
        let slice = bao_get(node.http, &addr, 0, Some((first, last)), "");
        std::fs::write(file("slice"), &slice.body).unwrap();
        let count = (last - first + 1).to_string();
        let start = first.to_string();
        let out = bao_cli(&[
            "decode-slice",
            &hex,
            &start,
            &count,
            &path("slice"),
            &path("sliced"),
        ]);
        assert!(out.status.success(), "bao decode-slice: {out:?}");
        assert_eq!(
            std::fs::read(file("sliced")).unwrap(),
            &data[first as usize..=last as usize]
        );

        let mut bad = slice.body.clone();
        let at = bad.len() / 2;
        bad[at] ^= 1;
        std::fs::write(file("bad-slice"), &bad).unwrap();
        let out = bao_cli(&[
            "decode-slice",
            &hex,
            &start,
            &count,
            &path("bad-slice"),
            &path("bad"),
        ]);
        assert!(
            !out.status.success(),
            "bao decode-slice takes a flipped byte"
        );
    }
}

#[test]
fn ron_get_over_http_checks_a_range_as_it_streams() {
    let dir = temp_dir("bao-ron-get");
    let node = Node::start(&dir.join("data"), &[]);
    let data = bytes(31, 4 * MIB + 3);
    let addr = upload(&node, &data).to_string();
    let http = node.http.to_string();
    let sent_before = metric(node.admin, "ron_bytes_sent_total");
    let got = ron(&[
        "get",
        &addr,
        "--range",
        "3000000-3000999",
        "--server",
        &http,
        "--http",
    ]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(got.stdout == data[3_000_000..=3_000_999]);
    // The slice and its parents, not the object: one 64 KiB leaf under 6 parents.
    let sent = metric(node.admin, "ron_bytes_sent_total") - sent_before;
    assert!(sent < 70 * 1024, "{sent} bytes sent for a 1000-byte range");

    let whole = ron(&["get", &addr, "--server", &http, "--http"]);
    assert!(whole.status.success() && whole.stdout == data);
    let empty = upload(&node, b"").to_string();
    let got = ron(&["get", &empty, "--server", &http, "--http"]);
    assert!(got.status.success() && got.stdout.is_empty(), "{got:?}");
    let past = ron(&[
        "get",
        &addr,
        "--range",
        "5000000-5000001",
        "--server",
        &http,
        "--http",
    ]);
    assert_eq!(past.status.code(), Some(1), "the node's 416: {past:?}");

    // A flipped byte in the leaf: nothing of it is written, exit 4 (verification).
    let proxy = corrupting_proxy(node.http, vec![8 + 6 * 64 + 100, 3]).to_string();
    for _ in 0..2 {
        let bad = ron(&[
            "get",
            &addr,
            "--range",
            "3000000-3000999",
            "--server",
            &proxy,
            "--http",
        ]);
        assert_eq!(
            bad.status.code(),
            Some(4),
            "{}",
            String::from_utf8_lossy(&bad.stderr)
        );
        assert!(
            bad.stdout.is_empty(),
            "no byte of a leaf that failed is written"
        );
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert!(stderr.contains("does not match the tree above"), "{stderr}");
    }
}
