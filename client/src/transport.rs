//! Connections: plain TCP or TLS (rustls, ring), blocking, with timeouts.

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

    /// The TCP connection under the stream, whose reads keep the due time set on it.
    fn socket(&self) -> &DueTcp;
}

/// The TCP connection under a stream. Every read waits at most the timeout, and no
/// later than the due time set for what is being read ([`Deadline`], [`BodyDeadline`]):
/// checked on each read of the socket, so a TLS session's reads of one record (which
/// rustls repeats until the record is whole) keep it too. Set only once per read of the
/// stream, a node trickling one 16 KiB record a byte per timeout held it for days.
#[derive(Debug)]
pub struct DueTcp {
    tcp: TcpStream,
    timeout: Duration,
    due: Cell<Option<(Instant, Overdue)>>,
    /// Whether the socket's read timeout is the plain one (set again only after a due).
    plain_timeout: bool,
}

/// What a read past its due time says.
#[derive(Debug, Clone, Copy)]
enum Overdue {
    /// A head or frame not whole within the timeout.
    Whole(Duration),
    /// A body below the minimum rate, after so many bytes.
    BelowRate(u64),
}

impl Overdue {
    fn error(self) -> std::io::Error {
        let why = match self {
            Overdue::Whole(timeout) => format!("not whole within {} ms", timeout.as_millis()),
            Overdue::BelowRate(received) => format!(
                "the body fell below {BODY_RATE_MIN_BYTES_PER_S} bytes/s after {received} bytes"
            ),
        };
        std::io::Error::new(std::io::ErrorKind::TimedOut, why)
    }
}

impl DueTcp {
    fn new(tcp: TcpStream, timeout: Duration) -> DueTcp {
        DueTcp {
            tcp,
            timeout,
            due: Cell::new(None),
            plain_timeout: true,
        }
    }

    /// The reads from now on end by `due` (`None`: each within the timeout only).
    fn set_due(&self, due: Option<(Instant, Overdue)>) {
        self.due.set(due);
    }

    /// The TCP connection itself.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }
}

impl Read for DueTcp {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some((at, overdue)) = self.due.get() else {
            if !self.plain_timeout {
                self.tcp.set_read_timeout(Some(self.timeout))?;
                self.plain_timeout = true;
            }
            return self.tcp.read(buf);
        };
        let left = at
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| overdue.error())?;
        self.plain_timeout = false;
        self.tcp.set_read_timeout(Some(left.min(self.timeout)))?;
        match self.tcp.read(buf) {
            Err(e) if is_timeout(&e) && Instant::now() >= at => Err(overdue.error()),
            read => read,
        }
    }
}

impl Write for DueTcp {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

impl Stream for DueTcp {
    fn has_unread(&mut self) -> bool {
        socket_has_unread(&self.tcp)
    }

    fn socket(&self) -> &DueTcp {
        self
    }
}

/// When a frame or a response head must have arrived whole: each read waits at most
/// what is left. With only the per-read timeout, a node sending a head or a frame a
/// byte at a time, each within it, kept the client waiting as long as it liked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    pub(crate) fn after(timeout: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + timeout,
            timeout,
        }
    }

    /// The stream's reads from now on end by this deadline.
    pub(crate) fn arm(&self, stream: &dyn Stream) {
        let overdue = Overdue::Whole(self.timeout);
        stream.socket().set_due(Some((self.at, overdue)));
    }

    /// Gives the reads after this head or frame the plain timeout again.
    pub(crate) fn disarm(&self, stream: &dyn Stream) {
        stream.socket().set_due(None);
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
    start: Instant,
    timeout: Duration,
}

impl BodyDeadline {
    pub(crate) fn starting(timeout: Duration) -> BodyDeadline {
        BodyDeadline {
            start: Instant::now(),
            timeout,
        }
    }

    /// The stream's next reads, `received` bytes in, end when the next byte is due.
    pub(crate) fn arm(&self, stream: &dyn Stream, received: u64) {
        let rate_s = (received + 1) as f64 / BODY_RATE_MIN_BYTES_PER_S as f64;
        let due = self.start + self.timeout + Duration::from_secs_f64(rate_s);
        stream
            .socket()
            .set_due(Some((due, Overdue::BelowRate(received))));
    }

    /// Gives the reads after the body the plain timeout again.
    pub(crate) fn disarm(&self, stream: &dyn Stream) {
        stream.socket().set_due(None);
    }
}

impl Stream for rustls::StreamOwned<rustls::ClientConnection, DueTcp> {
    fn socket(&self) -> &DueTcp {
        &self.sock
    }

    fn has_unread(&mut self) -> bool {
        if plaintext_ready(&mut self.conn) {
            return true;
        }
        if !socket_has_unread(&self.sock.tcp) {
            return false;
        }
        // Bytes on the socket may be records that carry no answer (a TLS 1.3 session
        // ticket): take them in without waiting, and look at what they decrypt to.
        if self.sock.tcp.set_nonblocking(true).is_err() {
            return false;
        }
        let read = self.conn.read_tls(&mut self.sock);
        let _ = self.sock.tcp.set_nonblocking(false);
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
    let tcp = DueTcp::new(tcp, timeout);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that loops over the socket's reads until it has what it wants — as
    /// rustls does for one TLS record, and `read_exact` here — keeps the due time: a
    /// node trickling a byte every 20 ms (each within the 300 ms timeout) fails it at
    /// ~0.3 s. Armed only before the stream's read, the 1,000 bytes took 20 s.
    #[test]
    fn reads_looping_over_the_socket_keep_the_due_time() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let node = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            for _ in 0..1_000 {
                std::thread::sleep(Duration::from_millis(20));
                if s.write_all(b"x").is_err() {
                    return;
                }
            }
        });
        let timeout = Duration::from_millis(300);
        let mut socket = DueTcp::new(TcpStream::connect(addr).unwrap(), timeout);
        let deadline = Deadline::after(timeout);
        let started = Instant::now();
        deadline.arm(&socket);
        let err = socket.read_exact(&mut [0u8; 1_000]).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2), "{err}");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(err.to_string(), "not whole within 300 ms");
        deadline.disarm(&socket);
        drop(socket);
        node.join().unwrap();
    }
}
