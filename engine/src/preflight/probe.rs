//! Probes that touch the host: a throwaway io_uring, a throwaway file in the data dir,
//! the data dir's filesystem.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Creates and closes a one-entry io_uring: the exact call glommio makes first, so a
/// sysctl, seccomp filter or missing kernel support shows here and not as a shard panic.
#[allow(unsafe_code)]
pub(super) fn io_uring_setup() -> std::io::Result<()> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // struct io_uring_params is 120 bytes; all zero asks for the defaults.
    let mut params = [0u32; 30];
    // SAFETY: io_uring_setup reads and writes only `params`, which lives across the call.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor the kernel just created for this call; nothing else
    // owns it, and dropping the OwnedFd closes it once.
    drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    Ok(())
}

fn probe_path(dir: &Path) -> PathBuf {
    dir.join(format!(".ron-preflight-{}", std::process::id()))
}

/// Whether a probe failed for want of space (or of quota) rather than of access.
pub(super) fn is_out_of_space(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{QuotaExceeded, StorageFull};
    matches!(e.kind(), StorageFull | QuotaExceeded)
}

/// Creates the dir if needed, then writes, syncs and removes a small file in it.
pub(super) fn write_probe(dir: &Path) -> std::io::Result<()> {
    ron_shards::layout::create_dir_durably(dir).map_err(|e| match e {
        ron_shards::ShardError::Io { source, .. } => source,
        other => std::io::Error::other(other),
    })?;
    let path = probe_path(dir);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        file.write_all(b"ron preflight\n")?;
        file.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// Whether files in `dir` open with O_DIRECT (tmpfs and some FUSE filesystems refuse).
pub(super) fn supports_o_direct(dir: &Path) -> bool {
    let path = probe_path(dir);
    let opened = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path);
    let _ = std::fs::remove_file(&path);
    opened.is_ok()
}

/// The filesystem's common name, from its magic number.
pub(super) fn filesystem_name(dir: &Path) -> &'static str {
    use nix::sys::statfs::{
        statfs, BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, NFS_SUPER_MAGIC, OVERLAYFS_SUPER_MAGIC,
        TMPFS_MAGIC, XFS_SUPER_MAGIC,
    };
    let Ok(stat) = statfs(dir) else {
        return "an unknown filesystem";
    };
    match stat.filesystem_type() {
        t if t == EXT4_SUPER_MAGIC => "ext4",
        t if t == XFS_SUPER_MAGIC => "xfs",
        t if t == BTRFS_SUPER_MAGIC => "btrfs",
        t if t == TMPFS_MAGIC => "tmpfs",
        t if t == OVERLAYFS_SUPER_MAGIC => "overlayfs",
        t if t == NFS_SUPER_MAGIC => "nfs",
        _ => "another filesystem",
    }
}

/// `(available to this user, total)` bytes on the data dir's filesystem.
pub(super) fn space(dir: &Path) -> Option<(u64, u64)> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    let unit = stat.fragment_size();
    Some((stat.blocks_available() * unit, stat.blocks() * unit))
}
