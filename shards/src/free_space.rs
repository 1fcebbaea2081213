//! The free space of the data dirs' filesystems, and the room check of an upload whose
//! length is announced (a `Content-Length`, OAP/1's length, an origin's or a
//! provider's claim) before any byte of it is written.
//!
//! Without it a PUT of 40 GiB onto a disk with 10 GiB free was received and written
//! until ENOSPC, then refused 507: the client sent, and the node wrote and removed, all
//! it had room for, for nothing; an origin that claimed more than the disk held cost
//! the same per read-through. MinIO refuses such an upload up front; so does ron now,
//! with the same 507.
//!
//! Each shard samples `statvfs` of every data dir on the blocking pool, never on a
//! request's path: a check reads the last sample and starts the next one when it is
//! older than [`FREE_SPACE_SAMPLE_MS`]. Dirs on one filesystem share its free space:
//! what an object puts in each is added up per filesystem. The sample is no
//! reservation: uploads running at once (on this shard and others) can together still
//! outgrow the disk, and ENOSPC (507, nothing stored) stays the net under them. A dir
//! whose filesystem cannot be read is not checked (its writes say what is wrong).

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::error::ShardError;
use crate::layout::DataDirs;

/// The oldest sample a check reads without starting the next one.
pub const FREE_SPACE_SAMPLE_MS: u64 = 1_000;

/// One shard's last sample of its data dirs' free space.
#[derive(Debug)]
pub struct FreeSpace {
    dirs: DataDirs,
    sample: RefCell<Sample>,
    /// A sample is being taken on the blocking pool.
    sampling: Cell<bool>,
}

#[derive(Debug, Clone)]
struct Sample {
    taken: Instant,
    /// In dir order; `None`: its filesystem could not be read.
    dirs: Vec<Option<DirSpace>>,
}

/// What `statvfs` said of one data dir's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirSpace {
    /// Which filesystem: dirs that share one share its free space.
    pub filesystem: u64,
    /// Bytes an unprivileged writer may still use.
    pub available_bytes: u64,
}

impl FreeSpace {
    /// Takes the first sample now (blocking: start-up work).
    pub fn sample_blocking(dirs: DataDirs) -> FreeSpace {
        let sample = sample(&dirs);
        FreeSpace {
            dirs,
            sample: RefCell::new(sample),
            sampling: Cell::new(false),
        }
    }

    /// Whether an object of `object_len` bytes that puts `bytes_per_dir[i]` in dir `i`
    /// fits the last sample; starts the next sample when that one is old (on the
    /// executor this is called on).
    pub fn check(
        self: &Rc<Self>,
        object_len: u64,
        bytes_per_dir: &[u64],
    ) -> Result<(), ShardError> {
        self.refresh_if_old();
        let sample = self.sample.borrow();
        match short_filesystem(&sample.dirs, bytes_per_dir) {
            None => Ok(()),
            Some(short) => Err(ShardError::NoRoom {
                dir: self
                    .dirs
                    .dir(crate::ids::DirIndex(short.dir as u8))
                    .to_path_buf(),
                object_len,
                needed_bytes: short.needed_bytes,
                available_bytes: short.available_bytes,
            }),
        }
    }

    fn refresh_if_old(self: &Rc<Self>) {
        let old =
            self.sample.borrow().taken.elapsed() >= Duration::from_millis(FREE_SPACE_SAMPLE_MS);
        if !old || self.sampling.replace(true) {
            return;
        }
        let space = Rc::clone(self);
        glommio::spawn_local(async move {
            let dirs = space.dirs.clone();
            let fresh = glommio::executor()
                .spawn_blocking(move || sample(&dirs))
                .await;
            *space.sample.borrow_mut() = fresh;
            space.sampling.set(false);
        })
        .detach();
    }
}

/// The first dir (by index) of a filesystem the object does not fit, with what it
/// needs there (all the object's bytes on that filesystem) and what is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ShortFilesystem {
    dir: usize,
    needed_bytes: u64,
    available_bytes: u64,
}

fn short_filesystem(dirs: &[Option<DirSpace>], bytes_per_dir: &[u64]) -> Option<ShortFilesystem> {
    dirs.iter().enumerate().find_map(|(i, space)| {
        let space = space.as_ref()?;
        let needed_bytes = dirs
            .iter()
            .zip(bytes_per_dir)
            .filter(|(other, _)| other.is_some_and(|o| o.filesystem == space.filesystem))
            .map(|(_, bytes)| *bytes)
            .fold(0u64, u64::saturating_add);
        (needed_bytes > space.available_bytes).then_some(ShortFilesystem {
            dir: i,
            needed_bytes,
            available_bytes: space.available_bytes,
        })
    })
}

fn sample(dirs: &DataDirs) -> Sample {
    Sample {
        taken: Instant::now(),
        dirs: dirs.iter().map(|(_, dir)| dir_space(dir)).collect(),
    }
}

pub(crate) fn dir_space(dir: &Path) -> Option<DirSpace> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(DirSpace {
        filesystem: stat.filesystem_id() as u64,
        available_bytes: (stat.blocks_available() as u64)
            .saturating_mul(stat.fragment_size() as u64),
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn fs(filesystem: u64, available_bytes: u64) -> Option<DirSpace> {
        Some(DirSpace {
            filesystem,
            available_bytes,
        })
    }

    #[test]
    fn dirs_on_one_filesystem_add_up_and_unread_ones_are_not_checked() {
        // Two dirs on filesystem 1 (100 free), one on 2 (50 free), one unread.
        let dirs = [fs(1, 100), fs(2, 50), fs(1, 100), None];
        assert_eq!(
            short_filesystem(&dirs, &[50, 50, 50, 1 << 40]).map(|s| s.dir),
            None
        );
        assert_eq!(
            short_filesystem(&dirs, &[60, 10, 50, 0]),
            Some(ShortFilesystem {
                dir: 0,
                needed_bytes: 110,
                available_bytes: 100
            })
        );
        assert_eq!(
            short_filesystem(&dirs, &[0, 51, 0, 0]),
            Some(ShortFilesystem {
                dir: 1,
                needed_bytes: 51,
                available_bytes: 50
            })
        );
        assert_eq!(
            short_filesystem(&dirs, &[u64::MAX, u64::MAX, 0, 0]).map(|s| s.needed_bytes),
            Some(u64::MAX)
        );
    }

    #[test]
    fn a_sample_reads_every_dir_and_a_real_filesystem_has_room_for_nothing_at_least() {
        let dirs = DataDirs::new(vec![
            std::env::temp_dir(),
            PathBuf::from("/no/such/ron/dir"),
        ]);
        let space = FreeSpace::sample_blocking(dirs);
        let sample = space.sample.borrow();
        assert!(
            sample.dirs.len() == 2 && sample.dirs[0].is_some() && sample.dirs[1].is_none(),
            "{sample:?}"
        );
        assert_eq!(short_filesystem(&sample.dirs, &[0, u64::MAX]), None);
        assert!(short_filesystem(&sample.dirs, &[u64::MAX, 0]).is_some());
    }
}
