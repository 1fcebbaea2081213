//! A TCP relay the test runs between two addresses of the lab, whose link it can make
//! slow or stall: the faults `netem` would give, from a program of the test's own (this
//! kernel has no `netem`). Each direction of each connection is one thread that reads
//! what arrives and writes it on at the link's current rate; stalled, it holds what it
//! has and waits. It lives until the test process ends; its sockets close when either
//! end closes.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the link does now: bytes per second it carries (`u64::MAX`: as fast as it can,
/// 0: nothing — stalled).
#[derive(Debug, Clone, Default)]
pub struct Link(Arc<AtomicU64>);

impl Link {
    pub fn whole(&self) {
        self.0.store(u64::MAX, Ordering::Relaxed);
    }

    pub fn slow(&self, bytes_per_s: u64) {
        self.0.store(bytes_per_s.max(1), Ordering::Relaxed);
    }

    pub fn stall(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    fn rate(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Listens on `listen` (in the calling thread's namespace) and relays every connection
/// to `target` over `link`. Returns the address it listens on.
pub fn start(listen: SocketAddr, target: SocketAddr, link: Link) -> SocketAddr {
    link.whole();
    let listener = TcpListener::bind(listen).unwrap_or_else(|e| panic!("relay on {listen}: {e}"));
    let at = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
                continue;
            };
            for (from, to) in [(&client, &server), (&server, &client)] {
                let (from, to, link) = (
                    from.try_clone().unwrap(),
                    to.try_clone().unwrap(),
                    link.clone(),
                );
                std::thread::spawn(move || carry(from, to, &link));
            }
        }
    });
    at
}

/// Carries one direction until either end closes.
fn carry(mut from: TcpStream, mut to: TcpStream, link: &Link) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut sent = 0;
        while sent < n {
            let rate = link.rate();
            if rate == 0 {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            // A slow link sends a slice per 10 ms, paced to its rate.
            let slice = match rate {
                u64::MAX => n - sent,
                _ => ((rate / 100).max(1) as usize).min(n - sent),
            };
            let started = Instant::now();
            if to.write_all(&buf[sent..sent + slice]).is_err() {
                let _ = from.shutdown(Shutdown::Both);
                return;
            }
            sent += slice;
            if rate != u64::MAX {
                let due = Duration::from_secs_f64(slice as f64 / rate as f64);
                std::thread::sleep(due.saturating_sub(started.elapsed()));
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
