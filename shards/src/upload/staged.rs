//! What an upload becomes: a [`StagedObject`] — its record, and its bytes waiting in
//! temp files or in memory — plain data that the mesh carries to the owner shard and
//! the group commit makes visible, or that [`discard`] removes.

use std::path::PathBuf;

use bytes::Bytes;

use crate::ids::DirIndex;
use crate::layout::DataDirs;
use crate::record::{ObjectMeta, Retention};

/// A finished upload, ready to commit, not yet visible.
#[derive(Debug, Clone)]
pub struct StagedObject {
    /// Its location is [`Location::OwnFile`] until the commit packs a
    /// [`StagedBody::Packed`] body and says where.
    pub meta: ObjectMeta,
    pub body: StagedBody,
    /// Kept (an upload) unless the caller marks it an evictable copy (read-through).
    pub retention: Retention,
}

/// Where a staged object's bytes wait for the commit.
#[derive(Debug, Clone)]
pub enum StagedBody {
    /// Temp files written with direct I/O, renamed into the store by the commit: the
    /// data file and the parity file of each dir that holds blocks of the object,
    /// parity files first.
    TempFiles(Vec<StagedFile>),
    /// In memory: an object small enough to be packed into a segment
    /// ([`PACKED_OBJECT_BYTES_MAX`]).
    Packed(Bytes),
}

/// One staged file: the dir it belongs to, whether it holds parity, its temp path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFile {
    pub dir: DirIndex,
    pub parity: bool,
    pub path: PathBuf,
}

/// Where an upload's blocks go: the node's data dirs and the rotation of its columns
/// over them (kept in its record).
#[derive(Debug, Clone)]
pub struct Placement {
    pub dirs: DataDirs,
    pub rot: u8,
}

/// Removes a staged object that will not be committed (digest mismatch, error, or an
/// object already stored).
pub async fn discard(staged: StagedObject) {
    if let StagedBody::TempFiles(files) = &staged.body {
        for file in files {
            let _ = glommio::io::remove(&file.path).await;
        }
    }
}
