//! GET and STAT: the START frame, one DATA frame per verified group slice, END.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use ron_codec::frame::{Flags, FrameMeta, APP_OBJECTS, HEADER_LEN};
use ron_codec::http::range::{RangeSet, RangeSpec};
use ron_codec::messages::{
    write_response_frame, DataHeader, GetEnd, GetStart, InclusiveRange, ObjectInfo,
    DATA_CHUNK_BYTES,
};
use ron_codec::proof::{parents_before, GroupRange};
use ron_codec::tree::GROUP_LEN_BYTES;
use ron_codec::Address;

use super::answer::{answer, refuse, Account};
use super::outbox::{push, OutFrame, SharedOutboxes};
use super::writer::reply_frame;
use super::OapContext;
use crate::admission::Ticket;
use crate::refusal::Refusal;
use crate::service::{GroupStream, Object, Span, VerifiedGroup};

/// A GET as the request task needs it.
pub(super) struct GetRequest {
    pub corr_id: u64,
    pub addr: Address,
    pub range: Option<InclusiveRange>,
    /// Verified streaming: whole groups, each DATA header with its proof's parents.
    pub proof: bool,
    /// Only a copy this node holds (no read-through): what peers ask.
    pub local: bool,
    /// With `local`: only a copy this node keeps (an audit), not an evictable one.
    pub kept: bool,
    /// The node the asker means (an audit): answered `not_found` by any other.
    pub node: Option<String>,
}

pub(super) async fn get(ctx: Rc<OapContext>, out: SharedOutboxes, req: GetRequest, ticket: Ticket) {
    let corr_id = req.corr_id;
    let mut stream = match open(&ctx, &req, &ticket).await {
        Ok(stream) => stream,
        Err(refusal) => {
            return refuse(&ctx, &out, corr_id, &refusal, Account::Admitted(ticket, 0)).await
        }
    };
    let frames = DataFrames {
        ctx: &ctx,
        corr_id,
        addr: req.addr,
        proof: req.proof,
        span: stream.span(),
    };
    let mut ticket = ticket;
    let object_bytes = frames.object_bytes();
    ctx.admission.charge_up_front(&mut ticket, object_bytes);
    let mut sent_bytes = 0;
    match frames
        .send_all(&out, &mut stream, &ticket, &mut sent_bytes)
        .await
    {
        Ok(()) => ctx
            .admission
            .finish(ticket, frames.span.status(), object_bytes),
        Err(Some(refusal)) => {
            // What went out before the failure stays charged.
            let moved = sent_bytes.min(object_bytes);
            let account = Account::Admitted(ticket, moved);
            refuse(&ctx, &out, corr_id, &refusal, account).await;
        }
        // The connection closed: charged its span, as HTTP charges an answer cut short,
        // and recorded without a status.
        Err(None) => ctx.admission.finish(ticket, 0, object_bytes),
    }
}

/// What a GET finds before its START frame: the object, the bytes to send, and the
/// first of their groups, already verified (a rotten first group is a clean error).
async fn open(ctx: &OapContext, req: &GetRequest, ticket: &Ticket) -> Result<GroupStream, Refusal> {
    // A proof needs the object's whole tree: one being read through is served once stored.
    if let Some(node) = req.node.as_deref().filter(|id| !ctx.service.is_node(id)) {
        return Err(Refusal::NotThisNode {
            asked: node.to_owned(),
        });
    }
    let object = if req.local && req.kept {
        Object::Stored(ctx.service.find_kept(&req.addr).await?)
    } else if req.local {
        Object::Stored(ctx.service.find_held(&req.addr).await?)
    } else if req.proof {
        Object::Stored(ctx.service.find_stored(&req.addr, Some(ticket)).await?)
    } else {
        ctx.service.find(&req.addr, Some(ticket)).await?
    };
    let range = req.range.map(|r| {
        RangeSet::one(RangeSpec::FromTo {
            first: r.first,
            last: r.last,
        })
    });
    let span = Span::resolve(range.as_ref(), object.len())?;
    ctx.service
        .stream(&object, span, Some(ticket.tenant()))
        .await
}

/// The frames of one GET.
struct DataFrames<'a> {
    ctx: &'a OapContext,
    corr_id: u64,
    addr: Address,
    proof: bool,
    span: Span,
}

impl DataFrames<'_> {
    /// START rides with the first DATA frame and END with the last, so a small GET is
    /// one unit for the writer. `Err(None)`: the connection closed; `Err(Some)`: a later
    /// group failed verification — the stream ends with that error, its bytes unsent.
    /// `sent_bytes` counts the object bytes handed to the writer.
    async fn send_all(
        &self,
        out: &SharedOutboxes,
        stream: &mut GroupStream,
        ticket: &Ticket,
        sent_bytes: &mut u64,
    ) -> Result<(), Option<Refusal>> {
        let mut head = self.start_frame();
        if self.span.len == 0 {
            // An empty object (or range): START and END, nothing between.
            head.extend_from_slice(&self.end_frame());
            let frame = OutFrame {
                head: head.freeze(),
                body: Bytes::new(),
                tail: Bytes::new(),
            };
            let pushed = push(out, self.corr_id, frame, true, Some(ticket)).await;
            return pushed.map_err(|_| None);
        }
        while let Some(group) = stream.next().await {
            let last = stream.is_finished();
            let frame = self.data_frame(stream, group.map_err(Some)?, head, last);
            let body_bytes = frame.body.len() as u64;
            push(out, self.corr_id, frame, last, Some(ticket))
                .await
                .map_err(|_| None)?;
            *sent_bytes += body_bytes;
            head = BytesMut::new();
        }
        Ok(())
    }

    /// The object bytes the answer carries: the span, or with `proof` the whole groups
    /// that cover it (a one-byte range with its proof carries a 64 KiB group).
    fn object_bytes(&self) -> u64 {
        if !self.proof || self.span.len == 0 {
            return self.span.len;
        }
        let first = self.span.first / GROUP_LEN_BYTES * GROUP_LEN_BYTES;
        let end = (self.span.first + self.span.len).next_multiple_of(GROUP_LEN_BYTES);
        end.min(self.span.total) - first
    }

    fn start_frame(&self) -> BytesMut {
        let start = GetStart {
            obj: self.addr,
            total_len: self.span.total,
            offset: self.span.first,
            len: self.span.len,
            chunk: DATA_CHUNK_BYTES,
        };
        let (json, json_len) = start.write_json();
        let mut head = BytesMut::with_capacity(256);
        let status = self.span.status();
        write_response_frame(
            &mut head,
            Flags::START,
            status,
            self.corr_id,
            &json[..json_len],
        )
        .expect("a GET start frame is small");
        head
    }

    fn end_frame(&self) -> BytesMut {
        let (json, json_len) = GetEnd::write_ok_json(self.span.len);
        let mut end = BytesMut::with_capacity(HEADER_LEN + json_len);
        let status = self.span.status();
        write_response_frame(
            &mut end,
            Flags::END,
            status,
            self.corr_id,
            &json[..json_len],
        )
        .expect("a GET end frame is small");
        end
    }

    /// One group's DATA frame, appended to `head`: the slice inside the span, or with
    /// `proof` the whole group and the parent nodes that precede it; with `last`, the
    /// END frame follows.
    fn data_frame(
        &self,
        stream: &GroupStream,
        group: VerifiedGroup,
        mut head: BytesMut,
        last: bool,
    ) -> OutFrame {
        let (raw_offset, raw) = if self.proof {
            (group.index.start_offset(), group.bytes.to_bytes())
        } else {
            let (offset, slice) = self.span.slice(group.index, &group.bytes);
            (offset, slice.to_bytes())
        };
        let mut parents = Vec::new();
        if let Some(meta) = stream.meta().filter(|_| self.proof) {
            let range = GroupRange::covering(self.span.first, self.span.len);
            parents_before(&meta.tree, range, group.index, &mut parents);
        }
        let frame_meta = FrameMeta {
            flags: Flags::RESP,
            code: 0,
            app_proto_id: APP_OBJECTS,
            tenant_id: 0,
            corr_id: self.corr_id,
        };
        let header = DataHeader {
            obj: Some(self.addr),
            offset: raw_offset,
            total_len: self.span.total,
        };
        head.reserve(HEADER_LEN + header.encoded_len() + 2 * parents.len() + 16);
        let max_frame = self.ctx.limits.max_frame;
        header
            .write_frame_head_with_parents(&mut head, frame_meta, &parents, raw.len(), max_frame)
            .expect("one 64 KiB group, its header and its proof fit in max_frame");
        let tail = if last {
            self.end_frame().freeze()
        } else {
            Bytes::new()
        };
        OutFrame {
            head: head.freeze(),
            body: raw,
            tail,
        }
    }
}

/// STAT: the object's length, from its verified metadata.
pub(super) async fn stat(
    ctx: Rc<OapContext>,
    out: SharedOutboxes,
    corr_id: u64,
    addr: Address,
    ticket: Ticket,
) {
    let found = ctx.service.find(&addr, Some(&ticket)).await;
    let account = Account::Admitted(ticket, 0);
    match found {
        Ok(object) => {
            let info = ObjectInfo {
                obj: addr,
                len: object.len(),
                copies: None,
            };
            let frame = reply_frame(Flags::END, 200, corr_id, &info.to_payload());
            answer(&ctx, &out, corr_id, frame, 200, account).await;
        }
        Err(refusal) => refuse(&ctx, &out, corr_id, &refusal, account).await,
    }
}
