//! An operator's requests about a shard's storage, sent by the admin server through the
//! shard's inbox and taken at its clock's tick: pause or resume the scrubber, check one
//! object now (`ron repair`) or remove this node's copy of one (`ron rm`), each answered
//! on the request's own channel, a new policy's
//! denylist (installed; the control thread withdraws what it newly blocks by name from
//! the DHT), and a rotated TLS certificate (new handshakes present it).

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use ron_codec::Address;
use ron_codec::ErrorCode;
use ron_io::tls::ReloadableCert;
use ron_link::dht::DhtClient;
use ron_link::link::{ObjectCheckReport, RemovalReport, ToShard};
use ron_shards::scrub::ObjectCheck;
use ron_shards::{Shard, ShardError};

use crate::blocked::Blocked;
use crate::refusal::Refusal;
use crate::service::remove_copy;

/// Operator checks (`ron repair`) a shard runs at once, of different objects (the
/// operator inbox holds as many requests). Each reads a whole object unpaced and goes on
/// after its answer's 60 s wait ends: a second check of an object already being checked
/// — a client retrying on 504 — is answered 503 `busy`, as is one past this count;
/// before, retries stacked reads of the same large object without bound.
pub(super) const OPERATOR_CHECKS_MAX: usize = 8;

/// The objects a shard's operator checks are reading now.
pub(super) type ChecksRunning = Rc<RefCell<HashSet<Address>>>;

/// What an operator's request may act on.
pub(super) struct Operated<'a> {
    pub shard: &'a Rc<Shard>,
    /// Operator checks running on this shard (at most [`OPERATOR_CHECKS_MAX`]).
    pub checks_running: &'a ChecksRunning,
    pub blocked: &'a Rc<Blocked>,
    pub dht: Option<&'a DhtClient>,
    /// The shard's TLS certificate, when it has a TLS listener.
    pub certificate: Option<&'a ReloadableCert>,
}

/// An operator's request about this shard's storage (from the admin server).
pub(super) fn operator_request(on: &Operated<'_>, message: ToShard) {
    let shard = on.shard;
    match message {
        ToShard::Policy(policy) => on.blocked.install(&policy.denylist),
        ToShard::PauseScrub(paused) => shard.pause_scrub(paused),
        ToShard::CheckObject { addr, reply } => {
            let addr = Address::from_bytes(addr);
            if let Some(busy) = check_refused(&on.checks_running.borrow(), &addr) {
                let _ = reply.try_send(busy);
                return;
            }
            on.checks_running.borrow_mut().insert(addr);
            let (shard, running) = (Rc::clone(shard), Rc::clone(on.checks_running));
            glommio::spawn_local(async move {
                let checked = shard.check_object(&addr).await;
                running.borrow_mut().remove(&addr);
                let _ = reply.try_send(check_report(checked));
            })
            .detach();
        }
        ToShard::RemoveObject { addr, reply } => {
            let (shard, dht) = (Rc::clone(shard), on.dht.cloned());
            glommio::spawn_local(async move {
                let addr = Address::from_bytes(addr);
                let removed = remove_copy(&shard, dht.as_ref(), &addr).await;
                let _ = reply.try_send(removal_report(removed));
            })
            .detach();
        }
        ToShard::Certificate(identity) => {
            if let Some(certificate) = on.certificate {
                certificate.install(identity);
            }
        }
        ToShard::Reannounce(keys) => {
            if let Some(dht) = on.dht.cloned() {
                let (shard, blocked) = (Rc::clone(shard), Rc::clone(on.blocked));
                glommio::spawn_local(reannounce_held(shard, dht, blocked, keys)).detach();
            }
        }
        ToShard::Shares(_) => {}
    }
}

/// Announces again those of `keys` (addresses the denylist no longer blocked) that this
/// node holds — any copy, as the start's walk announces — each asked of its owner
/// shard; waits while the DHT's mailbox is full. The denylist is asked again right
/// before each send: a list that blocked one of them again meanwhile has had its
/// withdrawal sent first (the DHT's mailbox keeps order), and must not be followed by
/// an announcement.
async fn reannounce_held(
    shard: Rc<Shard>,
    dht: DhtClient,
    blocked: Rc<Blocked>,
    keys: Vec<[u8; 32]>,
) {
    let mut held = Vec::new();
    for key in keys {
        if shard.meta(&Address::from_bytes(key)).await.is_ok() {
            held.push(key);
        }
        glommio::yield_if_needed().await;
    }
    let count = held.len();
    loop {
        held.retain(|key| !blocked.blocks(&Address::from_bytes(*key)));
        if held.is_empty() {
            break;
        }
        match dht.try_announce(held) {
            Some(Ok(())) => break,
            Some(Err(back)) => held = back,
            None => return,
        }
        glommio::timer::sleep(std::time::Duration::from_millis(REANNOUNCE_RETRY_MS)).await;
    }
    if count > 0 {
        tracing::info!(
            objects = count,
            "denylist: unblocked objects this node holds announced again"
        );
    }
}

/// How long a re-announcement waits for room in the DHT's mailbox before trying again.
const REANNOUNCE_RETRY_MS: u64 = 100;

/// The `busy` answer to a check of `addr` while `running` are being checked, if it is
/// refused.
fn check_refused(running: &HashSet<Address>, addr: &Address) -> Option<ObjectCheckReport> {
    let why = if running.contains(addr) {
        format!("{addr} is already being checked; its report comes to the request that started it, its repairs show in ron_ec_repair_bytes_total")
    } else if running.len() >= OPERATOR_CHECKS_MAX {
        format!(
            "this shard is already running {} checks (at most {OPERATOR_CHECKS_MAX} at once); ask again once one has ended",
            running.len()
        )
    } else {
        return None;
    };
    Some(ObjectCheckReport {
        outcome: "busy",
        error: Some(why),
        ..ObjectCheckReport::default()
    })
}

fn check_report(checked: Result<ObjectCheck, ShardError>) -> ObjectCheckReport {
    match checked {
        Ok(check) => ObjectCheckReport {
            outcome: match (check.bad_blocks, check.unrepairable_blocks()) {
                (0, _) => "healthy",
                (_, 0) => "repaired",
                _ if check.is_whole() => "unrepaired",
                _ => "damaged",
            },
            protected: check.protected,
            blocks_checked: check.blocks_checked,
            bytes_checked: check.bytes_checked,
            bad_blocks: check.bad_blocks,
            repaired_blocks: check.repaired_blocks,
            repaired_bytes: check.repaired_bytes,
            unrepairable_blocks: check.unrepairable_blocks(),
            lost_blocks: check.lost_blocks,
            error: None,
        },
        Err(ShardError::NotFound { .. }) => ObjectCheckReport {
            outcome: "not_found",
            ..ObjectCheckReport::default()
        },
        Err(e) => ObjectCheckReport {
            outcome: "failed",
            error: Some(e.to_string()),
            ..ObjectCheckReport::default()
        },
    }
}

fn removal_report(removed: Result<(), Refusal>) -> RemovalReport {
    match removed {
        Ok(()) => RemovalReport::Removed,
        Err(refusal) if refusal.code() == ErrorCode::NotFound => RemovalReport::NotFound,
        Err(refusal @ Refusal::RemoveBusy { .. }) => RemovalReport::Busy(refusal.to_string()),
        Err(refusal) => RemovalReport::Failed(refusal.to_string()),
    }
}
