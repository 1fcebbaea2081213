//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a load balancer puts in
//! front of a connection to say which client it carries. Only read on connections from
//! a configured trusted proxy (the engine decides that); this module reads bytes.
//!
//! - v1: one text line, `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n` or
//!   `PROXY UNKNOWN …\r\n`, at most [`V1_BYTES_MAX`] bytes.
//! - v2: the 12-byte signature, version/command, family/protocol, a big-endian length,
//!   then the addresses (TCP over IPv4: 12 bytes, IPv6: 36) and TLVs, which are skipped.
//!   `LOCAL` (a balancer's own health check) and families other than TCP carry no client.
//!
//! [`parse`] answers with the header's length (the bytes to consume before the
//! connection's own protocol starts) and the client, if it names one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest v1 line, CRLF included (the specification's bound).
pub const V1_BYTES_MAX: usize = 107;
/// Longest v2 header read: 16 bytes and the addresses, with room for a balancer's TLVs.
pub const V2_BYTES_MAX: usize = 16 + 2048;
/// The v2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// What the front of a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preface {
    /// Not a PROXY header: the connection's own protocol starts at once.
    None,
    /// Possibly a header, not yet whole: read more (within the limits).
    Partial,
    /// A whole header of `len` bytes naming `client` (none: `LOCAL`, `UNKNOWN`, or not
    /// TCP; the connection's own address stands).
    Header {
        len: usize,
        client: Option<SocketAddr>,
    },
}

/// Why a header that began like one is refused (the connection is closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("PROXY protocol header: {0}")]
pub struct ProxyError(pub &'static str);

/// Reads the PROXY header at the front of `bytes`, if there is one.
pub fn parse(bytes: &[u8]) -> Result<Preface, ProxyError> {
    if starts_as(bytes, &V2_SIGNATURE) {
        return parse_v2(bytes);
    }
    if starts_as(bytes, b"PROXY ") {
        return parse_v1(bytes);
    }
    Ok(Preface::None)
}

/// Whether `bytes` is `prefix`'s start or starts with `prefix` (so a partial read of a
/// header is not mistaken for the protocol after it).
fn starts_as(bytes: &[u8], prefix: &[u8]) -> bool {
    let n = bytes.len().min(prefix.len());
    n > 0 && bytes[..n] == prefix[..n]
}

fn parse_v1(bytes: &[u8]) -> Result<Preface, ProxyError> {
    let window = &bytes[..bytes.len().min(V1_BYTES_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if bytes.len() >= V1_BYTES_MAX {
            return Err(ProxyError("a v1 line longer than 107 bytes"));
        }
        return Ok(Preface::Partial);
    };
    let line = std::str::from_utf8(&window[..end]).map_err(|_| ProxyError("v1 is not ASCII"))?;
    let len = end + 2;
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(Preface::Header { len, client: None }),
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let src: IpAddr = src.parse().map_err(|_| ProxyError("v1 source address"))?;
            let dst: IpAddr = dst
                .parse()
                .map_err(|_| ProxyError("v1 destination address"))?;
            let v4 = *family == "TCP4";
            if src.is_ipv4() != v4 || dst.is_ipv4() != v4 {
                return Err(ProxyError("v1 addresses of another family than declared"));
            }
            let sport = parse_port(sport)?;
            parse_port(dport)?;
            Ok(Preface::Header {
                len,
                client: Some(SocketAddr::new(src, sport)),
            })
        }
        _ => Err(ProxyError("a v1 line that is not PROXY TCP4|TCP6|UNKNOWN")),
    }
}

fn parse_port(text: &str) -> Result<u16, ProxyError> {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    match (digits && !leading_zero).then(|| text.parse::<u16>()) {
        Some(Ok(port)) => Ok(port),
        _ => Err(ProxyError("v1 port")),
    }
}

fn parse_v2(bytes: &[u8]) -> Result<Preface, ProxyError> {
    if bytes.len() < 16 {
        return Ok(Preface::Partial);
    }
    let (version, command) = (bytes[12] >> 4, bytes[12] & 0x0f);
    if version != 2 {
        return Err(ProxyError("v2 version is not 2"));
    }
    let body_len = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    let len = 16 + body_len;
    if len > V2_BYTES_MAX {
        return Err(ProxyError("a v2 header longer than 2064 bytes"));
    }
    if bytes.len() < len {
        return Ok(Preface::Partial);
    }
    let body = &bytes[16..len];
    let client = match command {
        0x0 => None,
        0x1 => v2_client(bytes[13], body)?,
        _ => return Err(ProxyError("v2 command is neither LOCAL nor PROXY")),
    };
    Ok(Preface::Header { len, client })
}

/// The source of a v2 PROXY command: TCP over IPv4 (0x11) or IPv6 (0x21); any other
/// family or transport names no client.
fn v2_client(family: u8, body: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    let short = ProxyError("v2 addresses shorter than their family");
    match family {
        0x11 => {
            let a: &[u8; 12] = body
                .get(..12)
                .and_then(|a| a.try_into().ok())
                .ok_or(short)?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            let port = u16::from_be_bytes([a[8], a[9]]);
            Ok(Some(SocketAddr::new(ip.into(), port)))
        }
        0x21 => {
            let a: &[u8; 36] = body
                .get(..36)
                .and_then(|a| a.try_into().ok())
                .ok_or(short)?;
            let ip: [u8; 16] = a[..16].try_into().expect("16 bytes");
            let port = u16::from_be_bytes([a[32], a[33]]);
            Ok(Some(SocketAddr::new(Ipv6Addr::from(ip).into(), port)))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.extend_from_slice(&[0x20 | command, family]);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn v1_lines_name_their_source() {
        let line = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(line).unwrap(),
            Preface::Header {
                len: 41,
                client: Some("192.0.2.7:56324".parse().unwrap())
            }
        );
        let six = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
        let Preface::Header { client, .. } = parse(six).unwrap() else {
            panic!()
        };
        assert_eq!(client, Some("[2001:db8::1]:1".parse().unwrap()));
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n").unwrap(),
            Preface::Header {
                len: 15,
                client: None
            }
        );
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4").unwrap(), Preface::Partial);
        assert_eq!(parse(b"PRO").unwrap(), Preface::Partial);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n").unwrap(), Preface::None);
        assert_eq!(parse(b"").unwrap(), Preface::None);
    }

    #[test]
    fn v1_lines_that_lie_or_run_on_are_refused() {
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n"[..],
            b"PROXY TCP4 2001:db8::1 5.6.7.8 1 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 1\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let long = format!("PROXY TCP4 {}", "1".repeat(200));
        assert_eq!(
            parse(long.as_bytes()).unwrap_err().to_string(),
            "PROXY protocol header: a v1 line longer than 107 bytes"
        );
    }

    #[test]
    fn v2_headers_name_their_source_and_skip_tlvs() {
        let mut body = vec![192, 0, 2, 7, 10, 0, 0, 1, 0xdc, 0x04, 0x01, 0xbb];
        body.extend_from_slice(&[0x04, 0x00, 0x02, b'i', b'd']); // a TLV
        let header = v2(1, 0x11, &body);
        let mut with_request = header.clone();
        with_request.extend_from_slice(b"GET /");
        assert_eq!(
            parse(&with_request).unwrap(),
            Preface::Header {
                len: header.len(),
                client: Some("192.0.2.7:56324".parse().unwrap())
            }
        );
        let mut six = vec![0u8; 36];
        six[15] = 1;
        six[32..34].copy_from_slice(&8080u16.to_be_bytes());
        let Preface::Header { client, .. } = parse(&v2(1, 0x21, &six)).unwrap() else {
            panic!()
        };
        assert_eq!(client, Some("[::1]:8080".parse().unwrap()));
        let local = v2(0, 0x00, &[]);
        assert_eq!(
            parse(&local).unwrap(),
            Preface::Header {
                len: 16,
                client: None
            }
        );
        assert_eq!(parse(&header[..20]).unwrap(), Preface::Partial);
        assert_eq!(parse(&V2_SIGNATURE[..5]).unwrap(), Preface::Partial);
    }

    #[test]
    fn v2_headers_that_lie_are_refused() {
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x31;
        assert!(parse(&wrong_version).is_err());
        assert!(parse(&v2(1, 0x11, &[0; 4])).is_err(), "short addresses");
        assert!(parse(&v2(2, 0x11, &[0; 12])).is_err(), "unknown command");
        let mut huge = v2(1, 0x11, &[]);
        huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(parse(&huge).is_err());
    }

    /// Bytes that start as a header of either version, then anything: random bytes alone
    /// begin with a signature about once in 2^48 tries, and never reach the header's checks.
    fn header_like() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let tail = proptest::collection::vec(any::<u8>(), 0..300);
        let families = proptest::sample::select(vec![0x00u8, 0x11, 0x12, 0x21, 0x22, 0x31, 0x7f]);
        prop_oneof![
            tail.clone(),
            (any::<[u8; 8]>(), any::<[u16; 2]>(), tail.clone()).prop_map(|(ip, ports, t)| {
                let line = format!(
                    "PROXY TCP4 {}.{}.{}.{} {}.{}.{}.{} {} {}\r\n",
                    ip[0], ip[1], ip[2], ip[3], ip[4], ip[5], ip[6], ip[7], ports[0], ports[1]
                );
                [line.as_bytes(), &t].concat()
            }),
            (0u8..=2, families, 0u16..=240, tail).prop_map(|(command, family, len, t)| {
                let mut bytes = V2_SIGNATURE.to_vec();
                bytes.extend_from_slice(&[0x20 | command, family]);
                bytes.extend_from_slice(&len.to_be_bytes());
                bytes.extend_from_slice(&t);
                bytes
            }),
        ]
    }

    proptest::proptest! {
        /// Whatever the bytes, the answer is a length within them and the limits.
        #[test]
        fn any_bytes_parse_without_panicking(bytes in header_like()) {
            if let Ok(Preface::Header { len, .. }) = parse(&bytes) {
                proptest::prop_assert!(len <= bytes.len() && len <= V2_BYTES_MAX);
            }
        }
    }

    /// The strategy reaches headers (the property above is asserted, not passed over).
    #[test]
    fn the_strategy_makes_headers() {
        use proptest::strategy::{Strategy, ValueTree};
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let headers = (0..256)
            .filter(|_| {
                let bytes = header_like().new_tree(&mut runner).unwrap().current();
                matches!(parse(&bytes), Ok(Preface::Header { .. }))
            })
            .count();
        assert!(headers >= 16, "{headers} headers in 256 inputs");
    }
}
