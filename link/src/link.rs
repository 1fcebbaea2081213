//! The two bounded mailboxes between each shard and the control thread. A shard never
//! waits on either: it takes what its inbox holds when its [`InboxBell`] rings (each
//! message put in but the periodic quota shares rings it, so an operator's request is
//! taken at once, not on the next tick) and on every tick of its clock, and `try_send`s
//! its report on a timer tick ([`REPORT_PERIOD_MS`]), off the request path; a full
//! mailbox drops the message (the next tick sends a fresher one).
//!
//! - control → shard: a reloaded [`Policy`] (the shard installs its own copy, so no
//!   reference count is shared across cores), and the shard's quota shares.
//! - shard → control: quota demand, quota refusals, and, when it changed, a copy of the
//!   shard's latency histograms.
//!
//! Both ends check what crosses (`assert!`: once per reload or period, never per
//! request), the sender before the write and the receiver after the read: a policy is
//! whole ([`Policy::assert_valid`]) and its versions along a shard's mailbox never go
//! back; a quota share is in (0, 1]; quota demand is a finite number ≥ 0.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;

use crate::latency::LatencySet;
use crate::policy::{Demand, Exhausted, Policy, QuotaKey};

/// How often a shard looks at its inbox and reports.
pub const REPORT_PERIOD_MS: u64 = crate::policy::REBALANCE_PERIOD_MS;
/// How often a shard sends its latency histograms (when they changed).
pub const LATENCY_PUBLISH_PERIOD_MS: u64 = 1_000;
/// Reports waiting per shard for the control thread.
const MAILBOX_LEN: usize = 8;
/// Messages waiting in one shard's inbox: one operator request from each admin
/// connection (at most 64 at once, each waiting for its answer before it sends
/// another) and the control thread's. Past it a message is refused at once (503).
pub const INBOX_LEN: usize = 80;

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
    /// Remove this node's copy of one object this shard owns and withdraw its DHT record
    /// (`ron rm`, `POST /admin/remove/b3:<hex>`), and answer on `reply` (the admin
    /// thread waits for it).
    RemoveObject {
        addr: [u8; 32],
        reply: SyncSender<RemovalReport>,
    },
    /// The TLS certificate and key new handshakes present (a rotation, loaded and
    /// checked by the control thread).
    Certificate(Arc<rustls::sign::CertifiedKey>),
    /// Addresses the denylist blocked and no longer does (at most
    /// [`REANNOUNCE_BATCH_KEYS`]): their DHT records were withdrawn when they were
    /// blocked, so those this node keeps are announced again (sent to one shard, which
    /// asks each address's owner).
    Reannounce(Vec<[u8; 32]>),
}

/// Addresses in one [`ToShard::Reannounce`].
pub const REANNOUNCE_BATCH_KEYS: usize = 16_384;

impl ToShard {
    /// Whether the shard takes it at once rather than on its next tick: everything but
    /// the quota shares, which the control thread sends each rebalance period (four
    /// times a second) whether or not they changed — ringing for them woke every idle
    /// shard four times a second.
    pub fn wakes_the_shard(&self) -> bool {
        !matches!(self, ToShard::Shares(_))
    }

    /// What a message to a shard holds (see the module's invariants).
    fn assert_valid(&self) {
        match self {
            ToShard::Policy(policy) => policy.assert_valid(),
            ToShard::Reannounce(keys) => assert!(keys.len() <= REANNOUNCE_BATCH_KEYS),
            ToShard::Shares(shares) => {
                for &(key, share) in shares {
                    assert!(
                        share > 0.0 && share <= 1.0,
                        "link invariant: a quota share is in (0, 1], not {share} (quota key {})",
                        key.0
                    );
                }
            }
            ToShard::Certificate(identity) => assert!(
                !identity.cert.is_empty(),
                "link invariant: a certificate sent to a shard has a chain"
            ),
            ToShard::PauseScrub(_) | ToShard::CheckObject { .. } | ToShard::RemoveObject { .. } => {
            }
        }
    }
}

/// The policy versions along one shard's mailbox never go back: `last` is the latest
/// version sent (or taken), `policy` the next.
fn assert_policy_follows(last: &Cell<u64>, policy: &Policy) {
    assert!(
        policy.version >= last.get(),
        "link invariant: the policy versions along a shard's mailbox never go back (v{} after v{})",
        policy.version,
        last.get()
    );
    last.set(policy.version);
}

/// What a check of one object found (`POST /admin/repair/b3:<hex>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ObjectCheckReport {
    /// `healthy`, `repaired` (every bad block rebuilt and written back), `unrepaired`
    /// (bad blocks left on disk, but every byte of the object rebuilds verified: the
    /// write-back failed, or a parity block fails its recorded checksum), `damaged` (data
    /// lost from this copy: no parity, or more bad blocks than it covers), `not_found`,
    /// `busy` (the shard runs as many operator checks as it may; see `error`), or
    /// `failed` (the check itself could not run; see `error`).
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
    /// Data blocks that neither read good nor rebuild (`damaged` when not 0).
    pub lost_blocks: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What removing one object's copy did (`POST /admin/remove/b3:<hex>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemovalReport {
    /// The copy is gone (durably) and its DHT record withdrawn.
    Removed,
    /// This node holds no copy.
    NotFound,
    /// A commit, eviction or repair of it is under way; ask again.
    Busy(String),
    /// The removal could not run: why.
    Failed(String),
}

/// Senders to every shard's inbox, for the admin threads' operator requests. A full
/// inbox refuses the message at once (never waits).
#[derive(Debug, Clone)]
pub struct Mailboxes {
    to_shards: Vec<Inbox>,
}

impl Mailboxes {
    pub fn shard_count(&self) -> usize {
        self.to_shards.len()
    }

    /// Whether the message reached the shard's inbox.
    pub fn send(&self, shard: usize, message: ToShard) -> bool {
        message.assert_valid();
        self.to_shards
            .get(shard)
            .is_some_and(|inbox| inbox.put(message))
    }
}

/// The sending end of one shard's inbox: a message put in rings the shard's bell.
#[derive(Debug, Clone)]
struct Inbox {
    messages: SyncSender<ToShard>,
    bell: Arc<InboxBell>,
}

impl Inbox {
    /// Whether `message` was queued (never waits); the shard is woken if it was and
    /// the message asks for it ([`ToShard::wakes_the_shard`]).
    fn put(&self, message: ToShard) -> bool {
        let wakes = message.wakes_the_shard();
        let queued = self.messages.try_send(message).is_ok();
        if queued && wakes {
            self.bell.ring();
        }
        queued
    }
}

/// How a message wakes its shard, whatever the shard's clock is sleeping on: the sender
/// queues the message, then sets the flag and wakes the registered task; the shard
/// registers, then takes the flag. Either the shard's look finds the flag set, or the
/// sender finds the shard's waker registered and wakes it.
#[derive(Debug, Default)]
pub struct InboxBell {
    rung: AtomicBool,
    waker: AtomicWaker,
}

impl InboxBell {
    fn ring(&self) {
        self.rung.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once a message was put in since the last time it was.
    fn poll_rung(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.waker.register(cx.waker());
        if self.rung.swap(false, Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
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

impl ShardReport {
    /// What a report holds: demand the control thread can split by (see the module's
    /// invariants).
    fn assert_valid(&self) {
        for d in &self.demand {
            let finite = |x: f64| x.is_finite() && x >= 0.0;
            assert!(
                finite(d.requests) && finite(d.bytes),
                "link invariant: quota demand is a finite number ≥ 0, not {} requests and {} bytes (shard {})",
                d.requests,
                d.bytes,
                self.shard
            );
        }
    }
}

/// A shard's end.
#[derive(Debug)]
pub struct ShardLink {
    pub shard: usize,
    inbox: Receiver<ToShard>,
    bell: Arc<InboxBell>,
    reports: SyncSender<ShardReport>,
    /// The version of the latest policy taken from the inbox.
    policy_taken: Cell<u64>,
}

impl ShardLink {
    /// The next message, if any (never waits).
    pub fn poll(&self) -> Option<ToShard> {
        let message = self.inbox.try_recv().ok()?;
        message.assert_valid();
        if let ToShard::Policy(policy) = &message {
            assert_policy_follows(&self.policy_taken, policy);
        }
        Some(message)
    }

    /// Returns once a message was put in the inbox since the last time it did (then
    /// [`ShardLink::poll`] takes it). One task of the shard waits on it at a time.
    pub async fn message_put(&self) {
        std::future::poll_fn(|cx| self.bell.poll_rung(cx)).await
    }

    /// Sends a report unless the mailbox is full (never waits).
    pub fn report(&self, report: ShardReport) {
        report.assert_valid();
        let _ = self.reports.try_send(report);
    }
}

/// The control thread's end.
#[derive(Debug)]
pub struct ControlLink {
    to_shards: Vec<Inbox>,
    reports: Receiver<ShardReport>,
    /// Per shard, the version of the latest policy sent.
    policy_sent: Vec<Cell<u64>>,
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

    /// Puts `message` in the shard's inbox; `false` when the inbox is full (or the shard
    /// gone): the caller decides whether it must be sent again.
    pub fn send(&self, shard: usize, message: ToShard) -> bool {
        message.assert_valid();
        if let (ToShard::Policy(policy), Some(sent)) = (&message, self.policy_sent.get(shard)) {
            assert_policy_follows(sent, policy);
        }
        self.to_shards
            .get(shard)
            .is_some_and(|inbox| inbox.put(message))
    }

    /// Every report waiting now.
    pub fn drain(&self) -> Vec<ShardReport> {
        self.reports
            .try_iter()
            .inspect(ShardReport::assert_valid)
            .collect()
    }
}

/// One mailbox pair per shard.
pub fn links(shards: usize) -> (ControlLink, Vec<ShardLink>) {
    let (report_tx, reports) = mpsc::sync_channel(MAILBOX_LEN * shards.max(1));
    let mut to_shards = Vec::with_capacity(shards);
    let mut ends = Vec::with_capacity(shards);
    for shard in 0..shards {
        let (messages, inbox) = mpsc::sync_channel(INBOX_LEN);
        let bell = Arc::new(InboxBell::default());
        to_shards.push(Inbox {
            messages,
            bell: Arc::clone(&bell),
        });
        ends.push(ShardLink {
            shard,
            inbox,
            bell,
            reports: report_tx.clone(),
            policy_taken: Cell::new(0),
        });
    }
    let policy_sent = (0..shards).map(|_| Cell::new(0)).collect();
    let control = ControlLink {
        to_shards,
        reports,
        policy_sent,
    };
    (control, ends)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::QuotaLimits;

    fn policy(version: u64) -> Arc<Policy> {
        let mut policy = Policy::new(&[], vec![], QuotaLimits::default());
        policy.version = version;
        Arc::new(policy)
    }

    fn demand(requests: f64) -> ShardReport {
        ShardReport {
            demand: vec![Demand {
                key: QuotaKey(7),
                requests,
                bytes: 0.0,
            }],
            ..ShardReport::default()
        }
    }

    #[test]
    fn what_is_in_range_crosses_both_ways() {
        let (control, shards) = links(1);
        control.send(0, ToShard::Policy(policy(2)));
        control.send(0, ToShard::Policy(policy(2))); // sent again to a shard behind
        control.send(0, ToShard::Shares(vec![(QuotaKey(7), 1.0)]));
        assert!(matches!(shards[0].poll(), Some(ToShard::Policy(p)) if p.version == 2));
        assert!(matches!(shards[0].poll(), Some(ToShard::Policy(p)) if p.version == 2));
        assert!(matches!(shards[0].poll(), Some(ToShard::Shares(s)) if s.len() == 1));
        shards[0].report(demand(3.0));
        assert_eq!(control.drain()[0].demand[0].requests, 3.0);
    }

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_message_put_in_wakes_the_shard_and_a_refused_one_does_not() {
        let (control, shards) = links(1);
        let mailboxes = control.mailboxes();
        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        assert!(shards[0].bell.poll_rung(&mut cx).is_pending());
        assert!(mailboxes.send(0, ToShard::PauseScrub(true)));
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "the waiting shard is woken"
        );
        assert!(shards[0].bell.poll_rung(&mut cx).is_ready());
        assert!(
            shards[0].bell.poll_rung(&mut cx).is_pending(),
            "once per ring"
        );
        assert!(matches!(shards[0].poll(), Some(ToShard::PauseScrub(true))));
        for _ in 0..INBOX_LEN {
            assert!(control.send(0, ToShard::PauseScrub(false)));
        }
        assert!(shards[0].bell.poll_rung(&mut cx).is_ready());
        assert!(!mailboxes.send(0, ToShard::PauseScrub(true)), "inbox full");
        assert!(shards[0].bell.poll_rung(&mut cx).is_pending());
        assert!(
            !mailboxes.send(1, ToShard::PauseScrub(true)),
            "no such shard"
        );
        while shards[0].poll().is_some() {}
        assert!(control.send(0, ToShard::Shares(Vec::new())));
        assert!(
            shards[0].bell.poll_rung(&mut cx).is_pending(),
            "quota shares wait for the shard's tick"
        );
    }

    #[test]
    #[should_panic(expected = "link invariant: a quota share is in (0, 1], not NaN")]
    fn a_share_out_of_range_is_not_sent() {
        let (control, _shards) = links(2);
        control.send(1, ToShard::Shares(vec![(QuotaKey(7), f64::NAN)]));
    }

    #[test]
    #[should_panic(
        expected = "link invariant: the policy versions along a shard's mailbox never go back (v2 after v3)"
    )]
    fn an_older_policy_is_not_sent() {
        let (control, _shards) = links(1);
        control.send(0, ToShard::Policy(policy(3)));
        control.send(0, ToShard::Policy(policy(2)));
    }

    #[test]
    #[should_panic(
        expected = "link invariant: the policy versions along a shard's mailbox never go back (v2 after v3)"
    )]
    fn a_shard_does_not_take_an_older_policy() {
        // The admin threads' senders keep no versions: the shard's check is the one left.
        let (control, shards) = links(1);
        let mailboxes = control.mailboxes();
        for version in [3, 2] {
            assert!(mailboxes.send(0, ToShard::Policy(policy(version))));
            shards[0].poll();
        }
    }

    #[test]
    #[should_panic(
        expected = "link invariant: quota demand is a finite number ≥ 0, not -1 requests"
    )]
    fn negative_demand_is_not_reported() {
        let (_control, shards) = links(1);
        shards[0].report(demand(-1.0));
    }
}
