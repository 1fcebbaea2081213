//! Uploads: bytes hashed (root + group chaining values) while they are written to a temp
//! file, and the staged object they become. Nothing here is visible to readers: a
//! [`StagedObject`] becomes an object only through the group commit (`commit.rs`).
//!
//! This module knows neither the shard nor the mesh; the mesh carries a
//! [`StagedObject`] to the owner shard as plain data.

use std::path::PathBuf;

use futures_lite::AsyncWriteExt;
use glommio::io::{OpenOptions, StreamWriter, StreamWriterBuilder};
use ron_codec::tree::GROUP_LEN_BYTES;
use ron_codec::TreeHasher;

use crate::error::ShardError;
use crate::record::ObjectMeta;

/// A finished upload, durable-ready in the temp dir, not yet visible.
#[derive(Debug, Clone)]
pub struct StagedObject {
    pub tmp_path: PathBuf,
    pub meta: ObjectMeta,
}

/// An upload in progress: bytes are hashed (root + group CVs) as they are written to a
/// temp file through io_uring. Nothing is visible until [`crate::Shard::commit`].
pub struct Upload {
    path: PathBuf,
    writer: StreamWriter,
    hasher: TreeHasher,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("path", &self.path)
            .field("len", &self.hasher.object_len())
            .finish()
    }
}

impl Upload {
    /// Creates the temp file at `path` (which must not exist) and starts hashing.
    pub(crate) async fn create(path: PathBuf) -> Result<Upload, ShardError> {
        // Buffered (page-cache) writes: the group commit fsyncs the file before the
        // index commit, and an upload of an object already stored never touches the disk.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .buffered_open(&path)
            .await
            .map_err(|e| ShardError::io("create", &path)(e.into()))?;
        let writer = StreamWriterBuilder::new(file)
            .with_buffer_size(GROUP_LEN_BYTES as usize)
            .build();
        Ok(Upload {
            path,
            writer,
            hasher: TreeHasher::new(),
        })
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.hasher.object_len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<(), ShardError> {
        self.hasher.update(data);
        self.writer
            .write_all(data)
            .await
            .map_err(ShardError::io("write", &self.path))
    }

    /// Flushes and closes the temp file; returns it with its chunk tree.
    pub async fn finish(mut self, content_type: String) -> Result<StagedObject, ShardError> {
        self.writer
            .close()
            .await
            .map_err(ShardError::io("close", &self.path))?;
        Ok(StagedObject {
            tmp_path: self.path,
            meta: ObjectMeta {
                tree: self.hasher.finalize(),
                content_type,
            },
        })
    }

    /// Drops the upload and its temp file.
    pub async fn abort(mut self) {
        let _ = self.writer.close().await;
        let _ = glommio::io::remove(&self.path).await;
    }
}

/// Removes a staged object that will not be committed (digest mismatch, error, or an
/// object already stored).
pub async fn discard(staged: StagedObject) {
    let _ = glommio::io::remove(&staged.tmp_path).await;
}
