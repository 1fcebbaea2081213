//! The write side of a connection: response heads with the headers every answer
//! carries, error envelopes for refusals, and body slices.

use ron_codec::http::head::Method;
use ron_codec::http::response::{http_date, ResponseHead, HTTP_DATE_LEN};
use ron_io::stream::Transport;

use super::request::{CorrId, Request};
use super::{send, write_out, Abort, Conn, HttpContext};
use crate::refusal::Refusal;

/// An object's bytes never change: cached for a year, never revalidated, and never
/// transformed by an intermediary (a CDN's image optimizer would serve other bytes under
/// the object's strong ETag, and a client checking them against the address would fail).
pub(super) const CACHE_CONTROL: &[u8] = b"public, max-age=31536000, immutable, no-transform";
/// A bundle entry served in a coding other than the one the client preferred most,
/// because that one could not be given now (its copy damaged, its upstream failing, not
/// held): right bytes, but a cache keeping them a year under `Vary: Accept-Encoding`
/// would serve every later client of that preference the fallback for a year. A minute,
/// as nginx's `proxy_cache_valid` is often set for what may mend itself.
pub(super) const FALLBACK_CACHE_CONTROL: &[u8] = b"public, max-age=60, no-transform";
/// The stored Content-Type is the uploader's: browsers do not second-guess it.
pub(super) const NOSNIFF: &[u8] = b"nosniff";
/// Errors are never stored by a cache: an object missing now may be uploaded (or
/// fetched by an edge) the next moment, and a refusal (429, 503) is about this moment
/// (docs/HTTP-API.md, "Caching").
pub(super) const NO_STORE: &[u8] = b"no-store";
pub(super) const DEFAULT_CONTENT_TYPE: &[u8] = b"application/octet-stream";

impl HttpContext {
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
}

/// Server, Date, X-Corr-ID and, when the connection ends, `Connection: close`; when it
/// stays open for an HTTP/1.0 client (`http10`, which asked for it), `Connection:
/// keep-alive` — without it the client takes the answer as the connection's last
/// (RFC 9112 §9.3, Appendix C.2.2; nginx says it too).
pub(super) fn common_headers(
    ctx: &HttpContext,
    head: &mut ResponseHead<'_>,
    corr: &CorrId,
    close: bool,
    http10: bool,
) {
    head.header("Server", b"ron")
        .header("Date", &ctx.date())
        .header("X-Corr-ID", corr.as_bytes());
    // A drain that began while the request was served closes the connection too.
    if close || ctx.draining.is_draining() {
        head.header("Connection", b"close");
    } else if http10 {
        head.header("Connection", b"keep-alive");
    }
}

/// Answers `refusal` for request `req` and returns the status sent.
pub(super) async fn refuse_request<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    refusal: &Refusal,
    close: bool,
) -> Result<u16, Abort> {
    let head_only = req.method == Method::Head;
    refuse(
        ctx,
        conn,
        refusal,
        &req.corr_id,
        close,
        req.http10,
        head_only,
    )
    .await?;
    Ok(refusal.status())
}

/// Answers with `refusal`'s error envelope (logged once here), never to be stored by a
/// cache. Codes that carry a wait get `Retry-After` in whole seconds (rounded up) beside
/// `retry_after_ms`; a 416 names the object's length in `Content-Range`; a 405 names the
/// methods the route serves in `Allow`; a 401 the scheme in `WWW-Authenticate`. The
/// answer to a HEAD (`head_only`) ends at its head, `Content-Length` saying what a
/// GET's body would be (RFC 9110 §9.3.2): bytes after it would be read as the start of
/// the connection's next answer.
pub(super) async fn refuse<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    refusal: &Refusal,
    corr: &CorrId,
    close: bool,
    http10: bool,
    head_only: bool,
) -> Result<(), Abort> {
    refusal.log(ctx.service.shard().index(), corr.as_str());
    let mut body = Vec::with_capacity(160);
    refusal.write_envelope(corr.as_str(), &mut body);
    conn.wbuf.clear();
    let mut head = ResponseHead::start(&mut conn.wbuf, refusal.status());
    common_headers(ctx, &mut head, corr, close, http10);
    head.header("Content-Type", b"application/json")
        .header("Cache-Control", NO_STORE)
        .content_length(body.len() as u64);
    if let Refusal::MethodNotAllowed { allowed } = refusal {
        head.header("Allow", allowed.as_bytes());
    }
    // A 401 names the scheme that would do (RFC 9110 §11.6.1; RFC 6750 §3).
    if refusal.status() == 401 {
        head.header("WWW-Authenticate", br#"Bearer realm="ron""#);
    }
    if let Some(ms) = refusal.retry_after_ms() {
        let mut seconds = itoa::Buffer::new();
        head.header("Retry-After", seconds.format(ms.div_ceil(1000)).as_bytes());
    }
    if let Refusal::RangeNotSatisfiable { total } = refusal {
        head.content_range_unsatisfied(*total);
    }
    head.finish();
    if !head_only {
        conn.wbuf.extend_from_slice(&body);
    }
    write_out(ctx, conn).await
}

/// Writes one slice of verified body bytes.
pub(super) async fn send_slice<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    slice: &[u8],
) -> Result<(), Abort> {
    let Conn {
        stream,
        transfer,
        ticket,
        ..
    } = conn;
    send(ctx, stream, slice, transfer, ticket.as_ref()).await
}
