//! Which paths are mount points, from `/proc/self/mountinfo`: a data dir of a node whose
//! other dirs are each a disk's mount point, found empty and not a mount point itself, is
//! a disk that did not mount — not a replacement to rebuild onto the filesystem below it
//! (`layout::open_data_dirs`). Bind mounts count (they are listed), unlike a comparison
//! of device numbers. Start-up only.

use std::path::{Path, PathBuf};

/// Where `/proc/self/mountinfo` lists this process's mounts.
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Whether `dir` (made absolute and free of links first) is where something is mounted;
/// `None` when it cannot be told (no `/proc`, an unreadable path).
pub(crate) fn is_mount_point(dir: &Path) -> Option<bool> {
    let dir = std::fs::canonicalize(dir).ok()?;
    let table = std::fs::read_to_string(MOUNTINFO).ok()?;
    let found = mount_points(&table).any(|point| point == dir);
    Some(found)
}

/// The mount points `mountinfo` lists (its fifth field, octal escapes undone).
fn mount_points(mountinfo: &str) -> impl Iterator<Item = PathBuf> + '_ {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
}

/// `mountinfo` writes a space, tab, newline and backslash in a path as `\040`, `\011`,
/// `\012` and `\134`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let octal = bytes
            .get(at + 1..at + 4)
            .filter(|d| bytes[at] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .map(|d| d.iter().fold(0u32, |n, b| n * 8 + u32::from(b - b'0')));
        match octal.and_then(|n| u8::try_from(n).ok()) {
            Some(byte) => {
                out.push(byte);
                at += 4;
            }
            None => {
                out.push(bytes[at]);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_read_with_their_escapes_undone() {
        let table = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 22 8:17 / /srv/disk\\0400 rw,noatime shared:20 - xfs /dev/sdb1 rw
36 22 0:40 /data /mnt/back\\134slash rw - ext4 /dev/sdc1 rw
37 22 0:41 / /odd\\08 rw - tmpfs none rw
";
        let points: Vec<PathBuf> = mount_points(table).collect();
        assert_eq!(
            points,
            [
                PathBuf::from("/"),
                PathBuf::from("/srv/disk 0"),
                PathBuf::from("/mnt/back\\slash"),
                PathBuf::from("/odd\\08"),
            ]
        );
        assert_eq!(mount_points("garbage\n\n").count(), 0);
    }

    #[test]
    fn the_root_is_a_mount_point_and_a_fresh_dir_is_not() {
        assert_eq!(is_mount_point(Path::new("/")), Some(true));
        let dir = std::env::temp_dir().join(format!("ron-mounts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(is_mount_point(&dir), Some(false));
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(is_mount_point(&dir), None, "gone: cannot be told");
    }
}
