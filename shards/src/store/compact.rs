//! Compaction of a store's segments at start-up (docs/design/storage.md, "Compaction"):
//! a segment at least half dead — the needles of packed copies removed or evicted since
//! it was written — has its live needles moved to a new segment and is deleted, in every
//! lane. Objects are immutable, so a needle is never rewritten in place: moving it is
//! appending it again, verified, and pointing its record at the copy.
//!
//! Order, each step durable before the next, so a crash anywhere loses nothing:
//! 1. The live needles are read back, 8 MiB at a time, each checked against its
//!    address in the first lane that holds it whole (one no lane holds whole keeps its
//!    segment: nothing of a rotten object is moved, and its segment is not deleted).
//! 2. They are appended to a new segment (`SegmentLog`: one write and one data sync per
//!    lane per batch), past every segment on disk.
//! 3. Every index replica points their records at the new needles, in one transaction
//!    per batch, with the checkpoint past them; a record no longer in a segment being
//!    compacted is left alone. Stats and retention (the evictable tables are keyed by
//!    address) do not change.
//! 4. Once every batch is in every replica, the old segments' files are unlinked in
//!    every lane and the lane dirs synced.
//!
//! A crash before 3 leaves needles past the checkpoint that the next replay finds
//! indexed already (dead space of the new segment); one during 3 leaves replicas
//! pointing at either copy, both whole; one during 4 leaves segments with nothing
//! live, deleted at the next start. Which segments are live is counted over every
//! replica, and every record in any replica that points into a segment is moved before
//! the segment goes.
//!
//! Only segments the checkpoint has passed (ids below its segment) are compacted: every
//! needle in them is indexed or was never acknowledged, and the checkpoint's segment
//! stays, so segment ids only grow. At start-up only, before the shard serves: nothing
//! reads a segment while it goes. A budget bounds the bytes moved per start.
//!
//! Which segments are dead is counted by a census, a walk of every record of every
//! replica: work that grows with the store, so it runs only once the packed needles
//! removed since the last one (counted by each eviction, in its transaction) reach a
//! quarter of the sealed segments' bytes or half a segment.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt;

use ron_codec::{Address, ChunkTree};

use super::index::{Index, DEAD_SINCE_CENSUS_KEY};
use super::Store;
use crate::error::ShardError;
use crate::ids::{LaneIndex, SegmentId};
use crate::limits::SEGMENT_BYTES_MAX;
use crate::record::{packed_needle_of, Location, ObjectMeta};
use crate::segment::{self, Checkpoint, Needle, NeedleAt, SegmentLog};

/// A segment is compacted once at least this share of it is dead, percent.
pub const DEAD_PERCENT_MIN: u64 = 50;
/// Live bytes moved per append (one write and one data sync per lane).
const MOVE_BATCH_BYTES_MAX: u64 = 8 << 20;

/// What one compaction did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Compaction {
    pub segments_removed: u64,
    pub needles_moved: u64,
    pub bytes_moved: u64,
    /// Bytes of segment files unlinked, lane 0 (the other lanes free as much each).
    pub bytes_freed: u64,
    /// Segments kept whole: a live needle in them verified in no lane, or a record
    /// pointing into them does not decode.
    pub kept_for_rot: Vec<SegmentId>,
    /// Segments kept whole: the disk had no room to move their live needles.
    pub kept_for_room: Vec<SegmentId>,
    /// Files of lanes past the first whose segment's lane 0 was gone and in which no
    /// record points: what a crash between two lanes' unlinks left.
    pub lane_orphans_removed: u64,
}

/// What points into the segments being compacted ([`Store::live_records_in`]).
struct LiveRecords {
    live: Vec<ObjectMeta>,
    kept: HashSet<SegmentId>,
    segments_of: HashMap<Address, Vec<SegmentId>>,
}

impl LiveRecords {
    /// Every segment a record of `meta`'s object points into, in any replica.
    fn segments_of<'a>(&'a self, meta: &ObjectMeta) -> impl Iterator<Item = SegmentId> + 'a {
        self.segments_of
            .get(&meta.addr())
            .into_iter()
            .flatten()
            .copied()
    }
}

/// One live needle to move: its object's record and the copy read back, verified.
struct Move<'a> {
    meta: &'a ObjectMeta,
    body: Vec<u8>,
}

impl Store {
    /// Compacts the segments at least [`DEAD_PERCENT_MIN`] % dead, most dead first,
    /// moving at most `budget_bytes` of live needles (taken from it). Blocking; at
    /// start-up, after the replay, before the store serves.
    pub fn compact_blocking(&self, budget_bytes: &mut u64) -> Result<Compaction, ShardError> {
        let root = self.segments_root().to_path_buf();
        let lanes = u64::from(self.segment_lanes);
        let has_room = |batch_bytes: u64| {
            crate::free_space::dir_space(&root)
                .is_none_or(|space| batch_bytes.saturating_mul(lanes) <= space.available_bytes)
        };
        self.compact(budget_bytes, &has_room)
    }

    /// [`Store::compact_blocking`], a batch of live needles moved only when `has_room`
    /// for its bytes in one lane.
    pub(super) fn compact(
        &self,
        budget_bytes: &mut u64,
        has_room: &dyn Fn(u64) -> bool,
    ) -> Result<Compaction, ShardError> {
        let mut done = Compaction::default();
        let checkpoint = self.checkpoint()?;
        done.lane_orphans_removed = self.unlink_lane_orphans(checkpoint)?;
        let sealed = self.sealed_segments(checkpoint)?;
        if !self.census_due(&sealed)? {
            return Ok(done);
        }
        let (victims, left_for_budget) = self.pick_victims(&sealed, budget_bytes)?;
        if victims.is_empty() {
            if !left_for_budget {
                self.census_taken()?;
            }
            return Ok(done);
        }
        let mut records = self.live_records_in(&victims)?;
        let mut rotten = std::mem::take(&mut records.kept);
        let live = &records.live;
        // Segments nothing live points into, in any replica, go first: freeing them
        // needs no room, and a full disk is when space matters most (a move's append
        // there fails, and this freed nothing, not even a segment wholly dead).
        let holding: HashSet<SegmentId> = records.segments_of.values().flatten().copied().collect();
        let mut empty: Vec<SegmentId> = victims
            .iter()
            .filter(|id| !holding.contains(id) && !rotten.contains(id))
            .copied()
            .collect();
        empty.sort_unstable();
        for &id in &empty {
            done.bytes_freed += self.unlink_segment(id)?;
            done.segments_removed += 1;
        }
        // Segments whose live needles the disk had no room to move: kept for a later start.
        let mut unmoved: HashSet<SegmentId> = HashSet::new();
        let mut log = None;
        for chunk in batches(live) {
            let chunk_bytes = chunk
                .iter()
                .map(|m| segment::needle_bytes(m.content_type.len() as u64, m.len()))
                .sum::<u64>();
            if !has_room(chunk_bytes) {
                unmoved.extend(chunk.iter().flat_map(|m| records.segments_of(m)));
                continue;
            }
            let mut batch = Vec::with_capacity(chunk.len());
            for meta in chunk {
                match self.read_needle_verified(meta)? {
                    Some(body) => batch.push(Move { meta, body }),
                    None => {
                        let segment = packed_at(meta).segment;
                        tracing::warn!(store = self.id.0, obj = %meta.addr(), %segment, "compaction: a live needle verifies in no lane; its segment is kept");
                        rotten.extend(records.segments_of(meta));
                    }
                }
            }
            if batch.is_empty() {
                continue;
            }
            let log = match &mut log {
                Some(log) => log,
                None => log.insert(SegmentLog::open(self.segments_root(), self.segment_lanes)?),
            };
            self.move_batch(log, &batch, &victims)?;
            done.needles_moved += batch.len() as u64;
            done.bytes_moved += batch.iter().map(|m| m.body.len() as u64).sum::<u64>();
        }
        let mut gone: Vec<SegmentId> = victims
            .iter()
            .filter(|id| !rotten.contains(id) && !unmoved.contains(id) && !empty.contains(id))
            .copied()
            .collect();
        gone.sort_unstable();
        for id in gone {
            done.bytes_freed += self.unlink_segment(id)?;
            done.segments_removed += 1;
        }
        done.kept_for_room = unmoved.into_iter().collect();
        done.kept_for_room.sort_unstable();
        done.kept_for_rot = rotten.into_iter().collect();
        done.kept_for_rot.sort_unstable();
        // Removals count from zero again only once nothing chosen was left behind: a
        // start whose budget or disk left segments half dead goes on at the next.
        if !left_for_budget && done.kept_for_room.is_empty() {
            self.census_taken()?;
        }
        Ok(done)
    }

    /// The sealed segments (ids below the checkpoint's) and their lengths (lane 0).
    fn sealed_segments(&self, checkpoint: Checkpoint) -> Result<Vec<(SegmentId, u64)>, ShardError> {
        let mut sealed = Vec::new();
        for id in segment::segment_ids(self.segments_root())? {
            if id >= checkpoint.segment {
                continue;
            }
            let path = self.segment_path(LaneIndex(0), id);
            let len = std::fs::metadata(&path)
                .map_err(ShardError::io("stat segment", &path))?
                .len();
            sealed.push((id, len));
        }
        Ok(sealed)
    }

    /// Whether the census — a walk of every record of every replica, which grows with
    /// the store — is worth its cost this start: once the packed needles removed since
    /// the last one reach [`census_after_dead_bytes`] of the sealed segments, or when no
    /// census has run yet (a store from before they were counted).
    fn census_due(&self, sealed: &[(SegmentId, u64)]) -> Result<bool, ShardError> {
        if sealed.is_empty() {
            return Ok(false);
        }
        let mut dead_since = Some(0u64);
        for replica in self.replicas.iter() {
            dead_since = match (dead_since, replica.dead_since_census()?) {
                (Some(most), Some(dead)) => Some(most.max(dead)),
                _ => None,
            };
        }
        let sealed_bytes = sealed.iter().map(|(_, len)| len).sum();
        Ok(dead_since.is_none_or(|dead| dead >= census_after_dead_bytes(sealed_bytes)))
    }

    /// A census ran (and what it chose was moved): removals count from zero again.
    fn census_taken(&self) -> Result<(), ShardError> {
        self.replicas
            .iter()
            .try_for_each(|r| r.put_stat(DEAD_SINCE_CENSUS_KEY, &0u64.to_be_bytes()))
    }

    /// Of the sealed segments, those at least [`DEAD_PERCENT_MIN`] % dead, most dead
    /// first, while their live bytes fit `budget_bytes` (taken); and whether any was left
    /// for want of budget.
    fn pick_victims(
        &self,
        sealed: &[(SegmentId, u64)],
        budget_bytes: &mut u64,
    ) -> Result<(HashSet<SegmentId>, bool), ShardError> {
        let mut live: HashMap<SegmentId, u64> = HashMap::new();
        for replica in self.replicas.iter() {
            for (id, bytes) in replica.live_needle_bytes()? {
                let most = live.entry(id).or_default();
                *most = (*most).max(bytes);
            }
        }
        let mut candidates = Vec::new();
        for &(id, len) in sealed {
            let live = live.get(&id).copied().unwrap_or(0).min(len);
            let dead = len - live;
            if len > 0 && dead * 100 >= DEAD_PERCENT_MIN * len {
                candidates.push((dead, live, id));
            }
        }
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        let mut victims = HashSet::new();
        let mut left_for_budget = false;
        for (_, live, id) in candidates {
            match live <= *budget_bytes {
                true => {
                    *budget_bytes -= live;
                    victims.insert(id);
                }
                false => left_for_budget = true,
            }
        }
        Ok((victims, left_for_budget))
    }

    /// Every object whose record, in any replica, puts it in one of `victims` (the
    /// first replica's record where several do); the victims with a record that does
    /// not decode, which are kept; and each such object's segments over every replica
    /// (after a crash between two replicas' commits, one may point at the old copy and
    /// one at the new: a segment goes only once no replica points into it).
    fn live_records_in(&self, victims: &HashSet<SegmentId>) -> Result<LiveRecords, ShardError> {
        let mut segments_of: HashMap<Address, Vec<SegmentId>> = HashMap::new();
        let (mut live, mut kept) = (Vec::new(), HashSet::new());
        for replica in self.replicas.iter() {
            for (addr, record, segment) in replica.packed_records_in(victims)? {
                let segments = segments_of.entry(addr).or_default();
                let seen = !segments.is_empty();
                segments.push(segment);
                if seen {
                    continue;
                }
                match ObjectMeta::decode(addr, &record) {
                    Ok(meta) => live.push(meta),
                    Err(e) => {
                        tracing::warn!(store = self.id.0, obj = %addr, %segment, "compaction: {e}; its segment is kept");
                        kept.insert(segment);
                    }
                }
            }
        }
        Ok(LiveRecords {
            live,
            kept,
            segments_of,
        })
    }

    /// The body of `meta`'s needle from the first lane where it reads back whole and
    /// hashes to its address; `None` if no lane does.
    fn read_needle_verified(&self, meta: &ObjectMeta) -> Result<Option<Vec<u8>>, ShardError> {
        let at = packed_at(meta);
        let mut body = vec![0u8; meta.len() as usize];
        for lane in (0..self.needle_lanes(meta)).map(LaneIndex) {
            let path = self.segment_path(lane, at.segment);
            let read =
                std::fs::File::open(&path).and_then(|f| f.read_exact_at(&mut body, at.body.0));
            match read {
                Ok(()) if ChunkTree::of(&body).root() == meta.addr() => return Ok(Some(body)),
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
                // The device's error (a bad sector, a checksumming filesystem's refusal):
                // this lane has no good copy, as one whose bytes rotted. It refused the
                // node's start before.
                Err(e) => {
                    tracing::error!(path = %path.display(), at = at.body.0, error = %e, "compaction: a live needle cannot be read");
                }
            }
        }
        Ok(None)
    }

    /// Appends `batch` to the new segment and points every replica's records at it.
    fn move_batch(
        &self,
        log: &mut SegmentLog,
        batch: &[Move<'_>],
        victims: &HashSet<SegmentId>,
    ) -> Result<(), ShardError> {
        let needles: Vec<Needle<'_>> = batch
            .iter()
            .map(|m| Needle {
                addr: m.meta.addr(),
                content_type: &m.meta.content_type,
                body: &m.body,
            })
            .collect();
        let appended = log.append_durably(&needles)?;
        let records: Vec<(Address, Vec<u8>)> = batch
            .iter()
            .zip(&appended.places)
            .map(|(m, &place)| {
                let moved = ObjectMeta {
                    location: Location::Packed(place),
                    ..m.meta.clone()
                };
                debug_assert_eq!(moved.len(), m.body.len() as u64);
                (moved.addr(), moved.encode())
            })
            .collect();
        for replica in self.replicas.iter() {
            replica.repoint_packed(&records, victims, appended.end)?;
        }
        Ok(())
    }

    /// Unlinks segment `id` in every lane and syncs the lane dirs; returns lane 0's
    /// length. Lane 0 goes last: a segment is found by its lane-0 file, so a crash part
    /// way leaves one the next start finds and removes again, never a file of another
    /// lane no start would look at.
    fn unlink_segment(&self, id: SegmentId) -> Result<u64, ShardError> {
        let mut freed = 0;
        for lane in (0..self.lanes_on_disk).rev().map(LaneIndex) {
            let path = self.segment_path(lane, id);
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ShardError::io("unlink segment", &path)(e)),
            }
            if lane.0 == 0 {
                freed = len;
            }
            crate::layout::sync_dir(&segment::lane_dir(self.segments_root(), lane))?;
        }
        Ok(freed)
    }
}

impl Store {
    /// Unlinks the sealed segments' files of lanes past the first whose lane-0 file is
    /// gone and in which no record of any replica points, and returns how many: lane 0
    /// was unlinked first before it went last, and a crash between two lanes' unlinks
    /// left the others where no start looked (up to 256 MiB each). A file some record
    /// points into is another lane's copy of a lost lane 0, kept for the reads and
    /// repairs that need it.
    fn unlink_lane_orphans(&self, checkpoint: Checkpoint) -> Result<u64, ShardError> {
        let root = self.segments_root();
        let mut candidates = HashSet::new();
        for lane in (1..self.lanes_on_disk).map(LaneIndex) {
            for id in segment::lane_segment_ids(root, lane)? {
                let lane0 = self.segment_path(LaneIndex(0), id);
                if id < checkpoint.segment && !lane0.exists() {
                    candidates.insert(id);
                }
            }
        }
        if candidates.is_empty() {
            return Ok(0);
        }
        let pointed: HashSet<SegmentId> = self
            .replicas
            .iter()
            .map(|replica| replica.packed_records_in(&candidates))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .map(|(_, _, segment)| segment)
            .collect();
        let mut removed = 0;
        for id in candidates.difference(&pointed) {
            for lane in (1..self.lanes_on_disk).map(LaneIndex) {
                let path = self.segment_path(lane, *id);
                match std::fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(ShardError::io("unlink segment", &path)(e)),
                }
                crate::layout::sync_dir(&segment::lane_dir(root, lane))?;
            }
        }
        Ok(removed)
    }
}

/// Where a packed object's needle is (only packed objects are moved).
fn packed_at(meta: &ObjectMeta) -> NeedleAt {
    match meta.location {
        Location::Packed(at) => at,
        Location::OwnFile => unreachable!("only packed records are read for compaction"),
    }
}

/// Packed needles removed since the last census before the next one runs: a quarter of
/// the sealed segments' bytes, at most half a segment (128 MiB). A start with fewer
/// removals skips the walk of every record; dead space waits at most that long.
fn census_after_dead_bytes(sealed_bytes: u64) -> u64 {
    (sealed_bytes / 4).clamp(1, SEGMENT_BYTES_MAX / 2)
}

/// `live` cut into batches of at most [`MOVE_BATCH_BYTES_MAX`] of bodies (at least one
/// object each): what is read, held and appended at once.
fn batches(live: &[ObjectMeta]) -> impl Iterator<Item = &[ObjectMeta]> {
    let mut rest = live;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let n = rest
            .iter()
            .take_while(|meta| {
                bytes += meta.len();
                bytes <= MOVE_BATCH_BYTES_MAX
            })
            .count()
            .max(1);
        let (batch, left) = rest.split_at(n);
        rest = left;
        Some(batch)
    })
}

impl Index {
    /// Bytes of needles this replica's records point at, per segment.
    fn live_needle_bytes(&self) -> Result<HashMap<SegmentId, u64>, ShardError> {
        let rtxn = self.env.read_txn().map_err(self.lmdb("read"))?;
        let mut live: HashMap<SegmentId, u64> = HashMap::new();
        for entry in self.db.iter(&rtxn).map_err(self.lmdb("iterate"))? {
            let (_, record) = entry.map_err(self.lmdb("iterate"))?;
            if let Some((at, bytes)) = packed_needle_of(record) {
                let live = live.entry(at.segment).or_default();
                *live = live.saturating_add(bytes);
            }
        }
        Ok(live)
    }

    /// This replica's records of objects packed in one of `segments`, and the segment.
    fn packed_records_in(
        &self,
        segments: &HashSet<SegmentId>,
    ) -> Result<Vec<(Address, Vec<u8>, SegmentId)>, ShardError> {
        let rtxn = self.env.read_txn().map_err(self.lmdb("read"))?;
        let mut found = Vec::new();
        for entry in self.db.iter(&rtxn).map_err(self.lmdb("iterate"))? {
            let (key, record) = entry.map_err(self.lmdb("iterate"))?;
            let Some((at, _)) = packed_needle_of(record) else {
                continue;
            };
            if let (true, Ok(addr)) = (segments.contains(&at.segment), <[u8; 32]>::try_from(key)) {
                found.push((Address::from_bytes(addr), record.to_vec(), at.segment));
            }
        }
        Ok(found)
    }

    /// Points each of `records` whose current record puts it in one of `from` at its new
    /// needle, and takes the checkpoint to `checkpoint` (when past it), in one
    /// transaction; stats unchanged, one commit counted.
    fn repoint_packed(
        &self,
        records: &[(Address, Vec<u8>)],
        from: &HashSet<SegmentId>,
        checkpoint: Checkpoint,
    ) -> Result<(), ShardError> {
        let mut wtxn = self.env.write_txn().map_err(self.lmdb("begin write"))?;
        for (addr, record) in records {
            let current = self
                .db
                .get(&wtxn, addr.as_bytes())
                .map_err(self.lmdb("get"))?;
            let inside = current
                .and_then(packed_needle_of)
                .is_some_and(|(at, _)| from.contains(&at.segment));
            if inside {
                self.db
                    .put(&mut wtxn, addr.as_bytes(), record)
                    .map_err(self.lmdb("put"))?;
            }
        }
        let stats = self.stats_in(&wtxn)?;
        self.put_stats_counting_commit(&mut wtxn, &stats)?;
        self.advance_checkpoint(&mut wtxn, checkpoint)?;
        wtxn.commit().map_err(self.lmdb("commit"))
    }
}
