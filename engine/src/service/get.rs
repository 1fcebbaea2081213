//! Reads: which bytes a request asks for ([`Span`]) and the verified groups that carry
//! them ([`GroupStream`]).

use std::collections::VecDeque;
use std::rc::Rc;

use ron_codec::http::range::{RangeResolution, RangeSet};
use ron_codec::tree::{GroupIndex, GROUP_LEN_BYTES};
use ron_codec::Address;
use ron_link::counters::StorageCounters;
use ron_link::policy::Tenant;
use ron_shards::shard::READ_AHEAD_BYTES_MAX;
use ron_shards::{GroupBytes, ObjectMeta, ReadAheadPermit, Shard, ShardError, CACHE_WINDOW_GROUPS};

use super::per_client::{ClientHold, PerClient};
use crate::fetch::{Flight, GroupAt};
use crate::limits::{VERIFY_BEFORE_HEAD_BYTES_MAX, VERIFY_BEFORE_HEAD_GROUPS_MAX};
use crate::refusal::Refusal;

/// The bytes `[first, first + len)` of an object that a GET sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub first: u64,
    pub len: u64,
    /// A range was asked for and honoured (206); otherwise the whole object (200).
    pub partial: bool,
    /// The object's length.
    pub total: u64,
}

impl Span {
    /// The one range resolver: no range, or an ignored one, is the whole object; several
    /// ranges are served as the whole object too (docs/HTTP-API.md); a single range is
    /// clamped to the object; no range overlapping the object is 416.
    pub fn resolve(range: Option<&RangeSet>, total: u64) -> Result<Span, Refusal> {
        let whole = Span {
            first: 0,
            len: total,
            partial: false,
            total,
        };
        let Some(range) = range else {
            return Ok(whole);
        };
        match range.resolve(total) {
            RangeResolution::Unsatisfiable => Err(Refusal::RangeNotSatisfiable { total }),
            RangeResolution::Whole => Ok(whole),
            RangeResolution::Partial(ranges) if ranges.len() > 1 => Ok(whole),
            RangeResolution::Partial(ranges) => Ok(ranges.first().map_or(whole, |r| Span {
                first: r.first,
                len: r.len(),
                partial: true,
                total,
            })),
        }
    }

    /// 206 for an honoured range, else 200.
    pub fn status(&self) -> u16 {
        if self.partial {
            206
        } else {
            200
        }
    }

    /// The last byte's offset (the span must not be empty).
    pub fn last(&self) -> u64 {
        self.first + self.len - 1
    }

    /// The first and last group the span covers; `None` when it is empty.
    pub fn groups(&self) -> Option<(GroupIndex, GroupIndex)> {
        (self.len > 0).then(|| {
            (
                GroupIndex::containing(self.first),
                GroupIndex::containing(self.last()),
            )
        })
    }

    /// The part of group `group`'s bytes that falls inside the span, and its offset.
    pub fn slice(&self, group: GroupIndex, bytes: &GroupBytes) -> (u64, GroupBytes) {
        let start = group.start_offset();
        let from = self.first.saturating_sub(start) as usize;
        let to = ((self.first + self.len).saturating_sub(start) as usize).min(bytes.len());
        (start + from as u64, bytes.slice(from.min(to), to))
    }

    /// Whether every group of the span is fetched and verified before any head.
    fn verified_before_head(&self, groups: u64) -> bool {
        self.len <= VERIFY_BEFORE_HEAD_BYTES_MAX && groups <= VERIFY_BEFORE_HEAD_GROUPS_MAX as u64
    }
}

/// One whole group, verified against the object's chunk tree.
#[derive(Debug, Clone)]
pub struct VerifiedGroup {
    pub index: GroupIndex,
    pub bytes: GroupBytes,
}

/// Groups one read-ahead brings in with one disk read (512 KiB: large reads are what
/// this kind of disk needs to reach its rate; see docs/design/zero-copy-sends.md), at
/// most to the end of the cache's window, so that a stream read cold leaves each window
/// end to end (docs/design/cache.md).
const READ_AHEAD_BATCH_GROUPS: u64 = CACHE_WINDOW_GROUPS;

/// Read-ahead batches in flight per stream (2 MiB): with two, the device here sat idle
/// a quarter of a cold stream's time; with four, a tenth (docs/design/zero-copy-sends.md).
const READ_AHEAD_BATCHES: usize = 4;

/// A read-ahead batch in flight: the groups it covers, its task, and its share of the
/// shard's read-ahead budget (held until the stream has handed out its groups).
#[derive(Debug)]
struct Batch {
    end: u64,
    task: glommio::Task<Result<Vec<GroupBytes>, ShardError>>,
    reserved: Reserved,
}

/// Most of a shard's read-ahead budget one client's streams hold together (a quarter):
/// read-ahead is held until the stream has sent what was read, so streams parked on a
/// slow reader keep it — one client's 128 HTTP/2 streams (or four OAP/1 connections of
/// 32 GETs) left on closed windows held all 256 MiB, and every other client's cold
/// reads went one group at a time for as long as the send deadline allowed.
pub const READ_AHEAD_CLIENT_BYTES_MAX: u64 = READ_AHEAD_BYTES_MAX / 4;

/// One batch's read-ahead: the shard's budget and, for a stream a client asked for, that
/// client's share of it.
#[derive(Debug)]
struct Reserved {
    _permit: ReadAheadPermit,
    _share: Option<ClientHold>,
}

/// Who a stream reads ahead for: the client its request is charged to, and what each
/// client's streams hold of the shard's read-ahead budget.
#[derive(Debug, Clone)]
pub struct ReadAheadFor {
    pub client: Tenant,
    pub shares: Rc<PerClient>,
}

/// The verified groups of a span, in order: of a stored object, or of one being read
/// through (its groups as they arrive, then the store's).
#[derive(Debug)]
pub enum GroupStream {
    Stored(StoredStream),
    Fetching(FetchStream),
}

impl GroupStream {
    pub fn span(&self) -> Span {
        match self {
            GroupStream::Stored(s) => s.span,
            GroupStream::Fetching(f) => f.span,
        }
    }

    pub fn addr(&self) -> Address {
        match self {
            GroupStream::Stored(s) => s.meta.addr(),
            GroupStream::Fetching(f) => f.flight.addr,
        }
    }

    /// The object's verified metadata, for a stored object (a proof needs its tree).
    pub fn meta(&self) -> Option<&Rc<ObjectMeta>> {
        match self {
            GroupStream::Stored(s) => Some(&s.meta),
            GroupStream::Fetching(_) => None,
        }
    }

    /// Whether every group has been handed out.
    pub fn is_finished(&self) -> bool {
        match self {
            GroupStream::Stored(s) => s.is_finished(),
            GroupStream::Fetching(f) => f.is_finished(),
        }
    }

    /// The next verified group, or `None` after the last. An error here comes after
    /// the caller may have sent part of the body: it must abort, not pad.
    pub async fn next(&mut self) -> Option<Result<VerifiedGroup, Refusal>> {
        match self {
            GroupStream::Stored(s) => s.next().await,
            // Boxed: a read-through's wait is not carried by every stored answer's.
            GroupStream::Fetching(f) => Box::pin(f.next()).await,
        }
    }

    pub fn next_ready(&mut self) -> Option<VerifiedGroup> {
        match self {
            GroupStream::Stored(s) => s.next_ready(),
            GroupStream::Fetching(f) if f.first.is_none() => f.stored.as_mut()?.next_ready(),
            GroupStream::Fetching(_) => None,
        }
    }
}

/// The groups of an object being read through: from the fetch's window of verified
/// groups while it runs, from the store once it is stored (a stream that fell behind
/// the window continues there).
#[derive(Debug)]
pub struct FetchStream {
    shard: Rc<Shard>,
    flight: Rc<Flight>,
    span: Span,
    next: u64,
    last: u64,
    /// The span's first group, verified before the caller writes any head.
    first: Option<VerifiedGroup>,
    stored: Option<StoredStream>,
    /// Who the store's stream reads ahead for, once the object is stored.
    reads_for: Option<ReadAheadFor>,
}

impl FetchStream {
    pub(super) async fn open(
        shard: Rc<Shard>,
        flight: Rc<Flight>,
        span: Span,
        reads_for: Option<ReadAheadFor>,
    ) -> Result<FetchStream, Refusal> {
        let (first, last) = span.groups().map_or((1, 0), |(f, l)| (f.0, l.0));
        let mut stream = FetchStream {
            shard,
            flight,
            span,
            next: first,
            last,
            first: None,
            stored: None,
            reads_for,
        };
        if let Some(group) = stream.next().await {
            stream.first = Some(group?);
        }
        Ok(stream)
    }

    fn is_finished(&self) -> bool {
        match &self.stored {
            _ if self.first.is_some() => false,
            Some(stored) => stored.is_finished(),
            None => self.next > self.last,
        }
    }

    async fn next(&mut self) -> Option<Result<VerifiedGroup, Refusal>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        if let Some(stored) = &mut self.stored {
            return stored.next().await;
        }
        if self.next > self.last {
            return None;
        }
        let index = GroupIndex(self.next);
        match self.flight.group(self.next).await {
            Ok(GroupAt::Here(bytes)) => {
                self.next += 1;
                let bytes = GroupBytes::in_memory(bytes);
                Some(Ok(VerifiedGroup { index, bytes }))
            }
            // Boxed: once per read-through stream, and no group's wait should carry it.
            Ok(GroupAt::Stored) => match Box::pin(self.open_stored()).await {
                Ok(()) => self.stored.as_mut()?.next().await,
                Err(refusal) => Some(Err(refusal)),
            },
            Err(refusal) => Some(Err(refusal)),
        }
    }

    /// Goes on from the store, at the next group, once the object is stored there.
    async fn open_stored(&mut self) -> Result<(), Refusal> {
        let meta = self.shard.meta(&self.flight.addr).await?;
        let from = GroupIndex(self.next).start_offset().max(self.span.first);
        let end = self.span.first + self.span.len;
        let rest = Span {
            first: from,
            len: end - from,
            ..self.span
        };
        let reads_for = self.reads_for.take();
        let stream = StoredStream::open(Rc::clone(&self.shard), meta, rest, reads_for).await?;
        self.stored = Some(stream);
        Ok(())
    }
}

/// The verified groups of a span of a stored object, in order. The first group (every
/// group of a small span) is verified when the stream opens — the groups of a small
/// span with one disk read. After that the stream reads ahead: batches of groups, each
/// one disk read, up to [`READ_AHEAD_BATCHES`] in flight, so the disk works while the
/// caller sends.
#[derive(Debug)]
pub struct StoredStream {
    shard: Rc<Shard>,
    meta: Rc<ObjectMeta>,
    span: Span,
    /// The next group to hand out, and the last one.
    next: u64,
    last: u64,
    /// Verified groups from `next` on, in order.
    ready: VecDeque<GroupBytes>,
    /// Read-ahead batches after `ready`, in order, and the first group none covers.
    batches: VecDeque<Batch>,
    /// Budget shares of batches read and not yet all handed out, with their ends.
    held: VecDeque<(u64, Reserved)>,
    /// The client the stream reads ahead for; `None`: charged to no client.
    reads_for: Option<ReadAheadFor>,
    requested_to: u64,
    /// Groups before this one are fetched one at a time: a batch covering them failed,
    /// and its good groups are still served before the bad one's error.
    singly_until: u64,
}

impl StoredStream {
    pub(super) async fn open(
        shard: Rc<Shard>,
        meta: Rc<ObjectMeta>,
        span: Span,
        reads_for: Option<ReadAheadFor>,
    ) -> Result<StoredStream, Refusal> {
        let (first, last) = span.groups().map_or((1, 0), |(f, l)| (f.0, l.0));
        let groups = (last + 1).saturating_sub(first);
        let early = if span.verified_before_head(groups) {
            groups
        } else {
            groups.min(1)
        };
        let mut ready = VecDeque::new();
        match early {
            0 => {}
            1 => ready.push_back(shard.group(&meta, GroupIndex(first)).await?),
            n => ready.extend(shard.groups(&meta, GroupIndex(first), n).await?),
        }
        Ok(StoredStream {
            shard,
            meta,
            span,
            next: first,
            last,
            ready,
            batches: VecDeque::new(),
            held: VecDeque::new(),
            reads_for,
            requested_to: first + early,
            singly_until: 0,
        })
    }

    fn is_finished(&self) -> bool {
        self.next > self.last
    }

    async fn next(&mut self) -> Option<Result<VerifiedGroup, Refusal>> {
        if self.next > self.last {
            return None;
        }
        let index = GroupIndex(self.next);
        let fetched = self.take_next().await;
        self.advance();
        if self.read_ahead() {
            submit_reads_now().await;
        }
        Some(
            fetched
                .map(|bytes| self.before_send(index, bytes))
                .map_err(Refusal::from),
        )
    }

    /// The next group if it is verified and at hand already (no wait), else `None`.
    fn next_ready(&mut self) -> Option<VerifiedGroup> {
        if self.next > self.last {
            return None;
        }
        let bytes = self.ready.pop_front()?;
        let index = GroupIndex(self.next);
        self.advance();
        self.read_ahead();
        Some(self.before_send(index, bytes))
    }

    /// The check paired with the one a group passed off the disk or the mesh (debug
    /// builds): what leaves the store for a socket still verifies against the tree.
    fn before_send(&self, index: GroupIndex, bytes: GroupBytes) -> VerifiedGroup {
        debug_assert!(
            self.meta.tree.verify_group(index, &bytes).is_ok(),
            "a group is sent only if it verifies against its object's chunk tree: group {} of {}",
            index.0,
            self.meta.addr()
        );
        VerifiedGroup { index, bytes }
    }

    async fn take_next(&mut self) -> Result<GroupBytes, ShardError> {
        if self.ready.is_empty() && self.next >= self.singly_until {
            self.read_ahead();
            if let Some(batch) = self.batches.pop_front() {
                match batch.task.await {
                    Ok(groups) => {
                        self.ready.extend(groups);
                        self.held.push_back((batch.end, batch.reserved));
                    }
                    Err(_) => self.singly_until = batch.end,
                }
            }
        }
        match self.ready.pop_front() {
            Some(group) => Ok(group),
            None => self.shard.group(&self.meta, GroupIndex(self.next)).await,
        }
    }

    /// Moves past the group just handed out, giving back the budget of batches whose
    /// groups are all handed out.
    fn advance(&mut self) {
        self.next += 1;
        // A group read singly (no budget for a batch) is one no batch needs to cover.
        self.requested_to = self.requested_to.max(self.next);
        while self.held.front().is_some_and(|(end, _)| *end <= self.next) {
            self.held.pop_front();
        }
    }

    /// Keeps the read-ahead window full: cached groups are taken at once (when nothing
    /// is in flight before them), the rest are read in batches by their own tasks.
    /// Returns whether it started a batch.
    fn read_ahead(&mut self) -> bool {
        let window = READ_AHEAD_BATCH_GROUPS as usize * READ_AHEAD_BATCHES;
        let mut started = false;
        while self.requested_to <= self.last {
            let first = GroupIndex(self.requested_to);
            let window_end = (self.requested_to + 1).next_multiple_of(READ_AHEAD_BATCH_GROUPS);
            let count = (window_end.min(self.last + 1)) - self.requested_to;
            // Cached groups join `ready` only right behind it: not while groups of a
            // failed batch are still to be fetched singly (`ready` is empty then, and
            // the cached ones would be handed out in their place).
            let ready_ends_at_first = self.batches.is_empty() && self.next >= self.singly_until;
            if ready_ends_at_first && self.ready.len() < window {
                debug_assert_eq!(self.next + self.ready.len() as u64, self.requested_to);
                if let Some(cached) = self.shard.cached_groups(&self.meta, first, count) {
                    self.ready.extend(cached);
                    self.requested_to += count;
                    continue;
                }
            }
            if self.batches.len() >= READ_AHEAD_BATCHES || self.ready.len() >= window {
                return started;
            }
            // Past the shard's budget, or its client's share of it, the stream reads one
            // group at a time (`take_next`).
            let Some(reserved) = self.reserve(count * GROUP_LEN_BYTES) else {
                return started;
            };
            self.requested_to += count;
            let (shard, meta) = (Rc::clone(&self.shard), Rc::clone(&self.meta));
            let task = glommio::spawn_local(async move { shard.groups(&meta, first, count).await });
            self.batches.push_back(Batch {
                end: first.0 + count,
                task,
                reserved,
            });
            started = true;
        }
        started
    }

    /// `bytes` of read-ahead: the client's share first, then the shard's budget.
    fn reserve(&self, bytes: u64) -> Option<Reserved> {
        let share = match &self.reads_for {
            None => None,
            Some(reads_for) => {
                match reads_for
                    .shares
                    .take(reads_for.client, bytes, READ_AHEAD_CLIENT_BYTES_MAX)
                {
                    Some(share) => Some(share),
                    None => {
                        StorageCounters::add(&self.shard.metrics().read_ahead_refused, 1);
                        return None;
                    }
                }
            }
        };
        let permit = self.shard.reserve_read_ahead(bytes)?;
        Some(Reserved {
            _permit: permit,
            _share: share,
        })
    }
}

/// Lets the batch tasks just spawned queue their disk reads, and the executor hand them
/// to the kernel, before the caller goes on sending what is at hand. glommio submits
/// queued I/O only when it polls its rings, between runs of its task queues; a sender
/// with groups at hand would otherwise keep the disk idle until it ran out of them.
/// A timer is what makes this task wait for that poll (a plain yield would run it again
/// first).
async fn submit_reads_now() {
    glommio::timer::sleep(std::time::Duration::from_micros(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use ron_codec::http::range::RangeSet;
    use ron_codec::tree::GROUP_LEN_BYTES;

    fn span(header: &str, total: u64) -> Result<Span, Refusal> {
        let set = RangeSet::parse(header.as_bytes());
        Span::resolve(set.as_ref(), total)
    }

    #[test]
    fn one_resolver_for_whole_objects_ranges_and_refusals() {
        let whole = span("", 10).unwrap();
        assert_eq!((whole.first, whole.len, whole.status()), (0, 10, 200));
        let r = span("bytes=2-4", 10).unwrap();
        assert_eq!((r.first, r.len, r.status(), r.last()), (2, 3, 206, 4));
        let clamped = span("bytes=2-400", 10).unwrap();
        assert_eq!((clamped.first, clamped.len), (2, 8));
        let several = span("bytes=0-1,4-5", 10).unwrap();
        assert_eq!((several.len, several.status()), (10, 200));
        let refused = span("bytes=10-12", 10).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "no requested range overlaps the object's 10 bytes"
        );
        assert_eq!(refused.status(), 416);
        assert!(span("bytes=0-0", 0).is_err(), "nothing to range over");
        assert_eq!(span("", 0).unwrap().groups(), None);
    }

    #[test]
    fn slices_cut_groups_to_the_span() {
        let group_bytes = GROUP_LEN_BYTES as usize;
        let bytes = GroupBytes::in_memory(bytes::Bytes::from(vec![7u8; group_bytes]));
        let s = span("bytes=65530-65545", 3 * GROUP_LEN_BYTES).unwrap();
        let (g0, g1) = s.groups().unwrap();
        assert_eq!((g0.0, g1.0), (0, 1));
        let (offset, first) = s.slice(g0, &bytes);
        assert_eq!((offset, first.len()), (65530, 6));
        let (offset, second) = s.slice(g1, &bytes);
        assert_eq!((offset, second.len()), (GROUP_LEN_BYTES, 10));
        assert!(s.verified_before_head(2));
        let big = span("", 3 * GROUP_LEN_BYTES).unwrap();
        assert!(!big.verified_before_head(3));
    }

    /// A read-ahead batch that fails (rot in one of its groups) while no later batch is
    /// in flight — the shard's budget left room for one — and the groups right after it
    /// are cached: the batch's good groups are fetched singly and served in order, the
    /// bad one ends the stream, and no cached group is handed out in their place.
    #[test]
    fn a_failed_batch_is_served_up_to_its_bad_group_before_any_cached_group_after_it() {
        use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};
        use ron_codec::ErrorCode;
        use ron_link::counters::StorageCounters;
        use ron_shards::layout::{self, Routing};
        use ron_shards::shard::READ_AHEAD_BYTES_MAX;
        use ron_shards::ShardConfig;
        use ron_shards::ShardIndex;
        use std::io::{Read, Seek, SeekFrom, Write};

        let group = GROUP_LEN_BYTES as usize;
        let data_dir =
            std::env::temp_dir().join(format!("ron-group-stream-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        let dir = data_dir.clone();
        let work = move || async move {
            let dirs = layout::DataDirs::one(&dir);
            let routing = Routing::new(layout::open_data_dirs(&dirs, 1, 0).unwrap().table, 1);
            layout::clean_tmp(&dir).unwrap();
            let config = ShardConfig {
                data_dirs: dirs,
                cache_bytes_max: 64 << 20,
                meta_bytes_max: 1 << 20,
                open_files_max: 16,
                index_bytes_max: 16 << 20,
                commit_batch_max: 64,
                // No parity: the rotten group must fail, not be rebuilt.
                ec: ron_shards::ec::EcParams::OFF,
                scrub_bytes_per_s: 0,
                dht: None,
                evictable_bytes_max: None,
                announce_filter: Default::default(),
            };
            let metrics = std::sync::Arc::new(StorageCounters::default());
            let shard = Shard::start(ShardIndex(0), routing.clone(), config, None, metrics)
                .await
                .unwrap();
            let data: Vec<u8> = (0..40 * group)
                .map(|i| ((i % 251) ^ (i / group)) as u8)
                .collect();
            let mut upload = shard.begin_upload(Some(data.len() as u64)).unwrap();
            upload.write(&data).await.unwrap();
            let staged = upload.finish(String::new()).await.unwrap();
            let addr = staged.meta.addr();
            shard.commit(staged).await.unwrap();
            let meta = shard.meta(&addr).await.unwrap();
            for g in 17..40 {
                shard.group(&meta, GroupIndex(g)).await.unwrap();
            }
            // Rot in group 12, on disk only: the batch of groups 9..=16 fails.
            let hex = addr.to_string()[3..].to_string();
            let path = layout::store_dir(&dir, routing.store_of(&addr))
                .join("objects")
                .join(&hex[..2])
                .join(&hex);
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap();
            let mut byte = [0u8];
            file.seek(SeekFrom::Start(12 * GROUP_LEN_BYTES + 5))
                .unwrap();
            file.read_exact(&mut byte).unwrap();
            file.seek(SeekFrom::Start(12 * GROUP_LEN_BYTES + 5))
                .unwrap();
            file.write_all(&[byte[0] ^ 1]).unwrap();
            drop(file);

            let batch_bytes = READ_AHEAD_BATCH_GROUPS * GROUP_LEN_BYTES;
            let _others = shard.reserve_read_ahead(READ_AHEAD_BYTES_MAX - batch_bytes);
            let span = Span::resolve(None, data.len() as u64).unwrap();
            let mut stream = StoredStream::open(Rc::clone(&shard), meta, span, None)
                .await
                .unwrap();
            for g in 0..12usize {
                let got = stream.next().await.unwrap().unwrap();
                assert_eq!(got.index, GroupIndex(g as u64));
                assert!(
                    got.bytes[..] == data[g * group..(g + 1) * group],
                    "group {g}"
                );
            }
            let rotten = stream.next().await.unwrap().unwrap_err();
            assert_eq!(rotten.code(), ErrorCode::StoredDigestMismatch, "{rotten}");
        };
        LocalExecutorBuilder::new(Placement::Unbound)
            .blocking_thread_pool_placement(PoolPlacement::Unbound(1))
            .spawn(work)
            .unwrap()
            .join()
            .unwrap();
        std::fs::remove_dir_all(&data_dir).unwrap();
    }
}
