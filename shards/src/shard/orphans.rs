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
//!   object's stripes and cannot be judged alone: it is **kept** (counted and logged),
//!   as is a file named by an address that belongs in another store.
//!
//! One background task per shard walks each of its stores' `objects/hh` dirs in every
//! data dir (one listing per dir, on the blocking pool). Only files last written before
//! the sweep began are judged: what the crash or the lost index left is older, and a
//! file written since is a commit of this run on its way to its record (renamed, not
//! yet indexed) — adopted, a read-through's evictable copy became a kept one. A file a
//! commit is renaming now is never removed either: its address is in flight.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};

use ron_codec::Address;

use super::Shard;
use crate::commit::GroupCommit;
use crate::error::ShardError;
use crate::ids::DirIndex;
use crate::lifecycle::StopSignal;
use crate::store::Store;
use crate::upload;

/// Bytes read from an orphaned file per call on the blocking pool, while adopting it.
const ADOPT_READ_BYTES: usize = 1 << 20;

/// What the sweep of one store did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Files whose bytes are their name's object, stored again with a record.
    pub adopted: u64,
    /// Files removed: another object's bytes under the name, or a lone parity file.
    pub files: u64,
    pub bytes: u64,
    /// Files of a store spread over several dirs, which no one dir's file can prove, or
    /// named by another store's address.
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
                match sweep_dir(&shard, &store, store.objects_dir(dir, hh), began).await {
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
        tracing::warn!(store = store.id().0, files = swept.kept, "object files no index record names kept: a store over several data dirs holds a column of an object per dir, which cannot be checked alone");
    }
    if swept.left > 0 {
        tracing::warn!(store = store.id().0, files = swept.left, "object files no index record names left for the next start: their adoption failed or found no room");
    }
}

/// Adopts or removes the files of `objects_dir` whose addresses have no record in
/// `store` (see the module's notes).
async fn sweep_dir(
    shard: &Rc<Shard>,
    store: &Store,
    objects_dir: PathBuf,
    began: std::time::SystemTime,
) -> Result<Swept, ShardError> {
    let listed = objects_dir.clone();
    let named = glommio::executor()
        .spawn_blocking(move || addresses_named(&listed, began))
        .await?;
    let unrecorded = without_record(store, &named)?;
    let mut swept = Swept::default();
    if store.dir_count() > 1 {
        swept.kept = unrecorded.len() as u64;
        return Ok(swept);
    }
    let mut not_theirs = Vec::new();
    for addr in unrecorded {
        if shard.store_of(&addr) != store.id() {
            // Another store's address: stored again, it would land there and this file
            // would be found again at every start. Not this sweep's to judge.
            swept.kept += 1;
            continue;
        }
        // Reads and writes a whole object: after the clients' reads, as repair does.
        shard.wait_for_quiet_disk().await;
        match adopt(shard, &objects_dir, addr).await {
            Ok(Adoption::Stored) => swept.adopted += 1,
            Ok(Adoption::NotItsBytes) => not_theirs.push(addr),
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

/// What became of one unrecorded file.
enum Adoption {
    /// Its bytes are its name's object: stored again, with a record.
    Stored,
    /// Its bytes are another object's, or only its parity file is there.
    NotItsBytes,
    /// No room to store it again (it needs a second copy while it is written): left.
    Left,
}

/// Reads the data file of `addr` in `objects_dir` through an upload, and commits it if
/// its bytes are that object. A crash meanwhile leaves a temp file (removed at the next
/// start) and the file as it was.
async fn adopt(
    shard: &Rc<Shard>,
    objects_dir: &Path,
    addr: Address,
) -> Result<Adoption, ShardError> {
    let path = objects_dir.join(hex_name(&addr));
    let opened = path.clone();
    let opened = glommio::executor()
        .spawn_blocking(move || match File::open(&opened) {
            Ok(file) => file.metadata().map(|m| Some((file, m.len()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
        .map_err(ShardError::io("open orphaned object file", &path))?;
    let Some((file, len)) = opened else {
        return Ok(Adoption::NotItsBytes);
    };
    let mut upload = match shard.begin_own_file(len) {
        Ok(upload) => upload,
        Err(ShardError::NoRoom { .. }) => return Ok(Adoption::Left),
        Err(e) => return Err(e),
    };
    if let Err(e) = copy_into(file, len, &mut upload, &path).await {
        upload.abort().await;
        return Err(e);
    }
    let staged = upload.finish(String::new()).await?;
    if staged.meta.addr() != addr {
        upload::discard(staged).await;
        return Ok(Adoption::NotItsBytes);
    }
    // Marked for its commit: a failed index commit keeps the file (now the staged copy
    // of the same bytes) instead of removing it as an upload's.
    shard.commits.adopting.borrow_mut().insert(addr);
    let committed = shard.commit(staged).await;
    shard.commits.adopting.borrow_mut().remove(&addr);
    committed?;
    Ok(Adoption::Stored)
}

/// Feeds the `len` bytes of `file` to `upload`, a piece at a time from the blocking pool.
async fn copy_into(
    mut file: File,
    len: u64,
    upload: &mut upload::Upload,
    path: &Path,
) -> Result<(), ShardError> {
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left).map_or(ADOPT_READ_BYTES, |l| l.min(ADOPT_READ_BYTES));
        let (back, piece) = glommio::executor()
            .spawn_blocking(move || {
                let mut piece = vec![0u8; want];
                let read = file.read_exact(&mut piece);
                (file, read.map(|()| piece))
            })
            .await;
        let piece = piece.map_err(ShardError::io("read orphaned object file", path))?;
        upload.write(&piece).await?;
        file = back;
        left -= want as u64;
    }
    Ok(())
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
