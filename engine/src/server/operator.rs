//! An operator's requests about a shard's storage, sent by the admin server through the
//! shard's inbox and taken at its clock's tick: pause or resume the scrubber, and check
//! one object now (`ron repair`), answered on the request's own channel.

use std::rc::Rc;

use ron_codec::Address;
use ron_link::link::{ObjectCheckReport, ToShard};
use ron_shards::scrub::ObjectCheck;
use ron_shards::{Shard, ShardError};

/// An operator's request about this shard's storage (from the admin server).
pub(super) fn operator_request(shard: &Rc<Shard>, message: ToShard) {
    match message {
        ToShard::PauseScrub(paused) => shard.pause_scrub(paused),
        ToShard::CheckObject { addr, reply } => {
            let shard = Rc::clone(shard);
            glommio::spawn_local(async move {
                let checked = shard.check_object(&Address::from_bytes(addr)).await;
                let _ = reply.try_send(check_report(checked));
            })
            .detach();
        }
        ToShard::Policy(_) | ToShard::Shares(_) => {}
    }
}

fn check_report(checked: Result<ObjectCheck, ShardError>) -> ObjectCheckReport {
    match checked {
        Ok(check) => ObjectCheckReport {
            outcome: match (check.bad_blocks, check.unrepairable_blocks()) {
                (0, _) => "healthy",
                (_, 0) => "repaired",
                _ => "damaged",
            },
            protected: check.protected,
            blocks_checked: check.blocks_checked,
            bytes_checked: check.bytes_checked,
            bad_blocks: check.bad_blocks,
            repaired_blocks: check.repaired_blocks,
            repaired_bytes: check.repaired_bytes,
            unrepairable_blocks: check.unrepairable_blocks(),
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
