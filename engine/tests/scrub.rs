//! The scrubber and the operator's check of one object, against the real binary: rot in
//! objects nobody reads is found and rebuilt on disk, the scrub keeps to its rate, a
//! pause holds and survives a restart, and `ron repair` checks and repairs one object.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ron_codec::Address;

const GROUP: u64 = 65_536;

#[test]
fn the_scrubber_finds_rot_nobody_reads_and_rebuilds_it_on_disk() {
    let dir = temp_dir("scrub-rot");
    let mut n = Node::start(&dir, &["--shards", "1"]);
    let a = bytes(51, 9 * GROUP as usize + 300);
    let b = bytes(52, 6 * GROUP as usize);
    let small = bytes(53, 4000);
    let (addr_a, addr_b) = (upload(&n, &a), upload(&n, &b));
    let small_addr = upload(&n, &small);
    let parity_b = std::fs::read(parity_file(&n, &addr_b)).unwrap();
    assert_eq!(n.stop().code(), Some(0));
    // A data block of A's stripe 1 and B's stripe 1 parity block: both within 4+1;
    // and the small object's copy in its segment's lane 1 (`segments.1/`).
    flip_byte(&n.object_file(&addr_a), 5 * GROUP + 11);
    flip_byte(&parity_file(&n, &addr_b), GROUP + 99);
    let (segment, small_at) = n.stored_at(&small_addr);
    let lane_1 = segment
        .parent()
        .unwrap()
        .with_file_name("segments.1")
        .join(segment.file_name().unwrap());
    let segment_bytes = std::fs::read(&segment).unwrap();
    flip_byte(&lane_1, small_at + 7);

    n.restart(&["--shards", "1", "--scrub-rate", "8MiB"]);
    wait_for("a whole scrub pass", Duration::from_secs(20), || {
        gauge(n.admin, "ron_scrub_passes_total{shard=\"0\"}") >= Some(1.0)
    });
    assert_eq!(metric(n.admin, "ron_scrub_objects_total"), 3);
    // Parity: 3 + 2 stripes of A and B; the small object: a copy in each of 2 lanes.
    let stored = a.len() + b.len() + 2 * small.len() + 5 * GROUP as usize;
    assert_eq!(metric(n.admin, "ron_scrub_bytes_total"), stored as u64);
    assert_eq!(metric(n.admin, "ron_scrub_bad_blocks_total"), 3);
    assert_eq!(metric(n.admin, "ron_scrub_unrepairable_blocks_total"), 0);
    // Two blocks, and the small object's whole needle (head, body, padding).
    let repaired = metric(n.admin, "ron_ec_repair_bytes_total");
    let needle_max = small.len() as u64 + 41 + 255 + 7;
    assert!(
        (2 * GROUP + small.len() as u64..=2 * GROUP + needle_max).contains(&repaired),
        "{repaired} bytes repaired"
    );
    assert_eq!(
        metric(n.admin, "ron_ec_degraded_reads_total"),
        0,
        "nobody read"
    );
    file_is(&n.object_file(&addr_a), &a);
    file_is(&parity_file(&n, &addr_b), &parity_b);
    file_is(&lane_1, &segment_bytes);
    assert_parity_intact(&n, &addr_a, &a, 4, 1);
    let status = get(n.admin, "/admin/scrub").unwrap().json();
    assert_eq!(
        (status["passes"].as_u64(), status["bad_blocks"].as_u64()),
        (Some(1), Some(3))
    );
}

#[test]
fn the_scrub_keeps_to_its_rate_and_a_pause_saves_its_place_across_a_crash() {
    let dir = temp_dir("scrub-pace");
    let mut n = Node::start(&dir, &["--shards", "1"]);
    for seed in 0..12 {
        upload(&n, &bytes(60 + seed, 16 * GROUP as usize));
    }
    assert_eq!(n.stop().code(), Some(0));

    // 12 MiB of data and 3 MiB of parity at 1 MiB/s: a pass takes ~15 s.
    let rate = 1u64 << 20;
    let launched = Instant::now();
    n.restart(&["--shards", "1", "--scrub-rate", "1MiB"]);
    let admin = n.admin.to_string();
    let mut checks = 0;
    while launched.elapsed() < Duration::from_secs(3) {
        let scrubbed = metric(n.admin, "ron_scrub_bytes_total");
        // Reads start only once those before them are paid for: one stripe (4 data and
        // 1 parity block) may be read ahead of the rate.
        let allowed = rate * launched.elapsed().as_millis() as u64 / 1000 + 5 * GROUP;
        assert!(
            scrubbed <= allowed,
            "scrubbed {scrubbed} B, more than {allowed} B"
        );
        checks += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        checks > 5 && metric(n.admin, "ron_scrub_bytes_total") > 0,
        "it scrubs"
    );

    let pause = || {
        let paused = ron(&["scrub", "pause", "--admin", &admin]);
        assert!(paused.status.success(), "{paused:?}");
        wait_for("the pause", Duration::from_secs(5), || {
            gauge(n.admin, "ron_scrub_paused{shard=\"0\"}") == Some(1.0)
        });
        // The object under way (1.25 MiB: 1.25 s at this rate) ends; then nothing moves.
        std::thread::sleep(Duration::from_millis(2500));
        let held = metric(n.admin, "ron_scrub_bytes_total");
        let progress = gauge(n.admin, "ron_scrub_progress_ratio{shard=\"0\"}").unwrap();
        std::thread::sleep(Duration::from_millis(1000));
        assert_eq!(metric(n.admin, "ron_scrub_bytes_total"), held, "paused");
        assert!(progress > 0.0 && progress < 1.0, "mid-pass: {progress}");
        let status = ron(&["scrub", "status", "--admin", &admin]);
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        assert_eq!(status["paused"], true);
        (held, progress)
    };
    let (held, _) = pause();
    let resumed = ron(&["scrub", "resume", "--admin", &admin]);
    assert!(resumed.status.success(), "{resumed:?}");
    wait_for(
        "the scrub to go on after resume",
        Duration::from_secs(10),
        || metric(n.admin, "ron_scrub_bytes_total") > held,
    );
    let (_, progress) = pause();

    // A crash after the pause (no stop to save anything), then a start: the scrub
    // resumes where the pause saved it, not at the start (slowly, so that no object is
    // done before the progress is read: one takes 5 s at this rate). The pause itself is
    // not kept across a restart (docs/OPERATIONS.md).
    n.kill9();
    n.restart(&["--shards", "1", "--scrub-rate", "256KiB"]);
    let resumed = gauge(n.admin, "ron_scrub_progress_ratio{shard=\"0\"}").unwrap();
    assert!(
        (resumed - progress).abs() < 1e-9,
        "resumed at {resumed}, paused at {progress}"
    );
    let status = ron(&["scrub", "status", "--admin", &admin]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["paused"], false, "{status}");
    let scrubbed = metric(n.admin, "ron_scrub_bytes_total");
    wait_for("the scrub to go on", Duration::from_secs(10), || {
        metric(n.admin, "ron_scrub_bytes_total") > scrubbed
    });
}

#[test]
fn ron_repair_checks_one_object_now_and_rebuilds_what_its_parity_covers() {
    let dir = temp_dir("scrub-repair");
    let mut n = Node::start(&dir, &["--shards", "2"]);
    let data = bytes(71, 8 * GROUP as usize + 17);
    let addr = upload(&n, &data);
    let parity = std::fs::read(parity_file(&n, &addr)).unwrap();
    assert_eq!(n.stop().code(), Some(0));
    flip_byte(&n.object_file(&addr), 2 * GROUP + 5);
    flip_byte(&parity_file(&n, &addr), GROUP + 5);
    n.restart(&["--shards", "2", "--ec", "off"]);
    let admin = n.admin.to_string();
    let hash = addr.to_string();

    let out = ron(&["repair", &hash, "--admin", &admin]);
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "repaired");
    assert_eq!(report["hash"], hash.as_str());
    // Three stripes (4 + 4 + 1 groups), each with one parity block.
    assert_eq!(report["blocks_checked"], 9 + 3);
    assert_eq!(
        (
            report["bad_blocks"].as_u64(),
            report["repaired_blocks"].as_u64()
        ),
        (Some(2), Some(2))
    );
    file_is(&n.object_file(&addr), &data);
    file_is(&parity_file(&n, &addr), &parity);
    let again = ron(&["repair", &hash, "--admin", &admin]);
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["outcome"], "healthy");

    // Written with --ec off: rot is found and reported, not repairable; exit 1, the
    // report on stdout (where `ron repair X > report.json` puts it), the verdict on
    // stderr.
    let plain = bytes(72, 3 * GROUP as usize);
    let plain_addr = upload(&n, &plain);
    flip_byte(&n.object_file(&plain_addr), GROUP + 1);
    let out = ron(&["repair", &plain_addr.to_string(), "--admin", &admin]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["outcome"].as_str(), report["protected"].as_bool()),
        (Some("damaged"), Some(false))
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the report says the copy is neither healthy nor repaired"),
        "{stderr}"
    );

    let absent = Address::of(b"never stored").to_string();
    let out = ron(&["repair", &absent, "--admin", &admin]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("404 report: the report says not_found"));
    // The report on stdout whatever its status, as the docs say (before: on stderr).
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "not_found");
    let r = request(
        n.admin,
        b"POST /admin/repair/b3:xyz HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 400);
    let r = request(
        n.admin,
        format!("GET /admin/repair/{hash} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 405);
}
