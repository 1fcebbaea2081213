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

/// Prints a 2xx answer's body (a report) on stdout; one `good` does not accept is an
/// error (exit 1) all the same, saying `not_good` — the report stays on stdout, where a
/// script redirecting it finds it. Anything else is the node's error.
pub(super) fn print_admin_answer(
    answer: AdminAnswer,
    good: impl Fn(&str) -> bool,
    not_good: &str,
) -> Result<(), ClientError> {
    let body = answer.body.trim_end();
    if (200..300).contains(&answer.status) {
        println!("{body}");
        if good(body) {
            return Ok(());
        }
        return Err(ClientError::Server {
            status: answer.status,
            code: "report".into(),
            message: not_good.into(),
            retryable: false,
            retry_after_ms: None,
        });
    }
    Err(admin_error(&answer))
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
