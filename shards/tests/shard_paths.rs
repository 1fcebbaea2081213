//! The shard's data paths end to end, on real glommio executors and a real data dir:
//! upload → group commit → metadata and verified group reads, on one shard and across
//! the mesh; and a failed group commit reaching its uploads as one typed error.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};
use ron_codec::tree::{group_count, group_len, GroupIndex, GROUP_LEN_BYTES};
use ron_codec::{Address, ChunkTree, ErrorCode};
use ron_link::counters::StorageCounters;
use ron_shards::layout::{self, Routing};
use ron_shards::mesh::{self, Mesh};
use ron_shards::shard::READ_AHEAD_BYTES_MAX;
use ron_shards::ShardIndex;
use ron_shards::{CommitOutcome, Shard, ShardConfig, ShardError};

/// A fresh data dir under the system temp dir, removed when dropped.
struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> DataDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("ron-shards-{name}-{}-{nanos}", std::process::id()));
        DataDir(dir)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(data_dir: &Path, index_bytes_max: usize) -> ShardConfig {
    ShardConfig {
        data_dirs: layout::DataDirs::one(data_dir),
        cache_bytes_max: 4 << 20,
        meta_bytes_max: 1 << 20,
        open_files_max: 16,
        index_bytes_max,
        commit_batch_max: 64,
        ec: ron_shards::ec::EcParams::default_for(1),
        scrub_bytes_per_s: 0,
        dht: None,
        evictable_bytes_max: None,
        announce_filter: Default::default(),
    }
}

/// Opens (creating) the data dir for `shards` shards, as the engine does at start-up.
fn routing(data_dir: &Path, shards: u16) -> Routing {
    let table = layout::open_data_dirs(&layout::DataDirs::one(data_dir), shards, 0)
        .expect("data dir")
        .table;
    layout::clean_tmp(data_dir).expect("clean tmp");
    Routing::new(table, shards)
}

/// Runs `work` on its own executor thread (with a blocking pool for the commits).
fn on_executor<G, F>(name: &str, work: G) -> glommio::ExecutorJoinHandle<()>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .name(name)
        .blocking_thread_pool_placement(PoolPlacement::Unbound(1))
        .spawn(work)
        .expect("executor")
}

/// One shard alone on `data_dir` (no mesh), with its own counters.
async fn one_shard(data_dir: &Path) -> Rc<Shard> {
    Shard::start(
        ShardIndex(0),
        routing(data_dir, 1),
        config(data_dir, 1 << 26),
        None,
        Arc::new(StorageCounters::default()),
    )
    .await
    .expect("start")
}

fn object(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

async fn put(
    shard: &Rc<Shard>,
    data: &[u8],
    content_type: &str,
) -> Result<CommitOutcome, ShardError> {
    let mut upload = shard.begin_upload(Some(data.len() as u64)).unwrap();
    for piece in data.chunks(10_000) {
        upload.write(piece).await?;
    }
    assert_eq!(upload.len(), data.len() as u64);
    let staged = upload.finish(content_type.into()).await?;
    assert_eq!(staged.meta.addr(), ChunkTree::of(data).root());
    shard.commit(staged).await
}

/// Reads every group of `data`'s object through `shard` and compares it with `data`.
async fn read_back(shard: &Shard, data: &[u8]) {
    let addr = ChunkTree::of(data).root();
    let meta = shard.meta(&addr).await.expect("meta");
    assert_eq!(meta.len(), data.len() as u64);
    for g in 0..group_count(data.len() as u64).max(1) {
        let group = GroupIndex(g);
        let bytes = shard.group(&meta, group).await.expect("group");
        let start = (g * GROUP_LEN_BYTES) as usize;
        let end = (start + GROUP_LEN_BYTES as usize).min(data.len());
        assert_eq!(
            Some(bytes.len() as u64),
            group_len(data.len() as u64, group)
        );
        assert_eq!(&bytes[..], &data[start..end], "group {g}");
    }
}

fn tmp_is_empty(data_dir: &Path) -> bool {
    std::fs::read_dir(layout::tmp_dir(data_dir))
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
}

#[test]
fn one_shard_uploads_commits_and_reads_verified_groups() {
    let dir = DataDir::new("one");
    let data_dir = dir.0.clone();
    on_executor("one-shard", move || async move {
        let routing = routing(&data_dir, 1);
        let metrics = Arc::new(StorageCounters::default());
        let shard = Shard::start(
            ShardIndex(0),
            routing,
            config(&data_dir, 1 << 26),
            None,
            Arc::clone(&metrics),
        )
        .await
        .expect("start");
        for (len, seed) in [(0, 0), (100, 1), (65_536, 2), (200_000, 3)] {
            let data = object(len, seed);
            let created = put(&shard, &data, "text/plain").await.expect("put");
            assert_eq!(created, CommitOutcome::Created, "{len} bytes");
            // Stored, metadata not cached yet: the store says it is there.
            let again = put(&shard, &data, "").await.expect("put again");
            assert_eq!(again, CommitOutcome::AlreadyStored);
            read_back(&shard, &data).await;
            // Metadata cached now; the second read of every group is a cache hit.
            let hits = metrics.cache_hits.load(Ordering::Relaxed);
            read_back(&shard, &data).await;
            assert!(metrics.cache_hits.load(Ordering::Relaxed) > hits);
            let again = put(&shard, &data, "").await.expect("put a third time");
            assert_eq!(again, CommitOutcome::AlreadyStored);
        }
        assert_eq!(metrics.objects_created.load(Ordering::Relaxed), 4);
        assert_eq!(metrics.objects_stored.load(Ordering::Relaxed), 4);
        assert_eq!(metrics.verify_failures.load(Ordering::Relaxed), 0);
        assert!(tmp_is_empty(&data_dir), "staged files left behind");
        let missing = Address::from_bytes([7; 32]);
        let err = shard.meta(&missing).await.expect_err("no such object");
        assert_eq!(err.code(), ErrorCode::NotFound);
    })
    .join()
    .expect("shard thread");
}

#[test]
fn two_shards_commit_and_read_across_the_mesh() {
    let dir = DataDir::new("mesh");
    let routing = routing(&dir.0, 2);
    let done = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..2u16)
        .zip(mesh::mesh_ends(2))
        .map(|(i, ends)| {
            let routing = routing.clone();
            let done = Arc::clone(&done);
            let data_dir = dir.0.clone();
            on_executor(&format!("shard-{i}"), move || async move {
                let index = ShardIndex(i);
                let metrics = Arc::new(StorageCounters::default());
                let mesh = Mesh::join(ends, Arc::clone(&metrics)).await;
                let config = config(&data_dir, 1 << 26);
                let shard = Shard::start(index, routing, config, Some(mesh), metrics)
                    .await
                    .expect("start");
                if i == 0 {
                    exercise_mesh(&shard).await;
                    done.store(true, Ordering::Release);
                } else {
                    while !done.load(Ordering::Acquire) {
                        glommio::timer::sleep(Duration::from_millis(5)).await;
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("shard thread");
    }
}

/// Run on shard 0: objects owned by either shard, written and read through shard 0.
async fn exercise_mesh(shard: &Rc<Shard>) {
    let mut remote = 0;
    for seed in 0..8u8 {
        let data = object(150_000, seed);
        let addr = ChunkTree::of(&data).root();
        if shard.routing().owner(&addr) != shard.index() {
            remote += 1;
        }
        let created = put(shard, &data, "application/x-test").await.expect("put");
        assert_eq!(created, CommitOutcome::Created);
        let again = put(shard, &data, "").await.expect("put again");
        assert_eq!(again, CommitOutcome::AlreadyStored);
        if shard.routing().owner(&addr) != shard.index() && remote == 1 {
            // A miss of one group of an object the other shard owns brings its whole
            // window (all 3 groups) across the mesh while the cache has room (checked on
            // the first: later ones may meet the first arena's roll, before which the
            // next arena is not made, and be served uncached).
            let meta = shard.meta(&addr).await.expect("meta");
            assert!(shard.cached_groups(&meta, GroupIndex(0), 1).is_none());
            shard.group(&meta, GroupIndex(1)).await.expect("group 1");
            let window = shard.cached_groups(&meta, GroupIndex(0), 3);
            let bytes: Option<Vec<u8>> =
                window.map(|w| w.iter().flat_map(|g| g.iter().copied()).collect());
            assert!(bytes.as_deref() == Some(&data[..]), "the window, cached");
        }
        read_back(shard, &data).await;
    }
    assert!(remote > 0, "no object of the 8 is owned by shard 1");
    let metrics = shard.metrics().snapshot();
    assert!(metrics.mesh_requests > 0);
    assert_eq!(metrics.verify_failures, 0);
    // A not-found from the owner reads as not found here too.
    let missing = (0..=255u8)
        .map(|b| Address::from_bytes([b; 32]))
        .find(|a| shard.routing().owner(a) != shard.index())
        .expect("an address owned by shard 1");
    let err = shard.meta(&missing).await.expect_err("no such object");
    assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
}

/// An owner that answers a record request with another object's record is refused
/// where its answer comes off the mesh: nothing is cached or served under the address
/// asked for.
#[test]
fn a_record_answered_for_another_address_is_refused() {
    let dir = DataDir::new("mesh-lie");
    let routing = routing(&dir.0, 2);
    let done = Arc::new(AtomicBool::new(false));
    let mut ends = mesh::mesh_ends(2).into_iter();
    let (mine, liars) = (ends.next().unwrap(), ends.next().unwrap());
    let liar = {
        let done = Arc::clone(&done);
        on_executor("liar", move || async move {
            let mesh = Rc::new(Mesh::join(liars, Arc::new(StorageCounters::default())).await);
            let handler: mesh::MeshHandler = Rc::new(|_op| {
                Box::pin(async {
                    Ok(mesh::MeshReply::Meta(ron_shards::ObjectMeta {
                        tree: ChunkTree::of(b"another object"),
                        content_type: String::new(),
                        location: ron_shards::Location::OwnFile,
                        parity: None,
                    }))
                })
            });
            mesh.serve(handler);
            while !done.load(Ordering::Acquire) {
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let data_dir = dir.0.clone();
    let asker = on_executor("asker", move || async move {
        let metrics = Arc::new(StorageCounters::default());
        let mesh = Mesh::join(mine, Arc::clone(&metrics)).await;
        let config = config(&data_dir, 1 << 26);
        let shard = Shard::start(ShardIndex(0), routing, config, Some(mesh), metrics)
            .await
            .expect("start");
        let theirs = (0..=255u8)
            .map(|b| Address::from_bytes([b; 32]))
            .find(|a| shard.routing().owner(a) != shard.index())
            .expect("an address owned by shard 1");
        let err = shard
            .meta(&theirs)
            .await
            .expect_err("another object's record");
        assert!(err.to_string().contains("another object's record"), "{err}");
        done.store(true, Ordering::Release);
    });
    asker.join().expect("asker");
    liar.join().expect("liar");
}

#[test]
fn a_failed_group_commit_reaches_its_uploads_as_one_typed_error() {
    let dir = DataDir::new("full");
    let data_dir = dir.0.clone();
    on_executor("full-index", move || async move {
        let routing = routing(&data_dir, 1);
        // An index map of a few pages: it opens, and fills after a few records.
        let config = config(&data_dir, 8 * 4096);
        let metrics = Arc::new(StorageCounters::default());
        let shard = Shard::start(ShardIndex(0), routing, config, None, metrics)
            .await
            .expect("start");
        let content_type = "t".repeat(ron_shards::record::CONTENT_TYPE_LEN_MAX);
        let mut failure = None;
        for seed in 0..=255u8 {
            let data = object(64, seed);
            match put(&shard, &data, &content_type).await {
                Ok(outcome) => assert_eq!(outcome, CommitOutcome::Created),
                Err(e) => {
                    failure = Some((e, data));
                    break;
                }
            }
        }
        let (err, data) = failure.expect("the index never filled");
        let ShardError::GroupCommit { records, source } = &err else {
            panic!("not a group-commit error: {err:?}");
        };
        assert_eq!(*records, 1);
        assert!(matches!(**source, ShardError::Index { .. }), "{source:?}");
        let text = err.to_string();
        assert!(
            text.starts_with("group commit of 1 record(s) failed: index "),
            "{text}"
        );
        assert!(text.contains(&data_dir.display().to_string()), "{text}");
        // A full index map is the node out of space: the upload is refused 507.
        assert_eq!(err.code(), ErrorCode::InsufficientStorage);
        // The failed object is not visible.
        let addr = ChunkTree::of(&data).root();
        let missing = shard.meta(&addr).await.expect_err("not committed");
        assert_eq!(missing.code(), ErrorCode::NotFound);
    })
    .join()
    .expect("shard thread");
}

#[test]
fn read_ahead_shares_one_budget_per_shard_and_gets_it_back() {
    let dir = DataDir::new("read-ahead");
    let data_dir = dir.0.clone();
    on_executor("read-ahead", move || async move {
        let shard = one_shard(&data_dir).await;
        let batch = 512 * 1024;
        let permits: Vec<_> = (0..READ_AHEAD_BYTES_MAX / batch)
            .map(|i| {
                shard
                    .reserve_read_ahead(batch)
                    .unwrap_or_else(|| panic!("batch {i}"))
            })
            .collect();
        assert!(shard.reserve_read_ahead(batch).is_none(), "budget spent");
        assert!(shard.reserve_read_ahead(1).is_none());
        drop(permits);
        assert!(shard.reserve_read_ahead(READ_AHEAD_BYTES_MAX).is_some());
    })
    .join()
    .expect("shard thread");
}

/// A run read cold lies end to end in the verified cache even when one of its groups
/// was cached on its own before, so a range over both leaves in one `sendfile`; a run
/// mostly cached keeps its cached groups where they are; the bytes are the object's.
#[test]
fn a_run_read_cold_is_kept_end_to_end_in_one_arena() {
    let dir = DataDir::new("run");
    let data_dir = dir.0.clone();
    on_executor("run", move || async move {
        let shard = one_shard(&data_dir).await;
        let group = GROUP_LEN_BYTES as usize;
        let data = object(4 * group, 9);
        put(&shard, &data, "").await.expect("put");
        let meta = shard
            .meta(&ChunkTree::of(&data).root())
            .await
            .expect("meta");
        // Group 2 alone first, as a range that touched only it would leave it.
        shard.group(&meta, GroupIndex(2)).await.expect("group 2");
        let run = shard
            .groups(&meta, GroupIndex(1), 2)
            .await
            .expect("groups 1-2");
        assert!(run[0][..] == data[group..2 * group]);
        assert!(run[1][..] == data[2 * group..3 * group]);
        let cached = shard
            .cached_groups(&meta, GroupIndex(1), 2)
            .expect("both cached");
        let (first, second) = (&cached[0], &cached[1]);
        let (a, b) = (first.file.as_ref().unwrap(), second.file.as_ref().unwrap());
        assert!(Rc::ptr_eq(&a.file, &b.file), "one arena");
        assert_eq!(a.offset + first.len() as u64, b.offset, "end to end");
        assert!(second[..] == data[2 * group..3 * group]);

        // A run mostly cached already (groups 0-2 of 0-3) keeps its cached groups where
        // they are: kept again, they would cost more checks than the read itself.
        let before = a.offset;
        shard.group(&meta, GroupIndex(0)).await.expect("group 0");
        let run = shard
            .groups(&meta, GroupIndex(0), 4)
            .await
            .expect("groups 0-3");
        assert!(run.iter().flat_map(|g| g.iter()).eq(data.iter()));
        let again = shard
            .cached_groups(&meta, GroupIndex(1), 1)
            .expect("cached");
        assert_eq!(
            again[0].file.as_ref().unwrap().offset,
            before,
            "group 1 stayed"
        );
    })
    .join()
    .expect("shard thread");
}

/// Whether `groups` lie end to end in one arena (what leaves in one `sendfile`).
fn end_to_end(groups: &[ron_shards::GroupBytes]) -> bool {
    groups.windows(2).all(|pair| {
        let (a, b) = (pair[0].file.as_ref(), pair[1].file.as_ref());
        a.zip(b).is_some_and(|(a, b)| {
            Rc::ptr_eq(&a.file, &b.file) && a.offset + pair[0].len() as u64 == b.offset
        })
    })
}

/// A miss reads the rest of its aligned window while the cache is below its budget: a
/// range's two groups bring their window in end to end (the others counted as a
/// window's bytes, not as misses), a range across two windows brings both, one group
/// its window, an object's short last window what it has; a cache at its budget reads
/// only the groups asked for.
#[test]
fn a_miss_reads_its_window_while_the_cache_is_below_its_budget() {
    let dir = DataDir::new("window");
    let data_dir = dir.0.clone();
    on_executor("window", move || async move {
        let metrics = Arc::new(StorageCounters::default());
        let mut config = config(&data_dir, 1 << 26);
        config.cache_bytes_max = 64 << 20;
        let shard = Shard::start(
            ShardIndex(0),
            routing(&data_dir, 1),
            config,
            None,
            Arc::clone(&metrics),
        )
        .await
        .expect("start");
        let misses = || metrics.cache_misses.load(Ordering::Relaxed);
        let window_bytes = || metrics.cache_window_bytes.load(Ordering::Relaxed);
        let group = GROUP_LEN_BYTES as usize;
        let lens = [16 * group, 16 * group, 19 * group + 100, 17 * group];
        let mut objects = Vec::new();
        for (seed, len) in lens.into_iter().enumerate() {
            let data = object(len, 40 + seed as u8);
            put(&shard, &data, "").await.expect("put");
            let meta = shard
                .meta(&ChunkTree::of(&data).root())
                .await
                .expect("meta");
            objects.push((meta, data));
        }
        // The next arena is made on the blocking pool: a group placed while it is not
        // ready yet is served and not cached, so the reads leave it time. The first is
        // made when the first arena (1 MiB) is full: an object of 17 groups fills it.
        let pause = || glommio::timer::sleep(Duration::from_millis(100));
        let warm = &objects[3].0;
        shard.groups(warm, GroupIndex(0), 17).await.expect("warm");
        pause().await;
        let (misses_before, window_bytes_before) = (misses(), window_bytes());
        let misses = || misses() - misses_before;
        let window_bytes = || window_bytes() - window_bytes_before;
        let cached = |meta, first, count| shard.cached_groups(meta, GroupIndex(first), count);
        let bytes_of = |groups: &[ron_shards::GroupBytes]| -> Vec<u8> {
            groups.iter().flat_map(|g| g.iter().copied()).collect()
        };

        let (a, data_a) = (&objects[0].0, &objects[0].1);
        let range = shard.groups(a, GroupIndex(3), 2).await.expect("range");
        assert!(bytes_of(&range) == data_a[3 * group..5 * group]);
        let window = cached(a, 0, 8).expect("window 0 cached");
        assert!(end_to_end(&window), "window 0 end to end");
        assert!(bytes_of(&window) == data_a[..8 * group]);
        assert!(cached(a, 8, 1).is_none(), "window 1 not read");
        assert_eq!(misses(), 2, "the groups asked for");
        assert_eq!(
            window_bytes(),
            6 * GROUP_LEN_BYTES,
            "the rest of the window"
        );

        pause().await;
        let one = shard.group(a, GroupIndex(9)).await.expect("group 9");
        assert!(one[..] == data_a[9 * group..10 * group]);
        assert!(end_to_end(&cached(a, 8, 8).expect("window 1 cached")));
        assert_eq!((misses(), window_bytes()), (3, 13 * GROUP_LEN_BYTES));
        // Cached now: read again, nothing is read.
        shard.groups(a, GroupIndex(3), 2).await.expect("again");
        assert_eq!((misses(), window_bytes()), (3, 13 * GROUP_LEN_BYTES));

        pause().await;
        let (b, data_b) = (&objects[1].0, &objects[1].1);
        let across = shard.groups(b, GroupIndex(7), 2).await.expect("across");
        assert!(bytes_of(&across) == data_b[7 * group..9 * group]);
        assert!(end_to_end(&cached(b, 0, 8).expect("b's window 0")));
        assert!(end_to_end(&cached(b, 8, 8).expect("b's window 1")));

        pause().await;
        let (c, data_c) = (&objects[2].0, &objects[2].1);
        let last = shard.group(c, GroupIndex(17)).await.expect("c's group 17");
        assert!(last[..] == data_c[17 * group..18 * group]);
        let short = cached(c, 16, 4).expect("c's last window, 4 groups");
        assert!(end_to_end(&short));
        assert!(bytes_of(&short) == data_c[16 * group..]);
        assert!(cached(c, 15, 1).is_none(), "c's window 1 not read");
        assert_eq!(metrics.verify_failures.load(Ordering::Relaxed), 0);
    })
    .join()
    .expect("shard thread");

    // A cache at its budget (4 MiB, read through twice over) reads only what is asked.
    let dir = DataDir::new("window-full");
    let data_dir = dir.0.clone();
    on_executor("window-full", move || async move {
        let metrics = Arc::new(StorageCounters::default());
        let shard = Shard::start(
            ShardIndex(0),
            routing(&data_dir, 1),
            config(&data_dir, 1 << 26),
            None,
            Arc::clone(&metrics),
        )
        .await
        .expect("start");
        let group = GROUP_LEN_BYTES as usize;
        let mut metas = Vec::new();
        for seed in 0..9 {
            let data = object(16 * group, 60 + seed);
            put(&shard, &data, "").await.expect("put");
            metas.push(
                shard
                    .meta(&ChunkTree::of(&data).root())
                    .await
                    .expect("meta"),
            );
        }
        for meta in &metas[..8] {
            for window in [0, 8] {
                shard
                    .groups(meta, GroupIndex(window), 8)
                    .await
                    .expect("read");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
        let window_bytes = metrics.cache_window_bytes.load(Ordering::Relaxed);
        let misses = metrics.cache_misses.load(Ordering::Relaxed);
        let last = &metas[8];
        shard.groups(last, GroupIndex(3), 2).await.expect("range");
        assert!(
            shard.cached_groups(last, GroupIndex(0), 1).is_none(),
            "not read"
        );
        assert_eq!(
            metrics.cache_window_bytes.load(Ordering::Relaxed),
            window_bytes
        );
        assert_eq!(metrics.cache_misses.load(Ordering::Relaxed), misses + 2);
    })
    .join()
    .expect("shard thread");
}
