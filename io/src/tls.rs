//! TLS with rustls (ring provider): the server configuration with ALPN, and the
//! self-signed development certificate behind `ron cert --dev`.
//!
//! One TLS listener serves every protocol; the client's ALPN choice picks the front
//! end (`h2`, `oap/1` or `http/1.1`; no ALPN means HTTP/1.1). Handshakes and record encryption
//! run on the shard that accepted the connection (futures-rustls over the shard's
//! [`PolledTcp`](crate::stream::PolledTcp)), so TLS work spreads across cores with the
//! connections. rustls bounds its buffers: outgoing plaintext waiting for the socket is
//! capped by [`SEND_BUFFER_BYTES_MAX`], incoming records by the TLS record size (16 KiB
//! + overhead; a handshake message joined from records, 64 KiB).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub use futures_rustls::TlsConnector;

/// ALPN protocol id of OAP/1.
pub const ALPN_OAP: &[u8] = b"oap/1";
/// ALPN protocol id of HTTP/1.1.
pub const ALPN_HTTP: &[u8] = b"http/1.1";
/// ALPN protocol id of HTTP/2 over TLS (RFC 9113 §3.2).
pub const ALPN_H2: &[u8] = b"h2";
/// Plaintext rustls buffers for sending before it pushes back on the writer.
pub const SEND_BUFFER_BYTES_MAX: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS certificate {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("TLS key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("cannot generate a development certificate: {0}")]
    Generate(String),
}

/// The application protocol a TLS connection negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppProtocol {
    Oap,
    Http,
    Http2,
}

impl AppProtocol {
    /// From the negotiated ALPN id; none (a client without ALPN) means HTTP.
    pub fn from_alpn(alpn: Option<&[u8]>) -> AppProtocol {
        match alpn {
            Some(ALPN_OAP) => AppProtocol::Oap,
            Some(ALPN_H2) => AppProtocol::Http2,
            _ => AppProtocol::Http,
        }
    }
}

/// The crypto provider every TLS configuration of ron uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a PEM certificate chain and private key into a server configuration that
/// offers `h2`, `oap/1` and `http/1.1`.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let identity = certified_key(cert, key)?;
    Ok(server_config_for(Arc::new(ReloadableCert::new(identity)))?.0)
}

/// Loads a PEM certificate chain and its private key, checked to belong together.
pub fn certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_error = |reason: String| TlsError::Certificate {
        path: cert.to_path_buf(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no CERTIFICATE block in the file".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    let identity = CertifiedKey::from_der(chain, key_der, &provider())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(identity))
}

/// Why a certificate cannot be presented at `now`: its leaf (the chain's first) has
/// expired or is not valid yet, or cannot be read for its dates. A client refuses
/// such a certificate, every handshake.
pub fn validity_refusal(identity: &CertifiedKey, now: std::time::SystemTime) -> Option<String> {
    let leaf = identity.cert.first()?;
    let (_, parsed) = match x509_parser::parse_x509_certificate(leaf.as_ref()) {
        Ok(parsed) => parsed,
        Err(e) => return Some(format!("its dates cannot be read: {e}")),
    };
    let now_s = match now.duration_since(std::time::UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    };
    let validity = parsed.validity();
    if now_s > validity.not_after.timestamp() {
        return Some(format!("it expired on {} (notAfter)", validity.not_after));
    }
    if now_s < validity.not_before.timestamp() {
        return Some(format!(
            "it is not valid before {} (notBefore; is this host's clock right?)",
            validity.not_before
        ));
    }
    None
}

/// [`certified_key`], refused when its certificate cannot be presented now
/// ([`validity_refusal`]): for a rotation, which keeps the running pair instead.
pub fn certified_key_in_date(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let identity = certified_key(cert, key)?;
    match validity_refusal(&identity, std::time::SystemTime::now()) {
        Some(reason) => Err(TlsError::Certificate {
            path: cert.to_path_buf(),
            reason,
        }),
        None => Ok(identity),
    }
}

/// A server configuration offering `h2`, `oap/1` and `http/1.1` that presents whatever
/// certificate `resolver` holds at each handshake.
pub fn server_config_for(
    resolver: Arc<ReloadableCert>,
) -> Result<(Arc<rustls::ServerConfig>, Arc<ReloadableCert>), TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
    // rustls picks the first of these the client offers: a browser offering h2 and
    // http/1.1 gets h2.
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_OAP.to_vec(), ALPN_HTTP.to_vec()];
    config.send_half_rtt_data = false;
    Ok((Arc::new(config), resolver))
}

/// The certificate a shard presents, replaced when the operator rotates it (the
/// control thread loads the new pair, the shard installs it). Each shard has its own:
/// its lock is taken by that shard's handshakes and, rarely, its own install, never by
/// another core. Connections already established keep the session they negotiated.
#[derive(Debug)]
pub struct ReloadableCert {
    current: std::sync::Mutex<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    pub fn new(identity: Arc<CertifiedKey>) -> ReloadableCert {
        ReloadableCert {
            current: std::sync::Mutex::new(identity),
        }
    }

    /// New handshakes present `identity` from now on.
    pub fn install(&self, identity: Arc<CertifiedKey>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = identity;
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Why a TLS handshake did not complete.
#[derive(Debug)]
pub enum AcceptError {
    /// The client closed, or the deadline passed, before it sent a byte: no TLS was
    /// attempted (a port probe, a load balancer's TCP health check).
    Silent(std::io::Error),
    /// The client sent something that is not a TLS handshake this server completes, or
    /// stopped part way.
    Failed(std::io::Error),
}

/// Accepts TLS on a freshly accepted socket, on the calling shard. The whole handshake
/// must complete within `deadline` (a deadline, not a timer between reads: a client
/// trickling its ClientHello a byte at a time gains nothing). Returns the stream and
/// the protocol its client chose by ALPN; its read timeouts are deadlines from when
/// they are set ([`PolledTcp::read_by_deadline`](crate::stream::PolledTcp::read_by_deadline)).
pub async fn accept(
    acceptor: &futures_rustls::TlsAcceptor,
    stream: crate::stream::PolledTcp,
    deadline: std::time::Duration,
) -> Result<
    (
        futures_rustls::server::TlsStream<crate::stream::PolledTcp>,
        AppProtocol,
    ),
    AcceptError,
> {
    use crate::stream::Transport;
    let received_any = stream.received_any();
    let failed = |e: std::io::Error| match received_any.get() {
        true => AcceptError::Failed(e),
        false => AcceptError::Silent(e),
    };
    stream.read_by_deadline();
    stream
        .tcp()
        .set_read_timeout(Some(deadline))
        .map_err(&failed)?;
    stream
        .tcp()
        .set_write_timeout(Some(deadline))
        .map_err(&failed)?;
    let expired = async {
        glommio::timer::sleep(deadline).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "TLS handshake deadline passed",
        ))
    };
    let mut tls = futures_lite::future::or(acceptor.accept(stream), expired)
        .await
        .map_err(&failed)?;
    tls.get_mut()
        .1
        .set_buffer_limit(Some(SEND_BUFFER_BYTES_MAX));
    let protocol = AppProtocol::from_alpn(tls.get_ref().1.alpn_protocol());
    Ok((tls, protocol))
}

/// Where a system keeps its trusted CA bundle (Debian/Ubuntu, RHEL/Fedora, Alpine and
/// others, BSDs); `SSL_CERT_FILE` comes first when it is set.
const SYSTEM_CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/usr/local/share/certs/ca-root-nss.crt",
];

/// The CAs a TLS client of ron (an HTTPS origin) trusts: the PEM certificates of
/// `ca_file`, else the system's bundle.
pub fn client_roots(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, TlsError> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let file = match ca_file {
        Some(file) => file.to_path_buf(),
        None => from_env
            .into_iter()
            .chain(SYSTEM_CA_BUNDLES.iter().map(PathBuf::from))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                TlsError::Config(format!(
                    "no system CA bundle (looked for SSL_CERT_FILE, {}); give one with --origin-ca",
                    SYSTEM_CA_BUNDLES.join(", ")
                ))
            })?,
    };
    roots_of(&file, ca_file.is_some())
}

/// The CAs of the PEM file `file`. `strict` (the operator's own CAs): every one must be
/// usable. Otherwise (a system bundle: hundreds of CAs kept by others) one rustls cannot
/// parse is passed over, as every TLS stack does, rather than the origin refused.
fn roots_of(file: &Path, strict: bool) -> Result<rustls::RootCertStore, TlsError> {
    let cert_error = |reason: String| TlsError::Certificate {
        path: file.to_path_buf(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let mut unusable = 0;
    for cert in CertificateDer::pem_file_iter(file).map_err(|e| cert_error(e.to_string()))? {
        let cert = cert.map_err(|e| cert_error(e.to_string()))?;
        match (roots.add(cert), strict) {
            (Ok(()), _) => {}
            (Err(e), true) => return Err(cert_error(e.to_string())),
            (Err(_), false) => unusable += 1,
        }
    }
    if roots.is_empty() {
        return Err(cert_error("no usable CERTIFICATE block in the file".into()));
    }
    if unusable > 0 {
        tracing::warn!(bundle = %file.display(), unusable, "CA certificates passed over: they cannot be parsed");
    }
    Ok(roots)
}

/// A TLS client configuration trusting `roots` (no client certificate).
pub fn client_connector(
    roots: rustls::RootCertStore,
) -> Result<futures_rustls::TlsConnector, TlsError> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(futures_rustls::TlsConnector::from(Arc::new(config)))
}

/// Opens TLS to `name` over a connected socket; the handshake completes within
/// `deadline` (the socket's own read and write timeouts apply too).
pub async fn connect(
    connector: &futures_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
    stream: glommio::net::TcpStream,
    deadline: std::time::Duration,
) -> std::io::Result<futures_rustls::client::TlsStream<glommio::net::TcpStream>> {
    let expired = async {
        glommio::timer::sleep(deadline).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "TLS handshake not complete in time",
        ))
    };
    futures_lite::future::or(connector.connect(name, stream), expired).await
}

/// The acceptor for a server configuration.
pub fn acceptor(config: Arc<rustls::ServerConfig>) -> futures_rustls::TlsAcceptor {
    futures_rustls::TlsAcceptor::from(config)
}

/// A self-signed certificate and its key, both PEM.
#[derive(Debug)]
pub struct DevCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A self-signed certificate for local use, valid for `localhost`, 127.0.0.1 and ::1
/// plus `extra_names`.
pub fn dev_certificate(extra_names: &[String]) -> Result<DevCertificate, TlsError> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    names.extend(extra_names.iter().cloned());
    let certified =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok(DevCertificate {
        cert_pem: certified.cert.pem(),
        key_pem: certified.key_pair.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_certificate_loads_as_a_server_config_with_every_alpn_id() {
        let dir = std::env::temp_dir().join(format!("ron-io-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dev = dev_certificate(&[]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &dev.cert_pem).unwrap();
        std::fs::write(&key, &dev.key_pem).unwrap();
        let config = server_config(&cert, &key).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"oap/1".to_vec(), b"http/1.1".to_vec()]
        );
        let err = server_config(&key, &key).unwrap_err().to_string();
        assert!(err.contains("no CERTIFICATE block"), "{err}");
        std::fs::write(&key, "not a key").unwrap();
        let err = server_config(&cert, &key).unwrap_err().to_string();
        assert!(err.starts_with("TLS key"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A certificate past its notAfter (or before its notBefore) is refused for a
    /// rotation, with the date; one in date is taken. Before, any pair whose key matched
    /// was installed on every shard and every handshake failed at the client.
    #[test]
    fn a_certificate_out_of_date_is_refused_with_its_date() {
        let dir = std::env::temp_dir().join(format!("ron-io-tls-dates-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let key_pair = rcgen::KeyPair::generate().unwrap();
        let old = params.self_signed(&key_pair).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, old.pem()).unwrap();
        std::fs::write(&key, key_pair.serialize_pem()).unwrap();
        let identity = certified_key(&cert, &key).unwrap();
        let err = certified_key_in_date(&cert, &key).unwrap_err().to_string();
        assert!(
            err.ends_with("it expired on Jan  1 00:00:00 2001 +00:00 (notAfter)"),
            "{err}"
        );
        let in_2000 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(946_771_200);
        assert_eq!(validity_refusal(&identity, in_2000), None);
        let in_1999 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(915_148_800);
        let early = validity_refusal(&identity, in_1999).unwrap();
        assert!(
            early.starts_with("it is not valid before Jan  1 00:00:00 2000"),
            "{early}"
        );
        let dev = dev_certificate(&[]).unwrap();
        std::fs::write(&cert, &dev.cert_pem).unwrap();
        std::fs::write(&key, &dev.key_pem).unwrap();
        assert!(certified_key_in_date(&cert, &key).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A system bundle with one certificate rustls cannot parse still gives the others;
    /// the operator's own CA file is refused whole.
    #[test]
    fn an_unparsable_certificate_is_passed_over_in_a_system_bundle_only() {
        let dir = std::env::temp_dir().join(format!("ron-io-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bundle = dir.join("ca-certificates.crt");
        let dev = dev_certificate(&[]).unwrap();
        let junk = "-----BEGIN CERTIFICATE-----\nanVuaw==\n-----END CERTIFICATE-----\n";
        std::fs::write(&bundle, format!("{}{junk}", dev.cert_pem)).unwrap();
        assert_eq!(roots_of(&bundle, false).unwrap().len(), 1);
        assert!(roots_of(&bundle, true).is_err());
        std::fs::write(&bundle, junk).unwrap();
        let err = roots_of(&bundle, false).unwrap_err().to_string();
        assert!(err.contains("no usable CERTIFICATE block"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn alpn_chooses_the_front_end() {
        assert_eq!(AppProtocol::from_alpn(Some(b"oap/1")), AppProtocol::Oap);
        assert_eq!(AppProtocol::from_alpn(Some(b"http/1.1")), AppProtocol::Http);
        assert_eq!(AppProtocol::from_alpn(Some(b"h2")), AppProtocol::Http2);
        assert_eq!(AppProtocol::from_alpn(None), AppProtocol::Http);
    }
}
