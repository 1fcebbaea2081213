//! Response heads as a client reads them: the other side of [`super::response`], which
//! writes them. `httparse` tokenises; this module enforces the head limit and extracts
//! the fields a client acts on, borrowing from the caller's read buffer (nothing is
//! allocated unless the head is refused).
//!
//! Framing is read by the same rules as for requests ([`super::head`]): a repeated
//! Content-Length or one that is not 1 to 19 decimal digits, Content-Length beside
//! Transfer-Encoding, or a Transfer-Encoding other than exactly `chunked` are refused, because a client that guesses where a body ends
//! reads its next answer out of the wrong bytes. The parser does not know the request
//! method, so whether a body follows is [`Reply::body`]'s answer, given the method.

use crate::address::Address;
use crate::error::Error;
use crate::http::head::{
    set_once, tokenise, trim, Framing, HeadKind, Method, Parsed, HEADER_COUNT_MAX,
};
use crate::http::range::{parse_u64, split_once};

/// How the body after a response head is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyBody {
    /// No body: the answer to HEAD, a 1xx, 204 or 304, whatever the head announces.
    Empty,
    /// Exactly this many bytes (possibly 0).
    Length(u64),
    /// `Transfer-Encoding: chunked` ([`super::chunked::ChunkedDecoder`] reads it).
    Chunked,
    /// Neither Content-Length nor Transfer-Encoding: the body ends when the server
    /// closes the connection (which then cannot carry another request).
    UntilClose,
}

/// A parsed response head; byte fields borrow from the read buffer. A field sent twice
/// is `Some(b"")` (and so fails to parse downstream); Content-Length twice is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply<'a> {
    pub status: u16,
    /// The reason phrase as sent (empty if missing or not visible ASCII).
    pub reason: &'a str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Content-Length as announced; the answer to HEAD announces the length a GET would
    /// send (see [`Reply::body`] for what follows this head).
    pub content_length: Option<u64>,
    /// `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// Whether the server keeps the connection open after this answer (`Connection`,
    /// defaulting by version). A body that runs [`ReplyBody::UntilClose`] ends it anyway.
    pub keep_alive: bool,
    pub content_type: Option<&'a [u8]>,
    /// Raw value; [`Reply::parsed_content_range`] parses it.
    pub content_range: Option<&'a [u8]>,
    /// Raw value, quotes included; [`Reply::etag_address`] reads a ron ETag.
    pub etag: Option<&'a [u8]>,
    /// Raw value; [`Reply::retry_after_secs`] reads delay-seconds.
    pub retry_after: Option<&'a [u8]>,
    pub location: Option<&'a [u8]>,
    pub corr_id: Option<&'a [u8]>,
    /// Bytes of the head, blank line included: the body starts here.
    pub head_len: usize,
}

/// A Content-Range value (RFC 9110 §14.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentRange {
    /// `bytes first-last/total`, inclusive; `total` is `None` for `*` (unknown).
    Bytes {
        first: u64,
        last: u64,
        total: Option<u64>,
    },
    /// `bytes */total`: the length a 416 states.
    Unsatisfied { total: u64 },
}

/// What [`parse_response_head`] makes of the bytes read so far.
pub type ReplyParse<'a> = Parsed<Reply<'a>>;

fn bad(reason: &'static str) -> Error {
    HeadKind::Response.bad(reason)
}

/// Parses the response head at the front of `buf`, never looking past `head_len_max`
/// bytes ([`super::head::HEAD_LEN_MAX_DEFAULT`] suits ron's own answers).
pub fn parse_response_head(buf: &[u8], head_len_max: usize) -> Result<ReplyParse<'_>, Error> {
    let mut fields = [httparse::EMPTY_HEADER; HEADER_COUNT_MAX];
    let mut response = httparse::Response::new(&mut fields);
    let tokenised = tokenise(buf, head_len_max, HeadKind::Response, |w| response.parse(w))?;
    let Some(head_len) = tokenised else {
        return Ok(ReplyParse::Partial);
    };
    let (Some(minor_version), Some(status)) = (response.version, response.code) else {
        return Err(bad("incomplete status line"));
    };
    if status < 100 {
        return Err(bad("status code below 100"));
    }
    let mut reply = Reply {
        status,
        reason: response.reason.unwrap_or_default(),
        minor_version,
        content_length: None,
        chunked: false,
        keep_alive: false,
        content_type: None,
        content_range: None,
        etag: None,
        retry_after: None,
        location: None,
        corr_id: None,
        head_len,
    };
    let mut framing = Framing::new(minor_version);
    for field in response.headers.iter() {
        let (name, value) = (field.name.as_bytes(), trim(field.value));
        if !framing.take(HeadKind::Response, name, value)? {
            if let Some(slot) = reply.slot(name) {
                set_once(slot, value);
            }
        }
    }
    framing.check(HeadKind::Response)?;
    reply.content_length = framing.content_length;
    reply.chunked = framing.chunked;
    reply.keep_alive = framing.keep_alive;
    Ok(ReplyParse::Complete(reply))
}

impl<'a> Reply<'a> {
    /// Where a singleton field the parser keeps goes, by its name.
    fn slot(&mut self, name: &[u8]) -> Option<&mut Option<&'a [u8]>> {
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        Some(match () {
            _ if is("content-type") => &mut self.content_type,
            _ if is("content-range") => &mut self.content_range,
            _ if is("etag") => &mut self.etag,
            _ if is("retry-after") => &mut self.retry_after,
            _ if is("location") => &mut self.location,
            _ if is("x-corr-id") => &mut self.corr_id,
            _ => return None,
        })
    }

    /// A 1xx other than 101: an interim answer; the final head follows it.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// What follows this head when it answers a `request` request.
    pub fn body(&self, request: Method) -> ReplyBody {
        let bodiless = request == Method::Head
            || self.status < 200
            || self.status == 204
            || self.status == 304;
        match (bodiless, self.chunked, self.content_length) {
            (true, _, _) => ReplyBody::Empty,
            (false, true, _) => ReplyBody::Chunked,
            (false, false, Some(len)) => ReplyBody::Length(len),
            (false, false, None) => ReplyBody::UntilClose,
        }
    }

    /// The address in a ron ETag (`"b3:<hex>"`, exactly one pair of quotes).
    pub fn etag_address(&self) -> Option<Address> {
        let quoted = self.etag?;
        let inner = quoted.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
        Address::parse(inner).ok()
    }

    /// Retry-After in seconds, when it is delay-seconds (an HTTP-date gives `None`).
    pub fn retry_after_secs(&self) -> Option<u64> {
        parse_u64(self.retry_after?)
    }

    /// The Content-Range, if the answer has one.
    pub fn parsed_content_range(&self) -> Result<Option<ContentRange>, Error> {
        self.content_range.map(parse_content_range).transpose()
    }
}

/// Parses `bytes first-last/total`, `bytes first-last/*` or `bytes */total`.
pub fn parse_content_range(value: &[u8]) -> Result<ContentRange, Error> {
    let malformed = || bad("Content-Range is not bytes FIRST-LAST/TOTAL or bytes */TOTAL");
    let (unit, rest) = split_once(trim(value), b' ').ok_or_else(malformed)?;
    if !unit.eq_ignore_ascii_case(b"bytes") {
        return Err(bad("Content-Range unit is not bytes"));
    }
    let (range, total) = split_once(trim(rest), b'/').ok_or_else(malformed)?;
    let total = match total {
        b"*" => None,
        digits => Some(parse_u64(digits).ok_or_else(malformed)?),
    };
    if range == b"*" {
        return total
            .map(|total| ContentRange::Unsatisfied { total })
            .ok_or_else(malformed);
    }
    let (first, last) = split_once(range, b'-').ok_or_else(malformed)?;
    let (first, last) = (
        parse_u64(first).ok_or_else(malformed)?,
        parse_u64(last).ok_or_else(malformed)?,
    );
    if first > last || total.is_some_and(|total| last >= total) {
        return Err(bad("Content-Range is empty or ends past its total"));
    }
    Ok(ContentRange::Bytes { first, last, total })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::HEAD_LEN_MAX_DEFAULT;
    use crate::http::response::ResponseHead;
    use bytes::BytesMut;
    use proptest::prelude::*;

    fn complete(buf: &[u8]) -> Reply<'_> {
        match parse_response_head(buf, HEAD_LEN_MAX_DEFAULT).unwrap() {
            ReplyParse::Complete(r) => r,
            ReplyParse::Partial => panic!("partial"),
        }
    }

    fn refusal(buf: &[u8]) -> String {
        parse_response_head(buf, HEAD_LEN_MAX_DEFAULT)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn parses_a_206_with_the_fields_clients_use() {
        let addr = Address::of(b"abc");
        let raw = format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: 100\r\nETag: \"{addr}\"\r\n\
             Content-Range: bytes 0-99/1000\r\nContent-Type: text/css\r\nX-Corr-ID: c1\r\n\
             Retry-After: 3\r\nLocation: /o/{addr}\r\n\r\nBODY"
        );
        let r = complete(raw.as_bytes());
        assert_eq!(
            (r.status, r.reason, r.minor_version),
            (206, "Partial Content", 1)
        );
        assert_eq!(r.content_length, Some(100));
        assert_eq!(r.body(Method::Get), ReplyBody::Length(100));
        assert_eq!(r.etag_address(), Some(addr));
        assert_eq!(
            r.parsed_content_range().unwrap(),
            Some(ContentRange::Bytes {
                first: 0,
                last: 99,
                total: Some(1000)
            })
        );
        assert_eq!(r.content_type, Some(&b"text/css"[..]));
        assert_eq!(r.corr_id, Some(&b"c1"[..]));
        assert_eq!(r.retry_after_secs(), Some(3));
        assert_eq!(r.location, Some(format!("/o/{addr}").as_bytes()));
        assert!(r.keep_alive);
        assert_eq!(&raw.as_bytes()[r.head_len..], b"BODY");
    }

    #[test]
    fn the_body_follows_method_status_and_framing() {
        let r = complete(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n");
        assert_eq!(r.body(Method::Head), ReplyBody::Empty);
        assert_eq!(r.content_length, Some(7), "HEAD still reads the length");
        for status in ["100 Continue", "204 No Content", "304 Not Modified"] {
            let raw = format!("HTTP/1.1 {status}\r\nContent-Length: 7\r\n\r\n");
            assert_eq!(complete(raw.as_bytes()).body(Method::Get), ReplyBody::Empty);
        }
        let r = complete(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(r.body(Method::Get), ReplyBody::Chunked);
        let r = complete(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(r.body(Method::Put), ReplyBody::UntilClose);
        assert!(complete(b"HTTP/1.1 100 Continue\r\n\r\n").is_interim());
        assert!(!complete(b"HTTP/1.1 101 Switching\r\n\r\n").is_interim());
        assert!(!complete(b"HTTP/1.1 200 OK\r\n\r\n").is_interim());
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        assert!(!complete(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!complete(b"HTTP/1.0 200 OK\r\n\r\n").keep_alive);
        assert!(complete(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn partial_until_complete_then_too_large() {
        assert_eq!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Le", 64).unwrap(),
            ReplyParse::Partial
        );
        let long = format!("HTTP/1.1 200 OK\r\nX-Pad: {}\r\n\r\n", "a".repeat(100));
        let err = parse_response_head(long.as_bytes(), 64).unwrap_err();
        assert_eq!(err, Error::ResponseHeadTooLarge { limit_bytes: 64 });
        assert_eq!(err.to_string(), "response head exceeds the 64-byte limit");
        assert_eq!(err.code().status(), 502);
        let mut many = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..=HEADER_COUNT_MAX {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(
            refusal(many.as_bytes()),
            "response head has more than 64 header fields"
        );
    }

    #[test]
    fn refuses_ambiguous_framing_and_bad_status_lines() {
        let cases: [(&[u8], &str); 8] = [
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                "repeated Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
                "Content-Length is not a decimal number",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
                "Content-Length is not a decimal number",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "both Content-Length and Transfer-Encoding",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                "Transfer-Encoding is not exactly chunked",
            ),
            (
                b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                "Transfer-Encoding in HTTP/1.0",
            ),
            (b"HTTP/1.1 099 Low\r\n\r\n", "status code below 100"),
            (b"HTTP/1.1 2x\r\n\r\n", "invalid status"),
        ];
        for (raw, reason) in cases {
            assert_eq!(refusal(raw), format!("malformed response head: {reason}"));
        }
        assert!(parse_response_head(b"SSH-2.0-OpenSSH\r\n\r\n", 1024).is_err());
        assert!(parse_response_head(b"GET / HTTP/1.1\r\n\r\n", 1024).is_err());
    }

    #[test]
    fn repeated_fields_are_emptied_and_odd_values_read_as_none() {
        let r = complete(b"HTTP/1.1 200 OK\r\nETag: \"a\"\r\nETag: \"b\"\r\nRetry-After: Fri, 31 Dec 1999 23:59:59 GMT\r\n\r\n");
        assert_eq!(r.etag, Some(&b""[..]));
        assert_eq!(r.etag_address(), None);
        assert_eq!(r.retry_after_secs(), None);
        assert_eq!(r.parsed_content_range(), Ok(None));
    }

    #[test]
    fn content_range_forms() {
        let ok: [(&[u8], ContentRange); 4] = [
            (
                b"bytes 0-0/1",
                ContentRange::Bytes {
                    first: 0,
                    last: 0,
                    total: Some(1),
                },
            ),
            (
                b" BYTES 5-9/*",
                ContentRange::Bytes {
                    first: 5,
                    last: 9,
                    total: None,
                },
            ),
            (
                b"bytes */18446744073709551615",
                ContentRange::Unsatisfied { total: u64::MAX },
            ),
            (b"bytes */0", ContentRange::Unsatisfied { total: 0 }),
        ];
        for (value, expected) in ok {
            assert_eq!(parse_content_range(value), Ok(expected));
        }
        for value in [
            &b"bytes 9-5/10"[..],
            b"bytes 0-10/10",
            b"bytes */*",
            b"bytes 0-/10",
            b"items 0-1/2",
            b"bytes=0-1/2",
            b"",
        ] {
            let err = parse_content_range(value).unwrap_err();
            assert!(matches!(err, Error::BadResponseHead { .. }), "{value:?}");
        }
    }

    /// One head as the node's writer produces it, with what it should parse back as.
    #[derive(Debug, Clone)]
    struct Written {
        status: u16,
        len: u64,
        etag: Option<Address>,
        range: Option<ContentRange>,
        close: bool,
    }

    fn arb_written() -> impl Strategy<Value = Written> {
        let range = prop_oneof![
            Just(None),
            any::<u64>().prop_map(|total| Some(ContentRange::Unsatisfied { total })),
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(a, b, c)| {
                let mut v = [a, b, c];
                v.sort_unstable();
                (v[1] < v[2]).then_some(ContentRange::Bytes {
                    first: v[0],
                    last: v[1],
                    total: Some(v[2]),
                })
            }),
        ];
        (
            100u16..1000,
            // Content-Length has at most 19 digits, as in requests.
            0..=9_999_999_999_999_999_999u64,
            proptest::option::of(any::<[u8; 32]>().prop_map(Address::from_bytes)),
            range,
            any::<bool>(),
        )
            .prop_map(|(status, len, etag, range, close)| Written {
                status,
                len,
                etag,
                range,
                close,
            })
    }

    fn write(w: &Written) -> BytesMut {
        let mut out = BytesMut::new();
        let mut head = ResponseHead::start(&mut out, w.status);
        head.content_length(w.len);
        if let Some(addr) = &w.etag {
            head.etag(addr);
        }
        match w.range {
            Some(ContentRange::Bytes {
                first,
                last,
                total: Some(total),
            }) => {
                head.content_range(first, last, total);
            }
            Some(ContentRange::Unsatisfied { total }) => {
                head.content_range_unsatisfied(total);
            }
            _ => {}
        }
        if w.close {
            head.header("Connection", b"close");
        }
        head.finish();
        out
    }

    /// Bytes that often make a whole head: a status line, header lines with names the
    /// parser knows and values from a small alphabet, usually the blank line.
    fn head_like() -> impl Strategy<Value = Vec<u8>> {
        const NAMES: [&str; 8] = [
            "Content-Length",
            "Transfer-Encoding",
            "Content-Range",
            "ETag",
            "Retry-After",
            "Connection",
            "Content-Type",
            "X-Other",
        ];
        const VALUE: &[u8] = b" 0123456789-/*\"bytes chunked close b3:";
        let line = (
            prop::sample::select(&NAMES[..]),
            proptest::collection::vec(prop::sample::select(VALUE), 0..24),
        )
            .prop_map(|(name, value)| [name.as_bytes(), b": ", &value, b"\r\n"].concat());
        (
            prop::sample::select(vec![
                &b"HTTP/1.1 206 Partial\r\n"[..],
                b"HTTP/1.0 200 OK\r\n",
            ]),
            proptest::collection::vec(line, 0..6),
            prop::sample::select(vec![&b"\r\n"[..], b"\r\nBODY", b""]),
        )
            .prop_map(|(status, lines, end)| [status, &lines.concat(), end].concat())
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_parse_or_err_within_the_limit(
            bytes in prop_oneof![proptest::collection::vec(any::<u8>(), 0..600), head_like()],
            limit in 0usize..700,
        ) {
            match parse_response_head(&bytes, limit) {
                Ok(ReplyParse::Complete(r)) => {
                    prop_assert!(r.head_len <= bytes.len().min(limit));
                    let _ = (r.etag_address(), r.retry_after_secs(), r.parsed_content_range());
                    let alone = parse_response_head(&bytes[..r.head_len], limit);
                    prop_assert_eq!(alone, Ok(ReplyParse::Complete(r)));
                }
                Ok(ReplyParse::Partial) => prop_assert!(bytes.len() < limit),
                Err(_) => {}
            }
        }

        #[test]
        fn written_heads_parse_back(w in arb_written(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            let head = write(&w);
            let mut wire = head.to_vec();
            wire.extend_from_slice(&tail);
            for cut in 0..head.len() {
                prop_assert_eq!(
                    parse_response_head(&wire[..cut], HEAD_LEN_MAX_DEFAULT),
                    Ok(ReplyParse::Partial)
                );
            }
            let r = match parse_response_head(&wire, HEAD_LEN_MAX_DEFAULT) {
                Ok(ReplyParse::Complete(r)) => r,
                other => return Err(TestCaseError::fail(format!("{other:?}"))),
            };
            prop_assert_eq!(r.head_len, head.len());
            prop_assert_eq!(
                parse_response_head(&head, HEAD_LEN_MAX_DEFAULT),
                Ok(ReplyParse::Complete(r.clone()))
            );
            prop_assert_eq!(r.status, w.status);
            prop_assert_eq!(r.reason, crate::http::response::reason_phrase(w.status));
            prop_assert_eq!(r.content_length, Some(w.len));
            prop_assert_eq!(r.etag_address(), w.etag);
            prop_assert_eq!(r.parsed_content_range(), Ok(w.range));
            prop_assert_eq!(r.keep_alive, !w.close);
            prop_assert!(!r.chunked);
        }
    }
}
