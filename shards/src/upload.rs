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

use crate::ec::{parity_checksum, EcParams, StripeCode, BLOCK_BYTES};
use crate::error::ShardError;
use crate::record::{Location, ObjectMeta, Parity};
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
    /// A temp file, written with direct I/O, renamed into the store by the commit, and
    /// the temp file of its parity blocks when it has them.
    TempFile {
        data: PathBuf,
        parity: Option<PathBuf>,
    },
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
/// With parity on (`EcParams`, m ≥ 1), writes are whole stripes: before each is issued
/// the parity blocks of its stripes are computed from the DMA buffer itself and written
/// to a second temp file (the object file's path plus `.parity`), their checksums kept
/// for the record (version 3). Packed objects have no parity (yet: the design note's
/// lanes).
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
    /// The code new objects get; parity is made only for objects with a file.
    ec: EcParams,
    parity: Option<ParityWriter>,
    hasher: TreeHasher,
}

/// The parity side of an upload: the code, a scratch stripe of parity blocks, the
/// parity temp file and the checksums so far.
struct ParityWriter {
    path: PathBuf,
    code: StripeCode,
    blocks: Vec<Vec<u8>>,
    file: TempFileWriter,
    checksums: Vec<[u8; 32]>,
}

/// A temp file being written with direct I/O.
///
/// Writes are `DmaFile::write_at` futures, each in its own task (a request's task may be
/// polled spuriously by its socket or a timer; glommio's `StreamWriter` unwraps its
/// pending write when polled early and would panic the shard).
struct TempFileWriter {
    file: Rc<DmaFile>,
    /// Bytes per write: a whole number of stripes.
    write_bytes: usize,
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

/// Bytes per direct write at least (eight groups): large enough for the device's rate;
/// with the writes in flight and the buffer filling, an upload holds 1.5 MiB of DMA
/// buffers (plus its parity's share).
const WRITE_BYTES: usize = 8 * GROUP_LEN_BYTES as usize;

/// Bytes per data write for a code: the smallest whole number of stripes that is at
/// least [`WRITE_BYTES`], so a stripe never straddles two writes.
fn data_write_bytes(ec: EcParams) -> usize {
    let stripe = usize::from(ec.data) * BLOCK_BYTES as usize;
    WRITE_BYTES.div_ceil(stripe) * stripe
}

/// Direct writes one upload keeps in flight while it receives the next bytes.
const WRITES_IN_FLIGHT: usize = 2;

impl Upload {
    /// An upload whose temp file, if it needs one, will be `path` (which must not
    /// exist). `expected_len`, when announced, sizes the in-memory head (or skips it
    /// for an object too long to pack).
    pub(crate) fn new(path: PathBuf, expected_len: Option<u64>, ec: EcParams) -> Upload {
        let packable = expected_len.is_none_or(|len| len <= PACKED_OBJECT_BYTES_MAX);
        let head_bytes = expected_len.filter(|_| packable).unwrap_or(0);
        Upload {
            path,
            head: Vec::with_capacity(head_bytes as usize),
            packable,
            file: None,
            ec,
            parity: None,
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
            return write_striped(file, data, &self.path, self.parity.as_mut()).await;
        }
        if self.packable && self.len() <= PACKED_OBJECT_BYTES_MAX {
            self.head.extend_from_slice(data);
            return Ok(());
        }
        // Held before the first write, so that `abort` removes the files whatever fails.
        let path = &self.path;
        let file = TempFileWriter::create(path, data_write_bytes(self.ec)).await?;
        let file = self.file.insert(file);
        if !self.ec.is_off() {
            self.parity = Some(ParityWriter::create(path, self.ec).await?);
        }
        let head = std::mem::take(&mut self.head);
        write_striped(file, &head, path, self.parity.as_mut()).await?;
        write_striped(file, data, path, self.parity.as_mut()).await
    }

    /// Makes the bytes ready to commit: the head as it is, or the temp file with what
    /// is pending written, its padding cut and closed. Returns them with the chunk tree.
    pub async fn finish(mut self, content_type: String) -> Result<StagedObject, ShardError> {
        // Without a file every byte is in the head (at most PACKED_OBJECT_BYTES_MAX).
        let mut parity = None;
        let body = match self.file.take() {
            None => StagedBody::Packed(Bytes::from(std::mem::take(&mut self.head))),
            Some(file) => {
                file.finish(&self.path, self.parity.as_mut()).await?;
                let parity_path = match self.parity.take() {
                    None => None,
                    Some(writer) => {
                        let (path, checksums) = writer.finish().await?;
                        parity = Some(checksums);
                        Some(path)
                    }
                };
                StagedBody::TempFile {
                    data: self.path,
                    parity: parity_path,
                }
            }
        };
        let tree = self.hasher.finalize();
        let parity = parity.map(|checksums| Parity {
            params: self.ec,
            dirs: 1,
            rot: tree.root().as_bytes()[1],
            checksums,
        });
        Ok(StagedObject {
            meta: ObjectMeta {
                tree,
                content_type,
                location: Location::OwnFile,
                parity,
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
        if let Some(parity) = self.parity {
            parity.file.abort(&parity.path).await;
        }
    }
}

/// Writes `data` to the upload's temp file, with its parity when the upload has it.
async fn write_striped(
    file: &mut TempFileWriter,
    data: &[u8],
    path: &Path,
    parity: Option<&mut ParityWriter>,
) -> Result<(), ShardError> {
    match parity {
        Some(parity) => file.write_with_parity(data, path, parity).await,
        None => file.write(data, path).await,
    }
}

impl ParityWriter {
    async fn create(data_path: &Path, ec: EcParams) -> Result<ParityWriter, ShardError> {
        let path = parity_path(data_path);
        let file = TempFileWriter::create(&path, WRITE_BYTES).await?;
        Ok(ParityWriter {
            path,
            code: StripeCode::new(ec),
            blocks: vec![vec![0u8; BLOCK_BYTES as usize]; usize::from(ec.parity)],
            file,
            checksums: Vec::new(),
        })
    }

    /// Computes and writes the parity of `data`: whole stripes, except that the last
    /// stripe of an object may be short.
    async fn add_stripes(&mut self, data: &[u8]) -> Result<(), ShardError> {
        let stripe_bytes = usize::from(self.code.params().data) * BLOCK_BYTES as usize;
        for stripe in data.chunks(stripe_bytes) {
            let blocks: Vec<&[u8]> = stripe.chunks(BLOCK_BYTES as usize).collect();
            let mut parity: Vec<&mut [u8]> = self.blocks.iter_mut().map(|b| &mut b[..]).collect();
            self.code
                .encode(&blocks, &mut parity)
                .map_err(|source| ShardError::Encode {
                    path: self.path.clone(),
                    source,
                })?;
            for block in &self.blocks {
                self.checksums.push(parity_checksum(block));
                self.file.write(block, &self.path).await?;
            }
        }
        Ok(())
    }

    async fn finish(self) -> Result<(PathBuf, Vec<[u8; 32]>), ShardError> {
        self.file.finish(&self.path, None).await?;
        Ok((self.path, self.checksums))
    }
}

/// Where the parity of the object staged or stored at `data_path` is.
pub fn parity_path(data_path: &Path) -> PathBuf {
    let mut name = data_path.as_os_str().to_owned();
    name.push(".parity");
    PathBuf::from(name)
}

impl TempFileWriter {
    async fn create(path: &Path, write_bytes: usize) -> Result<TempFileWriter, ShardError> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .dma_open(path)
            .await
            .map_err(|e| ShardError::io("create", path)(e.into()))?;
        let pending = file.alloc_dma_buffer(write_bytes);
        Ok(TempFileWriter {
            file: Rc::new(file),
            write_bytes,
            pending,
            pending_len: 0,
            in_flight: VecDeque::new(),
            issued: 0,
        })
    }

    /// Copies `data` into the pending buffer, issuing each full one.
    async fn write(&mut self, mut data: &[u8], path: &Path) -> Result<(), ShardError> {
        while !data.is_empty() {
            if self.fill(&mut data) {
                self.issue_pending(path).await?;
            }
        }
        Ok(())
    }

    /// [`Self::write`], each full buffer's parity made before it is issued.
    async fn write_with_parity(
        &mut self,
        mut data: &[u8],
        path: &Path,
        parity: &mut ParityWriter,
    ) -> Result<(), ShardError> {
        while !data.is_empty() {
            if self.fill(&mut data) {
                parity.add_stripes(self.pending_bytes()).await?;
                self.issue_pending(path).await?;
            }
        }
        Ok(())
    }

    /// Moves what fits of `data` into the pending buffer; true when it is full.
    fn fill(&mut self, data: &mut &[u8]) -> bool {
        let room = self.write_bytes - self.pending_len;
        let (now, rest) = data.split_at(room.min(data.len()));
        self.pending.as_bytes_mut()[self.pending_len..self.pending_len + now.len()]
            .copy_from_slice(now);
        self.pending_len += now.len();
        *data = rest;
        self.pending_len == self.write_bytes
    }

    fn pending_bytes(&self) -> &[u8] {
        &self.pending.as_bytes()[..self.pending_len]
    }

    /// Starts the write of the pending bytes (padded to the file's alignment) at the end
    /// of the file, first waiting for the oldest write if the most are in flight.
    async fn issue_pending(&mut self, path: &Path) -> Result<(), ShardError> {
        while self.in_flight.len() >= WRITES_IN_FLIGHT {
            self.wait_oldest(path).await?;
        }
        let len = self.pending_len;
        let aligned = self.file.align_up(len as u64) as usize;
        let fresh = self.file.alloc_dma_buffer(self.write_bytes);
        let mut buf = std::mem::replace(&mut self.pending, fresh);
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

    /// Writes what is pending (its parity first), cuts the padding and closes the file.
    async fn finish(
        mut self,
        path: &Path,
        parity: Option<&mut ParityWriter>,
    ) -> Result<(), ShardError> {
        if self.pending_len > 0 {
            if let Some(parity) = parity {
                parity.add_stripes(self.pending_bytes()).await?;
            }
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
    if let StagedBody::TempFile { data, parity } = &staged.body {
        let _ = glommio::io::remove(data).await;
        if let Some(parity) = parity {
            let _ = glommio::io::remove(parity).await;
        }
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
            let mut upload = Upload::new(path.clone(), None, EcParams::OFF);
            for piece in data.chunks(10_000) {
                poll_spuriously(upload.write(piece)).await.unwrap();
            }
            poll_spuriously(upload.finish(String::new())).await.unwrap()
        });
        let StagedBody::TempFile { data: written, .. } = &staged.body else {
            panic!("{} bytes were not written to a temp file", data.len());
        };
        assert_eq!(std::fs::read(written).unwrap(), data);
        assert_eq!(staged.meta.tree, ron_codec::ChunkTree::of(&data));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Uploads `data` in pieces of `piece` bytes, announcing `expected` bytes.
    fn upload(path: &Path, data: &[u8], piece: usize, expected: Option<u64>) -> StagedObject {
        upload_coded(path, data, piece, expected, EcParams::OFF)
    }

    fn upload_coded(
        path: &Path,
        data: &[u8],
        piece: usize,
        expected: Option<u64>,
        ec: EcParams,
    ) -> StagedObject {
        glommio::LocalExecutor::default().run(async {
            let mut upload = Upload::new(path.to_path_buf(), expected, ec);
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
                StagedBody::TempFile { data: file, parity } => {
                    assert!(len > max, "{len} bytes went to a file");
                    assert_eq!(std::fs::read(file).unwrap(), data);
                    assert_eq!(*parity, None, "no parity with the code off");
                }
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The parity file an upload wrote: every stripe's blocks, each matching the code's
    /// own encoding of that stripe and the checksum in the record.
    #[test]
    fn uploads_write_each_stripes_parity_beside_the_data_with_its_checksums() {
        let dir = std::env::temp_dir().join(format!("ron-upload-parity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let block = BLOCK_BYTES as usize;
        for (k, m, len) in [
            (4, 1, 10 * block + 500),
            (3, 2, 7 * block),
            (4, 1, block + 1),
        ] {
            let ec = EcParams::new(k, m).unwrap();
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
            let path = dir.join(format!("upload-{k}-{m}-{len}"));
            let staged = upload_coded(&path, &data, 70_000, None, ec);
            let StagedBody::TempFile {
                data: file,
                parity: Some(parity_file),
            } = &staged.body
            else {
                panic!("{len} bytes at {ec} staged without a parity file");
            };
            assert_eq!(std::fs::read(file).unwrap(), data);
            let parity = staged.meta.parity.as_ref().unwrap();
            let stripes = len.div_ceil(k as usize * block);
            let stored = std::fs::read(parity_file).unwrap();
            assert_eq!(stored.len(), stripes * usize::from(m) * block);
            assert_eq!(parity.checksums.len(), stripes * usize::from(m));
            let code = StripeCode::new(ec);
            for (s, stripe) in data.chunks(usize::from(k) * block).enumerate() {
                let blocks: Vec<&[u8]> = stripe.chunks(block).collect();
                let mut want = vec![vec![0u8; block]; usize::from(m)];
                let mut out: Vec<&mut [u8]> = want.iter_mut().map(|b| &mut b[..]).collect();
                code.encode(&blocks, &mut out).unwrap();
                for (p, want) in want.iter().enumerate() {
                    let at = (s * usize::from(m) + p) * block;
                    assert!(stored[at..at + block] == want[..], "stripe {s} parity {p}");
                    assert_eq!(
                        parity.checksums[s * usize::from(m) + p],
                        parity_checksum(want)
                    );
                }
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
