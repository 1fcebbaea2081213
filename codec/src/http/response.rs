//! Response heads, written into a caller-owned buffer that is reused across requests, so
//! the common response allocates nothing: status lines are static, numbers go through
//! `itoa`, addresses through [`Address::text`].

use bytes::{BufMut, BytesMut};

use crate::address::Address;

/// The reason phrase for a status this node sends.
pub const fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// True if `value` may be written as a header value as is: visible ASCII, space and tab.
pub fn is_safe_header_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// Writes one response head into `out`. Finish with [`ResponseHead::finish`].
#[derive(Debug)]
pub struct ResponseHead<'o> {
    out: &'o mut BytesMut,
}

impl<'o> ResponseHead<'o> {
    /// Starts with the status line.
    pub fn start(out: &'o mut BytesMut, status: u16) -> Self {
        let mut code = itoa::Buffer::new();
        out.put_slice(b"HTTP/1.1 ");
        out.put_slice(code.format(status).as_bytes());
        out.put_u8(b' ');
        out.put_slice(reason_phrase(status).as_bytes());
        out.put_slice(b"\r\n");
        ResponseHead { out }
    }

    /// A header whose value the caller has checked ([`is_safe_header_value`]) or built.
    pub fn header(&mut self, name: &str, value: &[u8]) -> &mut Self {
        debug_assert!(
            is_safe_header_value(value),
            "unsafe header value for {name}"
        );
        self.out.put_slice(name.as_bytes());
        self.out.put_slice(b": ");
        self.out.put_slice(value);
        self.out.put_slice(b"\r\n");
        self
    }

    pub fn header_u64(&mut self, name: &str, value: u64) -> &mut Self {
        let mut digits = itoa::Buffer::new();
        self.header(name, digits.format(value).as_bytes())
    }

    pub fn content_length(&mut self, len: u64) -> &mut Self {
        self.header_u64("Content-Length", len)
    }

    /// `ETag: "b3:<hex>"` — exactly one pair of quotes.
    pub fn etag(&mut self, addr: &Address) -> &mut Self {
        let mut quoted =
            [b'"'; 2 + crate::address::ADDRESS_PREFIX.len() + crate::address::ADDRESS_HEX_LEN];
        let last = quoted.len() - 1;
        quoted[1..last].copy_from_slice(&addr.text());
        self.header("ETag", &quoted)
    }

    /// `Content-Range: bytes first-last/total`.
    pub fn content_range(&mut self, first: u64, last: u64, total: u64) -> &mut Self {
        let mut d = itoa::Buffer::new();
        self.out.put_slice(b"Content-Range: bytes ");
        self.out.put_slice(d.format(first).as_bytes());
        self.out.put_u8(b'-');
        self.out.put_slice(d.format(last).as_bytes());
        self.out.put_u8(b'/');
        self.out.put_slice(d.format(total).as_bytes());
        self.out.put_slice(b"\r\n");
        self
    }

    /// `Content-Range: bytes */total` (416).
    pub fn content_range_unsatisfied(&mut self, total: u64) -> &mut Self {
        let mut d = itoa::Buffer::new();
        self.out.put_slice(b"Content-Range: bytes */");
        self.out.put_slice(d.format(total).as_bytes());
        self.out.put_slice(b"\r\n");
        self
    }

    /// Ends the head with the blank line.
    pub fn finish(self) {
        self.out.put_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_full_206_head() {
        let addr = Address::of(b"abc");
        let mut out = BytesMut::new();
        let mut head = ResponseHead::start(&mut out, 206);
        head.content_length(100)
            .etag(&addr)
            .content_range(0, 99, 1000)
            .header("Accept-Ranges", b"bytes");
        head.finish();
        let expected = format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: 100\r\nETag: \"{addr}\"\r\nContent-Range: bytes 0-99/1000\r\nAccept-Ranges: bytes\r\n\r\n"
        );
        assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
    }

    #[test]
    fn unsatisfied_range_and_unknown_status() {
        let mut out = BytesMut::new();
        let mut head = ResponseHead::start(&mut out, 299);
        head.content_range_unsatisfied(u64::MAX);
        head.finish();
        assert_eq!(
            &out[..],
            b"HTTP/1.1 299 Unknown\r\nContent-Range: bytes */18446744073709551615\r\n\r\n"
        );
    }

    #[test]
    fn header_value_safety() {
        assert!(is_safe_header_value(b"abc-123 \t~"));
        assert!(!is_safe_header_value(b"a\r\nInjected: 1"));
        assert!(!is_safe_header_value(b"\x00"));
        assert!(!is_safe_header_value("é".as_bytes()));
    }
}
