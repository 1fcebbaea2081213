//! OAP/1 over a blocking stream: one request at a time.

use std::io::{Read, Write};

use bytes::{Bytes, BytesMut};
use ron_codec::frame::{
    Flags, Frame, FrameMeta, FrameReader, APP_OBJECTS, MAX_FRAME_BYTES, READ_BUF_BYTES_DEFAULT,
};
use ron_codec::messages::{
    DataHeader, GetEnd, GetStart, HelloReply, HelloRequest, InclusiveRange, ObjectInfo,
    ObjectRequest,
};
use ron_codec::proof::{GroupRange, RangeVerifier};
use ron_codec::tree::GroupIndex;
use ron_codec::Address;

use crate::error::ClientError;
use crate::transport::{connect, Deadline, Endpoint, Stream};
use crate::{ByteRange, Fetched, Options, Progress, Stored};

/// Raw bytes per DATA frame of an upload.
pub const PUT_DATA_BYTES: usize = 256 * 1024;

/// The least `max_frame` a node may announce in HELLO: a verified 64 KiB group and its
/// headers fit in a frame (what a node's own configuration requires). Less would leave
/// an upload's DATA frames no room for bytes.
const FRAME_BYTES_MIN: u32 = 2 * ron_codec::tree::GROUP_LEN_BYTES as u32;

/// What a DATA frame of an upload carries besides its bytes, at most.
const PUT_DATA_OVERHEAD_BYTES: usize = 1024;

#[derive(Debug)]
pub struct OapClient {
    stream: Box<dyn Stream>,
    addr: String,
    options: Options,
    /// The node's frames, decoded as they are read.
    reader: FrameReader,
    next_corr_id: u64,
    /// What the node said in HELLO.
    pub hello: HelloReply,
}

/// What the client assumes of a node until its HELLO answers.
fn hello_assumed() -> HelloReply {
    HelloReply {
        max_frame: MAX_FRAME_BYTES,
        max_inflight: 1,
        flags_supported: 0,
        versions: vec![1],
        transports: Vec::new(),
        node_id: None,
        shards: None,
        chunk: None,
    }
}

impl OapClient {
    /// Connects and exchanges HELLO.
    pub fn connect(endpoint: &Endpoint, options: Options) -> Result<OapClient, ClientError> {
        let stream = connect(endpoint, options.timeout)?;
        let mut client = OapClient {
            stream,
            addr: endpoint.addr.clone(),
            reader: FrameReader::new(MAX_FRAME_BYTES, READ_BUF_BYTES_DEFAULT),
            next_corr_id: 1,
            hello: hello_assumed(),
            options,
        };
        let corr_id = client.corr_id();
        let hello = HelloRequest {
            ua: Some(client.options.user_agent.clone()),
        };
        client.send(&hello.frame(corr_id))?;
        let reply = client.expect_frame(corr_id)?;
        if reply.header.code != 200 {
            return Err(ClientError::from_envelope(
                reply.header.code,
                &reply.payload,
            ));
        }
        client.hello = HelloReply::parse(&reply.payload).map_err(|e| client.protocol(e))?;
        if !client.hello.versions.contains(&1) {
            return Err(client.protocol("node does not speak OAP/1"));
        }
        if client.hello.max_frame < FRAME_BYTES_MIN {
            return Err(client.protocol(format!(
                "node's max_frame is {} bytes, below the {FRAME_BYTES_MIN} a 64 KiB group \
                 and its headers need",
                client.hello.max_frame
            )));
        }
        Ok(client)
    }

    fn corr_id(&mut self) -> u64 {
        let id = self.next_corr_id;
        self.next_corr_id += 1;
        id
    }

    fn protocol(&self, reason: impl ToString) -> ClientError {
        ClientError::Protocol {
            addr: self.addr.clone(),
            reason: reason.to_string(),
        }
    }

    fn send(&mut self, frame: &Frame) -> Result<(), ClientError> {
        let mut wire = BytesMut::with_capacity(frame.header.len as usize);
        frame.encode_into(&mut wire);
        self.stream
            .write_all(&wire)
            .map_err(ClientError::io(&self.addr, "send"))
    }

    /// Reads the next frame. The node closing inside a frame is a protocol error (the
    /// codec's `TruncatedFrame`), between frames an unexpected end of file.
    /// The next frame, whole within the timeout (not only each read of it).
    fn read_frame(&mut self) -> Result<Frame, ClientError> {
        let deadline = Deadline::after(self.options.timeout);
        deadline.arm(&*self.stream);
        let frame = self.read_frame_by_deadline();
        deadline.disarm(&*self.stream);
        frame
    }

    /// [`OapClient::read_frame`], the stream's deadline armed.
    fn read_frame_by_deadline(&mut self) -> Result<Frame, ClientError> {
        loop {
            if let Some(frame) = self.reader.next_frame().map_err(|e| self.protocol(e))? {
                return Ok(frame);
            }
            let n = self
                .stream
                .read(self.reader.read_buf())
                .map_err(ClientError::io(&self.addr, "receive a frame"))?;
            if n == 0 {
                self.reader.end_of_stream().map_err(|e| self.protocol(e))?;
                return Err(ClientError::io(&self.addr, "receive")(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
            self.reader.filled(n);
        }
    }

    /// Reads the next frame, which must answer `corr_id`.
    fn expect_frame(&mut self, corr_id: u64) -> Result<Frame, ClientError> {
        let frame = self.read_frame()?;
        if frame.header.corr_id != corr_id || !frame.header.flags.contains(Flags::RESP) {
            // The node answers a protocol error with its envelope before closing.
            if frame.header.code >= 400 {
                return Err(ClientError::from_envelope(
                    frame.header.code,
                    &frame.payload,
                ));
            }
            return Err(self.protocol(format!(
                "expected a response to corr_id {corr_id}, got flags {:#06x} for corr_id {}",
                frame.header.flags.bits(),
                frame.header.corr_id
            )));
        }
        Ok(frame)
    }

    fn error_of(frame: &Frame) -> Option<ClientError> {
        (frame.header.code >= 400)
            .then(|| ClientError::from_envelope(frame.header.code, &frame.payload))
    }

    /// PUT: START announcing `len` (and `addr` when known), then DATA frames.
    pub fn put(
        &mut self,
        body: &mut dyn Read,
        addr: Option<Address>,
        len: u64,
        progress: Progress<'_>,
    ) -> Result<Stored, ClientError> {
        let corr_id = self.corr_id();
        let start = ObjectRequest::Put {
            len,
            addr,
            copies: self.options.copies,
        }
        .frame(corr_id, self.options.tenant_id, self.capability())
        .map_err(|e| ClientError::Usage(e.to_string()))?;
        self.send(&start)?;
        let max_raw = PUT_DATA_BYTES.min(self.hello.max_frame as usize - PUT_DATA_OVERHEAD_BYTES);
        let mut buf = vec![0u8; max_raw];
        let mut sent = 0u64;
        while sent < len {
            let want = (len - sent).min(max_raw as u64) as usize;
            body.read_exact(&mut buf[..want])
                .map_err(ClientError::Input)?;
            let data = DataHeader {
                obj: addr,
                offset: sent,
                total_len: len,
            };
            let mut flags = Flags::REQ;
            if sent + want as u64 == len {
                flags = flags | Flags::END;
            }
            let meta = FrameMeta {
                flags,
                code: 0,
                app_proto_id: APP_OBJECTS,
                tenant_id: self.options.tenant_id,
                corr_id,
            };
            let frame = Frame::new(
                meta,
                Bytes::new(),
                data.payload(&buf[..want]),
                self.hello.max_frame,
            )
            .map_err(|e| self.protocol(e))?;
            self.send(&frame)?;
            sent += want as u64;
            progress(sent);
            // A refusal (no token, too large, over quota) comes right after START: the
            // rest of the body would be sent for nothing, the node discarding it.
            if sent < len && self.stream.has_unread() {
                break;
            }
        }
        let reply = self.expect_frame(corr_id)?;
        if let Some(e) = Self::error_of(&reply) {
            return Err(e);
        }
        if sent < len {
            return Err(self.protocol(format!(
                "answered {} after {sent} of {len} bytes, before the upload ended",
                reply.header.code
            )));
        }
        let info = ObjectInfo::parse(&reply.payload).map_err(|e| self.protocol(e))?;
        if addr.is_some_and(|a| a != info.obj) || info.len != len {
            return Err(self.protocol(format!(
                "node stored {} ({} bytes), not what was sent",
                info.obj, info.len
            )));
        }
        Ok(Stored {
            addr: info.obj,
            len: info.len,
            created: reply.header.code == 201,
            copies: info.copies,
        })
    }

    /// GET with verified streaming: every group is checked against `addr` before its
    /// bytes (the part inside `range`) reach `sink`.
    pub fn get(
        &mut self,
        addr: Address,
        range: Option<ByteRange>,
        sink: &mut dyn Write,
        progress: Progress<'_>,
    ) -> Result<Fetched, ClientError> {
        let corr_id = self.corr_id();
        let request = ObjectRequest::Get {
            addr,
            range: range.map(|r| InclusiveRange {
                first: r.first,
                last: r.last,
            }),
            proof: true,
            local: self.options.local_only,
            kept: self.options.kept_only,
            node: self.options.node.clone(),
        };
        let frame = request
            .frame(corr_id, self.options.tenant_id, self.capability())
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        self.send(&frame)?;
        let first = self.expect_frame(corr_id)?;
        if let Some(e) = Self::error_of(&first) {
            return Err(e);
        }
        let start = GetStart::parse(&first.payload).map_err(|e| self.protocol(e))?;
        if start.obj != addr
            || span_asked(range, start.total_len) != Some((start.offset, start.len))
        {
            return Err(self.protocol(format!(
                "GET of {addr}{} answered for {} bytes {}+{} of {}",
                range.map_or(String::new(), |r| format!(" bytes {}-{}", r.first, r.last)),
                start.obj,
                start.offset,
                start.len,
                start.total_len
            )));
        }
        let verify_error = |reason: String| ClientError::Verification {
            addr: addr.to_string(),
            reason,
        };
        if start.total_len == 0 && addr != Address::of(b"") {
            return Err(verify_error("node says the object is empty".into()));
        }
        let mut verifier = if start.len > 0 {
            let groups = GroupRange::covering(start.offset, start.len);
            Some(
                RangeVerifier::new(addr, start.total_len, groups)
                    .map_err(|e| verify_error(e.to_string()))?,
            )
        } else {
            None
        };
        let end = start.offset + start.len;
        let mut written = 0u64;
        loop {
            let frame = self.expect_frame(corr_id)?;
            if frame.header.flags.contains(Flags::END) {
                if let Some(e) = Self::error_of(&frame) {
                    return Err(e);
                }
                let done = GetEnd::parse(&frame.payload).map_err(|e| self.protocol(e))?;
                let complete = verifier.as_ref().is_none_or(RangeVerifier::is_done);
                if done.len != start.len || written != start.len || !complete {
                    return Err(
                        self.protocol(format!("GET ended after {written} of {} bytes", start.len))
                    );
                }
                return Ok(Fetched {
                    total_len: start.total_len,
                    len: written,
                });
            }
            let (data, parents, raw) =
                DataHeader::split_with_parents(&frame.payload).map_err(|e| self.protocol(e))?;
            let group = GroupIndex::containing(data.offset);
            if data.offset != group.start_offset() || data.obj.is_some_and(|o| o != addr) {
                return Err(self.protocol(format!(
                    "verified DATA at offset {} is not a whole group of {addr}",
                    data.offset
                )));
            }
            let verifier = verifier
                .as_mut()
                .ok_or_else(|| self.protocol("DATA for an empty range"))?;
            verifier
                .verify(group, &parents, &raw)
                .map_err(|e| verify_error(e.to_string()))?;
            let from = start.offset.saturating_sub(data.offset) as usize;
            let to = (end.saturating_sub(data.offset) as usize).min(raw.len());
            let slice = raw.get(from..to).unwrap_or_default();
            sink.write_all(slice).map_err(ClientError::Output)?;
            written += slice.len() as u64;
            progress(written);
        }
    }

    /// The capability section of every request: the token, which names the tenant
    /// (quotas) on reads as on writes.
    fn capability(&self) -> Bytes {
        Bytes::from(self.options.token.clone().unwrap_or_default().into_bytes())
    }

    /// STAT: the object's length.
    pub fn stat(&mut self, addr: Address) -> Result<u64, ClientError> {
        let corr_id = self.corr_id();
        let frame = ObjectRequest::Stat { addr }
            .frame(corr_id, self.options.tenant_id, self.capability())
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        self.send(&frame)?;
        let reply = self.expect_frame(corr_id)?;
        if let Some(e) = Self::error_of(&reply) {
            return Err(e);
        }
        let info = ObjectInfo::parse(&reply.payload).map_err(|e| self.protocol(e))?;
        if info.obj != addr {
            return Err(self.protocol(format!("asked about {addr}, answered about {}", info.obj)));
        }
        Ok(info.len)
    }
}

/// The bytes (offset, length) an answer must carry for `range` of an object of
/// `total_len` bytes: the whole object, or the range with its end cut at the object's
/// (RFC 9110 §14.1.2's rule, which the node follows). `None` where no answer can
/// carry bytes (a range starting at or past the end is refused by an honest node). A
/// node's START is held to it: a span it chose itself — none at all, or another
/// range — would be verified as itself and taken for what was asked.
fn span_asked(range: Option<ByteRange>, total_len: u64) -> Option<(u64, u64)> {
    match range {
        None => Some((0, total_len)),
        Some(r) if r.first >= total_len || r.last < r.first => None,
        Some(r) => Some((r.first, r.last.min(total_len - 1) - r.first + 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_node::{frame_reader, read_frame, serve, trickle};
    use crate::transport::Protocol;
    use ron_codec::messages::response_frame;
    use std::time::Duration;

    fn hello_reply() -> Frame {
        hello_assumed().frame(1)
    }

    #[test]
    fn frames_trickled_byte_by_byte_are_read_whole() {
        let addr = Address::of(b"stat me");
        let (endpoint, node) = serve(Protocol::Oap, move |mut stream| {
            let mut reader = frame_reader();
            assert_eq!(read_frame(&mut stream, &mut reader).header.corr_id, 1);
            trickle(&mut stream, &hello_reply().to_bytes());
            let stat = read_frame(&mut stream, &mut reader);
            let info = ObjectInfo {
                obj: addr,
                len: 7,
                copies: None,
            };
            let reply = response_frame(Flags::END, 200, stat.header.corr_id, info.to_payload());
            trickle(&mut stream, &reply.unwrap().to_bytes());
        });
        let mut client = OapClient::connect(&endpoint, Options::default()).unwrap();
        assert_eq!(client.stat(addr).unwrap(), 7);
        node.join().unwrap();
    }

    /// A node refusing an upload right after START (no token here) is heard before the
    /// body is: the client stops sending and reports the refusal. Before, it sent all
    /// 64 MiB for the node to discard, then printed the 401.
    /// A node sending its HELLO answer a byte every 50 ms (each read within a 200 ms
    /// timeout) fails the connect once 200 ms have passed, naming the timeout. Before,
    /// only each read was timed: a frame trickled so came in whenever the node liked.
    #[test]
    fn a_frame_trickled_past_the_timeout_is_a_timeout() {
        let (endpoint, node) = serve(Protocol::Oap, move |mut stream| {
            let mut reader = frame_reader();
            read_frame(&mut stream, &mut reader);
            for b in hello_reply().to_bytes().iter() {
                std::thread::sleep(Duration::from_millis(50));
                if stream.write_all(std::slice::from_ref(b)).is_err() {
                    return;
                }
            }
        });
        let options = Options {
            timeout: Duration::from_millis(200),
            ..Options::default()
        };
        let started = std::time::Instant::now();
        let err = OapClient::connect(&endpoint, options).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "connection to {} failed during receive a frame: not whole within 200 ms",
                endpoint.addr
            )
        );
        node.join().unwrap();
    }

    #[test]
    fn an_upload_refused_at_its_start_sends_no_more_of_its_body() {
        let (endpoint, node) = serve(Protocol::Oap, move |mut stream| {
            let mut reader = frame_reader();
            read_frame(&mut stream, &mut reader);
            stream.write_all(&hello_reply().to_bytes()).unwrap();
            let start = read_frame(&mut stream, &mut reader);
            let refusal = br#"{"code":"unauthorized","message":"a write token is required"}"#;
            let reply = response_frame(
                Flags::END,
                401,
                start.header.corr_id,
                Bytes::from_static(refusal),
            );
            stream.write_all(&reply.unwrap().to_bytes()).unwrap();
            let mut received = 0;
            let mut buf = vec![0u8; 1 << 20];
            while let Ok(n @ 1..) = stream.read(&mut buf) {
                received += n;
            }
            received
        });
        let len = 64u64 << 20;
        let mut body = std::io::repeat(7).take(len);
        let mut client = OapClient::connect(&endpoint, Options::default()).unwrap();
        let refused = client.put(&mut body, None, len, &mut |_| {}).unwrap_err();
        assert!(
            matches!(&refused, ClientError::Server { status: 401, code, .. } if code == "unauthorized"),
            "{refused}"
        );
        drop(client);
        let received = node.join().unwrap();
        assert!(
            received < 16 << 20,
            "{received} bytes of {len} sent after the refusal"
        );
    }

    #[test]
    fn the_span_asked_is_the_object_or_the_range_cut_at_its_end() {
        let r = |first, last| Some(ByteRange { first, last });
        assert_eq!(span_asked(None, 0), Some((0, 0)));
        assert_eq!(span_asked(None, 70_000), Some((0, 70_000)));
        assert_eq!(span_asked(r(10, 19), 70_000), Some((10, 10)));
        assert_eq!(span_asked(r(69_990, u64::MAX), 70_000), Some((69_990, 10)));
        assert_eq!(span_asked(r(70_000, 70_001), 70_000), None);
        assert_eq!(span_asked(r(0, 0), 0), None);
        assert_eq!(span_asked(r(5, 4), 70_000), None);
    }

    /// A node that answers a GET with a span of its own choosing — no bytes at all, or
    /// bytes other than those asked for — is refused: what it sends would verify as
    /// itself, and be written as the object or the range asked for.
    #[test]
    fn a_node_answering_another_span_than_the_one_asked_is_refused() {
        let addr = Address::of(&[7u8; 100_000]);
        for (range, offset, len) in [(None, 0, 0), (Some((0, 99)), 0, 0), (Some((0, 99)), 1, 99)] {
            let (endpoint, node) = serve(Protocol::Oap, move |mut stream| {
                let mut reader = frame_reader();
                read_frame(&mut stream, &mut reader);
                trickle(&mut stream, &hello_reply().to_bytes());
                let get = read_frame(&mut stream, &mut reader);
                let start = GetStart {
                    obj: addr,
                    total_len: 100_000,
                    offset,
                    len,
                    chunk: 65_536,
                };
                let reply =
                    response_frame(Flags::START, 200, get.header.corr_id, start.to_payload());
                let end = GetEnd {
                    status: "ok".into(),
                    len,
                };
                let end = response_frame(Flags::END, 200, get.header.corr_id, end.to_payload());
                let mut wire = reply.unwrap().to_bytes().to_vec();
                wire.extend_from_slice(&end.unwrap().to_bytes());
                // The client refuses START and closes; what follows may meet a reset.
                let _ = std::io::Write::write_all(&mut stream, &wire);
            });
            let mut client = OapClient::connect(&endpoint, Options::default()).unwrap();
            let range = range.map(|(first, last)| ByteRange { first, last });
            let mut sink = Vec::new();
            let err = client.get(addr, range, &mut sink, &mut |_| {}).unwrap_err();
            assert!(
                matches!(&err, ClientError::Protocol { reason, .. } if reason.contains("answered for")),
                "{range:?} answered {offset}+{len}: {err}"
            );
            assert!(sink.is_empty());
            node.join().unwrap();
        }
    }

    /// A node whose HELLO announces frames too small for a group is refused at connect:
    /// an upload to it sent DATA frames with no bytes for ever (or, below 1 KiB, its
    /// frame size less the headers underflowed).
    #[test]
    fn a_node_announcing_frames_too_small_for_a_group_is_refused() {
        for max_frame in [0, 1024, FRAME_BYTES_MIN - 1] {
            let (endpoint, node) = serve(Protocol::Oap, move |mut stream| {
                read_frame(&mut stream, &mut frame_reader());
                let hello = HelloReply {
                    max_frame,
                    ..hello_assumed()
                };
                trickle(&mut stream, &hello.frame(1).to_bytes());
            });
            let err = OapClient::connect(&endpoint, Options::default()).unwrap_err();
            assert!(
                matches!(&err, ClientError::Protocol { reason, .. }
                    if reason == &format!("node's max_frame is {max_frame} bytes, below the \
                        131072 a 64 KiB group and its headers need")),
                "{err}"
            );
            node.join().unwrap();
        }
    }

    #[test]
    fn a_node_closing_inside_a_frame_is_a_protocol_error() {
        let (endpoint, node) = serve(Protocol::Oap, |mut stream| {
            read_frame(&mut stream, &mut frame_reader());
            let wire = hello_reply().to_bytes();
            trickle(&mut stream, &wire[..wire.len() - 3]);
        });
        let err = OapClient::connect(&endpoint, Options::default()).unwrap_err();
        assert!(
            matches!(&err, ClientError::Protocol { reason, .. }
                if reason == "the stream ended 3 bytes short of a whole frame"),
            "{err}"
        );
        node.join().unwrap();
    }
}
