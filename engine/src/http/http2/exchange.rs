//! One HTTP/2 stream presented to the HTTP/1.1 front end as a connection that carries one
//! request and closes (Apache httpd's mod_http2 serves its streams the same way). What
//! the front end reads is the request as an HTTP/1.1 head — the HEADERS' fields as
//! sent, the body's framing from `content-length` or else chunked — then the DATA
//! frames' bytes; what it writes is parsed back: its head becomes the stream's HEADERS
//! (hop-by-hop fields dropped, RFC 9113 §8.2.2), its body DATA frames sent as the
//! stream's flow-control window allows. So every route, limit and verification of
//! HTTP/1.1 holds unchanged on h2.
//!
//! Bounds: the head read back is at most [`RESPONSE_HEAD_BYTES_MAX`]; at most one DATA
//! frame of the request is held (flow-control capacity is released only as the front
//! end reads); what the response queues counts against its connection's send budget
//! ([`SendBudget`]); a write waits for window or budget at most the write timeout the front end sets
//! (its transfer deadline), a read for DATA at most its read timeout — a peer that
//! stops opening its window or sending its body is cut off as a stalled socket is.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncWrite, Future};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use ron_codec::http::head::{Method, HEADER_COUNT_MAX};
use ron_codec::http::reply::{parse_response_head, ReplyBody, ReplyParse};
use ron_io::stream::{SocketRef, Transport, WaitLimits, WriteMore};

use super::send_budget::{QueuedBytes, SendBudget};

/// The longest response head the front end writes (its own heads are a few hundred
/// bytes; this bounds a bug, not a client).
const RESPONSE_HEAD_BYTES_MAX: usize = 16 * 1024;
/// Most bytes handed to one DATA frame's send (h2 cuts frames at the peer's
/// SETTINGS_MAX_FRAME_SIZE itself).
const DATA_SEND_BYTES_MAX: usize = 64 * 1024;
/// A DATA frame shorter than this, or than what is left of the body, waits for its
/// stream's window to grow, for at most [`SMALL_WINDOW_WAIT`]: a client that opened its
/// windows a byte at a time (CVE-2019-9511) got a one-byte frame per 13-byte
/// WINDOW_UPDATE — an allocation, an h2 frame and a wake-up each.
const DATA_FRAME_BYTES_MIN: usize = 1024;
/// How long a window too small for a [`DATA_FRAME_BYTES_MIN`] frame is waited on before
/// what it allows is sent: a client with a small window still gets its bytes.
const SMALL_WINDOW_WAIT: Duration = Duration::from_millis(20);
/// Fields that describe one HTTP/1.1 connection, never sent on h2 (RFC 9113 §8.2.2).
const HOP_BY_HOP: [http::HeaderName; 6] = [
    http::header::CONNECTION,
    http::HeaderName::from_static("keep-alive"),
    http::HeaderName::from_static("proxy-connection"),
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::TE,
];

pub(super) struct Exchange {
    /// Request bytes ready for the front end: the head, then body bytes (chunk-framed
    /// when the request has no `content-length`).
    incoming: BytesMut,
    body: Option<RecvStream>,
    chunked: bool,
    respond: Option<SendResponse<QueuedBytes>>,
    /// The response's DATA side, once its head is sent with a body to follow.
    send: Option<SendStream<QueuedBytes>>,
    /// What the connection's streams may queue together.
    budget: Rc<SendBudget>,
    response_head: Vec<u8>,
    body_left: u64,
    request_is_head: bool,
    /// The whole response is sent (END_STREAM).
    finished: bool,
    limits: WaitLimits,
    /// Each direction's wait in progress: its timer and the limit it was set for.
    waits: [Option<(Duration, glommio::timer::Timer)>; 2],
    /// Since the stream's window became too small for a full frame ([`SMALL_WINDOW_WAIT`]).
    small_window: Option<glommio::timer::Timer>,
    peer: Option<SocketAddr>,
}

impl Exchange {
    pub fn new(
        request: http::Request<RecvStream>,
        respond: SendResponse<QueuedBytes>,
        budget: Rc<SendBudget>,
        peer: Option<SocketAddr>,
    ) -> Exchange {
        let (parts, body) = request.into_parts();
        let body_follows = !body.is_end_stream();
        let chunked = body_follows && !parts.headers.contains_key(http::header::CONTENT_LENGTH);
        let incoming = request_head(&parts, body_follows, chunked);
        Exchange {
            incoming,
            body: body_follows.then_some(body),
            chunked,
            respond: Some(respond),
            send: None,
            budget,
            response_head: Vec::new(),
            body_left: 0,
            request_is_head: parts.method == http::Method::HEAD,
            finished: false,
            limits: WaitLimits::default(),
            waits: [None, None],
            small_window: None,
            peer,
        }
    }

    /// Takes head bytes from `buf`; how many were the head's. A whole head is sent as
    /// HEADERS (an interim 1xx as informational HEADERS, after which the final head is
    /// collected anew).
    fn take_head(&mut self, buf: &[u8]) -> io::Result<usize> {
        let before = self.response_head.len();
        self.response_head.extend_from_slice(buf);
        let parsed = parse_response_head(&self.response_head, RESPONSE_HEAD_BYTES_MAX)
            .map_err(io::Error::other)?;
        let ReplyParse::Complete(reply) = parsed else {
            return Ok(buf.len());
        };
        // Only HEAD changes what follows a head (nothing), beside the status.
        let method = if self.request_is_head {
            Method::Head
        } else {
            Method::Get
        };
        let (head_len, status, body) = (reply.head_len, reply.status, reply.body(method));
        let response = h2_response(&self.response_head[..head_len], status)?;
        let respond = self.respond.as_mut().ok_or(io::ErrorKind::BrokenPipe)?;
        if reply.is_interim() {
            respond
                .send_informational(response)
                .map_err(io::Error::other)?;
            self.response_head.clear();
            return Ok(head_len - before);
        }
        let body_len = match body {
            ReplyBody::Empty => 0,
            ReplyBody::Length(len) => len,
            ReplyBody::Chunked | ReplyBody::UntilClose => {
                return Err(io::Error::other("a response body without Content-Length"))
            }
        };
        let send = respond
            .send_response(response, body_len == 0)
            .map_err(io::Error::other)?;
        self.respond = None;
        self.body_left = body_len;
        match body_len {
            0 => self.finished = true,
            _ => self.send = Some(send),
        }
        Ok(head_len - before)
    }

    /// Sends body bytes as the stream's window and the connection's send budget allow.
    fn poll_send_body(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.body_left == 0 {
            return Poll::Ready(Err(io::Error::other("bytes past the response's length")));
        }
        let want = buf
            .len()
            .min(DATA_SEND_BYTES_MAX)
            .min(usize::try_from(self.body_left).unwrap_or(usize::MAX));
        let Some(send) = self.send.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        };
        send.reserve_capacity(want);
        loop {
            let capacity = send.capacity();
            let small = capacity < want.min(DATA_FRAME_BYTES_MIN);
            if capacity > 0 && (!small || small_window_waited(&mut self.small_window, cx)) {
                let Some(data) = self.budget.queue(&buf[..capacity.min(want)], cx) else {
                    return self.poll_wait(cx, WRITE);
                };
                let n = data.len();
                self.body_left -= n as u64;
                let end = self.body_left == 0;
                send.send_data(data, end).map_err(io::Error::other)?;
                self.finished = end;
                self.waits[WRITE] = None;
                self.small_window = None;
                return Poll::Ready(Ok(n));
            }
            match send.poll_capacity(cx) {
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io::Error::other(e))),
                Poll::Ready(None) => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Poll::Pending => return self.poll_wait(cx, WRITE),
            }
        }
    }

    /// A wait that found nothing: `Pending`, or `TimedOut` once it has lasted the
    /// direction's limit. A limit set anew since the wait's timer was made (the caller
    /// polls once before it sets the limit of the wait it then makes) makes it anew: the
    /// wait lasts its own limit, not the previous wait's.
    fn poll_wait<T>(&mut self, cx: &mut Context<'_>, direction: usize) -> Poll<io::Result<T>> {
        let limit = match direction {
            READ => self.limits.read(),
            _ => self.limits.write(),
        };
        let Some(limit) = limit else {
            return Poll::Pending;
        };
        let wait = &mut self.waits[direction];
        if wait.as_ref().is_some_and(|(set_for, _)| *set_for != limit) {
            *wait = None;
        }
        let (_, timer) = wait.get_or_insert_with(|| {
            (
                limit,
                glommio::timer::Timer::new(limit.max(Duration::from_millis(1))),
            )
        });
        match Pin::new(timer).poll(cx) {
            Poll::Ready(_) => {
                self.waits[direction] = None;
                Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn take_data(&mut self, data: &Bytes) {
        append_body_bytes(&mut self.incoming, self.chunked, data);
    }
}

/// Whether the stream's window has stayed too small for a full frame for
/// [`SMALL_WINDOW_WAIT`] (the wait begun at the first ask; `cx` woken when it ends).
fn small_window_waited(wait: &mut Option<glommio::timer::Timer>, cx: &mut Context<'_>) -> bool {
    let timer = wait.get_or_insert_with(|| glommio::timer::Timer::new(SMALL_WINDOW_WAIT));
    Pin::new(timer).poll(cx).is_ready()
}

/// Appends a DATA frame's bytes to the HTTP/1.1 request the exchange hands on: as one
/// chunk when the body is chunked. An empty DATA frame adds nothing: as a chunk it
/// would be `0\r\n\r\n`, the end of the body (the stream's end says that).
fn append_body_bytes(incoming: &mut BytesMut, chunked: bool, data: &[u8]) {
    match (chunked, data.is_empty()) {
        (_, true) => {}
        (true, false) => {
            incoming.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            incoming.extend_from_slice(data);
            incoming.extend_from_slice(b"\r\n");
        }
        (false, false) => incoming.extend_from_slice(data),
    }
}

const READ: usize = 0;
const WRITE: usize = 1;

/// A response head's status and fields as an h2 response, hop-by-hop fields dropped.
fn h2_response(head: &[u8], status: u16) -> io::Result<http::Response<()>> {
    let mut fields = [httparse::EMPTY_HEADER; HEADER_COUNT_MAX];
    let mut parsed = httparse::Response::new(&mut fields);
    parsed.parse(head).map_err(io::Error::other)?;
    let mut response = http::Response::new(());
    *response.status_mut() = http::StatusCode::from_u16(status).map_err(io::Error::other)?;
    let headers = response.headers_mut();
    for field in parsed.headers.iter() {
        // Standard names are recognised without an allocation, in any case.
        let name = http::HeaderName::from_bytes(field.name.as_bytes()).map_err(io::Error::other)?;
        if !HOP_BY_HOP.contains(&name) {
            let value = http::HeaderValue::from_bytes(field.value).map_err(io::Error::other)?;
            headers.append(name, value);
        }
    }
    Ok(response)
}

/// The request as an HTTP/1.1 head: its fields as sent (`Host` from `:authority`), the
/// body's framing, and `Connection: close` (one request per stream).
fn request_head(parts: &http::request::Parts, body_follows: bool, chunked: bool) -> BytesMut {
    let mut head = BytesMut::with_capacity(512);
    let target = parts
        .uri
        .path_and_query()
        .map_or("*", http::uri::PathAndQuery::as_str);
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.extend_from_slice(b" ");
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    let authority = parts.uri.authority();
    if let Some(authority) = authority {
        field(&mut head, "host", authority.as_str().as_bytes());
    }
    for (name, value) in &parts.headers {
        let skip = (authority.is_some() && name == http::header::HOST)
            || (!body_follows && name == http::header::CONTENT_LENGTH)
            || name == http::header::EXPECT;
        if !skip {
            field(&mut head, name.as_str(), value.as_bytes());
        }
    }
    if chunked {
        field(&mut head, "transfer-encoding", b"chunked");
    } else if !body_follows && matches!(parts.method, http::Method::PUT | http::Method::POST) {
        field(&mut head, "content-length", b"0");
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

fn field(head: &mut BytesMut, name: &str, value: &[u8]) {
    head.extend_from_slice(name.as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

impl AsyncRead for Exchange {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            if !this.incoming.is_empty() {
                let n = buf.len().min(this.incoming.len());
                buf[..n].copy_from_slice(&this.incoming.split_to(n));
                return Poll::Ready(Ok(n));
            }
            let Some(body) = this.body.as_mut() else {
                return Poll::Ready(Ok(0));
            };
            match body.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    // The window reopens as the front end takes the bytes: one frame
                    // is held here at most.
                    let _ = body.flow_control().release_capacity(data.len());
                    this.take_data(&data);
                    this.waits[READ] = None;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io::Error::other(e))),
                Poll::Ready(None) => {
                    if this.chunked {
                        this.incoming.extend_from_slice(b"0\r\n\r\n");
                    }
                    this.body = None;
                }
                Poll::Pending => return this.poll_wait(cx, READ),
            }
        }
    }
}

impl AsyncWrite for Exchange {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(Err(io::Error::other("bytes past the response's end")));
        }
        if this.send.is_none() {
            return Poll::Ready(this.take_head(buf));
        }
        this.poll_send_body(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection's task writes the frames out.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.finished {
            true => Poll::Ready(Ok(())),
            false => Poll::Ready(Err(io::Error::other("closed before the response's end"))),
        }
    }
}

/// A response cut short (the front end aborted, or closed early) resets the stream: the
/// client sees an error, never a short body taken for a whole one.
impl Drop for Exchange {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(send) = self.send.as_mut() {
            send.send_reset(Reason::INTERNAL_ERROR);
        } else if let Some(respond) = self.respond.as_mut() {
            respond.send_reset(Reason::INTERNAL_ERROR);
        }
    }
}

impl Transport for Exchange {
    fn tcp(&self) -> SocketRef<'_> {
        SocketRef::limited(self.peer, &self.limits)
    }
}

impl WriteMore for Exchange {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_data_frame_adds_nothing_to_a_chunked_body() {
        let mut incoming = BytesMut::new();
        append_body_bytes(&mut incoming, true, b"abc");
        append_body_bytes(&mut incoming, true, b"");
        append_body_bytes(&mut incoming, true, b"def");
        assert_eq!(&incoming[..], b"3\r\nabc\r\n3\r\ndef\r\n");
        let mut plain = BytesMut::new();
        append_body_bytes(&mut plain, false, b"abc");
        append_body_bytes(&mut plain, false, b"");
        assert_eq!(&plain[..], b"abc");
    }

    fn parts(method: &str, uri: &str, fields: &[(&str, &str)]) -> http::request::Parts {
        let mut request = http::Request::builder().method(method).uri(uri);
        for (name, value) in fields {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_request_reads_as_its_http1_head() {
        let get = parts(
            "GET",
            "https://n.example/o/b3:ab?x=1",
            &[("range", "bytes=0-9"), ("accept", "*/*")],
        );
        assert_eq!(
            &request_head(&get, false, false)[..],
            b"GET /o/b3:ab?x=1 HTTP/1.1\r\nhost: n.example\r\nrange: bytes=0-9\r\naccept: */*\r\nconnection: close\r\n\r\n"
        );
        let put = parts("PUT", "https://n.example/o", &[("expect", "100-continue")]);
        assert_eq!(
            &request_head(&put, true, true)[..],
            b"PUT /o HTTP/1.1\r\nhost: n.example\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
        let empty_put = parts("PUT", "https://n.example/o", &[]);
        assert!(request_head(&empty_put, false, false)
            .ends_with(b"content-length: 0\r\nconnection: close\r\n\r\n"));
    }
}
