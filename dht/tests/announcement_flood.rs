//! A mailbox full of announcements (a start-up walk of a large store, or the first start
//! with `--p2p`) is stored a tick's share at a time: the DHT thread answers a resolve
//! while it works through them, instead of committing every key in one tick — a stall of
//! many seconds in which every ping, query and resolve waited. On loopback, one node,
//! every wait bounded.

mod common;

use std::time::{Duration, Instant};

use common::{scratch, start, wait_for};
use ron_dht::node::ANNOUNCED_KEYS_PER_RUN_MAX;

/// Announcement messages queued: many ticks' worth of keys.
const MESSAGES: usize = 128;
const KEYS_PER_MESSAGE: usize = 4_096;

fn address(n: usize) -> [u8; 32] {
    let mut addr = [0x5a; 32];
    addr[24..].copy_from_slice(&(n as u64).to_be_bytes());
    addr
}

#[test]
fn a_full_announcement_mailbox_does_not_stall_the_dht_thread() {
    const { assert!(MESSAGES * KEYS_PER_MESSAGE >= 32 * ANNOUNCED_KEYS_PER_RUN_MAX) };
    let dir = scratch("announcement-flood", "n0");
    let node = start(&dir, 7000, &[]);
    for m in 0..MESSAGES {
        let batch = (0..KEYS_PER_MESSAGE)
            .map(|k| address(m * KEYS_PER_MESSAGE + k))
            .collect();
        assert!(matches!(node.client.try_announce(batch), Some(Ok(()))));
    }
    // The thread's next tick starts on them.
    std::thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    let answer = node.client.resolve([0x11; 32], 1, 100);
    assert!(
        answer.is_ok(),
        "a resolve while announcements are stored: {answer:?} after {:?}",
        asked.elapsed()
    );
    let last = address(MESSAGES * KEYS_PER_MESSAGE - 1);
    wait_for("the last announced key provided", || {
        node.client.resolve(last, 1, 1_000).is_ok_and(|found| {
            found
                .iter()
                .any(|p| p.node_id == node.client.node_id.to_string())
        })
    });
    node.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}
