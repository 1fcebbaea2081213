//! What the router needs from a request head, owned, so the read buffer can move on:
//! the route, the conditions and range, who is asking, and the correlation id.

use std::net::IpAddr;

use ron_codec::bao::ChunkGroupLog;
use ron_codec::http::accept::{self, Representation, CHUNK_GROUP_LOG_PARAM};
use ron_codec::http::head::{bearer_token, trim, BodyFraming, FieldLines, Method, RequestHead};
use ron_codec::http::range::RangeSet;
use ron_codec::http::response::is_safe_header_value;
use ron_codec::Address;
use ron_link::policy::constant_time_eq;
use ron_link::requests::Op;
use ron_shards::record::CONTENT_TYPE_LEN_MAX;

use super::ipfs::{ipfs_target, IpfsRequest};
use super::HttpContext;
use crate::admission::{Claims, Identity};
use crate::limits::{COPIES_MAX, CORR_ID_BYTES_MAX};
use crate::refusal::Refusal;

pub(super) struct Request {
    pub method: Method,
    pub route: Route,
    pub body: BodyFraming,
    pub keep_alive: bool,
    /// An HTTP/1.0 request: a connection kept open after it is said so (`Connection:
    /// keep-alive`).
    pub http10: bool,
    pub expect_continue: bool,
    pub range: Option<RangeSet>,
    /// If-Range present and not our ETag: serve the whole object.
    pub if_range_failed: bool,
    /// `If-Match` and `If-None-Match` against the object's ETag.
    pub conditions: Conditions,
    /// What `Accept` asks of an object: its bytes or its bao encoding.
    pub representation: Representation,
    /// The validators an answer is checked against once its ETag is known (kept only for
    /// bao and outboard requests — a slice's ETag needs the object's length — and bundle
    /// entries, whose ETag is the representation's address).
    pub late_validators: Option<Box<Validators>>,
    /// `Accept-Encoding`, owned (bundle entries only: their content coding is chosen once
    /// the entry is found).
    pub accept_encoding: AcceptEncoding,
    pub identity: Identity,
    /// Who the request is for: the connection's client, or the one a trusted proxy's
    /// X-Forwarded-For names.
    pub client: Option<IpAddr>,
    /// An `Authorization: Bearer` token was presented.
    pub token_given: bool,
    /// Whether the request may do what only the operator may (DELETE).
    pub operator: OperatorAccess,
    pub content_type: Option<String>,
    /// `?copies=N` (1 when absent): durable copies an upload waits for, this node's
    /// included; `Err` holds what was given instead of a number from 1 to 16.
    pub copies: Result<usize, String>,
    pub corr_id: CorrId,
}

pub(super) enum Route {
    /// `/o`
    Objects,
    /// `/o/<addr>`
    Object(Address),
    /// `/o/<addr>/<path>`: an entry of the bundle whose manifest is `addr`; the path as
    /// sent (percent-encoded, `""` for the root), without the query.
    BundleEntry(Address, String),
    /// `/o/<addr>?outboard[&chunk-group-log=N]` (log 0 when absent), or
    /// `/o/<addr>.obao` (log 6): the object's pre-order bao outboard.
    Outboard(Address, ChunkGroupLog),
    /// An outboard asked for at a chunk-group log not served; what was given.
    BadChunkGroupLog(String),
    /// `/o/<something that is not an address>`
    BadAddress(ron_codec::Error),
    /// `/ipfs/<cid>`: a raw block (boxed: rare beside `/o/`, and larger).
    Ipfs(Box<IpfsRequest>),
    Unknown,
}

impl Route {
    fn of_target(target: &str) -> Route {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let Some(rest) = path.strip_prefix("/o") else {
            return Route::Unknown;
        };
        if rest.is_empty() {
            return Route::Objects;
        }
        let Some(text) = rest.strip_prefix('/') else {
            return Route::Unknown;
        };
        if let Some((addr, path)) = text.split_once('/') {
            return match parse_address(addr) {
                Ok(addr) => Route::BundleEntry(addr, path.to_string()),
                Err(e) => Route::BadAddress(e),
            };
        }
        let (text, obao) = match text.strip_suffix(".obao") {
            Some(addr) => (addr, true),
            None => (text, false),
        };
        let addr = match parse_address(text) {
            Ok(addr) => addr,
            Err(e) => return Route::BadAddress(e),
        };
        if obao {
            return Route::Outboard(addr, ChunkGroupLog::GROUP);
        }
        let mut params = query.split('&');
        if !params
            .clone()
            .any(|p| p == "outboard" || p.starts_with("outboard="))
        {
            return Route::Object(addr);
        }
        let log_param = params.find_map(|p| {
            p.strip_prefix(CHUNK_GROUP_LOG_PARAM)
                .and_then(|v| v.strip_prefix('='))
        });
        match log_param.map(|v| accept::chunk_group_log(v.as_bytes()).ok_or(v)) {
            None => Route::Outboard(addr, ChunkGroupLog::BAO),
            Some(Ok(log)) => Route::Outboard(addr, log),
            Some(Err(given)) => Route::BadChunkGroupLog(given.chars().take(32).collect()),
        }
    }
}

/// An address as a path segment: `b3:<hex>`, `<hex>`, or `b3%3A<hex>` — the colon
/// percent-encoded, as clients that escape reserved characters send it when they resolve
/// a relative link (nghttp; RFC 3986 makes the two equivalent in a path).
fn parse_address(segment: &str) -> Result<Address, ron_codec::Error> {
    match segment
        .strip_prefix("b3%3A")
        .or_else(|| segment.strip_prefix("b3%3a"))
    {
        Some(hex) => Address::parse(hex.as_bytes()),
        None => Address::parse(segment.as_bytes()),
    }
}

/// The members of a request's `Accept-Encoding`, owned: one comma-separated list of
/// all its lines (within the head limit).
#[derive(Debug, Default)]
pub(super) struct AcceptEncoding {
    list: Vec<u8>,
}

impl AcceptEncoding {
    fn of(lines: &FieldLines<'_>) -> AcceptEncoding {
        let mut list = Vec::new();
        for member in lines.members() {
            if !list.is_empty() {
                list.push(b',');
            }
            list.extend_from_slice(member);
        }
        AcceptEncoding { list }
    }

    pub fn members(&self) -> impl Iterator<Item = &[u8]> {
        self.list
            .split(|&b| b == b',')
            .map(trim)
            .filter(|m| !m.is_empty())
    }
}

/// The conditional fields of a request, owned, for an answer whose ETag is known only
/// once the object is found (a bao slice's names its bytes).
#[derive(Debug, Default)]
pub(super) struct Validators {
    if_match: Option<Vec<Box<[u8]>>>,
    if_none_match: Vec<Box<[u8]>>,
    if_range: Option<Box<[u8]>>,
}

impl Validators {
    fn of(head: &RequestHead<'_>) -> Validators {
        let owned = |lines: &FieldLines<'_>| lines.members().map(Box::from).collect();
        Validators {
            if_match: head.if_match.is_present().then(|| owned(&head.if_match)),
            if_none_match: owned(&head.if_none_match),
            if_range: head.if_range.map(|v| Box::from(trim(v))),
        }
    }

    /// The conditions against `etag`.
    pub fn conditions(&self, etag: &[u8]) -> Conditions {
        let if_match = self
            .if_match
            .as_deref()
            .map(|tags| tags.iter().map(|t| &t[..]));
        let if_none_match = self.if_none_match.iter().map(|t| &t[..]);
        Conditions::of_members(if_match, if_none_match, etag)
    }

    /// Whether an `If-Range` names a tag other than those given (then the whole
    /// representation is sent).
    pub fn if_range_failed(&self, etags: &[&[u8]]) -> bool {
        self.if_range
            .as_deref()
            .is_some_and(|tag| !etags.contains(&tag))
    }
}

/// Whether a request is the operator's: it bears the admin token. Never by where it
/// comes from: behind a proxy on the same host every client is loopback
/// (docs/design/trust.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OperatorAccess {
    Granted,
    /// An admin token is configured and none was presented (401).
    NoToken,
    /// The token presented is not the admin token (403).
    WrongToken,
    /// No admin token is configured: a data port grants no operator action (403).
    NotConfigured,
}

impl OperatorAccess {
    fn of(admin_token: Option<&[u8]>, bearer: Option<&[u8]>) -> Self {
        match (admin_token, bearer) {
            (Some(admin), Some(given)) if constant_time_eq(admin, given) => Self::Granted,
            (Some(_), Some(_)) => Self::WrongToken,
            (Some(_), None) => Self::NoToken,
            (None, _) => Self::NotConfigured,
        }
    }
}

/// What the preconditions of a GET or HEAD say about the object named (RFC 9110
/// §13.1), decided from the head, before the object is looked up: they apply only if it
/// exists (§13.2.1), and `If-Match` is evaluated first (§13.2.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Conditions {
    /// `If-Match` was sent and names neither `*` nor the object's strong ETag (412).
    pub if_match_failed: bool,
    /// `If-None-Match` names `*` or the object's ETag, weakly compared (304).
    pub if_none_match_hit: bool,
    /// `If-Match` was sent at all: a write then needs the object to exist.
    pub if_match_sent: bool,
}

impl Conditions {
    fn of(if_match: &FieldLines<'_>, if_none_match: &FieldLines<'_>, etag: &[u8]) -> Self {
        let if_match = if_match.is_present().then(|| if_match.members());
        Self::of_members(if_match, if_none_match.members(), etag)
    }

    /// The conditions of the listed tags (`if_match` `None`: no If-Match sent), without
    /// collecting them.
    fn of_members<'t>(
        if_match: Option<impl Iterator<Item = &'t [u8]>>,
        mut if_none_match: impl Iterator<Item = &'t [u8]>,
        etag: &[u8],
    ) -> Self {
        // Strong comparison: a weak tag never matches (§13.1.1).
        let strong = |tag: &[u8]| tag == b"*" || tag == etag;
        let weak = |tag: &[u8]| tag == b"*" || tag.strip_prefix(b"W/").unwrap_or(tag) == etag;
        let if_match_sent = if_match.is_some();
        Conditions {
            if_match_failed: if_match.is_some_and(|mut tags| !tags.any(strong)),
            if_none_match_hit: if_none_match.any(weak),
            if_match_sent,
        }
    }

    /// Whether a PUT or DELETE of the object may go on (RFC 9110 §13.2.2), given whether
    /// this node holds it (its one current representation): `If-Match` needs it held
    /// under a tag it names (or `*`); `If-None-Match` needs it not held, or held under
    /// none of the tags it names. Else 412, before a body is read or a copy removed.
    pub fn allow_write(&self, addr: &Address, held: bool) -> Result<(), Refusal> {
        let failed = |why| Err(Refusal::WritePreconditionFailed { addr: *addr, why });
        if self.if_match_sent && (!held || self.if_match_failed) {
            return failed("If-Match names no current ETag of it here");
        }
        if held && self.if_none_match_hit {
            return failed("If-None-Match names it, and this node holds it");
        }
        Ok(())
    }

    /// Whether the request carried `If-Match` or an `If-None-Match` that could apply.
    pub fn any(&self) -> bool {
        self.if_match_sent || self.if_none_match_hit
    }
}

/// The strong ETag of an object: its address, quoted.
pub(super) fn quoted_etag(addr: &Address) -> [u8; 69] {
    let mut out = [b'"'; 69];
    out[1..68].copy_from_slice(&addr.text());
    out
}

impl Request {
    /// `If-Match` / `If-None-Match` of a PUT or DELETE of `addr`, against whether this
    /// node holds it (looked up only when one was sent; a PUT of no address has none).
    pub async fn write_precondition(
        &self,
        ctx: &HttpContext,
        addr: Option<&Address>,
    ) -> Result<(), Refusal> {
        let Some(addr) = addr.filter(|_| self.conditions.any()) else {
            return Ok(());
        };
        let held = ctx.service.find_held(addr).await.is_ok();
        self.conditions.allow_write(addr, held)
    }

    pub fn op(&self) -> Op {
        match (&self.route, self.method) {
            (
                Route::Object(_) | Route::Outboard(..) | Route::BundleEntry(..) | Route::Ipfs(_),
                Method::Get,
            ) => Op::Get,
            (
                Route::Object(_) | Route::Outboard(..) | Route::BundleEntry(..) | Route::Ipfs(_),
                Method::Head,
            ) => Op::Head,
            (Route::Objects | Route::Object(_), Method::Put | Method::Post) => Op::Put,
            _ => Op::Other,
        }
    }

    pub fn from_head(head: &RequestHead<'_>, ctx: &HttpContext, peer: Option<IpAddr>) -> Request {
        let route = match ipfs_target(head.target) {
            Some((cid, query)) => Route::Ipfs(Box::new(IpfsRequest::of(cid, query, &head.accept))),
            None => Route::of_target(head.target),
        };
        let route_is_bundle = matches!(route, Route::BundleEntry(..));
        let representation = accept::negotiate(&head.accept);
        let validated_later = matches!(
            route,
            Route::Outboard(..) | Route::BundleEntry(..) | Route::Ipfs(_)
        ) || matches!(
            (&route, representation),
            (Route::Object(_), Representation::Bao(_))
        );
        let conditions = match &route {
            Route::Object(addr) => {
                Conditions::of(&head.if_match, &head.if_none_match, &quoted_etag(addr))
            }
            _ => Conditions::default(),
        };
        let if_range_failed = match (head.if_range, &route) {
            (Some(v), Route::Object(addr)) => trim(v) != &quoted_etag(addr)[..],
            (Some(_), _) => true,
            (None, _) => false,
        };
        let range_selects_representation = head.method == Method::Head
            && matches!(
                (&route, representation),
                (Route::Object(_), Representation::Bao(_))
            );
        let token = head.authorization.and_then(bearer_token);
        // Behind a trusted balancer, X-Forwarded-For names the client.
        let peer = match peer {
            Some(sender) => ctx
                .trusted_proxies
                .forwarded_client(sender, &head.x_forwarded_for)
                .or(Some(sender)),
            None => None,
        };
        let claims = Claims { token, peer };
        Request {
            method: head.method,
            route,
            body: head.body,
            keep_alive: head.keep_alive,
            http10: head.minor_version == 0,
            expect_continue: head.expect_continue,
            // RFC 9110 §14.2: a Range on any method but GET is ignored (HEAD answers
            // what a GET without it would: 200 and the whole length) — except where it
            // selects the representation (a bao slice is its own, with its own ETag):
            // there HEAD answers the GET's head.
            range: head
                .range
                .filter(|_| head.method == Method::Get || range_selects_representation)
                .and_then(RangeSet::parse),
            if_range_failed,
            conditions,
            representation,
            late_validators: validated_later.then(|| Box::new(Validators::of(head))),
            accept_encoding: match route_is_bundle {
                true => AcceptEncoding::of(&head.accept_encoding),
                false => AcceptEncoding::default(),
            },
            identity: ctx.admission.identify(claims),
            client: peer,
            token_given: token.is_some(),
            operator: OperatorAccess::of(ctx.admin_token(), token),
            content_type: content_type(head.content_type),
            copies: match head.method {
                Method::Put | Method::Post => copies_asked(head.target),
                _ => Ok(1),
            },
            corr_id: head
                .corr_id
                .and_then(CorrId::from_request)
                .unwrap_or_else(|| ctx.new_corr_id()),
        }
    }
}

/// The `copies=N` query parameter: 1 when absent, `Err` with (the start of) what was
/// given when it is not a number from 1 to [`COPIES_MAX`].
fn copies_asked(target: &str) -> Result<usize, String> {
    let Some((_, query)) = target.split_once('?') else {
        return Ok(1);
    };
    let Some(value) = query.split('&').find_map(|p| p.strip_prefix("copies=")) else {
        return Ok(1);
    };
    match value.parse::<usize>() {
        Ok(n) if (1..=COPIES_MAX).contains(&n) => Ok(n),
        _ => Err(value.chars().take(32).collect()),
    }
}

/// A Content-Type worth storing: short and safe to send back in a header.
fn content_type(value: Option<&[u8]>) -> Option<String> {
    value
        .filter(|v| !v.is_empty() && v.len() <= CONTENT_TYPE_LEN_MAX)
        .filter(|v| is_safe_header_value(v))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// An X-Corr-ID kept inline (no allocation per request).
#[derive(Clone, Copy)]
pub(super) struct CorrId {
    bytes: [u8; CORR_ID_BYTES_MAX],
    len: usize,
}

impl CorrId {
    /// The client's id, if it is short and safe to echo.
    fn from_request(value: &[u8]) -> Option<CorrId> {
        if value.is_empty() || value.len() > CORR_ID_BYTES_MAX || !is_safe_header_value(value) {
            return None;
        }
        let mut bytes = [0; CORR_ID_BYTES_MAX];
        bytes[..value.len()].copy_from_slice(value);
        Some(CorrId {
            bytes,
            len: value.len(),
        })
    }

    /// Ours: `<shard hex>-<sequence hex>`.
    pub fn generated(shard: u16, seq: u64) -> CorrId {
        use std::io::Write;
        let mut bytes = [0; CORR_ID_BYTES_MAX];
        let mut cursor = &mut bytes[..];
        let _ = write!(cursor, "{shard:x}-{seq:x}");
        let len = CORR_ID_BYTES_MAX - cursor.len();
        CorrId { bytes, len }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ron_codec::http::head::{parse_request_head, HeadParse};

    #[test]
    fn only_the_admin_token_grants_an_operator_action() {
        use OperatorAccess::*;
        let admin = Some(&b"s3cret"[..]);
        assert_eq!(OperatorAccess::of(admin, Some(b"s3cret")), Granted);
        assert_eq!(OperatorAccess::of(admin, Some(b"s3cre")), WrongToken);
        assert_eq!(OperatorAccess::of(admin, None), NoToken);
        // With none configured, nothing a request carries grants it.
        assert_eq!(OperatorAccess::of(None, Some(b"s3cret")), NotConfigured);
        assert_eq!(OperatorAccess::of(None, None), NotConfigured);
    }

    fn conditions(fields: &str, etag: &[u8]) -> Conditions {
        let raw = format!("GET /o HTTP/1.1\r\nHost: t\r\n{fields}\r\n");
        let Ok(HeadParse::Complete(head)) = parse_request_head(raw.as_bytes(), 4096) else {
            panic!("{raw:?} does not parse")
        };
        Conditions::of(&head.if_match, &head.if_none_match, etag)
    }

    #[test]
    fn routes_and_conditions() {
        assert!(matches!(Route::of_target("/o"), Route::Objects));
        assert!(matches!(Route::of_target("/o?copies=2"), Route::Objects));
        assert!(matches!(Route::of_target("/o/xyz"), Route::BadAddress(_)));
        assert!(matches!(Route::of_target("/other"), Route::Unknown));
        assert!(matches!(Route::of_target("/ox"), Route::Unknown));
        let hex = "ab".repeat(32);
        let log = |n| ChunkGroupLog::new(n).unwrap();
        let outboard = |target: &str| match Route::of_target(target) {
            Route::Outboard(_, log) => Some(log),
            _ => None,
        };
        assert!(matches!(
            Route::of_target(&format!("/o/b3:{hex}?x")),
            Route::Object(_)
        ));
        for escaped in ["b3%3A", "b3%3a"] {
            assert!(
                matches!(
                    Route::of_target(&format!("/o/{escaped}{hex}")),
                    Route::Object(_)
                ),
                "{escaped}"
            );
            assert!(matches!(
                Route::of_target(&format!("/o/{escaped}{hex}/index.html")),
                Route::BundleEntry(..)
            ));
        }
        assert!(matches!(
            Route::of_target(&format!("/o/b3%3B{hex}")),
            Route::BadAddress(_)
        ));
        assert_eq!(outboard(&format!("/o/b3:{hex}?outboard")), Some(log(0)));
        assert_eq!(
            outboard(&format!("/o/b3:{hex}?outboard&chunk-group-log=4")),
            Some(log(4))
        );
        assert_eq!(
            outboard(&format!("/o/b3:{hex}?chunk-group-log=6&outboard")),
            Some(log(6))
        );
        assert_eq!(outboard(&format!("/o/b3:{hex}.obao")), Some(log(6)));
        assert!(matches!(
            Route::of_target(&format!("/o/b3:{hex}?outboard&chunk-group-log=7")),
            Route::BadChunkGroupLog(given) if given == "7"
        ));
        assert!(matches!(
            Route::of_target(&format!("/o/b3:{hex}.bao")),
            Route::BadAddress(_)
        ));
        let none_match = "If-None-Match: W/\"a\", \"b\"\r\n";
        for (etag, hit) in [(&b"\"a\""[..], true), (b"\"b\"", true), (b"\"c\"", false)] {
            assert_eq!(conditions(none_match, etag).if_none_match_hit, hit);
        }
        assert!(conditions("If-None-Match:  * \r\n", b"\"x\"").if_none_match_hit);
        let weak_only = conditions("If-Match: W/\"a\"\r\n", b"\"a\"");
        assert!(weak_only.if_match_failed, "If-Match compares strongly");
        assert!(!conditions("If-Match: \"z\", \"a\"\r\n", b"\"a\"").if_match_failed);
        assert!(!conditions("If-Match: *\r\n", b"\"a\"").if_match_failed);
        assert_eq!(conditions("", b"\"a\""), Conditions::default());
        assert_eq!(copies_asked("/o"), Ok(1));
        assert_eq!(copies_asked("/o?x=1&copies=3"), Ok(3));
        assert_eq!(copies_asked("/o?copies=16"), Ok(16));
        assert_eq!(copies_asked("/o?copies=0"), Err("0".into()));
        assert_eq!(copies_asked("/o?copies=17"), Err("17".into()));
        assert_eq!(copies_asked("/o?copies=three"), Err("three".into()));
    }

    #[test]
    fn correlation_ids_are_echoed_only_when_safe() {
        assert_eq!(CorrId::generated(10, 255).as_str(), "a-ff");
        assert_eq!(CorrId::from_request(b"abc").unwrap().as_str(), "abc");
        assert!(CorrId::from_request(b"a\nb").is_none());
        assert!(CorrId::from_request(&[b'x'; CORR_ID_BYTES_MAX + 1]).is_none());
    }
}
