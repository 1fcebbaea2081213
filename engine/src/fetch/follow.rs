//! One upstream fetch per object per node: the object's owner shard leads it.
//!
//! A miss on a shard that does not own the object starts a local flight (its own
//! requests coalesce on it, as on any shard) whose task does not go upstream: it asks
//! the owner for the owner's flight, group after group (`MeshOp::Flight`). The owner
//! joins its fetch of the object (starting it if none runs), waits for the groups asked
//! for, and answers with what its window holds from there; or `Stored` (read it from the
//! store: the whole object from an origin, or a follower that fell behind the owner's
//! window), or the failure every waiter gets. Groups cross the mesh as the same
//! immutable `Bytes` the owner verified against the address through their proofs; the
//! follower has no chunk tree to check them again until the object is stored, when
//! reads take the verified store path.

use std::rc::Rc;
use std::time::Instant;

use ron_codec::tree::group_count;
use ron_codec::Address;
use ron_shards::{FlightPart, ShardIndex};

use super::{Failure, Flight, GroupAt, Outcome, ReadThrough};
use crate::refusal::Refusal;

/// Most groups in one answer to a follower (1 MiB).
pub const FOLLOW_GROUPS_MAX: usize = 16;

impl ReadThrough {
    /// A follower's flight task: mirrors the owner's flight into `flight`, then ends it
    /// as the owner's ended.
    pub(super) async fn follow(&self, owner: ShardIndex, flight: Rc<Flight>) {
        let followed = self.stop.unless_stopped(self.follow_owner(owner, &flight));
        let outcome = followed.await.unwrap_or(Outcome::Failed(Failure::Stopping));
        // Out of the table first, as for a fetch: the next request starts anew.
        self.leave_table(&flight);
        flight.finish(outcome);
    }

    async fn follow_owner(&self, owner: ShardIndex, flight: &Flight) -> Outcome {
        let mut next = 0u64;
        loop {
            let part = match self.shard.follow_flight(owner, flight.addr, next).await {
                Ok(part) => part,
                Err(e) => {
                    return Outcome::Failed(Failure::NoVerifiedCopy {
                        tried: 1,
                        last: Rc::from(format!("the owner shard {}: {e}", owner.0)),
                    })
                }
            };
            match part {
                FlightPart::Stored => return Outcome::Stored,
                FlightPart::Failed { code, message } => {
                    return Outcome::Failed(Failure::Owner {
                        shard: owner.0,
                        code,
                        message: Rc::from(message),
                    })
                }
                FlightPart::Open {
                    len,
                    content_type,
                    groups,
                } => {
                    if next == 0 {
                        flight.set_head(len, Rc::from(content_type));
                    }
                    if groups.is_empty() {
                        return Outcome::Failed(Failure::NoVerifiedCopy {
                            tried: 1,
                            last: Rc::from(format!("the owner shard {} sent no group", owner.0)),
                        });
                    }
                    next += groups.len() as u64;
                    for group in groups {
                        flight.push(group);
                    }
                }
            }
        }
    }

    /// The owner's answer to a follower asking for groups `from..` of `addr`.
    pub async fn serve_flight(self: &Rc<Self>, addr: Address, from: u64) -> FlightPart {
        let under_way = self.flights.borrow().get(&addr).cloned();
        let flight = match under_way {
            // A follower's later asks: the fetch it joined, not counted again.
            Some(flight) if from > 0 => flight,
            _ if self.shard.meta(&addr).await.is_ok() => return FlightPart::Stored,
            None if from > 0 => {
                return FlightPart::Failed {
                    code: ron_codec::ErrorCode::BadGateway,
                    message: format!("the read-through of {addr} ended without storing it"),
                }
            }
            _ => match self.join(addr) {
                Ok(flight) => flight,
                Err(refusal) => return refused(&refusal),
            },
        };
        let timeout = self.timeout();
        let deadline = Instant::now() + timeout;
        let (len, content_type) = match flight.wait_open(deadline, timeout.as_millis() as u64).await
        {
            Ok(Some(head)) => head,
            Ok(None) => return FlightPart::Stored,
            Err(refusal) => return refused(&refusal),
        };
        let groups = if len == 0 { 0 } else { group_count(len) };
        if from >= groups {
            return match flight.wait_stored().await {
                Ok(()) => FlightPart::Stored,
                Err(refusal) => refused(&refusal),
            };
        }
        match flight.group(from).await {
            Ok(GroupAt::Here(_)) => FlightPart::Open {
                len,
                content_type: content_type.to_string(),
                groups: flight.window_from(from, FOLLOW_GROUPS_MAX),
            },
            Ok(GroupAt::Stored) => FlightPart::Stored,
            Err(refusal) => refused(&refusal),
        }
    }
}

fn refused(refusal: &Refusal) -> FlightPart {
    FlightPart::Failed {
        code: refusal.code(),
        message: refusal.to_string(),
    }
}
