//! `ron doctor --unit NAME`: check the host as a systemd unit would run the node, not as
//! the shell running the doctor. An operator runs the doctor as root (the packaged config
//! is `root:ron 0640`) or as themselves; neither has the unit's limits nor its user. The
//! unit file (and its drop-ins) says `User=`, `LimitNOFILE=` and `LimitMEMLOCK=`: the
//! limit checks use those, and the data dirs are checked for that user's write access
//! and against the unit's sandbox (`ProtectSystem=`, `ProtectHome=`, `ReadWritePaths=`):
//! a dir the sandbox leaves read-only is one the node cannot start on.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where unit files live, most specific first (a file in `/etc` overrides the package's).
const UNIT_DIRS: [&str; 3] = [
    "/etc/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];

/// What a unit sets that the checks depend on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitLimits {
    /// The unit file read (and its drop-ins after it).
    pub file: PathBuf,
    pub user: Option<String>,
    /// `LimitMEMLOCK=` (soft): bytes, `u64::MAX` for infinity.
    pub memlock: Option<u64>,
    /// `LimitNOFILE=` (soft, hard).
    pub nofile: Option<(u64, u64)>,
    /// `StateDirectory=`: directories under /var/lib systemd creates and hands to the
    /// unit's user at every start.
    pub state_dirs: Vec<String>,
    /// `ProtectSystem=` (`strict`, `full`, `yes`), as written.
    pub protect_system: Option<String>,
    /// `ProtectHome=` (`yes`, `read-only`, `tmpfs`), as written.
    pub protect_home: Option<String>,
    /// `PrivateTmp=yes`: the unit's /tmp and /var/tmp are its own, removed at its stop.
    pub private_tmp: bool,
    /// `ReadWritePaths=`: what stays writable under `ProtectSystem=` (every line adds,
    /// an empty one resets; a leading `-` or `+` is dropped).
    pub read_write_paths: Vec<PathBuf>,
}

impl UnitLimits {
    /// Reads unit `name` (`ron.service`, or a path to a unit file) and its drop-ins.
    pub fn read(name: &str) -> Result<UnitLimits, String> {
        let file = find_unit(name)?;
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("unit {}: {e}", file.display()))?;
        let mut limits = UnitLimits {
            file: file.clone(),
            ..UnitLimits::default()
        };
        limits.apply(&text)?;
        for drop_in in drop_ins(&file) {
            let text = std::fs::read_to_string(&drop_in)
                .map_err(|e| format!("unit drop-in {}: {e}", drop_in.display()))?;
            limits.apply(&text)?;
        }
        Ok(limits)
    }

    /// Applies the `[Service]` settings of one file (later files override).
    fn apply(&mut self, text: &str) -> Result<(), String> {
        let mut in_service = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_service = line == "[Service]";
                continue;
            }
            let Some((key, value)) = line.split_once('=').filter(|_| in_service) else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "User" => self.user = Some(value.to_string()).filter(|v| !v.is_empty()),
                "LimitMEMLOCK" => self.memlock = Some(parse_limit(value, true)?.0),
                "LimitNOFILE" => self.nofile = Some(parse_limit(value, false)?),
                "StateDirectory" => {
                    self.state_dirs = value.split_whitespace().map(String::from).collect()
                }
                "ProtectSystem" => self.protect_system = Some(value.to_string()),
                "ProtectHome" => self.protect_home = Some(value.to_string()),
                "PrivateTmp" => self.private_tmp = matches!(value, "yes" | "true" | "on" | "1"),
                "ReadWritePaths" if value.is_empty() => self.read_write_paths.clear(),
                "ReadWritePaths" => self.read_write_paths.extend(
                    value
                        .split_whitespace()
                        .map(|p| PathBuf::from(p.trim_start_matches(['-', '+']))),
                ),
                _ => {}
            }
        }
        Ok(())
    }

    /// One line saying how the checks below were made.
    pub fn describe(&self) -> String {
        let memlock = self.memlock.map_or("the doctor's own".into(), limit_word);
        let nofile = self
            .nofile
            .map_or("the doctor's own".into(), |(soft, hard)| {
                match soft == hard {
                    true => limit_word(soft),
                    false => format!("{}:{}", limit_word(soft), limit_word(hard)),
                }
            });
        format!(
            "checked as {} runs the node: User={}, LimitMEMLOCK={memlock}, LimitNOFILE={nofile}\n",
            self.file.display(),
            self.user.as_deref().unwrap_or("root")
        )
    }
}

fn limit_word(value: u64) -> String {
    match value {
        u64::MAX => "infinity".into(),
        n => n.to_string(),
    }
}

fn find_unit(name: &str) -> Result<PathBuf, String> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    UNIT_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("unit {name}: not found in {}", UNIT_DIRS.join(", ")))
}

/// `/etc/systemd/system/NAME.d/*.conf`, in name order.
fn drop_ins(unit: &Path) -> Vec<PathBuf> {
    let Some(name) = unit.file_name() else {
        return Vec::new();
    };
    let dir = Path::new(UNIT_DIRS[0]).join(format!("{}.d", name.to_string_lossy()));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    files.sort();
    files
}

/// `LimitX=` as systemd reads it: `N`, `SOFT:HARD`, `infinity`; sizes (memlock) take
/// K, M, G, T suffixes (powers of 1024).
fn parse_limit(value: &str, size: bool) -> Result<(u64, u64), String> {
    let one = |v: &str| -> Result<u64, String> {
        let v = v.trim();
        if v == "infinity" {
            return Ok(u64::MAX);
        }
        let (digits, scale) = match v.char_indices().last() {
            Some((at, unit @ ('K' | 'M' | 'G' | 'T'))) if size => {
                let shift = match unit {
                    'K' => 10,
                    'M' => 20,
                    'G' => 30,
                    _ => 40,
                };
                (&v[..at], 1u64 << shift)
            }
            _ => (v, 1),
        };
        digits
            .parse::<u64>()
            .map(|n| n.saturating_mul(scale))
            .map_err(|_| format!("a unit limit {value:?} that is not a number or infinity"))
    };
    match value.split_once(':') {
        Some((soft, hard)) => Ok((one(soft)?, one(hard)?)),
        None => {
            let n = one(value)?;
            Ok((n, n))
        }
    }
}

impl UnitLimits {
    /// Whether systemd hands `dir` to the unit's user at each start (`StateDirectory=`).
    pub fn manages(&self, dir: &Path) -> bool {
        self.state_dirs
            .iter()
            .any(|name| dir == Path::new("/var/lib").join(name))
    }

    /// Why the unit's sandbox leaves `dir` read-only or hidden to the node, if it does
    /// (systemd.exec(5): `ProtectSystem=strict` makes everything read-only but the
    /// unit's own dirs and `ReadWritePaths=`; `full` adds /etc to `yes`'s /usr, /boot
    /// and /efi; `ProtectHome=yes`/`tmpfs` hides /home, /root and /run/user, `read-only`
    /// leaves them to `ReadWritePaths=`; `PrivateTmp=yes` gives the unit a /tmp and
    /// /var/tmp removed at its stop).
    pub fn sandbox_refuses(&self, dir: &Path) -> Option<String> {
        let writable =
            self.manages(dir) || self.read_write_paths.iter().any(|p| dir.starts_with(p));
        let under = |roots: &[&str]| roots.iter().any(|r| dir.starts_with(r));
        let home = ["/home", "/root", "/run/user"];
        if self.private_tmp && under(&["/tmp", "/var/tmp"]) {
            return Some(
                "PrivateTmp=yes gives the node a /tmp and /var/tmp of its own, removed at every stop"
                    .into(),
            );
        }
        match self.protect_home.as_deref() {
            Some("yes" | "true" | "tmpfs") if under(&home) => {
                return Some(format!(
                    "ProtectHome={} hides it from the node",
                    self.protect_home.as_deref().unwrap_or_default()
                ))
            }
            Some("read-only") if under(&home) && !writable => {
                return Some("ProtectHome=read-only makes it read-only".into())
            }
            _ => {}
        }
        let read_only = match self.protect_system.as_deref() {
            Some("strict") => true,
            Some("full") => under(&["/usr", "/boot", "/efi", "/etc"]),
            Some("yes" | "true") => under(&["/usr", "/boot", "/efi"]),
            _ => false,
        };
        (read_only && !writable).then(|| {
            format!(
                "ProtectSystem={} makes it read-only for the node (not under StateDirectory= or ReadWritePaths=)",
                self.protect_system.as_deref().unwrap_or_default()
            )
        })
    }
}

/// Whether `user` may create files in `dir` (owner, group or other write bits), or —
/// when it does not exist yet — in the directory that would hold it. `None` when the
/// user is unknown to this system.
pub fn user_can_write(user: &str, dir: &Path) -> Option<Result<(), String>> {
    let account = nix::unistd::User::from_name(user).ok().flatten()?;
    let existing = dir.ancestors().find(|p| p.exists())?;
    let meta = std::fs::metadata(existing).ok()?;
    let (uid, gid) = (account.uid.as_raw(), account.gid.as_raw());
    let groups = nix::unistd::getgrouplist(&std::ffi::CString::new(user).ok()?, account.gid)
        .unwrap_or_default();
    let in_group = meta.gid() == gid || groups.iter().any(|g| g.as_raw() == meta.gid());
    let mode = meta.mode();
    let writable = uid == 0
        || (meta.uid() == uid && mode & 0o200 != 0)
        || (in_group && mode & 0o020 != 0)
        || mode & 0o002 != 0;
    Some(match writable {
        true => Ok(()),
        false => Err(format!(
            "{} is owned by uid {} gid {} mode {:o}: {user} cannot write it",
            existing.display(),
            meta.uid(),
            meta.gid(),
            mode & 0o7777
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_says_its_user_and_limits_and_drop_ins_override() {
        let mut limits = UnitLimits::default();
        limits
            .apply("[Unit]\nLimitNOFILE=1\n[Service]\nUser=ron\nLimitMEMLOCK=infinity\nLimitNOFILE=1048576\n")
            .unwrap();
        assert_eq!(limits.user.as_deref(), Some("ron"));
        assert_eq!(limits.memlock, Some(u64::MAX));
        assert_eq!(limits.nofile, Some((1_048_576, 1_048_576)));
        limits
            .apply("[Service]\nLimitNOFILE=4096:65536\nLimitMEMLOCK=64M\n")
            .unwrap();
        assert_eq!(limits.nofile, Some((4096, 65536)));
        assert_eq!(limits.memlock, Some(64 << 20));
        assert!(limits.apply("[Service]\nLimitNOFILE=lots\n").is_err());
        assert!(limits
            .describe()
            .contains("User=ron, LimitMEMLOCK=67108864, LimitNOFILE=4096:65536"));
    }

    #[test]
    fn the_sandbox_leaves_writable_only_the_state_dir_and_read_write_paths() {
        let mut unit = UnitLimits::default();
        unit.apply("[Service]\nProtectSystem=strict\nProtectHome=yes\nStateDirectory=ron\n")
            .unwrap();
        assert_eq!(unit.sandbox_refuses(Path::new("/var/lib/ron")), None);
        assert_eq!(
            unit.sandbox_refuses(Path::new("/srv/d0")).as_deref(),
            Some("ProtectSystem=strict makes it read-only for the node (not under StateDirectory= or ReadWritePaths=)")
        );
        assert_eq!(
            unit.sandbox_refuses(Path::new("/home/op/ron")).as_deref(),
            Some("ProtectHome=yes hides it from the node")
        );
        unit.apply("[Service]\nReadWritePaths=-/srv/d0 /srv/d1\nReadWritePaths=/mnt\n")
            .unwrap();
        for dir in ["/srv/d0", "/srv/d1/ron", "/mnt/disk2"] {
            assert_eq!(unit.sandbox_refuses(Path::new(dir)), None, "{dir}");
        }
        unit.apply("[Service]\nReadWritePaths=\n").unwrap();
        assert!(unit.sandbox_refuses(Path::new("/srv/d0")).is_some());
        let mut full = UnitLimits::default();
        full.apply("[Service]\nProtectSystem=full\n").unwrap();
        assert!(full.sandbox_refuses(Path::new("/etc/ron-data")).is_some());
        assert_eq!(full.sandbox_refuses(Path::new("/srv/d0")), None);
        let packaged = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/ron.service");
        let packaged = UnitLimits::read(packaged.to_str().unwrap()).unwrap();
        assert_eq!(packaged.sandbox_refuses(Path::new("/var/lib/ron")), None);
        for dir in ["/srv/d0", "/tmp/ron", "/home/op/ron"] {
            assert!(packaged.sandbox_refuses(Path::new(dir)).is_some(), "{dir}");
        }
    }

    #[test]
    fn the_packaged_unit_reads_as_the_doctor_expects() {
        let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/ron.service");
        let limits = UnitLimits::read(unit.to_str().unwrap()).unwrap();
        assert_eq!(limits.user.as_deref(), Some("ron"));
        assert_eq!(limits.memlock, Some(u64::MAX));
        assert_eq!(limits.nofile, Some((1_048_576, 1_048_576)));
    }
}
