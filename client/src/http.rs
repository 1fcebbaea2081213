//! HTTP/1.1 over a blocking stream, keep-alive, one request at a time.
//!
//! A GET asks for the bao encoding (`Accept: application/x-bao; chunk-group-log=6`, and
//! a Range for a range): each 64 KiB leaf is checked against the address through the
//! parents before it as it arrives, and only checked bytes reach the sink — a range
//! costs the range (and 64 bytes a level), never the whole object.

use std::io::{Read, Write};

use ron_codec::bao::{ChunkGroupLog, Decoded, SliceAsk, SliceDecoder};
use ron_codec::http::accept::BAO_MEDIA_TYPE;
use ron_codec::http::reply::{parse_response_head, ReplyParse};
use ron_codec::Address;

use crate::error::ClientError;
use crate::transport::{connect, BodyDeadline, Deadline, Endpoint, Stream};
use crate::{ByteRange, Fetched, Options, Progress, Stored};

/// Longest response head accepted.
const HEAD_BYTES_MAX: usize = ron_codec::http::head::HEAD_LEN_MAX_DEFAULT;
/// The chunk-group log `ron get --http` asks for: ron's own 64 KiB group, whose
/// parents the node looks up without hashing (0.1 % of the bytes on the wire).
const BAO_LOG: ChunkGroupLog = ChunkGroupLog::GROUP;

/// Interim (1xx) heads skipped before a final one: a node sending them forever kept
/// every read succeeding, so the read timeout never ended the wait.
const INTERIM_HEADS_MAX: usize = 8;

/// Longest error or JSON body read into memory.
const SMALL_BODY_BYTES_MAX: u64 = 64 * 1024;

#[derive(Debug)]
pub struct HttpClient {
    stream: Box<dyn Stream>,
    addr: String,
    options: Options,
    /// Bytes read past the last response head.
    buffered: Vec<u8>,
}

/// What the client keeps of a response head (the codec's `Reply` borrows the buffer).
struct Head {
    status: u16,
    content_length: Option<u64>,
    chunked: bool,
    content_type: Option<Vec<u8>>,
}

impl HttpClient {
    pub fn connect(endpoint: &Endpoint, options: Options) -> Result<HttpClient, ClientError> {
        Ok(HttpClient {
            stream: connect(endpoint, options.timeout)?,
            addr: endpoint.addr.clone(),
            options,
            buffered: Vec::new(),
        })
    }

    fn protocol(&self, reason: impl ToString) -> ClientError {
        ClientError::Protocol {
            addr: self.addr.clone(),
            reason: reason.to_string(),
        }
    }

    fn send_head(&mut self, method: &str, path: &str, extra: &str) -> Result<(), ClientError> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {}\r\n{extra}\r\n",
            self.addr, self.options.user_agent
        );
        self.stream
            .write_all(head.as_bytes())
            .map_err(ClientError::io(&self.addr, "send"))
    }

    /// Reads the next final response head (up to [`INTERIM_HEADS_MAX`] interim 1xx
    /// heads are skipped).
    fn read_head(&mut self) -> Result<Head, ClientError> {
        let deadline = Deadline::after(self.options.timeout);
        deadline.arm(&*self.stream);
        let head = self.read_head_by_deadline();
        deadline.disarm(&*self.stream);
        head
    }

    /// [`HttpClient::read_head`], the stream's deadline armed: whole (interim heads
    /// included) by then.
    fn read_head_by_deadline(&mut self) -> Result<Head, ClientError> {
        let mut interim_heads = 0;
        loop {
            match parse_response_head(&self.buffered, HEAD_BYTES_MAX) {
                Ok(ReplyParse::Complete(reply)) => {
                    let head = Head {
                        status: reply.status,
                        content_length: reply.content_length,
                        chunked: reply.chunked,
                        content_type: reply.content_type.map(<[u8]>::to_vec),
                    };
                    let interim = reply.is_interim();
                    self.buffered.drain(..reply.head_len);
                    if interim {
                        interim_heads += 1;
                        if interim_heads > INTERIM_HEADS_MAX {
                            return Err(self.protocol(format!(
                                "more than {INTERIM_HEADS_MAX} interim (1xx) answers before the final one"
                            )));
                        }
                        continue;
                    }
                    return Ok(head);
                }
                Ok(ReplyParse::Partial) => {}
                Err(e) => return Err(self.protocol(e)),
            }
            let mut chunk = [0u8; 8192];
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(ClientError::io(&self.addr, "receive a response head"))?;
            if n == 0 {
                return Err(ClientError::io(&self.addr, "receive")(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
            self.buffered.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads exactly `len` body bytes into `sink`.
    fn read_body(
        &mut self,
        len: u64,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        let mut left = len;
        let take = (self.buffered.len() as u64).min(left) as usize;
        if take > 0 {
            let first: Vec<u8> = self.buffered.drain(..take).collect();
            sink(&first)?;
            left -= take as u64;
        }
        let mut buf = vec![0u8; 256 * 1024];
        let deadline = BodyDeadline::starting(self.options.timeout);
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            deadline.arm(&*self.stream, len - left);
            let n = self
                .stream
                .read(&mut buf[..want])
                .map_err(ClientError::io(&self.addr, "receive the body"))?;
            if n == 0 {
                return Err(ClientError::io(&self.addr, "receive")(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
            sink(&buf[..n])?;
            left -= n as u64;
        }
        deadline.disarm(&*self.stream);
        Ok(())
    }

    fn small_body(&mut self, head: &Head) -> Result<Vec<u8>, ClientError> {
        if head.chunked {
            return Err(self.protocol("answered with a chunked body"));
        }
        let len = head.content_length.unwrap_or(0);
        if len > SMALL_BODY_BYTES_MAX {
            return Err(self.protocol(format!("unexpected {len}-byte body")));
        }
        let mut body = Vec::new();
        self.read_body(len, &mut |b| {
            body.extend_from_slice(b);
            Ok(())
        })?;
        Ok(body)
    }

    fn error_of(&mut self, head: &Head) -> Result<ClientError, ClientError> {
        let body = self.small_body(head)?;
        Ok(ClientError::from_envelope(head.status, &body))
    }

    fn auth_header(&self) -> String {
        self.options
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default()
    }

    /// `PUT /o/<addr>`: the node checks the body against `addr`.
    pub fn put(
        &mut self,
        body: &mut dyn Read,
        addr: Address,
        len: u64,
        progress: Progress<'_>,
    ) -> Result<Stored, ClientError> {
        let extra = format!("Content-Length: {len}\r\n{}", self.auth_header());
        let target = match self.options.copies {
            Some(n) => format!("/o/{addr}?copies={n}"),
            None => format!("/o/{addr}"),
        };
        self.send_head("PUT", &target, &extra)?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut sent = 0u64;
        while sent < len {
            let want = (len - sent).min(buf.len() as u64) as usize;
            body.read_exact(&mut buf[..want])
                .map_err(ClientError::Input)?;
            if let Err(source) = self.stream.write_all(&buf[..want]) {
                // The node may have refused early (401, 413) and closed: its answer
                // says more than the broken pipe.
                return match self.read_head() {
                    Ok(head) if head.status >= 400 => Err(self.error_of(&head)?),
                    _ => Err(ClientError::io(&self.addr, "send")(source)),
                };
            }
            sent += want as u64;
            progress(sent);
        }
        let head = self.read_head()?;
        if head.status >= 400 {
            return Err(self.error_of(&head)?);
        }
        let reply = self.small_body(&head)?;
        #[derive(serde::Deserialize)]
        struct Reply {
            obj: Address,
            len: u64,
            #[serde(default)]
            copies: Option<usize>,
        }
        let reply: Reply = serde_json::from_slice(&reply).map_err(|e| self.protocol(e))?;
        if reply.obj != addr || reply.len != len {
            return Err(self.protocol(format!("node stored {} ({} bytes)", reply.obj, reply.len)));
        }
        Ok(Stored {
            addr,
            len,
            created: head.status == 201,
            copies: reply.copies,
        })
    }

    /// `GET /o/<addr>` of the object's bao encoding (or the slice proving `range`):
    /// each leaf checked before its bytes inside the range go to `sink`.
    pub fn get(
        &mut self,
        addr: Address,
        range: Option<ByteRange>,
        sink: &mut dyn Write,
        progress: Progress<'_>,
    ) -> Result<Fetched, ClientError> {
        let mut extra = format!(
            "Accept: {BAO_MEDIA_TYPE}; chunk-group-log={}\r\n",
            BAO_LOG.get()
        );
        if let Some(r) = range {
            extra.push_str(&format!("Range: bytes={}-{}\r\n", r.first, r.last));
        }
        extra.push_str(&self.auth_header());
        self.send_head("GET", &format!("/o/{addr}"), &extra)?;
        let head = self.read_head()?;
        if head.status >= 400 {
            return Err(self.error_of(&head)?);
        }
        let encoded_len = self.check_bao_head(&head)?;
        let ask = match range {
            None => SliceAsk::Whole,
            Some(r) => SliceAsk::From {
                first: r.first,
                last: Some(r.last),
            },
        };
        let mut slice = VerifiedSlice::new(addr, ask, self.addr.clone()).announcing(encoded_len);
        let mut received = 0u64;
        self.read_body(encoded_len, &mut |bytes| {
            received += bytes.len() as u64;
            progress(received);
            slice.feed(bytes, sink)
        })?;
        slice.finish(sink)
    }

    /// A bao answer, or why this is not one (a 206 is a proxy's byte range of it).
    fn check_bao_head(&self, head: &Head) -> Result<u64, ClientError> {
        let want = format!("{BAO_MEDIA_TYPE}; chunk-group-log={}", BAO_LOG.get());
        if head.status != 200 || head.content_type.as_deref() != Some(want.as_bytes()) {
            let media = head.content_type.as_deref().map(String::from_utf8_lossy);
            return Err(self.protocol(format!(
                "answered {} {} instead of a bao answer ({want}): a node before bao, or a \
                 proxy that cut the encoding into a byte range",
                head.status,
                media.as_deref().unwrap_or("without a Content-Type"),
            )));
        }
        if head.chunked {
            return Err(self.protocol("answered with a chunked body"));
        }
        head.content_length
            .ok_or_else(|| self.protocol("GET answered without Content-Length"))
    }

    /// `HEAD /o/<addr>`: the object's length.
    pub fn stat(&mut self, addr: Address) -> Result<u64, ClientError> {
        let auth = self.auth_header();
        self.send_head("HEAD", &format!("/o/{addr}"), &auth)?;
        let head = self.read_head()?;
        if head.status >= 400 {
            // A HEAD answer has no body even when it announces one.
            return Err(ClientError::Server {
                status: head.status,
                code: if head.status == 404 {
                    "not_found"
                } else {
                    "error"
                }
                .into(),
                message: format!("HEAD /o/{addr} answered {}", head.status),
                retryable: false,
                retry_after_ms: None,
            });
        }
        head.content_length
            .ok_or_else(|| self.protocol("HEAD answered without Content-Length"))
    }
}

/// A bao answer being checked: bytes received and not yet a whole piece, and the
/// decoder's progress; only checked bytes within the asked range reach the sink.
struct VerifiedSlice {
    addr: Address,
    /// The node answering (named in protocol errors).
    node: String,
    decoder: SliceDecoder,
    pending: Vec<u8>,
    /// The bytes to write (`first..=last`), known once the length header is read.
    wanted: Option<(u64, u64)>,
    ask: SliceAsk,
    total_len: u64,
    written: u64,
    /// The body's length as the head announced it, held to the encoding's once its
    /// walk is over.
    announced: Option<u64>,
    /// Bytes fed so far.
    fed: u64,
}

impl VerifiedSlice {
    fn new(addr: Address, ask: SliceAsk, node: String) -> VerifiedSlice {
        VerifiedSlice {
            addr,
            node,
            decoder: SliceDecoder::new(addr, BAO_LOG, ask),
            pending: Vec::new(),
            wanted: None,
            ask,
            total_len: 0,
            written: 0,
            announced: None,
            fed: 0,
        }
    }

    /// Holds the answer's announced body length to the encoding's: a node announcing
    /// more and then sending nothing kept the client waiting out its timeout after every
    /// byte had verified (and the error did not say why).
    fn announcing(mut self, body_len: u64) -> VerifiedSlice {
        self.announced = Some(body_len);
        self
    }

    fn fail(&self, reason: String) -> ClientError {
        ClientError::Verification {
            addr: self.addr.to_string(),
            reason,
        }
    }

    fn broken(&self, reason: &str) -> ClientError {
        ClientError::Protocol {
            addr: self.node.clone(),
            reason: reason.into(),
        }
    }

    /// Takes received bytes; checks and writes every whole piece among them. Bytes past
    /// the end of the walk fail at once: a node announcing a longer body than its
    /// encoding would otherwise have them all held in memory until the end.
    /// Memory: less than one piece (a group, or a parent) and `bytes`.
    fn feed(&mut self, bytes: &[u8], sink: &mut dyn Write) -> Result<(), ClientError> {
        self.fed += bytes.len() as u64;
        self.pending.extend_from_slice(bytes);
        let mut used = 0;
        while let Some(n) = self.decoder.wanted() {
            let Some(piece) = self.pending.get(used..used + n) else {
                break;
            };
            let step = self.decoder.step(piece);
            let decoded = step.map_err(|e| self.fail(e.to_string()))?;
            let piece = &self.pending[used..used + n];
            match decoded {
                Decoded::Length(len) => {
                    self.total_len = len;
                    self.wanted = self.ask.resolve(len);
                }
                Decoded::Data { offset } => {
                    let (first, last) = self.wanted.unwrap_or((1, 0));
                    let from = first.saturating_sub(offset).min(n as u64) as usize;
                    let to = (last + 1).saturating_sub(offset).min(n as u64) as usize;
                    if from < to {
                        sink.write_all(&piece[from..to])
                            .map_err(ClientError::Output)?;
                        self.written += (to - from) as u64;
                    }
                }
                Decoded::Parent => {}
            }
            used += n;
        }
        self.pending.drain(..used);
        if self.decoder.wanted().is_none() && !self.pending.is_empty() {
            self.pending = Vec::new();
            return Err(self.broken("the bao answer runs past the end of its encoding"));
        }
        // The walk is over, every byte of it verified: an answer announcing more is the
        // node's framing, said now rather than after the timeout.
        match self.announced {
            Some(announced) if self.decoder.wanted().is_none() && self.fed < announced => Err(self
                .broken(&format!(
                    "the answer announces {announced} bytes; its encoding ends at {}",
                    self.fed
                ))),
            _ => Ok(()),
        }
    }

    /// The answer is over: whole, with nothing after it.
    fn finish(mut self, sink: &mut dyn Write) -> Result<Fetched, ClientError> {
        self.feed(&[], sink)?;
        if self.decoder.wanted().is_some() {
            return Err(self.broken("the bao answer ended before its encoding did"));
        }
        Ok(Fetched {
            total_len: self.total_len,
            len: self.written,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_node::{serve, trickle};
    use crate::transport::Protocol;
    use std::time::Duration;

    /// A node answering one request with `answer`, a byte at a time.
    fn answering(answer: &'static [u8]) -> (HttpClient, std::thread::JoinHandle<()>) {
        let (endpoint, node) = serve(Protocol::Http, move |mut stream| {
            // The whole request head is read first: unread bytes would make the close
            // a reset, which may discard the answer before the client reads it.
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                request.push(byte[0]);
            }
            trickle(&mut stream, answer);
        });
        (
            HttpClient::connect(&endpoint, Options::default()).unwrap(),
            node,
        )
    }

    /// A node announcing more body than its encoding has: the bytes past the walk's
    /// end fail the answer at once (before, every byte up to the announced length was
    /// held in memory, and the failure came at its end); one that ends before the walk
    /// is a protocol error (exit 3), not a failed verification.
    #[test]
    fn a_bao_answer_past_or_short_of_its_encoding_is_a_protocol_error() {
        let addr = Address::of(b"x");
        let mut encoding = 1u64.to_le_bytes().to_vec();
        encoding.push(b'x');
        let mut out = Vec::new();
        let mut slice = VerifiedSlice::new(addr, SliceAsk::Whole, "node".into());
        slice.feed(&encoding, &mut out).unwrap();
        assert_eq!(out, b"x");
        let err = slice.feed(&[0u8; 64 * 1024], &mut out).unwrap_err();
        assert_eq!(
            err.to_string(),
            "protocol error from node: the bao answer runs past the end of its encoding"
        );
        assert!(slice.pending.is_empty(), "nothing past the end kept");
        let mut short = VerifiedSlice::new(addr, SliceAsk::Whole, "node".into());
        short.feed(&encoding[..8], &mut out).unwrap();
        let err = short.finish(&mut out).unwrap_err();
        assert_eq!(err.exit_code(), 3, "{err}");
    }

    #[test]
    fn an_announced_length_other_than_the_encodings_is_a_protocol_error() {
        let addr = Address::of(b"x");
        let mut encoding = 1u64.to_le_bytes().to_vec();
        encoding.push(b'x');
        let mut slice = VerifiedSlice::new(addr, SliceAsk::Whole, "node".into()).announcing(1000);
        let err = slice.feed(&encoding, &mut Vec::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "protocol error from node: the answer announces 1000 bytes; its encoding ends at 9"
        );
        let mut exact = VerifiedSlice::new(addr, SliceAsk::Whole, "node".into()).announcing(9);
        let mut out = Vec::new();
        exact.feed(&encoding, &mut out).unwrap();
        exact.finish(&mut out).unwrap();
        assert_eq!(out, b"x");
    }

    /// A node trickling its body a byte every 20 ms (each read within the timeout) is
    /// cut off once the body falls below the minimum rate after the timeout's grace,
    /// naming why. Before, only each read was timed: a 1 GiB bao answer trickled so held
    /// the client for good.
    #[test]
    fn a_body_trickled_below_the_minimum_rate_is_a_timeout() {
        let (endpoint, node) = serve(Protocol::Http, move |mut stream| {
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                request.push(byte[0]);
            }
            let head = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 60000\r\n\r\n";
            stream.write_all(head).unwrap();
            for _ in 0..200 {
                std::thread::sleep(Duration::from_millis(20));
                if stream.write_all(b" ").is_err() {
                    return;
                }
            }
        });
        let options = Options {
            timeout: Duration::from_millis(300),
            ..Options::default()
        };
        let mut client = HttpClient::connect(&endpoint, options).unwrap();
        let started = std::time::Instant::now();
        let err = client
            .get(Address::of(b"x"), None, &mut Vec::new(), &mut |_| {})
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2), "{err}");
        assert!(
            err.to_string()
                .contains("the body fell below 4096 bytes/s after"),
            "{err}"
        );
        drop(client);
        node.join().unwrap();
    }

    #[test]
    fn interim_heads_are_skipped_and_the_length_read() {
        let (mut client, node) = answering(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 42\r\nETag: \"x\"\r\n\r\n",
        );
        assert_eq!(client.stat(Address::of(b"x")).unwrap(), 42);
        node.join().unwrap();
    }

    /// A node answering 1xx heads forever is a protocol error after a few: before, each
    /// one was a read that succeeded, and the client waited for good.
    #[test]
    fn endless_interim_heads_are_a_protocol_error() {
        let answer = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(INTERIM_HEADS_MAX + 1);
        let (mut client, node) = answering(Box::leak(answer.into_boxed_slice()));
        let err = client.stat(Address::of(b"x")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "protocol error from {}: more than 8 interim (1xx) answers before the final one",
                client.addr
            )
        );
        node.join().unwrap();
    }

    #[test]
    fn a_malformed_head_is_a_protocol_error_naming_the_fault() {
        let (mut client, node) =
            answering(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        let err = client.stat(Address::of(b"x")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "protocol error from {}: malformed response head: repeated Content-Length",
                client.addr
            )
        );
        node.join().unwrap();
    }

    #[test]
    fn an_error_answer_carries_the_nodes_envelope() {
        let (mut client, node) = answering(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 46\r\n\r\n{\"code\":\"not_found\",\"message\":\"no such thing\"}",
        );
        let err = client
            .get(Address::of(b"x"), None, &mut std::io::sink(), &mut |_| {})
            .unwrap_err();
        assert!(
            matches!(&err, ClientError::Server { status: 404, code, message, .. }
                if code == "not_found" && message == "no such thing"),
            "{err}"
        );
        node.join().unwrap();
    }
}
