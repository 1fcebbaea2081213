//! Giving back the heap a quiet node no longer uses (docs/design/heap-trim.md).
//!
//! glibc's malloc gives each thread that allocates its own arena and returns a freed
//! region to the kernel only when it lies at the top of that arena. What a burst left in
//! the middle (a DHT network forming: hundreds of connections' buffers, then closed)
//! stays resident for good: at 300 idle nodes the largest kept 8 MiB of free heap, a
//! quarter of its RSS. `malloc_trim(0)` walks every arena and hands each free page back
//! (`MADV_DONTNEED`); it holds each arena's lock while it walks it, so a shard that
//! allocates then waits. The control thread therefore calls it only when the shards have
//! answered no request and moved no byte to or from a client for [`HEAP_TRIM_QUIET_MS`]
//! (a long transfer is counted by its bytes as they go, its request only at its end), at
//! most once per [`HEAP_TRIM_PERIOD_MS`]: never under load, where freed memory is reused
//! anyway, and a fraction of a millisecond a minute when idle.

use std::time::{Duration, Instant};

use ron_link::counters::ShardCounters;

/// How long the shards must have answered no request and moved no client byte before
/// the heap is trimmed.
pub const HEAP_TRIM_QUIET_MS: u64 = 10_000;

/// The least time between two trims.
pub const HEAP_TRIM_PERIOD_MS: u64 = 60_000;

/// The control thread's watch on the shards' traffic, and when it last trimmed.
#[derive(Debug)]
pub(crate) struct HeapTrimmer {
    shards: Vec<ShardCounters>,
    /// [`traffic`] when last read.
    traffic: u64,
    quiet_since: Instant,
    trimmed_at: Option<Instant>,
}

impl HeapTrimmer {
    pub(crate) fn new(shards: Vec<ShardCounters>, now: Instant) -> HeapTrimmer {
        HeapTrimmer {
            traffic: traffic(&shards),
            shards,
            quiet_since: now,
            trimmed_at: None,
        }
    }

    /// Trims the heap if the shards have been quiet long enough and the last trim is
    /// far enough back; returns the resident bytes the trim gave back when it did.
    pub(crate) fn poll(&mut self, now: Instant) -> Option<u64> {
        let traffic = traffic(&self.shards);
        if traffic != self.traffic {
            self.traffic = traffic;
            self.quiet_since = now;
            return None;
        }
        if !trim_due(self.quiet_since, self.trimmed_at, now) {
            return None;
        }
        self.trimmed_at = Some(now);
        let released = trim_heap();
        tracing::debug!(released, "heap trimmed after a quiet spell");
        Some(released)
    }
}

/// Requests answered plus client bytes moved, over all shards: it stays put only while
/// the shards serve nobody.
fn traffic(shards: &[ShardCounters]) -> u64 {
    use std::sync::atomic::Ordering::Relaxed;
    shards
        .iter()
        .map(|s| {
            s.requests.answered_total()
                + s.front.bytes_in.load(Relaxed)
                + s.front.bytes_out.load(Relaxed)
        })
        .sum()
}

/// Whether a trim is due at `now`: quiet for [`HEAP_TRIM_QUIET_MS`] and the last trim
/// (if any) at least [`HEAP_TRIM_PERIOD_MS`] back.
pub(crate) fn trim_due(quiet_since: Instant, trimmed_at: Option<Instant>, now: Instant) -> bool {
    let quiet =
        now.saturating_duration_since(quiet_since) >= Duration::from_millis(HEAP_TRIM_QUIET_MS);
    let spaced = trimmed_at.is_none_or(|at| {
        now.saturating_duration_since(at) >= Duration::from_millis(HEAP_TRIM_PERIOD_MS)
    });
    quiet && spaced
}

/// Hands the free pages of every malloc arena back to the kernel; returns the resident
/// bytes that went (0 where the C library has no `malloc_trim`, or RSS could not be read).
pub fn trim_heap() -> u64 {
    let before = resident_bytes();
    release_free_pages();
    match (before, resident_bytes()) {
        (Some(before), Some(after)) => before.saturating_sub(after),
        _ => 0,
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // malloc_trim takes and returns plain integers and touches no Rust memory
fn release_free_pages() {
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_pages() {}

/// This process's resident memory, bytes (`VmRSS` of /proc/self/status).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_trim_waits_for_a_quiet_spell() {
        let start = Instant::now();
        assert!(!trim_due(start, None, start));
        assert!(!trim_due(start, None, start + ms(HEAP_TRIM_QUIET_MS - 1)));
        assert!(trim_due(start, None, start + ms(HEAP_TRIM_QUIET_MS)));
    }

    #[test]
    fn trims_are_a_period_apart() {
        let start = Instant::now();
        let trimmed = start + ms(HEAP_TRIM_QUIET_MS);
        assert!(!trim_due(
            start,
            Some(trimmed),
            trimmed + ms(HEAP_TRIM_PERIOD_MS - 1)
        ));
        assert!(trim_due(
            start,
            Some(trimmed),
            trimmed + ms(HEAP_TRIM_PERIOD_MS)
        ));
    }

    /// A shard's counters and a trimmer watching them from `start`.
    fn one_shard_watched() -> (ShardCounters, HeapTrimmer, Instant) {
        let shard = ShardCounters::default();
        let start = Instant::now();
        (shard.clone(), HeapTrimmer::new(vec![shard], start), start)
    }

    #[test]
    fn an_answer_restarts_the_quiet_spell() {
        let (shard, mut trimmer, start) = one_shard_watched();
        let quiet = ms(HEAP_TRIM_QUIET_MS);
        shard.requests.record(
            ron_link::requests::Protocol::Http,
            ron_link::requests::Op::Get,
            200,
        );
        assert_eq!(trimmer.poll(start + quiet), None, "an answer came in");
        assert_eq!(trimmer.poll(start + quiet + quiet - ms(1)), None);
        assert!(
            trimmer.poll(start + quiet + quiet).is_some(),
            "quiet long enough"
        );
        assert_eq!(trimmer.poll(start + quiet * 3), None, "within the period");
        let later = start + quiet + quiet + ms(HEAP_TRIM_PERIOD_MS);
        assert!(trimmer.poll(later).is_some(), "a period later");
    }

    #[test]
    fn bytes_of_a_transfer_under_way_hold_a_trim_off() {
        let (shard, mut trimmer, start) = one_shard_watched();
        let quiet = ms(HEAP_TRIM_QUIET_MS);
        // One long answer: its request is counted only at its end, its bytes as they go.
        for second in 1..=30 {
            ron_link::counters::FrontCounters::add(&shard.front.bytes_out, 1 << 20);
            assert_eq!(
                trimmer.poll(start + ms(second * 1_000)),
                None,
                "second {second}"
            );
        }
        let last_byte = start + ms(30_000);
        assert_eq!(trimmer.poll(last_byte + quiet - ms(1)), None);
        assert!(trimmer.poll(last_byte + quiet).is_some());
    }
}
