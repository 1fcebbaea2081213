//! Golden OAP/1 frames: the bytes in `tests/vectors/*.hex` are the contract. Each test
//! builds the frame with the codec and compares it byte for byte with the file, then
//! decodes the file and checks every field. `BLESS_VECTORS=1` rewrites the files (only when
//! the wire format is meant to change; review the diff by hand).

use std::path::PathBuf;

use bytes::Bytes;
use ron_codec::error::{Envelope, ErrorCode};
use ron_codec::frame::{Flags, Frame, FrameDecoder, MAX_FRAME_BYTES};
use ron_codec::messages::{
    response_frame, DataHeader, GetEnd, GetStart, HelloReply, HelloRequest, ObjectRequest,
    DATA_CHUNK_BYTES,
};
use ron_codec::Address;

fn vector_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(format!("{name}.hex"))
}

fn to_hex_lines(bytes: &[u8]) -> String {
    bytes
        .chunks(32)
        .map(|line| line.iter().map(|b| format!("{b:02x}")).collect::<String>() + "\n")
        .collect()
}

fn from_hex_file(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.bytes().filter(|b| !b.is_ascii_whitespace()))
        .collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// Compares `frame` with the named vector and returns the frame decoded from the file.
fn check(name: &str, description: &str, frame: &Frame) -> Frame {
    let wire = frame.to_bytes();
    let path = vector_path(name);
    if std::env::var_os("BLESS_VECTORS").is_some() {
        let text = format!(
            "# {description}\n# {} bytes\n{}",
            wire.len(),
            to_hex_lines(&wire)
        );
        std::fs::write(&path, text).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let golden = from_hex_file(&text);
    assert_eq!(
        to_hex_lines(&wire),
        to_hex_lines(&golden),
        "{name}: encoder drifted"
    );
    let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES);
    let mut input = &golden[..];
    let decoded = decoder
        .decode(&mut input)
        .unwrap()
        .expect("one whole frame");
    assert!(input.is_empty(), "{name}: trailing bytes");
    assert_eq!(&decoded, frame, "{name}: decoder disagrees");
    decoded
}

fn abc() -> Address {
    Address::of(b"abc")
}

#[test]
fn hello_request() {
    let hello = HelloRequest {
        ua: Some("ron/0.1".into()),
    };
    let f = check(
        "hello",
        "HELLO: REQ, app_proto_id 0, corr_id 1",
        &hello.frame(1),
    );
    assert_eq!(f.header.flags, Flags::REQ);
    assert_eq!(f.header.app_proto_id, 0);
    assert_eq!(HelloRequest::parse(&f.payload).unwrap(), hello);
}

#[test]
fn hello_reply() {
    let reply = HelloReply {
        max_frame: MAX_FRAME_BYTES,
        max_inflight: 64,
        flags_supported: (Flags::REQ | Flags::RESP | Flags::START | Flags::END | Flags::COMP)
            .bits(),
        versions: vec![1],
        transports: vec!["tcp".into(), "tls".into()],
        node_id: None,
        shards: Some(2),
        chunk: Some(DATA_CHUNK_BYTES),
    };
    let f = check(
        "hello_reply",
        "HELLO reply: RESP, code 200, corr_id 1",
        &reply.frame(1),
    );
    assert_eq!(f.header.code, 200);
    assert_eq!(HelloReply::parse(&f.payload).unwrap(), reply);
}

#[test]
fn get_request() {
    let get = ObjectRequest::Get {
        addr: abc(),
        range: None,
        proof: false,
        local: false,
        kept: false,
        node: None,
    };
    let f = check(
        "get",
        "GET b3:(blake3 of \"abc\"): REQ|START|END, app_proto_id 1, tenant 0, corr_id 2",
        &get.frame(2, 0, Bytes::new()).unwrap(),
    );
    assert_eq!(f.header.flags, Flags::REQ | Flags::START | Flags::END);
    assert_eq!(ObjectRequest::parse(&f.payload).unwrap(), get);
}

#[test]
fn put_start_with_token() {
    let put = ObjectRequest::Put {
        len: 3,
        addr: Some(abc()),
        copies: None,
    };
    let f = check(
        "put_start",
        "PUT of 3 bytes announcing its address: REQ|START, tenant 42, capability \"tok\", corr_id 5",
        &put.frame(5, 42, Bytes::from_static(b"tok")).unwrap(),
    );
    assert_eq!(f.header.cap_len, 3);
    assert_eq!(&f.cap[..], b"tok");
    assert_eq!(f.header.tenant_id, 42);
}

#[test]
fn get_response_start() {
    let start = GetStart {
        obj: abc(),
        total_len: 3,
        offset: 0,
        len: 3,
        chunk: DATA_CHUNK_BYTES,
    };
    let frame = response_frame(Flags::START, 200, 2, start.to_payload()).unwrap();
    let f = check(
        "get_start",
        "GET response start: RESP|START, code 200, corr_id 2",
        &frame,
    );
    assert_eq!(GetStart::parse(&f.payload).unwrap(), start);
}

#[test]
fn data() {
    let header = DataHeader {
        obj: Some(abc()),
        offset: 0,
        total_len: 3,
    };
    let frame = response_frame(Flags::NONE, 0, 2, header.payload(b"abc")).unwrap();
    let f = check(
        "data",
        "DATA: RESP, corr_id 2, bytes \"abc\" at offset 0",
        &frame,
    );
    let (got, raw) = DataHeader::split(&f.payload).unwrap();
    assert_eq!(got, header);
    assert_eq!(&raw[..], b"abc");
}

#[test]
fn end() {
    let end = GetEnd {
        status: "ok".into(),
        len: 3,
    };
    let frame = response_frame(Flags::END, 200, 2, end.to_payload()).unwrap();
    let f = check("end", "GET end: RESP|END, code 200, corr_id 2", &frame);
    assert_eq!(GetEnd::parse(&f.payload).unwrap(), end);
}

#[test]
fn error() {
    let message = format!("no object {} on this node", abc());
    let envelope = Envelope {
        code: ErrorCode::NotFound,
        message: &message,
        corr_id: "3",
        retry_after_ms: None,
    };
    let mut json = Vec::new();
    envelope.write_json(&mut json);
    let frame = response_frame(Flags::END, 404, 3, Bytes::from(json)).unwrap();
    let f = check(
        "error",
        "error: RESP|END, code 404 not_found, corr_id 3",
        &frame,
    );
    let parsed: serde_json::Value = serde_json::from_slice(&f.payload).unwrap();
    assert_eq!(parsed["code"], "not_found");
    assert_eq!(parsed["retryable"], false);
    assert_eq!(parsed["corr_id"], "3");
}
