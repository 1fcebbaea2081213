//! A verified GET from a provider over OAP/1, on the shard's executor: HELLO and a GET
//! with `"proof":true` in one write, then one DATA frame per whole group, each checked
//! against the address (through the parents the provider sends) before it is handed on.
//! Nothing a provider says is taken on trust: the object's length is bounded, every frame
//! must be the one expected, and each group must arrive within the stall timeout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use ron_codec::frame::{Flags, Frame, FrameReader, MAX_FRAME_BYTES};
use ron_codec::messages::{DataHeader, GetStart, HelloRequest, InclusiveRange, ObjectRequest};
use ron_codec::proof::{GroupRange, RangeVerifier};
use ron_codec::tree::{group_count, GroupIndex};
use ron_codec::Address;
use ron_link::counters::FetchFailure;

use crate::fetch::AttemptError;

/// Whether a provider's START answers a GET of `addr` from byte `offset` to its end: the
/// same object, the length expected (when one is), and the bytes from `offset` to the
/// end. Its lengths are the provider's claims: sums are checked, not trusted to fit.
fn answers_the_rest(start: &GetStart, addr: Address, offset: u64, expect_len: Option<u64>) -> bool {
    start.obj == addr
        && expect_len.is_none_or(|len| len == start.total_len)
        && (start.total_len == 0
            || (start.offset == offset
                && start.offset.checked_add(start.len) == Some(start.total_len)))
}

/// Bytes read from the socket at a time.
const READ_BYTES: usize = 128 * 1024;
/// The GET's correlation id (HELLO is 1).
const GET_CORR_ID: u64 = 2;

/// An open verified GET: the object's length is known, groups come in order.
#[derive(Debug)]
pub struct PeerGet {
    stream: TcpStream,
    pub peer: SocketAddr,
    /// The frames the provider sends, and the bytes read and not yet decoded.
    reader: FrameReader,
    /// Set once START says how long the object is (none for an empty object).
    verifier: Option<RangeVerifier>,
    next: u64,
    pub total_len: u64,
    stall: Duration,
    /// The first group, verified while opening (it is what "first byte" means).
    first: Option<Bytes>,
}

impl PeerGet {
    /// Connects, asks for groups `from..` of `addr` and verifies the first of them. A
    /// provider that claims a different length than `expect_len` (when one is known) or
    /// more than `len_max` bytes is refused. With `node`, the peer must be that node (an
    /// audit: another node at that address answers `not_found`).
    ///
    /// With no `expect_len`, the length it claims is proven before it is believed:
    /// BLAKE3 binds an object's length only through the shape of its tree, and the proof
    /// of a first group holds for every length whose left subtrees are alike (bao and
    /// iroh verify the last chunk for that). So the last group, verified against the
    /// claimed length, is asked on a second connection while the first arrives; one
    /// lying provider would otherwise set the length every waiting client is told, and
    /// have every honest one refused on resume.
    pub async fn open(
        peer: SocketAddr,
        node: Option<&str>,
        addr: Address,
        from: u64,
        expect_len: Option<u64>,
        len_max: u64,
        stall: Duration,
    ) -> Result<PeerGet, AttemptError> {
        let fail = |reason, detail: String| AttemptError {
            upstream: peer.to_string(),
            reason,
            detail,
        };
        let stream = TcpStream::connect_timeout(peer, stall)
            .await
            .map_err(|e| fail(FetchFailure::Connect, e.to_string()))?;
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(stall))
            .map_err(|e| fail(FetchFailure::Connect, e.to_string()))?;
        stream
            .set_write_timeout(Some(stall))
            .map_err(|e| fail(FetchFailure::Connect, e.to_string()))?;
        let mut get = PeerGet {
            stream,
            peer,
            reader: FrameReader::new(MAX_FRAME_BYTES, READ_BYTES),
            verifier: None,
            next: from,
            total_len: 0,
            stall,
            first: None,
        };
        get.request(addr, node, from, expect_len).await?;
        get.expect_hello().await?;
        get.expect_start(addr, from, expect_len, len_max).await?;
        if get.total_len == 0 {
            return Ok(get);
        }
        let claimed = get.total_len;
        let last = group_count(claimed) - 1;
        let length_unproven = expect_len.is_none() && last > from;
        let proof = async {
            if !length_unproven {
                return Ok(());
            }
            // Boxed: an open within an open.
            let last_group = PeerGet::open(peer, node, addr, last, Some(claimed), len_max, stall);
            Box::pin(last_group)
                .await
                .map(drop)
                .map_err(|e| AttemptError {
                    detail: format!(
                        "claims {claimed} bytes, and its last group does not prove it: {}",
                        e.detail
                    ),
                    ..e
                })
        };
        // The first failure ends both.
        let (first, ()) = futures_lite::future::try_zip(get.receive_group(addr), proof).await?;
        get.first = Some(first);
        Ok(get)
    }

    fn error(&self, reason: FetchFailure, detail: impl ToString) -> AttemptError {
        AttemptError {
            upstream: self.peer.to_string(),
            reason,
            detail: detail.to_string(),
        }
    }

    async fn request(
        &mut self,
        addr: Address,
        node: Option<&str>,
        from: u64,
        expect_len: Option<u64>,
    ) -> Result<(), AttemptError> {
        let range = match (from, expect_len) {
            (0, _) | (_, None) => None,
            (g, Some(len)) => Some(InclusiveRange {
                first: GroupIndex(g).start_offset(),
                last: len - 1,
            }),
        };
        let get = ObjectRequest::Get {
            addr,
            range,
            proof: true,
            local: true,
            // An audit (a node named) counts only a copy the holder keeps.
            kept: node.is_some(),
            node: node.map(str::to_owned),
        }
        .frame(GET_CORR_ID, 0, Bytes::new())
        .map_err(|e| self.error(FetchFailure::Protocol, e))?;
        let hello = HelloRequest {
            ua: Some(concat!("ron/", env!("CARGO_PKG_VERSION"), " read-through").into()),
        }
        .frame(1);
        let mut wire = BytesMut::new();
        hello.encode_into(&mut wire);
        get.encode_into(&mut wire);
        self.stream
            .write_all(&wire)
            .await
            .map_err(|e| self.io_error(e))
    }

    fn io_error(&self, e: std::io::Error) -> AttemptError {
        let reason = match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => FetchFailure::Timeout,
            _ => FetchFailure::Protocol,
        };
        self.error(reason, e)
    }

    async fn expect_hello(&mut self) -> Result<(), AttemptError> {
        let hello = self.read_frame(Instant::now() + self.stall).await?;
        if hello.header.corr_id != 1 || hello.header.code != 200 {
            return Err(self.refused(&hello));
        }
        Ok(())
    }

    async fn expect_start(
        &mut self,
        addr: Address,
        from: u64,
        expect_len: Option<u64>,
        len_max: u64,
    ) -> Result<(), AttemptError> {
        let frame = self.expect_get_frame(Instant::now() + self.stall).await?;
        let start =
            GetStart::parse(&frame.payload).map_err(|e| self.error(FetchFailure::Protocol, e))?;
        if start.total_len > len_max {
            return Err(self.error(
                FetchFailure::TooLarge,
                format!(
                    "claims {} bytes, over the object limit of {len_max}",
                    start.total_len
                ),
            ));
        }
        let offset = GroupIndex(from).start_offset();
        if !answers_the_rest(&start, addr, offset, expect_len) {
            return Err(self.error(
                FetchFailure::Protocol,
                format!(
                    "asked for {addr} from byte {offset}, answered {} bytes {}+{} of {}",
                    start.obj, start.offset, start.len, start.total_len
                ),
            ));
        }
        self.total_len = start.total_len;
        if start.total_len == 0 {
            if addr != Address::of(b"") {
                return Err(self.error(FetchFailure::BadGroup, "says the object is empty"));
            }
            return Ok(());
        }
        let last = GroupIndex(group_count(start.total_len) - 1);
        let verifier = RangeVerifier::new(
            addr,
            start.total_len,
            GroupRange {
                first: GroupIndex(from),
                last,
            },
        )
        .map_err(|e| self.error(FetchFailure::Protocol, e))?;
        self.verifier = Some(verifier);
        Ok(())
    }

    /// The next verified group, in order.
    pub async fn next_group(&mut self, addr: Address) -> Result<Bytes, AttemptError> {
        match self.first.take() {
            Some(first) => Ok(first),
            None => self.receive_group(addr).await,
        }
    }

    /// Reads one DATA frame and checks its group against the tree above it. The whole
    /// group must arrive within the stall timeout, however the provider paces its bytes.
    async fn receive_group(&mut self, addr: Address) -> Result<Bytes, AttemptError> {
        let frame = self.expect_get_frame(Instant::now() + self.stall).await?;
        if frame.header.flags.contains(Flags::END) || frame.header.flags.contains(Flags::START) {
            return Err(self.error(
                FetchFailure::Protocol,
                format!("the answer ended before group {}", self.next),
            ));
        }
        let (data, parents, raw) = DataHeader::split_with_parents(&frame.payload)
            .map_err(|e| self.error(FetchFailure::Protocol, e))?;
        let group = GroupIndex(self.next);
        if data.offset != group.start_offset() || data.obj.is_some_and(|o| o != addr) {
            return Err(self.error(
                FetchFailure::Protocol,
                format!(
                    "DATA at offset {}, expected group {} at {}",
                    data.offset,
                    group.0,
                    group.start_offset()
                ),
            ));
        }
        let checked = match self.verifier.as_mut() {
            Some(verifier) => verifier.verify(group, &parents, &raw),
            None => return Err(self.error(FetchFailure::Protocol, "DATA for an empty object")),
        };
        checked.map_err(|e| self.error(FetchFailure::BadGroup, e))?;
        self.next += 1;
        Ok(raw)
    }

    /// The next frame of the GET; an error answer is a refusal.
    async fn expect_get_frame(&mut self, deadline: Instant) -> Result<Frame, AttemptError> {
        let frame = self.read_frame(deadline).await?;
        let ours = frame.header.corr_id == GET_CORR_ID && frame.header.flags.contains(Flags::RESP);
        if !ours || frame.header.code >= 400 {
            return Err(self.refused(&frame));
        }
        Ok(frame)
    }

    /// Whether `e` is a provider's own "not found" (404): it holds no copy.
    pub fn says_not_held(e: &AttemptError) -> bool {
        e.reason == FetchFailure::Refused && e.detail.starts_with("answered code 404 ")
    }

    fn refused(&self, frame: &Frame) -> AttemptError {
        self.error(FetchFailure::Refused, refusal_detail(frame))
    }

    async fn read_frame(&mut self, deadline: Instant) -> Result<Frame, AttemptError> {
        loop {
            match self.reader.next_frame() {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(e) => return Err(self.error(FetchFailure::Protocol, e)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.error(
                    FetchFailure::Timeout,
                    format!("no whole frame within {} ms", self.stall.as_millis()),
                ));
            }
            // Each read waits at most what is left of the frame's deadline: a provider
            // trickling bytes just within the stall timeout held a frame for two.
            let _ = self
                .stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))));
            let n = self.stream.read(self.reader.read_buf()).await;
            let n = n.map_err(|e| self.io_error(e))?;
            if n == 0 {
                if let Err(e) = self.reader.end_of_stream() {
                    return Err(self.error(FetchFailure::Protocol, e));
                }
                return Err(self.error(FetchFailure::Protocol, "closed the connection"));
            }
            self.reader.filled(n);
        }
    }
}

/// Longest part of a provider's error message kept, bytes: it is copied into the
/// failure of every request waiting on the fetch, and a frame may carry 1 MiB of it.
const PEER_MESSAGE_BYTES_MAX: usize = 256;

/// What a provider's refusal says: its code and (the start of) its message.
fn refusal_detail(frame: &Frame) -> String {
    let parsed = serde_json::from_slice::<serde_json::Value>(&frame.payload).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()))
        .unwrap_or_default();
    format!(
        "answered code {} for corr_id {}: {}",
        frame.header.code,
        frame.header.corr_id,
        crate::refusal::cut_at_char_boundary(message, PEER_MESSAGE_BYTES_MAX)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A provider's ~1 MiB error message is kept to its first 256 bytes: before, each
    /// request waiting on the fetch was failed with a copy of all of it.
    #[test]
    fn a_providers_long_refusal_is_cut() {
        let message = "x".repeat((1 << 20) - 1_000);
        let payload = serde_json::json!({ "code": "not_found", "message": message });
        let meta = ron_codec::frame::FrameMeta {
            flags: ron_codec::frame::Flags::RESP | ron_codec::frame::Flags::END,
            code: 404,
            app_proto_id: ron_codec::frame::APP_OBJECTS,
            tenant_id: 0,
            corr_id: 7,
        };
        let body = bytes::Bytes::from(payload.to_string());
        let limit = ron_codec::frame::MAX_FRAME_BYTES;
        let frame = Frame::new(meta, bytes::Bytes::new(), body, limit).unwrap();
        let detail = refusal_detail(&frame);
        assert!(
            detail.starts_with("answered code 404 for corr_id 7: xxx"),
            "{detail}"
        );
        assert!(detail.len() < 300, "{}", detail.len());
    }

    /// A provider sending one byte every 600 ms, within a 700 ms stall timeout each,
    /// never a whole frame: the open ends at the frame's deadline (700 ms). Before, a
    /// read begun just before the deadline waited a whole stall more (1.2 s here; an
    /// audit of such a holder took about seven stalls).
    #[test]
    fn a_frame_trickled_within_the_stall_timeout_ends_at_its_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = listener.local_addr().unwrap();
        let trickler = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            for _ in 0..5 {
                if s.write_all(&[0]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(600));
            }
        });
        let stall = Duration::from_millis(700);
        let executor = glommio::LocalExecutorBuilder::default().make().unwrap();
        let (took, failed) = executor.run(async move {
            let started = Instant::now();
            let opened = PeerGet::open(peer, None, Address::of(b"x"), 0, None, 1 << 20, stall);
            let failed = opened.await.err().map(|e| e.reason);
            (started.elapsed(), failed)
        });
        assert_eq!(failed, Some(FetchFailure::Timeout));
        assert!(took < Duration::from_millis(1_000), "{took:?}");
        trickler.join().unwrap();
    }

    fn start(obj: Address, total_len: u64, offset: u64, len: u64) -> GetStart {
        GetStart {
            obj,
            total_len,
            offset,
            len,
            chunk: 0,
        }
    }

    #[test]
    fn a_start_answers_the_rest_only_with_lengths_that_add_up() {
        let addr = Address::of(b"the object");
        let other = Address::of(b"another");
        let group = GroupIndex(1).start_offset();
        let total = 3 * group;
        assert!(answers_the_rest(
            &start(addr, total, group, 2 * group),
            addr,
            group,
            None
        ));
        assert!(answers_the_rest(
            &start(addr, total, group, 2 * group),
            addr,
            group,
            Some(total)
        ));
        assert!(!answers_the_rest(
            &start(addr, total, group, 2 * group),
            addr,
            group,
            Some(1)
        ));
        assert!(!answers_the_rest(
            &start(other, total, group, 2 * group),
            addr,
            group,
            None
        ));
        assert!(!answers_the_rest(
            &start(addr, total, 0, total),
            addr,
            group,
            None
        ));
        assert!(answers_the_rest(&start(addr, 0, 0, 0), addr, 0, None));
        // A length whose sum with the offset overflows is refused (it was a panic in a
        // build with overflow checks).
        assert!(!answers_the_rest(
            &start(addr, total, group, u64::MAX),
            addr,
            group,
            None
        ));
    }
}
