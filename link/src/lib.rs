//! # ron-link — what a shard and the control thread say to each other
//!
//! ## What it owns
//! The vocabulary shared by the two kinds of thread, and nothing that runs:
//! - [`link`]: the two bounded mailboxes per shard. Down: a reloaded [`policy::Policy`]
//!   and the shard's quota shares. Up: quota demand and refusals, and a copy of the
//!   shard's latency histograms.
//! - [`policy`]: write tokens, configured tenants and their limits, who a request is
//!   charged to ([`policy::Tenant`]), and the quota words both sides use; the policy
//!   also carries the node's denylist (`ron_codec::denylist`).
//! - [`requests`]: what a request is for counting (protocol, op, status, refusal
//!   reason) and [`requests::RequestCounters`], one shard's table of answered requests.
//! - [`counters`]: the rest of a shard's counters, by who writes them —
//!   [`counters::StorageCounters`] (ron-shards) and [`counters::FrontCounters`]
//!   (ron-engine) — each declared once with its Prometheus family, their snapshots, the
//!   read-through's failure reasons ([`counters::FetchFailure`]), and
//!   [`counters::ShardCounters`], one shard's set.
//! - [`families`]: how a group of counters is declared (`declare_counters!`: the atomic
//!   struct, its snapshot, `snapshot()` and the families, from one line per counter) and
//!   what a family is ([`families::Family`]: name, kind, help, how shards are shown).
//! - [`latency`]: request latency as HDR histograms per protocol and op.
//!
//! ## Invariants
//! - A shard never waits on the control thread: it takes its inbox's messages when a
//!   message put in wakes it (and on each tick of its clock), and `try_send`s its report
//!   on a timer tick; a full mailbox drops the message (the next tick sends a fresher
//!   one).
//! - Counters are written only by the shard that owns them (relaxed atomics); the
//!   control thread only reads them.
//! - What crosses a mailbox is checked by its sender before the write and by its
//!   receiver after the read ([`link`]): a policy is whole
//!   ([`policy::Policy::assert_valid`]) and its versions never go back, a quota share is
//!   in (0, 1], quota demand is a finite number ≥ 0.
//!
//! ## Data flow
//! control thread ── `ToShard::{Policy, Shares}` ──▶ shard (admission installs them)
//! shard ── `ShardReport { demand, quota_rejections, latency, .. }` ──▶ control thread
//! shard ── `ShardCounters` (storage, front, requests: atomics read at scrape) ──▶ control thread

pub mod counters;
pub mod dht;
pub mod families;
mod labels;
pub mod latency;
pub mod link;
pub mod policy;
pub mod requests;
