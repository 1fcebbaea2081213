//! Final answers on one request's `corr_id`, and how each is accounted.

use std::time::Instant;

use ron_link::requests::{Op, Protocol};

use super::outbox::{push, OutFrame, SharedOutboxes};
use super::writer::refusal_frame;
use super::OapContext;
use crate::admission::{Admission, Ticket};
use crate::refusal::Refusal;

/// How an answered request is accounted: through its admission ticket (with the object
/// bytes it moved), or — refused before admission — by op and start time.
pub(super) enum Account {
    Admitted(Ticket, u64),
    Unadmitted(Op, Instant),
}

impl Account {
    pub fn finish(self, admission: &Admission, status: u16) {
        match self {
            Account::Admitted(ticket, bytes) => admission.finish(ticket, status, bytes),
            Account::Unadmitted(op, started) => {
                admission.record(Protocol::Oap, op, status, started)
            }
        }
    }
}

/// Answers one request with a single END frame and records it.
pub(super) async fn answer(
    ctx: &OapContext,
    out: &SharedOutboxes,
    corr_id: u64,
    frame: OutFrame,
    status: u16,
    account: Account,
) {
    let ticket = match &account {
        Account::Admitted(ticket, _) => Some(ticket),
        Account::Unadmitted(..) => None,
    };
    let _ = push(out, corr_id, frame, true, ticket).await;
    account.finish(&ctx.admission, status);
}

/// Answers with `refusal`'s error envelope (logged once here).
pub(super) async fn refuse(
    ctx: &OapContext,
    out: &SharedOutboxes,
    corr_id: u64,
    refusal: &Refusal,
    account: Account,
) {
    let mut corr = itoa::Buffer::new();
    refusal.log(ctx.service.shard().index(), corr.format(corr_id));
    let frame = refusal_frame(corr_id, refusal);
    answer(ctx, out, corr_id, frame, refusal.status(), account).await;
}
