//! PUT/POST /o and PUT /o/<addr>: the body streamed into an upload session, then the
//! commit outcome as JSON.

use ron_codec::http::head::BodyFraming;
use ron_codec::http::response::ResponseHead;
use ron_io::stream::Transport;

use super::read::{receive_body, BodyFailure};
use super::request::{quoted_etag, Request, Route};
use super::respond::{self, common_headers};
use super::{write_out, Abort, After, Conn, HttpContext};
use crate::refusal::Refusal;
use crate::service::{Stored, WriteCredential};

/// Where HTTP carries a write token, for the 401 message.
const TOKEN_CARRIER: &str = "in Authorization: Bearer <token>";

pub(super) async fn upload<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    keep: bool,
) -> Result<(u16, After), Abort> {
    let credential = WriteCredential {
        may_write: req.identity.may_write,
        token_given: req.token_given,
        carrier: TOKEN_CARRIER,
        tenant_id: None,
    };
    let declared = match req.body {
        BodyFraming::Empty => Err(Refusal::LengthRequired),
        BodyFraming::Length(n) => Ok(Some(n)),
        BodyFraming::Chunked => Ok(None),
    };
    let announced = match &req.route {
        Route::Object(addr) => Some(*addr),
        _ => None,
    };
    let copies = req
        .copies
        .clone()
        .map_err(|given| Refusal::BadCopies { given })
        .and_then(|want| ctx.service.check_copies(want).map(|()| want));
    let client = conn.ticket.as_ref().map(|t| t.tenant());
    let admitted = credential.check().and(copies).and_then(|want| {
        let copy_wait = ctx.service.take_copy_wait(want, client)?;
        Ok((copy_wait, declared?))
    });
    // The copy wait's place is held until the upload is answered.
    let (_copy_wait, begun) = match admitted {
        Ok((copy_wait, declared)) => {
            let begun = match req.write_precondition(ctx, announced.as_ref()).await {
                Ok(()) => {
                    ctx.service
                        .begin_upload(&credential, declared, announced, client)
                        .await
                }
                Err(refusal) => Err(refusal),
            };
            (copy_wait, begun)
        }
        Err(refusal) => (None, Err(refusal)),
    };
    let mut session = match begun {
        Ok(session) => session,
        Err(refusal) => return refuse_upload(ctx, conn, req, &refusal).await,
    };
    if let (BodyFraming::Length(declared), Some(ticket)) = (req.body, conn.ticket.as_mut()) {
        ctx.admission.charge_up_front(ticket, declared);
    }
    if req.expect_continue {
        conn.wbuf.clear();
        conn.wbuf
            .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        write_out(ctx, conn).await?;
    }
    let received = receive_body(ctx, conn, req.body, &mut session).await;
    conn.object_bytes = session.received();
    if let Err(failure) = received {
        session.abort().await;
        return match failure {
            BodyFailure::Connection => Err(Abort::SOCKET),
            BodyFailure::Refused(refusal) => refuse_upload(ctx, conn, req, &refusal).await,
        };
    }
    match session
        .finish(req.content_type.clone().unwrap_or_default())
        .await
    {
        Ok(stored) => match req.copies {
            Ok(want) if want > 1 => match (ctx.service)
                .wait_for_copies(stored.addr, want, conn.ticket.as_ref())
                .await
            {
                Ok(copies) => created(ctx, conn, req, stored, Some(copies), keep).await,
                Err(refusal) => {
                    respond::refuse(ctx, conn, &refusal, &req.corr_id, !keep, req.http10, false)
                        .await?;
                    Ok((refusal.status(), After::keep_if(keep)))
                }
            },
            _ => created(ctx, conn, req, stored, None, keep).await,
        },
        // The body was read whole: the connection is still in step.
        Err(refusal @ Refusal::DigestMismatch { .. }) => {
            respond::refuse(ctx, conn, &refusal, &req.corr_id, !keep, req.http10, false).await?;
            Ok((refusal.status(), After::keep_if(keep)))
        }
        Err(refusal) => refuse_upload(ctx, conn, req, &refusal).await,
    }
}

/// Answers an upload that cannot go on, then closes (its body is not, or not all, read).
async fn refuse_upload<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    refusal: &Refusal,
) -> Result<(u16, After), Abort> {
    respond::refuse(ctx, conn, refusal, &req.corr_id, true, req.http10, false).await?;
    conn.body_left_unread = true;
    Ok((refusal.status(), After::Close))
}

/// 201 (or 200 when the object was already stored) with `{"obj":..,"len":..}`, and
/// `"copies"` when the upload asked for copies.
async fn created<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    stored: Stored,
    copies: Option<usize>,
    keep: bool,
) -> Result<(u16, After), Abort> {
    let Stored { addr, len, .. } = stored;
    let status = stored.status();
    let body = match copies {
        Some(copies) => format!("{{\"obj\":\"{addr}\",\"len\":{len},\"copies\":{copies}}}"),
        None => format!("{{\"obj\":\"{addr}\",\"len\":{len}}}"),
    };
    let location = format!("/o/{addr}");
    conn.wbuf.clear();
    let mut head = ResponseHead::start(&mut conn.wbuf, status);
    common_headers(ctx, &mut head, &req.corr_id, !keep, req.http10);
    head.header("Location", location.as_bytes())
        .header("ETag", &quoted_etag(&addr))
        .header("Content-Type", b"application/json")
        .content_length(body.len() as u64);
    head.finish();
    conn.wbuf.extend_from_slice(body.as_bytes());
    write_out(ctx, conn).await?;
    Ok((status, After::keep_if(keep)))
}
