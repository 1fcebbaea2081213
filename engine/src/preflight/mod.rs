//! Preflight: what the host must offer before a shard starts, checked once at
//! `ron serve` and printed in full by `ron doctor`.
//!
//! Every check yields one [`Finding`]: what was checked, the value found, the value
//! needed, and — when it is not fine — the fix in the operator's words (`ulimit -l`,
//! `LimitMEMLOCK=`, the sysctl, the seccomp note). A [`Verdict::Fail`] is something that
//! would stop a shard (glommio refuses or panics): `ron serve` prints those lines and
//! exits 1 before any thread starts. Warnings are logged at start and do not stop it.
//!
//! The checks read the host (rlimits, `/proc`, the data dir). They change two things:
//! the data dir is created if missing (as `serve` would; a probe file is written and
//! removed), and `serve` alone calls [`raise_open_files`] first, which lifts the soft
//! open-files limit towards what the configuration needs, up to the hard limit, as
//! nginx's `worker_rlimit_nofile` does.

mod checks;
mod probe;
mod unit;

use std::fmt;

use crate::config::Config;

pub use checks::{allowed_cpus, connections_within_open_files, raise_open_files};
pub use unit::UnitLimits;

/// How a finding bears on `ron serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fine.
    Ok,
    /// Worth knowing, nothing to fix (e.g. the congestion control in use).
    Note,
    /// The node runs, but below what the configuration asks for.
    Warn,
    /// A shard would not start: `ron serve` refuses.
    Fail,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Note => "note",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone)]
pub struct Finding {
    pub check: &'static str,
    pub verdict: Verdict,
    /// What is wrong (or what is there, when nothing is).
    pub found: String,
    pub needed: String,
    /// How to fix it; empty when nothing needs fixing.
    pub fix: String,
}

impl Finding {
    fn ok(check: &'static str, found: String, needed: impl Into<String>) -> Finding {
        Finding {
            check,
            verdict: Verdict::Ok,
            found,
            needed: needed.into(),
            fix: String::new(),
        }
    }
}

/// The one-line form: `check: found; needed …; fix: …`.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; needed {}", self.check, self.found, self.needed)?;
        if !self.fix.is_empty() {
            write!(f, "; fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// Every finding, in check order.
#[derive(Debug, Clone)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn failures(&self) -> impl Iterator<Item = &Finding> {
        self.of(Verdict::Fail)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.of(Verdict::Warn)
    }

    fn of(&self, verdict: Verdict) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.verdict == verdict)
    }

    /// `ron doctor`'s table: one row per check, the fix under a row that needs one.
    pub fn render(&self) -> String {
        let width = self
            .findings
            .iter()
            .map(|f| f.check.len())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for f in &self.findings {
            out.push_str(&format!(
                "{:<4}  {:<width$}  {} (needed: {})\n",
                f.verdict.label(),
                f.check,
                f.found,
                f.needed
            ));
            if !f.fix.is_empty() {
                out.push_str(&format!("      {:<width$}  fix: {}\n", "", f.fix));
            }
        }
        let (fails, warns) = (self.failures().count(), self.warnings().count());
        out.push_str(&match fails {
            0 => format!("ron serve would start ({warns} warning(s))\n"),
            n => format!("ron serve would refuse to start: {n} problem(s) above marked FAIL\n"),
        });
        out
    }
}

/// Runs every check against `config` on this host.
pub fn run(config: &Config) -> Report {
    run_as(config, None)
}

/// Runs every check as `unit` would run the node (its user and limits), or as this
/// process when there is none (`ron doctor --unit`).
pub fn run_as(config: &Config, unit: Option<&UnitLimits>) -> Report {
    let shards = u64::from(config.shard_count());
    let memlock = unit.and_then(|u| u.memlock);
    let nofile = unit.and_then(|u| u.nofile);
    let mut findings = vec![
        checks::config(config),
        checks::io_uring(),
        checks::kernel(),
        checks::memlock(shards, memlock),
        checks::open_files(config, nofile),
        checks::cpus(shards),
    ];
    for dir in &config.data_dirs {
        findings.push(checks::data_dir(dir));
        if let Some(unit) = unit {
            findings.push(checks::data_dir_for(unit, dir));
        }
        findings.push(checks::free_space(dir));
    }
    findings.push(checks::congestion_control());
    findings.push(checks::listen_backlog());
    findings.push(checks::shmem_huge_pages());
    Report { findings }
}
