//! The node's identity: an Ed25519 key created once in the data dir (`node.key`,
//! libp2p's protobuf encoding, mode 0600) and read at every start. Its `PeerId` is the
//! node id others see in provider records and `/resolve` answers.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

use crate::error::DhtError;

/// The key file's name in data dir 0.
pub const NODE_KEY_FILE: &str = "node.key";
/// A protobuf-encoded Ed25519 keypair is 68 bytes; anything much larger is not ours.
const NODE_KEY_BYTES_MAX: u64 = 1_024;

pub fn node_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(NODE_KEY_FILE)
}

/// Reads the node key in `data_dir`, creating it (durably: written to a temporary file,
/// synced, renamed into place, the dir synced) on the first start. A key file that exists
/// but does not decode is an error, never silently replaced: the node id is what peers
/// know this node by — except an empty one, which only a crash inside the first start's
/// write can leave (before the rename made creation atomic): no node ever ran with it.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair, DhtError> {
    let path = node_key_path(data_dir);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.len() == 0 => {
            tracing::warn!(path = %path.display(), "the node key file is empty (a first start cut short): a new key is made");
            create(data_dir, &path)
        }
        Ok(_) => read(&path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(data_dir, &path),
        Err(source) => Err(DhtError::Io {
            op: "stat",
            path,
            source,
        }),
    }
}

fn read(path: &Path) -> Result<Keypair, DhtError> {
    let refuse = |reason: String| DhtError::NodeKey {
        path: path.to_path_buf(),
        reason,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| refuse(e.to_string()))?
        .len();
    if len > NODE_KEY_BYTES_MAX {
        return Err(refuse(format!(
            "{len} bytes, more than a key ({NODE_KEY_BYTES_MAX} at most)"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| refuse(e.to_string()))?;
    Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
        refuse(format!(
            "not a libp2p key ({e}); move it away to make a new node id"
        ))
    })
}

fn create(data_dir: &Path, path: &Path) -> Result<Keypair, DhtError> {
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| DhtError::Io { op, path, source }
    };
    let keypair = Keypair::generate_ed25519();
    let bytes = keypair
        .to_protobuf_encoding()
        .map_err(|e| DhtError::NodeKey {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let temp = path.with_extension("key.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(io("create", &temp))?;
    file.write_all(&bytes).map_err(io("write", &temp))?;
    file.sync_all().map_err(io("sync", &temp))?;
    std::fs::rename(&temp, path).map_err(io("rename", path))?;
    std::fs::File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io("sync dir", data_dir))?;
    tracing::info!(path = %path.display(), "created the node key");
    Ok(keypair)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_key_is_created_once_and_read_back() {
        let dir = std::env::temp_dir().join(format!("ron-dht-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let first = load_or_create(&dir).unwrap();
        let again = load_or_create(&dir).unwrap();
        assert_eq!(first.public().to_peer_id(), again.public().to_peer_id());
        let mode = std::fs::metadata(node_key_path(&dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(node_key_path(&dir), b"not a key").unwrap();
        let err = load_or_create(&dir).unwrap_err().to_string();
        assert!(err.starts_with("dht: node key "), "{err}");
        assert!(err.contains("not a libp2p key"), "{err}");
        assert!(err.ends_with("move it away to make a new node id"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An empty key file (a first start cut short between creating and writing it) is
    /// replaced by a new key; the start failed on it for good before.
    #[test]
    fn an_empty_key_file_is_replaced() {
        let dir = std::env::temp_dir().join(format!("ron-dht-key-empty-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(node_key_path(&dir), b"").unwrap();
        let made = load_or_create(&dir).unwrap();
        let again = load_or_create(&dir).unwrap();
        assert_eq!(made.public().to_peer_id(), again.public().to_peer_id());
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [NODE_KEY_FILE], "no temporary file left");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
