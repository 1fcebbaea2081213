//! The trustless gateway (`/ipfs/<cid>`, issue 55) against the real binary: a ron object
//! fetched as the raw block of its CID (CIDv1, raw codec, BLAKE3-256 multihash) in the
//! multibases a client may send, with the headers the IPFS Trustless Gateway
//! specification asks for; the `bafkqaaa` probe; conditionals and ranges; and the clear
//! refusals (other codecs and hashes, no format asked, CAR asked, a block over 2 MiB).
//! The CIDs here are written by the test itself (`data-encoding`, and base58 by hand),
//! not by the node's own encoder.
//!
//! The last test hands the CIDs to an IPFS client we did not write
//! (`@helia/verified-fetch`, `interop/ipfs`), which fetches and verifies each block
//! against its CID — and refuses a gateway that answers with other bytes.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::*;
use ron_codec::Address;

const RAW: &str = "Accept: application/vnd.ipld.raw\r\n";

/// The CIDv1 bytes of `addr`: version 1, raw codec, BLAKE3 multihash of 32 bytes.
fn cid_bytes(addr: &Address, codec: u8, hash: u8) -> Vec<u8> {
    let mut cid = vec![1, codec, hash, 32];
    cid.extend_from_slice(addr.as_bytes());
    cid
}

fn base32(bytes: &[u8]) -> String {
    format!(
        "b{}",
        data_encoding::BASE32_NOPAD.encode(bytes).to_lowercase()
    )
}

fn cid_of(addr: &Address) -> String {
    base32(&cid_bytes(addr, 0x55, 0x1e))
}

fn base58btc(bytes: &[u8]) -> String {
    let alphabet = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    let mut digits: Vec<u32> = Vec::new();
    for &byte in bytes {
        let mut carry = u32::from(byte);
        for d in digits.iter_mut() {
            carry += *d << 8;
            *d = carry % 58;
            carry /= 58;
        }
        while carry > 0 {
            digits.push(carry % 58);
            carry /= 58;
        }
    }
    let mut text = "z".to_string() + &"1".repeat(zeros);
    text.extend(digits.iter().rev().map(|&d| alphabet[d as usize] as char));
    text
}

fn blocks_node(name: &str) -> Node {
    Node::start(&temp_dir(name), &["--shards", "1"])
}

#[test]
fn an_object_is_the_raw_block_of_its_cid_in_every_multibase() {
    let n = blocks_node("ipfs-raw");
    let data = bytes(55, 200_000);
    let addr = upload(&n, &data);
    let cid = cid_of(&addr);
    assert!(cid.starts_with("bafkr4i"), "{cid}");

    let r = get_with(n.http, &format!("/ipfs/{cid}"), RAW);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, data);
    assert_eq!(Address::of(&r.body), addr);
    for (name, want) in [
        ("Content-Type", "application/vnd.ipld.raw".to_string()),
        ("Content-Length", data.len().to_string()),
        ("ETag", format!("\"{cid}.raw\"")),
        (
            "Cache-Control",
            "public, max-age=29030400, immutable".into(),
        ),
        ("X-Content-Type-Options", "nosniff".into()),
        (
            "Content-Disposition",
            format!("attachment; filename=\"{cid}.bin\""),
        ),
        ("Vary", "Accept".into()),
        ("X-Ipfs-Path", format!("/ipfs/{cid}")),
        ("X-Ipfs-Roots", cid.clone()),
    ] {
        assert_eq!(r.header(name), Some(want.as_str()), "{name}: {r:?}");
    }

    // The same block by `?format=raw` and in other multibases: the ETag names the
    // canonical CID, so caches see one representation.
    let bytes = cid_bytes(&addr, 0x55, 0x1e);
    let forms = [
        format!("{cid}?format=raw"),
        format!("B{}?format=raw", data_encoding::BASE32_NOPAD.encode(&bytes)),
        format!("f{}", data_encoding::HEXLOWER.encode(&bytes)),
        base58btc(&bytes),
        format!("u{}", data_encoding::BASE64URL_NOPAD.encode(&bytes)),
    ];
    for form in &forms {
        let headers = if form.contains("format=raw") { "" } else { RAW };
        let r = get_with(n.http, &format!("/ipfs/{form}"), headers);
        assert_eq!(r.status, 200, "{form}: {r:?}");
        assert_eq!(r.body, data, "{form}");
        assert_eq!(r.header("ETag"), Some(format!("\"{cid}.raw\"").as_str()));
    }

    // HEAD, a conditional GET, a range.
    let head = request(
        n.http,
        format!(
            "HEAD /ipfs/{cid}?format=raw HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Length"), Some("200000"));
    assert!(head.body.is_empty());
    let etag = format!("\"{cid}.raw\"");
    let r = get_with(
        n.http,
        &format!("/ipfs/{cid}"),
        &format!("{RAW}If-None-Match: {etag}\r\n"),
    );
    assert_eq!(r.status, 304, "{r:?}");
    assert_eq!(r.header("ETag"), Some(etag.as_str()));
    let r = get_with(
        n.http,
        &format!("/ipfs/{cid}"),
        &format!("{RAW}Range: bytes=70000-70099\r\n"),
    );
    assert_eq!(r.status, 206, "{r:?}");
    assert_eq!(r.body, data[70_000..70_100]);
    assert_eq!(r.header("Content-Range"), Some("bytes 70000-70099/200000"));
}

#[test]
fn the_probe_and_the_refusals_say_what_is_served() {
    let n = blocks_node("ipfs-refusals");
    // The probe: the empty identity CID, 200 with no bytes (GET and HEAD).
    for method in ["GET", "HEAD"] {
        let raw = format!(
            "{method} /ipfs/bafkqaaa?format=raw HTTP/1.1\r\nHost: localhost\r\n{RAW}Connection: close\r\n\r\n"
        );
        let r = request(n.http, raw.as_bytes()).unwrap();
        assert_eq!(r.status, 200, "{method}: {r:?}");
        assert_eq!(r.header("Content-Length"), Some("0"));
        assert_eq!(r.header("Content-Type"), Some("application/vnd.ipld.raw"));
        assert!(r.body.is_empty());
    }
    // An identity CID carries its bytes.
    let inline = base32(&[1, 0x55, 0x00, 5, b'h', b'e', b'l', b'l', b'o']);
    let r = get_with(n.http, &format!("/ipfs/{inline}"), RAW);
    assert_eq!((r.status, &r.body[..]), (200, &b"hello"[..]), "{r:?}");
    // Its ETag is checked as an object block's is: If-Match naming another is 412
    // (RFC 9110 §13.1.1), naming its own is the block.
    let etag = r.header("ETag").unwrap().to_string();
    let other = get_with(
        n.http,
        &format!("/ipfs/{inline}"),
        &format!("{RAW}If-Match: \"other\"\r\n"),
    );
    assert_eq!(other.status, 412, "{other:?}");
    assert_eq!(other.json()["code"], "precondition_failed");
    let own = get_with(
        n.http,
        &format!("/ipfs/{inline}"),
        &format!("{RAW}If-Match: {etag}\r\n"),
    );
    assert_eq!((own.status, &own.body[..]), (200, &b"hello"[..]), "{own:?}");

    let absent = Address::of(b"never stored");
    let stored = upload(&n, &bytes(3, 1000));
    let refused = |path: &str, headers: &str, status: u16, code: &str, says: &str| {
        let r = get_with(n.http, path, headers);
        assert_eq!(r.status, status, "{path}: {r:?}");
        let json = r.json();
        assert_eq!(json["code"], code, "{path}: {json}");
        let message = json["message"].as_str().unwrap();
        assert!(message.contains(says), "{path}: {message:?} lacks {says:?}");
        assert_eq!(r.header("Cache-Control"), Some("no-store"), "{path}");
    };
    refused(
        &format!("/ipfs/{}", cid_of(&absent)),
        RAW,
        404,
        "not_found",
        "",
    );
    refused(
        &format!("/ipfs/{}", cid_of(&stored)),
        "",
        400,
        "bad_request",
        "send ?format=raw or Accept: application/vnd.ipld.raw",
    );
    refused(
        &format!("/ipfs/{}", cid_of(&stored)),
        "Accept: application/vnd.ipld.car\r\n",
        406,
        "not_acceptable",
        "Accept: application/vnd.ipld.car is not served here",
    );
    refused(
        &format!("/ipfs/{}?format=car", cid_of(&stored)),
        "",
        406,
        "not_acceptable",
        "format=car is not served here",
    );
    // Other hashes and codecs are named in the refusal.
    let sha256 = base32(&cid_bytes(&stored, 0x55, 0x12));
    refused(
        &format!("/ipfs/{sha256}"),
        RAW,
        400,
        "bad_addr",
        "its multihash is sha2-256 (0x12) of 32 bytes",
    );
    let dag_pb = base32(&cid_bytes(&stored, 0x70, 0x1e));
    refused(
        &format!("/ipfs/{dag_pb}"),
        RAW,
        400,
        "bad_addr",
        "its codec is dag-pb (0x70)",
    );
    refused(
        "/ipfs/not-a-cid",
        RAW,
        400,
        "bad_addr",
        "is not a CID this gateway reads",
    );
    refused(
        &format!("/ipfs/{}/index.html", cid_of(&stored)),
        RAW,
        400,
        "bad_addr",
        "a raw block has no paths",
    );
    // A block IPFS clients would not accept points to /o/ and bao.
    let big = upload(&n, &bytes(4, 3 << 20));
    refused(
        &format!("/ipfs/{}", cid_of(&big)),
        RAW,
        406,
        "not_acceptable",
        &format!("over the 2 MiB (2097152 bytes) IPFS clients accept as one block: fetch it from /o/{big}"),
    );
    let r = request(
        n.http,
        format!(
            "DELETE /ipfs/{} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            cid_of(&stored)
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!((r.status, r.header("Allow")), (405, Some("GET, HEAD")));
}

/// The bytes a lying gateway answers every request with, as a raw block.
const LIAR_BYTES: &[u8] = b"these are not the bytes you are looking for";

/// A gateway that answers every request with [`LIAR_BYTES`]: right for their own CID
/// only.
fn lying_gateway() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        // Bounded: the client asks a handful of times at most.
        for _ in 0..8 {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = [0u8; 4096];
            let _ = s.read(&mut head);
            if head.starts_with(b"QUIT") {
                return;
            }
            let body = LIAR_BYTES;
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.ipld.raw\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(body);
        }
    });
    (addr, handle)
}

#[test]
#[ignore = "needs npm and the package registry (installs @helia/verified-fetch and Node.js 22): run by scripts/test-all.sh"]
fn helia_verified_fetch_gets_and_verifies_blocks_by_cid() {
    let n = blocks_node("ipfs-helia");
    let objects: Vec<(Vec<u8>, Address)> = [0usize, 1, 65_536, 1_000_003, 2 << 20]
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let data = bytes(100 + i as u64, len);
            let addr = upload(&n, &data);
            (data, addr)
        })
        .collect();
    let cids: Vec<String> = objects.iter().map(|(_, a)| cid_of(a)).collect();
    let gateway = format!("http://{}", n.http);
    let fetched = common::js::run_ipfs_client(&gateway, &cids);
    for ((data, addr), cid) in objects.iter().zip(&cids) {
        let line = fetched
            .iter()
            .find(|l| l["cid"] == cid.as_str())
            .unwrap_or_else(|| panic!("no answer for {cid}: {fetched:?}"));
        assert_eq!(line["step"], "fetched", "{cid}: {line}");
        assert_eq!(line["status"], 200, "{cid}: {line}");
        assert_eq!(line["bytes"], data.len(), "{cid}: {line}");
        assert_eq!(line["blake3"], addr.to_string()[3..], "{cid}: {line}");
    }

    // The same client against a gateway that answers every CID with the same bytes: it
    // takes them for their own CID and refuses them for any other.
    let (liar, handle) = lying_gateway();
    let own = cid_of(&Address::of(LIAR_BYTES));
    let asked = [own.clone(), cids[2].clone()];
    let fetched = common::js::run_ipfs_client(&format!("http://{liar}"), &asked);
    assert_eq!(fetched[0]["step"], "fetched", "{fetched:?}");
    assert_eq!(fetched[0]["bytes"], LIAR_BYTES.len());
    assert_eq!(
        fetched[1]["step"], "failed",
        "a lying gateway's bytes were accepted: {fetched:?}"
    );
    let _ = std::net::TcpStream::connect(liar).and_then(|mut s| s.write_all(b"QUIT"));
    let _ = handle.join();
}
