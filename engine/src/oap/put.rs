//! PUT: DATA frames checked against what START announced and written into the upload
//! session as they arrive; on END, a task finishes and commits it.

use std::rc::Rc;

use bytes::Bytes;
use ron_codec::frame::Flags;
use ron_codec::messages::{DataHeader, ObjectInfo};
use ron_codec::Address;
use ron_link::policy::Tenant;

use super::answer::{answer, refuse, Account};
use super::outbox::SharedOutboxes;
use super::writer::reply_frame;
use super::OapContext;
use crate::admission::Ticket;
use crate::limits::COPIES_MAX;
use crate::refusal::Refusal;
use crate::service::{ClientHold, UploadSession, WriteCredential};
use crate::transfer::TransferPace;

/// Where OAP/1 carries a write token, for the 401 message.
pub(super) const TOKEN_CARRIER: &str = "in the START frame's capability section";

/// What a START frame for a PUT says.
pub(super) struct PutStart {
    pub len: u64,
    pub announced: Option<Address>,
    /// DATA frames follow (START did not carry END).
    pub has_more: bool,
    pub credential: WriteCredential,
    /// Durable copies to wait for (`copies`), this node's included.
    pub copies: Option<u32>,
}

/// What a PUT's answer waits for once the upload is durable: copies on other nodes.
pub(super) struct PutState {
    pub session: UploadSession,
    pub ticket: Ticket,
    pub copies: usize,
    /// Its place among its client's uploads waiting for copies, until it is answered.
    pub copy_wait: Option<ClientHold>,
    /// When its bytes are due: each upload keeps the minimum rate on its own, as one
    /// HTTP upload does on its connection (`reader.rs`, `uploads_behind`).
    pub pace: TransferPace,
}

/// Opens the upload a PUT's START frame asks for, or says why not.
pub(super) async fn begin(
    ctx: &OapContext,
    start: PutStart,
    client: Tenant,
) -> Result<(UploadSession, usize, Option<ClientHold>), Refusal> {
    ctx.service
        .check_upload(&start.credential, Some(start.len))?;
    let copies = match start.copies {
        None => 1,
        Some(n) if (1..=COPIES_MAX as u32).contains(&n) => n as usize,
        Some(n) => {
            return Err(Refusal::BadCopies {
                given: n.to_string(),
            })
        }
    };
    ctx.service.check_copies(copies)?;
    if start.len > 0 && !start.has_more {
        return Err(Refusal::PutWithoutData { len: start.len });
    }
    let copy_wait = ctx.service.take_copy_wait(copies, Some(client))?;
    let session = ctx
        .service
        .begin_upload(
            &start.credential,
            Some(start.len),
            start.announced,
            Some(client),
        )
        .await?;
    Ok((session, copies, copy_wait))
}

/// Appends one DATA frame's bytes to an upload after checking its DATA header against
/// the upload's START.
pub(super) async fn receive(put: &mut PutState, payload: &Bytes) -> Result<(), Refusal> {
    let (data, raw) = DataHeader::split(payload)?;
    let session = &mut put.session;
    let expected_offset = session.received();
    let expected_total = session.declared().unwrap_or(0);
    if data.offset != expected_offset || data.total_len != expected_total {
        return Err(Refusal::DataOutOfOrder {
            offset: data.offset,
            total_len: data.total_len,
            expected_offset,
            expected_total,
        });
    }
    if let (Some(named), Some(announced)) = (data.obj, session.announced()) {
        if named != announced {
            return Err(Refusal::DataNamesOther { named, announced });
        }
    }
    session.write(&raw).await
}

/// Finishes an upload: length and digest checks, then commit; answers either way.
pub(super) async fn commit(ctx: Rc<OapContext>, out: SharedOutboxes, corr_id: u64, put: PutState) {
    let PutState {
        session,
        ticket,
        copies,
        copy_wait: _held_until_answered,
        ..
    } = put;
    let received = session.received();
    let finished = match session.finish(String::new()).await {
        Ok(stored) if copies > 1 => {
            match (ctx.service)
                .wait_for_copies(stored.addr, copies, Some(&ticket))
                .await
            {
                Ok(made) => Ok((stored, Some(made))),
                Err(refusal) => Err(refusal),
            }
        }
        Ok(stored) => Ok((stored, None)),
        Err(refusal) => Err(refusal),
    };
    let account = Account::Admitted(ticket, received);
    match finished {
        Ok((stored, copies)) => {
            let info = ObjectInfo {
                obj: stored.addr,
                len: stored.len,
                copies,
            };
            let status = stored.status();
            let frame = reply_frame(Flags::END, status, corr_id, &info.to_payload());
            answer(&ctx, &out, corr_id, frame, status, account).await;
        }
        Err(refusal) => refuse(&ctx, &out, corr_id, &refusal, account).await,
    }
}
