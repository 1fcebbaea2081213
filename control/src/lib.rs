//! # ron-control — the slow-path control thread
//!
//! ## What it owns
//! One OS thread (not a shard) serving admin HTTP on its own port:
//! - `/healthz`: 200 while the process runs (liveness);
//! - `/readyz`: a JSON report, 200 only when every shard accepts and none is
//!   overloaded, 503 otherwise;
//! - `/metrics`: Prometheus text, one registration per family, shard counters summed at
//!   scrape time (plus per-shard request counts and readiness, labelled `shard`);
//! - `/version`.
//!
//! Quotas, hot reload, the DHT and peer fetch land here later.
//!
//! ## Invariants
//! - Nothing on a shard waits on this thread: it only reads the shards' relaxed atomic
//!   counters ([`ron_shards::ShardMetrics`]).
//! - Its own work is bounded: one connection at a time, a 2 s read timeout, an 8 KiB
//!   head limit, answers always closed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ron_codec::http::head::{parse_request_head, HeadParse, Method};
use ron_shards::metrics::{COUNTED_STATUSES, LATENCY_BUCKETS_US};
use ron_shards::{MetricsSnapshot, ShardMetrics};

const ADMIN_HEAD_BYTES_MAX: usize = 8 * 1024;

/// What the control thread reads.
#[derive(Debug)]
pub struct ControlState {
    pub shards: Vec<Arc<ShardMetrics>>,
    pub version: &'static str,
    pub stop: Arc<AtomicBool>,
    /// When set, every endpoint but the probes (`/healthz`, `/readyz`) needs
    /// `Authorization: Bearer <admin_token>`.
    pub admin_token: Option<String>,
}

/// Binds the admin listener and starts the control thread.
pub fn spawn(
    addr: SocketAddr,
    state: Arc<ControlState>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let handle = std::thread::Builder::new()
        .name("ron-control".into())
        .spawn(move || serve(listener, &state))?;
    Ok((local, handle))
}

fn serve(listener: TcpListener, state: &ControlState) {
    while !state.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = answer(stream, state);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn answer(mut stream: TcpStream, state: &ControlState) -> std::io::Result<()> {
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
                        .is_some_and(|given| constant_time_eq(given, token.as_bytes())),
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
            render_metrics(&snapshots).as_bytes(),
        ),
        "/admin/stats" => respond(
            &mut stream,
            200,
            "application/json",
            stats(&snapshots).as_bytes(),
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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The /admin/stats report: what each shard holds and serves.
pub fn stats(shards: &[MetricsSnapshot]) -> String {
    let per_shard: Vec<_> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| {
            serde_json::json!({
                "shard": i,
                "objects": s.objects_stored,
                "bytes": s.bytes_stored,
                "cache_bytes": s.cache_bytes,
                "cache_entries": s.cache_entries,
                "connections": s.connections_open,
                "inflight": s.inflight,
                "requests": s.requests_by_status.iter().map(|(_, n)| n).sum::<u64>(),
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

/// The /readyz verdict and report.
pub fn readiness(shards: &[MetricsSnapshot]) -> (bool, String) {
    let all_up = shards.iter().all(|s| s.ready);
    let overloaded = shards.iter().any(|s| s.overloaded);
    let ready = all_up && !overloaded && !shards.is_empty();
    let report = serde_json::json!({
        "ready": ready,
        "control": true,
        "overloaded": overloaded,
        "shards": shards.iter().enumerate().map(|(i, s)| serde_json::json!({
            "shard": i, "ready": s.ready, "overloaded": s.overloaded,
            "inflight": s.inflight, "connections": s.connections_open,
        })).collect::<Vec<_>>(),
    });
    (ready, report.to_string())
}

/// Reads one value out of a shard snapshot.
type Reader = fn(&MetricsSnapshot) -> u64;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
}

/// Prometheus text: counters summed over shards, per-shard series where useful.
pub fn render_metrics(shards: &[MetricsSnapshot]) -> String {
    let mut out = String::with_capacity(4096);
    let sum = |f: fn(&MetricsSnapshot) -> u64| shards.iter().map(f).sum::<u64>();

    family(
        &mut out,
        "ron_http_requests_total",
        "counter",
        "HTTP requests answered, by status (0 = other).",
    );
    for (i, &status) in COUNTED_STATUSES.iter().enumerate() {
        let n: u64 = shards.iter().map(|s| s.requests_by_status[i].1).sum();
        out.push_str(&format!(
            "ron_http_requests_total{{status=\"{status}\"}} {n}\n"
        ));
    }
    family(
        &mut out,
        "ron_shard_requests_total",
        "counter",
        "HTTP requests answered by each shard.",
    );
    for (i, s) in shards.iter().enumerate() {
        let n: u64 = s.requests_by_status.iter().map(|(_, n)| n).sum();
        out.push_str(&format!("ron_shard_requests_total{{shard=\"{i}\"}} {n}\n"));
    }
    family(
        &mut out,
        "ron_http_request_duration_seconds",
        "histogram",
        "Time from a complete request head to the last byte of the answer.",
    );
    let mut cumulative = 0u64;
    for (i, &bound) in LATENCY_BUCKETS_US.iter().enumerate() {
        cumulative += shards.iter().map(|s| s.latency_buckets[i]).sum::<u64>();
        let le = if bound == u64::MAX {
            "+Inf".to_string()
        } else {
            format!("{}", bound as f64 / 1e6)
        };
        out.push_str(&format!(
            "ron_http_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}\n"
        ));
    }
    out.push_str(&format!(
        "ron_http_request_duration_seconds_sum {}\nron_http_request_duration_seconds_count {cumulative}\n",
        sum(|s| s.latency_sum_us) as f64 / 1e6
    ));
    let counters: [(&str, &str, Reader); 11] = [
        (
            "ron_bytes_received_total",
            "Bytes read from clients (heads and bodies).",
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
            "Requests answered 503 overloaded.",
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
    let gauges: [(&str, &str, Reader); 4] = [
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
    ];
    for (name, help, get) in gauges {
        family(&mut out, name, "gauge", help);
        out.push_str(&format!("{name} {}\n", sum(get)));
    }
    family(
        &mut out,
        "ron_connections_open",
        "gauge",
        "Open client connections.",
    );
    out.push_str(&format!(
        "ron_connections_open {}\n",
        sum(|s| s.connections_open)
    ));
    family(
        &mut out,
        "ron_shard_ready",
        "gauge",
        "1 when the shard accepts connections.",
    );
    for (i, s) in shards.iter().enumerate() {
        out.push_str(&format!(
            "ron_shard_ready{{shard=\"{i}\"}} {}\n",
            u8::from(s.ready)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_sum_shards_and_register_each_family_once() {
        let a = ShardMetrics::default();
        let b = ShardMetrics::default();
        a.record_request(200, 120);
        b.record_request(200, 3_000_000);
        b.record_request(404, 10);
        ShardMetrics::add(&a.verify_failures, 2);
        let text = render_metrics(&[a.snapshot(), b.snapshot()]);
        assert!(text.contains("ron_http_requests_total{status=\"200\"} 2\n"));
        assert!(text.contains("ron_http_requests_total{status=\"404\"} 1\n"));
        assert!(text.contains("ron_verify_failures_total 2\n"));
        assert!(text.contains("ron_http_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("ron_http_request_duration_seconds_bucket{le=\"0.00005\"} 1\n"));
        let mut seen = std::collections::HashSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            assert!(
                seen.insert(line.to_string()),
                "family registered twice: {line}"
            );
        }
    }

    #[test]
    fn ready_only_when_every_shard_is_up_and_none_overloaded() {
        let a = ShardMetrics::default();
        let b = ShardMetrics::default();
        a.ready.store(true, Ordering::Relaxed);
        assert!(!readiness(&[a.snapshot(), b.snapshot()]).0);
        b.ready.store(true, Ordering::Relaxed);
        assert!(readiness(&[a.snapshot(), b.snapshot()]).0);
        b.overloaded.store(true, Ordering::Relaxed);
        let (ready, body) = readiness(&[a.snapshot(), b.snapshot()]);
        assert!(!ready);
        assert!(body.contains("\"overloaded\":true"), "{body}");
    }
}
