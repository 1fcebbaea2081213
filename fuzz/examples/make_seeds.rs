//! Writes the committed seed inputs under `fuzz/seeds/<target>/`: real OAP/1 frames
//! (from ron-codec's own encoders), real HTTP request heads and chunked bodies, response
//! heads (from the node's head writer, and an origin's), Range values, real zstd frames,
//! verified-stream shapes, and whole client sessions for `front_end`. Deterministic: running it again rewrites the same bytes.
//!
//! ```sh
//! cd fuzz && cargo run --example make_seeds
//! ```

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use ron_codec::frame::{Flags, FrameMeta, APP_HELLO, APP_OBJECTS, HEADER_LEN, MAX_FRAME_BYTES};
use ron_codec::http::response::ResponseHead;
use ron_codec::inflate::{Inflater, INFLATE_RATIO_DEFAULT};
use ron_codec::messages::{
    response_frame, DataHeader, GetStart, HelloReply, HelloRequest, InclusiveRange, ObjectRequest,
};
use ron_codec::proof::{parents_before, GroupRange};
use ron_codec::tree::GroupIndex;
use ron_codec::{Address, ChunkTree, Error, Frame, FrameDecoder};

/// The object the sessions store and read back.
const OBJECT: &[u8] = b"hello, ron! a small object for the fuzz seeds.\n";
/// Token presented by some seeds (the harness runs with open writes: any token goes).
const TOKEN: &[u8] = b"fuzz-token";

struct Seeds {
    dir: PathBuf,
}

impl Seeds {
    fn new(root: &Path, target: &str) -> Seeds {
        let dir = root.join(target);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create seed dir");
        Seeds { dir }
    }

    fn put(&self, name: &str, bytes: &[u8]) {
        fs::write(self.dir.join(name), bytes).expect("write seed");
    }
}

fn addr_text(addr: &Address) -> String {
    String::from_utf8(addr.text().to_vec()).expect("address text is ASCII")
}

fn zstd_with(
    data: &[u8],
    level: i32,
    tune: impl FnOnce(&mut zstd::Encoder<'_, Vec<u8>>),
) -> Vec<u8> {
    let mut enc = zstd::Encoder::new(Vec::new(), level).expect("zstd encoder");
    tune(&mut enc);
    enc.write_all(data).expect("compress");
    enc.finish().expect("finish")
}

fn zstd(data: &[u8], level: i32) -> Vec<u8> {
    zstd_with(data, level, |_| {})
}

// ---- OAP/1 frames --------------------------------------------------------------------

fn meta(flags: Flags, app: u16, corr_id: u64) -> FrameMeta {
    FrameMeta {
        flags,
        code: 0,
        app_proto_id: app,
        tenant_id: 7,
        corr_id,
    }
}

fn hello() -> Bytes {
    HelloRequest {
        ua: Some("ron-fuzz-seed/1".into()),
    }
    .frame(1)
    .to_bytes()
}

fn request(req: &ObjectRequest, corr_id: u64, token: &[u8]) -> Bytes {
    req.frame(corr_id, 7, Bytes::copy_from_slice(token))
        .expect("request frame")
        .to_bytes()
}

/// A DATA frame of an upload (REQ, END on the last).
fn data(corr_id: u64, header: DataHeader, raw: &[u8], end: bool) -> Bytes {
    let flags = if end {
        Flags::REQ | Flags::END
    } else {
        Flags::REQ
    };
    let mut out = BytesMut::new();
    header
        .write_frame_head(
            &mut out,
            meta(flags, APP_OBJECTS, corr_id),
            raw.len(),
            MAX_FRAME_BYTES,
        )
        .expect("data head");
    out.extend_from_slice(raw);
    out.freeze()
}

/// A compressed frame: `payload` zstd-compressed, COMP set.
fn comp(flags: Flags, app: u16, corr_id: u64, cap: &[u8], payload: &[u8]) -> Bytes {
    let m = meta(flags | Flags::COMP, app, corr_id);
    Frame::new(
        m,
        Bytes::copy_from_slice(cap),
        Bytes::from(zstd(payload, 3)),
        MAX_FRAME_BYTES,
    )
    .expect("comp frame")
    .to_bytes()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A verified-stream DATA frame (as a node sends it) with its proof's parents.
fn data_with_parents() -> Bytes {
    let object: Vec<u8> = (0..3 * 65536 + 100)
        .map(|i| (i * 131 % 251) as u8)
        .collect();
    let tree = ChunkTree::of(&object);
    let range = GroupRange {
        first: GroupIndex(1),
        last: GroupIndex(2),
    };
    let mut parents = Vec::new();
    parents_before(&tree, range, GroupIndex(1), &mut parents);
    let header = DataHeader {
        obj: Some(Address::of(&object)),
        offset: 65536,
        total_len: object.len() as u64,
    };
    let raw = &object[65536..65536 + 64]; // cut short: the seed stays small
    let mut out = BytesMut::new();
    header
        .write_frame_head_with_parents(
            &mut out,
            meta(Flags::RESP, APP_OBJECTS, 3),
            &parents,
            raw.len(),
            MAX_FRAME_BYTES,
        )
        .expect("data head with parents");
    out.extend_from_slice(raw);
    out.freeze()
}

/// One OAP/1 session each, as a client writes it.
fn oap_sessions() -> Vec<(&'static str, Vec<u8>)> {
    let addr = Address::of(OBJECT);
    let (half, rest) = OBJECT.split_at(OBJECT.len() / 2);
    let put = ObjectRequest::Put {
        len: OBJECT.len() as u64,
        addr: Some(addr),
        copies: None,
    };
    let get_range = ObjectRequest::Get {
        addr,
        range: Some(InclusiveRange { first: 2, last: 20 }),
        proof: false,
        local: false,
        kept: false,
        node: None,
    };
    let get_proof = ObjectRequest::Get {
        addr,
        range: None,
        proof: true,
        local: false,
        kept: false,
        node: None,
    };
    let stat = ObjectRequest::Stat { addr };
    let dh = |offset: usize| DataHeader {
        obj: Some(addr),
        offset: offset as u64,
        total_len: OBJECT.len() as u64,
    };
    let put_json = format!(r#"{{"op":"put","len":{}}}"#, OBJECT.len());
    let put_json = put_json.as_bytes();
    vec![
        ("hello", hello().to_vec()),
        (
            "put_get_stat",
            cat(&[
                &hello(),
                &request(&put, 2, TOKEN),
                &data(2, dh(0), half, false),
                &data(2, dh(half.len()), rest, true),
                &request(&get_range, 3, b""),
                &request(&get_proof, 4, b""),
                &request(&stat, 5, b""),
            ]),
        ),
        (
            "put_comp_data",
            cat(&[
                &hello(),
                &comp(Flags::REQ | Flags::START, APP_OBJECTS, 2, TOKEN, put_json),
                &comp(
                    Flags::REQ | Flags::END,
                    APP_OBJECTS,
                    2,
                    b"",
                    &DataHeader {
                        obj: None,
                        offset: 0,
                        total_len: OBJECT.len() as u64,
                    }
                    .payload(OBJECT),
                ),
                &request(&stat, 3, b""),
            ]),
        ),
        (
            "get_missing_and_empty_put",
            cat(&[
                &request(
                    &ObjectRequest::Get {
                        addr: Address::of(b"absent"),
                        range: None,
                        proof: false,
                        local: false,
                        kept: false,
                        node: None,
                    },
                    9,
                    b"",
                ),
                &request(
                    &ObjectRequest::Put {
                        len: 0,
                        addr: None,
                        copies: None,
                    },
                    10,
                    b"",
                ),
                &comp(Flags::REQ, APP_HELLO, 11, b"", b"{}"),
            ]),
        ),
    ]
}

fn frame_decoder(root: &Path) {
    let s = Seeds::new(root, "frame_decoder");
    for (name, bytes) in oap_sessions() {
        let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES);
        let mut input = &bytes[..];
        while decoder
            .decode(&mut input)
            .expect("a valid session")
            .is_some()
        {}
        assert!(
            input.is_empty() && decoder.is_idle(),
            "{name}: whole frames"
        );
        s.put(name, &bytes);
    }
    let reply = HelloReply {
        max_frame: MAX_FRAME_BYTES,
        max_inflight: 64,
        flags_supported: 0x5f,
        versions: vec![1],
        transports: vec!["tcp".into(), "tls".into()],
        node_id: None,
        shards: Some(2),
        chunk: Some(65536),
    };
    let start = GetStart {
        obj: Address::of(OBJECT),
        total_len: 1000,
        offset: 0,
        len: 1000,
        chunk: 65536,
    };
    let get_start = response_frame(Flags::START, 206, 3, start.to_payload()).expect("frame");
    s.put(
        "responses",
        &cat(&[
            &reply.frame(1).to_bytes(),
            &get_start.to_bytes(),
            &data_with_parents(),
        ]),
    );
    // A valid header with a bad version, and one with a capability but no START.
    let mut bad = hello().to_vec();
    bad[4..6].copy_from_slice(&2u16.to_be_bytes());
    s.put("bad_version", &bad);
    let mut cap = request(
        &ObjectRequest::Stat {
            addr: Address::of(OBJECT),
        },
        4,
        TOKEN,
    )
    .to_vec();
    cap[6..8].copy_from_slice(&Flags::REQ.bits().to_be_bytes());
    s.put("cap_without_start", &cap);
    assert_eq!(
        HEADER_LEN, 38,
        "the offsets above assume the 38-byte header"
    );
}

// ---- HTTP ----------------------------------------------------------------------------

fn http_requests() -> Vec<(&'static str, Vec<u8>)> {
    let addr = addr_text(&Address::of(OBJECT));
    let body = String::from_utf8(OBJECT.to_vec()).expect("ASCII object");
    let etag = format!("\"{addr}\"");
    vec![
        (
            "put_length",
            format!(
                "PUT /o HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer fuzz-token\r\n\
                 Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                OBJECT.len()
            )
            .into_bytes(),
        ),
        (
            "put_chunked",
            format!(
                "PUT /o/{addr} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\
                 Expect: 100-continue\r\nX-Corr-ID: seed-1\r\n\r\n\
                 10\r\n{}\r\n{:x};ext=1\r\n{}\r\n0\r\nX-Trailer: t\r\n\r\n",
                &body[..16],
                OBJECT.len() - 16,
                &body[16..]
            )
            .into_bytes(),
        ),
        (
            "get_range",
            format!(
                "GET /o/{addr} HTTP/1.1\r\nHost: localhost\r\nRange: bytes=0-4,10-,-3\r\n\
                 If-Range: {etag}\r\n\r\n"
            )
            .into_bytes(),
        ),
        (
            "head_conditional",
            format!(
                "HEAD /o/{addr} HTTP/1.1\r\nHost: localhost\r\nIf-None-Match: W/\"x\", {etag}\r\n\
                 Connection: keep-alive\r\n\r\n"
            )
            .into_bytes(),
        ),
        (
            "post_http10",
            b"POST /o HTTP/1.0\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello"
                .to_vec(),
        ),
        (
            "admin_paths",
            b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer admin\r\n\r\n\
              GET /healthz HTTP/1.1\r\n\r\nGET /readyz HTTP/1.1\r\nConnection: close\r\n\r\n"
                .to_vec(),
        ),
        (
            "bad_address_and_method",
            b"DELETE /o/b3:zz HTTP/1.1\r\nHost: x\r\n\r\nOPTIONS * HTTP/1.1\r\n\r\n".to_vec(),
        ),
    ]
}

fn http_head(root: &Path) {
    let s = Seeds::new(root, "http_head");
    for (name, bytes) in http_requests() {
        s.put(name, &bytes);
    }
}

/// A response as the node's own head writer produces it, then `body`.
fn written(status: u16, fill: impl FnOnce(&mut ResponseHead<'_>), body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    let mut head = ResponseHead::start(&mut out, status);
    fill(&mut head);
    head.finish();
    cat(&[&out[..], body])
}

fn response_head(root: &Path) {
    let s = Seeds::new(root, "response_head");
    let addr = Address::of(OBJECT);
    let len = OBJECT.len() as u64;
    s.put(
        "get_200",
        &written(
            200,
            |h| {
                h.content_length(len)
                    .header("Accept-Ranges", b"bytes")
                    .etag(&addr)
                    .header("X-Corr-ID", b"seed-1");
            },
            OBJECT,
        ),
    );
    s.put(
        "range_206",
        &written(
            206,
            |h| {
                h.content_length(19).content_range(2, 20, len).etag(&addr);
            },
            &OBJECT[2..=20],
        ),
    );
    s.put(
        "unsatisfied_416",
        &written(
            416,
            |h| {
                h.content_range_unsatisfied(len).content_length(0);
            },
            b"",
        ),
    );
    let created = format!(r#"{{"obj":"{}","len":{len}}}"#, addr_text(&addr));
    s.put(
        "continue_then_created",
        &cat(&[
            b"HTTP/1.1 100 Continue\r\n\r\n",
            &written(
                201,
                |h| {
                    h.content_length(created.len() as u64)
                        .header("Location", format!("/o/{}", addr_text(&addr)).as_bytes());
                },
                created.as_bytes(),
            ),
        ]),
    );
    let busy = br#"{"code":"overloaded","message":"busy","retryable":true,"corr_id":"seed-2","retry_after_ms":1000}"#;
    s.put(
        "overloaded_503",
        &written(
            503,
            |h| {
                h.header_u64("Retry-After", 1)
                    .header("Content-Type", b"application/json")
                    .content_length(busy.len() as u64)
                    .header("Connection", b"close");
            },
            busy,
        ),
    );
    s.put(
        "origin_chunked",
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.24.0\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
          Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\
          Connection: keep-alive\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    s.put(
        "http10_until_close",
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello",
    );
}

// ---- Range, chunked ------------------------------------------------------------------

fn range(root: &Path) {
    let s = Seeds::new(root, "range");
    let cases: [(&str, u64, &str); 7] = [
        ("first_500", 10_000, "bytes=0-499"),
        ("suffix", 10_000, "bytes=-500"),
        ("open_end", 10_000, "bytes=9500-"),
        ("multi", 1 << 20, "bytes=0-99, 200-299,,400-"),
        ("empty_object", 0, "bytes=0-0,-1"),
        ("huge", 1 << 40, "BYTES = 1099511627775-"),
        ("past_end", 100, "bytes=100-200"),
    ];
    for (name, len, value) in cases {
        s.put(name, &cat(&[&len.to_le_bytes(), value.as_bytes()]));
    }
}

fn chunked(root: &Path) {
    let s = Seeds::new(root, "chunked");
    s.put("one", b"5\r\nhello\r\n0\r\n\r\n");
    s.put("two_ext", b"3;a=b\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n");
    s.put(
        "trailers",
        b"4\r\nwiki\r\n0\r\nExpires: never\r\nX-A: b\r\n\r\n",
    );
    let mut big = b"100\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 256));
    big.extend_from_slice(b"\r\n0\r\n\r\n");
    s.put("big_chunk", &big);
    s.put("bare_lf", b"5\nhello\n0\n\n");
}

// ---- zstd ----------------------------------------------------------------------------

/// Text that compresses a few times over (under the 10x ratio bound): words drawn by
/// a fixed LCG.
fn prose(len: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "object", "shard", "frame", "range", "group", "verified", "tree", "zstd", "ron", "upload",
        "digest", "parents", "window", "ratio", "bound", "stream",
    ];
    let mut out = Vec::with_capacity(len + 16);
    let mut x: u32 = 12345;
    while out.len() < len {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        out.extend_from_slice(WORDS[(x >> 16) as usize % 16].as_bytes());
        out.push(if x.is_multiple_of(7) { b'\n' } else { b' ' });
        if x.is_multiple_of(5) {
            out.extend_from_slice(&(x % 1000).to_string().into_bytes());
        }
    }
    out.truncate(len);
    out
}

fn inflate(root: &Path) {
    let s = Seeds::new(root, "inflate");
    let text = prose(3000);
    s.put("level1", &zstd(&text, 1));
    s.put("level19", &zstd(&text, 19));
    s.put("level_neg5", &zstd(&text, -5));
    s.put(
        "checksum_contentsize",
        &zstd_with(&text, 3, |e| {
            e.include_checksum(true).expect("checksum");
            e.include_contentsize(true).expect("contentsize");
            e.set_pledged_src_size(Some(text.len() as u64))
                .expect("size");
        }),
    );
    // Window at the decoder's limit (2^23), and one above it (must be refused).
    s.put(
        "window_23_ldm",
        &zstd_with(&text, 5, |e| {
            e.window_log(23).expect("window");
            e.long_distance_matching(true).expect("ldm");
        }),
    );
    s.put(
        "window_27",
        &zstd_with(&text, 5, |e| {
            e.window_log(27).expect("window");
            e.long_distance_matching(true).expect("ldm");
        }),
    );
    // Bomb-like: 1 MiB of zeros in a few dozen bytes (over the ratio bound).
    s.put("bomb_1mib_zeros", &zstd(&vec![0u8; 1 << 20], 19));
    // Two frames back to back, and a skippable frame before a real one.
    s.put(
        "two_frames",
        &cat(&[&zstd(b"first", 3), &zstd(b"second", 3)]),
    );
    let skippable = cat(&[&0x184D_2A50u32.to_le_bytes(), &4u32.to_le_bytes(), b"skip"]);
    s.put(
        "skippable_then_frame",
        &cat(&[&skippable, &zstd(b"after", 3)]),
    );
    s.put("empty_input_frame", &zstd(b"", 3));
    // The seeds reach the inflater's three outcomes.
    let mut inflater = Inflater::new(INFLATE_RATIO_DEFAULT).expect("inflater");
    let mut inflate =
        |name: &str| inflater.inflate(&fs::read(s.dir.join(name)).unwrap(), MAX_FRAME_BYTES);
    assert_eq!(inflate("level19").expect("inflates"), text);
    assert_eq!(inflate("window_23_ldm").expect("inflates"), text);
    assert!(matches!(
        inflate("window_27"),
        Err(Error::InflateCorrupt { .. })
    ));
    assert!(matches!(
        inflate("bomb_1mib_zeros"),
        Err(Error::InflateTooLarge { .. })
    ));
}

// ---- verified stream -----------------------------------------------------------------

fn verified_stream(root: &Path) {
    let s = Seeds::new(root, "verified_stream");
    // [shape, a, b, ops...]; ops >= 160 leave a group untouched.
    s.put("three_groups_clean", &[3, 10, 200, 255, 255, 255, 255]);
    s.put("one_partial_group", &[0, 77, 3, 200]);
    s.put("flip_parent", &[8, 1, 7, 255, 5, 0x40, 255]);
    s.put("flip_data", &[5, 2, 4, 255, 100, 0x01, 255]);
    s.put("cut_parents_and_data", &[6, 0, 5, 130, 150, 255]);
    s.put("last_short_group", &[8, 250, 250, 255, 255]);
}

// ---- front_end -----------------------------------------------------------------------

/// First byte: bit 0 selects the protocol (0 HTTP, 1 OAP/1); bits 1..7 the size of the
/// pieces the stream is read in (0: as one piece).
fn front_end(root: &Path) {
    let s = Seeds::new(root, "front_end");
    let http = http_requests();
    let find = |name: &str| http.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    let session = cat(&[
        &find("put_length"),
        &find("get_range"),
        &find("head_conditional"),
        &find("put_chunked"),
    ]);
    s.put("http_session", &cat(&[&[0u8], &session]));
    s.put("http_session_pieces7", &cat(&[&[7u8 << 1], &session]));
    s.put("http_post10", &cat(&[&[0u8], &find("post_http10")]));
    s.put(
        "http_paths",
        &cat(&[
            &[0u8],
            &find("admin_paths"),
            &find("bad_address_and_method"),
        ]),
    );
    for (name, bytes) in oap_sessions() {
        s.put(&format!("oap_{name}"), &cat(&[&[1u8], &bytes]));
    }
    let (_, put_get) = oap_sessions().swap_remove(1);
    s.put(
        "oap_put_get_stat_pieces13",
        &cat(&[&[1u8 | 13 << 1], &put_get]),
    );
    s.put("h2_put_then_probe", &cat(&[&[0u8], &h2_session()]));
}

/// HTTP/2 with prior knowledge: the preface, empty SETTINGS, a PUT of "hello" on stream
/// 1 (HEADERS, then DATA with END_STREAM), a GET of the `bafkqaaa` probe on stream 3.
/// HPACK without Huffman: static `:method GET`, `:scheme https`; literal `:method PUT`,
/// `:path`, `:authority`, `content-length`.
fn h2_session() -> Vec<u8> {
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let len = (payload.len() as u32).to_be_bytes();
        cat(&[&len[1..], &[kind, flags], &stream.to_be_bytes(), payload])
    };
    let literal = |index: u8, value: &[u8]| cat(&[&[index, value.len() as u8], value]);
    let put = cat(&[
        &literal(2, b"PUT"),
        &[0x87],
        &literal(4, b"/o"),
        &literal(1, b"t"),
        &[0x0f, 0x0d, 1, b'5'],
    ]);
    let get = cat(&[
        &[0x82, 0x87],
        &literal(4, b"/ipfs/bafkqaaa?format=raw"),
        &literal(1, b"t"),
    ]);
    cat(&[
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        &frame(4, 0, 0, &[]),
        &frame(1, 4, 1, &put),
        &frame(0, 1, 1, b"hello"),
        &frame(1, 5, 3, &get),
    ])
}

fn bundle_manifest(root: &Path) {
    use ron_codec::bundle::{media_type_of, Encoding, Entry, Manifest, Piece};
    use std::collections::BTreeMap;
    let s = Seeds::new(root, "bundle_manifest");
    let entry = |path: &str, variants: &[Encoding]| Entry {
        path: path.into(),
        hash: Address::of(path.as_bytes()),
        len: path.len() as u64,
        media_type: media_type_of(path).into(),
        variants: variants
            .iter()
            .map(|e| {
                let piece = Piece {
                    hash: Address::of(e.token().as_bytes()),
                    len: 1,
                };
                (*e, piece)
            })
            .collect(),
    };
    let meta = BTreeMap::from([("tld".to_string(), "site".to_string())]);
    let site = Manifest::new(
        vec![
            entry("index.html", &[Encoding::Br, Encoding::Zstd]),
            entry("css/site.css", &[Encoding::Gzip]),
            entry("a-b/c.js", &[]),
        ],
        meta,
    )
    .unwrap();
    s.put("site", &site.encode());
    let one = Manifest::new(vec![entry("f", &[])], BTreeMap::new()).unwrap();
    s.put("one_entry", &one.encode());
    // Near misses: a file that is also a directory, a dotted segment.
    let text = String::from_utf8(site.encode()).unwrap();
    s.put(
        "file_and_dir",
        text.replace("a-b/c.js", "index.html/c.js").as_bytes(),
    );
    s.put(
        "dot_dot",
        text.replace("css/site.css", "css/../x").as_bytes(),
    );
}

/// The DHT's messages from its own encoders, each after the byte that picks its decoder
/// (0 provide request, 1 provide response, 2 replicate request, 3 replicate response).
fn dht_messages(root: &Path) {
    use ron_dht::node::record_key;
    use ron_dht::protocol::{self, Ports, ProvideRequest, ProvideResponse};
    use ron_dht::replicate::{self, ReplicateRequest, ReplicateResponse};
    use ron_link::dht::CopyOutcome;
    let s = Seeds::new(root, "dht_messages");
    let ports = Ports {
        p2p: 4001,
        oap: 4002,
    };
    let addrs: Vec<[u8; 32]> = (0..3u8).map(|i| *Address::of(&[i]).as_bytes()).collect();
    let greeting = ProvideRequest {
        ports,
        zone: "eu-west".into(),
        keys: Vec::new(),
    };
    let batch = ProvideRequest {
        keys: addrs.iter().map(record_key).collect(),
        ..greeting.clone()
    };
    let answered = ProvideResponse {
        ports,
        zone: String::new(),
        stored: 3,
    };
    let ask = ReplicateRequest {
        oap_port: 4002,
        addrs: addrs.clone(),
    };
    let outcomes = ReplicateResponse {
        outcomes: vec![CopyOutcome::Held, CopyOutcome::Busy, CopyOutcome::Pending],
    };
    let with = |which: u8, message: Vec<u8>| cat(&[&[which], &message]);
    s.put(
        "greeting",
        &with(0, protocol::encode_request(&greeting).unwrap()),
    );
    s.put(
        "provide_batch",
        &with(0, protocol::encode_request(&batch).unwrap()),
    );
    s.put(
        "provide_response",
        &with(1, protocol::encode_response(&answered).unwrap()),
    );
    s.put(
        "replicate_request",
        &with(2, replicate::encode_request(&ask).unwrap()),
    );
    s.put(
        "replicate_response",
        &with(3, replicate::encode_response(&outcomes).unwrap()),
    );
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds");
    dht_messages(&root);
    bundle_manifest(&root);
    frame_decoder(&root);
    http_head(&root);
    response_head(&root);
    range(&root);
    chunked(&root);
    inflate(&root);
    verified_stream(&root);
    front_end(&root);
    println!("seeds written under {}", root.display());
}
