//! `ron repair b3:<hex>`: the node reads and checks every block of the object now and
//! rebuilds what its parity can; the report is printed (exit 1 unless healthy or
//! repaired). `ron placement b3:<hex>`: the holders the network's placement names, each
//! audited; the report is printed (exit 1 unless every copy the target asks for is
//! verified).

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
    print_admin_answer(
        answer,
        |body| {
            let outcome = serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["outcome"].as_str().map(String::from));
            matches!(outcome.as_deref(), Some("healthy" | "repaired"))
        },
        "the report says the copy is neither healthy nor repaired",
    )
}

/// How long `ron repair --cluster` waits for its answer at least (the node waits a
/// minute for the holders it asks, and audits before and after).
const CLUSTER_REPAIR_TIMEOUT: Duration = Duration::from_secs(120);

/// `GET /admin/placement?hash=<addr>` and its report.
pub(super) fn placement(
    admin: &AdminEndpoint,
    addr: Address,
    timeout: Duration,
) -> Result<(), ClientError> {
    let path = format!("/admin/placement?hash={addr}");
    let answer = admin::request(admin, "GET", &path, timeout)?;
    print_admin_answer(answer, enough_copies, FEWER_COPIES)
}

/// `POST /admin/replicate/<addr>` and its report.
pub(super) fn cluster(
    admin: &AdminEndpoint,
    addr: Address,
    timeout: Duration,
) -> Result<(), ClientError> {
    let path = format!("/admin/replicate/{addr}");
    let timeout = timeout.max(CLUSTER_REPAIR_TIMEOUT);
    let answer = admin::request(admin, "POST", &path, timeout)?;
    print_admin_answer(answer, enough_copies, FEWER_COPIES)
}

const FEWER_COPIES: &str = "the report counts fewer verified copies than the target";

/// Whether a placement report counts at least as many verified copies as the target.
fn enough_copies(body: &str) -> bool {
    let report = serde_json::from_str::<serde_json::Value>(body).unwrap_or_default();
    let count = |field: &str| report[field].as_u64();
    matches!((count("rf_observed"), count("rf_target")), (Some(seen), Some(target)) if seen >= target)
}
