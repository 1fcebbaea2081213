//! # ron-control — the slow-path control thread
//!
//! ## What it owns
//! One OS thread (not a shard) that
//! - serves admin HTTP on its own port: `/healthz` (liveness), `/readyz` (a JSON report,
//!   200 only when every shard accepts and none is saturated), `/metrics` (Prometheus
//!   text), `/version`, `/admin/stats`;
//! - holds the reloadable [`quota::Policy`] (tokens, tenants, limits): on SIGHUP or when
//!   the configuration file changes it asks the engine to load it again, and sends a
//!   good result to every shard, or logs why it kept the old one;
//! - splits each tenant's quota across the shards by demand ([`quota::shares`]);
//! - merges the shards' latency histograms and quota counters for `/metrics`.
//!
//! ## Invariants
//! - Nothing on a shard waits on this thread: it reads the shards' relaxed atomic
//!   counters ([`ron_shards::ShardMetrics`]) and talks to them only through bounded
//!   mailboxes that both sides poll ([`link`]).
//! - Its own work is bounded: one admin connection at a time, a 2 s read timeout, an
//!   8 KiB head limit, answers always closed; a period's tenant reports are capped.

pub mod latency;
pub mod link;
pub mod quota;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use ron_codec::http::head::{parse_request_head, HeadParse, Method};
use ron_shards::metrics::{Op, Protocol, Rejection, COUNTED_STATUSES};
use ron_shards::{MetricsSnapshot, ShardMetrics};

use latency::{LatencySet, EXPORTED_BUCKETS_US};
use link::{ControlLink, ShardReport, ToShard};
use quota::{Exhausted, Policy, QuotaKey};

const ADMIN_HEAD_BYTES_MAX: usize = 8 * 1024;
/// How often the configuration file's modification time is looked at.
const WATCH_PERIOD_MS: u64 = 1_000;

/// Loads the reloadable configuration again: the new policy and, for the log, keys that
/// changed but only take effect at a restart.
pub type LoadPolicy = Box<dyn Fn() -> Result<(Policy, Vec<String>), String> + Send>;

/// How the policy is reloaded.
pub struct Reloader {
    /// The configuration file, watched for changes (None: SIGHUP only).
    pub watch: Option<PathBuf>,
    pub load: LoadPolicy,
    /// Set by the SIGHUP handler.
    pub hangup: Arc<AtomicBool>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("watch", &self.watch)
            .finish_non_exhaustive()
    }
}

/// What the control thread reads and owns.
#[derive(Debug)]
pub struct ControlState {
    pub shards: Vec<Arc<ShardMetrics>>,
    pub version: &'static str,
    pub stop: Arc<AtomicBool>,
    /// When set, every endpoint but the probes (`/healthz`, `/readyz`) needs
    /// `Authorization: Bearer <admin_token>`.
    pub admin_token: Option<String>,
    pub link: ControlLink,
    /// The policy the shards started with.
    pub policy: Policy,
    pub reloader: Option<Reloader>,
}

/// The control thread's view of the node beyond the shards' atomic counters.
#[derive(Debug)]
struct View {
    policy: Arc<Policy>,
    reloads_ok: u64,
    reloads_failed: u64,
    /// The latest report of each shard.
    reports: Vec<ShardReport>,
    /// The latest latency copy of each shard.
    latency: Vec<LatencySet>,
}

/// Binds the admin listener and starts the control thread.
pub fn spawn(
    addr: SocketAddr,
    state: ControlState,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let handle = std::thread::Builder::new()
        .name("ron-control".into())
        .spawn(move || run(listener, state))?;
    Ok((local, handle))
}

fn run(listener: TcpListener, state: ControlState) {
    let shards = state.link.shard_count();
    let mut view = View {
        policy: Arc::new(state.policy.clone()),
        reloads_ok: 0,
        reloads_failed: 0,
        reports: (0..shards)
            .map(|shard| ShardReport {
                shard,
                ..ShardReport::default()
            })
            .collect(),
        latency: vec![LatencySet::default(); shards],
    };
    let mut watched = state
        .reloader
        .as_ref()
        .and_then(|r| modified(r.watch.as_ref()?));
    let mut next_rebalance = Instant::now();
    let mut next_watch = Instant::now();
    while !state.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next_rebalance {
            next_rebalance = now + Duration::from_millis(quota::REBALANCE_PERIOD_MS);
            take_reports(&state, &mut view);
            rebalance(&state.link, &view.reports);
        }
        if let Some(reloader) = &state.reloader {
            let mut due = reloader.hangup.swap(false, Ordering::Relaxed);
            if now >= next_watch {
                next_watch = now + Duration::from_millis(WATCH_PERIOD_MS);
                let seen = reloader.watch.as_ref().and_then(modified);
                if seen != watched {
                    watched = seen;
                    due = true;
                }
            }
            if due {
                // One reload per change, whether a signal or the watcher saw it first.
                watched = reloader.watch.as_ref().and_then(modified);
                reload(reloader, &state.link, &mut view);
            }
        }
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = answer(stream, &state, &view);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Loads the policy again; a good one goes to every shard, a bad one is logged.
fn reload(reloader: &Reloader, link: &ControlLink, view: &mut View) {
    match (reloader.load)() {
        Ok((mut policy, restart_keys)) => {
            if !restart_keys.is_empty() {
                tracing::warn!(
                    keys = %restart_keys.join(", "),
                    "changed keys take effect only at a restart"
                );
            }
            policy.version = view.policy.version;
            if policy == *view.policy {
                tracing::info!(version = policy.version, "configuration unchanged");
                return;
            }
            policy.version += 1;
            let policy = Arc::new(policy);
            for shard in 0..link.shard_count() {
                link.send(shard, ToShard::Policy(Arc::clone(&policy)));
            }
            view.reloads_ok += 1;
            tracing::info!(
                version = policy.version,
                tenants = policy.tenants.len(),
                "configuration reloaded (tokens, tenants and quotas)"
            );
            view.policy = policy;
        }
        Err(reason) => {
            view.reloads_failed += 1;
            tracing::error!(
                version = view.policy.version,
                reason = %reason,
                "configuration reload failed; keeping the running configuration"
            );
        }
    }
}

fn take_reports(state: &ControlState, view: &mut View) {
    for mut report in state.link.drain() {
        let shard = report.shard;
        if shard >= view.reports.len() {
            continue;
        }
        if let Some(latency) = report.latency.take() {
            view.latency[shard] = *latency;
        }
        if report.policy_version < view.policy.version {
            // The shard missed a reload (its mailbox was full): send it again.
            state
                .link
                .send(shard, ToShard::Policy(Arc::clone(&view.policy)));
        }
        view.reports[shard] = report;
    }
}

/// Gives each shard its share of every tenant that asked anything of any shard.
fn rebalance(link: &ControlLink, reports: &[ShardReport]) {
    let shards = reports.len();
    if shards < 2 {
        return;
    }
    let mut demand: HashMap<QuotaKey, Vec<(f64, f64)>> = HashMap::new();
    for report in reports {
        for d in &report.demand {
            demand
                .entry(d.key)
                .or_insert_with(|| vec![(0.0, 0.0); shards])[report.shard] = (d.requests, d.bytes);
        }
    }
    let mut per_shard: Vec<Vec<(QuotaKey, f64)>> = vec![Vec::new(); shards];
    for (key, by_shard) in demand {
        for (shard, share) in quota::shares(&by_shard).into_iter().enumerate() {
            per_shard[shard].push((key, share));
        }
    }
    for (shard, shares) in per_shard.into_iter().enumerate() {
        link.send(shard, ToShard::Shares(shares));
    }
}

fn answer(mut stream: TcpStream, state: &ControlState, view: &View) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = vec![0u8; ADMIN_HEAD_BYTES_MAX];
    let mut filled = 0;
    let (method, path, authorized) = loop {
        let n = stream.read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        match parse_request_head(&buf[..filled], ADMIN_HEAD_BYTES_MAX) {
            Ok(HeadParse::Complete(head)) => {
                let authorized = match &state.admin_token {
                    None => true,
                    Some(token) => head
                        .authorization
                        .and_then(|v| v.strip_prefix(b"Bearer "))
                        .is_some_and(|given| quota::constant_time_eq(given, token.as_bytes())),
                };
                break (head.method, head.path().to_owned(), authorized);
            }
            Ok(HeadParse::Partial) => continue,
            Err(e) => return respond(&mut stream, 400, "text/plain", e.to_string().as_bytes()),
        }
    };
    if !matches!(method, Method::Get | Method::Head) {
        return respond(
            &mut stream,
            405,
            "text/plain",
            b"admin endpoints are GET only\n",
        );
    }
    let probe = matches!(path.as_str(), "/healthz" | "/readyz");
    if !authorized && !probe {
        return respond(
            &mut stream,
            401,
            "text/plain",
            b"admin endpoints need Authorization: Bearer <admin token>\n",
        );
    }
    let snapshots: Vec<MetricsSnapshot> = state.shards.iter().map(|m| m.snapshot()).collect();
    match path.as_str() {
        "/healthz" => respond(&mut stream, 200, "text/plain", b"ok\n"),
        "/readyz" => {
            let (ready, body) = readiness(&snapshots);
            respond(
                &mut stream,
                if ready { 200 } else { 503 },
                "application/json",
                body.as_bytes(),
            )
        }
        "/metrics" => respond(
            &mut stream,
            200,
            "text/plain; version=0.0.4",
            render_metrics(&snapshots, &Extra::from_view(view)).as_bytes(),
        ),
        "/admin/stats" => respond(
            &mut stream,
            200,
            "application/json",
            stats(&snapshots, &view.reports).as_bytes(),
        ),
        "/version" => {
            let body = serde_json::json!({ "name": "ron", "version": state.version }).to_string();
            respond(&mut stream, 200, "application/json", body.as_bytes())
        }
        _ => respond(&mut stream, 404, "text/plain", b"not found\n"),
    }
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        ron_codec::http::response::reason_phrase(status),
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)
}

/// The /admin/stats report: what each shard holds and serves.
fn stats(shards: &[MetricsSnapshot], reports: &[ShardReport]) -> String {
    let per_shard: Vec<_> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let report = reports.get(i);
            serde_json::json!({
                "shard": i,
                "objects": s.objects_stored,
                "bytes": s.bytes_stored,
                "cache_bytes": s.cache_bytes,
                "cache_entries": s.cache_entries,
                "connections": s.connections_open,
                "inflight": s.inflight,
                "requests": s.requests_total(),
                "reactor_stalls": s.reactor_stalls,
                "quota_tenants_tracked": report.map_or(0, |r| r.tenants_tracked),
                "policy_version": report.map_or(0, |r| r.policy_version),
            })
        })
        .collect();
    serde_json::json!({
        "objects": shards.iter().map(|s| s.objects_stored).sum::<u64>(),
        "bytes": shards.iter().map(|s| s.bytes_stored).sum::<u64>(),
        "shards": per_shard,
    })
    .to_string()
}

/// The /readyz verdict and report: ready when every shard accepts and none has its
/// in-flight gate full.
pub fn readiness(shards: &[MetricsSnapshot]) -> (bool, String) {
    let all_up = shards.iter().all(|s| s.ready);
    let saturated = shards.iter().any(|s| s.saturated());
    let ready = all_up && !saturated && !shards.is_empty();
    let report = serde_json::json!({
        "ready": ready,
        "control": true,
        "overloaded": saturated,
        "shards": shards.iter().enumerate().map(|(i, s)| serde_json::json!({
            "shard": i, "ready": s.ready, "overloaded": s.saturated(),
            "inflight": s.inflight, "inflight_max": s.inflight_max,
            "connections": s.connections_open,
        })).collect::<Vec<_>>(),
    });
    (ready, report.to_string())
}

/// What `/metrics` shows beyond the shards' counters.
#[derive(Debug, Default)]
pub struct Extra {
    pub latency: LatencySet,
    /// (tenant label, bucket, refusals) summed over shards.
    pub quota_rejections: Vec<(String, Exhausted, u64)>,
    pub quota_tenants_tracked: u64,
    pub config_version: u64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
}

impl Extra {
    fn from_view(view: &View) -> Extra {
        let mut latency = LatencySet::default();
        for set in &view.latency {
            latency.merge(set);
        }
        let mut rejections: Vec<(String, Exhausted, u64)> = Vec::new();
        for report in &view.reports {
            for (label, kind, n) in &report.quota_rejections {
                match rejections
                    .iter_mut()
                    .find(|(l, k, _)| l == label && k == kind)
                {
                    Some(entry) => entry.2 += n,
                    None => rejections.push((label.clone(), *kind, *n)),
                }
            }
        }
        Extra {
            latency,
            quota_rejections: rejections,
            quota_tenants_tracked: view.reports.iter().map(|r| r.tenants_tracked as u64).sum(),
            config_version: view.policy.version,
            reloads_ok: view.reloads_ok,
            reloads_failed: view.reloads_failed,
        }
    }
}

/// Reads one value out of a shard snapshot.
type Reader = fn(&MetricsSnapshot) -> u64;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
}

fn seconds(us: u64) -> f64 {
    us as f64 / 1e6
}

/// Prometheus text: counters summed over shards, per-shard series where useful. Series
/// by protocol/op/status appear once they are non-zero.
pub fn render_metrics(shards: &[MetricsSnapshot], extra: &Extra) -> String {
    let mut out = String::with_capacity(8192);
    let sum = |f: fn(&MetricsSnapshot) -> u64| shards.iter().map(f).sum::<u64>();
    render_requests(&mut out, shards);
    render_latency(&mut out, &extra.latency);
    family(
        &mut out,
        "ron_rejections_total",
        "counter",
        "Requests refused, by reason (from their status: 429 over_quota, 503 overloaded, 401 unauthorized, 413/431 too_large, 400/405/411 bad_request, 408 timeout).",
    );
    for reason in Rejection::ALL {
        let n: u64 = shards.iter().map(|s| s.rejections[reason as usize]).sum();
        out.push_str(&format!(
            "ron_rejections_total{{reason=\"{}\"}} {n}\n",
            reason.as_str()
        ));
    }
    family(
        &mut out,
        "ron_quota_rejections_total",
        "counter",
        "Requests refused 429 by a tenant's token bucket; tenant is a configured name or \"other\".",
    );
    for (label, kind, n) in &extra.quota_rejections {
        out.push_str(&format!(
            "ron_quota_rejections_total{{tenant=\"{}\",limit=\"{}\"}} {n}\n",
            escape_label(label),
            kind.as_str()
        ));
    }
    let counters: [(&str, &str, Reader); 11] = [
        (
            "ron_bytes_received_total",
            "Bytes read from clients (heads, frames and bodies).",
            |s| s.bytes_in,
        ),
        ("ron_bytes_sent_total", "Bytes written to clients.", |s| {
            s.bytes_out
        }),
        (
            "ron_verify_failures_total",
            "64 KiB groups that failed verification (never sent).",
            |s| s.verify_failures,
        ),
        ("ron_cache_hits_total", "Verified-group cache hits.", |s| {
            s.cache_hits
        }),
        (
            "ron_cache_misses_total",
            "Verified-group cache misses.",
            |s| s.cache_misses,
        ),
        ("ron_connections_total", "Connections accepted.", |s| {
            s.connections_total
        }),
        (
            "ron_overload_rejections_total",
            "Requests answered 503 overloaded by the in-flight gate.",
            |s| s.overload_rejections,
        ),
        (
            "ron_tls_handshake_failures_total",
            "TLS handshakes that failed or timed out.",
            |s| s.tls_handshake_failures,
        ),
        (
            "ron_mesh_requests_total",
            "Requests forwarded to an owner shard.",
            |s| s.mesh_requests,
        ),
        (
            "ron_objects_created_total",
            "Objects made durable and visible.",
            |s| s.objects_created,
        ),
        (
            "ron_inflight_requests",
            "Requests being answered now.",
            |s| s.inflight,
        ),
    ];
    for (name, help, get) in counters {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        family(&mut out, name, kind, help);
        out.push_str(&format!("{name} {}\n", sum(get)));
    }
    let gauges: [(&str, &str, Reader); 5] = [
        ("ron_objects_stored", "Objects in the node's stores.", |s| {
            s.objects_stored
        }),
        (
            "ron_bytes_stored",
            "Bytes of objects in the node's stores.",
            |s| s.bytes_stored,
        ),
        (
            "ron_cache_bytes",
            "Bytes held by the verified-group caches.",
            |s| s.cache_bytes,
        ),
        (
            "ron_cache_entries",
            "Groups held by the verified-group caches.",
            |s| s.cache_entries,
        ),
        ("ron_connections_open", "Open client connections.", |s| {
            s.connections_open
        }),
    ];
    for (name, help, get) in gauges {
        family(&mut out, name, "gauge", help);
        out.push_str(&format!("{name} {}\n", sum(get)));
    }
    let per_shard: [(&str, &str, &str, Reader); 5] = [
        ("ron_shard_requests_total", "counter", "Requests answered by each shard.", |s| s.requests_total()),
        ("ron_shard_ready", "gauge", "1 when the shard accepts connections.", |s| u64::from(s.ready)),
        ("ron_shard_saturated", "gauge", "1 while the shard's in-flight gate is full.", |s| u64::from(s.saturated())),
        ("ron_reactor_stalls_total", "counter", "Times the shard's 10 ms heartbeat woke more than 20 ms late (a task held the reactor).", |s| s.reactor_stalls),
        ("ron_reactor_stall_us_total", "counter", "Total lateness of those stalled heartbeats, microseconds.", |s| s.reactor_stall_us),
    ];
    for (name, kind, help, get) in per_shard {
        family(&mut out, name, kind, help);
        for (i, s) in shards.iter().enumerate() {
            out.push_str(&format!("{name}{{shard=\"{i}\"}} {}\n", get(s)));
        }
    }
    let control: [(&str, &str, &str, u64); 3] = [
        (
            "ron_quota_tenants_tracked",
            "gauge",
            "Tenants with token buckets on the shards (summed over shards).",
            extra.quota_tenants_tracked,
        ),
        (
            "ron_config_version",
            "gauge",
            "Version of the running tokens/tenants/quotas (1 at start, +1 per good reload).",
            extra.config_version,
        ),
        (
            "ron_config_reload_failures_total",
            "counter",
            "Reloads refused (bad file); the running configuration was kept.",
            extra.reloads_failed,
        ),
    ];
    for (name, kind, help, value) in control {
        family(&mut out, name, kind, help);
        out.push_str(&format!("{name} {value}\n"));
    }
    family(
        &mut out,
        "ron_config_reloads_total",
        "counter",
        "Reloads applied.",
    );
    out.push_str(&format!("ron_config_reloads_total {}\n", extra.reloads_ok));
    out
}

fn render_requests(out: &mut String, shards: &[MetricsSnapshot]) {
    family(
        out,
        "ron_requests_total",
        "counter",
        "Requests answered, by protocol, op and status (status 0: any other status).",
    );
    for protocol in Protocol::ALL {
        for op in Op::ALL {
            for &status in &COUNTED_STATUSES {
                let n: u64 = shards
                    .iter()
                    .map(|s| s.requests(protocol, op, status))
                    .sum();
                if n > 0 {
                    out.push_str(&format!(
                        "ron_requests_total{{protocol=\"{}\",op=\"{}\",status=\"{status}\"}} {n}\n",
                        protocol.as_str(),
                        op.as_str()
                    ));
                }
            }
        }
    }
}

fn render_latency(out: &mut String, latency: &LatencySet) {
    family(
        out,
        "ron_request_duration_seconds",
        "histogram",
        "Time from a complete request (HTTP head, OAP START) to its last byte queued, by protocol and op; per-shard HDR histograms merged at scrape (±1 %, up to 1 s stale).",
    );
    for protocol in Protocol::ALL {
        for op in Op::ALL {
            let count = latency.count(protocol, op);
            if count == 0 {
                continue;
            }
            let labels = format!("protocol=\"{}\",op=\"{}\"", protocol.as_str(), op.as_str());
            for bound in EXPORTED_BUCKETS_US {
                out.push_str(&format!(
                    "ron_request_duration_seconds_bucket{{{labels},le=\"{}\"}} {}\n",
                    seconds(bound),
                    latency.count_at_or_below(protocol, op, bound)
                ));
            }
            out.push_str(&format!(
                "ron_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}\n\
                 ron_request_duration_seconds_sum{{{labels}}} {}\n\
                 ron_request_duration_seconds_count{{{labels}}} {count}\n",
                seconds(latency.sum_us(protocol, op)),
            ));
        }
    }
}

/// Label values are configured tenant names; escape what the text format requires.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_sum_shards_and_register_each_family_once() {
        let a = ShardMetrics::default();
        let b = ShardMetrics::default();
        a.record_request(Protocol::Http, Op::Get, 200);
        b.record_request(Protocol::Http, Op::Get, 200);
        b.record_request(Protocol::Oap, Op::Put, 429);
        ShardMetrics::add(&a.verify_failures, 2);
        let mut extra = Extra::default();
        extra.latency.record(Protocol::Http, Op::Get, 120);
        extra.latency.record(Protocol::Http, Op::Get, 3_000_000);
        extra
            .quota_rejections
            .push(("a\"b".into(), Exhausted::Requests, 1));
        let text = render_metrics(&[a.snapshot(), b.snapshot()], &extra);
        for line in [
            "ron_requests_total{protocol=\"http\",op=\"get\",status=\"200\"} 2\n",
            "ron_requests_total{protocol=\"oap\",op=\"put\",status=\"429\"} 1\n",
            "ron_rejections_total{reason=\"over_quota\"} 1\n",
            "ron_quota_rejections_total{tenant=\"a\\\"b\",limit=\"requests\"} 1\n",
            "ron_verify_failures_total 2\n",
            "ron_request_duration_seconds_bucket{protocol=\"http\",op=\"get\",le=\"+Inf\"} 2\n",
            "ron_request_duration_seconds_bucket{protocol=\"http\",op=\"get\",le=\"0.00025\"} 1\n",
            "ron_request_duration_seconds_bucket{protocol=\"http\",op=\"get\",le=\"2.5\"} 1\n",
            "ron_request_duration_seconds_sum{protocol=\"http\",op=\"get\"} 3.00012\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        let mut seen = std::collections::HashSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            assert!(
                seen.insert(line.to_string()),
                "family registered twice: {line}"
            );
        }
    }

    #[test]
    fn ready_only_when_every_shard_is_up_and_none_saturated() {
        let a = ShardMetrics::default();
        let b = ShardMetrics::default();
        for m in [&a, &b] {
            m.inflight_max.store(2, Ordering::Relaxed);
        }
        a.ready.store(true, Ordering::Relaxed);
        assert!(!readiness(&[a.snapshot(), b.snapshot()]).0);
        b.ready.store(true, Ordering::Relaxed);
        assert!(readiness(&[a.snapshot(), b.snapshot()]).0);
        b.inflight.store(2, Ordering::Relaxed);
        let (ready, body) = readiness(&[a.snapshot(), b.snapshot()]);
        assert!(!ready);
        assert!(body.contains("\"overloaded\":true"), "{body}");
    }
}
