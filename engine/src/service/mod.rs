//! The object service: what a request for an object means, once, whatever protocol
//! carried it. Both front ends parse their own framing, then call this layer, then
//! encode its answer:
//!
//! - GET / HEAD / STAT: [`Service::find`] the object's metadata (its chunk tree already
//!   verified against the address), resolve the requested range into a [`Span`] (one
//!   resolver for HTTP `Range` and OAP `range`), then [`Service::stream`] its groups: the
//!   first verified group — all of them for a small body — is fetched before the caller
//!   writes any head, so a rotten group there is a clean error; later groups arrive one
//!   ahead of the sender ([`GroupStream`]).
//! - PUT: [`Service::begin_upload`] applies the write rule and the size limit before a
//!   byte is stored; [`UploadSession::write`] hashes and writes as bytes arrive, within
//!   the announced length and the limit; [`UploadSession::finish`] checks the digest
//!   against an announced address and commits on the owner shard (durable before it
//!   answers).
//!
//! - Shares: a client (its tenant, else its address) holds at most its share of the
//!   shard's open uploads, of its uploads waiting for copies and of its streams'
//!   read-ahead ([`PerClient`], `per_client.rs`): one client holding them all left every
//!   other client refused or reading group by group.
//!
//! Every failure is a [`Refusal`](crate::refusal::Refusal); the front end only decides
//! how to write it (HTTP response, OAP error frame) and whether the connection goes on.

mod get;
mod per_client;
mod upload;

use std::rc::Rc;
use std::time::Instant;

use ron_codec::{Address, ErrorCode};
use ron_shards::{ObjectMeta, Shard};

use ron_link::dht::{CopiesEnd, DhtClient, LeftOut, Provider};
use ron_link::policy::Tenant;
use ron_shards::lifecycle::{finished_within, join_all};

use crate::admission::Ticket;
use crate::blocked::Blocked;
use crate::fetch::{Flight, ReadThrough};
use crate::limits::COPIES_WAIT;
use crate::refusal::Refusal;
use crate::replication::{audit_holder, AuditLimits};

use get::ReadAheadFor;
pub use get::{FetchStream, GroupStream, Span, StoredStream, VerifiedGroup};
pub use per_client::ClientHold;
use per_client::PerClient;
use upload::UploadSlots;
pub use upload::{Stored, UploadSession, WriteCredential};

/// A client's uploads waiting for copies on one shard, at most (the node's DHT thread
/// watches 1,024 at once).
const COPY_WAITS_PER_CLIENT_MAX: u32 = 32;

/// One shard's object service, shared by its connections of both protocols.
#[derive(Debug)]
pub struct Service {
    shard: Rc<Shard>,
    /// Largest object an upload may store, bytes.
    object_bytes_max: u64,
    /// Where a miss is fetched from, when the node has peers or an origin.
    read_through: Option<Rc<ReadThrough>>,
    /// Copies on other nodes an upload may wait for.
    copies: CopyPolicy,
    /// The denylist: a blocked address is answered 451 on every path.
    blocked: Rc<Blocked>,
    /// Uploads open on this shard, at most `uploads_open_max`, a client's share of them.
    uploads: Rc<UploadSlots>,
    /// What each client's streams hold of the shard's read-ahead budget.
    read_ahead_shares: Rc<PerClient>,
    /// Each client's uploads waiting for copies on this shard.
    copy_waits: Rc<PerClient>,
}

/// The operator's removal of this node's copy of `addr`, on its owner shard (a DELETE
/// with the admin token on a data port, or `POST /admin/remove/b3:<hex>` on the admin
/// port): see [`Service::remove`].
pub(crate) async fn remove_copy(
    shard: &Rc<Shard>,
    dht: Option<&DhtClient>,
    addr: &Address,
) -> Result<(), Refusal> {
    shard.meta(addr).await?;
    if !shard.remove(addr).await? {
        return Err(Refusal::RemoveBusy { addr: *addr });
    }
    if let Some(dht) = dht {
        // Waits for room: a withdrawal dropped (a full mailbox) left the copy advertised.
        ron_shards::withdraw(dht, vec![*addr.as_bytes()]).await;
    }
    tracing::info!(obj = %addr, "object removed by the operator");
    Ok(())
}

/// What an upload may ask of the network (`PUT ?copies=N`).
#[derive(Debug, Clone)]
pub struct CopyPolicy {
    /// The DHT thread, when the node is in a network.
    pub dht: Option<DhtClient>,
    /// Copies the network keeps of each object (`replicas`): the most one can wait for.
    pub replicas: usize,
}

/// An object a GET found: stored here, or being read through.
#[derive(Debug, Clone)]
pub enum Object {
    /// Its metadata, the chunk tree verified against the address.
    Stored(Rc<ObjectMeta>),
    /// Its fetch, with the length and content type its upstream gave.
    Fetching {
        flight: Rc<Flight>,
        len: u64,
        content_type: Rc<str>,
    },
}

impl Object {
    pub fn addr(&self) -> Address {
        match self {
            Object::Stored(meta) => meta.addr(),
            Object::Fetching { flight, .. } => flight.addr,
        }
    }

    pub fn len(&self) -> u64 {
        match self {
            Object::Stored(meta) => meta.len(),
            Object::Fetching { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empty when none was given (served as application/octet-stream).
    pub fn content_type(&self) -> &str {
        match self {
            Object::Stored(meta) => &meta.content_type,
            Object::Fetching { content_type, .. } => content_type,
        }
    }
}

impl Service {
    pub fn new(
        shard: Rc<Shard>,
        object_bytes_max: u64,
        read_through: Option<Rc<ReadThrough>>,
        copies: CopyPolicy,
        blocked: Rc<Blocked>,
        uploads_open_max: u32,
    ) -> Service {
        Service {
            shard,
            object_bytes_max,
            read_through,
            copies,
            blocked,
            uploads: Rc::new(UploadSlots::new(uploads_open_max)),
            read_ahead_shares: Rc::default(),
            copy_waits: Rc::default(),
        }
    }

    /// Checks a `copies` request before the upload (at most `replicas`).
    pub fn check_copies(&self, want: usize) -> Result<(), Refusal> {
        match want > self.copies.replicas {
            true => Err(Refusal::CopiesOverReplicas {
                asked: want,
                replicas: self.copies.replicas,
            }),
            false => Ok(()),
        }
    }

    /// A place among `client`'s uploads waiting for copies on this shard, taken before
    /// the upload is received and held until it is answered; `None` when it waits for
    /// none (`want` ≤ 1, or a request charged to no client). A wait costs a watch of the
    /// DHT thread (1,024 for the node) for up to [`COPIES_WAIT`], and goes on when its
    /// client has gone: one client reconnecting with 32 such uploads a connection held
    /// every watch, and every other client's `copies` was answered busy.
    pub fn take_copy_wait(
        &self,
        want: usize,
        client: Option<Tenant>,
    ) -> Result<Option<ClientHold>, Refusal> {
        let Some(client) = client.filter(|_| want > 1 && self.copies.dht.is_some()) else {
            return Ok(None);
        };
        let most = u64::from(COPY_WAITS_PER_CLIENT_MAX);
        let hold = self.copy_waits.take(client, 1, most);
        hold.map(Some).ok_or(Refusal::TooManyCopyWaits {
            shard: self.shard.index().0,
            waits: COPY_WAITS_PER_CLIENT_MAX,
        })
    }

    /// Waits until `want` copies of a stored object exist (this node's included): the
    /// DHT thread publishes it at once and asks its holders; the answer is how many
    /// exist, or why fewer do (every holder answered: 503; the wait ran out: 504).
    ///
    /// A holder's `held` is a claim: each is audited before it counts. When the claims
    /// reached `want` but some failed their audit, the wait goes on for that many more
    /// claims (other holders may still be copying), within the same deadline.
    ///
    /// The request's in-flight slot (`ticket`) is parked meanwhile: it waits on other
    /// nodes for up to [`COPIES_WAIT`], and held, uploads waiting for copies filled the
    /// shard's gate and every other request was refused 503.
    pub async fn wait_for_copies(
        &self,
        addr: Address,
        want: usize,
        ticket: Option<&Ticket>,
    ) -> Result<usize, Refusal> {
        let Some(dht) = self.copies.dht.as_ref().filter(|_| want > 1) else {
            return Ok(1);
        };
        let _parked = ticket.map(Ticket::park);
        let started = Instant::now();
        let waited_ms = || started.elapsed().as_millis() as u64;
        let timed_out = |copies| Refusal::CopiesTimedOut {
            addr,
            copies,
            want,
            waited_ms: waited_ms(),
        };
        let mut claims_wanted = want;
        loop {
            let left = COPIES_WAIT.saturating_sub(started.elapsed());
            let answer = dht
                .copies_later(*addr.as_bytes(), claims_wanted, left.as_millis() as u64)
                .map_err(|_| timed_out(1))?;
            // The DHT thread answers by the deadline; a little slack covers its tick.
            let slack = std::time::Duration::from_millis(1_000);
            let made = match finished_within(left + slack, answer).await {
                Some(Ok(made)) => made,
                _ => return Err(timed_out(1)),
            };
            let copies = 1 + self.proven_holders(dht, addr, &made.held_by).await;
            let unproven = made.copies - copies;
            match made.ended {
                _ if copies >= want => return Ok(copies),
                CopiesEnd::Reached if started.elapsed() < COPIES_WAIT => {
                    claims_wanted = want + unproven;
                }
                CopiesEnd::Reached | CopiesEnd::Fewer if unproven > 0 => {
                    return Err(Refusal::CopiesUnproven {
                        addr,
                        copies,
                        want,
                        unproven,
                    })
                }
                CopiesEnd::Reached | CopiesEnd::Fewer => {
                    return Err(Refusal::TooFewCopies { addr, copies, want })
                }
                CopiesEnd::TimedOut | CopiesEnd::Busy => return Err(timed_out(copies)),
            }
        }
    }

    /// How many of `holders` send a random group of their own copy of `addr`, verified
    /// (audited at once; none without a read-through to audit with). Each answered
    /// `held` a moment ago, once its copy was durable: one that fails is left out of this
    /// node's placements (it claims a copy it cannot show; named, it would keep the
    /// object a copy short and every upload placed on it refused).
    async fn proven_holders(&self, dht: &DhtClient, addr: Address, holders: &[Provider]) -> usize {
        let (Some(read_through), Ok(meta)) = (&self.read_through, self.shard.meta(&addr).await)
        else {
            return 0;
        };
        let limits = AuditLimits::of(read_through);
        let audits = holders
            .iter()
            .map(|holder| audit_holder(dht, holder, addr, Some(meta.len()), limits));
        let outcomes = join_all(audits.collect()).await;
        for (holder, outcome) in holders.iter().zip(&outcomes) {
            if !outcome.is_verified() {
                tracing::warn!(obj = %addr, holder = %holder.node_id, "an upload's holder answered that it held a copy, then failed its audit: left out of this node's placements");
                let _ = dht.leave_out(holder.node_id.clone(), LeftOut::HeldUnproven);
            }
        }
        outcomes
            .iter()
            .filter(|outcome| outcome.is_verified())
            .count()
    }

    /// Whether `node_id` names this node (none does off a network: it has no id).
    pub fn is_node(&self, node_id: &str) -> bool {
        self.copies
            .dht
            .as_ref()
            .is_some_and(|dht| *dht.node_id == *node_id)
    }

    pub fn shard(&self) -> &Rc<Shard> {
        &self.shard
    }

    /// `Err(Refusal::Blocked)` (451) when the denylist blocks `addr`: for what is served
    /// from a cache of its own (a bundle's manifest) without [`Service::find`].
    pub fn check_blocked(&self, addr: &Address) -> Result<(), Refusal> {
        self.blocked.check(addr)
    }

    /// The object: its verified metadata when it is stored here; else, with read-through
    /// on, its fetch once the first group has arrived verified (or it is stored). The
    /// request's in-flight slot (`ticket`) is parked while it waits on the fetch: a
    /// waiter costs the shard no work, and a client asking thousands of times for an
    /// object whose lookup or upstream is slow (one never stored anywhere: its lookup
    /// runs to the fetch timeout) would otherwise fill the gate, and every other request
    /// be refused meanwhile.
    pub async fn find(&self, addr: &Address, ticket: Option<&Ticket>) -> Result<Object, Refusal> {
        self.blocked.check(addr)?;
        match self.shard.meta(addr).await {
            Ok(meta) => Ok(Object::Stored(meta)),
            Err(e) if e.code() == ErrorCode::NotFound => match &self.read_through {
                // Boxed: a read-through's state is not carried by every request's.
                Some(read_through) => Box::pin(self.read_through(read_through, addr, ticket)).await,
                None => Err(e.into()),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// The object only if this node holds it: never read through (404 otherwise).
    pub async fn find_held(&self, addr: &Address) -> Result<Rc<ObjectMeta>, Refusal> {
        self.blocked.check(addr)?;
        Ok(self.shard.meta(addr).await?)
    }

    /// The object only if this node keeps it (an upload or a placement copy): an
    /// evictable copy is 404, as none is — what an audit of this node asks.
    pub async fn find_kept(&self, addr: &Address) -> Result<Rc<ObjectMeta>, Refusal> {
        let meta = self.find_held(addr).await?;
        match self.shard.is_kept(addr).await? {
            true => Ok(meta),
            false => Err(Refusal::NotKept { addr: *addr }),
        }
    }

    /// The object stored here: one being read through is waited for until it is stored
    /// (a proof needs the whole tree), the request's slot parked meanwhile (as `find`).
    pub async fn find_stored(
        &self,
        addr: &Address,
        ticket: Option<&Ticket>,
    ) -> Result<Rc<ObjectMeta>, Refusal> {
        match self.find(addr, ticket).await? {
            Object::Stored(meta) => Ok(meta),
            Object::Fetching { flight, .. } => {
                let parked = ticket.map(Ticket::park);
                flight.wait_stored().await?;
                drop(parked);
                Ok(self.shard.meta(addr).await?)
            }
        }
    }

    async fn read_through(
        &self,
        read_through: &Rc<ReadThrough>,
        addr: &Address,
        ticket: Option<&Ticket>,
    ) -> Result<Object, Refusal> {
        let flight = match ticket {
            Some(ticket) => read_through.join_for(*addr, ticket.tenant())?,
            None => read_through.join(*addr)?,
        };
        let timeout = read_through.timeout();
        let deadline = Instant::now() + timeout;
        let timeout_ms = timeout.as_millis() as u64;
        let parked = ticket.map(Ticket::park);
        let opened = flight.wait_open(deadline, timeout_ms).await;
        drop(parked);
        match opened? {
            None => Ok(Object::Stored(self.shard.meta(addr).await?)),
            Some((len, content_type)) => Ok(Object::Fetching {
                flight,
                len,
                content_type,
            }),
        }
    }

    /// The verified groups of `span`, the first ones fetched before this returns; what
    /// they read ahead counts against `client`'s share of the shard's read-ahead
    /// (`None`: a request charged to no client).
    pub async fn stream(
        &self,
        object: &Object,
        span: Span,
        client: Option<Tenant>,
    ) -> Result<GroupStream, Refusal> {
        let shard = Rc::clone(&self.shard);
        let reads_for = client.map(|client| ReadAheadFor {
            client,
            shares: Rc::clone(&self.read_ahead_shares),
        });
        Ok(match object {
            Object::Stored(meta) => GroupStream::Stored(
                StoredStream::open(shard, Rc::clone(meta), span, reads_for).await?,
            ),
            // Boxed: a read-through's state is not carried by every request's.
            Object::Fetching { flight, .. } => GroupStream::Fetching(
                Box::pin(FetchStream::open(shard, Rc::clone(flight), span, reads_for)).await?,
            ),
        })
    }

    /// Removes this node's copy of `addr` (the operator's DELETE; blocked or not) and
    /// withdraws its record from the DHT. 404 when none is held; 503 when a commit,
    /// eviction or repair of it is under way. Other holders keep theirs, and the
    /// placement may copy it here again unless the denylist blocks it.
    pub async fn remove(&self, addr: &Address) -> Result<(), Refusal> {
        remove_copy(&self.shard, self.copies.dht.as_ref(), addr).await
    }

    /// Starts an upload after the write rule and the size limit allow it.
    /// `client`: who the upload is charged to (its share of the shard's open uploads);
    /// `None` for a request charged to no one.
    pub async fn begin_upload(
        &self,
        credential: &WriteCredential,
        declared_len: Option<u64>,
        announced: Option<Address>,
        client: Option<Tenant>,
    ) -> Result<UploadSession, Refusal> {
        self.check_upload(credential, declared_len)?;
        if let Some(addr) = &announced {
            self.blocked.check(addr)?;
        }
        let slot = self.uploads.take(client, self.shard.index().0)?;
        let upload = self.shard.begin_upload(declared_len)?;
        Ok(UploadSession::new(
            Rc::clone(&self.shard),
            upload,
            slot,
            declared_len,
            announced,
            self.object_bytes_max,
            Rc::clone(&self.blocked),
        ))
    }

    /// The write rule, then the size limit for an announced length.
    pub fn check_upload(
        &self,
        credential: &WriteCredential,
        declared_len: Option<u64>,
    ) -> Result<(), Refusal> {
        credential.check()?;
        let limit = self.object_bytes_max;
        match declared_len.filter(|&len| len > limit) {
            Some(len) => Err(Refusal::TooLarge { len, limit }),
            None => Ok(()),
        }
    }
}
