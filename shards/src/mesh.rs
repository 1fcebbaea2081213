//! The cross-shard mesh: a request/reply protocol over glommio's full channel mesh.
//!
//! A shard that is not an object's owner asks the owner for the object's metadata, for
//! one verified group, or to commit a staged upload. Each request carries an id; the
//! owner answers on the same mesh and the asker completes the waiting future. Channels
//! are bounded (`MESH_CHANNEL_LEN`); receiver tasks never block on a send (handlers run
//! in their own tasks), so requests and replies sharing a channel cannot deadlock.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use glommio::channels::local_channel::{self, LocalSender};
use ron_codec::tree::GroupIndex;
use ron_codec::{Address, ErrorCode};

use crate::error::ShardError;
use crate::layout::ShardIndex;
use crate::metrics::ShardMetrics;
use crate::record::ObjectMeta;
use crate::shard::{CommitOutcome, Shard, StagedObject};

/// Messages in flight per channel (per ordered pair of shards).
pub const MESH_CHANNEL_LEN: usize = 1024;

pub type MeshBuilderFull = MeshBuilder<MeshMessage, Full>;

/// What one shard asks of an object's owner.
#[derive(Debug)]
pub enum MeshOp {
    Meta(Address),
    Group { addr: Address, group: GroupIndex },
    Commit(StagedObject),
}

#[derive(Debug)]
pub enum MeshReply {
    Meta(ObjectMeta),
    Group(Bytes),
    Committed(CommitOutcome),
}

/// An error as it crosses the mesh: its taxonomy entry and its message.
#[derive(Debug, Clone)]
pub struct RemoteError {
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Debug)]
pub enum MeshMessage {
    Request {
        from: u16,
        id: u64,
        op: MeshOp,
    },
    Reply {
        id: u64,
        result: Result<MeshReply, RemoteError>,
    },
}

/// One shard's end of the mesh.
pub struct Mesh {
    me: ShardIndex,
    senders: Senders<MeshMessage>,
    receivers: RefCell<Option<Receivers<MeshMessage>>>,
    /// Mesh peer id of each shard index.
    peer_of_shard: Vec<usize>,
    next_id: Cell<u64>,
    waiting: RefCell<HashMap<u64, LocalSender<Result<MeshReply, RemoteError>>>>,
    metrics: Arc<ShardMetrics>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// Start-up rendezvous: each shard publishes its mesh peer id under its shard index.
pub fn peer_directory(shards: u16) -> Arc<Vec<AtomicUsize>> {
    Arc::new((0..shards).map(|_| AtomicUsize::new(usize::MAX)).collect())
}

impl Mesh {
    /// Joins the mesh and waits until every shard has published its peer id.
    pub async fn join(
        builder: MeshBuilderFull,
        me: ShardIndex,
        directory: Arc<Vec<AtomicUsize>>,
        metrics: Arc<ShardMetrics>,
    ) -> Result<Mesh, ShardError> {
        let failed = |reason| ShardError::Mesh {
            shard: me.0,
            reason,
        };
        let (senders, receivers) = builder.join().await.map_err(|_| failed("join failed"))?;
        directory[usize::from(me.0)].store(senders.peer_id(), Ordering::Release);
        let peer_of_shard = loop {
            let ids: Vec<usize> = directory
                .iter()
                .map(|p| p.load(Ordering::Acquire))
                .collect();
            if ids.iter().all(|&p| p != usize::MAX) {
                break ids;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        };
        Ok(Mesh {
            me,
            senders,
            receivers: RefCell::new(Some(receivers)),
            peer_of_shard,
            next_id: Cell::new(0),
            waiting: RefCell::new(HashMap::new()),
            metrics,
        })
    }

    /// Sends `op` to `owner` and waits for its answer.
    pub async fn call(&self, owner: ShardIndex, op: MeshOp) -> Result<MeshReply, ShardError> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = local_channel::new_bounded(1);
        self.waiting.borrow_mut().insert(id, tx);
        ShardMetrics::add(&self.metrics.mesh_requests, 1);
        let request = MeshMessage::Request {
            from: self.me.0,
            id,
            op,
        };
        let peer = self.peer_of_shard[usize::from(owner.0)];
        if self.senders.send_to(peer, request).await.is_err() {
            self.waiting.borrow_mut().remove(&id);
            return Err(ShardError::Mesh {
                shard: owner.0,
                reason: "channel closed",
            });
        }
        match rx.recv().await {
            Some(Ok(reply)) => Ok(reply),
            Some(Err(e)) => Err(ShardError::Remote {
                shard: owner.0,
                code: e.code,
                message: e.message,
            }),
            None => Err(ShardError::Mesh {
                shard: owner.0,
                reason: "no reply",
            }),
        }
    }

    /// Spawns one task per peer that receives its requests and replies.
    pub fn serve(&self, shard: Rc<Shard>) {
        let Some(mut receivers) = self.receivers.borrow_mut().take() else {
            return;
        };
        for (_peer, stream) in receivers.streams() {
            let shard = Rc::clone(&shard);
            glommio::spawn_local(async move {
                while let Some(message) = stream.recv().await {
                    match message {
                        MeshMessage::Reply { id, result } => shard.mesh_reply(id, result),
                        MeshMessage::Request { from, id, op } => {
                            let shard = Rc::clone(&shard);
                            glommio::spawn_local(async move { shard.answer(from, id, op).await })
                                .detach();
                        }
                    }
                }
            })
            .detach();
        }
    }

    fn complete(&self, id: u64, result: Result<MeshReply, RemoteError>) {
        if let Some(waiter) = self.waiting.borrow_mut().remove(&id) {
            let _ = waiter.try_send(result);
        }
    }

    async fn reply_to(&self, shard: u16, id: u64, result: Result<MeshReply, RemoteError>) {
        let peer = self.peer_of_shard[usize::from(shard)];
        let _ = self
            .senders
            .send_to(peer, MeshMessage::Reply { id, result })
            .await;
    }
}

impl Shard {
    fn mesh_reply(&self, id: u64, result: Result<MeshReply, RemoteError>) {
        if let Some(mesh) = self.mesh_ref() {
            mesh.complete(id, result);
        }
    }

    async fn answer(&self, from: u16, id: u64, op: MeshOp) {
        let result = match op {
            MeshOp::Meta(addr) => self
                .meta(&addr)
                .await
                .map(|m| MeshReply::Meta((*m).clone())),
            MeshOp::Group { addr, group } => match self.meta(&addr).await {
                Ok(meta) => self.group(&meta, group).await.map(MeshReply::Group),
                Err(e) => Err(e),
            },
            MeshOp::Commit(staged) => self.commit_local(staged).await.map(MeshReply::Committed),
        };
        let result = result.map_err(|e| RemoteError {
            code: e.code(),
            message: e.to_string(),
        });
        if let Some(mesh) = self.mesh_ref() {
            mesh.reply_to(from, id, result).await;
        }
    }
}
