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
//! Every failure is a [`Refusal`](crate::refusal::Refusal); the front end only decides
//! how to write it (HTTP response, OAP error frame) and whether the connection goes on.

mod get;
mod upload;

use std::rc::Rc;

use ron_codec::Address;
use ron_shards::{ObjectMeta, Shard};

use crate::refusal::Refusal;

pub use get::{GroupStream, Span, VerifiedGroup};
pub use upload::{Stored, UploadSession, WriteCredential};

/// One shard's object service, shared by its connections of both protocols.
#[derive(Debug)]
pub struct Service {
    shard: Rc<Shard>,
    /// Largest object an upload may store, bytes.
    object_bytes_max: u64,
}

impl Service {
    pub fn new(shard: Rc<Shard>, object_bytes_max: u64) -> Service {
        Service {
            shard,
            object_bytes_max,
        }
    }

    pub fn shard(&self) -> &Rc<Shard> {
        &self.shard
    }

    /// The object's metadata, its chunk tree verified against `addr`.
    pub async fn find(&self, addr: &Address) -> Result<Rc<ObjectMeta>, Refusal> {
        Ok(self.shard.meta(addr).await?)
    }

    /// The verified groups of `span`, the first ones fetched before this returns.
    pub async fn stream(&self, meta: Rc<ObjectMeta>, span: Span) -> Result<GroupStream, Refusal> {
        GroupStream::open(Rc::clone(&self.shard), meta, span).await
    }

    /// Starts an upload after the write rule and the size limit allow it.
    pub async fn begin_upload(
        &self,
        credential: &WriteCredential,
        declared_len: Option<u64>,
        announced: Option<Address>,
    ) -> Result<UploadSession, Refusal> {
        self.check_upload(credential, declared_len)?;
        let upload = self.shard.begin_upload(declared_len);
        Ok(UploadSession::new(
            Rc::clone(&self.shard),
            upload,
            declared_len,
            announced,
            self.object_bytes_max,
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
