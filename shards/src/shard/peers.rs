//! What this shard answers other shards over the mesh (metadata, groups, commits,
//! forgetting evicted objects, and the read-through flights of objects it owns), and
//! what it asks of all of them.

use std::rc::Rc;

use ron_codec::Address;

use crate::error::ShardError;
use crate::ids::ShardIndex;
use crate::lifecycle::join_all;
use crate::mesh::{FlightHandler, FlightPart, MeshHandler, MeshOp, MeshReply};
use crate::shard::state::{mesh_confused, Shard};

impl Shard {
    /// The owner side of the mesh: what this shard answers to another shard's request.
    async fn answer(self: &Rc<Self>, op: MeshOp) -> Result<MeshReply, ShardError> {
        match op {
            MeshOp::Meta(addr) => Ok(MeshReply::Meta((*self.meta(&addr).await?).clone())),
            MeshOp::Group { addr, group } => {
                let meta = self.meta(&addr).await?;
                let group = self.group(&meta, group).await?;
                Ok(MeshReply::Group(group.to_bytes()))
            }
            MeshOp::Commit(staged) => self.commit_local(staged).await.map(MeshReply::Committed),
            MeshOp::Forget(addrs) => {
                self.forget_metas(&addrs);
                Ok(MeshReply::Forgotten)
            }
            MeshOp::Remove(addr) => self.remove_local(&addr).await.map(MeshReply::Removed),
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

    /// Drops the metadata of `addrs` on every shard, this one first; returns once all
    /// have (a shard that cannot be asked has its cache healed by its next miss).
    pub(super) async fn forget_everywhere(&self, addrs: Vec<Address>) {
        self.forget_metas(&addrs);
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
