//! The phases of a network run and what each measures:
//!
//! 1. **formed**: every node ready and its routing table holding peers;
//! 2. **quiet**: per node, over a window with no requests once the network has settled
//!    — CPU, RSS, libp2p connections open, peers alive, routing-table peers;
//! 3. **uploads**: objects of random sizes put on random nodes, [`WORKERS`] at a time;
//!    then, at once, 3a and 4 (each object timed from its upload's acknowledgement):
//!    3a. **findable**: each object resolved (`/resolve`) from another node until a
//!    provider is named — the time that took, and every resolve's latency;
//! 4. **copies**: until every object is at `replicas` verified copies in as many zones
//!    (`/admin/placement` of a random live node, which audits each holder), how many
//!    are short over time and when the last one got there; objects whose placement
//!    names no verified copy at all are counted too;
//! 5. **resolves**: each object resolved once from a random node, now that its copies
//!    are made; **reads**: objects read through (`GET /o/<addr>`) from random nodes the
//!    placement does not name, each body checked against its address;
//! 6. **kill**: 10 % of the nodes (never node 0) killed with -9, then copies again;
//! 7. **join**: 10 % more nodes started, then copies again;
//! 8. **quiet at the end**: left alone again (the settle time), then the per-node costs
//!    over another quiet window — what a node costs once its copies are made, not the
//!    tail of the harness's own probing and of the repairs and moves it watched.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ron_codec::Address;
use serde_json::{json, Value};

use super::findable::{bucket_summary, histogram_buckets, Findable, Prober};
use super::probe::{self, exchange, TICKS_PER_S};
use super::{Network, ADMIN_TIMEOUT};
use crate::dataset::object_bytes;

/// What the nodes count of their resolves, read before and after the settled ones: time
/// to answer and to the first provider, the dials meanwhile and how many failed, and the
/// requests sent by the first provider.
const LOOKUP_FAMILY: &str = "ron_dht_lookup_duration_seconds";
const FIRST_PROVIDER_FAMILY: &str = "ron_dht_lookup_first_provider_seconds";
const DIAL_FAMILY: &str = "ron_dht_dial_duration_seconds";
const COMMIT_FAMILY: &str = "ron_dht_store_commit_seconds";
const FIRST_PROVIDER_REQUESTS: &str = "ron_dht_lookup_first_provider_requests_total";
/// Optimistic provides, by where the peer came from.
const EARLY_REQUESTS: [&str; 2] = [
    "ron_dht_publish_early_requests_total{peer=\"routing_table\"}",
    "ron_dht_publish_early_requests_total{peer=\"connection\"}",
];
const DIAL_FAILURES: &str = "ron_dht_dial_failures_total";
/// Providers named from the OAP/1 address of their records, not a greeting.
const NAMED_FROM_RECORDS: &str = "ron_dht_providers_named_from_records_total";
/// Requests the harness has under way at once.
const WORKERS: usize = 16;
/// Pause between rounds of the copies watch.
const POLL_PAUSE: Duration = Duration::from_millis(250);

/// What to do with the network.
#[derive(Debug, Clone)]
pub struct Plan {
    pub objects: usize,
    pub size_min: usize,
    pub size_max: usize,
    pub seed: u64,
    /// The longest wait for every routing table to hold peers, seconds.
    pub form_max_s: f64,
    /// How long the network is left alone after it formed (its bootstrap lookups, dials
    /// and greetings done, idle connections closed) before the quiet window, and again
    /// after the last phase before the closing one, seconds.
    pub settle_s: f64,
    /// The quiet window, seconds.
    pub quiet_s: f64,
    /// After the first settle, the longest wait for the network to be calm (node CPU p50
    /// at most [`CALM_CPU_PERCENT`]) before the quiet window and the uploads, seconds: a
    /// large network still forming its routing tables would make every later figure its
    /// own.
    pub calm_max_s: f64,
    /// The longest wait for copies in each phase, seconds.
    pub copies_wait_s: f64,
    /// Objects read through in the reads phase.
    pub reads: usize,
    /// Share of the nodes killed, then joined, in percent (0: no such phase).
    pub kill_percent: usize,
    pub join_percent: usize,
}

/// The median, 90th and 99th percentiles and the largest of some samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(mut values: Vec<f64>) -> Summary {
        if values.is_empty() {
            return Summary::default();
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        Summary {
            count: values.len(),
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: values[values.len() - 1],
        }
    }

    pub(super) fn json(&self) -> Value {
        json!({"count": self.count, "p50": self.p50, "p90": self.p90, "p99": self.p99, "max": self.max})
    }
}

/// What the nodes cost, each a summary over the live nodes.
#[derive(Debug, Clone, Default)]
pub struct NodeCosts {
    pub cpu_percent: Summary,
    pub rss_mib: Summary,
    pub connections: Summary,
    pub peers_alive: Summary,
    pub routing_peers: Summary,
}

/// How objects reached their copies in one phase.
#[derive(Debug, Clone, Default)]
pub struct Copies {
    /// (seconds since the phase began, objects short then), one per round.
    pub short_over_time: Vec<(f64, usize)>,
    /// Per object, seconds from the phase's start (or its upload) to complete.
    pub complete_s: Summary,
    /// Objects still short at the end.
    pub short_at_end: usize,
    /// The most objects, in one round, whose placement named no verified copy.
    pub without_verified_copy_max: usize,
    /// Placement requests that failed (node unreachable, 5xx).
    pub errors: usize,
    /// (object, the OAP addresses its placement named), as each was last seen.
    named: Vec<(usize, Vec<SocketAddr>)>,
}

/// Everything a run measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub nodes: usize,
    pub zones: usize,
    pub formed_s: f64,
    /// Nodes whose routing table was still short when the wait for forming ended.
    pub unformed: usize,
    /// Seconds after the first settle until the network was calm; `None`: not within
    /// `calm_max_s`.
    pub calm_s: Option<f64>,
    pub quiet: NodeCosts,
    pub findable: Findable,
    pub copies: Copies,
    /// Once the copies are made: each object resolved once from a random node, ms, and
    /// how many of those answers named no provider.
    pub settled_resolve_ms: Summary,
    pub settled_resolve_empty: usize,
    /// The same resolves as the nodes timed them (bucket bounds of
    /// `ron_dht_lookup_duration_seconds`, s): from the query's start to the answer...
    pub settled_resolve_node_s: Summary,
    /// ...and to the first provider found (`ron_dht_lookup_first_provider_seconds`):
    /// the rest of the answer's time is the wait for more providers and greetings.
    pub settled_first_provider_s: Summary,
    /// The connections the nodes dialed meanwhile, by time to establish
    /// (`ron_dht_dial_duration_seconds` bounds, s): what a lookup's hop to a peer not
    /// connected pays...
    pub settled_dial_s: Summary,
    /// ...and the provider stores' commits meanwhile (`ron_dht_store_commit_seconds`
    /// bounds, s): the DHT thread of a node answers no peer while one runs.
    pub settled_commit_s: Summary,
    /// ...and the requests those lookups had sent when they found their first provider,
    /// per lookup (about 3 a round).
    pub settled_requests_to_first_provider: f64,
    /// ...and the dials that failed meanwhile (`ron_dht_dial_failures_total`).
    pub settled_dial_failures: u64,
    /// ...and the providers they named from the OAP/1 address of their records, not
    /// waiting for a greeting (`ron_dht_providers_named_from_records_total`).
    pub settled_named_from_records: u64,
    pub reads_ms: Summary,
    pub read_failures: usize,
    pub killed: usize,
    pub after_kill: Option<Copies>,
    pub joined: usize,
    pub after_join: Option<Copies>,
    pub costs_end: NodeCosts,
    /// The live nodes' provider-store commits over the whole run (their histograms
    /// summed, bounds in s).
    pub commit_s: Summary,
}

/// One object put on the network.
#[derive(Debug, Clone)]
struct Put {
    addr: Address,
    /// When its upload was acknowledged.
    acked: Instant,
    /// The OAP addresses of the holders its last placement named.
    holders: Vec<SocketAddr>,
}

/// Runs every phase of `plan` on `network`.
/// A part of the report as soon as it is measured, on stderr (`progress: ` before each
/// line): a run cut short (a device call's time limit) still says what it measured.
fn progress(text: &str) {
    for line in text.lines() {
        eprintln!("progress: {line}");
    }
}

pub fn run(network: &mut Network, plan: &Plan) -> Result<Report, String> {
    let mut rng = Rng(plan.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut report = Report {
        nodes: network.nodes.len(),
        zones: network.config.zones,
        ..Report::default()
    };
    (report.formed_s, report.unformed) = wait_formed(network, plan.form_max_s);
    std::thread::sleep(Duration::from_secs_f64(plan.settle_s));
    report.calm_s = wait_calm(network, plan.calm_max_s);
    report.quiet = node_costs(network, plan.quiet_s);
    progress(&report.opening_text());
    let prober = Prober::default();
    let shared: &Network = network;
    let (uploaded, copies) = std::thread::scope(|scope| {
        let probing = scope.spawn(|| prober.run(plan.objects));
        let uploaded = upload(shared, plan, &mut rng, &prober);
        prober.close();
        let copies = uploaded.as_ref().ok().map(|(puts, _)| {
            let since: Vec<Instant> = puts.iter().map(|p| p.acked).collect();
            watch_copies(shared, puts, &since, plan.copies_wait_s, &mut rng)
        });
        let probed = probing.join();
        (uploaded, copies.filter(|_| probed.is_ok()))
    });
    let (mut puts, upload_ms) = uploaded?;
    let copies = copies.ok_or("the findability probe panicked")?;
    report.findable = Findable {
        upload_ms,
        publish_delay_s: publish_delays(network),
        early_requests: EARLY_REQUESTS.map(|series| summed_metric(network, series)),
        ..prober.findable()
    };
    report.copies = remember_holders(&mut puts, copies);
    progress(&report.findable_text());
    let families = [
        LOOKUP_FAMILY,
        FIRST_PROVIDER_FAMILY,
        DIAL_FAMILY,
        COMMIT_FAMILY,
    ];
    let [answered_before, first_before, dial_before, commit_before] =
        families.map(|family| summed_histogram(network, family));
    let requests_before = summed_metric(network, FIRST_PROVIDER_REQUESTS);
    let dial_failures_before = summed_metric(network, DIAL_FAILURES);
    let named_before = summed_metric(network, NAMED_FROM_RECORDS);
    (report.settled_resolve_ms, report.settled_resolve_empty) =
        resolve_each(network, &puts, &mut rng);
    let [answered, first, dial, commit] = families.map(|family| summed_histogram(network, family));
    report.settled_resolve_node_s = bucket_summary(&histogram_since(&answered_before, &answered));
    report.settled_first_provider_s = bucket_summary(&histogram_since(&first_before, &first));
    report.settled_dial_s = bucket_summary(&histogram_since(&dial_before, &dial));
    report.settled_commit_s = bucket_summary(&histogram_since(&commit_before, &commit));
    let requests = summed_metric(network, FIRST_PROVIDER_REQUESTS).saturating_sub(requests_before);
    report.settled_requests_to_first_provider =
        requests as f64 / report.settled_first_provider_s.count.max(1) as f64;
    report.settled_dial_failures =
        summed_metric(network, DIAL_FAILURES).saturating_sub(dial_failures_before);
    report.settled_named_from_records =
        summed_metric(network, NAMED_FROM_RECORDS).saturating_sub(named_before);
    (report.reads_ms, report.read_failures) = read_through(network, &puts, plan.reads, &mut rng);
    progress(&report.settled_text());
    if plan.kill_percent > 0 {
        let victims = pick_victims(network, plan.kill_percent, &mut rng);
        report.killed = victims.len();
        network.kill(&victims);
        let now = vec![Instant::now(); puts.len()];
        let copies = watch_copies(network, &puts, &now, plan.copies_wait_s, &mut rng);
        report.after_kill = Some(remember_holders(&mut puts, copies));
    }
    if plan.join_percent > 0 {
        let count = (network.config.nodes * plan.join_percent).div_ceil(100);
        report.joined = network.join(count)?.len();
        let now = vec![Instant::now(); puts.len()];
        let copies = watch_copies(network, &puts, &now, plan.copies_wait_s, &mut rng);
        report.after_join = Some(remember_holders(&mut puts, copies));
    }
    std::thread::sleep(Duration::from_secs_f64(plan.settle_s));
    report.costs_end = node_costs(network, plan.quiet_s);
    report.commit_s = bucket_summary(&summed_histogram(network, COMMIT_FAMILY));
    Ok(report)
}

/// Seconds until every node's routing table holds `min(nodes - 1, 8)` peers (at most
/// `max_s`; a node short then is left to the phases to show), and how many were short.
fn wait_formed(network: &Network, max_s: f64) -> (f64, usize) {
    let started = Instant::now();
    let want = (network.nodes.len() as u64 - 1).min(8);
    loop {
        let tables = parallel_map(&network.live(), |&i| {
            metric_of(network.nodes[i].admin, "ron_dht_routing_table_peers")
        });
        let short = tables
            .iter()
            .filter(|t| !t.is_some_and(|t| t >= want))
            .count();
        if short == 0 || started.elapsed().as_secs_f64() >= max_s {
            return (started.elapsed().as_secs_f64(), short);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn metric_of(admin: SocketAddr, name: &str) -> Option<u64> {
    let answer = exchange(admin, "GET", "/metrics", b"", ADMIN_TIMEOUT).ok()?;
    probe::metric(std::str::from_utf8(&answer.body).ok()?, name)
}

/// A node's CPU (p50 over the live nodes, percent of a core) at or below which the
/// network counts as calm.
pub const CALM_CPU_PERCENT: f64 = 0.5;
/// The window each calm check measures, seconds.
const CALM_WINDOW_S: f64 = 3.0;

/// Seconds until the live nodes' CPU p50 over a [`CALM_WINDOW_S`] window is at most
/// [`CALM_CPU_PERCENT`]; `None` when it is not within `max_s`.
fn wait_calm(network: &Network, max_s: f64) -> Option<f64> {
    let started = Instant::now();
    loop {
        let pids = live_pids(network);
        if nodes_cpu_percent(&pids, CALM_WINDOW_S).p50 <= CALM_CPU_PERCENT {
            return Some(started.elapsed().as_secs_f64());
        }
        if started.elapsed().as_secs_f64() >= max_s {
            return None;
        }
    }
}

fn live_pids(network: &Network) -> Vec<u32> {
    network
        .live()
        .iter()
        .filter_map(|&i| network.nodes[i].pid())
        .collect()
}

/// The CPU of each of `pids` over `window_s` seconds, percent of a core.
fn nodes_cpu_percent(pids: &[u32], window_s: f64) -> Summary {
    let before: Vec<Option<u64>> = pids.iter().map(|&p| probe::cpu_ticks(p)).collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(window_s));
    let elapsed_s = started.elapsed().as_secs_f64();
    let cpu = pids.iter().zip(&before).filter_map(|(&pid, before)| {
        let spent = probe::cpu_ticks(pid)?.checked_sub((*before)?)?;
        Some(spent as f64 / TICKS_PER_S / elapsed_s * 100.0)
    });
    Summary::of(cpu.collect())
}

/// Each live node's CPU over `window_s` seconds, its RSS and its DHT gauges.
pub fn node_costs(network: &Network, window_s: f64) -> NodeCosts {
    let live = network.live();
    let pids = live_pids(network);
    let cpu_percent = nodes_cpu_percent(&pids, window_s);
    let rss = pids
        .iter()
        .filter_map(|&p| probe::rss_kib(p))
        .map(|k| k as f64 / 1024.0);
    let gauges = parallel_map(&live, |&i| {
        let text = metrics_text(network.nodes[i].admin)?;
        Some(
            [
                "ron_dht_peers_connected",
                "ron_dht_peers_alive",
                "ron_dht_routing_table_peers",
            ]
            .map(|name| probe::metric(&text, name).unwrap_or(0) as f64),
        )
    });
    let column = |at: usize| Summary::of(gauges.iter().flatten().map(|g| g[at]).collect());
    NodeCosts {
        cpu_percent,
        rss_mib: Summary::of(rss.collect()),
        connections: column(0),
        peers_alive: column(1),
        routing_peers: column(2),
    }
}

/// A node's `/metrics` text, or `None` when it does not answer.
fn metrics_text(admin: SocketAddr) -> Option<String> {
    let answer = exchange(admin, "GET", "/metrics", b"", ADMIN_TIMEOUT).ok()?;
    String::from_utf8(answer.body).ok()
}

/// Every live node's `ron_dht_publish_delay_seconds`, summed bucket by bucket.
fn publish_delays(network: &Network) -> Summary {
    bucket_summary(&summed_histogram(network, "ron_dht_publish_delay_seconds"))
}

/// Every live node's unlabelled metric `name`, summed (a node that does not answer
/// counts nothing).
fn summed_metric(network: &Network, name: &str) -> u64 {
    parallel_map(&network.live(), |&i| {
        metric_of(network.nodes[i].admin, name)
    })
    .into_iter()
    .flatten()
    .sum()
}

/// Every live node's histogram `family`, summed bucket by bucket: (upper bound in
/// seconds, cumulative count).
fn summed_histogram(network: &Network, family: &str) -> Vec<(f64, u64)> {
    let per_node = parallel_map(&network.live(), |&i| {
        let text = metrics_text(network.nodes[i].admin)?;
        Some(histogram_buckets(&text, family))
    });
    let mut summed: Vec<(f64, u64)> = Vec::new();
    for buckets in per_node.into_iter().flatten() {
        if summed.is_empty() {
            summed = buckets.iter().map(|(le, _)| (*le, 0)).collect();
        }
        for ((le, total), (node_le, count)) in summed.iter_mut().zip(&buckets) {
            if le == node_le {
                *total += count;
            }
        }
    }
    summed
}

/// What the nodes' histograms counted between two readings of
/// [`summed_histogram`] (`before` may be empty: nothing counted yet).
fn histogram_since(before: &[(f64, u64)], after: &[(f64, u64)]) -> Vec<(f64, u64)> {
    after
        .iter()
        .map(|(le, count)| {
            let earlier = before.iter().find(|(b, _)| b == le).map_or(0, |(_, c)| *c);
            (*le, count.saturating_sub(earlier))
        })
        .collect()
}

/// Puts `plan.objects` objects on random live nodes, [`WORKERS`] at a time, each handed
/// to `prober` as its upload is acknowledged; returns them and each upload's latency
/// (ms).
fn upload(
    network: &Network,
    plan: &Plan,
    rng: &mut Rng,
    prober: &Prober,
) -> Result<(Vec<Put>, Summary), String> {
    let live = network.live();
    let uploads: Vec<Upload> = (0..plan.objects)
        .map(|i| Upload::pick(plan, i, &live, rng))
        .collect();
    let objects: Vec<(usize, &Upload)> = uploads.iter().enumerate().collect();
    let uploaded = parallel_map(&objects, |&(object, upload)| {
        let bytes = object_bytes(upload.seed, upload.len);
        let node = &network.nodes[upload.node];
        let started = Instant::now();
        let answer = exchange(node.http, "PUT", "/o", &bytes, ADMIN_TIMEOUT)?;
        if answer.status != 201 && answer.status != 200 {
            return Err(format!("PUT to node {}: {}", node.index, answer.status));
        }
        let put = Put {
            addr: Address::of(&bytes),
            acked: Instant::now(),
            holders: vec![],
        };
        let reader = network.nodes[upload.reader].admin;
        prober.add(object, put.addr, put.acked, reader);
        Ok((put, started.elapsed().as_secs_f64() * 1e3))
    });
    let (puts, upload_ms): (Vec<Put>, Vec<f64>) = uploaded
        .into_iter()
        .collect::<Result<Vec<_>, String>>()?
        .into_iter()
        .unzip();
    Ok((puts, Summary::of(upload_ms)))
}

/// One upload: the object (its seed and length), the node it is put on and the other
/// node that resolves it.
struct Upload {
    seed: u64,
    len: usize,
    node: usize,
    reader: usize,
}

impl Upload {
    fn pick(plan: &Plan, object: usize, live: &[usize], rng: &mut Rng) -> Upload {
        let spread = plan.size_max.saturating_sub(plan.size_min) as u64 + 1;
        let len = plan.size_min + rng.below(spread) as usize;
        let at = rng.below(live.len() as u64) as usize;
        // Any other live node: an offset of 1..len from the uploader.
        let offset = 1 + rng.below(live.len().saturating_sub(1).max(1) as u64) as usize;
        Upload {
            seed: plan.seed.wrapping_add(object as u64),
            len,
            node: live[at],
            reader: live[(at + offset) % live.len()],
        }
    }
}

/// Keeps, for each object, the holders the phase's placements named last (the reads
/// pick nodes outside them).
fn remember_holders(puts: &mut [Put], mut copies: Copies) -> Copies {
    for (i, named) in copies.named.drain(..) {
        if !named.is_empty() {
            puts[i].holders = named;
        }
    }
    copies
}

/// Each object resolved once from a random live node: the latencies (ms) and how many
/// answers named no provider.
fn resolve_each(network: &Network, puts: &[Put], rng: &mut Rng) -> (Summary, usize) {
    let live = network.live();
    let asks: Vec<(usize, SocketAddr)> = (0..puts.len())
        .map(|i| {
            (
                i,
                network.nodes[live[rng.below(live.len() as u64) as usize]].admin,
            )
        })
        .collect();
    let answers = parallel_map(&asks, |&(i, admin)| {
        let path = format!("/resolve?hash={}", puts[i].addr);
        let asked = Instant::now();
        let answer = exchange(admin, "GET", &path, b"", ADMIN_TIMEOUT)
            .ok()?
            .json()?;
        let named = answer["providers"]
            .as_array()
            .is_some_and(|p| !p.is_empty());
        Some((asked.elapsed().as_secs_f64() * 1e3, named))
    });
    let empty = answers
        .iter()
        .filter(|a| !a.is_some_and(|(_, named)| named))
        .count();
    let latencies = answers.into_iter().flatten().map(|(ms, _)| ms).collect();
    (Summary::of(latencies), empty)
}

/// How one placement request saw an object.
enum Seen {
    Complete,
    Short { verified: usize },
    Failed,
}

/// Objects still short at the end of a watch whose placements are described.
const SHORT_DESCRIBED_MAX: usize = 5;

/// Rounds of `/admin/placement` (each object at a random live node) until every object
/// is complete — `replicas` verified copies in `min(replicas, zones)` zones — or
/// `wait_s` has passed. An object is timed from its `since`.
fn watch_copies(
    network: &Network,
    puts: &[Put],
    since: &[Instant],
    wait_s: f64,
    rng: &mut Rng,
) -> Copies {
    let started = Instant::now();
    let replicas = network.config.replicas;
    let zones_wanted = replicas.min(network.config.zones);
    let mut complete_s: Vec<Option<f64>> = vec![None; puts.len()];
    let mut copies = Copies::default();
    loop {
        let live = network.live();
        let pending: Vec<(usize, SocketAddr)> = (0..puts.len())
            .filter(|&i| complete_s[i].is_none())
            .map(|i| {
                (
                    i,
                    network.nodes[live[rng.below(live.len() as u64) as usize]].admin,
                )
            })
            .collect();
        let seen = parallel_map(&pending, |&(i, admin)| {
            placement(admin, &puts[i].addr, replicas, zones_wanted)
        });
        let mut without = 0;
        for (&(i, _), (seen, named)) in pending.iter().zip(seen) {
            copies.named.push((i, named));
            match seen {
                Seen::Complete => complete_s[i] = Some(since[i].elapsed().as_secs_f64()),
                Seen::Short { verified: 0 } => without += 1,
                Seen::Short { .. } => {}
                Seen::Failed => copies.errors += 1,
            }
        }
        copies.without_verified_copy_max = copies.without_verified_copy_max.max(without);
        let short = complete_s.iter().filter(|c| c.is_none()).count();
        copies
            .short_over_time
            .push((started.elapsed().as_secs_f64(), short));
        if short == 0 || started.elapsed().as_secs_f64() >= wait_s {
            copies.short_at_end = short;
            let stuck: Vec<usize> = (0..puts.len())
                .filter(|&i| complete_s[i].is_none())
                .collect();
            describe_short(network, puts, &stuck, rng);
            break;
        }
        std::thread::sleep(POLL_PAUSE);
    }
    copies.complete_s = Summary::of(complete_s.into_iter().flatten().collect());
    copies
}

/// Objects still short when the watch ends (the first few): what three random live
/// nodes' placements name for each — holder, zone, whether its copy verified — and
/// which providers the DHT names, live or killed, on stderr: so a run that ends short
/// says whether the nodes disagree, a holder fails, or the copies left are only ones no
/// placement names (read-through copies), or none.
fn describe_short(network: &Network, puts: &[Put], stuck: &[usize], rng: &mut Rng) {
    let live = network.live();
    for &i in stuck.iter().take(SHORT_DESCRIBED_MAX) {
        let admin = network.nodes[live[rng.below(live.len() as u64) as usize]].admin;
        let path = format!("/resolve?hash={}", puts[i].addr);
        let providers: Vec<String> = admin_list(admin, &path, "providers")
            .iter()
            .map(|p| {
                let oap = p["oap"].as_str().and_then(|o| o.parse::<SocketAddr>().ok());
                let node = oap.and_then(|oap| network.nodes.iter().find(|n| n.oap == oap));
                let state = match node {
                    Some(n) if n.is_live() => "live",
                    Some(_) => "killed",
                    None => "unknown",
                };
                format!("{}:{state}", p["oap"])
            })
            .collect();
        eprintln!(
            "short at the end: {} providers named at {admin}: {providers:?}",
            puts[i].addr
        );
        for _ in 0..3 {
            let admin = network.nodes[live[rng.below(live.len() as u64) as usize]].admin;
            let path = format!("/admin/placement?hash={}", puts[i].addr);
            let named: Vec<String> = admin_list(admin, &path, "placement")
                .iter()
                .map(|h| format!("{}@{}:{}", h["oap"], h["zone"], h["holds"]))
                .collect();
            eprintln!(
                "short at the end: {} asked at {admin}: {named:?}",
                puts[i].addr
            );
        }
    }
}

/// The array `field` of the JSON answer to `GET path` at `admin`; empty when the
/// request, the JSON or the field fails (the description is best effort).
fn admin_list(admin: SocketAddr, path: &str, field: &str) -> Vec<Value> {
    exchange(admin, "GET", path, b"", ADMIN_TIMEOUT)
        .ok()
        .and_then(|a| a.json())
        .and_then(|r| r[field].as_array().cloned())
        .unwrap_or_default()
}

/// One object's placement as `admin` sees it, and the OAP addresses it names.
fn placement(
    admin: SocketAddr,
    addr: &Address,
    replicas: usize,
    zones: usize,
) -> (Seen, Vec<SocketAddr>) {
    let path = format!("/admin/placement?hash={addr}");
    let Some(report) = exchange(admin, "GET", &path, b"", ADMIN_TIMEOUT)
        .ok()
        .filter(|a| a.status == 200)
        .and_then(|a| a.json())
    else {
        return (Seen::Failed, vec![]);
    };
    let holders = report["placement"].as_array().cloned().unwrap_or_default();
    let named = holders
        .iter()
        .filter_map(|h| h["oap"].as_str()?.parse().ok())
        .collect();
    let verified: Vec<&Value> = holders.iter().filter(|h| h["holds"] == true).collect();
    let in_zones: HashSet<&str> = verified.iter().filter_map(|h| h["zone"].as_str()).collect();
    let seen = match verified.len() >= replicas && in_zones.len() >= zones {
        true => Seen::Complete,
        false => Seen::Short {
            verified: verified.len(),
        },
    };
    (seen, named)
}

/// Reads `count` random objects through random live nodes their placement does not
/// name: each answer's latency (ms, whole body) and how many failed or did not verify.
fn read_through(network: &Network, puts: &[Put], count: usize, rng: &mut Rng) -> (Summary, usize) {
    let live = network.live();
    let picks: Vec<(usize, SocketAddr)> = (0..count.min(puts.len()))
        .filter_map(|_| {
            let put = &puts[rng.below(puts.len() as u64) as usize];
            let readers: Vec<usize> = live
                .iter()
                .copied()
                .filter(|&i| !put.holders.contains(&network.nodes[i].oap))
                .collect();
            let reader = *readers.get(rng.below(readers.len().max(1) as u64) as usize)?;
            let index = puts.iter().position(|p| p.addr == put.addr)?;
            Some((index, network.nodes[reader].http))
        })
        .collect();
    let reads = parallel_map(&picks, |&(i, http)| {
        let started = Instant::now();
        let answer = exchange(
            http,
            "GET",
            &format!("/o/{}", puts[i].addr),
            b"",
            ADMIN_TIMEOUT,
        )
        .ok()?;
        let whole = answer.status == 200 && Address::of(&answer.body) == puts[i].addr;
        whole.then(|| started.elapsed().as_secs_f64() * 1e3)
    });
    let failures = reads.iter().filter(|r| r.is_none()).count();
    (Summary::of(reads.into_iter().flatten().collect()), failures)
}

/// `percent` of the live nodes, never node 0 (the others bootstrap from it).
fn pick_victims(network: &Network, percent: usize, rng: &mut Rng) -> Vec<usize> {
    let mut candidates: Vec<usize> = network.live().into_iter().filter(|&i| i != 0).collect();
    let count = (network.nodes.len() * percent)
        .div_ceil(100)
        .min(candidates.len());
    let mut victims = Vec::with_capacity(count);
    for _ in 0..count {
        let at = rng.below(candidates.len() as u64) as usize;
        victims.push(candidates.swap_remove(at));
    }
    victims
}

/// `f` over `items` on [`WORKERS`] threads; results in the items' order.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..WORKERS.min(items.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let result = f(item);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.into_iter().flatten().collect()
}

/// A seeded xorshift64* generator: the same seed picks the same nodes and sizes.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_nodes_counted_between_two_readings_is_the_difference_by_bucket() {
        let before = [(0.01, 2), (0.05, 5), (f64::INFINITY, 6)];
        let after = [(0.01, 2), (0.05, 9), (f64::INFINITY, 12)];
        let since = histogram_since(&before, &after);
        assert_eq!(since, vec![(0.01, 0), (0.05, 4), (f64::INFINITY, 6)]);
        assert_eq!(bucket_summary(&since).p50, 0.05);
        assert_eq!(
            histogram_since(&[], &after),
            after.to_vec(),
            "nothing read before"
        );
    }

    #[test]
    fn a_summary_takes_nearest_rank_percentiles() {
        let s = Summary::of((1..=100).map(f64::from).collect());
        assert_eq!(
            (s.count, s.p50, s.p90, s.p99, s.max),
            (100, 51.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(Summary::of(vec![]), Summary::default());
        assert_eq!(Summary::of(vec![7.0]).p99, 7.0);
    }

    #[test]
    fn parallel_map_keeps_the_items_order() {
        let items: Vec<u32> = (0..100).collect();
        assert_eq!(
            parallel_map(&items, |i| i * 2),
            (0..100).map(|i| i * 2).collect::<Vec<_>>()
        );
    }

    #[test]
    fn an_upload_is_read_back_by_another_node() {
        let plan = Plan {
            objects: 1,
            size_min: 10,
            size_max: 20,
            seed: 1,
            form_max_s: 0.0,
            settle_s: 0.0,
            quiet_s: 0.0,
            calm_max_s: 0.0,
            copies_wait_s: 0.0,
            reads: 0,
            kill_percent: 0,
            join_percent: 0,
        };
        let mut rng = Rng(3);
        let live = [2, 5, 9];
        for i in 0..200 {
            let upload = Upload::pick(&plan, i, &live, &mut rng);
            assert_ne!(upload.node, upload.reader);
            assert!(live.contains(&upload.node) && live.contains(&upload.reader));
            assert!((10..=20).contains(&upload.len));
        }
    }
}
