//! Reads the `*.deny` files of `denylist_dir` into one denylist (`ron_codec::denylist`
//! parses; this reads the files, in name order, and logs what it skipped). Run at start
//! and by the control thread at each reload, never on a shard.

use std::path::Path;

use ron_codec::denylist::{Denylist, DenylistBuilder, DenylistReport};
use ron_control::reload::deny_files;

use super::ConfigError;

/// Largest `*.deny` file read (a list of 4 million rules is about 300 MB of text).
const FILE_BYTES_MAX: u64 = 512 << 20;

/// The denylist of `dir`'s `*.deny` files, read in name order.
pub(super) fn load(dir: &Path) -> Result<Denylist, ConfigError> {
    let refuse = |reason: String| ConfigError::Denylist {
        dir: dir.to_path_buf(),
        reason,
    };
    // A read the system failed (not a file refused for its size or encoding).
    let unreadable = |e: std::io::Error, reason: String| match e.kind() {
        std::io::ErrorKind::Other => refuse(reason),
        _ => ConfigError::DenylistUnreadable {
            dir: dir.to_path_buf(),
            reason,
        },
    };
    let mut builder = DenylistBuilder::default();
    let files = deny_files(dir).map_err(|e| {
        let reason = e.to_string();
        unreadable(e, reason)
    })?;
    for file in files {
        let name = file
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let text = read_bounded(&file).map_err(|e| {
            let reason = format!("{name}: {e}");
            unreadable(e, reason)
        })?;
        builder
            .add_file(&name, &text)
            .map_err(|e| refuse(e.to_string()))?;
    }
    let (list, report) = builder.finish();
    log_report(dir, &report);
    Ok(list)
}

fn read_bounded(file: &Path) -> std::io::Result<String> {
    let len = std::fs::metadata(file)?.len();
    if len > FILE_BYTES_MAX {
        return Err(std::io::Error::other(format!(
            "{len} bytes; a denylist file is at most {FILE_BYTES_MAX}"
        )));
    }
    let bytes = std::fs::read(file)?;
    String::from_utf8(bytes).map_err(|_| std::io::Error::other("not UTF-8"))
}

fn log_report(dir: &Path, report: &DenylistReport) {
    for problem in &report.problems {
        tracing::warn!(
            dir = %dir.display(),
            file = %problem.file,
            line = problem.line,
            reason = problem.reason,
            "denylist line not understood; skipped"
        );
    }
    tracing::info!(
        dir = %dir.display(),
        files = report.files,
        rules = report.rules,
        foreign = report.foreign,
        skipped = report.problems_total,
        "denylist read"
    );
}
