//! What more than one command needs: the usage error, a file error with its path, and
//! printing an admin-port answer.

use std::path::Path;

use crate::admin::AdminAnswer;
use crate::ClientError;

/// A usage error (exit 2) saying `message`.
pub(super) fn usage(message: impl Into<String>) -> ClientError {
    ClientError::Usage(message.into())
}

/// Maps an I/O error of `op` on the local file `path`.
pub(super) fn file_error(
    op: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> ClientError {
    let path = path.to_path_buf();
    move |source| ClientError::File { op, path, source }
}

/// Prints a report on stdout — a 2xx answer's body, or any answer's that is a report
/// (a JSON object naming its `outcome`: a repair's `not_found`, `busy` or `failed`) —
/// where a script redirecting it finds it. A report `good` does not accept, or one that
/// came with an error status, is an error (exit 1) all the same, saying `not_good` or
/// the outcome. Anything else is the node's error.
pub(super) fn print_admin_answer(
    answer: AdminAnswer,
    good: impl Fn(&str) -> bool,
    not_good: &str,
) -> Result<(), ClientError> {
    let body = answer.body.trim_end();
    let succeeded = (200..300).contains(&answer.status);
    let outcome = report_outcome(body);
    if !succeeded && outcome.is_none() {
        return Err(admin_error(&answer));
    }
    println!("{body}");
    if succeeded && good(body) {
        return Ok(());
    }
    let message = match (succeeded, outcome) {
        (false, Some(outcome)) => format!("the report says {outcome}"),
        _ => not_good.into(),
    };
    Err(ClientError::Server {
        status: answer.status,
        code: "report".into(),
        message,
        retryable: answer.status == 503,
        retry_after_ms: None,
    })
}

/// The `outcome` a report body names, if it is a report.
fn report_outcome(body: &str) -> Option<String> {
    let report = serde_json::from_str::<serde_json::Value>(body).ok()?;
    report.get("outcome")?.as_str().map(str::to_string)
}

/// An admin-port answer that is not what was asked, as the node's error.
pub(super) fn admin_error(answer: &AdminAnswer) -> ClientError {
    ClientError::Server {
        status: answer.status,
        code: "admin".into(),
        message: crate::error::printable(answer.body.trim_end()),
        retryable: answer.status == 503,
        retry_after_ms: None,
    }
}
