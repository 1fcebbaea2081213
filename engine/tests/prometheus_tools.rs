//! The node's metrics, and the alert rules and dashboard shipped with it
//! (`packaging/prometheus/`, `packaging/grafana/`), as Prometheus' own tools read them:
//! `promtool check metrics` on a node that has served a bit of everything (names, types,
//! units, help, counters' `_total`), `promtool check rules` and `promtool test rules`
//! on the alerts, and every metric the rules and the dashboard name is one the node
//! exports. Needs `promtool` (Debian's `prometheus` package): `#[ignore]`d with that
//! reason; `scripts/test-all.sh` installs it and runs them.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

fn packaging(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(rel)
}

/// `promtool ARGS` with `stdin`: its exit status and everything it printed.
fn promtool(args: &[&str], stdin: &[u8], dir: &Path) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is not installed (apt-get install prometheus); scripts/test-all.sh installs it");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let mut said = String::from_utf8_lossy(&out.stdout).into_owned();
    said.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said)
}

/// A node in a network (so the DHT's families are rendered too) after a bit of
/// everything: its `/metrics`.
fn busy_node_metrics() -> Vec<u8> {
    let p2p = format!("127.0.0.1:{}", free_port());
    let mut n = Node::start(&temp_dir("promtool"), &["--shards", "2", "--p2p", &p2p]);
    let data = bytes(3, 200_000);
    let addr = upload(&n, &data);
    let path = format!("/o/{addr}");
    assert_eq!(get(n.http, &path).unwrap().status, 200);
    assert_eq!(get_with(n.http, &path, "Range: bytes=5-10\r\n").status, 206);
    assert_eq!(get(n.http, "/o/b3:nope").unwrap().status, 400);
    // A miss in a network with no provider: 502 (read-through found none).
    let absent = format!("/o/{}", Address::of(b"absent"));
    assert_eq!(get(n.http, &absent).unwrap().status, 502);
    let metrics = get(n.admin, "/metrics").unwrap();
    assert_eq!(metrics.status, 200);
    n.stop();
    metrics.body
}

/// The families a `/metrics` text declares.
fn families(metrics: &[u8]) -> BTreeSet<String> {
    String::from_utf8_lossy(metrics)
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(String::from)
        .collect()
}

/// Every `ron_*` name in `text`, a histogram's series named by their family.
fn ron_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("ron_") {
        let start = at + found;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = start
            + text[start..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(text.len() - start);
        if boundary {
            let name = &text[start..end];
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| f.ends_with("_seconds")))
                .unwrap_or(name);
            names.insert(family.to_string());
        }
        at = end;
    }
    names
}

#[test]
#[ignore = "needs promtool (Debian: prometheus): run by scripts/test-all.sh"]
fn promtool_passes_the_metrics_the_rules_and_the_rules_tests_and_they_name_real_metrics() {
    let metrics = busy_node_metrics();
    let dir = packaging("prometheus");
    let (ok, said) = promtool(&["check", "metrics"], &metrics, &dir);
    assert!(
        ok && said.trim().is_empty(),
        "promtool check metrics: {said}"
    );
    let (ok, said) = promtool(&["check", "rules", "ron-alerts.yml"], b"", &dir);
    assert!(ok && said.contains("SUCCESS: 19 rules found"), "{said}");
    let (ok, said) = promtool(&["test", "rules", "ron-alerts.test.yml"], b"", &dir);
    assert!(
        ok && said.contains("SUCCESS"),
        "promtool test rules: {said}"
    );

    let exported = families(&metrics);
    let rules = std::fs::read_to_string(dir.join("ron-alerts.yml")).unwrap();
    let dashboard = std::fs::read_to_string(packaging("grafana/ron-dashboard.json")).unwrap();
    for (what, text) in [("the alert rules", &rules), ("the dashboard", &dashboard)] {
        let named = ron_names(text);
        assert!(named.len() >= 15, "{what} name {named:?}");
        let unknown: Vec<&String> = named.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{what} name metrics the node does not export: {unknown:?}"
        );
    }
}

#[test]
#[ignore = "needs promtool (Debian: prometheus): run by scripts/test-all.sh"]
fn every_dashboard_query_is_promql_that_prometheus_parses() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(packaging("grafana/ron-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            // Grafana's variables, as it substitutes them.
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "5m")
                .replace("$instance", ".*");
            queries += 1;
            let expr = expr.replace('\n', " ").replace('\'', "''");
            rules.push_str(&format!(
                "      - record: dashboard:q{queries}\n        expr: '{expr}'\n"
            ));
        }
    }
    assert!(queries >= 20, "{queries} queries");
    let dir = temp_dir("dashboard-queries");
    std::fs::write(dir.join("queries.yml"), rules).unwrap();
    let (ok, said) = promtool(&["check", "rules", "queries.yml"], b"", &dir);
    assert!(ok, "a dashboard query does not parse: {said}");
}
