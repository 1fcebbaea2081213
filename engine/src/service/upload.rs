//! Uploads: the write rule, the size limit, the announced length and digest, and the
//! commit outcome — the same for a streamed OAP PUT and an HTTP PUT/POST body.

use std::cell::Cell;
use std::rc::Rc;

use ron_codec::Address;
use ron_link::policy::Tenant;
use ron_shards::{CommitOutcome, Shard, Upload};

use super::per_client::{ClientHold, PerClient};
use crate::blocked::Blocked;

use crate::refusal::Refusal;

/// Whether a caller may write, and what to tell one who may not.
#[derive(Debug, Clone, Copy)]
pub struct WriteCredential {
    pub may_write: bool,
    /// A token was presented (but is not a write token).
    pub token_given: bool,
    /// Where this protocol carries the token, for the refusal's message.
    pub carrier: &'static str,
    /// OAP's `tenant_id` header field; HTTP has none.
    pub tenant_id: Option<u128>,
}

impl WriteCredential {
    /// The write rule: a caller without a write token is refused before any byte.
    pub fn check(&self) -> Result<(), Refusal> {
        if self.may_write {
            return Ok(());
        }
        Err(Refusal::Unauthorized {
            tenant_id: self.tenant_id,
            token_given: self.token_given,
            carrier: self.carrier,
        })
    }
}

/// An object stored (or found already stored) by an upload.
#[derive(Debug, Clone, Copy)]
pub struct Stored {
    pub addr: Address,
    pub len: u64,
    pub outcome: CommitOutcome,
}

impl Stored {
    /// 201 for a new object, 200 for one the node already had.
    pub fn status(&self) -> u16 {
        match self.outcome {
            CommitOutcome::Created => 201,
            CommitOutcome::AlreadyStored => 200,
        }
    }
}

/// An upload in progress: bytes are hashed and written to a temp file as they arrive;
/// nothing is visible until [`UploadSession::finish`] has committed it.
#[derive(Debug)]
pub struct UploadSession {
    shard: Rc<Shard>,
    upload: Upload,
    /// Its place among the shard's open uploads, given back when the session ends.
    _slot: UploadSlot,
    /// The length the request announced (Content-Length, OAP `len`); none for chunked.
    declared: Option<u64>,
    announced: Option<Address>,
    limit: u64,
    /// Checked against the computed address before the commit.
    blocked: Rc<Blocked>,
}

/// A shard's open uploads: at most `max`, and a client holding a quarter of them (its
/// share) opens another only while more than a quarter stay free. An upload holds its
/// place until its body's deadline, so one client sending the heads of 32 uploads and
/// little else (HTTP, or OAP/1 STARTs on one connection: ~80 bytes a second) held every
/// place of a shard and every other client's upload was refused; now a quarter of them
/// stays for the others, and a lone client still has three quarters.
#[derive(Debug)]
pub(super) struct UploadSlots {
    open: Cell<u32>,
    by_client: Rc<PerClient>,
    max: u32,
}

impl UploadSlots {
    pub(super) fn new(max: u32) -> UploadSlots {
        UploadSlots {
            open: Cell::new(0),
            by_client: Rc::default(),
            max,
        }
    }

    fn share(&self) -> u32 {
        (self.max / 4).max(1)
    }

    /// A place for `client`'s upload (none: a request not charged to a client), or why
    /// not.
    pub(super) fn take(
        self: &Rc<Self>,
        client: Option<Tenant>,
        shard: u16,
    ) -> Result<UploadSlot, Refusal> {
        let open = self.open.get();
        if open >= self.max {
            return Err(Refusal::TooManyUploads { shard, open });
        }
        let share = u64::from(self.share());
        let held = client.map(|client| {
            let roomy = open + self.share() < self.max;
            let most = if roomy { u64::MAX } else { share };
            let held = self.by_client.held(client);
            self.by_client
                .take(client, 1, most)
                .ok_or(Refusal::TooManyClientUploads {
                    shard,
                    open: held as u32,
                })
        });
        let held = held.transpose()?;
        self.open.set(open + 1);
        Ok(UploadSlot {
            slots: Rc::clone(self),
            _held: held,
        })
    }
}

/// One of a shard's open uploads, counted until dropped.
#[derive(Debug)]
pub(super) struct UploadSlot {
    slots: Rc<UploadSlots>,
    _held: Option<ClientHold>,
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        self.slots.open.set(self.slots.open.get() - 1);
    }
}

impl UploadSession {
    pub(super) fn new(
        shard: Rc<Shard>,
        upload: Upload,
        slot: UploadSlot,
        declared: Option<u64>,
        announced: Option<Address>,
        limit: u64,
        blocked: Rc<Blocked>,
    ) -> UploadSession {
        UploadSession {
            blocked,
            shard,
            upload,
            _slot: slot,
            declared,
            announced,
            limit,
        }
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.upload.len()
    }

    pub fn announced(&self) -> Option<Address> {
        self.announced
    }

    pub fn declared(&self) -> Option<u64> {
        self.declared
    }

    /// Appends `data`, within the announced length and the object limit.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), Refusal> {
        let len = self.received() + data.len() as u64;
        match self.declared {
            Some(declared) if len > declared => return Err(Refusal::UploadOverrun { declared }),
            None if len > self.limit => {
                let limit = self.limit;
                return Err(Refusal::TooLarge { len, limit });
            }
            _ => {}
        }
        Ok(self.upload.write(data).await?)
    }

    /// Room to receive the rest of a body of declared length straight into the upload's
    /// direct-write buffer, at most what the declaration still allows; `None` when the
    /// upload offers none (no declared length, nothing left, or not yet one data file):
    /// use `write`.
    pub fn room(&mut self) -> Option<&mut [u8]> {
        let left = self.declared?.checked_sub(self.received())?;
        self.upload
            .room(usize::try_from(left).unwrap_or(usize::MAX))
    }

    /// Takes the first `n` bytes of [`Self::room`] as received.
    pub async fn filled(&mut self, n: usize) -> Result<(), Refusal> {
        Ok(self.upload.filled(n).await?)
    }

    /// Checks the upload is complete and matches its announced address, then commits
    /// it on the owner shard; returns once it is durable.
    pub async fn finish(self, content_type: String) -> Result<Stored, Refusal> {
        let received = self.received();
        if let Some(declared) = self.declared.filter(|&d| d != received) {
            self.upload.abort().await;
            return Err(Refusal::ShortUpload { received, declared });
        }
        let staged = self.upload.finish(content_type).await?;
        let (addr, len) = (staged.meta.addr(), staged.meta.len());
        if let Some(announced) = self.announced.filter(|&a| a != addr) {
            ron_shards::discard(staged).await;
            return Err(Refusal::DigestMismatch {
                computed: addr,
                announced,
            });
        }
        if let Err(refused) = self.blocked.check(&addr) {
            ron_shards::discard(staged).await;
            return Err(refused);
        }
        let outcome = self.shard.commit(staged).await?;
        Ok(Stored { addr, len, outcome })
    }

    /// Drops the upload and its temp file.
    pub async fn abort(self) {
        self.upload.abort().await;
    }
}
