//! The checks, one function each; the decisions that need no host are separate pure
//! functions with unit tests.

use std::path::Path;

use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

use super::{probe, Finding, Verdict};
use crate::config::keys::size_text;
use crate::config::Config;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// glommio refuses to build an executor below this locked-memory limit.
const GLOMMIO_MEMLOCK_MIN_BYTES: u64 = 512 * KIB;
/// What one shard pins when glommio registers its I/O buffers: 10 MiB, once per ring
/// (main, poll, latency). Below it glommio skips registration (a copy per disk read).
const REGISTERED_BYTES_PER_SHARD: u64 = 3 * 10 * MIB;
/// Descriptors per shard besides connections, cached object files and uploads: the
/// LMDB environment, listeners, io_uring rings and eventfds.
const FDS_PER_SHARD_BASE: u64 = 32;

/// Descriptors per shard besides connections and cached object files: the base, and
/// the uploads it may have open, each with a data and a parity file per data dir.
fn fds_per_shard(config: &Config) -> u64 {
    let dirs = config.data_dirs.len().max(1) as u64;
    FDS_PER_SHARD_BASE + u64::from(config.uploads_open_max) * 2 * dirs
}
/// Descriptors for the process as a whole: the admin listener and its 64 connections,
/// the control thread, stdio, the data-dir lock.
const FDS_PER_PROCESS: u64 = 128;
/// Connections per shard below which the node is not worth starting.
const CONNECTIONS_FLOOR: u64 = 64;
/// glommio's io_uring features need this kernel.
const KERNEL_MIN: (u32, u32) = (5, 8);
/// Free space below which uploads will soon be refused.
const FREE_BYTES_LOW: u64 = GIB;
/// `CAP_IPC_LOCK`: exempts the process from locked-memory accounting.
const CAP_IPC_LOCK_BIT: u32 = 14;

/// The configuration's own rules (the write rule, TLS, limits), as `serve` applies them.
pub(super) fn config(config: &Config) -> Finding {
    let needed = "a configuration `ron serve` accepts";
    match config.validate() {
        Ok(()) => Finding::ok("config", "valid".into(), needed),
        Err(e) => Finding {
            check: "config",
            verdict: Verdict::Fail,
            found: e.to_string(),
            needed: needed.into(),
            fix: "see `ron help` and `ron config print`".into(),
        },
    }
}

pub(super) fn io_uring() -> Finding {
    let needed = "io_uring_setup allowed (kernel.io_uring_disabled=0, no seccomp block)";
    match probe::io_uring_setup() {
        Ok(()) => Finding::ok("io_uring", "usable".into(), needed),
        Err(e) => {
            let sysctl = read_trimmed("/proc/sys/kernel/io_uring_disabled");
            let filtered = proc_status_field("Seccomp").as_deref() == Some("2");
            let (found, fix) = io_uring_refusal(&e, sysctl.as_deref(), filtered);
            Finding {
                check: "io_uring",
                verdict: Verdict::Fail,
                found,
                needed: needed.into(),
                fix,
            }
        }
    }
}

/// Names why `io_uring_setup` failed, and the fix, from the sysctl and the seccomp mode.
fn io_uring_refusal(
    error: &std::io::Error,
    sysctl: Option<&str>,
    seccomp_filtered: bool,
) -> (String, String) {
    let errno = error.raw_os_error();
    match (sysctl, errno) {
        (Some("2"), _) => (
            "disabled by sysctl kernel.io_uring_disabled=2".into(),
            "sysctl -w kernel.io_uring_disabled=0 (persist it in /etc/sysctl.d/)".into(),
        ),
        (Some("1"), Some(libc::EPERM)) => (
            "restricted by kernel.io_uring_disabled=1 to the group in kernel.io_uring_group".into(),
            "add the user running ron to that group, or sysctl -w kernel.io_uring_disabled=0"
                .into(),
        ),
        _ if seccomp_filtered => (
            format!(
                "blocked by a seccomp filter (io_uring_setup: {error}); container runtimes' \
                 default profiles do this"
            ),
            "allow io_uring_setup, io_uring_enter and io_uring_register in the seccomp \
             profile (docker/podman: --security-opt seccomp=PROFILE; systemd: keep @aio in \
             SystemCallFilter=)"
                .into(),
        ),
        (_, Some(libc::ENOSYS)) => (
            "the kernel has no io_uring (io_uring_setup: ENOSYS)".into(),
            "a kernel >= 5.8 built with CONFIG_IO_URING".into(),
        ),
        _ => (
            format!("io_uring_setup failed: {error}"),
            "look at dmesg and the container's security settings; ron needs io_uring".into(),
        ),
    }
}

pub(super) fn kernel() -> Finding {
    let needed = format!(">= {}.{} (glommio)", KERNEL_MIN.0, KERNEL_MIN.1);
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    match kernel_version(&release) {
        Some(v) if v >= KERNEL_MIN => Finding::ok("kernel", release, needed),
        _ => Finding {
            check: "kernel",
            verdict: Verdict::Fail,
            found: format!("Linux {release}"),
            needed,
            fix: "upgrade the kernel".into(),
        },
    }
}

/// `"6.1.0-13-amd64"` → `(6, 1)`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The locked-memory limit: this process's, or `unit`'s (`LimitMEMLOCK=`; a unit's
/// capabilities are not looked at).
pub(super) fn memlock(shards: u64, unit: Option<u64>) -> Finding {
    match unit {
        Some(soft) => memlock_verdict(soft, shards, false),
        None => {
            let soft = getrlimit(Resource::RLIMIT_MEMLOCK).map_or(0, |(soft, _)| soft);
            memlock_verdict(soft, shards, has_capability(CAP_IPC_LOCK_BIT))
        }
    }
}

fn memlock_verdict(soft: u64, shards: u64, cap_ipc_lock: bool) -> Finding {
    let full = shards.saturating_mul(REGISTERED_BYTES_PER_SHARD);
    let exempt = match cap_ipc_lock && (GLOMMIO_MEMLOCK_MIN_BYTES..full).contains(&soft) {
        true => ", not charged: CAP_IPC_LOCK",
        false => "",
    };
    let found = format!(
        "locked-memory limit {} (ulimit -l){exempt}",
        limit_text(soft)
    );
    let needed = format!(
        ">= {} to start a shard, {} for {shards} shard(s)' registered I/O buffers",
        size_text(GLOMMIO_MEMLOCK_MIN_BYTES),
        size_text(full)
    );
    let fix = "ulimit -l unlimited (shell), LimitMEMLOCK=infinity (systemd; ron.service \
               sets it), or a memlock line in /etc/security/limits.conf";
    let verdict = if soft < GLOMMIO_MEMLOCK_MIN_BYTES {
        Verdict::Fail
    } else if soft < full && !cap_ipc_lock {
        Verdict::Warn
    } else {
        Verdict::Ok
    };
    Finding {
        check: "memlock",
        verdict,
        found,
        needed,
        fix: if verdict == Verdict::Ok { "" } else { fix }.into(),
    }
}

/// `(floor, wanted)`: descriptors the node cannot start without (stores, caches, a few
/// connections per shard), and what the configured limits may use at once.
fn open_files_needed(config: &Config) -> (u64, u64) {
    let shards = u64::from(config.shard_count());
    let per_shard = config.open_files_max as u64 + fds_per_shard(config);
    let floor = shards * (per_shard + CONNECTIONS_FLOOR) + FDS_PER_PROCESS;
    let wanted = shards * (per_shard + u64::from(config.connections_max)) + process_fds(config);
    (floor, wanted)
}

/// Descriptors outside the shards: the process's own, and with `--p2p` every socket the
/// DHT's connection limits allow (`ron_dht::node::DHT_FDS_MAX`), so that the shards'
/// connections, sized within the limit, never take the DHT's (nor its dials theirs).
/// Not part of the floor: a DHT short of sockets fails dials and refuses peers, it does
/// not stop the node.
fn process_fds(config: &Config) -> u64 {
    let dht = match config.p2p {
        Some(_) => ron_dht::node::DHT_FDS_MAX,
        None => 0,
    };
    FDS_PER_PROCESS + dht
}

/// Lifts the soft open-files limit to what the configuration may use, at most to the
/// hard limit. `ron serve` only; `ron doctor` reports what it finds.
pub fn raise_open_files(config: &Config) {
    let (_, wanted) = open_files_needed(config);
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < wanted {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, wanted.min(hard), hard);
        }
    }
}

/// The connections per shard the open-files limit leaves room for, after the stores,
/// object-file caches and the process's own descriptors: `connections_max`, lowered if
/// need be (logged), so that a flood of connections waits in the kernel backlog instead
/// of exhausting descriptors the admin port, the stores and uploads need. Call after
/// [`raise_open_files`]; never below the preflight's floor.
pub fn connections_within_open_files(config: &Config) -> u32 {
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(u64::MAX, |(soft, _)| soft);
    let shards = u64::from(config.shard_count()).max(1);
    let fixed =
        shards * (config.open_files_max as u64 + fds_per_shard(config)) + process_fds(config);
    let budget = (soft.saturating_sub(fixed) / shards).max(CONNECTIONS_FLOOR);
    let allowed = u64::from(config.connections_max).min(budget) as u32;
    if allowed < config.connections_max {
        tracing::warn!(
            connections_max = config.connections_max,
            open_files = soft,
            allowed,
            "the open-files limit leaves room for fewer connections per shard than connections_max; raise it (LimitNOFILE) to allow more"
        );
    }
    allowed
}

/// The open-files limit: this process's, or `unit`'s (`LimitNOFILE=`).
pub(super) fn open_files(config: &Config, unit: Option<(u64, u64)>) -> Finding {
    let (soft, hard) = unit.unwrap_or_else(|| getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((0, 0)));
    open_files_verdict(soft, hard, open_files_needed(config), config)
}

/// Whether the unit's user can write the data dir (the doctor itself may be root).
pub(super) fn data_dir_for(unit: &super::UnitLimits, dir: &Path) -> Finding {
    let user = unit.user.as_deref().unwrap_or("root");
    let needed = format!("{user} can write {}", dir.display());
    if let Some(why) = unit.sandbox_refuses(dir) {
        return Finding {
            check: "dir owner",
            verdict: Verdict::Fail,
            found: why,
            needed,
            fix: format!(
                "systemctl edit ron: [Service] ReadWritePaths={} (and chown -R {user}: it)",
                dir.display()
            ),
        };
    }
    if unit.manages(dir) {
        let found = format!("systemd gives it to {user} at each start (StateDirectory=)");
        return Finding::ok("dir owner", found, &needed);
    }
    match super::unit::user_can_write(user, dir) {
        Some(Ok(())) => Finding::ok("dir owner", format!("{user} can write it"), &needed),
        Some(Err(why)) => Finding {
            check: "dir owner",
            verdict: Verdict::Fail,
            found: why,
            needed,
            fix: format!(
                "chown -R {user}: {} (ron.service: StateDirectory=ron does it at start)",
                dir.display()
            ),
        },
        None => Finding {
            check: "dir owner",
            verdict: Verdict::Warn,
            found: format!("no user {user} on this system"),
            needed,
            fix: "install the package (it creates the ron user) or set User= to an existing user"
                .into(),
        },
    }
}

fn open_files_verdict(soft: u64, hard: u64, needs: (u64, u64), config: &Config) -> Finding {
    let (floor, wanted) = needs;
    let usable = soft.max(hard.min(wanted));
    let verdict = match usable {
        n if n < floor => Verdict::Fail,
        n if n < wanted => Verdict::Warn,
        _ => Verdict::Ok,
    };
    let found = format!(
        "open-files limit {} soft, {} hard (ulimit -n)",
        limit_text_count(soft),
        limit_text_count(hard)
    );
    let needed = format!(
        "{wanted} = {} shard(s) x (connections_max {} + open_files_max {} + {} for uploads \
         and the rest) + {FDS_PER_PROCESS}; at least {floor}",
        config.shard_count(),
        config.connections_max,
        config.open_files_max,
        fds_per_shard(config),
    );
    let fix = match verdict {
        Verdict::Ok => String::new(),
        _ => format!(
            "ulimit -n {wanted} (raise the hard limit), LimitNOFILE={wanted} (systemd), or a \
             lower connections_max; past the limit, new connections are refused"
        ),
    };
    Finding {
        check: "open files",
        verdict,
        found,
        needed,
        fix,
    }
}

/// The CPUs this process may run on, in order (shards are pinned to them in turn).
pub fn allowed_cpus() -> Vec<usize> {
    use nix::sched::{sched_getaffinity, CpuSet};
    use nix::unistd::Pid;
    let Ok(set) = sched_getaffinity(Pid::from_raw(0)) else {
        return Vec::new();
    };
    (0..CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .collect()
}

pub(super) fn cpus(shards: u64) -> Finding {
    let cpus = allowed_cpus();
    let found = format!("{} CPU(s) in the affinity mask {cpus:?}", cpus.len());
    let needed = format!("one per shard ({shards})");
    if (cpus.len() as u64) >= shards {
        return Finding::ok("cpus", found, needed);
    }
    Finding {
        check: "cpus",
        verdict: Verdict::Warn,
        found,
        needed,
        fix: format!(
            "--shards {} (shards pinned to one CPU take turns), or widen the mask (taskset, \
             systemd CPUAffinity=)",
            cpus.len().max(1)
        ),
    }
}

pub(super) fn data_dir(dir: &Path) -> Finding {
    let needed = "a writable directory on a disk filesystem with O_DIRECT";
    if let Err(e) = probe::write_probe(dir) {
        if probe::is_out_of_space(&e) {
            // A node that filled its disk still serves what it holds (MinIO does the
            // same); refused, a restart took every read away with it.
            return Finding {
                check: "data dir",
                verdict: Verdict::Warn,
                found: format!("{} is full: {e}", dir.display()),
                needed: needed.into(),
                fix: "make room: until then uploads are refused 507, reads are served".into(),
            };
        }
        return Finding {
            check: "data dir",
            verdict: Verdict::Fail,
            found: format!("cannot write {}: {e}", dir.display()),
            needed: needed.into(),
            fix: "create it and give the user running ron write access (ron.service: \
                  StateDirectory=ron)"
                .into(),
        };
    }
    let fs = probe::filesystem_name(dir);
    let direct = probe::supports_o_direct(dir);
    let found = format!("{} on {fs}, O_DIRECT {}", dir.display(), yes_no(direct));
    let warning = match (fs, direct) {
        ("tmpfs", _) => Some("tmpfs keeps objects in memory: all are lost at reboot"),
        (_, false) => Some("without O_DIRECT every disk read goes through the page cache"),
        _ => None,
    };
    match warning {
        None => Finding::ok("data dir", found, needed),
        Some(why) => Finding {
            check: "data dir",
            verdict: Verdict::Warn,
            found,
            needed: needed.into(),
            fix: format!("{why}; use ext4 or xfs on a local disk"),
        },
    }
}

pub(super) fn free_space(dir: &Path) -> Finding {
    let needed = format!("more than {} free", size_text(FREE_BYTES_LOW));
    let Some((free, total)) = probe::space(dir) else {
        return Finding::ok("free space", "unknown".into(), needed);
    };
    let found = format!("{} free of {}", size_text(free), size_text(total));
    if free > FREE_BYTES_LOW {
        return Finding::ok("free space", found, needed);
    }
    Finding {
        check: "free space",
        verdict: Verdict::Warn,
        found,
        needed,
        fix: "free space or move data_dir: uploads are refused when the disk is full".into(),
    }
}

pub(super) fn congestion_control() -> Finding {
    congestion_verdict(
        read_trimmed("/proc/sys/net/ipv4/tcp_congestion_control").as_deref(),
        read_trimmed("/proc/sys/net/core/default_qdisc").as_deref(),
    )
}

/// BBR suits public nodes, and paces best through the fq qdisc: without it TCP paces
/// each socket itself on high-resolution timers (a short packet behind a full one waits
/// on one: docs/design/zero-copy-sends.md; dear in a VM, where arming a timer is an
/// exit).
fn congestion_verdict(control: Option<&str>, default_qdisc: Option<&str>) -> Finding {
    let control = control.unwrap_or("unknown");
    let qdisc = default_qdisc.unwrap_or("unknown");
    let found = format!("{control}, default qdisc {qdisc}");
    let needed = "any; bbr (with the fq qdisc to pace it) suits public nodes on long or \
                  lossy paths";
    let fix = match (control.starts_with("bbr"), qdisc == "fq") {
        (true, true) => return Finding::ok("congestion", found, needed),
        (true, false) => {
            "sysctl -w net.core.default_qdisc=fq, then tc qdisc replace dev <device> root \
             fq (the default applies to devices set up after it): without fq each BBR \
             socket paces itself on timers"
        }
        (false, _) => {
            "modprobe tcp_bbr; sysctl -w net.core.default_qdisc=fq \
             net.ipv4.tcp_congestion_control=bbr"
        }
    };
    Finding {
        check: "congestion",
        verdict: Verdict::Note,
        found,
        needed: needed.into(),
        fix: fix.into(),
    }
}

pub(super) fn listen_backlog() -> Finding {
    let somaxconn = read_trimmed("/proc/sys/net/core/somaxconn").and_then(|v| v.parse().ok());
    listen_backlog_verdict(somaxconn)
}

/// The kernel caps every listener's backlog at `net.core.somaxconn` (128 before Linux
/// 5.4): the connections past `connections_max` wait there, and a burst past it has its
/// SYNs dropped (clients retry after a second or more).
fn listen_backlog_verdict(somaxconn: Option<u64>) -> Finding {
    let wanted = crate::limits::LISTEN_BACKLOG as u64;
    let needed = format!("net.core.somaxconn ≥ {wanted}, the backlog each listener asks for");
    let Some(cap) = somaxconn else {
        return Finding {
            check: "backlog",
            verdict: Verdict::Note,
            found: "net.core.somaxconn unreadable".into(),
            needed,
            fix: format!("sysctl -w net.core.somaxconn={wanted}"),
        };
    };
    let found = format!("net.core.somaxconn {cap}");
    if cap >= wanted {
        return Finding::ok("backlog", found, needed);
    }
    Finding {
        check: "backlog",
        verdict: Verdict::Note,
        found: format!("{found}: each listener's backlog is cut to {cap}"),
        needed,
        fix: format!(
            "sysctl -w net.core.somaxconn={wanted} (persist in /etc/sysctl.d/): a burst of \
             connections past connections_max otherwise has its SYNs dropped"
        ),
    }
}

/// Whether the verified cache's memfd arenas are made of 2 MiB folios: a `sendfile` of
/// a large body then references one folio per 2 MiB instead of one page per 4 KiB
/// (docs/design/zero-copy-sends.md). Asked of the kernel with a small test arena made as
/// the shards make theirs (Linux 6.1+ collapses it whatever `shmem_enabled` says short
/// of `deny`; older kernels need `advise`).
pub(super) fn shmem_huge_pages() -> Finding {
    let setting = read_trimmed("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
    let mode = setting.as_deref().and_then(selected_mode);
    let probe = ron_shards::arena::huge_bytes_of_a_fresh_arena(HUGE_PAGE_PROBE_BYTES);
    shmem_huge_pages_verdict(mode, probe.ok())
}

/// The test arena `ron doctor` makes: two huge pages.
const HUGE_PAGE_PROBE_BYTES: usize = 4 << 20;

fn shmem_huge_pages_verdict(mode: Option<&str>, huge_bytes: Option<u64>) -> Finding {
    let needed = "the verified cache's arenas in 2 MiB folios";
    let mode = mode.unwrap_or("absent: no transparent huge pages");
    let probe = HUGE_PAGE_PROBE_BYTES as u64;
    let found = match huge_bytes {
        Some(huge) => format!(
            "{} of {} MiB of a test arena in 2 MiB folios (shmem_enabled {mode})",
            huge >> 20,
            probe >> 20
        ),
        None => format!("no test arena could be made (shmem_enabled {mode})"),
    };
    if huge_bytes == Some(probe) {
        return Finding::ok("huge pages", found, needed);
    }
    Finding {
        check: "huge pages",
        verdict: Verdict::Note,
        found,
        needed: needed.into(),
        fix: "echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled \
              (zero-copy sends of cached bodies then cost less CPU; docs/PERF.md)"
            .into(),
    }
}

/// The bracketed choice of a sysfs multiple-choice setting: `never` in
/// `always within_size advise [never] deny force`.
fn selected_mode(setting: &str) -> Option<&str> {
    setting
        .split_whitespace()
        .find_map(|word| word.strip_prefix('[')?.strip_suffix(']'))
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// A field of `/proc/self/status` (`Seccomp`, `CapEff`).
fn proc_status_field(name: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim().to_string())
    })
}

fn has_capability(bit: u32) -> bool {
    proc_status_field("CapEff")
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .is_some_and(|caps| caps & (1 << bit) != 0)
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn limit_text(bytes: u64) -> String {
    match bytes {
        RLIM_INFINITY => "unlimited".into(),
        n => size_text(n),
    }
}

fn limit_text_count(n: u64) -> String {
    match n {
        RLIM_INFINITY => "unlimited".into(),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno(e: i32) -> std::io::Error {
        std::io::Error::from_raw_os_error(e)
    }

    #[test]
    fn io_uring_refusals_name_the_cause_and_the_fix() {
        let (found, fix) = io_uring_refusal(&errno(libc::EPERM), Some("2"), false);
        assert_eq!(found, "disabled by sysctl kernel.io_uring_disabled=2");
        assert!(fix.starts_with("sysctl -w kernel.io_uring_disabled=0"));
        let (found, _) = io_uring_refusal(&errno(libc::EPERM), Some("1"), false);
        assert!(found.contains("kernel.io_uring_group"));
        let (found, fix) = io_uring_refusal(&errno(libc::EPERM), Some("0"), true);
        assert!(found.starts_with("blocked by a seccomp filter"), "{found}");
        assert!(fix.contains("--security-opt seccomp="));
        let (found, _) = io_uring_refusal(&errno(libc::ENOSYS), None, false);
        assert!(found.contains("no io_uring"));
    }

    #[test]
    fn huge_pages_are_a_note_with_the_fix_unless_the_test_arena_has_them() {
        let modes = "always within_size advise [never] deny force";
        assert_eq!(selected_mode(modes), Some("never"));
        assert_eq!(selected_mode("[advise] never"), Some("advise"));
        assert_eq!(selected_mode("no brackets"), None);
        let small = shmem_huge_pages_verdict(Some("deny"), Some(0));
        assert_eq!(small.verdict, Verdict::Note);
        assert_eq!(
            small.found,
            "0 of 4 MiB of a test arena in 2 MiB folios (shmem_enabled deny)"
        );
        assert!(small
            .fix
            .starts_with("echo advise > /sys/kernel/mm/transparent_hugepage/"));
        let none = shmem_huge_pages_verdict(None, None);
        assert_eq!(none.verdict, Verdict::Note);
        assert_eq!(
            none.found,
            "no test arena could be made (shmem_enabled absent: no transparent huge pages)"
        );
        let huge = shmem_huge_pages_verdict(Some("never"), Some(4 << 20));
        assert_eq!(huge.verdict, Verdict::Ok);
        assert_eq!(
            huge.found,
            "4 of 4 MiB of a test arena in 2 MiB folios (shmem_enabled never)"
        );
    }

    #[test]
    fn bbr_is_fine_with_fq_and_a_note_with_the_fix_otherwise() {
        let paced = congestion_verdict(Some("bbr"), Some("fq"));
        assert_eq!(paced.verdict, Verdict::Ok);
        assert_eq!(paced.found, "bbr, default qdisc fq");
        let in_socket = congestion_verdict(Some("bbr"), Some("pfifo_fast"));
        assert_eq!(in_socket.verdict, Verdict::Note);
        assert_eq!(in_socket.found, "bbr, default qdisc pfifo_fast");
        assert!(in_socket
            .fix
            .starts_with("sysctl -w net.core.default_qdisc=fq, then tc"));
        let cubic = congestion_verdict(Some("cubic"), Some("fq_codel"));
        assert_eq!(cubic.verdict, Verdict::Note);
        assert!(cubic.fix.starts_with("modprobe tcp_bbr;"), "{}", cubic.fix);
        let unread = congestion_verdict(None, None);
        assert_eq!(unread.found, "unknown, default qdisc unknown");
        assert_eq!(unread.verdict, Verdict::Note);
    }

    #[test]
    fn a_listen_backlog_capped_below_ours_is_a_note_with_the_fix() {
        assert_eq!(listen_backlog_verdict(Some(4096)).verdict, Verdict::Ok);
        let capped = listen_backlog_verdict(Some(128));
        assert_eq!(capped.verdict, Verdict::Note);
        assert_eq!(
            capped.found,
            "net.core.somaxconn 128: each listener's backlog is cut to 128"
        );
        assert!(capped.fix.starts_with("sysctl -w net.core.somaxconn=4096"));
        assert_eq!(listen_backlog_verdict(None).verdict, Verdict::Note);
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.1.0-13-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("5.4.0"), Some((5, 4)));
        assert_eq!(kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(kernel_version("garbage"), None);
        assert!((5, 4) < KERNEL_MIN && (5, 8) >= KERNEL_MIN && (6, 0) >= KERNEL_MIN);
    }

    #[test]
    fn memlock_fails_below_glommios_floor_and_warns_below_registered_buffers() {
        let f = memlock_verdict(64 * KIB, 2, false);
        assert_eq!(f.verdict, Verdict::Fail);
        assert_eq!(
            f.to_string(),
            "memlock: locked-memory limit 64 KiB (ulimit -l); needed >= 512 KiB to start a \
             shard, 60 MiB for 2 shard(s)' registered I/O buffers; fix: ulimit -l unlimited \
             (shell), LimitMEMLOCK=infinity (systemd; ron.service sets it), or a memlock \
             line in /etc/security/limits.conf"
        );
        assert_eq!(memlock_verdict(8 * MIB, 2, false).verdict, Verdict::Warn);
        assert_eq!(memlock_verdict(8 * MIB, 2, true).verdict, Verdict::Ok);
        assert_eq!(
            memlock_verdict(RLIM_INFINITY, 64, false).verdict,
            Verdict::Ok
        );
    }

    #[test]
    fn open_files_counts_connections_stores_and_caches() {
        let config = Config {
            shards: 2,
            ..Config::default()
        };
        let (floor, wanted) = open_files_needed(&config);
        let per_shard = config.open_files_max as u64 + fds_per_shard(&config);
        assert_eq!(fds_per_shard(&config), 32 + 32 * 2, "one data dir");
        assert_eq!(
            wanted,
            2 * (per_shard + u64::from(config.connections_max)) + FDS_PER_PROCESS
        );
        assert!(floor < wanted);
        let verdict = |soft, hard| open_files_verdict(soft, hard, (floor, wanted), &config);
        assert_eq!(verdict(1024, 1024).verdict, Verdict::Fail);
        assert_eq!(verdict(1024, RLIM_INFINITY).verdict, Verdict::Ok);
        assert_eq!(verdict(floor, floor).verdict, Verdict::Warn);
        assert!(verdict(floor, floor).fix.contains("LimitNOFILE="));
        assert_eq!(verdict(wanted, wanted).verdict, Verdict::Ok);

        // A node in the DHT needs room for every socket its connection limits allow.
        let in_dht = Config {
            p2p: Some("127.0.0.1:4001".parse().unwrap()),
            ..config
        };
        let (floor_dht, wanted_dht) = open_files_needed(&in_dht);
        assert_eq!(wanted_dht, wanted + ron_dht::node::DHT_FDS_MAX);
        assert_eq!(floor_dht, floor);
        assert_eq!(ron_dht::node::DHT_FDS_MAX, 1 + 512 + 64 + 512 + 128 * 8 + 2);
    }

    #[test]
    fn sizes_read_as_an_operator_writes_them() {
        assert_eq!(size_text(512 * KIB), "512 KiB");
        assert_eq!(size_text(60 * MIB), "60 MiB");
        assert_eq!(size_text(3 * GIB), "3 GiB");
        assert_eq!(limit_text(RLIM_INFINITY), "unlimited");
    }
}
