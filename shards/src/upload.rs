//! Uploads: bytes hashed (root + group chaining values) while they are written to a temp
//! file, and the staged object they become. Nothing here is visible to readers: a
//! [`StagedObject`] becomes an object only through the group commit (`commit.rs`).
//!
//! This module knows neither the shard nor the mesh; the mesh carries a
//! [`StagedObject`] to the owner shard as plain data.

use std::path::PathBuf;

use glommio::io::{BufferedFile, OpenOptions};
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

/// An upload in progress: bytes are hashed (root + group CVs) as they arrive and
/// written to a temp file through io_uring in whole 64 KiB groups (the last one
/// shorter). Nothing is visible until [`crate::Shard::commit`], whose group commit makes
/// the file durable.
///
/// Writes go through `BufferedFile::write_at`, not glommio's `StreamWriter`: the latter
/// unwraps the result of its pending write when polled, so a spurious wake of the
/// request's task (its socket, a timer) while a write is in flight would panic the shard.
pub struct Upload {
    path: PathBuf,
    file: BufferedFile,
    /// Bytes not yet written, less than one group; written when it fills.
    pending: Vec<u8>,
    /// Bytes written to the file.
    written: u64,
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

const WRITE_BYTES: usize = GROUP_LEN_BYTES as usize;

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
        Ok(Upload {
            path,
            file,
            pending: Vec::with_capacity(WRITE_BYTES),
            written: 0,
            hasher: TreeHasher::new(),
        })
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.hasher.object_len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), ShardError> {
        self.hasher.update(data);
        while !data.is_empty() {
            let room = WRITE_BYTES - self.pending.len();
            let (now, rest) = data.split_at(room.min(data.len()));
            self.pending.extend_from_slice(now);
            data = rest;
            if self.pending.len() == WRITE_BYTES {
                self.write_pending().await?;
            }
        }
        Ok(())
    }

    /// Writes the pending bytes at the end of the file. A regular file takes a write
    /// short only when its file system is full, so a short write is that error.
    async fn write_pending(&mut self) -> Result<(), ShardError> {
        let buf = std::mem::replace(&mut self.pending, Vec::with_capacity(WRITE_BYTES));
        let len = buf.len();
        let n = self
            .file
            .write_at(buf, self.written)
            .await
            .map_err(|e| ShardError::io("write", &self.path)(e.into()))?;
        self.written += n as u64;
        if n < len {
            let short = std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!("short write: {n} of {len} bytes"),
            );
            return Err(ShardError::io("write", &self.path)(short));
        }
        Ok(())
    }

    /// Writes what is pending and closes the temp file; returns it with its chunk tree.
    pub async fn finish(mut self, content_type: String) -> Result<StagedObject, ShardError> {
        if !self.pending.is_empty() {
            self.write_pending().await?;
        }
        self.file
            .close()
            .await
            .map_err(|e| ShardError::io("close", &self.path)(e.into()))?;
        Ok(StagedObject {
            tmp_path: self.path,
            meta: ObjectMeta {
                tree: self.hasher.finalize(),
                content_type,
            },
        })
    }

    /// Drops the upload and its temp file.
    pub async fn abort(self) {
        let _ = self.file.close().await;
        let _ = glommio::io::remove(&self.path).await;
    }
}

/// Removes a staged object that will not be committed (digest mismatch, error, or an
/// object already stored).
pub async fn discard(staged: StagedObject) {
    let _ = glommio::io::remove(&staged.tmp_path).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::poll_once;
    use std::future::Future;

    /// Drives `work` to completion polling it again every 5 µs, whether or not its I/O
    /// has completed: what a request task woken by its socket or a timer does.
    async fn poll_spuriously<T>(work: impl Future<Output = T>) -> T {
        let mut work = std::pin::pin!(work);
        for _ in 0..10_000 {
            if let Some(done) = poll_once(&mut work).await {
                return done;
            }
            glommio::timer::sleep(std::time::Duration::from_micros(5)).await;
        }
        panic!("the work never finished");
    }

    #[test]
    fn writes_and_close_polled_before_their_io_completes_wait_instead_of_panicking() {
        let dir = std::env::temp_dir().join(format!("ron-upload-spurious-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("upload");
        let data: Vec<u8> = (0..3 * WRITE_BYTES + 5).map(|i| i as u8).collect();
        let staged = glommio::LocalExecutor::default().run(async {
            let mut upload = Upload::create(path.clone()).await.unwrap();
            for piece in data.chunks(10_000) {
                poll_spuriously(upload.write(piece)).await.unwrap();
            }
            poll_spuriously(upload.finish(String::new())).await.unwrap()
        });
        assert_eq!(std::fs::read(&staged.tmp_path).unwrap(), data);
        assert_eq!(staged.meta.tree, ron_codec::ChunkTree::of(&data));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
