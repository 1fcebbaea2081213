//! GET and HEAD of an object's bao encoding, a bao slice of it, or its outboard
//! (docs/HTTP-API.md, "Verified bytes: bao"): bytes any client can check against the
//! address with the `bao` crate's or bao-tree's decoders.
//!
//! A slice answers a Range but is not a byte range of a representation, so it is a
//! `200` whose `Bao-Range` names the bytes it proves, with `Vary: Accept, Range, If-Range`
//! (an `If-Range` naming another tag selects the whole encoding) — never
//! a `206` a cache could splice into (or serve as) the bytes of another answer. Every
//! leaf is a group the store verified, hashed again where the walk needs CVs below
//! the group (`ron_codec::bao`), so a byte is checked right before it is sent.

use std::rc::Rc;

use ron_codec::bao::{BaoShape, ChunkGroupLog, GroupInput, GroupTail};
use ron_codec::http::head::Method;
use ron_codec::http::response::ResponseHead;
use ron_codec::tree::GroupIndex;
use ron_codec::Address;
use ron_io::stream::Transport;
use ron_shards::{GroupBytes, ObjectMeta};

use super::get::{follows, send_file_run, send_head_more};
use super::request::{quoted_etag, Request};
use super::respond::{self, common_headers, CACHE_CONTROL, NOSNIFF};
use super::{write_out, Abort, Conn, HttpContext};
use crate::admission::Ticket;
use crate::limits::COALESCE_BODY_BYTES_MAX;
use crate::refusal::Refusal;
use crate::service::{GroupStream, Object, Span};

/// Bytes of an answer queued before they are written (an outboard's parents, or a
/// group's encoding at log 0).
const FLUSH_BYTES: usize = 64 * 1024;

/// Which bao answer a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BaoKind {
    /// The encoding, or with a Range the slice proving it.
    Encoding(ChunkGroupLog),
    Outboard(ChunkGroupLog),
}

impl BaoKind {
    fn log(self) -> ChunkGroupLog {
        match self {
            BaoKind::Encoding(log) | BaoKind::Outboard(log) => log,
        }
    }
}

pub(super) async fn get<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    addr: &Address,
    kind: BaoKind,
    close: bool,
) -> Result<u16, Abort> {
    let answer = match plan(ctx, req, addr, kind, conn.ticket.as_ref()).await {
        Ok(answer) => answer,
        Err(refusal) => return respond::refuse_request(ctx, conn, req, &refusal, close).await,
    };
    write_head(ctx, conn, req, &answer, close);
    if answer.not_modified || req.method != Method::Get {
        write_out(ctx, conn).await?;
        return Ok(answer.status());
    }
    conn.wbuf.extend_from_slice(&answer.shape.length_header());
    conn.object_bytes = answer.shape.encoded_len();
    if let Some(ticket) = conn.ticket.as_mut() {
        ctx.admission.charge_up_front(ticket, conn.object_bytes);
    }
    send_body(ctx, conn, req, answer).await?;
    Ok(200)
}

/// Everything decided before the head is written; a failure here is a clean error.
struct Answer {
    meta: Rc<ObjectMeta>,
    shape: BaoShape,
    kind: BaoKind,
    /// The bytes a slice proves (`Bao-Range`), `None` for a whole encoding or outboard.
    slice: Option<Span>,
    etag: Vec<u8>,
    not_modified: bool,
    /// The groups the body needs, the first already verified (none for an outboard at
    /// log 6 or a HEAD).
    groups: Option<GroupStream>,
}

impl Answer {
    fn status(&self) -> u16 {
        if self.not_modified {
            304
        } else {
            200
        }
    }
}

async fn plan(
    ctx: &HttpContext,
    req: &Request,
    addr: &Address,
    kind: BaoKind,
    ticket: Option<&Ticket>,
) -> Result<Answer, Refusal> {
    // The walk needs the whole tree: an object being read through is answered once stored.
    let meta = ctx.service.find_stored(addr, ticket).await?;
    let len = meta.tree.object_len();
    let validators = req.late_validators.as_deref();
    let range = match (kind, validators) {
        (BaoKind::Outboard(_), _) => None,
        (BaoKind::Encoding(_), Some(v))
            if v.if_range_failed(&[&etag(addr, kind, None), &quoted_etag(addr)]) =>
        {
            None
        }
        (BaoKind::Encoding(_), _) => req.range.as_ref(),
    };
    let span = Span::resolve(range, len)?;
    let (shape, slice) = match kind {
        BaoKind::Outboard(log) => (BaoShape::outboard(len, log), None),
        BaoKind::Encoding(log) if span.partial => (
            BaoShape::slice(len, log, span.first, span.last()),
            Some(span),
        ),
        BaoKind::Encoding(log) => (BaoShape::encoding(len, log), None),
    };
    let etag = etag(addr, kind, slice);
    let conditions = validators.map(|v| v.conditions(&etag));
    if conditions.is_some_and(|c| c.if_match_failed) {
        let etag = String::from_utf8_lossy(&etag).into_owned();
        return Err(Refusal::BaoPreconditionFailed { etag });
    }
    let not_modified = conditions.is_some_and(|c| c.if_none_match_hit);
    let groups = match shape.groups() {
        Some((first, last)) if !not_modified && req.method == Method::Get => {
            let span = groups_span(len, first, last);
            let object = Object::Stored(Rc::clone(&meta));
            Some(
                ctx.service
                    .stream(&object, span, ticket.map(Ticket::tenant))
                    .await?,
            )
        }
        _ => None,
    };
    Ok(Answer {
        meta,
        shape,
        kind,
        slice,
        etag,
        not_modified,
        groups,
    })
}

/// The bytes of groups `first..=last` of an object of `len` bytes.
fn groups_span(len: u64, first: GroupIndex, last: GroupIndex) -> Span {
    let start = first.start_offset();
    let end = GroupIndex(last.0 + 1).start_offset().min(len);
    Span {
        first: start,
        len: end - start,
        partial: true,
        total: len,
    }
}

/// The ETag of a bao answer: the object's, with the kind, the chunk-group log and, for
/// a slice, the bytes it proves — never the plain bytes' tag, and different for every
/// distinct answer.
fn etag(addr: &Address, kind: BaoKind, slice: Option<Span>) -> Vec<u8> {
    let kind_name: &[u8] = match kind {
        BaoKind::Encoding(_) => b".bao",
        BaoKind::Outboard(_) => b".obao",
    };
    let mut tag = Vec::with_capacity(112);
    tag.push(b'"');
    tag.extend_from_slice(&addr.text());
    tag.extend_from_slice(kind_name);
    tag.push(b'0' + kind.log().get());
    if let Some(span) = slice {
        let mut number = itoa::Buffer::new();
        tag.push(b'.');
        tag.extend_from_slice(number.format(span.first).as_bytes());
        tag.push(b'-');
        tag.extend_from_slice(number.format(span.last()).as_bytes());
    }
    tag.push(b'"');
    tag
}

/// `Content-Type` of an encoding or slice, by chunk-group log.
const BAO_CONTENT_TYPES: [&str; 7] = [
    "application/x-bao; chunk-group-log=0",
    "application/x-bao; chunk-group-log=1",
    "application/x-bao; chunk-group-log=2",
    "application/x-bao; chunk-group-log=3",
    "application/x-bao; chunk-group-log=4",
    "application/x-bao; chunk-group-log=5",
    "application/x-bao; chunk-group-log=6",
];

/// `Content-Type` of an outboard, by chunk-group log.
const OUTBOARD_CONTENT_TYPES: [&str; 7] = [
    "application/x-bao-outboard; chunk-group-log=0",
    "application/x-bao-outboard; chunk-group-log=1",
    "application/x-bao-outboard; chunk-group-log=2",
    "application/x-bao-outboard; chunk-group-log=3",
    "application/x-bao-outboard; chunk-group-log=4",
    "application/x-bao-outboard; chunk-group-log=5",
    "application/x-bao-outboard; chunk-group-log=6",
];

fn write_head<S>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    answer: &Answer,
    close: bool,
) {
    conn.wbuf.clear();
    let mut head = ResponseHead::start(&mut conn.wbuf, answer.status());
    common_headers(ctx, &mut head, &req.corr_id, close, req.http10);
    head.header("ETag", &answer.etag)
        .header("Cache-Control", CACHE_CONTROL)
        .header("X-Content-Type-Options", NOSNIFF);
    match answer.kind {
        // The answer to a GET of the object's URL depends on Accept and, for bao, on
        // Range and If-Range (a failed If-Range selects the whole encoding, not a slice).
        BaoKind::Encoding(_) => head.header("Vary", b"Accept, Range, If-Range"),
        // `?outboard` and `.obao` name their answer in the URL alone.
        BaoKind::Outboard(_) => &mut head,
    };
    if !answer.not_modified {
        let content_type = match answer.kind {
            BaoKind::Encoding(log) => BAO_CONTENT_TYPES[usize::from(log.get())],
            BaoKind::Outboard(log) => OUTBOARD_CONTENT_TYPES[usize::from(log.get())],
        };
        head.header("Content-Type", content_type.as_bytes())
            .content_length(answer.shape.encoded_len());
        if let Some(span) = answer.slice {
            let value = format!("bytes {}-{}/{}", span.first, span.last(), span.total);
            head.header("Bao-Range", value.as_bytes());
        }
    }
    head.finish();
}

/// Writes the head (in `wbuf`), the length header and the walk, group by group. A group
/// that fails its check mid-body aborts the connection: the client sees a short answer
/// (which its decoder rejects), never a wrong byte.
async fn send_body<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    mut answer: Answer,
) -> Result<(), Abort> {
    let tree = &answer.meta.tree;
    let mut encoded = Vec::new();
    let Some(stream) = answer.groups.as_mut() else {
        for g in 0..tree.group_count() {
            answer
                .shape
                .encode_group(tree, GroupIndex(g), GroupInput::Absent, &mut encoded)
                .map_err(|e| aborted(ctx, req, &answer.meta, &Refusal::Codec(e)))?;
            conn.wbuf.extend_from_slice(&encoded);
            encoded.clear();
            if conn.wbuf.len() >= FLUSH_BYTES {
                write_out(ctx, conn).await?;
            }
        }
        return write_out(ctx, conn).await;
    };
    // Whole verified groups in the cache's arenas go out with sendfile, those that lie
    // end to end with no parent between them in one call, as a plain GET's do; what
    // precedes them (head, parents) goes with MSG_MORE so it shares their packets.
    let mut run: Vec<GroupBytes> = Vec::new();
    while let Some(group) = stream.next().await {
        let group = group.map_err(|refusal| aborted(ctx, req, &answer.meta, &refusal))?;
        let bytes = GroupInput::Verified(&group.bytes);
        let tail = answer
            .shape
            .encode_group(tree, group.index, bytes, &mut encoded)
            .map_err(|e| aborted(ctx, req, &answer.meta, &Refusal::Codec(e)))?;
        let zero_copy = conn.zero_copy
            && group.bytes.file.is_some()
            && group.bytes.len() > COALESCE_BODY_BYTES_MAX;
        if tail == GroupTail::WholeGroup && zero_copy {
            if encoded.is_empty() && follows(&run, &group.bytes) {
                run.push(group.bytes);
                continue;
            }
            send_run(ctx, conn, &mut run).await?;
            conn.wbuf.extend_from_slice(&encoded);
            encoded.clear();
            if !conn.wbuf.is_empty() {
                send_head_more(ctx, conn).await?;
            }
            run.push(group.bytes);
            continue;
        }
        send_run(ctx, conn, &mut run).await?;
        conn.wbuf.extend_from_slice(&encoded);
        encoded.clear();
        if tail == GroupTail::WholeGroup {
            conn.wbuf.extend_from_slice(&group.bytes);
        }
        if conn.wbuf.len() >= FLUSH_BYTES || stream.is_finished() {
            write_out(ctx, conn).await?;
        }
    }
    send_run(ctx, conn, &mut run).await?;
    write_out(ctx, conn).await
}

/// Sends a run of whole groups that lie end to end in one arena, and empties it.
async fn send_run<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    run: &mut Vec<GroupBytes>,
) -> Result<(), Abort> {
    if !run.is_empty() {
        send_file_run(ctx, conn, run).await?;
        run.clear();
    }
    Ok(())
}

fn aborted(ctx: &HttpContext, req: &Request, meta: &ObjectMeta, refusal: &Refusal) -> Abort {
    tracing::warn!(
        corr_id = req.corr_id.as_str(),
        shard = ctx.service.shard().index().0,
        obj = %meta.tree.root(),
        reason = %refusal,
        "bao body aborted: a group could not be served"
    );
    Abort::failed(refusal)
}
