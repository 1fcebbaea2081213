//! The memory the process may use, and the verified-group cache's default share of it.
//!
//! ron reads objects with O_DIRECT, so the page cache does not hold them: the verified
//! cache is the node's read cache, and a fixed small default turns a working set that
//! fits in RAM into disk reads. `cache_bytes = "auto"` (the default) takes half of the
//! memory limit — the cgroup's (v2 `memory.max`, v1 `memory.limit_in_bytes`) when it is
//! lower than the machine's RAM, else `MemTotal` — leaving the other half to the kernel
//! (socket buffers, LMDB's mapped pages, uploads in the page cache), the metadata cache,
//! connections and whatever else runs on the host.

use std::path::Path;

use super::keys::size_text;

/// Share of the memory limit the verified cache takes by default: one half.
pub const CACHE_SHARE_DIVISOR: u64 = 2;
/// Smallest automatic cache, bytes.
pub const CACHE_AUTO_BYTES_MIN: u64 = 64 << 20;
/// Used when the memory limit cannot be read (not Linux, no /proc), bytes.
pub const CACHE_FALLBACK_BYTES: u64 = 256 << 20;

/// Each shard's registered I/O memory by default: this share of its cache share...
pub const IO_MEMORY_SHARE_DIVISOR: u64 = 8;
/// ...at least this (glommio's floor is 64 KiB)...
pub const IO_MEMORY_AUTO_BYTES_MIN: u64 = 1 << 20;
/// ...and at most glommio's own default.
pub const IO_MEMORY_AUTO_BYTES_MAX: u64 = 10 << 20;

/// The memory this process may use, and where that figure came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimit {
    pub bytes: u64,
    pub source: &'static str,
}

/// The lower of the machine's RAM and this process's cgroup limit.
pub fn memory_limit() -> Option<MemoryLimit> {
    let ram = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| meminfo_total_bytes(&text))
        .map(|bytes| MemoryLimit {
            bytes,
            source: "MemTotal",
        });
    let cgroup = cgroup_limit(Path::new("/"));
    match (ram, cgroup) {
        (Some(ram), Some(cg)) if cg.bytes < ram.bytes => Some(cg),
        (ram, cg) => ram.or(cg),
    }
}

/// Each shard's registered I/O memory for a node cache of `cache_bytes` over `shards`,
/// and a line saying how it was chosen. io_uring pins registered buffers, so they are
/// resident from the start whether used or not: glommio's fixed 10 MiB was a third of
/// an idle node given a 16 MiB cache. A small cache says a small node; a large one
/// gets glommio's default. An eighth still holds four of the cache's 512 KiB window
/// reads at once at a 16 MiB share; reads past it use ordinary buffers.
pub fn auto_io_memory_bytes(cache_bytes: u64, shards: u16) -> (u64, String) {
    let share = cache_bytes / u64::from(shards.max(1));
    let bytes =
        (share / IO_MEMORY_SHARE_DIVISOR).clamp(IO_MEMORY_AUTO_BYTES_MIN, IO_MEMORY_AUTO_BYTES_MAX);
    let why = format!(
        "1/{IO_MEMORY_SHARE_DIVISOR} of a shard's {} cache share, {} to {}",
        size_text(share),
        size_text(IO_MEMORY_AUTO_BYTES_MIN),
        size_text(IO_MEMORY_AUTO_BYTES_MAX)
    );
    (bytes, why)
}

/// The automatic cache size for `limit`, and a line saying how it was chosen.
pub fn auto_cache_bytes(limit: Option<&MemoryLimit>) -> (u64, String) {
    match limit {
        Some(limit) => {
            let bytes = (limit.bytes / CACHE_SHARE_DIVISOR).max(CACHE_AUTO_BYTES_MIN);
            let why = format!(
                "1/{CACHE_SHARE_DIVISOR} of the {} memory limit ({})",
                size_text(limit.bytes),
                limit.source
            );
            (bytes, why)
        }
        None => (
            CACHE_FALLBACK_BYTES,
            "memory limit unreadable, fixed fallback".into(),
        ),
    }
}

fn meminfo_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The cgroup memory limit of this process, if it has one (`root` is `/` but for tests).
fn cgroup_limit(root: &Path) -> Option<MemoryLimit> {
    let cgroups = std::fs::read_to_string(root.join("proc/self/cgroup")).ok()?;
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let path = path.trim_start_matches('/');
        let (file, source) = match controllers {
            "" => (
                root.join("sys/fs/cgroup").join(path).join("memory.max"),
                "cgroup memory.max",
            ),
            c if c.split(',').any(|c| c == "memory") => (
                root.join("sys/fs/cgroup/memory")
                    .join(path)
                    .join("memory.limit_in_bytes"),
                "cgroup memory.limit_in_bytes",
            ),
            _ => continue,
        };
        // "max" (v2) or a huge number (v1) means no limit.
        if let Some(bytes) = std::fs::read_to_string(file)
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .filter(|&bytes| bytes < 1 << 60)
        {
            return Some(MemoryLimit { bytes, source });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_takes_half_the_limit_and_says_why() {
        let limit = MemoryLimit {
            bytes: 24 << 30,
            source: "MemTotal",
        };
        let (bytes, why) = auto_cache_bytes(Some(&limit));
        assert_eq!(bytes, 12 << 30);
        assert_eq!(why, "1/2 of the 24 GiB memory limit (MemTotal)");
        let small = MemoryLimit {
            bytes: 100 << 20,
            source: "cgroup memory.max",
        };
        assert_eq!(auto_cache_bytes(Some(&small)).0, CACHE_AUTO_BYTES_MIN);
        assert_eq!(auto_cache_bytes(None).0, CACHE_FALLBACK_BYTES);
    }

    #[test]
    fn io_memory_is_an_eighth_of_a_shards_cache_share_within_bounds() {
        let (bytes, why) = auto_io_memory_bytes(16 << 20, 1);
        assert_eq!(bytes, 2 << 20);
        assert_eq!(why, "1/8 of a shard's 16 MiB cache share, 1 MiB to 10 MiB");
        assert_eq!(
            auto_io_memory_bytes(16 << 20, 8).0,
            IO_MEMORY_AUTO_BYTES_MIN
        );
        assert_eq!(
            auto_io_memory_bytes(12 << 30, 2).0,
            IO_MEMORY_AUTO_BYTES_MAX
        );
        assert_eq!(auto_io_memory_bytes(0, 0).0, IO_MEMORY_AUTO_BYTES_MIN);
    }

    #[test]
    fn cgroup_v2_and_v1_limits_are_read_and_max_means_none() {
        let root = std::env::temp_dir().join(format!("ron-cgroup-{}", std::process::id()));
        let write = |rel: &str, text: &str| {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("proc/self/cgroup", "0::/system.slice/ron.service\n");
        write(
            "sys/fs/cgroup/system.slice/ron.service/memory.max",
            "4294967296\n",
        );
        assert_eq!(
            cgroup_limit(&root),
            Some(MemoryLimit {
                bytes: 4 << 30,
                source: "cgroup memory.max"
            })
        );
        write("sys/fs/cgroup/system.slice/ron.service/memory.max", "max\n");
        assert_eq!(cgroup_limit(&root), None);
        write("proc/self/cgroup", "4:memory:/ron\n3:cpu,cpuacct:/ron\n");
        write(
            "sys/fs/cgroup/memory/ron/memory.limit_in_bytes",
            "1073741824\n",
        );
        assert_eq!(cgroup_limit(&root).unwrap().bytes, 1 << 30);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            meminfo_total_bytes("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24_576_000 * 1024)
        );
    }
}
