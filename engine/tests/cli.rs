//! The `ron` client end to end: put/get/stat over OAP, HTTP and TLS (both ALPN
//! protocols, dev certificate), a 64 MiB object with ranged reads, exit codes, and
//! `-o FILE` never left holding unverified or partial bytes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

#[test]
fn put_get_stat_round_trip_over_oap_http_and_tls() {
    let t = tls_node("cli-roundtrip", &["--shards", "2"]);
    let n = &t.node;
    let work = temp_dir("cli-files");
    let data = bytes(11, 300_000);
    let file = write_file(&work, "in", &data);
    let oap = n.oap.to_string();
    let http = n.http.to_string();
    let cert = t.cert.to_str().unwrap();
    let expected = Address::of(&data).to_string();

    let printed = ok(&ron(&["put", file.to_str().unwrap(), "--server", &oap]));
    assert_eq!(printed.trim(), expected);
    let stat = ok(&ron(&["stat", &expected, "--server", &oap]));
    assert_eq!(stat.trim(), format!("{expected} 300000"));

    // Every transport, whole and ranged, to stdout and to a file.
    let transports: Vec<Vec<&str>> = vec![
        vec!["--server", &oap],
        vec!["--server", &http, "--http"],
        vec!["--server", &t.tls, "--tls", "--ca", cert],
        vec!["--server", &t.tls, "--tls", "--http", "--ca", cert],
        vec!["--server", &t.tls, "--tls", "--insecure-dev"],
    ];
    for (i, how) in transports.iter().enumerate() {
        let mut args = vec!["get", expected.as_str()];
        args.extend(how.iter().copied());
        let whole = ron(&args);
        assert!(whole.status.success(), "{how:?}: {}", stderr(&whole));
        assert!(whole.stdout == data, "{how:?}");
        let mut ranged = args.clone();
        ranged.extend(["--range", "65530-140000"]);
        assert!(ron(&ranged).stdout == data[65_530..=140_000], "{how:?}");
        let out = work.join(format!("out{i}"));
        let mut to_file = args.clone();
        to_file.extend(["-o", out.to_str().unwrap()]);
        ok(&ron(&to_file));
        assert!(std::fs::read(&out).unwrap() == data, "{how:?}");
        let mut stat = vec!["stat", expected.as_str()];
        stat.extend(how.iter().copied());
        assert_eq!(ok(&ron(&stat)).trim(), format!("{expected} 300000"));
    }

    // A link planted at the `.part` name (a shared directory) is replaced, never
    // written through; a rename that fails (-o names a directory) leaves no `.part`.
    let victim = write_file(&work, "victim", b"keep me");
    let planted = work.join("planted");
    std::os::unix::fs::symlink(&victim, work.join("planted.part")).unwrap();
    ok(&ron(&[
        "get",
        &expected,
        "-o",
        planted.to_str().unwrap(),
        "--server",
        &oap,
    ]));
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    assert!(std::fs::read(&planted).unwrap() == data);
    let a_dir = work.join("a-dir");
    std::fs::create_dir_all(a_dir.join("inside")).unwrap();
    let out = ron(&[
        "get",
        &expected,
        "-o",
        a_dir.to_str().unwrap(),
        "--server",
        &oap,
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(!work.join("a-dir.part").exists(), "a .part left behind");

    // Uploads over TLS, both protocols; stdin too. The 300 KB file takes several DATA
    // frames, between which the client looks for an early answer (a session ticket the
    // node sends after the handshake is not one).
    let printed = ok(&ron(&[
        "put",
        file.to_str().unwrap(),
        "--server",
        &t.tls,
        "--tls",
        "--ca",
        cert,
    ]));
    assert_eq!(printed.trim(), expected);
    let small = write_file(&work, "small", b"over tls");
    let printed = ok(&ron(&[
        "put",
        small.to_str().unwrap(),
        "--server",
        &t.tls,
        "--tls",
        "--http",
        "--ca",
        cert,
    ]));
    assert_eq!(printed.trim(), Address::of(b"over tls").to_string());
    let mut child = Command::new(env!("CARGO_BIN_EXE_ron"))
        .args(["put", "-", "--server", &t.tls, "--tls", "--ca", cert])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(ok(&out).trim(), Address::of(b"from stdin").to_string());
}

#[test]
fn a_64_mib_object_through_put_and_ranged_get() {
    let n = Node::start(&temp_dir("cli-64m"), &["--shards", "2"]);
    let work = temp_dir("cli-64m-files");
    let data = bytes(12, 64 << 20);
    let file = write_file(&work, "big", &data);
    let oap = n.oap.to_string();
    let printed = ok(&ron(&[
        "put",
        file.to_str().unwrap(),
        "--server",
        &oap,
        "-q",
    ]));
    let addr = printed.trim().to_string();
    assert_eq!(addr, Address::of(&data).to_string());
    let out = work.join("big.out");
    ok(&ron(&[
        "get",
        &addr,
        "-o",
        out.to_str().unwrap(),
        "--server",
        &oap,
    ]));
    assert!(std::fs::read(&out).unwrap() == data);
    for (first, last) in [
        (0, 0),
        (65_535, 65_536),
        (33_000_000, 41_999_999),
        (67_108_000, 67_108_863),
    ] {
        let range = format!("{first}-{last}");
        let got = ron(&["get", &addr, "--range", &range, "--server", &oap]);
        assert!(got.stdout == data[first..=last], "{range}");
    }
    let http = n.http.to_string();
    let got = ron(&[
        "get",
        &addr,
        "--range",
        "1000-2000",
        "--server",
        &http,
        "--http",
    ]);
    assert!(got.stdout == data[1000..=2000]);
}

#[test]
fn errors_print_the_nodes_message_and_documented_exit_codes() {
    // No parity: the rotten group below must stay unrecoverable.
    let t = tls_node("cli-errors", &["--token", "s3cret", "--ec", "off"]);
    let n = &t.node;
    let work = temp_dir("cli-errors-files");
    let oap = n.oap.to_string();
    let file = write_file(&work, "f", &bytes(13, 200_000));

    let out = ron(&["put", file.to_str().unwrap(), "--server", &oap]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("401 unauthorized: tenant 0: writes need a bearer token"),
        "{}",
        stderr(&out)
    );
    let out = ron(&[
        "put",
        file.to_str().unwrap(),
        "--server",
        &oap,
        "--token",
        "s3cret",
    ]);
    let addr = ok(&out).trim().to_string();

    let missing = Address::of(b"nope").to_string();
    let out = ron(&["get", &missing, "--server", &oap]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&format!("404 not_found: no object {missing} on this node")));
    let out = ron(&["get", "b3:XYZ", "--server", &oap]);
    assert_eq!(out.status.code(), Some(2));
    let out = ron(&["get", &addr, "--server", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("cannot connect to 127.0.0.1:1"));
    let out = ron(&["get", &addr, "--server", &t.tls, "--tls"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "TLS needs --ca or --insecure-dev"
    );
    // Probes that connect and close without a byte (a balancer's TCP health check) are
    // no TLS failure; plain bytes on the TLS port are: that handshake fails, counted.
    for _ in 0..3 {
        drop(connect(t.tls.parse().unwrap()));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    {
        use std::io::{Read, Write};
        let mut plain = connect(t.tls.parse().unwrap());
        plain.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut rest = Vec::new();
        let _ = plain.read_to_end(&mut rest);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while metric(n.admin, "ron_tls_handshake_failures_total") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "handshake failure not counted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        metric(n.admin, "ron_tls_handshake_failures_total"),
        1,
        "the probes are not counted"
    );
    // A CA that did not sign the node's certificate.
    let other = work.join("other");
    ok(&ron(&["cert", "--dev", "--out", other.to_str().unwrap()]));
    let wrong_ca = other.join("cert.pem");
    let out = ron(&[
        "get",
        &addr,
        "--server",
        &t.tls,
        "--tls",
        "--ca",
        wrong_ca.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("TLS: handshake"), "{}", stderr(&out));

    // Rot in the stored object: the node refuses the group, -o FILE is never created.
    let path = n.object_file(&addr.parse().unwrap());
    let mut stored = std::fs::read(&path).unwrap();
    stored[150_000] ^= 1;
    std::fs::write(&path, stored).unwrap();
    let out_file = work.join("rotten");
    let out = ron(&[
        "get",
        &addr,
        "-o",
        out_file.to_str().unwrap(),
        "--server",
        &oap,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("500 bad_digest"), "{}", stderr(&out));
    assert!(!out_file.exists());
    assert!(!work.join("rotten.part").exists());
}

#[test]
fn the_packaged_config_is_the_sample_and_lists_every_key() {
    let sample = ok(&ron(&["config", "sample", "--data-dir", "/var/lib/ron"]));
    let packaged = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/ron.toml"),
    )
    .unwrap();
    assert_eq!(
        packaged, sample,
        "packaging/ron.toml is stale: ron config sample --data-dir /var/lib/ron > packaging/ron.toml"
    );
    assert!(sample.contains("\ndata_dirs = [\"/var/lib/ron\"]\n"));
    for key in ron_engine::config::keys::KEYS {
        assert!(
            sample.contains(&format!("\n#{} = ", key.key)) || key.key == "data_dirs",
            "{} missing",
            key.key
        );
    }
}

/// `ron serve` with a relative data dir that does not exist yet — the README's first
/// command makes `./ron-data` — makes it (and its parent) in its working dir and gets
/// ready. A change that made every new dir's parent synced walked the relative path's
/// ancestors to "" and refused the start ("create dir : No such file or directory").
#[test]
fn a_relative_data_dir_is_made_in_the_working_dir() {
    let dir = temp_dir("relative-data-dir");
    let ports: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let log = std::fs::File::create(dir.join("stderr")).unwrap();
    let mut node = Command::new(env!("CARGO_BIN_EXE_ron"))
        .args([
            "serve",
            "--data-dir",
            "nested/ron-data",
            "--http",
            &ports[0],
        ])
        .args(["--admin", &ports[1], "--oap", &ports[2], "--shards", "1"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let admin: std::net::SocketAddr = ports[1].parse().unwrap();
    let ready = (0..1500).any(|_| {
        if node.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        get(admin, "/readyz").is_ok_and(|r| r.status == 200)
    });
    send_signal(node.id(), "TERM");
    let _ = node.wait();
    let log = std::fs::read_to_string(dir.join("stderr")).unwrap();
    assert!(ready, "not ready: {log}");
    assert!(dir.join("nested/ron-data/stores").is_dir(), "{log}");
}

/// A SIGHUP during the start (here: while the node waits for its HTTP port, held by
/// another socket for a second) is taken as a reload request, not the default action:
/// the node starts once the port is free. Before, it was killed by the signal (a
/// `systemctl reload` or logrotate's HUP right after a start).
#[test]
fn a_sighup_during_the_start_does_not_kill_the_node() {
    let dir = temp_dir("hup-at-start");
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = holder.local_addr().unwrap().to_string();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let oap = format!("127.0.0.1:{}", free_port());
    let mut node = Command::new(env!("CARGO_BIN_EXE_ron"))
        .args(["serve", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--http", &http, "--oap", &oap, "--shards", "1", "--admin"])
        .arg(admin.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    send_signal(node.id(), "HUP");
    std::thread::sleep(std::time::Duration::from_millis(600));
    drop(holder);
    let ready = (0..500).any(|_| {
        if node.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        get(admin, "/readyz").is_ok_and(|r| r.status == 200)
    });
    let exited = node.try_wait().unwrap();
    if exited.is_none() {
        send_signal(node.id(), "TERM");
    }
    let status = node.wait().unwrap();
    let log = std::fs::read_to_string(dir.join("stderr")).unwrap();
    assert!(ready, "not ready (exited: {exited:?}): {log}");
    assert!(status.success(), "{status:?}: {log}");
}
