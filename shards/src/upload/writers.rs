//! The files side of an upload: the temp files its bytes are written to with aligned
//! direct I/O ([`TempFileWriter`]), the parity made stripe by stripe beside them
//! ([`ParityWriter`]), and the two layouts — every group in one file, or blocks spread
//! over the dirs ([`DataWriter`]).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions};
use ron_codec::tree::{GroupIndex, GROUP_LEN_BYTES};

use crate::ec::{parity_checksum, EcParams, StripeCode, StripeGeometry};
use crate::error::ShardError;
use crate::ids::{DirIndex, StripeIndex};
use crate::layout::{self, DataDirs};
use crate::limits::BLOCK_BYTES;
use crate::upload::staged::StagedFile;

/// The files side of an upload.
pub(super) enum DataWriter {
    /// Every group in one file, in order (one dir, or no parity), and the parity, if
    /// any, in that dir's parity file.
    One {
        file: TempFileWriter,
        parity: Option<ParityWriter>,
    },
    /// Groups spread over the dirs.
    Spread(SpreadWriter),
}

/// Whole stripes are gathered, their parity made, and each block appended to its
/// dir's data file (created at its first block).
pub(super) struct SpreadWriter {
    pub(super) gather: Vec<u8>,
    pub(super) gather_bytes: usize,
    pub(super) files: Vec<Option<TempFileWriter>>,
    /// The group the gathered bytes start with.
    pub(super) next_group: u64,
    pub(super) parity: ParityWriter,
}

/// The parity side of an upload: the code, where blocks go, a scratch stripe of
/// parity blocks, each dir's parity temp file (created at its first block) and the
/// checksums so far.
pub(super) struct ParityWriter {
    pub(super) code: StripeCode,
    pub(super) geometry: StripeGeometry,
    pub(super) blocks: Vec<Vec<u8>>,
    pub(super) files: Vec<Option<TempFileWriter>>,
    pub(super) next_stripe: u64,
    pub(super) checksums: Vec<[u8; 32]>,
}

/// A temp file being written with direct I/O.
///
/// Writes are `DmaFile::write_at` futures, each in its own task (a request's task may be
/// polled spuriously by its socket or a timer; glommio's `StreamWriter` unwraps its
/// pending write when polled early and would panic the shard).
pub(super) struct TempFileWriter {
    pub(super) path: PathBuf,
    pub(super) file: Rc<DmaFile>,
    /// Bytes per write: a whole number of stripes.
    pub(super) write_bytes: usize,
    /// Bytes not yet written, less than one write; written when it fills.
    pub(super) pending: DmaBuffer,
    pub(super) pending_len: usize,
    /// Writes issued, oldest first, and the bytes each must write.
    pub(super) in_flight: VecDeque<(glommio::Task<std::io::Result<usize>>, usize)>,
    /// Bytes given to writes.
    pub(super) issued: u64,
}

/// Bytes per direct write at least (eight groups): large enough for the device's rate;
/// with the writes in flight and the buffer filling, an upload holds 1.5 MiB of DMA
/// buffers per file it writes.
pub(super) const WRITE_BYTES: usize = 8 * GROUP_LEN_BYTES as usize;

/// Bytes per data write for a code: the smallest whole number of stripes that is at
/// least [`WRITE_BYTES`], so a stripe never straddles two writes.
pub(super) fn data_write_bytes(ec: EcParams) -> usize {
    let stripe = usize::from(ec.data) * BLOCK_BYTES as usize;
    WRITE_BYTES.div_ceil(stripe) * stripe
}

/// Direct writes one file of an upload keeps in flight while it receives the next
/// bytes.
pub(super) const WRITES_IN_FLIGHT: usize = 2;

/// Names an upload's temp files: the same name in each dir's temp dir.
pub(super) struct TempNames {
    pub(super) dirs: DataDirs,
    pub(super) name: String,
}

impl TempNames {
    pub(super) fn temp_path(&self, dir: DirIndex, parity: bool) -> PathBuf {
        let path = layout::tmp_dir(self.dirs.dir(dir)).join(&self.name);
        match parity {
            true => layout::parity_path(&path),
            false => path,
        }
    }

    /// Removes every temp file an upload named so may have made, data and parity, in
    /// every dir (those it never made are not found): for a failure that took the
    /// writers with it.
    pub(super) async fn remove_every(&self) {
        for dir in (0..self.dirs.count()).map(DirIndex) {
            for parity in [false, true] {
                let _ = glommio::io::remove(self.temp_path(dir, parity)).await;
            }
        }
    }
}

impl DataWriter {
    pub(super) async fn write(&mut self, data: &[u8], names: &TempNames) -> Result<(), ShardError> {
        match self {
            DataWriter::One { file, parity } => file.write(data, parity.as_mut(), names).await,
            DataWriter::Spread(spread) => spread.write(data, names).await,
        }
    }

    /// Writes what is pending and closes the files; returns them (parity files first)
    /// and the parity checksums, if the object has parity.
    pub(super) async fn finish(
        self,
        names: &TempNames,
    ) -> Result<(Vec<StagedFile>, Option<Vec<[u8; 32]>>), ShardError> {
        let (data, parity) = match self {
            DataWriter::One { file, mut parity } => {
                let path = file.path.clone();
                file.finish(parity.as_mut(), names).await?;
                let data = StagedFile {
                    dir: DirIndex(0),
                    parity: false,
                    path,
                };
                (vec![data], parity)
            }
            DataWriter::Spread(mut spread) => {
                spread.scatter(names).await?;
                let data = finish_files(spread.files, false).await?;
                (data, Some(spread.parity))
            }
        };
        let Some(parity) = parity else {
            return Ok((data, None));
        };
        let mut staged = finish_files(parity.files, true).await?;
        staged.extend(data);
        Ok((staged, Some(parity.checksums)))
    }

    /// Every temp file the writer holds.
    pub(super) fn into_files(self) -> Vec<TempFileWriter> {
        let (data, parity) = match self {
            DataWriter::One { file, parity } => (vec![Some(file)], parity),
            DataWriter::Spread(spread) => (spread.files, Some(spread.parity)),
        };
        let parity = parity.into_iter().flat_map(|p| p.files);
        data.into_iter().chain(parity).flatten().collect()
    }
}

impl SpreadWriter {
    /// Gathers `data`; each full gather buffer (whole stripes) is scattered.
    pub(super) async fn write(
        &mut self,
        mut data: &[u8],
        names: &TempNames,
    ) -> Result<(), ShardError> {
        while !data.is_empty() {
            let room = self.gather.len() - self.gather_bytes;
            let (now, rest) = data.split_at(room.min(data.len()));
            self.gather[self.gather_bytes..self.gather_bytes + now.len()].copy_from_slice(now);
            self.gather_bytes += now.len();
            data = rest;
            if self.gather_bytes == self.gather.len() {
                self.scatter(names).await?;
            }
        }
        Ok(())
    }

    /// Makes the gathered stripes' parity and appends each gathered block to the data
    /// file of its dir.
    pub(super) async fn scatter(&mut self, names: &TempNames) -> Result<(), ShardError> {
        let bytes = &self.gather[..self.gather_bytes];
        self.parity.add_stripes(bytes, names).await?;
        for block in bytes.chunks(BLOCK_BYTES as usize) {
            let at = self
                .parity
                .geometry
                .data_block_at(GroupIndex(self.next_group));
            let slot = &mut self.files[usize::from(at.dir.0)];
            let file = created(slot, || names.temp_path(at.dir, false)).await?;
            file.write_plain(block).await?;
            self.next_group += 1;
        }
        self.gather_bytes = 0;
        Ok(())
    }
}

/// The temp file in `slot`, created at `path()` on first use.
pub(super) async fn created(
    slot: &mut Option<TempFileWriter>,
    path: impl FnOnce() -> PathBuf,
) -> Result<&mut TempFileWriter, ShardError> {
    match slot {
        Some(file) => Ok(file),
        slot => Ok(slot.insert(TempFileWriter::create(path(), WRITE_BYTES).await?)),
    }
}

/// Closes the temp files in `slots` (one per dir) and names them for the commit.
pub(super) async fn finish_files(
    slots: Vec<Option<TempFileWriter>>,
    parity: bool,
) -> Result<Vec<StagedFile>, ShardError> {
    let mut staged = Vec::new();
    for (d, file) in slots.into_iter().enumerate() {
        if let Some(file) = file {
            let path = file.path.clone();
            file.finish_plain().await?;
            staged.push(StagedFile {
                dir: DirIndex(d as u8),
                parity,
                path,
            });
        }
    }
    Ok(staged)
}

impl ParityWriter {
    pub(super) fn new(ec: EcParams, dirs: u8, rot: u8) -> ParityWriter {
        ParityWriter {
            code: StripeCode::new(ec),
            geometry: StripeGeometry::new(ec, dirs, rot, u64::MAX),
            blocks: vec![vec![0u8; BLOCK_BYTES as usize]; usize::from(ec.parity)],
            files: (0..dirs).map(|_| None).collect(),
            next_stripe: 0,
            checksums: Vec::new(),
        }
    }

    /// Computes and writes the parity of `data`: whole stripes, except that the last
    /// stripe of an object may be short.
    pub(super) async fn add_stripes(
        &mut self,
        data: &[u8],
        names: &TempNames,
    ) -> Result<(), ShardError> {
        let stripe_bytes = usize::from(self.code.params().data) * BLOCK_BYTES as usize;
        for stripe in data.chunks(stripe_bytes) {
            let blocks: Vec<&[u8]> = stripe.chunks(BLOCK_BYTES as usize).collect();
            let mut parity: Vec<&mut [u8]> = self.blocks.iter_mut().map(|b| &mut b[..]).collect();
            self.code
                .encode(&blocks, &mut parity)
                .map_err(|source| ShardError::Encode {
                    path: names.temp_path(DirIndex(0), true),
                    source,
                })?;
            for p in 0..self.code.params().parity {
                let block = &self.blocks[usize::from(p)];
                self.checksums.push(parity_checksum(block));
                let at = self
                    .geometry
                    .parity_block_at(StripeIndex(self.next_stripe), p);
                let slot = &mut self.files[usize::from(at.dir.0)];
                let file = created(slot, || names.temp_path(at.dir, true)).await?;
                file.write_plain(block).await?;
            }
            self.next_stripe += 1;
        }
        Ok(())
    }
}

impl TempFileWriter {
    pub(super) async fn create(
        path: PathBuf,
        write_bytes: usize,
    ) -> Result<TempFileWriter, ShardError> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .dma_open(&path)
            .await
            .map_err(|e| ShardError::io("create", &path)(e.into()))?;
        let pending = file.alloc_dma_buffer(write_bytes);
        Ok(TempFileWriter {
            path,
            file: Rc::new(file),
            write_bytes,
            pending,
            pending_len: 0,
            in_flight: VecDeque::new(),
            issued: 0,
        })
    }

    /// Copies `data` into the pending buffer, issuing each full one (its parity made
    /// first, when the file has parity).
    pub(super) async fn write(
        &mut self,
        mut data: &[u8],
        mut parity: Option<&mut ParityWriter>,
        names: &TempNames,
    ) -> Result<(), ShardError> {
        while !data.is_empty() {
            if self.fill(&mut data) {
                self.issue_full(parity.as_deref_mut(), names).await?;
            }
        }
        Ok(())
    }

    /// Copies `data` into the pending buffer, issuing each full one (a file without
    /// parity of its own: a parity file, or one dir's blocks of a spread object).
    pub(super) async fn write_plain(&mut self, mut data: &[u8]) -> Result<(), ShardError> {
        while !data.is_empty() {
            if self.fill(&mut data) {
                self.issue_pending().await?;
            }
        }
        Ok(())
    }

    /// The free part of the pending buffer, at most `max` bytes (never empty).
    pub(super) fn room(&mut self, max: usize) -> &mut [u8] {
        let end = self.write_bytes.min(self.pending_len.saturating_add(max));
        &mut self.pending.as_bytes_mut()[self.pending_len..end]
    }

    /// The first `n` bytes of [`Self::room`], as they arrived.
    pub(super) fn received(&self, n: usize) -> &[u8] {
        &self.pending.as_bytes()[self.pending_len..self.pending_len + n]
    }

    /// Counts the first `n` bytes of [`Self::room`] as pending, issuing the buffer when
    /// it is full.
    pub(super) async fn take_received(
        &mut self,
        n: usize,
        parity: Option<&mut ParityWriter>,
        names: &TempNames,
    ) -> Result<(), ShardError> {
        assert!(
            self.pending_len + n <= self.write_bytes,
            "more than the room"
        );
        self.pending_len += n;
        if self.pending_len == self.write_bytes {
            self.issue_full(parity, names).await?;
        }
        Ok(())
    }

    /// Issues the full pending buffer, its parity made first.
    pub(super) async fn issue_full(
        &mut self,
        parity: Option<&mut ParityWriter>,
        names: &TempNames,
    ) -> Result<(), ShardError> {
        if let Some(parity) = parity {
            parity.add_stripes(self.pending_bytes(), names).await?;
        }
        self.issue_pending().await
    }

    /// Moves what fits of `data` into the pending buffer; true when it is full.
    pub(super) fn fill(&mut self, data: &mut &[u8]) -> bool {
        let room = self.write_bytes - self.pending_len;
        let (now, rest) = data.split_at(room.min(data.len()));
        self.pending.as_bytes_mut()[self.pending_len..self.pending_len + now.len()]
            .copy_from_slice(now);
        self.pending_len += now.len();
        *data = rest;
        self.pending_len == self.write_bytes
    }

    pub(super) fn pending_bytes(&self) -> &[u8] {
        &self.pending.as_bytes()[..self.pending_len]
    }

    /// Starts the write of the pending bytes (padded to the file's alignment) at the end
    /// of the file, first waiting for the oldest write if the most are in flight.
    pub(super) async fn issue_pending(&mut self) -> Result<(), ShardError> {
        while self.in_flight.len() >= WRITES_IN_FLIGHT {
            self.wait_oldest().await?;
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
    pub(super) async fn wait_oldest(&mut self) -> Result<(), ShardError> {
        let Some((write, len)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let n = write.await.map_err(ShardError::io("write", &self.path))?;
        if n < len {
            let short = std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!("short write: {n} of {len} bytes"),
            );
            return Err(ShardError::io("write", &self.path)(short));
        }
        Ok(())
    }

    /// Writes what is pending (its parity first), cuts the padding and closes the file.
    pub(super) async fn finish(
        self,
        parity: Option<&mut ParityWriter>,
        names: &TempNames,
    ) -> Result<(), ShardError> {
        if self.pending_len > 0 {
            if let Some(parity) = parity {
                parity.add_stripes(self.pending_bytes(), names).await?;
            }
        }
        self.finish_plain().await
    }

    /// Writes what is pending, cuts the padding and closes the file.
    pub(super) async fn finish_plain(mut self) -> Result<(), ShardError> {
        if self.pending_len > 0 {
            self.issue_pending().await?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest().await?;
        }
        if !self.issued.is_multiple_of(self.file.alignment()) {
            self.file
                .truncate(self.issued)
                .await
                .map_err(|e| ShardError::io("truncate", &self.path)(e.into()))?;
        }
        close(self.file, &self.path).await
    }

    pub(super) async fn abort(mut self) {
        while let Some((write, _)) = self.in_flight.pop_front() {
            let _ = write.await;
        }
        let _ = close(self.file, &self.path).await;
        let _ = glommio::io::remove(&self.path).await;
    }
}

/// Closes the temp file once no write holds it.
pub(super) async fn close(file: Rc<DmaFile>, path: &std::path::Path) -> Result<(), ShardError> {
    file.close_rc()
        .await
        .map(|_| ())
        .map_err(|e| ShardError::io("close", path)(e.into()))
}
