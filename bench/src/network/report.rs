//! A network run's report: one figure a line as text, and the same as JSON.

use serde_json::{json, Value};

use super::figures::{Copies, NodeCosts, Report, CALM_CPU_PERCENT};
use super::findable::FINDABLE_WAIT;

impl Report {
    /// The report as text, one figure a line.
    pub fn text(&self) -> String {
        let mut out = self.opening_text();
        out += &self.findable_text();
        out += &self.settled_text();
        out += &self.closing_text();
        out
    }

    /// The network formed and quiet: what the report's first lines say.
    pub fn opening_text(&self) -> String {
        let calm = match self.calm_s {
            Some(s) => format!("calm (node CPU p50 <= {CALM_CPU_PERCENT} %) {s:.0} s after the settle"),
            None => format!("NOT calm (node CPU p50 <= {CALM_CPU_PERCENT} %) by the end of the wait: every later figure is a busy network's"),
        };
        let formed = match self.unformed {
            0 => format!("formed in {:.1} s", self.formed_s),
            short => format!(
                "NOT formed in {:.1} s ({short} routing tables below 8 peers)",
                self.formed_s
            ),
        };
        let mut out = format!(
            "network: {} nodes in {} zones; {formed}; {calm}\n",
            self.nodes, self.zones
        );
        out += &costs_text("quiet", &self.quiet);
        out
    }

    /// The uploads: how soon each was findable, and its copies.
    pub fn findable_text(&self) -> String {
        let f = &self.findable;
        let mut out = format!(
            "uploads: {} objects, upload p50 {:.0} ms; resolvable after upload p50 {:.2} s p99 {:.2} s max {:.2} s, {} never within {} s; resolve p50 {:.1} ms p99 {:.1} ms ({} resolves, sent p50 {:.0} ms p99 {:.0} ms after due)\n",
            f.found_s.count + f.not_found, f.upload_ms.p50, f.found_s.p50, f.found_s.p99, f.found_s.max,
            f.not_found, FINDABLE_WAIT.as_secs(), f.resolve_ms.p50, f.resolve_ms.p99, f.resolve_ms.count,
            f.poll_lag_ms.p50, f.poll_lag_ms.p99
        );
        out += &format!(
            "published (as the nodes saw it, uploads and copies): {} keys, p50 <= {} s p90 <= {} s p99 <= {} s; early requests {} to routing-table peers, {} to peers connected meanwhile\n",
            f.publish_delay_s.count, f.publish_delay_s.p50, f.publish_delay_s.p90, f.publish_delay_s.p99,
            f.early_requests[0], f.early_requests[1]
        );
        out += &copies_text("copies after upload", &self.copies);
        out
    }

    /// Resolves and reads once the copies were made.
    pub fn settled_text(&self) -> String {
        let mut out = format!(
            "resolves once copied: p50 {:.1} ms p99 {:.1} ms max {:.1} ms, {} of {} named no provider; as the nodes timed them: answered p50 <= {} s p99 <= {} s, first provider p50 <= {} s p99 <= {} s after {:.1} requests, {} providers named from their records; dials meanwhile p50 <= {} s p99 <= {} s ({}, {} failed); store commits meanwhile p50 <= {} s p99 <= {} s max <= {} s ({})\n",
            self.settled_resolve_ms.p50, self.settled_resolve_ms.p99, self.settled_resolve_ms.max,
            self.settled_resolve_empty, self.settled_resolve_ms.count,
            self.settled_resolve_node_s.p50, self.settled_resolve_node_s.p99,
            self.settled_first_provider_s.p50, self.settled_first_provider_s.p99,
            self.settled_requests_to_first_provider,
            self.settled_named_from_records,
            self.settled_dial_s.p50, self.settled_dial_s.p99, self.settled_dial_s.count,
            self.settled_dial_failures,
            self.settled_commit_s.p50, self.settled_commit_s.p99, self.settled_commit_s.max,
            self.settled_commit_s.count
        );
        out += &format!(
            "reads through: p50 {:.1} ms p99 {:.1} ms, {} failed of {}\n",
            self.reads_ms.p50,
            self.reads_ms.p99,
            self.read_failures,
            self.reads_ms.count + self.read_failures
        );
        out
    }

    /// The kill and the join, and what the nodes cost at the end.
    pub fn closing_text(&self) -> String {
        let mut out = String::new();
        if let Some(c) = &self.after_kill {
            out += &copies_text(&format!("copies after kill -9 of {}", self.killed), c);
        }
        if let Some(c) = &self.after_join {
            out += &copies_text(&format!("copies after a join of {}", self.joined), c);
        }
        out += &costs_text("end", &self.costs_end);
        out += &format!(
            "store commits over the run (live nodes): p50 <= {} s p99 <= {} s max <= {} s ({})\n",
            self.commit_s.p50, self.commit_s.p99, self.commit_s.max, self.commit_s.count
        );
        out
    }

    pub fn json(&self) -> Value {
        let costs = |c: &NodeCosts| {
            json!({
                "cpu_percent": c.cpu_percent.json(), "rss_mib": c.rss_mib.json(),
                "connections": c.connections.json(), "peers_alive": c.peers_alive.json(),
                "routing_peers": c.routing_peers.json(),
            })
        };
        let copies = |c: &Copies| {
            json!({
                "short_over_time": c.short_over_time, "complete_s": c.complete_s.json(),
                "short_at_end": c.short_at_end, "without_verified_copy_max": c.without_verified_copy_max,
                "errors": c.errors,
            })
        };
        json!({
            "nodes": self.nodes, "zones": self.zones, "formed_s": self.formed_s, "unformed": self.unformed, "calm_s": self.calm_s,
            "quiet": costs(&self.quiet),
            "findable": {
                "found_s": self.findable.found_s.json(), "not_found": self.findable.not_found,
                "resolve_ms": self.findable.resolve_ms.json(), "upload_ms": self.findable.upload_ms.json(),
                "poll_lag_ms": self.findable.poll_lag_ms.json(),
                "publish_delay_s": self.findable.publish_delay_s.json(),
                "early_requests": {
                    "routing_table": self.findable.early_requests[0],
                    "connection": self.findable.early_requests[1],
                },
            },
            "copies": copies(&self.copies),
            "settled_resolve_ms": self.settled_resolve_ms.json(),
            "settled_resolve_empty": self.settled_resolve_empty,
            "settled_resolve_node_s": self.settled_resolve_node_s.json(),
            "settled_first_provider_s": self.settled_first_provider_s.json(),
            "settled_dial_s": self.settled_dial_s.json(),
            "settled_commit_s": self.settled_commit_s.json(),
            "settled_requests_to_first_provider": self.settled_requests_to_first_provider,
            "settled_dial_failures": self.settled_dial_failures,
            "settled_named_from_records": self.settled_named_from_records,
            "reads_ms": self.reads_ms.json(), "read_failures": self.read_failures,
            "killed": self.killed, "after_kill": self.after_kill.as_ref().map(copies),
            "joined": self.joined, "after_join": self.after_join.as_ref().map(copies),
            "end": costs(&self.costs_end),
            "commit_s": self.commit_s.json(),
        })
    }
}

fn costs_text(phase: &str, c: &NodeCosts) -> String {
    format!(
        "{phase}: per node CPU p50 {:.2} % max {:.2} %; RSS p50 {:.1} MiB max {:.1} MiB; connections p50 {:.0} max {:.0}; peers alive p50 {:.0}; routing table p50 {:.0} min-side p90 {:.0}\n",
        c.cpu_percent.p50, c.cpu_percent.max, c.rss_mib.p50, c.rss_mib.max,
        c.connections.p50, c.connections.max, c.peers_alive.p50, c.routing_peers.p50, c.routing_peers.p90
    )
}

fn copies_text(phase: &str, c: &Copies) -> String {
    let marks: Vec<String> = c
        .short_over_time
        .iter()
        .map(|(s, short)| format!("{s:.0}s:{short}"))
        .collect();
    format!(
        "{phase}: complete p50 {:.1} s p99 {:.1} s last {:.1} s; short at end {}; at most {} with no verified copy named; {} placement errors; short over time {}\n",
        c.complete_s.p50, c.complete_s.p99, c.complete_s.max, c.short_at_end,
        c.without_verified_copy_max, c.errors, marks.join(" ")
    )
}
