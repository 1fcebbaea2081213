//! What survives: bit rot is never served, a crash loses no acknowledged write and
//! exposes no partial object, and a different shard count still finds every object.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_rotten_group_is_never_served_and_other_groups_still_are() {
    // Without parity (`--ec off`) a rotten group cannot be rebuilt: erasure.rs covers
    // the rebuilt case.
    let dir = temp_dir("bitrot");
    let mut n = Node::start(&dir, &["--shards", "1", "--ec", "off"]);
    let data = bytes(21, 3 * 65_536 + 1000);
    let addr = upload(&n, &data);
    assert_eq!(n.stop().code(), Some(0));

    // Flip one stored byte in group 1.
    flip_byte(&n.object_file(&addr), 70_000);

    n.restart(&["--shards", "1", "--ec", "off"]);
    let p = format!("/o/{addr}");
    for (first, last) in [(0u64, 99u64), (140_000, 140_099), (196_608, 197_607)] {
        let r = get_with(n.http, &p, &format!("Range: bytes={first}-{last}\r\n"));
        assert_eq!(r.status, 206, "group outside the rot must be served");
        assert_eq!(r.body, &data[first as usize..=last as usize]);
    }
    let r = get_with(n.http, &p, "Range: bytes=69990-70010\r\n");
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["code"], "bad_digest");
    assert!(
        !r.body.windows(21).any(|w| w == &data[69_990..70_011]),
        "no rotten bytes in the error"
    );

    // A whole-object GET starts (group 0 is fine) and is cut before the rotten group:
    // the client never receives a byte of group 1.
    let mut s = connect(n.http);
    s.write_all(format!("GET {p} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .unwrap();
    let mut received = Vec::new();
    let end = s
        .read_to_end(&mut received)
        .expect_err("a cut body ends with a reset");
    assert_eq!(end.kind(), std::io::ErrorKind::ConnectionReset, "{end}");
    let head_end = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let body = &received[head_end..];
    assert!(received.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(
        body.len() <= 65_536,
        "body went past the last good group: {}",
        body.len()
    );
    assert_eq!(body, &data[..body.len()]);
    assert!(metric(n.admin, "ron_verify_failures_total") >= 2);
}

#[test]
fn a_group_evicted_from_the_cache_is_verified_again_when_read_back_from_disk() {
    let dir = temp_dir("evicted");
    let args = ["--shards", "1", "--cache-bytes", "4MiB", "--ec", "off"];
    let n = Node::start(&dir, &args);
    let data = bytes(22, 3 * 65_536);
    let addr = upload(&n, &data);
    let p = format!("/o/{addr}");
    assert_eq!(get(n.http, &p).unwrap().body, data, "read once: cached");

    // Rot on disk under a cached group: the cache holds the verified bytes, so they are
    // what is served (sent from its memfd arena with sendfile).
    flip_byte(&n.object_file(&addr), 70_000);
    let failures = metric(n.admin, "ron_verify_failures_total");
    assert_eq!(get(n.http, &p).unwrap().body, data, "served from the cache");
    assert_eq!(metric(n.admin, "ron_verify_failures_total"), failures);

    // Push it out of the 4 MiB cache with 8 MiB of other objects read once each.
    for i in 0..8 {
        let other = bytes(100 + i, 1 << 20);
        let other_addr = upload(&n, &other);
        assert_eq!(
            get(n.http, &format!("/o/{other_addr}")).unwrap().body,
            other
        );
    }
    assert!(metric(n.admin, "ron_cache_bytes") <= 4 << 20);

    // Read back from disk, the rotten group is checked again and refused; the others
    // still come back verified.
    let r = get_with(n.http, &p, "Range: bytes=69990-70010\r\n");
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["code"], "bad_digest");
    let counted = metric_reaching(
        n.admin,
        "ron_verify_failures_total",
        failures + 1,
        Duration::from_secs(2),
    );
    assert!(counted > failures, "the failed check is not counted");
    let r = get_with(n.http, &p, "Range: bytes=140000-140099\r\n");
    assert_eq!((r.status, &r.body[..]), (206, &data[140_000..140_100]));
}

/// Writes `to` over every place `from` is found in `path` (in place, same length).
fn patch_every(path: &std::path::Path, from: &[u8], to: &[u8]) -> usize {
    use std::os::unix::fs::FileExt;
    let bytes = std::fs::read(path).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let places: Vec<usize> = bytes
        .windows(from.len())
        .enumerate()
        .filter(|(_, w)| *w == from)
        .map(|(at, _)| at)
        .collect();
    for &at in &places {
        file.write_all_at(to, at as u64).unwrap();
    }
    places.len()
}

/// An object's record whose chunk tree rotted in the index (a flipped byte of one
/// group's chaining value: it no longer hashes to the address) is removed at the first
/// read, which answers 404 — the object is missing here, so a read reads it through and
/// a pull fetches it again — and the next start stores its whole file again. Before, the
/// record answered 500 to every read, across restarts, and a pull could not replace it.
#[test]
fn a_record_whose_tree_rotted_is_removed_and_its_whole_file_stored_again() {
    let dir = temp_dir("record-tree-rot");
    let args = ["--shards", "1", "--ec", "off"];
    let mut n = Node::start(&dir, &args);
    let data = bytes(33, 300_000);
    let addr = upload(&n, &data);
    let p = format!("/o/{addr}");
    assert_eq!(n.stop().code(), Some(0));
    let cv = ron_codec::ChunkTree::of(&data).group_cvs()[2].0;
    let mut rotted = cv;
    rotted[7] ^= 0x10;
    let index = dir.join("stores/0/index/data.mdb");
    assert_eq!(
        patch_every(&index, &cv, &rotted),
        1,
        "the record's third group"
    );
    n.restart(&args);
    assert_eq!(metric(n.admin, "ron_objects_stored"), 1);
    let r = get(n.http, &p).unwrap();
    assert_eq!(
        r.status,
        404,
        "missing here: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(metric(n.admin, "ron_replication_damaged_copies_total"), 1);
    // The gauges follow the index (they stayed at one object, 300 KB, before).
    assert_eq!(
        (
            metric(n.admin, "ron_objects_stored"),
            metric(n.admin, "ron_bytes_stored")
        ),
        (0, 0)
    );
    assert_eq!(get(n.http, &p).unwrap().status, 404);
    assert_eq!(n.stop().code(), Some(0));
    n.restart(&args);
    wait_for(
        "the whole file stored again",
        Duration::from_secs(20),
        || get(n.http, &p).is_ok_and(|r| r.status == 200),
    );
    assert!(
        get(n.http, &p).unwrap().body == data,
        "served whole, verified"
    );
}

/// An object's record whose length rotted in the index (LMDB keeps no checksums, and a
/// one-group object's tree does not pin its length) while the object's group sits in
/// the cache: nothing is served as the object. Before, the cached group was cut to the
/// record's length: a 200 with 999 bytes that do not hash to the address.
#[test]
fn a_record_whose_length_rotted_never_cuts_a_cached_group_short() {
    let dir = temp_dir("record-length-rot");
    let n = Node::start(
        &dir,
        &["--shards", "1", "--meta-cache-bytes", "1", "--ec", "off"],
    );
    let data = bytes(31, 1000);
    let addr = upload(&n, &data);
    let other = format!("/o/{}", upload(&n, &bytes(32, 3000)));
    let p = format!("/o/{addr}");
    assert_eq!(get(n.http, &p).unwrap().body, data, "read once: cached");
    // A packed object's record: version 2, then its length (u64, big-endian).
    let record = |len: u64| [&[2u8][..], &len.to_be_bytes()].concat();
    let index = dir.join("stores/0/index/data.mdb");
    assert!(patch_every(&index, &record(1000), &record(999)) >= 1);
    // The other object's metadata takes the one slot: the next read of the first
    // loads its record again.
    assert_eq!(get(n.http, &other).unwrap().status, 200);
    let r = get(n.http, &p).unwrap();
    assert_ne!(
        r.status,
        200,
        "served as the object: {} bytes",
        r.body.len()
    );
    assert!(
        !r.body.starts_with(&data[..999]),
        "none of its bytes served"
    );
    assert!(metric(n.admin, "ron_verify_failures_total") >= 1);
}

#[test]
fn a_read_of_an_object_larger_than_a_quarter_of_the_cache_does_not_push_out_the_rest() {
    let dir = temp_dir("scan");
    let args = ["--shards", "1", "--cache-bytes", "4MiB", "--ec", "off"];
    let n = Node::start(&dir, &args);
    let hot = bytes(31, 100_000);
    let hot_addr = upload(&n, &hot);
    let hot_path = format!("/o/{hot_addr}");
    assert_eq!(
        get(n.http, &hot_path).unwrap().body,
        hot,
        "read once: cached"
    );
    let cached_bytes = metric(n.admin, "ron_cache_bytes");
    assert!(cached_bytes >= 100_000, "{cached_bytes}");
    // Rot under the cached copy: only a read from disk would see it.
    flip_byte(&n.object_file(&hot_addr), 5);

    // 3 MiB is over a quarter of the 4 MiB cache: streamed (twice) without being cached.
    let big = bytes(32, 3 << 20);
    let big_addr = upload(&n, &big);
    for _ in 0..2 {
        assert_eq!(get(n.http, &format!("/o/{big_addr}")).unwrap().body, big);
    }
    assert_eq!(metric(n.admin, "ron_cache_bytes"), cached_bytes);
    let r = get(n.http, &hot_path).unwrap();
    assert_eq!(
        (r.status, r.body == hot),
        (200, true),
        "still served from the cache"
    );
}

#[test]
fn a_rotten_packed_object_is_never_served_and_its_neighbours_in_the_segment_still_are() {
    // Without parity a packed object has one copy (lane); with it, see erasure.rs.
    let dir = temp_dir("packed-rot");
    let mut n = Node::start(&dir, &["--shards", "1", "--ec", "off"]);
    let objects: Vec<Vec<u8>> = (0..3)
        .map(|i| bytes(40 + i, 4_000 + 100 * i as usize))
        .collect();
    let addrs: Vec<Address> = objects.iter().map(|o| upload(&n, o)).collect();
    assert_eq!(n.stop().code(), Some(0));
    let (segment, offset) = n.stored_at(&addrs[1]);
    assert!(offset > 0, "a small object is packed in a segment");
    assert_eq!(
        n.stored_at(&addrs[0]).0,
        segment,
        "neighbours share the segment"
    );
    flip_byte(&segment, offset + 1_234);

    n.restart(&["--shards", "1", "--ec", "off"]);
    // HEAD answers what GET would: never 200 for bytes that fail (RFC 9110 §9.3.2).
    let raw = format!(
        "HEAD /o/{} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        addrs[1]
    );
    let mut s = connect(n.http);
    s.write_all(raw.as_bytes()).unwrap();
    let head = read_response(&mut s, &mut Vec::new(), true).unwrap();
    assert_eq!(head.status, 500, "HEAD of a rotten object");
    let r = get(n.http, &format!("/o/{}", addrs[1])).unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["code"], "bad_digest");
    assert!(
        !r.body.windows(16).any(|w| w == &objects[1][1_230..1_246]),
        "no rotten bytes in the error"
    );
    for i in [0, 2] {
        let r = get(n.http, &format!("/o/{}", addrs[i])).unwrap();
        assert_eq!((r.status, &r.body), (200, &objects[i]));
    }
    assert!(metric(n.admin, "ron_verify_failures_total") >= 1);
}

/// A node off any network with copies rotted past repair (no parity): the owner uploads
/// the same bytes again and they take the damaged copies' place. Before, the upload was
/// answered 200 "already stored", its bytes dropped, and every read still failed.
#[test]
fn an_upload_of_an_object_whose_copy_rotted_replaces_the_copy() {
    let dir = temp_dir("rot-upload");
    let flags = ["--shards", "1", "--ec", "off"];
    let mut n = Node::start(&dir, &flags);
    let packed = bytes(44, 5_000);
    let own_file = bytes(45, 3 * 65_536 + 1_000);
    let checked = bytes(46, 2 * 65_536);
    let objects = [
        (upload(&n, &packed), &packed),
        (upload(&n, &own_file), &own_file),
    ];
    let checked_addr = upload(&n, &checked);
    assert_eq!(n.stop().code(), Some(0));
    let (segment, offset) = n.stored_at(&objects[0].0);
    assert!(offset > 0, "the small one is packed");
    flip_byte(&segment, offset + 1_234);
    flip_byte(&n.object_file(&objects[1].0), 70_000);
    flip_byte(&n.object_file(&checked_addr), 100);
    n.restart(&flags);
    // Not read: uploaded again before anything found the damage, it is left as it is;
    // the operator's check finds it, and then the upload mends it.
    assert_eq!(put(n.http, "/o", &checked, "").status, 200);
    let raw = format!("POST /admin/repair/{checked_addr} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let report = request(n.admin, raw.as_bytes()).unwrap();
    assert_eq!(report.json()["outcome"], "damaged", "{report:?}");
    assert_eq!(put(n.http, "/o", &checked, "").status, 201);
    let r = get(n.http, &format!("/o/{checked_addr}")).unwrap();
    assert_eq!((r.status, r.body == checked), (200, true));
    for (addr, data) in objects {
        let path = format!("/o/{addr}");
        let r = get_with(n.http, &path, "Range: bytes=69990-70010\r\n");
        let r = match data.len() > 70_010 {
            true => r,
            false => get(n.http, &path).unwrap(),
        };
        assert_eq!(
            (r.status, &r.json()["code"]),
            (500, &serde_json::json!("bad_digest"))
        );
        let again = put(n.http, "/o", data, "");
        assert_eq!(again.status, 201, "stored anew: {again:?}");
        let r = get(n.http, &path).unwrap();
        assert_eq!(r.status, 200, "{addr}");
        assert!(r.body == *data, "{addr}: the bytes uploaded again");
        let twice = put(n.http, "/o", data, "");
        assert_eq!(twice.status, 200, "whole now: already stored");
    }
    assert_eq!(metric(n.admin, "ron_replication_damaged_copies_total"), 3);
    // Durable: the replacements are what a restart finds.
    assert_eq!(n.stop().code(), Some(0));
    n.restart(&flags);
    for (addr, data) in objects {
        let r = get(n.http, &format!("/o/{addr}")).unwrap();
        assert_eq!(
            (r.status, r.body == *data),
            (200, true),
            "{addr} after a restart"
        );
    }
}

#[test]
fn a_torn_segment_tail_is_never_read_and_later_objects_go_to_a_new_segment() {
    let dir = temp_dir("torn-tail");
    let mut n = Node::start(&dir, &["--shards", "1"]);
    let first = bytes(60, 10_000);
    let first_addr = upload(&n, &first);
    assert_eq!(n.stop().code(), Some(0));
    // What a crash mid-append leaves: a needle head and part of a body no record names.
    let (segment, _) = n.stored_at(&first_addr);
    let lost = bytes(61, 3_000);
    let mut torn = b"RONn".to_vec();
    torn.extend_from_slice(&3_000u32.to_be_bytes());
    torn.extend_from_slice(Address::of(&lost).as_bytes());
    torn.push(0);
    torn.extend_from_slice(&lost[..1_000]);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    file.write_all(&torn).unwrap();
    drop(file);

    n.restart(&["--shards", "1"]);
    assert_eq!(
        get(n.http, &format!("/o/{}", Address::of(&lost)))
            .unwrap()
            .status,
        404
    );
    let second = bytes(62, 20_000);
    let second_addr = upload(&n, &second);
    let (second_segment, _) = n.stored_at(&second_addr);
    assert_ne!(
        second_segment, segment,
        "appended after bytes of a crashed run"
    );
    for (addr, data) in [(first_addr, &first), (second_addr, &second)] {
        let r = get(n.http, &format!("/o/{addr}")).unwrap();
        assert_eq!((r.status, &r.body), (200, data));
    }
}

#[test]
fn kill_9_during_uploads_loses_no_acknowledged_object() {
    kill_9_during_uploads("crash", 1);
}

/// With four data dirs (2+2), every acknowledged object is back with every block of
/// every stripe present and valid (`ron repair` finds it healthy).
#[test]
fn kill_9_during_uploads_over_four_dirs_leaves_every_block_of_every_acknowledged_object() {
    kill_9_during_uploads("crash-dirs", 4);
}

fn kill_9_during_uploads(name: &str, dirs: usize) {
    let dir = temp_dir(name);
    let others: Vec<String> = (1..dirs)
        .map(|d| dir.with_extension(format!("d{d}")).display().to_string())
        .collect();
    let mut args = vec!["--shards", "2"];
    for other in &others {
        args.extend(["--data-dir", other.as_str()]);
    }
    let mut n = Node::start(&dir, &args);
    let acked: Arc<Mutex<HashMap<Address, usize>>> = Arc::default();
    let attempted: Arc<Mutex<Vec<(Address, usize)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..8u64 {
        let (acked, attempted, stop) = (
            Arc::clone(&acked),
            Arc::clone(&attempted),
            Arc::clone(&stop),
        );
        let http = n.http;
        clients.push(std::thread::spawn(move || {
            for i in 0..10_000u64 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let seed = client * 100_000 + i;
                let len = [10usize, 5_000, 65_536, 150_000, 400_000][(seed % 5) as usize];
                let data = bytes(seed, len);
                let addr = Address::of(&data);
                attempted.lock().unwrap().push((addr, len));
                let mut raw = format!("PUT /o HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n").into_bytes();
                raw.extend_from_slice(&data);
                match request(http, &raw) {
                    Ok(r) if r.status == 201 || r.status == 200 => {
                        acked.lock().unwrap().insert(addr, len);
                    }
                    _ => return, // the node is gone
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 40 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let crashed = n.pid();
    n.kill9();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 40,
        "too few uploads before the crash: {}",
        acked.len()
    );

    n.restart(&args);
    // The crashed run's temp files are gone (temp names carry the process id); the new
    // run's own — the orphan sweep storing again the files a crash left unindexed — are
    // its business.
    let of_the_crash = format!("-{crashed}-");
    for temp in std::iter::once(dir.clone()).chain(others.iter().map(std::path::PathBuf::from)) {
        let tmp: Vec<_> = std::fs::read_dir(temp.join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains(&of_the_crash))
            .collect();
        assert!(tmp.is_empty(), "temp files survived the restart: {tmp:?}");
    }
    for (addr, len) in &acked {
        let r = get(n.http, &format!("/o/{addr}")).unwrap();
        assert_eq!(r.status, 200, "acknowledged {addr} lost");
        assert_eq!(r.body.len(), *len);
        assert_eq!(Address::of(&r.body), *addr, "acknowledged {addr} corrupt");
        // With full redundancy: an object with a file of its own has all its parity
        // (4+1 by default), and no read needed it.
        if dirs == 1 && *len > 65_536 {
            assert_parity_intact(&n, addr, &r.body, 4, 1);
        }
        // Every block of every stripe present and valid; a packed object (one dir, at
        // most 64 KiB) whole in both its lanes.
        if dirs > 1 || *len <= 65_536 {
            let raw = format!("POST /admin/repair/{addr} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let report = request(n.admin, raw.as_bytes()).unwrap().json();
            assert_eq!(report["outcome"], "healthy", "{addr}: {report}");
        }
    }
    assert_eq!(metric(n.admin, "ron_ec_degraded_reads_total"), 0);
    // Every attempt is either absent or whole: nothing half-written is visible.
    for (addr, len) in attempted.lock().unwrap().iter() {
        let r = get(n.http, &format!("/o/{addr}")).unwrap();
        match r.status {
            404 => assert!(!acked.contains_key(addr)),
            200 => {
                assert_eq!(r.body.len(), *len);
                assert_eq!(Address::of(&r.body), *addr);
            }
            other => panic!("{addr}: unexpected {other}"),
        }
    }
}

/// The index moved aside (an operator's repair of a damaged LMDB) while the segments
/// stay: the next start indexes every packed object again from its segments, serves
/// them all, and keeps every segment. Before, it started past the segments, and the
/// start-up compaction unlinked every sealed one.
#[test]
fn a_store_whose_index_was_moved_aside_indexes_its_segments_again() {
    let dir = temp_dir("index-moved-aside");
    let args = ["--shards", "1", "--ec", "off"];
    let mut n = Node::start(&dir, &args);
    let mut stored = Vec::new();
    for round in 0..2u64 {
        for i in 0..5 {
            let data = bytes(100 + round * 10 + i, 2_000 + 500 * i as usize);
            stored.push((upload(&n, &data), data));
        }
        assert_eq!(n.stop().code(), Some(0));
        n.restart(&args);
    }
    assert_eq!(n.stop().code(), Some(0));
    let before = segment_bytes(&n);
    let index = dir.join("stores/0/index");
    std::fs::rename(&index, dir.join("index.damaged")).unwrap();
    n.restart(&args);
    for (addr, data) in &stored {
        let r = get(n.http, &format!("/o/{addr}")).unwrap();
        assert_eq!(r.status, 200, "{addr}");
        assert!(r.body == *data);
    }
    assert_eq!(segment_bytes(&n), before, "every segment kept");
}

#[test]
fn a_different_shard_count_still_serves_every_object() {
    let dir = temp_dir("reshard");
    let mut n = Node::start(&dir, &["--shards", "2"]);
    let objects: Vec<(Address, Vec<u8>)> = (0..24)
        .map(|i| {
            let data = bytes(500 + i, 1_000 + (i as usize) * 9_000);
            (upload(&n, &data), data)
        })
        .collect();
    assert_eq!(n.stop().code(), Some(0));
    for shards in ["1", "3", "2"] {
        n.restart(&["--shards", shards]);
        for (addr, data) in &objects {
            let r = get(n.http, &format!("/o/{addr}")).unwrap();
            assert_eq!(r.status, 200, "{addr} with {shards} shards");
            assert_eq!(&r.body, data);
        }
        let extra = bytes(900 + shards.parse::<u64>().unwrap(), 77_777);
        let addr = upload(&n, &extra);
        assert_eq!(get(n.http, &format!("/o/{addr}")).unwrap().body, extra);
        assert_eq!(n.stop().code(), Some(0));
    }
}

/// Bytes of every segment file of the node's stores (lane 0).
fn segment_bytes(n: &Node) -> u64 {
    let mut total = 0;
    for store in std::fs::read_dir(n.data_dir.join("stores")).unwrap() {
        let segments = store.unwrap().path().join("segments");
        for segment in std::fs::read_dir(segments).into_iter().flatten() {
            total += segment.unwrap().metadata().unwrap().len();
        }
    }
    total
}

/// Small objects the operator removed leave their needles as dead space; a start
/// compacts the segments at least half dead (those the checkpoint has passed): what is
/// live moves, still served verified, and the segment files shrink. Before, the space
/// of every small object removed (or demoted and evicted) was never given back.
#[test]
fn a_start_compacts_segments_mostly_removed_and_serves_what_moved() {
    let dir = temp_dir("compaction");
    let mut n = Node::start(&dir, &["--shards", "1"]);
    let objects: Vec<Vec<u8>> = (0..40u64).map(|i| bytes(100 + i, 20_000)).collect();
    let addrs: Vec<Address> = objects.iter().map(|o| upload(&n, o)).collect();
    for addr in &addrs[10..] {
        let raw = format!(
            "POST /admin/remove/{addr} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let removed = request(n.admin, raw.as_bytes()).unwrap();
        assert_eq!(removed.status, 200, "{removed:?}");
    }
    assert_eq!(n.stop().code(), Some(0));
    // The next run writes a segment of its own: the first one is sealed behind it.
    n.restart(&["--shards", "1"]);
    let later = bytes(99, 5_000);
    let later_addr = upload(&n, &later);
    assert_eq!(n.stop().code(), Some(0));
    let before = segment_bytes(&n);
    assert!(before >= 40 * 20_000, "{before}");

    n.restart(&["--shards", "1"]);
    let after = segment_bytes(&n);
    assert!(
        after < 12 * 20_000 + 2 * 5_000,
        "segments {before} bytes before the start, {after} after"
    );
    for (addr, data) in addrs[..10]
        .iter()
        .zip(&objects)
        .chain([(&later_addr, &later)])
    {
        let r = get(n.http, &format!("/o/{addr}")).unwrap();
        assert_eq!((r.status, &r.body), (200, data), "{addr}");
    }
    for addr in &addrs[10..] {
        assert_eq!(get(n.http, &format!("/o/{addr}")).unwrap().status, 404);
    }
    // Moved once: the next start has nothing to compact and loses nothing.
    assert_eq!(n.stop().code(), Some(0));
    n.restart(&["--shards", "1"]);
    assert_eq!(segment_bytes(&n), after);
    for (addr, data) in addrs[..10].iter().zip(&objects) {
        let r = get(n.http, &format!("/o/{addr}")).unwrap();
        assert_eq!((r.status, &r.body), (200, data));
    }
}

/// A btrfs filesystem in an image file, mounted on a loop device for one test. btrfs
/// checksums its data: a byte flipped in the image makes every read of its block fail
/// with EIO, as a bad sector does (dm-error is not in every kernel; loop and btrfs are).
struct BtrfsImage {
    image: std::path::PathBuf,
    mount: std::path::PathBuf,
}

impl BtrfsImage {
    const BYTES: u64 = 160 << 20;

    fn new(dir: &std::path::Path) -> BtrfsImage {
        std::fs::create_dir_all(dir).unwrap();
        let image = dir.join("btrfs.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(Self::BYTES)
            .unwrap();
        run_ok("mkfs.btrfs", &["-q", "-f", image.to_str().unwrap()]);
        let mount = dir.join("mnt");
        std::fs::create_dir_all(&mount).unwrap();
        let fs = BtrfsImage { image, mount };
        fs.mount();
        fs
    }

    fn mount(&self) {
        run_ok(
            "mount",
            &[
                "-o",
                "loop",
                self.image.to_str().unwrap(),
                self.mount.to_str().unwrap(),
            ],
        );
    }

    fn unmount(&self) {
        run_ok("umount", &[self.mount.to_str().unwrap()]);
    }

    /// Flips one byte of the (unmounted) image inside each of the first `places_max`
    /// places `bytes` are found; returns how many places there are.
    fn flip_inside(&self, bytes: &[u8], places_max: usize) -> usize {
        let mut image = std::fs::read(&self.image).unwrap();
        let found: Vec<usize> = image
            .windows(bytes.len())
            .enumerate()
            .filter(|(_, w)| *w == bytes)
            .map(|(at, _)| at)
            .collect();
        for at in found.iter().take(places_max) {
            image[at + bytes.len() / 2] ^= 0x20;
        }
        std::fs::write(&self.image, &image).unwrap();
        found.len()
    }
}

impl Drop for BtrfsImage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.mount)
            .status();
        let _ = std::fs::remove_file(&self.image);
    }
}

fn run_ok(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every one of `objects` is served whole by `n`.
fn assert_served<'a>(n: &Node, objects: impl Iterator<Item = (&'a Address, &'a Vec<u8>)>) {
    for (addr, data) in objects {
        let r = get(n.http, &format!("/o/{addr}")).unwrap();
        assert_eq!((r.status, &r.body), (200, data), "{addr}");
    }
}

/// A packed object whose block the disk cannot read (EIO: here btrfs's checksum
/// refusal) in a segment the start compacts: the compaction goes on, the segment is
/// kept for it, and every other object is served; with the index lost, the replay
/// passes over it and indexes the rest. Before, the one error ended the compaction of
/// the whole store at every start ("segment compaction failed"), and refused the start
/// of the whole node when the replay met it ("read segment …: Input/output error").
#[test]
#[ignore = "needs root and btrfs-progs (a btrfs image on a loop device): run by scripts/test-all.sh"]
fn an_unreadable_block_in_a_segment_does_not_refuse_the_start() {
    let work = temp_dir("unreadable-segment");
    let fs = BtrfsImage::new(&work);
    let mut n = Node::start(&fs.mount.join("data"), &["--shards", "1"]);
    let objects: Vec<Vec<u8>> = (0..12u64).map(|i| bytes(300 + i, 20_000)).collect();
    let addrs: Vec<Address> = objects.iter().map(|o| upload(&n, o)).collect();
    for addr in &addrs[4..] {
        let raw = format!(
            "POST /admin/remove/{addr} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(request(n.admin, raw.as_bytes()).unwrap().status, 200);
    }
    assert_eq!(n.stop().code(), Some(0));
    // The next run writes a segment of its own: the first is sealed behind it.
    n.restart(&["--shards", "1"]);
    let later = bytes(399, 5_000);
    let later_addr = upload(&n, &later);
    assert_eq!(n.stop().code(), Some(0));
    fs.unmount();
    // Each needle is in two lanes (`segments`, `segments.1`): object 1 is unreadable in
    // both, object 2 in one (it moves from the other).
    assert_eq!(fs.flip_inside(&objects[1][8_000..8_064], 2), 2);
    assert_eq!(fs.flip_inside(&objects[2][8_000..8_064], 1), 2);
    fs.mount();

    n.try_restart(&["--shards", "1"])
        .expect("the start goes on past an unreadable block");
    assert!(
        n.stderr()
            .contains("compaction: a live needle cannot be read"),
        "{}",
        n.stderr()
    );
    let readable = [0, 2, 3].map(|i| (&addrs[i], &objects[i]));
    assert_served(&n, readable.into_iter().chain([(&later_addr, &later)]));
    let unreadable = get(n.http, &format!("/o/{}", addrs[1])).unwrap();
    assert!(unreadable.status >= 500, "{unreadable:?}");
    assert_eq!(n.stop().code(), Some(0));

    // The index lost: the start reads every needle of every segment back, and passes
    // over the one no lane can give, as it passes over rot.
    std::fs::remove_dir_all(n.data_dir.join("stores/0/index")).unwrap();
    n.try_restart(&["--shards", "1"])
        .expect("the replay goes on past an unreadable block");
    assert!(
        n.stderr().contains("a segment's bytes cannot be read"),
        "{}",
        n.stderr()
    );
    assert_served(&n, readable.into_iter().chain([(&later_addr, &later)]));
    assert_eq!(
        get(n.http, &format!("/o/{}", addrs[1])).unwrap().status,
        404
    );
    assert_eq!(n.stop().code(), Some(0));
}

/// Where `addr`'s file of its own is in the node's one data dir, if it has one.
fn object_file(n: &Node, addr: &Address) -> Option<std::path::PathBuf> {
    let hex = addr.to_string()[3..].to_string();
    std::fs::read_dir(n.data_dir.join("stores"))
        .unwrap()
        .map(|store| {
            store
                .unwrap()
                .path()
                .join("objects")
                .join(&hex[..2])
                .join(&hex)
        })
        .find(|path| path.exists())
}

/// Object files no index record names — what a crash between a batch's renames into
/// `objects/` and its index commit leaves, a large object's data and parity — are judged
/// by their bytes at the next start: files whose bytes are not their name's object are
/// removed, a file whose bytes are its object is stored again with a record (as a whole
/// needle is replayed), and every stored object's files stay. Before the sweep, nothing
/// looked: they stayed for good.
#[test]
fn object_files_no_record_names_are_removed_or_adopted_by_their_bytes_at_the_next_start() {
    let mut n = Node::start(&temp_dir("orphans"), &["--shards", "1"]);
    let kept = bytes(21, 300_000);
    let addr = upload(&n, &kept);
    let stored = object_file(&n, &addr).expect("a file of its own");
    n.stop();
    let objects_dir = |addr: &Address| {
        let hex = addr.to_string()[3..].to_string();
        let dir = stored.parent().unwrap().parent().unwrap().join(&hex[..2]);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(hex)
    };
    let named = objects_dir(&Address::of(b"renamed into objects/, never indexed"));
    let parity = std::path::PathBuf::from(format!("{}.parity", named.display()));
    std::fs::write(&named, bytes(22, 300_000)).unwrap();
    std::fs::write(&parity, bytes(23, 65_536)).unwrap();
    let whole = bytes(24, 300_000);
    let whole_addr = Address::of(&whole);
    std::fs::write(objects_dir(&whole_addr), &whole).unwrap();
    n.restart(&["--shards", "1"]);
    wait_for(
        "the files that are not their object removed",
        Duration::from_secs(20),
        || !named.exists() && !parity.exists(),
    );
    wait_for(
        "the whole one stored again",
        Duration::from_secs(20),
        || get(n.http, &format!("/o/{whole_addr}")).is_ok_and(|r| r.status == 200),
    );
    let r = get(n.http, &format!("/o/{whole_addr}")).unwrap();
    assert!(r.body == whole, "served verified, whole");
    assert!(stored.exists(), "a stored object's file stays");
    let r = get(n.http, &format!("/o/{addr}")).unwrap();
    assert!(r.status == 200 && r.body == kept, "{}", r.status);
    n.stop();
}

/// An index lost (here: moved aside) leaves every object in a file of its own unnamed:
/// acknowledged objects whose bytes are whole. The next start stores each again from its
/// own bytes and serves it, beside the packed objects its segments' replay indexes.
/// Before, the sweep of unrecorded files unlinked every one of them.
#[test]
fn a_lost_index_loses_no_object_in_a_file_of_its_own() {
    let dir = temp_dir("index-lost-own-files");
    let args = ["--shards", "2"];
    let mut n = Node::start(&dir, &args);
    let stored: Vec<(Address, Vec<u8>)> = (0..6u64)
        .map(|i| {
            let data = bytes(300 + i, [2_000, 300_000, 1_500_000][i as usize % 3]);
            (upload(&n, &data), data)
        })
        .collect();
    assert_eq!(n.stop().code(), Some(0));
    for store in std::fs::read_dir(dir.join("stores")).unwrap() {
        let store = store.unwrap().path();
        let aside = dir.join(format!(
            "index.lost.{}",
            store.file_name().unwrap().to_string_lossy()
        ));
        std::fs::rename(store.join("index"), aside).unwrap();
    }
    n.restart(&args);
    for (addr, data) in &stored {
        wait_for(&format!("{addr} served"), Duration::from_secs(30), || {
            get(n.http, &format!("/o/{addr}")).is_ok_and(|r| r.status == 200)
        });
        let r = get(n.http, &format!("/o/{addr}")).unwrap();
        assert!(r.body == *data, "{addr} served whole");
    }
    assert_eq!(n.stop().code(), Some(0));
    n.restart(&args);
    for (addr, _) in &stored {
        let r = get(n.http, &format!("/o/{addr}")).unwrap();
        assert_eq!(r.status, 200, "{addr}: its new record is durable");
    }
}
