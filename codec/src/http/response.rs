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
        406 => "Not Acceptable",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

/// Length of an IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const HTTP_DATE_LEN: usize = 29;

/// Formats `unix_secs` as an IMF-fixdate (RFC 9110 §5.6.7) without allocating.
pub fn http_date(unix_secs: u64) -> [u8; HTTP_DATE_LEN] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = unix_secs / 86_400;
    let secs_of_day = unix_secs % 86_400;
    // Civil-from-days (Howard Hinnant), shifted so the era starts on 0000-03-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    let two = |out: &mut [u8], v: u64| {
        out[0] = b'0' + (v / 10) as u8;
        out[1] = b'0' + (v % 10) as u8;
    };
    two(&mut out[5..7], day as u64);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    let y = year.clamp(0, 9999) as u64;
    two(&mut out[12..14], y / 100);
    two(&mut out[14..16], y % 100);
    two(&mut out[17..19], secs_of_day / 3600);
    two(&mut out[20..22], secs_of_day / 60 % 60);
    two(&mut out[23..25], secs_of_day % 60);
    out
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
    fn every_status_this_node_sends_has_its_reason_phrase() {
        let sent = crate::error::ErrorCode::ALL.map(|c| c.status());
        for status in sent.into_iter().chain([100, 200, 201, 204, 206, 304]) {
            assert_ne!(reason_phrase(status), "Unknown", "{status}");
        }
    }

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
    fn http_dates_match_known_instants() {
        assert_eq!(&http_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&http_date(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&http_date(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(&http_date(1_795_219_199), b"Fri, 20 Nov 2026 23:59:59 GMT");
        assert_eq!(&http_date(4_102_444_800), b"Fri, 01 Jan 2100 00:00:00 GMT");
    }

    #[test]
    fn header_value_safety() {
        assert!(is_safe_header_value(b"abc-123 \t~"));
        assert!(!is_safe_header_value(b"a\r\nInjected: 1"));
        assert!(!is_safe_header_value(b"\x00"));
        assert!(!is_safe_header_value("é".as_bytes()));
    }
}
