//! Uploads: bytes hashed (root + group chaining values) while they are written to a temp
//! file, and the staged object they become. Nothing here is visible to readers: a
//! [`StagedObject`] becomes an object only through the group commit (`commit.rs`).
//!
//! This module knows neither the shard nor the mesh; the mesh carries a
//! [`StagedObject`] to the owner shard as plain data.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions};
use ron_codec::tree::GROUP_LEN_BYTES;
use ron_codec::TreeHasher;

use crate::error::ShardError;
use crate::record::{Location, ObjectMeta};
use crate::segment::PACKED_OBJECT_BYTES_MAX;

/// A finished upload, ready to commit, not yet visible.
#[derive(Debug, Clone)]
pub struct StagedObject {
    /// Its location is [`Location::OwnFile`] until the commit packs a
    /// [`StagedBody::Packed`] body and says where.
    pub meta: ObjectMeta,
    pub body: StagedBody,
}

/// Where a staged object's bytes wait for the commit.
#[derive(Debug, Clone)]
pub enum StagedBody {
    /// A temp file, written with direct I/O, renamed into the store by the commit.
    TempFile(PathBuf),
    /// In memory: an object small enough to be packed into a segment
    /// ([`PACKED_OBJECT_BYTES_MAX`]).
    Packed(Bytes),
}

/// An upload in progress: bytes are hashed (root + group CVs) as they arrive. The
/// first [`PACKED_OBJECT_BYTES_MAX`] are kept in memory: an object no longer than that
/// is packed into a segment by its commit and never has a file of its own. Past it
/// (or from the start, when the announced length is longer), the bytes go to a temp
/// file with aligned O_DIRECT writes of [`WRITE_BYTES`], up to [`WRITES_IN_FLIGHT`] at
/// once while the next bytes arrive. Nothing is visible until [`crate::Shard::commit`],
/// whose group commit makes the bytes durable: direct writes leave no dirty page cache
/// behind, so that `fdatasync` only flushes the file's metadata and the device cache
/// instead of writing the whole object back.
///
/// The last write is padded to the file's alignment and the file truncated to its
/// length. An upload of an object already stored is written and then discarded (the
/// page cache used to absorb it; see docs/design/storage.md).
pub struct Upload {
    path: PathBuf,
    /// The bytes so far while the object may still be packed; empty once `file` holds
    /// them.
    head: Vec<u8>,
    /// False when the announced length is too long to pack: the bytes go to the temp
    /// file from the first one.
    packable: bool,
    file: Option<TempFileWriter>,
    hasher: TreeHasher,
}

/// A temp file being written with direct I/O.
///
/// Writes are `DmaFile::write_at` futures, each in its own task (a request's task may be
/// polled spuriously by its socket or a timer; glommio's `StreamWriter` unwraps its
/// pending write when polled early and would panic the shard).
struct TempFileWriter {
    file: Rc<DmaFile>,
    /// Bytes not yet written, less than one write; written when it fills.
    pending: DmaBuffer,
    pending_len: usize,
    /// Writes issued, oldest first, and the bytes each must write.
    in_flight: VecDeque<(glommio::Task<std::io::Result<usize>>, usize)>,
    /// Bytes given to writes.
    issued: u64,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("path", &self.path)
            .field("len", &self.hasher.object_len())
            .field("packable", &self.file.is_none())
            .finish()
    }
}

/// Bytes per direct write (eight groups): large enough for the device's rate; with
/// the writes in flight and the buffer filling, an upload holds 1.5 MiB of DMA buffers.
const WRITE_BYTES: usize = 8 * GROUP_LEN_BYTES as usize;

/// Direct writes one upload keeps in flight while it receives the next bytes.
const WRITES_IN_FLIGHT: usize = 2;

impl Upload {
    /// An upload whose temp file, if it needs one, will be `path` (which must not
    /// exist). `expected_len`, when announced, sizes the in-memory head (or skips it
    /// for an object too long to pack).
    pub(crate) fn new(path: PathBuf, expected_len: Option<u64>) -> Upload {
        let packable = expected_len.is_none_or(|len| len <= PACKED_OBJECT_BYTES_MAX);
        let head_bytes = expected_len.filter(|_| packable).unwrap_or(0);
        Upload {
            path,
            head: Vec::with_capacity(head_bytes as usize),
            packable,
            file: None,
            hasher: TreeHasher::new(),
        }
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.hasher.object_len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<(), ShardError> {
        self.hasher.update(data);
        if let Some(file) = &mut self.file {
            return file.write(data, &self.path).await;
        }
        if self.packable && self.len() <= PACKED_OBJECT_BYTES_MAX {
            self.head.extend_from_slice(data);
            return Ok(());
        }
        // Held before the first write, so that `abort` removes the file whatever fails.
        let file = self.file.insert(TempFileWriter::create(&self.path).await?);
        let head = std::mem::take(&mut self.head);
        file.write(&head, &self.path).await?;
        file.write(data, &self.path).await
    }

    /// Makes the bytes ready to commit: the head as it is, or the temp file with what
    /// is pending written, its padding cut and closed. Returns them with the chunk tree.
    pub async fn finish(mut self, content_type: String) -> Result<StagedObject, ShardError> {
        // Without a file every byte is in the head (at most PACKED_OBJECT_BYTES_MAX).
        let body = match self.file.take() {
            None => StagedBody::Packed(Bytes::from(std::mem::take(&mut self.head))),
            Some(file) => {
                file.finish(&self.path).await?;
                StagedBody::TempFile(self.path)
            }
        };
        Ok(StagedObject {
            meta: ObjectMeta {
                tree: self.hasher.finalize(),
                content_type,
                location: Location::OwnFile,
            },
            body,
        })
    }

    /// Drops the upload and its temp file, if it has one (after its writes end: they
    /// hold the file).
    pub async fn abort(self) {
        if let Some(file) = self.file {
            file.abort(&self.path).await;
        }
    }
}

impl TempFileWriter {
    async fn create(path: &Path) -> Result<TempFileWriter, ShardError> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .dma_open(path)
            .await
            .map_err(|e| ShardError::io("create", path)(e.into()))?;
        let pending = file.alloc_dma_buffer(WRITE_BYTES);
        Ok(TempFileWriter {
            file: Rc::new(file),
            pending,
            pending_len: 0,
            in_flight: VecDeque::new(),
            issued: 0,
        })
    }

    async fn write(&mut self, mut data: &[u8], path: &Path) -> Result<(), ShardError> {
        while !data.is_empty() {
            let room = WRITE_BYTES - self.pending_len;
            let (now, rest) = data.split_at(room.min(data.len()));
            self.pending.as_bytes_mut()[self.pending_len..self.pending_len + now.len()]
                .copy_from_slice(now);
            self.pending_len += now.len();
            data = rest;
            if self.pending_len == WRITE_BYTES {
                self.issue_pending(path).await?;
            }
        }
        Ok(())
    }

    /// Starts the write of the pending bytes (padded to the file's alignment) at the end
    /// of the file, first waiting for the oldest write if the most are in flight.
    async fn issue_pending(&mut self, path: &Path) -> Result<(), ShardError> {
        while self.in_flight.len() >= WRITES_IN_FLIGHT {
            self.wait_oldest(path).await?;
        }
        let len = self.pending_len;
        let aligned = self.file.align_up(len as u64) as usize;
        let mut buf = std::mem::replace(&mut self.pending, self.file.alloc_dma_buffer(WRITE_BYTES));
        buf.as_bytes_mut()[len..aligned].fill(0);
        buf.trim_to_size(aligned);
        self.pending_len = 0;
        let (file, at) = (Rc::clone(&self.file), self.issued);
        let write = glommio::spawn_local(async move { Ok(file.write_at(buf, at).await?) });
        self.in_flight.push_back((write, aligned));
        self.issued += len as u64;
        Ok(())
    }

    /// Waits for the oldest write. A regular file takes a write short only when its
    /// file system is full, so a short write is that error.
    async fn wait_oldest(&mut self, path: &Path) -> Result<(), ShardError> {
        let Some((write, len)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let n = write.await.map_err(ShardError::io("write", path))?;
        if n < len {
            let short = std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!("short write: {n} of {len} bytes"),
            );
            return Err(ShardError::io("write", path)(short));
        }
        Ok(())
    }

    /// Writes what is pending, cuts the padding and closes the file.
    async fn finish(mut self, path: &Path) -> Result<(), ShardError> {
        if self.pending_len > 0 {
            self.issue_pending(path).await?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest(path).await?;
        }
        if !self.issued.is_multiple_of(self.file.alignment()) {
            self.file
                .truncate(self.issued)
                .await
                .map_err(|e| ShardError::io("truncate", path)(e.into()))?;
        }
        close(self.file, path).await
    }

    async fn abort(mut self, path: &Path) {
        while let Some((write, _)) = self.in_flight.pop_front() {
            let _ = write.await;
        }
        let _ = close(self.file, path).await;
        let _ = glommio::io::remove(path).await;
    }
}

/// Closes the temp file once no write holds it.
async fn close(file: Rc<DmaFile>, path: &std::path::Path) -> Result<(), ShardError> {
    file.close_rc()
        .await
        .map(|_| ())
        .map_err(|e| ShardError::io("close", path)(e.into()))
}

/// Removes a staged object that will not be committed (digest mismatch, error, or an
/// object already stored).
pub async fn discard(staged: StagedObject) {
    if let StagedBody::TempFile(path) = &staged.body {
        let _ = glommio::io::remove(path).await;
    }
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
            let mut upload = Upload::new(path.clone(), None);
            for piece in data.chunks(10_000) {
                poll_spuriously(upload.write(piece)).await.unwrap();
            }
            poll_spuriously(upload.finish(String::new())).await.unwrap()
        });
        let StagedBody::TempFile(written) = &staged.body else {
            panic!("{} bytes were not written to a temp file", data.len());
        };
        assert_eq!(std::fs::read(written).unwrap(), data);
        assert_eq!(staged.meta.tree, ron_codec::ChunkTree::of(&data));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Uploads `data` in pieces of `piece` bytes, announcing `expected` bytes.
    fn upload(path: &Path, data: &[u8], piece: usize, expected: Option<u64>) -> StagedObject {
        glommio::LocalExecutor::default().run(async {
            let mut upload = Upload::new(path.to_path_buf(), expected);
            for bytes in data.chunks(piece) {
                upload.write(bytes).await.unwrap();
            }
            upload.finish(String::new()).await.unwrap()
        })
    }

    #[test]
    fn objects_up_to_one_group_stay_in_memory_to_be_packed_and_longer_ones_get_a_file() {
        let dir = std::env::temp_dir().join(format!("ron-upload-pack-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let max = PACKED_OBJECT_BYTES_MAX as usize;
        for (len, expected) in [
            (0, None),
            (0, Some(0)),
            (4096, None),
            (max, None),
            (max, Some(max as u64)),
            (max + 1, None),
            (max + 1, Some(max as u64 + 1)),
        ] {
            let path = dir.join(format!("upload-{len}-{expected:?}"));
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let staged = upload(&path, &data, 1000, expected);
            assert_eq!(staged.meta.tree, ron_codec::ChunkTree::of(&data));
            match &staged.body {
                StagedBody::Packed(body) => {
                    assert!(len <= max, "{len} bytes kept in memory");
                    assert_eq!(&body[..], &data[..]);
                    assert!(!path.exists(), "a packed upload made a temp file");
                }
                StagedBody::TempFile(file) => {
                    assert!(len > max, "{len} bytes went to a file");
                    assert_eq!(std::fs::read(file).unwrap(), data);
                }
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
