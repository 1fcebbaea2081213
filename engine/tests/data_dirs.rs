//! Several data dirs against the real binary (issue 14): objects' blocks spread over
//! four dirs with the default 2+2 code, a whole dir deleted while the node serves loses
//! no object, and a node restarted with that dir empty (a replaced disk) serves every
//! object verified at once and rebuilds the dir, byte for byte, with its scrubber. The
//! dirs are checked at every start: order, count, owner, the code they need, and a disk
//! that did not mount (an empty dir where the others are mount points).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use ron_codec::Address;

const GROUP: usize = 65_536;

/// The data dirs of a test node: `root/d0` (the harness's own `--data-dir`) and the
/// flags that add the others.
fn dirs(root: &Path, count: usize) -> (Vec<PathBuf>, Vec<String>) {
    let dirs: Vec<PathBuf> = (0..count).map(|d| root.join(format!("d{d}"))).collect();
    let flags = dirs[1..]
        .iter()
        .flat_map(|d| ["--data-dir".to_string(), d.display().to_string()])
        .collect();
    (dirs, flags)
}

fn args<'a>(flags: &'a [String], more: &[&'a str]) -> Vec<&'a str> {
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend_from_slice(more);
    args
}

/// Every file under `dir/stores` but the index (LMDB pages differ from one writer to
/// the next; their records are checked through reads): path relative to `dir` → bytes.
fn object_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.join("stores")];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() && path.file_name().is_some_and(|n| n != "index") {
                stack.push(path);
            } else if path.is_file() {
                let rel = path.strip_prefix(dir).unwrap().to_path_buf();
                files.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// The dirs (by position) holding a data file and a parity file of `addr`.
fn dirs_holding(dirs: &[PathBuf], addr: &Address) -> (Vec<usize>, Vec<usize>) {
    let hex = &addr.to_string()[3..];
    let has = |d: &Path, suffix: &str| {
        std::fs::read_dir(d.join("stores")).unwrap().any(|store| {
            let objects = store.unwrap().path().join("objects").join(&hex[..2]);
            objects.join(format!("{hex}{suffix}")).exists()
        })
    };
    let data = (0..dirs.len()).filter(|d| has(&dirs[*d], "")).collect();
    let parity = (0..dirs.len())
        .filter(|d| has(&dirs[*d], ".parity"))
        .collect();
    (data, parity)
}

fn assert_all_served(n: &Node, objects: &[(Address, Vec<u8>)]) {
    for (addr, data) in objects {
        let r = get(n.http, &format!("/o/{addr}")).unwrap();
        assert_eq!(r.status, 200, "{addr}: {r:?}");
        assert!(r.body == *data, "{addr}: served bytes differ");
    }
}

/// Objects of these sizes, in turn: empty, one packed-size, one group, a byte past it,
/// several stripes' worth.
const SIZES: [usize; 7] = [
    0,
    100,
    GROUP,
    GROUP + 1,
    3 * GROUP + 5,
    5 * GROUP,
    17 * GROUP + 999,
];

/// Removes every store's index replica in every one of `dirs` (a lost index).
fn remove_every_index(dirs: &[PathBuf]) {
    for dir in dirs {
        for store in std::fs::read_dir(dir.join("stores")).unwrap() {
            let index = store.unwrap().path().join("index");
            if index.exists() {
                std::fs::remove_dir_all(index).unwrap();
            }
        }
    }
}

/// A running node over four data dirs, its flags and the objects it holds.
struct FourDirNode {
    dirs: Vec<PathBuf>,
    flags: Vec<String>,
    node: Node,
    objects: Vec<(Address, Vec<u8>)>,
}

/// A two-shard node over four data dirs under `name` holding `count` objects of
/// [`SIZES`] in turn (the empty one skipped when `skip_empty`), seeded from `seed`.
fn four_dir_node(name: &str, count: usize, seed: u64, skip_empty: bool) -> FourDirNode {
    let (dirs, flags) = dirs(&temp_dir(name), 4);
    let node = Node::start(&dirs[0], &args(&flags, &["--shards", "2"]));
    let sizes = &SIZES[usize::from(skip_empty)..];
    let objects = (0..count)
        .map(|i| {
            let data = bytes(seed + i as u64, sizes[i % sizes.len()]);
            (upload(&node, &data), data)
        })
        .collect();
    FourDirNode {
        dirs,
        flags,
        node,
        objects,
    }
}

/// A dir replaced while a scrub pass is part way: every store's pass starts again from
/// its first object, so the pass's end means the dir rebuilt. Before, the pass resumed
/// where it was, ended, and raised `ron_scrub_passes_total` with the objects before that
/// place never rebuilt onto the new disk (nothing read them here: reads repair what they
/// touch). The node made with two stores runs one shard, which scrubs both: the first
/// done, the second part way — a store a pass ahead starts again too (it was passed over
/// until the other caught up, and the count rose with its blocks unrebuilt).
#[test]
fn a_replacement_dir_restarts_a_scrub_pass_that_was_part_way() {
    let (dirs, flags) = dirs(&temp_dir("dirs-scrub-restart"), 4);
    let mut n = Node::start(&dirs[0], &args(&flags, &["--shards", "2"]));
    for i in 0..12 {
        upload(&n, &bytes(300 + i, 300_000));
    }
    assert_eq!(n.stop().code(), Some(0));
    // 12 × 300 KB and their parity at 256 KiB/s: ~2 s an object. Paused part way through
    // the second store (the pause saves where it is).
    n.restart(&args(&flags, &["--shards", "1", "--scrub-rate", "256KiB"]));
    let progress = || gauge(n.admin, "ron_scrub_progress_ratio{shard=\"0\"}");
    wait_for("the pass part way", Duration::from_secs(90), || {
        progress() >= Some(0.6)
    });
    let admin = n.admin.to_string();
    let paused = ron(&["scrub", "pause", "--admin", &admin]);
    assert!(paused.status.success(), "{paused:?}");
    wait_for("the pause", Duration::from_secs(10), || {
        gauge(n.admin, "ron_scrub_paused{shard=\"0\"}") == Some(1.0)
    });
    let passes_of = |n: &Node| gauge(n.admin, "ron_scrub_passes_total{shard=\"0\"}");
    let passes = passes_of(&n);
    assert_eq!(n.stop().code(), Some(0));

    let lost = object_files(&dirs[2]);
    assert!(lost.len() >= 12, "dir 2 holds {} files", lost.len());
    std::fs::remove_dir_all(&dirs[2]).unwrap();
    n.restart(&args(&flags, &["--shards", "1", "--scrub-rate", "512MiB"]));
    assert!(n.stderr().contains("every store's scrub pass starts again"));
    wait_for("the pass's end", Duration::from_secs(60), || {
        passes_of(&n) > passes
    });
    wait_for("queued repairs", Duration::from_secs(20), || {
        metric(n.admin, "ron_ec_missing_shards") == 0
    });
    let rebuilt = object_files(&dirs[2]);
    let missing: Vec<&PathBuf> = lost.keys().filter(|p| !rebuilt.contains_key(*p)).collect();
    assert!(missing.is_empty(), "not rebuilt by the pass: {missing:?}");
    assert!(
        dirs.iter().all(|d| !d.join("scrub-restart").exists()),
        "the restart's mark is gone once every shard took it"
    );
    assert_eq!(n.stop().code(), Some(0));
}

#[test]
fn a_four_dir_node_loses_a_dir_while_serving_and_rebuilds_it_onto_an_empty_replacement() {
    let FourDirNode {
        dirs,
        flags,
        node: mut n,
        objects,
    } = four_dir_node("dirs-four", 28, 900, false);
    // 2+2 over 4 dirs: a one-group object is one data block and two parity blocks in
    // three dirs; longer ones have data in two dirs and parity in the other two.
    for (addr, data) in &objects {
        let (data_dirs, parity_dirs) = dirs_holding(&dirs, addr);
        let (want_data, want_parity) = match data.len() {
            0 => (0, 0),
            len if len <= GROUP => (1, 2),
            _ => (2, 2),
        };
        assert_eq!(
            (data_dirs.len(), parity_dirs.len()),
            (want_data, want_parity),
            "{addr} ({} bytes): data in {data_dirs:?}, parity in {parity_dirs:?}",
            data.len()
        );
        assert!(data_dirs.iter().all(|d| !parity_dirs.contains(d)));
    }
    // Every object of two groups or more has a block in every dir.
    let lost = object_files(&dirs[2]);
    assert!(lost.len() >= 16, "dir 2 holds {} files", lost.len());

    // The disk of dir 2 dies while the node serves.
    std::fs::remove_dir_all(&dirs[2]).unwrap();
    assert_all_served(&n, &objects);
    let (addr, data) = &objects[6];
    let r = get_with(
        n.http,
        &format!("/o/{addr}"),
        "Range: bytes=70000-900000\r\n",
    );
    assert_eq!((r.status, &r.body[..]), (206, &data[70_000..=900_000]));
    assert_eq!(metric(n.admin, "ron_ec_unrecoverable_total"), 0);
    assert_eq!(n.stop().code(), Some(0));

    // A new, empty disk in its place: the node starts, serves everything verified at
    // once, and the scrubber rebuilds the dir while it serves.
    std::fs::remove_dir_all(&dirs[2]).unwrap_or_default();
    let rebuild = args(&flags, &["--shards", "2", "--scrub-rate", "512MiB"]);
    n.restart(&rebuild);
    assert!(
        n.stderr().contains("taken as a replacement disk"),
        "{}",
        n.stderr()
    );
    assert_all_served(&n, &objects);
    wait_for(
        "a scrub pass on each shard",
        Duration::from_secs(60),
        || {
            (0..2).all(|s| {
                gauge(n.admin, &format!("ron_scrub_passes_total{{shard=\"{s}\"}}")) >= Some(1.0)
            })
        },
    );
    wait_for("queued repairs", Duration::from_secs(20), || {
        metric(n.admin, "ron_ec_missing_shards") == 0
    });
    assert_eq!(metric(n.admin, "ron_scrub_unrepairable_blocks_total"), 0);
    let rebuilt = object_files(&dirs[2]);
    let missing: Vec<&PathBuf> = lost.keys().filter(|p| !rebuilt.contains_key(*p)).collect();
    assert!(missing.is_empty(), "not rebuilt: {missing:?}");
    for (path, bytes) in &lost {
        assert!(rebuilt[path] == *bytes, "{} differs", path.display());
    }
    for store in ["0", "1"] {
        let index = dirs[2].join("stores").join(store).join("index");
        assert!(
            index.join("data.mdb").exists(),
            "store {store}'s index replica"
        );
    }
    assert_eq!(n.stop().code(), Some(0));

    // Fully redundant again: now dir 0 and dir 1 may both go (m = 2).
    std::fs::remove_dir_all(dirs[1].join("stores")).unwrap();
    for entry in std::fs::read_dir(dirs[0].join("stores")).unwrap() {
        let objects = entry.unwrap().path().join("objects");
        std::fs::remove_dir_all(objects).unwrap();
    }
    n.restart(&args(&flags, &["--shards", "2"]));
    assert_all_served(&n, &objects);
    assert!(metric(n.admin, "ron_ec_degraded_reads_total") > 0);
    assert_eq!(metric(n.admin, "ron_ec_unrecoverable_total"), 0);
}

/// Every index replica of a four-dir node lost (here: moved aside): each object's
/// columns lie in four dirs with no record to say how (its rotation came from an upload
/// counter). The next start finds the layout its files' sizes allow, reads the object
/// back through it, and stores it again where it was, file for file; a file that no
/// layout reads back as its object (a column damaged) is kept, never removed. Before,
/// every file of a store over several dirs was kept unrecorded: the objects were lost.
#[test]
fn a_four_dir_node_that_lost_its_index_serves_every_object_from_its_columns() {
    let FourDirNode {
        dirs,
        flags,
        node: mut n,
        objects,
    } = four_dir_node("dirs-index-lost", 18, 1_900, true);
    let start = args(&flags, &["--shards", "2"]);
    let (damaged, _) = &objects[17];
    assert_eq!(n.stop().code(), Some(0));
    let objects_files = |dir: &Path| {
        let mut files = object_files(dir);
        files.retain(|path, _| path.components().any(|c| c.as_os_str() == "objects"));
        files
    };
    let before: Vec<_> = dirs.iter().map(|d| objects_files(d)).collect();
    let (damaged_data, _) = dirs_holding(&dirs, damaged);
    let hex = &damaged.to_string()[3..];
    let damaged_file = std::fs::read_dir(dirs[damaged_data[0]].join("stores"))
        .unwrap()
        .map(|s| s.unwrap().path().join("objects").join(&hex[..2]).join(hex))
        .find(|f| f.exists())
        .unwrap();
    flip_byte(&damaged_file, 10);
    remove_every_index(&dirs);

    n.restart(&start);
    for (addr, data) in &objects[..17] {
        wait_for(&format!("{addr} served"), Duration::from_secs(30), || {
            get(n.http, &format!("/o/{addr}")).is_ok_and(|r| r.status == 200)
        });
        let r = get(n.http, &format!("/o/{addr}")).unwrap();
        assert!(r.body == *data, "{addr} served whole");
    }
    wait_for(
        "the damaged object's files judged",
        Duration::from_secs(20),
        || {
            n.stderr()
                .contains("object files no index record names kept")
        },
    );
    assert_eq!(get(n.http, &format!("/o/{damaged}")).unwrap().status, 404);
    assert_eq!(n.stop().code(), Some(0));
    let damaged_rel = damaged_file.strip_prefix(&dirs[damaged_data[0]]).unwrap();
    for (d, dir) in dirs.iter().enumerate() {
        let after = objects_files(dir);
        let mut want = before[d].clone();
        if d == damaged_data[0] {
            let bytes = want.get_mut(damaged_rel).unwrap();
            bytes[10] ^= 0x01;
        }
        assert_eq!(
            after.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "dir {d}: the same files, each where it was"
        );
        assert!(after == want, "dir {d}: the same bytes");
    }
    n.restart(&start);
    assert_all_served(&n, &objects[..17]);
}

/// A code whose layouts files of equal sizes cannot tell apart (2+2 over two dirs: each
/// dir holds a data and a parity column whatever the rotation): each candidate is read
/// and hashed, and the one that is the object stored again.
#[test]
fn a_lost_index_over_layouts_of_equal_sizes_is_recovered_by_hashing_each() {
    let (dirs, flags) = dirs(&temp_dir("dirs-index-lost-2"), 2);
    let start = args(&flags, &["--shards", "1", "--ec", "2+2"]);
    let mut n = Node::start(&dirs[0], &start);
    let objects: Vec<(Address, Vec<u8>)> = (0..4)
        .map(|i| {
            let data = bytes(2_900 + i, [2 * GROUP, 6 * GROUP][i as usize % 2]);
            (upload(&n, &data), data)
        })
        .collect();
    assert_eq!(n.stop().code(), Some(0));
    remove_every_index(&dirs);
    n.restart(&start);
    for (addr, data) in &objects {
        wait_for(&format!("{addr} served"), Duration::from_secs(30), || {
            get(n.http, &format!("/o/{addr}")).is_ok_and(|r| r.status == 200)
        });
        let r = get(n.http, &format!("/o/{addr}")).unwrap();
        assert!(r.body == *data, "{addr} served whole");
    }
}

#[test]
fn data_dirs_are_checked_at_every_start() {
    let root = temp_dir("dirs-checks");
    let (dirs, flags) = dirs(&root, 4);
    let mut n = Node::start(&dirs[0], &args(&flags, &["--shards", "1"]));
    let data = bytes(77, 3 * GROUP);
    let addr = upload(&n, &data);
    assert_eq!(n.stop().code(), Some(0));
    let marker = std::fs::read_to_string(dirs[3].join("ron-dir.bin")).unwrap();
    assert!(
        marker.starts_with("ron data dir v1\nnode ") && marker.ends_with("position 3\ndirs 4\n"),
        "{marker}"
    );
    let refusal = |first: &Path, others: &[&Path], extra: &[&str]| {
        let mut args: Vec<String> = Vec::new();
        for d in others {
            args.extend(["--data-dir".into(), d.display().to_string()]);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_ron(first, &args);
        assert!(!out.status.success(), "started with {args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let d = |i: usize| dirs[i].as_path();

    let e = refusal(d(0), &[d(2), d(1), d(3)], &[]);
    assert!(
        e.contains("it is dir 2 of this node's data dirs but was given as dir 1"),
        "{e}"
    );
    let e = refusal(d(0), &[d(1), d(2)], &["--ec", "1+2"]);
    assert!(
        e.contains("it is dir 0 of a node with 4 data dirs, and 3 were given"),
        "{e}"
    );
    let e = refusal(d(0), &[d(1), d(2), d(3)], &["--ec", "4+1"]);
    assert!(e.contains("erasure code 4+1 over 4 data dirs"), "{e}");
    let e = refusal(d(0), &[d(1)], &["--ec", "off"]);
    assert!(e.contains("ec = off over 2 data dirs"), "{e}");
    let e = refusal(d(0), &[d(1), d(0)], &[]);
    assert!(e.contains("is given twice"), "{e}");

    // Three of four disks empty is more than 2+2 rebuilds: refused, nothing written but
    // the lock.
    let moved: Vec<PathBuf> = (1..4).map(|i| root.join(format!("kept{i}"))).collect();
    for (i, to) in moved.iter().enumerate() {
        std::fs::rename(&dirs[i + 1], to).unwrap();
    }
    let e = refusal(d(0), &[d(1), d(2), d(3)], &[]);
    assert!(
        e.contains("3 data dirs are empty") && e.contains("more than the 2"),
        "{e}"
    );
    for (i, from) in moved.iter().enumerate() {
        // Nothing but the data dir's lock (taken before the dirs are looked at).
        let written: Vec<_> = std::fs::read_dir(&dirs[i + 1])
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(
            written.iter().all(|name| name == "LOCK"),
            "the refused start wrote into {:?}: {written:?}",
            dirs[i + 1]
        );
        let _ = std::fs::remove_dir_all(&dirs[i + 1]);
        std::fs::rename(from, &dirs[i + 1]).unwrap();
    }
    n.restart(&args(&flags, &["--shards", "1"]));
    let r = get(n.http, &format!("/o/{addr}")).unwrap();
    assert_eq!((r.status, r.body == data), (200, true));
    assert_eq!(metric(n.admin, "ron_ec_degraded_reads_total"), 0);
}

/// `ron serve` on `data_dir` with `args`, expected to refuse to start: a node that starts
/// is stopped after 30 s (its output then says so).
fn start_refused_within(data_dir: &Path, args: &[&str]) -> std::process::Output {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ron"))
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if child.try_wait().unwrap().is_none() {
        let _ = child.kill();
    }
    child.wait_with_output().unwrap()
}

/// Runs `mount` with `args` in this thread's mount namespace.
fn mount(args: &[&std::ffi::OsStr]) {
    let out = std::process::Command::new("mount")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "mount {args:?}: {out:?}");
}

/// Moves the calling thread into a mount namespace of its own, its mounts private: what
/// the test mounts there (and the nodes it starts) no other test or process sees. Needs
/// root (`CAP_SYS_ADMIN`, as scripts/test-all.sh runs).
fn enter_own_mount_namespace() {
    #[allow(unsafe_code)]
    // SAFETY: `unshare` takes no pointers; it changes only this thread's namespaces.
    let entered = unsafe { libc::unshare(libc::CLONE_NEWNS) };
    assert_eq!(
        entered,
        0,
        "a mount namespace needs root (CAP_SYS_ADMIN): {}",
        std::io::Error::last_os_error()
    );
    mount(&["--make-rprivate".as_ref(), "/".as_ref()]);
}

/// Four dirs, each a disk's mount point (bind mounts of dirs of their own): a boot where
/// one disk did not mount leaves its mount point empty, and the node took it for a
/// replaced disk and rebuilt onto the filesystem below (the root filesystem, most often)
/// until it was full. Refused now, naming the dir; a new disk mounted there is taken.
#[test]
fn a_disk_that_did_not_mount_is_not_rebuilt_onto_the_filesystem_below() {
    enter_own_mount_namespace();
    let root = temp_dir("dirs-unmounted");
    let (dirs, flags) = dirs(&root, 4);
    let bind = |disk: &Path, at: &Path| {
        std::fs::create_dir_all(disk).unwrap();
        std::fs::create_dir_all(at).unwrap();
        mount(&["--bind".as_ref(), disk.as_os_str(), at.as_os_str()]);
    };
    for (d, dir) in dirs.iter().enumerate() {
        bind(&root.join(format!("disk{d}")), dir);
    }
    let mut n = Node::start(&dirs[0], &args(&flags, &["--shards", "1"]));
    let data = bytes(78, 3 * GROUP);
    let addr = upload(&n, &data);
    assert_eq!(n.stop().code(), Some(0));

    // The next boot, disk 3 does not mount: its mount point is there, empty.
    let out = std::process::Command::new("umount")
        .arg(&dirs[3])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let refused = start_refused_within(&dirs[0], &args(&flags, &["--shards", "1"]));
    let e = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "started on an unmounted disk: {e}"
    );
    assert!(
        e.contains(&dirs[3].display().to_string())
            && e.contains("it is empty and not a mount point, while every other data dir"),
        "{e}"
    );
    let below: Vec<_> = std::fs::read_dir(&dirs[3])
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        below.iter().all(|name| name == "LOCK"),
        "written below the mount point: {below:?}"
    );

    // A new disk mounted there is a replacement: the object is served, verified.
    bind(&root.join("disk3-new"), &dirs[3]);
    n.restart(&args(&flags, &["--shards", "1"]));
    let r = get(n.http, &format!("/o/{addr}")).unwrap();
    assert_eq!((r.status, r.body == data), (200, true));
    assert_eq!(n.stop().code(), Some(0));
    assert!(
        std::fs::read_to_string(root.join("disk3-new").join("ron-dir.bin"))
            .unwrap()
            .ends_with("position 3\ndirs 4\n"),
        "the new disk is dir 3 now"
    );
}
