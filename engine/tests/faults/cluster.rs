//! What the scenarios do to a cluster and what they check of it afterwards: seeded
//! writers and verifying readers while a fault lasts, a blocked object that must never
//! come back, and the properties every scenario ends with (module `main`'s list).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::{bytes, hex, read_response, try_connect, Address};
use crate::lab::{admin_get, admin_request, metric, put_object, Lab};

/// Every node of a five-node lab: zones z0 {0, 3}, z1 {1, 4}, z2 {2}.
pub const ZONES: [&str; 5] = ["z0", "z1", "z2", "z0", "z1"];
pub const REPLICAS: usize = 3;
/// Short, so a scenario sees peers counted gone and copies made elsewhere in seconds (a
/// peer cut off is counted lost when the kernel's TCP keepalive gives up on its
/// connections, ~9 s, then gone `PEER_DEAD_MS` later).
pub const PEER_DEAD_MS: u64 = 8_000;
pub const REPLICATION_INTERVAL_MS: u64 = 2_000;
/// From the heal: kept copies exactly `REPLICAS` × objects again (the missing made, the
/// extra made evictable).
pub const SETTLE_BOUND: Duration = Duration::from_secs(120);
/// From the heal: every acknowledged object audited at `REPLICAS` verified copies.
pub const HEAL_BOUND: Duration = Duration::from_secs(180);

/// The flags every lab node runs with.
pub fn node_flags() -> Vec<String> {
    vec![
        "--peer-dead-ms".into(),
        PEER_DEAD_MS.to_string(),
        "--replication-interval-ms".into(),
        REPLICATION_INTERVAL_MS.to_string(),
    ]
}

/// A small seeded generator (splitmix64): the scenario's every choice comes from it.
pub struct Seeded(u64);

impl Seeded {
    pub fn new(seed: u64) -> Self {
        Seeded(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick(&mut self, of: &[usize]) -> usize {
        of[self.below(of.len())]
    }
}

/// The seed of scenario `name`: `FAULTS_SEED` to replay one, else a fresh one (printed,
/// and named again if the scenario fails).
pub fn seed_of(name: &str) -> u64 {
    let seed = match std::env::var("FAULTS_SEED") {
        Ok(text) => text.parse().expect("FAULTS_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    eprintln!("faults: {name}: seed {seed} (replay: FAULTS_SEED={seed})");
    seed
}

/// An object written to a node: its address and the node.
#[derive(Debug, Clone)]
pub struct Acked {
    pub addr: Address,
    pub node: usize,
}

/// What the clients did while a fault lasted.
#[derive(Debug, Default)]
pub struct Traffic {
    pub acked: Mutex<Vec<Acked>>,
    pub refused_writes: AtomicU64,
    /// Writes with no acknowledgment (refused, or the answer lost): each may still have
    /// been stored — a node that made it durable and whose answer never arrived.
    pub unacknowledged: Mutex<Vec<Acked>>,
    pub reads_verified: AtomicU64,
    pub reads_failed: AtomicU64,
    /// The most kept copies of the objects, over all nodes, sampled each second.
    pub kept_peak: AtomicU64,
}

/// An object of `seed`: 1 KiB to 300 KiB (some over several 64 KiB groups).
pub fn object(seed: u64) -> Vec<u8> {
    let len = 1_024 + (seed.wrapping_mul(7_919) % 300_000) as usize;
    bytes(seed, len)
}

/// Uploads `count` objects before any fault, spread over the nodes.
pub fn write_before(lab: &Lab, rng: &mut Seeded, count: usize, traffic: &Traffic) {
    for _ in 0..count {
        let node = rng.below(lab.nodes.len());
        let data = object(rng.next());
        let addr = put_object(lab.nodes[node].host.http(), &data)
            .unwrap_or_else(|| panic!("an upload to node {node} before any fault"));
        traffic.acked.lock().unwrap().push(Acked { addr, node });
    }
}

/// Two clients per side until `until`: a writer that stores an object on a node of its
/// side every `period` (and, one time in ten, tries the blocked object's bytes, which
/// must never be acknowledged), and a reader that reads a known object back from a node
/// of its side as often — any answer with a body must hash to its address.
pub fn clients_until(
    lab: &Lab,
    sides: &[Vec<usize>],
    seed: u64,
    period: Duration,
    blocked: &[u8],
    until: Instant,
    traffic: &Traffic,
) {
    let going = || Instant::now() < until;
    std::thread::scope(|s| {
        for (k, side) in sides.iter().enumerate() {
            let side_seed = seed ^ (k as u64 + 1).wrapping_mul(0x51_7cc1_b727_220a);
            let mut rng = Seeded::new(side_seed);
            s.spawn(move || {
                while going() {
                    write_one(lab, side, &mut rng, blocked, traffic);
                    std::thread::sleep(period);
                }
            });
            let mut rng = Seeded::new(!side_seed);
            s.spawn(move || {
                while going() {
                    read_one(lab, side, &mut rng, traffic);
                    std::thread::sleep(period);
                }
            });
        }
        // Only the nodes clients talk to are sampled: a paused one would hold the sampler.
        let sampled: Vec<usize> = sides.iter().flatten().copied().collect();
        s.spawn(move || {
            while going() {
                let kept: u64 = sampled.iter().filter_map(|&i| kept_copies(lab, i)).sum();
                traffic.kept_peak.fetch_max(kept, Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(1));
            }
        });
    });
}

fn write_one(lab: &Lab, side: &[usize], rng: &mut Seeded, blocked: &[u8], t: &Traffic) {
    let node = rng.pick(side);
    let http = lab.nodes[node].host.http();
    if rng.below(10) == 0 {
        assert!(
            put_object(http, blocked).is_none(),
            "node {node} acknowledged the blocked object's bytes"
        );
    }
    let data = object(rng.next());
    match put_object(http, &data) {
        Some(addr) => t.acked.lock().unwrap().push(Acked { addr, node }),
        None => {
            t.refused_writes.fetch_add(1, Ordering::Relaxed);
            let addr = Address::of(&data);
            t.unacknowledged.lock().unwrap().push(Acked { addr, node });
        }
    }
}

fn read_one(lab: &Lab, side: &[usize], rng: &mut Seeded, t: &Traffic) {
    let node = rng.pick(side);
    let known = {
        let acked = t.acked.lock().unwrap();
        acked[rng.below(acked.len())].addr
    };
    match read_checked(lab.nodes[node].host.http(), &known) {
        Some(true) => t.reads_verified.fetch_add(1, Ordering::Relaxed),
        _ => t.reads_failed.fetch_add(1, Ordering::Relaxed),
    };
}

/// GET `addr` from `http`: `Some(true)` for a 200 whose body hashes to it, `Some(false)`
/// for another status, `None` when no answer came. A 200 with other bytes fails the test.
pub fn read_checked(http: SocketAddr, addr: &Address) -> Option<bool> {
    use std::io::Write;
    let mut s = try_connect(http).ok()?;
    let raw = format!("GET /o/{addr} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(raw.as_bytes()).ok()?;
    let r = read_response(&mut s, &mut Vec::new(), false).ok()?;
    if r.status == 200 {
        assert_eq!(
            Address::of(&r.body),
            *addr,
            "{http} served bytes that do not hash to {addr}"
        );
    }
    Some(r.status == 200)
}

/// Kept copies on every node together: stored objects less the evictable ones.
pub fn kept_total(lab: &Lab) -> u64 {
    (0..lab.nodes.len())
        .filter_map(|i| kept_copies(lab, i))
        .sum()
}

fn kept_copies(lab: &Lab, i: usize) -> Option<u64> {
    let admin = lab.nodes[i].host.admin();
    let stored = metric(admin, "ron_objects_stored")?;
    let fetched = metric(admin, "ron_fetched_objects")?;
    Some((stored - fetched) as u64)
}

/// Blocks `data`'s address on every node (a denylist file each, waited for) and removes
/// every copy of it: an object that must never come back.
pub fn block_everywhere(lab: &Lab, data: &[u8]) -> Address {
    let addr = Address::of(data);
    let text = format!("version: 1\nname: faults\n---\nb3:{}\n", hex(&addr));
    for node in &lab.nodes {
        let tmp = node.denylist_dir.join(".faults.deny.tmp");
        std::fs::write(&tmp, &text).unwrap();
        std::fs::rename(tmp, node.denylist_dir.join("faults.deny")).unwrap();
    }
    for (i, node) in lab.nodes.iter().enumerate() {
        wait_until(
            &format!("node {i} enforces the denylist"),
            Duration::from_secs(30),
            || read_status(node.host.http(), &addr) == Some(451),
        );
        let r = admin_request(node.host.admin(), "POST", &format!("/admin/remove/{addr}")).unwrap();
        assert!(
            matches!(r.status, 200 | 404),
            "removing the blocked copy on {i}: {r:?}"
        );
    }
    addr
}

fn read_status(http: SocketAddr, addr: &Address) -> Option<u16> {
    use std::io::Write;
    let mut s = try_connect(http).ok()?;
    let raw = format!("HEAD /o/{addr} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(raw.as_bytes()).ok()?;
    Some(read_response(&mut s, &mut Vec::new(), true).ok()?.status)
}

/// Whether node `i` holds `addr` at all (kept or evictable): its owner shard checks it.
fn holds(lab: &Lab, i: usize, addr: &Address) -> bool {
    let admin = lab.nodes[i].host.admin();
    for _ in 0..100 {
        let r = admin_request(admin, "POST", &format!("/admin/repair/{addr}")).unwrap();
        match r.status {
            200 => return true,
            404 => return false,
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    panic!("node {i} never answered whether it holds {addr}");
}

pub fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    start.elapsed()
}

/// What `/admin/placement` said of an object: verified kept copies, and the nodes named.
type Audited = (u64, Vec<usize>);

/// The placement of `addr` as node `asker` audits it, or `None` if it could not answer
/// now.
fn placement(lab: &Lab, asker: usize, addr: &Address) -> Option<Audited> {
    let r = admin_get(
        lab.nodes[asker].host.admin(),
        &format!("/admin/placement?hash={addr}"),
    )
    .ok()?;
    if r.status != 200 {
        return None;
    }
    let report = r.json();
    let named = report["placement"]
        .as_array()?
        .iter()
        .map(|holder| {
            let oap = holder["oap"].as_str().unwrap_or("");
            lab.nodes
                .iter()
                .position(|n| oap.starts_with(&format!("{}:", n.host.ip)))
                .unwrap_or_else(|| panic!("{addr}: a holder not of the lab: {holder}"))
        })
        .collect();
    Some((report["rf_observed"].as_u64()?, named))
}

/// Audits of `objects` (`/admin/placement` at a seeded random node each), eight at once.
fn audit_round(lab: &Lab, seed: u64, objects: &[Address]) -> Vec<(Address, Option<Audited>)> {
    const AT_ONCE: usize = 8;
    let chunk = objects.len().div_ceil(AT_ONCE).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = objects
            .chunks(chunk)
            .enumerate()
            .map(|(k, part)| {
                s.spawn(move || {
                    let mut rng = Seeded::new(seed ^ k as u64);
                    part.iter()
                        .map(|addr| (*addr, placement(lab, rng.below(lab.nodes.len()), addr)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("an audit worker"))
            .collect()
    })
}

/// What a scenario measured after its heal.
#[derive(Debug)]
pub struct Figures {
    /// Acknowledged writes, and writes stored without an acknowledgment.
    pub objects: usize,
    pub written_during: usize,
    pub stored_unacknowledged: usize,
    pub refused_writes: u64,
    pub reads_verified: u64,
    pub reads_failed: u64,
    pub kept_peak: u64,
    /// From the heal until the kept copies were `REPLICAS` × objects again.
    pub to_settled: Duration,
    /// From the heal until every object was audited at `REPLICAS` verified kept copies
    /// (checked once settled).
    pub to_full_copies: Duration,
}

/// The properties every scenario ends with, checked once the network is whole again:
/// 1. copies made or lost during the fault settle: kept copies `REPLICAS` × objects
///    within [`SETTLE_BOUND`] (none missing, no over-replication left);
/// 2. every acknowledged object at `REPLICAS` verified kept copies (as
///    `/admin/placement` audits them) within [`HEAL_BOUND`];
/// 3. no acknowledged write lost: each read back, verified, from a random node;
/// 4. the stores agree with the placement: each node keeps exactly the objects the
///    placement names it for (its metrics against the audits);
/// 5. the blocked object is answered 451 everywhere and held nowhere.
pub fn check_after_heal(
    lab: &Lab,
    rng: &mut Seeded,
    traffic: &Traffic,
    written_before: usize,
    blocked: &Address,
    healed: Instant,
) -> Figures {
    let acked: Vec<Acked> = traffic.acked.lock().unwrap().clone();
    let stored_unacknowledged = stored_without_acknowledgment(lab, traffic);
    // An object stored without its answer arriving is an object: it gets every copy.
    let objects: Vec<Acked> = acked
        .iter()
        .chain(&stored_unacknowledged)
        .cloned()
        .collect();
    let want = (REPLICAS * objects.len()) as u64;
    // Copies over time: the kept copies of every node together, every 500 ms, until they
    // are exactly REPLICAS × objects — the missing ones made, the extra ones demoted.
    let mut copies = Vec::new();
    loop {
        let kept = kept_total(lab);
        copies.push((healed.elapsed().as_millis(), kept));
        if kept == want {
            break;
        }
        if healed.elapsed() >= SETTLE_BOUND {
            let per_node: Vec<Option<u64>> =
                (0..lab.nodes.len()).map(|i| kept_copies(lab, i)).collect();
            let audited = audit_round(lab, rng.next(), &addresses(&objects));
            let mut named = vec![0u64; lab.nodes.len()];
            audited
                .iter()
                .filter_map(|(_, found)| found.as_ref())
                .flat_map(|(_, holders)| holders)
                .for_each(|&i| named[i] += 1);
            let left_out: Vec<Option<f64>> = (0..lab.nodes.len())
                .map(|i| {
                    let gauge = "ron_dht_peers_left_out{reason=\"held_unproven\"}";
                    metric(lab.nodes[i].host.admin(), gauge)
                })
                .collect();
            panic!(
                "{kept} kept copies of {} objects ({} of them stored without an acknowledged \
                 write; {} writes unacknowledged) {SETTLE_BOUND:?} after the heal: kept per \
                 node {per_node:?}, named per node by the placement {named:?}, peers each \
                 node leaves out as held_unproven {left_out:?} (ms:kept {copies:?})",
                objects.len(),
                stored_unacknowledged.len(),
                traffic.refused_writes.load(Ordering::Relaxed),
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let to_settled = healed.elapsed();
    let trace: Vec<String> = copies
        .iter()
        .map(|(ms, kept)| format!("{ms}:{kept}"))
        .collect();
    eprintln!(
        "faults: kept copies after the heal (ms:copies, want {want}): {}",
        trace.join(" ")
    );
    // Then every object audited: REPLICAS verified kept copies, as /admin/placement sees
    // them from a random node.
    let mut named: BTreeMap<Address, Vec<usize>> = BTreeMap::new();
    let mut short: Vec<Address> = addresses(&objects);
    while !short.is_empty() {
        assert!(
            healed.elapsed() < HEAL_BOUND,
            "{} objects short of {REPLICAS} verified copies {HEAL_BOUND:?} after the heal, e.g. {}",
            short.len(),
            short[0]
        );
        let audited = audit_round(lab, rng.next(), &short);
        short.clear();
        for (addr, found) in audited {
            match found {
                Some((observed, holders)) if observed >= REPLICAS as u64 => {
                    named.insert(addr, holders);
                }
                _ => short.push(addr),
            }
        }
    }
    let to_full_copies = healed.elapsed();

    for a in &objects {
        let node = rng.below(lab.nodes.len());
        let read = read_checked(lab.nodes[node].host.http(), &a.addr);
        assert_eq!(
            read,
            Some(true),
            "{} (acknowledged by node {}) lost: node {node} cannot serve it",
            a.addr,
            a.node
        );
    }

    stores_agree_with_placement(lab, rng, &objects, &mut named);

    for (i, node) in lab.nodes.iter().enumerate() {
        assert_eq!(
            read_status(node.host.http(), blocked),
            Some(451),
            "node {i}"
        );
        assert!(
            !holds(lab, i, blocked),
            "node {i} holds the blocked object again"
        );
    }
    Figures {
        objects: objects.len(),
        written_during: objects.len() - written_before,
        stored_unacknowledged: stored_unacknowledged.len(),
        refused_writes: traffic.refused_writes.load(Ordering::Relaxed),
        reads_verified: traffic.reads_verified.load(Ordering::Relaxed),
        reads_failed: traffic.reads_failed.load(Ordering::Relaxed),
        kept_peak: traffic.kept_peak.load(Ordering::Relaxed),
        to_full_copies,
        to_settled,
    }
}

fn addresses(objects: &[Acked]) -> Vec<Address> {
    objects.iter().map(|a| a.addr).collect()
}

/// The unacknowledged writes some node stored anyway (a verified read of each from the
/// node it was sent to, reading through when that node no longer keeps it; asked three
/// times a second apart, as a read-through right after the heal can miss a holder whose
/// announcement is still on its way).
fn stored_without_acknowledgment(lab: &Lab, traffic: &Traffic) -> Vec<Acked> {
    let unacknowledged = traffic.unacknowledged.lock().unwrap().clone();
    unacknowledged
        .into_iter()
        .filter(|a| {
            (0..3).any(|attempt| {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_secs(1));
                }
                read_checked(lab.nodes[a.node].host.http(), &a.addr) == Some(true)
            })
        })
        .collect()
}

/// Each node's kept copies (its metrics) equal the objects the placement names it for;
/// placements are asked again (the settled one) until they agree or a bound passes.
fn stores_agree_with_placement(
    lab: &Lab,
    rng: &mut Seeded,
    acked: &[Acked],
    named: &mut BTreeMap<Address, Vec<usize>>,
) {
    let per_node = |named: &BTreeMap<Address, Vec<usize>>| {
        let mut counts = vec![0u64; lab.nodes.len()];
        named.values().flatten().for_each(|&i| counts[i] += 1);
        counts
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let kept: Vec<Option<u64>> = (0..lab.nodes.len()).map(|i| kept_copies(lab, i)).collect();
        let counts = per_node(named);
        if kept.iter().zip(&counts).all(|(k, c)| *k == Some(*c)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the stores (kept per node {kept:?}) disagree with the placement ({counts:?})"
        );
        for a in acked {
            if let Some((_, holders)) = placement(lab, rng.below(lab.nodes.len()), &a.addr) {
                named.insert(a.addr, holders);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

impl Figures {
    /// One line for the log and docs/design/faults.md.
    pub fn line(&self, scenario: &str, seed: u64) -> String {
        format!(
            "faults figures: {scenario} seed={seed} objects={} written_during_fault={} refused_writes={} stored_unacknowledged={} \
             reads_verified={} reads_failed={} kept_peak={} (settled {}) heal_to_settled_ms={} heal_to_audited_ms={}",
            self.objects,
            self.written_during,
            self.refused_writes,
            self.stored_unacknowledged,
            self.reads_verified,
            self.reads_failed,
            self.kept_peak,
            REPLICAS * self.objects,
            self.to_settled.as_millis(),
            self.to_full_copies.as_millis()
        )
    }
}

/// What clients reading through an edge saw.
#[derive(Debug, Default)]
pub struct EdgeReads {
    pub verified: AtomicU64,
    /// Answered with an error (504 when the link stalled before the first group).
    pub refused: AtomicU64,
    /// A body cut short (the link stalled mid-body: the edge's stall limit).
    pub cut: AtomicU64,
    /// The longest any read took, ms.
    pub slowest_ms: AtomicU64,
}

/// A client reading known objects through the edge `edge` until `until`: every body
/// that arrives whole must hash to its address, and every read ends — answered, refused
/// or cut — within `bound`, whatever the link does.
pub fn edge_reads_until(
    lab: &Lab,
    edge: usize,
    seed: u64,
    until: Instant,
    bound: Duration,
    traffic: &Traffic,
    reads: &EdgeReads,
) {
    let mut rng = Seeded::new(seed);
    let http = lab.nodes[edge].host.http();
    while Instant::now() < until {
        let known = {
            let acked = traffic.acked.lock().unwrap();
            acked[rng.below(acked.len())].addr
        };
        let started = Instant::now();
        let read = read_checked(http, &known);
        let took = started.elapsed();
        assert!(
            took <= bound,
            "a read of {known} through the edge took {took:?}"
        );
        reads
            .slowest_ms
            .fetch_max(took.as_millis() as u64, Ordering::Relaxed);
        let counter = match read {
            Some(true) => &reads.verified,
            Some(false) => &reads.refused,
            None => &reads.cut,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(100));
    }
}
