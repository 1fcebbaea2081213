//! What an admin request asks for, and its answer. Routing reads counters and the
//! control thread's latest copy, and sends the operator's storage requests to the
//! shards' inboxes; the check of one object waits (bounded) for the owner's report.
//! It does no socket or disk I/O itself: `/admin/placement` and `/admin/replicate` have
//! the owner shard audit holders (the node's one audit, `ReplicationRoutes::audit`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{RecvTimeoutError, SyncSender};
use std::time::Duration;

use ron_codec::http::head::{bearer_token, Method, RequestHead};
use ron_codec::Address;
use ron_link::dht::{
    AuditError, AuditOutcome, DhtClient, Provider, ReplicationRoutes, ResolveError,
    RESOLVE_LIMIT_MAX,
};
use ron_link::link::{ObjectCheckReport, RemovalReport, ToShard};
use ron_link::policy::constant_time_eq;
use serde_json::json;

use super::{Answers, ADMIN_REMOVE_WAIT_MS, ADMIN_REPAIR_WAIT_MS, ADMIN_WAITING_MAX};

/// Providers a resolve returns unless `limit` says otherwise.
pub const RESOLVE_LIMIT_DEFAULT: usize = 16;
/// The longest a resolve waits for the DHT (lookup and greetings of the providers).
pub const RESOLVE_DEADLINE_MS: u64 = 5_000;
/// The longest `/admin/replicate` waits for the holders it asks to take a copy.
pub const REPLICATE_WAIT_MS: u64 = 60_000;
/// Longest wait for the owner shard's audits of an object's holders (made at once, each
/// read bounded by the node's `fetch_timeout_ms`).
pub const AUDIT_WAIT_MS: u64 = 30_000;
use crate::view::sample;
use crate::{prometheus, reports};

/// A parsed admin request: what routing needs, copied out of the head buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Request {
    pub(super) method: Method,
    path: String,
    /// The query string (after `?`), empty if none.
    query: String,
    authorization: Option<Vec<u8>>,
    /// `Host`, if sent.
    host: Option<Vec<u8>>,
    /// Made by a browser for a web page: an `Origin`, or a `Sec-Fetch-Site` other than
    /// `none` (what the user typed in the address bar).
    from_a_page: bool,
}

impl Request {
    pub(super) fn of(head: &RequestHead<'_>) -> Request {
        Request {
            method: head.method,
            path: head.path().to_owned(),
            query: head
                .target
                .split_once('?')
                .map_or(String::new(), |(_, q)| q.to_owned()),
            authorization: head.authorization.map(<[u8]>::to_vec),
            host: head.host.map(<[u8]>::to_vec),
            from_a_page: head.origin.is_some()
                || head
                    .sec_fetch_site
                    .is_some_and(|site| !site.eq_ignore_ascii_case(b"none")),
        }
    }
}

/// Why a request to an admin port without an admin token is refused, if it is: such a
/// port listens on loopback, and what reaches it there without a credential could be a
/// browser on this host driven by a web page — a cross-site form POST to
/// `/admin/remove/…`, or a page whose DNS name was rebound to 127.0.0.1 reading
/// `/metrics`. So it answers only requests no page made, for a loopback `Host`.
fn tokenless_refusal(request: &Request) -> Option<&'static str> {
    if request.from_a_page {
        return Some("this admin port has no admin_token: it answers no request a web page made (Origin, Sec-Fetch-Site); set admin_token to use it from a browser\n");
    }
    match request.host.as_deref() {
        Some(host) if !is_loopback_host(host) => Some("this admin port has no admin_token: it answers only requests for a loopback Host (127.0.0.1, [::1], localhost), never a DNS name that may have been rebound to it; set admin_token to use another name\n"),
        _ => None,
    }
}

/// Whether a `Host` value names this machine's loopback: `localhost` or a loopback IP
/// literal, with or without a port.
fn is_loopback_host(host: &[u8]) -> bool {
    let Ok(host) = std::str::from_utf8(host) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(rest, |(ip, _)| ip),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Picks the answer. Probes (`/healthz`, `/readyz`) need no token. Reads are GET (or
/// HEAD); the operator's storage requests are POST.
pub(super) fn route(request: &Request, answers: &Answers) -> Reply {
    let path = request.path.as_str();
    let operator = [
        "/admin/scrub/",
        "/admin/repair/",
        "/admin/replicate/",
        "/admin/remove/",
    ]
    .iter()
    .any(|prefix| path.starts_with(prefix));
    match (operator, request.method) {
        (false, Method::Get | Method::Head) | (true, Method::Post) => {}
        (false, _) => return Reply::text(405, "admin endpoints are GET only, but for the POST ones in /admin/scrub/, /admin/repair/, /admin/replicate/ and /admin/remove/\n"),
        (true, _) => return Reply::text(405, format!("{path} takes POST\n")),
    }
    let probe = matches!(path, "/healthz" | "/readyz");
    if let (false, None, Some(why)) = (probe, &answers.admin_token, tokenless_refusal(request)) {
        return Reply::text(403, why);
    }
    if !probe && !authorized(request, answers.admin_token.as_deref()) {
        let mut reply = Reply::text(
            401,
            "admin endpoints need Authorization: Bearer <admin token>\n",
        );
        // RFC 9110 §15.5.2: a 401 names the scheme that would be accepted.
        let challenge = r#"Bearer realm="ron-admin""#;
        reply.fields.push(("WWW-Authenticate", challenge.into()));
        return reply;
    }
    let _waiting = match waits(path) {
        true => match WaitingSlot::take(&answers.waiting) {
            Some(slot) => Some(slot),
            None => return too_many_waiting(),
        },
        false => None,
    };
    match path {
        "/healthz" => Reply::text(200, "ok\n"),
        "/readyz" => {
            let fronts: Vec<_> = answers.shards.iter().map(|c| c.front.snapshot()).collect();
            let verdict = reports::readiness(&fronts);
            Reply::json(if verdict.ready { 200 } else { 503 }, verdict.body)
        }
        "/metrics" => {
            let published = answers.board.latest();
            let mut body = prometheus::render_metrics(
                &answers.scrapes.sample(&answers.shards),
                &published.extra,
            );
            if let Some(dht) = &answers.dht {
                prometheus::render_dht(&mut body, &dht.metrics);
            }
            Reply::new(200, "text/plain; version=0.0.4", body.into_bytes())
        }
        "/admin/stats" => {
            let published = answers.board.latest();
            let samples = sample(&answers.shards);
            let node_id = answers.dht.as_ref().map(|d| d.node_id.as_ref());
            Reply::json(200, reports::stats(&samples, &published.shards, node_id))
        }
        "/version" => Reply::json(200, reports::version(answers.version)),
        "/resolve" => resolve(answers, &request.query),
        "/admin/placement" => placement(answers, &request.query).unwrap_or_else(|refused| refused),
        "/admin/scrub" => {
            let samples = sample(&answers.shards);
            Reply::json(200, reports::scrub(&samples))
        }
        "/admin/scrub/pause" => pause_scrub(answers, true),
        "/admin/scrub/resume" => pause_scrub(answers, false),
        _ => operator_request(answers, path),
    }
}

/// Whether answering `path` waits on a shard or the DHT (up to seconds or minutes).
fn waits(path: &str) -> bool {
    matches!(path, "/resolve" | "/admin/placement")
        || ["/admin/repair/", "/admin/replicate/", "/admin/remove/"]
            .iter()
            .any(|prefix| path.starts_with(prefix))
}

/// One request waiting on a shard or the DHT, counted for as long as it lives.
struct WaitingSlot<'a>(&'a AtomicUsize);

impl WaitingSlot<'_> {
    /// A slot, unless [`ADMIN_WAITING_MAX`] are taken.
    fn take(waiting: &AtomicUsize) -> Option<WaitingSlot<'_>> {
        waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < ADMIN_WAITING_MAX).then_some(n + 1)
            })
            .ok()
            .map(|_| WaitingSlot(waiting))
    }
}

impl Drop for WaitingSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn too_many_waiting() -> Reply {
    let mut reply = Reply::text(
        503,
        format!("{ADMIN_WAITING_MAX} admin requests are waiting on the shards or the DHT; try again (probes and reads are still answered)\n"),
    );
    reply.fields.push(("Retry-After", "1".into()));
    reply
}

/// The POST requests on one object: `/admin/repair/`, `/admin/replicate/` and
/// `/admin/remove/` followed by its address.
fn operator_request(answers: &Answers, path: &str) -> Reply {
    let Some(rest) = path.strip_prefix("/admin/") else {
        return Reply::text(404, "not found\n");
    };
    match rest.split_once('/') {
        Some(("repair", hash)) => check_object(answers, hash),
        Some(("replicate", hash)) => replicate(answers, hash).unwrap_or_else(|refused| refused),
        Some(("remove", hash)) => remove_object(answers, hash),
        _ => Reply::text(404, "not found\n"),
    }
}

/// Tells every shard to pause or resume its scrubber; 503 if a shard's inbox is full.
fn pause_scrub(answers: &Answers, paused: bool) -> Reply {
    let shards = answers.mailboxes.shard_count();
    let refused: Vec<usize> = (0..shards)
        .filter(|&shard| !answers.mailboxes.send(shard, ToShard::PauseScrub(paused)))
        .collect();
    if !refused.is_empty() {
        return Reply::text(
            503,
            format!("shards {refused:?} did not take the request (inbox full); try again\n"),
        );
    }
    let verb = if paused { "paused" } else { "resumed" };
    Reply::json(202, json!({ "scrub": verb, "shards": shards }).to_string())
}

/// An operator request an object's owner shard answers: what its answers call it, how
/// long it is waited for, and what to watch meanwhile when that wait runs out.
struct OwnerRequest {
    what: &'static str,
    wait_ms: u64,
    meanwhile: &'static str,
}

const CHECK: OwnerRequest = OwnerRequest {
    what: "check",
    wait_ms: ADMIN_REPAIR_WAIT_MS,
    meanwhile: "; its repairs show in ron_ec_repair_bytes_total",
};

const REMOVAL: OwnerRequest = OwnerRequest {
    what: "removal",
    wait_ms: ADMIN_REMOVE_WAIT_MS,
    meanwhile: "",
};

/// Asks the object's owner shard to read and check every block of it now, and waits
/// for the report (at most [`ADMIN_REPAIR_WAIT_MS`]).
fn check_object(answers: &Answers, hash: &str) -> Reply {
    let message = |addr, reply| ToShard::CheckObject { addr, reply };
    ask_owner(answers, hash, &CHECK, message, check_answer)
}

fn check_answer(addr: Address, shard: usize, report: ObjectCheckReport) -> Reply {
    let status = match report.outcome {
        "not_found" => 404,
        "busy" => 503,
        "failed" => 500,
        _ => 200,
    };
    let mut body = serde_json::to_value(&report).unwrap_or_default();
    body["hash"] = json!(addr.to_string());
    body["shard"] = json!(shard);
    Reply::json(status, body.to_string())
}

/// Asks the object's owner shard to remove this node's copy (durably) and withdraw its
/// DHT record, and waits for the answer (at most [`ADMIN_REMOVE_WAIT_MS`]): 200
/// `{"obj","removed":true}`, 404 when no copy is held, 503 while a commit, eviction or
/// repair of it is under way.
fn remove_object(answers: &Answers, hash: &str) -> Reply {
    let message = |addr, reply| ToShard::RemoveObject { addr, reply };
    ask_owner(answers, hash, &REMOVAL, message, removal_answer)
}

fn removal_answer(addr: Address, _shard: usize, report: RemovalReport) -> Reply {
    match report {
        RemovalReport::Removed => {
            let body = json!({ "obj": addr.to_string(), "removed": true });
            Reply::json(200, body.to_string())
        }
        RemovalReport::NotFound => {
            Reply::text(404, format!("{addr}: this node holds no copy of it\n"))
        }
        RemovalReport::Busy(why) => Reply::text(503, format!("{why}\n")),
        RemovalReport::Failed(why) => Reply::text(500, format!("removing {addr} failed: {why}\n")),
    }
}

/// Sends the owner shard of the address in `hash` the message `message` makes with a
/// reply channel, and answers with what `answer` makes of the reply; a bad address is
/// 400, a full inbox 503, a shard stopping 503, and no reply within the request's wait
/// 504.
fn ask_owner<R>(
    answers: &Answers,
    hash: &str,
    request: &OwnerRequest,
    message: impl FnOnce([u8; 32], SyncSender<R>) -> ToShard,
    answer: impl FnOnce(Address, usize, R) -> Reply,
) -> Reply {
    let addr = match parse_address(hash) {
        Ok(addr) => addr,
        Err(reply) => return reply,
    };
    let shard = answers.owner.shard(&addr);
    let (reply, report) = std::sync::mpsc::sync_channel(1);
    if !answers
        .mailboxes
        .send(shard, message(*addr.as_bytes(), reply))
    {
        return inbox_full(shard);
    }
    let OwnerRequest {
        what,
        wait_ms,
        meanwhile,
    } = request;
    match report.recv_timeout(Duration::from_millis(*wait_ms)) {
        Ok(report) => answer(addr, shard, report),
        Err(RecvTimeoutError::Timeout) => Reply::text(
            504,
            format!(
                "the {what} of {addr} on shard {shard} is still running after {wait_ms} ms{meanwhile}\n"
            ),
        ),
        Err(RecvTimeoutError::Disconnected) => Reply::text(
            503,
            // The shard runs the request as a task of its own: it may have ended it
            // (a removal committed) before its stop dropped the answer.
            format!("shard {shard} stopped before it answered; ask again after its start to see whether the {what} ran\n"),
        ),
    }
}

/// An object address from a request path, or the 400 that says what one looks like.
fn parse_address(hash: &str) -> Result<Address, Reply> {
    Address::parse(hash.as_bytes()).map_err(|_| {
        Reply::text(
            400,
            format!("{hash:?} is not an object address (b3: and 64 lower-case hex digits)\n"),
        )
    })
}

fn inbox_full(shard: usize) -> Reply {
    Reply::text(
        503,
        format!("shard {shard} did not take the request (inbox full); try again\n"),
    )
}

/// `GET /resolve?hash=b3:<hex>&limit=N`: the object's providers, from the DHT thread
/// (waited for at most [`RESOLVE_DEADLINE_MS`]).
fn resolve(answers: &Answers, query: &str) -> Reply {
    let Some(dht) = &answers.dht else {
        return Reply::text(
            404,
            "this node is not in a network: /resolve needs --p2p (and --peer)\n",
        );
    };
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
    };
    let Some(hash) = param("hash") else {
        return Reply::text(400, "/resolve needs ?hash=b3:<hex>\n");
    };
    let Ok(addr) = Address::parse(hash.as_bytes()) else {
        return Reply::text(
            400,
            format!("{hash:?} is not an object address (b3: and 64 lower-case hex digits)\n"),
        );
    };
    let limit = match param("limit").map(str::parse::<usize>) {
        None => RESOLVE_LIMIT_DEFAULT,
        Some(Ok(n)) if (1..=RESOLVE_LIMIT_MAX).contains(&n) => n,
        Some(_) => return Reply::text(400, format!("limit must be 1..={RESOLVE_LIMIT_MAX}\n")),
    };
    match dht.resolve(*addr.as_bytes(), limit, RESOLVE_DEADLINE_MS) {
        Ok(providers) => Reply::json(
            200,
            json!({ "hash": addr.to_string(), "providers": providers }).to_string(),
        ),
        Err(
            e @ (ResolveError::Busy(_) | ResolveError::TooManyLookups(_) | ResolveError::Stopped),
        ) => Reply::text(503, format!("{e}; try again\n")),
        Err(e @ ResolveError::Timeout(_)) => Reply::text(504, format!("{e}\n")),
    }
}

/// `GET /admin/placement?hash=b3:<hex>`: the holders the placement names for the
/// object (a lookup of its closest peers), each audited — asked for a random 64 KiB
/// group of its own copy with its proof, checked against the address — and how many
/// hold a verified copy (`rf_observed`) against the target (`rf_target`).
fn placement(answers: &Answers, query: &str) -> Result<Reply, Reply> {
    let hash = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("hash="))
        .unwrap_or("");
    let (dht, replication, addr) = placement_request(answers, "/admin/placement", hash)?;
    let holders = holders_of(dht, &addr)?;
    let (audited, observed) = audit_holders(replication, &holders, &addr)?;
    let report = placement_report(dht, &addr, audited, observed);
    Ok(Reply::json(200, report.to_string()))
}

/// `POST /admin/replicate/b3:<hex>`: checks and repairs one object now — the placement
/// and its audits as `/admin/placement`, then each named holder without a verified copy
/// (other than this node) is asked to take one (it pulls it verified from this node or
/// the providers the DHT names), waited for at most [`REPLICATE_WAIT_MS`], and every
/// holder audited again.
fn replicate(answers: &Answers, hash: &str) -> Result<Reply, Reply> {
    let (dht, replication, addr) = placement_request(answers, "/admin/replicate", hash)?;
    let holders = holders_of(dht, &addr)?;
    let (before, rf_before) = audit_holders(replication, &holders, &addr)?;
    let asked: Vec<String> = holders
        .iter()
        .zip(&before)
        .filter(|(holder, audit)| !holder.local && audit["holds"] != true)
        .map(|(holder, _)| holder.node_id.clone())
        .collect();
    if !asked.is_empty() {
        if let Err(e) = dht.copy_to(*addr.as_bytes(), asked.clone(), REPLICATE_WAIT_MS) {
            tracing::warn!(obj = %addr, "admin replicate: {e}");
        }
    }
    let (after, observed) = match asked.is_empty() {
        true => (before, rf_before),
        false => audit_holders(replication, &holders, &addr)?,
    };
    let mut report = placement_report(dht, &addr, after, observed);
    report["rf_before"] = json!(rf_before);
    report["asked"] = json!(asked);
    Ok(Reply::json(200, report.to_string()))
}

/// The DHT, the shards' replication and the address a placement request needs, or its
/// refusal.
fn placement_request<'a>(
    answers: &'a Answers,
    endpoint: &str,
    hash: &str,
) -> Result<(&'a DhtClient, &'a ReplicationRoutes, Address), Reply> {
    let (Some(dht), Some(replication)) = (&answers.dht, &answers.replication) else {
        return Err(Reply::text(
            404,
            format!("this node is not in a network: {endpoint} needs --p2p (and --peer)\n"),
        ));
    };
    let Ok(addr) = Address::parse(hash.as_bytes()) else {
        return Err(Reply::text(
            400,
            format!("{endpoint} needs an object address (b3: and 64 lower-case hex digits), not {hash:?}\n"),
        ));
    };
    Ok((dht, replication, addr))
}

fn holders_of(dht: &DhtClient, addr: &Address) -> Result<Vec<Provider>, Reply> {
    dht.placement(*addr.as_bytes(), RESOLVE_DEADLINE_MS)
        .map_err(|e| match e {
            ResolveError::Busy(_) | ResolveError::TooManyLookups(_) | ResolveError::Stopped => {
                Reply::text(503, format!("{e}; try again\n"))
            }
            ResolveError::Timeout(_) => Reply::text(504, format!("{e}\n")),
        })
}

/// Each holder audited by the owner shard (counted there in `ron_replica_audits_total`),
/// and how many verified.
fn audit_holders(
    replication: &ReplicationRoutes,
    holders: &[Provider],
    addr: &Address,
) -> Result<(Vec<serde_json::Value>, usize), Reply> {
    let outcomes = replication
        .audit(*addr.as_bytes(), holders.to_vec(), AUDIT_WAIT_MS)
        .map_err(|e| match e {
            AuditError::NotTaken(_) | AuditError::Stopped(_) => Reply::text(503, format!("{e}\n")),
            AuditError::Timeout { .. } => Reply::text(504, format!("{e}\n")),
        })?;
    let audited: Vec<serde_json::Value> = holders.iter().zip(outcomes).map(audit_entry).collect();
    let observed = audited.iter().filter(|h| h["holds"] == true).count();
    Ok((audited, observed))
}

/// One holder's line of a placement report.
fn audit_entry((holder, outcome): (&Provider, AuditOutcome)) -> serde_json::Value {
    let mut entry = json!({
        "node_id": holder.node_id,
        "oap": holder.oap,
        "zone": holder.zone,
        "local": holder.local,
        "holds": outcome.is_verified(),
        "audit": outcome.label(),
    });
    match outcome {
        AuditOutcome::Verified { group } => entry["group"] = json!(group),
        AuditOutcome::Failed(reason) => entry["reason"] = json!(reason),
        AuditOutcome::Missing => {}
    }
    entry
}

fn placement_report(
    dht: &DhtClient,
    addr: &Address,
    audited: Vec<serde_json::Value>,
    observed: usize,
) -> serde_json::Value {
    let target = dht
        .metrics
        .replication_target
        .load(std::sync::atomic::Ordering::Relaxed);
    json!({
        "hash": addr.to_string(),
        "rf_target": target,
        "rf_observed": observed,
        "placement": audited,
    })
}

/// With an admin token configured, the request must carry it as a bearer token.
fn authorized(request: &Request, admin_token: Option<&str>) -> bool {
    let Some(token) = admin_token else {
        return true;
    };
    request
        .authorization
        .as_deref()
        .and_then(bearer_token)
        .is_some_and(|given| constant_time_eq(given, token.as_bytes()))
}

/// One answer; the connection is closed after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// Fields beyond Content-Type and Content-Length (`Retry-After`, `WWW-Authenticate`).
    fields: Vec<(&'static str, String)>,
}

impl Reply {
    fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type,
            body,
            fields: Vec::new(),
        }
    }

    pub(super) fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply::new(status, "text/plain", body.into().into_bytes())
    }

    fn json(status: u16, body: String) -> Reply {
        Reply::new(status, "application/json", body.into_bytes())
    }

    /// The response; a HEAD request gets the head alone (same Content-Length).
    pub(super) fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let fields: String = self
            .fields
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{fields}Connection: close\r\n\r\n",
            self.status,
            ron_codec::http::response::reason_phrase(self.status),
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn request(method: Method, target: &str, authorization: Option<&str>) -> Request {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Request {
            method,
            path: path.into(),
            query: query.into(),
            authorization: authorization.map(|a| a.as_bytes().to_vec()),
            host: Some(b"127.0.0.1:9600".to_vec()),
            from_a_page: false,
        }
    }

    #[test]
    fn a_tokenless_admin_port_answers_no_web_page_and_no_rebound_name() {
        let answers = Answers::for_tests(None);
        let status = |r: &Request| route(r, &answers).status;
        let plain = request(Method::Get, "/metrics", None);
        assert_eq!(status(&plain), 200);
        for host in [
            "localhost",
            "LOCALHOST:9600",
            "[::1]:9600",
            "[::1]",
            "127.0.0.2",
        ] {
            let mut r = plain.clone();
            r.host = Some(host.as_bytes().to_vec());
            assert_eq!(status(&r), 200, "{host}");
        }
        assert_eq!(
            status(&Request {
                host: None,
                ..plain.clone()
            }),
            200
        );
        for host in [
            "evil.example:9600",
            "10.0.0.1:9600",
            "localhost.evil.example",
            "[::2]:9600",
        ] {
            let mut r = plain.clone();
            r.host = Some(host.as_bytes().to_vec());
            assert_eq!(status(&r), 403, "{host}");
            assert!(route(&r, &answers).body.starts_with(
                b"this admin port has no admin_token: it answers only requests for a loopback Host"
            ));
        }
        let mut page = request(Method::Post, "/admin/scrub/pause", None);
        page.from_a_page = true;
        assert_eq!(status(&page), 403);
        // Probes stay open; with a token, the token is the proof.
        let mut probe = request(Method::Get, "/healthz", None);
        probe.from_a_page = true;
        probe.host = Some(b"evil.example".to_vec());
        assert_eq!(status(&probe), 200);
        let with_token = Answers {
            admin_token: Some("s3cret".into()),
            ..Answers::for_tests(None)
        };
        let mut named = request(Method::Get, "/metrics", Some("Bearer s3cret"));
        named.host = Some(b"node1.internal:9600".to_vec());
        named.from_a_page = true;
        assert_eq!(route(&named, &with_token).status, 200);
    }

    #[test]
    fn probes_need_no_token_and_the_rest_need_the_right_one() {
        let token = Some("s3cret");
        assert!(authorized(&request(Method::Get, "/metrics", None), None));
        assert!(!authorized(&request(Method::Get, "/metrics", None), token));
        let wrong = request(Method::Get, "/metrics", Some("Bearer nope"));
        assert!(!authorized(&wrong, token));
        let right = request(Method::Get, "/metrics", Some("Bearer s3cret"));
        assert!(authorized(&right, token));
        let lower = request(Method::Get, "/metrics", Some("bearer s3cret"));
        assert!(authorized(&lower, token), "the scheme is case-insensitive");
        let answers = Answers {
            admin_token: token.map(String::from),
            ..Answers::for_tests(None)
        };
        let status = |r: &Request| route(r, &answers).status;
        assert_eq!(status(&request(Method::Get, "/healthz", None)), 200);
        assert_eq!(status(&request(Method::Get, "/readyz", None)), 503);
        let refused = route(&request(Method::Get, "/version", None), &answers);
        assert_eq!(refused.status, 401);
        let head = String::from_utf8(refused.to_bytes(true)).unwrap();
        assert!(
            head.contains("\r\nWWW-Authenticate: Bearer realm=\"ron-admin\"\r\n"),
            "{head}"
        );
        assert_eq!(status(&request(Method::Put, "/healthz", None)), 405);
        assert_eq!(status(&right), 200);
        let version = request(Method::Get, "/version", Some("Bearer s3cret"));
        assert_eq!(
            route(&version, &answers).body,
            br#"{"name":"ron","version":"9.9.9"}"#
        );
        let missing = request(Method::Get, "/nope", Some("Bearer s3cret"));
        assert_eq!(status(&missing), 404);
    }

    /// `/resolve` against a stand-in for the DHT thread that answers one provider.
    #[test]
    fn resolve_checks_its_query_and_answers_the_providers() {
        use ron_link::dht::{DhtClient, DhtMetrics, DhtRequest, Provider};
        let get = |answers: &Answers, target: &str| {
            let reply = route(&request(Method::Get, target, None), answers);
            (reply.status, String::from_utf8(reply.body).unwrap())
        };
        let hash = format!("b3:{}", "ab".repeat(32));
        let (status, body) = get(&Answers::for_tests(None), &format!("/resolve?hash={hash}"));
        assert_eq!(status, 404);
        assert_eq!(
            body,
            "this node is not in a network: /resolve needs --p2p (and --peer)\n"
        );

        let (announces, _announced) = std::sync::mpsc::sync_channel(1);
        let (requests, mut dht) = tokio::sync::mpsc::channel(4);
        let client = DhtClient::new(
            announces,
            Arc::default(),
            requests,
            Arc::new(DhtMetrics::default()),
            "me".into(),
        );
        let answers = Answers::for_tests(Some(client));
        let thread = std::thread::spawn(move || {
            let mut limits = Vec::new();
            while let Some(DhtRequest::Resolve {
                addr, limit, reply, ..
            }) = dht.blocking_recv()
            {
                limits.push((addr[0], limit));
                if limit == 5 {
                    reply.send(Err(ResolveError::TooManyLookups(256)));
                    continue;
                }
                let provider = Provider {
                    node_id: "12D3KooWpeer".into(),
                    oap: Some("127.0.0.1:9444".parse().unwrap()),
                    zone: None,
                    local: false,
                };
                reply.send(Ok(vec![provider]));
            }
            limits
        });
        let (status, body) = get(&answers, &format!("/resolve?limit=3&hash={hash}"));
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            format!(
                r#"{{"hash":"{hash}","providers":[{{"local":false,"node_id":"12D3KooWpeer","oap":"127.0.0.1:9444"}}]}}"#
            )
        );
        assert_eq!(get(&answers, &format!("/resolve?hash={hash}")).0, 200);
        let busy = get(&answers, &format!("/resolve?hash={hash}&limit=5"));
        assert_eq!(
            busy,
            (
                503,
                "the DHT has 256 lookups running, its most; try again\n".into()
            )
        );
        let cases = [
            ("/resolve", "/resolve needs ?hash=b3:<hex>\n"),
            (
                "/resolve?hash=b3:12",
                "\"b3:12\" is not an object address (b3: and 64 lower-case hex digits)\n",
            ),
        ];
        for (target, expected) in cases {
            assert_eq!(get(&answers, target), (400, expected.to_string()));
        }
        for limit in ["0", "65", "x"] {
            let (status, body) = get(&answers, &format!("/resolve?hash={hash}&limit={limit}"));
            assert_eq!((status, body.as_str()), (400, "limit must be 1..=64\n"));
        }
        drop(answers);
        assert_eq!(
            thread.join().unwrap(),
            vec![(0xab, 3), (0xab, 16), (0xab, 5)]
        );
    }

    #[test]
    fn a_reply_is_one_closed_answer_with_its_length() {
        let bytes = Reply::text(503, "busy\n").to_bytes(false);
        let head = Reply::text(503, "busy\n").to_bytes(true);
        assert!(
            head.ends_with(b"Content-Length: 5\r\nConnection: close\r\n\r\n"),
            "{head:?}"
        );
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n"
        );
    }
}
