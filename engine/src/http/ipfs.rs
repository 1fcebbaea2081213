//! `/ipfs/<cid>`: a trustless gateway for raw blocks (the IPFS Trustless Gateway
//! specification's `application/vnd.ipld.raw` answers). A CIDv1 with the raw codec and a
//! BLAKE3-256 multihash names a ron object by the same digest, so the block is the
//! object's bytes, served through the same verified read as `/o/` (read-through, the
//! denylist, quotas and ranges included), under the block's own ETag (`"<cid>.raw"`) and
//! the headers the specification asks for. Identity CIDs (the `bafkqaaa` probe among
//! them) carry their bytes and are answered from the CID. Objects over
//! [`IPFS_BLOCK_BYTES_MAX`] are no block an IPFS client accepts: refused, pointing to
//! `/o/` and bao. CAR and IPNS answers are not served (406).

use ron_codec::cid::{object_cid_base32, Cid, CidError, Named};
use ron_codec::http::accept;
use ron_codec::http::head::{trim, FieldLines, Method};
use ron_codec::http::response::ResponseHead;
use ron_codec::Address;
use ron_io::stream::Transport;

use super::get::{self, Shown, ShownAs};
use super::request::Request;
use super::respond::{self, common_headers};
use super::{write_out, Abort, Conn, HttpContext};
use crate::refusal::Refusal;

/// The largest block IPFS clients accept (bitswap's and the gateways' limit, 2 MiB).
pub(super) const IPFS_BLOCK_BYTES_MAX: u64 = 2 * 1024 * 1024;
/// The media type of a raw block.
pub(super) const RAW_BLOCK_MEDIA_TYPE: &str = "application/vnd.ipld.raw";
/// The path gateway specification's Cache-Control for immutable `/ipfs/` answers.
const IPFS_CACHE_CONTROL: &[u8] = b"public, max-age=29030400, immutable";

/// What `/ipfs/<cid>` asks for, decided from the head.
pub(super) struct IpfsRequest {
    pub block: Block,
    pub format: BlockFormat,
}

pub(super) enum Block {
    /// A ron object; its CID in canonical base32 (`bafkr4i…`).
    Object(Address, Box<str>),
    /// An identity CID's bytes, and the CID as sent.
    Inline(Vec<u8>, Box<str>),
    /// A CID this node cannot serve as a raw block, and why.
    NotServed { cid: Box<str>, why: String },
    /// Not a CID (or a path under one).
    BadCid { given: Box<str>, reason: String },
}

/// The format the request asks for (`?format=` first, then `Accept`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum BlockFormat {
    Raw,
    /// Neither `format` nor `Accept` sent: a strict trustless gateway answers 400.
    Unsaid,
    /// Something other than a raw block (a CAR, an IPNS record, a deserialised file).
    Other(String),
}

/// The CID part of a target under `/ipfs/`, and its query; `None` for other routes.
pub(super) fn ipfs_target(target: &str) -> Option<(&str, &str)> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let rest = path.strip_prefix("/ipfs")?;
    match rest {
        "" => Some(("", query)),
        _ => rest.strip_prefix('/').map(|cid| (cid, query)),
    }
}

impl IpfsRequest {
    pub fn of(cid_path: &str, query: &str, accept: &FieldLines<'_>) -> IpfsRequest {
        IpfsRequest {
            block: Block::of(cid_path),
            format: BlockFormat::of(query, accept),
        }
    }
}

/// A raw block's ETag: `"<cid>.raw"`, as the path gateway names it.
fn block_etag(cid: &str) -> String {
    format!("\"{cid}.raw\"")
}

impl Block {
    fn of(cid_path: &str) -> Block {
        let given = || {
            cid_path
                .chars()
                .take(80)
                .collect::<String>()
                .into_boxed_str()
        };
        if let Some((_, path)) = cid_path.split_once('/') {
            return Block::BadCid {
                given: given(),
                reason: format!("a raw block has no paths (asked for {path:?} under it)"),
            };
        }
        let cid = match Cid::parse(cid_path) {
            Ok(cid) => cid,
            Err(e) => {
                return Block::BadCid {
                    given: given(),
                    reason: reason(e),
                }
            }
        };
        match cid.named() {
            Named::Object(addr) => {
                let mut text = [0u8; 64];
                let len = object_cid_base32(&addr, &mut text);
                let text = std::str::from_utf8(&text[..len]).unwrap_or_default();
                Block::Object(addr, text.into())
            }
            Named::Inline(bytes) => Block::Inline(bytes.to_vec(), cid_path.into()),
            Named::NotServed(why) => Block::NotServed { cid: given(), why },
        }
    }
}

fn reason(e: CidError) -> String {
    format!("not a CID: {e}")
}

impl BlockFormat {
    fn of(query: &str, accept: &FieldLines<'_>) -> BlockFormat {
        let format = query.split('&').find_map(|p| p.strip_prefix("format="));
        match format {
            Some("raw") => return BlockFormat::Raw,
            Some(other) => return BlockFormat::Other(format!("format={}", cut(other))),
            None => {}
        }
        if !accept.is_present() {
            return BlockFormat::Unsaid;
        }
        // RFC 9110 §12.5.1: the most specific range that matches decides, and q=0
        // refuses (`application/vnd.ipld.raw;q=0, */*` is no raw block).
        let media = |member: &[u8]| {
            member.split(|&b| b == b';').next().map_or(0, |m| {
                let m = trim(m);
                [RAW_BLOCK_MEDIA_TYPE.as_bytes(), b"application/*", b"*/*"]
                    .iter()
                    .position(|r| m.eq_ignore_ascii_case(r))
                    .map_or(0, |at| 3 - at)
            })
        };
        let most_specific = accept.members().map(media).max().unwrap_or(0);
        let raw = most_specific > 0
            && accept
                .members()
                .any(|m| media(m) == most_specific && !accept::member_refused(m));
        match raw {
            true => BlockFormat::Raw,
            false => {
                let asked: Vec<_> = accept.members().map(String::from_utf8_lossy).collect();
                BlockFormat::Other(format!("Accept: {}", cut(&asked.join(", "))))
            }
        }
    }
}

fn cut(text: &str) -> String {
    text.chars().take(80).collect()
}

/// GET or HEAD of `/ipfs/<cid>`.
pub(super) async fn get<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    ipfs: &IpfsRequest,
    close: bool,
) -> Result<u16, Abort> {
    let refusal = match (&ipfs.block, &ipfs.format) {
        (Block::BadCid { given, reason }, _) => Refusal::BadCid {
            given: given.to_string(),
            reason: reason.clone(),
        },
        (Block::NotServed { cid, why }, _) => Refusal::CidNotServed {
            cid: cid.to_string(),
            why: why.clone(),
        },
        (_, BlockFormat::Unsaid) => Refusal::BlockFormatUnsaid,
        (_, BlockFormat::Other(asked)) => Refusal::BlockFormatNotServed {
            asked: asked.clone(),
        },
        (Block::Inline(bytes, cid), BlockFormat::Raw) => {
            return inline(ctx, conn, req, bytes, cid, close).await
        }
        (Block::Object(addr, cid), BlockFormat::Raw) => {
            let etag = block_etag(cid);
            let validators = req.late_validators.as_deref();
            let shown = Shown {
                media_type: RAW_BLOCK_MEDIA_TYPE,
                conditions: validators
                    .map(|v| v.conditions(etag.as_bytes()))
                    .unwrap_or_default(),
                if_range_failed: validators.is_some_and(|v| v.if_range_failed(&[etag.as_bytes()])),
                kind: ShownAs::IpfsBlock { cid },
            };
            match get::try_get(ctx, conn, req, addr, Some(&shown), close).await? {
                Ok(status) => return Ok(status),
                Err(refusal) => refusal,
            }
        }
    };
    respond::refuse_request(ctx, conn, req, &refusal, close).await
}

/// An identity CID's block: its bytes are the CID's digest (the probe's are none).
async fn inline<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    bytes: &[u8],
    cid: &str,
    close: bool,
) -> Result<u16, Abort> {
    let etag = block_etag(cid);
    let conditions = req
        .late_validators
        .as_deref()
        .map(|v| v.conditions(etag.as_bytes()));
    if conditions.is_some_and(|c| c.if_match_failed) {
        let refusal = Refusal::BlockPreconditionFailed { etag };
        return respond::refuse_request(ctx, conn, req, &refusal, close).await;
    }
    let not_modified = conditions.is_some_and(|c| c.if_none_match_hit);
    let status = if not_modified { 304 } else { 200 };
    conn.wbuf.clear();
    let mut head = ResponseHead::start(&mut conn.wbuf, status);
    common_headers(ctx, &mut head, &req.corr_id, close, req.http10);
    ipfs_block_headers(&mut head, cid);
    head.header("Vary", b"Accept");
    if status == 200 {
        head.content_length(bytes.len() as u64)
            .header("Content-Type", RAW_BLOCK_MEDIA_TYPE.as_bytes());
    }
    head.finish();
    if status == 200 && req.method == Method::Get {
        conn.wbuf.extend_from_slice(bytes);
    }
    write_out(ctx, conn).await?;
    Ok(status)
}

/// The headers of every raw block answer: its ETag, the immutable Cache-Control of
/// `/ipfs/`, an attachment never sniffed (bytes from anyone must not render as a page
/// of this origin), and the CID it answers.
pub(super) fn ipfs_block_headers(head: &mut ResponseHead<'_>, cid: &str) {
    let disposition = format!("attachment; filename=\"{cid}.bin\"");
    head.header("ETag", block_etag(cid).as_bytes())
        .header("Cache-Control", IPFS_CACHE_CONTROL)
        .header("X-Content-Type-Options", b"nosniff")
        .header("Content-Disposition", disposition.as_bytes())
        .header("X-Ipfs-Path", format!("/ipfs/{cid}").as_bytes())
        .header("X-Ipfs-Roots", cid.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use ron_codec::http::head::{parse_request_head, HeadParse};

    fn format(query: &str, fields: &str) -> BlockFormat {
        let raw = format!("GET /ipfs/x HTTP/1.1\r\nHost: t\r\n{fields}\r\n");
        let Ok(HeadParse::Complete(head)) = parse_request_head(raw.as_bytes(), 4096) else {
            panic!("{raw:?} does not parse")
        };
        BlockFormat::of(query, &head.accept)
    }

    #[test]
    fn the_format_parameter_comes_before_accept() {
        assert_eq!(format("format=raw", ""), BlockFormat::Raw);
        assert_eq!(
            format("x=1&format=raw", "Accept: application/vnd.ipld.car\r\n"),
            BlockFormat::Raw
        );
        assert_eq!(
            format("format=car", "Accept: application/vnd.ipld.raw\r\n"),
            BlockFormat::Other("format=car".into())
        );
        assert_eq!(
            format("", "Accept: text/html, application/vnd.ipld.raw;q=0.5\r\n"),
            BlockFormat::Raw
        );
        assert_eq!(format("", "Accept: */*\r\n"), BlockFormat::Raw);
        // q=0 refuses, and the most specific range decides.
        let refused = [
            "application/vnd.ipld.car, application/vnd.ipld.raw;q=0",
            "application/vnd.ipld.raw; q=0.000, */*",
            "*/*;q=0",
        ];
        for accept in refused {
            let field = format!("Accept: {accept}\r\n");
            assert!(
                matches!(format("", &field), BlockFormat::Other(_)),
                "{accept}"
            );
        }
        assert_eq!(
            format("", "Accept: text/html;q=0, application/*\r\n"),
            BlockFormat::Raw
        );
        assert_eq!(format("", ""), BlockFormat::Unsaid);
        assert_eq!(
            format("", "Accept: application/vnd.ipld.car; version=1\r\n"),
            BlockFormat::Other("Accept: application/vnd.ipld.car; version=1".into())
        );
    }

    #[test]
    fn targets_under_ipfs() {
        assert_eq!(
            ipfs_target("/ipfs/bafk?format=raw"),
            Some(("bafk", "format=raw"))
        );
        assert_eq!(ipfs_target("/ipfs"), Some(("", "")));
        assert_eq!(ipfs_target("/ipfsx"), None);
        assert_eq!(ipfs_target("/o/x"), None);
        assert!(matches!(Block::of("bafkqaaa"), Block::Inline(b, _) if b.is_empty()));
        assert!(matches!(Block::of("bafkqaaa/x"), Block::BadCid { .. }));
        assert!(matches!(Block::of(""), Block::BadCid { .. }));
    }
}
