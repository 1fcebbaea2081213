//! Who the client is, behind a load balancer (docs/design/client-address.md). Quotas
//! (a caller without a token is charged by its address) and logs key on the client's
//! address; behind HAProxy or a cloud balancer every connection comes from the balancer.
//! Two standard ways carry the real one, and both are believed only from the addresses
//! the operator lists (`--trusted-proxy CIDR`, key `trusted_proxies`):
//!
//! - the PROXY protocol (v1 or v2, `ron_codec::proxy`), read before anything else on a
//!   connection from a trusted address, on every listener (HTTP, OAP/1, TLS), within the
//!   header deadline;
//! - `X-Forwarded-For` on HTTP requests whose connection's client is a trusted proxy:
//!   the list is read from the right, skipping trusted proxies; the first other address
//!   is the client.
//!
//! A claim from anyone else is not read: a PROXY header from an untrusted address is
//! bytes of the protocol (and refused as such), its `X-Forwarded-For` is ignored.

use std::net::IpAddr;
use std::time::Duration;

use glommio::net::TcpStream;
use ron_codec::http::head::FieldLines;
use ron_codec::proxy::{self, Preface, V2_BYTES_MAX};

/// Addresses in one X-Forwarded-For list looked at, from the right.
const FORWARDED_HOPS_MAX: usize = 16;

/// One `ADDRESS/PREFIX` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    ip: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `192.0.2.0/24`, `2001:db8::/32`, or a lone address (the whole prefix).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (ip_text, prefix_text) = text.split_once('/').unwrap_or((text, ""));
        let ip: IpAddr = ip_text
            .parse()
            .map_err(|_| format!("{text:?} is not ADDRESS[/PREFIX]"))?;
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            "" => bits,
            p => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("{text:?}: the prefix is 0 to {bits}"))?,
        };
        Ok(Cidr { ip, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.ip, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4 peer) as IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The proxies whose word about the client is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub fn parse(list: &[String]) -> Result<TrustedProxies, String> {
        list.iter()
            .map(|text| Cidr::parse(text))
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|cidr| cidr.contains(ip))
    }

    /// The client an `X-Forwarded-For` list names, when `sender` (the connection's
    /// client) is a trusted proxy: from the right, the first address that is not a
    /// trusted proxy (the leftmost when all are). `None`: keep `sender`.
    pub fn forwarded_client(&self, sender: IpAddr, forwarded: &FieldLines<'_>) -> Option<IpAddr> {
        if !forwarded.is_present() || !self.trusts(sender) {
            return None;
        }
        let hops: Vec<IpAddr> = forwarded
            .members()
            .filter_map(|m| std::str::from_utf8(m).ok()?.parse().ok())
            .collect();
        let mut leftmost = None;
        for ip in hops.iter().rev().take(FORWARDED_HOPS_MAX) {
            if !self.trusts(*ip) {
                return Some(canonical(*ip));
            }
            leftmost = Some(canonical(*ip));
        }
        leftmost
    }
}

/// The client of a new connection: its peer, or — when the peer is a trusted proxy
/// that sends a PROXY header — the address the header names, the header consumed.
/// `Err` when a trusted peer's header is malformed or not whole within `deadline`: the
/// connection is closed without an answer.
pub async fn client_of(
    stream: &mut TcpStream,
    trusted: &TrustedProxies,
    deadline: Duration,
) -> Result<Option<IpAddr>, ()> {
    let peer = stream.peer_addr().ok().map(|a| canonical(a.ip()));
    match peer {
        Some(ip) if trusted.trusts(ip) => {}
        _ => return Ok(peer),
    }
    let header = ron_shards::lifecycle::finished_within(deadline, read_preface(stream)).await;
    match header {
        Some(Ok(Some(client))) => Ok(Some(canonical(client))),
        Some(Ok(None)) => Ok(peer),
        Some(Err(reason)) => {
            tracing::debug!(peer = ?peer, %reason, "connection from a trusted proxy refused");
            Err(())
        }
        None => Err(()),
    }
}

/// The first pause before peeking again at a partial PROXY header, and the longest: a
/// header comes in one or two segments, and a peer that stops inside one costs ~110
/// wake-ups up to the header deadline (10 s), not 10,000.
const PARTIAL_PEEK_PAUSE_MIN: Duration = Duration::from_millis(1);
const PARTIAL_PEEK_PAUSE_MAX: Duration = Duration::from_millis(100);

/// Peeks until the front of the connection is a whole PROXY header (then consumes it)
/// or is not one; the address it names, if any.
async fn read_preface(stream: &mut TcpStream) -> Result<Option<IpAddr>, proxy::ProxyError> {
    let mut buf = vec![0u8; V2_BYTES_MAX];
    let mut pause = PARTIAL_PEEK_PAUSE_MIN;
    loop {
        let seen = stream
            .peek(&mut buf)
            .await
            .map_err(|_| proxy::ProxyError("the connection failed before its header"))?;
        if seen == 0 {
            return Err(proxy::ProxyError("the connection closed before its header"));
        }
        match proxy::parse(&buf[..seen])? {
            Preface::None => return Ok(None),
            Preface::Header { len, client } => {
                consume(stream, len).await?;
                return Ok(client.map(|c| c.ip()));
            }
            Preface::Partial if seen == buf.len() => {
                return Err(proxy::ProxyError("a header longer than its limit"))
            }
            // More of it is on its way: wait a moment rather than spin on the peek (a
            // peek finds the same bytes until more come), longer each time.
            Preface::Partial => {
                glommio::timer::sleep(pause).await;
                pause = (pause * 2).min(PARTIAL_PEEK_PAUSE_MAX);
            }
        }
    }
}

/// Reads and drops exactly `len` bytes (the header just peeked).
async fn consume(stream: &mut TcpStream, len: usize) -> Result<(), proxy::ProxyError> {
    use futures_lite::AsyncReadExt;
    let mut header = vec![0u8; len];
    stream
        .read_exact(&mut header)
        .await
        .map_err(|_| proxy::ProxyError("the connection failed inside its header"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ron_codec::http::head::{parse_request_head, HeadParse};

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn blocks_contain_what_their_prefix_covers() {
        let t = trusted(&["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]);
        for yes in ["10.1.2.3", "2001:db8::5", "192.0.2.7", "::ffff:10.9.9.9"] {
            assert!(t.trusts(ip(yes)), "{yes}");
        }
        for no in ["11.0.0.1", "2001:db9::1", "192.0.2.8", "::1"] {
            assert!(!t.trusts(ip(no)), "{no}");
        }
        assert!(trusted(&["0.0.0.0/0"]).trusts(ip("203.0.113.1")));
        for bad in ["10.0.0.0/33", "ten", "10.0.0.0/x", "::/129"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    fn forwarded(t: &TrustedProxies, sender: &str, fields: &str) -> Option<IpAddr> {
        let raw = format!("GET / HTTP/1.1\r\nHost: h\r\n{fields}\r\n");
        let Ok(HeadParse::Complete(head)) = parse_request_head(raw.as_bytes(), 4096) else {
            panic!()
        };
        t.forwarded_client(ip(sender), &head.x_forwarded_for)
    }

    #[test]
    fn x_forwarded_for_is_read_from_the_right_and_only_from_trusted_senders() {
        let t = trusted(&["127.0.0.1", "10.0.0.0/8"]);
        let xff = "X-Forwarded-For: 203.0.113.9, 198.51.100.4, 10.0.0.2\r\n";
        assert_eq!(forwarded(&t, "127.0.0.1", xff), Some(ip("198.51.100.4")));
        assert_eq!(forwarded(&t, "192.0.2.1", xff), None, "an untrusted sender");
        let split = "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 10.0.0.2\r\n";
        assert_eq!(forwarded(&t, "127.0.0.1", split), Some(ip("203.0.113.9")));
        let all_trusted = "X-Forwarded-For: 10.0.0.9, 10.0.0.2\r\n";
        assert_eq!(
            forwarded(&t, "127.0.0.1", all_trusted),
            Some(ip("10.0.0.9"))
        );
        assert_eq!(
            forwarded(&t, "127.0.0.1", "X-Forwarded-For: junk\r\n"),
            None
        );
        assert_eq!(forwarded(&t, "127.0.0.1", ""), None);
    }
}
