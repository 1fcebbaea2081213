//! Request heads: `httparse` tokenises, this module enforces the limits and extracts the
//! fields the data plane acts on, borrowing from the connection's read buffer.
//!
//! Framing is strict, because a lenient parser behind a proxy is a smuggling hole:
//! Content-Length and Transfer-Encoding together, a repeated or non-decimal
//! Content-Length, or a Transfer-Encoding other than exactly `chunked` are refused.
//! Response heads ([`super::reply`]) share these rules (`Framing`) and the limits.

use crate::error::Error;

/// Default limit on a request head, request line included (HTTP-API.md: 16 KiB).
pub const HEAD_LEN_MAX_DEFAULT: usize = 16 * 1024;
/// Most header fields in one head; more is answered like an oversized head (431).
pub const HEADER_COUNT_MAX: usize = 64;
/// Most lines of one list-valued field (`If-None-Match`, `If-Match`, `X-Forwarded-For`)
/// a head may carry; more is a malformed head (400).
pub const FIELD_LINES_MAX: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Put,
    Post,
    /// Removes this node's copy (the operator's, with the admin token).
    Delete,
    /// Any other method: the data plane answers 405.
    Other,
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No Content-Length and no Transfer-Encoding: no body (an upload answers 411).
    Empty,
    /// Exactly this many bytes (possibly 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head; byte fields borrow from the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead<'a> {
    pub method: Method,
    /// The method as sent (for logs and the 405 message).
    pub method_text: &'a str,
    /// The request target as sent, query included.
    pub target: &'a str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub body: BodyFraming,
    /// Whether the connection stays open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    pub range: Option<&'a [u8]>,
    pub if_none_match: FieldLines<'a>,
    pub if_match: FieldLines<'a>,
    /// `Accept`: the object's bytes or its bao encoding ([`super::accept`]).
    pub accept: FieldLines<'a>,
    /// `Accept-Encoding`: which stored content coding of a bundle entry is sent
    /// ([`super::accept::content_coding`]).
    pub accept_encoding: FieldLines<'a>,
    /// `X-Forwarded-For` (believed only from a trusted proxy; the engine decides).
    pub x_forwarded_for: FieldLines<'a>,
    pub if_range: Option<&'a [u8]>,
    pub corr_id: Option<&'a [u8]>,
    pub authorization: Option<&'a [u8]>,
    pub content_type: Option<&'a [u8]>,
    /// `Host` (checked to be a host[:port]).
    pub host: Option<&'a [u8]>,
    /// `Origin` and `Sec-Fetch-Site`: what a browser says of the page that made the
    /// request (the admin port refuses cross-site requests).
    pub origin: Option<&'a [u8]>,
    pub sec_fetch_site: Option<&'a [u8]>,
    /// Bytes of the head, blank line included: the body starts here.
    pub head_len: usize,
}

impl RequestHead<'_> {
    /// The target without its query string.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(self.target, |(p, _)| p)
    }
}

/// Every line of a field whose value is a comma-separated list: RFC 9110 §5.3 makes
/// several lines one list, so a condition split over two lines is read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FieldLines<'a> {
    lines: [&'a [u8]; FIELD_LINES_MAX],
    count: usize,
}

impl<'a> FieldLines<'a> {
    /// Adds one line; false when [`FIELD_LINES_MAX`] lines are held already.
    fn push(&mut self, value: &'a [u8]) -> bool {
        let Some(slot) = self.lines.get_mut(self.count) else {
            return false;
        };
        *slot = value;
        self.count += 1;
        true
    }

    /// Whether the field was sent at all.
    pub fn is_present(&self) -> bool {
        self.count > 0
    }

    /// The list's members over every line, trimmed, empty ones skipped.
    pub fn members(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.lines[..self.count]
            .iter()
            .flat_map(|line| line.split(|&b| b == b','))
            .map(trim)
            .filter(|m| !m.is_empty())
    }
}

/// Outcome of offering the bytes read so far to a head parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<H> {
    Complete(H),
    /// The head is not complete yet and still within the limit: read more.
    Partial,
}

/// What [`parse_request_head`] makes of the bytes read so far.
pub type HeadParse<'a> = Parsed<RequestHead<'a>>;

fn bad(reason: &'static str) -> Error {
    HeadKind::Request.bad(reason)
}

/// Where the minor digit is of a request line's later HTTP/1 version (`HTTP/1.2` to
/// `HTTP/1.9`), which the head parser refuses: such a request is to be read as HTTP/1.1
/// (RFC 9110 §2.5: a recipient SHOULD process a higher minor version as the highest it
/// conforms to), so the caller writes `1` there and parses again. The request line may
/// be cut where the bytes read so far end (the parser refuses the version as soon as
/// it has its 8 bytes), and blank lines before it are skipped, as the parser skips
/// them. `None` when the version is anything else.
pub fn later_http1_minor_at(buf: &[u8]) -> Option<usize> {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let rest = &buf[start..];
    let line_end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let line = &rest[..line_end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let at = line.len().checked_sub(b"HTTP/1.d".len())?;
    let version = &line[at..];
    let later = version.starts_with(b"HTTP/1.") && (b'2'..=b'9').contains(&version[7]);
    let after_space = at > 0 && line[at - 1] == b' ';
    (later && after_space).then_some(start + at + 7)
}

/// Parses the head at the front of `buf`, never looking past `head_len_max` bytes.
pub fn parse_request_head(buf: &[u8], head_len_max: usize) -> Result<HeadParse<'_>, Error> {
    let mut fields = [httparse::EMPTY_HEADER; HEADER_COUNT_MAX];
    let mut req = httparse::Request::new(&mut fields);
    let tokenised = tokenise(buf, head_len_max, HeadKind::Request, |w| req.parse(w))?;
    let Some(head_len) = tokenised else {
        return Ok(HeadParse::Partial);
    };
    let (Some(method_text), Some(target), Some(minor_version)) =
        (req.method, req.path, req.version)
    else {
        return Err(bad("incomplete request line"));
    };
    let target = origin_form(target);
    let method = match method_text {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "PUT" => Method::Put,
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        _ => Method::Other,
    };
    let mut head = RequestHead {
        method,
        method_text,
        target,
        minor_version,
        body: BodyFraming::Empty,
        keep_alive: minor_version >= 1,
        expect_continue: false,
        range: None,
        if_none_match: FieldLines::default(),
        if_match: FieldLines::default(),
        accept: FieldLines::default(),
        accept_encoding: FieldLines::default(),
        x_forwarded_for: FieldLines::default(),
        if_range: None,
        corr_id: None,
        authorization: None,
        content_type: None,
        host: None,
        origin: None,
        sec_fetch_site: None,
        head_len,
    };
    let mut framing = Framing::new(minor_version);
    let mut hosts = 0;
    for field in req.headers.iter() {
        let name = field.name.as_bytes();
        let value = trim(field.value);
        if framing.take(HeadKind::Request, name, value)? {
            continue;
        }
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("expect") {
            // An HTTP/1.0 client's Expect is ignored: it cannot take a 1xx answer (RFC
            // 9110 §10.1.1, §15.2).
            head.expect_continue =
                minor_version >= 1 && value.eq_ignore_ascii_case(b"100-continue");
            continue;
        }
        if is("host") {
            hosts += 1;
            if !is_valid_host(value) {
                return Err(bad("Host is not a host[:port]"));
            }
            head.host = Some(value);
            continue;
        }
        let lines = match () {
            _ if is("if-none-match") => Some(&mut head.if_none_match),
            _ if is("if-match") => Some(&mut head.if_match),
            _ if is("accept") => Some(&mut head.accept),
            _ if is("accept-encoding") => Some(&mut head.accept_encoding),
            _ if is("x-forwarded-for") => Some(&mut head.x_forwarded_for),
            _ => None,
        };
        if let Some(lines) = lines {
            if !lines.push(value) {
                return Err(bad("a list field repeated on more than 8 lines"));
            }
            continue;
        }
        let slot = match () {
            _ if is("range") => &mut head.range,
            _ if is("if-range") => &mut head.if_range,
            _ if is("x-corr-id") => &mut head.corr_id,
            _ if is("authorization") => &mut head.authorization,
            _ if is("content-type") => &mut head.content_type,
            _ if is("origin") => &mut head.origin,
            _ if is("sec-fetch-site") => &mut head.sec_fetch_site,
            _ => continue,
        };
        set_once(slot, value);
    }
    framing.check(HeadKind::Request)?;
    check_host_count(hosts, minor_version)?;
    head.keep_alive = framing.keep_alive;
    head.body = match (framing.content_length, framing.chunked) {
        (_, true) => BodyFraming::Chunked,
        (None, false) => BodyFraming::Empty,
        (Some(n), false) => BodyFraming::Length(n),
    };
    Ok(HeadParse::Complete(head))
}

/// The origin form of a request target (RFC 9112 §3.2): an absolute-form target
/// (`http://host/path?query`, what a client sends to a proxy and a server must accept,
/// §3.2.2) loses its scheme and authority; `http://host` alone means `/`.
fn origin_form(target: &str) -> &str {
    let scheme_len = ["http://", "https://"].into_iter().find_map(|scheme| {
        let starts = target
            .get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme));
        starts.then_some(scheme.len())
    });
    let Some(scheme_len) = scheme_len else {
        return target;
    };
    let rest = &target[scheme_len..];
    match rest.find(['/', '?']) {
        Some(at) if rest.as_bytes()[at] == b'/' => &rest[at..],
        _ => "/",
    }
}

/// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host line; HTTP/1.0 at most
/// one.
fn check_host_count(hosts: usize, minor_version: u8) -> Result<(), Error> {
    match hosts {
        0 if minor_version >= 1 => Err(bad("an HTTP/1.1 request without Host")),
        0 | 1 => Ok(()),
        _ => Err(bad("more than one Host line")),
    }
}

/// A Host value (RFC 9110 §7.2: `uri-host [ ":" port ]`, possibly empty): the
/// characters of a reg-name, an IP literal in brackets and a port, nothing that would
/// make it a path, a user or a second field.
fn is_valid_host(value: &[u8]) -> bool {
    value.iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b':'
                    | b'['
                    | b']'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            )
    })
}

/// Sets a singleton field. A repeated one is invalid: its value becomes empty, so it
/// fails to parse downstream (a bad Range is then ignored, a bad token refused).
pub(crate) fn set_once<'a>(slot: &mut Option<&'a [u8]>, value: &'a [u8]) {
    *slot = Some(if slot.is_some() { &[][..] } else { value });
}

/// The fields that say where a message's body ends and whether the connection goes on
/// after it, read the same way from request and response heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Framing {
    minor_version: u8,
    pub(crate) content_length: Option<u64>,
    pub(crate) chunked: bool,
    pub(crate) keep_alive: bool,
}

impl Framing {
    pub(crate) fn new(minor_version: u8) -> Framing {
        Framing {
            minor_version,
            content_length: None,
            chunked: false,
            keep_alive: minor_version >= 1,
        }
    }

    /// Takes the field `name: value` if it is Content-Length, Transfer-Encoding or
    /// Connection (true); a repeated Content-Length, or a Transfer-Encoding other than
    /// one `chunked`, is refused.
    pub(crate) fn take(
        &mut self,
        kind: HeadKind,
        name: &[u8],
        value: &[u8],
    ) -> Result<bool, Error> {
        if name.eq_ignore_ascii_case(b"content-length") {
            if self.content_length.is_some() {
                return Err(kind.bad("repeated Content-Length"));
            }
            self.content_length = Some(
                parse_content_length(value)
                    .map_err(|()| kind.bad("Content-Length is not a decimal number"))?,
            );
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if self.chunked || !value.eq_ignore_ascii_case(b"chunked") {
                return Err(match kind {
                    HeadKind::Request => Error::UnsupportedTransferEncoding {
                        value: String::from_utf8_lossy(value).into_owned(),
                    },
                    HeadKind::Response => kind.bad("Transfer-Encoding is not exactly chunked"),
                });
            }
            self.chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            self.keep_alive = keep_alive_after(value, self.minor_version, self.keep_alive);
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// Refuses what the fields say together: both Content-Length and Transfer-Encoding,
    /// or Transfer-Encoding in HTTP/1.0.
    pub(crate) fn check(&self, kind: HeadKind) -> Result<(), Error> {
        match (self.content_length, self.chunked) {
            (Some(_), true) => Err(kind.bad("both Content-Length and Transfer-Encoding")),
            (_, true) if self.minor_version == 0 => Err(kind.bad("Transfer-Encoding in HTTP/1.0")),
            _ => Ok(()),
        }
    }
}

/// At most 19 decimal digits: every such number fits a u64.
fn parse_content_length(value: &[u8]) -> Result<u64, ()> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(());
    }
    Ok(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Whether the connection stays open after a message with this `Connection` value:
/// `close` ends it, `keep-alive` keeps an HTTP/1.0 one open, anything else leaves
/// `keep_alive` as it was.
fn keep_alive_after(value: &[u8], minor_version: u8, mut keep_alive: bool) -> bool {
    for token in value.split(|&b| b == b',').map(trim) {
        if token.eq_ignore_ascii_case(b"close") {
            keep_alive = false;
        } else if token.eq_ignore_ascii_case(b"keep-alive") && minor_version == 0 {
            keep_alive = true;
        }
    }
    keep_alive
}

/// The token of an `Authorization: Bearer <token>` value: the scheme matched without
/// regard to case (RFC 9110 §11.1: `bearer` and `BEARER` are the same scheme), then one
/// or more spaces, the token trimmed. `None` for another scheme.
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = trim(value);
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"Bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    Some(trim(rest))
}

/// Strips optional white space (SP / HTAB) at both ends.
pub fn trim(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |e| e + 1);
    &value[start..end]
}

/// Which kind of head a step shared by both parsers is reading: it picks the errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadKind {
    Request,
    Response,
}

impl HeadKind {
    /// A malformed head of this kind, `reason` saying how.
    pub(crate) fn bad(self, reason: &'static str) -> Error {
        match self {
            HeadKind::Request => Error::BadHead { reason },
            HeadKind::Response => Error::BadResponseHead { reason },
        }
    }
}

/// Runs `parse` (`httparse`) over at most the first `head_len_max` bytes of `buf`: the
/// head's length once it is whole, `None` while it is incomplete and within the limit.
pub(crate) fn tokenise<'b>(
    buf: &'b [u8],
    head_len_max: usize,
    kind: HeadKind,
    parse: impl FnOnce(&'b [u8]) -> httparse::Result<usize>,
) -> Result<Option<usize>, Error> {
    let window = &buf[..buf.len().min(head_len_max)];
    match parse(window) {
        Ok(httparse::Status::Complete(n)) => Ok(Some(n)),
        Ok(httparse::Status::Partial) if window.len() >= head_len_max => Err(match kind {
            HeadKind::Request => Error::HeadTooLarge {
                limit_bytes: head_len_max,
            },
            HeadKind::Response => Error::ResponseHeadTooLarge {
                limit_bytes: head_len_max,
            },
        }),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(match kind {
            HeadKind::Request => Error::TooManyHeaders {
                limit: HEADER_COUNT_MAX,
            },
            HeadKind::Response => Error::TooManyResponseHeaders {
                limit: HEADER_COUNT_MAX,
            },
        }),
        Err(e) => Err(kind.bad(httparse_reason(e))),
    }
}

fn httparse_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token in request line",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_http1_minor_version_is_found_and_nothing_else_is() {
        let raw = b"GET /o HTTP/1.2\r\nHost: a\r\n\r\n";
        assert_eq!(later_http1_minor_at(raw), Some(14));
        let mut fixed = raw.to_vec();
        fixed[14] = b'1';
        let h = complete(&fixed);
        assert_eq!((h.minor_version, h.target), (1, "/o"));
        assert_eq!(later_http1_minor_at(b"GET /o HTTP/1.9\n\n"), Some(14));
        // Cut where a read ended, and after blank lines, as the parser reads them.
        assert_eq!(later_http1_minor_at(b"GET /o HTTP/1.2"), Some(14));
        assert_eq!(later_http1_minor_at(b"GET /o HTTP/1.2\r"), Some(14));
        assert_eq!(
            later_http1_minor_at(b"\r\nGET /o HTTP/1.2\r\n\r\n"),
            Some(16)
        );
        for other in [
            &b"GET /o HTTP/1.1\r\n\r\n"[..],
            b"GET /o HTTP/1.0\r\n\r\n",
            b"GET /o HTTP/2.0\r\n\r\n",
            b"GET /o HTTP/1.10\r\n\r\n",
            b"GET /oHTTP/1.2\r\n\r\n",
            b"HTTP/1.2\r\n",
            b"GET /o HTTP/1.",
            b"\r\n",
        ] {
            assert_eq!(later_http1_minor_at(other), None, "{other:?}");
        }
    }

    #[test]
    fn a_bearer_scheme_is_matched_without_regard_to_case() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"BEARER  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Bearerabc"), None);
        assert_eq!(bearer_token(b"Basic YWJj"), None);
        assert_eq!(bearer_token(b"Bear"), None);
        assert_eq!(bearer_token(b""), None);
    }

    fn complete(buf: &[u8]) -> RequestHead<'_> {
        match parse_request_head(buf, HEAD_LEN_MAX_DEFAULT).unwrap() {
            HeadParse::Complete(h) => h,
            HeadParse::Partial => panic!("partial"),
        }
    }

    #[test]
    fn parses_a_get_with_the_fields_we_use() {
        let raw = b"GET /o/b3:ab?x=1 HTTP/1.1\r\nHost: a\r\nRange: bytes=0-99\r\nIf-None-Match: \"b3:ab\"\r\nX-Corr-ID: c1\r\n\r\nNEXT";
        let h = complete(raw);
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.path(), "/o/b3:ab");
        assert_eq!(h.range, Some(&b"bytes=0-99"[..]));
        let tags: Vec<&[u8]> = h.if_none_match.members().collect();
        assert_eq!(tags, [&b"\"b3:ab\""[..]]);
        assert!(!h.if_match.is_present());
        assert_eq!(h.corr_id, Some(&b"c1"[..]));
        assert_eq!(h.body, BodyFraming::Empty);
        assert!(h.keep_alive);
        assert_eq!(&raw[h.head_len..], b"NEXT");
    }

    #[test]
    fn body_framing_and_keep_alive() {
        let h = complete(
            b"PUT /o HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(h.body, BodyFraming::Length(42));
        assert!(!h.keep_alive);
        let h = complete(
            b"POST /o HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\n\r\n",
        );
        assert_eq!(h.body, BodyFraming::Chunked);
        assert!(h.expect_continue);
        // HTTP/1.0 cannot take a 1xx answer: its Expect is ignored.
        let h = complete(b"PUT /o HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
        assert!(!h.expect_continue);
        let h = complete(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!h.keep_alive);
        let h = complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(h.keep_alive);
    }

    #[test]
    fn partial_until_complete_then_too_large() {
        assert_eq!(
            parse_request_head(b"GET / HTTP/1.1\r\nHost:", 64).unwrap(),
            HeadParse::Partial
        );
        let long = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(100));
        assert_eq!(
            parse_request_head(long.as_bytes(), 64).unwrap_err(),
            Error::HeadTooLarge { limit_bytes: 64 }
        );
        let err = parse_request_head(long.as_bytes(), 64).unwrap_err();
        assert_eq!(err.code().status(), 431);
    }

    #[test]
    fn refuses_ambiguous_framing() {
        let cases: [(&[u8], &str); 6] = [
            (
                b"PUT /o HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                "malformed request head: repeated Content-Length",
            ),
            (
                b"PUT /o HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                "malformed request head: Content-Length is not a decimal number",
            ),
            (
                b"PUT /o HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "malformed request head: both Content-Length and Transfer-Encoding",
            ),
            (
                b"PUT /o HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                "Transfer-Encoding \"gzip, chunked\" is not supported (only chunked)",
            ),
            (
                b"PUT /o HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                "malformed request head: Transfer-Encoding in HTTP/1.0",
            ),
            (
                b"GET /o HTTP/1.1\r\nBad Name: x\r\n\r\n",
                "malformed request head: invalid header name",
            ),
        ];
        for (raw, message) in cases {
            let err = parse_request_head(raw, HEAD_LEN_MAX_DEFAULT).unwrap_err();
            assert_eq!(err.to_string(), message);
        }
        let err = parse_request_head(b"PUT /o HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 1024)
            .unwrap_err();
        assert_eq!(err.code().status(), 501);
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut raw = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=HEADER_COUNT_MAX {
            raw.push_str(&format!("X-{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        let err = parse_request_head(raw.as_bytes(), HEAD_LEN_MAX_DEFAULT).unwrap_err();
        assert_eq!(err.code().status(), 431);
    }

    #[test]
    fn repeated_range_is_emptied() {
        let h =
            complete(b"GET /o HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\n\r\n");
        assert_eq!(h.range, Some(&b""[..]));
    }

    #[test]
    fn host_is_required_once_in_http_1_1() {
        let err = |raw: &[u8]| parse_request_head(raw, HEAD_LEN_MAX_DEFAULT).unwrap_err();
        assert_eq!(
            err(b"GET /o HTTP/1.1\r\n\r\n").to_string(),
            "malformed request head: an HTTP/1.1 request without Host"
        );
        assert_eq!(
            err(b"GET /o HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n").to_string(),
            "malformed request head: more than one Host line"
        );
        assert_eq!(
            err(b"GET /o HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n")
                .code()
                .status(),
            400
        );
        assert_eq!(
            err(b"GET /o HTTP/1.1\r\nHost: a/b\r\n\r\n").to_string(),
            "malformed request head: Host is not a host[:port]"
        );
        for ok in [
            &b"GET /o HTTP/1.0\r\n\r\n"[..],
            b"GET /o HTTP/1.1\r\nHost:\r\n\r\n",
            b"GET /o HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
            b"GET /o HTTP/1.1\r\nHost: cdn.example.com\r\n\r\n",
        ] {
            complete(ok);
        }
    }

    #[test]
    fn absolute_form_targets_are_routed_by_their_path() {
        let cases = [
            ("http://h:1/o/b3:ab?x=1", "/o/b3:ab?x=1"),
            ("HTTPS://h/o", "/o"),
            ("http://h", "/"),
            ("http://h?q", "/"),
            ("/o/b3:ab", "/o/b3:ab"),
            ("httpx://h/o", "httpx://h/o"),
        ];
        for (target, want) in cases {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(complete(raw.as_bytes()).target, want, "{target}");
        }
    }

    #[test]
    fn conditions_over_several_lines_are_one_list() {
        let h = complete(
            b"GET /o HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"x\", \r\nIf-None-Match: W/\"y\"\r\nIf-Match: *\r\n\r\n",
        );
        let tags: Vec<&[u8]> = h.if_none_match.members().collect();
        assert_eq!(tags, [&b"\"x\""[..], b"W/\"y\""]);
        assert_eq!(h.if_match.members().collect::<Vec<_>>(), [&b"*"[..]]);
        let mut raw = String::from("GET /o HTTP/1.1\r\nHost: a\r\n");
        for _ in 0..=FIELD_LINES_MAX {
            raw.push_str("If-Match: \"x\"\r\n");
        }
        raw.push_str("\r\n");
        let err = parse_request_head(raw.as_bytes(), HEAD_LEN_MAX_DEFAULT).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed request head: a list field repeated on more than 8 lines"
        );
    }
}
