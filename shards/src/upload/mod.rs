//! Uploads: bytes hashed (root + group chaining values) while they are written to a temp
//! file, and the staged object they become. Nothing here is visible to readers: a
//! [`StagedObject`] becomes an object only through the group commit (`commit/`).
//!
//! Files: this one ([`Upload`]: hashing, keeping a small object in memory, handing the
//! rest to the writers), `writers.rs` (temp files with direct I/O, parity stripe by
//! stripe, one file or blocks spread over the dirs), `staged.rs` (what an upload
//! becomes, and its discard).
//!
//! This module knows neither the shard nor the mesh; the mesh carries a
//! [`StagedObject`] to the owner shard as plain data.

use bytes::Bytes;

use ron_codec::TreeHasher;

use crate::ec::{EcParams, StripeGeometry};
use crate::error::ShardError;
use crate::ids::DirIndex;
use crate::limits::PACKED_OBJECT_BYTES_MAX;
use crate::record::{Location, ObjectMeta, Parity, Retention, CONTENT_TYPE_LEN_MAX};

mod staged;
mod writers;

pub use crate::upload::staged::{discard, Placement, StagedBody, StagedFile, StagedObject};
use crate::upload::writers::{
    data_write_bytes, DataWriter, ParityWriter, SpreadWriter, TempFileWriter, TempNames,
};

/// Whether an upload may be packed into a segment (one-dir nodes, objects no longer
/// than [`PACKED_OBJECT_BYTES_MAX`], or of a length not announced, until it grows past).
fn packs(placement: &Placement, expected_len: Option<u64>, pack: bool) -> bool {
    pack && placement.dirs.count() == 1
        && expected_len.is_none_or(|len| len <= PACKED_OBJECT_BYTES_MAX)
}

/// An upload in progress: bytes are hashed (root + group CVs) as they arrive. On a
/// one-dir node the first [`PACKED_OBJECT_BYTES_MAX`] are kept in memory: an object no
/// longer than that is packed into a segment by its commit and never has a file of its
/// own. Past it (or from the start, when the announced length is longer, or the node
/// spreads objects over several dirs), the bytes go to temp files with aligned
/// O_DIRECT writes of at least [`WRITE_BYTES`], up to [`WRITES_IN_FLIGHT`] per file at
/// once while the next bytes arrive. Nothing is visible until [`crate::Shard::commit`],
/// whose group commit makes the bytes durable: direct writes leave no dirty page cache
/// behind, so that `fdatasync` only flushes the file's metadata and the device cache
/// instead of writing the whole object back.
///
/// With parity on (`EcParams`, m ≥ 1), data is cut in whole stripes: before a stripe's
/// blocks are written its parity blocks are computed from them and written to the
/// parity temp file of their dir (the data file's name plus `.parity`), checksums kept
/// for the record (version 3). With one dir the data file is the object's bytes in
/// order (the DMA buffer goes to disk as it is); with several, each block is appended
/// to the data file of the dir its column maps to (`ec::StripeGeometry`). Packed
/// objects have no parity (yet: the design note's lanes), so several-dir nodes do not
/// pack: a small object there is a one-block stripe, `m + 1` blocks in as many dirs.
///
/// The last write is padded to the file's alignment and the file truncated to its
/// length. An upload of an object already stored is written and then discarded (the
/// page cache used to absorb it; see docs/design/storage.md).
pub struct Upload {
    names: TempNames,
    /// The rotation of the object's columns over the dirs (kept in its record).
    rot: u8,
    /// The bytes so far while the object may still be packed; empty once `data` holds
    /// them.
    head: Vec<u8>,
    /// False when the announced length is too long to pack, or the node does not pack:
    /// the bytes go to temp files from the first one.
    packable: bool,
    data: Option<DataWriter>,
    /// The code new objects get; parity is made only for objects with files.
    ec: EcParams,
    hasher: TreeHasher,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("name", &self.names.name)
            .field("len", &self.hasher.object_len())
            .field("packable", &self.data.is_none())
            .finish()
    }
}

impl Upload {
    /// An upload whose temp files, if it needs them, will be named `name` in the temp
    /// dir of each data dir of `placement` (no such file may exist). `expected_len`,
    /// when announced, sizes the in-memory head (or skips it for an object too long to
    /// pack). With `pack` false it is never packed: a file of its own whatever its size.
    pub fn new(
        placement: Placement,
        name: String,
        expected_len: Option<u64>,
        ec: EcParams,
        pack: bool,
    ) -> Upload {
        let packable = packs(&placement, expected_len, pack);
        let head_bytes = expected_len.filter(|_| packable).unwrap_or(0);
        Upload {
            names: TempNames {
                dirs: placement.dirs,
                name,
            },
            rot: placement.rot,
            head: Vec::with_capacity(head_bytes as usize),
            packable,
            data: None,
            ec,
            hasher: TreeHasher::new(),
        }
    }

    /// What an object of `len` bytes begun with `placement` puts in each data dir, in
    /// dir order: its data and parity files, or, packed, its needle in every lane.
    pub fn disk_bytes_per_dir(
        placement: &Placement,
        len: u64,
        ec: EcParams,
        pack: bool,
    ) -> Vec<u64> {
        let dirs = placement.dirs.count();
        if packs(placement, Some(len), pack) {
            return vec![len * (u64::from(ec.parity) + 1)];
        }
        let geometry = StripeGeometry::new(ec, dirs, placement.rot, len);
        (0..dirs)
            .map(DirIndex)
            .map(|d| geometry.data_file_len(d) + geometry.parity_file_len(d))
            .collect()
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
        let in_head = self.packable && self.len() <= PACKED_OBJECT_BYTES_MAX;
        let writer = match &mut self.data {
            Some(writer) => writer,
            None if in_head => {
                self.head.extend_from_slice(data);
                return Ok(());
            }
            None => {
                let mut writer = self.start_files().await?;
                let head = std::mem::take(&mut self.head);
                let written = writer.write(&head, &self.names).await;
                // Held before its result counts, so that `abort` removes its files.
                let writer = self.data.insert(writer);
                written?;
                writer
            }
        };
        writer.write(data, &self.names).await
    }

    /// Room for at most `max` more bytes in the data file's pending direct-write buffer,
    /// for the caller to receive the body straight into (no copy on its way to the
    /// disk), once the upload writes one data file (one data dir; parity, if any, is
    /// made from the buffer when it is full). `None` otherwise: use [`Self::write`].
    /// The bytes count once [`Self::filled`] is told how many arrived.
    pub fn room(&mut self, max: usize) -> Option<&mut [u8]> {
        match &mut self.data {
            Some(DataWriter::One { file, .. }) if max > 0 => Some(file.room(max)),
            _ => None,
        }
    }

    /// Takes the first `n` bytes of [`Self::room`] as received: hashed and written as
    /// [`Self::write`] of them would be.
    pub async fn filled(&mut self, n: usize) -> Result<(), ShardError> {
        let Upload {
            data: Some(DataWriter::One { file, parity }),
            hasher,
            names,
            ..
        } = self
        else {
            panic!("filled({n}) without room: the upload writes no single data file");
        };
        hasher.update(file.received(n));
        file.take_received(n, parity.as_mut(), names).await
    }

    /// Makes the upload's writers (creating the data file of a one-dir object).
    async fn start_files(&self) -> Result<DataWriter, ShardError> {
        let dirs = self.names.dirs.count();
        let parity = (!self.ec.is_off()).then(|| ParityWriter::new(self.ec, dirs, self.rot));
        let write_bytes = data_write_bytes(self.ec);
        match parity {
            Some(parity) if dirs > 1 => Ok(DataWriter::Spread(SpreadWriter {
                gather: vec![0u8; write_bytes],
                gather_bytes: 0,
                files: (0..dirs).map(|_| None).collect(),
                next_group: 0,
                parity,
            })),
            parity => {
                let path = self.names.temp_path(DirIndex(0), false);
                let file = TempFileWriter::create(path, write_bytes).await?;
                Ok(DataWriter::One { file, parity })
            }
        }
    }

    /// Makes the bytes ready to commit: the head as it is, or the temp files with what
    /// is pending written, their padding cut and closed. Returns them with the chunk
    /// tree.
    pub async fn finish(mut self, content_type: String) -> Result<StagedObject, ShardError> {
        // A record holds the type's length in one byte: a longer one would be written as
        // another length, and the record read back as another object.
        if content_type.len() > CONTENT_TYPE_LEN_MAX {
            self.abort().await;
            return Err(ShardError::ContentTypeTooLong {
                len: content_type.len(),
                max: CONTENT_TYPE_LEN_MAX,
            });
        }
        if self.data.is_none() && !self.packable {
            // An empty upload on a node that does not pack still gets its files.
            self.data = Some(self.start_files().await?);
        }
        let (body, checksums) = match self.data.take() {
            // Without a writer every byte is in the head (at most PACKED_OBJECT_BYTES_MAX).
            None => (
                StagedBody::Packed(Bytes::from(std::mem::take(&mut self.head))),
                None,
            ),
            Some(writer) => match writer.finish(&self.names).await {
                Ok((files, checksums)) => (StagedBody::TempFiles(files), checksums),
                Err(e) => {
                    // A full disk at the last write: its temp files go now, not at stop.
                    self.names.remove_every().await;
                    return Err(e);
                }
            },
        };
        let tree = self.hasher.finalize();
        let parity = checksums.map(|checksums| Parity {
            params: self.ec,
            dirs: self.names.dirs.count(),
            rot: self.rot,
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
            retention: Retention::Kept,
        })
    }

    /// Drops the upload and its temp files, if it has them (after their writes end:
    /// they hold the files).
    pub async fn abort(self) {
        let files = self.data.map(DataWriter::into_files).unwrap_or_default();
        for file in files {
            file.abort().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::poll_once;
    use ron_codec::tree::GroupIndex;
    use std::future::Future;
    use std::path::{Path, PathBuf};

    use crate::ec::{parity_checksum, StripeCode};
    use crate::ids::StripeIndex;
    use crate::layout::{self, DataDirs};
    use crate::limits::BLOCK_BYTES;
    use crate::upload::writers::WRITE_BYTES;

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

    /// Data dirs under `root` (each with its temp dir) for an upload.
    fn placement(root: &Path, dirs: usize, rot: u8) -> Placement {
        let dirs: Vec<PathBuf> = (0..dirs).map(|d| root.join(format!("d{d}"))).collect();
        for dir in &dirs {
            std::fs::create_dir_all(layout::tmp_dir(dir)).unwrap();
        }
        Placement {
            dirs: DataDirs::new(dirs),
            rot,
        }
    }

    fn temp_root(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("ron-upload-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        root
    }

    /// The one staged file of `files` in `dir` of the kind asked for.
    fn staged_file(files: &[StagedFile], dir: u8, parity: bool) -> Option<&Path> {
        files
            .iter()
            .find(|f| f.dir == DirIndex(dir) && f.parity == parity)
            .map(|f| f.path.as_path())
    }

    #[test]
    fn writes_and_close_polled_before_their_io_completes_wait_instead_of_panicking() {
        let root = temp_root("spurious");
        let data: Vec<u8> = (0..3 * WRITE_BYTES + 5).map(|i| i as u8).collect();
        let staged = glommio::LocalExecutor::default().run(async {
            let mut upload = Upload::new(
                placement(&root, 1, 0),
                "u".into(),
                None,
                EcParams::OFF,
                true,
            );
            for piece in data.chunks(10_000) {
                poll_spuriously(upload.write(piece)).await.unwrap();
            }
            poll_spuriously(upload.finish(String::new())).await.unwrap()
        });
        let StagedBody::TempFiles(files) = &staged.body else {
            panic!("{} bytes were not written to a temp file", data.len());
        };
        let written = staged_file(files, 0, false).unwrap();
        assert_eq!(std::fs::read(written).unwrap(), data);
        assert_eq!(staged.meta.tree, ron_codec::ChunkTree::of(&data));
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Uploads `data` in pieces of `piece` bytes, announcing `expected` bytes.
    fn upload(
        placement: Placement,
        data: &[u8],
        piece: usize,
        expected: Option<u64>,
        ec: EcParams,
    ) -> StagedObject {
        glommio::LocalExecutor::default().run(async {
            let mut upload = Upload::new(placement, "u".into(), expected, ec, true);
            for bytes in data.chunks(piece) {
                upload.write(bytes).await.unwrap();
            }
            upload.finish(String::new()).await.unwrap()
        })
    }

    #[test]
    fn objects_up_to_one_group_stay_in_memory_to_be_packed_and_longer_ones_get_a_file() {
        let root = temp_root("pack");
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
            let at = root.join(format!("{len}-{expected:?}"));
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let staged = upload(placement(&at, 1, 0), &data, 1000, expected, EcParams::OFF);
            assert_eq!(staged.meta.tree, ron_codec::ChunkTree::of(&data));
            match &staged.body {
                StagedBody::Packed(body) => {
                    assert!(len <= max, "{len} bytes kept in memory");
                    assert_eq!(&body[..], &data[..]);
                    let temp = layout::tmp_dir(&at.join("d0"));
                    assert_eq!(std::fs::read_dir(temp).unwrap().count(), 0, "a temp file");
                }
                StagedBody::TempFiles(files) => {
                    assert!(len > max, "{len} bytes went to a file");
                    assert_eq!(files.len(), 1, "no parity with the code off");
                    let file = staged_file(files, 0, false).unwrap();
                    assert_eq!(std::fs::read(file).unwrap(), data);
                }
            }
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// The code's own encoding of every stripe of `data`.
    fn expected_parity(ec: EcParams, data: &[u8]) -> Vec<Vec<Vec<u8>>> {
        let block = BLOCK_BYTES as usize;
        let code = StripeCode::new(ec);
        data.chunks(usize::from(ec.data) * block)
            .map(|stripe| {
                let blocks: Vec<&[u8]> = stripe.chunks(block).collect();
                let mut want = vec![vec![0u8; block]; usize::from(ec.parity)];
                let mut out: Vec<&mut [u8]> = want.iter_mut().map(|b| &mut b[..]).collect();
                code.encode(&blocks, &mut out).unwrap();
                want
            })
            .collect()
    }

    /// The parity file an upload wrote: every stripe's blocks, each matching the code's
    /// own encoding of that stripe and the checksum in the record.
    #[test]
    fn uploads_write_each_stripes_parity_beside_the_data_with_its_checksums() {
        let root = temp_root("parity");
        let block = BLOCK_BYTES as usize;
        for (k, m, len) in [
            (4, 1, 10 * block + 500),
            (3, 2, 7 * block),
            (4, 1, block + 1),
        ] {
            let ec = EcParams::new(k, m).unwrap();
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
            let at = root.join(format!("{k}-{m}-{len}"));
            let staged = upload(placement(&at, 1, 0), &data, 70_000, None, ec);
            let StagedBody::TempFiles(files) = &staged.body else {
                panic!("{len} bytes at {ec} staged in memory");
            };
            assert_eq!(files.len(), 2);
            assert!(files[0].parity, "parity first");
            let file = staged_file(files, 0, false).unwrap();
            assert_eq!(std::fs::read(file).unwrap(), data);
            let parity = staged.meta.parity.as_ref().unwrap();
            let stripes = len.div_ceil(k as usize * block);
            let stored = std::fs::read(staged_file(files, 0, true).unwrap()).unwrap();
            assert_eq!(stored.len(), stripes * usize::from(m) * block);
            assert_eq!(parity.checksums.len(), stripes * usize::from(m));
            for (s, want) in expected_parity(ec, &data).iter().enumerate() {
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
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Uploads `data`: its first `piece` bytes written, the rest received straight into
    /// the upload's room, at most `piece` bytes at a time (as socket reads land).
    fn upload_into_room(
        placement: Placement,
        data: &[u8],
        piece: usize,
        ec: EcParams,
    ) -> StagedObject {
        glommio::LocalExecutor::default().run(async {
            let len = data.len() as u64;
            let mut upload = Upload::new(placement, "u".into(), Some(len), ec, true);
            assert!(
                upload.room(piece).is_none(),
                "room before the data file exists"
            );
            let (first, mut rest) = data.split_at(piece.min(data.len()));
            upload.write(first).await.unwrap();
            while !rest.is_empty() {
                let room = upload.room(rest.len()).expect("room in a one-file upload");
                let n = room.len().min(piece);
                room[..n].copy_from_slice(&rest[..n]);
                upload.filled(n).await.unwrap();
                rest = &rest[n..];
            }
            upload.finish(String::new()).await.unwrap()
        })
    }

    /// A staged file's dir, kind (parity or not) and bytes.
    type FileBytes = (u8, bool, Vec<u8>);

    /// Every file's bytes of a staged object, by dir and kind, and its parity checksums.
    fn staged_bytes(staged: &StagedObject) -> (Vec<FileBytes>, Option<Vec<[u8; 32]>>) {
        let StagedBody::TempFiles(files) = &staged.body else {
            panic!("staged in memory");
        };
        let mut bytes: Vec<_> = files
            .iter()
            .map(|f| (f.dir.0, f.parity, std::fs::read(&f.path).unwrap()))
            .collect();
        bytes.sort();
        let checksums = staged.meta.parity.as_ref().map(|p| p.checksums.clone());
        (bytes, checksums)
    }

    #[test]
    fn bytes_received_into_the_room_are_staged_exactly_as_written_ones() {
        let root = temp_root("room");
        let block = BLOCK_BYTES as usize;
        for ec in [
            EcParams::OFF,
            EcParams::new(4, 1).unwrap(),
            EcParams::new(3, 2).unwrap(),
        ] {
            for (len, piece) in [
                (3 * WRITE_BYTES + 5, 70_000),
                (2 * WRITE_BYTES, 4096),
                (block + 1, 1000),
                (10 * block + 500, 3 * block + 7),
            ] {
                let data: Vec<u8> = (0..len).map(|i| (i * 13 % 251) as u8).collect();
                let at = root.join(format!("{ec}-{len}-{piece}"));
                let written = upload(placement(&at.join("w"), 1, 0), &data, piece, None, ec);
                let received = upload_into_room(placement(&at.join("r"), 1, 0), &data, piece, ec);
                assert_eq!(received.meta.tree, ron_codec::ChunkTree::of(&data));
                assert_eq!(received.meta.tree, written.meta.tree);
                assert!(
                    staged_bytes(&written) == staged_bytes(&received),
                    "{ec} {len} {piece}"
                );
            }
        }
        // A spread object (several dirs) gathers whole stripes first: no room to offer.
        glommio::LocalExecutor::default().run(async {
            let ec = EcParams::new(2, 1).unwrap();
            let mut upload = Upload::new(
                placement(&root.join("spread"), 3, 0),
                "u".into(),
                Some(1 << 20),
                ec,
                true,
            );
            upload.write(&[7; 1000]).await.unwrap();
            assert!(upload.room(1 << 20).is_none());
            upload.abort().await;
        });
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// With several dirs every block is in the file of the dir its column maps to, at
    /// the offset the geometry says, and small objects get files too (no packing).
    #[test]
    fn uploads_over_several_dirs_put_each_block_where_the_geometry_says() {
        let root = temp_root("spread");
        let block = BLOCK_BYTES as usize;
        for (k, m, dirs, rot, len) in [
            (2, 2, 4, 3, 9 * block + 77),
            (2, 2, 4, 0, 100),
            (4, 2, 3, 1, 13 * block),
            (2, 1, 3, 2, 0),
        ] {
            let ec = EcParams::new(k, m).unwrap();
            let data: Vec<u8> = (0..len).map(|i| (i * 13 % 251) as u8).collect();
            let at = root.join(format!("{k}-{m}-{dirs}-{len}"));
            let staged = upload(placement(&at, dirs, rot), &data, 50_000, None, ec);
            let StagedBody::TempFiles(files) = &staged.body else {
                panic!("{len} bytes over {dirs} dirs staged in memory");
            };
            let parity = staged.meta.parity.as_ref().expect("a parity record");
            assert_eq!((parity.dirs, parity.rot), (dirs as u8, rot));
            let geometry = parity.geometry(len as u64);
            for d in 0..dirs as u8 {
                let read = |p| staged_file(files, d, p).map(|f| std::fs::read(f).unwrap());
                let data_file = read(false).unwrap_or_default();
                assert_eq!(data_file.len() as u64, geometry.data_file_len(DirIndex(d)));
                let parity_file = read(true).unwrap_or_default();
                assert_eq!(
                    parity_file.len() as u64,
                    geometry.parity_file_len(DirIndex(d))
                );
                for (g, group) in data.chunks(block).enumerate() {
                    let at = geometry.data_block_at(GroupIndex(g as u64));
                    if at.dir == DirIndex(d) {
                        let from = at.offset.0 as usize;
                        assert!(data_file[from..from + group.len()] == *group, "group {g}");
                    }
                }
                for (s, want) in expected_parity(ec, &data).iter().enumerate() {
                    for (p, want) in want.iter().enumerate() {
                        let at = geometry.parity_block_at(StripeIndex(s as u64), p as u8);
                        if at.dir == DirIndex(d) {
                            let from = at.offset.0 as usize;
                            assert!(parity_file[from..from + block] == want[..], "{s}/{p}");
                        }
                    }
                }
            }
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
