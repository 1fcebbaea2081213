//! What an admin request asks for, and its answer. Routing reads counters and the
//! control thread's latest copy; it does no I/O.

use ron_codec::http::head::{Method, RequestHead};
use ron_link::policy::constant_time_eq;

use super::Answers;
use crate::view::sample;
use crate::{prometheus, reports};

/// A parsed admin request: what routing needs, copied out of the head buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Request {
    pub(super) method: Method,
    path: String,
    authorization: Option<Vec<u8>>,
}

impl Request {
    pub(super) fn of(head: &RequestHead<'_>) -> Request {
        Request {
            method: head.method,
            path: head.path().to_owned(),
            authorization: head.authorization.map(<[u8]>::to_vec),
        }
    }
}

/// Picks the answer. Probes (`/healthz`, `/readyz`) need no token.
pub(super) fn route(request: &Request, answers: &Answers) -> Reply {
    if !matches!(request.method, Method::Get | Method::Head) {
        return Reply::text(405, "admin endpoints are GET only\n");
    }
    let path = request.path.as_str();
    let probe = matches!(path, "/healthz" | "/readyz");
    if !probe && !authorized(request, answers.admin_token.as_deref()) {
        return Reply::text(
            401,
            "admin endpoints need Authorization: Bearer <admin token>\n",
        );
    }
    match path {
        "/healthz" => Reply::text(200, "ok\n"),
        "/readyz" => {
            let metrics: Vec<_> = answers.shards.iter().map(|m| m.snapshot()).collect();
            let verdict = reports::readiness(&metrics);
            Reply::json(if verdict.ready { 200 } else { 503 }, verdict.body)
        }
        "/metrics" => {
            let published = answers.board.latest();
            let body = prometheus::render_metrics(
                &sample(&answers.shards, &answers.requests),
                &published.extra,
            );
            Reply::new(200, "text/plain; version=0.0.4", body.into_bytes())
        }
        "/admin/stats" => {
            let published = answers.board.latest();
            let samples = sample(&answers.shards, &answers.requests);
            Reply::json(200, reports::stats(&samples, &published.shards))
        }
        "/version" => Reply::json(200, reports::version(answers.version)),
        _ => Reply::text(404, "not found\n"),
    }
}

/// With an admin token configured, the request must carry it as a bearer token.
fn authorized(request: &Request, admin_token: Option<&str>) -> bool {
    let Some(token) = admin_token else {
        return true;
    };
    request
        .authorization
        .as_deref()
        .and_then(|v| v.strip_prefix(b"Bearer "))
        .is_some_and(|given| constant_time_eq(given, token.as_bytes()))
}

/// One answer; the connection is closed after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Reply {
    fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type,
            body,
        }
    }

    pub(super) fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply::new(status, "text/plain", body.into().into_bytes())
    }

    fn json(status: u16, body: String) -> Reply {
        Reply::new(status, "application/json", body.into_bytes())
    }

    /// The response; a HEAD request gets the head alone (same Content-Length).
    pub(super) fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            ron_codec::http::response::reason_phrase(self.status),
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::Board;
    use ron_link::requests::RequestCounters;
    use ron_shards::ShardMetrics;
    use std::sync::Arc;

    fn request(method: Method, path: &str, authorization: Option<&str>) -> Request {
        Request {
            method,
            path: path.into(),
            authorization: authorization.map(|a| a.as_bytes().to_vec()),
        }
    }

    #[test]
    fn probes_need_no_token_and_the_rest_need_the_right_one() {
        let token = Some("s3cret");
        assert!(authorized(&request(Method::Get, "/metrics", None), None));
        assert!(!authorized(&request(Method::Get, "/metrics", None), token));
        let wrong = request(Method::Get, "/metrics", Some("Bearer nope"));
        assert!(!authorized(&wrong, token));
        let right = request(Method::Get, "/metrics", Some("Bearer s3cret"));
        assert!(authorized(&right, token));
        let answers = Answers {
            shards: vec![Arc::new(ShardMetrics::default())],
            requests: vec![Arc::new(RequestCounters::default())],
            version: "9.9.9",
            admin_token: token.map(String::from),
            board: Arc::new(Board::new(Default::default())),
        };
        let status = |r: &Request| route(r, &answers).status;
        assert_eq!(status(&request(Method::Get, "/healthz", None)), 200);
        assert_eq!(status(&request(Method::Get, "/readyz", None)), 503);
        assert_eq!(status(&request(Method::Get, "/version", None)), 401);
        assert_eq!(status(&request(Method::Put, "/healthz", None)), 405);
        assert_eq!(status(&right), 200);
        let version = request(Method::Get, "/version", Some("Bearer s3cret"));
        assert_eq!(
            route(&version, &answers).body,
            br#"{"name":"ron","version":"9.9.9"}"#
        );
        let missing = request(Method::Get, "/nope", Some("Bearer s3cret"));
        assert_eq!(status(&missing), 404);
    }

    #[test]
    fn a_reply_is_one_closed_answer_with_its_length() {
        let bytes = Reply::text(503, "busy\n").to_bytes(false);
        let head = Reply::text(503, "busy\n").to_bytes(true);
        assert!(
            head.ends_with(b"Content-Length: 5\r\nConnection: close\r\n\r\n"),
            "{head:?}"
        );
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n"
        );
    }
}
