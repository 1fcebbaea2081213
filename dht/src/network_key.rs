//! A private network's key: libp2p's pre-shared key (`libp2p-pnet`, the `swarm.key` of
//! IPFS private networks, go-libp2p and js-libp2p alike).
//!
//! With one, every TCP connection of the DHT starts with the pnet handshake (a nonce
//! each way, then the whole stream under XSalsa20 with the shared key) before noise:
//! a peer without the key cannot finish multistream-select, so it can neither join the
//! routing table nor store provider records nor ask this node for copies
//! (`/ron/replicate/1`, docs/design/trust.md). It keeps strangers off the `p2p` port; it
//! is not a second authentication of peers that hold it (noise still proves each id).
//!
//! The file is the standard text form:
//! ```text
//! /key/swarm/psk/1.0.0/
//! /base16/
//! <64 hex digits>
//! ```

use std::io::Read;
use std::path::Path;

use libp2p::pnet::PreSharedKey;

use crate::error::DhtError;

/// The key file is three short lines; anything much larger is not one.
const KEY_FILE_BYTES_MAX: u64 = 1_024;

/// A private network's pre-shared key, read from its file.
#[derive(Clone, Copy)]
pub struct NetworkKey(PreSharedKey);

impl NetworkKey {
    /// Reads and parses the key file at `path`.
    pub fn read(path: &Path) -> Result<NetworkKey, DhtError> {
        let refuse = |reason: String| DhtError::NetworkKey {
            path: path.to_path_buf(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| refuse(e.to_string()))?;
        let mut text = String::new();
        file.take(KEY_FILE_BYTES_MAX + 1)
            .read_to_string(&mut text)
            .map_err(|e| refuse(e.to_string()))?;
        if text.len() as u64 > KEY_FILE_BYTES_MAX {
            return Err(refuse(format!(
                "longer than {KEY_FILE_BYTES_MAX} bytes: not a key file"
            )));
        }
        NetworkKey::parse(&text).map_err(refuse)
    }

    /// The key from its file's text (lines may end in CR LF; the last newline is
    /// optional).
    pub fn parse(text: &str) -> Result<NetworkKey, String> {
        let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
        match lines.as_slice() {
            ["/key/swarm/psk/1.0.0/", "/base16/", hex] => {
                format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}")
                    .parse::<PreSharedKey>()
                    .map(NetworkKey)
                    .map_err(|e| format!("{e} (the third line must be 64 hex digits)"))
            }
            _ => Err(
                "expected three lines: /key/swarm/psk/1.0.0/, /base16/, and 64 hex digits".into(),
            ),
        }
    }

    /// go-libp2p's fingerprint of the key: what two nodes' logs compare to tell whether
    /// they hold the same key, without showing it.
    pub fn fingerprint(&self) -> String {
        self.0.fingerprint().to_string()
    }

    pub(crate) fn pre_shared_key(&self) -> PreSharedKey {
        self.0
    }
}

impl std::fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NetworkKey({})", self.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "/key/swarm/psk/1.0.0/\n/base16/\n6189c5cf0b87fb800c1a9feeda73c6ab5e998db48fb9e6a978575c770ceef683\n";

    #[test]
    fn the_standard_file_parses_with_go_libp2ps_fingerprint() {
        let key = NetworkKey::parse(TEXT).unwrap();
        // The fingerprint libp2p-pnet's own test holds to go-libp2p's.
        assert_eq!(key.fingerprint(), "45fc986bbc9388a11d939df26f730f0c");
        let crlf = TEXT.replace('\n', "\r\n");
        assert_eq!(
            NetworkKey::parse(&crlf).unwrap().fingerprint(),
            key.fingerprint()
        );
        let unterminated = TEXT.trim_end();
        assert!(NetworkKey::parse(unterminated).is_ok());
        let other = TEXT.replace("6189", "7189");
        assert_ne!(
            NetworkKey::parse(&other).unwrap().fingerprint(),
            key.fingerprint()
        );
    }

    #[test]
    fn what_is_not_a_key_file_is_refused_with_what_was_expected() {
        let short = TEXT.replace("83\n", "\n");
        let err = NetworkKey::parse(&short).unwrap_err();
        assert!(
            err.ends_with("(the third line must be 64 hex digits)"),
            "{err}"
        );
        let err = NetworkKey::parse("6189c5cf0b87fb800c1a9feeda73c6ab").unwrap_err();
        assert_eq!(
            err,
            "expected three lines: /key/swarm/psk/1.0.0/, /base16/, and 64 hex digits"
        );
        let base64 = TEXT.replace("/base16/", "/base64/");
        assert!(NetworkKey::parse(&base64).is_err());

        let dir = std::env::temp_dir().join(format!("ron-netkey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.key");
        std::fs::write(&big, vec![b'a'; 2_000]).unwrap();
        assert_eq!(
            NetworkKey::read(&big).unwrap_err().to_string(),
            format!(
                "dht: network key {}: longer than 1024 bytes: not a key file",
                big.display()
            )
        );
        let missing = dir.join("missing.key");
        let err = NetworkKey::read(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("dht: network key {}: ", missing.display())),
            "{err}"
        );
        let good = dir.join("swarm.key");
        std::fs::write(&good, TEXT).unwrap();
        assert!(NetworkKey::read(&good).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
