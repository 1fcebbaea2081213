//! Erasure coding against the real binary: objects written with parity (`--ec`, 4+1 by
//! default on one data dir) are served verified when blocks of a stripe are rotten or
//! missing, the bad blocks are rewritten on disk, and more bad blocks than the parity
//! covers is a clean failure, counted.

mod common;

use std::time::Duration;

use common::*;

const GROUP: u64 = 65_536;

/// Waits until repair wrote at least `at_least` bytes and no queued repair is left.
fn wait_for_repairs(n: &Node, at_least: u64) {
    let written = metric_reaching(
        n.admin,
        "ron_ec_repair_bytes_total",
        at_least,
        Duration::from_secs(10),
    );
    assert!(
        written >= at_least,
        "repair wrote {written} of {at_least} bytes"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(n.admin, "ron_ec_missing_shards") > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "repairs never finished"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn rotten_blocks_within_the_parity_are_served_verified_and_rewritten_on_disk() {
    let dir = temp_dir("ec-rot");
    let mut n = Node::start(&dir, &["--shards", "1"]);
    // Ten groups, the last 500 bytes: stripes of 4 + 4 + 2 groups at 4+1.
    let data = bytes(41, 9 * GROUP as usize + 500);
    let addr = upload(&n, &data);
    let parity = parity_file(&n, &addr);
    assert_eq!(std::fs::metadata(&parity).unwrap().len(), 3 * GROUP);
    let parity_bytes = std::fs::read(&parity).unwrap();
    assert_eq!(n.stop().code(), Some(0));

    // One bad block in stripe 0 (group 1) and in stripe 2 (the short last group).
    let object = n.object_file(&addr);
    flip_byte(&object, GROUP + 7);
    flip_byte(&object, 9 * GROUP + 100);
    // Started without parity for new objects: the record says how this one was written.
    n.restart(&["--shards", "1", "--ec", "off"]);
    let r = get(n.http, &format!("/o/{addr}")).unwrap();
    assert_eq!((r.status, r.body == data), (200, true), "served verified");
    assert_eq!(metric(n.admin, "ron_ec_degraded_reads_total"), 2);
    assert_eq!(metric(n.admin, "ron_ec_unrecoverable_total"), 0);

    wait_for_repairs(&n, GROUP + 500);
    file_is(&object, &data);
    file_is(&parity, &parity_bytes);

    // A restart empties the caches: every group now comes off disk good.
    assert_eq!(n.stop().code(), Some(0));
    n.restart(&["--shards", "1"]);
    let r = get_with(
        n.http,
        &format!("/o/{addr}"),
        "Range: bytes=65000-590000\r\n",
    );
    assert_eq!((r.status, &r.body[..]), (206, &data[65_000..=590_000]));
    assert_eq!(metric(n.admin, "ron_ec_degraded_reads_total"), 0);
}

/// A block that rots on disk under a good copy in the cache: a read of its run finds
/// it, serves the cached copy, and queues its stripe for repair, which writes the block
/// back. Before, the damage was counted and left on disk, to be met again after the
/// cache let the copy go.
#[test]
fn damage_found_under_a_cached_group_is_repaired_on_disk() {
    let dir = temp_dir("ec-rot-under-cache");
    let n = Node::start(&dir, &["--shards", "1"]);
    let data = bytes(43, 19 * GROUP as usize + 500);
    let addr = upload(&n, &data);
    let path = format!("/o/{addr}");
    // A range in group 1: its window of 8 groups read and cached, checked, good.
    let r = get_with(n.http, &path, "Range: bytes=70000-70099\r\n");
    assert_eq!((r.status, &r.body[..]), (206, &data[70_000..70_100]));
    let object = n.object_file(&addr);
    flip_byte(&object, GROUP + 7);
    // A range across groups 7 and 8: both windows read end to end (groups 0–15), the
    // cached half kept again from the read — group 1's block fails its check there.
    let across = 8 * GROUP - 50;
    let r = get_with(
        n.http,
        &path,
        &format!("Range: bytes={across}-{}\r\n", across + 99),
    );
    let at = across as usize;
    assert_eq!((r.status, &r.body[..]), (206, &data[at..at + 100]));
    assert!(metric(n.admin, "ron_verify_failures_total") >= 1);
    wait_for_repairs(&n, 1);
    file_is(&object, &data);
}

#[test]
fn more_bad_blocks_in_a_stripe_than_its_parity_is_a_clean_failure_counted() {
    let dir = temp_dir("ec-too-many");
    let mut n = Node::start(&dir, &["--shards", "1"]);
    let data = bytes(42, 6 * GROUP as usize);
    let addr = upload(&n, &data);
    assert_eq!(n.stop().code(), Some(0));
    // Stripe 0: group 2 and its parity block both bad (4+1 covers one).
    flip_byte(&n.object_file(&addr), 2 * GROUP + 1);
    flip_byte(&parity_file(&n, &addr), 3);
    n.restart(&["--shards", "1"]);

    let p = format!("/o/{addr}");
    let r = get_with(n.http, &p, "Range: bytes=131072-131100\r\n");
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["code"], "bad_digest");
    assert!(metric(n.admin, "ron_ec_unrecoverable_total") >= 1);
    // The other groups, stripe 1 included, are still served.
    for (first, last) in [(0u64, 70_000u64), (262_144, 393_215)] {
        let r = get_with(n.http, &p, &format!("Range: bytes={first}-{last}\r\n"));
        assert_eq!(
            (r.status, &r.body[..]),
            (206, &data[first as usize..=last as usize])
        );
    }
    // A whole GET: its head goes out, then group 2 fails its check: the body is cut short
    // (the connection reset) and the request counted 500 (before: status 0, which no
    // 5xx alert sees).
    let failed = "ron_requests_total{protocol=\"http\",op=\"get\",status=\"500\"}";
    let before = metric_reaching(n.admin, failed, 1, Duration::from_secs(5));
    if let Ok(r) = get(n.http, &p) {
        assert!(
            r.body.len() < data.len(),
            "never the whole body: {}",
            r.status
        );
    }
    let after = metric_reaching(n.admin, failed, before + 1, Duration::from_secs(5));
    assert_eq!(after, before + 1);
    // A check of the whole object finds the stripe past its parity: it says so, and
    // writes nothing over the damage (a rebuild from too few blocks would be wrong bytes).
    let raw = format!("POST /admin/repair/{addr} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let r = request(n.admin, raw.as_bytes()).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let report = r.json();
    assert_eq!(report["outcome"], "damaged", "{report}");
    assert_eq!(report["lost_blocks"], 1, "{report}");
    assert_eq!(report["repaired_bytes"], 0, "{report}");
    assert_eq!(metric(n.admin, "ron_ec_repair_bytes_total"), 0);
    let stored = std::fs::read(n.object_file(&addr)).unwrap();
    let at = (2 * GROUP + 1) as usize;
    assert_ne!(
        stored[at], data[at],
        "the damage is still what the disk holds"
    );
}

#[test]
fn a_lost_object_file_is_served_from_its_parity_and_written_again() {
    // 1+1: the parity file is a second copy, so the whole data file may go.
    let dir = temp_dir("ec-lost-file");
    let n = Node::start(&dir, &["--shards", "1", "--ec", "1+1"]);
    let data = bytes(43, 3 * GROUP as usize + 1000);
    let addr = upload(&n, &data);
    let object = n.object_file(&addr);
    std::fs::remove_file(&object).unwrap();

    let r = get(n.http, &format!("/o/{addr}")).unwrap();
    assert_eq!((r.status, r.body == data), (200, true), "served verified");
    assert_eq!(metric(n.admin, "ron_ec_degraded_reads_total"), 4);
    wait_for_repairs(&n, data.len() as u64);
    file_is(&object, &data);
}

/// Lane 1 of the segment lane 0's `segment` is in (`segments.1/` beside `segments/`).
fn lane_1(segment: &std::path::Path) -> std::path::PathBuf {
    let store = segment.parent().unwrap().parent().unwrap();
    store.join("segments.1").join(segment.file_name().unwrap())
}

#[test]
fn packed_objects_have_a_copy_in_each_lane_that_reads_and_repairs_fall_back_on() {
    // One dir, 4+1 by default: small objects are packed, their needles in 2 lanes.
    let dir = temp_dir("ec-lanes");
    let mut n = Node::start(&dir, &["--shards", "1"]);
    let objects: Vec<(Address, Vec<u8>)> = (0..12u8)
        .map(|i| {
            let data = bytes(80 + u64::from(i), 100 + usize::from(i) * 3000);
            (upload(&n, &data), data)
        })
        .collect();
    let (lane0, rotten_at) = n.stored_at(&objects[3].0);
    let lane1 = lane_1(&lane0);
    let segment = std::fs::read(&lane0).unwrap();
    file_is(&lane1, &segment);
    assert_eq!(n.stop().code(), Some(0));

    // One needle rotten in lane 0: served from lane 1, lane 0 written again.
    flip_byte(&lane0, rotten_at + 10);
    n.restart(&["--shards", "1"]);
    let (addr, data) = &objects[3];
    let r = get(n.http, &format!("/o/{addr}")).unwrap();
    assert_eq!((r.status, &r.body), (200, data), "served verified");
    assert_eq!(metric(n.admin, "ron_ec_degraded_reads_total"), 1);
    wait_for_repairs(&n, data.len() as u64);
    file_is(&lane0, &segment);

    // Lane 0's segment lost: every object served from lane 1, and the repairs of the
    // reads write the whole segment again.
    assert_eq!(n.stop().code(), Some(0));
    std::fs::remove_file(&lane0).unwrap();
    n.restart(&["--shards", "1"]);
    for (addr, data) in &objects {
        let r = get(n.http, &format!("/o/{addr}")).unwrap();
        assert_eq!((r.status, &r.body), (200, data), "{addr} served verified");
    }
    assert_eq!(metric(n.admin, "ron_ec_degraded_reads_total"), 12);
    let total: u64 = objects.iter().map(|(_, d)| d.len() as u64).sum();
    wait_for_repairs(&n, total);
    file_is(&lane0, &segment);

    // Rot in lane 1 of an object nobody reads: `ron repair` finds it and writes it again.
    let (quiet, _) = &objects[7];
    let (_, quiet_at) = n.stored_at(quiet);
    flip_byte(&lane1, quiet_at + 1);
    let repair = format!(
        "POST /admin/repair/{quiet} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"
    );
    let r = request(n.admin, repair.as_bytes()).unwrap();
    assert_eq!(r.status, 200);
    let report = r.json();
    assert_eq!(report["outcome"], "repaired");
    assert_eq!(
        (
            report["blocks_checked"].as_u64(),
            report["bad_blocks"].as_u64()
        ),
        (Some(2), Some(1))
    );
    file_is(&lane1, &segment);

    // Bad in both lanes: a clean failure, counted; the others still served.
    assert_eq!(n.stop().code(), Some(0));
    let (both, _) = &objects[5];
    let (_, both_at) = n.stored_at(both);
    flip_byte(&lane0, both_at + 2);
    flip_byte(&lane1, both_at + 3);
    n.restart(&["--shards", "1"]);
    let r = get(n.http, &format!("/o/{both}")).unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["code"], "bad_digest");
    assert_eq!(metric(n.admin, "ron_ec_unrecoverable_total"), 1);
    let (addr, data) = &objects[6];
    let r = get(n.http, &format!("/o/{addr}")).unwrap();
    assert_eq!((r.status, &r.body), (200, data));
}

/// One operator check of an object at a time: of a burst of `ron repair`s of one
/// object, those that come while it is being checked are answered 503 `busy`. Before,
/// each started an unpaced read of the whole object, and kept reading after its 504, so
/// a client retrying a large object stacked reads without bound.
#[test]
fn a_burst_of_checks_of_one_object_runs_one_at_a_time_and_answers_the_rest_busy() {
    let n = Node::start(&temp_dir("checks-cap"), &["--shards", "1"]);
    let data = bytes(41, 32 << 20);
    let addr = upload(&n, &data);
    let repair = format!(
        "POST /admin/repair/{addr} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"
    );
    // Eight at once reach the shard's inbox within one or two of its ticks: one tick
    // takes at least four of them, and starts one check.
    let barrier = std::sync::Barrier::new(8);
    let answers: Vec<Response> = std::thread::scope(|s| {
        let asks: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    request(n.admin, repair.as_bytes()).unwrap()
                })
            })
            .collect();
        asks.into_iter().map(|a| a.join().unwrap()).collect()
    });
    let mut busy = 0;
    for r in &answers {
        let report = r.json();
        match r.status {
            200 => assert_eq!(report["outcome"], "healthy", "{report}"),
            503 => {
                assert_eq!(report["outcome"], "busy", "{report}");
                let error = report["error"].as_str().unwrap();
                assert!(error.contains("is already being checked"), "{error}");
                busy += 1;
            }
            other => panic!("{other}: {report}"),
        }
    }
    assert!(busy >= 3, "{busy} of 8 answered busy");
}
