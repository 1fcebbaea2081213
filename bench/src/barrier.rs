//! What one shard's sleep costs the other shards: `ron-bench membarrier`.
//!
//! Before a glommio 0.9 executor parks, it issues `membarrier(PRIVATE_EXPEDITED)` (its
//! reactor's sleep, so that a remote shard's channel write cannot be missed). The kernel
//! sends an IPI to every other CPU that is running a thread of the process at that
//! moment and waits until each has taken it. So the sleep of one shard costs its caller
//! more, and interrupts every busy shard, the more shards are busy: the term of the
//! many-core model that is not flat (docs/PERF.md, issue 54).
//!
//! This measures both on the machine at hand: `others` threads of this process spin on
//! their own CPUs (counting loops), while the calling thread, on another, issues `calls`
//! barriers back to back; the CPUs are the first of the process's affinity mask (the
//! caller on the first), so `taskset` chooses them. Reported: the caller's time per barrier, and how much of their
//! loop rate the spinners kept while the barriers ran (from which, the time each
//! interrupt took from each of them).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// `membarrier(2)` commands (linux/membarrier.h); the libc crate does not name them.
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;
/// How long the spinners' undisturbed rate is measured for.
const UNDISTURBED: Duration = Duration::from_millis(300);
/// Spinners at most.
pub const OTHERS_MAX: usize = 255;

/// What the barriers cost.
#[derive(Debug, Clone, PartialEq)]
pub struct BarrierCost {
    pub others: usize,
    pub calls: u32,
    /// The caller's time per barrier, microseconds.
    pub caller_us: f64,
    /// Share of their undisturbed loop rate the spinners kept while barriers ran (1.0
    /// with no spinners).
    pub spinners_kept: f64,
    /// Time each barrier took from each spinner, microseconds: the caller's time per
    /// barrier times the share of their rate the spinners lost.
    pub per_spinner_us: f64,
}

impl BarrierCost {
    /// One line for a table.
    pub fn line(&self) -> String {
        format!(
            "others {:>3}: {:>6.2} us per barrier to the caller; spinners kept {:>5.1} % of their rate, {:>6.2} us taken from each per barrier",
            self.others,
            self.caller_us,
            self.spinners_kept * 100.0,
            self.per_spinner_us
        )
    }
}

/// Issues `calls` barriers from the first CPU of the affinity mask with `others`
/// threads spinning on the next ones; fails where the kernel has no private expedited
/// membarrier or the mask has too few CPUs.
pub fn measure(others: usize, calls: u32) -> Result<BarrierCost, String> {
    let cpus = allowed_cpus()?;
    if others >= cpus.len() || others > OTHERS_MAX {
        return Err(format!(
            "{others} spinners and the caller need {} CPUs; this process may run on {} (at most {} spinners)",
            others + 1,
            cpus.len(),
            OTHERS_MAX.min(cpus.len().saturating_sub(1))
        ));
    }
    membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED)
        .map_err(|e| format!("membarrier register: {e}"))?;
    let stop = AtomicBool::new(false);
    let loops: Vec<AtomicU64> = (0..others).map(|_| AtomicU64::new(0)).collect();
    std::thread::scope(|scope| {
        let spinners: Vec<_> = (0..others)
            .map(|i| {
                let (stop, count, cpu) = (&stop, &loops[i], cpus[i + 1]);
                scope.spawn(move || spin(cpu, stop, count))
            })
            .collect();
        // The caller is a thread of its own, so that this one keeps its CPUs.
        let caller = scope.spawn(|| pin_to(cpus[0]).and_then(|()| timed(&loops, calls)));
        let result = caller
            .join()
            .unwrap_or_else(|_| Err("the caller panicked".into()));
        stop.store(true, Ordering::Relaxed);
        for spinner in spinners {
            spinner
                .join()
                .unwrap_or_else(|_| Err("a spinner panicked".into()))?;
        }
        let (caller_us, kept) = result?;
        Ok(BarrierCost {
            others,
            calls,
            caller_us,
            spinners_kept: kept,
            per_spinner_us: caller_us * (1.0 - kept),
        })
    })
}

/// The caller's time per barrier (us) and the share of their rate the spinners kept.
fn timed(loops: &[AtomicU64], calls: u32) -> Result<(f64, f64), String> {
    let total = |loops: &[AtomicU64]| loops.iter().map(|l| l.load(Ordering::Relaxed)).sum::<u64>();
    // Every spinner running before anything is timed.
    let started = Instant::now();
    while loops.iter().any(|l| l.load(Ordering::Relaxed) == 0) {
        if started.elapsed() > Duration::from_secs(5) {
            return Err("the spinners did not start within 5 s".into());
        }
        std::thread::yield_now();
    }
    let (before, at) = (total(loops), Instant::now());
    std::thread::sleep(UNDISTURBED);
    let undisturbed = (total(loops) - before) as f64 / at.elapsed().as_secs_f64();
    let (before, at) = (total(loops), Instant::now());
    for _ in 0..calls {
        membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED).map_err(|e| format!("membarrier: {e}"))?;
    }
    let elapsed = at.elapsed().as_secs_f64();
    let during = (total(loops) - before) as f64 / elapsed;
    let kept = if loops.is_empty() {
        1.0
    } else {
        (during / undisturbed).min(1.0)
    };
    Ok((elapsed / f64::from(calls.max(1)) * 1e6, kept))
}

fn spin(cpu: usize, stop: &AtomicBool, count: &AtomicU64) -> Result<(), String> {
    pin_to(cpu)?;
    while !stop.load(Ordering::Relaxed) {
        count.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// The CPUs this thread may run on, in order.
fn allowed_cpus() -> Result<Vec<usize>, String> {
    let mask = sched_getaffinity(Pid::from_raw(0)).map_err(|e| format!("affinity mask: {e}"))?;
    Ok((0..CpuSet::count())
        .filter(|cpu| mask.is_set(*cpu).unwrap_or(false))
        .collect())
}

fn pin_to(cpu: usize) -> Result<(), String> {
    let mut set = CpuSet::new();
    set.set(cpu).map_err(|e| format!("CPU {cpu}: {e}"))?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| format!("pinning to CPU {cpu}: {e}"))
}

fn membarrier(cmd: libc::c_int) -> std::io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: membarrier(2) takes two integers and touches no memory of ours.
    let ret = unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_int) };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The spinner counts `ron-bench membarrier` measures by default: 0, 1, 2, 4, … and the
/// most the process's affinity mask allows (its CPUs less the caller's).
pub fn default_others() -> Result<Vec<usize>, String> {
    Ok(others_up_to(allowed_cpus()?.len()))
}

/// 0, 1, 2, 4, … and `cpus` − 1 (at most [`OTHERS_MAX`]).
fn others_up_to(cpus: usize) -> Vec<usize> {
    let most = cpus.saturating_sub(1).min(OTHERS_MAX);
    let mut counts: Vec<usize> = std::iter::once(0)
        .chain(std::iter::successors(Some(1usize), |n| n.checked_mul(2)).take_while(|n| *n < most))
        .collect();
    counts.push(most);
    counts.dedup();
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_barrier_with_no_other_thread_running_is_cheap_and_takes_nothing() {
        let cost = measure(0, 1_000).expect("membarrier on this kernel");
        assert_eq!(
            (cost.others, cost.calls, cost.spinners_kept),
            (0, 1_000, 1.0)
        );
        assert!(
            cost.caller_us > 0.0 && cost.per_spinner_us == 0.0,
            "{cost:?}"
        );
    }

    #[test]
    fn the_default_counts_double_up_to_every_other_cpu() {
        assert_eq!(others_up_to(1), vec![0]);
        assert_eq!(others_up_to(2), vec![0, 1]);
        assert_eq!(others_up_to(16), vec![0, 1, 2, 4, 8, 15]);
        assert_eq!(others_up_to(9), vec![0, 1, 2, 4, 8]);
    }

    #[test]
    fn more_spinners_than_cpus_is_refused_with_the_count() {
        let cpus = allowed_cpus().unwrap().len();
        let error = measure(cpus, 10).unwrap_err();
        assert!(
            error.contains(&format!("this process may run on {cpus}")),
            "{error}"
        );
    }
}
