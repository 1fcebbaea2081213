//! The two bounded mailboxes between each shard and the control thread. A shard never
//! waits on either: it polls its inbox and `try_send`s its report on a timer tick
//! ([`REPORT_PERIOD_MS`]), off the request path; a full mailbox drops the message
//! (the next tick sends a fresher one).
//!
//! - control → shard: a reloaded [`Policy`] (the shard installs its own copy, so no
//!   reference count is shared across cores), and the shard's quota shares.
//! - shard → control: quota demand, quota refusals, and, when it changed, a copy of the
//!   shard's latency histograms.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;

use crate::latency::LatencySet;
use crate::policy::{Demand, Exhausted, Policy, QuotaKey};

/// How often a shard looks at its inbox and reports.
pub const REPORT_PERIOD_MS: u64 = crate::policy::REBALANCE_PERIOD_MS;
/// How often a shard sends its latency histograms (when they changed).
pub const LATENCY_PUBLISH_PERIOD_MS: u64 = 1_000;
const MAILBOX_LEN: usize = 8;

/// What the control thread (or, for an operator's request, an admin thread) tells a
/// shard.
#[derive(Debug)]
pub enum ToShard {
    Policy(Arc<Policy>),
    /// This shard's share of each listed tenant's limits; others get `1/N`.
    Shares(Vec<(QuotaKey, f64)>),
    /// Pause (`true`) or resume the shard's scrubber.
    PauseScrub(bool),
    /// Read and check every block of one object this shard owns now, rebuild what its
    /// parity can, and answer on `reply` (`ron repair`; the admin thread waits for it).
    CheckObject {
        addr: [u8; 32],
        reply: SyncSender<ObjectCheckReport>,
    },
}

/// What a check of one object found (`POST /admin/repair/b3:<hex>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ObjectCheckReport {
    /// `healthy`, `repaired` (every bad block rebuilt and written back), `damaged`
    /// (bad blocks left: no parity, or more than it covers), `not_found`, or `failed`
    /// (the check itself could not run; see `error`).
    pub outcome: &'static str,
    /// Whether the object can be rebuilt: parity (a file of its own written with `--ec
    /// K+M`), or a packed object's copies in more than one lane.
    pub protected: bool,
    pub blocks_checked: u64,
    pub bytes_checked: u64,
    pub bad_blocks: u64,
    pub repaired_blocks: u64,
    pub repaired_bytes: u64,
    pub unrepairable_blocks: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Senders to every shard's inbox, for the admin threads' operator requests. A full
/// inbox refuses the message at once (never waits).
#[derive(Debug, Clone)]
pub struct Mailboxes {
    to_shards: Vec<SyncSender<ToShard>>,
}

impl Mailboxes {
    pub fn shard_count(&self) -> usize {
        self.to_shards.len()
    }

    /// Whether the message reached the shard's inbox.
    pub fn send(&self, shard: usize, message: ToShard) -> bool {
        self.to_shards
            .get(shard)
            .is_some_and(|tx| tx.try_send(message).is_ok())
    }
}

/// What a shard tells the control thread each period.
#[derive(Debug, Default)]
pub struct ShardReport {
    pub shard: usize,
    pub demand: Vec<Demand>,
    /// Refusals so far: (tenant label, bucket, count).
    pub quota_rejections: Vec<(String, Exhausted, u64)>,
    pub tenants_tracked: usize,
    pub latency: Option<Box<LatencySet>>,
    /// The policy version the shard enforces.
    pub policy_version: u64,
}

/// A shard's end.
#[derive(Debug)]
pub struct ShardLink {
    pub shard: usize,
    inbox: Receiver<ToShard>,
    reports: SyncSender<ShardReport>,
}

impl ShardLink {
    /// The next message, if any (never waits).
    pub fn poll(&self) -> Option<ToShard> {
        self.inbox.try_recv().ok()
    }

    /// Sends a report unless the mailbox is full (never waits).
    pub fn report(&self, report: ShardReport) {
        let _ = self.reports.try_send(report);
    }
}

/// The control thread's end.
#[derive(Debug)]
pub struct ControlLink {
    to_shards: Vec<SyncSender<ToShard>>,
    reports: Receiver<ShardReport>,
}

impl ControlLink {
    pub fn shard_count(&self) -> usize {
        self.to_shards.len()
    }

    /// Senders to the shards' inboxes, for the admin threads.
    pub fn mailboxes(&self) -> Mailboxes {
        Mailboxes {
            to_shards: self.to_shards.clone(),
        }
    }

    pub fn send(&self, shard: usize, message: ToShard) {
        if let Some(tx) = self.to_shards.get(shard) {
            let _ = tx.try_send(message);
        }
    }

    /// Every report waiting now.
    pub fn drain(&self) -> Vec<ShardReport> {
        self.reports.try_iter().collect()
    }
}

/// One mailbox pair per shard.
pub fn links(shards: usize) -> (ControlLink, Vec<ShardLink>) {
    let (report_tx, reports) = mpsc::sync_channel(MAILBOX_LEN * shards.max(1));
    let mut to_shards = Vec::with_capacity(shards);
    let mut ends = Vec::with_capacity(shards);
    for shard in 0..shards {
        let (tx, inbox) = mpsc::sync_channel(MAILBOX_LEN);
        to_shards.push(tx);
        ends.push(ShardLink {
            shard,
            inbox,
            reports: report_tx.clone(),
        });
    }
    (ControlLink { to_shards, reports }, ends)
}
