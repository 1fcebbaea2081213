//! `ron rm b3:<hex>`: the node removes its copy of the object and withdraws its DHT
//! record (`POST /admin/remove/b3:<hex>` on its admin port, with the admin token when
//! one is configured); the answer is printed (exit 1 if the node refused or holds no
//! copy). A data port removes only with the admin token (docs/design/trust.md).

use std::time::Duration;

use ron_codec::Address;

use super::shared::print_admin_answer;
use crate::admin::{self, AdminEndpoint};
use crate::ClientError;

/// `POST /admin/remove/<addr>` on the node's admin port.
pub(super) fn run(
    admin: &AdminEndpoint,
    addr: Address,
    timeout: Duration,
) -> Result<(), ClientError> {
    let answer = admin::request(admin, "POST", &format!("/admin/remove/{addr}"), timeout)?;
    print_admin_answer(answer, |_| true, "")
}
