//! `/metrics`: the Prometheus text format (0.0.4). Every family is one row of
//! `FAMILIES`, rendered in that order: a shard counter's family as `ron-link` declares
//! it with the counter (`ron_link::counters`: name, type, help, how the shards' values
//! are shown), or one of the control thread's own (name, type, help, where its samples
//! come from). The names, help texts and label sets are an interface (dashboards,
//! alerts, `docs/HTTP-API.md`) and change only on purpose.

use std::sync::{Mutex, PoisonError};

use ron_link::counters::{FrontSnapshot, ShardCounters, StorageSnapshot, FRONT, STORAGE};
use ron_link::dht::{DhtMetrics, DhtSnapshot, DHT, LOOKUP_BUCKETS_MS, PUBLISH_DELAY_BUCKETS_MS};
use ron_link::families::{Across, Family, Kind};
use ron_link::latency::{LatencySet, EXPORTED_BUCKETS_US};
use ron_link::requests::{Op, Protocol, Rejection, COUNTED_STATUSES};

use crate::view::{sample, Extra, ShardSample};

use Kind::{Counter, Gauge, Histogram};

/// Reads one value out of a shard's sample.
type Reader = fn(&ShardSample) -> u64;

/// Where a row's samples come from.
#[derive(Debug)]
enum Series {
    /// A counter of the shards' storage, shown as its family in ron-link says.
    Storage(Family<StorageSnapshot>),
    /// A counter of the shards' front, shown as its family in ron-link says.
    Front(Family<FrontSnapshot>),
    /// One sample per shard, labelled `shard`.
    PerShard(Reader),
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
}

/// One family of `/metrics`: a counter's family as ron-link declares it, or one the
/// control thread makes of its own.
#[derive(Debug)]
struct Row {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    series: Series,
}

const fn family(name: &'static str, kind: Kind, help: &'static str, series: Series) -> Row {
    Row {
        name,
        kind,
        help,
        series,
    }
}

const fn storage(family: Family<StorageSnapshot>) -> Row {
    Row {
        name: family.name,
        kind: family.kind,
        help: family.help,
        series: Series::Storage(family),
    }
}

const fn front(family: Family<FrontSnapshot>) -> Row {
    Row {
        name: family.name,
        kind: family.kind,
        help: family.help,
        series: Series::Front(family),
    }
}

/// Every family, in the order it is rendered: the shards' counters by their field (their
/// name, type, help and labels are declared with them, `ron_link::counters`), the rest
/// here.
#[rustfmt::skip]
const FAMILIES: [Row; 85] = [
    family("ron_requests_total", Counter, "Requests answered, by protocol, op and status (status 0: any other status).", Series::Requests),
    family("ron_request_duration_seconds", Histogram, "Time from a complete request (HTTP head, OAP START) to its last byte queued, by protocol and op; per-shard HDR histograms merged at scrape (±1 %, up to 1 s stale).", Series::Latency),
    family("ron_rejections_total", Counter, "Requests refused, by reason (from their status: 429 over_quota, 503 overloaded, 401 unauthorized, 413/431 too_large, 400/405/411 bad_request, 408 timeout).", Series::Rejections),
    family("ron_quota_rejections_total", Counter, "Requests refused 429 by a tenant's token bucket; tenant is a configured name or \"other\".", Series::QuotaRejections),
    front(FRONT.bytes_in),
    front(FRONT.bytes_out),
    storage(STORAGE.verify_failures),
    storage(STORAGE.ec_degraded_reads),
    storage(STORAGE.ec_unrecoverable),
    storage(STORAGE.ec_missing_blocks),
    storage(STORAGE.ec_repair_bytes),
    storage(STORAGE.ec_repair_failures),
    storage(STORAGE.scrub_bytes),
    storage(STORAGE.scrub_objects),
    storage(STORAGE.scrub_bad_blocks),
    storage(STORAGE.scrub_unrepairable),
    storage(STORAGE.scrub_passes),
    storage(STORAGE.scrub_progress_ppm),
    storage(STORAGE.scrub_paused),
    storage(STORAGE.scrub_rate),
    front(FRONT.fetches),
    front(FRONT.fetches_stored),
    front(FRONT.fetch_bytes),
    front(FRONT.fetch_origin_streamed),
    front(FRONT.fetch_outboards_refused),
    front(FRONT.fetch_outboards_unbuffered),
    front(FRONT.fetch_failures),
    front(FRONT.fetch_misses_remembered),
    front(FRONT.fetch_hedges),
    front(FRONT.fetch_coalesced_waiters),
    front(FRONT.bundle_entries_served),
    front(FRONT.range_answers),
    front(FRONT.not_modified_answers),
    front(FRONT.replica_pulls_held),
    front(FRONT.replica_pulls_no_room),
    front(FRONT.replica_held_checks),
    front(FRONT.replication_bytes),
    front(FRONT.replication_checks),
    front(FRONT.replication_demoted),
    front(FRONT.replication_rescues),
    storage(STORAGE.damaged_copies_discarded),
    front(FRONT.under_replicated),
    front(FRONT.replication_unchecked),
    front(FRONT.replication_sweeps),
    front(FRONT.replication_sweep_at),
    storage(STORAGE.evictable_objects),
    storage(STORAGE.evictable_bytes),
    storage(STORAGE.fetched_bytes_max),
    storage(STORAGE.evictions),
    storage(STORAGE.evicted_bytes),
    storage(STORAGE.ec_repairs_dropped),
    storage(STORAGE.cache_hits),
    storage(STORAGE.cache_misses),
    storage(STORAGE.cache_window_bytes),
    storage(STORAGE.meta_loads),
    storage(STORAGE.meta_load_waits),
    front(FRONT.connections_total),
    front(FRONT.overload_rejections),
    front(FRONT.accept_failures),
    front(FRONT.tls_handshake_failures),
    front(FRONT.connections_refused_per_client),
    storage(STORAGE.mesh_requests),
    storage(STORAGE.objects_created),
    front(FRONT.inflight),
    front(FRONT.parked),
    front(FRONT.transfer_deadline_drops),
    storage(STORAGE.objects_stored),
    storage(STORAGE.bytes_stored),
    storage(STORAGE.cache_bytes),
    storage(STORAGE.cache_entries),
    storage(STORAGE.read_ahead_bytes),
    storage(STORAGE.read_ahead_refused),
    front(FRONT.connections_open),
    family("ron_shard_requests_total", Counter, "Requests answered by each shard.", Series::PerShard(|s| s.requests.total())),
    front(FRONT.ready),
    family("ron_shard_saturated", Gauge, "1 while the shard's in-flight gate is full.", Series::PerShard(|s| u64::from(s.front.saturated()))),
    front(FRONT.reactor_stalls),
    front(FRONT.reactor_stall_us),
    family("ron_quota_tenants_tracked", Gauge, "Tenants with token buckets on the shards (summed over shards).", Series::Control(|e| e.quota_tenants_tracked)),
    family("ron_denylist_rules", Gauge, "Rules of the denylist the shards enforce (denylist_dir's *.deny files; 0 without one).", Series::Control(|e| e.denylist_rules)),
    family("ron_config_version", Gauge, "Version of the running tokens/tenants/quotas (1 at start, +1 per good reload).", Series::Control(|e| e.config_version)),
    family("ron_config_reload_failures_total", Counter, "Reloads refused (bad file); the running configuration was kept.", Series::Control(|e| e.reloads_failed)),
    family("ron_config_reloads_total", Counter, "Reloads applied.", Series::Control(|e| e.reloads_ok)),
    family("ron_heap_trims_total", Counter, "Times the heap's free pages were handed back to the kernel (after 10 s with no request answered and no client byte moved, at most once a minute).", Series::Control(|e| e.heap_trims)),
    family("ron_heap_trim_released_bytes_total", Counter, "Resident bytes the heap trims gave back (RSS before less after).", Series::Control(|e| e.heap_released_bytes)),
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
    pub fn sample(&self, shards: &[ShardCounters]) -> Vec<ShardSample> {
        let mut last = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let samples = sample(shards);
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
    for row in FAMILIES.iter().filter(|r| matches!(r.kind, Counter)) {
        match &row.series {
            Series::Storage(family) => counter_samples(&mut out, family, shards, |s| &s.storage),
            Series::Front(family) => counter_samples(&mut out, family, shards, |s| &s.front),
            Series::PerShard(get) => out.extend(shards.iter().map(|s| (row.name, get(s)))),
            _ => {}
        }
    }
    out
}

/// A ron-link counter family's samples: its sum, or its value on each shard.
fn counter_samples<S>(
    out: &mut Vec<(&'static str, u64)>,
    family: &Family<S>,
    shards: &[ShardSample],
    of: fn(&ShardSample) -> &S,
) {
    let name = family.name;
    match family.across {
        Across::Sum => out.push((name, shards.iter().map(|s| family.value(of(s))).sum())),
        Across::PerShard => out.extend(shards.iter().map(|s| (name, family.value(of(s))))),
        Across::PerShardMillionths | Across::Labelled(..) => {}
    }
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
    for row in &FAMILIES {
        let (name, kind) = (row.name, row.kind.as_str());
        out.push_str(&format!(
            "# HELP {name} {}\n# TYPE {name} {kind}\n",
            row.help
        ));
        match &row.series {
            Series::Storage(family) => render_counter(&mut out, family, shards, |s| &s.storage),
            Series::Front(family) => render_counter(&mut out, family, shards, |s| &s.front),
            Series::PerShard(get) => {
                for (i, s) in shards.iter().enumerate() {
                    out.push_str(&format!("{name}{{shard=\"{i}\"}} {}\n", get(s)));
                }
            }
            Series::Control(get) => out.push_str(&format!("{name} {}\n", get(extra))),
            Series::Requests => render_requests(&mut out, name, shards),
            Series::Latency => render_latency(&mut out, name, &extra.latency),
            Series::Rejections => render_rejections(&mut out, name, shards),
            Series::QuotaRejections => render_quota_rejections(&mut out, name, extra),
        }
    }
    out
}

/// The samples of a ron-link counter family, as its `across` says (`shards`: each
/// writer's sample, in shard order).
fn render_counter<T, S>(out: &mut String, family: &Family<S>, shards: &[T], of: fn(&T) -> &S) {
    let name = family.name;
    match family.across {
        Across::Sum => {
            let total: u64 = shards.iter().map(|s| family.value(of(s))).sum();
            out.push_str(&format!("{name} {total}\n"));
        }
        Across::PerShard => {
            for (i, s) in shards.iter().enumerate() {
                let value = family.value(of(s));
                out.push_str(&format!("{name}{{shard=\"{i}\"}} {value}\n"));
            }
        }
        Across::PerShardMillionths => {
            for (i, s) in shards.iter().enumerate() {
                let ratio = family.value(of(s)) as f64 / 1e6;
                out.push_str(&format!("{name}{{shard=\"{i}\"}} {ratio}\n"));
            }
        }
        Across::Labelled(label, values) => {
            for (at, value) in values.iter().enumerate() {
                let n: u64 = shards.iter().map(|s| family.value_at(of(s), at)).sum();
                out.push_str(&format!("{name}{{{label}=\"{value}\"}} {n}\n"));
            }
        }
    }
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
pub fn render_dht(out: &mut String, dht: &DhtMetrics) {
    let snapshot = dht.snapshot();
    render_dht_histograms(out, &snapshot);
    for family in DHT.all() {
        let name = family.name;
        out.push_str(&format!(
            "# HELP {name} {}\n# TYPE {name} {}\n",
            family.help,
            family.kind.as_str()
        ));
        render_counter(out, family, std::slice::from_ref(&snapshot), |s| s);
    }
}

/// A histogram kept as non-cumulative counts per millisecond bound (`counts` has one
/// more entry than `bounds_ms`: the rest), rendered in seconds.
struct MsHistogram<'a> {
    name: &'a str,
    help: &'a str,
    counts: &'a [u64],
    bounds_ms: &'a [u64],
    sum_ms: u64,
}

/// The DHT's histograms.
fn render_dht_histograms(out: &mut String, dht: &DhtSnapshot) {
    let histograms = [
        MsHistogram {
            name: "ron_dht_lookup_duration_seconds",
            help: "Provider lookups (resolves) by time to answer, seconds.",
            counts: &dht.lookup_ms_buckets,
            bounds_ms: &LOOKUP_BUCKETS_MS,
            sum_ms: dht.lookup_ms_sum,
        },
        MsHistogram {
            name: "ron_dht_lookup_first_provider_seconds",
            help: "Provider lookups (resolves) that found a provider, by time to the first one found, seconds; the rest of their time to answer is the wait for more providers and for greetings.",
            counts: &dht.first_provider_ms_buckets,
            bounds_ms: &LOOKUP_BUCKETS_MS,
            sum_ms: dht.first_provider_ms_sum,
        },
        MsHistogram {
            name: "ron_dht_dial_duration_seconds",
            help: "Connections this node dialed, by time to establish them (TCP, noise, yamux), seconds.",
            counts: &dht.dial_ms_buckets,
            bounds_ms: &LOOKUP_BUCKETS_MS,
            sum_ms: dht.dial_ms_sum,
        },
        MsHistogram {
            name: "ron_dht_store_commit_seconds",
            help: "The provider store's commits (one LMDB transaction each; the DHT thread waits for it), by duration, seconds.",
            counts: &dht.store_commit_ms_buckets,
            bounds_ms: &LOOKUP_BUCKETS_MS,
            sum_ms: dht.store_commit_ms_sum,
        },
        MsHistogram {
            name: "ron_dht_publish_delay_seconds",
            help: "Fresh objects by time from their announcement to the first peer that took their provider record, seconds.",
            counts: &dht.publish_delay_ms_buckets,
            bounds_ms: &PUBLISH_DELAY_BUCKETS_MS,
            sum_ms: dht.publish_delay_ms_sum,
        },
    ];
    for histogram in &histograms {
        render_ms_histogram(out, histogram);
    }
}

fn render_ms_histogram(out: &mut String, histogram: &MsHistogram<'_>) {
    let MsHistogram {
        name,
        help,
        counts,
        bounds_ms,
        sum_ms,
    } = histogram;
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
    let mut cumulative = 0;
    for (count, le_ms) in counts.iter().zip(bounds_ms.iter()) {
        cumulative += count;
        let le = *le_ms as f64 / 1e3;
        out.push_str(&format!("{name}_bucket{{le=\"{le}\"}} {cumulative}\n"));
    }
    cumulative += counts[bounds_ms.len()..].iter().sum::<u64>();
    out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {cumulative}\n"));
    let sum_s = *sum_ms as f64 / 1e3;
    out.push_str(&format!("{name}_sum {sum_s}\n"));
    out.push_str(&format!("{name}_count {cumulative}\n"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use ron_link::counters::{FetchFailure, FrontCounters, StorageCounters};
    use ron_link::policy::Exhausted;
    use std::sync::atomic::Ordering;

    #[test]
    fn the_dht_families_show_each_counter_once_with_its_labels() {
        let dht = DhtMetrics::default();
        dht.record_lookup(3, 2);
        dht.record_lookup(40_000, 0);
        dht.record_first_provider(60);
        dht.record_first_provider_requests(4);
        dht.record_dial(7);
        dht.store_commit_ms_buckets[1].store(3, Ordering::Relaxed);
        dht.store_commit_ms_sum.store(5, Ordering::Relaxed);
        dht.record_publish_delay(150);
        dht.record_publish_delay(400_000);
        dht.count_audit("missing");
        let busy = &dht.copies_asked_total[ron_link::dht::CopyOutcome::Busy as usize];
        busy.fetch_add(2, Ordering::Relaxed);
        dht.replication_target.store(3, Ordering::Relaxed);
        let mut text = String::new();
        render_dht(&mut text, &dht);
        for line in [
            "# TYPE ron_dht_lookup_duration_seconds histogram\n",
            "ron_dht_lookup_duration_seconds_bucket{le=\"0.002\"} 0\n",
            "ron_dht_lookup_duration_seconds_bucket{le=\"0.005\"} 1\n",
            "ron_dht_lookup_duration_seconds_bucket{le=\"30\"} 1\n",
            "ron_dht_lookup_duration_seconds_bucket{le=\"+Inf\"} 2\n",
            "ron_dht_lookup_duration_seconds_sum 40.003\n",
            "ron_dht_lookup_duration_seconds_count 2\n",
            "# TYPE ron_dht_lookup_first_provider_seconds histogram\n",
            "ron_dht_lookup_first_provider_seconds_bucket{le=\"0.05\"} 0\n",
            "ron_dht_lookup_first_provider_seconds_bucket{le=\"0.1\"} 1\n",
            "ron_dht_lookup_first_provider_seconds_bucket{le=\"+Inf\"} 1\n",
            "ron_dht_lookup_first_provider_seconds_sum 0.06\n",
            "ron_dht_lookup_first_provider_seconds_count 1\n",
            "ron_dht_lookup_first_provider_requests_total 4\n",
            "ron_dht_dial_failures_total 0\n",
            "# TYPE ron_dht_dial_duration_seconds histogram\n",
            "ron_dht_dial_duration_seconds_bucket{le=\"0.005\"} 0\n",
            "ron_dht_dial_duration_seconds_bucket{le=\"0.01\"} 1\n",
            "ron_dht_dial_duration_seconds_sum 0.007\n",
            "# TYPE ron_dht_store_commit_seconds histogram\n",
            "ron_dht_store_commit_seconds_bucket{le=\"0.001\"} 0\n",
            "ron_dht_store_commit_seconds_bucket{le=\"0.002\"} 3\n",
            "ron_dht_store_commit_seconds_sum 0.005\n",
            "# TYPE ron_dht_publish_delay_seconds histogram\n",
            "ron_dht_publish_delay_seconds_bucket{le=\"0.1\"} 0\n",
            "ron_dht_publish_delay_seconds_bucket{le=\"0.2\"} 1\n",
            "ron_dht_publish_delay_seconds_bucket{le=\"300\"} 1\n",
            "ron_dht_publish_delay_seconds_bucket{le=\"+Inf\"} 2\n",
            "ron_dht_publish_delay_seconds_sum 400.15\n",
            "ron_dht_publish_delay_seconds_count 2\n",
            "ron_dht_lookups_total 2\n",
            "ron_dht_missing_records_total 1\n",
            "ron_dht_providers_found_total 2\n",
            "# TYPE ron_replication_target gauge\n",
            "ron_replication_target 3\n",
            "# TYPE ron_dht_peers_alive gauge\n",
            "ron_replica_audits_total{outcome=\"missing\"} 1\n",
            "ron_replica_audits_total{outcome=\"verified\"} 0\n",
            "ron_replication_copies_total{outcome=\"busy\"} 2\n",
            "ron_replication_copies_total{outcome=\"not_holder\"} 0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        // The counters and gauges, and the five histograms rendered from buckets.
        assert_eq!(text.matches("# HELP ").count(), DHT.all().len() + 5);
        assert_eq!(text.matches("# TYPE ").count(), DHT.all().len() + 5);
    }

    #[test]
    fn metrics_sum_shards_and_register_each_family_once() {
        let (a, b) = (ShardCounters::default(), ShardCounters::default());
        a.requests.record(Protocol::Http, Op::Get, 200);
        b.requests.record(Protocol::Http, Op::Get, 200);
        b.requests.record(Protocol::Oap, Op::Put, 429);
        StorageCounters::add(&a.storage.verify_failures, 2);
        b.front.ready.store(true, Ordering::Relaxed);
        a.front.fetch_failed(FetchFailure::Timeout);
        b.front.fetch_failed(FetchFailure::Timeout);
        b.storage
            .scrub_progress_ppm
            .store(250_000, Ordering::Relaxed);
        let mut extra = Extra::default();
        extra.latency.record(Protocol::Http, Op::Get, 120);
        extra.latency.record(Protocol::Http, Op::Get, 3_000_000);
        extra
            .quota_rejections
            .push(("a\"b".into(), Exhausted::Requests, 1));
        extra.reloads_ok = 4;
        let text = render_metrics(&sample(&[a, b]), &extra);
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
            "ron_fetch_failures_total{reason=\"timeout\"} 2\n",
            "ron_fetch_failures_total{reason=\"storage\"} 0\n",
            "ron_scrub_progress_ratio{shard=\"1\"} 0.25\n",
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
        let shards = vec![ShardCounters::default()];
        let front = &shards[0].front;
        let scrapes = Scrapes::default();
        FrontCounters::add(&front.bytes_in, 10);
        front.connections_open.store(5, Ordering::Relaxed);
        assert_eq!(scrapes.sample(&shards)[0].front.bytes_in, 10);
        // Gauges may fall; counters stay or grow.
        front.connections_open.store(0, Ordering::Relaxed);
        FrontCounters::add(&front.bytes_in, 1);
        let again = scrapes.sample(&shards);
        assert_eq!(
            (again[0].front.bytes_in, again[0].front.connections_open),
            (11, 0)
        );
    }

    #[test]
    #[should_panic(
        expected = "metrics invariant: counter ron_bytes_received_total never goes back between scrapes (10 then 4)"
    )]
    fn a_counter_that_goes_back_fails_the_scrape() {
        let shards = vec![ShardCounters::default()];
        let scrapes = Scrapes::default();
        FrontCounters::add(&shards[0].front.bytes_in, 10);
        scrapes.sample(&shards);
        shards[0].front.bytes_in.store(4, Ordering::Relaxed);
        scrapes.sample(&shards);
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

    /// A family ron-link declares with a counter is rendered, once.
    #[test]
    fn every_counter_family_of_ron_link_is_rendered_once() {
        let declared = STORAGE.all().into_iter().map(|f| f.name);
        let declared: Vec<_> = declared
            .chain(FRONT.all().into_iter().map(|f| f.name))
            .collect();
        for name in &declared {
            let rows = FAMILIES.iter().filter(|r| r.name == *name).count();
            assert_eq!(
                rows, 1,
                "{name} is declared in ron-link and rendered {rows} times"
            );
        }
        let linked = FAMILIES
            .iter()
            .filter(|r| matches!(r.series, Series::Storage(_) | Series::Front(_)));
        assert_eq!(linked.count(), declared.len());
    }
}
