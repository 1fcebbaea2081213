//! The network harness (`ron_bench::network`, `bench/network.sh`) at CI size: 30 nodes
//! in 3 zones on loopback, objects put on random nodes, 10 % killed with -9, 10 % more
//! joined. What must hold at any size: every fresh object resolvable from another node,
//! every object back at three verified copies in three zones after each phase, every
//! read through a non-holder whole and verified. The figures at 100–1,000 nodes are in
//! docs/PERF.md with their commands.

mod common;

use std::time::Duration;

use common::temp_dir;
use ron_bench::network::figures::{self, Plan};
use ron_bench::network::{Network, NetworkConfig};

#[test]
fn thirty_nodes_keep_every_object_findable_and_at_three_copies_through_a_kill_and_a_join() {
    let dir = temp_dir("network");
    let ron = std::path::PathBuf::from(env!("CARGO_BIN_EXE_ron"));
    let mut config = NetworkConfig::new(ron, dir, 30, 3);
    config.port_base = common::free_port();
    let plan = Plan {
        objects: 45,
        size_min: 1,
        size_max: 300_000,
        seed: 53,
        form_max_s: 60.0,
        settle_s: 5.0,
        quiet_s: 3.0,
        calm_max_s: 60.0,
        copies_wait_s: 180.0,
        reads: 15,
        kill_percent: 10,
        join_percent: 10,
    };
    let mut network = Network::start(config).unwrap();
    let report = figures::run(&mut network, &plan).unwrap();
    drop(network);
    print!("{}", report.text());

    // A network this small forms and falls quiet within seconds (each node at most
    // half a percent of a core), so the figures below are not a busy network's.
    assert_eq!(report.unformed, 0, "{}", report.text());
    assert!(report.calm_s.is_some(), "{}", report.text());
    let findable = &report.findable;
    assert_eq!(
        findable.not_found, 0,
        "fresh objects no other node could resolve"
    );
    assert_eq!(findable.found_s.count, plan.objects);
    assert!(findable.found_s.max < 30.0);
    // A prober per object: the polls went out when due, so the found times are the
    // network's, not the harness's queue.
    assert!(
        findable.poll_lag_ms.p99 < 1_000.0,
        "{:?}",
        findable.poll_lag_ms
    );
    // The nodes timed every settled resolve they answered, and the first provider of each
    // that named one.
    let (answered, first) = (
        &report.settled_resolve_node_s,
        &report.settled_first_provider_s,
    );
    assert!(answered.count >= plan.objects, "{answered:?}");
    assert!(
        first.count >= plan.objects - report.settled_resolve_empty,
        "{first:?}"
    );
    assert!(first.p50 <= answered.p50, "{first:?} {answered:?}");
    assert_eq!(
        report.read_failures, 0,
        "reads through that failed or did not verify"
    );
    assert_eq!(report.reads_ms.count, plan.reads);
    assert_eq!(report.killed, 3);
    assert_eq!(report.joined, 3);
    let phases = [
        ("after the uploads", Some(&report.copies)),
        ("after the kill", report.after_kill.as_ref()),
        ("after the join", report.after_join.as_ref()),
    ];
    for (phase, copies) in phases {
        let copies = copies.unwrap();
        assert_eq!(
            copies.short_at_end, 0,
            "objects short of 3 verified copies {phase}"
        );
        assert_eq!(copies.complete_s.count, plan.objects, "{phase}");
        assert!(copies.complete_s.max < Duration::from_secs(180).as_secs_f64());
    }
    // Every node knows most of a network this small.
    assert!(report.quiet.routing_peers.p50 >= 8.0, "{:?}", report.quiet);
    // The closing costs are of every node still running (30 - 3 killed + 3 joined).
    assert_eq!(report.costs_end.rss_mib.count, 30, "{:?}", report.costs_end);
    assert_eq!(
        report.costs_end.cpu_percent.count, 30,
        "{:?}",
        report.costs_end
    );
}
