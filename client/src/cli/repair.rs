//! `ron repair b3:<hex>`: the node reads and checks every block of the object now and
//! rebuilds what its parity can; the report is printed (exit 1 unless healthy or
//! repaired).

use std::time::Duration;

use ron_codec::Address;

use super::shared::print_admin_answer;
use crate::admin::{self, AdminEndpoint};
use crate::ClientError;

/// How long `ron repair` waits for its answer at least (the node waits 60 s for the
/// check).
const REPAIR_TIMEOUT: Duration = Duration::from_secs(70);

/// `POST /admin/repair/<addr>` and its report.
pub(super) fn run(
    admin: &AdminEndpoint,
    addr: Address,
    timeout: Duration,
) -> Result<(), ClientError> {
    // The node waits up to a minute for the check; so does this, and a little more.
    let timeout = timeout.max(REPAIR_TIMEOUT);
    let path = format!("/admin/repair/{addr}");
    let answer = admin::request(admin, "POST", &path, timeout)?;
    print_admin_answer(answer, |body| {
        let outcome = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["outcome"].as_str().map(String::from));
        matches!(outcome.as_deref(), Some("healthy" | "repaired"))
    })
}
