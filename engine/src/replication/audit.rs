//! The audit of a holder's copy from a shard: asked over OAP/1 for its own kept copy only
//! (`"local":true,"kept":true`: never a read-through, and an evictable copy is not one the
//! placement can count on), one random 64 KiB group with its proof, verified against the
//! address as any peer fetch is ([`PeerGet`]). Counted in `ron_replica_audits_total`.
//! The sweep and `PUT ?copies=N` audit this way; the admin thread's `/admin/placement`
//! asks the same of a holder through the blocking client (`server/audit.rs`).

use std::time::{Duration, Instant};

use ron_codec::tree::{group_count, GROUP_LEN_BYTES};
use ron_codec::Address;
use ron_link::dht::{DhtClient, Provider};

use crate::fetch::peer::PeerGet;

/// Whether `holder` sends a random group of its own kept copy of `addr` (of `len`
/// bytes), verified, each read within `stall`.
pub async fn audit_holder(
    dht: &DhtClient,
    holder: &Provider,
    addr: Address,
    len: u64,
    stall: Duration,
) -> bool {
    let Some(oap) = holder.oap else {
        dht.metrics.count_audit("failed");
        return false;
    };
    let groups = if len == 0 { 1 } else { group_count(len) };
    let group = random_below(groups, &addr);
    let len_max = len.max(GROUP_LEN_BYTES);
    let node = Some(holder.node_id.as_str());
    let opened = PeerGet::open(oap, node, addr, group, Some(len), len_max, stall).await;
    let outcome = match &opened {
        Ok(_) => "verified",
        Err(e) if PeerGet::says_not_held(e) => "missing",
        Err(_) => "failed",
    };
    dht.metrics.count_audit(outcome);
    opened.is_ok()
}

/// A group index below `groups`, different from pass to pass and object to object.
pub(super) fn random_below(groups: u64, addr: &Address) -> u64 {
    use std::hash::BuildHasher;
    let seed = (Instant::now(), *addr.as_bytes());
    std::collections::hash_map::RandomState::new().hash_one(seed) % groups.max(1)
}
