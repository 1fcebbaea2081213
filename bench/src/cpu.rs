//! How busy one CPU was over a window, from `/proc/stat`: the server's CPU during the
//! measured part of a run only (not while the dataset is generated or the warm-up runs),
//! including the softirq network work a process's own CPU time misses.

use std::time::Instant;

/// (busy, total) jiffies of `cpu` in a `/proc/stat` text: busy is user + nice + system +
/// irq + softirq + steal, total adds idle and iowait.
pub fn jiffies(stat: &str, cpu: usize) -> Option<(u64, u64)> {
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    if f.len() < 4 {
        return None;
    }
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    Some((busy, busy + at(3) + at(4)))
}

/// The busy share of `cpu` between two samples.
pub fn share(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let total = after.1.checked_sub(before.1)?;
    let busy = after.0.checked_sub(before.0)?;
    (total > 0).then(|| busy as f64 / total as f64)
}

fn sample(cpu: usize) -> Option<(u64, u64)> {
    jiffies(&std::fs::read_to_string("/proc/stat").ok()?, cpu)
}

fn sleep_until(at: Instant) {
    if let Some(wait) = at.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
}

/// Samples `cpu` at `from` and at `to` (blocking until then); its busy share between.
pub fn busy_share(cpu: usize, from: Instant, to: Instant) -> Option<f64> {
    sleep_until(from);
    let before = sample(cpu)?;
    sleep_until(to);
    share(before, sample(cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  10 0 10 80 0 0 0 0 0 0\n\
                        cpu0 5 1 2 40 3 4 5 6 0 0\n\
                        cpu1 5 0 3 40 0 0 0 0 0 0\n\
                        intr 1 2 3\n";

    #[test]
    fn reads_the_right_line() {
        assert_eq!(jiffies(STAT, 0), Some((5 + 1 + 2 + 4 + 5 + 6, 23 + 40 + 3)));
        assert_eq!(jiffies(STAT, 1), Some((8, 48)));
        assert_eq!(jiffies(STAT, 2), None);
        assert_eq!(jiffies("cpu0 x y", 0), None);
    }

    #[test]
    fn share_between_samples() {
        assert_eq!(share((10, 100), (60, 200)), Some(0.5));
        assert_eq!(share((10, 100), (10, 100)), None);
        assert_eq!(share((10, 100), (5, 90)), None);
    }

    #[test]
    fn this_machine_has_cpu0() {
        if std::path::Path::new("/proc/stat").exists() {
            let now = Instant::now();
            let busy = busy_share(0, now, now + std::time::Duration::from_millis(30));
            assert!(busy.is_none_or(|b| (0.0..=1.0).contains(&b)), "{busy:?}");
        }
    }
}
