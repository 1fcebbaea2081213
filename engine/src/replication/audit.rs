//! The audit of a holder's copy: asked over OAP/1 for its own kept copy only
//! (`"local":true,"kept":true`: never a read-through, and an evictable copy is not one the
//! placement can count on), one random 64 KiB group with its proof, verified against the
//! address as any peer fetch is ([`PeerGet`]). Counted in `ron_replica_audits_total`.
//! The one audit of the node: the sweep, `PUT ?copies=N`, and the admin thread's
//! `/admin/placement` and `/admin/replicate` (through the replication mailbox,
//! `Replication::start_audit`) all ask it.

use std::time::{Duration, Instant};

use ron_codec::tree::{group_count, GROUP_LEN_BYTES};
use ron_codec::Address;
use ron_link::dht::{AuditOutcome, DhtClient, Provider};
use ron_shards::lifecycle::finished_within;

use crate::fetch::peer::PeerGet;
use crate::fetch::{AttemptError, ReadThrough};

/// An audit's whole time, in stall timeouts: its connects, requests and groups (up to
/// two opens and a length proof) each within one stall, and all of it within this many.
/// A holder that trickles each frame within the stall timeout held an audit for about
/// seven, and a sweep batch waited on its slowest audit.
const AUDIT_STALLS_MAX: u32 = 3;

/// How long an audit waits on a holder, and the longest object it lets one claim.
#[derive(Debug, Clone, Copy)]
pub struct AuditLimits {
    /// Each read and write of the audit, and its connect.
    pub stall: Duration,
    /// When the object's length is not known here, the most a holder may say it is.
    pub len_max: u64,
}

impl AuditLimits {
    /// The read-through's: its stall timeout, and its object limit.
    pub fn of(read_through: &ReadThrough) -> AuditLimits {
        AuditLimits {
            stall: read_through.timeout(),
            len_max: read_through.object_bytes_max(),
        }
    }
}

/// Audits `holder`'s copy of `addr`: a random group of its own kept copy, verified. With
/// `len` (the object's length, when this node knows it) the group is picked at once;
/// without, group 0 comes first, saying the length, then a random one.
pub async fn audit_holder(
    dht: &DhtClient,
    holder: &Provider,
    addr: Address,
    len: Option<u64>,
    limits: AuditLimits,
) -> AuditOutcome {
    let within = limits.stall * AUDIT_STALLS_MAX;
    let outcome = match holder.oap {
        None => AuditOutcome::Failed("its OAP/1 address is not known".into()),
        Some(oap) => {
            let audit = audit_group(oap, &holder.node_id, addr, len, limits);
            match finished_within(within, audit).await {
                Some(Ok(group)) => AuditOutcome::Verified { group },
                Some(Err(e)) if PeerGet::says_not_held(&e) => AuditOutcome::Missing,
                Some(Err(e)) => AuditOutcome::Failed(e.to_string()),
                None => AuditOutcome::Failed(format!(
                    "no verified group within {} ms",
                    within.as_millis()
                )),
            }
        }
    };
    dht.metrics.count_audit(outcome.label());
    outcome
}

/// The group of the holder's copy that verified.
async fn audit_group(
    oap: std::net::SocketAddr,
    node_id: &str,
    addr: Address,
    len: Option<u64>,
    limits: AuditLimits,
) -> Result<u64, AttemptError> {
    let node = Some(node_id);
    let (len, proved) = match len {
        Some(len) => (len, None),
        None => {
            let first = PeerGet::open(oap, node, addr, 0, None, limits.len_max, limits.stall);
            (first.await?.total_len, Some(0))
        }
    };
    let groups = if len == 0 { 1 } else { group_count(len) };
    let group = random_below(groups, &addr);
    if proved != Some(group) {
        let len_max = len.max(GROUP_LEN_BYTES);
        PeerGet::open(oap, node, addr, group, Some(len), len_max, limits.stall).await?;
    }
    Ok(group)
}

/// A group index below `groups`, different from pass to pass and object to object.
pub(super) fn random_below(groups: u64, addr: &Address) -> u64 {
    use std::hash::BuildHasher;
    let seed = (Instant::now(), *addr.as_bytes());
    std::collections::hash_map::RandomState::new().hash_one(seed) % groups.max(1)
}
