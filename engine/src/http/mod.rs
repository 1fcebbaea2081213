//! The HTTP/1.1 front end: one task per connection on the shard that accepted it.
//!
//! A connection is a loop ([`serve_connection`]): read a head ([`read`]: idle timeout
//! before its first byte, header timeout until its last), turn it into a small owned
//! [`request::Request`], admit it, route it to [`get`] or [`put`] (or [`bundle`],
//! [`bao`], [`ipfs`] for raw blocks by CID), which call the object service and write the
//! answer through [`respond`] — the socket's only writer —, then repeat. Pipelined
//! requests stay in the read buffer and are answered in order.
//! Object bytes are slices of verified groups; a rotten group before the head is a
//! clean 500, after it an aborted connection (no wrong or padded byte is ever sent).

mod bao;
mod bundle;
mod delete;
mod get;
pub mod http2;
mod ipfs;
mod put;
mod read;
mod request;
mod respond;

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::AsyncWriteExt;
use ron_codec::http::accept::Representation;
use ron_codec::http::head::{BodyFraming, Method};
use ron_codec::http::response::HTTP_DATE_LEN;
use ron_io::stream::Transport;
use ron_link::counters::{FrontCounters, OpenConnection};
use ron_link::requests::{Op, Protocol};

use crate::admission::{Admission, Ticket};
use crate::buffers::{BufferPool, WriteBufferPool};
use crate::client_addr::TrustedProxies;
use crate::drain::Drain;
use crate::limits::{http_read_buffer_bytes, READ_BUFFERS_POOLED_MAX, WRITE_BUFFERS_POOLED_MAX};
use crate::refusal::Refusal;
use crate::service::Service;
use crate::transfer::{self, Transfer, TransferPace};
use read::{HeadOutcome, ReadBuf};
use request::{CorrId, Request, Route};

/// Limits of the HTTP front end, fixed at start-up (configuration keys).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub head_bytes_max: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// Grace before a body must keep `body_rate_min_bytes_per_s` (`crate::transfer`).
    pub body_timeout: Duration,
    pub body_rate_min_bytes_per_s: u64,
}

/// What grants an operator action (DELETE) on a data port: the admin token, only.
#[derive(Debug, Clone, Copy)]
pub struct OperatorRule<'a> {
    pub admin_token: Option<&'a str>,
    /// Where removal goes when no admin token is configured (named in the refusal).
    pub admin_listener: std::net::SocketAddr,
}

/// Per-shard state shared by its HTTP connections.
pub struct HttpContext {
    pub service: Rc<Service>,
    pub admission: Rc<Admission>,
    pub limits: HttpLimits,
    /// Set when the node is shutting down: answers carry `Connection: close`.
    /// Raised when the shard's stop begins (`crate::drain`).
    pub draining: Rc<Drain>,
    /// Read buffers (`head_bytes_max` + one group), lent only while a connection has
    /// bytes to parse or a body to receive.
    read_buffers: Rc<BufferPool>,
    /// Write buffers, lent while a connection answers (`crate::buffers`).
    write_buffers: Rc<WriteBufferPool>,
    corr_seq: Cell<u64>,
    date: RefCell<(u64, [u8; HTTP_DATE_LEN])>,
    /// The node's admin token: a DELETE must bear it (none: no DELETE on a data port).
    admin_token: Option<Box<[u8]>>,
    /// The admin listener, named in the refusal of a DELETE when no token is configured.
    pub(crate) admin_listener: std::net::SocketAddr,
    /// Load balancers whose word about the client is believed (PROXY, X-Forwarded-For).
    pub(crate) trusted_proxies: Rc<TrustedProxies>,
    /// Parsed bundle manifests, most recently used (`bundle.rs`).
    manifests: RefCell<bundle::ManifestCache>,
    /// Manifest loads under way (`MANIFEST_LOADS_MAX`).
    manifest_loads: glommio::sync::Semaphore,
}

impl std::fmt::Debug for HttpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpContext")
            .field("shard", &self.service.shard().index())
            .field("inflight", &self.admission.inflight())
            .finish()
    }
}

impl HttpContext {
    pub fn new(
        service: Rc<Service>,
        admission: Rc<Admission>,
        limits: HttpLimits,
        draining: Rc<Drain>,
        operator: OperatorRule<'_>,
        trusted_proxies: Rc<TrustedProxies>,
    ) -> Self {
        let read_buffers = BufferPool::new(
            http_read_buffer_bytes(limits.head_bytes_max),
            READ_BUFFERS_POOLED_MAX,
        );
        HttpContext {
            read_buffers,
            write_buffers: WriteBufferPool::new(WRITE_BUFFERS_POOLED_MAX),
            service,
            admission,
            limits,
            draining,
            corr_seq: Cell::new(0),
            date: RefCell::new((u64::MAX, [0; HTTP_DATE_LEN])),
            admin_token: operator.admin_token.map(|t| t.as_bytes().into()),
            admin_listener: operator.admin_listener,
            trusted_proxies,
            manifests: RefCell::default(),
            manifest_loads: glommio::sync::Semaphore::new(crate::limits::MANIFEST_LOADS_MAX),
        }
    }

    fn admin_token(&self) -> Option<&[u8]> {
        self.admin_token.as_deref()
    }

    fn metrics(&self) -> &FrontCounters {
        self.admission.front()
    }
}

/// How a request ended for the connection.
enum After {
    KeepAlive,
    Close,
}

impl After {
    fn keep_if(keep: bool) -> After {
        if keep {
            After::KeepAlive
        } else {
            After::Close
        }
    }
}

/// Why the connection must end right away (no further answer possible): the socket is
/// then reset, not closed, so a body cut short after its head is unmistakable.
#[derive(Debug, Clone, Copy)]
struct Abort {
    /// The status the request is counted with: the node's own failure that cut its
    /// answer short (a later group failing verification: 500; an upstream that died
    /// mid-body: 502, 504), or 0 when the peer or the socket failed.
    status: u16,
}

impl Abort {
    /// The socket failed, or the peer went away.
    const SOCKET: Abort = Abort { status: 0 };

    /// The node could not go on with an answer whose head is sent.
    fn failed(refusal: &Refusal) -> Abort {
        Abort {
            status: refusal.status(),
        }
    }
}

impl From<std::io::Error> for Abort {
    fn from(_: std::io::Error) -> Self {
        Abort::SOCKET
    }
}

/// One connection: the socket, its bounded buffers and the current request's state.
struct Conn<S> {
    stream: S,
    rbuf: ReadBuf,
    wbuf: BytesMut,
    peer: Option<IpAddr>,
    /// Object bytes the current request moved (its charge to the tenant's byte quota).
    object_bytes: u64,
    /// The current request's body deadline and bytes moved.
    transfer: Transfer,
    /// The current request's admission, parked while it waits on the peer.
    ticket: Option<Ticket>,
    /// Bodies may go out with `sendfile` from the verified cache (plain TCP).
    zero_copy: bool,
    /// Whether a head may wait for a zero-copy body longer than one packet: asked of
    /// the socket at its first such body ([`Conn::head_joins_long_body`]).
    head_joins_long_body: Option<bool>,
    /// The connection closes after an answer that left a request's body unread: its
    /// close lingers ([`linger`]).
    body_left_unread: bool,
}

impl<S: Transport> Conn<S> {
    fn new(ctx: &HttpContext, stream: S, peer: Option<IpAddr>) -> Conn<S> {
        // Every plain socket is non-blocking already (`PolledTcp::new`).
        let zero_copy = stream.plain_socket().is_some();
        Conn {
            stream,
            rbuf: ReadBuf::new(Rc::clone(&ctx.read_buffers)),
            wbuf: BytesMut::new(),
            peer,
            object_bytes: 0,
            transfer: Transfer::new(ctx.limits.pace(Instant::now())),
            ticket: None,
            zero_copy,
            head_joins_long_body: None,
            body_left_unread: false,
        }
    }

    /// Whether a head may wait (`MSG_MORE`) to ride in the first packet of a zero-copy
    /// body longer than one packet: when the socket's congestion control does not pace
    /// its sends (`HEAD_WITH_BODY_BYTES_MAX`). Asked of the socket once; a socket that
    /// cannot say sends such heads alone.
    fn head_joins_long_body(&mut self) -> bool {
        let stream = &self.stream;
        *self.head_joins_long_body.get_or_insert_with(|| {
            stream
                .plain_socket()
                .and_then(|socket| socket.congestion_control().ok())
                .is_some_and(|control| !control.paces_sends())
        })
    }
}

/// What every connection of the HTTP front ends (HTTP/1.1 and HTTP/2) starts with: no
/// Nagle, writes bounded by the body timeout (every body write sets its own deadline;
/// this bounds the close, a TLS close_notify), counted in the total and as open while
/// the guard lives.
fn opened<'c, S: Transport>(ctx: &'c HttpContext, stream: &S) -> OpenConnection<'c> {
    let _ = stream.tcp().set_nodelay(true);
    let _ = stream
        .tcp()
        .set_write_timeout(Some(ctx.limits.body_timeout));
    FrontCounters::add(&ctx.metrics().connections_total, 1);
    ctx.metrics().open_connection()
}

impl HttpLimits {
    fn pace(&self, started: Instant) -> TransferPace {
        TransferPace::new(started, self.body_timeout, self.body_rate_min_bytes_per_s)
    }
}

/// Serves one connection until it closes; `client` is who it is for (the socket's peer,
/// or the client a trusted proxy's PROXY header named).
pub async fn serve_connection<S: Transport>(
    ctx: Rc<HttpContext>,
    stream: S,
    client: Option<IpAddr>,
) {
    let open = opened(&ctx, &stream);
    let mut conn = Conn::new(&ctx, stream, client);
    let ended = loop {
        match serve_one(&ctx, &mut conn).await {
            Ok(After::KeepAlive) => continue,
            Ok(After::Close) => break Ok(()),
            Err(abort) => break Err(abort),
        }
    };
    match ended {
        Ok(()) => {
            let _ = conn.stream.close().await;
            if conn.body_left_unread {
                // Boxed: its buffer and wait are no part of every connection's state.
                // Still counted open (against `connections_max`) while it lingers.
                Box::pin(linger(&mut conn.stream, &ctx.read_buffers)).await;
            }
            drop(open);
        }
        // Dropped without a TLS close_notify or a FIN: the peer sees a reset.
        Err(_) => {
            let _ = conn.stream.tcp().reset_on_close();
        }
    }
}

/// After an answer that left a request's body unread (an upload refused: too large, no
/// token, over quota), the close lingers ([`crate::transfer::linger`]).
async fn linger<S: Transport>(stream: &mut S, pool: &Rc<BufferPool>) {
    crate::transfer::linger(stream, pool, |s, left| {
        let _ = s.tcp().set_read_timeout(Some(left));
    })
    .await
}

/// Serves the one request of an exchange: an HTTP/2 stream presented as a connection
/// that closes after its answer (`http2::exchange`). It is not counted as a connection;
/// a cut-short answer drops the exchange, which resets the stream.
async fn serve_exchange<S: Transport>(ctx: &HttpContext, stream: S, client: Option<IpAddr>) {
    let mut conn = Conn::new(ctx, stream, client);
    if serve_one(ctx, &mut conn).await.is_ok() {
        let _ = conn.stream.close().await;
    }
}

/// Reads one head, admits the request and answers it.
async fn serve_one<S: Transport>(ctx: &HttpContext, conn: &mut Conn<S>) -> Result<After, Abort> {
    let head = read::read_head(ctx, conn).await?;
    let (request, head_len, started) = match head {
        HeadOutcome::Complete(request, len, started) => (request, len, started),
        HeadOutcome::Closed => return Ok(After::Close),
        HeadOutcome::Rejected(refusal, started) => {
            conn.transfer = Transfer::new(ctx.limits.pace(started));
            let corr = ctx.new_corr_id();
            // A HEAD's answer has no content, refused or not (RFC 9110 §9.3.2).
            let head_only = conn.rbuf.filled().starts_with(b"HEAD ");
            let sent = respond::refuse(ctx, conn, &refusal, &corr, true, false, head_only).await;
            // Counted whether or not the refusal reached the client (a 408's client is
            // often gone): the node refused it either way.
            let status = refusal.status();
            ctx.admission
                .record(Protocol::Http, Op::Other, status, started);
            sent?;
            return Ok(After::Close);
        }
    };
    // Its latency and its body deadline start when its head's first bytes were in hand.
    conn.transfer = Transfer::new(ctx.limits.pace(started));
    conn.rbuf.consume(head_len);
    if request.body_is_empty() {
        conn.rbuf.release_if_empty();
    }
    FrontCounters::add(&ctx.metrics().bytes_in, head_len as u64);
    if ctx.draining.is_draining() {
        // A request that arrives once the stop began is not started: past the drain's
        // deadline nothing waits for it, and an answer cut short is worse than a 503 a
        // proxy retries elsewhere (OAP/1 refuses the same way).
        refuse_unadmitted(ctx, conn, &request, &Refusal::ShuttingDown, started).await?;
        return Ok(After::Close);
    }
    let op = request.op();
    let ticket = match ctx
        .admission
        .admit(&request.identity.tenant, Protocol::Http, op, started)
    {
        Ok(ticket) => ticket,
        Err(refusal) => return refuse_unadmitted(ctx, conn, &request, &refusal, started).await,
    };
    conn.object_bytes = 0;
    conn.ticket = Some(ticket);
    // Boxed: the state of a request's answer lives on the heap only while it runs, so
    // an idle connection's task stays small (about 1 KiB; tests/attacks.rs measures it).
    let outcome = Box::pin(route(ctx, conn, &request)).await;
    let object_bytes = conn.object_bytes;
    let status = match &outcome {
        Ok((status, _)) => *status,
        Err(abort) => abort.status,
    };
    if let Some(ticket) = conn.ticket.take() {
        ctx.admission.finish(ticket, status, object_bytes);
    }
    let (_, after) = outcome?;
    tracing::debug!(
        corr_id = request.corr_id.as_str(),
        shard = ctx.service.shard().index().0,
        op = op.as_str(),
        status,
        client = ?request.client,
        "http request"
    );
    Ok(After::keep_if(
        !ctx.draining.is_draining() && matches!(after, After::KeepAlive),
    ))
}

/// Answers a request admission refused. Its body (if any) is not read: then close.
async fn refuse_unadmitted<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    request: &Request,
    refusal: &Refusal,
    started: Instant,
) -> Result<After, Abort> {
    let close = !request.keep_alive || !request.body_is_empty();
    let head_only = request.method == Method::Head;
    let sent = respond::refuse(
        ctx,
        conn,
        refusal,
        &request.corr_id,
        close,
        request.http10,
        head_only,
    )
    .await;
    // Counted whether or not the refusal reached the client: the node refused it.
    let status = refusal.status();
    ctx.admission
        .record(Protocol::Http, request.op(), status, started);
    sent?;
    conn.body_left_unread |= !request.body_is_empty();
    Ok(After::keep_if(!close))
}

/// Routes a request; returns the status sent and what the connection does next.
async fn route<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
) -> Result<(u16, After), Abort> {
    let keep = req.keep_alive && !ctx.draining.is_draining();
    if req.is_upload() {
        // Boxed: an upload's state is five times a read's, and every request's state is
        // moved into its box (`serve_one`) — a read must not pay for an upload's size.
        return Box::pin(put::upload(ctx, conn, req, keep)).await;
    }
    // A body we will not read would desynchronise the stream: answer, then close. One
    // call site: two would each get a slot in this future, which is moved whole into
    // its box on every request (`serve_one`).
    let keep = keep && req.body_is_empty();
    // And the close lingers, as a refused upload's does: a client still sending that body
    // reads the answer instead of a reset.
    conn.body_left_unread |= !req.body_is_empty();
    let status = answer_without_body(ctx, conn, req, keep).await?;
    Ok((status, After::keep_if(keep)))
}

/// Every route that reads no request body.
async fn answer_without_body<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    keep: bool,
) -> Result<u16, Abort> {
    let close = !keep;
    let refusal = match (&req.route, req.method) {
        (Route::Object(addr), Method::Get | Method::Head) => match req.representation {
            Representation::Bytes => return get::get(ctx, conn, req, addr, close).await,
            Representation::Bao(log) => {
                let kind = bao::BaoKind::Encoding(log);
                return bao::get(ctx, conn, req, addr, kind, close).await;
            }
            Representation::BaoUnservable => Refusal::NotAcceptable,
        },
        (Route::BundleEntry(addr, path), Method::Get | Method::Head) => {
            return Box::pin(bundle::get(ctx, conn, req, addr, path, close)).await;
        }
        (Route::Outboard(addr, log), Method::Get | Method::Head) => {
            let kind = bao::BaoKind::Outboard(*log);
            return bao::get(ctx, conn, req, addr, kind, close).await;
        }
        (Route::Ipfs(ipfs), Method::Get | Method::Head) => {
            return ipfs::get(ctx, conn, req, ipfs, close).await
        }
        (Route::Object(addr), Method::Delete) => {
            return delete::remove(ctx, conn, req, addr, close).await
        }
        (Route::BadAddress(e), _) => Refusal::Codec(e.clone()),
        (Route::BadChunkGroupLog(given), _) => Refusal::BadChunkGroupLog {
            given: given.clone(),
        },
        (Route::Outboard(..) | Route::BundleEntry(..) | Route::Ipfs(_), _) => {
            Refusal::MethodNotAllowed {
                allowed: "GET, HEAD",
            }
        }
        (Route::Unknown, _) => Refusal::NoRoute,
        (Route::Objects, _) => Refusal::MethodNotAllowed {
            allowed: "PUT, POST",
        },
        (Route::Object(_), _) => Refusal::MethodNotAllowed {
            allowed: "GET, HEAD, PUT, DELETE",
        },
    };
    respond::refuse_request(ctx, conn, req, &refusal, close).await
}

impl Request {
    fn body_is_empty(&self) -> bool {
        matches!(self.body, BodyFraming::Empty | BodyFraming::Length(0))
    }

    fn is_upload(&self) -> bool {
        matches!(
            (&self.route, self.method),
            (Route::Objects, Method::Put | Method::Post) | (Route::Object(_), Method::Put)
        )
    }
}

impl HttpContext {
    fn new_corr_id(&self) -> CorrId {
        let seq = self.corr_seq.get();
        self.corr_seq.set(seq + 1);
        CorrId::generated(self.service.shard().index().0, seq)
    }
}

/// Writes the bytes queued in `wbuf`.
async fn write_out<S: Transport>(ctx: &HttpContext, conn: &mut Conn<S>) -> Result<(), Abort> {
    let Conn {
        stream,
        wbuf,
        transfer,
        ticket,
        ..
    } = conn;
    send(ctx, stream, wbuf, transfer, ticket.as_ref()).await?;
    wbuf.clear();
    Ok(())
}

/// Writes `bytes` within the request's transfer deadline (its slot parked while the
/// socket is full).
async fn send<S: Transport>(
    ctx: &HttpContext,
    stream: &mut S,
    bytes: &[u8],
    transfer: &mut Transfer,
    ticket: Option<&Ticket>,
) -> Result<(), Abort> {
    let set_timeout = |s: &S, left| {
        let _ = s.tcp().set_write_timeout(Some(left));
    };
    let park = transfer::park_one(ticket);
    transfer::write_all(stream, bytes, transfer, park, ctx.metrics(), set_timeout).await?;
    FrontCounters::add(&ctx.metrics().bytes_out, bytes.len() as u64);
    Ok(())
}
