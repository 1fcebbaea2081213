//! An arena's memory: a sealed memfd, mapped read-only at a 2 MiB boundary and backed by
//! 2 MiB folios wherever the kernel grants them.
//!
//! A `sendfile` from shared memory looks up, locks and references every folio it sends.
//! With 4 KiB pages that is 65,536 lookups per 256 MiB answer (a fifth of the shard's
//! kernel time in the 256 MiB profile, docs/PERF.md), where nginx's ext4 page cache hands
//! the same bytes over in large folios. Two things make an arena's folios large:
//!
//! - the mapping starts on a 2 MiB boundary (a huge folio can only be mapped where the
//!   address and the file offset agree modulo 2 MiB; `mmap` of a memfd aligns only to
//!   4 KiB unless shared-memory huge pages are enabled system-wide);
//! - `MADV_COLLAPSE` (Linux 6.1) once one page per 2 MiB exists: it rebuilds the file
//!   in 2 MiB folios (the holes zero-filled, ~10 ms per 64 MiB arena on this machine)
//!   whatever `/sys/kernel/mm/transparent_hugepage/shmem_enabled` says short of `deny`,
//!   so the distributions' default `never` no longer means 4 KiB pages. `MADV_HUGEPAGE`
//!   is asked for first (where `shmem_enabled` is `advise` the kernel then grants huge
//!   folios as the pages are allocated, and the collapse finds nothing to do).
//!
//! Then every page is allocated and mapped here, on the blocking pool, so the shard
//! never faults on an arena. A kernel that refuses any of the advice (no transparent
//! huge pages, memory too fragmented for a 2 MiB folio) leaves 4 KiB pages: slower to
//! send, the same bytes.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;

use bytes::Bytes;
use nix::fcntl::{fcntl, FallocateFlags, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};

/// The size of a PMD-mapped huge page on x86-64 and arm64 (4 KiB base pages).
const HUGE_PAGE_BYTES: usize = 2 << 20;

/// The base page: the fallback touches every one to map it.
const BASE_PAGE_BYTES: usize = 4096;

/// An arena's memory as the blocking pool makes it (`Send`): the memfd and a read-only
/// view of all of it.
#[derive(Debug)]
pub(super) struct ArenaMemory {
    pub(super) fd: OwnedFd,
    pub(super) view: Bytes,
}

impl ArenaMemory {
    /// Creates, allocates and maps an arena of `bytes`. Blocking: allocating and
    /// mapping every page is what keeps page faults and allocation off the shard.
    pub(super) fn create(bytes: usize) -> io::Result<ArenaMemory> {
        let flags = MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING;
        let fd = memfd_create(c"ron-verified-groups", flags)?;
        let len = i64::try_from(bytes).map_err(|_| io::ErrorKind::InvalidInput)?;
        nix::unistd::ftruncate(&fd, len)?;
        // Its size is fixed from here: the mapping can never see a truncated file.
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW;
        fcntl(fd.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals))?;
        let file = File::from(fd);
        let map = AlignedMapping::read_only(&file, bytes)?;
        // Each refused only by kernels without the feature (see the module doc).
        let _ = map.advise(libc::MADV_HUGEPAGE);
        map.touch_every(HUGE_PAGE_BYTES);
        let _ = map.advise(libc::MADV_COLLAPSE);
        if map.advise(libc::MADV_POPULATE_READ).is_err() {
            // Before Linux 5.14: allocate the file, then map each page by reading it.
            nix::fcntl::fallocate(file.as_raw_fd(), FallocateFlags::empty(), 0, len)?;
            map.touch_every(BASE_PAGE_BYTES);
        }
        Ok(ArenaMemory {
            fd: OwnedFd::from(file),
            view: Bytes::from_owner(map),
        })
    }
}

/// How many bytes of a fresh arena of `bytes` the kernel backs with 2 MiB folios, read
/// from this process's `/proc/self/smaps` (`ron doctor` asks with a small arena). Errors
/// when the arena cannot be made or its mapping is not listed.
pub fn huge_bytes_of_a_fresh_arena(bytes: usize) -> io::Result<u64> {
    let memory = ArenaMemory::create(bytes)?;
    let start = format!("{:x}-", memory.view.as_ptr() as usize);
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let entry = smaps
        .lines()
        .skip_while(|line| !line.starts_with(&start))
        .skip(1)
        .take_while(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|key| key.ends_with(':'))
        });
    let huge_kib = entry
        .filter_map(|line| line.strip_prefix("ShmemPmdMapped:"))
        .find_map(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the arena is not in smaps"))?;
    Ok(huge_kib * 1024)
}

/// A shared, read-only mapping of a whole file that starts on a 2 MiB boundary; unmapped
/// when dropped (by the last `Bytes` view of it).
#[derive(Debug)]
struct AlignedMapping {
    start: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only memory that nothing writes through; the file's bytes
// under it are written only into regions no view has been handed (arena.rs's invariant),
// so reading it from any thread is as safe as reading a `&[u8]`.
#[allow(unsafe_code)]
unsafe impl Send for AlignedMapping {}
#[allow(unsafe_code)]
// SAFETY: as for `Send`.
unsafe impl Sync for AlignedMapping {}

impl AlignedMapping {
    /// Maps `len` bytes of `file` read-only and shared at a 2 MiB-aligned address: a
    /// reservation 2 MiB larger than the file is made, the file is mapped over its first
    /// aligned address, and the reservation's ends are given back.
    fn read_only(file: &File, len: usize) -> io::Result<AlignedMapping> {
        if len == 0 {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let reserved_len = len
            .checked_add(HUGE_PAGE_BYTES)
            .ok_or(io::ErrorKind::InvalidInput)?;
        #[allow(unsafe_code)]
        // SAFETY: a fresh anonymous reservation at an address the kernel picks; it
        // aliases nothing.
        let reserved = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                reserved_len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if reserved == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let reserved_at = reserved as usize;
        let start = reserved_at.next_multiple_of(HUGE_PAGE_BYTES);
        #[allow(unsafe_code)]
        // SAFETY: `start..start + len` lies inside the reservation made above, which
        // this function owns; MAP_FIXED replaces that part of it and nothing else.
        let mapped = unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_FIXED,
                file.as_raw_fd(),
                0,
            )
        };
        let failed = (mapped == libc::MAP_FAILED).then(io::Error::last_os_error);
        let lead = start - reserved_at;
        let tail = reserved_len - lead - len;
        unmap(reserved_at, lead);
        unmap(start + len, tail);
        if let Some(error) = failed {
            unmap(start, len);
            return Err(error);
        }
        let start = NonNull::new(start as *mut u8).ok_or(io::ErrorKind::InvalidData)?;
        Ok(AlignedMapping { start, len })
    }

    fn advise(&self, advice: libc::c_int) -> io::Result<()> {
        #[allow(unsafe_code)]
        // SAFETY: advice over exactly this mapping; none of the advice used here
        // (MADV_HUGEPAGE, MADV_COLLAPSE, MADV_POPULATE_READ) changes its contents.
        let done = unsafe { libc::madvise(self.start.as_ptr().cast(), self.len, advice) };
        if done == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Reads a byte every `step` bytes: every page so each is mapped before the shard
    /// reads it, or one page per 2 MiB so `MADV_COLLAPSE` has a page to collapse around
    /// (it refuses a range with none; the holes around it are filled with zeros, no
    /// page copied).
    fn touch_every(&self, step: usize) {
        for offset in (0..self.len).step_by(step) {
            std::hint::black_box(self.as_ref()[offset]);
        }
    }
}

impl AsRef<[u8]> for AlignedMapping {
    fn as_ref(&self) -> &[u8] {
        #[allow(unsafe_code)]
        // SAFETY: `start..start + len` is mapped readable for as long as `self` lives
        // (unmapped only in `drop`), and nothing writes through it.
        unsafe {
            std::slice::from_raw_parts(self.start.as_ptr(), self.len)
        }
    }
}

impl Drop for AlignedMapping {
    fn drop(&mut self) {
        unmap(self.start.as_ptr() as usize, self.len);
    }
}

/// Gives back `len` bytes of address space at `at` (nothing when `len` is 0). A failure
/// can only mean a range this module never mapped: it is ignored, the range stays.
fn unmap(at: usize, len: usize) {
    if len == 0 {
        return;
    }
    #[allow(unsafe_code)]
    // SAFETY: called only on ranges this module mapped or reserved and no longer hands
    // out (a reservation's unused ends, or a mapping being dropped).
    let _ = unsafe { libc::munmap(at as *mut libc::c_void, len) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn an_arena_is_mapped_on_a_huge_page_boundary_and_reads_what_was_written() {
        let memory = ArenaMemory::create(4 << 20).expect("arena");
        assert_eq!(memory.view.as_ptr() as usize % HUGE_PAGE_BYTES, 0);
        assert_eq!(memory.view.len(), 4 << 20);
        assert!(
            memory.view.iter().all(|&b| b == 0),
            "a fresh arena is zeros"
        );
        let file = File::from(memory.fd.try_clone().expect("dup"));
        file.write_all_at(b"verified", (2 << 20) + 5)
            .expect("pwrite");
        assert_eq!(&memory.view[(2 << 20) + 5..][..8], b"verified");
    }

    /// Where the kernel has transparent huge pages for shared memory (the
    /// `shmem_enabled` control exists and does not say `deny`; `never`, the usual
    /// default, is what MADV_COLLAPSE overrides), an arena is backed by 2 MiB folios.
    #[test]
    fn an_arena_is_made_of_huge_pages_where_the_kernel_has_them() {
        let Ok(control) =
            std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
        else {
            return;
        };
        if control.contains("[deny]") {
            return;
        }
        let huge = huge_bytes_of_a_fresh_arena(8 << 20).expect("probe");
        assert_eq!(huge, 8 << 20, "every 2 MiB of the arena in a huge folio");
    }

    #[test]
    fn an_empty_arena_is_refused() {
        let error = ArenaMemory::create(0).expect_err("no arena of 0 bytes");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}
