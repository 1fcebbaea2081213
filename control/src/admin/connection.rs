//! One admin connection: its head read against the whole-head deadline, its answer
//! written against the write deadline, then a lingering close.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ron_codec::http::head::{parse_request_head, HeadParse, Method};

use super::routes::{route, Reply, Request};
use super::{
    Answers, ADMIN_CROWDED_HEAD_MS, ADMIN_HEAD_BYTES_MAX, ADMIN_HEAD_TIMEOUT_MS, ADMIN_LINGER_MS,
    ADMIN_STOP_POLL_MS, ADMIN_WRITE_TIMEOUT_MS,
};

/// How reading a head ended.
#[derive(Debug)]
enum HeadRead {
    Complete(Request),
    /// Malformed or over [`ADMIN_HEAD_BYTES_MAX`]: answered 400 with the reason.
    Malformed(String),
    /// Closed by the client, past the deadline, or the server is stopping: no answer.
    Abandoned,
}

pub(super) fn serve(
    mut stream: TcpStream,
    accepted: Instant,
    answers: &Answers,
    stop: &AtomicBool,
    crowded: &AtomicBool,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let head_deadline = accepted + Duration::from_millis(ADMIN_HEAD_TIMEOUT_MS);
    let crowded_deadline = accepted + Duration::from_millis(ADMIN_CROWDED_HEAD_MS);
    let give_up = || {
        stop.load(Ordering::Relaxed)
            || (crowded.load(Ordering::Relaxed) && Instant::now() >= crowded_deadline)
    };
    let (reply, head_only) = match read_head(&mut stream, head_deadline, give_up)? {
        HeadRead::Complete(request) => (route(&request, answers), request.method == Method::Head),
        HeadRead::Malformed(reason) => (Reply::text(400, reason), false),
        HeadRead::Abandoned => return Ok(()),
    };
    let write_deadline = Instant::now() + Duration::from_millis(ADMIN_WRITE_TIMEOUT_MS);
    write_before(&mut stream, &reply.to_bytes(head_only), write_deadline)?;
    linger(&mut stream, || {
        stop.load(Ordering::Relaxed) || crowded.load(Ordering::Relaxed)
    });
    Ok(())
}

/// Ends the connection after an answer: no more to send, and for up to
/// [`ADMIN_LINGER_MS`] what the client still sends is read and dropped — unless
/// `give_up` (a stop, or the server crowded: an answered connection holds its thread no
/// longer then). A flood of whole heads held open after their answers (401s to a
/// client without the token) kept every thread lingering and could never be made to
/// give way, so probes queued behind it.
fn linger(stream: &mut TcpStream, give_up: impl Fn() -> bool) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + Duration::from_millis(ADMIN_LINGER_MS);
    let mut sink = [0u8; 1024];
    while let Some(wait) = read_wait(Instant::now(), deadline) {
        if give_up() || stream.set_read_timeout(Some(wait)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => {}
            Err(e) if waited(&e) => {}
            _ => return,
        }
    }
}

/// Reads until the head is complete, each read waiting at most for the time left, and
/// no more than [`ADMIN_STOP_POLL_MS`] between two looks at `give_up` (a stop, or the
/// server crowded while this connection has been slow), each after what arrived was
/// read.
fn read_head(
    stream: &mut TcpStream,
    deadline: Instant,
    give_up: impl Fn() -> bool,
) -> std::io::Result<HeadRead> {
    let mut buf = vec![0u8; ADMIN_HEAD_BYTES_MAX];
    let mut filled = 0;
    loop {
        let Some(wait) = read_wait(Instant::now(), deadline) else {
            return Ok(HeadRead::Abandoned);
        };
        stream.set_read_timeout(Some(wait))?;
        // `filled` < the buffer: a full buffer without a complete head is refused below.
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Ok(HeadRead::Abandoned),
            Ok(n) => filled += n,
            Err(e) if waited(&e) => {}
            Err(e) => return Err(e),
        }
        match parse_request_head(&buf[..filled], ADMIN_HEAD_BYTES_MAX) {
            Ok(HeadParse::Complete(head)) => return Ok(HeadRead::Complete(Request::of(&head))),
            Ok(HeadParse::Partial) => {}
            Err(e) => return Ok(HeadRead::Malformed(e.to_string())),
        }
        // Asked only once what has arrived is read: a head that is whole is answered.
        if give_up() {
            return Ok(HeadRead::Abandoned);
        }
    }
}

/// The time left before `deadline`, if any (never zero: a zero timeout means "none").
fn time_left(now: Instant, deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(now)
        .filter(|left| !left.is_zero())
}

/// How long the next read may wait: the time left, at most [`ADMIN_STOP_POLL_MS`].
fn read_wait(now: Instant, deadline: Instant) -> Option<Duration> {
    time_left(now, deadline).map(|left| left.min(Duration::from_millis(ADMIN_STOP_POLL_MS)))
}

/// A socket timeout expired (or a signal interrupted the call).
fn waited(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// Writes all of `bytes` before `deadline`, each write waiting only for the time left.
fn write_before(
    stream: &mut TcpStream,
    mut bytes: &[u8],
    deadline: Instant,
) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let Some(left) = time_left(Instant::now(), deadline) else {
            return Err(ErrorKind::TimedOut.into());
        };
        stream.set_write_timeout(Some(left))?;
        match stream.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if waited(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves one `GET /healthz` whose client keeps its end open, accepted at
    /// `accepted`; asserts the 200 and returns how long `serve` took.
    fn serve_healthz(accepted: Instant, crowded: bool) -> Duration {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let (server, _) = listener.accept().unwrap();
        let (stop, crowded) = (AtomicBool::new(false), AtomicBool::new(crowded));
        let started = Instant::now();
        serve(server, accepted, &Answers::for_tests(None), &stop, &crowded).unwrap();
        let took = started.elapsed();
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        took
    }

    /// A connection let in after waiting for a thread while the server was crowded (its
    /// accept longer ago than ADMIN_CROWDED_HEAD_MS), whose head has arrived whole, is
    /// answered. Before, it was closed without a word: the crowded rule was asked before
    /// anything was read.
    #[test]
    fn a_whole_head_is_answered_even_when_crowded_and_late() {
        let accepted = Instant::now() - Duration::from_millis(ADMIN_CROWDED_HEAD_MS + 10);
        serve_healthz(accepted, true);
    }

    /// An answered connection lingers (its client's late bytes read and dropped) unless
    /// the server is crowded: then its thread is free at once.
    #[test]
    fn an_answered_connection_lingers_only_while_the_server_has_room() {
        let linger = Duration::from_millis(ADMIN_LINGER_MS);
        assert!(serve_healthz(Instant::now(), false) >= linger);
        let crowded = serve_healthz(Instant::now(), true);
        assert!(crowded < linger / 2, "{crowded:?}");
    }

    #[test]
    fn a_read_waits_for_the_time_left_and_never_past_the_deadline() {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(ADMIN_HEAD_TIMEOUT_MS);
        let poll = Duration::from_millis(ADMIN_STOP_POLL_MS);
        assert_eq!(read_wait(start, deadline), Some(poll));
        let late = deadline - Duration::from_millis(30);
        assert_eq!(read_wait(late, deadline), Some(Duration::from_millis(30)));
        assert_eq!(read_wait(deadline, deadline), None, "never a zero timeout");
        assert_eq!(read_wait(deadline + poll, deadline), None);
        assert_eq!(time_left(start, deadline), Some(deadline - start));
    }
}
