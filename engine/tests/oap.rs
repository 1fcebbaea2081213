//! OAP/1 against the real binary over real sockets: the codec's golden vectors replayed
//! byte for byte, fair interleaving, partial frames, every rejection path, the
//! compression bomb, large objects, dropped uploads, verification failures.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use ron_codec::frame::{Flags, Frame, FrameDecoder, FrameMeta, APP_HELLO, APP_OBJECTS, HEADER_LEN};
use ron_codec::messages::{DataHeader, GetStart, ObjectInfo, ObjectRequest};

fn node(name: &str, extra: &[&str]) -> Node {
    Node::start(&temp_dir(name), extra)
}

/// A raw OAP/1 connection: frames in, frames out, no client-side cleverness.
struct Wire {
    stream: TcpStream,
    decoder: FrameDecoder,
    buf: Vec<u8>,
    pos: usize,
}

impl Wire {
    fn open(addr: SocketAddr) -> Wire {
        Wire::from_stream(connect(addr))
    }

    fn from_stream(stream: TcpStream) -> Wire {
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Wire {
            stream,
            decoder: FrameDecoder::new(1 << 20),
            buf: Vec::new(),
            pos: 0,
        }
    }

    fn send(&mut self, frame: &Frame) {
        self.send_raw(&frame.to_bytes());
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next frame, or `None` at end of stream.
    fn recv(&mut self) -> Option<Frame> {
        loop {
            let mut input = &self.buf[self.pos..];
            let before = input.len();
            let frame = self
                .decoder
                .decode(&mut input)
                .expect("node sends valid frames");
            self.pos += before - input.len();
            if frame.is_some() {
                return frame;
            }
            let mut chunk = vec![0u8; 128 * 1024];
            let n = self.stream.read(&mut chunk).expect("read within 20 s");
            if n == 0 {
                return None;
            }
            self.buf.drain(..self.pos);
            self.pos = 0;
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads the one answer to a protocol error and checks the node then closes.
    fn expect_rejection(&mut self, status: u16, code: &str) -> serde_json::Value {
        self.expect_rejection_on(APP_OBJECTS, status, code)
    }

    /// [`Wire::expect_rejection`], the answer on plane `app_proto_id` (the offending
    /// frame's).
    fn expect_rejection_on(
        &mut self,
        app_proto_id: u16,
        status: u16,
        code: &str,
    ) -> serde_json::Value {
        let frame = self.recv().expect("an answer before the close");
        assert_eq!(frame.header.code, status, "{:?}", frame.payload);
        assert_eq!(
            frame.header.app_proto_id, app_proto_id,
            "the answer's plane"
        );
        assert!(frame.header.flags.contains(Flags::RESP | Flags::END));
        let envelope: serde_json::Value = serde_json::from_slice(&frame.payload).unwrap();
        assert_eq!(envelope["code"], code, "{envelope}");
        assert!(
            self.recv().is_none(),
            "the connection closes after the answer"
        );
        envelope
    }
}

fn request(req: &ObjectRequest, corr_id: u64) -> Frame {
    req.frame(corr_id, 0, Bytes::new()).unwrap()
}

fn get_req(addr: Address, corr_id: u64) -> Frame {
    request(
        &ObjectRequest::Get {
            addr,
            range: None,
            proof: false,
            local: false,
            kept: false,
            node: None,
        },
        corr_id,
    )
}

fn data_frame(corr_id: u64, offset: u64, total_len: u64, raw: &[u8], end: bool) -> Frame {
    let header = DataHeader {
        obj: None,
        offset,
        total_len,
    };
    let flags = if end {
        Flags::REQ | Flags::END
    } else {
        Flags::REQ
    };
    object_frame(flags, corr_id, &header.payload(raw))
}

/// PUTs `data` on an open wire as `corr_id`, in DATA frames of `step` bytes.
fn put_on(
    w: &mut Wire,
    corr_id: u64,
    data: &[u8],
    announce: Option<Address>,
    step: usize,
) -> Frame {
    let len = data.len() as u64;
    w.send(&request(
        &ObjectRequest::Put {
            len,
            addr: announce,
            copies: None,
        },
        corr_id,
    ));
    let mut offset = 0;
    while offset < data.len() {
        let end = (offset + step).min(data.len());
        w.send(&data_frame(
            corr_id,
            offset as u64,
            len,
            &data[offset..end],
            end == data.len(),
        ));
        offset = end;
    }
    w.recv().expect("PUT answer")
}

/// GET of `addr` on an open wire: (status of START or error, body bytes, END code).
fn get_on(w: &mut Wire, req: Frame) -> (u16, Vec<u8>, u16) {
    let corr_id = req.header.corr_id;
    w.send(&req);
    let start = w.recv().unwrap();
    assert_eq!(start.header.corr_id, corr_id);
    if start.header.flags.contains(Flags::END) {
        return (start.header.code, Vec::new(), start.header.code);
    }
    let mut body = Vec::new();
    loop {
        let f = w.recv().unwrap();
        assert_eq!(f.header.corr_id, corr_id);
        if f.header.flags.contains(Flags::END) {
            return (start.header.code, body, f.header.code);
        }
        let (_, raw) = DataHeader::split(&f.payload).unwrap();
        body.extend_from_slice(&raw);
    }
}

fn vector(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../codec/tests/vectors")
        .join(format!("{name}.hex"));
    let text = std::fs::read_to_string(path).unwrap();
    let hex: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.chars())
        .collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn golden_vectors_replay_byte_for_byte_against_the_live_node() {
    // The HELLO reply vector describes a 2-shard node with TLS and max_inflight 64.
    let t = tls_node(
        "vectors",
        &[
            "--shards",
            "2",
            "--oap-max-inflight",
            "64",
            "--token",
            "tok",
        ],
    );
    let n = &t.node;
    let mut w = Wire::open(n.oap);
    let exchange = |w: &mut Wire, sent: &[u8], expected: &[&str]| {
        w.send_raw(sent);
        for name in expected {
            let got = w.recv().unwrap().to_bytes();
            assert_eq!(&got[..], &vector(name)[..], "{name}");
        }
    };
    exchange(&mut w, &vector("hello"), &["hello_reply"]);
    let abc = Address::of(b"abc");
    exchange(&mut w, &get_req(abc, 3).to_bytes(), &["error"]);
    w.send_raw(&vector("put_start"));
    let data = object_frame(
        Flags::REQ | Flags::END,
        5,
        &DataHeader {
            obj: Some(abc),
            offset: 0,
            total_len: 3,
        }
        .payload(b"abc"),
    );
    w.send(&data);
    let put = w.recv().unwrap();
    assert_eq!((put.header.code, put.header.corr_id), (201, 5));
    assert_eq!(ObjectInfo::parse(&put.payload).unwrap().obj, abc);
    exchange(&mut w, &vector("get"), &["get_start", "data", "end"]);
}

#[test]
fn put_get_stat_ranges_and_per_request_errors_keep_the_connection() {
    let n = node("oap-basic", &["--shards", "2"]);
    let mut w = Wire::open(n.oap);
    let data = bytes(1, 200_000);
    let addr = Address::of(&data);
    let put = put_on(&mut w, 1, &data, Some(addr), 70_000);
    assert_eq!(put.header.code, 201);
    assert_eq!(put_on(&mut w, 2, &data, None, 1 << 16).header.code, 200);
    let (status, body, end) = get_on(&mut w, get_req(addr, 3));
    assert_eq!((status, end), (200, 200));
    assert!(body == data);
    let ranged = ObjectRequest::Get {
        addr,
        range: Some(ron_codec::messages::InclusiveRange {
            first: 65_000,
            last: 140_000,
        }),
        proof: false,
        local: false,
        kept: false,
        node: None,
    };
    let (status, body, end) = get_on(&mut w, request(&ranged, 4));
    assert_eq!((status, end), (206, 206));
    assert!(body == data[65_000..=140_000]);
    w.send(&request(&ObjectRequest::Stat { addr }, 5));
    let stat = w.recv().unwrap();
    assert_eq!(ObjectInfo::parse(&stat.payload).unwrap().len, 200_000);

    // Per-request errors: answered on their corr_id; the connection goes on.
    let cases: [(&[u8], u16, &str); 3] = [
        (br#"{"op":"delete"}"#, 400, "bad_request"),
        (br#"{"op":"stat","addr":"b3:XYZ"}"#, 400, "bad_addr"),
        (br#"{"op":"get","addr":"x","extra":1}"#, 400, "bad_request"),
    ];
    for (i, (payload, status, code)) in cases.iter().enumerate() {
        let corr_id = 10 + i as u64;
        w.send(&object_frame(
            Flags::REQ | Flags::START | Flags::END,
            corr_id,
            payload,
        ));
        let f = w.recv().unwrap();
        assert_eq!((f.header.code, f.header.corr_id), (*status, corr_id));
        let env: serde_json::Value = serde_json::from_slice(&f.payload).unwrap();
        assert_eq!(env["code"], *code);
        assert_eq!(env["corr_id"], corr_id.to_string());
    }
    let past = ObjectRequest::Get {
        addr,
        range: Some(ron_codec::messages::InclusiveRange {
            first: 200_000,
            last: 200_001,
        }),
        proof: false,
        local: false,
        kept: false,
        node: None,
    };
    assert_eq!(get_on(&mut w, request(&past, 20)).0, 416);
    let missing = Address::of(b"missing");
    w.send(&request(&ObjectRequest::Stat { addr: missing }, 21));
    assert_eq!(w.recv().unwrap().header.code, 404);
    // A wrong announced address: 400 bad_digest, nothing stored.
    let other = bytes(2, 1000);
    let wrong = put_on(&mut w, 22, &other, Some(missing), 4096);
    assert_eq!(wrong.header.code, 400);
    let env: serde_json::Value = serde_json::from_slice(&wrong.payload).unwrap();
    assert_eq!(env["code"], "bad_digest");
    w.send(&request(
        &ObjectRequest::Stat {
            addr: Address::of(&other),
        },
        23,
    ));
    assert_eq!(w.recv().unwrap().header.code, 404, "nothing stored");
    // The empty object: END on the START frame.
    let empty = put_on(&mut w, 24, b"", None, 1);
    assert_eq!(empty.header.code, 201);
    assert_eq!(
        get_on(&mut w, get_req(Address::of(b""), 25)),
        (200, vec![], 200)
    );
}

#[test]
fn a_small_get_is_not_starved_by_a_large_one_on_the_same_connection() {
    // One shard and a warm small object: the small GET is ready at once, so what is
    // measured is the writer's fairness, not a cross-shard fetch.
    let n = node("oap-fair", &["--shards", "1"]);
    let big = bytes(3, 4 << 20);
    let small = bytes(4, 1000);
    let mut w = Wire::open(n.oap);
    assert_eq!(put_on(&mut w, 1, &big, None, 1 << 18).header.code, 201);
    assert_eq!(put_on(&mut w, 2, &small, None, 1 << 18).header.code, 201);
    assert_eq!(get_on(&mut w, get_req(Address::of(&small), 3)).2, 200);
    let mut both = get_req(Address::of(&big), 10).to_bytes().to_vec();
    both.extend_from_slice(&get_req(Address::of(&small), 11).to_bytes());
    w.send_raw(&both);
    let mut order = Vec::new();
    let mut big_body = 0;
    while order.iter().filter(|(_, end)| *end).count() < 2 {
        let f = w.recv().unwrap();
        let end = f.header.flags.contains(Flags::END);
        if f.header.corr_id == 10 && !f.header.flags.contains(Flags::START) && !end {
            big_body += DataHeader::split(&f.payload).unwrap().1.len();
        }
        order.push((f.header.corr_id, end));
    }
    assert_eq!(big_body, big.len());
    let small_end = order.iter().position(|&(c, e)| c == 11 && e).unwrap();
    let big_frames = order.iter().filter(|(c, _)| *c == 10).count();
    assert!(big_frames >= 66, "START + 64 DATA + END: {big_frames}");
    assert!(
        small_end < 8,
        "the small GET finished at frame {small_end} of {}",
        order.len()
    );
}

#[test]
fn requests_delivered_one_byte_at_a_time_are_answered() {
    let n = node("oap-bytewise", &[]);
    let mut w = Wire::open(n.oap);
    let data = bytes(5, 3000);
    let mut put = BytesMut::new();
    request(
        &ObjectRequest::Put {
            len: 3000,
            addr: Some(Address::of(&data)),
            copies: None,
        },
        1,
    )
    .encode_into(&mut put);
    data_frame(1, 0, 3000, &data, true).encode_into(&mut put);
    // Requests on one connection run concurrently: the GET goes once the PUT is stored.
    for b in put.iter() {
        w.send_raw(&[*b]);
    }
    assert_eq!(w.recv().unwrap().header.code, 201);
    for b in get_req(Address::of(&data), 2).to_bytes().iter() {
        w.send_raw(&[*b]);
    }
    let start = w.recv().unwrap();
    assert_eq!(GetStart::parse(&start.payload).unwrap().len, 3000);
    let f = w.recv().unwrap();
    assert!(DataHeader::split(&f.payload).unwrap().1 == data);
    assert_eq!(w.recv().unwrap().header.code, 200);
}

/// A frame header sent a byte at a time, each well inside any idle timer, gets HTTP's
/// head deadline (`header_timeout_ms`) from its first byte, not a body's grace: one 408
/// `request_timeout`, then the close.
#[test]
fn a_frame_header_dribbled_in_is_answered_408_at_the_header_deadline() {
    let n = node(
        "oap-header-dribble",
        &["--header-timeout-ms", "1000", "--body-timeout-ms", "8000"],
    );
    let mut w = Wire::open(n.oap);
    let header = get_req(Address::of(b"dribbled"), 3).to_bytes()[..HEADER_LEN].to_vec();
    let mut writer = w.stream.try_clone().unwrap();
    let began = Instant::now();
    // 500 ms a byte: the 38-byte header would take 19 s, past the 8 s body grace too.
    let dribble = std::thread::spawn(move || {
        for b in header {
            if writer.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let envelope = w.expect_rejection(408, "request_timeout");
    let took = began.elapsed();
    assert!(
        envelope["message"]
            .as_str()
            .is_some_and(|m| m.contains("frame header not complete within 1000 ms")),
        "{envelope}"
    );
    assert!(
        took < Duration::from_secs(4),
        "answered {took:?} after the header's first byte; its deadline was 1 s"
    );
    dribble.join().unwrap();
    // Counted as a request refused (before: in no count).
    let refused = "ron_requests_total{protocol=\"oap\",op=\"other\",status=\"408\"}";
    assert_eq!(
        metric_reaching(n.admin, refused, 1, Duration::from_secs(5)),
        1
    );
    assert_eq!(
        metric(n.admin, "ron_rejections_total{reason=\"timeout\"}"),
        1
    );
    // A header's deadline, not a body's: no transfer-deadline drop (it counted one).
    assert_eq!(metric(n.admin, "ron_transfer_deadline_drops_total"), 0);
}

/// A GET whose client goes away part way through its answer is counted, with status 0
/// and the time it ran. Before, the connection's end cancelled the request's task and
/// its ticket with it: the request was in no count and no latency histogram — the slow
/// ones whose clients gave up, which those histograms exist to show.
#[test]
fn a_get_whose_client_leaves_mid_answer_is_counted() {
    let n = node("oap-gone-mid-answer", &["--shards", "1"]);
    let addr = upload(&n, &bytes(77, 24 << 20));
    let mut w = Wire::open(n.oap);
    w.send(&get_req(addr, 9));
    let start = w.recv().unwrap();
    assert_eq!(start.header.code, 200);
    drop(w);
    let gone = "ron_requests_total{protocol=\"oap\",op=\"get\",status=\"0\"}";
    assert_eq!(
        metric_reaching(n.admin, gone, 1, Duration::from_secs(20)),
        1
    );
}

/// An idle OAP/1 connection is closed as soon as the stop begins, while an upload on
/// another connection keeps the node draining; before, it stayed open to its idle
/// timeout (75 s), past the process's end.
#[test]
fn a_stop_closes_an_idle_connection_at_once() {
    let mut n = node("oap-drain", &["--shards", "1"]);
    let data = bytes(14, 3000);
    let mut w = Wire::open(n.oap);
    assert_eq!(put_on(&mut w, 1, &data, None, 3000).header.code, 201);
    let mut uploading = connect(n.http);
    uploading
        .write_all(b"PUT /o HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\r\nstarted")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    n.signal("TERM");
    let signalled = Instant::now();
    assert!(w.recv().is_none(), "the idle connection closed");
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "closed {took:?} after SIGTERM"
    );
    drop(uploading);
    assert_eq!(n.stop_wait().code(), Some(0));
}

fn raw_header(len: u32, ver: u16, flags: u16, cap_len: u16, corr_id: u64) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&len.to_be_bytes());
    h[4..6].copy_from_slice(&ver.to_be_bytes());
    h[6..8].copy_from_slice(&flags.to_be_bytes());
    h[10..12].copy_from_slice(&1u16.to_be_bytes());
    h[28..30].copy_from_slice(&cap_len.to_be_bytes());
    h[30..38].copy_from_slice(&corr_id.to_be_bytes());
    h
}

/// A client that goes on sending the body of a frame refused from its header gets the
/// refusal, not a reset: the close lingers, reading and dropping what still comes (as
/// HTTP's does after an upload refused unread). Before, the node closed with the body
/// unread and the client's next write failed on the reset.
#[test]
fn a_frame_refused_from_its_header_is_answered_to_a_client_still_sending_it() {
    let n = node("oap-linger", &[]);
    let req_start = (Flags::REQ | Flags::START).bits();
    let mut w = Wire::open(n.oap);
    w.send_raw(&raw_header(1 << 20, 1, req_start, 0, 7));
    // The answer is out and the node's side closed by now.
    std::thread::sleep(Duration::from_millis(200));
    let piece = vec![0u8; 64 * 1024];
    for i in 0..16 {
        w.stream
            .write_all(&piece)
            .unwrap_or_else(|e| panic!("piece {i} of the refused frame's body: {e}"));
        std::thread::sleep(Duration::from_millis(10));
    }
    let env = w.expect_rejection(413, "too_large");
    assert_eq!(env["corr_id"], "7");
}

/// A GET or STAT sent without END is one request all the same: answered, and when
/// refused (over its quota here), never remembered as a refused upload whose DATA is
/// still to come. Before, each refused one was, and the 129th closed the connection as
/// "more than max_inflight in flight".
#[test]
fn refused_stats_without_end_are_never_held_as_uploads() {
    let dir = temp_dir("oap-stat-no-end");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("ron.toml");
    std::fs::write(
        &config,
        "[quota_default]\nrequests_per_s = 1\nrequests_burst = 1\n",
    )
    .unwrap();
    let n = Node::start(
        &dir.join("data"),
        &["--shards", "1", "--config", config.to_str().unwrap()],
    );
    let mut w = Wire::open(n.oap);
    let absent = Address::of(b"no one stored this");
    let payload = format!(r#"{{"op":"stat","addr":"{absent}"}}"#);
    let mut refused = 0;
    for corr_id in 1..=200u64 {
        w.send(&object_frame(
            Flags::REQ | Flags::START,
            corr_id,
            payload.as_bytes(),
        ));
        let answer = w.recv().expect("an answer");
        assert_eq!(answer.header.corr_id, corr_id);
        match answer.header.code {
            404 => {}
            429 => refused += 1,
            other => panic!("STAT {corr_id}: {other} {:?}", answer.payload),
        }
    }
    assert!(refused >= 190, "{refused} refused");
}

#[test]
fn every_protocol_error_is_answered_once_then_the_connection_closes() {
    let n = node("oap-reject", &["--oap-max-inflight", "2"]);
    let req_start_end = (Flags::REQ | Flags::START | Flags::END).bits();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "len below header",
            raw_header(37, 1, 1, 0, 7),
            400,
            "bad_frame",
        ),
        (
            "len above max_frame",
            raw_header((1 << 20) + 1, 1, 1, 0, 7),
            413,
            "too_large",
        ),
        ("version 2", raw_header(38, 2, 1, 0, 7), 400, "bad_version"),
        (
            "unknown flag",
            raw_header(38, 1, 0x0101, 0, 7),
            400,
            "bad_frame",
        ),
        (
            "cap without START",
            raw_header(48, 1, 1, 4, 7),
            400,
            "bad_frame",
        ),
        (
            "cap overrun",
            raw_header(48, 1, req_start_end, 11, 7),
            400,
            "bad_frame",
        ),
        (
            "RESP from a client",
            object_frame(Flags::RESP | Flags::END, 7, b"{}")
                .to_bytes()
                .to_vec(),
            400,
            "bad_frame",
        ),
        (
            "EVENT is not supported",
            object_frame(Flags::REQ | Flags::EVENT, 7, b"{}")
                .to_bytes()
                .to_vec(),
            400,
            "bad_frame",
        ),
        (
            "DATA without an upload",
            data_frame(7, 0, 3, b"abc", true).to_bytes().to_vec(),
            400,
            "bad_frame",
        ),
        // Refused from its header alone, as none of its body came: a request is a
        // token and a small JSON document, never a megabyte a connection holds.
        (
            "a START announced past the request frame limit",
            raw_header(1 << 20, 1, req_start_end, 0, 7),
            413,
            "too_large",
        ),
    ];
    for (what, bytes, status, code) in cases {
        let mut w = Wire::open(n.oap);
        w.send_raw(&bytes);
        let env = w.expect_rejection(status, code);
        assert_eq!(
            env["corr_id"], "7",
            "{what}: echoes the rejected frame's corr_id"
        );
    }

    // HELLO after another frame.
    let mut w = Wire::open(n.oap);
    w.send(&request(
        &ObjectRequest::Stat {
            addr: Address::of(b"x"),
        },
        1,
    ));
    assert_eq!(w.recv().unwrap().header.code, 404);
    let hello = Frame::new(
        FrameMeta {
            flags: Flags::REQ,
            code: 0,
            app_proto_id: APP_HELLO,
            tenant_id: 0,
            corr_id: 2,
        },
        Bytes::new(),
        Bytes::new(),
        1 << 20,
    )
    .unwrap();
    w.send(&hello);
    // On the HELLO's plane, where its reply would have been (it was on 1).
    let env = w.expect_rejection_on(APP_HELLO, 400, "bad_request");
    assert_eq!(
        env["message"],
        "HELLO must be the first frame of the connection"
    );

    // A corr_id reused while in flight, and more than max_inflight (2) requests.
    let mut w = Wire::open(n.oap);
    let put = request(
        &ObjectRequest::Put {
            len: 10,
            addr: None,
            copies: None,
        },
        1,
    );
    w.send(&put);
    w.send(&put);
    let env = w.expect_rejection(400, "bad_frame");
    assert_eq!(
        env["message"],
        "corr_id 1 is already in flight on this connection"
    );
    let mut w = Wire::open(n.oap);
    for corr_id in 1..=3 {
        w.send(&request(
            &ObjectRequest::Put {
                len: 10,
                addr: None,
                copies: None,
            },
            corr_id,
        ));
    }
    let env = w.expect_rejection(400, "bad_request");
    assert_eq!(
        env["message"],
        "more than max_inflight = 2 requests in flight on one connection"
    );
}

#[test]
fn a_compression_bomb_is_refused_and_compressed_requests_work() {
    let n = node("oap-comp", &[]);
    let mut w = Wire::open(n.oap);
    let stat = br#"{"op":"stat","addr":"b3:0000000000000000000000000000000000000000000000000000000000000000"}"#;
    let compressed = zstd::encode_all(&stat[..], 3).unwrap();
    let comp = Flags::REQ | Flags::START | Flags::END | Flags::COMP;
    w.send(&object_frame(comp, 1, &compressed));
    assert_eq!(w.recv().unwrap().header.code, 404, "inflated and answered");
    // 64 MiB of zeros compress to a few KiB: far past 10 × the compressed size.
    let bomb = zstd::encode_all(&vec![0u8; 64 << 20][..], 19).unwrap();
    assert!(bomb.len() < 64 * 1024);
    w.send(&object_frame(comp, 2, &bomb));
    let env = w.expect_rejection(413, "too_large");
    assert!(
        env["message"]
            .as_str()
            .unwrap()
            .contains("inflates past the bound"),
        "{env}"
    );
    let mut w = Wire::open(n.oap);
    w.send(&object_frame(comp, 3, b"not zstd at all"));
    w.expect_rejection(400, "bad_frame");
}

#[test]
fn a_bomb_in_the_data_of_a_refused_upload_is_dropped_unread_and_after_admission_refused() {
    let n = node("oap-comp-admission", &["--token", "w"]);
    // A DATA payload of 64 MiB of zeros in a few KiB: 413 if it were inflated.
    let header = DataHeader {
        obj: None,
        offset: 0,
        total_len: 64 << 20,
    };
    let bomb = zstd::encode_all(&header.payload(&vec![0u8; 64 << 20])[..], 19).unwrap();
    let bomb_data = |corr_id, end| {
        let flags = if end {
            Flags::REQ | Flags::COMP | Flags::END
        } else {
            Flags::REQ | Flags::COMP
        };
        object_frame(flags, corr_id, &bomb)
    };
    let put_start = ObjectRequest::Put {
        len: 64 << 20,
        addr: None,
        copies: None,
    };
    // Before admission: a PUT without the write token is refused (401) and the bombs
    // that follow as its DATA are skipped without being inflated; the connection lives.
    let mut w = Wire::open(n.oap);
    w.send(&request(&put_start, 1));
    for _ in 0..4 {
        w.send(&bomb_data(1, false));
    }
    w.send(&bomb_data(1, true));
    assert_eq!(w.recv().unwrap().header.code, 401);
    w.send(&request(
        &ObjectRequest::Stat {
            addr: Address::of(b"x"),
        },
        2,
    ));
    assert_eq!(
        w.recv().unwrap().header.code,
        404,
        "the connection lives on"
    );
    // After admission: the same bomb as an admitted upload's DATA is refused, 413.
    let mut w = Wire::open(n.oap);
    w.send(&put_start.frame(3, 0, Bytes::from_static(b"w")).unwrap());
    w.send(&bomb_data(3, true));
    w.expect_rejection(413, "too_large");
}

#[test]
fn writes_need_a_token_in_the_capability_section_when_tokens_are_set() {
    let n = node("oap-auth", &["--token", "s3cret"]);
    let mut w = Wire::open(n.oap);
    let data = bytes(6, 5000);
    let put = put_on(&mut w, 1, &data, None, 1000);
    assert_eq!(put.header.code, 401);
    let env: serde_json::Value = serde_json::from_slice(&put.payload).unwrap();
    assert_eq!(env["code"], "unauthorized");
    // The refused upload's DATA frames were skipped; the connection still works.
    let with_token = ObjectRequest::Put {
        len: 5000,
        addr: None,
        copies: None,
    }
    .frame(2, 77, Bytes::from_static(b"s3cret"))
    .unwrap();
    w.send(&with_token);
    w.send(&data_frame(2, 0, 5000, &data, true));
    assert_eq!(w.recv().unwrap().header.code, 201);
    // The refused upload counts once, as refused: not a second time as a request whose
    // client left (its ticket, taken at admission, is finished with the refusal).
    let count = |status: &str| {
        let series =
            format!("ron_requests_total{{protocol=\"oap\",op=\"put\",status=\"{status}\"}}");
        metric_reaching(n.admin, &series, 1, Duration::from_secs(5))
    };
    assert_eq!((count("401"), count("201")), (1, 1));
    assert_eq!(
        try_metric(
            n.admin,
            "ron_requests_total{protocol=\"oap\",op=\"put\",status=\"0\"}"
        ),
        None
    );
}

/// A refused upload whose client stops sending it (the refusal is its END) is over:
/// it does not count in flight, its corr_id is free again, and the connection keeps
/// the idle rule, not the receiving deadline. Before, each stayed "in flight" for the
/// connection's life, its corr_id was a duplicate, and the receiving deadline closed
/// the connection after a pause, cutting whatever it was downloading.
#[test]
fn a_refused_upload_the_client_stops_sending_is_over() {
    let flags = [
        "--token",
        "s3cret",
        "--oap-max-inflight",
        "2",
        "--body-timeout-ms",
        "300",
        "--idle-timeout-ms",
        "10000",
    ];
    let n = node("oap-refused-over", &flags);
    let data = bytes(9, 20_000);
    let token_put = |corr_id| {
        ObjectRequest::Put {
            len: data.len() as u64,
            addr: None,
            copies: None,
        }
        .frame(corr_id, 0, Bytes::from_static(b"s3cret"))
        .unwrap()
    };
    let mut w = Wire::open(n.oap);
    w.send(&token_put(9));
    w.send(&data_frame(9, 0, data.len() as u64, &data, true));
    let stored = w.recv().unwrap();
    assert_eq!(stored.header.code, 201);
    let addr = Address::of(&data);
    // Two uploads without the token: refused, and their client sends them no DATA.
    for corr_id in [1, 2] {
        let bare = ObjectRequest::Put {
            len: 5000,
            addr: None,
            copies: None,
        };
        w.send(&request(&bare, corr_id));
        let refused = w.recv().unwrap();
        assert_eq!(
            (refused.header.corr_id, refused.header.code),
            (corr_id, 401)
        );
    }
    // A pause past the receiving deadline, then two requests at once (the limit).
    std::thread::sleep(Duration::from_millis(1500));
    let (status, body, end) = get_on(&mut w, get_req(addr, 3));
    assert_eq!((status, end), (200, 200));
    assert!(body == data);
    // The refused corr_id is free again.
    w.send(&token_put(1));
    w.send(&data_frame(1, 0, data.len() as u64, &data, true));
    assert_eq!(w.recv().unwrap().header.code, 200, "already stored");
}

/// A client that sends a refused upload's START and some DATA and half-closes at once
/// still gets the refusal. Before, the end of its stream discarded every refused upload's queued
/// answer with the unfinished uploads.
#[test]
fn a_refusal_reaches_a_client_that_half_closed() {
    let n = node("oap-refused-halfclose", &["--token", "s3cret"]);
    for corr_id in 1..=5 {
        let mut w = Wire::open(n.oap);
        let bare = ObjectRequest::Put {
            len: 5000,
            addr: None,
            copies: None,
        };
        // START and three of its DATA frames in one write, then the end of the stream.
        let mut burst = request(&bare, corr_id).to_bytes().to_vec();
        let part = [7u8; 1000];
        for i in 0..3u64 {
            let data = data_frame(corr_id, i * 1000, 5000, &part, false);
            burst.extend_from_slice(&data.to_bytes());
        }
        w.send_raw(&burst);
        w.stream.shutdown(std::net::Shutdown::Write).unwrap();
        let refused = w.recv().expect("the refusal before the close");
        assert_eq!(
            (refused.header.corr_id, refused.header.code),
            (corr_id, 401)
        );
        assert!(w.recv().is_none());
    }
}

#[test]
fn a_dropped_upload_stores_nothing() {
    let n = node("oap-drop", &[]);
    let data = bytes(7, 1 << 20);
    {
        let mut w = Wire::open(n.oap);
        w.send(&request(
            &ObjectRequest::Put {
                len: data.len() as u64,
                addr: None,
                copies: None,
            },
            1,
        ));
        w.send(&data_frame(
            1,
            0,
            data.len() as u64,
            &data[..1 << 19],
            false,
        ));
    }
    let tmp = n.data_dir.join("tmp");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&tmp).map_or(0, |d| d.count()) > 0 {
        assert!(Instant::now() < deadline, "temp file left behind");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut w = Wire::open(n.oap);
    w.send(&request(
        &ObjectRequest::Stat {
            addr: Address::of(&data),
        },
        1,
    ));
    assert_eq!(w.recv().unwrap().header.code, 404);
}

#[test]
fn a_rotten_group_ends_the_stream_with_bad_digest_and_is_never_sent() {
    // No parity: the rotten group cannot be rebuilt (erasure.rs covers that case).
    let n = node("oap-rot", &["--ec", "off"]);
    let data = bytes(8, 5 * 65536);
    let addr = upload(&n, &data);
    let path = n.object_file(&addr);
    let mut file = std::fs::read(&path).unwrap();
    file[3 * 65536 + 10] ^= 1;
    std::fs::write(&path, file).unwrap();
    let mut w = Wire::open(n.oap);
    let (status, body, end) = get_on(&mut w, get_req(addr, 1));
    assert_eq!((status, end), (200, 500));
    assert!(
        body == data[..3 * 65536],
        "the three good groups, nothing after"
    );
}

#[test]
fn the_shard_gate_answers_503_with_retry_after_and_idle_connections_close() {
    let args = [
        "--shards",
        "1",
        "--max-inflight",
        "1",
        "--idle-timeout-ms",
        "400",
    ];
    let mut n = node("oap-gate", &args);
    let big = bytes(9, 8 << 20);
    let mut w = Wire::open(n.oap);
    assert_eq!(put_on(&mut w, 1, &big, None, 1 << 18).header.code, 201);
    // A slot is held while the shard works on a request, here a cold group read from
    // disk (a restart empties the cache); a waiting peer would park it (attacks.rs).
    // glommio runs a new request task at once, up to its first wait, and the reader
    // admits every START of one read in turn: a GET of the cold object and two STATs
    // in one packet on a one-slot shard, the GET holds the slot, the STATs are refused.
    drop(w);
    n.stop();
    n.restart(&args);
    let stat = |corr_id| {
        request(
            &ObjectRequest::Stat {
                addr: Address::of(&big),
            },
            corr_id,
        )
    };
    let mut probe = Wire::open(n.oap);
    let mut burst = get_req(Address::of(&big), 2).to_bytes().to_vec();
    burst.extend((3..5).flat_map(|c| stat(c).to_bytes()));
    probe.send_raw(&burst);
    let mut codes = std::collections::BTreeMap::new();
    let mut refusal = None;
    while codes.len() < 3 {
        let f = probe.recv().unwrap();
        if !f.header.flags.contains(Flags::END) {
            continue;
        }
        codes.insert(f.header.corr_id, f.header.code);
        if f.header.code == 503 {
            refusal = Some(serde_json::from_slice::<serde_json::Value>(&f.payload).unwrap());
        }
    }
    assert_eq!(codes.get(&2), Some(&200), "{codes:?}");
    assert_eq!(codes.get(&3), Some(&503), "{codes:?}");
    assert_eq!(codes.get(&4), Some(&503), "{codes:?}");
    let env = refusal.unwrap();
    assert_eq!(env["code"], "overloaded");
    assert_eq!(env["retryable"], true);
    assert_eq!(env["retry_after_ms"], 1000);
    // The gate opens again as soon as the first request is answered.
    probe.send(&stat(5));
    assert_eq!(probe.recv().unwrap().header.code, 200);
    // Nothing in flight and silence past idle_timeout_ms: the node closes.
    let started = Instant::now();
    assert!(probe.recv().is_none());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn metadata_loads_are_coalesced_and_a_tree_bigger_than_the_cache_is_not_reloaded() {
    // 2,050 groups: an index record longer than a shard checks inline (it is checked on
    // the blocking pool, so requests can arrive while it loads), and a tree (4,099 CVs
    // with its inner nodes, 128 KiB) bigger than the whole 64 KiB metadata budget.
    let args = ["--shards", "1", "--meta-cache-bytes", "64KiB"];
    let mut n = node("oap-meta-coalesce", &args);
    let data = bytes(21, 2050 * 65_536 - 100);
    let addr = upload(&n, &data);
    n.stop();
    n.restart(&args);
    let loads_before = metric(n.admin, "ron_meta_loads_total");
    // 16 STARTs in one packet: each request task runs up to its first wait, so the
    // first starts the load and the other fifteen find it running.
    let mut w = Wire::open(n.oap);
    let stat = |corr_id| request(&ObjectRequest::Stat { addr }, corr_id);
    let burst: Vec<u8> = (1..=16).flat_map(|c| stat(c).to_bytes()).collect();
    w.send_raw(&burst);
    for _ in 1..=16 {
        let answer = w.recv().unwrap();
        assert_eq!(answer.header.code, 200);
        assert_eq!(
            ObjectInfo::parse(&answer.payload).unwrap().len,
            data.len() as u64
        );
    }
    assert_eq!(metric(n.admin, "ron_meta_loads_total") - loads_before, 1);
    assert_eq!(metric(n.admin, "ron_meta_load_waits_total"), 15);
    // Too big for the cache, yet not read again for each later request, including a
    // proof-carrying range GET.
    for c in 17..27 {
        w.send(&stat(c));
        assert_eq!(w.recv().unwrap().header.code, 200);
    }
    let proof_get = ObjectRequest::Get {
        addr,
        range: Some(ron_codec::messages::InclusiveRange {
            first: 70_000_000,
            last: 70_100_000,
        }),
        proof: true,
        local: false,
        kept: false,
        node: None,
    };
    let (status, _, end) = get_on(&mut w, request(&proof_get, 30));
    assert_eq!((status, end), (206, 206));
    assert_eq!(metric(n.admin, "ron_meta_loads_total") - loads_before, 1);
}

/// A GET of this node's own copy only, with proofs, as peers ask: with `kept`, only a
/// copy it keeps; with `node`, only if it is that node (an audit).
fn local_get(addr: Address, kept: bool, node: Option<&str>, corr_id: u64) -> Frame {
    let get = ObjectRequest::Get {
        addr,
        range: None,
        proof: true,
        local: true,
        kept,
        node: node.map(str::to_owned),
    };
    request(&get, corr_id)
}

/// An audit names the node it means (`"node"`): a node answers for its own copies only,
/// so a peer that claims a neighbour's OAP port cannot pass an audit with the
/// neighbour's copy.
#[test]
fn a_get_naming_another_node_is_not_found() {
    let p2p = free_port().to_string();
    let n = node(
        "oap-node-id",
        &["--shards", "1", "--p2p", &format!("127.0.0.1:{p2p}")],
    );
    let stats = get(n.admin, "/admin/stats").unwrap().json();
    let own = stats["node_id"].as_str().expect("node_id").to_owned();
    let data = bytes(31, 100_000);
    let addr = upload(&n, &data);
    let get_as = |node: &str, corr_id| local_get(addr, false, Some(node), corr_id);
    let mut w = Wire::open(n.oap);
    let (status, body, end) = get_on(&mut w, get_as(&own, 1));
    assert_eq!((status, end), (200, 200));
    assert!(body == data);
    let other = "12D3KooWJCFQJPfqrRaNMcwoMQn9n6vEJfmQVw7Qch5VGisrhXtp";
    assert_ne!(own, other);
    let (status, _, _) = get_on(&mut w, get_as(other, 2));
    assert_eq!(
        status, 404,
        "another node's audit is not answered with this copy"
    );
}

/// An audit asks for a copy the node keeps (`"kept":true`): a read-through copy, which
/// the node may evict, answers 404 with the reason, and the uploader's copy passes. The
/// edge has two shards and each object is asked on four connections, so connections
/// land on the object's owner shard and on the other, which asks the owner over the mesh.
#[test]
fn an_audit_is_answered_only_from_a_kept_copy() {
    let origin = node("oap-kept-origin", &["--shards", "1"]);
    let objects: Vec<(Address, Vec<u8>)> = (0..4u64)
        .map(|i| {
            let data = bytes(40 + i, 70_000 + i as usize);
            (upload(&origin, &data), data)
        })
        .collect();
    let url = format!("http://{}", origin.http);
    let edge = node("oap-kept-edge", &["--shards", "2", "--origin", &url]);
    let ask = |addr: Address, kept: bool, corr_id: u64| local_get(addr, kept, None, corr_id);
    for (addr, data) in &objects {
        let through = get(edge.http, &format!("/o/{addr}")).unwrap();
        assert_eq!(through.status, 200);
        assert!(through.body == *data, "read through and stored, evictable");
    }
    wait_for(
        "the copies read through are stored",
        Duration::from_secs(10),
        || metric(edge.admin, "ron_fetches_stored_total") == objects.len() as u64,
    );
    for (addr, data) in &objects {
        for corr_id in 0..4 {
            let mut w = Wire::open(edge.oap);
            let (status, body, _) = get_on(&mut w, ask(*addr, false, corr_id));
            assert_eq!(status, 200, "held: a peer fetch is answered");
            assert!(body == *data);
            w.send(&ask(*addr, true, corr_id + 10));
            let refused = w.recv().expect("an answer");
            assert_eq!(refused.header.code, 404);
            let envelope: serde_json::Value = serde_json::from_slice(&refused.payload).unwrap();
            assert_eq!(envelope["code"], "not_found", "{envelope}");
            assert_eq!(
                envelope["message"],
                format!("{addr} is held here only as an evictable copy, not kept"),
                "{envelope}"
            );
        }
        let mut w = Wire::open(origin.oap);
        let (status, body, _) = get_on(&mut w, ask(*addr, true, 1));
        assert_eq!(status, 200, "the uploader keeps its copy");
        assert!(body == *data);
    }
    let missing = Address::of(b"never stored");
    let mut w = Wire::open(edge.oap);
    let (status, _, _) = get_on(&mut w, ask(missing, true, 1));
    assert_eq!(status, 404);
}

/// One connection opens 24 uploads (a client's most of a shard's 32 upload slots) and
/// feeds only the first: the others fall behind their own pace and are cancelled, 408, a
/// grace after they began — their slots given back — while the first goes on, and
/// another client's upload is taken. Before, the connection's pace counted the first
/// upload's bytes for all of them (then 32, every slot), and every other upload on the
/// shard was refused 503 for as long as the first was fed.
#[test]
fn uploads_that_receive_nothing_are_cancelled_while_another_on_the_connection_is_fed() {
    const LEN: u64 = 1_000_000;
    let n = node(
        "oap-upload-pace",
        &[
            "--shards",
            "1",
            "--body-timeout-ms",
            "1000",
            "--body-rate-min",
            "1KiB",
        ],
    );
    let mut w = Wire::open(n.oap);
    for corr_id in 1..=24 {
        let start = ObjectRequest::Put {
            len: LEN,
            addr: None,
            copies: None,
        };
        w.send(&request(&start, corr_id));
    }
    // Upload 1 at 8 KiB every 100 ms (80 KiB/s, far above 1 KiB/s) for 3 s.
    let data = bytes(9, LEN as usize);
    let (step, mut offset, fed) = (8_192, 0, Instant::now());
    while fed.elapsed() < Duration::from_secs(3) {
        let piece = &data[offset..offset + step];
        w.send(&data_frame(1, offset as u64, LEN, piece, false));
        offset += step;
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut cancelled = Vec::new();
    while cancelled.len() < 23 {
        let frame = w.recv().expect("the cancelled uploads' answers");
        let envelope: serde_json::Value = serde_json::from_slice(&frame.payload).unwrap();
        assert_eq!(frame.header.code, 408, "{envelope}");
        assert!(
            envelope["message"]
                .as_str()
                .is_some_and(|m| m.contains("upload fell behind the minimum rate")),
            "{envelope}"
        );
        cancelled.push(frame.header.corr_id);
    }
    cancelled.sort_unstable();
    assert_eq!(cancelled, (2..=24).collect::<Vec<u64>>());
    let r = put(n.http, "/o", b"another client's upload", "");
    assert_eq!(r.status, 201, "{r:?}");
    // Upload 1 was never behind: it completes.
    while offset < data.len() {
        let end = (offset + 65_536).min(data.len());
        w.send(&data_frame(
            1,
            offset as u64,
            LEN,
            &data[offset..end],
            end == data.len(),
        ));
        offset = end;
    }
    let answer = w.recv().expect("upload 1's answer");
    assert_eq!((answer.header.corr_id, answer.header.code), (1, 201));
    assert_eq!(metric(n.admin, "ron_transfer_deadline_drops_total"), 23);
}
