//! The docs, kept honest where a machine can check them: every path ARCHITECTURE.md
//! names exists; every admin endpoint HTTP-API.md lists is routed by the real node and
//! every route is listed; every metric it lists is exported and every exported one is
//! listed; every `ron` command in the code blocks of the README, OPERATIONS.md and
//! HTTP-API.md is one the binary accepts, and every config block one the node takes; the
//! unit lines OPERATIONS.md quotes are the unit's; `/admin/stats`' keys and the client's
//! commands are listed; no doc keeps a status list; the README's test command is CI's.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The `code spans` of a Markdown text.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// The lines of `text` from its `## {heading}` line to the next heading of that level.
fn section<'a>(text: &'a str, heading: &str) -> Vec<&'a str> {
    text.lines()
        .skip_while(|l| !l.starts_with(&format!("## {heading}")))
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .collect()
}

#[test]
fn every_path_architecture_names_exists() {
    let text = read("docs/ARCHITECTURE.md");
    let looks_like_path = |s: &str| {
        let path_chars = s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c));
        let file = [".rs", ".md", ".sh", ".toml"]
            .iter()
            .any(|e| s.ends_with(e));
        path_chars && !s.starts_with('/') && !s.starts_with('.') && (s.contains('/') || file)
    };
    let mut missing = Vec::new();
    for span in code_spans(&text).into_iter().filter(|s| looks_like_path(s)) {
        if !repo().join(span).exists() {
            missing.push(span);
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that are not in the repository (write them from the repository root): {missing:?}"
    );
}

/// The admin endpoints HTTP-API.md lists: (method, path with placeholders filled in).
fn listed_admin_endpoints(addr: &str) -> Vec<(String, String)> {
    let text = read("docs/HTTP-API.md");
    let mut endpoints = Vec::new();
    for row in section(&text, "Admin")
        .iter()
        .filter(|l| l.starts_with("| `"))
    {
        let first_cell = row.split('|').nth(1).unwrap_or_default();
        for span in code_spans(first_cell) {
            let (method, path) = match span.split_once(' ') {
                Some((method, path)) => (method, path),
                None => ("GET", span),
            };
            if !path.starts_with('/') {
                continue;
            }
            endpoints.push((method.to_string(), path.replace("b3:<hex>", addr)));
        }
    }
    endpoints
}

/// The paths and path prefixes the admin router matches, read from its source.
fn routed_admin_paths() -> BTreeSet<String> {
    let source = read("control/src/admin/routes.rs");
    let router = source.split("#[cfg(test)]").next().unwrap_or_default();
    let route = router
        .split("pub(super) fn route(")
        .nth(1)
        .expect("the admin router's route function");
    let body = route.split("\n}\n").next().unwrap_or_default();
    body.split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with('/') && !s.contains(' '))
        .map(|s| s.trim_end_matches('/').to_string())
        .collect()
}

#[test]
fn every_admin_endpoint_listed_is_routed_and_every_route_is_listed() {
    let dir = temp_dir("docs-admin");
    let mut node = Node::start(&dir, &["--shards", "1", "--p2p", "127.0.0.1:0"]);
    let addr = upload(&node, b"an object the repair endpoint can check").to_string();
    let listed = listed_admin_endpoints(&addr);
    assert!(listed.len() >= 9, "HTTP-API.md's admin table: {listed:?}");
    for (method, path) in &listed {
        let raw =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n");
        let r = request(node.admin, raw.as_bytes()).unwrap();
        let unrouted = r.status == 404 && r.body == b"not found\n";
        assert!(
            !unrouted,
            "HTTP-API.md lists {method} {path}, the node does not route it"
        );
        assert!(r.status < 500 || r.status == 503, "{method} {path}: {r:?}");
    }
    let listed_text = read("docs/HTTP-API.md");
    let admin_table = section(&listed_text, "Admin").join("\n");
    for path in routed_admin_paths() {
        assert!(
            admin_table.contains(&format!("`{path}")) || admin_table.contains(&format!(" {path}")),
            "the admin router routes {path}, HTTP-API.md's admin table does not list it"
        );
    }
    node.stop();
}

/// The metric families HTTP-API.md's metrics table lists.
fn listed_metrics() -> BTreeSet<String> {
    let text = read("docs/HTTP-API.md");
    text.lines()
        .filter(|l| l.starts_with("| `ron_"))
        .flat_map(|row| code_spans(row.split('|').nth(1).unwrap_or_default()))
        .filter(|s| s.starts_with("ron_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_metric_listed_is_exported_and_every_exported_one_is_listed() {
    let dir = temp_dir("docs-metrics");
    let mut node = Node::start(&dir, &["--shards", "2", "--p2p", "127.0.0.1:0"]);
    let body = get(node.admin, "/metrics").unwrap().body;
    let exported: BTreeSet<String> = String::from_utf8(body)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    let listed = listed_metrics();
    let unlisted: Vec<_> = exported.difference(&listed).collect();
    let absent: Vec<_> = listed.difference(&exported).collect();
    assert!(
        unlisted.is_empty(),
        "exported, not in HTTP-API.md: {unlisted:?}"
    );
    assert!(
        absent.is_empty(),
        "in HTTP-API.md, not exported: {absent:?}"
    );
    node.stop();
}

/// A README line that runs `ron`, as the arguments after `ron` (`serve` becomes
/// `config print`, which resolves the same flags without serving).
fn ron_arguments(line: &str, addr: &str) -> Option<Vec<String>> {
    let command = line.split(" # ").next()?.trim();
    let rest = command
        .strip_prefix("ron ")
        .or_else(|| command.strip_prefix("target/release/ron "))
        .or_else(|| command.split_once(" -p ron-engine -- ").map(|(_, r)| r))?;
    let mut args: Vec<String> = rest
        .split_whitespace()
        .map(|w| w.replace("b3:<hex>", addr))
        .collect();
    if args.first().map(String::as_str) == Some("serve") {
        args.splice(0..1, ["config".to_string(), "print".to_string()]);
    }
    Some(args)
}

/// The `ron` commands in the code blocks of `doc`, as arguments: a line continued with
/// `\` is joined to the next, a synopsis (`[--out DIR]`) is left out, and placeholders
/// are filled (`…` a value, `...` more flags).
fn ron_commands_in(doc: &str, addr: &str) -> Vec<Vec<String>> {
    let text = read(doc);
    let blocks: Vec<&str> = text.split("```").skip(1).step_by(2).collect();
    let mut commands = Vec::new();
    for block in blocks {
        let joined = block.replace("\\\n", " ");
        for line in joined.lines().filter(|l| !l.contains("[--")) {
            let filled = line.replace('…', "x");
            if let Some(args) = ron_arguments(&filled, addr) {
                commands.push(args.into_iter().filter(|a| a != "...").collect());
            }
        }
    }
    commands
}

/// Each of `commands` is accepted by the binary (a client fails to connect, quickly,
/// after its arguments were accepted: no node runs on the default ports in a test).
fn assert_accepted(doc: &str, commands: &[Vec<String>]) {
    // What the commands read: a file, the config the README writes, the dev cert.
    let dir = temp_dir("docs-commands");
    std::fs::write(dir.join("myfile"), b"a file to put").unwrap();
    std::fs::write(
        dir.join("ron.toml"),
        "[quota_default]\nrequests_per_s = 200\n",
    )
    .unwrap();
    for args in commands {
        // A config file the doc names (/etc/ron/ron.toml) is the one written above.
        let args: Vec<&str> = args
            .iter()
            .zip(std::iter::once("").chain(args.iter().map(String::as_str)))
            .map(|(arg, before)| match before {
                "--config" => "ron.toml",
                _ => arg.as_str(),
            })
            .collect();
        let out = Command::new(env!("CARGO_BIN_EXE_ron"))
            .args(&args)
            .current_dir(&dir)
            .env("RON_TOKEN", "")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() != Some(2) && !stderr.contains("for usage"),
            "{doc}: `ron {}` is refused by the binary: {stderr}",
            args.join(" ")
        );
    }
}

#[test]
fn every_ron_command_in_the_readme_operations_and_http_api_is_one_the_binary_accepts() {
    let addr = ron_codec::Address::of(b"any object").to_string();
    for (doc, at_least) in [
        ("README.md", 10),
        ("docs/OPERATIONS.md", 8),
        ("docs/HTTP-API.md", 0),
    ] {
        let commands = ron_commands_in(doc, &addr);
        assert!(
            commands.len() >= at_least,
            "{doc}: commands found: {commands:?}"
        );
        assert_accepted(doc, &commands);
    }
}

/// Every TOML block of OPERATIONS.md and HTTP-API.md is a configuration the node takes
/// (`ron config print --config` refuses an unknown key or section, or a bad value).
#[test]
fn every_config_block_in_the_docs_is_one_the_node_takes() {
    let dir = temp_dir("docs-toml");
    let mut checked = 0;
    for doc in ["docs/OPERATIONS.md", "docs/HTTP-API.md"] {
        let text = read(doc);
        for block in text.split("```").skip(1).step_by(2) {
            let Some(toml) = block.strip_prefix("toml\n") else {
                continue;
            };
            let file = dir.join(format!("block-{checked}.toml"));
            std::fs::write(&file, toml).unwrap();
            let out = Command::new(env!("CARGO_BIN_EXE_ron"))
                .args(["config", "print", "--config"])
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{doc}: a config block the node refuses: {}\n{toml}",
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 1, "no TOML block found");
}

/// Every systemd directive OPERATIONS.md quotes (`Name=value`) is a line of the unit the
/// package installs.
#[test]
fn every_unit_line_operations_quotes_is_in_the_unit() {
    let unit = read("packaging/ron.service");
    let lines: BTreeSet<&str> = unit.lines().map(str::trim).collect();
    // What the unit says, not what it leaves out ("Not used: `SystemCallFilter=~…`") or
    // what an operator may add (an item that says `systemctl edit`).
    let text: String = read("docs/OPERATIONS.md")
        .split("\n\n")
        .flat_map(|paragraph| paragraph.split("\n- "))
        .flat_map(|item| item.split("\n  Not used:").take(1))
        .filter(|item| !item.contains("systemctl edit"))
        .collect::<Vec<_>>()
        .join("\n");
    let directive = |span: &&str| {
        let (name, _) = span.split_once('=').unwrap_or(("", ""));
        name.len() > 2
            && name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && name.chars().all(|c| c.is_ascii_alphanumeric())
            // Not a notification (`READY=1`): directives are CamelCase.
            && name.chars().any(|c| c.is_ascii_lowercase())
    };
    let quoted: Vec<&str> = code_spans(&text).into_iter().filter(directive).collect();
    assert!(quoted.len() >= 4, "unit lines quoted: {quoted:?}");
    for span in quoted {
        // `LimitNOFILE=` or `LimitNOFILE=N` names the directive; anything else is a line.
        let named = span.ends_with('=') || span.ends_with("=N");
        let directive = span.trim_end_matches('N');
        let said = match named {
            true => lines.iter().any(|l| l.starts_with(directive)),
            false => lines.contains(span),
        };
        assert!(
            said,
            "OPERATIONS.md quotes `{span}`, packaging/ron.service does not say it"
        );
    }
}

/// Lines that say what is built or not: they go stale, and what is not built lives in
/// the issues. (PERF.md is a dated record and may say what was not built then.)
#[test]
fn no_doc_keeps_a_status_list() {
    let mut docs = vec![repo().join("README.md")];
    for dir in ["docs", "docs/design"] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap().flatten() {
            let path = entry.path();
            let markdown = path.extension().is_some_and(|e| e == "md");
            if markdown && !path.ends_with("PERF.md") {
                docs.push(path);
            }
        }
    }
    let stale = [
        "not built yet",
        "not yet:",
        "not yet —",
        "(open issue)",
        "status:",
    ];
    for doc in docs {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (i, line) in text.lines().enumerate() {
            let lower = line.to_lowercase();
            let said = stale
                .iter()
                .find(|s| lower.contains(**s) && (**s != "status:" || lower.starts_with(**s)));
            assert!(
                said.is_none(),
                "{}:{}: {line:?} says what is (not) built: say what it does, and leave what is not built to the issues",
                doc.display(),
                i + 1
            );
        }
    }
}

/// The client commands the README's and ARCHITECTURE.md's crate tables list are the
/// binary's.
#[test]
fn every_client_command_is_in_the_crate_tables() {
    for (doc, row) in [
        ("README.md", "`ron-client`"),
        ("docs/ARCHITECTURE.md", "`ron-client`"),
    ] {
        let text = read(doc);
        let line = text
            .lines()
            .find(|l| l.contains(row) && l.starts_with('|'))
            .unwrap_or_else(|| panic!("{doc}: no ron-client row"));
        for command in ron_client::cli::COMMANDS {
            assert!(
                line.contains(&format!("`{command}`")),
                "{doc}'s ron-client row does not name `{command}`"
            );
        }
    }
}

/// Every key `/admin/stats` answers with is named in HTTP-API.md's row for it.
#[test]
fn every_admin_stats_key_is_listed() {
    let mut node = Node::start(&temp_dir("docs-stats"), &["--shards", "2"]);
    let stats = get(node.admin, "/admin/stats").unwrap().json();
    node.stop();
    let text = read("docs/HTTP-API.md");
    // Its `scrub` object is listed as /admin/scrub's answer.
    let rows: String = text
        .lines()
        .filter(|l| l.starts_with("| `/admin/stats` |") || l.starts_with("| `/admin/scrub` |"))
        .collect();
    assert!(
        rows.contains("/admin/scrub"),
        "HTTP-API.md's /admin/stats and /admin/scrub rows"
    );
    let mut keys = BTreeSet::new();
    collect_keys(&stats, &mut keys);
    for key in keys {
        assert!(
            rows.contains(&format!("\"{key}\"")),
            "/admin/stats answers with {key:?}; HTTP-API.md's row does not list it"
        );
    }
}

fn collect_keys(value: &serde_json::Value, keys: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                keys.insert(key.clone());
                collect_keys(inner, keys);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_keys(v, keys)),
        _ => {}
    }
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

#[test]
fn the_readme_test_command_is_what_ci_runs_and_every_ignored_test_names_its_need() {
    let readme = read("README.md");
    let first_block = readme
        .split("```")
        .nth(1)
        .expect("the README's first code block");
    let test_command = first_block
        .lines()
        .skip(1) // the language tag
        .filter(|l| !l.trim().is_empty())
        .nth(1)
        .and_then(|l| l.split(" # ").next())
        .map(str::trim)
        .expect("the README's second command");
    assert_eq!(test_command, "bash scripts/test-all.sh");
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == test_command),
        ".ci/run does not run the README's test command {test_command:?}"
    );
    let script = read("scripts/test-all.sh");
    assert!(
        script.contains("cargo test --workspace --locked -- --include-ignored"),
        "scripts/test-all.sh runs the ignored tests too"
    );
    // A plain `cargo test` leaves out only tests that say what they need and who runs them.
    let mut ignored = 0;
    for file in rust_files(&repo().join("engine/tests")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text
            .lines()
            .filter(|l| l.trim_start().starts_with("#[ignore"))
        {
            ignored += 1;
            let reason = line
                .split_once("= \"")
                .and_then(|(_, r)| r.strip_suffix("\"]"))
                .unwrap_or_else(|| panic!("{}: {line}: no reason", file.display()));
            assert!(
                reason.starts_with("needs ") && reason.ends_with(": run by scripts/test-all.sh"),
                "{}: {reason:?}: an ignored test says `needs <what>: run by scripts/test-all.sh`",
                file.display()
            );
        }
    }
    assert!(ignored > 0, "no ignored test found: the scan is broken");
}
