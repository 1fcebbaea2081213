//! `ron rm b3:<hex>`: the node removes its copy of the object (`DELETE /o/b3:<hex>` on
//! its HTTP port, with the admin token) and withdraws its DHT record; the answer is
//! printed (exit 1 if the node refused or holds no copy).

use std::time::Duration;

use ron_codec::Address;

use super::shared::print_admin_answer;
use crate::admin::{self, AdminEndpoint};
use crate::transport::Endpoint;
use crate::ClientError;

/// `DELETE /o/<addr>` on the node's HTTP port, bearing the admin token of `admin`.
pub(super) fn run(
    server: &Endpoint,
    admin: &AdminEndpoint,
    addr: Address,
    timeout: Duration,
) -> Result<(), ClientError> {
    let node = AdminEndpoint {
        addr: server.addr.clone(),
        token: admin.token.clone(),
    };
    let answer = admin::request(&node, "DELETE", &format!("/o/{addr}"), timeout)?;
    print_admin_answer(answer, |_| true)
}
