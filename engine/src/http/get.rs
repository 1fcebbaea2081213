//! GET and HEAD of one object: conditions, range, head, then the verified body.

use ron_codec::http::head::Method;
use ron_codec::http::response::ResponseHead;
use ron_codec::Address;
use ron_io::stream::Transport;
use ron_shards::ObjectMeta;

use super::request::{quoted_etag, CorrId, Request};
use super::respond::{self, common_headers, send_slice, CACHE_CONTROL, DEFAULT_CONTENT_TYPE};
use super::{write_out, Abort, Conn, HttpContext};
use crate::limits::COALESCE_BODY_BYTES_MAX;
use crate::refusal::Refusal;
use crate::service::{GroupStream, Span};

pub(super) async fn get<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    addr: &Address,
    close: bool,
) -> Result<u16, Abort> {
    match plan(ctx, req, addr).await {
        Ok(Plan::NotModified) => not_modified(ctx, conn, req, addr, close).await,
        Ok(Plan::Send(meta, span, stream)) => {
            write_head(ctx, conn, req, &meta, span, close);
            match stream {
                Some(mut stream) => {
                    conn.object_bytes = span.len;
                    send_body(ctx, conn, &req.corr_id, &mut stream).await?;
                }
                None => write_out(ctx, conn).await?,
            }
            Ok(span.status())
        }
        Err(refusal) => {
            respond::refuse(ctx, conn, &refusal, &req.corr_id, close).await?;
            Ok(refusal.status())
        }
    }
}

// Inline on purpose: boxing the stream would allocate on every GET.
#[allow(clippy::large_enum_variant)]
enum Plan {
    NotModified,
    /// The object, the bytes to send, and their groups (none for HEAD or no bytes).
    Send(std::rc::Rc<ObjectMeta>, Span, Option<GroupStream>),
}

/// Everything decided before the head is written; a failure here is a clean error.
async fn plan(ctx: &HttpContext, req: &Request, addr: &Address) -> Result<Plan, Refusal> {
    let meta = ctx.service.find(addr).await?;
    let etag = quoted_etag(addr);
    if req.if_none_match.as_ref().is_some_and(|c| c.matches(&etag)) {
        return Ok(Plan::NotModified);
    }
    let range = req.range.as_ref().filter(|_| !req.if_range_failed);
    let span = Span::resolve(range, meta.len())?;
    if req.method != Method::Get || span.len == 0 {
        return Ok(Plan::Send(meta, span, None));
    }
    let stream = ctx.service.stream(std::rc::Rc::clone(&meta), span).await?;
    Ok(Plan::Send(meta, span, Some(stream)))
}

async fn not_modified<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    addr: &Address,
    close: bool,
) -> Result<u16, Abort> {
    conn.wbuf.clear();
    let mut head = ResponseHead::start(&mut conn.wbuf, 304);
    common_headers(ctx, &mut head, &req.corr_id, close);
    head.header("ETag", &quoted_etag(addr))
        .header("Cache-Control", CACHE_CONTROL);
    head.finish();
    write_out(ctx, conn).await?;
    Ok(304)
}

/// Puts the response head into `wbuf` (sent with, or just before, the body).
fn write_head<S>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    meta: &ObjectMeta,
    span: Span,
    close: bool,
) {
    conn.wbuf.clear();
    let mut head = ResponseHead::start(&mut conn.wbuf, span.status());
    common_headers(ctx, &mut head, &req.corr_id, close);
    let content_type = match meta.content_type.as_bytes() {
        [] => DEFAULT_CONTENT_TYPE,
        given => given,
    };
    head.content_length(span.len)
        .header("ETag", &quoted_etag(&meta.addr()))
        .header("Cache-Control", CACHE_CONTROL)
        .header("Accept-Ranges", b"bytes")
        .header("Content-Type", content_type);
    if span.partial {
        head.content_range(span.first, span.last(), span.total);
    }
    head.finish();
}

/// Writes the head (in `wbuf`) and the body, one verified group slice at a time. The
/// first slice rides with the head when it is small; larger slices go out straight from
/// the verified buffers.
async fn send_body<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    corr: &CorrId,
    stream: &mut GroupStream,
) -> Result<(), Abort> {
    let span = stream.span();
    let mut first = true;
    while let Some(group) = stream.next().await {
        // A group that fails verification mid-body aborts the connection: the client
        // sees a short body, never a wrong byte.
        let group = group.map_err(|refusal| body_aborted(ctx, corr, stream, &refusal))?;
        let (_, slice) = span.slice(group.index, &group.bytes);
        if !first {
            send_slice(ctx, conn, &slice).await?;
            continue;
        }
        first = false;
        if slice.len() <= COALESCE_BODY_BYTES_MAX {
            conn.wbuf.extend_from_slice(&slice);
            write_out(ctx, conn).await?;
        } else {
            write_out(ctx, conn).await?;
            send_slice(ctx, conn, &slice).await?;
        }
    }
    Ok(())
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
        obj = %stream.meta().addr(),
        reason = %refusal,
        "body aborted: a later group could not be served"
    );
    Abort
}
