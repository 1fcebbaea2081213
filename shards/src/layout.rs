//! The data dirs: the partition table, the stores, and which dir is which.
//!
//! ```text
//! <dir>/ron-dir.bin        DirMarker: node id, this dir's position, the dir count
//! <dir>/partitions.bin     PartitionTable encoding: 4096 partitions -> store id
//!                          (the same in every dir)
//! <dir>/stores/<id>/       this dir's part of store <id> (its object and parity
//!                          files; the index replica when the dir holds one)
//! <dir>/tmp/               uploads in flight; emptied at every start-up
//! <dir>/LOCK               held by the running node
//! ```
//!
//! A node has 1..=[`DIRS_MAX`] data dirs, fixed when it is created: each gets a marker
//! naming the node and its position, checked at every start, so a dir given at another
//! position, of another node, or with another dir count is refused. A dir without a
//! marker among marked ones is a *replacement* (a new disk): it gets the layout and
//! its marker, and the scrubber rebuilds its blocks while the node serves.
//!
//! The table is written once, when the node is created, with one store per shard.
//! A later start with a different `--shards` keeps the table and the stores as they are
//! and only reassigns stores to shards (`store % shards`), so no object moves and every
//! object is found. With more shards than stores, the extra shards own no store: they
//! accept connections and forward every request to an owner. Rebalancing data across
//! more stores is a separate, explicit operation (not built yet).

use std::path::{Path, PathBuf};

use ron_codec::{Address, PartitionTable};

use crate::error::ShardError;
use crate::ids::{DirIndex, ShardIndex, StoreId};
use crate::limits::DIRS_MAX;
use crate::mounts::is_mount_point;

const TABLE_FILE: &str = "partitions.bin";

/// The data dir's fixed routing: partition table plus the running shard count.
#[derive(Debug, Clone)]
pub struct Routing {
    table: PartitionTable,
    shards: u16,
}

impl Routing {
    pub fn new(table: PartitionTable, shards: u16) -> Routing {
        Routing {
            table,
            shards: shards.max(1),
        }
    }

    pub fn store_of(&self, addr: &Address) -> StoreId {
        StoreId(self.table.owner(addr).0)
    }

    pub fn shard_of_store(&self, store: StoreId) -> ShardIndex {
        ShardIndex(store.0 % self.shards)
    }

    /// The shard that owns `addr`'s store.
    pub fn owner(&self, addr: &Address) -> ShardIndex {
        self.shard_of_store(self.store_of(addr))
    }

    pub fn store_count(&self) -> u16 {
        self.table.shard_count()
    }

    pub fn shard_count(&self) -> u16 {
        self.shards
    }

    /// Stores owned by `shard`.
    pub fn stores_of(&self, shard: ShardIndex) -> Vec<StoreId> {
        (0..self.store_count())
            .map(StoreId)
            .filter(|s| self.shard_of_store(*s) == shard)
            .collect()
    }
}

/// The node's data dirs, in the order they were given: the `i`-th is `DirIndex(i)`.
/// Cheap to clone (shared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDirs {
    dirs: std::sync::Arc<[PathBuf]>,
}

impl DataDirs {
    /// At least one dir; at most [`DIRS_MAX`] (checked by [`open_data_dirs`]).
    pub fn new(dirs: Vec<PathBuf>) -> DataDirs {
        assert!(!dirs.is_empty(), "a node has at least one data dir");
        DataDirs { dirs: dirs.into() }
    }

    pub fn one(dir: &Path) -> DataDirs {
        DataDirs::new(vec![dir.to_path_buf()])
    }

    pub fn count(&self) -> u8 {
        self.dirs.len().min(usize::from(DIRS_MAX)) as u8
    }

    pub fn dir(&self, d: DirIndex) -> &Path {
        &self.dirs[usize::from(d.0)]
    }

    /// The first dir: where a one-dir node keeps everything.
    pub fn first(&self) -> &Path {
        &self.dirs[0]
    }

    pub fn iter(&self) -> impl Iterator<Item = (DirIndex, &Path)> {
        self.dirs
            .iter()
            .enumerate()
            .map(|(i, d)| (DirIndex(i as u8), d.as_path()))
    }

    /// Store `store`'s root in every dir, in dir order.
    pub fn store_roots(&self, store: StoreId) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| store_dir(d, store)).collect()
    }

    /// The temp dir of every dir, in dir order.
    pub fn tmp_dirs(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| tmp_dir(d)).collect()
    }
}

pub fn store_dir(data_dir: &Path, store: StoreId) -> PathBuf {
    data_dir.join("stores").join(store.0.to_string())
}

const MARKER_FILE: &str = "ron-dir.bin";
/// Written into the marked dirs when a replacement dir is taken, before its marker:
/// every store's scrub pass restarts from its first object (a pass already part way
/// resumed where it was, and its end told the operator a disk rebuilt of which it had
/// never read the first part). Removed once every shard has reset its stores.
const SCRUB_RESTART_FILE: &str = "scrub-restart";
const MARKER_MAGIC: &str = "ron data dir v1";

/// What `ron-dir.bin` says: the node the dir belongs to, its position among the node's
/// dirs and how many there are. Text, so an operator can read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirMarker {
    pub node: [u8; 16],
    pub position: DirIndex,
    pub dirs: u8,
}

impl DirMarker {
    fn encode(&self) -> String {
        format!(
            "{MARKER_MAGIC}\nnode {}\nposition {}\ndirs {}\n",
            self.node_hex(),
            self.position.0,
            self.dirs
        )
    }

    fn decode(text: &str) -> Option<DirMarker> {
        let mut lines = text.lines();
        (lines.next()? == MARKER_MAGIC).then_some(())?;
        let mut field = |name: &str| lines.next()?.strip_prefix(name)?.strip_prefix(' ');
        let hex = field("node")?;
        let position = field("position")?.parse().ok()?;
        let dirs = field("dirs")?.parse().ok()?;
        let mut node = [0u8; 16];
        (hex.len() == 32).then_some(())?;
        for (i, byte) in node.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(DirMarker {
            node,
            position: DirIndex(position),
            dirs,
        })
    }

    fn node_hex(&self) -> String {
        self.node.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What [`open_data_dirs`] found and made.
#[derive(Debug)]
pub struct OpenedDirs {
    pub table: PartitionTable,
    /// Dirs that had no marker among marked ones: replacements, to be rebuilt.
    pub replaced: Vec<DirIndex>,
}

/// Checks every dir's marker against its position, loads the partition table (or
/// creates the node with `shards` stores), and readies replacement dirs: at most
/// `replaceable` of them (the parity blocks per stripe; more empty dirs at once would
/// leave stripes that cannot be rebuilt, so nothing is written and the start refused).
/// Blocking; start-up only. Cost is independent of the number of stored objects.
pub fn open_data_dirs(
    dirs: &DataDirs,
    shards: u16,
    replaceable: u8,
) -> Result<OpenedDirs, ShardError> {
    if dirs.dirs.len() > usize::from(DIRS_MAX) {
        return Err(ShardError::Layout {
            path: dirs.first().to_path_buf(),
            reason: format!("{} data dirs: at most {DIRS_MAX}", dirs.dirs.len()),
        });
    }
    let n = dirs.count();
    let mut markers = Vec::with_capacity(usize::from(n));
    for (d, dir) in dirs.iter() {
        create_dir_durably(dir)?;
        markers.push(read_marker(dir)?);
        if let Some(marker) = markers[usize::from(d.0)] {
            check_marker(dir, d, n, &marker)?;
        }
    }
    let node = match markers.iter().flatten().next() {
        Some(marker) => {
            check_one_node(dirs, &markers)?;
            marker.node
        }
        None => new_node_id(dirs)?,
    };
    // A node exists once its table is written, after every dir's marker: marked dirs
    // and no table is a creation a crash cut short between two markers, whose unmarked
    // dirs are the rest of the new node, not replacements (as many as were not yet
    // marked, more than parity can rebuild, and every later start was refused).
    let created = dirs
        .iter()
        .any(|(d, dir)| markers[usize::from(d.0)].is_some() && dir.join(TABLE_FILE).exists());
    let mut replaced = Vec::new();
    for (d, dir) in dirs.iter() {
        if markers[usize::from(d.0)].is_some() {
            continue;
        }
        if n > 1 && dir.join(TABLE_FILE).exists() {
            return Err(ShardError::Layout {
                path: dir.to_path_buf(),
                reason: format!(
                    "it holds data but has no {MARKER_FILE}: it was made for a node with one \
                     data dir, and a node's dirs are fixed when it is created (this one was \
                     given {n}); give it alone, or an empty dir"
                ),
            });
        }
        if created {
            replaced.push(d);
        }
    }
    check_replaceable(dirs, &replaced, replaceable)?;
    check_mounted(dirs, &markers, &replaced)?;
    if !replaced.is_empty() {
        for (d, dir) in dirs.iter() {
            if markers[usize::from(d.0)].is_some() {
                let why = b"a replacement data dir was taken: every store's scrub pass restarts\n";
                write_atomically(dir, SCRUB_RESTART_FILE, why)?;
            }
        }
    }
    // Markers before the table: a crash in between leaves marked dirs, which the next
    // start takes as they are, never a table without a marker, which it would refuse.
    for (d, dir) in dirs.iter() {
        if markers[usize::from(d.0)].is_none() {
            let marker = DirMarker {
                node,
                position: d,
                dirs: n,
            };
            write_atomically(dir, MARKER_FILE, marker.encode().as_bytes())?;
        }
    }
    let table = open_table(dirs, shards)?;
    Ok(OpenedDirs { table, replaced })
}

fn check_replaceable(
    dirs: &DataDirs,
    replaced: &[DirIndex],
    replaceable: u8,
) -> Result<(), ShardError> {
    if replaced.len() <= usize::from(replaceable) {
        return Ok(());
    }
    let names: Vec<String> = replaced
        .iter()
        .map(|d| dirs.dir(*d).display().to_string())
        .collect();
    Err(ShardError::Layout {
        path: dirs.dir(replaced[0]).to_path_buf(),
        reason: format!(
            "{} data dirs are empty ({}), more than the {replaceable} the erasure code can \
             rebuild: objects would be lost. Restore the dirs' contents, or replace at most \
             {replaceable} at a time",
            replaced.len(),
            names.join(", "),
        ),
    })
}

/// An empty dir taken as a replacement must be a mount point when every marked dir is
/// one: a node made one dir per disk whose empty dir is not a mount point has a disk that
/// did not mount (a boot that lost it), and rebuilding here would fill the filesystem
/// below the mount point — the root filesystem, most often. Refused, naming the dir; a
/// new disk mounted there is taken. Where mount points cannot be told (no `/proc`), or
/// the node's dirs are not each a mount point (one disk, or a test), nothing is checked.
fn check_mounted(
    dirs: &DataDirs,
    markers: &[Option<DirMarker>],
    replaced: &[DirIndex],
) -> Result<(), ShardError> {
    if replaced.is_empty() {
        return Ok(());
    }
    let marked_are_mounts = dirs
        .iter()
        .filter(|(d, _)| markers[usize::from(d.0)].is_some())
        .all(|(_, dir)| is_mount_point(dir) == Some(true));
    if !marked_are_mounts {
        return Ok(());
    }
    match replaced
        .iter()
        .find(|d| is_mount_point(dirs.dir(**d)) == Some(false))
    {
        None => Ok(()),
        Some(d) => Err(ShardError::Layout {
            path: dirs.dir(*d).to_path_buf(),
            reason: "it is empty and not a mount point, while every other data dir of this \
                     node is one: its disk may not be mounted, and rebuilding it here would \
                     fill the filesystem below. Mount its disk (or a new one, to rebuild onto) \
                     there and start again"
                .into(),
        }),
    }
}

fn read_marker(dir: &Path) -> Result<Option<DirMarker>, ShardError> {
    let path = dir.join(MARKER_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => DirMarker::decode(&text)
            .map(Some)
            .ok_or_else(|| ShardError::Layout {
                path,
                reason: "not a data dir marker this version of ron can read".into(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ShardError::Io {
            op: "read",
            path,
            source: e,
        }),
    }
}

fn check_marker(dir: &Path, at: DirIndex, n: u8, marker: &DirMarker) -> Result<(), ShardError> {
    let reason = if marker.dirs != n {
        format!(
            "it is dir {} of a node with {} data dirs, and {n} were given: a node's dirs are \
             fixed when it is created",
            marker.position.0, marker.dirs
        )
    } else if marker.position != at {
        format!(
            "it is dir {} of this node's data dirs but was given as dir {}: give the dirs \
             in their original order",
            marker.position.0, at.0
        )
    } else {
        return Ok(());
    };
    Err(ShardError::Layout {
        path: dir.to_path_buf(),
        reason,
    })
}

fn check_one_node(dirs: &DataDirs, markers: &[Option<DirMarker>]) -> Result<(), ShardError> {
    let mut marked = dirs
        .iter()
        .zip(markers)
        .filter_map(|((_, dir), m)| Some((dir, (*m)?)));
    let Some((first_dir, first)) = marked.next() else {
        return Ok(());
    };
    match marked.find(|(_, m)| m.node != first.node) {
        None => Ok(()),
        Some((dir, other)) => Err(ShardError::Layout {
            path: dir.to_path_buf(),
            reason: format!(
                "it belongs to node {}, while {} belongs to node {}: the dirs of two nodes \
                 were mixed",
                other.node_hex(),
                first_dir.display(),
                first.node_hex()
            ),
        }),
    }
}

/// A new node's id: 16 bytes from the kernel's random source.
fn new_node_id(dirs: &DataDirs) -> Result<[u8; 16], ShardError> {
    use std::io::Read;
    let mut id = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut id))
        .map_err(ShardError::io("read a new node id", dirs.first()))?;
    Ok(id)
}

/// Loads the partition table from the first dir holding a copy that decodes, writes it
/// into every dir whose copy is missing or does not (a rotted copy is replaced from a
/// good one, as a missing one always was: one rotted copy in the first dir refused the
/// start while every other dir held a good one), or creates it with one store per
/// shard. Refused only when copies exist and none decodes.
fn open_table(dirs: &DataDirs, shards: u16) -> Result<PartitionTable, ShardError> {
    let mut table = None;
    let mut to_write = Vec::new();
    let mut first_refusal = None;
    for (_, dir) in dirs.iter() {
        let path = dir.join(TABLE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                to_write.push(dir);
                continue;
            }
            Err(e) => return Err(ShardError::io("read", path)(e)),
        };
        match PartitionTable::decode(&bytes) {
            Ok(decoded) => {
                table.get_or_insert(decoded);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "a copy of the partition table does not decode: written again from another dir's copy if one does");
                to_write.push(dir);
                first_refusal.get_or_insert(ShardError::Layout {
                    path,
                    reason: e.to_string(),
                });
            }
        }
    }
    let table = match (table, first_refusal) {
        (Some(table), _) => table,
        (None, Some(refusal)) => return Err(refusal),
        (None, None) => PartitionTable::round_robin(shards).map_err(|e| ShardError::Layout {
            path: dirs.first().to_path_buf(),
            reason: e.to_string(),
        })?,
    };
    for dir in to_write {
        write_atomically(dir, TABLE_FILE, &table.encode())?;
    }
    Ok(table)
}

/// Writes `dir/name` through a synced temp file and a rename, then syncs `dir`.
/// Whether a replacement dir was taken and the stores' scrub passes are still to be
/// restarted ([`SCRUB_RESTART_FILE`]).
pub fn scrub_restart_pending(dirs: &DataDirs) -> bool {
    dirs.iter()
        .any(|(_, dir)| dir.join(SCRUB_RESTART_FILE).exists())
}

/// Every store's scrub pass restarted: the mark goes (durably, from every dir).
pub fn scrub_restart_done(dirs: &DataDirs) -> Result<(), ShardError> {
    for (_, dir) in dirs.iter() {
        let path = dir.join(SCRUB_RESTART_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ShardError::io("remove", &path)(e)),
        }
    }
    Ok(())
}

pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ShardError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    write_durably(&tmp, bytes)?;
    std::fs::rename(&tmp, &path).map_err(ShardError::io("rename", &path))?;
    sync_dir(dir)
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), ShardError> {
    use std::io::Write;
    let mut file = std::fs::File::create(path).map_err(ShardError::io("create", path))?;
    file.write_all(bytes)
        .map_err(ShardError::io("write", path))?;
    file.sync_all().map_err(ShardError::io("fsync", path))
}

/// Creates the dirs in `dirs` that are missing, with their missing parents, and then
/// fsyncs the parent of each dir it created and of each dir in `dirs`, once per parent:
/// a file synced into a new dir is only as durable as that dir's own name (POSIX leaves
/// a new entry to the next sync of its parent), and an acknowledged object must not
/// vanish with its dir on a power loss. A dir found made is synced into its parent too:
/// a run killed between its `mkdir` and that sync left it for the next run to write
/// into, never synced. Returns how many dirs it created. Blocking.
pub fn create_dirs_durably<'a>(
    dirs: impl IntoIterator<Item = &'a Path>,
) -> Result<usize, ShardError> {
    let mut parents_to_sync = std::collections::BTreeSet::new();
    let mut created = 0;
    for dir in dirs {
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
        parents_to_sync.insert(parent.unwrap_or(Path::new(".")).to_path_buf());
        // A relative path's last ancestor is "" (the working dir): never made.
        let missing: Vec<&Path> = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.is_dir())
            .collect();
        for new in missing.into_iter().rev() {
            match std::fs::create_dir(new) {
                Ok(()) => created += 1,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && new.is_dir() => {}
                Err(e) => return Err(ShardError::io("create dir", new)(e)),
            }
            let parent = new.parent().filter(|p| !p.as_os_str().is_empty());
            parents_to_sync.insert(parent.unwrap_or(Path::new(".")).to_path_buf());
        }
    }
    parents_to_sync
        .iter()
        .try_for_each(|parent| sync_dir(parent))?;
    Ok(created)
}

/// [`create_dirs_durably`] for one dir.
pub fn create_dir_durably(dir: &Path) -> Result<usize, ShardError> {
    create_dirs_durably([dir])
}

/// fsyncs a directory so a rename into it is durable. Blocking.
pub fn sync_dir(dir: &Path) -> Result<(), ShardError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ShardError::io("fsync dir", dir))
}

/// Where the parity of the object staged or stored at `data_path` is.
pub fn parity_path(data_path: &Path) -> PathBuf {
    let mut name = data_path.as_os_str().to_owned();
    name.push(".parity");
    PathBuf::from(name)
}

pub fn tmp_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tmp")
}

/// Empties `<data>/tmp`: uploads that were never acknowledged. Start-up only, before any
/// shard runs; its cost is the number of interrupted uploads, not of stored objects.
pub fn clean_tmp(data_dir: &Path) -> Result<usize, ShardError> {
    let dir = tmp_dir(data_dir);
    create_dir_durably(&dir)?;
    let mut removed = 0;
    for entry in std::fs::read_dir(&dir).map_err(ShardError::io("list", &dir))? {
        let entry = entry.map_err(ShardError::io("list", &dir))?;
        let path = entry.path();
        // Uploads stage files only: a dir here is someone else's, and no reason to
        // refuse the start (it did, "Is a directory").
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            tracing::warn!(path = %path.display(), "a dir in the uploads' temp area: left as it is");
            continue;
        }
        std::fs::remove_file(&path).map_err(ShardError::io("remove", &path))?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("ron-layout-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        root
    }

    #[test]
    fn the_temp_area_is_emptied_of_files_and_a_dir_in_it_is_left() {
        let root = temp("clean-tmp");
        let tmp = tmp_dir(&root);
        std::fs::create_dir_all(tmp.join("not-ours")).unwrap();
        std::fs::write(tmp.join("upload-1"), b"interrupted").unwrap();
        std::fs::write(tmp.join("upload-2"), b"interrupted").unwrap();
        assert_eq!(clean_tmp(&root).unwrap(), 2);
        assert!(tmp.join("not-ours").is_dir());
        assert!(!tmp.join("upload-1").exists() && !tmp.join("upload-2").exists());
        let _ = std::fs::remove_dir_all(&root);
    }

    fn dirs(root: &Path, names: &[&str]) -> DataDirs {
        DataDirs::new(names.iter().map(|n| root.join(n)).collect())
    }

    fn refusal(dirs: &DataDirs) -> String {
        open_data_dirs(dirs, 2, 2).unwrap_err().to_string()
    }

    #[test]
    fn markers_round_trip_and_odd_text_is_refused() {
        let marker = DirMarker {
            node: *b"0123456789abcdef",
            position: DirIndex(3),
            dirs: 4,
        };
        assert_eq!(DirMarker::decode(&marker.encode()), Some(marker));
        assert_eq!(DirMarker::decode("ron data dir v1\nnode 00\n"), None);
        assert_eq!(DirMarker::decode("hello"), None);
    }

    #[test]
    fn dirs_keep_their_positions_a_new_empty_dir_is_a_replacement_and_mixups_are_refused() {
        let root = temp("dirs");
        let four = dirs(&root, &["a", "b", "c", "d"]);
        let opened = open_data_dirs(&four, 2, 2).unwrap();
        assert!(opened.replaced.is_empty(), "a new node replaces nothing");
        let table = opened.table.encode();
        for (_, dir) in four.iter() {
            assert_eq!(std::fs::read(dir.join(TABLE_FILE)).unwrap(), table);
        }
        assert!(open_data_dirs(&four, 2, 2).unwrap().replaced.is_empty());
        assert!(
            !scrub_restart_pending(&four),
            "nothing replaced: no restart"
        );

        let swapped = dirs(&root, &["a", "c", "b", "d"]);
        let e = refusal(&swapped);
        assert!(
            e.contains("it is dir 2 of this node's data dirs but was given as dir 1"),
            "{e}"
        );
        let three = dirs(&root, &["a", "b", "c"]);
        let e = refusal(&three);
        assert!(
            e.contains("it is dir 0 of a node with 4 data dirs, and 3 were given"),
            "{e}"
        );

        std::fs::remove_dir_all(root.join("b")).unwrap();
        std::fs::remove_dir_all(root.join("c")).unwrap();
        let e = open_data_dirs(&four, 2, 1).unwrap_err().to_string();
        assert!(e.contains("2 data dirs are empty"), "{e}");
        assert!(
            read_marker(&root.join("c")).unwrap().is_none(),
            "nothing written"
        );
        assert!(!scrub_restart_pending(&four), "refused: no restart either");
        let opened = open_data_dirs(&four, 2, 2).unwrap();
        assert_eq!(opened.replaced, vec![DirIndex(1), DirIndex(2)]);
        // Marked in the dirs that were there, before the replacements' markers.
        assert!(root.join("a").join(SCRUB_RESTART_FILE).exists());
        assert!(!root.join("b").join(SCRUB_RESTART_FILE).exists());
        assert!(scrub_restart_pending(&four));
        // The next start (the shards not yet ready last time) still restarts them.
        assert!(open_data_dirs(&four, 2, 2).unwrap().replaced.is_empty());
        assert!(scrub_restart_pending(&four));
        scrub_restart_done(&four).unwrap();
        assert!(!scrub_restart_pending(&four));
        std::fs::remove_dir_all(root.join("c")).unwrap();
        let opened = open_data_dirs(&four, 2, 2).unwrap();
        assert_eq!(opened.replaced, vec![DirIndex(2)]);
        assert_eq!(opened.table.encode(), table);
        assert_eq!(
            read_marker(&root.join("c")).unwrap().unwrap().position,
            DirIndex(2)
        );

        let other = temp("dirs-other");
        open_data_dirs(&dirs(&other, &["a", "b", "c", "d"]), 2, 2).unwrap();
        std::fs::remove_dir_all(root.join("d")).unwrap();
        std::fs::rename(other.join("d"), root.join("d")).unwrap();
        let e = refusal(&four);
        assert!(e.contains("the dirs of two nodes were mixed"), "{e}");
        let _ = std::fs::remove_dir_all(&root);
        let _ = std::fs::remove_dir_all(&other);
    }

    /// A crash while a new node's dirs are marked (before its table is written) leaves
    /// some marked and the rest not: the next start finishes the creation. Before, the
    /// unmarked dirs counted as replacements, more than parity covers, and every start
    /// was refused "2 data dirs are empty".
    #[test]
    fn a_creation_cut_short_between_two_markers_is_finished_at_the_next_start() {
        let root = temp("cut-creation");
        let three = dirs(&root, &["a", "b", "c"]);
        let node = open_data_dirs(&three, 2, 1).unwrap();
        // What a crash right after the first marker leaves.
        for (d, dir) in three.iter() {
            std::fs::remove_file(dir.join(TABLE_FILE)).unwrap();
            if d.0 > 0 {
                std::fs::remove_file(dir.join(MARKER_FILE)).unwrap();
            }
        }
        let opened = open_data_dirs(&three, 2, 1).unwrap();
        assert!(opened.replaced.is_empty(), "{:?}", opened.replaced);
        let first = read_marker(&root.join("a")).unwrap().unwrap();
        for (d, dir) in three.iter() {
            let marker = read_marker(dir).unwrap().unwrap();
            assert_eq!((marker.node, marker.position), (first.node, d));
            assert!(dir.join(TABLE_FILE).exists());
        }
        assert_eq!(opened.table.encode(), node.table.encode());
        let _ = std::fs::remove_dir_all(&root);
    }

    /// One rotted copy of the partition table beside good ones is written again from a
    /// good one; before, a rotted copy in the first dir refused the start ("checksum
    /// mismatch") while the others held the table whole. No good copy: refused.
    #[test]
    fn a_rotted_copy_of_the_partition_table_is_replaced_from_a_good_one() {
        let root = temp("rotted-table");
        let three = dirs(&root, &["a", "b", "c"]);
        let node = open_data_dirs(&three, 2, 1).unwrap();
        let first = root.join("a").join(TABLE_FILE);
        let mut rotted = std::fs::read(&first).unwrap();
        rotted[40] ^= 0x01;
        std::fs::write(&first, &rotted).unwrap();
        let opened = open_data_dirs(&three, 2, 1).unwrap();
        assert_eq!(opened.table.encode(), node.table.encode());
        assert_eq!(
            std::fs::read(&first).unwrap(),
            node.table.encode(),
            "rewritten"
        );
        for (_, dir) in three.iter() {
            std::fs::write(dir.join(TABLE_FILE), &rotted).unwrap();
        }
        let refused = refusal_of(&three, 2, 1);
        assert!(refused.contains("partitions.bin"), "{refused}");
        let _ = std::fs::remove_dir_all(&root);
    }

    fn refusal_of(dirs: &DataDirs, shards: u16, replaceable: u8) -> String {
        open_data_dirs(dirs, shards, replaceable)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_one_dir_node_from_before_markers_gets_one_and_cannot_grow_dirs() {
        let root = temp("legacy");
        let one = dirs(&root, &["a"]);
        std::fs::create_dir_all(one.first()).unwrap();
        let table = PartitionTable::round_robin(3).unwrap();
        std::fs::write(one.first().join(TABLE_FILE), table.encode()).unwrap();
        let opened = open_data_dirs(&one, 1, 1).unwrap();
        assert_eq!(opened.table.encode(), table.encode(), "the table is kept");
        assert!(opened.replaced.is_empty());
        std::fs::remove_file(one.first().join(MARKER_FILE)).unwrap();
        let e = refusal(&dirs(&root, &["a", "b"]));
        assert!(
            e.contains("it was made for a node with one data dir"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
