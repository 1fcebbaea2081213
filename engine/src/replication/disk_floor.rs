//! The floor of free disk below which this node keeps no new copies for other nodes
//! (`copies_disk_free_percent_min`, docs/design/trust.md).
//!
//! A copy the placement asks of this node is kept, not evicted, and on an open network
//! the asker chooses the objects: the floor keeps what is left of each data dir's
//! filesystem for this node's own uploads (which have their 507) and its read-through
//! cache. Checked with `statvfs` on the blocking pool before each copy is fetched; a copy
//! already held is never refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::keys::size_text;

/// The node's data dirs and the free share each filesystem keeps from copies for others.
#[derive(Debug, Clone)]
pub struct DiskFloor {
    dirs: Arc<[PathBuf]>,
    free_percent_min: u8,
}

/// A data dir whose filesystem is below the floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BelowFloor {
    pub dir: PathBuf,
    pub free_bytes: u64,
    pub size_bytes: u64,
    pub free_percent_min: u8,
}

impl std::fmt::Display for BelowFloor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "data dir {}: {} free of {}, below copies_disk_free_percent_min ({} %): no new copies kept for other nodes",
            self.dir.display(),
            size_text(self.free_bytes),
            size_text(self.size_bytes),
            self.free_percent_min
        )
    }
}

impl DiskFloor {
    /// `free_percent_min` 0: no floor.
    pub fn new(dirs: &[PathBuf], free_percent_min: u8) -> DiskFloor {
        DiskFloor {
            dirs: dirs.into(),
            free_percent_min,
        }
    }

    /// Whether a new copy for another node may be stored now (on the blocking pool).
    pub async fn check(&self) -> Result<(), BelowFloor> {
        if self.free_percent_min == 0 {
            return Ok(());
        }
        let floor = self.clone();
        glommio::executor()
            .spawn_blocking(move || floor.check_blocking())
            .await
    }

    fn check_blocking(&self) -> Result<(), BelowFloor> {
        self.dirs
            .iter()
            .filter_map(|dir| below(dir, self.free_percent_min))
            .next()
            .map_or(Ok(()), Err)
    }
}

/// `dir` if its filesystem has less than `percent` of its size available (a filesystem
/// that cannot be read is not below: the upload path's errors say what is wrong).
fn below(dir: &Path, percent: u8) -> Option<BelowFloor> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    let block = stat.fragment_size() as u64;
    let size_bytes = stat.blocks() as u64 * block;
    let free_bytes = stat.blocks_available() as u64 * block;
    let floor = u128::from(size_bytes) * u128::from(percent) / 100;
    (u128::from(free_bytes) < floor).then(|| BelowFloor {
        dir: dir.to_path_buf(),
        free_bytes,
        size_bytes,
        free_percent_min: percent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filesystem_is_below_a_floor_it_cannot_meet_and_none_is_below_zero() {
        let dirs = [std::env::temp_dir()];
        assert_eq!(DiskFloor::new(&dirs, 0).check_blocking(), Ok(()));
        assert_eq!(DiskFloor::new(&dirs, 1).check_blocking(), Ok(()));
        // No filesystem with anything on it is all free.
        let below = DiskFloor::new(&dirs, 100).check_blocking().unwrap_err();
        assert_eq!(below.dir, dirs[0]);
        assert!(below.free_bytes < below.size_bytes);
        let text = below.to_string();
        assert!(
            text.starts_with(&format!("data dir {}: ", dirs[0].display()))
                && text.ends_with(
                    " below copies_disk_free_percent_min (100 %): no new copies kept for other nodes"
                ),
            "{text}"
        );
    }
}
