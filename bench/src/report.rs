//! The run's summary, as a table for people and JSON for tools.

use serde::Serialize;

use crate::load::Stats;

/// Everything a result file records, including how it was produced.
#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub target: String,
    pub protocol: &'static str,
    pub workload: String,
    pub popularity: String,
    pub objects: usize,
    pub object_bytes: usize,
    pub mode: &'static str,
    pub connections: usize,
    pub depth: usize,
    pub rate_target: Option<f64>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub verify: bool,
    /// Bodies were dropped unread by the kernel (`--discard-bodies`).
    pub discard_bodies: bool,
    pub requests: u64,
    pub req_per_s: f64,
    pub body_bytes_per_s: f64,
    /// Body bytes received during the measured window, per second (see
    /// `Stats::window_body_bytes`): the throughput to use when answers are long.
    pub window_body_bytes_per_s: f64,
    pub latency_us: Percentiles,
    pub statuses: std::collections::BTreeMap<u16, u64>,
    pub unexpected_statuses: u64,
    pub verify_failures: u64,
    pub io_errors: u64,
    /// `--busy-cpu`: the CPU watched and its busy share over the measured window.
    pub busy_cpu: Option<usize>,
    pub busy_share: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(stats: &Stats) -> Percentiles {
        let h = &stats.latency_us;
        Percentiles {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

impl Report {
    pub fn table(&self) -> String {
        let l = &self.latency_us;
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}:{n}"))
            .collect();
        let mode = match self.rate_target {
            Some(r) => format!("open loop at {r:.0} req/s"),
            None => format!("closed loop, depth {}", self.depth),
        };
        let busy = match (self.busy_cpu, self.busy_share) {
            (Some(cpu), Some(share)) => {
                format!(
                    "cpu{cpu} busy {:.1} % of the measured time\n",
                    share * 100.0
                )
            }
            _ => String::new(),
        };
        format!(
            "ron-bench {target} ({protocol})\n\
             workload   {workload}, {popularity}, {objects} objects of {size} B\n\
             load       {conns} connections, {mode}, {dur:.1} s measured after {warm:.1} s warm-up\n\
             verify     {verify}\n\
             requests   {req}   {rps:.0} req/s   {mbps:.1} MB/s of bodies ({wmbps:.1} MB/s received in the window)\n\
             latency ms p50 {p50}  p90 {p90}  p99 {p99}  p99.9 {p999}  max {max}\n\
             statuses   {statuses}\n\
             errors     unexpected status {unexpected}, verification failures {vf}, I/O errors {io}\n\
             {busy}",
            target = self.target,
            protocol = self.protocol,
            workload = self.workload,
            popularity = self.popularity,
            objects = self.objects,
            size = self.object_bytes,
            conns = self.connections,
            dur = self.duration_s,
            warm = self.warmup_s,
            verify = match (self.verify, self.discard_bodies) {
                (true, _) => "on: every body checked (whole objects against their address, ranges byte for byte)",
                (false, false) => "off (peak run)",
                (false, true) => "off (peak run); bodies dropped unread (recv with MSG_TRUNC)",
            },
            req = self.requests,
            rps = self.req_per_s,
            mbps = self.body_bytes_per_s / 1e6,
            wmbps = self.window_body_bytes_per_s / 1e6,
            p50 = ms(l.p50),
            p90 = ms(l.p90),
            p99 = ms(l.p99),
            p999 = ms(l.p99_9),
            max = ms(l.max),
            statuses = if statuses.is_empty() { "none".into() } else { statuses.join(" ") },
            unexpected = self.unexpected_statuses,
            vf = self.verify_failures,
            io = self.io_errors,
        )
    }
}
