//! The placement function (`ron_dht::placement`) at sizes this machine cannot run as
//! processes: N nodes over Z zones, M objects, `replicas` copies each; in-process, no
//! sockets. Prints, per network size: objects per node (max / mean), the copies that
//! move when one node joins and when one leaves, as a share of the data (against the ideal,
//! `replicas / N`), and how many zones each object's copies span. Then, per size, what one
//! node's view names (`ron_dht::placement::holders_in_view`): for keys asked about from
//! random nodes, how often the view of one lookup (the key's 20 closest, as libp2p-kad
//! returns them) and the asker is sure of the holders, and how often a sure view names
//! other holders than the whole network would (never, if the rule is right).
//!
//!   cargo run --release -p ron-dht --example placement_sim -- 1000,10000 10000000 3 3
//!   (network sizes, objects, zones, replicas, and optionally joins and leaves
//!   simulated, default 5; the figures in docs/PERF.md)

use std::collections::HashSet;
use std::time::Instant;

use ron_dht::closest::{distance, scattered_positions as positions};
use ron_dht::placement::{holders_in_view, PlacedNode, Placement, Seen};

type Position = [u8; 32];

/// Joins and leaves simulated (one at a time) per network size, unless given.
const CHURN_TRIALS: usize = 5;

/// Keys whose views are compared per network size.
const VIEW_KEYS: usize = 2_000;
/// Peers one libp2p-kad lookup returns at most (its k).
const LOOKUP: usize = 20;

/// Holders (node ids) of `objects` keys, placed in parallel on every core.
fn place_all(placement: &Placement<u32>, objects: &[Position], replicas: usize) -> Vec<u32> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = objects.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = objects
            .chunks(per_thread)
            .map(|part| {
                scope.spawn(move || {
                    let mut out = Vec::with_capacity(part.len() * replicas);
                    for key in part {
                        let holders = placement.holders(key, replicas);
                        out.extend(holders.iter().map(|n| n.id));
                        out.extend(std::iter::repeat_n(u32::MAX, replicas - holders.len()));
                    }
                    out
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("placement thread"))
            .collect()
    })
}

/// Copies placed on a different node than before, as a share of the data (one copy of
/// every object): a node joining a balanced network takes `replicas / N` of it.
fn moved_share(before: &[u32], after: &[u32], replicas: usize) -> f64 {
    let moved: usize = before
        .chunks(replicas)
        .zip(after.chunks(replicas))
        .map(|(b, a)| {
            let old: HashSet<&u32> = b.iter().collect();
            a.iter().filter(|n| !old.contains(n)).count()
        })
        .sum();
    moved as f64 / (before.len() / replicas) as f64
}

/// `nodes` nodes at scattered positions, in `zones` zones by turn.
fn members(nodes: usize, zones: usize) -> Vec<PlacedNode<u32>> {
    positions(nodes as u64)
        .take(nodes)
        .enumerate()
        .map(|(i, position)| PlacedNode {
            id: i as u32,
            position,
            zone: format!("zone-{}", i % zones),
        })
        .collect()
}

fn simulate(nodes: usize, objects: &[Position], zones: usize, replicas: usize, trials: usize) {
    let started = Instant::now();
    let members = members(nodes, zones);
    let base = Placement::new(members.clone());
    let before = place_all(&base, objects, replicas);

    let mut per_node = vec![0u64; nodes + 1];
    before.iter().for_each(|n| per_node[*n as usize] += 1);
    let mean = before.len() as f64 / nodes as f64;
    let max = per_node.iter().max().copied().unwrap_or(0);
    let zone_of = |id: u32| id as usize % zones;
    let mut spans = vec![0u64; replicas + 1];
    for copies in before.chunks(replicas) {
        let zones_used: HashSet<usize> = copies.iter().map(|n| zone_of(*n)).collect();
        spans[zones_used.len()] += 1;
    }

    // One join and one leave at a time, each from the same start, averaged over a few:
    // a single node's share varies with its stretch of the key space.
    let (mut join, mut leave) = (0.0, 0.0);
    for trial in 0..trials {
        let mut joined = members.clone();
        joined.push(PlacedNode {
            id: nodes as u32,
            position: positions(u64::MAX - 7 - trial as u64)
                .next()
                .expect("a position"),
            zone: format!("zone-{}", (nodes + trial) % zones),
        });
        let after_join = place_all(&Placement::new(joined), objects, replicas);
        join += moved_share(&before, &after_join, replicas) / trials as f64;
        let leaver = trial * nodes / trials;
        let left: Vec<PlacedNode<u32>> = members
            .iter()
            .filter(|n| n.id as usize != leaver)
            .cloned()
            .collect();
        let after_leave = place_all(&Placement::new(left), objects, replicas);
        leave += moved_share(&before, &after_leave, replicas) / trials as f64;
    }
    let ideal = replicas as f64 / nodes as f64;

    println!(
        "| {nodes} | {} | {zones} | {replicas} | {max} / {mean:.0} = {:.2} | {:.5} ({:.2}× ideal {:.5}) | {:.5} ({:.2}× ideal) | {} | {:.0} s |",
        objects.len(),
        max as f64 / mean,
        join,
        join / ideal,
        ideal,
        leave,
        leave / ideal,
        spans
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(z, n)| format!("{z} zones: {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        started.elapsed().as_secs_f64()
    );
}

/// How one node's view of single keys compares with the whole network's placement.
fn compare_views(nodes: usize, keys: &[Position], zones: usize, replicas: usize) {
    let members = members(nodes, zones);
    let whole = Placement::new(members.clone());
    let (mut sure, mut sure_wrong) = (0usize, 0usize);
    for (i, key) in keys.iter().enumerate() {
        let truth: Vec<u32> = whole.holders(key, replicas).iter().map(|n| n.id).collect();
        let mut ranked: Vec<(libp2p::kad::U256, &PlacedNode<u32>)> = members
            .iter()
            .map(|n| (distance(key, &n.position), n))
            .collect();
        ranked.sort_unstable_by_key(|(d, _)| *d);
        let lookup = LOOKUP.min(nodes);
        let asker = &members[(i * 7_919) % nodes];
        let mut seen: Vec<Seen<u32>> = ranked[..lookup]
            .iter()
            .map(|(_, n)| n)
            .chain((!ranked[..lookup].iter().any(|(_, n)| n.id == asker.id)).then_some(&asker))
            .map(|n| Seen {
                id: n.id,
                position: n.position,
                zone: Some(n.zone.clone()),
            })
            .collect();
        seen.dedup_by_key(|s| s.id);
        let reach = (lookup < nodes).then(|| ranked[lookup - 1].0);
        let named = holders_in_view(key, seen, reach, replicas);
        if named.certain {
            sure += 1;
            let ids: Vec<u32> = named.holders.iter().map(|n| n.id).collect();
            sure_wrong += usize::from(ids != truth);
        }
    }
    println!(
        "| {nodes} | {zones} | {replicas} | {:.1} % | {sure_wrong} |",
        100.0 * sure as f64 / keys.len() as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    let sizes: Vec<usize> = arg(0, "1000,10000")
        .split(',')
        .map(|s| s.parse().expect("network sizes: comma-separated numbers"))
        .collect();
    let objects: usize = arg(1, "10000000").parse().expect("objects: a number");
    let zones: usize = arg(2, "3").parse().expect("zones: a number");
    let replicas: usize = arg(3, "3").parse().expect("replicas: a number");
    let trials: usize = arg(4, &CHURN_TRIALS.to_string())
        .parse()
        .expect("joins and leaves: a number");
    assert!(
        zones >= 1 && replicas >= 1 && trials >= 1,
        "at least one zone, one replica, one join and leave"
    );
    let keys: Vec<Position> = positions(42).take(objects).collect();
    println!("| nodes | objects | zones | replicas | objects per node, max / mean | copies moved by a join | by a leave | zones spanned per object | time |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---|---:|");
    for nodes in &sizes {
        simulate(*nodes, &keys, zones, replicas, trials);
    }
    println!();
    println!("| nodes | zones | replicas | views sure (one lookup of 20 + the asker) | sure but other holders than the whole network |");
    println!("|---:|---:|---:|---:|---:|");
    let view_keys: Vec<Position> = positions(4_242).take(VIEW_KEYS).collect();
    for nodes in sizes {
        compare_views(nodes, &view_keys, zones, replicas);
    }
}
