//! The sweep of orphaned object files, once per start: files in a store's `objects/`
//! that no index record names.
//!
//! Two things leave them. The group commit renames an upload's staged files into
//! `objects/` (synced) before its index commit (`commit/write.rs`, then
//! `commit/index.rs`): a crash between the two leaves a batch of large objects' files
//! there with no record, as does a batch whose later rename or dir sync failed. And an
//! index lost, moved aside or restored from an older copy leaves every object in a file
//! of its own that it does not name — acknowledged objects, whose bytes are whole
//! (synced before their rename) and named by their own hash. Removing every unrecorded
//! file would destroy the second kind; keeping every one would leak the first for good.
//! So a file is judged by its bytes, as the segments' replay judges a needle:
//!
//! - a data file whose bytes hash to its name is **adopted**: read once and stored again
//!   through the upload path (a kept object, no content type: the record that held it is
//!   gone), which writes its parity anew and commits its record;
//! - a file whose bytes are another object's, or a parity file with no data file beside
//!   it, is **removed**: claimed in the commit queue as an eviction claims it (an upload
//!   of the address waits; one with a commit in flight is not claimed), looked up again,
//!   unlinked if still unrecorded, the dir synced, the claim released;
//! - on a store spread over several data dirs, a dir's file holds one column of the
//!   object's stripes and cannot be judged alone: the object is judged once, by all of
//!   its files, from the first dir holding one. Each layout the data files' sizes allow
//!   under the node's code ([`layouts`]: the rotation the lost record held came from an
//!   upload counter) is read back (hashed first where several fit) until one is the
//!   object, which is then **adopted**,
//!   written in that rotation so its new files replace the old ones; files no layout
//!   reads back as their object are **kept** (counted and logged), never removed, as is
//!   a file named by an address that belongs in another store.
//!
//! One background task per shard walks each of its stores' `objects/hh` dirs in every
//! data dir (one listing per dir, on the blocking pool). Only files last written before
//! the sweep began are judged: what the crash or the lost index left is older, and a
//! file written since is a commit of this run on its way to its record (renamed, not
//! yet indexed) — adopted, a read-through's evictable copy became a kept one. A file a
//! commit is renaming now is never removed either: its address is in flight.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};

use ron_codec::tree::{GroupIndex, TreeHasher};
use ron_codec::Address;

use super::Shard;
use crate::commit::GroupCommit;
use crate::ec::{EcParams, StripeGeometry};
use crate::error::ShardError;
use crate::ids::DirIndex;
use crate::lifecycle::StopSignal;
use crate::limits::BLOCK_BYTES;
use crate::store::Store;
use crate::upload;

/// What the sweep of one store did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Files whose bytes are their name's object, stored again with a record.
    pub adopted: u64,
    /// Files removed: another object's bytes under the name, or a lone parity file.
    pub files: u64,
    pub bytes: u64,
    /// Objects of a store spread over several dirs that no layout of their files reads
    /// back as themselves, and files named by another store's address: kept, unjudged.
    pub kept: u64,
    /// Files whose adoption found no room or failed: left as they are, for next start.
    pub left: u64,
}

impl Swept {
    fn add(&mut self, other: Swept) {
        self.adopted += other.adopted;
        self.files += other.files;
        self.bytes += other.bytes;
        self.kept += other.kept;
        self.left += other.left;
    }
}

/// Sweeps every store of `shard` once; stops between dirs when `stop` is raised.
pub(super) async fn sweep_orphans(stores: Vec<Store>, shard: Weak<Shard>, stop: StopSignal) {
    let began = std::time::SystemTime::now();
    for store in stores {
        let mut swept = Swept::default();
        for dir in (0..store.dir_count()).map(DirIndex) {
            for hh in 0..=u8::MAX {
                if stop.is_stopped() {
                    return;
                }
                let Some(shard) = shard.upgrade() else {
                    return;
                };
                match sweep_dir(&shard, &store, dir, hh, began).await {
                    Ok(done) => swept.add(done),
                    Err(e) => {
                        tracing::warn!(store = store.id().0, error = %e, "orphaned files: sweep stopped");
                        return;
                    }
                }
            }
        }
        log_swept(&store, swept);
    }
}

fn log_swept(store: &Store, swept: Swept) {
    if swept.adopted > 0 {
        tracing::warn!(store = store.id().0, files = swept.adopted, "object files no index record named, whose bytes are their objects, stored again with a record (an index lost or older than its files, or a crash before an index commit)");
    }
    if swept.files > 0 {
        tracing::info!(
            store = store.id().0,
            files = swept.files,
            bytes = swept.bytes,
            "removed object files no index record names whose bytes are not their name's object"
        );
    }
    if swept.kept > 0 {
        tracing::warn!(store = store.id().0, count = swept.kept, "object files no index record names kept: objects over several data dirs that no layout of their files reads back as themselves (written with another code, a column lost or damaged), or files named by another store's address");
    }
    if swept.left > 0 {
        tracing::warn!(store = store.id().0, files = swept.left, "object files no index record names left for the next start: their adoption failed or found no room");
    }
}

/// Adopts or removes the files of dir `dir`'s `objects/hh` whose addresses have no
/// record in `store` (see the module's notes).
async fn sweep_dir(
    shard: &Rc<Shard>,
    store: &Store,
    dir: DirIndex,
    hh: u8,
    began: std::time::SystemTime,
) -> Result<Swept, ShardError> {
    let objects_dir = store.objects_dir(dir, hh);
    let listed = objects_dir.clone();
    let named = glommio::executor()
        .spawn_blocking(move || addresses_named(&listed, began))
        .await?;
    let unrecorded = without_record(store, &named)?;
    let mut swept = Swept::default();
    let mut not_theirs = Vec::new();
    for addr in unrecorded {
        if shard.store_of(&addr) != store.id() {
            // Another store's address: stored again, it would land there and this file
            // would be found again at every start. Not this sweep's to judge.
            swept.kept += 1;
            continue;
        }
        match adopt(shard, store, addr, dir).await {
            Ok(Adoption::Stored) => swept.adopted += 1,
            Ok(Adoption::NotItsBytes) => not_theirs.push(addr),
            Ok(Adoption::Unproven) => swept.kept += 1,
            Ok(Adoption::JudgedInAnEarlierDir | Adoption::RecordedMeanwhile) => {}
            Ok(Adoption::Left) => swept.left += 1,
            Err(e) => {
                tracing::warn!(obj = %addr, error = %e, "orphaned file: adoption failed; left for the next start");
                swept.left += 1;
            }
        }
    }
    if !not_theirs.is_empty() {
        swept.add(remove_claimed(store, &shard.commits, objects_dir, &not_theirs).await?);
    }
    Ok(swept)
}

/// What became of one unrecorded address's files.
#[derive(Debug, PartialEq, Eq)]
enum Adoption {
    /// Its bytes are its name's object: stored again, with a record.
    Stored,
    /// One dir: its bytes are another object's, or only its parity file is there.
    NotItsBytes,
    /// Several dirs: no layout the files' sizes allow reads back as its object (written
    /// with another code, a column lost or damaged): kept, as no one dir can judge it.
    Unproven,
    /// Several dirs: a dir swept before this one has a file of it, and judged it.
    JudgedInAnEarlierDir,
    /// A commit gave it a record since the dir was listed: nothing to do.
    RecordedMeanwhile,
    /// No room to store it again (it needs a second copy while it is written), or a
    /// commit or an eviction of it is in flight: left for the next start.
    Left,
}

/// An unrecorded address's files in each dir of its store: the data file (open) with
/// its length, and the parity file's length (0 when absent).
struct FoundFiles {
    data: Vec<Option<File>>,
    data_lens: Vec<u64>,
    parity_lens: Vec<u64>,
}

impl FoundFiles {
    fn object_len(&self) -> u64 {
        self.data_lens.iter().sum()
    }

    fn has_any_before(&self, dir: DirIndex) -> bool {
        let before = usize::from(dir.0);
        self.data_lens[..before]
            .iter()
            .zip(&self.data[..before])
            .zip(&self.parity_lens[..before])
            .any(|((_, data), parity)| data.is_some() || *parity > 0)
    }
}

/// Reads the object `addr`'s files make through an upload, in each layout their sizes
/// allow, and commits it once one reads back as `addr`. A crash meanwhile leaves a temp
/// file (removed at the next start) and the files as they were.
async fn adopt(
    shard: &Rc<Shard>,
    store: &Store,
    addr: Address,
    pass_dir: DirIndex,
) -> Result<Adoption, ShardError> {
    let dirs = store.dir_count();
    let paths: Vec<PathBuf> = (0..dirs)
        .map(|d| store.object_path(&addr, DirIndex(d)))
        .collect();
    let opened = paths.clone();
    let mut found = glommio::executor()
        .spawn_blocking(move || open_found(&opened))
        .await?;
    if found.has_any_before(pass_dir) {
        return Ok(Adoption::JudgedInAnEarlierDir);
    }
    // Looked at again now (the dir was listed a while ago): an eviction under way
    // removes the record first and the files after, and adopting those files would
    // bring the copy back as a kept one.
    if shard.commits.is_busy(&addr) {
        return Ok(Adoption::Left);
    }
    if store.contains(&addr)? {
        return Ok(Adoption::RecordedMeanwhile);
    }
    // Reads and writes a whole object: after the clients' reads, as repair does.
    shard.wait_for_quiet_disk().await;
    let unjudged = match dirs {
        1 => Adoption::NotItsBytes,
        _ => Adoption::Unproven,
    };
    if found.data.iter().all(Option::is_none) {
        return Ok(unjudged);
    }
    let candidates = layouts(shard.config.ec, dirs, &found.data_lens, &found.parity_lens);
    let (rot, geometry) = match candidates.as_slice() {
        [] => return Ok(unjudged),
        [one] => *one,
        // Several fit (files of equal sizes): each is read and hashed, and only the one
        // that is the object is written — not every candidate in full.
        several => {
            let mut matching = None;
            for &(rot, geometry) in several {
                let (files, root) = hash_groups(found.data, geometry, &paths[0]).await?;
                found.data = files;
                if root == addr {
                    matching = Some((rot, geometry));
                    break;
                }
            }
            match matching {
                Some(layout) => layout,
                None => return Ok(unjudged),
            }
        }
    };
    let mut upload = match shard.begin_own_file(found.object_len(), rot) {
        Ok(upload) => upload,
        Err(ShardError::NoRoom { .. }) => return Ok(Adoption::Left),
        Err(e) => return Err(e),
    };
    if let Err(e) = copy_groups(found.data, geometry, &mut upload, &paths[0]).await {
        upload.abort().await;
        return Err(e);
    }
    let staged = upload.finish(String::new()).await?;
    if staged.meta.addr() != addr {
        upload::discard(staged).await;
        return Ok(unjudged);
    }
    if shard.commits.is_busy(&addr) {
        upload::discard(staged).await;
        return Ok(Adoption::Left);
    }
    // Marked for its commit: a failed index commit keeps the files (now the staged copy
    // of the same bytes) instead of removing them as an upload's.
    shard.commits.adopting.borrow_mut().insert(addr);
    let committed = shard.commit(staged).await;
    shard.commits.adopting.borrow_mut().remove(&addr);
    committed?;
    Ok(Adoption::Stored)
}

/// Opens the data files at `paths` (one per dir) and measures their parity files.
/// Blocking.
fn open_found(paths: &[PathBuf]) -> Result<FoundFiles, ShardError> {
    let mut found = FoundFiles {
        data: Vec::new(),
        data_lens: Vec::new(),
        parity_lens: Vec::new(),
    };
    for path in paths {
        let (file, len) = match File::open(path) {
            Ok(file) => {
                let len = file
                    .metadata()
                    .map_err(ShardError::io("stat orphaned object file", path))?
                    .len();
                (Some(file), len)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, 0),
            Err(e) => return Err(ShardError::io("open orphaned object file", path)(e)),
        };
        let parity_len = std::fs::metadata(crate::layout::parity_path(path)).map_or(0, |m| m.len());
        found.data.push(file);
        found.data_lens.push(len);
        found.parity_lens.push(parity_len);
    }
    Ok(found)
}

/// The layouts (a rotation and the stripes it gives) in which files of these sizes can
/// hold one object, those whose parity files fit too first. One dir, or a code without
/// parity: the whole object in dir 0's file. Otherwise each rotation whose data files
/// would have exactly these lengths: the rotation came from an upload counter the lost
/// record held, and files of equal sizes can fit several (each is read to find out).
fn layouts(
    ec: EcParams,
    dirs: u8,
    data_lens: &[u64],
    parity_lens: &[u64],
) -> Vec<(u8, StripeGeometry)> {
    let len: u64 = data_lens.iter().sum();
    if dirs == 1 || ec.is_off() {
        let whole = StripeGeometry::new(EcParams::OFF, 1, 0, len);
        return match data_lens.first() == Some(&len) {
            true => vec![(0, whole)],
            false => Vec::new(),
        };
    }
    let each_dir = |check: &dyn Fn(DirIndex) -> bool| (0..dirs).map(DirIndex).all(check);
    let mut fitting: Vec<(bool, u8, StripeGeometry)> = (0..dirs)
        .map(|rot| (rot, StripeGeometry::new(ec, dirs, rot, len)))
        .filter(|(_, g)| each_dir(&|d| g.data_file_len(d) == data_lens[usize::from(d.0)]))
        .map(|(rot, g)| {
            let parity_fits = each_dir(&|d| g.parity_file_len(d) == parity_lens[usize::from(d.0)]);
            (!parity_fits, rot, g)
        })
        .collect();
    fitting.sort_by_key(|(parity_misfits, rot, _)| (*parity_misfits, *rot));
    fitting.into_iter().map(|(_, rot, g)| (rot, g)).collect()
}

/// Groups read from an orphan's files per call on the blocking pool (1 MiB).
const ADOPT_READ_GROUPS: u64 = 16;

/// An orphan's groups in order, read from `files` (one per dir, as `geometry` lays them
/// out) a piece at a time on the blocking pool. `path` names the files in an error.
struct GroupPieces<'a> {
    files: Vec<Option<File>>,
    geometry: StripeGeometry,
    next: u64,
    path: &'a Path,
}

impl<'a> GroupPieces<'a> {
    fn new(files: Vec<Option<File>>, geometry: StripeGeometry, path: &'a Path) -> Self {
        GroupPieces {
            files,
            geometry,
            next: 0,
            path,
        }
    }

    async fn next_piece(&mut self) -> Option<Result<Vec<u8>, ShardError>> {
        let groups = self.geometry.groups();
        if self.next >= groups {
            return None;
        }
        let (first, upto) = (self.next, (self.next + ADOPT_READ_GROUPS).min(groups));
        let (files, geometry) = (std::mem::take(&mut self.files), self.geometry);
        let (back, piece) = glommio::executor()
            .spawn_blocking(move || {
                let piece = read_groups(&files, &geometry, first..upto);
                (files, piece)
            })
            .await;
        self.files = back;
        self.next = upto;
        Some(piece.map_err(ShardError::io("read orphaned object file", self.path)))
    }
}

/// Feeds the object's groups, in order, to `upload`; gives the files back.
async fn copy_groups(
    files: Vec<Option<File>>,
    geometry: StripeGeometry,
    upload: &mut upload::Upload,
    path: &Path,
) -> Result<Vec<Option<File>>, ShardError> {
    let mut pieces = GroupPieces::new(files, geometry, path);
    while let Some(piece) = pieces.next_piece().await {
        upload.write(&piece?).await?;
    }
    Ok(pieces.files)
}

/// The address the object's groups make (read and hashed, nothing written); gives the
/// files back.
async fn hash_groups(
    files: Vec<Option<File>>,
    geometry: StripeGeometry,
    path: &Path,
) -> Result<(Vec<Option<File>>, Address), ShardError> {
    let mut hasher = TreeHasher::new();
    let mut pieces = GroupPieces::new(files, geometry, path);
    while let Some(piece) = pieces.next_piece().await {
        hasher.update(&piece?);
    }
    Ok((pieces.files, hasher.finalize().root()))
}

/// The bytes of `groups`, each read where `geometry` puts it. Blocking.
fn read_groups(
    files: &[Option<File>],
    geometry: &StripeGeometry,
    groups: std::ops::Range<u64>,
) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut piece = Vec::with_capacity((ADOPT_READ_GROUPS * BLOCK_BYTES) as usize);
    for group in groups.map(GroupIndex) {
        let at = geometry.data_block_at(group);
        let len = geometry.group_len(group) as usize;
        let Some(Some(file)) = files.get(usize::from(at.dir.0)) else {
            return Err(std::io::ErrorKind::NotFound.into());
        };
        let start = piece.len();
        piece.resize(start + len, 0);
        file.read_exact_at(&mut piece[start..], at.offset.0)?;
    }
    Ok(piece)
}

/// Removes the files of `addrs` in `objects_dir` still without a record once claimed.
async fn remove_claimed(
    store: &Store,
    commits: &GroupCommit,
    objects_dir: PathBuf,
    addrs: &[Address],
) -> Result<Swept, ShardError> {
    let claimed = commits.claim_for_eviction(addrs);
    let removed = match without_record(store, &claimed) {
        Ok(orphans) => {
            glommio::executor()
                .spawn_blocking(move || remove_files_of(&objects_dir, &orphans))
                .await
        }
        Err(e) => Err(e),
    };
    commits.release_evicted(&claimed);
    removed
}

fn without_record(store: &Store, addrs: &[Address]) -> Result<Vec<Address>, ShardError> {
    let mut without = Vec::new();
    for addr in addrs {
        if !store.contains(addr)? {
            without.push(*addr);
        }
    }
    Ok(without)
}

/// The addresses `dir`'s files are named by (`<hex>`, `<hex>.parity`), once each, whose
/// files were all last written before `before`; an absent dir names none. Blocking.
fn addresses_named(dir: &Path, before: std::time::SystemTime) -> Result<Vec<Address>, ShardError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ShardError::io("list", dir)(e)),
    };
    let mut older = Vec::new();
    let mut newer = Vec::new();
    for entry in entries {
        let entry = entry.map_err(ShardError::io("list", dir))?;
        // Only files: a dir or link named like an object is no object file of ours.
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let Some(addr) = address_of_file(&entry.file_name().to_string_lossy()) else {
            continue;
        };
        let written = entry.metadata().and_then(|m| m.modified());
        match written {
            Ok(at) if at < before => older.push(addr),
            _ => newer.push(addr),
        }
    }
    older.sort_unstable();
    older.dedup();
    newer.sort_unstable();
    older.retain(|addr| newer.binary_search(addr).is_err());
    Ok(older)
}

fn address_of_file(name: &str) -> Option<Address> {
    let hex = name.strip_suffix(".parity").unwrap_or(name);
    Address::parse(hex.as_bytes()).ok()
}

/// The name of `addr`'s data file in its `objects/hh` dir.
fn hex_name(addr: &Address) -> String {
    String::from_utf8_lossy(&addr.hex()).into_owned()
}

/// Unlinks the data and parity files of `orphans` in `dir`, then syncs it. Blocking.
fn remove_files_of(dir: &Path, orphans: &[Address]) -> Result<Swept, ShardError> {
    let mut swept = Swept::default();
    for addr in orphans {
        let data = dir.join(hex_name(addr));
        for path in [crate::layout::parity_path(&data), data] {
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    swept.files += 1;
                    swept.bytes += len;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ShardError::io("unlink orphaned object file", &path)(e)),
            }
        }
    }
    if swept.files > 0 {
        crate::layout::sync_dir(dir)?;
    }
    Ok(swept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(g: &StripeGeometry, dirs: u8) -> (Vec<u64>, Vec<u64>) {
        let each = |f: &dyn Fn(DirIndex) -> u64| (0..dirs).map(DirIndex).map(f).collect();
        (
            each(&|d| g.data_file_len(d)),
            each(&|d| g.parity_file_len(d)),
        )
    }

    /// The layout an object was written in is always among those its files' sizes
    /// allow, and first when its parity files are whole; every candidate fits the data
    /// files' sizes exactly.
    #[test]
    fn the_layout_an_object_was_written_in_is_found_from_its_files_sizes() {
        let lens = [
            1,
            100,
            BLOCK_BYTES,
            BLOCK_BYTES + 1,
            7 * BLOCK_BYTES,
            40 * BLOCK_BYTES + 3,
        ];
        for dirs in 2..=8u8 {
            let ec = EcParams::default_for(dirs);
            for len in lens {
                for rot in 0..dirs {
                    let written = StripeGeometry::new(ec, dirs, rot, len);
                    let (data, parity) = sizes(&written, dirs);
                    let found = layouts(ec, dirs, &data, &parity);
                    assert_eq!(
                        found.first().map(|(r, _)| *r),
                        Some(rot),
                        "{dirs} dirs, {len} bytes"
                    );
                    for (_, g) in &found {
                        assert_eq!(sizes(g, dirs).0, data);
                    }
                    // A parity file lost: still found, among the data's fits.
                    let mut lost = parity.clone();
                    if let Some(p) = lost.iter_mut().find(|p| **p > 0) {
                        *p = 0;
                    }
                    let found = layouts(ec, dirs, &data, &lost);
                    assert!(
                        found.iter().any(|(r, _)| *r == rot),
                        "{dirs} dirs, {len} bytes"
                    );
                }
            }
        }
    }

    /// 2+2 over two dirs: each dir holds a data and a parity column whatever the
    /// rotation, so files of whole stripes fit both rotations (read and hashed, each).
    #[test]
    fn files_of_equal_sizes_can_fit_several_rotations() {
        let ec = EcParams::new(2, 2).unwrap();
        let written = StripeGeometry::new(ec, 2, 1, 6 * BLOCK_BYTES);
        let (data, parity) = sizes(&written, 2);
        assert_eq!(layouts(ec, 2, &data, &parity).len(), 2);
    }

    /// One dir, or no parity: the whole object in dir 0's file, or no layout at all.
    #[test]
    fn without_stripes_the_whole_object_is_dir_zeros_file() {
        let found = layouts(EcParams::new(4, 1).unwrap(), 1, &[300_000], &[65_536]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1.groups(), 5);
        assert_eq!(
            layouts(EcParams::OFF, 3, &[300_000, 0, 0], &[0; 3]).len(),
            1
        );
        assert!(layouts(EcParams::OFF, 3, &[0, 300_000, 0], &[0; 3]).is_empty());
        // Sizes no rotation of the code gives: written with another code; none.
        let ec = EcParams::default_for(4);
        assert!(layouts(ec, 4, &[5, 5, 5, 5], &[0; 4]).is_empty());
    }

    #[test]
    fn files_are_named_by_an_address_or_its_parity_and_nothing_else_is() {
        let addr = Address::of(b"x");
        let hex = addr.hex();
        let hex = std::str::from_utf8(&hex).unwrap();
        assert_eq!(address_of_file(hex), Some(addr));
        assert_eq!(address_of_file(&format!("{hex}.parity")), Some(addr));
        assert_eq!(address_of_file(&format!("{hex}.tmp")), None);
        assert_eq!(address_of_file("README"), None);
    }
}
