//! The placement function (`ron_dht::placement`) at sizes this machine cannot run as
//! processes: N nodes over Z zones, M objects, `replicas` copies each; in-process, no
//! sockets. Prints, per network size: objects per node (max / mean), the copies that
//! move when one node joins and when one leaves, as a share of the data (against the ideal,
//! `replicas / N`), and how many zones each object's copies span.
//!
//!   cargo run --release -p ron-dht --example placement_sim -- 1000,10000 10000000 3 3
//!   (network sizes, objects, zones, replicas, and optionally joins and leaves
//!   simulated, default 5; the figures in docs/PERF.md)

use std::collections::HashSet;
use std::time::Instant;

use ron_dht::closest::scattered_positions as positions;
use ron_dht::placement::{PlacedNode, Placement};

type Position = [u8; 32];

/// Joins and leaves simulated (one at a time) per network size, unless given.
const CHURN_TRIALS: usize = 5;

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

fn simulate(nodes: usize, objects: &[Position], zones: usize, replicas: usize, trials: usize) {
    let started = Instant::now();
    let members: Vec<PlacedNode<u32>> = positions(nodes as u64)
        .take(nodes)
        .enumerate()
        .map(|(i, position)| PlacedNode {
            id: i as u32,
            position,
            zone: format!("zone-{}", i % zones),
        })
        .collect();
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
    for nodes in sizes {
        simulate(nodes, &keys, zones, replicas, trials);
    }
}
