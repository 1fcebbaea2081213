//! The provider store's commits are not synced while the DHT thread runs; stopping the
//! thread syncs them and clears the marker that would have the store thrown away after
//! a reboot (`dht/src/store/unsynced.rs`).

mod common;

use common::{scratch, start};

#[test]
fn stopping_the_dht_thread_syncs_the_store_and_clears_its_unsynced_marker() {
    let dir = scratch("store-close", "a");
    let marker = dir.join("dht").join("unsynced-in-boot");
    let dht = start(&dir, 9, &[]);
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        boot.trim(),
        "while the thread runs, the marker names this boot"
    );
    dht.stop();
    assert!(
        !marker.exists(),
        "a clean stop syncs the store and removes the marker"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
