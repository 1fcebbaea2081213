//! The verified-group cache, kept where the kernel can send it without a copy.
//!
//! Cached groups live in *arenas*: memfd files, allocated and mapped read-only on the
//! blocking pool (in 2 MiB folios where the kernel grants them, `memory.rs`), sealed
//! against shrinking, filled front to back with `pwrite` on the shard, and sealed
//! against writes once full. A group
//! is verified where it lies in its arena, so the bytes checked are the bytes sent: a
//! plain TCP connection sends them with `sendfile(2)` from the memfd ([`MemFileSpan`]:
//! the socket takes page references, no user→kernel copy); everything else (TLS, OAP/1
//! frames, the mesh) reads the same pages through the mapping as ordinary `Bytes`.
//!
//! ## Arenas are never rewritten
//! `sendfile` queues references to the arena's pages in the socket; the bytes are read
//! when the segment leaves, maybe long after the call returned. Rewriting a page still
//! queued would change bytes that were verified. So an arena is written once; eviction
//! drops a whole arena (its memfd closes, its pages live on until the last socket and the
//! last `Bytes` view let go) and a fresh memfd takes its place.
//!
//! ## Sizes and eviction
//! Arenas start at 1 MiB and double up to [`ARENA_BYTES_MAX`], so a node that caches
//! little holds little. The budget counts every arena, the one being filled and the spare
//! being prepared. Eviction takes the oldest arena (FIFO over arenas) with a second
//! chance: groups read since they were cached are copied into the arena being filled,
//! at most half of it, so a hot set survives a cold stream.
//!
//! ## Never waiting on the shard
//! The next arena (the spare) is prepared on the blocking pool while the current one
//! fills. If it is not ready when the current one is full, [`ArenaCache::place`] says so
//! and the caller keeps its group in ordinary memory for that request.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::ReadResult;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};

use crate::cache::{AddressMap, GroupKey};

mod memory;

pub use memory::huge_bytes_of_a_fresh_arena;
use memory::ArenaMemory;

/// The largest arena, bytes: big enough that creating one is rare, small enough that
/// evicting one drops a small share of a large cache.
pub const ARENA_BYTES_MAX: usize = 64 << 20;

/// The first arena, bytes (smaller when the whole budget is small).
const ARENA_BYTES_FIRST: usize = 1 << 20;

/// Arena offsets of groups of a page or more are page-aligned (one page reference per
/// 4 KiB sent); smaller ones pack on cache lines.
const PAGE_BYTES: usize = 4096;
const SMALL_ALIGN_BYTES: usize = 64;

/// A memfd holding verified groups, shared by every request sending from it.
#[derive(Debug)]
pub struct MemFile(OwnedFd);

impl AsFd for MemFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Where a group's bytes also lie in a [`MemFile`]: what a zero-copy send reads.
#[derive(Debug, Clone)]
pub struct MemFileSpan {
    pub file: Rc<MemFile>,
    pub offset: u64,
}

/// One verified group's bytes, and where they lie in an arena if they do.
#[derive(Debug, Clone)]
pub struct GroupBytes {
    held: Held,
    pub file: Option<MemFileSpan>,
}

/// Where a group's bytes are held.
#[derive(Debug, Clone)]
enum Held {
    /// Shared memory: an arena's mapping, or bytes off the mesh.
    Shared(Bytes),
    /// The DMA buffer the group was read into (not cached: sent from where it was
    /// verified, without a copy). Shard-local.
    DiskRead(ReadResult),
}

impl GroupBytes {
    /// Bytes held in ordinary memory only (sent with a copy).
    pub fn in_memory(bytes: Bytes) -> GroupBytes {
        GroupBytes {
            held: Held::Shared(bytes),
            file: None,
        }
    }

    /// Bytes left in the DMA buffer they were read into.
    pub fn in_disk_read(read: ReadResult) -> GroupBytes {
        GroupBytes {
            held: Held::DiskRead(read),
            file: None,
        }
    }

    /// The bytes as a `Bytes`: shared where they are, copied out of a DMA buffer (for
    /// what crosses threads or is framed as `Bytes`: the mesh, OAP/1).
    pub fn to_bytes(&self) -> Bytes {
        match &self.held {
            Held::Shared(bytes) => bytes.clone(),
            Held::DiskRead(read) => Bytes::copy_from_slice(read),
        }
    }

    /// The part `[from, to)` of the group, still pointing into its arena or buffer.
    pub fn slice(&self, from: usize, to: usize) -> GroupBytes {
        let held = match &self.held {
            Held::Shared(bytes) => Held::Shared(bytes.slice(from..to)),
            Held::DiskRead(read) => Held::DiskRead(
                ReadResult::slice(read, from, to - from).expect("a slice within the group"),
            ),
        };
        GroupBytes {
            held,
            file: self.file.as_ref().map(|span| MemFileSpan {
                file: Rc::clone(&span.file),
                offset: span.offset + from as u64,
            }),
        }
    }
}

impl std::ops::Deref for GroupBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.held {
            Held::Shared(bytes) => bytes,
            Held::DiskRead(read) => read,
        }
    }
}

/// One arena on the shard: its file, its view, how far it is filled, and the groups
/// placed in it (to find them when it is evicted).
#[derive(Debug)]
struct Arena {
    file: Rc<MemFile>,
    view: Bytes,
    filled: usize,
    keys: Vec<GroupKey>,
}

impl Arena {
    fn new(memory: ArenaMemory) -> Arena {
        Arena {
            file: Rc::new(MemFile(memory.fd)),
            view: memory.view,
            filled: 0,
            keys: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.view.len()
    }

    /// Where `len` bytes would go, if they fit.
    fn room_for(&self, len: usize) -> Option<usize> {
        let align = if len >= PAGE_BYTES {
            PAGE_BYTES
        } else {
            SMALL_ALIGN_BYTES
        };
        let at = self.filled.next_multiple_of(align);
        (at + len <= self.len()).then_some(at)
    }

    /// Writes `bytes` at `at` (from `room_for`) and returns the written region.
    fn write(&mut self, at: usize, bytes: &[u8]) -> Option<GroupBytes> {
        let offset = i64::try_from(at).ok()?;
        let mut done = 0;
        while done < bytes.len() {
            match nix::sys::uio::pwrite(&*self.file, &bytes[done..], offset + done as i64) {
                Ok(0) | Err(_) => return None,
                Ok(n) => done += n,
            }
        }
        self.filled = at + bytes.len();
        Some(GroupBytes {
            held: Held::Shared(self.view.slice(at..at + bytes.len())),
            file: Some(MemFileSpan {
                file: Rc::clone(&self.file),
                offset: at as u64,
            }),
        })
    }

    /// Forbids further writes: from here the kernel itself keeps the pages unchanged.
    fn seal(&self) {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.file.0);
        // Best effort: the module never writes a full arena anyway.
        let _ = fcntl(fd, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_WRITE));
    }
}

/// Where one cached group lies.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Sequence number of its arena.
    arena: u64,
    offset: usize,
    len: usize,
    referenced: bool,
}

/// The next arena: being prepared on the blocking pool, or ready.
#[derive(Debug)]
enum Spare {
    None,
    Preparing,
    Ready(ArenaMemory),
    Failed,
}

/// A group written into an arena but not yet cached: verify `bytes`, then
/// [`ArenaCache::keep`] it.
#[derive(Debug)]
pub struct Placed {
    pub group: GroupBytes,
    arena: u64,
    offset: usize,
}

/// The per-shard cache of verified groups, in arenas. Shard-local (`&mut self`).
#[derive(Debug)]
pub struct ArenaCache {
    index: AddressMap<GroupKey, Slot>,
    /// Oldest first; the back one is being filled.
    arenas: VecDeque<Arena>,
    /// Sequence number of `arenas[0]`.
    first_seq: u64,
    spare: Rc<RefCell<Spare>>,
    /// Size of the next arena to prepare, bytes.
    next_arena_bytes: usize,
    arena_bytes_max: usize,
    budget_bytes: usize,
    /// Bytes of the cached groups.
    live_bytes: usize,
}

impl ArenaCache {
    /// A cache of at most `budget_bytes` of arenas (the spare included). A budget too
    /// small for two arenas of one group caches nothing. The first arena is made here
    /// (start-up work, blocking).
    pub fn new(budget_bytes: usize) -> std::io::Result<ArenaCache> {
        let group = ron_codec::tree::GROUP_LEN_BYTES as usize;
        let first = round_down(ARENA_BYTES_FIRST.min(budget_bytes / 4), group);
        let arena_bytes_max = round_down((budget_bytes / 8).clamp(first, ARENA_BYTES_MAX), group);
        let mut cache = ArenaCache {
            index: AddressMap::default(),
            arenas: VecDeque::new(),
            first_seq: 0,
            spare: Rc::new(RefCell::new(Spare::None)),
            next_arena_bytes: first,
            arena_bytes_max,
            budget_bytes,
            live_bytes: 0,
        };
        if first >= group {
            cache
                .arenas
                .push_back(Arena::new(ArenaMemory::create(first)?));
            cache.next_arena_bytes = (first * 2).min(arena_bytes_max);
        }
        Ok(cache)
    }

    fn is_disabled(&self) -> bool {
        self.arenas.is_empty()
    }

    pub fn get(&mut self, key: &GroupKey) -> Option<GroupBytes> {
        let slot = self.index.get_mut(key)?;
        slot.referenced = true;
        let slot = *slot;
        let arena = &self.arenas[(slot.arena - self.first_seq) as usize];
        Some(GroupBytes {
            held: Held::Shared(arena.view.slice(slot.offset..slot.offset + slot.len)),
            file: Some(MemFileSpan {
                file: Rc::clone(&arena.file),
                offset: slot.offset as u64,
            }),
        })
    }

    pub fn contains(&self, key: &GroupKey) -> bool {
        self.index.contains_key(key)
    }

    /// Writes `bytes` into the arena being filled (a fresh one if it is full and the
    /// spare is ready). `None`: no room now; the caller keeps the group elsewhere.
    pub fn place(&mut self, bytes: &[u8]) -> Option<Placed> {
        if self.is_disabled() || bytes.len() > self.arena_bytes_max {
            return None;
        }
        let at = match self.head().room_for(bytes.len()) {
            Some(at) => at,
            None => {
                self.roll()?;
                self.head().room_for(bytes.len())?
            }
        };
        let arena = self.head_seq();
        let group = self.head_mut().write(at, bytes)?;
        Some(Placed {
            group,
            arena,
            offset: at,
        })
    }

    /// Whether `bytes` more can be placed without evicting anything, now or when the
    /// next arena is started: the cache is still growing into its budget. A cache that
    /// has reached it says no even while its current arena has room, because filling
    /// that arena only brings the next eviction closer.
    pub fn takes_without_eviction(&self, bytes: usize) -> bool {
        if self.is_disabled() {
            return false;
        }
        let head_room = self
            .head()
            .len()
            .saturating_sub(self.head().filled.next_multiple_of(PAGE_BYTES));
        // A roll adds the spare (`next_arena_bytes`) and evicts while the arenas and the
        // spare it then prepares (twice that, at most the largest) exceed the budget.
        let after_roll = self.arena_bytes()
            + self.next_arena_bytes
            + (self.next_arena_bytes * 2).min(self.arena_bytes_max);
        after_roll <= self.budget_bytes && bytes <= head_room + self.next_arena_bytes
    }

    /// Caches a placed group once its bytes are verified; returns them.
    pub fn keep(&mut self, key: GroupKey, placed: Placed) -> GroupBytes {
        let len = placed.group.len();
        let slot = Slot {
            arena: placed.arena,
            offset: placed.offset,
            len,
            referenced: false,
        };
        // `place` and `keep` run without yielding between them: the arena is still here.
        if let Some(old) = self.index.insert(key, slot) {
            self.live_bytes -= old.len;
        }
        self.live_bytes += len;
        if let Some(arena) = self.arena_mut(placed.arena) {
            arena.keys.push(key);
        }
        placed.group
    }

    fn head(&self) -> &Arena {
        self.arenas.back().expect("an enabled cache has an arena")
    }

    fn head_mut(&mut self) -> &mut Arena {
        self.arenas
            .back_mut()
            .expect("an enabled cache has an arena")
    }

    fn head_seq(&self) -> u64 {
        self.first_seq + self.arenas.len() as u64 - 1
    }

    fn arena_mut(&mut self, seq: u64) -> Option<&mut Arena> {
        let at = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        self.arenas.get_mut(at)
    }

    /// Makes the spare the arena being filled, evicting old arenas to stay within the
    /// budget; `None` if the spare is not ready (its preparation is started).
    fn roll(&mut self) -> Option<()> {
        let spare = std::mem::replace(&mut *self.spare.borrow_mut(), Spare::None);
        let memory = match spare {
            Spare::Ready(memory) => memory,
            Spare::Preparing => {
                *self.spare.borrow_mut() = Spare::Preparing;
                return None;
            }
            Spare::None | Spare::Failed => {
                self.prepare_spare();
                return None;
            }
        };
        self.head().seal();
        self.arenas.push_back(Arena::new(memory));
        self.next_arena_bytes = (self.next_arena_bytes * 2).min(self.arena_bytes_max);
        while self.arenas.len() > 1
            && self.arena_bytes() + self.next_arena_bytes > self.budget_bytes
        {
            self.evict_oldest();
        }
        self.prepare_spare();
        Some(())
    }

    fn arena_bytes(&self) -> usize {
        self.arenas.iter().map(Arena::len).sum()
    }

    /// Starts making the next arena on the blocking pool.
    fn prepare_spare(&mut self) {
        *self.spare.borrow_mut() = Spare::Preparing;
        let (spare, bytes) = (Rc::clone(&self.spare), self.next_arena_bytes);
        glommio::spawn_local(async move {
            let made = glommio::executor()
                .spawn_blocking(move || ArenaMemory::create(bytes))
                .await;
            *spare.borrow_mut() = match made {
                Ok(memory) => Spare::Ready(memory),
                Err(_) => Spare::Failed,
            };
        })
        .detach();
    }

    /// Drops the oldest arena; its recently read groups move to the arena being filled
    /// (at most half of it), the rest leave the cache.
    fn evict_oldest(&mut self) {
        let Some(old) = self.arenas.pop_front() else {
            return;
        };
        let old_seq = self.first_seq;
        self.first_seq += 1;
        let mut moved_bytes_max = self.head().len() / 2;
        for key in &old.keys {
            let Some(slot) = self.index.get(key).copied() else {
                continue;
            };
            if slot.arena != old_seq {
                continue;
            }
            let bytes = &old.view[slot.offset..slot.offset + slot.len];
            let moved =
                slot.referenced && slot.len <= moved_bytes_max && self.move_to_head(*key, bytes);
            if moved {
                moved_bytes_max -= slot.len;
            } else {
                self.index.remove(key);
                self.live_bytes -= slot.len;
            }
        }
        release(old);
    }

    /// Copies a cached group into the arena being filled (second chance).
    fn move_to_head(&mut self, key: GroupKey, bytes: &[u8]) -> bool {
        let Some(at) = self.head().room_for(bytes.len()) else {
            return false;
        };
        let arena = self.head_seq();
        if self.head_mut().write(at, bytes).is_none() {
            return false;
        }
        self.head_mut().keys.push(key);
        self.index.insert(
            key,
            Slot {
                arena,
                offset: at,
                len: bytes.len(),
                referenced: false,
            },
        );
        true
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes of the groups cached.
    pub fn weight(&self) -> usize {
        self.live_bytes
    }

    /// Arenas held (the one being filled included) and their bytes.
    pub fn arenas(&self) -> (usize, usize) {
        (self.arenas.len(), self.arena_bytes())
    }
}

/// Lets go of an evicted arena. Its mapping is dropped on the blocking pool: unmapping
/// tens of MiB of populated pages is not shard work. (If a `Bytes` view of it is still
/// held somewhere, that drop only counts down and the last holder unmaps.) The memfd
/// closes here, or when the last send from it ends: closing it is cheap, the pages
/// live as long as the mapping.
fn release(arena: Arena) {
    let Arena { file, view, .. } = arena;
    drop(file);
    glommio::spawn_local(async move {
        glommio::executor().spawn_blocking(move || drop(view)).await;
    })
    .detach();
}

fn round_down(n: usize, to: usize) -> usize {
    n / to * to
}

#[cfg(test)]
mod tests {
    use super::*;
    use ron_codec::tree::GroupIndex;
    use ron_codec::Address;

    fn key(n: u8, g: u64) -> GroupKey {
        GroupKey {
            addr: Address::from_bytes([n; 32]),
            group: GroupIndex(g),
        }
    }

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::default()
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    fn keep(cache: &mut ArenaCache, k: GroupKey, bytes: &[u8]) -> Option<GroupBytes> {
        let placed = cache.place(bytes)?;
        Some(cache.keep(k, placed))
    }

    #[test]
    fn groups_read_back_from_the_mapping_and_the_memfd_alike() {
        run(|| async {
            let mut cache = ArenaCache::new(64 << 20).unwrap();
            let kept = keep(&mut cache, key(1, 0), &[7u8; 5000]).unwrap();
            assert_eq!(&kept[..], &[7u8; 5000][..]);
            let got = cache.get(&key(1, 0)).unwrap();
            assert_eq!(got[..], kept[..]);
            let span = got.file.unwrap();
            assert_eq!(span.offset % PAGE_BYTES as u64, 0, "page-aligned");
            let mut back = vec![0u8; 5000];
            let n = nix::sys::uio::pread(&*span.file, &mut back, span.offset as i64).unwrap();
            assert_eq!((n, &back[..]), (5000, &[7u8; 5000][..]));
            assert!(cache.get(&key(2, 0)).is_none());
        });
    }

    #[test]
    fn takes_without_eviction_until_the_budget_is_spoken_for() {
        run(|| async {
            let budget = 8 << 20;
            let mut cache = ArenaCache::new(budget).unwrap();
            let group = vec![3u8; 64 * 1024];
            assert!(cache.takes_without_eviction(group.len()));
            let mut evicted_after = None;
            for n in 0..400u64 {
                let room = cache.takes_without_eviction(group.len());
                let arenas_before = cache.arenas().0;
                let first_before = cache.first_seq;
                keep(&mut cache, key(1, n), &group);
                if cache.first_seq != first_before {
                    assert!(
                        !room,
                        "{n}: said it had room, then evicted ({arenas_before} arenas)"
                    );
                    evicted_after.get_or_insert(n);
                }
                if n % 8 == 0 {
                    glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
                }
            }
            assert!(evicted_after.is_some(), "the cache never filled");
            assert!(!cache.takes_without_eviction(budget));
            assert!(
                !cache.takes_without_eviction(group.len()),
                "a cache at its budget takes nothing more, room in its arena or not"
            );
        });
    }

    #[test]
    fn a_budget_too_small_for_two_arenas_caches_nothing() {
        run(|| async {
            let mut cache = ArenaCache::new(200 * 1024).unwrap();
            assert!(cache.place(&[1u8; 100]).is_none());
            assert_eq!(cache.arenas(), (0, 0));
        });
    }

    #[test]
    fn stays_within_budget_and_keeps_what_is_read() {
        run(|| async {
            let budget = 8 << 20;
            let mut cache = ArenaCache::new(budget).unwrap();
            let group = vec![3u8; 64 * 1024];
            let mut kept = 0;
            for n in 0..2000u64 {
                // Group 0 of object 0 is read after every insert: it must survive.
                if keep(&mut cache, key(1, n), &group).is_some() {
                    kept += 1;
                }
                if n > 0 {
                    assert!(cache.get(&key(1, 0)).is_some(), "hot group lost at {n}");
                }
                let (_, bytes) = cache.arenas();
                assert!(bytes <= budget, "{bytes} over {budget}");
                // Let the blocking pool deliver spares.
                if n % 8 == 0 {
                    glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
                }
            }
            assert!(kept > 1000, "only {kept} of 2000 placed");
            assert!(cache.weight() <= budget);
        });
    }
}
