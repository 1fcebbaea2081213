//! The cross-shard mesh: a request/reply protocol over a full mesh of glommio shared
//! channels, one bounded single-producer channel per ordered pair of shards.
//!
//! The channels are made together by [`mesh_ends`] on the thread that starts the
//! shards, and each shard's ends ([`MeshEnds`]) are moved onto its thread and connected
//! there by [`Mesh::join`]. Each channel half is owned by exactly one thread from then
//! on. (glommio's own `MeshBuilder` shares one non-atomic `Rc` among clones sent to every
//! shard thread; clones dropped by two shards at once corrupted the heap.)
//!
//! A shard that is not an object's owner asks the owner for the object's metadata, for
//! a run of verified groups, or to commit a staged upload; an owner that evicted objects
//! tells every other shard to forget their metadata; a shard that misses an object asks
//! its owner for the verified groups of the owner's read-through of it ([`FlightPart`]).
//! Each request carries an id; the owner answers on the same mesh and the asker
//! completes the waiting future. Channels
//! are bounded ([`mesh_channel_len`]: a shard's 1,024 slots shared among its peers);
//! receiver tasks never block on a send (handlers run in their own tasks), so requests
//! and replies sharing a channel cannot deadlock.
//!
//! The mesh does not know the shard: [`Mesh::serve`] takes a [`MeshHandler`] that turns
//! a [`MeshOp`] into a [`MeshReply`]; the mesh sends the answer back and completes the
//! asker's future itself. What it carries ([`ObjectMeta`], [`StagedObject`],
//! [`CommitOutcome`]) lives in modules that do not import the mesh.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use futures_lite::future::BoxedLocal;
use glommio::channels::local_channel::{self, LocalSender};
use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};
use ron_codec::tree::GroupIndex;
use ron_codec::{Address, ErrorCode};
use ron_link::counters::StorageCounters;

use crate::commit::CommitOutcome;
use crate::error::ShardError;
use crate::ids::ShardIndex;
use crate::record::ObjectMeta;
use crate::upload::StagedObject;

/// Messages a shard can have queued towards all its peers together; each channel (one
/// per ordered pair of shards) gets an equal share ([`mesh_channel_len`]). glommio
/// initialises every slot (232 bytes) at start-up, so a fixed length per channel would
/// cost N(N−1) × 232 KiB: 914 MiB at 64 shards before the first request.
const MESH_SLOTS_PER_SHARD: usize = 1024;

/// The shortest channel: room for a burst of read-ahead trips from one peer.
const MESH_CHANNEL_LEN_MIN: usize = 32;

/// Messages in flight per channel in a mesh of `shards` shards: 1,024 at 2 shards, 68
/// at 16 (glommio rounds up to 128), 32 at 64.
pub fn mesh_channel_len(shards: u16) -> usize {
    let peers = usize::from(shards.saturating_sub(1)).max(1);
    (MESH_SLOTS_PER_SHARD / peers).max(MESH_CHANNEL_LEN_MIN)
}

/// The most groups one [`MeshOp::Groups`] asks for (2 MiB): a stream's read-ahead batch
/// is 8; an owner refuses more.
pub const MESH_GROUPS_MAX: u64 = 32;

/// What one shard asks of an object's owner.
#[derive(Debug)]
pub enum MeshOp {
    Meta(Address),
    /// Groups `first..first + count` in one round trip (at most [`MESH_GROUPS_MAX`]):
    /// the owner reads a run with one disk read, or takes it from its cache.
    Groups {
        addr: Address,
        first: GroupIndex,
        count: u64,
        /// The groups the asker's client asked for (the rest fill the asker's cache
        /// window): the owner counts the cache misses among them, and no other shard
        /// counts them again.
        asked: std::ops::Range<u64>,
    },
    Commit(StagedObject),
    /// Drop these objects' cached metadata (they were evicted).
    Forget(Vec<Address>),
    /// Remove this node's copy of the object (an operator's DELETE).
    Remove(Address),
    /// Whether this node keeps the object (not an evictable copy): an audit's question.
    Kept(Address),
    /// Verified groups of the owner's read-through of `addr`, from group `from` on
    /// (`from` 0 joins the owner's fetch, or starts it).
    Flight {
        addr: Address,
        from: u64,
    },
}

#[derive(Debug)]
pub enum MeshReply {
    Meta(ObjectMeta),
    Groups(Vec<Bytes>),
    Committed(CommitOutcome),
    Forgotten,
    /// Whether a copy was removed.
    Removed(bool),
    Kept(bool),
    Flight(FlightPart),
}

/// What the owner's read-through of an object has for a shard following it.
#[derive(Debug, Clone)]
pub enum FlightPart {
    /// The object's length and content type, and verified groups from the one asked for
    /// on (at least one: what the owner's window holds, up to a bound).
    Open {
        len: u64,
        content_type: String,
        groups: Vec<Bytes>,
    },
    /// Stored on the owner: read it from the store.
    Stored,
    /// The owner's fetch failed (or was refused): the answer every waiter gets.
    Failed { code: ErrorCode, message: String },
}

/// The owner side of [`MeshOp::Flight`]: the engine's read-through, given to the shard.
pub type FlightHandler = Rc<dyn Fn(Address, u64) -> BoxedLocal<FlightPart>>;

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

/// One shard's unconnected ends of the mesh: a sender to every other shard and a
/// receiver from each, indexed by shard (`None` at its own index). `Send`: made on one
/// thread, moved to the shard's.
#[derive(Debug)]
pub struct MeshEnds {
    me: ShardIndex,
    to: Vec<Option<SharedSender<MeshMessage>>>,
    from: Vec<Option<SharedReceiver<MeshMessage>>>,
}

/// The channels of a full mesh of `shards` shards, each shard's ends at its index.
pub fn mesh_ends(shards: u16) -> Vec<MeshEnds> {
    let n = usize::from(shards);
    let len = mesh_channel_len(shards);
    let mut ends: Vec<MeshEnds> = (0..shards)
        .map(|i| MeshEnds {
            me: ShardIndex(i),
            to: (0..n).map(|_| None).collect(),
            from: (0..n).map(|_| None).collect(),
        })
        .collect();
    for sender in 0..n {
        for receiver in (0..n).filter(|&r| r != sender) {
            let (tx, rx) = shared_channel::new_bounded(len);
            ends[sender].to[receiver] = Some(tx);
            ends[receiver].from[sender] = Some(rx);
        }
    }
    ends
}

/// One shard's end of the mesh.
pub struct Mesh {
    me: ShardIndex,
    /// The sender to each other shard, by shard index.
    senders: Vec<Option<ConnectedSender<MeshMessage>>>,
    receivers: RefCell<Vec<ConnectedReceiver<MeshMessage>>>,
    next_id: Cell<u64>,
    waiting: RefCell<HashMap<u64, LocalSender<Result<MeshReply, RemoteError>>>>,
    metrics: Arc<StorageCounters>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl Mesh {
    /// Connects this shard's ends; returns once every other shard has connected the
    /// other halves (or dropped them: sends to a shard that never started fail).
    pub async fn join(ends: MeshEnds, metrics: Arc<StorageCounters>) -> Mesh {
        // Every connect waits for the other half's, so all run at once (in order, two
        // shards would each wait on a channel the other has not reached yet).
        let senders: Vec<_> = ends
            .to
            .into_iter()
            .map(|tx| tx.map(|tx| glommio::spawn_local(tx.connect())))
            .collect();
        let receivers: Vec<_> = ends
            .from
            .into_iter()
            .flatten()
            .map(|rx| glommio::spawn_local(rx.connect()))
            .collect();
        let mut connected_senders = Vec::with_capacity(senders.len());
        for tx in senders {
            connected_senders.push(match tx {
                Some(task) => Some(task.await),
                None => None,
            });
        }
        let mut connected_receivers = Vec::with_capacity(receivers.len());
        for rx in receivers {
            connected_receivers.push(rx.await);
        }
        Mesh {
            me: ends.me,
            senders: connected_senders,
            receivers: RefCell::new(connected_receivers),
            next_id: Cell::new(0),
            waiting: RefCell::new(HashMap::new()),
            metrics,
        }
    }

    /// Sends `op` to `owner` and waits for its answer.
    pub async fn call(&self, owner: ShardIndex, op: MeshOp) -> Result<MeshReply, ShardError> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = local_channel::new_bounded(1);
        self.waiting.borrow_mut().insert(id, tx);
        // A call given up (its request's deadline, a client gone) leaves nothing waiting.
        let _waiting = Waiting { mesh: self, id };
        StorageCounters::add(&self.metrics.mesh_requests, 1);
        let request = MeshMessage::Request {
            from: self.me.0,
            id,
            op,
        };
        if self.send_to(owner.0, request).await.is_err() {
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
        let receivers = std::mem::take(&mut *self.receivers.borrow_mut());
        for stream in receivers {
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
        let _ = self.send_to(shard, MeshMessage::Reply { id, result }).await;
    }

    /// Sends `message` to `shard`; `Err` when its receiver is gone (or there is none).
    async fn send_to(&self, shard: u16, message: MeshMessage) -> Result<(), ()> {
        match self.senders.get(usize::from(shard)) {
            Some(Some(sender)) => sender.send(message).await.map_err(drop),
            _ => Err(()),
        }
    }
}

/// A call's entry among the waiting, for as long as the call lives.
struct Waiting<'a> {
    mesh: &'a Mesh,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.mesh.waiting.borrow_mut().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call given up before its answer (the caller's deadline) leaves no entry among
    /// the waiting. Before, each one stayed for the life of the process when no answer
    /// ever came (or its request never went: the channel full when it was dropped).
    #[test]
    fn a_call_given_up_leaves_nothing_waiting() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async move {
                let mut ends = mesh_ends(2).into_iter();
                let (a, b) = (ends.next().unwrap(), ends.next().unwrap());
                let metrics = Arc::new(StorageCounters::default());
                let (a, _b) = futures_lite::future::zip(
                    Mesh::join(a, Arc::clone(&metrics)),
                    Mesh::join(b, Arc::clone(&metrics)),
                )
                .await;
                for _ in 0..3 {
                    let call = async {
                        let _ = a.call(ShardIndex(1), MeshOp::Kept(Address::of(b"x"))).await;
                        false
                    };
                    let deadline = async {
                        glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
                        true
                    };
                    assert!(
                        futures_lite::future::or(call, deadline).await,
                        "never answered"
                    );
                }
                assert!(a.waiting.borrow().is_empty());
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn a_shards_slots_are_shared_among_its_peers_with_a_floor() {
        assert_eq!(mesh_channel_len(1), MESH_SLOTS_PER_SHARD);
        assert_eq!(mesh_channel_len(2), 1024);
        assert_eq!(mesh_channel_len(16), 68);
        assert_eq!(mesh_channel_len(64), MESH_CHANNEL_LEN_MIN);
        assert_eq!(mesh_channel_len(1024), MESH_CHANNEL_LEN_MIN);
        // Slots allocated for the whole mesh at 64 shards: 4,032 channels.
        let slots_64 = 64 * 63 * mesh_channel_len(64).next_power_of_two();
        assert!(slots_64 * 232 < 32 << 20, "{slots_64} slots");
    }
}
