//! `/metrics`: the Prometheus text format (0.0.4). Every family is one row of
//! `FAMILIES` (name, type, help, where its samples come from), rendered in that order;
//! the names, help texts and label sets are an interface (dashboards, alerts,
//! `docs/HTTP-API.md`) and change only on purpose.

use std::sync::{Arc, Mutex, PoisonError};

use ron_link::latency::{LatencySet, EXPORTED_BUCKETS_US};
use ron_link::requests::{Op, Protocol, Rejection, RequestCounters, COUNTED_STATUSES};
use ron_shards::ShardMetrics;

use crate::view::{sample, Extra, ShardSample};

use self::Kind::{Counter, Gauge, Histogram};

/// A family's Prometheus type.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Reads one value out of a shard's sample.
type Reader = fn(&ShardSample) -> u64;

/// Where a family's samples come from.
#[derive(Debug, Clone, Copy)]
enum Series {
    /// One unlabelled sample: the sum over shards.
    Sum(Reader),
    /// One sample per shard, labelled `shard`.
    PerShard(Reader),
    /// One sample per shard, labelled `shard`: millionths, shown as a ratio.
    PerShardPpm(Reader),
    /// One unlabelled value the control thread holds.
    Control(fn(&Extra) -> u64),
    /// By `protocol`, `op` and `status`; only series that are non-zero.
    Requests,
    /// By `protocol` and `op`; only series with a request.
    Latency,
    /// By `reason`, every reason.
    Rejections,
    /// By `tenant` and `limit`, as reported.
    QuotaRejections,
    /// Read-through attempts by `reason`, every reason.
    FetchFailures,
}

#[derive(Debug)]
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    series: Series,
}

const fn family(name: &'static str, kind: Kind, help: &'static str, series: Series) -> Family {
    Family {
        name,
        kind,
        help,
        series,
    }
}

/// Every family, in the order it is rendered.
#[rustfmt::skip]
const FAMILIES: [Family; 58] = [
    family("ron_requests_total", Counter, "Requests answered, by protocol, op and status (status 0: any other status).", Series::Requests),
    family("ron_request_duration_seconds", Histogram, "Time from a complete request (HTTP head, OAP START) to its last byte queued, by protocol and op; per-shard HDR histograms merged at scrape (±1 %, up to 1 s stale).", Series::Latency),
    family("ron_rejections_total", Counter, "Requests refused, by reason (from their status: 429 over_quota, 503 overloaded, 401 unauthorized, 413/431 too_large, 400/405/411 bad_request, 408 timeout).", Series::Rejections),
    family("ron_quota_rejections_total", Counter, "Requests refused 429 by a tenant's token bucket; tenant is a configured name or \"other\".", Series::QuotaRejections),
    family("ron_bytes_received_total", Counter, "Bytes read from clients (heads, frames and bodies).", Series::Sum(|s| s.metrics.bytes_in)),
    family("ron_bytes_sent_total", Counter, "Bytes written to clients.", Series::Sum(|s| s.metrics.bytes_out)),
    family("ron_verify_failures_total", Counter, "64 KiB groups that failed verification (never sent).", Series::Sum(|s| s.metrics.verify_failures)),
    family("ron_ec_degraded_reads_total", Counter, "64 KiB groups served rebuilt from their stripe's other blocks (their own block missing, unreadable or failing its check).", Series::Sum(|s| s.metrics.ec_degraded_reads)),
    family("ron_ec_unrecoverable_total", Counter, "Reads that met a stripe with more bad blocks than its parity covers (answered with a clean failure).", Series::Sum(|s| s.metrics.ec_unrecoverable)),
    family("ron_ec_missing_shards", Gauge, "Blocks (data or parity) found missing or bad, in stripes queued for repair or being repaired.", Series::Sum(|s| s.metrics.ec_missing_blocks)),
    family("ron_ec_repair_bytes_total", Counter, "Bytes of rebuilt blocks written back to disk by repair.", Series::Sum(|s| s.metrics.ec_repair_bytes)),
    family("ron_ec_repair_failures_total", Counter, "Repairs that could not rebuild a queued stripe or write it back (the next read or scrub finds it again).", Series::Sum(|s| s.metrics.ec_repair_failures)),
    family("ron_scrub_bytes_total", Counter, "Bytes the scrubber read and checked (data and parity blocks, packed objects).", Series::Sum(|s| s.metrics.scrub_bytes)),
    family("ron_scrub_objects_total", Counter, "Objects the scrubber checked whole.", Series::Sum(|s| s.metrics.scrub_objects)),
    family("ron_scrub_bad_blocks_total", Counter, "Bad blocks (missing, unreadable or failing their check) the scrubber found; each is rebuilt when its stripe allows.", Series::Sum(|s| s.metrics.scrub_bad_blocks)),
    family("ron_scrub_unrepairable_blocks_total", Counter, "Bad blocks the scrubber found and could not rebuild (an object without parity, or a stripe with more bad blocks than parity).", Series::Sum(|s| s.metrics.scrub_unrepairable)),
    family("ron_scrub_passes", Gauge, "Full scrub passes over every store of the shard.", Series::PerShard(|s| s.metrics.scrub_passes)),
    family("ron_scrub_progress_ratio", Gauge, "How far the shard's scrub pass under way is, 0 to 1.", Series::PerShardPpm(|s| s.metrics.scrub_progress_ppm)),
    family("ron_scrub_paused", Gauge, "1 while an operator has the shard's scrubber paused.", Series::PerShard(|s| s.metrics.scrub_paused)),
    family("ron_fetches_total", Counter, "Read-through fetches started (one per object missed, however many requests wait on it).", Series::Sum(|s| s.metrics.fetches)),
    family("ron_fetches_stored_total", Counter, "Read-through fetches that ended with the object verified and stored.", Series::Sum(|s| s.metrics.fetches_stored)),
    family("ron_fetch_bytes_total", Counter, "Verified bytes read through from providers and origins.", Series::Sum(|s| s.metrics.fetch_bytes)),
    family("ron_fetch_failures_total", Counter, "Read-through upstream attempts that failed, by reason (a fetch may go on from the next provider).", Series::FetchFailures),
    family("ron_fetch_hedges_total", Counter, "Second providers asked because the first was slow to its first verified group.", Series::Sum(|s| s.metrics.fetch_hedges)),
    family("ron_fetch_coalesced_waiters_total", Counter, "Requests that joined a read-through already under way instead of starting their own.", Series::Sum(|s| s.metrics.fetch_coalesced_waiters)),
    family("ron_fetched_objects", Gauge, "Fetched copies held as a cache (evictable).", Series::Sum(|s| s.metrics.evictable_objects)),
    family("ron_fetched_bytes", Gauge, "Bytes of fetched copies held as a cache (evictable).", Series::Sum(|s| s.metrics.evictable_bytes)),
    family("ron_fetched_bytes_max", Gauge, "Budget of fetched copies (fetched_bytes_max); past it the oldest are evicted.", Series::Sum(|s| s.metrics.fetched_bytes_max)),
    family("ron_evictions_total", Counter, "Fetched copies evicted to keep within fetched_bytes_max.", Series::Sum(|s| s.metrics.evictions)),
    family("ron_evicted_bytes_total", Counter, "Bytes of fetched copies evicted.", Series::Sum(|s| s.metrics.evicted_bytes)),
    family("ron_ec_repairs_dropped_total", Counter, "Stripes found damaged but not queued for repair because the repair queue was full.", Series::Sum(|s| s.metrics.ec_repairs_dropped)),
    family("ron_cache_hits_total", Counter, "Verified-group cache hits.", Series::Sum(|s| s.metrics.cache_hits)),
    family("ron_cache_misses_total", Counter, "Verified-group cache misses.", Series::Sum(|s| s.metrics.cache_misses)),
    family("ron_meta_loads_total", Counter, "Object index records read and checked against their address (metadata cache misses).", Series::Sum(|s| s.metrics.meta_loads)),
    family("ron_meta_load_waits_total", Counter, "Requests that waited for a load of the same object's metadata already running instead of loading it again.", Series::Sum(|s| s.metrics.meta_load_waits)),
    family("ron_connections_total", Counter, "Connections accepted.", Series::Sum(|s| s.metrics.connections_total)),
    family("ron_overload_rejections_total", Counter, "Requests answered 503 overloaded by the in-flight gate.", Series::Sum(|s| s.metrics.overload_rejections)),
    family("ron_accept_failures_total", Counter, "Accepts that failed (e.g. out of file descriptors); the connection waits in the kernel backlog.", Series::Sum(|s| s.metrics.accept_failures)),
    family("ron_tls_handshake_failures_total", Counter, "TLS handshakes that failed or timed out.", Series::Sum(|s| s.metrics.tls_handshake_failures)),
    family("ron_mesh_requests_total", Counter, "Requests forwarded to an owner shard.", Series::Sum(|s| s.metrics.mesh_requests)),
    family("ron_objects_created_total", Counter, "Objects made durable and visible.", Series::Sum(|s| s.metrics.objects_created)),
    family("ron_inflight_requests", Gauge, "Requests being worked on now (the in-flight gate's count).", Series::Sum(|s| s.metrics.inflight)),
    family("ron_parked_requests", Gauge, "Admitted requests waiting on a slow peer, their in-flight slot given back.", Series::Sum(|s| s.metrics.parked)),
    family("ron_transfer_deadline_drops_total", Counter, "Connections ended because a body fell behind its transfer deadline (body_timeout_ms + bytes / body_rate_min).", Series::Sum(|s| s.metrics.transfer_deadline_drops)),
    family("ron_objects_stored", Gauge, "Objects in the node's stores.", Series::Sum(|s| s.metrics.objects_stored)),
    family("ron_bytes_stored", Gauge, "Bytes of objects in the node's stores.", Series::Sum(|s| s.metrics.bytes_stored)),
    family("ron_cache_bytes", Gauge, "Bytes held by the verified-group caches.", Series::Sum(|s| s.metrics.cache_bytes)),
    family("ron_cache_entries", Gauge, "Groups held by the verified-group caches.", Series::Sum(|s| s.metrics.cache_entries)),
    family("ron_connections_open", Gauge, "Open client connections.", Series::Sum(|s| s.metrics.connections_open)),
    family("ron_shard_requests_total", Counter, "Requests answered by each shard.", Series::PerShard(|s| s.requests.total())),
    family("ron_shard_ready", Gauge, "1 when the shard accepts connections.", Series::PerShard(|s| u64::from(s.metrics.ready))),
    family("ron_shard_saturated", Gauge, "1 while the shard's in-flight gate is full.", Series::PerShard(|s| u64::from(s.metrics.saturated()))),
    family("ron_reactor_stalls_total", Counter, "Times the shard's 10 ms heartbeat woke more than 20 ms late (a task held the reactor).", Series::PerShard(|s| s.metrics.reactor_stalls)),
    family("ron_reactor_stall_us_total", Counter, "Total lateness of those stalled heartbeats, microseconds.", Series::PerShard(|s| s.metrics.reactor_stall_us)),
    family("ron_quota_tenants_tracked", Gauge, "Tenants with token buckets on the shards (summed over shards).", Series::Control(|e| e.quota_tenants_tracked)),
    family("ron_config_version", Gauge, "Version of the running tokens/tenants/quotas (1 at start, +1 per good reload).", Series::Control(|e| e.config_version)),
    family("ron_config_reload_failures_total", Counter, "Reloads refused (bad file); the running configuration was kept.", Series::Control(|e| e.reloads_failed)),
    family("ron_config_reloads_total", Counter, "Reloads applied.", Series::Control(|e| e.reloads_ok)),
];

/// The counter families (sums and per-shard series) as the last scrape read them: the
/// floor of the next, since a counter never goes back.
#[derive(Debug, Default)]
pub struct Scrapes {
    counters: Mutex<Vec<(&'static str, u64)>>,
}

impl Scrapes {
    /// Reads every shard's counters ([`sample`]) and holds the counter families to the
    /// last scrape's (`assert!`, once per scrape). The read is under the lock, so two
    /// scrapes at once compare in the order they read; no I/O or rendering is.
    pub fn sample(
        &self,
        metrics: &[Arc<ShardMetrics>],
        requests: &[Arc<RequestCounters>],
    ) -> Vec<ShardSample> {
        let mut last = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let samples = sample(metrics, requests);
        let before = std::mem::replace(&mut *last, counters(&samples));
        let now = last.clone();
        drop(last);
        // The floor moved first: a broken counter fails one scrape, not every one after.
        assert_counters_grow(&before, &now);
        samples
    }
}

/// Every unlabelled or per-shard counter family's samples, in render order.
fn counters(shards: &[ShardSample]) -> Vec<(&'static str, u64)> {
    let mut out = Vec::new();
    for family in FAMILIES.iter().filter(|f| matches!(f.kind, Counter)) {
        match family.series {
            Series::Sum(get) => out.push((family.name, shards.iter().map(get).sum())),
            Series::PerShard(get) => out.extend(shards.iter().map(|s| (family.name, get(s)))),
            _ => {}
        }
    }
    out
}

fn assert_counters_grow(before: &[(&str, u64)], now: &[(&str, u64)]) {
    for (&(name, was), &(_, is)) in before.iter().zip(now) {
        assert!(
            is >= was,
            "metrics invariant: counter {name} never goes back between scrapes ({was} then {is})"
        );
    }
}

/// A histogram's buckets are cumulative: each counts at least what the one below it
/// does, and none more than the whole (`+Inf`, `_count`). Checked as rendered.
fn assert_cumulative(series: &str, below: u64, here: u64, count: u64) {
    assert!(
        below <= here && here <= count,
        "metrics invariant: histogram {series} buckets add up ({here} after {below}, of {count})"
    );
}

/// Prometheus text: counters summed over shards, per-shard series where useful. Series
/// by protocol/op/status appear once they are non-zero.
pub fn render_metrics(shards: &[ShardSample], extra: &Extra) -> String {
    let mut out = String::with_capacity(8192);
    for family in &FAMILIES {
        let (name, kind) = (family.name, family.kind.as_str());
        out.push_str(&format!(
            "# HELP {name} {}\n# TYPE {name} {kind}\n",
            family.help
        ));
        match family.series {
            Series::Sum(get) => {
                let total: u64 = shards.iter().map(get).sum();
                out.push_str(&format!("{name} {total}\n"));
            }
            Series::PerShard(get) => {
                for (i, s) in shards.iter().enumerate() {
                    out.push_str(&format!("{name}{{shard=\"{i}\"}} {}\n", get(s)));
                }
            }
            Series::PerShardPpm(get) => {
                for (i, s) in shards.iter().enumerate() {
                    let ratio = get(s) as f64 / 1e6;
                    out.push_str(&format!("{name}{{shard=\"{i}\"}} {ratio}\n"));
                }
            }
            Series::Control(get) => out.push_str(&format!("{name} {}\n", get(extra))),
            Series::Requests => render_requests(&mut out, name, shards),
            Series::Latency => render_latency(&mut out, name, &extra.latency),
            Series::Rejections => render_rejections(&mut out, name, shards),
            Series::QuotaRejections => render_quota_rejections(&mut out, name, extra),
            Series::FetchFailures => render_fetch_failures(&mut out, name, shards),
        }
    }
    out
}

fn render_requests(out: &mut String, name: &str, shards: &[ShardSample]) {
    for protocol in Protocol::ALL {
        for op in Op::ALL {
            for &status in &COUNTED_STATUSES {
                let n: u64 = shards
                    .iter()
                    .map(|s| s.requests.requests(protocol, op, status))
                    .sum();
                if n > 0 {
                    out.push_str(&format!(
                        "{name}{{protocol=\"{}\",op=\"{}\",status=\"{status}\"}} {n}\n",
                        protocol.as_str(),
                        op.as_str()
                    ));
                }
            }
        }
    }
}

fn render_latency(out: &mut String, name: &str, latency: &LatencySet) {
    for protocol in Protocol::ALL {
        for op in Op::ALL {
            let count = latency.count(protocol, op);
            if count == 0 {
                continue;
            }
            let labels = format!("protocol=\"{}\",op=\"{}\"", protocol.as_str(), op.as_str());
            let mut below = 0;
            for bound in EXPORTED_BUCKETS_US {
                let here = latency.count_at_or_below(protocol, op, bound);
                assert_cumulative(&labels, below, here, count);
                below = here;
                out.push_str(&format!(
                    "{name}_bucket{{{labels},le=\"{}\"}} {here}\n",
                    seconds(bound),
                ));
            }
            out.push_str(&format!(
                "{name}_bucket{{{labels},le=\"+Inf\"}} {count}\n\
                 {name}_sum{{{labels}}} {}\n\
                 {name}_count{{{labels}}} {count}\n",
                seconds(latency.sum_us(protocol, op)),
            ));
        }
    }
}

fn render_fetch_failures(out: &mut String, name: &str, shards: &[ShardSample]) {
    for (i, reason) in ron_shards::metrics::FETCH_FAILURE_REASONS
        .iter()
        .enumerate()
    {
        let n: u64 = shards.iter().map(|s| s.metrics.fetch_failures[i]).sum();
        out.push_str(&format!("{name}{{reason=\"{reason}\"}} {n}\n"));
    }
}

fn render_rejections(out: &mut String, name: &str, shards: &[ShardSample]) {
    for reason in Rejection::ALL {
        let n: u64 = shards.iter().map(|s| s.requests.rejections(reason)).sum();
        out.push_str(&format!("{name}{{reason=\"{}\"}} {n}\n", reason.as_str()));
    }
}

fn render_quota_rejections(out: &mut String, name: &str, extra: &Extra) {
    for (label, kind, n) in &extra.quota_rejections {
        out.push_str(&format!(
            "{name}{{tenant=\"{}\",limit=\"{}\"}} {n}\n",
            escape_label(label),
            kind.as_str()
        ));
    }
}

fn seconds(us: u64) -> f64 {
    us as f64 / 1e6
}

/// Label values are configured tenant names; escape what the text format requires.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The DHT's families, appended on a node with `--p2p`.
pub fn render_dht(out: &mut String, dht: &ron_link::dht::DhtMetrics) {
    use ron_link::dht::LOOKUP_BUCKETS_MS;
    use std::sync::atomic::Ordering::Relaxed;
    let name = "ron_dht_lookup_ms";
    out.push_str(&format!(
        "# HELP {name} Provider lookups (resolves) by time to answer, milliseconds.\n# TYPE {name} histogram\n"
    ));
    let mut cumulative = 0;
    for (i, le) in LOOKUP_BUCKETS_MS.iter().enumerate() {
        cumulative += dht.lookup_ms_buckets[i].load(Relaxed);
        out.push_str(&format!("{name}_bucket{{le=\"{le}\"}} {cumulative}\n"));
    }
    cumulative += dht.lookup_ms_buckets[LOOKUP_BUCKETS_MS.len()].load(Relaxed);
    out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {cumulative}\n"));
    out.push_str(&format!("{name}_sum {}\n", dht.lookup_ms_sum.load(Relaxed)));
    out.push_str(&format!("{name}_count {cumulative}\n"));
    let families: [(&str, Kind, &str, &std::sync::atomic::AtomicU64); 12] = [
        (
            "ron_dht_missing_records",
            Counter,
            "Provider lookups that found no provider.",
            &dht.missing_records_total,
        ),
        (
            "ron_dht_providers_found_total",
            Counter,
            "Providers returned by lookups.",
            &dht.providers_found_total,
        ),
        (
            "ron_dht_provided_keys",
            Gauge,
            "Objects this node provides (its own provider records).",
            &dht.provided_keys,
        ),
        (
            "ron_dht_provider_records",
            Gauge,
            "Provider records of other nodes held here.",
            &dht.provider_records,
        ),
        (
            "ron_dht_provider_records_refused_total",
            Counter,
            "Records of other nodes refused (store or key full, malformed).",
            &dht.provider_records_refused_total,
        ),
        (
            "ron_dht_provider_records_expired_total",
            Counter,
            "Records of other nodes removed at their expiry.",
            &dht.provider_records_expired_total,
        ),
        (
            "ron_dht_keys_published_total",
            Counter,
            "Own keys published to their closest peers (first time and republished).",
            &dht.keys_published_total,
        ),
        (
            "ron_dht_publish_failures_total",
            Counter,
            "Publication batches no peer accepted (left for the sweep).",
            &dht.publish_failures_total,
        ),
        (
            "ron_dht_announce_dropped_total",
            Counter,
            "Stored objects not announced at once (DHT mailbox full; the sweep announces them).",
            &dht.announce_dropped_total,
        ),
        (
            "ron_dht_peers_connected",
            Gauge,
            "Peers with an open libp2p connection.",
            &dht.peers_connected,
        ),
        (
            "ron_dht_routing_table_peers",
            Gauge,
            "Peers in the Kademlia routing table.",
            &dht.routing_table_peers,
        ),
        (
            "ron_dht_lookups_total",
            Counter,
            "Provider lookups answered.",
            &dht.lookups_total,
        ),
    ];
    for (name, kind, help, value) in families {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {}\n{name} {}\n",
            kind.as_str(),
            value.load(Relaxed)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ron_link::policy::Exhausted;
    use std::sync::atomic::Ordering;

    fn samples(shards: &[(&ShardMetrics, &RequestCounters)]) -> Vec<ShardSample> {
        shards
            .iter()
            .map(|(m, r)| ShardSample {
                metrics: m.snapshot(),
                requests: r.snapshot(),
            })
            .collect()
    }

    #[test]
    fn metrics_sum_shards_and_register_each_family_once() {
        let (a, b) = (ShardMetrics::default(), ShardMetrics::default());
        let (ra, rb) = (RequestCounters::default(), RequestCounters::default());
        ra.record(Protocol::Http, Op::Get, 200);
        rb.record(Protocol::Http, Op::Get, 200);
        rb.record(Protocol::Oap, Op::Put, 429);
        ShardMetrics::add(&a.verify_failures, 2);
        b.ready.store(true, Ordering::Relaxed);
        let mut extra = Extra::default();
        extra.latency.record(Protocol::Http, Op::Get, 120);
        extra.latency.record(Protocol::Http, Op::Get, 3_000_000);
        extra
            .quota_rejections
            .push(("a\"b".into(), Exhausted::Requests, 1));
        extra.reloads_ok = 4;
        let text = render_metrics(&samples(&[(&a, &ra), (&b, &rb)]), &extra);
        for line in [
            "ron_requests_total{protocol=\"http\",op=\"get\",status=\"200\"} 2\n",
            "ron_requests_total{protocol=\"oap\",op=\"put\",status=\"429\"} 1\n",
            "ron_rejections_total{reason=\"over_quota\"} 1\n",
            "ron_rejections_total{reason=\"timeout\"} 0\n",
            "ron_quota_rejections_total{tenant=\"a\\\"b\",limit=\"requests\"} 1\n",
            "ron_verify_failures_total 2\n",
            "ron_shard_requests_total{shard=\"0\"} 1\n",
            "ron_shard_requests_total{shard=\"1\"} 2\n",
            "ron_shard_ready{shard=\"1\"} 1\n",
            "ron_config_reloads_total 4\n",
            "# TYPE ron_inflight_requests gauge\n",
            "ron_request_duration_seconds_bucket{protocol=\"http\",op=\"get\",le=\"+Inf\"} 2\n",
            "ron_request_duration_seconds_bucket{protocol=\"http\",op=\"get\",le=\"0.00025\"} 1\n",
            "ron_request_duration_seconds_bucket{protocol=\"http\",op=\"get\",le=\"2.5\"} 1\n",
            "ron_request_duration_seconds_sum{protocol=\"http\",op=\"get\"} 3.00012\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("status=\"404\""), "zero series are left out");
        let mut seen = std::collections::HashSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            assert!(
                seen.insert(line.to_string()),
                "family registered twice: {line}"
            );
        }
        assert_eq!(seen.len(), FAMILIES.len());
    }

    #[test]
    fn scrapes_hold_counters_to_the_last_scrape() {
        let metrics = vec![Arc::new(ShardMetrics::default())];
        let requests = vec![Arc::new(RequestCounters::default())];
        let scrapes = Scrapes::default();
        ShardMetrics::add(&metrics[0].bytes_in, 10);
        metrics[0].connections_open.store(5, Ordering::Relaxed);
        assert_eq!(scrapes.sample(&metrics, &requests)[0].metrics.bytes_in, 10);
        // Gauges may fall; counters stay or grow.
        metrics[0].connections_open.store(0, Ordering::Relaxed);
        ShardMetrics::add(&metrics[0].bytes_in, 1);
        let again = scrapes.sample(&metrics, &requests);
        assert_eq!(
            (again[0].metrics.bytes_in, again[0].metrics.connections_open),
            (11, 0)
        );
    }

    #[test]
    #[should_panic(
        expected = "metrics invariant: counter ron_bytes_received_total never goes back between scrapes (10 then 4)"
    )]
    fn a_counter_that_goes_back_fails_the_scrape() {
        let metrics = vec![Arc::new(ShardMetrics::default())];
        let requests = vec![Arc::new(RequestCounters::default())];
        let scrapes = Scrapes::default();
        ShardMetrics::add(&metrics[0].bytes_in, 10);
        scrapes.sample(&metrics, &requests);
        metrics[0].bytes_in.store(4, Ordering::Relaxed);
        scrapes.sample(&metrics, &requests);
    }

    #[test]
    #[should_panic(
        expected = "metrics invariant: histogram protocol=\"http\" buckets add up (3 after 5, of 9)"
    )]
    fn histogram_buckets_that_do_not_add_up_fail_the_scrape() {
        assert_cumulative("protocol=\"http\"", 2, 5, 9);
        assert_cumulative("protocol=\"http\"", 5, 3, 9);
    }

    #[test]
    fn every_family_is_named_and_typed_by_the_conventions() {
        for f in &FAMILIES {
            assert!(f.name.starts_with("ron_") && !f.help.is_empty(), "{f:?}");
            let counter = f.name.ends_with("_total");
            assert_eq!(counter, matches!(f.kind, Kind::Counter), "{}", f.name);
        }
    }
}
