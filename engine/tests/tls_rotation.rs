//! A TLS certificate rotated under a running node (what an ACME client does every 60–90
//! days): new handshakes get the new pair within a few seconds, connections already
//! open go on, and a broken or expired pair is refused while the running one stays.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

const WAIT: Duration = Duration::from_secs(20);

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn der(pem: &[u8]) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem).unwrap()
}

/// A TLS connection to `addr` and the certificate the node presented.
/// Handshakes that must all present a certificate: each shard installs a new pair from
/// its own mailbox, and the kernel spreads connections over the shards' listeners —
/// four could all land on the shard that installed it first (seen once under load);
/// sixteen over two shards all miss the other with odds of 2^-15.
const HANDSHAKES: usize = 16;

fn handshake(
    config: &Arc<rustls::ClientConfig>,
    addr: &str,
) -> (TlsStream, CertificateDer<'static>) {
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::clone(config), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.flush().unwrap();
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    let served = tls.conn.peer_certificates().unwrap()[0]
        .clone()
        .into_owned();
    (tls, served)
}

/// One keep-alive GET on an open TLS connection: the status.
fn get_over(tls: &mut TlsStream, path: &str) -> u16 {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    tls.write_all(raw.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let len: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; len];
    tls.read_exact(&mut body).unwrap();
    text[9..12].parse().unwrap()
}

fn install(live: &Path, from: &Path) {
    for file in ["key.pem", "cert.pem"] {
        let tmp = live.join(format!(".{file}.tmp"));
        std::fs::copy(from.join(file), &tmp).unwrap();
        std::fs::rename(tmp, live.join(file)).unwrap();
    }
}

/// A certificate for localhost valid only in the year 2000, and its key, in `dir`.
fn expired_pair(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let key_pair = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key_pair).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key_pair.serialize_pem()).unwrap();
    dir.to_path_buf()
}

/// A node of `shards` shards in `base/node` whose TLS listener presents the pair in
/// `live` (read again when it changes), and that listener's address.
fn node_on(base: &Path, live: &Path, shards: &str) -> (Node, String) {
    let tls_addr = format!("127.0.0.1:{}", free_port());
    let (cert, key) = (live.join("cert.pem"), live.join("key.pem"));
    let flags = [
        "--shards",
        shards,
        "--tls",
        &tls_addr,
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    (Node::start(&base.join("node"), &flags), tls_addr)
}

/// A certificate for localhost valid from `ahead` from now (for ten years), and its key,
/// in `dir`.
fn pair_valid_from(dir: &Path, ahead: Duration) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + since_epoch + ahead;
    params.not_after = epoch + since_epoch + Duration::from_secs(10 * 365 * 86_400);
    let key_pair = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key_pair).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key_pair.serialize_pem()).unwrap();
    dir.to_path_buf()
}

/// A pair installed a few seconds before its notBefore (a host whose clock is behind its
/// CA's) is refused, then presented once it is valid, with no change to its files.
/// Before, it stayed refused until the files changed again: the running certificate
/// expired meanwhile.
#[test]
fn a_certificate_installed_before_its_not_before_is_presented_once_valid() {
    let base = temp_dir("tls-not-yet");
    let (a, live) = (base.join("a"), base.join("live"));
    let cert_a = dev_cert(&a);
    std::fs::create_dir_all(&live).unwrap();
    install(&live, &a);
    let (mut n, tls_addr) = node_on(&base, &live, "1");
    let failures = metric(n.admin, "ron_config_reload_failures_total");
    let early = pair_valid_from(&base.join("early"), Duration::from_secs(4));
    let cert_early = std::fs::read(early.join("cert.pem")).unwrap();
    install(&live, &early);
    wait_for("the early pair to be refused", WAIT, || {
        metric(n.admin, "ron_config_reload_failures_total") > failures
    });
    let config = tls_client_trusting(&[&cert_a, &cert_early]);
    assert_eq!(handshake(&config, &tls_addr).1, der(&cert_a));
    wait_for(
        "the early pair presented once valid",
        Duration::from_secs(20),
        || handshake(&config, &tls_addr).1 == der(&cert_early),
    );
    assert_eq!(
        metric(n.admin, "ron_config_reload_failures_total"),
        failures + 1,
        "refused once, not again at every retry"
    );
    n.stop();
}

#[test]
fn a_rotated_certificate_is_served_to_new_handshakes_and_open_connections_go_on() {
    let base = temp_dir("tls-rotation");
    let (a, b, live) = (base.join("a"), base.join("b"), base.join("live"));
    let (cert_a, cert_b) = (dev_cert(&a), dev_cert(&b));
    std::fs::create_dir_all(&live).unwrap();
    install(&live, &a);
    let (mut n, tls_addr) = node_on(&base, &live, "2");
    let object = upload(&n, &bytes(8, 10_000));
    let path = format!("/o/{object}");
    let config = tls_client_trusting(&[&cert_a, &cert_b]);

    let (mut open, served) = handshake(&config, &tls_addr);
    assert_eq!(served, der(&cert_a));
    assert_eq!(get_over(&mut open, &path), 200);

    install(&live, &b);
    wait_for(
        "new handshakes to present the new certificate",
        WAIT,
        || (0..HANDSHAKES).all(|_| handshake(&config, &tls_addr).1 == der(&cert_b)),
    );
    assert_eq!(
        get_over(&mut open, &path),
        200,
        "the open connection goes on"
    );

    // A broken pair (a key that is not the certificate's) is refused; B stays.
    let failures = metric(n.admin, "ron_config_reload_failures_total");
    std::fs::copy(a.join("key.pem"), live.join(".key.tmp")).unwrap();
    std::fs::rename(live.join(".key.tmp"), live.join("key.pem")).unwrap();
    wait_for("the mismatched pair to be refused", WAIT, || {
        metric(n.admin, "ron_config_reload_failures_total") > failures
    });
    assert!((0..HANDSHAKES).all(|_| handshake(&config, &tls_addr).1 == der(&cert_b)));
    // The log reaches the test through a pipe, a moment after the counter moved.
    wait_for("the refusal to be logged", WAIT, || {
        n.stderr().contains("TLS certificate reload refused")
    });

    // An expired pair (a restored backup, an old renewal) is refused too; B stays.
    let failures = metric(n.admin, "ron_config_reload_failures_total");
    install(&live, &expired_pair(&base.join("expired")));
    wait_for("the expired pair to be refused", WAIT, || {
        metric(n.admin, "ron_config_reload_failures_total") > failures
    });
    assert!((0..HANDSHAKES).all(|_| handshake(&config, &tls_addr).1 == der(&cert_b)));
    wait_for("the expiry to be logged", WAIT, || {
        n.stderr().contains("it expired on Jan  1 00:00:00 2001")
    });
    n.stop();
}
