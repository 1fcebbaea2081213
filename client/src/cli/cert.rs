//! `ron cert --dev [--out DIR] [--name HOST]...`: a self-signed certificate and its key
//! for a local node with TLS; never overwrites either file.

use std::io::Write;
use std::path::Path;

use super::shared::{file_error, usage};
use crate::ClientError;

/// Writes `dir/cert.pem` and `dir/key.pem` (the key readable by its owner only).
pub(super) fn run(dir: &Path, names: &[String]) -> Result<(), ClientError> {
    let dev = ron_io::tls::dev_certificate(names).map_err(|e| ClientError::Tls(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(file_error("create", dir))?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    for path in [&cert, &key] {
        if path.exists() {
            return Err(usage(format!(
                "{} exists; remove it or choose another --out",
                path.display()
            )));
        }
    }
    std::fs::write(&cert, &dev.cert_pem).map_err(file_error("write", &cert))?;
    write_private(&key, dev.key_pem.as_bytes()).map_err(file_error("write", &key))?;
    println!(
        "wrote {} and {} (self-signed; localhost, 127.0.0.1, ::1{}).\nserve:   ron serve --tls 127.0.0.1:9443 --cert {} --key {}\nclient:  ron get --tls --ca {} b3:<hex>",
        cert.display(),
        key.display(),
        names.iter().map(|n| format!(", {n}")).collect::<String>(),
        cert.display(),
        key.display(),
        cert.display(),
    );
    Ok(())
}

/// Creates `path` readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}
