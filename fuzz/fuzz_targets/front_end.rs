//! The HTTP/1.1, HTTP/2 and OAP/1 front ends (`ron_engine::http::serve_connection`,
//! `ron_engine::http::http2::serve_connection`, `ron_engine::oap::serve_connection`) fed
//! the input as a client's byte stream over an in-memory transport, on one glommio
//! executor and one real shard (scratch data dir on /dev/shm when present) made once per
//! process. The first byte picks the front end (bit 0: 0 HTTP, 1 OAP/1; an HTTP stream
//! that starts with the HTTP/2 preface goes to HTTP/2) and the size of the pieces the
//! stream arrives in (bits 1-7, 0: one piece); the rest is the stream, then end of
//! stream.
//!
//! Asserts: no panic; the connection ends within 10 s and leaves no request admitted
//! and no connection open; HTTP output is HTTP/1.1 responses, HTTP/2 output starts with
//! the server's SETTINGS, OAP/1 output whole valid response frames. Objects stored by earlier inputs stay (the service is stateful).
//! `RON_FUZZ_SHOW=1` prints what the server wrote.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use ron_codec::frame::{Flags, FrameDecoder, MAX_FRAME_BYTES};
use ron_engine::fuzzing::{FrontEnd, Harness, H2_CLIENT_LINGER};
use ron_io::memory::MemoryStream;

const DIR_PREFIX: &str = "ron-fuzz-front-end-";
static DATA_DIR: OnceLock<PathBuf> = OnceLock::new();

thread_local! {
    static HARNESS: Harness = Harness::new(data_dir());
}

/// This process's data dir; those of processes gone are removed first.
fn data_dir() -> &'static Path {
    DATA_DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let pid = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX));
            if pid.is_some_and(|p| !Path::new("/proc").join(p).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        extern "C" fn remove_data_dir() {
            if let Some(dir) = DATA_DIR.get() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        // SAFETY: registers a plain function to run at exit (libFuzzer ends with exit()).
        unsafe { libc::atexit(remove_data_dir) };
        base.join(format!("{DIR_PREFIX}{}", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let front = match first & 1 {
        0 if stream.starts_with(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") => FrontEnd::Http2,
        0 => FrontEnd::Http,
        _ => FrontEnd::Oap,
    };
    let piece = usize::from(first >> 1);
    let mut stream = MemoryStream::new(stream.to_vec(), piece, 1 << 20);
    if front == FrontEnd::Http2 {
        stream = stream.with_linger(H2_CLIENT_LINGER);
    }
    let written = stream.written();
    let served = HARNESS.with(|h| h.serve(front, stream, Duration::from_secs(10)));
    assert!(served.finished, "the connection did not end");
    assert!(
        served.settled,
        "a request or connection outlived its connection"
    );
    let out = written.bytes();
    if std::env::var_os("RON_FUZZ_SHOW").is_some() {
        eprintln!(
            "{front:?} {served:?} wrote {} bytes:\n{}",
            written.total(),
            out.escape_ascii()
        );
    }
    match front {
        FrontEnd::Http => assert!(out.is_empty() || out.starts_with(b"HTTP/1.1 ")),
        // A frame header of the server's SETTINGS (type 4) on stream 0.
        FrontEnd::Http2 => {
            assert!(out.is_empty() || (out.len() >= 9 && out[3] == 4 && out[5..9] == [0; 4]))
        }
        FrontEnd::Oap => {
            let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES);
            let mut rest = &out[..];
            while let Some(frame) = decoder.decode(&mut rest).expect("a valid response frame") {
                assert!(frame.header.flags.contains(Flags::RESP));
            }
            let whole = written.total() > out.len() as u64 || decoder.is_idle();
            assert!(whole, "a response frame cut short");
        }
    }
});
