//! Denylist reader (IPIP-383 `*.deny` text): never panics, whatever the file holds, and
//! a list read answers a check of any digest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ron_codec::denylist::DenylistBuilder;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut builder = DenylistBuilder::default();
    let _ = builder.add_file("fuzz.deny", text);
    let (list, report) = builder.finish();
    assert!(report.problems.len() <= report.problems_total);
    let digest = [data.first().copied().unwrap_or(0); 32];
    let _ = list.blocks(&digest);
    assert!(list.blocked_by_name().count() <= list.len());
});
