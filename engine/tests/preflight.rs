//! Preflight against the real binary: a host where a shard cannot start (locked memory
//! too low, io_uring blocked by seccomp as a container runtime does) gets one line with
//! the fix and exit 1 at once — no panic, no backtrace, no hang; `ron doctor` prints the
//! table; under systemd's `Type=notify` the node reports READY=1 and STOPPING=1.
#![allow(unsafe_code)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, get, send_signal, temp_dir, IndexLock};

/// `ron serve` on free loopback ports, `setup` run in the child before exec.
fn serve_with(data_dir: &std::path::Path, setup: fn() -> std::io::Result<()>) -> Output {
    let port = || format!("127.0.0.1:{}", free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_ron"));
    command
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(["--http", &port(), "--oap", &port(), "--admin", &port()])
        .stdin(Stdio::null());
    // SAFETY: `setup` makes async-signal-safe syscalls only (setrlimit, prctl).
    unsafe { command.pre_exec(setup) };
    run_bounded(command, Duration::from_secs(10))
}

/// Runs to completion or fails the test after `limit` (killing the child).
fn run_bounded(mut command: Command, limit: Duration) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn low_memlock() -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: 64 * 1024,
        rlim_max: 64 * 1024,
    };
    // SAFETY: plain syscall on a stack value.
    match unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Makes io_uring_setup, io_uring_enter and io_uring_register fail with EPERM, as
/// docker's and podman's default seccomp profiles do.
#[cfg(target_arch = "x86_64")]
fn seccomp_without_io_uring() -> std::io::Result<()> {
    #[repr(C)]
    struct SockFilter {
        code: u16,
        jt: u8,
        jf: u8,
        k: u32,
    }
    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const SockFilter,
    }
    const LOAD_WORD: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JUMP_IF_EQUAL: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RETURN: u16 = 0x06; // BPF_RET | BPF_K
    const ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
    const EPERM: u32 = 0x0005_0000 | libc::EPERM as u32; // SECCOMP_RET_ERRNO
    let op = |code, jt, jf, k| SockFilter { code, jt, jf, k };
    let filter = [
        op(LOAD_WORD, 0, 0, 0), // seccomp_data.nr
        op(JUMP_IF_EQUAL, 3, 0, libc::SYS_io_uring_setup as u32),
        op(JUMP_IF_EQUAL, 2, 0, libc::SYS_io_uring_enter as u32),
        op(JUMP_IF_EQUAL, 1, 0, libc::SYS_io_uring_register as u32),
        op(RETURN, 0, 0, ALLOW),
        op(RETURN, 0, 0, EPERM),
    ];
    let program = SockFprog {
        len: filter.len() as u16,
        filter: filter.as_ptr(),
    };
    // SAFETY: prctl with constant arguments and a program that outlives the call.
    let installed = unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &program as *const SockFprog,
            ) == 0
    };
    match installed {
        true => Ok(()),
        false => Err(std::io::Error::last_os_error()),
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The refusal is the preflight's line, with no trace of a panic.
fn assert_one_clean_line(err: &str, starts: &str, fix: &str) {
    let line = err
        .lines()
        .find(|l| l.starts_with("ron: "))
        .unwrap_or_else(|| panic!("no `ron:` line in {err}"));
    assert!(line.starts_with(starts), "{line}");
    assert!(line.contains(fix), "{line}");
    for bad in [
        "panicked",
        "backtrace",
        "RUST_BACKTRACE",
        "IO error occurred",
    ] {
        assert!(!err.contains(bad), "{bad} in {err}");
    }
}

#[test]
fn a_low_locked_memory_limit_refuses_to_start_with_the_fix() {
    let dir = temp_dir("memlock");
    let started = Instant::now();
    let out = serve_with(&dir.join("data"), low_memlock);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_one_clean_line(
        &stderr(&out),
        "ron: memlock: locked-memory limit 64 KiB (ulimit -l); needed >= 512 KiB",
        "fix: ulimit -l unlimited (shell), LimitMEMLOCK=infinity",
    );
}

#[cfg(target_arch = "x86_64")]
#[test]
fn io_uring_blocked_by_seccomp_refuses_to_start_with_the_fix() {
    let dir = temp_dir("seccomp");
    let out = serve_with(&dir.join("data"), seccomp_without_io_uring);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_one_clean_line(
        &stderr(&out),
        "ron: io_uring: blocked by a seccomp filter (io_uring_setup: Operation not permitted",
        "allow io_uring_setup, io_uring_enter and io_uring_register",
    );
    let mut doctor = Command::new(env!("CARGO_BIN_EXE_ron"));
    doctor.args(["doctor", "--data-dir"]).arg(dir.join("data"));
    // SAFETY: as in `serve_with`.
    unsafe { doctor.pre_exec(seccomp_without_io_uring) };
    let out = run_bounded(doctor, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("\nFAIL  io_uring    blocked by a seccomp filter"),
        "{table}"
    );
    assert!(table.ends_with("ron serve would refuse to start: 1 problem(s) above marked FAIL\n"));
}

#[test]
fn doctor_prints_every_check_and_exits_by_the_worst() {
    let dir = temp_dir("doctor");
    let mut ok = Command::new(env!("CARGO_BIN_EXE_ron"));
    ok.args(["doctor", "--shards", "1", "--data-dir"])
        .arg(dir.join("data"));
    let out = run_bounded(ok, Duration::from_secs(10));
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{table}");
    let checks: Vec<&str> = table
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.get(6..18))
        .map(str::trim)
        .collect();
    assert_eq!(
        &checks[..11],
        [
            "config",
            "io_uring",
            "kernel",
            "memlock",
            "open files",
            "cpus",
            "data dir",
            "free space",
            "congestion",
            "backlog",
            "huge pages"
        ]
    );
    assert!(table
        .lines()
        .last()
        .unwrap()
        .starts_with("ron serve would start"));

    // A data dir nobody can create fails, and names the path.
    let mut bad = Command::new(env!("CARGO_BIN_EXE_ron"));
    bad.args(["doctor", "--data-dir", "/proc/ron-cannot-be-here"]);
    let out = run_bounded(bad, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("FAIL  data dir    cannot write /proc/ron-cannot-be-here"),
        "{table}"
    );
}

#[test]
fn doctor_with_a_unit_checks_its_limits_and_its_users_access() {
    let dir = temp_dir("doctor-unit");
    let doctor = |unit: &std::path::Path, data: &std::path::Path| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ron"));
        command
            .args(["doctor", "--shards", "1", "--unit"])
            .arg(unit)
            .arg("--data-dir")
            .arg(data);
        run_bounded(command, Duration::from_secs(10))
    };
    // The packaged unit: its limits are what the checks see, whatever this shell has.
    let packaged =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/ron.service");
    let out = doctor(&packaged, &dir.join("data"));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.starts_with(&format!(
            "checked as {} runs the node: User=ron, LimitMEMLOCK=infinity, LimitNOFILE=1048576\n",
            packaged.display()
        )),
        "{table}"
    );
    assert!(
        table.contains("ok    memlock     locked-memory limit unlimited"),
        "{table}"
    );
    assert!(
        table.contains("ok    open files  open-files limit 1048576 soft, 1048576 hard"),
        "{table}"
    );

    // A unit whose user cannot write the data dir: FAIL, with the owner and the fix.
    let unit = dir.join("nobody.service");
    std::fs::write(
        &unit,
        "[Service]\nUser=nobody\nLimitNOFILE=8\nLimitMEMLOCK=64K\n",
    )
    .unwrap();
    let locked = dir.join("locked");
    std::fs::create_dir_all(&locked).unwrap();
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let out = doctor(&unit, &locked);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    for fail in ["FAIL  memlock", "FAIL  open files", "FAIL  dir owner"] {
        assert!(table.contains(fail), "{fail}: {table}");
    }
    assert!(table.contains("nobody cannot write it"), "{table}");
    // A sandbox that leaves the data dir read-only (a dir outside StateDirectory= under
    // ProtectSystem=strict): FAIL with the fix; ReadWritePaths= makes it writable.
    let me = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name;
    let strict = dir.join("strict.service");
    let sandbox = format!("[Service]\nUser={me}\nProtectSystem=strict\nStateDirectory=ron\n");
    std::fs::write(&strict, &sandbox).unwrap();
    let data = dir.join("data");
    let table = String::from_utf8_lossy(&doctor(&strict, &data).stdout).into_owned();
    assert!(
        table.contains(
            "FAIL  dir owner   ProtectSystem=strict makes it read-only for the node (not under StateDirectory= or ReadWritePaths=)"
        ),
        "{table}"
    );
    assert!(
        table.contains(&format!("ReadWritePaths={}", data.display())),
        "{table}"
    );
    std::fs::write(
        &strict,
        format!("{sandbox}ReadWritePaths={}\n", dir.display()),
    )
    .unwrap();
    let table = String::from_utf8_lossy(&doctor(&strict, &data).stdout).into_owned();
    assert!(
        table.contains(&format!("ok    dir owner   {me} can write it")),
        "{table}"
    );
    // A unit that is not there: one line, exit 1.
    let missing = doctor(std::path::Path::new("no-such-unit.service"), &locked);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("unit no-such-unit.service: not found")
    );
}

#[test]
fn systemd_hears_ready_once_every_shard_serves_and_stopping_at_sigterm() {
    let dir = temp_dir("notify");
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let port = || format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_ron"))
        .args(["serve", "--shards", "2", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--http", &port(), "--oap", &port(), "--admin"])
        .arg(admin.to_string())
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("READY=1 within 30 s");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(
        ready.contains(&format!("MAINPID={}", child.id())),
        "{ready}"
    );
    assert_eq!(get(admin, "/readyz").unwrap().status, 200);

    send_signal(child.id(), "TERM");
    let n = socket.recv(&mut buf).expect("STOPPING=1");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("STOPPING=1"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(child.wait().unwrap().success());
}

/// A start longer than a minute still ends in READY=1, after requests to extend systemd's
/// start timeout: the store's index is held locked by the test for 62 s (LMDB waits for
/// its lock at open; the shard is not kicked while it opens its stores). Before, the
/// node stopped waiting for its shards at 60 s and never sent READY=1: under systemd the
/// unit failed its start and was restarted into the same long start.
#[test]
#[ignore = "needs over a minute: run by scripts/test-all.sh"]
fn a_start_longer_than_a_minute_still_ends_in_ready() {
    let dir = temp_dir("notify-slow");
    let data = dir.join("data");
    let port = || format!("127.0.0.1:{}", free_port());
    let admin: std::net::SocketAddr = port().parse().unwrap();
    let (http, oap) = (port(), port());
    let serve = |notify: Option<&std::path::Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ron"));
        command
            .args(["serve", "--shards", "1", "--data-dir"])
            .arg(&data)
            .args(["--http", &http, "--oap", &oap, "--admin"])
            .arg(admin.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(socket) = notify {
            command.env("NOTIFY_SOCKET", socket);
        }
        command.spawn().unwrap()
    };
    let stop = |mut child: std::process::Child| {
        send_signal(child.id(), "TERM");
        assert!(child.wait().unwrap().success());
    };
    // A first start makes the store.
    let first = serve(None);
    let ready = (0..1500).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        get(admin, "/readyz").is_ok_and(|r| r.status == 200)
    });
    assert!(ready, "the first start");
    stop(first);
    let lock = IndexLock::hold(&data);
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // Killed if the test fails first: nothing else would end it.
    let child = KilledOnDrop(Some(serve(Some(&socket_path))));
    let began = Instant::now();
    let mut said = Vec::new();
    let mut buf = [0u8; 512];
    while began.elapsed() < Duration::from_secs(62) {
        if let Ok(n) = socket.recv(&mut buf) {
            said.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    lock.release();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    while !said.iter().any(|m| m.starts_with("READY=1")) {
        let n = socket.recv(&mut buf).expect("READY=1 once the index opens");
        said.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let extensions = said
        .iter()
        .filter(|m| m.starts_with("EXTEND_TIMEOUT_USEC=60000000\nSTATUS=starting: 1 of 1"))
        .count();
    assert!(
        extensions >= 2,
        "an extension every 30 s while held: {said:?}"
    );
    assert_eq!(get(admin, "/readyz").unwrap().status, 200);
    stop(child.take());
}

/// A child process killed when dropped still running.
struct KilledOnDrop(Option<std::process::Child>);

impl KilledOnDrop {
    fn take(mut self) -> std::process::Child {
        self.0.take().unwrap()
    }
}

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
