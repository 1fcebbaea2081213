//! Connections: plain TCP or TLS (rustls, ring), blocking, with timeouts.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::error::ClientError;

/// Which protocol to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Oap,
    Http,
}

/// How to check the node's certificate.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// PEM file of the CA (or the self-signed certificate) to trust.
    pub ca: Option<PathBuf>,
    /// Accept any certificate: for a local node with `ron cert --dev` only.
    pub insecure_dev: bool,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port`.
    pub addr: String,
    pub protocol: Protocol,
    pub tls: Option<TlsOptions>,
}

/// A byte stream to the node.
pub trait Stream: Read + Write + Send + std::fmt::Debug {
    /// Whether the node has sent something not yet read (or closed), without waiting:
    /// an answer that came while a body was still being sent.
    fn has_unread(&mut self) -> bool;

    /// The TCP connection under the stream.
    fn tcp(&self) -> &TcpStream;
}

impl Stream for TcpStream {
    fn has_unread(&mut self) -> bool {
        socket_has_unread(self)
    }

    fn tcp(&self) -> &TcpStream {
        self
    }
}

/// When a frame or a response head must have arrived whole: each read waits at most
/// what is left. With only the per-read timeout, a node sending a head or a frame a
/// byte at a time, each within it, kept the client waiting as long as it liked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    at: std::time::Instant,
    timeout: Duration,
}

impl Deadline {
    pub(crate) fn after(timeout: Duration) -> Deadline {
        Deadline {
            at: std::time::Instant::now() + timeout,
            timeout,
        }
    }

    /// Sets the next read's timeout to what is left; `TimedOut` when nothing is.
    pub(crate) fn arm(&self, stream: &dyn Stream) -> std::io::Result<()> {
        let left = self
            .at
            .checked_duration_since(std::time::Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("not whole within {} ms", self.timeout.as_millis()),
                )
            })?;
        stream.tcp().set_read_timeout(Some(left))
    }

    /// Gives the reads after this head or frame the plain timeout again.
    pub(crate) fn disarm(&self, stream: &dyn Stream) -> std::io::Result<()> {
        stream.tcp().set_read_timeout(Some(self.timeout))
    }
}

/// The slowest body the client keeps reading once its first `timeout` has passed, bytes
/// per second: the node's own default `body_rate_min_bytes_per_s`.
pub(crate) const BODY_RATE_MIN_BYTES_PER_S: u64 = 4096;

/// When a body's bytes must have arrived: its first `n` within `timeout + n /`
/// [`BODY_RATE_MIN_BYTES_PER_S`] of its start (the node's own transfer deadline, turned
/// round). With only the per-read timeout, a node trickling a body a byte per read, each
/// within it, held the client for as long as the body was long (a 1 GiB bao answer: for
/// good).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyDeadline {
    start: std::time::Instant,
    timeout: Duration,
}

impl BodyDeadline {
    pub(crate) fn starting(timeout: Duration) -> BodyDeadline {
        BodyDeadline {
            start: std::time::Instant::now(),
            timeout,
        }
    }

    /// Sets the next read's timeout, `received` bytes in: at most the plain timeout, and
    /// no later than the next byte is due; `TimedOut` once it is past due.
    pub(crate) fn arm(&self, stream: &dyn Stream, received: u64) -> std::io::Result<()> {
        let rate_s = (received + 1) as f64 / BODY_RATE_MIN_BYTES_PER_S as f64;
        let due = self.start + self.timeout + Duration::from_secs_f64(rate_s);
        let left = due
            .checked_duration_since(std::time::Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the body fell below {BODY_RATE_MIN_BYTES_PER_S} bytes/s after {received} bytes"
                    ),
                )
            })?;
        stream.tcp().set_read_timeout(Some(left.min(self.timeout)))
    }
}

impl Stream for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }

    fn has_unread(&mut self) -> bool {
        if plaintext_ready(&mut self.conn) {
            return true;
        }
        if !socket_has_unread(&self.sock) {
            return false;
        }
        // Bytes on the socket may be records that carry no answer (a TLS 1.3 session
        // ticket): take them in without waiting, and look at what they decrypt to.
        if self.sock.set_nonblocking(true).is_err() {
            return false;
        }
        let read = self.conn.read_tls(&mut self.sock);
        let _ = self.sock.set_nonblocking(false);
        match read {
            Ok(0) => true,
            Ok(_) => plaintext_ready(&mut self.conn),
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }
}

/// Whether the session holds decrypted bytes to read, or the node closed it (or broke
/// it: the next read says how).
fn plaintext_ready(conn: &mut rustls::ClientConnection) -> bool {
    conn.process_new_packets().map_or(true, |io| {
        io.plaintext_bytes_to_read() > 0 || io.peer_has_closed()
    })
}

/// A peek that does not wait: bytes are there, or the peer closed.
fn socket_has_unread(tcp: &TcpStream) -> bool {
    if tcp.set_nonblocking(true).is_err() {
        return false;
    }
    let mut byte = [0u8; 1];
    let unread = tcp.peek(&mut byte).is_ok();
    let _ = tcp.set_nonblocking(false);
    unread
}

/// Opens the connection (and the TLS session, offering the protocol's ALPN id).
pub fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Box<dyn Stream>, ClientError> {
    let connect_error = |source| ClientError::Connect {
        addr: endpoint.addr.clone(),
        source,
    };
    let addrs: Vec<_> = endpoint
        .addr
        .to_socket_addrs()
        .map_err(connect_error)?
        .collect();
    let mut last = None;
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let tcp = tcp.ok_or_else(|| {
        connect_error(last.unwrap_or_else(|| std::io::Error::other("no address to connect to")))
    })?;
    tcp.set_nodelay(true).map_err(connect_error)?;
    tcp.set_read_timeout(Some(timeout)).map_err(connect_error)?;
    tcp.set_write_timeout(Some(timeout))
        .map_err(connect_error)?;
    let Some(tls) = &endpoint.tls else {
        return Ok(Box::new(tcp));
    };
    let alpn: &[u8] = match endpoint.protocol {
        Protocol::Oap => b"oap/1",
        Protocol::Http => b"http/1.1",
    };
    let config = client_config(tls, alpn)?;
    let host = endpoint
        .addr
        .rsplit_once(':')
        .map_or(endpoint.addr.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let name = ServerName::try_from(host)
        .map_err(|e| ClientError::Tls(format!("server name of {}: {e}", endpoint.addr)))?;
    let session =
        rustls::ClientConnection::new(config, name).map_err(|e| ClientError::Tls(e.to_string()))?;
    let mut stream = rustls::StreamOwned::new(session, tcp);
    // Complete the handshake now so certificate problems surface as TLS errors.
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| ClientError::Tls(format!("handshake with {}: {e}", endpoint.addr)))?;
    }
    if stream.conn.alpn_protocol() != Some(alpn) {
        return Err(ClientError::Tls(format!(
            "{} did not agree to ALPN {}",
            endpoint.addr,
            String::from_utf8_lossy(alpn)
        )));
    }
    Ok(Box::new(stream))
}

/// The rustls client configuration for `tls`, offering `alpn` (also used by ron-bench).
pub fn client_config(
    tls: &TlsOptions,
    alpn: &[u8],
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let mut config = match (&tls.ca, tls.insecure_dev) {
        (Some(ca), _) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(ca)
                .map_err(|e| ClientError::Tls(format!("CA file {}: {e}", ca.display())))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| ClientError::Tls(format!("CA file {}: {e}", ca.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| ClientError::Tls(format!("CA file {}: {e}", ca.display())))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        (None, true) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(InsecureDevVerifier(provider)))
            .with_no_client_auth(),
        (None, false) => {
            return Err(ClientError::Usage(
                "--tls needs --ca FILE (the node's CA or certificate) or --insecure-dev".into(),
            ))
        }
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

/// Accepts any certificate (signatures are still checked): `--insecure-dev`, for a
/// local node with a `ron cert --dev` certificate and nothing else.
#[derive(Debug)]
struct InsecureDevVerifier(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for InsecureDevVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
