//! The sweep of orphaned object files, once per start: files in a store's `objects/`
//! that no index record names.
//!
//! The group commit renames an upload's staged files into `objects/` (synced) before
//! its index commit (`commit/write.rs`, then `commit/index.rs`): a crash between the two
//! left them there for good — a batch of large objects per crash, and nothing ever
//! looked — as did a batch whose later rename or dir sync failed. Nothing is lost by
//! removing them: no upload of theirs was acknowledged.
//!
//! One background task per shard walks each of its stores' `objects/hh` dirs in every
//! data dir (one listing per dir, on the blocking pool). A file named by an address (or
//! its `.parity`) with no record in the store is a candidate; the candidates of a dir
//! are claimed in the commit queue as an eviction claims them (an upload of one waits;
//! one with a commit in flight or unindexed is not claimed), looked up again, and the
//! files of those still without a record unlinked, then the dir synced and the claims
//! released. A file a commit is renaming now is never taken: its address is in flight.

use std::path::{Path, PathBuf};
use std::rc::Weak;

use ron_codec::Address;

use crate::commit::GroupCommit;
use crate::error::ShardError;
use crate::ids::DirIndex;
use crate::lifecycle::StopSignal;
use crate::store::Store;

/// What the sweep of one store removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub files: u64,
    pub bytes: u64,
}

/// Sweeps every store once; stops between dirs when `stop` is raised.
pub(crate) async fn sweep_orphans(
    stores: Vec<Store>,
    commits: Weak<GroupCommit>,
    stop: StopSignal,
) {
    for store in stores {
        let mut swept = Swept::default();
        for dir in (0..store.dir_count()).map(DirIndex) {
            for hh in 0..=u8::MAX {
                if stop.is_stopped() {
                    return;
                }
                let Some(commits) = commits.upgrade() else {
                    return;
                };
                match sweep_dir(&store, &commits, store.objects_dir(dir, hh)).await {
                    Ok(done) => {
                        swept.files += done.files;
                        swept.bytes += done.bytes;
                    }
                    Err(e) => {
                        tracing::warn!(store = store.id().0, error = %e, "orphaned files: sweep stopped");
                        return;
                    }
                }
            }
        }
        if swept.files > 0 {
            tracing::info!(
                store = store.id().0,
                files = swept.files,
                bytes = swept.bytes,
                "removed object files no index record names (left by a crash between their rename and their index commit)"
            );
        }
    }
}

/// Removes the files of `objects_dir` whose addresses have no record in `store`.
async fn sweep_dir(
    store: &Store,
    commits: &GroupCommit,
    objects_dir: PathBuf,
) -> Result<Swept, ShardError> {
    let listed = objects_dir.clone();
    let named = glommio::executor()
        .spawn_blocking(move || addresses_named(&listed))
        .await?;
    let unrecorded = without_record(store, &named)?;
    if unrecorded.is_empty() {
        return Ok(Swept::default());
    }
    let claimed = commits.claim_for_eviction(&unrecorded);
    let orphans = without_record(store, &claimed);
    let removed = match orphans {
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

/// The addresses `dir`'s files are named by (`<hex>`, `<hex>.parity`), once each; an
/// absent dir names none. Blocking.
fn addresses_named(dir: &Path) -> Result<Vec<Address>, ShardError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ShardError::io("list", dir)(e)),
    };
    let mut addrs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(ShardError::io("list", dir))?;
        if let Some(addr) = address_of_file(&entry.file_name().to_string_lossy()) {
            addrs.push(addr);
        }
    }
    addrs.sort_unstable();
    addrs.dedup();
    Ok(addrs)
}

fn address_of_file(name: &str) -> Option<Address> {
    let hex = name.strip_suffix(".parity").unwrap_or(name);
    Address::parse(hex.as_bytes()).ok()
}

/// Unlinks the data and parity files of `orphans` in `dir`, then syncs it. Blocking.
fn remove_files_of(dir: &Path, orphans: &[Address]) -> Result<Swept, ShardError> {
    let mut swept = Swept::default();
    for addr in orphans {
        let hex = addr.hex();
        let hex = std::str::from_utf8(&hex).unwrap_or_default();
        let data = dir.join(hex);
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
