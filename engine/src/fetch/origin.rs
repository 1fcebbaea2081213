//! Read-through from an HTTP or HTTPS origin (`--origin http[s]://HOST[:PORT][/PREFIX]`):
//! `GET PREFIX/o/b3:<hex>` from another ron, or from nginx or a bucket serving files
//! named by their address. HTTPS is rustls, trusting the system's CA bundle or the
//! operator's (`--origin-ca FILE`), the certificate checked against HOST. The bytes
//! carry no proof either way, so the body is verified whole: it is written to an upload
//! (hashed as it arrives, into a temp file for a large object) and only an upload whose
//! tree's root is the address is committed — nothing from an origin is served before
//! that. TLS proves who sent the bytes; only the address proves they are right.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use ron_codec::http::head::Method;
use ron_codec::http::reply::{parse_response_head, ReplyBody, ReplyParse};
use ron_codec::Address;
use ron_link::counters::FetchFailure;
use ron_shards::{Shard, StagedObject};
use rustls::pki_types::ServerName;

use crate::fetch::AttemptError;

/// Largest response head accepted from an origin.
const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Bytes read from the socket at a time.
const READ_BYTES: usize = 256 * 1024;
/// Longest content type kept from an origin's answer.
const CONTENT_TYPE_BYTES_MAX: usize = 256;

/// Where the origin is: resolved once at start-up.
#[derive(Debug, Clone)]
pub struct Origin {
    pub url: String,
    addr: SocketAddr,
    host: String,
    prefix: String,
    /// HTTPS: the TLS client and the name the certificate must carry.
    tls: Option<OriginTls>,
}

#[derive(Clone)]
struct OriginTls {
    connector: ron_io::tls::TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for OriginTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginTls")
            .field("name", &self.name)
            .finish()
    }
}

/// Why the origin (`origin`, `--origin`) cannot be used: found once, at start-up.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// Not an `http://` or `https://` URL.
    #[error("origin {url:?}: only http:// and https:// origins are supported")]
    Scheme { url: String },
    /// An HTTPS origin whose CAs could not be read, or whose host is not a name a
    /// certificate can carry.
    #[error("origin {url:?}: {reason}")]
    Tls { url: String, reason: String },
    /// Nothing between `http://` and the path.
    #[error("origin {url:?}: no host")]
    NoHost { url: String },
    /// `HOST[:PORT]` is not an address, or the name lookup failed.
    #[error("origin {url:?}: {source}")]
    Lookup { url: String, source: std::io::Error },
    /// The name lookup of `host` returned no address.
    #[error("origin {url:?}: {host} has no address")]
    NoAddress { url: String, host: String },
}

impl Origin {
    /// Parses `http[s]://HOST[:PORT][/PREFIX]` and resolves HOST (at start-up: it
    /// blocks); an HTTPS origin trusts the CAs of `ca_file`, else the system's.
    pub fn resolve(url: &str, ca_file: Option<&Path>) -> Result<Origin, OriginError> {
        let (rest, https) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => {
                return Err(OriginError::Scheme {
                    url: url.to_string(),
                })
            }
        };
        let (host, prefix) = match rest.find('/') {
            Some(at) => (&rest[..at], rest[at..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if host.is_empty() {
            return Err(OriginError::NoHost {
                url: url.to_string(),
            });
        }
        let default_port = if https { 443 } else { 80 };
        let with_port = if host.contains(':') && !host.ends_with(']') {
            host.to_string()
        } else {
            format!("{host}:{default_port}")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|source| OriginError::Lookup {
                url: url.to_string(),
                source,
            })?
            .next()
            .ok_or_else(|| OriginError::NoAddress {
                url: url.to_string(),
                host: host.to_string(),
            })?;
        let tls = https
            .then(|| origin_tls(host, ca_file))
            .transpose()
            .map_err(|reason| OriginError::Tls {
                url: url.to_string(),
                reason,
            })?;
        Ok(Origin {
            url: url.to_string(),
            addr,
            host: host.to_string(),
            prefix: prefix.to_string(),
            tls,
        })
    }

    fn error(&self, reason: FetchFailure, detail: impl ToString) -> AttemptError {
        AttemptError {
            upstream: self.url.clone(),
            reason,
            detail: detail.to_string(),
        }
    }

    /// Fetches `addr` into an upload on `shard` and returns it staged, verified whole,
    /// with the origin's content type. Every read must come within `stall`.
    pub async fn fetch(
        &self,
        shard: &Shard,
        addr: Address,
        len_max: u64,
        stall: Duration,
    ) -> Result<(StagedObject, u64), AttemptError> {
        let stream = TcpStream::connect_timeout(self.addr, stall)
            .await
            .map_err(|e| self.error(FetchFailure::Connect, e))?;
        let timeouts = stream
            .set_read_timeout(Some(stall))
            .and_then(|()| stream.set_write_timeout(Some(stall)));
        timeouts.map_err(|e| self.error(FetchFailure::Connect, e))?;
        match &self.tls {
            None => self.exchange(stream, shard, addr, len_max).await,
            Some(tls) => {
                let secured = ron_io::tls::connect(&tls.connector, tls.name.clone(), stream, stall)
                    .await
                    .map_err(|e| self.error(FetchFailure::Connect, format!("TLS: {e}")))?;
                self.exchange(secured, shard, addr, len_max).await
            }
        }
    }

    /// The request and its answer over an open connection (plain or TLS).
    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        shard: &Shard,
        addr: Address,
        len_max: u64,
    ) -> Result<(StagedObject, u64), AttemptError> {
        let io = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                self.error(FetchFailure::Timeout, e)
            }
            _ => self.error(FetchFailure::Protocol, e),
        };
        let request = format!(
            "GET {}/o/{addr} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ron/{} read-through\r\nConnection: close\r\n\r\n",
            self.prefix,
            self.host,
            env!("CARGO_PKG_VERSION")
        );
        stream.write_all(request.as_bytes()).await.map_err(io)?;

        let mut buf = vec![0u8; READ_BYTES];
        let mut filled = 0;
        let (len, content_type, head_len) = loop {
            let n = stream.read(&mut buf[filled..]).await.map_err(io)?;
            if n == 0 {
                return Err(self.error(
                    FetchFailure::Protocol,
                    "closed before a whole response head",
                ));
            }
            filled += n;
            if let Some(head) = self.parse_head(&buf[..filled], len_max)? {
                break head;
            }
        };
        let mut upload = shard.begin_upload(Some(len));
        let early = (filled - head_len).min(len as usize);
        let stored = |e: ron_shards::ShardError| self.error(FetchFailure::Storage, e);
        if let Err(e) = upload.write(&buf[head_len..head_len + early]).await {
            upload.abort().await;
            return Err(stored(e));
        }
        let mut received = early as u64;
        let started = Instant::now();
        while received < len {
            let want = ((len - received) as usize).min(buf.len());
            let n = stream.read(&mut buf[..want]).await;
            let n = match n {
                Ok(0) => {
                    upload.abort().await;
                    return Err(self.error(
                        FetchFailure::Protocol,
                        format!("closed after {received} of {len} body bytes"),
                    ));
                }
                Ok(n) => n,
                Err(e) => {
                    upload.abort().await;
                    return Err(io(e));
                }
            };
            if let Err(e) = upload.write(&buf[..n]).await {
                upload.abort().await;
                return Err(stored(e));
            }
            received += n as u64;
        }
        tracing::debug!(origin = %self.url, obj = %addr, len, elapsed_ms = started.elapsed().as_millis() as u64, "origin body received");
        let staged = upload.finish(content_type).await.map_err(stored)?;
        let computed = staged.meta.addr();
        if computed != addr {
            ron_shards::discard(staged).await;
            return Err(self.error(
                FetchFailure::BadGroup,
                format!("the body hashes to {computed}, not to {addr}"),
            ));
        }
        Ok((staged, len))
    }
}

/// The TLS client of an HTTPS origin: the CAs to trust and the name its certificate
/// must carry (HOST without its port; an IP address is checked as one).
fn origin_tls(host: &str, ca_file: Option<&Path>) -> Result<OriginTls, String> {
    let bare = match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let bare = bare.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(bare.to_string())
        .map_err(|e| format!("{bare:?} is not a name a certificate can carry: {e}"))?;
    let roots = ron_io::tls::client_roots(ca_file).map_err(|e| e.to_string())?;
    let connector = ron_io::tls::client_connector(roots).map_err(|e| e.to_string())?;
    Ok(OriginTls { connector, name })
}

impl Origin {
    /// The response head, once it is whole: the body's length, its content type and
    /// where the body starts. Anything but a 200 with a Content-Length is refused.
    fn parse_head(
        &self,
        bytes: &[u8],
        len_max: u64,
    ) -> Result<Option<(u64, String, usize)>, AttemptError> {
        let reply = match parse_response_head(bytes, HEAD_BYTES_MAX) {
            Ok(ReplyParse::Complete(reply)) => reply,
            Ok(ReplyParse::Partial) => return Ok(None),
            Err(e) => return Err(self.error(FetchFailure::Protocol, e)),
        };
        match reply.status {
            200 => {}
            404 => return Err(self.error(FetchFailure::NotFound, "answered 404")),
            status => return Err(self.error(FetchFailure::Refused, format!("answered {status}"))),
        }
        let len = match reply.body(Method::Get) {
            ReplyBody::Length(len) => len,
            ReplyBody::Chunked => {
                return Err(self.error(
                    FetchFailure::Protocol,
                    "answered with Transfer-Encoding; a read-through needs Content-Length",
                ))
            }
            _ => {
                return Err(self.error(FetchFailure::Protocol, "answered without a Content-Length"))
            }
        };
        if len > len_max {
            return Err(self.error(
                FetchFailure::TooLarge,
                format!("answered {len} bytes, over the object limit of {len_max}"),
            ));
        }
        let content_type = reply
            .content_type
            .filter(|v| v.len() <= CONTENT_TYPE_BYTES_MAX)
            .and_then(|v| std::str::from_utf8(v).ok())
            .unwrap_or_default()
            .to_string();
        Ok(Some((len, content_type, reply.head_len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn origin() -> Origin {
        Origin::resolve("http://127.0.0.1:1", None).unwrap()
    }

    #[test]
    fn only_a_200_with_a_bounded_content_length_is_taken() {
        let o = origin();
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/css\r\n\r\nhello";
        let (len, ct, at) = o.parse_head(head, 10).unwrap().unwrap();
        assert_eq!(
            (len, ct.as_str(), &head[at..]),
            (5, "text/css", &b"hello"[..])
        );
        assert!(o
            .parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", 10)
            .unwrap()
            .is_none());
        let refusal = |bytes: &[u8]| o.parse_head(bytes, 10).unwrap_err();
        let missing = refusal(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            (missing.reason, missing.detail.as_str()),
            (FetchFailure::NotFound, "answered 404")
        );
        let big = refusal(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n");
        assert_eq!(big.reason, FetchFailure::TooLarge);
        assert_eq!(big.detail, "answered 11 bytes, over the object limit of 10");
        let chunked = refusal(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(chunked.reason, FetchFailure::Protocol);
        let no_len = refusal(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(no_len.detail, "answered without a Content-Length");
        assert_eq!(
            no_len.to_string(),
            "http://127.0.0.1:1: answered without a Content-Length"
        );
    }

    proptest! {
        /// Whatever an origin sends as its head, the answer is a refusal or a length
        /// within the limit, never a panic.
        #[test]
        fn any_response_head_is_refused_or_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(Some((len, ct, at))) = origin().parse_head(&bytes, 1 << 20) {
                prop_assert!(len <= 1 << 20);
                prop_assert!(ct.len() <= CONTENT_TYPE_BYTES_MAX);
                prop_assert!(at <= bytes.len());
            }
        }
    }

    #[test]
    fn origin_urls_are_http_or_https_with_an_optional_prefix() {
        let o = Origin::resolve("http://127.0.0.1:8080/cdn/", None).unwrap();
        assert_eq!((o.addr.port(), o.prefix.as_str()), (8080, "/cdn"));
        assert_eq!(o.host, "127.0.0.1:8080");
        assert!(o.tls.is_none());
        let bare = Origin::resolve("http://127.0.0.1", None).unwrap();
        assert_eq!((bare.addr.port(), bare.prefix.as_str()), (80, ""));
        let ftp = Origin::resolve("ftp://example.invalid", None).unwrap_err();
        assert!(
            matches!(&ftp, OriginError::Scheme { url } if url == "ftp://example.invalid"),
            "{ftp:?}"
        );
        assert_eq!(
            ftp.to_string(),
            "origin \"ftp://example.invalid\": only http:// and https:// origins are supported"
        );
        let missing_ca =
            Origin::resolve("https://127.0.0.1", Some(Path::new("/nonexistent/ca.pem")));
        let missing_ca = missing_ca.unwrap_err().to_string();
        assert!(
            missing_ca
                .starts_with("origin \"https://127.0.0.1\": TLS certificate /nonexistent/ca.pem"),
            "{missing_ca}"
        );
        let no_host = Origin::resolve("http:///x", None).unwrap_err();
        assert!(matches!(no_host, OriginError::NoHost { .. }), "{no_host:?}");
        assert_eq!(no_host.to_string(), "origin \"http:///x\": no host");
        let bad_port = Origin::resolve("http://127.0.0.1:http", None).unwrap_err();
        assert!(
            matches!(bad_port, OriginError::Lookup { .. }),
            "{bad_port:?}"
        );
        assert!(
            bad_port
                .to_string()
                .starts_with("origin \"http://127.0.0.1:http\": "),
            "{bad_port}"
        );
    }
}
