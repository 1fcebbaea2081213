//! The cross-shard mesh: a request/reply protocol over glommio's full channel mesh.
//!
//! A shard that is not an object's owner asks the owner for the object's metadata, for
//! one verified group, or to commit a staged upload. Each request carries an id; the
//! owner answers on the same mesh and the asker completes the waiting future. Channels
//! are bounded (`MESH_CHANNEL_LEN`); receiver tasks never block on a send (handlers run
//! in their own tasks), so requests and replies sharing a channel cannot deadlock.
//!
//! The mesh does not know the shard: [`Mesh::serve`] takes a [`MeshHandler`] that turns
//! a [`MeshOp`] into a [`MeshReply`]; the mesh sends the answer back and completes the
//! asker's future itself. What it carries ([`ObjectMeta`], [`StagedObject`],
//! [`CommitOutcome`]) lives in modules that do not import the mesh.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::future::BoxedLocal;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use glommio::channels::local_channel::{self, LocalSender};
use ron_codec::tree::GroupIndex;
use ron_codec::{Address, ErrorCode};

use crate::commit::CommitOutcome;
use crate::error::ShardError;
use crate::layout::ShardIndex;
use crate::metrics::ShardMetrics;
use crate::record::ObjectMeta;
use crate::upload::StagedObject;

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

/// What the owner side of the mesh runs for each request it receives.
pub type MeshHandler = Rc<dyn Fn(MeshOp) -> BoxedLocal<Result<MeshReply, ShardError>>>;

/// An error as it crosses the mesh: its taxonomy entry and its message.
#[derive(Debug, Clone)]
pub struct RemoteError {
    pub code: ErrorCode,
    pub message: String,
}

impl From<ShardError> for RemoteError {
    fn from(e: ShardError) -> RemoteError {
        RemoteError {
            code: e.code(),
            message: e.to_string(),
        }
    }
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

    /// Spawns one task per peer that receives its requests and replies: a reply
    /// completes the waiting [`Mesh::call`]; a request runs `handler` in its own task
    /// and its result is sent back to the asker. Call once; later calls do nothing.
    pub fn serve(self: Rc<Self>, handler: MeshHandler) {
        let Some(mut receivers) = self.receivers.borrow_mut().take() else {
            return;
        };
        for (_peer, stream) in receivers.streams() {
            let mesh = Rc::clone(&self);
            let handler = Rc::clone(&handler);
            glommio::spawn_local(async move {
                while let Some(message) = stream.recv().await {
                    match message {
                        MeshMessage::Reply { id, result } => mesh.complete(id, result),
                        MeshMessage::Request { from, id, op } => {
                            let answer = handler(op);
                            let mesh = Rc::clone(&mesh);
                            glommio::spawn_local(async move {
                                let result = answer.await.map_err(RemoteError::from);
                                mesh.reply_to(from, id, result).await;
                            })
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
