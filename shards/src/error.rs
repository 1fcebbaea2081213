//! The shard's error enum: every failure carries the operation and what it touched.

use std::path::PathBuf;
use std::sync::Arc;

use ron_codec::{Address, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("index {op} in {path}: {source}")]
    Index {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: heed::Error,
    },
    #[error("index file {} is {len_bytes} bytes, shorter than the {needed_bytes} bytes its last commit needs: truncated (restore it, or move its dir aside to have the index rebuilt)", path.display())]
    IndexTruncated {
        path: PathBuf,
        len_bytes: u64,
        needed_bytes: u64,
    },
    #[error("index record of {addr} is corrupt: {reason}")]
    CorruptRecord { addr: Address, reason: &'static str },
    #[error("chunk tree of {addr} is corrupt: {source}")]
    CorruptTree {
        addr: Address,
        #[source]
        source: ron_codec::Error,
    },
    #[error("object {addr} group {group}: stored bytes fail verification")]
    StoredBytesCorrupt { addr: Address, group: u64 },
    #[error("object {addr} group {group}: short read ({got} of {expected} bytes) from {path}")]
    ShortRead {
        addr: Address,
        group: u64,
        got: usize,
        expected: u64,
        path: PathBuf,
    },
    #[error("object {addr} stripe {stripe} parity block {parity}: missing, short or failing its checksum in {path}")]
    ParityBlockBad {
        addr: Address,
        stripe: u64,
        parity: u8,
        path: PathBuf,
    },
    #[error("object {addr} group {group}: stripe {stripe} has {bad} bad blocks, its parity covers {parity}")]
    StripeUnrecoverable {
        addr: Address,
        group: u64,
        stripe: u64,
        bad: usize,
        parity: u8,
    },
    #[error("encode parity of {path}: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: crate::ec::StripeError,
    },
    #[error("no object {addr} on this node")]
    NotFound { addr: Address },
    #[error("shard {shard} did not answer: {reason}")]
    Mesh { shard: u16, reason: &'static str },
    /// An error another shard answered with. A client error (4xx, e.g. not found)
    /// reads the same whichever shard took the connection; a server error names the
    /// shard it came from.
    #[error("{}", remote_text(*shard, *code, message))]
    Remote {
        shard: u16,
        code: ErrorCode,
        message: String,
    },
    #[error("data dir {path}: {reason}")]
    Layout { path: PathBuf, reason: String },
    /// A group commit failed; every upload in the batch gets this error (cloned: the
    /// underlying failure is shared). `source` names the operation and the path.
    #[error("group commit of {records} record(s) failed: {source}")]
    GroupCommit {
        records: usize,
        #[source]
        source: Arc<ShardError>,
    },
    #[error("shard {shard}: the group commit task stopped before answering")]
    CommitStopped { shard: u16 },
    #[error("shard {shard} is stopping: it takes no new writes")]
    Stopping { shard: u16 },
    #[error("content type of {len} bytes: at most {max} are stored")]
    ContentTypeTooLong { len: usize, max: usize },
    #[error("data dir {}: an object of {object_len} bytes needs {needed_bytes} bytes on its filesystem, {available_bytes} are free", dir.display())]
    NoRoom {
        dir: PathBuf,
        object_len: u64,
        needed_bytes: u64,
        available_bytes: u64,
    },
}

fn remote_text(shard: u16, code: ErrorCode, message: &str) -> String {
    if code.status() < 500 {
        message.to_string()
    } else {
        format!("shard {shard}: {message}")
    }
}

impl ShardError {
    /// Whether an index record failed its own check (its layout or its chunk tree
    /// against the address): nothing of it can be trusted, and reading it again fails
    /// again.
    pub fn is_unreadable_record(&self) -> bool {
        matches!(
            self,
            ShardError::CorruptRecord { .. } | ShardError::CorruptTree { .. }
        )
    }

    /// Whether the failure is damage to an object's stored bytes that its stripe may
    /// rebuild: a block missing, unreadable, short or failing its check.
    pub fn is_stored_damage(&self) -> bool {
        matches!(
            self,
            ShardError::Io { .. }
                | ShardError::ShortRead { .. }
                | ShardError::StoredBytesCorrupt { .. }
                | ShardError::ParityBlockBad { .. }
        )
    }

    /// Whether LMDB refused an index as damaged (not an LMDB file, corrupted, or written
    /// in another format), or its file is shorter than its last commit.
    pub fn is_damaged_index(&self) -> bool {
        use heed::MdbError::{Corrupted, Invalid, PageNotFound, VersionMismatch};
        matches!(
            self,
            ShardError::Index {
                source: heed::Error::Mdb(Corrupted | Invalid | PageNotFound | VersionMismatch),
                ..
            } | ShardError::IndexTruncated { .. }
        )
    }

    /// Whether stored bytes failed their check and nothing on this shard gave them back
    /// verified (no parity, parity short, no other lane).
    pub fn is_damage_past_repair(&self) -> bool {
        matches!(
            self,
            ShardError::StoredBytesCorrupt { .. } | ShardError::StripeUnrecoverable { .. }
        )
    }

    /// The taxonomy entry a client sees.
    pub fn code(&self) -> ErrorCode {
        match self {
            ShardError::NotFound { .. } => ErrorCode::NotFound,
            ShardError::StoredBytesCorrupt { .. } | ShardError::StripeUnrecoverable { .. } => {
                ErrorCode::StoredDigestMismatch
            }
            ShardError::Remote { code, .. } => *code,
            ShardError::Stopping { .. } => ErrorCode::NotReady,
            ShardError::ContentTypeTooLong { .. } => ErrorCode::BadRequest,
            _ if self.is_out_of_space() => ErrorCode::InsufficientStorage,
            _ => ErrorCode::Internal,
        }
    }

    /// Whether the failure is a full disk or quota (ENOSPC, EDQUOT), a full index map, or
    /// an announced length the disk has no room for:
    /// the upload is refused 507, and the node goes on serving reads.
    pub fn is_out_of_space(&self) -> bool {
        use std::io::ErrorKind::{QuotaExceeded, StorageFull};
        match self {
            ShardError::Io { source, .. } => matches!(source.kind(), StorageFull | QuotaExceeded),
            ShardError::Index { source, .. } => match source {
                heed::Error::Io(e) => matches!(e.kind(), StorageFull | QuotaExceeded),
                heed::Error::Mdb(heed::MdbError::MapFull) => true,
                _ => false,
            },
            ShardError::GroupCommit { source, .. } => source.is_out_of_space(),
            ShardError::NoRoom { .. } => true,
            _ => false,
        }
    }

    pub fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ShardError {
        let path = path.into();
        move |source| ShardError::Io { op, path, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_commit_error_names_records_op_and_path_and_stays_internal() {
        let fsync = ShardError::Io {
            op: "fsync",
            path: PathBuf::from("/data/stores/3/objects/ab/ab01"),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        let err = ShardError::GroupCommit {
            records: 7,
            source: Arc::new(fsync),
        };
        let text = err.to_string();
        assert!(
            text.starts_with("group commit of 7 record(s) failed: "),
            "{text}"
        );
        assert!(
            text.contains("fsync /data/stores/3/objects/ab/ab01: "),
            "{text}"
        );
        assert_eq!(err.code(), ErrorCode::Internal);
        let source = std::error::Error::source(&err).map(|s| s.to_string());
        assert_eq!(
            source.as_deref(),
            Some(&text["group commit of 7 record(s) failed: ".len()..])
        );
        let full = ShardError::GroupCommit {
            records: 1,
            source: Arc::new(ShardError::Io {
                op: "write",
                path: PathBuf::from("/data/tmp/upload-0"),
                source: std::io::Error::from_raw_os_error(28),
            }),
        };
        assert_eq!(full.code(), ErrorCode::InsufficientStorage, "ENOSPC is 507");
        let stopped = ShardError::CommitStopped { shard: 2 };
        assert_eq!(stopped.code(), ErrorCode::Internal);
        assert!(stopped.to_string().contains("shard 2"), "{stopped}");
    }
}
