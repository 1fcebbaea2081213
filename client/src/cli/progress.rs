//! The progress bar of `ron put` and `ron get`.

use std::io::Write;
use std::time::{Duration, Instant};

/// A one-line progress bar on stderr, redrawn at most ten times a second.
#[derive(Debug)]
pub(super) struct ProgressBar {
    enabled: bool,
    /// The transfer's length, when known: the bar shows a fraction.
    pub(super) total: Option<u64>,
    started: Instant,
    drawn: Instant,
    shown: bool,
}

impl ProgressBar {
    pub(super) fn new(enabled: bool) -> ProgressBar {
        let now = Instant::now();
        ProgressBar {
            enabled,
            total: None,
            started: now,
            drawn: now,
            shown: false,
        }
    }

    pub(super) fn update(&mut self, done: u64) {
        // Short transfers stay quiet: the bar appears after half a second.
        if !self.enabled
            || self.started.elapsed() < Duration::from_millis(500)
            || self.drawn.elapsed() < Duration::from_millis(100)
        {
            return;
        }
        self.drawn = Instant::now();
        self.shown = true;
        let mib = done as f64 / (1 << 20) as f64;
        let rate = mib / self.started.elapsed().as_secs_f64().max(1e-3);
        let line = match self.total.filter(|t| *t > 0) {
            Some(total) => {
                let fraction = (done as f64 / total as f64).min(1.0);
                let filled = (fraction * 30.0) as usize;
                format!(
                    "\r[{:<30}] {:5.1}%  {mib:9.1} MiB  {rate:8.1} MiB/s",
                    "#".repeat(filled),
                    fraction * 100.0
                )
            }
            None => format!("\r{mib:9.1} MiB  {rate:8.1} MiB/s"),
        };
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    pub(super) fn finish(&mut self) {
        if self.shown {
            let _ = std::io::stderr().write_all(b"\n");
        }
    }
}
