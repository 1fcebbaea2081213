//! What this shard answers other shards over the mesh (metadata, groups, commits,
//! forgetting evicted objects, and the read-through flights of objects it owns), and
//! what it asks of all of them.

use std::rc::Rc;

use ron_codec::Address;

use crate::error::ShardError;
use crate::ids::ShardIndex;
use crate::lifecycle::join_all;
use crate::mesh::{FlightHandler, FlightPart, MeshHandler, MeshOp, MeshReply, MESH_GROUPS_MAX};
use crate::record::ObjectMeta;
use crate::shard::state::{mesh_confused, Shard};
use ron_codec::tree::GroupIndex;

impl Shard {
    /// The owner side of the mesh: what this shard answers to another shard's request.
    async fn answer(self: &Rc<Self>, op: MeshOp) -> Result<MeshReply, ShardError> {
        match op {
            MeshOp::Meta(addr) => Ok(MeshReply::Meta((*self.meta(&addr).await?).clone())),
            MeshOp::Groups {
                addr,
                first,
                count,
                asked,
            } => {
                let meta = self.meta(&addr).await?;
                check_group_run(&meta, first, count, self.index())?;
                let groups = self.groups_asked(&meta, first, count, asked).await?;
                Ok(MeshReply::Groups(
                    groups.iter().map(|g| g.to_bytes()).collect(),
                ))
            }
            MeshOp::Commit(staged) => self.commit_local(staged).await.map(MeshReply::Committed),
            MeshOp::Forget(addrs) => {
                self.forget_metas(&addrs);
                Ok(MeshReply::Forgotten)
            }
            MeshOp::Remove(addr) => self.remove_local(&addr).await.map(MeshReply::Removed),
            MeshOp::Kept(addr) => self.is_kept_local(&addr).map(MeshReply::Kept),
            MeshOp::Flight { addr, from } => {
                let handler = self.flights.borrow().clone();
                let part = match handler {
                    Some(serve) => serve(addr, from).await,
                    None => FlightPart::Failed {
                        code: ron_codec::ErrorCode::NotFound,
                        message: ShardError::NotFound { addr }.to_string(),
                    },
                };
                Ok(MeshReply::Flight(part))
            }
        }
    }

    /// Gives the shard the read-through that answers other shards following a fetch of
    /// an object it owns.
    pub fn serve_flights(&self, handler: FlightHandler) {
        *self.flights.borrow_mut() = Some(handler);
    }

    /// Verified groups from group `from` on of the owner's read-through of `addr`.
    pub async fn follow_flight(
        &self,
        owner: ShardIndex,
        addr: Address,
        from: u64,
    ) -> Result<FlightPart, ShardError> {
        match self
            .mesh()?
            .call(owner, MeshOp::Flight { addr, from })
            .await?
        {
            MeshReply::Flight(part) => Ok(part),
            _ => Err(mesh_confused(owner)),
        }
    }

    /// Drops the metadata of `addrs` on every shard, this one first, and this (owner)
    /// shard's open files of them; returns once all have (a shard that cannot be asked
    /// has its cache healed by its next miss). An evicted copy's files held open would
    /// keep their disk space after the unlink, and — the object stored again under
    /// another rotation — hand a read the old file of a dir.
    pub(super) async fn forget_everywhere(&self, addrs: Vec<Address>) {
        self.forget_metas(&addrs);
        self.forget_files(&addrs);
        let Some(mesh) = &self.mesh else { return };
        let others = (0..self.routing.shard_count())
            .map(ShardIndex)
            .filter(|s| *s != self.index);
        let asks = others.map(|s| mesh.call(s, MeshOp::Forget(addrs.clone())));
        for answer in join_all(asks.collect()).await {
            if let Err(e) = answer {
                tracing::warn!(error = %e, "a shard did not forget evicted objects");
            }
        }
    }
}

/// The handler this shard gives its end of the mesh: each request runs
/// [`Shard::answer`]; the mesh sends the result back.
pub(super) fn mesh_handler(shard: &Rc<Shard>) -> MeshHandler {
    let shard = Rc::clone(shard);
    Rc::new(move |op| {
        let shard = Rc::clone(&shard);
        Box::pin(async move { shard.answer(op).await })
    })
}

/// A run of groups another shard may ask for: within the object and at most
/// [`MESH_GROUPS_MAX`] (a bug on the asking side must not make this shard read without
/// bound).
fn check_group_run(
    meta: &ObjectMeta,
    first: GroupIndex,
    count: u64,
    shard: ShardIndex,
) -> Result<(), ShardError> {
    let end = first.0.checked_add(count);
    let within = end.is_some_and(|end| end <= meta.tree.group_count());
    if count == 0 || count > MESH_GROUPS_MAX || !within {
        return Err(ShardError::Mesh {
            shard: shard.0,
            reason: "asked for groups past the object's end or too many at once",
        });
    }
    Ok(())
}
