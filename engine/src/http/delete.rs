//! DELETE /o/<addr>: the operator removes this node's copy of an object (a takedown, a
//! purge after blocking it), crash-safely, and its DHT record is withdrawn. Only with
//! the admin token; with none configured, never (removal goes through the admin port).

use ron_codec::http::response::ResponseHead;
use ron_codec::Address;
use ron_io::stream::Transport;

use super::request::{OperatorAccess, Request};
use super::respond::{self, common_headers, NO_STORE};
use super::{write_out, Abort, Conn, HttpContext};
use crate::refusal::Refusal;

pub(super) async fn remove<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    addr: &Address,
    close: bool,
) -> Result<u16, Abort> {
    let removed = match access(req.operator, ctx) {
        Ok(()) => match req.write_precondition(ctx, Some(addr)).await {
            Ok(()) => ctx.service.remove(addr).await,
            Err(refusal) => Err(refusal),
        },
        Err(refusal) => Err(refusal),
    };
    if let Err(refusal) = removed {
        return respond::refuse_request(ctx, conn, req, &refusal, close).await;
    }
    let body = format!("{{\"obj\":\"{addr}\",\"removed\":true}}");
    conn.wbuf.clear();
    let mut head = ResponseHead::start(&mut conn.wbuf, 200);
    common_headers(ctx, &mut head, &req.corr_id, close, req.http10);
    head.header("Content-Type", b"application/json")
        .header("Cache-Control", NO_STORE)
        .content_length(body.len() as u64);
    head.finish();
    conn.wbuf.extend_from_slice(body.as_bytes());
    write_out(ctx, conn).await?;
    Ok(200)
}

fn access(operator: OperatorAccess, ctx: &HttpContext) -> Result<(), Refusal> {
    match operator {
        OperatorAccess::Granted => Ok(()),
        OperatorAccess::NoToken => Err(Refusal::AdminTokenNeeded),
        OperatorAccess::WrongToken => Err(Refusal::AdminTokenRefused(
            "the bearer token is not this node's admin token",
        )),
        OperatorAccess::NotConfigured => Err(Refusal::NoAdminToken {
            admin: ctx.admin_listener,
        }),
    }
}
