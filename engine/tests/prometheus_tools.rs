//! The node's metrics as Prometheus' own tools read them: `promtool check metrics` on a
//! node that has served a bit of everything (names, types, units, help, counters'
//! `_total`). Needs `promtool` (Debian's `prometheus` package; `.ci/run` installs it):
//! the test fails without it, it does not skip.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

/// `promtool check metrics` on `text`: its exit status and everything it printed.
fn promtool_check_metrics(text: &[u8]) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is not installed (apt-get install prometheus); .ci/run installs it");
    child.stdin.take().unwrap().write_all(text).unwrap();
    let out = child.wait_with_output().unwrap();
    let mut said = String::from_utf8_lossy(&out.stdout).into_owned();
    said.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said)
}

#[test]
fn promtool_finds_nothing_to_say_about_a_busy_nodes_metrics() {
    let mut n = Node::start(&temp_dir("promtool"), &["--shards", "2"]);
    let data = bytes(3, 200_000);
    let addr = upload(&n, &data);
    let path = format!("/o/{addr}");
    assert_eq!(get(n.http, &path).unwrap().status, 200);
    assert_eq!(get_with(n.http, &path, "Range: bytes=5-10\r\n").status, 206);
    assert_eq!(get(n.http, "/o/b3:nope").unwrap().status, 400);
    let absent = format!("/o/{}", Address::of(b"absent"));
    assert_eq!(get(n.http, &absent).unwrap().status, 404);
    let metrics = get(n.admin, "/metrics").unwrap();
    assert_eq!(metrics.status, 200);
    let (ok, said) = promtool_check_metrics(&metrics.body);
    assert!(
        ok && said.trim().is_empty(),
        "promtool check metrics: {said}"
    );
    n.stop();
}
