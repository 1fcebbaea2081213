//! What the harness asks of a node and of its process: one blocking HTTP/1.1 exchange
//! per request (`Connection: close`, bounded by a timeout), a metric's value out of
//! `/metrics`, and the process's RSS and CPU time from `/proc`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ron_codec::http::head::HEAD_LEN_MAX_DEFAULT;
use ron_codec::http::reply::{parse_response_head, ReplyParse};

/// A node's answer: its status and whole body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// One request and its whole answer, within `timeout` for the connect and each read.
pub fn exchange(
    to: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Answer, String> {
    let fail = |e: std::io::Error| format!("{method} {path} at {to}: {e}");
    let mut stream = TcpStream::connect_timeout(&to, timeout).map_err(fail)?;
    stream.set_read_timeout(Some(timeout)).map_err(fail)?;
    stream.set_write_timeout(Some(timeout)).map_err(fail)?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {to}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).map_err(fail)?;
    stream.write_all(body).map_err(fail)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).map_err(fail)?;
    match parse_response_head(&reply, HEAD_LEN_MAX_DEFAULT) {
        Ok(ReplyParse::Complete(head)) => Ok(Answer {
            status: head.status,
            body: reply[head.head_len..].to_vec(),
        }),
        Ok(ReplyParse::Partial) => Err(format!("{method} {path} at {to}: no whole answer head")),
        Err(e) => Err(format!("{method} {path} at {to}: {e}")),
    }
}

/// The first sample of the unlabelled family `name` in a `/metrics` text.
pub fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| {
            let (series, value) = line.split_once(' ')?;
            (series == name).then(|| value.trim().parse::<f64>().ok())?
        })
        .map(|v| v as u64)
}

/// A process's resident memory, KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A process's CPU time so far (user + system), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from its closing paren.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second in `/proc/<pid>/stat`: Linux's USER_HZ, 100 on every
/// architecture it exports to user space (`sysconf(_SC_CLK_TCK)`).
pub const TICKS_PER_S: f64 = 100.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_is_read_by_its_whole_series_name() {
        let text = "# HELP ron_dht_peers_alive x\n# TYPE ron_dht_peers_alive gauge\n\
                    ron_dht_peers_alive_total 9\nron_dht_peers_alive 42\n\
                    ron_dht_peers_connected 3.0\n";
        assert_eq!(metric(text, "ron_dht_peers_alive"), Some(42));
        assert_eq!(metric(text, "ron_dht_peers_connected"), Some(3));
        assert_eq!(metric(text, "ron_dht_routing_table_peers"), None);
    }

    #[test]
    fn this_process_has_a_resident_size_and_cpu_time() {
        let pid = std::process::id();
        assert!(rss_kib(pid).is_some_and(|kib| kib > 0));
        assert!(cpu_ticks(pid).is_some());
        assert_eq!(rss_kib(u32::MAX), None);
    }
}
