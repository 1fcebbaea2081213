//! GET and HEAD of one object: conditions, range, head, then the verified body.

use ron_codec::http::head::Method;
use ron_codec::http::response::ResponseHead;
use ron_codec::Address;
use ron_io::stream::{PlainSocket, Transport};
use std::os::fd::AsFd;

use ron_link::counters::FrontCounters;
use ron_shards::GroupBytes;

use super::ipfs::{ipfs_block_headers, IPFS_BLOCK_BYTES_MAX};
use super::request::{quoted_etag, Conditions, CorrId, Request};
use super::respond::{
    self, common_headers, send_slice, CACHE_CONTROL, DEFAULT_CONTENT_TYPE, FALLBACK_CACHE_CONTROL,
    NOSNIFF,
};
use super::{write_out, Abort, Conn, HttpContext};
use crate::admission::Ticket;
use crate::limits::{
    COALESCE_BODY_BYTES_MAX, CORK_RUN_BYTES_MAX, HEAD_WITH_BODY_BYTES_MAX, UNCORKED_REST_BYTES_MAX,
};
use crate::refusal::Refusal;
use crate::service::{GroupStream, Object, Span};

/// An object sent as something other than itself: a bundle entry's representation or
/// an IPFS raw block.
pub(super) struct Shown<'a> {
    pub media_type: &'a str,
    /// The preconditions against the representation's ETag.
    pub conditions: Conditions,
    pub if_range_failed: bool,
    pub kind: ShownAs<'a>,
}

pub(super) enum ShownAs<'a> {
    /// As the bundle's manifest shows it; its ETag is the object's address.
    BundleEntry {
        /// `Content-Encoding` (none: identity).
        coding: Option<&'static str>,
        /// What the manifest says the object holds: a different length is refused.
        claimed_len: u64,
        /// For the refusal's message: the bundle and the entry's path.
        bundle: Address,
        path: &'a str,
        /// A representation the client preferred was passed over (it could not be
        /// given now): cached briefly ([`FALLBACK_CACHE_CONTROL`]).
        fallback: bool,
    },
    /// As the raw block of a CID (`/ipfs/<cid>`): ETag `"<cid>.raw"`, at most
    /// [`IPFS_BLOCK_BYTES_MAX`].
    IpfsBlock { cid: &'a str },
}

impl Shown<'_> {
    fn coding(&self) -> Option<&'static str> {
        match self.kind {
            ShownAs::BundleEntry { coding, .. } => coding,
            ShownAs::IpfsBlock { .. } => None,
        }
    }
}

pub(super) async fn get<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    addr: &Address,
    close: bool,
) -> Result<u16, Abort> {
    match try_get(ctx, conn, req, addr, None, close).await? {
        Ok(status) => Ok(status),
        Err(refusal) => respond::refuse_request(ctx, conn, req, &refusal, close).await,
    }
}

/// GET or HEAD of `addr`, as itself or (`shown`) as a bundle entry's representation. A
/// refusal found before anything is sent is returned unanswered: the caller answers it,
/// or (a bundle entry whose variant failed verification) tries another representation.
pub(super) async fn try_get<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    addr: &Address,
    shown: Option<&Shown<'_>>,
    close: bool,
) -> Result<Result<u16, Refusal>, Abort> {
    let planned = match plan(ctx, req, addr, shown, conn.ticket.as_ref()).await {
        Ok(planned) => planned,
        Err(refusal) => return Ok(Err(refusal)),
    };
    match planned {
        Plan::NotModified => {
            FrontCounters::add(&ctx.metrics().not_modified_answers, 1);
            not_modified(ctx, conn, req, addr, shown, close)
                .await
                .map(Ok)
        }
        Plan::Send(object, span, stream) => {
            if span.partial {
                FrontCounters::add(&ctx.metrics().range_answers, 1);
            }
            write_head(ctx, conn, req, &object, span, shown, close);
            match stream {
                Some(mut stream) => {
                    conn.object_bytes = span.len;
                    if let Some(ticket) = conn.ticket.as_mut() {
                        ctx.admission.charge_up_front(ticket, span.len);
                    }
                    send_body(ctx, conn, &req.corr_id, &mut stream).await?;
                }
                None => write_out(ctx, conn).await?,
            }
            Ok(Ok(span.status()))
        }
    }
}

// Inline on purpose: boxing the stream would allocate on every GET.
#[allow(clippy::large_enum_variant)]
enum Plan {
    NotModified,
    /// The object, the bytes to send, and their groups (none for HEAD or no bytes).
    Send(Object, Span, Option<GroupStream>),
}

/// Everything decided before the head is written; a failure here is a clean error.
async fn plan(
    ctx: &HttpContext,
    req: &Request,
    addr: &Address,
    shown: Option<&Shown<'_>>,
    ticket: Option<&Ticket>,
) -> Result<Plan, Refusal> {
    let object = ctx.service.find(addr, ticket).await?;
    let (conditions, if_range_failed) = match shown {
        Some(shown) => {
            check_shown_len(shown, addr, object.len())?;
            (shown.conditions, shown.if_range_failed)
        }
        None => (req.conditions, req.if_range_failed),
    };
    if conditions.if_match_failed {
        return Err(Refusal::PreconditionFailed { addr: *addr });
    }
    if conditions.if_none_match_hit {
        return Ok(Plan::NotModified);
    }
    let range = req.range.as_ref().filter(|_| !if_range_failed);
    let span = Span::resolve(range, object.len())?;
    let client = ticket.map(Ticket::tenant);
    if req.method != Method::Get || span.len == 0 {
        if span.len > 0 {
            // A HEAD opens what it shows as a GET does (its first group checked), so it
            // answers what GET would (RFC 9110 §9.3.2): a rotten first group was HEAD
            // 200, immutable, and GET 500; a bundle entry's rotten variant is passed
            // over for the next, as GET passes it over.
            drop(ctx.service.stream(&object, span, client).await?);
        }
        return Ok(Plan::Send(object, span, None));
    }
    let stream = ctx.service.stream(&object, span, client).await?;
    Ok(Plan::Send(object, span, Some(stream)))
}

/// A bundle's piece must be the length its manifest says: a manifest that lies about a
/// piece is a bad upstream of that piece, never served. A raw block is at most what
/// IPFS clients accept.
fn check_shown_len(shown: &Shown<'_>, piece: &Address, stored: u64) -> Result<(), Refusal> {
    match shown.kind {
        ShownAs::BundleEntry {
            coding,
            claimed_len,
            bundle,
            path,
            ..
        } if stored != claimed_len => Err(Refusal::BundlePieceLength {
            bundle,
            path: path.to_string(),
            coding: coding.unwrap_or("identity"),
            piece: *piece,
            claimed: claimed_len,
            stored,
        }),
        ShownAs::IpfsBlock { .. } if stored > IPFS_BLOCK_BYTES_MAX => Err(Refusal::BlockTooLarge {
            addr: *piece,
            len: stored,
        }),
        _ => Ok(()),
    }
}

/// What the answer varies on: `Accept` for an object (its bao encoding) and a raw block
/// (its format), the coding for a bundle entry.
fn vary(shown: Option<&Shown<'_>>) -> &'static [u8] {
    match shown.map(|s| &s.kind) {
        Some(ShownAs::BundleEntry { .. }) => b"Accept-Encoding",
        Some(ShownAs::IpfsBlock { .. }) | None => b"Accept",
    }
}

/// The answer's ETag and Cache-Control, and the headers a raw block adds (the trustless
/// gateway's: it is an attachment, never sniffed, and names its CID).
fn validators_and_caching(head: &mut ResponseHead<'_>, addr: &Address, shown: Option<&Shown<'_>>) {
    let cache_control = match shown.map(|s| &s.kind) {
        Some(ShownAs::IpfsBlock { cid }) => return ipfs_block_headers(head, cid),
        Some(ShownAs::BundleEntry { fallback: true, .. }) => FALLBACK_CACHE_CONTROL,
        _ => CACHE_CONTROL,
    };
    head.header("ETag", &quoted_etag(addr))
        .header("Cache-Control", cache_control)
        .header("X-Content-Type-Options", NOSNIFF);
}

async fn not_modified<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    addr: &Address,
    shown: Option<&Shown<'_>>,
    close: bool,
) -> Result<u16, Abort> {
    conn.wbuf.clear();
    let mut head = ResponseHead::start(&mut conn.wbuf, 304);
    common_headers(ctx, &mut head, &req.corr_id, close, req.http10);
    validators_and_caching(&mut head, addr, shown);
    head.header("Vary", vary(shown));
    head.finish();
    write_out(ctx, conn).await?;
    Ok(304)
}

/// Puts the response head into `wbuf` (sent with, or just before, the body).
fn write_head<S>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    object: &Object,
    span: Span,
    shown: Option<&Shown<'_>>,
    close: bool,
) {
    conn.wbuf.clear();
    let mut head = ResponseHead::start(&mut conn.wbuf, span.status());
    common_headers(ctx, &mut head, &req.corr_id, close, req.http10);
    let content_type = match (shown, object.content_type().as_bytes()) {
        (Some(shown), _) => shown.media_type.as_bytes(),
        (None, []) => DEFAULT_CONTENT_TYPE,
        (None, given) => given,
    };
    head.content_length(span.len);
    validators_and_caching(&mut head, &object.addr(), shown);
    // An object's URL answers `Accept: application/x-bao` with the bao encoding; a
    // bundle entry's answers in the coding `Accept-Encoding` allows.
    head.header("Vary", vary(shown))
        .header("Accept-Ranges", b"bytes")
        .header("Content-Type", content_type);
    if let Some(coding) = shown.and_then(Shown::coding) {
        head.header("Content-Encoding", coding.as_bytes());
    }
    if span.partial {
        head.content_range(span.first, span.last(), span.total);
    }
    head.finish();
}

/// Writes the head (in `wbuf`) and the body, one verified group slice at a time. A
/// small whole body rides with the head (one send). Larger slices that lie in the
/// verified cache's arenas go out with `sendfile` on plain TCP (no copy; the head is sent
/// with `MSG_MORE` so it shares the body's first packet, alone only when the body is
/// longer than a packet and the socket paces its sends — see
/// `HEAD_WITH_BODY_BYTES_MAX`), one call per run of slices
/// that lie end to end in one arena; the rest are written from the verified buffers.
async fn send_body<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    corr: &CorrId,
    stream: &mut GroupStream,
) -> Result<(), Abort> {
    let span = stream.span();
    let mut head_sent = false;
    let mut run = Vec::new();
    let mut body = BodyRuns::new(span.len);
    while let Some(group) = stream.next().await {
        // A group that fails verification mid-body aborts the connection: the client
        // sees a short body, never a wrong byte — and is charged what it got, not the
        // span (the node's failure, as an OAP/1 answer is charged).
        let group = match group {
            Ok(group) => group,
            Err(refusal) => {
                conn.object_bytes = body.sent_bytes;
                return Err(body_aborted(ctx, corr, stream, &refusal));
            }
        };
        let (_, slice) = span.slice(group.index, &group.bytes);
        let zero_copy = conn.zero_copy && slice.file.is_some() && {
            // A small slice is copied only when that saves a system call: a small body
            // that is one slice, gathered behind its head. A slice of a longer body
            // joins the slices beside it in the arena, in the `sendfile` of the rest.
            let part_of_body = (slice.len() as u64) < span.len;
            slice.len() > COALESCE_BODY_BYTES_MAX || part_of_body
        };
        if !head_sent {
            head_sent = true;
            let head_fits_body_packet =
                conn.wbuf.len() as u64 + span.len <= HEAD_WITH_BODY_BYTES_MAX;
            if zero_copy && (head_fits_body_packet || conn.head_joins_long_body()) {
                send_head_more(ctx, conn).await?;
            } else if !zero_copy && slice.len() <= COALESCE_BODY_BYTES_MAX {
                send_head_with(ctx, conn, &slice).await?;
                body.copied(&slice);
                continue;
            } else {
                write_out(ctx, conn).await?;
            }
        }
        if !zero_copy {
            send_slice(ctx, conn, &slice).await?;
            body.copied(&slice);
            continue;
        }
        run.push(slice);
        // Groups already verified and at hand join the run while they follow it in
        // the same arena.
        while let Some(more) = stream.next_ready() {
            let (_, more) = span.slice(more.index, &more.bytes);
            if !follows(&run, &more) {
                body.send(ctx, conn, &run).await?;
                run.clear();
            }
            if more.file.is_none() {
                send_slice(ctx, conn, &more).await?;
                body.copied(&more);
                continue;
            }
            run.push(more);
        }
        body.send(ctx, conn, &run).await?;
        run.clear();
    }
    body.finish(conn);
    Ok(())
}

/// A body's `sendfile` runs, and whether the socket is corked for them: a run that does
/// not end the body corks it when it is short or much of the body follows it
/// ([`CORK_RUN_BYTES_MAX`]; the next runs' bytes fill the segment this one leaves
/// short), and the end of the body uncorks it. A body that leaves in one run (its
/// groups end to end in one arena), or in a few long ones (a 1 MiB answer in two cache
/// windows), pays no `setsockopt`.
struct BodyRuns {
    body_bytes: u64,
    sent_bytes: u64,
    corked: bool,
}

impl BodyRuns {
    fn new(body_bytes: u64) -> BodyRuns {
        BodyRuns {
            body_bytes,
            sent_bytes: 0,
            corked: false,
        }
    }

    /// Counts a slice that went out copied, not in a run.
    fn copied(&mut self, slice: &[u8]) {
        self.sent_bytes += slice.len() as u64;
    }

    async fn send<S: Transport>(
        &mut self,
        ctx: &HttpContext,
        conn: &mut Conn<S>,
        run: &[GroupBytes],
    ) -> Result<(), Abort> {
        let run_bytes: u64 = run.iter().map(|slice| slice.len() as u64).sum();
        self.sent_bytes += run_bytes;
        let rest = self.body_bytes.saturating_sub(self.sent_bytes);
        let worth_cork = run_bytes < CORK_RUN_BYTES_MAX || rest > UNCORKED_REST_BYTES_MAX;
        if worth_cork && !self.corked && rest > 0 {
            self.corked = conn.stream.plain_socket().is_some_and(|s| s.cork().is_ok());
        }
        send_file_run(ctx, conn, run).await
    }

    fn finish<S: Transport>(self, conn: &Conn<S>) {
        if self.corked {
            if let Some(socket) = conn.stream.plain_socket() {
                let _ = socket.uncork();
            }
        }
    }
}

/// Whether `next` lies right after the last slice of `run` in the same arena.
pub(super) fn follows(run: &[GroupBytes], next: &GroupBytes) -> bool {
    match (
        run.last()
            .and_then(|last| last.file.as_ref().map(|f| (f, last.len()))),
        &next.file,
    ) {
        (Some((last, len)), Some(next)) => {
            std::rc::Rc::ptr_eq(&last.file, &next.file) && last.offset + len as u64 == next.offset
        }
        _ => false,
    }
}

/// Sends the head in `wbuf` and a small body slice in one gathered send on plain TCP
/// (no copy of the body in user space); what the socket does not take now, and a TLS
/// stream's whole answer, is queued behind the head and written the ordinary way.
async fn send_head_with<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    body: &[u8],
) -> Result<(), Abort> {
    let sent = sent_now(ctx, conn, |socket, head| socket.send_gathered(head, body))?;
    if sent == conn.wbuf.len() + body.len() {
        conn.wbuf.clear();
        return Ok(());
    }
    let head_sent = sent.min(conn.wbuf.len());
    bytes::Buf::advance(&mut conn.wbuf, head_sent);
    conn.wbuf.extend_from_slice(&body[sent - head_sent..]);
    write_out(ctx, conn).await
}

/// Sends the head in `wbuf` telling the kernel the body follows at once; what the
/// socket does not take now is written the ordinary way.
pub(super) async fn send_head_more<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
) -> Result<(), Abort> {
    let sent = sent_now(ctx, conn, |socket, head| socket.send_more(head))?;
    bytes::Buf::advance(&mut conn.wbuf, sent);
    write_out(ctx, conn).await
}

/// What one non-blocking `send` of the head in `wbuf` (and what `send` adds to it) on
/// the plain socket took, counted as moved: 0 when the socket is full or the stream is
/// TLS; `Abort` when the socket failed.
fn sent_now<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    send: impl FnOnce(PlainSocket<'_>, &[u8]) -> std::io::Result<usize>,
) -> Result<usize, Abort> {
    let sent = match conn.stream.plain_socket().map(|s| send(s, &conn.wbuf)) {
        Some(Ok(n)) => n,
        Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Some(Err(_)) => return Err(Abort::SOCKET),
        None => 0,
    };
    conn.transfer.moved += sent as u64;
    FrontCounters::add(&ctx.metrics().bytes_out, sent as u64);
    Ok(sent)
}

/// Sends a run of verified slices with one `sendfile` from their arena when they lie end
/// to end in one (`follows`), else each with its own. When the socket is full, the wait
/// is the stream's own write of the next verified bytes (at most a page, copied), which
/// waits in glommio's reactor under the request's transfer deadline — glommio 0.9 has
/// no readiness wait for a raw fd (docs/design/zero-copy-sends.md).
pub(super) async fn send_file_run<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    run: &[GroupBytes],
) -> Result<(), Abort> {
    let Some(span) = run.first().and_then(|first| first.file.as_ref()) else {
        return Ok(());
    };
    let len: usize = run.iter().map(|slice| slice.len()).sum();
    let mut done = 0;
    while done < len {
        let Some(socket) = conn.stream.plain_socket() else {
            return Err(Abort::SOCKET);
        };
        match socket.send_file(span.file.as_fd(), span.offset + done as u64, len - done) {
            Ok(0) => return Err(Abort::SOCKET),
            Ok(n) => {
                done += n;
                conn.transfer.moved += n as u64;
                FrontCounters::add(&ctx.metrics().bytes_out, n as u64);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let page = page_at(run, done);
                send_slice(ctx, conn, page).await?;
                done += page.len();
            }
            Err(_) => return Err(Abort::SOCKET),
        }
    }
    Ok(())
}

/// Bytes a `sendfile` that found the socket full writes the ordinary way while it waits.
const WAIT_PAGE_BYTES: usize = 4096;

/// At most a page of the run's bytes from `at` on, within one slice.
fn page_at(run: &[GroupBytes], mut at: usize) -> &[u8] {
    for slice in run {
        let len = slice.len();
        if at < len {
            return &slice[at..len.min(at + WAIT_PAGE_BYTES)];
        }
        at -= len;
    }
    &[]
}

fn body_aborted(
    ctx: &HttpContext,
    corr: &CorrId,
    stream: &GroupStream,
    refusal: &Refusal,
) -> Abort {
    tracing::warn!(
        corr_id = corr.as_str(),
        shard = ctx.service.shard().index().0,
        obj = %stream.addr(),
        reason = %refusal,
        "body aborted: a later group could not be served"
    );
    Abort::failed(refusal)
}
