//! What the DHT examples share: their arguments, the keys they provide, and how they read
//! the process's peak memory.

use libp2p::kad::RecordKey;

/// `COUNT [DIR]`: how many keys (default 1,000,000) and where the stores go (default the
/// temp dir; pass a path on the disk being measured).
pub fn args() -> (u64, std::path::PathBuf) {
    let mut args = std::env::args().skip(1);
    let count = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let root = args.next().map_or_else(std::env::temp_dir, Into::into);
    (count, root)
}

/// Key `n`: a multihash-shaped key of 32 well-spread bytes (what a BLAKE3 address looks
/// like to the store).
pub fn key(n: u64) -> RecordKey {
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5851_f42d_4c95_7f2d;
    let mut bytes = vec![0x1e, 0x20];
    for _ in 0..4 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&x.to_be_bytes());
    }
    RecordKey::new(&bytes)
}

/// The process's peak resident memory (VmHWM), KiB.
pub fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}
