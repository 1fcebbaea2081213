//! The HTTP/1.1 front end: one task per connection on the shard that accepted it.
//!
//! A connection is a loop: read a head (idle timeout before its first byte, header
//! timeout until its last), extract what the request needs into a small owned
//! [`Request`], answer it, repeat. Pipelined requests stay in the read buffer and are
//! answered in order; the task is the socket's only writer. Object bytes come from the
//! shard as whole verified 64 KiB groups; the first group is fetched before the head is
//! written, so a rotten first group is a clean 500, and a rotten later group aborts the
//! connection (no wrong or padded byte is ever sent).

use std::cell::{Cell, RefCell};
use std::io;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use ron_codec::http::chunked::{ChunkedDecoder, ChunkedStep};
use ron_codec::http::head::{parse_request_head, BodyFraming, HeadParse, Method, RequestHead};
use ron_codec::http::range::{ByteRange, RangeResolution, RangeSet};
use ron_codec::http::response::{http_date, is_safe_header_value, ResponseHead, HTTP_DATE_LEN};
use ron_codec::tree::{GroupIndex, GROUP_LEN_BYTES};
use ron_codec::{Address, Envelope, ErrorCode};
use ron_io::stream::Transport;

use crate::admission::{Admission, Identity};
use ron_shards::metrics::{Op, Protocol};
use ron_shards::{CommitOutcome, ObjectMeta, Shard, ShardError, ShardMetrics};

/// Longest X-Corr-ID echoed back; longer or unsafe ones are replaced.
const CORR_ID_LEN_MAX: usize = 64;
const CACHE_CONTROL: &[u8] = b"public, max-age=31536000, immutable";
const DEFAULT_CONTENT_TYPE: &[u8] = b"application/octet-stream";
/// A body slice of at most this many bytes is copied behind the head (one send).
const COALESCE_BODY_BYTES_MAX: usize = 16 * 1024;
/// A body of at most this many bytes (e.g. a 64 KiB range across two groups) has all
/// its groups fetched and verified before the head is written.
const VERIFY_BEFORE_HEAD_BYTES_MAX: u64 = 128 * 1024;

/// Limits and policy of the HTTP front end, fixed at start-up.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub head_bytes_max: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
    pub object_bytes_max: u64,
}

/// Per-shard state shared by its connections.
pub struct HttpContext {
    pub shard: Rc<Shard>,
    pub admission: Rc<Admission>,
    pub limits: HttpLimits,
    /// Set when the node is shutting down: answers carry `Connection: close`.
    pub draining: Rc<Cell<bool>>,
    corr_seq: Cell<u64>,
    date: RefCell<(u64, [u8; HTTP_DATE_LEN])>,
}

impl std::fmt::Debug for HttpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpContext")
            .field("shard", &self.shard.index())
            .field("inflight", &self.admission.inflight())
            .finish()
    }
}

impl HttpContext {
    pub fn new(
        shard: Rc<Shard>,
        admission: Rc<Admission>,
        limits: HttpLimits,
        draining: Rc<Cell<bool>>,
    ) -> Self {
        HttpContext {
            shard,
            admission,
            limits,
            draining,
            corr_seq: Cell::new(0),
            date: RefCell::new((u64::MAX, [0; HTTP_DATE_LEN])),
        }
    }

    fn metrics(&self) -> &ShardMetrics {
        self.shard.metrics()
    }

    /// The Date header value, formatted at most once a second per shard.
    fn date(&self) -> [u8; HTTP_DATE_LEN] {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut cached = self.date.borrow_mut();
        if cached.0 != now {
            *cached = (now, http_date(now));
        }
        cached.1
    }

    fn new_corr_id(&self) -> CorrId {
        let seq = self.corr_seq.get();
        self.corr_seq.set(seq + 1);
        let mut id = CorrId::default();
        let text = format_args!("{:x}-{:x}", self.shard.index().0, seq);
        id.set_fmt(text);
        id
    }
}

/// An X-Corr-ID kept inline (no allocation per request).
#[derive(Clone, Copy)]
struct CorrId {
    bytes: [u8; CORR_ID_LEN_MAX],
    len: usize,
}

impl Default for CorrId {
    fn default() -> Self {
        CorrId {
            bytes: [0; CORR_ID_LEN_MAX],
            len: 0,
        }
    }
}

impl CorrId {
    fn from_request(value: &[u8]) -> Option<CorrId> {
        if value.is_empty() || value.len() > CORR_ID_LEN_MAX || !is_safe_header_value(value) {
            return None;
        }
        let mut id = CorrId::default();
        id.bytes[..value.len()].copy_from_slice(value);
        id.len = value.len();
        Some(id)
    }

    fn set_fmt(&mut self, args: std::fmt::Arguments<'_>) {
        use std::io::Write;
        let mut cursor = &mut self.bytes[..];
        let before = cursor.len();
        let _ = cursor.write_fmt(args);
        self.len = before - cursor.len();
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

/// What the router needs from a head, owned, so the read buffer can move on.
struct Request {
    method: Method,
    route: Route,
    body: BodyFraming,
    keep_alive: bool,
    expect_continue: bool,
    range: Option<RangeSet>,
    /// If-Range present and not our ETag: serve the whole object.
    if_range_failed: bool,
    if_none_match: Option<IfNoneMatch>,
    identity: Identity,
    content_type: Option<String>,
    corr_id: CorrId,
}

enum Route {
    /// `/o`
    Objects,
    /// `/o/<addr>`
    Object(Address),
    /// `/o/<something that is not an address>`
    BadAddress(String),
    Unknown,
}

enum IfNoneMatch {
    Any,
    Tags(Vec<u8>),
}

impl IfNoneMatch {
    /// Weak comparison (RFC 9110 §13.1.2): `W/` prefixes are ignored.
    fn matches(&self, etag: &[u8]) -> bool {
        match self {
            IfNoneMatch::Any => true,
            IfNoneMatch::Tags(list) => list
                .split(|&b| b == b',')
                .map(ron_codec::http::head::trim)
                .map(|t| t.strip_prefix(b"W/").unwrap_or(t))
                .any(|t| t == etag),
        }
    }
}

fn quoted_etag(addr: &Address) -> [u8; 69] {
    let mut out = [b'"'; 69];
    out[1..68].copy_from_slice(&addr.text());
    out
}

impl Request {
    fn op(&self) -> Op {
        match (&self.route, self.method) {
            (Route::Object(_), Method::Get) => Op::Get,
            (Route::Object(_), Method::Head) => Op::Head,
            (Route::Objects | Route::Object(_), Method::Put | Method::Post) => Op::Put,
            _ => Op::Other,
        }
    }

    fn from_head(head: &RequestHead<'_>, ctx: &HttpContext, peer: Option<IpAddr>) -> Request {
        let path = head.path();
        let route = match path.strip_prefix("/o") {
            Some("") => Route::Objects,
            Some(rest) => match rest.strip_prefix('/') {
                Some(text) => match Address::parse(text.as_bytes()) {
                    Ok(addr) => Route::Object(addr),
                    Err(e) => Route::BadAddress(e.to_string()),
                },
                None => Route::Unknown,
            },
            None => Route::Unknown,
        };
        let etag = match &route {
            Route::Object(addr) => Some(quoted_etag(addr)),
            _ => None,
        };
        let if_range_failed = match (head.if_range, &etag) {
            (Some(v), Some(tag)) => ron_codec::http::head::trim(v) != &tag[..],
            (Some(_), None) => true,
            (None, _) => false,
        };
        let if_none_match = head.if_none_match.map(|v| {
            if ron_codec::http::head::trim(v) == b"*" {
                IfNoneMatch::Any
            } else {
                IfNoneMatch::Tags(v.to_vec())
            }
        });
        let token = head
            .authorization
            .and_then(|v| v.strip_prefix(b"Bearer "))
            .map(ron_codec::http::head::trim);
        let claim = head.tenant.map(ron_codec::http::head::trim);
        let identity = ctx.admission.identify(token, claim, peer);
        let content_type = head
            .content_type
            .filter(|v| !v.is_empty() && v.len() <= ron_shards::record::CONTENT_TYPE_LEN_MAX)
            .filter(|v| is_safe_header_value(v))
            .map(|v| String::from_utf8_lossy(v).into_owned());
        Request {
            method: head.method,
            route,
            body: head.body,
            keep_alive: head.keep_alive,
            expect_continue: head.expect_continue,
            range: head.range.and_then(RangeSet::parse),
            if_range_failed,
            if_none_match,
            identity,
            content_type,
            corr_id: head
                .corr_id
                .and_then(CorrId::from_request)
                .unwrap_or_else(|| ctx.new_corr_id()),
        }
    }
}

/// The read side of a connection: a fixed buffer sized at start-up.
struct ReadBuf {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    fn new(capacity: usize) -> ReadBuf {
        ReadBuf {
            data: vec![0; capacity].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads once from `stream`, returning the bytes read (0 at end of stream).
    async fn fill<S: Transport>(&mut self, stream: &mut S) -> io::Result<usize> {
        if self.end == self.data.len() {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = stream.read(&mut self.data[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

/// How a request ended for the connection.
enum After {
    KeepAlive,
    Close,
}

/// Why the connection must end right away (no further answer possible).
#[derive(Debug)]
struct Abort;

impl From<io::Error> for Abort {
    fn from(_: io::Error) -> Self {
        Abort
    }
}

struct Conn<S> {
    stream: S,
    rbuf: ReadBuf,
    wbuf: BytesMut,
    peer: Option<IpAddr>,
    /// Object bytes the current request moved (its charge to the tenant's byte quota).
    object_bytes: u64,
}

/// Serves one connection until it closes.
pub async fn serve_connection<S: Transport>(ctx: Rc<HttpContext>, stream: S) {
    let _ = stream.tcp().set_nodelay(true);
    let _ = stream
        .tcp()
        .set_write_timeout(Some(ctx.limits.body_timeout));
    let peer = stream.tcp().peer_addr().ok().map(|a| a.ip());
    let mut conn = Conn {
        stream,
        rbuf: ReadBuf::new(ctx.limits.head_bytes_max + GROUP_LEN_BYTES as usize),
        wbuf: BytesMut::with_capacity(4096),
        peer,
        object_bytes: 0,
    };
    ShardMetrics::add(&ctx.metrics().connections_open, 1);
    ShardMetrics::add(&ctx.metrics().connections_total, 1);
    while let Ok(After::KeepAlive) = serve_one(&ctx, &mut conn).await {}
    ctx.metrics()
        .connections_open
        .fetch_sub(1, Ordering::Relaxed);
    let _ = conn.stream.close().await;
}

/// Reads one head and answers it.
async fn serve_one<S: Transport>(ctx: &HttpContext, conn: &mut Conn<S>) -> Result<After, Abort> {
    let (request, head_len) = match read_head(ctx, conn).await? {
        HeadOutcome::Complete(request, len) => (request, len),
        HeadOutcome::Closed => return Ok(After::Close),
        HeadOutcome::Rejected(code, message) => {
            let corr = ctx.new_corr_id();
            let started = Instant::now();
            send_error(ctx, conn, code, &message, &corr, true).await?;
            ctx.admission
                .record(Protocol::Http, Op::Other, code.status(), started);
            return Ok(After::Close);
        }
    };
    let started = Instant::now();
    conn.rbuf.consume(head_len);
    ShardMetrics::add(&ctx.metrics().bytes_in, head_len as u64);

    let op = request.op();
    let ticket = match ctx
        .admission
        .admit(&request.identity.tenant, Protocol::Http, op, started)
    {
        Ok(ticket) => ticket,
        Err(refusal) => {
            // The request's body (if any) is not read: answer, then close.
            let close = !request.keep_alive || !body_is_empty(&request);
            let (code, message) = (refusal.code, refusal.message.as_str());
            let (corr, wait) = (&request.corr_id, refusal.retry_after_ms);
            send_error_with(ctx, conn, code, message, corr, close, wait, |_| {}).await?;
            ctx.admission
                .record(Protocol::Http, op, refusal.code.status(), started);
            return Ok(if close {
                After::Close
            } else {
                After::KeepAlive
            });
        }
    };
    conn.object_bytes = 0;
    let outcome = route(ctx, conn, &request).await;
    let object_bytes = conn.object_bytes;
    let Ok((status, after)) = outcome else {
        ctx.admission.finish(ticket, 0, object_bytes);
        return Err(Abort);
    };
    ctx.admission.finish(ticket, status, object_bytes);
    tracing::debug!(
        corr_id = request.corr_id.as_str(),
        shard = ctx.shard.index().0,
        op = op.as_str(),
        status,
        "http request"
    );
    if ctx.draining.get() {
        return Ok(After::Close);
    }
    Ok(after)
}

// Inline on purpose: boxing the request would allocate on every request.
#[allow(clippy::large_enum_variant)]
enum HeadOutcome {
    /// The request, and the length of its head in the read buffer.
    Complete(Request, usize),
    /// The peer closed or stayed idle past the idle timeout between requests.
    Closed,
    Rejected(ErrorCode, String),
}

async fn read_head<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
) -> Result<HeadOutcome, Abort> {
    let limits = &ctx.limits;
    if conn.rbuf.filled().is_empty() {
        let _ = conn
            .stream
            .tcp()
            .set_read_timeout(Some(limits.idle_timeout));
        match conn.rbuf.fill(&mut conn.stream).await {
            Ok(0) | Err(_) => return Ok(HeadOutcome::Closed),
            Ok(_) => {}
        }
    }
    let deadline = Instant::now() + limits.header_timeout;
    loop {
        match parse_request_head(conn.rbuf.filled(), limits.head_bytes_max) {
            Ok(HeadParse::Complete(head)) => {
                return Ok(HeadOutcome::Complete(
                    Request::from_head(&head, ctx, conn.peer),
                    head.head_len,
                ))
            }
            Ok(HeadParse::Partial) => {}
            Err(e) => return Ok(HeadOutcome::Rejected(e.code(), e.to_string())),
        }
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return Ok(HeadOutcome::Rejected(
                ErrorCode::RequestTimeout,
                timeout_message(limits),
            ));
        };
        let _ = conn.stream.tcp().set_read_timeout(Some(left));
        match conn.rbuf.fill(&mut conn.stream).await {
            Ok(0) => return Ok(HeadOutcome::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Ok(HeadOutcome::Rejected(
                    ErrorCode::RequestTimeout,
                    timeout_message(limits),
                ))
            }
            Err(_) => return Ok(HeadOutcome::Closed),
        }
    }
}

fn timeout_message(limits: &HttpLimits) -> String {
    format!(
        "request head not complete within {} ms",
        limits.header_timeout.as_millis()
    )
}

/// Routes a request; returns the status sent and what the connection does next.
async fn route<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
) -> Result<(u16, After), Abort> {
    let keep = req.keep_alive && !ctx.draining.get();
    let after = if keep { After::KeepAlive } else { After::Close };
    let has_body = !body_is_empty(req);
    let uploads = matches!(
        (&req.route, req.method),
        (Route::Objects, Method::Put | Method::Post) | (Route::Object(_), Method::Put)
    );
    if has_body && !uploads {
        // A body we will not read would desynchronise the stream: answer, then close.
        let status = answer_without_body(ctx, conn, req, false).await?;
        return Ok((status, After::Close));
    }
    if uploads {
        return upload(ctx, conn, req, keep).await;
    }
    let status = answer_without_body(ctx, conn, req, keep).await?;
    Ok((status, after))
}

/// Every route that reads no request body.
async fn answer_without_body<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    keep: bool,
) -> Result<u16, Abort> {
    let close = !keep;
    match (&req.route, req.method) {
        (Route::Object(addr), Method::Get | Method::Head) => get(ctx, conn, req, addr, close).await,
        (Route::BadAddress(reason), _) => {
            send_error(ctx, conn, ErrorCode::BadAddr, reason, &req.corr_id, close).await?;
            Ok(400)
        }
        (Route::Unknown, _) => {
            send_error(
                ctx,
                conn,
                ErrorCode::NotFound,
                "no such route; objects live under /o",
                &req.corr_id,
                close,
            )
            .await?;
            Ok(404)
        }
        (Route::Objects, _) | (Route::Object(_), _) => {
            let allowed = match req.route {
                Route::Objects => "PUT, POST",
                _ => "GET, HEAD, PUT",
            };
            let message = format!("method not allowed here; allowed: {allowed}");
            send_error(
                ctx,
                conn,
                ErrorCode::MethodNotAllowed,
                &message,
                &req.corr_id,
                close,
            )
            .await?;
            Ok(405)
        }
    }
}

fn common_headers(ctx: &HttpContext, head: &mut ResponseHead<'_>, corr: &CorrId, close: bool) {
    head.header("Server", b"ron")
        .header("Date", &ctx.date())
        .header("X-Corr-ID", corr.as_bytes());
    // A drain that began while the request was served closes the connection too.
    if close || ctx.draining.get() {
        head.header("Connection", b"close");
    }
}

fn body_is_empty(req: &Request) -> bool {
    matches!(req.body, BodyFraming::Empty | BodyFraming::Length(0))
}

async fn send_error<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    code: ErrorCode,
    message: &str,
    corr: &CorrId,
    close: bool,
) -> Result<(), Abort> {
    send_error_with(ctx, conn, code, message, corr, close, None, |_| {}).await
}

/// An error envelope with extra headers (e.g. `Content-Range` on a 416). Codes that
/// carry a wait get `Retry-After` in whole seconds (rounded up) and `retry_after_ms`.
#[allow(clippy::too_many_arguments)]
async fn send_error_with<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    code: ErrorCode,
    message: &str,
    corr: &CorrId,
    close: bool,
    retry_after_ms: Option<u64>,
    extra_headers: impl FnOnce(&mut ResponseHead<'_>),
) -> Result<(), Abort> {
    crate::admission::log_error(ctx.shard.index(), corr.as_str(), code, message);
    let retry_after_ms = code
        .carries_retry_after()
        .then(|| retry_after_ms.unwrap_or(crate::admission::OVERLOAD_RETRY_AFTER_MS));
    let mut body = Vec::with_capacity(160);
    Envelope {
        code,
        message,
        corr_id: corr.as_str(),
        retry_after_ms,
    }
    .write_json(&mut body);
    conn.wbuf.clear();
    let mut head = ResponseHead::start(&mut conn.wbuf, code.status());
    common_headers(ctx, &mut head, corr, close);
    head.header("Content-Type", b"application/json")
        .content_length(body.len() as u64);
    if let Some(ms) = retry_after_ms {
        let mut seconds = itoa::Buffer::new();
        head.header("Retry-After", seconds.format(ms.div_ceil(1000)).as_bytes());
    }
    extra_headers(&mut head);
    head.finish();
    conn.wbuf.extend_from_slice(&body);
    write_out(ctx, conn).await
}

async fn write_out<S: Transport>(ctx: &HttpContext, conn: &mut Conn<S>) -> Result<(), Abort> {
    conn.stream.write_all(&conn.wbuf).await?;
    ShardMetrics::add(&ctx.metrics().bytes_out, conn.wbuf.len() as u64);
    conn.wbuf.clear();
    Ok(())
}

/// GET and HEAD of one object.
async fn get<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    addr: &Address,
    close: bool,
) -> Result<u16, Abort> {
    let meta = match ctx.shard.meta(addr).await {
        Ok(meta) => meta,
        Err(e) => {
            let code = e.code();
            send_error(ctx, conn, code, &e.to_string(), &req.corr_id, close).await?;
            return Ok(code.status());
        }
    };
    let etag = quoted_etag(addr);
    if req
        .if_none_match
        .as_ref()
        .is_some_and(|inm| inm.matches(&etag))
    {
        conn.wbuf.clear();
        let mut head = ResponseHead::start(&mut conn.wbuf, 304);
        common_headers(ctx, &mut head, &req.corr_id, close);
        head.header("ETag", &etag)
            .header("Cache-Control", CACHE_CONTROL);
        head.finish();
        write_out(ctx, conn).await?;
        return Ok(304);
    }
    let total = meta.len();
    let whole = ByteRange {
        first: 0,
        last: total.saturating_sub(1),
    };
    let (status, range) = match req
        .range
        .filter(|_| !req.if_range_failed)
        .map(|r| r.resolve(total))
    {
        None => (200, whole),
        Some(RangeResolution::Unsatisfiable) => {
            return unsatisfiable(ctx, conn, req, total, close).await;
        }
        // Several ranges: the whole object with 200 (docs/HTTP-API.md).
        Some(RangeResolution::Partial(ranges)) if ranges.len() > 1 => (200, whole),
        Some(RangeResolution::Partial(ranges)) => (206, ranges.first().unwrap_or(whole)),
    };
    let body_len = if total == 0 { 0 } else { range.len() };
    let send_body = req.method == Method::Get && body_len > 0;
    // Groups fetched and verified before the head goes out: the first one always, and
    // all of them when the body is at most VERIFY_BEFORE_HEAD_BYTES_MAX. A failure here
    // is still a clean 500.
    let mut early = EarlyGroups::default();
    if send_body {
        if let Err(e) = early.fetch(ctx, &meta, range).await {
            let code = e.code();
            send_error(ctx, conn, code, &e.to_string(), &req.corr_id, close).await?;
            return Ok(code.status());
        }
    }
    conn.wbuf.clear();
    let mut head = ResponseHead::start(&mut conn.wbuf, status);
    common_headers(ctx, &mut head, &req.corr_id, close);
    head.content_length(body_len)
        .header("ETag", &etag)
        .header("Cache-Control", CACHE_CONTROL)
        .header("Accept-Ranges", b"bytes")
        .header("Content-Type", content_type(&meta));
    if status == 206 {
        head.content_range(range.first, range.last, total);
    }
    head.finish();
    if !send_body {
        write_out(ctx, conn).await?;
        return Ok(status);
    }
    conn.object_bytes = body_len;
    stream_body(ctx, conn, &req.corr_id, &meta, range, early).await?;
    Ok(status)
}

fn content_type(meta: &ObjectMeta) -> &[u8] {
    if meta.content_type.is_empty() {
        DEFAULT_CONTENT_TYPE
    } else {
        meta.content_type.as_bytes()
    }
}

async fn unsatisfiable<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    total: u64,
    close: bool,
) -> Result<u16, Abort> {
    let message = format!("no requested range overlaps the object's {total} bytes");
    let code = ErrorCode::RangeNotSatisfiable;
    send_error_with(
        ctx,
        conn,
        code,
        &message,
        &req.corr_id,
        close,
        None,
        |head| {
            head.content_range_unsatisfied(total);
        },
    )
    .await?;
    Ok(code.status())
}

/// The slice of group `group`'s bytes that falls inside `range`.
fn slice_in_range(group: GroupIndex, bytes: &Bytes, range: ByteRange) -> Bytes {
    let start = group.start_offset();
    let from = range.first.saturating_sub(start) as usize;
    let to = ((range.last + 1 - start) as usize).min(bytes.len());
    bytes.slice(from..to)
}

/// Verified groups fetched before the head is written: at most the three groups a
/// [`VERIFY_BEFORE_HEAD_BYTES_MAX`] range can span, kept inline.
#[derive(Default)]
struct EarlyGroups {
    groups: [Option<Bytes>; 3],
    /// True when every group of the body is here.
    complete: bool,
}

impl EarlyGroups {
    async fn fetch(
        &mut self,
        ctx: &HttpContext,
        meta: &ObjectMeta,
        range: ByteRange,
    ) -> Result<(), ShardError> {
        let first = GroupIndex::containing(range.first).0;
        let last = GroupIndex::containing(range.last).0;
        self.complete = range.len() <= VERIFY_BEFORE_HEAD_BYTES_MAX && last - first < 3;
        let upto = if self.complete { last } else { first };
        for (slot, g) in self.groups.iter_mut().zip(first..=upto) {
            *slot = Some(ctx.shard.group(meta, GroupIndex(g)).await?);
        }
        Ok(())
    }
}

/// Writes the head (in `wbuf`) and the body. A small body's groups are all verified
/// already; a larger one streams one verified group at a time, fetching the next group
/// while the current one is written.
async fn stream_body<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    corr: &CorrId,
    meta: &Rc<ObjectMeta>,
    range: ByteRange,
    early: EarlyGroups,
) -> Result<(), Abort> {
    let first = GroupIndex::containing(range.first);
    let last = GroupIndex::containing(range.last);
    // The first slice rides with the head when it is small; larger slices go out
    // straight from the verified buffers (copying them into the head buffer would cost
    // more than the send it saves).
    let Some(first_bytes) = &early.groups[0] else {
        return Err(Abort);
    };
    let mut current = slice_in_range(first, first_bytes, range);
    if current.len() <= COALESCE_BODY_BYTES_MAX {
        conn.wbuf.extend_from_slice(&current);
        current = Bytes::new();
    }
    write_out(ctx, conn).await?;
    if early.complete {
        send_slice(ctx, conn, &current).await?;
        for (i, bytes) in early.groups.iter().enumerate().skip(1) {
            if let Some(bytes) = bytes {
                let group = GroupIndex(first.0 + i as u64);
                send_slice(ctx, conn, &slice_in_range(group, bytes, range)).await?;
            }
        }
        return Ok(());
    }
    let mut group = first;
    loop {
        let next = (group < last).then(|| {
            let shard = Rc::clone(&ctx.shard);
            let meta = Rc::clone(meta);
            let g = GroupIndex(group.0 + 1);
            glommio::spawn_local(async move { shard.group(&meta, g).await })
        });
        send_slice(ctx, conn, &current).await?;
        let Some(next) = next else {
            return Ok(());
        };
        group = GroupIndex(group.0 + 1);
        // A group that fails verification mid-body aborts the connection: the client
        // sees a short body, never a wrong byte.
        let bytes = next.await.map_err(|e| {
            tracing::warn!(
                corr_id = corr.as_str(),
                shard = ctx.shard.index().0,
                obj = %meta.addr(),
                reason = %e,
                "body aborted: a later group could not be served"
            );
            Abort
        })?;
        current = slice_in_range(group, &bytes, range);
    }
}

async fn send_slice<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    slice: &[u8],
) -> Result<(), Abort> {
    if !slice.is_empty() {
        conn.stream.write_all(slice).await?;
        ShardMetrics::add(&ctx.metrics().bytes_out, slice.len() as u64);
    }
    Ok(())
}

/// Answers an upload that cannot go on, then closes (its body is not, or not all, read).
async fn refuse_upload<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    code: ErrorCode,
    message: &str,
) -> Result<(u16, After), Abort> {
    send_error(ctx, conn, code, message, &req.corr_id, true).await?;
    Ok((code.status(), After::Close))
}

/// PUT/POST /o and PUT /o/<addr>.
async fn upload<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    keep: bool,
) -> Result<(u16, After), Abort> {
    if !req.identity.may_write {
        let message = "writes need Authorization: Bearer <token> with a configured token";
        return refuse_upload(ctx, conn, req, ErrorCode::Unauthorized, message).await;
    }
    let max = ctx.limits.object_bytes_max;
    match req.body {
        BodyFraming::Empty => {
            let message = "an upload needs Content-Length or Transfer-Encoding: chunked";
            return refuse_upload(ctx, conn, req, ErrorCode::LengthRequired, message).await;
        }
        BodyFraming::Length(n) if n > max => {
            let message = format!("body of {n} bytes exceeds the object limit of {max} bytes");
            return refuse_upload(ctx, conn, req, ErrorCode::TooLarge, &message).await;
        }
        _ => {}
    }
    if req.expect_continue {
        conn.stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await?;
    }
    let mut upload = match ctx.shard.begin_upload().await {
        Ok(u) => u,
        Err(e) => return refuse_upload(ctx, conn, req, e.code(), &e.to_string()).await,
    };
    let received = receive_body(ctx, conn, req.body, &mut upload).await;
    conn.object_bytes = upload.len();
    if let Err(failure) = received {
        upload.abort().await;
        return match failure {
            BodyFailure::Connection => Err(Abort),
            BodyFailure::Answer(code, message) => {
                refuse_upload(ctx, conn, req, code, &message).await
            }
        };
    }
    let content_type = req.content_type.clone().unwrap_or_default();
    let staged = match upload.finish(content_type).await {
        Ok(s) => s,
        Err(e) => return refuse_upload(ctx, conn, req, e.code(), &e.to_string()).await,
    };
    let addr = staged.meta.addr();
    let len = staged.meta.len();
    if let Route::Object(announced) = &req.route {
        if *announced != addr {
            ron_shards::shard::discard(staged).await;
            let message = format!("body hashes to {addr}, not to the announced {announced}");
            let close = !keep;
            send_error(
                ctx,
                conn,
                ErrorCode::UploadDigestMismatch,
                &message,
                &req.corr_id,
                close,
            )
            .await?;
            return Ok((
                400,
                if close {
                    After::Close
                } else {
                    After::KeepAlive
                },
            ));
        }
    }
    let status = match ctx.shard.commit(staged).await {
        Ok(CommitOutcome::Created) => 201,
        Ok(CommitOutcome::AlreadyStored) => 200,
        Err(e) => return refuse_upload(ctx, conn, req, e.code(), &e.to_string()).await,
    };
    let body = format!("{{\"obj\":\"{addr}\",\"len\":{len}}}");
    let location = format!("/o/{addr}");
    conn.wbuf.clear();
    let mut head = ResponseHead::start(&mut conn.wbuf, status);
    common_headers(ctx, &mut head, &req.corr_id, !keep);
    head.header("Location", location.as_bytes())
        .header("ETag", &quoted_etag(&addr))
        .header("Content-Type", b"application/json")
        .content_length(body.len() as u64);
    head.finish();
    conn.wbuf.extend_from_slice(body.as_bytes());
    write_out(ctx, conn).await?;
    Ok((status, if keep { After::KeepAlive } else { After::Close }))
}

enum BodyFailure {
    /// The peer went away or stalled: nothing more can be said.
    Connection,
    /// The body broke a rule: answer, then close.
    Answer(ErrorCode, String),
}

/// Reads a request body into `upload`, from what is buffered and then from the socket.
async fn receive_body<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    framing: BodyFraming,
    upload: &mut ron_shards::Upload,
) -> Result<(), BodyFailure> {
    let _ = conn
        .stream
        .tcp()
        .set_read_timeout(Some(ctx.limits.body_timeout));
    let max = ctx.limits.object_bytes_max;
    match framing {
        BodyFraming::Empty => Ok(()),
        BodyFraming::Length(mut left) => {
            while left > 0 {
                if conn.rbuf.filled().is_empty() {
                    read_more(conn).await?;
                }
                let take = (conn.rbuf.filled().len() as u64).min(left) as usize;
                write_upload(upload, &conn.rbuf.filled()[..take]).await?;
                conn.rbuf.consume(take);
                left -= take as u64;
                ShardMetrics::add(&ctx.metrics().bytes_in, take as u64);
            }
            Ok(())
        }
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            loop {
                let (used, step) = decoder
                    .step(conn.rbuf.filled())
                    .map_err(|e| BodyFailure::Answer(e.code(), e.to_string()))?;
                let done = match step {
                    ChunkedStep::Data(data) => {
                        if upload.len() + data.len() as u64 > max {
                            let message =
                                format!("chunked body exceeds the object limit of {max} bytes");
                            return Err(BodyFailure::Answer(ErrorCode::TooLarge, message));
                        }
                        write_upload(upload, data).await?;
                        false
                    }
                    ChunkedStep::NeedMore => false,
                    ChunkedStep::Done => true,
                };
                let was_need_more = matches!(step, ChunkedStep::NeedMore);
                conn.rbuf.consume(used);
                ShardMetrics::add(&ctx.metrics().bytes_in, used as u64);
                if done {
                    return Ok(());
                }
                if was_need_more {
                    read_more(conn).await?;
                }
            }
        }
    }
}

async fn write_upload(upload: &mut ron_shards::Upload, data: &[u8]) -> Result<(), BodyFailure> {
    upload
        .write(data)
        .await
        .map_err(|e| BodyFailure::Answer(e.code(), e.to_string()))
}

async fn read_more<S: Transport>(conn: &mut Conn<S>) -> Result<(), BodyFailure> {
    match conn.rbuf.fill(&mut conn.stream).await {
        Ok(0) | Err(_) => Err(BodyFailure::Connection),
        Ok(_) => Ok(()),
    }
}
