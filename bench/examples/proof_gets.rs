//! Proof-carrying range GETs over OAP/1 against a running node: one connection, each
//! GET verified group by group against the address (`ron_client`), ranges at
//! deterministic pseudo-random offsets of one object. Prints the first request's time
//! (it loads the object's metadata when the node's cache is cold), then the median and
//! p99 of the rest. `bench/big_object.sh` runs it against a 4 GiB object.
//!
//! Run: `cargo run --release -p ron-bench --example proof_gets -- HOST:PORT b3:<hex> LEN
//! [COUNT] [RANGE_BYTES] [WINDOW]` (ranges start in the first WINDOW bytes; default all).

use std::time::Instant;

use ron_client::oap::OapClient;
use ron_client::{ByteRange, Endpoint, Options, Protocol};
use ron_codec::Address;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: proof_gets HOST:PORT b3:<hex> LEN [COUNT] [RANGE_BYTES] [WINDOW]";
    let (Some(node), Some(addr), Some(len)) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let addr: Address = addr.parse().expect("an address b3:<hex>");
    let len: u64 = len.parse().expect("the object's length");
    let count: usize = args.get(3).map_or(200, |c| c.parse().expect("COUNT"));
    let range_bytes: u64 = args
        .get(4)
        .map_or(65_536, |r| r.parse().expect("RANGE_BYTES"));
    let window: u64 = args.get(5).map_or(len, |w| w.parse().expect("WINDOW"));
    let endpoint = Endpoint {
        addr: node.clone(),
        protocol: Protocol::Oap,
        tls: None,
    };
    let mut client = OapClient::connect(&endpoint, Options::default()).expect("connect");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut took_us = Vec::with_capacity(count);
    for _ in 0..count {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let first = state % (window.min(len) - range_bytes);
        let range = ByteRange {
            first,
            last: first + range_bytes - 1,
        };
        let started = Instant::now();
        let fetched = client
            .get(addr, Some(range), &mut std::io::sink(), &mut |_| {})
            .expect("a verified range");
        took_us.push(started.elapsed().as_secs_f64() * 1e6);
        assert_eq!(fetched.len, range_bytes, "short range");
    }
    let first = took_us.remove(0);
    took_us.sort_by(f64::total_cmp);
    let p = |q: f64| took_us[((took_us.len() as f64 * q).ceil() as usize).max(1) - 1];
    println!(
        "first_us={first:.0} median_us={:.0} p99_us={:.0} requests={} range_bytes={range_bytes}",
        p(0.5),
        p(0.99),
        took_us.len() + 1
    );
}
