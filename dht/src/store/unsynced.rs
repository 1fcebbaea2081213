//! Commits without an fsync, and what a reboot does to them.
//!
//! An LMDB commit with its fsync held the DHT thread — which answers every peer's
//! Kademlia request, provide and greeting — for p50 ≤ 50 ms, p99 ≤ 500 ms each at 1,000
//! nodes on the 16-core device (`ron_dht_store_commit_seconds`, docs/PERF.md issue 53);
//! without it, ≤ 1 ms. So the store commits with `MDB_NOSYNC`: a commit is in the page
//! cache when it returns, whole. A process that dies (a panic, `kill -9`, the OOM
//! killer) loses nothing — the kernel still writes those pages. A machine that stops
//! (power, a kernel panic, a reset) may have written some of a commit's pages and not
//! others, and LMDB without its fsyncs makes no promise about that: the store could
//! open torn.
//!
//! Everything in the store is soft state: others' records are republished by their
//! providers, and this node's own keys are announced again by the shards' walk at
//! start-up. So a store that lived through a reboot with commits not synced is thrown
//! away, not trusted: while it is open, a marker file holds the boot's id
//! (`/proc/sys/kernel/random/boot_id`), written and synced before the first unsynced
//! commit; a clean close syncs the store and then removes the marker. At open, a marker
//! from another boot means the machine stopped while commits were unsynced, and the
//! store's files are removed before LMDB opens them. A marker from this boot means only
//! the process died: the page cache holds every commit, and the store is kept. Where the
//! boot's id cannot be read, commits are synced as before and no marker is written.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// The marker: present while the store may hold commits not yet on disk; its contents
/// are the id of the boot that made them.
pub(super) const MARKER_FILE: &str = "unsynced-in-boot";

/// LMDB's files in the store's directory, removed when the store is thrown away.
const LMDB_FILES: [&str; 2] = ["data.mdb", "lock.mdb"];

const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// How the store's commits reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Durability {
    /// In the page cache when a commit returns; the marker is written (above).
    Unsynced,
    /// On disk when a commit returns (one fsync each): the boot's id is unknown.
    Synced,
}

/// What [`prepare`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Prepared {
    pub durability: Durability,
    /// The store's files were removed: a previous run's unsynced commits outlived a
    /// reboot (or a boot whose id is unknown).
    pub discarded: bool,
}

/// This boot's id, where the kernel says it.
pub(super) fn current_boot_id() -> Option<String> {
    let id = std::fs::read_to_string(BOOT_ID_PATH).ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

/// Before LMDB opens `dir`: throws its files away if a run in another boot left
/// commits unsynced, then writes and syncs the marker for `boot` (none: commits are
/// synced, and no marker stays).
pub(super) fn prepare(dir: &Path, boot: Option<&str>) -> io::Result<Prepared> {
    let marker = dir.join(MARKER_FILE);
    let left_by = match std::fs::read_to_string(&marker) {
        Ok(id) => Some(id),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let discarded = match (left_by.as_deref(), boot) {
        (None, _) => false,
        (Some(then), Some(now)) => then.trim() != now,
        (Some(_), None) => true,
    };
    if discarded {
        for name in LMDB_FILES {
            match std::fs::remove_file(dir.join(name)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    let durability = match boot {
        Some(now) => {
            let mut file = File::create(&marker)?;
            file.write_all(now.as_bytes())?;
            file.sync_all()?;
            Durability::Unsynced
        }
        None => {
            if left_by.is_some() {
                std::fs::remove_file(&marker)?;
            }
            Durability::Synced
        }
    };
    // The marker's creation (or removal) is on disk before any commit that needs it.
    File::open(dir)?.sync_all()?;
    Ok(Prepared {
        durability,
        discarded,
    })
}

/// After the store was synced as it closes: no commit of it is only in the page cache,
/// so the marker goes.
pub(super) fn mark_synced(dir: &Path) -> io::Result<()> {
    std::fs::remove_file(dir.join(MARKER_FILE))?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ron-dht-unsynced-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn store_files(dir: &Path) {
        for name in LMDB_FILES {
            std::fs::write(dir.join(name), b"pages").unwrap();
        }
    }

    fn has_store_files(dir: &Path) -> bool {
        LMDB_FILES.iter().all(|name| dir.join(name).exists())
    }

    /// The boot the marker names, if there is one.
    fn marker(dir: &Path) -> Option<String> {
        std::fs::read_to_string(dir.join(MARKER_FILE)).ok()
    }

    #[test]
    fn a_first_open_keeps_the_files_and_marks_its_boot() {
        let dir = scratch("first");
        store_files(&dir);
        let prepared = prepare(&dir, Some("boot-a")).unwrap();
        assert_eq!(
            prepared,
            Prepared {
                durability: Durability::Unsynced,
                discarded: false
            }
        );
        assert!(has_store_files(&dir));
        assert_eq!(marker(&dir).as_deref(), Some("boot-a"));
    }

    #[test]
    fn a_process_that_died_in_this_boot_keeps_its_store() {
        let dir = scratch("same-boot");
        store_files(&dir);
        prepare(&dir, Some("boot-a")).unwrap();
        // No clean close: the marker stays, and the next open is in the same boot.
        let prepared = prepare(&dir, Some("boot-a")).unwrap();
        assert!(!prepared.discarded);
        assert!(has_store_files(&dir));
    }

    #[test]
    fn unsynced_commits_that_outlived_a_reboot_are_thrown_away() {
        let dir = scratch("other-boot");
        store_files(&dir);
        prepare(&dir, Some("boot-a")).unwrap();
        let prepared = prepare(&dir, Some("boot-b")).unwrap();
        assert!(prepared.discarded);
        assert!(LMDB_FILES.iter().all(|name| !dir.join(name).exists()));
        assert_eq!(marker(&dir).as_deref(), Some("boot-b"));
    }

    #[test]
    fn a_clean_close_survives_a_reboot() {
        let dir = scratch("clean");
        store_files(&dir);
        prepare(&dir, Some("boot-a")).unwrap();
        mark_synced(&dir).unwrap();
        assert_eq!(marker(&dir), None);
        let prepared = prepare(&dir, Some("boot-b")).unwrap();
        assert!(!prepared.discarded);
        assert!(has_store_files(&dir));
    }

    #[test]
    fn an_unknown_boot_syncs_every_commit_and_trusts_no_marker() {
        let dir = scratch("unknown");
        store_files(&dir);
        assert_eq!(
            prepare(&dir, None).unwrap(),
            Prepared {
                durability: Durability::Synced,
                discarded: false
            }
        );
        assert_eq!(marker(&dir), None);
        prepare(&dir, Some("boot-a")).unwrap();
        let prepared = prepare(&dir, None).unwrap();
        assert!(
            prepared.discarded,
            "unsynced commits of some boot, this one unknown"
        );
        assert_eq!(marker(&dir), None);
    }

    #[test]
    fn this_machine_says_its_boot() {
        // Linux: the id is a UUID.
        let id = current_boot_id().expect("/proc/sys/kernel/random/boot_id");
        assert_eq!(id.len(), 36, "{id}");
    }
}
