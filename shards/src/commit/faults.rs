//! Faults a test injects into the group commit (built only for this crate's tests): a
//! stall before each batch write and index commit on the blocking pool, index commits
//! that fail, and how many index commits ran at once — what interleavings of the two
//! stages need, which timing alone does not give.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::error::ShardError;

#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// Each batch write first sleeps this long (on the blocking pool).
    pub(crate) write_stall_ms: AtomicU64,
    /// Each index commit first sleeps this long (on the blocking pool).
    pub(crate) index_stall_ms: AtomicU64,
    /// Index commits still to fail, after their stall, with an I/O error.
    pub(crate) index_failures: AtomicU32,
    running: AtomicU32,
    /// The most index commits that ran at once.
    pub(crate) index_commits_at_once_max: AtomicU32,
}

impl Faults {
    pub(crate) fn stall_write(&self) {
        sleep_ms(&self.write_stall_ms);
    }

    /// Runs an index commit (`commit`) as the faults say.
    pub(crate) fn index(
        &self,
        commit: impl FnOnce() -> Result<(), ShardError>,
    ) -> Result<(), ShardError> {
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.index_commits_at_once_max
            .fetch_max(running, Ordering::SeqCst);
        sleep_ms(&self.index_stall_ms);
        let fail = self
            .index_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let outcome = match fail {
            true => Err(ShardError::Io {
                op: "index commit (injected)",
                path: PathBuf::new(),
                source: std::io::Error::other("injected"),
            }),
            false => commit(),
        };
        self.running.fetch_sub(1, Ordering::SeqCst);
        outcome
    }
}

fn sleep_ms(ms: &AtomicU64) {
    std::thread::sleep(Duration::from_millis(ms.load(Ordering::Relaxed)));
}
