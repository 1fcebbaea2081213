//! Segments: append-only files that pack small objects, so that a group commit of many
//! small uploads costs one write and one data sync instead of a file, a rename and a
//! sync for each (Haystack's needles, SeaweedFS's volumes).
//!
//! ```text
//! <store>/segments/<id, 8 hex digits>    needle | needle | ...
//! needle = "RONn" | body_len u32 BE | address (32 B) | type_len u8 | content type
//!          | body | zeros to a multiple of 8
//! ```
//!
//! An object of at most [`PACKED_OBJECT_BYTES_MAX`] (one 64 KiB group) is packed; its
//! index record says which segment and at which offset its body starts (`record.rs`).
//! The needle head is not needed to read an object: it makes a segment self-describing,
//! so that a scrubber or a rebuild of the index can find what it holds (everything an
//! index record of a packed object says, its address checkable against the body).
//!
//! Durability and crashes: a batch's needles are written with one `pwrite` and made
//! durable with one `fdatasync` (a new segment's directory entry synced too), and that
//! is when their uploads are acknowledged: the segment is the log of small objects. Their
//! index records follow in larger LMDB transactions, each of which also stores the
//! store's [`Checkpoint`] — how far into the segments the index has taken. At start-up
//! the needles past the checkpoint are read back ([`scan_past`]), each checked against
//! its address, and indexed before the shard serves: a crash loses no acknowledged
//! object. A needle cut short or failing its check is never indexed. Where whole
//! needles follow it, the scan goes on at the next whole needle ([`Skipped`]): rot in an
//! acknowledged batch costs the rotten object, never the acknowledged ones after it (a
//! torn write can only be the segment's last batch, since a segment is never appended
//! past one, so a skip there is a needle of that unacknowledged batch whose bytes reached
//! the disk out of order). Where none follows, it is a torn tail, and the scan of that
//! segment ends.
//! Each start of the node (and any failed append) opens a new segment, so a segment is
//! only ever appended past bytes that were synced by the process that wrote them.
//! Nothing is deleted from a segment: objects are immutable, and an evicted packed copy
//! (`store/evictable.rs`) leaves its needle as dead space, until a start compacts a
//! segment at least half dead — its live needles appended again, the segment deleted
//! (`store/compact.rs`).
//!
//! Lanes (docs/design/erasure-coding.md, "Small objects"): a packed object has no
//! parity; with a code of `m` parity blocks its needle is written to `m + 1` lanes,
//! lane 0 in `segments/`, lane `l` in `segments.<l>/`, every lane taking the same
//! batches in the same order (one write and one data sync per lane), so a needle lies
//! at the same segment and offset in every lane and its record names it once. A read
//! or a start-up scan that finds a needle bad in one lane takes it from another.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use ron_codec::{Address, ChunkTree};

use crate::error::ShardError;
use crate::ids::{ByteOffset, LaneIndex, SegmentId};
use crate::layout;
use crate::limits::{PACKED_OBJECT_BYTES_MAX, SEGMENT_BYTES_MAX, SEGMENT_LANES_MAX};

const NEEDLE_MAGIC: &[u8; 4] = b"RONn";
/// Magic, body length, address, content type length (the content type follows).
pub const NEEDLE_HEAD_BYTES_MIN: u64 = 4 + 4 + 32 + 1;
const NEEDLE_ALIGN_BYTES: u64 = 8;

/// One object to pack.
#[derive(Debug, Clone, Copy)]
pub struct Needle<'a> {
    pub addr: Address,
    /// At most 255 bytes (`record::CONTENT_TYPE_LEN_MAX`).
    pub content_type: &'a str,
    pub body: &'a [u8],
}

impl Needle<'_> {
    /// Bytes the needle takes in its segment.
    fn stored_bytes(&self) -> u64 {
        needle_bytes(self.content_type.len() as u64, self.body.len() as u64)
    }
}

/// Bytes a needle with a content type of `type_len` bytes and a body of `body_len` takes
/// in its segment: head, type, body, padding.
///
/// Saturating: the lengths may come from a record read off disk, where a rotted one can
/// be anything.
pub(crate) fn needle_bytes(type_len: u64, body_len: u64) -> u64 {
    NEEDLE_HEAD_BYTES_MIN
        .saturating_add(type_len)
        .saturating_add(body_len)
        .checked_next_multiple_of(NEEDLE_ALIGN_BYTES)
        .unwrap_or(u64::MAX)
}

/// Where a packed object's body lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeedleAt {
    pub segment: SegmentId,
    pub body: ByteOffset,
}

/// How far a store's index has taken in its segments: every needle before `end` in
/// `segment`, and every needle of the segments before it, is indexed (or was never
/// acknowledged). Stored in the index in the same transaction as the records it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Checkpoint {
    pub segment: SegmentId,
    pub end: ByteOffset,
}

impl Checkpoint {
    /// Nothing indexed yet: a new store's checkpoint.
    pub const START: Checkpoint = Checkpoint {
        segment: SegmentId(0),
        end: ByteOffset(0),
    };

    pub const ENCODED_BYTES: usize = 16;
    /// A checkpoint as written before it carried its check.
    const UNCHECKED_BYTES: usize = 12;

    /// `segment u32 BE | end u64 BE | check`: the check (the first four bytes of the
    /// BLAKE3 hash of the twelve before it) catches a rotted checkpoint. LMDB checks no
    /// page, and one taken forward would skip the replay of acknowledged needles (and
    /// let compaction take the segment being written for sealed).
    pub fn encode(&self) -> [u8; Self::ENCODED_BYTES] {
        let mut out = [0; Self::ENCODED_BYTES];
        out[..4].copy_from_slice(&self.segment.0.to_be_bytes());
        out[4..12].copy_from_slice(&self.end.0.to_be_bytes());
        let check = Self::check(&out[..Self::UNCHECKED_BYTES]);
        out[Self::UNCHECKED_BYTES..].copy_from_slice(&check);
        out
    }

    /// `None` for bytes that fail their check (or no version wrote); a checkpoint from
    /// before the check is taken as it is.
    pub fn decode(bytes: &[u8]) -> Option<Checkpoint> {
        let (value, check) = match bytes.len() {
            Self::ENCODED_BYTES => bytes.split_at(Self::UNCHECKED_BYTES),
            Self::UNCHECKED_BYTES => (bytes, &[][..]),
            _ => return None,
        };
        if !check.is_empty() && check != Self::check(value) {
            return None;
        }
        let (segment, end) = value.split_at(4);
        Some(Checkpoint {
            segment: SegmentId(u32::from_be_bytes(segment.try_into().ok()?)),
            end: ByteOffset(u64::from_be_bytes(end.try_into().ok()?)),
        })
    }

    fn check(value: &[u8]) -> [u8; 4] {
        let hash = blake3::hash(value);
        let mut check = [0; 4];
        check.copy_from_slice(&hash.as_bytes()[..4]);
        check
    }
}

/// What [`SegmentLog::append_durably`] did: where each body lies, and the end of the
/// batch (the checkpoint once the batch is indexed).
#[derive(Debug)]
pub(crate) struct Appended {
    pub places: Vec<NeedleAt>,
    pub end: Checkpoint,
}

/// The dir of lane `lane` of the store at `store_root`.
pub fn lane_dir(store_root: &Path, lane: LaneIndex) -> PathBuf {
    match lane.0 {
        0 => store_root.join("segments"),
        l => store_root.join(format!("segments.{l}")),
    }
}

/// The path of segment `id` of the store at `store_root` (lane 0).
pub fn segment_path(store_root: &Path, id: SegmentId) -> PathBuf {
    lane_segment_path(store_root, LaneIndex(0), id)
}

/// The path of segment `id` in lane `lane` of the store at `store_root`.
pub fn lane_segment_path(store_root: &Path, lane: LaneIndex, id: SegmentId) -> PathBuf {
    lane_dir(store_root, lane).join(id.to_string())
}

/// Creates the dirs of lanes `0..lanes` of the store at `store_root` that are missing,
/// durably (a lane's synced segments must not vanish with its dir's name). Blocking.
pub(crate) fn create_lane_dirs(store_root: &Path, lanes: u8) -> Result<(), ShardError> {
    let dirs: Vec<PathBuf> = (0..lanes)
        .map(|lane| lane_dir(store_root, LaneIndex(lane)))
        .collect();
    layout::create_dirs_durably(dirs.iter().map(PathBuf::as_path)).map(drop)
}

/// Where the store at `store_root` records how many lanes its segments were written
/// to: one line `<first segment id, 8 hex digits> <lanes>` per start whose lane count
/// differed from the line before.
const LANE_HISTORY_FILE: &str = "segment-lanes";

/// The lanes each run of the store wrote its segments to: `(first segment, lanes)` in
/// segment order. Segments older than the first entry (written before the history was
/// kept) are taken to have every lane on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaneHistory(Vec<(SegmentId, u8)>);

impl LaneHistory {
    /// Reads the history of the store at `store_root`, and records that segments from
    /// the next one on are written to `lanes` lanes (durably, before any is: a lowered
    /// `--ec` must not make a later check take the lanes it no longer writes for lost).
    /// Blocking; at start-up.
    pub(crate) fn open(store_root: &Path, lanes: u8) -> Result<LaneHistory, ShardError> {
        let path = store_root.join(LANE_HISTORY_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(ShardError::io("read", &path)(e)),
        };
        let mut history = LaneHistory::parse(&text).ok_or_else(|| ShardError::Layout {
            path: path.clone(),
            reason: "not lines of '<segment id> <lanes>'".into(),
        })?;
        if history.0.last().map(|(_, l)| *l) != Some(lanes) {
            let next = next_segment_id(store_root)?;
            // Written whole through a synced temp file and a rename: appended in place,
            // a power loss could leave a torn last line, and the store then refused to
            // open until an operator mended the file.
            let end = if text.is_empty() || text.ends_with('\n') {
                ""
            } else {
                "\n"
            };
            let text = format!("{text}{end}{next} {lanes}\n");
            layout::write_atomically(store_root, LANE_HISTORY_FILE, text.as_bytes())?;
            history.0.push((next, lanes));
        }
        Ok(history)
    }

    fn parse(text: &str) -> Option<LaneHistory> {
        let mut entries: Vec<(SegmentId, u8)> = Vec::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (id, lanes) = line.split_once(' ')?;
            let id = SegmentId(u32::from_str_radix(id, 16).ok()?);
            let lanes: u8 = lanes.parse().ok()?;
            if !(1..=SEGMENT_LANES_MAX).contains(&lanes)
                || entries.last().is_some_and(|(l, _)| *l > id)
            {
                return None;
            }
            entries.push((id, lanes));
        }
        Some(LaneHistory(entries))
    }

    /// The lanes segment `id` was written to, at most `on_disk`.
    pub fn lanes_of(&self, id: SegmentId, on_disk: u8) -> u8 {
        let written = self.0.iter().rev().find(|(first, _)| *first <= id);
        written.map_or(on_disk, |(_, lanes)| (*lanes).min(on_disk))
    }
}

/// The id the next segment of the store at `store_root` gets: past every one in lane 0
/// (every segment has lane 0).
fn next_segment_id(store_root: &Path) -> Result<SegmentId, ShardError> {
    let last = lane_segment_ids(store_root, LaneIndex(0))?.last().copied();
    Ok(last.map_or(SegmentId(0), |last| SegmentId(last.0.saturating_add(1))))
}

/// How many lanes the store at `store_root` has on disk (at least 1: lane 0). Blocking.
pub fn lanes_on_disk(store_root: &Path) -> u8 {
    (1..SEGMENT_LANES_MAX)
        .find(|&l| !lane_dir(store_root, LaneIndex(l)).is_dir())
        .unwrap_or(SEGMENT_LANES_MAX)
}

/// A store's segments as its owner's commit task appends to them: the segment taking
/// needles (in every lane), the id the next one gets, and the writers of the lanes past
/// the first. It moves to the blocking pool with each batch and back; only one batch of
/// a store is ever appending.
#[derive(Debug)]
pub(crate) struct SegmentLog {
    store_root: PathBuf,
    lanes: u8,
    next_id: SegmentId,
    active: Option<ActiveSegment>,
    /// One per lane past the first, started with the first append.
    lane_writers: Vec<LaneWriter>,
}

#[derive(Debug)]
struct ActiveSegment {
    id: SegmentId,
    /// The segment's file in each lane, lane 0 first (shared with the lanes' writers).
    files: Vec<(PathBuf, Arc<File>)>,
    /// Bytes written and synced (the same in every lane).
    len: u64,
}

impl SegmentLog {
    /// The log of the store at `store_root`, writing `lanes` copies (1..=
    /// [`SEGMENT_LANES_MAX`]; their dirs made by [`create_lane_dirs`]); its first
    /// append opens a segment past every existing one in any lane. Blocking (reads the
    /// directories).
    pub(crate) fn open(store_root: &Path, lanes: u8) -> Result<SegmentLog, ShardError> {
        let lanes = lanes.clamp(1, SEGMENT_LANES_MAX);
        let mut last = None;
        for lane in (0..lanes).map(LaneIndex) {
            last = last.max(lane_segment_ids(store_root, lane)?.last().copied());
        }
        let next_id = last.map_or(SegmentId(0), |last| SegmentId(last.0.saturating_add(1)));
        Ok(SegmentLog {
            store_root: store_root.to_path_buf(),
            lanes,
            next_id,
            active: None,
            lane_writers: Vec::new(),
        })
    }

    /// Appends one needle per body to every lane, with one write and one data sync per
    /// lane, and returns where each body lies, in order. Blocking. After a failure the
    /// segment is abandoned in every lane (what a failed write or sync left in it is
    /// unknown: it is cut back to its answered needles, or removed when it holds none)
    /// and the next append opens a new one.
    pub(crate) fn append_durably(
        &mut self,
        needles: &[Needle<'_>],
    ) -> Result<Appended, ShardError> {
        let (batch, bodies) = encode_needles(needles);
        let batch = Arc::new(batch);
        let fits = |s: &ActiveSegment| s.len + batch.len() as u64 <= SEGMENT_BYTES_MAX;
        if !self.active.as_ref().is_some_and(fits) {
            self.active = Some(self.create_segment()?);
        }
        self.start_lane_writers()?;
        let segment = self.active.as_mut().expect("a segment was just opened");
        let at = segment.len;
        if let Err(e) = write_lanes_durably(&segment.files, &self.lane_writers, &batch, at) {
            abandon_batch(&segment.files, at);
            self.active = None;
            return Err(e);
        }
        segment.len += batch.len() as u64;
        let id = segment.id;
        let places = bodies
            .into_iter()
            .map(|body| NeedleAt {
                segment: id,
                body: ByteOffset(at + body),
            })
            .collect();
        let end = Checkpoint {
            segment: id,
            end: ByteOffset(segment.len),
        };
        Ok(Appended { places, end })
    }

    /// Creates the next segment in every lane and makes its names durable.
    fn create_segment(&mut self) -> Result<ActiveSegment, ShardError> {
        let id = self.next_id;
        self.next_id = SegmentId(id.0.checked_add(1).ok_or_else(|| ShardError::Layout {
            path: lane_dir(&self.store_root, LaneIndex(0)),
            reason: "segment ids exhausted".into(),
        })?);
        let mut files = Vec::with_capacity(usize::from(self.lanes));
        for lane in (0..self.lanes).map(LaneIndex) {
            let path = lane_segment_path(&self.store_root, lane, id);
            let file = File::options()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(ShardError::io("create segment", &path))?;
            layout::sync_dir(&lane_dir(&self.store_root, lane))?;
            files.push((path, Arc::new(file)));
        }
        Ok(ActiveSegment { id, files, len: 0 })
    }

    /// Starts the lanes' writers, or all of them again when one has stopped (a failed
    /// append after it abandoned its segment).
    fn start_lane_writers(&mut self) -> Result<(), ShardError> {
        if self.lane_writers.iter().any(LaneWriter::stopped) {
            self.lane_writers.clear();
        }
        for lane in (self.lane_writers.len() + 1..usize::from(self.lanes)).map(|l| l as u8) {
            let lane = LaneIndex(lane);
            let writer = LaneWriter::start(lane).map_err(ShardError::io(
                "start the writer of",
                &lane_dir(&self.store_root, lane),
            ))?;
            self.lane_writers.push(writer);
        }
        Ok(())
    }
}

/// The writer of one lane past the first: a thread of its own for the log's life, so
/// that a batch's lanes are written and synced at once (their syncs overlap rather than
/// add up) without a thread started per batch. It takes one batch at a time and reports
/// each before it takes the next.
#[derive(Debug)]
struct LaneWriter {
    batches: Option<SyncSender<LaneBatch>>,
    written: Receiver<std::io::Result<()>>,
    thread: Option<JoinHandle<()>>,
}

/// One batch for a lane: its bytes, shared with the other lanes, and where they go.
struct LaneBatch {
    file: Arc<File>,
    bytes: Arc<Vec<u8>>,
    at: u64,
}

impl LaneWriter {
    fn start(lane: LaneIndex) -> std::io::Result<LaneWriter> {
        let (batches, inbox) = sync_channel::<LaneBatch>(1);
        let (report, written) = sync_channel(1);
        let thread = std::thread::Builder::new()
            .name(format!("ron-lane-{}", lane.0))
            .spawn(move || {
                for batch in inbox {
                    let result = write_durably(&batch.file, &batch.bytes, batch.at);
                    if report.send(result).is_err() {
                        return;
                    }
                }
            })?;
        Ok(LaneWriter {
            batches: Some(batches),
            written,
            thread: Some(thread),
        })
    }

    fn stopped(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Hands the writer a batch; `false` if it has stopped.
    fn write(&self, batch: LaneBatch) -> bool {
        self.batches
            .as_ref()
            .is_some_and(|batches| batches.send(batch).is_ok())
    }

    /// The outcome of the batch handed to it last.
    fn wait(&self) -> std::io::Result<()> {
        self.written
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the lane's writer stopped")))
    }
}

impl Drop for LaneWriter {
    fn drop(&mut self) {
        // Its inbox closed, the thread ends after the batch it is writing, if any.
        self.batches = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_durably(file: &File, bytes: &[u8], at: u64) -> std::io::Result<()> {
    file.write_all_at(bytes, at).and_then(|()| file.sync_data())
}

/// Writes `batch` at `at` in every lane's file and syncs it: lane 0 on this thread, the
/// others by their writers at the same time. Returns once every lane has answered.
fn write_lanes_durably(
    files: &[(PathBuf, Arc<File>)],
    writers: &[LaneWriter],
    batch: &Arc<Vec<u8>>,
    at: u64,
) -> Result<(), ShardError> {
    let Some(((first_path, first), others)) = files.split_first() else {
        return Ok(());
    };
    let handed: Vec<bool> = others
        .iter()
        .zip(writers)
        .map(|((_, file), writer)| {
            writer.write(LaneBatch {
                file: Arc::clone(file),
                bytes: Arc::clone(batch),
                at,
            })
        })
        .collect();
    let mut result =
        write_durably(first, batch, at).map_err(ShardError::io("append to segment", first_path));
    for (((path, _), writer), handed) in others.iter().zip(writers).zip(handed) {
        let lane = match handed {
            true => writer.wait(),
            false => Err(std::io::Error::other("the lane's writer stopped")),
        };
        result = result.and(lane.map_err(ShardError::io("append to segment", path)));
    }
    result
}

/// Takes back what a failed batch left past `at` in every lane (best effort: no write
/// is in flight once `write_lanes_durably` has returned). Its needles were never
/// answered: left, a full disk kept the bytes as dead space no removal counts, and a
/// later replay indexed uploads that were refused. A segment it leaves empty goes whole.
fn abandon_batch(files: &[(PathBuf, Arc<File>)], at: u64) {
    for (path, file) in files {
        let _ = match at {
            0 => std::fs::remove_file(path),
            _ => file.set_len(at),
        };
    }
}

/// The whole needle of a packed object (head, body, padding) as its segments hold it,
/// and where in it the body starts: what a repair writes into a lane that lost it.
pub(crate) fn encode_needle(needle: &Needle<'_>) -> (Vec<u8>, u64) {
    let (bytes, bodies) = encode_needles(std::slice::from_ref(needle));
    (bytes, bodies[0])
}

/// The ids of a store's segments (lane 0), in order. Blocking (reads the directory).
pub(crate) fn segment_ids(store_root: &Path) -> Result<Vec<SegmentId>, ShardError> {
    lane_segment_ids(store_root, LaneIndex(0))
}

/// The ids of a store's segments in lane `lane`, in order. Blocking.
pub(crate) fn lane_segment_ids(
    store_root: &Path,
    lane: LaneIndex,
) -> Result<Vec<SegmentId>, ShardError> {
    let dir = lane_dir(store_root, lane);
    let entries = std::fs::read_dir(&dir).map_err(ShardError::io("list", &dir))?;
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(ShardError::io("list", &dir))?;
        let name = entry.file_name();
        // A dir named like a segment read as one and refused the start (EISDIR).
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        let id = name
            .to_str()
            .filter(|n| is_file && n.len() == 8)
            .and_then(|n| u32::from_str_radix(n, 16).ok());
        match id {
            Some(id) => ids.push(SegmentId(id)),
            // Not ours (a backup copy, an editor's file, NFS's .nfs*): passed over, said
            // once per listing; refusing it failed every start and every packed upload.
            None => tracing::warn!(
                path = %entry.path().display(),
                "not a segment file (not a file, or its name is not 8 hex digits): passed over"
            ),
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// A needle read back from a segment, its body checked against its address.
#[derive(Debug)]
pub(crate) struct FoundNeedle {
    pub tree: ChunkTree,
    pub content_type: String,
    pub at: NeedleAt,
}

/// What a scan of the segments past a checkpoint found.
#[derive(Debug)]
pub(crate) struct Scan {
    pub needles: Vec<FoundNeedle>,
    /// Where the last whole needle ends: the checkpoint once they are indexed.
    pub end: Checkpoint,
    /// Segments whose scan stopped before the end of the file, and where.
    pub torn: Vec<(SegmentId, ByteOffset)>,
    /// Bytes no lane holds as a whole needle with whole needles after them: rot, not a
    /// torn tail (see [`Skipped`]).
    pub skipped: Vec<Skipped>,
}

/// Bytes of a segment a scan passed over: no lane has a whole, checked needle at
/// `at`, and the next one any lane has starts `bytes` later. Rot in an acknowledged
/// batch (the object that needle held is lost here unless another node holds it), or,
/// in a segment's last batch, a torn write never acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    pub segment: SegmentId,
    pub at: ByteOffset,
    pub bytes: u64,
    /// The address the first skipped needle's head names, where a lane's head there
    /// still reads as one (unchecked: the body that would prove it is damaged).
    pub claimed: Option<Address>,
}

/// Bytes read at a time while looking for the next whole needle past damage.
const RESYNC_WINDOW_BYTES: usize = 1 << 20;

/// Reads back every needle past `from`, in order, each checked against its address; a
/// needle cut short or failing its check in lane 0 is taken from the next lane that
/// holds it whole. Where no lane holds one whole, the scan goes on at the next whole
/// needle any lane holds (found by its magic at an aligned offset and checked like
/// every other): a needle rotten in every lane costs that object, never the
/// acknowledged needles after it. Only a segment with no whole needle after the bad
/// bytes ends there (a torn tail). Blocking; at start-up. Memory: one needle at a time
/// besides the results, and a 1 MiB window while looking past bad bytes.
#[cfg(test)]
pub(crate) fn scan_past(store_root: &Path, from: Checkpoint) -> Result<Scan, ShardError> {
    scan_past_in_batches(store_root, from, usize::MAX, &mut |_, _| Ok(()))
}

/// Takes a scan's needles, each batch with the checkpoint just past its last.
pub(crate) type OnBatch<'a> =
    dyn FnMut(Vec<FoundNeedle>, Checkpoint) -> Result<(), ShardError> + 'a;

/// [`scan_past`], handing the needles found to `on_batch` every `batch_needles` (the
/// checkpoint past them with them); the scan returns the rest. A replay from the first
/// needle — a lost index, a rotted checkpoint — finds every needle of the store: held
/// at once, hundreds of millions of small objects took tens of GB a shard.
pub(crate) fn scan_past_in_batches(
    store_root: &Path,
    from: Checkpoint,
    batch_needles: usize,
    on_batch: &mut OnBatch<'_>,
) -> Result<Scan, ShardError> {
    let mut scan = Scan {
        needles: Vec::new(),
        end: from,
        torn: Vec::new(),
        skipped: Vec::new(),
    };
    let lanes = lanes_on_disk(store_root);
    let mut ids = Vec::new();
    for lane in (0..lanes).map(LaneIndex) {
        ids.extend(lane_segment_ids(store_root, lane)?);
    }
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        if id < from.segment {
            continue;
        }
        let start = if id == from.segment {
            from.end
        } else {
            ByteOffset(0)
        };
        let copies = LaneCopies::open(store_root, lanes, id)?;
        scan_segment(copies, id, start, &mut scan, batch_needles, on_batch)?;
    }
    Ok(scan)
}

/// One segment's file in each lane that has it, each read forward from where the
/// last needle taken from it ended.
struct LaneCopies {
    copies: Vec<LaneCopy>,
}

struct LaneCopy {
    path: PathBuf,
    reader: BufReader<File>,
    len: u64,
    /// Where `reader` is.
    at: u64,
    /// Reads of this copy the device refused (logged once: a dead disk fails every
    /// block, and a 1 GiB segment has 262,144 of them).
    unreadable: std::cell::Cell<u64>,
}

impl LaneCopies {
    fn open(store_root: &Path, lanes: u8, id: SegmentId) -> Result<LaneCopies, ShardError> {
        let mut copies = Vec::new();
        for lane in (0..lanes).map(LaneIndex) {
            let path = lane_segment_path(store_root, lane, id);
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ShardError::io("open segment", &path)(e)),
            };
            let len = file
                .metadata()
                .map_err(ShardError::io("stat segment", &path))?
                .len();
            let reader = BufReader::with_capacity(1 << 20, file);
            copies.push(LaneCopy {
                path,
                reader,
                len,
                at: 0,
                unreadable: std::cell::Cell::new(0),
            });
        }
        Ok(LaneCopies { copies })
    }

    /// The longest copy's length: where a scan is done.
    fn len(&self) -> u64 {
        self.copies.iter().map(|c| c.len).max().unwrap_or(0)
    }

    /// The whole, checked needle at `at` from the first lane that has one. A lane whose
    /// read fails (the device's error: a bad sector, a checksumming filesystem's refusal)
    /// has none there, as a lane whose bytes rotted: the scan passes over what no lane
    /// can give (logged, as rot is). One such error refused the node's start before.
    fn needle_at(
        &mut self,
        id: SegmentId,
        at: u64,
    ) -> Result<Option<(FoundNeedle, u64)>, ShardError> {
        for copy in &mut self.copies {
            match copy.needle_at(id, at) {
                Ok(Some(found)) => return Ok(Some(found)),
                Ok(None) => {}
                Err(e) => copy.unreadable(at, &e),
            }
        }
        Ok(None)
    }

    /// The first whole, checked needle any lane holds past `bad` (where none does), and
    /// where it starts. Candidates are the aligned offsets where a lane has the needle
    /// magic; each is read and checked like any needle, so a body that happens to hold
    /// the magic costs one failed check.
    fn next_whole_needle(
        &mut self,
        id: SegmentId,
        bad: u64,
    ) -> Result<Option<(u64, FoundNeedle, u64)>, ShardError> {
        let file_len = self.len();
        let mut window = vec![0u8; RESYNC_WINDOW_BYTES];
        let mut start = (bad + 1).next_multiple_of(NEEDLE_ALIGN_BYTES);
        while start < file_len {
            let mut candidates = std::collections::BTreeSet::new();
            for copy in &self.copies {
                let read = copy.read_at(&mut window, start);
                candidates.extend(
                    window[..read]
                        .chunks_exact(NEEDLE_ALIGN_BYTES as usize)
                        .enumerate()
                        .filter(|(_, word)| word.starts_with(NEEDLE_MAGIC))
                        .map(|(i, _)| start + i as u64 * NEEDLE_ALIGN_BYTES),
                );
            }
            for at in candidates {
                if let Some((found, next)) = self.needle_at(id, at)? {
                    return Ok(Some((at, found, next)));
                }
            }
            start += RESYNC_WINDOW_BYTES as u64;
        }
        Ok(None)
    }

    /// The address a head at `at` names, from the first lane where it reads as a head.
    fn claimed_address(&self, at: u64) -> Result<Option<Address>, ShardError> {
        let mut head = [0u8; NEEDLE_HEAD_BYTES_MIN as usize];
        for copy in &self.copies {
            if copy.read_at(&mut head, at) == head.len() && head.starts_with(NEEDLE_MAGIC) {
                let addr: [u8; 32] = head[8..40].try_into().expect("32 bytes");
                return Ok(Some(Address::from_bytes(addr)));
            }
        }
        Ok(None)
    }
}

impl LaneCopy {
    /// Up to `buf.len()` bytes at `at` (fewer at the end of the file), leaving the
    /// scan's reader where it is. A block the device cannot read is zeros here (logged):
    /// no needle is found in it, and the blocks after it are read on.
    fn read_at(&self, buf: &mut [u8], at: u64) -> usize {
        let file = self.reader.get_ref();
        let mut read = 0;
        while read < buf.len() {
            let offset = at + read as u64;
            match file.read_at(&mut buf[read..], offset) {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.unreadable(offset, &e);
                    let block_end = (offset + 1).next_multiple_of(UNREADABLE_BLOCK_BYTES);
                    let skip = ((block_end - offset) as usize).min(buf.len() - read);
                    buf[read..read + skip].fill(0);
                    read += skip;
                }
            }
        }
        read.min(self.len.saturating_sub(at) as usize)
    }

    /// Counts a read the device refused; the first is logged.
    fn unreadable(&self, at: u64, e: &std::io::Error) {
        let before = self.unreadable.replace(self.unreadable.get() + 1);
        if before == 0 {
            tracing::error!(path = %self.path.display(), at, error = %e, "a segment's bytes cannot be read: passed over, as rot is (further failures of this file not logged)");
        }
    }

    fn needle_at(&mut self, id: SegmentId, at: u64) -> std::io::Result<Option<(FoundNeedle, u64)>> {
        if self.at != at {
            self.reader.seek(SeekFrom::Start(at))?;
            self.at = at;
        }
        let read = read_needle(&mut self.reader, id, at, self.len);
        // Where the reader is after a failed or partial read is unknown.
        self.at = match &read {
            Ok(Some((_, next))) => *next,
            _ => u64::MAX,
        };
        read
    }
}

/// What a read that fails is taken to have lost: the block it falls in (the page
/// size, and every common filesystem's block).
const UNREADABLE_BLOCK_BYTES: u64 = 4096;

fn scan_segment(
    mut copies: LaneCopies,
    id: SegmentId,
    start: ByteOffset,
    scan: &mut Scan,
    batch_needles: usize,
    on_batch: &mut OnBatch<'_>,
) -> Result<(), ShardError> {
    let file_len = copies.len();
    let mut at = start.0;
    scan.end = Checkpoint {
        segment: id,
        end: start,
    };
    while at < file_len {
        let (found, next) = match copies.needle_at(id, at)? {
            Some(found) => found,
            None => match copies.next_whole_needle(id, at)? {
                Some((whole_at, found, next)) => {
                    scan.skipped.push(Skipped {
                        segment: id,
                        at: ByteOffset(at),
                        bytes: whole_at - at,
                        claimed: copies.claimed_address(at)?,
                    });
                    (found, next)
                }
                None => {
                    scan.torn.push((id, ByteOffset(at)));
                    return Ok(());
                }
            },
        };
        at = next;
        scan.end.end = ByteOffset(at);
        scan.needles.push(found);
        if scan.needles.len() >= batch_needles {
            on_batch(std::mem::take(&mut scan.needles), scan.end)?;
        }
    }
    Ok(())
}

/// The needle at `at`, and where the next one starts; `None` when the bytes there are
/// not a whole needle whose body matches its address. Lengths are checked against
/// `file_len` before reading, so a read error is the device's, not a short file.
fn read_needle(
    reader: &mut impl Read,
    segment: SegmentId,
    at: u64,
    file_len: u64,
) -> std::io::Result<Option<(FoundNeedle, u64)>> {
    let mut head = [0u8; NEEDLE_HEAD_BYTES_MIN as usize];
    if at + NEEDLE_HEAD_BYTES_MIN > file_len {
        return Ok(None);
    }
    reader.read_exact(&mut head)?;
    let (magic, rest) = head.split_at(4);
    let (body_len, rest) = rest.split_at(4);
    let (addr, type_len) = rest.split_at(32);
    let body_len = u64::from(u32::from_be_bytes(body_len.try_into().expect("4 bytes")));
    let type_len = u64::from(type_len[0]);
    let needle_bytes =
        (NEEDLE_HEAD_BYTES_MIN + type_len + body_len).next_multiple_of(NEEDLE_ALIGN_BYTES);
    if magic != NEEDLE_MAGIC || body_len > PACKED_OBJECT_BYTES_MAX || at + needle_bytes > file_len {
        return Ok(None);
    }
    let mut rest = vec![0u8; (needle_bytes - NEEDLE_HEAD_BYTES_MIN) as usize];
    reader.read_exact(&mut rest)?;
    let (content_type, body) = rest.split_at(type_len as usize);
    let body = &body[..body_len as usize];
    let tree = ChunkTree::of(body);
    let Ok(content_type) = String::from_utf8(content_type.to_vec()) else {
        return Ok(None);
    };
    if tree.root().as_bytes() != addr {
        return Ok(None);
    }
    let at_body = NeedleAt {
        segment,
        body: ByteOffset(at + NEEDLE_HEAD_BYTES_MIN + type_len),
    };
    let found = FoundNeedle {
        tree,
        content_type,
        at: at_body,
    };
    Ok(Some((found, at + needle_bytes)))
}

/// The needles back to back, and where each body starts in them.
fn encode_needles(needles: &[Needle<'_>]) -> (Vec<u8>, Vec<u64>) {
    let total: u64 = needles.iter().map(Needle::stored_bytes).sum();
    let mut out = Vec::with_capacity(total as usize);
    let mut bodies = Vec::with_capacity(needles.len());
    for needle in needles {
        debug_assert!(needle.body.len() as u64 <= PACKED_OBJECT_BYTES_MAX);
        let content_type = needle.content_type.as_bytes();
        debug_assert!(content_type.len() <= usize::from(u8::MAX));
        out.extend_from_slice(NEEDLE_MAGIC);
        out.extend_from_slice(&(needle.body.len() as u32).to_be_bytes());
        out.extend_from_slice(needle.addr.as_bytes());
        out.push(content_type.len() as u8);
        out.extend_from_slice(content_type);
        bodies.push(out.len() as u64);
        out.extend_from_slice(needle.body);
        out.resize(out.len().next_multiple_of(NEEDLE_ALIGN_BYTES as usize), 0);
    }
    debug_assert_eq!(out.len() as u64, total);
    (out, bodies)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("ron-segment-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("segments")).unwrap();
        root
    }

    /// Only files named by 8 hex digits are a lane's segments: a dir named like one was
    /// read as a segment and refused every start (EISDIR).
    #[test]
    fn a_dir_named_like_a_segment_is_passed_over() {
        let root = temp_store("dir-named-like-a-segment");
        create_lane_dirs(&root, 1).unwrap();
        let lane = lane_dir(&root, LaneIndex(0));
        std::fs::create_dir_all(lane.join("0000000f")).unwrap();
        std::fs::write(lane.join("00000001"), b"").unwrap();
        std::fs::write(lane.join("00000001.bak"), b"").unwrap();
        let ids = lane_segment_ids(&root, LaneIndex(0)).unwrap();
        assert_eq!(ids, vec![SegmentId(1)]);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_needle_of_a_rotted_length_counts_saturated_not_wrapped() {
        assert_eq!(needle_bytes(0, 1) % NEEDLE_ALIGN_BYTES, 0);
        assert_eq!(needle_bytes(255, u64::MAX), u64::MAX);
        assert_eq!(needle_bytes(u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn needles_hold_their_bodies_where_the_log_says() {
        let root = temp_store("bodies");
        let bodies: Vec<Vec<u8>> = [0usize, 1, 7, 8, 4096, 65536]
            .iter()
            .map(|&len| (0..len).map(|i| (i * 7 + len) as u8).collect())
            .collect();
        let types = ["", "text/plain", "application/octet-stream"];
        let needles: Vec<Needle<'_>> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| Needle {
                addr: Address::of(b),
                content_type: types[i % types.len()],
                body: b,
            })
            .collect();
        let mut log = SegmentLog::open(&root, 1).unwrap();
        let first = log.append_durably(&needles[..2]).unwrap().places;
        let rest = log.append_durably(&needles[2..]).unwrap().places;
        let file = std::fs::read(segment_path(&root, SegmentId(0))).unwrap();
        let mut previous_end = 0;
        for (at, needle) in first.iter().chain(&rest).zip(&needles) {
            assert_eq!(at.segment, SegmentId(0));
            let (start, ty) = (at.body.0 as usize, needle.content_type.as_bytes());
            assert_eq!(&file[start..start + needle.body.len()], needle.body);
            let head_start = start - NEEDLE_HEAD_BYTES_MIN as usize - ty.len();
            assert_eq!(head_start, previous_end, "needles back to back");
            assert_eq!(head_start % NEEDLE_ALIGN_BYTES as usize, 0);
            let head = &file[head_start..start];
            assert_eq!(&head[..4], NEEDLE_MAGIC);
            let body_len = u32::from_be_bytes(head[4..8].try_into().unwrap());
            assert_eq!(body_len as usize, needle.body.len());
            assert_eq!(&head[8..40], needle.addr.as_bytes());
            assert_eq!((usize::from(head[40]), &head[41..]), (ty.len(), ty));
            previous_end = head_start + needle.stored_bytes() as usize;
        }
        assert_eq!(previous_end, file.len());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_lanes_past_the_first_are_written_by_the_same_threads_batch_after_batch() {
        let root = temp_store("lane-writers");
        create_lane_dirs(&root, 3).unwrap();
        let mut log = SegmentLog::open(&root, 3).unwrap();
        let writers = |log: &SegmentLog| -> Vec<std::thread::ThreadId> {
            let threads = log.lane_writers.iter().filter_map(|w| w.thread.as_ref());
            threads.map(|t| t.thread().id()).collect()
        };
        let bodies: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 500 + usize::from(i)]).collect();
        let mut ends = Vec::new();
        for body in &bodies {
            let needle = Needle {
                addr: Address::of(body),
                content_type: "a/b",
                body,
            };
            ends.push(log.append_durably(&[needle]).unwrap().end);
            if ends.len() == 1 {
                assert_eq!(writers(&log).len(), 2, "one writer per lane past the first");
            }
        }
        let first = writers(&log);
        assert_eq!(first.len(), 2);
        assert_ne!(first[0], first[1]);
        assert!(ends.windows(2).all(|w| w[0].end < w[1].end));
        // One writer stopped (as after a panic): the next append starts them again.
        log.lane_writers[1].batches = None;
        while !log.lane_writers[1].stopped() {
            std::thread::yield_now();
        }
        let needle = Needle {
            addr: Address::of(b"after"),
            content_type: "a/b",
            body: b"after",
        };
        log.append_durably(&[needle]).unwrap();
        let again = writers(&log);
        assert_eq!(again.len(), 2);
        assert!(again.iter().all(|t| !first.contains(t)), "started again");
        let lane = |l| std::fs::read(lane_segment_path(&root, LaneIndex(l), SegmentId(0)));
        let lane0 = lane(0).unwrap();
        assert_eq!(lane(1).unwrap(), lane0);
        assert_eq!(lane(2).unwrap(), lane0);
        assert_eq!(
            scan_past(&root, Checkpoint::START).unwrap().needles.len(),
            41
        );
        drop(log);
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Each start records the lanes its segments get, once per change; a segment
    /// older than the history has every lane on disk; a broken history refuses the start.
    #[test]
    fn the_lane_history_says_which_lanes_each_segment_was_written_to() {
        let root = temp_store("lane-history");
        create_lane_dirs(&root, 3).unwrap();
        std::fs::write(segment_path(&root, SegmentId(0)), b"").unwrap();
        let first = LaneHistory::open(&root, 3).unwrap();
        assert_eq!(
            first.lanes_of(SegmentId(0), 3),
            3,
            "before the history: on disk"
        );
        assert_eq!(first.lanes_of(SegmentId(1), 3), 3);
        std::fs::write(segment_path(&root, SegmentId(1)), b"").unwrap();
        assert_eq!(
            LaneHistory::open(&root, 3).unwrap(),
            first,
            "unchanged: no line"
        );
        let lowered = LaneHistory::open(&root, 1).unwrap();
        assert_eq!(lowered.lanes_of(SegmentId(1), 3), 3);
        assert_eq!(lowered.lanes_of(SegmentId(2), 3), 1);
        assert_eq!(lowered.lanes_of(SegmentId(9), 3), 1);
        let text = std::fs::read_to_string(root.join(LANE_HISTORY_FILE)).unwrap();
        assert_eq!(text, "00000001 3\n00000002 1\n");
        std::fs::write(root.join(LANE_HISTORY_FILE), "00000002 1\n00000001 3\n").unwrap();
        let refused = LaneHistory::open(&root, 1).unwrap_err().to_string();
        assert!(refused.contains("segment-lanes"), "{refused}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn every_lane_holds_the_same_needles_and_a_scan_takes_a_bad_one_from_another_lane() {
        let root = temp_store("lanes");
        let bodies: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 1000 + usize::from(i)]).collect();
        let needles: Vec<Needle<'_>> = bodies
            .iter()
            .map(|b| Needle {
                addr: Address::of(b),
                content_type: "a/b",
                body: b,
            })
            .collect();
        create_lane_dirs(&root, 3).unwrap();
        let mut log = SegmentLog::open(&root, 3).unwrap();
        let places = log.append_durably(&needles[..3]).unwrap().places;
        log.append_durably(&needles[3..]).unwrap();
        assert_eq!(lanes_on_disk(&root), 3);
        let lane = |l| lane_segment_path(&root, LaneIndex(l), SegmentId(0));
        let lane0 = std::fs::read(lane(0)).unwrap();
        assert_eq!(std::fs::read(lane(1)).unwrap(), lane0);
        assert_eq!(std::fs::read(lane(2)).unwrap(), lane0);
        let whole = scan_past(&root, Checkpoint::START).unwrap();
        assert_eq!((whole.needles.len(), whole.torn.len()), (6, 0));

        // Needle 1 rotten in lane 0 and in lane 1: the scan takes it from lane 2 and
        // goes on in lane 0.
        let rot = |l, at: u64| {
            let mut bytes = std::fs::read(lane(l)).unwrap();
            bytes[at as usize] ^= 1;
            std::fs::write(lane(l), bytes).unwrap();
        };
        rot(0, places[1].body.0 + 3);
        rot(1, places[1].body.0 + 9);
        let scan = scan_past(&root, Checkpoint::START).unwrap();
        assert_eq!(scan.torn, vec![]);
        assert_eq!(scan.end, whole.end);
        let found: Vec<_> = scan.needles.iter().map(|n| (n.tree.root(), n.at)).collect();
        let expected: Vec<_> = whole
            .needles
            .iter()
            .map(|n| (n.tree.root(), n.at))
            .collect();
        assert_eq!(found, expected);
        // Lane 0's file gone, and the needle rotten in lane 2 too: no lane holds it, so
        // it is passed over and the needles after it still count.
        std::fs::remove_file(lane(0)).unwrap();
        rot(2, places[1].body.0 + 1);
        let scan = scan_past(&root, Checkpoint::START).unwrap();
        let head_1 = places[1].body.0 - NEEDLE_HEAD_BYTES_MIN - 3;
        let head_2 = places[2].body.0 - NEEDLE_HEAD_BYTES_MIN - 3;
        assert_eq!(scan.torn, vec![]);
        assert_eq!(
            scan.skipped,
            vec![Skipped {
                segment: SegmentId(0),
                at: ByteOffset(head_1),
                bytes: head_2 - head_1,
                claimed: Some(needles[1].addr),
            }]
        );
        let found: Vec<_> = scan.needles.iter().map(|n| n.tree.root()).collect();
        let expected: Vec<_> = [0, 2, 3, 4, 5].map(|i| needles[i].addr).to_vec();
        assert_eq!(found, expected);
        assert_eq!(scan.end, whole.end);
        // A reopened log starts past the segments of every lane.
        let again = SegmentLog::open(&root, 3)
            .unwrap()
            .append_durably(&needles[..1])
            .unwrap();
        assert_eq!(again.end.segment, SegmentId(1));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_needle_encoded_alone_is_the_needle_the_log_wrote() {
        let root = temp_store("encode-one");
        let body = vec![9u8; 777];
        let needle = Needle {
            addr: Address::of(&body),
            content_type: "text/plain",
            body: &body,
        };
        let mut log = SegmentLog::open(&root, 1).unwrap();
        let at = log.append_durably(&[needle]).unwrap().places[0];
        let (bytes, body_at) = encode_needle(&needle);
        assert_eq!(body_at, at.body.0);
        assert_eq!(
            std::fs::read(segment_path(&root, SegmentId(0))).unwrap(),
            bytes
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_reopened_log_starts_a_new_segment_past_the_last() {
        let root = temp_store("reopen");
        let body = [5u8; 100];
        let needle = [Needle {
            addr: Address::of(&body),
            content_type: "t/t",
            body: &body,
        }];
        SegmentLog::open(&root, 1)
            .unwrap()
            .append_durably(&needle)
            .unwrap();
        let again = SegmentLog::open(&root, 1)
            .unwrap()
            .append_durably(&needle)
            .unwrap()
            .places;
        assert_eq!(again[0].segment, SegmentId(1));
        assert_eq!(again[0].body, ByteOffset(NEEDLE_HEAD_BYTES_MIN + 3));
        // A file that is not a segment (a backup copy, an editor's) is passed over:
        // refused, it failed every start and every packed upload.
        std::fs::write(root.join("segments").join("00000001.bak"), b"").unwrap();
        let after_junk = SegmentLog::open(&root, 1)
            .unwrap()
            .append_durably(&needle)
            .unwrap()
            .places;
        assert_eq!(after_junk[0].segment, SegmentId(2));
        assert_eq!(segment_ids(&root).unwrap(), [0, 1, 2].map(SegmentId));
        std::fs::remove_dir_all(&root).unwrap();
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(64))]
        /// Whatever bytes rot in a segment, a scan indexes only needles the log wrote
        /// where it wrote them, and every needle the rot did not touch.
        #[test]
        fn rot_costs_only_the_needles_it_touched(
            sizes in proptest::collection::vec(0usize..3_000, 1..24),
            flips in proptest::collection::vec((proptest::prelude::any::<u64>(), 0u8..8), 0..6),
        ) {
            let root = temp_store(&format!("rot-{}", sizes.len() * 100 + flips.len()));
            let bodies: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, n)| (0..*n).map(|j| (i * 31 + j * 7) as u8 | 1).collect())
                .collect();
            let needles: Vec<Needle<'_>> = bodies
                .iter()
                .map(|b| Needle { addr: Address::of(b), content_type: "x/y", body: b })
                .collect();
            let mut log = SegmentLog::open(&root, 1).unwrap();
            let places = log.append_durably(&needles).unwrap().places;
            let path = segment_path(&root, places[0].segment);
            let mut bytes = std::fs::read(&path).unwrap();
            let len = bytes.len() as u64;
            let head_bytes = NEEDLE_HEAD_BYTES_MIN + 3;
            let spans: Vec<(u64, u64)> = needles
                .iter()
                .zip(&places)
                .map(|(n, at)| (at.body.0 - head_bytes, at.body.0 - head_bytes + n.stored_bytes()))
                .collect();
            let mut touched = vec![false; needles.len()];
            for (at, bit) in flips {
                let at = at % len;
                bytes[at as usize] ^= 1 << bit;
                for (i, (start, end)) in spans.iter().enumerate() {
                    touched[i] |= (*start..*end).contains(&at);
                }
            }
            std::fs::write(&path, &bytes).unwrap();
            let scan = scan_past(&root, Checkpoint::START).unwrap();
            for found in &scan.needles {
                let i = needles.iter().position(|n| n.addr == found.tree.root());
                proptest::prop_assert!(i.is_some_and(|i| places[i] == found.at));
            }
            for (i, needle) in needles.iter().enumerate().filter(|(i, _)| !touched[*i]) {
                let found = scan.needles.iter().any(|f| f.tree.root() == needle.addr);
                proptest::prop_assert!(found, "needle {} untouched, not found", i);
            }
            std::fs::remove_dir_all(&root).unwrap();
        }
    }
}
