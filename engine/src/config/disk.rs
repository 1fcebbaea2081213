//! The default budget of fetched copies (`fetched_bytes_max = "auto"`).
//!
//! Objects a node reads through from peers or an origin are stored as evictable copies
//! (docs/design/eviction.md); past the budget the oldest are evicted. By default the
//! budget is half of the size of the filesystems holding the data dirs (each counted
//! once), less what parity adds to it on disk (the budget counts object bytes; a copy
//! written with `--ec K+M` takes `(K+M)/K` of them), so that an edge's cache never takes
//! the space its own uploads need — the `max_size` an nginx `proxy_cache_path` operator
//! would otherwise have to choose.

use std::path::{Path, PathBuf};

use ron_shards::ec::EcParams;

use super::keys::size_text;

/// Share of the data dirs' filesystems fetched copies take by default: one half.
pub const FETCHED_SHARE_DIVISOR: u64 = 2;
/// Used when no data dir's filesystem can be read, bytes.
pub const FETCHED_FALLBACK_BYTES: u64 = 16 << 30;

/// The automatic budget for `dirs` holding copies written with `ec`, and a line saying
/// how it was chosen.
pub fn auto_fetched_bytes(dirs: &[PathBuf], ec: EcParams) -> (u64, String) {
    let mut seen: Vec<u64> = Vec::new();
    let mut total = 0u64;
    for dir in dirs {
        let Some((fsid, bytes)) = filesystem_of(dir) else {
            continue;
        };
        if !seen.contains(&fsid) {
            seen.push(fsid);
            total += bytes;
        }
    }
    if total == 0 {
        return (
            FETCHED_FALLBACK_BYTES,
            "data dirs' filesystems unreadable, fixed fallback".into(),
        );
    }
    let (data, stored) = (
        u64::from(ec.data),
        u64::from(ec.data) + u64::from(ec.parity),
    );
    let parity = match ec.is_off() {
        true => String::new(),
        false => format!(", less parity ({}+{}: {data}/{stored})", ec.data, ec.parity),
    };
    let why = format!(
        "1/{FETCHED_SHARE_DIVISOR} of the {} of the data dirs' {} filesystem{}{parity}",
        size_text(total),
        seen.len(),
        if seen.len() == 1 { "" } else { "s" }
    );
    (total / FETCHED_SHARE_DIVISOR / stored * data, why)
}

/// The id and size of the filesystem that holds `dir`, or would once it is created
/// (its nearest existing ancestor).
fn filesystem_of(dir: &Path) -> Option<(u64, u64)> {
    let existing = dir.ancestors().find(|a| a.exists())?;
    let stat = nix::sys::statvfs::statvfs(existing).ok()?;
    Some((
        stat.filesystem_id() as u64,
        stat.blocks() as u64 * stat.fragment_size() as u64,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_of_each_filesystem_once_and_a_dir_not_yet_created_counts_its_parent() {
        let tmp = std::env::temp_dir();
        let (one, why) = auto_fetched_bytes(std::slice::from_ref(&tmp), EcParams::OFF);
        let (_, size) = filesystem_of(&tmp).unwrap();
        assert_eq!(one, size / FETCHED_SHARE_DIVISOR);
        assert!(
            why.starts_with("1/2 of the ") && why.ends_with("1 filesystem"),
            "{why}"
        );
        // Copies with 4+1 parity take 5/4 of their bytes on disk.
        let with_parity = EcParams::new(4, 1).unwrap();
        let (less, why) = auto_fetched_bytes(std::slice::from_ref(&tmp), with_parity);
        assert_eq!(less, size / FETCHED_SHARE_DIVISOR / 5 * 4);
        assert!(
            why.ends_with("1 filesystem, less parity (4+1: 4/5)"),
            "{why}"
        );
        let twice = [
            tmp.join("ron-not-created-a"),
            tmp.join("ron-not-created-b/c"),
        ];
        assert_eq!(
            auto_fetched_bytes(&twice, EcParams::OFF).0,
            one,
            "one filesystem counted once"
        );
        let (fallback, why) = auto_fetched_bytes(&[], EcParams::OFF);
        assert_eq!(fallback, FETCHED_FALLBACK_BYTES);
        assert!(why.contains("fallback"));
    }
}
