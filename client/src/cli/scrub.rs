//! `ron scrub status|pause|resume`: the node's background scrubber, through its admin
//! port.

use std::time::Duration;

use super::shared::print_admin_answer;
use crate::admin::{self, AdminEndpoint};
use crate::ClientError;

/// What `ron scrub` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScrubVerb {
    Status,
    Pause,
    Resume,
}

/// Sends the verb's request and prints the answer.
pub(super) fn run(
    admin: &AdminEndpoint,
    verb: ScrubVerb,
    timeout: Duration,
) -> Result<(), ClientError> {
    let (method, path) = match verb {
        ScrubVerb::Status => ("GET", "/admin/scrub"),
        ScrubVerb::Pause => ("POST", "/admin/scrub/pause"),
        ScrubVerb::Resume => ("POST", "/admin/scrub/resume"),
    };
    let answer = admin::request(admin, method, path, timeout)?;
    print_admin_answer(answer, |_| true, "")
}
