//! Content negotiation of an object (RFC 9110 §12.5.1): its bytes, or its bao encoding
//! when `Accept` names `application/x-bao` (with `chunk-group-log=N`, 0 when absent).

use super::head::{trim, FieldLines};
use crate::bao::ChunkGroupLog;

/// The media type of a bao encoding or slice.
pub const BAO_MEDIA_TYPE: &str = "application/x-bao";
/// The media type of a bao outboard (its parents without the leaves' bytes).
pub const BAO_OUTBOARD_MEDIA_TYPE: &str = "application/x-bao-outboard";
/// The media-type parameter that names the chunk-group log.
pub const CHUNK_GROUP_LOG_PARAM: &str = "chunk-group-log";

/// What an `Accept` field asks of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Representation {
    /// The object's own bytes (no `application/x-bao` with q > 0).
    Bytes,
    Bao(ChunkGroupLog),
    /// Only bao at a chunk-group log this server does not serve (406).
    BaoUnservable,
}

/// The first `application/x-bao` member with q > 0 decides; a member whose
/// `chunk-group-log` is not a number from 0 to [`ChunkGroupLog::MAX`] is passed over.
pub fn negotiate(accept: &FieldLines<'_>) -> Representation {
    let mut asked = Representation::Bytes;
    for member in accept.members() {
        let mut parts = member.split(|&b| b == b';');
        let media = parts.next().map(trim).unwrap_or_default();
        if !media.eq_ignore_ascii_case(BAO_MEDIA_TYPE.as_bytes()) {
            continue;
        }
        let mut log = Some(ChunkGroupLog::BAO);
        let mut refused = false;
        for param in parts {
            let (name, value) = match param.iter().position(|&b| b == b'=') {
                Some(at) => (trim(&param[..at]), trim(&param[at + 1..])),
                None => (trim(param), &b""[..]),
            };
            if name.eq_ignore_ascii_case(b"q") {
                refused = is_zero_weight(value);
            } else if name.eq_ignore_ascii_case(CHUNK_GROUP_LOG_PARAM.as_bytes()) {
                log = chunk_group_log(value);
            }
        }
        match (refused, log) {
            (true, _) => {}
            (false, Some(log)) => return Representation::Bao(log),
            (false, None) => asked = Representation::BaoUnservable,
        }
    }
    asked
}

/// A `chunk-group-log` value: decimal digits (quoted or not) naming a served log.
pub fn chunk_group_log(value: &[u8]) -> Option<ChunkGroupLog> {
    let value = value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(value);
    if value.is_empty() || value.len() > 3 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let log = value.iter().fold(0u8, |n, d| n * 10 + (d - b'0'));
    ChunkGroupLog::new(log)
}

/// `q=0`, `q=0.`, `q=0.000` (RFC 9110 §12.4.2): "not acceptable".
fn is_zero_weight(value: &[u8]) -> bool {
    match value.split_first() {
        Some((b'0', rest)) => match rest.split_first() {
            None => true,
            Some((b'.', zeros)) => zeros.iter().all(|&d| d == b'0'),
            Some(_) => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{parse_request_head, HeadParse};

    fn asked(accept: &str) -> Representation {
        let raw = format!("GET /o HTTP/1.1\r\nHost: t\r\n{accept}\r\n");
        let Ok(HeadParse::Complete(head)) = parse_request_head(raw.as_bytes(), 4096) else {
            panic!("{raw:?} does not parse")
        };
        negotiate(&head.accept)
    }

    #[test]
    fn bao_is_chosen_only_when_named_with_weight() {
        let log = |n| Representation::Bao(ChunkGroupLog::new(n).unwrap());
        assert_eq!(asked(""), Representation::Bytes);
        assert_eq!(asked("Accept: */*\r\n"), Representation::Bytes);
        assert_eq!(
            asked("Accept: text/html, application/*\r\n"),
            Representation::Bytes
        );
        assert_eq!(asked("Accept: application/x-bao\r\n"), log(0));
        assert_eq!(
            asked("Accept: Application/X-Bao ; chunk-group-log=4\r\n"),
            log(4)
        );
        assert_eq!(
            asked("Accept: application/x-bao;chunk-group-log=\"6\";q=0.5\r\n"),
            log(6)
        );
        assert_eq!(
            asked("Accept: application/x-bao;q=0\r\n"),
            Representation::Bytes
        );
        assert_eq!(
            asked("Accept: application/x-bao;q=0.000\r\n"),
            Representation::Bytes
        );
        assert_eq!(asked("Accept: application/x-bao;q=0.001\r\n"), log(0));
        assert_eq!(
            asked("Accept: text/plain\r\nAccept: application/x-bao;chunk-group-log=2\r\n"),
            log(2),
            "the list spans lines"
        );
        for bad in ["7", "-1", "x", "", "1000"] {
            let line = format!("Accept: application/x-bao;chunk-group-log={bad}\r\n");
            assert_eq!(asked(&line), Representation::BaoUnservable, "{bad:?}");
        }
        assert_eq!(
            asked("Accept: application/x-bao;chunk-group-log=9, application/x-bao;chunk-group-log=4\r\n"),
            log(4),
            "a servable member after an unservable one"
        );
    }
}
